#!/usr/bin/env python3
"""Re-read fixtures written by record_mixed.py and replay them with torch, bitwise.

Usage: python3 tests/torch/verify_mixed.py FILE.fix...
       python3 tests/torch/verify_mixed.py --dump FILE.fix   (print the decoded file)

Each file is parsed (tests/fixtures/mixed/README.md), its inputs (initial
parameters, gradients as fed, GradScaler settings) are handed to the recorder's
own run(), and the bytes it produces must equal the file's bytes. The parse also
checks the file's own invariants: a step with found_inf = 1 changes no parameter
and leaves the gradients as they were; the step counts in the trailer equal the
number of steps with a gradient and found_inf = 0. Exit status 1 on any mismatch.
"""

import contextlib
import struct
import sys

import numpy as np
import torch

import record_mixed as rm
import record_fixtures as rf


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    hdr, pos = {}, 0
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
    dtn = hdr.get("dtype", "float32")
    sdt = hdr.get("state-dtype", dtn)
    amp = rm.parse_amp(hdr["amp"]) if "amp" in hdr else None
    trailer = hdr.get("trailer", "").split()
    total = sum(sizes)

    def take(n, d):
        nonlocal pos
        t = rm.from_bytes(blob[pos:pos + n * rm.esize(d)], d, n)
        pos += n * rm.esize(d)
        return t

    def split(t, ns):
        out, k = [], 0
        for n in ns:
            out.append(t[k:k + n])
            k += n
        return out

    init = split(take(total, dtn), sizes)
    records = []
    for _ in range(steps):
        raw = blob[pos:pos + len(sizes)]
        assert all(b in (0, 1) for b in raw), raw
        present = [b == 1 for b in raw]
        pos += len(sizes)
        scale = found = None
        if amp is not None:
            scale, found = struct.unpack_from("<ff", blob, pos)
            pos += 8
        gsz = [n for n, p in zip(sizes, present) if p]
        gs = iter(split(take(sum(gsz), dtn), gsz))
        grads = [next(gs) if p else None for p in present]
        params = split(take(total, dtn), sizes)
        after = None
        if amp is not None:
            a = iter(split(take(sum(gsz), dtn), gsz))
            after = [next(a) if p else None for p in present]
        records.append(dict(present=present, scale=scale, found_inf=found, grads=grads,
                            params=params, grads_after=after))
    state = {}
    for name in trailer:
        if name == "step":
            state["step"] = list(struct.unpack_from(f"<{len(sizes)}f", blob, pos))
            pos += 4 * len(sizes)
        else:
            state[name] = split(take(total, sdt), sizes)
    assert pos == len(blob), (path, pos, len(blob))
    return blob, hdr, sizes, init, records, state


def invariants(path, hdr, init, records, state):
    bad = 0
    prev = init
    counts = [0] * len(init)
    for s, r in enumerate(records, 1):
        if r["found_inf"] == 1.0:
            for i, (a, b) in enumerate(zip(prev, r["params"])):
                if not torch.equal(a.view(torch.int16) if a.dtype != torch.float32 else a,
                                   b.view(torch.int16) if b.dtype != torch.float32 else b):
                    bad += 1
                    print(f"{path}: step {s} found_inf=1 but tensor {i} changed")
            for i, (g, ga) in enumerate(zip(r["grads"], r["grads_after"])):
                if g is not None and not np.array_equal(g.view(torch.int16).numpy(),
                                                        ga.view(torch.int16).numpy()):
                    bad += 1
                    print(f"{path}: step {s} found_inf=1 but gradient {i} was rewritten")
        else:
            for i, p in enumerate(r["present"]):
                counts[i] += p
        prev = r["params"]
    if "step" in state:
        want = [float(c) for c in counts]
        # Adagrad creates its state (step 0) for every parameter at construction
        if state["step"] != want:
            bad += 1
            print(f"{path}: step counts {state['step']} != steps taken {want}")
    return bad


def replay(path):
    blob, hdr, sizes, init, records, state = read(path)
    torch.set_num_threads(1)
    assert sizes == rm.SIZES and len(records) == rm.STEPS, (sizes, len(records))
    patched = hdr["torch"].endswith(rf.IEEE_SQRT_NOTE)
    amp = rm.parse_amp(hdr["amp"]) if "amp" in hdr else None
    lp = hdr["impl"] == "forloop-f32" and hdr["state-dtype"] != "float32"
    grads = [r["grads"] for r in records]
    note = rf.IEEE_SQRT_NOTE if patched else ""
    rf.SQRT_CALLS.clear()
    with rf.ieee_sqrt() if patched else contextlib.nullcontext():
        data, captured = rm.run(hdr["spec"], hdr["options"], hdr["dtype"], hdr["impl"], lp, amp,
                                init, grads, note)
    bad = invariants(path, hdr, init, records, state)
    if data != blob:
        bad += 1
        a = np.frombuffer(blob, np.uint8)
        b = np.frombuffer(data, np.uint8)
        n = min(len(a), len(b))
        first = int(np.argmax(a[:n] != b[:n])) if (a[:n] != b[:n]).any() else n
        print(f"{path}: replay differs (lengths {len(a)} / {len(b)}, first differing byte {first})")
    if patched and not rf.SQRT_CALLS:
        bad += 1
        print(f"{path}: ieee-sqrt file, but the patched sqrt was never called")
    skipped = sum(r["found_inf"] == 1.0 for r in records)
    absent = sum(g is None for r in records for g in r["grads"])
    print(f"{path}: {hdr['spec']} {hdr['options']!r} {hdr['dtype']} {hdr['impl']} "
          f"state {hdr['state-dtype']} absent-grads {absent}"
          + (f" found_inf-steps {skipped}" if amp else "")
          + f": {'OK (bitwise)' if not bad else 'MISMATCH'}")
    return bad == 0


def dump(path):
    blob, hdr, sizes, init, records, state = read(path)
    for k, v in hdr.items():
        print(f"{k}: {v}")
    f = lambda t: " ".join(f"{x:.6g}" for x in t.float().tolist()[:6])  # noqa: E731
    print("init[0]:", f(init[0]))
    for s, r in enumerate(records, 1):
        extra = f" scale {r['scale']} found_inf {r['found_inf']}" if r["scale"] is not None else ""
        print(f"step {s}: present {[int(p) for p in r['present']]}{extra} p[0]: {f(r['params'][0])}")
    for k, v in state.items():
        print(f"{k}: {v if k == 'step' else f(v[0])}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        dump(sys.argv[2])
        sys.exit(0)
    rf._install_impl_probes()
    rf.install_sqrt_probes()
    ok = all([replay(p) for p in sys.argv[1:]])
    sys.exit(0 if ok else 1)
