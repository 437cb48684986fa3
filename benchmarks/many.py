"""Many small fits at once: ``nadam.minimize_many`` against its peers.

For each model (an exponential decay ``a e^{-k t} + c`` on 40 points; Gpufit's 2-D
Gaussian, 5 parameters on a 7x7 pixel grid), ``--fits`` noisy problems are solved by

* ``minimize_many``, Adam with a fixed step size and ``--steps`` steps (``gtol=0``:
  every fit takes every step), with three objectives: ``@njit`` with ``np.exp``;
  ``@njit`` with :func:`nadam.vmath.exp` and ``fastmath={"reassoc"}``, a loop LLVM
  vectorises (numba's pip wheels have no vector ``exp``); vectorised NumPy;
* ``jax.vmap`` of ``optax.adam`` in a jitted ``lax.fori_loop`` of the same steps
  (float64, the same objective);
* a Python loop of ``nadam.minimize`` with the same options, ``@njit`` objective and
  NumPy objective (on the first ``--loop-fits`` problems: fits per second scale);
* ``minimize_many`` with no options (the tuning-free defaults: each fit stops by
  itself), and a loop of ``scipy.optimize.curve_fit`` (Levenberg-Marquardt), which
  gives each fit's optimum.

All contenders are warm (compiled once before timing) and run in turn, interleaved,
``--repeat`` times.  Printed: fits per second (best and mean of the repeats), the
speed-up of ``minimize_many`` over each, and the accuracy: the share of fits whose
loss is within 1e-6 (relative) of curve_fit's optimum.

    python benchmarks/many.py                     # ~3 minutes on 2 cores
    python benchmarks/many.py --fits 20000 --models decay
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy.optimize import curve_fit

import nadam
from nadam import vmath

# -- the models ------------------------------------------------------------------------

T = np.linspace(0.0, 4.0, 40)
GRID = np.arange(7.0)
GX, GY = (a.ravel() for a in np.meshgrid(GRID, GRID))


def decay_objective(exp, **jit):
    """The decay's ``@njit`` objective with the exponential ``exp`` (``np.exp``, or
    ``nadam.vmath.exp`` with ``fastmath={"reassoc"}``: vectorised).  Not cached: numba's
    cache keys a closure on its variables but not on ``fastmath``, so two objectives
    that differ only in it would load each other's code."""

    @njit(**jit)
    def decay(p, t, y):
        a, k, c = p[0], p[1], p[2]
        f = g0 = g1 = g2 = 0.0
        m = t.shape[0]
        for i in range(m):
            e = exp(-k * t[i])
            r = a * e + c - y[i]
            f += r * r
            g0 += r * e
            g1 -= r * a * t[i] * e
            g2 += r
        g = np.empty(3)
        g[0], g[1], g[2] = 2 * g0 / m, 2 * g1 / m, 2 * g2 / m
        return f / m, g

    return decay


def decay_numpy(p, t, y):
    e = np.exp(-p[1] * t)
    r = p[0] * e + p[2] - y
    g = np.array([r @ e, -(r @ (p[0] * t * e)), r.sum()]) * (2 / len(t))
    return r @ r / len(t), g


def decay_rows(X, t, Y):
    a, k, c = X[:, :1], X[:, 1:2], X[:, 2:]
    e = np.exp(-k * t)
    r = a * e + c - Y
    G = np.stack([(r * e).sum(1), -(r * a * t * e).sum(1), r.sum(1)], axis=1)
    return (r * r).sum(1) / len(t), G * (2 / len(t))


def decay_model(t, a, k, c):
    return a * np.exp(-k * t) + c


def gauss_objective(exp, **jit):
    """The 2-D Gaussian's ``@njit`` objective with the exponential ``exp`` (as
    :func:`decay_objective`)."""

    @njit(**jit)
    def gauss(p, gx, gy, z):
        a, x0, y0, s, b = p[0], p[1], p[2], p[3], p[4]
        f = g0 = g1 = g2 = g3 = g4 = 0.0
        m = gx.shape[0]
        inv = 1.0 / (s * s)
        for i in range(m):
            dx, dy = gx[i] - x0, gy[i] - y0
            e = exp(-0.5 * (dx * dx + dy * dy) * inv)
            r = a * e + b - z[i]
            f += r * r
            g0 += r * e
            g1 += r * a * e * dx * inv
            g2 += r * a * e * dy * inv
            g3 += r * a * e * (dx * dx + dy * dy) * inv / s
            g4 += r
        g = np.empty(5)
        g[0], g[1], g[2], g[3], g[4] = 2 * g0 / m, 2 * g1 / m, 2 * g2 / m, 2 * g3 / m, 2 * g4 / m
        return f / m, g

    return gauss


