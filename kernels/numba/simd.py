"""Explicit SIMD vectors for Numba kernels: a vector type, the operations the product needs, and
lane-wise arithmetic for the pointwise loops.

LLVM's auto-vectoriser turns our loops into vector code, but it cannot keep a block of output
vectors in registers across the k loop of a product (every pass loads and stores them), which
held the compiled product at ~60-80 GFLOP/s per core. Written with these vectors, the product's
accumulators are SSA values that stay in registers, and it runs at ~110 GFLOP/s per core on this
project's Zen 4 machine (benchmarks/product_rate.py, benchmarks/results/cpu-product-2026-11-26.md).

A vector is one register wide on the host: 64 bytes with AVX-512, else 32. The width is read
once from the host CPU; Numba's cache is keyed by the host CPU too, so a cached kernel never meets
a different width. Loads and stores take an element offset into a C-contiguous array and need no
alignment.

The pointwise loops (the gates of each step) are written with these vectors too. Left to LLVM,
their vectorisation depended on where a row function was inlined: compiled on its own, the LSTM
backward row stayed scalar (~8 ns per cell against ~1 inlined into a simple loop), and on Intel
CPUs LLVM vectorised 256 bits wide even with AVX-512. With `+ - * /` (vector or scalar
operands), `abs`, `math.copysign`, `where_less`/`where_greater` and `get`/`put`, one cell
function serves both the vector body of a row and its scalar tail (see lstm.py).
"""

import math
import operator

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model


def _host_vector_bytes():
    try:
        features = llvm.get_host_cpu_features().flatten().split(",")
    except RuntimeError:        # LLVM cannot list this host's features: a safe common width
        return 32
    return 64 if "+avx512f" in features else 32


# Other widths stay correct (LLVM splits or merges registers), only slower.
VECTOR_BYTES = _host_vector_bytes()

# A cache line. A vector load that starts mid-line reads two lines: with 64-byte vectors every
# load of an operand that numpy placed 16 bytes past a line (its usual placement) does, and the
# product over such a packed weight ran 1.05-1.20x slower on an Intel Xeon, whole LSTM layers
# 1.03-1.22x (benchmarks/product_rate.py --align, benchmarks/aligned_layers.py;
# benchmarks/results/cpu-align-2026-11-26-xeon.md).
ALIGN_BYTES = 64


def aligned_empty(n, dtype):
    """np.empty(n, dtype) starting on a cache line (ALIGN_BYTES): for the arrays the kernels
    load as whole vectors again and again (packed weights, the launcher's scratch buffers).
    ~2 us against np.empty's 0.3."""
    dtype = np.dtype(dtype)
    buf = np.empty(n + ALIGN_BYTES // dtype.itemsize, dtype)
    start = (-buf.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return buf[start:start + n]


class Vec(types.Type):
    """A register of ``dtype`` lanes (float32 or float64)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vec({dtype}x{self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _float_array(arr):
    return (isinstance(arr, types.Array) and arr.layout == "C"
            and arr.dtype in (types.float32, types.float64))


def _vector_pointer(context, builder, arrty, arr, offset, vecty):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), context.get_value_type(vecty).as_pointer())


def _as_vector(context, builder, value, valty, vt):
    """value (of type valty: vt or a number) as a vector of vt: numbers in every lane."""
    if valty == vt:
        return value
    vty = context.get_value_type(vt)
    s = context.cast(builder, value, valty, vt.dtype)
    lane0 = builder.insert_element(ir.Constant(vty, ir.Undefined), s,
                                   ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)
    return builder.shuffle_vector(lane0, ir.Constant(vty, ir.Undefined), mask)


def _call_llvm(builder, name, vty, args):
    """llvm.<name> on vectors of type vty (all operands that type)."""
    suffix = f"v{vty.count}{'f32' if vty.element == ir.FloatType() else 'f64'}"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * len(args)),
                                        f"llvm.{name}.{suffix}")
    return builder.call(fn, list(args))


@intrinsic
def lanes(typingctx, arr):
    """Elements per vector for arr's dtype (a compile-time constant)."""
    if not _float_array(arr):
        return None
    n = Vec(arr.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)

    return types.intp(arr), codegen


@intrinsic
def zeros(typingctx, arr):
    """A vector of zeros of arr's dtype."""
    if not _float_array(arr):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def load(typingctx, arr, offset):
    """The vector of arr's elements offset .. offset + lanes - 1 (flat, C order)."""
    if not _float_array(arr) or not isinstance(offset, types.Integer):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _vector_pointer(context, builder, sig.args[0], args[0], args[1], vt)
        return builder.load(ptr, align=1)

    return vt(arr, offset), codegen


@intrinsic
def store(typingctx, arr, offset, vec):
    """Writes vec to arr's elements offset .. offset + lanes - 1 (flat, C order)."""
    if (not _float_array(arr) or not isinstance(offset, types.Integer)
            or vec != Vec(arr.dtype)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vector_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[2])
        builder.store(args[2], ptr, align=1)
        return context.get_dummy_value()

    return types.none(arr, offset, vec), codegen


@intrinsic
def prefetch_l2(typingctx, arr, offset):
    """Starts loading the cache line that holds arr's element offset into L2 (prefetcht1 on
    x86), without waiting for it. Never faults, so an offset past the end is harmless."""
    if not _float_array(arr) or not isinstance(offset, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        # read (0), locality 2 (keep in L2: prefetcht1), data cache (1)
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), byte_ptr),
                          ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, offset), codegen


