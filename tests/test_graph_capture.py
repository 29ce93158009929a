"""torch.jit.trace, torch.jit.script, torch.export, torch.compile and torch.func on fastrnn modules.

fastrnn's kernels run outside torch's ops, so a graph recorder would not see them (a trace
would keep the outputs as constants). While a graph is being captured, fastrnn hands the call
to torch.nn's own forward, and TorchScript compiles a torch.nn twin: the captured model is
torch's, with the module's parameters. Each test runs the captured model on new input, which
a graph of constants would get wrong."""

import warnings

import pytest
import torch
from torch import nn

import fastrnn
from fastrnn import functional

I, H, T, B = 4, 5, 3, 2

STACKS = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 3, "num_layers": 2, "bidirectional": True}),
    ("GRU", {"batch_first": True}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
]
CELLS = ["LSTMCell", "GRUCell", "RNNCell"]


def _pair(name, backend, **kw):
    torch.manual_seed(0)
    ref = getattr(nn, name)(I, H, **kw).eval()
    fast = getattr(fastrnn, name)(I, H, backend=backend, **kw).eval()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _input(name, kw):
    if name.endswith("Cell"):
        return torch.randn(B, I)
    return torch.randn(B, T, I) if kw.get("batch_first") else torch.randn(T, B, I)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _ids(cases):
    return [name + "-" + "-".join(f"{k}{v}" for k, v in kw.items()) for name, kw in cases]


def _all_cases():
    return STACKS + [(name, {}) for name in CELLS]


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("name, kw", _all_cases(), ids=_ids(_all_cases()))
def test_jit_trace_records_the_computation(name, kw, backend):
    ref, fast = _pair(name, backend, **kw)
    x = _input(name, kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fast, (x,))
    x2 = 3 * _input(name, kw)
    torch.testing.assert_close(_first(traced(x2)), _first(ref(x2)))


