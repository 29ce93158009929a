"""GFLOP/s of the numba backend's per-step product (linalg.matmul_packed), one thread.

The shapes are the per-thread products of the recurrences: (rows, P, G*H) forward and
(rows, G*H, P) backward. Each is timed as a compiled loop of calls (no Python in between), the
median of 15 runs. Run: python benchmarks/product_rate.py
"""

import time

import numpy as np
from numba import njit

from fastrnn.kernels.numba.config import JIT
from fastrnn.kernels.numba.linalg import matmul_packed, pack_weight

SHAPES = [(1, 64, 256), (4, 64, 256), (8, 128, 512), (16, 128, 512), (32, 256, 1024),
          (32, 512, 2048), (16, 512, 128), (3, 100, 300), (4, 1024, 4096)]


# Not cached: a cached loop would keep a stale copy of the product after linalg.py changes.
@njit(**dict(JIT, cache=False))
def _repeat(a, b, out, reps):
    for _ in range(reps):
        matmul_packed(a, b, out, 0, out.shape[1])


def rate(M, K, N, dtype):
    rng = np.random.default_rng(0)
    a = rng.random((M, K)).astype(dtype)
    b = pack_weight(rng.random((K, N)).astype(dtype))
    out = np.empty((M, N), dtype)
    reps = max(1, int(3e7 // (M * K * N)))
    _repeat(a, b, out, 1)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        _repeat(a, b, out, reps)
        times.append((time.perf_counter() - start) / reps)
    return 2 * M * K * N / np.median(times) / 1e9


def main():
    for dtype in (np.float32, np.float64):
        for M, K, N in SHAPES:
            print(f"{np.dtype(dtype).name:8s} {M:3d}x{K:4d}x{N:4d}  {rate(M, K, N, dtype):6.1f} GFLOP/s",
                  flush=True)


if __name__ == "__main__":
    main()
