"""The CPU GEMM helper: oneDNN and MKL paths give the same float32 products (and torch.mm's
for every dtype), including the shapes that switch to oneDNN and its pre-packed weights."""

import pytest
import torch

from fastrnn.kernels import gemm, tuning
from fastrnn.kernels import numba as numba_backend
from rnn_cases import check_parity

SHAPES = [(1, 64, 256), (3, 512, 2048), (64, 256, 1024), (128, 33, 7), (1600, 16, 16), (0, 16, 16)]


@pytest.mark.parametrize("M, K, N", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_matches_mm(M, K, N, dtype, gemm_family):
    torch.manual_seed(0)
    a, w, b = (torch.randn(M, K, dtype=dtype), torch.randn(N, K, dtype=dtype),
               torch.randn(N, dtype=dtype))
    exact_a, exact_w, exact_b = a.double(), w.double(), b.double()
    tol = (dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64
           else dict(atol=2e-6 * K ** 0.5, rtol=2e-5))
    torch.testing.assert_close(gemm.linear(a, w).double(), exact_a @ exact_w.t(), **tol)
    torch.testing.assert_close(gemm.linear(a, w, b).double(),
                               torch.addmm(exact_b, exact_a, exact_w.t()), **tol)
    # Non-contiguous operands (a transposed weight, as the backward pass passes it).
    torch.testing.assert_close(gemm.linear(a, w.t().contiguous().t()).double(),
                               exact_a @ exact_w.t(), **tol)
    repeated = gemm.RepeatedLinear(w, M)
    for _ in range(2):
        torch.testing.assert_close(repeated(a).double(), exact_a @ exact_w.t(), **tol)
    # With a bias, and fewer rows than it was made for (an input projection's last chunk).
    with_bias = gemm.RepeatedLinear(w, M, b)
    rows = max(M - 3, 0)
    for _ in range(2):
        torch.testing.assert_close(with_bias(a[:rows]).double(),
                                   torch.addmm(exact_b, exact_a[:rows], exact_w.t()), **tol)


def test_large_shapes_take_onednn_when_available():
    if gemm._OPS is None or not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN linear")
    assert gemm.RepeatedLinear(torch.randn(2048, 512), 4).packed is not None
    assert gemm.RepeatedLinear(torch.randn(64, 16), 4).packed is None
    with torch.backends.mkldnn.flags(enabled=False):
        assert gemm.RepeatedLinear(torch.randn(2048, 512), 4).packed is None


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_module_on_onednn_sized_layer_matches_torch(kind, tune):
    """A hidden size whose recurrent product is packed for oneDNN, end to end, all gradients."""
    H = {"lstm": 512, "gru": 592, "rnn": 1024}[kind]
    B = 4
    tune(numba_strategy="step")     # the per-step GEMM
    if gemm._OPS is not None and torch.backends.mkldnn.is_available():
        assert "oneDNN packed" in numba_backend.explain(kind, 3, B, H)
    check_parity(kind, "numba", torch.float32, 16, H, 3, B, form="packed_unsorted",
                 bidirectional=True)


# Shapes below and above 2^24 multiply-adds (Zen 5's onednn_weight_grads_min_macs), with each
# family's rule (gemm_family), so both paths run on any CPU.
WEIGHT_GRAD_SHAPES = [(100, 256, [64]), (320, 512, [128, 128]), (1600, 96, [200]),
                      (6400, 1024, [256, 256]), (1, 8, [4])]


@pytest.mark.parametrize("M, N, Ks", WEIGHT_GRAD_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_weight_grads_match_mm(M, N, Ks, dtype, bias, gemm_family):
    torch.manual_seed(1)
    grad = torch.randn(M, N, dtype=dtype)
    # The second input is a transposed (non-contiguous) view, as previous states can be.
    inputs = [torch.randn(M, K, dtype=dtype) if k == 0 else torch.randn(K, M, dtype=dtype).t()
              for k, K in enumerate(Ks)]
    grads, db = gemm.weight_grads(grad, inputs, bias)
    exact = grad.double()
    tol = (dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64
           else dict(atol=3e-6 * M ** 0.5, rtol=2e-5))
    assert len(grads) == len(inputs)
    for dw, a in zip(grads, inputs):
        assert dw.dtype == dtype and dw.layout == torch.strided and not dw.is_mkldnn
        torch.testing.assert_close(dw.double(), exact.t() @ a.double(), **tol)
    if bias:
        torch.testing.assert_close(db.double(), exact.sum(0), **tol)
    else:
        assert db is None


def test_weight_grads_take_onednn_from_the_measured_size(monkeypatch, gemm_family):
    # Zen 5 from 2^24 multiply-adds per product; Zen 4 and Intel CPUs never (MKL kept up).
    if gemm._BACKWARD_WEIGHTS is None or not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN backward-weights primitive")
    calls = []
    real = gemm._BACKWARD_WEIGHTS
    monkeypatch.setattr(gemm, "_BACKWARD_WEIGHTS", lambda *a: calls.append(1) or real(*a))
    amd = gemm_family == "zen5"
    gemm.weight_grads(torch.randn(400, 512), [torch.randn(400, 128)])       # 2^24.6 MACs
    assert calls == [1] * amd
    # Per input: the small one takes torch.mm, the bias comes from the first oneDNN product.
    grads, db = gemm.weight_grads(torch.randn(400, 512),
                                  [torch.randn(400, 8), torch.randn(400, 128)], True)
    assert calls == [1, 1] * amd and db is not None
    gemm.weight_grads(torch.randn(6400, 2048), [torch.randn(6400, 512)])    # 2^32.6
    assert calls == [1, 1, 1] * amd
    gemm.weight_grads(torch.randn(100, 256), [torch.randn(100, 64)])        # 2^20.6
    gemm.weight_grads(torch.randn(400, 512).double(), [torch.randn(400, 128).double()])
    with torch.backends.mkldnn.flags(enabled=False):
        gemm.weight_grads(torch.randn(400, 512), [torch.randn(400, 128)])
    assert calls == [1, 1, 1] * amd


def _count_onednn_linear(monkeypatch):
    """The rows of every call gemm.linear makes to oneDNN's inner product, as a list (skips the
    test where this torch has no oneDNN linear)."""
    if gemm._OPS is None or not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN linear")
    calls = []
    real = gemm._OPS
    monkeypatch.setattr(gemm, "_OPS", (lambda *a: calls.append(a[0].shape[0]) or real[0](*a),
                                       real[1]))
    return calls


def test_one_off_products_take_onednn_where_measured_faster(monkeypatch, cpu_family):
    # linear's rule per CPU family: on AMD large weights at any batch and mid-sized ones from
    # 64 rows; on Intel only weights of a million elements or more read by 16-399 rows.
    calls = _count_onednn_linear(monkeypatch)
    amd = cpu_family == "amd"
    for M, K, N in ((8, 1024, 1024), (64, 512, 2048), (399, 1024, 1024), (400, 1024, 1024),
                    (800, 256, 1024), (6400, 128, 512), (64, 128, 512)):
        a, w = torch.randn(M, K), torch.randn(N, K)
        torch.testing.assert_close(gemm.linear(a, w), a @ w.t(), atol=1e-3, rtol=1e-4)
    assert calls == ([8, 64, 399, 400, 800, 6400] if amd else [64, 399])


def test_transposed_weights_are_copied_for_onednn_from_the_measured_rows(monkeypatch, gemm_family):
    # The backward's dx = dG @ W_ih reads W_ih^T: copied contiguous for oneDNN from 400 rows on
    # Zen 5 and 1600 on Zen 4; Intel CPUs send those rows to torch.mm anyway.
    calls = _count_onednn_linear(monkeypatch)
    w_t = torch.randn(512, 256).t()                 # (N, K) = (256, 512), not contiguous
    for M in (399, 400, 1599, 1600):
        a = torch.randn(M, 512)
        torch.testing.assert_close(gemm.linear(a, w_t), a @ w_t.t(), atol=1e-3, rtol=1e-4)
    assert calls == {"zen4": [1600], "zen5": [400, 1599, 1600], "intel": []}[gemm_family]


@pytest.mark.parametrize("kind, kw", [("lstm", {}), ("lstm", {"proj_size": 24}), ("gru", {}),
                                      ("rnn", {}), ("gru", {"bias": False})])
def test_modules_with_onednn_weight_grads_match_torch(kind, kw, monkeypatch, tune):
    # A training call whose weight gradients take oneDNN's backward-weights primitive (20 steps
    # x 16 rows x 256 units x 256 inputs: 2^24.3 multiply-adds for the RNN, more with gates;
    # the projected LSTM's W_hh gradient, 24 wide, stays torch.mm), packed and bidirectional.
    calls = []
    real = gemm._BACKWARD_WEIGHTS
    if real is not None:
        monkeypatch.setattr(gemm, "_BACKWARD_WEIGHTS", lambda *a: calls.append(1) or real(*a))
    # Zen 5's rule, which takes oneDNN from 2^24 (other CPUs never do), whatever this CPU is;
    # the numba backend's own weight gradients (launch.weight_grads) left out.
    tune(onednn_weight_grads_min_macs=tuning.ZEN5.onednn_weight_grads_min_macs,
         own_weight_grads_max_rows=0)
    check_parity(kind, "numba", torch.float32, 256, 256, 20, 16, form="packed_unsorted",
                 bidirectional=True, **kw)
    if real is not None and torch.backends.mkldnn.is_available():
        assert calls
