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
    """Records the LSTM hand-offs at either level (they still run torch's LSTM): a module call
    to torch.nn's forward ("module"), a functional call to torch's LSTM ("functional")."""
    calls = []
    real_lstm, real_forward = native.stack, native.torch_forward

    def functional_spy(*args):
        calls.append("functional")
        return real_lstm(*args)

    def module_spy(*args):
        calls.append("module")
        return real_forward(*args)

    monkeypatch.setattr(native, "stack", functional_spy)
    monkeypatch.setattr(native, "torch_forward", module_spy)
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
    x = torch.randn(3, 3, 128)          # 3 rows of H = 128, batch_first or not
    with torch.no_grad():
        got, (h, c) = ours(x)
        flat = fastrnn.functional.lstm(x, None, ours._flat_weights, num_layers=ours.num_layers,
                                       bidirectional=ours.bidirectional,
                                       batch_first=ours.batch_first)
        want, (h_ref, c_ref) = ref(x)
    assert handoffs == ["module", "functional"]
    # Bitwise: it is torch's own computation, the state included.
    assert torch.equal(got, want) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    assert torch.equal(flat[0], want) and torch.equal(flat[1], h_ref) and torch.equal(flat[2], c_ref)


@needs_onednn
def test_size_rule_matches_the_measured_crossover(cpu_family):
    if cpu_family == "amd":     # benchmarks/results/cpu-native-lstm-2026-11-26.md
        assert native._faster(1, 128) and native._faster(4, 128) and not native._faster(8, 128)
        assert native._faster(4, 256) and native._faster(8, 256) and not native._faster(2, 256)
        assert native._faster(32, 512) and not native._faster(64, 512)
        assert not native._faster(32, 1024)
    else:                       # benchmarks/results/cpu-native-lstm-2026-11-26-xeon.md
        assert not native._faster(1, 128) and not native._faster(64, 128)
        assert native._faster(8, 256) and native._faster(64, 256) and not native._faster(4, 256)
        assert native._faster(32, 512) and not native._faster(16, 512)
        assert native._faster(32, 1024) and native._faster(64, 700)
        assert not native._faster(16, 1024)
    assert not native._faster(16, 64) and not native._faster(1, 64)
    assert not native._faster(8, 1024) and not native._faster(64, 1025)


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
def test_training_runs_torch_lstm_where_it_is_faster(handoffs):
    # Forward and backward are torch's own: outputs and every gradient bitwise equal.
    ref, ours = _pair(128, num_layers=2)
    ref.train(), ours.train()
    x = torch.randn(5, 8, 128, requires_grad=True)
    grads = []
    for model in (ours, ref):
        out, (h, c) = model(x)
        (out.sum() + h.sum() + c.sum()).backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in model.parameters()])
        x.grad = None
    assert handoffs == ["module"]
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@needs_onednn
def test_training_keeps_fastrnn_where_it_is_faster(handoffs):
    ref, ours = _pair(128)
    ref.train(), ours.train()
    _no_handoff(handoffs, ref, ours, torch.randn(32, 64, 128), grad=True)
    ref, ours = _pair(512)
    ref.train(), ours.train()
    _no_handoff(handoffs, ref, ours, torch.randn(3, 2, 512), grad=True)


@needs_onednn
def test_short_lstm_rule_matches_the_measured_crossover(cpu_family):
    # benchmarks/results/cpu-short-lstm-2026-11-26-zen4.md: below 32 steps a table per batch
    # and hidden-size bucket, from 32 steps the T = 100 bands (of either family).
    faster = native._lstm_faster_in_torch
    assert faster(False, 4, 16, 128) and not faster(False, 32, 16, 128)
    assert not faster(False, 8, 1, 256) and not faster(False, 8, 4, 64)
    assert faster(False, 8, 16, 64) and not faster(False, 40, 16, 64)
    assert not faster(True, 8, 8, 256) and faster(True, 40, 8, 256)
    assert faster(True, 2, 64, 128) and not faster(True, 100, 64, 128)
    assert not faster(False, 8, 100, 128)               # beyond 64 rows: the T = 100 bands
    assert not faster(False, 8, 1, 1024)


