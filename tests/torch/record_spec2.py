#!/usr/bin/env python3
"""Record reference trajectories for spec language 2 (issue 12) as jopt-fixture 2 files.

Usage: python3 tests/torch/record_spec2.py [outdir]
(default outdir: tests/fixtures/spec2 under the repository root).

Optimizers and their references:

  adafactor        torch.optim.Adafactor (torch 2.13, single-tensor path)
  muon             torch.optim.Muon (torch 2.13; Newton-Schulz in bfloat16)
  adabelief        pytorch_optimizer.AdaBelief
  adan             pytorch_optimizer.Adan
  schedulefree_adamw  pytorch_optimizer.ScheduleFreeAdamW
  sophia           pytorch_optimizer.SophiaH fed an external Hessian estimate
                   (pytorch_optimizer 4.1.0 has no SophiaG class)
  prodigy          pytorch_optimizer.Prodigy
  ademamix         pytorch_optimizer.AdEMAMix
  cautious_adamw   pytorch_optimizer.AdEMAMix(alpha=0, weight_decouple=True,
                   cautious=True): pytorch_optimizer has no Cautious AdamW class;
                   "cautious" is a flag (a **kwargs entry) of some of its classes.

Every pytorch_optimizer class is constructed with foreach=False (its
per-parameter path; the recorder makes the foreach path raise) and the
recorder reports, for information, whether the default foreach=None gives the
same bits on this CPU.

Twins (same run, one thing changed; the header's `variant` line names it):
  *.ieee-sqrt.fix   Tensor.sqrt, Tensor.sqrt_ and torch.sqrt correctly rounded
                    (numpy's float32 sqrt), for every optimizer that takes one.
  (ieee-rsqrt)      Adafactor: Tensor.rsqrt_ replaced by 1/sqrt(x), the sqrt and
                    the division each correctly rounded. Run and checked to be
                    bit-identical to the plain run (torch's rsqrt already is
                    that); no file is written.
  *.ns-f32.fix      Muon: torch.optim._muon._zeropower_via_newtonschulz replaced
                    by a copy of its own source in which the one expression
                    `grad.bfloat16()` reads `grad.to(torch.float32, copy=True)`,
                    so the whole Newton-Schulz iteration runs in float32 (copy=True:
                    `grad.float()` would alias the momentum buffer, which the
                    in-place normalisation `div_` would then overwrite).

The format is described in tests/fixtures/spec2/README.md and in
write_fixture() below. The same run writes tests/fixtures/spec2/messages.txt.
"""

import collections
import contextlib
import importlib.metadata
import inspect
import math
import os
import struct
import sys
import warnings

import numpy as np
import torch
import torch.optim
import torch.optim._muon

import pytorch_optimizer as po

TORCH_VERSION_REQUIRED = "2.13.0"
PO_VERSION_REQUIRED = "4.1.0"

STEPS = 52
PARAM_SEED = 1234
GRAD_SEED = 5678
HESS_SEED = 4321
ZERO_FRACTION = 0.05

# (tensor index, 1-based step) whose gradient is absent (p.grad = None):
# tensor 1 gets its state late, tensor 2 skips two steps, tensor 3 skips one
# step late in the run (after its state exists).
ABSENT = {(1, 1), (2, 3), (2, 4), (3, 30)}

# Shapes. Odd sizes leave scalar tails after ATen's vector loops.
SHAPES_ELEMENTWISE = [(5, 7), (13,), (1,), (3, 2, 7)]
# Adafactor: 2-D and 3-D factored (the last two dims), 1-D unfactored, and a
# 2-D tensor with a dim of 1.
SHAPES_ADAFACTOR = [(7, 9), (13,), (3, 5, 3), (1,), (6, 1)]
# Muon: 2-D only: rows < cols, rows > cols (transposed inside Newton-Schulz),
# square, and a column.
SHAPES_MUON = [(7, 9), (9, 5), (3, 3), (6, 1)]

# Schedule-Free: after these steps, eval() then train(); the parameters are
# recorded after each call.
SF_EVENTS = [(10, "eval"), (10, "train"), (25, "eval"), (25, "train"),
             (40, "eval"), (40, "train"), (52, "eval"), (52, "train")]

PO_VERSION = importlib.metadata.version("pytorch_optimizer")


