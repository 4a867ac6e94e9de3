#!/usr/bin/env python3
"""Record torch.optim.LBFGS runs as text fixtures for jopt's closure optimizers.

Usage (from the repository root; deterministic, overwrites the files):

    python3 tests/torch/record_lbfgs.py [outdir]

(default outdir: tests/fixtures/lbfgs). Writes one `<problem>_<tag>.txt` per
(problem, case) pair and `messages.txt`. The format, the closures' exact
arithmetic and what torch 2.13's LBFGS does with float32/float64 are described
in tests/fixtures/lbfgs/README.md; the closures below are the reference.

Every closure computes its loss and gradient in IEEE double with plain
sequential loops (Python float arithmetic: no FMA, no reassociation), from the
float32 parameter values, then rounds the loss and each gradient element once
to float32 (round to nearest even). A C closure written with the same loops,
in the same operation order, in double, compiled without FP contraction
(-ffp-contract=off; ISO C modes such as -std=c11 already imply it for GCC),
reproduces them bit for bit. The logistic problem also calls libm's exp and
log1p (glibc here); a different libm could differ in the last bit of a double,
which the final float32 rounding hides in all but rare ties.

The optimizer itself is torch's code, unpatched; the recorder only wraps
LBFGS._add_grad and LBFGS._directional_evaluate (on the instance) to log the
step sizes they receive, and counts closure calls.
"""

import contextlib
import math
import os
import sys

import numpy as np
import torch
import torch.optim

TORCH_VERSION_REQUIRED = "2.13.0"
FORMAT_VERSION = 1

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DIGITS = os.path.join(ROOT, "data", "digits.bin")

# --------------------------------------------------------------------------
# Problems. Each closure maps a list of Python floats (the float32 params,
# exactly) to (loss: float, grad: list of float), all double.
# --------------------------------------------------------------------------


