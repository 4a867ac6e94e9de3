#!/usr/bin/env python3
"""jopt.torch on CUDA tensors (docs/gpu.md).

Runs as a script: exit 0 on success, 77 (ctest SKIP) without torch, a CUDA
device or libjopt.so, 1 on failure.  Checks, on a small model's tensors:

  - jopt on the GPU against jopt on the CPU: the same bits (the same spec,
    the same order of operations), for every optimizer jopt.torch has;
  - jopt on the GPU against torch's own CUDA optimizers (the for-loop): the
    second reference, within torch's float32 tolerance (its CUDA kernels
    let nvcc contract a*b+c into fma where jopt's spec follows ATen's CPU
    order), with the largest difference printed;
  - steps on a non-default stream, state on the device, state_dict round
    trip, an lr scheduler, a GPU-only failure as an exception.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # python/, for `import jopt`

SKIP = 77
try:
    import torch
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)
if not torch.cuda.is_available():
    print("SKIP: torch sees no CUDA device")
    sys.exit(SKIP)
try:
    import jopt
    import jopt.torch
    from jopt._lib import cuda_device_count
except ImportError as e:
    print("SKIP: %s" % e)
    sys.exit(SKIP)
if cuda_device_count() < 1:
    print("SKIP: jopt sees no CUDA device (libcuda.so.1)")
    sys.exit(SKIP)

if "JOPT_SPEC_PATH" not in os.environ:  # a checkout: use its specs
    specs = os.path.join(os.path.dirname(os.path.dirname(HERE)), "specs")
    if os.path.isdir(specs):
        os.environ["JOPT_SPEC_PATH"] = specs

STEPS = 10
# (name, options); torch has a CUDA for-loop for each
CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=1e-2)),
    ("Adadelta", dict(lr=1.0)),
    ("Adagrad", dict(lr=0.05)),
    ("Adamax", dict(lr=1e-2)),
    ("ASGD", dict(lr=0.02, t0=5)),
    ("NAdam", dict(lr=1e-2)),
    ("RAdam", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True)),
    ("Rprop", dict(lr=1e-2)),
]
FAILED = []


def check(cond, what):
    if not cond:
        FAILED.append(what)
        print("FAIL: " + what)


def model(device):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(33, 257), torch.nn.Tanh(), torch.nn.Linear(257, 5))
    return m.to(device)


def train(cls, opts, device, steps=STEPS, stream=None):
    m = model(device)
    opt = cls(m.parameters(), **opts)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 33, generator=g).to(device), torch.randn(128, 5, generator=g).to(device)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        if stream is None:
            opt.step()
        else:
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                opt.step()
            torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    return [p.detach().cpu() for p in m.parameters()], opt


def ulps(a, b):
    ia = a.view(torch.int32).to(torch.int64)
    ib = b.view(torch.int32).to(torch.int64)
    ia = torch.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = torch.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int((ia - ib).abs().max())


def test_gpu_against_cpu_and_torch():
    for name, opts in CASES:
        jcls, tcls = getattr(jopt.torch, name), getattr(torch.optim, name)
        gpu, _ = train(jcls, opts, "cuda")
        ref, _ = train(tcls, dict(opts, foreach=False), "cuda")
        worst = max(ulps(a, b) for a, b in zip(gpu, ref))
        rel = max(float(((a - b).abs() / b.abs().clamp_min(1e-6)).max()) for a, b in zip(gpu, ref))
        print("%-9s %-55s vs torch CUDA: max %d ulp, rel %.2e" % (name, opts, worst, rel))
        check(rel < 1e-4, "%s %s: jopt on the GPU and torch on the GPU differ by %.2e"
              % (name, opts, rel))


def test_same_bits_as_cpu():
    """The same gradients on both devices: jopt's GPU kernels give the CPU's
    bits."""
    for name, opts in CASES:
        cls = getattr(jopt.torch, name)
        torch.manual_seed(2)
        shapes = [(257, 33), (257,), (5, 257), (5,), (4099,), (70001,)]
        init = [torch.randn(s) for s in shapes]
        grads = [[torch.randn(s) * 0.1 for s in shapes] for _ in range(STEPS)]
        out = []
        for device in ("cpu", "cuda"):
            ps = [torch.nn.Parameter(t.clone().to(device)) for t in init]
            opt = cls(ps, **opts)
            for k in range(STEPS):
                for p, g in zip(ps, grads[k]):
                    p.grad = g.to(device)
                opt.step()
            out.append([p.detach().cpu() for p in ps])
        same = all(torch.equal(a.view(torch.int32), b.view(torch.int32))
                   for a, b in zip(out[0], out[1]))
        print("%-9s %-55s GPU == CPU bit for bit: %s" % (name, opts, same))
        check(same, "%s %s: the GPU's bits are not the CPU's" % (name, opts))


def test_stream_state_and_state_dict():
    s = torch.cuda.Stream()
    on_stream, opt = train(jopt.torch.Adam, dict(lr=1e-2), "cuda", stream=s)
    plain, _ = train(jopt.torch.Adam, dict(lr=1e-2), "cuda")
    check(all(torch.equal(a, b) for a, b in zip(on_stream, plain)),
          "steps on a side stream give other bits")
    p = opt.param_groups[0]["params"][0]
    m, step = opt.jopt_state(p, "exp_avg")
    check(m.device == p.device and m.shape == p.shape and step == STEPS,
          "jopt_state on CUDA: %s %s step %s" % (m.device, tuple(m.shape), step))
    sd = opt.state_dict()
    m2 = model("cuda")
    opt2 = jopt.torch.Adam(m2.parameters(), lr=1e-2)
    opt2.load_state_dict(sd)
    m3, _ = opt2.jopt_state(opt2.param_groups[0]["params"][0], "exp_avg")
    check(torch.equal(m.cpu(), m3.cpu()), "state_dict round trip on CUDA")


def test_scheduler():
    m = model("cuda")
    opt = jopt.torch.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    ref_m = model("cuda")
    ref = torch.optim.SGD(ref_m.parameters(), lr=0.1, momentum=0.9, foreach=False)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=5)
    x = torch.randn(16, 33, device="cuda")
    for _ in range(5):
        for mm, o, sc in ((m, opt, sched), (ref_m, ref, ref_sched)):
            o.zero_grad()
            mm(x).square().mean().backward()
            o.step()
            sc.step()
    diff = max(float((a - b).abs().max()) for a, b in zip(m.parameters(), ref_m.parameters()))
    print("SGD + CosineAnnealingLR on CUDA: max |jopt - torch| = %.3g" % diff)
    check(diff < 1e-5, "scheduled SGD differs from torch's by %g" % diff)


def test_refusals():
    m = model("cuda")
    try:
        jopt.torch.LBFGS(m.parameters())
        check(False, "LBFGS on CUDA was not refused")
    except jopt.JoptError as e:
        check("closure optimizer" in str(e), "LBFGS refusal: %s" % e)
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3, device="cuda"))
    try:
        jopt.torch.SGD([a, b], lr=0.1)
        check(False, "parameters on two devices were not refused")
    except ValueError as e:
        check("several devices" in str(e), "two devices: %s" % e)


def main():
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(), "; jopt",
          jopt.library_path)
    for t in (test_same_bits_as_cpu, test_gpu_against_cpu_and_torch,
              test_stream_state_and_state_dict, test_scheduler, test_refusals):
        t()
    if FAILED:
        print("%d failure(s)" % len(FAILED))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
