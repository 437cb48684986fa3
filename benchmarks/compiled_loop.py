"""The compiled minimize loop against a bare numba loop, optax, torch and the Python loop.

Run: ``python benchmarks/compiled_loop.py [--steps N] [--repeats R] [--no-peers]``

Minibatch logistic regression (issue 5): 20,000 rows x 20 features, batches of
64 rows, Adam (lr 1e-2), float64.  The objective is one ``@njit`` function
returning ``(loss, gradient)``.  Every case draws the same batches (nadam's
sampler, seed 0), so all reach the same loss.  Timed in one run, interleaved,
best of R, per step:

* ``nadam compiled``   ``nadam.minimize(loss, w0, args=(X, y), jac=True,
  options={"batch_size": 64, ...})``: the whole loop in compiled code;
* ``bare numba loop``  what a user would write by hand in numba: the sampler,
  the gather, the same objective, Adam inline; nothing else (no stopping rules);
* ``optax jit``        ``optax.adam`` under ``jax.jit`` + ``lax.fori_loop``, the
  batch indices precomputed (the same batches), gradient by ``jax.grad``;
* ``torch loop``       ``torch.optim.Adam`` in a Python loop, autograd gradient
  (fewer steps, per step);
* ``nadam Python loop`` ``compiled=False``: the same objective called from
  Python each step (fewer steps);
* ``nadam + NumPy``    the Python loop with a NumPy objective (fewer steps).

Each case reports the wall time per step and the CPU time per step (all of
the process's threads: ``time.process_time``), each the minimum over the
repeats.  On a shared machine the wall time also counts the time other
processes hold the cores; the CPU time does not, and is the steadier figure.

Compile time is reported apart: the first call in this process, and the first
call in fresh processes (``--first-call`` runs one), cold (empty numba cache)
then warm, for an objective at module level and for a closure.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

import nadam
from nadam import sampling

N_ROWS, N_FEATURES, BATCH, LR = 20_000, 20, 64, 1e-2
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised features, labels drawn from a logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_ROWS, N_FEATURES))
    w = rng.normal(0.0, 1.0, N_FEATURES)
    y = (rng.random(N_ROWS) < 1.0 / (1.0 + np.exp(-X @ w))).astype(np.float64)
    return X, y


@njit(cache=True)
def loss(w, X, y):
    """Mean logistic loss over the rows of (X, y) and its gradient, in one pass."""
    n, d = X.shape
    g = np.zeros(d)
    f = 0.0
    for i in range(n):
        z = 0.0
        for j in range(d):
            z += X[i, j] * w[j]
        e = math.exp(-abs(z))
        f += max(z, 0.0) + math.log1p(e) - y[i] * z
        p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        r = p - y[i]
        for j in range(d):
            g[j] += r * X[i, j]
    return f / n, g / n


def make_closure(scale: float):
    """The same objective as a closure (a captured constant): how caching fares."""

    @njit(cache=True)
    def scaled(w, X, y):
        f, g = loss(w, X, y)
        return scale * f, scale * g

    return scaled


def numpy_loss(w, X, y):
    """The objective in NumPy, as a scipy user writes it."""
    z = X @ w
    e = np.exp(-np.abs(z))
    f = np.mean(np.maximum(z, 0.0) + np.log1p(e) - y * z)
    p = np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
    return f, X.T @ (p - y) / len(y)


@njit(cache=True)
def bare_loop(w, X, y, state, perm, idx, Xb, yb, m, v, steps):
    """Minibatch Adam by hand: the same sampler, gather, objective and update."""
    for t in range(1, steps + 1):
        sampling.next_batch(state, perm, idx)
        for k in range(idx.shape[0]):
            i = idx[k]
            for j in range(X.shape[1]):
                Xb[k, j] = X[i, j]
            yb[k] = y[i]
        f, g = loss(w, Xb, yb)
        step = LR / (1.0 - BETA1 ** float(t))
        root = 1.0 / math.sqrt(1.0 - BETA2 ** float(t))
        for j in range(w.shape[0]):
            m[j] = BETA1 * m[j] + (1.0 - BETA1) * g[j]
            v[j] = BETA2 * v[j] + (1.0 - BETA2) * (g[j] * g[j])
            w[j] = w[j] - step * (m[j] / (math.sqrt(v[j]) * root + EPS))


def options(steps: int, **more) -> dict:
    # gtol 0: every case runs exactly `steps` steps.
    return {"lr": LR, "batch_size": BATCH, "seed": 0, "maxiter": steps, "gtol": 0.0, **more}


def full_loss(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float(loss(w, X, y)[0])


# ---------------------------------------------------------------------------
# The cases: each returns (wall seconds, CPU seconds, final w) for `steps` steps
# ---------------------------------------------------------------------------


def timed(run):
    """Time ``run()`` (which returns the final w): (wall s, CPU s, w)."""
    wall, cpu = time.perf_counter(), time.process_time()
    w = run()
    return time.perf_counter() - wall, time.process_time() - cpu, w


def nadam_compiled(X, y, steps):
    return timed(
        lambda: (
            nadam.minimize(
                loss,
                np.zeros(N_FEATURES),
                args=(X, y),
                jac=True,
                options=options(steps, compiled=True),
            ).x
        )
    )


def nadam_python(X, y, steps):
    return timed(
        lambda: (
            nadam.minimize(
                loss,
                np.zeros(N_FEATURES),
                args=(X, y),
                jac=True,
                options=options(steps, compiled=False),
            ).x
        )
    )


def nadam_numpy(X, y, steps):
    return timed(
        lambda: (
            nadam.minimize(
                numpy_loss, np.zeros(N_FEATURES), args=(X, y), jac=True, options=options(steps)
            ).x
        )
    )


def bare(X, y, steps):
    mb = sampling.Minibatches((X, y), BATCH, seed=0)
    w, m, v = np.zeros(N_FEATURES), np.zeros(N_FEATURES), np.zeros(N_FEATURES)
    Xb, yb = np.empty((BATCH, N_FEATURES)), np.empty(BATCH)

    def run():
        bare_loop(w, X, y, mb.state, mb.perm, mb.idx, Xb, yb, m, v, steps)
        return w

    return timed(run)


def batch_indices(steps: int) -> np.ndarray:
    """The row indices of every batch, as nadam's sampler draws them."""
    mb = sampling.Minibatches((np.arange(N_ROWS),), BATCH, seed=0)
    return np.stack([mb.next()[0].copy() for _ in range(steps)])


