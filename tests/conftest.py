"""Test-wide setup. TRITON_INTERPRET must be set before triton is first imported, so it is
set here (and only when no CUDA device exists): the triton kernels then run on CPU tensors
through Triton's interpreter, which is how CI exercises them."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(params=["amd", "intel"])
def cpu_family(request, monkeypatch):
    """Every size rule that differs between CPU families (kernels/cpu.py) set as on a machine of
    the parametrised family, whichever this one is."""
    from fastrnn import native
    from fastrnn.kernels import cpu, gemm
    from fastrnn.kernels.numba import launch
    family = {"amd": cpu.AMD, "intel": cpu.INTEL}[request.param]
    set_gemm_family(monkeypatch, family)
    monkeypatch.setattr(launch, "COLUMNS_TIERS", launch.columns_tiers(family))
    monkeypatch.setattr(launch, "FUSE_MAX_WEIGHT_BYTES",
                        launch.FUSE_MAX_WEIGHT_BYTES_BY_FAMILY[family])
    monkeypatch.setattr(launch, "GATE_PANELS_MAX_ROWS",
                        launch.GATE_PANELS_MAX_ROWS_BY_FAMILY[family])
    monkeypatch.setattr(native, "_INFERENCE_TORCH_ROWS",
                        native._INFERENCE_TORCH_ROWS_BY_FAMILY[family])
    monkeypatch.setattr(native, "_TRAINING_TORCH_ROWS",
                        native._TRAINING_TORCH_ROWS_BY_FAMILY[family])
    return family


@pytest.fixture(params=["zen4", "zen5", "intel"])
def gemm_family(request, monkeypatch):
    """The oneDNN-against-MKL product rules (kernels/gemm.py) set as on a machine of the
    parametrised family or AMD generation, whichever this one is."""
    from fastrnn.kernels import cpu
    family = {"zen4": cpu.AMD, "zen5": cpu.ZEN5, "intel": cpu.INTEL}[request.param]
    set_gemm_family(monkeypatch, family)
    return request.param


def set_gemm_family(monkeypatch, gemm_family):
    from fastrnn.kernels import cpu, gemm
    family = cpu.INTEL if gemm_family == cpu.INTEL else cpu.AMD
    monkeypatch.setattr(gemm, "_worth_onednn", gemm.WORTH_ONEDNN_BY_FAMILY[family])
    monkeypatch.setattr(gemm, "BACKWARD_WEIGHTS_MIN_MACS",
                        gemm.BACKWARD_WEIGHTS_MIN_MACS_BY_FAMILY[gemm_family])
    monkeypatch.setattr(gemm, "COPY_WEIGHT_MIN_ROWS",
                        gemm.COPY_WEIGHT_MIN_ROWS_BY_FAMILY[gemm_family])
