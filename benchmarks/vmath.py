"""``nadam.vmath.exp`` against ``np.exp`` in compiled loops (numba's pip wheels have no
vector ``exp``: its ``np.exp`` is a scalar call of the C library's).

Two kinds of loop, timed interleaved in one process, best and mean of ``--rounds``:

* a map ``out[i] = exp(x[i])`` over ``--n`` elements (float64 and float32), against
  the floor ``out[i] = -x[i]`` (same memory traffic, no exponential): ns per element;
* the exponential-decay objective of ``benchmarks/many.py`` (40 points, loss and
  gradient) written four ways: ``np.exp``; ``vmath.exp`` in the same loop, which does
  not vectorise (its sums are in order); ``vmath.exp`` with ``fastmath={"reassoc"}``,
  which lets LLVM vectorise the sums; ``vmath.exp`` on the array ``-k * t`` first,
  then the sums in order: ns per call.

    python benchmarks/vmath.py                 # ~30 s
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from many import T, decay_objective  # noqa: E402 (the benchmark's own objective)

from nadam import vmath  # noqa: E402


@njit(cache=True)
def floor_map(x, out):
    for i in range(x.shape[0]):
        out[i] = -x[i]


@njit(cache=True)
def np_map(x, out):
    for i in range(x.shape[0]):
        out[i] = np.exp(x[i])


@njit(cache=True)
def vmath_map(x, out):
    for i in range(x.shape[0]):
        out[i] = vmath.exp(x[i])


@njit(cache=True)
def decay_array(p, t, y):
    # The exponentials as one array (a loop with no sum: vectorised), the sums in order.
    a, k, c = p[0], p[1], p[2]
    e = vmath.exp(-k * t)
    f = g0 = g1 = g2 = 0.0
    m = t.shape[0]
    for i in range(m):
        r = a * e[i] + c - y[i]
        f += r * r
        g0 += r * e[i]
        g1 -= r * a * t[i] * e[i]
        g2 += r
    g = np.empty(3)
    g[0], g[1], g[2] = 2 * g0 / m, 2 * g1 / m, 2 * g2 / m
    return f / m, g


@njit(cache=True)
def calls(fun, p, t, y, n):
    # n calls of the objective from compiled code (as the compiled loops call it).
    s = 0.0
    for _ in range(n):
        s += fun(p, t, y)[0]
    return s


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=4096, help="elements of the map")
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} cores; best / mean of {a.rounds} interleaved rounds")

    rng = np.random.default_rng(0)
    maps: dict[str, Callable[[], None]] = {}
    for dtype in (np.float64, np.float32):
        x = rng.uniform(-20.0, 20.0, a.n).astype(dtype)
        out = np.empty_like(x)
        name = np.dtype(dtype).name
        for label, fn in (("floor", floor_map), ("np.exp", np_map), ("vmath.exp", vmath_map)):
            maps[f"map {name}: {label}"] = lambda fn=fn, x=x, out=out: fn(x, out)
    y = 2.0 * np.exp(-T) + 0.01 * rng.normal(size=T.size)
    p0 = np.array([1.5, 0.8, 0.1])
    objectives = {
        "decay: np.exp": decay_objective(np.exp),
        "decay: vmath.exp, sums in order": decay_objective(vmath.exp),
        'decay: vmath.exp, fastmath={"reassoc"}': decay_objective(vmath.exp, fastmath={"reassoc"}),
        "decay: vmath.exp(-k * t), sums in order": decay_array,
    }
    reps = 20_000
    cases = dict(maps)
    for label, fun in objectives.items():
        cases[label] = lambda fun=fun: calls(fun, p0, T, y, reps)
    per = {label: (a.n if label.startswith("map") else reps) for label in cases}
    for run in cases.values():  # compile
        run()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.rounds):
        for label, run in cases.items():
            t0 = time.perf_counter()
            for _ in range(20 if label.startswith("map") else 1):
                run()
            times[label].append((time.perf_counter() - t0) / per[label] * 1e9)
            if label.startswith("map"):
                times[label][-1] /= 20
    print(f"\n{'':44s} {'ns best':>9s} {'ns mean':>9s} {'/ np.exp':>9s}")
    for label, ts in times.items():
        base = label.split(":")[0] + ": np.exp"
        ratio = min(ts) / min(times[base])
        print(f"{label:44s} {min(ts):9.2f} {np.mean(ts):9.2f} {ratio:8.2f}x")
    print("(map: ns per element; decay: ns per call of the objective, 40 points)")


if __name__ == "__main__":
    main()
