#!/usr/bin/env python3
"""state_dict interchange between torch.optim.X and jopt.torch.X.

A torch.optim state dict loads into jopt.torch and the other way round, for
every optimizer both have; a run that switches at step K must equal the run
that never switched.  What equality can be asserted:

- torch's CPU float sqrt is not correctly rounded (about 15% of results
  are 1 ulp off), and jopt's is.  Adadelta, Adagrad, Adam, AdamW, NAdam,
  RAdam and RMSprop take a square root, so stock torch and jopt differ by a
  few ulp after a step.  With torch's sqrt entry points replaced by a
  correctly rounded one (the fixtures' .ieee-sqrt twins, docs/fidelity.md),
  torch's for-loop path gives jopt's bits, so switching in either direction
  at step K is compared bit for bit with the unswitched run, parameters
  and losses.  SGD, Adamax, ASGD and Rprop take no sqrt: compared with
  stock torch, bit for bit.
- With stock torch, a round trip jopt -> torch -> jopt (load into
  torch.optim.X, take its state_dict, load that back) at step K is compared
  bit for bit with jopt's unswitched run, and torch -> jopt -> torch with
  torch's: the conversion itself loses nothing, whatever each one's
  arithmetic.
- L-BFGS: jopt's dot products accumulate in double and torch's in float32,
  so no two runs of the two agree bit for bit.  Round trips (as above) are
  bitwise; switching torch -> jopt at step K is compared with the
  unswitched torch run within the tolerance test_torch_dropin.py measures
  for the two (rtol 1e-4 on this MLP's losses).

Bad input: a state dict of another optimizer, of another parameter layout,
with a bad value, raises an exception naming the thing, and the optimizer
is left as it was (its state_dict and the next steps equal an untouched
twin's).

Runs as a script: exit 0 on success, 77 (ctest SKIP) if torch or libjopt
is missing, 1 on failure."""

import contextlib
import copy
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# 77: ctest's SKIP; with $JOPT_REQUIRE_PYTHON set (CI), a missing dependency fails
SKIP = 1 if os.environ.get("JOPT_REQUIRE_PYTHON") else 77
try:
    import torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)
try:
    import jopt
    import jopt.torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)

if "JOPT_SPEC_PATH" not in os.environ:
    specs = os.path.join(os.path.dirname(os.path.dirname(HERE)), "specs")
    if os.path.isdir(specs):
        os.environ["JOPT_SPEC_PATH"] = specs

torch.set_num_threads(1)
STEPS, SWITCH = 12, 5
ABSENT = {0, 1, 2, 3, 4, 8}  # steps at which the last bias has no gradient: no state at SWITCH

# (name, options); SQRT: torch takes a tensor sqrt (not correctly rounded)
CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=1e-2, amsgrad=True)),
    ("Adadelta", dict(lr=1.0, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3, initial_accumulator_value=0.1)),
    ("Adamax", dict(lr=1e-2, weight_decay=0.01)),
    ("ASGD", dict(lr=0.02, t0=3)),
    ("NAdam", dict(lr=1e-2)),
    ("NAdam", dict(lr=1e-2, decoupled_weight_decay=True, weight_decay=0.01)),
    ("RAdam", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True)),
    ("Rprop", dict(lr=1e-2)),
]
SQRT = {"Adam", "AdamW", "Adadelta", "Adagrad", "NAdam", "RAdam", "RMSprop"}


@contextlib.contextmanager
def ieee_sqrt():
    """torch's sqrt entry points correctly rounded (in double, then rounded
    to float: correctly rounded, 53 >= 2*24 + 2), as the fixtures do."""
    saved = [(torch.Tensor, "sqrt", torch.Tensor.sqrt), (torch.Tensor, "sqrt_", torch.Tensor.sqrt_),
             (torch, "sqrt", torch.sqrt)]
    dsqrt = torch.Tensor.sqrt

    def exact(t):
        assert t.dtype == torch.float32, t.dtype
        return dsqrt(t.double()).float()

    def sqrt_(self):
        return self.copy_(exact(self))

    def torch_sqrt(x, *, out=None):
        r = exact(x)
        return r if out is None else out.copy_(r)

    torch.Tensor.sqrt, torch.Tensor.sqrt_, torch.sqrt = exact, sqrt_, torch_sqrt
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)


