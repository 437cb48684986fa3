"""The options of :func:`nadam.minimize`: their defaults, and their validation, once.

``options`` holds two kinds of keys: the rule's hyperparameters (``lr``,
``betas``, ...; checked by the rule) and the loop's *settings* below, which
:func:`parse` validates into one frozen :class:`Settings`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning

from . import checkpoint
from ._checks import check_bool, check_choice, check_int, check_real, check_seed, fail
from .loop.device import check_options as check_device_options
from .loop.stages import FULL_FTOL
from .rules import Rule, get_rule
from .threads import check_threads

__all__ = ["DEFAULT_OPTIONS", "Settings", "parse"]

#: The loop's options and their defaults (the rule's hyperparameters come on top).
DEFAULT_OPTIONS: dict[str, Any] = {
    "maxiter": None,
    "disp": False,
    "gtol": None,
    "patience": None,
    "min_delta": 1e-4,
    "ftol": None,
    "window": None,
    "smoothing": 0.9,
    "return_best": False,
    "average": None,
    "average_decay": 0.99,
    "batch_size": None,
    "seed": None,
    "finite_diff_rel_step": None,
    "history": False,
    "comm": None,
    "checkpoint": None,
    "checkpoint_every": None,
    "resume": False,
    "compiled": "auto",
    "device": "cpu",
    "threads": None,
}

#: The values of ``options["average"]``.
AVERAGES = (None, "polyak", "poly", "ema")

#: The iterations a run without ``maxiter`` may take at most.
BUDGET = 100_000

#: ``gtol`` when not given, as L-BFGS-B's; a run without ``maxiter`` stops when its
#: windows stop making progress instead (a gradient norm of 1e-5 can be far from the
#: minimum of a badly scaled problem), unless ``gtol`` is given.
GTOL = 1e-5

#: The rules whose step size a run finds itself when no ``lr`` is given: Adam's runs
#: take the steps of ``adam_distance`` (docs/tuning-free.md).
ADAPTIVE = {"adam": "adam_distance", "adam_distance": "adam_distance"}


@dataclass(frozen=True)
class Settings:
    """The validated settings of one run (see :func:`nadam.minimize` for each).

    ``maxiter`` is the budget in force (:data:`BUDGET` when not given); ``stages`` says
    how the run uses windows of iterations (:mod:`nadam.loop.stages`): None (``lr``
    and ``maxiter`` given: none), ``"stop"`` (no ``maxiter``: the run stops itself)
    or ``"adapt"`` (no ``lr`` for Adam: it also finds its step size).
    """

    maxiter: int
    stages: str | None
    ftol: float | None
    window: int | None
    disp: bool
    gtol: float
    patience: int | None
    min_delta: float
    smoothing: float
    return_best: bool
    average: str | None
    average_decay: float
    batch_size: int | None
    seed: int | None
    finite_diff_rel_step: float | None
    history: bool
    comm: Any
    checkpoint: str | None
    checkpoint_every: int | None
    resume: bool
    compiled: bool | str
    device: str
    threads: int | None

    @property
    def stopping(self) -> tuple:
        """The settings of the stopping rules, as the tracker takes them."""
        ftol = FULL_FTOL if self.ftol is None else self.ftol
        return self.smoothing, self.min_delta, self.gtol, self.patience, self.maxiter, ftol


def _plain(value: Any) -> Any:
    # NumPy's bools stand for Python's (an option read from an array, say).
    return bool(value) if isinstance(value, np.bool_) else value


def parse(
    options: Any, rule: Rule, tol: float | None, jac: Any, stacklevel: int = 3
) -> tuple[Settings, dict, Rule]:
    """Split ``options`` into the loop's validated :class:`Settings` and the rule's
    hyperparameters (validated by the rule when the optimizer is made), and say which
    rule runs: ``rule``, or for Adam without ``lr`` the rule of :data:`ADAPTIVE`.

    ``tol`` sets ``gtol`` unless ``options`` does, as in scipy.  Unknown keys raise
    an ``OptimizeWarning`` naming them, as in scipy.

    Raises
    ------
    TypeError, ValueError
        For a bad value, naming the option.
    """
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        fail("options", options, "a dict or None", TypeError)
    options = dict(options)
    if tol is not None:
        options.setdefault("gtol", check_real("tol", tol, 0.0))
    adapt = "lr" not in options and rule.name in ADAPTIVE
    method = repr(rule.name)
    if adapt:  # the run finds its step size (docs/tuning-free.md)
        method += " without lr" if ADAPTIVE[rule.name] != rule.name else ""
        rule = get_rule(ADAPTIVE[rule.name])
    names = list(rule.arguments)
    hyper = {k: v for k, v in options.items() if k in names}
    unknown = [k for k in options if k not in hyper and k not in DEFAULT_OPTIONS]
    if unknown:
        warnings.warn(
            f"Unknown solver options: {', '.join(map(str, unknown))} (valid for method "
            f"{method}: {', '.join(names + list(DEFAULT_OPTIONS))})",
            OptimizeWarning,
            stacklevel=stacklevel,
        )
    o = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if k in DEFAULT_OPTIONS}}
    maxiter = check_int("option maxiter", o["maxiter"], 0, allow_none=True)
    stages = "adapt" if adapt else "stop" if maxiter is None else None
    step = o["finite_diff_rel_step"]
    local = o["comm"] is None
    path, every, resume = checkpoint.check_options(
        o["checkpoint"], o["checkpoint_every"], o["resume"], local
    )
    settings = Settings(
        maxiter=BUDGET if maxiter is None else maxiter,
        stages=stages,
        ftol=check_real("option ftol", o["ftol"], 0.0, allow_none=True),
        window=check_int("option window", o["window"], 1, allow_none=True),
        disp=check_bool("option disp", o["disp"], allow_int=True),
        gtol=(
            (0.0 if stages else GTOL)
            if o["gtol"] is None
            else check_real("option gtol", o["gtol"], 0.0)
        ),
        patience=check_int("option patience", o["patience"], 1, allow_none=True),
        min_delta=check_real("option min_delta", o["min_delta"], 0.0),
        smoothing=check_real("option smoothing", o["smoothing"], 0.0, 1.0, high_open=True),
        return_best=check_bool("option return_best", o["return_best"], allow_int=True),
        average=check_choice("option average", o["average"], AVERAGES),
        average_decay=check_real(
            "option average_decay", o["average_decay"], 0.0, 1.0, high_open=True
        ),
        batch_size=check_int("option batch_size", o["batch_size"], 1, allow_none=True),
        seed=check_seed("option seed", o["seed"]),
        finite_diff_rel_step=(
            None
            if step is None
            else check_real("option finite_diff_rel_step", step, 0.0, low_open=True)
        ),
        history=check_bool("option history", o["history"], allow_int=True),
        comm=o["comm"],
        checkpoint=path,
        checkpoint_every=every,
        resume=resume,
        compiled=check_choice("option compiled", _plain(o["compiled"]), ("auto", True, False)),
        device=check_choice("option device", o["device"], ("cpu", "cuda")),
        threads=check_threads("option threads", o["threads"]),
    )
    if settings.device == "cuda":
        check_device_options(settings.batch_size, settings.comm, settings.compiled, jac)
    return settings, hyper, rule
