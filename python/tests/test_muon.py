#!/usr/bin/env python3
"""jopt.torch.Muon and jopt.numpy.Muon against torch.optim.Muon (torch 2.13).

Runs as a script: exit 0 on success, 77 (ctest SKIP) if torch, numpy or
libjopt.so is missing, or torch has no Muon; 1 on failure."""

import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # python/, for `import jopt`

SKIP = 77
try:
    import numpy as np
    import torch
    import jopt.numpy
    import jopt.torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)
if not hasattr(torch.optim, "Muon"):
    print("SKIP: torch %s has no torch.optim.Muon" % torch.__version__)
    sys.exit(SKIP)

if "JOPT_SPEC_PATH" not in os.environ:  # a checkout: use its specs
    specs = os.path.join(os.path.dirname(os.path.dirname(HERE)), "specs")
    if os.path.isdir(specs):
        os.environ["JOPT_SPEC_PATH"] = specs

torch.set_num_threads(1)
SHAPES = [(7, 9), (9, 5), (3, 3), (6, 1), (16, 40), (48, 12)]


def patch_float32():
    """torch's Newton-Schulz in float32, as tests/fixtures/spec2's .ns-f32
    twins were recorded: grad.bfloat16() reads a float32 copy.  Returns the
    function to restore."""
    import torch.optim._muon as m
    old = m._zeropower_via_newtonschulz
    src = inspect.getsource(old)
    assert src.count("grad.bfloat16()") == 1
    exec(compile(src.replace("grad.bfloat16()", "grad.to(torch.float32, copy=True)"),
                 m.__file__, "exec"), m.__dict__)

    def restore():
        m._zeropower_via_newtonschulz = old
    return restore


def params():
    g = torch.Generator().manual_seed(3)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def grads(step):
    g = torch.Generator().manual_seed(100 + step)
    out = [torch.randn(s, generator=g) for s in SHAPES]
    if step == 2:
        out[1] = None  # a parameter without a gradient skips the step
    return out


def trajectory(cls, opts, steps=12):
    ps = params()
    opt = cls(ps, **opts)
    for s in range(steps):
        for p, g in zip(ps, grads(s)):
            p.grad = g
        opt.step()
    return ps, opt


def rms_rel(a, b):
    a = torch.cat([x.detach().reshape(-1) for x in a]).double()
    b = torch.cat([x.detach().reshape(-1) for x in b]).double()
    return float((a - b).norm() / b.norm())


def test_signature():
    ours = inspect.signature(jopt.torch.Muon).parameters
    theirs = inspect.signature(torch.optim.Muon).parameters
    for name, p in theirs.items():
        assert name in ours, name
        if p.default is not inspect.Parameter.empty:
            assert ours[name].default == p.default, (name, ours[name].default, p.default)
    assert list(ours)[:len(theirs)] == list(theirs)


# (options, bit-exact against torch): bfloat16 Newton-Schulz is torch's up
# to the GEMMs' summation order (OpenBLAS's, not ATen's), which can decide
# a bfloat16 tie the other way; docs/fidelity.md
CASES = [dict(), dict(lr=0.02, nesterov=False), dict(lr=0.02, weight_decay=0.01,
                                                     adjust_lr_fn="match_rms_adamw"),
         dict(lr=0.05, momentum=0.9, weight_decay=0.0, ns_steps=3, adjust_lr_fn="original")]


def test_against_torch():
    for opts in CASES:
        theirs, topt = trajectory(torch.optim.Muon, opts)
        ours, jopt_ = trajectory(jopt.torch.Muon, opts)
        r = rms_rel(ours, theirs)
        assert r < 1e-4, (opts, r)
        # the momentum buffers take no product: the same bits
        for p, q in zip(ours, theirs):
            buf, _ = jopt_.jopt_state(p, "momentum_buffer")
            assert torch.equal(buf, topt.state[q]["momentum_buffer"]), opts
        print("bfloat16 %-70s rms rel %.2g" % (opts, r))
    restore = patch_float32()
    try:
        for opts in CASES:
            theirs, _ = trajectory(torch.optim.Muon, opts)
            ours, _ = trajectory(jopt.torch.Muon, dict(opts, ns_dtype="float32"))
            r = rms_rel(ours, theirs)
            assert r < 1e-6, (opts, r)
            print("float32  %-70s rms rel %.2g" % (opts, r))
    finally:
        restore()


def test_numpy_same_bits():
    ours, _ = trajectory(jopt.torch.Muon, dict(lr=0.02))
    ws = [p.detach().numpy().copy() for p in params()]
    opt = jopt.numpy.Muon(ws, lr=0.02)
    for s in range(12):
        gs = grads(s)
        opt.step(grads=[None if g is None else g.numpy() for g in gs])
    for w, p in zip(ws, ours):
        assert np.array_equal(w, p.detach().numpy())


def expect_error(fn, cls, text):
    try:
        fn()
    except cls as e:
        assert text in str(e), (str(e), text)
        return
    raise AssertionError("no %s with %r" % (cls.__name__, text))


def test_refusals():
    p = [torch.nn.Parameter(torch.zeros(3, 3))]
    expect_error(lambda: jopt.torch.Muon(p, lr=-1), ValueError,
                 "Learning rate should be >= 0 but is: -1")
    expect_error(lambda: jopt.torch.Muon(p, momentum=-1), ValueError,
                 "momentum should be >= 0 but is: -1")
    expect_error(lambda: jopt.torch.Muon(p, weight_decay=-1), ValueError,
                 "weight decay should be >= 0 but is: -1")
    expect_error(lambda: jopt.torch.Muon(p, adjust_lr_fn="spectral"), ValueError,
                 "spectral")
    expect_error(lambda: jopt.torch.Muon(p, ns_steps=100), ValueError,
                 "Number of steps must be less than 100")
    for shape, text in (((3,), "torch.Size([3])"), ((2, 3, 4), "torch.Size([2, 3, 4])")):
        q = [torch.nn.Parameter(torch.zeros(shape))]
        expect_error(lambda: jopt.torch.Muon(q), ValueError,
                     "Muon only supports 2D parameters whereas we found a parameter "
                     "with size: " + text)
        expect_error(lambda: jopt.numpy.Muon([np.zeros(shape, np.float32)]), ValueError,
                     text)


def test_state_dict():
    ps, opt = trajectory(jopt.torch.Muon, dict(lr=0.02), steps=3)
    sd = opt.state_dict()
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = jopt.torch.Muon(qs, lr=0.02)
    opt2.load_state_dict(sd)
    for s in range(3, 6):
        for a, b, g in zip(ps, qs, grads(s)):
            a.grad = g
            b.grad = None if g is None else g.clone()
        opt.step()
        opt2.step()
    for a, b in zip(ps, qs):
        assert torch.equal(a, b)


def main():
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
    print("all passed")


if __name__ == "__main__":
    main()
