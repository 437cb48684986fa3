r"""The update rules, written once, and the registry every other layer derives from.

Every algorithm is one :class:`Rule`:

``update(p, g, s, h, i, flags) -> float``
    A plain Python function of one element: it updates element ``i`` of the
    state ``s`` (a ``(k, n)`` array, one row per state slot) in place from the
    gradient ``g``, the parameters ``p`` and this step's coefficients ``h``, and
    returns the new value of ``p[i]`` (the kernel writes it).  ``flags`` is a
    tuple of compile-time switches (``amsgrad``, ``centered``, ...): the kernel
    factories of :mod:`nadam.kernels` bake it in as a constant, so each variant
    compiles to its own branch-free loop.  The same function is compiled for the
    serial CPU loop, the ``prange`` loop and the CUDA grid-stride loop.  It holds
    no numeric literals: every constant comes from ``h``, which has the
    parameters' dtype, so float32 parameters get float32 arithmetic.

``coefficients(hp, t, aux, h)``
    Host side, once per step: turns the float64 hyperparameter vector ``hp`` and
    the step count ``t`` (1 on the first step) into ``h``.  Bias corrections and
    every other scalar that depends only on ``t`` live here, never in the element
    loop; powers of ``t`` are taken as ``beta ** float(t)``, C's ``pow``, as Python
    and torch take them (numba's power of an int exponent differs in the last bit,
    and compiles slower).  ``aux`` is float64 host state carried between steps (NAdam's momentum
    product, Prodigy's step size).  ``@njit``-compiled, so that compiled loops
    (and users' own ``@njit`` code) can call it.

A rule whose step needs a sum over all elements before it can update any of
them (Prodigy's step size is a ratio of two such sums) has two passes:
``accumulate(p, g, s, h, i, flags) -> (a, b)`` updates the state of element
``i`` and returns its contributions to two sums; the kernels add them up (in a
fixed order, so that every thread count gives the same bits), ``finish(hp, t,
aux, sums, h)`` turns the sums into the coefficients of the second pass, and
``update`` then writes the parameters.

All rules share the first three coefficients, which implement the options
common to every algorithm:

* ``h[0] = -1`` if ``maximize`` else ``1`` (the gradient's sign),
* ``h[1] = λ`` for L2 weight decay (``g ← g + λ·p``), 0 when decoupled,
* ``h[2] = 1 − lr·λ`` for decoupled weight decay (``p ← (1 − lr·λ)·p``), else 1.

With ``λ = 0`` these are exact identities, so the options cost no branches.

The registry :data:`RULES` maps each method name to its rule.  The optimizer
classes, :mod:`nadam.methods`, the kernels' namespace, the CUDA kernels, the
tests' tables, the benchmarks and the docs' tables are all made from it;
:func:`register` adds a rule at run time (``docs/architecture.md`` says how to
write one).
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit

from ._checks import check_bool, check_int, check_real, fail
from ._specialise import rebind, source_digest

__all__ = [
    "Hyper",
    "RULES",
    "Rule",
    "common_coefficients",
    "get_rule",
    "register",
    "shared_hyperparameters",
    "unregister",
]


# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyper:
    """One public hyperparameter: its name, default, allowed values and meaning.

    ``kind`` is ``"real"`` (a number in ``[low, high]``, either end open with
    ``low_open``, ``high_open``; infinity only with ``allow_inf``; None too with
    ``allow_none``), ``"int"``, ``"betas"`` (a pair, each in ``[0, 1)``) or
    ``"bool"``.  ``lr`` may also be a schedule: any callable ``t -> float``.  A
    ``fixed`` hyperparameter is not an argument of the rule: it always has its
    default (``decoupled_weight_decay`` of the rules for which torch has no such
    option).  ``doc`` is its line in the class docstring.
    """

    name: str
    default: Any
    kind: str = "real"
    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    allow_inf: bool = False
    allow_none: bool = False
    fixed: bool = False
    doc: str = ""

    @property
    def width(self) -> int:
        """Number of float64 slots the value occupies in the packed vector."""
        return 2 if self.kind == "betas" else 1

    @property
    def annotation(self) -> str:
        """The type hint of the argument in a class signature."""
        if self.name == "lr":
            return "float | Callable[[int], float]"
        hint = {"betas": "tuple[float, float]", "bool": "bool", "int": "int"}.get(
            self.kind, "float"
        )
        return hint + (" | None" if self.allow_none else "")

    def check(self, value: Any) -> Any:
        """Return the validated value (floats as ``float``), or raise naming it."""
        if self.kind == "bool":
            return check_bool(self.name, value)
        if self.kind == "int":
            return check_int(self.name, value, int(self.low))
        if self.kind == "betas":
            try:
                b1, b2 = value
            except (TypeError, ValueError):
                fail("betas", value, "a pair (beta1, beta2)", TypeError)
            return (
                check_real("betas[0]", b1, 0.0, 1.0, high_open=True),
                check_real("betas[1]", b2, 0.0, 1.0, high_open=True),
            )
        if self.name == "lr" and callable(value):
            return _schedule(value)
        if value is None and self.allow_none:
            return None
        if self.allow_inf and value == math.inf and not isinstance(value, (bool, np.bool_)):
            return math.inf
        return check_real(
            self.name,
            value,
            self.low,
            self.high,
            low_open=self.low_open,
            high_open=self.high_open,
            allow_none=self.allow_none,
        )


# The hyperparameters every rule has, in this order, at the start of ``hp``.
LR, WEIGHT_DECAY, MAXIMIZE, DECOUPLED = range(4)

_WD_DOC = "L2 penalty :math:`\\lambda`: :math:`g \\leftarrow g + \\lambda p`."
_MAXIMIZE = Hyper("maximize", False, "bool", doc="Maximise the objective instead.")


def shared_hyperparameters(
    weight_decay: float = 0.0, decoupled: bool = False, fixed: bool = True
) -> tuple[Hyper, Hyper, Hyper]:
    """The hyperparameters every rule starts with after ``lr``: ``weight_decay``,
    ``maximize`` and ``decoupled_weight_decay`` (``fixed``: not an argument, always
    ``decoupled``), which :func:`common_coefficients` turns into ``h[0:3]``."""
    doc = _WD_DOC
    if decoupled and fixed:
        doc = (
            "Decoupled weight decay :math:`\\lambda`: "
            ":math:`p \\leftarrow (1 - \\gamma\\lambda) p`."
        )
    return (
        Hyper("weight_decay", weight_decay, doc=doc),
        _MAXIMIZE,
        Hyper(
            "decoupled_weight_decay",
            decoupled,
            "bool",
            fixed=fixed,
            doc="Apply weight decay as :math:`p \\leftarrow (1 - \\gamma\\lambda) p` before "
            "the update (AdamW) instead of the L2 term.",
        ),
    )


# The options of the rules' host helpers (_common, _prodigy_dlr, ...), which only
# compiled code calls: the steps' error model, and no CPython or C wrapper (numba makes
# both for every function it compiles, and the first step of a rule waits for them: see
# nadam.kernels.cpu._INTERNAL).  Called, not inlined at numba's IR level, which
# repeats numba's front end at each call site (cpu._called).
_HELPER = dict(cache=True, error_model="numpy", no_cpython_wrapper=True, no_cfunc_wrapper=True)


def _fill_common(hp, h):
    """Fill ``h[0:3]`` from the shared hyperparameters (see the module docstring)."""
    h[0] = -1.0 if hp[MAXIMIZE] != 0.0 else 1.0
    if hp[DECOUPLED] != 0.0:
        h[1] = 0.0
        h[2] = 1.0 - hp[LR] * hp[WEIGHT_DECAY]
    else:
        h[1] = hp[WEIGHT_DECAY]
        h[2] = 1.0


common_coefficients = njit(cache=True)(rebind(_fill_common, "common_coefficients"))
# The copy the rules' coefficients call (named apart: numba's cache does not tell
# functions compiled with and without wrappers apart).
_common = njit(**_HELPER)(rebind(_fill_common, "_common"))


# ---------------------------------------------------------------------------
# The rules.  Each update is a plain function; see the module docstring.
# ---------------------------------------------------------------------------

# Compile-time switches, read by every update (numba freezes globals into the
# compiled code).  As written here they are False: the update applies the shared
# options through h[0:3] on every element, which is what CUDA and any other
# compiler of the plain functions get.  nadam.kernels.cpu also compiles copies
# with them True and runs those when this step's h makes the options identities:
# RAW_GRAD when h[0] = 1 and h[1] = 0 (the direction is g as is), RAW_PARAM when
# also h[2] = 1 (p as is).  Same numbers (as torch, which skips the operations
# too), a multiply-add or two fewer per element: a memory-bound loop keeps more
# cache misses in flight the shorter its body is (docs/benchmarks.md).
RAW_GRAD = False
RAW_PARAM = False


def sgd_update(p, g, s, h, i, flags):
    momentum, nesterov = flags
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    if momentum:
        # h[4], h[5] are (0, 1) on the first step so that b = g exactly, as torch.
        b = h[4] * s[0, i] + h[5] * d
        s[0, i] = b
        d = d + h[6] * b if nesterov else b
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[3] * d


@njit(cache=True)
def sgd_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, momentum, dampening = hp[0], hp[4], hp[5]
    h[3] = lr
    h[4] = momentum if t > 1 else 0.0
    h[5] = 1.0 - dampening if t > 1 else 1.0
    h[6] = momentum


def rmsprop_update(p, g, s, h, i, flags):
    centered, momentum = flags
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    v = h[3] * s[0, i] + h[4] * (d * d)
    s[0, i] = v
    if centered:
        gbar = h[3] * s[1, i] + h[4] * d
        s[1, i] = gbar
        v = v - gbar * gbar
    a = math.sqrt(v) + h[5]
    if momentum:
        k = 2 if centered else 1
        b = h[6] * s[k, i] + d / a
        s[k, i] = b
        return (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * b
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (d / a)


@njit(cache=True)
def rmsprop_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, alpha, eps, momentum = hp[0], hp[4], hp[5], hp[6]
    h[3] = alpha
    h[4] = 1.0 - alpha
    h[5] = eps
    h[6] = momentum
    h[7] = lr


def adagrad_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    acc = s[0, i] + d * d
    s[0, i] = acc
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[3] * (d / (math.sqrt(acc) + h[4]))


@njit(cache=True)
def adagrad_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, lr_decay, eps = hp[0], hp[4], hp[6]
    h[3] = lr / (1.0 + (t - 1) * lr_decay)
    h[4] = eps


def adadelta_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    v = h[3] * s[0, i] + h[4] * (d * d)
    s[0, i] = v
    u = s[1, i]
    # One root of the quotient (torch: a quotient of two roots): same value up to
    # rounding, one square root fewer for the divide/sqrt unit.  (In float32 the
    # quotient leaves the normal range only when v + eps > 1e32 * (u + eps).)
    delta = math.sqrt((u + h[5]) / (v + h[5])) * d
    s[1, i] = h[3] * u + h[4] * (delta * delta)
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[6] * delta


@njit(cache=True)
def adadelta_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, rho, eps = hp[0], hp[4], hp[5]
    h[3] = rho
    h[4] = 1.0 - rho
    h[5] = eps
    h[6] = lr


def adam_update(p, g, s, h, i, flags):
    (amsgrad,) = flags
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    if amsgrad:
        v = max(s[2, i], v)
        s[2, i] = v
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (m / (math.sqrt(v) * h[8] + h[9]))


@njit(cache=True)
def adam_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, beta1, beta2, eps = hp[0], hp[4], hp[5], hp[6]
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = 1.0 - beta2
    h[7] = lr / (1.0 - beta1 ** float(t))
    h[8] = 1.0 / math.sqrt(1.0 - beta2 ** float(t))
    h[9] = eps


def adamax_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    u = max(h[5] * s[1, i], abs(d) + h[6])
    s[0, i] = m
    s[1, i] = u
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (m / u)


@njit(cache=True)
def adamax_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, beta1, beta2, eps = hp[0], hp[4], hp[5], hp[6]
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = eps
    h[7] = lr / (1.0 - beta1 ** float(t))


def nadam_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    den = math.sqrt(v * h[7]) + h[8]
    # Both terms share the denominator (torch divides twice): one division.
    return (p[i] if RAW_PARAM else h[2] * p[i]) - (h[9] * d + h[10] * m) / den


@njit(cache=True)
def nadam_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, beta1, beta2, eps, psi = hp[0], hp[4], hp[5], hp[6], hp[7]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
    aux[0] *= mu  # the product of all mu so far
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = 1.0 - beta2
    h[7] = 1.0 / (1.0 - beta2 ** float(t))
    h[8] = eps
    h[9] = lr * (1.0 - mu) / (1.0 - aux[0])
    h[10] = lr * mu_next / (1.0 - aux[0] * mu_next)


def radam_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    # Unrectified steps (h[8] = 0, h[9] = 1) divide by h[9], as torch, which does not
    # read v then: not by 0 * sqrt(v) + 1, which is NaN where d * d overflowed.  (A
    # select in h's dtype, not a literal 1.0: the float32 loop stays float32 and
    # vectorised.)
    den = h[8] * math.sqrt(v) + h[9] if h[8] != 0.0 else h[9]
    return (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (m / den)


@njit(cache=True)
def radam_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, beta1, beta2, eps = hp[0], hp[4], hp[5], hp[6]
    bc1 = 1.0 - beta1 ** float(t)
    bc2 = 1.0 - beta2 ** float(t)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2 ** float(t) / bc2
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = 1.0 - beta2
    if rho_t > 5.0:
        rect = math.sqrt(
            (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
        )
        h[7] = lr / bc1 * rect * math.sqrt(bc2)
        h[8] = 1.0
        h[9] = eps
    else:
        h[7] = lr / bc1
        h[8] = 0.0
        h[9] = 1.0


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------


def _no_flags(values: dict) -> tuple:
    return ()


def _no_check(values: dict) -> None:
    return None


def _zero(values: dict) -> float:
    return 0.0


@dataclass(frozen=True, eq=False)
class Rule:
    """Everything nadam knows about one algorithm.

    Attributes
    ----------
    name : str
        Lower-case method name (``"adam"``), as in ``minimize(method=...)``.
    class_name : str
        Name of its optimizer class (``"Adam"``).
    summary : str
        One line: what the rule is, with its reference.
    math : str
        The update as LaTeX lines (``&=`` aligned, ``\\\\`` between lines): the
        class docstring and the docs page both show it.
    update : callable
        ``update(p, g, s, h, i, flags) -> float``: the new ``p[i]`` (plain Python).
    coefficients : numba dispatcher
        ``coefficients(hp, t, aux, h)``: per-step host scalars.
    n_coefficients : int
        Length of ``h``.
    hyper : tuple of Hyper
        Hyperparameters, ``lr``, ``weight_decay``, ``maximize``,
        ``decoupled_weight_decay`` (or the rule's own names for them) first,
        in packing order.
    signature : tuple of str
        The constructor's arguments after ``params`` in order; names after
        ``"*"`` are keyword-only (as in the reference implementation).
    reference : str
        The reference implementation the rule equals (``"torch.optim.Adam"``).
    flag_names : tuple of str
        Names of the compile-time switches in ``flags``.
    flags : callable
        ``flags(values) -> tuple of bool`` from the validated hyperparameters.
    slots : callable
        ``slots(flags) -> tuple of str``: names of the state rows.
    aux_init : tuple of float, or callable
        Initial host state (``aux``), or ``aux_init(values) -> tuple`` when it
        depends on the hyperparameters (Prodigy's ``d0``).
    cross_check : callable
        Raises ``ValueError`` for invalid combinations of hyperparameters.
    initial : callable
        ``initial(values) -> float``: the value every state slot starts at.
    examples : tuple of dict
        Settings that exercise every code path of the rule, with a step size
        that moves a problem of unit scale in a few dozen steps: the tests and
        the benchmarks run each of them.
    notes : str
        Further text for the documentation (conventions, pitfalls).
    accumulate, finish : callable or None
        The first pass and the host function between the passes of a two-pass
        rule (see the module docstring); None for one pass.
    moved : callable or None
        ``moved(flags) -> ((rows read, rows written, p written), ...)``, one triple per
        pass: the memory a step moves besides reading p and g, its speed limit, when
        not the one pass's ``((k, k, True),)`` (every one of the k state rows read and
        written, and p).
    from_params : tuple of str
        State slots that start as a copy of the parameters (Prodigy's ``p0``,
        schedule-free's ``z``), at the first step.
    switch, switch_coefficients : callable or None
        Rules whose parameters hold a different point while training than the one
        to evaluate (schedule-free: ``y`` and ``x``) map one to the other in place:
        ``switch(p, s, h, i, flags) -> new p[i]``, with ``h`` from
        ``switch_coefficients(hp, to_eval, h)`` (three slots, ``@njit``).
    restart : tuple of str
        State slots that :func:`nadam.optimizers.restart` sets back to their
        initial value, with ``aux`` back to ``aux_init``: a rule whose bias corrections
        count steps in ``aux`` (not ``t``) can start its moment estimates afresh
        (nadam's tuning-free runs do after a divergence).  Empty: no restart.
    reference : str
        (Above.)  Empty for a rule of nadam's own, tested against its formulas only.
    """

    name: str
    class_name: str
    summary: str
    math: str
    update: Callable
    coefficients: Callable
    n_coefficients: int
    hyper: tuple[Hyper, ...]
    signature: tuple[str, ...]
    reference: str
    flag_names: tuple[str, ...] = ()
    flags: Callable[[dict], tuple] = _no_flags
    slots: Callable[[tuple], tuple[str, ...]] = lambda flags: ()
    aux_init: tuple[float, ...] | Callable[[dict], tuple] = ()
    cross_check: Callable[[dict], None] = _no_check
    initial: Callable[[dict], float] = _zero
    examples: tuple[dict, ...] = ({},)
    notes: str = ""
    accumulate: Callable | None = None
    finish: Callable | None = None
    moved: Callable[[tuple], tuple[tuple[int, int, bool], ...]] | None = None
    from_params: tuple[str, ...] = ()
    switch: Callable | None = None
    switch_coefficients: Callable | None = None
    restart: tuple[str, ...] = ()
    defaults: dict = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "defaults", {hp.name: hp.default for hp in self.hyper})
        names = [n for n in self.signature if n != "*"]
        if sorted(names) != sorted(self.arguments):
            raise ValueError(
                f"rule {self.name!r}: signature {self.signature} must list every argument "
                f"{self.arguments} once"
            )
        if (self.accumulate is None) != (self.finish is None):
            raise ValueError(f"rule {self.name!r}: accumulate and finish go together")

    def validate(self, values: dict, base: dict | None = None) -> dict:
        """Validate every hyperparameter in ``values``, and their combination with
        the others taken from ``base`` (default: the defaults)."""
        known = {hp.name: hp for hp in self.hyper if not hp.fixed}
        for key in values:
            if key not in known:
                fail(f"hyperparameter of {self.name}", key, ", ".join(known), TypeError)
        checked = {name: known[name].check(value) for name, value in values.items()}
        self.cross_check({**(self.defaults if base is None else base), **checked})
        return checked

    def pack(self, values: dict, hp: np.ndarray) -> None:
        """Write validated hyperparameters into the float64 vector ``hp``.

        A schedule for ``lr`` is evaluated by the caller each step; its slot is
        left untouched here.  None (an optional hyperparameter left unset) is
        packed as NaN, for the coefficients to replace by its derived default.
        """
        k = 0
        for spec in self.hyper:
            value = values[spec.name]
            if spec.kind == "betas":
                hp[k], hp[k + 1] = value
            elif value is None:
                hp[k] = math.nan
            elif not callable(value):
                hp[k] = float(value)
            k += spec.width

    def initial_state(self, values: dict, flags: tuple, n: int, dtype) -> np.ndarray:
        """The ``(k, n)`` state of ``n`` parameters at step 0 (``from_params`` slots are
        filled from the parameters at the first step)."""
        return np.full((len(self.slots(flags)), n), self.initial(values), dtype=dtype)

    def initial_aux(self, values: dict) -> np.ndarray:
        """The float64 host state at step 0 (``aux_init``)."""
        aux = self.aux_init(values) if callable(self.aux_init) else self.aux_init
        return np.array(aux, dtype=np.float64)

    @property
    def n_aux(self) -> int:
        """Length of the host state ``aux``."""
        return len(self.initial_aux(self.defaults))

    @property
    def arguments(self) -> tuple[str, ...]:
        """Names of the hyperparameters a user may set (all but the fixed ones)."""
        return tuple(spec.name for spec in self.hyper if not spec.fixed)

    @property
    def n_hyper(self) -> int:
        """Length of the packed hyperparameter vector ``hp``."""
        return sum(spec.width for spec in self.hyper)

    def passes_moved(self, flags: tuple) -> tuple[tuple[int, int, bool], ...]:
        """``(state rows read, rows written, p written)`` of each pass (see ``moved``)."""
        if self.moved is not None:
            return self.moved(flags)
        k = len(self.slots(flags))
        return ((k, k, True),)

    def traffic(self, flags: tuple) -> int:
        """The arrays one step reads and writes per element: p and g read each pass, the
        state rows read and written, p written (ALGORITHMS.md's table)."""
        return sum(2 + r + w + wp for r, w, wp in self.passes_moved(flags))

    @property
    def passes(self) -> int:
        """Passes over memory per step: 1, or 2 for a rule that needs sums first."""
        return 1 if self.accumulate is None else 2

    @cached_property
    def cacheable(self) -> bool:
        """Whether compiled code of the rule can be cached on disk: its functions live
        in modules that have source files (not in a notebook cell or ``exec``-ed code)."""
        for fn in self._functions():
            module = sys.modules.get(fn.__module__)
            if getattr(module, "__file__", None) is None:
                return False
        return True

    @cached_property
    def digest(self) -> str:
        """A digest of the sources of the rule's functions: part of every compiled
        variant's cache name, so that an edited rule never loads a stale kernel."""
        return source_digest(*self._functions())

    def _functions(self) -> list[Callable]:
        functions = [self.update, self.coefficients.py_func]
        if self.accumulate is not None:
            functions += [self.accumulate, self.finish.py_func]
        if self.switch is not None:
            functions += [self.switch, self.switch_coefficients.py_func]
        return functions


def _schedule(value: Callable) -> Callable:
    # A callable lr is called with the step t alone: one that cannot be (lambda: 0.1)
    # failed at the first step.  Callables without a signature to read pass as they are.
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return value
    try:
        signature.bind(1)
    except TypeError:
        fail("lr", value, "a number, or a schedule called as lr(t) with the step t", TypeError)
    return value


def _lr(default: float, doc: str = "Learning rate :math:`\\gamma`, or a schedule ``t -> lr``."):
    return Hyper("lr", default, doc=doc)


_BETAS_DOC = "Decay rates :math:`(\\beta_1, \\beta_2)` of the moment averages, each in [0, 1)."


def _betas(doc: str = _BETAS_DOC) -> Hyper:
    return Hyper("betas", (0.9, 0.999), "betas", doc=doc)


def _eps(default: float, doc: str = "Added to the denominator, :math:`\\epsilon`.") -> Hyper:
    return Hyper("eps", default, doc=doc)


def _sgd_check(v: dict) -> None:
    if v["nesterov"] and (v["momentum"] <= 0 or v["dampening"] != 0):
        raise ValueError(
            f"nesterov=True requires momentum > 0 and dampening = 0, "
            f"got momentum={v['momentum']!r}, dampening={v['dampening']!r}"
        )


def _sgd_flags(v: dict) -> tuple:
    return (v["momentum"] > 0, v["nesterov"])


def _sgd_slots(flags: tuple) -> tuple:
    return ("momentum_buffer",) if flags[0] else ()


SGD = Rule(
    "sgd",
    "SGD",
    "Stochastic gradient descent with optional (Nesterov) momentum.",
    r"""b_t &= \mu b_{t-1} + (1-\tau) g_t \quad (b_1 = g_1) \\
d_t &= g_t + \mu b_t \text{ if nesterov else } b_t \\
p_t &= p_{t-1} - \gamma d_t""",
    sgd_update,
    sgd_coefficients,
    7,
    (
        _lr(1e-3),
        *shared_hyperparameters(),
        Hyper("momentum", 0.0, doc=":math:`\\mu`; 0 disables the momentum buffer."),
        Hyper("dampening", 0.0, high=1.0, doc=":math:`\\tau`, in [0, 1]."),
        Hyper(
            "nesterov", False, "bool", doc="Nesterov momentum (needs momentum > 0, dampening 0)."
        ),
    ),
    ("lr", "momentum", "dampening", "weight_decay", "nesterov", "*", "maximize"),
    "torch.optim.SGD",
    ("momentum", "nesterov"),
    _sgd_flags,
    _sgd_slots,
    cross_check=_sgd_check,
    examples=(
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    ),
    notes="Without momentum, :math:`d_t = g_t`.",
)


def _rmsprop_flags(v: dict) -> tuple:
    return (v["centered"], v["momentum"] > 0)


def _rmsprop_slots(flags: tuple) -> tuple:
    centered, momentum = flags
    return (
        ("square_avg",)
        + (("grad_avg",) if centered else ())
        + (("momentum_buffer",) if momentum else ())
    )


RMSPROP = Rule(
    "rmsprop",
    "RMSprop",
    "RMSprop (Hinton), optionally centered and with momentum; no bias correction.",
    r"""v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2 \\
\bar g_t &= \alpha \bar g_{t-1} + (1-\alpha) g_t, \quad
    \tilde v_t = v_t - \bar g_t^2 \text{ (centered) else } v_t \\
b_t &= \mu b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon), \quad p_t = p_{t-1} - \gamma b_t \\
&\text{(without momentum: } p_t = p_{t-1} - \gamma g_t / (\sqrt{\tilde v_t} + \epsilon))""",
    rmsprop_update,
    rmsprop_coefficients,
    8,
    (
        _lr(1e-2),
        *shared_hyperparameters(),
        Hyper("alpha", 0.99, high=1.0, doc="Smoothing constant :math:`\\alpha`, in [0, 1]."),
        _eps(1e-8),
        Hyper("momentum", 0.0, doc=":math:`\\mu`; 0 disables the momentum buffer."),
        Hyper("centered", False, "bool", doc="Normalise by the variance estimate."),
    ),
    ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "*", "maximize"),
    "torch.optim.RMSprop",
    ("centered", "momentum"),
    _rmsprop_flags,
    _rmsprop_slots,
    # Centered RMSprop divides by sqrt(v - gbar²), which cancels to about alpha^t·g²
    # for a slowly varying gradient: with alpha = 0.9, float32 keeps only ~5e-5 of
    # relative accuracy after 60 steps whatever the implementation, so the centered
    # examples keep torch's alpha = 0.99; alpha = 0.9 runs without centering.
    examples=(
        {"lr": 0.01},
        {"lr": 0.01, "momentum": 0.5},
        {"lr": 0.01, "centered": True},
        {"lr": 0.01, "centered": True, "momentum": 0.5},
        {"lr": 0.01, "alpha": 0.9, "momentum": 0.5},
    ),
    notes="eps is added *outside* the root, as in torch; optax's ``rmsprop`` puts it inside "
    "and defaults to a decay of 0.9, Keras to :math:`\\rho = 0.9`.",
)


def _adagrad_initial(v: dict) -> float:
    return v["initial_accumulator_value"]


def _sum_slot(flags: tuple) -> tuple:
    return ("sum",)


ADAGRAD = Rule(
    "adagrad",
    "Adagrad",
    "Adagrad (Duchi et al., 2011).",
    r"""\gamma_t &= \gamma / (1 + (t-1)\,\eta) \\
s_t &= s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value} \\
p_t &= p_{t-1} - \gamma_t\, g_t / (\sqrt{s_t} + \epsilon)""",
    adagrad_update,
    adagrad_coefficients,
    5,
    (
        _lr(1e-2),
        *shared_hyperparameters(),
        Hyper("lr_decay", 0.0, doc=":math:`\\eta`."),
        Hyper("initial_accumulator_value", 0.0, doc=":math:`s_0`."),
        _eps(1e-10),
    ),
    ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "*", "maximize"),
    "torch.optim.Adagrad",
    slots=_sum_slot,
    initial=_adagrad_initial,
    examples=(
        {"lr": 0.1},
        {"lr": 0.1, "lr_decay": 0.05},
        {"lr": 0.1, "initial_accumulator_value": 0.5},
        {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.5},
    ),
)


def _two_slots(first: str, second: str) -> Callable[[tuple], tuple]:
    def slots(flags: tuple) -> tuple:
        return (first, second)

    return slots


ADADELTA = Rule(
    "adadelta",
    "Adadelta",
    "Adadelta (Zeiler, 2012).",
    r"""v_t &= \rho v_{t-1} + (1-\rho) g_t^2 \\
\Delta_t &= \sqrt{u_{t-1} + \epsilon} / \sqrt{v_t + \epsilon}\; g_t \\
u_t &= \rho u_{t-1} + (1-\rho) \Delta_t^2 \\
p_t &= p_{t-1} - \gamma \Delta_t""",
    adadelta_update,
    adadelta_coefficients,
    7,
    (
        _lr(1.0),
        *shared_hyperparameters(),
        Hyper("rho", 0.9, high=1.0, doc=":math:`\\rho`, in [0, 1]."),
        _eps(1e-6),
    ),
    ("lr", "rho", "eps", "weight_decay", "*", "maximize"),
    "torch.optim.Adadelta",
    slots=_two_slots("square_avg", "acc_delta"),
    examples=({}, {"rho": 0.5, "eps": 1e-3}),
)

_ADAM_MATH = r"""m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2
    \quad (\text{amsgrad: } v_t \leftarrow \max(v^{\max}_{t-1}, v_t)) \\
p_t &= p_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
    \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}"""

_ADAM_NOTES = (
    "eps is added after the bias-corrected root, as in torch and the paper (Kingma & Ba, "
    '2015); scikit-learn and the paper\'s "efficient version" fold the bias corrections '
    "into the step size, which leaves eps uncorrected."
)


def _adam_flags(v: dict) -> tuple:
    return (v["amsgrad"],)


def _adam_slots(flags: tuple) -> tuple:
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if flags[0] else ())


_AMSGRAD = Hyper("amsgrad", False, "bool", doc="Use the running maximum of :math:`v_t` (AMSGrad).")
# With betas[1] = 0.999, v only grows during a few dozen steps and AMSGrad's
# max(vmax, v) = v: the AMSGrad example uses betas[1] = 0.9, so that v falls when |g| does.
_ADAM_EXAMPLES = (
    {"lr": 0.02},
    {"lr": 0.02, "betas": (0.8, 0.9)},
    {"lr": 0.02, "betas": (0.8, 0.9), "amsgrad": True},
)

ADAM = Rule(
    "adam",
    "Adam",
    "Adam (Kingma & Ba, 2015), optionally AMSGrad.",
    _ADAM_MATH,
    adam_update,
    adam_coefficients,
    10,
    (_lr(1e-3), *shared_hyperparameters(fixed=False), _betas(), _eps(1e-8), _AMSGRAD),
    (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "amsgrad",
        "*",
        "maximize",
        "decoupled_weight_decay",
    ),
    "torch.optim.Adam",
    ("amsgrad",),
    _adam_flags,
    _adam_slots,
    examples=_ADAM_EXAMPLES,
    notes=_ADAM_NOTES,
)

ADAMW = Rule(
    "adamw",
    "AdamW",
    "AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, "
    ":math:`p \\leftarrow (1 - \\gamma\\lambda) p` before the Adam update.",
    _ADAM_MATH,
    adam_update,
    adam_coefficients,
    10,
    (_lr(1e-3), *shared_hyperparameters(1e-2, decoupled=True), _betas(), _eps(1e-8), _AMSGRAD),
    ("lr", "betas", "eps", "weight_decay", "amsgrad", "*", "maximize"),
    "torch.optim.AdamW",
    ADAM.flag_names,
    ADAM.flags,
    ADAM.slots,
    examples=_ADAM_EXAMPLES,
    notes=_ADAM_NOTES,
)

ADAMAX = Rule(
    "adamax",
    "Adamax",
    "Adamax: Adam with the infinity norm (Kingma & Ba, 2015, section 7).",
    r"""m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
p_t &= p_{t-1} - \frac{\gamma}{1-\beta_1^t} \frac{m_t}{u_t}""",
    adamax_update,
    adamax_coefficients,
    8,
    (_lr(2e-3), *shared_hyperparameters(), _betas(), _eps(1e-8)),
    ("lr", "betas", "eps", "weight_decay", "*", "maximize"),
    "torch.optim.Adamax",
    slots=_two_slots("exp_avg", "exp_inf"),
    examples=({"lr": 0.02}, {"lr": 0.02, "betas": (0.8, 0.99)}),
)

NADAM = Rule(
    "nadam",
    "NAdam",
    "NAdam: Adam with Nesterov momentum (Dozat, 2016), with momentum decay.",
    r"""\mu_t &= \beta_1 (1 - \tfrac12 0.96^{t\psi}), \quad \Pi_t = \prod_{i\le t} \mu_i \\
m_t, v_t &\text{ as Adam}, \quad d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon \\
p_t &= p_{t-1} - \gamma \frac{1-\mu_t}{1-\Pi_t} \frac{g_t}{d_t}
      - \gamma \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}} \frac{m_t}{d_t}""",
    nadam_update,
    nadam_coefficients,
    11,
    (
        _lr(2e-3),
        *shared_hyperparameters(fixed=False),
        _betas(),
        _eps(1e-8),
        Hyper("momentum_decay", 4e-3, doc=":math:`\\psi`."),
    ),
    (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "momentum_decay",
        "decoupled_weight_decay",
        "*",
        "maximize",
    ),
    "torch.optim.NAdam",
    slots=_two_slots("exp_avg", "exp_avg_sq"),
    aux_init=(1.0,),
    examples=({"lr": 0.02}, {"lr": 0.02, "momentum_decay": 0.1, "betas": (0.8, 0.99)}),
    notes="The product :math:`\\Pi_t` is host state, saved in ``state_dict()``.",
)

RADAM = Rule(
    "radam",
    "RAdam",
    "RAdam: rectified Adam (Liu et al., 2020).",
    r"""\rho_\infty &= 2/(1-\beta_2) - 1, \quad
    \rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t) \\
r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
p_t &= p_{t-1} - \frac{\gamma}{1-\beta_1^t} m_t \cdot
    \begin{cases} r_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
    1 & \text{otherwise} \end{cases}""",
    radam_update,
    radam_coefficients,
    10,
    (_lr(1e-3), *shared_hyperparameters(fixed=False), _betas(), _eps(1e-8)),
    ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "*", "maximize"),
    "torch.optim.RAdam",
    slots=_two_slots("exp_avg", "exp_avg_sq"),
    # betas[1] = 0.6 gives rho_inf = 4: RAdam never rectifies; the others from t = 6.
    examples=({"lr": 0.02}, {"lr": 0.02, "betas": (0.8, 0.99)}, {"lr": 0.02, "betas": (0.5, 0.6)}),
)

