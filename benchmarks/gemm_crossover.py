"""torch.mm (MKL) against oneDNN's inner product on the shapes an RNN layer produces.

Decides fastrnn.kernels.gemm's thresholds. Run: python benchmarks/gemm_crossover.py
Prints GFLOP/s per (M, K, N); medians of interleaved runs.
"""

import time

import numpy as np
import torch


def bench(fns, repeats=15):
    times = [[] for _ in fns]
    for fn in fns:
        fn()
        fn()
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def main():
    linear = torch.ops.mkldnn._linear_pointwise
    pack = torch.ops.mkldnn._reorder_linear_weight
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| M | K | N | torch.mm | oneDNN | oneDNN packed | oneDNN/mm |")
    print("|---|---|---|---|---|---|---|")
    for M in (1, 8, 16, 64, 100, 800, 1600, 6400):
        for K, N in ((64, 256), (128, 512), (256, 1024), (512, 2048), (1024, 4096), (256, 768),
                     (1024, 1024)):
            if M * K * N > 6400 * 256 * 1024:
                continue
            a, w = torch.randn(M, K), torch.randn(N, K)
            out = torch.empty(M, N)
            packed = pack(w, M)
            t = bench([lambda a=a, w=w, out=out: torch.mm(a, w.t(), out=out),
                       lambda a=a, w=w: linear(a, w, None, "none", [], ""),
                       lambda a=a, packed=packed: linear(a, packed, None, "none", [], "")])
            flops = 2 * M * K * N
            rates = " | ".join(f"{flops / s / 1e9:.0f}" for s in t)
            print(f"| {M} | {K} | {N} | {rates} | {t[0] / t[1]:.2f} |")


if __name__ == "__main__":
    main()
