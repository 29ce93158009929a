"""Strategy "step": one launch per time step, any hidden size.

Forward: program (batch tile, hidden tile) computes h_{t-1} W_hh^T for the G gates of its hidden
tile (tl.dot, K-loop over P), adds the precomputed input projection, applies the gate epilogue
and updates the state. Every program reads the whole previous h, so h is double-buffered
(h_in -> h_out) between launches; c is read and written only by its owner, so it is in place.

Backward: the launch for step t first finishes the previous step's dh (dgates[t'] @ W_hh for its
tile: the matmul is "lazy", done by the next launch, so one launch per step suffices), then does
the pointwise gate backward of step t. ``dh_buf`` carries the part of dh that is not a matmul:
0 (LSTM/RNN) or dh_t * z (GRU) for live rows, the old carry for dead rows. dgates rows of dead
steps are exactly zero, so adding dgates[t'] @ W_hh to every row is exact for them.

Cell codes (constexpr CELL): 0 LSTM, 1 GRU, 2 RNN tanh, 3 RNN relu. G gates: 4, 3, 1, 1.
Offsets that scale with T*B*H are formed in int64.
"""

import triton
import triton.language as tl

from .activations import mm, relu, sigmoid, tanh


@triton.jit
def _live_rows(len_ptr, offs_b, mb, t, HAS_LEN: tl.constexpr):
    # (BLOCK_B, 1) bool: step t is live for sequence b when t < lengths[b].
    if HAS_LEN:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)
        live = (t < L)[:, None]
    else:
        live = (offs_b >= 0)[:, None]
    return live


