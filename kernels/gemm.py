"""Dense products y = a @ w^T (+ bias) on CPU through the fastest kernel torch ships.

torch.mm on CPU goes to MKL. oneDNN's inner-product primitive (the one torch.nn.LSTM uses
inside, reachable as torch.ops.mkldnn._linear_pointwise) was measured 1.2-2.5x faster on the
shapes an RNN layer produces once the batch is a few dozen rows or the weight is large
(2-core AMD EPYC; benchmarks/gemm_crossover.py, recorded in
benchmarks/results/cpu-gemm-2026-11-25.md); below that its ~15 us call overhead loses to MKL.
On Intel CPUs MKL keeps up with oneDNN, and the one-off products and weight gradients follow
their own measured rules (per CPU family, and for the backward's products per AMD generation:
kernels/cpu.py).
Float32 only: oneDNN's float64 path does not exist and its 16-bit paths change rounding.
Everything falls back to torch.mm when oneDNN is missing or disabled.
"""

import functools

import torch

from . import cpu


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
    """Whether RepeatedLinear packs an (N, K) weight for oneDNN at this batch size."""
    # Measured: packed oneDNN wins from 8 rows once the weight has ~200k elements, and at any
    # batch for weights of a million elements or more.
    return batch > 0 and _onednn_usable(device, dtype) and (
        K * N >= (1 << 20) or (batch >= 8 and K * N >= 3 * (1 << 16)))


def _worth_onednn_amd(M, K, N):
    # From the measured crossover: large weights win at any batch, mid weights from ~64 rows,
    # small ones (64x256: 0.85x at 100 rows, 0.95x at 800) only from ~1600 rows.
    return (K * N >= (1 << 20) or (M >= 64 and K * N >= 3 * (1 << 16))
            or (M >= 100 and K * N >= (1 << 16)) or M >= 1600)


def _worth_onednn_intel(M, K, N):
    # On an Intel Xeon (2 cores, AVX-512; benchmarks/gemm_crossover.py twice and 200-800 rows
    # apart, recorded in benchmarks/results/cpu-gemm-2026-11-26-xeon.md) MKL's torch.mm, at home
    # there, matched or beat oneDNN's unpacked inner product except on weights of a million
    # elements or more read by 16-200 rows (oneDNN 0.98-1.45x as fast) and by 8 rows at 4M
    # (1.07-1.15x); at 400 rows they tied (0.94-1.00x), from 800 oneDNN took 1.02-1.23x as long,
    # on smaller weights 1.06-3.5x.
    return 16 <= M < 400 and K * N >= (1 << 20)


# Whether a one-off product (linear) goes to oneDNN, per CPU family (kernels/cpu.py).
WORTH_ONEDNN_BY_FAMILY = {cpu.AMD: _worth_onednn_amd, cpu.INTEL: _worth_onednn_intel}
_worth_onednn = WORTH_ONEDNN_BY_FAMILY[cpu.family()]


# oneDNN takes the weight contiguous. A transposed view (the backward's W_ih^T) is copied first.
# Whether that pays depends on the machine (benchmarks/weight_grad_crossover.py --dx): on the
# Zen 5 EPYC (full-width AVX-512: oneDNN ~2x MKL) copy plus oneDNN won 1.27-1.57x from 400 rows
# at every weight size of the grid and lost (0.66-0.91x) or tied at 100 rows
# (benchmarks/results/cpu-weight-grads-2026-11-26-zen5.md); on the Zen 4 EPYC (AVX-512 at half
# width, where MKL's AVX2 code keeps up) it lost 0.41-0.61x at 100 rows and 0.76-0.86x at 400,
# tied or won at 1600 (0.97-1.12x) and won at 6400 (1.07-1.16x;
# benchmarks/results/cpu-weight-grads-2026-11-26-zen4.md). Intel CPUs take oneDNN for one-off
# products below 400 rows only, so their copy never happens.
COPY_WEIGHT_MIN_ROWS_BY_FAMILY = {cpu.AMD: 1600, cpu.ZEN5: 400, cpu.INTEL: 400}
COPY_WEIGHT_MIN_ROWS = COPY_WEIGHT_MIN_ROWS_BY_FAMILY[cpu.gemm_family()]


def linear(a, w, bias=None):
    """a (M, K) @ w (N, K)^T + bias, for a one-off product (the weight is not pre-packed)."""
    M, K = a.shape
    N = w.shape[0]
    if (M > 0 and _worth_onednn(M, K, N) and (M >= COPY_WEIGHT_MIN_ROWS or w.is_contiguous())
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


# Weight gradients grad^T @ a over all steps: oneDNN's inner-product backward-weights primitive
# (reached through its own tensor format, one conversion of grad shared by every input) against
# torch.mm's transposed product (benchmarks/weight_grad_crossover.py). On the 2-core Zen 5 EPYC
# (torch.mm ~200 GFLOP/s there against oneDNN's ~450; recorded in
# benchmarks/results/cpu-weight-grads-2026-11-26-zen5.md): oneDNN 1.34-1.84x faster from 2^24.3
# multiply-adds per product, one tie (0.99x at 6400 x 256 x 256), and 0.39x at 2^20.6
# (100 x 256 x 64), where the format conversions dominate. On the 2-core Zen 4 EPYC (two runs,
# recorded in benchmarks/results/cpu-weight-grads-2026-11-26-zen4.md) oneDNN never won by more
# than 1.09x and lost up to 0.63x from 2^24 (0.28-0.34x at 2^20.6). On an Intel Xeon (2 cores,
# AVX-512; the same benchmark twice, recorded in benchmarks/results/cpu-gemm-2026-11-26-xeon.md)
# MKL's torch.mm was faster at every shape but one tie (oneDNN took 1.1-1.9x as long from 2^24,
# 0.99x and 1.11x at 6400 x 1024 x 256, 5-6x at 2^20.6). So only Zen 5 takes it; None: never.
BACKWARD_WEIGHTS_MIN_MACS_BY_FAMILY = {cpu.AMD: None, cpu.ZEN5: 1 << 24, cpu.INTEL: None}
BACKWARD_WEIGHTS_MIN_MACS = BACKWARD_WEIGHTS_MIN_MACS_BY_FAMILY[cpu.gemm_family()]


@functools.cache
def _weight_options():
    # The primitive reads only the dtype and device of its `weight` argument.
    return torch.empty(1).to_mkldnn()


def weight_grads(grad, inputs, bias=False):
    """([grad^T @ a for a in inputs], grad.sum(0) if bias else None): the weight and bias
    gradients of products y = a @ w^T + b that share the output gradient ``grad`` (M, N); each
    input a is (M, K). Inputs may be non-contiguous."""
    M, N = grad.shape
    least = BACKWARD_WEIGHTS_MIN_MACS
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
