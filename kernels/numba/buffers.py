"""Buffers and numpy views for the numba kernels: torch tensors in, numpy arrays to the kernels.

Every allocation of the launcher goes through one of four hooks, by who gets to keep it:
`empty` (what the caller keeps), `internal` (what forward saves, what backward hands to ops'
GEMMs), `scratch` (what only the kernels see), `unwritten` (what the kernels take but do not
touch). Tests swap them for NaN-filled ones (attribute lookups, so the swap reaches every
caller), and an element a kernel forgets to write then fails its comparison.
"""

import functools
import math

import numpy as np
import torch

from ..tuning import current
from . import pool, simd

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def empty(shape, dtype):
    """Allocation for every tensor the caller gets to keep: outputs and final states."""
    return torch.empty(shape, dtype=dtype)


def internal(shape, dtype):
    """A tensor only this backend and ops use. Large ones come from kernels/numba/pool.py, whose
    blocks a training loop reuses step after step instead of page-faulting fresh memory."""
    return pool.empty(shape, dtype)


def scratch(shape, cdt):
    """A work buffer only the kernels see, as a numpy array starting on a cache line
    (simd.aligned_empty: the kernels load and store its rows as whole vectors; measured 1-4%
    faster for whole LSTM layers than numpy's usual 16 bytes past a line, which pays for its
    ~2 us)."""
    return simd.aligned_empty(math.prod(shape), NUMPY_DTYPES[cdt]).reshape(shape)


@functools.lru_cache(maxsize=64)
def unwritten(shape, cdt):
    """The gates and cell states an LSTM forward without need_grad passes its kernels: they take
    them in every call but neither read nor write them then, so one buffer per shape serves
    every call (allocating them cost ~4 us of a 200 us call). Never touched, a large one holds
    address space only (np.zeros maps its pages on first touch)."""
    return np.zeros(shape, NUMPY_DTYPES[cdt])


def as_numpy(t, cdt):
    """A contiguous numpy view (zero-copy when t already has the compute dtype and is
    contiguous)."""
    t = t.detach()
    if t.dtype != cdt:
        t = t.to(cdt)
    return t.contiguous().numpy()


def strided_numpy(t, cdt):
    """A numpy view with t's strides (a copy only to change the dtype)."""
    return t.detach().to(cdt).numpy()


def state(init, shape, cdt):
    """A fresh compute-dtype buffer holding init (contiguous, as every tensor passed in), or
    zeros when init is None."""
    if init is None:
        return torch.zeros(shape, dtype=cdt)
    init = init.detach()
    return init.to(cdt) if init.dtype != cdt else init.clone()


def grad(g, shape, cdt):
    """An upstream gradient as a contiguous compute-dtype tensor. It often is an expanded view
    (the gradient of a sum): copied then into an internal buffer."""
    if g is None:
        return state(g, shape, cdt)
    g = g.detach()
    if g.dtype == cdt and g.is_contiguous():
        return g
    copy = internal(shape, cdt)
    copy.copy_(g)
    return copy


def cast(t, dtype):
    """A result in the caller's dtype (half types were computed in float32)."""
    return t if t.dtype == dtype else t.to(dtype)


@functools.lru_cache(maxsize=64)
def _full_lengths(B, T):
    # Read-only by contract (the kernels never write lengths); cached because small layers
    # are called often and np.full costs as much as a short recurrence step.
    return np.full(B, T, dtype=np.int64)


def lengths(lengths, B, T):
    """Sequence lengths as int64 numpy (all T without lengths)."""
    if lengths is None:
        return _full_lengths(B, T)
    return lengths.detach().to("cpu", torch.int64).contiguous().numpy()


def from_step(lens, t0):
    """Sequence lengths counted from step t0, for a kernel given steps t0.. as its steps 0..:
    step t0 + t is live when t < lengths - t0 (<= 0: dead throughout)."""
    return lens if t0 == 0 else lens - t0


_DUMMY = {}


def dummy(cdt, ndim):
    """Placeholder for an unused optional array: the kernel only ever reads it behind a flag."""
    key = (cdt, ndim)
    if key not in _DUMMY:
        _DUMMY[key] = torch.zeros((1,) * ndim, dtype=cdt).numpy()
    return _DUMMY[key]


def whole(xg):
    """xg as a (T, B, G) tensor: an ops.InputProjection is computed for all steps at once."""
    return xg if isinstance(xg, torch.Tensor) else xg.full()


def time_chunks(xg, reverse, cdt):
    """(t0, t1, steps t0..t1-1 of xg as a numpy array) over all T steps, in the order the
    recurrence walks them: one range, unless xg is an ops.InputProjection big enough to be
    projected in chunks (tuning: project_in_chunks_from). Consume each chunk before taking the
    next."""
    T, B, G = xg.shape
    step_bytes = B * G * cdt.itemsize
    rules = current()
    if not isinstance(xg, torch.Tensor) and T * step_bytes >= rules.project_in_chunks_from:
        for t0, t1, part in xg.chunks(max(1, rules.project_chunk_bytes // step_bytes), reverse):
            yield t0, t1, as_numpy(part, cdt)
    else:
        yield 0, T, as_numpy(whole(xg), cdt)
