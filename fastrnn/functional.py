"""One call over a whole (multi-layer, bi-directional) stack: lstm(), gru(), rnn().

The arguments follow torch's own functional RNNs (``torch._VF.lstm`` and friends): ``weights``
is the flat list ``[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`` for each layer and direction in order
``layer * num_directions + direction``, exactly ``torch.nn.LSTM._flat_weights``.

``input`` is batched 3-D, (T, B, I) or (B, T, I) with ``batch_first``, or the packed data
(N, I) of a PackedSequence together with its ``batch_sizes``. Packed input runs as one padded
batch with per-sequence lengths, never sequence by sequence, and comes back packed.
"""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import dispatch, ops, torch_backend

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def lstm(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
         bidirectional=False, batch_first=False, batch_sizes=None, backend="auto"):
    """Returns (output, h_n, c_n). ``hx`` is (h0, c0) or None for zeros."""
    return _stack("lstm", input, hx, weights, bias, num_layers, dropout, training,
                  bidirectional, batch_first, batch_sizes, backend)


def gru(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, batch_sizes=None, backend="auto"):
    """Returns (output, h_n). ``hx`` is h0 or None for zeros."""
    return _stack("gru", input, hx, weights, bias, num_layers, dropout, training,
                  bidirectional, batch_first, batch_sizes, backend)


def rnn(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, batch_sizes=None, nonlinearity="tanh",
        backend="auto"):
    """Returns (output, h_n). ``nonlinearity`` is "tanh" or "relu"."""
    return _stack("rnn", input, hx, weights, bias, num_layers, dropout, training,
                  bidirectional, batch_first, batch_sizes, backend, nonlinearity)


def _layer_weights(weights, index, per_layer, bias):
    w = list(weights[index * per_layer:(index + 1) * per_layer])
    w_ih, w_hh = w[0], w[1]
    b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
    w_hr = w[4 if bias else 2] if len(w) > (4 if bias else 2) else None
    return w_ih, w_hh, b_ih, b_hh, w_hr


def _check(kind, x, weights, bias, num_layers, num_directions):
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    per = 2 + 2 * bool(bias)
    count = len(weights) // (num_layers * num_directions)
    if (count * num_layers * num_directions != len(weights)
            or count not in (per, per + (kind == "lstm"))):
        raise ValueError(
            f"expected {per} weights per layer and direction ({num_layers} layers, "
            f"{num_directions} directions), got {len(weights)} weights in all")
    if x.dim() != 3:
        raise ValueError(f"{kind.upper()}: expected a 3-D input (or packed data with batch_sizes), "
                         f"got {x.dim()}-D")
    if x.size(0) == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    w_ih = weights[0]
    if x.size(-1) != w_ih.size(1):
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {w_ih.size(1)}, "
            f"got {x.size(-1)}")
    if not x.dtype.is_floating_point or x.dtype != w_ih.dtype:
        raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype ({w_ih.dtype}). "
                         f"Convert input: input.to({w_ih.dtype}), or convert the weights")
    return count


def _check_state(name, state, expected, dtype):
    if tuple(state.shape) != expected:
        raise RuntimeError(f"Expected {name} size {expected}, got {list(state.shape)}")
    if state.dtype != dtype:
        raise RuntimeError(f"{name} dtype ({state.dtype}) does not match input dtype ({dtype}); "
                         f"convert it with .to({dtype})")


def _stack(kind, input, hx, weights, bias, num_layers, dropout, training, bidirectional,
           batch_first, batch_sizes, backend, nonlinearity="tanh", choice=None):
    # choice: what dispatch.choose() said for this call, when a module already asked.
    if kind == "rnn" and nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    num_directions = 2 if bidirectional else 1
    lengths = None
    if batch_sizes is not None:
        # Packed data (N, I) -> padded (T, B, I) plus lengths; differentiable both ways.
        x, lengths_cpu = pad_packed_sequence(PackedSequence(input, batch_sizes))
        lengths = lengths_cpu.to(x.device)
    else:
        x = input.transpose(0, 1) if batch_first and input.dim() == 3 else input
    per_layer = _check(kind, x, weights, bias, num_layers, num_directions)
    B = x.shape[1]
    _, w_hh0, _, _, w_hr0 = _layer_weights(weights, 0, per_layer, bias)
    H = w_hh0.size(0) // _GATES[kind]
    P = w_hr0.size(0) if w_hr0 is not None else H

    LD = num_layers * num_directions
    if kind == "lstm":
        h0, c0 = (None, None) if hx is None else hx
    else:
        h0, c0 = hx, None
    if h0 is None:
        h0 = x.new_zeros(LD, B, P)
    if kind == "lstm" and c0 is None:
        c0 = x.new_zeros(LD, B, H)
    _check_state("hidden[0]" if kind == "lstm" else "hidden", h0, (LD, B, P), x.dtype)
    if kind == "lstm":
        _check_state("hidden[1]", c0, (LD, B, H), x.dtype)
    if choice is None:
        choice = dispatch.choose(dispatch.stack_call(
            kind, backend, x, (h0, c0), weights, w_hr0 is not None, batch_sizes is not None,
            dropout > 0 and training and num_layers > 1))
    if choice.name == "torch":
        hx = (h0, c0) if kind == "lstm" else h0
        return torch_backend.stack(kind, nonlinearity, input, batch_sizes, hx, weights, bias,
                                   num_layers, dropout, training, bidirectional, batch_first)
    module = choice.module

    layer_input = x
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            w_ih, w_hh, b_ih, b_hh, w_hr = _layer_weights(weights, index, per_layer, bias)
            reverse = direction == 1
            if kind == "lstm":
                out, h, c = ops.lstm(layer_input, h0[index], c0[index], w_ih, w_hh,
                                               b_ih, b_hh, w_hr, lengths, reverse, module)
                c_n.append(c)
            elif kind == "gru":
                out, h = ops.gru(layer_input, h0[index], w_ih, w_hh, b_ih, b_hh,
                                           lengths, reverse, module)
            else:
                out, h = ops.rnn(layer_input, h0[index], w_ih, w_hh, b_ih, b_hh,
                                           lengths, reverse, nonlinearity, module)
            outputs.append(out)
            h_n.append(h)
        layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, 2)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, True)

    output = layer_input
    if batch_sizes is not None:
        output = pack_padded_sequence(output, lengths_cpu).data
    elif batch_first:
        output = output.transpose(0, 1)
    h_n = _stack_states(h_n)
    if kind == "lstm":
        return output, h_n, _stack_states(c_n)
    return output, h_n


