"""Host side of the Triton backend: strategy choice, tile sizes, buffers and launch loops.

Importing this module imports triton and defines (jit-decorates) the kernels; whether they run
compiled or under the interpreter is fixed then, by TRITON_INTERPRET at that moment.
"""

import contextlib
import os

import torch
import triton

from .persistent_kernels import bwd_persistent_kernel, fwd_persistent_kernel
from .step_kernels import bwd_dh_kernel, bwd_step_kernel, fwd_proj_kernel, fwd_step_kernel

# True when the kernels were decorated under TRITON_INTERPRET=1 (they then run on CPU tensors).
INTERPRETED = type(fwd_step_kernel).__name__ == "InterpretedFunction"

# cell name -> (constexpr CELL code, number of gates G)
CELLS = {"lstm": (0, 4), "gru": (1, 3), "rnn_tanh": (2, 1), "rnn_relu": (3, 1)}

STRATEGIES = ("auto", "step", "persistent")
STRATEGY_ENV = "FASTRNN_TRITON_STRATEGY"
# "auto" picks the persistent kernel when the padded weight tiles a program keeps in registers
# (G*H*P, plus H*P for the projection, float32) stay within this many elements: ~64 KiB per
# program, 128 registers per thread at 8 warps. Beyond it registers spill and per-step wins.
PERSISTENT_AUTO_MAX = 16384
# Forcing "persistent" past this would mean giant register tiles (compile time, spills).
PERSISTENT_HARD_MAX = 32768
MIN_BLOCK = 16  # GPU tl.dot needs every tile dimension >= 16

_OPTIONS = {"strategy": None, "block_b": None, "block_h": None, "block_k": None, "poison": False}


def _empty(*shape, device, dtype):
    # Every buffer the kernels fill is allocated here; options(poison=True) NaN-fills them so
    # that a test sees any element a kernel forgot to write.
    buf = torch.empty(*shape, device=device, dtype=dtype)
    if _OPTIONS["poison"]:
        buf.fill_(float("nan"))
    return buf


@contextlib.contextmanager
def options(strategy=None, block_b=None, block_h=None, block_k=None, poison=False):
    """Override the strategy and/or tile sizes inside a ``with`` block (tests, benchmarks).

    ``strategy``: "auto" | "step" | "persistent" (else FASTRNN_TRITON_STRATEGY, else "auto").
    Block sizes must be powers of two; values below 16 only work under the interpreter
    (they let tiny test shapes exercise multi-tile grids and K loops). ``poison``: NaN-fill
    every buffer before the kernels write it (tests).
    """
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"unknown triton strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    saved = dict(_OPTIONS)
    _OPTIONS.update(strategy=strategy, block_b=block_b, block_h=block_h, block_k=block_k,
                    poison=poison)
    try:
        yield
    finally:
        _OPTIONS.clear()
        _OPTIONS.update(saved)


def _pow2(n):
    return triton.next_power_of_2(max(int(n), 1))


def requested_strategy():
    name = _OPTIONS["strategy"] or os.environ.get(STRATEGY_ENV) or "auto"
    if name not in STRATEGIES:
        raise ValueError(f"{STRATEGY_ENV}={name!r} is not a triton strategy; "
                         f"valid: {', '.join(STRATEGIES)}")
    return name


def plan(cell, B, H, P, proj):
    """The strategy and tiles for one layer/direction: a dict (also what explain() shows)."""
    _, G = CELLS[cell]
    requested = requested_strategy()
    bh_full = max(MIN_BLOCK, _pow2(H))
    bp_full = max(MIN_BLOCK, _pow2(P))
    w_elems = G * bh_full * bp_full + (bh_full * bp_full if proj else 0)
    if requested == "auto":
        strategy = "persistent" if w_elems <= PERSISTENT_AUTO_MAX else "step"
    else:
        strategy = requested
    if strategy == "persistent":
        if w_elems > PERSISTENT_HARD_MAX:
            raise ValueError(
                f"triton strategy 'persistent' keeps {w_elems} weight elements per program in "
                f"registers (hidden {H}, proj {P}); the limit is {PERSISTENT_HARD_MAX}: use 'step'")
        block_b = _OPTIONS["block_b"] or MIN_BLOCK
        return dict(strategy="persistent", requested=requested, block_b=block_b,
                    block_h=bh_full, block_p=bp_full, weight_elems=w_elems,
                    num_warps=4 if w_elems <= 4096 else 8,
                    grid=(triton.cdiv(B, block_b),))
    block_b = _OPTIONS["block_b"] or MIN_BLOCK
    block_h = _OPTIONS["block_h"] or min(32, max(MIN_BLOCK, _pow2(H)))
    block_k = _OPTIONS["block_k"] or 32
    return dict(strategy="step", requested=requested, block_b=block_b, block_h=block_h,
                block_k=block_k, num_warps=4,
                grid=(triton.cdiv(B, block_b), triton.cdiv(H, block_h)),
                grid_p=(triton.cdiv(B, block_b), triton.cdiv(P, block_h)))


