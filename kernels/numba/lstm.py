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

from . import simd
from .activations import sigmoid, tanh
from .config import JIT
from .linalg import (
    copy_live_rows,
    copy_row,
    fill_row,
    gate_columns,
    gate_panel_1,
    gate_panel_2,
    matmul_packed,
    matmul_packed_in,
    stage_step_inputs,
    state_gradient_columns,
)
from .simd import get, put
from .team import barrier

# Pointwise loops live in small per-row functions (1-D rows in, no batch index; see linalg.py),
# each a vector body and a scalar tail over one per-unit function: `like` (a vector or a
# scalar zero) says which, and simd.get/put then load and store vectors or single elements.


@njit(inline="always")
def _lstm_cells(j, H, xr, cr, hr, sg, csr, need_grad, ai, af, ag, ao):
    """The cell update of unit j (or the vector of units from j) of one row from its four gate
    sums of h_{t-1} W_hh^T (ai .. ao: in registers from lstm_forward_cells' panels, or read back
    from a product buffer): c in place, h_t into hr, the gates and c_t into sg and csr with
    need_grad."""
    ig = sigmoid(get(xr, j, ai) + ai)
    fg = sigmoid(get(xr, H + j, ai) + af)
    gg = tanh(get(xr, 2 * H + j, ai) + ag)
    og = sigmoid(get(xr, 3 * H + j, ai) + ao)
    cn = fg * get(cr, j, ai) + ig * gg
    put(cr, j, cn)
    put(hr, j, og * tanh(cn))
    if need_grad:
        put(sg, j, ig)
        put(sg, H + j, fg)
        put(sg, 2 * H + j, gg)
        put(sg, 3 * H + j, og)
        put(csr, j, cn)


@njit(inline="always")
def _lstm_forward_unit(j, H, xr, gr, sg, cb, cr, hr, like):
    """Unit j (or the units from j, one vector) of _lstm_forward_row: _lstm_cells on the sums
    read back from gr."""
    _lstm_cells(j, H, xr, cb, hr, sg, cr, True, get(gr, j, like), get(gr, H + j, like),
                get(gr, 2 * H + j, like), get(gr, 3 * H + j, like))


@njit(**JIT)
def _lstm_forward_row(n, H, xr, gr, sg, cb, cr, hr):
    """Gates of n hidden units of one sequence into sg, c_t into cb and cr, o * tanh(c_t) into
    hr. Gate k of unit j is at k * H + j in xr, gr and sg (views starting at the first unit)."""
    L = simd.lanes(xr)
    j = 0
    while j + L <= n:
        _lstm_forward_unit(j, H, xr, gr, sg, cb, cr, hr, simd.zeros(xr))
        j += L
    while j < n:
        _lstm_forward_unit(j, H, xr, gr, sg, cb, cr, hr, xr.dtype.type(0))
        j += 1


@njit(inline="always")
def _lstm_forward_unit_inference(j, H, xr, gr, cb, hr, like):
    """Unit j (or a vector of units) of _lstm_forward_row_inference (nothing saved: cb stands in
    for the gate and c_t rows, never written)."""
    _lstm_cells(j, H, xr, cb, hr, cb, cb, False, get(gr, j, like), get(gr, H + j, like),
                get(gr, 2 * H + j, like), get(gr, 3 * H + j, like))


@njit(**JIT)
def _lstm_forward_row_inference(n, H, xr, gr, cb, hr):
    """_lstm_forward_row when nothing is saved for backward: the gates and c_t are not stored
    (five stores fewer per cell)."""
    L = simd.lanes(xr)
    j = 0
    while j + L <= n:
        _lstm_forward_unit_inference(j, H, xr, gr, cb, hr, simd.zeros(xr))
        j += L
    while j < n:
        _lstm_forward_unit_inference(j, H, xr, gr, cb, hr, xr.dtype.type(0))
        j += 1


