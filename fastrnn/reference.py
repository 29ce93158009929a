"""The reference backend: plain PyTorch time loops, the oracle every kernel is checked against.

This file is also the specification of the backend interface. Every backend module
(`fastrnn.reference`, `fastrnn.kernels.numba`, `fastrnn.kernels.triton`) provides:

    NAME: str
    supports(device, dtype) -> bool
    lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, need_grad)
        -> (out, h_n, c_n, saved)
    lstm_backward(grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse)
        -> (dgates, dh0, dc0, dw_hr)
    gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, need_grad) -> (out, h_n, saved)
    gru_backward(grad_out, grad_hn, saved, w_hh, b_hn, h0, out, lengths, reverse)
        -> (dxgates, dhgates, dh0)
    rnn_forward(xg, w_hh, h0, lengths, reverse, nonlinearity, need_grad) -> (out, h_n, saved)
    rnn_backward(grad_out, grad_hn, saved, w_hh, h0, out, lengths, reverse, nonlinearity)
        -> (dgates, dh0)

and optionally weight_grads(grad, inputs, bias) -> ([grad^T @ a for a in inputs], db or None),
taking over the weight gradients from kernels.gemm.weight_grads (same contract).

One layer, one direction, time-major. T steps, B sequences, H hidden, P = proj_size or H.
- ``xg`` (T, B, G*H): input projection for all steps with the biases folded in. LSTM/RNN:
  x W_ih^T + b_ih + b_hh. GRU: x W_ih^T + b_ih + [b_hr, b_hz, 0]; ``b_hn`` (H,) or None is
  passed apart because it sits inside r * (h W_hn^T + b_hn). A backend that sets
  ``PROJECTS_INPUT = True`` gets an ``ops.InputProjection`` instead (same shape, dtype and
  device; ``full()`` gives the tensor, ``chunks(steps, reverse)`` a range of steps at a time).
- ``w_hh`` (G*H, P); ``w_hr`` (P, H) or None; ``h0`` (B, P); ``c0`` (B, H).
- ``lengths``: None (all sequences have T steps) or an int64 tensor (B,) on xg's device.
  Step t of sequence b is live when t < lengths[b], in both directions (see fastrnn.steps).
  A dead step keeps the state and writes zeros to ``out``; its gate gradients are zero.
- ``reverse``: walk t = T-1..0 instead of 0..T-1.
- ``nonlinearity``: "tanh" or "relu".
- Outputs have the input dtype; float16/bfloat16 compute in float32 inside.
- ``saved`` is a tuple of tensors the backend keeps for its own backward (may be empty when
  ``need_grad`` is False). All tensors passed in are contiguous and share one dtype and device,
  except ``grad_out``, which may have any strides (the gradient of a sum is an expanded view).
- Backward returns the gradients of the gate pre-activations for every step: ``dxgates`` is
  d/d(xg), ``dhgates`` is d/d(h_{t-1} W_hh^T + b_hh) (the same tensor for LSTM and RNN, whose
  gates are plain sums). The caller turns them into dx, dW_ih, dW_hh and the biases with GEMMs.
  ``dw_hr`` is the projection's weight gradient (None without projection).
"""

import torch

from .steps import active_mask, previous_states

NAME = "reference"


def supports(device, dtype):
    return dtype.is_floating_point


def _compute_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _up(*tensors):
    return [None if t is None else t.to(_compute_dtype(t.dtype)) for t in tensors]


def _order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _live(mask, t):
    return None if mask is None else mask[t]


def _keep(live, new, old):
    return new if live is None else torch.where(live, new, old)


# ----------------------------------------------------------------------------------- LSTM


def lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, need_grad):
    dtype = xg.dtype
    xg, w_hh, w_hr, h, c = _up(xg, w_hh, w_hr, h0, c0)
    T, B, _ = xg.shape
    H = c.shape[1]
    mask = active_mask(lengths, T, xg.device)
    out = xg.new_zeros(T, B, h.shape[1])
    gates = xg.new_zeros(T, B, 4 * H)
    cs = xg.new_zeros(T, B, H)
    hpre = xg.new_zeros(T, B, H) if w_hr is not None else None
    for t in _order(T, reverse):
        live = _live(mask, t)
        i, f, g, o = (xg[t] + h @ w_hh.t()).chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        hp = o * torch.tanh(c_new)
        h_new = hp @ w_hr.t() if w_hr is not None else hp
        gates[t] = torch.cat([i, f, g, o], 1)
        cs[t] = c_new
        if hpre is not None:
            hpre[t] = hp
        out[t] = _keep(live, h_new, torch.zeros_like(h_new))
        h, c = _keep(live, h_new, h), _keep(live, c_new, c)
    saved = (gates, cs) + ((hpre,) if hpre is not None else ()) if need_grad else ()
    return out.to(dtype), h.to(dtype), c.to(dtype), saved


