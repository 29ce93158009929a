"""LSTM layers against torch with the input projection taken inside the loop from
fuse_many_rows rows per thread, and without (kernels/tuning.py's fusion rules).

Run: python benchmarks/fused_projection_crossover.py [T] [batches] [hidden size]
  e.g. python benchmarks/fused_projection_crossover.py 100 16,32,48,64 256
Prints torch's milliseconds per call and its time over fastrnn's (numba backend, input size = H,
float32) without and with the fusion, for inference and training (forward + backward of the
output's sum); medians of 7 interleaved runs.
"""

import sys

from ab import Switch, lstm_calls

from fastrnn.bench import timing
from fastrnn.kernels.tuning import current

NEVER = 1 << 62


def main(T, batches, H):
    default = current().fuse_many_rows
    with Switch() as switch:
        for B in batches:
            make = lstm_calls(switch, "fuse_many_rows", T, B, H)
            for mode in ("inference", "training"):
                t = timing.medians([make(mode, None), make(mode, NEVER), make(mode, default)], 7)
                print(f"T={T} B={B:3d} H={H} {mode:9s} torch {t[0]:7.2f} ms  "
                      f"not fused {t[0] / t[1]:.2f}x  fused {t[0] / t[2]:.2f}x", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 100,
         [int(b) for b in (args[1] if len(args) > 1 else "16,32,48,64").split(",")],
         int(args[2]) if len(args) > 2 else 256)
