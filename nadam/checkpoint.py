r"""Checkpoints and preemption for :func:`nadam.minimize`.

With ``options={"checkpoint": path, "checkpoint_every": k, "resume": True}``,
:func:`nadam.minimize` writes the whole state of the run (the iterate, the
optimizer's state and step count, the minibatch sampler's position, the
schedule's state, the best-so-far and the stopping rules' state: everything in
:class:`nadam.minimize.LoopState`) to ``path`` every ``k`` iterations, when it
stops, and when it is interrupted by SIGTERM or SIGINT.  Started again with
``resume=True``, it continues from the file, bit for bit, as if never stopped;
without a file it starts afresh, so a requeued job script needs no change.

The file is an ``.npz`` archive of plain NumPy arrays (no pickle: it is read
with ``allow_pickle=False``), plus a JSON header naming the run (method, shape
and dtype of x, hyperparameters, sampling, bounds) so that resuming another
run's checkpoint is an error rather than a silent mix-up.  Writes are atomic:
a temporary file in the same directory is written, flushed and ``fsync``-ed,
then renamed over the old one, and the directory is ``fsync``-ed; a process
killed at any moment leaves either the previous checkpoint or the new one.

:func:`save` and :func:`load` are the file format; :class:`Checkpointer` binds
it to a run, and :class:`Preemption` turns SIGTERM and SIGINT into a request
to stop at the next iteration boundary.

>>> import os, tempfile
>>> import numpy as np
>>> from nadam import checkpoint
>>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
>>> checkpoint.save(path, {"x": np.arange(3.0), "nit": 7}, {"method": "adam"})
>>> state, meta = checkpoint.load(path)
>>> state["x"], state["nit"], meta["method"]
(array([0., 1., 2.]), 7, 'adam')
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import signal
import threading
import warnings
import zipfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .schedules import Schedule

if TYPE_CHECKING:
    from .minimize import LoopState, Minimizer

__all__ = [
    "FORMAT_VERSION",
    "SIGNALS",
    "Checkpointer",
    "Preemption",
    "check_options",
    "identity",
    "load",
    "save",
]

#: Version of the file layout; a file of another version is refused.
FORMAT_VERSION = 1

#: The signals that :class:`Preemption` turns into a clean stop.
SIGNALS = (signal.SIGTERM, signal.SIGINT)

# The archive member holding the JSON header (a 0-d unicode array: no pickle).
_HEADER = "__nadam_checkpoint__"

# Header fields that must agree between a checkpoint and the run resuming it:
# together they decide the state's layout and the trajectory.  maxiter and the
# stopping tolerances may change (to extend a finished run, say).
_IDENTITY = (
    "method",
    "shape",
    "dtype",
    "hyper",
    "batch_size",
    "n_rows",
    "seed",
    "bounds",
    "return_best",
)


# ---------------------------------------------------------------------------
# The file format
# ---------------------------------------------------------------------------


def save(
    path: str | os.PathLike, state: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> None:
    """Write ``state`` (and the header ``meta``) to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file; its directory must exist.  Any name works (no
        suffix is added); ``.npz`` is conventional.
    state : mapping of str to numpy.ndarray or scalar
        A flat state such as :meth:`nadam.minimize.LoopState.export`: arrays
        (not of dtype object) and Python or NumPy scalars (``bool``, ``int``,
        ``float``, ``str``), which :func:`load` gives back as Python scalars.
    meta : mapping, optional
        JSON-serialisable header fields (see :func:`identity`).

    Raises
    ------
    TypeError
        If a value of ``state`` cannot be stored without pickle.
    OSError
        If the file cannot be written; the previous checkpoint, if any, is
        then left as it was.

    Notes
    -----
    The archive goes to a temporary file ``.<name>.<pid>.<random>.tmp`` in the
    same directory (a rename is atomic only within one file system), which is
    flushed and ``fsync``-ed, then renamed over ``path`` with :func:`os.replace`;
    finally the directory is ``fsync``-ed so that the rename survives a crash
    of the machine, not only of the process.
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    scalars = []
    for key, value in state.items():
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            arrays[key] = value
        elif isinstance(value, (bool, int, float, str, np.bool_, np.number, np.str_)):
            arrays[key] = np.asarray(value)
            scalars.append(key)
        else:
            raise TypeError(
                f"checkpoint state[{key!r}] must be a NumPy array (not of dtype object) or a "
                f"bool, int, float or str, got {type(value).__name__}"
            )
    header = {**(meta or {}), "format": FORMAT_VERSION, "scalars": scalars}
    arrays[_HEADER] = np.asarray(json.dumps(header))
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    # os.open with 0o666 honours the umask, as a plain open() would (mkstemp gives 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(folder)