@njit(**JIT)
def lstm_forward_step(t, need_grad, xg, hg, h, c, lengths, proj, out, gates, cs, hpre, lo, hi):
    """Pointwise part of step t for rows lo..hi-1 given hg = h_{t-1} W_hh^T (B, 4H). Updates c;
    updates h unless proj (then hpre[ts] gets o * tanh(c) and lstm_project_step finishes).
    With need_grad, gates[t], cs[t] and hpre[t] are saved (ts = t); else ts = 0 and gates, cs
    are not written."""
    H = c.shape[1]
    ts = t if need_grad else 0
    zero = xg.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            hr = hpre[ts, b] if proj else out[t, b]
            if need_grad:
                _lstm_forward_row(H, H, xg[t, b], hg[b], gates[ts, b], c[b], cs[ts, b], hr)
            else:
                _lstm_forward_row_inference(H, H, xg[t, b], hg[b], c[b], hr)
            if not proj:
                copy_row(hr, h[b], H)
        elif need_grad:
            fill_row(gates[ts, b], 4 * H, zero)
            fill_row(cs[ts, b], H, zero)
            if proj:
                fill_row(hpre[ts, b], H, zero)
            else:
                fill_row(out[t, b], H, zero)
        elif not proj:
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
def lstm_forward_recurrence(xg, w_hh_tp, w_hr_tp, h, c, lengths, reverse, proj, need_grad,
                            out, gates, cs, hpre, hg, hproj, lo, hi):
    """All T steps of rows lo..hi-1 (rows are independent: threads split the batch).
    h (B, P), c (B, H) hold the initial state and become h_n, c_n.

    w_hh_tp and w_hr_tp are the transposed weights W_hh^T (P, 4H) and W_hr^T (H, P) packed by
    linalg.pack_weight. gates (Ts, B, 4H), cs and hpre
    (Ts, B, H) receive activated gates, c_t and the unprojected h_t; Ts is T with need_grad,
    else 1 (scratch reused every step). hg (B, 4H) and hproj (B, P) are scratch.
    """
    T = xg.shape[0]
    step_bytes = (w_hh_tp.size + (w_hr_tp.size if proj else 0)) * w_hh_tp.itemsize
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        matmul_packed_in(h[lo:hi], w_hh_tp, hg[lo:hi], 0, hg.shape[1], step_bytes, s)
        lstm_forward_step(t, need_grad, xg, hg, h, c, lengths, proj, out, gates, cs, hpre, lo, hi)
        if proj:
            matmul_packed_in(hpre[ts, lo:hi], w_hr_tp, hproj[lo:hi], 0, hproj.shape[1],
                             step_bytes, s)
            lstm_project_step(t, hproj, h, lengths, out, lo, hi)


@njit(**JIT)
def lstm_forward_fused(x, w_tp, bias_rows, h, c, lengths, reverse, need_grad, out, gates, cs,
                       xh, pre, lens_t, lo, hi):
    """lstm_forward_recurrence (without projection) with the input projection inside: each
    step's gate pre-activations come from one product [x_t, h_{t-1}] @ [W_ih, W_hh]^T, so the
    projection of all steps is never written out and read back. w_tp: [W_ih, W_hh]^T
    (I + H, 4H) packed by linalg.pack_weight_concat_t; bias_rows (B, 4H): b_ih + b_hh in every
    row.
    Scratch: xh (B, I + H), pre (1, B, 4H), lens_t (B,) int64. The pointwise step is
    lstm_forward_step's, run on one-step views (step t as step 0, lengths counted from t)."""
    T = x.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        stage_step_inputs(t, x, h, xh, lengths, lens_t, lo, hi)
        matmul_packed(xh[lo:hi], w_tp, pre[0, lo:hi], 0, pre.shape[2], s)
        # (no projection: the hpre argument is never read, cs stands in for it)
        lstm_forward_step(0, need_grad, pre, bias_rows, h, c, lens_t, False, out[t:t + 1],
                          gates[ts:ts + 1], cs[ts:ts + 1], cs[ts:ts + 1], lo, hi)


