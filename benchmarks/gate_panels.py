"""LSTM layers against torch with each step's cells updated on the product's accumulators
(lstm.lstm_forward_cells, W_hh^T in gate panels) and with the plain product and a separate
pointwise pass (kernels/tuning.py's gate_panels_max_rows rule).

Run: python benchmarks/gate_panels.py [T] [batches] [hidden sizes]
  e.g. python benchmarks/gate_panels.py 100 1,2,3,6 64,128,192
Prints torch's milliseconds per call and its time over fastrnn's (numba backend, input size = H,
float32, torch's threads) with the gate panels off and on, for inference and training (forward
+ backward of the output's sum); medians of 9 interleaved runs. The panels only serve layers on
the "loop" strategy that do not fuse their input projection (few rows per thread); rows that
cannot reach them say so (the two timings then run the same code: a measure of the noise).
"""

import sys

from ab import Switch, lstm_calls

from fastrnn.bench import timing
from fastrnn.kernels.numba import launch


def main(T, batches, sizes):
    with Switch() as switch:
        for H in sizes:
            for B in batches:
                make = lstm_calls(switch, "gate_panels_max_rows", T, B, H)
                switch(gate_panels_max_rows=1 << 30)
                route = launch.explain("lstm", T, B, H, I=H)
                panels = "registers" in route
                for mode in ("inference", "training"):
                    t = timing.medians([make(mode, None), make(mode, 0), make(mode, 1 << 30)], 9)
                    note = "" if panels else "  (panels not reachable: " + route + ")"
                    print(f"T={T} B={B:2d} H={H:4d} {mode:9s} torch {t[0]:7.3f} ms  "
                          f"plain {t[0] / t[1]:.2f}x  panels {t[0] / t[2]:.2f}x  "
                          f"panels/plain {t[1] / t[2]:.2f}x{note}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 100,
         [int(b) for b in (args[1] if len(args) > 1 else "1,2,3,6").split(",")],
         [int(h) for h in (args[2] if len(args) > 2 else "64,128,192").split(",")])
