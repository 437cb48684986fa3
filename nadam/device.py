r"""The device side of :func:`nadam.minimize` with ``options={"device": "cuda"}``.

The iterate lives in CUDA device memory for the whole run: ``x0`` is copied to
the device once (in x0's dtype, float64 unless x0 is float32), ``fun`` receives
the device iterate and returns a device gradient, the optimizer updates the
iterate in place with its CUDA kernel, and only the result comes back to the
host.  :class:`DeviceRun` gives :class:`nadam.minimize.Minimizer` the pieces
its loop needs, with the same signatures as the CPU helpers, so the loop binds
them once and runs unchanged:

* ``track``: the stopping rules.  The gradient norm (gtol) and the finiteness
  check come from one device reduction (:class:`nadam.kernels.cuda.InfNorm`)
  whose single float64 is the only thing read back per step, a sync the loop
  needs anyway to decide whether to stop; the rest is
  :func:`nadam.minimize._track` itself on that scalar, so the two devices cannot
  drift apart.  With ``return_best`` the best iterate and gradient are copied
  device to device.
* ``project``: the clip onto the bounds, a device kernel.

What a device run refuses, and why:

* finite differences: each of the n + 1 (or 2n + 1) evaluations per step would
  perturb one element of the device iterate (a host-to-device copy each) and read
  back a scalar, a round trip per element of x: give ``jac=True`` or a ``jac``
  callable that computes the gradient on the device;
* ``batch_size``: drawing rows of device arrays needs a gather per array per
  step; a stream of device batches (``args`` as an iterator) does the same job
  with the sampling under your control;
* ``comm`` (MPI sums f and g in host buffers) and ``compiled`` (the compiled loop
  runs on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .kernels import cuda as ck
from .minimize import _BEST_F, _track

__all__ = ["DEVICES", "DeviceRun", "check_options", "to_host"]

#: The values of ``options["device"]``.
DEVICES = ("cpu", "cuda")


def check_options(o: dict, jac: Any) -> None:
    """Refuse what a device run cannot do, before anything touches the device.

    Raises
    ------
    ValueError
        For finite differences, ``batch_size``, ``comm`` or ``compiled=True``.
    """
    if not (jac is True or callable(jac)):
        raise ValueError(
            "option device='cuda' needs the gradient from your code: jac=True (fun returns "
            "(f, g)) or a jac callable, with g a device array; finite differences "
            f"(jac={jac!r}) would copy one element of x to the device and a value back for "
            "every element of x, every step"
        )
    if o["batch_size"] is not None:
        raise ValueError(
            "option batch_size cannot be combined with device='cuda' (sampling rows of "
            "device arrays would need a gather per array per step); pass args as an "
            "iterator that yields each step's batch as device arrays instead"
        )
    if o["comm"] is not None:
        raise ValueError(
            "option comm cannot be combined with device='cuda': nadam.mpi sums f and g in "
            "host buffers"
        )
    if o["compiled"] is True:
        raise ValueError(
            "option compiled=True cannot be combined with device='cuda': the compiled loop "
            "runs on the CPU (device runs use the Python loop, whose per-step cost is small "
            "next to a kernel launch)"
        )


def to_host(a: Any) -> np.ndarray:
    """A host NumPy copy of ``a``: a device array (any ``__cuda_array_interface__``
    object), or a NumPy array (copied too, so the caller always owns the result)."""
    if isinstance(a, np.ndarray):
        return a.copy()
    return ck._as_numba(ck.load(), a).copy_to_host()


def _describe(a: Any) -> str:
    return type(a).__module__.split(".")[0] + "." + type(a).__name__


class DeviceRun:
    """The device arrays and per-step functions of one device :func:`nadam.minimize` run.

    Parameters
    ----------
    x : numpy.ndarray
        The validated (and projected) host iterate; copied to the device once.
    box : tuple of numpy.ndarray or None
        The flat host bounds ``(lo, hi)`` in x's dtype, or None; copied once.
    return_best : bool
        Whether to keep device copies of the best iterate and its gradient.

    Attributes
    ----------
    x : numba device array
        The iterate, x0's shape and x's dtype, updated in place by the run.
    x_flat : numba device array
        A flat view of ``x`` (same memory).
    best : tuple
        ``(best_x, best_g)``, device arrays of x's shape, or ``(None, None)``.

    Raises
    ------
    ImportError, RuntimeError
        From :func:`nadam.kernels.cuda.load`: numba-cuda is missing (``pip
        install nadam[cuda]``) or no CUDA device was found.
    """

    def __init__(self, x: np.ndarray, box: tuple | None, return_best: bool):
        cuda = ck.load()
        self._cuda = cuda
        n = x.size
        self.shape, self.dtype = x.shape, x.dtype
        self.x = cuda.to_device(np.ascontiguousarray(x))
        self.x_flat = self.x.reshape(n)
        self.box = (None, None) if box is None else tuple(cuda.to_device(b) for b in box)
        self.best = (
            (cuda.device_array(x.shape, x.dtype), cuda.device_array(x.shape, x.dtype))
            if return_best
            else (None, None)
        )
        self._norm = ck.InfNorm(n, projected=box is not None)
        self._projector = ck.projector(n) if box is not None else None
        # _track reads the gradient norm from a one-element "gradient" (|gnorm| is
        # gnorm, NaN stays NaN) and writes a best "iterate" into one-element scratch:
        # the real best arrays are copied on the device when it reports a new best.
        self._gnorm = np.zeros(1)
        self._scratch = (np.zeros(1), np.zeros(1))

    def _flat(self, g: Any):
        # A flat numba view of the gradient: no copy (checked to be C-contiguous by
        # check_grad); numba arrays skip as_cuda_array and its stream synchronisation.
        if getattr(g, "__cuda_ndarray__", False) is not True:
            g = ck._as_numba(self._cuda, g)
        return g if g.ndim == 1 else g.reshape(g.size)

    def track(self, f: float, g: Any, x, lo, hi, best_x, best_g, tr: np.ndarray, nit: int):
        """:func:`nadam.minimize._track` for device arrays (same arguments and result);
        ``x``, ``lo``, ``hi``, ``best_x``, ``best_g`` are flat device arrays or None."""
        gf = self._flat(g)
        buf = self._gnorm
        buf[0] = self._norm(x, gf, gf, gf) if lo is None else self._norm(x, gf, lo, hi)
        if best_x is None:
            return _track(f, buf, buf, None, None, None, None, tr, nit)
        best_f = tr[_BEST_F]
        code = _track(f, buf, buf, None, None, *self._scratch, tr, nit)
        if tr[_BEST_F] < best_f:  # the lowest loss yet: keep x and g, on the device
            best_x.copy_to_device(x)
            best_g.copy_to_device(gf)
        return code

    def project(self, x, lo, hi) -> None:
        """:func:`nadam.minimize._project` for flat device arrays (one launch)."""
        self._projector(x, lo, hi)

    def check_grad(self, g: Any, src: str) -> None:
        """Check the first gradient: a C-contiguous device array of x's shape and dtype.

        Raises
        ------
        TypeError, ValueError
            Naming ``src``, the gradient's source, and what is wrong.
        """
        if not ck.is_device_array(g):
            raise TypeError(
                f"the gradient from {src} must be a CUDA device array (option device='cuda') "
                f"of shape {self.shape} and dtype {self.dtype}, got {_describe(g)}; nadam "
                "does not copy gradients to the device"
            )
        ga = ck._as_numba(self._cuda, g)
        if tuple(ga.shape) != self.shape:
            raise ValueError(
                f"the gradient from {src} has shape {tuple(ga.shape)}, but x0 has shape "
                f"{self.shape}"
            )
        if ga.dtype != self.dtype:
            raise TypeError(
                f"the gradient from {src} has dtype {ga.dtype}, but x has dtype {self.dtype}: "
                "nadam never mixes precisions; return the gradient in x0's dtype"
            )
        if not ga.is_c_contiguous():
            raise TypeError(f"the gradient from {src} must be C-contiguous on the device")

    to_host = staticmethod(to_host)

    @staticmethod
    def host_callback(call: Callable) -> Callable:
        """Wrap a loop callback ``call(x, f, g, nit)`` to receive host copies of x and g
        (one device-to-host copy of each per iteration: a cost only callbacks pay)."""
        return lambda x, f, g, nit: call(to_host(x), f, to_host(g), nit)
