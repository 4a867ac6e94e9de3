#!/usr/bin/env python3
"""Record torch.optim.lr_scheduler runs as text fixtures for tests/test_sched.c.

Usage: python3 tests/torch/record_schedulers.py [outdir]
(default outdir: tests/fixtures/sched under the repository root).

Each case builds a torch optimizer over one tiny parameter per group, makes
its schedulers with the same option strings jopt takes (converted here to
torch's keyword arguments), then runs STEPS times `opt.step();
sched.step()` (or `sched.step(metric)` for ReduceLROnPlateau), recording
every group's lr (and betas[0] or momentum when asked) after construction
and after every step. One file per case, `<name>.txt`:

    torch 2.13.0+cpu
    optimizer <jopt spec> <optimizer options>
    group <group options>                  one line per group
    new <id> <kind> <options>              jopt_sched_new(opt, kind, options)
    lambda <id> <pow|lin> <v0,v1,...>      LambdaLR, factor pow: v[g]**e,
    mult <id> <pow|lin> <v0,v1,...>          lin: 1.0 - v[g]*e (Multiplicative)
    sequential <id> <id,id,...> <m,m,...>  SequentialLR(children, milestones)
    chained <id> <id,id,...>               ChainedScheduler(children)
    record lr [momentum]                   columns per group
    steps <n>
    metrics <m1> ... <mn>                  ReduceLROnPlateau only
    data
    <n + 1 rows: construction, then each step; Python repr of each double>
    end

The last scheduler line is the one stepped. Values are Python reprs, which
read back to the same double with strtod. Also writes messages.txt: one
constructor error per line, "spec<TAB>kind<TAB>options<TAB>torch's message",
each made with two groups (lr=0.1, lr=0.05).

Deterministic: no randomness, no threads, gradients are zero.
"""

import math
import os
import sys
import warnings

import torch
import torch.optim.lr_scheduler as S

TORCH_VERSION_REQUIRED = "2.13.0"
STEPS = 300

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}

KINDS = {
    "step": S.StepLR,
    "multistep": S.MultiStepLR,
    "exponential": S.ExponentialLR,
    "cosine": S.CosineAnnealingLR,
    "cosine_warm_restarts": S.CosineAnnealingWarmRestarts,
    "linear": S.LinearLR,
    "constant": S.ConstantLR,
    "polynomial": S.PolynomialLR,
    "onecycle": S.OneCycleLR,
    "cyclic": S.CyclicLR,
    "plateau": S.ReduceLROnPlateau,
}

# jopt's option types (runtime/sched.c), to build torch's kwargs
INT, NUM, BOOL, WORD, NUMS, INTS = range(6)
TYPES = {
    "step_size": INT, "gamma": NUM, "milestones": INTS, "T_max": INT,
    "eta_min": NUM, "T_0": INT, "T_mult": INT, "start_factor": NUM,
    "end_factor": NUM, "total_iters": INT, "factor": NUM, "power": NUM,
    "max_lr": NUMS, "total_steps": INT, "epochs": INT, "steps_per_epoch": INT,
    "pct_start": NUM, "anneal_strategy": WORD, "cycle_momentum": BOOL,
    "base_momentum": NUMS, "max_momentum": NUMS, "div_factor": NUM,
    "final_div_factor": NUM, "three_phase": BOOL, "base_lr": NUMS,
    "step_size_up": INT, "step_size_down": INT, "mode": WORD,
    "scale_mode": WORD, "min_lr": NUMS, "patience": INT, "threshold": NUM,
    "threshold_mode": WORD, "cooldown": INT, "eps": NUM,
}


def items(text):
    out = []
    for item in text.split():
        name, value = item.split("=", 1)
        out.append((name, value))
    return out


def int_or_float(v):
    """An integer literal is a Python int; anything else a float (so that a
    bad value reaches torch's own check, e.g. T_0=2.5)."""
    try:
        return int(v)
    except ValueError:
        return float(v)


def sched_kwargs(options):
    kw = {}
    for name, v in items(options):
        t = TYPES[name]
        if v == "None":
            kw[name] = None
        elif t == INT:
            kw[name] = int_or_float(v)
        elif t == NUM:
            kw[name] = float(v)
        elif t == BOOL:
            kw[name] = v in ("true", "True", "1")
        elif t == WORD:
            kw[name] = v
        elif t == NUMS:
            kw[name] = [float(x) for x in v.split(",")] if "," in v else float(v)
        else:
            kw[name] = [int(x) for x in v.split(",") if x]
    return kw


def optim_kwargs(options):
    kw = {}
    for name, v in items(options):
        if "," in v:
            kw[name] = tuple(float(x) for x in v.split(","))
        elif v in ("true", "false"):
            kw[name] = v == "true"
        else:
            kw[name] = float(v)
    return kw


