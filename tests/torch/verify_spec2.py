#!/usr/bin/env python3
"""Re-read jopt-fixture 2 files (tests/fixtures/spec2) and replay them, bitwise.

Usage: python3 tests/torch/verify_spec2.py FILE.fix... [messages.txt]

For each file: parse the header and body (read_fixture2, a reference reader
of the format in tests/fixtures/spec2/README.md), start from the stored
initial parameters, feed the stored gradients (and extra inputs) to the
reference implementation the header names, under the patch its `variant`
line names, and check bit for bit: the parameters after every step, after
every named-kernel event, and every recorded final-state value. A .txt
argument is a messages.txt: every line's constructor call must raise exactly
that exception type and message. Exit status 1 on any mismatch.
"""

import sys

import numpy as np
import torch

import record_spec2 as r2

DTYPES = {"f32": ("<f4", 4), "f64": ("<f8", 8), "i64": ("<i8", 8), "u8": ("u1", 1)}


def parse_shape(s):
    return () if s == "scalar" else tuple(int(d) for d in s.split("x"))


def read_fixture2(path):
    """Returns (hdr, fixture) where fixture has: sizes, shapes, init (list of
    arrays shaped as shapes), steps [{present, grads, inputs{name: list},
    params, events [(kernel, params)]}], finals [(owner, name, dtype, shape,
    array)]. Reads jopt-fixture 1 files too (no shapes, inputs, events or
    finals)."""
    with open(path, "rb") as f:
        blob = f.read()
    hdr, finals_hdr = {}, []
    pos = 0
    while True:
        nl = blob.index(b"\n", pos)
        line = blob[pos:nl].decode("ascii")
        pos = nl + 1
        if line == "end":
            break
        key, _, value = line.partition(" ")
        if key == "final":
            owner, name, dtype, shape = value.split(" ")
            finals_hdr.append((owner, name, dtype, parse_shape(shape)))
        else:
            assert key not in hdr, f"{path}: header line {key!r} twice"
            hdr[key] = value
    version = hdr["jopt-fixture"]
    assert version in ("1", "2"), version
    sizes = [int(x) for x in hdr["sizes"].split()]
    shapes = ([parse_shape(s) for s in hdr["shapes"].split()] if "shapes" in hdr
              else [(n,) for n in sizes])
    assert [int(np.prod(s)) for s in shapes] == sizes, (path, shapes, sizes)
    steps = int(hdr["steps"])
    inputs = hdr.get("inputs", "").split()
    events = {}
    for item in hdr.get("events", "").split():
        s, _, kernel = item.partition(":")
        events.setdefault(int(s), []).append(kernel)

    def floats(n):
        nonlocal pos
        a = np.frombuffer(blob, dtype="<f4", count=n, offset=pos).copy()
        pos += 4 * n
        return a

    def presence():
        nonlocal pos
        flags = blob[pos:pos + len(sizes)]
        assert all(b in (0, 1) for b in flags), (path, pos)
        pos += len(sizes)
        return [b == 1 for b in flags]

    def tensors(present):
        n = sum(k for k, p in zip(sizes, present) if p)
        a, out, k = floats(n), [], 0
        for shape, size, p in zip(shapes, sizes, present):
            if p:
                out.append(a[k:k + size].reshape(shape))
                k += size
            else:
                out.append(None)
        return out

    init = tensors([True] * len(sizes))
    records = []
    for s in range(1, steps + 1):
        grads = tensors(presence())
        ins = {name: tensors(presence()) for name in inputs}
        params = tensors([True] * len(sizes))
        ev = [(k, tensors([True] * len(sizes))) for k in events.get(s, [])]
        records.append({"grads": grads, "inputs": ins, "params": params, "events": ev})
    finals = []
    for owner, name, dtype, shape in finals_hdr:
        code, width = DTYPES[dtype]
        n = int(np.prod(shape)) if shape else 1
        a = np.frombuffer(blob, dtype=code, count=n, offset=pos).copy().reshape(shape)
        pos += width * n
        finals.append((owner, name, dtype, shape, a))
    assert pos == len(blob), (path, pos, len(blob))
    return hdr, {"sizes": sizes, "shapes": shapes, "init": init, "steps": records,
                 "finals": finals}


def variant_of(hdr):
    v = hdr.get("variant")
    if v is None:
        return None
    name = v.split(" ", 1)[0]
    assert r2.VARIANTS[name][1] == v, (v, r2.VARIANTS[name][1])
    return name


