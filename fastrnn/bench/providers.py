"""Who gets measured: the provider registry.

A provider turns the torch.nn module of a case (the oracle, whose weights every provider
shares) into a ``Runnable``: a module holding the parameters and a ``forward(x) -> output``.

Built in:
  torch             torch.nn itself (native CPU / oneDNN, or cuDNN on CUDA): the baseline.
  torch-cell-loop   a Python loop over torch.nn.LSTMCell/GRUCell/RNNCell: what users write by hand.
  fastrnn-<name>    fastrnn.LSTM/GRU/RNN with backend=<name>, one per backend that
                    fastrnn.dispatch reports for the device and dtype (no list to keep in sync).

Tests and experiments add their own with ``register()`` (e.g. a deliberately wrong one).
"""

import torch
from torch import nn

import fastrnn
from fastrnn import dispatch


class Runnable:
    """What a provider builds for one case: ``forward(x)`` returns the (T, B, H) output."""

    def __init__(self, forward, module):
        self.forward = forward
        self.module = module


class Provider:
    """Base class. ``default``: part of the run when --providers is not given."""

    name = ""
    default = False

    def supports(self, device, dtype):
        return True

    def build(self, kind, reference):
        raise NotImplementedError

    def strategy(self, kind, size, dtype, device):
        """A short description of how this provider runs the case, or None."""
        return None


class TorchProvider(Provider):
    name = "torch"
    default = True

    def build(self, kind, reference):
        return Runnable(lambda x: reference(x)[0], reference)

    def strategy(self, kind, size, dtype, device):
        if torch.device(device).type == "cuda":
            return "cuDNN" if torch.backends.cudnn.enabled else "native CUDA"
        # torch routes only LSTM (without projection) to oneDNN's fused RNN primitive on CPU;
        # GRU and RNN run its native per-step ops (check: the output's grad_fn).
        onednn = kind == "lstm" and torch.backends.mkldnn.is_available() and dtype != torch.float64
        return "oneDNN" if onednn else "native CPU"


_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


class TorchCellLoopProvider(Provider):
    name = "torch-cell-loop"
    default = True

    def build(self, kind, reference):
        extra = {"nonlinearity": reference.nonlinearity} if kind == "rnn" else {}
        w = reference.weight_ih_l0
        cell = _CELLS[kind](reference.input_size, reference.hidden_size, bias=reference.bias,
                            device=w.device, dtype=w.dtype, **extra)
        with torch.no_grad():  # same weights as the oracle, so the outputs must agree
            cell.weight_ih.copy_(reference.weight_ih_l0)
            cell.weight_hh.copy_(reference.weight_hh_l0)
            if reference.bias:
                cell.bias_ih.copy_(reference.bias_ih_l0)
                cell.bias_hh.copy_(reference.bias_hh_l0)
        lstm = kind == "lstm"

        def forward(x):
            h = x.new_zeros(x.size(1), cell.hidden_size)
            c = h if lstm else None
            outputs = []
            for x_t in x.unbind(0):
                if lstm:
                    h, c = cell(x_t, (h, c))
                else:
                    h = cell(x_t, h)
                outputs.append(h)
            return torch.stack(outputs)

        return Runnable(forward, cell)

    def strategy(self, kind, size, dtype, device):
        return f"Python loop over {size.T} torch.nn.{_CELLS[kind].__name__} calls"


_STACKS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
PREFIX = "fastrnn-"


class FastrnnProvider(Provider):
    def __init__(self, backend):
        self.backend = dispatch.check_name(backend)
        self.name = PREFIX + backend

    def supports(self, device, dtype):
        return (self.backend in ("auto", "torch")
                or self.backend in available_backends(device, dtype))

    def build(self, kind, reference):
        extra = {"nonlinearity": reference.nonlinearity} if kind == "rnn" else {}
        w = reference.weight_ih_l0
        module = _STACKS[kind](reference.input_size, reference.hidden_size, bias=reference.bias,
                               device=w.device, dtype=w.dtype, backend=self.backend, **extra)
        module.load_state_dict(reference.state_dict())
        return Runnable(lambda x: module(x)[0], module)

    def strategy(self, kind, size, dtype, device):
        """What the dispatcher runs for this case, in inference and in training (one line when
        both are the same), with the backend's own description of its strategy."""
        device = torch.device(device)
        weight_bytes = _GATES[kind] * size.H * size.H * dtype.itemsize
        lines = []
        for mode, grad in (("inference", False), ("training", True)):
            call = dispatch.Call(kind, self.backend, device, dtype, size.T, size.B, size.H,
                                 weight_bytes, grad)
            choice = dispatch.choose(call)
            describe = getattr(choice.module, "explain", None)
            line = None if describe is None else str(describe(
                kind, size.T, size.B, size.H, size.H, dtype, device, I=size.I))
            if choice.name == "torch":
                line = f"torch's own ({line}): {choice.reason}"
            lines.append((mode, line))
        text = (lines[0][1] if lines[0][1] == lines[1][1]
                else "; ".join(f"{mode}: {line}" for mode, line in lines))
        if self.backend == "auto" and any(line.startswith("torch's own") for _, line in lines):
            kernels = [name for name in available_backends(device, dtype)
                       if name != "triton" or device.type == "cuda"]
            describe = getattr(dispatch.get(kernels[0]), "explain", None) if kernels else None
            if describe is not None:
                text += "; otherwise: " + str(describe(kind, size.T, size.B, size.H, size.H,
                                                       dtype, device, I=size.I))
        return text


REGISTRY = {}


def register(provider, replace=False):
    """Add a provider under its name; returns it (usable as a decorator on instances)."""
    if provider.name in REGISTRY and not replace:
        raise ValueError(f"a provider named {provider.name!r} is already registered")
    REGISTRY[provider.name] = provider
    return provider


def unregister(name):
    REGISTRY.pop(name, None)


register(TorchProvider())
register(TorchCellLoopProvider())


def available_backends(device, dtype):
    """fastrnn.dispatch.available() without torch (the baseline), tolerating a backend that is
    half written.

    A backend module being developed may not import cleanly or lack ``supports``; the
    benchmark should still run the others rather than fail as a whole.
    """
    device = torch.device(device)
    try:
        return [name for name in dispatch.available(device, dtype) if name != "torch"]
    except Exception:
        names = []
        for name in dispatch.NAMES:
            if name in ("auto", "torch"):
                continue
            try:
                if dispatch.get(name).supports(device, dtype):
                    names.append(name)
            except Exception:
                pass
        return names


def get(name):
    """The provider for a name: a registered one, or fastrnn-<backend>."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith(PREFIX) and name[len(PREFIX):] in dispatch.NAMES:
        return FastrnnProvider(name[len(PREFIX):])
    raise ValueError(f"unknown provider {name!r}; known: {', '.join(known_names())}")


def known_names():
    """Every name --providers accepts."""
    return list(REGISTRY) + [PREFIX + b for b in dispatch.NAMES]


def default_names(device, dtype):
    """The providers a run uses when none are named.

    The reference backend is the oracle's twin (plain PyTorch loops), and triton on CPU is the
    interpreter (seconds per call): both only when asked for with --providers.
    """
    device = torch.device(device)
    names = [p.name for p in REGISTRY.values() if p.default and p.supports(device, dtype)]
    for backend in available_backends(device, dtype):
        if backend == "reference" or (backend == "triton" and device.type == "cpu"):
            continue
        names.append(PREFIX + backend)
    return names
