"""Termination codes of :func:`nadam.minimize` and the one table of their messages."""

from __future__ import annotations

__all__ = ["MESSAGES", "Status", "ZERO_GRADIENT", "message"]


class Status:
    """Termination codes of :func:`nadam.minimize` (``OptimizeResult.status``)."""

    GTOL = 0
    MAXITER = 1
    STALLED = 2
    NONFINITE = 3
    STREAM_END = 4
    INTERRUPTED = 5
    CONVERGED = 6
    NO_DESCENT = 7
    CALLBACK = 99


#: status -> (success, message template), the one table every message comes from.
MESSAGES: dict[int, tuple[bool, str]] = {
    Status.GTOL: (True, "Optimization terminated successfully: gradient norm <= gtol ({gtol:g})."),
    Status.MAXITER: (False, "Maximum number of iterations has been exceeded."),
    Status.STALLED: (
        True,
        "Optimization terminated: the smoothed loss did not improve by min_delta "
        "({min_delta:g}, relative) for patience ({patience}) iterations.",
    ),
    Status.NONFINITE: (False, "NaN result encountered: {what}."),
    Status.STREAM_END: (True, "Optimization terminated: the stream of args is exhausted."),
    Status.INTERRUPTED: (False, "Optimization interrupted by {what} after {nit} iterations."),
    Status.CONVERGED: (True, "Optimization terminated successfully: {what}."),
    Status.NO_DESCENT: (
        False,
        "The loss never fell below its value at x0 in {nit} iterations, though its gradient "
        "there says it should: is the gradient that of the loss (its sign)? "
        "scipy.optimize.check_grad compares it with finite differences. (Or x0 is a minimum "
        "where the loss has a kink.)",
    ),
    Status.CALLBACK: (False, "`callback` raised `StopIteration`."),
}


#: Status.GTOL's message with gtol = 0, where "<= gtol (0)" read as a rule the user set:
#: the gradient came out exactly 0 (a finite difference on a plateau, say).
ZERO_GRADIENT = (
    "Optimization terminated successfully: the gradient is exactly 0 (with bounds, its projection)."
)


def message(status: int, **fields) -> tuple[bool, str]:
    """``(success, message)`` of ``status``, its template filled from ``fields``."""
    success, template = MESSAGES[status]
    if status == Status.GTOL and fields.get("gtol") == 0:
        template = ZERO_GRADIENT
    return success, template.format(**fields)
