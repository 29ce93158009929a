"""Swap the torch.nn RNNs inside an existing model for fastrnn ones."""

from torch import nn

from . import dispatch
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

# Exact torch.nn types only: a user subclass may override forward, so it is left alone.
_REPLACEMENTS = {
    nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN,
    nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell,
}


def convert(model, backend="auto"):
    """Make every torch.nn LSTM/GRU/RNN module and cell in ``model`` a fastrnn one; return model.

    The modules are changed in place (their class becomes the fastrnn subclass), so they keep
    the same Parameter objects, buffers, hooks, device, dtype and training mode: optimizers and
    any references the caller holds keep working. Converting twice is harmless, and modules
    fastrnn cannot serve (subclasses of the torch classes, parametrized ones) are left alone.
    """
    dispatch.check_name(backend)
    for module in model.modules():
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
            module._set_backend(backend)
        elif isinstance(module, tuple(_REPLACEMENTS.values())):
            module._set_backend(backend)
    return model
