"""nadam's defaults on transformed problems of the suite: other seeds (minibatch), the
objective scaled by 1e3 and 1e-3, and the parameters rescaled, x = s * u with
s_i = 10^U(-2, 2) (a fixed draw).  None of these was looked at while the defaults were
designed.

    python benchmarks/fits/stress.py [--set design|holdout|all]

Prints one line per problem (relative excess of the full-data loss of each variant,
``!`` when not solved, gradient evaluations) and the count solved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import problems as PR  # noqa: E402

import nadam  # noqa: E402


def variants(p: PR.Problem) -> list[tuple[str, object, np.ndarray, int, float]]:
    """``(label, fun, x0, seed, scale of f)`` of each transformed copy of ``p``."""
    out = []
    if p.batch_size:
        out += [(f"seed{s}", p.fun, p.x0, s, 1.0) for s in (1, 2, 3)]
    for scale in (1e3, 1e-3):

        def scaled(x, *a, f=p.fun, c=scale):
            value, grad = f(x, *a)
            return c * value, c * grad

        out.append((f"f*{scale:g}", scaled, p.x0, 0, scale))
    s = 10 ** np.random.default_rng(42).uniform(-2, 2, size=p.x0.size)

    def rescaled(u, *a, f=p.fun, s=s):
        value, grad = f(s * u, *a)
        return value, grad * s

    out.append(("x=s*u", rescaled, p.x0 / s, 0, 1.0))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="design", choices=("design", "holdout", "all"))
    a = ap.parse_args(argv)
    hold = {"design": False, "holdout": True, "all": None}[a.set]
    total = solved = 0
    for p in PR.problems(hold):
        cells = []
        for label, fun, x0, seed, scale in variants(p):
            options = {"seed": seed}
            if p.batch_size:
                options["batch_size"] = p.batch_size
            start = time.perf_counter()
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                res = nadam.minimize(fun, x0.copy(), args=p.args, jac=True, options=options)
            fx = float(fun(res.x, *p.args)[0]) / scale
            excess = (fx - p.f_star) / max(abs(p.f_star), PR.TINY)
            good = bool(excess <= p.tol)
            total += 1
            solved += good
            seconds = time.perf_counter() - start
            mark = "" if good else "!"
            cells.append(f"{label}:{excess:.0e}{mark}({res.njev / 1000:.1f}k,{seconds:.0f}s)")
        print(f"{p.name:28s} " + " ".join(cells), flush=True)
    print(f"solved {solved}/{total}")


if __name__ == "__main__":
    main()
