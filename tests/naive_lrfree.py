"""Naive NumPy references for the learning-rate-free rules, written from the formulas.

``prodigy`` follows ``prodigyopt.Prodigy`` 1.1.2, ``adamw_schedulefree`` and
``sgd_schedulefree`` follow ``schedulefree.AdamWScheduleFree`` / ``SGDScheduleFree`` 1.4.1
(the ``foreach=False`` loop); ``tests/LRFREE_NOTES.md`` is the written-out algorithm.
Nothing here imports torch, the packages or nadam.

Same conventions as ``tests/naive.py``: ``ref(p, g, state, t, **hyper) -> p_new`` over one
flat array, ``state`` a dict (empty before the first step, filled on first use) holding
torch's per-element slot names *and* the packages' group-level scalars under their names
(``d``, ``d_max``, ``d_numerator``, ``k``, ``weight_sum``, ``lr_max``, ...), ``t`` the
step count (1 on the first step).  Arithmetic on arrays stays in the dtype of ``p``:
hyperparameters and per-step scalars are Python floats, which NumPy (NEP 50) casts to the
array's dtype, exactly as torch casts a Python scalar operand to the tensor's dtype.  The
per-step scalars themselves (``d``, ``dlr``, ``ckp1``, ...) are Python floats (float64),
as in the packages; Prodigy's two reductions are taken in the array's dtype and then
turned into Python floats, as ``torch.dot(...).item()`` and ``s.abs().sum().item()`` are.

The order of operations is torch's, operation by operation (``m.mul_(b).add_(g, alpha=c)``
is ``m * b + c * g``, ``addcmul_(g, g, value=c)`` is ``+ (c * g) * g``, ``addcdiv_(m, d,
value=c)`` is ``+ (c * m) / d``, ``lerp_`` switches formula at ``|w| = 0.5``).  torch fuses
some multiply-adds (FMA) and its ``sqrt`` is not always correctly rounded, so agreement is
to a few ulps per step, not bit for bit.

The package's own step counter is used, not ``t``: the schedule-free rules' ``k`` is always
``t - 1``; Prodigy's ``k`` lags when a step is skipped (``sum|s| == 0``, only possible
while every gradient so far has been zero).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DEFAULTS",
    "DIAGNOSTICS",
    "EVAL",
    "REFERENCES",
    "SCALARS",
    "SLOTS",
    "TRAIN",
    "NaiveLRFree",
]


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch's ``start.lerp_(end, weight)`` with a Python-float weight.

    The weight is first cast to the tensor's dtype; for ``|w| < 0.5`` torch computes
    ``start + w (end - start)``, otherwise ``end + (w - 1) (end - start)`` (so ``w = 1``
    gives ``end`` exactly), with ``w - 1`` in the tensor's dtype.  (torch fuses the
    multiply-add; here it is two roundings.)
    """
    w = start.dtype.type(weight)
    diff = end - start
    if abs(w) < 0.5:
        return start + w * diff
    return end + (w - start.dtype.type(1)) * diff


# ---------------------------------------------------------------------------------
# Prodigy
# ---------------------------------------------------------------------------------


def prodigy(
    p,
    g,
    state,
    t,
    *,
    lr,
    betas,
    beta3,
    eps,
    weight_decay,
    decouple,
    use_bias_correction,
    safeguard_warmup,
    d0,
    d_coef,
    growth_rate,
    fsdp_in_use,
    slice_p,
):
    if fsdp_in_use:
        raise NotImplementedError("fsdp_in_use: the package all-reduces through torch.distributed")
    beta1, beta2 = betas
    if beta3 is None:
        beta3 = math.sqrt(beta2)
    if "d" not in state:  # the group's scalars, as the constructor sets them
        state.update(d=d0, d_max=d0, d_numerator=0.0, k=0)
    k = state["k"]
    d = state["d"]
    d_max = state["d_max"]

    # -- host scalars of this step, from the state *before* the step (Python floats)
    if use_bias_correction:
        bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
    else:
        bias_correction = 1
    dlr = d * lr * bias_correction
    d_numerator = state["d_numerator"] * beta3

    # -- coupled weight decay goes into the gradient (torch: grad.add_(p, alpha=decay))
    if weight_decay != 0 and not decouple:
        g = g + weight_decay * p

    if "step" not in state:
        state["step"] = 0
        state["s"] = np.zeros_like(p[::slice_p])
        # An all-zero parameter gets a 0-d zero as p0 (same arithmetic: 0 - p).
        state["p0"] = p[::slice_p].copy() if p.any() else np.zeros((), p.dtype)
        if beta1 > 0:
            state["exp_avg"] = np.zeros_like(p)
        state["exp_avg_sq"] = np.zeros_like(p)

    if lr > 0.0:
        sg = g[::slice_p]
        # Reduction 1: <g, p0 - p> in p's dtype (at p *before* the update), to a float.
        dot = float(np.dot(sg, state["p0"] - p[::slice_p]))
        delta_numerator = 0.0 + (d / d0) * dlr * dot
        # EMAs with the old d.
        if beta1 > 0:
            state["exp_avg"] = state["exp_avg"] * beta1 + (d * (1 - beta1)) * g
        state["exp_avg_sq"] = state["exp_avg_sq"] * beta2 + ((d * d * (1 - beta2)) * g) * g
        alpha = (d / d0) * d if safeguard_warmup else (d / d0) * dlr
        state["s"] = state["s"] * beta3 + alpha * sg
        # Reduction 2: sum |s| of the *updated* s, in p's dtype, to a float.
        d_denom = 0.0 + float(np.sum(np.abs(state["s"])))
    else:  # unreachable through the constructor (lr > 0); the package then skips
        d_denom = 0.0

    if d_denom == 0:  # no progress yet: p, k, step, d* untouched (EMAs already updated)
        return p

    # -- the new d (Python floats)
    global_d_numerator = d_numerator + delta_numerator
    global_d_denom = d_denom
    d_hat = d_coef * global_d_numerator / global_d_denom
    if d == d0:
        d = max(d, d_hat)
    d_max = max(d_max, d_hat)
    d = min(d_max, d * growth_rate)
    state.update(
        d_numerator=global_d_numerator, d_denom=global_d_denom, d=d, d_max=d_max, d_hat=d_hat
    )

    # -- the update: dlr from the old d, eps and the no-momentum step with the new d
    state["step"] += 1
    denom = np.sqrt(state["exp_avg_sq"]) + d * eps
    if weight_decay != 0 and decouple:
        p = p + (-weight_decay * dlr) * p
    if beta1 > 0:
        p = p + ((-dlr) * state["exp_avg"]) / denom
    else:
        p = p + ((-dlr * d) * g) / denom
    state["k"] = k + 1
    return p


