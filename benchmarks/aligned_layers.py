"""Whole LSTM layers against torch with the kernels' packed weights and scratch buffers on a
cache line (simd.aligned_empty) and 16 bytes past one (numpy's usual placement).

Run: python benchmarks/aligned_layers.py [TxBxH ...]   (default: the benchmark grid's LSTM sizes)
Prints torch's time over fastrnn's (numba backend, input size = H, float32) for both
placements, inference and training, medians of 9 runs interleaved in one process.
"""

import sys

import numpy as np
import torch

import fastrnn
from fastrnn.bench import timing
from fastrnn.kernels.numba import simd

GRID = ["100x1x64", "100x16x128", "100x64x256", "100x64x512", "50x8x1024"]


def _past_a_line(aligned):
    def allocate(n, dtype):
        dtype = np.dtype(dtype)
        buf = aligned(n + simd.ALIGN_BYTES // dtype.itemsize, dtype)
        start = 16 // dtype.itemsize
        return buf[start:start + n]
    return allocate


def main(sizes):
    aligned = simd.aligned_empty
    placements = {"16 bytes past": _past_a_line(aligned), "aligned": aligned}
    try:
        for size in sizes:
            T, B, H = (int(v) for v in size.split("x"))
            reference = torch.nn.LSTM(H, H)
            model = fastrnn.LSTM(H, H, backend="numba")
            model.load_state_dict(reference.state_dict())
            x = torch.randn(T, B, H)
            xr = x.clone().requires_grad_()

            def run(placement, training, reference=reference, model=model, x=x, xr=xr):
                def fn():
                    if placement is not None:
                        simd.aligned_empty = placements[placement]
                    net = reference if placement is None else model
                    if training:
                        net(xr)[0].sum().backward()
                    else:
                        with torch.no_grad():
                            net(x)
                return fn

            for training in (False, True):
                t = timing.medians([run(p, training) for p in (None, *placements)], 9)
                cells = "  ".join(f"{name} {t[0] / s:.2f}x" for name, s in zip(placements, t[1:]))
                mode = "training " if training else "inference"
                print(f"{size:11s} {mode} torch {t[0]:7.2f} ms  {cells}", flush=True)
    finally:
        simd.aligned_empty = aligned


if __name__ == "__main__":
    main(sys.argv[1:] or GRID)
