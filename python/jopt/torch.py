"""Drop-in torch.optim optimizers whose step() runs jopt's JIT-compiled kernels.

    import jopt.torch
    opt = jopt.torch.Adam(model.parameters(), lr=1e-3)

Each class subclasses torch.optim.Optimizer with torch's constructor
signature, so param groups, zero_grad and torch.optim.lr_scheduler work.
Parameters must be contiguous tensors, all on the CPU or all on one CUDA
device.  On the CPU they may be float32, bfloat16 or float16 (each with its
own; kernels compute in float32 and round once, as torch's fused kernels),
and torch.amp.GradScaler drives step() as it drives torch's fused
optimizers (grad_scale and found_inf).  On a GPU they are float32, and
step() is enqueued on torch.cuda.current_stream() (docs/gpu.md)."""

import collections
import ctypes
import operator
import os
import struct
import sys
import threading

import torch

from . import _ckpt, _custom, _lib, _spec2
from ._lib import normalize
from ._specs import OPTIMIZERS, CLOSURE, describe, check_flags, prepare

__all__ = list(OPTIMIZERS) + ["JoptOptimizer", "JoptClosureOptimizer", "Optimizer",
                               "optimizer_class"]

try:
    _increment_version = torch.autograd.graph.increment_version
except AttributeError:  # pragma: no cover
    _increment_version = None


_DTYPES = {torch.float32: _lib.FLOAT32, torch.bfloat16: _lib.BFLOAT16,
           torch.float16: _lib.FLOAT16}
_TORCH_OF = {v: k for k, v in _DTYPES.items()}


def _plain(v):
    """A value jopt_option_set cannot take: a flag, a choice, None."""
    return v is None or isinstance(v, (bool, str))


def _pname(group, gi, pi, p):
    names = group.get("param_names")
    if names is not None and pi < len(names):
        return "parameter %r (param group %d)" % (names[pi], gi)
    return "parameter %d of param group %d (shape %s)" % (pi, gi, list(p.shape))


def _check_param(cls, group, gi, pi, p):
    what = _pname(group, gi, pi, p)
    if not isinstance(p, torch.Tensor):
        raise TypeError("jopt.%s: %s is a %s, not a torch.Tensor"
                        % (cls, what, type(p).__name__))
    if p.layout != torch.strided:
        raise TypeError("jopt.%s: %s has layout %s; jopt takes dense tensors only"
                        % (cls, what, p.layout))
    if p.device.type not in ("cpu", "cuda"):
        raise ValueError("jopt.%s: %s is on %s; jopt takes CPU or CUDA tensors only"
                         % (cls, what, p.device))
    if p.dtype not in _DTYPES or (p.device.type == "cuda" and p.dtype != torch.float32):
        raise TypeError("jopt.%s: %s has dtype %s; jopt takes torch.float32, and on "
                        "the CPU torch.bfloat16 and torch.float16 too"
                        % (cls, what, p.dtype))
    if not p.is_contiguous():
        raise ValueError("jopt.%s: %s is not contiguous; jopt takes contiguous tensors "
                         "only" % (cls, what))


# torch.optim's state layout: optimizers whose state has no "step", states
# held as one 0-dim tensor per parameter, closure optimizers' keys
_NO_STEP = ("SGD", "LBFGS", "CG")
_SCALAR_STATES = ("eta", "mu", "mu_product")
_CLOSURE_KEYS = ("LBFGS", "CG")


def _scalar_dtype():
    try:
        return torch.optim.optimizer._get_scalar_dtype()
    except AttributeError:  # pragma: no cover
        return torch.float32


# ---- threads: torch's own intra-op pool when it is OpenMP ----------------------

_F32 = torch.float32
_STRIDED = torch.strided


def _openmp_libraries():
    """Paths of the OpenMP runtimes loaded in this process, torch's first."""
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                name = os.path.basename(path)
                if path.startswith("/") and name.startswith(("libgomp", "libomp", "libiomp")) \
                        and path not in found:
                    found.append(path)
    except OSError:  # no /proc (macOS): torch's bundled runtime, if any
        if os.path.isdir(torch_lib):
            found = [os.path.join(torch_lib, n) for n in sorted(os.listdir(torch_lib))
                     if n.startswith(("libgomp", "libomp", "libiomp"))]
    found.sort(key=lambda p: not p.startswith(torch_lib))
    return found


def _torch_openmp():
    """The entry points of the OpenMP runtime torch's intra-op work runs on,
    as a jopt_openmp structure, or None (another backend, or not found).
    $JOPT_TORCH_THREADS=jopt turns it off: steps run on jopt's own pool."""
    if os.environ.get("JOPT_TORCH_THREADS", "") == "jopt" or _lib.jopt_parallel_openmp is None:
        return None
    try:
        if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
            return None
    except Exception:  # noqa: BLE001 - no such information: not ours to guess
        return None
    for path in [None] + _openmp_libraries():
        try:
            lib = ctypes.CDLL(path)
            fns = [getattr(lib, n) for n in ("GOMP_parallel", "omp_get_thread_num",
                                             "omp_get_num_threads", "omp_get_max_threads")]
        except (OSError, AttributeError):
            continue
        fns[3].restype = ctypes.c_int
        # the runtime torch sets its thread count in
        if fns[3]() != torch.get_num_threads():
            continue
        return _lib.OpenMP(*[ctypes.cast(f, ctypes.c_void_p).value for f in fns])
    return None


