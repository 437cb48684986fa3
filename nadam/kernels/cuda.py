"""CUDA kernels: each rule of :mod:`nadam.rules` compiled as a grid-stride
``@cuda.jit`` kernel, and the device side of the optimizer classes.

A kernel has the signature ``kernel[blocks, threads](p, g, s, h)``: it updates
the flat device parameters ``p`` and the ``(k, n)`` device state ``s`` in place
from the device gradient ``g``, and returns None.  ``h`` is the rule's per-step
coefficients as a *tuple* of scalars of the parameters' dtype, not an array:

* Kernel parameters are passed by value in the launch itself (the parameter
  buffer, up to 4 KiB; here at most 11 × 8 bytes), so a step is one driver call.
  An ``h`` device array would need a host-to-device copy before every launch
  (a second driver call, ~10 µs, plus a hazard if the host buffer is reused
  while an asynchronous copy is in flight).
* The kernel reads the values from the constant bank, which every thread of a
  warp reads at once at no cost in memory bandwidth.
* The scalars have the parameters' dtype (``tuple(h)`` of a float32 ``h``
  gives ``numpy.float32`` items), so a float32 kernel does float32 arithmetic.

The price is host-side: numba marshals each scalar in Python, about a
microsecond per item by our estimate (not measured on hardware), which is less
than the copy it replaces.

The kernels are built from the *same* ``rule.update`` functions as the CPU
loops, compiled with ``cuda.jit(device=True)``: :func:`kernel` copies a loop
template into a new function whose globals name the rule and its options, as
:mod:`nadam.kernels.cpu` does, and numba treats those globals as compile-time
constants.

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

from ..rules import SOURCE_HASH, Rule

__all__ = [
    "BLOCKS_PER_SM",
    "THREADS",
    "Device",
    "InfNorm",
    "all_finite",
    "is_device_array",
    "kernel",
    "launch_config",
    "load",
    "projector",
]

#: Threads per block: a multiple of the warp size that lets 8 blocks share an SM.
THREADS = 256
#: Resident blocks per SM the grid aims for: 8 × 256 = 2048 threads, the most an
#: SM of compute capability 7.0 to 9.0 holds, so every SM stays full while each
#: thread strides over many elements (fewer blocks to schedule than one thread
#: per element, the same memory parallelism).
BLOCKS_PER_SM = 8

INSTALL_HINT = "pip install nadam[cuda]"

_JIT: dict[str, Any] = dict(cache=True)


# ---------------------------------------------------------------------------
# Loading numba-cuda
# ---------------------------------------------------------------------------


@cache
def load() -> types.ModuleType:
    """Return ``numba.cuda``, checking that numba-cuda and a device are there.

    Raises
    ------
    ImportError
        numba-cuda is not installed (the message says ``pip install nadam[cuda]``).
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


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------

# The loop index is unsigned: with a signed index numba wraps negative indices
# on every access, a few integer instructions per array per element that the
# compiler cannot remove (it cannot prove cuda.grid(1) >= 0).
_index = numba.uint64


# The templates below are never called directly: ``_specialise`` copies their
# code into a new function whose globals bind ``cuda``, ``_update`` and
# ``_OPTS`` (the same trick as nadam.kernels.cpu).
def _kernel_template(p, g, s, h):
    i = _index(cuda.grid(1))  # noqa: F821 (bound by _specialise)
    stride = _index(cuda.gridsize(1))  # noqa: F821
    n = _index(p.shape[0])
    while i < n:
        _update(p, g, s, h, i, _OPTS)  # noqa: F821
        i += stride


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
    # max_i |P(x_i - g_i) - x_i| (P: the clip onto [lo_i, hi_i]), the same measures
    # and arithmetic (in g's dtype) as nadam.minimize's _inf_norm and
    # _projected_inf_norm.  NaN is sticky in the max (a NaN operand wins), and with
    # _PROJECTED a non-finite g_i gives NaN, as on the CPU: a finite result
    # certifies a finite gradient.  A shared-memory tree reduces each block, so
    # one write per block and no atomics (float atomics are a CAS loop, and their
    # order would not matter here but their contention on one address would).
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
                xi = x[i]
                v = xi - gi
                if v < lo[i]:
                    v = lo[i]
                elif v > hi[i]:
                    v = hi[i]
                a = abs(v - xi)
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
    # Clip x onto [lo, hi] in place, as nadam.minimize._project.
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


