r"""The weights of the averaged iterate (option ``average``), one definition for every loop.

After step :math:`k` the average moves towards the new iterate,
:math:`\bar x \leftarrow \bar x + w_s (x_{k+1} - \bar x)`, where :math:`s = k - o` counts
the steps since the average (re)started at step :math:`o` (0, unless a tuning-free run
started a new stage there: :mod:`nadam.loop.stages`):

* ``"polyak"``: :math:`w_s = 1 / (s + 2)`, the mean of every iterate (Polyak &
  Juditsky, 1992);
* ``"poly"``: :math:`w_s = (\gamma + 1) / (s + 1 + \gamma)` with :math:`\gamma = 3`,
  polynomial decay (Shamir & Zhang, 2013): in effect the last quarter of the iterates;
* ``"ema"``: :math:`w_s = 1 - \beta` (``average_decay``), an exponential moving average.

Each is ``weight(s, beta) -> float``, compiled for the compiled loop (inlined) and run
as plain Python (``.py_func``) by the Python loop: the same IEEE operations, the same bits.
"""

from __future__ import annotations

from numba import njit

__all__ = ["GAMMA", "WEIGHTS"]

#: :math:`\gamma` of the polynomial-decay average.
GAMMA = 3.0


@njit(inline="always")
def _none(steps, beta):
    return 0.0


@njit(inline="always")
def _polyak(steps, beta):
    return 1.0 / (steps + 2.0)


@njit(inline="always")
def _poly(steps, beta):
    return (GAMMA + 1.0) / (steps + 1.0 + GAMMA)


@njit(inline="always")
def _ema(steps, beta):
    return 1.0 - beta


#: Option ``average`` -> its weight function.
WEIGHTS = {None: _none, "polyak": _polyak, "poly": _poly, "ema": _ema}
