"""Who runs a call, and why: the one place that decides.

Modules, functional and the cells describe each call as a `Call` and ask `choose(call)`; the
`Choice` names the backend and says why. `explain(module, input)` reads the same decision.

The backends are peers, each saying what it can run and, when it cannot, why not:
  torch      torch's own LSTM/GRU/RNN and cells (cuDNN, oneDNN, native ops):
             fastrnn/torch_backend.py
  numba      fastrnn's compiled CPU kernels: kernels/numba/
  triton     fastrnn's Triton kernels (CUDA; on CPU only through TRITON_INTERPRET=1):
             kernels/triton/
  reference  plain PyTorch loops, the oracle: fastrnn/reference.py
`backend="auto"` (the default; the FASTRNN_BACKEND environment variable overrides it) runs torch
where torch measured faster (the rules below, with their data in kernels/tuning.py), else the
first of numba, triton (CUDA only), reference that supports the call. A named backend runs every
call it supports and raises RuntimeError with its reasons for the others. Graph capture and
transforms (jit.trace, export, torch.func, forward AD, autocast) always run torch's computation:
fastrnn's kernels run outside torch's ops, where no recorder sees them.
"""

import importlib
import os
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as _forward_ad

from .kernels.gemm import onednn_enabled
from .kernels.tuning import current
from .ops import tracks_grad

ENV_VAR = "FASTRNN_BACKEND"
_MODULES = {
    "torch": "fastrnn.torch_backend",
    "numba": "fastrnn.kernels.numba",
    "triton": "fastrnn.kernels.triton",
    "reference": "fastrnn.reference",
}
NAMES = ("auto",) + tuple(_MODULES)
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


class Call(NamedTuple):
    """What the dispatcher needs to know about one call (a stack, or one cell step)."""
    kind: str                  # "lstm", "gru" or "rnn"
    backend: str               # as asked: "auto" or a backend's name
    device: torch.device
    dtype: torch.dtype
    steps: int                 # T (1 for a cell)
    batch: int                 # B
    hidden: int                # H
    weight_bytes: int          # bytes of the first layer's W_hh
    grad: bool                 # autograd records it (training)
    cell: bool = False         # a cell call (LSTMCell, GRUCell, RNNCell)
    projected: bool = False    # an LSTM with proj_size
    packed: bool = False       # PackedSequence input
    layer_dropout: bool = False  # dropout between layers, in training
    step_path: bool = False    # one step run by fastrnn/step_path.py's plan


class Choice(NamedTuple):
    name: str                  # the backend that runs the call
    reason: str                # why, in one line
    module: object             # its module (reference.py's interface; torch_backend for torch)


def check_name(name):
    """Raise ValueError for a backend name fastrnn does not know."""
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"unknown fastrnn backend {name!r}; "
                         f"valid backends are: {', '.join(NAMES)}")
    return name


_LOADED = {}


def get(name):
    """The module of a concrete backend (imported on first use; ImportError if it cannot be)."""
    module = _LOADED.get(name)
    if module is None:
        if check_name(name) == "auto":
            raise ValueError("'auto' is not a concrete backend; use choose() to pick one")
        module = _LOADED[name] = importlib.import_module(_MODULES[name])
    return module


def not_supported_reasons(name, device, dtype):
    """Why the backend cannot run tensors of this device and dtype ([]: it can)."""
    try:
        module = get(name)
    except ImportError as exc:
        return [f"{_MODULES[name]} cannot be imported ({exc})"]
    if module.supports(device, dtype):
        return []
    hint = getattr(module, "unsupported_reason", None)
    return [(hint(device, dtype) if hint is not None else "")
            or f"It has no kernels for {dtype} tensors on {device}."]


def available(device, dtype):
    """The concrete backends that can run tensors of this device and dtype."""
    return [name for name in _MODULES if not not_supported_reasons(name, device, dtype)]


