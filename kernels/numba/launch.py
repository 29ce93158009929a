"""Thin launchers: torch tensors in and out, numpy views for the kernels, strategy choice.

The backend interface (argument order, returns, semantics) is the one documented in
fastrnn/reference.py. Half types are computed in float32 and cast back on return.
"""

import functools
import math

import numpy as np
import torch
from numba.core.errors import NumbaError

from .. import cpu
from .. import gemm
from ..gemm import RepeatedLinear, linear, packs
from . import pool, simd, team, threaded
from .gru import (gru_backward_recurrence, gru_backward_step, gru_forward_recurrence,
                  gru_forward_step)
from .linalg import (add_live_rows, copy_live_rows, pack_gate_panels, pack_weight,
                     pack_weight_concat_t, pack_weight_slices, panel_width)
from .lstm import (lstm_backward_dht, lstm_backward_recurrence, lstm_backward_step,
                   lstm_forward_cells, lstm_forward_fused, lstm_forward_recurrence,
                   lstm_forward_step, lstm_project_step)
from .rnn import (rnn_backward_recurrence, rnn_backward_step, rnn_forward_fused,
                  rnn_forward_recurrence, rnn_forward_step)

_HALF = (torch.float16, torch.bfloat16)

# Which strategy runs a layer:
#   "loop"    one compiled loop over all steps, the batch rows split over torch's threads;
#   "columns" the same loop with the hidden units split over the threads instead (each thread
#             computes its units' gate columns for every row, one barrier per step): a thread
#             reads only its share of W_hh each step, and a small batch still uses every core;
#   "step"    a Python loop over steps, each calling the GEMM helper (oneDNN or MKL, on torch's
#             threads) and a compiled pointwise update.
# Measured (benchmarks/strategy_crossover.py;
# benchmarks/results/cpu-strategy-2026-11-26-intel.md) on a 2-core Intel Xeon (2 MiB L2 per
# core) with the packed product, T = 50, LSTM/GRU/RNN:
# "columns" won from 3 MiB of W_hh up to 16 rows (1.05-1.85x the loop, 1.0-1.7x the step GEMM)
# and from 512 KiB at 1-2 rows (1.07-1.35x); it lost to the loop below that (down to 0.76x). The
# row-split loop won up to 3 MiB at any batch (and 4 MiB from 8 rows), also on the 2-core AMD
# EPYC this rule was first measured on; the step GEMM wins beyond that.
# On the Zen 4 machine (1 MiB L2 per core; benchmarks/strategy_crossover.py, T = 50; recorded in
# benchmarks/results/cpu-strategy-2026-11-26-zen4.md) "columns" also won at 3-6 rows from 1 MiB
# in two runs (LSTM H=256 B=4: 1.70 vs 2.00 ms inference, 5.49 vs 5.92 training; up to 1.27x at
# 6 rows), was mixed at 576-768 KiB (0.9-1.1x) and tied or lost at 8 rows: with the rows split
# each thread streams the whole weight from L3 every step, with the units split each reads half
# of it. At 8-16 rows with 3-4 MiB the row split was as fast or faster (GRU H=448-512 1.05-1.24x,
# LSTM and RNN ties), so there the hidden units are split only beyond 4 MiB, where the loop is
# not an option and "columns" beat the per-step GEMM. That last tier is the AMD one; Intel CPUs
# keep the 3 MiB the Xeon measured (kernels/cpu.py), confirmed on a second Xeon (48 KiB L1d,
# 2 MiB L2; LSTM inference T = 100, H = 512, against torch: "columns" 1.10x / 0.99x at 8 / 16
# rows where the loop ran 0.82x / 0.85x; training 0.98x against 0.80x / 0.83x; scratch sweep
# recorded in benchmarks/results/cpu-lstm-rules-2026-11-26-xeon.md). The rule: up to
# COLUMNS_TIERS[k][0] rows from COLUMNS_TIERS[k][1] bytes of W_hh.
# A single step (the cells, T = 1) always takes "step": the compiled loops pack the weight first
# (7 us for LSTM H=64, 28 us for H=128, ~0.5 ms for H=512), which only pays over many steps, and
# the step product is then a one-off GEMM (no oneDNN packing either, see _step_product).
# STRATEGY "loop", "columns" or "step" forces one (tests, benchmarks); projected LSTMs have no
# "columns" kernel and take the loop instead.
STRATEGY = "auto"
LOOP_ANY_BATCH_WEIGHT_BYTES = 3 << 20
LOOP_MAX_WEIGHT_BYTES = 4 << 20
LOOP_MIN_ROWS_LARGE_WEIGHT = 8
_COLUMNS_FROM_16_ROWS = {cpu.AMD: LOOP_MAX_WEIGHT_BYTES + 1, cpu.INTEL: 3 << 20}


