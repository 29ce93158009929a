"""The numba backend's interface: torch tensors in and out, one plan per layer, one executor per
route.

The interface (argument order, returns, semantics) is the one documented in
fastrnn/reference.py. Each entry point converts its tensors (kernels/numba/buffers.py), asks
kernels/numba/plan.py which route runs the layer, and calls that route's executor from its
table below; the executors call the kernels of lstm.py, gru.py and rnn.py, in this thread or on
torch's threads (kernels/numba/runners.py). Half types are computed in float32 and cast back on
return.
"""

from types import SimpleNamespace

import numpy as np
import torch

from . import buffers, plan, runners, threaded
from .buffers import NUMPY_DTYPES, as_numpy, cast, dummy, from_step, time_chunks, whole
from .gru import (
    gru_backward_recurrence,
    gru_backward_step,
    gru_forward_recurrence,
    gru_forward_step,
)
from .linalg import add_live_rows, copy_live_rows, pack_gate_panels, pack_weight_concat_t
from .lstm import (
    lstm_backward_dht,
    lstm_backward_recurrence,
    lstm_backward_step,
    lstm_forward_cells,
    lstm_forward_fused,
    lstm_forward_recurrence,
    lstm_forward_step,
    lstm_project_step,
)
from .rnn import (
    rnn_backward_recurrence,
    rnn_backward_step,
    rnn_forward_fused,
    rnn_forward_recurrence,
    rnn_forward_step,
)
from .runners import (
    StepKernel,
    forward_columns,
    mm_live,
    order,
    packed,
    recurrence,
    run,
    step_product,
)
from .weight_gradients import weight_grads

PROJECTS_INPUT = True   # the forwards take an ops.InputProjection as xg (fastrnn/reference.py)


def _input_size(xg):
    """The input size of an ops.InputProjection (which a loop may fuse), None for a tensor."""
    return None if isinstance(xg, torch.Tensor) else xg.x.shape[2]


def explain(kind, T, B, H, P=None, dtype=torch.float32, device="cpu", I=None):
    """Which route the forward recurrence takes for this layer, in one line (with the input
    size I: whether an LSTM or RNN loop takes the input projection inside)."""
    return plan.describe(plan.forward(kind, T, B, H, P, I, dtype))


def _w_hh_slices(p, a):
    """W_hh packed per slice of hidden units, for a backward "columns" kernel."""
    return runners.packed_slices(a.w_hh, False, 1, p.slices, p.cdt)


def _saved_steps(need_grad, t0, t1):
    """The steps t0..t1-1 of what a forward saves for backward (one step of scratch without)."""
    return slice(t0, t1) if need_grad else slice(0, 1)


def _fused_operands(a, cdt):
    """x, [W_ih, W_hh]^T packed, the bias in every row (B, G), and the scratch xh (B, I + H),
    pre (1, B, G), lens_t (B,), for a fused forward kernel given the ops.InputProjection
    (x, W_ih, bias) of the layer."""
    xg = a.xg
    T, B, G = xg.shape
    I = xg.x.shape[2]
    w_tp = pack_weight_concat_t(as_numpy(xg.w_ih, cdt), as_numpy(a.w_hh, cdt))
    bias_rows = buffers.scratch((B, G), cdt)
    bias_rows[...] = 0 if xg.bias is None else as_numpy(xg.bias, cdt)
    H = a.h_np.shape[1]
    scratch = (buffers.scratch((B, I + H), cdt), buffers.scratch((1, B, G), cdt),
               np.empty(B, np.int64))
    return (as_numpy(xg.x, cdt), w_tp, bias_rows), scratch


# ----------------------------------------------------------------------------------- LSTM


def lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, need_grad):
    dtype = xg.dtype
    T, B, G = xg.shape
    H, P = G // 4, w_hh.shape[1]
    p = plan.forward("lstm", T, B, H, P, _input_size(xg), dtype, proj=w_hr is not None)
    cdt, proj = p.cdt, p.proj
    out = buffers.empty((T, B, P), cdt)
    h = buffers.state(h0, (B, P), cdt)
    c = buffers.state(c0, (B, H), cdt)
    hpre = None
    if need_grad:
        gates, cs = buffers.internal((T, B, G), cdt), buffers.internal((T, B, H), cdt)
        hpre = buffers.internal((T, B, H), cdt) if proj else None
        gates_np, cs_np = gates.numpy(), cs.numpy()
    else:
        # Nothing is saved: the kernels leave gates and cs alone; hpre is one step of scratch.
        gates_np, cs_np = buffers.unwritten((1, B, G), cdt), buffers.unwritten((1, B, H), cdt)
        if proj:
            hpre = torch.from_numpy(buffers.scratch((1, B, H), cdt))
    a = SimpleNamespace(
        xg=xg, w_hh=w_hh, w_hr=w_hr, lengths=lengths, lens=buffers.lengths(lengths, B, T),
        reverse=bool(reverse), need_grad=bool(need_grad), h=h, h_np=h.numpy(), c_np=c.numpy(),
        out_np=out.numpy(), gates_np=gates_np, cs_np=cs_np, hpre=hpre,
        hpre_np=hpre.numpy() if proj else dummy(cdt, 3))
    LSTM_FORWARD[p.route](p, a)
    saved = ((gates, cs) + ((hpre,) if proj else ())) if need_grad else ()
    return cast(out, dtype), cast(h, dtype), cast(c, dtype), saved


def _lstm_forward_step(p, a):
    cdt, proj = p.cdt, p.proj
    x_np = as_numpy(whole(a.xg), cdt)
    recurrent = step_product(a.w_hh.to(cdt), p.B, p.T)
    project = step_product(a.w_hr.to(cdt), p.B, p.T) if proj else None
    step = StepKernel(lstm_forward_step, threaded.lstm_forward_step_entry, p, a.lengths, a.lens)
    for t in order(p.T, a.reverse):
        step(t, a.need_grad, x_np, recurrent(a.h).numpy(), a.h_np, a.c_np, a.lens, proj,
             a.out_np, a.gates_np, a.cs_np, a.hpre_np)
        if proj:
            hpre_t = a.hpre[t if a.need_grad else 0]
            run(lstm_project_step, t, project(hpre_t).numpy(), a.h_np, a.lens, a.out_np, 0, p.B)


def _lstm_forward_columns(p, a):
    forward_columns(threaded.lstm_forward_columns_entry, p, as_numpy(whole(a.xg), p.cdt), a.w_hh,
                    a.h_np, a.c_np, a.lens, a.reverse, a.need_grad, a.out_np, a.gates_np,
                    a.cs_np)


def _lstm_forward_fused(p, a):
    operands, scratch = _fused_operands(a, p.cdt)
    recurrence(lstm_forward_fused, threaded.lstm_forward_fused_entry, p, a.lengths, a.lens,
               *operands, a.h_np, a.c_np, a.lens, a.reverse, a.need_grad, a.out_np, a.gates_np,
               a.cs_np, *scratch)


def _lstm_forward_panels(p, a):
    w_gp = pack_gate_panels(as_numpy(a.w_hh, p.cdt))
    for t0, t1, x_np in time_chunks(a.xg, a.reverse, p.cdt):
        kept = _saved_steps(a.need_grad, t0, t1)
        recurrence(lstm_forward_cells, threaded.lstm_forward_cells_entry, p, a.lengths, a.lens,
                   x_np, w_gp, a.h_np, a.c_np, from_step(a.lens, t0), a.reverse, a.need_grad,
                   a.out_np[t0:t1], a.gates_np[kept], a.cs_np[kept])


