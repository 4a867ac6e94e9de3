#!/usr/bin/env python3
"""torch7's optim.cg transcribed line by line into Python, as a reference for
jopt's conjugate gradient (runtime/conjgrad.c, specs/cg.lua).

Usage (from the repository root; deterministic, needs only numpy):

    python3 tests/torch/cg_reference.py [outdir]      # default tests/fixtures/cg

writes `<problem>_<tag>.txt` for rosen2 and rosen100 (format in
tests/fixtures/cg/README.md) and prints a summary per file.

There is no torch7 to record, so this is the specification
(tests/fixtures/lbfgs/cg_reference.md, the pseudocode of cg.lua) run with
the arithmetic jopt states for its port, NOT float64:

- vectors are float32 (numpy), scalars Python floats (IEEE double), in
  cg.lua's order of operations;
- a scalar meeting a vector is rounded to float32 first (torch7's FloatTensor
  methods take a C float);
- x:add(z, s) is a fused multiply-add fmaf(s, (float)z, x), computed exactly
  here (fractions) and rounded once to float32;
- s:mul(c) then s:add(-1, g) are two float32 roundings; -g and copies exact;
- a:dot(b) multiplies in float32 and accumulates the products in double in
  jopt's order: 16 lanes by element index, then the lanes in order (jopt's
  sum(); one 65536-element range covers these sizes).

The closures are the L-BFGS fixtures' (tests/fixtures/lbfgs/README.md,
"Problems"): double loops, loss and gradient rounded once to float32.
Lua's math.min/math.max (5.1: the first argument unless a later one compares
smaller/greater) are copied; so is the Lua truthiness that ends a call at its
first failed line search.
"""

import math
import os
import sys
from fractions import Fraction

import numpy as np

F32 = np.float32
HERE = os.path.dirname(os.path.abspath(__file__))
# cg.lua's config keys -> jopt's option names
SNAKE = {"rho": "rho", "sig": "sig", "int": "int", "ext": "ext",
         "maxIter": "max_iter", "ratio": "ratio", "maxEval": "max_eval"}


def lua_min(a, b):
    return b if b < a else a


def lua_max(a, b):
    return b if b > a else a


def round_f32(exact):
    """The float32 nearest to a Fraction, ties to even."""
    r = F32(float(exact))  # at most one float32 ulp off (double rounding)
    best = None
    for c in (np.nextafter(r, F32(-np.inf)), r, np.nextafter(r, F32(np.inf))):
        if not np.isfinite(c):
            continue
        dist = abs(Fraction(float(c)) - exact)
        even = (int(c.view(np.uint32)) & 1) == 0
        if best is None or dist < best[0] or (dist == best[0] and even):
            best = (dist, c)
    return best[1]


def fma32(a, b, c):
    """fmaf(a, b, c) for float32 a, b, c: one rounding."""
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
        return F32(np.float64(a) * np.float64(b) + np.float64(c))
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:  # the sign of an exact zero: IEEE rules for a*b + c
        return F32(np.float64(a) * np.float64(b) + np.float64(c))
    return round_f32(exact)


def add_scaled(x, z, s):
    """x:add(z, s) in place: x = fmaf(s, (float)z, x)"""
    zf = F32(z)
    for k in range(len(x)):
        x[k] = fma32(s[k], zf, x[k])


def dot(a, b):
    # jopt's sum(): element k of the range in lane k % 16, then the lanes
    # added in order (one 65536-element range covers these sizes)
    lanes = [0.0] * 16
    for k in range(len(a)):
        lanes[k % 16] += float(F32(a[k]) * F32(b[k]))
    acc = 0.0
    for v in lanes:
        acc += v
    return acc


# ---- the problems (tests/fixtures/lbfgs/README.md) ------------------------

def rosen(x):
    n = len(x)
    xd = [float(v) for v in x]
    f = 0.0
    g = [0.0] * n
    for i in range(n - 1):
        a = xd[i + 1] - xd[i] * xd[i]
        b = 1 - xd[i]
        f = f + (((100 * a) * a) + (b * b))
        g[i] = g[i] + (((-400 * xd[i]) * a) - (2 * b))
        g[i + 1] = g[i + 1] + 200 * a
    return float(F32(f)), np.array(g, dtype=np.float64).astype(F32)


def rosen_start(n):
    if n == 2:
        return np.array([-1.5, 2.0], dtype=F32)
    return np.array([-1.2 if i % 2 == 0 else 1.0 for i in range(n)], dtype=F32)


# ---- optim.cg ---------------------------------------------------------------

