"""Time to pack a recurrent weight for the numba backend's product, per call of a layer.

Every forward call packs W_hh^T (a transposed view of the (G*H, P) weight) and every backward
call W_hh itself (linalg.pack_weight; the "columns" strategy packs per slice of hidden units,
linalg.pack_weight_slices, on the threads from tuning's pack_split_min_bytes). Compared here:
  numpy views   the same layout written with numpy reshape/transpose copies (the packer before
                the compiled ones);
  compiled      pack_weight (one thread);
  on the team   the per-slice packing as the columns launcher runs it (torch's threads).
Median of repeated calls, milliseconds. Run: python benchmarks/pack_rate.py
"""

import time

import numpy as np
import torch

from fastrnn.kernels.numba import plan, runners
from fastrnn.kernels.numba.linalg import pack_weight, panel_width

# (G*H, P): LSTM H = 64, 256, 512, 1024 (4 gates), GRU H = 1024.
SHAPES = [(256, 64), (1024, 256), (2048, 512), (4096, 1024), (3072, 1024)]


def numpy_views(b):
    """pack_weight's layout through numpy views (the reference the compiled packers replaced)."""
    K, N = b.shape
    W = panel_width(b.dtype)
    L = W // 4
    wide, narrow = N - N % W, N - N % L
    out = np.empty(K * N, b.dtype)
    for n0, n1, w in ((0, wide, W), (wide, narrow, L)):
        panels = b[:, n0:n1].reshape(K, (n1 - n0) // w, w).transpose(1, 0, 2)
        out[K * n0:K * n1].reshape((n1 - n0) // w, K, w)[...] = panels
    out[K * narrow:].reshape(N - narrow, K)[...] = b[:, narrow:].T
    return out


def median_ms(fn, seconds=1.0):
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 2000):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'weight':>10s} {'MiB':>5s} {'kind':>11s} {'numpy views':>12s} {'compiled':>9s} "
          f"{'on the team':>12s}")
    for N, K in SHAPES:
        w = torch.randn(N, K)
        slices = plan.hidden_slices(K, torch.float32)     # P = H: slices of the H units
        groups = N // K
        for kind, view, transposed in (("W_hh^T", w.t(), True), ("W_hh", w, False)):
            b = view.numpy()
            assert np.array_equal(numpy_views(b), pack_weight(b))
            t_np = median_ms(lambda b=b: numpy_views(b))
            t_c = median_ms(lambda b=b: pack_weight(b))
            t_team = median_ms(lambda w=w, transposed=transposed, groups=groups, slices=slices:
                               runners.packed_slices(w, transposed, groups if transposed else 1,
                                                     slices, torch.float32))
            print(f"{N:>5d}x{K:<4d} {N * K * 4 / 2**20:5.2f} {kind:>11s} {t_np:12.3f} "
                  f"{t_c:9.3f} {t_team:12.3f}", flush=True)


if __name__ == "__main__":
    main()
