"""One autograd.Function per cell type: one layer, one direction, one (padded) sequence.

Forward: the input projection for all steps as one GEMM, then the recurrence from the backend.
Backward: the backend's backward recurrence gives the gate gradients of every step; the input,
weight and bias gradients then come from a few large GEMMs. grad_out goes to the backend with
its own strides: the gradient of a sum is an expanded view, and a contiguous copy is the
backend's to make (into memory it reuses) or to skip.

Shapes are time-major: x (T, B, I), h0 (B, P), c0 (B, H); ``lengths`` is None or an int64
tensor (B,) on x's device (see fastrnn.steps for the live-step rule).
"""

import torch
import torch.nn.functional as F

from . import reference
from .kernels.gemm import RepeatedLinear, linear
from .kernels.gemm import weight_grads as gemm_weight_grads
from .steps import previous_states


def _c(t):
    return None if t is None else t.contiguous()


def _input_projection(x, w_ih, bias):
    """x W_ih^T + bias for every step at once: (T, B, I) -> (T, B, G*H)."""
    T, B, I = x.shape
    return linear(x.reshape(T * B, I), w_ih, bias).view(T, B, w_ih.shape[0])


class InputProjection:
    """x W_ih^T + bias on demand, a range of steps at a time, for a backend that sets
    PROJECTS_INPUT (see fastrnn/reference.py). Such a backend can interleave the projection
    with the recurrence in chunks that stay in cache instead of writing all T steps at once: a
    large layer's whole projection is tens of MB of fresh memory, and its page faults alone cost
    ~1 ms per 4 MB."""

    def __init__(self, x, w_ih, bias):
        self.x, self.w_ih, self.bias = x, w_ih, bias
        self.shape = (x.shape[0], x.shape[1], w_ih.shape[0])
        self.dtype, self.device = x.dtype, x.device

    def full(self):
        """All T steps as one (T, B, G*H) tensor."""
        return _input_projection(self.x, self.w_ih, self.bias)

    def chunks(self, steps, reverse):
        """(t0, t1, projection of steps t0..t1-1) for consecutive ranges of ``steps`` steps, in
        time order (the last range first when reverse). Each yielded tensor may be overwritten
        by the next one: use it before asking for more."""
        T, B, G = self.shape
        I = self.x.shape[2]
        product = RepeatedLinear(self.w_ih, min(steps, T) * B, self.bias)
        starts = range(0, T, steps)
        for t0 in (reversed(starts) if reverse else starts):
            t1 = min(t0 + steps, T)
            yield t0, t1, product(self.x[t0:t1].reshape((t1 - t0) * B, I)).view(t1 - t0, B, G)


def _projection(x, w_ih, bias, backend):
    """The input projection as the backend takes it: an InputProjection when the backend sets
    PROJECTS_INPUT, else the (T, B, G*H) tensor."""
    if getattr(backend, "PROJECTS_INPUT", False):
        return InputProjection(x, w_ih, bias)
    return _input_projection(x, w_ih, bias)


def _weight_grads(need, x, w_ih, dxg, dhg, hprev, backend):
    """dx, dW_ih, dW_hh, db_ih, db_hh from the gate gradients of all steps, as GEMMs (the
    weight gradients through the backend's own weight_grads when it has one).

    ``need`` flags which of the five are wanted (None is returned for the others).
    """
    weight_grads = getattr(backend, "weight_grads", gemm_weight_grads)
    T, B, I = x.shape
    dxg2 = dxg.reshape(T * B, dxg.shape[2])
    dhg2 = dxg2 if dhg is dxg else dhg.reshape(T * B, dhg.shape[2])
    dx = linear(dxg2, w_ih.t()).view(T, B, I) if need[0] else None
    x2, hprev2 = x.reshape(T * B, I), hprev.reshape(T * B, hprev.shape[2])
    if dhg2 is dxg2:
        # LSTM/RNN: one gate gradient for both weights (and both biases).
        wanted = [a for a, n in ((x2, need[1]), (hprev2, need[2])) if n]
        grads, db_ih = weight_grads(dxg2, wanted, need[3] or need[4])
        dw_ih = grads.pop(0) if need[1] else None
        dw_hh = grads.pop(0) if need[2] else None
        # The same sum for both biases; a copy, since autograd may reuse grads in place.
        db_hh = (db_ih.clone() if need[3] else db_ih) if need[4] else None
        db_ih = db_ih if need[3] else None
        return dx, dw_ih, dw_hh, db_ih, db_hh
    grads, db_ih = weight_grads(dxg2, [x2] if need[1] else [], need[3])
    dw_ih = grads[0] if need[1] else None
    grads, db_hh = weight_grads(dhg2, [hprev2] if need[2] else [], need[4])
    dw_hh = grads[0] if need[2] else None
    return dx, dw_ih, dw_hh, db_ih, db_hh


