"""Elman RNN (tanh / relu) forward and backward recurrences (one layer, one direction).

Liveness as in lstm.py: step t of sequence b is live when t < lengths[b].
"""

from numba import njit

from . import simd
from .activations import tanh
from .config import JIT
from .linalg import (
    copy_live_rows,
    copy_row,
    fill_row,
    gate_columns,
    matmul_packed,
    stage_step_inputs,
    state_gradient_columns,
)
from .simd import get, put, where_greater, where_less
from .team import barrier


@njit(inline="always")
def _rnn_forward_unit(j, relu, xr, gr, ob, hb, like):
    """Unit j (or the units from j, one vector) of _rnn_forward_row (see lstm.py)."""
    zero = xr.dtype.type(0)
    v = get(xr, j, like) + get(gr, j, like)
    v = where_less(v, zero, zero, v) if relu else tanh(v)      # NaN stays NaN, as torch.relu
    put(ob, j, v)
    put(hb, j, v)


@njit(**JIT)
def _rnn_forward_row(n, relu, xr, gr, ob, hb):
    """n hidden units of one sequence's step: h_t into ob and hb."""
    L = simd.lanes(xr)
    j = 0
    while j + L <= n:
        _rnn_forward_unit(j, relu, xr, gr, ob, hb, simd.zeros(xr))
        j += L
    while j < n:
        _rnn_forward_unit(j, relu, xr, gr, ob, hb, xr.dtype.type(0))
        j += 1


@njit(**JIT)
def rnn_forward_step(t, xg, hg, h, lengths, relu, out, lo, hi):
    """Pointwise part of step t for rows lo..hi-1 given hg = h_{t-1} W_hh^T; updates h."""
    H = xg.shape[2]
    zero = xg.dtype.type(0)
    for b in range(lo, hi):
        ob = out[t, b]
        if t < lengths[b]:
            _rnn_forward_row(H, relu, xg[t, b], hg[b], ob, h[b])
        else:
            fill_row(ob, H, zero)


@njit(**JIT)
def rnn_forward_recurrence(xg, w_hh_tp, h, lengths, reverse, relu, out, hg, lo, hi):
    """All T steps of rows lo..hi-1 (rows are independent: threads split the batch).
    h (B, H) holds h0 and becomes h_n; w_hh_tp: W_hh^T (H, H) packed by
    linalg.pack_weight."""
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        matmul_packed(h[lo:hi], w_hh_tp, hg[lo:hi], 0, hg.shape[1], s)
        rnn_forward_step(t, xg, hg, h, lengths, relu, out, lo, hi)


@njit(**JIT)
def rnn_forward_fused(x, w_tp, bias_rows, h, lengths, reverse, relu, out, xh, pre, lens_t, lo,
                      hi):
    """rnn_forward_recurrence with the input projection inside, as lstm.lstm_forward_fused:
    one product [x_t, h_{t-1}] @ [W_ih, W_hh]^T per step (w_tp packed by
    linalg.pack_weight_concat_t), bias_rows (B, H) added by the pointwise step. Scratch: xh
    (B, I + H), pre (1, B, H), lens_t (B,) int64."""
    T = x.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        stage_step_inputs(t, x, h, xh, lengths, lens_t, lo, hi)
        matmul_packed(xh[lo:hi], w_tp, pre[0, lo:hi], 0, pre.shape[2], s)
        rnn_forward_step(0, pre, bias_rows, h, lens_t, relu, out[t:t + 1], lo, hi)


@njit(inline="always")
def _rnn_backward_unit(j, relu, dhb, gb, hr, dg, like):
    """Unit j (or a vector of units) of _rnn_backward_row."""
    one = hr.dtype.type(1)
    zero = hr.dtype.type(0)
    h = get(hr, j, like)
    slope = where_greater(h, zero, one, zero) if relu else one - h * h
    put(dg, j, (get(dhb, j, like) + get(gb, j, like)) * slope)


@njit(**JIT)
def _rnn_backward_row(n, relu, dhb, gb, hr, dg):
    """Gate gradients of n hidden units of one sequence from dL/dh_t = dhb + gb and h_t."""
    L = simd.lanes(hr)
    j = 0
    while j + L <= n:
        _rnn_backward_unit(j, relu, dhb, gb, hr, dg, simd.zeros(hr))
        j += L
    while j < n:
        _rnn_backward_unit(j, relu, dhb, gb, hr, dg, hr.dtype.type(0))
        j += 1