@njit(**JIT)
def _lstm_cells_1(t, ts, b, xg, w_gp, h, c, need_grad, out, gates, cs, backwards):
    """Step t of live row b: every panel's product, then its units' cell update. h[b] is read
    throughout and becomes h_t at the end (out[t, b] holds h_t meanwhile)."""
    H = c.shape[1]
    L = simd.lanes(xg)
    panels = H // L
    for q in range(panels):
        p = panels - 1 - q if backwards else q
        ai, af, ag, ao = gate_panel_1(h, b, w_gp, p * 4 * L * H, H, L)
        _lstm_cells(p * L, H, xg[t, b], c[b], out[t, b], gates[ts, b], cs[ts, b], need_grad,
                    ai, af, ag, ao)
    copy_row(out[t, b], h[b], H)


@njit(**JIT)
def _lstm_cells_2(t, ts, b, xg, w_gp, h, c, need_grad, out, gates, cs, backwards):
    """_lstm_cells_1 for live rows b and b + 1, reading each panel once for both."""
    H = c.shape[1]
    L = simd.lanes(xg)
    panels = H // L
    for q in range(panels):
        p = panels - 1 - q if backwards else q
        a0, a1, a2, a3, b0, b1, b2, b3 = gate_panel_2(h, b, w_gp, p * 4 * L * H, H, L)
        j = p * L
        _lstm_cells(j, H, xg[t, b], c[b], out[t, b], gates[ts, b], cs[ts, b], need_grad,
                    a0, a1, a2, a3)
        _lstm_cells(j, H, xg[t, b + 1], c[b + 1], out[t, b + 1], gates[ts, b + 1],
                    cs[ts, b + 1], need_grad, b0, b1, b2, b3)
    copy_row(out[t, b], h[b], H)
    copy_row(out[t, b + 1], h[b + 1], H)


@njit(**JIT)
def _lstm_dead_row(t, ts, b, need_grad, out, gates, cs):
    H = cs.shape[2]
    zero = out.dtype.type(0)
    fill_row(out[t, b], H, zero)
    if need_grad:
        fill_row(gates[ts, b], 4 * H, zero)
        fill_row(cs[ts, b], H, zero)


@njit(**JIT)
def lstm_forward_cells(xg, w_gp, h, c, lengths, reverse, need_grad, out, gates, cs, lo, hi):
    """lstm_forward_recurrence (without projection) for a few rows, with each step's cell
    update done on the product's accumulators: w_gp is W_hh^T packed by
    linalg.pack_gate_panels (H a multiple of the vector lanes), so one panel's sums are all four
    gates of `lanes` units, activated straight from the registers instead of being stored as a
    (B, 4H) product and read back by a separate pointwise pass (measured: benchmarks/
    gate_panels.py). Rows go two at a time (each panel read once for both), the last one alone;
    a row whose partner is dead at step t goes alone. Same arguments and results as
    lstm_forward_recurrence otherwise; odd steps take the panels last to first (see
    linalg.matmul_packed)."""
    T = xg.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        backwards = s % 2 == 1
        b = lo
        while b < hi:
            live = t < lengths[b]
            if b + 1 < hi and live and t < lengths[b + 1]:
                _lstm_cells_2(t, ts, b, xg, w_gp, h, c, need_grad, out, gates, cs, backwards)
                b += 2
                continue
            if live:
                _lstm_cells_1(t, ts, b, xg, w_gp, h, c, need_grad, out, gates, cs, backwards)
            else:
                _lstm_dead_row(t, ts, b, need_grad, out, gates, cs)
            b += 1


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


@njit(inline="always")
def _lstm_backward_unit(j, H, dht, sg, cr, cp, dcb, dg, like):
    """Gate gradients of unit j (or a vector of units) given dL/dh_t = dht; dcb[j] becomes
    dL/dc_{t-1}."""
    one = sg.dtype.type(1)
    f, g, o = H + j, 2 * H + j, 3 * H + j
    ig = get(sg, j, like)
    fg = get(sg, f, like)
    gg = get(sg, g, like)
    og = get(sg, o, like)
    tc = tanh(get(cr, j, like))
    dct = get(dcb, j, like) + dht * og * (one - tc * tc)
    put(dg, j, dct * gg * ig * (one - ig))
    put(dg, f, dct * get(cp, j, like) * fg * (one - fg))
    put(dg, g, dct * ig * (one - gg * gg))
    put(dg, o, dht * tc * og * (one - og))
    put(dcb, j, dct * fg)


