"""Per-iteration overhead of ``nadam.minimize`` over calling the update directly.

Run: ``python benchmarks/minimize_overhead.py [--steps N] [--repeats R] [--n SIZE]``

The objective is trivial (returns a constant loss and a constant gradient), so
what is measured is the loop around it.  In one run, interleaved, best of R:

* ``stepper``   the floor: ``f, g = fun(x)`` then one compiled step call
                (coefficients + kernel, what ``Optimizer.step`` ends in);
* ``opt.step``  the same loop through the public ``nadam.Adam.step``;
* ``minimize``  ``nadam.minimize(fun, x0, jac=True)`` for the same number of steps,
  full batch, then with a cosine schedule, bounds, and minibatches of 32 rows of
  (X, y) (whose floor adds the sampler and the row gathers).

Overhead = (time per iteration - floor per iteration), in µs; the goal of issue 3
is < 5 µs per iteration above the objective's own cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import nadam
from nadam import rules
from nadam.kernels import cpu
from nadam.sampling import Minibatches
from nadam.threads import get_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n", type=int, default=10, help="number of parameters")
    a = ap.parse_args()
    steps, n = a.steps, a.n

    grad = np.ones(n)

    def fun(x, *args):
        return 0.5, grad

    rule = rules.ADAM
    hp = np.zeros(rule.n_hyper)
    rule.pack(rule.defaults, hp)
    stepper = cpu.stepper(rule, rule.flags(rule.defaults), cpu.choose_parallel(n, get_threads()))

    def fresh():
        # x, the rule's state, aux and the coefficient buffer, as an Optimizer holds them.
        x = np.zeros(n)
        s = rule.initial_state(rule.defaults, rule.flags(rule.defaults), n, x.dtype)
        return x, s, rule.initial_aux(rule.defaults), np.zeros(rule.n_coefficients)

    def floor():
        x, s, aux, h = fresh()
        t0 = time.perf_counter()
        for t in range(1, steps + 1):
            f, g = fun(x)
            stepper(x, g, s, hp, t, aux, h)
        return time.perf_counter() - t0

    def opt_step():
        x = np.zeros(n)
        opt = nadam.Adam(x, nonfinite="ignore")
        t0 = time.perf_counter()
        for _ in range(steps):
            f, g = fun(x)
            opt.step(g)
        return time.perf_counter() - t0

    X, y = np.zeros((1000, 5)), np.zeros(1000)

    def floor_batches():
        x, s, aux, h = fresh()
        mb = Minibatches((X, y), 32, seed=0)
        t0 = time.perf_counter()
        for t in range(1, steps + 1):
            f, g = fun(x, *mb.next())
            stepper(x, g, s, hp, t, aux, h)
        return time.perf_counter() - t0

    def run_minimize(options=None, **kw):
        def timed():
            opts = {"lr": 1e-3, "maxiter": steps, "gtol": 0.0, **(options or {})}
            t0 = time.perf_counter()
            res = nadam.minimize(fun, np.zeros(n), jac=True, options=opts, **kw)
            elapsed = time.perf_counter() - t0
            assert res.nit == steps, res
            return elapsed

        return timed

    cases = {
        "stepper (floor)": floor,
        "opt.step": opt_step,
        "minimize": run_minimize(),
        "minimize + cosine schedule": run_minimize({"lr": nadam.schedules.cosine(1e-3, steps)}),
        "minimize + bounds": run_minimize(bounds=[(-1e9, 1e9)] * n),
        "minimize + patience": run_minimize({"patience": 10 * steps}),
        "floor + minibatch sampler": floor_batches,
        "minimize + batch_size=32": run_minimize({"batch_size": 32, "seed": 0}, args=(X, y)),
    }
    for case in cases.values():  # compile and warm up
        case()
    best = dict.fromkeys(cases, np.inf)
    for _ in range(a.repeats):
        for name, case in cases.items():
            best[name] = min(best[name], case())

    per = {name: t / steps * 1e6 for name, t in best.items()}
    print(f"Adam, n = {n}, {steps} steps, best of {a.repeats} (µs per iteration)")
    print(f"{'case':30s} {'µs/it':>8s} {'overhead µs':>12s} {'ratio':>7s}")
    for name, us in per.items():
        base = per["floor + minibatch sampler"] if "batch" in name else per["stepper (floor)"]
        if name in ("stepper (floor)", "floor + minibatch sampler"):
            print(f"{name:30s} {us:8.2f} {'':>12s} {'':>7s}")
        else:
            print(f"{name:30s} {us:8.2f} {us - base:12.2f} {us / base:7.2f}")


if __name__ == "__main__":
    main()
