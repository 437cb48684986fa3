"""The kernels on a shared machine: the mean time of an ``Adam.step`` with nadam's
default threads against one thread, alone and under contention, for each threading layer.

    python benchmarks/contention.py [--sizes 3e4,1e5,1e6,1e7] [--seconds 3]
                                    [--layers default,omp,workqueue] [--dtype float32]

Scenarios (each process times the two candidates interleaved, in slices of ~0.1 s, and
reports the mean and the median time per step of each):

* ``alone``: one process;
* ``all cores``: as many processes as cores, each running the benchmark at once;
* ``beside busy``: one process beside as many busy processes (pure-Python loops) as
  cores.

Layers: ``default`` is nadam's (TBB where the ``tbb`` package is installed:
:mod:`nadam.threads`), the others are forced with ``NUMBA_THREADING_LAYER``.  The
ratio default / one thread is what a user who never sets ``threads`` gets: above 1
the threads cost time.  Absolute times are printed for reference only; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(n: int, dtype: str, seconds: float, start: float) -> dict:
    """Time ``Adam.step`` with the default threads and with one, interleaved, from the
    wall-clock time ``start`` on (so that concurrent workers overlap)."""
    import numpy as np

    import nadam
    from nadam.kernels.tiered import wait

    x = {k: np.zeros(n, dtype) for k in ("default", "one thread")}
    g = np.full(n, 1e-3, dtype)
    opts = {
        "default": nadam.Adam(x["default"], lr=1e-3),
        "one thread": nadam.Adam(x["one thread"], lr=1e-3, threads=1),
    }
    for opt in opts.values():  # compile outside the timing (the threaded step too)
        opt.step(g)
    wait()
    samples: dict[str, list[float]] = {k: [] for k in opts}
    while time.time() < start:
        time.sleep(0.001)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, opt in opts.items():
            stop = time.perf_counter() + 0.1
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                opt.step(g)
                samples[name].append(time.perf_counter() - t0)
    out = {
        k: {"mean": float(np.mean(v)), "median": float(np.median(v))} for k, v in samples.items()
    }
    out["threaded"] = bool(opts["default"].variant[2])
    out["threads"] = opts["default"].threads
    import numba

    out["layer"] = numba.threading_layer() if out["threaded"] else "-"
    return out


def spin(seconds: float) -> None:
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1


def launch(args: list[str], layer: str) -> subprocess.Popen:
    env = dict(os.environ)
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=env
    )


def scenario(kind: str, n: int, dtype: str, seconds: float, layer: str, cores: int) -> dict:
    """Run one scenario; returns the first measuring process's result."""
    start = time.time() + 4.0  # time to import and compile (cached after the first run)
    job = ["--worker", str(n), dtype, str(seconds), repr(start)]
    measuring = [launch(job, layer)]
    others = []
    if kind == "all cores":
        measuring += [launch(job, layer) for _ in range(cores - 1)]
    elif kind == "beside busy":
        others = [launch(["--spin", repr(start + seconds + 8.0)], layer) for _ in range(cores)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in measuring]
    for p in others:
        p.kill()
        p.wait()
    return results[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="3e4,1e5,1e6,1e7")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--layers", default="default,omp,workqueue")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--worker", nargs=4)
    ap.add_argument("--spin", type=float)
    a = ap.parse_args(argv)
    if a.worker:
        n, dtype, seconds, start = a.worker
        print(json.dumps(worker(int(n), dtype, float(seconds), float(start))), flush=True)
        return
    if a.spin:
        spin(a.spin - time.time())
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    sys.path.insert(0, HERE)
    from common import machine

    print(machine())
    print(
        f"Adam.step, {a.dtype}: mean time per step with the default threads over one thread "
        "(median in brackets); >1: the threads cost time.  Per-step means in µs."
    )
    print(
        f"{'layer':10s} {'scenario':12s} {'N':>11s} {'threads':>7s} {'default/1':>10s} "
        f"{'(median)':>9s} {'default µs':>11s} {'1 thread µs':>11s}"
    )
    for layer in a.layers.split(","):
        for kind in ("alone", "all cores", "beside busy"):
            for n in (int(float(v)) for v in a.sizes.split(",")):
                r = scenario(kind, n, a.dtype, a.seconds, layer, cores)
                d, o = r["default"], r["one thread"]
                threads = f"{r['threads']}" if r["threaded"] else "serial"
                name = r["layer"] if layer == "default" and r["threaded"] else layer
                print(
                    f"{name:10s} {kind:12s} {n:11,d} {threads:>7s} "
                    f"{d['mean'] / o['mean']:10.2f} {d['median'] / o['median']:9.2f} "
                    f"{d['mean'] * 1e6:11.1f} {o['mean'] * 1e6:11.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
