"""Every optimizer against its reference implementation: torch.optim's single-tensor
(for-loop) path, prodigyopt, schedulefree (foreach=False); the class named by each
rule's ``reference`` in the registry."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest
from conftest import (
    CLASSES,
    COMBOS,
    NAMES,
    STEPS,
    assert_close,
    combo_id,
    grad,
    opts_variants,
    problem,
    sign_of,
)
from naive import DEFAULTS

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch


def _referenced(name: str) -> bool:
    # A rule of nadam's own has no reference implementation (tests/naive.py tests it).
    return bool(CLASSES[name].rule.reference)


REFERENCED = tuple(filter(_referenced, NAMES))


def reference_class(name: str):
    """The reference implementation's class, or a skip when its package is missing."""
    module, _, attr = CLASSES[name].rule.reference.rpartition(".")
    return getattr(pytest.importorskip(module), attr)


@pytest.fixture
def torch_dtype(dtype):
    """torch's default dtype set to the case's dtype, restored afterwards.

    NAdam keeps its momentum product in a tensor of the default dtype, so a float64 case
    needs a float64 default to be the float64 algorithm.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    yield
    torch.set_default_dtype(old)


class TorchRun:
    """One reference optimizer on one parameter tensor, fed NumPy gradients.

    nadam gives every rule ``maximize``; a reference without it is fed the negated
    gradient instead, which is what maximize does.  A schedule-free reference is put in
    train mode first, as its documentation asks."""

    def __init__(self, name: str, x0: np.ndarray, **kw):
        self.param = torch.nn.Parameter(torch.from_numpy(x0.copy()))
        cls = reference_class(name)
        accepted = inspect.signature(cls).parameters
        self.flip = kw.get("maximize", False) and "maximize" not in accepted
        kw = {k: v for k, v in kw.items() if k in accepted}
        if "foreach" in accepted:
            kw["foreach"] = False
        self.opt = cls([self.param], **kw)
        if hasattr(self.opt, "train"):
            self.opt.train()

    @property
    def x(self) -> np.ndarray:
        return self.param.detach().numpy()

    def step(self, g: np.ndarray, lr: float | None = None) -> None:
        if lr is not None:
            self.opt.param_groups[0]["lr"] = lr
        self.param.grad = torch.from_numpy(-g if self.flip else g.copy())
        self.opt.step()

    @property
    def state(self) -> dict:
        skip = ("step", "mu_product")
        st = self.opt.state[self.param]
        return {
            k: v.numpy() for k, v in st.items() if k not in skip and isinstance(v, torch.Tensor)
        }


def assert_same_state(opt, ref: TorchRun) -> None:
    assert set(opt.state) == set(ref.state), "state slot names differ from the reference's"
    rtol = None
    if opt.rule.accumulate is not None and opt.params.dtype == np.float32:
        # Prodigy's sums are float32 reductions whose order is the implementation's: ~1e-7
        # relative noise in d each step, which its state carries unnormalised (m ~ d·g,
        # v ~ d²g²) while the iterates do not (tests/LRFREE_NOTES.md, pitfall 6).
        rtol = 1e-4
    for slot, value in ref.state.items():
        assert_close(opt.state[slot], value, rtol, err_msg=f"state {slot!r}")


@pytest.mark.parametrize("combo", [c for c in COMBOS if _referenced(c[0])], ids=combo_id)
def test_matches_torch(combo, dtype, torch_dtype):
    """Same kwargs as torch.optim.<Class>(foreach=False): params agree after every one of
    60 closed-loop steps, and the state at the end."""
    name, kw = combo
    x0, a = problem(129, dtype)
    sign = sign_of(kw)
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    ref = TorchRun(name, x0, **kw)
    for t in range(1, STEPS + 1):
        opt.step(grad(x, a, sign))
        ref.step(grad(ref.x, a, sign))
        assert_close(x, ref.x, err_msg=f"params after step {t}")
    assert ref.x.dtype == x.dtype == dtype
    assert_same_state(opt, ref)
    assert np.max(np.abs(x - x0)) > 0.01  # the run went somewhere


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "threaded"])
def test_radam_unrectified_steps_ignore_an_overflowed_square(dtype, torch_dtype, parallel):
    """A gradient whose square overflows (v = inf): torch's first steps (rho_t <= 5) do
    not read v, and nadam's wrote 0 * sqrt(inf) = NaN; the later steps divide by
    sqrt(inf), moving nothing, in both."""
    big = 1e155 if dtype == np.float64 else 2e19
    n = 2 * 2**16 if parallel else 5  # the threaded kernel from PARALLEL_THRESHOLD up
    x0 = np.linspace(-1.0, 1.0, n).astype(dtype)
    g = np.full(n, big, dtype)
    g[::2] = 1.0  # beside ordinary elements
    x = x0.copy()
    opt = CLASSES["radam"](x)
    ref = TorchRun("radam", x0)
    for t in range(1, 9):
        opt.step(g)
        ref.step(g)
        assert np.isfinite(x).all(), f"step {t}"
        assert_close(x, ref.x, err_msg=f"params after step {t}")


@pytest.mark.parametrize("variant", [v for v in opts_variants() if _referenced(v[0])], ids=combo_id)
def test_state_dict_pickle_round_trip_mid_run(variant, dtype, torch_dtype):
    """state_dict -> pickle -> a new optimizer (built with another lr) on the same array ->
    load_state_dict continues: it keeps matching torch, and matches an uninterrupted run bit
    for bit."""
    name, kw = variant
    x0, a = problem(77, dtype)
    sign = sign_of(kw)
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    ref = TorchRun(name, x0, **kw)
    straight = x0.copy()
    uninterrupted = CLASSES[name](straight, **kw)
    for t in range(1, STEPS + 1):
        if t == 24:
            blob = pickle.dumps(opt.state_dict())
            opt = CLASSES[name](x, **{**kw, "lr": 0.123})
            opt.load_state_dict(pickle.loads(blob))
            assert opt.lr == kw.get("lr", DEFAULTS[name]["lr"]) and opt.t == 23
        opt.step(grad(x, a, sign))
        uninterrupted.step(grad(straight, a, sign))
        ref.step(grad(ref.x, a, sign))
        assert_close(x, ref.x, err_msg=f"params after step {t}")
    assert np.array_equal(x, straight)
    for slot, row in uninterrupted.state.items():
        assert np.array_equal(opt.state[slot], row), slot
    assert_same_state(opt, ref)


def _schedule(t: int) -> float:
    return 0.03 * 0.96**t + 0.002 * (t % 3)


@pytest.mark.parametrize("name", REFERENCED)
def test_lr_schedule_matches_torch(name, dtype, torch_dtype):
    """lr as a callable t -> lr matches torch with param_groups[0]['lr'] set each step."""
    kw = {"lr_decay": 0.05} if name == "adagrad" else {}
    if name in ("adam", "nadam", "radam"):
        kw.update(weight_decay=0.1, decoupled_weight_decay=True)  # lr enters the decay
    x0, a = problem(50, dtype)
    x = x0.copy()
    scale = 30.0 if name == "adadelta" else 1.0
    opt = CLASSES[name](x, lr=lambda t: scale * _schedule(t), **kw)
    ref = TorchRun(name, x0, lr=scale * _schedule(1), **kw)
    for t in range(1, STEPS + 1):
        opt.step(grad(x, a))
        ref.step(grad(ref.x, a), lr=scale * _schedule(t))
        assert_close(x, ref.x, err_msg=f"params after step {t}")
    assert_same_state(opt, ref)


@pytest.mark.parametrize("name", REFERENCED)
def test_defaults_match_torch(name):
    """Every class has its reference's name, hyperparameter names and defaults (and so
    does the naive reference's table)."""
    cls = reference_class(name)
    t = cls([torch.nn.Parameter(torch.zeros(2))])
    opt = CLASSES[name](np.zeros(2))
    assert type(opt).__name__ == cls.__name__
    for key, value in DEFAULTS[name].items():
        assert getattr(opt, key) == value, key
        if key in t.defaults:  # (maximize: nadam's own, where the reference has none)
            assert t.defaults[key] == value, key
