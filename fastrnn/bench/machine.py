"""What machine the numbers come from: hardware, versions, date, and its measured GEMM rate.

The GEMM rate is the roofline: an RNN step is two GEMMs plus pointwise gate math, so the best
large matrix product on the same device and dtype is the most an RNN kernel could reach. On
CPU that is the faster of torch.mm (MKL) and oneDNN's inner product (what torch.nn.LSTM and
fastrnn use), which differ by up to 1.3x on AMD machines. Measuring it here
(instead of quoting a datasheet) keeps the % column honest for this machine, this BLAS and
this thread count.
"""

import datetime
import os
import platform
import time
from importlib import metadata

import torch

from ..kernels.cpu import cpuinfo


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model():
    return cpuinfo("model name") or platform.processor() or platform.machine()


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device):
    device = torch.device(device)
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Other work on the machine skews every number; the load average says if there was any.
        "load_average": load_average(),
        "versions": {name: _version(name) for name in
                     ("fastrnn", "torch", "numba", "triton", "numpy", "scipy")},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def gemm_rate(device, dtype, n=None, min_seconds=0.25):
    """Best GFLOP/s of an n x n x n product (after one warm-up), timed for ~min_seconds each
    through torch.mm and, where it applies, fastrnn's GEMM helper (oneDNN)."""
    from ..kernels.gemm import linear
    rates = [_rate(torch.mm, device, dtype, n, min_seconds)]
    if torch.device(device).type == "cpu":
        rates.append(_rate(lambda a, b: linear(a, b), device, dtype, n, min_seconds))
    return max(rates)


def _rate(product, device, dtype, n, min_seconds):
    device = torch.device(device)
    cuda = device.type == "cuda"
    if n is None:
        # Big enough to reach the BLAS's plateau, small enough to time in well under a second.
        n = 8192 if cuda else (2048 if dtype in (torch.float32, torch.float64) else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    product(a, b)
    best, spent = float("inf"), 0.0
    while spent < min_seconds or best == float("inf"):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        product(a, b)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
    return 2 * n**3 / best / 1e9
