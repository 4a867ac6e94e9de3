#!/usr/bin/env python3
"""bench_gpu.py - optimizer steps on an NVIDIA GPU: jopt's kernels against
every CUDA path torch has, and the device's copy rate.

  python3 bench/bench_gpu.py [--lib build/libjopt.so] [--quick]
        [--optimizers adam,adamw,sgd,rmsprop,adadelta,lion,lamb]
        [--cases 64M,1G,1000x64K,resnet50,gpt2] [--compile adam:64M,...]
        [--deadline SECONDS] [--csv FILE]

Implementations: "jopt" (libjopt through ctypes on the tensors' device
pointers, one optimizer group, steps on torch's current stream; one launch
per level for all the group's tensors), "jopt.torch" (the drop-in class,
with its Python per step), torch's for-loop (foreach=False), foreach=True,
fused=True (Adam, AdamW, SGD: what torch fuses) and torch.compile of the
for-loop step (for the pairs --compile names: compiling takes tens of
seconds).  torch.optim has no Lion and no LAMB: they are written here with
torch ops, as a for-loop and with torch._foreach_* ops, in the order of
jopt's specs.

Times: CUDA events around `reps` steps enqueued back to back, after warm-up
steps; the median of `rounds` such runs.  The host's own time per step
shows only where it is longer than the GPU's (it is printed apart, as
host us/step, for jopt).  ps/elem is time per element; GB/s counts what the
optimizer must move, each array it reads or writes once per step (Adam:
p, g, m, v read, p, m, v written: 28 B/elem), as the copy rate counts a
copy's read and write; "% copy" is that against torch's copy_ of 1 GiB.
LAMB's kernels move 40 B/elem (two passes: the trust ratio needs the norms
of the whole tensor first); its GB/s counts 28, like torch's would.

Before timing, each optimizer's step is checked against torch's for-loop
from the same start (nine tensors, three steps): the largest difference is
printed, and its share of the largest update (jopt follows ATen's CPU order
of operations, torch's CUDA kernels contract a*b+c: a few ulp apart).

--deadline stops starting new measurements after that many seconds (the
rest are listed as skipped), so a fixed slot on a shared GPU is enough.
"""
import argparse
import csv
import ctypes as C
import math
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name: jopt spec and options, torch class and arguments, bytes/elem moved,
# torch fuses it, jopt.torch's class
OPTIMIZERS = {
    "adam": ("adam", "lr=1e-3", "Adam", dict(lr=1e-3), 28, True, "Adam"),
    "adamw": ("adamw", "lr=1e-3 weight_decay=1e-2", "AdamW", dict(lr=1e-3, weight_decay=1e-2),
              28, True, "AdamW"),
    "sgd": ("sgd", "lr=1e-3 momentum=0.9", "SGD", dict(lr=1e-3, momentum=0.9), 20, True, "SGD"),
    "rmsprop": ("rmsprop", "lr=1e-2", "RMSprop", dict(lr=1e-2), 20, False, "RMSprop"),
    "adadelta": ("adadelta", "lr=1.0", "Adadelta", dict(lr=1.0), 28, False, "Adadelta"),
    "lion": ("lion", "lr=1e-4 betas=0.9,0.99", "Lion", dict(lr=1e-4, betas=(0.9, 0.99)), 20,
             False, "Lion"),
    "lamb": ("lamb", "lr=1e-3 weight_decay=0.01", "LAMB", dict(lr=1e-3, weight_decay=0.01), 28,
             False, "LAMB"),
}


def resnet50_sizes():
    with open(os.path.join(HERE, "resnet50.h")) as f:
        sizes = [int(m) for m in re.findall(r'\{"[^"]+", "[^"]+", (\d+)\}', f.read())]
    assert len(sizes) == 161 and sum(sizes) == 25557032, "resnet50.h changed"
    return sizes


def gpt2_sizes():
    """GPT-2 small's parameters (Hugging Face's GPT2LMHeadModel, lm_head tied
    to wte), in model.parameters() order: 148 tensors, 124,439,808."""
    d, v, ctx, layers = 768, 50257, 1024, 12
    sizes = [v * d, ctx * d]
    for _ in range(layers):
        sizes += [d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]
    sizes += [d, d]
    assert len(sizes) == 148 and sum(sizes) == 124439808
    return sizes


CASES = {
    "64M": lambda: [64 << 20],
    "1G": lambda: [1 << 30],
    "1000x64K": lambda: [65536] * 1000,
    "resnet50": resnet50_sizes,
    "gpt2": gpt2_sizes,
}


