"""The per-step recurrent product as one compiled loop (the small-size strategy).

Large products go through the GEMM helper (oneDNN or MKL, on torch's threads) from the launcher
instead. SciPy's OpenBLAS (np.dot) is not used: it keeps its own thread pool, which fights
torch's OpenMP threads for the 2 cores and was measured several times slower than either alone.
"""

from numba import njit

from . import simd
from .config import JIT


@njit(**JIT)
def matmul_into(a, b, out):
    """out = a @ b for C-contiguous a (M, K), b (K, N) of one dtype.

    Register-blocked on explicit vectors (kernels/numba/simd.py): a block of 4 rows x 4 vectors
    of out is summed over all of k in 16 registers, each k loading 4 vectors of b and reading 4
    scalars of a, so the loop is bound by multiply-adds, not by memory. Columns left over take
    4 x 1 blocks, then N % lanes scalar columns; rows left over (M % 4) take axpy loops (two
    rows, then one). Blocks go column strip by column strip so a strip of b is reused by every
    4 rows.
    """
    M, K = a.shape
    N = b.shape[1]
    L = simd.lanes(out)
    wide = N - N % (4 * L)
    narrow = N - N % L
    M4 = M - M % 4
    for n in range(0, wide, 4 * L):
        for m in range(0, M4, 4):
            _block_4x4(a, b, out, m, n, K, N, L)
    for n in range(wide, narrow, L):
        for m in range(0, M4, 4):
            _block_4x1(a, b, out, m, n, K, N)
    if narrow < N:
        _columns(a, b, out, narrow, M4, K, N)
    m = M4
    if m + 2 <= M:
        _two_rows(a, b, out, m, K, N)
        m += 2
    if m < M:
        _row(a, b, out, m, K, N)


@njit(**JIT)
def _block_4x4(a, b, out, m, n, K, N, L):
    """out[m:m+4, n:n+4L] = a[m:m+4] @ b[:, n:n+4L]."""
    c00 = simd.zeros(out); c01 = simd.zeros(out); c02 = simd.zeros(out); c03 = simd.zeros(out)
    c10 = simd.zeros(out); c11 = simd.zeros(out); c12 = simd.zeros(out); c13 = simd.zeros(out)
    c20 = simd.zeros(out); c21 = simd.zeros(out); c22 = simd.zeros(out); c23 = simd.zeros(out)
    c30 = simd.zeros(out); c31 = simd.zeros(out); c32 = simd.zeros(out); c33 = simd.zeros(out)
    for k in range(K):
        o = k * N + n
        b0 = simd.load(b, o)
        b1 = simd.load(b, o + L)
        b2 = simd.load(b, o + 2 * L)
        b3 = simd.load(b, o + 3 * L)
        s = a[m, k]
        c00 = simd.fma(s, b0, c00); c01 = simd.fma(s, b1, c01)
        c02 = simd.fma(s, b2, c02); c03 = simd.fma(s, b3, c03)
        s = a[m + 1, k]
        c10 = simd.fma(s, b0, c10); c11 = simd.fma(s, b1, c11)
        c12 = simd.fma(s, b2, c12); c13 = simd.fma(s, b3, c13)
        s = a[m + 2, k]
        c20 = simd.fma(s, b0, c20); c21 = simd.fma(s, b1, c21)
        c22 = simd.fma(s, b2, c22); c23 = simd.fma(s, b3, c23)
        s = a[m + 3, k]
        c30 = simd.fma(s, b0, c30); c31 = simd.fma(s, b1, c31)
        c32 = simd.fma(s, b2, c32); c33 = simd.fma(s, b3, c33)
    o = m * N + n
    simd.store(out, o, c00); simd.store(out, o + L, c01)
    simd.store(out, o + 2 * L, c02); simd.store(out, o + 3 * L, c03)
    o += N
    simd.store(out, o, c10); simd.store(out, o + L, c11)
    simd.store(out, o + 2 * L, c12); simd.store(out, o + 3 * L, c13)
    o += N
    simd.store(out, o, c20); simd.store(out, o + L, c21)
    simd.store(out, o + 2 * L, c22); simd.store(out, o + 3 * L, c23)
    o += N
    simd.store(out, o, c30); simd.store(out, o + L, c31)
    simd.store(out, o + 2 * L, c32); simd.store(out, o + 3 * L, c33)


@njit(**JIT)
def _block_4x1(a, b, out, m, n, K, N):
    """out[m:m+4, n:n+L] = a[m:m+4] @ b[:, n:n+L]."""
    c0 = simd.zeros(out); c1 = simd.zeros(out); c2 = simd.zeros(out); c3 = simd.zeros(out)
    for k in range(K):
        bk = simd.load(b, k * N + n)
        c0 = simd.fma(a[m, k], bk, c0)
        c1 = simd.fma(a[m + 1, k], bk, c1)
        c2 = simd.fma(a[m + 2, k], bk, c2)
        c3 = simd.fma(a[m + 3, k], bk, c3)
    o = m * N + n
    simd.store(out, o, c0); simd.store(out, o + N, c1)
    simd.store(out, o + 2 * N, c2); simd.store(out, o + 3 * N, c3)


