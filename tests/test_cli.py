"""The command line: ``python -m nadam demo | bench`` and the ``nadam`` console script."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nadam import __main__ as cli

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--rows", "4000", "--features", "6", "--steps", "600", "--batch-size", "64"]


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out and "warmup" in out


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "command" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--quick"], ["--help"], ["--quick", "--rules", "adam"], []])
def test_bench_hands_its_arguments_to_the_benchmark(monkeypatch, argv):
    """``python -m nadam bench`` runs benchmarks/bench.py of the checkout, with its arguments."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda a: seen.append(a) or 0)
    assert cli.main(["bench", *argv]) == 0
    assert seen == [argv]


def test_bench_outside_a_checkout_says_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_benchmarks_folder", lambda: None)
    assert cli.main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_demo_leads_with_the_answer_then_the_table_and_a_paired_speed(capsys):
    assert cli.main(["demo", *SMALL, "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[2].startswith("answer: nadam.minimize") and "L-BFGS-B" in lines[2]
    for row in ("nadam.minimize, Adam", "textbook NumPy Adam", "scipy L-BFGS-B", "compiling"):
        assert row in out
    assert "median of 9 paired runs" in out
    # no scipy-style block that reads like a failure (issue 15 item 14)
    assert "Maximum number of iterations" not in out


def test_paired_speedup_is_the_median_of_paired_ratios():
    slow = lambda: sum(range(20_000))  # noqa: E731
    fast = lambda: sum(range(2_000))  # noqa: E731
    median, low, high, busy = cli.paired_speedup(slow, fast, rounds=5)
    assert low <= median <= high and median > 2
    assert busy != busy or 0.0 <= busy <= 1.0  # nan where /proc/stat is missing


def test_warmup_fills_the_cache_and_says_where(tmp_path):
    code = (
        "import nadam.__main__ as m, io\n"
        "out = io.StringIO()\n"
        "spent = m.warmup(['sgd'], ['float32'], threaded=False, out=out)\n"
        "print(sorted(spent)); print(out.getvalue())\n"
    )
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "['minimize (float32)', 'sgd']" in done.stdout and str(tmp_path) in done.stdout
    assert any(p.suffix == ".nbi" for p in tmp_path.rglob("*"))  # numba's cache index files


def test_demo_fits_the_model():
    res = cli.demo(4000, 6, 2000, 64, seed=1, progress=False, out=io.StringIO())
    best = res["lbfgs"]["loss"]
    # 2000 steps of 64 rows are 32 epochs, with a cosine schedule: at the optimum.
    assert best <= res["nadam"]["loss"] < best * (1 + 1e-3)
    assert best <= res["numpy"]["loss"] < best * (1 + 1e-3)
    assert res["nadam"]["steps"] == res["numpy"]["steps"] == 2000
    assert all(res[k]["time"] > 0 for k in ("nadam", "numpy", "lbfgs", "compile"))
    speed = res["speed"]
    assert speed["low"] <= speed["median"] <= speed["high"]


def test_demo_progress_bar_goes_to_stderr(capsys):
    assert cli.main(["demo", *SMALL]) == 0
    captured = capsys.readouterr()
    assert "step/s" in captured.err or "step]" in captured.err
    assert "scipy L-BFGS-B" in captured.out


@pytest.mark.parametrize(
    "bad", [["--rows", "0"], ["--steps", "0"], ["--features", "1"], ["--batch-size", "5000"]]
)
def test_demo_rejects_bad_sizes(bad, capsys):
    argv = ["demo", "--rows", "4000", *bad]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_data_is_reproducible_and_sane():
    X, y = cli.make_data(1000, 5, seed=3)
    X2, y2 = cli.make_data(1000, 5, seed=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert X.shape == (1000, 5) and X.flags.c_contiguous and np.all(X[:, -1] == 1.0)
    assert set(np.unique(y)) == {0.0, 1.0}


def test_objective_matches_numpy():
    X, y = cli.make_data(500, 4, seed=0)
    w = np.array([0.1, -0.2, 0.3, -0.4])
    f, g = cli.logistic_loss_grad(w, X, y)
    z = X @ w
    assert f == pytest.approx(np.mean(np.logaddexp(0, z) - y * z), rel=1e-12)
    np.testing.assert_allclose(g, X.T @ (1 / (1 + np.exp(-z)) - y) / len(y), rtol=1e-12)


def test_python_dash_m_and_console_script_are_wired():
    # (tomllib is Python 3.11+; nadam supports 3.10)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[project.scripts]\nnadam = "nadam.__main__:main"' in pyproject
    out = subprocess.run(
        [sys.executable, "-m", "nadam", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out and "bench" in out
