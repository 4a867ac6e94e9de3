#!/usr/bin/env python3
"""Executable models of the float32 CPU reductions the spec2 references use,
found by experiment against torch 2.13.0+cpu on an AVX2 machine
(ATen CPU capability AVX2, Vectorized<float> = 8 lanes, one thread).

    python3 tests/torch/aten_reductions.py      # checks every model against torch

Each model gives torch's bits exactly on the sizes checked below (thousands
of random inputs each). They describe ATen's kernels as compiled in the
official 2.13 CPU wheel for AVX2; an AVX512 capability (16 lanes) would
change the lane counts and tails. See tests/fixtures/spec2/ALGORITHMS.md.
"""

import math
import sys

import numpy as np
import torch

f32 = np.float32


def fma(a, b, c):
    """fl(a*b + c), one rounding (the product of two floats is exact in double;
    a double rounding of the sum is possible in rare cases, never seen here)."""
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def norm2_sq_lastdim(x):
    """Sum of squares as ATen's 2-norm fast path takes it, for a reduction
    over a contiguous last dim (torch.norm(g, dim=-1), and Tensor.norm(2) of a
    whole contiguous tensor, which is reduced as one flat row; also a reduction
    over dim -2 when the last dim has size 1). The norm is
    np.sqrt(f32(result)), a correctly rounded float32 sqrt.

    8 float32 lane accumulators take the full 8-element vectors, each with a
    separate multiply and add (no FMA); the lanes are summed in order 0..7;
    then the tail of r = n % 8 elements: if r >= 4 the first 4 are added as
    b + fl(x*x), the rest (or all, if r < 4) as fma(x, x, b)."""
    x = np.asarray(x, np.float32).reshape(-1)
    n = len(x)
    full = n - n % 8
    acc = np.zeros(8, np.float32)
    for d in range(0, full, 8):
        v = x[d:d + 8]
        acc = (acc + (v * v).astype(np.float32)).astype(np.float32)
    b = acc[0]
    for j in range(1, 8):
        b = f32(b + acc[j])
    k = full
    if n - full >= 4:
        for d in range(full, full + 4):
            b = f32(b + f32(x[d] * x[d]))
        k = full + 4
    for d in range(k, n):
        b = fma(x[d], x[d], b)
    return b


def norm2_sq_strided(x):
    """Sum of squares for a 2-norm over a non-contiguous dim
    (torch.norm(g, dim=-2) with a last dim > 1): per output, sequential in
    index order, b + fl(x*x), no FMA."""
    b = f32(0)
    for v in np.asarray(x, np.float32).reshape(-1):
        b = f32(b + f32(v * v))
    return b


