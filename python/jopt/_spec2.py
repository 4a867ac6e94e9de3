"""What the spec-language-2 optimizers need beyond a plain step, shared by
jopt.torch and jopt.numpy: parameters' shapes (Adafactor keeps its second
moment per row and per column), per-element inputs at a step (Sophia's
Hessian estimate), named kernels (Schedule-Free's eval/train), per-group
state (Prodigy's d), and the shapes of states smaller than their tensor.

The classes below are mixins placed before the jopt.torch / jopt.numpy
base class of the optimizers they serve (TORCH_MIXINS, NUMPY_MIXINS)."""

import ctypes
import functools

from . import _lib
from ._lib import c_int, c_size_t, c_void_p, c_char_p, c_double, c_int64

jopt_set_shape = _lib._proto("jopt_set_shape", c_int, c_void_p, c_size_t, c_size_t,
                             c_int, ctypes.POINTER(c_int64))
jopt_set_input = _lib._proto("jopt_set_input", c_int, c_void_p, c_size_t, c_size_t,
                             c_char_p, c_void_p)
try:  # one call for every parameter (an older library: one per parameter)
    jopt_set_inputs = _lib._proto("jopt_set_inputs", c_int, c_void_p, c_char_p,
                                  ctypes.POINTER(c_void_p), c_size_t)
except AttributeError:  # pragma: no cover
    jopt_set_inputs = None
jopt_optim_call = _lib._proto("jopt_optim_call", c_int, c_void_p, c_char_p)
jopt_group_state = _lib._proto("jopt_group_state", c_int, c_void_p, c_size_t, c_char_p,
                               ctypes.POINTER(c_double))
jopt_spec_set_shape = _lib._proto("jopt_spec_set_shape", c_int, c_void_p, c_int,
                                  ctypes.POINTER(c_int64))
jopt_spec_set_variant = _lib._proto("jopt_spec_set_variant", c_int, c_void_p, c_int,
                                    c_char_p)
jopt_spec_nstate = _lib._proto("jopt_spec_nstate", c_size_t, c_void_p)


class StateInfo(ctypes.Structure):
    """jopt_state_info (jopt.h)"""
    _fields_ = [("name", c_char_p), ("kept", c_int), ("scalar", c_int), ("unset", c_int),
                ("init", c_double), ("kind", c_int), ("f64", c_int)]


jopt_spec_state = _lib._proto("jopt_spec_state", c_int, c_void_p, c_size_t,
                              ctypes.POINTER(StateInfo))

STATE_ELEM, STATE_ROW, STATE_COL, STATE_TENSOR, STATE_GROUP = range(5)


def set_shapes(raw, group, shapes):
    """Gives the parameters of `group` their shapes (tuples, torch's order),
    which a spec may read or refuse (Muon's 2-D only); a 0-dim one keeps
    the flat view it has."""
    for pi, shape in enumerate(shapes):
        if len(shape) >= 1:
            arr = (c_int64 * len(shape))(*shape)
            raw._check(jopt_set_shape(raw.handle, group, pi, len(shape), arr))


def set_input(raw, group, index, name, address):
    """The spec's input `name` for the parameter's next step (address 0:
    none)."""
    raw._check(jopt_set_input(raw.handle, group, index, name.encode(), address or None))


def call(raw, kernel):
    """Runs the spec's named kernel over every parameter that has state."""
    raw._check(jopt_optim_call(raw.handle, kernel.encode()))


def group_state(raw, group, name):
    v = c_double()
    raw._check(jopt_group_state(raw.handle, group, name.encode(), ctypes.byref(v)))
    return v.value


