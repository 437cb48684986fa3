r"""Checkpoints for :func:`nadam.minimize`: the file format and the run's checkpointer.

With ``options={"checkpoint": path, "checkpoint_every": k, "resume": True}``,
:func:`nadam.minimize` writes the whole state of the run (everything in
:class:`nadam.loop.state.RunState`: the iterate, the optimizer's state and step
count, the minibatch sampler's position, the schedule's state, the best-so-far,
the average and the stopping rules' state) to ``path`` every ``k`` iterations,
when it stops, when it is interrupted by SIGTERM or SIGINT, and when the
objective or the callback raises.  Started again with ``resume=True``, it
continues from the file, bit for bit, as if never stopped; without a file it
starts afresh, so a requeued job script needs no change.

The file is an ``.npz`` archive of plain NumPy arrays (no pickle: the members
are read as raw ``.npy`` arrays, never unpickled), plus a JSON header naming the
run (method, shape and dtype of x, hyperparameters, sampling, bounds) so that
resuming another run's checkpoint is an error rather than a silent mix-up, and
declaring the size of every member, so that a crafted file is refused before
anything is decompressed.  Writes are atomic: a temporary file in the same
directory is written, flushed and ``fsync``-ed, then renamed over the old one,
and the directory is ``fsync``-ed; a process killed at any moment leaves either
the previous checkpoint or the new one.

:func:`save` and :func:`load` are the file format; :class:`Checkpointer` binds
it to a run.

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
import io
import json
import os
import re
import secrets
import socket
import stat
import warnings
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._checks import check_bool, check_int, fail

__all__ = ["FORMAT_VERSION", "Checkpointer", "check_options", "load", "save"]

#: Version of the file layout; a file of another version is refused.
FORMAT_VERSION = 2

# The archive member holding the JSON header (a 0-d unicode array: no pickle).
_HEADER = "__nadam_checkpoint__"
#: The most bytes a header may take (it names a run: a few kB).
HEADER_LIMIT = 1 << 20

# Header fields that must agree between a checkpoint and the run resuming it:
# together they decide the state's layout and the trajectory.  maxiter and the
# stopping tolerances may change (to extend a finished run, say).
_IDENTITY = (
    "runs",  # the problems of a nadam.minimize_many batch (None: one run)
    "method",
    "shape",
    "dtype",
    "hyper",
    "batch_size",
    "n_rows",
    "seed",
    "bounds",
    "return_best",
    "average",
    "stages",
)


# ---------------------------------------------------------------------------
# The file format
# ---------------------------------------------------------------------------


def _temporary_name(path: str) -> str:
    # .<name>.<host>.<pid>.<random>.tmp: the host and pid say whose it is (see _stale).
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
    return f".{os.path.basename(path)}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, value, allow_pickle=False)
    return buffer.getvalue()


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
        A flat state such as :meth:`nadam.loop.state.RunState.export`: arrays
        (not of dtype object) and Python or NumPy scalars (``bool``, ``int``,
        ``float``, ``str``), which :func:`load` gives back as Python scalars.
    meta : mapping, optional
        JSON-serialisable header fields (the run's identity).

    Raises
    ------
    TypeError
        If a value of ``state`` cannot be stored without pickle.
    OSError
        If the file cannot be written; the previous checkpoint, if any, is
        then left as it was.

    Notes
    -----
    The archive goes to a temporary file ``.<name>.<host>.<pid>.<random>.tmp`` in
    the same directory (a rename is atomic only within one file system), which is
    flushed and ``fsync``-ed, then renamed over ``path`` with :func:`os.replace`;
    finally the directory is ``fsync``-ed so that the rename survives a crash of
    the machine, not only of the process.  A symbolic link at ``path`` is
    replaced by the file (the link's target is not written).
    """
    path = os.fspath(path)
    members: dict[str, bytes] = {}
    scalars = []
    for key, value in state.items():
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            members[key] = _npy_bytes(value)
        elif isinstance(value, (bool, int, float, str, np.bool_, np.number, np.str_)):
            members[key] = _npy_bytes(np.asarray(value))
            scalars.append(key)
        else:
            raise TypeError(
                f"checkpoint state[{key!r}] must be a NumPy array (not of dtype object) or a "
                f"bool, int, float or str, got {type(value).__name__}"
            )
    sizes = {key: len(data) for key, data in members.items()}
    header = {**(meta or {}), "format": FORMAT_VERSION, "scalars": scalars, "sizes": sizes}
    members = {_HEADER: _npy_bytes(np.asarray(json.dumps(header))), **members}
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, _temporary_name(path))
    # os.open with 0o666 honours the umask, as a plain open() would (mkstemp gives 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for key, data in members.items():
                    archive.writestr(f"{key}.npy", data)
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


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    # A raw .npy read that trusts nothing: the array header must describe exactly
    # the member's declared size, and no object dtype (which would need pickle).
    # Members are stored as they are (save): any other method or flag is damage, and
    # zipfile would raise NotImplementedError or RuntimeError, or inflate a bomb.
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise ValueError(f"member {info.filename!r} is compressed or encrypted")
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"member {info.filename!r} has .npy format {version}")
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        nbytes = count * dtype.itemsize
        if fh.tell() + nbytes != info.file_size:
            raise ValueError(f"member {info.filename!r} is not the array its header describes")
        data = fh.read(nbytes)
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy()


