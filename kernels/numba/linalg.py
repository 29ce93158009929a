"""The per-step recurrent product as one compiled loop (the small-size strategy).

Large products go through torch.mm from the launcher instead: SciPy's OpenBLAS (np.dot) keeps
its own thread pool, which fights torch's OpenMP threads for the 2 cores and was measured
several times slower than either alone.
"""

from numba import njit

from .config import JIT


@njit(**JIT)
def matmul_into(a, b, out):
    """out = a @ b for C-contiguous a (M, K), b (K, N) of one dtype.

    axpy form: rows of b are contiguous, so the inner loop vectorises; four rows of a share each
    pass over b, so b is read from cache M/4 times instead of M.
    """
    M, K = a.shape
    N = b.shape[1]
    zero = out.dtype.type(0)
    m = 0
    while m + 4 <= M:
        o0, o1, o2, o3 = out[m], out[m + 1], out[m + 2], out[m + 3]
        for n in range(N):
            o0[n] = zero
            o1[n] = zero
            o2[n] = zero
            o3[n] = zero
        for k in range(K):
            a0, a1, a2, a3 = a[m, k], a[m + 1, k], a[m + 2, k], a[m + 3, k]
            bk = b[k]
            for n in range(N):
                bv = bk[n]
                o0[n] += a0 * bv
                o1[n] += a1 * bv
                o2[n] += a2 * bv
                o3[n] += a3 * bv
        m += 4
    while m < M:
        om = out[m]
        for n in range(N):
            om[n] = zero
        for k in range(K):
            av = a[m, k]
            bk = b[k]
            for n in range(N):
                om[n] += av * bk[n]
        m += 1


@njit(**JIT)
def copy_live_rows(t, src, dst, lengths):
    """dst[b] = src[b] for sequences live at step t (dead ones keep their gradient)."""
    B, P = dst.shape
    for b in range(B):
        if t < lengths[b]:
            for p in range(P):
                dst[b, p] = src[b, p]


@njit(**JIT)
def add_live_rows(t, src, dst, lengths):
    """dst[b] += src[b] for sequences live at step t."""
    B, P = dst.shape
    for b in range(B):
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
