"""`auto` hands float32 CPU LSTM inference to torch's fused LSTM where that measured faster
(fastrnn/native.py), and only there."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import backends, native

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason="this torch build has no oneDNN")


@pytest.fixture
def handoffs(monkeypatch):
    """Counts the calls native.lstm receives (they still run torch's LSTM)."""
    calls = []
    real = native.lstm

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(native, "lstm", spy)
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    return calls


def _pair(H, **kwargs):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(H, H, **kwargs).eval()
    ours = fastrnn.LSTM(H, H, **kwargs).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@needs_onednn
@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=2, bidirectional=True, batch_first=True)])
def test_auto_runs_torch_lstm_where_it_is_faster(handoffs, kwargs):
    ref, ours = _pair(128, **kwargs)
    x = torch.randn(5, 3, 128)
    with torch.no_grad():
        got, (h, c) = ours(x)
        want, (h_ref, c_ref) = ref(x)
    assert len(handoffs) == 1
    # Bitwise: it is torch's own computation, the state included.
    assert torch.equal(got, want) and torch.equal(h, h_ref) and torch.equal(c, c_ref)


@needs_onednn
def test_size_rule_matches_the_measured_crossover():
    assert native._faster(1, 128) and native._faster(64, 512)
    assert native._faster(16, 64) and not native._faster(8, 64)
    assert not native._faster(4, 1024)      # per-step GEMM strategy: fastrnn measured faster


def _no_handoff(handoffs, ref, ours, x, grad=False, **call):
    with torch.set_grad_enabled(grad):
        got = ours(x, **call)[0]
        want = ref(x, **call)[0]
    assert handoffs == []
    if isinstance(got, torch.nn.utils.rnn.PackedSequence):
        got, want = got.data, want.data
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@needs_onednn
def test_explicit_backend_and_environment_keep_fastrnn(handoffs, monkeypatch):
    ref, ours = _pair(128)
    x = torch.randn(4, 2, 128)
    ours.backend = "numba"
    _no_handoff(handoffs, ref, ours, x)
    ours.backend = "auto"
    monkeypatch.setenv(backends.ENV_VAR, "numba")
    _no_handoff(handoffs, ref, ours, x)


@needs_onednn
def test_training_keeps_fastrnn(handoffs):
    ref, ours = _pair(128)
    ref.train(), ours.train()
    _no_handoff(handoffs, ref, ours, torch.randn(4, 2, 128), grad=True)


@needs_onednn
def test_dropout_between_layers_keeps_fastrnn(handoffs):
    ref, ours = _pair(128, num_layers=2, dropout=0.5)
    ours.train()
    with torch.no_grad():
        ours(torch.randn(4, 2, 128))
    assert handoffs == []


@needs_onednn
def test_shapes_torch_does_not_fuse_keep_fastrnn(handoffs):
    # Projection, packed input, float64, and a size where fastrnn measured faster.
    torch.manual_seed(0)
    ref = torch.nn.LSTM(128, 128, proj_size=32).eval()
    ours = fastrnn.LSTM(128, 128, proj_size=32).eval()
    ours.load_state_dict(ref.state_dict())
    _no_handoff(handoffs, ref, ours, torch.randn(4, 2, 128))

    ref, ours = _pair(128)
    packed = pack_padded_sequence(torch.randn(4, 3, 128), torch.tensor([4, 3, 1]))
    _no_handoff(handoffs, ref, ours, packed)

    _no_handoff(handoffs, ref.double(), ours.double(), torch.randn(4, 2, 128, dtype=torch.float64))

    ref, ours = _pair(64)
    _no_handoff(handoffs, ref, ours, torch.randn(4, 1, 64))


@needs_onednn
def test_onednn_disabled_keeps_fastrnn(handoffs):
    ref, ours = _pair(128)
    with torch.backends.mkldnn.flags(enabled=False):
        _no_handoff(handoffs, ref, ours, torch.randn(4, 2, 128))


@needs_onednn
def test_benchmark_names_the_handoff(monkeypatch):
    from types import SimpleNamespace

    from fastrnn.bench import providers
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    size = SimpleNamespace(T=10, B=4, H=128)
    line = providers.get("fastrnn-auto").strategy("lstm", size, torch.float32, "cpu")
    assert line.startswith("inference: torch's fused oneDNN LSTM") and "training: one compiled" in line
    assert "torch" not in providers.get("fastrnn-numba").strategy("lstm", size, torch.float32, "cpu")
    assert "torch" not in providers.get("fastrnn-auto").strategy("gru", size, torch.float32, "cpu")