@functools.lru_cache(maxsize=None)
def state_kinds(spec, shape=None):
    """{state: kind} of a spec, as it keeps them for 2-D tensors, or for
    tensors of `shape` where the spec reads a tensor's sizes (Muon)."""
    ctx = _lib.default_context()
    h = c_void_p()
    _lib._check_ctx(ctx, _lib.jopt_spec_open(ctx.handle, spec.encode(), None,
                                             ctypes.byref(h)))
    try:
        if shape is None:
            _lib._check_ctx(ctx, jopt_spec_set_variant(h, 2, None))
        else:
            arr = (c_int64 * len(shape))(*shape)
            _lib._check_ctx(ctx, jopt_spec_set_shape(h, len(shape), arr))
        out = {}
        for i in range(jopt_spec_nstate(h)):
            st = StateInfo()
            _lib._check_ctx(ctx, jopt_spec_state(h, i, ctypes.byref(st)))
            out[st.name.decode()] = st.kind
        return out
    finally:
        _lib.jopt_spec_free(h)


def _kinds_for(spec, pshape):
    try:
        return state_kinds(spec)
    except _lib.JoptSpecError:  # a spec with kernels for one shape only
        return state_kinds(spec, tuple(pshape))


def state_shape(spec, name, pshape, numel):
    """The shape torch gives state `name` of a parameter of shape `pshape`
    that jopt keeps as `numel` floats: the parameter's, a row state's
    (..., R, 1), a column state's (..., 1, C), or one value."""
    pshape = tuple(pshape)
    n = 1
    for s in pshape:
        n *= s
    kind = _kinds_for(spec, pshape).get(name, STATE_ELEM)
    if kind == STATE_ROW and len(pshape) >= 2:
        return pshape[:-1] + (1,)
    if kind == STATE_COL and len(pshape) >= 2:
        return pshape[:-2] + (1, pshape[-1])
    if numel == n:
        return pshape
    return (numel,)


# ---- per-optimizer behaviour ----------------------------------------------------

class GroupStateMixin:
    """Per-group state of a spec (Prodigy's d, Schedule-Free's weight_sum),
    as the reference keeps it in its param_groups."""

    def jopt_group_state(self, name, group=0):
        return group_state(self._jopt_raw(), group, name)


class SophiaMixin(GroupStateMixin):
    """SophiaH's step(closure=None, hessian=None): `hessian` is one float32
    tensor (or array) per parameter, of every group in order, as
    pytorch_optimizer's SophiaH takes an external estimate.  jopt does not
    estimate the Hessian itself: at the steps where SophiaH would (every
    update_period steps from the first), step() without one raises
    ValueError and changes nothing."""

    def _jopt_set_hessian(self, hessian):
        params = [(gi, pi, p) for gi, g in enumerate(self.param_groups)
                  for pi, p in enumerate(g["params"])]
        hessian = list(hessian)
        if len(hessian) != len(params):
            raise ValueError("the length of hessian (%d) and the number of parameters "
                             "(%d) are different" % (len(hessian), len(params)))
        addrs = [self._jopt_input_address(p, h, "hessian of parameter %d of param "
                                          "group %d" % (pi, gi))
                 for (gi, pi, p), h in zip(params, hessian)]
        self._jopt_hessian_at = [(gi, pi) for gi, pi, _ in params]
        raw = self._jopt_raw()
        if jopt_set_inputs is not None:
            arr = (c_void_p * max(len(addrs), 1))(*addrs)
            raw._check(jopt_set_inputs(raw.handle, b"hessian", arr, len(addrs)))
        else:
            for (gi, pi, _), addr in zip(params, addrs):
                if addr:
                    set_input(raw, gi, pi, "hessian", addr)
        self._jopt_hessian = hessian  # alive until the step

    def _jopt_step_with(self, hessian, step):
        done = False
        self._jopt_hessian_at = []
        self._jopt_pending = hessian
        try:
            step()  # it calls _jopt_inputs once jopt holds this step's gradients
            done = True
        finally:
            self._jopt_pending = None
            if not done:  # jopt must not keep them (a step takes them)
                for gi, pi in self._jopt_hessian_at:
                    set_input(self._jopt_raw(), gi, pi, "hessian", 0)
            self._jopt_hessian = None

    def _jopt_inputs(self):
        """Gives jopt the hessian after the gradients: a new hessian tensor
        may lie where a gradient jopt held until now was."""
        hessian = getattr(self, "_jopt_pending", None)
        if hessian is not None:
            self._jopt_set_hessian(hessian)


