"""Optimizer classes for any spec, shared by jopt.torch and jopt.numpy:

    Cls = jopt.torch.optimizer_class("path/to/my_rule.lua")   # or a name: "adam"
    opt = Cls(model.parameters(), lr=1e-2)
    opt = jopt.torch.Optimizer(model.parameters(), spec="my_rule.lua", lr=1e-2)

A shipped spec's name ("adam", "adabelief") gives the shipped class
(jopt.torch.Adam), with torch's signature and state-dict layout.  Any other
spec (a name found in the spec path, or a path to a .lua file) gets a class
built here on the same base (JoptOptimizer / NumpyOptimizer, or the closure
base for a spec with a `method`), whose signature is the spec's own: the
hyperparameters and defaults the library reads from the spec
(jopt_spec_open), `lr` first (positional, as torch's), the others by name
and keyword-only (a Lua table has no order to follow).

Bad input raises before anything is built: a spec file that does not exist
(FileNotFoundError naming the path), an option the spec does not declare
(TypeError naming it and listing the spec's), a value of the wrong type
(TypeError naming the option and value).  Values of the right type are
checked by the spec itself (its `check`, with torch's messages: "Invalid
learning rate: -1.0"), raised as jopt.JoptValueError, a ValueError."""

import ctypes
import inspect
import os

from . import _lib
from ._lib import c_char_p, c_void_p
from ._specs import OPTIMIZERS

_P = inspect.Parameter

jopt_spec_name = _lib._proto("jopt_spec_name", c_char_p, c_void_p)
jopt_spec_path = _lib._proto("jopt_spec_path", c_char_p, c_void_p)
jopt_spec_method = _lib._proto("jopt_spec_method", c_char_p, c_void_p)

# a shipped spec's name: its class's name ("adam": "Adam")
SHIPPED = {spec: name for name, (spec, _, _) in OPTIMIZERS.items()}

# group keys that are not hyperparameters: torch's own
_GROUP_KEYS = ("params", "param_names")


