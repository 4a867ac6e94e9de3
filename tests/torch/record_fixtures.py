#!/usr/bin/env python3
"""Record torch.optim trajectories as binary fixtures for jopt's C tests.

Usage: python3 tests/torch/record_fixtures.py [outdir]
(default outdir: tests/fixtures under the repository root).

Every fixture uses the same parameters and gradients (fixed seeds), so the
files differ only in the optimizer and its options. The format is described in
tests/fixtures/README.md and in write_fixture() below.
"""

import collections
import os
import struct
import sys
import warnings

import contextlib

import numpy as np
import torch
import torch.optim

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

TORCH_VERSION_REQUIRED = "2.13.0"

# Odd lengths leave scalar tails after vector loops. The first optimizers'
# fixtures use SIZES; later ones use SMALL_SIZES to keep the repository small.
SIZES = [1000, 37, 1, 515]
SMALL_SIZES = [300, 37, 1, 129]
STEPS = 20
PARAM_SEED = 1234
GRAD_SEED = 5678
ZERO_FRACTION = 0.05  # share of gradient elements forced to exactly 0.0

# (tensor index, 1-based step) pairs whose gradient is absent (p.grad = None).
ABSENT = {(2, 3), (2, 4), (1, 1)}

# jopt spec name -> torch optimizer class. Option names are torch's kwargs.
OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adadelta": torch.optim.Adadelta,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
    "rmsprop": torch.optim.RMSprop,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
}

# Tensor sizes per spec (default SIZES): see case_sizes().
SPEC_SIZES = {
    spec: SMALL_SIZES
    for spec in ("adadelta", "adagrad", "adamax", "asgd", "rprop", "rmsprop", "nadam", "radam")
}

