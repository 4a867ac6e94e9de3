#!/usr/bin/env python3
"""bench_torch.py - PyTorch's optimizer step on bench_optim's sizes and shapes,
on every path torch has, and the merge of both CSVs into one table and chart.

  python3 bench/bench_torch.py [--quick] [--threads 1,2] [--sizes 4K,..]
                               [--compile-sizes 4K,1M,16M] [--no-compile]
                               [--no-model] [--out bench_torch.csv]
  python3 bench/bench_torch.py --compile-time [--out bench_torch_compile.csv]
  python3 bench/bench_torch.py --merge bench_optim.csv bench_torch.csv
                               [bench_torch_compile.csv]
                               [--md merged.md] [--svg merged.svg]

Paths: the for-loop (foreach=False), foreach=True, fused=True (SGD, Adam,
AdamW, Adagrad on CPU) and torch.compile of the whole step() (timed after
its first call, whose time is the compile time).  Lion is not in
torch.optim: it is written here twice, as lion-pytorch writes it (a loop of
tensor ops) and with torch._foreach_* ops, and compiled from the loop.
Times are medians over rounds of one sample of each path (a sample is as
many steps as take 2 ms), as bench_optim does, on 1 and 2 threads
(torch.set_num_threads).  jopt's step() runs in the same rounds, through
ctypes on libjopt.so over the same tensors (impl "jopt-jit"; --jopt-lib,
default build-bench/libjopt.so), so jopt-against-torch ratios see the same
moments of a noisy machine.  The CSV has bench_optim's columns.
"""
import argparse
import csv
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# bench_optim's default optimizers, torch's matching constructor arguments,
# and the bytes per element one step reads and writes (bench_optim derives
# the pattern from the traced graph: Adam reads p, g, m, v, writes p, m, v)
OPTIMIZERS = {
    "sgd:momentum=0.9": ("SGD", dict(lr=1e-3, momentum=0.9), 20, True),
    "adam": ("Adam", dict(lr=1e-3), 28, True),
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), 28, True),
    "rmsprop": ("RMSprop", dict(lr=1e-2), 20, False),
    "adagrad": ("Adagrad", dict(lr=1e-2), 20, True),
    "lion": ("Lion", dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0), 20, False),
}
FIELDS = ["optimizer", "case", "numel", "ntensors", "threads", "impl", "reps",
          "inner", "median_s", "min_s", "max_s", "bytes_per_step", "gbps",
          "elems_per_s", "roof_s", "roof_share", "note"]


def count(text):
    text = text.strip()
    mult = {"K": 1024, "k": 1024, "M": 1 << 20, "m": 1 << 20}.get(text[-1:], 1)
    return int(float(text.rstrip("KkMm")) * mult)


def resnet50_sizes():
    """The 161 tensor sizes bench/resnet50.h lists (torchvision's resnet50)."""
    with open(os.path.join(HERE, "resnet50.h")) as f:
        sizes = [int(m) for m in re.findall(r'\{"[^"]+", "[^"]+", (\d+)\}', f.read())]
    assert len(sizes) == 161 and sum(sizes) == 25557032, "resnet50.h changed"
    return sizes


# ---- jopt through ctypes ------------------------------------------------------