def _lstm_rnn_bias(b_ih, b_hh):
    if b_ih is None:
        return None
    return b_ih + b_hh


def _gru_biases(b_ih, b_hh):
    """(bias of the input projection, b_hn), or (None, None) without biases: b_hr and b_hz add
    to the input projection; b_hn sits inside r * (.) and stays apart. Differentiable (the
    create_graph path rebuilds the layer with it)."""
    if b_ih is None:
        return None, None
    H = b_hh.shape[0] // 3
    xbias = b_ih.clone()
    xbias[: 2 * H] += b_hh[: 2 * H]
    return xbias, b_hh[2 * H:].contiguous()


# ------------------------------------------------------------- differentiable gradients
# backward(create_graph=True) (a gradient penalty, second-order methods) needs gradients that
# autograd can differentiate again, as torch.nn's are. The fused kernels' backward is not, so
# that case rebuilds the layer's forward from torch ops (the reference backend's loop) and lets
# autograd differentiate it: slower, and only ever taken when a graph of the gradients is asked for.


def _lstm_graph(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse):
    xg = F.linear(x, w_ih, _lstm_rnn_bias(b_ih, b_hh))
    return reference.lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, False)[:3]


def _gru_graph(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
    xbias, b_hn = _gru_biases(b_ih, b_hh)
    xg = F.linear(x, w_ih, xbias)
    return reference.gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, False)[:2]


def _rnn_graph(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, nonlinearity):
    xg = F.linear(x, w_ih, _lstm_rnn_bias(b_ih, b_hh))
    return reference.rnn_forward(xg, w_hh, h0, lengths, reverse, nonlinearity, False)[:2]


def _graph_grads(ctx, layer, inputs, grads, options):
    """The Function's input gradients as a graph: ``layer(*inputs, *options)`` differentiated by
    autograd with create_graph, so they depend on the inputs and on ``grads`` as they should.
    ``inputs`` are the Function's first arguments; the ones after them (lengths, flags, the
    backend) never need a gradient."""
    need = ctx.needs_input_grad
    wanted = [t for t, n in zip(inputs, need) if n]
    with torch.enable_grad():
        outs = layer(*inputs, *options)
    pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
    got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                   create_graph=True, allow_unused=True))
    return tuple(next(got) if n else None for n in need)


class LSTMFunction(torch.autograd.Function):
    """(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, backend) -> (out, h_n, c_n)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, backend):
        need_grad = any(ctx.needs_input_grad[:8])
        xg = _projection(x, w_ih, _lstm_rnn_bias(b_ih, b_hh), backend)
        out, h_n, c_n, saved = backend.lstm_forward(
            xg, _c(w_hh), _c(w_hr), _c(h0), _c(c0), lengths, reverse, need_grad)
        if need_grad:
            # The inputs as given (not contiguous copies), so that a create_graph backward
            # can differentiate through them.
            ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, out, *saved)
            ctx.reverse, ctx.backend = reverse, backend
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn, grad_cn):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, out, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _graph_grads(ctx, _lstm_graph, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr),
                                (grad_out, grad_hn, grad_cn), (lengths, ctx.reverse))
        w_hh, w_hr, h0, c0 = _c(w_hh), _c(w_hr), _c(h0), _c(c0)
        dg, dh0, dc0, dw_hr = ctx.backend.lstm_backward(
            grad_out, grad_hn.contiguous(), grad_cn.contiguous(), tuple(saved),
            w_hh, w_hr, h0, c0, out, lengths, ctx.reverse)
        hprev = previous_states(out, h0, lengths, ctx.reverse)
        need = ctx.needs_input_grad
        dx, dw_ih, dw_hh, db_ih, db_hh = _weight_grads(
            need[:1] + need[3:7], x, w_ih, dg, dg, hprev, ctx.backend)
        return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, None, None, None


class GRUFunction(torch.autograd.Function):
    """(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, backend) -> (out, h_n)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, backend):
        need_grad = any(ctx.needs_input_grad[:6])
        xbias, b_hn = _gru_biases(b_ih, b_hh)
        xg = _projection(x, w_ih, xbias, backend)
        out, h_n, saved = backend.gru_forward(xg, _c(w_hh), b_hn, _c(h0), lengths, reverse,
                                              need_grad)
        if need_grad:
            ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, b_hn, lengths, out, *saved)
            ctx.reverse, ctx.backend = reverse, backend
        return out, h_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn):
        x, h0, w_ih, w_hh, b_ih, b_hh, b_hn, lengths, out, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _graph_grads(ctx, _gru_graph, (x, h0, w_ih, w_hh, b_ih, b_hh),
                                (grad_out, grad_hn), (lengths, ctx.reverse))
        w_hh, h0 = _c(w_hh), _c(h0)
        dxg, dhg, dh0 = ctx.backend.gru_backward(
            grad_out, grad_hn.contiguous(), tuple(saved),
            w_hh, b_hn, h0, out, lengths, ctx.reverse)
        hprev = previous_states(out, h0, lengths, ctx.reverse)
        need = ctx.needs_input_grad
        dx, dw_ih, dw_hh, db_ih, db_hh = _weight_grads(
            need[:1] + need[2:6], x, w_ih, dxg, dhg, hprev, ctx.backend)
        return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None, None, None


