#!/usr/bin/env python3
"""muon_fidelity.py - how far jopt's Muon update is from torch 2.13's on
matrices larger than the fixtures', one step from seeded values (lr=1, no
decay: the orthogonalised update itself times the shape's ratio).

  JOPT_LIBRARY=build/libjopt.so python3 tests/torch/muon_fidelity.py

Prints, per shape: jopt's bfloat16 Newton-Schulz against torch's (the
share of elements not bit-equal, the relative RMS difference), jopt's
float32 one against torch's bfloat16 (how far a float32 iteration is from
torch's, for scale), and jopt's float32 against torch's float32 twin (the
recorder's ns-f32 patch).  docs/fidelity.md quotes it.
"""
import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("JOPT_SPEC_PATH", os.path.join(ROOT, "specs"))

import torch  # noqa: E402
import jopt.torch  # noqa: E402

torch.set_num_threads(1)
SHAPES = [(64, 96), (256, 128), (256, 512)]


def update(cls, shape, opts, seed=1):
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(shape, generator=g))
    p0 = p.detach().clone()
    opt = cls([p], lr=1.0, weight_decay=0.0, **opts)
    p.grad = torch.randn(shape, generator=g)
    opt.step()
    return p0 - p.detach()


def rel(a, b):
    return float((a - b).double().norm() / b.double().norm())


def main():
    ours = {s: (update(jopt.torch.Muon, s, {}),
                update(jopt.torch.Muon, s, {"ns_dtype": "float32"})) for s in SHAPES}
    for s in SHAPES:
        t = update(torch.optim.Muon, s, {})
        bf, f32 = ours[s]
        print("%-10s jopt bf16 vs torch bf16: %5.1f %% of elements differ, rms rel %.2g; "
              "jopt float32 vs torch bf16: rms rel %.2g"
              % ("%dx%d" % s, 100.0 * float((bf != t).sum()) / t.numel(), rel(bf, t),
                 rel(f32, t)))
    import torch.optim._muon as m
    src = inspect.getsource(m._zeropower_via_newtonschulz)
    assert src.count("grad.bfloat16()") == 1
    exec(compile(src.replace("grad.bfloat16()", "grad.to(torch.float32, copy=True)"),
                 m.__file__, "exec"), m.__dict__)
    for s in SHAPES:
        t = update(torch.optim.Muon, s, {})
        f32 = ours[s][1]
        print("%-10s jopt float32 vs torch float32: %5.1f %% differ, rms rel %.2g, "
              "max abs %.2g" % ("%dx%d" % s, 100.0 * float((f32 != t).sum()) / t.numel(),
                                rel(f32, t), float((f32 - t).abs().max())))


if __name__ == "__main__":
    main()
