"""The step path: one-step calls (a module at seq_len 1, a cell) in microseconds.

Sampling loops, RL rollouts and streaming call a recurrent network one step at a time at batch
1-16, where the arithmetic is 1-50 us and torch.nn spends 15-500 us around it. A `Plan` holds
everything such a call decides: that its input and state shapes are valid (a plan is made only
after the general path has run, and checked, a call of the same shapes), the dispatcher's
choice for it, and the backend's prepared step (packed weights, summed biases, scratch). It is
kept on the module (``_step_plan``, never pickled) and reused while the call matches: the same
shapes, dtypes and device, grad mode, train/eval, FASTRNN_BACKEND, and the same weight tensors
with the same storage and version counters (an optimizer step, load_state_dict, .to() and
functional_call each change one of these). A matching call then converts its tensors, runs the
prepared step and wraps the results: no dispatcher, no argument handling, no weight packing.

What runs a step is the dispatcher's choice for a step-path call (fastrnn/dispatch.py): without
autograd, the numba backend's compiled step (kernels/numba/stepper.py); with autograd, that step
inside ops' step Functions, or torch's own op called directly where it measured faster
(torch.nn's Python around it is most of a step's cost). On CPU only, for float32 and float64, up
to the sizes measured (`takes`); anything else goes the general way. Results are fresh tensors
every call, never views of one another, of the inputs or of the plan's buffers.
"""

import threading

import numpy as np
import torch

from . import dispatch, ops, torch_backend
from .functional import _layer_weights
from .kernels.tuning import current

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}
_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_NOTHING = (None, None, 0)


def _numpy(t):
    """A C-contiguous numpy view of a CPU tensor (a copy only when it is not contiguous)."""
    if t.requires_grad:
        t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _tracks_grad(x, h, c, weights):
    """Whether autograd records this call (weights: the plan's (name, tensor, ...) entries)."""
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or (h is not None and h.requires_grad) or (c is not None
                                                                 and c.requires_grad):
        return True
    for w in weights:
        if w[1].requires_grad:
            return True
    return False


class Plan:
    """What a call of these shapes decided, and what its step needs (see the module docstring).
    ``run(plan, module, x, h, c)`` is None for calls this path does not take."""

    __slots__ = ("x_shape", "x_dtype", "h_shape", "c_shape", "training", "env", "weights",
                 "grad", "run", "step", "kernel_x", "kernel_out", "out_shape", "hn_shape",
                 "cn_shape", "state_shape", "cell_shape", "kernel_h", "kernel_c", "ndt", "cell_out",
                 "batched", "stream", "lock", "last", "states_unchecked")

    def matches(self, module, x, h, c):
        if (x.shape != self.x_shape or x.dtype is not self.x_dtype or not x.is_cpu
                or module.training is not self.training or dispatch.env_backend() != self.env):
            return False
        if self.states_unchecked:
            # torch's cell op checks the states itself, as in torch.nn's cell forward (which
            # checks only their dimensions first); the grad mode says whether the plan's
            # choice still holds.
            if (h is not None and h.dim() not in (1, 2)) or (c is not None
                                                             and c.dim() not in (1, 2)):
                return False
            return _tracks_grad(x, h, c, self.weights) is self.grad
        if h is None:
            if self.h_shape is not None:
                return False
        elif (self.h_shape is None or h.shape != self.h_shape or h.dtype is not self.x_dtype
              or not h.is_cpu or (c is not None and (c.shape != self.c_shape
                                                     or c.dtype is not self.x_dtype
                                                     or not c.is_cpu))):
            return False
        if self.lock is None:       # torch's op reads the weights as they are
            return _tracks_grad(x, h, c, self.weights) is self.grad
        params = module._parameters   # packed weights: they must be the ones packed
        for name, w, version, ptr in self.weights:
            p = params.get(name)
            if p is not w or p._version != version or p.data_ptr() != ptr:
                return False
        return _tracks_grad(x, h, c, self.weights) is self.grad


