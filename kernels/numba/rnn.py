"""Elman RNN (tanh / relu) forward and backward recurrences (one layer, one direction).

Liveness as in lstm.py: step t of sequence b is live when t < lengths[b].
"""

from numba import njit

from .activations import tanh
from .config import JIT
from .linalg import copy_live_rows, matmul_into


@njit(**JIT)
def rnn_forward_step(t, xg, hg, h, lengths, relu, out, lo, hi):
    """Pointwise part of step t for rows lo..hi-1 given hg = h_{t-1} W_hh^T; updates h."""
    H = xg.shape[2]
    zero = xg.dtype.type(0)
    for b in range(lo, hi):
        ob = out[t, b]
        if t < lengths[b]:
            xr = xg[t, b]
            gr = hg[b]
            hb = h[b]
            if relu:
                for j in range(H):
                    v = xr[j] + gr[j]
                    v = zero if v < zero else v      # NaN stays NaN, as torch.relu
                    ob[j] = v
                    hb[j] = v
            else:
                for j in range(H):
                    v = tanh(xr[j] + gr[j])
                    ob[j] = v
                    hb[j] = v
        else:
            for j in range(H):
                ob[j] = zero


@njit(**JIT)
def rnn_forward_recurrence(xg, w_hh_t, h, lengths, reverse, relu, out, hg, lo, hi):
    """All T steps of rows lo..hi-1 (rows are independent: threads split the batch).
    h (B, H) holds h0 and becomes h_n; w_hh_t (H, H) transposed."""
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        matmul_into(h[lo:hi], w_hh_t, hg[lo:hi])
        rnn_forward_step(t, xg, hg, h, lengths, relu, out, lo, hi)


@njit(**JIT)
def rnn_backward_step(t, grad_out, dh, hs, lengths, relu, dgates, lo, hi):
    """Gate gradients of step t, rows lo..hi-1, from dL/dh_t = dh + grad_out[t] and h_t."""
    H = hs.shape[2]
    one = hs.dtype.type(1)
    zero = hs.dtype.type(0)
    for b in range(lo, hi):
        dg = dgates[t, b]
        if t < lengths[b]:
            hr = hs[t, b]
            gb = grad_out[t, b]
            dhb = dh[b]
            if relu:
                for j in range(H):
                    dg[j] = (dhb[j] + gb[j]) * (one if hr[j] > zero else zero)
            else:
                for j in range(H):
                    dg[j] = (dhb[j] + gb[j]) * (one - hr[j] * hr[j])
        else:
            for j in range(H):
                dg[j] = zero


@njit(**JIT)
def rnn_backward_recurrence(grad_out, dh, hs, w_hh, lengths, reverse, relu, dgates, dh_new,
                            lo, hi):
    """All T steps of rows lo..hi-1, opposite order to forward. dh (B, H) holds grad_hn and
    becomes dh0; hs (T, B, H) are the forward outputs; dh_new (B, H) scratch."""
    T = hs.shape[0]
    for s in range(T):
        t = s if reverse else T - 1 - s
        rnn_backward_step(t, grad_out, dh, hs, lengths, relu, dgates, lo, hi)
        matmul_into(dgates[t, lo:hi], w_hh, dh_new[lo:hi])
        copy_live_rows(t, dh_new, dh, lengths, lo, hi)
