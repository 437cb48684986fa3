r"""The update rules, written once.

Every algorithm is described by one :class:`Rule`:

``update(p, g, s, h, i, opts)``
    A plain Python function that updates element ``i`` of the parameters ``p`` in
    place from the gradient ``g``, the state ``s`` (a ``(k, n)`` array, one row per
    state slot) and the per-step coefficients ``h``.  ``opts`` is a tuple of
    compile-time flags (``amsgrad``, ``centered``, ...): the kernel factories in
    :mod:`nadam.kernels` bake it in as a constant, so each variant compiles to its
    own branch-free loop.  The same function is compiled for the serial CPU loop,
    the ``prange`` loop and the CUDA grid-stride loop.  It contains no numeric
    literals: every constant comes from ``h``, which has the parameters' dtype, so
    float32 parameters get float32 arithmetic.

``coefficients(hp, t, aux, h)``
    Host-side, once per step: turns the float64 hyperparameter vector ``hp`` and the
    step count ``t`` (1 on the first step) into ``h``.  Bias corrections and every
    other scalar that depends only on ``t`` live here, never in the element loop.
    ``aux`` is float64 host state carried between steps (NAdam's momentum product).
    It is ``@njit``-compiled so compiled loops (and users' own ``@njit`` code) can
    call it.

All rules share the first three coefficients, which implement the options common
to every algorithm:

* ``h[0] = -1`` if ``maximize`` else ``1`` (the gradient's sign),
* ``h[1] = λ`` for L2 weight decay (``g ← g + λ·p``), 0 when decoupled,
* ``h[2] = 1 − lr·λ`` for decoupled weight decay (``p ← (1 − lr·λ)·p``), else 1.

With ``λ = 0`` these are exact identities, so the options cost no branches.

Names, defaults, validation and formulas follow ``torch.optim``'s single-tensor
implementation.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit

__all__ = ["Hyper", "Rule", "RULES", "get_rule"]


# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_real(name: str, value: object, low: float, high: float, high_open: bool) -> float:
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type {type(value).__name__}"
        )
    x = float(value)
    upper = "<" if high_open else "<="
    ok = math.isfinite(x) and low <= x and (x < high if high_open else x <= high)
    if not ok:
        allowed = f"{low} <= {name}" + (f" {upper} {high}" if math.isfinite(high) else "")
        raise ValueError(f"Invalid {name}: {value!r}; allowed: finite {allowed}")
    return x


@dataclass(frozen=True)
class Hyper:
    """One public hyperparameter: its torch name, default and allowed range.

    ``kind`` is ``"real"`` (a number in ``[low, high]`` or ``[low, high)`` when
    ``high_open``), ``"betas"`` (a pair, each in ``[0, 1)``) or ``"bool"``.
    ``lr`` may also be a schedule: any callable ``t -> float``.  A ``fixed``
    hyperparameter is not an argument of the rule: it always has its default
    (``decoupled_weight_decay`` of the rules for which torch has no such option).
    """

    name: str
    default: object
    kind: str = "real"
    low: float = 0.0
    high: float = math.inf
    high_open: bool = False
    fixed: bool = False

    @property
    def width(self) -> int:
        """Number of float64 slots the value occupies in the packed vector."""
        return 2 if self.kind == "betas" else 1

    def check(self, value: object) -> object:
        """Return the validated value (floats as ``float``), or raise naming it."""
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{self.name} must be a bool, got {value!r}")
            return bool(value)
        if self.kind == "betas":
            try:
                b1, b2 = value  # type: ignore[misc]
            except (TypeError, ValueError):
                raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}") from None
            return (
                _check_real("betas[0]", b1, 0.0, 1.0, True),
                _check_real("betas[1]", b2, 0.0, 1.0, True),
            )
        if self.name == "lr" and callable(value):
            return value
        return _check_real(self.name, value, self.low, self.high, self.high_open)


# The hyperparameters every rule has, in this order, at the start of ``hp``.
LR, WEIGHT_DECAY, MAXIMIZE, DECOUPLED = range(4)


def _common(weight_decay: float = 0.0, decoupled: bool = False, fixed: bool = True):
    return (
        Hyper("weight_decay", weight_decay),
        Hyper("maximize", False, "bool"),
        Hyper("decoupled_weight_decay", decoupled, "bool", fixed=fixed),
    )


@njit(cache=True)
def _common_coefficients(hp, h):
    # Shared options: see the module docstring for the meaning of h[0:3].
    h[0] = -1.0 if hp[MAXIMIZE] != 0.0 else 1.0
    if hp[DECOUPLED] != 0.0:
        h[1] = 0.0
        h[2] = 1.0 - hp[LR] * hp[WEIGHT_DECAY]
    else:
        h[1] = hp[WEIGHT_DECAY]
        h[2] = 1.0


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


def sgd_update(p, g, s, h, i, opts):
    momentum, nesterov = opts
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    if momentum:
        # h[4], h[5] are (0, 1) on the first step so that b = g exactly, as torch.
        b = h[4] * s[0, i] + h[5] * d
        s[0, i] = b
        d = d + h[6] * b if nesterov else b
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[3] * d


@njit(cache=True)
def sgd_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, momentum, dampening = hp[0], hp[4], hp[5]
    h[3] = lr
    h[4] = momentum if t > 1 else 0.0
    h[5] = 1.0 - dampening if t > 1 else 1.0
    h[6] = momentum


def rmsprop_update(p, g, s, h, i, opts):
    centered, momentum = opts
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
        p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * b
    else:
        p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (d / a)


@njit(cache=True)
def rmsprop_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, alpha, eps, momentum = hp[0], hp[4], hp[5], hp[6]
    h[3] = alpha
    h[4] = 1.0 - alpha
    h[5] = eps
    h[6] = momentum
    h[7] = lr


def adagrad_update(p, g, s, h, i, opts):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    acc = s[0, i] + d * d
    s[0, i] = acc
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[3] * (d / (math.sqrt(acc) + h[4]))


@njit(cache=True)
def adagrad_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, lr_decay, eps = hp[0], hp[4], hp[6]
    h[3] = lr / (1.0 + (t - 1) * lr_decay)
    h[4] = eps


def adadelta_update(p, g, s, h, i, opts):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    v = h[3] * s[0, i] + h[4] * (d * d)
    s[0, i] = v
    u = s[1, i]
    # One root of the quotient (torch: a quotient of two roots): same value up to
    # rounding, one square root fewer for the divide/sqrt unit.  (In float32 the
    # quotient leaves the normal range only when v + eps > 1e32 * (u + eps).)
    delta = math.sqrt((u + h[5]) / (v + h[5])) * d
    s[1, i] = h[3] * u + h[4] * (delta * delta)
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[6] * delta


@njit(cache=True)
def adadelta_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, rho, eps = hp[0], hp[4], hp[5]
    h[3] = rho
    h[4] = 1.0 - rho
    h[5] = eps
    h[6] = lr


def adam_update(p, g, s, h, i, opts):
    (amsgrad,) = opts
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    if amsgrad:
        v = max(s[2, i], v)
        s[2, i] = v
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (m / (math.sqrt(v) * h[8] + h[9]))


@njit(cache=True)
def adam_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, beta1, beta2, eps = hp[0], hp[4], hp[5], hp[6]
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = 1.0 - beta2
    h[7] = lr / (1.0 - beta1**t)
    h[8] = 1.0 / math.sqrt(1.0 - beta2**t)
    h[9] = eps


def adamax_update(p, g, s, h, i, opts):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    u = max(h[5] * s[1, i], abs(d) + h[6])
    s[0, i] = m
    s[1, i] = u
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (m / u)


@njit(cache=True)
def adamax_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, beta1, beta2, eps = hp[0], hp[4], hp[5], hp[6]
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = eps
    h[7] = lr / (1.0 - beta1**t)


def nadam_update(p, g, s, h, i, opts):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    den = math.sqrt(v * h[7]) + h[8]
    # Both terms share the denominator (torch divides twice): one division.
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - (h[9] * d + h[10] * m) / den


@njit(cache=True)
def nadam_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, beta1, beta2, eps, psi = hp[0], hp[4], hp[5], hp[6], hp[7]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
    aux[0] *= mu  # the product of all mu so far
    h[3] = beta1
    h[4] = 1.0 - beta1
    h[5] = beta2
    h[6] = 1.0 - beta2
    h[7] = 1.0 / (1.0 - beta2**t)
    h[8] = eps
    h[9] = lr * (1.0 - mu) / (1.0 - aux[0])
    h[10] = lr * mu_next / (1.0 - aux[0] * mu_next)


def radam_update(p, g, s, h, i, opts):
    d = g[i] if RAW_GRAD else h[0] * g[i] + h[1] * p[i]
    m = h[3] * s[0, i] + h[4] * d
    v = h[5] * s[1, i] + h[6] * (d * d)
    s[0, i] = m
    s[1, i] = v
    # Unrectified steps have h[8] = 0, h[9] = 1: the denominator is exactly 1.
    p[i] = (p[i] if RAW_PARAM else h[2] * p[i]) - h[7] * (m / (h[8] * math.sqrt(v) + h[9]))


@njit(cache=True)
def radam_coefficients(hp, t, aux, h):
    _common_coefficients(hp, h)
    lr, beta1, beta2, eps = hp[0], hp[4], hp[5], hp[6]
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2**t / bc2
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


@dataclass(frozen=True, eq=False)
class Rule:
    """Everything nadam knows about one algorithm.

    Attributes
    ----------
    name : str
        Lower-case method name (``"adam"``).
    update : callable
        The per-element update ``update(p, g, s, h, i, opts)`` (plain Python).
    coefficients : numba dispatcher
        ``coefficients(hp, t, aux, h)``: per-step host scalars.
    n_coefficients : int
        Length of ``h``.
    hyper : tuple of Hyper
        Public hyperparameters, ``lr`` first, in packing order.
    option_names : tuple of str
        Names of the compile-time flags in ``opts``.
    options : callable
        ``options(values) -> tuple of bool`` from the validated hyperparameters.
    slots : callable
        ``slots(opts) -> tuple of str``: names of the state rows.
    aux_init : tuple of float
        Initial host state (``aux``).
    initial : callable
        ``initial(values) -> float``: the value every state slot starts at.
    cross_check : callable
        Raises ``ValueError`` for invalid combinations of hyperparameters.
    """

    name: str
    update: Callable
    coefficients: Callable
    n_coefficients: int
    hyper: tuple[Hyper, ...]
    option_names: tuple[str, ...] = ()
    options: Callable[[dict], tuple] = lambda values: ()
    slots: Callable[[tuple], tuple[str, ...]] = lambda opts: ()
    aux_init: tuple[float, ...] = ()
    cross_check: Callable[[dict], None] = lambda values: None
    initial: Callable[[dict], float] = lambda values: 0.0
    defaults: dict = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "defaults", {hp.name: hp.default for hp in self.hyper})

    def validate(self, values: dict, base: dict | None = None) -> dict:
        """Validate every hyperparameter in ``values``, and their combination with
        the others taken from ``base`` (default: the defaults)."""
        known = {hp.name: hp for hp in self.hyper if not hp.fixed}
        for key in values:
            if key not in known:
                raise TypeError(
                    f"{self.name} has no hyperparameter {key!r}; allowed: {', '.join(known)}"
                )
        checked = {name: known[name].check(value) for name, value in values.items()}
        self.cross_check({**(self.defaults if base is None else base), **checked})
        return checked

    def pack(self, values: dict, hp: np.ndarray) -> None:
        """Write validated hyperparameters into the float64 vector ``hp``.

        A schedule for ``lr`` is evaluated by the caller each step; its slot is
        left untouched here.
        """
        k = 0
        for spec in self.hyper:
            value = values[spec.name]
            if spec.kind == "betas":
                hp[k], hp[k + 1] = value
            elif not callable(value):
                hp[k] = float(value)
            k += spec.width

    def initial_state(self, values: dict, opts: tuple, n: int, dtype) -> np.ndarray:
        """The ``(k, n)`` state of ``n`` parameters at step 0."""
        return np.full((len(self.slots(opts)), n), self.initial(values), dtype=dtype)

    @property
    def arguments(self) -> tuple[str, ...]:
        """Names of the hyperparameters a user may set (all but the fixed ones)."""
        return tuple(spec.name for spec in self.hyper if not spec.fixed)

    @property
    def n_hyper(self) -> int:
        """Length of the packed hyperparameter vector ``hp``."""
        return sum(spec.width for spec in self.hyper)


def _lr(default: float) -> Hyper:
    return Hyper("lr", default)


def _betas() -> Hyper:
    return Hyper("betas", (0.9, 0.999), "betas")


def _sgd_check(v: dict) -> None:
    if v["nesterov"] and (v["momentum"] <= 0 or v["dampening"] != 0):
        raise ValueError(
            f"nesterov=True requires momentum > 0 and dampening = 0, "
            f"got momentum={v['momentum']!r}, dampening={v['dampening']!r}"
        )


SGD = Rule(
    "sgd",
    sgd_update,
    sgd_coefficients,
    7,
    (
        _lr(1e-3),
        *_common(),
        Hyper("momentum", 0.0),
        Hyper("dampening", 0.0, high=1.0),
        Hyper("nesterov", False, "bool"),
    ),
    ("momentum", "nesterov"),
    lambda v: (v["momentum"] > 0, v["nesterov"]),
    lambda opts: ("momentum_buffer",) if opts[0] else (),
    cross_check=_sgd_check,
)

RMSPROP = Rule(
    "rmsprop",
    rmsprop_update,
    rmsprop_coefficients,
    8,
    (
        _lr(1e-2),
        *_common(),
        Hyper("alpha", 0.99, high=1.0),
        Hyper("eps", 1e-8),
        Hyper("momentum", 0.0),
        Hyper("centered", False, "bool"),
    ),
    ("centered", "momentum"),
    lambda v: (v["centered"], v["momentum"] > 0),
    lambda opts: (
        ("square_avg",)
        + (("grad_avg",) if opts[0] else ())
        + (("momentum_buffer",) if opts[1] else ())
    ),
)

ADAGRAD = Rule(
    "adagrad",
    adagrad_update,
    adagrad_coefficients,
    5,
    (
        _lr(1e-2),
        *_common(),
        Hyper("lr_decay", 0.0),
        Hyper("initial_accumulator_value", 0.0),
        Hyper("eps", 1e-10),
    ),
    slots=lambda opts: ("sum",),
    initial=lambda v: v["initial_accumulator_value"],
)

ADADELTA = Rule(
    "adadelta",
    adadelta_update,
    adadelta_coefficients,
    7,
    (_lr(1.0), *_common(), Hyper("rho", 0.9, high=1.0), Hyper("eps", 1e-6)),
    slots=lambda opts: ("square_avg", "acc_delta"),
)

ADAM = Rule(
    "adam",
    adam_update,
    adam_coefficients,
    10,
    (
        _lr(1e-3),
        *_common(fixed=False),
        _betas(),
        Hyper("eps", 1e-8),
        Hyper("amsgrad", False, "bool"),
    ),
    ("amsgrad",),
    lambda v: (v["amsgrad"],),
    lambda opts: ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if opts[0] else ()),
)

ADAMW = Rule(
    "adamw",
    adam_update,
    adam_coefficients,
    10,
    (
        _lr(1e-3),
        *_common(1e-2, decoupled=True),
        _betas(),
        Hyper("eps", 1e-8),
        Hyper("amsgrad", False, "bool"),
    ),
    ADAM.option_names,
    ADAM.options,
    ADAM.slots,
)

ADAMAX = Rule(
    "adamax",
    adamax_update,
    adamax_coefficients,
    8,
    (_lr(2e-3), *_common(), _betas(), Hyper("eps", 1e-8)),
    slots=lambda opts: ("exp_avg", "exp_inf"),
)

NADAM = Rule(
    "nadam",
    nadam_update,
    nadam_coefficients,
    11,
    (_lr(2e-3), *_common(fixed=False), _betas(), Hyper("eps", 1e-8), Hyper("momentum_decay", 4e-3)),
    slots=lambda opts: ("exp_avg", "exp_avg_sq"),
    aux_init=(1.0,),
)

RADAM = Rule(
    "radam",
    radam_update,
    radam_coefficients,
    10,
    (_lr(1e-3), *_common(fixed=False), _betas(), Hyper("eps", 1e-8)),
    slots=lambda opts: ("exp_avg", "exp_avg_sq"),
)

RULES: dict[str, Rule] = {
    r.name: r for r in (SGD, RMSPROP, ADAGRAD, ADADELTA, ADAM, ADAMW, ADAMAX, NADAM, RADAM)
}


def get_rule(name: str) -> Rule:
    """Look up a rule by (case-insensitive) name.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"method must be a str, got {name!r} of type {type(name).__name__}")
    try:
        return RULES[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown method {name!r}; valid methods: {', '.join(sorted(RULES))}"
        ) from None


# A fingerprint of this file: compiled kernels are cached under names that
# include it, so editing a rule can never load a stale kernel from the cache.
SOURCE_HASH = hashlib.sha1(inspect.getsource(inspect.getmodule(get_rule)).encode()).hexdigest()[:10]
