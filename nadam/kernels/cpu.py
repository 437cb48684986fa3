"""CPU kernels: each rule of :mod:`nadam.rules` compiled as a serial and a
``prange`` loop.

A kernel has the signature ``kernel(p, g, s, h)``: it updates the flat
parameters ``p`` and the ``(k, n)`` state ``s`` in place from the gradient ``g``
and the per-step coefficients ``h`` (all of the parameters' dtype), and returns
None.  A *stepper* ``step(p, g, s, hp, t, aux, h)`` first fills ``h`` from the
float64 hyperparameters ``hp`` and the step count ``t``, then runs the kernel:
one compiled call per optimisation step.

Serial and parallel kernels run the same element function with the same
floating-point operations in the same order (no reductions, no fastmath), so
they agree bit for bit.

Speed (``docs/benchmarks.md`` has the figures, ``benchmarks/README.md`` how they
were measured).  A large step is memory-bound: its floor is the bytes it moves.
What keeps a kernel on that floor is a vectorised loop with a short body: a
memory-bound loop keeps fewer cache misses in flight the more instructions each
element costs.  So:

* the rule is inlined by LLVM (``forceinline``), not at numba's IR level, which
  left the serial loops of the rules using ``max`` (Adamax, AMSGrad) scalar;
* each kernel holds three copies of the loop, each its own compiled function
  (one loop per function is what LLVM's vectoriser handles reliably): the rule
  as written, and copies compiled with the rule's switches ``RAW_GRAD`` /
  ``RAW_PARAM`` on (see :mod:`nadam.rules`), which skip the multiply-adds of the
  shared options when this step's coefficients make them identities (no
  ``maximize``, no weight decay; or only decoupled weight decay).  The copies
  compute the same numbers: with ``h[0] = 1, h[1] = 0`` the direction
  ``1·g + 0·p`` is ``g`` (up to the sign of a zero, and except for an infinite
  parameter, where skipping ``0·p`` is what torch does), and ``1·p`` is ``p``.
  The choice is made once per call from ``h``, the same way in the serial and
  the parallel kernel.
"""

from __future__ import annotations

import types
from functools import cache

import numba

from ..rules import SOURCE_HASH, Rule

