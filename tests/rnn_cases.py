"""Shared helpers for the parity tests: build a torch.nn model and its fastrnn twin, run both,
compare outputs and every gradient."""

import torch
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import fastrnn
from fastrnn import dispatch

# Tolerances (max abs, max rel) from DESIGN.md; chosen once from the arithmetic, never widened.
TOL = {torch.float64: (1e-9, 1e-7), torch.float32: (3e-5, 2e-4)}


def backends_for(device, dtype):
    """Concrete backends that can run this device/dtype (the interpreter counts for triton)."""
    return [name for name in dispatch.available(torch.device(device), dtype) if name != "torch"]


def make_pair(kind, input_size, hidden_size, backend, dtype=torch.float64, **kw):
    """A torch.nn module (float64, the oracle) and a fastrnn twin in ``dtype`` with equal
    weights."""
    torch_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    fast_cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}[kind]
    ref = torch_cls(input_size, hidden_size, dtype=torch.float64, **kw)
    # Larger than torch's init, to exercise saturation, yet scaled so states stay O(1)
    # (spectral radius below 1, which matters for relu RNNs), as the tolerances assume.
    bound = min(0.6, 1.5 / hidden_size ** 0.5)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-bound, bound)
    fast = fast_cls(input_size, hidden_size, dtype=dtype, backend=backend, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _flat(x):
    if isinstance(x, PackedSequence):
        return [x.data]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _flat(item)]
    return [x]


def run_and_grads(module, inputs, hx, weights_for_loss, dtype):
    """Run module, then backprop a random-weighted sum of every output; return all values."""
    inputs = _cast(inputs, dtype, requires_grad=True)
    hx = _cast(hx, dtype, requires_grad=True) if hx is not None else None
    out, hidden = module(inputs, hx)
    values = _flat(out) + _flat(hidden)
    loss = sum((v.double() * w).sum() for v, w in zip(values, weights_for_loss))
    leaves = _flat(inputs) + (_flat(hx) if hx is not None else []) + list(module.parameters())
    grads = torch.autograd.grad(loss, leaves)
    return [v.detach().double() for v in values], [g.double() for g in grads]


def _cast(x, dtype, requires_grad=False):
    if isinstance(x, PackedSequence):
        data = x.data.detach().to(dtype).requires_grad_(requires_grad)
        return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    if isinstance(x, (tuple, list)):
        return tuple(_cast(t, dtype, requires_grad) for t in x)
    return x.detach().to(dtype).requires_grad_(requires_grad)


def assert_close_all(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    assert len(actual) == len(expected), what
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f"{what}[{k}]: shape {tuple(a.shape)} != {tuple(e.shape)}"
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol,
                                   msg=lambda m, k=k: f"{what}[{k}]: {m}")


def check_parity(kind, backend, dtype, I, H, T, B, form="batched", hx_given=True, seed=0, **kw):
    """fastrnn (backend, dtype) against torch.nn in float64: outputs, final states, all grads."""
    torch.manual_seed(seed)
    ref, fast = make_pair(kind, I, H, backend, dtype, **kw)
    batch_first = kw.get("batch_first", False)
    D = 2 if kw.get("bidirectional", False) else 1
    L = kw.get("num_layers", 1)
    P = kw.get("proj_size", 0) or H
    if form == "packed_sorted" or form == "packed_unsorted":
        lengths = sorted([T] + [max(1, (T * (k + 2)) // (k + 3)) for k in range(B - 1)],
                         reverse=True)
        if form == "packed_unsorted":
            lengths = lengths[1:] + lengths[:1]
        seqs = [torch.randn(n, I, dtype=torch.float64) for n in lengths]
        inputs = pack_sequence(seqs, enforce_sorted=(form == "packed_sorted"))
        state_batch = (B,)
    elif form == "unbatched":
        inputs = torch.randn(T, I, dtype=torch.float64)
        state_batch = ()
    else:
        inputs = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
        inputs = inputs.double()
        state_batch = (B,)
    hx = None
    if hx_given:
        h0 = torch.randn(L * D, *state_batch, P, dtype=torch.float64)
        hx = ((h0, torch.randn(L * D, *state_batch, H, dtype=torch.float64)) if kind == "lstm"
              else h0)
    ref_out, ref_hidden = ref(_cast(inputs, torch.float64), hx)
    weights = [torch.randn_like(v, dtype=torch.float64) for v in _flat(ref_out) + _flat(ref_hidden)]
    ev, eg = run_and_grads(ref, inputs, hx, weights, torch.float64)
    av, ag = run_and_grads(fast, inputs, hx, weights, dtype)
    assert_close_all(av, ev, dtype, "outputs")
    assert_close_all(ag, eg, dtype, "gradients")
