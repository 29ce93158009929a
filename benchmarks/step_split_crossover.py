"""Where the step path should split a step's rows over the threads (kernels/numba/stepper.py).

Sets `step_split_min_rows` and `step_split_min_macs` (kernels/tuning.py). One step of one layer,
input size = H, float32: the compiled step in this thread against the same step on torch's
OpenMP team (rows split in `torch.get_num_threads()` chunks, its arrays copied in and out).
Prints serial time / split time (above 1: the split is faster), medians of interleaved rounds.
Run: python benchmarks/step_split_crossover.py [--rounds 9]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from fastrnn.kernels.numba import LayerStep, team

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    chunks = team.threads()
    print(f"threads: {chunks}")
    print("kind  B    H   MACs      serial us  split us  serial/split")
    for kind in ("lstm", "gru", "rnn"):
        for H in (64, 128, 256, 512):
            for B in (2, 4, 8, 16, 32):
                G = GATES[kind] * H
                w = (torch.randn(G, H) * 0.1, torch.randn(G, H) * 0.1, torch.randn(G),
                     torch.randn(G), None)
                steps = [LayerStep(kind, *w, B, "tanh", n) for n in (1, chunks)]
                x = np.random.randn(1, B, H).astype(np.float32)
                h = np.zeros((B, H), np.float32)
                c = np.zeros((B, H), np.float32) if kind == "lstm" else None
                out = np.empty((1, B, H), np.float32)
                fns = [lambda s=s, x=x, h=h, c=c, out=out: s.step(x, h, c, out) for s in steps]
                for fn in fns:
                    fn()
                calls = max(1, int(0.005 / max(per_call(fns[0], 3), 1e-7)))
                times = [[], []]
                for r in range(args.rounds):
                    for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                        times[k].append(per_call(fns[k], calls))
                serial, split = (statistics.median(t) * 1e6 for t in times)
                print(f"{kind:5} {B:<4} {H:<4} {B * 2 * H * G:<9} {serial:9.1f} {split:9.1f}"
                      f"  {serial / split:5.2f}", flush=True)


if __name__ == "__main__":
    main()