__all__ = [
    "ArrayShapeError",
    "FINITE_PARALLEL_THRESHOLD",
    "PARALLEL_THRESHOLD",
    "all_finite",
    "all_finite_serial",
    "check_arrays",
    "check_host",
    "checked_stepper",
    "choose_parallel",
    "coefficients",
    "kernel",
    "stepper",
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

_JIT = dict(error_model="numpy", cache=True, nogil=True)


# The templates below are never called directly.  ``_specialise`` copies their
# code into a new function whose globals name the rule, its options and the loop
# kind; numba treats those globals as compile-time constants.  Each of the three
# loops of a kernel is its own compiled function (one loop per function is what
# LLVM's vectoriser handles best: with the three loops in one function it left
# Adamax's float64 loop scalar).
def _loop_template(p, g, s, h):
    """One loop of a kernel: update ``p`` and ``s`` in place; returns None."""
    for i in _range(p.shape[0]):  # noqa: F821 (bound by _specialise)
        _update(p, g, s, h, i, _OPTS)  # noqa: F821


def _kernel_template(p, g, s, h):
    """Update the parameters ``p`` and the state ``s`` in place from the gradient
    ``g`` and this step's coefficients ``h``; returns None."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    if h[0] == 1 and h[1] == 0:  # the gradient as is: no maximize, no L2 decay
        if h[2] == 1:  # and no decoupled decay
            _loop_raw(p, g, s, h)  # noqa: F821
        else:
            _loop_raw_grad(p, g, s, h)  # noqa: F821
    else:
        _loop(p, g, s, h)  # noqa: F821


def _coefficients_template(hp, t, aux, h):
    """Fill ``h`` for step ``t`` from ``hp`` and ``aux``; returns None."""
    check_host(hp, aux, h, _N_HYPER, _N_AUX, _N_COEFFICIENTS)  # noqa: F821
    _coefficients(hp, t, aux, h)  # noqa: F821


def _stepper_template(p, g, s, hp, t, aux, h):
    """Fill ``h`` for step ``t``, then update ``p`` and ``s`` in place; returns None."""
    # Every check before the first write (the coefficients advance NAdam's aux).
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    check_host(hp, aux, h, _N_HYPER, _N_AUX, _N_COEFFICIENTS)  # noqa: F821
    _coefficients(hp, t, aux, h)  # noqa: F821
    _kernel(p, g, s, h)  # noqa: F821


def _checked_stepper_template(p, g, s, hp, t, aux, h):
    """As the stepper if ``g`` is all finite (returns True); else touches nothing and
    returns False."""
    check_arrays(p, g, s, h, _ROWS, _N_COEFFICIENTS)  # noqa: F821
    check_host(hp, aux, h, _N_HYPER, _N_AUX, _N_COEFFICIENTS)  # noqa: F821
    if not _all_finite(g):  # noqa: F821
        return False
    _coefficients(hp, t, aux, h)  # noqa: F821
    _kernel(p, g, s, h)  # noqa: F821
    return True


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


def _specialise(template, name: str, bindings: dict, parallel: bool):
    fn = types.FunctionType(template.__code__, {**globals(), **bindings}, name)
    # numba names cache files after the qualified name: one per variant, and one
    # per version of the rules' source, so a cached kernel is never stale.
    fn.__qualname__ = f"{name}_{SOURCE_HASH}"
    return numba.njit(parallel=parallel, **_JIT)(fn)


def _variant_name(rule: Rule, opts: tuple, parallel: bool) -> str:
    flags = "".join(f"_{n}" for n, on in zip(rule.option_names, opts, strict=True) if on)
    return f"{rule.name}{flags}_{'parallel' if parallel else 'serial'}"


@cache
def _element(update, raw_grad: bool, raw_param: bool):
    """``update`` compiled for inlining, with the switches ``RAW_GRAD`` and
    ``RAW_PARAM`` of its module bound to the given constants."""
    glb = {**update.__globals__, "RAW_GRAD": raw_grad, "RAW_PARAM": raw_param}
    fn = types.FunctionType(
        update.__code__, glb, update.__name__, update.__defaults__, update.__closure__
    )
    return numba.njit(forceinline=True, error_model="numpy")(fn)


@cache
def kernel(rule: Rule, opts: tuple = (), parallel: bool = False):
    """The compiled in-place kernel ``kernel(p, g, s, h) -> None`` of a rule.

    Parameters
    ----------
    rule : Rule
        From :data:`nadam.rules.RULES`.
    opts : tuple of bool
        The rule's compile-time options, in ``rule.option_names`` order.
    parallel : bool
        ``prange`` over elements (all cores) instead of a serial loop.
    """
    name = _variant_name(rule, opts, parallel)
    opts = tuple(bool(o) for o in opts)
    loops = {}
    for key, raw_grad, raw_param in (
        ("_loop", False, False),
        ("_loop_raw_grad", True, False),
        ("_loop_raw", True, True),
    ):
        bindings = {
            "_update": _element(rule.update, raw_grad, raw_param),
            "_range": numba.prange if parallel else range,
            "_OPTS": opts,
        }
        loops[key] = _specialise(_loop_template, name + key, bindings, parallel)
    return _specialise(_kernel_template, name, {**loops, **_sizes(rule, opts)}, False)


def _sizes(rule: Rule, opts: tuple | None = None) -> dict:
    """The array lengths the checks of a rule's compiled functions expect (the
    state's rows only with the options that shape it)."""
    sizes = {
        "_N_COEFFICIENTS": rule.n_coefficients,
        "_N_HYPER": rule.n_hyper,
        "_N_AUX": len(rule.aux_init),
    }
    if opts is not None:
        sizes["_ROWS"] = len(rule.slots(opts))
    return sizes


@cache
def coefficients(rule: Rule):
    """The compiled ``coefficients(hp, t, aux, h) -> None`` of a rule, which checks
    the lengths of ``hp``, ``aux`` and ``h`` first."""
    bindings = {"_coefficients": rule.coefficients, **_sizes(rule)}
    return _specialise(_coefficients_template, "coefficients_" + rule.name, bindings, False)


@cache
def stepper(rule: Rule, opts: tuple = (), parallel: bool = False):
    """The compiled ``step(p, g, s, hp, t, aux, h) -> None`` of a rule: coefficients,
    then the kernel, in one call."""
    return _stepper(_stepper_template, "step_", rule, opts, parallel)


@cache
def checked_stepper(rule: Rule, opts: tuple = (), parallel: bool = False):
    """The compiled ``step(p, g, s, hp, t, aux, h) -> bool``: if every element of
    ``g`` is finite, as :func:`stepper` and returns True; otherwise returns False
    and touches nothing (``aux`` and ``h`` included).  One compiled call instead
    of ``all_finite`` then the stepper: one dispatch (~0.4 µs) less per step."""
    # A serial stepper never calls a prange loop (nor needs one for the check: it
    # serves arrays below PARALLEL_THRESHOLD, or a single thread).
    check = all_finite if parallel else all_finite_serial
    return _stepper(_checked_stepper_template, "checked_step_", rule, opts, parallel, check)


def _stepper(template, prefix: str, rule: Rule, opts: tuple, parallel: bool, check=None):
    bindings = {
        "_coefficients": rule.coefficients,
        "_kernel": kernel(rule, opts, parallel),
        "_all_finite": check,
        **_sizes(rule, opts),
    }
    if parallel:
        _start_threads()
    return _specialise(template, prefix + _variant_name(rule, opts, parallel), bindings, False)


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
    # numba 0.68 caches a serial function that calls a prange loop read from the
    # cache without the hook that starts the threads when it is loaded: a stepper
    # compiled over a cached kernel crashed on its first call in a later process,
    # unless something had started the threads.  So the steppers that run prange
    # loops start them when they are handed out.  (Not at import: every forked
    # child that runs a prange loop would then abort, GNU OpenMP not being
    # fork-safe.  The kernels themselves are compiled with their loops, so their
    # cached code keeps the hook.)
    numba.get_num_threads()


def choose_parallel(n: int) -> bool:
    """Whether an ``n``-element update should use the threaded kernel."""
    return n >= PARALLEL_THRESHOLD and numba.get_num_threads() > 1