def _states(module, hx):
    """(h, c) of a call's hx (c None but for LSTMs), or None when hx is not of a form this
    path takes (the general path then raises torch's error, or handles it)."""
    if hx is None:
        return None, None
    if module._has_cell_state:
        if not isinstance(hx, tuple) or len(hx) != 2:
            return None
        h, c = hx
    else:
        h, c = hx, None
    if type(h) is not torch.Tensor or (c is not None and type(c) is not torch.Tensor):
        return None
    return h, c


# Where a module keeps its plans: of forward()/cell calls, and of the modules' step() calls.
CALL, STREAM = "_step_plan", "_stream_plan"


def step(module, x, hx, slot=CALL):
    """module(x, hx) (slot CALL) or module.step(x, hx) (STREAM) through the step path, or None
    when this call goes the general way."""
    plan = module.__dict__.get(slot)
    if plan is None or plan.run is None or type(x) is not torch.Tensor:
        return None
    states = _states(module, hx)
    if states is None or dispatch.capture() is not None:
        return None
    h, c = states
    if not plan.matches(module, x, h, c):
        return None
    lock = plan.lock
    if lock is None:        # torch's op: nothing of the plan's is written
        return plan.run(plan, module, x, h, c)
    # The plan's buffers serve one call at a time (the kernels release the GIL): a call made
    # while another thread runs this module's plan goes the general way.
    if not lock.acquire(False):
        return None
    try:
        return plan.run(plan, module, x, h, c)
    finally:
        lock.release()


def remember(module, x, hx, slot=CALL):
    """After the general path ran module(x, hx) (or module.step(x, hx): slot STREAM) without
    error: keep the plan of such calls when they are one-step calls (a module's other calls
    leave its plan alone)."""
    if type(x) is not torch.Tensor or dispatch.capture() is not None:
        return
    states = _states(module, hx)
    if states is None:
        return
    cell = getattr(module, "_is_cell", False)
    if cell:
        batched = x.dim() == 2
        names = _CELL_WEIGHTS if module.bias else _CELL_WEIGHTS[:2]
    elif slot == STREAM:
        batched = x.dim() == 2
        names = module._flat_weights_names
    else:
        if x.dim() not in (2, 3):
            return
        batched = x.dim() == 3
        if x.shape[1 if batched and module.batch_first else 0] != 1:
            return
        names = module._flat_weights_names
    h, c = states
    plan = Plan()
    plan.x_shape, plan.x_dtype = x.shape, x.dtype
    plan.h_shape = None if h is None else h.shape
    plan.c_shape = None if c is None else c.shape
    plan.training, plan.env = module.training, dispatch.env_backend()
    params = module._parameters
    plan.weights = tuple((n, params[n], params[n]._version, params[n].data_ptr())
                         for n in names)
    plan.grad = _tracks_grad(x, h, c, plan.weights)
    plan.run = None
    plan.batched, plan.stream = batched, slot == STREAM
    plan.lock, plan.last = threading.Lock(), [_NOTHING, _NOTHING]
    plan.states_unchecked = False
    module.__dict__[slot] = plan
    if x.numel() == 0:
        return
    B = (x.shape[0] if batched else 1) if cell or slot == STREAM else (
        (x.shape[0] if module.batch_first else x.shape[1]) if batched else 1)
    w_hh = module.weight_hh if cell else module._flat_weights[1]
    call = dispatch.Call(
        module._kind, module.backend, x.device, x.dtype, 1, B, module.hidden_size,
        w_hh.numel() * w_hh.element_size(), plan.grad, cell=cell,
        projected=getattr(module, "proj_size", 0) > 0,
        layer_dropout=not cell and module.training and module.dropout > 0
        and module.num_layers > 1, step_path=True)
    if takes(call):
        (_cell_plan if cell else _module_plan)(plan, module, x, B, dispatch.choose(call))


