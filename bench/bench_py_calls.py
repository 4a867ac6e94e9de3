#!/usr/bin/env python3
"""bench_py_calls.py - what jopt.torch's own Python costs per call, apart
from the kernels: a step over many small tensors (the checks that every
parameter is still the tensor, storage and size jopt was given, and the
gradient sync), and giving SophiaH its hessian over many tensors (one
jopt_set_inputs call, or one jopt_set_input per tensor).

  python3 bench/bench_py_calls.py [--tensors N] [--hessian-tensors N]
  PYTHONPATH=/path/to/old/python python3 bench/bench_py_calls.py  # before

Prints the fastest of 7 repeats of each.  The tensors are tiny (16
elements), so the figures are the Python and ctypes overhead, one thread.
"""
import argparse
import os
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import torch  # noqa: E402
import jopt.torch  # noqa: E402
from jopt import _spec2  # noqa: E402


def step_cost(n):
    ps = [torch.nn.Parameter(torch.zeros(16)) for _ in range(n)]
    opt = jopt.torch.SGD(ps, lr=0.1, momentum=0.9)

    def step():
        for p in ps:  # new gradient tensors, as after zero_grad()
            p.grad = torch.ones(16)
        opt.step()

    for _ in range(100):
        step()
    return min(timeit.repeat(step, number=300, repeat=7)) / 300


def hessian_cost(n, batched):
    ps = [torch.nn.Parameter(torch.zeros(16)) for _ in range(n)]
    opt = jopt.torch.SophiaH(ps, lr=0.1, update_period=1)
    hs = [torch.ones(16) for _ in ps]
    for p in ps:
        p.grad = torch.ones(16)
    opt.step(hessian=hs)
    saved = _spec2.jopt_set_inputs
    if not batched:
        _spec2.jopt_set_inputs = None
    raw = opt._jopt_raw()
    pos = [(gi, pi) for gi, g in enumerate(opt.param_groups) for pi in range(len(g["params"]))]

    def give():
        opt._jopt_set_hessian(hs)
        for gi, pi in pos:  # taken back, as a step would
            _spec2.set_input(raw, gi, pi, "hessian", 0)

    try:
        return min(timeit.repeat(give, number=3, repeat=7)) / 3
    finally:
        _spec2.jopt_set_inputs = saved


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensors", type=int, default=161)
    ap.add_argument("--hessian-tensors", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("jopt.torch from %s" % os.path.dirname(jopt.__file__))
    print("SGD step over %d tensors, new gradients each step: %.1f us"
          % (a.tensors, step_cost(a.tensors) * 1e6))
    if _spec2.jopt_set_inputs is not None:
        print("SophiaH hessian over %d tensors, jopt_set_inputs: %.2f ms"
              % (a.hessian_tensors, hessian_cost(a.hessian_tensors, True) * 1e3))
    print("SophiaH hessian over %d tensors, jopt_set_input each: %.2f ms"
          % (a.hessian_tensors, hessian_cost(a.hessian_tensors, False) * 1e3))


if __name__ == "__main__":
    main()
