"""How a run stops and comes back: checkpoints, resumption, preemption, non-finite values.

The promise tested here: a run killed at any moment (SIGKILL, in a subprocess)
and resumed from its checkpoint, as often as it takes, ends bit for bit where an
uninterrupted run ends; SIGTERM and SIGINT stop it cleanly at the next iteration
boundary with the checkpoint written; a checkpoint of another run, or a damaged
one, is a clear error; and a non-finite objective or gradient stops the run on
the last finite iterate.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import nadam
from nadam import Minimizer, Status, checkpoint
from nadam.loop.runner import SIGNALS, Runner

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_preempt_worker.py"
_spec = importlib.util.spec_from_file_location("_preempt_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

POSIX = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
TIMEOUT = 60.0  # seconds for a subprocess to reach a checkpoint: generous for a loaded machine


# ---------------------------------------------------------------------------
# Subprocesses: killed at random moments, resumed, bit-identical
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    """The worker's run, uninterrupted and without checkpoints, in this process."""
    return worker.run()


def _start(tmp_path: Path, life: int) -> subprocess.Popen:
    log = open(tmp_path / f"worker{life}.log", "wb")  # a file: a pipe could fill and block
    with log:
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path / "run.npz"),
                str(tmp_path / "out.npz"),
                "0.001",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_for_checkpoint(tmp_path: Path, proc: subprocess.Popen, after: int, life: int) -> int:
    """Wait until the checkpoint holds more than ``after`` steps; return its step count."""
    path = tmp_path / "run.npz"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            nit = checkpoint.load(path)[0]["nit"]  # os.replace: never a partial file
            if nit > after:
                return nit
        if proc.poll() is not None:
            log = (tmp_path / f"worker{life}.log").read_text()
            pytest.fail(f"the worker exited ({proc.returncode}) before its checkpoint:\n{log}")
        time.sleep(0.01)
    pytest.fail(f"no checkpoint beyond step {after} after {TIMEOUT} s")


@POSIX
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference):
    seed = random.randrange(2**32)
    rng = random.Random(seed)  # the moments are random; the seed reproduces their offsets
    nits = [0]
    for life in range(3):
        proc = _start(tmp_path, life)
        try:
            _wait_for_checkpoint(tmp_path, proc, nits[-1], life)
            time.sleep(rng.uniform(0.0, 0.05))  # often in the middle of a write (~10 ms each)
            assert proc.poll() is None, f"the run ended before kill {life} (seed {seed})"
        finally:
            proc.kill()
            proc.wait()
        nits.append(checkpoint.load(tmp_path / "run.npz")[0]["nit"])
    assert nits == sorted(set(nits)), f"every life resumed and progressed: {nits} (seed {seed})"
    assert not (tmp_path / "out.npz").exists()

    resumed = worker.run(str(tmp_path / "run.npz"))
    np.testing.assert_array_equal(resumed.x, reference.x)
    for key in ("fun", "nit", "nfev", "njev", "status", "message"):
        assert resumed[key] == reference[key], (key, seed)
    # The schedule's state was carried over: reduce-on-plateau did reduce the rate.
    assert checkpoint.load(tmp_path / "run.npz")[0]["schedule.state"][0] < 0.05
    assert not list(tmp_path.glob(".run.npz.*.tmp")), "temporary files of killed writes remain"