class Jopt:
    """The few calls of jopt.h the comparison needs."""

    def __init__(self, path):
        import ctypes as C

        class Param(C.Structure):
            _fields_ = [("param", C.c_void_p), ("grad", C.c_void_p), ("numel", C.c_int64)]

        class Group(C.Structure):
            _fields_ = [("params", C.POINTER(Param)), ("nparams", C.c_size_t),
                        ("options", C.c_char_p)]

        self.C, self.Param, self.Group = C, Param, Group
        lib = self.lib = C.CDLL(path)
        lib.jopt_ctx_new.argtypes = [C.POINTER(C.c_void_p)]
        lib.jopt_ctx_set_threads.argtypes = [C.c_void_p, C.c_int]
        lib.jopt_ctx_free.argtypes = [C.c_void_p]
        lib.jopt_errmsg.argtypes = [C.c_void_p]
        lib.jopt_errmsg.restype = C.c_char_p
        lib.jopt_optim_new.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(Group), C.c_size_t,
                                       C.c_char_p, C.POINTER(C.c_void_p)]
        lib.jopt_optim_free.argtypes = [C.c_void_p]
        lib.jopt_step.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p]
        self.ctx = {}

    def context(self, threads):
        if threads not in self.ctx:
            ctx = self.C.c_void_p()
            assert self.lib.jopt_ctx_new(self.C.byref(ctx)) == 0
            self.lib.jopt_ctx_set_threads(ctx, threads)
            self.ctx[threads] = ctx
        return self.ctx[threads]

    def optimizer(self, label, params, threads):
        """jopt over the torch tensors' buffers (borrowed); returns step()."""
        spec, _, options = label.partition(":")
        ctx = self.context(threads)
        arr = (self.Param * len(params))(*[self.Param(p.data_ptr(), p.grad.data_ptr(),
                                                      p.numel()) for p in params])
        group = self.Group(arr, len(params), None)
        opt = self.C.c_void_p()
        rc = self.lib.jopt_optim_new(ctx, spec.encode(), self.C.byref(group), 1,
                                     options.encode() or None, self.C.byref(opt))
        if rc:
            raise RuntimeError(self.lib.jopt_errmsg(ctx).decode())
        step, lib = self.lib.jopt_step, self.lib

        class Handle:
            def __call__(self):
                step(opt, None, None, None)

            def __del__(self):
                lib.jopt_optim_free(opt)

        return Handle()


def load_jopt(path):
    path = path or os.path.join(HERE, "..", "build-bench", "libjopt.so")
    if not os.path.exists(path):
        print(f"(no {path}: jopt is not timed alongside torch)")
        return None
    return Jopt(path)


# ---- running torch ----------------------------------------------------------


def make_lion(torch):
    class Lion(torch.optim.Optimizer):
        """Lion (Chen et al., 2023) as lion-pytorch writes it; foreach=True
        uses torch._foreach_* ops, one kernel launch per op over all tensors."""

        def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
                     foreach=False):
            super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
            self.foreach = foreach

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                lr, wd = group["lr"], group["weight_decay"]
                beta1, beta2 = group["betas"]
                params = [p for p in group["params"] if p.grad is not None]
                grads = [p.grad for p in params]
                avgs = []
                for p in params:
                    state = self.state[p]
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(p)
                    avgs.append(state["exp_avg"])
                if self.foreach:
                    if wd:
                        torch._foreach_mul_(params, 1 - lr * wd)
                    c = torch._foreach_lerp(avgs, grads, 1 - beta1)
                    torch._foreach_sign_(c)
                    torch._foreach_add_(params, c, alpha=-lr)
                    torch._foreach_lerp_(avgs, grads, 1 - beta2)
                else:
                    for p, g, m in zip(params, grads, avgs):
                        if wd:
                            p.mul_(1 - lr * wd)
                        c = m.lerp(g, 1 - beta1).sign_()
                        p.add_(c, alpha=-lr)
                        m.lerp_(g, 1 - beta2)

    return Lion


def paths_for(torch, name, compile_ok):
    cls_name, kw, _, fusable = OPTIMIZERS[name]
    cls = make_lion(torch) if cls_name == "Lion" else getattr(torch.optim, cls_name)
    paths = [("torch-forloop", dict(foreach=False)), ("torch-foreach", dict(foreach=True))]
    if fusable:
        paths.append(("torch-fused", dict(fused=True)))
    if compile_ok:
        paths.append(("torch-compile", dict(foreach=False)))
    return cls, kw, paths


