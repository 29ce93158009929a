"""Small @triton.jit helpers shared by the recurrence kernels.

Only plain `tl` ops are used (no libdevice / tl.math.tanh): they must also run under
TRITON_INTERPRET=1, where libdevice is missing.
"""

import inspect

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    # exp(-x) overflows to inf for very negative x and 1/inf = 0: saturates without NaN.
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh from exp of a non-positive argument: never overflows, saturates to +-1, NaN stays NaN
    # (NaN < 0 is False, so the NaN magnitude passes through).
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def relu(x):
    # where(x < 0, 0, x) rather than maximum: keeps NaN as NaN, like torch.relu.
    return tl.where(x < 0, 0.0, x)


# tl.dot on GPU rounds float32 operands to tf32 unless told not to; the results must match the
# float32 reference, so ask for IEEE float32. The keyword changed name across Triton versions
# (allow_tf32 before input_precision), so pick by feature detection once, at import.
if "input_precision" in inspect.signature(tl.dot).parameters:

    @triton.jit
    def mm(a, b):
        return tl.dot(a, b, input_precision="ieee")

else:  # pragma: no cover - old Triton

    @triton.jit
    def mm(a, b):
        return tl.dot(a, b, allow_tf32=False)
