r"""Reproducible minibatches: a counter-based RNG and an epoch-wise shuffler.

The same compiled functions draw the batch indices for the Python loop of
:func:`nadam.minimize` and for compiled loops, so both see bit-identical batches
for the same seed.  NumPy's ``Generator`` is deliberately not used: its state
cannot be carried into ``@njit`` code, and its streams may change between NumPy
versions.

Semantics
---------
Rows are drawn *without replacement, epoch by epoch*.  The index stream is the
concatenation of independent uniformly random permutations of
:math:`0, \dots, N-1`, one per epoch, and batch :math:`k` is the block
:math:`[kB, (k+1)B)` of that stream.  Every row is therefore seen exactly once
per epoch and every batch has exactly :math:`B` rows.  When :math:`N` is not a
multiple of :math:`B`, the batch that crosses the end of an epoch takes the
last rows of that epoch and the first rows of the next (so it may hold one
row twice); no row is ever dropped.

The permutation of epoch :math:`e` is a Fisher-Yates shuffle of the identity
driven by SplitMix64 (Steele, Lea & Flood, 2014) started from a state derived
from ``(key, e)`` only, and integers in :math:`[0, m)` are drawn by rejection,
so they are exactly uniform.  The sampler's whole state is three integers
``(key, epoch, pos)`` (``pos`` rows of the current epoch used so far); the
permutation is a cache recomputed from them, which keeps checkpoints tiny.

>>> import numpy as np
>>> from nadam.sampling import Minibatches
>>> X, y = np.arange(10.0).reshape(5, 2), np.arange(5.0)
>>> mb = Minibatches((X, y, "not sampled"), batch_size=2, seed=0)
>>> Xb, yb, tag = mb.next()
>>> Xb.shape, yb.shape, tag
((2, 2), (2,), 'not sampled')
>>> bool(np.all(Xb[:, 0] == 2 * yb))       # rows stay aligned across arrays
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from ._checks import check_int, check_seed

__all__ = ["Minibatches", "mix64", "next_batch", "seed_key", "shuffle"]

# SplitMix64's constants: the odd increment (2**64 / golden ratio) and the
# multipliers of its finaliser (Stafford's "Mix13").
GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: Indices of the sampler state vector.
KEY, EPOCH, POS = range(3)


@njit(cache=True)
def mix64(z):
    """SplitMix64's finaliser: a bijection of uint64 with good avalanche."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _below(s, bound):
    # Advance the SplitMix64 counter and return (counter, uniform int in [0, bound)).
    # r % bound is biased for the lowest 2**64 mod bound values of r: reject them.
    b = np.uint64(bound)
    reject = (np.uint64(0) - b) % b
    while True:
        s += GAMMA
        r = mix64(s)
        if r >= reject:
            return s, np.int64(r % b)


@njit(cache=True)
def shuffle(perm, key, epoch):
    """Fill ``perm`` with the permutation of epoch ``epoch`` (in place, returns None).

    Parameters
    ----------
    perm : numpy.ndarray of int64, shape (N,)
        Overwritten with a uniformly random permutation of ``0 .. N-1``.
    key : int64
        The sampler's key (the bits of a uint64), from :func:`seed_key`.
    epoch : int64
        Epoch number; each epoch has its own, independent stream.
    """
    n = perm.shape[0]
    for i in range(n):
        perm[i] = i
    s = mix64(np.uint64(key) ^ mix64(np.uint64(epoch) + GAMMA))
    for i in range(n - 1, 0, -1):
        s, j = _below(s, i + 1)
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp


@njit(cache=True)
def next_batch(state, perm, idx):
    """Write the next ``idx.shape[0]`` row indices into ``idx`` and advance ``state``.

    Mutates ``state`` (``int64[3]``: key, epoch, pos), ``perm`` (the current
    epoch's permutation, reshuffled when an epoch ends) and ``idx``; returns None.
    """
    n = perm.shape[0]
    pos = state[POS]
    for k in range(idx.shape[0]):
        if pos == n:
            state[EPOCH] += 1
            shuffle(perm, state[KEY], state[EPOCH])
            pos = 0
        idx[k] = perm[pos]
        pos += 1
    state[POS] = pos


