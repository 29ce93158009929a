"""Every measured size rule, as data: one frozen record per CPU family.

The rules that decide what runs a call (torch's own LSTM/GRU/RNN or fastrnn's kernels; which
numba strategy; oneDNN or MKL for a product) were measured on 2-core machines, and where the
families disagreed each keeps its own value. Each field says why it has its value and which file
in benchmarks/results/ measured it (`why(name)`, `measured(name)`; docs/tuning.md says how a
rule is measured). This module imports nothing from the kernels.

    from fastrnn.kernels.tuning import current, tuning
    current().split_min_macs                   # this machine's record
    with tuning(numba_strategy="step"):        # tests and benchmarks: a changed copy, restored
        ...                                    # on exit (process-wide, not per thread)

A band is a tuple of (hidden-size bucket, fewest rows, most rows); a row limit of None means
unbounded. Fields marked `compiled` are baked into the compiled kernels at import (Numba
freezes globals): `tuning()` refuses to change them.
"""

import contextlib
import dataclasses
from dataclasses import dataclass, field

from . import cpu


def _rule(why, measured, compiled=False):
    return field(metadata={"why": why, "measured": measured, "compiled": compiled})


@dataclass(frozen=True)
class Tuning:
    family: str = _rule("which CPU family's measurements these are", "")

    # ---------------------------------------------------------------- auto: torch or fastrnn
    lstm_hidden_buckets: tuple = _rule(
        "hidden-size buckets of the LSTM bands: a size takes the smallest bucket at least as "
        "large; beyond the last nothing was measured and fastrnn keeps the call",
        "cpu-native-lstm-2026-11-26.md")
    lstm_torch_inference: tuple = _rule(
        "from lstm_short_steps steps, float32 inference: the bands where torch's fused oneDNN "
        "LSTM was faster than fastrnn's kernels, so auto calls it",
        "cpu-native-lstm-2026-12-07-zen4.md (AMD), cpu-native-lstm-2026-11-26-xeon.md (Intel)")
    lstm_torch_training: tuple = _rule(
        "the same for training (forward and backward)",
        "cpu-native-lstm-2026-12-07-zen4.md (AMD), cpu-native-lstm-2026-11-26-xeon.md (Intel)")
    lstm_short_steps: int = _rule(
        "below this many steps fastrnn's fixed cost per call weighs more and the LSTM takes "
        "lstm_short_torch instead of the bands", "cpu-short-lstm-2026-11-26-zen4.md")
    lstm_short_torch: tuple = _rule(
        "below lstm_short_steps: whether torch's LSTM was faster, [training][batch bucket]"
        "[hidden bucket] over few_steps_batches x few_steps_hidden",
        "cpu-short-lstm-2026-12-07-zen4.md")
    few_steps_batches: tuple = _rule(
        "batch buckets of the short-sequence tables (beyond the last: fastrnn)",
        "cpu-short-sequences-2026-11-26-zen4.md")
    few_steps_hidden: tuple = _rule(
        "hidden-size buckets of the short-sequence tables (beyond the last: fastrnn)",
        "cpu-short-sequences-2026-11-26-zen4.md")
    few_steps_torch_max: tuple = _rule(
        "GRU/RNN with 2-8 steps: the most steps at which torch's own GRU/RNN measured faster, "
        "as ((kind, training), table[batch bucket][hidden bucket]) pairs; 0: fastrnn even at 2",
        "cpu-short-sequences-2026-12-07-zen4.md")
    step_max_rows: int = _rule(
        "one-step calls (a module at seq_len 1, a cell) of up to this many rows take the step "
        "path (fastrnn/step_path.py); larger ones, beyond the step benchmark's grid, take the "
        "general path and the rules below", "cpu-step-2026-12-08-zen4.md")
    step_max_hidden: int = _rule("the same for the hidden size", "cpu-step-2026-12-08-zen4.md")
    step_grad_torch: tuple = _rule(
        "under autograd, the step path's calls that torch's own op (called directly) ran "
        "faster than fastrnn's step Function (whose autograd.Function costs ~15 us alone): "
        "((kind, 'module' or 'cell'), ((batch bucket of few_steps_batches, most hidden "
        "units), ...)) pairs",
        "cpu-step-2026-12-08-zen4.md")
    cell_min_weight_bytes: int = _rule(
        "float32 cell inference (and one-step GRU/RNN): fastrnn's single step beat torch's cell "
        "from this recurrent weight size; torch's cell below, and always in training",
        "cpu-cells-2026-11-26-zen4.md")
    cell_min_weight_bytes_many_rows: int = _rule(
        "the same from cell_many_rows rows", "cpu-cells-2026-11-26-zen4.md")
    cell_many_rows: int = _rule("see cell_min_weight_bytes_many_rows",
                                "cpu-cells-2026-11-26-zen4.md")

    # ---------------------------------------------------------------------- dense products
    onednn_packs: tuple = _rule(
        "a weight reused by many products is packed for oneDNN when any (fewest rows, fewest "
        "weight elements) alternative holds; below, oneDNN's ~15 us per call loses to MKL",
        "cpu-gemm-2026-11-25.md")
    onednn_one_off: tuple = _rule(
        "a one-off product goes to oneDNN's unpacked inner product when any (fewest rows, rows "
        "below or None, fewest weight elements) alternative holds; else torch.mm (MKL)",
        "cpu-gemm-2026-11-25.md (AMD), cpu-gemm-2026-11-26-xeon.md (Intel)")
    copy_weight_min_rows: int = _rule(
        "a transposed weight (the backward's W_ih^T) is copied for oneDNN only from this many "
        "rows; below, torch.mm reads the view",
        "cpu-weight-grads-2026-11-26-zen4.md, cpu-weight-grads-2026-11-26-zen5.md")
    onednn_weight_grads_min_macs: object = _rule(
        "weight gradients through oneDNN's backward-weights primitive from this many "
        "multiply-adds per product; None: always torch.mm",
        "cpu-weight-grads-2026-11-26-zen5.md, cpu-weight-grads-2026-11-26-zen4.md, "
        "cpu-gemm-2026-11-26-xeon.md")
    own_weight_grads_max_rows: int = _rule(
        "the numba backend computes weight gradients itself (dG read in place) up to this many "
        "steps x rows; 0: never (not measured on Intel)", "cpu-own-weight-grads-2026-11-26-zen4.md")
    own_weight_grads_min_macs: int = _rule(
        "... and from this many multiply-adds (below, torch.mm's call is cheaper)",
        "cpu-own-weight-grads-2026-11-26-zen4.md")

    # ------------------------------------------------------------------- numba strategies
    numba_strategy: str = _rule(
        "'auto' follows the rules below; 'loop', 'columns' or 'step' forces one (tests, "
        "benchmarks)", "")
    loop_any_batch_weight_bytes: int = _rule(
        "the compiled loop over all steps (batch rows split over the threads) beat the per-step "
        "GEMM up to this recurrent weight at any batch", "cpu-strategy-2026-11-26-intel.md")
    loop_max_weight_bytes: int = _rule(
        "... and up to this one from loop_min_rows_large_weight rows",
        "cpu-strategy-2026-11-26-intel.md")
    loop_min_rows_large_weight: int = _rule("see loop_max_weight_bytes",
                                            "cpu-strategy-2026-11-26-intel.md")
    columns_tiers: tuple = _rule(
        "(most rows, fewest weight bytes) tiers where splitting the hidden units over the "
        "threads (each reads its share of W_hh) beat splitting the rows",
        "cpu-strategy-2026-11-26-intel.md, cpu-strategy-2026-11-26-zen4.md, "
        "cpu-lstm-rules-2026-11-26-xeon.md")
    step_split_min_rows: int = _rule(
        "the step path (one step of a module or cell, kernels/numba/stepper.py) splits a "
        "step's rows over the threads from this many rows and step_split_min_macs; below, "
        "the team's hand-off costs more than the second core gives back",
        "cpu-step-split-2026-12-08-zen4.md")
    step_split_min_macs: int = _rule(
        "see step_split_min_rows: multiply-adds of the step, B x (I + P) x G",
        "cpu-step-split-2026-12-08-zen4.md")
    split_min_macs: int = _rule(
        "a whole-sequence recurrence is split over the threads from this many multiply-adds "
        "over all steps (below, one thread is as fast: a split costs ~25 us)",
        "cpu-short-sequences-2026-11-26-zen4.md (its split section)")
    split_min_cells: int = _rule(
        "a per-step pointwise update is split from this many cells per step",
        "cpu-short-sequences-2026-11-26-zen4.md (its split section)")
    split_min_cells_one_step: int = _rule(
        "... and a single step (a cell) from this many (it pays the split for one update only)",
        "cpu-cells-2026-11-26-zen4.md")
    pack_split_min_bytes: int = _rule(
        "packing a weight for the 'columns' kernels is split over the threads from this size",
        "cpu-pack-2026-11-26-zen4.md")
    project_in_chunks_from: int = _rule(
        "an input projection of this many bytes or more is computed project_chunk_bytes at a "
        "time, interleaved with the loop (no page faults on fresh memory)",
        "no results file: the timings are in the measurement notes below")
    project_chunk_bytes: int = _rule("see project_in_chunks_from",
                                     "no results file: see project_in_chunks_from")
    fuse_projection: bool = _rule(
        "an LSTM/RNN loop may take its input projection inside ([x_t, h] [W_ih, W_hh]^T per "
        "step); False: never (tests, benchmarks)", "cpu-lstm-rules-2026-11-26-xeon.md")
    fuse_min_rows: int = _rule("... from this many rows per thread",
                               "cpu-lstm-rules-2026-11-26-xeon.md")
    fuse_min_steps: int = _rule("... from this many steps (the larger weight's packing per call)",
                                "cpu-lstm-rules-2026-11-26-xeon.md")
    fuse_max_weight_bytes: int = _rule(
        "... while [W_ih, W_hh] is at most this (Intel's slower L3 lost from 2 MiB)",
        "cpu-lstm-rules-2026-11-26-xeon.md")
    fuse_many_rows: int = _rule("... or from this many rows per thread ...",
                                "cpu-prefetch-2026-11-26-xeon.md")
    fuse_many_rows_max_weight_bytes: int = _rule("... up to this weight",
                                                 "cpu-prefetch-2026-11-26-xeon.md")
    gate_panels_max_rows: int = _rule(
        "an LSTM loop with at most this many rows per thread updates its cells on the product's "
        "accumulators (W_hh^T in gate panels); 0: never (not measured on Intel)",
        "cpu-gate-panels-2026-11-26-zen4.md")
    product_k_block_bytes: object = _rule(
        "the per-step product's k loop runs in chunks of this many bytes of a panel; None: all "
        "of K in one",
        "cpu-product-chunks-2026-11-26-xeon.md, cpu-product-chunks-2026-11-26-zen4.md",
        compiled=True)
    product_prefetch_from_bytes: object = _rule(
        "a step reading this much packed weight or more prefetches the next chunk; None: one "
        "core's L2 size, read from the OS", "cpu-prefetch-2026-11-26-xeon.md", compiled=True)
    weight_grad_k_block_bytes: int = _rule(
        "the numba weight gradients' k chunk: a panel chunk that stays in L1 while every block "
        "reads it", "cpu-own-weight-grads-2026-11-26-zen4.md", compiled=True)


