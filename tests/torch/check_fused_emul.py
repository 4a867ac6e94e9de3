#!/usr/bin/env python3
"""Check fused_emul.c (the written-out arithmetic of torch 2.13's fused CPU
kernels on bfloat16/float16) against torch itself, bit for bit.

Usage: python3 tests/torch/check_fused_emul.py [--quick] [FIXTURE.fix ...]

1. Random tensors, one step, many option sets, for Adam, AdamW and Adagrad on
   tensors whose length leaves a tail (vectorized loop + scalar tail, W=16), and
   the SGD scalar path on 15-element tensors (all tail). 2^20 elements per case
   (--quick: 2^16) so that the rare cases where the two paths' different FMA
   contractions round differently do occur. Also: the same data with a share of
   NaN, +-Inf, subnormal, +-0, huge values; and a negative check that the
   all-vector or all-scalar variant would NOT match (the check can tell them apart).
2. Every fused fixture given (default: tests/fixtures/mixed/*.fused*.fix) is
   replayed through the emulator with torch.optim's step logic written out here
   (state creation, step counts, found_inf skips, SGD's first step): parameters,
   gradients after the step, final state and step counts must equal the file.
Needs a C compiler (cc) with -mfma -mf16c. Exit status 1 on any mismatch.
"""

import ctypes
import glob
import itertools
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import record_fixtures as rf  # noqa: E402
import verify_mixed as vm  # noqa: E402

DT = {torch.bfloat16: 1, torch.float16: 2}
D = ctypes.c_double
FAIL = 0


def build():
    out = os.path.join(tempfile.mkdtemp(prefix="fused_emul"), "fused_emul.so")
    subprocess.run(["cc", "-O2", "-ffp-contract=off", "-mfma", "-mf16c", "-shared", "-fPIC",
                    "-o", out, os.path.join(HERE, "fused_emul.c"), "-lm"], check=True)
    return ctypes.CDLL(out)


L = None


def bits(t):
    return t.contiguous().view(torch.int16).numpy().view(np.uint16).copy()


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def scale_arg(scale):
    return (ctypes.c_float * 1)(scale) if scale is not None else None


SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-39, -3e-40, 1e-45, 3.4e38,
           -1e-8, 6e-8, 1e-5, 65504.0, 70000.0]


def rnd(n, dt, g, positive=False, special=False):
    x = torch.rand(n, generator=g) * 2 if positive else torch.randn(n, generator=g)
    if special:
        k = n // 8
        idx = torch.randint(0, n, (k,), generator=g)
        v = torch.tensor(SPECIAL)[torch.randint(0, len(SPECIAL), (k,), generator=g)]
        x[idx] = v.abs() if positive else v
    return x.to(dt)


def report(what, diffs):
    global FAIL
    bad = {k: v for k, v in diffs.items() if v}
    if bad:
        FAIL += 1
        print(f"MISMATCH {what}: " + ", ".join(f"{k}: {v} elements" for k, v in bad.items()))
    return not bad