class Ref:
    """How one jopt spec maps onto its reference implementation."""

    def __init__(self, name, factory, shapes, fixed=None, adapt=None, group_state=(),
                 inputs=(), events=(), po_class=False, grads="random"):
        self.name = name            # reference, as printed in the header
        self.factory = factory      # () -> class
        self.shapes = shapes
        self.fixed = fixed or {}    # kwargs always passed
        self.adapt = adapt          # kwargs -> kwargs (jopt names -> reference names)
        self.group_state = group_state  # group-level runtime state recorded at the end
        self.inputs = inputs
        self.events = events
        self.po_class = po_class
        self.grads = grads          # "random" (a fixed stream) or "quadratic" (closed loop)

    def cls(self):
        return self.factory()

    def kwargs(self, options):
        kw = parse_options(options, self.cls())
        if self.adapt:
            kw = self.adapt(kw)
        return {**kw, **self.fixed}


def _cautious_adapt(kw):
    # jopt's cautious_adamw takes AdamW's (beta1, beta2); AdEMAMix wants a
    # third beta, which alpha=0 makes irrelevant (its default is kept).
    kw = dict(kw)
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"]) + (0.9999,)
    return kw


REFS = {
    "adafactor": Ref("torch.optim.Adafactor", lambda: torch.optim.Adafactor, SHAPES_ADAFACTOR),
    "muon": Ref("torch.optim.Muon", lambda: torch.optim.Muon, SHAPES_MUON),
    "adabelief": Ref("pytorch_optimizer.AdaBelief", lambda: po.AdaBelief, SHAPES_ELEMENTWISE,
                     fixed={"foreach": False}, group_state=("step",), po_class=True),
    "adan": Ref("pytorch_optimizer.Adan", lambda: po.Adan, SHAPES_ELEMENTWISE,
                fixed={"foreach": False}, group_state=("step",), po_class=True),
    "schedulefree_adamw": Ref("pytorch_optimizer.ScheduleFreeAdamW", lambda: po.ScheduleFreeAdamW,
                              SHAPES_ELEMENTWISE, fixed={"foreach": False},
                              group_state=("step", "weight_sum", "lr_max", "train_mode"),
                              events=SF_EVENTS, po_class=True),
    "sophia": Ref("pytorch_optimizer.SophiaH", lambda: po.SophiaH, SHAPES_ELEMENTWISE,
                  fixed={"foreach": False}, group_state=("step",), inputs=("hessian",),
                  po_class=True),
    "prodigy": Ref("pytorch_optimizer.Prodigy", lambda: po.Prodigy, SHAPES_ELEMENTWISE,
                   fixed={"foreach": False},
                   group_state=("step", "d", "d_max", "d_hat", "d_numerator", "d_de_nom"),
                   po_class=True, grads="quadratic"),
    "ademamix": Ref("pytorch_optimizer.AdEMAMix", lambda: po.AdEMAMix, SHAPES_ELEMENTWISE,
                    fixed={"foreach": False}, group_state=("step",), po_class=True),
    "cautious_adamw": Ref("pytorch_optimizer.AdEMAMix", lambda: po.AdEMAMix, SHAPES_ELEMENTWISE,
                          fixed={"foreach": False, "alpha": 0.0, "weight_decouple": True,
                                 "cautious": True},
                          adapt=_cautious_adapt, group_state=("step",), po_class=True),
}

