"""GFLOP/s of the numba backend's per-step product (linalg.matmul_packed), one thread.

The shapes are the per-thread products of the recurrences: (rows, P, G*H) forward and
(rows, G*H, P) backward. Each is timed as a compiled loop of calls (no Python in between), the
median of 15 runs. Run: python benchmarks/product_rate.py

With --chunks 0,64,96,128 the k loop's chunk size (linalg.K_BLOCK_BYTES; 0: the whole of K in
one chunk) is compared instead, the sizes interleaved so that a noisy machine moves them alike,
each prefetching where linalg would (weights from STREAM_FROM_BYTES).
With --prefetch the product with and without prefetching the next chunk (linalg.STREAM_FROM_BYTES)
is compared the same way, on weights from 256 KiB to 8 MiB. With --align, the packed weight
starting on a cache line (simd.aligned_empty) against 16 bytes past one (numpy's usual). With
--zigzag, every call in the same panel order against every other call back to front (what a
recurrence does, see linalg.matmul_packed), on weights around L1's size.
"""

import argparse
import time

import numpy as np
from numba import njit

from fastrnn.kernels.numba import simd
from fastrnn.kernels.numba.config import JIT
from fastrnn.kernels.numba.linalg import (
    K_BLOCK_ROWS,
    STREAM_FROM_BYTES,
    matmul_packed_blocked,
    pack_weight,
)

SHAPES = [(1, 64, 256), (4, 64, 256), (8, 128, 512), (16, 128, 512), (32, 256, 1024),
          (32, 512, 2048), (16, 512, 128), (3, 100, 300), (4, 1024, 4096)]
# Forward products, then backward ones (K = gates x H: one panel of 4096 rows is 1 MiB).
CHUNK_SHAPES = [(64, 256, 256), (32, 256, 1024), (8, 256, 1024), (32, 512, 1024),
                (64, 512, 1024), (32, 512, 2048), (64, 1024, 2048), (4, 1024, 4096),
                (32, 1024, 256), (32, 2048, 512), (8, 4096, 512), (8, 4096, 1024),
                (32, 4096, 1024)]
PREFETCH_SHAPES = [(64, 128, 512), (16, 128, 512), (32, 256, 1024), (16, 256, 1024),
                   (32, 384, 1024), (64, 512, 1024), (8, 512, 2048), (16, 512, 2048),
                   (32, 512, 2048), (64, 1024, 2048), (32, 1024, 4096), (32, 2048, 512)]


ZIGZAG_SHAPES = [(1, 32, 256), (1, 64, 256), (1, 64, 384), (2, 64, 256), (4, 64, 256),
                 (1, 128, 512), (8, 128, 512), (1, 256, 1024), (8, 256, 1024), (32, 512, 1024)]


# Not cached: a cached loop would keep a stale copy of the product after linalg.py changes.
@njit(**dict(JIT, cache=False))
def _repeat(a, b, out, reps, kc, prefetch, zigzag=False):
    for r in range(reps):
        matmul_packed_blocked(a, b, out, 0, out.shape[1], kc, prefetch, zigzag and r % 2 == 1)