# ---------------------------------------------------------------------------
# Learning-rate-free and schedule-free rules
# ---------------------------------------------------------------------------

# Prodigy (prodigyopt 1.1.2).  aux: the step size d, its running maximum, the
# numerator of its estimate, and the package's step count k (which does not
# advance on a skipped step).  Two passes (the update needs the new d): the first
# updates s and sums <g, p0 - p> and |s| (old d); `finish` makes the new d; the
# second updates m and v with the old d and the parameters with the new one.
_D, _D_MAX, _D_NUMERATOR, _K = range(4)


def prodigy_accumulate(p, g, s, h, i, flags):
    (momentum,) = flags
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    k = 2 if momentum else 1  # s; p0 next to it
    dot = d * (s[k + 1, i] - p[i])
    s_new = h[3] * s[k, i] + h[4] * d
    s[k, i] = s_new
    return dot, abs(s_new)


def prodigy_update(p, g, s, h, i, flags):
    (momentum,) = flags
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    k = 1 if momentum else 0  # exp_avg_sq
    v = h[7] * s[k, i] + (h[8] * d) * d
    s[k, i] = v
    den = math.sqrt(v) + h[9]
    # Decoupled decay as the package takes it, p + (-λ·dγ)·p, with h[11] = -λ·dγ (h[2],
    # its multiplier 1 - λ·dγ, says whether there is one, as for every rule).
    base = p[i] if RAW_PARAM else p[i] + h[11] * p[i]
    if momentum:
        m = h[5] * s[0, i] + h[6] * d
        s[0, i] = m
        return base + (h[10] * m) / den
    return base + (h[10] * d) / den


