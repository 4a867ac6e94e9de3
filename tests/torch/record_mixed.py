#!/usr/bin/env python3
"""Record torch 2.13 optimizer runs on bfloat16 / float16 parameters as fixtures.

Usage: python3 tests/torch/record_mixed.py [outdir]
(default outdir: tests/fixtures/mixed under the repository root).

Three ways of running torch are recorded (header line `impl`):

  fused         torch's fused=True CPU kernel (Adam, AdamW, SGD, Adagrad), on the
                tensors as they are: the first numel - numel % 16 elements of each
                tensor go through the kernel's vectorized loop, the rest through its
                scalar tail loop (ATen's AVX2 build, which AVX-512 machines run too).
  fused-scalar  the same kernel, but every element is its own 1-element tensor, so
                every element goes through the scalar tail loop.
  fused-vector  the same kernel on tensors padded to a multiple of 16 elements, so
                every element goes through the vectorized loop (padding discarded).
  forloop-f32   the other optimizers (and, for reference, the four above): torch's
                default single-tensor code run on float32 copies of the low-precision
                parameters, gradients widened exactly, and after every step the
                parameters rounded back to the low-precision type (round to nearest
                even) and widened again, so the optimizer never sees an unrounded
                parameter. State stays float32 (state-dtype float32) or is rounded
                the same way after every step (state-dtype bfloat16/float16).

See tests/fixtures/mixed/README.md for the format, the cases, and why the fused
kernels need three variants (docs/notes/mixed-precision-torch.md has the arithmetic).
"""

import collections
import contextlib
import os
import struct
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import record_fixtures as rf  # noqa: E402  (sqrt patch, option parsing, probes)

TORCH_VERSION_REQUIRED = "2.13.0"
SIZES = [45, 17, 1, 7]  # 2 vector blocks + 13-element tail, 1 block + 1, tail only
STEPS = 20
PARAM_SEED = 4321
GRAD_SEED = 8765
ZERO_FRACTION = 0.05
ABSENT = {(1, 1), (2, 3), (2, 4)}  # (tensor, step): p.grad is None
# torch 2.13's fused SGD with momentum raises TypeError when a parameter gets its
# first gradient after the others have momentum buffers ("expected Tensor as element
# 1 in argument 2, but got NoneType"), so its cases skip the (1, 1) absence.
ABSENT_LATE_ONLY = {(2, 3), (2, 4)}
VEC = 16  # elements per vectorized iteration for 16-bit types in ATen's AVX2 kernels

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
NP_DTYPE = {"bfloat16": "<u2", "float16": "<u2", "float32": "<f4"}
FUSED = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
         "adagrad": torch.optim.Adagrad}

# GradScaler settings of the amp cases. growth_interval=5 makes the scale grow
# within 20 steps; torch's default is 2000.
AMP_DEFAULT = dict(init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=5)
AMP_ODD = dict(init_scale=3000.5, growth_factor=2.0, backoff_factor=0.5, growth_interval=5)
# Non-finite values written into the scaled gradients of the bfloat16 amp cases
# (float16 with init_scale 65536 overflows by itself): (step, tensor, element, value).
AMP_INJECT = [(5, 0, 3, float("inf")), (11, 3, 6, float("nan")), (12, 1, 16, -float("inf"))]