# Re-measured twice on 2026-12-07 (a cell is torch's where the median over 2-24 steps was above
# 1.10 in both runs): training unchanged; five inference cells changed.
_LSTM_SHORT_TORCH = (
    # inference: batch up to 1, 4, 16, 64 rows x hidden up to 64, 128, 256, 512
    ((False, False, True, False), (False, False, True, False),
     (False, True, True, False), (True, True, True, False)),
    # training
    ((False, True, False, False), (False, True, False, False),
     (True, True, False, False), (True, True, False, False)),
)

# Re-measured twice on 2026-12-07 (cpu-short-sequences-2026-12-07-zen4.md): the most steps up
# to which torch was faster by more than 10% in both runs, at that and every shorter length.
_FEW_STEPS_TORCH_MAX = (
    (("gru", False), ((6, 5, 8, 4), (5, 4, 2, 0), (4, 4, 6, 3), (4, 2, 0, 0))),
    (("gru", True), ((2, 2, 2, 0), (0, 0, 0, 0), (0, 0, 0, 0), (2, 2, 0, 0))),
    (("rnn", False), ((8, 8, 8, 8), (6, 6, 4, 6), (3, 3, 3, 6), (2, 2, 2, 2))),
    (("rnn", True), ((5, 5, 3, 3), (4, 3, 3, 2), (3, 2, 3, 4), (3, 2, 4, 2))),
)