@njit(**_HELPER)
def _prodigy_dlr(hp, aux):
    # d·lr·(bias correction): the step size of this step, from the old d and k.
    lr, beta1, beta2, k = hp[0], hp[4], hp[5], aux[_K]
    if hp[8] != 0.0:  # use_bias_correction
        return aux[_D] * lr * ((1.0 - beta2 ** (k + 1.0)) ** 0.5 / (1.0 - beta1 ** (k + 1.0)))
    return aux[_D] * lr


@njit(**_HELPER)
def _prodigy_beta3(hp):
    return math.sqrt(hp[5]) if hp[6] != hp[6] else hp[6]  # None (NaN): sqrt(beta2)


@njit(cache=True)
def prodigy_coefficients(hp, t, aux, h):
    _common(hp, h)
    beta1, beta2, d0, d = hp[4], hp[5], hp[10], aux[_D]
    dlr = _prodigy_dlr(hp, aux)
    h[2], h[11] = 1.0, 0.0  # the decoupled decay is d-scaled: set by prodigy_finish
    if hp[0] > 0.0:
        h[3] = _prodigy_beta3(hp)
        h[4] = (d / d0) * d if hp[9] != 0.0 else (d / d0) * dlr  # safeguard_warmup
        h[5], h[6] = beta1, d * (1.0 - beta1)
        h[7], h[8] = beta2, d * d * (1.0 - beta2)
    else:  # lr = 0: the package skips the step; these make both passes identities
        h[3], h[4], h[5], h[6], h[7], h[8] = 1.0, 0.0, 1.0, 0.0, 1.0, 0.0
    h[9] = d * hp[7]
    h[10] = 0.0


