"""How a compiled kernel runs: in the caller's thread, on torch's OpenMP team in chunks of rows
or in slices of hidden units, or once per step beside a GEMM.

A kernel takes its rows last (`kernel(*args, lo, hi)`); its threaded.py entry takes the same
arguments packed by team.pack and runs the kernel on each chunk a thread claims.
"""

import numpy as np
import torch
from numba.core.errors import NumbaError

from ..gemm import RepeatedLinear, linear
from ..tuning import current
from . import buffers, simd, team, threaded
from .linalg import copy_live_rows, pack_weight, pack_weight_slices


def _failed(what):
    return (f"fastrnn numba backend: compiling {what} failed. Use backend='reference' to run "
            "without Numba, and report this error.")


def run(kernel, *args):
    """kernel(*args) in this thread; a compilation error becomes a RuntimeError that says so."""
    try:
        return kernel(*args)
    except NumbaError as exc:
        types = [getattr(a, "dtype", type(a).__name__) for a in args]
        raise RuntimeError(_failed(f"{kernel.__name__} for argument types {types}")) from exc


def compiled(entry):
    """A threaded.py entry as the cfunc team.run calls."""
    try:
        return threaded.compiled(entry)
    except NumbaError as exc:
        raise RuntimeError(_failed(entry.__name__)) from exc


def _bounds(B, chunks, lengths, lens):
    return team.bounds(B, chunks, None if lengths is None else lens)


def recurrence(kernel, entry, plan, lengths, lens, *args):
    """kernel(*args, 0, B) in this thread, or entry on torch's OpenMP team in plan.chunks
    chunks of rows."""
    if plan.chunks <= 1:
        return run(kernel, *args, 0, plan.B)
    team.run(compiled(entry), team.pack(plan.cdt.itemsize,
                                        _bounds(plan.B, plan.chunks, lengths, lens), *args))


def columns(entry, plan, *args):
    """A "columns" kernel entry on torch's OpenMP team, one slice of hidden units per thread."""
    team.run(compiled(entry), team.pack(plan.cdt.itemsize, np.array(plan.slices, np.int64),
                                        *args))


def forward_columns(entry, plan, x_np, w_hh, h_np, *args):
    """A "columns" forward entry(x, W_hh^T packed per slice, *args, hbuf, hg scratch): h_np
    (B, H) holds h0 and becomes h_n (the kernel double-buffers the state in hbuf)."""
    T, B, H, G, cdt = plan.T, plan.B, plan.H, plan.G, plan.cdt
    hbuf = buffers.scratch((2, B, H), cdt)
    hbuf[0] = h_np
    columns(entry, plan, x_np, packed_slices(w_hh, True, G // H, plan.slices, cdt), *args, hbuf,
            buffers.scratch((B, G), cdt))
    h_np[...] = hbuf[T % 2]


def packed(w, cdt):
    """w (K, N), any strides, as the compiled product's right operand (linalg.pack_weight)."""
    return pack_weight(buffers.strided_numpy(w, cdt))


def packed_slices(w, transposed, groups, slices, cdt):
    """w.T if transposed else w, packed per slice of hidden units (bounds `slices`) for a
    "columns" kernel (linalg.pack_weight_slices); each thread packs its own slices when the
    weight is large (measured 1.75x faster on 2 cores for 16 MiB: the copy waits on memory)."""
    src = buffers.as_numpy(w, cdt)
    slices = np.asarray(slices, np.int64)
    parts = len(slices) - 1
    if parts < 2 or src.nbytes < current().pack_split_min_bytes:
        return pack_weight_slices(src, transposed, groups, slices)
    out = simd.aligned_empty(src.size, src.dtype)
    team.run(compiled(threaded.pack_slices_entry),
             team.pack(cdt.itemsize, team.bounds(parts, parts), src, transposed, out, groups,
                       slices))
    return out


def step_product(w, B, T):
    """a -> a @ w^T for the per-step strategy's T steps of up to B rows. The weight is packed
    once for oneDNN when several steps reuse it (gemm.RepeatedLinear); a single step takes a
    one-off product instead (packing would cost more than it saves), through torch.mm when w is
    a transposed view (the backward's W_hh^T: no copy)."""
    if T > 1:
        return RepeatedLinear(w.contiguous(), B)
    if w.is_contiguous():
        return lambda a: linear(a, w)
    return lambda a: torch.mm(a, w.t())


def order(T, reverse):
    """The steps in the order a recurrence walks them."""
    return range(T - 1, -1, -1) if reverse else range(T)


def mm_live(product, dst, t, lengths, lens, combine):
    """dst (op)= product for the sequences live at step t (all of them without lengths)."""
    if lengths is None and combine is copy_live_rows:
        dst.copy_(product)
    elif lengths is None:
        dst.add_(product)
    else:
        run(combine, t, product.numpy(), dst.numpy(), lens, 0, lens.shape[0])


class StepKernel:
    """A pointwise step kernel(*args, lo, hi) called once per step over all B rows, in
    plan.chunks chunks on torch's OpenMP team when the step is big enough: the words are packed
    once and only the arguments that changed since the last step are rewritten."""

    def __init__(self, kernel, entry, plan, lengths, lens):
        self.kernel, self.B, self.chunks = kernel, plan.B, plan.chunks
        self.float_size = plan.cdt.itemsize
        if self.chunks > 1:
            self.bounds = _bounds(plan.B, plan.chunks, lengths, lens)
            self.entry = compiled(entry)
        self.args = self.packed = None

    def __call__(self, *args):
        if self.chunks <= 1:
            return run(self.kernel, *args, 0, self.B)
        if self.packed is None:
            self.packed = team.pack(self.float_size, self.bounds, *args)
            self.args = list(args)
        else:
            for k, a in enumerate(args):
                if a is not self.args[k]:
                    self.packed.set(k, a)
                    self.args[k] = a
        team.run(self.entry, self.packed)
