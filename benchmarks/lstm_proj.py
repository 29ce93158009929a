"""LSTM with proj_size: fastrnn's numba backend against torch.nn on CPU (torch has no oneDNN
path for projections). The main runner has no proj option yet; this fills that gap.

Run: python benchmarks/lstm_proj.py   (prints a markdown table; medians of interleaved runs)
"""

import gc
import time
import warnings

import numpy as np
import torch

import fastrnn

SIZES = [(100, 16, 128, 128, 64), (100, 64, 256, 256, 128), (50, 8, 1024, 1024, 512)]


def interleaved_medians(fns, repeats=9):
    times = [[] for _ in fns]
    for fn in fns:
        fn()
        fn()
    gc.disable()
    try:
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return [float(np.median(t)) * 1e3 for t in times]


def main():
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print("| T x B x I x H, proj | mode | torch.nn ms | fastrnn-numba ms | speedup |")
    print("|---|---|---|---|---|")
    for T, B, I, H, P in SIZES:
        ref = torch.nn.LSTM(I, H, proj_size=P)
        fast = fastrnn.LSTM(I, H, proj_size=P, backend="numba")
        fast.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I)
        xg = x.clone().requires_grad_()
        with torch.no_grad():
            torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=1e-4, rtol=1e-4)
            inference = interleaved_medians([lambda ref=ref, x=x: ref(x),
                                             lambda fast=fast, x=x: fast(x)])
        training = interleaved_medians([lambda ref=ref, xg=xg: ref(xg)[0].sum().backward(),
                                        lambda fast=fast, xg=xg: fast(xg)[0].sum().backward()])
        for mode, (a, b) in (("inference", inference), ("training", training)):
            print(f"| {T}x{B}x{I}x{H}, {P} | {mode} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
