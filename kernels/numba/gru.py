"""GRU forward and backward recurrences (one layer, one direction, time-major).

Liveness as in lstm.py: step t of sequence b is live when t < lengths[b].
"""

from numba import njit

from .activations import sigmoid, tanh
from .config import JIT
from .linalg import add_live_rows, fill_row, matmul_into


@njit(**JIT)
def _gru_forward_row(H, xr, gr, b_hn, hb, sg, hl, ob):
    """One sequence's step (pointwise loops per row: see linalg.py); hb becomes h_t."""
    one = xr.dtype.type(1)
    for j in range(H):
        r = sigmoid(xr[j] + gr[j])
        z = sigmoid(xr[H + j] + gr[H + j])
        hn = gr[2 * H + j] + b_hn[j]
        n = tanh(xr[2 * H + j] + r * hn)
        hnew = (one - z) * n + z * hb[j]
        sg[j] = r
        sg[H + j] = z
        sg[2 * H + j] = n
        hl[j] = hn
        ob[j] = hnew
        hb[j] = hnew


@njit(**JIT)
def gru_forward_step(t, ts, xg, hg, b_hn, h, lengths, out, gates, hn_lin, lo, hi):
    """Pointwise part of step t for rows lo..hi-1 given hg = h_{t-1} W_hh^T (B, 3H); updates h."""
    H = h.shape[1]
    zero = xg.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            _gru_forward_row(H, xg[t, b], hg[b], b_hn, h[b], gates[ts, b], hn_lin[ts, b],
                             out[t, b])
        else:
            fill_row(gates[ts, b], 3 * H, zero)
            fill_row(hn_lin[ts, b], H, zero)
            fill_row(out[t, b], H, zero)


@njit(**JIT)
def gru_forward_recurrence(xg, w_hh_t, b_hn, h, lengths, reverse, need_grad, out, gates, hn_lin,
                           hg, lo, hi):
    """All T steps of rows lo..hi-1 (rows are independent: threads split the batch).

    h (B, H) holds h0 and becomes h_n. w_hh_t (H, 3H) transposed; b_hn (H,) (zeros when absent).
    gates (Ts, B, 3H) gets r, z, n and hn_lin (Ts, B, H) gets h W_hn^T + b_hn; Ts is T with
    need_grad, else 1. hg (B, 3H) is scratch."""
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        matmul_into(h[lo:hi], w_hh_t, hg[lo:hi])
        gru_forward_step(t, ts, xg, hg, b_hn, h, lengths, out, gates, hn_lin, lo, hi)


@njit(**JIT)
def gru_backward_step(t, reverse, grad_out, dh, gates, hn_lin, h0, hs, lengths, dxgates,
                      dhgates, lo, hi):
    """Gate gradients of step t, rows lo..hi-1; dh of live rows becomes dL/dh_t * z, to which
    the caller adds dhgates[t] @ W_hh (add_live_rows)."""
    H = dh.shape[1]
    one = gates.dtype.type(1)
    zero = gates.dtype.type(0)
    for b in range(lo, hi):
        dx = dxgates[t, b]
        dg = dhgates[t, b]
        if t < lengths[b]:
            if reverse:
                hp = hs[t + 1, b] if t + 1 < lengths[b] else h0[b]
            else:
                hp = hs[t - 1, b] if t > 0 else h0[b]
            sg = gates[t, b]
            hl = hn_lin[t, b]
            gb = grad_out[t, b]
            dhb = dh[b]
            for j in range(H):
                r = sg[j]
                z = sg[H + j]
                n = sg[2 * H + j]
                dht = dhb[j] + gb[j]
                dn = dht * (one - z) * (one - n * n)
                dz = dht * (hp[j] - n) * z * (one - z)
                dr = dn * hl[j] * r * (one - r)
                dx[j] = dr
                dx[H + j] = dz
                dx[2 * H + j] = dn
                dg[j] = dr
                dg[H + j] = dz
                dg[2 * H + j] = dn * r
                dhb[j] = dht * z          # the matmul part is added below
        else:
            for j in range(3 * H):
                dx[j] = zero
                dg[j] = zero


@njit(**JIT)
def gru_backward_recurrence(grad_out, dh, gates, hn_lin, h0, hs, w_hh, lengths, reverse,
                            dxgates, dhgates, dh_new, lo, hi):
    """All T steps of rows lo..hi-1, opposite order to forward. dh (B, H) holds grad_hn and
    becomes dh0. hs (T, B, H) are the forward outputs (the state after each live step); w_hh
    (3H, H) untransposed; dh_new (B, H) scratch."""
    T = gates.shape[0]
    for s in range(T):
        t = s if reverse else T - 1 - s
        gru_backward_step(t, reverse, grad_out, dh, gates, hn_lin, h0, hs, lengths, dxgates,
                          dhgates, lo, hi)
        matmul_into(dhgates[t, lo:hi], w_hh, dh_new[lo:hi])
        add_live_rows(t, dh_new, dh, lengths, lo, hi)