@POSIX
def test_sigterm_checkpoints_returns_cleanly_and_resumes_bit_identical(tmp_path, reference):
    proc = _start(tmp_path, 0)
    try:
        _wait_for_checkpoint(tmp_path, proc, 0, 0)
        time.sleep(random.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0, (tmp_path / "worker0.log").read_text()
    finally:
        proc.kill()
        proc.wait()
    with np.load(tmp_path / "out.npz") as out:
        status, message, nit = int(out["status"]), str(out["message"]), int(out["nit"])
    assert status == Status.INTERRUPTED == 5
    assert message == f"Optimization interrupted by SIGTERM after {nit} iterations."
    assert 0 < nit < worker.MAXITER
    assert checkpoint.load(tmp_path / "run.npz")[0]["nit"] == nit  # saved where it stopped

    resumed = worker.run(str(tmp_path / "run.npz"))
    np.testing.assert_array_equal(resumed.x, reference.x)
    for key in ("fun", "nit", "nfev", "njev", "status"):
        assert resumed[key] == reference[key], key


# ---------------------------------------------------------------------------
# Signals in this process: raised by the callback at a known iteration
# ---------------------------------------------------------------------------


def _problem():
    rng = np.random.default_rng(1)
    A, b = rng.normal(size=(120, 4)), rng.normal(size=120)

    def loss(x, A, b):
        r = A @ x - b
        return r @ r / len(b), 2 * A.T @ r / len(b)

    return loss, (A, b)


def _minimize(
    batch_size=16, callback=None, method="adam", x0=None, args=None, bounds=None, **options
):
    loss, data = _problem()
    opts = {
        "lr": nadam.schedules.cosine(0.05, total_steps=120, warmup_steps=10),
        "maxiter": 120,
        "batch_size": batch_size,
        "seed": 3,
        **options,
    }
    return nadam.minimize(
        loss,
        np.zeros(4) if x0 is None else x0,
        args=data if args is None else args,
        jac=True,
        method=method,
        bounds=bounds,
        callback=callback,
        options=opts,
    )


def _raise_at(nit: int, *signums: int):
    seen = []

    def callback(xk):
        seen.append(None)
        if len(seen) == nit:
            for signum in signums:
                signal.raise_signal(signum)

    return callback


@pytest.fixture
def sentinel():
    """Handlers of our own for SIGTERM and SIGINT (restored afterwards); yields the calls."""
    calls: list[int] = []

    def handler(signum, frame):
        calls.append(signum)

    old = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    yield handler, calls
    for sig, h in old.items():
        signal.signal(sig, h)


@pytest.mark.parametrize("batch_size", [16, None], ids=["minibatch", "full-batch"])
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_finishes_the_step_checkpoints_and_resumes(tmp_path, sentinel, signum, batch_size):
    handler, calls = sentinel
    path = tmp_path / "run.npz"
    opts = {"checkpoint": path, "checkpoint_every": 50, "resume": True, "batch_size": batch_size}
    stopped = _minimize(callback=_raise_at(30, signum), **opts)
    name = signal.Signals(signum).name
    assert (stopped.status, stopped.success, stopped.nit) == (5, False, 31)  # step 31 finished
    assert stopped.message == f"Optimization interrupted by {name} after 31 iterations."
    assert calls == []  # caught by minimize, not passed on
    assert all(signal.getsignal(sig) is handler for sig in SIGNALS)  # restored
    state, meta = checkpoint.load(path)
    assert state["nit"] == 31 and meta["method"] == "adam"
    np.testing.assert_array_equal(state["x"], stopped.x)
    loss, data = _problem()
    assert stopped.fun == loss(stopped.x, *data)[0]  # fun is at x, on all the data

    resumed = _minimize(**opts)
    whole = _minimize(batch_size=batch_size)
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert (resumed.nit, resumed.nfev, resumed.fun) == (whole.nit, whole.nfev, whole.fun)


def test_a_signal_before_the_first_evaluation(tmp_path, sentinel, monkeypatch):
    # E.g. while the run sets up: the run stops having taken no step.
    iterate = Runner._iterate

    def signal_first(self, max_steps):
        signal.raise_signal(signal.SIGTERM)
        return iterate(self, max_steps)

    path = tmp_path / "run.npz"
    _minimize(checkpoint=path, checkpoint_every=10, maxiter=25, return_best=True)
    monkeypatch.setattr(Runner, "_iterate", signal_first)
    res = _minimize(checkpoint=path, resume=True, maxiter=40, return_best=True)
    assert (res.status, res.nit) == (5, 25)
    state = checkpoint.load(path)[0]
    np.testing.assert_array_equal(res.x, state["best_x"])  # the best evaluated, as asked
    loss, data = _problem()
    assert res.fun == loss(res.x, *data)[0]


def test_interrupted_without_checkpoint_still_returns(sentinel):
    res = _minimize(callback=_raise_at(5, signal.SIGTERM))
    assert res.status == 5 and res.nit == 6 and np.all(np.isfinite(res.x))


def test_a_second_signal_goes_to_the_previous_handler(sentinel):
    handler, calls = sentinel
    res = _minimize(callback=_raise_at(7, signal.SIGTERM, signal.SIGTERM))
    assert calls == [signal.SIGTERM]  # the insistent second one reached our handler
    assert res.status == 5 and res.nit == 8  # and the first one still stopped the run
    assert all(signal.getsignal(sig) is handler for sig in SIGNALS)


def test_ctrl_c_twice_raises_keyboard_interrupt():
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own
    try:
        with pytest.raises(KeyboardInterrupt):
            _minimize(callback=_raise_at(7, signal.SIGINT, signal.SIGINT))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)


def test_handlers_are_restored_when_the_run_raises(tmp_path, sentinel):
    handler, _ = sentinel

    def fail_at_10(xk):
        if fail_at_10.calls == 10:
            raise RuntimeError("boom")
        fail_at_10.calls += 1

    fail_at_10.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        _minimize(callback=fail_at_10, checkpoint=tmp_path / "c.npz", checkpoint_every=4)
    assert all(signal.getsignal(sig) is handler for sig in SIGNALS)
    # The state at the failure is saved (issue 15 item 11): the callback raised at
    # iterate 11, evaluated and tracked, so its step is taken first, as the run would.
    assert checkpoint.load(tmp_path / "c.npz")[0]["nit"] == 12