_omp = None
_omp_known = False
_tls = threading.local()


def torch_context():
    """This thread's context for jopt.torch optimizers: steps run on torch's
    intra-op thread pool (its OpenMP team, with torch.get_num_threads()
    threads), whose threads are awake right after forward and backward;
    without one, on jopt's own pool with torch.get_num_threads() threads."""
    global _omp, _omp_known
    ctx = getattr(_tls, "ctx", None)
    if ctx is None:
        if not _omp_known:
            _omp, _omp_known = _torch_openmp(), True
        ctx = _lib.Context()
        ctx._jopt_torch_threads = 0  # jopt's own pool, as many threads as torch
        if _omp is not None:
            ctx.set_parallel_openmp(_omp)
            ctx._jopt_torch_threads = "openmp"
        _tls.ctx = ctx
    return ctx


def _follow_torch_threads(ctx):
    """jopt's own pool, if used, runs as many threads as torch."""
    t = ctx._jopt_torch_threads
    if t != "openmp":
        n = torch.get_num_threads()
        if n != t:
            ctx.set_threads(n)
            ctx._jopt_torch_threads = n


def _device_of(cls, groups):
    """The one device every parameter is on."""
    for gi, g in enumerate(groups):  # one jopt cannot take, named
        for pi, p in enumerate(g["params"]):
            if isinstance(p, torch.Tensor) and p.device.type not in ("cpu", "cuda"):
                _check_param(cls, g, gi, pi, p)
    devices = {p.device for g in groups for p in g["params"] if isinstance(p, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError("jopt.%s: the parameters are on several devices (%s); one "
                         "optimizer takes tensors on one device"
                         % (cls, ", ".join(sorted(str(d) for d in devices))))
    dev = devices.pop() if devices else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class JoptOptimizer(torch.optim.Optimizer):
    """Base of the jopt.torch optimizers (not used directly)."""

    _jopt_name = None
    # torch.amp.GradScaler hands step() grad_scale and found_inf (as to
    # torch's fused optimizers) instead of unscaling the gradients itself
    _step_supports_amp_scaling = True

    def __init__(self, params, *args, **kwargs):
        cls = type(self)
        ctx = kwargs.pop("jopt_context", None)
        # jopt's own options for every group, beside torch's: state_dtype,
        # stochastic_rounding, seed ({"state_dtype": "bfloat16"})
        jopt_options = kwargs.pop("jopt_options", None)
        bound = cls._jopt_sig.bind(params, *args, **kwargs)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        params = defaults.pop("params")
        check_flags(cls._jopt_name, defaults)
        prepare(cls._jopt_name, defaults)
        if isinstance(params, torch.Tensor):
            raise TypeError("params argument given to the optimizer should be an "
                            "iterable of Tensors or dicts, but got " + torch.typename(params))
        self._jopt = None
        super().__init__(params, defaults)
        self._jopt_device = _device_of(cls._jopt_name, self.param_groups)
        if ctx is None:
            ctx = torch_context() if self._jopt_device.type == "cpu" else \
                _lib.default_context(self._jopt_device)
        self._jopt_ctx = ctx
        self._jopt_check_groups()
        groups = []
        for gi, group in enumerate(self.param_groups):
            groups.append(self._jopt_group_spec(gi, group))
        self._jopt = _lib.RawOptim(self._jopt_ctx, cls._jopt_spec, groups, jopt_options)
        for gi in range(len(self.param_groups)):
            self._jopt_shapes(gi)
        self._jopt_pushed = [self._hyper_of(g) for g in self.param_groups]
        self._jopt_index_params()

    def _jopt_index_params(self):
        """The flat views step() works on: every parameter in group order,
        their addresses, and the gradient addresses jopt holds."""
        flat = [p for g in self.param_groups for p in g["params"]]
        n = len(flat)
        self._jopt_flat = flat
        self._jopt_at = [(p.data_ptr(), p.numel()) for p in flat]  # address, size
        self._jopt_numels = [n for _, n in self._jopt_at]
        self._jopt_ngroups = len(self.param_groups)
        self._jopt_empty = [p.numel() == 0 for p in flat]
        self._jopt_any_empty = any(self._jopt_empty)
        self._jopt_grads = [0] * n          # the gradient addresses jopt holds
        self._jopt_grad_refs = None         # contiguous copies jopt reads
        self._jopt_grad_arr = (ctypes.c_void_p * max(n, 1))()
        # each tensor's declared gradient dtype: a gradient of another dtype
        # is declared (jopt_set_dtype) before the step
        self._jopt_gdt = [p.dtype for p in flat]
        self._jopt_pos = [(gi, pi) for gi, g in enumerate(self.param_groups)
                          for pi in range(len(g["params"]))]

    # ---- groups -------------------------------------------------------------

    def _jopt_check_groups(self):
        pass

    def _jopt_shapes(self, gi):
        """jopt sees each parameter's shape (Adafactor factors a matrix)."""
        _spec2.set_shapes(self._jopt, gi, [tuple(p.shape) for p in
                                           self.param_groups[gi]["params"]])

    def _hyper_of(self, group):
        out = {}
        for k in self._jopt_hyper:
            v = group[k]
            if isinstance(v, torch.Tensor):
                v = v.item()
            if k == "fused" and v is None:
                v = False  # torch's None: not fused on the CPU
            out[k] = normalize(v)
        return out

    def _jopt_group_spec(self, gi, group):
        check_flags(self._jopt_name, {k: group[k] for k in self._jopt_flags if k in group})
        params = []
        for pi, p in enumerate(group["params"]):
            _check_param(self._jopt_name, group, gi, pi, p)
            params.append((p.data_ptr() if p.numel() else 0, 0, p.numel(),
                           _DTYPES[p.dtype], _DTYPES[p.dtype]))
        return params, self._hyper_of(group)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if getattr(self, "_jopt", None) is None:
            return  # during __init__: the optimizer is built afterwards
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        try:
            params, opts = self._jopt_group_spec(gi, group)
            self._jopt.add_param_group(params, opts)
        except Exception:
            self.param_groups.pop()
            raise
        self._jopt_shapes(gi)
        self._jopt_pushed.append(self._hyper_of(group))
        held = self._jopt_grads + [0] * len(group["params"])  # jopt's, unchanged
        refs, gdt = self._jopt_grad_refs, self._jopt_gdt
        self._jopt_index_params()
        self._jopt_grads, self._jopt_grad_refs = held, refs
        self._jopt_gdt = gdt + [p.dtype for p in group["params"]]

    # ---- step -----------------------------------------------------------------

    def _jopt_push_hyper(self):
        raw = self._jopt
        for gi, group in enumerate(self.param_groups):
            pushed = self._jopt_pushed[gi]
            for k in self._jopt_hyper:
                v = group[k]
                if isinstance(v, torch.Tensor):
                    v = v.item()
                if k == "fused" and v is None:
                    v = False  # torch's None: not fused on the CPU
                old = pushed[k]
                if v == old:
                    continue
                v = normalize(v)
                if _plain(v) or _plain(old):
                    raw.options_set(gi, "%s=%s" % (k, _lib.format_value(v)))
                elif isinstance(v, tuple):
                    if not isinstance(old, tuple) or len(v) != len(old):
                        raw.options_set(gi, "%s=%s" % (k, _lib.format_value(v)))
                    else:
                        for j, (a, b) in enumerate(zip(v, old)):
                            if a != b:
                                raw.option_set(gi, "%s[%d]" % (k, j), a)
                                # keep what is pushed exact if a later element fails
                                pushed[k] = old[:j] + (a,) + old[j + 1:]
                                old = pushed[k]
                else:
                    raw.option_set(gi, k, v)
                pushed[k] = v

    def _jopt_check_params(self):
        """jopt updates parameters in place through the addresses and sizes it
        was given: a RuntimeError naming the parameter if one is no longer
        the tensor, the storage or the size the optimizer was built with."""
        flat = self._jopt_flat
        now = [p for g in self.param_groups for p in g["params"]]
        if len(now) != len(flat) or any(map(operator.is_not, now, flat)) or \
                [(p.data_ptr(), p.numel()) for p in flat] != self._jopt_at:
            self._jopt_moved()

    def _jopt_moved(self):
        if len(self.param_groups) != self._jopt_ngroups:
            raise RuntimeError(
                "jopt.%s: the optimizer has %d param groups, %d when it was built or "
                "last given one with add_param_group (param_groups changed?)"
                % (self._jopt_name, len(self.param_groups), self._jopt_ngroups))
        i = 0
        for gi, group in enumerate(self.param_groups):
            built = sum(1 for g, _ in self._jopt_pos if g == gi)
            if len(group["params"]) != built:
                raise RuntimeError(
                    "jopt.%s: param group %d has %d parameters, the optimizer was "
                    "built with %d (add parameters with add_param_group)"
                    % (self._jopt_name, gi, len(group["params"]), built))
            for pi, p in enumerate(group["params"]):
                what = _pname(group, gi, pi, p)
                if p is not self._jopt_flat[i]:
                    raise RuntimeError(
                        "jopt.%s: %s is not the tensor the optimizer was built with "
                        "(was param_groups[%d]['params'] changed?); jopt updates "
                        "parameters in place through their addresses"
                        % (self._jopt_name, what, gi))
                if p.data_ptr() != self._jopt_at[i][0]:
                    raise RuntimeError(
                        "jopt.%s: the storage of %s moved since the optimizer was "
                        "built (was p.data replaced?); jopt updates parameters in "
                        "place through their addresses"
                        % (self._jopt_name, what))
                if p.numel() != self._jopt_numels[i]:
                    raise RuntimeError(
                        "jopt.%s: %s has %d elements, %d when the optimizer was built "
                        "(was p.data replaced?); jopt updates parameters in place "
                        "through their addresses"
                        % (self._jopt_name, what, p.numel(), self._jopt_numels[i]))
                i += 1
        raise RuntimeError("jopt.%s: param_groups changed since the optimizer was built"
                           % self._jopt_name)

    def _jopt_bad_grad(self, i, g):
        """A gradient the fast check refused: a contiguous copy of a
        non-contiguous one; one of another element type than jopt was told
        (float32, bfloat16, float16) declared to jopt; else a TypeError
        naming the parameter."""
        p = self._jopt_flat[i]
        gi, pi = self._jopt_pos[i]
        if not (g.layout is _STRIDED and g.dtype in _DTYPES and g.device == p.device
                and g.numel() == p.numel() and (g.is_cpu or g.dtype is _F32)):
            group = self.param_groups[gi]
            raise TypeError(
                "jopt.%s: the gradient of %s must be a dense %s tensor of %d "
                "elements on %s, got %s %s of %d on %s"
                % (self._jopt_name, _pname(group, gi, pi, p),
                   "float32, bfloat16 or float16" if p.is_cpu else "float32",
                   p.numel(), p.device, g.layout, g.dtype, g.numel(), g.device))
        if g.dtype is not self._jopt_gdt[i]:
            if self._jopt_grads[i]:  # its old buffer, sized by the old type
                self._jopt.set_grad(gi, pi, 0)
                self._jopt_grads[i] = 0
            self._jopt.set_dtype(gi, pi, _DTYPES[p.dtype], _DTYPES[g.dtype])
            self._jopt_gdt[i] = g.dtype
        return g.contiguous()

    def _jopt_sync_grads(self):
        """Points jopt at every parameter's current .grad (autograd may have
        made new tensors): one C call, and only when an address changed.
        Returns the parameters that have a gradient."""
        flat = self._jopt_flat
        self._jopt_check_params()
        grads = [p.grad for p in flat]
        cpu, dev = self._jopt_device.type == "cpu", self._jopt_device
        addrs = [0 if g is None else
                 g.data_ptr() if (g.layout is _STRIDED and g.dtype is d and
                                  (g.is_cpu if cpu else g.device == dev)
                                  and g.is_contiguous() and g.numel() == n) else -1
                 for g, d, n in zip(grads, self._jopt_gdt, self._jopt_numels)]
        copies = None
        if -1 in addrs:
            copies = {}
            for i, a in enumerate(addrs):
                if a == -1:
                    copies[i] = self._jopt_bad_grad(i, grads[i])
                    addrs[i] = copies[i].data_ptr()
        if self._jopt_any_empty:
            addrs = [0 if e else a for a, e in zip(addrs, self._jopt_empty)]
        if addrs != self._jopt_grads:
            self._jopt_set_grads(addrs)
        self._jopt_grad_refs = copies  # the copies jopt reads live until the next step
        return [p for p, g in zip(flat, grads) if g is not None]

    def _jopt_inputs(self):
        """The spec's inputs for this step (SophiaH's hessian), given once
        jopt holds this step's gradients."""

    def _jopt_set_grads(self, addrs):
        raw = self._jopt
        if _lib.jopt_set_grads is not None:
            arr = self._jopt_grad_arr
            arr[:len(addrs)] = addrs
            raw.set_grads(arr, len(addrs))
            self._jopt_grads = addrs
            return
        # an older library: one call per changed gradient, absent ones first
        # (a new gradient may lie where another's old one was)
        cur, pos = self._jopt_grads, []
        for gi, g in enumerate(self.param_groups):
            pos += [(gi, pi) for pi in range(len(g["params"]))]
        for i, a in enumerate(addrs):
            if a != cur[i] and cur[i]:
                raw.set_grad(*pos[i], 0)
                cur[i] = 0
        for i, a in enumerate(addrs):
            if a != cur[i]:
                raw.set_grad(*pos[i], a)
                cur[i] = a

    @torch.no_grad()
    def step(self, closure=None):
        """One step; with a closure, calls it (with grad enabled) first and
        returns its loss, as torch.optim does."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped = self._jopt_sync_grads()
        self._jopt_inputs()
        self._jopt_push_hyper()
        if self.state:
            self._jopt_adopt_state()
        if getattr(self._jopt_ctx, "_jopt_torch_threads", "openmp") != "openmp":
            _follow_torch_threads(self._jopt_ctx)
        scale = getattr(self, "grad_scale", None)  # set by GradScaler.step
        found = getattr(self, "found_inf", None)
        if scale is not None or found is not None:
            scale = 1.0 if scale is None else float(scale)
            self._jopt.set_grad_scale(scale, 1 if found is not None and float(found) else 0)
        if self._jopt_device.type == "cuda":  # after what the stream holds
            self._jopt.set_stream(torch.cuda.current_stream(self._jopt_device).cuda_stream)
        if not self._jopt.step():
            return loss  # skipped: nothing changed
        if stepped and _increment_version is not None:
            _increment_version(stepped)
        return loss

    # ---- state ----------------------------------------------------------------

    def jopt_state(self, param, name):
        """A copy of jopt's state buffer `name` ("exp_avg") of `param` as a
        tensor shaped like it (one element for a per-tensor state), and its
        step count; (None, 0) before its first step."""
        if self.state:  # state put there for jopt to take over (ZeRO's load)
            self._jopt_adopt_state()
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p is param:
                    data, step, numel = self._jopt.state_get(gi, pi, name)
                    if data is None:
                        return None, step
                    if self._jopt_device.type == "cuda":  # device memory
                        self._jopt.set_stream(
                            torch.cuda.current_stream(self._jopt_device).cuda_stream)
                        host = self._jopt.state_copy(gi, pi, name, numel)
                        t = torch.frombuffer(bytearray(host), dtype=torch.float32)
                        t = t[:1] if numel == 1 and p.numel() != 1 else t.reshape(p.shape)
                        return t.to(p.device), step
                    dt = [k for k, v in _DTYPES.items()
                          if v == self._jopt.state_dtype(gi, pi, name)][0]
                    if numel == 1 and p.numel() != 1:
                        return torch.tensor([data[0]], dtype=torch.float32), step
                    arr = (ctypes.c_char * (numel * dt.itemsize)).from_address(
                        ctypes.addressof(data.contents))
                    t = torch.frombuffer(bytearray(arr), dtype=dt)
                    return t.reshape(_spec2.state_shape(self._jopt_spec, name, p.shape,
                                                        numel)), step
        raise ValueError("jopt: the tensor is not a parameter of this optimizer")

    # ---- state dicts: torch.optim's layout -------------------------------------
    #
    # state_dict() returns torch.optim.X's layout (per parameter index: "step"
    # and the states under torch's names; L-BFGS: torch's keys on the first
    # parameter), so torch.optim.X.load_state_dict takes it; load_state_dict
    # takes that layout from torch.optim.X or from jopt.  The conversion goes
    # through jopt's checkpoint (docs/checkpoint.md): the hyperparameters
    # are pushed from the loaded param groups, the states written into a
    # checkpoint made from this optimizer's own, and jopt_state_load_mem
    # checks it all before it changes anything.

    def _jopt_torch_state(self, ck):
        """{param: torch-layout state} from a parsed jopt checkpoint."""
        scalar_dtype = _scalar_dtype()
        flat = self._jopt_flat
        out = {}
        for p, cp in zip(flat, ck.params):
            if not cp.states:
                continue
            st = {}
            if self._jopt_name not in _NO_STEP:
                st["step"] = torch.tensor(float(cp.step), dtype=scalar_dtype)
            for name, (count, off) in cp.states.items():
                shape = _spec2.state_shape(self._jopt_spec, name, p.shape, count)
                scalar = name in _SCALAR_STATES or (count == 1 and p.numel() != 1 and
                                                    shape == (1,))
                dt = _TORCH_OF[cp.dtypes[name]]
                t = torch.empty(() if scalar else shape, dtype=dt)
                ctypes.memmove(t.data_ptr(), ck.address(off), t.element_size() * count)
                st[name] = t
            out[p] = st
        if self._jopt_name == "Adagrad":  # torch makes every parameter's state up front
            for g in self.param_groups:
                for p in g["params"]:
                    if p not in out:
                        out[p] = {"step": torch.tensor(0.0, dtype=scalar_dtype),
                                  "sum": torch.full_like(
                                      p, g["initial_accumulator_value"],
                                      memory_format=torch.preserve_format).detach()}
        return out

    def state_dict(self):
        """torch.optim.X.state_dict()'s layout: {"state": {index: {"step": ...,
        "exp_avg": ...}}, "param_groups": [...]} (copies of jopt's state),
        plus "jopt_spec", the spec's name.  torch.optim.X.load_state_dict
        and jopt.torch.X.load_state_dict both take it.  Like torch's, it
        checks no option: the param groups are copied as they are."""
        if self.state:  # put there by code written for torch.optim (ZeRO's load)
            self._jopt_adopt_state()
        ck = _ckpt.Checkpoint(bytearray(self._jopt.state_save_mem()))
        state = collections.defaultdict(dict)
        state.update(self._jopt_torch_state(ck))
        if ck.closure is not None:
            self._jopt_closure_to_torch(ck, state)
        held, self.state = self.state, state
        try:
            sd = super().state_dict()
        finally:
            self.state = held
        sd["jopt_spec"] = self._jopt_spec
        return sd

    def _jopt_closure_to_torch(self, ck, state):
        pass

    def _jopt_closure_from_torch(self, ck, state):
        return ck.closure

    def _jopt_what(self, p):
        """A parameter's name for messages."""
        for gi, group in enumerate(self.param_groups):
            for pi, q in enumerate(group["params"]):
                if q is p:
                    return _pname(group, gi, pi, p)
        return "a parameter"

    def _jopt_from_torch(self, state):
        """A jopt checkpoint holding torch-layout `state` ({param: {...}}) and
        the current param groups' scheduler keys; ValueError naming what
        does not fit."""
        ck = _ckpt.Checkpoint(bytearray(self._jopt.state_save_mem()))
        names = set(ck.state_names)
        params, keep = [], []  # keep: contiguous copies, alive until built
        # the element type jopt keeps each state in: torch casts a loaded
        # state to its parameter's dtype; jopt casts it to its own state's
        # (state_dtype for per-element states, the group's, float32 else)
        gdt = [g.tail[-10] for g in ck.groups for _ in range(g.nparams)]
        for i, (p, cp) in enumerate(zip(self._jopt_flat, ck.params)):
            st = state.get(p) or {}
            if self._jopt_name in _CLOSURE_KEYS:
                params.append((cp.numel, cp.step, {}))
                continue
            step = st.get("step", 0)
            if isinstance(step, torch.Tensor):
                step = step.item()
            if not (isinstance(step, (int, float)) and 0 <= step <= 2 ** 53
                    and float(step).is_integer()):
                raise ValueError("jopt.%s.load_state_dict: the step of %s is %r, not a "
                                 "count up to 2^53" % (self._jopt_name, self._jopt_what(p),
                                                       step))
            states = {}
            for k, v in st.items():
                if k == "step" or v is None:
                    continue
                if k not in names:
                    raise ValueError(
                        "jopt.%s.load_state_dict: the state of %s has '%s', which %s does "
                        "not keep (it keeps %s): a state dict of another optimizer?"
                        % (self._jopt_name, self._jopt_what(p), k, self._jopt_name,
                           ", ".join(ck.state_names) or "no state"))
                if not isinstance(v, torch.Tensor) or v.dtype not in _DTYPES \
                        or v.is_sparse or v.device.type != "cpu":
                    raise ValueError("jopt.%s.load_state_dict: state '%s' of %s is not a "
                                     "dense float32, bfloat16 or float16 CPU tensor"
                                     % (self._jopt_name, k, self._jopt_what(p)))
                want = _spec2.state_shape(self._jopt_spec, k, p.shape, p.numel())
                if want != tuple(p.shape):  # a row or column state (Adafactor's)
                    bad = tuple(v.shape) != want
                else:
                    bad = v.numel() not in (p.numel(), 1) or (
                        v.numel() == p.numel() and v.dim() and v.shape != p.shape)
                if bad:
                    raise ValueError(
                        "jopt.%s.load_state_dict: state '%s' of %s has shape %s, the "
                        "parameter %s: a state dict of another model or parameter "
                        "order?" % (self._jopt_name, k, self._jopt_what(p),
                                    list(v.shape), list(p.shape)))
                dt = cp.dtypes.get(k)
                if dt is None:
                    dt = gdt[i] if v.numel() == p.numel() and p.numel() != 1 else 0
                v = v.to(_TORCH_OF[dt]).contiguous()
                keep.append(v)
                states[k] = (v.numel(), v.data_ptr(), dt)
            if self._jopt_name == "Adagrad" and step == 0:
                states = {}  # torch's state from construction: jopt makes it at step 1
            params.append((cp.numel, int(step), states))
        groups = []
        for g, cg in zip(self.param_groups, ck.groups):
            keys = []
            for k in ck.key_names:
                v = g.get(k)
                if isinstance(v, torch.Tensor):
                    v = v.item()
                keys.append(float("nan") if v is None else float(v))
            groups.append((cg, keys))
        closure = self._jopt_closure_from_torch(ck, state)
        return _ckpt.build(ck, groups, params, closure)

    def load_state_dict(self, state_dict):
        """Loads a state dict of torch.optim.X or of jopt.torch.X (or, from an
        earlier jopt, one with "jopt_state").  Everything is checked before
        anything changes: a state dict of another optimizer, or of another
        parameter layout, raises ValueError naming what does not fit, and
        leaves the optimizer as it was."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict \
                or "state" not in state_dict:
            raise ValueError("jopt.%s.load_state_dict: not an optimizer state dict "
                             "(a dict with 'state' and 'param_groups')" % self._jopt_name)
        spec = state_dict.get("jopt_spec")
        if spec is not None and spec != self._jopt_spec:
            raise ValueError("jopt.%s.load_state_dict: this state dict is of jopt's '%s', "
                             "not '%s'" % (self._jopt_name, spec, self._jopt_spec))
        if "jopt_state" in state_dict:
            return self._jopt_load_checkpoint(state_dict)
        for gi, g in enumerate(state_dict["param_groups"]):
            missing = [k for k in self._jopt_hyper if k not in g]
            if missing:
                raise ValueError(
                    "jopt.%s.load_state_dict: param group %d of the state dict has no %s: "
                    "a state dict of another optimizer?" % (
                        self._jopt_name, gi, ", ".join(repr(k) for k in missing)))
        groups, state = self.param_groups, self.state
        pushed = [dict(d) for d in self._jopt_pushed]
        snap = self._jopt.state_save_mem()
        try:
            super().load_state_dict(state_dict)  # torch's checks, id mapping and hooks
            for new, old in zip(self.param_groups, groups):
                for k in self._jopt_flags:  # ours: jopt's own kernel runs either way
                    if k in old:
                        new[k] = old[k]
                    else:
                        new.pop(k, None)
            self._jopt_push_hyper()
            blob = self._jopt_from_torch(self.state)
            self._jopt.state_load_mem(blob)
        except BaseException:
            self.__dict__["param_groups"] = groups
            self._jopt_pushed = pushed
            self._jopt.state_load_mem(snap)  # the hyperparameters pushed, back
            raise
        finally:
            self.state = state

    def _jopt_adopt_state(self):
        """State that code written for torch.optim put into opt.state itself
        (ZeroRedundancyOptimizer.load_state_dict does): jopt takes it over,
        for the parameters it names, and opt.state is empty again."""
        given = {p: st for p, st in self.state.items() if st}
        try:
            if given:
                ck = _ckpt.Checkpoint(bytearray(self._jopt.state_save_mem()))
                state = self._jopt_torch_state(ck)
                if ck.closure is not None:
                    self._jopt_closure_to_torch(ck, state)
                state.update(given)
                self._jopt.state_load_mem(self._jopt_from_torch(state))
        finally:
            self.state.clear()

    def _jopt_load_checkpoint(self, state_dict):
        """A state dict with jopt's checkpoint bytes ("jopt_state")."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't "
                             "match the size of optimizer's group")
        snap = self._jopt.state_save_mem()
        groups = [dict(g) for g in self.param_groups]
        pushed = self._jopt_pushed
        self._jopt.state_load_mem(state_dict["jopt_state"])  # checks, then changes
        try:
            for s, g in zip(saved, self.param_groups):
                for k, v in s.items():
                    if k not in ("params", "param_names"):
                        g[k] = v
            # jopt now has the options saved in the checkpoint; the loaded param
            # groups' (which may have been edited since) are pushed over them
            self._jopt_pushed = [_lib.unknown_options(self._jopt_hyper)
                                 for _ in self.param_groups]
            self._jopt_push_hyper()
        except BaseException:
            for g, old in zip(self.param_groups, groups):
                g.clear()
                g.update(old)
            self._jopt_pushed = pushed
            self._jopt.state_load_mem(snap)
            raise

    def __reduce_ex__(self, protocol):
        raise TypeError("jopt.%s cannot be pickled or copied: its state lives in jopt; "
                        "save state_dict() (torch.save takes it) and load it into a "
                        "new optimizer" % self._jopt_name)

    def __del__(self):
        raw = getattr(self, "_jopt", None)
        if raw is not None:
            raw.close()