def _multi_row_sum(rows, nrows):
    """ATen's multi_row_sum (SumKernel.cpp): nrows running sums over `rows`,
    cascaded through 4 levels of accumulators in blocks of 2**level_power."""
    size = len(rows)
    num_levels = 4
    level_power = max(4, (0 if size <= 1 else math.ceil(math.log2(size))) // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    zero = np.zeros_like(np.asarray(rows[0][0], np.float32))
    acc = [[zero.copy() for _ in range(nrows)] for _ in range(num_levels)]
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            for k in range(nrows):
                acc[0][k] = np.float32(acc[0][k] + rows[i][k])
            i += 1
        for j in range(1, num_levels):
            for k in range(nrows):
                acc[j][k] = np.float32(acc[j][k] + acc[j - 1][k])
                acc[j - 1][k] = zero.copy()
            if i & (level_mask << (j * level_power)):
                break
    while i < size:
        for k in range(nrows):
            acc[0][k] = np.float32(acc[0][k] + rows[i][k])
        i += 1
    for j in range(1, num_levels):
        for k in range(nrows):
            acc[0][k] = np.float32(acc[0][k] + acc[j][k])
    return acc[0]


def _row_sum(items):
    """ATen's row_sum: 4 interleaved partial sums (ilp 4) over items (scalars
    or 8-lane vectors), the leftover items into partial 0, then p0+p1+p2+p3."""
    ilp = 4
    size_ilp = len(items) // ilp
    if size_ilp:
        ps = _multi_row_sum([items[r * ilp:(r + 1) * ilp] for r in range(size_ilp)], ilp)
    else:
        ps = [np.zeros_like(np.asarray(items[0], np.float32)) for _ in range(ilp)]
    for i in range(size_ilp * ilp, len(items)):
        ps[0] = np.float32(ps[0] + items[i])
    for k in range(1, ilp):
        ps[0] = np.float32(ps[0] + ps[k])
    return ps[0]


def sum_contiguous(x, lanes=8):
    """Tensor.sum() of a contiguous float32 tensor (also the sum inside
    Tensor.mean over a contiguous dim), ATen's cascade sum: n >= 8: the
    n // 8 full vectors through _row_sum (vector adds), then a scalar
    starting at 0 takes the tail elements in order, then the 8 lanes in
    order 0..7. n < 8: _row_sum over the scalars."""
    x = np.asarray(x, np.float32).reshape(-1)
    n = len(x)
    if n == 0:
        return f32(0)
    if n >= lanes:
        nv = n // lanes
        vacc = _row_sum([x[i * lanes:(i + 1) * lanes] for i in range(nv)])
        final = f32(0)
        for k in range(nv * lanes, n):
            final = f32(final + x[k])
        for k in range(lanes):
            final = f32(final + vacc[k])
        return final
    return f32(_row_sum([f32(v) for v in x]))


def mean_contiguous(x):
    """Tensor.mean over a contiguous run: sum_contiguous, then divided by n
    (a true float32 division, not a multiplication by 1/n)."""
    return f32(sum_contiguous(x) / f32(np.asarray(x).size))


def check(trials=100, seed=0):
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    bad = 0

    def rand(shape):
        return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)

    def same(a, b):
        return np.asarray(a, np.float32).tobytes() == np.asarray(b, np.float32).tobytes()

    for n in list(range(1, 41)) + [63, 64, 65, 100, 127, 257, 1000, 4097]:
        fails = 0
        for _ in range(trials):
            x = rand(n)
            fails += not same(torch.from_numpy(x).norm(2).numpy(), np.sqrt(norm2_sq_lastdim(x)))
            y = np.abs(x)
            fails += not same(torch.from_numpy(y).sum().numpy(), sum_contiguous(y))
        print(f"n={n}: norm(2) and sum(): {fails} mismatches")
        bad += fails
    for shape in [(7, 9), (3, 5, 3), (6, 1), (5, 7), (40, 33)]:
        fails = 0
        for _ in range(trials):
            g = rand(shape)
            t = torch.from_numpy(g)
            got = torch.norm(t, dim=-1, keepdim=True).numpy().reshape(-1)
            want = [np.sqrt(norm2_sq_lastdim(r)) for r in g.reshape(-1, shape[-1])]
            fails += not same(got, want)
            got = torch.norm(t, dim=-2, keepdim=True).numpy().reshape(-1)
            cols = np.moveaxis(g, -2, -1).reshape(-1, shape[-2])
            f = norm2_sq_lastdim if shape[-1] == 1 else norm2_sq_strided
            fails += not same(got, [np.sqrt(f(c)) for c in cols])
            rv = np.abs(g[..., :1])  # a row_var-like (..., R, 1) tensor
            got = torch.from_numpy(rv).mean(dim=-2, keepdim=True).numpy().reshape(-1)
            want = [mean_contiguous(c) for c in np.moveaxis(rv, -2, -1).reshape(-1, shape[-2])]
            fails += not same(got, want)
        print(f"shape {shape}: norm dim=-1, dim=-2, row mean: {fails} mismatches")
        bad += fails
    return bad


if __name__ == "__main__":
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        print(f"note: these models were derived on AVX2; this CPU is "
              f"{torch.backends.cpu.get_cpu_capability()}")
    sys.exit(1 if check(trials=int(sys.argv[1]) if len(sys.argv) > 1 else 100) else 0)
