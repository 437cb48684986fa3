"""CPU kernels: each rule of :mod:`nadam.rules` compiled as a serial and a
``prange`` loop.

A kernel has the signature ``kernel(p, g, s, h)``: it updates the flat
parameters ``p`` and the ``(k, n)`` state ``s`` in place from the gradient ``g``
and the per-step coefficients ``h`` (all of the parameters' dtype), and returns
None.  A *stepper* ``step(p, g, s, hp, t, aux, h)`` first fills ``h`` from the
float64 hyperparameters ``hp`` and the step count ``t``, then runs the kernel:
one compiled call per optimisation step.  :func:`guarded_stepper` is the
stepper of :func:`nadam.minimize`'s loops: it also refuses to write a
non-finite parameter and keeps an average of the iterates (see there).

Serial and parallel kernels run the same element function with the same
floating-point operations in the same order, and the sums of two-pass rules are
added block by block in a fixed order (:data:`BLOCK`), so every thread count
gives the same bits.

Speed (``docs/benchmarks.md`` has the figures, ``benchmarks/README.md`` how they
were measured).  A large step is memory-bound: its floor is the bytes it moves.
What keeps a kernel on that floor is a vectorised loop with a short body: a
memory-bound loop keeps fewer cache misses in flight the more instructions each
element costs.  So:

* the rule is inlined by LLVM (``forceinline``), not at numba's IR level, which
  left the serial loops of the rules using ``max`` (Adamax, AMSGrad) scalar;
* each loop is its own compiled function (one loop per function is what LLVM's
  vectoriser handles reliably), compiled in one of three *shared modes*: the
  rule as written (``"full"``), or with the rule's switches ``RAW_GRAD`` /
  ``RAW_PARAM`` on (``"decoupled"``, ``"raw"``; see :mod:`nadam.rules`), which
  skip the multiply-adds of the shared options when the hyperparameters make
  them identities (no ``maximize``, no weight decay; or only decoupled weight
  decay).  The copies compute the same numbers: with ``h[0] = 1, h[1] = 0`` the
  direction ``1·g + 0·p`` is ``g`` (up to the sign of a zero, and except for an
  infinite parameter, where skipping ``0·p`` is what torch does), and ``1·p`` is
  ``p``.  An optimizer knows its mode from its hyperparameters and compiles only
  that loop; the public :func:`kernel` without a mode holds all three and
  chooses from ``h`` on each call.
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np

from .._specialise import rebind
from ..rules import DECOUPLED, MAXIMIZE, WEIGHT_DECAY, Rule

__all__ = [
    "ArrayShapeError",
    "BLOCK",
    "FINITE_PARALLEL_THRESHOLD",
    "PARALLEL_THRESHOLD",
    "SHARED_MODES",
    "all_finite",
    "all_finite_serial",
    "check_arrays",
    "check_host",
    "checked_stepper",
    "coefficients",
    "first_pass",
    "guarded_stepper",
    "kernel",
    "loop",
    "prepare",
    "shared_mode",
    "split_stepper",
    "stepper",
    "switch_kernel",
]

# Below this many elements the serial loop beats the threaded one.  Measured with
# ``python benchmarks/crossover.py`` (2-core Xeon, numba's OpenMP layer, quiet
# machine): the crossover moves with a rule's cost per element, from ~2,700
# (float64 Adam/RAdam, bound by the divide/sqrt unit) and ~11,000 (float32
# Adam/RAdam/RMSprop) to ~20,000-30,000 (SGD float64, Adagrad and Adamax
# float32) and beyond (SGD float32).  At 2**13 the worst case near the threshold
# is ~1.5x off the better kernel at either end (float64 Adam run serially just
# below it, ~5 µs lost per step; float32 SGD run threaded just above it, ~1 µs).
PARALLEL_THRESHOLD = 2**13

# The same crossover for the finiteness check of the gradient (a read-only pass),
# measured by the same script: ~30,000-37,000 (float64), ~60,000-75,000 (float32).
# A compile-time constant of ``all_finite``.
FINITE_PARALLEL_THRESHOLD = 2**15

#: Elements per block of the sums of a two-pass rule: each block is added up by the
#: same compiled code, and the blocks' sums in block order, whatever the thread count.
BLOCK = 2**14

#: The shared modes of a loop: which of the options shared by every rule it applies.
SHARED_MODES = ("raw", "decoupled", "full")

_JIT = dict(error_model="numpy", cache=True, nogil=True)


def shared_mode(hp: np.ndarray) -> str:
    """The loop that the packed hyperparameters ``hp`` need: ``"raw"`` (no
    maximize, no weight decay), ``"decoupled"`` (only decoupled weight decay) or
    ``"full"``."""
    if hp[MAXIMIZE] != 0.0 or (hp[WEIGHT_DECAY] != 0.0 and hp[DECOUPLED] == 0.0):
        return "full"
    return "raw" if hp[WEIGHT_DECAY] == 0.0 else "decoupled"


# The templates below are never called directly: ``_compile`` copies their code
# into new functions whose globals name the rule, its flags and the loop kind
# (nadam._specialise.rebind); numba treats those globals as compile-time constants.
def _loop_template(p, g, s, h):
    """One loop of a kernel: update ``p`` and ``s`` in place; returns None."""
    for i in _range(p.shape[0]):  # noqa: F821 (bound by rebind)
        p[i] = _update(p, g, s, h, i, _FLAGS)  # noqa: F821


def _guarded_loop_template(p, g, s, h, avg, w):
    """As the plain loop, but an element whose new value is not finite keeps its
    old one; returns how many did.  ``avg`` (None, or an array of p's shape)
    moves towards the new iterate: ``avg += w·(p - avg)``."""
    bad = 0
    for i in _range(p.shape[0]):  # noqa: F821
        old = p[i]
        new = _update(p, g, s, h, i, _FLAGS)  # noqa: F821
        finite = new - new == 0.0
        p[i] = new if finite else old
        bad += 0 if finite else 1
        if avg is not None:
            a = avg[i]
            avg[i] = a + w * (p[i] - a)
    return bad


def _block_template(p, g, s, h, start, stop):
    # One block of the first pass.  The index is unsigned: numba then does not wrap a
    # possibly negative index around, which kept the loop from vectorising.  The sums
    # are reassociated here only (the element function is compiled apart, exactly), in
    # an order fixed by this compiled code whatever the threads: in the parameters'
    # dtype (h[0] - h[0] is its zero) over the vector lanes and unrolled accumulators
    # of one block, a few hundred terms each, then in float64 across the blocks.  (In
    # float64 across the lanes too, float32 ran at half the speed, compute-bound.)
    a = h[0] - h[0]
    b = h[0] - h[0]
    for i in range(numba.uint64(start), numba.uint64(stop)):
        x, y = _accumulate(p, g, s, h, i, _FLAGS)  # noqa: F821
        a += x
        b += y
    return a, b


def _first_pass_template(p, g, s, h):
    """The first pass of a two-pass rule: update ``s`` and return the rule's two
    sums over all elements, added in a fixed order (see :data:`BLOCK`)."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    n = p.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    partial = np.empty((blocks, 2))
    for k in _range(blocks):  # noqa: F821
        start = k * BLOCK
        a, b = _block(p, g, s, h, start, min(start + BLOCK, n))  # noqa: F821
        partial[k, 0], partial[k, 1] = a, b
    a = 0.0
    b = 0.0
    for k in range(blocks):
        a += partial[k, 0]
        b += partial[k, 1]
    return a, b


def _switch_template(p, s, h):
    """Move the parameters ``p`` in place between the training and the evaluation
    point of a rule that keeps two (schedule-free: y and x); returns None."""
    for i in _range(p.shape[0]):  # noqa: F821
        p[i] = _switch(p, s, h, i, _FLAGS)  # noqa: F821


def _kernel_template(p, g, s, h):
    """Update the parameters ``p`` and the state ``s`` in place from the gradient
    ``g`` and this step's coefficients ``h``; returns None."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    _loop(p, g, s, h)  # noqa: F821


def _any_mode_kernel_template(p, g, s, h):
    """Update the parameters ``p`` and the state ``s`` in place from the gradient
    ``g`` and this step's coefficients ``h``; returns None."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    if h[0] == 1 and h[1] == 0:  # the gradient as is: no maximize, no L2 decay
        if h[2] == 1:  # and no decoupled decay
            _loop_raw(p, g, s, h)  # noqa: F821
        else:
            _loop_decoupled(p, g, s, h)  # noqa: F821
    else:
        _loop_full(p, g, s, h)  # noqa: F821


def _coefficients_template(hp, t, aux, h):
    """Fill ``h`` for step ``t`` from ``hp`` and ``aux``; returns None."""
    check_host(hp, aux, h, _N_HYPER, _N_AUX, _N_COEFFICIENTS)  # noqa: F821
    _coefficients(hp, t, aux, h)  # noqa: F821


def _prepare_template(p, g, s, hp, t, aux, h):
    # Every check before the first write (the coefficients advance NAdam's aux),
    # then the coefficients and, for a two-pass rule, the first pass and the
    # coefficients of the second.
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    check_host(hp, aux, h, _N_HYPER, _N_AUX, _N_COEFFICIENTS)  # noqa: F821
    _coefficients(hp, t, aux, h)  # noqa: F821
    if _TWO_PASS:  # noqa: F821
        sums = np.empty(2)
        sums[0], sums[1] = _first(p, g, s, h)  # noqa: F821
        _finish(hp, t, aux, sums, h)  # noqa: F821


def _begin_template(p, g, s, hp, t, aux, h):
    """The first half of a two-pass step: the coefficients and the first pass; returns
    the rule's two sums (for the caller to sum over MPI ranks, say)."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    check_host(hp, aux, h, _N_HYPER, _N_AUX, _N_COEFFICIENTS)  # noqa: F821
    _coefficients(hp, t, aux, h)  # noqa: F821
    sums = np.empty(2)
    sums[0], sums[1] = _first(p, g, s, h)  # noqa: F821
    return sums


def _end_template(p, g, s, hp, t, aux, h, sums, avg, w):
    """The second half: ``finish`` from the (summed) sums, then the guarded loop."""
    _finish(hp, t, aux, sums, h)  # noqa: F821
    return _guarded_loop(p, g, s, h, avg, w)  # noqa: F821


def _stepper_template(p, g, s, hp, t, aux, h):
    """Fill ``h`` for step ``t``, then update ``p`` and ``s`` in place; returns None."""
    _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
    _loop(p, g, s, h)  # noqa: F821


def _checked_stepper_template(p, g, s, hp, t, aux, h):
    """As the stepper if ``g`` is all finite (returns True); else touches nothing and
    returns False."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    if not _all_finite(g):  # noqa: F821
        return False
    _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
    _loop(p, g, s, h)  # noqa: F821
    return True


def _guarded_stepper_template(p, g, s, hp, t, aux, h, avg, w):
    """Fill ``h`` for step ``t``, then the guarded loop; returns the number of
    elements whose new value was not finite (they keep their old value)."""
    _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
    return _guarded_loop(p, g, s, h, avg, w)  # noqa: F821


class ArrayShapeError(ValueError):
    """An array passed to a compiled kernel, stepper or coefficient function does not
    have the shape it needs.  ``args`` is ``(name, shape, needed, hint)``.

    The compiled checks raise it with its parts as arguments, and the message is
    formatted here: building the string in compiled code would triple the compile
    time of every kernel."""

    def __str__(self) -> str:
        name, shape, needed, hint = self.args
        return f"{name} has shape {shape}; needed: {needed} ({hint})"


# O(1) checks at the top of every compiled entry point: the raw kernels are called
# from users' own code, where a wrong length would read or write out of bounds.
_SEE_H = "see nadam.kernels.coefficient_buffer"


@numba.njit(**_JIT)
def check_arrays(p, g, s, h, rows, n_coefficients):
    """Raise :class:`ArrayShapeError` unless ``g``, ``s`` and ``h`` fit ``p`` and the
    kernel."""
    n = p.shape[0]
    if g.shape[0] != n:
        raise ArrayShapeError("g", g.shape, p.shape, "the shape of p")
    if s.shape[0] != rows or s.shape[1] != n:
        raise ArrayShapeError("s", s.shape, (rows, n), "see nadam.kernels.state")
    if h.shape[0] != n_coefficients:
        raise ArrayShapeError("h", h.shape, (n_coefficients,), _SEE_H)


@numba.njit(**_JIT)
def check_host(hp, aux, h, n_hyper, n_aux, n_coefficients):
    """Raise :class:`ArrayShapeError` unless ``hp``, ``aux`` and ``h`` have the rule's
    lengths."""
    if hp.shape[0] != n_hyper:
        raise ArrayShapeError("hp", hp.shape, (n_hyper,), "see nadam.kernels.hyperparameters")
    if aux.shape[0] != n_aux:
        raise ArrayShapeError("aux", aux.shape, (n_aux,), "see nadam.kernels.aux")
    if h.shape[0] != n_coefficients:
        raise ArrayShapeError("h", h.shape, (n_coefficients,), _SEE_H)


def _compile(template, name: str, rule: Rule, parallel: bool = False, **bindings):
    # Cache files are named after the variant and the digest of the rule's
    # sources: a cached kernel is never stale.  (A rule defined in a notebook or in
    # exec-ed code has no file for numba's cache to key on: not cached.)
    fn = rebind(template, f"{name}_{rule.digest}", **bindings)
    return numba.njit(parallel=parallel, **{**_JIT, "cache": rule.cacheable})(fn)


def _variant_name(rule: Rule, flags: tuple, parallel: bool, shared: str | None = None) -> str:
    on = "".join(f"_{n}" for n, flag in zip(rule.flag_names, flags, strict=True) if flag)
    mode = "" if shared is None else f"_{shared}"
    return f"{rule.name}{on}{mode}_{'parallel' if parallel else 'serial'}"


def _check_flags(rule: Rule, flags: tuple) -> tuple:
    flags = tuple(bool(f) for f in flags)
    if len(flags) != len(rule.flag_names):
        raise ValueError(
            f"rule {rule.name!r} has the flags {rule.flag_names}, got {len(flags)} values"
        )
    return flags


@cache
def _element(function, shared: str):
    """The element function ``function`` compiled for inlining, with the switches
    ``RAW_GRAD`` and ``RAW_PARAM`` of its module set for the shared mode."""
    raw_grad, raw_param = {"raw": (True, True), "decoupled": (True, False)}.get(
        shared, (False, False)
    )
    fn = rebind(function, RAW_GRAD=raw_grad, RAW_PARAM=raw_param)
    return numba.njit(forceinline=True, error_model="numpy")(fn)


def _sizes(rule: Rule, flags: tuple | None = None) -> dict:
    """The array lengths the checks of a rule's compiled functions expect (the
    state's rows only with the flags that shape it)."""
    sizes = {
        "_N_COEFFICIENTS": rule.n_coefficients,
        "_N_HYPER": rule.n_hyper,
        "_N_AUX": rule.n_aux,
    }
    if flags is not None:
        sizes["_ROWS"] = len(rule.slots(flags))
    return sizes


@cache
def loop(rule: Rule, flags: tuple, parallel: bool, shared: str, guarded: bool = False):
    """One compiled loop of a rule's kernel: ``loop(p, g, s, h) -> None`` for one shared
    mode, or with ``guarded`` the loop of :func:`guarded_stepper`,
    ``loop(p, g, s, h, avg, w) -> int``."""
    if parallel:
        _start_threads()
    template = _guarded_loop_template if guarded else _loop_template
    name = ("guarded_" if guarded else "loop_") + _variant_name(rule, flags, parallel, shared)
    bindings = {
        "_update": _element(rule.update, shared),
        "_range": numba.prange if parallel else range,
        "_FLAGS": flags,
    }
    return _compile(template, name, rule, parallel, **bindings)


@cache
def kernel(rule: Rule, flags: tuple = (), parallel: bool = False, shared: str | None = None):
    """The compiled in-place kernel ``kernel(p, g, s, h) -> None`` of a rule (the
    second pass of a two-pass rule: after :func:`first_pass` and ``rule.finish``).

    Parameters
    ----------
    rule : Rule
        From :data:`nadam.rules.RULES`.
    flags : tuple of bool
        The rule's compile-time switches, in ``rule.flag_names`` order.
    parallel : bool
        ``prange`` over elements (all cores) instead of a serial loop.
    shared : {None, "raw", "decoupled", "full"}
        The shared options the loop applies (:func:`shared_mode`); None holds
        all three loops and chooses from ``h`` on each call.
    """
    flags = _check_flags(rule, flags)
    sizes = _sizes(rule, flags)
    if shared is None:
        loops = {f"_loop_{mode}": loop(rule, flags, parallel, mode) for mode in SHARED_MODES}
        name = "kernel_" + _variant_name(rule, flags, parallel)
        return _compile(_any_mode_kernel_template, name, rule, **loops, **sizes)
    name = "kernel_" + _variant_name(rule, flags, parallel, shared)
    return _compile(
        _kernel_template, name, rule, _loop=loop(rule, flags, parallel, shared), **sizes
    )


@cache
def first_pass(rule: Rule, flags: tuple = (), parallel: bool = False, shared: str = "full"):
    """The first pass ``first(p, g, s, h) -> (a, b)`` of a two-pass rule: it updates
    the state and returns the rule's two sums over all elements."""
    if rule.accumulate is None:
        raise ValueError(f"rule {rule.name!r} has one pass")
    if parallel:
        _start_threads()
    flags = _check_flags(rule, flags)
    block = numba.njit(error_model="numpy", nogil=True, fastmath={"reassoc"})(
        rebind(
            _block_template,
            "block_" + _variant_name(rule, flags, False, shared),
            _accumulate=_element(rule.accumulate, shared),
            _FLAGS=flags,
        )
    )
    name = "first_" + _variant_name(rule, flags, parallel, shared)
    bindings = {"_block": block, "_range": numba.prange if parallel else range}
    return _compile(_first_pass_template, name, rule, parallel, **bindings, **_sizes(rule, flags))


@cache
def switch_kernel(rule: Rule, flags: tuple = (), parallel: bool = False):
    """``switch(p, s, h) -> None``: ``p[i] = rule.switch(p, s, h, i, flags)`` for every
    element (``h`` from ``rule.switch_coefficients``), in place."""
    if rule.switch is None:
        raise ValueError(f"rule {rule.name!r} has one point: nothing to switch")
    if parallel:
        _start_threads()
    flags = _check_flags(rule, flags)
    name = "switch_" + _variant_name(rule, flags, parallel)
    bindings = {
        "_switch": _element(rule.switch, "full"),
        "_range": numba.prange if parallel else range,
        "_FLAGS": flags,
    }
    return _compile(_switch_template, name, rule, parallel, **bindings)


@cache
def coefficients(rule: Rule):
    """The compiled ``coefficients(hp, t, aux, h) -> None`` of a rule, which checks
    the lengths of ``hp``, ``aux`` and ``h`` first."""
    bindings = {"_coefficients": rule.coefficients, **_sizes(rule)}
    return _compile(_coefficients_template, "coefficients_" + rule.name, rule, **bindings)


@cache
def prepare(rule: Rule, flags: tuple, parallel: bool, shared: str):
    """``prepare(p, g, s, hp, t, aux, h) -> None``: the checks and the coefficients of a
    step, and for a two-pass rule its first pass and ``finish`` (everything before
    the loop that writes the parameters)."""
    two_pass = rule.accumulate is not None
    bindings = {
        "_coefficients": rule.coefficients,
        "_TWO_PASS": two_pass,
        "_first": first_pass(rule, flags, parallel, shared) if two_pass else None,
        "_finish": rule.finish,
        **_sizes(rule, flags),
    }
    name = "prepare_" + _variant_name(rule, flags, parallel, shared)
    return _compile(_prepare_template, name, rule, **bindings)


def _stepper(template, prefix: str, rule, flags, parallel, shared, **bindings):
    flags = _check_flags(rule, flags)
    bindings = {
        "_prepare": prepare(rule, flags, parallel, shared),
        "_loop": loop(rule, flags, parallel, shared),
        **_sizes(rule, flags),
        **bindings,
    }
    return _compile(
        template, prefix + _variant_name(rule, flags, parallel, shared), rule, **bindings
    )


@cache
def stepper(rule: Rule, flags: tuple = (), parallel: bool = False, shared: str = "full"):
    """The compiled ``step(p, g, s, hp, t, aux, h) -> None`` of a rule: coefficients,
    then the kernel (both passes of a two-pass rule), in one call."""
    return _stepper(_stepper_template, "step_", rule, flags, parallel, shared)


@cache
def checked_stepper(rule: Rule, flags: tuple = (), parallel: bool = False, shared: str = "full"):
    """The compiled ``step(p, g, s, hp, t, aux, h) -> bool``: if every element of
    ``g`` is finite, as :func:`stepper` and returns True; otherwise returns False
    and touches nothing (``aux`` and ``h`` included).  One compiled call instead
    of ``all_finite`` then the stepper: one dispatch (~0.4 µs) less per step."""
    # A serial stepper never calls a prange loop (nor needs one for the check: it
    # serves arrays below PARALLEL_THRESHOLD, or a single thread).
    check = all_finite if parallel else all_finite_serial
    return _stepper(
        _checked_stepper_template, "checked_step_", rule, flags, parallel, shared, _all_finite=check
    )


@cache
def guarded_stepper(rule: Rule, flags: tuple = (), parallel: bool = False, shared: str = "full"):
    """The compiled ``step(p, g, s, hp, t, aux, h, avg, w) -> int`` of the loops of
    :func:`nadam.minimize`: as :func:`stepper`, but an element whose new value is
    not finite keeps its old value (the loop then stops: it never hands back a
    non-finite iterate), and ``avg`` (None, or an array of p's shape) moves
    towards the new iterate, ``avg += w·(p - avg)`` (iterate averaging), in the
    same pass.  Returns the number of elements that kept their old value."""
    flags = _check_flags(rule, flags)
    guarded = loop(rule, flags, parallel, shared, guarded=True)
    return _stepper(
        _guarded_stepper_template,
        "guarded_step_",
        rule,
        flags,
        parallel,
        shared,
        _guarded_loop=guarded,
    )


@cache
def split_stepper(rule: Rule, flags: tuple = (), parallel: bool = False, shared: str = "full"):
    """``(begin, end)``: :func:`guarded_stepper` of a two-pass rule cut where its sums
    are taken, ``begin(p, g, s, hp, t, aux, h) -> sums`` and ``end(p, g, s, hp, t, aux,
    h, sums, avg, w) -> int``, so that the sums can be summed over MPI ranks between."""
    flags = _check_flags(rule, flags)
    first = first_pass(rule, flags, parallel, shared)
    guarded = loop(rule, flags, parallel, shared, guarded=True)
    name = _variant_name(rule, flags, parallel, shared)
    sizes = _sizes(rule, flags)
    bindings = {"_coefficients": rule.coefficients, "_first": first, **sizes}
    begin = _compile(_begin_template, "begin_" + name, rule, **bindings)
    bindings = {"_finish": rule.finish, "_guarded_loop": guarded}
    end = _compile(_end_template, "end_" + name, rule, **bindings)
    return begin, end


# Reassociation only: lets the sum vectorise, and any order of adding zeros
# and NaNs gives the same verdict.  (No "nnan"/"ninf": they would fold it away.)
@numba.njit(fastmath={"reassoc"}, **_JIT)
def _all_finite_serial(x):
    acc = x[0] - x[0]
    for i in range(1, x.shape[0]):
        acc += x[i] - x[i]  # 0 for a finite value, NaN for inf or NaN
    return acc == acc


@numba.njit(fastmath={"reassoc"}, parallel=True, **_JIT)
def _all_finite_parallel(x):
    acc = x[0] - x[0]
    for i in numba.prange(x.shape[0]):
        acc += x[i] - x[i]
    return acc == acc


@numba.njit(**_JIT)
def all_finite_serial(x):
    """True if every element of the 1-D array ``x`` is finite (one pass on one core)."""
    return x.shape[0] == 0 or _all_finite_serial(x)


@numba.njit(**_JIT)
def all_finite(x):
    """True if every element of the 1-D array ``x`` is finite (one pass, no copy;
    all cores from :data:`FINITE_PARALLEL_THRESHOLD` elements up)."""
    if x.shape[0] >= FINITE_PARALLEL_THRESHOLD:
        return _all_finite_parallel(x)
    return all_finite_serial(x)


def _start_threads() -> None:
    # numba 0.68 links a prange loop read from its cache into a caller without
    # loading the threading layer: compiling the caller then fails ("LLVM ERROR:
    # Symbol not found: allocate_sched"), and a caller read from the cache crashed
    # on its first call in a later process, unless something had started the
    # threads.  So every prange loop starts them when it is handed out (not at
    # import: a process that never runs one keeps its fork safe).
    numba.get_num_threads()


def choose_parallel(n: int) -> bool:
    """Whether an ``n``-element update should use the threaded kernel."""
    return n >= PARALLEL_THRESHOLD and numba.get_num_threads() > 1