# (spec, options, tag, impls, dtypes, amp). amp: None or a GradScaler dict.
_BF_F16 = ("bfloat16", "float16")
FUSED_CASES = [
    ("adam", "", "default", ("fused",), _BF_F16, None),
    ("adam", "lr=0.01 weight_decay=0.1", "wd", ("fused",), _BF_F16, None),
    ("adam", "lr=0.01 amsgrad=true", "amsgrad", ("fused",), _BF_F16, None),
    ("adam", "lr=0.02 betas=0.4,0.9", "beta1_small", ("fused",), _BF_F16, None),
    ("adam", "lr=0.005 betas=0.8,0.99 eps=1e-6 weight_decay=0.05 amsgrad=true maximize=true",
     "all", ("fused",), _BF_F16, None),
    ("adam", "lr=0.01", "amp", ("fused",), _BF_F16, AMP_DEFAULT),
    ("adam", "lr=0.01 amsgrad=true weight_decay=0.1", "amp_odd", ("fused",), _BF_F16, AMP_ODD),
    ("adamw", "", "default", ("fused",), _BF_F16, None),
    ("adamw", "lr=0.01 weight_decay=0.1", "wd", ("fused",), _BF_F16, None),
    ("adamw", "lr=0.01 weight_decay=0.1 amsgrad=true", "amsgrad_wd", ("fused",), _BF_F16, None),
    ("adamw", "lr=0.005 betas=0.8,0.99 eps=1e-6 weight_decay=0.05 amsgrad=true maximize=true",
     "all", ("fused",), _BF_F16, None),
    ("adamw", "lr=0.01 weight_decay=0.1", "amp", ("fused",), _BF_F16, AMP_DEFAULT),
    ("sgd", "lr=0.01", "plain", ("fused", "fused-scalar"), _BF_F16, None),
    ("sgd", "lr=0.01 momentum=0.9", "momentum", ("fused", "fused-scalar"), _BF_F16, None),
    ("sgd", "lr=0.01 momentum=0.9 nesterov=true", "nesterov", ("fused", "fused-scalar"), _BF_F16, None),
    ("sgd", "lr=0.1 momentum=0.5 dampening=0.5 weight_decay=0.01", "mixed",
     ("fused", "fused-scalar"), _BF_F16, None),
    ("sgd", "lr=0.01 momentum=0.9 weight_decay=0.1 maximize=true", "momentum_wd_maximize",
     ("fused", "fused-scalar"), _BF_F16, None),
    # init_scale 1024: no overflow at step 1 (a found_inf step 1 leaves fused SGD's
    # momentum buffers uninitialised, torch.empty_like, and the next step reads them).
    ("sgd", "lr=0.01 momentum=0.9", "amp", ("fused", "fused-scalar"), _BF_F16,
     dict(AMP_DEFAULT, init_scale=1024.0)),
    ("sgd", "lr=0.01 weight_decay=0.1", "amp_odd", ("fused", "fused-scalar"), _BF_F16, AMP_ODD),
    ("adagrad", "", "default", ("fused", "fused-scalar", "fused-vector"), _BF_F16, None),
    ("adagrad", "lr=0.1 weight_decay=0.1", "lr_wd", ("fused", "fused-scalar", "fused-vector"), _BF_F16, None),
    ("adagrad", "lr_decay=0.01 initial_accumulator_value=0.1", "decay_init",
     ("fused", "fused-scalar", "fused-vector"), _BF_F16, None),
    ("adagrad", "eps=1e-3 weight_decay=0.1 maximize=true", "eps_wd_maximize",
     ("fused", "fused-scalar", "fused-vector"), _BF_F16, None),
    ("adagrad", "lr=0.05", "amp", ("fused", "fused-scalar", "fused-vector"), _BF_F16, AMP_DEFAULT),
]

# forloop-f32: (spec, options, tag, dtypes, state dtypes)
_BF = ("bfloat16",)
_S32 = ("float32",)
_S_BOTH = ("float32", "lowp")  # lowp: state rounded to the parameter dtype after each step
FORLOOP_CASES = [
    ("adam", "lr=0.01", "lr", _BF_F16, _S_BOTH),
    ("adamw", "lr=0.01 weight_decay=0.1", "wd", _BF_F16, _S_BOTH),
    ("sgd", "lr=0.01 momentum=0.9", "momentum", _BF_F16, _S_BOTH),
    ("adagrad", "lr=0.1", "lr", _BF_F16, _S_BOTH),
    ("adadelta", "", "default", _BF_F16, _S_BOTH),
    ("adadelta", "lr=0.5 weight_decay=0.1 maximize=true", "lr_wd_maximize", _BF, _S32),
    ("adamax", "lr=0.02", "lr", _BF_F16, _S_BOTH),
    ("adamax", "weight_decay=0.1 maximize=true", "wd_maximize", _BF, _S32),
    ("asgd", "lr=0.05", "lr", _BF_F16, _S_BOTH),
    ("asgd", "lambd=1e-2 alpha=0.5 t0=5", "lambd_alpha_t0", _BF, _S32),
    ("nadam", "lr=0.02", "lr", _BF_F16, _S_BOTH),
    ("nadam", "decoupled_weight_decay=true weight_decay=0.1 maximize=true", "decoupled_wd_maximize",
     _BF, _S32),
    ("radam", "lr=0.01", "lr", _BF_F16, _S_BOTH),
    ("radam", "lr=0.05 decoupled_weight_decay=true weight_decay=0.1 maximize=true",
     "decoupled_wd_maximize", _BF, _S32),
    ("rmsprop", "lr=0.01", "lr", _BF_F16, _S_BOTH),
    ("rmsprop", "centered=true momentum=0.5 weight_decay=0.1 maximize=true",
     "centered_momentum_wd_maximize", _BF, _S32),
    ("rprop", "", "default", _BF_F16, _S_BOTH),
    ("rprop", "step_sizes=1e-3,0.02", "clamp", _BF, _S32),
]