def test_ignored_signals_stay_ignored():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a shell's background job
    try:
        seen = []
        _minimize(callback=lambda xk: seen.append(signal.getsignal(signal.SIGINT)), maxiter=3)
        assert seen and all(h == signal.SIG_IGN for h in seen)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_outside_the_main_thread_no_handlers_but_checkpoints(tmp_path, sentinel):
    handler, _ = sentinel
    out = {}

    def target():
        out["res"] = _minimize(checkpoint=tmp_path / "t.npz", checkpoint_every=10)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(TIMEOUT)
    assert out["res"].nit == 120 and checkpoint.load(tmp_path / "t.npz")[0]["nit"] == 120
    assert all(signal.getsignal(sig) is handler for sig in SIGNALS)


@njit(cache=True)
def _compiled_loss(x, A, b):
    r = A @ x - b
    return r @ r / len(b), 2.0 * (A.T @ r) / len(b)


def test_the_compiled_loop_stops_at_a_chunk_end_and_resumes_bit_identical(tmp_path, sentinel):
    # With a callback the compiled driver returns to Python after every iteration,
    # so the signal is seen after the same step as in the Python loop.
    path = tmp_path / "run.npz"
    _, data = _problem()
    kw = {"args": data, "jac": True}
    opts = {
        "lr": nadam.schedules.reduce_on_plateau(0.05, patience=5),
        "maxiter": 150,
        "batch_size": 16,
        "seed": 3,
        "compiled": True,
    }
    ckpt = {"checkpoint": path, "checkpoint_every": 40, "resume": True}
    stopped = nadam.minimize(
        _compiled_loss,
        np.zeros(4),
        callback=_raise_at(50, signal.SIGTERM),
        options={**opts, **ckpt},
        **kw,
    )
    assert (stopped.status, stopped.nit) == (5, 51)
    assert checkpoint.load(path)[0]["nit"] == 51
    resumed = nadam.minimize(_compiled_loss, np.zeros(4), options={**opts, **ckpt}, **kw)
    whole = nadam.minimize(_compiled_loss, np.zeros(4), options=opts, **kw)
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert (resumed.nit, resumed.nfev, resumed.fun) == (whole.nit, whole.nfev, whole.fun)


# ---------------------------------------------------------------------------
# When checkpoints are written; resuming a finished run
# ---------------------------------------------------------------------------