# ---- torch's Lion and LAMB ---------------------------------------------------


def make_lion(torch):
    class Lion(torch.optim.Optimizer):
        """Lion (Chen et al., 2023) in jopt's order; foreach=True uses
        torch._foreach_* ops"""

        def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, foreach=False):
            super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
            self.foreach = foreach

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                lr, wd, (b1, b2) = group["lr"], group["weight_decay"], group["betas"]
                ps = [p for p in group["params"] if p.grad is not None]
                gs = [p.grad for p in ps]
                ms = [self.state[p].setdefault("exp_avg", torch.zeros_like(p)) for p in ps]
                if self.foreach:
                    if wd:
                        torch._foreach_mul_(ps, 1 - lr * wd)
                    c = torch._foreach_lerp(ms, gs, 1 - b1)
                    torch._foreach_sign_(c)
                    torch._foreach_add_(ps, c, alpha=-lr)
                    torch._foreach_lerp_(ms, gs, 1 - b2)
                else:
                    for p, g, m in zip(ps, gs, ms):
                        if wd:
                            p.mul_(1 - lr * wd)
                        p.add_(m.lerp(g, 1 - b1).sign_(), alpha=-lr)
                        m.lerp_(g, 1 - b2)

    return Lion


def make_lamb(torch):
    class LAMB(torch.optim.Optimizer):
        """LAMB as specs/lamb.lua: Adam's direction r, scaled per tensor by
        ||p|| / ||r||"""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                     foreach=False):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
            self.foreach = foreach
            self.t = 0

        @torch.no_grad()
        def step(self):
            self.t += 1
            for group in self.param_groups:
                lr, wd, eps, (b1, b2) = (group["lr"], group["weight_decay"], group["eps"],
                                         group["betas"])
                bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
                ps = [p for p in group["params"] if p.grad is not None]
                gs = [p.grad for p in ps]
                st = [self.state[p] for p in ps]
                ms = [s.setdefault("exp_avg", torch.zeros_like(p)) for s, p in zip(st, ps)]
                vs = [s.setdefault("exp_avg_sq", torch.zeros_like(p)) for s, p in zip(st, ps)]
                if self.foreach:
                    torch._foreach_lerp_(ms, gs, 1 - b1)
                    torch._foreach_mul_(vs, b2)
                    torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
                    den = torch._foreach_div(vs, bc2)
                    torch._foreach_sqrt_(den)
                    torch._foreach_add_(den, eps)
                    r = torch._foreach_div(ms, bc1)
                    torch._foreach_div_(r, den)
                    if wd:
                        torch._foreach_add_(r, ps, alpha=wd)
                    pn, rn = torch._foreach_norm(ps), torch._foreach_norm(r)
                    trust = [torch.where((a > 0) & (b > 0), a / b, torch.ones_like(a)) * -lr
                             for a, b in zip(pn, rn)]
                    torch._foreach_mul_(r, trust)
                    torch._foreach_add_(ps, r)
                else:
                    for p, g, m, v in zip(ps, gs, ms, vs):
                        m.lerp_(g, 1 - b1)
                        v.mul_(b2).addcmul_(g, g, value=1 - b2)
                        r = (m / bc1) / ((v / bc2).sqrt_().add_(eps))
                        if wd:
                            r.add_(p, alpha=wd)
                        pn, rn = p.norm(), r.norm()
                        trust = torch.where((pn > 0) & (rn > 0), pn / rn, torch.ones_like(pn))
                        p.add_(r * (trust * -lr))

    return LAMB


# ---- jopt through ctypes -----------------------------------------------------


