"""Test-wide setup. TRITON_INTERPRET must be set before triton is first imported, so it is
set here (and only when no CUDA device exists): the triton kernels then run on CPU tensors
through Triton's interpreter, which is how CI exercises them."""

import contextlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def tune():
    """tune(base=None, **overrides): the tuning record (kernels/tuning.py) changed for the rest
    of the test, as `with tuning(base, **overrides)` would; undone at teardown, in order."""
    from fastrnn.kernels.tuning import tuning
    with contextlib.ExitStack() as stack:
        yield lambda base=None, **overrides: stack.enter_context(tuning(base, **overrides))


@pytest.fixture(params=["amd", "intel"])
def cpu_family(request, tune):
    """Every size rule that differs between the AMD and Intel CPU families (kernels/tuning.py)
    set as on a machine of the parametrised family (AMD: the Zen 4 record), whichever this one
    is."""
    tune({"amd": "zen4", "intel": "intel"}[request.param])
    return request.param


@pytest.fixture(params=["zen4", "zen5", "intel"])
def gemm_family(request, tune):
    """The oneDNN-against-MKL product rules set as on a machine of the parametrised family or
    AMD generation, whichever this one is."""
    tune(request.param)
    return request.param