@njit(**JIT)
def _lstm_backward_row(n, H, dhr, gr, sg, cr, cp, dcb, dg):
    """Gate gradients of n hidden units of one sequence, dL/dh_t = dhr + gr; dcb becomes
    dL/dc_{t-1}. Views start at the first unit, as in _lstm_forward_row."""
    L = simd.lanes(sg)
    j = 0
    while j + L <= n:
        like = simd.zeros(sg)
        _lstm_backward_unit(j, H, get(dhr, j, like) + get(gr, j, like), sg, cr, cp, dcb, dg, like)
        j += L
    while j < n:
        _lstm_backward_unit(j, H, dhr[j] + gr[j], sg, cr, cp, dcb, dg, sg.dtype.type(0))
        j += 1


@njit(**JIT)
def _lstm_backward_row_proj(H, dpb, sg, cr, cp, dcb, dg):
    """As _lstm_backward_row with dL/dh_t given whole (projected back) in dpb."""
    L = simd.lanes(sg)
    j = 0
    while j + L <= H:
        like = simd.zeros(sg)
        _lstm_backward_unit(j, H, get(dpb, j, like), sg, cr, cp, dcb, dg, like)
        j += L
    while j < H:
        _lstm_backward_unit(j, H, dpb[j], sg, cr, cp, dcb, dg, sg.dtype.type(0))
        j += 1


@njit(**JIT)
def _previous_c(t, reverse, cs, c0, lengths, b):
    """The cell state step t of row b started from (see fastrnn.steps.previous_states)."""
    if reverse:
        return cs[t + 1, b] if t + 1 < lengths[b] else c0[b]
    return cs[t - 1, b] if t > 0 else c0[b]


@njit(**JIT)
def lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates,
                       lo, hi):
    """Gate gradients of step t, rows lo..hi-1, into dgates[t]; dc becomes dL/dc_{t-1}. Without
    proj, dL/dh_t is dh + grad_out[t]; with proj it is given projected back as dhp (B, H)."""
    H = dc.shape[1]
    zero = gates.dtype.type(0)
    for b in range(lo, hi):
        if t < lengths[b]:
            cp = _previous_c(t, reverse, cs, c0, lengths, b)
            if proj:
                _lstm_backward_row_proj(H, dhp[b], gates[t, b], cs[t, b], cp, dc[b], dgates[t, b])
            else:
                _lstm_backward_row(H, H, dh[b], grad_out[t, b], gates[t, b], cs[t, b], cp,
                                   dc[b], dgates[t, b])
        else:
            fill_row(dgates[t, b], 4 * H, zero)


@njit(**JIT)
def lstm_backward_recurrence(grad_out, dh, dc, gates, cs, c0, w_hh_p, w_hr_p, lengths, reverse,
                             proj, dgates, dht_all, dhp, dh_new, lo, hi):
    """All T steps of rows lo..hi-1, in the opposite order to forward. dh (B, P), dc (B, H)
    hold grad_hn, grad_cn and become dh0, dc0. w_hh_p, w_hr_p: W_hh (4H, P) and W_hr (P, H)
    packed by linalg.pack_weight. With proj, dht_all
    (T, B, P) receives dL/dh_t for dw_hr = dht_all^T hpre (one GEMM, done by the caller).
    dhp (B, H) and dh_new (B, P) are scratch."""
    T = gates.shape[0]
    step_bytes = (w_hh_p.size + (w_hr_p.size if proj else 0)) * w_hh_p.itemsize
    for s in range(T):
        t = s if reverse else T - 1 - s
        if proj:
            lstm_backward_dht(t, dh, grad_out, lengths, dht_all, lo, hi)
            matmul_packed_in(dht_all[t, lo:hi], w_hr_p, dhp[lo:hi], 0, dhp.shape[1], step_bytes,
                             s)
        lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates,
                           lo, hi)
        matmul_packed_in(dgates[t, lo:hi], w_hh_p, dh_new[lo:hi], 0, dh_new.shape[1],
                         step_bytes, s)
        copy_live_rows(t, dh_new, dh, lengths, lo, hi)