class JoptClosureOptimizer(JoptOptimizer):
    """Base of LBFGS and CG (not used directly): jopt_step calls the closure
    itself, as often as the method needs.  One parameter group, as in torch."""

    _step_supports_amp_scaling = False

    def __init__(self, params, *args, **kwargs):
        JoptOptimizer.__init__(self, params, *args, **kwargs)
        # jopt reads the gradients from buffers fixed at construction, while
        # autograd may give .grad a new tensor at every backward: each
        # evaluation copies .grad into one flat buffer (a view per parameter)
        params = self.param_groups[0]["params"]
        self._jopt_flat_grad = torch.zeros(sum(p.numel() for p in params), dtype=torch.float32)
        self._jopt_grad_views = list(torch.split(self._jopt_flat_grad,
                                                 [p.numel() for p in params]))
        for pi, v in enumerate(self._jopt_grad_views):
            if v.numel():
                self._jopt.set_grad(0, pi, v.data_ptr())

    # torch.optim.LBFGS keeps its state on the first parameter: func_evals,
    # n_iter, d, t, old_dirs, old_stps, ro, H_diag, prev_flat_grad,
    # prev_loss (and al, scratch space).  jopt's driver state (runtime/lbfgs.c,
    # "checkpoints"): u64 numel; f64 t, H_diag, prev_loss, func_evals,
    # n_iter; u8 has_d, has_prev_flat_grad; u32 pairs; per pair, oldest
    # first: f64 ro, f32 y[numel] (old_dirs), f32 s[numel] (old_stps); then
    # f32 d[numel], f32 prev_flat_grad[numel] if present.  CG keeps none.

    def _jopt_closure_to_torch(self, ck, state):
        steps, blob = ck.closure
        if self._jopt_name != "LBFGS" or not blob:
            return
        n = sum(p.numel() for p in self._jopt_flat)
        numel, = struct.unpack_from("<Q", blob, 0)
        t, h_diag, prev_loss, evals, n_iter = struct.unpack_from("<5d", blob, 8)
        has_d, has_pfg = blob[48], blob[49]
        pairs, = struct.unpack_from("<I", blob, 50)
        pos = 54
        mv = memoryview(blob)

        def vec():
            nonlocal pos
            v = torch.frombuffer(bytearray(mv[pos:pos + 4 * n]), dtype=torch.float32) \
                if n else torch.empty(0)
            pos += 4 * n
            return v

        ro, dirs, stps = [], [], []
        for _ in range(pairs):
            r, = struct.unpack_from("<d", blob, pos)
            pos += 8
            ro.append(torch.tensor(r, dtype=torch.float32))
            dirs.append(vec())
            stps.append(vec())
        st = {"func_evals": int(evals), "n_iter": int(n_iter)}
        if n_iter:
            st.update(d=vec() if has_d else None, t=t,
                      old_dirs=dirs, old_stps=stps, ro=ro,
                      H_diag=torch.tensor(h_diag, dtype=torch.float32) if pairs else 1,
                      prev_flat_grad=None, prev_loss=prev_loss)
            if has_pfg:
                st["prev_flat_grad"] = vec()
        assert pos == len(blob) and numel == n
        if self._jopt_flat:
            state[self._jopt_flat[0]] = st

    def _jopt_closure_from_torch(self, ck, state):
        steps, _ = ck.closure
        if self._jopt_name != "LBFGS":
            return (0, b"")
        flat = self._jopt_flat
        st = dict(state.get(flat[0]) or {}) if flat else {}
        n = sum(p.numel() for p in flat)
        where = "jopt.LBFGS.load_state_dict: the L-BFGS state"
        known = {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                 "prev_flat_grad", "prev_loss", "al"}
        unknown = sorted(set(st) - known)
        if unknown:
            raise ValueError("%s has %s, which torch.optim.LBFGS does not keep: a state "
                             "dict of another optimizer?" % (where, ", ".join(unknown)))
        others = [p for p in state if p is not (flat[0] if flat else None) and state[p]]
        if others:
            raise ValueError("%s is on %s; torch.optim.LBFGS keeps it on the first "
                             "parameter only" % (where, self._jopt_what(others[0])))

        def num(k, default):
            v = st.get(k)
            if v is None:
                return default
            return float(v.item() if isinstance(v, torch.Tensor) else v)

        def vec(k, v):
            if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or \
                    v.numel() != n:
                raise ValueError("%s: %s is not a float32 tensor of %d elements (the "
                                 "parameters'): a state dict of another model?" % (where, k, n))
            v = v.detach().reshape(-1).contiguous()
            return ctypes.string_at(v.data_ptr(), 4 * n) if n else b""

        evals, n_iter = num("func_evals", 0), num("n_iter", 0)
        dirs, stps, ro = st.get("old_dirs") or [], st.get("old_stps") or [], st.get("ro") or []
        if not (len(dirs) == len(stps) == len(ro)):
            raise ValueError("%s: old_dirs, old_stps and ro have %d, %d and %d entries"
                             % (where, len(dirs), len(stps), len(ro)))
        hs = self.param_groups[0]["history_size"]
        if len(dirs) > hs:
            raise ValueError("%s holds %d curvature pairs, more than history_size=%d"
                             % (where, len(dirs), hs))
        d, pfg = st.get("d"), st.get("prev_flat_grad")
        out = [struct.pack("<Q5d", n, num("t", 0.0), num("H_diag", 1.0), num("prev_loss", 0.0),
                           evals, n_iter),
               bytes([d is not None, pfg is not None]), struct.pack("<I", len(dirs))]
        for i, (y, s_, r) in enumerate(zip(dirs, stps, ro)):
            r = r.item() if isinstance(r, torch.Tensor) else r
            out += [struct.pack("<d", float(r)), vec("old_dirs[%d]" % i, y),
                    vec("old_stps[%d]" % i, s_)]
        if d is not None:
            out.append(vec("d", d))
        if pfg is not None:
            out.append(vec("prev_flat_grad", pfg))
        return (steps, b"".join(out))

    def _jopt_shapes(self, gi):
        pass

    def _jopt_check_groups(self):
        if len(self.param_groups) != 1:
            raise ValueError("%s doesn't support per-parameter options (parameter "
                             "groups)" % self._jopt_name)

    @torch.no_grad()
    def step(self, closure):
        """Calls closure() (with grad enabled) as often as the method needs and
        returns the first call's loss, as torch.optim.LBFGS.step does.  An
        exception in the closure is re-raised here, with the parameters and
        the optimizer's state as they were before the step."""
        params = self.param_groups[0]["params"]
        self._jopt_check_params()
        self._jopt_push_hyper()
        if self.state:
            self._jopt_adopt_state()
        views = self._jopt_grad_views

        def evaluate():
            with torch.enable_grad():
                out = closure()
            for p, v in zip(params, views):
                if p.grad is None:  # torch's _gather_flat_grad: zeros
                    v.zero_()
                else:
                    v.copy_(p.grad.reshape(-1))
            return out, float(out)

        first = self._jopt.run_closure(evaluate)
        if _increment_version is not None:
            stepped = [p for p in params if p.numel()]
            if stepped:
                _increment_version(stepped)
        return first


