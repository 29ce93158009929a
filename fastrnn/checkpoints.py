"""Whole-model checkpoints: fastrnn's modules load under torch.load(weights_only=True).

torch.save(model) of a model holding fastrnn modules pickles each module by its class, and
weights_only loading refuses any class not allowlisted ("Unsupported global:
fastrnn.modules.LSTM"), so programs that allowlist torch.nn's RNN classes (or their own model
classes) with torch.serialization.safe_globals broke at the end of training. Importing fastrnn
allowlists its six module classes. That is safe: unpickling one creates the instance and runs
nn.Module.__setstate__ plus fastrnn's check of the backend name (modules.py), nothing else; every
other global inside the checkpoint, a fastrnn module's attributes included, is still checked by
torch's weights-only unpickler and refused unless allowlisted.
"""

import torch

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

MODULE_CLASSES = (LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell)


def allow_weights_only_loading():
    torch.serialization.add_safe_globals(list(MODULE_CLASSES))
