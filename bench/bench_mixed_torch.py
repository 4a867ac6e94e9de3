#!/usr/bin/env python3
"""bench_mixed_torch.py - torch 2.13's optimizer step on float32, bfloat16 and
float16 parameters, the speed jopt's mixed-precision kernels must meet (issue 13).

  python3 bench/bench_mixed_torch.py [--quick] [--sizes 1M,4M,16M,64M] [--no-model]
          [--threads 1,2] [--optimizers adam,adamw,sgd] [--impls fused,foreach,forloop,deepspeed]
          [--dtypes float32,bfloat16,float16] [--budget SECONDS] [--spawn]
          [--csv FILE]

Times one optimizer step (median over repeated steps after 3 warm-up steps, at
least --budget seconds and 5 steps (--quick: 0.2 s and 3 steps) per configuration) for:
  fused     torch.optim.X(..., fused=True)      (Adam, AdamW, SGD; CPU kernels)
  foreach   torch.optim.X(..., foreach=True)
  forloop   torch.optim.X(..., foreach=False)   (the single-tensor path)
  deepspeed deepspeed.ops.adam.DeepSpeedCPUAdam (Adam/AdamW, float32 and bfloat16
            parameters; its state is float32 whatever the parameter dtype)
on one tensor of each size and on ResNet-50's 161 parameter tensors
(bench/resnet50.h), at each thread count (torch.set_num_threads; OMP_NUM_THREADS
for DeepSpeed's OpenMP loop).

Each configuration runs in its own process: by default a fork of this one, made
before torch has run anything (cheap, and the child gets a fresh allocator and
thread pool); --spawn starts a fresh interpreter instead. GB/s is the minimum
traffic of the step (the bytes it must read and write) divided by its time:
Adam reads p, g, m, v and writes p, m, v (7 elements of the parameter dtype for
torch, whose state has the parameter dtype; DeepSpeed's state is float32); SGD
with momentum reads p, g, buf and writes p, buf (5).

Note: torch 2.13's fused SGD on bfloat16/float16 skips the parameter update in
its vectorized loop (pytorch#191763), so its times are those of a kernel that
does less than it should.
"""
import argparse
import csv
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OPTS = {  # name -> torch class, kwargs, elements of traffic per parameter element
    "adam": ("Adam", dict(lr=1e-3), 7),
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), 7),
    "sgd": ("SGD", dict(lr=1e-3, momentum=0.9), 5),
}


def count(text):
    text = text.strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(float(text.rstrip("KkMmGg")) * mult)


def resnet50_sizes():
    with open(os.path.join(HERE, "resnet50.h")) as f:
        sizes = [int(m) for m in re.findall(r'\{"[^"]+", "[^"]+", (\d+)\}', f.read())]
    assert len(sizes) == 161 and sum(sizes) == 25557032, "resnet50.h changed"
    return sizes


def traffic(cfg, numel):
    d = DTYPE_BYTES[cfg["dtype"]]
    if cfg["impl"] == "deepspeed":  # p r/w, g r in the param dtype; m, v float32 r/w
        return numel * (3 * d + 16)
    return numel * OPTS[cfg["opt"]][2] * d


def measure(cfg):
    """Runs in the child: one configuration, returns a dict."""
    threads = cfg["threads"]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    dt = getattr(torch, cfg["dtype"])
    sizes = cfg["sizes"]
    torch.manual_seed(0)
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.empty(n, dtype=dt).uniform_(-0.1, 0.1))
        p.grad = torch.empty(n, dtype=dt).uniform_(-1e-3, 1e-3)
        params.append(p)
    cls_name, kwargs, _ = OPTS[cfg["opt"]]
    if cfg["impl"] == "deepspeed":
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # builds/loads its C++ op

        opt = DeepSpeedCPUAdam(params, lr=kwargs["lr"], weight_decay=kwargs.get("weight_decay", 0.0),
                               adamw_mode=cfg["opt"] == "adamw")
    else:
        flag = {"fused": dict(fused=True), "foreach": dict(foreach=True),
                "forloop": dict(foreach=False)}[cfg["impl"]]
        opt = getattr(torch.optim, cls_name)(params, **kwargs, **flag)
    for _ in range(3):
        opt.step()
    times = []
    t_end = time.perf_counter() + cfg["budget"]
    while len(times) < cfg["min_steps"] or time.perf_counter() < t_end:
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
        if len(times) >= 10000:
            break
    med = statistics.median(times)
    numel = sum(sizes)
    return dict(median_s=med, min_s=min(times), steps=len(times),
                gbps=traffic(cfg, numel) / med / 1e9, ns_per_elem=med / numel * 1e9)


def child(cfg, conn):
    try:
        conn.send(measure(cfg))
    except Exception as e:  # report, do not hang the parent
        conn.send({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
    conn.close()


def run_config(cfg, spawn):
    if spawn:
        r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)],
                           capture_output=True, text=True)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": r.stderr.strip().splitlines()[-1:]}
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe(duplex=False)
    p = ctx.Process(target=child, args=(cfg, b))
    p.start()
    b.close()
    try:
        res = a.recv()
    except EOFError:
        res = {"error": f"worker died (exit code {p.exitcode})"}
    p.join()
    return res