# ---------------------------------------------------------------------------------
# Schedule-free
# ---------------------------------------------------------------------------------


def _schedulefree_scalars(state, t, lr, warmup_steps, r, weight_lr_power):
    """The per-step host scalars both schedule-free rules share: (k, lr, ckp1)."""
    if "k" not in state:
        state.update(k=0, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)
    k = state["k"]
    assert k == t - 1, (k, t)
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    lr = lr * sched
    state["scheduled_lr"] = lr
    lr_max = state["lr_max"] = max(lr, state["lr_max"])
    weight = ((k + 1) ** r) * (lr_max**weight_lr_power)
    weight_sum = state["weight_sum"] = state["weight_sum"] + weight
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:  # lr = 0 so far (weight_sum = 0.0)
        ckp1 = 0
    return k, lr, ckp1


def adamw_schedulefree(
    p, g, state, t, *, lr, betas, eps, weight_decay, warmup_steps, r, weight_lr_power
):
    """One step at y = p (train mode); returns the new y."""
    beta1, beta2 = betas
    k, lr, ckp1 = _schedulefree_scalars(state, t, lr, warmup_steps, r, weight_lr_power)
    bias_correction2 = 1 - beta2 ** (k + 1)
    if "z" not in state:
        state["z"] = p.copy()
        state["exp_avg_sq"] = np.zeros_like(p)
    y, z = p, state["z"]
    v = state["exp_avg_sq"] * beta2 + ((1 - beta2) * g) * g
    state["exp_avg_sq"] = v
    denom = np.sqrt(v / bias_correction2) + eps
    gn = g / denom
    if weight_decay != 0:  # weight decay at y, added to the *normalised* gradient
        gn = gn + weight_decay * y
    y = _lerp(y, z, ckp1)
    y = y + (lr * (beta1 * (1 - ckp1) - 1)) * gn
    state["z"] = z - lr * gn
    state["k"] = k + 1
    return y


def sgd_schedulefree(
    p, g, state, t, *, lr, momentum, weight_decay, warmup_steps, r, weight_lr_power
):
    """One step at y = p (train mode); returns the new y."""
    k, lr, ckp1 = _schedulefree_scalars(state, t, lr, warmup_steps, r, weight_lr_power)
    if "z" not in state:
        state["z"] = p.copy()
    y, z = p, state["z"]
    if weight_decay != 0:  # weight decay at y
        g = g + weight_decay * y
    y = _lerp(y, z, ckp1)
    y = y + (lr * (momentum * (1 - ckp1) - 1)) * g
    state["z"] = z - lr * g
    state["k"] = k + 1
    return y


def _beta(hyper) -> float:
    return hyper["betas"][0] if "betas" in hyper else hyper["momentum"]


def schedulefree_eval(p, state, **hyper):
    """train -> eval: y to x = lerp(y, z, 1 - 1/beta1); a no-op before the first step."""
    if "z" not in state:
        return p
    return _lerp(p, state["z"], 1 - 1 / _beta(hyper))


def schedulefree_train(p, state, **hyper):
    """eval -> train: x to y = lerp(x, z, 1 - beta1); a no-op before the first step."""
    if "z" not in state:
        return p
    return _lerp(p, state["z"], 1 - _beta(hyper))


adamw_schedulefree_eval = sgd_schedulefree_eval = schedulefree_eval
adamw_schedulefree_train = sgd_schedulefree_train = schedulefree_train


