"""The numba backend's two strategies against each other, to set kernels/numba/launch.py's limits.

Strategy "loop": one compiled loop over all steps (batch split over torch's threads).
Strategy "step": a Python loop over steps, each a oneDNN/MKL GEMM plus a compiled pointwise update.
Run: python benchmarks/strategy_crossover.py [lstm,gru,rnn]
Prints loop time / step time (below 1: the loop is faster) for inference and training, T = 50,
medians of interleaved runs, over batch and hidden sizes around the crossover.
"""

import sys

import numpy as np
import torch

import fastrnn
from fastrnn.bench import timing
from fastrnn.kernels.numba import launch

CLASSES = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def force(strategy):
    launch.STRATEGY = strategy


def medians(fns, repeats=7):
    """Milliseconds per call of each fn: medians of interleaved rounds (fastrnn.bench's timer)."""
    samples, errors = timing.interleaved(dict(enumerate(fns)), repeats, 2, "cpu")
    if errors:
        raise next(iter(errors.values()))
    return [timing.summarize(samples[i])["median_ms"] for i in range(len(fns))]


def main(kinds):
    T = 50
    for kind in kinds:
        for B in (1, 4, 8, 16, 32, 64):
            for H in (64, 128, 256, 512, 1024):
                macs = B * H * GATES[kind] * H
                if not (1 << 16) <= macs <= (1 << 25):
                    continue
                model = CLASSES[kind](H, H, backend="numba")
                x = torch.randn(T, B, H)
                xr = x.clone().requires_grad_()

                def infer(strategy):
                    def fn():
                        force(strategy)
                        with torch.no_grad():
                            model(x)
                    return fn

                def train(strategy):
                    def fn():
                        force(strategy)
                        model(xr)[0].sum().backward()
                    return fn

                li, si, lt, st = medians([infer("loop"), infer("step"), train("loop"),
                                          train("step")])
                weight_kib = H * GATES[kind] * H * 4 // 1024
                print(f"{kind} B={B:3d} H={H:4d} MACs/step=2^{np.log2(macs):4.1f} "
                      f"W={weight_kib:5d} KiB  loop/step inference {li / si:.2f} "
                      f"training {lt / st:.2f}   ({li:.2f}/{si:.2f} | {lt:.2f}/{st:.2f} ms)",
                      flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else list(CLASSES))
