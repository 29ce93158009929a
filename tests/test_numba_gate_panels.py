"""The LSTM loop that updates each step's cells on the product's accumulators
(lstm.lstm_forward_cells over W_hh^T packed by linalg.pack_gate_panels) against the plain loop
and torch.nn, and the rule that picks it (tuning: gate_panels_max_rows)."""

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from fastrnn.kernels import cpu  # noqa: E402
from fastrnn.kernels.numba import buffers, launch, plan, team  # noqa: E402
from fastrnn.kernels.numba.linalg import pack_gate_panels, pack_weight, panel_width  # noqa: E402
from rnn_cases import check_parity  # noqa: E402


def lanes(dtype):
    return panel_width(dtype) // 4


@pytest.fixture
def poison(monkeypatch):
    """NaN-filled outputs, saved tensors and scratch, so an entry left unwritten shows."""
    def nan_empty(shape, dtype):
        return torch.full(shape, float("nan"), dtype=dtype)

    monkeypatch.setattr(buffers, "empty", nan_empty)
    monkeypatch.setattr(buffers, "internal", nan_empty)
    monkeypatch.setattr(buffers, "scratch", lambda shape, dtype: nan_empty(shape, dtype).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [1, 3, 64, 70])
@pytest.mark.parametrize("blocks", [1, 3])
def test_gate_panels_are_the_pack_of_reordered_columns(dtype, K, blocks):
    # Panel p: gates i, f, g, o of units p*L .. p*L + L - 1, one vector each.
    L = lanes(dtype)
    H = blocks * L
    w = np.random.default_rng(1).standard_normal((4 * H, K)).astype(dtype)
    order = [g * H + p * L + j for p in range(blocks) for g in range(4) for j in range(L)]
    np.testing.assert_array_equal(pack_gate_panels(w),
                                  pack_weight(np.ascontiguousarray(w[order].T)))


def _forward(dtype, T, B, H, lengths, reverse, need_grad, panels, tune):
    tune(numba_strategy="loop", gate_panels_max_rows=1 << 20 if panels else 0)
    g = torch.Generator().manual_seed(7)

    def u(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale).to(dtype)

    xg, w_hh = u(T, B, 4 * H, scale=1.5), u(4 * H, H, scale=H ** -0.5)
    h0, c0 = u(B, H, scale=0.5), u(B, H, scale=0.5)
    assert (plan.forward("lstm", T, B, H, dtype=dtype).route == "panels") == panels
    out, h, c, saved = launch.lstm_forward(xg, w_hh, None, h0, c0, lengths, reverse, need_grad)
    return [out, h, c, *saved]


# Rows in pairs and alone; lengths where a pair's second row (then its first) is dead while the
# other lives, a row dead from the start, and rows that live throughout.
LENGTHS = {None: None, "mixed": [7, 3, 0, 7, 5], "pairs": [2, 7, 7, 1, 4]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths_kind", list(LENGTHS), ids=["nolen", "mixed", "pairs"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("need_grad", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("split", [False, True], ids=["one", "split"])
def test_cells_on_the_product_match_the_plain_loop(dtype, lengths_kind, reverse, need_grad,
                                                   split, poison, monkeypatch, tune):
    T, B = 7, 5
    H = 2 * lanes(np.float64 if dtype == torch.float64 else np.float32)
    if split:   # chunks of 2, 2 and 1 rows on torch's team
        tune(split_min_macs=0)
        monkeypatch.setattr(team, "threads", lambda: 3)
    lens = LENGTHS[lengths_kind]
    lengths = None if lens is None else torch.tensor(lens, dtype=torch.int64)
    got = _forward(dtype, T, B, H, lengths, reverse, need_grad, True, tune)
    want = _forward(dtype, T, B, H, lengths, reverse, need_grad, False, tune)
    assert len(got) == len(want) == (5 if need_grad else 3)
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=2e-6, rtol=2e-6)
    for name, a, b in zip(["out", "h", "c", "gates", "cs"], got, want):
        assert not a.isnan().any(), name
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("form, kw", [("batched", {}), ("packed_unsorted", {}),
                                      ("batched", {"bidirectional": True, "num_layers": 2}),
                                      ("batched", {"batch_first": True, "bias": False})])
def test_layers_through_gate_panels_match_torch(dtype, form, kw, monkeypatch, tune):
    # Every LSTM forward on the gate-panel loop (no fused projection), trained against torch.nn.
    tune(numba_strategy="loop", fuse_projection=False, gate_panels_max_rows=1 << 20)
    taken = []
    real = launch.LSTM_FORWARD["panels"]
    monkeypatch.setitem(launch.LSTM_FORWARD, "panels", lambda *a: taken.append(1) or real(*a))
    check_parity("lstm", "numba", dtype, 12, 32, 6, 3, form=form, **kw)
    assert taken


def panels(T, B, H, proj=False):
    """Whether a float32 LSTM layer's forward (no fused projection) takes the gate panels."""
    return plan.forward("lstm", T, B, H, H // 2 if proj else H).route == "panels"


def test_rule_takes_few_rows_per_thread_of_whole_vectors(cpu_family, monkeypatch):
    L = lanes(np.float32)
    if cpu_family == cpu.INTEL:     # not measured there
        assert not panels(100, 1, 64)
        return
    monkeypatch.setattr(team, "threads", lambda: 2)
    assert panels(100, 1, 64)
    assert panels(100, 3, L)
    assert not panels(100, 1, 64, proj=True)    # projected h
    assert not panels(100, 1, 33)           # H not whole vectors
    assert not panels(10, 4, 64)            # 4 rows in one thread
    assert panels(100, 6, 128)              # 3 rows per thread
    assert not panels(100, 8, 128)          # 4 rows per thread
    line = launch.explain("lstm", 100, 1, 64, I=64)
    assert "registers" in line and "registers" not in launch.explain("lstm", 100, 1, 64, P=32)
