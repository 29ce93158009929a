"""Strategy "persistent": one launch for the whole sequence, for small hidden sizes.

One program per batch tile loads W_hh (and W_hr) once into registers and loops over time
inside the kernel, keeping h and c (backward: dh and dc) on chip: no per-step launch, no state
round trip through memory. Each gate is its own (P, H) tile so the matmuls are plain tl.dot.
Padded hidden columns stay exactly zero (zero weights, zero inputs, zero initial state).
Same cell codes and saved tensors as step_kernels; the cell math (cell_updates), gate
layout (gate_tiles) and live/dead rule (live_steps) are shared with it.
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
def _batch_tile(B, H, P, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr):
    # This program's tile of sequences, with the whole (padded) hidden and output widths.
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = tl.arange(0, BLOCK_H)
    offs_p = tl.arange(0, BLOCK_P)
    mb = offs_b < B
    mj = offs_j < H
    mp = offs_p < P
    mbh = mb[:, None] & mj[None, :]
    mbp = mb[:, None] & mp[None, :]
    return offs_b, offs_j, offs_p, mb, mj, mp, mbh, mbp, offs_b.to(tl.int64)


@triton.jit
def _gate_w(w_ptr, g, offs_j, offs_p, mj, mp, H, P, TRANSPOSED: tl.constexpr):
    rows = g * H + offs_j.to(tl.int64)
    if TRANSPOSED:
        # (BLOCK_P, BLOCK_H) tile W[g*H + j, p]^T, for h @ W_g^T.
        w = tl.load(w_ptr + rows[None, :] * P + offs_p[:, None],
                    mask=mp[:, None] & mj[None, :], other=0.0)
    else:
        # (BLOCK_H, BLOCK_P) tile W[g*H + j, p], for dgate_g @ W_g.
        w = tl.load(w_ptr + rows[:, None] * P + offs_p[None, :],
                    mask=mj[:, None] & mp[None, :], other=0.0)
    return w.to(tl.float32)


@triton.jit
def _gate_weights(w_ptr, offs_j, offs_p, mj, mp, H, P, G: tl.constexpr,
                  TRANSPOSED: tl.constexpr):
    # One W_hh tile per gate, kept in registers for the whole sequence. Cells with fewer than
    # 4 gates get gate 0's tile in the unused places (never read).
    w0 = _gate_w(w_ptr, 0, offs_j, offs_p, mj, mp, H, P, TRANSPOSED)
    w1 = w0
    w2 = w0
    w3 = w0
    if G > 1:
        w1 = _gate_w(w_ptr, 1, offs_j, offs_p, mj, mp, H, P, TRANSPOSED)
    if G > 2:
        w2 = _gate_w(w_ptr, 2, offs_j, offs_p, mj, mp, H, P, TRANSPOSED)
    if G > 3:
        w3 = _gate_w(w_ptr, 3, offs_j, offs_p, mj, mp, H, P, TRANSPOSED)
    return w0, w1, w2, w3


@triton.jit(do_not_specialize=["T"])
def fwd_persistent_kernel(
    xg_ptr, w_ptr, wr_ptr, bhn_ptr, h0_ptr, c0_ptr, len_ptr,
    out_ptr, hn_ptr, cn_ptr, gates_ptr, aux_ptr, hpre_ptr,
    T, B, H, P,
    CELL: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr, HAS_BHN: tl.constexpr,
    PROJ: tl.constexpr, SAVE: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    offs_b, offs_j, offs_p, mb, mj, mp, mbh, mbp, brow = _batch_tile(
        B, H, P, BLOCK_B, BLOCK_H, BLOCK_P)

    w0, w1, w2, w3 = _gate_weights(w_ptr, offs_j, offs_p, mj, mp, H, P, G, TRANSPOSED=True)
    if PROJ:
        # (BLOCK_H, BLOCK_P) tile W_hr[p, j]^T, for hp @ W_hr^T.
        wr = tl.load(wr_ptr + offs_p.to(tl.int64)[None, :] * H + offs_j[:, None],
                     mask=mj[:, None] & mp[None, :], other=0.0).to(tl.float32)
    if HAS_BHN:
        bhn = tl.load(bhn_ptr + offs_j, mask=mj, other=0.0).to(tl.float32)[None, :]
    L = load_lengths(len_ptr, offs_b, mb, HAS_LEN)

    h = tl.load(h0_ptr + brow[:, None] * P + offs_p[None, :], mask=mbp, other=0.0).to(tl.float32)
    c = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    if CELL == 0:
        c = tl.load(c0_ptr + brow[:, None] * H + offs_j[None, :], mask=mbh,
                    other=0.0).to(tl.float32)

    for s in range(0, T):
        if REVERSE:
            t = T - 1 - s
        else:
            t = s
        live = live_rows(L, offs_b, t, HAS_LEN)
        trow = (t * B + offs_b).to(tl.int64)
        xidx = trow[:, None] * (G * H) + offs_j[None, :]
        aidx = trow[:, None] * H + offs_j[None, :]
        if CELL == 0:
            x_i, x_f, x_g, x_o = load_4_gates(xg_ptr, xidx, H, mbh)
            i, f, g, o, c_new, hp = lstm_update(mm(h, w0) + x_i, mm(h, w1) + x_f,
                                                mm(h, w2) + x_g, mm(h, w3) + x_o, c)
            if SAVE:
                store_4_gates(gates_ptr, xidx, H, mbh, i, f, g, o)
                tl.store(aux_ptr + aidx, c_new, mask=mbh)
            if PROJ:
                if SAVE:
                    tl.store(hpre_ptr + aidx, hp, mask=mbh)
                h_new = mm(hp, wr)
            else:
                h_new = hp
            c = tl.where(live, c_new, c)
        elif CELL == 1:
            hn = mm(h, w2)
            if HAS_BHN:
                hn += bhn
            x_r, x_z, x_n = load_3_gates(xg_ptr, xidx, H, mbh)
            r, z, n, h_new = gru_update(mm(h, w0) + x_r, mm(h, w1) + x_z, x_n, hn, h)
            if SAVE:
                store_3_gates(gates_ptr, xidx, H, mbh, r, z, n)
                tl.store(aux_ptr + aidx, hn, mask=mbh)
        else:
            x = tl.load(xg_ptr + xidx, mask=mbh, other=0.0).to(tl.float32)
            h_new = rnn_update(mm(h, w0) + x, RELU=CELL == 3)
        tl.store(out_ptr + trow[:, None] * P + offs_p[None, :],
                 tl.where(live, h_new, 0.0).to(out_ptr.dtype.element_ty), mask=mbp)
        h = tl.where(live, h_new, h)

    tl.store(hn_ptr + brow[:, None] * P + offs_p[None, :], h.to(hn_ptr.dtype.element_ty), mask=mbp)
    if CELL == 0:
        tl.store(cn_ptr + brow[:, None] * H + offs_j[None, :], c.to(cn_ptr.dtype.element_ty),
                 mask=mbh)


@triton.jit(do_not_specialize=["T"])
def bwd_persistent_kernel(
    go_ptr, ghn_ptr, gcn_ptr, w_ptr, wr_ptr, gates_ptr, aux_ptr, out_ptr, init_ptr, len_ptr,
    dg_ptr, dgh_ptr, dht_all_ptr, dh0_ptr, dc0_ptr,
    T, B, H, P,
    CELL: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr, PROJ: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    offs_b, offs_j, offs_p, mb, mj, mp, mbh, mbp, brow = _batch_tile(
        B, H, P, BLOCK_B, BLOCK_H, BLOCK_P)
    sidx = brow[:, None] * H + offs_j[None, :]

    w0, w1, w2, w3 = _gate_weights(w_ptr, offs_j, offs_p, mj, mp, H, P, G, TRANSPOSED=False)
    if PROJ:
        # (BLOCK_P, BLOCK_H) tile W_hr[p, j], for dh @ W_hr.
        wr = tl.load(wr_ptr + offs_p.to(tl.int64)[:, None] * H + offs_j[None, :],
                     mask=mp[:, None] & mj[None, :], other=0.0).to(tl.float32)
    L = load_lengths(len_ptr, offs_b, mb, HAS_LEN)

    dh = tl.load(ghn_ptr + brow[:, None] * P + offs_p[None, :], mask=mbp, other=0.0).to(tl.float32)
    dc = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    if CELL == 0:
        dc = tl.load(gcn_ptr + sidx, mask=mbh, other=0.0).to(tl.float32)
    init = tl.load(init_ptr + brow[:, None] * H + offs_j[None, :], mask=mbh,
                   other=0.0).to(tl.float32)

    for s in range(0, T):
        # Backward walks the steps in the opposite order of the forward.
        if REVERSE:
            t = s
        else:
            t = T - 1 - s
        live = live_rows(L, offs_b, t, HAS_LEN)
        t_prev, has_prev = previous_step(t, offs_b, L, T, HAS_LEN, REVERSE)
        trow = (t * B + offs_b).to(tl.int64)
        gidx = trow[:, None] * (G * H) + offs_j[None, :]
        aidx = trow[:, None] * H + offs_j[None, :]
        pidx = (t_prev * B + offs_b).to(tl.int64)[:, None] * H + offs_j[None, :]
        tidx = trow[:, None] * P + offs_p[None, :]

        go = tl.load(go_ptr + tidx, mask=mbp, other=0.0).to(tl.float32)
        dh_t = dh + tl.where(live, go, 0.0)
        if PROJ:
            tl.store(dht_all_ptr + tidx, tl.where(live, dh_t, 0.0), mask=mbp)
            dhp = mm(dh_t, wr)
        else:
            dhp = dh_t
        if CELL == 0:
            i, f, g, o = load_4_gates(gates_ptr, gidx, H, mbh)
            c_t = tl.load(aux_ptr + aidx, mask=mbh, other=0.0)
            c_prev = state_before_step(aux_ptr, pidx, mbh, has_prev, init)
            d_i, d_f, d_g, d_o, dc = lstm_backward(i, f, g, o, c_t, c_prev, dhp, dc, live)
            store_4_gates(dg_ptr, gidx, H, mbh, d_i, d_f, d_g, d_o)
            dh_new = mm(d_i, w0) + mm(d_f, w1) + mm(d_g, w2) + mm(d_o, w3)
        elif CELL == 1:
            r, z, n = load_3_gates(gates_ptr, gidx, H, mbh)
            hn = tl.load(aux_ptr + aidx, mask=mbh, other=0.0)
            h_prev = state_before_step(out_ptr, pidx, mbh, has_prev, init)
            d_r, d_z, d_n, d_nh, dh_via_z = gru_backward(r, z, n, hn, h_prev, dh_t, live)
            store_3_gates(dg_ptr, gidx, H, mbh, d_r, d_z, d_n)
            store_3_gates(dgh_ptr, gidx, H, mbh, d_r, d_z, d_nh)
            dh_new = dh_via_z + mm(d_r, w0) + mm(d_z, w1) + mm(d_nh, w2)
        else:
            h_t = tl.load(out_ptr + aidx, mask=mbh, other=0.0).to(tl.float32)
            d = rnn_backward(h_t, dh_t, live, RELU=CELL == 3)
            tl.store(dg_ptr + gidx, d, mask=mbh)
            dh_new = mm(d, w0)
        dh = tl.where(live, dh_new, dh)

    tl.store(dh0_ptr + brow[:, None] * P + offs_p[None, :], dh.to(dh0_ptr.dtype.element_ty),
             mask=mbp)
    if CELL == 0:
        tl.store(dc0_ptr + sidx, dc.to(dc0_ptr.dtype.element_ty), mask=mbh)
