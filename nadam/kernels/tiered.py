"""Threaded steps compiled in the background while the serial ones run.

numba takes 1-3 s to compile a threaded step (its parfor passes), a fraction of that
for the serial one.  The two give the same bits (each element is computed by the same
compiled block, :mod:`nadam.kernels.cpu`), so an optimizer's first steps need not wait:
:class:`Tiered` runs the serial step while another thread compiles (or loads from the
cache) the threaded one, and the threaded one from the first step after it is ready.

Only the wait changes: the serial step is compiled first, in the caller's thread (numba
compiles one function at a time, under one lock: the other way round the serial compile
would wait for the threaded one); while the background compile runs, the serial steps
share the interpreter with it.  A process does not fork while a compile runs (the child
would inherit numba's lock held by a thread it does not have): :func:`wait` runs first.
"""

from __future__ import annotations

import os
import threading
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
    """``step(*args)``: the serial step until the threaded one is compiled, then the
    threaded one; returns what the step returns.

    Parameters
    ----------
    threaded, serial : numba dispatchers
        The threaded and serial variants of one step (same arguments, same bits).
        Once :attr:`ready`, a caller may call ``threaded`` itself (one Python call
        less per step).
    """

    def __init__(self, threaded: Any, serial: Any):
        self.threaded, self._serial = threaded, serial
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the threaded step runs now."""
        if not self._ready and self._thread is not None and not self._thread.is_alive():
            # A failed compile leaves the serial step for good: the same bits.
            self._ready = self._failed is None
        return self._ready

    def __call__(self, *args: Any) -> Any:
        if self.ready:
            return self.threaded(*args)
        if self._thread is None:
            signature = tuple(numba.typeof(a) for a in args)
            if signature in self.threaded.overloads:  # compiled already, in this process
                self._ready = True
                return self.threaded(*args)
            result = self._serial(*args)  # (compiled here, before the threaded one starts)
            self._start(signature)
            return result
        return self._serial(*args)

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