def _make(name):
    spec, sig, hyper, flags = describe(name)
    if name in CLOSURE:
        base = JoptClosureOptimizer
        doc = ("jopt.torch.%s: %s over jopt's spec '%s'; step(closure) only.\n\n"
               "Signature: %s%s" % (name, "torch.optim.LBFGS's interface" if name ==
                                    "LBFGS" else "torch7 optim.cg", spec, name, sig))
    else:
        base = JoptOptimizer
        doc = ("jopt.torch.%s: torch.optim.%s's interface over jopt's JIT-compiled spec "
               "'%s'.\n\nSignature: %s%s" % (name, name, spec, name, sig))
    cls = type(name, _spec2.TORCH_MIXINS.get(name, ()) + (base,), {
        "__doc__": doc, "__module__": __name__, "_jopt_name": name, "_jopt_spec": spec,
        "_jopt_sig": sig, "_jopt_hyper": tuple(hyper), "_jopt_flags": tuple(flags)})
    cls.__init__ = _init_for(sig, base)
    return cls


def _init_for(sig, base):
    def __init__(self, params, *args, **kwargs):
        base.__init__(self, params, *args, **kwargs)
    __init__.__signature__ = sig.replace(parameters=[
        sig.parameters["params"].replace(name="self")] + list(sig.parameters.values()))
    return __init__


