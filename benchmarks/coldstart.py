"""The first call, in fresh processes: ``import nadam``, import plus the first
``minimize`` with its defaults, and the first threaded step of every rule, with numba's
cache empty (cold) and then filled by the cold process (cached).

    python benchmarks/coldstart.py [--rules adam,prodigy] [--n 1e6] [--repeat 3]
        [--against ../other-checkout] [--instructions]

Each figure is one fresh process (``NUMBA_CACHE_DIR`` a new temporary folder for the cold
ones, the same folder again for the cached ones), timed inside it with
``time.perf_counter``: the interpreter's own start-up is left out.  With ``--against``,
another checkout (a ``git worktree`` of an earlier commit, say) runs each probe right after
this one, so that the two are compared under the same load; ``--repeat`` runs every probe
that many times and prints the best and the mean.

``--instructions`` counts instead the instructions that each cold probe executes, from
the interpreter's start to its exit, under valgrind's callgrind (which must be
installed; ~50x slower).  The count does not move with the machine's load, which on a
shared machine moves the times of a first call by +-20 %: a change of a few percent in
what compiling costs shows in one run.  Its threaded-step rows run the step of an
optimizer made with ``threads=1``: what the first threaded step compiles before it
returns (its serial twin, ``nadam.kernels.tiered``) without the threaded compile that
follows in the background.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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
    serial = len(sys.argv) > 3
    t3 = time.perf_counter()
    opt = nadam.optimizer_class(what)(x, threads=1 if serial else None)
    assert serial or opt.variant[2], "not threaded: pass a larger --n or use two cores or more"
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
    # Run in the checkout: ``python -c`` puts its working directory first on sys.path,
    # ahead of PYTHONPATH (from another checkout's root, that checkout's nadam ran).
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, what, str(n)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=True,
    )
    first, second = out.stdout.split()
    return float(first), float(second)


def instructions(what: str, n: int, root: Path) -> float:
    """Billions of instructions that a cold probe of the checkout ``root`` executes
    (callgrind; a threaded step's probe on one thread, see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        # One thread everywhere (idle worker threads add instructions that vary from run
        # to run), and one order of iterating sets: hash randomisation moved the count
        # of one probe by up to 4 %; with it fixed, two runs differ by a few hundred.
        fixed = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        env = {**os.environ, **fixed, "PYTHONHASHSEED": "0", "NUMBA_CACHE_DIR": tmp}
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out"]
            + [sys.executable, "-c", _PROBE, what, str(n), "serial"],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,  # (see probe)
            check=True,
        )
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1)) / 1e9


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
    ap.add_argument("--instructions", action="store_true", help="count them (callgrind)")
    a = ap.parse_args(argv)
    unknown = sorted(set(a.rules.split(",")) - set(RULES))
    if unknown:
        ap.error(f"--rules: unknown {', '.join(unknown)}; allowed: {', '.join(sorted(RULES))}")
    if a.instructions and shutil.which("valgrind") is None:
        ap.error("--instructions runs valgrind's callgrind: install valgrind first")
    n = int(float(a.n))
    roots = {"": HERE.parent} if a.against is None else {"this": HERE.parent, "against": a.against}
    if a.instructions:
        count_instructions(a.rules.split(","), n, roots)
        return
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


def count_instructions(rules: list[str], n: int, roots: dict[str, Path]) -> None:
    """Print the instructions of each cold probe, in billions, and those of the call
    (the probe's less the ``import nadam`` probe's)."""
    print(
        f"{'cold, instructions (10^9): process / the call':52s}"
        + "".join(f" {r or 'this':>16s}" for r in roots)
    )
    base = {r: instructions("import", n, root) for r, root in roots.items()}
    print(f"{'import nadam':52s}" + "".join(f" {base[r]:16.2f}" for r in roots), flush=True)
    rows = [("minimize", "import + first minimize (defaults)")]
    rows += [(rule, f"first step, {rule}, N = {n:,} (one thread)") for rule in rules]
    for what, label in rows:
        cells = ""
        for r, root in roots.items():
            total = instructions(what, n, root)
            cells += f" {f'{total:.2f} / {total - base[r]:.2f}':>16s}"
        print(f"{label:52s}{cells}", flush=True)


if __name__ == "__main__":
    main()