IMPL_TAG = {"fused": "fused", "fused-scalar": "fused_scalar", "fused-vector": "fused_vector",
            "forloop-f32": "forloop"}
DT_TAG = {"bfloat16": "bf16", "float16": "f16"}


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

def to_bytes(tensors, dtype_name):
    """Little-endian element data of tensors (all in dtype_name), concatenated."""
    if not tensors:
        return b""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    assert flat.dtype == DTYPES[dtype_name], (flat.dtype, dtype_name)
    if dtype_name == "float32":
        return flat.numpy().astype("<f4", copy=False).tobytes()
    return flat.view(torch.int16).numpy().view("<u2").tobytes()


def from_bytes(buf, dtype_name, n):
    a = np.frombuffer(buf, dtype=NP_DTYPE[dtype_name], count=n).copy()
    if dtype_name == "float32":
        return torch.from_numpy(a)
    return torch.from_numpy(a.view(np.int16)).view(DTYPES[dtype_name])


def esize(dtype_name):
    return 4 if dtype_name == "float32" else 2


def amp_text(amp):
    return " ".join(f"{k}={amp[k]!r}" for k in ("init_scale", "growth_factor", "backoff_factor",
                                                 "growth_interval"))


def parse_amp(text):
    out = {}
    for item in text.split():
        k, _, v = item.partition("=")
        out[k] = int(v) if k == "growth_interval" else float(v)
    return out


def header(spec, options, dtype_name, impl, state_dtype, amp, sizes, trailer, note=""):
    lines = [
        "jopt-fixture 1",
        f"spec {spec}",
        f"options {options}",
        f"torch {torch.__version__}{note}",
        f"dtype {dtype_name}",
        f"impl {impl}",
        f"state-dtype {state_dtype}",
    ]
    if amp is not None:
        lines.append(f"amp {amp_text(amp)}")
    lines += [
        f"cpu-capability {torch.backends.cpu.get_cpu_capability()}",
        "sizes " + " ".join(str(n) for n in sizes),
        f"steps {STEPS}",
        "trailer" + "".join(" " + t for t in trailer),
        "end",
    ]
    return "".join(line + "\n" for line in lines).encode("ascii")


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def make_inputs(dtype_name, absent):
    """Initial parameters (in dtype_name) and, per step, the float32 gradients (None
    when absent): record_one() rounds them to dtype_name, or amp_inputs() scales
    them first."""
    dt = DTYPES[dtype_name]
    g = torch.Generator().manual_seed(PARAM_SEED)
    params = [torch.randn(n, generator=g).to(dt) for n in SIZES]
    g = torch.Generator().manual_seed(GRAD_SEED)
    grads = []
    for s in range(1, STEPS + 1):
        row = []
        for i, n in enumerate(SIZES):
            x = torch.randn(n, generator=g)
            x[torch.rand(n, generator=g) < ZERO_FRACTION] = 0.0
            row.append(None if (i, s) in absent else x)
        grads.append(row)
    return params, grads


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------

class Layout:
    """How the recorded tensors map onto the tensors torch steps: identity (fused,
    forloop), one tensor per element (fused-scalar), or padded (fused-vector)."""

    def __init__(self, impl, sizes):
        self.impl, self.sizes = impl, sizes

    def split(self, tensors, fill=0.0):
        """Recorded tensors (None allowed) -> the list torch sees."""
        out = []
        for t, n in zip(tensors, self.sizes):
            if self.impl == "fused-scalar":
                out += [None] * n if t is None else [t[k:k + 1].clone() for k in range(n)]
            elif self.impl == "fused-vector":
                if t is None:
                    out.append(None)
                else:
                    pad = -n % VEC
                    out.append(torch.cat([t, torch.full((pad,), fill, dtype=t.dtype)]))
            else:
                out.append(None if t is None else t.clone())
        return out

    def join(self, tensors):
        """The list torch sees (all present) -> recorded tensors."""
        out, k = [], 0
        for n in self.sizes:
            if self.impl == "fused-scalar":
                out.append(torch.cat([t.detach().reshape(-1) for t in tensors[k:k + n]]))
                k += n
            else:
                out.append(tensors[k].detach().reshape(-1)[:n])
                k += 1
        return out


def state_arrays(opt, params, names, layout, dtype):
    """Recorded per-element state arrays (zeros where a tensor has no state)."""
    out = []
    for name in names:
        ts = []
        for p in params:
            st = opt.state.get(p, {})
            t = st.get(name)
            ts.append(t.detach().reshape(-1).clone() if t is not None
                      else torch.zeros(p.numel(), dtype=dtype))
        out.append(layout.join(ts))
    return out


