"""Command line: ``python -m nadam demo``, ``python -m nadam bench [--quick]``.

``demo`` fits a logistic regression on data generated with a fixed seed three
ways and prints one table:

* :func:`nadam.minimize` with minibatch Adam (progress bar on), the objective an
  ``@njit`` function (``minimize`` runs its compiled loop where it can);
* the textbook Adam of Kingma & Ba (Algorithm 1) in NumPy, with the same
  batches per epoch, steps, schedule and hyperparameters;
* :func:`scipy.optimize.minimize` with L-BFGS-B on the full data, the same
  objective.

Compile time is measured and reported apart from the timings.  ``bench`` hands
its arguments to ``benchmarks/bench.py`` of a source checkout (the benchmark's
peer code is not part of the installed package).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numba import njit

__all__ = ["demo", "logistic_loss_grad", "main", "make_data", "numpy_adam"]


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def make_data(n_rows: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A logistic-regression data set ``(X, y)``, the same for the same arguments.

    Features are correlated (one shared factor, correlation 0.5) and on scales
    from 0.1 to 10, as raw measurements are before anyone standardises them;
    the last column is the intercept (all ones).  ``y`` holds 0.0 and 1.0, drawn
    from the model with true weights of moderate effect size.
    """
    if n_features < 2:
        raise ValueError(f"n_features must be >= 2 (features + intercept), got {n_features}")
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((n_rows, 1))
    X = rng.standard_normal((n_rows, n_features))
    X *= math.sqrt(0.5)
    X += math.sqrt(0.5) * factor
    scales = 10.0 ** rng.uniform(-1.0, 1.0, n_features)
    X *= scales
    X[:, -1] = 1.0
    w = rng.normal(0.0, 3.0 / math.sqrt(n_features), n_features) / scales
    w[-1] = -1.0
    z = X @ w
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return X, y


@njit(cache=True)
def logistic_loss_grad(w, X, y):
    r"""Mean logistic loss of ``w`` on the rows ``(X, y)`` and its gradient.

    .. math::

        f(w) = \frac1n \sum_i \log(1 + e^{z_i}) - y_i z_i, \quad z = Xw, \qquad
        \nabla f(w) = \frac1n X^\top (\sigma(z) - y).

    One pass over the rows (no temporaries of length n); ``log(1 + e^z)`` in the
    form that neither overflows nor loses digits.
    """
    n, d = X.shape
    g = np.zeros(d)
    loss = 0.0
    for i in range(n):
        z = 0.0
        for j in range(d):
            z += X[i, j] * w[j]
        if z > 0.0:
            e = math.exp(-z)
            loss += z + math.log1p(e) - y[i] * z
            p = 1.0 / (1.0 + e)
        else:
            e = math.exp(z)
            loss += math.log1p(e) - y[i] * z
            p = e / (1.0 + e)
        r = p - y[i]
        for j in range(d):
            g[j] += r * X[i, j]
    return loss / n, g / n


