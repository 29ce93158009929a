"""Explicit SIMD vectors for Numba kernels: a vector type and the few operations the product needs.

LLVM's auto-vectoriser turns our loops into vector code, but it cannot keep a block of output
vectors in registers across the k loop of a product (every pass loads and stores them), which
held the compiled product at ~60-80 GFLOP/s per core. Written with these vectors, the product's
accumulators are SSA values that stay in registers, and it runs at ~110 GFLOP/s per core on this
project's Zen 4 machine (benchmarks/product_rate.py, benchmarks/results/cpu-product-2026-11-26.md).

A vector is one register wide on the host: 64 bytes with AVX-512, else 32. The width is read
once from the host CPU; Numba's cache is keyed by the host CPU too, so a cached kernel never meets
a different width. Loads and stores take an element offset into a C-contiguous array and need no
alignment.
"""

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _host_vector_bytes():
    try:
        features = llvm.get_host_cpu_features().flatten().split(",")
    except RuntimeError:        # LLVM cannot list this host's features: a safe common width
        return 32
    return 64 if "+avx512f" in features else 32


# Other widths stay correct (LLVM splits or merges registers), only slower.
VECTOR_BYTES = _host_vector_bytes()


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
def fma(typingctx, x, vec, acc):
    """acc + x * vec, one fused multiply-add per lane; x a scalar (used in every lane) or a
    vector."""
    if not isinstance(vec, Vec) or acc != vec or not (isinstance(x, types.Number) or x == vec):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.args[1])
        if isinstance(sig.args[0], Vec):
            splat = args[0]
        else:
            s = context.cast(builder, args[0], sig.args[0], sig.args[1].dtype)
            lane0 = builder.insert_element(ir.Constant(vty, ir.Undefined), s,
                                           ir.Constant(ir.IntType(32), 0))
            mask = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)
            splat = builder.shuffle_vector(lane0, ir.Constant(vty, ir.Undefined), mask)
        name = f"llvm.fma.v{vty.count}{'f32' if vty.element == ir.FloatType() else 'f64'}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
        return builder.call(fn, [splat, args[1], args[2]])

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
