"""The drop-in contract: subclassing, constructor, parameters, state_dict both ways, copying,
pickling, dtype moves, repr, convert, and backend selection."""

import copy
import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastrnn
from fastrnn import dispatch


def _resolve(name, device=torch.device("cpu"),  # noqa: B008 - a device is immutable
             dtype=torch.float32):
    """The backend dispatch picks for a long GRU call (one auto never hands to torch)."""
    return dispatch.choose(dispatch.Call("gru", name, device, dtype, 100, 64, 64, 64 * 192 * 4,
                                         False)).name

PAIRS = [
    (fastrnn.LSTM, nn.LSTM, dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True,
                                 proj_size=3)),
    (fastrnn.GRU, nn.GRU, dict(input_size=4, hidden_size=6, num_layers=2, batch_first=True,
                               bias=False)),
    (fastrnn.RNN, nn.RNN, dict(input_size=4, hidden_size=6, nonlinearity="relu", dropout=0.25,
                               num_layers=2)),
    (fastrnn.LSTMCell, nn.LSTMCell, dict(input_size=4, hidden_size=6)),
    (fastrnn.GRUCell, nn.GRUCell, dict(input_size=4, hidden_size=6, bias=False)),
    (fastrnn.RNNCell, nn.RNNCell, dict(input_size=4, hidden_size=6, nonlinearity="relu")),
]
IDS = [p[1].__name__ for p in PAIRS]


def _out(module, x):
    out = module(x)
    if (isinstance(out, tuple) and isinstance(out[0], torch.Tensor)
            and not isinstance(module, nn.LSTMCell)):
        return out[0]
    return out[0] if isinstance(out, tuple) else out


def _input(module):
    if isinstance(module, nn.RNNCellBase):
        return torch.randn(3, 4)
    return torch.randn(3, 5, 4)


@pytest.mark.parametrize("fast_cls, torch_cls, kw", PAIRS, ids=IDS)
def test_subclass_params_and_repr(fast_cls, torch_cls, kw):
    fast, ref = fast_cls(**kw), torch_cls(**kw)
    assert isinstance(fast, torch_cls)
    assert ([(n, p.shape) for n, p in fast.named_parameters()]
            == [(n, p.shape) for n, p in ref.named_parameters()])
    assert repr(fast) == repr(ref)
    assert "backend='reference'" in repr(fast_cls(**kw, backend="reference"))


