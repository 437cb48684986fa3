"""Naive NumPy references for every update rule, written from the formulas.

Each reference is a plain function ``ref(p, g, state, t, **hyper) -> p_new`` over whole
arrays: ``state`` is a dict (empty before the first step, filled on first use, with
torch's slot names), ``t`` the step count (1 on the first step).  Nothing here imports
nadam: the formulas come from ``../shared/ALGORITHMS.md`` and the torch.optim docs, the
bias corrections are recomputed from scratch every step and the state is a dict of
separate arrays rather than one ``(k, n)`` block.

Arithmetic stays in the dtype of ``p``: hyperparameters and per-step scalars are Python
floats, which NumPy (NEP 50) casts to the array's dtype, so float32 in, float32 math.

:data:`REFERENCES` is the table the tests are parametrised over (as numbagg's conftest),
:data:`DEFAULTS` the defaults of each rule (torch's), :class:`NaiveOptimizer` a small
driver with the optimizer classes' interface.
"""

from __future__ import annotations

import math

import naive_lrfree
import numpy as np

__all__ = ["DEFAULTS", "REFERENCES", "NaiveOptimizer"]


def _zeros(p, state, *names, fill=0.0):
    for name in names:
        if name not in state:
            state[name] = np.full_like(p, fill)


def _grad(p, g, weight_decay, maximize):
    """Shared options: sign flip first, then L2 weight decay."""
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    return g


