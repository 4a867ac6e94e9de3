"""Drop-in torch.optim optimizers whose step() runs jopt's JIT-compiled kernels.

    import jopt.torch
    opt = jopt.torch.Adam(model.parameters(), lr=1e-3)

Each class subclasses torch.optim.Optimizer with torch's constructor
signature, so param groups, zero_grad and torch.optim.lr_scheduler work.
Parameters must be float32, contiguous tensors, all on the CPU or all on
one CUDA device; on a GPU, step() is enqueued on
torch.cuda.current_stream() (docs/gpu.md)."""

import ctypes

import torch

from . import _lib
from ._lib import normalize, default_context
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
    if p.device.type not in ("cpu", "cuda"):
        raise ValueError("jopt.%s: %s is on %s; jopt takes CPU or CUDA tensors only"
                         % (cls, what, p.device))
    if not p.is_contiguous():
        raise ValueError("jopt.%s: %s is not contiguous; jopt takes contiguous tensors "
                         "only" % (cls, what))


def _device_of(cls, groups):
    """The one device every parameter is on."""
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
        super().__init__(params, defaults)
        self._jopt_device = _device_of(cls._jopt_name, self.param_groups)
        if ctx is None:
            ctx = default_context(None if self._jopt_device.type == "cpu" else self._jopt_device)
        self._jopt_ctx = ctx
        self._jopt_check_groups()
        groups = []
        for gi, group in enumerate(self.param_groups):
            groups.append(self._jopt_group_spec(gi, group))
        self._jopt = _lib.RawOptim(self._jopt_ctx, cls._jopt_spec, groups)
        self._jopt_pushed = [self._hyper_of(g) for g in self.param_groups]
        self._jopt_grads = [[0] * len(g["params"]) for g in self.param_groups]
        self._jopt_grad_refs = [[None] * len(g["params"]) for g in self.param_groups]
        self._jopt_ptrs = [[p.data_ptr() for p in g["params"]] for g in self.param_groups]

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
        self._jopt_grads.append([0] * len(group["params"]))
        self._jopt_grad_refs.append([None] * len(group["params"]))
        self._jopt_ptrs.append([p.data_ptr() for p in group["params"]])

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

    def _jopt_sync_grads(self):
        raw = self._jopt
        new = []
        for gi, group in enumerate(self.param_groups):
            cur = self._jopt_grads[gi]
            refs = self._jopt_grad_refs[gi]
            ptrs = self._jopt_ptrs[gi]
            for pi, p in enumerate(group["params"]):
                if p.data_ptr() != ptrs[pi]:
                    raise RuntimeError(
                        "jopt.%s: the storage of %s moved since the optimizer was "
                        "built (was p.data replaced?); jopt updates parameters in "
                        "place through their addresses"
                        % (self._jopt_name, _pname(group, gi, pi, p)))
                g = p.grad
                if g is None or p.numel() == 0:
                    addr = 0
                    refs[pi] = None
                else:
                    if g.layout != torch.strided or g.dtype != torch.float32 or \
                            g.device != p.device or g.numel() != p.numel():
                        raise TypeError(
                            "jopt.%s: the gradient of %s must be a dense float32 "
                            "tensor of %d elements on %s, got %s %s of %d on %s"
                            % (self._jopt_name, _pname(group, gi, pi, p), p.numel(),
                               p.device, g.layout, g.dtype, g.numel(), g.device))
                    if not g.is_contiguous():
                        g = g.contiguous()
                    refs[pi] = g
                    addr = g.data_ptr()
                if addr != cur[pi]:
                    new.append((gi, pi, addr))
        # unset first: a new gradient may lie where another's old one was
        for gi, pi, _ in new:
            if self._jopt_grads[gi][pi]:
                raw.set_grad(gi, pi, 0)
                self._jopt_grads[gi][pi] = 0
        for gi, pi, addr in new:
            if addr:
                raw.set_grad(gi, pi, addr)
                self._jopt_grads[gi][pi] = addr

    @torch.no_grad()
    def step(self, closure=None):
        """One step; with a closure, calls it (with grad enabled) first and
        returns its loss, as torch.optim does."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._jopt_sync_grads()
        self._jopt_push_hyper()
        if self._jopt_device.type == "cuda":  # after what the stream holds
            self._jopt.set_stream(torch.cuda.current_stream(self._jopt_device).cuda_stream)
        self._jopt.step()
        if _increment_version is not None:
            stepped = [p for g in self.param_groups for p in g["params"]
                       if p.grad is not None]
            if stepped:
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
                    if self._jopt_device.type == "cuda":  # device memory
                        self._jopt.set_stream(
                            torch.cuda.current_stream(self._jopt_device).cuda_stream)
                        host = self._jopt.state_copy(gi, pi, name, numel)
                        t = torch.frombuffer(bytearray(host), dtype=torch.float32)
                        t = t[:1] if numel == 1 and p.numel() != 1 else t.reshape(p.shape)
                        return t.to(p.device), step
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
            if p.data_ptr() != self._jopt_ptrs[0][pi]:
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
