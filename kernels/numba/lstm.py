"""LSTM forward and backward recurrences (one layer, one direction, time-major).

Step t of sequence b is live when t < lengths[b], in both directions; a dead step keeps the
state, writes zeros to ``out`` and gets zero gate gradients. Saved entries of dead steps are
zeroed so that later GEMMs over them (dw_hr) stay finite.

Each direction has a per-step pointwise kernel (``*_step``), given the recurrent product of that
step, and a whole-sequence kernel (``*_recurrence``) that loops over time with the compiled
product: one call, no per-step overhead, for small sizes. For large sizes the launcher loops in
Python with torch.mm and the step kernels.
"""

from numba import njit

from .activations import sigmoid, tanh
from .config import JIT
from .linalg import copy_live_rows, copy_row, fill_row, matmul_into


# Pointwise loops live in small per-row functions (1-D rows in, no batch index); see linalg.py.


@njit(**JIT)
def _lstm_forward_row(H, xr, gr, sg, cb, cr, hr):
    """Gates of one sequence into sg, c_t into cb and cr, o * tanh(c_t) into hr."""
    for j in range(H):
        ig = sigmoid(xr[j] + gr[j])
        fg = sigmoid(xr[H + j] + gr[H + j])
        gg = tanh(xr[2 * H + j] + gr[2 * H + j])
        og = sigmoid(xr[3 * H + j] + gr[3 * H + j])
        cn = fg * cb[j] + ig * gg
        sg[j] = ig
        sg[H + j] = fg
        sg[2 * H + j] = gg
        sg[3 * H + j] = og
        cr[j] = cn
        cb[j] = cn
        hr[j] = og * tanh(cn)


@njit(**JIT)
def lstm_forward_step(t, ts, xg, hg, h, c, lengths, proj, out, gates, cs, hpre, lo, hi):
    """Pointwise part of step t for rows lo..hi-1 given hg = h_{t-1} W_hh^T (B, 4H). Updates c;
    updates h unless proj (then hpre[ts] gets o * tanh(c) and lstm_project_step finishes)."""
    H = c.shape[1]
    zero = xg.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            if proj:
                _lstm_forward_row(H, xg[t, b], hg[b], gates[ts, b], c[b], cs[ts, b], hpre[ts, b])
            else:
                ob = out[t, b]
                _lstm_forward_row(H, xg[t, b], hg[b], gates[ts, b], c[b], cs[ts, b], ob)
                copy_row(ob, h[b], H)
        else:
            fill_row(gates[ts, b], 4 * H, zero)
            fill_row(cs[ts, b], H, zero)
            if proj:
                fill_row(hpre[ts, b], H, zero)
            else:
                fill_row(out[t, b], H, zero)


@njit(**JIT)
def lstm_project_step(t, hproj, h, lengths, out, lo, hi):
    """Given hproj = hpre[t] W_hr^T (B, P): the new h and out[t] of live rows in lo..hi-1."""
    P = h.shape[1]
    zero = h.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            copy_row(hproj[b], out[t, b], P)
            copy_row(hproj[b], h[b], P)
        else:
            fill_row(out[t, b], P, zero)


@njit(**JIT)
def lstm_forward_recurrence(xg, w_hh_t, w_hr_t, h, c, lengths, reverse, proj, need_grad,
                            out, gates, cs, hpre, hg, hproj, lo, hi):
    """All T steps of rows lo..hi-1 (rows are independent: threads split the batch).
    h (B, P), c (B, H) hold the initial state and become h_n, c_n.

    w_hh_t (P, 4H) and w_hr_t (H, P) are the transposed weights. gates (Ts, B, 4H), cs and hpre
    (Ts, B, H) receive activated gates, c_t and the unprojected h_t; Ts is T with need_grad,
    else 1 (scratch reused every step). hg (B, 4H) and hproj (B, P) are scratch.
    """
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        matmul_into(h[lo:hi], w_hh_t, hg[lo:hi])
        lstm_forward_step(t, ts, xg, hg, h, c, lengths, proj, out, gates, cs, hpre, lo, hi)
        if proj:
            matmul_into(hpre[ts, lo:hi], w_hr_t, hproj[lo:hi])
            lstm_project_step(t, hproj, h, lengths, out, lo, hi)


