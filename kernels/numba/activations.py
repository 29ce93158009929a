"""Fast, vectorisable sigmoid and tanh for float32 and float64.

There is no SVML here, so math.exp/math.tanh compile to scalar libm calls (~10 ns each) and block
loop vectorisation. These versions are branch-free (selects only), and each takes a float or a
vector of them (kernels/numba/simd.py: the pointwise loops run on explicit vectors), one source
for both:

exp(x) = 2**n * p(r), n = round(x / ln2), r = x - n ln2 (two-part ln2), p a polynomial:
  float32: Cephes expf minimax polynomial, ~1 ulp on |r| <= ln2/2;
  float64: Taylor to degree 12, truncation r**13/13! < 2e-16 relative on |r| <= ln2/2.
2**n = 2 * 2**(n-1) is built from the exponent bits. x is clamped first so n stays in range: above
the clamp the result is inf, below it 0 (float32 flushes exp(x < -86) to 0, float64 exp(x < -707));
both saturate sigmoid/tanh exactly. The clamp keeps NaN, which then flows through every step.
sigmoid(x) = 1 / (1 + exp(-x));  tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|) in (0, 1].
Inside sigmoid/tanh, exp skips the exact underflow to 0: below the clamp it returns exp(clamp)
(~1e-37 in float32), which rounds 1 + e to 1 just the same, and the select costs ~5% of an LSTM
cell.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import simd
from .config import ACT_FASTMATH
from .simd import where_greater, where_less


@intrinsic
def _pow2_from_rounded(typingctx, t):
    """2**(n-1) for the t = x * log2(e) + 1.5 * 2**m of exp below (float32: m = 23, float64:
    m = 52; t holds n in its low mantissa bits): the bits of t plus the exponent bias less one,
    shifted into the exponent field. t is a float or a vector of them (kernels/numba/simd.py);
    _ROUND's own bits leave the word in the shift."""
    dtype = t.dtype if isinstance(t, simd.Vec) else t
    if dtype not in (types.float32, types.float64):
        return None
    bits, bias = (32, 126) if dtype == types.float32 else (64, 1022)
    mantissa = 23 if bits == 32 else 52

    def codegen(context, builder, signature, args):
        fty = context.get_value_type(signature.args[0])
        ity = ir.IntType(bits)
        if isinstance(fty, ir.VectorType):
            ity = ir.VectorType(ity, fty.count)
            const = lambda v: ir.Constant(ity, [v] * fty.count)  # noqa: E731
        else:
            const = lambda v: ir.Constant(ity, v)  # noqa: E731
        n = builder.add(builder.bitcast(args[0], ity), const(bias))
        return builder.bitcast(builder.shl(n, const(mantissa)), fty)

    return t(t), codegen


_F = np.float32
_LOG2E_32 = _F(1.4426950408889634)
_ROUND_32 = _F(12582912.0)            # 1.5 * 2**23: t + it rounds t to an integer, in t's low bits
_LN2_HI_32 = _F(0.693359375)          # exactly representable: n * hi has no rounding error
_LN2_LO_32 = _F(-2.12194440e-4)
_LO_32 = _F(-86.0)                    # n - 1 >= -126: 2**(n-1) stays a normal number
_HI_32 = _F(89.0)                     # exp(89) overflows float32, and so does 2 * p * 2**127
_P32 = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3),
        _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1))

_LOG2E_64 = 1.4426950408889634
_ROUND_64 = 6755399441055744.0         # 1.5 * 2**52
_LN2_HI_64 = 6.93147180369123816490e-01
_LN2_LO_64 = 1.90821492927058770002e-10
_LO_64 = -707.0
_HI_64 = 710.0


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def _exp32_saturating(x):
    """exp(x) for x >= -86, exp(-86) below (see the module docstring)."""
    # Clamp via selects that keep NaN (it compares false): LLVM makes each one vmaxps/vminps,
    # and NaN flows through every step below (p is NaN) with no select to restore it.
    xc = where_less(x, _LO_32, _LO_32, x)
    xc = where_greater(xc, _HI_32, _HI_32, xc)
    # n = round(xc / ln2) by the add-and-subtract trick: t holds n in its low mantissa bits,
    # which also give 2**n below without a float-to-int conversion (that one would be undefined
    # for NaN).
    t = xc * _LOG2E_32 + _ROUND_32
    n = t - _ROUND_32
    r = xc - n * _LN2_HI_32
    r = r - n * _LN2_LO_32
    p = _P32[0]
    p = p * r + _P32[1]
    p = p * r + _P32[2]
    p = p * r + _P32[3]
    p = p * r + _P32[4]
    p = p * r + _P32[5]
    p = (p * r) * r + r + _F(1.0)
    # 2**n as 2 * 2**(n-1): n = 128 occurs below the overflow threshold (88.03 < x < 88.72).
    return (p + p) * _pow2_from_rounded(t)


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def exp32(x):
    y = _exp32_saturating(x)
    return y if not x < _LO_32 else _F(0.0)     # exact underflow below the clamp


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def _exp64_saturating(x):
    """exp(x) for x >= -707, exp(-707) below."""
    xc = where_less(x, _LO_64, _LO_64, x)       # NaN flows through, as in _exp32_saturating
    xc = where_greater(xc, _HI_64, _HI_64, xc)
    t = xc * _LOG2E_64 + _ROUND_64
    n = t - _ROUND_64
    r = xc - n * _LN2_HI_64
    r = r - n * _LN2_LO_64
    # Horner form of sum r**k / k!, k = 0..12.
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return (p + p) * _pow2_from_rounded(t)


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def exp64(x):
    y = _exp64_saturating(x)
    return y if not x < _LO_64 else 0.0


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def sigmoid32(x):
    return _F(1.0) / (_F(1.0) + _exp32_saturating(-x))


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def sigmoid64(x):
    return 1.0 / (1.0 + _exp64_saturating(-x))


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def tanh32(x):
    e = _exp32_saturating(_F(-2.0) * abs(x))
    # copysign is one bit operation (a compare and a select before); NaN: e and t are NaN.
    return math.copysign((_F(1.0) - e) / (_F(1.0) + e), x)


@njit(cache=True, fastmath=ACT_FASTMATH, error_model="numpy")
def tanh64(x):
    e = _exp64_saturating(-2.0 * abs(x))
    return math.copysign((1.0 - e) / (1.0 + e), x)


# Dtype-generic entry points for the kernels: resolved at compile time, so a float32 kernel
# calls the float32 versions and never widens to float64. Vectors take their lanes' version.
def sigmoid(x):
    raise NotImplementedError("only callable from jitted code")


def tanh(x):
    raise NotImplementedError("only callable from jitted code")


@overload(sigmoid,
          jit_options=dict(fastmath=ACT_FASTMATH, error_model="numpy"))
def _sigmoid_impl(x):
    dtype = x.dtype if isinstance(x, simd.Vec) else x
    if dtype == types.float32:
        return lambda x: sigmoid32(x)
    if dtype == types.float64:
        return lambda x: sigmoid64(x)
    return None


@overload(tanh,
          jit_options=dict(fastmath=ACT_FASTMATH, error_model="numpy"))
def _tanh_impl(x):
    dtype = x.dtype if isinstance(x, simd.Vec) else x
    if dtype == types.float32:
        return lambda x: tanh32(x)
    if dtype == types.float64:
        return lambda x: tanh64(x)
    return None