def rosenbrock(x):
    """N-D Rosenbrock, N = len(x) >= 2, exactly this operation order:

        f = 0; g[k] = 0 for all k
        for i = 0 .. N-2:
            a = x[i+1] - x[i]*x[i]
            b = 1 - x[i]
            f += 100*a*a + b*b            i.e. f = f + (((100*a)*a) + (b*b))
            g[i]   += -400*x[i]*a - 2*b   i.e. g[i] + (((-400*x[i])*a) - (2*b))
            g[i+1] += 200*a
    For N = 2 this is (1-x)^2 + 100 (y-x^2)^2.
    """
    n = len(x)
    f = 0.0
    g = [0.0] * n
    for i in range(n - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        f += 100.0 * a * a + b * b
        g[i] += -400.0 * x[i] * a - 2.0 * b
        g[i + 1] += 200.0 * a
    return f, g


LOGREG_SAMPLES = 200
LOGREG_FEATURES = 64
LOGREG_L2 = 0.01  # loss term LOGREG_L2/2 * sum(w*w) = 0.005 * sum(w*w)


def load_digits_subset(path=DIGITS, n=LOGREG_SAMPLES):
    """First n samples of data/digits.bin: X[i][j] = pixel/16 (exact in double),
    y[i] = 1.0 if the digit is even else 0.0."""
    with open(path, "rb") as f:
        blob = f.read()
    nl = blob.index(b"\n")
    head = blob[:nl].decode("ascii").split()
    assert head[0] == "digits", head
    total, d, k = int(head[1]), int(head[2]), int(head[3])
    assert d == LOGREG_FEATURES and k == 10 and total >= n
    feats = blob[nl + 1: nl + 1 + total * d]
    labels = blob[nl + 1 + total * d: nl + 1 + total * d + total]
    assert len(labels) == total
    X = [[feats[i * d + j] / 16.0 for j in range(d)] for i in range(n)]
    y = [1.0 if labels[i] % 2 == 0 else 0.0 for i in range(n)]
    return X, y


_DATA = None


def logreg(x):
    """Logistic regression, params x = w[0..63] then b, n = 200 samples:

        for i = 0 .. n-1:
            s = 0; for j = 0 .. 63: s += X[i][j]*w[j]
            z = s + b
            e = exp(-|z|)
            p = (z >= 0) ? 1/(1+e) : e/(1+e)
            L += log1p(e) + ((z > 0) ? z : 0) - y[i]*z      (left to right)
            r[i] = p - y[i]
        R = 0; for j: R += w[j]*w[j]
        loss = L/n + 0.005*R
        gw[j] = (sum_{i=0..n-1, ascending} r[i]*X[i][j]) / n + 0.01*w[j]
        gb    = (sum_{i ascending} r[i]) / n
    """
    global _DATA
    if _DATA is None:
        _DATA = load_digits_subset()
    X, y = _DATA
    d = LOGREG_FEATURES
    w = x[:d]
    b = x[d]
    n = len(X)
    L = 0.0
    r = [0.0] * n
    for i in range(n):
        Xi = X[i]
        s = 0.0
        for j in range(d):
            s += Xi[j] * w[j]
        z = s + b
        e = math.exp(-abs(z))
        p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        L += math.log1p(e) + (z if z > 0.0 else 0.0) - y[i] * z
        r[i] = p - y[i]
    R = 0.0
    for j in range(d):
        R += w[j] * w[j]
    loss = L / n + 0.005 * R
    g = [0.0] * (d + 1)
    for j in range(d):
        acc = 0.0
        for i in range(n):
            acc += r[i] * X[i][j]
        g[j] = acc / n + LOGREG_L2 * w[j]
    acc = 0.0
    for i in range(n):
        acc += r[i]
    g[d] = acc / n
    return loss, g


def rosen100_start():
    # x_i = -1.2 (as float32: -0x1.333334p+0) for even i, 1.0 for odd i.
    return [-1.2 if i % 2 == 0 else 1.0 for i in range(100)]


# name -> (param tensor sizes, start values (rounded to float32), closure, description)
PROBLEMS = {
    "rosen2": ([2], [-1.5, 2.0], rosenbrock,
               "rosenbrock N=2 start (-1.5, 2.0)"),
    "rosen100": ([100], rosen100_start(), rosenbrock,
                 "rosenbrock N=100 start x_i=-1.2 (float32) for even i, 1.0 for odd i"),
    "logreg": ([64, 1], [0.0] * 65, logreg,
               "logistic regression on data/digits.bin samples 0..199 "
               "(X=pixel/16, y=1 if digit even), params w[64] then b[1], start all 0, "
               "mean BCE + 0.005*sum(w*w), double internals"),
}

# (tag, torch kwargs, steps, steps for rosen100)
CASES = [
    ("default", {}, 2, 2),
    ("wolfe", {"line_search_fn": "strong_wolfe"}, 2, 2),
    ("hist3", {"history_size": 3, "max_iter": 5}, 6, 4),
    ("lr05_tol", {"lr": 0.5, "tolerance_change": 1e-6}, 2, 2),
    # not in the brief's list: history across steps *with* the line search,
    # where t is carried over between steps and may be a tensor or a double.
    ("wolfe_hist3", {"line_search_fn": "strong_wolfe", "history_size": 3, "max_iter": 5}, 6, 4),
    # also extra: a short first trial (t = lr = 0.1, a double), so the
    # bracketing phase extrapolates and clamps t to its double bounds;
    ("wolfe_lr01", {"line_search_fn": "strong_wolfe", "lr": 0.1}, 2, 1),
    # and a long one (lr = 2): zooming, and on logreg a line search that runs
    # out of evaluations in the bracketing phase and returns t = 0 (int).
    ("wolfe_lr2", {"line_search_fn": "strong_wolfe", "lr": 2.0}, 2, 1),
]

# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------


def hexd(v):
    """C99 hex float of a Python float (double), trailing zero digits removed;
    'inf', '-inf', 'nan' for non-finite values (strtod/strtof read all)."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = float.hex(v)  # [-]0x1.hhhhhhhhhhhhhp[+-]e  or [-]0x0.0p+0
    mant, exp = s.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return mant + "p" + exp


def f32(v):
    """Round a double to float32 (nearest even) and return it as a double."""
    return float(np.float32(v))


def hexf(v):
    """Hex float of a float32 value (given as a double equal to it)."""
    assert math.isnan(v) or f32(v) == v, v
    return hexd(v)


def hexvec(vals):
    return " ".join(hexf(v) for v in vals)


def fmt_option(v):
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def options_string(kwargs):
    return " ".join(f"{k}={fmt_option(v)}" for k, v in kwargs.items())


def step_kind(t):
    if isinstance(t, torch.Tensor):
        assert t.dtype == torch.float32 and t.dim() == 0, (t.dtype, t.shape)
        return "f32"
    if isinstance(t, bool):
        raise TypeError(t)
    if isinstance(t, int):
        return "int"
    if isinstance(t, float):
        return "f64"
    raise TypeError(type(t))


# --------------------------------------------------------------------------
# sqrt. The only square root in torch/optim/lbfgs.py is `d2_square.sqrt()` in
# _cubic_interpolate (the strong-Wolfe line search), on a 0-dim float32
# tensor. torch's CPU float32 sqrt is not correctly rounded even there (it
# goes through the vectorized kernel); jopt uses IEEE sqrt. As for the
# first-order fixtures (tests/fixtures/README.md), every strong-Wolfe run is
# also recorded with Tensor.sqrt replaced by a correctly rounded one (numpy's
# float32 sqrt); where that changes the file, it is written as
# <problem>_<tag>.ieee-sqrt.txt, otherwise the recorder has checked that the
# two recordings are identical.
# --------------------------------------------------------------------------

SQRT_CALLS = {"Tensor.sqrt": 0, "differs": 0}


def _ieee_sqrt_tensor(t):
    assert t.dtype == torch.float32, t.dtype
    a = np.atleast_1d(np.sqrt(t.detach().numpy().astype(np.float32)))
    return torch.from_numpy(a.copy()).reshape(t.shape)


@contextlib.contextmanager
def sqrt_probe(ieee):
    """Count Tensor.sqrt calls (and how many torch rounds differently from
    IEEE); with ieee=True return the correctly rounded result instead.
    The other ways to a sqrt must not be taken."""
    orig = torch.Tensor.sqrt
    saved = {name: getattr(owner, name) for owner, name in
             ((torch.Tensor, "sqrt_"), (torch.Tensor, "rsqrt"), (torch, "sqrt"),
              (torch, "rsqrt"), (torch, "_foreach_sqrt"))}

    def sqrt(self):
        SQRT_CALLS["Tensor.sqrt"] += 1
        mine = orig(self)
        good = _ieee_sqrt_tensor(self)
        if not torch.equal(mine, good):
            SQRT_CALLS["differs"] += 1
        return good if ieee else mine

    def forbidden(name):
        def f(*a, **kw):
            raise AssertionError(f"unexpected call to {name}")
        return f

    torch.Tensor.sqrt = sqrt
    for name in ("sqrt_", "rsqrt"):
        setattr(torch.Tensor, name, forbidden("Tensor." + name))
    for name in ("sqrt", "rsqrt", "_foreach_sqrt"):
        setattr(torch, name, forbidden("torch." + name))
    try:
        yield
    finally:
        torch.Tensor.sqrt = orig
        torch.Tensor.sqrt_ = saved["sqrt_"]
        torch.Tensor.rsqrt = saved["rsqrt"]
        torch.sqrt = saved["sqrt"]
        torch.rsqrt = saved["rsqrt"]
        torch._foreach_sqrt = saved["_foreach_sqrt"]


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


def run_case(problem, tag, kwargs, steps, ieee_sqrt=False):
    sizes, start, fn, desc = PROBLEMS[problem]
    n = sum(sizes)
    assert len(start) == n
    params = []
    off = 0
    for sz in sizes:
        params.append(torch.tensor(start[off: off + sz], dtype=torch.float32).requires_grad_())
        off += sz
    opt = torch.optim.LBFGS(params, **kwargs)
    group = opt.param_groups[0]
    effective = {k: group[k] for k in ("lr", "max_iter", "max_eval", "tolerance_grad",
                                       "tolerance_change", "history_size", "line_search_fn")}

    lines = []
    calls = [0]
    in_trial = [False]

    def flat():
        return torch.cat([p.detach().reshape(-1) for p in params]).tolist()

    def closure():
        x = flat()
        loss, grad = fn(x)
        loss32 = f32(loss)
        g32 = np.asarray(grad, dtype=np.float64).astype(np.float32)
        calls[0] += 1
        lines.append(f"call {calls[0]} {hexf(loss32)}")
        lines.append("x " + hexvec(x))
        lines.append("g " + hexvec(g32.tolist()))
        o = 0
        for p, sz in zip(params, sizes):
            p.grad = torch.from_numpy(g32[o: o + sz].copy()).reshape(p.shape)
            o += sz
        return torch.tensor(loss32, dtype=torch.float32)

    orig_add_grad = opt._add_grad
    orig_dir_eval = opt._directional_evaluate

    def add_grad(step_size, update):
        kind = step_kind(step_size)
        lines.append(f"t {'trial' if in_trial[0] else 'move'} {kind} {hexd(float(step_size))}")
        return orig_add_grad(step_size, update)

    def dir_eval(closure_, x, t, d):
        in_trial[0] = True
        try:
            return orig_dir_eval(closure_, x, t, d)
        finally:
            in_trial[0] = False

    opt._add_grad = add_grad
    opt._directional_evaluate = dir_eval

    summary = []
    for s in range(1, steps + 1):
        with sqrt_probe(ieee_sqrt):
            ret = opt.step(closure)
        assert isinstance(ret, torch.Tensor) and ret.dtype == torch.float32
        st = opt.state[params[0]]
        assert st["func_evals"] == calls[0], (st["func_evals"], calls[0])
        loss = float(ret)
        lines.append(f"step {s} {hexf(loss)} {st['func_evals']} {st['n_iter']}")
        lines.append("p " + hexvec(flat()))
        summary.append((s, loss, st["func_evals"], st["n_iter"]))

    # The loss at the final parameters, for reporting only (not an extra
    # closure call in the file).
    final_loss = f32(fn(flat())[0])

    head = [
        f"jopt-lbfgs-fixture {FORMAT_VERSION}",
        f"problem {problem}",
        f"options {options_string(kwargs)}",  # exactly one space, then possibly nothing
        f"effective {options_string(effective)}",
        f"torch {torch.__version__}" + (" (Tensor.sqrt correctly rounded)" if ieee_sqrt else ""),
        f"sizes {' '.join(str(s) for s in sizes)}",
        f"steps {steps}",
        f"closure {desc}",
        "end",
        "x0 " + hexvec([f32(v) for v in start]),
    ]
    text = "\n".join(head + lines) + "\n"
    return text, summary, final_loss, calls[0]


# --------------------------------------------------------------------------
# Error messages
# --------------------------------------------------------------------------


def _quad_closure(p):
    def closure():
        c = torch.tensor([1.0, -2.0])
        p.grad = (p.detach() - c) * torch.tensor([1.0, 3.0])
        return (0.5 * (p.detach() - c) ** 2).sum()
    return closure


def message_cases():
    """(options string, callable that must raise, exception type)."""
    def ctor(**kw):
        return lambda: torch.optim.LBFGS([torch.zeros(2, requires_grad=True)], **kw)

    def at_step(**kw):
        def f():
            p = torch.zeros(2, requires_grad=True)
            torch.optim.LBFGS([p], **kw).step(_quad_closure(p))
        return f

    def groups():
        torch.optim.LBFGS([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)]}])

    def empty():
        torch.optim.LBFGS([])

    return [
        ("lr=-1", ctor(lr=-1.0), ValueError),
        ("lr=-0.001", ctor(lr=-0.001), ValueError),
        ("lr=nan", ctor(lr=float("nan")), ValueError),
        ("groups=2", groups, ValueError),
        ("params=empty", empty, ValueError),
        ("line_search_fn=bogus", at_step(line_search_fn="bogus"), RuntimeError),
    ]


def messages():
    out = []
    for opts, fn, etype in message_cases():
        try:
            fn()
        except etype as e:
            out.append(f"{opts}\t{e}")
        else:
            raise AssertionError(f"{opts}: no {etype.__name__}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv):
    if not torch.__version__.startswith(TORCH_VERSION_REQUIRED):
        print(f"need torch {TORCH_VERSION_REQUIRED}, have {torch.__version__}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    torch.manual_seed(0)  # nothing random is drawn; set for good measure
    assert torch.get_default_dtype() == torch.float32
    outdir = argv[1] if len(argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "lbfgs")
    os.makedirs(outdir, exist_ok=True)

    written = set()
    for problem in PROBLEMS:
        for tag, kwargs, steps, steps100 in CASES:
            nsteps = steps100 if problem == "rosen100" else steps
            SQRT_CALLS.update({"Tensor.sqrt": 0, "differs": 0})
            text, summary, final_loss, ncalls = run_case(problem, tag, kwargs, nsteps)
            sqrt_calls, sqrt_differs = SQRT_CALLS["Tensor.sqrt"], SQRT_CALLS["differs"]
            wolfe = kwargs.get("line_search_fn") == "strong_wolfe"
            assert (sqrt_calls > 0) == wolfe, (problem, tag, sqrt_calls)
            name = f"{problem}_{tag}.txt"
            write_atomic(os.path.join(outdir, name), text)
            written.add(name)
            per_step = "; ".join(f"s{s}: ret {l:.9g} evals {e} n_iter {k}" for s, l, e, k in summary)
            print(f"{name}: {len(text)} bytes, {ncalls} closure calls, "
                  f"loss at final params {final_loss:.9g}, sqrt calls {sqrt_calls} "
                  f"({sqrt_differs} not correctly rounded) | {per_step}")
            if wolfe:
                itext, isummary, ifinal, icalls = run_case(problem, tag, kwargs, nsteps, ieee_sqrt=True)
                plain = itext.replace(" (Tensor.sqrt correctly rounded)", "", 1)
                if plain != text:
                    iname = f"{problem}_{tag}.ieee-sqrt.txt"
                    write_atomic(os.path.join(outdir, iname), itext)
                    written.add(iname)
                    per_step = "; ".join(f"s{s}: ret {l:.9g} evals {e} n_iter {k}"
                                         for s, l, e, k in isummary)
                    print(f"{iname}: {len(itext)} bytes, {icalls} closure calls, "
                          f"loss at final params {ifinal:.9g} | {per_step}")
                else:
                    print(f"  (IEEE sqrt: identical recording, no .ieee-sqrt file)")

    write_atomic(os.path.join(outdir, "messages.txt"), messages())
    written.add("messages.txt")
    stale = sorted(f for f in os.listdir(outdir)
                   if f.endswith(".txt") and f not in written)
    if stale:
        print("note: files not written by this run: " + " ".join(stale), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