def takes(call):
    """Whether the step path plans a one-step call like this (dispatch.explain() asks too):
    on CPU, float32 or float64, up to the sizes the step benchmark measured; dropout between
    layers (the general path draws it) and packed input go the general way."""
    rules = current()
    return (call.steps == 1 and not call.packed and not call.layer_dropout
            and call.device.type == "cpu" and call.dtype in _NUMPY
            and call.batch <= rules.step_max_rows and call.hidden <= rules.step_max_hidden)


def compiled_under_autograd(directions):
    """Whether the backend's compiled step runs a stack of these directions under autograd
    (ops' step Functions take one direction at a time; bidirectional layers go the general
    way)."""
    return directions == 1


# ------------------------------------------------------------------------ LSTM, GRU, RNN


def _module_plan(plan, module, x, B, choice):
    batched = plan.batched
    D = 2 if module.bidirectional else 1
    L, H = module.num_layers, module.hidden_size
    P = module.proj_size if getattr(module, "proj_size", 0) > 0 else H
    plan.state_shape, plan.cell_shape = (L * D, B, P), (L * D, B, H)
    if choice.name == "torch":
        # (step() calls take forward()'s plan for that: their general path is a forward call)
        plan.run = None if plan.stream else _torch_module
        plan.lock = None    # torch's op reads the weights as they are at each call
        return
    make = getattr(choice.module, "stack_step", None)
    if make is None or (plan.grad and not compiled_under_autograd(D)):
        return
    weights = module._flat_weights
    per = len(weights) // (L * D)
    layer_weights = [_layer_weights(weights, i, per, module.bias) for i in range(L * D)]
    plan.step = make(module._kind, layer_weights, L, D, B,
                     module.__dict__.get("nonlinearity", "tanh"))
    if plan.step is None:
        return
    plan.kernel_x, plan.kernel_out = (1, B, x.shape[-1]), (1, B, D * P)
    if plan.stream:
        plan.out_shape = (B, D * P) if batched else (D * P,)
    elif batched:
        plan.out_shape = (B, 1, D * P) if module.batch_first else (1, B, D * P)
    else:
        plan.out_shape = (1, D * P)
    plan.hn_shape = (L * D, B, P) if batched else (L * D, P)
    plan.cn_shape = (L * D, B, H) if batched else (L * D, H)
    plan.ndt = _NUMPY[x.dtype]
    if plan.grad:
        plan.step = _autograd_layers(module, plan.step.layers, layer_weights, choice.module,
                                     plan.ndt)
        plan.run = _autograd_module
        return
    plan.kernel_h, plan.kernel_c = plan.state_shape, plan.cell_shape
    if L * D == 1:   # the layer's own step, without the stack's loop
        plan.step, plan.kernel_h, plan.kernel_c = plan.step.layers[0].step, (B, P), (B, H)
    plan.run = _compiled_lstm if module._has_cell_state else _compiled_h


def _state(plan, k, init, shape):
    """A fresh C-contiguous array holding state k's initial value (zeros without). A state
    this plan returned last call (a loop feeding h back) is copied from the array behind it,
    without converting the tensor again."""
    if init is None:
        return np.zeros(shape, plan.ndt)
    last = plan.last[k]
    if init is last[0] and init.data_ptr() == last[2]:
        return last[1].copy()
    # (a copy is C-contiguous whatever the tensor's strides)
    return (init.detach() if init.requires_grad else init).numpy().copy()


def _input(plan, x):
    """x as the kernel's (1, B, I) C-contiguous array (a view unless x is not contiguous)."""
    x = _numpy(x)
    return x if x.shape == plan.kernel_x else x.reshape(plan.kernel_x)


def _give(plan, k, a):
    """State array k as the tensor returned, remembered for _state."""
    t = torch.from_numpy(a)
    plan.last[k] = (t, a, t.data_ptr())
    return t


def _compiled_lstm(plan, module, x, h0, c0):
    out = np.empty(plan.out_shape, plan.ndt)
    h = _state(plan, 0, h0, plan.hn_shape)
    c = _state(plan, 1, c0, plan.cn_shape)
    plan.step(_input(plan, x), h.reshape(plan.kernel_h),
              c.reshape(plan.kernel_c), out.reshape(plan.kernel_out))
    return torch.from_numpy(out), (_give(plan, 0, h), _give(plan, 1, c))