def describe(cell, T, B, H, P, proj):
    p = plan(cell, B, H, P, proj)
    _, G = CELLS[cell]
    if p["strategy"] == "persistent":
        return (f"persistent: 1 launch forward + 1 backward, {p['grid'][0]} program(s) of "
                f"{p['block_b']} sequences each looping over T={T} steps, weights on chip "
                f"({p['weight_elems']} fp32 in registers, "
                f"{G} gate tiles {p['block_p']}x{p['block_h']}"
                f"{', + projection' if proj else ''}), num_warps={p['num_warps']}")
    per_step = 2 if proj else 1
    return (f"step: {per_step * T} launch(es) forward + {per_step * T + 1} backward, grid "
            f"{p['grid'][0]}x{p['grid'][1]} (BLOCK_B={p['block_b']}, BLOCK_H={p['block_h']}, "
            f"BLOCK_K={p['block_k']}), h W_hh^T fused with the {G}-gate epilogue"
            f"{', projection as a second kernel per step' if proj else ''}")


# ---------------------------------------------------------------------------- forward


def forward(cell, xg, w_hh, w_hr, b_hn, h0, c0, lengths, reverse, need_grad):
    code, G = CELLS[cell]
    xg, w_hh, h0 = xg.contiguous(), w_hh.contiguous(), h0.contiguous()
    T, B, GH = xg.shape
    H = GH // G
    P = h0.shape[1]
    proj = w_hr is not None
    lstm, gru = cell == "lstm", cell == "gru"
    # Outputs take the state's dtype; xg may be float32 for half layers (kept unrounded).
    dev, dtype, f32 = xg.device, h0.dtype, torch.float32
    out = _empty(T, B, P, device=dev, dtype=dtype)  # the kernels write every element
    gates = _empty(T, B, GH, device=dev, dtype=f32) if need_grad and (lstm or gru) else None
    aux = _empty(T, B, H, device=dev, dtype=f32) if need_grad and (lstm or gru) else None
    hpre = _empty(T, B, H, device=dev, dtype=f32) if need_grad and proj else None
    saved = ()
    if need_grad and lstm:
        saved = (gates, aux) + ((hpre,) if proj else ())
    elif need_grad and gru:
        saved = (gates, aux)
    if T == 0 or B == 0:
        h_n = h0.clone()
        c_n = c0.clone() if lstm else None
        return out, h_n, c_n, saved

    dummy = xg
    has_len = lengths is not None
    len_t = lengths.contiguous() if has_len else dummy
    bhn = b_hn.contiguous() if b_hn is not None else dummy
    c0c = c0.contiguous() if lstm else dummy
    p = plan(cell, B, H, P, proj)

    if p["strategy"] == "persistent":
        h_n = _empty(B, P, device=dev, dtype=dtype)
        c_n = _empty(B, H, device=dev, dtype=dtype) if lstm else None
        fwd_persistent_kernel[p["grid"]](
            xg, w_hh, w_hr.contiguous() if proj else dummy, bhn, h0, c0c, len_t,
            out, h_n, c_n if lstm else dummy,
            gates if gates is not None else dummy, aux if aux is not None else dummy,
            hpre if hpre is not None else dummy,
            T, B, H, P,
            CELL=code, G=G, HAS_LEN=has_len, HAS_BHN=b_hn is not None, PROJ=proj,
            SAVE=need_grad, REVERSE=bool(reverse),
            BLOCK_B=p["block_b"], BLOCK_H=p["block_h"], BLOCK_P=p["block_p"],
            num_warps=p["num_warps"])
        return out, h_n, c_n, saved

    # Per-step: h double-buffered in float32 (every program reads all of h_{t-1}); c in place.
    hbuf = _empty(2, B, P, device=dev, dtype=f32)
    hbuf[0].copy_(h0)
    c_state = c0.to(f32).clone() if lstm else dummy
    hp = hpre if hpre is not None else (_empty(1, B, H, device=dev, dtype=f32) if proj else dummy)
    wr = w_hr.contiguous() if proj else dummy
    for s in range(T):
        t = T - 1 - s if reverse else s
        h_in, h_out = hbuf[s % 2], hbuf[(s + 1) % 2]
        hp_t = t if hpre is not None else 0
        fwd_step_kernel[p["grid"]](
            xg, w_hh, bhn, h_in, h_out, c_state, len_t,
            out, gates if gates is not None else dummy, aux if aux is not None else dummy,
            hp, hp_t, t, B, H, P,
            CELL=code, G=G, HAS_LEN=has_len, HAS_BHN=b_hn is not None, PROJ=proj, SAVE=need_grad,
            BLOCK_B=p["block_b"], BLOCK_H=p["block_h"], BLOCK_K=p["block_k"],
            num_warps=p["num_warps"])
        if proj:
            fwd_proj_kernel[p["grid_p"]](
                hp, hp_t, wr, h_in, h_out, len_t, out, t, B, H, P,
                HAS_LEN=has_len, BLOCK_B=p["block_b"], BLOCK_P=p["block_h"], BLOCK_K=p["block_k"],
                num_warps=p["num_warps"])
    h_n = hbuf[T % 2].to(dtype)
    c_n = c_state.to(dtype) if lstm else None
    return out, h_n, c_n, saved