def measure(steps, budget, min_rounds):
    """steps: [(impl, fn)], each already warm.  Rounds of one sample each."""
    est = {}
    for impl, fn in steps:
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            t = time.perf_counter() - t0
            if t > 0.01 or n >= 10000:
                break
        est[impl] = t / n
    inner = {impl: max(1, math.ceil(2e-3 / est[impl])) for impl, _ in steps}
    per_round = sum(inner[i] * est[i] for i, _ in steps)
    rounds = max(min_rounds, min(101, int(budget / per_round)))
    samples = {impl: [] for impl, _ in steps}
    for _ in range(rounds):
        for impl, fn in steps:
            k = inner[impl]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[impl].append((time.perf_counter() - t0) / k)
    return samples, inner, rounds


def run_case(torch, name, casename, sizes, threads, budget, do_compile, rows, log,
             jopt=None):
    cls, kw, paths = paths_for(torch, name, do_compile)
    bytes_per = OPTIMIZERS[name][2]
    gen = torch.Generator().manual_seed(1)
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.rand(n, generator=gen) * 2 - 1)
        p.grad = torch.rand(n, generator=gen) * 2 - 1
        params.append(p)
    total = sum(sizes)
    steps, notes = [], {}
    for impl, extra in paths:
        try:
            opt = cls(params, **kw, **extra)
        except (RuntimeError, TypeError, ValueError) as e:
            log(f"    {impl}: not available: {e}")
            continue
        if impl == "torch-compile":
            torch._dynamo.reset()

            @torch.compile(fullgraph=False)
            def compiled(opt=opt):
                opt.step()

            t0 = time.perf_counter()
            try:
                compiled()
            except Exception as e:  # noqa: BLE001 - record why and go on
                log(f"    torch.compile failed: {type(e).__name__}: {e}")
                continue
            first = time.perf_counter() - t0
            fn = compiled
            rows.append(row(name, casename, total, len(sizes), threads,
                            "torch-compile-time", 1, 1, [first], 0,
                            "first call of the compiled step (compile + one step)"))
            notes[impl] = f"first call {first:.2f} s"
        else:
            fn = opt.step
        for _ in range(3):
            fn()
        steps.append((impl, fn))
    handle = None
    if jopt:
        handle = jopt.optimizer(name, params, threads)
        for _ in range(3):
            handle()
        steps.append(("jopt-jit", handle))
    min_rounds = 7 if total >= (32 << 20) else 9
    samples, inner, rounds = measure(steps, budget, min_rounds)
    del steps, handle
    for impl in samples:
        rows.append(row(name, casename, total, len(sizes), threads, impl, rounds,
                        inner[impl], samples[impl], bytes_per * total, notes.get(impl, "")))
    msg = ", ".join(f"{i.split('-', 1)[1]} {statistics.median(samples[i]) * 1e3:.3f} ms"
                    for i in samples)
    log(f"  {name:18s} {casename:15s} {threads} thr: {msg}")


def row(name, casename, numel, ntensors, threads, impl, reps, inner, samples,
        nbytes, note=""):
    med = statistics.median(samples)
    return dict(optimizer=name, case=casename, numel=numel, ntensors=ntensors,
                threads=threads, impl=impl, reps=reps, inner=inner,
                median_s=f"{med:.9g}", min_s=f"{min(samples):.9g}",
                max_s=f"{max(samples):.9g}", bytes_per_step=f"{nbytes:.0f}",
                gbps=f"{nbytes / med * 1e-9:.4g}" if nbytes else "0",
                elems_per_s=f"{numel / med:.4g}", roof_s="0", roof_share="0", note=note)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def run_all(args):
    import torch

    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
        f"{os.cpu_count()} cores; load average {open('/proc/loadavg').read().strip()}")
    sizes = [count(s) for s in args.sizes.split(",")]
    compile_sizes = set(count(s) for s in args.compile_sizes.split(",")) if args.compile_sizes else set()
    names = args.optimizers.split(",") if args.optimizers else list(OPTIMIZERS)
    rows, t_start = [], time.perf_counter()
    jopt = load_jopt(args.jopt_lib)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        log(f"\n{threads} thread(s): torch.get_num_threads() = {torch.get_num_threads()}")
        for name in names:
            cases = [(f"n={n}", [n]) for n in sizes]
            if not args.no_model:
                r50 = resnet50_sizes()
                cases += [("resnet50", r50), ("resnet50-flat", [sum(r50)])]
            for casename, shape in cases:
                do_compile = not args.no_compile and (
                    sum(shape) in compile_sizes or (casename.startswith("resnet50")
                                                    and args.compile_model))
                run_case(torch, name, casename, shape, threads, args.budget,
                         do_compile, rows, log, jopt)
                write_csv(args.out, rows)  # as it goes: a long run keeps what it did
    log(f"\nload average at the end: {open('/proc/loadavg').read().strip()}")
    log(f"wrote {args.out} ({time.perf_counter() - t_start:.0f} s)")


