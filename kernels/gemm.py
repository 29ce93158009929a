"""Dense products y = a @ w^T (+ bias) on CPU through the fastest kernel torch ships.

torch.mm on CPU goes to MKL. oneDNN's inner-product primitive (the one torch.nn.LSTM uses
inside, reachable as torch.ops.mkldnn._linear_pointwise) was measured 1.2-2.5x faster on the
shapes an RNN layer produces once the batch is a few dozen rows or the weight is large
(2-core AMD EPYC; benchmarks/gemm_crossover.py, recorded in
benchmarks/results/cpu-gemm-2026-11-25.md); below that its ~15 us call overhead loses to MKL.
On Intel CPUs MKL keeps up with oneDNN, and the one-off products and weight gradients follow
their own measured rules (per CPU family, and for the backward's products per AMD generation:
kernels/tuning.py).
Float32 only: oneDNN's float64 path does not exist and its 16-bit paths change rounding.
Everything falls back to torch.mm when oneDNN is missing or disabled.
"""

import functools

import torch

from .tuning import current


def _onednn_ops():
    try:
        ops = torch.ops.mkldnn
        return ops._linear_pointwise, ops._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return None


def _onednn_backward_weights():
    try:
        return torch.ops.aten.mkldnn_linear_backward_weights
    except (AttributeError, RuntimeError):
        return None


_OPS = _onednn_ops()
_BACKWARD_WEIGHTS = _onednn_backward_weights()
_AVAILABLE = torch.backends.mkldnn.is_available()
# The getter behind torch.backends.mkldnn.enabled, when this torch has it (else the property).
_GET_ENABLED = getattr(torch._C, "_get_mkldnn_enabled", None)


def onednn_enabled():
    """oneDNN is built in and not switched off. Read at every call (torch.backends.mkldnn.flags
    can switch it), through the getter behind torch.backends.mkldnn.enabled (a third of the
    property's cost)."""
    if not _AVAILABLE:
        return False
    return _GET_ENABLED() if _GET_ENABLED is not None else torch.backends.mkldnn.enabled


def _onednn_ready(a, w):
    return _onednn_usable(a.device, a.dtype) and w.dtype == torch.float32


def _onednn_usable(device, dtype):
    return (_OPS is not None and dtype == torch.float32 and torch.device(device).type == "cpu"
            and onednn_enabled())


def packs(N, K, batch, dtype, device="cpu"):
    """Whether RepeatedLinear packs an (N, K) weight for oneDNN at this batch size (tuning:
    onednn_packs)."""
    return batch > 0 and _onednn_usable(device, dtype) and any(
        batch >= rows and K * N >= least for rows, least in current().onednn_packs)


def _worth_onednn(M, K, N):
    """Whether a one-off product of M rows goes to oneDNN (tuning: onednn_one_off)."""
    return any(M >= rows and (below is None or M < below) and K * N >= least
               for rows, below, least in current().onednn_one_off)


def linear(a, w, bias=None):
    """a (M, K) @ w (N, K)^T + bias, for a one-off product (the weight is not pre-packed)."""
    M, K = a.shape
    N = w.shape[0]
    if (M > 0 and _worth_onednn(M, K, N)
            and (w.is_contiguous() or M >= current().copy_weight_min_rows)
            and _onednn_ready(a, w)):   # cheap tests first
        return _OPS[0](a.contiguous(), w.contiguous(), bias, "none", [], "")
    return a @ w.t() if bias is None else torch.addmm(bias, a, w.t())


class RepeatedLinear:
    """a @ w^T (+ bias) for many calls with one weight and up to ``batch`` rows of a (a
    recurrence's steps, or an input projection a few steps at a time).

    Packs the weight once into oneDNN's blocked layout when that pays; else uses torch.mm into
    a preallocated buffer, which the next call overwrites.
    """

    def __init__(self, w, batch, bias=None):
        self.w, self.bias = w, bias
        N, K = w.shape
        self.packed = None
        if packs(N, K, batch, w.dtype, w.device):
            self.packed = _OPS[1](w.contiguous(), batch)
        self.out = None if self.packed is not None else torch.empty(batch, N, dtype=w.dtype)

    def __call__(self, a):
        if self.packed is not None:
            return _OPS[0](a, self.packed, self.bias, "none", [], "")
        out = self.out[:a.shape[0]]
        if self.bias is None:
            torch.mm(a, self.w.t(), out=out)
        else:
            torch.addmm(self.bias, a, self.w.t(), out=out)
        return out





@functools.cache
def _weight_options():
    # The primitive reads only the dtype and device of its `weight` argument.
    return torch.empty(1).to_mkldnn()


def weight_grads(grad, inputs, bias=False):
    """([grad^T @ a for a in inputs], grad.sum(0) if bias else None): the weight and bias
    gradients of products y = a @ w^T + b that share the output gradient ``grad`` (M, N); each
    input a is (M, K). Inputs may be non-contiguous. oneDNN's backward-weights primitive (one
    conversion of grad shared by every input) where tuning's onednn_weight_grads_min_macs says,
    else torch.mm's transposed product."""
    M, N = grad.shape
    least = current().onednn_weight_grads_min_macs
    onednn = [_BACKWARD_WEIGHTS is not None and least is not None and a.dtype == torch.float32
              and M * N * a.shape[1] >= least for a in inputs]
    if not any(onednn) or not _onednn_usable(grad.device, grad.dtype):
        return [grad.t() @ a for a in inputs], (grad.sum(0) if bias else None)
    g, w = grad.to_mkldnn(), _weight_options()
    grads, db = [], None
    for a, fast in zip(inputs, onednn):
        if not fast:
            grads.append(grad.t() @ a)
            continue
        dw, b = _BACKWARD_WEIGHTS(g, a.to_mkldnn(), w, bias and db is None)
        grads.append(dw.to_dense())
        if bias and db is None:
            db = b.to_dense()
    return grads, db
