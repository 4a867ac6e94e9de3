#!/usr/bin/env python3
"""bench_adafactor.py - jopt's Adafactor against torch 2.13's on real
models' parameter lists: GPT-2 small's 148 tensors (124,439,808 elements)
and ResNet-50's 161 (25,557,032; bench/resnet50.h).

  python3 bench/bench_adafactor.py [--models gpt2,resnet50] [--threads 1,2]
                                   [--steps 7] [--impls jopt,forloop,foreach,compile]
                                   [--out bench_adafactor.csv]

Implementations: jopt.torch.Adafactor (its JIT kernels, the tensors' shapes
given, so matrices keep row and column statistics as torch's do);
torch.optim.Adafactor with foreach=False (its default, a loop over the
tensors) and foreach=True; and torch.compile of the for-loop step() (its
first call, the compile, is reported apart).  Every implementation runs in
its own process (one process per implementation, model and thread count):
torch's OpenMP threads and jopt's pool never share the cores, and one
cannot warm the caches for the other.  Each process makes the parameters
(seeded normals) and gradients, takes 2 warm-up steps, then times --steps
steps one by one; the median is reported.  The same gradients are used at
every step, so every implementation does the same work.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def gpt2_small():
    """GPT-2 small's parameters in model.parameters() order (Hugging Face's
    GPT2Model: Conv1D weights are (in, out)); the LM head is tied to wte."""
    d, ff, v, ctx = 768, 3072, 50257, 1024
    shapes = [(v, d), (ctx, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,),
                   (d, ff), (ff,), (ff, d), (d,)]
    shapes += [(d,), (d,)]
    assert len(shapes) == 148
    return shapes


def resnet50():
    import re
    with open(os.path.join(HERE, "resnet50.h")) as f:
        text = f.read()
    shapes = []
    for m in re.finditer(r'\{"[^"]+", "\(([0-9,]+)\)", (\d+)\}', text):
        dims = tuple(int(x) for x in m.group(1).split(",") if x)
        shapes.append(dims)
    assert len(shapes) == 161, "resnet50.h changed"
    return shapes


MODELS = {"gpt2": gpt2_small, "resnet50": resnet50}


def worker(args):
    import torch
    torch.set_num_threads(args.threads)
    shapes = MODELS[args.model]()
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen))
        p.grad = torch.randn(s, generator=gen) * 1e-2
        params.append(p)
    out = {"impl": args.worker, "model": args.model, "threads": args.threads,
           "ntensors": len(shapes), "numel": sum(p.numel() for p in params)}
    if args.worker == "jopt":
        sys.path.insert(0, os.path.join(ROOT, "python"))
        os.environ.setdefault("JOPT_SPEC_PATH", os.path.join(ROOT, "specs"))
        import jopt
        import jopt.torch
        ctx = jopt.Context(threads=args.threads)
        opt = jopt.torch.Adafactor(params, jopt_context=ctx)
        step = opt.step
    else:
        opt = torch.optim.Adafactor(params, foreach=args.worker == "foreach")
        step = opt.step
        if args.worker == "compile":
            @torch.compile(fullgraph=False)
            def compiled():
                opt.step()
            t0 = time.perf_counter()
            compiled()
            out["compile_s"] = time.perf_counter() - t0
            step = compiled
    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out.update(median_s=statistics.median(times), min_s=min(times), max_s=max(times),
               steps=args.steps)
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gpt2,resnet50")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--impls", default="jopt,forloop,foreach,compile")
    ap.add_argument("--out", default="bench_adafactor.csv")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--worker")
    ap.add_argument("--model")
    ap.add_argument("--threads-one", dest="one", type=int)
    args = ap.parse_args()
    if args.worker:
        args.threads = args.one
        return worker(args)
    rows = []
    for model in args.models.split(","):
        for threads in [int(t) for t in args.threads.split(",")]:
            for impl in args.impls.split(","):
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl,
                       "--model", model, "--threads-one", str(threads),
                       "--steps", str(args.steps)]
                t0 = time.time()
                try:
                    run = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=args.timeout)
                    line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
                    if run.returncode or not line:
                        print(f"{model} {threads} thr {impl}: FAILED\n{run.stderr[-1500:]}",
                              flush=True)
                        continue
                except subprocess.TimeoutExpired:
                    print(f"{model} {threads} thr {impl}: timed out", flush=True)
                    continue
                r = json.loads(line[0][7:])
                rows.append(r)
                extra = f", compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
                print(f"{model:8} {threads} thr {impl:8} {r['median_s'] * 1e3:9.1f} ms/step "
                      f"(min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f}{extra}; "
                      f"process {time.time() - t0:.0f} s)", flush=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "ntensors", "numel", "threads", "impl",
                                          "steps", "median_s", "min_s", "max_s",
                                          "compile_s"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in w.fieldnames})
    print(f"\nwrote {args.out}\n\nTargets: jopt >= 3x torch's fastest eager path, "
          f">= torch.compile's step")
    for model in args.models.split(","):
        for threads in [int(t) for t in args.threads.split(",")]:
            got = {r["impl"]: r["median_s"] for r in rows
                   if r["model"] == model and r["threads"] == threads}
            if "jopt" not in got:
                continue
            j = got["jopt"]
            eager = [got[k] for k in ("forloop", "foreach") if k in got]
            if eager:
                x = min(eager) / j
                print(f"  {model:8} {threads} thr: fastest eager / jopt = {x:.2f}x "
                      f"{'MET' if x >= 3 else 'MISSED'}")
            if "compile" in got:
                x = got["compile"] / j
                print(f"  {model:8} {threads} thr: torch.compile / jopt = {x:.2f}x "
                      f"{'MET' if x >= 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
