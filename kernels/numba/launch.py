"""Thin launchers: torch tensors in and out, numpy views for the kernels, strategy choice.

The backend interface (argument order, returns, semantics) is the one documented in
fastrnn/reference.py. Half types are computed in float32 and cast back on return.
"""

import functools
import math

import numpy as np
import torch
from numba.core.errors import NumbaError

from .. import gemm
from ..gemm import RepeatedLinear, linear, packs
from ..tuning import current
from . import pool, simd, team, threaded
from .gru import (
    gru_backward_recurrence,
    gru_backward_step,
    gru_forward_recurrence,
    gru_forward_step,
)
from .linalg import (
    add_live_rows,
    copy_live_rows,
    pack_gate_panels,
    pack_weight,
    pack_weight_concat_t,
    pack_weight_slices,
    panel_width,
)
from .lstm import (
    lstm_backward_dht,
    lstm_backward_recurrence,
    lstm_backward_step,
    lstm_forward_cells,
    lstm_forward_fused,
    lstm_forward_recurrence,
    lstm_forward_step,
    lstm_project_step,
)
from .rnn import (
    rnn_backward_recurrence,
    rnn_backward_step,
    rnn_forward_fused,
    rnn_forward_recurrence,
    rnn_forward_step,
)

_HALF = (torch.float16, torch.bfloat16)

PROJECTS_INPUT = True   # the forwards take an ops.InputProjection as xg (fastrnn/reference.py)

# Which strategy runs a layer (measured rules: kernels/tuning.py):
#   "loop"    one compiled loop over all steps, the batch rows split over torch's threads;
#   "columns" the same loop with the hidden units split over the threads instead (each thread
#             computes its units' gate columns for every row, one barrier per step): a thread
#             reads only its share of W_hh each step, and a small batch still uses every core;
#   "step"    a Python loop over steps, each calling the GEMM helper (oneDNN or MKL, on torch's
#             threads) and a compiled pointwise update.
# A single step (the cells, T = 1) always takes "step": the compiled loops pack the weight first
# (7 us for LSTM H=64, 28 us for H=128, ~0.5 ms for H=512), which only pays over many steps, and
# the step product is then a one-off GEMM (no oneDNN packing either, see _step_product).
# Projected LSTMs have no "columns" kernel and take the loop instead.




def empty(shape, dtype):
    """Allocation for every tensor the caller gets to keep: outputs and final states (tests
    swap it for a NaN-filled one, as they do internal and scratch)."""
    return torch.empty(shape, dtype=dtype)


def internal(shape, dtype):
    """A tensor only this backend and ops use: what forward saves for backward, the gate
    gradients backward hands to ops' GEMMs. Large ones come from kernels/numba/pool.py, whose
    blocks a training loop reuses step after step instead of page-faulting fresh memory."""
    return pool.empty(shape, dtype)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def scratch(shape, cdt):
    """A work buffer only the kernels see, as a numpy array starting on a cache line
    (simd.aligned_empty: the kernels load and store its rows as whole vectors; measured 1-4%
    faster for whole LSTM layers than numpy's usual 16 bytes past a line, which pays for its
    ~2 us). Tests swap it for a NaN-filled one, as they do empty."""
    return simd.aligned_empty(math.prod(shape), _NUMPY_DTYPES[cdt]).reshape(shape)


@functools.lru_cache(maxsize=64)
def unwritten(shape, cdt):
    """The gates and cell states an LSTM forward without need_grad passes its kernels: they take
    them in every call but neither read nor write them then, so one buffer per shape serves
    every call (allocating them cost ~4 us of a 200 us call). Never touched, a large one holds
    address space only (np.zeros maps its pages on first touch). Tests swap it for a NaN-filled
    one, as they do scratch."""
    return np.zeros(shape, _NUMPY_DTYPES[cdt])


def _compute_dtype(dtype):
    return torch.float32 if dtype in _HALF else dtype


def _np(t, cdt):
    """A numpy view (zero-copy when t already has the compute dtype and is contiguous)."""
    t = t.detach()
    if t.dtype != cdt:
        t = t.to(cdt)
    return t.contiguous().numpy()


def _np_view(t, cdt):
    """A numpy view with t's strides (a copy only to change the dtype)."""
    return t.detach().to(cdt).numpy()


def _packed(w, cdt):
    """w (K, N), any strides, as the compiled product's right operand (linalg.pack_weight)."""
    return pack_weight(_np_view(w, cdt))


def _whole(xg):
    """xg as a (T, B, G) tensor: an ops.InputProjection is computed for all steps at once."""
    return xg if isinstance(xg, torch.Tensor) else xg.full()