@needs_onednn
def test_training_size_rule_matches_the_measured_crossover(cpu_family):
    amd = cpu_family == "amd"
    assert native._faster_training(16, 64) == amd and not native._faster_training(8, 64)
    assert native._faster_training(32, 128) and not native._faster_training(64, 128)
    assert native._faster_training(16, 128) and native._faster_training(4, 128) == amd
    assert native._faster_training(1, 128) == amd
    assert native._faster_training(8, 256) and native._faster_training(16, 256)
    assert native._faster_training(4, 200) == amd and not native._faster_training(2, 256)
    assert not native._faster_training(16, 512) and not native._faster_training(32, 512)
    assert not native._faster_training(64, 512) and not native._faster_training(8, 1024)


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
def test_benchmark_names_the_handoff(monkeypatch, cpu_family):
    from types import SimpleNamespace

    from fastrnn.bench import providers
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    size = SimpleNamespace(T=10, B=4, I=128, H=128)
    line = providers.get("fastrnn-auto").strategy("lstm", size, torch.float32, "cpu")
    assert line.startswith("inference and training: torch's fused oneDNN LSTM")
    assert "otherwise: one compiled" in line
    B = 32 if cpu_family == "amd" else 64      # torch's in inference only
    line = providers.get("fastrnn-auto").strategy("lstm", SimpleNamespace(T=100, B=B, I=512, H=512),
                                                  torch.float32, "cpu")
    assert line.startswith("inference: torch's fused oneDNN LSTM")
    line = providers.get("fastrnn-auto").strategy("lstm", SimpleNamespace(T=100, B=64, I=128, H=128),
                                                  torch.float32, "cpu")
    assert "torch" not in line
    assert "torch" not in providers.get("fastrnn-numba").strategy("lstm", size, torch.float32, "cpu")
    assert "torch" not in providers.get("fastrnn-auto").strategy("gru", size, torch.float32, "cpu")


# ----------------------------------------------------------------------------------- cells


def _spy_on(monkeypatch, name):
    """Records the kind each call to native.<name> gets (the call still runs torch's own)."""
    calls = []
    real = getattr(native, name)

    def spy(kind, *args):
        calls.append(kind)
        return real(kind, *args)

    monkeypatch.setattr(native, name, spy)
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    return calls


@pytest.fixture
def cell_handoffs(monkeypatch):
    return _spy_on(monkeypatch, "cell")


CELLS = [("LSTMCell", {}, "lstm"), ("GRUCell", {}, "gru"), ("RNNCell", {}, "rnn_tanh"),
         ("RNNCell", dict(nonlinearity="relu"), "rnn_relu")]