# (spec, options string, file tag[, sizes]). File name: <spec>_<tag>.fix
# Without an explicit sizes list a case uses SPEC_SIZES.get(spec, SIZES).
CASES = [
    ("sgd", "lr=0.01", "plain"),
    ("sgd", "lr=0.01 momentum=0.9", "momentum"),
    ("sgd", "lr=0.01 momentum=0.9 dampening=0.1", "dampening"),
    ("sgd", "lr=0.01 momentum=0.9 nesterov=true", "nesterov"),
    ("sgd", "lr=0.01 weight_decay=0.1", "wd"),
    ("sgd", "lr=0.01 momentum=0.9 weight_decay=0.1 maximize=true", "momentum_wd_maximize"),
    ("sgd", "lr=0.1 momentum=0.5 dampening=0.5 weight_decay=0.01", "mixed"),
    ("adam", "", "default"),
    ("adam", "lr=0.01", "lr"),
    ("adam", "lr=0.01 weight_decay=0.1", "wd"),
    ("adam", "lr=0.01 amsgrad=true", "amsgrad"),
    ("adam", "lr=0.01 maximize=true", "maximize"),
    ("adam", "lr=0.005 betas=0.8,0.99 eps=1e-6 weight_decay=0.05 amsgrad=true maximize=true", "all"),
    ("adamw", "", "default"),
    ("adamw", "lr=0.01 weight_decay=0.1", "wd"),
    ("adamw", "lr=0.01 amsgrad=true", "amsgrad"),
    ("adamw", "lr=0.01 maximize=true weight_decay=0", "maximize_nowd"),
    ("adamw", "lr=0.005 betas=0.8,0.99 eps=1e-6 weight_decay=0.05 amsgrad=true maximize=true", "all"),
    # Adadelta: lr=1.0 default; no step dependency.
    ("adadelta", "", "default"),
    ("adadelta", "lr=0.1", "lr"),
    ("adadelta", "weight_decay=0.1", "wd"),
    ("adadelta", "maximize=true", "maximize"),
    ("adadelta", "rho=0.5 eps=1e-4", "rho_eps"),
    ("adadelta", "lr=0.5 weight_decay=0.1 maximize=true", "lr_wd_maximize"),
    # Adagrad: state created in __init__; clr = lr / (1 + (t-1) lr_decay).
    ("adagrad", "", "default"),
    ("adagrad", "lr=0.1", "lr"),
    ("adagrad", "lr_decay=0.01", "lr_decay"),
    ("adagrad", "initial_accumulator_value=0.5", "init_acc"),
    ("adagrad", "weight_decay=0.1", "wd"),
    ("adagrad", "eps=1e-3 weight_decay=0.1 maximize=true", "eps_wd_maximize"),
    # Adamax: eps inside the max, bias correction on the first moment only.
    ("adamax", "", "default"),
    ("adamax", "lr=0.02", "lr"),
    ("adamax", "lr=0.02 weight_decay=0.1", "wd"),
    ("adamax", "lr=0.02 maximize=true", "maximize"),
    ("adamax", "betas=0.8,0.99 eps=1e-4", "betas_eps"),
    ("adamax", "weight_decay=0.1 maximize=true", "wd_maximize"),
    # ASGD: the default t0=1e6 never averages in 20 steps; with t0=5 (3) mu
    # drops below 1 from step 8 (6) on. ax is state, not a parameter: the
    # .ax.fix companions (ASGD_AX_TAGS) record it.
    ("asgd", "", "default"),
    ("asgd", "lr=0.05", "lr"),
    ("asgd", "lr=0.05 weight_decay=0.1", "wd"),
    ("asgd", "maximize=true", "maximize"),
    ("asgd", "lambd=1e-2 alpha=0.5 t0=5", "lambd_alpha_t0"),
    ("asgd", "weight_decay=0.1 maximize=true t0=3", "wd_maximize_t0"),
    # Rprop: no weight_decay. step_sizes=1e-3,0.02 hits both clamps.
    ("rprop", "", "default"),
    ("rprop", "lr=0.05", "lr"),
    ("rprop", "lr=0.05 maximize=true", "lr_maximize"),
    ("rprop", "etas=0.3,1.5 step_sizes=1e-4,0.1", "etas_step_sizes"),
    ("rprop", "step_sizes=1e-3,0.02", "clamp"),
    # RMSprop.
    ("rmsprop", "", "default"),
    ("rmsprop", "lr=0.05 weight_decay=0.1", "lr_wd"),
    ("rmsprop", "centered=true", "centered"),
    ("rmsprop", "momentum=0.9", "momentum"),
    ("rmsprop", "centered=true momentum=0.5 weight_decay=0.1 maximize=true", "centered_momentum_wd_maximize"),
    ("rmsprop", "alpha=0.9 eps=1e-4", "alpha_eps"),
    # NAdam.
    ("nadam", "", "default"),
    ("nadam", "lr=0.02", "lr"),
    ("nadam", "momentum_decay=1e-2", "momentum_decay"),
    ("nadam", "weight_decay=0.1", "wd"),
    ("nadam", "decoupled_weight_decay=true weight_decay=0.1 maximize=true", "decoupled_wd_maximize"),
    ("nadam", "lr=0.02 betas=0.8,0.99 eps=1e-4", "betas_eps"),
    # RAdam: with beta2=0.999 (also 0.99, 0.9) the rectified branch
    # (rho_t > 5) starts at t=6; with beta2=0.7 (rho_inf = 5.67) at t=10.
    # lr >= 0.01 so that sqrt's last bit shows in the
    # parameters (radam_default.ieee-sqrt.fix equals radam_default.fix).
    ("radam", "", "default"),
    ("radam", "lr=0.01", "lr"),
    ("radam", "lr=0.01 betas=0.8,0.7", "betas"),
    ("radam", "weight_decay=0.1", "wd"),
    ("radam", "lr=0.05 decoupled_weight_decay=true weight_decay=0.1 maximize=true",
     "decoupled_wd_maximize"),
    ("radam", "lr=0.05 eps=1e-4", "lr_eps"),
]

# ASGD cases that also get <spec>_<tag>.ax.fix: the same run, but the vectors
# stored after each step are state["ax"] (header line "record ax"; the
# initial vector is still the parameters). Only the t0 cases average.
ASGD_AX_TAGS = {"lambd_alpha_t0", "wd_maximize_t0"}

# Specs whose single-tensor kernels take a tensor sqrt. On the CPU torch's
# float sqrt goes through a vector math library that is not correctly rounded
# (about 15% of results are 1 ulp off IEEE sqrt), which no IEEE kernel can
# mirror. For these a second fixture, <spec>_<tag>.ieee-sqrt.fix, is recorded
# with the sqrt entry points (SQRT_ENTRY_POINTS) replaced by correctly rounded
# ones: everything else is torch's own code, so jopt must match it bit for bit
# (docs/fidelity.md). main() checks this set against the sqrt calls it counts.
#   adam/adamw: exp_avg_sq.sqrt() (or max_exp_avg_sq.sqrt())
#   adadelta:   square_avg.add(eps).sqrt_(), acc_delta.add(eps).sqrt_()
#   adagrad:    state_sum.sqrt()
#   rmsprop:    square_avg.sqrt(), centered: square_avg.addcmul(..).sqrt_()
#   nadam:      exp_avg_sq.div(bias_correction2).sqrt()
#   radam:      exp_avg_sq.sqrt() (only once rho_t > 5; the rectification
#               term is Python float ** 0.5, not a tensor op)
# adamax, asgd and rprop take no tensor sqrt.
IEEE_SQRT_SPECS = {"adam", "adamw", "adadelta", "adagrad", "rmsprop", "nadam", "radam"}

