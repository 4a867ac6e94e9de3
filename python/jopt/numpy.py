"""jopt's optimizers over NumPy float32 arrays, for programs without torch.

    import jopt.numpy
    opt = jopt.numpy.Adam([w, b], lr=1e-3)
    opt.step(grads=[gw, gb])          # or bind once: Adam([w, b], grads=[gw, gb])

Parameters are updated in place; they and the gradients must be
C-contiguous arrays (parameters writeable) of float32, float16 or, through
ml_dtypes, bfloat16, each with its own (kernels compute in float32 and
round once).  Param groups are lists of
dicts, {"params": [w], "lr": 1e-2}, as in torch; `opt.param_groups[i]["lr"]`
may be changed between steps and is passed to jopt at the next step."""

import ctypes
import sys

import numpy as np

from . import _custom, _lib, _spec2
from ._lib import normalize, default_context
from ._specs import OPTIMIZERS, CLOSURE, describe, check_flags, prepare

__all__ = list(OPTIMIZERS) + ["NumpyOptimizer", "NumpyClosureOptimizer", "Optimizer",
                               "optimizer_class"]


_DTYPES = {np.dtype(np.float32): _lib.FLOAT32, np.dtype(np.float16): _lib.FLOAT16}
try:  # bfloat16 is not numpy's own: ml_dtypes (which jax and torch use) has it
    import ml_dtypes
    _DTYPES[np.dtype(ml_dtypes.bfloat16)] = _lib.BFLOAT16
except ImportError:  # pragma: no cover
    pass


def _check_array(cls, what, a, writeable):
    if not isinstance(a, np.ndarray):
        raise TypeError("jopt.numpy.%s: %s is a %s, not a numpy.ndarray"
                        % (cls, what, type(a).__name__))
    if a.dtype not in _DTYPES:
        raise TypeError("jopt.numpy.%s: %s has dtype %s; jopt takes float32, float16 "
                        "and ml_dtypes.bfloat16" % (cls, what, a.dtype))
    if not a.flags.c_contiguous:
        raise ValueError("jopt.numpy.%s: %s is not C-contiguous" % (cls, what))
    if writeable and not a.flags.writeable:
        raise ValueError("jopt.numpy.%s: %s is read-only" % (cls, what))


