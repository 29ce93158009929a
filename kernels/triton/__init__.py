"""GPU kernels in Triton: the ``triton`` backend (interface: see fastrnn/reference.py).

Also runs on CPU tensors under the Triton interpreter: set ``TRITON_INTERPRET=1`` in the
environment *before* triton is imported (before importing fastrnn) - that is how CI tests it.
Importing this package never imports triton; the kernels are loaded on first use, so a missing
triton (an optional extra: ``pip install fastrnn[gpu]``) only makes ``supports()`` False, and
``unavailable_reason()``, ``unsupported_reason()`` and the RuntimeError of a call say why.

Strategies (see ``explain()``):

- ``persistent``: one launch per direction; one program per tile of 16 sequences keeps W_hh
  (and W_hr) in registers and loops over time inside the kernel. Chosen by "auto" when the
  padded weight tiles are small (G * H * P [+ H * P] <= 16384 float32 elements, e.g. LSTM H=P=64,
  GRU H=64, RNN H=128).
- ``step``: one fused launch per time step (two with an LSTM projection): tl.dot of h_{t-1}
  with tiles of W_hh (K-loop over P) plus the gate epilogue and state update. Any size.

Force one with ``FASTRNN_TRITON_STRATEGY=step|persistent|auto`` (read at each call) or,
in-process, ``with fastrnn.kernels.triton.options(strategy="step"): ...`` (which also takes
block sizes, for tests).

Supported dtypes: float32, float16, bfloat16 (computed in float32, stored in their own dtype;
every tl.dot is IEEE float32, never tf32). float64 is not supported (supports() says False).
Beyond the interface: ``xg`` may be float32 while the rest is float16/bfloat16 (outputs take
h0's dtype); that spares the pre-activations one half-precision rounding, which for LSTMs
costs more accuracy than everything inside the kernels.
"""

import importlib.util
import os

import torch

NAME = "triton"

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_launchers = None
_import_error = None


def _load():
    """Import the kernels (and triton) once; remember a failure instead of raising it."""
    global _launchers, _import_error
    if _launchers is None and _import_error is None:
        try:
            from . import launchers
        except Exception as exc:  # ImportError, or a broken triton install
            _import_error = exc
        else:
            _launchers = launchers
    return _launchers


INSTALL_HINT = "pip install fastrnn[gpu]"


def _triton_installed():
    return importlib.util.find_spec("triton") is not None


def unavailable_reason():
    """Why triton cannot be used at all ("" when it can): not installed, or failed to import.
    Imports triton (once) when it is installed."""
    if not _triton_installed():
        return f"triton is not installed: {INSTALL_HINT}"
    if _load() is None:
        return f"triton failed to import ({type(_import_error).__name__}: {_import_error})"
    return ""


def supports(device, dtype):
    """True for CUDA tensors of float32/float16/bfloat16; for CPU tensors only when the
    kernels run under the Triton interpreter (TRITON_INTERPRET=1 set before triton import)."""
    device = torch.device(device)
    if dtype not in _DTYPES or not _triton_installed():
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and _load() is not None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return False
        launchers = _load()
        return launchers is not None and launchers.INTERPRETED
    return False


def unsupported_reason(device, dtype):
    """Why supports(device, dtype) is False, as advice ("" when it is True)."""
    device = torch.device(device)
    if supports(device, dtype):
        return ""
    missing = unavailable_reason()
    if missing:
        return f"{missing} (or use another backend)."
    if dtype not in _DTYPES:
        return "The triton backend runs float32, float16 and bfloat16 only."
    if device.type == "cpu":
        return ("On CPU the triton kernels need the Triton interpreter: set TRITON_INTERPRET=1 "
                "before triton is imported (before importing fastrnn), "
                "or move the tensors to CUDA.")
    if device.type == "cuda":
        return "CUDA is not available to torch."
    return f"The triton backend runs on CUDA (or CPU via the interpreter), not {device.type}."