class RNNFunction(torch.autograd.Function):
    """(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, nonlinearity, backend) -> (out, h_n)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, nonlinearity, backend):
        need_grad = any(ctx.needs_input_grad[:6])
        xg = _projection(x, w_ih, _lstm_rnn_bias(b_ih, b_hh), backend)
        out, h_n, saved = backend.rnn_forward(
            xg, _c(w_hh), _c(h0), lengths, reverse, nonlinearity, need_grad)
        if need_grad:
            ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, out, *saved)
            ctx.reverse, ctx.nonlinearity, ctx.backend = reverse, nonlinearity, backend
        return out, h_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn):
        x, h0, w_ih, w_hh, b_ih, b_hh, lengths, out, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _graph_grads(ctx, _rnn_graph, (x, h0, w_ih, w_hh, b_ih, b_hh),
                                (grad_out, grad_hn), (lengths, ctx.reverse, ctx.nonlinearity))
        w_hh, h0 = _c(w_hh), _c(h0)
        dg, dh0 = ctx.backend.rnn_backward(
            grad_out, grad_hn.contiguous(), tuple(saved),
            w_hh, h0, out, lengths, ctx.reverse, ctx.nonlinearity)
        hprev = previous_states(out, h0, lengths, ctx.reverse)
        need = ctx.needs_input_grad
        dx, dw_ih, dw_hh, db_ih, db_hh = _weight_grads(
            need[:1] + need[2:6], x, w_ih, dg, dg, hprev, ctx.backend)
        return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None, None, None, None



# ------------------------------------------------------------------ one prepared step
# The step path (fastrnn/step_path.py) runs a one-step layer under autograd with a step the
# backend prepared once (packed weights, no planning). ``run(x, h0, c0)`` returns (out, h, c,
# saved) as the backend's forward would for T = 1, so the backward is the Function's own.


class LSTMStepFunction(LSTMFunction):
    """(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, run, backend) -> (out, h, c)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, run, backend):
        out, h, c, saved = run(x, h0, c0)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, out, *saved)
        ctx.reverse, ctx.backend = False, backend
        return out, h, c

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        return LSTMFunction.backward(ctx, grad_out, grad_h, grad_c)[:8] + (None, None)


class GRUStepFunction(GRUFunction):
    """(x, h0, w_ih, w_hh, b_ih, b_hh, run, backend) -> (out, h)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, run, backend):
        out, h, _, saved = run(x, h0, None)
        b_hn = None if b_hh is None else b_hh.detach()[2 * h.shape[1]:].contiguous()
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, b_hn, None, out, *saved)
        ctx.reverse, ctx.backend = False, backend
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        return GRUFunction.backward(ctx, grad_out, grad_h)[:6] + (None, None)


class RNNStepFunction(RNNFunction):
    """(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, run, backend) -> (out, h)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, run, backend):
        out, h, _, saved = run(x, h0, None)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, None, out, *saved)
        ctx.reverse, ctx.nonlinearity, ctx.backend = False, nonlinearity, backend
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        return RNNFunction.backward(ctx, grad_out, grad_h)[:6] + (None, None, None)


class _InferenceContext:
    """Stands in for autograd's ctx when nothing needs a gradient (eval, torch.no_grad):
    the Function's forward then runs as a plain call, without autograd's per-call overhead,
    and saves nothing."""

    needs_input_grad = (False,) * 16

    def save_for_backward(self, *tensors):
        raise AssertionError("inference runs save nothing")


_INFERENCE = _InferenceContext()


def tracks_grad(tensors):
    """Whether autograd records a call on these (None and non-tensors never need a grad)."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, backend):
    """One LSTM layer and direction: (out, h_n, c_n). Differentiable when inputs need it."""
    args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, backend)
    if tracks_grad(args[:8]):
        return LSTMFunction.apply(*args)
    return LSTMFunction.forward(_INFERENCE, *args)


def gru(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, backend):
    """One GRU layer and direction: (out, h_n)."""
    args = (x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, backend)
    if tracks_grad(args[:6]):
        return GRUFunction.apply(*args)
    return GRUFunction.forward(_INFERENCE, *args)


def rnn(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, nonlinearity, backend):
    """One Elman RNN layer and direction: (out, h_n)."""
    args = (x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, nonlinearity, backend)
    if tracks_grad(args[:6]):
        return RNNFunction.apply(*args)
    return RNNFunction.forward(_INFERENCE, *args)
