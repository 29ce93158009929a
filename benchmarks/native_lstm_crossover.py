"""Where torch's own CPU LSTM (oneDNN's fused RNN primitive) beats fastrnn's numba backend.

Sets the rule `auto` uses to hand float32 CPU LSTM inference to torch (fastrnn/native.py).
Prints numba time / torch time (above 1: torch is faster) for inference, T = 100, input size = H,
medians of interleaved runs (fastrnn.bench's timer), over batch and hidden sizes.
Run: python benchmarks/native_lstm_crossover.py
"""

import torch

import fastrnn
from fastrnn.bench import timing


def main():
    T = 100
    for H in (64, 128, 256, 512, 1024):
        for B in (1, 2, 4, 8, 16, 32, 64):
            if B * H * H > 64 * 512 * 512:
                continue
            ref = torch.nn.LSTM(H, H).eval()
            ours = fastrnn.LSTM(H, H, backend="numba").eval()
            ours.load_state_dict(ref.state_dict())
            x = torch.randn(T, B, H)

            def run(model):
                def fn():
                    with torch.no_grad():
                        model(x)
                return fn

            t_ours, t_torch = timing.medians([run(ours), run(ref)], 9)
            print(f"lstm inference T={T} B={B:3d} H={H:4d}  numba/torch {t_ours / t_torch:.2f}  "
                  f"({t_ours:.3f} / {t_torch:.3f} ms)", flush=True)


if __name__ == "__main__":
    main()