# The 2-core Zen 4 EPYC (AVX-512 at half width, 1 MiB L2) on which most AMD rules were measured.
ZEN4 = Tuning(
    family="zen4",
    lstm_hidden_buckets=(64, 128, 256, 512, 1024),
    # Re-measured twice on 2026-12-07: of the earlier bands only 2 rows of H = 128 (inference)
    # stayed torch's in both runs (1.11x, 1.31x); the rest fell within run-to-run noise.
    lstm_torch_inference=((128, 2, 2),),
    lstm_torch_training=(),
    lstm_short_steps=32,
    lstm_short_torch=_LSTM_SHORT_TORCH,
    few_steps_batches=(1, 4, 16, 64),
    few_steps_hidden=(64, 128, 256, 512),
    few_steps_torch_max=_FEW_STEPS_TORCH_MAX,
    step_max_rows=16,
    step_max_hidden=512,
    step_grad_torch=((("lstm", "module"), ()),
                     (("gru", "module"), ((1, 256),)),
                     (("rnn", "module"), ((1, 512),)),
                     (("lstm", "cell"), ((1, 256), (16, 512))),
                     (("gru", "cell"), ((1, 128), (16, 512))),
                     (("rnn", "cell"), ((1, 512), (16, 512)))),
    cell_min_weight_bytes=4 << 20,
    cell_min_weight_bytes_many_rows=1 << 20,
    cell_many_rows=64,
    onednn_packs=((1, 1 << 20), (8, 3 << 16)),
    onednn_one_off=((1, None, 1 << 20), (64, None, 3 << 16), (100, None, 1 << 16),
                    (1600, None, 0)),
    copy_weight_min_rows=1600,
    onednn_weight_grads_min_macs=None,
    own_weight_grads_max_rows=3200,
    own_weight_grads_min_macs=1 << 24,
    numba_strategy="auto",
    loop_any_batch_weight_bytes=3 << 20,
    loop_max_weight_bytes=4 << 20,
    loop_min_rows_large_weight=8,
    columns_tiers=((2, 512 << 10), (7, 1 << 20), (16, (4 << 20) + 1)),
    split_min_macs=1 << 23,
    step_split_min_rows=4,
    step_split_min_macs=1 << 21,
    split_min_cells=1 << 12,
    split_min_cells_one_step=1 << 15,
    pack_split_min_bytes=1 << 20,
    project_in_chunks_from=32 << 20,
    project_chunk_bytes=8 << 20,
    fuse_projection=True,
    fuse_min_rows=4,
    fuse_min_steps=16,
    fuse_max_weight_bytes=8 << 20,
    fuse_many_rows=24,
    fuse_many_rows_max_weight_bytes=8 << 20,
    gate_panels_max_rows=3,
    product_k_block_bytes=None,
    product_prefetch_from_bytes=None,
    weight_grad_k_block_bytes=32 << 10,
)