@intrinsic
def fma(typingctx, x, vec, acc):
    """acc + x * vec, one fused multiply-add per lane; x a scalar (used in every lane) or a
    vector."""
    if not isinstance(vec, Vec) or acc != vec or not (isinstance(x, types.Number) or x == vec):
        return None

    def codegen(context, builder, sig, args):
        splat = _as_vector(context, builder, args[0], sig.args[0], sig.args[1])
        return _call_llvm(builder, "fma", context.get_value_type(sig.args[1]),
                          [splat, args[1], args[2]])

    return vec(x, vec, acc), codegen


@intrinsic
def add(typingctx, x, y):
    """x + y, lane by lane."""
    if not isinstance(x, Vec) or y != x:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return x(x, y), codegen


@intrinsic
def total(typingctx, vec):
    """The sum of vec's lanes (in any order)."""
    if not isinstance(vec, Vec):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.args[0])
        ety = vty.element
        name = f"llvm.vector.reduce.fadd.v{vty.count}{'f32' if ety == ir.FloatType() else 'f64'}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ety, [ety, vty]), name)
        return builder.call(fn, [ir.Constant(ety, -0.0), args[0]], fastmath=("reassoc",))

    return vec.dtype(vec), codegen


@intrinsic
def transpose_block(typingctx, src, s, ld, out, o, ldo):
    """A lanes x lanes block transposed from src to out (same float dtype, C-contiguous): row r
    of the block is the vector at flat offset s + r * ld of src, and out gets its column c as
    the vector at o + c * ldo. In registers: log2(lanes) rounds of pairwise shuffles, each
    swapping the off-diagonal halves of ever smaller sub-blocks (the recursive block
    transpose), so each element is read and written once, in whole vectors."""
    ints = (s, ld, o, ldo)
    if (not _float_array(src) or out != src or
            not all(isinstance(i, types.Integer) for i in ints)):
        return None
    vt = Vec(src.dtype)
    n = vt.lanes

    def codegen(context, builder, sig, args):
        arrty = sig.args[0]
        src_arr, s, ld, out_arr, o, ldo = args
        s, ld, o, ldo = (context.cast(builder, v, t, types.intp)
                         for v, t in zip((s, ld, o, ldo), sig.args[1:3] + sig.args[4:6]))
        rows = []
        for r in range(n):
            offset = builder.add(s, builder.mul(ld, context.get_constant(types.intp, r)))
            ptr = _vector_pointer(context, builder, arrty, src_arr, offset, vt)
            rows.append(builder.load(ptr, align=1))
        i32 = ir.IntType(32)
        d = n // 2
        while d >= 1:
            low = ir.Constant(ir.VectorType(i32, n),
                              [lane if lane % (2 * d) < d else n + lane - d for lane in range(n)])
            high = ir.Constant(ir.VectorType(i32, n),
                               [lane + d if lane % (2 * d) < d else n + lane for lane in range(n)])
            for i in range(n):
                if i % (2 * d) < d:
                    a, b = rows[i], rows[i + d]
                    rows[i] = builder.shuffle_vector(a, b, low)
                    rows[i + d] = builder.shuffle_vector(a, b, high)
            d //= 2
        for c in range(n):
            offset = builder.add(o, builder.mul(ldo, context.get_constant(types.intp, c)))
            ptr = _vector_pointer(context, builder, arrty, out_arr, offset, vt)
            builder.store(rows[c], ptr, align=1)
        return context.get_dummy_value()

    return types.none(src, s, ld, out, o, ldo), codegen


# Lane-wise arithmetic. The flags are the activations' fast-math set (config.ACT_FASTMATH), never
# 'reassoc': exp's two-part ln2 must not be merged.
_FLAGS = ("nsz", "arcp", "contract", "afn")


