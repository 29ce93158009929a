"""Where oneDNN's backward-weights primitive beats torch.mm for an RNN's weight gradients.

Sets gemm.BACKWARD_WEIGHTS_MIN_MACS (fastrnn/kernels/gemm.py). For each shape, the gradients
of two weights that share one output gradient (M = steps x rows, N = gates x hidden, K = the
inputs' width), with the bias gradient, as the LSTM/RNN backward needs them: torch.mm's
transposed products plus a column sum, against gemm.weight_grads forced onto oneDNN. Prints
both medians (interleaved, fastrnn.bench's timer), their ratio and the largest difference.
Run: python benchmarks/weight_grad_crossover.py
"""

import math

import torch

from fastrnn.bench import timing
from fastrnn.kernels import gemm

# (T, B, H, gates): the benchmark grid's layers and a few between them.
SHAPES = [(100, 1, 64, 4), (100, 4, 128, 4), (20, 16, 128, 4), (100, 16, 64, 4), (100, 16, 128, 3),
          (100, 16, 128, 4), (100, 32, 128, 4), (100, 1, 256, 4), (100, 8, 256, 4),
          (100, 64, 256, 1), (100, 64, 256, 4), (100, 64, 512, 4), (100, 1, 1024, 4),
          (50, 8, 1024, 4)]


def main():
    if gemm._BACKWARD_WEIGHTS is None or not gemm.onednn_enabled():
        raise SystemExit("this torch build has no oneDNN backward-weights primitive")
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    for T, B, H, G in SHAPES:
        M, N = T * B, G * H
        grad, inputs = torch.randn(M, N), [torch.randn(M, H), torch.randn(M, H)]

        def mm():
            return [grad.t() @ a for a in inputs], grad.sum(0)

        def onednn():
            saved = gemm.BACKWARD_WEIGHTS_MIN_MACS
            gemm.BACKWARD_WEIGHTS_MIN_MACS = 0
            try:
                return gemm.weight_grads(grad, inputs, True)
            finally:
                gemm.BACKWARD_WEIGHTS_MIN_MACS = saved

        (a, b), (c, d) = mm(), onednn()
        err = max((x - y).abs().max().item() for x, y in zip(a + [b], c + [d]))
        t_mm, t_dnn = timing.medians([mm, onednn], 9)
        print(f"M={M:5d} N={N:5d} K={H:5d}  2^{math.log2(M * N * H):4.1f} MACs  torch.mm {t_mm:8.3f} ms"
              f"  oneDNN {t_dnn:8.3f} ms  torch.mm/oneDNN {t_mm / t_dnn:5.2f}  max diff {err:.1e}",
              flush=True)


if __name__ == "__main__":
    main()
