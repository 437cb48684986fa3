"""Helpers shared by the benchmark scripts (the timing machinery itself is
``benchmarks/bench.py``, which ``python -m nadam bench`` runs from a checkout).

* :func:`sizes` parses ``1e2,1e3,3e7``-style lists;
* :func:`fresh_process` runs Python code in a new interpreter with a chosen numba
  cache directory and returns what it printed as JSON (first-call latency);
* :func:`plot_sweep` draws time per element against N.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import (  # noqa: F401 (re-exported for the scripts)
    CASES,
    PEERS,
    Case,
    Result,
    detail,
    floor_kernel,
    interleave,
    machine,
    make_arrays,
    run_case,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent


def sizes(text: str) -> tuple[int, ...]:
    """``"1e2,1e3,3e7"`` -> ``(100, 1000, 30000000)``."""
    return tuple(int(float(x)) for x in text.split(",") if x.strip())


def fresh_process(code: str, cache_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Run ``code`` in a new interpreter whose numba cache is ``cache_dir``; the code
    must print one JSON object as its last line, which is returned."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_results(path: str | os.PathLike) -> tuple[dict, list[Result]]:
    """The run saved by ``kernels.py --json``: (the run's dict, its Results)."""
    import numpy as np

    data = json.loads(Path(path).read_text())
    by_label = {c.label: c for c in CASES}
    results = []
    for d in data.get("results", []):
        r = Result(
            by_label[d["case"]],
            d["dtype"],
            d["n"],
            d["bytes_per_element"],
            {k: np.array(v) for k, v in d["times"].items()},
        )
        r.others = d.get("others", float("nan"))
        results.append(r)
    return data, results


def plot_sweep(
    results: list[Result], path: str | os.PathLike, rule: str = "adam", title: str | None = None
) -> None:
    """Time per element against N for every candidate of ``rule``'s default case,
    one panel per dtype, log-log; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in results if r.case == Case(rule)]
    dtypes = sorted({r.dtype for r in rs}, reverse=True)
    fig, axes = plt.subplots(
        1, len(dtypes), figsize=(6.2 * len(dtypes), 4.6), sharey=True, squeeze=False
    )
    style = {  # candidate: (legend label, line style)
        "floor parallel": ("memory floor, all cores", dict(color="0.45", ls="--", lw=2.2)),
        "floor serial": ("memory floor, one core", dict(color="0.75", ls="--", lw=1.5)),
        "nadam step": ("nadam Adam.step(g)", dict(color="C3", lw=2.6)),
        "nadam step ignore": (
            "nadam Adam.step(g), nonfinite='ignore'",
            dict(color="C3", lw=1.4, ls="-."),
        ),
        "nadam parallel": ("nadam kernel, all cores", dict(color="C1", ls=":", lw=1.8)),
        "nadam serial": ("nadam kernel, one core", dict(color="C1", ls=":", lw=1.0)),
        "numpy": ("NumPy textbook", dict(color="C2")),
        "torch loop": ("torch for-loop", dict(color="C0", ls=":")),
        "torch foreach": ("torch foreach", dict(color="C0", ls="--")),
        "torch fused": ("torch fused", dict(color="C0", lw=2)),
        "optax jit": ("optax, jax.jit", dict(color="C4")),
    }
    for ax, dtype in zip(axes[0], dtypes, strict=False):
        sub = sorted((r for r in rs if r.dtype == dtype), key=lambda r: r.n)
        for name, (label, st) in style.items():
            pts = [(r.n, r.best(name) / r.n * 1e9) for r in sub if name in r.times]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="o", ms=3, label=label, **st)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (elements)")
        ax.set_title(f"{rule}, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("time per element per step (ns)")
    axes[0][-1].legend(fontsize=7.5, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