class Jopt:
    """The calls of jopt.h this needs, on device pointers."""

    def __init__(self, path):
        class Param(C.Structure):
            _fields_ = [("param", C.c_void_p), ("grad", C.c_void_p), ("numel", C.c_int64)]

        class Group(C.Structure):
            _fields_ = [("params", C.POINTER(Param)), ("nparams", C.c_size_t),
                        ("options", C.c_char_p)]

        self.Param, self.Group = Param, Group
        lib = self.lib = C.CDLL(path)
        lib.jopt_ctx_new.argtypes = [C.POINTER(C.c_void_p)]
        lib.jopt_ctx_set_device.argtypes = [C.c_void_p, C.c_char_p]
        lib.jopt_ctx_free.argtypes = [C.c_void_p]
        lib.jopt_errmsg.argtypes = [C.c_void_p]
        lib.jopt_errmsg.restype = C.c_char_p
        lib.jopt_optim_new.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(Group), C.c_size_t,
                                       C.c_char_p, C.POINTER(C.c_void_p)]
        lib.jopt_optim_free.argtypes = [C.c_void_p]
        lib.jopt_step.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p]
        lib.jopt_set_stream.argtypes = [C.c_void_p, C.c_void_p]
        self.ctx = C.c_void_p()
        assert lib.jopt_ctx_new(C.byref(self.ctx)) == 0
        if lib.jopt_ctx_set_device(self.ctx, b"cuda:0"):
            raise RuntimeError(lib.jopt_errmsg(self.ctx).decode())

    def optimizer(self, spec, options, params, stream):
        arr = (self.Param * len(params))(*[self.Param(p.data_ptr(), p.grad.data_ptr(),
                                                      p.numel()) for p in params])
        group = self.Group(arr, len(params), None)
        opt = C.c_void_p()
        if self.lib.jopt_optim_new(self.ctx, spec.encode(), C.byref(group), 1,
                                   options.encode(), C.byref(opt)):
            raise RuntimeError(self.lib.jopt_errmsg(self.ctx).decode())
        self.lib.jopt_set_stream(opt, stream)
        lib, ctx = self.lib, self.ctx

        class Handle:
            def __call__(self):
                if lib.jopt_step(opt, None, None, None):
                    raise RuntimeError(lib.jopt_errmsg(ctx).decode())

            def close(self):
                lib.jopt_optim_free(opt)

        return Handle()


# ---- measuring ------------------------------------------------------------------


def gpu_time(torch, step, warm, reps, rounds):
    """median seconds per step over `rounds` runs of `reps` steps, and the
    host's seconds per step"""
    for _ in range(warm):
        step()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times, host = [], []
    for _ in range(rounds):
        a.record()
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        host.append((time.perf_counter() - t0) / reps)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / reps)
    return statistics.median(times), statistics.median(host)


def copy_rate(torch):
    n = 1 << 28  # 1 GiB of float32
    x = torch.empty(n, device="cuda")
    y = torch.empty_like(x)
    t, _ = gpu_time(torch, lambda: y.copy_(x), 3, 10, 5)
    del x, y
    torch.cuda.empty_cache()
    return 2 * 4 * n / t / 1e9


def tensors(torch, sizes, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    ps = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n, device="cuda", generator=g))
        p.grad = torch.randn(n, device="cuda", generator=g) * 1e-3
        ps.append(p)
    return ps


def torch_impls(torch, name, compile_it):
    spec, opts, cls_name, kw, _, fusable, _ = OPTIMIZERS[name]
    cls = (make_lion(torch) if cls_name == "Lion" else make_lamb(torch) if cls_name == "LAMB"
           else getattr(torch.optim, cls_name))
    impls = [("torch-forloop", lambda ps: cls(ps, foreach=False, **kw).step),
             ("torch-foreach", lambda ps: cls(ps, foreach=True, **kw).step)]
    if fusable:
        impls.append(("torch-fused", lambda ps: cls(ps, fused=True, **kw).step))
    if compile_it:
        impls.append(("torch-compile", lambda ps: torch.compile(cls(ps, foreach=False, **kw).step)))
    return impls


