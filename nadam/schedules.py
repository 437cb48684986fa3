r"""Learning-rate schedules: ``t -> lr``, from Python and from compiled loops.

Every schedule is a :class:`Schedule`: an integer ``kind``, a float64 parameter
vector ``params`` and a float64 ``state`` vector.  One compiled function,
:func:`evaluate`, maps ``(kind, params, state, t)`` to the learning rate of step
``t`` (the first step is ``t = 1``), and :func:`observe` feeds a loss to the
stateful ones (reduce-on-plateau).  Calling a schedule from Python runs the
same compiled function, so Python and compiled loops get identical values.

Pass a schedule wherever a learning rate goes:

>>> import numpy as np, nadam
>>> sched = nadam.schedules.cosine(0.1, total_steps=100, warmup_steps=10)
>>> sched(1), sched(10), sched(100)
(0.01, 0.1, 0.0)
>>> opt = nadam.Adam(np.zeros(3), lr=sched)
>>> res = nadam.minimize(lambda x: (x @ x, 2 * x), np.ones(3), jac=True,
...                      options={"lr": sched, "maxiter": 100})

Below, :math:`\gamma` is the base learning rate and :math:`s = t - 1` the
number of steps already taken, so every schedule starts at its base rate
(:math:`\gamma` on the first step) except during warm-up.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from ._checks import check_int, check_real, fail

__all__ = [
    "Schedule",
    "constant",
    "cosine",
    "evaluate",
    "exponential",
    "inverse_sqrt",
    "observe",
    "reduce_on_plateau",
    "step",
]

# Schedule kinds (the ``kind`` argument of ``evaluate``/``observe``).
CONSTANT, STEP, EXPONENTIAL, COSINE, INVERSE_SQRT, PLATEAU = range(6)
_NAMES = ("constant", "step", "exponential", "cosine", "inverse_sqrt", "reduce_on_plateau")

# Reduce-on-plateau state slots: current lr, best loss seen, bad steps, cooldown left.
_LR, _BEST, _BAD, _COOLDOWN = range(4)
STATE_SIZE = 4


@njit(cache=True)
def evaluate(kind, params, state, t):
    """The learning rate of step ``t`` (>= 1) of the schedule ``(kind, params, state)``."""
    lr = params[0]
    s = t - 1
    if kind == STEP:
        return lr * params[2] ** (s // np.int64(params[1]))
    if kind == EXPONENTIAL:
        return lr * params[1] ** s
    if kind == COSINE:
        total, warmup, min_lr = params[1], params[2], params[3]
        if t < warmup:
            return lr * t / warmup
        start = max(warmup, 1.0)  # the step at which the rate peaks
        progress = min((t - start) / max(total - start, 1.0), 1.0)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    if kind == INVERSE_SQRT:
        warmup = params[1]
        if t < warmup:
            return lr * t / warmup
        return lr * math.sqrt(max(warmup, 1.0) / t)
    if kind == PLATEAU:
        return state[_LR]
    return lr


@njit(cache=True)
def observe(kind, params, state, loss):
    """Feed ``loss`` to a stateful schedule (mutates ``state``; a no-op for the others)."""
    if kind != PLATEAU:
        return
    factor, patience, threshold, cooldown, min_lr, eps = (
        params[1],
        params[2],
        params[3],
        params[4],
        params[5],
        params[6],
    )
    best = state[_BEST]
    # Relative improvement, for losses of either sign (torch's best*(1-threshold)
    # is the same for positive losses but too lenient for negative ones).
    if loss < best - threshold * abs(best) or (best == np.inf and loss < best):
        state[_BEST] = loss
        state[_BAD] = 0.0
    else:
        state[_BAD] += 1.0
    if state[_COOLDOWN] > 0.0:
        state[_COOLDOWN] -= 1.0
        state[_BAD] = 0.0
    if state[_BAD] > patience:
        old = state[_LR]
        new = max(old * factor, min_lr)
        if old - new > eps:
            state[_LR] = new
        state[_COOLDOWN] = cooldown
        state[_BAD] = 0.0


class Schedule:
    """A learning-rate schedule with a compiled representation.

    Create one with the functions of this module (:func:`constant`,
    :func:`step`, :func:`exponential`, :func:`cosine`, :func:`inverse_sqrt`,
    :func:`reduce_on_plateau`).

    Attributes
    ----------
    kind : int
        Which formula (see :func:`evaluate`).
    params : numpy.ndarray of float64
        Its parameters, base learning rate first.
    state : numpy.ndarray of float64
        Mutable state (reduce-on-plateau only; unused otherwise).
    """

    __slots__ = ("kind", "params", "state")

    def __init__(self, kind: int, params: np.ndarray, state: np.ndarray | None = None):
        self.kind = int(kind)
        self.params = np.ascontiguousarray(params, dtype=np.float64)
        if state is None:
            state = np.zeros(STATE_SIZE)
            state[_LR] = self.params[0]
            state[_BEST] = np.inf
        self.state = np.ascontiguousarray(state, dtype=np.float64)

    @property
    def name(self) -> str:
        """The schedule's name (``"cosine"``, ...)."""
        return _NAMES[self.kind]

    @property
    def stateful(self) -> bool:
        """Whether the schedule needs :meth:`observe` (reduce-on-plateau)."""
        return self.kind == PLATEAU

    def __call__(self, t: int) -> float:
        """The learning rate of step ``t`` (the first step is ``t = 1``)."""
        return evaluate(self.kind, self.params, self.state, t)

    def observe(self, loss: float) -> None:
        """Feed the latest (smoothed) loss; :func:`nadam.minimize` does it every step."""
        observe(self.kind, self.params, self.state, float(loss))

    def copy(self) -> Schedule:
        """An independent copy (same parameters and current state)."""
        return Schedule(self.kind, self.params.copy(), self.state.copy())

    def state_dict(self) -> dict[str, Any]:
        """``kind``, ``params`` and ``state`` (copies), enough to continue exactly."""
        return {"kind": self.kind, "params": self.params.copy(), "state": self.state.copy()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict` of the same schedule."""
        if state_dict["kind"] != self.kind or not np.array_equal(state_dict["params"], self.params):
            raise ValueError(
                f"schedule state is for kind {state_dict['kind']} with params "
                f"{state_dict['params']}; this is {self!r}"
            )
        self.state[:] = state_dict["state"]

    def __reduce__(self):
        return (Schedule, (self.kind, self.params, self.state))

    def __repr__(self) -> str:
        values = ", ".join(f"{v:g}" for v in self.params)
        return f"nadam.schedules.{self.name}({values})"


# ---------------------------------------------------------------------------
# Constructors (validate once; the compiled functions trust their input)
# ---------------------------------------------------------------------------


def _real(
    name: str, value: Any, low: float = 0.0, high: float = math.inf, low_open: bool = False
) -> float:
    return check_real(name, value, low, high, low_open=low_open)


def _int(name: str, value: Any, low: int) -> int:
    return check_int(name, value, low)


def constant(lr: float) -> Schedule:
    r"""A constant learning rate, :math:`\gamma_t = \gamma`.

    Examples
    --------
    >>> constant(0.01)(1000)
    0.01
    """
    return Schedule(CONSTANT, [_real("lr", lr)])


def step(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    .. math:: \gamma_t = \gamma \cdot \text{gamma}^{\lfloor s / \text{step\_size} \rfloor}

    Examples
    --------
    >>> sched = step(1.0, step_size=10, gamma=0.5)
    >>> sched(10), sched(11), sched(21)
    (1.0, 0.5, 0.25)
    """
    return Schedule(
        STEP, [_real("lr", lr), _int("step_size", step_size, 1), _real("gamma", gamma, 0, 1)]
    )


def exponential(lr: float, gamma: float) -> Schedule:
    r"""Decay by ``gamma`` every step (torch's ``ExponentialLR``).

    .. math:: \gamma_t = \gamma \cdot \text{gamma}^{s}

    Examples
    --------
    >>> exponential(1.0, gamma=0.5)(3)
    0.25
    """
    return Schedule(EXPONENTIAL, [_real("lr", lr), _real("gamma", gamma, 0, 1)])


def cosine(lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> Schedule:
    r"""Linear warm-up, then cosine annealing to ``min_lr`` at ``total_steps``.

    .. math::

        \gamma_t = \begin{cases}
            \gamma\, t / w & t < w \\
            \gamma_{\min} + \tfrac12 (\gamma - \gamma_{\min})
                \bigl(1 + \cos(\pi \min(1, \tfrac{t - w'}{\max(T - w', 1)}))\bigr) & t \ge w
        \end{cases}

    with :math:`w` = ``warmup_steps``, :math:`w' = \max(w, 1)` and :math:`T` =
    ``total_steps``: the rate rises linearly to :math:`\gamma` at step :math:`w'`
    (from :math:`\gamma/w` on the first step, never 0), then follows a half
    cosine down to :math:`\gamma_{\min}` at step :math:`T`, and stays there.
    Without warm-up, the first step uses :math:`\gamma`.  (If :math:`T \le w'`
    the peak comes first and :math:`\gamma_{\min}` is reached on the next step.)

    Parameters
    ----------
    lr : float
        Peak learning rate :math:`\gamma`.
    total_steps : int
        Step :math:`T` at which the rate reaches ``min_lr`` (>= 1).
    warmup_steps : int, default 0
        :math:`w`, in ``[0, total_steps]``.
    min_lr : float, default 0
        Final rate, in ``[0, lr]``.

    Examples
    --------
    >>> sched = cosine(1.0, total_steps=11, warmup_steps=1)
    >>> sched(1), sched(6), sched(11)
    (1.0, 0.5, 0.0)
    """
    lr = _real("lr", lr)
    total = _int("total_steps", total_steps, 1)
    warmup = _int("warmup_steps", warmup_steps, 0)
    if warmup > total:
        fail("warmup_steps", warmup_steps, f"an int >= 0 and <= total_steps ({total})")
    return Schedule(COSINE, [lr, total, warmup, _real("min_lr", min_lr, 0.0, lr)])


def inverse_sqrt(lr: float, warmup_steps: int = 0) -> Schedule:
    r"""Linear warm-up, then decay as :math:`1/\sqrt{t}` (the Transformer schedule).

    .. math::

        \gamma_t = \begin{cases}
            \gamma\, t / w & t < w \\
            \gamma \sqrt{\max(w, 1) / t} & t \ge w
        \end{cases}

    so the rate peaks at :math:`\gamma` on step :math:`\max(w, 1)`.

    Examples
    --------
    >>> sched = inverse_sqrt(1.0, warmup_steps=4)
    >>> sched(2), sched(4), sched(16)
    (0.5, 1.0, 0.5)
    """
    return Schedule(INVERSE_SQRT, [_real("lr", lr), _int("warmup_steps", warmup_steps, 0)])


def reduce_on_plateau(
    lr: float,
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> Schedule:
    r"""Multiply the rate by ``factor`` when the observed loss stops improving.

    torch's ``ReduceLROnPlateau`` (mode ``"min"``, relative threshold), driven by
    :meth:`Schedule.observe`.  A loss :math:`L` improves on the best
    :math:`L^*` if :math:`L < L^* - \text{threshold}\cdot|L^*|`.  After more
    than ``patience`` observations without improvement the rate becomes
    :math:`\max(\text{factor}\cdot\gamma_t, \gamma_{\min})` (unless that changes
    it by less than ``eps``) and ``cooldown`` observations are ignored.

    :func:`nadam.minimize` observes the *smoothed* loss (see its ``smoothing``
    option) once per iteration, so ``patience`` and ``cooldown`` count
    iterations there, not epochs: choose them accordingly (hundreds, not 10).
    A schedule passed to :func:`nadam.minimize` is copied; yours is not
    modified.  Used with an optimizer class directly, call
    ``sched.observe(loss)`` yourself.

    Parameters
    ----------
    lr : float
        Initial rate.
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
    threshold : float, default 1e-4
    cooldown : int, default 0
    min_lr : float, default 0
    eps : float, default 1e-8

    Examples
    --------
    >>> sched = reduce_on_plateau(1.0, factor=0.5, patience=1)
    >>> for loss in (3.0, 2.0, 2.0, 2.0):
    ...     sched.observe(loss)
    >>> sched(5)
    0.5
    """
    lr = _real("lr", lr)
    factor = _real("factor", factor, 0.0, 1.0, low_open=True)
    if factor == 1.0:
        fail("factor", factor, "a finite real number > 0 and < 1")
    return Schedule(
        PLATEAU,
        [
            lr,
            factor,
            _int("patience", patience, 0),
            _real("threshold", threshold),
            _int("cooldown", cooldown, 0),
            _real("min_lr", min_lr, 0.0, lr),
            _real("eps", eps),
        ],
    )
