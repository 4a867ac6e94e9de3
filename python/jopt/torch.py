"""Drop-in torch.optim optimizers whose step() runs jopt's JIT-compiled kernels.

    import jopt.torch
    opt = jopt.torch.Adam(model.parameters(), lr=1e-3)

Each class subclasses torch.optim.Optimizer with torch's constructor
signature, so param groups, zero_grad and torch.optim.lr_scheduler work.
Parameters must be float32, contiguous CPU tensors."""

import ctypes
import os
import threading

import torch

from . import _lib
from ._lib import normalize
from ._specs import OPTIMIZERS, CLOSURE, describe, check_flags, prepare

__all__ = list(OPTIMIZERS) + ["JoptOptimizer", "JoptClosureOptimizer"]

try:
    _increment_version = torch.autograd.graph.increment_version
except AttributeError:  # pragma: no cover
    _increment_version = None


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
    if p.dtype != torch.float32:
        raise TypeError("jopt.%s: %s has dtype %s; jopt takes torch.float32 only"
                        % (cls, what, p.dtype))
    if p.device.type != "cpu":
        raise ValueError("jopt.%s: %s is on %s; jopt takes CPU tensors only"
                         % (cls, what, p.device))
    if not p.is_contiguous():
        raise ValueError("jopt.%s: %s is not contiguous; jopt takes contiguous tensors "
                         "only" % (cls, what))


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


