"""Driving a run's loop in chunks: signals, checkpoints, callbacks, progress.

:class:`Runner` calls a loop (the Python or the compiled specialisation of
:func:`nadam.loop.iteration.iterate_template`) in chunks that grow to about
:data:`TARGET_SECONDS` of work each.  Between chunks, at an iteration boundary,
it updates the progress bar, writes due checkpoints and stops when SIGTERM or
SIGINT was caught (:class:`Preemption`); when the loop pauses at an iterate for
the callback, it runs the callback and resumes.  Every loop is driven the same
way, so every loop stops at the same boundaries.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .iteration import (
    BAD_OUTPUT,
    CONTINUE,
    END,
    PAUSED,
    RECORDED,
    RESUME,
    STEP_NONFINITE,
    LoopArguments,
    Parts,
)
from .state import NFEV, RunState
from .status import Status
from .tracker import EMA

__all__ = ["SIGNALS", "TARGET_SECONDS", "Boundary", "Preemption", "Runner", "outcome"]

#: Wall time a chunk aims at once its size has adapted.
TARGET_SECONDS = 0.05

#: The signals that :class:`Preemption` turns into a clean stop.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Boundary(Protocol):
    """What the runner asks of a checkpointer (:class:`nadam.checkpoint.Checkpointer`)."""

    def steps_to_boundary(self, nit: int, steps: int | None) -> int | None: ...

    def due(self, nit: int) -> bool: ...

    def write(self, state: RunState) -> None: ...


class Preemption:
    """Turn SIGTERM and SIGINT into a request to stop, inside a ``with`` block.

    The handler only appends the signal number to ``pending``; the loop checks
    that list between iterations and stops at the next boundary.  A second
    signal while one is pending restores the previous handlers and re-sends
    itself to them: pressing Ctrl-C twice raises ``KeyboardInterrupt`` at once,
    a second SIGTERM terminates the process (as without nadam).  On leaving the
    block (also by an exception) the previous handlers are restored.

    Handlers are installed only in the main thread (elsewhere Python refuses
    them; the block then catches nothing) and only for signals that are not
    ignored (a background job started by a shell ignores SIGINT, and so do we).

    Parameters
    ----------
    pending : list of int
        Where caught signals are recorded.
    """

    def __init__(self, pending: list[int]):
        self.pending = pending
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            old = signal.getsignal(sig)
            # None: a handler installed outside Python, which could not be restored.
            if old is None or old == signal.SIG_IGN:
                continue
            self._previous[sig] = old
            signal.signal(sig, self._catch)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        while self._previous:
            sig, old = self._previous.popitem()
            signal.signal(sig, old)

    def _catch(self, signum: int, frame: Any) -> None:
        if self.pending:
            self._restore()
            signal.raise_signal(signum)
            return
        self.pending.append(signum)


def outcome(code: int, f: float, g: Any, nit: int, last: tuple) -> tuple:
    """The outcome ``(status, f, g, what)`` of a loop call that returned ``code`` (not
    CONTINUE) with the loss ``f`` and the kept gradient ``g`` at iteration ``nit``;
    ``last`` is the run's latest evaluation (what a stream's end reports)."""
    if code == Status.NONFINITE:
        if f == -math.inf:  # fell without end: overflowed, not NaN
            what = f"the objective is -inf at iteration {nit} (is it bounded below?)"
        else:
            what = f"the {'gradient' if math.isfinite(f) else 'objective'} is not finite"
            what += f" at iteration {nit}"
        return (code, f, g, what)
    if code == STEP_NONFINITE:
        what = (
            f"the step to iteration {nit} gave non-finite values, which were not written: "
            "x holds the last finite value of each element"
        )
        return (Status.NONFINITE, f, g, what)
    if code == Status.STREAM_END:
        f, g = last
    return (int(code), f, g, "")


class Windows(Protocol):
    """What the runner asks of a run's windows (:class:`nadam.loop.stages.Stages`)."""

    def steps_to_boundary(self, nit: int, steps: int | None) -> int: ...

    def boundary(self) -> tuple | None: ...

    def recover(self) -> bool: ...