def sgd(p, g, state, t, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    g = _grad(p, g, weight_decay, maximize)
    if momentum != 0:
        if "momentum_buffer" not in state:
            buf = g.copy()  # first step: b = g, no dampening
        else:
            buf = momentum * state["momentum_buffer"] + (1 - dampening) * g
        state["momentum_buffer"] = buf
        g = g + momentum * buf if nesterov else buf
    return p - lr * g


def rmsprop(p, g, state, t, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    g = _grad(p, g, weight_decay, maximize)
    _zeros(p, state, "square_avg")
    v = alpha * state["square_avg"] + (1 - alpha) * g**2
    state["square_avg"] = v
    if centered:
        _zeros(p, state, "grad_avg")
        gbar = alpha * state["grad_avg"] + (1 - alpha) * g
        state["grad_avg"] = gbar
        v = v - gbar * gbar
    a = np.sqrt(v) + eps
    if momentum > 0:
        _zeros(p, state, "momentum_buffer")
        b = momentum * state["momentum_buffer"] + g / a
        state["momentum_buffer"] = b
        return p - lr * b
    return p - lr * g / a


def adagrad(
    p, g, state, t, *, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
):
    g = _grad(p, g, weight_decay, maximize)
    _zeros(p, state, "sum", fill=initial_accumulator_value)
    clr = lr / (1 + (t - 1) * lr_decay)
    s = state["sum"] + g**2
    state["sum"] = s
    return p - clr * g / (np.sqrt(s) + eps)


def adadelta(p, g, state, t, *, lr, rho, eps, weight_decay, maximize):
    g = _grad(p, g, weight_decay, maximize)
    _zeros(p, state, "square_avg", "acc_delta")
    v = rho * state["square_avg"] + (1 - rho) * g**2
    delta = np.sqrt(state["acc_delta"] + eps) / np.sqrt(v + eps) * g
    state["square_avg"] = v
    state["acc_delta"] = rho * state["acc_delta"] + (1 - rho) * delta**2
    return p - lr * delta


def _decay(p, lr, weight_decay, decoupled):
    """Decoupled weight decay: p <- (1 - lr*wd) p before the update."""
    if decoupled and weight_decay != 0:
        return p * (1 - lr * weight_decay), 0.0
    return p, weight_decay


def adam(
    p, g, state, t, *, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay
):
    beta1, beta2 = betas
    g = -g if maximize else g
    p, weight_decay = _decay(p, lr, weight_decay, decoupled_weight_decay)
    g = _grad(p, g, weight_decay, False)
    _zeros(p, state, "exp_avg", "exp_avg_sq")
    m = beta1 * state["exp_avg"] + (1 - beta1) * g
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * g**2
    state["exp_avg"], state["exp_avg_sq"] = m, v
    if amsgrad:
        _zeros(p, state, "max_exp_avg_sq")
        v = np.maximum(state["max_exp_avg_sq"], v)
        state["max_exp_avg_sq"] = v
    bc1 = 1 - beta1**t
    bc2 = 1 - beta2**t
    return p - (lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + eps)


def adamw(p, g, state, t, **hyper):
    return adam(p, g, state, t, decoupled_weight_decay=True, **hyper)


def adamax(p, g, state, t, *, lr, betas, eps, weight_decay, maximize):
    beta1, beta2 = betas
    g = _grad(p, g, weight_decay, maximize)
    _zeros(p, state, "exp_avg", "exp_inf")
    m = beta1 * state["exp_avg"] + (1 - beta1) * g
    u = np.maximum(beta2 * state["exp_inf"], np.abs(g) + eps)
    state["exp_avg"], state["exp_inf"] = m, u
    return p - lr / (1 - beta1**t) * m / u


def nadam(
    p,
    g,
    state,
    t,
    *,
    lr,
    betas,
    eps,
    weight_decay,
    momentum_decay,
    maximize,
    decoupled_weight_decay,
):
    beta1, beta2 = betas
    g = -g if maximize else g
    p, weight_decay = _decay(p, lr, weight_decay, decoupled_weight_decay)
    g = _grad(p, g, weight_decay, False)
    _zeros(p, state, "exp_avg", "exp_avg_sq")
    # The momentum schedule and its running product (a host scalar, float64).
    mu = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    prod = state.get("mu_product", 1.0) * mu
    state["mu_product"] = prod
    m = beta1 * state["exp_avg"] + (1 - beta1) * g
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * g**2
    state["exp_avg"], state["exp_avg_sq"] = m, v
    d = np.sqrt(v / (1 - beta2**t)) + eps
    return p - lr * (1 - mu) / (1 - prod) * g / d - lr * mu_next / (1 - prod * mu_next) * m / d


def radam(p, g, state, t, *, lr, betas, eps, weight_decay, maximize, decoupled_weight_decay):
    beta1, beta2 = betas
    g = -g if maximize else g
    p, weight_decay = _decay(p, lr, weight_decay, decoupled_weight_decay)
    g = _grad(p, g, weight_decay, False)
    _zeros(p, state, "exp_avg", "exp_avg_sq")
    m = beta1 * state["exp_avg"] + (1 - beta1) * g
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * g**2
    state["exp_avg"], state["exp_avg_sq"] = m, v
    bc1 = 1 - beta1**t
    bc2 = 1 - beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / bc2
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return p - (lr / bc1) * m * r * math.sqrt(bc2) / (np.sqrt(v) + eps)
    return p - (lr / bc1) * m


def adam_distance(
    p,
    g,
    state,
    t,
    *,
    lr,
    betas,
    eps,
    weight_decay,
    amsgrad,
    r_eps,
    maximize,
    decoupled_weight_decay,
):
    """Adam whose step is lr times the distance travelled (docs/tuning-free.md): r is
    the largest |p_s - p_0| over the iterates so far, at least r_eps |p_0| (r_eps where
    p_0 = 0); eps None is the square root of the dtype's smallest normal number."""
    if eps is None:
        eps = np.sqrt(np.finfo(p.dtype).tiny)
    if "origin" not in state:
        state["origin"] = p.copy()
        state["distance"] = np.zeros_like(p)
        state["k"] = 0
    p0 = state["origin"]
    r = np.maximum(state["distance"], r_eps * np.where(p0 == 0, 1.0, np.abs(p0)))
    # Adam's step with lr * r (an array) as the step size, k counting the bias corrections.
    state["k"] += 1
    k = state["k"]
    beta1, beta2 = betas
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    _zeros(p, state, "exp_avg", "exp_avg_sq")
    m = beta1 * state["exp_avg"] + (1 - beta1) * g
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * g**2
    state["exp_avg"], state["exp_avg_sq"] = m, v
    if amsgrad:
        _zeros(p, state, "max_exp_avg_sq")
        v = np.maximum(state["max_exp_avg_sq"], v)
        state["max_exp_avg_sq"] = v
    new = p - (lr / (1 - beta1**k)) * r * m / (np.sqrt(v) / math.sqrt(1 - beta2**k) + eps)
    state["distance"] = np.maximum(r, np.abs(new - p0))
    return new


def _maximizing(reference):
    """A reference of tests/naive_lrfree.py (the packages' hyperparameters only) with
    nadam's shared ``maximize`` (the sign flip comes first, as in every rule)."""

    def step(p, g, state, t, *, maximize, **hyper):
        extra = {"fsdp_in_use": False, "slice_p": 1} if reference is naive_lrfree.prodigy else {}
        return reference(p, -g if maximize else g, state, t, **hyper, **extra)

    return step


#: rule name -> naive reference.
REFERENCES = {
    "sgd": sgd,
    "rmsprop": rmsprop,
    "adagrad": adagrad,
    "adadelta": adadelta,
    "adam": adam,
    "adamw": adamw,
    "adamax": adamax,
    "nadam": nadam,
    "radam": radam,
    "prodigy": _maximizing(naive_lrfree.prodigy),
    "adamw_schedulefree": _maximizing(naive_lrfree.adamw_schedulefree),
    "sgd_schedulefree": _maximizing(naive_lrfree.sgd_schedulefree),
    "adam_distance": adam_distance,
}

#: train -> eval and eval -> train of the schedule-free rules (p, state, **hyper) -> p.
EVAL, TRAIN = naive_lrfree.EVAL, naive_lrfree.TRAIN

_ADAM = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False)
_NOT_OFFERED = ("fsdp_in_use", "slice_p")

#: rule name -> torch.optim's defaults (every public hyperparameter).
DEFAULTS = {
    "sgd": dict(
        lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False
    ),
    "rmsprop": dict(
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        maximize=False,
    ),
    "adagrad": dict(
        lr=1e-2,
        lr_decay=0.0,
        weight_decay=0.0,
        initial_accumulator_value=0.0,
        eps=1e-10,
        maximize=False,
    ),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    "adam": dict(lr=1e-3, **_ADAM, amsgrad=False, decoupled_weight_decay=False),
    "adamw": dict(lr=1e-3, **{**_ADAM, "weight_decay": 1e-2}, amsgrad=False),
    "adamax": dict(lr=2e-3, **_ADAM),
    "nadam": dict(lr=2e-3, **_ADAM, momentum_decay=4e-3, decoupled_weight_decay=False),
    "radam": dict(lr=1e-3, **_ADAM, decoupled_weight_decay=False),
    "adam_distance": dict(
        lr=0.1, **{**_ADAM, "eps": None}, amsgrad=False, r_eps=1e-6, decoupled_weight_decay=False
    ),
    # The packages' defaults, less what nadam does not offer (fsdp_in_use, slice_p).
    **{
        name: {
            **{k: v for k, v in naive_lrfree.DEFAULTS[name].items() if k not in _NOT_OFFERED},
            "maximize": False,
        }
        for name in naive_lrfree.DEFAULTS
    },
}

#: torch's state slot names of each rule (with every option that adds a slot).
SLOTS = {
    "sgd": {"momentum_buffer"},
    "rmsprop": {"square_avg", "grad_avg", "momentum_buffer"},
    "adagrad": {"sum"},
    "adadelta": {"square_avg", "acc_delta"},
    "adam": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "adamw": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "adamax": {"exp_avg", "exp_inf"},
    "nadam": {"exp_avg", "exp_avg_sq"},
    "radam": {"exp_avg", "exp_avg_sq"},
    **naive_lrfree.SLOTS,
    "adam_distance": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "distance", "origin"},
}