for _n in OPTIMIZERS:
    globals()[_n] = _make(_n)
del _n


# ---- any spec: a shipped one's name, or a .lua file of your own (_custom.py) ----

class _CustomClosureState:
    """A closure spec of one's own keeps its driver's state (L-BFGS's
    history) in no layout torch knows: its state dict carries jopt's
    checkpoint ("jopt_state"), which load_state_dict restores exactly."""

    def state_dict(self):
        sd = super().state_dict()
        sd["jopt_state"] = self._jopt.state_save_mem()
        return sd


_FLAVOR = _custom.Flavor(sys.modules[__name__], "jopt.torch", JoptOptimizer,
                         JoptClosureOptimizer, _spec2.TorchGroupState,
                         closure_mixin=_CustomClosureState)


def optimizer_class(spec, name=None):
    """The jopt.torch class of spec `spec`: a shipped spec's name ("adam")
    gives its class (jopt.torch.Adam); another name in the spec path, or a
    path to a .lua file, a class whose signature is the spec's
    hyperparameters and defaults (`lr` positional, the rest keyword-only).
    `name`: the class's name (default: the spec's)."""
    return _custom.optimizer_class(_FLAVOR, spec, name)


class Optimizer:
    """Optimizer(params, spec="adam" or "path/to/rule.lua", **options): an
    instance of optimizer_class(spec), built with these options."""

    def __new__(cls, params, spec, **options):
        return _custom.make_optimizer(_FLAVOR, params, spec, options)
