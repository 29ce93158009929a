"""The numba backend's weight gradients: dW = dG^T a over all steps, through the compiled
product (dG read in place, the rows of dW split over torch's threads) where it was measured
faster than torch's GEMMs (tuning: own_weight_grads_*), else through gemm.weight_grads."""

from .. import gemm
from ..tuning import current
from . import buffers, runners, team, threaded
from .linalg import pack_weight


def _own_weight_grads(grad, inputs):
    M, N = grad.shape
    rules = current()
    return (0 < len(inputs) <= 2 and 0 < M <= rules.own_weight_grads_max_rows
            and grad.dtype in buffers.NUMPY_DTYPES and all(a.dtype == grad.dtype for a in inputs)
            and M * N * sum(a.shape[1] for a in inputs) >= rules.own_weight_grads_min_macs)


def weight_grads(grad, inputs, bias=False):
    """gemm.weight_grads (the gradients of weights shared by all steps, grad (M, N) over M
    steps x rows, inputs up to two (M, K) tensors), through the compiled product where it was
    measured faster than torch's GEMMs."""
    if not _own_weight_grads(grad, inputs):
        return gemm.weight_grads(grad, inputs, bias)
    cdt = grad.dtype
    N = grad.shape[1]
    outs = [buffers.empty((N, a.shape[1]), cdt) for a in inputs]
    operands = [(pack_weight(buffers.strided_numpy(a, cdt)), out.numpy())
                for a, out in zip(inputs, outs)]
    two = len(inputs) == 2
    second = operands[1] if two else (buffers.dummy(cdt, 1), buffers.dummy(cdt, 2))
    # Chunks of whole 4-row blocks of dW, one per thread; the last one takes the rows left.
    bounds = team.bounds(N // 4, max(1, min(team.threads(), N // 4))) * 4
    bounds[-1] = N
    team.run(runners.compiled(threaded.weight_grads_entry),
             team.pack(cdt.itemsize, bounds, buffers.as_numpy(grad, cdt), *operands[0], two,
                       *second))
    return outs, (grad.sum(0) if bias else None)
