"""When `auto` hands a call to torch's own implementation instead of fastrnn's kernels.

On CUDA: every call, stacks and cells (cuDNN measured faster than the Triton kernels at every
size and dtype; see the CUDA section below). The rest of this note is about the CPU.

torch runs float32 CPU LSTMs (no projection, not packed) through oneDNN's fused RNN primitive,
which uses every core even for a single sequence and runs close to the machine's GEMM rate.
benchmarks/native_lstm_crossover.py (T = 100) and benchmarks/short_sequence_crossover.py (T = 2-64)
measure fastrnn's numba backend against it (input size = H, recorded in
benchmarks/results/cpu-native-lstm-2026-11-26.md and cpu-short-lstm-2026-11-26-zen4.md), and
`auto` calls torch at the sizes where torch was faster, so swapping torch.nn.LSTM for
fastrnn.LSTM does not slow an LSTM down there:
- from 32 steps, inference (three runs at T = 100): torch was 1.00-1.29x faster at H = 128
  with 1-4 rows, H = 256 with 4-8 rows and H = 512 with 8-32 rows; fastrnn was faster or even
  everywhere else (H = 64: 1.04-1.47x; one or two rows of H = 256-512: up to 1.27x; H = 1024:
  1.1-2.9x);
- from 32 steps, training (forward and backward): torch's were 2-13% faster at H = 64 with
  16-64 rows, 128 with up to 32 rows and 256 with 4-16 rows; fastrnn was up to 1.3x faster at
  the other sizes (1.25x at 64 rows of H = 128, 1.15x at one row of H = 512);
- below 32 steps fastrnn's fixed cost per call (packing the weights, Python) weighs more, and
  torch won at most sizes from 16 rows and at H = 128-256 with few rows, by 5-80%; fastrnn kept
  one row of H = 256, up to 4 rows of H = 64 and of H = 512 (up to 2.8x faster there), and in
  training up to 4 rows of H = 256 and 16-64 rows of H = 256-512 (_LSTM_SHORT_TORCH).
A hidden size takes the table row of the smallest measured size at least as large; beyond 512
(and, below 32 steps, beyond 64 rows) the longer-sequence rule applies. Those bands are the
AMD EPYC ones; Intel CPUs have their own, measured on a Xeon (_INFERENCE_TORCH_ROWS_BY_FAMILY,
kernels/cpu.py).

Everything else keeps fastrnn's kernels: GRU and RNN (torch runs them unfused: fastrnn is
1.2-10x faster), projections and packed input (torch leaves oneDNN for those), other dtypes, an
explicit backend="numba", and FASTRNN_BACKEND naming a backend.

The cells (LSTMCell, GRUCell, RNNCell) are one step: two GEMMs and a pointwise update, nothing
to fuse across time. fastrnn's single step wins only where its fused pointwise update outweighs
its extra Python per call, which measured (benchmarks/cell_crossover.py, recorded in
benchmarks/results/cpu-cells-2026-11-26-zen4.md) as float32 inference with a recurrent weight of
4 MiB or more (LSTM/GRU/RNN H = 1024: 0.40-0.92x torch's time), or of 1 MiB or more from 64 rows
(LSTM H = 256: 0.76-0.80x). Everywhere else torch's own cell was faster: up to 3.4x for small
inference calls, and 1.0-2.3x for training at every measured size but two near-ties. There
`auto` calls torch's cell.

GRU and RNN stacks called with a few time steps (two to eight) are the same story with a few
steps instead of one: torch's own GRU/RNN measured faster at small batches and short sequences
(up to 1.5-2.9x at two steps), fastrnn from about eight steps at every measured size, and `auto`
follows the measured table (_FEW_STEPS_TORCH_MAX).
"""

import os

import torch
import torch.autograd.forward_ad as _forward_ad
from torch.nn.utils.rnn import PackedSequence

from . import backends
from .kernels import cpu
from .kernels.gemm import onednn_enabled
from .ops import tracks_grad

