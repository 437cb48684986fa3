"""The benchmark scripts still run: each starts (``--help``: its imports), and the quick
ones run with their smallest options, without the peers.  Nothing else runs them between
measurements, and three of them had stopped running after renames in nadam (an import,
a rule's method, a helper's return values) unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "benchmarks").rglob("*.py")
    if p.name != "common.py"  # a module of the others
)


def run(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"


def test_every_benchmark_script_is_listed():
    assert {"benchmarks/kernels.py", "benchmarks/fits/run.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_script_starts(script):
    run([script, "--help"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["benchmarks/kernels.py", "--quick", "--no-peers", "--rounds", "1", "--skip-latency"],
        ["benchmarks/bench.py", "--quick", "--no-peers", "--rounds", "1", "--brief"],
        ["benchmarks/minimize_overhead.py", "--steps", "20", "--repeats", "1"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_quick_benchmark_runs(argv):
    run(argv)