def _time_chunks(xg, reverse, cdt):
    """(t0, t1, steps t0..t1-1 of xg as a numpy array) over all T steps, in the order the
    recurrence walks them: one range, unless xg is an ops.InputProjection big enough to be
    projected in chunks (tuning: project_in_chunks_from). Consume each chunk before taking the
    next."""
    T, B, G = xg.shape
    step_bytes = B * G * cdt.itemsize
    rules = current()
    if not isinstance(xg, torch.Tensor) and T * step_bytes >= rules.project_in_chunks_from:
        for t0, t1, part in xg.chunks(max(1, rules.project_chunk_bytes // step_bytes), reverse):
            yield t0, t1, _np(part, cdt)
    else:
        yield 0, T, _np(_whole(xg), cdt)


def _from_step(lens, t0):
    """Sequence lengths counted from step t0, for a kernel given steps t0.. as its steps 0..:
    step t0 + t is live when t < lengths - t0 (<= 0: dead throughout)."""
    return lens if t0 == 0 else lens - t0


def _state(init, shape, cdt):
    """A fresh compute-dtype buffer holding init (contiguous, as every tensor passed in), or
    zeros when init is None."""
    if init is None:
        return torch.zeros(shape, dtype=cdt)
    init = init.detach()
    return init.to(cdt) if init.dtype != cdt else init.clone()


@functools.lru_cache(maxsize=64)
def _full_lengths(B, T):
    # Read-only by contract (the kernels never write lengths); cached because small layers
    # are called often and np.full costs as much as a short recurrence step.
    return np.full(B, T, dtype=np.int64)


def _lengths(lengths, B, T):
    if lengths is None:
        return _full_lengths(B, T)
    return lengths.detach().to("cpu", torch.int64).contiguous().numpy()


def _strategy(T, B, K, N, cdt, proj=False):
    """"loop", "columns" or "step" for a recurrence of T steps whose per-step product is
    (B, K) x (K, N) (tuning: numba_strategy and the loop_/columns_ rules)."""
    if B < 1:
        return "loop"
    columns = not proj and team.threads() > 1
    rules = current()
    forced = rules.numba_strategy
    if forced != "auto":
        return "loop" if forced == "columns" and not columns else forced
    if T == 1:
        return "step"   # a cell: packing the weight for the compiled loop costs more than the step
    weight = K * N * cdt.itemsize
    if columns and any(B <= rows and weight >= least for rows, least in rules.columns_tiers):
        return "columns"
    if weight <= rules.loop_any_batch_weight_bytes:
        return "loop"
    if weight <= rules.loop_max_weight_bytes and B >= rules.loop_min_rows_large_weight:
        return "loop"
    return "step"


def _hidden_slices(H, cdt):
    """Bounds of one slice of hidden units per thread, whole vectors each (the last takes the
    rest)."""
    parts = team.threads()
    lanes = panel_width(np.float64 if cdt == torch.float64 else np.float32) // 4
    per = -(-H // (parts * lanes)) * lanes
    return np.minimum(np.arange(parts + 1, dtype=np.int64) * per, H)


def _packed_slices(w, transposed, groups, slices, cdt):
    """w.T if transposed else w, packed per slice of hidden units for a "columns" kernel
    (linalg.pack_weight_slices); each thread packs its own slices when the weight is large
    (measured 1.75x faster on 2 cores for 16 MiB: the copy waits on memory)."""
    src = _np(w, cdt)
    parts = len(slices) - 1
    if parts < 2 or src.nbytes < current().pack_split_min_bytes:
        return pack_weight_slices(src, transposed, groups, slices)
    out = simd.aligned_empty(src.size, src.dtype)
    team.run(_compiled(threaded.pack_slices_entry),
             team.pack(cdt.itemsize, team.bounds(parts, parts), src, transposed, out, groups,
                       slices))
    return out


def _run_columns(entry, cdt, slices, *args):
    """A "columns" kernel entry on torch's OpenMP team, one slice of hidden units per thread."""
    team.run(_compiled(entry), team.pack(cdt.itemsize, slices, *args))


def _forward_columns(entry, cdt, x_np, w_hh, groups, h_np, *args):
    """A "columns" forward entry(x, W_hh^T packed per slice, *args, hbuf, hg scratch): h_np
    (B, H) holds h0 and becomes h_n (the kernel double-buffers the state in hbuf)."""
    T, B = x_np.shape[0], x_np.shape[1]
    H = h_np.shape[1]
    hbuf = scratch((2, B, H), cdt)
    hbuf[0] = h_np
    slices = _hidden_slices(H, cdt)
    _run_columns(entry, cdt, slices, x_np, _packed_slices(w_hh, True, groups, slices, cdt), *args,
                 hbuf, scratch((B, groups * H), cdt))
    h_np[...] = hbuf[T % 2]


_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def explain(kind, T, B, H, P=None, dtype=torch.float32, device="cpu", I=None):
    """Which strategy the forward recurrence uses for this layer, in one line (with the input
    size I: whether an LSTM or RNN loop takes the input projection inside)."""
    P = P or H
    G = _GATES[kind] * H
    cdt = _compute_dtype(dtype)
    strategy = _strategy(T, B, P, G, cdt, P != H)
    if strategy == "columns":
        threads = len(_hidden_slices(H, cdt)) - 1
        return (f"one compiled loop over {T} steps (product {B}x{P}x{G} per step), hidden units "
                f"split over {threads} threads")
    if (strategy == "loop" and kind in ("lstm", "rnn") and I is not None
            and _fuses(T, B, G, I, H, P != H, cdt)):
        chunks = _chunks(B, _fused_macs(T, B, G, I, H), current().split_min_macs)
        split = f", batch split over {chunks} threads" if chunks > 1 else ""
        return (f"one compiled loop over {T} steps, input projection inside (product "
                f"{B}x{I + H}x{G} per step){split}")
    if strategy == "loop":
        chunks = _chunks(B, T * B * P * G, current().split_min_macs)
        split = f", batch split over {chunks} threads" if chunks > 1 else ""
        cells = (", cells updated on the product's registers"
                 if kind == "lstm" and _gate_panels(T, B, G, H, P != H, cdt) else "")
        return f"one compiled loop over {T} steps (product {B}x{P}x{G} per step{cells}){split}"
    if T == 1:
        gemm = "one GEMM (no packing)"
    else:
        gemm = "oneDNN packed GEMM" if packs(G, P, B, cdt) else "torch.mm"
    chunks = _chunks(B, B * H, _split_min_cells(T))
    split = f" on {chunks} threads" if chunks > 1 else ""
    return f"per step: {gemm} {B}x{P}x{G} + compiled pointwise update{split}"


def _order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _out(t, dtype):
    return t if t.dtype == dtype else t.to(dtype)


def _run(kernel, *args):
    try:
        return kernel(*args)
    except NumbaError as exc:
        raise RuntimeError(
            f"fastrnn numba backend: compiling {kernel.__name__} failed for argument types "
            f"{[getattr(a, 'dtype', type(a).__name__) for a in args]}. Use backend='reference' "
            f"to run without Numba, and report this error."
        ) from exc


def _split_min_cells(T):
    rules = current()
    return rules.split_min_cells if T > 1 else rules.split_min_cells_one_step


def _chunks(B, work, minimum):
    """How many chunks of rows to split B rows into for `work` (1: run in this thread)."""
    if B < 2 or work < minimum:
        return 1
    return min(team.threads(), B)


def _compiled(entry):
    try:
        return threaded.compiled(entry)
    except NumbaError as exc:
        raise RuntimeError(
            f"fastrnn numba backend: compiling {entry.__name__} failed. Use backend='reference' "
            f"to run without Numba, and report this error.") from exc


def _bounds(B, chunks, lengths, lens):
    return team.bounds(B, chunks, None if lengths is None else lens)


def _recurrence(kernel, entry, cdt, B, macs, lengths, lens, *args):
    """kernel(*args, 0, B) in this thread, or in chunks of rows on torch's OpenMP team when its
    multiply-adds over all steps are worth a split."""
    chunks = _chunks(B, macs, current().split_min_macs)
    if chunks <= 1:
        return _run(kernel, *args, 0, B)
    team.run(_compiled(entry), team.pack(cdt.itemsize, _bounds(B, chunks, lengths, lens), *args))


def _step_product(w, B, T):
    """a -> a @ w^T for the per-step strategy's T steps of up to B rows. The weight is packed
    once for oneDNN when several steps reuse it (gemm.RepeatedLinear); a single step takes a
    one-off product instead (packing would cost more than it saves), through torch.mm when w is
    a transposed view (the backward's W_hh^T: no copy)."""
    if T > 1:
        return RepeatedLinear(w.contiguous(), B)
    if w.is_contiguous():
        return lambda a: linear(a, w)
    return lambda a: torch.mm(a, w.t())


class _StepKernel:
    """A pointwise step kernel(*args, lo, hi) called once per step over all B rows.

    Split into chunks on torch's OpenMP team when the step is big enough; the words are packed
    once and only the arguments that changed since the last step are rewritten."""

    def __init__(self, kernel, entry, cdt, T, B, cells, lengths, lens):
        self.kernel, self.B = kernel, B
        self.chunks = _chunks(B, cells, _split_min_cells(T))
        self.float_size = cdt.itemsize
        if self.chunks > 1:
            self.bounds = _bounds(B, self.chunks, lengths, lens)
            self.entry = _compiled(entry)
        self.args = self.packed = None

    def __call__(self, *args):
        if self.chunks <= 1:
            return _run(self.kernel, *args, 0, self.B)
        if self.packed is None:
            self.packed = team.pack(self.float_size, self.bounds, *args)
            self.args = list(args)
        else:
            for k, a in enumerate(args):
                if a is not self.args[k]:
                    self.packed.set(k, a)
                    self.args[k] = a
        team.run(self.entry, self.packed)


_DUMMY = {}


def _dummy(cdt, ndim):
    # Placeholder for an unused optional array: the kernel only ever reads it behind a flag.
    key = (cdt, ndim)
    if key not in _DUMMY:
        _DUMMY[key] = torch.zeros((1,) * ndim, dtype=cdt).numpy()
    return _DUMMY[key]


# ----------------------------------------------------------------------------------- LSTM


def lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, need_grad):
    dtype = xg.dtype
    cdt = _compute_dtype(dtype)
    T, B, G = xg.shape
    H = G // 4
    P = w_hh.shape[1]
    proj = w_hr is not None
    out = empty((T, B, P), cdt)
    h = _state(h0, (B, P), cdt)
    c = _state(c0, (B, H), cdt)
    if need_grad:
        gates, cs = internal((T, B, G), cdt), internal((T, B, H), cdt)
        hpre = internal((T, B, H), cdt) if proj else None
        gates_np, cs_np = gates.numpy(), cs.numpy()
    else:
        # Nothing is saved: the kernels leave gates and cs alone; hpre is one step of scratch.
        gates_np, cs_np = unwritten((1, B, G), cdt), unwritten((1, B, H), cdt)
        hpre = torch.from_numpy(scratch((1, B, H), cdt)) if proj else None
    lens, h_np, c_np, out_np = _lengths(lengths, B, T), h.numpy(), c.numpy(), out.numpy()
    hpre_np = hpre.numpy() if proj else _dummy(cdt, 3)
    strategy = _strategy(T, B, P, G, cdt, proj)
    if strategy != "loop":
        x_np = _np(_whole(xg), cdt)
    if strategy == "step":
        recurrent = _step_product(w_hh.to(cdt), B, T)
        project = _step_product(w_hr.to(cdt), B, T) if proj else None
        step = _StepKernel(lstm_forward_step, threaded.lstm_forward_step_entry, cdt, T, B, B * H,
                           lengths, lens)
        for t in _order(T, reverse):
            step(t, bool(need_grad), x_np, recurrent(h).numpy(), h_np, c_np, lens, proj, out_np,
                 gates_np, cs_np, hpre_np)
            if proj:
                hpre_t = hpre[t if need_grad else 0]
                _run(lstm_project_step, t, project(hpre_t).numpy(), h_np, lens, out_np, 0, B)
    elif strategy == "columns":
        _forward_columns(threaded.lstm_forward_columns_entry, cdt, x_np, w_hh, 4, h_np, c_np,
                         lens, bool(reverse), bool(need_grad), out_np, gates_np, cs_np)
    elif _fuses_projection(xg, H, proj, cdt):
        _lstm_forward_fused(xg, w_hh, cdt, h_np, c_np, lens, lengths, bool(reverse),
                            bool(need_grad), out_np, gates_np, cs_np)
    elif _gate_panels(T, B, G, H, proj, cdt):
        w_gp = pack_gate_panels(_np(w_hh, cdt))
        for t0, t1, x_np in _time_chunks(xg, reverse, cdt):
            kept = slice(t0, t1) if need_grad else slice(0, 1)    # what the steps save
            _recurrence(lstm_forward_cells, threaded.lstm_forward_cells_entry, cdt, B,
                        T * B * G * H, lengths, lens, x_np, w_gp, h_np, c_np,
                        _from_step(lens, t0), bool(reverse), bool(need_grad), out_np[t0:t1],
                        gates_np[kept], cs_np[kept])
    else:
        # Scratch for the compiled loop's products (the per-step path gets them from the GEMM).
        hg_np = scratch((B, G), cdt)
        hproj_np = scratch((B, P), cdt) if proj else _dummy(cdt, 2)
        w_hh_tp = _packed(w_hh.t(), cdt)
        w_hr_tp = _packed(w_hr.t(), cdt) if proj else _dummy(cdt, 1)
        for t0, t1, x_np in _time_chunks(xg, reverse, cdt):
            kept = slice(t0, t1) if need_grad else slice(0, 1)    # what the steps save
            _recurrence(lstm_forward_recurrence, threaded.lstm_forward_recurrence_entry, cdt, B,
                        T * B * G * (P + (H if proj else 0)), lengths, lens, x_np, w_hh_tp,
                        w_hr_tp, h_np, c_np, _from_step(lens, t0), bool(reverse), proj,
                        bool(need_grad), out_np[t0:t1], gates_np[kept], cs_np[kept],
                        hpre_np[kept] if proj else hpre_np, hg_np, hproj_np)
    saved = ((gates, cs) + ((hpre,) if proj else ())) if need_grad else ()
    return _out(out, dtype), _out(h, dtype), _out(c, dtype), saved


def _gate_panels(T, B, G, H, proj, cdt):
    """Whether a "loop" LSTM forward that does not fuse its projection runs
    lstm.lstm_forward_cells (tuning: gate_panels_max_rows)."""
    if proj or H % (panel_width(_NUMPY_DTYPES[cdt]) // 4):
        return False
    rules = current()
    rows = -(-B // _chunks(B, T * B * G * H, rules.split_min_macs))    # per thread, at most
    return rows <= rules.gate_panels_max_rows


def _fused_macs(T, B, G, I, H):
    return T * B * G * (I + H)


def _fuses(T, B, G, I, H, proj, cdt):
    """Whether a "loop" LSTM or RNN forward (G gate columns, input size I) computes its input
    projection inside the loop (tuning: the fuse_ rules)."""
    rules = current()
    if not rules.fuse_projection or proj or T < rules.fuse_min_steps:
        return False
    rows = B // _chunks(B, _fused_macs(T, B, G, I, H), rules.split_min_macs)     # per thread
    weight = (I + H) * G * cdt.itemsize
    return rows >= rules.fuse_min_rows and (
        weight <= rules.fuse_max_weight_bytes
        or rows >= rules.fuse_many_rows and weight <= rules.fuse_many_rows_max_weight_bytes)


def _fuses_projection(xg, H, proj, cdt):
    """_fuses for the xg a forward got: only an ops.InputProjection can be fused."""
    if isinstance(xg, torch.Tensor):
        return False
    T, B, G = xg.shape
    return _fuses(T, B, G, xg.x.shape[2], H, proj, cdt)


def _fused_operands(xg, w_hh, cdt):
    """x, [W_ih, W_hh]^T packed, and the bias in every row (B, G), for a fused forward kernel
    given the ops.InputProjection (x, W_ih, bias) of the layer."""
    B, G = xg.shape[1], xg.shape[2]
    w_tp = pack_weight_concat_t(_np(xg.w_ih, cdt), _np(w_hh, cdt))
    bias_rows = scratch((B, G), cdt)
    bias_rows[...] = 0 if xg.bias is None else _np(xg.bias, cdt)
    return _np(xg.x, cdt), w_tp, bias_rows


def _fused_scratch(B, I, H, G, cdt):
    """xh (B, I + H), pre (1, B, G) and lens_t (B,) for a fused forward kernel."""
    return scratch((B, I + H), cdt), scratch((1, B, G), cdt), np.empty(B, np.int64)


def _lstm_forward_fused(xg, w_hh, cdt, h_np, c_np, lens, lengths, reverse, need_grad, out_np,
                        gates_np, cs_np):
    """lstm.lstm_forward_fused over all rows, on torch's team when worth a split."""
    T, B, G = xg.shape
    H = c_np.shape[1]
    x_np, w_tp, bias_rows = _fused_operands(xg, w_hh, cdt)
    I = x_np.shape[2]
    _recurrence(lstm_forward_fused, threaded.lstm_forward_fused_entry, cdt, B,
                _fused_macs(T, B, G, I, H), lengths, lens, x_np, w_tp, bias_rows, h_np, c_np,
                lens, reverse, need_grad, out_np, gates_np, cs_np,
                *_fused_scratch(B, I, H, G, cdt))


def _rnn_forward_fused(xg, w_hh, cdt, h_np, lens, lengths, reverse, relu, out_np):
    """rnn.rnn_forward_fused over all rows, on torch's team when worth a split."""
    T, B, H = xg.shape
    x_np, w_tp, bias_rows = _fused_operands(xg, w_hh, cdt)
    I = x_np.shape[2]
    _recurrence(rnn_forward_fused, threaded.rnn_forward_fused_entry, cdt, B,
                _fused_macs(T, B, H, I, H), lengths, lens, x_np, w_tp, bias_rows, h_np, lens,
                reverse, relu, out_np, *_fused_scratch(B, I, H, H, cdt))


def _grad(g, shape, cdt):
    """An upstream gradient as a contiguous compute-dtype tensor. It often is an expanded view
    (the gradient of a sum): copied then into an internal buffer."""
    if g is None:
        return _state(g, shape, cdt)
    g = g.detach()
    if g.dtype == cdt and g.is_contiguous():
        return g
    copy = internal(shape, cdt)
    copy.copy_(g)
    return copy


def lstm_backward(grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse):
    gates, cs = saved[0], saved[1]
    cdt = gates.dtype
    dtype = w_hh.dtype
    T, B, G = gates.shape
    H = G // 4
    P = w_hh.shape[1]
    proj = w_hr is not None
    dh = _state(grad_hn, (B, P), cdt)
    dc = _state(grad_cn, (B, H), cdt)
    go = _grad(grad_out, (T, B, P), cdt).numpy()
    c0_np = _np(c0, cdt)            # read only
    dgates = internal((T, B, G), cdt)
    dht_all = internal((T, B, P), cdt) if proj else None
    dhp_np = scratch((B, H), cdt)
    lens = _lengths(lengths, B, T)
    step_args = (go, dh.numpy(), dc.numpy(), dhp_np, gates.numpy(), cs.numpy(), c0_np, lens,
                 proj, dgates.numpy())
    dht_np = dht_all.numpy() if proj else _dummy(cdt, 3)
    strategy = _strategy(T, B, G, P, cdt, proj)
    if strategy == "step":
        back = _step_product(w_hh.to(cdt).t(), B, T)
        back_proj = _step_product(w_hr.to(cdt).t(), B, T) if proj else None
        step = _StepKernel(lstm_backward_step, threaded.lstm_backward_step_entry, cdt, T, B, B * H,
                           lengths, lens)
        dhp = torch.from_numpy(dhp_np)
        for t in _order(T, not reverse):
            if proj:
                _run(lstm_backward_dht, t, step_args[1], go, lens, dht_np, 0, B)
                dhp.copy_(back_proj(dht_all[t]))
            step(t, bool(reverse), *step_args)
            _mm_live(back(dgates[t]), dh, t, lengths, lens, copy_live_rows)
    elif strategy == "columns":
        slices = _hidden_slices(H, cdt)
        _run_columns(threaded.lstm_backward_columns_entry, cdt, slices, go, dh.numpy(),
                     dc.numpy(), gates.numpy(), cs.numpy(), c0_np,
                     _packed_slices(w_hh, False, 1, slices, cdt), lens, bool(reverse),
                     dgates.numpy(), scratch((B, P), cdt))
    else:
        _recurrence(lstm_backward_recurrence, threaded.lstm_backward_recurrence_entry, cdt, B,
                    T * B * G * (P + (H if proj else 0)), lengths, lens, go, dh.numpy(),
                    dc.numpy(), gates.numpy(), cs.numpy(), c0_np, _packed(w_hh, cdt),
                    _packed(w_hr, cdt) if proj else _dummy(cdt, 1), lens, bool(reverse), proj,
                    dgates.numpy(), dht_np, dhp_np, scratch((B, P), cdt))
    dw_hr = None
    if proj:
        # One GEMM over all steps instead of T small ones; dead steps have dht = 0.
        dw_hr = _out(weight_grads(dht_all.reshape(T * B, P), [saved[2].reshape(T * B, H)])[0][0],
                     dtype)
    return _out(dgates, dtype), _out(dh, dtype), _out(dc, dtype), dw_hr




def _own_weight_grads(grad, inputs):
    M, N = grad.shape
    rules = current()
    return (0 < len(inputs) <= 2 and 0 < M <= rules.own_weight_grads_max_rows
            and grad.dtype in _NUMPY_DTYPES and all(a.dtype == grad.dtype for a in inputs)
            and M * N * sum(a.shape[1] for a in inputs) >= rules.own_weight_grads_min_macs)


def weight_grads(grad, inputs, bias=False):
    """gemm.weight_grads (the gradients of weights shared by all steps, grad (M, N) over M
    steps x rows, inputs up to two (M, K) tensors), through the compiled product where it was
    measured faster than torch's GEMMs, else through gemm.weight_grads."""
    if not _own_weight_grads(grad, inputs):
        return gemm.weight_grads(grad, inputs, bias)
    cdt = grad.dtype
    N = grad.shape[1]
    outs = [empty((N, a.shape[1]), cdt) for a in inputs]
    operands = [(pack_weight(_np_view(a, cdt)), out.numpy()) for a, out in zip(inputs, outs)]
    two = len(inputs) == 2
    second = operands[1] if two else (_dummy(cdt, 1), _dummy(cdt, 2))
    # Chunks of whole 4-row blocks of dW, one per thread; the last one takes the rows left.
    bounds = team.bounds(N // 4, max(1, min(team.threads(), N // 4))) * 4
    bounds[-1] = N
    team.run(_compiled(threaded.weight_grads_entry),
             team.pack(cdt.itemsize, bounds, _np(grad, cdt), *operands[0], two, *second))
    return outs, (grad.sum(0) if bias else None)


def _mm_live(product, dst, t, lengths, lens, combine):
    """dst (op)= product for the sequences live at step t (all of them without lengths)."""
    if lengths is None and combine is copy_live_rows:
        dst.copy_(product)
    elif lengths is None:
        dst.add_(product)
    else:
        _run(combine, t, product.numpy(), dst.numpy(), lens, 0, lens.shape[0])


# ------------------------------------------------------------------------------------ GRU


def gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, need_grad):
    dtype = xg.dtype
    cdt = _compute_dtype(dtype)
    T, B, G = xg.shape
    H = G // 3
    out = empty((T, B, H), cdt)
    h = _state(h0, (B, H), cdt)
    if need_grad:
        gates, hn_lin = internal((T, B, G), cdt), internal((T, B, H), cdt)
        gates_np, hn_np = gates.numpy(), hn_lin.numpy()
    else:
        gates_np, hn_np = scratch((1, B, G), cdt), scratch((1, B, H), cdt)
    bias = _np(b_hn, cdt) if b_hn is not None else np.zeros(H, _NUMPY_DTYPES[cdt])
    lens, h_np, out_np = _lengths(lengths, B, T), h.numpy(), out.numpy()
    strategy = _strategy(T, B, H, G, cdt)
    if strategy != "loop":
        x_np = _np(_whole(xg), cdt)
    if strategy == "step":
        recurrent = _step_product(w_hh.to(cdt), B, T)
        step = _StepKernel(gru_forward_step, threaded.gru_forward_step_entry, cdt, T, B, B * H,
                           lengths, lens)
        for t in _order(T, reverse):
            step(t, t if need_grad else 0, x_np, recurrent(h).numpy(), bias, h_np, lens, out_np,
                 gates_np, hn_np)
    elif strategy == "columns":
        _forward_columns(threaded.gru_forward_columns_entry, cdt, x_np, w_hh, 3, h_np, bias, lens,
                         bool(reverse), bool(need_grad), out_np, gates_np, hn_np)
    else:
        w_hh_tp, hg_np = _packed(w_hh.t(), cdt), scratch((B, G), cdt)
        for t0, t1, x_np in _time_chunks(xg, reverse, cdt):
            kept = slice(t0, t1) if need_grad else slice(0, 1)
            _recurrence(gru_forward_recurrence, threaded.gru_forward_recurrence_entry, cdt, B,
                        T * B * G * H, lengths, lens, x_np, w_hh_tp, bias, h_np,
                        _from_step(lens, t0), bool(reverse), bool(need_grad), out_np[t0:t1],
                        gates_np[kept], hn_np[kept], hg_np)
    saved = ()
    if need_grad:
        # Half types: keep the float32 outputs so backward sees the states it computed with.
        saved = (gates, hn_lin) + ((out,) if dtype != cdt else ())
    return _out(out, dtype), _out(h, dtype), saved


def gru_backward(grad_out, grad_hn, saved, w_hh, b_hn, h0, out, lengths, reverse):
    gates, hn_lin = saved[0], saved[1]
    cdt = gates.dtype
    dtype = w_hh.dtype
    T, B, G = gates.shape
    H = G // 3
    hs = saved[2] if len(saved) > 2 else out
    dh = _state(grad_hn, (B, H), cdt)
    go = _grad(grad_out, (T, B, H), cdt).numpy()
    h0_np = _np(h0, cdt)            # read only
    dxgates = internal((T, B, G), cdt)
    dhgates = internal((T, B, G), cdt)
    lens = _lengths(lengths, B, T)
    strategy = _strategy(T, B, G, H, cdt)
    if strategy == "step":
        back = _step_product(w_hh.to(cdt).t(), B, T)
        step_args = (go, dh.numpy(), gates.numpy(), hn_lin.numpy(), h0_np, _np(hs, cdt), lens,
                     dxgates.numpy(), dhgates.numpy())
        step = _StepKernel(gru_backward_step, threaded.gru_backward_step_entry, cdt, T, B, B * H,
                           lengths, lens)
        for t in _order(T, not reverse):
            step(t, bool(reverse), *step_args)
            _mm_live(back(dhgates[t]), dh, t, lengths, lens, add_live_rows)
    elif strategy == "columns":
        slices = _hidden_slices(H, cdt)
        _run_columns(threaded.gru_backward_columns_entry, cdt, slices, go, dh.numpy(),
                     gates.numpy(), hn_lin.numpy(), h0_np, _np(hs, cdt),
                     _packed_slices(w_hh, False, 1, slices, cdt), lens, bool(reverse),
                     dxgates.numpy(), dhgates.numpy(), scratch((B, H), cdt))
    else:
        _recurrence(gru_backward_recurrence, threaded.gru_backward_recurrence_entry, cdt, B,
                    T * B * G * H, lengths, lens, go, dh.numpy(), gates.numpy(), hn_lin.numpy(),
                    h0_np, _np(hs, cdt), _packed(w_hh, cdt), lens, bool(reverse), dxgates.numpy(),
                    dhgates.numpy(), scratch((B, H), cdt))
    return _out(dxgates, dtype), _out(dhgates, dtype), _out(dh, dtype)


# ------------------------------------------------------------------------------------ RNN


def _relu(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


def rnn_forward(xg, w_hh, h0, lengths, reverse, nonlinearity, need_grad):
    relu = _relu(nonlinearity)
    dtype = xg.dtype
    cdt = _compute_dtype(dtype)
    T, B, H = xg.shape
    out = empty((T, B, H), cdt)
    h = _state(h0, (B, H), cdt)
    lens, h_np, out_np = _lengths(lengths, B, T), h.numpy(), out.numpy()
    strategy = _strategy(T, B, H, H, cdt)
    if strategy != "loop":
        x_np = _np(_whole(xg), cdt)
    if strategy == "step":
        recurrent = _step_product(w_hh.to(cdt), B, T)
        step = _StepKernel(rnn_forward_step, threaded.rnn_forward_step_entry, cdt, T, B, B * H,
                           lengths, lens)
        for t in _order(T, reverse):
            step(t, x_np, recurrent(h).numpy(), h_np, lens, relu, out_np)
    elif strategy == "columns":
        _forward_columns(threaded.rnn_forward_columns_entry, cdt, x_np, w_hh, 1, h_np, lens,
                         bool(reverse), relu, out_np)
    elif _fuses_projection(xg, H, False, cdt):
        _rnn_forward_fused(xg, w_hh, cdt, h_np, lens, lengths, bool(reverse), relu, out_np)
    else:
        w_hh_tp, hg_np = _packed(w_hh.t(), cdt), scratch((B, H), cdt)
        for t0, t1, x_np in _time_chunks(xg, reverse, cdt):
            _recurrence(rnn_forward_recurrence, threaded.rnn_forward_recurrence_entry, cdt, B,
                        T * B * H * H, lengths, lens, x_np, w_hh_tp, h_np, _from_step(lens, t0),
                        bool(reverse), relu, out_np[t0:t1], hg_np)
    # Backward needs only the outputs; half types keep the float32 ones.
    saved = (out,) if need_grad and dtype != cdt else ()
    return _out(out, dtype), _out(h, dtype), saved


def rnn_backward(grad_out, grad_hn, saved, w_hh, h0, out, lengths, reverse, nonlinearity):
    relu = _relu(nonlinearity)
    dtype = w_hh.dtype
    cdt = _compute_dtype(dtype)
    hs = saved[0] if saved else out
    T, B, H = hs.shape
    dh = _state(grad_hn, (B, H), cdt)
    go = _grad(grad_out, (T, B, H), cdt).numpy()
    hs_np = _np(hs, cdt)
    dgates = internal((T, B, H), cdt)
    lens = _lengths(lengths, B, T)
    strategy = _strategy(T, B, H, H, cdt)
    if strategy == "step":
        back = _step_product(w_hh.to(cdt).t(), B, T)
        dh_np, dgates_np = dh.numpy(), dgates.numpy()
        step = _StepKernel(rnn_backward_step, threaded.rnn_backward_step_entry, cdt, T, B, B * H,
                           lengths, lens)
        for t in _order(T, not reverse):
            step(t, go, dh_np, hs_np, lens, relu, dgates_np)
            _mm_live(back(dgates[t]), dh, t, lengths, lens, copy_live_rows)
    elif strategy == "columns":
        slices = _hidden_slices(H, cdt)
        _run_columns(threaded.rnn_backward_columns_entry, cdt, slices, go, dh.numpy(), hs_np,
                     _packed_slices(w_hh, False, 1, slices, cdt), lens, bool(reverse),
                     relu, dgates.numpy(), scratch((B, H), cdt))
    else:
        _recurrence(rnn_backward_recurrence, threaded.rnn_backward_recurrence_entry, cdt, B,
                    T * B * H * H, lengths, lens, go, dh.numpy(), hs_np, _packed(w_hh, cdt), lens,
                    bool(reverse), relu, dgates.numpy(), scratch((B, H), cdt))
    return _out(dgates, dtype), _out(dh, dtype)