def columns_tiers(family):
    """COLUMNS_TIERS for a CPU family (kernels/cpu.py)."""
    return ((2, 512 << 10), (LOOP_MIN_ROWS_LARGE_WEIGHT - 1, 1 << 20),
            (16, _COLUMNS_FROM_16_ROWS[family]))


COLUMNS_TIERS = columns_tiers(cpu.family())

# When the batch is split across torch's OpenMP threads (kernels/numba/team.py): a whole-sequence
# recurrence from 2^23 multiply-adds over all steps, a per-step pointwise update from 2^12 cells
# per step. Below, one thread is as fast: a split costs ~25 us per call (packing the arguments)
# and its threads share the weight's cache lines. Measured on the Zen 4 machine with the SIMD
# product (GRU/RNN/LSTM, 4-64 rows, H = 64-512): 1.05-1.33x slower than one thread at
# 2^20-2^22, a tie at 2^22.6, 1.03-1.19x faster from 2^23. (The old 2^20 was measured before the
# product got 1.5x faster.)
SPLIT_MIN_MACS = 1 << 23
SPLIT_MIN_CELLS = 1 << 12
# A single step (the cells) pays the packing for one update only: splitting it measured slower
# up to 2^14 cells (LSTM, 178 vs 148 us at 16 x 256) and ~5% faster from 2^15.
SPLIT_MIN_CELLS_ONE_STEP = 1 << 15


def _split_min_cells(T):
    return SPLIT_MIN_CELLS if T > 1 else SPLIT_MIN_CELLS_ONE_STEP
# Packing a weight for the "columns" kernels is split over the threads from this size (the
# split's ~20 us of argument packing is then under a tenth of the copy).
PACK_SPLIT_MIN_BYTES = 1 << 20


# A recurrence handed an ops.InputProjection ("loop" strategy) whose whole projection would take
# PROJECT_IN_CHUNKS_FROM bytes or more projects its input PROJECT_CHUNK_BYTES of steps at a time,
# interleaved with the steps: each chunk is still in cache when the recurrence reads it, and the
# whole projection's fresh memory (past glibc's 32 MB reuse limit, so page-faulted on every call,
# ~1 ms per 4 MB) is never touched. Measured on the Zen 4 machine, LSTM inference 100x64x512
# (52 MB): 146.8 -> 142.8 ms per call, projection alone 81 -> 76 ms. At 100x64x256 (26 MB)
# chunks lost 3-6% (more calls, no faults to save), hence the threshold.
PROJECT_CHUNK_BYTES = 8 << 20
PROJECT_IN_CHUNKS_FROM = 32 << 20

PROJECTS_INPUT = True   # the forwards take an ops.InputProjection as xg (fastrnn/reference.py)