def lstm_backward(grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse):
    dtype = grad_out.dtype
    grad_out, dh, dc, w_hh, w_hr, c0 = _up(grad_out, grad_hn, grad_cn, w_hh, w_hr, c0)
    gates, cs = saved[0], saved[1]
    hpre = saved[2] if w_hr is not None else None
    T, B, _ = gates.shape
    mask = active_mask(lengths, T, gates.device)
    c_prev_all = previous_states(cs, c0, lengths, reverse)
    dgates = torch.zeros_like(gates)
    dw_hr = torch.zeros_like(w_hr) if w_hr is not None else None
    for t in _order(T, not reverse):
        live = _live(mask, t)
        dh_t = dh + (grad_out[t] if live is None else grad_out[t] * live)
        if w_hr is not None:
            dw_hr += dh_t.t() @ (hpre[t] if live is None else hpre[t] * live)
            dhp = dh_t @ w_hr
        else:
            dhp = dh_t
        i, f, g, o = gates[t].chunk(4, 1)
        tc = torch.tanh(cs[t])
        dc_t = dc + dhp * o * (1 - tc * tc)
        dpre = torch.cat([
            dc_t * g * i * (1 - i),
            dc_t * c_prev_all[t] * f * (1 - f),
            dc_t * i * (1 - g * g),
            dhp * tc * o * (1 - o),
        ], 1)
        if live is not None:
            dpre = dpre * live
        dgates[t] = dpre
        dh = _keep(live, dpre @ w_hh, dh)
        dc = _keep(live, dc_t * f, dc)
    dw_hr = dw_hr.to(dtype) if dw_hr is not None else None
    return dgates.to(dtype), dh.to(dtype), dc.to(dtype), dw_hr


# ------------------------------------------------------------------------------------ GRU


def gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, need_grad):
    dtype = xg.dtype
    xg, w_hh, b_hn, h = _up(xg, w_hh, b_hn, h0)
    T, B, _ = xg.shape
    H = h.shape[1]
    mask = active_mask(lengths, T, xg.device)
    out = xg.new_zeros(T, B, H)
    gates = xg.new_zeros(T, B, 3 * H)
    hn_lin = xg.new_zeros(T, B, H)
    for t in _order(T, reverse):
        live = _live(mask, t)
        xr, xz, xn = xg[t].chunk(3, 1)
        hr, hz, hn = (h @ w_hh.t()).chunk(3, 1)
        if b_hn is not None:
            hn = hn + b_hn
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        gates[t] = torch.cat([r, z, n], 1)
        hn_lin[t] = hn
        out[t] = _keep(live, h_new, torch.zeros_like(h_new))
        h = _keep(live, h_new, h)
    saved = (gates, hn_lin) if need_grad else ()
    return out.to(dtype), h.to(dtype), saved


def gru_backward(grad_out, grad_hn, saved, w_hh, b_hn, h0, out, lengths, reverse):
    dtype = grad_out.dtype
    grad_out, dh, w_hh, h0, out = _up(grad_out, grad_hn, w_hh, h0, out)
    gates, hn_lin = saved
    T, B, _ = gates.shape
    mask = active_mask(lengths, T, gates.device)
    h_prev_all = previous_states(out, h0, lengths, reverse)
    dxgates = torch.zeros_like(gates)
    dhgates = torch.zeros_like(gates)
    for t in _order(T, not reverse):
        live = _live(mask, t)
        dh_t = dh + (grad_out[t] if live is None else grad_out[t] * live)
        r, z, n = gates[t].chunk(3, 1)
        dn_pre = dh_t * (1 - z) * (1 - n * n)
        dz_pre = dh_t * (h_prev_all[t] - n) * z * (1 - z)
        dr_pre = dn_pre * hn_lin[t] * r * (1 - r)
        dx = torch.cat([dr_pre, dz_pre, dn_pre], 1)
        dhg = torch.cat([dr_pre, dz_pre, dn_pre * r], 1)
        if live is not None:
            dx, dhg = dx * live, dhg * live
        dxgates[t], dhgates[t] = dx, dhg
        dh = _keep(live, dh_t * z + dhg @ w_hh, dh)
    return dxgates.to(dtype), dhgates.to(dtype), dh.to(dtype)


# ------------------------------------------------------------------------------------ RNN


def _activate(x, nonlinearity):
    return torch.tanh(x) if nonlinearity == "tanh" else torch.relu(x)


def rnn_forward(xg, w_hh, h0, lengths, reverse, nonlinearity, need_grad):
    dtype = xg.dtype
    xg, w_hh, h = _up(xg, w_hh, h0)
    T, B, H = xg.shape
    mask = active_mask(lengths, T, xg.device)
    out = xg.new_zeros(T, B, H)
    for t in _order(T, reverse):
        live = _live(mask, t)
        h_new = _activate(xg[t] + h @ w_hh.t(), nonlinearity)
        out[t] = _keep(live, h_new, torch.zeros_like(h_new))
        h = _keep(live, h_new, h)
    # Backward needs only the outputs, which the caller keeps anyway.
    return out.to(dtype), h.to(dtype), ()


def rnn_backward(grad_out, grad_hn, saved, w_hh, h0, out, lengths, reverse, nonlinearity):
    dtype = grad_out.dtype
    grad_out, dh, w_hh, out = _up(grad_out, grad_hn, w_hh, out)
    T, B, H = out.shape
    mask = active_mask(lengths, T, out.device)
    dgates = torch.zeros_like(out)
    for t in _order(T, not reverse):
        live = _live(mask, t)
        dh_t = dh + (grad_out[t] if live is None else grad_out[t] * live)
        h_t = out[t]
        slope = 1 - h_t * h_t if nonlinearity == "tanh" else (h_t > 0).to(h_t.dtype)
        dpre = dh_t * slope
        if live is not None:
            dpre = dpre * live
        dgates[t] = dpre
        dh = _keep(live, dpre @ w_hh, dh)
    return dgates.to(dtype), dh.to(dtype)