def gauss_numpy(p, gx, gy, z):
    a, x0, y0, s, b = p
    dx, dy = gx - x0, gy - y0
    d2 = dx * dx + dy * dy
    e = np.exp(-0.5 * d2 / (s * s))
    r = a * e + b - z
    ae = r * a * e / (s * s)
    g = np.array([r @ e, ae @ dx, ae @ dy, ae @ d2 / s, r.sum()]) * (2 / len(gx))
    return r @ r / len(gx), g


def gauss_rows(X, gx, gy, Z):
    a, x0, y0, s, b = (X[:, i : i + 1] for i in range(5))
    dx, dy = gx - x0, gy - y0
    d2 = dx * dx + dy * dy
    e = np.exp(-0.5 * d2 / (s * s))
    r = a * e + b - Z
    ae = r * a * e / (s * s)
    G = np.stack(
        [(r * e).sum(1), (ae * dx).sum(1), (ae * dy).sum(1), (ae * d2).sum(1) / s[:, 0], r.sum(1)],
        axis=1,
    )
    return (r * r).sum(1) / len(gx), G * (2 / len(gx))


def gauss_model(xy, a, x0, y0, s, b):
    return a * np.exp(-0.5 * ((xy[0] - x0) ** 2 + (xy[1] - y0) ** 2) / s**2) + b


@dataclass
class Model:
    name: str
    objective: Callable  # (exp, **jit) -> the @njit objective
    numpy: Callable
    rows: Callable
    model: Callable
    shared: tuple
    make: Callable[[int, np.random.Generator], tuple]  # -> truth, data, x0
    lr: float
    njit: Callable = field(init=False)  # with np.exp
    vectorised: Callable = field(init=False)  # with nadam.vmath.exp, sums reordered

    def __post_init__(self):
        self.njit = self.objective(np.exp)
        self.vectorised = self.objective(vmath.exp, fastmath={"reassoc"})


def make_decay(n, rng):
    truth = np.column_stack(
        [rng.uniform(1, 3, n), rng.uniform(0.5, 2, n), rng.uniform(-0.5, 0.5, n)]
    )
    y = (
        truth[:, :1] * np.exp(-truth[:, 1:2] * T)
        + truth[:, 2:]
        + 0.02 * rng.normal(size=(n, T.size))
    )
    return truth, y, np.tile([1.0, 1.0, 0.0], (n, 1))


def make_gauss(n, rng):
    truth = np.column_stack(
        [
            rng.uniform(50, 150, n),
            rng.uniform(2.5, 3.5, n),
            rng.uniform(2.5, 3.5, n),
            rng.uniform(1.2, 1.8, n),
            rng.uniform(5, 15, n),
        ]
    )
    z = np.stack([gauss_model((GX, GY), *p) for p in truth]) + rng.normal(size=(n, GX.size))
    start = np.column_stack(
        [z.max(1) - z.min(1), np.full(n, 3.0), np.full(n, 3.0), np.full(n, 1.5), z.min(1)]
    )
    return truth, z, start


MODELS = {
    "decay": Model(
        "exponential decay (3 parameters, 40 points)",
        decay_objective,
        decay_numpy,
        decay_rows,
        decay_model,
        (T,),
        make_decay,
        0.01,
    ),
    "gauss": Model(
        "2-D Gaussian (5 parameters, 7x7 pixels)",
        gauss_objective,
        gauss_numpy,
        gauss_rows,
        gauss_model,
        (GX, GY),
        make_gauss,
        0.05,
    ),
}


# -- the contenders ----------------------------------------------------------------------


def jax_fitter(m: Model, steps: int):
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", True)
    shared = tuple(jnp.asarray(a) for a in m.shared)
    if m is MODELS["decay"]:

        def loss(p, y):
            r = p[0] * jnp.exp(-p[1] * shared[0]) + p[2] - y
            return jnp.mean(r * r)
    else:

        def loss(p, z):
            d2 = (shared[0] - p[1]) ** 2 + (shared[1] - p[2]) ** 2
            r = p[0] * jnp.exp(-0.5 * d2 / p[3] ** 2) + p[4] - z
            return jnp.mean(r * r)

    opt = optax.adam(m.lr)

    @jax.jit
    def fit(X, D):
        def body(i, carry):
            X, st = carry
            g = jax.vmap(jax.grad(loss))(X, D)
            u, st = jax.vmap(opt.update)(g, st)
            return optax.apply_updates(X, u), st

        return jax.lax.fori_loop(0, steps, body, (X, jax.vmap(opt.init)(X)))[0]

    def run(x0, data):
        return np.asarray(fit(jnp.asarray(x0), jnp.asarray(data)).block_until_ready())

    return run


