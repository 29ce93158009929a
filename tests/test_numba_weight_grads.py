"""The numba backend's own weight gradients (launch.weight_grads: dW = dG^T a over all steps
through linalg.matmul_packed_at, rows of dW split over torch's threads) against float64 products,
the rule that picks them, and whole layers trained through them against torch.nn."""

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from fastrnn.kernels import gemm, tuning  # noqa: E402
from fastrnn.kernels.numba import buffers, launch, team  # noqa: E402
from fastrnn.kernels.numba.linalg import matmul_packed_at, pack_weight  # noqa: E402
from rnn_cases import check_parity  # noqa: E402


@pytest.fixture
def always_own(monkeypatch, tune):
    """Every float32/float64 weight gradient through the compiled product, whatever the CPU;
    the NaN-filled outputs (nan_empty) of the kernel tests, so a row left unwritten shows."""
    tune(own_weight_grads_max_rows=1 << 40, own_weight_grads_min_macs=0)
    monkeypatch.setattr(buffers, "empty",
                        lambda shape, dtype: torch.full(shape, float("nan"), dtype=dtype))


# (M steps x rows, N = gates x H, widths of the inputs): rows of dW past a multiple of 4 (the 2-
# and 1-row blocks) and fewer than the threads' chunks, columns past whole panels (one-vector
# panels and single columns), k past the 128-row chunk, one step.
SHAPES = [(7, 5, [3]), (1, 4, [16, 16]), (100, 256, [64, 64]), (33, 13, [70]), (130, 9, [131, 5]),
          (300, 384, [128, 100]), (260, 6, [1, 2])]


@pytest.mark.parametrize("M, N, Ks", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_own_weight_grads_match_float64(M, N, Ks, dtype, bias, always_own):
    torch.manual_seed(0)
    grad = torch.randn(M, N, dtype=dtype)
    inputs = [torch.randn(M, K, dtype=dtype) for K in Ks]
    # An input that is a transposed view, as a batch-first input's rows can be.
    inputs[0] = inputs[0].t().contiguous().t()
    grads, db = launch.weight_grads(grad, inputs, bias)
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=3e-6 * M ** 0.5,
                                                                        rtol=1e-5)
    for dw, a in zip(grads, inputs):
        assert dw.dtype == dtype and dw.shape == (N, a.shape[1]) and dw.is_contiguous()
        torch.testing.assert_close(dw.double(), grad.double().t() @ a.double(), **tol)
    if bias:
        torch.testing.assert_close(db.double(), grad.double().sum(0), **tol)
    else:
        assert db is None


def test_transposed_product_reads_each_row_range_alone():
    # matmul_packed_at writes rows m0 .. m1-1 of out and nothing else (each thread owns a range).
    rng = np.random.default_rng(3)
    g, a = rng.standard_normal((45, 23)), rng.standard_normal((45, 70))
    out = np.full((23, 70), np.nan)
    matmul_packed_at(g, pack_weight(a), out, 6, 17)
    np.testing.assert_allclose(out[6:17], g[:, 6:17].T @ a, rtol=0, atol=1e-12)
    assert np.isnan(out[:6]).all() and np.isnan(out[17:]).all()


def test_rule_takes_the_measured_shapes(monkeypatch, tune):
    # AMD CPUs: the compiled product from 2^24 multiply-adds up to 3200 steps x rows (torch.mm
    # won at 6400 and below 2^24); other dtypes and more than two inputs go to gemm; Intel CPUs
    # (not measured) never take it.
    calls = []
    real = team.run
    monkeypatch.setattr(team, "run", lambda *a: calls.append(1) or real(*a))
    tune(own_weight_grads_max_rows=tuning.ZEN4.own_weight_grads_max_rows)
    cases = [((1600, 512), [128, 128], torch.float32, True),        # 2^27.6
             ((3200, 512), [128], torch.float64, True),
             ((6400, 512), [128], torch.float32, False),            # too many steps
             ((100, 256), [64, 64], torch.float32, False),          # 2^21.6
             ((1600, 512), [128, 128], torch.bfloat16, False),
             ((400, 512), [64, 64, 64], torch.float32, False)]
    for (M, N), Ks, dtype, own in cases:
        calls.clear()
        grad = torch.randn(M, N, dtype=dtype)
        inputs = [torch.randn(M, K, dtype=dtype) for K in Ks]
        grads, _ = launch.weight_grads(grad, inputs)
        assert calls == [1] * own, (M, N, Ks, dtype)
        for dw, a in zip(grads, inputs):
            torch.testing.assert_close(dw.float(), (grad.t() @ a).float(), atol=0.1, rtol=0.02)
    assert tuning.INTEL.own_weight_grads_max_rows == 0


@pytest.mark.parametrize("kind, kw", [("lstm", {}), ("lstm", {"proj_size": 12}), ("gru", {}),
                                      ("rnn", {}), ("gru", {"bias": False})])
def test_layers_trained_through_own_weight_grads_match_torch(kind, kw, always_own, monkeypatch):
    # Every weight gradient of a bidirectional, packed layer (and the projection's) through the
    # compiled product; gemm.weight_grads must not be reached.
    monkeypatch.setattr(gemm, "weight_grads", None)
    check_parity(kind, "numba", torch.float32, 20, 24, 6, 5, form="packed_unsorted",
                 bidirectional=True, **kw)
    check_parity(kind, "numba", torch.float64, 20, 24, 6, 5, **kw)
