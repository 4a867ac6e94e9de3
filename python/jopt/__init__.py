"""jopt: torch.optim with JIT-compiled kernels, from Python (ctypes over libjopt.so).

    import jopt.torch   # drop-in torch.optim optimizers
    import jopt.numpy   # the same optimizers over NumPy float32 arrays

The library is found via $JOPT_LIBRARY, else ../build/libjopt.so of this
checkout, else the path `pip install` recorded, else the system's search
(ctypes.util.find_library("jopt")), else lib/ under sys.prefix, ~/.local
and /usr/local (python/README.md)."""

from ._lib import (JoptError, JoptValueError, JoptMemoryError, JoptSpecError,
                   JoptCompileError, JoptClosureError, Context, default_context,
                   library_path, ENGINE_JIT, ENGINE_REFERENCE)
from ._specs import OPTIMIZERS

__version__ = "0.1.0"
__all__ = ["JoptError", "JoptValueError", "JoptMemoryError", "JoptSpecError",
           "JoptCompileError", "JoptClosureError", "Context", "default_context",
           "library_path", "ENGINE_JIT", "ENGINE_REFERENCE", "OPTIMIZERS"]
