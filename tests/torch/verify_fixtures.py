#!/usr/bin/env python3
"""Re-read fixtures written by record_fixtures.py and replay them with torch.

Usage: python3 tests/torch/verify_fixtures.py FILE.fix... [validation_messages.txt]
Starts from the stored initial parameters, feeds the stored gradients to the
torch optimizer named in the header, and checks that every stored parameter
vector matches bit for bit. Files whose header's torch line carries the
ieee-sqrt note are replayed under the same correctly rounded sqrt patch;
files with a "record ax" header line are compared against ASGD's state["ax"].
A .txt argument is a validation_messages.txt: every line's options must make
the constructor raise exactly that message. Exit status 1 on any mismatch.
"""

import collections
import contextlib
import sys

import numpy as np
import torch

import record_fixtures as rf
from record_fixtures import OPTIMIZERS, parse_options


def read_fixture(path):
    with open(path, "rb") as f:
        blob = f.read()
    hdr = {}
    pos = 0
    while True:
        nl = blob.index(b"\n", pos)
        line = blob[pos:nl].decode("ascii")
        pos = nl + 1
        if line == "end":
            break
        key, _, value = line.partition(" ")
        hdr[key] = value
    assert hdr["jopt-fixture"] == "1", hdr
    sizes = [int(x) for x in hdr["sizes"].split()]
    steps = int(hdr["steps"])
    total = sum(sizes)

    def floats(n):
        nonlocal pos
        a = np.frombuffer(blob, dtype="<f4", count=n, offset=pos).copy()
        pos += 4 * n
        return a

    def split(a, ns):
        out, k = [], 0
        for n in ns:
            out.append(a[k : k + n])
            k += n
        return out

    init = split(floats(total), sizes)
    records = []
    for _ in range(steps):
        present = [b == 1 for b in blob[pos : pos + len(sizes)]]
        assert all(b in (0, 1) for b in blob[pos : pos + len(sizes)])
        pos += len(sizes)
        gsizes = [n for n, p in zip(sizes, present) if p]
        gs = iter(split(floats(sum(gsizes)), gsizes))
        grads = [next(gs) if p else None for p in present]
        params = split(floats(total), sizes)
        records.append((grads, params))
    assert pos == len(blob), (pos, len(blob))
    return hdr, sizes, init, records


def replay(path):
    hdr, sizes, init, records = read_fixture(path)
    torch.set_num_threads(1)
    patched = hdr["torch"].endswith(rf.IEEE_SQRT_NOTE)
    record = hdr.get("record", "params")
    assert record in ("params", "ax"), record
    assert record == "params" or hdr["spec"] == "asgd", hdr
    params = [torch.from_numpy(a.copy()).requires_grad_(True) for a in init]
    opt = OPTIMIZERS[hdr["spec"]](params, **parse_options(hdr["options"]))
    bad = 0
    rf.IMPL_CALLS.clear()
    rf.SQRT_CALLS.clear()
    with rf.ieee_sqrt() if patched else contextlib.nullcontext():
        for s, (grads, stored) in enumerate(records, 1):
            for p, g in zip(params, grads):
                p.grad = None if g is None else torch.from_numpy(g.copy())
            opt.step()
            for i, (p, want) in enumerate(zip(params, stored)):
                if record == "ax":
                    st = opt.state.get(p)
                    got = (st["ax"] if st else torch.zeros_like(p)).detach().numpy()
                else:
                    got = p.detach().numpy()
                if got.tobytes() != want.tobytes():
                    bad += 1
                    print(f"{path}: step {s} tensor {i}: max |diff| {np.abs(got - want).max()}")
    calls = dict(rf.IMPL_CALLS)
    if calls != {"forloop": len(records)}:
        bad += 1
        print(f"{path}: expected {len(records)} single-tensor calls, got {calls}")
    if patched and not rf.SQRT_CALLS:
        bad += 1
        print(f"{path}: ieee-sqrt file, but the patched sqrt was never called")
    absent = sum(g is None for grads, _ in records for g in grads)
    what = " (state ax)" if record == "ax" else ""
    print(f"{path}: {hdr['spec']} {hdr['options']!r} torch {hdr['torch']} sizes {sizes} "
          f"steps {len(records)} absent-grads {absent}{what}: "
          f"{'OK (bitwise)' if not bad else 'MISMATCH'}")
    return bad == 0


def check_messages(path):
    bad = n = 0
    with open(path, encoding="ascii") as f:
        for line in f:
            spec, options, want = line.rstrip("\n").split("\t")
            got = rf.validation_message(spec, options)
            n += 1
            if got != want:
                bad += 1
                print(f"{path}: {spec} {options!r}: torch says {got!r}, file says {want!r}")
    print(f"{path}: {n} messages: {'OK' if not bad else 'MISMATCH'}")
    return bad == 0


if __name__ == "__main__":
    rf._install_impl_probes()
    rf.install_sqrt_probes()
    ok = all([check_messages(p) if p.endswith(".txt") else replay(p) for p in sys.argv[1:]])
    sys.exit(0 if ok else 1)