def load(
    path: str | os.PathLike, limit: Callable[[str], int] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    limit : callable, optional
        ``limit(key) -> int``: the most bytes member ``key`` may hold; checked
        against the archive's directory before anything is decompressed.

    Returns
    -------
    state : dict
        Arrays, and the scalars of the saved state as Python scalars.
    meta : dict
        The header: the ``meta`` given to :func:`save`, plus ``format``,
        ``scalars`` and ``sizes``.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not a complete checkpoint of this format (truncated,
        damaged, crafted, or something else); the message names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                raise ValueError("a .npy file, not an .npz archive")
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            head = infos.get(_HEADER + ".npy")
            if head is None:
                raise ValueError("no nadam checkpoint header")
            if head.file_size > HEADER_LIMIT:
                raise ValueError(f"a header of {head.file_size} bytes")
            meta = json.loads(str(_read_member(archive, head)))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
                version = meta.get("format") if isinstance(meta, dict) else None
                raise ValueError(
                    f"format version {version!r}; this version of nadam reads {FORMAT_VERSION}"
                )
            sizes = meta["sizes"]
            members = {name[: -len(".npy")]: info for name, info in infos.items()}
            del members[_HEADER]
            for key in sorted(set(sizes) - set(members)):
                raise ValueError(f"member {key!r} is missing")
            for key, info in members.items():
                if key not in sizes:
                    raise ValueError(f"member {key!r} is not declared by the header")
                if info.file_size != sizes[key]:
                    raise ValueError(
                        f"member {key!r} holds {info.file_size} bytes, but the header "
                        f"declares {sizes[key]}"
                    )
                if limit is not None and info.file_size > limit(key):
                    raise ValueError(
                        f"member {key!r} of {info.file_size} bytes, more than this run's "
                        f"{limit(key)}"
                    )
            data = {key: _read_member(archive, info) for key, info in members.items()}
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


def check_options(
    path: Any, every: Any, resume: Any, local: bool = True
) -> tuple[str | None, int | None, bool]:
    """Validate the options ``checkpoint``, ``checkpoint_every`` and ``resume``.

    Returns them validated (the path as a ``str``).  The checkpoint's directory
    is checked now (unless ``local`` is False: with MPI rank 0 checks it), so that
    a typo fails at once rather than at the first checkpoint, hours later.

    Raises
    ------
    TypeError, ValueError
        Naming the option and the value.
    """
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            fail("option checkpoint", path, "a file path (str or os.PathLike) or None", TypeError)
        path = os.fsdecode(os.fspath(path))
        if not path:
            fail("option checkpoint", path, "a file path")
        if local:
            check_path(path)
    every = check_int("option checkpoint_every", every, 1, allow_none=True)
    resume = check_bool("option resume", resume)
    if path is None and (every is not None or resume):
        name = "checkpoint_every" if every is not None else "resume"
        raise ValueError(f"option {name} needs option checkpoint (the file path), which is None")
    return path, every, resume


def check_path(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` can be a checkpoint file: a regular file or
    a symbolic link if it exists (the file replaces it), in an existing directory
    where the checkpoint's temporary file can be made (made and removed now)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"option checkpoint must be a file path, got the directory {path!r}")
    if not os.path.isdir(folder):
        raise ValueError(f"option checkpoint: the directory {folder!r} of {path!r} does not exist")
    mode = os.lstat(path).st_mode if os.path.lexists(path) else stat.S_IFREG
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        # A device or a FIFO: the first checkpoint would replace it with a file.
        raise ValueError(
            f"option checkpoint: {path!r} exists and is not a regular file (a device, FIFO "
            "or socket), which the checkpoint would replace; give a file path"
        )
    # The temporary file itself (os.access does not see a read-only mount, a name too
    # long, or root's rights): what the first write needs, tried now, not hours later.
    tmp = os.path.join(folder, _temporary_name(path))
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(tmp)
    except OSError as error:
        raise ValueError(
            f"option checkpoint: cannot write a file next to {path!r} in {folder!r} ({error})"
        ) from None


def _mismatches(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    out = []
    for key in _IDENTITY:
        theirs, ours = saved.get(key), mine.get(key)
        if key == "hyper" and saved.get("method") != mine.get("method"):
            continue  # another method has other hyperparameters: the method says it all
        if key == "hyper" and isinstance(theirs, dict):
            out += [
                f"{name} is {_shown(theirs.get(name))} in the checkpoint but "
                f"{_shown(ours.get(name))} here"
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


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "callable" in value:
        return f"the callable {value['callable']}"
    return repr(value)


def _stale(folder: str, name: str) -> list[str]:
    # Temporary files that a process of this host killed while writing left behind:
    # exactly our pattern, our host, and a pid that no longer runs.  A user's file of
    # a similar name, and the files of live processes or of other hosts, stay.
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
    pattern = re.compile(rf"\.{re.escape(name)}\.{re.escape(host)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    out = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = pattern.fullmatch(entry.name)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                out.append(entry.path)
            except OSError:  # alive, but not ours to signal
                continue
    return out


class Checkpointer:
    """The checkpoints of one run: when to write, what, and loading on resume.

    Parameters
    ----------
    path : str
        The checkpoint file.
    every : int or None
        Write every ``every`` iterations (when the step count is a multiple of
        it); None: only when the run stops, is interrupted, or fails.
    meta : dict
        The run's identity, written into every checkpoint and compared on resume.
    writer : bool
        Whether this process writes the file (False on MPI ranks other than 0).
    """

    def __init__(self, path: str, every: int | None, meta: dict, writer: bool = True):
        self.path, self.every, self.meta, self.writer = path, every, meta, writer
        self.resumed = False
        self._cleaned = False

    def resume(self, state: Any, loaded: tuple[dict, dict] | None) -> None:
        """Load ``loaded`` (``(state, meta)`` from :func:`load`, or None: nothing to
        resume) into the run's ``state``.

        Raises
        ------
        ValueError
            If it belongs to another run or does not fit this one: the message
            names the file and every mismatch, or the field.
        """
        if loaded is None:
            return
        saved, meta = loaded
        problems = _mismatches(meta, self.meta)
        if problems:
            raise ValueError(
                f"checkpoint {self.path!r} belongs to another run: {'; '.join(problems)}. "
                "Delete it, or set resume=False, to start afresh"
            )
        try:
            state.restore(saved)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"checkpoint {self.path!r} does not fit this run: {exc}. "
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

    def write(self, state: Any) -> None:
        """Save ``state`` (at an iteration boundary) to the file, if this process writes.

        An ``OSError`` (disk full, quota exceeded...) becomes a ``RuntimeWarning``:
        the run goes on, and the previous checkpoint stays as it was.
        """
        if not self.writer:
            return
        if not self._cleaned:
            folder, name = os.path.split(os.path.abspath(self.path))
            for stale in _stale(folder, name):
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
