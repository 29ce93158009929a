"""The CPU GEMM helper: oneDNN and MKL paths give the same float32 products (and torch.mm's
for every dtype), including the shapes that switch to oneDNN and its pre-packed weights."""

import pytest
import torch

from fastrnn.kernels import gemm
from fastrnn.kernels import numba as numba_backend
from fastrnn.kernels.numba import launch
from rnn_cases import check_parity

SHAPES = [(1, 64, 256), (3, 512, 2048), (64, 256, 1024), (128, 33, 7), (1600, 16, 16), (0, 16, 16)]


@pytest.mark.parametrize("M, K, N", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_matches_mm(M, K, N, dtype):
    torch.manual_seed(0)
    a, w, b = torch.randn(M, K, dtype=dtype), torch.randn(N, K, dtype=dtype), torch.randn(N, dtype=dtype)
    exact_a, exact_w, exact_b = a.double(), w.double(), b.double()
    tol = dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-6 * K ** 0.5, rtol=2e-5)
    torch.testing.assert_close(gemm.linear(a, w).double(), exact_a @ exact_w.t(), **tol)
    torch.testing.assert_close(gemm.linear(a, w, b).double(), torch.addmm(exact_b, exact_a, exact_w.t()), **tol)
    # Non-contiguous operands (a transposed weight, as the backward pass passes it).
    torch.testing.assert_close(gemm.linear(a, w.t().contiguous().t()).double(), exact_a @ exact_w.t(), **tol)
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
def test_module_on_onednn_sized_layer_matches_torch(kind, monkeypatch):
    """A hidden size whose recurrent product is packed for oneDNN, end to end, all gradients."""
    H = {"lstm": 512, "gru": 592, "rnn": 1024}[kind]
    B = 4
    monkeypatch.setattr(launch, "STRATEGY", "step")     # the per-step GEMM
    if gemm._OPS is not None and torch.backends.mkldnn.is_available():
        assert "oneDNN packed" in numba_backend.explain(kind, 3, B, H)
    check_parity(kind, "numba", torch.float32, 16, H, 3, B, form="packed_unsorted", bidirectional=True)
