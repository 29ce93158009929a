"""The triton backend on a real GPU: every strategy, dtype and option at realistic sizes.

Skipped without CUDA (and under TRITON_INTERPRET=1, where these sizes would take hours).
Two kinds of check:
- backend level, float32: every forward/backward return vs fastrnn.reference in float64 on the
  same device (3e-5 abs / 2e-4 rel, DESIGN.md), NaN-poisoned buffers, exact zeros at padding;
- end to end vs torch.nn (bidirectional, so both directions; packed variable lengths): outputs,
  final states and the gradients of input, initial states and every parameter. The truth is
  torch.nn in float64 on CPU with the same (rounded) weights and inputs. float32 must meet the
  float32 tolerance; bfloat16/float16 must be within 2x torch.nn's own error on the same case
  in the same dtype on the same GPU (the DESIGN.md rule).
"""

import os

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="realistic sizes are too slow for the Triton interpreter"),
]

triton = pytest.importorskip("triton")

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastrnn.kernels.triton as tk  # noqa: E402
import fastrnn.reference as ref  # noqa: E402
from fastrnn.steps import active_mask, previous_states  # noqa: E402

ATOL, RTOL = 3e-5, 2e-4
DEV = "cuda"
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# (kind, option): LSTM with/without projection, GRU with/without biases (b_hn), RNN tanh/relu.
CELLS = [("lstm", None), ("lstm", "proj"), ("gru", "bias"), ("gru", "nobias"),
         ("rnn_tanh", None), ("rnn_relu", None)]
# name: (T, B, I, H, P for the projection)
SIZES = {"small": (30, 7, 24, 33, 17), "batch1": (25, 1, 16, 20, 9), "large": (20, 64, 64, 131, 64),
         "wide": (8, 5, 32, 256, 128)}


@pytest.fixture(autouse=True)
def ieee_float32():
    # Our float32 results are IEEE; keep torch's own float32 matmuls/cuDNN (the scaffold GEMMs,
    # torch.nn) off tf32 too, and restore the user's settings afterwards.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def persistent_fits(kind, H, P, proj):
    from fastrnn.kernels.triton import launchers
    P = P if proj else H  # SIZES' P is the projection size; without one, h has H units
    b = lambda n: max(16, triton.next_power_of_2(n))  # noqa: E731
    elems = GATES[kind] * b(H) * b(P) + (b(H) * b(P) if proj else 0)
    return elems <= launchers.PERSISTENT_AUTO_MAX


def strategies_for(kind, H, P, proj):
    return ["step", "persistent"] if persistent_fits(kind, H, P, proj) else ["step"]


# --------------------------------------------------------------- backend level, float32


def backend_run(backend, kind, case, reverse, dtype):
    c = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
         for k, v in case.items()}
    if kind == "lstm":
        out, h_n, c_n, saved = backend.lstm_forward(c["xg"], c["w_hh"], c["w_hr"], c["h0"], c["c0"],
                                                    c["lengths"], reverse, True)
        bwd = backend.lstm_backward(c["grad_out"], c["grad_hn"], c["grad_cn"], saved, c["w_hh"],
                                    c["w_hr"], c["h0"], c["c0"], out, c["lengths"], reverse)
        return (out, h_n, c_n) + tuple(bwd)
    if kind == "gru":
        out, h_n, saved = backend.gru_forward(c["xg"], c["w_hh"], c["b_hn"], c["h0"],
                                              c["lengths"], reverse, True)
        bwd = backend.gru_backward(c["grad_out"], c["grad_hn"], saved, c["w_hh"], c["b_hn"],
                                   c["h0"], out, c["lengths"], reverse)
        return (out, h_n) + tuple(bwd)
    nl = kind.split("_")[1]
    out, h_n, saved = backend.rnn_forward(c["xg"], c["w_hh"], c["h0"], c["lengths"], reverse, nl,
                                          True)
    bwd = backend.rnn_backward(c["grad_out"], c["grad_hn"], saved, c["w_hh"], c["h0"], out,
                               c["lengths"], reverse, nl)
    return (out, h_n) + tuple(bwd)