class Runner:
    """Runs one loop over one :class:`~nadam.loop.state.RunState` in chunks.

    Parameters
    ----------
    state : RunState
        The run's state, updated in place.
    parts : Parts
        The loop's parts (callback, signal lists, the end hook).
    loop : callable
        ``loop(*arguments) -> (code, f)``, a specialisation of
        :func:`~nadam.loop.iteration.iterate_template`.
    arguments : LoopArguments
        Its arguments (``hist`` is managed here).
    kept_gradient : callable
        ``kept_gradient(kept) -> g``: the gradient the loop kept, in x's shape.
    checkpoint : Boundary or None
        Where and when to save the state.
    disp : bool
        Show a progress bar (tqdm) over ``maxiter`` iterations.
    maxiter : int
        The progress bar's total.
    stages : Windows or None
        The run's windows: the loop stops at their ends, where they may end the run,
        and a divergence is theirs to recover from.
    """

    def __init__(
        self,
        state: RunState,
        parts: Parts,
        loop: Callable,
        arguments: LoopArguments,
        kept_gradient: Callable[[Any], Any],
        checkpoint: Boundary | None = None,
        disp: bool = False,
        maxiter: int = 0,
        stages: Windows | None = None,
    ):
        self.state, self.parts, self.loop, self.arguments = state, parts, loop, arguments
        self.kept_gradient = kept_gradient
        self.checkpoint, self.stages = checkpoint, stages
        self._disp, self._maxiter = disp, maxiter
        self._bar = None
        self._chunk = 1
        self._ctl = arguments.ctl
        self._pending, self._caught = parts.pending, parts.caught
        self._failed: str | None = None  # where an exception came from: "loop", "callback"

    @property
    def chunk(self) -> int:
        """The number of iterations the next call of the loop may take."""
        return self._chunk

    def run(self, max_steps: int | None = None) -> tuple | None:
        """Iterate until a stopping rule fires, or for at most ``max_steps`` steps.

        Returns the outcome ``(status, f, g, what)``, or None if ``max_steps``
        steps were taken first (the state is then at a boundary).  A caught
        signal stops the run at the next boundary (status INTERRUPTED); an
        exception in the objective or the callback saves the checkpoint at the
        last boundary, then propagates.
        """
        s, ckpt, stages, pending = self.state, self.checkpoint, self.stages, self._pending
        if self._disp and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._maxiter, initial=s.nit, unit="it", dynamic_ncols=True)
        end = None if max_steps is None else s.nit + max_steps
        if end is not None and end >= self._maxiter:
            # The steps reach maxiter: evaluate that iterate too, where the run stops.
            end = max(end, self._maxiter + 1)
        if self._ctl[PAUSED]:  # the callback raised at an evaluated iterate: its step first
            self._ctl[PAUSED], self._ctl[RESUME] = 0, 1
        pending.clear()
        self._caught.clear()
        outcome = None
        with Preemption(self._caught):
            try:
                while True:
                    if stages is not None and not self._ctl[RESUME]:
                        outcome = stages.boundary()  # acts at the end of a window
                        if outcome is not None:
                            break
                    steps = None if end is None else end - s.nit
                    if stages is not None:
                        steps = stages.steps_to_boundary(s.nit, steps)
                    if ckpt is not None:
                        steps = ckpt.steps_to_boundary(s.nit, steps)
                    outcome = self._iterate(steps)
                    if (
                        outcome is not None
                        and outcome[0] == Status.NONFINITE
                        and stages is not None
                        and stages.recover()
                    ):
                        outcome = None
                    if outcome is not None or pending:
                        break
                    if ckpt is not None and ckpt.due(s.nit):
                        ckpt.write(s)
                    if s.nit == end:
                        return None
            except Exception:
                self._after_failure(ckpt)
                raise
            if outcome is None:
                f, g = s.last
                if g is None:  # stopped before its first evaluation (while compiling, say)
                    f, g = math.nan, np.full(s.x.shape, math.nan, s.x.dtype)
                outcome = (Status.INTERRUPTED, f, g, signal.Signals(pending[0]).name)
            if ckpt is not None:  # the final state, still with the signals caught
                ckpt.write(s)
        return outcome

    def close(self, f: float) -> None:
        """Close the progress bar, showing the final loss."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.update(self.state.nit - bar.n)
            bar.set_postfix(loss=f"{f:.6g}")
            bar.close()

    def _iterate(self, steps: int | None) -> tuple | None:
        s, ctl, a, pending = self.state, self._ctl, self.arguments, self._pending
        callback = self.parts.callback
        end = None if steps is None else s.nit + steps
        outcome, shown = None, time.perf_counter()
        # A paused iterate is always stepped (ctl[RESUME]) before the loop ends at a
        # boundary, signal or not: a boundary's iterate is not yet evaluated.
        while ctl[RESUME] or ((end is None or s.nit < end) and not pending):
            before, evaluated = s.nit, s.counters[NFEV]
            # After a pause, only the step: the boundary after it is where a signal
            # caught during the callback stops the run.
            chunk = 1 if ctl[RESUME] else self._chunk
            ctl[END] = before + chunk if end is None else min(before + chunk, end)
            if ctl[RESUME]:
                ctl[END] = before + 1
            self._size_history(int(ctl[END]) - before)
            start = time.perf_counter()
            self._failed = "loop"
            try:
                code, f = self.loop(*a.values())
            finally:
                self._record()
            self._failed = None
            now = time.perf_counter()
            if s.counters[NFEV] != evaluated:
                s.last = (f, self.kept_gradient(a.kept))
            if code == BAD_OUTPUT:  # the check's own message, from an evaluation in Python
                self._failed = "loop"  # as if raised in the loop (a Python loop's check)
                self.parts.check.thorough(self.parts.evaluate(a.xv, *a.args), s.nit)
                raise RuntimeError("fun returned gradients of different shapes")
            if ctl[PAUSED]:
                g = self.kept_gradient(a.kept)
                self._failed = "callback"
                try:
                    callback(s.x, f, g, s.nit)
                except StopIteration:
                    ctl[PAUSED] = 0
                    outcome = (Status.CALLBACK, f, g, "")
                    break
                self._failed = None
                ctl[PAUSED] = 0
                ctl[RESUME] = code == CONTINUE
            if code != CONTINUE:
                outcome = self._outcome(code, f)
                break
            if self._bar is not None and now - shown > 0.1:
                self._show(f)
                shown = now
            done = s.nit - before
            if done > 0:
                # Grow towards TARGET_SECONDS per chunk, at most 8-fold at a time.
                per_step = max(now - start, 1e-9) / done
                self._chunk = int(min(max(TARGET_SECONDS / per_step, 1), 8 * self._chunk))
        return outcome

    def _outcome(self, code: int, f: float) -> tuple:
        s = self.state
        return outcome(code, f, self.kept_gradient(self.arguments.kept), s.nit, s.last)

    def _size_history(self, rows: int) -> None:
        # A row per evaluation of this call (option history), grown with the chunks.
        if self.state.history is None:
            return
        hist = self.arguments.hist
        if hist is None or len(hist) < rows:
            size = max(rows, 2 * (0 if hist is None else len(hist)), 16)
            self.arguments.hist = np.empty((size, 3))

    def _record(self) -> None:
        # The rows the loop recorded since the last call into the run's history.
        ctl = self._ctl
        if self.state.history is not None and ctl[RECORDED]:
            hist = self.arguments.hist
            self.state.history.extend(map(tuple, hist[: ctl[RECORDED]].tolist()))
        ctl[RECORDED] = 0

    def _after_failure(self, ckpt: Boundary | None) -> None:
        # Back to the last boundary before the exception propagates, and save it: a
        # retry (run() again) or a resume goes on as the run would have.  An objective
        # that raised had its batch drawn: draw it again.  A callback that raised was
        # at an evaluated and tracked iterate: its step is taken now when there is a
        # checkpoint to save (else by the next run(), ctl[PAUSED]).
        s, ctl, failed = self.state, self._ctl, self._failed
        self._failed = None
        try:
            if failed == "callback" and ckpt is not None:
                ctl[PAUSED] = 0
                ctl[RESUME], ctl[END] = 1, s.nit + 1
                self.loop(*self.arguments.values())
            elif failed == "loop" and s.sampler is not None:
                s.sampler.rewind()
            elif failed is None:
                return  # not the objective's nor the callback's: no boundary to save
        except Exception:  # the state is not at a boundary: better no checkpoint than a wrong one
            return
        if ckpt is not None:
            ckpt.write(s)

    def _show(self, f: float) -> None:
        bar, s = self._bar, self.state
        bar.update(s.nit - bar.n)
        noisy = s.sampler is not None
        postfix = {"loss": f"{f:.6g}"}
        if noisy:
            postfix["smoothed"] = f"{float(s.tracker[EMA]):.6g}"
        bar.set_postfix(postfix)