def replay(path):
    hdr, fx = read_fixture2(path)
    assert hdr["jopt-fixture"] == "2", path
    spec, options = hdr["spec"], hdr["options"]
    ref = r2.REFS[spec]
    variant = variant_of(hdr)
    bad = []
    if [tuple(s) for s in ref.shapes] != fx["shapes"]:
        bad.append(f"shapes {fx['shapes']} != recorder's {ref.shapes}")
    want_ref = f"{ref.name}(" + ", ".join(f"{k}={v!r}" for k, v in ref.kwargs(options).items()) + ")"
    if hdr["reference"] != want_ref:
        bad.append(f"reference line {hdr['reference']!r} != {want_ref!r}")
    if hdr["torch"] != torch.__version__:
        bad.append(f"recorded with torch {hdr['torch']}, running {torch.__version__}")
    if ref.po_class and hdr.get("pytorch_optimizer") != r2.PO_VERSION:
        bad.append(f"recorded with pytorch_optimizer {hdr.get('pytorch_optimizer')}, running {r2.PO_VERSION}")
    if hdr.get("capability") != r2.capability():
        print(f"{path}: note: recorded on ATen CPU capability {hdr.get('capability')}, "
              f"replaying on {r2.capability()}")

    def t(a):
        return None if a is None else torch.from_numpy(a.copy())

    data = {"init": [t(a) for a in fx["init"]],
            "grads": [[t(g) for g in rec["grads"]] for rec in fx["steps"]]}
    for name in hdr.get("inputs", "").split():
        data[name] = [[t(h) for h in rec["inputs"][name]] for rec in fx["steps"]]
    # The stored inputs must be the recorder's seeded ones (a corrupted
    # gradient bit does not always reach the parameters).
    seeded = r2.case_data(spec, options)
    before = fx["init"]
    for s, rec in enumerate(fx["steps"], 1):
        g = seeded["grads"]
        want = g(s, [torch.from_numpy(a) for a in before]) if callable(g) else g[s - 1]
        for name in hdr.get("inputs", "").split():
            if [None if h is None else h.numpy().tobytes() for h in seeded[name][s - 1]] != \
                    [None if h is None else h.tobytes() for h in rec["inputs"][name]]:
                bad.append(f"step {s}: stored {name} is not the seeded one")
        if [None if x is None else x.numpy().tobytes() for x in want] != \
                [None if x is None else x.tobytes() for x in rec["grads"]]:
            bad.append(f"step {s}: stored gradients are not the seeded ones")
        before = rec["events"][-1][1] if rec["events"] else rec["params"]
    result = r2.run(spec, options, variant, data=data)
    if variant is not None and not result["calls"]:
        bad.append(f"the {variant} patch was never called")
    for s, (rec, (_, _, after, ev)) in enumerate(zip(fx["steps"], result["records"]), 1):
        for i, (got, want) in enumerate(zip(after, rec["params"])):
            if got.numpy().tobytes() != want.tobytes():
                bad.append(f"step {s} tensor {i}: max |diff| {np.abs(got.numpy() - want).max()}")
        if [k for k, _ in ev] != [k for k, _ in rec["events"]]:
            bad.append(f"step {s}: events {[k for k, _ in ev]} != {[k for k, _ in rec['events']]}")
            continue
        for (kernel, got_ps), (_, want_ps) in zip(ev, rec["events"]):
            for i, (got, want) in enumerate(zip(got_ps, want_ps)):
                if got.numpy().tobytes() != want.tobytes():
                    bad.append(f"step {s} after {kernel}() tensor {i}: "
                               f"max |diff| {np.abs(got.numpy() - want).max()}")
    got_finals = [(o, n, *r2.value_record(v)) for o, n, v in result["finals"]]
    want_finals = fx["finals"]
    if [(o, n, d, shape) for o, n, d, shape, _ in want_finals] != \
            [(o, n, d, parse_shape(s)) for o, n, d, s, _ in got_finals]:
        bad.append("final state names/dtypes/shapes differ")
    else:
        for (o, n, d, _, want), (_, _, _, _, got) in zip(want_finals, got_finals):
            if want.tobytes() != got:
                bad.append(f"final {o} {n} differs")
    absent = sum(g is None for rec in fx["steps"] for g in rec["grads"])
    for line in bad[:20]:
        print(f"{path}: {line}")
    extras = []
    if hdr.get("inputs"):
        extras.append(f"inputs {hdr['inputs']}")
    if hdr.get("events"):
        extras.append(f"{sum(len(rec['events']) for rec in fx['steps'])} events")
    print(f"{path}: {spec} {options!r}{' [' + variant + ']' if variant else ''} shapes "
          f"{hdr['shapes']} steps {len(fx['steps'])} absent-grads {absent} "
          f"finals {len(want_finals)}{' ' + ', '.join(extras) if extras else ''}: "
          f"{'OK (bitwise)' if not bad else 'MISMATCH'}", flush=True)
    return not bad


def check_messages(path):
    bad = n = 0
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith("#"):
                continue
            spec, cls, shape, options, etype, msg = line.rstrip("\n").split("\t")
            got = r2.message(spec, parse_shape(shape), options)
            n += 1
            if cls != r2.REFS[spec].name or got != (etype, msg):
                bad += 1
                print(f"{path}: {spec} {options!r}: reference says {got!r}, file says {(etype, msg)!r}")
    print(f"{path}: {n} messages: {'OK' if not bad else 'MISMATCH'}")
    return bad == 0


if __name__ == "__main__":
    r2.setup()
    ok = all([check_messages(p) if p.endswith(".txt") else replay(p) for p in sys.argv[1:]])
    sys.exit(0 if ok else 1)