# From 32 steps: hidden size bucket -> (fewest, most) rows where torch's fused LSTM was faster
# (module docstring), for inference and for training, per CPU family (kernels/cpu.py). The AMD
# tables are the Zen 4 measurements above. On Intel Xeons torch's LSTM ran nearer the GEMM rate
# while fastrnn's loops lost more once the weights outgrew L2 (a second Xeon, 48 KiB L1d, 2 MiB
# L2, T = 100, numba's best strategy against torch; benchmarks/native_lstm_crossover.py,
# recorded in benchmarks/results/cpu-lstm-rules-2026-11-26-xeon.md):
# - inference: torch 1.08-1.29x faster from 8 rows of H = 256, 1.12-1.23x from 32 rows of
#   H = 512 (even at 16) and 1.1-1.2x from 32 rows of H = 1024; fastrnn faster (1.02-2.4x) or
#   even (0.96-1.01 in repeated medians at 32-64 rows of H = 128) at fewer rows and at every
#   batch of H = 64-128 (where the AMD table hands 1-4 rows of H = 128 to torch, the Xeon
#   measured fastrnn 1.18-1.51x faster);
# - training: within ~15% either way at most sizes (the runs disagreed by that much); torch
#   faster at 16-64 rows of H = 64, 4-32 of H = 128, 4-16 of H = 256 and 8-32 of H = 512 (up to
#   1.08x in repeated medians), fastrnn at 1-2 rows of H = 128 (1.10-1.15x) and at 64 rows of
#   H = 128-256.
# Re-measured on that Xeon after the product's prefetch, the fused projection from 24 rows per
# thread and the Intel GEMM rules (benchmarks/native_lstm_crossover.py, twice each; recorded in
# benchmarks/results/cpu-native-lstm-2026-11-26-xeon.md):
# - inference: torch still 1.06-1.15x faster at 8-32 rows of H = 256 (64 rows: 0.98 / 1.02) and
#   1.05-1.14x at 32-64 rows of H = 512; 16 rows of H = 512 went to fastrnn (0.94x torch's time);
# - training: torch faster only at 16-32 rows of H = 128 (1.02-1.07x, one 0.98) and 8-16 rows of
#   H = 256 (1.08-1.12x); fastrnn 1.0-1.6x faster everywhere else, H = 64 and 512 included.
_INFERENCE_TORCH_ROWS_BY_FAMILY = {
    cpu.AMD: {128: (1, 4), 256: (4, 8), 512: (8, 32)},
    cpu.INTEL: {256: (8, 64), 512: (32, 64), 1024: (32, 64)},
}
_TRAINING_TORCH_ROWS_BY_FAMILY = {
    cpu.AMD: {64: (16, 64), 128: (1, 32), 256: (4, 16)},
    cpu.INTEL: {128: (16, 32), 256: (8, 16)},
}
_INFERENCE_TORCH_ROWS = _INFERENCE_TORCH_ROWS_BY_FAMILY[cpu.family()]
_TRAINING_TORCH_ROWS = _TRAINING_TORCH_ROWS_BY_FAMILY[cpu.family()]
# The hidden sizes of those tables' buckets (a size takes the row of the smallest bucket at
# least as large; beyond the last, nothing was measured and fastrnn keeps the call).
_TORCH_ROWS_HIDDEN = (64, 128, 256, 512, 1024)
# Below that many steps: whether torch's LSTM was faster, per batch bucket (up to 1, 4, 16, 64
# rows) and hidden-size bucket (up to 64, 128, 256, 512), for inference and for training.
_LSTM_SHORT_STEPS = 32
_LSTM_SHORT_TORCH = {
    False: ((False, True, False, False), (False, True, True, False),
            (True, True, True, True), (True, True, True, False)),
    True: ((False, True, False, False), (False, True, False, False),
           (True, True, False, False), (True, True, False, False)),
}


def _torch_rows(table, B, H):
    """Whether B rows of hidden size H fall in the table's band for H's bucket (the hidden
    sizes of _TORCH_ROWS_HIDDEN)."""
    h = _bucket(H, _TORCH_ROWS_HIDDEN)
    band = None if h is None else table.get(_TORCH_ROWS_HIDDEN[h])
    return band is not None and band[0] <= B <= band[1]