# Header note on the torch line of .ieee-sqrt files (verify_fixtures.py keys
# on it). Kept as first written so the Adam/AdamW files stay unchanged; it
# covers every entry point in SQRT_ENTRY_POINTS.
IEEE_SQRT_NOTE = " (Tensor.sqrt correctly rounded)"

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


# Every way a float tensor sqrt can be reached from the optimizers' Python
# code: (owner, attribute name). The single-tensor kernels use the first two;
# torch.sqrt is patched too so a rewrite to it cannot slip through.
SQRT_ENTRY_POINTS = [(torch.Tensor, "sqrt"), (torch.Tensor, "sqrt_"), (torch, "sqrt")]

# Other routes to a tensor sqrt that the patch does not cover. None of them
# is on the single-tensor path of any recorded optimizer (the foreach kernels
# use _foreach_sqrt); install_sqrt_probes() makes them raise, so a torch
# change that starts using one fails the recording instead of silently
# leaving torch's sqrt in an .ieee-sqrt file.
SQRT_FORBIDDEN = [
    (torch.Tensor, "rsqrt"), (torch.Tensor, "rsqrt_"), (torch, "rsqrt"),
    (torch, "_foreach_sqrt"), (torch, "_foreach_sqrt_"),
    (torch, "_foreach_rsqrt"), (torch, "_foreach_rsqrt_"),
]
# pow with exponent +-0.5 also reaches ATen's sqrt kernel.
POW_ENTRY_POINTS = [(torch.Tensor, "pow"), (torch.Tensor, "pow_"), (torch.Tensor, "__pow__"),
                    (torch.Tensor, "__ipow__"), (torch, "pow")]

SQRT_CALLS = collections.Counter()  # entry name -> calls (patched or not)


def _entry_name(owner, name):
    return ("Tensor." if owner is torch.Tensor else "torch.") + name


def _ieee_sqrt_tensor(t):
    """Correctly rounded float32 sqrt of t (numpy's sqrt is IEEE)."""
    if t.dtype != torch.float32:
        raise RuntimeError(f"ieee sqrt: unexpected dtype {t.dtype}")
    return torch.from_numpy(np.asarray(np.sqrt(t.detach().numpy()), dtype=np.float32))


def _check_numpy_sqrt():
    # float32 sqrt through double is correctly rounded (53 >= 2*24 + 2), so
    # it cross-checks numpy's float32 sqrt on a spread of values.
    g = torch.Generator().manual_seed(99)
    x = torch.cat([torch.rand(200000, generator=g) * 10.0 ** k for k in range(-30, 31, 3)])
    a = _ieee_sqrt_tensor(x).numpy()
    b = np.sqrt(x.numpy().astype(np.float64)).astype(np.float32)
    if a.tobytes() != b.tobytes():
        raise RuntimeError("numpy float32 sqrt is not correctly rounded here")


def install_sqrt_probes():
    """Count calls to SQRT_ENTRY_POINTS; make SQRT_FORBIDDEN and pow(x, +-0.5) raise."""
    for owner, name in SQRT_ENTRY_POINTS:
        fn = getattr(owner, name)
        if hasattr(fn, "_jopt_probe"):
            continue
        key = _entry_name(owner, name)

        def counted(*a, __fn=fn, __key=key, **kw):
            SQRT_CALLS[__key] += 1
            return __fn(*a, **kw)

        counted._jopt_probe = True
        setattr(owner, name, counted)
    for owner, name in SQRT_FORBIDDEN:
        fn = getattr(owner, name)
        if hasattr(fn, "_jopt_probe"):
            continue
        key = _entry_name(owner, name)

        def forbidden(*a, __key=key, **kw):
            raise RuntimeError(f"{__key} called: not covered by the ieee-sqrt patch")

        forbidden._jopt_probe = True
        setattr(owner, name, forbidden)
    for owner, name in POW_ENTRY_POINTS:
        fn = getattr(owner, name)
        if hasattr(fn, "_jopt_probe"):
            continue
        key = _entry_name(owner, name)

        def pow_checked(*a, __fn=fn, __key=key, **kw):
            exps = list(a[1:2]) + [kw.get("exponent")]
            if any(isinstance(e, (int, float)) and abs(e) == 0.5 for e in exps):
                raise RuntimeError(f"{__key}(x, 0.5) called: not covered by the ieee-sqrt patch")
            return __fn(*a, **kw)

        pow_checked._jopt_probe = True
        setattr(owner, name, pow_checked)


