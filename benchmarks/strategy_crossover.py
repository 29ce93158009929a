"""The numba backend's three strategies against each other, to set kernels/tuning.py's rules.

Strategy "loop": one compiled loop over all steps, batch rows split over torch's threads.
Strategy "columns": the same loop with the hidden units split over the threads instead.
Strategy "step": a Python loop over steps, each a oneDNN/MKL GEMM plus a compiled pointwise update.
Run: python benchmarks/strategy_crossover.py [lstm,gru,rnn] [batches] [hidden sizes]
  e.g. python benchmarks/strategy_crossover.py gru 1,2,4 256,512
Prints milliseconds per call of each strategy for inference and training (T = 50, input size =
H, float32, medians of 7 interleaved runs) and which was fastest.
"""

import sys

import torch
from ab import Switch

import fastrnn
from fastrnn.bench import timing

CLASSES = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
STRATEGIES = ("loop", "columns", "step")


def main(kinds, batches, hiddens):
    T = 50
    with Switch() as switch:
        for kind in kinds:
            for B in batches:
                for H in hiddens:
                    model = CLASSES[kind](H, H, backend="numba")
                    x = torch.randn(T, B, H)
                    xr = x.clone().requires_grad_()

                    def infer(strategy, model=model, x=x):
                        def fn():
                            switch(numba_strategy=strategy)
                            with torch.no_grad():
                                model(x)
                        return fn

                    def train(strategy, model=model, xr=xr):
                        def fn():
                            switch(numba_strategy=strategy)
                            model(xr)[0].sum().backward()
                        return fn

                    inference = timing.medians([infer(s) for s in STRATEGIES], 7)
                    training = timing.medians([train(s) for s in STRATEGIES], 7)
                    weight_kib = H * GATES[kind] * H * 4 // 1024

                    def row(times):
                        best = STRATEGIES[min(range(3), key=times.__getitem__)]
                        cells = " ".join(f"{s}={t:7.2f}" for s, t in zip(STRATEGIES, times))
                        return f"{cells}  best {best:7s}"

                    print(f"{kind:4s} B={B:3d} H={H:4d} W={weight_kib:5d} KiB | inference "
                          f"{row(inference)} | training {row(training)}", flush=True)


def _ints(arg, default):
    return [int(v) for v in arg.split(",")] if arg else default


if __name__ == "__main__":
    args = sys.argv[1:] + [None] * 3
    main(args[0].split(",") if args[0] else list(CLASSES), _ints(args[1], [1, 2, 4, 8, 16, 32]),
         _ints(args[2], [64, 128, 256, 512, 1024]))