def _faster(B, H):
    return _torch_rows(_INFERENCE_TORCH_ROWS, B, H)


def _faster_training(B, H):
    return _torch_rows(_TRAINING_TORCH_ROWS, B, H)


def _lstm_faster_in_torch(training, T, B, H):
    """The measured LSTM rule for T steps of B rows of hidden size H (module docstring)."""
    if T < _LSTM_SHORT_STEPS:
        b, h = _bucket(B, _FEW_STEPS_BATCHES), _bucket(H, _FEW_STEPS_HIDDEN)
        if b is not None and h is not None:
            return _LSTM_SHORT_TORCH[training][b][h]
    return _faster_training(B, H) if training else _faster(B, H)


# ------------------------------------------------------------------------------ CUDA

# On CUDA every call `auto` is in charge of goes to torch's own RNNs (cuDNN) and cells: on an
# NVIDIA H200 fastrnn's Triton kernels ran at 0.02-0.55x torch's speed on every row of the GPU
# grid (float32, bfloat16, float16; inference and training), and its single step at 0.19-0.5x
# torch's cells (benchmarks/results/gpu-2026-11-26-h200.md). backend="triton" still runs them.


def _auto_in_charge(backend):
    return backend == "auto" and (os.environ.get(backends.ENV_VAR) or "auto") == "auto"


def takes_cuda(backend, x):
    """Whether a stack call on a CUDA tensor goes to torch's own RNN (cuDNN)."""
    return x.device.type == "cuda" and _auto_in_charge(backend)


def _torch_is_faster(device, dtype, T, B, H, training=False):
    """auto is in charge (no FASTRNN_BACKEND naming a backend), torch would run oneDNN's fused
    LSTM for this device and dtype, and this size measured faster there (for training: forward
    and backward)."""
    return (_auto_in_charge("auto")
            and torch.device(device).type == "cpu" and dtype == torch.float32
            and onednn_enabled() and _lstm_faster_in_torch(training, T, B, H))


def explain(kind, T, B, H, dtype, device):
    """A line saying where `auto` runs torch's LSTM for this layer (inference, training), or
    None."""
    if torch.device(device).type == "cuda" and _auto_in_charge("auto"):
        return "torch's own RNN (cuDNN; faster than fastrnn's Triton kernels, fastrnn/native.py)"
    if kind != "lstm":
        return None
    modes = [mode for mode, training in (("inference", False), ("training", True))
             if _torch_is_faster(device, dtype, T, B, H, training)]
    if not modes:
        return None
    return f"{' and '.join(modes)}: torch's fused oneDNN LSTM (faster here, fastrnn/native.py)"


def takes_lstm(backend, x, h0, c0, weights, projected, packed, dropout, training, num_layers):
    """Whether this LSTM stack call (time-major x, validated) goes to torch instead."""
    if backend != "auto" or projected or packed:
        return False        # torch leaves oneDNN for projections and packed input
    if dropout > 0 and training and num_layers > 1:
        return False        # dropout between layers stays fastrnn's, one RNG stream per model
    return _torch_is_faster(x.device, x.dtype, x.shape[0], x.shape[1], h0.shape[-1],
                            tracks_grad([x, h0, c0, *weights]))


# ----------------------------------------------------------------------------------- cells

# The weights from which fastrnn's single step was faster in inference (module docstring).
_CELL_MIN_WEIGHT_BYTES = 4 << 20
_CELL_MIN_WEIGHT_BYTES_MANY_ROWS = 1 << 20
_CELL_MANY_ROWS = 64


def _cell_faster_in_torch(B, weight_bytes):
    return not (weight_bytes >= _CELL_MIN_WEIGHT_BYTES
                or (weight_bytes >= _CELL_MIN_WEIGHT_BYTES_MANY_ROWS and B >= _CELL_MANY_ROWS))


