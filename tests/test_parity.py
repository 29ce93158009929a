"""Every module against torch.nn (float64 oracle): outputs, final states and every gradient,
across the options torch.nn offers, for every backend that runs on this machine."""

import pytest
import torch

from rnn_cases import backends_for, check_parity

KINDS = [
    ("lstm", {}),
    ("lstm_proj", {"proj_size": 3}),
    ("gru", {}),
    ("rnn_tanh", {"nonlinearity": "tanh"}),
    ("rnn_relu", {"nonlinearity": "relu"}),
]

# (form, hx_given, module options): every option torch.nn offers appears at least once per kind.
OPTIONS = [
    ("batched", True, {}),
    ("batched", True, {"num_layers": 2, "bidirectional": True}),
    ("batched", True, {"batch_first": True, "bias": False}),
    ("batched", False, {"num_layers": 2}),
    ("packed_sorted", True, {"num_layers": 2}),
    ("packed_unsorted", True, {"bidirectional": True, "num_layers": 2}),
    ("packed_unsorted", False, {"bidirectional": True, "bias": False}),
    ("unbatched", True, {"bidirectional": True}),
    ("unbatched", False, {"batch_first": True}),
]

# (I, H, T, B): odd sizes, T = 1, batch 1.
SIZES = [(7, 7, 5, 3), (1, 1, 1, 1), (33, 33, 4, 2), (5, 131, 3, 2)]
# The triton interpreter costs milliseconds per step and program: tiny shapes only.
INTERPRETER_SIZES = [(3, 5, 3, 2), (1, 1, 1, 1)]


def _kind(name):
    return name.split("_")[0]


def _cases():
    cases = []
    for dtype in (torch.float64, torch.float32):
        for backend in backends_for("cpu", dtype):
            sizes = INTERPRETER_SIZES if backend == "triton" else SIZES
            for name, kind_kw in KINDS:
                for k, (form, hx_given, opts) in enumerate(OPTIONS):
                    for size in sizes:
                        # Full option matrix at the first size; the others run a spread of options.
                        if size != sizes[0] and k % 3 != sizes.index(size) % 3:
                            continue
                        cases.append(pytest.param(
                            backend, dtype, name, kind_kw, form, hx_given, opts, size,
                            id=f"{backend}-{str(dtype)[6:]}-{name}-{form}-"
                               f"{'hx' if hx_given else 'nohx'}-"
                               f"{'-'.join(f'{a}{b}' for a, b in opts.items()) or 'plain'}-"
                               f"{'x'.join(map(str, size))}"))
    return cases


@pytest.mark.parametrize("backend, dtype, name, kind_kw, form, hx_given, opts, size", _cases())
def test_module_matches_torch(backend, dtype, name, kind_kw, form, hx_given, opts, size):
    I, H, T, B = size
    kw = dict(kind_kw, **opts)
    if kw.get("proj_size", 0) >= H:
        kw["proj_size"] = max(1, H - 1) if H > 1 else 0
        if kw["proj_size"] == 0:
            del kw["proj_size"]
    check_parity(_kind(name), backend, dtype, I, H, T, B, form=form, hx_given=hx_given, **kw)


@pytest.mark.parametrize("backend", backends_for("cpu", torch.float32))
def test_proj_bidirectional_stack_packed(backend):
    """proj_size with a bidirectional, multi-layer stack on unsorted packed input."""
    I, H, T, B = (4, 6, 4, 3) if backend == "triton" else (7, 33, 6, 4)
    for dtype in backends_for_dtypes(backend):
        check_parity("lstm", backend, dtype, I, H, T, B, form="packed_unsorted",
                     num_layers=3, bidirectional=True, proj_size=5)


def backends_for_dtypes(backend):
    return [d for d in (torch.float64, torch.float32) if backend in backends_for("cpu", d)]


@pytest.mark.skipif("numba" not in backends_for("cpu", torch.float32), reason="needs numba")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("form,opts", [
    ("batched", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("packed_unsorted", dict(bidirectional=True)),
])
@pytest.mark.parametrize("kind,kind_kw", [("lstm", {}), ("rnn", {}),
                                          ("rnn", dict(nonlinearity="relu"))])
def test_numba_with_the_input_projection_inside_the_loop(monkeypatch, kind, kind_kw, dtype,
                                                         form, opts):
    """Enough steps and rows for the numba LSTM/RNN loop to take each layer's input projection
    inside (the "fused" route, kernels/numba/plan.py): outputs and every gradient against
    torch.nn."""
    from fastrnn.kernels.numba import launch
    calls = []
    routes = launch.LSTM_FORWARD if kind == "lstm" else launch.RNN_FORWARD
    real = routes["fused"]
    monkeypatch.setitem(routes, "fused", lambda *a: calls.append(1) or real(*a))
    check_parity(kind, "numba", dtype, 7, 9, 17, 6, form=form, **kind_kw, **opts)
    assert calls, "the fused path did not run"
