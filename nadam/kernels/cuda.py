"""CUDA kernels: each rule of :mod:`nadam.rules` compiled as a grid-stride
``@cuda.jit`` kernel, and the reductions the device loops need.

A kernel has the signature ``kernel[blocks, threads](p, g, s, h)``: it updates
the flat device parameters ``p`` and the ``(k, n)`` device state ``s`` in place
from the device gradient ``g``, and returns None.  ``h`` is the rule's per-step
coefficients as a *tuple* of scalars of the parameters' dtype, not an array:

* Kernel parameters are passed by value in the launch itself (the parameter
  buffer, up to 4 KiB; here at most a few dozen × 8 bytes), so a step is one
  driver call.  An ``h`` device array would need a host-to-device copy before
  every launch (a second driver call, ~10 µs, plus a hazard if the host buffer
  is reused while an asynchronous copy is in flight).
* The kernel reads the values from the constant bank, which every thread of a
  warp reads at once at no cost in memory bandwidth.
* The scalars have the parameters' dtype (``tuple(h)`` of a float32 ``h``
  gives ``numpy.float32`` items), so a float32 kernel does float32 arithmetic.

The kernels are built from the *same* ``rule.update`` functions as the CPU
loops, compiled with ``cuda.jit(device=True)``: a loop template is copied into
a new function whose globals name the rule and its flags
(:func:`nadam._specialise.rebind`), and numba treats those globals as
compile-time constants.  The host side (state, launch bookkeeping, read-backs)
lives with its users: :mod:`nadam.device` for the optimizer classes,
:mod:`nadam.loop.device` for :func:`nadam.minimize`.

numba-cuda is imported lazily, on the first use of a device array: importing
nadam never needs it.  Without it, :func:`load` raises ``ImportError`` (install
``nadam[cuda]``); with it but without a GPU, ``RuntimeError``.  Setting
``NUMBA_ENABLE_CUDASIM=1`` before numba is first imported runs everything on
numba's CUDA simulator (slow, for tests).
"""

from __future__ import annotations

import math
import types
import warnings
from functools import cache, lru_cache
from typing import Any

import numba
import numpy as np

from .._specialise import rebind
from ..rules import Rule

__all__ = [
    "BLOCKS_PER_SM",
    "INSTALL_HINT",
    "THREADS",
    "as_numba",
    "first_pass",
    "inf_norm_kernel",
    "is_device_array",
    "is_device_function",
    "kernel",
    "launch_config",
    "launcher",
    "load",
    "nonfinite_kernel",
    "project_kernel",
    "simulated",
    "switch_kernel",
]

#: Threads per block: a multiple of the warp size that lets 8 blocks share an SM.
THREADS = 256
#: Resident blocks per SM the grid aims for: 8 × 256 = 2048 threads, the most an
#: SM of compute capability 7.0 to 9.0 holds, so every SM stays full while each
#: thread strides over many elements (fewer blocks to schedule than one thread
#: per element, the same memory parallelism).
BLOCKS_PER_SM = 8

INSTALL_HINT = 'pip install "numba-cuda>=0.30.4" (or pip install ".[cuda]" in nadam\'s source tree)'


# ---------------------------------------------------------------------------
# Loading numba-cuda
# ---------------------------------------------------------------------------


@cache
def load() -> types.ModuleType:
    """Return ``numba.cuda``, checking that numba-cuda and a device are there.

    Raises
    ------
    ImportError
        numba-cuda is not installed (the message says how to install it).
    RuntimeError
        numba-cuda is installed but finds no CUDA device, and the simulator is off.
    """
    try:
        # numba's own numba.cuda is deprecated (and gone in recent releases):
        # require the NVIDIA-maintained package, which numba.cuda redirects to.
        import numba_cuda  # noqa: F401
    except ImportError:
        raise ImportError(f"CUDA arrays need the numba-cuda package: {INSTALL_HINT}") from None
    from numba import cuda

    if not cuda.is_available():  # always True on the simulator
        raise RuntimeError(
            "no CUDA device was found (numba.cuda.is_available() is False): check the "
            "NVIDIA driver, or set NUMBA_ENABLE_CUDASIM=1 before importing numba to "
            "run on the CUDA simulator"
        )
    return cuda