class _Holder(nn.Module):
    """TorchScript compiles a torch.nn RNN's forward only where a scripted caller uses it (a
    top-level scripted torch.nn.LSTM has no forward in torch 2.13), so the stacks sit in one."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("name, kw", _all_cases(), ids=_ids(_all_cases()))
def test_jit_script_compiles_a_twin_with_the_same_parameters(name, kw):
    ref, fast = _pair(name, "numba", **kw)
    if not name.endswith("Cell"):
        ref, fast = _Holder(ref), _Holder(fast)
    with pytest.warns(UserWarning, match=f"scripted as torch.nn.{name}"):
        scripted = torch.jit.script(fast)
    x = _input(name, kw)
    torch.testing.assert_close(_first(scripted(x)), _first(ref(x)))
    # The twin shares the parameters: an in-place update shows in the scripted module.
    with torch.no_grad():
        for p, q in zip(fast.parameters(), ref.parameters()):
            p.mul_(0.5)
            q.mul_(0.5)
    torch.testing.assert_close(_first(scripted(x)), _first(ref(x)))
    # A module scripted alone stays fastrnn's; inside a scripted parent, torch puts the twin
    # in its place (what the warning says).
    module = fast if name.endswith("Cell") else fast.rnn
    assert type(module) is (getattr(fastrnn, name) if name.endswith("Cell") else getattr(nn, name))
    torch.testing.assert_close(_first(fast(x)), _first(ref(x)))


def test_jit_script_of_a_model_holding_fastrnn_modules():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = fastrnn.GRU(I, H, backend="numba")
            self.cell = fastrnn.LSTMCell(H, H, backend="numba")

        def forward(self, x):
            out, _ = self.rnn(x)
            h, c = self.cell(out[-1])
            return h + c

    model = Model().eval()
    x = torch.randn(T, B, I)
    expected = model(x)
    with pytest.warns(UserWarning, match="scripted as torch.nn"):
        scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), expected)


@pytest.mark.parametrize("strict", [False, True], ids=["nonstrict", "strict"])
@pytest.mark.parametrize("name, kw", [STACKS[0], STACKS[2], ("GRUCell", {})],
                         ids=_ids([STACKS[0], STACKS[2], ("GRUCell", {})]))
def test_torch_export(name, kw, strict):
    ref, fast = _pair(name, "numba", **kw)
    exported = torch.export.export(fast, (_input(name, kw),), strict=strict)
    x2 = 3 * _input(name, kw)
    torch.testing.assert_close(_first(exported.module()(x2)), _first(ref(x2)))


@pytest.mark.parametrize("name", CELLS)
def test_torch_compile_fullgraph_cells(name):
    ref, fast = _pair(name, "numba")
    compiled = torch.compile(fast, backend="eager", fullgraph=True)
    x = _input(name, {})
    torch.testing.assert_close(_first(compiled(x)), _first(ref(x)))


@pytest.mark.parametrize("held", [False, True], ids=["alone", "in-a-model"])
def test_torch_compile_runs_stacks_eagerly_on_fastrnn(monkeypatch, held):
    """Dynamo does not trace torch.nn's RNN modules, nor fastrnn's: they run eagerly, and
    through fastrnn's kernels, whether compiled alone or inside a model."""
    ref, fast = _pair("LSTM", "numba")
    if held:
        ref, fast = _Holder(ref), _Holder(fast)
    calls = []
    real = functional._stack
    monkeypatch.setattr(functional, "_stack", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch._dynamo.reset()
    compiled = torch.compile(fast, backend="eager")
    x = _input("LSTM", {})
    torch.testing.assert_close(_first(compiled(x)), _first(ref(x)))
    assert calls


def test_functional_under_trace():
    torch.manual_seed(0)
    gru = nn.GRU(I, H).requires_grad_(False)
    h0 = torch.zeros(1, B, H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(
            lambda x, h: functional.gru(x, h, gru._flat_weights, backend="numba")[0],
            (_input("GRU", {}), h0))
    x2 = 3 * torch.randn(T, B, I)
    torch.testing.assert_close(traced(x2, h0), gru(x2, h0)[0])


# torch.func transforms look inside the ops of a call; fastrnn's kernels have none to look at,
# so under a transform the call runs torch.nn's computation, and the transform gives what it
# gives for torch.nn (torch's own limits included).


@pytest.mark.parametrize("name, kw", _all_cases(), ids=_ids(_all_cases()))
def test_torch_func_grad_and_jacrev(name, kw):
    ref, fast = _pair(name, "numba", **kw)
    x = _input(name, kw)
    results = []
    for module in (ref, fast):
        params = {k: v.detach() for k, v in module.named_parameters()}

        def loss(p, inp, module=module):
            return _first(torch.func.functional_call(module, p, (inp,))).pow(2).sum()

        grads = torch.func.grad(loss, argnums=(0, 1))(params, x)
        jac = torch.func.jacrev(lambda inp, module=module: _first(module(inp)))(x)
        results.append([*grads[0].values(), grads[1], jac])
    assert len(results[0]) == len(results[1])
    for a, e in zip(results[1], results[0]):
        torch.testing.assert_close(a, e)


def test_torch_func_per_sample_gradients():
    """vmap over grad: one gradient per sequence of the batch (what torch.nn's LSTM supports)."""
    ref, fast = _pair("LSTM", "numba")
    x = torch.randn(T, B, I)
    results = []
    for module in (ref, fast):
        params = {k: v.detach() for k, v in module.named_parameters()}

        def loss(p, seq, module=module):
            return torch.func.functional_call(module, p, (seq.unsqueeze(1),))[0].pow(2).sum()

        per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 1))(params, x)
        results.append(list(per_sample.values()))
    for a, e in zip(results[1], results[0]):
        assert a.shape[0] == B
        torch.testing.assert_close(a, e)


def _tangent(module, x):
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        out = _first(module(fwAD.make_dual(x, torch.ones_like(x))))
        return fwAD.unpack_dual(out).tangent


@pytest.mark.parametrize("name, kw", _all_cases(), ids=_ids(_all_cases()))
def test_forward_mode_ad_as_torch(name, kw):
    """Forward-mode AD gives torch.nn's tangents, and fails where torch.nn's does (torch's
    oneDNN LSTM has no forward AD)."""
    ref, fast = _pair(name, "numba", **kw)
    x = _input(name, kw)
    try:
        expected = _tangent(ref, x)
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match="forward AD"):
            _tangent(fast, x)
        assert "forward AD" in str(e)
        return
    torch.testing.assert_close(_tangent(fast, x), expected)


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("name, kw", _all_cases(), ids=_ids(_all_cases()))
def test_autocast_as_torch(name, kw, backend):
    """Under torch.autocast the call is torch.nn's: autocast's mixed precision (which ops run in
    bfloat16, the output dtype) is torch's, and fastrnn's kernels compute in the input dtype."""
    ref, fast = _pair(name, backend, **kw)
    x = _input(name, kw)
    results = []
    for module in (ref, fast):
        xx = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _first(module(xx))
        out.float().pow(2).sum().backward()
        results.append((out, xx.grad))
    assert results[1][0].dtype == results[0][0].dtype
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=0)