# (spec, jopt options string, tag). File: <spec>_<tag>.fix (+ twins).
CASES = [
    # Adafactor: lr=0.5 makes rho_t = min(lr, 1/sqrt(t)) switch at t=5;
    # eps1=0.3 clamps small variance estimates, eps2=2 beats the params' RMS.
    ("adafactor", "", "default"),
    ("adafactor", "lr=0.05 weight_decay=0.2", "lr_wd"),
    ("adafactor", "maximize=true", "maximize"),
    ("adafactor", "eps=0.3,2", "eps"),
    ("adafactor", "lr=0.5 beta2_decay=-0.5 d=1.2", "lr_beta2_decay_d"),
    ("adafactor", "eps=1e-20,1e-3 weight_decay=0.1 maximize=true", "eps1_wd_maximize"),
    # Muon.
    ("muon", "", "default"),
    ("muon", "lr=0.02 nesterov=false", "lr_nonesterov"),
    ("muon", "lr=0.02 weight_decay=0.01 adjust_lr_fn=match_rms_adamw", "match_rms_adamw"),
    ("muon", "lr=0.05 momentum=0.9 weight_decay=0 ns_steps=3 adjust_lr_fn=original", "ns3_original"),
    # AdaBelief (weight_decouple defaults to true).
    ("adabelief", "", "default"),
    ("adabelief", "lr=0.01 weight_decay=0.1", "lr_wd"),
    ("adabelief", "lr=0.01 rectify=true", "rectify"),
    ("adabelief", "lr=0.01 weight_decay=0.05 weight_decouple=false ams_bound=true maximize=true",
     "coupled_amsbound_maximize"),
    # Adan: max_grad_norm=5 clips (the global norm is about 10); 50 enables the
    # clip path without clipping (factor exactly 1 as a tensor).
    ("adan", "", "default"),
    ("adan", "lr=0.01 weight_decay=0.02", "lr_wd"),
    ("adan", "lr=0.01 max_grad_norm=5 weight_decay=0.02 weight_decouple=true", "clip_decoupled"),
    ("adan", "max_grad_norm=50 maximize=true", "clip_noop_maximize"),
    # Schedule-Free AdamW.
    ("schedulefree_adamw", "", "default"),
    ("schedulefree_adamw", "lr=0.01 weight_decay=0.1 warmup_steps=10", "wd_warmup"),
    ("schedulefree_adamw", "lr=0.01 betas=0.95,0.99 r=1 weight_lr_power=0 ams_bound=true maximize=true",
     "r_amsbound_maximize"),
    # Sophia: Hessian fed at the steps where (step-1) % update_period == 0
    # (where SophiaH would otherwise estimate one itself) and also at step 7.
    ("sophia", "", "default"),
    ("sophia", "lr=0.01 weight_decay=0.1 p=0.05 update_period=5", "wd_p_period"),
    ("sophia", "weight_decay=0.01 weight_decouple=false maximize=true", "coupled_maximize"),
    # Prodigy (eps=none: the atan2 update).
    ("prodigy", "", "default"),
    ("prodigy", "weight_decay=0.01 safeguard_warmup=true bias_correction=true", "wd_safeguard_biascorr"),
    ("prodigy", "d_coef=2 growth_rate=1.02 beta3=0.98 eps=none maximize=true", "growth_atan2_maximize"),
    # AdEMAMix.
    ("ademamix", "", "default"),
    ("ademamix", "lr=0.01 alpha=8 t_alpha_beta3=40 weight_decay=0.01 weight_decouple=true",
     "warmup_wd"),
    ("ademamix", "lr=0.01 cautious=true maximize=true", "cautious_maximize"),
    # Cautious AdamW (AdamW's options; see REFS).
    # Every case names weight_decay: the reference's default (AdEMAMix, 0)
    # is not torch AdamW's (1e-2), and jopt's spec may take either.
    ("cautious_adamw", "lr=0.01 weight_decay=0.01", "lr_wd"),
    ("cautious_adamw", "lr=0.01 weight_decay=0.1 betas=0.8,0.99 eps=1e-6", "wd_betas_eps"),
    ("cautious_adamw", "lr=0.005 weight_decay=0.01 maximize=true", "maximize"),
]

# Sophia's Hessian feed steps for a given update_period.
SOPHIA_EXTRA_FEED = 7

# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def _scalar(value, default):
    if value in ("true", "false"):
        return value == "true"
    if value == "none":
        return None
    try:
        x = float(value)
    except ValueError:
        return value  # a string option (Muon's adjust_lr_fn)
    if isinstance(default, int) and not isinstance(default, bool) and x == int(x):
        return int(x)  # ns_steps, update_period, warmup_steps, ...
    return x


def parse_options(s, cls=None):
    """jopt options string -> reference kwargs.

    'a=1 b=0.9,0.999 c=true d=none e=original' ->
    {'a': 1.0, 'b': (0.9, 0.999), 'c': True, 'd': None, 'e': 'original'}.
    A value whose keyword has an int default in cls's signature becomes an int.
    Elements of a tuple may be 'none' (Adafactor's eps=(None, 1e-3)).
    """
    sig = inspect.signature(cls).parameters if cls is not None else {}
    kwargs = {}
    for item in s.split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"bad option {item!r} in {s!r}")
        if name in kwargs:
            raise ValueError(f"option {name!r} given twice in {s!r}")
        default = sig[name].default if name in sig else None
        if "," in value:
            kwargs[name] = tuple(_scalar(v, None) for v in value.split(","))
        else:
            kwargs[name] = _scalar(value, default)
    return kwargs


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def numel(shape):
    return math.prod(shape)


def make_params(shapes):
    g = torch.Generator().manual_seed(PARAM_SEED)
    return [torch.randn(numel(s), generator=g, dtype=torch.float32).reshape(s) for s in shapes]