def _operands(x, y):
    """The vector type of a lane-wise operation on x and y (each a Vec or a number), or None."""
    vt = x if isinstance(x, Vec) else y
    if not isinstance(vt, Vec):
        return None
    for t in (x, y):
        if t != vt and not isinstance(t, types.Number):
            return None
    return vt


def _lanewise(instruction):
    @intrinsic
    def apply(typingctx, x, y):
        vt = _operands(x, y)
        if vt is None:
            return None

        def codegen(context, builder, sig, args):
            a, b = (_as_vector(context, builder, v, t, vt) for v, t in zip(args, sig.args))
            return getattr(builder, instruction)(a, b, flags=_FLAGS)

        return vt(x, y), codegen

    return apply


def _register_lanewise(op, instruction):
    apply = _lanewise(instruction)

    @overload(op)
    def _vector_op(x, y):
        if _operands(x, y) is not None:
            return lambda x, y: apply(x, y)


for _op, _instruction in ((operator.add, "fadd"), (operator.sub, "fsub"), (operator.mul, "fmul"),
                          (operator.truediv, "fdiv")):
    _register_lanewise(_op, _instruction)


@intrinsic
def _negate(typingctx, x):
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0], flags=_FLAGS)

    return x(x), codegen


@overload(operator.neg)
def _vector_neg(x):
    if isinstance(x, Vec):
        return lambda x: _negate(x)


@intrinsic
def _fabs(typingctx, x):
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        return _call_llvm(builder, "fabs", context.get_value_type(x), args)

    return x(x), codegen


@intrinsic
def _copysign(typingctx, x, y):
    if not isinstance(x, Vec) or y != x:
        return None

    def codegen(context, builder, sig, args):
        return _call_llvm(builder, "copysign", context.get_value_type(x), args)

    return x(x, y), codegen


@overload(abs)
def _vector_abs(x):
    if isinstance(x, Vec):
        return lambda x: _fabs(x)


@overload(math.copysign)
def _vector_copysign(x, y):
    if isinstance(x, Vec) and y == x:
        return lambda x, y: _copysign(x, y)


def _select(predicate):
    @intrinsic
    def apply(typingctx, x, y, a, b):
        vt = _operands(x, y)
        if (vt is None or _operands(a, b) not in (vt, None)
                or not isinstance(a, (Vec, types.Number))):
            return None

        def codegen(context, builder, sig, args):
            x_, y_, a_, b_ = (_as_vector(context, builder, v, t, vt)
                              for v, t in zip(args, sig.args))
            # Ordered: a NaN lane compares false and takes b.
            return builder.select(builder.fcmp_ordered(predicate, x_, y_), a_, b_)

        return vt(x, y, a, b), codegen

    return apply


_vector_where_less = _select("<")
_vector_where_greater = _select(">")


def where_less(x, y, a, b):
    """a where x < y, else b (NaN compares false): lane by lane when any of them is a vector."""
    raise NotImplementedError("only callable from jitted code")


def where_greater(x, y, a, b):
    """a where x > y, else b (NaN compares false), as where_less."""
    raise NotImplementedError("only callable from jitted code")


def _is_vector_op(*ts):
    return any(isinstance(t, Vec) for t in ts)


@overload(where_less, inline="always")
def _where_less(x, y, a, b):
    if _is_vector_op(x, y, a, b):
        return lambda x, y, a, b: _vector_where_less(x, y, a, b)
    return lambda x, y, a, b: a if x < y else b


@overload(where_greater, inline="always")
def _where_greater(x, y, a, b):
    if _is_vector_op(x, y, a, b):
        return lambda x, y, a, b: _vector_where_greater(x, y, a, b)
    return lambda x, y, a, b: a if x > y else b


def get(arr, i, like):
    """arr's vector at element i when like is a vector, else the element arr[i] (i >= 0)."""
    raise NotImplementedError("only callable from jitted code")


def put(arr, i, v):
    """Writes v at element i of arr: a vector (store) or one element."""
    raise NotImplementedError("only callable from jitted code")


@overload(get, inline="always")
def _get(arr, i, like):
    if isinstance(like, Vec):
        return lambda arr, i, like: load(arr, i)
    return lambda arr, i, like: arr[unsigned(i)]


@overload(put, inline="always")
def _put(arr, i, v):
    if isinstance(v, Vec):
        return lambda arr, i, v: store(arr, i, v)

    def put_element(arr, i, v):
        arr[unsigned(i)] = v

    return put_element


@njit(inline="always")
def unsigned(i):
    """i (known to be >= 0) as an index Numba does not wrap around: a signed index might be
    negative as far as Numba knows, and the select for its wrap-around stopped LLVM vectorising
    loops over such indices (25 ns per LSTM cell instead of 3)."""
    return np.uint64(i)