# Small batches: the threads split the hidden units instead of the rows. Each thread computes the
# gate columns of its slices of units for every row, and all of them read the whole previous
# state, so each step ends with a barrier (kernels/numba/team.py). Without projection only.


@njit(**JIT)
def lstm_forward_columns(data, tid, size, xg, w_parts, jb, c, lengths, reverse, need_grad, out,
                         gates, cs, hbuf, hg):
    """All T steps of all rows; thread tid of size takes the slices of hidden units jb[k] ..
    jb[k+1]-1 for k = tid, tid + size, ... hbuf (2, B, H): hbuf[0] holds h0, hbuf[T % 2] gets
    h_n (double-buffered: a step reads one while writing the other). c (B, H) holds c0 and becomes
    c_n. w_parts: W_hh^T packed by linalg.pack_weight_slices(W_hh, True, 4, jb). gates, cs as in
    lstm_forward_recurrence; hg (B, 4H) scratch, each thread writing its own columns."""
    T, B = xg.shape[0], xg.shape[1]
    H = c.shape[1]
    zero = xg.dtype.type(0)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ts = t if need_grad else 0
        cur = hbuf[s % 2]
        nxt = hbuf[(s + 1) % 2]
        for k in range(tid, jb.shape[0] - 1, size):
            j0, j1 = jb[k], jb[k + 1]
            n = j1 - j0
            gate_columns(cur, w_parts, hg, H, 4, j0, j1, s)
            for b in range(B):
                if t < lengths[b]:
                    if need_grad:
                        _lstm_forward_row(n, H, xg[t, b, j0:], hg[b, j0:], gates[ts, b, j0:],
                                          c[b, j0:], cs[ts, b, j0:], nxt[b, j0:])
                    else:
                        _lstm_forward_row_inference(n, H, xg[t, b, j0:], hg[b, j0:], c[b, j0:],
                                                    nxt[b, j0:])
                    copy_row(nxt[b, j0:], out[t, b, j0:], n)
                else:
                    copy_row(cur[b, j0:], nxt[b, j0:], n)
                    if need_grad:
                        for g in range(4):
                            fill_row(gates[ts, b, g * H + j0:], n, zero)
                        fill_row(cs[ts, b, j0:], n, zero)
                    fill_row(out[t, b, j0:], n, zero)
        barrier(data, size)


@njit(**JIT)
def lstm_backward_columns(data, tid, size, grad_out, dh, dc, gates, cs, c0, w_parts, jb, lengths,
                          reverse, dgates, dh_new):
    """lstm_backward_recurrence (without projection) with the hidden units split as in
    lstm_forward_columns: each thread computes the gate gradients of its units, then (after a
    barrier: the product needs every gate) its units' columns of dL/dh_{t-1}. w_parts: W_hh
    (4H, H) packed by linalg.pack_weight_slices(W_hh, False, 1, jb)."""
    T, B = gates.shape[0], gates.shape[1]
    H = dc.shape[1]
    zero = gates.dtype.type(0)
    for s in range(T):
        t = s if reverse else T - 1 - s
        for k in range(tid, jb.shape[0] - 1, size):
            j0, j1 = jb[k], jb[k + 1]
            n = j1 - j0
            for b in range(B):
                if t < lengths[b]:
                    cp = _previous_c(t, reverse, cs, c0, lengths, b)
                    _lstm_backward_row(n, H, dh[b, j0:], grad_out[t, b, j0:], gates[t, b, j0:],
                                       cs[t, b, j0:], cp[j0:], dc[b, j0:], dgates[t, b, j0:])
                else:
                    for g in range(4):
                        fill_row(dgates[t, b, g * H + j0:], n, zero)
        barrier(data, size)
        for k in range(tid, jb.shape[0] - 1, size):
            state_gradient_columns(t, dgates[t], w_parts, dh_new, dh, lengths, jb[k], jb[k + 1],
                                   False, s)
