"""fastrnn against torch.nn on short sequences (a few time steps), where there is little to
fuse across time and a call's fixed costs (packing W_hh for the compiled loop, Python) weigh
most. Sets where `auto` hands short GRU/RNN sequences to torch (kernels/tuning.py).

Prints fastrnn time / torch time (above 1: torch is faster) for inference (no_grad) and training
(forward + backward of the output sum), input size = H, float32, medians of interleaved runs
(fastrnn.bench's timer), for fastrnn's numba backend and for `auto`.
Run: python benchmarks/short_sequence_crossover.py [kinds] [steps] [batches] [hidden sizes]
  e.g. python benchmarks/short_sequence_crossover.py gru,rnn 2,4,8 1,16 64,256
"""

import sys
import time

import torch

import fastrnn
from fastrnn.bench import timing

CLASSES = {"lstm": (torch.nn.LSTM, fastrnn.LSTM), "gru": (torch.nn.GRU, fastrnn.GRU),
           "rnn": (torch.nn.RNN, fastrnn.RNN)}


def _warm_up(seconds=2.0):
    """Run a small layer for a while first: the first timed rows otherwise measured 1.5-2.5x
    slower for every provider (clock and thread-pool warm-up)."""
    model = torch.nn.GRU(64, 64)
    ours = fastrnn.GRU(64, 64, backend="numba")
    x = torch.randn(4, 1, 64)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        with torch.no_grad():
            model(x)
            ours(x)


def main(kinds, steps, batches, hiddens):
    _warm_up()
    for kind in kinds:
        for T in steps:
            for B in batches:
                for H in hiddens:
                    torch_cls, ours_cls = CLASSES[kind]
                    ref = torch_cls(H, H)
                    numba = ours_cls(H, H, backend="numba")
                    auto = ours_cls(H, H, backend="auto")
                    numba.load_state_dict(ref.state_dict())
                    auto.load_state_dict(ref.state_dict())
                    x = torch.randn(T, B, H)
                    xt = x.clone().requires_grad_()

                    def infer(model, x=x):
                        def fn():
                            with torch.no_grad():
                                model(x)
                        return fn

                    def train(model, xt=xt):
                        def fn():
                            model(xt)[0].sum().backward()
                        return fn

                    for mode, run in (("inference", infer), ("training", train)):
                        t_numba, t_auto, t_torch = timing.medians(
                            [run(numba), run(auto), run(ref)], 9)
                        print(f"{kind:4s} {mode:9s} T={T:3d} B={B:3d} H={H:4d}  numba/torch "
                              f"{t_numba / t_torch:.2f}  auto/torch {t_auto / t_torch:.2f}  "
                              f"({t_numba * 1e3:.0f} / {t_auto * 1e3:.0f} / "
                              f"{t_torch * 1e3:.0f} us)", flush=True)


def _ints(arg):
    return [int(v) for v in arg.split(",")]


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0].split(",") if len(args) > 0 else ["gru", "rnn", "lstm"],
         _ints(args[1]) if len(args) > 1 else [2, 4, 8, 16],
         _ints(args[2]) if len(args) > 2 else [1, 16, 64],
         _ints(args[3]) if len(args) > 3 else [64, 256])