@njit(**JIT)
def rnn_backward_step(t, grad_out, dh, hs, lengths, relu, dgates, lo, hi):
    """Gate gradients of step t, rows lo..hi-1, from dL/dh_t = dh + grad_out[t] and h_t."""
    H = hs.shape[2]
    zero = hs.dtype.type(0)
    for b in range(lo, hi):
        dg = dgates[t, b]
        if t < lengths[b]:
            _rnn_backward_row(H, relu, dh[b], grad_out[t, b], hs[t, b], dg)
        else:
            fill_row(dg, H, zero)


@njit(**JIT)
def rnn_backward_recurrence(grad_out, dh, hs, w_hh_p, lengths, reverse, relu, dgates, dh_new,
                            lo, hi):
    """All T steps of rows lo..hi-1, opposite order to forward. dh (B, H) holds grad_hn and
    becomes dh0; hs (T, B, H) are the forward outputs; w_hh_p: W_hh packed by
    linalg.pack_weight; dh_new (B, H) scratch."""
    T = hs.shape[0]
    for s in range(T):
        t = s if reverse else T - 1 - s
        rnn_backward_step(t, grad_out, dh, hs, lengths, relu, dgates, lo, hi)
        matmul_packed(dgates[t, lo:hi], w_hh_p, dh_new[lo:hi], 0, dh_new.shape[1], s)
        copy_live_rows(t, dh_new, dh, lengths, lo, hi)


# Small batches: the hidden units split over threads, as lstm_forward_columns (see lstm.py).


@njit(**JIT)
def rnn_forward_columns(data, tid, size, xg, w_parts, jb, lengths, reverse, relu, out, hbuf, hg):
    """All T steps of all rows, thread tid of size taking the slices of hidden units jb[k] ..
    jb[k+1]-1 for k = tid, tid + size, ... hbuf (2, B, H): hbuf[0] holds h0, hbuf[T % 2] gets
    h_n. w_parts: W_hh^T packed by linalg.pack_weight_slices(W_hh, True, 1, jb); hg (B, H)
    scratch."""
    T, B = xg.shape[0], xg.shape[1]
    H = hbuf.shape[2]
    zero = xg.dtype.type(0)
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = hbuf[s % 2]
        nxt = hbuf[(s + 1) % 2]
        for k in range(tid, jb.shape[0] - 1, size):
            j0, j1 = jb[k], jb[k + 1]
            n = j1 - j0
            gate_columns(cur, w_parts, hg, H, 1, j0, j1, s)
            for b in range(B):
                if t < lengths[b]:
                    _rnn_forward_row(n, relu, xg[t, b, j0:], hg[b, j0:], out[t, b, j0:],
                                     nxt[b, j0:])
                else:
                    copy_row(cur[b, j0:], nxt[b, j0:], n)
                    fill_row(out[t, b, j0:], n, zero)
        barrier(data, size)


@njit(**JIT)
def rnn_backward_columns(data, tid, size, grad_out, dh, hs, w_parts, jb, lengths, reverse, relu,
                         dgates, dh_new):
    """rnn_backward_recurrence with the hidden units split as in rnn_forward_columns.
    w_parts: W_hh packed by linalg.pack_weight_slices(W_hh, False, 1, jb)."""
    T, B = hs.shape[0], hs.shape[1]
    zero = hs.dtype.type(0)
    for s in range(T):
        t = s if reverse else T - 1 - s
        for k in range(tid, jb.shape[0] - 1, size):
            j0, j1 = jb[k], jb[k + 1]
            n = j1 - j0
            for b in range(B):
                if t < lengths[b]:
                    _rnn_backward_row(n, relu, dh[b, j0:], grad_out[t, b, j0:], hs[t, b, j0:],
                                      dgates[t, b, j0:])
                else:
                    fill_row(dgates[t, b, j0:], n, zero)
        barrier(data, size)
        for k in range(tid, jb.shape[0] - 1, size):
            state_gradient_columns(t, dgates[t], w_parts, dh_new, dh, lengths, jb[k], jb[k + 1],
                                   False, s)
