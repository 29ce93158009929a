"""The step path (fastrnn/step_path.py, issue 33): one-step calls of the modules and cells, and
the modules' init_state()/step() streaming API.

Every test makes the plan with a first call and checks that the later calls ran it (the plan's
``run`` is the compiled or autograd one), so that a test passes only through the step path."""

import copy
import io
import threading

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import step_path

I, H, P = 7, 11, 5
COMPILED = (step_path._compiled_lstm, step_path._compiled_h, step_path._compiled_lstm_cell,
            step_path._compiled_cell)
AUTOGRAD = (step_path._autograd_module, step_path._autograd_cell)

MODULES = [
    ("LSTM", {}), ("LSTM", {"num_layers": 2}), ("LSTM", {"proj_size": P}),
    ("LSTM", {"batch_first": True, "bias": False}), ("LSTM", {"bidirectional": True}),
    ("LSTM", {"num_layers": 2, "proj_size": P, "bidirectional": True}),
    ("GRU", {}), ("GRU", {"num_layers": 3}), ("GRU", {"batch_first": True, "bias": False}),
    ("GRU", {"bidirectional": True, "num_layers": 2}),
    ("RNN", {}), ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
    ("RNN", {"batch_first": True, "bias": False}), ("RNN", {"bidirectional": True}),
]
MODULE_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in MODULES]
CELLS = [("LSTMCell", {}), ("LSTMCell", {"bias": False}), ("GRUCell", {}),
         ("GRUCell", {"bias": False}), ("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"})]
CELL_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in CELLS]


def _pair(name, kw, dtype=torch.float64):
    torch.manual_seed(0)
    ref = getattr(nn, name)(I, H, **kw).to(dtype)
    ours = getattr(fastrnn, name)(I, H, **kw).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _flat(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for r in result for t in _flat(r)]


def _close(a, b, dtype=torch.float64):
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 2e-6,
                                                                           "rtol": 1e-5}
    a, b = _flat(a), _flat(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, **tol)


def _step_input(module, B, dtype=torch.float64):
    """A seq_len-1 input for the module (B None: unbatched)."""
    if B is None:
        return torch.randn(1, I, dtype=dtype)
    return torch.randn((B, 1, I) if module.batch_first else (1, B, I), dtype=dtype)


def _state_of(ref, x):
    with torch.no_grad():
        out = ref(x)
    return out if isinstance(ref, nn.RNNCellBase) else out[1]


def _with_state(ref, x, given):
    if not given:
        return None
    state = _state_of(ref, x)
    return tuple(s * 0.5 for s in state) if isinstance(state, tuple) else state * 0.5


def _runs_the_compiled_plan(ref, ours, x, given):
    """ours(x, hx) equals ref's three times over, the later calls through the compiled plan."""
    hx = _with_state(ref, x, given)
    with torch.no_grad():
        expected = ref(x, hx)
        for _ in range(3):
            _close(ours(x, hx), expected)
    assert ours._step_plan.run in COMPILED