# Zen 5 (full-width AVX-512): oneDNN's GEMMs run at about twice MKL's rate (MKL takes its AVX2
# code on AMD), so the backward's products follow oneDNN sooner. The rest is Zen 4's.
ZEN5 = dataclasses.replace(
    ZEN4, family="zen5", copy_weight_min_rows=400, onednn_weight_grads_min_macs=1 << 24)

# The 2-core Intel Xeons (2 MiB L2, a slower L3, MKL at home): CPUs of other vendors take these.
INTEL = dataclasses.replace(
    ZEN4, family="intel",
    # From the Xeon's two runs (cpu-native-lstm-2026-11-26-xeon.md) with the Zen 4 criterion of
    # 2026-12-07, torch faster by more than 10% in both: 16 rows of H = 256 (1.11, 1.14) and 64
    # of H = 512 (1.14, 1.12); the 1024 band rests on one run (1.12-1.2x); no training band.
    lstm_torch_inference=((256, 16, 16), (512, 64, 64), (1024, 32, 64)),
    onednn_one_off=((16, 400, 1 << 20),),
    copy_weight_min_rows=400,
    own_weight_grads_max_rows=0,
    columns_tiers=((2, 512 << 10), (7, 1 << 20), (16, 3 << 20)),
    fuse_max_weight_bytes=1 << 20,
    gate_panels_max_rows=0,
    product_k_block_bytes=32 << 10,
)

FAMILIES = {record.family: record for record in (ZEN4, ZEN5, INTEL)}


def for_machine():
    """This machine's record: by vendor, and on AMD by generation (kernels/cpu.py)."""
    return {cpu.AMD: ZEN4, cpu.ZEN5: ZEN5, cpu.INTEL: INTEL}[cpu.gemm_family()]


MACHINE = for_machine()
_active = MACHINE


def current():
    """The record in force: this machine's, or what a `tuning()` block set."""
    return _active


_FIELDS = {f.name: f for f in dataclasses.fields(Tuning)}