# An LSTM (no projection) or RNN forward on the "loop" strategy computes its input projection
# inside the loop, one product [x_t, h_{t-1}] @ [W_ih, W_hh]^T per step (lstm.lstm_forward_fused,
# rnn.rnn_forward_fused), when each thread has FUSE_MIN_ROWS rows or more, there are
# FUSE_MIN_STEPS steps or more and [W_ih, W_hh] is at most FUSE_MAX_WEIGHT_BYTES: the
# projection of all steps is then never written out and read back, and the call runs as one
# parallel region instead of a GEMM's and then the loop's. (GRU's n gate needs x W_in and
# h W_hn apart: not fused.) Measured on the Zen 4 machine:
# - one thread, LSTM: 8 rows of H=128 2.18 vs 2.65 ms (GEMM + loop), 32 rows of H=256 31.9 vs
#   34.5 ms, 4 rows of H=128 1.10 vs 1.31 ms;
# - LSTM inference on 2 threads (T x B x H): 100x16x128 3.0 vs 4.1 ms, 100x64x256 33.7 vs 35.5,
#   100x64x512 (8 MiB) 128 vs 134, 50x64x384 40.8 vs 43.9; training 0-7% faster;
# - RNN inference 1.07-1.26x faster (100x64x256 11.8 -> 9.6 ms), training 0.96-1.16x.
# With fewer rows the product would read the larger weight each step for too little work (one
# row of H=64: a GEMM over all 100 steps is cheaper). With fewer steps the larger weight's
# packing per call outweighs the saving (LSTM, 4 steps: 1.10-1.30x slower at 16 rows of
# H=128-256; 8 steps: 0.96-1.04x; from 16 mostly faster).
# Those 8 MiB are the AMD limit. On an Intel Xeon (2 MiB L2, a slower L3; kernels/cpu.py) the
# fused weight lost from 2 MiB (LSTM inference T = 100, H = 256, 8-32 rows: 0.65-0.80x torch
# fused, 0.84-0.96x not; H = 512, 8-16 rows: 0.56-0.64x against 0.82-0.85x) and won at 512 KiB
# (H = 128: 1.11-1.49x against 0.96-1.38x), so Intel CPUs fuse up to 1 MiB (records in
# benchmarks/results/cpu-lstm-rules-2026-11-26-xeon.md).
# Since the product prefetches weights larger than L2 (linalg.STREAM_FROM_BYTES), the same Xeon
# fuses up to 8 MiB from FUSE_MANY_ROWS rows per thread. LSTM inference, T = 100, torch's time
# over fastrnn's, not fused -> fused, one process per run: 32 rows per thread of H = 256
# 0.80-0.84x -> 0.94-0.96x in 4 runs of 5 (0.85x in the fifth), 24 rows 0.82 -> 0.83 / 0.95x,
# 32 rows of H = 512 0.89-0.95x (median 0.93) -> 0.86-1.03x (median 0.97) in 4 runs; training
# 0.99-1.06x as fast; 16 rows per thread tied (0.85-0.95x either way), 8 rows lost 7-10%
# (benchmarks/fused_projection_crossover.py; benchmarks/results/cpu-prefetch-2026-11-26-xeon.md).
FUSE_PROJECTION = True
FUSE_MIN_ROWS = 4
FUSE_MIN_STEPS = 16
FUSE_MAX_WEIGHT_BYTES_BY_FAMILY = {cpu.AMD: 8 << 20, cpu.INTEL: 1 << 20}
FUSE_MAX_WEIGHT_BYTES = FUSE_MAX_WEIGHT_BYTES_BY_FAMILY[cpu.family()]
FUSE_MANY_ROWS = 24
FUSE_MANY_ROWS_MAX_WEIGHT_BYTES = 8 << 20