def capture():
    """Whether this call is being recorded or transformed, and how. "torch": torch.jit.trace,
    torch.export (ONNX export runs one of them), a torch.func transform (grad, vmap, jacrev,
    ...), forward-mode AD or torch.autocast: the call runs torch.nn's own computation, which
    these record or transform as they would torch.nn's (autocast's mixed precision included:
    fastrnn's kernels compute in the input's dtype). "compile": torch.compile's dynamo is
    tracing it. None: a plain call."""
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


try:
    # os.environ's own dict, read without its per-lookup encoding (~0.7 us of a step that
    # costs ~10): the step path reads it on every call. Every change to os.environ lands in it.
    _ENV_DATA, _ENV_KEY = os.environ._data, os.environ.encodekey(ENV_VAR)
except AttributeError:  # not CPython's os.environ
    _ENV_DATA = None


def env_backend():
    """FASTRNN_BACKEND as set now (None when unset or empty)."""
    if _ENV_DATA is None:
        return os.environ.get(ENV_VAR) or None
    value = _ENV_DATA.get(_ENV_KEY)
    return os.environ.decodevalue(value) if value else None


def requested(backend):
    """The backend a call asked for, FASTRNN_BACKEND applied to "auto"."""
    if backend == "auto":
        return check_name(env_backend() or "auto")
    return backend


def choose(call):
    """The Choice for this call."""
    name = requested(check_name(call.backend))
    captured = capture()
    if captured == "torch" or (captured == "compile" and call.cell):
        # A cell traces well under torch.compile, as torch.nn's cell.
        return Choice("torch", "graph capture or a transform records torch's computation",
                      get("torch"))
    if name != "auto":
        reasons = not_supported_reasons(name, call.device, call.dtype)
        if reasons:
            raise RuntimeError(
                f"fastrnn backend {name!r} cannot run {call.dtype} tensors on {call.device}. "
                f"{' '.join(reasons)} Backends that can: "
                f"{', '.join(available(call.device, call.dtype)) or 'none'}.")
        how = "backend=" if call.backend != "auto" else ENV_VAR + "="
        return Choice(name, f"asked for ({how}{name!r})", get(name))
    reason = torch_measured_faster(call)
    if reason is not None:
        return Choice("torch", reason, get("torch"))
    for name in ("numba", "triton", "reference"):
        # Triton on CPU is its interpreter: correct but slow, so auto never picks it there.
        if name == "triton" and call.device.type != "cuda":
            continue
        if not not_supported_reasons(name, call.device, call.dtype):
            return Choice(name, "auto: fastrnn's kernels (torch was not measured faster here)",
                          get(name))
    raise RuntimeError(f"fastrnn has no backend for {call.dtype} tensors on {call.device}")


# ------------------------------------------------------------- when auto runs torch's own


