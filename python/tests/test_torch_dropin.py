#!/usr/bin/env python3
"""jopt.torch as a drop-in for torch.optim, and jopt.numpy.

Runs as a script: exit 0 on success, 77 (ctest SKIP) if torch, numpy or
libjopt.so is missing, 1 on failure."""

import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # python/, for `import jopt`

SKIP = 77
try:
    import numpy as np
    import torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)
try:
    import jopt
    import jopt.numpy
    import jopt.torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)

if "JOPT_SPEC_PATH" not in os.environ:  # a checkout: use its specs
    specs = os.path.join(os.path.dirname(os.path.dirname(HERE)), "specs")
    if os.path.isdir(specs):
        os.environ["JOPT_SPEC_PATH"] = specs

torch.set_num_threads(1)
STEPS = 20

# (name, options, exact): exact where jopt matches stock torch bit for bit
# (no sqrt); else rtol 1e-5 (torch's sqrt is not correctly rounded).
CASES = [
    ("SGD", dict(lr=0.05), True),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), True),
    ("Adam", dict(lr=1e-2), False),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01), False),
    ("AdamW", dict(lr=1e-2), False),
    ("Adadelta", dict(lr=1.0), False),
    ("Adagrad", dict(lr=0.05), False),
    ("Adamax", dict(lr=1e-2), True),
    ("ASGD", dict(lr=0.02, t0=5), True),
    ("NAdam", dict(lr=1e-2), False),
    ("RAdam", dict(lr=1e-2), False),
    ("RMSprop", dict(lr=1e-3), False),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True), False),
    ("Rprop", dict(lr=1e-2), True),
]


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1))


def groups(m, lr):
    # 2 param groups: weights at the optimizer's lr, biases at a tenth of it
    w = [p for n, p in m.named_parameters() if n.endswith("weight")]
    b = [p for n, p in m.named_parameters() if n.endswith("bias")]
    return [{"params": w}, {"params": b, "lr": lr / 10}]


def train(opt_cls, opts, sched=None, closure=False, steps=STEPS, ctx=None):
    x, y = data()
    m = model()
    kw = {"jopt_context": ctx} if ctx is not None else {}
    opt = opt_cls(groups(m, opts.get("lr", 1e-3)), **opts, **kw)
    s = sched(opt) if sched else None
    losses = []
    for i in range(steps):
        if closure:
            def f():
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(m(x), y)
                loss.backward()
                return loss
            loss = opt.step(f)
        else:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            if i in (3, 4, 9):  # no gradient for the last bias at these steps
                m[2].bias.grad = None
            opt.step()
        losses.append(loss.item())
        if s:
            s.step()
    params = [p.detach().clone() for p in m.parameters()]
    return losses, params, opt


def compare(name, opts, exact, sched=None, closure=False, tag=""):
    tl, tp, _ = train(getattr(torch.optim, name), opts, sched, closure)
    jl, jp, _ = train(getattr(jopt.torch, name), opts, sched, closure)
    what = "%s %s%s" % (name, opts, tag)
    if exact:
        assert tl == jl, "%s: losses differ:\n torch %s\n jopt  %s" % (what, tl, jl)
        for a, b in zip(tp, jp):
            assert torch.equal(a, b), "%s: parameters differ" % what
    else:
        for a, b in zip(tl, jl):
            assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7), \
                "%s: losses differ:\n torch %s\n jopt  %s" % (what, tl, jl)
        for a, b in zip(tp, jp):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), "%s: parameters differ" % what
    assert jl[-1] < jl[0], "%s: loss did not fall: %s" % (what, jl)
    print("ok   %-60s final loss %.6f (torch %.6f)%s"
          % (what, jl[-1], tl[-1], " exact" if exact else ""))


def test_against_torch():
    for name, opts, exact in CASES:
        compare(name, opts, exact)


def test_schedulers():
    sl = torch.optim.lr_scheduler
    for name, opts, exact in CASES:
        compare(name, opts, exact, lambda o: sl.StepLR(o, step_size=5, gamma=0.5),
                tag=" +StepLR")
        compare(name, opts, exact, lambda o: sl.CosineAnnealingLR(o, T_max=STEPS),
                tag=" +CosineAnnealingLR")


def test_scheduled_lr_compiles_once():
    # a scheduled lr is passed per step: a handful of compiles, not one per step
    ctx = jopt.Context()
    sl = torch.optim.lr_scheduler
    train(jopt.torch.Adam, dict(lr=1e-2), lambda o: sl.CosineAnnealingLR(o, T_max=STEPS),
          ctx=ctx)
    compiles, hits = ctx.stats()
    assert compiles <= 6, (compiles, hits)
    print("ok   CosineAnnealingLR over %d steps: %d kernel compiles" % (STEPS, compiles))


