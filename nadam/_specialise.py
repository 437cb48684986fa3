"""Specialising a template function into compiled variants: the one helper every
compiled layer uses (CPU kernels, CUDA kernels, the compiled loop).

A *template* is a plain Python function whose free names (``_update``, ``_FLAGS``,
``_range``, ...) are not defined in its module.  :func:`rebind` copies its code
into a new function whose globals bind those names; numba compiles a global as a
compile-time constant, so each binding becomes its own branch-free variant, and
a bound function is inlined.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from numba.core.registry import CPUDispatcher

__all__ = ["rebind", "retarget", "source_digest"]


def rebind(template: Callable, name: str | None = None, **bindings: Any) -> types.FunctionType:
    """A copy of ``template`` whose globals are its own module's plus ``bindings``.

    The copy is named ``name`` (its ``__name__`` and ``__qualname__``): numba names
    cache files after the qualified name and keys its entries on the bytecode,
    which every copy shares, so the name must say what is bound.
    """
    fn = types.FunctionType(
        template.__code__,
        {**template.__globals__, **bindings},
        name or template.__name__,
        template.__defaults__,
        template.__closure__,
    )
    fn.__qualname__ = name or template.__qualname__
    fn.__doc__ = template.__doc__
    return fn


def source_digest(*objects: Any, length: int = 10) -> str:
    """A hex digest of the source files that define ``objects`` (functions or modules).

    numba's cache checks only the time stamp of the file holding the compiled
    function, which for a specialised template is the template's file: a name
    that includes this digest makes an edit of any other source involved miss
    the cache instead of loading stale code.
    """
    h = hashlib.sha1()
    seen: set[str] = set()
    for obj in objects:
        module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(obj.__module__)
        key = getattr(module, "__name__", repr(obj))
        if key in seen:
            continue
        seen.add(key)
        try:
            h.update(inspect.getsource(module if module is not None else obj).encode())
        except (OSError, TypeError):  # defined in a REPL: the code object stands in
            h.update(repr(getattr(obj, "__code__", obj)).encode())
    return h.hexdigest()[:length]


def _names(code: types.CodeType) -> set[str]:
    # The global names a function's code (and the code nested in it) reads.
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def retarget(fn: Any, jit: Callable, replace: dict | None = None, _done: dict | None = None) -> Any:
    """``fn`` (a plain function or a numba dispatcher) compiled with ``jit`` (for
    example ``numba.cuda.jit(device=True)``), with every function it calls through a
    global name retargeted the same way, all the way down, except those that
    ``replace`` maps to a replacement (original -> function for the target).

    The compiled pieces of the CPU loops are then the pieces of a device loop: the
    same code, so the same operations, for another target.  Functions are copied
    (:func:`rebind`), never changed, and each is retargeted once per call.
    """
    done = {} if _done is None else _done
    if not done and replace:
        done.update({id(getattr(k, "py_func", k)): v for k, v in replace.items()})
    py = getattr(fn, "py_func", fn)
    if id(py) in done:
        return done[id(py)]
    changed = {}
    for name in _names(py.__code__):
        value = py.__globals__.get(name)
        # Plain functions and CPU dispatchers; not the target's own functions (a
        # device objective) nor builtins.
        if isinstance(value, (types.FunctionType, CPUDispatcher)):
            changed[name] = retarget(value, jit, None, done)
    done[id(py)] = out = jit(rebind(py, py.__name__, **changed))
    return out
