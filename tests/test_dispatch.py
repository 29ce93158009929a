"""fastrnn/dispatch.py: who runs a call. `auto` hands float32 CPU calls to torch's own LSTM/GRU/RNN
and cells (fastrnn/torch_backend.py) where that measured faster (kernels/tuning.py), and only
there; every CUDA call; a named backend runs what it can and says why not otherwise."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import dispatch, torch_backend
from fastrnn.kernels import tuning
from fastrnn.kernels.tuning import current

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason="this torch build has no oneDNN")


@pytest.fixture
def handoffs(monkeypatch):
    """Records the LSTM hand-offs at either level (they still run torch's LSTM): a module call
    to torch.nn's forward ("module"), a functional call to torch's LSTM ("functional")."""
    calls = []
    real_lstm, real_forward = torch_backend.stack, torch_backend.module_forward

    def functional_spy(*args):
        calls.append("functional")
        return real_lstm(*args)

    def module_spy(*args):
        calls.append("module")
        return real_forward(*args)

    monkeypatch.setattr(torch_backend, "stack", functional_spy)
    monkeypatch.setattr(torch_backend, "module_forward", module_spy)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    return calls


def _pair(H, **kwargs):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(H, H, **kwargs).eval()
    ours = fastrnn.LSTM(H, H, **kwargs).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _faster(B, H):
    """The LSTM inference bands (from lstm_short_steps steps) of the record in force."""
    return dispatch._lstm_faster_in_torch(current(), False, 100, B, H)


def _faster_training(B, H):
    return dispatch._lstm_faster_in_torch(current(), True, 100, B, H)


@needs_onednn
@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=2, bidirectional=True, batch_first=True)])
def test_auto_runs_torch_lstm_where_it_is_faster(handoffs, kwargs):
    ref, ours = _pair(256, **kwargs)
    x = torch.randn(3, 3, 256)          # 3 steps of 3 rows of H = 256, batch_first or not
    with torch.no_grad():
        got, (h, c) = ours(x)
        flat = fastrnn.functional.lstm(x, None, ours._flat_weights, num_layers=ours.num_layers,
                                       bidirectional=ours.bidirectional,
                                       batch_first=ours.batch_first)
        want, (h_ref, c_ref) = ref(x)
    assert handoffs == ["module", "functional"]
    # Bitwise: it is torch's own computation, the state included.
    assert torch.equal(got, want) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    assert (torch.equal(flat[0], want) and torch.equal(flat[1], h_ref)
            and torch.equal(flat[2], c_ref))


@needs_onednn
def test_size_rule_matches_the_measured_crossover(cpu_family):
    if cpu_family == "amd":     # benchmarks/results/cpu-native-lstm-2026-12-07-zen4.md
        assert _faster(2, 128) and _faster(2, 100)      # 100 units take the 128 bucket
        assert not _faster(1, 128) and not _faster(4, 128) and not _faster(8, 128)
        assert not _faster(2, 256) and not _faster(4, 256) and not _faster(8, 256)
        assert not _faster(2, 64) and not _faster(8, 512) and not _faster(32, 512)
        assert not _faster(32, 1024)
    else:                       # benchmarks/results/cpu-native-lstm-2026-11-26-xeon.md
        assert not _faster(1, 128) and not _faster(64, 128)
        assert _faster(16, 256) and not _faster(8, 256) and not _faster(32, 256)
        assert _faster(64, 512) and not _faster(32, 512) and not _faster(16, 512)
        assert _faster(32, 1024) and _faster(64, 700)
        assert not _faster(16, 1024)
    assert not _faster(16, 64) and not _faster(1, 64)
    assert not _faster(8, 1024) and not _faster(64, 1025)


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
    monkeypatch.setenv(dispatch.ENV_VAR, "numba")
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
    # benchmarks/results/cpu-short-lstm-2026-12-07-zen4.md: below 32 steps a table per batch
    # and hidden-size bucket, from 32 steps the T = 100 bands (of either family).
    def faster(training, T, B, H):
        return dispatch._lstm_faster_in_torch(current(), training, T, B, H)

    assert current().lstm_short_steps == 32
    assert faster(False, 4, 16, 128) and not faster(False, 32, 16, 128)
    assert faster(False, 8, 1, 256) and not faster(False, 8, 1, 128)
    assert not faster(False, 8, 4, 64) and not faster(False, 8, 16, 64)
    assert faster(False, 8, 64, 64) and not faster(False, 40, 64, 64)
    assert faster(False, 8, 4, 256) and not faster(False, 40, 4, 256)
    assert not faster(False, 8, 16, 512) and not faster(False, 8, 4, 128)
    assert not faster(True, 8, 8, 256) and faster(True, 40, 8, 256) == _faster_training(8, 256)
    assert faster(True, 2, 64, 128) and not faster(True, 100, 64, 128)
    assert not faster(False, 8, 100, 128)               # beyond 64 rows: the T = 100 bands
    assert not faster(False, 8, 1, 1024)


@needs_onednn
def test_training_size_rule_matches_the_measured_crossover(cpu_family):
    # cpu-native-lstm-2026-12-07-zen4.md (AMD), cpu-native-lstm-2026-11-26-xeon.md (Intel): no
    # training band held by more than the runs' spread, so fastrnn keeps every LSTM training
    # call from 32 steps on either family.
    sizes = [(B, H) for B in (1, 2, 4, 8, 16, 32, 64) for H in (64, 100, 128, 200, 256, 512, 1024)]
    assert not any(_faster_training(B, H) for B, H in sizes)


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
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    auto, numba = providers.get("fastrnn-auto"), providers.get("fastrnn-numba")
    size = SimpleNamespace(T=10, B=16, I=128, H=128)
    line = auto.strategy("lstm", size, torch.float32, "cpu")
    # Inference and training both torch's fused oneDNN LSTM (the new line names each mode).
    assert line.startswith("inference: torch's own (oneDNN's fused LSTM): inference: torch's "
                           "fused oneDNN LSTM")
    assert ("; training: torch's own (oneDNN's fused LSTM): training: torch's fused oneDNN LSTM"
            in line)
    B, H = (2, 128) if cpu_family == "amd" else (64, 512)      # torch's in inference only
    line = auto.strategy("lstm", SimpleNamespace(T=100, B=B, I=H, H=H), torch.float32, "cpu")
    assert line.startswith("inference: torch's own (oneDNN's fused LSTM): inference: torch's "
                           "fused oneDNN LSTM")
    assert "training: torch" not in line and "; training: one compiled" in line
    line = auto.strategy("lstm", SimpleNamespace(T=100, B=64, I=128, H=128), torch.float32, "cpu")
    assert "torch" not in line
    assert "torch" not in numba.strategy("lstm", size, torch.float32, "cpu")
    assert "torch" not in auto.strategy("gru", size, torch.float32, "cpu")


@needs_onednn
def test_benchmark_handoff_line_names_the_fallback(monkeypatch):
    from types import SimpleNamespace

    from fastrnn.bench import providers
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    size = SimpleNamespace(T=10, B=4, I=128, H=128)
    line = providers.get("fastrnn-auto").strategy("lstm", size, torch.float32, "cpu")
    assert "otherwise: one compiled" in line


# ----------------------------------------------------------------------------------- cells


def _spy_on(monkeypatch, name):
    """Records the first argument each call to torch_backend.<name> gets (a cell's or a stack's
    kind; module_forward's module); the call still runs torch's own."""
    calls = []
    real = getattr(torch_backend, name)

    def spy(kind, *args):
        calls.append(kind)
        return real(kind, *args)

    monkeypatch.setattr(torch_backend, name, spy)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
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
    def faster(B, weight_bytes):
        return dispatch._cell_faster_in_torch(current(), B, weight_bytes)

    assert faster(256, 4 * 64 * 64 * 4)         # LSTM H = 64
    assert faster(16, 4 * 256 * 256 * 4)        # LSTM H = 256, 16 rows
    assert not faster(64, 4 * 256 * 256 * 4)    # ... 64 rows
    assert faster(256, 3 * 256 * 256 * 4)       # GRU H = 256
    assert not faster(1, 1024 * 1024 * 4)       # RNN H = 1024


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
    monkeypatch.setenv(dispatch.ENV_VAR, "numba")
    with torch.no_grad():
        ours(x, hx)
    monkeypatch.delenv(dispatch.ENV_VAR)
    with torch.no_grad():
        ours.double()(x.double(), hx.double())          # measured for float32 only
    assert cell_handoffs == []


@pytest.fixture
def stack_handoffs(monkeypatch):
    """Hand-offs at either level: a module call to torch.nn's forward
    (torch_backend.module_forward), a functional call to torch's GRU/RNN (torch_backend.stack)."""
    return {"module": _spy_on(monkeypatch, "module_forward"),
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
    H = 256 if (name, grad) == ("GRU", True) else 64      # GRU training: torch's at 2 steps
    x = torch.randn(T, 1, H, requires_grad=grad)
    _check_both_levels(stack_handoffs, name, dict(num_layers=2), x, grad)


def test_few_steps_rule_matches_the_measured_crossover():
    # benchmarks/results/cpu-short-sequences-2026-12-07-zen4.md
    def faster(kind, training, T, B, H):
        return dispatch._few_steps_faster_in_torch(current(), kind, training, T, B, H)

    assert faster("gru", False, 6, 1, 64) and not faster("gru", False, 7, 1, 64)
    assert faster("gru", False, 8, 1, 256) and not faster("gru", False, 3, 64, 512)
    assert faster("rnn", False, 8, 1, 512) and not faster("rnn", False, 12, 1, 64)
    assert not faster("gru", True, 2, 4, 128) and not faster("gru", True, 2, 16, 256)
    assert faster("gru", True, 2, 1, 128) and not faster("gru", True, 3, 1, 128)
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
        monkeypatch.setenv(dispatch.ENV_VAR, "numba")
        ours(torch.randn(2, 3, 32))                          # the environment names one
        monkeypatch.delenv(dispatch.ENV_VAR)
    lstm = fastrnn.LSTM(32, 32)
    lstm(torch.randn(2, 3, 32, requires_grad=True))[0].sum().backward()   # LSTM rule instead
    assert stack_handoffs == {"module": [], "functional": []}


# ------------------------------------------------------------------------------ CUDA
# The calls themselves run in tests/test_triton_gpu.py (on a GPU); here, the rule.

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _call(kind="gru", backend="auto", device="cpu", T=100, B=8, H=256, grad=False, cell=False):
    """A float32 Call of T steps of B rows of hidden size H."""
    return dispatch.Call(kind, backend, torch.device(device), torch.float32, T, B, H,
                         _GATES[kind] * H * H * 4, grad, cell)


@pytest.fixture
def triton_on_cuda(monkeypatch):
    """The triton backend says it runs CUDA tensors, as on a machine with a GPU (so the rule
    can be checked on any machine)."""
    monkeypatch.setattr(dispatch.get("triton"), "supports", lambda device, dtype: True)


def test_auto_hands_every_cuda_call_to_torch(monkeypatch, triton_on_cuda):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    for kind in ("lstm", "gru", "rnn"):
        assert dispatch.choose(_call(kind, device="cuda")).name == "torch"
        # the CUDA rule is CUDA's only (H = 64: fastrnn's on CPU)
        assert "cuDNN" not in (dispatch.torch_measured_faster(_call(kind, device="cpu")) or "")
        assert dispatch.choose(_call(kind, device="cpu", H=64)).name != "torch"
        # an explicit backend is obeyed
        assert dispatch.choose(_call(kind, "triton", device="cuda")).name == "triton"
    # a single step (a cell)
    assert dispatch.choose(_call("lstm", device="cuda", T=1, B=3, H=64, cell=True)).name == "torch"
    assert dispatch.choose(_call("lstm", "triton", device="cuda", T=1, B=3, H=64,
                                 cell=True)).name == "triton"
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")          # and so is FASTRNN_BACKEND
    assert dispatch.choose(_call("lstm", device="cuda")).name == "triton"
    assert dispatch.choose(_call("lstm", device="cuda", T=1, B=3, H=64, cell=True)).name == "triton"


def test_explain_names_cudnn_on_cuda_only(monkeypatch, triton_on_cuda):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert "cuDNN" in dispatch.torch_measured_faster(_call("gru", device="cuda"))
    assert "cuDNN" in dispatch.choose(_call("gru", device="cuda")).reason
    assert dispatch.torch_measured_faster(_call("gru", device="cpu")) is None
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    choice = dispatch.choose(_call("gru", device="cuda"))
    assert choice.name == "triton" and "cuDNN" not in choice.reason


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(vendor, generation=None): kernels/cpu.py reads that vendor_id (and, when given,
    that "cpu family") from /proc/cpuinfo for the rest of the test; its cached answers are
    cleared before and after. Returns the cpu module."""
    from fastrnn.kernels import cpu

    def fake(vendor, generation=None):
        monkeypatch.setattr(cpu, "_vendor_id", lambda: vendor)
        if generation is not None:
            monkeypatch.setattr(cpu, "cpuinfo",
                                lambda field: {"cpu family": generation}.get(field, ""))
        cpu.family.cache_clear()
        cpu.gemm_family.cache_clear()
        return cpu

    yield fake
    cpu.family.cache_clear()
    cpu.gemm_family.cache_clear()


@pytest.mark.parametrize("vendor,family", [("AuthenticAMD", "amd"), ("HygonGenuine", "amd"),
                                           ("GenuineIntel", "intel"), ("", "intel"),
                                           ("CentaurHauls", "intel")])
def test_cpu_family_from_the_vendor(fake_cpu, vendor, family):
    # The tables the size rules take (kernels/cpu.py): AMD's for AMD and Hygon, the Intel ones
    # for every other vendor and when /proc/cpuinfo says nothing.
    cpu = fake_cpu(vendor)
    assert cpu.family() == family


@pytest.mark.parametrize("vendor,generation,family", [
    ("AuthenticAMD", "25", "amd"), ("AuthenticAMD", "26", "zen5"), ("AuthenticAMD", "27", "zen5"),
    ("AuthenticAMD", "", "amd"), ("HygonGenuine", "24", "amd"), ("GenuineIntel", "6", "intel"),
    ("GenuineIntel", "26", "intel")])
def test_gemm_family_from_the_amd_generation(fake_cpu, vendor, generation, family):
    # The oneDNN-against-MKL rules (kernels/gemm.py): Zen 5's for AMD CPU family 26 and later,
    # the Zen 4 ones for earlier AMD CPUs and when the family cannot be read; Intel's for Intel.
    cpu = fake_cpu(vendor, generation)
    assert cpu.gemm_family() == family


@pytest.mark.parametrize("vendor,generation,record", [
    ("AuthenticAMD", "25", "zen4"), ("AuthenticAMD", "26", "zen5"), ("AuthenticAMD", "27", "zen5"),
    ("AuthenticAMD", "", "zen4"), ("HygonGenuine", "24", "zen4"), ("GenuineIntel", "6", "intel"),
    ("GenuineIntel", "26", "intel"), ("CentaurHauls", "7", "intel"), ("", "", "intel")])
def test_tuning_record_follows_the_gemm_family(fake_cpu, vendor, generation, record):
    # kernels/tuning.py: the Zen 4 record for AMD before Zen 5, Zen 5's from CPU family 26, the
    # Intel one for every other vendor.
    fake_cpu(vendor, generation)
    assert tuning.for_machine() is tuning.FAMILIES[record]
    assert tuning.for_machine().family == record


# ------------------------------------------------------------- what the dispatcher adds


def _gru_pair(H, **kwargs):
    torch.manual_seed(0)
    ref = torch.nn.GRU(H, H, **kwargs).eval()
    ours = fastrnn.GRU(H, H, **kwargs).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _assert_torch_runs_it(stack_handoffs, cell_handoffs, backend):
    """backend torch: an LSTM (where auto keeps fastrnn), a GRU (beyond the few steps) and a
    cell (1 MiB weight, 64 rows: fastrnn's in auto) all run torch's own, bitwise."""
    ref, ours = _pair(64, num_layers=2)                      # T = 4, one row of H = 64
    ours.backend = backend
    x = torch.randn(4, 1, 64)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert torch.equal(got[0], want[0])
    assert all(torch.equal(a, b) for a, b in zip(got[1], want[1]))
    ref.train(), ours.train()                                # and its training, gradients too
    xg = torch.randn(40, 4, 64, requires_grad=True)
    grads = []
    for model in (ours, ref):
        out, (h, c) = model(xg)
        (out.sum() + h.sum() + c.sum()).backward()
        grads.append([xg.grad.clone()] + [p.grad.clone() for p in model.parameters()])
        xg.grad = None
    assert all(torch.equal(a, b) for a, b in zip(*grads))

    ref, ours = _gru_pair(32, bidirectional=True)
    ours.backend = backend
    x = torch.randn(16, 3, 32)                               # sixteen steps
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert len(stack_handoffs["module"]) == 3 and stack_handoffs["functional"] == []

    ref, ours = _cell_pair("LSTMCell", 256)
    ours.backend = backend
    x, hx = _cell_args("LSTMCell", 64, 256)
    with torch.no_grad():
        got, want = _flat(ours(x, hx)), _flat(ref(x, hx))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert cell_handoffs == ["lstm"]


def _all_handoffs(monkeypatch):
    return ({"module": _spy_on(monkeypatch, "module_forward"),
             "functional": _spy_on(monkeypatch, "stack")}, _spy_on(monkeypatch, "cell"))


def test_backend_torch_runs_torchs_own(monkeypatch):
    _assert_torch_runs_it(*_all_handoffs(monkeypatch), "torch")


def test_environment_torch_runs_torchs_own(monkeypatch):
    stacks, cells = _all_handoffs(monkeypatch)
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    _assert_torch_runs_it(stacks, cells, "auto")


def test_backend_torch_at_the_functional_level(monkeypatch):
    stacks, cells = _all_handoffs(monkeypatch)
    ref, ours = _gru_pair(32)
    x = torch.randn(16, 3, 32)
    with torch.no_grad():
        got = fastrnn.functional.gru(x, None, ours._flat_weights, backend="torch")
        want = ref(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert stacks == {"module": [], "functional": ["gru"]}
    ref, ours = _cell_pair("GRUCell", 1024)                  # 12 MiB: fastrnn's in auto
    x, hx = _cell_args("GRUCell", 2, 1024)
    with torch.no_grad():
        got = fastrnn.functional.gru_cell(x, hx, ours.weight_ih, ours.weight_hh, ours.bias_ih,
                                          ours.bias_hh, backend="torch")
        assert torch.equal(got, ref(x, hx))
    assert cells == ["gru"]


def test_unknown_backend_is_a_value_error(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    names = "auto, torch, numba, triton, reference"
    with pytest.raises(ValueError, match=names):
        fastrnn.LSTM(8, 8, backend="cudnn")
    with pytest.raises(ValueError, match=names):
        fastrnn.GRUCell(8, 8, backend="cudnn")
    with pytest.raises(ValueError, match=names):
        fastrnn.functional.gru(torch.randn(2, 1, 8), None, fastrnn.GRU(8, 8)._flat_weights,
                               backend="cudnn")
    with pytest.raises(ValueError, match=names):
        dispatch.check_name("cudnn")
    monkeypatch.setenv(dispatch.ENV_VAR, "cudnn")           # the environment's name too
    with pytest.raises(ValueError, match=names):
        fastrnn.GRU(8, 8)(torch.randn(2, 1, 8))


def test_named_backend_that_cannot_run_the_call_says_which_can(monkeypatch):
    # float64: the triton backend runs float32, float16 and bfloat16 only (on any machine).
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    gru = fastrnn.GRU(8, 8, backend="triton").double()
    x = torch.randn(2, 1, 8, dtype=torch.float64)
    for call in (lambda: gru(x), lambda: gru(x[:, 0]),
                 lambda: fastrnn.functional.gru(x, None, gru._flat_weights, backend="triton"),
                 lambda: fastrnn.GRUCell(8, 8, backend="triton").double()(x[0])):
        with pytest.raises(RuntimeError) as info:
            call()
        message = str(info.value)
        assert "'triton'" in message and "torch.float64" in message
        assert "Backends that can: torch, numba, reference." in message
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")           # named by the environment
    with pytest.raises(RuntimeError, match="Backends that can: torch, numba, reference"):
        fastrnn.GRU(8, 8).double()(x)


def test_explain_names_each_layer_and_direction(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    lstm = fastrnn.LSTM(64, 64, num_layers=2, bidirectional=True).eval()
    x = torch.randn(50, 2, 64)                               # H = 64: fastrnn's at any batch
    with torch.no_grad():
        explanation = fastrnn.explain(lstm, x)
    assert explanation.backend == "numba"
    assert [line.split(":")[0] for line in explanation.layers] == [
        "layer 0", "layer 0 reverse", "layer 1", "layer 1 reverse"]
    text = str(explanation)
    assert text.splitlines()[0] == f"numba: {explanation.reason}"
    assert len(text.splitlines()) == 5 and "one compiled loop over 50 steps" in text
    lstm.backend = "reference"
    with torch.no_grad():
        explanation = fastrnn.explain(lstm, x)
    assert explanation.backend == "reference" and len(explanation.layers) == 4
    assert "backend='reference'" in explanation.reason


@needs_onednn
def test_explain_names_the_handoff(monkeypatch, cpu_family):
    # What native.explain said as a line: the mode (inference, training) and oneDNN's LSTM.
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    lstm = fastrnn.LSTM(128, 128, num_layers=2, bidirectional=True)
    x = torch.randn(10, 16, 128)
    with torch.no_grad():
        explanation = fastrnn.explain(lstm, x)
    assert explanation.backend == "torch"
    assert explanation.reason.startswith("inference: torch's fused oneDNN LSTM measured faster")
    assert "lstm_short_torch" in explanation.reason
    assert explanation.layers == ["layer 0: oneDNN's fused LSTM", "layer 0 reverse: oneDNN's "
                                  "fused LSTM", "layer 1: oneDNN's fused LSTM",
                                  "layer 1 reverse: oneDNN's fused LSTM"]
    explanation = fastrnn.explain(lstm, x)                   # grad enabled: training
    assert explanation.backend == "torch" and explanation.reason.startswith("training: ")
    B, H = (2, 128) if cpu_family == "amd" else (64, 512)    # torch's in inference only
    lstm = fastrnn.LSTM(H, H)
    x = torch.randn(100, B, H)
    with torch.no_grad():
        reason = fastrnn.explain(lstm, x).reason
    assert reason == ("inference: torch's fused oneDNN LSTM measured faster here "
                      "(tuning: lstm_torch_inference)")
    assert fastrnn.explain(lstm, x).backend == "numba"
    assert fastrnn.explain(fastrnn.GRU(128, 128), torch.randn(10, 4, 128)).backend == "numba"
    assert "cuDNN" not in dispatch.choose(_call("lstm", T=10, B=16, H=128)).reason
    assert "oneDNN" in dispatch.torch_measured_faster(_call("lstm", T=10, B=16, H=128))


def test_explain_on_a_cell(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    cell = fastrnn.LSTMCell(64, 64)
    explanation = fastrnn.explain(cell, torch.randn(3, 64))    # the step path, with autograd
    assert explanation.backend == "numba" and explanation.reason.startswith("the step path")
    assert explanation.layers == ["one compiled step per layer and direction (under autograd, "
                                  "as ops' step Functions)"]
    explanation = fastrnn.explain(cell, torch.randn(64))        # one row: torch measured faster
    assert explanation.backend == "torch" and "step_grad_torch" in explanation.reason
    assert str(explanation) == f"torch: {explanation.reason}\n  torch.nn.LSTMCell's step"
    with torch.no_grad():
        explanation = fastrnn.explain(cell, torch.randn(64))      # unbatched
    assert explanation.backend == "numba" and explanation.reason.startswith("the step path")
    assert explanation.layers == ["one compiled step per layer and direction (in this thread)"]
    big = fastrnn.GRUCell(1024, 1024)                        # 12 MiB: fastrnn's step
    with torch.no_grad():
        explanation = fastrnn.explain(big, torch.randn(2, 1024))
    assert explanation.backend == "numba" and len(explanation.layers) == 1
    assert explanation.layers[0].startswith("layer 0: per step: one GEMM")


@pytest.fixture
def chooses(monkeypatch):
    """Records every dispatch.choose() call (by the Choice's backend name)."""
    calls = []
    real = dispatch.choose

    def spy(call):
        choice = real(call)
        calls.append(choice.name)
        return choice

    monkeypatch.setattr(dispatch, "choose", spy)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    return calls


@needs_onednn
def test_each_call_dispatches_once(chooses):
    lstm = fastrnn.LSTM(256, 256).eval()
    gru = fastrnn.GRU(32, 32).eval()
    with torch.no_grad():
        lstm(torch.randn(3, 3, 256))                         # batched, handed to torch
        assert chooses == ["torch"]
        gru(torch.randn(16, 3, 32))                          # batched, fastrnn's
        assert chooses == ["torch", "numba"]
        del chooses[:]
        lstm(torch.randn(3, 256))                            # unbatched
        assert chooses == ["torch"]
        gru(torch.randn(16, 32))
        assert chooses == ["torch", "numba"]
        del chooses[:]
        gru(pack_padded_sequence(torch.randn(2, 3, 32), torch.tensor([2, 2, 1])))   # packed
        assert chooses == ["numba"]
        del chooses[:]
        fastrnn.functional.lstm(torch.randn(3, 3, 256), None, lstm._flat_weights)
        assert chooses == ["torch"]
        fastrnn.functional.gru(torch.randn(16, 3, 32), None, gru._flat_weights)
        assert chooses == ["torch", "numba"]
        del chooses[:]
        # A one-step call: the general path's choice, then once its step plan's (the step
        # path, fastrnn/step_path.py); the plan's later calls ask nothing.
        cell, x = fastrnn.LSTMCell(64, 64), torch.randn(3, 64)
        cell(x)
        assert chooses == ["torch", "numba"]
        cell(x)
        assert chooses == ["torch", "numba"]
        del chooses[:]
        fastrnn.GRUCell(1024, 1024)(torch.randn(2, 1024))   # beyond the step path's sizes
        assert chooses == ["numba"]
        del chooses[:]
        fastrnn.RNNCell(64, 64)(torch.randn(64))             # unbatched cell
        assert chooses == ["torch", "numba"]
        del chooses[:]
        gru(torch.randn(1, 3, 32))                           # a module at seq_len 1
        gru(torch.randn(1, 3, 32))
        assert chooses == ["torch", "numba"]


def test_dispatch_reads_the_tuning_in_force(tune):
    # Changing a rule's record changes auto's choice (no table is copied at import).
    call = _call("lstm", T=100, B=2, H=128)
    assert dispatch.choose(call).name == ("torch" if _faster(2, 128) else "numba")
    tune(lstm_torch_inference=((128, 1, 4),))
    assert dispatch.choose(call).name == "torch"
    tune(lstm_torch_inference=())
    assert dispatch.choose(call).name == "numba"
    assert dispatch.choose(_call("gru", T=4, B=1, H=64)).name == "torch"
    tune(few_steps_torch_max=tuple((key, ((0,) * 4,) * 4) for key, _ in
                                   current().few_steps_torch_max))
    assert dispatch.choose(_call("gru", T=4, B=1, H=64)).name == "numba"
    assert dispatch.choose(_call("gru", T=1, B=3, H=64, cell=True)).name == "torch"
    tune(cell_min_weight_bytes=1)
    assert dispatch.choose(_call("gru", T=1, B=3, H=64, cell=True)).name == "numba"


def test_tuning_rejects_unknown_and_compiled_fields():
    before = current()
    with pytest.raises(TypeError, match="no_such_rule"):
        with tuning.tuning(no_such_rule=1):
            pass
    assert current() is before
    value = (before.product_k_block_bytes or 0) + 1024
    with pytest.raises(ValueError, match="product_k_block_bytes"):
        with tuning.tuning(product_k_block_bytes=value):
            pass
    assert current() is before


def test_tuning_restores_the_record_on_exit():
    before = current()
    with tuning.tuning(split_min_macs=7) as record:
        assert current() is record and record.split_min_macs == 7
        with tuning.tuning("intel", fuse_min_rows=3):
            assert current().family == "intel" and current().fuse_min_rows == 3
            assert current().split_min_macs == tuning.INTEL.split_min_macs
        assert current() is record
    assert current() is before
    with pytest.raises(RuntimeError, match="inside"):
        with tuning.tuning(split_min_macs=7):
            raise RuntimeError("inside")
    assert current() is before


def test_unknown_backend_is_a_value_error_under_capture(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    gru = fastrnn.GRU(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(ValueError, match="auto, torch, numba, triton, reference"):
            fastrnn.functional.gru(torch.randn(2, 1, 8), None, gru._flat_weights, backend="cudnn")
