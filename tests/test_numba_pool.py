"""The numba backend's buffer pool (kernels/numba/pool.py): a freed block is handed out again, a
block anything still uses never is, free memory stays bounded, and training through pooled
buffers gives torch.nn's gradients, also with several graphs alive at once."""

import pytest
import torch

pytest.importorskip("numba")

import fastrnn  # noqa: E402
from fastrnn.kernels.numba import pool  # noqa: E402

F32 = torch.float32


@pytest.fixture(autouse=True)
def small_pool(monkeypatch):
    """An empty pool that takes blocks from 1 KiB, so tiny cases exercise it."""
    if not pool.enabled():
        pytest.skip("this torch has no storage use count; the pool is off")
    monkeypatch.setattr(pool, "_blocks", [])
    monkeypatch.setattr(pool, "MIN_BYTES", 1024)


def test_a_freed_block_is_handed_out_again():
    t = pool.empty((16, 32), F32)
    ptr = t.data_ptr()
    del t
    again = pool.empty((16, 32), F32)
    assert again.data_ptr() == ptr
    assert again.shape == (16, 32) and again.dtype == F32 and again.is_contiguous()


@pytest.mark.parametrize("holder", ["tensor", "view", "numpy", "saved"])
def test_a_block_in_use_is_never_handed_out(holder):
    t = pool.empty((16, 32), F32)
    ptr = t.data_ptr()
    if holder == "view":
        keep = t[3]
    elif holder == "numpy":
        keep = t.numpy()
    elif holder == "saved":
        w = torch.ones(32, requires_grad=True)
        keep = (t * w).sum()       # autograd saves t for the gradient of w
    else:
        keep = t
    del t
    other = pool.empty((16, 32), F32)
    assert other.data_ptr() != ptr
    del keep


def test_a_block_is_reused_only_up_to_twice_the_size_asked():
    big = pool.empty((4096,), F32)
    ptr = big.data_ptr()
    del big
    assert pool.empty((1024,), F32).data_ptr() != ptr     # 4x: a fresh block instead
    assert pool.empty((3000,), F32).data_ptr() == ptr


def test_free_blocks_beyond_the_cap_are_dropped(monkeypatch):
    monkeypatch.setattr(pool, "MAX_FREE_BYTES", 3 * 4096)
    kept = [pool.empty((1024,), F32) for _ in range(6)]    # 4 KiB each, all in use
    assert pool.held_bytes() == 6 * 4096
    kept.clear()
    pool.empty((8192,), F32)                                # a new block: the pool trims
    assert pool.held_bytes() <= 3 * 4096 + 8 * 4096


def test_release_drops_free_blocks_only():
    used = pool.empty((1024,), F32)
    pool.empty((2048,), F32)
    pool.release()
    assert pool.held_bytes() == used.numel() * 4


def test_fastrnn_empty_cache_releases_the_pool():
    used = pool.empty((1024,), F32)
    pool.empty((2048,), F32)
    fastrnn.empty_cache()
    assert pool.held_bytes() == used.numel() * 4


def test_small_requests_bypass_the_pool(monkeypatch):
    monkeypatch.setattr(pool, "MIN_BYTES", 1 << 20)
    pool.empty((16, 32), F32)
    assert pool.held_bytes() == 0


def test_without_the_use_count_the_pool_is_off(monkeypatch):
    monkeypatch.setattr(pool, "_uses", None)
    t = pool.empty((16, 32), F32)
    assert t.shape == (16, 32) and pool.held_bytes() == 0


def _pair(kind, I, H, **kw):
    torch.manual_seed(0)
    cls = {"lstm": (torch.nn.LSTM, fastrnn.LSTM), "gru": (torch.nn.GRU, fastrnn.GRU),
           "rnn": (torch.nn.RNN, fastrnn.RNN)}[kind]
    ref = cls[0](I, H, **kw).double()
    ours = cls[1](I, H, backend="numba", **kw).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _grads(model, x, upstream):
    model.zero_grad()
    x = x.clone().requires_grad_()
    (model(x)[0] * upstream).sum().backward()
    return [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("strategy", ["loop", "step"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_training_through_pooled_buffers_matches_torch(kind, strategy, tune):
    tune(numba_strategy=strategy)
    ref, ours = _pair(kind, 5, 8, num_layers=2, bidirectional=True)
    g = torch.Generator().manual_seed(1)
    for step in range(3):       # the later steps run on reused blocks
        x = torch.randn(9, 6, 5, generator=g, dtype=torch.float64)
        upstream = torch.randn(9, 6, 16, generator=g, dtype=torch.float64)
        for a, b in zip(_grads(ours, x, upstream), _grads(ref, x, upstream)):
            torch.testing.assert_close(a, b)
        if step == 0:
            held = pool.held_bytes()
    assert held > 0 and pool.held_bytes() == held


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_graphs_alive_together_keep_their_own_buffers(kind):
    ref, ours = _pair(kind, 5, 8)
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(7, 4, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    # Three graphs alive at once; the gradient of a sum reaches backward as an expanded view.
    losses = [ours(x)[0].sum() * (k + 1) for k, x in enumerate(xs)]
    for k, (x, loss) in enumerate(zip(xs, losses)):
        ours.zero_grad()
        loss.backward()
        ref.zero_grad()
        (ref(x)[0].sum() * (k + 1)).backward()
        for a, b in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad)
