"""Test-wide setup. TRITON_INTERPRET must be set before triton is first imported, so it is
set here (and only when no CUDA device exists): the triton kernels then run on CPU tensors
through Triton's interpreter, which is how CI exercises them."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
