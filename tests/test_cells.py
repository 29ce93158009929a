"""Cells against torch.nn cells (float64 oracle): batched and unbatched, with and without state."""

import pytest
import torch

import fastrnn
from rnn_cases import TOL, backends_for

CELLS = [
    ("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {"nonlinearity": "tanh"}),
    ("RNNCell", {"nonlinearity": "relu"}),
]


def _cases():
    out = []
    for dtype in (torch.float64, torch.float32):
        for backend in backends_for("cpu", dtype):
            for name, kw in CELLS:
                for batched in (True, False):
                    for with_state in (True, False):
                        for bias in (True, False):
                            out.append(pytest.param(
                                backend, dtype, name, kw, batched, with_state, bias,
                                id=f"{backend}-{str(dtype)[6:]}-{name}-"
                                   f"{kw.get('nonlinearity', '')}-{'b' if batched else 'unb'}-"
                                   f"{'hx' if with_state else 'nohx'}-"
                                   f"{'bias' if bias else 'nobias'}"))
    return out


@pytest.mark.parametrize("backend, dtype, name, kw, batched, with_state, bias", _cases())
def test_cell_matches_torch(backend, dtype, name, kw, batched, with_state, bias):
    torch.manual_seed(1)
    I, H, B = (3, 5, 2) if backend == "triton" else (7, 33, 3)
    ref = getattr(torch.nn, name)(I, H, bias=bias, dtype=torch.float64, **kw)
    fast = getattr(fastrnn, name)(I, H, bias=bias, dtype=dtype, backend=backend, **kw)
    fast.load_state_dict(ref.state_dict())
    shape = (B, I) if batched else (I,)
    x = torch.randn(*shape, dtype=torch.float64)
    hshape = (B, H) if batched else (H,)
    hx = None
    if with_state:
        hx = torch.randn(*hshape, dtype=torch.float64)
        if name == "LSTMCell":
            hx = (hx, torch.randn(*hshape, dtype=torch.float64))

    def run(module, dt):
        xi = x.to(dt).requires_grad_()
        hi = None
        if hx is not None:
            hi = (tuple(h.to(dt).requires_grad_() for h in hx) if name == "LSTMCell"
                  else hx.to(dt).requires_grad_())
        out = module(xi, hi)
        outs = list(out) if isinstance(out, tuple) else [out]
        torch.manual_seed(2)
        loss = sum((o.double() * torch.randn(o.shape, dtype=torch.float64)).sum() for o in outs)
        leaves = ([xi] + (list(hi) if isinstance(hi, tuple) else ([hi] if hi is not None else []))
                  + list(module.parameters()))
        return ([o.detach().double() for o in outs],
                [g.double() for g in torch.autograd.grad(loss, leaves)])

    ev, eg = run(ref, torch.float64)
    av, ag = run(fast, dtype)
    atol, rtol = TOL[dtype]
    for a, e in zip(av + ag, ev + eg):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol)