@pytest.mark.parametrize("fast_cls, torch_cls, kw", PAIRS, ids=IDS)
def test_state_dict_round_trip(fast_cls, torch_cls, kw):
    torch.manual_seed(0)
    ref, fast, back = torch_cls(**kw).eval(), fast_cls(**kw).eval(), torch_cls(**kw).eval()
    fast.load_state_dict(ref.state_dict())
    back.load_state_dict(fast.state_dict())
    x = _input(ref)
    for module in (fast, back):
        torch.testing.assert_close(_out(module, x), _out(ref, x), atol=3e-5, rtol=2e-4)
    for (n1, p1), (n2, p2) in zip(ref.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("fast_cls, torch_cls, kw", PAIRS, ids=IDS)
def test_deepcopy_pickle_and_dtype(fast_cls, torch_cls, kw):
    torch.manual_seed(0)
    fast = fast_cls(**kw, backend="reference").eval()
    x = _input(fast)
    expected = _out(fast, x)
    clone = copy.deepcopy(fast)
    buf = io.BytesIO()
    torch.save(fast, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for other in (clone, loaded):
        assert type(other) is fast_cls and other.backend == "reference"
        torch.testing.assert_close(_out(other, x), expected, atol=0, rtol=0)
    double = copy.deepcopy(fast).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in double.parameters())
    torch.testing.assert_close(_out(double, x.double()).float(), expected, atol=3e-5, rtol=2e-4)


def test_constructor_arguments_are_torchs():
    with pytest.raises(ValueError):
        fastrnn.LSTM(4, 5, proj_size=5)
    with pytest.raises(ValueError):
        fastrnn.GRU(4, 5, proj_size=2)
    with pytest.raises(ValueError):
        fastrnn.RNN(4, 5, nonlinearity="sigmoid")
    with pytest.raises(ValueError):
        fastrnn.LSTM(0, 5)
    with pytest.raises(ValueError):
        fastrnn.LSTM(4, 5, dropout=2.0)
    with pytest.raises(TypeError):
        # backend is keyword-only
        fastrnn.LSTM(4, 5, 2, True, False, 0.0, False, 0, None, None, "numba")


def test_unknown_backend_is_value_error_listing_valid_ones():
    for make in (lambda: fastrnn.LSTM(4, 5, backend="cudnn"),
                 lambda: fastrnn.GRUCell(4, 5, backend="gpu"),
                 lambda: _resolve("fast")):
        with pytest.raises(ValueError, match="auto, torch, numba, triton, reference"):
            make()


def test_auto_picks_a_cpu_backend_and_env_overrides():
    cpu = torch.device("cpu")
    name = _resolve("auto")
    assert name in dispatch.available(cpu, torch.float32) and name not in ("triton", "torch")
    code = ("import torch, fastrnn.dispatch as d; "
            "print(d.choose(d.Call('gru', 'auto', torch.device('cpu'), torch.float32, 100, 64, "
            "64, 49152, False)).name)")
    env = dict(os.environ, FASTRNN_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "reference"
    env["FASTRNN_BACKEND"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "ValueError" in bad.stderr and "valid backends" in bad.stderr


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4),
                                     nn.LSTM(4, 6, num_layers=2, batch_first=True))
        self.blocks = nn.ModuleList([nn.ModuleDict({"gru": nn.GRU(6, 5),
                                                    "cell": nn.LSTMCell(5, 3)})])
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        y, _ = self.encoder(x)
        y, _ = self.blocks[0]["gru"](y.transpose(0, 1))
        h, _ = self.blocks[0]["cell"](y[-1])
        return self.head(h)


class _MyLSTM(nn.LSTM):
    """A user subclass: its forward may differ, so convert leaves it alone."""


def test_convert_nested_model_keeps_parameters_and_trains():
    torch.manual_seed(0)
    model = _Net().train()
    model.extra = _MyLSTM(2, 2)
    x = torch.randn(3, 5, 4)
    expected = model(x)
    params = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = fastrnn.convert(model)
    assert out is model
    assert isinstance(model.encoder[1], fastrnn.LSTM)
    assert isinstance(model.blocks[0]["gru"], fastrnn.GRU)
    assert isinstance(model.blocks[0]["cell"], fastrnn.LSTMCell)
    assert type(model.extra) is _MyLSTM
    assert model.training and model.encoder[1].training
    assert all(p is params[n] for n, p in model.named_parameters())
    torch.testing.assert_close(model(x), expected, atol=3e-5, rtol=2e-4)
    fastrnn.convert(model)  # twice is harmless
    assert isinstance(model.encoder[1], fastrnn.LSTM)
    before = model.encoder[1].weight_hh_l0.detach().clone()
    model(x).square().sum().backward()
    assert model.encoder[1].weight_hh_l0.grad is not None
    opt.step()
    assert not torch.equal(before, model.encoder[1].weight_hh_l0)


def test_convert_root_module_and_dtype():
    lstm = nn.LSTM(3, 4).double().eval()
    fastrnn.convert(lstm, backend="reference")
    assert isinstance(lstm, fastrnn.LSTM) and lstm.backend == "reference"
    assert lstm(torch.randn(2, 1, 3, dtype=torch.float64))[0].dtype == torch.float64
    with pytest.raises(ValueError):
        fastrnn.convert(nn.GRU(2, 2), backend="nope")


def test_functional_call_uses_swapped_weights():
    torch.manual_seed(0)
    fast = fastrnn.LSTM(3, 4, backend="reference")
    ref = nn.LSTM(3, 4)
    x = torch.randn(2, 1, 3)
    params = dict(ref.named_parameters())
    out = torch.func.functional_call(fast, params, (x,))[0]
    torch.testing.assert_close(out, ref(x)[0], atol=3e-5, rtol=2e-4)


def test_replaced_and_parametrized_weights_are_used():
    # forward's fast "weights unchanged" check must not hide a weight assigned anew or one
    # computed by a parametrization (it is no longer in _parameters).
    from torch.nn.utils import parametrize
    torch.manual_seed(0)
    fast = fastrnn.LSTM(3, 4, backend="reference")
    ref = nn.LSTM(3, 4)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 1, 3)
    fast(x)
    new = nn.Parameter(torch.randn(16, 4))
    fast.weight_hh_l0 = new
    ref.weight_hh_l0 = nn.Parameter(new.detach().clone())
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=3e-5, rtol=2e-4)

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(fast, "weight_ih_l0", Double())
    parametrize.register_parametrization(ref, "weight_ih_l0", Double())
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=3e-5, rtol=2e-4)


def test_env_override_is_read_at_each_call(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert _resolve("auto", cpu) == "reference"
    monkeypatch.setenv("FASTRNN_BACKEND", "numba")
    assert _resolve("auto", cpu) == "numba"
    assert _resolve("reference", cpu) == "reference"  # explicit wins
    monkeypatch.setenv("FASTRNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="valid backends"):
        _resolve("auto", cpu)
    with pytest.raises(ValueError):
        _resolve(["numba"], cpu)