#: rule name -> naive reference.
REFERENCES = {
    "prodigy": prodigy,
    "adamw_schedulefree": adamw_schedulefree,
    "sgd_schedulefree": sgd_schedulefree,
}
#: rule name -> train->eval / eval->train switch (schedule-free rules only).
EVAL = {"adamw_schedulefree": adamw_schedulefree_eval, "sgd_schedulefree": sgd_schedulefree_eval}
TRAIN = {
    "adamw_schedulefree": adamw_schedulefree_train,
    "sgd_schedulefree": sgd_schedulefree_train,
}

#: rule name -> the packages' constructor defaults (every hyperparameter but foreach).
DEFAULTS = {
    "prodigy": dict(
        lr=1.0,
        betas=(0.9, 0.999),
        beta3=None,
        eps=1e-8,
        weight_decay=0,
        decouple=True,
        use_bias_correction=False,
        safeguard_warmup=False,
        d0=1e-6,
        d_coef=1.0,
        growth_rate=float("inf"),
        fsdp_in_use=False,
        slice_p=1,
    ),
    "adamw_schedulefree": dict(
        lr=0.0025,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        warmup_steps=0,
        r=0.0,
        weight_lr_power=2.0,
    ),
    "sgd_schedulefree": dict(
        lr=1.0, momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0, weight_lr_power=2
    ),
}

#: torch's per-element state slot names (Prodigy's exp_avg only when betas[0] > 0; its s
#: and p0 hold every slice_p-th element, p0 is 0-d when p was all zero at the first step).
SLOTS = {
    "prodigy": {"s", "p0", "exp_avg", "exp_avg_sq"},
    "adamw_schedulefree": {"z", "exp_avg_sq"},
    "sgd_schedulefree": {"z"},
}

#: The scalars that are state: what a step reads from the previous one (param_groups
#: entries, plus Prodigy's per-parameter ``step``, which nothing reads).  Restoring these
#: and the slots continues a run exactly.
SCALARS = {
    "prodigy": ("d", "d_max", "d_numerator", "k"),
    "adamw_schedulefree": ("k", "weight_sum", "lr_max"),
    "sgd_schedulefree": ("k", "weight_sum", "lr_max"),
}
#: Scalars the packages also record but never read back (logging).
DIAGNOSTICS = {
    "prodigy": ("d_denom", "d_hat", "step"),
    "adamw_schedulefree": ("scheduled_lr",),
    "sgd_schedulefree": ("scheduled_lr",),
}


class NaiveLRFree:
    """Drives a reference like the package's optimizer, on its own copy of the parameters.

    The schedule-free rules start in eval mode and refuse to step there, like the
    packages: call :meth:`train` first.  ``lr`` may be a callable ``t -> lr``.
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
        self.schedulefree = name in EVAL
        self.train_mode = False

    def _hyper(self) -> dict:
        hyper = dict(self.hyper)
        if callable(hyper["lr"]):
            hyper["lr"] = float(hyper["lr"](self.t))
        for key, value in hyper.items():
            if isinstance(value, (np.floating, np.integer)):
                hyper[key] = value.item()  # keep NumPy scalars from promoting float32
        if "betas" in hyper:
            hyper["betas"] = tuple(float(b) for b in hyper["betas"])
        return hyper

    def step(self, g: np.ndarray) -> None:
        assert g.dtype == self.p.dtype
        if self.schedulefree and not self.train_mode:
            raise RuntimeError("not in train mode: call train() before step()")
        self.t += 1
        shape = self.p.shape
        p = REFERENCES[self.name](
            self.p.reshape(-1), g.reshape(-1), self.state, self.t, **self._hyper()
        )
        assert p.dtype == self.p.dtype, (p.dtype, self.p.dtype)
        self.p = p.reshape(shape)

    def eval(self) -> None:
        if self.schedulefree and self.train_mode:
            self.p = EVAL[self.name](self.p, self.state, **self._hyper())
        self.train_mode = False

    def train(self) -> None:
        if self.schedulefree and not self.train_mode:
            self.p = TRAIN[self.name](self.p, self.state, **self._hyper())
        self.train_mode = True

    def load(self, p, group: dict, slots: dict, train_mode: bool | None = None) -> None:
        """Continues from a package checkpoint: the parameter, the group's scalars (only
        :data:`SCALARS` are taken) and the per-element slots (anything array-like)."""
        self.p = np.array(p, copy=True)
        self.state = {key: group[key] for key in SCALARS[self.name]}
        for key, value in slots.items():
            if key == "step":
                self.state[key] = int(value)
            else:
                self.state[key] = np.array(value, dtype=self.p.dtype, copy=True)
        self.t = self.state["k"]  # (Prodigy's k lags t after skipped steps; it reads k)
        if self.schedulefree:
            self.train_mode = bool(group["train_mode"]) if train_mode is None else train_mode

    @property
    def arrays(self) -> dict:
        """The per-element state arrays."""
        return {k: v for k, v in self.state.items() if isinstance(v, np.ndarray)}

    @property
    def scalars(self) -> dict:
        """The scalar state (and diagnostics) recorded so far."""
        return {k: v for k, v in self.state.items() if not isinstance(v, np.ndarray)}