def _require(tensor):
    """Raise a RuntimeError that says what to do when the kernels cannot run on ``tensor``."""
    launchers = _load()
    if launchers is None:
        raise RuntimeError(
            f"fastrnn triton backend: triton is not available ({unavailable_reason()}). Use "
            "another backend instead.")
    if tensor.dtype not in _DTYPES:
        raise RuntimeError(
            f"fastrnn triton backend: dtype {tensor.dtype} is not supported "
            "(float32, float16, bfloat16 are); use another backend for it.")
    if tensor.device.type == "cpu" and not launchers.INTERPRETED:
        raise RuntimeError(
            "fastrnn triton backend: the tensors are on the CPU but the Triton kernels are "
            "compiled for a GPU. Move the tensors to a CUDA device, or set the environment "
            "variable TRITON_INTERPRET=1 before triton is imported (before importing fastrnn) "
            "to run them with the Triton interpreter on the CPU (slow; meant for tests).")
    if tensor.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"fastrnn triton backend: device {tensor.device} is not supported.")
    return launchers


def options(strategy=None, block_b=None, block_h=None, block_k=None, poison=False):
    """Context manager that forces a strategy ("auto" | "step" | "persistent") and/or tile
    sizes for the calls inside it (tests, benchmarks); ``poison=True`` NaN-fills every buffer
    before the kernels write it. Imports triton."""
    launchers = _load()
    if launchers is None:
        raise RuntimeError(
            f"fastrnn triton backend: triton is not available ({unavailable_reason()})")
    return launchers.options(strategy=strategy, block_b=block_b, block_h=block_h, block_k=block_k,
                             poison=poison)


def explain(kind, T, B, H, P=None, dtype=torch.float32, device="cuda", I=None):
    """One line saying which strategy (and grid/tiles) this backend would use.

    ``kind``: "lstm" | "gru" | "rnn_tanh" | "rnn_relu" ("rnn" means tanh). ``P``: proj_size
    for an LSTM with projection (None or H: no projection). ``I`` (the input size) is accepted
    for the benchmark's uniform call and does not change this backend's choice. Honours
    FASTRNN_TRITON_STRATEGY and options(). Never raises for an unsupported device/dtype: it says
    so instead.
    """
    kind = {"rnn": "rnn_tanh"}.get(kind, kind)
    proj = kind == "lstm" and P is not None and P != H
    P = P if proj else H
    if not supports(device, dtype):
        why = unavailable_reason() or f"{torch.device(device).type}/{dtype} unsupported"
        return f"triton: not used ({why})"
    try:
        return "triton " + _launchers.describe(kind, T, B, H, P, proj)
    except ValueError as exc:
        return f"triton: invalid request ({exc})"


# ------------------------------------------------------------------ backend interface


def lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, need_grad):
    _require(xg)
    return _require(h0).forward("lstm", xg, w_hh, w_hr, None, h0, c0, lengths, reverse, need_grad)


def lstm_backward(grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse):
    dg, _, dh0, dc0, dw_hr = _require(h0).backward(
        "lstm", grad_out, grad_hn, grad_cn, saved, w_hh, w_hr, h0, c0, out, lengths, reverse)
    return dg, dh0, dc0, dw_hr


def gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, need_grad):
    _require(xg)
    out, h_n, _, saved = _require(h0).forward(
        "gru", xg, w_hh, None, b_hn, h0, None, lengths, reverse, need_grad)
    return out, h_n, saved


def gru_backward(grad_out, grad_hn, saved, w_hh, b_hn, h0, out, lengths, reverse):
    dxg, dhg, dh0, _, _ = _require(h0).backward(
        "gru", grad_out, grad_hn, None, saved, w_hh, None, h0, None, out, lengths, reverse)
    return dxg, dhg, dh0


def _rnn_cell(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return "rnn_" + nonlinearity


def rnn_forward(xg, w_hh, h0, lengths, reverse, nonlinearity, need_grad):
    _require(xg)
    out, h_n, _, saved = _require(h0).forward(
        _rnn_cell(nonlinearity), xg, w_hh, None, None, h0, None, lengths, reverse, need_grad)
    return out, h_n, saved


def rnn_backward(grad_out, grad_hn, saved, w_hh, h0, out, lengths, reverse, nonlinearity):
    dg, _, dh0, _, _ = _require(h0).backward(
        _rnn_cell(nonlinearity), grad_out, grad_hn, None, saved, w_hh, None, h0, None, out,
        lengths, reverse)
    return dg, dh0


__all__ = [
    "NAME", "supports", "unsupported_reason", "unavailable_reason", "explain", "options",
    "lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward", "rnn_backward",
]
