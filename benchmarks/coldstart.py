"""The first call, in fresh processes: ``import nadam``, import plus the first
``minimize`` with its defaults, and the first threaded step of every rule, with numba's
cache empty (cold) and then filled by the cold process (cached).

    python benchmarks/coldstart.py [--rules adam,prodigy] [--n 1e6] [--repeat 3]
        [--against ../other-checkout]

Each figure is one fresh process (``NUMBA_CACHE_DIR`` a new temporary folder for the cold
ones, the same folder again for the cached ones), timed inside it with
``time.perf_counter``: the interpreter's own start-up is left out.  With ``--against``,
another checkout (a ``git worktree`` of an earlier commit, say) runs each probe right after
this one, so that the two are compared under the same load; ``--repeat`` runs every probe
that many times and prints the best and the mean.
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


def probe(what: str, n: int, cache: str, root: Path = HERE.parent) -> tuple[float, float]:
    """``(import nadam, then the call)`` in seconds, in a fresh process importing the
    nadam of the checkout ``root``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, what, str(n)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    first, second = out.stdout.split()
    return float(first), float(second)


def figures(what: str, n: int, root: Path) -> tuple[float, float]:
    """``(cold, cached)`` seconds of one row, for the checkout ``root``."""
    with tempfile.TemporaryDirectory() as cache:
        cold = probe(what, n, cache, root)
        warm = probe(what, n, cache, root)
    if what == "import":
        return cold[0], warm[0]
    if what == "minimize":
        return cold[0] + cold[1], warm[0] + warm[1]
    return cold[1], warm[1]


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(HERE.parent))
    from nadam.rules import RULES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rules", default=",".join(sorted(RULES)))
    ap.add_argument("--n", default="1e6", help="elements of the threaded steps")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each probe (best, mean)")
    ap.add_argument("--against", type=Path, help="another checkout, run alternately")
    a = ap.parse_args(argv)
    n = int(float(a.n))
    roots = {"": HERE.parent} if a.against is None else {"this": HERE.parent, "against": a.against}
    columns = "".join(f" {f'{r} {c}'.strip():>22s}" for r in roots for c in ("cold", "cached"))
    print(f"{'what':44s}{columns}")
    rows = [("import", "import nadam"), ("minimize", "import + first minimize (defaults)")]
    rows += [(r, f"first threaded step, {r}, N = {n:,}") for r in a.rules.split(",")]
    for what, label in rows:
        runs = {r: [] for r in roots}
        for _ in range(a.repeat):
            for r, root in roots.items():  # alternately: the same load for both
                runs[r].append(figures(what, n, root))
        cells = ""
        for r in roots:
            for k in (0, 1):
                values = [run[k] for run in runs[r]]
                best, mean = min(values), sum(values) / len(values)
                cell = f"{best:.2f}s" if a.repeat == 1 else f"{best:.2f}/{mean:.2f}s"
                cells += f" {cell:>22s}"
        print(f"{label:44s}{cells}", flush=True)


if __name__ == "__main__":
    main()
