"""The per-step recurrent product as one compiled loop (the small-size strategy).

Large products go through the GEMM helper (oneDNN or MKL, on torch's threads) from the launcher
instead. SciPy's OpenBLAS (np.dot) is not used: it keeps its own thread pool, which fights
torch's OpenMP threads for the 2 cores and was measured several times slower than either alone.
"""

from numba import njit

from .config import JIT


@njit(**JIT)
def matmul_into(a, b, out):
    """out = a @ b for C-contiguous a (M, K), b (K, N) of one dtype.

    axpy form (rows of b are contiguous, so the n loop vectorises), register-blocked over k:
    each pass over n adds a block of 4 (4 rows of a) or 8 (2 rows, 1 row) rank-1 updates, so
    every out vector is loaded and stored once per block instead of once per k, and rows of a
    share each pass over b. With fastmath the block sum becomes one FMA chain per out vector.
    ~2x the plain axpy loop for the recurrences' shapes (scratch/mm_bench.py).
    """
    M, K = a.shape
    N = b.shape[1]
    zero = out.dtype.type(0)
    m = 0
    while m + 4 <= M:
        o0, o1, o2, o3 = out[m], out[m + 1], out[m + 2], out[m + 3]
        for n in range(N):
            o0[n] = zero; o1[n] = zero; o2[n] = zero; o3[n] = zero
        k = 0
        while k + 4 <= K:
            a00, a01, a02, a03 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
            a10, a11, a12, a13 = a[m + 1, k], a[m + 1, k + 1], a[m + 1, k + 2], a[m + 1, k + 3]
            a20, a21, a22, a23 = a[m + 2, k], a[m + 2, k + 1], a[m + 2, k + 2], a[m + 2, k + 3]
            a30, a31, a32, a33 = a[m + 3, k], a[m + 3, k + 1], a[m + 3, k + 2], a[m + 3, k + 3]
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            for n in range(N):
                x0 = b0[n]; x1 = b1[n]; x2 = b2[n]; x3 = b3[n]
                o0[n] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                o1[n] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                o2[n] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                o3[n] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
            k += 4
        while k < K:
            a0, a1, a2, a3 = a[m, k], a[m + 1, k], a[m + 2, k], a[m + 3, k]
            bk = b[k]
            for n in range(N):
                bv = bk[n]
                o0[n] += a0 * bv; o1[n] += a1 * bv; o2[n] += a2 * bv; o3[n] += a3 * bv
            k += 1
        m += 4
    while m + 2 <= M:
        o0, o1 = out[m], out[m + 1]
        for n in range(N):
            o0[n] = zero; o1[n] = zero
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
                o0[n] += a0 * bv; o1[n] += a1 * bv
            k += 1
        m += 2
    while m < M:
        om = out[m]
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
        m += 1


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