def _lstm_forward_loop(p, a):
    cdt, proj = p.cdt, p.proj
    # Scratch for the compiled loop's products (the per-step path gets them from the GEMM).
    hg_np = buffers.scratch((p.B, p.G), cdt)
    hproj_np = buffers.scratch((p.B, p.P), cdt) if proj else dummy(cdt, 2)
    w_hh_tp = packed(a.w_hh.t(), cdt)
    w_hr_tp = packed(a.w_hr.t(), cdt) if proj else dummy(cdt, 1)
    for t0, t1, x_np in time_chunks(a.xg, a.reverse, cdt):
        kept = _saved_steps(a.need_grad, t0, t1)
        recurrence(lstm_forward_recurrence, threaded.lstm_forward_recurrence_entry, p, a.lengths,
                   a.lens, x_np, w_hh_tp, w_hr_tp, a.h_np, a.c_np, from_step(a.lens, t0),
                   a.reverse, proj, a.need_grad, a.out_np[t0:t1], a.gates_np[kept],
                   a.cs_np[kept], a.hpre_np[kept] if proj else a.hpre_np, hg_np, hproj_np)


LSTM_FORWARD = {"step": _lstm_forward_step, "columns": _lstm_forward_columns,
                "fused": _lstm_forward_fused, "panels": _lstm_forward_panels,
                "loop": _lstm_forward_loop}


def lstm_backward(grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse):
    gates, cs = saved[0], saved[1]
    cdt, dtype = gates.dtype, w_hh.dtype
    T, B, G = gates.shape
    H, P = G // 4, w_hh.shape[1]
    p = plan.backward("lstm", T, B, H, P, cdt, proj=w_hr is not None)
    proj = p.proj
    dh = buffers.state(grad_hn, (B, P), cdt)
    dc = buffers.state(grad_cn, (B, H), cdt)
    dgates = buffers.internal((T, B, G), cdt)
    dht = buffers.internal((T, B, P), cdt) if proj else None
    a = SimpleNamespace(
        w_hh=w_hh, w_hr=w_hr, lengths=lengths, lens=buffers.lengths(lengths, B, T),
        reverse=bool(reverse), go=buffers.grad(grad_out, (T, B, P), cdt).numpy(), dh=dh,
        dh_np=dh.numpy(), dc_np=dc.numpy(), gates_np=gates.numpy(), cs_np=cs.numpy(),
        c0_np=as_numpy(c0, cdt), dgates=dgates, dgates_np=dgates.numpy(), dht=dht,
        dht_np=dht.numpy() if proj else dummy(cdt, 3), dhp_np=buffers.scratch((B, H), cdt))
    LSTM_BACKWARD[p.route](p, a)
    dw_hr = None
    if proj:
        # One GEMM over all steps instead of T small ones; dead steps have dht = 0.
        dw_hr = cast(weight_grads(dht.reshape(T * B, P), [saved[2].reshape(T * B, H)])[0][0],
                     dtype)
    return cast(dgates, dtype), cast(dh, dtype), cast(dc, dtype), dw_hr


def _lstm_backward_step(p, a):
    cdt, proj = p.cdt, p.proj
    back = step_product(a.w_hh.to(cdt).t(), p.B, p.T)
    back_proj = step_product(a.w_hr.to(cdt).t(), p.B, p.T) if proj else None
    step = StepKernel(lstm_backward_step, threaded.lstm_backward_step_entry, p, a.lengths, a.lens)
    dhp = torch.from_numpy(a.dhp_np)
    for t in order(p.T, not a.reverse):
        if proj:
            run(lstm_backward_dht, t, a.dh_np, a.go, a.lens, a.dht_np, 0, p.B)
            dhp.copy_(back_proj(a.dht[t]))
        step(t, a.reverse, a.go, a.dh_np, a.dc_np, a.dhp_np, a.gates_np, a.cs_np, a.c0_np, a.lens,
             proj, a.dgates_np)
        mm_live(back(a.dgates[t]), a.dh, t, a.lengths, a.lens, copy_live_rows)


def _lstm_backward_columns(p, a):
    runners.columns(threaded.lstm_backward_columns_entry, p, a.go, a.dh_np, a.dc_np, a.gates_np,
                    a.cs_np, a.c0_np, _w_hh_slices(p, a), a.lens,
                    a.reverse, a.dgates_np, buffers.scratch((p.B, p.P), p.cdt))