@pytest.mark.parametrize("name, kw", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("B", [None, 1, 3])
@pytest.mark.parametrize("given", [False, True], ids=["hx=None", "hx"])
def test_module_steps_equal_torch(name, kw, B, given):
    ref, ours = _pair(name, kw)
    _runs_the_compiled_plan(ref, ours, _step_input(ref, B), given)


@pytest.mark.parametrize("name, kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("B", [None, 1, 4])
@pytest.mark.parametrize("given", [False, True], ids=["hx=None", "hx"])
def test_cell_steps_equal_torch(name, kw, B, given):
    ref, ours = _pair(name, kw)
    x = torch.randn(I, dtype=torch.float64) if B is None else torch.randn(B, I,
                                                                            dtype=torch.float64)
    _runs_the_compiled_plan(ref, ours, x, given)


@pytest.mark.parametrize("name, kw", MODULES[:4] + MODULES[6:9] + MODULES[10:13] + CELLS,
                         ids=MODULE_IDS[:4] + MODULE_IDS[6:9] + MODULE_IDS[10:13] + CELL_IDS)
@pytest.mark.parametrize("given", [False, True], ids=["hx=None", "hx"])
def test_steps_under_autograd_give_torchs_gradients(name, kw, given):
    ref, ours = _pair(name, kw)
    cell = name.endswith("Cell")
    x0 = torch.randn(3, I, dtype=torch.float64) if cell else _step_input(ref, 3)
    hx0 = _with_state(ref, x0, given)
    results = []
    for model in (ref, ours, ours, ours):
        model.zero_grad()
        x = x0.clone().requires_grad_()
        hx = None if hx0 is None else tuple(
            h.clone().requires_grad_() for h in _flat(hx0))
        hx_arg = hx if hx is None or len(hx) == 2 else hx[0]
        out = model(x, hx_arg)
        weights = [torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view(t.shape)
                   for t in _flat(out)]
        sum((t * w).sum() for t, w in zip(_flat(out), weights)).backward()
        results.append(_flat(out) + [x.grad] + [h.grad for h in hx or ()]
                       + [p.grad for p in model.parameters()])
    assert ours._step_plan.run in AUTOGRAD
    for r in results[1:]:
        _close(r, results[0])


def test_float32_steps_equal_torch_and_split_rows(tune):
    ref, ours = _pair("LSTM", {"num_layers": 2}, torch.float32)
    x = _step_input(ref, 6, torch.float32)
    for rules in ({}, {"step_split_min_rows": 2, "step_split_min_macs": 0}):
        tune(**rules)
        ours.__dict__.pop("_step_plan", None)
        with torch.no_grad():
            for _ in range(3):
                _close(ours(x), ref(x), torch.float32)
    assert ours._step_plan.step.layers[0].step.__name__ == "_split"


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_the_plan_follows_the_weights(name, monkeypatch):
    ref, ours = _pair(name, {})
    x = _step_input(ref, 2)

    def check():
        with torch.no_grad():
            _close(ours(x), ref(x))
            _close(ours(x), ref(x))
        assert ours._step_plan.run in COMPILED

    check()
    # an optimizer step (in place: the version counters move)
    for model in (ref, ours):
        model.zero_grad()
        model(x)[0].sum().backward()
        torch.optim.SGD(model.parameters(), lr=0.5).step()
    check()
    # load_state_dict
    state = {k: torch.randn_like(v) for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    check()
    # .data swapped (no version change: the storage says so)
    w = torch.randn_like(ref.weight_hh_l0)
    ref.weight_hh_l0.data = w.clone()
    ours.weight_hh_l0.data = w.clone()
    check()
    # a new Parameter assigned
    w = nn.Parameter(torch.randn_like(ref.weight_ih_l0))
    ref.weight_ih_l0 = nn.Parameter(w.detach().clone())
    ours.weight_ih_l0 = nn.Parameter(w.detach().clone())
    check()
    # functional_call with other weights, then the module's own again
    other = {k: torch.randn_like(v) for k, v in ref.named_parameters()}
    with torch.no_grad():
        _close(torch.func.functional_call(ours, other, (x,)),
               torch.func.functional_call(ref, other, (x,)))
    check()
    # FASTRNN_BACKEND: the reference backend then runs it (the general path)
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    with torch.no_grad():
        _close(ours(x), ref(x))
        _close(ours(x), ref(x))
    assert ours._step_plan.run is None
    monkeypatch.delenv("FASTRNN_BACKEND")
    check()
    # .to(float32): a new dtype, new storage
    ref.float()
    ours.float()
    with torch.no_grad():
        _close(ours(x.float()), ref(x.float()), torch.float32)
        _close(ours(x.float()), ref(x.float()), torch.float32)


def test_results_are_fresh_tensors():
    ref, ours = _pair("LSTM", {})
    x = _step_input(ref, 2)
    h0 = tuple(s.clone() for s in _state_of(ref, x))
    keep = tuple(s.clone() for s in h0)
    with torch.no_grad():
        out1, (h1, c1) = ours(x, h0)
        out2, (h2, c2) = ours(x, h0)
        assert all(torch.equal(a, b) for a, b in zip(h0, keep))    # the inputs stay as given
        tensors = [out1, h1, c1, out2, h2, c2, x, *h0]
        pointers = {t.data_ptr() for t in tensors}
        assert len(pointers) == len(tensors)
        expected = ref(x, h0)
        h1.add_(100.0)                   # what the caller does with a result stays theirs
        _close(ours(x, h0), expected)
        # a loop feeding h back (the plan copies its own last state without converting it)
        hx, rx = h0, h0
        for _ in range(4):
            out, hx = ours(x, hx)
            expected, rx = ref(x, rx)
            _close((out, hx), (expected, rx))
        hx[0].mul_(0.0)                  # changed in place: the next step must see it
        _close(ours(x, hx), ref(x, (torch.zeros_like(rx[0]), rx[1])))


def test_threads_calling_one_module():
    ref, ours = _pair("GRU", {})
    x = _step_input(ref, 3)
    with torch.no_grad():
        expected = ref(x)
        ours(x)
    failures = []

    def work():
        with torch.no_grad():
            for _ in range(200):
                out, h = ours(x)
                if not (torch.allclose(out, expected[0]) and torch.allclose(h, expected[1])):
                    failures.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_bad_input_after_a_plan_still_raises_as_torch():
    ref, ours = _pair("LSTM", {})
    x = _step_input(ref, 2)
    with torch.no_grad():
        ours(x)
        ours(x)
        for model in (ref, ours):
            with pytest.raises(RuntimeError):
                model(x, (torch.zeros(1, 3, H, dtype=x.dtype),) * 2)
            with pytest.raises((RuntimeError, ValueError)):
                model(x.float())
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 2, I + 1, dtype=x.dtype))


def test_copies_and_checkpoints_leave_the_plan_behind():
    ref, ours = _pair("GRU", {"num_layers": 2})
    x = _step_input(ref, 2)
    with torch.no_grad():
        ours(x)
        ours(x)
        state = ours.step(x[0], ours.init_state(2))
    assert "_step_plan" in ours.__dict__ and "_stream_plan" in ours.__dict__
    twin = copy.deepcopy(ours)
    assert "_step_plan" not in twin.__dict__
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert "_step_plan" not in loaded.__dict__
    with torch.no_grad():
        for model in (twin, loaded):
            _close(model(x), ref(x))
            _close(model.step(x[0], model.init_state(2)), state)


# -------------------------------------------------------------------- init_state / step


def _sequence_equal(name, kw, B, dtype, T=6):
    ref, ours = _pair(name, kw, dtype)
    seq_shape = (T, I) if B is None else ((B, T, I) if ours.batch_first else (T, B, I))
    seq = torch.randn(seq_shape, dtype=dtype)
    with torch.no_grad():
        expected_out, expected_state = ref(seq)
        state = ours.init_state(B)
        outs = []
        for t in range(T):
            x_t = seq[t] if B is None or not ours.batch_first else seq[:, t]
            if B is not None and not ours.batch_first:
                x_t = seq[t]
            y, state = ours.step(x_t, state)
            outs.append(y)
    time_dim = 1 if ours.batch_first and B is not None else 0
    _close((torch.stack(outs, time_dim), state), (expected_out, expected_state), dtype)
    assert ours._stream_plan.run in COMPILED


STEPPED = [m for m in MODULES if not m[1].get("bidirectional")]
STEPPED_IDS = [i for m, i in zip(MODULES, MODULE_IDS) if not m[1].get("bidirectional")]


@pytest.mark.parametrize("name, kw", STEPPED, ids=STEPPED_IDS)
@pytest.mark.parametrize("B", [None, 1, 5])
def test_stepping_a_sequence_equals_forward(name, kw, B):
    _sequence_equal(name, kw, B, torch.float64)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_stepping_in_float32_equals_forward(name):
    _sequence_equal(name, {"num_layers": 2}, 3, torch.float32)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_stepping_packed_sequences_ends_where_forward_does(name):
    # Sequences of different lengths stepped together: each one's state after its own last
    # step is forward()'s h_n for the packed batch.
    ref, ours = _pair(name, {"num_layers": 2})
    lengths = torch.tensor([6, 3, 1, 4])
    seq = torch.randn(6, 4, I, dtype=torch.float64)
    with torch.no_grad():
        _, expected = ours(pack_padded_sequence(seq, lengths, enforce_sorted=False))
        state, ends = ours.init_state(4), [None] * 4
        for t in range(6):
            _, state = ours.step(seq[t], state)
            for b in range(4):
                if lengths[b] == t + 1:
                    ends[b] = [s[:, b] for s in _flat(state)]
    got = [torch.stack([e[k] for e in ends], 1) for k in range(len(ends[0]))]
    _close(got, _flat(expected))


def test_stepping_under_autograd_gives_forwards_gradients():
    ref, ours = _pair("LSTM", {"num_layers": 2, "proj_size": P})
    seq = torch.randn(5, 2, I, dtype=torch.float64)
    x1, x2 = seq.clone().requires_grad_(), seq.clone().requires_grad_()
    out, _ = ref(x1)
    out.square().sum().backward()
    state, outs = ours.init_state(2), []
    for t in range(5):
        y, state = ours.step(x2[t], state)
        outs.append(y)
    torch.stack(outs).square().sum().backward()
    _close([x2.grad] + [p.grad for p in ours.parameters()],
           [x1.grad] + [p.grad for p in ref.parameters()])


def test_init_state_and_step_refuse_what_they_cannot_run():
    lstm = fastrnn.LSTM(I, H, num_layers=2, proj_size=P)
    h, c = lstm.init_state(3)
    assert h.shape == (2, 3, P) and c.shape == (2, 3, H) and not h.any()
    assert lstm.init_state(None)[0].shape == (2, P)
    for bad in (-1, 2.0, "3", True):
        with pytest.raises(ValueError, match="init_state"):
            lstm.init_state(bad)
    with pytest.raises(ValueError, match="one time step"):
        lstm.step(torch.randn(4, 3, I))
    with pytest.raises(ValueError, match="bidirectional"):
        fastrnn.GRU(I, H, bidirectional=True).step(torch.randn(3, I))
    with pytest.raises(RuntimeError):
        lstm.step(torch.randn(3, I), (h[:, :2], c))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_a_recurrent_rollout_and_training_loop_matches_torch(name):
    # An RL-style program: act step by step without gradients, train on what was collected
    # (a forward over the sequence, then steps under autograd), repeat: fastrnn's run follows
    # torch.nn's, optimizer steps included.
    ref, ours = _pair(name, {"num_layers": 2})
    models = []
    for rnn in (ref, ours):
        torch.manual_seed(1)
        head = nn.Linear(H, I).double()
        models.append((rnn, head, torch.optim.Adam(list(rnn.parameters())
                                                   + list(head.parameters()), lr=1e-2)))
    observations = torch.randn(4, 6, 3, I, dtype=torch.float64)
    for it in range(4):
        finals = []
        for rnn, head, opt in models:
            with torch.no_grad():
                state, x, seen = None, observations[it, 0], []
                for t in range(6):
                    out, state = rnn((x + observations[it, t]).unsqueeze(0), state)
                    x = torch.tanh(head(out[0]))
                    seen.append(x + observations[it, t])
            seq = torch.stack(seen)
            out, _ = rnn(seq)
            loss = head(out).square().mean()
            state = None
            for t in range(6):
                y, state = rnn(seq[t:t + 1], state)
                loss = loss + head(y).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            finals.append([seq, loss.detach()] + [p.detach().clone() for p in rnn.parameters()])
        _close(finals[1], finals[0])
    assert ours._step_plan.run in AUTOGRAD


@pytest.mark.parametrize("name, kw", [("RNN", {}), ("GRU", {"batch_first": True}),
                                      ("LSTMCell", {}), ("RNNCell", {})])
@pytest.mark.parametrize("B", [None, 1])
def test_one_row_under_autograd_runs_torchs_op_directly(name, kw, B):
    # tuning step_grad_torch (float32): torch's op, called by the plan without torch.nn's
    # argument handling
    f32 = torch.float32
    ref, ours = _pair(name, kw, f32)
    if name.endswith("Cell"):
        x0 = torch.randn(I, dtype=f32) if B is None else torch.randn(B, I, dtype=f32)
    else:
        x0 = _step_input(ref, B, f32)
    results = []
    for model in (ref, ours, ours):
        model.zero_grad()
        x = x0.clone().requires_grad_()
        out = model(x)
        sum(t.sum() for t in _flat(out)).backward()
        results.append(_flat(out) + [x.grad] + [p.grad for p in model.parameters()])
    assert ours._step_plan.run in (step_path._torch_module, step_path._torch_cell)
    for r in results[1:]:
        _close(r, results[0], f32)


def test_a_cell_running_torchs_op_still_checks_like_torch():
    ref, ours = _pair("LSTMCell", {}, torch.float32)
    x = torch.randn(1, I, requires_grad=True)
    ours(x)
    ours(x)
    assert ours._step_plan.run is step_path._torch_cell
    for bad in ((torch.zeros(1, 1, H),) * 2, (torch.zeros(1, H + 1),) * 2,
                (torch.zeros(2, H), torch.zeros(2, H))):
        errors = []
        for model in (ref, ours):
            with pytest.raises((RuntimeError, ValueError)) as info:
                model(x, bad)
            errors.append(info.type)
        assert errors[0] is errors[1]
