"""The first call, in fresh processes: ``import nadam``, import plus the first
``minimize`` with its defaults, and the first threaded step of every rule, with numba's
cache empty (cold) and then filled by the cold process (cached).

    python benchmarks/coldstart.py [--rules adam,prodigy] [--n 1e6]

Each figure is one fresh process (``NUMBA_CACHE_DIR`` a new temporary folder for the cold
ones, the same folder again for the cached ones), timed inside it with
``time.perf_counter``: the interpreter's own start-up is left out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_PROBE = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import nadam
t2 = time.perf_counter()
what, n = sys.argv[1], int(float(sys.argv[2]))
if what == "minimize":
    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(100, 3)), rng.normal(size=100)
    def f(x, A, b):
        r = A @ x - b
        return r @ r / len(b), 2 * A.T @ r / len(b)
    t3 = time.perf_counter()
    nadam.minimize(f, np.zeros(3), args=(A, b), jac=True)
elif what != "import":
    x, g = np.zeros(n), np.ones(n)
    t3 = time.perf_counter()
    opt = nadam.optimizer_class(what)(x)
    assert opt.variant[2], "not threaded: pass a larger --n or run on two cores or more"
    opt.step(g)
else:
    t3 = time.perf_counter()
t4 = time.perf_counter()
print(t2 - t1, t4 - t3)
"""


def probe(what: str, n: int, cache: str) -> tuple[float, float]:
    """``(import nadam, then the call)`` in seconds, in a fresh process."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, what, str(n)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    first, second = out.stdout.split()
    return float(first), float(second)


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(HERE.parent))
    from nadam.rules import RULES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rules", default=",".join(sorted(RULES)))
    ap.add_argument("--n", default="1e6", help="elements of the threaded steps")
    a = ap.parse_args(argv)
    n = int(float(a.n))
    print(f"{'what':40s} {'cold':>8s} {'cached':>8s}")
    rows = [("import", "import nadam"), ("minimize", "import + first minimize (defaults)")]
    rows += [(r, f"first threaded step, {r}, N = {n:,}") for r in a.rules.split(",")]
    for what, label in rows:
        with tempfile.TemporaryDirectory() as cache:
            cold = probe(what, n, cache)
            warm = probe(what, n, cache)
        if what == "import":
            figures = cold[0], warm[0]
        elif what == "minimize":
            figures = cold[0] + cold[1], warm[0] + warm[1]
        else:
            figures = cold[1], warm[1]
        print(f"{label:40s} {figures[0]:7.2f}s {figures[1]:7.2f}s", flush=True)


if __name__ == "__main__":
    main()
