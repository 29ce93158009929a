"""What gets measured: cell kinds, sizes, dtypes, modes, and the FLOP count of one case.

Shared by the CLI (`python -m fastrnn bench`) and the pytest-benchmark suite in benchmarks/,
so both measure the same grid.
"""

import itertools
from dataclasses import dataclass

import torch

KINDS = ("lstm", "gru", "rnn")          # rnn = Elman RNN with tanh
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MODES = ("inference", "training")       # training = forward + backward of output.sum()
# Backward costs about twice the forward (two GEMMs per forward GEMM), so training counts 3x.
MODE_FLOP_FACTOR = {"inference": 1, "training": 3}

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_ALIASES = {"fp32": "float32", "fp64": "float64", "fp16": "float16", "half": "float16",
                 "bf16": "bfloat16", "float": "float32", "double": "float64"}


@dataclass(frozen=True, order=True)
class Size:
    """Sequence length T, batch B, input size I, hidden size H."""
    T: int
    B: int
    I: int  # noqa: E741 (the conventional name)
    H: int

    def __str__(self):
        return f"{self.T}x{self.B}x{self.I}x{self.H}"


# Default grids: small problems are per-step-overhead bound, large ones GEMM bound; the grid
# spans both so the table shows where each provider wins.
CPU_SIZES = (Size(100, 1, 64, 64), Size(100, 16, 128, 128), Size(100, 64, 256, 256),
             Size(100, 64, 512, 512), Size(50, 8, 1024, 1024))
CUDA_SIZES = (Size(100, 64, 512, 512), Size(1024, 16, 768, 768), Size(100, 1, 256, 256),
              Size(100, 8, 1024, 1024), Size(500, 128, 256, 256))
# --quick: tiny enough that the whole run (compiles included) stays under a minute on 2 cores.
QUICK_CPU_SIZES = (Size(50, 1, 64, 64), Size(50, 16, 128, 128))
QUICK_CUDA_SIZES = (Size(100, 64, 512, 512), Size(100, 1, 256, 256))


def default_sizes(device, quick=False):
    cuda = torch.device(device).type == "cuda"
    if quick:
        return QUICK_CUDA_SIZES if cuda else QUICK_CPU_SIZES
    return CUDA_SIZES if cuda else CPU_SIZES


def parse_size(text):
    """"100x16x128x128" -> Size(100, 16, 128, 128); ValueError says what is wrong."""
    parts = text.strip().lower().split("x")
    if len(parts) != 4:
        raise ValueError(f"size {text!r} must be TxBxIxH, four positive integers "
                         "such as 100x16x128x128")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size {text!r} must be TxBxIxH, four positive integers "
                         "such as 100x16x128x128") from None
    if any(v < 1 for v in values):
        raise ValueError(f"size {text!r}: T, B, I and H must all be >= 1")
    return Size(*values)


def parse_dtype(text):
    name = DTYPE_ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {text!r}; choose from {', '.join(DTYPES)}")
    return name


@dataclass(frozen=True)
class Case:
    """One cell of the grid: every provider runs it with the same weights and input."""
    kind: str
    mode: str
    dtype: str
    size: Size

    @property
    def torch_dtype(self):
        return DTYPES[self.dtype]

    @property
    def flops(self):
        return case_flops(self.kind, self.size, self.mode)

    def __str__(self):
        return f"{self.kind} {self.mode} {self.dtype} {self.size}"


def case_flops(kind, size, mode):
    """2*B*(I+H)*G*H per step (input and recurrent GEMMs), times T, times 3 for training."""
    T, B, I, H = size.T, size.B, size.I, size.H
    return 2 * B * (I + H) * GATES[kind] * H * T * MODE_FLOP_FACTOR[mode]


def make_grid(kinds=KINDS, sizes=CPU_SIZES, dtypes=("float32",), modes=MODES):
    """Every combination, ordered so one size finishes before the next starts."""
    return [Case(kind, mode, dtype, size)
            for dtype, size, kind, mode in itertools.product(dtypes, sizes, kinds, modes)]
