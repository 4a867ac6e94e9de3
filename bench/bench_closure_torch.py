"""torch.optim.LBFGS's own cost on bench_closure's problem (bench/bench_closure.c).

    f(x) = sum_k a_k (x_k - 1)^2 / 2 over two tensors (2/3 and 1/3 of N),
    a_k log-spaced in [1e-3, 1] from a 4096-entry table, x0 uniform in [-1, 1)

The closure writes p.grad itself (no autograd), and the time inside it is
subtracted: "own" is step() minus the closure, per closure evaluation and per
iteration (state['n_iter']), as bench_closure reports for jopt.  Options as
there: history_size=10, max_iter=10, lr=1, line_search_fn None and
'strong_wolfe'.  1 and 2 threads (torch.set_num_threads).  Should a run
converge (loss under 1e-9 of the first), x goes back to x0 outside the timing.

With --jopt (the default when libjopt.so is found: JOPT_LIBRARY=<build>/libjopt.so
and python/ on sys.path), jopt's drop-in jopt.torch.LBFGS runs alongside, in
the same rounds (threads: its context's jopt_ctx_set_threads).  Its "own" time
includes the drop-in's copy of .grad into jopt's flat gradient buffer.

    python3 bench/bench_closure_torch.py [--sizes 64K,1M,16M] [--threads 1,2]
                                        [--budget S] [--no-jopt]
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_size(s):
    s = s.strip()
    mult = {"K": 1024, "k": 1024, "M": 1 << 20, "m": 1 << 20}.get(s[-1], 1)
    return int(float(s.rstrip("KkMm")) * mult)


def a_table():
    j = torch.arange(4096, dtype=torch.float64)
    u = torch.remainder(j * 0.6180339887498949, 1.0)
    return (10.0 ** (-3.0 + 3.0 * u)).float()


class Problem:
    def __init__(self, n, seed=7):
        n0 = min(n // 3 * 2 + 5, n - 1)
        sizes = [n0, n - n0]
        g = torch.Generator().manual_seed(seed)
        tab = a_table()
        self.x0 = [torch.rand(k, generator=g) * 2 - 1 for k in sizes]
        self.params = [x.clone().requires_grad_(True) for x in self.x0]
        for p in self.params:
            p.grad = torch.zeros_like(p)
        self.a = [tab[torch.arange(k) & 4095].contiguous() for k in sizes]
        self.tmp = [torch.empty(k) for k in sizes]
        self.t_closure = 0.0
        self.evals = 0
        self.first = None
        self.first = self.closure()
        self.t_closure = 0.0
        self.evals = 0

    @torch.no_grad()
    def closure(self):
        t0 = time.perf_counter()
        s = 0.0
        for x, a, r in zip(self.params, self.a, self.tmp):
            torch.sub(x, 1.0, out=r)
            torch.mul(r, a, out=x.grad)
            s += float(torch.dot(x.grad, r))
        self.evals += 1
        self.t_closure += time.perf_counter() - t0
        return 0.5 * s

    @torch.no_grad()
    def reset(self):
        for p, x in zip(self.params, self.x0):
            p.copy_(x)


class Runner:
    def __init__(self, name, make, n, iters):
        self.name = name
        self.p = Problem(n)
        self.opt = make(self.p.params)
        self.iters = iters  # how to read the iteration count, or None
        self.samples = {}
        self.resets = 0
        self.steps = {}

    def n_iter(self):
        return self.iters(self.opt) if self.iters else float("nan")

    def step(self):
        loss = self.opt.step(self.p.closure)
        loss = float(loss)
        if not (loss >= 1e-9 * self.p.first) or not math.isfinite(loss):
            self.p.reset()
            self.resets += 1

    def sample(self, thr, steps):
        it0, ev0 = self.n_iter(), self.p.evals
        self.p.t_closure = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()  # a reset is outside the closure but cheap against a step
        t = time.perf_counter() - t0
        evals, iters = self.p.evals - ev0, self.n_iter() - it0
        own = t - self.p.t_closure
        self.samples.setdefault(thr, []).append(
            (t / steps, self.p.t_closure / steps, own / evals if evals else float("nan"),
             own / iters if iters > 0 else float("nan"), evals / steps, iters / steps))


def torch_iters(opt):
    st = opt.state[opt._params[0]]
    return st.get("n_iter", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64K,1M,16M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--budget", type=float, default=8.0)
    ap.add_argument("--max-iter", type=int, default=10)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--no-jopt", action="store_true")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    jt = None
    if not args.no_jopt:
        try:
            sys.path.insert(0, os.path.join(HERE, "..", "python"))
            import jopt.torch as jt  # noqa: F811
            from jopt._lib import default_context
        except Exception as e:  # noqa: BLE001
            print("(jopt's drop-in not loaded: %s)" % e)
            jt = None

    m, mi = args.history, args.max_iter
    configs = [
        ("torch LBFGS", lambda ps: torch.optim.LBFGS(ps, lr=1, max_iter=mi, history_size=m),
         torch_iters),
        ("torch LBFGS+wolfe", lambda ps: torch.optim.LBFGS(
            ps, lr=1, max_iter=mi, history_size=m, line_search_fn="strong_wolfe"),
         torch_iters),
    ]
    if jt is not None:
        configs += [
            ("jopt.torch LBFGS", lambda ps: jt.LBFGS(ps, lr=1, max_iter=mi, history_size=m),
             None),
            ("jopt.torch LBFGS+wolfe", lambda ps: jt.LBFGS(
                ps, lr=1, max_iter=mi, history_size=m, line_search_fn="strong_wolfe"), None),
        ]

    def set_threads(t):
        torch.set_num_threads(t)
        if jt is not None:
            default_context().set_threads(t)

    print("torch %s, %s; f = sum a_k (x_k - 1)^2 / 2 over 2 tensors; history_size=%d "
          "max_iter=%d lr=1; own = step() minus the closure; medians; budget %.1f s per size"
          % (torch.__version__, "MKL" if torch.backends.mkl.is_available() else "no MKL",
             m, mi, args.budget))
    for tok in args.sizes.split(","):
        n = parse_size(tok)
        runners = [Runner(name, make, n, iters) for name, make, iters in configs]
        # warm up (fills the history) and size the samples to >= 20 ms
        steps = {}
        for t in threads:
            set_threads(t)
            for r in runners:
                k, t0 = 0, time.perf_counter()
                while k < 3 or time.perf_counter() - t0 < 0.02:
                    r.step()
                    k += 1
                steps[(r.name, t)] = max(1, math.ceil(0.02 / ((time.perf_counter() - t0) / k)))
        t_start, rounds = time.perf_counter(), 0
        while rounds < 3 or time.perf_counter() - t_start < args.budget:
            for t in threads:
                set_threads(t)
                for r in runners:
                    r.sample(t, steps[(r.name, t)])
            rounds += 1
        print("\n== %d elements (tensors of %d and %d), %d rounds, %.1f s"
              % (n, runners[0].p.params[0].numel(), runners[0].p.params[1].numel(), rounds,
                 time.perf_counter() - t_start))
        print("%-23s %3s %6s %6s %9s %8s %11s %11s %7s"
              % ("optimizer", "thr", "ev/st", "it/st", "step ms", "closure", "own us/ev",
                 "own us/it", "resets"))
        own = {}
        for r in runners:
            for t in threads:
                s = r.samples[t]
                med = [statistics.median(c) for c in zip(*s)]
                st, cl, oe, oi, es, is_ = med
                own[(r.name, t)] = oe
                it_s = "-" if math.isnan(is_) else "%.1f" % is_
                oi_s = "-" if math.isnan(oi) else "%.1f" % (oi * 1e6)
                print("%-23s %3d %6.1f %6s %9.3f %7.1f%% %11.1f %11s %7d"
                      % (r.name, t, es, it_s, st * 1e3, 100 * cl / st, oe * 1e6, oi_s,
                         r.resets))
        if jt is not None:
            for t in threads:
                print("torch / jopt.torch, own time per eval, %d thr: LBFGS %.2fx, "
                      "LBFGS+wolfe %.2fx" % (
                          t, own[("torch LBFGS", t)] / own[("jopt.torch LBFGS", t)],
                          own[("torch LBFGS+wolfe", t)] / own[("jopt.torch LBFGS+wolfe", t)]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
