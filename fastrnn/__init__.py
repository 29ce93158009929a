"""fastrnn: fused LSTM/GRU/RNN kernels as drop-in replacements for torch.nn.

    import fastrnn
    model = fastrnn.convert(model)          # swap every torch.nn RNN inside a model
    lstm = fastrnn.LSTM(256, 512, num_layers=2, backend="auto")
"""

from . import checkpoints, dispatch, functional
from .convert import convert
from .dispatch import explain
from .memory import empty_cache
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

checkpoints.allow_weights_only_loading()

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "explain",
           "functional", "dispatch", "empty_cache"]