def lambdas(family, values, n):
    vals = [float(x) for x in values.split(",")]
    assert len(vals) == n
    if family == "pow":
        return [lambda e, v=v: v**e for v in vals]
    return [lambda e, v=v: 1.0 - v * e for v in vals]


def make_optimizer(spec, options, groups):
    params = []
    for g in groups:
        p = torch.zeros(3, requires_grad=True)
        p.grad = torch.zeros(3)
        d = {"params": [p]}
        d.update(optim_kwargs(g))
        params.append(d)
    return OPTIMIZERS[spec](params, **optim_kwargs(options))


def build(opt, lines):
    made = {}
    last = None
    for line in lines:
        w = line.split(" ", 3)
        op, name = w[0], w[1]
        if op == "new":
            options = w[3] if len(w) > 3 else ""
            made[name] = KINDS[w[2]](opt, **sched_kwargs(options))
        elif op in ("lambda", "mult"):
            fns = lambdas(w[2], w[3], len(opt.param_groups))
            cls = S.LambdaLR if op == "lambda" else S.MultiplicativeLR
            made[name] = cls(opt, fns)
        elif op == "sequential":
            rest = w[2].split(" ") if len(w) == 3 else [w[2], w[3]]
            kids = [made[k] for k in rest[0].split(",")]
            ms = [int(m) for m in rest[1].split(",")] if len(rest) > 1 else []
            made[name] = S.SequentialLR(opt, kids, milestones=ms)
        elif op == "chained":
            kids = [made[k] for k in w[2].split(",")]
            made[name] = S.ChainedScheduler(kids)
        else:
            raise ValueError(line)
        last = made[name]
    return last


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def row(opt, record):
    out = []
    for g in opt.param_groups:
        out.append(g["lr"])
        if "momentum" in record:
            out.append(momentum_of(g))
    for v in out:
        assert type(v) is float, (type(v), v)
    return " ".join(repr(v) for v in out)


def plateau_metrics(n):
    """A loss that falls, stalls with a little wobble, falls again, stalls."""
    m = []
    for t in range(1, n + 1):
        base = 1.0 / (1.0 + 0.05 * min(t, 40)) - 0.002 * max(0, min(t, 170) - 120)
        m.append(base + 0.01 * ((t * 7919) % 13) / 13.0)
    return m


TWO = ["lr=0.1", "lr=0.05"]