@contextlib.contextmanager
def ieee_sqrt():
    """The sqrt entry points rounded as IEEE 754 says (numpy's sqrt is)."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in SQRT_ENTRY_POINTS]

    def sqrt(self):
        SQRT_CALLS["Tensor.sqrt"] += 1
        return _ieee_sqrt_tensor(self)

    def sqrt_(self):
        SQRT_CALLS["Tensor.sqrt_"] += 1
        self.copy_(_ieee_sqrt_tensor(self))
        return self

    def torch_sqrt(input, *, out=None):
        SQRT_CALLS["torch.sqrt"] += 1
        r = _ieee_sqrt_tensor(input)
        if out is None:
            return r
        out.resize_(r.shape).copy_(r)
        return out

    torch.Tensor.sqrt = sqrt
    torch.Tensor.sqrt_ = sqrt_
    torch.sqrt = torch_sqrt
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def parse_options(s):
    """jopt options string -> torch kwargs.

    'a=1 b=0.9,0.999 c=true' -> {'a': 1.0, 'b': (0.9, 0.999), 'c': True}
    """
    kwargs = {}
    for item in s.split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"bad option {item!r} in {s!r}")
        if name in kwargs:
            raise ValueError(f"option {name!r} given twice in {s!r}")
        if value in ("true", "false"):
            kwargs[name] = value == "true"
        elif "," in value:
            kwargs[name] = tuple(float(v) for v in value.split(","))
        else:
            kwargs[name] = float(value)
    return kwargs


# Count which implementation (single-tensor / multi-tensor / fused) runs, by
# wrapping the module-level kernels of every torch.optim submodule. The
# public functional entry points (e.g. torch.optim.adam.adam) look these names
# up in their module globals at call time, so the wrappers see every call.
IMPL_CALLS = collections.Counter()


def _install_impl_probes():
    prefixes = {"_single_tensor_": "forloop", "_multi_tensor_": "foreach", "_fused_": "fused"}
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith("torch.optim.") or mod is None:
            continue
        for attr in list(vars(mod)):
            for prefix, kind in prefixes.items():
                fn = getattr(mod, attr)
                if attr.startswith(prefix) and callable(fn) and not hasattr(fn, "_jopt_probe"):

                    def wrapper(*a, __fn=fn, __kind=kind, **kw):
                        IMPL_CALLS[__kind] += 1
                        return __fn(*a, **kw)

                    wrapper._jopt_probe = True
                    setattr(mod, attr, wrapper)


def case_sizes(case):
    return list(case[3]) if len(case) > 3 else SPEC_SIZES.get(case[0], SIZES)


def make_params(sizes):
    g = torch.Generator().manual_seed(PARAM_SEED)
    return [torch.randn(n, generator=g, dtype=torch.float32) for n in sizes]


def make_grads(sizes):
    """grads[s][i] for s = 0..STEPS-1 (None when absent). Same for every case
    of the same sizes."""
    g = torch.Generator().manual_seed(GRAD_SEED)
    out = []
    for s in range(1, STEPS + 1):
        row = []
        for i, n in enumerate(sizes):
            # Always draw, so the stream does not depend on ABSENT.
            grad = torch.randn(n, generator=g, dtype=torch.float32)
            zero = torch.rand(n, generator=g) < ZERO_FRACTION
            grad[zero] = 0.0
            row.append(None if (i, s) in ABSENT else grad)
        out.append(row)
    return out


def f32_bytes(tensors):
    data = torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float32)
    b = data.numpy().astype("<f4", copy=False).tobytes()
    assert len(b) == 4 * data.numel()
    return b


def header(spec, options, sizes, note="", record=None):
    lines = [
        "jopt-fixture 1",
        f"spec {spec}",
        f"options {options}",
        f"torch {torch.__version__}{note}",
        "sizes " + " ".join(str(n) for n in sizes),
        f"steps {STEPS}",
    ]
    if record is not None:
        lines.append(f"record {record}")
    lines.append("end")
    return "".join(line + "\n" for line in lines).encode("ascii")


def run_case(spec, options, sizes, grads, note=""):
    """Returns the fixture bytes, and for ASGD the bytes of the .ax.fix
    companion (None for other specs)."""
    cls = OPTIMIZERS[spec]
    kwargs = parse_options(options)
    params = [p.requires_grad_(True) for p in make_params(sizes)]
    opt = cls(params, **kwargs)
    # Default implementation: nothing was passed for foreach/fused.
    assert opt.defaults.get("foreach") in (None, False), opt.defaults
    assert opt.defaults.get("fused") in (None, False), opt.defaults

    out = [header(spec, options, sizes, note), f32_bytes(params)]
    ax_out = [header(spec, options, sizes, note, record="ax"), f32_bytes(params)]
    IMPL_CALLS.clear()
    for row in grads:
        present = []
        for p, grad in zip(params, row):
            p.grad = None if grad is None else grad.clone()
            present.append(grad is not None)
        opt.step()
        out.append(bytes(1 if x else 0 for x in present))
        out.append(f32_bytes([g for g in row if g is not None]))
        out.append(f32_bytes(params))
        if spec == "asgd":
            ax_out.append(out[-3])
            ax_out.append(out[-2])
            ax = [opt.state[p]["ax"] if p in opt.state else torch.zeros_like(p) for p in params]
            ax_out.append(f32_bytes(ax))
    calls = dict(IMPL_CALLS)
    if calls.get("foreach") or calls.get("fused") or calls.get("forloop", 0) != STEPS:
        raise RuntimeError(f"{spec} {options!r}: expected {STEPS} for-loop calls, got {calls}")
    return b"".join(out), (b"".join(ax_out) if spec == "asgd" else None)


# Constructor validation: (spec, options). Each must make the torch
# constructor raise ValueError; validation_messages() records the text.
# One bad value per check, both sides of a range. Not expressible as options
# (so not listed): Tensor lr / Tensor betas checks ("Tensor lr must be
# 1-element", "betas must be either both floats or both Tensors", ...) and
# the fused/foreach RuntimeErrors.
_BETA_CASES = ["betas=-1,0.999", "betas=1,0.999", "betas=0.9,-1", "betas=0.9,1"]
VALIDATION_CASES = (
    [("sgd", o) for o in ["lr=-1", "momentum=-1", "weight_decay=-1",
                          "momentum=0 nesterov=true", "momentum=0.9 dampening=0.1 nesterov=true"]]
    + [(spec, o) for spec in ("adam", "adamw")
       for o in ["lr=-1", "eps=-1", *_BETA_CASES, "weight_decay=-1"]]
    + [("adadelta", o) for o in ["lr=-1", "rho=-1", "rho=1.5", "eps=-1", "weight_decay=-1"]]
    + [("adagrad", o) for o in ["lr=-1", "lr_decay=-1", "weight_decay=-1",
                                "initial_accumulator_value=-1", "eps=-1"]]
    + [("adamax", o) for o in ["lr=-1", "eps=-1", *_BETA_CASES, "weight_decay=-1"]]
    + [("asgd", o) for o in ["lr=-1", "weight_decay=-1"]]
    + [("rprop", o) for o in ["lr=-1", "etas=0,1.2", "etas=1,1.2", "etas=0.5,1"]]
    + [("rmsprop", o) for o in ["lr=-1", "eps=-1", "momentum=-1", "weight_decay=-1", "alpha=-1"]]
    + [("nadam", o) for o in ["lr=-1", "eps=-1", *_BETA_CASES, "weight_decay=-1",
                              "momentum_decay=-1"]]
    + [("radam", o) for o in ["lr=-1", "eps=-1", *_BETA_CASES, "weight_decay=-1"]]
)


def validation_message(spec, options):
    """str() of the ValueError torch's constructor raises for these options."""
    p = torch.zeros(3, requires_grad=True)
    try:
        OPTIMIZERS[spec]([p], **parse_options(options))
    except ValueError as e:
        if type(e) is not ValueError:
            raise
        return str(e)
    raise RuntimeError(f"{spec} {options!r}: constructor did not raise")