def _resolve(spec):
    """The spec as jopt_optim_new takes it: a name, or an absolute path
    (so that a state dict's "jopt_spec" does not depend on the directory)."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise TypeError("jopt: spec must be a spec's name or a path to a .lua file, "
                        "got %r" % (spec,))
    if os.sep in spec or spec.endswith(".lua"):
        path = os.path.abspath(os.path.expanduser(spec))
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "jopt: no such spec file", path)
        return path
    return spec


def _introspect(spec):
    """(spec's name, closure method or None, {hyper: (default, info)})."""
    ctx = _lib.default_context()
    hypers = _lib.spec_hyperparameters(ctx, spec)
    h = c_void_p()
    _lib._check_ctx(ctx, _lib.jopt_spec_open(ctx.handle, spec.encode(), None,
                                             ctypes.byref(h)))
    try:
        name = jopt_spec_name(h).decode()
        method = jopt_spec_method(h)
        return name, method.decode() if method else None, hypers
    finally:
        _lib.jopt_spec_free(h)


def _signature(hypers, extra=()):
    """params, lr (positional, if the spec has it), then the others by name,
    keyword-only; `extra`: the flavour's own keyword-only parameters."""
    names = sorted(hypers, key=lambda n: (n != "lr", n))
    ps = [_P("params", _P.POSITIONAL_OR_KEYWORD)]
    for n in names:
        kind = _P.POSITIONAL_OR_KEYWORD if n == "lr" else _P.KEYWORD_ONLY
        ps.append(_P(n, kind, default=hypers[n][0]))
    ps += [_P(n, _P.KEYWORD_ONLY, default=d) for n, d in extra]
    return inspect.Signature(ps)


def check_values(who, hypers, values):
    """TypeError / ValueError naming the option and the value, for a value
    the spec's option cannot take as its kind (a number, a tuple of them,
    True or False, one of its choices).  The spec checks the rest."""
    for k, v in values.items():
        if k not in hypers:
            continue
        info = hypers[k][1]
        bad = None
        if info["kind"] == _lib.KIND_BOOL:
            if not isinstance(v, bool):
                bad = "True or False"
        elif info["kind"] == _lib.KIND_CHOICE:
            choices = [None if c == "none" else c for c in info["choices"]]
            if v not in choices or isinstance(v, bool):
                raise ValueError("%s: option '%s' is one of %s, got %r" % (
                    who, k, ", ".join(repr(c) for c in choices), v))
        elif info["tuple"]:
            if not isinstance(v, (tuple, list)) or not all(_number(x, True) for x in v):
                bad = "a tuple of %d numbers" % info["len"]
            elif len(v) != info["len"]:
                raise ValueError("%s: option '%s' takes %d values, got %r"
                                 % (who, k, info["len"], v))
        elif not _number(v, info["optional"]):
            bad = "a number" + (" or None" if info["optional"] else "")
        if bad:
            raise TypeError("%s: option '%s' takes %s, got %r" % (who, k, bad, v))


def _number(v, optional):
    if v is None:
        return optional
    if isinstance(v, (str, bytes, bool)):
        return False
    try:
        float(v)  # int, float, numpy scalars, one-element tensors
        return True
    except (TypeError, ValueError):
        return False


def _check_unknown(who, spec, hypers, values):
    unknown = sorted(k for k in values if k not in hypers and k not in _GROUP_KEYS)
    if unknown:
        raise TypeError("%s: spec '%s' has no option %s (its options: %s)" % (
            who, spec, ", ".join(repr(k) for k in unknown), ", ".join(sorted(hypers))))


class Flavor:
    """What jopt.torch or jopt.numpy builds a class on: its module (which
    holds the shipped classes), its bases, the mixin giving
    jopt_group_state, and keyword-only arguments of its own."""

    def __init__(self, module, prefix, base, closure_base, mixin, extra=(),
                 closure_mixin=None):
        self.module, self.prefix = module, prefix
        self.base, self.closure_base, self.mixin = base, closure_base, mixin
        self.closure_mixin = closure_mixin  # what a closure spec's class adds
        self.extra = tuple(extra)
        self.cache = {}


def optimizer_class(flavor, spec, name=None):
    """The class of the optimizer `spec` (see the module's doc)."""
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise ValueError("jopt: name must be a Python identifier, got %r" % (name,))
    spec = _resolve(spec)
    if spec in SHIPPED:
        cls = getattr(flavor.module, SHIPPED[spec])
        if name is None or name == cls.__name__:
            return cls
        return type(name, (cls,), {"__module__": flavor.module.__name__})
    # a file may change between calls: its modification time is in the key
    stamp = os.stat(spec).st_mtime_ns if os.path.isabs(spec) else None
    key = (spec, stamp, name)
    if key not in flavor.cache:
        flavor.cache[key] = _build(flavor, spec, name)
    return flavor.cache[key]


def _build(flavor, spec, name):
    spec_name, method, hypers = _introspect(spec)
    name = name or spec_name
    if name in OPTIMIZERS:
        # the shipped classes' names select torch-specific state layouts
        raise ValueError("jopt: name %r is a shipped optimizer's; pick another for "
                         "spec %s" % (name, spec))
    who = "%s.%s" % (flavor.prefix, name)
    sig = _signature(hypers)
    base = flavor.closure_base if method else flavor.base

    def __init__(self, params, *args, **kwargs):
        own = {k: kwargs.pop(k) for k in list(kwargs)
               if k.startswith("jopt_") or k in dict(flavor.extra)}
        _check_unknown(who, spec, hypers, kwargs)
        bound = sig.bind(params, *args, **kwargs)
        check_values(who, hypers, bound.arguments)
        params = bound.arguments["params"]
        if not isinstance(params, (dict, str, bytes)) and hasattr(params, "__iter__") \
                and not hasattr(params, "shape"):
            params = list(params)  # a generator: read once, here
            for g in params:
                if isinstance(g, dict):
                    _check_unknown(who, spec, hypers, g)
                    check_values(who, hypers, g)
        bound.arguments["params"] = params
        base.__init__(self, *bound.args, **bound.kwargs, **own)

    def add_param_group(self, param_group):
        if isinstance(param_group, dict):
            check_values(who, hypers, param_group)
        base.add_param_group(self, param_group)

    __init__.__signature__ = sig.replace(parameters=[_P("self", _P.POSITIONAL_OR_KEYWORD)]
                                         + list(sig.parameters.values())
                                         + [_P(n, _P.KEYWORD_ONLY, default=d)
                                            for n, d in flavor.extra])
    doc = ("%s: jopt's spec %s%s.\n\nSignature: %s%s" % (
        who, spec, " (a closure optimizer: step(closure))" if method else "", name, sig))
    mixins = (flavor.mixin,)
    if method and flavor.closure_mixin is not None:
        mixins = (flavor.closure_mixin,) + mixins
    return type(name, mixins + (base,), {
        "__doc__": doc, "__module__": flavor.module.__name__, "__init__": __init__,
        "add_param_group": add_param_group, "_jopt_name": name, "_jopt_spec": spec,
        "_jopt_sig": sig, "_jopt_hyper": tuple(sorted(hypers)), "_jopt_flags": (),
        "_jopt_custom": True})


def make_optimizer(flavor, params, spec, options):
    """flavor's Optimizer(params, spec=..., **options)."""
    return optimizer_class(flavor, spec)(params, **options)
