"""Loads and stores of the per-gate tiles of one step, in the layout both strategies share.

Gate tensors (pre-activations, saved gates, dgates) are (T, B, G*H): gate k of unit j sits at
column k*H + j, so with ``idx`` the offsets of gate 0's tile, gate k's tile is at idx + k*H.
"""

import triton
import triton.language as tl


@triton.jit
def load_3_gates(ptr, idx, H, mask):
    # float32 tiles; masked-off elements read 0.
    a = tl.load(ptr + idx, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(ptr + idx + H, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(ptr + idx + 2 * H, mask=mask, other=0.0).to(tl.float32)
    return a, b, c


@triton.jit
def load_4_gates(ptr, idx, H, mask):
    a, b, c = load_3_gates(ptr, idx, H, mask)
    d = tl.load(ptr + idx + 3 * H, mask=mask, other=0.0).to(tl.float32)
    return a, b, c, d


@triton.jit
def store_3_gates(ptr, idx, H, mask, a, b, c):
    tl.store(ptr + idx, a, mask=mask)
    tl.store(ptr + idx + H, b, mask=mask)
    tl.store(ptr + idx + 2 * H, c, mask=mask)


@triton.jit
def store_4_gates(ptr, idx, H, mask, a, b, c, d):
    store_3_gates(ptr, idx, H, mask, a, b, c)
    tl.store(ptr + idx + 3 * H, d, mask=mask)
