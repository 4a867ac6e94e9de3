#!/usr/bin/env python3
"""jopt.torch and jopt.numpy's spec-language-2 optimizers against their
references: torch 2.13's Adafactor, and pytorch_optimizer 4.1.0's
AdaBelief, Adan, ScheduleFreeAdamW (with eval/train), SophiaH (with an
external Hessian), Prodigy, AdEMAMix and AdEMAMix-as-cautious-AdamW.

Runs as a script: exit 0 on success, 77 (ctest SKIP) if torch, numpy,
pytorch_optimizer or libjopt.so is missing, 1 on failure.  Each case runs
the reference and jopt side by side for STEPS steps on tensors of several
shapes (one without a gradient at some steps) and compares the parameters
after every step; the tolerance is torch's float32 rtol (the references'
float32 sqrt, norms and dot products are not jopt's: tests/test_spec2.c and
docs/fidelity.md have the bit-level comparison)."""

import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # python/, for `import jopt`

SKIP = 77
try:
    import numpy as np
    import torch
    import pytorch_optimizer as po
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
STEPS = 30
SHAPES = [(7, 9), (13,), (3, 5, 3), (1,), (6, 1)]


def po_cautious_adamw(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                      maximize=False):
    return po.AdEMAMix(params, lr=lr, betas=(betas[0], betas[1], 0.9999), eps=eps,
                       weight_decay=weight_decay, weight_decouple=True, alpha=0.0,
                       cautious=True, maximize=maximize, foreach=False)


# (jopt class, reference constructor, options, rtol, atol)
CASES = [
    ("Adafactor", torch.optim.Adafactor, {}, 1e-5, 1e-6),
    ("Adafactor", torch.optim.Adafactor, dict(lr=0.05, weight_decay=0.1, maximize=True),
     1e-5, 1e-6),
    ("AdaBelief", po.AdaBelief, dict(lr=1e-2, weight_decay=0.1), 1e-5, 1e-6),
    ("AdaBelief", po.AdaBelief, dict(lr=1e-2, rectify=True, ams_bound=True), 1e-5, 1e-6),
    ("Adan", po.Adan, dict(lr=1e-2, weight_decay=0.02, max_grad_norm=5.0), 1e-5, 1e-6),
    ("Adan", po.Adan, dict(lr=1e-2, weight_decay=0.02, weight_decouple=True,
                           maximize=True), 1e-5, 1e-6),
    ("ScheduleFreeAdamW", po.ScheduleFreeAdamW, dict(lr=1e-2, warmup_steps=5,
                                                     weight_decay=0.1), 1e-5, 1e-6),
    ("SophiaH", po.SophiaH, dict(lr=1e-2, update_period=5, weight_decay=0.1), 1e-5, 1e-6),
    ("Prodigy", po.Prodigy, dict(weight_decay=0.01), 1e-4, 1e-6),
    ("Prodigy", po.Prodigy, dict(eps=None, d_coef=2.0, growth_rate=1.02), 1e-4, 1e-6),
    ("AdEMAMix", po.AdEMAMix, dict(lr=1e-2, t_alpha_beta3=20.0, cautious=True), 1e-5, 1e-6),
    ("CautiousAdamW", po_cautious_adamw, dict(lr=1e-2, weight_decay=0.01), 1e-5, 1e-6),
]

FAILED = []


def check(ok, what):
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if not ok:
        FAILED.append(what)


def reference_kwargs(ref, opts):
    kw = dict(opts)
    if ref is not torch.optim.Adafactor and ref is not po_cautious_adamw:
        kw["foreach"] = False  # the per-parameter path the fixtures record
    return kw


def test_against_reference():
    for name, ref, opts, rtol, atol in CASES:
        gen = torch.Generator().manual_seed(1)
        init = [torch.randn(s, generator=gen) for s in SHAPES]
        pr = [t.clone().requires_grad_() for t in init]
        pj = [t.clone().requires_grad_() for t in init]
        ro = ref(pr, **reference_kwargs(ref, opts))
        jo = getattr(jopt.torch, name)(pj, **opts)
        worst = 0.0
        for s in range(1, STEPS + 1):
            for i, (a, b) in enumerate(zip(pr, pj)):
                g = torch.randn(a.shape, generator=gen)
                if name == "Prodigy":  # closed loop, so that d moves
                    g = 0.5 * a.detach() + 0.1 * g
                absent = i == 2 and s in (3, 4)
                a.grad = None if absent else g.clone()
                b.grad = None if absent else g.clone()
            if name == "SophiaH" and (s - 1) % opts["update_period"] in (0, 2):
                hess = [torch.randn(a.shape, generator=gen).square() for a in pr]
                ro.step(hessian=[h.clone() for h in hess])
                jo.step(hessian=hess)
            else:
                ro.step()
                jo.step()
            if name == "ScheduleFreeAdamW" and s % 10 == 0:
                ro.eval()
                jo.eval()
                for a, b in zip(pr, pj):
                    worst = max(worst, rel(a, b, atol))
                ro.train()
                jo.train()
            for a, b in zip(pr, pj):
                worst = max(worst, rel(a, b, atol))
        check(worst <= rtol, "%s %s: %d steps, max |jopt - ref| - atol over |ref|: %.2e "
              "(rtol %.0e)" % (name, opts, STEPS, worst, rtol))


