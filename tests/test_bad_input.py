"""Bad input raises the same exception class as torch.nn, with a message, and writes nothing."""

import pytest
import torch
from torch import nn

import fastrnn
from rnn_cases import backends_for

BACKENDS = backends_for("cpu", torch.float32)


def _both(kind, backend, **kw):
    torch.manual_seed(0)
    ref = getattr(nn, kind)(4, 5, **kw)
    fast = getattr(fastrnn, kind)(4, 5, backend=backend, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _z(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


# name -> (module kind, constructor kwargs, input, hx)
STACK_CASES = {
    "feature_size": ("LSTM", {}, torch.randn(2, 3, 6), None),
    "input_1d": ("GRU", {}, torch.randn(4), None),
    "input_4d": ("RNN", {}, torch.randn(1, 2, 3, 4), None),
    "seq_len_0": ("LSTM", {}, torch.randn(0, 3, 4), None),
    "int_input": ("GRU", {}, torch.randint(0, 3, (2, 3, 4)), None),
    "dtype_mismatch": ("RNN", {}, torch.randn(2, 3, 4, dtype=torch.float64), None),
    "hx_batch": ("LSTM", {"num_layers": 2}, torch.randn(2, 3, 4), (_z(2, 2, 5), _z(2, 3, 5))),
    "hx_layers": ("LSTM", {"num_layers": 2}, torch.randn(2, 3, 4), (_z(1, 3, 5), _z(2, 3, 5))),
    "cx_size": ("LSTM", {}, torch.randn(2, 3, 4), (_z(1, 3, 5), _z(1, 3, 4))),
    "hx_2d_for_3d": ("LSTM", {}, torch.randn(2, 3, 4), (_z(3, 5), _z(1, 3, 5))),
    "hx_3d_for_2d": ("GRU", {}, torch.randn(2, 4), _z(1, 1, 5)),
    "gru_hx_hidden": ("GRU", {"bidirectional": True}, torch.randn(2, 3, 4), _z(2, 3, 6)),
    "rnn_hx_dirs": ("RNN", {"bidirectional": True}, torch.randn(2, 3, 4), _z(1, 3, 5)),
    "hx_dtype": ("LSTM", {}, torch.randn(2, 3, 4), (_z(1, 3, 5, dtype=torch.float64), _z(1, 3, 5))),
    "proj_hx_size": ("LSTM", {"proj_size": 2}, torch.randn(2, 3, 4), (_z(1, 3, 5), _z(1, 3, 5))),
}


def _expected_exception(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.type


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(STACK_CASES))
def test_stack_bad_input(case, backend):
    kind, kw, x, hx = STACK_CASES[case]
    ref, fast = _both(kind, backend, **kw)
    expected = _expected_exception(lambda: ref(x, hx))
    before = [p.detach().clone() for p in fast.parameters()]
    hx_before = None if hx is None else [h.clone()
                                         for h in (hx if isinstance(hx, tuple) else (hx,))]
    with pytest.raises(expected) as info:
        fast(x, hx)
    assert str(info.value), "the message must say what to fix"
    assert all(torch.equal(a, b) for a, b in zip(before, fast.parameters()))
    if hx is not None:
        assert all(torch.equal(a, b)
                   for a, b in zip(hx_before, hx if isinstance(hx, tuple) else (hx,)))


CELL_CASES = {
    "feature_size": ("LSTMCell", {}, torch.randn(3, 6), None),
    "input_3d": ("GRUCell", {}, torch.randn(1, 3, 4), None),
    "hx_batch": ("LSTMCell", {}, torch.randn(3, 4), (_z(2, 5), _z(3, 5))),
    "hx_hidden": ("LSTMCell", {}, torch.randn(3, 4), (_z(3, 6), _z(3, 5))),
    "gru_hx_batch": ("GRUCell", {}, torch.randn(3, 4), _z(2, 5)),
    "rnn_hx_3d": ("RNNCell", {}, torch.randn(3, 4), _z(1, 3, 5)),
    "int_input": ("LSTMCell", {}, torch.randint(0, 3, (3, 4)), None),
    "dtype_mismatch": ("RNNCell", {}, torch.randn(3, 4, dtype=torch.float64), None),
    "hx_dtype": ("GRUCell", {}, torch.randn(3, 4), _z(3, 5, dtype=torch.float64)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CELL_CASES))
def test_cell_bad_input(case, backend):
    kind, kw, x, hx = CELL_CASES[case]
    ref, fast = _both(kind, backend, **kw)
    expected = _expected_exception(lambda: ref(x, hx))
    with pytest.raises(expected) as info:
        fast(x, hx)
    assert str(info.value)


def test_packed_hx_batch_mismatch():
    ref, fast = _both("GRU", "reference")
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    hx = _z(1, 3, 5)
    expected = _expected_exception(lambda: ref(packed, hx))
    with pytest.raises(expected):
        fast(packed, hx)


# A packed LSTM's hx is checked by torch only inside its LSTM op, with that op's exception types.
PACKED_LSTM_HX = {
    "tensor_not_pair": _z(1, 2, 5),
    "tensor_wrong_batch": _z(1, 3, 5),
    "one_state": (_z(1, 2, 5),),
    "three_states": (_z(1, 2, 5),) * 3,
    "pair_wrong_batch": (_z(1, 3, 5), _z(1, 3, 5)),
    "pair_2d": (_z(2, 5), _z(2, 5)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("case", sorted(PACKED_LSTM_HX))
def test_packed_lstm_bad_hx(case, enforce_sorted, backend):
    ref, fast = _both("LSTM", backend)
    seqs = [torch.randn(3, 4), torch.randn(2, 4)]
    packed = nn.utils.rnn.pack_sequence(seqs if enforce_sorted else seqs[::-1],
                                        enforce_sorted=enforce_sorted)
    hx = PACKED_LSTM_HX[case]
    try:
        want = ref(packed, hx)
    except Exception as exc:        # noqa: BLE001 - whatever torch raises, fastrnn must too
        with pytest.raises(type(exc)) as info:
            fast(packed, hx)
        assert str(info.value)
    else:   # unsorted input takes hx's rows by index: torch accepts a larger batch, so must we
        got = fast(packed, hx)
        torch.testing.assert_close(got[0].data, want[0].data, atol=3e-5, rtol=2e-4)


def test_functional_rejects_bad_weights():
    x = torch.randn(2, 1, 4)
    with pytest.raises(ValueError, match="weights per layer"):
        fastrnn.functional.gru(x, None, [torch.randn(15, 4)], bias=False)
    with pytest.raises(ValueError, match="nonlinearity"):
        fastrnn.functional.rnn(x, None, [torch.randn(5, 4), torch.randn(5, 5)], bias=False,
                               nonlinearity="gelu")