@njit(cache=True)
def prodigy_finish(hp, t, aux, sums, h):
    # The sums, rounded to the parameters' dtype as the package's .item() of a
    # reduction in that dtype is (h[10] is scratch here).
    h[10] = sums[0]
    dot = float(h[10])
    h[10] = sums[1]
    den = float(h[10])
    h[10] = 0.0
    if hp[0] <= 0.0 or den == 0.0:  # the package returns before touching p, d, k
        return
    d, d_max, d0 = aux[_D], aux[_D_MAX], hp[10]
    dlr = _prodigy_dlr(hp, aux)
    numerator = aux[_D_NUMERATOR] * _prodigy_beta3(hp) + ((d / d0) * dlr) * dot
    d_hat = hp[11] * numerator / den
    # Python's max(d, d_hat) and min(d_max, d·growth) (the package's), written out:
    # numba compiles its overloads of max() and min() in every fresh process (~0.02 s
    # each), and the first step would wait for them.
    if d == d0 and d_hat > d:
        d = d_hat
    if d_hat > d_max:
        d_max = d_hat
    grown = d * hp[12]
    d = grown if grown < d_max else d_max
    aux[_D], aux[_D_MAX], aux[_D_NUMERATOR], aux[_K] = d, d_max, numerator, aux[_K] + 1.0
    h[9] = d * hp[7]
    h[10] = -dlr if hp[4] > 0.0 else -dlr * d
    if hp[DECOUPLED] != 0.0 and hp[WEIGHT_DECAY] != 0.0:
        h[11] = -hp[WEIGHT_DECAY] * dlr
        h[2] = 1.0 + h[11]


