"""CPU kernels in Numba: the "numba" backend (interface: see fastrnn/reference.py).

Only the recurrences run here, and (where measured faster) the weight gradients; the caller
does the other GEMMs. Modules:
activations (fast vectorisable sigmoid/tanh), simd (explicit vector registers), linalg (per-step
product), lstm/gru/rnn (the recurrences, over a range of batch rows), team (running a compiled
function on torch's OpenMP threads), threaded (the kernels as entries for team); then the Python
side, none of it compiled: plan (which route runs a layer, and why: what explain() prints),
launch (the backend interface, one executor per route), runners (a kernel in this thread, on the
team by rows or hidden units, or per step), buffers (allocation and numpy views), weight_gradients,
pool (reused large buffers).

Compiled code is cached in __pycache__ next to these files (or under NUMBA_CACHE_DIR). Numba
checks each cached function against only the file that defines it, not the files it calls into
or takes constants from, so importing this package first runs cache_guard.guard(): when a
module the compiled code depends on (these but the Python side; kernels/tuning.py and
kernels/cpu.py), numba or numpy changed since the cache was written, it removes this package's
*.nbi/*.nbc files and the kernels compile afresh, once.
"""

import torch

from . import cache_guard

cache_guard.guard()  # before any kernel module defines (and looks up) its cached functions

from ..tuning import current  # noqa: E402
from . import team  # noqa: E402
from .launch import (  # noqa: E402
    PROJECTS_INPUT,
    explain,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
    weight_grads,
)
from .stepper import LayerStep, StackStep  # noqa: E402

NAME = "numba"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def supports(device, dtype):
    return torch.device(device).type == "cpu" and dtype in _DTYPES


__all__ = ["NAME", "PROJECTS_INPUT", "supports", "explain", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward", "rnn_forward", "rnn_backward", "weight_grads",
           "stack_step"]


def stack_step(kind, layer_weights, num_layers, directions, B, nonlinearity="tanh"):
    """The step path's one step of a whole stack (kernels/numba/stepper.py): ``layer_weights``
    holds (w_ih, w_hh, b_ih, b_hh, w_hr) per layer and direction. None where the weights' dtype
    has no step kernel (half types take the general path)."""
    w_hh = layer_weights[0][1]
    if w_hh.dtype not in (torch.float32, torch.float64):
        return None
    rules = current()
    steps = []
    for w in layer_weights:
        G, I = w[0].shape
        macs = B * (I + w[1].shape[1]) * G
        split = B >= rules.step_split_min_rows and macs >= rules.step_split_min_macs
        chunks = min(team.threads(), B) if split else 1
        steps.append(LayerStep(kind, *w, B, nonlinearity, chunks))
    return StackStep(steps, num_layers, directions, B, w_hh.shape[1], w_hh.dtype)