def _stack_states(states):
    # One layer and direction is the common case; unsqueeze is cheaper than stack there.
    return states[0].unsqueeze(0) if len(states) == 1 else torch.stack(states)


# ---------------------------------------------------------------------------------- cells


def _check_cell(name, x, states, w_ih, w_hh):
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D input (batch, input_size), got {x.dim()}-D")
    if x.size(1) != w_ih.size(1):
        raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} "
                           f"expected {w_ih.size(1)}")
    if not x.dtype.is_floating_point or x.dtype != w_ih.dtype:
        raise RuntimeError(f"{name} input dtype ({x.dtype}) does not match weight dtype "
                           f"({w_ih.dtype}); convert the input with .to({w_ih.dtype})")
    for k, h in enumerate(states):
        if h.dim() != 2 or h.size(0) != x.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{k} batch size "
                               f"{h.size(0) if h.dim() else 0}")
        if h.size(1) != w_hh.size(1):
            raise RuntimeError(f"hidden{k} has inconsistent hidden_size: got {h.size(1)}, "
                               f"expected {w_hh.size(1)}")
        if h.dtype != x.dtype:
            raise RuntimeError(f"hidden{k} dtype ({h.dtype}) does not match input dtype "
                               f"({x.dtype}); convert it with .to({x.dtype})")


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, backend="auto"):
    """One LSTM step on batched (B, I) input; ``hx`` is (h, c). Returns (h', c')."""
    h, c = hx
    choice = dispatch.choose(dispatch.cell_call("lstm", backend, input, (h, c), w_ih, w_hh,
                                                b_ih, b_hh))
    if choice.name == "torch":
        return torch_backend.cell("lstm", input, (h, c), w_ih, w_hh, b_ih, b_hh)
    _check_cell("LSTMCell", input, (h, c), w_ih, w_hh)
    module = choice.module
    _, h1, c1 = ops.lstm(input.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh, None,
                                   None, False, module)
    return h1, c1


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, backend="auto"):
    """One GRU step on batched (B, I) input. Returns h'."""
    choice = dispatch.choose(dispatch.cell_call("gru", backend, input, (hx,), w_ih, w_hh,
                                                b_ih, b_hh))
    if choice.name == "torch":
        return torch_backend.cell("gru", input, (hx,), w_ih, w_hh, b_ih, b_hh)
    _check_cell("GRUCell", input, (hx,), w_ih, w_hh)
    module = choice.module
    return ops.gru(input.unsqueeze(0), hx, w_ih, w_hh, b_ih, b_hh, None, False, module)[1]


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", backend="auto"):
    """One Elman RNN step on batched (B, I) input. Returns h'."""
    if nonlinearity not in ("tanh", "relu"):
        raise RuntimeError(f"Unknown nonlinearity: {nonlinearity}; select 'tanh' or 'relu'")
    choice = dispatch.choose(dispatch.cell_call("rnn", backend, input, (hx,), w_ih, w_hh,
                                                b_ih, b_hh))
    if choice.name == "torch":
        return torch_backend.cell("rnn_" + nonlinearity, input, (hx,), w_ih, w_hh, b_ih, b_hh)
    _check_cell("RNNCell", input, (hx,), w_ih, w_hh)
    module = choice.module
    return ops.rnn(input.unsqueeze(0), hx, w_ih, w_hh, b_ih, b_hh, None, False,
                             nonlinearity, module)[1]
