r"""Elementary functions that numba vectorises, for ``@njit`` objectives.

numba compiles ``np.exp`` and ``math.exp`` to a call of the C library's scalar
``exp``, one element at a time, unless LLVM has a vector math library; numba's pip
wheels have none (``llvmlite.binding.targets.has_svml()`` is False).  A model such
as :math:`a e^{-kt} + c`, evaluated in a loop over its points, then spends most of
its time in those calls.  :func:`exp` is written in arithmetic that LLVM turns into
vector instructions (with AVX2 or AVX-512: four or eight points at a time), where the
loop vectorises:

>>> import numpy as np
>>> from numba import njit
>>> from nadam import vmath
>>> @njit(fastmath={"reassoc"}, error_model="numpy")  # lets LLVM vectorise the loop
... def decay(p, t, y):
...     a, k, c = p[0], p[1], p[2]
...     f = g0 = g1 = g2 = 0.0
...     for i in range(t.shape[0]):
...         e = vmath.exp(-k * t[i])
...         r = a * e + c - y[i]
...         f += r * r
...         g0 += r * e
...         g1 -= r * a * t[i] * e
...         g2 += r
...     return f, np.array([2 * g0, 2 * g1, 2 * g2])
>>> t = np.linspace(0.0, 4.0, 40)
>>> f, g = decay(np.array([2.0, 1.0, 0.0]), t, 2.0 * np.exp(-t))
>>> bool(f < 1e-28)
True

``docs/compiled.md`` has the measured speed and accuracy.  The sums of such a loop
vectorise only when they may be reordered (``fastmath={"reassoc"}``, which changes their
last bits), its divisions only without numba's zero-divisor checks
(``error_model="numpy"``); the exponentials vectorise in a loop that has nothing else
(filling an array).  In a loop that does not vectorise, :func:`exp` is about 2x slower
than ``np.exp``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["exp"]

_LOG2E = 1.4426950408889634
# 1.5·2^52: a number of magnitude below 2^51 plus this is rounded to an integer, held
# in the sum's low bits.
_SHIFTER = 1.5 * 2.0**52
# ln 2 in two parts (fdlibm's): k·_LN2_HI is exact for the |k| < 2**11 used here.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Where exp(x) is 0 below and inf above, with a margin: x is clipped to these, which
# keeps the exponent's two halves within normal numbers' range.
_LOWEST, _HIGHEST = -746.0, 710.0
# The Taylor coefficients 1/j! of e^r, j = 2 ... 13: the remainder is below 4.3e-18
# for |r| <= ln(2)/2.
_TAYLOR = [1.0 / math.factorial(j) for j in range(2, 14)]
# Every floating-point instruction below carries this flag, which only allows a
# division to become a multiplication by a reciprocal (there is no division here):
# numba's fastmath pass flags only the instructions that have no flag, so a caller's
# fastmath={"reassoc"} cannot reorder the sums whose order makes the result exact.
_FLAGS = ("arcp",)


def _emit_exp(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """The instructions of e^x for the double ``x``, emitted where ``builder`` is.

    e^x = 2^k e^r, k the nearest integer to x / ln 2, |r| <= ln(2)/2: no branch, no
    table and no call (a select for NaN), so that a loop of it vectorises.
    """
    double, i64 = ir.DoubleType(), ir.IntType(64)

    def const(v):
        return ir.Constant(double, v)

    def add(a, b):
        return builder.fadd(a, b, flags=_FLAGS)

    def sub(a, b):
        return builder.fsub(a, b, flags=_FLAGS)

    def mul(a, b):
        return builder.fmul(a, b, flags=_FLAGS)

    def clip(v, op, bound):  # v if v op bound else bound; NaN gives bound
        return builder.select(builder.fcmp_ordered(op, v, bound, flags=_FLAGS), v, bound)

    xc = clip(clip(x, ">", const(_LOWEST)), "<", const(_HIGHEST))
    # k rounded to an integer by adding 1.5·2^52 (the sum has no fraction bits), and
    # read from the sum's bits: kd's are _SHIFTER's plus k.  (llvm.floor and a conversion
    # to int64 are vector instructions only with SSE4.1 and AVX-512; this needs 64-bit
    # integer adds and shifts, which SSE2 has.)
    kd = add(mul(xc, const(_LOG2E)), const(_SHIFTER))
    k = sub(kd, const(_SHIFTER))
    hi = sub(xc, mul(k, const(_LN2_HI)))  # exact
    lo = mul(k, const(_LN2_LO))
    r = sub(hi, lo)
    # e^r - 1 - r = r^2 q(r), q by Estrin's scheme: a chain of 4 multiply-adds where
    # Horner's would be 11, so that the vector units are not waiting on latency.
    r2 = mul(r, r)
    pairs = [
        add(const(a), mul(const(b), r)) for a, b in zip(_TAYLOR[::2], _TAYLOR[1::2], strict=True)
    ]
    quads = [add(a, mul(b, r2)) for a, b in zip(pairs[::2], pairs[1::2], strict=True)]
    r4 = mul(r2, r2)
    q = add(add(quads[0], mul(quads[1], r4)), mul(quads[2], mul(r4, r4)))
    # 1 + hi + (r^2 q - lo), with the roundings of both sums carried (Knuth's TwoSum,
    # then Fast2Sum as |t| < 1) into one last addition: e^r to ~0.5 ulp, where summing
    # as written gave e^1 one ulp above math.e.
    small = sub(mul(r2, q), lo)
    t = add(hi, small)
    back = sub(t, hi)
    err = add(sub(hi, sub(t, back)), sub(small, back))
    head = add(const(1.0), t)
    p = add(head, add(add(sub(const(1.0), head), t), err))
    # 2^k in two factors, 2^h and 2^(k - h), h = k/2 rounded as k was (so that both
    # integers come from bits alone), each a normal number for k in [-1077, 1025]
    # (their bits made directly: math.ldexp is a call).  The product is exact where
    # e^x is a normal number; to a subnormal, 0 or inf it rounds p a second time
    # (subnormal results: within 0.83 of their ulp).
    hd = add(mul(k, const(0.5)), const(_SHIFTER))
    shifter_bits = ir.Constant(i64, int(np.float64(_SHIFTER).view(np.int64)))
    half = builder.sub(builder.bitcast(hd, i64), shifter_bits)
    rest = builder.sub(builder.bitcast(kd, i64), builder.bitcast(hd, i64))

    def power_of_two(e):
        biased = builder.add(e, ir.Constant(i64, 1023))
        return builder.bitcast(builder.shl(biased, ir.Constant(i64, 52)), double)

    y = mul(mul(p, power_of_two(half)), power_of_two(rest))
    # NaN as it came, quietened (x + x), as np.exp gives it.
    return builder.select(builder.fcmp_ordered("ord", x, x, flags=_FLAGS), y, add(x, x))


@intrinsic
def _exp_intrinsic(typingctx: Any, x: Any) -> Any:
    # e^x of a float64 or float32 (computed in float64, rounded once), inline.
    if x not in (types.float64, types.float32):
        return None

    def codegen(context, builder, signature, args):
        if x == types.float64:
            return _emit_exp(builder, args[0])
        wide = _emit_exp(builder, builder.fpext(args[0], ir.DoubleType()))
        return builder.fptrunc(wide, ir.FloatType())

    return x(x), codegen


def exp(x: Any) -> Any:
    r"""The exponential :math:`e^x`, vectorisable, to 0.73 ulp (the largest error found).

    Called in ``@njit`` code (on a scalar or an array), as ``np.exp``; called from
    Python, it runs the same compiled code.  Its arithmetic has no branch and no table,
    so that LLVM vectorises a loop of it (numba's ``np.exp`` is a scalar call of the C
    library's ``exp`` without SVML, which numba's pip wheels lack).

    .. math::

        e^x = 2^k e^r, \qquad k = \operatorname{round}(x / \ln 2), \quad
        |r| \le \tfrac{1}{2} \ln 2,

    with :math:`r` reduced in two parts of :math:`\ln 2` (exactly) and :math:`e^r` by
    its Taylor polynomial of degree 13 (remainder below :math:`4.3 \cdot 10^{-18}`), the
    roundings of its last two sums carried into one final addition.  The largest error
    found, over 16 million points and the tests' searches, is 0.73 ulp; subnormal
    results (:math:`x < -708.4`) are rounded twice, to 0.83 of their ulp.  numba's
    ``np.exp`` (glibc's ``exp``) is within 0.51 ulp: the two differ in the last bit
    of about 2 % of results.

    Parameters
    ----------
    x : float, int or array_like
        Real numbers: float64, float32 or integers (a scalar, an array, or from Python
        anything ``np.asarray`` takes).

    Returns
    -------
    float or ndarray
        :math:`e^x`, in x's precision (float32 stays float32: computed in float64,
        rounded once; integers give float64); a new array of x's shape for an array.
        ``exp(nan)`` is NaN, ``exp(inf)`` inf and ``exp(-inf)`` 0, as ``np.exp``;
        results that underflow are subnormal or 0 and results that overflow are inf,
        without a warning.

    Raises
    ------
    TypeError
        For anything but real numbers (complex, bool, strings, objects).
    """
    a = np.asarray(x)
    if a.dtype.kind not in "iuf" or a.dtype.itemsize > 8 or a.dtype == np.float16:
        raise TypeError(
            f"x must be real numbers (float64, float32 or integers), got {a.dtype} "
            f"from {type(x).__name__}"
        )
    if not a.dtype.isnative:  # big-endian data (FITS files): numba takes native only
        a = a.astype(a.dtype.newbyteorder("="))
    if a.ndim == 0:  # a NumPy scalar of the result's dtype, as np.exp gives
        return _compiled_exp(a.reshape(1))[0]
    return _compiled_exp(a)


def _as_float(x: Any) -> Any:
    """How a value of the numba scalar type ``x`` reaches :func:`_exp_intrinsic`
    (a compiled function), or None for a type :func:`exp` does not take."""
    if isinstance(x, types.Float) and x.bitwidth in (32, 64):
        return _same
    if isinstance(x, types.Integer):
        return _to_float64
    return None


@njit(inline="always")
def _same(x):
    return x


@njit(inline="always")
def _to_float64(x):
    return np.float64(x)


# Inlined into the caller (numba's inlining, not LLVM's, which weighs the size of the
# exponential and may leave a call, which keeps a loop from vectorising).
@overload(exp, inline="always")
def _exp_overload(x):
    if not isinstance(x, types.Array):
        real = _as_float(x)
        return None if real is None else lambda x: _exp_intrinsic(real(x))
    real = _as_float(x.dtype)
    if real is None:
        return None
    dtype = np.float32 if x.dtype == types.float32 else np.float64

    def exp_array(x):
        a = np.ascontiguousarray(x)
        flat = a.reshape(a.size)
        out = np.empty(a.size, dtype)
        for i in range(a.size):
            out[i] = _exp_intrinsic(real(flat[i]))
        return out.reshape(x.shape)  # (ascontiguousarray makes a 0-d array 1-d)

    return exp_array


@njit(cache=True)
def _compiled_exp(x):
    return exp(x)