def _cell_pair(name, H, **kwargs):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(H, H, **kwargs)
    ours = getattr(fastrnn, name)(H, H, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _cell_args(name, B, H, grad=False):
    x = torch.randn(B, H, requires_grad=grad)
    h = torch.randn(B, H)
    return x, ((h, torch.randn(B, H)) if name == "LSTMCell" else h)


def _flat(result):
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("name,kwargs,kind", CELLS)
def test_auto_runs_torch_cells_for_small_inference(cell_handoffs, name, kwargs, kind):
    ref, ours = _cell_pair(name, 64, **kwargs)
    x, hx = _cell_args(name, 3, 64)
    with torch.no_grad():
        got, want = _flat(ours(x, hx)), _flat(ref(x, hx))
    assert cell_handoffs == [kind]
    assert all(torch.equal(a, b) for a, b in zip(got, want))     # torch's own computation


@pytest.mark.parametrize("name,kwargs,kind", CELLS)
def test_auto_runs_torch_cells_for_training(cell_handoffs, name, kwargs, kind):
    ref, ours = _cell_pair(name, 64, **kwargs)
    x, hx = _cell_args(name, 3, 64, grad=True)
    sum(o.sum() for o in _flat(ours(x, hx))).backward()
    got = [x.grad.clone()] + [p.grad for p in ours.parameters()]
    x.grad = None
    sum(o.sum() for o in _flat(ref(x, hx))).backward()
    want = [x.grad] + [p.grad for p in ref.parameters()]
    assert cell_handoffs == [kind]
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_cell_size_rule_matches_the_measured_crossover():
    # benchmarks/results/cpu-cells-2026-11-26-zen4.md: fastrnn's step won inference from a
    # 4 MiB recurrent weight (H = 1024), and from 1 MiB at 64 rows (LSTM H = 256).
    assert native._cell_faster_in_torch(256, 4 * 64 * 64 * 4)         # LSTM H = 64
    assert native._cell_faster_in_torch(16, 4 * 256 * 256 * 4)        # LSTM H = 256, 16 rows
    assert not native._cell_faster_in_torch(64, 4 * 256 * 256 * 4)    # ... 64 rows
    assert native._cell_faster_in_torch(256, 3 * 256 * 256 * 4)       # GRU H = 256
    assert not native._cell_faster_in_torch(1, 1024 * 1024 * 4)       # RNN H = 1024


def test_cells_keep_fastrnn_where_it_is_faster_or_asked_for(cell_handoffs, monkeypatch):
    ref, ours = _cell_pair("LSTMCell", 256)
    x, hx = _cell_args("LSTMCell", 64, 256)                  # 1 MiB weight, 64 rows
    with torch.no_grad():
        got, want = _flat(ours(x, hx)), _flat(ref(x, hx))
    assert cell_handoffs == []
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    ref, ours = _cell_pair("GRUCell", 64)
    x, hx = _cell_args("GRUCell", 3, 64)
    ours.backend = "numba"
    with torch.no_grad():
        ours(x, hx)
    ours.backend = "auto"
    monkeypatch.setenv(backends.ENV_VAR, "numba")
    with torch.no_grad():
        ours(x, hx)
    monkeypatch.delenv(backends.ENV_VAR)
    with torch.no_grad():
        ours.double()(x.double(), hx.double())          # measured for float32 only
    assert cell_handoffs == []


@pytest.fixture
def stack_handoffs(monkeypatch):
    """Hand-offs at either level: a module call to torch.nn's forward (native.torch_forward),
    a functional call to torch's GRU/RNN (native.stack)."""
    return {"module": _spy_on(monkeypatch, "torch_forward"),
            "functional": _spy_on(monkeypatch, "stack")}


def _check_both_levels(stack_handoffs, name, kwargs, x, grad):
    """The module call and the functional call on x both run torch's own computation."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(x.shape[-1], x.shape[-1], **kwargs)
    ours = getattr(fastrnn, name)(x.shape[-1], x.shape[-1], **kwargs)
    ours.load_state_dict(ref.state_dict())
    with torch.set_grad_enabled(grad):
        want = ref(x)
        got = ours(x)
        run = fastrnn.functional.gru if name == "GRU" else fastrnn.functional.rnn
        extra = {} if name == "GRU" else dict(nonlinearity=ours.nonlinearity)
        flat = run(x, None, ours._flat_weights, num_layers=ours.num_layers,
                   bidirectional=ours.bidirectional, batch_first=ours.batch_first,
                   training=ours.training, **extra)
    assert len(stack_handoffs["module"]) == 1 and len(stack_handoffs["functional"]) == 1
    # Bitwise: it is torch's own computation, the state included.
    for result in (got, flat):
        assert torch.equal(result[0], want[0]) and torch.equal(result[1], want[1])
    if grad:
        got[0].sum().backward()


@pytest.mark.parametrize("name,kwargs", [("GRU", {}), ("RNN", dict(nonlinearity="relu")),
                                         ("GRU", dict(num_layers=2, bidirectional=True,
                                                      batch_first=True))])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_auto_runs_torch_for_one_step_gru_and_rnn(stack_handoffs, name, kwargs, grad):
    shape = (3, 1, 32) if kwargs.get("batch_first") else (1, 3, 32)    # one step, 3 rows
    _check_both_levels(stack_handoffs, name, kwargs, torch.randn(shape, requires_grad=grad), grad)


@pytest.mark.parametrize("name,T,grad", [("GRU", 4, False), ("RNN", 8, False), ("RNN", 3, True),
                                         ("GRU", 2, True)])
def test_auto_runs_torch_for_short_gru_and_rnn_where_it_is_faster(stack_handoffs, name, T, grad):
    H = 256 if (name, grad) == ("GRU", True) else 64      # GRU training: torch won from H = 256
    x = torch.randn(T, 1, H, requires_grad=grad)
    _check_both_levels(stack_handoffs, name, dict(num_layers=2), x, grad)


def test_few_steps_rule_matches_the_measured_crossover():
    # benchmarks/results/cpu-short-sequences-2026-11-26-zen4.md
    faster = native._few_steps_faster_in_torch
    assert faster("gru", False, 4, 1, 64) and not faster("gru", False, 6, 1, 64)
    assert faster("gru", False, 8, 1, 256) and not faster("gru", False, 3, 64, 512)
    assert faster("rnn", False, 8, 1, 512) and not faster("rnn", False, 12, 1, 64)
    assert not faster("gru", True, 2, 4, 128) and faster("gru", True, 3, 16, 256)
    assert faster("rnn", True, 2, 64, 512) and not faster("rnn", True, 3, 64, 512)
    assert not faster("rnn", False, 2, 65, 64)            # beyond the measured batches
    assert not faster("gru", False, 2, 1, 1024)           # beyond the measured hidden sizes


def test_longer_sequences_and_lstm_keep_fastrnn(stack_handoffs, monkeypatch):
    torch.manual_seed(0)
    ref, ours = torch.nn.GRU(32, 32), fastrnn.GRU(32, 32)
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ours(torch.randn(16, 3, 32))                         # sixteen steps: fastrnn's loop
        ours.double()(torch.randn(2, 3, 32).double())        # measured for float32 only
        ours.float()
        packed = pack_padded_sequence(torch.randn(2, 3, 32), torch.tensor([2, 2, 1]))
        ours(packed)                                         # packed input stays fastrnn's
        ours.backend = "numba"
        ours(torch.randn(2, 3, 32))                          # an explicit backend
        ours.backend = "auto"
        monkeypatch.setenv(backends.ENV_VAR, "numba")
        ours(torch.randn(2, 3, 32))                          # the environment names one
        monkeypatch.delenv(backends.ENV_VAR)
    lstm = fastrnn.LSTM(32, 32)
    lstm(torch.randn(2, 3, 32, requires_grad=True))[0].sum().backward()   # LSTM rule instead
    assert stack_handoffs == {"module": [], "functional": []}


# ------------------------------------------------------------------------------ CUDA
# The calls themselves run in tests/test_triton_gpu.py (on a GPU); here, the rule.

class _OnDevice:
    def __init__(self, kind):
        self.device = torch.device(kind)


def test_auto_hands_every_cuda_call_to_torch(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    cuda, cpu = _OnDevice("cuda"), _OnDevice("cpu")
    assert native.takes_cuda("auto", cuda)
    assert not native.takes_cuda("auto", cpu)
    assert not native.takes_cuda("triton", cuda)            # an explicit backend is obeyed
    assert native._step_goes_to_torch("auto", cuda, [], None)
    assert not native._step_goes_to_torch("triton", cuda, [], None)
    monkeypatch.setenv(backends.ENV_VAR, "triton")          # and so is FASTRNN_BACKEND
    assert not native.takes_cuda("auto", cuda)
    assert not native._step_goes_to_torch("auto", cuda, [], None)


def test_explain_names_cudnn_on_cuda_only(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert "cuDNN" in native.explain("gru", 100, 8, 256, torch.float32, "cuda")
    assert native.explain("gru", 100, 8, 256, torch.float32, "cpu") is None
    monkeypatch.setenv(backends.ENV_VAR, "triton")
    assert native.explain("gru", 100, 8, 256, torch.float32, "cuda") is None


@pytest.mark.parametrize("vendor,family", [("AuthenticAMD", "amd"), ("HygonGenuine", "amd"),
                                           ("GenuineIntel", "intel"), ("", "intel"),
                                           ("CentaurHauls", "intel")])
def test_cpu_family_from_the_vendor(monkeypatch, vendor, family):
    # The tables the size rules take (kernels/cpu.py): AMD's for AMD and Hygon, the Intel ones
    # for every other vendor and when /proc/cpuinfo says nothing.
    from fastrnn.kernels import cpu
    monkeypatch.setattr(cpu, "_vendor_id", lambda: vendor)
    cpu.family.cache_clear()
    try:
        assert cpu.family() == family
    finally:
        cpu.family.cache_clear()


@pytest.mark.parametrize("vendor,generation,family", [
    ("AuthenticAMD", "25", "amd"), ("AuthenticAMD", "26", "zen5"), ("AuthenticAMD", "27", "zen5"),
    ("AuthenticAMD", "", "amd"), ("HygonGenuine", "24", "amd"), ("GenuineIntel", "6", "intel"),
    ("GenuineIntel", "26", "intel")])
def test_gemm_family_from_the_amd_generation(monkeypatch, vendor, generation, family):
    # The oneDNN-against-MKL rules (kernels/gemm.py): Zen 5's for AMD CPU family 26 and later,
    # the Zen 4 ones for earlier AMD CPUs and when the family cannot be read; Intel's for Intel.
    from fastrnn.kernels import cpu
    monkeypatch.setattr(cpu, "_vendor_id", lambda: vendor)
    monkeypatch.setattr(cpu, "cpuinfo", lambda field: {"cpu family": generation}.get(field, ""))
    cpu.family.cache_clear()
    cpu.gemm_family.cache_clear()
    try:
        assert cpu.gemm_family() == family
    finally:
        cpu.family.cache_clear()
        cpu.gemm_family.cache_clear()
