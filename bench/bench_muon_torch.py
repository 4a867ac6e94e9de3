#!/usr/bin/env python3
"""bench_muon_torch.py - torch.optim.Muon's step on bench_muon's tensors,
and the two side by side, each in its own process.

  python3 bench/bench_muon_torch.py [--dim 768] [--blocks 1]
      [--ns bfloat16|float32] [--steps 3] [--threads 1] [--ns-steps 5]
      [--jopt build/bench_muon [--rounds 1]]

torch 2.13 runs Muon's Newton-Schulz in bfloat16 (`--ns bfloat16`, its
only behaviour).  `--ns float32` patches it as the float32 fixtures were
recorded (tests/fixtures/spec2/README.md, ".ns-f32"): the one expression
`grad.bfloat16()` of `_zeropower_via_newtonschulz` reads
`grad.to(torch.float32, copy=True)`, so the products are MKL's sgemm.
The tensors are bench_muon's (GPT-2's Conv1D weights per block: dim x 3dim,
dim x dim, dim x 4dim, 4dim x dim) with seeded values; each step is timed
alone after one untimed step, on `--threads` threads
(torch.set_num_threads), and the median printed.  With --jopt, torch's
run and bench_muon's (same arguments) take turns, each in its own process
(torch's OpenMP workers would otherwise share the cores with jopt's pool),
--rounds times, so that both see the same moments of a shared machine; the
median of each and their ratio are printed.
"""
import argparse
import inspect
import re
import statistics
import subprocess
import sys
import time

import torch


def patch_float32():
    """The recorder's ns-f32 twin: grad.bfloat16() -> a float32 copy."""
    import torch.optim._muon as m
    src = inspect.getsource(m._zeropower_via_newtonschulz)
    assert src.count("grad.bfloat16()") == 1 and src.count("bfloat16") == 1, \
        "torch's _zeropower_via_newtonschulz changed: cannot patch it"
    src = src.replace("grad.bfloat16()", "grad.to(torch.float32, copy=True)")
    exec(compile(src, m.__file__, "exec"), m.__dict__)


def torch_run(a):
    torch.set_num_threads(a.threads)
    if a.ns == "float32":
        patch_float32()
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(a.blocks):
        for rows, cols in ((1, 3), (1, 1), (1, 4), (4, 1)):
            p = torch.nn.Parameter(0.02 * torch.randn(rows * a.dim, cols * a.dim,
                                                      generator=gen))
            p.grad = torch.randn(p.shape, generator=gen)
            params.append(p)
    opt = torch.optim.Muon(params, ns_steps=a.ns_steps)
    t0 = time.perf_counter()
    opt.step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n = sum(p.numel() for p in params)
    print("torch %s Muon: dim %d, %d blocks (%d matrices, %.1fM elements), NS in %s, "
          "ns_steps=%d, %d thread%s" % (torch.__version__, a.dim, a.blocks, len(params),
                                         n / 1e6, a.ns, a.ns_steps, a.threads,
                                         "" if a.threads == 1 else "s"))
    print("  first step %.3f s; step median %.4f s (min %.4f, max %.4f, %d steps)"
          % (first, med, min(times), max(times), a.steps))
    print("RESULT torch %s %d %d %d %.6f" % (a.ns, a.dim, a.blocks, a.threads, med))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--ns", choices=("bfloat16", "float32"), default="bfloat16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ns-steps", type=int, default=5)
    ap.add_argument("--jopt", help="bench_muon to take turns with")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    if not a.jopt:
        torch_run(a)
        return
    common = ["--dim", str(a.dim), "--blocks", str(a.blocks), "--ns", a.ns, "--steps",
              str(a.steps), "--threads", str(a.threads), "--ns-steps", str(a.ns_steps)]
    t_s, j_s, outside = [], [], []
    for r in range(a.rounds):
        for cmd in ([sys.executable, __file__] + common, [a.jopt] + common):
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            print(out, end="")
            sys.stdout.flush()
            m = re.search(r"^RESULT (torch|jopt) \S+ \d+ \d+ \d+ (\S+)(?: (\S+))?$", out, re.M)
            (t_s if m.group(1) == "torch" else j_s).append(float(m.group(2)))
            if m.group(3):
                outside.append(float(m.group(3)))
    tm, jm = statistics.median(t_s), statistics.median(j_s)
    print("jopt / torch (%s Newton-Schulz, %d round%s): %.2fx faster (%.4f s against "
          "%.4f s, medians); jopt outside the GEMMs: %.1f %%"
          % (a.ns, a.rounds, "" if a.rounds == 1 else "s", tm / jm, jm, tm,
             100 * statistics.median(outside)))


if __name__ == "__main__":
    main()