@triton.jit(do_not_specialize=["t", "hp_t"])
def fwd_step_kernel(
    xg_ptr, w_ptr, bhn_ptr, h_in_ptr, h_out_ptr, c_ptr, len_ptr,
    out_ptr, gates_ptr, aux_ptr, hp_ptr, hp_t,
    t, B, H, P,
    CELL: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr, HAS_BHN: tl.constexpr,
    PROJ: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_j = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = pid_j * BLOCK_H + tl.arange(0, BLOCK_H)
    mb = offs_b < B
    mj = offs_j < H
    m2 = mb[:, None] & mj[None, :]
    brow = offs_b.to(tl.int64)
    wrow = offs_j.to(tl.int64)[None, :]

    # h_{t-1} W_hh^T for the gates of this hidden tile; W_hh is (G*H, P), row g*H + j.
    acc0 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc1 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc2 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc3 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    for k0 in range(0, P, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < P
        a = tl.load(h_in_ptr + brow[:, None] * P + offs_k[None, :],
                    mask=mb[:, None] & mk[None, :], other=0.0)
        wm = mk[:, None] & mj[None, :]
        acc0 += mm(a, tl.load(w_ptr + wrow * P + offs_k[:, None], mask=wm,
                              other=0.0).to(tl.float32))
        if G > 1:
            acc1 += mm(a, tl.load(w_ptr + (wrow + H) * P + offs_k[:, None], mask=wm,
                                  other=0.0).to(tl.float32))
        if G > 2:
            acc2 += mm(a, tl.load(w_ptr + (wrow + 2 * H) * P + offs_k[:, None], mask=wm,
                                  other=0.0).to(tl.float32))
        if G > 3:
            acc3 += mm(a, tl.load(w_ptr + (wrow + 3 * H) * P + offs_k[:, None], mask=wm,
                                  other=0.0).to(tl.float32))

    live = _live_rows(len_ptr, offs_b, mb, t, HAS_LEN)
    trow = (t * B + offs_b).to(tl.int64)
    xidx = trow[:, None] * (G * H) + offs_j[None, :]
    sidx = brow[:, None] * H + offs_j[None, :]          # (B, H) state tile
    aidx = trow[:, None] * H + offs_j[None, :]          # (T, B, H) saved tile

    if CELL == 0:
        i = sigmoid(acc0 + tl.load(xg_ptr + xidx, mask=m2, other=0.0).to(tl.float32))
        f = sigmoid(acc1 + tl.load(xg_ptr + xidx + H, mask=m2, other=0.0).to(tl.float32))
        g = tanh(acc2 + tl.load(xg_ptr + xidx + 2 * H, mask=m2, other=0.0).to(tl.float32))
        o = sigmoid(acc3 + tl.load(xg_ptr + xidx + 3 * H, mask=m2, other=0.0).to(tl.float32))
        c_prev = tl.load(c_ptr + sidx, mask=m2, other=0.0)
        c_new = f * c_prev + i * g
        h_new = o * tanh(c_new)
        tl.store(c_ptr + sidx, tl.where(live, c_new, c_prev), mask=m2)
        if SAVE:
            tl.store(gates_ptr + xidx, i, mask=m2)
            tl.store(gates_ptr + xidx + H, f, mask=m2)
            tl.store(gates_ptr + xidx + 2 * H, g, mask=m2)
            tl.store(gates_ptr + xidx + 3 * H, o, mask=m2)
            tl.store(aux_ptr + aidx, c_new, mask=m2)
    elif CELL == 1:
        hn = acc2
        if HAS_BHN:
            hn += tl.load(bhn_ptr + offs_j, mask=mj, other=0.0).to(tl.float32)[None, :]
        r = sigmoid(acc0 + tl.load(xg_ptr + xidx, mask=m2, other=0.0).to(tl.float32))
        z = sigmoid(acc1 + tl.load(xg_ptr + xidx + H, mask=m2, other=0.0).to(tl.float32))
        n = tanh(tl.load(xg_ptr + xidx + 2 * H, mask=m2, other=0.0).to(tl.float32) + r * hn)
        h_own = tl.load(h_in_ptr + brow[:, None] * P + offs_j[None, :], mask=m2, other=0.0)
        h_new = (1.0 - z) * n + z * h_own
        if SAVE:
            tl.store(gates_ptr + xidx, r, mask=m2)
            tl.store(gates_ptr + xidx + H, z, mask=m2)
            tl.store(gates_ptr + xidx + 2 * H, n, mask=m2)
            tl.store(aux_ptr + aidx, hn, mask=m2)
    elif CELL == 2:
        h_new = tanh(acc0 + tl.load(xg_ptr + xidx, mask=m2, other=0.0).to(tl.float32))
    else:
        h_new = relu(acc0 + tl.load(xg_ptr + xidx, mask=m2, other=0.0).to(tl.float32))

    if PROJ:
        # The projection h = hp W_hr^T needs every hidden tile: fwd_proj_kernel does it next.
        hp_row = (hp_t * B + offs_b).to(tl.int64)
        tl.store(hp_ptr + hp_row[:, None] * H + offs_j[None, :], h_new, mask=m2)
    else:
        # P == H here: this program owns h[:, tile] of the next buffer.
        h_prev = tl.load(h_in_ptr + brow[:, None] * P + offs_j[None, :], mask=m2, other=0.0)
        tl.store(h_out_ptr + brow[:, None] * P + offs_j[None, :], tl.where(live, h_new, h_prev),
                 mask=m2)
        tl.store(out_ptr + trow[:, None] * P + offs_j[None, :],
                 tl.where(live, h_new, 0.0).to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit(do_not_specialize=["t", "hp_t"])
def fwd_proj_kernel(
    hp_ptr, hp_t, wr_ptr, h_in_ptr, h_out_ptr, len_ptr, out_ptr,
    t, B, H, P,
    HAS_LEN: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # LSTM projection of step t: h = hp W_hr^T (W_hr is (P, H)), then the live/dead update.
    pid_b = tl.program_id(0)
    pid_p = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mb = offs_b < B
    mp = offs_p < P
    m2 = mb[:, None] & mp[None, :]
    brow = offs_b.to(tl.int64)
    hp_row = (hp_t * B + offs_b).to(tl.int64)
    acc = tl.zeros((BLOCK_B, BLOCK_P), tl.float32)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < H
        a = tl.load(hp_ptr + hp_row[:, None] * H + offs_k[None, :],
                    mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(wr_ptr + offs_p.to(tl.int64)[None, :] * H + offs_k[:, None],
                    mask=mk[:, None] & mp[None, :], other=0.0).to(tl.float32)
        acc += mm(a, w)
    live = _live_rows(len_ptr, offs_b, mb, t, HAS_LEN)
    trow = (t * B + offs_b).to(tl.int64)
    h_prev = tl.load(h_in_ptr + brow[:, None] * P + offs_p[None, :], mask=m2, other=0.0)
    tl.store(h_out_ptr + brow[:, None] * P + offs_p[None, :], tl.where(live, acc, h_prev), mask=m2)
    tl.store(out_ptr + trow[:, None] * P + offs_p[None, :],
             tl.where(live, acc, 0.0).to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit(do_not_specialize=["t", "tp", "k_len"])
def bwd_dh_kernel(
    go_ptr, dh_ptr, dgh_ptr, w_ptr, len_ptr, dht_ptr, dht_all_ptr, dh0_ptr,
    t, tp, k_len, B, P, GH,
    HAS_LEN: tl.constexpr, FINAL: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # dh_in = dh_buf + dgh[tp] @ W_hh for a (batch, P) tile (k_len = 0 when there is no tp).
    # FINAL: that is dh0. Otherwise (LSTM projection) form dh_t = dh_in + live * grad_out[t]
    # for the projection backward, keep it (masked) for dW_hr, and reset the carry.
    pid_b = tl.program_id(0)
    pid_p = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mb = offs_b < B
    mp = offs_p < P
    m2 = mb[:, None] & mp[None, :]
    brow = offs_b.to(tl.int64)
    sidx = brow[:, None] * P + offs_p[None, :]
    dh_in = tl.load(dh_ptr + sidx, mask=m2, other=0.0)
    prow = (tp * B + offs_b).to(tl.int64)
    for k0 in range(0, k_len, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < GH
        a = tl.load(dgh_ptr + prow[:, None] * GH + offs_k[None, :],
                    mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(w_ptr + offs_k.to(tl.int64)[:, None] * P + offs_p[None, :],
                    mask=mk[:, None] & mp[None, :], other=0.0).to(tl.float32)
        dh_in += mm(a, w)
    if FINAL:
        tl.store(dh0_ptr + sidx, dh_in.to(dh0_ptr.dtype.element_ty), mask=m2)
    else:
        live = _live_rows(len_ptr, offs_b, mb, t, HAS_LEN)
        trow = (t * B + offs_b).to(tl.int64)
        tidx = trow[:, None] * P + offs_p[None, :]
        go = tl.load(go_ptr + tidx, mask=m2, other=0.0).to(tl.float32)
        dh_t = dh_in + tl.where(live, go, 0.0)
        tl.store(dht_ptr + sidx, dh_t, mask=m2)
        tl.store(dht_all_ptr + tidx, tl.where(live, dh_t, 0.0), mask=m2)
        tl.store(dh_ptr + sidx, tl.where(live, 0.0, dh_in), mask=m2)


@triton.jit(do_not_specialize=["t", "tp", "k_len", "T"])
def bwd_step_kernel(
    go_ptr, dh_ptr, dc_ptr, dg_ptr, dgh_ptr, w_ptr, dht_ptr,
    gates_ptr, aux_ptr, out_ptr, init_ptr, len_ptr,
    t, tp, k_len, T, B, H, P,
    CELL: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr, REVERSE: tl.constexpr,
    PROJ: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Backward of step t for a (batch, hidden) tile. Without projection it first completes dh
    # (carry + dgh[tp] @ W_hh + live * grad_out[t]); with projection dh_t comes from
    # bwd_dh_kernel and this kernel forms dhp = dh_t @ W_hr (w_ptr is then W_hr).
    pid_b = tl.program_id(0)
    pid_j = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = pid_j * BLOCK_H + tl.arange(0, BLOCK_H)
    mb = offs_b < B
    mj = offs_j < H
    m2 = mb[:, None] & mj[None, :]
    brow = offs_b.to(tl.int64)
    sidx = brow[:, None] * H + offs_j[None, :]
    live = _live_rows(len_ptr, offs_b, mb, t, HAS_LEN)
    trow = (t * B + offs_b).to(tl.int64)
    aidx = trow[:, None] * H + offs_j[None, :]
    gidx = trow[:, None] * (G * H) + offs_j[None, :]

    if PROJ:
        dh_in = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)  # unused: the carry lives in bwd_dh_kernel
        dh_t = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
        for k0 in range(0, P, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mk = offs_k < P
            a = tl.load(dht_ptr + brow[:, None] * P + offs_k[None, :],
                        mask=mb[:, None] & mk[None, :], other=0.0)
            w = tl.load(w_ptr + offs_k.to(tl.int64)[:, None] * H + offs_j[None, :],
                        mask=mk[:, None] & mj[None, :], other=0.0).to(tl.float32)
            dh_t += mm(a, w)
    else:
        dh_in = tl.load(dh_ptr + sidx, mask=m2, other=0.0)
        prow = (tp * B + offs_b).to(tl.int64)
        GH = G * H
        for k0 in range(0, k_len, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mk = offs_k < GH
            a = tl.load(dgh_ptr + prow[:, None] * GH + offs_k[None, :],
                        mask=mb[:, None] & mk[None, :], other=0.0)
            w = tl.load(w_ptr + offs_k.to(tl.int64)[:, None] * P + offs_j[None, :],
                        mask=mk[:, None] & mj[None, :], other=0.0).to(tl.float32)
            dh_in += mm(a, w)
        go = tl.load(go_ptr + aidx, mask=m2, other=0.0).to(tl.float32)  # P == H
        dh_t = dh_in + tl.where(live, go, 0.0)

    # The state this step started from: the saved state of the step before it in walk order,
    # if that step was live, else the initial state (reverse: steps t >= length come first).
    if REVERSE:
        t_prev = t + 1
    else:
        t_prev = t - 1
    # Per-row vectors: the interpreter rejects masks built from scalar booleans.
    tpv = offs_b * 0 + t_prev
    pvb = (tpv >= 0) & (tpv < T)
    if HAS_LEN:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)
        pvb = pvb & (tpv < L)
    pvb = pvb[:, None]
    t_prev = tl.minimum(tl.maximum(t_prev, 0), T - 1)
    pidx = (t_prev * B + offs_b).to(tl.int64)[:, None] * H + offs_j[None, :]

    if CELL == 0:
        i = tl.load(gates_ptr + gidx, mask=m2, other=0.0)
        f = tl.load(gates_ptr + gidx + H, mask=m2, other=0.0)
        g = tl.load(gates_ptr + gidx + 2 * H, mask=m2, other=0.0)
        o = tl.load(gates_ptr + gidx + 3 * H, mask=m2, other=0.0)
        tc = tanh(tl.load(aux_ptr + aidx, mask=m2, other=0.0))
        c_prev = tl.where(pvb, tl.load(aux_ptr + pidx, mask=m2 & pvb, other=0.0),
                          tl.load(init_ptr + sidx, mask=m2, other=0.0).to(tl.float32))
        dc_in = tl.load(dc_ptr + sidx, mask=m2, other=0.0)
        dc_t = dc_in + dh_t * o * (1.0 - tc * tc)
        d_i = tl.where(live, dc_t * g * i * (1.0 - i), 0.0)
        d_f = tl.where(live, dc_t * c_prev * f * (1.0 - f), 0.0)
        d_g = tl.where(live, dc_t * i * (1.0 - g * g), 0.0)
        d_o = tl.where(live, dh_t * tc * o * (1.0 - o), 0.0)
        tl.store(dg_ptr + gidx, d_i, mask=m2)
        tl.store(dg_ptr + gidx + H, d_f, mask=m2)
        tl.store(dg_ptr + gidx + 2 * H, d_g, mask=m2)
        tl.store(dg_ptr + gidx + 3 * H, d_o, mask=m2)
        tl.store(dc_ptr + sidx, tl.where(live, dc_t * f, dc_in), mask=m2)
        if not PROJ:
            tl.store(dh_ptr + sidx, tl.where(live, 0.0, dh_in), mask=m2)
    elif CELL == 1:
        r = tl.load(gates_ptr + gidx, mask=m2, other=0.0)
        z = tl.load(gates_ptr + gidx + H, mask=m2, other=0.0)
        n = tl.load(gates_ptr + gidx + 2 * H, mask=m2, other=0.0)
        hn = tl.load(aux_ptr + aidx, mask=m2, other=0.0)
        h_prev = tl.where(pvb, tl.load(out_ptr + pidx, mask=m2 & pvb, other=0.0).to(tl.float32),
                          tl.load(init_ptr + sidx, mask=m2, other=0.0).to(tl.float32))
        d_n = tl.where(live, dh_t * (1.0 - z) * (1.0 - n * n), 0.0)
        d_z = tl.where(live, dh_t * (h_prev - n) * z * (1.0 - z), 0.0)
        d_r = tl.where(live, d_n * hn * r * (1.0 - r), 0.0)
        tl.store(dg_ptr + gidx, d_r, mask=m2)
        tl.store(dg_ptr + gidx + H, d_z, mask=m2)
        tl.store(dg_ptr + gidx + 2 * H, d_n, mask=m2)
        tl.store(dgh_ptr + gidx, d_r, mask=m2)
        tl.store(dgh_ptr + gidx + H, d_z, mask=m2)
        tl.store(dgh_ptr + gidx + 2 * H, d_n * r, mask=m2)
        tl.store(dh_ptr + sidx, tl.where(live, dh_t * z, dh_in), mask=m2)
    else:
        h = tl.load(out_ptr + aidx, mask=m2, other=0.0).to(tl.float32)
        if CELL == 2:
            slope = 1.0 - h * h
        else:
            slope = tl.where(h > 0, 1.0, 0.0)
        tl.store(dg_ptr + gidx, tl.where(live, dh_t * slope, 0.0), mask=m2)
        tl.store(dh_ptr + sidx, tl.where(live, 0.0, dh_in), mask=m2)
