"""torch.autograd.gradcheck in float64 on the autograd Functions: the hand-written backward
(backend recurrence + GEMMs) against finite differences, for every cell type and option."""

import pytest
import torch

from fastrnn import dispatch
from fastrnn.ops import GRUFunction, LSTMFunction, RNNFunction
from rnn_cases import backends_for

T, B, I, H = 4, 3, 2, 5
LENGTHS = [None, "ragged"]


def _t(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_()


def _lengths(kind):
    return None if kind is None else torch.tensor([T, 2, 1])


def _params():
    out = []
    for backend in backends_for("cpu", torch.float64):
        for reverse in (False, True):
            for lengths in LENGTHS:
                for bias in (True, False):
                    out.append(pytest.param(backend, reverse, lengths, bias,
                                            id=f"{backend}-{'rev' if reverse else 'fwd'}-"
                                               f"{lengths or 'full'}-"
                                               f"{'bias' if bias else 'nobias'}"))
    return out


@pytest.mark.parametrize("backend, reverse, lengths, bias", _params())
@pytest.mark.parametrize("proj", [0, 3], ids=["noproj", "proj3"])
def test_lstm_gradcheck(backend, reverse, lengths, bias, proj):
    torch.manual_seed(0)
    P = proj or H
    mod = dispatch.get(backend)
    args = [_t(T, B, I), _t(B, P), _t(B, H), _t(4 * H, I, scale=0.5), _t(4 * H, P, scale=0.5)]
    args += [_t(4 * H), _t(4 * H)] if bias else [None, None]
    args += [_t(P, H, scale=0.5)] if proj else [None]
    ln = _lengths(lengths)
    assert torch.autograd.gradcheck(lambda *a: LSTMFunction.apply(*a, ln, reverse, mod),
                                    tuple(args))


@pytest.mark.parametrize("backend, reverse, lengths, bias", _params())
def test_gru_gradcheck(backend, reverse, lengths, bias):
    torch.manual_seed(0)
    mod = dispatch.get(backend)
    args = [_t(T, B, I), _t(B, H), _t(3 * H, I, scale=0.5), _t(3 * H, H, scale=0.5)]
    args += [_t(3 * H), _t(3 * H)] if bias else [None, None]
    ln = _lengths(lengths)
    assert torch.autograd.gradcheck(lambda *a: GRUFunction.apply(*a, ln, reverse, mod), tuple(args))


@pytest.mark.parametrize("backend, reverse, lengths, bias", _params())
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_gradcheck(backend, reverse, lengths, bias, nonlinearity):
    torch.manual_seed(0)
    mod = dispatch.get(backend)
    args = [_t(T, B, I), _t(B, H), _t(H, I, scale=0.5), _t(H, H, scale=0.3)]
    args += [_t(H), _t(H)] if bias else [None, None]
    ln = _lengths(lengths)
    assert torch.autograd.gradcheck(
        lambda *a: RNNFunction.apply(*a, ln, reverse, nonlinearity, mod), tuple(args))