def cg(opfunc, x, config):
    """One call of optim.cg: returns x (updated in place), fx, i."""
    rho = config.get("rho", 0.01)
    sig = config.get("sig", 0.5)
    int_ = config.get("int", 0.1)
    ext = config.get("ext", 3.0)
    max_iter = config.get("maxIter", 20)
    ratio = config.get("ratio", 100)
    max_eval = config.get("maxEval", max_iter * 1.25)
    red = 1

    i = 0
    ls_failed = 0
    fx = []
    z1 = z2 = z3 = 0.0
    d1 = d2 = d3 = 0.0
    f1 = f2 = f3 = 0.0

    f1, tdf = opfunc(x)
    fx.append(f1)
    df1 = tdf.copy()
    i = i + 1

    s = -df1
    d1 = -dot(s, s)
    z1 = red / (1 - d1)

    while i < abs(max_eval):
        x0 = x.copy()
        f0 = f1
        df0 = df1.copy()

        add_scaled(x, z1, s)
        f2, tdf = opfunc(x)
        df2 = tdf.copy()
        i = i + 1
        d2 = dot(df2, s)
        f3, d3, z3 = f1, d1, -z1
        m = lua_min(max_iter, max_eval - i)
        success = 0
        limit = -1

        while True:
            while ((f2 > f1 + z1 * rho * d1) or (d2 > -sig * d1)) and (m > 0):
                limit = z1
                if f2 > f1:
                    z2 = z3 - _div(0.5 * d3 * z3 * z3, d3 * z3 + f2 - f3)
                else:
                    A = _div(6 * (f2 - f3), z3) + 3 * (d2 + d3)
                    B = 3 * (f3 - f2) - z3 * (d3 + 2 * d2)
                    z2 = _div(_sqrt(B * B - A * d2 * z3 * z3) - B, A)
                if z2 != z2 or z2 == math.inf or z2 == -math.inf:
                    z2 = z3 / 2
                z2 = lua_max(lua_min(z2, int_ * z3), (1 - int_) * z3)
                z1 = z1 + z2
                add_scaled(x, z2, s)
                f2, tdf = opfunc(x)
                df2 = tdf.copy()
                i = i + 1
                m = m - 1
                d2 = dot(df2, s)
                z3 = z3 - z2

            if (f2 > f1 + z1 * rho * d1) or (d2 > -sig * d1):
                break
            elif d2 > sig * d1:
                success = 1
                break
            elif m == 0:
                break

            A = _div(6 * (f2 - f3), z3) + 3 * (d2 + d3)
            B = 3 * (f3 - f2) - z3 * (d3 + 2 * d2)
            z2 = _div(-d2 * z3 * z3, B + _sqrt(B * B - A * d2 * z3 * z3))
            if z2 != z2 or z2 == math.inf or z2 == -math.inf or z2 < 0:
                if limit < -0.5:
                    z2 = z1 * (ext - 1)
                else:
                    z2 = (limit - z1) / 2
            elif (limit > -0.5) and (z2 + z1 > limit):
                z2 = (limit - z1) / 2
            elif (limit < -0.5) and (z2 + z1 > z1 * ext):
                z2 = z1 * (ext - 1)
            elif z2 < -z3 * int_:
                z2 = -z3 * int_
            elif (limit > -0.5) and (z2 < (limit - z1) * (1 - int_)):
                z2 = (limit - z1) * (1 - int_)
            f3 = f2
            d3 = d2
            z3 = -z2
            z1 = z1 + z2
            add_scaled(x, z2, s)
            f2, tdf = opfunc(x)
            df2 = tdf.copy()
            i = i + 1
            m = m - 1
            d2 = dot(df2, s)

        if success == 1:
            f1 = f2
            fx.append(f1)
            ss = _div(dot(df2, df2) - dot(df2, df1), dot(df1, df1))
            s = (s * F32(ss)).astype(F32)   # s:mul(ss)
            s = (s - df2).astype(F32)       # s:add(-1, df2)
            df1, df2 = df2, df1
            d2 = dot(df1, s)
            if d2 > 0:
                s = -df1
                d2 = -dot(s, s)
            z1 = z1 * lua_min(ratio, _div(d1, d2 - 1e-320))
            d1 = d2
            ls_failed = 0
        else:
            x[:] = x0
            f1 = f0
            df1 = df0
            # `if ls_failed or i > maxEval`: a Lua number is always true
            break
    return x, fx, i


def _sqrt(v):
    """Lua's math.sqrt: NaN for a negative argument (Python raises)"""
    return math.sqrt(v) if v >= 0 else math.nan


def _div(a, b):
    """IEEE double division (Python raises on a zero divisor)."""
    if b != 0:
        return a / b
    if a != a or a == 0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def hexf(v):
    v = float(v)
    if v != v:
        return "nan"
    if v in (math.inf, -math.inf):
        return "inf" if v > 0 else "-inf"
    h = v.hex()  # C99 hex float, trailing zero digits dropped: 0x1.9p+3
    mant, exp = h.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return mant + "p" + exp


def record(name, n, steps, outdir, config=None, tag="default"):
    config = config or {}
    x = rosen_start(n)
    calls = []
    per_step = []

    def opfunc(xx):
        f, g = rosen(xx)
        calls.append(f)
        return f, g

    opts = " ".join("%s=%s" % (SNAKE[k], v) for k, v in sorted(config.items()))
    lines = ["jopt-cg-reference 1", "problem %s" % name, "options " + opts,
             "steps %d" % steps, "end"]
    lines.append("x0 " + " ".join(hexf(v) for v in x))
    for step in range(1, steps + 1):
        before = len(calls)
        x, fx, i = cg(opfunc, x, config)
        assert i == len(calls) - before
        per_step.append(i)
        for k in range(before, len(calls)):
            lines.append("call %d %s" % (k + 1, hexf(calls[k])))
        lines.append("step %d %s %d %d" % (step, hexf(fx[0]), i, len(fx) - 1))
        lines.append("p " + " ".join(hexf(v) for v in x))
    path = os.path.normpath(os.path.join(outdir, "%s_%s.txt" % (name, tag)))
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    f_end, _ = rosen(x)
    print("%s: %d steps, %d calls (%s), final f %.9g, max |x-1| %.3g" %
          (path, steps, len(calls), "+".join(map(str, per_step)), f_end,
           float(np.max(np.abs(x - 1)))))


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(HERE, "..", "fixtures", "cg")
    os.makedirs(outdir, exist_ok=True)
    record("rosen2", 2, 6, outdir)
    record("rosen100", 100, 10, outdir)
    # max_iter=3: maxEval 3.75, fractional; searches run past their budget
    record("rosen100", 100, 8, outdir, {"maxIter": 3}, "max_iter3")


if __name__ == "__main__":
    main()
