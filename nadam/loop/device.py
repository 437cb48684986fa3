r"""The device loop of :func:`nadam.minimize` with ``options={"device": "cuda"}``.

The iterate lives in CUDA device memory for the whole run: ``x0`` is copied to
the device once (in x0's dtype, float64 unless x0 is float32), ``fun`` receives
the device iterate and returns a device gradient, the optimizer updates the
iterate in place with its CUDA kernel, and only the result comes back to the
host.  :class:`DeviceRun` gives the loop (the Python specialisation of
:func:`nadam.loop.iteration.iterate_template`) its device parts, with the
signatures of the CPU ones, so the loop runs unchanged:

* ``track``: the stopping rules.  The gradient norm (gtol) and the finiteness
  check come from one device reduction whose single float64 is the only thing
  read back per step, a sync the loop needs anyway to decide whether to stop;
  the rest is :func:`nadam.loop.tracker.track` itself on that scalar, so the two
  devices cannot drift apart.  With ``return_best`` the best iterate and
  gradient are copied device to device.
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

from ..device import to_host
from ..kernels import cuda as ck
from .tracker import BEST_F, projected_step, track

__all__ = ["DeviceRun", "InfNorm", "check_options"]


def check_options(batch_size: Any, comm: Any, compiled: Any, jac: Any) -> None:
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
    if batch_size is not None:
        raise ValueError(
            "option batch_size cannot be combined with device='cuda' (sampling rows of "
            "device arrays would need a gather per array per step); pass args as an "
            "iterator that yields each step's batch as device arrays instead"
        )
    if comm is not None:
        raise ValueError(
            "option comm cannot be combined with device='cuda': nadam.mpi sums f and g in "
            "host buffers"
        )
    if compiled is True:
        raise ValueError(
            "option compiled=True cannot be combined with device='cuda': the compiled loop "
            "runs on the CPU (device runs use the Python loop, whose per-step cost is small "
            "next to a kernel launch)"
        )


class InfNorm:
    """``norm(x, g, lo, hi) -> float``: the gradient norm of the stopping rules for
    flat device arrays, computed on the device.

    ``max_i |g_i|``, or with ``projected=True`` the projected-gradient norm
    ``max_i |P(x_i - g_i) - x_i|`` (P: the clip onto ``[lo, hi]``); NaN when any
    ``g_i`` is NaN (and, projected, when any is infinite), so a finite result
    certifies a finite gradient.  Equal to the CPU's value
    (:func:`nadam.loop.tracker.inf_norm`), bit for bit: the same arithmetic in
    g's dtype, and a max does not depend on its order.

    Two launches (per-block maxima, then one block over those; one when a single
    block covers ``n``) and an 8-byte read back, which waits for the kernels:
    the one synchronisation per step that a host-side stopping test needs anyway.
    Without ``projected``, ``x``, ``lo`` and ``hi`` are ignored (pass ``g``).
    """

    def __init__(self, n: int, projected: bool = False):
        cuda = ck.load()
        blocks, _ = ck.launch_config(n)
        self._first = ck.launcher(ck.inf_norm_kernel(projected_step if projected else None), n)
        # The second pass reads the per-block maxima as a plain (non-projected) norm
        # (they are >= 0 or NaN, so |m| = m) in one block, which must write out[0]:
        # launch_config would give several blocks for over THREADS maxima.
        grid = (1, min(ck.THREADS, 32 * -(-blocks // 32)))
        self.passes = 1 if blocks == 1 else 2
        self._second = None if blocks == 1 else ck.launcher(ck.inf_norm_kernel(), blocks, grid)
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


class DeviceRun:
    """The device arrays and parts of one device :func:`nadam.minimize` run.

    Parameters
    ----------
    x : numpy.ndarray
        The validated (and projected) host iterate; copied to the device once.
    box : tuple of numpy.ndarray or None
        The flat host bounds ``(lo, hi)`` in x's dtype, or None; copied once.
    return_best : bool
        Whether to keep device copies of the best iterate and its gradient.
    average : bool
        Whether to keep a device copy of the averaged iterate.

    Attributes
    ----------
    x : numba device array
        The iterate, x0's shape and x's dtype, updated in place by the run.
    box : tuple
        The device bounds, or None.
    best : tuple
        ``(best_x, best_g)``, device arrays of x's shape, or ``(None, None)``.
    average : device array or None
        The averaged iterate (a copy of x to start with).

    Raises
    ------
    ImportError, RuntimeError
        From :func:`nadam.kernels.cuda.load`: numba-cuda is missing (``pip
        install nadam[cuda]``) or no CUDA device was found.
    """

    def __init__(self, x: np.ndarray, box: tuple | None, return_best: bool, average: bool):
        cuda = ck.load()
        n = x.size
        self.x = cuda.to_device(np.ascontiguousarray(x))
        self.box = None if box is None else tuple(cuda.to_device(b) for b in box)
        self.best = (
            (cuda.device_array(x.shape, x.dtype), cuda.device_array(x.shape, x.dtype))
            if return_best
            else (None, None)
        )
        self.average = cuda.to_device(np.ascontiguousarray(x)) if average else None
        self._norm = InfNorm(n, projected=box is not None)
        self._projector = ck.launcher(ck.project_kernel(), n) if box is not None else None
        # track reads the gradient norm from a one-element "gradient" (|gnorm| is
        # gnorm, NaN stays NaN) and writes a best "iterate" into one-element scratch:
        # the real best arrays are copied on the device when it reports a new best.
        self._gnorm = np.zeros(1)
        self._scratch = (np.zeros(1), np.zeros(1))

    def track(self, f: float, g: Any, x, lo, hi, best_x, best_g, tr: np.ndarray, nit: int):
        """:func:`nadam.loop.tracker.track` for device arrays (same arguments and
        result); ``x``, ``lo``, ``hi``, ``best_x``, ``best_g`` are flat device arrays
        or None."""
        gf = ck.as_numba(g)
        gf = gf if gf.ndim == 1 else gf.reshape(gf.size)
        buf = self._gnorm
        buf[0] = self._norm(x, gf, gf, gf) if lo is None else self._norm(x, gf, lo, hi)
        if best_x is None:
            return track(f, buf, buf, None, None, None, None, tr, nit)
        best_f = tr[BEST_F]
        code = track(f, buf, buf, None, None, *self._scratch, tr, nit)
        if tr[BEST_F] < best_f:  # the lowest loss yet: keep x and g, on the device
            best_x.copy_to_device(x)
            best_g.copy_to_device(gf)
        return code

    def project(self, x, lo, hi) -> None:
        """:func:`nadam.loop.tracker.project` for flat device arrays (one launch)."""
        self._projector(x, lo, hi)

    @staticmethod
    def host_callback(call: Callable) -> Callable:
        """Wrap a loop callback ``call(x, f, g, nit)`` to receive host copies of x and g
        (one device-to-host copy of each per iteration: a cost only callbacks pay)."""
        return lambda x, f, g, nit: call(to_host(x), f, to_host(g), nit)
