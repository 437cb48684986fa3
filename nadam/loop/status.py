"""Termination codes of :func:`nadam.minimize` and the one table of their messages."""

from __future__ import annotations

__all__ = ["MESSAGES", "Status", "message"]


class Status:
    """Termination codes of :func:`nadam.minimize` (``OptimizeResult.status``)."""

    GTOL = 0
    MAXITER = 1
    STALLED = 2
    NONFINITE = 3
    STREAM_END = 4
    INTERRUPTED = 5
    CONVERGED = 6
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
    Status.CALLBACK: (False, "`callback` raised `StopIteration`."),
}


def message(status: int, **fields) -> tuple[bool, str]:
    """``(success, message)`` of ``status``, its template filled from ``fields``."""
    success, template = MESSAGES[status]
    return success, template.format(**fields)