class ScheduleFreeMixin(GroupStateMixin):
    """Schedule-Free's eval() and train(): the parameters switch between the
    training iterate y (for forward and backward passes) and the average x
    (for evaluation), in place; each is a no-op in the mode it is in."""

    def _jopt_switch(self, kernel, train):
        call(self._jopt_raw(), kernel)
        for gi, group in enumerate(self.param_groups):
            group["train_mode"] = bool(group_state(self._jopt_raw(), gi, "train_mode"))
        self._jopt_touched()

    def eval(self):
        """Switch the parameters to the averaged weights x, for evaluation."""
        self._jopt_switch("eval", False)

    def train(self):
        """Switch the parameters back to y, for training."""
        self._jopt_switch("train", True)


# ---- jopt.torch -------------------------------------------------------------------

class _TorchBase:
    def _jopt_raw(self):
        return self._jopt

    def _jopt_input_address(self, p, h, what):
        import torch
        if h is None:
            return 0
        if not isinstance(h, torch.Tensor) or h.dtype != torch.float32 or \
                h.device.type != "cpu" or h.layout != torch.strided:
            raise TypeError("jopt.%s: the %s must be a dense float32 CPU tensor"
                            % (self._jopt_name, what))
        if h.shape != p.shape:
            raise ValueError("jopt.%s: the shape of the %s is %s, the parameter's %s"
                             % (self._jopt_name, what, list(h.shape), list(p.shape)))
        if not h.is_contiguous():
            raise ValueError("jopt.%s: the %s is not contiguous" % (self._jopt_name, what))
        return h.data_ptr() if h.numel() else 0

    def _jopt_touched(self):
        import torch
        inc = getattr(torch.autograd.graph, "increment_version", None)
        ps = [p for g in self.param_groups for p in g["params"] if p.numel()]
        if inc is not None and ps:
            inc(ps)


class TorchSophia(_TorchBase, SophiaMixin):
    def step(self, closure=None, hessian=None):
        """One step; with a closure, calls it first and returns its loss.
        `hessian`: a diagonal Hessian estimate per parameter (see SophiaH)."""
        import torch
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._jopt_step_with(hessian, super().step)
        return loss


class TorchScheduleFree(_TorchBase, ScheduleFreeMixin):
    pass


class TorchGroupState(_TorchBase, GroupStateMixin):
    pass


TORCH_MIXINS = {"SophiaH": (TorchSophia,), "ScheduleFreeAdamW": (TorchScheduleFree,),
                "Prodigy": (TorchGroupState,)}


# ---- jopt.numpy ---------------------------------------------------------------------

class _NumpyBase:
    def _jopt_raw(self):
        return self._raw

    def _jopt_input_address(self, p, h, what):
        import numpy as np
        if h is None:
            return 0
        if not isinstance(h, np.ndarray) or h.dtype != np.float32 or \
                not h.flags.c_contiguous:
            raise TypeError("jopt.numpy.%s: the %s must be a C-contiguous float32 array"
                            % (self._jopt_name, what))
        if h.shape != p.shape:
            raise ValueError("jopt.numpy.%s: the shape of the %s is %s, the parameter's %s"
                             % (self._jopt_name, what, h.shape, p.shape))
        return h.ctypes.data if h.size else 0

    def _jopt_touched(self):
        pass


class NumpySophia(_NumpyBase, SophiaMixin):
    def step(self, grads=None, closure=None, hessian=None):
        """One step (see NumpyOptimizer.step); `hessian`: a diagonal Hessian
        estimate per parameter (see SophiaH)."""
        loss = closure() if closure is not None else None
        self._jopt_step_with(hessian, lambda: super(NumpySophia, self).step(grads=grads))
        return loss


class NumpyScheduleFree(_NumpyBase, ScheduleFreeMixin):
    pass


class NumpyGroupState(_NumpyBase, GroupStateMixin):
    pass


NUMPY_MIXINS = {"SophiaH": (NumpySophia,), "ScheduleFreeAdamW": (NumpyScheduleFree,),
                "Prodigy": (NumpyGroupState,)}