# An LSTM forward on the "loop" strategy that neither fuses its input projection nor projects h
# updates each step's cells on the product's accumulators (lstm.lstm_forward_cells, W_hh^T in
# gate panels) when each thread has at most GATE_PANELS_MAX_ROWS rows and H is a multiple of the
# vector lanes. With a row or two the product waits on the weight (each step reads all of it from
# L2 for one or two multiply-adds per element), and the activations then run in those waits
# instead of in a pass of their own after the product. Measured on the Zen 4 machine, layers
# against the plain product (benchmarks/gate_panels.py, T = 100, two runs; recorded in
# benchmarks/results/cpu-gate-panels-2026-11-26-zen4.md): inference 1.09-1.36x at 1-2 rows per
# thread of H = 64-128 (one row of H = 64: 1.24x both runs), 0.93-1.13x at 3 (median 1.04);
# training 1.05-1.21x and 0.93-1.07x. The kernel alone, one row, one thread: H = 64 91 -> 62 us
# per 100 steps, H = 128 299 -> 243, H = 256 1222 -> 1038. From 4 rows per thread a layer fuses
# its projection instead. Not measured on Intel CPUs: 0 rows there.
GATE_PANELS_MAX_ROWS_BY_FAMILY = {cpu.AMD: 3, cpu.INTEL: 0}
GATE_PANELS_MAX_ROWS = GATE_PANELS_MAX_ROWS_BY_FAMILY[cpu.family()]


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
    projected in chunks (PROJECT_IN_CHUNKS_FROM). Consume each chunk before taking the next."""
    T, B, G = xg.shape
    step_bytes = B * G * cdt.itemsize
    if not isinstance(xg, torch.Tensor) and T * step_bytes >= PROJECT_IN_CHUNKS_FROM:
        for t0, t1, part in xg.chunks(max(1, PROJECT_CHUNK_BYTES // step_bytes), reverse):
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
    (B, K) x (K, N) (see STRATEGY)."""
    if B < 1:
        return "loop"
    columns = not proj and team.threads() > 1
    if STRATEGY != "auto":
        return "loop" if STRATEGY == "columns" and not columns else STRATEGY
    if T == 1:
        return "step"   # a cell: packing the weight for the compiled loop costs more than the step
    weight = K * N * cdt.itemsize
    if columns and any(B <= rows and weight >= least for rows, least in COLUMNS_TIERS):
        return "columns"
    if weight <= LOOP_ANY_BATCH_WEIGHT_BYTES:
        return "loop"
    if weight <= LOOP_MAX_WEIGHT_BYTES and B >= LOOP_MIN_ROWS_LARGE_WEIGHT:
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
    if parts < 2 or src.nbytes < PACK_SPLIT_MIN_BYTES:
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
        chunks = _chunks(B, _fused_macs(T, B, G, I, H), SPLIT_MIN_MACS)
        split = f", batch split over {chunks} threads" if chunks > 1 else ""
        return (f"one compiled loop over {T} steps, input projection inside (product "
                f"{B}x{I + H}x{G} per step){split}")
    if strategy == "loop":
        chunks = _chunks(B, T * B * P * G, SPLIT_MIN_MACS)
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
    chunks = _chunks(B, macs, SPLIT_MIN_MACS)
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
    lstm.lstm_forward_cells (see GATE_PANELS_MAX_ROWS)."""
    if proj or H % (panel_width(_NUMPY_DTYPES[cdt]) // 4):
        return False
    rows = -(-B // _chunks(B, T * B * G * H, SPLIT_MIN_MACS))    # per thread, at most
    return rows <= GATE_PANELS_MAX_ROWS


def _fused_macs(T, B, G, I, H):
    return T * B * G * (I + H)


def _fuses(T, B, G, I, H, proj, cdt):
    """Whether a "loop" LSTM or RNN forward (G gate columns, input size I) computes its input
    projection inside the loop (see FUSE_PROJECTION)."""
    if not FUSE_PROJECTION or proj or T < FUSE_MIN_STEPS:
        return False
    rows = B // _chunks(B, _fused_macs(T, B, G, I, H), SPLIT_MIN_MACS)     # per thread
    weight = (I + H) * G * cdt.itemsize
    return rows >= FUSE_MIN_ROWS and (
        weight <= FUSE_MAX_WEIGHT_BYTES
        or rows >= FUSE_MANY_ROWS and weight <= FUSE_MANY_ROWS_MAX_WEIGHT_BYTES)


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
        dw_hr = _out(weight_grads(dht_all.reshape(T * B, P), [saved[2].reshape(T * B, H)])[0][0], dtype)
    return _out(dgates, dtype), _out(dh, dtype), _out(dc, dtype), dw_hr


# Weight gradients dW = dG^T a over all T x B steps: the compiled product reading dG in place
# (linalg.matmul_packed_at, the rows of dW split over torch's threads) against torch.mm's
# transposed product, which on the Zen 4 EPYC ran at 155-195 GFLOP/s on these shapes (MKL is
# weakest when the steps, its k, are few). Where each wins is measured per CPU family
# (benchmarks/weight_grad_crossover.py --numba); 0: never (not measured on Intel CPUs).
OWN_WEIGHT_GRAD_MAX_STEPS_BY_FAMILY = {cpu.AMD: 3200, cpu.INTEL: 0}
OWN_WEIGHT_GRAD_MAX_STEPS = OWN_WEIGHT_GRAD_MAX_STEPS_BY_FAMILY[cpu.family()]
OWN_WEIGHT_GRAD_MIN_MACS = 1 << 24


def _own_weight_grads(grad, inputs):
    M, N = grad.shape
    return (0 < len(inputs) <= 2 and 0 < M <= OWN_WEIGHT_GRAD_MAX_STEPS
            and grad.dtype in _NUMPY_DTYPES and all(a.dtype == grad.dtype for a in inputs)
            and M * N * sum(a.shape[1] for a in inputs) >= OWN_WEIGHT_GRAD_MIN_MACS)


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
