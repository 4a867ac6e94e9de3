#!/usr/bin/env python3
"""Custom specs from Python: jopt.torch.Optimizer(params, spec=...),
jopt.torch.optimizer_class(spec) and the same in jopt.numpy, over a spec
file written here (an AdaBelief-style rule with a `check`) and over a
shipped spec's name.

Runs as a script: exit 0 on success, 77 (ctest SKIP) if torch, numpy or
libjopt.so is missing, 1 on failure."""

import inspect
import os
import sys
import tempfile

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
FAILED = []

# AdaBelief-style: Adam whose second moment is the gradient's squared
# deviation from its running mean; L2 weight decay; torch's checks
BELIEF = """
return {
  doc = "AdaBelief-style rule (a test spec written by test_custom_spec.py)",
  hyper = { lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.0,
            centered = true },
  runtime = { "lr" },
  check = function (h)
    require_lr(h)
    require_eps(h)
    require_betas(h)
    require_weight_decay(h)
  end,
  state = { m = 0, s = 0 },
  update = function (p, g, s, h, t)
    local b1, b2 = h.betas[1], h.betas[2]
    if h.weight_decay ~= 0 then g = g + h.weight_decay * p end
    s.m = b1 * s.m + (1 - b1) * g
    local d = g
    if h.centered then d = g - s.m end
    s.s = b2 * s.s + (1 - b2) * d * d
    local mhat = s.m / (1 - b1 ^ t)
    local shat = s.s / (1 - b2 ^ t)
    return p - h.lr * mhat / (sqrt(shat) + h.eps)
  end,
}
"""


def check(ok, what):
    if not ok:
        FAILED.append(what)
        print("FAIL:", what)


def raises(exc, needle, fn, what):
    """fn() must raise exc with `needle` in its message."""
    try:
        fn()
    except exc as e:
        check(needle in str(e), "%s: message %r lacks %r" % (what, str(e), needle))
        return
    except Exception as e:  # noqa: BLE001 - the wrong kind is a failure
        check(False, "%s: raised %s(%s), not %s" % (what, type(e).__name__, e, exc.__name__))
        return
    check(False, "%s: did not raise" % what)


def belief_reference(p, grads, lr, betas, eps, wd, centered=True):
    """The rule above by hand, in float64; returns the parameters after each step."""
    p = p.double().clone()
    m = torch.zeros_like(p)
    s = torch.zeros_like(p)
    out = []
    for t, g in enumerate(grads, 1):
        g = g.double() + wd * p
        m = betas[0] * m + (1 - betas[0]) * g
        d = g - m if centered else g
        s = betas[1] * s + (1 - betas[1]) * d * d
        mhat = m / (1 - betas[0] ** t)
        shat = s / (1 - betas[1] ** t)
        p = p - lr * mhat / (shat.sqrt() + eps)
        out.append(p.clone())
    return out


def grads_for(shape, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(steps)]


def test_custom_file_torch(path):
    """A model trained with the spec through torch's loop: step(closure),
    zero_grad, two param groups with their own lr, a scheduler changing
    lr, against the rule computed by hand."""
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = jopt.torch.Optimizer([{"params": [w]}, {"params": [b], "lr": 0.05}], spec=path,
                               lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    gw, gb = grads_for((4, 3), 5, 1), grads_for((3,), 5, 2)
    lrs = []
    for k in range(5):
        lrs.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))

        def closure():
            opt.zero_grad()
            # loss whose gradients are exactly gw[k], gb[k]
            loss = (w * gw[k]).sum() + (b * gb[k]).sum()
            loss.backward()
            return loss

        loss = opt.step(closure)
        check(isinstance(loss, torch.Tensor), "step(closure) returns the closure's loss")
        sched.step()
    check(lrs == [(0.01, 0.05), (0.01, 0.05), (0.005, 0.025), (0.005, 0.025),
                  (0.0025, 0.0125)], "StepLR drives group['lr']: %s" % lrs)
    # the reference: per step lr as the scheduler set it
    for p0, grads, gi, got in ((w0, gw, 0, w), (b0, gb, 1, b)):
        p = p0.double().clone()
        m, s = torch.zeros_like(p), torch.zeros_like(p)
        for t, g in enumerate(grads, 1):
            lr = lrs[t - 1][gi]
            g = g.double() + 0.1 * p
            m = 0.8 * m + 0.2 * g
            d = g - m
            s = 0.99 * s + 0.01 * d * d
            p = p - lr * (m / (1 - 0.8 ** t)) / ((s / (1 - 0.99 ** t)).sqrt() + 1e-8)
        check(torch.allclose(got.detach().double(), p, rtol=1e-5, atol=1e-6),
              "custom spec, group %d, equals the hand-computed rule (max diff %g)"
              % (gi, (got.detach().double() - p).abs().max()))
    # state_dict round trip into a fresh optimizer of the same class
    sd = opt.state_dict()
    check(set(sd["state"][0]) == {"step", "m", "s"}, "state dict keys %s" % sd["state"][0])
    w2, b2 = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    opt2 = type(opt)([{"params": [w2]}, {"params": [b2], "lr": 0.05}], lr=0.01,
                     betas=(0.8, 0.99), weight_decay=0.1)
    opt2.load_state_dict(sd)
    for o, ps in ((opt, (w, b)), (opt2, (w2, b2))):
        for p in ps:
            p.grad = torch.ones_like(p)
        o.step()
    check(torch.equal(w, w2) and torch.equal(b, b2), "load_state_dict resumes exactly")
    # add_param_group with its own options
    c = torch.zeros(2, requires_grad=True)
    opt.add_param_group({"params": [c], "lr": 0.5, "betas": (0.5, 0.5)})
    c.grad = torch.ones(2)
    opt.step()
    want = belief_reference(torch.zeros(2), [torch.ones(2)], 0.5, (0.5, 0.5), 1e-8, 0.1)[-1]
    check(torch.allclose(c.detach().double(), want, rtol=1e-5),
          "add_param_group's own options: %s, want %s" % (c.tolist(), want.tolist()))