# name, optimizer spec, optimizer options, group options, scheduler lines,
# recorded columns
CASES = [
    ("step", "sgd", "lr=0.1 momentum=0.9", TWO,
     ["new s step step_size=30 gamma=0.1"], "lr"),
    ("step_odd", "adam", "lr=0.003", ["lr=0.003", "lr=0.0007"],
     ["new s step step_size=7 gamma=0.77"], "lr"),
    ("multistep", "sgd", "lr=0.1", TWO,
     ["new s multistep milestones=150,30,80,80 gamma=0.5"], "lr"),
    ("exponential", "sgd", "lr=0.1", TWO,
     ["new s exponential gamma=0.98"], "lr"),
    ("cosine", "sgd", "lr=0.1 momentum=0.9", TWO,
     ["new s cosine T_max=50 eta_min=0.001"], "lr"),
    ("cosine_long", "adam", "lr=0.001", ["lr=0.001", "lr=0.0003"],
     ["new s cosine T_max=300"], "lr"),
    ("cosine_odd", "sgd", "lr=0.1", TWO,
     ["new s cosine T_max=37 eta_min=0.0123"], "lr"),
    ("warm_restarts", "sgd", "lr=0.1", TWO,
     ["new s cosine_warm_restarts T_0=10 T_mult=2 eta_min=0.0001"], "lr"),
    ("warm_restarts_flat", "adam", "lr=0.002", ["lr=0.002", "lr=0.001"],
     ["new s cosine_warm_restarts T_0=25"], "lr"),
    ("linear_default", "sgd", "lr=0.1", TWO, ["new s linear"], "lr"),
    ("linear", "sgd", "lr=0.1", TWO,
     ["new s linear start_factor=0.05 end_factor=0.5 total_iters=100"], "lr"),
    ("constant", "sgd", "lr=0.1", TWO,
     ["new s constant factor=0.5 total_iters=40"], "lr"),
    ("constant_default", "adam", "lr=0.001", ["lr=0.001", "lr=0.01"],
     ["new s constant"], "lr"),
    ("polynomial", "sgd", "lr=0.1", TWO,
     ["new s polynomial total_iters=200 power=2.0"], "lr"),
    ("polynomial_sqrt", "sgd", "lr=0.1", TWO,
     ["new s polynomial total_iters=250 power=0.5"], "lr"),
    ("onecycle_adam", "adam", "lr=0.001", ["lr=0.001", "lr=0.002"],
     ["new s onecycle max_lr=0.1,0.2 total_steps=300"], "lr momentum"),
    ("onecycle_sgd", "sgd", "lr=0.01 momentum=0.9", TWO,
     ["new s onecycle max_lr=0.05 epochs=31 steps_per_epoch=10 "
      "anneal_strategy=linear three_phase=true base_momentum=0.8,0.85 "
      "max_momentum=0.95,0.9 div_factor=10.0 final_div_factor=100.0"],
     "lr momentum"),
    ("onecycle_nomomentum", "adagrad", "lr=0.01", TWO,
     ["new s onecycle max_lr=0.3 total_steps=400 pct_start=0.25 "
      "cycle_momentum=false"], "lr"),
    ("cyclic_triangular", "sgd", "lr=0.01 momentum=0.9", TWO,
     ["new s cyclic base_lr=0.01 max_lr=0.1 step_size_up=20"], "lr momentum"),
    ("cyclic_triangular2", "adam", "lr=0.001", ["lr=0.001", "lr=0.002"],
     ["new s cyclic base_lr=0.001,0.002 max_lr=0.01,0.02 step_size_up=15 "
      "step_size_down=25 mode=triangular2"], "lr momentum"),
    ("cyclic_exp_range", "sgd", "lr=0.01", TWO,
     ["new s cyclic base_lr=0.001 max_lr=0.1 step_size_up=13 mode=exp_range "
      "gamma=0.995 scale_mode=cycle cycle_momentum=false"], "lr"),
    ("plateau", "sgd", "lr=0.1", TWO,
     ["new s plateau mode=min factor=0.5 patience=5 threshold=0.01 cooldown=3 "
      "min_lr=0.001,0.0001"], "lr"),
    ("plateau_max_abs", "adam", "lr=0.01", ["lr=0.01", "lr=0.02"],
     ["new s plateau mode=max factor=0.3 patience=2 threshold=0.001 "
      "threshold_mode=abs min_lr=0.0005"], "lr"),
    ("lambda", "sgd", "lr=0.1", TWO, ["lambda s pow 0.95,0.9"], "lr"),
    ("multiplicative", "sgd", "lr=0.1", TWO, ["mult s lin 0.001,0.0005"], "lr"),
    ("sequential_warmup_cosine", "sgd", "lr=0.1 momentum=0.9", TWO,
     ["new a linear start_factor=0.1 total_iters=10",
      "new b cosine T_max=290",
      "sequential s a,b 10"], "lr"),
    ("sequential_three", "adam", "lr=0.01", ["lr=0.01", "lr=0.005"],
     ["new a constant factor=0.25 total_iters=20",
      "new b exponential gamma=0.99",
      "new c step step_size=30 gamma=0.5",
      "sequential s a,b,c 5,100"], "lr"),
    ("sequential_restarts", "sgd", "lr=0.1", TWO,
     ["new a linear start_factor=0.2 total_iters=4",
      "new b cosine_warm_restarts T_0=20 T_mult=2",
      "lambda c pow 0.99,0.98",
      "sequential s a,b,c 8,150"], "lr"),
    # each child after the first starts at its milestone from the closed
    # form (_get_closed_form_lr), or get_lr() where it has none
    ("sequential_closed_forms", "sgd", "lr=0.1", TWO,
     ["new a exponential gamma=0.97",
      "new b polynomial total_iters=50 power=1.5",
      "new c constant factor=0.4 total_iters=15",
      "new d linear start_factor=0.3 end_factor=0.9 total_iters=30",
      "new e multistep milestones=20,20,45 gamma=0.6",
      "mult f lin 0.001,0.002",
      "sequential s a,b,c,d,e,f 20,80,110,160,230"], "lr"),
    ("chained", "sgd", "lr=0.1", TWO,
     ["new a exponential gamma=0.99",
      "new b step step_size=50 gamma=0.5",
      "chained s a,b"], "lr"),
    ("chained_warmup", "adam", "lr=0.002", ["lr=0.002", "lr=0.001"],
     ["new a constant factor=0.1 total_iters=10",
      "new b cosine T_max=100 eta_min=0.0001",
      "new c multistep milestones=60,200 gamma=0.3",
      "chained s a,b,c"], "lr"),
]


