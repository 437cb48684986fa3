"""Kernel benchmark: every rule against its memory floor and the peers.

Run from the repository root (``pip install -e .[bench]``; ``pip install jax optax``
adds optax)::

    python benchmarks/kernels.py                       # everything, a few minutes
    python benchmarks/kernels.py --rules adam --sizes 1e7 --rounds 15
    python benchmarks/kernels.py --quick               # seconds: Adam, two sizes

In one process, interleaved (round-robin, best and median of ``--rounds``):

1. **Latency** (fresh processes): import, compile time of the Adam kernels
   (serial, parallel) and stepper, and the first ``step`` at N = 10^3 and 10^6,
   with an empty numba cache (cold) and again with the cache it left (warm).
2. **Python-call cost at N = 1000**: ``opt.step(g)`` with the default finiteness
   check and with ``nonfinite="ignore"``, the compiled stepper and kernel called
   directly, an empty jitted function of the same 7 arguments (numba's dispatch
   floor), the NumPy textbook step, torch (for-loop, foreach, fused), optax.
3. **Sweep**: for each case (every rule, plus amsgrad and centered+momentum
   RMSprop), float64 and float32, each N: nadam serial/parallel kernel, the floor
   kernel (same loop, same arrays, trivial arithmetic) serial/parallel, the
   class ``step``, NumPy, torch, optax.  Detailed table per case, then a summary:
   kernel/floor ratios, effective GB/s, each peer's time over nadam's.
4. **Plot** (PNG): ns per element against N for Adam, float64 and float32.

Default sizes: Adam over 10^2 ... 3*10^7 (the plot), the other cases at
10^3, 10^5 and 10^7.  Ratios, not absolute times, are the result: the machine is
shared.  ``--json`` saves every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/bench.py, the kernel benchmark of `python -m nadam bench`)
from common import (  # noqa: E402
    CASES,
    ROOT,
    Case,
    detail,
    fresh_process,
    interleave,
    load_results,
    machine,
    plot_sweep,
    run_case,
    sizes,
    summary,
)

import nadam  # noqa: E402
from nadam.kernels import cpu
from nadam.rules import get_rule  # noqa: E402
from nadam.threads import get_threads  # noqa: E402

ADAM_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 30_000_000)
OTHER_SIZES = (1_000, 100_000, 10_000_000)

# ---------------------------------------------------------------------------------
# 1. compile time and first-call latency, in fresh processes
# ---------------------------------------------------------------------------------

_LATENCY = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import nadam
from nadam.kernels import cpu
from nadam.rules import ADAM
t1 = time.perf_counter()
sig_p = np.zeros(4); sig_s = np.zeros((2, 4)); h = np.zeros(10)
out = {"import_s": t1 - t0}
t = time.perf_counter(); cpu.kernel(ADAM, (False,), False)(sig_p, sig_p, sig_s, h)
out["kernel_serial_s"] = time.perf_counter() - t
t = time.perf_counter(); cpu.kernel(ADAM, (False,), True)(sig_p, sig_p, sig_s, h)
out["kernel_parallel_s"] = time.perf_counter() - t
stepper = cpu.stepper(ADAM, (False,), False)
t = time.perf_counter(); stepper(sig_p, sig_p, sig_s, np.zeros(8), 1, np.zeros(0), h)
out["stepper_serial_s"] = time.perf_counter() - t
t = time.perf_counter(); cpu.all_finite(sig_p)
out["all_finite_s"] = time.perf_counter() - t
print(json.dumps(out))
"""

_FIRST_STEP = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import nadam
t1 = time.perf_counter()
out = {"import_s": t1 - t0}
for n in (1_000, 1_000_000):
    x = np.zeros(n); g = np.ones(n)
    t = time.perf_counter(); opt = nadam.Adam(x); opt.step(g)
    out[f"first_step_{n}_s"] = time.perf_counter() - t
    t = time.perf_counter(); opt.step(g)
    out[f"second_step_{n}_s"] = time.perf_counter() - t