def _prodigy_aux(values: dict) -> tuple:
    return (values["d0"], values["d0"], 0.0, 0.0)


def _prodigy_flags(v: dict) -> tuple:
    return (v["betas"][0] > 0,)


def _prodigy_slots(flags: tuple) -> tuple:
    return (("exp_avg",) if flags[0] else ()) + ("exp_avg_sq", "s", "p0")


def _prodigy_moved(flags: tuple) -> tuple:
    # First pass: g, p, s and p0 read, s written; second: g, p, (m,) v read, (m,) v, p written.
    k = 2 if flags[0] else 1
    return ((2, 1, False), (k, k, True))


PRODIGY = Rule(
    "prodigy",
    "Prodigy",
    "Prodigy (Mishchenko & Defazio, 2024): Adam whose step size d estimates the distance "
    "to the solution.",
    r"""s_t &= \beta_3 s_{t-1} + \tfrac{d_{t-1}}{d_0}\, d_{t-1}\gamma\, g_t, \quad
    r_t = \beta_3 r_{t-1} + \tfrac{d_{t-1}}{d_0}\, d_{t-1}\gamma\, \langle g_t, x_0 - x_t\rangle \\
\hat d_t &= c\, r_t / \lVert s_t \rVert_1, \quad
    d_t = \min(\max(d_{t-1}, \hat d_{\le t}),\ d_{t-1}\,\text{growth\_rate}) \\
m_t &= \beta_1 m_{t-1} + d_{t-1}(1-\beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + d_{t-1}^2 (1-\beta_2) g_t^2 \\
x_{t+1} &= x_t - d_{t-1}\gamma\, m_t / (\sqrt{v_t} + d_t \epsilon)""",
    prodigy_update,
    prodigy_coefficients,
    12,
    (
        Hyper("lr", 1.0, low_open=True, doc="Multiplier :math:`\\gamma` of the estimated step."),
        Hyper("weight_decay", 0.0, doc="Weight decay :math:`\\lambda`."),
        _MAXIMIZE,
        Hyper(
            "decouple",
            True,
            "bool",
            doc="Decoupled weight decay, :math:`x \\leftarrow (1 - \\lambda d\\gamma) x` "
            "(else L2, :math:`g \\leftarrow g + \\lambda x`).",
        ),
        _betas(),
        Hyper(
            "beta3",
            None,
            high=1.0,
            allow_none=True,
            doc=":math:`\\beta_3` of the estimate's sums; None: :math:`\\sqrt{\\beta_2}`.",
        ),
        _eps(1e-8),
        Hyper("use_bias_correction", False, "bool", doc="Adam's bias correction in the step."),
        Hyper(
            "safeguard_warmup",
            False,
            "bool",
            doc="Leave :math:`\\gamma` out of the sums :math:`s` (safer with a warm-up).",
        ),
        Hyper("d0", 1e-6, low_open=True, doc="Initial estimate :math:`d_0`."),
        Hyper("d_coef", 1.0, doc="Factor :math:`c` of the estimate."),
        Hyper(
            "growth_rate",
            math.inf,
            low=1.0,
            allow_inf=True,
            doc="Largest factor by which d may grow in one step.",
        ),
    ),
    (
        "lr",
        "betas",
        "beta3",
        "eps",
        "weight_decay",
        "decouple",
        "use_bias_correction",
        "safeguard_warmup",
        "d0",
        "d_coef",
        "growth_rate",
        "*",
        "maximize",
    ),
    "prodigyopt.Prodigy",
    ("first_moment",),
    _prodigy_flags,
    _prodigy_slots,
    aux_init=_prodigy_aux,
    # Prodigy estimates the distance to a minimiser, and the tests' objective has none:
    # d grows without end unless its growth is capped.
    examples=(
        {"growth_rate": 1.2},
        {"growth_rate": 1.1, "betas": (0.0, 0.999)},
        {"growth_rate": 1.2, "use_bias_correction": True, "beta3": 0.99, "d_coef": 0.5},
        {"growth_rate": 1.2, "safeguard_warmup": True, "d0": 1e-5},
    ),
    notes="The step is skipped (as in the package) while lr is 0 or every gradient so far "
    "was 0. fsdp_in_use and slice_p of the package are not offered; under MPI the two sums "
    "are summed over the ranks.",
    accumulate=prodigy_accumulate,
    finish=prodigy_finish,
    moved=_prodigy_moved,
    from_params=("p0",),
)


