"""The live/dead rule of variable-length batches, shared by the step and persistent kernels.

Step t is live for sequence b when t < lengths[b] (always, without lengths). A dead step
leaves the state unchanged and outputs zeros; its gradients are exactly zero.
"""

import triton
import triton.language as tl


@triton.jit
def load_lengths(len_ptr, offs_b, mb, HAS_LEN: tl.constexpr):
    # Without lengths nothing is loaded and the returned tile is never read.
    if HAS_LEN:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)
    else:
        L = offs_b
    return L


@triton.jit
def live_rows(L, offs_b, t, HAS_LEN: tl.constexpr):
    # (BLOCK_B, 1) bool from the tile's lengths L (load_lengths).
    if HAS_LEN:
        live = (t < L)[:, None]
    else:
        live = (offs_b >= 0)[:, None]
    return live


@triton.jit
def previous_step(t, offs_b, L, T, HAS_LEN: tl.constexpr, REVERSE: tl.constexpr):
    # The state step t started from is the saved state of the step before it in forward walk
    # order if that step exists and was live, else the initial state (reverse: steps
    # t >= length come first). Returns that step, clamped into [0, T) so that its offsets
    # stay in bounds, and the (BLOCK_B, 1) mask of rows for which it holds their state.
    if REVERSE:
        t_prev = t + 1
    else:
        t_prev = t - 1
    # Per-row vectors: the interpreter rejects masks built from scalar booleans.
    tpv = offs_b * 0 + t_prev
    has_prev = (tpv >= 0) & (tpv < T)
    if HAS_LEN:
        has_prev = has_prev & (tpv < L)
    return tl.minimum(tl.maximum(t_prev, 0), T - 1), has_prev[:, None]


@triton.jit
def state_before_step(saved_ptr, prev_idx, mask, has_prev, init):
    # saved_ptr + prev_idx: the previous step's saved state tile (previous_step); init: the
    # initial state tile, for the rows without one.
    saved = tl.load(saved_ptr + prev_idx, mask=mask & has_prev, other=0.0).to(tl.float32)
    return tl.where(has_prev, saved, init)