def torch_measured_faster(call):
    """Why auto hands this call to torch's own implementation, or None when fastrnn keeps it.
    Each rule is a measurement (kernels/tuning.py, and the results files it names)."""
    if call.device.type == "cuda":
        return ("auto on CUDA: cuDNN measured faster than fastrnn's Triton kernels at every "
                "size and dtype (benchmarks/results/gpu-2026-11-26-h200.md)")
    if call.device.type != "cpu" or call.dtype != torch.float32:
        return None         # the hand-offs were measured for float32 on CPU only
    rules = current()
    if call.step_path:
        # fastrnn/step_path.py's plans, measured against torch.nn's module and cell over the
        # step benchmark's grid (benchmarks/results/cpu-step-*.md).
        if call.grad and _step_faster_in_torch(rules, call.kind, call.cell, call.batch,
                                               call.hidden):
            return ("one step under autograd: torch's op measured faster than fastrnn's step "
                    "Function here (tuning: step_grad_torch)")
        return None
    if call.cell:
        if call.grad:
            return "training a cell: torch's cell measured faster (tuning: cell_min_weight_bytes)"
        if _cell_faster_in_torch(rules, call.batch, call.weight_bytes):
            return "a small cell step: torch's cell measured faster (tuning: cell_min_weight_bytes)"
        return None
    if call.packed or call.layer_dropout:
        return None         # torch leaves oneDNN for packed input; dropout keeps one RNG stream
    if call.kind == "lstm":
        if call.projected or not onednn_enabled():
            return None     # torch leaves oneDNN for projections
        if _lstm_faster_in_torch(rules, call.grad, call.steps, call.batch, call.hidden):
            mode = "training" if call.grad else "inference"
            field = ("lstm_short_torch" if call.steps < rules.lstm_short_steps
                     else f"lstm_torch_{mode}")
            return f"{mode}: torch's fused oneDNN LSTM measured faster here (tuning: {field})"
        return None
    if call.steps == 1:
        if call.grad or _cell_faster_in_torch(rules, call.batch, call.weight_bytes):
            return "one step: torch's GRU/RNN measured faster (tuning: cell_min_weight_bytes)"
        return None
    if _few_steps_faster_in_torch(rules, call.kind, call.grad, call.steps, call.batch,
                                  call.hidden):
        return "a few steps: torch's GRU/RNN measured faster (tuning: few_steps_torch_max)"
    return None


def _bucket(value, limits):
    for k, limit in enumerate(limits):
        if value <= limit:
            return k
    return None


def _in_band(bands, buckets, B, H):
    """Whether B rows of hidden size H fall in the band of H's bucket."""
    h = _bucket(H, buckets)
    if h is None:
        return False
    for hidden, fewest, most in bands:
        if hidden == buckets[h]:
            return fewest <= B and (most is None or B <= most)
    return False


def _lstm_faster_in_torch(rules, training, T, B, H):
    if T < rules.lstm_short_steps:
        b, h = _bucket(B, rules.few_steps_batches), _bucket(H, rules.few_steps_hidden)
        if b is not None and h is not None:
            return rules.lstm_short_torch[training][b][h]
    bands = rules.lstm_torch_training if training else rules.lstm_torch_inference
    return _in_band(bands, rules.lstm_hidden_buckets, B, H)


def _step_faster_in_torch(rules, kind, cell, B, H):
    bucket = _bucket(B, rules.few_steps_batches)
    if bucket is None:
        return False
    for key, bands in rules.step_grad_torch:
        if key == (kind, "cell" if cell else "module"):
            return any(rules.few_steps_batches[bucket] == rows and H <= most
                       for rows, most in bands)
    return False


def _cell_faster_in_torch(rules, B, weight_bytes):
    return not (weight_bytes >= rules.cell_min_weight_bytes
                or (weight_bytes >= rules.cell_min_weight_bytes_many_rows
                    and B >= rules.cell_many_rows))


def _few_steps_faster_in_torch(rules, kind, training, T, B, H):
    b, h = _bucket(B, rules.few_steps_batches), _bucket(H, rules.few_steps_hidden)
    if b is None or h is None:
        return False
    for key, table in rules.few_steps_torch_max:
        if key == (kind, training):
            return T <= table[b][h]
    return False


# --------------------------------------------------------------------- describing calls


def stack_call(kind, backend, x, states, weights, projected, packed, layer_dropout):
    """The Call of a stack on time-major (T, B, I) input x."""
    w_hh = weights[1]
    return Call(kind, backend, x.device, x.dtype, x.shape[0], x.shape[1],
                w_hh.shape[0] // _GATES[kind], w_hh.numel() * w_hh.element_size(),
                tracks_grad([x, *states, *weights]), False, projected, packed, layer_dropout)


