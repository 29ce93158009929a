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
from .linalg import copy_live_rows, matmul_into


@njit(**JIT)
def lstm_forward_step(t, ts, xg, hg, h, c, lengths, proj, out, gates, cs, hpre):
    """Pointwise part of step t given hg = h_{t-1} W_hh^T (B, 4H). Updates c; updates h unless
    proj (then hpre[ts] gets o * tanh(c) and lstm_project_step finishes the step)."""
    B = xg.shape[1]
    H = c.shape[1]
    zero = xg.dtype.type(0)
    for b in range(B):
        xr = xg[t, b]
        gr = hg[b]
        sg = gates[ts, b]
        cr = cs[ts, b]
        hpr = hpre[ts, b] if proj else out[t, b]
        if t < lengths[b]:
            cb = c[b]
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
                hpr[j] = og * tanh(cn)
            if not proj:
                hb = h[b]
                for j in range(H):
                    hb[j] = hpr[j]
        else:
            for j in range(4 * H):
                sg[j] = zero
            for j in range(H):
                cr[j] = zero
                hpr[j] = zero


@njit(**JIT)
def lstm_project_step(t, hproj, h, lengths, out):
    """Given hproj = hpre[t] W_hr^T (B, P): the new h and out[t] of live sequences."""
    B, P = h.shape
    zero = h.dtype.type(0)
    for b in range(B):
        ob = out[t, b]
        if t < lengths[b]:
            hb = h[b]
            pb = hproj[b]
            for p in range(P):
                ob[p] = pb[p]
                hb[p] = pb[p]
        else:
            for p in range(P):
                ob[p] = zero


@njit(**JIT)
def lstm_forward_recurrence(xg, w_hh_t, w_hr_t, h, c, lengths, reverse, proj, need_grad,
                            out, gates, cs, hpre, hg, hproj):
    """All T steps. h (B, P), c (B, H) hold the initial state and become h_n, c_n.

    w_hh_t (P, 4H) and w_hr_t (H, P) are the transposed weights. gates (Ts, B, 4H), cs and hpre
    (Ts, B, H) receive activated gates, c_t and the unprojected h_t; Ts is T with need_grad,
    else 1 (scratch reused every step). hg (B, 4H) and hproj (B, P) are scratch.
    """
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        matmul_into(h, w_hh_t, hg)
        lstm_forward_step(t, ts, xg, hg, h, c, lengths, proj, out, gates, cs, hpre)
        if proj:
            matmul_into(hpre[ts], w_hr_t, hproj)
            lstm_project_step(t, hproj, h, lengths, out)


@njit(**JIT)
def lstm_backward_dht(t, dh, grad_out, lengths, dht_all):
    """dL/dh_t of every sequence into dht_all[t] (zero for dead steps), for the projection."""
    B, P = dh.shape
    zero = dh.dtype.type(0)
    for b in range(B):
        da = dht_all[t, b]
        if t < lengths[b]:
            for p in range(P):
                da[p] = dh[b, p] + grad_out[t, b, p]
        else:
            for p in range(P):
                da[p] = zero


@njit(**JIT)
def lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates):
    """Gate gradients of step t into dgates[t]; dc becomes dL/dc_{t-1}. Without proj, dL/dh_t is
    dh + grad_out[t]; with proj it is given projected back as dhp (B, H)."""
    B = gates.shape[1]
    H = dc.shape[1]
    one = gates.dtype.type(1)
    zero = gates.dtype.type(0)
    for b in range(B):
        dg = dgates[t, b]
        if t < lengths[b]:
            sg = gates[t, b]
            cr = cs[t, b]
            # The state step t started from (see fastrnn.steps.previous_states).
            if reverse:
                cp = cs[t + 1, b] if t + 1 < lengths[b] else c0[b]
            else:
                cp = cs[t - 1, b] if t > 0 else c0[b]
            dcb = dc[b]
            gb = grad_out[t, b]
            dhb = dh[b]
            dpb = dhp[b]
            for j in range(H):
                if proj:
                    dhpj = dpb[j]
                else:
                    dhpj = dhb[j] + gb[j]
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
        else:
            for j in range(4 * H):
                dg[j] = zero


@njit(**JIT)
def lstm_backward_recurrence(grad_out, dh, dc, gates, cs, c0, w_hh, w_hr, lengths, reverse, proj,
                             dgates, dht_all, dhp, dh_new):
    """All T steps, in the opposite order to forward. dh (B, P), dc (B, H) hold grad_hn,
    grad_cn and become dh0, dc0. w_hh (4H, P), w_hr (P, H) untransposed. With proj, dht_all
    (T, B, P) receives dL/dh_t for dw_hr = dht_all^T hpre (one GEMM, done by the caller).
    dhp (B, H) and dh_new (B, P) are scratch."""
    T = gates.shape[0]
    for s in range(T):
        t = s if reverse else T - 1 - s
        if proj:
            lstm_backward_dht(t, dh, grad_out, lengths, dht_all)
            matmul_into(dht_all[t], w_hr, dhp)
        lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates)
        matmul_into(dgates[t], w_hh, dh_new)
        copy_live_rows(t, dh_new, dh, lengths)
