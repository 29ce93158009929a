"""CPU kernels in Numba: the "numba" backend (interface: see fastrnn/reference.py).

Only the recurrences run here, and (where measured faster) the weight gradients; the caller
does the other GEMMs. Modules:
activations (fast vectorisable sigmoid/tanh), simd (explicit vector registers), linalg (per-step
product), lstm/gru/rnn (the recurrences, over a range of batch rows), team (running a compiled
function on torch's OpenMP threads), threaded (the kernels as entries for team), launch (tensor
conversion, allocation, strategy).

Compiled code is cached in __pycache__ next to these files. Numba checks only the timestamp of
the file that defines each cached function, not of the files it calls into: after editing one
of these modules in a source checkout, delete kernels/numba/__pycache__/*.nb[ic] or the other
modules' cached kernels keep running the old code. (Installing a release rewrites every file,
so users never meet this.)
"""

import torch

from .launch import (PROJECTS_INPUT, explain, gru_backward, gru_forward, lstm_backward,
                     lstm_forward, rnn_backward, rnn_forward, weight_grads)

NAME = "numba"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def supports(device, dtype):
    return torch.device(device).type == "cpu" and dtype in _DTYPES


__all__ = ["NAME", "PROJECTS_INPUT", "supports", "explain", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward", "rnn_forward", "rnn_backward", "weight_grads"]
