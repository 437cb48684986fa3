"""Serial/parallel crossover of the kernels: where the ``prange`` loop starts to win.

Run: ``python benchmarks/crossover.py [--rules adam,sgd] [--rounds 9] [--lo 1e3] [--hi 1e6]``

For every case (rule + options) and dtype, times the serial and the parallel kernel
interleaved at N = lo ... hi (a quarter-octave grid) and reports the crossover: the
smallest N from which the parallel kernel is faster at every larger size of the
grid.  Does the same for ``all_finite`` (the gradient check, read-only).  Prints
the geometric mean of the kernel crossovers (the single threshold that balances the
cheap rules, which cross late, against the expensive ones, which cross early) --
the value to put in ``nadam.kernels.cpu.PARALLEL_THRESHOLD`` -- and the same for
``FINITE_PARALLEL_THRESHOLD``.

The crossover is where the threads' start-up (a few µs with numba's TBB layer)
equals half the serial time, so it moves with the rule's cost per element: from a
few thousand elements for the divide/sqrt-bound float64 rules to a few tens of
thousands for float32 SGD.  Measure on a quiet machine: a core busy with another
process delays every parallel call by a scheduler tick.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, interleave, machine, make_arrays, sizes  # noqa: E402

from nadam.kernels import cpu  # noqa: E402
from nadam.rules import get_rule  # noqa: E402
from nadam.threads import load_tbb  # noqa: E402


def grid(lo: int, hi: int) -> list[int]:
    """Quarter-octave sizes from lo to hi."""
    out, k = [], math.log2(lo)
    while 2**k <= hi * 1.0001:
        out.append(int(round(2**k)))
        k += 0.25
    return out


def crossover(ns: list[int], ratio: list[float]) -> float:
    """Where serial/parallel crosses 1 for good: the ratios are smoothed with a running
    median of three (one parallel sample delayed by another process's load should
    not move the answer), then the smallest n from which every smoothed ratio is
    > 1, interpolated geometrically; inf if never, ``ns[0]`` if always."""
    r = [float(np.median(ratio[max(0, j - 1) : j + 2])) for j in range(len(ratio))]
    for j in range(len(ns)):
        if all(x > 1 for x in r[j:]):
            if j == 0:
                return ns[0]
            r0, r1 = math.log(r[j - 1]), math.log(r[j])
            f = -r0 / (r1 - r0) if r1 != r0 else 0.5
            return math.exp(math.log(ns[j - 1]) + f * (math.log(ns[j]) - math.log(ns[j - 1])))
    return math.inf


def _ratio(serial, parallel, args, rounds) -> float:
    """Best serial time / best parallel time of ``f(*args)``, interleaved."""
    t = interleave(
        {"nadam serial": lambda: serial(*args), "nadam parallel": lambda: parallel(*args)},
        rounds,
        sample_s=1e-3,
    )
    return t["nadam serial"].min() / t["nadam parallel"].min()


def kernel_curve(case, dtype, ns, rounds):
    rule = get_rule(case.rule)
    ks, kp = cpu.kernel(rule, case.flags, False, "raw"), cpu.kernel(rule, case.flags, True, "raw")
    return [_ratio(ks, kp, make_arrays(case, n, dtype)[:4], rounds) for n in ns]


def finite_curve(dtype, ns, rounds):
    rng = np.random.default_rng(0)
    return [
        _ratio(
            cpu.all_finite_serial,
            cpu._all_finite_parallel,
            (rng.standard_normal(n).astype(dtype),),
            rounds,
        )
        for n in ns
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", help="comma-separated rules or case labels (default: all)")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--lo", default="1e3")
    ap.add_argument("--hi", default="1e6")
    a = ap.parse_args(argv)
    load_tbb()  # the threading layer of nadam's kernels (nadam.threads)
    if numba.get_num_threads() < 2:
        print("numba runs one thread here: nothing to measure")
        return 0
    cases = CASES
    if a.rules:
        want = [r.strip().lower() for r in a.rules.split(",")]
        cases = tuple(c for c in CASES if c.rule in want or c.label in want)
    ns = grid(sizes(a.lo)[0], sizes(a.hi)[0])
    print(machine())
    print(f"serial time / parallel time (>1: parallel wins), best of {a.rounds}")
    print(f"{'case':32s} {'dtype':8s} " + " ".join(f"{n:>7d}" for n in ns) + "  crossover")
    found = []
    for case in cases:
        for dtype in a.dtypes.split(","):
            r = kernel_curve(case, dtype, ns, a.rounds)
            c = crossover(ns, r)
            found.append(c)
            print(
                f"{case.label:32s} {dtype:8s} " + " ".join(f"{x:7.2f}" for x in r) + f"  {c:9,.0f}",
                flush=True,
            )
    fin = []
    for dtype in a.dtypes.split(","):
        r = finite_curve(dtype, ns, a.rounds)
        c = crossover(ns, r)
        fin.append(c)
        print(
            f"{'all_finite':32s} {dtype:8s} " + " ".join(f"{x:7.2f}" for x in r) + f"  {c:9,.0f}",
            flush=True,
        )
    ok = [c for c in found if math.isfinite(c)]
    if ok:
        gm = math.exp(sum(math.log(c) for c in ok) / len(ok))
        print(
            f"\nkernel crossovers: min {min(ok):,.0f}, max {max(ok):,.0f}, "
            f"geometric mean {gm:,.0f}  -> PARALLEL_THRESHOLD ~ 2**{round(math.log2(gm))}"
            f"  (now {cpu.PARALLEL_THRESHOLD:,})"
        )
    fok = [c for c in fin if math.isfinite(c)]
    if fok:
        gm = math.exp(sum(math.log(c) for c in fok) / len(fok))
        print(
            f"all_finite crossovers: {', '.join(f'{c:,.0f}' for c in fok)}"
            f"  -> FINITE_PARALLEL_THRESHOLD ~ 2**{round(math.log2(gm))}"
            f"  (now {cpu.FINITE_PARALLEL_THRESHOLD:,})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
