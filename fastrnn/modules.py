"""Drop-in replacements for torch.nn.LSTM/GRU/RNN and their cells.

Each subclasses its torch.nn counterpart: torch's constructor, parameters, validation helpers
(check_forward_args, permute_hidden) and flatten_parameters are reused as they are; only
``forward`` is new, and it runs fastrnn.functional. The one extra constructor argument is the
keyword-only ``backend`` ("auto", "numba", "triton" or "reference").
"""

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import dispatch, functional, step_path, torch_backend


class _BackendMixin:
    """Stores and shows the ``backend`` choice; validates it up front."""

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)  # the torch.nn class's constructor, unchanged
        self._set_backend(backend)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The torch.nn class this one stands in for. A plain class attribute, not a cached
        # lookup: torch.compile traces the forward that reads it, and cannot trace a cache.
        cls._torch_class = next((c for c in cls.__mro__ if c.__module__.startswith("torch.nn")),
                                None)

    @classmethod
    def _torch_name(cls):
        """The torch.nn class's name, as torch's messages name it."""
        return cls._torch_class.__name__

    def _set_backend(self, backend):
        self.backend = dispatch.check_name(backend)

    def extra_repr(self):
        s = super().extra_repr()
        # Keep torch's repr unchanged for the default, so printed models look the same.
        return s if self.backend == "auto" else s + f", backend={self.backend!r}"

    def __prepare_scriptable__(self):
        """torch.jit.script compiles a torch.nn twin: fastrnn's forward is Python around compiled
        kernels, which TorchScript cannot compile. The twin shares this module's parameters,
        buffers and settings, so the scripted module computes what this one does. torch puts
        the twin in place of this module inside a scripted parent, hence the warning."""
        name = self._torch_name()
        warnings.warn(
            f"torch.jit.script: fastrnn.{name} is scripted as torch.nn.{name} (same parameters). "
            f"torch also replaces it with that torch.nn.{name} inside the module being scripted; "
            "torch.export.export records the same computation without changing the model.",
            UserWarning, stacklevel=2)
        twin = copy.copy(self)
        twin.__class__ = self._torch_class
        return twin

    def __getstate__(self):
        # The step path's plan (packed weights, compiled kernels) is rebuilt on first use.
        state = dict(super().__getstate__())
        state.pop("_step_plan", None)
        state.pop("_stream_plan", None)
        return state

    def __setstate__(self, state):
        # Unpickling (torch.load, weights_only too) runs nn.Module's __setstate__ and this check
        # only: a checkpoint naming an unknown backend is refused with the ValueError a
        # constructor would raise. Pickles from before the backend option load as "auto".
        super().__setstate__(state)
        self._set_backend(self.__dict__.get("backend", "auto"))


