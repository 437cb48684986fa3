"""Command line: ``python -m nadam demo``, ``python -m nadam warmup``,
``python -m nadam bench [--quick]``.

``demo`` fits a logistic regression on data generated with a fixed seed three
ways and prints one table:

* :func:`nadam.minimize` with minibatch Adam (progress bar on), the objective an
  ``@njit`` function (``minimize`` runs its compiled loop where it can);
* the textbook Adam of Kingma & Ba (Algorithm 1) in NumPy, with the same
  batches per epoch, steps, schedule and hyperparameters;
* :func:`scipy.optimize.minimize` with L-BFGS-B on the full data, the same
  objective.

Compile time is measured and reported apart from the timings.  ``warmup``
compiles what common runs need into numba's cache (for container images and job
prologs: :func:`warmup`).  ``bench`` hands its arguments to ``benchmarks/bench.py``
of a source checkout (the benchmark's peer code is not part of the installed
package).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numba import njit

__all__ = ["demo", "logistic_loss_grad", "main", "make_data", "numpy_adam", "warmup"]


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


# ---------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _cpu_jiffies() -> tuple[int, int] | None:
    # (busy, total) CPU time of the whole machine so far, in clock ticks (Linux).
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _others_busy(before, own_before: float) -> float:
    """Share of the machine's cores that other processes used since ``before``
    (:func:`_cpu_jiffies`), this process's CPU time (``own_before``) taken out;
    nan where the machine does not say."""
    after = _cpu_jiffies()
    if before is None or after is None or after[1] == before[1]:
        return math.nan
    tick = os.sysconf("SC_CLK_TCK")
    own = (time.process_time() - own_before) * tick
    return max(0.0, (after[0] - before[0] - own) / (after[1] - before[1]))


def paired_speedup(a: Callable[[], object], b: Callable[[], object], rounds: int = 9):
    """How many times faster ``b`` is than ``a``: the median over ``rounds`` of the ratio
    of their times, each round timing one after the other (so that a burst of load hits
    both), and the range of the ratios.  Returns ``(median, low, high, busy)``, busy being
    the share of the cores other processes used meanwhile."""
    ratios = []
    before, own = _cpu_jiffies(), time.process_time()
    for _ in range(rounds):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        ratios.append((t1 - t0) / (time.perf_counter() - t1))
    busy = _others_busy(before, own)
    return float(np.median(ratios)), min(ratios), max(ratios), busy


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
    """Run the demo and print its answer, its table and a paired speed comparison;
    returns the figures by method.

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
        Show nadam's progress bar while it fits.
    out : file, optional
        Where the output goes (default ``sys.stdout``).

    Returns
    -------
    dict
        ``{method: {"loss": ..., "time": ..., "steps": ...}}``,
        ``"compile": {"time": ...}`` and ``"speed": {"median": ..., "low": ...,
        "high": ..., "busy": ...}`` (:func:`paired_speedup` of a fit's steps, nadam's
        against the textbook NumPy Adam's).
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
    results: dict[str, dict[str, float]] = {"compile": {"time": compile_time}}

    run = nadam.Minimizer(logistic_loss_grad, w0, args=(X, y), jac=True, options=opts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", leave=False, desc="nadam.minimize")
    t0 = time.perf_counter()
    while (res := run.run(max(1, steps // 50))) is None:
        if bar is not None:
            bar.update(run.state.nit - bar.n)
    results["nadam"] = {"time": time.perf_counter() - t0, "loss": res.fun, "steps": res.nit}
    if bar is not None:
        bar.close()

    t0 = time.perf_counter()
    w = numpy_adam(X, y, steps, batch_size, sched, seed)
    # minimize's time includes its final evaluation on all rows: so does this one.
    loss = float(logistic_loss_grad(w, X, y)[0])
    results["numpy"] = {"time": time.perf_counter() - t0, "loss": loss, "steps": steps}

    t0 = time.perf_counter()
    ref = scipy.optimize.minimize(logistic_loss_grad, w0, args=(X, y), jac=True, method="L-BFGS-B")
    results["lbfgs"] = {"time": time.perf_counter() - t0, "loss": ref.fun, "steps": ref.nit}

    best = results["lbfgs"]["loss"]
    gap = abs(results["nadam"]["loss"] - best) / abs(best)
    say(
        f"\nanswer: nadam.minimize (minibatch Adam, {steps:,} steps of {batch_size} rows) reached "
        f"loss {results['nadam']['loss']:.6f} on all rows, L-BFGS-B's {best:.6f} to "
        f"{gap:.1e} (relative), in {_fmt_time(results['nadam']['time'])}\n"
        f"(compiling took {_fmt_time(compile_time)} before that: the first run only, numba "
        f"caches the code for the next)\n"
    )
    rows = [
        ("nadam.minimize, Adam", "nadam", f"{steps:,} x {batch_size} rows"),
        ("textbook NumPy Adam", "numpy", f"{steps:,} x {batch_size} rows"),
        ("scipy L-BFGS-B", "lbfgs", f"{ref.nit} it., {ref.nfev} full evals"),
    ]
    say(
        f"{'method':22s} {'work':>24s} {'loss (all rows)':>16s} {'vs L-BFGS-B':>12s} "
        f"{'wall time':>10s}"
    )
    for label, key, work in rows:
        r = results[key]
        rel = f"{(r['loss'] - best) / abs(best):+.1e}" if key != "lbfgs" else "-"
        say(f"{label:22s} {work:>24s} {r['loss']:16.6f} {rel:>12s} {_fmt_time(r['time']):>10s}")

    # The speed: the two Adams' steps timed in pairs, one right after the other, and
    # the median of the ratios (one burst of load on a shared machine moves one pair).
    chunk = max(1, min(steps, 2000))
    chunk_opts = {**opts, "maxiter": chunk, "lr": nadam.schedules.cosine(lr, total_steps=chunk)}
    median, low, high, busy = paired_speedup(
        lambda: numpy_adam(X, y, chunk, batch_size, chunk_opts["lr"], seed),
        lambda: nadam.minimize(logistic_loss_grad, w0, args=(X, y), jac=True, options=chunk_opts),
    )
    results["speed"] = {"median": median, "low": low, "high": high, "busy": busy}
    note = ""
    if busy == busy and busy > 0.1:
        note = (
            f"; other processes kept {busy:.0%} of the cores busy meanwhile, which makes every "
            "timing on this machine noisier"
        )
    say(
        f"\nspeed: nadam's steps ran {median:.1f}x as fast as the textbook NumPy Adam's "
        f"(median of 9 paired runs of {chunk:,} steps; {low:.1f}x to {high:.1f}x){note}."
    )
    return results


# ---------------------------------------------------------------------------
# Warm-up: numba's cache filled ahead of time
# ---------------------------------------------------------------------------


def _quadratic(x):
    return float(x @ x), x + x


def cache_folder() -> str:
    """Where numba caches nadam's compiled code: ``NUMBA_CACHE_DIR`` if set, else the
    ``__pycache__`` folders of the installed package when they are writable, else
    numba's user-wide cache folder (a read-only install, a container's site-packages)."""
    import numba

    from nadam.loop import tracker

    return numba.config.CACHE_DIR or str(Path(tracker.track._cache._cache_path))


def warmup(
    rules: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    threaded: bool = True,
    out=None,
) -> dict[str, float]:
    """Compile into numba's cache what common runs need, so that later processes load
    it instead of compiling: for each rule (default: every registered one) and dtype,
    its optimizer's step (serial, and threaded with ``threaded`` and two threads or
    more) and the step and stopping rules of :func:`nadam.minimize`; and the whole of
    ``minimize`` with its defaults.  Returns the seconds spent per rule.

    Run it where the cache will be read: in a container image's build, a job's prolog,
    or once per node type, with the same ``NUMBA_CACHE_DIR`` as the runs.
    """
    import nadam
    from nadam.kernels.cpu import PARALLEL_THRESHOLD
    from nadam.kernels.tiered import wait
    from nadam.rules import RULES, get_rule
    from nadam.threads import get_threads

    out = sys.stdout if out is None else out
    names = sorted(RULES) if rules is None else [get_rule(r).name for r in rules]
    threaded = threaded and get_threads() > 1
    spent: dict[str, float] = {}
    start = time.perf_counter()
    for dtype in dtypes:
        t0 = time.perf_counter()
        nadam.minimize(_quadratic, np.ones(4, dtype), jac=True)  # the defaults
        spent[f"minimize ({dtype})"] = time.perf_counter() - t0
    for name in names:
        t0 = time.perf_counter()
        cls = nadam.optimizer_class(name)
        for dtype in dtypes:
            # Serial, and threaded (from PARALLEL_THRESHOLD float64 elements: the same bytes).
            sizes = [16] + (
                [PARALLEL_THRESHOLD * 8 // np.dtype(dtype).itemsize] if threaded else []
            )
            for n in sizes:
                x = np.ones(n, dtype)
                cls(x).step(np.ones(n, dtype))
                wait()  # the threaded step, compiled in the background
            nadam.minimize(
                _quadratic, np.ones(4, dtype), method=name, jac=True, options={"maxiter": 1}
            )
        spent[name] = time.perf_counter() - t0
        print(f"{name:22s} {_fmt_time(spent[name]):>9s}", file=out, flush=True)
    print(
        f"compiled in {_fmt_time(time.perf_counter() - start)} into {cache_folder()}",
        file=out,
        flush=True,
    )
    return spent


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
    w = sub.add_parser(
        "warmup",
        help="compile the common kernels into numba's cache (for images and job prologs)",
        description="Compile what common runs need into numba's cache, so that later "
        "processes load it instead of compiling (see nadam.__main__.warmup).",
    )
    w.add_argument("--rules", help="comma-separated rules (default: all)")
    w.add_argument("--dtypes", default="float64,float32", help="default: float64,float32")
    w.add_argument("--serial-only", action="store_true", help="not the threaded kernels")
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
    elif a.command == "warmup":
        rules = None if a.rules is None else a.rules.split(",")
        warmup(rules, a.dtypes.split(","), not a.serial_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