# --------------------------------------------------------------------------- backward


def backward(cell, grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse):
    """Returns (dg, dgh, dh0, dc0, dw_hr): dgh is dhgates for GRU (else None), dc0 LSTM only."""
    code, G = CELLS[cell]
    lstm, gru = cell == "lstm", cell == "gru"
    w_hh, h0 = w_hh.contiguous(), h0.contiguous()
    GH, P = w_hh.shape
    H = GH // G
    B = h0.shape[0]
    T = grad_out.shape[0] if grad_out is not None else out.shape[0]
    proj = w_hr is not None
    dev, dtype, f32 = h0.device, h0.dtype, torch.float32
    grad_out = (grad_out.contiguous() if grad_out is not None
                else torch.zeros(T, B, P, device=dev, dtype=dtype))
    grad_hn = grad_hn if grad_hn is not None else torch.zeros(B, P, device=dev, dtype=dtype)
    if lstm and grad_cn is None:
        grad_cn = torch.zeros(B, H, device=dev, dtype=dtype)
    dg = _empty(T, B, GH, device=dev, dtype=f32)
    dgh = _empty(T, B, GH, device=dev, dtype=f32) if gru else dg
    dht_all = _empty(T, B, P, device=dev, dtype=f32) if proj else None
    if T == 0 or B == 0:
        dw_hr = torch.zeros(P, H, device=dev, dtype=dtype) if proj else None
        return (dg.to(dtype), dgh.to(dtype) if gru else None, grad_hn.to(dtype).clone(),
                grad_cn.to(dtype).clone() if lstm else None, dw_hr)

    dummy = grad_out
    has_len = lengths is not None
    len_t = lengths.contiguous() if has_len else dummy
    gates = saved[0] if (lstm or gru) else dummy
    aux = saved[1] if (lstm or gru) else dummy
    out_c = out.contiguous() if out is not None else dummy
    init = c0.contiguous() if lstm else h0
    wr = w_hr.contiguous() if proj else dummy
    p = plan(cell, B, H, P, proj)

    if p["strategy"] == "persistent":
        dh0 = _empty(B, P, device=dev, dtype=dtype)
        dc0 = _empty(B, H, device=dev, dtype=dtype) if lstm else None
        bwd_persistent_kernel[p["grid"]](
            grad_out, grad_hn.contiguous(), grad_cn.contiguous() if lstm else dummy, w_hh, wr,
            gates, aux, out_c, init, len_t,
            dg, dgh, dht_all if proj else dummy, dh0, dc0 if lstm else dummy,
            T, B, H, P,
            CELL=code, G=G, HAS_LEN=has_len, PROJ=proj, REVERSE=bool(reverse),
            BLOCK_B=p["block_b"], BLOCK_H=p["block_h"], BLOCK_P=p["block_p"],
            num_warps=p["num_warps"])
    else:
        dh_buf = grad_hn.to(f32).clone()
        dc_buf = grad_cn.to(f32).clone() if lstm else dummy
        dht = _empty(B, P, device=dev, dtype=f32) if proj else dummy
        common = dict(BLOCK_B=p["block_b"], BLOCK_K=p["block_k"], num_warps=p["num_warps"])
        tp, k_len = 0, 0  # no previous step yet: nothing to add to the carry
        for s in range(T):
            t = s if reverse else T - 1 - s
            if proj:
                bwd_dh_kernel[p["grid_p"]](
                    grad_out, dh_buf, dg, w_hh, len_t, dht, dht_all, dummy,
                    t, tp, k_len, B, P, GH, HAS_LEN=has_len, FINAL=False,
                    BLOCK_P=p["block_h"], **common)
            bwd_step_kernel[p["grid"]](
                grad_out, dh_buf, dc_buf, dg, dgh, wr if proj else w_hh, dht,
                gates, aux, out_c, init, len_t,
                t, tp, k_len, T, B, H, P,
                CELL=code, G=G, HAS_LEN=has_len, REVERSE=bool(reverse), PROJ=proj,
                BLOCK_H=p["block_h"], **common)
            tp, k_len = t, GH
        dh0 = _empty(B, P, device=dev, dtype=dtype)
        bwd_dh_kernel[p["grid_p"]](
            dummy, dh_buf, dgh, w_hh, len_t, dummy, dummy, dh0,
            0, tp, k_len, B, P, GH, HAS_LEN=False, FINAL=True,
            BLOCK_P=p["block_h"], **common)
        dc0 = dc_buf.to(dtype) if lstm else None

    dw_hr = None
    if proj:
        hpre = saved[2]
        # sum over live steps of dh_t^T hp_t: one GEMM after the recurrence (dead rows are 0).
        dw_hr = (dht_all.reshape(-1, P).t() @ hpre.reshape(-1, H)).to(dtype)
    return dg.to(dtype), dgh.to(dtype) if gru else None, dh0, dc0, dw_hr
