"""ctypes binding of libjopt.so: library loading, errors, Context, and a thin
low-level optimizer handle that jopt.torch and jopt.numpy build on."""

import ctypes
import ctypes.util
import os
import sys
import threading
import weakref

__all__ = ["JoptError", "JoptValueError", "JoptMemoryError", "JoptSpecError",
           "JoptCompileError", "JoptClosureError", "Context", "library_path",
           "default_context", "ENGINE_JIT", "ENGINE_REFERENCE"]

OK, EINVAL, ENOMEM, ESPEC, ECOMPILE, ECLOSURE = 0, -1, -2, -3, -4, -5
SKIPPED = 1  # jopt_step skipped a step with a NaN/Inf gradient (not an error)
EDEVICE = -6
ENGINE_JIT, ENGINE_REFERENCE = 0, 1
# jopt_dtype, by name; JOPT_CHECK_FINITE
FLOAT32, BFLOAT16, FLOAT16 = 0, 1, 2
DTYPE_NAMES = ("float32", "bfloat16", "float16")
CHECK_FINITE = -1


def _recorded():
    """The path `pip install` recorded (setup.py), or None."""
    try:
        from . import _install
    except ImportError:  # a checkout, or an editable install
        return None
    return getattr(_install, "LIBRARY", None)


def _find_library():
    """$JOPT_LIBRARY; this checkout's build/libjopt.so; the path recorded
    at install time; the system's search (ctypes.util.find_library, which
    reads ldconfig's cache and LD_LIBRARY_PATH); the prefix Python runs
    from, then ~/.local and /usr/local (cmake --install's usual prefixes)."""
    tried = []
    env = os.environ.get("JOPT_LIBRARY")
    if env:
        if os.path.exists(env):
            return env, tried
        tried.append("$JOPT_LIBRARY=" + env + " (no such file)")
    here = os.path.dirname(os.path.abspath(__file__))
    cand = os.path.normpath(os.path.join(here, "..", "..", "build", "libjopt.so"))
    if os.path.exists(cand):
        return cand, tried
    tried.append(cand + " (no such file)")
    rec = _recorded()
    if rec:
        if os.path.exists(rec):
            return rec, tried
        tried.append(rec + " (recorded at install time; no such file now)")
    found = ctypes.util.find_library("jopt")
    if found:
        return found, tried
    tried.append('ctypes.util.find_library("jopt") (not found)')
    for prefix in (sys.prefix, os.path.expanduser("~/.local"), "/usr/local"):
        cand = os.path.join(prefix, "lib", "libjopt.so")
        if os.path.exists(cand):
            return cand, tried
        tried.append(cand + " (no such file)")
    return None, tried


def _load():
    path, tried = _find_library()
    if path is None:
        raise ImportError(
            "jopt: cannot find the shared library libjopt.so; tried:\n  "
            + "\n  ".join(tried)
            + "\nBuild it (cmake -S . -B build && cmake --build build) or set "
              "JOPT_LIBRARY to the path of libjopt.so.")
    try:
        return ctypes.CDLL(path), path
    except OSError as e:
        raise ImportError("jopt: cannot load %s: %s" % (path, e)) from e


_L, library_path = _load()

c_int, c_size_t, c_double, c_char_p, c_void_p = (
    ctypes.c_int, ctypes.c_size_t, ctypes.c_double, ctypes.c_char_p, ctypes.c_void_p)
c_int64 = ctypes.c_int64
P_float = ctypes.POINTER(ctypes.c_float)


class Param(ctypes.Structure):
    _fields_ = [("param", c_void_p), ("grad", c_void_p), ("numel", c_int64)]


class Group(ctypes.Structure):
    _fields_ = [("params", ctypes.POINTER(Param)), ("nparams", c_size_t),
                ("options", c_char_p)]


CLOSURE = ctypes.CFUNCTYPE(c_int, c_void_p, ctypes.POINTER(c_double))


