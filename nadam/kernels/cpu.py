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
from ..threads import load_tbb

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
# ``python benchmarks/crossover.py`` (2-core Xeon, numba's TBB layer: nadam.threads):
# the crossover moves with a rule's cost per element, from ~20,000 (float64 Adam,
# RMSprop, NAdam, RAdam, Prodigy: just past one BLOCK, the unit a thread takes) to
# ~75,000-150,000 (float32 Adam, Adagrad, RAdam) and ~250,000 (SGD float32); their
# geometric mean is ~54,000.  TBB's threads start later than OpenMP's (whose
# crossovers were 4-10x lower) but, unlike OpenMP's, do not wait for each other when
# another process takes their cores (docs/benchmarks.md, "Shared machines").  A rerun
# (2026-12-02, afternoon) put the float64 crossovers' geometric mean at ~30,000 and the
# float32 ones' at ~66,000 (float32 Adam 110,000, where threads cost 15-25 % at 10^5):
# the serial time is the bytes a step moves, the threads' start-up is fixed, so the
# threshold is in bytes: this many float64 elements, twice as many float32 ones.
PARALLEL_THRESHOLD = 2**16

# The same crossover for the finiteness check of the gradient on its own (a
# read-only pass; nadam.kernels.all_finite), measured by the same script: ~400,000
# (float64), ~730,000 (float32).  (The threaded steppers check in their own blocks.)
FINITE_PARALLEL_THRESHOLD = 2**19

#: Elements per block of the sums of a two-pass rule: each block is added up by the
#: same compiled code, and the blocks' sums in block order, whatever the thread count.
BLOCK = 2**14

#: numba's parallel options for the threaded loops: prange alone.  Its array-expression
#: passes have nothing to do in them and cost compile time.
PARALLEL = {
    "prange": True,
    "comprehension": False,
    "fusion": False,
    "inplace_binop": False,
    "numpy": False,
    "reduction": False,
    "setitem": False,
    "stencil": False,
}

#: The shared modes of a loop: which of the options shared by every rule it applies.
SHARED_MODES = ("raw", "decoupled", "full")

_JIT = dict(error_model="numpy", cache=True, nogil=True)

#: For the compiled functions that only compiled code calls (an element function, the
#: loop over a block, the finiteness check of a block, the first pass and the rule's
#: host functions that the steps call): no CPython or C wrapper.  numba
#: makes both for every function it compiles and turns them into machine code, ~0.02 s
#: a function in a fresh process: the first step of a two-pass rule waited ~0.2 s for
#: wrappers nothing calls.  Called from Python, such a function would crash: they stay
#: private.
_INTERNAL = dict(no_cpython_wrapper=True, no_cfunc_wrapper=True)


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
# Small helpers of the threaded loops, written out: numba's overloads of min(),
# ndarray.all() and ndarray.sum() each cost ~0.07 s of compilation in a fresh process,
# which the first threaded step would wait for.
@numba.njit(inline="always")
def _end(k, n):
    """The end of block ``k`` of ``n`` elements."""
    end = k * BLOCK + BLOCK
    return end if end < n else n


@numba.njit(inline="always")
def _all(flags):
    for flag in flags:
        if not flag:
            return False
    return True


@numba.njit(inline="always")
def _total(counts):
    total = 0
    for c in counts:
        total += c
    return total


# A loop is compiled once, serial, over a range of elements (a *block*); the serial
# kernel runs it over all elements, the threaded one over blocks of BLOCK elements
# spread over the threads (a prange over blocks).  The threaded kernel then compiles in
# a fraction of the time of a prange over elements (its parallel region is one call:
# the first threaded step waits ~0.3 s less per loop), it shares the serial one's
# compiled and cached loop, and every element is computed by the same machine code
# whatever the threads: the results are the same bits with any thread count.
def _block_template(p, g, s, h, start, stop):
    """Elements ``start`` to ``stop - 1`` of a kernel's loop: update ``p`` and ``s``
    in place; returns None."""
    # An unsigned index: numba then does not wrap a possibly negative index around,
    # which would keep the loop from vectorising.
    for i in range(numba.uint64(start), numba.uint64(stop)):
        p[i] = _update(p, g, s, h, i, _FLAGS)  # noqa: F821 (bound by rebind)


