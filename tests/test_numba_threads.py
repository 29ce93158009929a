"""The numba backend called from several Python threads at once.

Its kernels release the GIL, each call runs its splits on the calling thread's own OpenMP team,
and the launcher keeps buffers (kernels/numba/pool.py) and small caches at module level: a
server answering requests from a thread pool, or a training loop beside an inference thread,
calls it concurrently. Every thread here runs its own input through a shared module (inference)
and its own copy of the module (training: gradients land in the module's parameters), on every
strategy the launcher has, and must get what it gets alone, with no call left hanging.
"""

import copy
import threading

import pytest
import torch

pytest.importorskip("numba")

import fastrnn  # noqa: E402

THREADS = 4
ROUNDS = 3
TIMEOUT_S = 120
MODULES = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}


@pytest.fixture(params=["loop", "loop_split", "fused", "columns", "step"])
def strategy(request, tune):
    """The compiled loop in one thread or with the rows split over the team, with the input
    projection inside it, with the hidden units split (a barrier every step), and the per-step
    GEMM."""
    name = request.param
    split = name in ("loop_split", "fused", "columns", "step")
    tune(numba_strategy=name if name in ("columns", "step") else "loop",
         fuse_projection=name == "fused",
         **{rule: 0 if split else 1 << 62
            for rule in ("split_min_macs", "split_min_cells", "split_min_cells_one_step")},
         fuse_min_steps=1, fuse_min_rows=1)
    return name


def _call(module, x, train):
    """(out, h_n, x.grad, parameter grads) of one forward (and backward of a fixed loss)."""
    if not train:
        with torch.no_grad():
            out, h = module(x)
        return out, h, None, None
    x = x.detach().clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out, h = module(x)
    (out.pow(2).sum() + (h[0] if isinstance(h, tuple) else h).sum()).backward()
    return out, h, x.grad, [p.grad for p in module.parameters()]


def _assert_same(got, want):
    for g, w in zip(got, want):
        if isinstance(w, (list, tuple)):
            _assert_same(g, w)
        elif w is not None:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_concurrent_calls_match_calls_alone(kind, strategy):
    torch.manual_seed(0)
    shared = MODULES[kind](12, 24, backend="numba")
    inputs = [torch.randn(9, 6, 12) for _ in range(THREADS)]
    own = [copy.deepcopy(shared) for _ in range(THREADS)]
    alone = [(_call(shared, x, False), _call(m, x, True)) for x, m in zip(inputs, own)]
    failures = []

    def work(k):
        try:
            for _ in range(ROUNDS):
                _assert_same(_call(shared, inputs[k], False), alone[k][0])
                _assert_same(_call(own[k], inputs[k], True), alone[k][1])
        except Exception as exc:  # reported below, with the thread it came from
            failures.append((k, exc))

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a concurrent call never returned"
    assert not failures, failures