def module_call(module, input, hx):
    """The Call of a fastrnn.LSTM/GRU/RNN module on a batched (3-D) tensor input."""
    T, B = (input.shape[1], input.shape[0]) if module.batch_first else input.shape[:2]
    states = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    weights = module._flat_weights
    w_hh = weights[1]
    return Call(module._kind, module.backend, input.device, input.dtype, T, B,
                module.hidden_size, w_hh.numel() * w_hh.element_size(),
                tracks_grad([input, *states, *weights]), False,
                getattr(module, "proj_size", 0) > 0, False,
                module.dropout > 0 and module.training and module.num_layers > 1)


def cell_call(kind, backend, x, states, w_ih, w_hh, b_ih, b_hh):
    """The Call of one cell step on batched (B, I) input x."""
    return Call(kind, backend, x.device, x.dtype, 1, x.shape[0] if x.dim() == 2 else 1,
                w_hh.shape[-1], w_hh.numel() * w_hh.element_size(),
                tracks_grad([x, *states, w_ih, w_hh, b_ih, b_hh]), True)


# --------------------------------------------------------------------------- explain()


class Explanation(NamedTuple):
    backend: str               # what runs the call
    reason: str                # why
    layers: list               # one line per layer and direction: the strategy that runs it

    def __str__(self):
        return "\n".join([f"{self.backend}: {self.reason}"] + [f"  {line}" for line in self.layers])


def explain(module, input, hx=None):
    """Which backend and strategy run each layer of `module(input, hx)` as called now (train or
    eval, grad mode), and why. `input` as the module takes it (a cell's too)."""
    from torch.nn.utils.rnn import PackedSequence
    kind = module._kind
    if getattr(module, "_is_cell", False):
        x = input if input.dim() == 2 else input.unsqueeze(0)
        states = () if hx is None else (tuple(hx) if isinstance(hx, tuple) else (hx,))
        call = cell_call(kind, module.backend, x, states, module.weight_ih, module.weight_hh,
                         module.bias_ih, module.bias_hh)
        layers, P, I, directions = 1, module.hidden_size, module.input_size, 1
    else:
        packed = isinstance(input, PackedSequence)
        if packed:
            T, B = len(input.batch_sizes), int(input.batch_sizes[0])
            x = input.data.new_empty(T, B, 0)
        else:
            x = input if input.dim() == 3 else input.unsqueeze(0 if module.batch_first else 1)
            x = x.transpose(0, 1) if module.batch_first else x
        states = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
        projected = getattr(module, "proj_size", 0) > 0
        call = stack_call(kind, module.backend, x, states, module._flat_weights, projected,
                          packed, module.dropout > 0 and module.training and module.num_layers > 1)
        layers, I = module.num_layers, module.input_size
        P = module.proj_size if projected else module.hidden_size
        directions = 2 if module.bidirectional else 1
    from . import step_path  # (it imports this module)
    if step_path.takes(call):
        # What fastrnn/step_path.py asks for such a call (from its second call on: the first
        # one goes the general way, and its success makes the plan).
        call = call._replace(step_path=True)
    choice = choose(call)
    if (call.step_path and getattr(choice.module, "stack_step", None) is not None
            and (not call.grad or step_path.compiled_under_autograd(directions))):
        how = ("under autograd, as ops' step Functions" if call.grad else "in this thread"
               if call.batch < current().step_split_min_rows else
               "its rows split over the threads where step_split_min_macs says")
        return Explanation(choice.name, "the step path: " + choice.reason,
                           [f"one compiled step per layer and direction ({how})"])
    if call.cell and choice.name == "torch":
        return Explanation(choice.name, choice.reason, [f"torch.nn.{module._torch_name()}'s step"])
    describe = getattr(choice.module, "explain", None)
    lines = []
    for layer in range(layers):
        size = I if layer == 0 else P * directions
        for direction in range(directions):
            what = "" if describe is None else describe(
                kind, call.steps, call.batch, call.hidden, P, call.dtype, call.device, I=size)
            name = f"layer {layer}" + (" reverse" if direction else "")
            lines.append(f"{name}: {what}" if what else name)
    return Explanation(choice.name, choice.reason, lines)