def _auto_float32_cpu(backend, x):
    """auto is in charge (no FASTRNN_BACKEND naming a backend) of a float32 CPU call: the only
    calls the hand-offs were measured for (half types keep fastrnn's float32 math)."""
    return _auto_in_charge(backend) and x.device.type == "cpu" and x.dtype == torch.float32


def _step_goes_to_torch(backend, x, tensors, w_hh):
    """A single step of B = x.shape[-2] rows (a cell, or a one-step GRU/RNN stack)."""
    if x.device.type == "cuda":
        return _auto_in_charge(backend)   # torch's cells: 2-5x faster than Triton's step
    if not _auto_float32_cpu(backend, x):
        return False
    if tracks_grad(tensors):
        return True
    return _cell_faster_in_torch(x.shape[-2], w_hh.numel() * w_hh.element_size())


def takes_cell(backend, x, states, w_ih, w_hh, b_ih, b_hh):
    """Whether this cell call (batched) goes to torch's own cell instead."""
    return capture() is not None or _step_goes_to_torch(backend, x, [x, *states, w_ih, w_hh, b_ih, b_hh], w_hh)


def cell(kind, x, states, w_ih, w_hh, b_ih, b_hh):
    """torch's own cell: (h, c) for "lstm", h for the others ("gru", "rnn_tanh", "rnn_relu")."""
    if kind == "lstm":
        return tuple(torch._VF.lstm_cell(x, states, w_ih, w_hh, b_ih, b_hh))
    step = {"gru": torch._VF.gru_cell, "rnn_tanh": torch._VF.rnn_tanh_cell,
            "rnn_relu": torch._VF.rnn_relu_cell}[kind]
    return step(x, states[0], w_ih, w_hh, b_ih, b_hh)


# Short GRU/RNN sequences (benchmarks/short_sequence_crossover.py, recorded in
# benchmarks/results/cpu-short-sequences-2026-11-26-zen4.md): with a few steps there is little
# to fuse across time, and fastrnn's fixed costs per call (packing W_hh for its compiled loop,
# ~70 us of Python and argument conversion against torch's ~35 us of C++) decide. The most steps
# at which torch's own GRU/RNN measured faster (by more than 5%, at that and every shorter
# measured length), per batch (up to 1, 4, 16, 64
# rows) and hidden size (up to 64, 128, 256, 512); 0: fastrnn was faster even at 2 steps.
# Beyond 64 rows or a hidden size of 512 nothing was measured and fastrnn keeps the call.
_FEW_STEPS_BATCHES = (1, 4, 16, 64)
_FEW_STEPS_HIDDEN = (64, 128, 256, 512)
_FEW_STEPS_TORCH_MAX = {
    ("gru", False): ((4, 4, 8, 4), (3, 4, 4, 2), (4, 4, 6, 3), (3, 3, 3, 2)),
    ("gru", True): ((0, 0, 3, 2), (0, 0, 0, 0), (0, 2, 3, 2), (2, 2, 2, 0)),
    ("rnn", False): ((8, 8, 8, 8), (6, 6, 4, 4), (4, 4, 4, 6), (4, 4, 3, 3)),
    ("rnn", True): ((4, 4, 3, 3), (4, 3, 3, 2), (3, 3, 4, 4), (4, 4, 4, 2)),
}


_FEW_STEPS_MAX = max(max(max(row) for row in table) for table in _FEW_STEPS_TORCH_MAX.values())


def _bucket(value, limits):
    for k, limit in enumerate(limits):
        if value <= limit:
            return k
    return None


def _few_steps_faster_in_torch(kind, training, T, B, H):
    b, h = _bucket(B, _FEW_STEPS_BATCHES), _bucket(H, _FEW_STEPS_HIDDEN)
    if b is None or h is None:
        return False
    return T <= _FEW_STEPS_TORCH_MAX[kind, training][b][h]