def validation_messages():
    """Contents of validation_messages.txt: spec<TAB>options<TAB>message lines."""
    lines = []
    for spec, options in VALIDATION_CASES:
        msg = validation_message(spec, options)
        assert "\t" not in msg and "\n" not in msg, msg
        lines.append(f"{spec}\t{options}\t{msg}\n")
    return "".join(lines).encode("ascii")


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv):
    if len(argv) > 2:
        sys.exit("usage: record_fixtures.py [outdir]")
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo, "tests", "fixtures")
    # validation_messages.txt goes next to this script, or into outdir when
    # one is given (so a trial run leaves the repository alone).
    msgdir = argv[1] if len(argv) > 1 else here
    if torch.__version__.split("+")[0] != TORCH_VERSION_REQUIRED:
        sys.exit(f"need torch {TORCH_VERSION_REQUIRED}, have {torch.__version__}")

    torch.set_num_threads(1)
    torch.manual_seed(0)  # nothing should draw from the global RNG; fixed anyway
    _install_impl_probes()
    install_sqrt_probes()
    _check_numpy_sqrt()
    os.makedirs(outdir, exist_ok=True)

    grads_by_sizes = {}
    names = set()
    plain = {}  # (spec, tag) -> parameter bytes of the unpatched run
    sqrt_specs = set()  # specs whose unpatched runs took a tensor sqrt
    changed_specs = set()  # specs with a patched run that differs from plain
    runs = [(case, False) for case in CASES]
    runs += [(case, True) for case in CASES if case[0] in IEEE_SQRT_SPECS]
    for case, patched in runs:
        spec, options, tag = case[:3]
        sizes = case_sizes(case)
        key = tuple(sizes)
        if key not in grads_by_sizes:
            grads_by_sizes[key] = make_grads(sizes)
        grads = grads_by_sizes[key]
        name = f"{spec}_{tag}.ieee-sqrt.fix" if patched else f"{spec}_{tag}.fix"
        assert name not in names, name
        names.add(name)
        SQRT_CALLS.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ieee_sqrt() if patched else contextlib.nullcontext():
                note = IEEE_SQRT_NOTE if patched else ""
                data, ax_data = run_case(spec, options, sizes, grads, note)
        for w in caught:
            print(f"warning ({name}): {w.category.__name__}: {w.message}", file=sys.stderr)
        sqrt_calls = sum(SQRT_CALLS.values())
        body = data[data.index(b"\nend\n") + 5:]
        if not patched:
            plain[(spec, tag)] = body
            if sqrt_calls:
                sqrt_specs.add(spec)
            extra = ""
        else:
            # The patch must have been used, and must have changed the result
            # of at least one case of the spec (checked below). A case with a
            # small lr can come out identical: sqrt's last bit then never
            # reaches the parameters' rounding.
            if not sqrt_calls:
                raise RuntimeError(f"{name}: the patched sqrt was never called")
            a = np.frombuffer(plain[(spec, tag)], dtype="<f4")
            b = np.frombuffer(body, dtype="<f4")
            ndiff = int((a.view(np.uint32) != b.view(np.uint32)).sum())
            if ndiff:
                changed_specs.add(spec)
            extra = f" [{ndiff} floats differ from {spec}_{tag}.fix]"
        path = os.path.join(outdir, name)
        write_atomic(path, data)
        print(f"wrote {path} ({len(data)} bytes) spec={spec} options={options!r}"
              f" sqrt-calls={dict(SQRT_CALLS)}{extra}")
        if ax_data is not None and tag in ASGD_AX_TAGS and not patched:
            ax_name = f"{spec}_{tag}.ax.fix"
            assert ax_name not in names, ax_name
            names.add(ax_name)
            write_atomic(os.path.join(outdir, ax_name), ax_data)
            print(f"wrote {os.path.join(outdir, ax_name)} ({len(ax_data)} bytes) (state ax)")

    if sqrt_specs != IEEE_SQRT_SPECS:
        raise RuntimeError(f"specs taking a tensor sqrt {sorted(sqrt_specs)} != "
                           f"IEEE_SQRT_SPECS {sorted(IEEE_SQRT_SPECS)}")
    if changed_specs != IEEE_SQRT_SPECS:
        raise RuntimeError(f"ieee sqrt changed no result for "
                           f"{sorted(IEEE_SQRT_SPECS - changed_specs)}")

    path = os.path.join(msgdir, "validation_messages.txt")
    data = validation_messages()
    write_atomic(path, data)
    print(f"wrote {path} ({len(VALIDATION_CASES)} messages)")


if __name__ == "__main__":
    main(sys.argv)