@contextlib.contextmanager
def tuning(base=None, **overrides):
    """A block in which current() is `base` (a Tuning or a family name; default: the record in
    force) with `overrides` applied. Unknown names are a TypeError; compiled fields a
    ValueError. Process-wide: not for use from several threads with different values."""
    global _active
    record = FAMILIES[base] if isinstance(base, str) else (base or _active)
    # Another family's record keeps this machine's compiled fields: they are what runs.
    record = dataclasses.replace(record, **{name: getattr(MACHINE, name)
                                            for name, f in _FIELDS.items()
                                            if f.metadata["compiled"]})
    for name, value in overrides.items():
        f = _FIELDS.get(name)
        if f is None:
            raise TypeError(f"tuning() got an unknown field {name!r}; fields: {', '.join(_FIELDS)}")
        if f.metadata["compiled"] and value != getattr(_active, name):
            raise ValueError(f"{name} is compiled into the kernels at import and cannot change "
                             "inside tuning()")
    saved = _active
    _active = dataclasses.replace(record, **overrides)
    try:
        yield _active
    finally:
        _active = saved


def why(name):
    """The field's one-line reason."""
    return _FIELDS[name].metadata["why"]


def measured(name):
    """The results file(s) in benchmarks/results/ that measured the field."""
    return _FIELDS[name].metadata["measured"]


# ================================================================================================
# Measurement notes: what each rule above rests on, in more detail than its one line.

