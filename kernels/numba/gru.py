"""GRU forward and backward recurrences (one layer, one direction, time-major).

Liveness as in lstm.py: step t of sequence b is live when t < lengths[b].
"""

from numba import njit

from . import simd
from .activations import sigmoid, tanh
from .config import JIT
from .linalg import (
    add_live_rows,
    copy_row,
    fill_row,
    gate_columns,
    matmul_packed,
    state_gradient_columns,
)
from .simd import get, put
from .team import barrier


@njit(inline="always")
def _gru_forward_unit(j, H, xr, gr, b_hn, hp, sg, hl, ob, like):
    """Unit j (or the units from j, one vector) of _gru_forward_row (see lstm.py)."""
    one = xr.dtype.type(1)
    zi, ni = H + j, 2 * H + j
    r = sigmoid(get(xr, j, like) + get(gr, j, like))
    z = sigmoid(get(xr, zi, like) + get(gr, zi, like))
    hn = get(gr, ni, like) + get(b_hn, j, like)
    nj = tanh(get(xr, ni, like) + r * hn)
    put(sg, j, r)
    put(sg, zi, z)
    put(sg, ni, nj)
    put(hl, j, hn)
    put(ob, j, (one - z) * nj + z * get(hp, j, like))


@njit(**JIT)
def _gru_forward_row(n, H, xr, gr, b_hn, hp, sg, hl, ob):
    """n hidden units of one sequence's step from the previous state hp; h_t goes to ob.
    Gate k of unit j is at k * H + j in xr, gr and sg (views starting at the first unit)."""
    L = simd.lanes(xr)
    j = 0
    while j + L <= n:
        _gru_forward_unit(j, H, xr, gr, b_hn, hp, sg, hl, ob, simd.zeros(xr))
        j += L
    while j < n:
        _gru_forward_unit(j, H, xr, gr, b_hn, hp, sg, hl, ob, xr.dtype.type(0))
        j += 1


@njit(**JIT)
def gru_forward_step(t, ts, xg, hg, b_hn, h, lengths, out, gates, hn_lin, lo, hi):
    """Pointwise part of step t for rows lo..hi-1 given hg = h_{t-1} W_hh^T (B, 3H); updates h."""
    H = h.shape[1]
    zero = xg.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            _gru_forward_row(H, H, xg[t, b], hg[b], b_hn, h[b], gates[ts, b], hn_lin[ts, b],
                             out[t, b])
            copy_row(out[t, b], h[b], H)
        else:
            fill_row(gates[ts, b], 3 * H, zero)
            fill_row(hn_lin[ts, b], H, zero)
            fill_row(out[t, b], H, zero)


@njit(**JIT)
def gru_forward_recurrence(xg, w_hh_tp, b_hn, h, lengths, reverse, need_grad, out, gates, hn_lin,
                           hg, lo, hi):
    """All T steps of rows lo..hi-1 (rows are independent: threads split the batch).

    h (B, H) holds h0 and becomes h_n. w_hh_tp: W_hh^T (H, 3H) packed by linalg.pack_weight;
    b_hn (H,) (zeros when absent). gates (Ts, B, 3H) gets r, z, n and hn_lin (Ts, B, H) gets
    h W_hn^T + b_hn; Ts is T with need_grad, else 1. hg (B, 3H) is scratch."""
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        matmul_packed(h[lo:hi], w_hh_tp, hg[lo:hi], 0, hg.shape[1], s)
        gru_forward_step(t, ts, xg, hg, b_hn, h, lengths, out, gates, hn_lin, lo, hi)


