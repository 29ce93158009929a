"""Whole-model checkpoints (issue 33): torch.save(model) of a model holding fastrnn modules loads
with torch.load(weights_only=True), as programs that allowlist their own classes expect; what
the weights-only unpickler refuses inside a fastrnn module is still refused."""

import fractions
import io
import pickle

import pytest
import torch
from torch import nn

import fastrnn
from test_api import IDS, PAIRS, _input, _out


def _round_trip(model, **load):
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True, **load)


@pytest.mark.parametrize("fast_cls, torch_cls, kw", PAIRS, ids=IDS)
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_each_module_class_loads_weights_only(fast_cls, torch_cls, kw, backend):
    torch.manual_seed(0)
    model = fast_cls(**kw, backend=backend)
    x = _input(model)
    _out(model, x).sum().backward()                 # trained: grads and buffers are in the pickle
    loaded = _round_trip(model)
    assert type(loaded) is fast_cls and loaded.backend == backend
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(_out(loaded, x), _out(model, x), atol=0, rtol=0)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


class _LanguageModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.rnn = fastrnn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, tokens):
        return self.head(self.rnn(self.embed(tokens))[0])


def test_a_model_holding_fastrnn_loads_where_its_own_classes_are_allowlisted():
    torch.manual_seed(0)
    model = _LanguageModel().eval()
    tokens = torch.randint(0, 10, (2, 7))
    with pytest.raises(pickle.UnpicklingError, match="_LanguageModel"):
        _round_trip(model)                          # the user's class is theirs to allowlist
    with torch.serialization.safe_globals([_LanguageModel, nn.Embedding, nn.Linear]):
        loaded = _round_trip(model)
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))


def test_a_global_planted_inside_a_fastrnn_module_is_refused():
    model = fastrnn.GRU(4, 6)
    model.planted = fractions.Fraction(1, 3)        # not allowlisted anywhere
    with pytest.raises(pickle.UnpicklingError, match="Fraction"):
        _round_trip(model)


def test_a_checkpoint_naming_an_unknown_backend_is_refused():
    model = fastrnn.RNNCell(4, 6)
    model.backend = "cudnn"                         # not a fastrnn backend
    with pytest.raises(ValueError, match="unknown fastrnn backend 'cudnn'"):
        _round_trip(model)


def test_a_pickle_from_before_the_backend_option_loads_as_auto():
    model = fastrnn.LSTMCell(4, 6)
    del model.__dict__["backend"]
    assert _round_trip(model).backend == "auto"