def rel(a, b, atol):
    a, b = a.detach().double(), b.detach().double()
    d = ((a - b).abs() - atol).clamp(min=0) / a.abs().clamp(min=1e-30)
    return float(d.max())


def test_numpy_equals_torch():
    """jopt.numpy runs the same kernels: the same bits as jopt.torch."""
    for name, _, opts, _, _ in CASES:
        gen = torch.Generator().manual_seed(2)
        init = [torch.randn(s, generator=gen) for s in SHAPES]
        pt = [t.clone().requires_grad_() for t in init]
        pn = [t.numpy().copy() for t in init]
        to = getattr(jopt.torch, name)(pt, **opts)
        no = getattr(jopt.numpy, name)(pn, **opts)
        same = True
        for s in range(1, 8):
            grads = [torch.randn(a.shape, generator=gen) for a in pt]
            for a, g in zip(pt, grads):
                a.grad = g.clone()
            kw = {}
            if name == "SophiaH":
                hess = [torch.rand(a.shape, generator=gen) for a in pt]
                to.step(hessian=hess)
                kw["hessian"] = [h.numpy().copy() for h in hess]
            else:
                to.step()
            no.step(grads=[g.numpy().copy() for g in grads], **kw)
            if name == "ScheduleFreeAdamW" and s == 4:
                to.eval()
                no.eval()
            same &= all(np.array_equal(a.detach().numpy(), b) for a, b in zip(pt, pn))
        check(same, "jopt.numpy.%s == jopt.torch.%s, bit for bit" % (name, name))


def test_signatures():
    """The reference's parameter names and defaults (its **kwargs aside)."""
    refs = {"Adafactor": torch.optim.Adafactor, "AdaBelief": po.AdaBelief,
            "Adan": po.Adan, "ScheduleFreeAdamW": po.ScheduleFreeAdamW,
            "SophiaH": po.SophiaH, "Prodigy": po.Prodigy, "AdEMAMix": po.AdEMAMix}
    for name, ref in refs.items():
        want = [(p.name, p.default) for p in inspect.signature(ref).parameters.values()
                if p.kind != p.VAR_KEYWORD]
        got = [(p.name, p.default) for p in
               inspect.signature(getattr(jopt.torch, name)).parameters.values()
               if p.name != "cautious"]
        check(want == got, "jopt.torch.%s's signature is %s's" % (name, ref.__qualname__))


def test_messages():
    """A bad value is refused with the reference's message (messages.txt
    has them all; tests/test_spec2.c checks every one in C)."""
    cases = [("Adafactor", dict(beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5"),
             ("AdaBelief", dict(lr=-1.0), "learning rate must be positive. (-1.0 > 0)"),
             ("Adan", dict(betas=(0.98, 0.92, 1.5)), "beta3 must be in the range [0.0, 1.0]"),
             ("ScheduleFreeAdamW", dict(betas=(0.0, 0.999)),
              "beta1 must be in the range (0.0, 1.0)"),
             ("SophiaH", dict(update_period=0), "update_period must be positive. (0 > 0)"),
             ("Prodigy", dict(beta3=-1.0), "beta3 must be in the range [0.0, 1.0]"),
             ("AdEMAMix", dict(alpha=-1.0), "alpha must be non-negative"),
             ("CautiousAdamW", dict(eps=-1.0), "eps must be non-negative")]
    for name, opts, msg in cases:
        try:
            getattr(jopt.torch, name)([torch.zeros(3, requires_grad=True)], **opts)
            got = "(accepted)"
        except ValueError as e:
            got = str(e)
        check(msg in got, "%s(%s) raises \"%s\" (got \"%s\")" % (name, opts, msg, got))


def test_sophia_needs_hessian():
    """SophiaH estimates the Hessian itself at steps 1, 1 + k, ...; jopt
    takes it as an input and refuses such a step without it."""
    p = torch.zeros(4, requires_grad=True)
    o = jopt.torch.SophiaH([p], update_period=2)
    p.grad = torch.ones(4)
    try:
        o.step()
        raised = False
    except ValueError as e:
        raised = "give the estimate as input 'hessian'" in str(e)
    check(raised and bool((p == 0).all()), "SophiaH without a Hessian at step 1: "
          "ValueError, nothing changed")
    o.step(hessian=[torch.ones(4)])
    o.step()  # step 2: none needed
    check(bool((p != 0).all()), "SophiaH steps with a Hessian, and between updates without")


def test_adafactor_state_shapes():
    p = torch.zeros(7, 9, requires_grad=True)
    o = jopt.torch.Adafactor([p])
    p.grad = torch.randn(7, 9)
    o.step()
    r, _ = o.jopt_state(p, "row_var")
    c, _ = o.jopt_state(p, "col_var")
    check(tuple(r.shape) == (7, 1) and tuple(c.shape) == (1, 9),
          "Adafactor's row_var and col_var have torch's shapes (7, 1) and (1, 9)")


def test_group_state():
    p = torch.ones(5, requires_grad=True)
    o = jopt.torch.Prodigy([p])
    for _ in range(3):
        p.grad = p.detach().clone()  # the gradient of |p|²/2
        o.step()
    d = o.jopt_group_state("d")
    check(d > 1e-6, "Prodigy's d is read as the group's state (%g)" % d)


def main():
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
    if FAILED:
        print("%d FAILED" % len(FAILED))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