def _specialise(template, name: str, bindings: dict, **jit):
    cuda = load()
    fn = types.FunctionType(template.__code__, {**globals(), "cuda": cuda, **bindings}, name)
    # Cache files are named after the qualified name: one per variant and per
    # version of the rules' source, so a cached kernel is never stale.
    fn.__qualname__ = f"{name}_{SOURCE_HASH}"
    return cuda.jit(**jit)(fn)


@cache
def _device_update(update):
    # One device function per update function (Adam and AdamW share theirs);
    # inlined into the kernel, where the constant options prune the branches.
    return load().jit(device=True, inline="always")(update)


@cache
def kernel(rule: Rule, opts: tuple = ()):
    """The CUDA kernel ``kernel[blocks, threads](p, g, s, h) -> None`` of a rule.

    It mutates ``p`` and ``s`` in place and returns None.  Any grid works (the
    loop strides over the whole array); :func:`launch_config` gives a good one.

    Parameters
    ----------
    rule : Rule
        From :data:`nadam.rules.RULES`.
    opts : tuple of bool
        The rule's compile-time options, in ``rule.option_names`` order.

    Notes
    -----
    ``p`` and ``g`` are 1-D, ``s`` is ``(k, n)``, all device arrays of one dtype;
    ``h`` is a tuple of ``rule.n_coefficients`` scalars of that dtype (for
    example ``tuple(h)`` of the array that ``rule.coefficients`` fills).
    """
    opts = tuple(bool(o) for o in opts)
    flags = "".join(f"_{n}" for n, on in zip(rule.option_names, opts, strict=True) if on)
    bindings = {"_update": _device_update(rule.update), "_OPTS": opts}
    return _specialise(_kernel_template, f"{rule.name}{flags}_cuda", bindings, **_JIT)


@cache
def _nonfinite_kernel():
    return _specialise(_nonfinite_template, "nonfinite_cuda", {}, **_JIT)


@cache
def _inf_norm_kernel(projected: bool):
    name = "projected_inf_norm_cuda" if projected else "inf_norm_cuda"
    return _specialise(_inf_norm_template, name, {"_PROJECTED": bool(projected)}, **_JIT)


@cache
def _project_kernel():
    return _specialise(_project_template, "project_cuda", {}, **_JIT)


@lru_cache(maxsize=256)
def _launch_config(n: int, sm_count: int) -> tuple[int, int]:
    # Small arrays get one small block (no idle warps); large ones a grid that
    # fills every SM once and strides over the rest.
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
    return _launch_config(int(n), int(getattr(device, "MULTIPROCESSOR_COUNT", 1)))


def _configured(kern, n: int, grid: tuple[int, int] | None = None):
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


class _FiniteCheck:
    """``check(x) -> bool``: whether the device array ``x`` is all finite.

    One read of ``x`` on the device and a 4-byte read back (which waits for the
    kernel: the one synchronisation per checked step).  The flag is cleared
    only after it was set, so a clean step costs no extra transfer.
    """

    def __init__(self, n: int):
        cuda = load()
        self._launch = _configured(_nonfinite_kernel(), n)
        self._flag = cuda.to_device(np.zeros(1, np.int32))
        self._host = cuda.pinned_array(1, np.int32)

    def __call__(self, x) -> bool:
        self._launch(x, self._flag)
        self._flag.copy_to_host(self._host)
        if self._host[0] == 0:
            return True
        self._flag.copy_to_device(np.zeros(1, np.int32))
        return False