def check(torch, lib, name, out):
    """jopt's step against torch's for-loop from the same start"""
    spec, opts, cls_name, kw, _, _, _ = OPTIMIZERS[name]
    sizes = [65536] * 8 + [12345]
    a, b = tensors(torch, sizes, seed=7), tensors(torch, sizes, seed=7)
    cls = (make_lion(torch) if cls_name == "Lion" else make_lamb(torch) if cls_name == "LAMB"
           else getattr(torch.optim, cls_name))
    start = [p.detach().clone() for p in b]
    h = lib.optimizer(spec, opts, a, torch.cuda.current_stream().cuda_stream)
    ref = cls(b, foreach=False, **kw)
    for _ in range(3):
        h()
        ref.step()
    torch.cuda.synchronize()
    h.close()
    with torch.no_grad():
        diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
        moved = max(float((y - y0).abs().max()) for y, y0 in zip(b, start))
    print(f"check {name:9s}: 3 steps, jopt against torch's for-loop: max |difference| "
          f"{diff:.3g}, {diff / max(moved, 1e-30):.2e} of the largest update", file=out,
          flush=True)
    return diff


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.environ.get("JOPT_LIBRARY",
                                                    os.path.join(HERE, "..", "build", "libjopt.so")))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--cases", default="64M,1000x64K,resnet50,gpt2,1G")
    ap.add_argument("--compile", default="adam:64M,lion:64M,lamb:64M",
                    help="optimizer:case pairs to time torch.compile on ('' for none)")
    ap.add_argument("--quick", action="store_true", help="fewer steps per measurement")
    ap.add_argument("--deadline", type=float, default=0, help="seconds; 0: none")
    ap.add_argument("--csv", default="")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import torch
    if not torch.cuda.is_available():
        print("torch sees no CUDA device: nothing to measure")
        return 77
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    os.environ.setdefault("JOPT_LIBRARY", os.path.abspath(args.lib))
    lib = Jopt(os.path.abspath(args.lib))
    try:
        import jopt.torch as jt
    except Exception as e:  # the drop-in classes are optional here
        print("(jopt.torch not timed: %s)" % e)
        jt = None
    out = sys.stdout
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}; "
          f"jopt {args.lib}", flush=True)
    copy = copy_rate(torch)
    print(f"device copy (torch copy_ of 1 GiB): {copy:.0f} GB/s (read + write)", flush=True)
    warm, reps, rounds = (2, 5, 3) if args.quick else (3, 10, 5)
    compile_pairs = {tuple(x.split(":")) for x in args.compile.split(",") if x}
    rows, skipped = [], []
    names = [n for n in args.optimizers.split(",") if n]
    for name in names:
        check(torch, lib, name, out)
    header = (f"{'optimizer':9s} {'case':9s} {'impl':14s} {'ms/step':>9s} {'ps/elem':>8s} "
              f"{'GB/s':>6s} {'% copy':>6s} {'host us':>8s}")
    print(header, flush=True)
    # case by case (the cases in --cases order), so that a deadline skips
    # the last cases of every optimizer, not the last optimizers
    for case in [c for c in args.cases.split(",") if c]:
        for name in names:
            spec, opts, _, _, nbytes, _, jt_name = OPTIMIZERS[name]
            sizes = CASES[case]()
            numel = sum(sizes)
            big = numel >= 1 << 30
            impls = [("jopt", None)]
            if jt is not None:
                impls.append(("jopt.torch", None))
            impls += torch_impls(torch, name, (name, case) in compile_pairs)
            for impl, make in impls:
                if args.deadline and time.perf_counter() - t_start > args.deadline:
                    skipped.append(f"{name}/{case}/{impl}")
                    continue
                ps = tensors(torch, sizes)
                note, handle = "", None
                t_make = time.perf_counter()
                if impl == "jopt":
                    handle = lib.optimizer(spec, opts, ps, torch.cuda.current_stream().cuda_stream)
                    step = handle
                elif impl == "jopt.torch":
                    kw = OPTIMIZERS[name][3]
                    step = getattr(jt, jt_name)(ps, **kw).step
                else:
                    step = make(ps)
                if impl == "torch-compile":
                    step()  # the compile
                    torch.cuda.synchronize()
                    note = f"compile {time.perf_counter() - t_make:.1f} s"
                t, host = gpu_time(torch, step, warm, max(2, reps // 2) if big else reps, rounds)
                if handle:
                    handle.close()
                del step, ps
                torch.cuda.empty_cache()
                gbs = nbytes * numel / t / 1e9
                row = dict(optimizer=name, case=case, numel=numel, ntensors=len(sizes), impl=impl,
                           ms=t * 1e3, ps_per_elem=t / numel * 1e12, gbps=gbs,
                           copy_share=gbs / copy, host_us=host * 1e6, note=note)
                rows.append(row)
                print(f"{name:9s} {case:9s} {impl:14s} {t * 1e3:9.3f} {row['ps_per_elem']:8.2f} "
                      f"{gbs:6.0f} {100 * gbs / copy:6.1f} {host * 1e6:8.1f} {note}", flush=True)
    # the ratios
    print("\nratios (time of the other / jopt's):", flush=True)
    by = {(r["optimizer"], r["case"], r["impl"]): r["ms"] for r in rows}
    for name in names:
        for case in [c for c in args.cases.split(",") if c]:
            j = by.get((name, case, "jopt"))
            if not j:
                continue
            parts = [f"{impl} {by[(name, case, impl)] / j:.2f}x"
                     for impl in ("torch-fused", "torch-foreach", "torch-forloop", "torch-compile")
                     if (name, case, impl) in by]
            print(f"  {name:9s} {case:9s} " + ", ".join(parts), flush=True)
    if skipped:
        print(f"\nskipped (past --deadline {args.deadline:.0f} s): " + " ".join(skipped))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["optimizer"])
            w.writeheader()
            w.writerows(rows)
        print("wrote " + args.csv)
    print(f"bench_gpu: {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
