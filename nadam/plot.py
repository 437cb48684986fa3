"""Plots of a :func:`nadam.minimize` run (needs matplotlib: ``pip install matplotlib``,
or ``pip install ".[plot]"`` in nadam's source tree).

matplotlib is imported when a plot is made, never when nadam is imported: it is
an optional dependency and takes longer to import than nadam itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_history"]

INSTALL_HINT = 'pip install matplotlib (or pip install ".[plot]" in nadam\'s source tree)'


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"nadam.plot_history needs matplotlib: {INSTALL_HINT}") from None
    return plt


def _history(result: Any) -> Mapping[str, np.ndarray]:
    # Accept the result or its history dict: both come up in user code.
    history = result if isinstance(result, Mapping) and "loss" in result else None
    if history is None:
        history = getattr(result, "history", None)
    if history is None or "loss" not in history or "grad_norm" not in history:
        raise ValueError(
            "result has no history: run minimize with options={'history': True} "
            "(or pass a dict with 'loss' and 'grad_norm' arrays)"
        )
    return history


def _set_scale(ax: Any, values: np.ndarray) -> None:
    # A log scale shows convergence best, but a loss may be <= 0 (a
    # log-likelihood up to a constant): fall back to symlog there, which is
    # linear around 0 and logarithmic beyond.
    finite = values[np.isfinite(values)]
    ax.set_yscale("log" if finite.size and finite.min() > 0 else "symlog")


def plot_history(result: Any, ax: Any = None) -> tuple[Any, Any]:
    r"""Plot the loss and the gradient norm per iteration, on log scales.

    Parameters
    ----------
    result : scipy.optimize.OptimizeResult or dict
        The result of :func:`nadam.minimize` run with ``options={"history": True}``,
        or its ``history`` dict (arrays ``loss``, ``grad_norm`` and optionally
        ``smoothed``, one entry per iterate).
    ax : matplotlib Axes or sequence of two Axes, optional
        Where to draw.  None: a new figure with two panels sharing the
        iteration axis (loss above, gradient norm below).  Two Axes: the loss
        on the first, the gradient norm on the second.  One Axes: the loss on
        it and the gradient norm on a twin y-axis.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : tuple of two matplotlib Axes
        The loss axes and the gradient-norm axes.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install matplotlib``).
    ValueError
        If ``result`` holds no history.

    Notes
    -----
    With minibatches the loss is each step's *batch* loss, which is noisy: the
    smoothed loss (the moving average the ``patience`` rule watches) is drawn
    over it.  The gradient norm is :math:`\|g\|_\infty`, the quantity compared
    with ``gtol`` (with bounds, the projected gradient).  A loss that is not
    positive everywhere gets a symmetric-log scale instead of a log scale.

    Examples
    --------
    >>> import numpy as np, nadam
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> res = nadam.minimize(lambda x: (x @ x, 2 * x), np.ones(3), jac=True,
    ...                      options={"lr": 0.1, "maxiter": 200, "history": True})
    >>> fig, (ax_loss, ax_grad) = nadam.plot_history(res)
    >>> len(res.history["loss"]) == res.nit + 1
    True
    """
    history = _history(result)
    plt = _pyplot()
    loss = np.asarray(history["loss"], dtype=np.float64)
    grad_norm = np.asarray(history["grad_norm"], dtype=np.float64)
    smoothed = history.get("smoothed")
    it = np.arange(loss.size)

    twin = False
    if ax is None:
        fig, (ax_loss, ax_grad) = plt.subplots(
            2, 1, sharex=True, figsize=(6.4, 5.6), layout="constrained"
        )
    elif isinstance(ax, (Sequence, np.ndarray)):
        ax_loss, ax_grad = ax
        fig = ax_loss.figure
    else:
        ax_loss, ax_grad, twin = ax, ax.twinx(), True
        fig = ax.figure

    # Smoothed loss differs from the raw one only when the loss is noisy (or
    # smoothing > 0): draw the raw loss light and the smoothed one on top.
    noisy = smoothed is not None and not np.allclose(smoothed, loss, equal_nan=True)
    (line,) = ax_loss.plot(it, loss, lw=1, alpha=0.35 if noisy else 1.0, label="loss")
    if noisy:
        ax_loss.plot(it, smoothed, lw=1.5, color=line.get_color(), label="smoothed loss")
    _set_scale(ax_loss, loss)
    ax_loss.set_ylabel("loss")

    ax_grad.plot(it, grad_norm, lw=1, color="C1", label=r"$\|g\|_\infty$")
    _set_scale(ax_grad, grad_norm)
    ax_grad.set_ylabel("gradient norm")
    ax_grad.set_xlabel("iteration")
    if twin:
        ax_loss.set_xlabel("iteration")
        handles = ax_loss.get_legend_handles_labels()[0] + ax_grad.get_legend_handles_labels()[0]
        ax_loss.legend(handles=handles, loc="upper right")
    elif noisy:
        ax_loss.legend(loc="upper right")
    return fig, (ax_loss, ax_grad)
