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
from .rules import Rule

__all__ = ["DEFAULT_OPTIONS", "Settings", "parse"]

#: The loop's options and their defaults (the rule's hyperparameters come on top).
DEFAULT_OPTIONS: dict[str, Any] = {
    "maxiter": 1000,
    "disp": False,
    "gtol": 1e-5,
    "patience": None,
    "min_delta": 1e-4,
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
}

#: The values of ``options["average"]``.
AVERAGES = (None, "polyak", "ema")


@dataclass(frozen=True)
class Settings:
    """The validated settings of one run (see :func:`nadam.minimize` for each)."""

    maxiter: int
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

    @property
    def stopping(self) -> tuple:
        """The settings of the stopping rules, as the tracker takes them."""
        return self.smoothing, self.min_delta, self.gtol, self.patience, self.maxiter


def _plain(value: Any) -> Any:
    # NumPy's bools stand for Python's (an option read from an array, say).
    return bool(value) if isinstance(value, np.bool_) else value


def parse(
    options: Any, rule: Rule, tol: float | None, jac: Any, stacklevel: int = 3
) -> tuple[Settings, dict]:
    """Split ``options`` into the loop's validated :class:`Settings` and the rule's
    hyperparameters (validated by the rule when the optimizer is made).

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
    names = list(rule.arguments)
    hyper = {k: v for k, v in options.items() if k in names}
    unknown = [k for k in options if k not in hyper and k not in DEFAULT_OPTIONS]
    if unknown:
        warnings.warn(
            f"Unknown solver options: {', '.join(map(str, unknown))} (valid for method "
            f"{rule.name!r}: {', '.join(names + list(DEFAULT_OPTIONS))})",
            OptimizeWarning,
            stacklevel=stacklevel,
        )
    o = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if k in DEFAULT_OPTIONS}}
    step = o["finite_diff_rel_step"]
    local = o["comm"] is None
    path, every, resume = checkpoint.check_options(
        o["checkpoint"], o["checkpoint_every"], o["resume"], local
    )
    settings = Settings(
        maxiter=check_int("option maxiter", o["maxiter"], 0),
        disp=check_bool("option disp", o["disp"], allow_int=True),
        gtol=check_real("option gtol", o["gtol"], 0.0),
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
    )
    if settings.device == "cuda":
        check_device_options(settings.batch_size, settings.comm, settings.compiled, jac)
    return settings, hyper