def make_optax(X, y, steps):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    idx = jnp.asarray(batch_indices(steps))
    opt = optax.adam(LR, b1=BETA1, b2=BETA2, eps=EPS)

    def batch_loss(w, Xb, yb):
        z = Xb @ w
        return jnp.mean(jnp.maximum(z, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(z))) - yb * z)

    grad = jax.grad(batch_loss)

    @jax.jit
    def run(w):
        def body(t, carry):
            w, state = carry
            rows = idx[t]
            g = grad(w, Xj[rows], yj[rows])
            updates, state = opt.update(g, state, w)
            return optax.apply_updates(w, updates), state

        return jax.lax.fori_loop(0, steps, body, (w, opt.init(w)))[0]

    def case(X, y, steps_):
        assert steps_ == steps
        w0 = jnp.zeros(N_FEATURES)
        return timed(lambda: np.asarray(run(w0).block_until_ready()))

    return case


def make_torch(X, y, steps):
    import torch

    torch.set_num_threads(1)  # batches of 64 x 20: threads only add overhead
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    idx = torch.from_numpy(batch_indices(steps))

    def case(X, y, steps_):
        w = torch.zeros(N_FEATURES, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([w], lr=LR, betas=(BETA1, BETA2), eps=EPS)
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def run():
            for t in range(steps_):
                rows = idx[t]
                opt.zero_grad()
                bce(Xt[rows] @ w, yt[rows]).backward()
                opt.step()
            return w.detach().numpy().copy()

        return timed(run)

    return case


# ---------------------------------------------------------------------------
# First calls in fresh processes
# ---------------------------------------------------------------------------


def first_call(kind: str) -> None:
    """Print the seconds of one first minimize call (this is a fresh process)."""
    X, y = make_data()
    fun = loss if kind == "module" else make_closure(1.0)
    t0 = time.perf_counter()
    nadam.minimize(
        fun, np.zeros(N_FEATURES), args=(X, y), jac=True, options=options(10, compiled=True)
    )
    print(f"{time.perf_counter() - t0:.3f}")


def fresh_process_times() -> dict[str, tuple[float, float]]:
    """First-call seconds in two new processes one after the other, sharing a numba
    cache that is empty for the first: (cold, cached), per kind of objective."""
    out = {}
    for kind in ("module", "closure"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            times = []
            for _ in range(2):
                run = subprocess.run(
                    [sys.executable, __file__, "--first-call", kind],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times.append(float(run.stdout.split()[-1]))
            out[kind] = (times[0], times[1])
    return out


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true", help="skip optax and torch")
    ap.add_argument("--first-call", choices=("module", "closure"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.first_call:
        first_call(a.first_call)
        return
    steps = a.steps
    slow = max(steps // 10, 100)  # the Python loops and torch: fewer steps, per step
    X, y = make_data()

    first = nadam_compiled(X, y, 10)[0]

    cases = {
        "nadam compiled": (nadam_compiled, steps),
        "bare numba loop": (bare, steps),
        "nadam Python loop": (nadam_python, slow),
        "nadam + NumPy objective": (nadam_numpy, slow),
    }
    if not a.no_peers:
        for name, make, n in (
            ("optax jit + fori_loop", make_optax, steps),
            ("torch Python loop", make_torch, slow),
        ):
            try:
                cases[name] = (make(X, y, n), n)
            except ImportError as exc:
                print(f"({name} skipped: {exc})")
    final = {}
    for name, (case, n) in cases.items():  # compile, warm up, and the answers
        final[name] = case(X, y, n)[2]
    wall, cpu = dict.fromkeys(cases, math.inf), dict.fromkeys(cases, math.inf)
    for _ in range(a.repeats):
        for name, (case, n) in cases.items():
            w_s, c_s, _ = case(X, y, n)
            wall[name], cpu[name] = min(wall[name], w_s / n), min(cpu[name], c_s / n)

    # The loss each case reaches, against nadam's after as many steps.
    reference = {n: nadam_compiled(X, y, n)[2] for n in {n for _, n in cases.values()}}
    print(
        f"Minibatch logistic regression: {N_ROWS} x {N_FEATURES}, batch {BATCH}, Adam, "
        f"float64; best of {a.repeats}, interleaved; µs per step, and ratios to the bare "
        "loop and to nadam compiled"
    )
    print(
        f"{'':26s} {'':>6s} {'---------- wall ----------':>26s} {'----------- CPU ----------':>26s}"
    )
    print(
        f"{'case':26s} {'steps':>6s} "
        + f"{'µs':>8s} {'/ bare':>7s} {'/ nadam':>9s} " * 2
        + f"{'final loss':>11s} {'nadam, same steps':>18s}"
    )
    for name, (_, n) in cases.items():
        row = f"{name:26s} {n:6d} "
        for best in (wall, cpu):
            row += (
                f"{best[name] * 1e6:8.2f} {best[name] / best['bare numba loop']:7.2f} "
                f"{best[name] / best['nadam compiled']:9.2f} "
            )
        print(row + f"{full_loss(final[name], X, y):11.8f} {full_loss(reference[n], X, y):18.8f}")
    same = np.array_equal(final["nadam compiled"], final["bare numba loop"])
    print(f"nadam compiled and the bare loop end at bit-identical x: {same}")
    print(f"first call in this process (compiles what the numba cache lacks): {first:.2f} s")
    for kind, (cold, warm) in fresh_process_times().items():
        print(
            f"first call in a new process, objective {kind:8s}: empty numba cache "
            f"{cold:.2f} s (everything compiles), next process {warm:.2f} s (all cached)"
        )


if __name__ == "__main__":
    main()
