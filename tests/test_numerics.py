"""Edge cases a demanding user hits: empty batch, NaN/inf, huge inputs, odd memory layouts,
dropout, and half types on CPU."""

import pytest
import torch

from rnn_cases import TOL, backends_for, check_parity, make_pair

BACKENDS = backends_for("cpu", torch.float32)
# Each backend in the most precise dtype it supports (triton has no float64).
PRECISE = [pytest.param(b, torch.float64 if b in backends_for("cpu", torch.float64)
                        else torch.float32, id=b)
           for b in BACKENDS]
KINDS = [("lstm", {}), ("lstm", {"proj_size": 2}), ("gru", {}), ("rnn", {"nonlinearity": "relu"})]
KIND_IDS = ["lstm", "lstm_proj", "gru", "rnn_relu"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind, kw", KINDS, ids=KIND_IDS)
def test_empty_batch(backend, kind, kw):
    ref, fast = make_pair(kind, 4, 5, backend, torch.float32, num_layers=2, bidirectional=True,
                          **kw)
    x = torch.randn(3, 0, 4, requires_grad=True)
    out, hidden = fast(x)
    expected, _ = ref(x.detach().double())
    assert out.shape == expected.shape
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in fast.parameters())


def _compare_like_torch(backend, kind, kw, x, hidden=4):
    ref, fast = make_pair(kind, 3, hidden, backend, torch.float64, **kw)
    expected = ref(x)
    actual = fast(x)
    for a, e in zip(_flat(actual), _flat(expected)):
        assert torch.equal(torch.isnan(a), torch.isnan(e)), f"NaN pattern differs:\n{a}\n{e}"
        torch.testing.assert_close(a, e, atol=1e-9, rtol=1e-7, equal_nan=True)


def _flat(x):
    return [t for item in x for t in (item if isinstance(item, tuple) else (item,))]


@pytest.mark.parametrize("backend", backends_for("cpu", torch.float64))
@pytest.mark.parametrize("kind, kw", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
@pytest.mark.parametrize("hidden", [4, 20])
def test_nonfinite_and_huge_inputs_as_torch(backend, kind, kw, value, hidden):
    # 20 hidden units: the numba kernels' pointwise loops take whole vectors (8 float64 lanes
    # with AVX-512), then single units.
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    x[1, 0, 1] = value
    x[2, 1, :] = value
    _compare_like_torch(backend, kind, kw, x, hidden)


@pytest.mark.parametrize("backend, dtype", PRECISE)
@pytest.mark.parametrize("layout", ["transposed", "strided", "offset", "stride0"])
def test_odd_input_layouts(backend, dtype, layout):
    torch.manual_seed(0)
    ref, fast = make_pair("lstm", 3, 5, backend, dtype, num_layers=2)
    base = torch.randn(8, 6, 6, dtype=torch.float64)
    x = {
        "transposed": base[:4, :3, :3].transpose(0, 1),
        "strided": base[::2, ::2, ::2],
        "offset": base[3:7, 2:5, 1:4],
        "stride0": torch.randn(1, 1, 3, dtype=torch.float64).expand(4, 3, 3),
    }[layout]
    assert not x.is_contiguous() or x.storage_offset() > 0
    if dtype != torch.float64:
        x = x.to(dtype)  # a same-dtype cast keeps the odd layout; this one only changes precision
    atol, rtol = TOL[dtype]
    for a, e in zip(_flat(fast(x)), _flat(ref(x.double()))):
        torch.testing.assert_close(a.double(), e, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend, dtype", PRECISE)
def test_noncontiguous_weights(backend, dtype):
    torch.manual_seed(0)
    ref, fast = make_pair("gru", 3, 5, backend, dtype)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0"):
            w = getattr(fast, name)
            w.set_(w.detach().t().contiguous().t())  # same values, column-major storage
            assert not w.is_contiguous()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    atol, rtol = TOL[dtype]
    for a, e in zip(_flat(fast(x.to(dtype))), _flat(ref(x))):
        torch.testing.assert_close(a.double(), e, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend, dtype", PRECISE)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_dropout_between_layers_in_training_only(backend, dtype, kind):
    # dropout=1 zeroes the second layer's input, deterministically: exact parity with torch.
    # Modules start in training mode.
    check_parity(kind, backend, dtype, 3, 5, 4, 2, num_layers=3, dropout=1.0)
    torch.manual_seed(0)
    ref, fast = make_pair(kind, 3, 5, backend, dtype, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    atol, rtol = TOL[dtype]
    fast.eval(), ref.eval()
    torch.testing.assert_close(fast(x.to(dtype))[0].double(), ref(x)[0], atol=atol, rtol=rtol)
    fast.train()
    assert not torch.allclose(fast(x.to(dtype))[0].double(), ref(x)[0], atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_half_types_on_cpu(backend, dtype, kind):
    """Error against the float64 oracle is at most 2x torch's own error in that dtype."""
    torch.manual_seed(0)
    ref, fast = make_pair(kind, 7, 16, backend, dtype, num_layers=2)
    ref_half = make_pair(kind, 7, 16, "reference", dtype, num_layers=2)[0].to(dtype)
    ref_half.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 7, dtype=torch.float64)
    exact = ref(x)[0]
    torch_err = (ref_half(x.to(dtype))[0].double() - exact).abs().max()
    out = fast(x.to(dtype))[0]
    assert out.dtype == dtype
    ours = (out.double() - exact).abs().max()
    assert ours <= 2 * torch_err, f"fastrnn error {ours:.3g} vs torch {torch_err:.3g}"
    xg = x.to(dtype).requires_grad_()
    fast(xg)[0].float().sum().backward()
    assert xg.grad.dtype == dtype and torch.isfinite(xg.grad).all()