@njit(**JIT)
def gru_forward_fused(x, w_ih_tp, xbias, w_hh_tp, b_hn, h, lengths, reverse, need_grad, out,
                      gates, hn_lin, xg, hg, lens_t, lo, hi):
    """gru_forward_recurrence with the input projection inside: each step's x_t W_ih^T + xbias
    (w_ih_tp: W_ih^T packed by linalg.pack_weight; xbias (3H,): b_ih with b_hr, b_hz added) goes
    to the scratch xg (1, B, 3H) instead of a (T, B, 3H) projection written for all steps first,
    which for a single step (the step path) also saves the one-off GEMM's launch. Scratch: xg,
    hg (B, 3H), lens_t (B,) int64; the pointwise step runs on one-step views (step t as step 0,
    lengths counted from t). Other arguments as gru_forward_recurrence's."""
    T = x.shape[0]
    G = hg.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        matmul_packed(x[t, lo:hi], w_ih_tp, xg[0, lo:hi], 0, G, s)
        for b in range(lo, hi):
            for j in range(G):
                xg[0, b, j] += xbias[j]
            lens_t[b] = lengths[b] - t
        matmul_packed(h[lo:hi], w_hh_tp, hg[lo:hi], 0, G, s)
        gru_forward_step(0, 0, xg, hg, b_hn, h, lens_t, out[t:t + 1], gates[ts:ts + 1],
                         hn_lin[ts:ts + 1], lo, hi)


@njit(**JIT)
def _previous_h(t, reverse, hs, h0, lengths, b):
    """The state step t of row b started from (see fastrnn.steps.previous_states)."""
    if reverse:
        return hs[t + 1, b] if t + 1 < lengths[b] else h0[b]
    return hs[t - 1, b] if t > 0 else h0[b]


@njit(inline="always")
def _gru_backward_unit(j, H, dhb, gb, sg, hl, hp, dx, dg, like):
    """Unit j (or a vector of units) of _gru_backward_row."""
    one = sg.dtype.type(1)
    zi, ni = H + j, 2 * H + j
    r = get(sg, j, like)
    z = get(sg, zi, like)
    nj = get(sg, ni, like)
    dht = get(dhb, j, like) + get(gb, j, like)
    dn = dht * (one - z) * (one - nj * nj)
    dz = dht * (get(hp, j, like) - nj) * z * (one - z)
    dr = dn * get(hl, j, like) * r * (one - r)
    put(dx, j, dr)
    put(dx, zi, dz)
    put(dx, ni, dn)
    put(dg, j, dr)
    put(dg, zi, dz)
    put(dg, ni, dn * r)
    put(dhb, j, dht * z)


@njit(**JIT)
def _gru_backward_row(n, H, dhb, gb, sg, hl, hp, dx, dg):
    """Gate gradients of n hidden units of one sequence, dL/dh_t = dhb + gb; dhb becomes
    dL/dh_t * z (the caller adds the product). Views start at the first unit, as in
    _gru_forward_row."""
    L = simd.lanes(sg)
    j = 0
    while j + L <= n:
        _gru_backward_unit(j, H, dhb, gb, sg, hl, hp, dx, dg, simd.zeros(sg))
        j += L
    while j < n:
        _gru_backward_unit(j, H, dhb, gb, sg, hl, hp, dx, dg, sg.dtype.type(0))
        j += 1


@njit(**JIT)
def gru_backward_step(t, reverse, grad_out, dh, gates, hn_lin, h0, hs, lengths, dxgates,
                      dhgates, lo, hi):
    """Gate gradients of step t, rows lo..hi-1; dh of live rows becomes dL/dh_t * z, to which
    the caller adds dhgates[t] @ W_hh (add_live_rows)."""
    H = dh.shape[1]
    zero = gates.dtype.type(0)
    for b in range(lo, hi):
        dx = dxgates[t, b]
        dg = dhgates[t, b]
        if t < lengths[b]:
            hp = _previous_h(t, reverse, hs, h0, lengths, b)
            _gru_backward_row(H, H, dh[b], grad_out[t, b], gates[t, b], hn_lin[t, b], hp, dx, dg)
        else:
            fill_row(dx, 3 * H, zero)
            fill_row(dg, 3 * H, zero)