def model(widths=(8, 16, 1)):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(widths[0], widths[1]), torch.nn.Tanh(),
                               torch.nn.Linear(widths[1], widths[2]))


def groups(m, lr):
    w = [p for n, p in m.named_parameters() if n.endswith("weight")]
    b = [p for n, p in m.named_parameters() if n.endswith("bias")]
    return [{"params": w}, {"params": b, "lr": lr / 10}]


def make(kind, name, m, opts):
    if kind == "torch":
        extra = {} if name in ("LBFGS",) else {"foreach": False}
        return getattr(torch.optim, name)(groups(m, opts.get("lr", 1e-3)) if name != "LBFGS"
                                          else m.parameters(), **opts, **extra)
    return getattr(jopt.torch, name)(groups(m, opts.get("lr", 1e-3)) if name != "LBFGS"
                                     else m.parameters(), **opts)


def one_step(opt, m, x, y, i):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(m(x), y)
    loss.backward()
    if i in ABSENT:
        m[2].bias.grad = None
    opt.step()
    return loss.item()


def run(name, opts, plan):
    """plan: the kinds of optimizer for steps 0.. and after SWITCH, and how
    the state goes across: [("torch",), ("jopt",)] switches once; a middle
    entry ("via", kind) loads the state into that kind and back first."""
    x, y = data()
    m = model()
    opt = make(plan[0], name, m, opts)
    losses = [one_step(opt, m, x, y, i) for i in range(SWITCH)]
    sd = opt.state_dict()
    for kind in plan[1:]:
        nxt = make(kind, name, m, opts)
        nxt.load_state_dict(sd)
        sd = nxt.state_dict()
        opt = nxt
    losses += [one_step(opt, m, x, y, i) for i in range(SWITCH, STEPS)]
    return losses, [p.detach().clone() for p in m.parameters()]


def assert_same(what, a, b):
    (la, pa), (lb, pb) = a, b
    assert la == lb, "%s: losses differ:\n %s\n %s" % (what, la, lb)
    for u, v in zip(pa, pb):
        assert torch.equal(u, v), "%s: parameters differ by %g" % (what, (u - v).abs().max())


def test_switch_bitwise():
    for name, opts in CASES:
        patch = ieee_sqrt() if name in SQRT else contextlib.nullcontext()
        with patch:
            t = run(name, opts, ["torch"])
            j = run(name, opts, ["jopt"])
            assert_same("%s %s: torch and jopt unswitched" % (name, opts), t, j)
            assert_same("%s %s: torch -> jopt at step %d" % (name, opts, SWITCH),
                        t, run(name, opts, ["torch", "jopt"]))
            assert_same("%s %s: jopt -> torch at step %d" % (name, opts, SWITCH),
                        j, run(name, opts, ["jopt", "torch"]))
        print("ok   %-9s %-62s switched both ways: bitwise%s"
              % (name, opts, " (correctly rounded sqrt)" if name in SQRT else ""))


def test_round_trips_stock_torch():
    for name, opts in CASES:
        j = run(name, opts, ["jopt"])
        assert_same("%s %s: jopt -> torch -> jopt" % (name, opts), j,
                    run(name, opts, ["jopt", "torch", "jopt"]))
        t = run(name, opts, ["torch"])
        assert_same("%s %s: torch -> jopt -> torch" % (name, opts), t,
                    run(name, opts, ["torch", "jopt", "torch"]))
        worst = max(abs(a - b) / abs(a) for a, b in zip(t[0], j[0]))
        print("ok   %-9s %-62s round trips bitwise (stock torch vs jopt: %.1e)"
              % (name, opts, worst))


# ---- L-BFGS --------------------------------------------------------------------

