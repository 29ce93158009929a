"""The per-step recurrent product as one compiled loop (the small-size strategy).

Large products go through the GEMM helper (oneDNN or MKL, on torch's threads) from the launcher
instead. SciPy's OpenBLAS (np.dot) is not used: it keeps its own thread pool, which fights
torch's OpenMP threads for the 2 cores and was measured several times slower than either alone.

The weight is the same at every step, so the launcher packs it once per call (pack_weight) into
column panels: each panel is 4 vectors wide and holds all K rows contiguously, so the product
streams it front to back. Read straight from a (K, N) matrix, a panel is K short pieces 4N bytes
apart: the prefetchers lose the stream and, N being a power of two, every piece falls in the
same few L1 sets. Packed, the product ran 1.4-2.5x faster on an Intel Xeon whenever the weight
outgrew L1 (benchmarks/product_rate.py, benchmarks/results/cpu-product-2026-11-26-intel.md).
"""

import numpy as np
from numba import njit
from numba.extending import overload

from .. import cpu
from ..tuning import MACHINE
from . import simd
from .config import FASTMATH, JIT
from .simd import unsigned


def panel_width(dtype):
    """Columns per panel: 4 vectors of dtype."""
    return 4 * simd.VECTOR_BYTES // np.dtype(dtype).itemsize