def _fsync_directory(folder: str) -> None:
    # Directories cannot be opened on Windows, and some network file systems
    # refuse fsync on them: the rename is then as durable as the platform allows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    state : dict
        Arrays, and the scalars of the saved state as Python scalars.
    meta : dict
        The header: the ``meta`` given to :func:`save`, plus ``format`` and
        ``scalars``.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not a complete checkpoint of this format (truncated,
        damaged, or something else); the message names the file.
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with archive:
            # Read every member now: a damaged member fails here (zip CRC check), not later.
            data = {key: archive[key] for key in archive.files}
        if _HEADER not in data:
            raise ValueError("no nadam checkpoint header")
        meta = json.loads(str(data.pop(_HEADER)))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            version = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(
                f"format version {version!r}; this version of nadam reads {FORMAT_VERSION}"
            )
        for key in meta["scalars"]:
            data[key] = data[key].item()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"checkpoint {path!r} is not a valid nadam checkpoint ({exc}); "
            "delete it, or set resume=False, to start afresh"
        ) from None
    return data, meta


# ---------------------------------------------------------------------------
# Binding to a run
# ---------------------------------------------------------------------------


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the options ``checkpoint``, ``checkpoint_every`` and ``resume``.

    Returns them validated (the path as a ``str``).  The checkpoint's directory
    is checked now, so that a typo fails at once rather than at the first
    checkpoint, hours later.

    Raises
    ------
    TypeError, ValueError
        Naming the option and the value.
    """
    path, every, resume = options["checkpoint"], options["checkpoint_every"], options["resume"]
    # With comm only rank 0 touches the file, and nadam.mpi.read_checkpoint checks the
    # path there, raising on every rank alike (a check failing here on rank 0 alone
    # would leave the other ranks waiting in their first collective).
    local = options.get("comm") is None
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"option checkpoint must be a file path (str or os.PathLike) or None, got {path!r}"
            )
        path = os.fsdecode(os.fspath(path))
        if not path:
            raise ValueError("option checkpoint must be a file path, got ''")
        folder = os.path.dirname(os.path.abspath(path))
        if local and os.path.isdir(path):
            raise ValueError(f"option checkpoint must be a file path, got the directory {path!r}")
        if local and not os.path.isdir(folder):
            raise ValueError(
                f"option checkpoint: the directory {folder!r} of {path!r} does not exist"
            )
        if local and not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(
                f"option checkpoint: the directory {folder!r} of {path!r} is not writable"
            )
    if every is not None:
        if isinstance(every, (bool, np.bool_)) or not isinstance(every, (int, np.integer)):
            raise TypeError(f"option checkpoint_every must be an int >= 1 or None, got {every!r}")
        if every < 1:
            raise ValueError(f"option checkpoint_every must be >= 1, got {every!r}")
        every = int(every)
    if not isinstance(resume, (bool, np.bool_)):
        raise TypeError(f"option resume must be a bool, got {resume!r}")
    if path is None and (every is not None or resume):
        name = "checkpoint_every" if every is not None else "resume"
        raise ValueError(f"option {name} needs option checkpoint (the file path), which is None")
    return {"checkpoint": path, "checkpoint_every": every, "resume": bool(resume)}


def _describe(value: Any) -> Any:
    # A hyperparameter as JSON: floats round-trip exactly (repr), a schedule by
    # its formula and parameters.  Any other callable lr is recorded as such: it
    # is called with the restored step count, and any state of its own is not saved.
    if isinstance(value, Schedule):
        return {"schedule": value.name, "params": value.params.tolist()}
    if callable(value):
        return "callable"
    if isinstance(value, tuple):
        return list(value)
    return value


def identity(minimizer: Minimizer) -> dict[str, Any]:
    """The header that names a run: what a checkpoint must share with the run resuming it.

    Method, shape and dtype of x, hyperparameters, ``batch_size`` and the
    number of rows sampled, ``seed``, a digest of the bounds and
    ``return_best``; also the nadam version (informative, not compared).  The
    data themselves are not compared (only their number of rows): that would
    cost a pass over them.
    """
    from . import __version__

    s, o = minimizer.state, minimizer.options
    box = minimizer._box
    bounds = None
    if box is not None:
        bounds = hashlib.sha256(box[0].tobytes() + box[1].tobytes()).hexdigest()[:16]
    hyper = s.optimizer.state_dict()["hyper"]
    return {
        "nadam": __version__,
        "method": s.optimizer.rule.name,
        "shape": list(s.x.shape),
        "dtype": s.x.dtype.name,
        "hyper": {k: _describe(v) for k, v in sorted(hyper.items())},
        "batch_size": o["batch_size"],
        # state_dict's n_rows: all ranks' rows with comm (nadam.mpi.ShardSampler).
        "n_rows": None if s.sampler is None else s.sampler.state_dict()["n_rows"],
        "seed": None if o["seed"] is None else int(o["seed"]),
        "bounds": bounds,
        "return_best": o["return_best"],
    }


def _mismatches(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    out = []
    for key in _IDENTITY:
        theirs, ours = saved.get(key), mine.get(key)
        if key == "hyper" and saved.get("method") != mine.get("method"):
            continue  # another method has other hyperparameters: the method says it all
        if key == "hyper" and isinstance(theirs, dict):
            out += [
                f"{name} is {theirs.get(name)!r} in the checkpoint but {ours.get(name)!r} here"
                for name in sorted(set(theirs) | set(ours))
                if theirs.get(name) != ours.get(name)
            ]
        elif theirs != ours:
            if key == "bounds":
                theirs, ours = (
                    "none" if b is None else f"bounds with digest {b}" for b in (theirs, ours)
                )
            out.append(f"{key} is {theirs!r} in the checkpoint but {ours!r} here")
    return out


class Checkpointer:
    """The checkpoints of one :class:`~nadam.minimize.Minimizer` run.

    Built by the run from its options; with ``resume=True`` and an existing
    file, the constructor loads the file into the run.

    Parameters
    ----------
    minimizer : Minimizer
        The run, fully built (its state is replaced when resuming).
    path : str
        The checkpoint file.
    every : int or None
        Write every ``every`` iterations (when the step count is a multiple of
        it); None: only when the run stops or is interrupted.
    resume : bool
        Continue from ``path`` if it exists.

    Attributes
    ----------
    meta : dict
        This run's header (:func:`identity`), written into every checkpoint.
    resumed : bool
        Whether the run was loaded from the file.
    writer : bool
        Whether this process writes the file: True, except on the ranks other
        than 0 of a data-parallel run (option ``comm``); on resume, rank 0
        reads the file and every rank continues from its copy
        (:func:`nadam.mpi.read_checkpoint`).

    Raises
    ------
    ValueError
        If the run streams its arguments (a stream's position cannot be
        saved), or if the file is corrupt or belongs to another run: the
        message names the file and every mismatch.
    """

    def __init__(self, minimizer: Minimizer, path: str, every: int | None, resume: bool):
        if minimizer._stream is not None:
            raise ValueError(
                "option checkpoint cannot be combined with streamed args (an iterator): the "
                "position in a stream cannot be saved; pass arrays with batch_size instead"
            )
        self.path, self.every = path, every
        self.meta = identity(minimizer)
        comm = minimizer.options.get("comm")
        self.writer = comm is None or comm.Get_rank() == 0
        self.resumed = False
        self._cleaned = False
        if comm is not None:  # rank 0 reads, every rank resumes from its copy (nadam.mpi)
            from .mpi import read_checkpoint

            loaded = read_checkpoint(comm, path, resume)
        else:
            loaded = load(path) if resume and os.path.exists(path) else None
        if loaded is not None:
            state, meta = loaded
            problems = _mismatches(meta, self.meta)
            if problems:
                raise ValueError(
                    f"checkpoint {path!r} belongs to another run: {'; '.join(problems)}. "
                    "Delete it, or set resume=False, to start afresh"
                )
            try:
                minimizer.load_state_dict(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"checkpoint {path!r} does not fit this run: {exc}. "
                    "Delete it, or set resume=False, to start afresh"
                ) from None
            self.resumed = True

    def steps_to_boundary(self, nit: int, steps: int | None) -> int | None:
        """How many steps to run from ``nit``: at most ``steps`` (None: no limit),
        ending where the next checkpoint is due."""
        if self.every is None:
            return steps
        due_in = self.every - nit % self.every
        return due_in if steps is None else min(steps, due_in)

    def due(self, nit: int) -> bool:
        """Whether a periodic checkpoint is due after ``nit`` steps."""
        return self.every is not None and nit % self.every == 0

    def write(self, state: LoopState) -> None:
        """Save ``state`` (at an iteration boundary) to the file, if this process writes.

        An ``OSError`` (disk full, quota exceeded...) becomes a ``RuntimeWarning``:
        the run goes on, and the previous checkpoint stays as it was.
        """
        if not self.writer:
            return
        if not self._cleaned:
            # A process killed while writing leaves its temporary file behind.
            folder, name = os.path.split(os.path.abspath(self.path))
            for stale in glob.glob(
                os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")
            ):
                with contextlib.suppress(OSError):
                    os.unlink(stale)
            self._cleaned = True
        try:
            save(self.path, state.export(), self.meta)
        except OSError as exc:
            # A full disk or an exceeded quota must not end hours of work (nor, with comm,
            # leave the other ranks waiting in a collective for this one): warn, go on.
            warnings.warn(
                f"could not write checkpoint {self.path!r} at iteration {state.nit} ({exc}); "
                "the run goes on, and the previous checkpoint, if any, is intact",
                RuntimeWarning,
                stacklevel=2,
            )


# ---------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------


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