def make_grads(shapes):
    """grads[s][i] for s = 0..STEPS-1 (None when absent)."""
    g = torch.Generator().manual_seed(GRAD_SEED)
    out = []
    for s in range(1, STEPS + 1):
        row = []
        for i, shape in enumerate(shapes):
            n = numel(shape)
            grad = torch.randn(n, generator=g, dtype=torch.float32)
            zero = torch.rand(n, generator=g) < ZERO_FRACTION
            grad[zero] = 0.0
            row.append(None if (i, s) in ABSENT else grad.reshape(shape))
        out.append(row)
    return out


def make_quadratic_grads(shapes):
    """Closed-loop gradients of a separable quadratic plus noise:
    g = curv * (p - target) + 0.1 * noise, computed in float32 from the
    parameters before each step, with ~5% exact zeros and the ABSENT pattern.
    Prodigy needs them: with gradients unrelated to the parameters its
    distance estimate d never grows. Returns grads(step, params) -> row; the
    fixture stores the gradients actually fed, so replays need no formula."""
    g = torch.Generator().manual_seed(GRAD_SEED + 1)
    target = [torch.randn(numel(s), generator=g).reshape(s) for s in shapes]
    curv = [(0.5 + 1.5 * torch.rand(numel(s), generator=g)).reshape(s) for s in shapes]
    noise, zeros = [], []
    for _ in range(STEPS):
        noise.append([torch.randn(numel(s), generator=g).reshape(s) for s in shapes])
        zeros.append([(torch.rand(numel(s), generator=g) < ZERO_FRACTION).reshape(s) for s in shapes])

    def grads(s, params):
        row = []
        for i, p in enumerate(params):
            x = curv[i] * (p.detach() - target[i]) + 0.1 * noise[s - 1][i]
            x[zeros[s - 1][i]] = 0.0
            row.append(None if (i, s) in ABSENT else x)
        return row

    return grads


def make_hessians(shapes, feed_steps):
    """hess[s][i]: an external diagonal Hessian estimate, or None on steps
    where none is fed. Mostly positive (a Gauss-Newton-Bartlett estimate is
    g*g*batch), with ~10% negative entries (as a Hutchinson estimate can have)
    and ~5% exact zeros. Drawn at every step so the stream does not depend on
    the feed schedule."""
    g = torch.Generator().manual_seed(HESS_SEED)
    out = []
    for s in range(1, STEPS + 1):
        row = []
        for shape in shapes:
            n = numel(shape)
            h = torch.randn(n, generator=g, dtype=torch.float32).square_().mul_(0.5)
            u = torch.rand(n, generator=g)
            h[u < 0.10] *= -1.0
            h[(u >= 0.10) & (u < 0.15)] = 0.0
            row.append(h.reshape(shape) if s in feed_steps else None)
        out.append(row)
    return out


def sophia_feed_steps(kwargs):
    period = kwargs.get("update_period", 10)
    return {s for s in range(1, STEPS + 1) if (s - 1) % period == 0} | {SOPHIA_EXTRA_FEED}


def f32_bytes(tensors):
    if not tensors:
        return b""
    data = torch.cat([t.detach().reshape(-1) for t in tensors])
    assert data.dtype == torch.float32, data.dtype
    return data.numpy().astype("<f4", copy=False).tobytes()