def seed_key(seed: int | None) -> int:
    """The 64-bit sampler key for ``seed`` (as the bits of an int64).

    ``None`` draws fresh entropy from the operating system (not reproducible).
    Any non-negative integer is accepted; it is hashed with
    :class:`numpy.random.SeedSequence`, at set-up only.
    """
    seed = check_seed("seed", seed)
    word = np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]
    return int(word.view(np.int64))


def _refuse_unsampled_rows(args: Sequence[Any], sampled: list[int], n: int) -> None:
    # An argument with the sampled arrays' n rows that is not a NumPy array (a list, a
    # scipy.sparse matrix, a pandas frame) would reach fun whole beside a batch of the
    # others: a shape error deep in the user's code at best, a wrong fit at worst.
    for i, a in enumerate(args):
        if i in sampled or isinstance(a, (str, bytes)):
            continue
        shape = getattr(a, "shape", None)
        try:
            rows = shape[0] if shape is not None else len(a)
        except (TypeError, IndexError):
            continue
        if rows == n:
            raise TypeError(
                f"args[{i}] (a {type(a).__name__}) has {n} rows, as many as the arrays that "
                f"batch_size samples (args[{sampled[0]}]), but only NumPy arrays are sampled: "
                "pass it as one (np.asarray(a), or a sparse matrix's .toarray()), or pass the "
                "row numbers np.arange(n) among args and take its rows in fun"
            )