# ---- auto: torch or fastrnn (moved from fastrnn/native.py)
# When `auto` hands a call to torch's own implementation instead of fastrnn's kernels.
#
# On CUDA: every call, stacks and cells (cuDNN measured faster than the Triton kernels at every
# size and dtype; see the CUDA section below). The rest of this note is about the CPU.
#
# torch runs float32 CPU LSTMs (no projection, not packed) through oneDNN's fused RNN primitive,
# which uses every core even for a single sequence and runs close to the machine's GEMM rate.
# benchmarks/native_lstm_crossover.py (T = 100) and benchmarks/short_sequence_crossover.py
# (T = 2-64) measure fastrnn's numba backend against it (input size = H, recorded in
# benchmarks/results/cpu-native-lstm-2026-12-07-zen4.md and cpu-short-lstm-2026-12-07-zen4.md),
# and `auto` calls torch where torch was faster in two runs by more than their spread (~10%),
# so swapping torch.nn.LSTM for fastrnn.LSTM does not slow an LSTM down there:
# - from 32 steps, inference (two runs at T = 100, 2026-12-07): torch was faster in both only at
#   H = 128 with 2 rows (1.11x, 1.31x). The earlier bands (1-4 rows of 128, 4-8 of 256, 8-32 of
#   512, where torch had been 2-29% faster on 2026-11-26) no longer held: there the ratios were
#   0.71-1.08x, within the runs' spread, and fastrnn is faster at most rows of
#   H = 64 (up to 2.7x at 2 rows) and at H = 1024 (1.3-3x);
# - from 32 steps, training: no band holds in two runs (the earlier 2-13% of torch's at H = 64
#   with 16-64 rows, 128 with up to 32 and 256 with 4-16 measured 0.89-1.11x now, within 8% of
#   1 wherever both runs agree); fastrnn is 1.1-1.5x faster at 64 rows of H = 128-512 and
#   1.2-3.3x at H = 1024;
# - below 32 steps fastrnn's fixed cost per call (packing the weights, Python) weighs more
#   (two runs over 2-24 steps, 2026-12-07, cpu-short-lstm-2026-12-07-zen4.md; a cell is torch's
#   where the median over the lengths was above 1.10 in both): in inference torch won 129-256
#   units up to 4 rows, 65-256 units from 5 rows and any H <= 256 from 17 rows (1.13-1.49); in
#   training 65-128 units up to 4 rows and H <= 128 from 5 rows (1.12-1.41). fastrnn keeps
#   the rest, up to 2.3x faster at 257-512 units in training (_LSTM_SHORT_TORCH).
# A hidden size takes the table row of the smallest measured size at least as large; beyond 512
# (and, below 32 steps, beyond 64 rows) the longer-sequence rule applies. Those bands are the
# AMD EPYC ones; Intel CPUs have their own from 32 steps, measured on a Xeon (INTEL above; not
# re-measured), and take Zen 4's table below 32 steps (not measured on a Xeon).
#
# Everything else keeps fastrnn's kernels: GRU and RNN (torch runs them unfused: fastrnn is
# 1.2-10x faster), projections and packed input (torch leaves oneDNN for those), other dtypes, an
# explicit backend="numba", and FASTRNN_BACKEND naming a backend.
#
# The cells (LSTMCell, GRUCell, RNNCell) are one step: two GEMMs and a pointwise update, nothing
# to fuse across time. fastrnn's single step wins only where its fused pointwise update outweighs
# its extra Python per call, which measured (benchmarks/cell_crossover.py, recorded in
# benchmarks/results/cpu-cells-2026-11-26-zen4.md) as float32 inference with a recurrent weight of
# 4 MiB or more (LSTM/GRU/RNN H = 1024: 0.40-0.92x torch's time), or of 1 MiB or more from 64 rows
# (LSTM H = 256: 0.76-0.80x). Everywhere else torch's own cell was faster: up to 3.4x for small
# inference calls, and 1.0-2.3x for training at every measured size but two near-ties. There
# `auto` calls torch's cell.
#
# GRU and RNN stacks called with a few time steps (two to eight) are the same story with a few
# steps instead of one: torch's own GRU/RNN measured faster at small batches and short sequences
# (up to 1.5-2.9x at two steps), fastrnn from about eight steps at every measured size, and `auto`
# follows the measured table (_FEW_STEPS_TORCH_MAX).
#
# From 32 steps: hidden size bucket -> (fewest, most) rows where torch's fused LSTM was faster
# (module docstring), for inference and for training, per CPU family (kernels/cpu.py). The AMD
# tables are the Zen 4 measurements above. On Intel Xeons torch's LSTM ran nearer the GEMM rate
# while fastrnn's loops lost more once the weights outgrew L2 (a second Xeon, 48 KiB L1d, 2 MiB
# L2, T = 100, numba's best strategy against torch; benchmarks/native_lstm_crossover.py,
# recorded in benchmarks/results/cpu-lstm-rules-2026-11-26-xeon.md):
# - inference: torch 1.08-1.29x faster from 8 rows of H = 256, 1.12-1.23x from 32 rows of
# H = 512 (even at 16) and 1.1-1.2x from 32 rows of H = 1024; fastrnn faster (1.02-2.4x) or
# even (0.96-1.01 in repeated medians at 32-64 rows of H = 128) at fewer rows and at every
# batch of H = 64-128 (where the AMD table hands 1-4 rows of H = 128 to torch, the Xeon
# measured fastrnn 1.18-1.51x faster);
# - training: within ~15% either way at most sizes (the runs disagreed by that much); torch
# faster at 16-64 rows of H = 64, 4-32 of H = 128, 4-16 of H = 256 and 8-32 of H = 512 (up to
# 1.08x in repeated medians), fastrnn at 1-2 rows of H = 128 (1.10-1.15x) and at 64 rows of
# H = 128-256.
# Re-measured on that Xeon after the product's prefetch, the fused projection from 24 rows per
# thread and the Intel GEMM rules (benchmarks/native_lstm_crossover.py, twice each; recorded in
# benchmarks/results/cpu-native-lstm-2026-11-26-xeon.md):
# - inference: torch still 1.06-1.15x faster at 8-32 rows of H = 256 (64 rows: 0.98 / 1.02) and
# 1.05-1.14x at 32-64 rows of H = 512; 16 rows of H = 512 went to fastrnn (0.94x torch's time);
# - training: torch faster only at 16-32 rows of H = 128 (1.02-1.07x, one 0.98) and 8-16 rows of
# H = 256 (1.08-1.12x); fastrnn 1.0-1.6x faster everywhere else, H = 64 and 512 included.
# On 2026-12-07 the Zen 4 criterion (torch faster by more than 10% in both runs) was applied to
# those two runs, without measuring again (no Xeon that session): inference keeps 16 rows of
# H = 256 and 64 of H = 512; 8 and 32 rows of H = 256 (1.06/1.08, 1.15/1.09) and 32 of H = 512
# (1.05/1.08) go to fastrnn, and so does every training band (at most 1.12 in one run).
#
# Short GRU/RNN sequences (benchmarks/short_sequence_crossover.py, recorded in
# benchmarks/results/cpu-short-sequences-2026-11-26-zen4.md, re-measured twice in
# cpu-short-sequences-2026-12-07-zen4.md): with a few steps there is little to fuse across time,
# and fastrnn's fixed costs per call (packing W_hh for its compiled loop, ~70 us of Python and
# argument conversion against torch's ~35 us of C++) decide. The most steps at which torch's own
# GRU/RNN measured faster (by more than 10% in both runs, at that and every shorter measured
# length of 2, 3, 4, 5, 6, 8), per batch (up to 1, 4, 16, 64 rows) and hidden size (up to 64,
# 128, 256, 512); 0: fastrnn was faster or within 10% even at 2 steps.
# Beyond 64 rows or a hidden size of 512 nothing was measured and fastrnn keeps the call.