def deepspeed_available():
    try:
        import importlib.util

        return importlib.util.find_spec("deepspeed") is not None
    except Exception:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--optimizers")
    ap.add_argument("--impls")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16")
    ap.add_argument("--budget", type=float)
    ap.add_argument("--spawn", action="store_true")
    ap.add_argument("--csv")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return

    quick = args.quick
    sizes = [count(s) for s in (args.sizes or ("1M,16M" if quick else "1M,4M,16M,64M")).split(",")]
    optimizers = (args.optimizers or ("adam,sgd" if quick else "adam,adamw,sgd")).split(",")
    impls = (args.impls or ("fused,foreach,deepspeed" if quick else
                            "fused,foreach,forloop,deepspeed")).split(",")
    dtypes = args.dtypes.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    budget = args.budget if args.budget is not None else (0.2 if quick else 1.0)
    workloads = [(f"{n // (1 << 20)}M" if n % (1 << 20) == 0 else str(n), [n]) for n in sizes]
    if not args.no_model:
        workloads.append(("resnet50", resnet50_sizes()))
    if "deepspeed" in impls and not deepspeed_available():
        print("deepspeed is not installed: skipping its rows", file=sys.stderr)
        impls.remove("deepspeed")

    import torch  # imported here, before forking, so children start with it loaded

    if "deepspeed" in impls:
        # Build (first time: minutes) and load DeepSpeed's C++ op here, so that forked
        # children find it loaded. Its OpenMP loop resolves to torch's libgomp, so
        # torch.set_num_threads in the child sets its thread count too.
        from deepspeed.ops.op_builder import CPUAdamBuilder

        CPUAdamBuilder().load()

    header = (f"torch {torch.__version__}, ATen CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs; "
              f"median step time, GB/s = minimum traffic / time")
    load0 = os.getloadavg()
    print(header, flush=True)
    rows = []
    for opt in optimizers:
        for wname, wsizes in workloads:
            for th in threads:
                for impl in impls:
                    if impl == "deepspeed" and opt == "sgd":
                        continue
                    for dtn in dtypes:
                        if impl == "deepspeed" and dtn == "float16":
                            continue  # DeepSpeed warns that fp16 CPUAdam may not work on AMD CPUs
                        if impl == "forloop" and sum(wsizes) > (16 << 20) and quick:
                            continue
                        cfg = dict(opt=opt, impl=impl, dtype=dtn, threads=th, sizes=wsizes,
                                   budget=budget, min_steps=3 if quick else 5)
                        t0 = time.time()
                        res = run_config(cfg, args.spawn)
                        row = dict(optimizer=opt, workload=wname, numel=sum(wsizes),
                                   ntensors=len(wsizes), threads=th, impl=impl, dtype=dtn, **res)
                        rows.append(row)
                        if "error" in res:
                            print(f"  {opt:6s} {wname:9s} t={th} {impl:9s} {dtn:9s} ERROR {res['error']}",
                                  flush=True)
                        else:
                            print(f"  {opt:6s} {wname:9s} t={th} {impl:9s} {dtn:9s} "
                                  f"{res['median_s'] * 1e3:9.3f} ms  {res['gbps']:6.1f} GB/s  "
                                  f"({res['steps']} steps, {time.time() - t0:.1f} s)", flush=True)
    # table: one line per (optimizer, workload, threads), one column per (impl, dtype)
    cols = [(i, d) for i in impls for d in dtypes
            if not (i == "deepspeed" and d == "float16")]
    short = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
    load1 = os.getloadavg()
    print()
    print(header)
    print(f"load average (1, 5, 15 min) at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}: above the thread count, "
          f"other processes shared the cores and the times are inflated")
    print("ms per step (GB/s)")
    head = f"{'optimizer':9s} {'workload':9s} {'thr':>3s} " + " ".join(
        f"{(i + ' ' + short[d]):>17s}" for i, d in cols)
    print(head)
    for opt in optimizers:
        for wname, _ in workloads:
            for th in threads:
                cells = []
                for i, d in cols:
                    r = next((r for r in rows if r["optimizer"] == opt and r["workload"] == wname
                              and r["threads"] == th and r["impl"] == i and r["dtype"] == d), None)
                    if r is None:
                        cells.append(f"{'-':>17s}")
                    elif "error" in r:
                        cells.append(f"{'error':>17s}")
                    else:
                        cells.append(f"{r['median_s'] * 1e3:9.3f} ({r['gbps']:4.1f})")
                print(f"{opt:9s} {wname:9s} {th:3d} " + " ".join(cells))
    if args.csv:
        fields = ["optimizer", "workload", "numel", "ntensors", "threads", "impl", "dtype",
                  "median_s", "min_s", "steps", "gbps", "ns_per_elem", "error"]
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in fields})


if __name__ == "__main__":
    main()
