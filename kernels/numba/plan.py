"""What runs one numba layer: the plan that launch.py executes and explain() describes.

A plan is decided from the layer's sizes, the thread count and the measured rules in
kernels/tuning.py, before any buffer is allocated. Its `route` keys launch.py's executor tables:

    "loop"     one compiled loop over all steps, the batch rows split over torch's threads
               (`chunks` of rows; 1: in the caller's thread);
    "fused"    the same loop taking the input projection inside ([x_t, h] [W_ih, W_hh]^T per
               step; LSTM and RNN forwards handed an ops.InputProjection);
    "panels"   the same loop updating each step's LSTM cells on the product's accumulators
               (W_hh^T packed in gate panels; few rows per thread);
    "columns"  the same loop with the hidden units split over the threads instead (`slices`:
               each thread computes its units' gate columns for every row, one barrier per
               step): a thread reads only its share of W_hh each step, and a small batch still
               uses every core;
    "step"     a Python loop over steps, each calling the GEMM helper (oneDNN or MKL, on torch's
               threads) and a compiled pointwise update (`chunks` of rows per step).

A single step (the cells, T = 1) always takes "step": the compiled loops pack the weight first
(7 us for LSTM H=64, 28 us for H=128, ~0.5 ms for H=512), which only pays over many steps, and
the step product is then a one-off GEMM. Projected LSTMs have no "columns" kernel and take the
loop instead. Nothing here imports a compiled kernel.
"""

from typing import NamedTuple

import numpy as np
import torch

from ..gemm import packs
from ..tuning import current
from . import team
from .linalg import panel_width

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


class Plan(NamedTuple):
    # A NamedTuple, not a frozen dataclass: built on every call, it costs ~0.5 us instead of ~2.
    kind: str             # "lstm", "gru" or "rnn"
    backward: bool
    T: int
    B: int
    H: int                # hidden units
    P: int                # the recurrent state's width (H unless the LSTM projects h)
    proj: bool            # an LSTM projecting h through W_hr (P may equal H in a kernel call)
    I: object             # input size when the input projection could be fused, else None
    cdt: torch.dtype      # the compute dtype (half types run in float32)
    route: str            # the executor: "loop", "fused", "panels", "columns" or "step"
    chunks: int = 1       # "loop"/"fused"/"panels"/"step": chunks of rows (1: this thread)
    slices: tuple = ()    # "columns": bounds of each thread's hidden units

    @property
    def G(self):
        return GATES[self.kind] * self.H

    @property
    def strategy(self):
        """"loop", "columns" or "step": the rule that chose the route."""
        return "loop" if self.route in ("fused", "panels") else self.route


def forward(kind, T, B, H, P=None, I=None, dtype=torch.float32, proj=None):
    """The plan of a forward recurrence (I: the input size when xg is an ops.InputProjection,
    which a "loop" LSTM or RNN may take inside). proj: whether the LSTM projects h; by default,
    as torch.nn's proj_size < hidden_size, when P is given and differs from H."""
    return _plan(kind, False, T, B, H, P, I, compute_dtype(dtype), proj)


def backward(kind, T, B, H, P=None, dtype=torch.float32, proj=None):
    """The plan of a backward recurrence."""
    return _plan(kind, True, T, B, H, P, None, compute_dtype(dtype), proj)


def compute_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _plan(kind, is_backward, T, B, H, P, I, cdt, proj):
    G = GATES[kind] * H
    proj = P not in (None, H) if proj is None else bool(proj)
    P = P or H
    # The per-step product: (B, P) x (P, G) forward, (B, G) x (G, P) backward.
    K, N = (G, P) if is_backward else (P, G)
    route, chunks, slices = _strategy(T, B, K, N, cdt, proj), 1, ()
    rules = current()
    if route == "step":
        minimum = rules.split_min_cells if T > 1 else rules.split_min_cells_one_step
        chunks = _chunks(B, B * H, minimum)
    elif route == "columns":
        slices = tuple(hidden_slices(H, cdt))
    elif (not is_backward and kind in ("lstm", "rnn") and I is not None
          and _fuses(T, B, G, I, H, proj, cdt)):
        route, chunks = "fused", _chunks(B, fused_macs(T, B, G, I, H), rules.split_min_macs)
    else:
        chunks = _chunks(B, T * B * G * (P + (H if proj else 0)), rules.split_min_macs)
        if not is_backward and kind == "lstm" and _gate_panels(B, H, proj, chunks, cdt):
            route = "panels"
    return Plan(kind, is_backward, T, B, H, P, proj, I, cdt, route, chunks, slices)