@njit(**JIT)
def _add_rows(x, y, dst, n):
    for j in range(n):
        dst[j] = x[j] + y[j]


@njit(**JIT)
def lstm_backward_dht(t, dh, grad_out, lengths, dht_all, lo, hi):
    """dL/dh_t of rows lo..hi-1 into dht_all[t] (zero for dead steps), for the projection."""
    P = dh.shape[1]
    zero = dh.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            _add_rows(dh[b], grad_out[t, b], dht_all[t, b], P)
        else:
            fill_row(dht_all[t, b], P, zero)


@njit(inline="always", **JIT)
def _lstm_backward_cell(j, H, dhpj, sg, cr, cp, dcb, dg):
    """Gate gradients of cell j given dL/dh_t = dhpj; dcb[j] becomes dL/dc_{t-1}."""
    one = sg.dtype.type(1)
    ig = sg[j]
    fg = sg[H + j]
    gg = sg[2 * H + j]
    og = sg[3 * H + j]
    tc = tanh(cr[j])
    dct = dcb[j] + dhpj * og * (one - tc * tc)
    dg[j] = dct * gg * ig * (one - ig)
    dg[H + j] = dct * cp[j] * fg * (one - fg)
    dg[2 * H + j] = dct * ig * (one - gg * gg)
    dg[3 * H + j] = dhpj * tc * og * (one - og)
    dcb[j] = dct * fg


@njit(**JIT)
def _lstm_backward_row(H, dhr, gr, sg, cr, cp, dcb, dg):
    """Gate gradients of one sequence, dL/dh_t = dhr + gr; dcb becomes dL/dc_{t-1}."""
    for j in range(H):
        _lstm_backward_cell(j, H, dhr[j] + gr[j], sg, cr, cp, dcb, dg)


@njit(**JIT)
def _lstm_backward_row_proj(H, dpb, sg, cr, cp, dcb, dg):
    """As _lstm_backward_row with dL/dh_t given whole (projected back) in dpb."""
    for j in range(H):
        _lstm_backward_cell(j, H, dpb[j], sg, cr, cp, dcb, dg)


@njit(**JIT)
def lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates,
                       lo, hi):
    """Gate gradients of step t, rows lo..hi-1, into dgates[t]; dc becomes dL/dc_{t-1}. Without
    proj, dL/dh_t is dh + grad_out[t]; with proj it is given projected back as dhp (B, H)."""
    H = dc.shape[1]
    zero = gates.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            # The state step t started from (see fastrnn.steps.previous_states).
            if reverse:
                cp = cs[t + 1, b] if t + 1 < lengths[b] else c0[b]
            else:
                cp = cs[t - 1, b] if t > 0 else c0[b]
            if proj:
                _lstm_backward_row_proj(H, dhp[b], gates[t, b], cs[t, b], cp, dc[b], dgates[t, b])
            else:
                _lstm_backward_row(H, dh[b], grad_out[t, b], gates[t, b], cs[t, b], cp, dc[b],
                                   dgates[t, b])
        else:
            fill_row(dgates[t, b], 4 * H, zero)


@njit(**JIT)
def lstm_backward_recurrence(grad_out, dh, dc, gates, cs, c0, w_hh, w_hr, lengths, reverse, proj,
                             dgates, dht_all, dhp, dh_new, lo, hi):
    """All T steps of rows lo..hi-1, in the opposite order to forward. dh (B, P), dc (B, H)
    hold grad_hn, grad_cn and become dh0, dc0. w_hh (4H, P), w_hr (P, H) untransposed. With proj, dht_all
    (T, B, P) receives dL/dh_t for dw_hr = dht_all^T hpre (one GEMM, done by the caller).
    dhp (B, H) and dh_new (B, P) are scratch."""
    T = gates.shape[0]
    for s in range(T):
        t = s if reverse else T - 1 - s
        if proj:
            lstm_backward_dht(t, dh, grad_out, lengths, dht_all, lo, hi)
            matmul_into(dht_all[t, lo:hi], w_hr, dhp[lo:hi])
        lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates,
                           lo, hi)
        matmul_into(dgates[t, lo:hi], w_hh, dh_new[lo:hi])
        copy_live_rows(t, dh_new, dh, lengths, lo, hi)