def test_checkpoints_at_every_multiple_and_at_the_end(tmp_path):
    path = tmp_path / "run.npz"
    seen = []

    def callback(xk):
        seen.append(checkpoint.load(path)[0]["nit"] if path.exists() else None)

    res = _minimize(callback=callback, checkpoint=path, checkpoint_every=10, maxiter=35)
    # callback k (after k steps) sees the checkpoint of the last multiple of 10 <= k.
    assert seen == [None if k < 10 else k // 10 * 10 for k in range(1, 36)]
    assert checkpoint.load(path)[0]["nit"] == res.nit == 35


def test_a_failed_write_warns_and_the_run_goes_on(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    _minimize(checkpoint=path, maxiter=10)
    before = path.read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_disk)
    with pytest.warns(RuntimeWarning, match="could not write checkpoint") as caught:
        res = _minimize(checkpoint=path, checkpoint_every=20, maxiter=50)
    assert [str(w.message).split(" (")[0].split()[-1] for w in caught] == ["20", "40", "50"]
    assert "No space left on device" in str(caught[0].message)
    assert res.nit == 50 and path.read_bytes() == before


def test_resume_starts_afresh_without_a_file_and_extends_a_finished_run(tmp_path):
    path = tmp_path / "run.npz"
    first = _minimize(checkpoint=path, resume=True, maxiter=40)
    assert first.nit == 40 and path.exists()
    again = _minimize(checkpoint=path, resume=True, maxiter=40)  # a requeued finished job
    np.testing.assert_array_equal(again.x, first.x)
    assert again.nit == 40 and again.status == 1
    longer = _minimize(checkpoint=path, resume=True, maxiter=60)  # maxiter may grow
    assert longer.nit == 60
    fresh = _minimize(checkpoint=path, resume=False, maxiter=40)  # resume=False overwrites
    np.testing.assert_array_equal(fresh.x, first.x)


@pytest.mark.parametrize(
    "options",
    [{}, {"batch_size": 64, "seed": 3}, {"lr": 0.05}],
    ids=["tuning-free", "minibatches", "lr-without-maxiter"],
)
def test_a_run_that_stopped_on_its_windows_stops_at_once_when_resumed(tmp_path, options):
    # No maxiter: the windows end the run (status 6).  A requeued job resumes the
    # finished run: it must stop where it stopped, with the same answer, evaluating
    # nothing but (minibatches) the answer on all the data.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 4))
    y = (X @ np.arange(4.0) + rng.normal(size=1000) > 0) * 1.0
    calls = []

    def loss(w, X, y):
        calls.append(len(y))
        z = X @ w
        return np.mean(np.logaddexp(0, z) - y * z), X.T @ (1 / (1 + np.exp(-z)) - y) / len(y)

    options = {"checkpoint": tmp_path / "run.npz", "resume": True, **options}
    runs = []
    for _ in range(3):
        calls.clear()
        runs.append(nadam.minimize(loss, np.zeros(4), args=(X, y), jac=True, options=options))
        evaluated = list(calls)
    first = runs[0]
    assert first.status == Status.CONVERGED and first.success
    for again in runs[1:]:
        np.testing.assert_array_equal(again.x, first.x)
        assert (again.nit, again.nfev, again.status, again.fun) == (
            first.nit, first.nfev, first.status, first.fun,
        )  # fmt: skip
    assert evaluated == ([1000] if "batch_size" in options else [])


_KEYS = ("loss", "smoothed", "grad_norm")


def test_history_is_checkpointed_and_resumed_bit_identical(tmp_path, sentinel):
    """With history=True the history is saved with the state: a run stopped by SIGTERM
    and resumed returns the uninterrupted run's history, entry for entry."""
    path = tmp_path / "run.npz"
    opts = {"checkpoint": path, "checkpoint_every": 50, "resume": True, "history": True}
    stopped = _minimize(callback=_raise_at(30, signal.SIGTERM), **opts)
    assert stopped.status == 5 and len(stopped.history["loss"]) == stopped.nit == 31
    assert checkpoint.load(path)[0]["history"].shape == (31, 3)
    resumed = _minimize(**opts)
    whole = _minimize(history=True)
    assert len(whole.history["loss"]) == whole.nit + 1
    for key in _KEYS:
        np.testing.assert_array_equal(resumed.history[key], whole.history[key])


def test_history_turned_on_at_resume_marks_the_unrecorded_iterates(tmp_path, sentinel):
    """A checkpoint written without history, resumed with it: entry k is still iterate
    k, NaN for those evaluated before; and the other way round the saved history is
    ignored."""
    path = tmp_path / "run.npz"
    _minimize(callback=_raise_at(30, signal.SIGTERM), checkpoint=path, resume=True)
    resumed = _minimize(checkpoint=path, resume=True, history=True)
    whole = _minimize(history=True)
    for key in _KEYS:
        assert np.isnan(resumed.history[key][:31]).all()
        np.testing.assert_array_equal(resumed.history[key][31:], whole.history[key][31:])
    np.testing.assert_array_equal(resumed.x, whole.x)

    path.unlink()
    _minimize(callback=_raise_at(30, signal.SIGTERM), checkpoint=path, resume=True, history=True)
    plain = _minimize(checkpoint=path, resume=True)
    assert "history" not in plain
    np.testing.assert_array_equal(plain.x, whole.x)


def test_extending_a_finished_run_continues_its_history(tmp_path):
    """The final checkpoint holds the last iterate's evaluation too; extending the run
    evaluates that iterate again, once: entry k stays iterate k."""
    path = tmp_path / "run.npz"
    first = _minimize(checkpoint=path, resume=True, maxiter=40, history=True)
    assert len(first.history["loss"]) == 41
    longer = _minimize(checkpoint=path, resume=True, maxiter=60, history=True)
    assert longer.nit == 60 and len(longer.history["loss"]) == 61
    for key in _KEYS:
        np.testing.assert_array_equal(longer.history[key][:40], first.history[key][:40])


def test_a_history_of_the_wrong_shape_is_refused_before_anything_changes():
    loss, data = _problem()
    m = Minimizer(loss, np.zeros(4), args=data, jac=True, options={"history": True})
    m.run(max_steps=5)
    state = m.state_dict()
    assert state["history"].shape == (5, 3)
    fresh = Minimizer(loss, np.zeros(4), args=data, jac=True, options={"history": True})
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=r"history of shape \(4, 3\).*\(5, 3\) or \(6, 3\)"):
        fresh.load_state_dict({**state, "history": state["history"][:4]})
    after = fresh.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    fresh.load_state_dict(state)
    assert fresh.run().history["loss"][:5].tolist() == state["history"][:, 0].tolist()


# ---------------------------------------------------------------------------
# Checkpoints of another run, or damaged ones: clear errors, file untouched
# ---------------------------------------------------------------------------

