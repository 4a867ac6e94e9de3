#!/usr/bin/env python3
"""jopt.torch and jopt.numpy on bfloat16 and float16 tensors: against torch
2.13's fused=True kernels bit for bit (Adam, AdamW; SGD and Adagrad on the
elements torch's broken vector loops leave to their scalar tails), with
torch.amp.GradScaler driving both; jopt.numpy with float16 and ml_dtypes
bfloat16 arrays.

Runs as a script: exit 0 on success, 77 (ctest SKIP) if torch, numpy or
libjopt.so is missing, 1 on failure (bfloat16 arrays need ml_dtypes)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # python/, for `import jopt`

SKIP = 77
try:
    import numpy as np
    import torch
    import jopt
    import jopt.numpy
    import jopt.torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)
try:
    import ml_dtypes  # numpy's bfloat16
except ImportError:
    ml_dtypes = None

if "JOPT_SPEC_PATH" not in os.environ:  # a checkout: use its specs
    specs = os.path.join(os.path.dirname(os.path.dirname(HERE)), "specs")
    if os.path.isdir(specs):
        os.environ["JOPT_SPEC_PATH"] = specs

torch.set_num_threads(1)
SIZES = (45, 17, 1, 7, 300)
STEPS = 12
NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def tensors(dtype):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(n, generator=g).to(dtype) for n in SIZES]


def grads(dtype, step, scale=1.0):
    g = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(n, generator=g) * scale).to(dtype) for n in SIZES]


def tail(n):
    """torch's fused kernels run each tensor's last n % 16 elements through
    their scalar loop"""
    return slice(n - n % 16, n)


def same(a, b):
    """equal bits, NaNs equal"""
    return torch.equal(a.view(torch.int16), b.view(torch.int16)) or \
        bool(((a == b) | (a.isnan() & b.isnan())).all())


def run(cls, dtype, opts, scaler_steps=None, **kw):
    ps = [torch.nn.Parameter(t.clone()) for t in tensors(dtype)]
    opt = cls(ps, **opts, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=3) \
        if scaler_steps is not None else None
    for s in range(STEPS):
        if scaler is not None:
            scaler.scale(torch.zeros(()))  # as a scaled loss would: starts the scale
        for p, g in zip(ps, grads(dtype, s, scaler.get_scale() if scaler else 1.0)):
            p.grad = g
        if scaler is not None and s in scaler_steps:
            ps[1].grad[3] = float("inf")
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return [p.detach() for p in ps], opt


def test_fused_bit_for_bit():
    cases = [("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
             ("AdamW", dict(lr=0.01, weight_decay=0.1)),
             ("SGD", dict(lr=0.05, momentum=0.9)),
             ("Adagrad", dict(lr=0.05))]
    for name, opts in cases:
        for dtype in NAMES:
            for amp in (None, (4, 5)):
                t, _ = run(getattr(torch.optim, name), dtype, opts, amp, fused=True)
                j, jo = run(getattr(jopt.torch, name), dtype, opts, amp, fused=True,
                            jopt_options={"state_dtype": NAMES[dtype]})
                for n, a, b in zip(SIZES, t, j):
                    # SGD's and Adagrad's vector loops are broken in torch 2.13
                    sl = tail(n) if name in ("SGD", "Adagrad") else slice(0, n)
                    assert same(a[sl], b[sl]), "%s %s %s: parameters differ" % (
                        name, dtype, "amp" if amp else "")
                print("ok   %-8s %s fused=True%s: bit for bit" % (
                    name, NAMES[dtype], " with GradScaler" if amp else ""))


def test_state_and_grad_dtypes():
    # a bfloat16 parameter with a float32 gradient, and float32 state
    p = torch.nn.Parameter(torch.randn(100).to(torch.bfloat16))
    p.grad_dtype = None  # torch checks gradients' dtypes unless told not to
    opt = jopt.torch.Adam([p], lr=0.01)
    p.grad = torch.randn(100)
    opt.step()
    m, step = opt.jopt_state(p, "exp_avg")
    assert m.dtype == torch.float32 and step == 1
    # bfloat16 state, stochastic rounding
    q = torch.nn.Parameter(torch.randn(100).to(torch.bfloat16))
    opt = jopt.torch.Adam([q], lr=0.01, jopt_options={
        "state_dtype": "bfloat16", "stochastic_rounding": True, "seed": 5})
    q.grad = torch.randn(100).to(torch.bfloat16)
    opt.step()
    m, _ = opt.jopt_state(q, "exp_avg")
    assert m.dtype == torch.bfloat16
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].dtype == torch.bfloat16
    # loaded into float32 state, a state is cast to it (as torch casts a
    # loaded state to its parameter's dtype)
    q2 = torch.nn.Parameter(q.detach().clone())
    opt2 = jopt.torch.Adam([q2], lr=0.01)
    opt2.load_state_dict(sd)
    m2, step2 = opt2.jopt_state(q2, "exp_avg")
    assert m2.dtype == torch.float32 and step2 == 1 and torch.equal(m2, m.float())
    print("ok   bfloat16 parameters: float32 gradients and state; bfloat16 state, "
          "cast to float32 state on load")


def test_found_inf_skips():
    p = torch.nn.Parameter(torch.randn(50).to(torch.float16))
    before = p.detach().clone()
    opt = jopt.torch.Adam([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.zeros(()))
    p.grad = torch.full((50,), float("nan"), dtype=torch.float16)
    scaler.step(opt)
    scaler.update()
    assert torch.equal(p.detach(), before)
    assert opt.jopt_state(p, "exp_avg") == (None, 0)
    assert scaler.get_scale() == 65536.0 * 0.5
    print("ok   GradScaler: a NaN gradient skips the step, nothing changes")


def test_numpy_dtypes():
    for dt in (np.float16, ml_dtypes.bfloat16) if ml_dtypes else (np.float16,):
        w = (np.arange(64, dtype=np.float32) / 64).astype(dt)
        g = np.full(64, 0.5, dtype=np.float32).astype(dt)
        t = torch.nn.Parameter(torch.from_numpy(w.astype(np.float32)).to(
            torch.float16 if dt == np.float16 else torch.bfloat16))
        opt = jopt.numpy.Adam([w], lr=0.01, grads=[g],
                              jopt_options={"state_dtype": np.dtype(dt).name})
        topt = torch.optim.Adam([t], lr=0.01, fused=True)
        for _ in range(5):
            opt.step()
            t.grad = torch.from_numpy(g.astype(np.float32)).to(t.dtype)
            topt.step()
        assert np.array_equal(w.astype(np.float32), t.detach().float().numpy()), dt
        m, _ = opt.state(w, "exp_avg")
        assert m.dtype == np.dtype(dt)
        print("ok   jopt.numpy Adam on %s arrays: torch fused's bits" % np.dtype(dt).name)


def main():
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
    print("all passed")


if __name__ == "__main__":
    main()