class NumpyOptimizer:
    """Base of the jopt.numpy optimizers (not used directly)."""

    def __init__(self, params, *args, grads=None, jopt_context=None, jopt_options=None,
                 **kwargs):
        cls = type(self)
        bound = cls._jopt_sig.bind(params, *args, **kwargs)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        params = defaults.pop("params")
        check_flags(cls._jopt_name, defaults)
        prepare(cls._jopt_name, defaults)
        for f in cls._jopt_flags:
            defaults.pop(f, None)
        self.defaults = defaults
        if isinstance(params, np.ndarray):
            params = [params]
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        self._types = []  # per group, per parameter: (dtype, grad dtype) codes
        self._ctx = jopt_context if jopt_context is not None else default_context()
        self._raw = None
        specs = [self._add_group(g) for g in params]
        self._check_groups()
        self._raw = _lib.RawOptim(self._ctx, cls._jopt_spec, specs, jopt_options)
        for gi in range(len(self.param_groups)):
            self._shapes(gi)
        self._pushed = [self._hyper_of(g) for g in self.param_groups]
        self._bound = None
        if grads is not None:
            self.bind_grads(grads)

    def _check_groups(self):
        pass

    def _shapes(self, gi):
        """jopt sees each array's shape (Adafactor factors a matrix)."""
        _spec2.set_shapes(self._raw, gi, [p.shape for p in self.param_groups[gi]["params"]])

    def _hyper_of(self, group):
        return {k: normalize(group[k]) for k in self._jopt_hyper}

    def _add_group(self, group):
        group = dict(group)
        ps = group["params"]
        if isinstance(ps, np.ndarray):
            ps = [ps]
        ps = list(ps)
        unknown = set(group) - set(self._jopt_hyper) - {"params"}
        if unknown:
            raise TypeError("jopt.numpy.%s: unknown option(s) %s"
                            % (self._jopt_name, ", ".join(sorted(unknown))))
        gi = len(self.param_groups)
        for pi, p in enumerate(ps):
            _check_array(self._jopt_name, "parameter %d of param group %d" % (pi, gi),
                         p, True)
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)
        self._types.append([(_DTYPES[p.dtype],) * 2 for p in ps])
        return [(p.ctypes.data if p.size else 0, 0, p.size, _DTYPES[p.dtype],
                 _DTYPES[p.dtype]) for p in ps], self._hyper_of(group)

    def add_param_group(self, group):
        params, opts = self._add_group(group)
        try:
            self._raw.add_param_group(params, opts)
        except Exception:
            self.param_groups.pop()
            self._types.pop()
            raise
        self._shapes(len(self.param_groups) - 1)
        self._pushed.append(self._hyper_of(self.param_groups[-1]))
        self._bound = None

    def _params(self):
        return [(gi, pi, p) for gi, g in enumerate(self.param_groups)
                for pi, p in enumerate(g["params"])]

    def bind_grads(self, grads):
        """Points jopt at these gradient arrays (one per parameter, in order;
        None for "no gradient") until the next bind or step(grads=...)."""
        ps = self._params()
        grads = list(grads)
        if len(grads) != len(ps):
            raise ValueError("jopt.numpy.%s: %d gradients for %d parameters"
                             % (self._jopt_name, len(grads), len(ps)))
        for (gi, pi, p), g in zip(ps, grads):
            if g is not None:
                what = "the gradient of parameter %d of param group %d" % (pi, gi)
                _check_array(self._jopt_name, what, g, False)
                if g.size != p.size:
                    raise ValueError("jopt.numpy.%s: %s has %d elements, the parameter %d"
                                     % (self._jopt_name, what, g.size, p.size))
        old = self._bound
        try:
            self._point_at(ps, grads)
        except BaseException:
            # jopt refused one (it overlaps another buffer): back to the
            # arrays bound before, so that it holds no pointer to these
            try:
                self._point_at(ps, old if old is not None else [None] * len(ps))
            except BaseException:
                self._point_at(ps, [None] * len(ps))
                self._bound = [None] * len(ps)
            raise
        self._bound = grads  # keep them alive

    def _point_at(self, ps, grads):
        for gi, pi, _ in ps:  # unset first: buffers may be reused
            self._raw.set_grad(gi, pi, 0)
        for (gi, pi, p), g in zip(ps, grads):
            if g is not None and g.size:
                types = (_DTYPES[p.dtype], _DTYPES[g.dtype])
                if types != self._types[gi][pi]:
                    self._raw.set_dtype(gi, pi, *types)
                    self._types[gi][pi] = types
                self._raw.set_grad(gi, pi, g.ctypes.data)

    def _push_hyper(self):
        for gi, group in enumerate(self.param_groups):
            pushed = self._pushed[gi]
            for k in self._jopt_hyper:
                v = normalize(group[k])
                old = pushed[k]
                if v == old:
                    continue
                if isinstance(v, tuple) and isinstance(old, tuple) and len(v) == len(old):
                    for j, (a, b) in enumerate(zip(v, old)):
                        if a != b:
                            self._raw.option_set(gi, "%s[%d]" % (k, j), a)
                            old = pushed[k] = old[:j] + (a,) + old[j + 1:]
                elif isinstance(v, (bool, str, tuple)) or v is None or \
                        isinstance(old, (bool, str)) or old is None:
                    self._raw.options_set(gi, "%s=%s" % (k, _lib.format_value(v)))
                else:
                    self._raw.option_set(gi, k, v)
                pushed[k] = v

    def step(self, grads=None, closure=None):
        """One step.  `grads` (one array or None per parameter) replaces the
        bound gradients; a closure, if given, is called first (it should fill
        the gradient arrays) and its return value is returned."""
        loss = closure() if closure is not None else None
        if grads is not None:
            self.bind_grads(grads)
        elif self._bound is None:
            raise ValueError("jopt.numpy.%s.step: no gradients: pass grads=[...] or "
                             "bind them with bind_grads()" % self._jopt_name)
        self._jopt_inputs()
        self._push_hyper()
        self._raw.step()
        return loss

    def _jopt_inputs(self):
        """The spec's inputs for this step (SophiaH's hessian), given once
        jopt holds this step's gradients."""

    def zero_grad(self):
        """Fills the bound gradient arrays with zeros."""
        for g in self._bound or ():
            if g is not None:
                g.fill(0)

    def state(self, param, name):
        """(copy of state `name` of `param`, step count); (None, 0) before
        its first step.  A per-tensor state (ASGD's "eta") has one element."""
        for gi, pi, p in self._params():
            if p is param:
                data, step, numel = self._raw.state_get(gi, pi, name)
                if data is None:
                    return None, step
                if numel == 1 and p.size != 1:
                    return np.array([data[0]], dtype=np.float32), step
                code = self._raw.state_dtype(gi, pi, name)
                dt = [k for k, v in _DTYPES.items() if v == code][0]
                buf = (ctypes.c_char * (numel * dt.itemsize)).from_address(
                    ctypes.addressof(data.contents))
                shape = _spec2.state_shape(self._jopt_spec, name, p.shape, numel)
                return np.frombuffer(bytes(buf), dtype=dt).reshape(shape), step
        raise ValueError("jopt.numpy: the array is not a parameter of this optimizer")

    def state_dict(self):
        """jopt's checkpoint bytes (jopt_state_save_mem) and the groups' options
        (copied as they are: load_state_dict sets them)."""
        return {"jopt_state": self._raw.state_save_mem(),
                "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                 for g in self.param_groups]}

    def load_state_dict(self, sd):
        """Restores state_dict()'s checkpoint, then sets the options of its
        param groups; a failure (another optimizer's checkpoint, an option
        the spec refuses) raises and changes nothing."""
        saved = sd["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError("jopt.numpy.%s: the state dict has %d param groups, the "
                             "optimizer %d" % (self._jopt_name, len(saved),
                                               len(self.param_groups)))
        snap = self._raw.state_save_mem()
        groups = [dict(g) for g in self.param_groups]
        pushed = self._pushed
        self._raw.state_load_mem(sd["jopt_state"])  # checks, then changes
        try:
            for g, s in zip(self.param_groups, saved):
                g.update(s)
            # jopt now has the checkpoint's options; the param groups' (which
            # may have been edited since) are set over them
            self._pushed = [_lib.unknown_options(self._jopt_hyper) for _ in saved]
            self._push_hyper()
        except BaseException:
            for g, old in zip(self.param_groups, groups):
                g.clear()
                g.update(old)
            self._pushed = pushed
            self._raw.state_load_mem(snap)
            raise

    def __reduce_ex__(self, protocol):
        raise TypeError("jopt.numpy.%s cannot be pickled or copied: its state lives in "
                        "jopt; save state_dict() and load it into a new optimizer"
                        % self._jopt_name)

    def close(self):
        if self._raw is not None:
            self._raw.close()

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append("Parameter Group %d" % i)
            lines += ["    %s: %s" % (k, g[k]) for k in sorted(g) if k != "params"]
        return "\n".join(lines + [")"])


class NumpyClosureOptimizer(NumpyOptimizer):
    """Base of LBFGS and CG (not used directly): step(closure) calls the
    closure as often as the method needs.  One parameter group."""

    def _shapes(self, gi):
        pass

    def _check_groups(self):
        if len(self.param_groups) != 1:
            raise ValueError("%s doesn't support per-parameter options (parameter "
                             "groups)" % self._jopt_name)

    def step(self, closure, grads=None):
        """closure() must fill the bound gradient arrays (or `grads`) at the
        current parameters and return the loss.  Returns the first call's
        loss.  An exception in the closure is re-raised here, with the
        parameters and the optimizer's state as they were before the step."""
        if grads is not None:
            self.bind_grads(grads)
        elif self._bound is None:
            raise ValueError("jopt.numpy.%s.step: no gradients: pass grads=[...] or "
                             "bind them with bind_grads()" % self._jopt_name)
        self._push_hyper()

        def evaluate():
            out = closure()
            return out, float(out)

        return self._raw.run_closure(evaluate)


def _make(name):
    spec, sig, hyper, flags = describe(name)
    base = NumpyClosureOptimizer if name in CLOSURE else NumpyOptimizer
    return type(name, _spec2.NUMPY_MIXINS.get(name, ()) + (base,), {
        "__doc__": "jopt.numpy.%s: spec '%s', options as torch.optim.%s%s"
                   % (name, spec, name, sig),
        "__module__": __name__, "_jopt_name": name, "_jopt_spec": spec,
        "_jopt_sig": sig, "_jopt_hyper": tuple(hyper), "_jopt_flags": tuple(flags)})


for _n in OPTIMIZERS:
    globals()[_n] = _make(_n)
del _n


# ---- any spec: a shipped one's name, or a .lua file of your own (_custom.py) ----

_FLAVOR = _custom.Flavor(sys.modules[__name__], "jopt.numpy", NumpyOptimizer,
                         NumpyClosureOptimizer, _spec2.NumpyGroupState,
                         extra=(("grads", None),))


def optimizer_class(spec, name=None):
    """The jopt.numpy class of spec `spec` (see jopt.torch.optimizer_class)."""
    return _custom.optimizer_class(_FLAVOR, spec, name)


class Optimizer:
    """Optimizer(params, spec="adam" or "path/to/rule.lua", grads=None,
    **options): an instance of optimizer_class(spec), built with these
    options."""

    def __new__(cls, params, spec, **options):
        return _custom.make_optimizer(_FLAVOR, params, spec, options)