def numpy_adam(
    X: np.ndarray,
    y: np.ndarray,
    steps: int,
    batch_size: int,
    lr: Callable[[int], float],
    seed: int = 0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> np.ndarray:
    """Minibatch Adam as a textbook writes it (Kingma & Ba, Algorithm 1), in NumPy.

    Batches are slices of a fresh permutation each epoch, as nadam's sampler
    draws them (not the same rows: another generator); the gradient is NumPy's
    vectorised expression.  This is the baseline a user would write first.
    """
    from scipy.special import expit  # 1/(1+exp(-z)) without overflow warnings

    rng = np.random.default_rng(seed)
    n, d = X.shape
    w, m, v = np.zeros(d), np.zeros(d), np.zeros(d)
    b1, b2 = betas
    perm, pos = rng.permutation(n), 0
    for t in range(1, steps + 1):
        if pos + batch_size > n:
            perm, pos = rng.permutation(n), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        Xb, yb = X[idx], y[idx]
        g = Xb.T @ (expit(Xb @ w) - yb) / batch_size
        w, m, v = numpy_adam_update(w, g, m, v, t, lr(t), b1, b2, eps)
    return w


def numpy_adam_update(w, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam update as the textbook writes it: new arrays, one pass per operation."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def update_speedup(n: int = 1_000_000, repeats: int = 15) -> float:
    """How many times faster ``nadam.Adam.step`` is than :func:`numpy_adam_update` on
    an ``n``-element float64 vector: the update alone, interleaved, best of ``repeats``."""
    import nadam

    rng = np.random.default_rng(0)
    g = rng.normal(size=n)
    x = np.zeros(n)
    opt = nadam.Adam(x, lr=1e-3)
    opt.step(g)  # compile (or load from the cache) outside the timing
    w, m, v = np.zeros(n), np.zeros(n), np.zeros(n)
    best_nadam = best_numpy = math.inf
    for t in range(1, repeats + 1):
        t0 = time.perf_counter()
        opt.step(g)
        best_nadam = min(best_nadam, time.perf_counter() - t0)
        t0 = time.perf_counter()
        w, m, v = numpy_adam_update(w, g, m, v, t, 1e-3)
        best_numpy = min(best_numpy, time.perf_counter() - t0)
    return best_numpy / best_nadam


# ---------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def demo(
    n_rows: int = 200_000,
    n_features: int = 30,
    steps: int = 10_000,
    batch_size: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    out=None,
) -> dict[str, dict[str, float]]:
    """Run the demo and print its table; returns the figures by method.

    Parameters
    ----------
    n_rows, n_features : int
        Size of the generated data set (:func:`make_data`).
    steps, batch_size, lr : int, int, float
        Adam's steps, rows per step, and peak learning rate of its cosine
        schedule (decaying to 0 at the last step).
    seed : int
        Seed of the data and of the minibatch sampling.
    progress : bool
        Show nadam's progress bar (``options={"disp": True}``).
    out : file, optional
        Where the table goes (default ``sys.stdout``).

    Returns
    -------
    dict
        ``{method: {"loss": ..., "time": ..., "steps": ...}}``,
        ``"compile": {"time": ...}`` and ``"update": {"speedup": ...}`` (the Adam
        update alone, :func:`update_speedup`).
    """
    import scipy.optimize

    import nadam

    out = sys.stdout if out is None else out

    def say(*a):
        print(*a, file=out, flush=True)

    t0 = time.perf_counter()
    X, y = make_data(n_rows, n_features, seed)
    say(
        f"nadam demo: logistic regression, {n_rows:,} rows x {n_features} features, seed {seed}\n"
        f"(correlated features on scales 0.1 to 10; generated in "
        f"{_fmt_time(time.perf_counter() - t0)})"
    )

    sched = nadam.schedules.cosine(lr, total_steps=steps)
    opts = {"lr": sched, "maxiter": steps, "batch_size": batch_size, "seed": seed, "gtol": 0.0}
    w0 = np.zeros(n_features)

    # Compile everything before timing anything: the objective, nadam's kernels,
    # its sampler and (where minimize compiles the loop) the loop itself, with the
    # argument types of the timed runs.  cache=True keeps them for the next run.
    t0 = time.perf_counter()
    m = min(n_rows, max(1000, batch_size + 1))  # more rows than a batch, as in the timed run
    small = (X[:m].copy(), y[:m].copy())
    logistic_loss_grad(w0, *small)
    nadam.minimize(logistic_loss_grad, w0, args=small, jac=True, options={**opts, "maxiter": 3})
    compile_time = time.perf_counter() - t0
    say(f"compiling (first run only; cached for the next): {_fmt_time(compile_time)}\n")

    results: dict[str, dict[str, float]] = {"compile": {"time": compile_time}}

    t0 = time.perf_counter()
    res = nadam.minimize(
        logistic_loss_grad, w0, args=(X, y), jac=True, options={**opts, "disp": progress}
    )
    results["nadam"] = {"time": time.perf_counter() - t0, "loss": res.fun, "steps": res.nit}

    say("\ntextbook NumPy Adam, same steps ...")
    t0 = time.perf_counter()
    w = numpy_adam(X, y, steps, batch_size, sched, seed)
    # minimize's time includes its final evaluation on all rows: so does this one.
    loss = float(logistic_loss_grad(w, X, y)[0])
    results["numpy"] = {"time": time.perf_counter() - t0, "loss": loss, "steps": steps}

    say("scipy L-BFGS-B, full batch ...\n")
    t0 = time.perf_counter()
    ref = scipy.optimize.minimize(logistic_loss_grad, w0, args=(X, y), jac=True, method="L-BFGS-B")
    results["lbfgs"] = {"time": time.perf_counter() - t0, "loss": ref.fun, "steps": ref.nit}

    best = results["lbfgs"]["loss"]
    rows = [
        ("nadam.minimize, Adam", "nadam", f"{steps:,} x {batch_size} rows"),
        ("textbook NumPy Adam", "numpy", f"{steps:,} x {batch_size} rows"),
        ("scipy L-BFGS-B", "lbfgs", f"{ref.nit} it., {ref.nfev} full evals"),
    ]
    say(
        f"{'method':22s} {'work':>24s} {'loss (all rows)':>16s} {'vs L-BFGS-B':>12s} "
        f"{'wall time':>10s} {'per step':>10s}"
    )
    for label, key, work in rows:
        r = results[key]
        gap = f"{(r['loss'] - best) / abs(best):+.1e}" if key != "lbfgs" else "-"
        per_step = _fmt_time(r["time"] / r["steps"]) if key != "lbfgs" else "-"
        say(
            f"{label:22s} {work:>24s} {r['loss']:16.6f} {gap:>12s} "
            f"{_fmt_time(r['time']):>10s} {per_step:>10s}"
        )
    speedup = results["numpy"]["time"] / results["nadam"]["time"]
    say(
        f"\nnadam's step (sample {batch_size} rows, objective and gradient, Adam update) is "
        f"{speedup:.1f}x as fast as the textbook NumPy step, timed in this run."
    )
    results["update"] = {"speedup": update_speedup()}
    say(
        f"The Adam update alone, on 1,000,000 parameters: nadam.Adam.step is "
        f"{results['update']['speedup']:.1f}x as fast as the textbook NumPy update."
    )
    say(
        f"Minibatch Adam reached L-BFGS-B's loss to "
        f"{abs(results['nadam']['loss'] - best) / abs(best):.1e} (relative) in "
        f"{results['nadam']['time'] / results['lbfgs']['time']:.2f}x its time."
    )
    return results


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # argparse would call `python -m nadam` "__main__.py"; the console script is `nadam`.
    script = Path(sys.argv[0]).name
    ap = argparse.ArgumentParser(
        prog="python -m nadam" if script in ("__main__.py", "-c", "") else script,
        description="nadam: Numba-accelerated first-order optimisers.",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="command")
    d = sub.add_parser(
        "demo",
        help="fit a logistic regression with minibatch Adam; compare with NumPy and L-BFGS-B",
        description=(
            "Fit a logistic regression on generated data with nadam's minibatch Adam "
            "and compare with a textbook NumPy Adam and scipy's L-BFGS-B."
        ),
    )
    d.add_argument("--rows", type=int, default=200_000, help="rows of data (default 200000)")
    d.add_argument("--features", type=int, default=30, help="features (default 30)")
    d.add_argument("--steps", type=int, default=10_000, help="Adam steps (default 10000)")
    d.add_argument("--batch-size", type=int, default=256, help="rows per step (default 256)")
    d.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    d.add_argument("--seed", type=int, default=0, help="seed of data and batches (default 0)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    # bench parses its own arguments (nadam.bench.main): this entry is for the
    # command list only; main() hands everything after "bench" over untouched.
    sub.add_parser(
        "bench",
        add_help=False,
        help="kernel benchmark: ratios to the memory floor, GB/s, peers "
        "(--quick: seconds; bench --help for options)",
    )
    return ap


def _benchmarks_folder() -> Path | None:
    # benchmarks/ of the checkout nadam runs from (an editable install), or of the
    # current directory (a checkout with nadam installed from it).
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "benchmarks" / "bench.py").is_file():
            return root / "benchmarks"
    return None


def _bench(argv: list[str]) -> int:
    folder = _benchmarks_folder()
    if folder is None:
        print(
            "python -m nadam bench runs benchmarks/bench.py of a source checkout: run it "
            "from the repository's root (git clone, then pip install -e .)",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(folder))
    import bench

    return bench.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nadam`` and of the ``nadam`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    a = _parser().parse_args(argv)
    if a.command == "demo":
        for name, low in (("rows", 1), ("features", 2), ("steps", 1), ("batch_size", 1)):
            if getattr(a, name) < low:
                _parser().error(f"--{name.replace('_', '-')} must be >= {low}")
        if a.batch_size > a.rows:
            _parser().error("--batch-size must not exceed --rows")
        demo(a.rows, a.features, a.steps, a.batch_size, a.lr, a.seed, not a.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