def describe(plan):
    """The plan in one line, for explain()."""
    T, B, P, G = plan.T, plan.B, plan.P, plan.G
    split = f", batch split over {plan.chunks} threads" if plan.chunks > 1 else ""
    if plan.route == "columns":
        return (f"one compiled loop over {T} steps (product {B}x{P}x{G} per step), hidden units "
                f"split over {len(plan.slices) - 1} threads")
    if plan.route == "fused":
        return (f"one compiled loop over {T} steps, input projection inside (product "
                f"{B}x{plan.I + plan.H}x{G} per step){split}")
    if plan.route in ("loop", "panels"):
        cells = ", cells updated on the product's registers" if plan.route == "panels" else ""
        return f"one compiled loop over {T} steps (product {B}x{P}x{G} per step{cells}){split}"
    if T == 1:
        gemm = "one GEMM (no packing)"
    else:
        gemm = "oneDNN packed GEMM" if packs(G, P, B, plan.cdt) else "torch.mm"
    split = f" on {plan.chunks} threads" if plan.chunks > 1 else ""
    return f"per step: {gemm} {B}x{P}x{G} + compiled pointwise update{split}"


def _strategy(T, B, K, N, cdt, proj):
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
        return "step"
    weight = K * N * cdt.itemsize
    if columns and any(B <= rows and weight >= least for rows, least in rules.columns_tiers):
        return "columns"
    if weight <= rules.loop_any_batch_weight_bytes:
        return "loop"
    if weight <= rules.loop_max_weight_bytes and B >= rules.loop_min_rows_large_weight:
        return "loop"
    return "step"


def _chunks(B, work, minimum):
    """How many chunks of rows to split B rows into for `work` (1: run in this thread)."""
    if B < 2 or work < minimum:
        return 1
    return min(team.threads(), B)


def hidden_slices(H, cdt):
    """Bounds of one slice of hidden units per thread, whole vectors each (the last takes the
    rest)."""
    parts = team.threads()
    lanes = panel_width(np.float64 if cdt == torch.float64 else np.float32) // 4
    per = -(-H // (parts * lanes)) * lanes
    return np.minimum(np.arange(parts + 1, dtype=np.int64) * per, H)


def fused_macs(T, B, G, I, H):
    return T * B * G * (I + H)


def _fuses(T, B, G, I, H, proj, cdt):
    """Whether a "loop" LSTM or RNN forward (G gate columns, input size I) computes its input
    projection inside the loop (tuning: the fuse_ rules)."""
    rules = current()
    if not rules.fuse_projection or proj or T < rules.fuse_min_steps:
        return False
    rows = B // _chunks(B, fused_macs(T, B, G, I, H), rules.split_min_macs)     # per thread
    weight = (I + H) * G * cdt.itemsize
    return rows >= rules.fuse_min_rows and (
        weight <= rules.fuse_max_weight_bytes
        or rows >= rules.fuse_many_rows and weight <= rules.fuse_many_rows_max_weight_bytes)


def _gate_panels(B, H, proj, chunks, cdt):
    """Whether a "loop" LSTM forward that does not fuse its projection runs
    lstm.lstm_forward_cells (tuning: gate_panels_max_rows): H whole vectors, few rows per
    thread."""
    lanes = panel_width(np.float64 if cdt == torch.float64 else np.float32) // 4
    if proj or H % lanes:
        return False
    return -(-B // chunks) <= current().gate_panels_max_rows
