"""What the numba backend's recurrences spend besides their products, per cell.

Each whole-sequence recurrence (kernels/numba/lstm.py, gru.py, rnn.py: forward saving for
backward, and backward) is called as the launcher calls it, on one thread, then the same T
products alone (linalg.matmul_packed on the same shapes, the weight staying in cache); the
difference per cell (T x B x H) is the rest: the gate updates, state copies and liveness checks,
and what the saved states' memory traffic costs the products (compare T = 10 with T = 100).
Timed inside the library's compiled recurrences on purpose: a benchmark loop compiled around a
step function inlines it afresh, and how LLVM compiled the pointwise code depended on that
context. Medians of 9 interleaved runs.
Run: python benchmarks/pointwise_rate.py [B] [H] [T]   (default 16 128 100)
"""

import sys
import time

import numpy as np
from numba import njit

from fastrnn.kernels.numba import gru, lstm, rnn
from fastrnn.kernels.numba.config import JIT
from fastrnn.kernels.numba.linalg import matmul_packed, pack_weight


@njit(**dict(JIT, cache=False))
def _products(T, a, w, out):
    for t in range(T):
        matmul_packed(a, w, out, 0, out.shape[1], t)


def cases(B, H, T, dtype=np.float32):
    """name -> (recurrence, its arguments, (rows, K, N) of its per-step product)."""
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(dtype)

    def zeros(*shape):
        return np.zeros(shape, dtype)

    lengths = np.full(B, T, np.int64)
    none = zeros(1)
    out = {}
    for kind, G in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        w = rand(G * H, H)
        w_t, w_p = pack_weight(np.ascontiguousarray(w.T)), pack_weight(w)
        hs, gates, cs = zeros(T, B, H), zeros(T, B, G * H), zeros(T, B, H)
        if kind == "lstm":
            fwd = (lstm.lstm_forward_recurrence, (rand(T, B, G * H), w_t, none, zeros(B, H),
                   zeros(B, H), lengths, False, False, True, hs, gates, cs, zeros(T, B, H),
                   zeros(B, G * H), zeros(B, H), 0, B))
            bwd = (lstm.lstm_backward_recurrence, (rand(T, B, H), zeros(B, H), zeros(B, H),
                   gates, cs, rand(B, H), w_p, none, lengths, False, False, zeros(T, B, G * H),
                   zeros(1, B, H), zeros(B, H), zeros(B, H), 0, B))
        elif kind == "gru":
            hn_lin = zeros(T, B, H)
            fwd = (gru.gru_forward_recurrence, (rand(T, B, G * H), w_t, rand(H), zeros(B, H),
                   lengths, False, True, hs, gates, hn_lin, zeros(B, G * H), 0, B))
            bwd = (gru.gru_backward_recurrence, (rand(T, B, H), zeros(B, H), gates, hn_lin,
                   rand(B, H), hs, w_p, lengths, False, zeros(T, B, G * H),
                   zeros(T, B, G * H), zeros(B, H), 0, B))
        else:
            fwd = (rnn.rnn_forward_recurrence, (rand(T, B, H), w_t, zeros(B, H), lengths, False,
                   False, hs, zeros(B, H), 0, B))
            bwd = (rnn.rnn_backward_recurrence, (rand(T, B, H), zeros(B, H), hs, w_p, lengths,
                   False, False, zeros(T, B, H), zeros(B, H), 0, B))
        out[f"{kind} forward"] = fwd + ((zeros(B, H), w_t, zeros(B, G * H)),)
        out[f"{kind} backward"] = bwd + ((zeros(B, G * H), w_p, zeros(B, H)),)
    return out


def main(B=16, H=128, T=100, runs=9):
    todo = cases(B, H, T)          # forward before backward: backward reads the saved gates
    whole = {name: [] for name in todo}
    alone = {name: [] for name in todo}
    for _ in range(runs + 1):      # the first round compiles; interleaved against machine noise
        for name, (recurrence, args, product) in todo.items():
            start = time.perf_counter()
            recurrence(*args)
            whole[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            _products(T, *product)
            alone[name].append(time.perf_counter() - start)
    print(f"B={B} H={H} T={T}, float32, one thread: ms per recurrence, products alone, "
          "and the rest in ns per cell")
    for name in todo:
        w, p = np.median(whole[name][1:]) * 1e3, np.median(alone[name][1:]) * 1e3
        print(f"  {name:14s} {w:8.3f} ms  products {p:8.3f} ms  rest "
              f"{(w - p) / (T * B * H) * 1e6:6.2f} ns/cell")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
