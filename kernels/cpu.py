"""Which CPU family's measurements the size rules follow.

The numba strategy thresholds (kernels/numba/plan.py) and auto's LSTM hand-offs to torch
(fastrnn/dispatch.py), all in kernels/tuning.py, were measured on 2-core AMD EPYC (Zen 4, Zen 5)
and Intel Xeon machines, and the two families disagree where a layer's weights outgrow L2: the
EPYCs stream them from a fast L3 each step, where the Xeons' L3 is slower (taking the input
projection inside the loop, which doubles the weight read per step, lost 20-35% on a Xeon at 2
MiB and won on the EPYCs up to 8 MiB), and torch's oneDNN LSTM ran nearer the GEMM rate on the
Xeons. So the rules keep one table per family. CPUs of other vendors (not measured) take the
Intel tables.

Where oneDNN's GEMMs stand against MKL's (torch.mm) the AMD generations disagree too: MKL takes
its AVX2 code on AMD CPUs, which on Zen 4 (AVX-512 at half width) keeps up with oneDNN's AVX-512
code, and on Zen 5 (full width) runs at about half its rate. gemm_family() tells them apart for
the rules that hang on that (kernels/gemm.py).
"""

import functools
import os

AMD = "amd"
INTEL = "intel"
ZEN5 = "zen5"
# /proc/cpuinfo's "cpu family" of AMD's Zen 5 (0x1A); Zen 3 and Zen 4 are 0x19.
_ZEN5_CPU_FAMILY = 26


@functools.cache
def family():
    """AMD or INTEL: whose measured tables this machine takes."""
    return AMD if _vendor_id() in ("AuthenticAMD", "HygonGenuine") else INTEL


@functools.cache
def gemm_family():
    """ZEN5 on AMD CPUs from Zen 5 on, else family(): whose measured oneDNN-against-MKL rules
    this machine takes."""
    if family() != AMD:
        return family()
    try:
        generation = int(cpuinfo("cpu family"))
    except ValueError:
        return AMD
    return ZEN5 if generation >= _ZEN5_CPU_FAMILY else AMD


def _vendor_id():
    return cpuinfo("vendor_id")


def cpuinfo(field):
    """The first value of a /proc/cpuinfo field ("model name", "vendor_id"), "" where there is
    none (or no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# Where the OS describes no L2 (or cannot be read): the smaller of the L2s measured here (Zen 4).
_DEFAULT_L2_BYTES = 1 << 20


@functools.cache
def l2_bytes(root="/sys/devices/system/cpu/cpu0/cache"):
    """The size of one core's L2 cache in bytes, from sysfs (Linux: root's index*/level and
    size), else _DEFAULT_L2_BYTES."""
    try:
        for index in sorted(os.listdir(root)):
            with open(f"{root}/{index}/level") as f:
                if f.read().strip() != "2":
                    continue
            with open(f"{root}/{index}/size") as f:
                return _parse_size(f.read().strip())
    except (OSError, ValueError):
        pass
    return _DEFAULT_L2_BYTES


def _parse_size(text):
    """sysfs's cache size ("2048K", "1M") in bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)