def _compiled_h(plan, module, x, h0, _c0):
    out = np.empty(plan.out_shape, plan.ndt)
    h = _state(plan, 0, h0, plan.hn_shape)
    plan.step(_input(plan, x), h.reshape(plan.kernel_h), None,
              out.reshape(plan.kernel_out))
    return torch.from_numpy(out), _give(plan, 0, h)


def _autograd_layers(module, layer_steps, layer_weights, backend, ndt):
    """Each layer's step as the ops Function's ``run`` (see ops.LSTMStepFunction), with the
    Function's weight arguments ((w_ih, w_hh, b_ih, b_hh, w_hr) per layer, as the backend's
    stack_step took them), and the backend."""
    layers = []
    for layer, weights in zip(layer_steps, layer_weights):
        if module._kind == "lstm":
            args = weights
        else:
            args = weights[:4]
            if module._kind == "rnn":
                args += (module.nonlinearity,)
        layers.append((_saving_run(layer, ndt), args))
    return layers, backend


def _saving_run(layer, ndt):
    def run(x, h0, c0):
        B = layer.B
        out = np.empty((1, B, h0.shape[-1]), ndt)
        h = np.array(_numpy(h0), copy=True)
        c = None if c0 is None else np.array(_numpy(c0), copy=True)
        saved = [np.empty(shape, ndt) for shape in layer.saved_shapes]
        layer.saving(_numpy(x).reshape(1, B, -1), h, c, out, saved)
        return (torch.from_numpy(out), torch.from_numpy(h),
                None if c is None else torch.from_numpy(c), [torch.from_numpy(a) for a in saved])
    return run


_STEP_FUNCTIONS = {"lstm": ops.LSTMStepFunction, "gru": ops.GRUStepFunction,
                   "rnn": ops.RNNStepFunction}


def _autograd_module(plan, module, x, h0, c0):
    """The layers' steps as ops Functions, so that autograd records them."""
    (layers, backend), function = plan.step, _STEP_FUNCTIONS[module._kind]
    lstm = module._has_cell_state
    state, cell = plan.state_shape, plan.cell_shape
    h0 = torch.zeros(state, dtype=x.dtype) if h0 is None else h0.reshape(state)
    if lstm:
        c0 = torch.zeros(cell, dtype=x.dtype) if c0 is None else c0.reshape(cell)
    x = x.view(plan.kernel_x)
    hs, cs = [], []
    for i, (run, weights) in enumerate(layers):
        if lstm:
            x, h, c = function.apply(x, h0[i], c0[i], *weights, run, backend)
            cs.append(c)
        else:
            x, h = function.apply(x, h0[i], *weights, run, backend)
        hs.append(h)
    out = x.view(plan.out_shape)
    h_n = (hs[0].unsqueeze(0) if len(hs) == 1 else torch.stack(hs)).view(plan.hn_shape)
    if not lstm:
        return out, h_n
    return out, (h_n, (cs[0].unsqueeze(0) if len(cs) == 1 else torch.stack(cs)).view(
        plan.cn_shape))


def _torch_module(plan, module, x, h, c):
    """torch's own op on the call as torch.nn.LSTM/GRU/RNN.forward makes it, without the
    argument handling that the plan has already done."""
    lstm = module._has_cell_state
    if not plan.batched:
        x = x.unsqueeze(0 if module.batch_first else 1)
        h = None if h is None else h.unsqueeze(1)
        c = None if c is None else c.unsqueeze(1)
    if h is None:
        h = torch.zeros(plan.state_shape, dtype=x.dtype)
        c = torch.zeros(plan.cell_shape, dtype=x.dtype) if lstm else None
    result = torch_backend.stack(
        module._kind, module.__dict__.get("nonlinearity", "tanh"), x, None,
        (h, c) if lstm else h, module._flat_weights, module.bias, module.num_layers,
        float(module.dropout), module.training, module.bidirectional, module.batch_first)
    out, hidden = result[0], (result[1:] if lstm else result[1])
    if not plan.batched:
        out = out.squeeze(0 if module.batch_first else 1)
        hidden = tuple(t.squeeze(1) for t in hidden) if lstm else hidden.squeeze(1)
    return out, hidden