class JoptOptimizer(torch.optim.Optimizer):
    """Base of the jopt.torch optimizers (not used directly)."""

    _jopt_name = None

    def __init__(self, params, *args, **kwargs):
        cls = type(self)
        ctx = kwargs.pop("jopt_context", None)
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
        self._jopt_ctx = ctx if ctx is not None else torch_context()
        super().__init__(params, defaults)
        self._jopt_check_groups()
        groups = []
        for gi, group in enumerate(self.param_groups):
            groups.append(self._jopt_group_spec(gi, group))
        self._jopt = _lib.RawOptim(self._jopt_ctx, cls._jopt_spec, groups)
        self._jopt_pushed = [self._hyper_of(g) for g in self.param_groups]
        self._jopt_index_params()

    def _jopt_index_params(self):
        """The flat views step() works on: every parameter in group order,
        their addresses, and the gradient addresses jopt holds."""
        flat = [p for g in self.param_groups for p in g["params"]]
        n = len(flat)
        self._jopt_flat = flat
        self._jopt_ptrs = [p.data_ptr() for p in flat]
        self._jopt_empty = [p.numel() == 0 for p in flat]
        self._jopt_any_empty = any(self._jopt_empty)
        self._jopt_grads = [0] * n          # the gradient addresses jopt holds
        self._jopt_grad_refs = None         # contiguous copies jopt reads
        self._jopt_grad_arr = (ctypes.c_void_p * max(n, 1))()

    # ---- groups -------------------------------------------------------------

    def _jopt_check_groups(self):
        pass

    def _hyper_of(self, group):
        out = {}
        for k in self._jopt_hyper:
            v = group[k]
            if isinstance(v, torch.Tensor):
                v = v.item()
            out[k] = normalize(v)
        return out

    def _jopt_group_spec(self, gi, group):
        check_flags(self._jopt_name, {k: group[k] for k in self._jopt_flags if k in group})
        params = []
        for pi, p in enumerate(group["params"]):
            _check_param(self._jopt_name, group, gi, pi, p)
            params.append((p.data_ptr() if p.numel() else 0, 0, p.numel()))
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
        self._jopt_pushed.append(self._hyper_of(group))
        held = self._jopt_grads + [0] * len(group["params"])  # jopt's, unchanged
        refs = self._jopt_grad_refs
        self._jopt_index_params()
        self._jopt_grads, self._jopt_grad_refs = held, refs

    # ---- step -----------------------------------------------------------------

    def _jopt_push_hyper(self):
        raw = self._jopt
        for gi, group in enumerate(self.param_groups):
            pushed = self._jopt_pushed[gi]
            for k in self._jopt_hyper:
                v = group[k]
                if isinstance(v, torch.Tensor):
                    v = v.item()
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

    def _jopt_moved(self):
        ptrs = iter(self._jopt_ptrs)
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.data_ptr() != next(ptrs):
                    raise RuntimeError(
                        "jopt.%s: the storage of %s moved since the optimizer was "
                        "built (was p.data replaced?); jopt updates parameters in "
                        "place through their addresses"
                        % (self._jopt_name, _pname(group, gi, pi, p)))

    def _jopt_bad_grad(self, i, g):
        """A gradient the fast check refused: a contiguous copy of a
        non-contiguous one, else a TypeError naming the parameter."""
        p = self._jopt_flat[i]
        if g.layout is _STRIDED and g.dtype is _F32 and g.is_cpu and g.numel() == p.numel():
            return g.contiguous()
        for gi, group in enumerate(self.param_groups):
            for pi, q in enumerate(group["params"]):
                if q is p:
                    raise TypeError(
                        "jopt.%s: the gradient of %s must be a dense float32 CPU "
                        "tensor of %d elements, got %s %s of %d on %s"
                        % (self._jopt_name, _pname(group, gi, pi, p), p.numel(),
                           g.layout, g.dtype, g.numel(), g.device))
        raise AssertionError("unreachable")

    def _jopt_sync_grads(self):
        """Points jopt at every parameter's current .grad (autograd may have
        made new tensors): one C call, and only when an address changed.
        Returns the parameters that have a gradient."""
        flat = self._jopt_flat
        if [p.data_ptr() for p in flat] != self._jopt_ptrs:
            self._jopt_moved()
        grads = [p.grad for p in flat]
        addrs = [0 if g is None else
                 g.data_ptr() if (g.layout is _STRIDED and g.dtype is _F32 and g.is_cpu
                                  and g.is_contiguous()) else -1
                 for g in grads]
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
        self._jopt_push_hyper()
        if getattr(self._jopt_ctx, "_jopt_torch_threads", "openmp") != "openmp":
            _follow_torch_threads(self._jopt_ctx)
        self._jopt.step()
        if stepped and _increment_version is not None:
            _increment_version(stepped)
        return loss

    # ---- state ----------------------------------------------------------------

    def jopt_state(self, param, name):
        """A copy of jopt's state buffer `name` ("exp_avg") of `param` as a
        tensor shaped like it (one element for a per-tensor state), and its
        step count; (None, 0) before its first step."""
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p is param:
                    data, step, numel = self._jopt.state_get(gi, pi, name)
                    if data is None:
                        return None, step
                    if numel == 1 and p.numel() != 1:
                        return torch.tensor([data[0]], dtype=torch.float32), step
                    arr = (ctypes.c_float * p.numel()).from_address(
                        ctypes.addressof(data.contents))
                    t = torch.frombuffer(bytearray(arr), dtype=torch.float32)
                    return t.reshape(p.shape), step
        raise ValueError("jopt: the tensor is not a parameter of this optimizer")

    def state_dict(self):
        """torch-shaped state dict whose 'jopt_state' holds jopt's checkpoint
        (jopt_state_save_mem): step counts, all state, hyperparameters."""
        self._jopt_push_hyper()
        groups, idx = [], 0
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = list(range(idx, idx + len(g["params"])))
            idx += len(g["params"])
            groups.append(d)
        return {"state": {}, "param_groups": groups,
                "jopt_state": self._jopt.state_save_mem(), "jopt_spec": self._jopt_spec}

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict) or "jopt_state" not in state_dict:
            raise ValueError("jopt.%s.load_state_dict: this state dict was not made by "
                             "jopt.torch (a torch.optim state dict cannot be loaded into "
                             "jopt)" % self._jopt_name)
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't "
                             "match the size of optimizer's group")
        self._jopt.state_load_mem(state_dict["jopt_state"])  # checks, then changes
        for gi, (s, g) in enumerate(zip(saved, self.param_groups)):
            for k, v in s.items():
                if k not in ("params", "param_names"):
                    g[k] = v
            self._jopt_pushed[gi] = self._hyper_of(g)  # jopt has them from the checkpoint

    def __del__(self):
        raw = getattr(self, "_jopt", None)
        if raw is not None:
            raw.close()


class JoptClosureOptimizer(JoptOptimizer):
    """Base of LBFGS and CG (not used directly): jopt_step calls the closure
    itself, as often as the method needs.  One parameter group, as in torch."""

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
        group = self.param_groups[0]
        params = group["params"]
        for pi, p in enumerate(params):
            if p.data_ptr() != self._jopt_ptrs[pi]:
                raise RuntimeError(
                    "jopt.%s: the storage of %s moved since the optimizer was built "
                    "(was p.data replaced?)" % (self._jopt_name, _pname(group, 0, pi, p)))
        self._jopt_push_hyper()
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
    cls = type(name, (base,), {
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
