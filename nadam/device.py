"""The device side of an optimizer bound to a CUDA array: state, steps, checks.

:class:`DeviceArrays` wraps the parameters (any ``__cuda_array_interface__``
object) as a flat numba device view and gives :class:`nadam.optimizers.Optimizer`
what it needs on the device, with the same signatures as the CPU steppers of
:mod:`nadam.kernels.cpu`: state allocation, the steppers (host coefficients,
then one launch; two launches and a read-back of the sums for a two-pass rule),
the finiteness check, gradient checks and copies to and from the host.  Nothing
here copies between host and device during a step, except the scalars a step
must bring back (a finiteness verdict, a two-pass rule's sums).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import type_name
from .kernels import cuda as ck
from .rules import Rule

__all__ = ["DeviceArrays", "FiniteCheck", "all_finite", "to_host"]


def to_host(a: Any) -> np.ndarray:
    """A host NumPy copy of ``a``: a device array (any ``__cuda_array_interface__``
    object), or a NumPy array (copied too, so the caller always owns the result)."""
    if isinstance(a, np.ndarray):
        return a.copy()
    return ck.as_numba(a).copy_to_host()


class FiniteCheck:
    """``check(x) -> bool``: whether the flat device array ``x`` of ``n`` elements is
    all finite.

    One read of ``x`` on the device and a 4-byte read back (which waits for the
    kernel: the one synchronisation per checked step).  The flag is cleared
    only after it was set, so a clean step costs no extra transfer.
    """

    def __init__(self, n: int):
        cuda = ck.load()
        self._launch = ck.launcher(ck.nonfinite_kernel(), n)
        self._flag = cuda.to_device(np.zeros(1, np.int32))
        self._host = cuda.pinned_array(1, np.int32)

    def __call__(self, x) -> bool:
        self._launch(x, self._flag)
        self._flag.copy_to_host(self._host)
        if self._host[0] == 0:
            return True
        self._flag.copy_to_device(np.zeros(1, np.int32))
        return False


def all_finite(x: Any) -> bool:
    """True if every element of the C-contiguous device array ``x`` is finite
    (one pass on the device, then a 4-byte read back)."""
    x = ck.as_numba(x)
    x = x if x.ndim == 1 else x.reshape(x.size)
    return FiniteCheck(x.size)(x)


class DeviceArrays:
    """The device side of an :class:`~nadam.optimizers.Optimizer` bound to a CUDA array.

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
        cuda = ck.load()
        self._cuda = cuda
        arr = ck.as_numba(params)
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
        self.all_finite = FiniteCheck(self.size)

    def _prepare(self, rule: Rule, flags: tuple):
        # The host coefficients, and for a two-pass rule the first pass, the
        # read-back of its per-block sums (added in block order) and `finish`.
        coefficients = rule.coefficients
        if rule.accumulate is None:

            def prepare(p, g, s, hp, t, aux, h):
                coefficients(hp, t, aux, h)

            return prepare
        blocks, _ = ck.launch_config(self.size)
        first = ck.launcher(ck.first_pass(rule, flags), self.size, (blocks, ck.THREADS))
        partial = self._cuda.device_array((blocks, 2), np.float64)
        finish = rule.finish

        def prepare(p, g, s, hp, t, aux, h):
            coefficients(hp, t, aux, h)
            first(p, g, s, tuple(h), partial)
            sums = partial.copy_to_host().sum(axis=0)  # in block order
            finish(hp, t, aux, sums, h)

        return prepare

    def stepper(self, rule: Rule, flags: tuple):
        """``step(p, g, s, hp, t, aux, h) -> None``: host coefficients, then the kernel.

        Same signature as :func:`nadam.kernels.cpu.stepper`; ``h`` is the host
        coefficient buffer, passed to the kernel by value as a tuple.
        """
        prepare = self._prepare(rule, flags)
        launch = ck.launcher(ck.kernel(rule, flags), self.size)

        def step(p, g, s, hp, t, aux, h):
            prepare(p, g, s, hp, t, aux, h)
            launch(p, g, s, tuple(h))

        return step

    def checked_stepper(self, rule: Rule, flags: tuple):
        """``step(p, g, s, hp, t, aux, h) -> bool``: as :meth:`stepper` if ``g`` is
        all finite (returns True); otherwise touches nothing and returns False.
        Same signature as :func:`nadam.kernels.cpu.checked_stepper`."""
        step = self.stepper(rule, flags)
        finite = self.all_finite

        def checked_step(p, g, s, hp, t, aux, h):
            if not finite(g):
                return False
            step(p, g, s, hp, t, aux, h)
            return True

        return checked_step

    def guarded_stepper(self, rule: Rule, flags: tuple):
        """``step(p, g, s, hp, t, aux, h, avg, w) -> int``: the device side of
        :func:`nadam.kernels.cpu.guarded_stepper`.  The count it returns is 0 or 1
        (whether any element kept its old value), read back after the launch."""
        cuda = self._cuda
        prepare = self._prepare(rule, flags)
        plain, averaging = (
            ck.launcher(ck.kernel(rule, flags, guarded=True, average=a), self.size)
            for a in (False, True)
        )
        flag = cuda.to_device(np.zeros(1, np.int32))
        host = cuda.pinned_array(1, np.int32)
        dummy = cuda.device_array(1, self.dtype)
        dtype = self.dtype.type

        def step(p, g, s, hp, t, aux, h, avg, w):
            prepare(p, g, s, hp, t, aux, h)
            if avg is None:
                plain(p, g, s, tuple(h), dummy, dtype(w), flag)
            else:
                averaging(p, g, s, tuple(h), avg, dtype(w), flag)
            flag.copy_to_host(host)
            if host[0] == 0:
                return 0
            flag.copy_to_device(np.zeros(1, np.int32))
            return 1

        return step

    def switcher(self, rule: Rule, flags: tuple):
        """``switch(p, s, h) -> None``: :func:`nadam.kernels.cpu.switch_kernel` on the
        device (``h`` the host coefficients, passed by value)."""
        launch = ck.launcher(ck.switch_kernel(rule, flags), self.size)
        return lambda p, s, h: launch(p, s, tuple(h))

    def grad(self, grad: Any):
        """The flat device view of ``grad``, after checking it matches the parameters."""
        if not ck.is_device_array(grad):
            raise TypeError(
                f"grad must be a CUDA device array like the parameters, got {type_name(grad)}; "
                "nadam never copies between host and device inside step()"
            )
        g = ck.as_numba(grad)
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

    def fill(self, dev, value: float) -> None:
        """Set every element of the device array ``dev`` to ``value``."""
        self.copy_in(dev, np.full(dev.shape, value, dtype=dev.dtype))