def _short_call_to_torch(kind, grad, T, B, w_hh):
    """The rule for a float32 CPU GRU/RNN call of T steps that auto is in charge of. One step:
    each layer is a cell step, and the cell rule above applies (GRU/RNN T = 1: torch 1.2-2.0x
    faster in inference and 1.0-1.75x in training at B = 1-16, H = 64-256; fastrnn 0.63-0.82x
    torch's time at 64 x 1024 inference). Two to eight steps: the measured table above."""
    if T == 1:
        return grad or _cell_faster_in_torch(B, w_hh.numel() * w_hh.element_size())
    return T <= _FEW_STEPS_MAX and _few_steps_faster_in_torch(kind, grad, T, B, w_hh.shape[1])


def takes_few_steps(backend, kind, x, h0, weights, packed, dropout, training, num_layers):
    """Whether this GRU or RNN stack call (time-major x, validated) goes to torch's own GRU/RNN
    because it has only a few time steps (_short_call_to_torch). LSTMs keep the LSTM rule:
    fastrnn's backward was 1.3-4x faster than torch's at one step."""
    if kind == "lstm" or packed or x.shape[0] > _FEW_STEPS_MAX:
        return False
    if dropout > 0 and training and num_layers > 1:
        return False        # dropout between layers stays fastrnn's, one RNG stream per model
    if not _auto_float32_cpu(backend, x):
        return False
    return _short_call_to_torch(kind, tracks_grad([x, h0, *weights]), x.shape[0], x.shape[1],
                                weights[1])


def capture():
    """Whether this call is being recorded or transformed, and how. fastrnn's kernels run
    outside torch's ops, so no graph recorder sees them and no transform can look inside.
    "torch": torch.jit.trace, torch.export (ONNX export runs one of them), a torch.func
    transform (grad, vmap, jacrev, ...), forward-mode AD or torch.autocast: the call runs
    torch.nn's own computation, which these record or transform as they would torch.nn's
    (autocast's mixed precision included: fastrnn's kernels compute in the input's dtype).
    "compile": torch.compile's dynamo is tracing it. None: a plain call."""
    # The order matters under dynamo, which folds the first two to constants and cannot
    # trace the others.
    if torch.compiler.is_exporting():
        return "torch"
    if torch.compiler.is_dynamo_compiling():
        return "compile"
    if (torch._C._is_tracing() or torch._C._are_functorch_transforms_active()
            or _forward_ad._current_level >= 0 or torch._C._is_any_autocast_enabled()):
        return "torch"
    return None


def module_goes_to_torch(module, kind, input, hx):
    """Whether a fastrnn.LSTM/GRU/RNN module call goes to torch.nn's own forward, decided before
    any of fastrnn's argument handling: the call then costs what torch.nn's does (fastrnn's
    module and functional code add ~15-35 us, a third of a short call's time). On CUDA, every
    call (cuDNN). On CPU, the LSTM rule (without proj_size, oneDNN on) or, for GRU/RNN, the
    few-steps rule; batched, unpacked, non-empty tensors only. Every other call takes the
    functional path and its hand-offs."""
    data = input.data if isinstance(input, PackedSequence) else input
    if isinstance(data, torch.Tensor) and data.device.type == "cuda":
        return _auto_in_charge(module.backend)
    if not isinstance(input, torch.Tensor) or input.dim() != 3:
        return False
    if not _auto_float32_cpu(module.backend, input):
        return False
    T, B = (input.shape[1], input.shape[0]) if module.batch_first else input.shape[:2]
    if T < 1 or B < 1:
        return False
    if kind == "lstm" and (module.proj_size > 0 or not onednn_enabled()):
        return False
    if kind != "lstm" and T > _FEW_STEPS_MAX:
        return False
    if module.dropout > 0 and module.training and module.num_layers > 1:
        return False
    states = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    weights = module._flat_weights
    grad = torch.is_grad_enabled() and (
        input.requires_grad or any(isinstance(h, torch.Tensor) and h.requires_grad
                                   for h in states)
        or any(w.requires_grad for w in weights))
    if kind == "lstm":
        return _lstm_faster_in_torch(grad, T, B, module.hidden_size)
    return _short_call_to_torch(kind, grad, T, B, weights[1])


def torch_forward(module, input, hx):
    """torch.nn's own forward for a fastrnn module (its torch.nn base class's)."""
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