def _proto(name, restype, *argtypes):
    f = getattr(_L, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


jopt_strerror = _proto("jopt_strerror", c_char_p, c_int)
jopt_ctx_new = _proto("jopt_ctx_new", c_int, ctypes.POINTER(c_void_p))
jopt_ctx_free = _proto("jopt_ctx_free", None, c_void_p)
jopt_errmsg = _proto("jopt_errmsg", c_char_p, c_void_p)
jopt_ctx_set_spec_path = _proto("jopt_ctx_set_spec_path", c_int, c_void_p, c_char_p)
jopt_ctx_set_engine = _proto("jopt_ctx_set_engine", c_int, c_void_p, c_int)
jopt_ctx_set_threads = _proto("jopt_ctx_set_threads", c_int, c_void_p, c_int)
jopt_ctx_threads = _proto("jopt_ctx_threads", c_int, c_void_p)
jopt_ctx_set_flush_denormals = _proto("jopt_ctx_set_flush_denormals", c_int, c_void_p, c_int)
jopt_ctx_stats = _proto("jopt_ctx_stats", None, c_void_p,
                        ctypes.POINTER(c_size_t), ctypes.POINTER(c_size_t))
jopt_optim_new = _proto("jopt_optim_new", c_int, c_void_p, c_char_p,
                        ctypes.POINTER(Group), c_size_t, c_char_p,
                        ctypes.POINTER(c_void_p))
jopt_optim_free = _proto("jopt_optim_free", None, c_void_p)
jopt_zero_grad = _proto("jopt_zero_grad", c_int, c_void_p)
jopt_step = _proto("jopt_step", c_int, c_void_p, CLOSURE, c_void_p,
                   ctypes.POINTER(c_double))
jopt_set_grad = _proto("jopt_set_grad", c_int, c_void_p, c_size_t, c_size_t, c_void_p)
jopt_set_shape = _proto("jopt_set_shape", c_int, c_void_p, c_size_t, c_size_t, c_int,
                        ctypes.POINTER(c_int64))
jopt_group_count = _proto("jopt_group_count", c_size_t, c_void_p)
jopt_option_get = _proto("jopt_option_get", c_int, c_void_p, c_size_t, c_char_p,
                         ctypes.POINTER(c_double))
jopt_option_set = _proto("jopt_option_set", c_int, c_void_p, c_size_t, c_char_p, c_double)
jopt_options_set = _proto("jopt_options_set", c_int, c_void_p, c_size_t, c_char_p)
jopt_option_runtime = _proto("jopt_option_runtime", c_int, c_void_p, c_size_t, c_char_p)
jopt_option_is_runtime = _proto("jopt_option_is_runtime", c_int, c_void_p, c_size_t, c_char_p)
jopt_state_get = _proto("jopt_state_get", c_int, c_void_p, c_size_t, c_size_t, c_char_p,
                        ctypes.POINTER(P_float), ctypes.POINTER(c_int64))
jopt_state_numel = _proto("jopt_state_numel", c_int, c_void_p, c_size_t, c_size_t, c_char_p,
                          ctypes.POINTER(c_int64))
jopt_add_param_group = _proto("jopt_add_param_group", c_int, c_void_p, ctypes.POINTER(Group))
jopt_state_size = _proto("jopt_state_size", c_int, c_void_p, ctypes.POINTER(c_size_t))
jopt_state_save_mem = _proto("jopt_state_save_mem", c_int, c_void_p, c_void_p, c_size_t,
                             ctypes.POINTER(c_size_t))
jopt_state_load_mem = _proto("jopt_state_load_mem", c_int, c_void_p, c_void_p, c_size_t)
jopt_set_dtype = _proto("jopt_set_dtype", c_int, c_void_p, c_size_t, c_size_t, c_int, c_int)
jopt_state_dtype = _proto("jopt_state_dtype", c_int, c_void_p, c_size_t, c_size_t, c_char_p,
                          ctypes.POINTER(c_int))
jopt_set_grad_scale = _proto("jopt_set_grad_scale", c_int, c_void_p, c_double, c_int)
# GPUs (docs/gpu.md)
jopt_cuda_device_count = _proto("jopt_cuda_device_count", c_int)
jopt_ctx_set_device = _proto("jopt_ctx_set_device", c_int, c_void_p, c_char_p)
jopt_optim_device = _proto("jopt_optim_device", c_char_p, c_void_p)
jopt_set_stream = _proto("jopt_set_stream", c_int, c_void_p, c_void_p)
jopt_synchronize = _proto("jopt_synchronize", c_int, c_void_p)
jopt_state_copy = _proto("jopt_state_copy", c_int, c_void_p, c_size_t, c_size_t, c_char_p,
                         P_float, c_int64)


class HyperInfo(ctypes.Structure):
    """jopt_hyper_info (jopt.h)"""
    _fields_ = [("name", c_char_p), ("kind", c_int), ("len", c_int),
                ("tuple", c_int), ("integer", c_int), ("optional", c_int),
                ("runtime", c_int), ("value", ctypes.POINTER(c_double)),
                ("spec_default", ctypes.POINTER(c_double)),
                ("choices", ctypes.POINTER(c_char_p)), ("nchoices", c_int)]


KIND_NUMBER, KIND_BOOL, KIND_CHOICE = 0, 1, 2
jopt_spec_open = _proto("jopt_spec_open", c_int, c_void_p, c_char_p, c_char_p,
                        ctypes.POINTER(c_void_p))
jopt_spec_free = _proto("jopt_spec_free", None, c_void_p)
jopt_spec_nhyper = _proto("jopt_spec_nhyper", c_size_t, c_void_p)
jopt_spec_hyper = _proto("jopt_spec_hyper", c_int, c_void_p, c_size_t,
                         ctypes.POINTER(HyperInfo))
def _optional(name, restype, *argtypes):
    """A call a library built before it existed lacks: None then."""
    try:
        return _proto(name, restype, *argtypes)
    except AttributeError:
        return None


# jopt.h: every gradient in one call, and
# step() on another program's thread pool
jopt_set_grads = _optional("jopt_set_grads", c_int, c_void_p, ctypes.POINTER(c_void_p),
                           c_size_t)
jopt_ctx_set_parallel = _optional("jopt_ctx_set_parallel", c_int, c_void_p, c_void_p,
                                  c_void_p)
jopt_parallel_openmp = getattr(_L, "jopt_parallel_openmp", None)
jopt_state_seal = _optional("jopt_state_seal", c_int, c_void_p, c_size_t)


class OpenMP(ctypes.Structure):
    """jopt_openmp: an OpenMP runtime's entry points, for jopt_parallel_openmp."""
    _fields_ = [("parallel", c_void_p), ("thread_num", c_void_p),
                ("num_threads", c_void_p), ("max_threads", c_void_p)]


# ---- errors -----------------------------------------------------------------

class JoptError(Exception):
    """A jopt call failed.  .status is the jopt_status, str() jopt's message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class JoptValueError(JoptError, ValueError):
    """JOPT_EINVAL: a bad argument or hyperparameter value."""


class JoptMemoryError(JoptError, MemoryError):
    """JOPT_ENOMEM."""


class JoptSpecError(JoptError):
    """JOPT_ESPEC: spec not found, malformed, or over a sandbox limit."""


class JoptCompileError(JoptError):
    """JOPT_ECOMPILE: LLVM could not build the kernel."""


class JoptClosureError(JoptError):
    """JOPT_ECLOSURE: the closure reported an error."""


class JoptDeviceError(JoptError, RuntimeError):
    """JOPT_EDEVICE: no GPU or CUDA driver, a driver error, or a spec the GPU
    cannot run."""


_ERRORS = {EINVAL: JoptValueError, ENOMEM: JoptMemoryError, ESPEC: JoptSpecError,
           ECOMPILE: JoptCompileError, ECLOSURE: JoptClosureError, EDEVICE: JoptDeviceError}


def _raise(status, ctx_handle):
    msg = jopt_errmsg(ctx_handle).decode("utf-8", "replace") if ctx_handle else ""
    if not msg:
        msg = jopt_strerror(status).decode("utf-8", "replace")
    raise _ERRORS.get(status, JoptError)(status, msg)


# ---- context ------------------------------------------------------------------

class Context:
    """A jopt context: spec search path, kernel cache, JIT, thread pool.

    Use one per thread.  Optimizers made from it keep it alive; close() frees
    them first, then the context."""

    def __init__(self, spec_path=None, engine=None, threads=None, flush_denormals=None,
                 device=None):
        h = c_void_p()
        st = jopt_ctx_new(ctypes.byref(h))
        if st != OK:
            _raise(st, None)
        self._h = h.value
        self._optims = weakref.WeakSet()
        # optimizers not yet freed: at interpreter exit the garbage collector
        # may finalize the context before its optimizers (the WeakSet is
        # already empty then), and the C context must outlive them
        self._live = 0
        self._closing = False
        if spec_path is not None:
            self.set_spec_path(spec_path)
        if engine is not None:
            self.set_engine(engine)
        if threads is not None:
            self.set_threads(threads)
        if flush_denormals is not None:
            self.set_flush_denormals(flush_denormals)
        if device is not None:
            self.set_device(device)

    def set_device(self, device):
        """Where optimizers made from now on live: "cpu", "cuda" or "cuda:N"."""
        self._check(jopt_ctx_set_device(self.handle, str(device).encode()))

    @property
    def handle(self):
        if not self._h or self._closing:
            raise ValueError("jopt: the context is closed")
        return self._h

    def _check(self, st):
        if st != OK:
            _raise(st, self._h)

    def errmsg(self):
        return jopt_errmsg(self.handle).decode("utf-8", "replace")

    def set_spec_path(self, folders):
        if not isinstance(folders, str):
            folders = ":".join(os.fspath(f) for f in folders)
        self._check(jopt_ctx_set_spec_path(self.handle, folders.encode()))

    def set_engine(self, engine):
        if isinstance(engine, str):
            engine = {"jit": ENGINE_JIT, "reference": ENGINE_REFERENCE}[engine]
        self._check(jopt_ctx_set_engine(self.handle, engine))

    def set_threads(self, n):
        self._check(jopt_ctx_set_threads(self.handle, int(n)))

    @property
    def threads(self):
        return jopt_ctx_threads(self.handle)

    def set_parallel_openmp(self, omp):
        """Runs steps on the thread team of the OpenMP runtime `omp` (an
        OpenMP structure, kept alive here) instead of jopt's own threads;
        None goes back to jopt's pool of set_threads' count (1 until set)."""
        if jopt_ctx_set_parallel is None or jopt_parallel_openmp is None:
            raise JoptError(EINVAL, "jopt: this libjopt has no jopt_ctx_set_parallel")
        if omp is None:
            self._check(jopt_ctx_set_parallel(self.handle, None, None))
            self._omp = None
            return
        run = ctypes.cast(jopt_parallel_openmp, c_void_p)
        self._check(jopt_ctx_set_parallel(self.handle, run, ctypes.addressof(omp)))
        self._omp = omp  # jopt reads it at every step

    def set_flush_denormals(self, on):
        self._check(jopt_ctx_set_flush_denormals(self.handle, 1 if on else 0))

    def stats(self):
        """(kernels compiled, cache hits)."""
        a, b = c_size_t(), c_size_t()
        jopt_ctx_stats(self.handle, ctypes.byref(a), ctypes.byref(b))
        return a.value, b.value

    def close(self):
        if self._h and not self._closing:
            self._closing = True
            for o in list(self._optims):
                o.close()
            self._release()

    def _release(self):
        """Frees the C context once it is closing and no optimizer is left."""
        if self._h and self._closing and self._live == 0:
            jopt_ctx_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_tls = threading.local()


def default_context(device=None):
    """This thread's shared context (created on first use), one per device
    ("cuda:0", ...; None or "cpu" for the CPU's)."""
    if device is None or str(device) == "cpu":
        ctx = getattr(_tls, "ctx", None)
        if ctx is None:
            ctx = _tls.ctx = Context()
        return ctx
    by_dev = getattr(_tls, "by_device", None)
    if by_dev is None:
        by_dev = _tls.by_device = {}
    if str(device) not in by_dev:
        by_dev[str(device)] = Context(device=device)
    return by_dev[str(device)]


def cuda_device_count():
    """CUDA devices jopt can use (0 without a driver or a GPU)."""
    return jopt_cuda_device_count()


# ---- option strings -------------------------------------------------------------

def spec_hyperparameters(ctx, spec):
    """The hyperparameters spec `spec` declares, from the library's
    introspection (jopt_spec_open): {name: (default, info)} where default is
    the Python value torch would take (a float or int, a tuple, a bool, a
    choice's name, None) and info a dict of kind, len, tuple, integer,
    optional, runtime and choices."""
    h = c_void_p()
    _check_ctx(ctx, jopt_spec_open(ctx.handle, spec.encode(), None, ctypes.byref(h)))
    try:
        out = {}
        for i in range(jopt_spec_nhyper(h)):
            hi = HyperInfo()
            _check_ctx(ctx, jopt_spec_hyper(h, i, ctypes.byref(hi)))
            vals = [hi.spec_default[k] for k in range(hi.len)]
            choices = [hi.choices[k].decode() for k in range(hi.nchoices)]
            if hi.kind == KIND_BOOL:
                d = bool(vals[0])
            elif hi.kind == KIND_CHOICE:
                d = choices[int(vals[0])]
                d = None if d == "none" else d  # torch's None
            elif hi.tuple:  # an element may be None (Adafactor's eps[0])
                d = tuple(None if v != v else v for v in vals)
            elif hi.optional and vals[0] != vals[0]:
                d = None
            elif hi.integer:
                d = int(vals[0])
            else:
                d = vals[0]
            out[hi.name.decode()] = (d, dict(
                kind=hi.kind, len=hi.len, tuple=bool(hi.tuple),
                integer=bool(hi.integer), optional=bool(hi.optional),
                runtime=bool(hi.runtime), choices=choices))
        return out
    finally:
        jopt_spec_free(h)


def _check_ctx(ctx, st):
    if st != OK:
        _raise(st, ctx.handle)


def format_value(v):
    if v is None:
        return "None"          # an optional option left unset (max_eval)
    if isinstance(v, str):
        return v               # a choice (line_search_fn)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return ",".join(format_value(x) for x in v)
    return repr(float(v))


_UNKNOWN = object()  # an option value jopt may not have: equal to no value


def unknown_options(names):
    """What is known to be pushed to jopt after it loaded a checkpoint with
    options of its own: nothing, so that every option is set again."""
    return dict.fromkeys(names, _UNKNOWN)


def normalize(v):
    """A hyperparameter value as a comparable plain Python value."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (tuple, list)):
        return tuple(normalize(x) for x in v)
    return float(v)


def options_string(values):
    return " ".join("%s=%s" % (k, format_value(v)) for k, v in values.items())


# ---- low-level optimizer handle ------------------------------------------------

class RawOptim:
    """A jopt_optim over raw buffers (addresses and sizes).

    groups: list of (params, options) where params is a list of
    (param_address, grad_address_or_0, numel), or of (param_address,
    grad_address_or_0, numel, dtype, grad_dtype) with jopt_dtype codes
    (FLOAT32, BFLOAT16, FLOAT16), and options a dict."""

    def __init__(self, ctx, spec, groups, defaults=None):
        self.ctx = ctx
        self._h = None
        cgroups = (Group * len(groups))()
        keep = []
        for i, (params, opts) in enumerate(groups):
            cgroups[i] = self._group(params, opts, keep)
        h = c_void_p()
        d = options_string(defaults).encode() if defaults else None
        st = jopt_optim_new(ctx.handle, os.fspath(spec).encode(), cgroups, len(groups),
                            d, ctypes.byref(h))
        if st != OK:
            _raise(st, ctx.handle)
        self._h = h.value
        ctx._optims.add(self)
        ctx._live += 1
        try:
            for gi, (params, _) in enumerate(groups):
                self._set_dtypes(gi, params)
        except Exception:
            self.close()
            raise

    @staticmethod
    def _types(params):
        """The group's dtype options: a 2-byte type if any tensor has one (so
        that no 2-byte buffers laid side by side look like overlapping
        float32 ones before jopt_set_dtype gives each its own)."""
        def pick(k):
            ts = [p[k] for p in params if len(p) > 3]
            return next((t for t in ts if t != FLOAT32), FLOAT32)
        return pick(3), pick(4)

    def _set_dtypes(self, gi, params):
        dt, gdt = self._types(params)
        for pi, p in enumerate(params):
            if len(p) > 3 and (p[3], p[4]) != (dt, gdt):
                self.set_dtype(gi, pi, p[3], p[4])

    @classmethod
    def _group(cls, params, opts, keep):
        arr = (Param * max(len(params), 1))()
        for j, p in enumerate(params):
            arr[j] = Param(p[0] or None, p[1] or None, p[2])
        s = options_string(opts) if opts else ""
        dt, gdt = cls._types(params)
        if (dt, gdt) != (FLOAT32, FLOAT32):
            s += " dtype=%s grad_dtype=%s" % (DTYPE_NAMES[dt], DTYPE_NAMES[gdt])
        s = s.strip().encode() or None
        keep.append((arr, s))
        return Group(arr, len(params), s)

    @property
    def handle(self):
        if not self._h:
            raise ValueError("jopt: the optimizer is closed")
        return self._h

    def _check(self, st):
        if st != OK:
            _raise(st, self.ctx._h)

    def close(self):
        if self._h:
            jopt_optim_free(self._h)
            self._h = None
            self.ctx._live -= 1
            self.ctx._release()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def step(self):
        """One step; False if it was skipped (a NaN or infinite gradient, or
        found_inf given to set_grad_scale), True otherwise."""
        loss = c_double()
        st = jopt_step(self.handle, CLOSURE(), None, ctypes.byref(loss))
        if st == SKIPPED:
            return False
        self._check(st)
        return True

    def set_grad_scale(self, scale, found_inf=0):
        """Loss scaling for the next step (jopt_set_grad_scale): each gradient
        divided by `scale` in the kernel (and written back); found_inf 1
        skips the step, CHECK_FINITE has jopt look for NaN/Inf first."""
        self._check(jopt_set_grad_scale(self.handle, float(scale), int(found_inf)))

    def set_dtype(self, group, index, dtype, grad_dtype):
        self._check(jopt_set_dtype(self.handle, group, index, dtype, grad_dtype))

    def state_dtype(self, group, index, name):
        d = c_int()
        self._check(jopt_state_dtype(self.handle, group, index, name.encode(),
                                     ctypes.byref(d)))
        return d.value

    def run_closure(self, evaluate):
        """jopt_step with a closure: evaluate() -> (what to return, the loss
        as a float), called as often as the method needs.  Returns what the
        first call returned.  An exception in evaluate must not cross the C
        frames: it is re-raised here, after jopt has undone the step."""
        first, failed = [], []

        def callback(_user, loss):
            try:
                out, value = evaluate()
                loss[0] = value
                if not first:
                    first.append(out)
                return 0
            except BaseException as e:
                failed.append(e)
                return 1

        st = jopt_step(self.handle, CLOSURE(callback), None, None)
        if failed:
            raise failed[0]
        self._check(st)
        return first[0]

    def zero_grad(self):
        self._check(jopt_zero_grad(self.handle))

    def set_grad(self, group, index, address):
        self._check(jopt_set_grad(self.handle, group, index, address or None))

    def set_grads(self, array, n):
        """Every parameter's gradient address at once, from a ctypes array
        of c_void_p (0: absent), in group order."""
        self._check(jopt_set_grads(self.handle, array, n))

    def group_count(self):
        return jopt_group_count(self.handle)

    def option_get(self, group, name):
        v = c_double()
        self._check(jopt_option_get(self.handle, group, name.encode(), ctypes.byref(v)))
        return v.value

    def option_set(self, group, name, value):
        self._check(jopt_option_set(self.handle, group, name.encode(), float(value)))

    def options_set(self, group, options):
        if isinstance(options, dict):
            options = options_string(options)
        self._check(jopt_options_set(self.handle, group, options.encode()))

    def option_runtime(self, group, name):
        self._check(jopt_option_runtime(self.handle, group, name.encode()))

    def option_is_runtime(self, group, name):
        r = jopt_option_is_runtime(self.handle, group, name.encode())
        if r < 0:
            _raise(r, self.ctx._h)
        return bool(r)

    def state_get(self, group, index, name):
        """(ctypes float pointer or None, step count, floats it holds)."""
        data, step, numel = P_float(), c_int64(), c_int64()
        self._check(jopt_state_get(self.handle, group, index, name.encode(),
                                   ctypes.byref(data), ctypes.byref(step)))
        self._check(jopt_state_numel(self.handle, group, index, name.encode(),
                                     ctypes.byref(numel)))
        return (data if data else None), step.value, numel.value

    def add_param_group(self, params, opts):
        keep = []
        g = self._group(params, opts, keep)
        self._check(jopt_add_param_group(self.handle, ctypes.byref(g)))
        self._set_dtypes(self.group_count() - 1, params)

    def state_save_mem(self):
        n = c_size_t()
        self._check(jopt_state_size(self.handle, ctypes.byref(n)))
        buf = ctypes.create_string_buffer(max(n.value, 1))
        self._check(jopt_state_save_mem(self.handle, buf, n.value, ctypes.byref(n)))
        return buf.raw[:n.value]

    def device(self):
        return jopt_optim_device(self.handle).decode()

    def set_stream(self, stream):
        """A GPU optimizer's CUDA stream (a cudaStream_t as an int)."""
        self._check(jopt_set_stream(self.handle, stream or None))

    def synchronize(self):
        self._check(jopt_synchronize(self.handle))

    def state_copy(self, group, index, name, numel):
        """The state's floats copied to host memory (a ctypes array)."""
        out = (ctypes.c_float * max(numel, 1))()
        self._check(jopt_state_copy(self.handle, group, index, name.encode(),
                                    ctypes.cast(out, P_float), numel))
        return out

    def state_load_mem(self, data):
        data = bytes(data)
        buf = ctypes.create_string_buffer(data, len(data))
        self._check(jopt_state_load_mem(self.handle, buf, len(data)))