print(json.dumps(out))
"""


def latency() -> dict:
    """Compile time (cold cache) and the first step in a fresh process, cold and warm."""
    res = {}
    with tempfile.TemporaryDirectory() as cold:
        res["compile (cold cache)"] = fresh_process(_LATENCY, cold)
        res["compile (warm cache)"] = fresh_process(_LATENCY, cold)
    with tempfile.TemporaryDirectory() as cold:
        res["first step (cold cache)"] = fresh_process(_FIRST_STEP, cold)
        res["first step (warm cache)"] = fresh_process(_FIRST_STEP, cold)
    print("\n1. Compile time and first-call latency (fresh processes, Adam float64)")
    for label, d in res.items():
        times = "  ".join(f"{k[:-2]} {v * 1e3:8.1f} ms" for k, v in d.items())
        print(f"  {label:26s} {times}")
    return res


# ---------------------------------------------------------------------------------
# 2. Python-call cost at N = 1000
# ---------------------------------------------------------------------------------


@numba.njit
def _nothing(p, g, s, hp, t, aux, h):  # numba's dispatch floor for 7 arguments
    pass


def _entry_points(dtype, n: int, peers: bool) -> dict:
    """Every way of doing one Adam step on ``n`` elements of ``dtype``."""
    rule = get_rule("adam")
    case = Case("adam")
    p, g, s, h, hp, aux = bench.make_arrays(case, n, dtype)
    x1, x2, x3 = p.copy(), p.copy(), p.copy()
    o1 = nadam.Adam(x1)
    o2 = nadam.Adam(x2, nonfinite="ignore")
    parallel = cpu.choose_parallel(n, get_threads(), np.dtype(dtype).itemsize)
    stepper = cpu.stepper(rule, case.flags, parallel)
    kernel = cpu.kernel(rule, case.flags, parallel)
    st = [10]  # make_arrays took 10 steps

    def stepper_call():
        st[0] += 1
        stepper(x3, g, s, hp, st[0], aux, h)

    cands = {
        "nadam step (default: check)": lambda: o1.step(g),
        "nadam step (nonfinite=ignore)": lambda: o2.step(g),
        "nadam stepper (compiled call)": stepper_call,
        "nadam kernel (compiled call)": lambda: kernel(x3, g, s, h),
        "nadam all_finite(g)": lambda: cpu.all_finite(g),
        "numba empty call, 7 args": lambda: _nothing(x3, g, s, hp, 1, aux, h),
        "numpy textbook": bench.numpy_step("adam", {}, p.copy(), g),
    }
    if peers:
        cands.update(bench.torch_steps(case, p, g))
        cands.update(bench.optax_step(case, p, g))
    return cands


def call_cost(n: int = 1_000, rounds: int = 9, peers: bool = True) -> dict:
    """µs per step of Adam at ``n`` elements through every entry point."""
    print(f"\n2. One Adam step on {n:,} elements, including the Python call (µs per step)")
    table = {}
    for dtype in ("float64", "float32"):
        t = interleave(_entry_points(dtype, n, peers), rounds)
        table[dtype] = {k: float(v.min()) for k, v in t.items()}
        table[dtype + " median"] = {k: float(np.median(v)) for k, v in t.items()}
    print(f"  {'entry point':32s} {'float64':>9s} {'float32':>9s}")
    for name in table["float64"]:
        f64, f32 = table["float64"][name], table["float32"][name]
        print(f"  {name:32s} {f64 * 1e6:9.2f} {f32 * 1e6:9.2f}")
    return table


# ---------------------------------------------------------------------------------
# 3. the sweep
# ---------------------------------------------------------------------------------


def sweep(cases, adam_sizes, other_sizes, dtypes, rounds, peers, verbose) -> list:
    print("\n3. Sweep: kernels vs floor vs peers")
    results = []
    for case in cases:
        ns = adam_sizes if case == Case("adam") else other_sizes
        for dtype in dtypes:
            for n in ns:
                t0 = time.perf_counter()
                res = run_case(case, dtype, n, rounds=rounds, peers=peers)
                results.append(res)
                if verbose:
                    detail(res)
                    print(f"  ({time.perf_counter() - t0:.1f} s)")
    summary(results)
    return results


def markdown_report(out: dict, results: list) -> str:
    """Latency, call-cost and summary tables in Markdown (docs/benchmarks.md)."""
    md = [f"Machine: {out['machine']}\n"]
    if "latency" in out:
        for label, d in out["latency"].items():
            md.append(
                f"- {label}: "
                + ", ".join(f"{k[:-2].replace('_', ' ')} {v * 1e3:.0f} ms" for k, v in d.items())
            )
        md.append("")
    if "calls" in out:
        c = out["calls"]
        md.append("| one Adam step, N = 1000 | float64 (µs) | float32 (µs) |")
        md.append("|---|---|---|")
        for name in c["float64"]:
            f64, f32 = c["float64"][name] * 1e6, c["float32"][name] * 1e6
            md.append(f"| {name} | {f64:.2f} | {f32:.2f} |")
        md.append("")
    md.append(bench.markdown(results))
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", help="comma-separated rules or case labels (default: all)")
    ap.add_argument("--sizes", help="N list for every case (default: see the docstring)")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-peers", action="store_true", help="skip torch and optax")
    ap.add_argument("--quick", action="store_true", help="Adam at 1e3 and 1e6, no latency, no plot")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-calls", action="store_true")
    ap.add_argument(
        "--plot", default=str(ROOT / "docs" / "img" / "kernels.png"), help="PNG path ('' for none)"
    )
    ap.add_argument("--json", help="save all samples to this file")
    ap.add_argument("--markdown", help="save the tables as Markdown to this file")
    ap.add_argument(
        "--from-json",
        help="measure nothing: redo the tables and the plot from a run saved with --json",
    )
    ap.add_argument("--brief", action="store_true", help="summary table only")
    a = ap.parse_args(argv)

    cases = CASES
    if a.rules:
        want = [r.strip().lower() for r in a.rules.split(",")]
        cases = tuple(c for c in CASES if c.rule in want or c.label in want)
    adam_sizes, other_sizes = ADAM_SIZES, OTHER_SIZES
    if a.sizes:
        adam_sizes = other_sizes = sizes(a.sizes)
    if a.quick:
        cases, adam_sizes, other_sizes = (Case("adam"),), (1_000, 1_000_000), ()
        a.skip_latency, a.plot, a.rounds = True, "", min(a.rounds, 5)
    dtypes = tuple(a.dtypes.split(","))

    if a.from_json:
        out, results = load_results(a.from_json)
        print(out["machine"])
        summary(results)
        if a.plot:
            plot_sweep(results, a.plot, title=out["machine"])
        if a.markdown:
            Path(a.markdown).write_text(markdown_report(out, results))
        return 0

    print(machine())
    args = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: python benchmarks/kernels.py {args}")
    out: dict = {"machine": machine()}
    if not a.skip_latency:
        out["latency"] = latency()
    if not a.skip_calls:
        out["calls"] = call_cost(peers=not a.no_peers)
    results = sweep(cases, adam_sizes, other_sizes, dtypes, a.rounds, not a.no_peers, not a.brief)
    if a.plot and any(r.case == Case("adam") for r in results):
        plot_sweep(results, a.plot, title=machine())
        print(f"\nplot: {os.path.relpath(a.plot)}")
    if a.markdown:
        Path(a.markdown).write_text(markdown_report(out, results))
    if a.json:
        out["results"] = [
            {
                "case": r.case.label,
                "dtype": r.dtype,
                "n": r.n,
                "bytes_per_element": r.bytes_per_element,
                "others": r.others,
                "times": {k: v.tolist() for k, v in r.times.items()},
            }
            for r in results
        ]
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