class Minibatches:
    """Row-sampled views of a tuple of arguments, filled in place each step.

    Every :class:`numpy.ndarray` of ``args`` with at least one dimension is
    sampled along axis 0 (all with the same rows); anything else (scalars,
    0-d arrays, other objects) is passed through unchanged.  The batch buffers
    are allocated once; :meth:`next` refills them and returns the same tuple
    every time, so the loop allocates nothing per step.

    Parameters
    ----------
    args : tuple
        The objective's extra arguments.
    batch_size : int
        Rows per batch, ``1 <= batch_size <= N``.
    seed : int or None
        See :func:`seed_key`.

    Raises
    ------
    ValueError
        If no argument is an array with rows, the arrays' lengths differ, or
        ``batch_size`` is out of range.
    TypeError
        If ``batch_size`` is not an integer, or an argument that is not a NumPy
        array (a list, a sparse matrix) has as many rows as the sampled arrays.

    Notes
    -----
    A function receiving a batch must not keep it between calls: the buffers
    are overwritten by the next batch.
    """

    def __init__(self, args: Sequence[Any], batch_size: int, seed: int | None = None):
        sampled = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim >= 1]
        if not sampled:
            raise ValueError(
                "batch_size needs at least one NumPy array in args to sample rows from; "
                f"got args of types {[type(a).__name__ for a in args]}: pass the arrays "
                "to sample as arguments of their own, fun(x, X, y), not inside a dict or list"
            )
        lengths = {i: args[i].shape[0] for i in sampled}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "the arrays in args must have the same length along axis 0 to be sampled "
                f"together; got lengths {', '.join(f'args[{i}]: {n}' for i, n in lengths.items())}"
            )
        n = next(iter(lengths.values()))
        _refuse_unsampled_rows(args, sampled, n)
        check_int("batch_size", batch_size, 1, n)
        self._args, self._sampled = tuple(args), frozenset(sampled)
        self.n_rows = int(n)
        self.batch_size = int(batch_size)
        self._sources = tuple(args[i] for i in sampled)
        buffers = [np.empty((self.batch_size, *a.shape[1:]), a.dtype) for a in self._sources]
        self._pairs = tuple(zip(self._sources, buffers, strict=True))
        batch = list(args)
        for i, buf in zip(sampled, buffers, strict=True):
            batch[i] = buf
        self.batch = tuple(batch)
        self.idx = np.empty(self.batch_size, np.int64)
        self.state = np.array([seed_key(seed), 0, 0], np.int64)
        self.perm = np.empty(self.n_rows, np.int64)
        shuffle(self.perm, self.state[KEY], self.state[EPOCH])

    @property
    def pairs(self) -> tuple:
        """``(source, buffer)`` for each sampled array: what :meth:`next` gathers."""
        return self._pairs

    def next(self) -> tuple:
        """Sample the next batch into the buffers and return the batch tuple."""
        next_batch(self.state, self.perm, self.idx)
        idx = self.idx
        for src, buf in self._pairs:
            # mode="clip": with the default "raise", NumPy buffers `out` (a copy per call).
            np.take(src, idx, axis=0, out=buf, mode="clip")
        return self.batch

    def subset(self, rows: int) -> tuple:
        """The arguments with every sampled array cut to one fixed set of ``rows`` rows
        (copies; all of them, in order, if ``rows`` is at least their number).

        The rows are a uniformly random subset drawn from the sampler's key alone (not
        from its stream of batches): the same at every call and after a restored state.
        """
        if rows >= self.n_rows:
            return self._args
        perm = np.empty(self.n_rows, np.int64)
        shuffle(perm, self.state[KEY], -1)  # the permutation of an epoch never reached
        idx = np.sort(perm[:rows])
        return tuple(a[idx] if i in self._sampled else a for i, a in enumerate(self._args))

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state: ``key``, ``epoch``, ``pos`` and the sizes, as ints."""
        key, epoch, pos = (int(v) for v in self.state)
        return {
            "key": key,
            "epoch": epoch,
            "pos": pos,
            "n_rows": self.n_rows,
            "batch_size": self.batch_size,
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the field unless ``state`` is a valid
        :meth:`state_dict` of this sampler (nothing is loaded)."""
        mine = (self.n_rows, self.batch_size)
        theirs = (state["n_rows"], state["batch_size"])
        if theirs != mine:
            raise ValueError(
                f"sampler state is for n_rows, batch_size = {theirs}; this sampler has {mine}"
            )
        for key, high in (("key", None), ("epoch", None), ("pos", self.n_rows)):
            value = state[key]
            low = -(2**63) if key == "key" else 0
            top = 2**63 - 1 if high is None else high
            if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
                raise ValueError(f"Invalid sampler.{key}: {value!r}; allowed: an int")
            if not low <= value <= top:
                raise ValueError(
                    f"Invalid sampler.{key}: {value!r}; allowed: an int in [{low}, {top}]"
                )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly from :meth:`state_dict` (the permutation is recomputed)."""
        Minibatches.check_state(self, state)  # this class's layout, also in a subclass
        self.state[:] = (state["key"], state["epoch"], state["pos"])
        shuffle(self.perm, self.state[KEY], self.state[EPOCH])

    def rewind(self) -> None:
        """Go back one batch: the next :meth:`next` draws the rows of the last one again.

        (A run whose objective raised goes back to where it was before drawing the
        batch it could not evaluate, so that its checkpoint resumes exactly.)"""
        rows = int(self.state[EPOCH]) * self.n_rows + int(self.state[POS]) - self.batch_size
        if rows < 0:
            raise ValueError("no batch has been drawn")
        # After R > 0 rows the stream is in epoch (R-1)//n at pos 1..n (an epoch is
        # reshuffled only at the next draw); after 0 rows, epoch 0 at pos 0.
        epoch = 0 if rows == 0 else (rows - 1) // self.n_rows
        if epoch != self.state[EPOCH]:
            shuffle(self.perm, self.state[KEY], epoch)
        self.state[EPOCH], self.state[POS] = epoch, rows - epoch * self.n_rows