def _operands(M, K, N, dtype):
    rng = np.random.default_rng(0)
    a = rng.random((M, K)).astype(dtype)
    b = pack_weight(rng.random((K, N)).astype(dtype))
    return a, b, np.empty((M, N), dtype), max(1, int(3e7 // (M * K * N)))


def _interleaved(calls, reps, runs, flops):
    """GFLOP/s of each call(reps) of a dict of them (each runs the product reps times), timed in
    turn `runs` times: medians."""
    for call in calls.values():
        call(1)                 # compile and warm up
    times = {key: [] for key in calls}
    for _ in range(runs):
        for key, call in calls.items():
            start = time.perf_counter()
            call(reps)
            times[key].append((time.perf_counter() - start) / reps)
    return {key: flops / np.median(t) / 1e9 for key, t in times.items()}


def rates(M, K, N, dtype, variants, runs=15):
    """GFLOP/s for each variant (chunk rows of k, prefetch), measured interleaved."""
    a, b, out, reps = _operands(M, K, N, dtype)

    def call(variant):
        return lambda n: _repeat(a, b, out, n, *variant)

    return _interleaved({v: call(v) for v in variants}, reps, runs, 2 * M * K * N)


def alignment_rates(M, K, N, runs=15):
    """GFLOP/s with the packed weight at 0 and 16 bytes past a cache line, interleaved."""
    a, b, out, reps = _operands(M, K, N, np.float32)
    prefetch = K * N * 4 >= STREAM_FROM_BYTES

    def call(offset):
        buf = simd.aligned_empty(b.size + simd.ALIGN_BYTES // 4, np.float32)
        packed = buf[offset // 4:offset // 4 + b.size]
        packed[...] = b
        return lambda n: _repeat(a, packed, out, n, K_BLOCK_ROWS, prefetch)

    return _interleaved({offset: call(offset) for offset in (0, 16)}, reps, runs, 2 * M * K * N)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", help="comma-separated chunk sizes to compare (0: whole K)")
    parser.add_argument("--prefetch", action="store_true",
                        help="compare the product with and without prefetching")
    parser.add_argument("--align", action="store_true",
                        help="compare a packed weight on a cache line with one 16 bytes past")
    parser.add_argument("--zigzag", action="store_true",
                        help="compare one panel order for every call with odd calls reversed")
    args = parser.parse_args()
    if args.zigzag:
        print("us per product, float32; the same panel order every call / odd calls reversed")
        for M, K, N in ZIGZAG_SHAPES:
            variants = [(K_BLOCK_ROWS, False, False), (K_BLOCK_ROWS, False, True)]
            r = rates(M, K, N, np.float32, variants, runs=21)
            same, zigzag = (2 * M * K * N / r[v] / 1e3 for v in variants)
            print(f"{M:3d}x{K:4d}x{N:4d}  {K * N * 4 >> 10:5d} KiB  {same:8.2f}  {zigzag:8.2f}  "
                  f"{same / zigzag:5.2f}", flush=True)
        return
    if args.chunks:
        chunks = [int(c) for c in args.chunks.split(",")]
        print("shape  " + "  ".join(f"{c or 'K':>5}" for c in chunks) + "   (GFLOP/s, float32)")
        for M, K, N in CHUNK_SHAPES:
            prefetch = K * N * 4 >= STREAM_FROM_BYTES
            r = rates(M, K, N, np.float32, [(c or K, prefetch) for c in chunks], runs=11)
            print(f"{M}x{K}x{N}  " + "  ".join(f"{r[(c or K, prefetch)]:5.1f}" for c in chunks),
                  flush=True)
        return
    if args.prefetch:
        print(f"GFLOP/s, float32; linalg prefetches from {STREAM_FROM_BYTES >> 10} KiB")
        print("shape          weight    without  with  ratio")
        for M, K, N in PREFETCH_SHAPES:
            variants = [(K_BLOCK_ROWS, False), (K_BLOCK_ROWS, True)]
            r = rates(M, K, N, np.float32, variants, runs=21)
            without, with_ = r[variants[0]], r[variants[1]]
            print(f"{M:3d}x{K:4d}x{N:4d}  {K * N * 4 >> 10:5d} KiB  {without:6.1f}  {with_:6.1f}  "
                  f"{with_ / without:5.2f}", flush=True)
        return
    if args.align:
        print("GFLOP/s, float32; the packed weight on a cache line / 16 bytes past one")
        for M, K, N in PREFETCH_SHAPES:
            r = alignment_rates(M, K, N)
            print(f"{M:3d}x{K:4d}x{N:4d}  {r[0]:6.1f}  {r[16]:6.1f}  {r[0] / r[16]:5.2f}",
                  flush=True)
        return
    for dtype in (np.float32, np.float64):
        for M, K, N in SHAPES:
            variant = (K_BLOCK_ROWS, K * N * np.dtype(dtype).itemsize >= STREAM_FROM_BYTES)
            rate = rates(M, K, N, dtype, [variant])[variant]
            print(f"{np.dtype(dtype).name:8s} {M:3d}x{K:4d}x{N:4d}  {rate:6.1f} GFLOP/s",
                  flush=True)


if __name__ == "__main__":
    main()