class InfNorm:
    """``norm(x, g, lo, hi) -> float``: the gradient norm of :func:`nadam.minimize.minimize`
    for flat device arrays, computed on the device.

    ``max_i |g_i|``, or with ``projected=True`` the projected-gradient norm
    ``max_i |P(x_i - g_i) - x_i|`` (P: the clip onto ``[lo, hi]``); NaN when any
    ``g_i`` is NaN (and, projected, when any is infinite), so a finite result
    certifies a finite gradient.  Equal to the CPU helpers' value, bit for bit:
    the same arithmetic in g's dtype, and a max does not depend on its order.

    Two launches (per-block maxima, then one block over those; one when a single
    block covers ``n``) and an 8-byte read back, which waits for the kernels:
    the one synchronisation per step that a host-side stopping test needs anyway.
    Without ``projected``, ``x``, ``lo`` and ``hi`` are ignored (pass ``g``).

    Parameters
    ----------
    n : int
        Number of elements of the flat arrays.
    projected : bool
        Whether to compute the projected norm (``lo``, ``hi``: the bounds).
    """

    def __init__(self, n: int, projected: bool = False):
        cuda = load()
        blocks, _ = launch_config(n)
        self._first = _configured(_inf_norm_kernel(projected), n)
        # The second pass reads the per-block maxima as a plain (non-projected) norm
        # (they are >= 0 or NaN, so |m| = m) in one block, which must write out[0]:
        # launch_config would give several blocks for over THREADS maxima.
        grid = (1, min(THREADS, 32 * -(-blocks // 32)))
        self._second = None if blocks == 1 else _configured(_inf_norm_kernel(False), blocks, grid)
        self._partial = cuda.device_array(blocks, np.float64)
        self._out = cuda.device_array(1, np.float64)
        self._host = cuda.pinned_array(1, np.float64)

    def __call__(self, x, g, lo, hi) -> float:
        partial, out = self._partial, self._out
        if self._second is None:
            self._first(x, g, lo, hi, out)
        else:
            self._first(x, g, lo, hi, partial)
            self._second(partial, partial, partial, partial, out)
        out.copy_to_host(self._host)
        return float(self._host[0])


def projector(n: int):
    """``project(x, lo, hi) -> None``: clip the flat ``n``-element device array ``x``
    onto ``[lo, hi]`` in place (device arrays of x's dtype), one launch, asynchronous."""
    return _configured(_project_kernel(), n)


def all_finite(x: Any) -> bool:
    """True if every element of the C-contiguous device array ``x`` is finite
    (one pass on the device, then a 4-byte read back)."""
    x = _as_numba(load(), x)
    x = x if x.ndim == 1 else x.reshape(x.size)
    return _FiniteCheck(x.size)(x)


# ---------------------------------------------------------------------------
# Device arrays in the optimizer classes
# ---------------------------------------------------------------------------


def _as_numba(cuda, x):
    if getattr(x, "__cuda_ndarray__", False) is True:
        return x  # already a numba (or simulator) device array
    if not hasattr(cuda, "as_cuda_array"):
        raise TypeError(
            "the CUDA simulator only takes numba device arrays (numba.cuda.to_device), "
            f"got {type(x).__name__}"
        )
    return cuda.as_cuda_array(x)


def _describe(x) -> str:
    return type(x).__module__.split(".")[0] + "." + type(x).__name__


class Device:
    """The device side of an :class:`~nadam.optimizers.Optimizer` bound to a CUDA array.

    Wraps the parameters (any ``__cuda_array_interface__`` object) as a flat
    numba device view and provides what the optimizer needs on the device:
    state allocation, the stepper, the finiteness check, gradient checks and
    copies to and from the host.  Nothing here copies between host and device
    during a step.

    Parameters
    ----------
    params : array with ``__cuda_array_interface__``
        C-contiguous, writable float32 or float64 device array, updated in place.
        A torch tensor that requires grad has no such interface: pass
        ``tensor.detach()``, which shares its memory.

    Notes
    -----
    Kernels run on numba's default stream.  Arrays from other libraries are
    wrapped with ``numba.cuda.as_cuda_array``, which waits for the stream they
    name in their interface (CUDA Array Interface v3), on every step for a
    foreign gradient; numba device arrays skip the wrapping and that wait.  Set
    ``NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0`` to skip it when the producer uses the
    default stream too.
    """

    def __init__(self, params: Any):
        cuda = load()
        self._cuda = cuda
        arr = _as_numba(cuda, params)
        if arr.dtype not in (np.float32, np.float64):
            raise TypeError(f"params must have dtype float32 or float64, got {arr.dtype}")
        if not arr.is_c_contiguous():
            raise TypeError(
                "params must be a C-contiguous device array so it can be updated in place"
            )
        interface = getattr(params, "__cuda_array_interface__", None)
        if interface is not None and interface["data"][1]:
            raise TypeError("params must be writable, got a read-only device array")
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.size = int(arr.size)
        #: The flat device view that the kernels update (shares memory with params).
        self.params = arr.reshape(self.size) if arr.ndim != 1 else arr
        self.all_finite = _FiniteCheck(self.size)

    def stepper(self, rule: Rule, opts: tuple):
        """``step(p, g, s, hp, t, aux, h) -> None``: host coefficients, then one launch.

        Same signature as :func:`nadam.kernels.cpu.stepper`; ``h`` is the host
        coefficient buffer, passed to the kernel by value as a tuple.
        """
        coefficients = rule.coefficients
        launch = _configured(kernel(rule, opts), self.size)

        def step(p, g, s, hp, t, aux, h):
            coefficients(hp, t, aux, h)
            launch(p, g, s, tuple(h))

        return step

    def checked_stepper(self, rule: Rule, opts: tuple):
        """``step(p, g, s, hp, t, aux, h) -> bool``: as :meth:`stepper` if ``g`` is
        all finite (returns True); otherwise touches nothing and returns False.
        Same signature as :func:`nadam.kernels.cpu.checked_stepper`."""
        step = self.stepper(rule, opts)

        def checked_step(p, g, s, hp, t, aux, h):
            if not all_finite(g):
                return False
            step(p, g, s, hp, t, aux, h)
            return True

        return checked_step

    def grad(self, grad: Any):
        """The flat device view of ``grad``, after checking it matches the parameters."""
        if not is_device_array(grad):
            raise TypeError(
                f"grad must be a CUDA device array like the parameters, got {_describe(grad)}; "
                "nadam never copies between host and device inside step()"
            )
        g = _as_numba(self._cuda, grad)
        if tuple(g.shape) != self.shape:
            raise ValueError(
                f"grad has shape {tuple(g.shape)}, but the parameters have shape {self.shape}"
            )
        if g.dtype != self.dtype:
            raise TypeError(
                f"grad has dtype {g.dtype}, but the parameters have dtype {self.dtype}; "
                "nadam never mixes precisions: cast the gradient"
            )
        if g.ndim == 1:
            return g
        if not g.is_c_contiguous():
            raise TypeError("grad must be C-contiguous on the device")
        return g.reshape(self.size)

    def to_device(self, host: np.ndarray):
        """A new device array holding a copy of ``host``."""
        return self._cuda.to_device(np.ascontiguousarray(host))

    @staticmethod
    def to_host(dev) -> np.ndarray:
        """A host NumPy copy of the device array ``dev`` (waits for pending work)."""
        return dev.copy_to_host()

    @staticmethod
    def copy_in(dev, host: np.ndarray) -> None:
        """Overwrite the device array ``dev`` with ``host`` (same shape and dtype)."""
        dev.copy_to_device(np.ascontiguousarray(host))
