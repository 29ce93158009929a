"""The explicit vectors' lane-wise operations (kernels/numba/simd.py) against numpy, lane by lane.

The pointwise kernels run on them; each operation is checked on whole vectors with special values
(NaN, inf, -0.0) in some lanes, and with a scalar operand used in every lane.
"""

import math

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from fastrnn.kernels.numba import simd  # noqa: E402
from fastrnn.kernels.numba.simd import get, put, where_greater, where_less  # noqa: E402


@njit
def _lanewise(x, y, out):
    """out[k] for each operation k on the vector of x and y starting at 0."""
    a = simd.load(x, 0)
    b = simd.load(y, 0)
    two = x.dtype.type(2)
    results = (a + b, a - b, a * b, a / b, -a, two * a, a - two, two / b, abs(a),
               math.copysign(a, b), where_less(a, b, a, b), where_greater(a, b, a, two),
               where_less(a, two, two, a))
    for k in range(len(results)):
        simd.store(out[k], 0, results[k])


DIVISIONS = (3, 7)


def _expected(x, y):
    with np.errstate(all="ignore"):
        return [x + y, x - y, x * y, x / y, -x, 2 * x, x - 2, 2 / y, np.abs(x),
                np.copysign(x, y),
                np.where(x < y, x, y), np.where(x > y, x, 2), np.where(x < 2, 2, x)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lanewise_operations_match_numpy(dtype):
    lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    special = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -3.0, 1e30]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(lanes).astype(dtype)
    y = rng.standard_normal(lanes).astype(dtype)
    x[:len(special)] = special
    y[1:len(special) + 1] = special[:lanes - 1]
    out = np.zeros((13, lanes), dtype)
    _lanewise(x, y, out)
    for k, want in enumerate(_expected(x, y)):
        want = want.astype(dtype)
        if k in DIVISIONS:     # 'arcp': x * (1 / y), within an ulp of x / y
            np.testing.assert_allclose(out[k], want, rtol=np.finfo(dtype).eps, atol=0,
                                       err_msg=f"operation {k}")
        else:   # bitwise, NaN included (NaN compares false in where_*: the lane takes the second)
            np.testing.assert_array_equal(out[k], want, err_msg=f"operation {k}")
        assert np.array_equal(np.signbit(out[k]), np.signbit(want)), f"operation {k} signs"


@njit
def _scale_row(x, out):
    n = x.shape[0]
    L = simd.lanes(x)
    i = 0
    while i + L <= n:
        put(out, i, get(x, i, simd.zeros(x)) * x.dtype.type(3))
        i += L
    while i < n:
        put(out, i, get(x, i, x.dtype.type(0)) * x.dtype.type(3))
        i += 1


def test_get_put_move_vectors_or_single_elements():
    for dtype in (np.float32, np.float64):
        x = np.arange(53, dtype=dtype)       # whole vectors, then a scalar tail
        out = np.full(53, np.nan, dtype)
        _scale_row(x, out)
        np.testing.assert_array_equal(out, 3 * x)


def test_prefetch_l2_compiles_to_an_l2_prefetch():
    # The product's prefetch (linalg.STREAM_FROM_BYTES) must reach the CPU as a prefetch into
    # L2, not be dropped or become a load that waits for the line.
    @njit(cache=False)
    def touch(x, i):
        simd.prefetch_l2(x, i)

    x = np.zeros(16, np.float32)
    touch(x, 3)
    touch(x, 10 ** 9)       # a prefetch never faults, even far past the end
    asm = touch.inspect_asm(touch.signatures[0])
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        assert "prefetcht1" in asm
    else:
        assert "prf" in asm.lower()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_empty_starts_on_a_cache_line(dtype):
    for n in (0, 1, 5, 16, 1000, 1 << 18):
        a = simd.aligned_empty(n, dtype)
        assert a.shape == (n,) and a.dtype == dtype and a.flags.c_contiguous
        assert n == 0 or a.ctypes.data % simd.ALIGN_BYTES == 0, n
        a[...] = 1      # the whole view is writable memory of its own