_OTHER_RUN = [
    ("method", {"method": "sgd"}, "method is 'adam' in the checkpoint but 'sgd' here"),
    ("x0 size", {"x0": np.zeros(5)}, r"shape is \[4\] in the checkpoint but \[5\] here"),
    (
        "dtype",
        {"x0": np.zeros(4, np.float32)},
        "dtype is 'float64' in the checkpoint but 'float32' here",
    ),
    ("batch_size", {"batch_size": 8}, "batch_size is 16 in the checkpoint but 8 here"),
    ("seed", {"seed": 4}, "seed is 3 in the checkpoint but 4 here"),
    ("hyperparameter", {"eps": 1e-6}, "eps is 1e-08 in the checkpoint but 1e-06 here"),
    ("schedule", {"lr": 0.05}, r"lr is \{'schedule': 'cosine'.* in the checkpoint but 0.05 here"),
    ("bounds", {"bounds": [(-1, 1)] * 4}, "bounds is 'none' in the checkpoint but 'bounds with"),
    ("return_best", {"return_best": True}, "return_best is False in the checkpoint but True"),
    (
        "data",
        {"args": tuple(a[:100] for a in _problem()[1])},
        "n_rows is 120 in the checkpoint but 100 here",
    ),
]


@pytest.mark.parametrize(
    "change, match", [r[1:] for r in _OTHER_RUN], ids=[r[0] for r in _OTHER_RUN]
)
def test_a_checkpoint_of_another_run_is_refused(tmp_path, change, match):
    path = tmp_path / "run.npz"
    _minimize(checkpoint=path, maxiter=10)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match) as info:
        _minimize(checkpoint=path, resume=True, **change)
    assert f"checkpoint {str(path)!r} belongs to another run" in str(info.value)
    assert "set resume=False" in str(info.value)
    assert path.read_bytes() == before


def _flip_a_byte_of_x(path: Path) -> None:
    data = bytearray(path.read_bytes())
    x = checkpoint.load(path)[0]["x"].tobytes()
    data[data.index(x) + 3] ^= 0xFF  # the zip CRC no longer matches
    path.write_bytes(bytes(data))


def _rewrite_header(path: Path, **changes) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["__nadam_checkpoint__"]))
    arrays["__nadam_checkpoint__"] = np.asarray(json.dumps({**header, **changes}))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _drop_a_key(path: Path) -> None:
    state, meta = checkpoint.load(path)
    del state["optimizer.t"]
    checkpoint.save(path, state, meta)


def _compression_method(method: int):
    # The method of the first member in the zip's central directory: zipfile raised
    # NotImplementedError (99, 1) or inflated whatever the member held (8).
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        end = data.rfind(b"PK\x05\x06")
        directory = struct.unpack("<I", data[end + 16 : end + 20])[0]
        data[directory + 10 : directory + 12] = struct.pack("<H", method)
        path.write_bytes(bytes(data))

    return damage


def _overwrite(path: Path, save, **arrays) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append a suffix to a name
        save(fh, **arrays)


_DAMAGED = [
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:300]), "not a valid nadam checkpoint"),
    ("garbage", lambda p: p.write_bytes(b"not a checkpoint"), "not a valid nadam checkpoint"),
    ("bit flip", _flip_a_byte_of_x, "not a valid nadam checkpoint"),
    ("npy file", lambda p: _overwrite(p, np.save, arr=np.zeros(3)), "not an .npz archive"),
    ("other npz", lambda p: _overwrite(p, np.savez, a=np.zeros(3)), "no nadam checkpoint header"),
    ("format", lambda p: _rewrite_header(p, format=99), "format version 99; this version"),
    ("unknown method", _compression_method(99), "is compressed or encrypted"),
    ("deflated", _compression_method(8), "is compressed or encrypted"),
    ("missing key", _drop_a_key, r"does not fit this run: .*missing \['optimizer.t'\]"),
]


@pytest.mark.parametrize("damage, match", [r[1:] for r in _DAMAGED], ids=[r[0] for r in _DAMAGED])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage, match):
    path = tmp_path / "run.npz"
    _minimize(checkpoint=path, maxiter=10)
    damage(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match) as info:
        _minimize(checkpoint=path, resume=True)
    assert repr(str(path)) in str(info.value)
    assert path.read_bytes() == before


def test_checkpoints_refuse_streams_and_pickles(tmp_path):
    loss, (A, b) = _problem()
    with pytest.raises(ValueError, match="checkpoint cannot be combined with streamed args"):
        nadam.minimize(
            loss,
            np.zeros(4),
            args=iter([(A, b)]),
            jac=True,
            options={"checkpoint": tmp_path / "s.npz"},
        )
    with pytest.raises(TypeError, match=r"state\['o'\] must be a NumPy array"):
        checkpoint.save(tmp_path / "p.npz", {"o": np.array([None])})
    assert not list(tmp_path.iterdir())  # nothing written, no temporary file left


