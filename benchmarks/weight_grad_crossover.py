"""Where oneDNN's backward-weights primitive beats torch.mm for an RNN's weight gradients.

Sets onednn_weight_grads_min_macs (kernels/tuning.py). For each shape, the gradients
of two weights that share one output gradient (M = steps x rows, N = gates x hidden, K = the
inputs' width), with the bias gradient, as the LSTM/RNN backward needs them: torch.mm's
transposed products plus a column sum, against gemm.weight_grads forced onto oneDNN. Prints
both medians (interleaved, fastrnn.bench's timer), their ratio and the largest difference.
Run: python benchmarks/weight_grad_crossover.py

With --numba it sets own_weight_grads_max_rows instead: the same gradients through
torch.mm against the numba backend's own product (launch.weight_grads), which reads dG in place.

With --dx it sets copy_weight_min_rows: the input gradient dx = dG @ W_ih, which
reads the weight transposed, through torch.mm in place against copying W_ih^T contiguous and
calling oneDNN's inner product (which takes contiguous weights only).
"""

import argparse
import math

import torch

from fastrnn.bench import timing
from fastrnn.kernels import gemm
from fastrnn.kernels.tuning import tuning

# (T, B, H, gates): the benchmark grid's layers and a few between them.
SHAPES = [(100, 1, 64, 4), (100, 4, 128, 4), (20, 16, 128, 4), (100, 16, 64, 4), (100, 16, 128, 3),
          (100, 16, 128, 4), (100, 32, 128, 4), (100, 1, 256, 4), (100, 8, 256, 4),
          (100, 64, 256, 1), (100, 64, 256, 4), (100, 64, 512, 4), (100, 1, 1024, 4),
          (50, 8, 1024, 4)]


# (M, I, gates x H) for dx: the grid's input widths at 100-6400 rows.
DX_SHAPES = [(M, I, 4 * I) for M in (100, 400, 1600, 6400) for I in (64, 128, 256, 512, 1024)
             if M * I <= 1600 * 1024]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dx", action="store_true", help="time the input gradient's weight copy")
    parser.add_argument("--numba", action="store_true",
                        help="time the numba backend's weight gradients against torch.mm")
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    if args.numba:
        weight_gradients("numba", numba_weight_grads,
                         dict(own_weight_grads_max_rows=1 << 40, own_weight_grads_min_macs=0))
        return
    if gemm._OPS is None or not gemm.onednn_enabled() or (
            not args.dx and gemm._BACKWARD_WEIGHTS is None):
        raise SystemExit("this torch build lacks the oneDNN primitive this compares")
    if args.dx:
        input_gradient()
    else:
        weight_gradients("oneDNN", onednn_weight_grads, dict(onednn_weight_grads_min_macs=0))


def input_gradient():
    linear = gemm._OPS[0]
    for M, N, K in DX_SHAPES:
        grad, w_ih = torch.randn(M, K), torch.randn(K, N)

        def mm(grad=grad, w_ih=w_ih):
            return grad @ w_ih

        def copy_onednn(grad=grad, w_ih=w_ih):
            return linear(grad, w_ih.t().contiguous(), None, "none", [], "")

        err = (mm() - copy_onednn()).abs().max().item()
        t_mm, t_dnn = timing.medians([mm, copy_onednn], 9)
        print(f"M={M:5d} N={N:5d} K={K:5d}  torch.mm {t_mm:8.3f} ms  copy+oneDNN {t_dnn:8.3f} ms"
              f"  torch.mm/(copy+oneDNN) {t_mm / t_dnn:5.2f}  max diff {err:.1e}", flush=True)


def weight_gradients(name, forced, rules):
    """torch.mm's transposed products against forced(grad, inputs), the other path with its
    rule switched on (tuning(**rules), around every shape: torch.mm's side reads no rule), at
    every shape."""
    with tuning(**rules):
        for T, B, H, G in SHAPES:
            M, N = T * B, G * H
            grad, inputs = torch.randn(M, N), [torch.randn(M, H), torch.randn(M, H)]

            def mm(grad=grad, inputs=inputs):
                return [grad.t() @ a for a in inputs], grad.sum(0)

            def other(grad=grad, inputs=inputs):
                return forced(grad, inputs)

            (a, b), (c, d) = mm(), other()
            err = max((x - y).abs().max().item() for x, y in zip(a + [b], c + [d]))
            t_mm, t_other = timing.medians([mm, other], 9)
            print(f"M={M:5d} N={N:5d} K={H:5d}  2^{math.log2(M * N * H):4.1f} MACs  "
                  f"torch.mm {t_mm:8.3f} ms  {name} {t_other:8.3f} ms  "
                  f"torch.mm/{name} {t_mm / t_other:5.2f}  max diff {err:.1e}", flush=True)


def onednn_weight_grads(grad, inputs):
    return gemm.weight_grads(grad, inputs, True)


def numba_weight_grads(grad, inputs):
    from fastrnn.kernels.numba import launch
    return launch.weight_grads(grad, inputs, True)


if __name__ == "__main__":
    main()