def shape_str(shape):
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def value_record(value):
    """(dtype name, shape string, bytes) of one recorded state value."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.dtype == torch.float32:
            return "f32", shape_str(tuple(t.shape)), t.reshape(-1).numpy().astype("<f4").tobytes()
        if t.dtype == torch.float64:
            return "f64", shape_str(tuple(t.shape)), t.reshape(-1).numpy().astype("<f8").tobytes()
        raise TypeError(f"state tensor of dtype {t.dtype}")
    if isinstance(value, bool):
        return "u8", "scalar", bytes([1 if value else 0])
    if isinstance(value, int):
        return "i64", "scalar", struct.pack("<q", value)
    if isinstance(value, float):
        return "f64", "scalar", struct.pack("<d", value)
    raise TypeError(f"state value {value!r}")


def final_state(ref, opt, params):
    """[(owner, name, value)] in a fixed order: per tensor, the optimizer's
    state entries in insertion order; then the group-level runtime state."""
    out = []
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        for name, value in st.items():
            out.append((f"t{i}", name, value))
    group = opt.param_groups[0]
    for name in ref.group_state:
        if name in group:
            out.append(("group", name, group[name]))
    return out


# --------------------------------------------------------------------------
# Patches (twins) and probes
# --------------------------------------------------------------------------

IEEE_SQRT_SPECS = {"adabelief", "adan", "schedulefree_adamw", "prodigy", "ademamix", "cautious_adamw"}
# Twins that must come out bit-identical to the plain run: they are run and
# compared, and no file is written. torch's float32 rsqrt is already
# fl(1 / fl(sqrt(x))) with both steps correctly rounded (ATen's Vectorized
# rsqrt divides 1 by the hardware sqrt; the scalar tail does the same).
TWIN_MUST_EQUAL = {"adafactor"}
VARIANTS = {
    # variant -> (file suffix, header text)
    "ieee-sqrt": ("ieee-sqrt", "ieee-sqrt (Tensor.sqrt, Tensor.sqrt_, torch.sqrt correctly rounded)"),
    "ieee-rsqrt": ("ieee-rsqrt", "ieee-rsqrt (Tensor.rsqrt_ -> 1/sqrt(x), sqrt and division each correctly rounded)"),
    "ns-f32": ("ns-f32", "ns-f32 (torch.optim._muon._zeropower_via_newtonschulz: grad.bfloat16() -> grad.to(torch.float32, copy=True))"),
}

CALLS = collections.Counter()


def _np_f32(t):
    if t.dtype != torch.float32:
        raise RuntimeError(f"ieee patch: unexpected dtype {t.dtype}")
    return t.detach().numpy()


def _ieee_sqrt(t):
    return torch.from_numpy(np.asarray(np.sqrt(_np_f32(t)), dtype=np.float32)).reshape(t.shape)


def _ieee_rsqrt(t):
    a = _np_f32(t)
    return torch.from_numpy(np.asarray(np.float32(1.0) / np.sqrt(a), dtype=np.float32)).reshape(t.shape)


@contextlib.contextmanager
def patched(owner, name, fn):
    saved = getattr(owner, name)
    setattr(owner, name, fn)
    try:
        yield
    finally:
        setattr(owner, name, saved)


@contextlib.contextmanager
def ieee_sqrt():
    def sqrt(self):
        CALLS["Tensor.sqrt"] += 1
        return _ieee_sqrt(self)

    def sqrt_(self):
        CALLS["Tensor.sqrt_"] += 1
        self.copy_(_ieee_sqrt(self))
        return self

    def torch_sqrt(input, *, out=None):
        CALLS["torch.sqrt"] += 1
        r = _ieee_sqrt(input)
        if out is None:
            return r
        out.resize_(r.shape).copy_(r)
        return out

    with patched(torch.Tensor, "sqrt", sqrt), patched(torch.Tensor, "sqrt_", sqrt_), \
            patched(torch, "sqrt", torch_sqrt):
        yield


@contextlib.contextmanager
def ieee_rsqrt():
    def rsqrt_(self):
        CALLS["Tensor.rsqrt_"] += 1
        self.copy_(_ieee_rsqrt(self))
        return self

    with patched(torch.Tensor, "rsqrt_", rsqrt_):
        yield


def _ns_float32_function():
    """torch's own _zeropower_via_newtonschulz with `grad.bfloat16()` replaced
    by `grad.to(torch.float32, copy=True)`, compiled from its source."""
    orig = torch.optim._muon._zeropower_via_newtonschulz
    orig = getattr(orig, "_jopt_orig", orig)
    src = inspect.getsource(orig)
    old, new = "grad.bfloat16()", "grad.to(torch.float32, copy=True)"
    if src.count(old) != 1 or "bfloat16" in src.replace(old, ""):
        raise RuntimeError("torch's _zeropower_via_newtonschulz changed: cannot patch it")
    namespace = {}
    exec(compile(src.replace(old, new), "<ns-f32 patch of torch.optim._muon>", "exec"),
         torch.optim._muon.__dict__, namespace)
    fn = namespace["_zeropower_via_newtonschulz"]
    fn._jopt_orig = orig
    return fn


@contextlib.contextmanager
def ns_float32():
    fn = _ns_float32_function()

    def counted(*a, **kw):
        CALLS["ns-f32"] += 1
        return fn(*a, **kw)

    with patched(torch.optim._muon, "_zeropower_via_newtonschulz", counted):
        yield


def variant_context(variant):
    if variant is None:
        return contextlib.nullcontext()
    return {"ieee-sqrt": ieee_sqrt, "ieee-rsqrt": ieee_rsqrt, "ns-f32": ns_float32}[variant]()


# Probes: count the sqrt-like entry points so the recorder knows which
# optimizers take one (and that the twins cover them).
SQRT_PROBES = [(torch.Tensor, "sqrt"), (torch.Tensor, "sqrt_"), (torch, "sqrt"),
               (torch.Tensor, "rsqrt"), (torch.Tensor, "rsqrt_"), (torch, "rsqrt"),
               (torch, "_foreach_sqrt"), (torch, "_foreach_sqrt_")]
PROBE_CALLS = collections.Counter()


def install_probes():
    for owner, name in SQRT_PROBES:
        fn = getattr(owner, name)
        if hasattr(fn, "_jopt_probe"):
            continue
        key = ("Tensor." if owner is torch.Tensor else "torch.") + name

        def counted(*a, __fn=fn, __key=key, **kw):
            PROBE_CALLS[__key] += 1
            return __fn(*a, **kw)

        counted._jopt_probe = True
        setattr(owner, name, counted)
    # torch's single-tensor kernels must run, not foreach/fused ones.
    for modname in ("torch.optim._adafactor", "torch.optim._muon"):
        mod = sys.modules[modname]
        for attr in list(vars(mod)):
            if attr.startswith("_multi_tensor_") or attr.startswith("_fused_"):
                def forbidden(*a, __attr=attr, **kw):
                    raise RuntimeError(f"{__attr} called: expected the single-tensor path")
                forbidden._jopt_probe = True
                setattr(mod, attr, forbidden)


def forbid_foreach(opt):
    """pytorch_optimizer classes: make every foreach entry point raise."""
    for attr in ("_step_foreach", "_apply_update_foreach", "_apply_update_foreach"):
        if hasattr(opt, attr):
            def forbidden(*a, __attr=attr, **kw):
                raise RuntimeError(f"{__attr} called: expected the per-parameter path")
            setattr(opt, attr, forbidden)


# --------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------


def capability():
    return torch.backends.cpu.get_cpu_capability()


def header(spec, options, ref, shapes, variant, events, finals, kwargs):
    sizes = [numel(s) for s in shapes]
    lines = [
        "jopt-fixture 2",
        f"spec {spec}",
        f"options {options}",
        f"torch {torch.__version__}",
    ]
    if ref.po_class:
        lines.append(f"pytorch_optimizer {PO_VERSION}")
    call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    lines.append(f"reference {ref.name}({call})")
    if variant is not None:
        lines.append(f"variant {VARIANTS[variant][1]}")
    lines += [
        f"capability {capability()}",
        "sizes " + " ".join(str(n) for n in sizes),
        "shapes " + " ".join(shape_str(s) for s in shapes),
        f"steps {STEPS}",
    ]
    if ref.inputs:
        lines.append("inputs " + " ".join(ref.inputs))
    if events:
        lines.append("events " + " ".join(f"{s}:{k}" for s, k in events))
    for owner, name, dtype, shp in finals:
        lines.append(f"final {owner} {name} {dtype} {shp}")
    lines.append("end")
    for line in lines:
        assert "\n" not in line and line.isascii(), line
    return "".join(line + "\n" for line in lines).encode("ascii")


def run(spec, options, variant=None, foreach_default=False, data=None):
    """Run one case. Returns (header-less pieces) as a dict:
    init, steps [(present, grads, inputs, params, [event params])], finals."""
    ref = REFS[spec]
    shapes = ref.shapes
    kwargs = ref.kwargs(options)
    if foreach_default:
        kwargs.pop("foreach", None)
    if data is None:
        data = case_data(spec, options)
    params = [p.clone().requires_grad_(True) for p in data["init"]]
    cls = ref.cls()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent surprises
        opt = cls(params, **kwargs)
    if ref.po_class and not foreach_default:
        forbid_foreach(opt)
    events = dict()
    for s, k in ref.events:
        events.setdefault(s, []).append(k)
    records = []
    CALLS.clear()
    with variant_context(variant):
        for s in range(1, STEPS + 1):
            grads = data["grads"]
            row = grads(s, params) if callable(grads) else grads[s - 1]
            for p, g in zip(params, row):
                p.grad = None if g is None else g.clone()
            step_kw = {}
            inputs = []
            if "hessian" in ref.inputs:
                hrow = data["hessian"][s - 1]
                if any(h is not None for h in hrow):
                    assert all(h is not None for h in hrow)
                    step_kw["hessian"] = [h.clone() for h in hrow]
                inputs.append(hrow)
            opt.step(**step_kw)
            after = [p.detach().clone() for p in params]
            ev = []
            for kernel in events.get(s, []):
                getattr(opt, kernel)()
                ev.append((kernel, [p.detach().clone() for p in params]))
            records.append((row, inputs, after, ev))
    finals = final_state(ref, opt, params)
    return {"ref": ref, "kwargs": kwargs, "init": data["init"], "records": records,
            "finals": finals, "calls": dict(CALLS)}


def case_data(spec, options):
    ref = REFS[spec]
    data = {"init": make_params(ref.shapes),
            "grads": make_grads(ref.shapes) if ref.grads == "random" else make_quadratic_grads(ref.shapes)}
    if "hessian" in ref.inputs:
        data["hessian"] = make_hessians(ref.shapes, sophia_feed_steps(ref.kwargs(options)))
    return data


def serialize(spec, options, result, variant):
    ref = result["ref"]
    finals = [(owner, name, *value_record(v)) for owner, name, v in result["finals"]]
    out = [header(spec, options, ref, ref.shapes, variant, ref.events,
                  [(o, n, d, s) for o, n, d, s, _ in finals], result["kwargs"]),
           f32_bytes(result["init"])]
    for row, inputs, after, ev in result["records"]:
        out.append(bytes(1 if g is not None else 0 for g in row))
        out.append(f32_bytes([g for g in row if g is not None]))
        for irow in inputs:
            out.append(bytes(1 if h is not None else 0 for h in irow))
            out.append(f32_bytes([h for h in irow if h is not None]))
        out.append(f32_bytes(after))
        for _, ps in ev:
            out.append(f32_bytes(ps))
    for *_, b in finals:
        out.append(b)
    return b"".join(out)


def body_floats(result):
    """All recorded float32 outputs (params after steps and events) as one array."""
    parts = []
    for _, _, after, ev in result["records"]:
        parts.append(f32_bytes(after))
        for _, ps in ev:
            parts.append(f32_bytes(ps))
    return np.frombuffer(b"".join(parts), dtype="<f4")


# --------------------------------------------------------------------------
# Validation messages
# --------------------------------------------------------------------------

# (spec, param shape, options). Each must make the constructor raise.
_B2 = ["betas=-1,0.999", "betas=1,0.999", "betas=0.9,-1", "betas=0.9,1"]
MESSAGE_CASES = (
    [("adafactor", (3,), o) for o in ["lr=-1", "beta2_decay=0.5", "eps=-1,1e-3", "eps=none,-1",
                                      "d=0.5", "weight_decay=-1"]]
    + [("muon", (3, 3), o) for o in ["lr=-1", "momentum=-1", "weight_decay=-1",
                                     "adjust_lr_fn=spectral"]]
    + [("muon", (3,), ""), ("muon", (2, 3, 4), "")]
    + [("adabelief", (3,), o) for o in ["lr=-1", *_B2, "weight_decay=-1", "eps=-1"]]
    + [("adan", (3,), o) for o in ["lr=-1", "betas=-1,0.92,0.99", "betas=1,0.92,0.99",
                                   "betas=0.98,1,0.99", "betas=0.98,0.92,-1",
                                   "betas=0.98,0.92,1.5", "weight_decay=-1",
                                   "max_grad_norm=-1", "eps=-1"]]
    + [("schedulefree_adamw", (3,), o) for o in ["lr=-1", "betas=0,0.999", "betas=1,0.999",
                                                 "betas=0.9,1", "weight_decay=-1",
                                                 "decoupling_c=-1", "eps=-1"]]
    + [("sophia", (3,), o) for o in ["lr=-1", *_B2, "weight_decay=-1", "p=-1",
                                     "update_period=0", "num_samples=0",
                                     "hessian_distribution=uniform", "eps=-1"]]
    + [("prodigy", (3,), o) for o in ["lr=-1", *_B2, "beta3=-1", "beta3=1.5",
                                      "weight_decay=-1", "eps=-1"]]
    + [("ademamix", (3,), o) for o in ["lr=-1", "betas=1,0.999,0.9999", "betas=0.9,1,0.9999",
                                       "betas=0.9,0.999,1.5", "alpha=-1", "t_alpha_beta3=-1",
                                       "weight_decay=-1", "eps=-1"]]
    + [("cautious_adamw", (3,), o) for o in ["lr=-1", *_B2, "weight_decay=-1", "eps=-1"]]
)


def message(spec, shape, options):
    """(exception type name, str(exception)) the constructor raises."""
    ref = REFS[spec]
    p = torch.zeros(shape, requires_grad=True)
    try:
        ref.cls()([p], **ref.kwargs(options))
    except Exception as e:  # noqa: BLE001 - pytorch_optimizer raises its own types
        return type(e).__name__, str(e)
    raise RuntimeError(f"{spec} {options!r} shape {shape}: constructor did not raise")


def messages_text():
    lines = ["# spec\treference class\tparam shape\toptions\texception\tmessage\n"]
    for spec, shape, options in MESSAGE_CASES:
        etype, msg = message(spec, shape, options)
        assert "\t" not in msg and "\n" not in msg, msg
        lines.append(f"{spec}\t{REFS[spec].name}\t{shape_str(shape)}\t{options}\t{etype}\t{msg}\n")
    return "".join(lines).encode("ascii")


# --------------------------------------------------------------------------


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def check_versions():
    if torch.__version__.split("+")[0] != TORCH_VERSION_REQUIRED:
        sys.exit(f"need torch {TORCH_VERSION_REQUIRED}, have {torch.__version__}")
    if PO_VERSION != PO_VERSION_REQUIRED:
        sys.exit(f"need pytorch_optimizer {PO_VERSION_REQUIRED}, have {PO_VERSION}")


def setup():
    check_versions()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # nothing should draw from the global RNG; fixed anyway
    install_probes()


def runs():
    """(spec, options, tag, variant) for every file, plain files first."""
    out = [(spec, options, tag, None) for spec, options, tag in CASES]
    for spec, options, tag in CASES:
        if spec in IEEE_SQRT_SPECS:
            out.append((spec, options, tag, "ieee-sqrt"))
        elif spec == "adafactor":
            out.append((spec, options, tag, "ieee-rsqrt"))
        elif spec == "muon":
            out.append((spec, options, tag, "ns-f32"))
    return out


def file_name(spec, tag, variant):
    return f"{spec}_{tag}.{VARIANTS[variant][0]}.fix" if variant else f"{spec}_{tag}.fix"


def main(argv):
    if len(argv) > 2:
        sys.exit("usage: record_spec2.py [outdir]")
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo, "tests", "fixtures", "spec2")
    setup()
    os.makedirs(outdir, exist_ok=True)
    plain = {}
    sqrt_specs = set()
    changed = set()
    for spec, options, tag, variant in runs():
        name = file_name(spec, tag, variant)
        PROBE_CALLS.clear()
        result = run(spec, options, variant)
        data = serialize(spec, options, result, variant)
        floats = body_floats(result)
        extra = ""
        if variant is None:
            plain[(spec, tag)] = floats
            if any(PROBE_CALLS[k] for k in ("Tensor.sqrt", "Tensor.sqrt_", "torch.sqrt")):
                sqrt_specs.add(spec)
            if any(PROBE_CALLS[k] for k in ("torch._foreach_sqrt", "torch._foreach_sqrt_",
                                            "Tensor.rsqrt", "torch.rsqrt")):
                raise RuntimeError(f"{name}: a sqrt entry point no twin patches: {dict(PROBE_CALLS)}")
            # Information: does the reference's default foreach=None path give
            # the same bits here?
            if REFS[spec].po_class:
                fe = body_floats(run(spec, options, foreach_default=True))
                nd = int((fe.view(np.uint32) != floats.view(np.uint32)).sum())
                extra += f" [foreach=None: {nd} of {floats.size} floats differ]"
        else:
            if not result["calls"]:
                raise RuntimeError(f"{name}: the {variant} patch was never called")
            ndiff = int((floats.view(np.uint32) != plain[(spec, tag)].view(np.uint32)).sum())
            if ndiff:
                changed.add(spec)
            extra += f" [{variant}: {ndiff} of {floats.size} floats differ from the plain file;" \
                     f" patched calls {result['calls']}]"
        if variant is not None and spec in TWIN_MUST_EQUAL:
            if ndiff or serialize(spec, options, result, None) != serialize(
                    spec, options, run(spec, options), None):
                raise RuntimeError(f"{name}: differs from the plain run")
            print(f"checked {name}: identical to {file_name(spec, tag, None)} (no file written)"
                  f"{extra}", flush=True)
            continue
        path = os.path.join(outdir, name)
        write_atomic(path, data)
        print(f"wrote {path} ({len(data)} bytes) options={options!r}{extra}", flush=True)
    if sqrt_specs != IEEE_SQRT_SPECS:
        raise RuntimeError(f"specs that take Tensor.sqrt {sorted(sqrt_specs)} != "
                           f"IEEE_SQRT_SPECS {sorted(IEEE_SQRT_SPECS)}")
    if changed != {"muon"} | IEEE_SQRT_SPECS:
        raise RuntimeError(f"twins that changed something: {sorted(changed)}")
    path = os.path.join(outdir, "messages.txt")
    write_atomic(path, messages_text())
    print(f"wrote {path} ({len(MESSAGE_CASES)} messages)")


if __name__ == "__main__":
    main(sys.argv)