def test_closure():
    compare("SGD", dict(lr=0.05, momentum=0.9), True, closure=True, tag=" closure")
    compare("Adam", dict(lr=1e-2), False, closure=True, tag=" closure")


def test_changing_hyperparameters():
    # betas and momentum changed by hand between steps, as OneCycleLR does
    for name, key, new in [("Adam", "betas", (0.8, 0.99)), ("SGD", "momentum", 0.5)]:
        res = []
        for cls in (getattr(torch.optim, name), getattr(jopt.torch, name)):
            x, y = data()
            m = model()
            opt = cls(m.parameters(), lr=1e-2, **({"momentum": 0.9} if name == "SGD" else {}))
            out = []
            for i in range(10):
                if i == 5:
                    for g in opt.param_groups:
                        g[key] = new
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(m(x), y)
                loss.backward()
                opt.step()
                out.append(loss.item())
            res.append(out)
        for a, b in zip(*res):
            assert math.isclose(a, b, rel_tol=1e-5), "%s %s change: %s" % (name, key, res)
    print("ok   hyperparameters changed between steps")


def test_not_in_torch():
    for name, lr in [("Lion", 1e-3), ("LAMB", 1e-2)]:
        jl, _, _ = train(getattr(jopt.torch, name), dict(lr=lr))
        assert all(math.isfinite(v) for v in jl), jl
        assert jl[-1] < 0.9 * jl[0], "%s: loss did not fall: %s" % (name, jl)
        print("ok   %-60s loss %.6f -> %.6f" % (name, jl[0], jl[-1]))


def test_refusals():
    m = model()
    for bad, exc in [(m.double(), TypeError),
                     (torch.nn.Linear(3, 3).weight.detach().t().requires_grad_(), ValueError)]:
        params = bad.parameters() if isinstance(bad, torch.nn.Module) else [bad]
        try:
            jopt.torch.Adam(params)
        except exc as e:
            assert "parameter" in str(e), e
        else:
            raise AssertionError("jopt.torch.Adam accepted a bad parameter")
    try:
        jopt.torch.Adam(model().parameters(), lr=-1.0)
    except ValueError as e:  # jopt's JoptValueError, with torch's message
        assert isinstance(e, jopt.JoptError) and "Invalid learning rate" in str(e), e
    else:
        raise AssertionError("negative lr accepted")
    try:
        jopt.torch.Adam(model().parameters(), fused=True)
    except ValueError:
        pass
    else:
        raise AssertionError("fused=True accepted")
    print("ok   refusals")


def test_state_dict():
    x, y = data()

    def run(opt, m, n):
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()

    m1 = model()
    o1 = jopt.torch.Adam(m1.parameters(), lr=1e-2)
    run(o1, m1, 5)
    sd = o1.state_dict()
    snap = [p.detach().clone() for p in m1.parameters()]
    run(o1, m1, 5)
    m2 = model()
    with torch.no_grad():
        for p, s in zip(m2.parameters(), snap):
            p.copy_(s)
    o2 = jopt.torch.Adam(m2.parameters(), lr=1e-2)
    o2.load_state_dict(sd)
    run(o2, m2, 5)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b), "resumed run differs"
    ea, st = o2.jopt_state(next(m2.parameters()), "exp_avg")
    assert st == 10 and ea.shape == next(m2.parameters()).shape, (st, ea)
    print("ok   state_dict round trip")


def test_numpy():
    rng = np.random.default_rng(0)
    target = rng.standard_normal(100).astype(np.float32)
    w = np.zeros(100, np.float32)
    b = np.zeros(3, np.float32)
    gw = np.empty_like(w)
    gb = np.empty_like(b)
    opt = jopt.numpy.Adam([{"params": [w]}, {"params": [b], "lr": 0.05}], lr=0.1)
    f0 = float(np.sum((w - target) ** 2))
    for i in range(200):
        gw[:] = 2 * (w - target)
        gb[:] = 2 * (b - 1.0)
        opt.step(grads=[gw, gb])
        if i == 100:
            opt.param_groups[0]["lr"] = 0.01
    f = float(np.sum((w - target) ** 2))
    assert f < 1e-2 * f0, (f0, f)
    assert np.allclose(b, 1.0, atol=0.1), b
    # the same steps with torch.optim.Adam: same numbers (to rtol 1e-5)
    tw = torch.zeros(100, requires_grad=True)
    t = torch.from_numpy(target)
    to = torch.optim.Adam([tw], lr=0.1)
    w2 = np.zeros(100, np.float32)
    o2 = jopt.numpy.Adam([w2], lr=0.1, grads=[gw])
    for _ in range(50):
        tw.grad = 2 * (tw.detach() - t)
        to.step()
        gw[:] = 2 * (w2 - target)
        o2.step()
    assert np.allclose(w2, tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    print("ok   numpy Adam on a quadratic: %.3g -> %.3g" % (f0, f))


def main():
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
    print("all passed")


if __name__ == "__main__":
    main()
