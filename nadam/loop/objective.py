"""The objective's side of the loop: gradients and the checks of what ``fun`` returns.

Every evaluation of a run goes through one ``evaluate(x, *args) -> (f, g)``:
``fun`` itself (``jac=True``), ``fun`` and ``jac`` (:func:`with_jac`), or
finite differences of ``fun`` (:class:`FiniteDifferences`).  :class:`OutputCheck`
checks what it returns, thoroughly at the first evaluation and cheaply at every
other, so that a mistake names ``fun``, the iteration and what was wrong instead
of failing somewhere inside the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._checks import type_name
from ..kernels import cuda as ck

__all__ = ["FD_METHODS", "FiniteDifferences", "OutputCheck", "readonly", "with_jac"]

#: The finite-difference schemes of ``jac``.
FD_METHODS = ("2-point", "3-point", "cs")


def readonly(a: Any) -> Any:
    """A read-only view of ``a``: what a compiled objective sees of the iterate (no
    per-step copy), unable to modify it.  (CUDA arrays have no read-only flag: as they
    are.)"""
    if not isinstance(a, np.ndarray):
        return a
    v = a.view()
    v.flags.writeable = False
    return v


def with_jac(fun: Callable, jac: Callable) -> Callable:
    """``evaluate(x, *args) -> (fun(x, *args), jac(x, *args))``."""

    def evaluate(x, *args):
        return fun(x, *args), jac(x, *args)

    return evaluate


def _values_of(fun: Callable) -> Callable:
    # fun, its array of one element as a 0-d array (differences of 0-d arrays are
    # NumPy scalars, which the gradient's elements take without a deprecation).
    return lambda *a: np.asarray(fun(*a)).reshape(())


class FiniteDifferences:
    r"""Finite-difference gradients, as ``evaluate(x, *args) -> (f, g)``.

    Steps follow scipy's ``approx_derivative``: :math:`h_i = r\,\mathrm{sign}(x_i)
    \max(1, |x_i|)` with the relative step :math:`r` = ``rel_step`` (default
    :math:`\sqrt{\epsilon}` for '2-point' and 'cs', :math:`\epsilon^{1/3}` for
    '3-point', :math:`\epsilon` of x's dtype), rounded so that :math:`x_i + h_i`
    is exact.

    * '2-point': :math:`g_i = (f(x + h_i e_i) - f(x)) / h_i` (backward if the
      forward point leaves the bounds);
    * '3-point': central :math:`(f(x + h_i e_i) - f(x - h_i e_i)) / 2h_i`, or the
      one-sided :math:`(-3f(x) + 4f(x + h_i e_i) - f(x + 2h_i e_i)) / 2h_i`
      towards the inside of the bounds;
    * 'cs': complex step :math:`\operatorname{Im} f(x + i h_i e_i) / h_i`, exact
      to rounding; ``fun`` must accept complex ``x``.

    ``fun`` is called ``1 + n`` times per gradient ('2-point', 'cs') or
    ``1 + 2n`` times ('3-point'): see :attr:`evaluations`.  The gradient buffer
    is reused: copy it to keep it.
    """

    def __init__(
        self,
        fun: Callable,
        x: np.ndarray,
        method: str = "2-point",
        rel_step: float | None = None,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if method not in FD_METHODS:
            raise ValueError(
                f"jac must be True, a callable, None or one of {FD_METHODS}, got {method!r}"
            )
        self.fun, self.method = fun, method
        eps = np.finfo(x.dtype).eps
        if rel_step is None:
            rel_step = eps ** (1 / 3) if method == "3-point" else eps**0.5
        self.rel_step = rel_step
        n = x.size
        self.lo, self.hi = (np.full(n, -np.inf), np.full(n, np.inf)) if bounds is None else bounds
        work_dtype = np.complex64 if x.dtype == np.float32 else np.complex128
        self._work = np.empty(n, work_dtype if method == "cs" else x.dtype)
        self._point = self._work.reshape(x.shape)
        self.g = np.empty_like(x)
        self.evaluations = 1 + (2 * n if method == "3-point" else n)

    def __call__(self, x: np.ndarray, *args: Any) -> tuple[Any, np.ndarray]:
        fun, w, lo, hi = self.fun, self._work, self.lo, self.hi
        # Each point a new array, as scipy's approx_derivative passes: fun may keep it.
        point = self._point.copy
        g = self.g.reshape(-1)
        xf = x.reshape(-1)
        f0 = fun(x, *args)
        if type(f0) not in _REAL:  # checked before it is differenced
            check_loss(f0, shape=x.shape)
            if isinstance(f0, np.ndarray) and f0.ndim:  # one element: difference its value
                f0 = f0.reshape(())
                fun = _values_of(fun)
        w[:] = xf
        for i in range(xf.size):
            xi = xf[i]
            h = self.rel_step * (1.0 if xi >= 0 else -1.0) * max(1.0, abs(float(xi)))
            if self.method == "cs":
                w[i] = xi + 1j * h
                g[i] = fun(point(), *args).imag / h
            elif self.method == "2-point":
                if not lo[i] <= xi + h <= hi[i] and lo[i] <= xi - h <= hi[i]:
                    h = -h
                w[i] = xi + h
                h = float(w[i] - xi)
                g[i] = (fun(point(), *args) - f0) / h
            else:
                if lo[i] <= xi - abs(h) and xi + abs(h) <= hi[i]:
                    w[i] = xi + h
                    h = float(w[i] - xi)
                    fp = fun(point(), *args)
                    w[i] = xi - h
                    g[i] = (fp - fun(point(), *args)) / (2 * h)
                else:
                    if not lo[i] <= xi + 2 * h <= hi[i]:
                        h = -h
                    w[i] = xi + h
                    h = float(w[i] - xi)
                    f1 = fun(point(), *args)
                    w[i] = xi + 2 * h
                    g[i] = (-3.0 * f0 + 4.0 * f1 - fun(point(), *args)) / (2 * h)
            w[i] = xi
        return f0, self.g


_REAL = (float, int, np.float64, np.float32, np.int64, np.int32)


def _loss_value(f: Any) -> float:
    """The loss ``f`` (checked by :func:`check_loss`) as a Python float."""
    # An array of one element (say fun's (x - 3)**2 on an x of shape (1,)), as scipy
    # takes it: float() of an array with dimensions is deprecated in NumPy.
    return float(f.reshape(())) if isinstance(f, np.ndarray) else float(f)


def check_loss(f: Any, where: str = "", shape: tuple = ()) -> None:
    """Raise unless ``f`` is a real scalar loss, or an array of one element as scipy
    accepts (``where`` says which evaluation, ``shape`` is x's)."""
    where = f" {where}" if where else ""
    if isinstance(f, (tuple, list)):
        # The usual slip: fun returns (f, g), and jac=True was left out.
        raise TypeError(
            f"fun returned a {type(f).__name__} of {len(f)}{where} where the loss alone was "
            "expected: without jac=True the gradient comes from finite differences of fun "
            "(or from jac), and fun must return f; pass jac=True if fun returns (f, g)"
        )
    if np.size(f) != 1:
        # A column x0 (scipy refuses one) often broadcasts the loss into a matrix.
        column = f"; x has x0's shape {shape}: pass x0.ravel() if fun takes a vector"
        raise ValueError(
            f"fun must return a scalar objective value, got shape {np.shape(f)}{where}"
            + (column if len(shape) > 1 else "")
        )
    if (
        not isinstance(f, (int, float, np.integer, np.floating))
        and not (isinstance(f, np.ndarray) and f.dtype.kind in "iuf")
        or isinstance(f, (bool, np.bool_))
    ):
        raise TypeError(
            f"fun must return a real scalar, got {f!r:.80} of type {type(f).__name__}{where}"
        )


class OutputCheck:
    """``check(out, nit) -> (f, g)``: what an evaluation returned, checked.

    ``f`` comes back as a Python float and ``g`` as an array of the iterate's shape
    and dtype (a NumPy scalar or a Python float stands for the gradient of a 0-d
    iterate).  The first call checks everything; later ones only what a step
    needs (a few type and shape comparisons), falling back to the thorough check,
    whose message names the source, the iteration and what was wrong.

    Parameters
    ----------
    shape, dtype
        The iterate's.
    source : str
        How messages name the evaluation: ``"fun (with jac=True)"``, ``"jac"``,
        ``"finite differences"``.
    device : bool
        The gradient is a CUDA device array (option ``device="cuda"``).
    """

    def __init__(self, shape: tuple, dtype: np.dtype, source: str, device: bool = False):
        self.shape, self.dtype, self.source, self.device = tuple(shape), dtype, source, device
        self._seen = False  # the first output is checked thoroughly

    def __call__(self, out: Any, nit: int) -> tuple[float, Any]:
        if self._seen and type(out) is tuple and len(out) == 2:
            f, g = out
            if type(f) in _REAL and (
                (type(g) is np.ndarray and g.shape == self.shape and g.dtype == self.dtype)
                or (
                    self.device
                    and ck.is_device_array(g)
                    and tuple(g.shape) == self.shape
                    and g.dtype == self.dtype
                )
            ):
                return float(f), g
        self._seen = True
        return self.thorough(out, nit)

    def _where(self, nit: int) -> str:
        return f"at iteration {nit}"

    def thorough(self, out: Any, nit: int) -> tuple[float, Any]:
        """Check everything about ``out`` (the first evaluation's, or a suspect one)."""
        src, where = self.source, self._where(nit)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            shown = f"{type(out).__name__} {out!r:.80}"
            if src.startswith("fun"):
                raise TypeError(f"fun must return (f, g) when jac=True; got {shown} {where}")
            raise TypeError(f"{src} returned {shown} {where}")
        f, g = out
        check_loss(f, where, self.shape)
        f = _loss_value(f)
        if self.device:
            self._device_gradient(g, nit, thorough=True)
            return f, g
        if self.shape == () and (
            isinstance(g, np.generic)
            and g.dtype == self.dtype
            or type(g) is float
            and self.dtype == np.float64
        ):
            g = np.asarray(g, self.dtype)  # the gradient of a 0-d iterate, as a scalar
        if not isinstance(g, np.ndarray):
            raise TypeError(
                f"the gradient from {src} must be a NumPy array of shape {self.shape} and "
                f"dtype {self.dtype}, got {type_name(g)} {where}"
            )
        if g.shape != self.shape:
            raise ValueError(
                f"the gradient from {src} has shape {g.shape} {where}, but x0 has shape "
                f"{self.shape}"
            )
        if g.dtype != self.dtype:
            raise TypeError(
                f"the gradient from {src} has dtype {g.dtype} {where}, but x has dtype "
                f"{self.dtype}: nadam never mixes precisions; return the gradient in x0's dtype"
            )
        return f, g

    def _device_gradient(self, g: Any, nit: int, thorough: bool = False) -> None:
        src, where = self.source, self._where(nit)
        if not ck.is_device_array(g):
            raise TypeError(
                f"the gradient from {src} must be a CUDA device array (option device='cuda') "
                f"of shape {self.shape} and dtype {self.dtype}, got {type_name(g)} {where}; "
                "nadam does not copy gradients to the device"
            )
        if not thorough:
            return
        ga = ck.as_numba(g)
        if tuple(ga.shape) != self.shape:
            raise ValueError(
                f"the gradient from {src} has shape {tuple(ga.shape)} {where}, but x0 has "
                f"shape {self.shape}"
            )
        if ga.dtype != self.dtype:
            raise TypeError(
                f"the gradient from {src} has dtype {ga.dtype} {where}, but x has dtype "
                f"{self.dtype}: nadam never mixes precisions; return the gradient in x0's dtype"
            )
        if not ga.is_c_contiguous():
            raise TypeError(f"the gradient from {src} must be C-contiguous on the device")