def _lstm_backward_loop(p, a):
    cdt = p.cdt
    recurrence(lstm_backward_recurrence, threaded.lstm_backward_recurrence_entry, p, a.lengths,
               a.lens, a.go, a.dh_np, a.dc_np, a.gates_np, a.cs_np, a.c0_np, packed(a.w_hh, cdt),
               packed(a.w_hr, cdt) if p.proj else dummy(cdt, 1), a.lens, a.reverse, p.proj,
               a.dgates_np, a.dht_np, a.dhp_np, buffers.scratch((p.B, p.P), cdt))


LSTM_BACKWARD = {"step": _lstm_backward_step, "columns": _lstm_backward_columns,
                 "loop": _lstm_backward_loop}


# ------------------------------------------------------------------------------------ GRU


def gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, need_grad):
    dtype = xg.dtype
    T, B, G = xg.shape
    H = G // 3
    p = plan.forward("gru", T, B, H, None, None, dtype)
    cdt = p.cdt
    out = buffers.empty((T, B, H), cdt)
    h = buffers.state(h0, (B, H), cdt)
    if need_grad:
        gates, hn_lin = buffers.internal((T, B, G), cdt), buffers.internal((T, B, H), cdt)
        gates_np, hn_np = gates.numpy(), hn_lin.numpy()
    else:
        gates_np, hn_np = buffers.scratch((1, B, G), cdt), buffers.scratch((1, B, H), cdt)
    bias = as_numpy(b_hn, cdt) if b_hn is not None else np.zeros(H, NUMPY_DTYPES[cdt])
    a = SimpleNamespace(
        xg=xg, w_hh=w_hh, bias=bias, lengths=lengths, lens=buffers.lengths(lengths, B, T),
        reverse=bool(reverse), need_grad=bool(need_grad), h=h, h_np=h.numpy(),
        out_np=out.numpy(), gates_np=gates_np, hn_np=hn_np)
    GRU_FORWARD[p.route](p, a)
    saved = ()
    if need_grad:
        # Half types: keep the float32 outputs so backward sees the states it computed with.
        saved = (gates, hn_lin) + ((out,) if dtype != cdt else ())
    return cast(out, dtype), cast(h, dtype), saved


def _gru_forward_step(p, a):
    x_np = as_numpy(whole(a.xg), p.cdt)
    recurrent = step_product(a.w_hh.to(p.cdt), p.B, p.T)
    step = StepKernel(gru_forward_step, threaded.gru_forward_step_entry, p, a.lengths, a.lens)
    for t in order(p.T, a.reverse):
        step(t, t if a.need_grad else 0, x_np, recurrent(a.h).numpy(), a.bias, a.h_np, a.lens,
             a.out_np, a.gates_np, a.hn_np)


def _gru_forward_columns(p, a):
    forward_columns(threaded.gru_forward_columns_entry, p, as_numpy(whole(a.xg), p.cdt), a.w_hh,
                    a.h_np, a.bias, a.lens, a.reverse, a.need_grad, a.out_np, a.gates_np,
                    a.hn_np)


def _gru_forward_loop(p, a):
    w_hh_tp, hg_np = packed(a.w_hh.t(), p.cdt), buffers.scratch((p.B, p.G), p.cdt)
    for t0, t1, x_np in time_chunks(a.xg, a.reverse, p.cdt):
        kept = _saved_steps(a.need_grad, t0, t1)
        recurrence(gru_forward_recurrence, threaded.gru_forward_recurrence_entry, p, a.lengths,
                   a.lens, x_np, w_hh_tp, a.bias, a.h_np, from_step(a.lens, t0), a.reverse,
                   a.need_grad, a.out_np[t0:t1], a.gates_np[kept], a.hn_np[kept], hg_np)


GRU_FORWARD = {"step": _gru_forward_step, "columns": _gru_forward_columns,
               "loop": _gru_forward_loop}


