"""Serial or threaded steps: compiled in the background, chosen by their measured time.

numba takes 1-3 s to compile a threaded step (its parfor passes), a fraction of that
for the serial one.  The two give the same bits (each element is computed by the same
compiled block, :mod:`nadam.kernels.cpu`), so an optimizer's first steps need not wait:
:class:`Tiered` runs the serial step while another thread compiles (or loads from the
cache) the threaded one.

Nor need the choice between them be made once: which is faster depends on what else
the machine runs.  Alone, the threaded step of a large array is faster; beside busy
processes its threads wait for cores (a step's mean time rose to 1.3x the serial one's
with both of a 2-core machine's cores taken, ``docs/benchmarks.md``).  Once both are
compiled, :class:`Tiered` times each call and runs the one that has been faster of late.

Only the wait changes: the serial step is compiled first, in the caller's thread (numba
compiles one function at a time, under one lock: the other way round the serial compile
would wait for the threaded one); while the background compile runs, the serial steps
share the interpreter with it.  A process does not fork while a compile runs (the child
would inherit numba's lock held by a thread it does not have): :func:`wait` runs first.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numba

__all__ = ["Tiered", "wait"]

_RUNNING: set[threading.Thread] = set()


def wait() -> None:
    """Wait until every background compile has ended (benchmarks, warm-up, fork)."""
    for thread in list(_RUNNING):
        thread.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=wait)


class Tiered:
    r"""``step(*args)``: the serial step until the threaded one is compiled, then
    whichever of the two has been faster of late; returns what the step returns.

    Once both run, each call is timed, and a variant's running time :math:`\ell`
    (logarithmic: a burst of the machine moves it by a bounded amount) follows
    :math:`\ell \leftarrow (1 - \alpha)\,\ell + \alpha \log t` (:attr:`ALPHA`)
    while it runs.  The threaded step runs while its time is below :attr:`MARGIN` times
    the serial one's, else the serial step; every :attr:`EXPLORE` calls the other runs
    once, its time replacing its stale :math:`\ell`.  Each variant's first timed call
    (thread start-up, a cold cache) is not counted.  The choice changes the time only:
    the two give the same bits.

    Parameters
    ----------
    threaded, serial : numba dispatchers
        The threaded and serial variants of one step (same arguments, same bits), each
        called with the same arrays at every call.
    clock : callable, optional
        Seconds, monotonic (``time.perf_counter``).
    """

    #: How much faster than the serial step the threaded one must be to run: its threads
    #: take cores the machine's other processes may want (beside other processes'
    #: threads a process's serial steps slow down too), for a gain that must be worth it.
    MARGIN = 0.85
    #: Weight of a call's (logarithmic) time in its variant's running time.
    ALPHA = 0.1
    #: Calls of the chosen variant between two calls of the other (which then runs at
    #: most ~1.6 % of the calls: the cost of noticing that the machine has changed).
    EXPLORE = 64

    def __init__(self, threaded: Any, serial: Any, clock: Callable[[], float] = time.perf_counter):
        self.threaded, self._serial = threaded, serial
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._ready = False
        # Per variant (0 serial, 1 threaded): timed calls, running log-time.
        self._timed = [0, 0]
        self._log = [math.inf, math.inf]
        self._calls = 0

    @property
    def ready(self) -> bool:
        """Whether the threaded step is compiled (and chosen by time from now on)."""
        if not self._ready and self._thread is not None and not self._thread.is_alive():
            # A failed compile leaves the serial step for good: the same bits.
            self._ready = self._failed is None
        return self._ready

    @property
    def runs(self) -> tuple[int, int]:
        """``(serial, threaded)``: the calls of each since the threaded step was compiled."""
        return self._timed[0], self._timed[1]

    def __call__(self, *args: Any) -> Any:
        if self.ready:
            return self._timed_call(args)
        if self._thread is None:
            signature = tuple(numba.typeof(a) for a in args)
            if signature in self.threaded.overloads:  # compiled already, in this process
                self._ready = True
                return self._timed_call(args)
            result = self._serial(*args)  # (compiled here, before the threaded one starts)
            self._start(signature)
            return result
        return self._serial(*args)

    def _timed_call(self, args: tuple) -> Any:
        timed, log = self._timed, self._log
        self._calls += 1
        chosen = int(log[1] < log[0] + math.log(self.MARGIN))
        if timed[1] < 2 or timed[0] < 2:  # each one's first two calls: threaded first
            v = 1 if timed[1] < 2 else 0
        else:
            v = 1 - chosen if self._calls % self.EXPLORE == 0 else chosen
        step = self.threaded if v else self._serial
        t0 = self._clock()
        result = step(*args)
        t = math.log(max(self._clock() - t0, 1e-9))
        n = timed[v] = timed[v] + 1
        if n > 2 and v == chosen:
            log[v] = (1 - self.ALPHA) * log[v] + self.ALPHA * t
        elif n > 1:  # (the first call is not counted; an explored one replaces)
            log[v] = t
        return result

    def _start(self, signature: tuple) -> None:
        def compile_threaded() -> None:
            try:
                self.threaded.compile(signature)
            except Exception as exc:  # any failure: the serial step stays (the same bits)
                self._failed = exc
            finally:
                _RUNNING.discard(thread)

        # Not a daemon: the interpreter's exit waits for the compile (and its cache file).
        thread = threading.Thread(target=compile_threaded, name="nadam-compile")
        _RUNNING.add(thread)
        self._thread = thread
        thread.start()