def test_module_doctest():
    result = doctest.testmod(checkpoint, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------------------
# Non-finite objective or gradient: stop on the last finite iterate
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bounded", [False, True], ids=["free", "bounds"])
@pytest.mark.parametrize("return_best", [False, True], ids=["last", "best"])
@pytest.mark.parametrize(
    "bad, what",
    [("nan f", "objective"), ("inf f", "objective"), ("nan g", "gradient"), ("inf g", "gradient")],
)
def test_nonfinite_stops_on_the_last_finite_iterate(bad, what, bounded, return_best):
    seen = []

    def fun(x):
        seen.append(x.copy())
        f, g = float(np.sum((x - 3.0) ** 2)), 2.0 * (x - 3.0)
        if x[0] > 0.05:  # after a few steps of lr 0.01
            # +inf f: worse than any loss; -inf g: x - g = +inf, clipped by a bound
            value = np.nan if bad.startswith("nan") else np.inf if bad.endswith("f") else -np.inf
            if bad.endswith("f"):
                f = value
            else:
                g = g.copy()
                g[1] = value  # one component; with bounds, one the projection would clip
        return f, g

    res = nadam.minimize(
        fun,
        np.zeros(3),
        jac=True,
        bounds=[(-1.0, 1.0)] * 3 if bounded else None,
        options={"lr": 0.01, "maxiter": 1000, "return_best": return_best},
    )
    assert (res.status, res.success) == (3, False)
    assert (
        res.message == f"NaN result encountered: the {what} is not finite at iteration {res.nit}."
    )
    assert len(seen) == res.nit + 1 and res.nit > 0
    assert np.all(np.isfinite(res.x))
    expected = seen[-2] if return_best and what == "objective" else seen[-1]
    np.testing.assert_array_equal(res.x, expected)  # the last finite iterate (or the best)


# ---------------------------------------------------------------------------
# Issue 15: checkpoint values are validated, temporary files of others are kept,
# a callable lr is described truthfully, a failing fun leaves a checkpoint
# ---------------------------------------------------------------------------


class _Hang(AssertionError):
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    """Fail (rather than hang the test session) if the block runs longer than
    ``seconds``: the resume of a checkpoint with nit = -5 spins in Python for ever."""

    def expire(signum, frame):
        raise _Hang(f"still running after {seconds} s: the resume hangs")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _with(key, value):
    def change(state):
        state[key] = value(state[key]) if callable(value) else value

    return change


def _poke(key, index, value):
    def change(state):
        a = state[key].copy()
        a[index] = value
        state[key] = a

    return change


# (id, change to the loaded state, regex naming the field in the message)
_TAMPERED = [
    ("nit -5", _with("nit", -5), r"\bnit\b"),
    ("nit 10**12", _with("nit", 10**12), r"\bnit\b"),
    ("nit 2.5", _with("nit", 2.5), r"\bnit\b"),
    ("optimizer.t -5", _with("optimizer.t", -5), r"\boptimizer\.t\b"),
    (
        "state of a shape that broadcasts",
        _with("optimizer.state.exp_avg", lambda a: a[:1].copy()),
        r"\bexp_avg\b",
    ),
    (
        "float32 state in a float64 run",
        _with("optimizer.state.exp_avg_sq", lambda a: a.astype(np.float32)),
        r"\bexp_avg_sq\b",
    ),
    ("state NaN", _poke("optimizer.state.exp_avg", 2, np.nan), r"\bexp_avg\b"),
    ("x NaN", _poke("x", 1, np.nan), r"\bx\b"),
    ("x inf", _poke("x", 0, np.inf), r"\bx\b"),
    ("nfev -1", _with("nfev", -1), r"\bnfev\b"),
    ("stall -1", _with("stall", -1), r"\bstall\b"),
    ("schedule.state NaN", _poke("schedule.state", 0, np.nan), r"\bschedule\.state\b"),
]


@POSIX
@pytest.mark.parametrize("change, field", [r[1:] for r in _TAMPERED], ids=[r[0] for r in _TAMPERED])
def test_a_tampered_checkpoint_is_refused_naming_the_file_and_the_field(tmp_path, change, field):
    """Issue 15 item 4: every field of a checkpoint is validated (type, shape, dtype,
    range, finiteness) before anything is loaded: a file saved by nadam.checkpoint.save
    with one field altered is refused at once with a ValueError naming the file and the
    field, and the file is left as it was."""
    path = tmp_path / "run.npz"
    _minimize(checkpoint=path, maxiter=10)
    state, meta = checkpoint.load(path)
    change(state)
    checkpoint.save(path, state, meta)
    before = path.read_bytes()
    with _deadline(30.0), pytest.raises(ValueError) as info:
        _minimize(checkpoint=path, resume=True)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(field, message), f"the message does not name the field ({field}): {message}"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]


