"""Where torch's own CPU cells (LSTMCell, GRUCell, RNNCell) beat fastrnn's numba backend.

Sets the rule `auto` uses to hand CPU cell calls to torch (kernels/tuning.py). A cell is one
step: two GEMMs and a pointwise update, nothing to fuse across time, so fastrnn can only win on
the fused pointwise part, against a few microseconds more of Python per call.
Prints numba time / torch time (above 1: torch is faster) for inference (no_grad) and training
(forward + backward of the output sum), input size = H, float32, medians of interleaved runs
(fastrnn.bench's timer).
Run: python benchmarks/cell_crossover.py [--device cuda --backend triton]
(on CUDA: fastrnn's Triton single step against torch's cuDNN-era cells).
"""

import argparse

import torch

import fastrnn
from fastrnn.bench import timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="numba")
    args = parser.parse_args()
    dev = torch.device(args.device)
    for name in ("LSTMCell", "GRUCell", "RNNCell"):
        for H in (64, 256, 1024):
            for B in (1, 16, 64, 256):
                ref = getattr(torch.nn, name)(H, H, device=dev)
                ours = getattr(fastrnn, name)(H, H, backend=args.backend, device=dev)
                ours.load_state_dict(ref.state_dict())
                x = torch.randn(B, H, device=dev)
                xt = x.clone().requires_grad_()
                h = torch.randn(B, H, device=dev)
                hx = (h, h.clone()) if name == "LSTMCell" else h

                def infer(model, x=x, hx=hx):
                    def fn():
                        with torch.no_grad():
                            model(x, hx)
                    return fn

                def train(model, xt=xt, hx=hx):
                    def fn():
                        out = model(xt, hx)
                        (out[0] if isinstance(out, tuple) else out).sum().backward()
                    return fn

                for mode, run in (("inference", infer), ("training", train)):
                    t_ours, t_torch = timing.medians([run(ours), run(ref)], 9, dev)
                    print(f"{name:8s} {mode:9s} B={B:3d} H={H:4d}  {args.backend}/torch "
                          f"{t_ours / t_torch:.2f}  ({t_ours * 1e3:.1f} / {t_torch * 1e3:.1f} us)",
                          flush=True)


if __name__ == "__main__":
    main()