@njit(**JIT)
def _two_rows(a, b, out, m, K, N):
    """out[m:m+2] = a[m:m+2] @ b, as _row with two rows sharing each pass over b."""
    o0, o1 = out[m], out[m + 1]
    zero = out.dtype.type(0)
    for n in range(N):
        o0[n] = zero
        o1[n] = zero
    k = 0
    while k + 8 <= K:
        a00, a01, a02, a03 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
        a04, a05, a06, a07 = a[m, k + 4], a[m, k + 5], a[m, k + 6], a[m, k + 7]
        a10, a11, a12, a13 = a[m + 1, k], a[m + 1, k + 1], a[m + 1, k + 2], a[m + 1, k + 3]
        a14, a15, a16, a17 = a[m + 1, k + 4], a[m + 1, k + 5], a[m + 1, k + 6], a[m + 1, k + 7]
        b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
        b4, b5, b6, b7 = b[k + 4], b[k + 5], b[k + 6], b[k + 7]
        for n in range(N):
            x0 = b0[n]; x1 = b1[n]; x2 = b2[n]; x3 = b3[n]
            x4 = b4[n]; x5 = b5[n]; x6 = b6[n]; x7 = b7[n]
            o0[n] += (a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                      + a04 * x4 + a05 * x5 + a06 * x6 + a07 * x7)
            o1[n] += (a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                      + a14 * x4 + a15 * x5 + a16 * x6 + a17 * x7)
        k += 8
    while k < K:
        a0, a1 = a[m, k], a[m + 1, k]
        bk = b[k]
        for n in range(N):
            bv = bk[n]
            o0[n] += a0 * bv
            o1[n] += a1 * bv
        k += 1


@njit(**JIT)
def _row(a, b, out, m, K, N):
    """out[m] = a[m] @ b, as rank-1 updates in blocks of 8 (a single row has no reuse to block
    for in registers; walking b row by row keeps its loads sequential)."""
    om = out[m]
    zero = out.dtype.type(0)
    for n in range(N):
        om[n] = zero
    k = 0
    while k + 8 <= K:
        a0, a1, a2, a3 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
        a4, a5, a6, a7 = a[m, k + 4], a[m, k + 5], a[m, k + 6], a[m, k + 7]
        b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
        b4, b5, b6, b7 = b[k + 4], b[k + 5], b[k + 6], b[k + 7]
        for n in range(N):
            om[n] += (a0 * b0[n] + a1 * b1[n] + a2 * b2[n] + a3 * b3[n]
                      + a4 * b4[n] + a5 * b5[n] + a6 * b6[n] + a7 * b7[n])
        k += 8
    while k < K:
        av = a[m, k]
        bk = b[k]
        for n in range(N):
            om[n] += av * bk[n]
        k += 1


@njit(**JIT)
def _columns(a, b, out, n0, M, K, N):
    """out[:M, n0:] = a[:M] @ b[:, n0:] for the last N - n0 (< lanes) columns."""
    zero = out.dtype.type(0)
    for m in range(M):
        om = out[m]
        for n in range(n0, N):
            om[n] = zero
        for k in range(K):
            s = a[m, k]
            bk = b[k]
            for n in range(n0, N):
                om[n] += s * bk[n]


@njit(**JIT)
def copy_live_rows(t, src, dst, lengths, lo, hi):
    """dst[b] = src[b] for rows lo..hi-1 live at step t (dead ones keep their gradient)."""
    P = dst.shape[1]
    for b in range(lo, hi):
        if t < lengths[b]:
            for p in range(P):
                dst[b, p] = src[b, p]


@njit(**JIT)
def add_live_rows(t, src, dst, lengths, lo, hi):
    """dst[b] += src[b] for rows lo..hi-1 live at step t."""
    P = dst.shape[1]
    for b in range(lo, hi):
        if t < lengths[b]:
            for p in range(P):
                dst[b, p] += src[b, p]


# Per-row helpers. Every pointwise loop of the step kernels lives in a small function over 1-D rows
# (no batch index): written inline in the batch loop, the loops lost vectorisation for every B > 1
# (LLVM's runtime alias checks went wrong in the batch-loop context: ~27 ns per LSTM cell instead
# of ~3, while B = 1 stayed fast). As separate functions each loop gets its own checks.


@njit(**JIT)
def fill_row(r, n, v):
    for j in range(n):
        r[j] = v


@njit(**JIT)
def copy_row(src, dst, n):
    for j in range(n):
        dst[j] = src[j]