class NaiveOptimizer:
    """Drives a reference like an optimizer class, on its own copy of the parameters.

    ``lr`` may be a callable ``t -> lr``; hyperparameters may be changed between steps
    through :attr:`hyper`.
    """

    def __init__(self, name: str, params: np.ndarray, **hyper):
        unknown = set(hyper) - set(DEFAULTS[name])
        if unknown:
            raise TypeError(f"unknown hyperparameters for {name}: {unknown}")
        self.name = name
        self.p = np.array(params, copy=True)
        self.hyper = {**DEFAULTS[name], **hyper}
        self.state: dict = {}
        self.t = 0

    def step(self, g: np.ndarray) -> None:
        assert g.dtype == self.p.dtype
        self.t += 1
        hyper = dict(self.hyper)
        if callable(hyper["lr"]):
            hyper["lr"] = float(hyper["lr"](self.t))
        for key, value in hyper.items():
            if isinstance(value, (np.floating, np.integer)):
                hyper[key] = float(value)  # keep NumPy scalars from promoting float32
        hyper["betas"] = tuple(float(b) for b in hyper.get("betas", ()))
        if not hyper["betas"]:
            del hyper["betas"]
        shape = self.p.shape
        p = REFERENCES[self.name](self.p.reshape(-1), g.reshape(-1), self.state, self.t, **hyper)
        assert p.dtype == self.p.dtype, (p.dtype, self.p.dtype)
        self.p = p.reshape(shape)

    @property
    def arrays(self) -> dict:
        """The state arrays (scalars such as NAdam's mu_product left out)."""
        return {k: v for k, v in self.state.items() if isinstance(v, np.ndarray)}