def pack_weight(b, out=None):
    """b (K, N), float32 or float64, any strides, as the flat packed array the product reads:
    N // W panels of K x W (W = panel_width: 4 vectors), then panels one vector wide (K x lanes)
    for the columns left, then the last N % lanes columns one after the other (each K long, so
    the product reads them as contiguous dot products). Written into out (K * N elements) when
    given. A transposed view of a C-contiguous array (W_hh^T) is packed straight from it; other
    non-contiguous b are copied first."""
    if out is None:
        out = simd.aligned_empty(b.shape[0] * b.shape[1], b.dtype)
    W = panel_width(b.dtype)
    if b.T.flags.c_contiguous and not b.flags.c_contiguous:
        _pack_transposed(b.T, b.T[:, :0], out, W, W // 4)
    else:
        _pack(np.ascontiguousarray(b), 0, b.shape[1], out, W, W // 4)
    return out


# The packers are compiled: numpy's strided copies of the same views ran at ~3 GB/s for a
# transposed weight (12 ms for 16 MiB on the Zen 4 machine, a quarter of an LSTM layer's call)
# and cost ~10 us of Python per call for small ones (benchmarks/pack_rate.py).

@njit(**JIT)
def _pack(src, n_lo, n_hi, out, W, L):
    """pack_weight of b = src[:, n_lo:n_hi], src C-contiguous: each panel row is a contiguous
    run of a row of src."""
    K = src.shape[0]
    N = n_hi - n_lo
    wide = N - N % W
    narrow = N - N % L
    s = src.ravel()
    ld = src.shape[1]
    o = 0
    for n0, n1, w in ((0, wide, W), (wide, narrow, L)):
        for n in range(n0, n1, w):
            for k in range(K):
                r = k * ld + n_lo + n
                for c in range(w):
                    out[unsigned(o + c)] = s[unsigned(r + c)]
                o += w
    for n in range(narrow, N):
        for k in range(K):
            out[unsigned(o + k)] = s[unsigned(k * ld + n_lo + n)]
        o += K


def pack_weight_concat_t(w1, w2):
    """pack_weight of [w1, w2]^T for C-contiguous w1 (N, K1) and w2 (N, K2) of one dtype: the
    fused LSTM/RNN loops' [W_ih, W_hh]^T, packed without writing the concatenation first."""
    out = simd.aligned_empty(w1.shape[0] * (w1.shape[1] + w2.shape[1]), w1.dtype)
    W = panel_width(w1.dtype)
    _pack_transposed(w1, w2, out, W, W // 4)
    return out


@njit(**JIT)
def _transpose_into_panel(s, K, row0, n, c0, w, o, out, L):
    """Rows row0 .. row0+K-1, columns c0 .. c0+L-1 of the w-wide panel at out[o:], from the rows
    n+c0 .. n+c0+L-1 of s (flat, each row K long): lanes x lanes blocks transposed in registers
    (simd.transpose_block: ~0.1-0.2 ns per element against ~0.5 for the element-by-element
    copy it replaced), the last K % L rows one element at a time."""
    k0 = 0
    if L == simd.lanes(out):
        while k0 + L <= K:
            simd.transpose_block(s, (n + c0) * K + k0, K, out, o + (row0 + k0) * w + c0, w)
            k0 += L
    for c in range(c0, c0 + L):
        r = (n + c) * K
        for k in range(k0, K):
            out[unsigned(o + (row0 + k) * w + c)] = s[unsigned(r + k)]


@njit(**JIT)
def _pack_transposed(src, src2, out, W, L):
    """pack_weight of b = [src, src2].T, src (N, K1) and src2 (N, K2) C-contiguous (K2 may be
    0): the rows of b from src, then those from src2, in every panel."""
    N, K1 = src.shape
    K2 = src2.shape[1]
    K = K1 + K2
    wide = N - N % W
    narrow = N - N % L
    s, s2 = src.ravel(), src2.ravel()
    o = 0
    for n0, n1, w in ((0, wide, W), (wide, narrow, L)):
        for n in range(n0, n1, w):
            for c0 in range(0, w, L):
                _transpose_into_panel(s, K1, 0, n, c0, w, o, out, L)
                if K2 > 0:
                    _transpose_into_panel(s2, K2, K1, n, c0, w, o, out, L)
            o += K * w
    for n in range(narrow, N):
        for k in range(K1):
            out[unsigned(o + k)] = s[unsigned(n * K1 + k)]
        for k in range(K2):
            out[unsigned(o + K1 + k)] = s2[unsigned(n * K2 + k)]
        o += K


def pack_gate_panels(w):
    """w (4H, K) C-contiguous, an LSTM's W_hh (gates i, f, g, o of H units, H a multiple of
    the vector lanes), as pack_weight of w.T with its columns reordered so that panel p holds
    gates i, f, g, o of units p*lanes .. (p+1)*lanes - 1, one vector each: a 4-vector block of
    the product then sums all four gates of those units (lstm.lstm_forward_cells)."""
    out = simd.aligned_empty(w.size, w.dtype)
    _pack_gate_panels(w, out, w.shape[0] // 4, panel_width(w.dtype) // 4)
    return out


@njit(**JIT)
def _pack_gate_panels(src, out, H, L):
    K = src.shape[1]
    s = src.ravel()
    W = 4 * L
    o = 0
    for p in range(H // L):
        for g in range(4):
            # source rows g*H + p*L .. + L - 1 become the panel's columns g*L .. + L - 1
            _transpose_into_panel(s, K, 0, g * H + p * L - g * L, g * L, W, o, out, L)
        o += K * W


def pack_weight_slices(src, transposed, groups, bounds):
    """b = src.T if transposed else src, src C-contiguous, b (K, groups * n) whose columns are
    `groups` blocks of n (gates of n hidden units), as one flat array holding, for each slice k
    of the hidden units (bounds[k] .. bounds[k+1]-1), the slice's columns of every group, each
    packed by pack_weight, one after the other (so slice k's group g starts at
    slice_offset(K, groups, bounds[k], bounds[k+1], g)). pack_slice fills one slice, so the
    launcher can have each thread pack its own."""
    out = simd.aligned_empty(src.shape[0] * src.shape[1], src.dtype)
    for k in range(len(bounds) - 1):
        pack_slice(src, transposed, out, groups, bounds, k)
    return out


@njit(**JIT)
def pack_slice(src, transposed, out, groups, bounds, k):
    """Slice k of pack_weight_slices(src, transposed, groups, bounds) into out."""
    K = src.shape[1] if transposed else src.shape[0]
    n = (src.shape[0] if transposed else src.shape[1]) // groups
    W = 4 * simd.lanes(out)
    j0, j1 = bounds[k], bounds[k + 1]
    size = K * (j1 - j0)
    o = slice_offset(K, groups, j0, j1, 0)
    for g in range(groups):
        c0, c1 = g * n + j0, g * n + j1
        if transposed:
            _pack_transposed(src[c0:c1], src[c0:c1, :0], out[o:o + size], W, W // 4)
        else:
            _pack(src, c0, c1, out[o:o + size], W, W // 4)
        o += size


@njit(inline="always")
def slice_offset(K, groups, j0, j1, g):
    """Where pack_weight_slices put group g of the slice j0 .. j1-1."""
    return K * (groups * j0 + g * (j1 - j0))


# The product's k loop runs in chunks of K_BLOCK_BYTES of a panel (None: all of K in one): the
# CPU families disagreed (kernels/tuning.py: product_k_block_bytes).
K_BLOCK_BYTES = MACHINE.product_k_block_bytes


def k_block_rows(block_bytes):
    """Rows of a 4-vector panel in a chunk of block_bytes (None: all of any K)."""
    return max(1, block_bytes // (4 * simd.VECTOR_BYTES)) if block_bytes else 1 << 40


K_BLOCK_ROWS = k_block_rows(K_BLOCK_BYTES)

# A step whose products read STREAM_FROM_BYTES of packed weight or more (by default one core's
# L2: the weight cannot stay there from one step to the next) has the 4-row blocks prefetch the
# next chunk into L2 while they multiply the current one (kernels/tuning.py:
# product_prefetch_from_bytes). Read once; the compiled kernels keep the value (Numba's cache is
# keyed by the CPU model, whose L2 does not change).
STREAM_FROM_BYTES = MACHINE.product_prefetch_from_bytes or cpu.l2_bytes()


# A recurrence reads the same packed weight at every step. Read front to back each time, a weight
# a little larger than L1 misses on every line: the cache keeps the end of one pass, which the
# next pass reaches last, after evicting it. So a recurrence's odd steps take the panels back to
# front: each pass starts on the lines the last one left in L1 (within a panel, k still runs
# forward). The result is the same to the bit (each panel's columns are summed alike). Measured
# on a 2-core Intel Xeon (48 KiB L1d; benchmarks/product_rate.py --zigzag, one thread,
# interleaved; benchmarks/results/cpu-zigzag-2026-11-26-xeon.md): one row of a 64 KiB weight
# (an LSTM's H = 64) 0.60 -> 0.44 us per step (1.36-1.39x), 256 KiB 1.05-1.07x, larger weights
# and more rows within 2% either way. Only below STREAM_FROM_BYTES: the prefetch reads ahead in
# memory order.

@njit(**JIT)
def matmul_packed(a, bp, out, n0, N, step):
    """out[:, n0:n0+N] = a @ b for C-contiguous a (M, K) and out (M, >= n0 + N), b (K, N) packed
    by pack_weight, as the only product of recurrence step number `step` (0, 1, ... in the
    order the steps run; 0 for a one-off product; see matmul_packed_in)."""
    matmul_packed_in(a, bp, out, n0, N, a.shape[1] * N * out.itemsize, step)


@njit(**JIT)
def matmul_packed_in(a, bp, out, n0, N, step_bytes, step):
    """matmul_packed as one of the products of step number `step` that reads step_bytes of
    packed weight in all (matmul_packed_blocked with chunks of K_BLOCK_ROWS, prefetching from
    STREAM_FROM_BYTES, odd steps back to front below that)."""
    prefetch = step_bytes >= STREAM_FROM_BYTES
    matmul_packed_blocked(a, bp, out, n0, N, K_BLOCK_ROWS, prefetch,
                          step % 2 == 1 and not prefetch)


@njit(**JIT)
def matmul_packed_blocked(a, bp, out, n0, N, kc, prefetch, backwards):
    """matmul_packed with the k loop in chunks of kc (see K_BLOCK_BYTES), the next chunk
    prefetched into L2 when prefetch (see STREAM_FROM_BYTES), the full panels taken last to
    first when backwards (see matmul_packed; not with prefetch, which reads ahead in memory).

    Register-blocked on explicit vectors (kernels/numba/simd.py): a block of 4 rows x 1 panel of
    out is summed over a chunk of k in 16 registers, each k loading the panel's 4 vectors and
    reading 4 scalars of a, so the loop is bound by multiply-adds, not by memory. The rows past a
    multiple of 4 take 2- and 1-row blocks; the columns past the last full panel take one-vector
    panels, then dot products (both over all of k: a few columns at most). Panel by panel, chunk
    by chunk, so each chunk is reused by every row while it is in L1.
    """
    M, K = a.shape
    ld = out.shape[1]
    L = simd.lanes(out)
    W = 4 * L
    wide = N - N % W
    narrow = N - N % L
    M4 = M - M % 4
    panels = wide // W
    for p in range(panels):
        n = (panels - 1 - p) * W if backwards else p * W
        base = n * K            # the panel's first element
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            more = k0 > 0       # add to the sums of the chunks before
            # The next chunk (the next panel's first after the last) follows this one in bp:
            # its lines, one per k, split over the 4-row blocks (with fewer than 4 blocks, the
            # lines past what their k cover are left to the hardware).
            ahead = base + k1 * W
            per_block = -(-(k1 - k0) * 4 // max(1, M4 // 4)) if prefetch else 0
            for m in range(0, M4, 4):
                _block_4(a, bp, out, m, n0 + n, base, k0, k1, ld, L, more,
                         ahead + (m // 4) * per_block * L, per_block)
            m = M4
            if m + 2 <= M:
                _block_2(a, bp, out, m, n0 + n, base, k0, k1, ld, L, more)
                m += 2
            if m < M:
                _block_1(a, bp, out, m, n0 + n, base, k0, k1, ld, L, more)
    for n in range(wide, narrow, L):
        for m in range(M):
            _vector(a, bp, out, m, n0 + n, n * K, K, ld, L)
    for n in range(narrow, N):
        for m in range(M):
            out[m, n0 + n] = _dot(a, bp, m, n * K, K, L)


@njit(inline="always")
def gate_panel_1(a, m, bp, base, K, L):
    """Row m of a (M, K) times the 4-vector panel at bp[base:] (pack_gate_panels): its four
    sums, even and odd k in separate accumulators as in _block_1. The loop is _block_1's written
    out again: with both taking it from one inlined helper, _block_1's one-row product measured
    2-8% slower (1 x 64 x 256, three alternating runs; its codegen is sensitive to placement)."""
    e0 = simd.zeros(bp); e1 = simd.zeros(bp); e2 = simd.zeros(bp); e3 = simd.zeros(bp)
    d0 = simd.zeros(bp); d1 = simd.zeros(bp); d2 = simd.zeros(bp); d3 = simd.zeros(bp)
    o = base
    k = 0
    if K % 2 == 1:
        s = a[m, 0]
        e0 = simd.fma(s, simd.load(bp, o), e0)
        e1 = simd.fma(s, simd.load(bp, o + L), e1)
        e2 = simd.fma(s, simd.load(bp, o + 2 * L), e2)
        e3 = simd.fma(s, simd.load(bp, o + 3 * L), e3)
        o += 4 * L
        k = 1
    while k + 2 <= K:
        s = a[m, k]
        e0 = simd.fma(s, simd.load(bp, o), e0)
        e1 = simd.fma(s, simd.load(bp, o + L), e1)
        e2 = simd.fma(s, simd.load(bp, o + 2 * L), e2)
        e3 = simd.fma(s, simd.load(bp, o + 3 * L), e3)
        s = a[m, k + 1]
        d0 = simd.fma(s, simd.load(bp, o + 4 * L), d0)
        d1 = simd.fma(s, simd.load(bp, o + 5 * L), d1)
        d2 = simd.fma(s, simd.load(bp, o + 6 * L), d2)
        d3 = simd.fma(s, simd.load(bp, o + 7 * L), d3)
        o += 8 * L
        k += 2
    return simd.add(e0, d0), simd.add(e1, d1), simd.add(e2, d2), simd.add(e3, d3)


@njit(inline="always")
def gate_panel_2(a, m, bp, base, K, L):
    """gate_panel_1 for rows m and m + 1 (8 accumulators, each panel vector loaded once)."""
    a0 = simd.zeros(bp); a1 = simd.zeros(bp); a2 = simd.zeros(bp); a3 = simd.zeros(bp)
    b0 = simd.zeros(bp); b1 = simd.zeros(bp); b2 = simd.zeros(bp); b3 = simd.zeros(bp)
    o = base
    for k in range(K):
        w0 = simd.load(bp, o)
        w1 = simd.load(bp, o + L)
        w2 = simd.load(bp, o + 2 * L)
        w3 = simd.load(bp, o + 3 * L)
        o += 4 * L
        s = a[m, k]
        a0 = simd.fma(s, w0, a0); a1 = simd.fma(s, w1, a1)
        a2 = simd.fma(s, w2, a2); a3 = simd.fma(s, w3, a3)
        s = a[m + 1, k]
        b0 = simd.fma(s, w0, b0); b1 = simd.fma(s, w1, b1)
        b2 = simd.fma(s, w2, b2); b3 = simd.fma(s, w3, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


# The weight gradients' chunk of k (steps x rows), in rows of a 4-vector panel: 32 KiB of panel,
# so a chunk stays in L1 while every 4-row block of the gradient reads it.
WEIGHT_GRAD_K_BLOCK_ROWS = k_block_rows(MACHINE.weight_grad_k_block_bytes)


@njit(**JIT)
def matmul_packed_at(g, bp, out, m0, m1):
    """out[m0:m1] = g[:, m0:m1]^T @ b for g (K, M) C-contiguous and b (K, N) packed by
    pack_weight: rows m0 .. m1-1 of a weight gradient dW = dG^T a over all steps, reading dG
    in place (each k's 4 rows of a block are 4 neighbours in a row of g)."""
    matmul_packed_blocked(g.T[m0:m1], bp, out[m0:m1], 0, out.shape[1], WEIGHT_GRAD_K_BLOCK_ROWS,
                          False, False)


@njit(inline="always")
def _start(out, o, more):
    """A block's accumulator: the partial sum at out[o:] when more, else zeros."""
    return simd.load(out, o) if more else simd.zeros(out)


@njit(**JIT)
def gate_columns(h, w_parts, hg, H, groups, j0, j1, step):
    """hg's columns of hidden units j0 .. j1-1 in every group (gate): h @ W^T for that slice,
    W^T packed by pack_weight_slices (the hidden-unit split, see lstm.lstm_forward_columns), as
    recurrence step number `step` (see matmul_packed)."""
    step_bytes = h.shape[1] * groups * (j1 - j0) * hg.itemsize
    for g in range(groups):
        matmul_packed_in(h, w_parts[slice_offset(h.shape[1], groups, j0, j1, g):], hg,
                         g * H + j0, j1 - j0, step_bytes, step)


@njit(**JIT)
def state_gradient_columns(t, dgates_t, w_parts, dh_new, dh, lengths, j0, j1, add, step):
    """Columns j0 .. j1-1 of dL/dh_{t-1} = dgates_t @ W (W packed by pack_weight_slices(W,
    False, 1, .)) into dh_new, then into dh for the rows live at step t: copied, or added when
    add (GRU keeps a pointwise part in dh). `step`: see matmul_packed."""
    matmul_packed(dgates_t, w_parts[slice_offset(dgates_t.shape[1], 1, j0, j1, 0):], dh_new, j0,
                  j1 - j0, step)
    for b in range(dh.shape[0]):
        if t < lengths[b]:
            if add:
                for j in range(j0, j1):
                    dh[b, j] += dh_new[b, j]
            else:
                for j in range(j0, j1):
                    dh[b, j] = dh_new[b, j]


@njit(inline="always")
def _block_4(a, bp, out, m, n, base, k0, k1, N, L, more, fetch, lines):
    """out[m:m+4, n:n+4L] (+)= the sum over k0 <= k < k1 from the panel at bp[base:], starting
    to load the first `lines` vectors' lines from bp[fetch:] into L2 (one per k)."""
    o = m * N + n
    c00 = _start(out, o, more); c01 = _start(out, o + L, more)
    c02 = _start(out, o + 2 * L, more); c03 = _start(out, o + 3 * L, more)
    o += N
    c10 = _start(out, o, more); c11 = _start(out, o + L, more)
    c12 = _start(out, o + 2 * L, more); c13 = _start(out, o + 3 * L, more)
    o += N
    c20 = _start(out, o, more); c21 = _start(out, o + L, more)
    c22 = _start(out, o + 2 * L, more); c23 = _start(out, o + 3 * L, more)
    o += N
    c30 = _start(out, o, more); c31 = _start(out, o + L, more)
    c32 = _start(out, o + 2 * L, more); c33 = _start(out, o + 3 * L, more)
    o = base + k0 * 4 * L
    last = k0 + lines
    for k in range(k0, k1):
        if k < last:
            simd.prefetch_l2(bp, fetch)
            fetch += L
        b0 = simd.load(bp, o)
        b1 = simd.load(bp, o + L)
        b2 = simd.load(bp, o + 2 * L)
        b3 = simd.load(bp, o + 3 * L)
        o += 4 * L
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


@njit(inline="always")
def _block_2(a, bp, out, m, n, base, k0, k1, N, L, more):
    """out[m:m+2, n:n+4L] (+)= ...: 8 accumulators, enough independent chains to keep the FMA
    units busy."""
    o = m * N + n
    c00 = _start(out, o, more); c01 = _start(out, o + L, more)
    c02 = _start(out, o + 2 * L, more); c03 = _start(out, o + 3 * L, more)
    o += N
    c10 = _start(out, o, more); c11 = _start(out, o + L, more)
    c12 = _start(out, o + 2 * L, more); c13 = _start(out, o + 3 * L, more)
    o = base + k0 * 4 * L
    for k in range(k0, k1):
        b0 = simd.load(bp, o)
        b1 = simd.load(bp, o + L)
        b2 = simd.load(bp, o + 2 * L)
        b3 = simd.load(bp, o + 3 * L)
        o += 4 * L
        s = a[m, k]
        c00 = simd.fma(s, b0, c00); c01 = simd.fma(s, b1, c01)
        c02 = simd.fma(s, b2, c02); c03 = simd.fma(s, b3, c03)
        s = a[m + 1, k]
        c10 = simd.fma(s, b0, c10); c11 = simd.fma(s, b1, c11)
        c12 = simd.fma(s, b2, c12); c13 = simd.fma(s, b3, c13)
    o = m * N + n
    simd.store(out, o, c00); simd.store(out, o + L, c01)
    simd.store(out, o + 2 * L, c02); simd.store(out, o + 3 * L, c03)
    o += N
    simd.store(out, o, c10); simd.store(out, o + L, c11)
    simd.store(out, o + 2 * L, c12); simd.store(out, o + 3 * L, c13)


@njit(inline="always")
def _block_1(a, bp, out, m, n, base, k0, k1, N, L, more):
    """out[m, n:n+4L] (+)= ...: even and odd k in separate accumulators (8 chains, as
    _block_2). An odd k count takes its first k alone, before the loop: taken after it, the
    loop compiled ~1.3x slower (1 x 64 x 256: 48 against 62-68 GFLOP/s)."""
    o = m * N + n
    e0 = _start(out, o, more); e1 = _start(out, o + L, more)
    e2 = _start(out, o + 2 * L, more); e3 = _start(out, o + 3 * L, more)
    d0 = simd.zeros(out); d1 = simd.zeros(out); d2 = simd.zeros(out); d3 = simd.zeros(out)
    o = base + k0 * 4 * L
    k = k0
    if (k1 - k0) % 2 == 1:
        s = a[m, k]
        e0 = simd.fma(s, simd.load(bp, o), e0)
        e1 = simd.fma(s, simd.load(bp, o + L), e1)
        e2 = simd.fma(s, simd.load(bp, o + 2 * L), e2)
        e3 = simd.fma(s, simd.load(bp, o + 3 * L), e3)
        o += 4 * L
        k += 1
    while k + 2 <= k1:
        s = a[m, k]
        e0 = simd.fma(s, simd.load(bp, o), e0)
        e1 = simd.fma(s, simd.load(bp, o + L), e1)
        e2 = simd.fma(s, simd.load(bp, o + 2 * L), e2)
        e3 = simd.fma(s, simd.load(bp, o + 3 * L), e3)
        s = a[m, k + 1]
        d0 = simd.fma(s, simd.load(bp, o + 4 * L), d0)
        d1 = simd.fma(s, simd.load(bp, o + 5 * L), d1)
        d2 = simd.fma(s, simd.load(bp, o + 6 * L), d2)
        d3 = simd.fma(s, simd.load(bp, o + 7 * L), d3)
        o += 8 * L
        k += 2
    o = m * N + n
    simd.store(out, o, simd.add(e0, d0)); simd.store(out, o + L, simd.add(e1, d1))
    simd.store(out, o + 2 * L, simd.add(e2, d2)); simd.store(out, o + 3 * L, simd.add(e3, d3))


@njit(inline="always")
def _vector(a, bp, out, m, n, base, K, N, L):
    """out[m, n:n+L] from the one-vector panel at bp[base:]: four k at a time in four
    accumulators (independent chains)."""
    c0 = simd.zeros(out); c1 = simd.zeros(out); c2 = simd.zeros(out); c3 = simd.zeros(out)
    o = base
    k = 0
    while k + 4 <= K:
        c0 = simd.fma(a[m, k], simd.load(bp, o), c0)
        c1 = simd.fma(a[m, k + 1], simd.load(bp, o + L), c1)
        c2 = simd.fma(a[m, k + 2], simd.load(bp, o + 2 * L), c2)
        c3 = simd.fma(a[m, k + 3], simd.load(bp, o + 3 * L), c3)
        o += 4 * L
        k += 4
    while k < K:
        c0 = simd.fma(a[m, k], simd.load(bp, o), c0)
        o += L
        k += 1
    simd.store(out, m * N + n, simd.add(simd.add(c0, c1), simd.add(c2, c3)))


def _dot(a, bp, m, base, K, L):
    """a[m] . bp[base:base+K] (one of the last columns, stored contiguously): vector loads of
    a's row when a is C-contiguous, elements one by one when it is a strided view (a
    transposed gradient, see matmul_packed_at)."""
    raise NotImplementedError("compiled only")


@overload(_dot, inline="always", jit_options=dict(fastmath=FASTMATH, error_model="numpy"))
def _dot_by_layout(a, bp, m, base, K, L):
    if a.layout == "C":
        return _dot_contiguous
    return _dot_strided


def _dot_contiguous(a, bp, m, base, K, L):
    acc = simd.zeros(bp)
    o = m * K
    k = 0
    while k + L <= K:
        acc = simd.fma(simd.load(a, o + k), simd.load(bp, base + k), acc)
        k += L
    total = simd.total(acc)
    while k < K:
        total += a[m, k] * bp[base + k]
        k += 1
    return total


def _dot_strided(a, bp, m, base, K, L):
    total = bp.dtype.type(0)
    for k in range(K):
        total += a[m, k] * bp[base + k]
    return total


@njit(**JIT)
def stage_step_inputs(t, x, h, xh, lengths, lens_t, lo, hi):
    """For a loop that takes its input projection inside (lstm.lstm_forward_fused,
    rnn.rnn_forward_fused): rows lo..hi-1 of xh become [x_t, h_{t-1}], and lens_t their
    lengths counted from step t (the pointwise step then runs on one-step views)."""
    I, H = x.shape[2], h.shape[1]
    for b in range(lo, hi):
        copy_row(x[t, b], xh[b], I)
        copy_row(h[b], xh[b, I:], H)
        lens_t[b] = lengths[b] - t


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
