"""Where splitting a compiled recurrence's batch rows over torch's threads starts to pay.

Sets kernels/tuning.py's split_min_macs (multiply-adds over all steps of one call). Runs
each layer with the split allowed (threshold 0) and forbidden, and prints milliseconds per call
and split / one-thread time (below 1: the split is faster), inference (no_grad) and training
(forward + backward of the output sum), input size = H, float32, medians of interleaved runs.
Run: python benchmarks/split_crossover.py
"""

import torch
from ab import Switch

import fastrnn
from fastrnn.bench import timing

CLASSES = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CASES = [("gru", 6, 4, 128), ("gru", 8, 4, 128), ("rnn", 8, 4, 256), ("gru", 4, 16, 128),
         ("rnn", 4, 16, 256), ("gru", 8, 4, 256), ("rnn", 6, 4, 512), ("gru", 8, 16, 128),
         ("gru", 16, 8, 128), ("rnn", 16, 64, 64), ("lstm", 16, 8, 128), ("rnn", 32, 16, 128),
         ("lstm", 50, 4, 128), ("lstm", 8, 64, 64), ("lstm", 12, 16, 128), ("gru", 6, 16, 256),
         ("gru", 100, 4, 128), ("lstm", 100, 4, 128), ("gru", 100, 16, 128)]


def main():
    with Switch() as switch:
        for kind, T, B, H in CASES:
            model = CLASSES[kind](H, H, backend="numba")
            x = torch.randn(T, B, H)
            xr = x.clone().requires_grad_()

            def infer(threshold, model=model, x=x):
                def fn():
                    switch(split_min_macs=threshold)
                    with torch.no_grad():
                        model(x)
                return fn

            def train(threshold, model=model, xr=xr):
                def fn():
                    switch(split_min_macs=threshold)
                    model(xr)[0].sum().backward()
                return fn

            inference = timing.medians([infer(0), infer(1 << 62)], 9)
            training = timing.medians([train(0), train(1 << 62)], 9)
            macs = T * B * GATES[kind] * H * H
            print(f"{kind:4s} T={T:3d} B={B:3d} H={H:3d} MACs=2^{macs.bit_length() - 1:<2d} | "
                  f"inference split {inference[0]:.3f} one {inference[1]:.3f} "
                  f"({inference[0] / inference[1]:.2f}) | training split {training[0]:.3f} "
                  f"one {training[1]:.3f} ({training[0] / training[1]:.2f})", flush=True)


if __name__ == "__main__":
    main()
