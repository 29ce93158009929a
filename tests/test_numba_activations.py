"""Accuracy and special values of the numba backend's fast sigmoid/tanh/exp.

Bounds come from the arithmetic: float32 uses a minimax polynomial (~1 ulp) after an exact
range reduction, so exp has a few ulp of relative error and sigmoid/tanh, whose values are
O(1), stay within 2 ulp of 1.0 (2**-22) absolute. float64 uses a degree-12 Taylor polynomial
(truncation < 2e-16) and stays within 2 ulp of 1.0 (2**-51) absolute.

sigmoid and tanh take a float or a vector of them (kernels/numba/simd.py); every test runs both,
the vectors over whole registers and the last elements one at a time.
"""

import math

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from fastrnn.kernels.numba import simd  # noqa: E402
from fastrnn.kernels.numba.activations import exp32, exp64, sigmoid, tanh  # noqa: E402
from fastrnn.kernels.numba.config import FASTMATH  # noqa: E402


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _apply_scalars(x, which):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i]) if which == 0 else tanh(x[i])
    return out


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _apply_vectors(x, which):
    """As the step kernels run them: whole vectors, then the elements left one by one."""
    out = np.empty_like(x)
    L = simd.lanes(x)
    i = 0
    while i + L <= x.shape[0]:
        v = simd.load(x, i)
        simd.store(out, i, sigmoid(v) if which == 0 else tanh(v))
        i += L
    while i < x.shape[0]:
        out[i] = sigmoid(x[i]) if which == 0 else tanh(x[i])
        i += 1
    return out


@pytest.fixture(params=["scalars", "vectors"])
def apply(request):
    """sigmoid (which = 0) or tanh (1) of every element, on floats or on vectors."""
    if request.param == "scalars":
        return _apply_scalars

    def on_vectors(x, which):
        # Every special value in a whole vector: each element repeated for every lane.
        lanes = simd.VECTOR_BYTES // x.itemsize
        return _apply_vectors(np.repeat(x, lanes), which)[::lanes]

    return on_vectors


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _exp32(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = exp32(x[i])
    return out


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _exp64(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = exp64(x[i])
    return out


def _sigmoid64(x):
    from scipy.special import expit

    return expit(x)


REF = {0: _sigmoid64, 1: np.tanh}
ABS_BOUND = {np.float32: 2.0 ** -22, np.float64: 2.0 ** -51}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", [0, 1], ids=["sigmoid", "tanh"])
def test_accuracy_against_float64(which, dtype, apply):
    x = np.concatenate([np.linspace(-40, 40, 400_001), np.geomspace(1e-12, 40, 10_001),
                        -np.geomspace(1e-12, 40, 10_001)]).astype(dtype)
    got = apply(x, which)
    assert got.dtype == dtype
    want = REF[which](x.astype(np.float64))
    err = np.abs(got.astype(np.float64) - want)
    assert err.max() <= ABS_BOUND[dtype], err.max()


def test_sigmoid_relative_accuracy_in_the_tail(apply):
    # 1 / (1 + exp(-x)) keeps relative accuracy where sigmoid is tiny (x down to -80).
    x = np.linspace(-80, 0, 100_001)
    for dtype, bound in ((np.float32, 4 * 2.0 ** -23), (np.float64, 8 * 2.0 ** -52)):
        got = apply(x.astype(dtype), 0).astype(np.float64)
        want = _sigmoid64(x.astype(dtype).astype(np.float64))
        assert (np.abs(got - want) / want).max() <= bound


def test_exp_relative_accuracy():
    x32 = np.linspace(-86, 88.7, 200_001).astype(np.float32)
    want = np.exp(x32.astype(np.float64))
    assert (np.abs(_exp32(x32) - want) / want).max() <= 4 * 2.0 ** -23
    x64 = np.linspace(-707, 709.7, 200_001)
    want = np.exp(x64)
    assert (np.abs(_exp64(x64) - want) / want).max() <= 8 * 2.0 ** -52


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype, apply):
    x = np.array([1e30, -1e30, np.inf, -np.inf, np.nan, 0.0, -0.0, 100.0, -100.0, 1000.0,
                  -1000.0], dtype=dtype)
    sig = apply(x, 0)
    th = apply(x, 1)
    np.testing.assert_array_equal(sig[[0, 2, 7, 9]], 1.0)
    np.testing.assert_array_equal(sig[[1, 3, 10]], 0.0)
    np.testing.assert_array_equal(th[[0, 2, 7, 9]], 1.0)
    np.testing.assert_array_equal(th[[1, 3, 8, 10]], -1.0)
    assert np.isnan(sig[4]) and np.isnan(th[4])
    assert sig[5] == 0.5 and sig[6] == 0.5
    assert th[5] == 0.0 and th[6] == 0.0
    assert 0.0 <= sig[8] < 1e-43
    assert np.all(np.isfinite(np.delete(sig, 4))) and np.all(np.isfinite(np.delete(th, 4)))


def test_exp_overflow_and_underflow():
    for f, dtype, big in ((_exp32, np.float32, 89.0), (_exp64, np.float64, 710.0)):
        out = f(np.array([big, 1e30, np.inf, -np.inf, -1e30, np.nan], dtype=dtype))
        assert out.dtype == dtype
        assert np.isinf(out[0]) and np.isinf(out[1]) and np.isinf(out[2])
        assert out[3] == 0.0 and out[4] == 0.0
        assert math.isnan(out[5])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _scalar_sigmoid(x):
    return sigmoid(x)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _scalar_tanh(x):
    return tanh(x)


def test_vectors_and_scalars_agree():
    # One source for both: the lanes round as the scalar code does (the tail of a row runs on
    # scalars, its body on vectors). Odd lengths leave a scalar tail inside _apply_vectors.
    for dtype in (np.float32, np.float64):
        x = np.linspace(-30, 30, 100_003).astype(dtype)
        for which in (0, 1):
            np.testing.assert_allclose(_apply_vectors(x, which), _apply_scalars(x, which),
                                       rtol=2 * np.finfo(dtype).eps, atol=0)


def test_float32_stays_float32():
    # A float64 constant anywhere inside would widen the float32 result.
    for f in (_scalar_sigmoid, _scalar_tanh):
        f(np.float32(0.3))
        sig, = [s for s in f.nopython_signatures if str(s.args[0]) == "float32"]
        assert str(sig.return_type) == "float32"
