"""GFLOP/s of the numba backend's per-step product (linalg.matmul_packed), one thread.

The shapes are the per-thread products of the recurrences: (rows, P, G*H) forward and
(rows, G*H, P) backward. Each is timed as a compiled loop of calls (no Python in between), the
median of 15 runs. Run: python benchmarks/product_rate.py

With --chunks 0,64,96,128 the k loop's chunk size (linalg.K_BLOCK_BYTES; 0: the whole of K in
one chunk) is compared instead, the sizes interleaved so that a noisy machine moves them alike.
"""

import argparse
import time

import numpy as np
from numba import njit

from fastrnn.kernels.numba.config import JIT
from fastrnn.kernels.numba.linalg import K_BLOCK_ROWS, matmul_packed_blocked, pack_weight

SHAPES = [(1, 64, 256), (4, 64, 256), (8, 128, 512), (16, 128, 512), (32, 256, 1024),
          (32, 512, 2048), (16, 512, 128), (3, 100, 300), (4, 1024, 4096)]
CHUNK_SHAPES = [(64, 256, 256), (32, 256, 1024), (8, 256, 1024), (32, 512, 1024),
                (64, 512, 1024), (32, 512, 2048), (64, 1024, 2048), (4, 1024, 4096)]


# Not cached: a cached loop would keep a stale copy of the product after linalg.py changes.
@njit(**dict(JIT, cache=False))
def _repeat(a, b, out, reps, kc):
    for _ in range(reps):
        matmul_packed_blocked(a, b, out, 0, out.shape[1], kc)


def _operands(M, K, N, dtype):
    rng = np.random.default_rng(0)
    a = rng.random((M, K)).astype(dtype)
    b = pack_weight(rng.random((K, N)).astype(dtype))
    return a, b, np.empty((M, N), dtype), max(1, int(3e7 // (M * K * N)))


def rates(M, K, N, dtype, chunks, runs=15):
    """GFLOP/s for each chunk size (rows of k), measured interleaved."""
    a, b, out, reps = _operands(M, K, N, dtype)
    times = {kc: [] for kc in chunks}
    for kc in chunks:
        _repeat(a, b, out, 1, kc)
    for _ in range(runs):
        for kc in chunks:
            start = time.perf_counter()
            _repeat(a, b, out, reps, kc)
            times[kc].append((time.perf_counter() - start) / reps)
    return {kc: 2 * M * K * N / np.median(t) / 1e9 for kc, t in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", help="comma-separated chunk sizes to compare (0: whole K)")
    args = parser.parse_args()
    if args.chunks:
        chunks = [int(c) for c in args.chunks.split(",")]
        print("shape  " + "  ".join(f"{c or 'K':>5}" for c in chunks) + "   (GFLOP/s, float32)")
        for M, K, N in CHUNK_SHAPES:
            r = rates(M, K, N, np.float32, [c or K for c in chunks], runs=11)
            print(f"{M}x{K}x{N}  " + "  ".join(f"{r[c or K]:5.1f}" for c in chunks), flush=True)
        return
    for dtype in (np.float32, np.float64):
        for M, K, N in SHAPES:
            rate = rates(M, K, N, dtype, [K_BLOCK_ROWS])[K_BLOCK_ROWS]
            print(f"{np.dtype(dtype).name:8s} {M:3d}x{K:4d}x{N:4d}  {rate:6.1f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