def test_signature(path):
    cls = jopt.torch.optimizer_class(path, name="Belief")
    sig = inspect.signature(cls)
    want = ["params", "lr", "betas", "centered", "eps", "weight_decay"]
    check(list(sig.parameters) == want, "signature %s, want %s" % (sig, want))
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "params"}
    check(defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "centered": True, "eps": 1e-8,
                       "weight_decay": 0.0}, "the spec's defaults: %s" % defaults)
    check(cls.__name__ == "Belief" and issubclass(cls, torch.optim.Optimizer),
          "optimizer_class names the class and subclasses torch.optim.Optimizer")
    # positional lr as torch's, and the defaults the signature shows
    p = torch.zeros(3, requires_grad=True)
    opt = cls([p], 0.2)
    g = opt.param_groups[0]
    check(g["lr"] == 0.2 and g["betas"] == (0.9, 0.999) and g["centered"] is True,
          "constructor fills the spec's defaults: %s" % g)
    nsig = inspect.signature(jopt.numpy.optimizer_class(path))
    check(list(nsig.parameters)[:6] == want, "jopt.numpy signature %s" % nsig)


def test_shipped_name():
    """spec="adam" is jopt.torch.Adam: the same numbers, the same class."""
    torch.manual_seed(1)
    p1 = torch.randn(5, 4, requires_grad=True)
    p2 = p1.detach().clone().requires_grad_()
    a = jopt.torch.Adam([p1], lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    b = jopt.torch.Optimizer([p2], spec="adam", lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    check(type(b) is jopt.torch.Adam, "spec='adam' gives jopt.torch.Adam, got %s" % type(b))
    for g in grads_for((5, 4), 4, 3):
        p1.grad, p2.grad = g.clone(), g.clone()
        a.step()
        b.step()
    check(torch.equal(p1, p2), "spec='adam' equals jopt.torch.Adam")
    check(jopt.torch.optimizer_class("adabelief") is jopt.torch.AdaBelief,
          "optimizer_class('adabelief') is jopt.torch.AdaBelief")
    check(jopt.numpy.optimizer_class("adam") is jopt.numpy.Adam,
          "jopt.numpy.optimizer_class('adam') is jopt.numpy.Adam")


def test_closure_spec(tmp):
    """A closure spec (a `method`) from a file: step(closure) as
    jopt.torch.LBFGS's, and a state dict that resumes it exactly (jopt's
    checkpoint: its L-BFGS history)."""
    shipped = None
    for d in os.environ["JOPT_SPEC_PATH"].split(os.pathsep):
        if os.path.isfile(os.path.join(d, "lbfgs.lua")):
            shipped = os.path.join(d, "lbfgs.lua")
    path = os.path.join(tmp, "my_lbfgs.lua")
    with open(shipped) as f, open(path, "w") as out:
        out.write(f.read())
    cls = jopt.torch.optimizer_class(path)
    check("history_size" in inspect.signature(cls).parameters, "closure spec signature")
    target = torch.tensor([3.0, 2.0, -1.0])

    def run(make, swap_at=None):
        x = torch.tensor([1.5, -0.5, 0.0], requires_grad=True)
        opt = make([x])
        for i in range(4):
            def closure():
                opt.zero_grad()
                loss = ((x - target) ** 4).sum()
                loss.backward()
                return loss
            opt.step(closure)
            if i == swap_at:  # continue in a fresh optimizer from the state dict
                sd = opt.state_dict()
                x = x.detach().clone().requires_grad_()
                opt = make([x])
                opt.load_state_dict(sd)
        return x

    opts = dict(lr=0.5, max_iter=3, history_size=3)
    ref = run(lambda ps: jopt.torch.LBFGS(ps, **opts))
    got = run(lambda ps: cls(ps, **opts))
    resumed = run(lambda ps: cls(ps, **opts), swap_at=1)
    check(torch.equal(ref, got), "closure spec file equals jopt.torch.LBFGS: %s %s"
          % (got.tolist(), ref.tolist()))
    check(torch.equal(got, resumed), "closure spec resumes from its state dict: %s %s"
          % (resumed.tolist(), got.tolist()))


def test_numpy(path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    w0 = w.copy()
    g = np.zeros_like(w)
    opt = jopt.numpy.Optimizer([w], spec=path, grads=[g], lr=0.02, centered=False)
    grads = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(4)]
    for x in grads:
        g[...] = x
        opt.step()
    want = belief_reference(torch.from_numpy(w0), [torch.from_numpy(x) for x in grads],
                            0.02, (0.9, 0.999), 1e-8, 0.0, centered=False)[-1]
    check(np.allclose(w, want.numpy(), rtol=1e-5, atol=1e-6),
          "jopt.numpy custom spec equals the rule (max diff %g)"
          % np.abs(w - want.numpy()).max())
    m, step = opt.state(w, "m")
    check(step == 4 and m.shape == w.shape, "jopt.numpy state: step %d" % step)
    opt.param_groups[0]["lr"] = 0.0
    before = w.copy()
    opt.step()
    check(np.array_equal(w, before), "group['lr'] changed between steps is used")
    raises(TypeError, "'nope'", lambda: jopt.numpy.Optimizer([w], spec=path, nope=1),
           "jopt.numpy: unknown option")


def test_bad_input(path, tmp):
    p = torch.zeros(3, requires_grad=True)
    missing = os.path.join(tmp, "no_such_rule.lua")
    raises(FileNotFoundError, missing, lambda: jopt.torch.Optimizer([p], spec=missing),
           "a spec path that does not exist")
    raises(FileNotFoundError, missing, lambda: jopt.torch.optimizer_class(missing),
           "optimizer_class of a missing path")
    raises(jopt.JoptSpecError, "no_such_spec",
           lambda: jopt.torch.Optimizer([p], spec="no_such_spec"), "an unknown spec name")
    raises(TypeError, "'momentum'", lambda: jopt.torch.Optimizer([p], spec=path, momentum=0.9),
           "an option the spec does not know")
    raises(TypeError, "'momentum'",
           lambda: jopt.torch.Optimizer([{"params": [p], "momentum": 0.9}], spec=path),
           "a group option the spec does not know")
    raises(ValueError, "Invalid learning rate: -1.0",
           lambda: jopt.torch.Optimizer([p], spec=path, lr=-1.0), "a negative lr")
    raises(ValueError, "Invalid beta parameter at index 1: 1.5",
           lambda: jopt.torch.Optimizer([p], spec=path, betas=(0.9, 1.5)), "a bad beta")
    raises(TypeError, "'lr'", lambda: jopt.torch.Optimizer([p], spec=path, lr="fast"),
           "a string lr")
    raises(TypeError, "'centered'", lambda: jopt.torch.Optimizer([p], spec=path, centered=2),
           "a number for a boolean option")
    raises(ValueError, "'betas'", lambda: jopt.torch.Optimizer([p], spec=path, betas=(0.9,)),
           "a tuple of the wrong length")
    # add_param_group with a bad value: refused, and the optimizer unchanged
    opt = jopt.torch.Optimizer([p], spec=path, lr=0.1)
    q = torch.zeros(2, requires_grad=True)
    raises(ValueError, "Invalid learning rate: -2.0",
           lambda: opt.add_param_group({"params": [q], "lr": -2.0}), "add_param_group bad lr")
    raises(TypeError, "'eps'", lambda: opt.add_param_group({"params": [q], "eps": "x"}),
           "add_param_group bad eps type")
    check(len(opt.param_groups) == 1, "a refused group is not added")
    p.grad = torch.ones(3)
    opt.step()
    check(bool((p < 0).all()), "the optimizer still steps after refused input")
    # a spec file with an error: the library's message names the file
    broken = os.path.join(tmp, "broken.lua")
    with open(broken, "w") as f:
        f.write("return { hyper = { lr = 1e-3 }, update = function (p, g, s, h) return p +")
    raises(jopt.JoptSpecError, "broken.lua:1", lambda: jopt.torch.optimizer_class(broken),
           "a spec file with a syntax error")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "belief.lua")
        with open(path, "w") as f:
            f.write(BELIEF)
        test_custom_file_torch(path)
        test_signature(path)
        test_shipped_name()
        test_closure_spec(tmp)
        test_numpy(path)
        test_bad_input(path, tmp)
    if FAILED:
        print("%d FAILED" % len(FAILED))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
