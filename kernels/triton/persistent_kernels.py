"""Strategy "persistent": one launch for the whole sequence, for small hidden sizes.

One program per batch tile loads W_hh (and W_hr) once into registers and loops over time
inside the kernel, keeping h and c (backward: dh and dc) on chip: no per-step launch, no state
round trip through memory. Each gate is its own (P, H) tile so the matmuls are plain tl.dot.
Padded hidden columns stay exactly zero (zero weights, zero inputs, zero initial state).
Same cell codes, saved tensors and live/dead rule as step_kernels.
"""

import triton
import triton.language as tl

from .activations import mm, relu, sigmoid, tanh


@triton.jit
def _gate_w_t(w_ptr, g, offs_j, offs_p, mj, mp, H, P):
    # (BLOCK_P, BLOCK_H) tile W[g*H + j, p]^T, for h @ W_g^T.
    return tl.load(w_ptr + (g * H + offs_j.to(tl.int64))[None, :] * P + offs_p[:, None],
                   mask=mp[:, None] & mj[None, :], other=0.0).to(tl.float32)


@triton.jit
def _gate_w(w_ptr, g, offs_j, offs_p, mj, mp, H, P):
    # (BLOCK_H, BLOCK_P) tile W[g*H + j, p], for dgate_g @ W_g.
    return tl.load(w_ptr + (g * H + offs_j.to(tl.int64))[:, None] * P + offs_p[None, :],
                   mask=mj[:, None] & mp[None, :], other=0.0).to(tl.float32)