def run_lbfgs(opts, plan, steps=6, switch=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    y = torch.sin(x[:, :3].sum(1, keepdim=True)) + 0.3 * torch.randn(256, 1, generator=g)
    m = model()
    opt = make(plan[0], "LBFGS", m, opts)

    def closure_for(o):
        def closure():
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            return loss
        return closure

    losses = [opt.step(closure_for(opt)).item() for _ in range(switch)]
    sd = opt.state_dict()
    for kind in plan[1:]:
        nxt = make(kind, "LBFGS", m, opts)
        nxt.load_state_dict(sd)
        sd = nxt.state_dict()
        opt = nxt
    losses += [opt.step(closure_for(opt)).item() for _ in range(switch, steps)]
    return losses, [p.detach().clone() for p in m.parameters()]


def test_lbfgs():
    for opts in [dict(max_iter=5, history_size=4),
                 dict(max_iter=5, history_size=4, line_search_fn="strong_wolfe")]:
        j = run_lbfgs(opts, ["jopt"])
        assert_same("LBFGS %s: jopt -> torch -> jopt" % opts, j,
                    run_lbfgs(opts, ["jopt", "torch", "jopt"]))
        t = run_lbfgs(opts, ["torch"])
        assert_same("LBFGS %s: torch -> jopt -> torch" % opts, t,
                    run_lbfgs(opts, ["torch", "jopt", "torch"]))
        s = run_lbfgs(opts, ["torch", "jopt"])
        worst = max(abs(a - b) / abs(a) for a, b in zip(t[0], s[0]))
        assert worst <= 1e-4, "LBFGS %s: torch -> jopt: losses %s vs %s" % (opts, t[0], s[0])
        s2 = run_lbfgs(opts, ["jopt", "torch"])
        worst2 = max(abs(a - b) / abs(a) for a, b in zip(j[0], s2[0]))
        assert worst2 <= 1e-4, "LBFGS %s: jopt -> torch: losses %s vs %s" % (opts, j[0], s2[0])
        print("ok   LBFGS %-60s round trips bitwise; switched: max rel diff %.1e, %.1e"
              % (opts, worst, worst2))


# ---- bad input ---------------------------------------------------------------------

def snapshot(opt):
    sd = opt.state_dict()
    return copy.deepcopy(sd)


def same_sd(a, b):
    assert a["param_groups"] == b["param_groups"], (a["param_groups"], b["param_groups"])
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        sa, sb = a["state"][k], b["state"][k]
        assert sa.keys() == sb.keys()
        for n in sa:
            assert torch.equal(sa[n], sb[n]) if isinstance(sa[n], torch.Tensor) \
                else sa[n] == sb[n], n


def refused(opt, sd, exc, *words):
    before = snapshot(opt)
    try:
        opt.load_state_dict(sd)
    except exc as e:
        for w in words:
            assert w in str(e), "expected %r in: %s" % (w, e)
        msg = str(e)
    else:
        raise AssertionError("load_state_dict accepted a bad state dict (%s)" % (words,))
    same_sd(before, snapshot(opt))
    return msg


def trained(kind, name, opts, m=None, steps=3):
    x, y = data()
    m = m or model()
    opt = make(kind, name, m, opts)
    for i in range(steps):
        one_step(opt, m, x, y, i + 3)
    return opt, m


def test_bad_input():
    opt, m = trained("jopt", "Adam", dict(lr=1e-2))
    twin, tm = trained("jopt", "Adam", dict(lr=1e-2))
    msgs = []
    # another optimizer's, torch's and jopt's
    msgs.append(refused(opt, trained("torch", "SGD", dict(lr=0.1, momentum=0.9))[0].state_dict(),
                        ValueError, "'betas'", "another optimizer"))
    sd = trained("torch", "Adam", dict(lr=1e-2))[0].state_dict()
    for g in sd["param_groups"]:  # SGD's keys, so that the states are what differs
        g.update(momentum=0.9, dampening=0.0, nesterov=False)
    sgd, _ = trained("jopt", "SGD", dict(lr=0.1, momentum=0.9))
    msgs.append(refused(sgd, sd, ValueError, "'exp_avg'", "another optimizer"))
    msgs.append(refused(opt, trained("jopt", "Lion", dict(lr=1e-3))[0].state_dict(),
                        ValueError, "'lion'", "'adam'"))
    # another parameter layout: other shapes, the same counts
    other = model((8, 12, 1))
    msgs.append(refused(opt, trained("torch", "Adam", dict(lr=1e-2), other)[0].state_dict(),
                        ValueError, "shape [12, 8]", "parameter 0 of param group 0"))
    # other counts: torch's own message
    one_group = torch.optim.Adam(model().parameters(), lr=1e-2)
    msgs.append(refused(opt, one_group.state_dict(), ValueError, "parameter groups"))
    # a bad value, a bad state tensor, a bad step
    sd = trained("torch", "Adam", dict(lr=1e-2))[0].state_dict()
    sd["param_groups"][1]["lr"] = -1.0
    msgs.append(refused(opt, sd, ValueError, "Invalid learning rate"))
    sd = trained("torch", "Adam", dict(lr=1e-2))[0].state_dict()
    sd["state"][1]["exp_avg"] = sd["state"][1]["exp_avg"].tolist()  # (torch casts tensors)
    msgs.append(refused(opt, sd, ValueError, "exp_avg", "float32"))
    sd = trained("torch", "Adam", dict(lr=1e-2))[0].state_dict()
    sd["state"][0]["step"] = torch.tensor(2.5)
    msgs.append(refused(opt, sd, ValueError, "step", "2.5"))
    msgs.append(refused(opt, {"state": {}}, ValueError, "param_groups"))
    # L-BFGS: another model's flat vectors
    lb = jopt.torch.LBFGS(model().parameters(), history_size=4)
    small = torch.nn.Linear(8, 1)
    t = torch.optim.LBFGS(small.parameters(), history_size=4)
    xx = torch.randn(16, 8)
    t.step(lambda: (t.zero_grad(), small(xx).square().mean().backward())[0] or
           small(xx).square().mean())
    sd = t.state_dict()
    sd["param_groups"][0]["params"] = list(range(4))
    sd["state"] = {0: sd["state"][0]}
    msgs.append(refused(lb, sd, ValueError, "another model"))
    # unchanged: the same next steps as the untouched twin
    x, y = data()
    for i in range(3):
        assert one_step(opt, m, x, y, i + 10) == one_step(twin, tm, x, y, i + 10)
    for p, q in zip(m.parameters(), tm.parameters()):
        assert torch.equal(p, q)
    for s in msgs:
        print("     refused: %s" % s.splitlines()[0][:150])
    print("ok   bad state dicts refused, optimizer unchanged")


def test_schedulers_and_keys():
    # initial_lr and the lr a scheduler set cross over too
    x, y = data()
    res = []
    for plan in (["torch"], ["torch", "jopt"], ["jopt", "torch"]):
        m = model()
        opt = make(plan[0], "SGD", m, dict(lr=0.05, momentum=0.9))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        losses = []
        for i in range(STEPS):
            if i == SWITCH and len(plan) > 1:
                sd, ssd = opt.state_dict(), sched.state_dict()
                opt = make(plan[1], "SGD", m, dict(lr=0.05, momentum=0.9))
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
                opt.load_state_dict(sd)
                sched.load_state_dict(ssd)
            losses.append(one_step(opt, m, x, y, i))
            sched.step()
        assert opt.param_groups[0]["initial_lr"] == 0.05
        res.append(losses)
    assert res[0] == res[1] == res[2], res
    print("ok   StepLR across a switch: bitwise, initial_lr kept")


def test_adafactor_factored_state():
    """Adafactor keeps a matrix's second moment as row and column means:
    torch's shapes (..., R, 1) and (..., 1, C) both ways, and a state that
    goes through torch.optim.Adafactor comes back to the same bits."""
    j = run("Adafactor", dict(lr=1e-2), ["jopt"])
    assert_same("Adafactor: jopt -> torch -> jopt", j,
                run("Adafactor", dict(lr=1e-2), ["jopt", "torch", "jopt"]))
    m = model()
    opt = make("jopt", "Adafactor", m, dict(lr=1e-2))
    x, y = data()
    one_step(opt, m, x, y, 0)
    sd = opt.state_dict()
    w = next(iter(m.parameters()))
    st = sd["state"][0]
    assert tuple(st["row_var"].shape) == (w.shape[0], 1), st["row_var"].shape
    assert tuple(st["col_var"].shape) == (1, w.shape[1]), st["col_var"].shape
    t = make("torch", "Adafactor", m, dict(lr=1e-2))
    t.load_state_dict(sd)
    assert torch.equal(t.state[w]["row_var"], st["row_var"])
    bad = {k: (dict(v, row_var=v["row_var"].reshape(-1)) if "row_var" in v else v)
           for k, v in sd["state"].items()}
    try:
        make("jopt", "Adafactor", m, dict(lr=1e-2)).load_state_dict(
            dict(sd, state=bad))
    except ValueError as e:
        assert "row_var" in str(e), e
    else:
        raise AssertionError("a row state of the wrong shape was taken")
    print("ok   Adafactor: row and column states in torch's shapes, round trip bitwise")


def main():
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
    print("all passed")


if __name__ == "__main__":
    main()