# ---- numba strategies (moved from kernels/numba/launch.py)
# Which strategy runs a layer:
# "loop"    one compiled loop over all steps, the batch rows split over torch's threads;
# "columns" the same loop with the hidden units split over the threads instead (each thread
# computes its units' gate columns for every row, one barrier per step): a thread
# reads only its share of W_hh each step, and a small batch still uses every core;
# "step"    a Python loop over steps, each calling the GEMM helper (oneDNN or MKL, on torch's
# threads) and a compiled pointwise update.
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
# When the batch is split across torch's OpenMP threads (kernels/numba/team.py): a whole-sequence
# recurrence from 2^23 multiply-adds over all steps, a per-step pointwise update from 2^12 cells
# per step. Below, one thread is as fast: a split costs ~25 us per call (packing the arguments)
# and its threads share the weight's cache lines. Measured on the Zen 4 machine with the SIMD
# product (GRU/RNN/LSTM, 4-64 rows, H = 64-512): 1.05-1.33x slower than one thread at
# 2^20-2^22, a tie at 2^22.6, 1.03-1.19x faster from 2^23. (The old 2^20 was measured before the
# product got 1.5x faster.)
# A single step (the cells) pays the packing for one update only: splitting it measured slower
# up to 2^14 cells (LSTM, 178 vs 148 us at 16 x 256) and ~5% faster from 2^15.
# Packing a weight for the "columns" kernels is split over the threads from this size (the
# split's ~20 us of argument packing is then under a tenth of the copy).
# A recurrence handed an ops.InputProjection ("loop" strategy) whose whole projection would take
# PROJECT_IN_CHUNKS_FROM bytes or more projects its input PROJECT_CHUNK_BYTES of steps at a time,
# interleaved with the steps: each chunk is still in cache when the recurrence reads it, and the
# whole projection's fresh memory (past glibc's 32 MB reuse limit, so page-faulted on every call,
# ~1 ms per 4 MB) is never touched. Measured on the Zen 4 machine, LSTM inference 100x64x512
# (52 MB): 146.8 -> 142.8 ms per call, projection alone 81 -> 76 ms. At 100x64x256 (26 MB)
# chunks lost 3-6% (more calls, no faults to save), hence the threshold.
# An LSTM (no projection) or RNN forward on the "loop" strategy computes its input projection
# inside the loop, one product [x_t, h_{t-1}] @ [W_ih, W_hh]^T per step (lstm.lstm_forward_fused,
# rnn.rnn_forward_fused), when each thread has FUSE_MIN_ROWS rows or more, there are
# FUSE_MIN_STEPS steps or more and [W_ih, W_hh] is at most FUSE_MAX_WEIGHT_BYTES: the
# projection of all steps is then never written out and read back, and the call runs as one
# parallel region instead of a GEMM's and then the loop's. (GRU's n gate needs x W_in and
# h W_hn apart: not fused.) Measured on the Zen 4 machine:
# - one thread, LSTM: 8 rows of H=128 2.18 vs 2.65 ms (GEMM + loop), 32 rows of H=256 31.9 vs
# 34.5 ms, 4 rows of H=128 1.10 vs 1.31 ms;
# - LSTM inference on 2 threads (T x B x H): 100x16x128 3.0 vs 4.1 ms, 100x64x256 33.7 vs 35.5,
# 100x64x512 (8 MiB) 128 vs 134, 50x64x384 40.8 vs 43.9; training 0-7% faster;
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
# Weight gradients dW = dG^T a over all T x B steps: the compiled product reading dG in place
# (linalg.matmul_packed_at, the rows of dW split over torch's threads) against torch.mm's
# transposed product, which on the Zen 4 EPYC ran at 155-195 GFLOP/s on these shapes (MKL is
# weakest when the steps, its k, are few). Where each wins is measured per CPU family
# (benchmarks/weight_grad_crossover.py --numba); 0: never (not measured on Intel CPUs).