COMPILE_CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import torch
sys.path.insert(0, sys.argv[3])
import bench_torch as bt
t_import = time.perf_counter() - t0
torch.set_num_threads(1)
name, n = sys.argv[1], int(sys.argv[2])
cls, kw, _ = bt.paths_for(torch, name, True)
p = torch.nn.Parameter(torch.rand(n)); p.grad = torch.rand(n)
opt = cls([p], **kw, foreach=False)
@torch.compile(fullgraph=False)
def step():
    opt.step()
t0 = time.perf_counter(); step(); first = time.perf_counter() - t0
t0 = time.perf_counter(); step(); second = time.perf_counter() - t0
print(json.dumps(dict(first=first, second=second, import_s=t_import)))
"""


def compile_time(args):
    """Cold torch.compile of each optimizer's step (1M elements, 1 thread):
    a fresh process with an empty inductor cache, then a second process
    with that cache warm.  The first call's time less a step's is the
    compile time."""
    rows = []
    names = args.optimizers.split(",") if args.optimizers else list(OPTIMIZERS)
    import json
    for name in names:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
            got = []
            for _ in range(2):
                out = subprocess.run([sys.executable, "-c", COMPILE_CHILD, name,
                                      str(1 << 20), HERE], env=env,
                                     capture_output=True, text=True)
                if out.returncode:
                    print(f"{name}: torch.compile failed:\n{out.stderr[-2000:]}")
                    break
                got.append(json.loads(out.stdout.strip().splitlines()[-1]))
            for what, g in zip(("torch-compile-cold", "torch-compile-warm-cache"), got):
                c = g["first"] - g["second"]
                rows.append(row(name, "construct", 1 << 20, 1, 1, what, 1, 1, [c], 0,
                                "first call less one step; fresh process"
                                + (", empty inductor cache" if what.endswith("cold")
                                   else ", inductor cache from the cold run")))
                print(f"  {name:18s} {what:26s} {c:7.2f} s  (torch import {g['import_s']:.1f} s)",
                      flush=True)
    write_csv(args.out, rows)
    print(f"wrote {args.out}")


# ---- merge --------------------------------------------------------------------


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge(args):
    rows = []
    for p in args.merge:
        rows += read_csv(p)
    jopt = [r for r in rows if not r["impl"].startswith("torch") and r["impl"] != "jopt-jit"]
    torch_rows = [r for r in rows if r["impl"].startswith("torch") or r["impl"] == "jopt-jit"]
    key = lambda r: (r["optimizer"], r["case"], r["threads"])  # noqa: E731
    by = {}
    for r in rows:
        by.setdefault(key(r), {})[r["impl"]] = r
    # the roof and the pattern bytes come from bench_optim's memory-only rows
    for r in torch_rows:
        j = by.get(key(r), {}).get("jit")
        if j and float(j["roof_s"]) > 0 and r["impl"] != "torch-compile-time":
            r["roof_s"] = j["roof_s"]
            r["roof_share"] = f"{float(j['roof_s']) / float(r['median_s']):.4g}"
    out = []
    p = out.append
    opts = []
    for r in jopt:
        if r["impl"] == "jit" and r["optimizer"] not in opts:
            opts.append(r["optimizer"])

    def fmt(r):
        if not r:
            return "-"
        t = float(r["median_s"])
        s = (f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms" if t < 0.1
             else f"{t * 1e3:.0f} ms")
        if float(r.get("roof_s") or 0) > 0:
            s += f" ({100 * float(r['roof_s']) / t:.0f}%)"
        return s

    targets = []
    for o in opts:
        p(f"\n### {o}\n")
        p("time per step (share of bench_optim's memory-only roof); ratios are torch's time "
          "over jopt's: on 1 thread jopt's from the torch run (same rounds), on 2 threads "
          "bench_optim's (in torch's process, its spinning OpenMP workers slow jopt's pool)\n")
        p("| case | thr | roof GB/s | jopt JIT | jopt JIT in the torch run | torch for-loop "
          "| torch foreach | torch fused | torch.compile | fused / jopt | best torch / jopt |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        cases = []
        for r in jopt:
            if r["optimizer"] == o and r["impl"] == "jit" and r["case"] not in cases:
                cases.append(r["case"])
        worst_fused = {}
        worst_best = {}
        model = {}
        for c in cases:
            for t in ("1", "2"):
                d = by.get((o, c, t), {})
                j = d.get("jit")
                if not j:
                    continue
                # 1 thread: the ratios come from the torch run, where jopt and
                # torch shared the rounds; 2 threads: from bench_optim, because
                # in torch's process its OpenMP workers spin after each
                # parallel region and take the core jopt's pool thread needs
                jt = d.get("jopt-jit")
                tj = float((jt if jt and t == "1" else j)["median_s"])
                roof = float(j["roof_s"])
                roof_gbps = float(j["bytes_per_step"]) / roof * 1e-9 if roof > 0 else 0
                tp = [d.get(i) for i in ("torch-forloop", "torch-foreach", "torch-fused",
                                         "torch-compile")]
                best = min((x for x in tp if x), key=lambda x: float(x["median_s"]),
                           default=None)
                vf = float(d["torch-fused"]["median_s"]) / tj if d.get("torch-fused") else None
                vb = float(best["median_s"]) / tj if best else None
                sf = f"{vf:.2f}x" if vf else "-"
                sb = f"{vb:.2f}x ({best['impl'][6:]})" if vb else "-"
                p(f"| {c} | {t} | {roof_gbps:.1f} | {fmt(j)} | {fmt(jt)} | "
                  + " | ".join(fmt(x) for x in tp) + f" | {sf} | {sb} |")
                if vf is not None:
                    worst_fused[t] = min(worst_fused.get(t, (1e9, c)), (vf, c))
                if vb is not None:
                    worst_best[t] = min(worst_best.get(t, (1e9, c)), (vb, c))
                if c == "resnet50":
                    model[t] = (vf, vb)
        name = o.split(":")[0]
        for t in ("1", "2"):
            if name in ("sgd", "adam", "adamw", "adagrad") and t in worst_fused:
                v, c = worst_fused[t]
                targets.append(f"{o}, {t} thr: at least even with torch fused=True at every "
                               f"size: least {v:.2f}x (at {c}) "
                               f"{'MET' if v >= 1 else 'MISSED'}")
                if t in model and model[t][0]:
                    v = model[t][0]
                    targets.append(f"{o}, {t} thr: >= 1.5x torch fused=True on ResNet-50's "
                                   f"161 tensors: {v:.2f}x {'MET' if v >= 1.5 else 'MISSED'}")
            elif t in worst_best:
                v, c = worst_best[t]
                targets.append(f"{o}, {t} thr: >= 3x torch's best path (no fused one): "
                               f"least {v:.2f}x (at {c}) {'MET' if v >= 3 else 'MISSED'}")
    # construction
    cons = [r for r in rows if r["case"] == "construct"]
    if cons:
        p("\n### Construction\n")
        p("| optimizer | jopt cold compile (per kernel) | jopt cache hit | "
          "torch.compile cold | torch.compile, warm inductor cache |")
        p("|---|---|---|---|---|")
        for o in opts:
            d = {r["impl"]: r for r in cons if r["optimizer"] == o}

            def ms_(i, unit="ms"):
                r = d.get(i)
                if not r:
                    return "-"
                v = float(r["median_s"])
                return f"{v * 1e3:.2f} ms" if unit == "ms" else f"{v:.1f} s"
            p(f"| {o} | {ms_('compile-cold')} ({ms_('compile-per-kernel')}) | "
              f"{ms_('cache-hit')} | {ms_('torch-compile-cold', 's')} | "
              f"{ms_('torch-compile-warm-cache', 's')} |")
        tct = [r for r in rows if r["impl"] == "torch-compile-time"
               and r["case"] in ("n=1048576", "resnet50")]
        if tct:
            p("\ntorch.compile first-call times in the timed run (compile + one step; "
              "the inductor cache may be warm): " + ", ".join(
                  f"{r['optimizer']} {r['case']} {r['threads']}t {float(r['median_s']):.1f} s"
                  for r in tct))
    p("\n### Targets against PyTorch (reported, not asserted)\n")
    for t in targets:
        p(f"- {t}")
    text = "\n".join(out) + "\n"
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
        print(f"wrote {args.md}")
    if args.merged_csv:
        write_csv(args.merged_csv, rows)
        print(f"wrote {args.merged_csv}")
    if args.svg:
        write_svg(args.svg, rows, opts)
        print(f"wrote {args.svg}")


SERIES = [
    ("membw", "2", "#000000", "6,4", "memory-only, 2 threads"),
    ("jit", "1", "#4a90d9", "", "jopt JIT, 1 thread"),
    ("jit", "2", "#0b3d91", "", "jopt JIT, 2 threads"),
    ("unfused", "1", "#ff7f0e", "", "unfused, 1 thread"),
    ("torch-fused", "2", "#9467bd", "", "torch fused=True, 2 threads"),
    ("torch-foreach", "2", "#8c564b", "", "torch foreach, 2 threads"),
    ("torch-compile", "2", "#e377c2", "", "torch.compile, 2 threads"),
    ("torch-forloop", "2", "#bcbd22", "", "torch for-loop, 2 threads"),
]


def write_svg(path, rows, opts):
    """jopt and torch against size, one panel per optimizer; GB/s counts the
    optimizer's own pattern bytes; markers: ResNet-50 (triangle) and one
    tensor of the same size (square)."""
    pw, ph, ml, mt, mb, mr, cols, top = 420, 280, 55, 30, 40, 15, 2, 70
    nrow = (len(opts) + cols - 1) // cols
    W, H = cols * (pw + ml + mr) + 20, top + nrow * (ph + mt + mb) + 40
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'font-family="sans-serif" font-size="11">',
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="10" y="20" font-size="14" font-weight="bold">jopt and PyTorch: '
         'optimizer step throughput against size</text>']
    for k, (_, _, color, dash, label) in enumerate(SERIES):
        lx, ly = 10 + (k % 4) * 230, 38 + (k // 4) * 16
        s.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" '
                 f'stroke-width="2" stroke-dasharray="{dash}"/>'
                 f'<text x="{lx + 30}" y="{ly + 4}">{label}</text>')
    x0, x1 = 12, 26
    for k, o in enumerate(opts):
        ox = 10 + (k % cols) * (pw + ml + mr) + ml
        oy = top + (k // cols) * (ph + mt + mb) + mt
        mine = [r for r in rows if r["optimizer"] == o and r["case"] != "construct"
                and float(r["median_s"]) > 0 and float(r["bytes_per_step"]) > 0]
        gb = lambda r: float(r["bytes_per_step"]) / float(r["median_s"]) * 1e-9  # noqa: E731
        ymax = max([gb(r) for r in mine] + [1])
        step = 50 if ymax > 200 else 20 if ymax > 100 else 10 if ymax > 40 else 5 if ymax > 20 else 2
        ymax = math.ceil(ymax * 1.05 / step) * step
        s.append(f'<text x="{ox}" y="{oy - 8}" font-size="12" font-weight="bold">{o}</text>')
        s.append(f'<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        y = 0
        while y <= ymax:
            py = oy + ph - y / ymax * ph
            s.append(f'<line x1="{ox}" y1="{py:.1f}" x2="{ox + pw}" y2="{py:.1f}" stroke="#ddd"/>'
                     f'<text x="{ox - 4}" y="{py + 4:.1f}" text-anchor="end">{y:g}</text>')
            y += step
        for e, lab in zip(range(12, 27, 2), ["4K", "16K", "64K", "256K", "1M", "4M", "16M", "64M"]):
            px = ox + (e - x0) / (x1 - x0) * pw
            s.append(f'<text x="{px:.1f}" y="{oy + ph + 14}" text-anchor="middle">{lab}</text>')
        s.append(f'<text x="{ox + pw // 2}" y="{oy + ph + 30}" text-anchor="middle">elements '
                 '(triangles: ResNet-50, 161 tensors; squares: one tensor of its size)</text>')
        s.append(f'<text transform="translate({ox - 40},{oy + ph // 2}) rotate(-90)" '
                 'text-anchor="middle">GB/s (pattern bytes)</text>')
        for impl, thr, color, dash, _ in SERIES:
            pts = []
            for r in mine:
                if r["impl"] != impl or r["threads"] != thr:
                    continue
                lx = math.log2(float(r["numel"]))
                if not x0 - 0.01 <= lx <= x1 + 0.01:
                    continue
                px = ox + (lx - x0) / (x1 - x0) * pw
                py = oy + ph - gb(r) / ymax * ph
                if r["case"] == "resnet50":
                    s.append(f'<path d="M{px:.1f},{py - 5:.1f} l5,8 l-10,0 z" fill="{color}"/>')
                elif r["case"].startswith("resnet50"):
                    s.append(f'<rect x="{px - 3.5:.1f}" y="{py - 3.5:.1f}" width="7" height="7" '
                             f'fill="none" stroke="{color}"/>')
                else:
                    pts.append((lx, f"{px:.1f},{py:.1f}"))
            if pts:
                pts.sort()
                s.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                         f'stroke-dasharray="{dash}" points="{" ".join(p for _, p in pts)}"/>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4K,16K,64K,256K,1M,4M,16M,64M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--optimizers", default="", help="comma list (default: all six)")
    ap.add_argument("--budget", type=float, default=1.5, help="seconds per case")
    ap.add_argument("--compile-sizes", default="4K,1M,16M",
                    help="sizes at which torch.compile is run ('' for none)")
    ap.add_argument("--compile-model", type=int, default=1,
                    help="run torch.compile on the ResNet-50 cases too (slow first time)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--quick", action="store_true", help="4K,256K,4M; no compile")
    ap.add_argument("--compile-time", action="store_true",
                    help="cold and warm-cache torch.compile time per optimizer")
    ap.add_argument("--out", default=None)
    ap.add_argument("--jopt-lib", default=None, help="libjopt.so to time alongside torch")
    ap.add_argument("--merge", nargs="+", metavar="CSV",
                    help="merge bench_optim's and this script's CSVs")
    ap.add_argument("--md", default=None, help="merged table (markdown)")
    ap.add_argument("--svg", default=None, help="merged chart")
    ap.add_argument("--merged-csv", default=None)
    args = ap.parse_args()
    if args.merge:
        merge(args)
    elif args.compile_time:
        args.out = args.out or "bench_torch_compile.csv"
        compile_time(args)
    else:
        if args.quick:
            args.sizes, args.no_compile, args.no_model, args.budget = "4K,256K,4M", True, True, 0.3
        args.out = args.out or "bench_torch.csv"
        run_all(args)


if __name__ == "__main__":
    main()
