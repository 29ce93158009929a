"""Is a provider computing the same thing as torch.nn? Checked before it is timed.

This is a sanity check for the benchmark (a fast wrong answer must not be reported as a
speedup), not the correctness test suite (tests/ does that against a float64 oracle with
tight per-dtype tolerances).

The error is measured relative to the scale of torch's result:
    max|provider - torch| / max|torch|
for the output and, in training mode, the input gradient of output.sum().

Tolerances (chosen from the arithmetic, not from observed failures):
- float64: 1e-9. Two correct float64 implementations agree to ~1e-14; anything larger is a bug.
- float32 on CPU: 1e-4. Summation order differs between GEMMs (~1e-6 per step) and the error
  grows over T <= ~1000 recurrent steps; 1e-4 leaves room for that and none for a wrong gate.
- float32 on CUDA: 5e-3. cuDNN RNNs and Triton's tl.dot use TF32 (10-bit mantissa, ~5e-4 per
  product) by default; two TF32 implementations may differ by a few of those.
- float16: 1e-2 and bfloat16: 5e-2. One rounding is 2^-11 (fp16) or 2^-8 (bf16) relative; the
  hidden state is stored in 16 bits every step and two implementations round at different
  points, so over ~100 steps they drift apart by a handful of units of the last place.
A wrong gate order, a missing bias or an off-by-one step gives errors of order 1e-1 to 1.
"""

import torch

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
CUDA_FLOAT32_TOLERANCE = 5e-3


def tolerance(dtype, device):
    if dtype == torch.float32 and torch.device(device).type == "cuda":
        return CUDA_FLOAT32_TOLERANCE
    return TOLERANCE[dtype]


def relative_error(actual, expected):
    """max|actual - expected| / max|expected|, in float64; inf for NaN/inf or a shape mismatch."""
    if actual is None or tuple(actual.shape) != tuple(expected.shape):
        return float("inf")
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    if a.numel() == 0:
        return 0.0
    diff = (a - e).abs().max().item()
    if diff != diff or diff == float("inf"):
        return float("inf")
    scale = e.abs().max().item()
    return diff / max(scale, 1e-30)


def compare(results, expected, dtype, device):
    """(max relative error over the tensors, tolerance, message or None when they agree)."""
    names = ("output", "input gradient")
    tol = tolerance(dtype, device)
    worst, message = 0.0, None
    for name, got, want in zip(names, results, expected):
        if want is None:  # nothing to compare (the input gradient in inference mode)
            continue
        if got is not None and tuple(got.shape) != tuple(want.shape):
            return float("inf"), tol, (f"{name} has shape {tuple(got.shape)}, "
                                       f"expected {tuple(want.shape)}")
        err = relative_error(got, want)
        worst = max(worst, err)
        if not err <= tol and message is None:
            message = (f"{name} differs from torch.nn: relative error {err:.3g} > "
                       f"tolerance {tol:.0e}")
    return worst, tol, message