def _guarded_block_template(p, g, s, h, avg, w, start, stop):
    """As a block of the plain loop, but an element whose new value is not finite
    keeps its old one; returns how many did.  ``avg`` (None, or an array of p's
    shape) moves towards the new iterate: ``avg += w·(p - avg)``."""
    bad = 0
    for i in range(numba.uint64(start), numba.uint64(stop)):
        old = p[i]
        new = _update(p, g, s, h, i, _FLAGS)  # noqa: F821
        finite = new - new == 0.0
        p[i] = new if finite else old
        bad += 0 if finite else 1
        if avg is not None:
            a = avg[i]
            avg[i] = a + w * (p[i] - a)
    return bad


def _loop_template(p, g, s, h):
    """One loop of a kernel: update ``p`` and ``s`` in place; returns None."""
    n = p.shape[0]
    if _THREADED:  # noqa: F821
        for k in numba.prange((n + BLOCK - 1) // BLOCK):
            _block(p, g, s, h, k * BLOCK, _end(k, n))  # noqa: F821
    else:
        _block(p, g, s, h, 0, n)  # noqa: F821


def _guarded_loop_template(p, g, s, h, avg, w):
    """The guarded loop over all elements; returns how many kept their old value."""
    n = p.shape[0]
    if _THREADED:  # noqa: F821
        # Per-block counts, added after: a reduction in the prange would double the
        # time the threaded loop takes to compile.
        blocks = (n + BLOCK - 1) // BLOCK
        bad = np.empty(blocks, np.int64)
        for k in numba.prange(blocks):
            bad[k] = _block(p, g, s, h, avg, w, k * BLOCK, _end(k, n))  # noqa: F821
        return _total(bad)
    return _block(p, g, s, h, avg, w, 0, n)  # noqa: F821


def _sums_block_template(p, g, s, h, start, stop):
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
    a = 0.0
    b = 0.0
    if _THREADED:  # noqa: F821
        partial = np.empty((blocks, 2))
        for k in numba.prange(blocks):
            partial[k, 0], partial[k, 1] = _block(p, g, s, h, k * BLOCK, _end(k, n))  # noqa: F821
        for k in range(blocks):
            a += partial[k, 0]
            b += partial[k, 1]
    else:  # the same sums in the same order, without an array (a device can't allocate)
        for k in range(blocks):
            x, y = _block(p, g, s, h, k * BLOCK, _end(k, n))  # noqa: F821
            a += x
            b += y
    return a, b


def _switch_block_template(p, s, h, start, stop):
    for i in range(numba.uint64(start), numba.uint64(stop)):
        p[i] = _switch(p, s, h, i, _FLAGS)  # noqa: F821


def _switch_template(p, s, h):
    """Move the parameters ``p`` in place between the training and the evaluation
    point of a rule that keeps two (schedule-free: y and x); returns None."""
    n = p.shape[0]
    if _THREADED:  # noqa: F821
        for k in numba.prange((n + BLOCK - 1) // BLOCK):
            _block(p, s, h, k * BLOCK, _end(k, n))  # noqa: F821
    else:
        _block(p, s, h, 0, n)  # noqa: F821


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
        _finish(hp, t, aux, _first(p, g, s, h), h)  # noqa: F821


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


# The steppers run their loops themselves, not through a loop function: the threaded
# ones then hold their prange loops in the stepper, one compiled function fewer each
# (the first threaded step of a rule compiles ~0.3 s faster per function saved).
def _stepper_template(p, g, s, hp, t, aux, h):
    """Fill ``h`` for step ``t``, then update ``p`` and ``s`` in place; returns None."""
    _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
    n = p.shape[0]
    if _THREADED:  # noqa: F821
        for k in numba.prange((n + BLOCK - 1) // BLOCK):
            _block(p, g, s, h, k * BLOCK, _end(k, n))  # noqa: F821
    else:
        _block(p, g, s, h, 0, n)  # noqa: F821


def _checked_stepper_template(p, g, s, hp, t, aux, h):
    """As the stepper if ``g`` is all finite (returns True); else touches nothing and
    returns False."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    n = p.shape[0]
    if n == 0:
        return True
    if _THREADED:  # noqa: F821
        blocks = (n + BLOCK - 1) // BLOCK
        finite = np.empty(blocks, np.bool_)
        for k in numba.prange(blocks):
            finite[k] = _finite_block(g, k * BLOCK, _end(k, n))
        if not _all(finite):
            return False
        _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
        for k in numba.prange(blocks):
            _block(p, g, s, h, k * BLOCK, _end(k, n))  # noqa: F821
    else:
        if not _finite_block(g, 0, n):
            return False
        _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
        _block(p, g, s, h, 0, n)  # noqa: F821
    return True


def _guarded_stepper_template(p, g, s, hp, t, aux, h, avg, w):
    """Fill ``h`` for step ``t``, then the guarded loop; returns the number of
    elements whose new value was not finite (they keep their old value)."""
    _prepare(p, g, s, hp, t, aux, h)  # noqa: F821
    n = p.shape[0]
    if _THREADED:  # noqa: F821
        blocks = (n + BLOCK - 1) // BLOCK
        bad = np.empty(blocks, np.int64)
        for k in numba.prange(blocks):
            bad[k] = _guarded_block(p, g, s, h, avg, w, k * BLOCK, _end(k, n))  # noqa: F821
        return _total(bad)
    return _guarded_block(p, g, s, h, avg, w, 0, n)  # noqa: F821


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
# Inlined into each entry point (numba IR): as functions of their own they took
# ~0.17 s to compile in a fresh process, before the first step of any rule.
_SEE_H = "see nadam.kernels.coefficient_buffer"


@numba.njit(inline="always")
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


@numba.njit(inline="always")
def check_host(hp, aux, h, n_hyper, n_aux, n_coefficients):
    """Raise :class:`ArrayShapeError` unless ``hp``, ``aux`` and ``h`` have the rule's
    lengths."""
    if hp.shape[0] != n_hyper:
        raise ArrayShapeError("hp", hp.shape, (n_hyper,), "see nadam.kernels.hyperparameters")
    if aux.shape[0] != n_aux:
        raise ArrayShapeError("aux", aux.shape, (n_aux,), "see nadam.kernels.aux")
    if h.shape[0] != n_coefficients:
        raise ArrayShapeError("h", h.shape, (n_coefficients,), _SEE_H)


@numba.njit(inline="always")
def _trusted(a, b, c, d, e, f):
    """In place of :func:`check_arrays` or :func:`check_host` (six arguments each),
    for a caller that made the arrays itself."""
    return None


def _checks(lengths: bool) -> dict:
    # The bindings of a stepper's checks.  An optimizer's own steps run on the arrays
    # it made, with a gradient it checked in Python (optimizers.checked_gradient):
    # without the checks (raising with values compiles slowly), the first step of
    # a rule waits ~0.3 s less.  Every other caller gets them.
    return {} if lengths else {"check_arrays": _trusted, "check_host": _trusted}


def _compile(
    template, name: str, rule: Rule, parallel: bool = False, internal: bool = False, **bindings
):
    # Cache files are named after the variant and the digest of the rule's
    # sources: a cached kernel is never stale.  (A rule defined in a notebook or in
    # exec-ed code has no file for numba's cache to key on: not cached.)  ``internal``:
    # called from compiled code only (_INTERNAL).
    fn = rebind(template, f"{name}_{rule.digest}", **bindings)
    options = {**_JIT, "cache": rule.cacheable, **(_INTERNAL if internal else {})}
    return numba.njit(parallel=PARALLEL if parallel else False, **options)(fn)


def _variant_name(
    rule: Rule, flags: tuple, parallel: bool, shared: str | None = None, lengths: bool = True
) -> str:
    on = "".join(f"_{n}" for n, flag in zip(rule.flag_names, flags, strict=True) if flag)
    mode = "" if shared is None else f"_{shared}"
    trust = "" if lengths else "_trusted"
    return f"{rule.name}{on}{mode}_{'parallel' if parallel else 'serial'}{trust}"


def _check_flags(rule: Rule, flags: tuple) -> tuple:
    flags = tuple(bool(f) for f in flags)
    if len(flags) != len(rule.flag_names):
        raise ValueError(
            f"rule {rule.name!r} has the flags {rule.flag_names}, got {len(flags)} values"
        )
    return flags


@cache
def _called(function, rule: Rule):
    """A copy of a rule's ``@njit`` host function (``coefficients``, ``finish``) for the
    steps to call: compiled once per process, without wrappers (:data:`_INTERNAL`),
    with the steps' error model (a division by zero gives inf or NaN, as in the loop).

    Called, not inlined at numba's IR level: numba runs its front end again on an
    inlined function at each call site and deep-copies its IR there, which cost more
    than a call: with the rules' helpers called too, the first step of Prodigy
    executes ~12 % fewer instructions with an empty cache (``docs/benchmarks.md``).
    LLVM may still inline it."""
    fn = rebind(function.py_func, f"{function.__name__}_{rule.digest}_called")
    return numba.njit(error_model="numpy", cache=rule.cacheable, **_INTERNAL)(fn)


@cache
def _element(function, shared: str):
    """The element function ``function`` compiled for inlining, with the switches
    ``RAW_GRAD`` and ``RAW_PARAM`` of its module set for the shared mode."""
    raw_grad, raw_param = {"raw": (True, True), "decoupled": (True, False)}.get(
        shared, (False, False)
    )
    fn = rebind(function, RAW_GRAD=raw_grad, RAW_PARAM=raw_param)
    return numba.njit(forceinline=True, error_model="numpy", **_INTERNAL)(fn)


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
def _block(rule: Rule, flags: tuple, shared: str, guarded: bool):
    # The serial loop over a block of elements that both loops of a variant call.
    template = _guarded_block_template if guarded else _block_template
    name = ("guarded_block_" if guarded else "block_") + _variant_name(rule, flags, False, shared)
    bindings = {"_update": _element(rule.update, shared), "_FLAGS": flags}
    return _compile(template, name, rule, internal=True, **bindings)


@cache
def loop(rule: Rule, flags: tuple, parallel: bool, shared: str, guarded: bool = False):
    """One compiled loop of a rule's kernel: ``loop(p, g, s, h) -> None`` for one shared
    mode, or with ``guarded`` the loop of :func:`guarded_stepper`,
    ``loop(p, g, s, h, avg, w) -> int``."""
    if parallel:
        _start_threads()
    template = _guarded_loop_template if guarded else _loop_template
    name = ("guarded_" if guarded else "loop_") + _variant_name(rule, flags, parallel, shared)
    bindings = {"_block": _block(rule, flags, shared, guarded), "_THREADED": parallel}
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
def first_pass(
    rule: Rule,
    flags: tuple = (),
    parallel: bool = False,
    shared: str = "full",
    lengths: bool = True,
):
    """The first pass ``first(p, g, s, h) -> (a, b)`` of a two-pass rule: it updates
    the state and returns the rule's two sums over all elements (after checking the
    arrays' lengths, unless ``lengths`` is False: for arrays the caller made)."""
    return _first_pass(rule, flags, parallel, shared, lengths, False)


@cache
def _first_pass(
    rule: Rule, flags: tuple, parallel: bool, shared: str, lengths: bool, internal: bool
):
    # The public first pass, or (internal) the one the steps call, named apart: numba's
    # cache does not tell functions compiled with and without wrappers apart.
    if rule.accumulate is None:
        raise ValueError(f"rule {rule.name!r} has one pass")
    if parallel:
        _start_threads()
    flags = _check_flags(rule, flags)
    kind = "first_called_" if internal else "first_"
    name = kind + _variant_name(rule, flags, parallel, shared, lengths)
    bindings = {"_block": _sums_block(rule, flags, shared), "_THREADED": parallel}
    bindings |= _checks(lengths) | _sizes(rule, flags)
    return _compile(_first_pass_template, name, rule, parallel, internal, **bindings)


@cache
def _sums_block(rule: Rule, flags: tuple, shared: str):
    # The block of a first pass (the public one and the steps' share it).
    fn = rebind(
        _sums_block_template,
        "sums_block_" + _variant_name(rule, flags, False, shared),
        _accumulate=_element(rule.accumulate, shared),
        _FLAGS=flags,
    )
    return numba.njit(error_model="numpy", nogil=True, fastmath={"reassoc"}, **_INTERNAL)(fn)


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
    block = _compile(
        _switch_block_template,
        "switch_block_" + _variant_name(rule, flags, False),
        rule,
        internal=True,
        _switch=_element(rule.switch, "full"),
        _FLAGS=flags,
    )
    return _compile(_switch_template, name, rule, parallel, _block=block, _THREADED=parallel)


@cache
def coefficients(rule: Rule):
    """The compiled ``coefficients(hp, t, aux, h) -> None`` of a rule, which checks
    the lengths of ``hp``, ``aux`` and ``h`` first."""
    bindings = {"_coefficients": rule.coefficients, **_sizes(rule)}
    return _compile(_coefficients_template, "coefficients_" + rule.name, rule, **bindings)


@cache
def prepare(rule: Rule, flags: tuple, parallel: bool, shared: str, lengths: bool = True):
    """``prepare(p, g, s, hp, t, aux, h) -> None``: the checks (unless ``lengths`` is
    False) and the coefficients of a step, and for a two-pass rule its first pass
    and ``finish`` (everything before the loop that writes the parameters)."""
    two_pass = rule.accumulate is not None
    bindings = {
        "_coefficients": _called(rule.coefficients, rule),
        "_TWO_PASS": two_pass,
        "_first": _first_pass(rule, flags, parallel, shared, lengths, True) if two_pass else None,
        "_finish": _called(rule.finish, rule) if two_pass else None,
        **_sizes(rule, flags),
        **_checks(lengths),
    }
    name = "prepare_" + _variant_name(rule, flags, parallel, shared, lengths)
    return _compile(_prepare_template, name, rule, **bindings)


def _stepper(template, prefix: str, rule, flags, parallel, shared, lengths):
    flags = _check_flags(rule, flags)
    if parallel:
        _start_threads()
    # Inlined (numba IR): one compiled function fewer on the way to the first step.
    ready = prepare(rule, flags, parallel, shared, lengths)
    bindings = {
        "_prepare": numba.njit(inline="always")(ready.py_func),
        "_block": _block(rule, flags, shared, False),
        "_guarded_block": _block(rule, flags, shared, True),
        "_THREADED": parallel,
        **_sizes(rule, flags),
        **_checks(lengths),
    }
    name = prefix + _variant_name(rule, flags, parallel, shared, lengths)
    return _compile(template, name, rule, parallel, **bindings)


@cache
def stepper(
    rule: Rule,
    flags: tuple = (),
    parallel: bool = False,
    shared: str = "full",
    lengths: bool = True,
):
    """The compiled ``step(p, g, s, hp, t, aux, h) -> None`` of a rule: coefficients,
    then the kernel (both passes of a two-pass rule), in one call.  It first checks
    the lengths of its arrays (:func:`check_arrays`, :func:`check_host`), unless
    ``lengths`` is False: for a caller that made them, as an optimizer does."""
    return _stepper(_stepper_template, "step_", rule, flags, parallel, shared, lengths)


@cache
def checked_stepper(
    rule: Rule,
    flags: tuple = (),
    parallel: bool = False,
    shared: str = "full",
    lengths: bool = True,
):
    """The compiled ``step(p, g, s, hp, t, aux, h) -> bool``: if every element of
    ``g`` is finite, as :func:`stepper` and returns True; otherwise returns False
    and touches nothing (``aux`` and ``h`` included).  One compiled call instead
    of ``all_finite`` then the stepper: one dispatch (~0.4 µs) less per step.
    ``lengths``: as :func:`stepper`."""
    return _stepper(
        _checked_stepper_template, "checked_step_", rule, flags, parallel, shared, lengths
    )


@cache
def guarded_stepper(
    rule: Rule,
    flags: tuple = (),
    parallel: bool = False,
    shared: str = "full",
    lengths: bool = True,
):
    """The compiled ``step(p, g, s, hp, t, aux, h, avg, w) -> int`` of the loops of
    :func:`nadam.minimize`: as :func:`stepper`, but an element whose new value is
    not finite keeps its old value (the loop then stops: it never hands back a
    non-finite iterate), and ``avg`` (None, or an array of p's shape) moves
    towards the new iterate, ``avg += w·(p - avg)`` (iterate averaging), in the
    same pass.  Returns the number of elements that kept their old value.
    ``lengths``: as :func:`stepper`."""
    return _stepper(
        _guarded_stepper_template, "guarded_step_", rule, flags, parallel, shared, lengths
    )


@cache
def split_stepper(
    rule: Rule,
    flags: tuple = (),
    parallel: bool = False,
    shared: str = "full",
    lengths: bool = True,
):
    """``(begin, end)``: :func:`guarded_stepper` of a two-pass rule cut where its sums
    are taken, ``begin(p, g, s, hp, t, aux, h) -> sums`` and ``end(p, g, s, hp, t, aux,
    h, sums, avg, w) -> int``, so that the sums can be summed over MPI ranks between.
    ``lengths``: as :func:`stepper`."""
    flags = _check_flags(rule, flags)
    first = _first_pass(rule, flags, parallel, shared, lengths, True)
    guarded = loop(rule, flags, parallel, shared, guarded=True)
    name = _variant_name(rule, flags, parallel, shared, lengths)
    sizes = _sizes(rule, flags)
    coefficients = _called(rule.coefficients, rule)
    bindings = {"_coefficients": coefficients, "_first": first, **sizes, **_checks(lengths)}
    begin = _compile(_begin_template, "begin_" + name, rule, **bindings)
    bindings = {"_finish": _called(rule.finish, rule), "_guarded_loop": guarded}
    end = _compile(_end_template, "end_" + name, rule, **bindings)
    return begin, end


# Reassociation only: lets the sum vectorise, and any order of adding zeros
# and NaNs gives the same verdict.  (No "nnan"/"ninf": they would fold it away.)
@numba.njit(fastmath={"reassoc"}, **_JIT, **_INTERNAL)
def _finite_block(x, start, stop):
    acc = x[start] - x[start]
    for i in range(numba.uint64(start + 1), numba.uint64(stop)):
        acc += x[i] - x[i]  # 0 for a finite value, NaN for inf or NaN
    return acc == acc


@numba.njit(parallel=PARALLEL, **_JIT)
def _all_finite_parallel(x):
    # Blocks over the threads, as the kernels' loops, a verdict per block (not a
    # reduction: see _guarded_loop_template).
    n = x.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    finite = np.empty(blocks, np.bool_)
    for k in numba.prange(blocks):
        finite[k] = _finite_block(x, k * BLOCK, _end(k, n))
    return _all(finite)


@numba.njit(**_JIT)
def all_finite_serial(x):
    """True if every element of the 1-D array ``x`` is finite (one pass on one core)."""
    return x.shape[0] == 0 or _finite_block(x, 0, x.shape[0])


@numba.njit(**_JIT)
def all_finite(x):
    """True if every element of the 1-D array ``x`` is finite (one pass, no copy;
    all cores from :data:`FINITE_PARALLEL_THRESHOLD` elements up)."""
    if x.shape[0] >= FINITE_PARALLEL_THRESHOLD:
        return _all_finite_parallel(x)
    return all_finite_serial(x)


def _start_threads() -> None:
    """Load the threading layer and start its threads (before handing out a prange loop)."""
    # numba 0.68 links a prange loop read from its cache into a caller without
    # loading the threading layer: compiling the caller then fails ("LLVM ERROR:
    # Symbol not found: allocate_sched"), and a caller read from the cache crashed
    # on its first call in a later process, unless something had started the
    # threads.  So every prange loop starts them when it is handed out (not at
    # import: a process that never runs one keeps its fork safe), TBB first
    # (nadam.threads).
    load_tbb()
    numba.get_num_threads()


def choose_parallel(n: int, threads: int, itemsize: int = 8) -> bool:
    """Whether an update of ``n`` elements of ``itemsize`` bytes on ``threads`` threads
    should use the threaded kernel: from :data:`PARALLEL_THRESHOLD` float64 elements
    (the same bytes of another dtype) up, with two threads or more."""
    return n * itemsize >= PARALLEL_THRESHOLD * 8 and threads > 1