# -------------------------------------------------------------------------------- cells


def _cell_plan(plan, module, x, B, choice):
    batched, H = plan.batched, module.hidden_size
    plan.state_shape = plan.cell_shape = (1, B, H)
    if choice.name == "torch":
        plan.run = _torch_cell
        plan.lock, plan.states_unchecked = None, True
        return
    make = getattr(choice.module, "stack_step", None)
    if make is None:
        return
    layer_weights = [(module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh, None)]
    plan.step = make(module._kind, layer_weights, 1, 1, B,
                     module.__dict__.get("nonlinearity", "tanh"))
    if plan.step is None:
        return
    plan.kernel_x = (1, B, x.shape[-1])
    plan.hn_shape = plan.cn_shape = (B, H) if batched else (H,)
    plan.ndt = _NUMPY[x.dtype]
    plan.cell_out = np.empty((1, B, H), plan.ndt)  # the kernel's copy of h_t, kept here
    if plan.grad:
        plan.step = _autograd_layers(module, plan.step.layers, layer_weights, choice.module,
                                     plan.ndt)
        plan.run = _autograd_cell
        return
    plan.step, plan.kernel_h = plan.step.layers[0].step, (B, H)
    plan.run = _compiled_lstm_cell if module._has_cell_state else _compiled_cell


def _compiled_lstm_cell(plan, module, x, h0, c0):
    h = _state(plan, 0, h0, plan.hn_shape)
    c = _state(plan, 1, c0, plan.cn_shape)
    kernel = plan.kernel_h
    plan.step(_input(plan, x), h.reshape(kernel), c.reshape(kernel),
              plan.cell_out)
    return _give(plan, 0, h), _give(plan, 1, c)


def _compiled_cell(plan, module, x, h0, _c0):
    h = _state(plan, 0, h0, plan.hn_shape)
    plan.step(_input(plan, x), h.reshape(plan.kernel_h), None, plan.cell_out)
    return _give(plan, 0, h)


def _autograd_cell(plan, module, x, h0, c0):
    (((run, weights),), backend), function = plan.step, _STEP_FUNCTIONS[module._kind]
    rows = plan.state_shape[1:]
    h0 = torch.zeros(rows, dtype=x.dtype) if h0 is None else h0.reshape(rows)
    x = x.view(plan.kernel_x)
    if module._has_cell_state:
        c0 = torch.zeros(rows, dtype=x.dtype) if c0 is None else c0.reshape(rows)
        _, h, c = function.apply(x, h0, c0, *weights, run, backend)
        return h.view(plan.hn_shape), c.view(plan.cn_shape)
    return function.apply(x, h0, *weights, run, backend)[1].view(plan.hn_shape)


_TORCH_CELLS = {"lstm": "lstm", "gru": "gru"}


def _torch_cell(plan, module, x, h, c):
    """torch's own cell op, as torch.nn's cell forward calls it."""
    lstm = module._has_cell_state
    if not plan.batched:
        x = x.unsqueeze(0)
        h = None if h is None else h.unsqueeze(0)
        c = None if c is None else c.unsqueeze(0)
    if h is None:
        h = torch.zeros(plan.state_shape[1:], dtype=x.dtype)
        c = torch.zeros(plan.state_shape[1:], dtype=x.dtype) if lstm else None
    kind = _TORCH_CELLS.get(module._kind) or "rnn_" + module.nonlinearity
    w = module._parameters      # (Module.__getattr__ costs ~0.4 us a lookup)
    result = torch_backend.cell(kind, x, (h, c) if lstm else (h,), w["weight_ih"],
                                w["weight_hh"], w.get("bias_ih"), w.get("bias_hh"))
    if not plan.batched:
        result = tuple(t.squeeze(0) for t in result) if lstm else result.squeeze(0)
    return result