def state_names(opt, params):
    names = set()
    for p in params:
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v) and v.shape == p.shape and k != "step":
                names.add(k)
    return sorted(names)


def run(spec, options, dtype_name, impl, state_lp, amp, init, grads, note=""):
    """One recording: returns the whole fixture as bytes. Deterministic in its
    arguments, so verify_mixed.py regenerates a file from its own inputs.

    init: recorded initial parameters (dtype_name); grads[s][i]: the gradient fed at
    step s+1 (dtype_name, scaled already in amp cases) or None."""
    dt = DTYPES[dtype_name]
    kwargs = rf.parse_options(options)
    layout = Layout(impl, SIZES)
    forloop = impl == "forloop-f32"
    work_dt = torch.float32 if forloop else dt
    params = [p.to(work_dt) for p in layout.split([t.clone() for t in init])]
    params = [p.requires_grad_(True) for p in params]
    cls = rf.OPTIMIZERS[spec]
    if forloop:
        opt = cls(params, **kwargs)
        assert not opt.defaults.get("fused") and not opt.defaults.get("foreach")
    else:
        opt = cls(params, fused=True, **kwargs)
    captured = []
    if amp is not None:
        scaler = torch.amp.GradScaler("cpu", **amp)
        scaler.scale(torch.ones(()))  # lazily creates the scale tensor
        orig_step = opt.step

        def capturing_step(*a, **kw):
            gs, fi = getattr(opt, "grad_scale", None), getattr(opt, "found_inf", None)
            assert gs is not None and fi is not None, "GradScaler passed no grad_scale/found_inf"
            captured.append((float(gs), float(fi)))
            return orig_step(*a, **kw)

        opt.step = capturing_step

    state_dtype = (dtype_name if state_lp else "float32") if forloop else dtype_name
    out = [b"", to_bytes(init, dtype_name)]
    rf.IMPL_CALLS.clear()
    for s, row in enumerate(grads, 1):
        present = [g is not None for g in row]
        seen = layout.split(row)
        for p, g in zip(params, seen):
            p.grad = None if g is None else g.to(work_dt)
        if amp is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        if forloop:
            with torch.no_grad():
                for p in params:
                    p.copy_(p.to(dt).to(torch.float32))
                if state_lp:
                    for p in params:
                        for v in opt.state.get(p, {}).values():
                            if torch.is_tensor(v) and v.shape == p.shape and v.is_floating_point():
                                v.copy_(v.to(dt).to(torch.float32))
        out.append(bytes(1 if x else 0 for x in present))
        if amp is not None:
            gs, fi = captured[-1]
            out.append(struct.pack("<ff", gs, fi))
        out.append(to_bytes([g for g in row if g is not None], dtype_name))
        now = layout.join(params)
        out.append(to_bytes([p.to(dt) for p in now], dtype_name))
        if amp is not None:
            after = layout.join([p.grad if p.grad is not None else torch.zeros_like(p)
                                 for p in params])
            out.append(to_bytes([a.to(dt) for a, x in zip(after, present) if x], dtype_name))
    # trailer: final per-element state, then per-tensor step counts
    names = state_names(opt, params)
    if spec == "sgd" and impl == "fused":
        names = []  # the vectorized loop fills momentum_buffer with garbage (see README)
    st = state_arrays(opt, params, names, layout, work_dt)
    for arrs in st:
        out.append(to_bytes([a.to(DTYPES[state_dtype]) for a in arrs], state_dtype))
    has_step = any("step" in opt.state.get(p, {}) for p in params)
    if has_step:
        steps = []
        for t_index in range(len(SIZES)):
            first = params[sum(SIZES[:t_index])] if impl == "fused-scalar" else params[t_index]
            stt = opt.state.get(first, {}).get("step")
            steps.append(float(stt) if stt is not None else 0.0)
        out.append(struct.pack(f"<{len(steps)}f", *steps))
    trailer = names + (["step"] if has_step else [])
    out[0] = header(spec, options, dtype_name, impl, state_dtype, amp, SIZES, trailer, note)
    calls = dict(rf.IMPL_CALLS)
    kind = "forloop" if forloop else "fused"
    if set(calls) != {kind}:
        raise RuntimeError(f"{spec} {impl}: expected only {kind} calls, got {calls}")
    return b"".join(out), captured


