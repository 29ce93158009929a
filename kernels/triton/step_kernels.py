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

from .activations import mm
from .cell_updates import (
    gru_backward,
    gru_update,
    lstm_backward,
    lstm_update,
    rnn_backward,
    rnn_update,
)
from .gate_tiles import load_3_gates, load_4_gates, store_3_gates, store_4_gates
from .live_steps import live_rows, load_lengths, previous_step, state_before_step


@triton.jit
def _program_tile(B, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    # This program's (batch, column) tile: grid axis 0 tiles the B rows, axis 1 the N columns.
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mb = offs_b < B
    mn = offs_n < N
    return offs_b, offs_n, mb, mn, mb[:, None] & mn[None, :], offs_b.to(tl.int64)


@triton.jit
def _add_rows_matmul(acc, a_ptr, a_rows, mb, w_ptr, offs_n, mn, K, k_len, N,
                     BLOCK_K: tl.constexpr):
    # acc + A[a_rows, :k_len] @ W[:k_len, offs_n] for row-major A (., K) and W (K, N);
    # k_len is K, or 0 when there is nothing to add.
    for k0 in range(0, k_len, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < K
        a = tl.load(a_ptr + a_rows[:, None] * K + offs_k[None, :],
                    mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(w_ptr + offs_k.to(tl.int64)[:, None] * N + offs_n[None, :],
                    mask=mk[:, None] & mn[None, :], other=0.0).to(tl.float32)
        acc += mm(a, w)
    return acc


@triton.jit(do_not_specialize=["t", "hp_t"])
def fwd_step_kernel(
    xg_ptr, w_ptr, bhn_ptr, h_in_ptr, h_out_ptr, c_ptr, len_ptr,
    out_ptr, gates_ptr, aux_ptr, hp_ptr, hp_t,
    t, B, H, P,
    CELL: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr, HAS_BHN: tl.constexpr,
    PROJ: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    offs_b, offs_j, mb, mj, m2, brow = _program_tile(B, H, BLOCK_B, BLOCK_H)
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

    live = live_rows(load_lengths(len_ptr, offs_b, mb, HAS_LEN), offs_b, t, HAS_LEN)
    trow = (t * B + offs_b).to(tl.int64)
    xidx = trow[:, None] * (G * H) + offs_j[None, :]
    sidx = brow[:, None] * H + offs_j[None, :]          # (B, H) state tile
    aidx = trow[:, None] * H + offs_j[None, :]          # (T, B, H) saved tile

    if CELL == 0:
        x_i, x_f, x_g, x_o = load_4_gates(xg_ptr, xidx, H, m2)
        c_prev = tl.load(c_ptr + sidx, mask=m2, other=0.0)
        i, f, g, o, c_new, h_new = lstm_update(acc0 + x_i, acc1 + x_f, acc2 + x_g, acc3 + x_o,
                                               c_prev)
        tl.store(c_ptr + sidx, tl.where(live, c_new, c_prev), mask=m2)
        if SAVE:
            store_4_gates(gates_ptr, xidx, H, m2, i, f, g, o)
            tl.store(aux_ptr + aidx, c_new, mask=m2)
    elif CELL == 1:
        hn = acc2
        if HAS_BHN:
            hn += tl.load(bhn_ptr + offs_j, mask=mj, other=0.0).to(tl.float32)[None, :]
        x_r, x_z, x_n = load_3_gates(xg_ptr, xidx, H, m2)
        h_own = tl.load(h_in_ptr + brow[:, None] * P + offs_j[None, :], mask=m2, other=0.0)
        r, z, n, h_new = gru_update(acc0 + x_r, acc1 + x_z, x_n, hn, h_own)
        if SAVE:
            store_3_gates(gates_ptr, xidx, H, m2, r, z, n)
            tl.store(aux_ptr + aidx, hn, mask=m2)
    else:
        x = tl.load(xg_ptr + xidx, mask=m2, other=0.0).to(tl.float32)
        h_new = rnn_update(acc0 + x, RELU=CELL == 3)

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
    offs_b, offs_p, mb, mp, m2, brow = _program_tile(B, P, BLOCK_B, BLOCK_P)
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
    live = live_rows(load_lengths(len_ptr, offs_b, mb, HAS_LEN), offs_b, t, HAS_LEN)
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
    offs_b, offs_p, mb, mp, m2, brow = _program_tile(B, P, BLOCK_B, BLOCK_P)
    sidx = brow[:, None] * P + offs_p[None, :]
    prow = (tp * B + offs_b).to(tl.int64)
    dh_in = _add_rows_matmul(tl.load(dh_ptr + sidx, mask=m2, other=0.0), dgh_ptr, prow, mb,
                             w_ptr, offs_p, mp, GH, k_len, P, BLOCK_K)
    if FINAL:
        tl.store(dh0_ptr + sidx, dh_in.to(dh0_ptr.dtype.element_ty), mask=m2)
    else:
        live = live_rows(load_lengths(len_ptr, offs_b, mb, HAS_LEN), offs_b, t, HAS_LEN)
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
    offs_b, offs_j, mb, mj, m2, brow = _program_tile(B, H, BLOCK_B, BLOCK_H)
    sidx = brow[:, None] * H + offs_j[None, :]
    L = load_lengths(len_ptr, offs_b, mb, HAS_LEN)
    live = live_rows(L, offs_b, t, HAS_LEN)
    trow = (t * B + offs_b).to(tl.int64)
    aidx = trow[:, None] * H + offs_j[None, :]
    gidx = trow[:, None] * (G * H) + offs_j[None, :]

    if PROJ:
        dh_in = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)  # unused: the carry lives in bwd_dh_kernel
        dh_t = _add_rows_matmul(tl.zeros((BLOCK_B, BLOCK_H), tl.float32), dht_ptr, brow, mb,
                                w_ptr, offs_j, mj, P, P, H, BLOCK_K)
    else:
        prow = (tp * B + offs_b).to(tl.int64)
        dh_in = _add_rows_matmul(tl.load(dh_ptr + sidx, mask=m2, other=0.0), dgh_ptr, prow, mb,
                                 w_ptr, offs_j, mj, G * H, k_len, P, BLOCK_K)  # W_hh: (G*H, P)
        go = tl.load(go_ptr + aidx, mask=m2, other=0.0).to(tl.float32)  # P == H
        dh_t = dh_in + tl.where(live, go, 0.0)

    t_prev, has_prev = previous_step(t, offs_b, L, T, HAS_LEN, REVERSE)
    pidx = (t_prev * B + offs_b).to(tl.int64)[:, None] * H + offs_j[None, :]

    if CELL == 0:
        i, f, g, o = load_4_gates(gates_ptr, gidx, H, m2)
        c_t = tl.load(aux_ptr + aidx, mask=m2, other=0.0)
        c_init = tl.load(init_ptr + sidx, mask=m2, other=0.0).to(tl.float32)
        c_prev = state_before_step(aux_ptr, pidx, m2, has_prev, c_init)
        dc_in = tl.load(dc_ptr + sidx, mask=m2, other=0.0)
        d_i, d_f, d_g, d_o, dc_carry = lstm_backward(i, f, g, o, c_t, c_prev, dh_t, dc_in, live)
        store_4_gates(dg_ptr, gidx, H, m2, d_i, d_f, d_g, d_o)
        tl.store(dc_ptr + sidx, dc_carry, mask=m2)
        if not PROJ:
            tl.store(dh_ptr + sidx, tl.where(live, 0.0, dh_in), mask=m2)
    elif CELL == 1:
        r, z, n = load_3_gates(gates_ptr, gidx, H, m2)
        hn = tl.load(aux_ptr + aidx, mask=m2, other=0.0)
        h_init = tl.load(init_ptr + sidx, mask=m2, other=0.0).to(tl.float32)
        h_prev = state_before_step(out_ptr, pidx, m2, has_prev, h_init)
        d_r, d_z, d_n, d_nh, dh_via_z = gru_backward(r, z, n, hn, h_prev, dh_t, live)
        store_3_gates(dg_ptr, gidx, H, m2, d_r, d_z, d_n)
        store_3_gates(dgh_ptr, gidx, H, m2, d_r, d_z, d_nh)
        tl.store(dh_ptr + sidx, tl.where(live, dh_via_z, dh_in), mask=m2)
    else:
        h_t = tl.load(out_ptr + aidx, mask=m2, other=0.0).to(tl.float32)
        tl.store(dg_ptr + gidx, rnn_backward(h_t, dh_t, live, RELU=CELL == 3), mask=m2)
        tl.store(dh_ptr + sidx, tl.where(live, 0.0, dh_in), mask=m2)
