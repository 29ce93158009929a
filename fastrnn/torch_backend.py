"""The "torch" backend: torch's own LSTM/GRU/RNN and cells, as torch.nn runs them.

cuDNN on CUDA; on CPU oneDNN's fused RNN primitive for float32 LSTMs without projection or
packing, torch's native per-step ops otherwise. fastrnn/dispatch.py decides when a call comes
here (kernels/tuning.py holds the measurements behind `auto`'s hand-offs).
"""

import torch

from .kernels.gemm import onednn_enabled

NAME = "torch"


def supports(device, dtype):
    return dtype.is_floating_point


def explain(kind, T, B, H, P=None, dtype=torch.float32, device="cpu", I=None):
    """What torch runs for this layer, in a few words."""
    if torch.device(device).type == "cuda":
        return "cuDNN" if torch.backends.cudnn.enabled else "torch's native CUDA ops"
    if (kind == "lstm" and dtype == torch.float32 and (P is None or P == H)
            and onednn_enabled()):
        return "oneDNN's fused LSTM"
    return "torch's native CPU ops, one per step"


def module_forward(module, input, hx):
    """torch.nn's own forward for a fastrnn module (its torch.nn base class's): the call costs
    what torch.nn's does, argument handling included."""
    return module._torch_class.forward(module, input, hx)


def stack(kind, nonlinearity, input, batch_sizes, hx, weights, bias, num_layers, dropout,
          training, bidirectional, batch_first):
    """torch's own LSTM/GRU/RNN over the whole stack, on the caller's input as given (packed
    data with its batch_sizes, or a batched tensor) and hx ((h0, c0) for an LSTM): what
    torch.nn's forward calls. Returns (output, h_n, c_n) for an LSTM, else (output, h_n)."""
    run = {"lstm": torch._VF.lstm, "gru": torch._VF.gru}.get(kind) or (
        torch._VF.rnn_tanh if nonlinearity == "tanh" else torch._VF.rnn_relu)
    if batch_sizes is not None:
        return tuple(run(input, batch_sizes, hx, weights, bias, num_layers, dropout, training,
                         bidirectional))
    return tuple(run(input, hx, weights, bias, num_layers, dropout, training, bidirectional,
                     batch_first))


_CELLS = {"gru": torch._VF.gru_cell, "rnn_tanh": torch._VF.rnn_tanh_cell,
          "rnn_relu": torch._VF.rnn_relu_cell}


def cell(kind, x, states, w_ih, w_hh, b_ih, b_hh):
    """torch's own cell: (h, c) for "lstm", h for the others ("gru", "rnn_tanh", "rnn_relu").
    torch checks its own input, with torch's messages."""
    if kind == "lstm":
        return tuple(torch._VF.lstm_cell(x, states, w_ih, w_hh, b_ih, b_hh))
    return _CELLS[kind](x, states[0], w_ih, w_hh, b_ih, b_hh)