def gru_backward(grad_out, grad_hn, saved, w_hh, b_hn, h0, out, lengths, reverse):
    gates, hn_lin = saved[0], saved[1]
    cdt, dtype = gates.dtype, w_hh.dtype
    T, B, G = gates.shape
    H = G // 3
    p = plan.backward("gru", T, B, H, None, cdt)
    dh = buffers.state(grad_hn, (B, H), cdt)
    dxgates = buffers.internal((T, B, G), cdt)
    dhgates = buffers.internal((T, B, G), cdt)
    a = SimpleNamespace(
        w_hh=w_hh, lengths=lengths, lens=buffers.lengths(lengths, B, T), reverse=bool(reverse),
        go=buffers.grad(grad_out, (T, B, H), cdt).numpy(), dh=dh, dh_np=dh.numpy(),
        gates_np=gates.numpy(), hn_np=hn_lin.numpy(), h0_np=as_numpy(h0, cdt),
        hs_np=as_numpy(saved[2] if len(saved) > 2 else out, cdt), dhgates=dhgates,
        dxgates_np=dxgates.numpy(), dhgates_np=dhgates.numpy())
    GRU_BACKWARD[p.route](p, a)
    return cast(dxgates, dtype), cast(dhgates, dtype), cast(dh, dtype)


def _gru_backward_step(p, a):
    back = step_product(a.w_hh.to(p.cdt).t(), p.B, p.T)
    step = StepKernel(gru_backward_step, threaded.gru_backward_step_entry, p, a.lengths, a.lens)
    for t in order(p.T, not a.reverse):
        step(t, a.reverse, a.go, a.dh_np, a.gates_np, a.hn_np, a.h0_np, a.hs_np, a.lens,
             a.dxgates_np, a.dhgates_np)
        mm_live(back(a.dhgates[t]), a.dh, t, a.lengths, a.lens, add_live_rows)


def _gru_backward_columns(p, a):
    runners.columns(threaded.gru_backward_columns_entry, p, a.go, a.dh_np, a.gates_np, a.hn_np,
                    a.h0_np, a.hs_np, _w_hh_slices(p, a), a.lens,
                    a.reverse, a.dxgates_np, a.dhgates_np, buffers.scratch((p.B, p.H), p.cdt))


def _gru_backward_loop(p, a):
    recurrence(gru_backward_recurrence, threaded.gru_backward_recurrence_entry, p, a.lengths,
               a.lens, a.go, a.dh_np, a.gates_np, a.hn_np, a.h0_np, a.hs_np,
               packed(a.w_hh, p.cdt), a.lens, a.reverse, a.dxgates_np, a.dhgates_np,
               buffers.scratch((p.B, p.H), p.cdt))


GRU_BACKWARD = {"step": _gru_backward_step, "columns": _gru_backward_columns,
                "loop": _gru_backward_loop}


# ------------------------------------------------------------------------------------ RNN