def backend_case(kind, opt, T, B, H, P, varlen, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    rnd = lambda *s, scale=1.0: torch.randn(*s, generator=g, device=DEV,  # noqa: E731
                                            dtype=torch.float64) * scale
    # Recurrent weights uniform in +-1.5/sqrt(fan-in), as tests/rnn_cases.py: spectral radius
    # below 1, so states stay O(1) as the tolerances assume. (Gaussian weights of that scale
    # have radius ~1.5: a relu RNN then grows to 1e4 in 30 steps, where float32 itself misses
    # 2e-4 relative on cancelling elements.)
    unif = lambda *s, fan_in: (torch.rand(*s, generator=g, device=DEV,  # noqa: E731
                                          dtype=torch.float64) * 2 - 1) * (1.5 / fan_in ** 0.5)
    proj = opt == "proj"
    P = P if proj else H
    G = GATES[kind]
    lengths = None
    if varlen:
        lengths = torch.randint(1, T + 1, (B,), generator=g, device=DEV)
        lengths[0] = T
    return dict(
        xg=rnd(T, B, G * H), w_hh=unif(G * H, P, fan_in=P),
        w_hr=unif(P, H, fan_in=H) if proj else None,
        b_hn=rnd(H) if opt == "bias" else None, h0=rnd(B, P), c0=rnd(B, H),
        grad_out=rnd(T, B, P), grad_hn=rnd(B, P), grad_cn=rnd(B, H), lengths=lengths)


@pytest.mark.parametrize("varlen", [False, True], ids=["full", "varlen"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_backend_float32_vs_reference(cell, size, reverse, varlen):
    kind, opt = cell
    T, B, _, H, P = SIZES[size]
    case = backend_case(kind, opt, T, B, H, P, varlen, seed=len(size) + 10 * reverse)
    want = backend_run(ref, kind, case, reverse, torch.float64)
    for strategy in strategies_for(kind, H, P, opt == "proj"):
        with tk.options(strategy=strategy, poison=True):
            got = backend_run(tk, kind, case, reverse, torch.float32)
        torch.cuda.synchronize()
        for i, (a, b) in enumerate(zip(got, want)):
            if b is None:
                assert a is None
                continue
            assert a.dtype == torch.float32 and a.shape == b.shape
            torch.testing.assert_close(a.double(), b, atol=ATOL, rtol=RTOL,
                                       msg=lambda m, s=strategy, i=i: f"{s} return #{i}: {m}")
        mask = active_mask(case["lengths"], T, DEV)
        if mask is not None:
            assert (got[0][~mask.expand_as(got[0])] == 0).all()


# ------------------------------------------------------------------ end to end vs torch.nn


class _TritonLayer(torch.autograd.Function):
    """One layer, one direction, on the triton backend, with the GEMMs around it (as ops.py)."""

    @staticmethod
    def forward(ctx, kind, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        G = GATES[kind]
        H = w_hh.shape[0] // G
        # xg stays float32 for half layers (the backend accepts that): rounding these O(1..10)
        # pre-activations to bf16 would cost more accuracy than everything in the kernels,
        # and cuDNN does not round them either.
        xg = x.float() @ w_ih.float().t()
        b_hn = None
        if b_ih is not None:
            if kind == "gru":
                xg = xg + b_ih.float() + torch.cat([b_hh[:2 * H].float(),
                                                    b_hh.new_zeros(H, dtype=torch.float32)])
                b_hn = b_hh[2 * H:].contiguous()
            else:
                xg = xg + b_ih.float() + b_hh.float()
        xg = xg.contiguous()
        c_n = None
        if kind == "lstm":
            out, h_n, c_n, saved = tk.lstm_forward(xg, w_hh, w_hr, h0, c0, lengths, reverse, True)
        elif kind == "gru":
            out, h_n, saved = tk.gru_forward(xg, w_hh, b_hn, h0, lengths, reverse, True)
        else:
            out, h_n, saved = tk.rnn_forward(xg, w_hh, h0, lengths, reverse, kind[4:], True)
        ctx.kind, ctx.reverse, ctx.lengths, ctx.b_hn, ctx.has_bias = (kind, reverse, lengths, b_hn,
                                                                      b_ih is not None)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, w_hr, out, *saved)
        return (out, h_n, c_n) if kind == "lstm" else (out, h_n)

    @staticmethod
    def backward(ctx, grad_out, grad_hn, grad_cn=None):
        x, h0, c0, w_ih, w_hh, w_hr, out, *saved = ctx.saved_tensors
        kind, reverse, lengths = ctx.kind, ctx.reverse, ctx.lengths
        z = lambda g, like: torch.zeros_like(like) if g is None else g.contiguous()  # noqa: E731
        grad_out, grad_hn = z(grad_out, out), z(grad_hn, h0)
        dc0 = dw_hr = None
        if kind == "lstm":
            dxg, dh0, dc0, dw_hr = tk.lstm_backward(grad_out, grad_hn, z(grad_cn, c0), tuple(saved),
                                                    w_hh, w_hr, h0, c0, out, lengths, reverse)
            dhg = dxg
        elif kind == "gru":
            dxg, dhg, dh0 = tk.gru_backward(grad_out, grad_hn, tuple(saved), w_hh, ctx.b_hn, h0,
                                            out, lengths, reverse)
        else:
            dxg, dh0 = tk.rnn_backward(grad_out, grad_hn, tuple(saved), w_hh, h0, out, lengths,
                                       reverse, kind[4:])
            dhg = dxg
        GH = dxg.shape[2]
        hprev = previous_states(out, h0, lengths, reverse)
        dx = dxg @ w_ih
        dw_ih = dxg.reshape(-1, GH).t() @ x.reshape(-1, x.shape[2])
        dw_hh = dhg.reshape(-1, GH).t() @ hprev.reshape(-1, hprev.shape[2])
        db_ih = dxg.sum((0, 1)) if ctx.has_bias else None
        db_hh = dhg.sum((0, 1)) if ctx.has_bias else None
        return None, None, None, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


def triton_bidirectional(module, kind, x, h0, c0, lengths):
    outs, hns, cns = [], [], []
    for d, sfx in enumerate(["", "_reverse"]):
        p = lambda n, sfx=sfx: getattr(module, f"{n}_l0{sfx}", None)  # noqa: E731
        res = _TritonLayer.apply(kind, bool(d), lengths, x, h0[d],
                                 c0[d] if c0 is not None else None,
                                 p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"),
                                 p("weight_hr"))
        outs.append(res[0])
        hns.append(res[1])
        if kind == "lstm":
            cns.append(res[2])
    out = torch.cat(outs, 2)
    return out, torch.stack(hns), (torch.stack(cns) if kind == "lstm" else None)


def torch_bidirectional(module, kind, x, h0, c0, lengths):
    inp = x if lengths is None else pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    res, hid = module(inp, (h0, c0) if kind == "lstm" else h0)
    if lengths is not None:
        res, _ = pad_packed_sequence(res, total_length=x.shape[0])
    if kind == "lstm":
        return res, hid[0], hid[1]
    return res, hid, None


def values_and_grads(fn, module, kind, x, h0, c0, lengths, upstream):
    x = x.detach().requires_grad_()
    h0 = h0.detach().requires_grad_()
    c0 = c0.detach().requires_grad_() if c0 is not None else None
    out, h_n, c_n = fn(module, kind, x, h0, c0, lengths)
    vals = [out, h_n] + ([c_n] if c_n is not None else [])
    loss = sum((v * u).sum() for v, u in zip(vals, upstream))
    leaves = [x, h0] + ([c0] if c0 is not None else []) + list(module.parameters())
    grads = torch.autograd.grad(loss, leaves)
    names = ["out", "h_n", "c_n"][:len(vals)] + ["dx", "dh0", "dc0"][:2 + (c0 is not None)] + \
        ["d" + n for n, _ in module.named_parameters()]
    return dict(zip(names, [v.detach().double().cpu() for v in vals + list(grads)]))


def make_module(kind, opt, I, H, P, dtype, device, seed):
    torch.manual_seed(seed)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(kind, torch.nn.RNN)
    kw = dict(bidirectional=True, bias=opt != "nobias")
    if kind.startswith("rnn"):
        kw["nonlinearity"] = kind[4:]
    if opt == "proj":
        kw["proj_size"] = P
    m = cls(I, H, **kw).to(dtype)
    return m.to(device)


def run_torch_nn(*args):
    try:
        return values_and_grads(torch_bidirectional, *args)
    except RuntimeError:
        # No cuDNN kernel for this dtype: torch's native implementation is then what users get.
        with torch.backends.cudnn.flags(enabled=False):
            return values_and_grads(torch_bidirectional, *args)


@pytest.mark.parametrize("varlen", [False, True], ids=["full", "varlen"])
@pytest.mark.parametrize("strategy", ["step", "persistent"])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_end_to_end_vs_torch_nn(cell, dtype, size, strategy, varlen):
    kind, opt = cell
    T, B, I, H, P = SIZES[size]
    if strategy not in strategies_for(kind, H, P, opt == "proj"):
        pytest.skip(f"{kind} H={H} is too large for the persistent kernel")
    Pd = P if opt == "proj" else H
    module = make_module(kind, opt, I, H, P, dtype, DEV, seed=1)
    truth_module = make_module(kind, opt, I, H, P, torch.float64, "cpu", seed=1)
    truth_module.load_state_dict({k: v.double().cpu() for k, v in module.state_dict().items()})

    g = torch.Generator().manual_seed(2)
    rnd = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731 (rounded once, shared)
    x, h0 = rnd(T, B, I), rnd(2, B, Pd)
    c0 = rnd(2, B, H) if kind == "lstm" else None
    upstream = [rnd(T, B, 2 * Pd), rnd(2, B, Pd)] + ([rnd(2, B, H)] if kind == "lstm" else [])
    lengths = None
    if varlen:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[B // 2] = T

    cpu64 = lambda t: None if t is None else t.double()  # noqa: E731
    truth = values_and_grads(torch_bidirectional, truth_module, kind, cpu64(x), cpu64(h0),
                             cpu64(c0), lengths, [u.double() for u in upstream])
    cu = lambda t: None if t is None else t.to(DEV)  # noqa: E731
    up_cu = [u.to(DEV) for u in upstream]
    theirs = run_torch_nn(module, kind, cu(x), cu(h0), cu(c0), lengths, up_cu)
    with tk.options(strategy=strategy):
        ours = values_and_grads(triton_bidirectional, module, kind, cu(x), cu(h0), cu(c0),
                                cu(lengths), up_cu)
    assert set(ours) == set(truth)
    for name, want in truth.items():
        got = ours[name]
        assert got.shape == want.shape, name
        if dtype == torch.float32:
            torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL,
                                       msg=lambda m, name=name: f"{name}: {m}")
        else:
            our_err = (got - want).abs().max().item()
            torch_err = (theirs[name] - want).abs().max().item()
            assert our_err <= 2 * torch_err, (f"{name}: error {our_err:.3g} > "
                                              f"2 x torch.nn's {torch_err:.3g}")


def test_explain_on_gpu():
    assert tk.supports("cuda", torch.bfloat16)
    assert tk.explain("lstm", 100, 32, 32, dtype=torch.float16).startswith("triton persistent")
    assert tk.explain("lstm", 100, 32, 1024, P=256).startswith("triton step")


# ------------------------------------------------------- fastrnn's modules on CUDA, both ways

from torch.nn.utils.rnn import pack_sequence  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.functional as fF  # noqa: E402

MODULE_CASES = [("LSTM", {}), ("LSTM", {"proj_size": 8}), ("GRU", {}), ("GRU", {"bias": False}),
                ("RNN", {"nonlinearity": "tanh"}), ("RNN", {"nonlinearity": "relu"})]


def _module_pair(name, kw, dtype, backend, seed=3):
    torch.manual_seed(seed)
    theirs = getattr(torch.nn, name)(12, 16, num_layers=2, bidirectional=True, batch_first=True,
                                     **kw).to(DEV, dtype)
    ours = getattr(fastrnn, name)(12, 16, num_layers=2, bidirectional=True, batch_first=True,
                                  backend=backend, **kw).to(DEV, dtype)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _outputs_and_grads(module, inp):
    out, hid = module(inp)
    out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    vals = [out] + (list(hid) if isinstance(hid, tuple) else [hid])
    loss = sum((v.float() * (k + 1)).sum() for k, v in enumerate(vals))
    grads = torch.autograd.grad(loss, list(module.parameters()))
    return [v.detach() for v in vals], grads


def _inputs(dtype, packed):
    g = torch.Generator().manual_seed(4)
    if packed:
        seqs = [torch.randn(n, 12, generator=g).to(DEV, dtype) for n in (9, 5, 7)]
        return pack_sequence(seqs, enforce_sorted=False)
    return torch.randn(3, 9, 12, generator=g).to(DEV, dtype)


@pytest.fixture
def no_triton(monkeypatch):
    """Make every Triton entry point fail: a call that reaches one did not go to torch."""
    for fn in ("lstm_forward", "gru_forward", "rnn_forward", "lstm_backward", "gru_backward",
               "rnn_backward"):
        monkeypatch.setattr(tk, fn, lambda *a, _fn=fn, **k: pytest.fail(f"auto ran triton's {_fn}"))


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_auto_on_cuda_runs_torch_nn(case, dtype, packed, no_triton):
    # auto hands every CUDA call to torch's own RNN (cuDNN): the Triton kernels measured slower
    # everywhere (fastrnn/dispatch.py). Same calls, so the same results.
    name, kw = case
    theirs, ours = _module_pair(name, kw, dtype, "auto")
    inp = _inputs(dtype, packed)
    want_vals, want_grads = _outputs_and_grads(theirs, inp)
    got_vals, got_grads = _outputs_and_grads(ours, inp)
    for a, b in zip(got_vals, want_vals):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_auto_functional_on_cuda_runs_torch(kind, no_triton):
    name = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[kind]
    theirs, _ = _module_pair(name, {}, torch.float32, "auto")
    for packed in (False, True):
        inp = _inputs(torch.float32, packed)
        want = theirs(inp)
        if packed:
            data, batch_sizes = inp.data, inp.batch_sizes
            got = getattr(fF, kind)(data, None, theirs._flat_weights, num_layers=2,
                                    bidirectional=True, batch_first=True, batch_sizes=batch_sizes)
            want_out = want[0].data
            # the module returns h_n in the caller's order; the functional, in packed order
            want = (want[0], tuple(h[:, inp.sorted_indices] for h in want[1])
                    if kind == "lstm" else want[1][:, inp.sorted_indices])
        else:
            got = getattr(fF, kind)(inp, None, theirs._flat_weights, num_layers=2,
                                    bidirectional=True, batch_first=True)
            want_out = want[0]
        torch.testing.assert_close(got[0], want_out, rtol=0, atol=0)
        want_h = want[1] if kind != "lstm" else want[1][0]
        torch.testing.assert_close(got[1], want_h, rtol=0, atol=0)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_triton_modules_on_cuda_match_torch_nn(case, packed):
    # backend="triton" still runs fastrnn's kernels (no hand-off): float32 within the kernel
    # tolerance of torch.nn's cuDNN result, values and every parameter's gradient.
    name, kw = case
    theirs, ours = _module_pair(name, kw, torch.float32, "triton")
    inp = _inputs(torch.float32, packed)
    want_vals, want_grads = _outputs_and_grads(theirs, inp)
    calls = []
    real = getattr(tk, name.lower() + "_forward")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tk, name.lower() + "_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
        got_vals, got_grads = _outputs_and_grads(ours, inp)
    assert calls, "backend='triton' did not run the Triton kernels"
    for a, b in zip(got_vals + list(got_grads), want_vals + list(want_grads)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_auto_explains_the_cuda_hand_off():
    gru = fastrnn.GRU(256, 256).to(DEV)
    explained = fastrnn.explain(gru, torch.randn(100, 8, 256, device=DEV))
    assert explained.backend == "torch" and "cuDNN" in str(explained)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_auto_cells_on_cuda_run_torch(name, no_triton):
    torch.manual_seed(5)
    theirs = getattr(torch.nn, name)(12, 16).to(DEV)
    ours = getattr(fastrnn, name)(12, 16).to(DEV)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 12, device=DEV)
    want, got = theirs(x), ours(x)
    for a, b in zip(got if name == "LSTMCell" else [got], want if name == "LSTMCell" else [want]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