_BOMB_SCRIPT = r"""
import json, resource, sys
import numpy as np
import nadam

path, warm = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(1)
A, b = rng.normal(size=(120, 4)), rng.normal(size=120)

def loss(x, A, b):
    r = A @ x - b
    return r @ r / len(b), 2 * A.T @ r / len(b)

def run(ckpt, **options):
    opts = {"lr": 0.05, "maxiter": 120, "batch_size": 16, "seed": 3, "checkpoint": ckpt}
    return nadam.minimize(loss, np.zeros(4), args=(A, b), jac=True, options={**opts, **options})

# Warm up everything a resume touches, with a sound checkpoint of the same run.
run(warm, maxiter=10)
run(warm, resume=True, maxiter=11)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    run(path, resume=True)
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": after - before, "error": error}))
"""


def _write_bomb(path: Path, member: str, n: int) -> None:
    """Replace ``member`` of the checkpoint ``path`` by n float64 zeros, deflated (a
    200 MB array in a ~200 KB member; the others stored, as nadam writes them), written
    in chunks: this process stays small."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != member}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    chunk = np.zeros(2**17).tobytes()  # 1 MiB
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{member}.npy", "w", force_zip64=True) as out:
            np.lib.format.write_array_header_1_0(
                out, {"descr": "<f8", "fortran_order": False, "shape": (n,)}
            )
            for _ in range(n * 8 // len(chunk)):
                out.write(chunk)


@POSIX
def test_a_zip_bomb_checkpoint_is_refused_before_it_is_decompressed(tmp_path):
    """Issue 15 item 4: the header and the members' sizes are read before anything is
    decompressed: a ~200 KB checkpoint whose optimizer state member inflates to 200 MB
    is refused with a ValueError naming the file and the field, and the resuming
    process's peak memory (ru_maxrss, in a subprocess) does not grow by anything like
    200 MB."""
    path, warm = tmp_path / "run.npz", tmp_path / "warm.npz"
    _minimize(checkpoint=path, maxiter=10, lr=0.05)
    _write_bomb(path, "optimizer.state.exp_avg", 25 * 2**20)  # 200 MiB of float64
    assert path.stat().st_size < 2**20, path.stat().st_size
    script = tmp_path / "bomb.py"
    script.write_text(_BOMB_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path])}
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(warm)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    error = out["error"] or ""
    assert error.startswith("ValueError: "), out
    grew = out["grew_kib"] / 1024
    assert grew < 50, f"peak memory grew by {grew:.0f} MiB while refusing a 200 MiB member"
    assert str(path) in error and re.search(r"\bexp_avg\b", error), error


def test_other_temporary_files_beside_the_checkpoint_are_kept(tmp_path):
    """Issue 15 item 5: the stale-temp-file cleanup removes only nadam's own temporary
    files: a user's .fit.npz.notes.tmp and a file named like another live process's
    in-progress checkpoint (.fit.npz.<pid>.<hex>.tmp) survive a checkpointed run."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        path = tmp_path / "fit.npz"
        notes = tmp_path / ".fit.npz.notes.tmp"
        notes.write_text("my notes")
        theirs = tmp_path / f".fit.npz.{other.pid}.0badcafe.tmp"
        theirs.write_bytes(b"another process is writing this checkpoint")
        res = _minimize(checkpoint=path, checkpoint_every=5, maxiter=20)
        assert res.nit == 20 and path.exists()
        assert notes.exists() and notes.read_text() == "my notes"
        assert theirs.exists(), "the live process's temporary file was deleted"
        assert theirs.read_bytes() == b"another process is writing this checkpoint"
    finally:
        other.kill()
        other.wait()


def _named_lr(t):
    return 0.01


_NAMED = "_named_lr"
_UNNAMED = r"lambda|unnamed|anonymous|unpicklable|not picklable|cannot be pickled"


@pytest.mark.parametrize("saved, resumed", [("lambda", "named"), ("named", "lambda")])
def test_a_callable_lr_mismatch_is_described_truthfully(tmp_path, saved, resumed):
    """Issue 15 item 7: a checkpoint made with a lambda lr and resumed with a module-level
    function (or the other way round) is refused with a message that names lr and
    describes both sides as they are (an unpicklable, unnamed callable; a named
    function), not as None."""
    lrs = {"lambda": lambda t: 0.01, "named": _named_lr}
    path = tmp_path / "run.npz"
    _minimize(checkpoint=path, maxiter=10, lr=lrs[saved])
    before = path.read_bytes()
    with pytest.raises(ValueError) as info:
        _minimize(checkpoint=path, resume=True, lr=lrs[resumed])
    message = str(info.value)
    assert str(path) in message and re.search(r"\blr\b", message), message
    assert "None" not in message, message
    assert re.search(_UNNAMED, message), f"the lambda is not described: {message}"
    assert re.search(rf"{_NAMED}|\bnamed\b", message), f"the function is not named: {message}"
    assert path.read_bytes() == before