def amp_inputs(spec, options, dtype_name, impl, amp, init, grads):
    """amp cases: the gradients fed are (unscaled gradient x current scale) rounded to
    the dtype, as a backward pass of scaled loss would give; the scale is the one
    GradScaler holds at that step, so it is found by stepping a scaler alongside.
    Returns the scaled gradients (what the fixture stores) and the scales."""
    dt = DTYPES[dtype_name]
    scaler = torch.amp.GradScaler("cpu", **amp)
    scaler.scale(torch.ones(()))
    out, scales = [], []
    for s, row in enumerate(grads, 1):
        scale = float(scaler.get_scale())
        srow = [None if g is None else (g.float() * scale).to(dt) for g in row]
        for (st, ti, el, val) in AMP_INJECT:
            if st == s and srow[ti] is not None:
                srow[ti][el] = val
        out.append(srow)
        scales.append(scale)
        found = any(not torch.isfinite(g.float()).all() for g in srow if g is not None)
        # the same update rule GradScaler.update applies (torch._amp_update_scale_)
        torch._amp_update_scale_(scaler._scale, scaler._growth_tracker,
                                 torch.full((), float(found)), amp["growth_factor"],
                                 amp["backoff_factor"], amp["growth_interval"])
    return out, scales


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def all_runs():
    """(file name, spec, options, dtype, impl, state_lp, amp, sqrt_patched)"""
    runs = []
    for spec, options, tag, impls, dtypes, amp in FUSED_CASES:
        for dtn in dtypes:
            for impl in impls:
                runs.append((f"{spec}_{tag}.{DT_TAG[dtn]}.{IMPL_TAG[impl]}.fix",
                             spec, options, dtn, impl, False, amp, False))
    for spec, options, tag, dtypes, sdts in FORLOOP_CASES:
        for dtn in dtypes:
            for sdt in sdts:
                lp = sdt == "lowp"
                stag = ".lpstate" if lp else ""
                for patched in ((False, True) if spec in rf.IEEE_SQRT_SPECS else (False,)):
                    sq = ".ieee-sqrt" if patched else ""
                    runs.append((f"{spec}_{tag}.{DT_TAG[dtn]}.forloop{stag}{sq}.fix",
                                 spec, options, dtn, "forloop-f32", lp, None, patched))
    return runs


def record_one(spec, options, dtn, impl, lp, amp, patched):
    absent = ABSENT_LATE_ONLY if (spec == "sgd" and impl != "forloop-f32") else ABSENT
    init, grads = make_inputs(dtn, absent)
    dt = DTYPES[dtn]
    scales = None
    if amp is not None:
        grads, scales = amp_inputs(spec, options, dtn, impl, amp, init, grads)
    else:
        grads = [[None if g is None else g.to(dt) for g in row] for row in grads]
    note = rf.IEEE_SQRT_NOTE if patched else ""
    with rf.ieee_sqrt() if patched else contextlib.nullcontext():
        data, captured = run(spec, options, dtn, impl, lp, amp, init, grads, note)
    if scales is not None and [c[0] for c in captured] != scales:
        raise RuntimeError(f"GradScaler's scales {captured} differ from the ones the "
                           f"gradients were scaled by {scales}")
    return data


def main(argv):
    if len(argv) > 2:
        sys.exit("usage: record_mixed.py [outdir]")
    repo = os.path.dirname(os.path.dirname(HERE))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo, "tests", "fixtures", "mixed")
    if torch.__version__.split("+")[0] != TORCH_VERSION_REQUIRED:
        sys.exit(f"need torch {TORCH_VERSION_REQUIRED}, have {torch.__version__}")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        sys.exit("record on an x86 CPU with ATen capability AVX2 or AVX512 "
                 "(both run the AVX2 build of the fused kernels)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rf._install_impl_probes()
    rf.install_sqrt_probes()
    os.makedirs(outdir, exist_ok=True)
    total = 0
    plain = {}
    for name, spec, options, dtn, impl, lp, amp, patched in all_runs():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = record_one(spec, options, dtn, impl, lp, amp, patched)
        for w in caught:
            print(f"warning ({name}): {w.category.__name__}: {w.message}", file=sys.stderr)
        body = data[data.index(b"\nend\n") + 5:]
        extra = ""
        if patched:
            twin = plain[name.replace(".ieee-sqrt", "")]
            extra = " (equal to the unpatched file)" if twin == body else " (differs from the unpatched file)"
        else:
            plain[name] = body
        write_atomic(os.path.join(outdir, name), data)
        total += len(data)
        print(f"wrote {name} ({len(data)} bytes){extra}")
    print(f"{len(plain)} plain + {len(all_runs()) - len(plain)} ieee-sqrt files, {total} bytes")


if __name__ == "__main__":
    main(sys.argv)