@triton.jit(do_not_specialize=["T"])
def fwd_persistent_kernel(
    xg_ptr, w_ptr, wr_ptr, bhn_ptr, h0_ptr, c0_ptr, len_ptr,
    out_ptr, hn_ptr, cn_ptr, gates_ptr, aux_ptr, hpre_ptr,
    T, B, H, P,
    CELL: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr, HAS_BHN: tl.constexpr,
    PROJ: tl.constexpr, SAVE: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid_b = tl.program_id(0)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = tl.arange(0, BLOCK_H)
    offs_p = tl.arange(0, BLOCK_P)
    mb = offs_b < B
    mj = offs_j < H
    mp = offs_p < P
    mbh = mb[:, None] & mj[None, :]
    mbp = mb[:, None] & mp[None, :]
    brow = offs_b.to(tl.int64)

    w0 = _gate_w_t(w_ptr, 0, offs_j, offs_p, mj, mp, H, P)
    w1 = w0
    w2 = w0
    w3 = w0
    if G > 1:
        w1 = _gate_w_t(w_ptr, 1, offs_j, offs_p, mj, mp, H, P)
    if G > 2:
        w2 = _gate_w_t(w_ptr, 2, offs_j, offs_p, mj, mp, H, P)
    if G > 3:
        w3 = _gate_w_t(w_ptr, 3, offs_j, offs_p, mj, mp, H, P)
    if PROJ:
        # (BLOCK_H, BLOCK_P) tile W_hr[p, j]^T, for hp @ W_hr^T.
        wr = tl.load(wr_ptr + offs_p.to(tl.int64)[None, :] * H + offs_j[:, None],
                     mask=mj[:, None] & mp[None, :], other=0.0).to(tl.float32)
    if HAS_BHN:
        bhn = tl.load(bhn_ptr + offs_j, mask=mj, other=0.0).to(tl.float32)[None, :]
    if HAS_LEN:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)

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
        if HAS_LEN:
            live = (t < L)[:, None]
        else:
            live = (offs_b >= 0)[:, None]
        trow = (t * B + offs_b).to(tl.int64)
        xidx = trow[:, None] * (G * H) + offs_j[None, :]
        aidx = trow[:, None] * H + offs_j[None, :]
        if CELL == 0:
            i = sigmoid(mm(h, w0) + tl.load(xg_ptr + xidx, mask=mbh, other=0.0).to(tl.float32))
            f = sigmoid(mm(h, w1) + tl.load(xg_ptr + xidx + H, mask=mbh, other=0.0).to(tl.float32))
            g = tanh(mm(h, w2) + tl.load(xg_ptr + xidx + 2 * H, mask=mbh, other=0.0).to(tl.float32))
            o = sigmoid(mm(h, w3) + tl.load(xg_ptr + xidx + 3 * H, mask=mbh,
                                            other=0.0).to(tl.float32))
            c_new = f * c + i * g
            hp = o * tanh(c_new)
            if SAVE:
                tl.store(gates_ptr + xidx, i, mask=mbh)
                tl.store(gates_ptr + xidx + H, f, mask=mbh)
                tl.store(gates_ptr + xidx + 2 * H, g, mask=mbh)
                tl.store(gates_ptr + xidx + 3 * H, o, mask=mbh)
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
            r = sigmoid(mm(h, w0) + tl.load(xg_ptr + xidx, mask=mbh, other=0.0).to(tl.float32))
            z = sigmoid(mm(h, w1) + tl.load(xg_ptr + xidx + H, mask=mbh, other=0.0).to(tl.float32))
            n = tanh(tl.load(xg_ptr + xidx + 2 * H, mask=mbh, other=0.0).to(tl.float32) + r * hn)
            h_new = (1.0 - z) * n + z * h
            if SAVE:
                tl.store(gates_ptr + xidx, r, mask=mbh)
                tl.store(gates_ptr + xidx + H, z, mask=mbh)
                tl.store(gates_ptr + xidx + 2 * H, n, mask=mbh)
                tl.store(aux_ptr + aidx, hn, mask=mbh)
        elif CELL == 2:
            h_new = tanh(mm(h, w0) + tl.load(xg_ptr + xidx, mask=mbh, other=0.0).to(tl.float32))
        else:
            h_new = relu(mm(h, w0) + tl.load(xg_ptr + xidx, mask=mbh, other=0.0).to(tl.float32))
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
    pid_b = tl.program_id(0)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = tl.arange(0, BLOCK_H)
    offs_p = tl.arange(0, BLOCK_P)
    mb = offs_b < B
    mj = offs_j < H
    mp = offs_p < P
    mbh = mb[:, None] & mj[None, :]
    mbp = mb[:, None] & mp[None, :]
    brow = offs_b.to(tl.int64)
    sidx = brow[:, None] * H + offs_j[None, :]

    w0 = _gate_w(w_ptr, 0, offs_j, offs_p, mj, mp, H, P)
    w1 = w0
    w2 = w0
    w3 = w0
    if G > 1:
        w1 = _gate_w(w_ptr, 1, offs_j, offs_p, mj, mp, H, P)
    if G > 2:
        w2 = _gate_w(w_ptr, 2, offs_j, offs_p, mj, mp, H, P)
    if G > 3:
        w3 = _gate_w(w_ptr, 3, offs_j, offs_p, mj, mp, H, P)
    if PROJ:
        # (BLOCK_P, BLOCK_H) tile W_hr[p, j], for dh @ W_hr.
        wr = tl.load(wr_ptr + offs_p.to(tl.int64)[:, None] * H + offs_j[None, :],
                     mask=mp[:, None] & mj[None, :], other=0.0).to(tl.float32)
    if HAS_LEN:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)

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
            t_prev = t + 1
        else:
            t = T - 1 - s
            t_prev = t - 1
        if HAS_LEN:
            live = (t < L)[:, None]
        else:
            live = (offs_b >= 0)[:, None]
        # State before step t: saved state of the previous step in walk order if that one was
        # live, else the initial state.
        # Per-row vectors: the interpreter rejects masks built from scalar booleans.
        tpv = offs_b * 0 + t_prev
        pvb = (tpv >= 0) & (tpv < T)
        if HAS_LEN:
            pvb = pvb & (tpv < L)
        pvb = pvb[:, None]
        t_prev = tl.minimum(tl.maximum(t_prev, 0), T - 1)
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
            i = tl.load(gates_ptr + gidx, mask=mbh, other=0.0)
            f = tl.load(gates_ptr + gidx + H, mask=mbh, other=0.0)
            g = tl.load(gates_ptr + gidx + 2 * H, mask=mbh, other=0.0)
            o = tl.load(gates_ptr + gidx + 3 * H, mask=mbh, other=0.0)
            tc = tanh(tl.load(aux_ptr + aidx, mask=mbh, other=0.0))
            c_prev = tl.where(pvb, tl.load(aux_ptr + pidx, mask=mbh & pvb, other=0.0), init)
            dc_t = dc + dhp * o * (1.0 - tc * tc)
            d_i = tl.where(live, dc_t * g * i * (1.0 - i), 0.0)
            d_f = tl.where(live, dc_t * c_prev * f * (1.0 - f), 0.0)
            d_g = tl.where(live, dc_t * i * (1.0 - g * g), 0.0)
            d_o = tl.where(live, dhp * tc * o * (1.0 - o), 0.0)
            tl.store(dg_ptr + gidx, d_i, mask=mbh)
            tl.store(dg_ptr + gidx + H, d_f, mask=mbh)
            tl.store(dg_ptr + gidx + 2 * H, d_g, mask=mbh)
            tl.store(dg_ptr + gidx + 3 * H, d_o, mask=mbh)
            dh_new = mm(d_i, w0) + mm(d_f, w1) + mm(d_g, w2) + mm(d_o, w3)
            dc = tl.where(live, dc_t * f, dc)
        elif CELL == 1:
            r = tl.load(gates_ptr + gidx, mask=mbh, other=0.0)
            z = tl.load(gates_ptr + gidx + H, mask=mbh, other=0.0)
            n = tl.load(gates_ptr + gidx + 2 * H, mask=mbh, other=0.0)
            hn = tl.load(aux_ptr + aidx, mask=mbh, other=0.0)
            h_prev = tl.where(pvb, tl.load(out_ptr + pidx, mask=mbh & pvb,
                                           other=0.0).to(tl.float32), init)
            d_n = tl.where(live, dh_t * (1.0 - z) * (1.0 - n * n), 0.0)
            d_z = tl.where(live, dh_t * (h_prev - n) * z * (1.0 - z), 0.0)
            d_r = tl.where(live, d_n * hn * r * (1.0 - r), 0.0)
            d_nh = d_n * r
            tl.store(dg_ptr + gidx, d_r, mask=mbh)
            tl.store(dg_ptr + gidx + H, d_z, mask=mbh)
            tl.store(dg_ptr + gidx + 2 * H, d_n, mask=mbh)
            tl.store(dgh_ptr + gidx, d_r, mask=mbh)
            tl.store(dgh_ptr + gidx + H, d_z, mask=mbh)
            tl.store(dgh_ptr + gidx + 2 * H, d_nh, mask=mbh)
            dh_new = dh_t * z + mm(d_r, w0) + mm(d_z, w1) + mm(d_nh, w2)
        else:
            hcur = tl.load(out_ptr + aidx, mask=mbh, other=0.0).to(tl.float32)
            if CELL == 2:
                slope = 1.0 - hcur * hcur
            else:
                slope = tl.where(hcur > 0, 1.0, 0.0)
            d = tl.where(live, dh_t * slope, 0.0)
            tl.store(dg_ptr + gidx, d, mask=mbh)
            dh_new = mm(d, w0)
        dh = tl.where(live, dh_new, dh)

    tl.store(dh0_ptr + brow[:, None] * P + offs_p[None, :], dh.to(dh0_ptr.dtype.element_ty),
             mask=mbp)
    if CELL == 0:
        tl.store(dc0_ptr + sidx, dc.to(dc0_ptr.dtype.element_ty), mask=mbh)