@cache
def simulated() -> bool:
    """True when numba.cuda is the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    load()
    # The value numba.cuda read when it was imported, just above (numba may
    # re-read the environment later; the choice made then is what counts).
    return bool(numba.config.ENABLE_CUDASIM)


def is_device_array(x: object) -> bool:
    """True for an array in CUDA device memory: anything with
    ``__cuda_array_interface__`` (numba, CuPy, torch CUDA tensors) or a numba
    (simulator) device array.  Never imports numba.cuda."""
    return not isinstance(x, np.ndarray) and (
        hasattr(x, "__cuda_array_interface__") or getattr(x, "__cuda_ndarray__", False) is True
    )


def as_numba(x: Any) -> Any:
    """``x`` as a numba device array (no copy): numba arrays as they are, others
    through ``numba.cuda.as_cuda_array`` (which waits for the stream they name)."""
    if getattr(x, "__cuda_ndarray__", False) is True:
        return x
    cuda = load()
    if not hasattr(cuda, "as_cuda_array"):
        raise TypeError(
            "the CUDA simulator only takes numba device arrays (numba.cuda.to_device), "
            f"got {type(x).__name__}"
        )
    return cuda.as_cuda_array(x)


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------

# The loop index is unsigned: with a signed index numba wraps negative indices
# on every access, a few integer instructions per array per element that the
# compiler cannot remove (it cannot prove cuda.grid(1) >= 0).
_index = numba.uint64


# The templates below are never called directly: ``_compile`` copies their code
# into a new function whose globals bind ``cuda``, ``_update`` and ``_FLAGS``.
def _kernel_template(p, g, s, h):
    i = _index(cuda.grid(1))  # noqa: F821 (bound by rebind)
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(p.shape[0])
    while i < n:
        p[i] = _update(p, g, s, h, i, _FLAGS)  # noqa: F821
        i += stride


def _guarded_kernel_template(p, g, s, h, avg, w, flag):
    # As the CPU's guarded loop: a non-finite new value is not written (flag[0] is
    # set instead: an OR without atomics, every writer stores the same 1), and with
    # _AVERAGE the average moves towards the new iterate.
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(p.shape[0])
    while i < n:
        new = _update(p, g, s, h, i, _FLAGS)  # noqa: F821
        if new - new == 0:
            p[i] = new
        else:
            flag[0] = 1
        if _AVERAGE:  # noqa: F821 (a compile-time constant: the branch is pruned)
            a = avg[i]
            avg[i] = a + w * (p[i] - a)
        i += stride


def _switch_template(p, s, h):
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(p.shape[0])
    while i < n:
        p[i] = _switch(p, s, h, i, _FLAGS)  # noqa: F821
        i += stride


def _first_pass_template(p, g, s, h, partial):
    # partial[block, :] = this block's two sums of the rule's first pass; a
    # shared-memory tree adds the threads' sums (fixed order for a fixed grid).
    buf = cuda.shared.array((THREADS, 2), numba.float64)  # noqa: F821
    tid = cuda.threadIdx.x  # noqa: F821
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(p.shape[0])
    a = 0.0
    b = 0.0
    while i < n:
        x, y = _accumulate(p, g, s, h, i, _FLAGS)  # noqa: F821
        a += x
        b += y
        i += stride
    buf[tid, 0] = a
    buf[tid, 1] = b
    cuda.syncthreads()  # noqa: F821
    width = cuda.blockDim.x  # noqa: F821
    step = 1
    while step < width:
        if tid % (2 * step) == 0 and tid + step < width:
            buf[tid, 0] += buf[tid + step, 0]
            buf[tid, 1] += buf[tid + step, 1]
        step *= 2
        cuda.syncthreads()  # noqa: F821
    if tid == 0:
        partial[cuda.blockIdx.x, 0] = buf[0, 0]  # noqa: F821
        partial[cuda.blockIdx.x, 1] = buf[0, 1]  # noqa: F821


def _nonfinite_template(x, flag):
    # An OR-reduction without atomics or shared memory: every thread that sees
    # a NaN or an infinity stores the same 1, so the order of the stores does
    # not matter.  One read of x, nothing written in the common case.
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(x.shape[0])
    while i < n:
        if not math.isfinite(x[i]):
            flag[0] = 1
        i += stride


def _inf_norm_template(x, g, lo, hi, partial):
    # partial[block] = max_i |g_i| over this block's elements, or, with _PROJECTED,
    # max_i |P(x_i - g_i) - x_i| (P: the clip onto [lo_i, hi_i]), _step's, the same
    # measures and arithmetic (in g's dtype) as nadam.loop.tracker's inf_norm and
    # projected_inf_norm.  NaN is sticky in the max (a NaN operand wins), and with
    # _PROJECTED a non-finite g_i gives NaN, as on the CPU: a finite result certifies
    # a finite gradient.  A shared-memory tree reduces each block, so one write per
    # block and no atomics.
    buf = cuda.shared.array(THREADS, numba.float64)  # noqa: F821
    tid = cuda.threadIdx.x  # noqa: F821
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(g.shape[0])
    m = 0.0
    while i < n:
        gi = g[i]
        if _PROJECTED:  # noqa: F821 (a compile-time constant: the branch is pruned)
            if math.isfinite(gi):
                a = _step(x[i], gi, lo[i], hi[i])  # noqa: F821
            else:
                a = math.nan
        else:
            a = abs(gi)
        if a > m or a != a:
            m = a
        i += stride
    buf[tid] = m
    cuda.syncthreads()  # noqa: F821
    width = cuda.blockDim.x  # noqa: F821 (a multiple of 32, not always a power of 2)
    step = 1
    while step < width:
        if tid % (2 * step) == 0 and tid + step < width:
            b = buf[tid + step]
            if b > buf[tid] or b != b:
                buf[tid] = b
        step *= 2
        cuda.syncthreads()  # noqa: F821
    if tid == 0:
        partial[cuda.blockIdx.x] = buf[0]  # noqa: F821


def _project_template(x, lo, hi):
    # Clip x onto [lo, hi] in place, as nadam.loop.tracker.project.
    i = _index(cuda.grid(1))  # noqa: F821
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(x.shape[0])
    while i < n:
        v = x[i]
        if v < lo[i]:
            x[i] = lo[i]
        elif v > hi[i]:
            x[i] = hi[i]
        i += stride


def _compile(template, name: str, cache: bool = True, **bindings):
    cuda = load()
    fn = rebind(template, name, cuda=cuda, THREADS=THREADS, **bindings)
    return cuda.jit(cache=cache)(fn)


@cache
def _device_function(function):
    # One device function per element function (Adam and AdamW share theirs);
    # inlined into the kernel, where the constant flags prune the branches.
    return load().jit(device=True, inline="always")(function)


def _name(rule: Rule, flags: tuple, kind: str) -> str:
    on = "".join(f"_{n}" for n, flag in zip(rule.flag_names, flags, strict=True) if flag)
    # Cache files are named after the variant and the rule's sources: never stale.
    return f"{kind}_{rule.name}{on}_cuda_{rule.digest}"


@cache
def kernel(rule: Rule, flags: tuple = (), guarded: bool = False, average: bool = False):
    """The CUDA kernel of a rule (the second pass of a two-pass rule).

    ``kernel[blocks, threads](p, g, s, h) -> None`` updates ``p`` and ``s`` in
    place.  With ``guarded``, ``kernel[...](p, g, s, h, avg, w, flag)`` leaves an
    element whose new value is not finite as it was and sets ``flag[0] = 1``
    (the device side of :func:`nadam.kernels.cpu.guarded_stepper`); with
    ``average`` too, ``avg += w·(p - avg)`` in the same pass.  Any grid works
    (the loop strides over the whole array); :func:`launch_config` gives a good one.

    Parameters
    ----------
    rule : Rule
        From :data:`nadam.rules.RULES`.
    flags : tuple of bool
        The rule's compile-time switches, in ``rule.flag_names`` order.

    Notes
    -----
    ``p`` and ``g`` are 1-D, ``s`` is ``(k, n)``, all device arrays of one dtype;
    ``h`` is a tuple of ``rule.n_coefficients`` scalars of that dtype (for
    example ``tuple(h)`` of the array that ``rule.coefficients`` fills).
    """
    flags = tuple(bool(f) for f in flags)
    update = _device_function(rule.update)
    if not guarded:
        return _compile(
            _kernel_template, _name(rule, flags, "kernel"), _update=update, _FLAGS=flags
        )
    kind = "guarded_average" if average else "guarded"
    return _compile(
        _guarded_kernel_template,
        _name(rule, flags, kind),
        _update=update,
        _FLAGS=flags,
        _AVERAGE=bool(average),
    )


@cache
def first_pass(rule: Rule, flags: tuple = ()):
    """The first pass ``first[blocks, THREADS](p, g, s, h, partial)`` of a two-pass
    rule: updates ``s`` and writes each block's two sums into ``partial`` (a
    ``(blocks, 2)`` float64 device array), for the host to add up in order."""
    flags = tuple(bool(f) for f in flags)
    return _compile(
        _first_pass_template,
        _name(rule, flags, "first"),
        rule.cacheable,
        _accumulate=_device_function(rule.accumulate),
        _FLAGS=flags,
    )


@cache
def switch_kernel(rule: Rule, flags: tuple = ()):
    """``switch[grid](p, s, h)``: the device side of :func:`nadam.kernels.cpu.switch_kernel`
    (``h`` a tuple of three scalars of p's dtype)."""
    flags = tuple(bool(f) for f in flags)
    return _compile(
        _switch_template,
        _name(rule, flags, "switch"),
        rule.cacheable,
        _switch=_device_function(rule.switch),
        _FLAGS=flags,
    )


@cache
def nonfinite_kernel():
    """``nonfinite[grid](x, flag)``: sets ``flag[0] = 1`` if ``x`` holds a NaN or an infinity."""
    return _compile(_nonfinite_template, "nonfinite_cuda")


@cache
def inf_norm_kernel(step: Any = None):
    """``norm[grid](x, g, lo, hi, partial)``: each block's ``max |g_i|``, or with the
    scalar function ``step(x_i, g_i, lo_i, hi_i)`` (the host's
    :func:`nadam.loop.tracker.projected_step`), ``max step(...)``, into
    ``partial[block]``; NaN when a ``g_i`` is."""
    if step is None:
        return _compile(_inf_norm_template, "inf_norm_cuda", _PROJECTED=False, _step=None)
    device = _device_function(step)
    return _compile(_inf_norm_template, "projected_inf_norm_cuda", _PROJECTED=True, _step=device)


@cache
def project_kernel():
    """``project[grid](x, lo, hi)``: clip ``x`` onto ``[lo, hi]`` in place."""
    return _compile(_project_template, "project_cuda")


@lru_cache(maxsize=256)
def grid_for(n: int, sm_count: int) -> tuple[int, int]:
    """``(blocks, threads)`` for ``n`` elements on a device with ``sm_count`` SMs.

    Small arrays get one small block (no idle warps); large ones a grid that
    fills every SM once and strides over the rest."""
    threads = min(THREADS, 32 * max(1, -(-n // 32)))
    blocks = max(1, min(-(-n // threads), sm_count * BLOCKS_PER_SM))
    return blocks, threads


def launch_config(n: int) -> tuple[int, int]:
    """``(blocks, threads)`` for an ``n``-element grid-stride loop on the current device.

    ``THREADS`` threads per block and at most ``BLOCKS_PER_SM`` blocks per SM,
    fewer when ``n`` is small; cached per size and SM count.
    """
    device = load().get_current_device()
    # The simulator's device has no attributes: one SM.
    return grid_for(int(n), int(getattr(device, "MULTIPROCESSOR_COUNT", 1)))


def launcher(kern, n: int, grid: tuple[int, int] | None = None):
    """A launcher ``launch(*args)`` of ``kern`` over ``n`` elements (on ``grid``,
    ``(blocks, threads)``, if given), built once."""
    blocks, threads = launch_config(n) if grid is None else grid
    if simulated():
        # The simulator's ``kern[...]`` sets the grid on the shared kernel object
        # and returns it: index it on every call.
        return lambda *args: kern[blocks, threads](*args)
    from numba.core.errors import NumbaPerformanceWarning

    with warnings.catch_warnings():
        # numba warns about grids under 128 blocks, which small arrays need.
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        return kern[blocks, threads]


def is_device_function(fn: object) -> bool:
    """True for a ``@cuda.jit(device=True)`` function (on the simulator too)."""
    options = getattr(fn, "targetoptions", None)
    if isinstance(options, dict):
        return bool(options.get("device"))
    return getattr(fn, "_device", False) is True