# Adam with distance-scaled steps: nadam's own rule, the step of minimize's
# tuning-free runs (docs/tuning-free.md).  aux: the steps k since the moment
# estimates (re)started, which the bias corrections count instead of t.
_AD_K = 0
#: The default epsilon of adam_distance, sqrt(np.finfo(dtype).tiny): no larger than it
#: must be (below it, a gradient's square underflows, and the quotient m / sqrt(v) is
#: kept below ~1 by epsilon alone), so that the steps do not depend on the loss's scale.
_ROOT_TINY_64, _ROOT_TINY_32 = 1.4916681462400413e-154, 1.0842021724855044e-19


def adam_distance_update(p, g, s, h, i, flags):
    (amsgrad,) = flags
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    if amsgrad:
        v = max(s[2, i], v)
        s[2, i] = v
    k = 3 if amsgrad else 2  # the distance travelled; the origin next to it
    origin = s[k + 1, i]
    # The first distance: r_eps of the parameter's own scale, |p0|; absolute where p0 = 0,
    # which has none.  Relative, the steps do not depend on a parameter's units.
    r = max(s[k, i], h[10] * abs(origin) if origin != 0.0 else h[10])
    new = (p[i] if RAW_PARAM else h[2] * p[i]) - (h[7] * r) * (m / (math.sqrt(v) * h[8] + h[9]))
    moved = abs(new - origin)
    # Not max(): a NaN step (which the guarded loops never write) must leave r as it is.
    s[k, i] = moved if moved > r else r
    return new


