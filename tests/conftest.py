"""Shared test data: the closed-loop problem, the option combinations, tolerances.

Test modules import the helpers below directly (``from conftest import ...``) and are
parametrised over :data:`COMBOS`, which covers every option of every rule.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from nadam.kernels import cpu
from nadam.optimizers import optimizer_class
from nadam.rules import DECOUPLED, RULES
from nadam.threads import get_threads

settings.register_profile(
    "nadam",
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A long search for when a rule changes: pytest --hypothesis-profile=nadam-long
settings.register_profile("nadam-long", parent=settings.get_profile("nadam"), max_examples=1000)
settings.load_profile("nadam")

#: rule name -> optimizer class (the reference's names), from the registry.
CLASSES = {name: optimizer_class(rule) for name, rule in RULES.items()}
NAMES = tuple(CLASSES)
DTYPES = (np.float64, np.float32)

#: Agreement required with the reference and with torch (ALGORITHMS.md / issue 2).
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}

STEPS = 60


# ---------------------------------------------------------------------------------
# The closed-loop problem
# ---------------------------------------------------------------------------------


def problem(n: int, dtype=np.float64, seed: int = 0):
    """Start point ``x0`` and per-element slopes ``a`` of the test objective, in ``dtype``."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.5, 1.5, n).astype(dtype)
    a = (rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)).astype(dtype)
    return x0, a


def grad(x: np.ndarray, a: np.ndarray, sign: float = 1.0) -> np.ndarray:
    """Gradient of the smooth nonconvex ``f(x) = sum(a * (x + arctan(x)))``.

    ``g = a (x² + 2) / (x² + 1)`` lies between ``a`` and ``2a``: it depends on the iterate
    (closed loop) but never vanishes.  A gradient that tends to zero (a minimum) would make
    Adam-type steps ``lr·g/sqrt(v)`` chaotic once ``v`` is tiny (a rounding difference
    doubles each step), and comparing two chaotic runs to 1e-10 tests nothing.  The slope
    ``a`` has a random sign per element, and weight decay up to 0.1 moves the minima of
    ``f + λ|x|²/2`` beyond ``|x| = 5``, out of reach of 60 steps.

    Only ``+``, ``*`` and ``/``: NumPy, numba and torch round it identically, so a
    difference between two runs comes from the optimizers, never from the gradient.
    ``sign=-1`` gives the gradient of ``-f`` (for ``maximize=True``, which then still
    descends ``f``).
    """
    x2 = x * x
    g = a * (x2 + 2) / (x2 + 1)
    return np.asarray(-g if sign < 0 else g)  # a 0-d array stays an array


def sign_of(kwargs: dict) -> float:
    """-1 for a maximising optimizer (fed the gradient of -f), else 1."""
    return -1.0 if kwargs.get("maximize") else 1.0


def assert_close(actual, desired, rtol: float | None = None, err_msg: str = "") -> None:
    """``actual`` within ``rtol`` of ``desired``, with ``atol = rtol * max|desired|``.

    Elements that cross zero during a run hold only absolute accuracy (a value of 1e-9
    computed as 2e-9 is a 100 % relative error after perfectly good arithmetic), so a pure
    relative test would be meaningless there; the absolute floor is scaled by the array's
    largest magnitude, which keeps the test relative to the problem's scale.
    """
    desired = np.asarray(desired)
    actual = np.asarray(actual)
    if rtol is None:
        rtol = RTOL[desired.dtype]
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


# ---------------------------------------------------------------------------------
# Option combinations
# ---------------------------------------------------------------------------------


def decoupled_name(rule) -> str | None:
    """The name of the rule's decoupled-weight-decay switch, None where it has none."""
    spec = rule.hyper[DECOUPLED]
    return None if spec.fixed else spec.name


def shared_settings(rule) -> tuple:
    """The weight-decay settings a rule's examples are crossed with: none and L2, and
    decoupled where the rule has the option (its default where it has decay by default)."""
    if decoupled_name(rule) is not None:
        return ((0.0, False), (0.1, False), (0.1, True))
    if rule.defaults.get("weight_decay", 0.0) != 0.0:
        return (rule.defaults["weight_decay"], 0.1)
    return (0.0, 0.1)


def _combos() -> list[tuple[str, dict]]:
    """Every example of every rule (``Rule.examples``: each code path), each crossed
    with weight decay and maximize."""
    out: list[tuple[str, dict]] = []
    for name, rule in RULES.items():
        for example in rule.examples:
            for wd, maximize in itertools.product(shared_settings(rule), (False, True)):
                kw = {**example, "maximize": maximize}
                if isinstance(wd, tuple):  # (weight_decay, decoupled)
                    kw["weight_decay"], kw[decoupled_name(rule)] = wd
                else:
                    kw["weight_decay"] = wd
                out.append((name, kw))
    return out


#: (rule name, kwargs) for every option combination.
COMBOS = _combos()


def combo_id(combo) -> str:
    name, kw = combo
    short = {
        "weight_decay": "wd",
        "decoupled_weight_decay": "dec",
        "maximize": "max",
        "initial_accumulator_value": "iav",
        "momentum_decay": "psi",
    }
    parts = []
    for k, v in kw.items():
        if v is False or (k in ("weight_decay",) and v == 0):
            continue
        k = short.get(k, k)
        parts.append(k if v is True else f"{k}={v}")
    return f"{name}[{','.join(parts)}]"


#: Settings of the options every rule shares.  The CPU kernels hold a separate loop for
#: each: with none of them on, and with decoupled weight decay only, they skip the
#: multiply-adds that would be identities.
SHARED = {
    "plain": {"weight_decay": 0.0, "maximize": False},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": False},
    "full": {"weight_decay": 0.1, "maximize": True},
}
_SHARED_KEYS = ("weight_decay", "decoupled_weight_decay", "maximize")


def opts_variants(shared: str = "full") -> list[tuple[str, dict]]:
    """One combo per compiled variant (rule and state-layout options), with the shared
    options set as in ``SHARED[shared]`` ("decoupled": only the rules that have it)."""
    seen, out = set(), []
    for name, kw in COMBOS:
        rule = CLASSES[name].rule
        key = (name, rule.flags({**rule.defaults, **kw}))
        if key in seen:
            continue
        seen.add(key)
        extra = dict(SHARED[shared])
        switch = decoupled_name(rule)
        if "decoupled_weight_decay" in extra:
            del extra["decoupled_weight_decay"]
            if switch is not None:
                extra[switch] = True
            elif name != "adamw":  # (adamw: always decoupled; not an argument)
                continue
        elif switch is not None:
            extra[switch] = False
        shared_keys = (*_SHARED_KEYS, switch)
        out.append((name, {**{k: v for k, v in kw.items() if k not in shared_keys}, **extra}))
    return out


def all_variants() -> list[tuple[str, dict]]:
    """:func:`opts_variants` for every setting of the shared options."""
    return [v for shared in SHARED for v in opts_variants(shared)]


# ---------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------


@pytest.fixture(params=["serial", "parallel"])
def kernel_kind(request, monkeypatch):
    """Forces the optimizer classes onto the serial or the prange kernel."""
    parallel = request.param == "parallel"
    monkeypatch.setattr(cpu, "PARALLEL_THRESHOLD", 0 if parallel else 2**62)
    if parallel and not cpu.choose_parallel(10, get_threads()):
        pytest.skip("numba runs one thread here: the prange kernel is never chosen")
    assert cpu.choose_parallel(10, get_threads()) is parallel
    return request.param


@pytest.fixture(params=DTYPES, ids=["f64", "f32"])
def dtype(request):
    return np.dtype(request.param)