def contenders(m: Model, steps: int, loop_fits: int) -> dict[str, tuple[Callable, bool]]:
    """name -> (run(x0, data) -> x, whether it runs on the first loop_fits fits only)."""
    fixed = {"lr": m.lr, "maxiter": steps, "gtol": 0.0}

    def many(fun, options):
        return lambda x0, data: (
            nadam.minimize_many(fun, x0, args=(*m.shared, data), jac=True, options=options).x
        )

    def loop(fun):
        def run(x0, data):
            return np.stack(
                [
                    nadam.minimize(fun, x0[b], args=(*m.shared, data[b]), jac=True, options=fixed).x
                    for b in range(len(x0))
                ]
            )

        return run

    def scipy_loop(x0, data):
        xdata = m.shared[0] if len(m.shared) == 1 else np.stack(m.shared)
        out = []
        for b in range(len(x0)):
            try:
                out.append(curve_fit(m.model, xdata, data[b], p0=x0[b])[0])
            except RuntimeError:  # no convergence within its evaluations
                out.append(np.full(x0.shape[1], np.nan))
        return np.stack(out)

    table = {
        "minimize_many, @njit": (many(m.njit, fixed), False),
        "minimize_many, vmath.exp": (many(m.vectorised, fixed), False),
        "minimize_many, vectorized": (many(m.rows, {**fixed, "vectorized": True}), False),
        "minimize_many, defaults": (many(m.njit, None), False),
        "loop of minimize, @njit": (loop(m.njit), True),
        "loop of minimize, NumPy": (loop(m.numpy), True),
        "loop of curve_fit": (scipy_loop, True),
    }
    try:
        table["jax.vmap(optax.adam)"] = (jax_fitter(m, steps), False)
    except ImportError:
        print("(jax/optax not installed: no jax.vmap row)")
    return table


def loss_of(m: Model, x: np.ndarray, data: np.ndarray) -> np.ndarray:
    return np.array(
        [
            m.njit(x[b], *m.shared, data[b])[0] if np.isfinite(x[b]).all() else np.inf
            for b in range(len(x))
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fits", type=int, default=2000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--loop-fits", type=int, default=200, help="fits for the Python loops")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--models", default="decay,gauss")
    a = p.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} cores, nadam threads {nadam.get_threads()}")
    warnings.simplefilter("ignore")
    for key in a.models.split(","):
        m = MODELS[key]
        rng = np.random.default_rng(0)
        _, data, x0 = m.make(a.fits, rng)
        table = contenders(m, a.steps, a.loop_fits)
        for run, _ in table.values():  # warm: compile, trace
            run(x0[:2], data[:2])
        times: dict[str, list[float]] = {k: [] for k in table}
        answers = {}
        for _ in range(a.repeat):
            for name, (run, subset) in table.items():
                n = a.loop_fits if subset else a.fits
                t0 = time.perf_counter()
                answers[name] = run(x0[:n], data[:n])
                times[name].append((time.perf_counter() - t0) / n)
        best = loss_of(m, answers["loop of curve_fit"], data[: a.loop_fits])
        print(f"\n{m.name}: {a.fits} fits, {a.steps} Adam steps (lr {m.lr}); ", end="")
        print(f"Python loops on {a.loop_fits} fits")
        head = ("fits/s best", "fits/s mean", "time / ours", "at optimum")
        print(f"{'':28s} " + " ".join(f"{h:>12s}" for h in head))
        ours = min(times["minimize_many, @njit"])
        for name, t in times.items():
            f = loss_of(m, answers[name][: a.loop_fits], data[: a.loop_fits])
            ok = np.mean(f <= best * (1 + 1e-6) + 1e-12)
            ratio = min(t) / ours
            print(f"{name:28s} {1 / min(t):12.0f} {1 / np.mean(t):12.0f} {ratio:11.1f}x {ok:12.0%}")


if __name__ == "__main__":
    main()