class _StackMixin(_BackendMixin):
    """forward() shared by LSTM, GRU and RNN: torch's argument handling, fastrnn's compute."""

    _has_cell_state = False
    _kind = "lstm"

    def _zeros(self, batch, size, like):
        directions = 2 if self.bidirectional else 1
        return torch.zeros(self.num_layers * directions, batch, size,
                           dtype=like.dtype, device=like.device)

    def _flat_weights_current(self):
        """Whether _flat_weights still are the registered parameters: a dict lookup each, where
        torch's own check (_update_flat_weights) goes through Module.__getattr__ twice per weight
        (~5 us per call, a tenth of a small layer's overhead)."""
        params = self._parameters
        for name, w in zip(self._flat_weights_names, self._flat_weights):
            if params.get(name) is not w:
                return False
        return True

    def forward(self, input, hx=None):
        result = step_path.step(self, input, hx)
        if result is not None:
            return result
        captured = dispatch.capture()
        if captured is None:
            result = self._forward(input, hx)
            step_path.remember(self, input, hx)
            return result
        if captured == "compile":
            # Dynamo does not trace torch.nn's RNN modules (they run eagerly, between graphs);
            # this one runs eagerly too, on fastrnn's kernels.
            return _eager_stack_forward(self, input, hx)
        # Recorded or transformed: torch.nn's whole forward, for every input form (unbatched
        # and packed too), as the recorder would see it from torch.nn.
        return torch_backend.module_forward(self, input, hx)

    def _forward(self, input, hx):
        # Picks up weights swapped in by torch.func.functional_call (torch >= 2.1 has it).
        update = getattr(self, "_update_flat_weights", None)
        if update is not None and not self._flat_weights_current():
            update()
        choice = None
        if (isinstance(input, torch.Tensor) and input.dim() == 3 and input.numel() > 0
                and input.dtype == self._flat_weights[0].dtype):
            # A batched input is dispatched here, before fastrnn's argument handling: a call
            # that torch runs then costs what torch.nn's does (that handling is ~15-35 us, a
            # third of a short call). Other inputs are dispatched by functional, once.
            choice = dispatch.choose(dispatch.module_call(self, input, hx))
            if choice.name == "torch":
                return torch_backend.module_forward(self, input, hx)
        lstm = self._has_cell_state
        state_size = self.proj_size if getattr(self, "proj_size", 0) > 0 else self.hidden_size
        packed = isinstance(input, PackedSequence)
        sorted_indices = unsorted_indices = None
        batch_sizes = None
        is_batched = True
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            batch = int(batch_sizes[0])
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{self._torch_name()}: Expected input to be 2D or 3D, got "
                                 f"{input.dim()}D instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            batch = input.size(batch_dim)
            if hx is not None:
                self._check_hx_dims(hx, is_batched)
                if not is_batched:
                    hx = tuple(h.unsqueeze(1) for h in hx) if lstm else hx.unsqueeze(1)
        if hx is None:
            hx = self._zeros(batch, state_size, input)
            if lstm:
                hx = (hx, self._zeros(batch, self.hidden_size, input))
            # The zeros fit by construction; functional checks the input itself, with torch's
            # exception types, so torch's check_forward_args (~5 us) would only repeat that.
        else:
            hx = self.permute_hidden(hx, sorted_indices)
            if packed and lstm:
                self._check_packed_hx(hx)
            self.check_forward_args(input, hx, batch_sizes)

        result = functional._stack(
            self._kind, input, hx, self._flat_weights, self.bias, self.num_layers,
            float(self.dropout), self.training, self.bidirectional, self.batch_first, batch_sizes,
            self.backend, self.__dict__.get("nonlinearity", "tanh"), choice=choice)
        output, hidden = result[0], (result[1:] if lstm else result[1])

        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        elif not is_batched:
            output = output.squeeze(batch_dim)
            hidden = tuple(h.squeeze(1) for h in hidden) if lstm else hidden.squeeze(1)
        return output, self.permute_hidden(hidden, unsorted_indices)

    def init_state(self, batch=1):
        """The zero state that ``step()`` starts from: (h, c) for an LSTM, h otherwise, shaped
        as forward()'s hx (num_layers * num_directions, batch, size), or without the batch
        dimension for ``batch=None`` (unbatched steps), on the weights' device and dtype."""
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool)
                                  or batch < 0):
            raise ValueError(f"init_state: batch must be a non-negative int or None (unbatched), "
                             f"got {batch!r}")
        w = self._flat_weights[0]
        lead = (self.num_layers * (2 if self.bidirectional else 1),)
        rows = () if batch is None else (batch,)
        P = self.proj_size if getattr(self, "proj_size", 0) > 0 else self.hidden_size
        h = torch.zeros(lead + rows + (P,), dtype=w.dtype, device=w.device)
        if not self._has_cell_state:
            return h
        return h, torch.zeros(lead + rows + (self.hidden_size,), dtype=w.dtype, device=w.device)

    def step(self, input, state=None):
        """One time step: ``y, state = model.step(x_t, state)`` with x_t (batch, input_size),
        or (input_size,) unbatched, whatever batch_first says; y (batch, D * hidden) is that
        step's output and state the new (h, c) or h, as forward() would return them for the
        sequence so far (``state=None``: zeros, as ``init_state``). Stepping a sequence through
        equals forward() over all of it. Each call returns fresh tensors (none aliases a result
        of an earlier step)."""
        result = step_path.step(self, input, state, step_path.STREAM)
        if result is not None:
            return result
        if self.bidirectional:
            raise ValueError(f"{self._torch_name()}.step: a bidirectional layer's reverse "
                             "direction reads the whole sequence; call forward() on it")
        if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2):
            what = f"{input.dim()}-D" if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"{self._torch_name()}.step: expected one time step, (batch, "
                             f"input_size) or (input_size,), got {what}; for a whole sequence "
                             "call forward()")
        time_dim = 1 if self.batch_first and input.dim() == 2 else 0
        output, state_out = self(input.unsqueeze(time_dim), state)
        step_path.remember(self, input, state, step_path.STREAM)
        return output.squeeze(time_dim), state_out

    def _check_packed_hx(self, hx):
        """torch.nn.LSTM checks a packed call's hx only inside its LSTM op: the same exception
        types here (hx that is not an (h_0, c_0) pair of tensors is a TypeError)."""
        name = self._torch_name()
        if not isinstance(hx, (tuple, list)) or not all(isinstance(h, torch.Tensor) for h in hx):
            raise TypeError(f"{name}: hx for a PackedSequence must be a tuple (h_0, c_0) of "
                            f"tensors, got {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        for h in hx:
            if h.dim() < 3:
                raise IndexError(f"{name}: hx for a PackedSequence must be 3-D (num_layers * "
                                 f"num_directions, batch, size), got {h.dim()}-D")

    def _check_hx_dims(self, hx, is_batched):
        want = 3 if is_batched else 2
        what = "batched 3-D" if is_batched else "unbatched 2-D"
        if self._has_cell_state:
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(f"For {what} input, hx and cx should also be {want}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
        elif hx.dim() != want:
            raise RuntimeError(f"For {what} input, hx should also be {want}-D but got "
                               f"{hx.dim()}-D tensor")


class LSTM(_StackMixin, nn.LSTM):
    __doc__ = ("fastrnn drop-in for torch.nn.LSTM (extra keyword: backend).\n\n"
               + (nn.LSTM.__doc__ or ""))
    _has_cell_state = True


class GRU(_StackMixin, nn.GRU):
    __doc__ = ("fastrnn drop-in for torch.nn.GRU (extra keyword: backend).\n\n"
               + (nn.GRU.__doc__ or ""))
    _kind = "gru"


class RNN(_StackMixin, nn.RNN):
    __doc__ = ("fastrnn drop-in for torch.nn.RNN (extra keyword: backend).\n\n"
               + (nn.RNN.__doc__ or ""))
    _kind = "rnn"


# Runs forward again outside dynamo, where capture() sees what else is going on (autocast, ...).
_eager_stack_forward = torch.compiler.disable(
    _StackMixin.forward, reason="fastrnn's LSTM/GRU/RNN run eagerly under torch.compile, as "
    "torch.nn's do (dynamo does not trace RNN modules); fullgraph=True cannot include them")


class _CellMixin(_BackendMixin):
    """forward() shared by the cells: torch's 1-D/2-D handling, fastrnn's compute."""

    _has_cell_state = False
    _is_cell = True

    def forward(self, input, hx=None):
        result = step_path.step(self, input, hx)
        if result is not None:
            return result
        if dispatch.capture() is not None:
            # Recorded into a graph (torch.compile included: a cell traces well) as torch.nn's.
            return self._torch_class.forward(self, input, hx)
        result = self._forward(input, hx)
        step_path.remember(self, input, hx)
        return result

    def _forward(self, input, hx):
        name = self._torch_name()
        lstm = self._has_cell_state
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        states = () if hx is None else (tuple(hx) if lstm else (hx,))
        for k, h in enumerate(states):
            if h.dim() not in (1, 2):
                label = f"hx[{k}]" if lstm else "hidden"
                raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {h.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
            states = tuple(h.unsqueeze(0) for h in states)
        if not states:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                                device=input.device)
            states = (zeros, zeros) if lstm else (zeros,)
        result = self._step(input, states)
        if not is_batched:
            result = tuple(r.squeeze(0) for r in result) if lstm else result.squeeze(0)
        return result


class LSTMCell(_CellMixin, nn.LSTMCell):
    __doc__ = ("fastrnn drop-in for torch.nn.LSTMCell (extra keyword: backend).\n\n"
               + (nn.LSTMCell.__doc__ or ""))
    _has_cell_state = True
    _kind = "lstm"

    def _step(self, input, states):
        return functional.lstm_cell(input, states, self.weight_ih, self.weight_hh,
                                    self.bias_ih, self.bias_hh, backend=self.backend)


class GRUCell(_CellMixin, nn.GRUCell):
    __doc__ = ("fastrnn drop-in for torch.nn.GRUCell (extra keyword: backend).\n\n"
               + (nn.GRUCell.__doc__ or ""))
    _kind = "gru"

    def _step(self, input, states):
        return functional.gru_cell(input, states[0], self.weight_ih, self.weight_hh,
                                   self.bias_ih, self.bias_hh, backend=self.backend)


class RNNCell(_CellMixin, nn.RNNCell):
    __doc__ = ("fastrnn drop-in for torch.nn.RNNCell (extra keyword: backend).\n\n"
               + (nn.RNNCell.__doc__ or ""))
    _kind = "rnn"

    def _step(self, input, states):
        return functional.rnn_cell(input, states[0], self.weight_ih, self.weight_hh,
                                   self.bias_ih, self.bias_hh, nonlinearity=self.nonlinearity,
                                   backend=self.backend)