def _relu(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


def rnn_forward(xg, w_hh, h0, lengths, reverse, nonlinearity, need_grad):
    relu = _relu(nonlinearity)
    dtype = xg.dtype
    T, B, H = xg.shape
    p = plan.forward("rnn", T, B, H, None, _input_size(xg), dtype)
    cdt = p.cdt
    out = buffers.empty((T, B, H), cdt)
    h = buffers.state(h0, (B, H), cdt)
    a = SimpleNamespace(
        xg=xg, w_hh=w_hh, relu=relu, lengths=lengths, lens=buffers.lengths(lengths, B, T),
        reverse=bool(reverse), h=h, h_np=h.numpy(), out_np=out.numpy())
    RNN_FORWARD[p.route](p, a)
    # Backward needs only the outputs; half types keep the float32 ones.
    saved = (out,) if need_grad and dtype != cdt else ()
    return cast(out, dtype), cast(h, dtype), saved


def _rnn_forward_step(p, a):
    x_np = as_numpy(whole(a.xg), p.cdt)
    recurrent = step_product(a.w_hh.to(p.cdt), p.B, p.T)
    step = StepKernel(rnn_forward_step, threaded.rnn_forward_step_entry, p, a.lengths, a.lens)
    for t in order(p.T, a.reverse):
        step(t, x_np, recurrent(a.h).numpy(), a.h_np, a.lens, a.relu, a.out_np)


def _rnn_forward_columns(p, a):
    forward_columns(threaded.rnn_forward_columns_entry, p, as_numpy(whole(a.xg), p.cdt), a.w_hh,
                    a.h_np, a.lens, a.reverse, a.relu, a.out_np)


def _rnn_forward_fused(p, a):
    operands, scratch = _fused_operands(a, p.cdt)
    recurrence(rnn_forward_fused, threaded.rnn_forward_fused_entry, p, a.lengths, a.lens,
               *operands, a.h_np, a.lens, a.reverse, a.relu, a.out_np, *scratch)


def _rnn_forward_loop(p, a):
    w_hh_tp, hg_np = packed(a.w_hh.t(), p.cdt), buffers.scratch((p.B, p.H), p.cdt)
    for t0, t1, x_np in time_chunks(a.xg, a.reverse, p.cdt):
        recurrence(rnn_forward_recurrence, threaded.rnn_forward_recurrence_entry, p, a.lengths,
                   a.lens, x_np, w_hh_tp, a.h_np, from_step(a.lens, t0), a.reverse, a.relu,
                   a.out_np[t0:t1], hg_np)


RNN_FORWARD = {"step": _rnn_forward_step, "columns": _rnn_forward_columns,
               "fused": _rnn_forward_fused, "loop": _rnn_forward_loop}


def rnn_backward(grad_out, grad_hn, saved, w_hh, h0, out, lengths, reverse, nonlinearity):
    relu = _relu(nonlinearity)
    dtype = w_hh.dtype
    hs = saved[0] if saved else out
    T, B, H = hs.shape
    p = plan.backward("rnn", T, B, H, None, dtype)
    cdt = p.cdt
    dh = buffers.state(grad_hn, (B, H), cdt)
    dgates = buffers.internal((T, B, H), cdt)
    a = SimpleNamespace(
        w_hh=w_hh, relu=relu, lengths=lengths, lens=buffers.lengths(lengths, B, T),
        reverse=bool(reverse), go=buffers.grad(grad_out, (T, B, H), cdt).numpy(), dh=dh,
        dh_np=dh.numpy(), hs_np=as_numpy(hs, cdt), dgates=dgates, dgates_np=dgates.numpy())
    RNN_BACKWARD[p.route](p, a)
    return cast(dgates, dtype), cast(dh, dtype)


def _rnn_backward_step(p, a):
    back = step_product(a.w_hh.to(p.cdt).t(), p.B, p.T)
    step = StepKernel(rnn_backward_step, threaded.rnn_backward_step_entry, p, a.lengths, a.lens)
    for t in order(p.T, not a.reverse):
        step(t, a.go, a.dh_np, a.hs_np, a.lens, a.relu, a.dgates_np)
        mm_live(back(a.dgates[t]), a.dh, t, a.lengths, a.lens, copy_live_rows)


def _rnn_backward_columns(p, a):
    runners.columns(threaded.rnn_backward_columns_entry, p, a.go, a.dh_np, a.hs_np,
                    _w_hh_slices(p, a), a.lens, a.reverse, a.relu,
                    a.dgates_np, buffers.scratch((p.B, p.H), p.cdt))


def _rnn_backward_loop(p, a):
    recurrence(rnn_backward_recurrence, threaded.rnn_backward_recurrence_entry, p, a.lengths,
               a.lens, a.go, a.dh_np, a.hs_np, packed(a.w_hh, p.cdt), a.lens, a.reverse, a.relu,
               a.dgates_np, buffers.scratch((p.B, p.H), p.cdt))


RNN_BACKWARD = {"step": _rnn_backward_step, "columns": _rnn_backward_columns,
                "loop": _rnn_backward_loop}