def adam_case(dt, n, adamw, lr, betas, wd, eps, ams, maxim, scale, step, W=16, seed=0,
              special=False):
    g = torch.Generator().manual_seed(seed)
    p, gr = rnd(n, dt, g, special=special), rnd(n, dt, g, special=special)
    m = (rnd(n, dt, g, special=special).float() * 0.1).to(dt)
    v = (rnd(n, dt, g, True, special).float() * 0.01).to(dt)
    x = (rnd(n, dt, g, True, special).float() * 0.01).to(dt)
    arrs = [bits(a) for a in (p, gr, m, v, x)]
    P = p.clone()
    P.grad = gr.clone()
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    opt = cls([P], lr=lr, betas=betas, weight_decay=wd, eps=eps, amsgrad=bool(ams),
              maximize=bool(maxim), fused=True)
    st = {"step": torch.tensor(float(step - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    if ams:
        st["max_exp_avg_sq"] = x.clone()
    opt.state[P] = st
    if scale is not None:
        opt.grad_scale = torch.tensor(scale)
        opt.found_inf = torch.tensor(0.0)
    opt.step()
    L.emu_adam(DT[dt], adamw, ctypes.c_int64(n), *[ptr(a) for a in arrs], D(lr), D(betas[0]),
               D(betas[1]), D(wd), D(eps), ams, maxim, scale_arg(scale), D(float(step)), W)
    out = {"param": (arrs[0] != bits(P)).sum(), "grad": (arrs[1] != bits(P.grad)).sum(),
           "exp_avg": (arrs[2] != bits(st["exp_avg"])).sum(),
           "exp_avg_sq": (arrs[3] != bits(st["exp_avg_sq"])).sum()}
    if ams:
        out["max_exp_avg_sq"] = (arrs[4] != bits(st["max_exp_avg_sq"])).sum()
    return {k: int(v) for k, v in out.items()}


def adagrad_case(dt, n, lr, lr_decay, wd, eps, maxim, scale, step, W=16, seed=0, special=False):
    g = torch.Generator().manual_seed(seed)
    p, gr = rnd(n, dt, g, special=special), rnd(n, dt, g, special=special)
    s = (rnd(n, dt, g, True, special).float() * 0.5).to(dt)
    arrs = [bits(a) for a in (p, gr, s)]
    P = p.clone()
    P.grad = gr.clone()
    opt = torch.optim.Adagrad([P], lr=lr, lr_decay=lr_decay, weight_decay=wd, eps=eps,
                              maximize=bool(maxim), fused=True)
    opt.state[P]["step"] = torch.tensor(float(step - 1))
    opt.state[P]["sum"] = s.clone()
    if scale is not None:
        opt.grad_scale = torch.tensor(scale)
        opt.found_inf = torch.tensor(0.0)
    opt.step()
    L.emu_adagrad(DT[dt], ctypes.c_int64(n), *[ptr(a) for a in arrs], D(lr), D(lr_decay), D(wd),
                  D(eps), maxim, scale_arg(scale), D(float(step)), W)
    return {"param": int((arrs[0] != bits(P)).sum()), "grad": int((arrs[1] != bits(P.grad)).sum()),
            "sum": int((arrs[2] != bits(opt.state[P]["sum"])).sum())}


def sgd_case(dt, ntens, mom, lr, damp, wd, nest, maxim, scale, first, seed=0, k=15, W=0,
             special=False):
    """k-element tensors: k < 16 puts every element in the scalar tail."""
    g = torch.Generator().manual_seed(seed)
    n = ntens * k
    p, gr, b = rnd(n, dt, g, special=special), rnd(n, dt, g, special=special), rnd(n, dt, g, special=special)
    arrs = [bits(a) for a in (p, gr, b)]
    Ps = [p[i * k:(i + 1) * k].clone() for i in range(ntens)]
    for i, P in enumerate(Ps):
        P.grad = gr[i * k:(i + 1) * k].clone()
    opt = torch.optim.SGD(Ps, lr=lr, momentum=mom, dampening=damp, weight_decay=wd,
                          nesterov=bool(nest), maximize=bool(maxim), fused=True)
    if mom and not first:
        for i, P in enumerate(Ps):
            opt.state[P]["momentum_buffer"] = b[i * k:(i + 1) * k].clone()
    if scale is not None:
        opt.grad_scale = torch.tensor(scale)
        opt.found_inf = torch.tensor(0.0)
    opt.step()
    for i in range(ntens):  # the emulator runs tensor by tensor (W applies per tensor)
        sl = slice(i * k, (i + 1) * k)
        sub = [np.ascontiguousarray(a[sl]) for a in arrs]
        L.emu_sgd(DT[dt], ctypes.c_int64(k), *[ptr(a) for a in sub], D(wd), D(mom), D(lr), D(damp),
                  nest, maxim, first, scale_arg(scale), W)
        for a, s_ in zip(arrs, sub):
            a[sl] = s_
    out = {"param": int((arrs[0] != bits(torch.cat(Ps))).sum()),
           "grad": int((arrs[1] != bits(torch.cat([P.grad for P in Ps]))).sum())}
    if mom and W == 0:
        out["momentum_buffer"] = int((arrs[2] != bits(
            torch.cat([opt.state[P]["momentum_buffer"] for P in Ps]))).sum())
    return out


def random_checks(quick):
    global FAIL
    n = (1 << 16 if quick else 1 << 20) + 13
    cases = 0
    for dt in (torch.bfloat16, torch.float16):
        eps = 1e-8 if dt == torch.bfloat16 else 1e-4
        for adamw, ams, maxim, wd, scale, betas, lr, step in itertools.product(
                (0, 1), (0, 1), (0, 1), (0.0, 0.1), (None, 3000.5), ((0.9, 0.999), (0.4, 0.95)),
                (1e-3,), (1, 7)):
            if (ams + maxim + adamw + (wd > 0) + (scale is not None)) % 2:
                continue  # half of the product keeps it quick and still covers every flag
            cases += 1
            report(f"adam {dt} adamw={adamw} amsgrad={ams} maximize={maxim} wd={wd} "
                   f"scale={scale} betas={betas} step={step}",
                   adam_case(dt, n if cases % 4 == 0 else 4096 + 13, adamw, lr, betas, wd, eps,
                             ams, maxim, scale, step, seed=cases))
        for special in (False, True):
            for adamw, ams in itertools.product((0, 1), (0, 1)):
                cases += 1
                report(f"adam {dt} special={special} adamw={adamw} amsgrad={ams}",
                       adam_case(dt, n, adamw, 1e-3, (0.9, 0.999), 0.1, eps, ams, 1, 1024.0, 2,
                                 seed=cases, special=special))
            for lr, lr_decay, wd, e, maxim, scale in [(0.01, 0.0, 0.0, 1e-10, 0, None),
                                                      (0.1, 0.01, 0.1, 1e-3, 1, 1024.0),
                                                      (0.05, 0.0, 0.0, 1e-6, 0, 3000.5)]:
                cases += 1
                report(f"adagrad {dt} special={special} lr={lr} wd={wd} eps={e}",
                       adagrad_case(dt, n, lr, lr_decay, wd, e, maxim, scale, 3, seed=cases,
                                    special=special))
            for mom, damp, wd, nest, maxim, scale, first in [
                    (0.9, 0, 0.1, 0, 0, None, 0), (0.9, 0.1, 0.0, 0, 1, 1024.0, 0),
                    (0.9, 0, 0.05, 1, 0, None, 0), (0.0, 0, 0.1, 0, 0, 3000.5, 0),
                    (0.5, 0.3, 0.1, 0, 0, None, 1)]:
                cases += 1
                report(f"sgd-scalar {dt} special={special} momentum={mom} dampening={damp} "
                       f"wd={wd} nesterov={nest}",
                       sgd_case(dt, n // 15 // (4 if not quick else 1), mom, 0.05, damp, wd, nest,
                                maxim, scale, first, seed=cases, special=special))
        # torch's vectorized SGD path (pytorch#191763): parameters never move
        cases += 1
        report(f"sgd-vector-bug {dt}", sgd_case(dt, 64, 0.0, 0.05, 0, 0.1, 0, 0, 1024.0, 0,
                                                seed=cases, k=45, W=16))
    # The check can tell the paths apart: the all-scalar variant must mismatch.
    # (All-vector differs from torch only on the tails, at most 15 elements per
    # tensor: too few for Adam's rare contraction difference to show up.)
    for dt in (torch.bfloat16, torch.float16):
        for W in (0,):
            a = adam_case(dt, (1 << 20) + 13 if not quick else (1 << 18) + 13, 0, 1e-3, (0.9, 0.999),
                          0.0, 1e-8 if dt == torch.bfloat16 else 1e-4, 1, 0, None, 3, W=W, seed=5)
            b = adagrad_case(dt, 65536 + 13, 0.01, 0.0, 0.0, 1e-10, 0, None, 3, W=W, seed=6)
            print(f"  (negative check) {dt} all-scalar variant: adam differs in "
                  f"{sum(a.values())} values, adagrad in {sum(b.values())}")
            if not sum(a.values()) or not sum(b.values()):
                FAIL += 1
                print("MISMATCH: the check cannot tell the scalar path from the vector path")
    print(f"random checks: {cases} cases, {FAIL} mismatching")


# ---------------------------------------------------------------------------
# Fixture replay with the emulator
# ---------------------------------------------------------------------------

def u16(t):
    return bits(t)


def replay_fixture(path):
    blob, hdr, sizes, init, records, state = vm.read(path)
    spec, dtn, impl = hdr["spec"], hdr["dtype"], hdr["impl"]
    if not impl.startswith("fused"):
        return None
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtn]
    W = {"fused": 16, "fused-scalar": 0, "fused-vector": -1}[impl]
    h = rf.parse_options(hdr["options"])
    p = [u16(t) for t in init]
    nt = len(sizes)
    st = [None] * nt  # per tensor: dict of numpy arrays + step
    if spec == "adagrad":
        init_acc = h.get("initial_accumulator_value", 0.0)
        fill = torch.full((1,), init_acc).to(dt)
        st = [{"sum": np.full(n, u16(fill)[0], dtype=np.uint16), "step": 0.0} for n in sizes]
    bad = 0
    for s, r in enumerate(records, 1):
        present = r["present"]
        grads = [None if g is None else u16(g) for g in r["grads"]]
        skip = r["found_inf"] == 1.0
        sc = scale_arg(r["scale"]) if r["scale"] is not None else None
        if spec in ("adam", "adamw"):
            for i in range(nt):
                if present[i] and st[i] is None:
                    z = np.zeros(sizes[i], np.uint16)
                    st[i] = {"exp_avg": z.copy(), "exp_avg_sq": z.copy(), "step": 0.0}
                    if h.get("amsgrad"):
                        st[i]["max_exp_avg_sq"] = z.copy()
            if not skip:
                for i in range(nt):
                    if not present[i]:
                        continue
                    st[i]["step"] += 1
                    L.emu_adam(DT[dt], int(spec == "adamw"), ctypes.c_int64(sizes[i]), ptr(p[i]),
                               ptr(grads[i]), ptr(st[i]["exp_avg"]), ptr(st[i]["exp_avg_sq"]),
                               ptr(st[i].get("max_exp_avg_sq", st[i]["exp_avg"])),
                               D(h.get("lr", 1e-3)), D(h.get("betas", (0.9, 0.999))[0]),
                               D(h.get("betas", (0.9, 0.999))[1]),
                               D(h.get("weight_decay", 0.01 if spec == "adamw" else 0.0)),
                               D(h.get("eps", 1e-8)), int(bool(h.get("amsgrad"))),
                               int(bool(h.get("maximize"))), sc, D(st[i]["step"]), W)
        elif spec == "adagrad":
            if not skip:
                for i in range(nt):
                    if not present[i]:
                        continue
                    st[i]["step"] += 1
                    L.emu_adagrad(DT[dt], ctypes.c_int64(sizes[i]), ptr(p[i]), ptr(grads[i]),
                                  ptr(st[i]["sum"]), D(h.get("lr", 1e-2)), D(h.get("lr_decay", 0.0)),
                                  D(h.get("weight_decay", 0.0)), D(h.get("eps", 1e-10)),
                                  int(bool(h.get("maximize"))), sc, D(st[i]["step"]), W)
        elif spec == "sgd":
            mom = h.get("momentum", 0.0)
            first = mom != 0 and all(st[i] is None for i in range(nt) if present[i])
            if first:
                for i in range(nt):
                    if present[i]:
                        st[i] = {"momentum_buffer": np.zeros(sizes[i], np.uint16)}
            if not skip:
                for i in range(nt):
                    if not present[i]:
                        continue
                    buf = st[i]["momentum_buffer"] if mom else np.zeros(1, np.uint16)
                    L.emu_sgd(DT[dt], ctypes.c_int64(sizes[i]), ptr(p[i]), ptr(grads[i]), ptr(buf),
                              D(h.get("weight_decay", 0.0)), D(mom), D(h.get("lr", 1e-3)),
                              D(h.get("dampening", 0.0)), int(bool(h.get("nesterov"))),
                              int(bool(h.get("maximize"))), int(first), sc, W)
        for i in range(nt):
            if not np.array_equal(p[i], u16(r["params"][i])):
                bad += 1
                print(f"{path}: step {s} tensor {i}: parameters differ in "
                      f"{int((p[i] != u16(r['params'][i])).sum())} elements")
            if r["grads_after"] is not None and present[i] and \
                    not np.array_equal(grads[i], u16(r["grads_after"][i])):
                bad += 1
                print(f"{path}: step {s} tensor {i}: gradients after the step differ")
    for name, want in state.items():
        for i in range(nt):
            if name == "step":
                got = (st[i] or {}).get("step", 0.0)
                if got != want[i]:
                    bad += 1
                    print(f"{path}: tensor {i}: step {got} != {want[i]}")
            else:
                got = (st[i] or {}).get(name, np.zeros(sizes[i], np.uint16))
                if not np.array_equal(got, u16(want[i])):
                    bad += 1
                    print(f"{path}: tensor {i}: final {name} differs")
    print(f"{path}: emulator {'OK (bitwise)' if not bad else 'MISMATCH'}")
    return bad == 0


def main(argv):
    global L, FAIL
    quick = "--quick" in argv
    files = [a for a in argv[1:] if a != "--quick"]
    torch.set_num_threads(1)
    L = build()
    random_checks(quick)
    if not files:
        files = sorted(glob.glob(os.path.join(HERE, "..", "fixtures", "mixed", "*.fused*.fix")))
    for f in files:
        if replay_fixture(f) is False:
            FAIL += 1
    print("ALL OK" if not FAIL else f"{FAIL} FAILURES")
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