def record(case, outdir):
    name, spec, options, groups, lines, cols = case
    opt = make_optimizer(spec, options, groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch warning may fire
        sched = build(opt, lines)
        plateau = isinstance(sched, S.ReduceLROnPlateau)
        metrics = plateau_metrics(STEPS) if plateau else None
        rows = [row(opt, cols)]
        for t in range(STEPS):
            opt.step()
            if plateau:
                sched.step(metrics[t])
            else:
                sched.step()
            rows.append(row(opt, cols))
            last = sched.get_last_lr()
            assert [float(x) for x in last] == [g["lr"] for g in opt.param_groups] \
                or isinstance(sched, (S.SequentialLR,)), name
    path = os.path.join(outdir, name + ".txt")
    with open(path, "w") as f:
        f.write("torch %s\n" % torch.__version__)
        f.write("optimizer %s %s\n" % (spec, options))
        for g in groups:
            f.write("group %s\n" % g)
        for line in lines:
            f.write(line + "\n")
        f.write("record %s\n" % cols)
        f.write("steps %d\n" % STEPS)
        if metrics:
            f.write("metrics %s\n" % " ".join(repr(m) for m in metrics))
        f.write("data\n")
        f.write("\n".join(rows) + "\n")
        f.write("end\n")
    return path


# constructor errors: (spec, kind, options); each must raise in torch
BAD = [
    ("sgd", "constant", "factor=1.5"),
    ("sgd", "constant", "factor=-0.1"),
    ("sgd", "linear", "start_factor=0"),
    ("sgd", "linear", "start_factor=1.5"),
    ("sgd", "linear", "end_factor=1.5"),
    ("sgd", "linear", "end_factor=-1"),
    ("sgd", "cosine_warm_restarts", "T_0=0"),
    ("sgd", "cosine_warm_restarts", "T_0=-5"),
    ("sgd", "cosine_warm_restarts", "T_0=2.5"),
    ("sgd", "cosine_warm_restarts", "T_0=10 T_mult=0"),
    ("sgd", "cosine_warm_restarts", "T_0=10 T_mult=1.5"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=0"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=-3"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=10.5"),
    ("sgd", "onecycle", "max_lr=0.1 epochs=0 steps_per_epoch=10"),
    ("sgd", "onecycle", "max_lr=0.1 epochs=10 steps_per_epoch=0"),
    ("sgd", "onecycle", "max_lr=0.1"),
    ("sgd", "onecycle", "max_lr=0.1 epochs=10"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 pct_start=1.5"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 pct_start=-0.1"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 anneal_strategy=quadratic"),
    ("sgd", "onecycle", "max_lr=0.1,0.2,0.3 total_steps=100"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 base_momentum=0.8,0.8,0.8"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 max_momentum=0.9,0.9,0.9"),
    ("adagrad", "onecycle", "max_lr=0.1 total_steps=100"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 div_factor=0.0"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 final_div_factor=0.0"),
    ("sgd", "onecycle", "max_lr=0.1 total_steps=100 pct_start=0.01"),
    ("sgd", "cyclic", "base_lr=0.1,0.2,0.3 max_lr=1.0"),
    ("sgd", "cyclic", "base_lr=0.1 max_lr=1.0,2.0,3.0"),
    ("sgd", "cyclic", "base_lr=0.1 max_lr=1.0 mode=foo"),
    ("adagrad", "cyclic", "base_lr=0.1 max_lr=1.0"),
    ("sgd", "cyclic", "base_lr=0.1 max_lr=1.0 base_momentum=0.1,0.2,0.3"),
    ("sgd", "cyclic", "base_lr=0.1 max_lr=1.0 max_momentum=0.1,0.2,0.3"),
    ("sgd", "cyclic", "base_lr=0.1 max_lr=1.0 step_size_up=0"),
    ("sgd", "cyclic", "base_lr=0.1 max_lr=1.0 step_size_up=0 step_size_down=10"),
    ("sgd", "plateau", "factor=1.0"),
    ("sgd", "plateau", "factor=2.5"),
    ("sgd", "plateau", "mode=avg"),
    ("sgd", "plateau", "threshold_mode=foo"),
    ("sgd", "plateau", "min_lr=0.1,0.2,0.3"),
]


def bad_messages(outdir):
    lines = []
    for spec, kind, options in BAD:
        opt = make_optimizer(spec, "lr=0.1", TWO)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                KINDS[kind](opt, **sched_kwargs(options))
        except (ValueError, TypeError, ZeroDivisionError) as e:
            msg = str(e)
        else:
            raise AssertionError("torch accepted %s %s" % (kind, options))
        assert "\t" not in msg and "\n" not in msg
        lines.append("%s\t%s\t%s\t%s\n" % (spec, kind, options, msg))
    path = os.path.join(outdir, "messages.txt")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def main():
    if not torch.__version__.startswith(TORCH_VERSION_REQUIRED):
        sys.exit("need torch %s, have %s" % (TORCH_VERSION_REQUIRED, torch.__version__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures", "sched")
    os.makedirs(outdir, exist_ok=True)
    total = 0
    for case in CASES:
        total += os.path.getsize(record(case, outdir))
    total += os.path.getsize(bad_messages(outdir))
    print("%d cases, %d bytes in %s" % (len(CASES), total, outdir))


if __name__ == "__main__":
    main()