@njit(cache=True)
def adam_distance_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, beta1, beta2, eps, r_eps = hp[0], hp[4], hp[5], hp[6], hp[8]
    k = aux[_AD_K] + 1.0
    aux[_AD_K] = k
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = 1.0 - beta2
    h[7] = lr / (1.0 - beta1**k)
    h[8] = 1.0 / math.sqrt(1.0 - beta2**k)
    if eps != eps:  # None: the square root of the smallest normal number of h's dtype
        eps = _ROOT_TINY_64 if h.itemsize == 8 else _ROOT_TINY_32
    h[9] = eps
    h[10] = r_eps


def _adam_distance_slots(flags: tuple) -> tuple:
    return _adam_slots(flags) + ("distance", "origin")


def _adam_distance_moved(flags: tuple) -> tuple:
    # The origin is read, never written.
    k = len(_adam_distance_slots(flags))
    return ((k, k - 1, True),)


ADAM_DISTANCE = Rule(
    "adam_distance",
    "AdamDistance",
    "Adam whose step for each parameter is the fraction :math:`\\gamma` of the distance it "
    "has travelled from its start: a step size in the parameter's own units, found by the "
    "run (after DoG, Ivgi, Hinder & Carmon, 2023, per coordinate).  The step of "
    ":func:`nadam.minimize` without ``lr``.",
    r"""m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \quad (\text{amsgrad: } v_t \leftarrow
    \max(v^{\max}_{t-1}, v_t)) \\
r_{t-1} &= \max\big(r_\epsilon |p_0|,\ \max_{s<t} |p_s - p_0|\big)
    \quad \text{(per element; } r_\epsilon \text{ where } p_0 = 0) \\
p_t &= p_{t-1} - \frac{\gamma\, r_{t-1}}{1-\beta_1^k}\,
    \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^k} + \epsilon}""",
    adam_distance_update,
    adam_distance_coefficients,
    11,
    (
        _lr(
            0.1,
            "Step as a fraction :math:`\\gamma` of the distance travelled (dimensionless), "
            "or a schedule ``t -> lr``.",
        ),
        *shared_hyperparameters(fixed=False),
        _betas(),
        Hyper(
            "eps",
            None,
            allow_none=True,
            doc="Added to the denominator, :math:`\\epsilon`.  None: the square root of the "
            "smallest normal number of the parameters' dtype (1.5e-154 in float64, 1.1e-19 in "
            "float32), only what keeps the quotient bounded where a squared gradient "
            "underflows: the steps do not depend on the loss's scale (Adam's 1e-8 slows "
            "every parameter whose gradients are below it).",
        ),
        _AMSGRAD,
        Hyper(
            "r_eps",
            1e-6,
            low_open=True,
            doc="Initial distance :math:`r_\\epsilon`, relative to :math:`|p_0|` (absolute "
            "where :math:`p_0 = 0`).",
        ),
    ),
    (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "amsgrad",
        "r_eps",
        "*",
        "maximize",
        "decoupled_weight_decay",
    ),
    "",
    ("amsgrad",),
    _adam_flags,
    _adam_distance_slots,
    aux_init=(0.0,),
    # r_eps = 0.1: steps of unit-scale parameters from the first one (with the default,
    # 1e-6, the tests' few dozen steps would move them by less than their tolerance).
    examples=(
        {"lr": 0.1, "r_eps": 0.1},
        {"lr": 0.1, "r_eps": 0.1, "betas": (0.8, 0.9), "amsgrad": True},
        {"lr": 0.05, "r_eps": 0.2, "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    notes="k counts the steps since the moment estimates started (t, unless "
    ":func:`nadam.optimizers.restart` started them again).  The step of "
    "parameter i grows by up to a factor 1 + gamma per step while it moves away from its "
    "start, and stops growing where it settles: each parameter finds its own scale.",
    moved=_adam_distance_moved,
    from_params=("origin",),
    restart=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
)


# Schedule-free rules (schedulefree 1.4.1).  aux: the step count k, the sum of the
# averaging weights and the largest learning rate so far.  The parameters hold y,
# where gradients are taken; the average x is what to evaluate (switch).
_SF_K, _SF_WEIGHT_SUM, _SF_LR_MAX = range(3)


@njit(**_HELPER)
def _schedule_free_step(hp, aux, warmup, r, power):
    # The package's host scalars: (lr, ckp1) of this step; advances aux.
    k = aux[_SF_K]
    lr = hp[LR] * ((k + 1.0) / warmup if k < warmup else 1.0)
    lr_max = max(lr, aux[_SF_LR_MAX])
    weight = ((k + 1.0) ** r) * (lr_max**power)
    weight_sum = aux[_SF_WEIGHT_SUM] + weight
    ckp1 = weight / weight_sum if weight_sum != 0.0 else 0.0
    aux[_SF_K], aux[_SF_WEIGHT_SUM], aux[_SF_LR_MAX] = k + 1.0, weight_sum, lr_max
    return lr, ckp1


@njit(**_HELPER)
def _lerp_weights(w, h, k):
    # torch's lerp(a, b, w): a + w(b - a) if |w| < 0.5, else b + (w - 1)(b - a), decided
    # on w rounded to the parameters' dtype, w - 1 computed in that dtype.
    h[k] = w
    h[k + 1] = h[k] - 1.0
    h[k + 2] = 1.0 if abs(h[k]) < 0.5 else 0.0


def schedule_free_switch(p, s, h, i, flags):
    z = s[0, i]
    return p[i] + h[0] * (z - p[i]) if h[2] != 0 else z + h[1] * (z - p[i])


@njit(cache=True)
def schedule_free_switch_coefficients(hp, to_eval, h):
    beta = hp[4]  # betas[0] (AdamW) or momentum (SGD)
    _lerp_weights(1.0 - 1.0 / beta if to_eval else 1.0 - beta, h, 0)


def adamw_schedulefree_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    y = p[i] if RAW_PARAM else h[2] * p[i]
    v = h[3] * s[1, i] + (h[4] * d) * d
    s[1, i] = v
    gn = d / (math.sqrt(v / h[5]) + h[6]) + h[7] * y  # decay at y, after normalising
    z = s[0, i]
    s[0, i] = z - h[12] * gn
    y_lerp = y + h[8] * (z - y) if h[10] != 0 else z + h[9] * (z - y)
    return y_lerp + h[11] * gn


@njit(cache=True)
def adamw_schedulefree_coefficients(hp, t, aux, h):
    _common(hp, h)
    beta1, beta2, k = hp[4], hp[5], aux[_SF_K]
    lr, ckp1 = _schedule_free_step(hp, aux, hp[7], hp[8], hp[9])
    h[1], h[2] = 0.0, 1.0  # weight decay is added after normalising (h[7])
    h[3], h[4], h[5], h[6], h[7] = beta2, 1.0 - beta2, 1.0 - beta2 ** (k + 1.0), hp[6], hp[1]
    _lerp_weights(ckp1, h, 8)
    h[11] = lr * (beta1 * (1.0 - ckp1) - 1.0)
    h[12] = lr


def sgd_schedulefree_update(p, g, s, h, i, flags):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    y = p[i] if RAW_PARAM else h[2] * p[i]
    z = s[0, i]
    s[0, i] = z - h[7] * d
    y_lerp = y + h[3] * (z - y) if h[5] != 0 else z + h[4] * (z - y)
    return y_lerp + h[6] * d


@njit(cache=True)
def sgd_schedulefree_coefficients(hp, t, aux, h):
    _common(hp, h)
    lr, ckp1 = _schedule_free_step(hp, aux, hp[5], hp[6], hp[7])
    _lerp_weights(ckp1, h, 3)
    h[6] = lr * (hp[4] * (1.0 - ckp1) - 1.0)
    h[7] = lr


def _schedule_free_hyper(lr: float, momentum: tuple[Hyper, ...], power: float) -> tuple:
    return (
        Hyper("lr", lr, doc="Learning rate :math:`\\gamma` (the peak of the warm-up)."),
        Hyper("weight_decay", 0.0, doc="Weight decay :math:`\\lambda`, taken at :math:`y`."),
        _MAXIMIZE,
        Hyper("decoupled_weight_decay", False, "bool", fixed=True),
        *momentum,
        Hyper("warmup_steps", 0, "int", doc="Steps of linear warm-up of the learning rate."),
        Hyper("r", 0.0, doc="Power of the step count in the averaging weights."),
        Hyper("weight_lr_power", power, doc="Power of the largest lr in the averaging weights."),
    )


_SF_MATH = r"""y_t &= (1-\beta) z_t + \beta x_t, \quad
    z_{t+1} = z_t - \gamma_t\, \tilde g(y_t) \\
x_{t+1} &= (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \quad
    c_{t+1} = \frac{w_{t+1}}{\sum_{i \le t+1} w_i}, \quad
    w_t = t^r \max_{i\le t}\gamma_i^{\,p}"""

_SF_NOTES = (
    "The parameters hold y (where gradients are taken) while training: call eval() to "
    "switch them to the average x, which is what to evaluate or save, and train() to "
    "switch back; minimize returns x. The class starts in train mode."
)


def _sf_slots(flags: tuple) -> tuple:
    return ("z", "exp_avg_sq")


def _sf_z(flags: tuple) -> tuple:
    return ("z",)


ADAMW_SCHEDULEFREE = Rule(
    "adamw_schedulefree",
    "AdamWScheduleFree",
    "Schedule-free AdamW (Defazio et al., 2024): iterate averaging instead of a "
    "learning-rate schedule.",
    _SF_MATH
    + r""" \\
\tilde g &= g / (\sqrt{v_t / (1-\beta_2^t)} + \epsilon) + \lambda y_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2""",
    adamw_schedulefree_update,
    adamw_schedulefree_coefficients,
    13,
    _schedule_free_hyper(0.0025, (_betas(), _eps(1e-8)), 2.0),
    ("lr", "betas", "eps", "weight_decay", "warmup_steps", "r", "weight_lr_power", "*", "maximize"),
    "schedulefree.AdamWScheduleFree",
    slots=_sf_slots,
    aux_init=(0.0, 0.0, -1.0),
    examples=(
        {"lr": 0.05},
        {"lr": 0.05, "warmup_steps": 10, "r": 0.5},
        {"lr": 0.05, "betas": (0.8, 0.99), "weight_lr_power": 0.0},
    ),
    notes=_SF_NOTES,
    from_params=("z",),
    switch=schedule_free_switch,
    switch_coefficients=schedule_free_switch_coefficients,
)

SGD_SCHEDULEFREE = Rule(
    "sgd_schedulefree",
    "SGDScheduleFree",
    "Schedule-free SGD (Defazio et al., 2024): iterate averaging instead of a "
    "learning-rate schedule.",
    _SF_MATH + r""" \\ \tilde g &= g + \lambda y_t""",
    sgd_schedulefree_update,
    sgd_schedulefree_coefficients,
    8,
    _schedule_free_hyper(
        1.0,
        (
            Hyper(
                "momentum",
                0.9,
                low_open=True,
                high=1.0,
                high_open=True,
                doc="Interpolation :math:`\\beta`, in (0, 1).",
            ),
        ),
        2.0,
    ),
    ("lr", "momentum", "weight_decay", "warmup_steps", "r", "weight_lr_power", "*", "maximize"),
    "schedulefree.SGDScheduleFree",
    slots=_sf_z,
    aux_init=(0.0, 0.0, -1.0),
    examples=(
        {"lr": 0.05},
        {"lr": 0.05, "warmup_steps": 10, "r": 0.5},
        {"lr": 0.05, "momentum": 0.5, "weight_lr_power": 1.0},
    ),
    notes=_SF_NOTES,
    from_params=("z",),
    switch=schedule_free_switch,
    switch_coefficients=schedule_free_switch_coefficients,
)

#: Every rule by method name: the single source of the optimizer classes, the
#: methods, the kernels, the tests' tables, the benchmarks and the docs.
RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        SGD,
        RMSPROP,
        ADAGRAD,
        ADADELTA,
        ADAM,
        ADAMW,
        ADAMAX,
        NADAM,
        RADAM,
        PRODIGY,
        ADAMW_SCHEDULEFREE,
        SGD_SCHEDULEFREE,
        ADAM_DISTANCE,
    )
}


def register(rule: Rule) -> Rule:
    """Add ``rule`` to :data:`RULES`: from then on it is a method of
    :func:`nadam.minimize` and :mod:`nadam.methods`, a kernel of
    :mod:`nadam.kernels` (CPU and CUDA), and has an optimizer class
    (:func:`nadam.optimizers.optimizer_class`).

    Raises
    ------
    ValueError
        If a rule of that name, or an optimizer class of that name, exists.
    """
    if not isinstance(rule, Rule):
        fail("rule", rule, "a nadam.rules.Rule", TypeError)
    taken = {r.class_name for r in RULES.values()}
    if rule.name in RULES or rule.class_name in taken:
        raise ValueError(f"a rule named {rule.name!r} or with class {rule.class_name!r} exists")
    RULES[rule.name] = rule
    return rule


def unregister(name: str) -> None:
    """Remove the rule ``name`` that :func:`register` added."""
    del RULES[get_rule(name).name]


#: scipy.optimize.minimize's methods, which get_rule points to scipy.
_SCIPY_METHODS = frozenset(
    (
        "nelder-mead",
        "powell",
        "cg",
        "bfgs",
        "newton-cg",
        "l-bfgs-b",
        "tnc",
        "cobyla",
        "cobyqa",
        "slsqp",
        "trust-constr",
        "dogleg",
        "trust-ncg",
        "trust-exact",
        "trust-krylov",
    )
)


def get_rule(name: str, label: str = "method") -> Rule:
    """Look up a rule by (case-insensitive) name; ``label`` is what the caller calls it
    in its messages.

    Raises
    ------
    TypeError, ValueError
        For a name that is not a str, or not a rule's; the message lists the valid ones.
    """
    if not isinstance(name, str):
        fail(label, name, "a str", TypeError)
    try:
        return RULES[name.lower()]
    except KeyError:
        allowed = "one of " + ", ".join(sorted(RULES))
        if name.lower() in _SCIPY_METHODS:  # a scipy user's first call, say
            allowed += f" ({name!r} is scipy's: call scipy.optimize.minimize for it)"
        fail(label, name, allowed)
