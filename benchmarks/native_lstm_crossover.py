"""Where torch's own CPU LSTM (oneDNN's fused RNN primitive) beats fastrnn's numba backend.

Sets the rules `auto` uses to hand float32 CPU LSTM calls to torch (kernels/tuning.py).
Prints numba time / torch time (above 1: torch is faster), T = 100, input size = H, medians of
interleaved runs (fastrnn.bench's timer), over batch and hidden sizes, for inference (eval,
no_grad) or training (forward + backward of the output sum).
Run: python benchmarks/native_lstm_crossover.py [inference|training] [hidden sizes] [batches]
  e.g. python benchmarks/native_lstm_crossover.py inference 128 1,2,4 (default: the whole grid)
"""

import sys

import torch

import fastrnn
from fastrnn.bench import timing


def _runner(model, x, training):
    if training:
        def fn():
            model.zero_grad(set_to_none=True)
            model(x)[0].sum().backward()
    else:
        def fn():
            with torch.no_grad():
                model(x)
    return fn


def main(mode="inference", sizes="64,128,256,512,1024", batches="1,2,4,8,16,32,64"):
    if mode not in ("inference", "training"):
        raise SystemExit(f"mode must be 'inference' or 'training', got {mode!r}")
    training = mode == "training"
    T = 100
    for H in (int(h) for h in sizes.split(",")):
        for B in (int(b) for b in batches.split(",")):
            if B * H * H > 64 * 512 * 512:
                continue
            ref = torch.nn.LSTM(H, H).train(training)
            ours = fastrnn.LSTM(H, H, backend="numba").train(training)
            ours.load_state_dict(ref.state_dict())
            x = torch.randn(T, B, H, requires_grad=training)
            t_ours, t_torch = timing.medians([_runner(ours, x, training),
                                              _runner(ref, x, training)], 9)
            print(f"lstm {mode} T={T} B={B:3d} H={H:4d}  numba/torch {t_ours / t_torch:.2f}  "
                  f"({t_ours:.3f} / {t_torch:.3f} ms)", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