# ---- dense products (moved from kernels/gemm.py)
# Measured: packed oneDNN wins from 8 rows once the weight has ~200k elements, and at any
# batch for weights of a million elements or more.
# From the measured crossover: large weights win at any batch, mid weights from ~64 rows,
# small ones (64x256: 0.85x at 100 rows, 0.95x at 800) only from ~1600 rows.
# On an Intel Xeon (2 cores, AVX-512; benchmarks/gemm_crossover.py twice and 200-800 rows
# apart, recorded in benchmarks/results/cpu-gemm-2026-11-26-xeon.md) MKL's torch.mm, at home
# there, matched or beat oneDNN's unpacked inner product except on weights of a million
# elements or more read by 16-200 rows (oneDNN 0.98-1.45x as fast) and by 8 rows at 4M
# (1.07-1.15x); at 400 rows they tied (0.94-1.00x), from 800 oneDNN took 1.02-1.23x as long,
# on smaller weights 1.06-3.5x.
# Whether a one-off product (linear) goes to oneDNN, per CPU family (kernels/cpu.py).
# oneDNN takes the weight contiguous. A transposed view (the backward's W_ih^T) is copied first.
# Whether that pays depends on the machine (benchmarks/weight_grad_crossover.py --dx): on the
# Zen 5 EPYC (full-width AVX-512: oneDNN ~2x MKL) copy plus oneDNN won 1.27-1.57x from 400 rows
# at every weight size of the grid and lost (0.66-0.91x) or tied at 100 rows
# (benchmarks/results/cpu-weight-grads-2026-11-26-zen5.md); on the Zen 4 EPYC (AVX-512 at half
# width, where MKL's AVX2 code keeps up) it lost 0.41-0.61x at 100 rows and 0.76-0.86x at 400,
# tied or won at 1600 (0.97-1.12x) and won at 6400 (1.07-1.16x;
# benchmarks/results/cpu-weight-grads-2026-11-26-zen4.md). Intel CPUs take oneDNN for one-off
# products below 400 rows only, so their copy never happens.
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

# ---- the per-step product (moved from kernels/numba/linalg.py)
# The product's k loop runs in chunks of K_BLOCK_BYTES of a panel (128 rows of a 4-vector panel
# with AVX-512) when K is larger: a chunk stays in L1 while every block of rows reads it, where a
# whole panel (128 KiB at K = 512) came from L2 again for each block of 4 rows and those loads,
# not the multiply-adds, bound the loop. Each chunk after the first adds to the partial sums in
# out (one load and store per 4 rows x 4 vectors). Per CPU family (kernels/cpu.py), measured with
# `python benchmarks/product_rate.py --chunks ...` (one thread, interleaved):
# - Intel Xeon (48 KiB L1d, 2 MiB L2; benchmarks/results/cpu-product-chunks-2026-11-26-xeon.md):
# 1.07-1.20x at K = 256-2048 with 8-64 rows (64x256x256 124 -> 146 GFLOP/s, 64x1024x2048
# 110 -> 126), 96 and 128 rows within 3% of each other, 64 slower; a 96-row chunk cost 5% at
# K = 128. Whole LSTM layers moved by less than that machine's noise.
# - Zen 4 EPYC (32 KiB L1d, 1 MiB L2; twice, prefetching as below;
# benchmarks/results/cpu-product-chunks-2026-11-26-zen4.md): the whole of K in one chunk was
# as fast or faster everywhere: 128-row chunks 0.95-0.98x at K = 256-512 (its L2 feeds the
# loop at the rate of the multiply-adds), tied at 64x1024x2048 and 0.87-0.89x at 4x1024x4096,
# where every extra pass over out waits on memory. None: one chunk.
# A step whose products read STREAM_FROM_BYTES of packed weight or more (one core's L2: the
# weight cannot stay there from one step to the next) has the 4-row blocks prefetch the next
# chunk into L2 while they multiply the current one, one cache line per k, spread over the
# blocks. Left to the hardware prefetchers, the first block of each chunk waited on L3.
# Measured on a 2-core Intel Xeon (2 MiB L2; `python benchmarks/product_rate.py --prefetch`, one
# thread, interleaved, twice; benchmarks/results/cpu-prefetch-2026-11-26-xeon.md): weights of
# 4-16 MiB 1.10-1.30x faster (32x512x2048 122 -> 135 GFLOP/s, 16x512x2048 103 -> 124), 2 MiB
# 1.07x; weights that fit L2 (0.25-1.5 MiB) 0.95-0.99x, hence only from the L2's size. Not
# measured on AMD CPUs. Read from the OS once; the compiled kernels keep the value (Numba's
# cache is keyed by the CPU model, whose L2 does not change).