@njit(**JIT)
def gru_backward_recurrence(grad_out, dh, gates, hn_lin, h0, hs, w_hh_p, lengths, reverse,
                            dxgates, dhgates, dh_new, lo, hi):
    """All T steps of rows lo..hi-1, opposite order to forward. dh (B, H) holds grad_hn and
    becomes dh0. hs (T, B, H) are the forward outputs (the state after each live step); w_hh_p:
    W_hh (3H, H) packed by linalg.pack_weight; dh_new (B, H) scratch."""
    T = gates.shape[0]
    for s in range(T):
        t = s if reverse else T - 1 - s
        gru_backward_step(t, reverse, grad_out, dh, gates, hn_lin, h0, hs, lengths, dxgates,
                          dhgates, lo, hi)
        matmul_packed(dhgates[t, lo:hi], w_hh_p, dh_new[lo:hi], 0, dh_new.shape[1], s)
        add_live_rows(t, dh_new, dh, lengths, lo, hi)


# Small batches: the hidden units split over threads, as lstm_forward_columns (see lstm.py).


@njit(**JIT)
def gru_forward_columns(data, tid, size, xg, w_parts, jb, b_hn, lengths, reverse, need_grad, out,
                        gates, hn_lin, hbuf, hg):
    """All T steps of all rows, thread tid of size taking the slices of hidden units jb[k] ..
    jb[k+1]-1 for k = tid, tid + size, ... hbuf (2, B, H): hbuf[0] holds h0, hbuf[T % 2] gets
    h_n. w_parts: W_hh^T packed by linalg.pack_weight_slices(W_hh, True, 3, jb). gates, hn_lin as in
    gru_forward_recurrence; hg (B, 3H) scratch, each thread writing its own columns."""
    T, B = xg.shape[0], xg.shape[1]
    H = hbuf.shape[2]
    zero = xg.dtype.type(0)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        cur = hbuf[s % 2]
        nxt = hbuf[(s + 1) % 2]
        for k in range(tid, jb.shape[0] - 1, size):
            j0, j1 = jb[k], jb[k + 1]
            n = j1 - j0
            gate_columns(cur, w_parts, hg, H, 3, j0, j1, s)
            for b in range(B):
                if t < lengths[b]:
                    _gru_forward_row(n, H, xg[t, b, j0:], hg[b, j0:], b_hn[j0:], cur[b, j0:],
                                     gates[ts, b, j0:], hn_lin[ts, b, j0:], out[t, b, j0:])
                    copy_row(out[t, b, j0:], nxt[b, j0:], n)
                else:
                    copy_row(cur[b, j0:], nxt[b, j0:], n)
                    for g in range(3):
                        fill_row(gates[ts, b, g * H + j0:], n, zero)
                    fill_row(hn_lin[ts, b, j0:], n, zero)
                    fill_row(out[t, b, j0:], n, zero)
        barrier(data, size)


@njit(**JIT)
def gru_backward_columns(data, tid, size, grad_out, dh, gates, hn_lin, h0, hs, w_parts, jb,
                         lengths, reverse, dxgates, dhgates, dh_new):
    """gru_backward_recurrence with the hidden units split as in gru_forward_columns: gate
    gradients of each thread's units, a barrier, then its units' columns of the product.
    w_parts: W_hh (3H, H) packed by linalg.pack_weight_slices(W_hh, False, 1, jb)."""
    T, B = gates.shape[0], gates.shape[1]
    H = dh.shape[1]
    zero = gates.dtype.type(0)
    for s in range(T):
        t = s if reverse else T - 1 - s
        for k in range(tid, jb.shape[0] - 1, size):
            j0, j1 = jb[k], jb[k + 1]
            n = j1 - j0
            for b in range(B):
                if t < lengths[b]:
                    hp = _previous_h(t, reverse, hs, h0, lengths, b)
                    _gru_backward_row(n, H, dh[b, j0:], grad_out[t, b, j0:], gates[t, b, j0:],
                                      hn_lin[t, b, j0:], hp[j0:], dxgates[t, b, j0:],
                                      dhgates[t, b, j0:])
                else:
                    for g in range(3):
                        fill_row(dxgates[t, b, g * H + j0:], n, zero)
                        fill_row(dhgates[t, b, g * H + j0:], n, zero)
        barrier(data, size)
        for k in range(tid, jb.shape[0] - 1, size):
            state_gradient_columns(t, dhgates[t], w_parts, dh_new, dh, lengths, jb[k], jb[k + 1],
                                   True, s)