@njit
def _loss_compiled(x, A, b, limit):
    r = A @ x - b
    return r @ r / len(b), 2 * A.T @ r / len(b)


@njit
def _bad_gradient_past(x, A, b, limit):
    # A gradient of the wrong shape once x[0] passes limit (mid-run).
    f, g = _loss_compiled(x, A, b, limit)
    return f, (np.zeros(5) if x[0] < limit else g)


def test_a_bad_output_of_a_compiled_objective_saves_the_last_step(tmp_path):
    """The compiled loop's check hands a bad output back to Python, which raised
    without saving (the Python loop's check raises inside the loop, and saved): both
    now save the boundary, the same file, and a resume with a mended fun ends where
    an uninterrupted run does."""
    _, (A, b) = _problem()
    opts = {"lr": 0.05, "maxiter": 120, "batch_size": 16, "seed": 3}
    saved = {}
    for compiled in (True, False):
        path = tmp_path / f"{compiled}.npz"
        run = {**opts, "checkpoint": path, "checkpoint_every": 1000, "compiled": compiled}
        with pytest.raises(ValueError, match=r"has shape \(5,\) at iteration"):
            nadam.minimize(_bad_gradient_past, np.zeros(4), (A, b, -0.1), jac=True, options=run)
        saved[compiled] = checkpoint.load(path)[0]
    assert 0 < saved[True]["nit"] < 120
    assert saved[True].keys() == saved[False].keys()
    for key, value in saved[True].items():
        np.testing.assert_array_equal(value, saved[False][key], err_msg=key)
    path = tmp_path / "True.npz"
    mended = {**opts, "checkpoint": path, "checkpoint_every": 1000, "resume": True}
    resumed = nadam.minimize(_loss_compiled, np.zeros(4), (A, b, -0.1), jac=True, options=mended)
    whole = nadam.minimize(_loss_compiled, np.zeros(4), (A, b, -0.1), jac=True, options=opts)
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert (resumed.nit, resumed.nfev, resumed.status) == (whole.nit, whole.nfev, whole.status)


def test_a_retry_after_fun_raised_goes_on_as_the_run_would_have():
    """Minimizer.run() again after fun raised, without a checkpoint: the minibatch fun
    could not evaluate is drawn again (it was skipped: another trajectory)."""
    loss, data = _problem()
    calls = []

    def failing(x, A, b):
        calls.append(None)
        if len(calls) == 37:
            raise RuntimeError("transient")
        return loss(x, A, b)

    opts = {"lr": 0.05, "maxiter": 120, "batch_size": 16, "seed": 3}
    run = Minimizer(failing, np.zeros(4), args=data, jac=True, options=opts)
    with pytest.raises(RuntimeError, match="transient"):
        run.run()
    retried = run.run()
    whole = nadam.minimize(loss, np.zeros(4), args=data, jac=True, options=opts)
    np.testing.assert_array_equal(retried.x, whole.x)
    assert (retried.nit, retried.status) == (whole.nit, whole.status)


def test_fun_raising_mid_run_saves_the_last_completed_step(tmp_path):
    """Issue 15 item 11: when fun raises mid-run, the state after the last completed step
    is saved before the exception propagates (checkpoint_every far away): the file
    resumes at nit 57 and the resumed run ends where an uninterrupted one does."""
    path = tmp_path / "run.npz"
    loss, data = _problem()
    calls = []

    def failing(x, A, b):
        calls.append(None)
        if len(calls) == 58:  # the evaluation of iteration 57, after 57 completed steps
            raise RuntimeError("node lost")
        return loss(x, A, b)

    opts = {
        "lr": nadam.schedules.cosine(0.05, total_steps=120, warmup_steps=10),
        "maxiter": 120,
        "batch_size": 16,
        "seed": 3,
        "checkpoint": path,
        "checkpoint_every": 1000,
        "resume": True,
    }
    with pytest.raises(RuntimeError, match="node lost"):
        nadam.minimize(failing, np.zeros(4), args=data, jac=True, options=opts)
    assert path.exists(), "no checkpoint: 57 steps lost"
    assert checkpoint.load(path)[0]["nit"] == 57
    resumed = _minimize(checkpoint=path, checkpoint_every=1000, resume=True)
    whole = _minimize()
    np.testing.assert_array_equal(resumed.x, whole.x)
    for key in ("fun", "nit", "nfev", "njev", "status"):
        assert resumed[key] == whole[key], key
