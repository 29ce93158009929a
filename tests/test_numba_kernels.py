"""The numba backend against fastrnn.reference at the recurrence level.

Every forward output (out, h_n, c_n) and every backward return is compared with the float64
oracle, for both per-step strategies (one compiled loop, or a GEMM per step), each in one thread
or split over torch's threads (rows, or for the loop also hidden units), both directions, with
and without variable lengths. Every buffer the launcher allocates is NaN-poisoned (outputs,
internal buffers and scratch), so an element the kernel forgets to write fails the comparison.
"""

import re

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from fastrnn import ops, reference  # noqa: E402
from fastrnn.kernels import cpu, tuning  # noqa: E402
from fastrnn.kernels import numba as nb  # noqa: E402
from fastrnn.kernels.numba import buffers, launch, linalg, plan, runners, team  # noqa: E402

TOL = {torch.float64: dict(atol=1e-9, rtol=1e-7), torch.float32: dict(atol=3e-5, rtol=2e-4)}
CELLS = ["lstm", "lstm_proj", "gru", "gru_no_bhn", "rnn_tanh", "rnn_relu"]
GATES = {"lstm": 4, "lstm_proj": 4, "gru": 3, "gru_no_bhn": 3, "rnn_tanh": 1, "rnn_relu": 1}
_SCRATCH = buffers.scratch      # the real one (the poison fixture swaps it for NaN-filled buffers)


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    def nan_empty(shape, dtype):
        return torch.full(shape, float("nan"), dtype=dtype)

    def nan_scratch(shape, dtype):
        return nan_empty(shape, dtype).numpy()

    monkeypatch.setattr(buffers, "empty", nan_empty)
    monkeypatch.setattr(buffers, "internal", nan_empty)
    monkeypatch.setattr(buffers, "scratch", nan_scratch)
    monkeypatch.setattr(buffers, "unwritten", nan_scratch)


@pytest.fixture(params=["loop", "loop_split", "columns", "torch_mm", "torch_mm_split"])
def strategy(request, monkeypatch, tune):
    """Both per-step strategies, each in one thread or with the batch split into chunks on
    torch's OpenMP team (3 chunks: more than the team has threads, and uneven for B = 7), and
    the compiled loop with the hidden units split into 3 slices (more than the team has
    threads: one thread takes two; projected LSTMs take the row split), its weight packed by
    the threads too."""
    name = request.param
    split = name.endswith("_split") or name == "columns"
    tune(numba_strategy="step" if name.startswith("torch_mm") else
         "columns" if name == "columns" else "loop",
         split_min_macs=0 if split else 1 << 62,
         split_min_cells=0 if split else 1 << 62,
         split_min_cells_one_step=0 if split else 1 << 62,
         pack_split_min_bytes=0)
    if split:
        monkeypatch.setattr(team, "threads", lambda: 3)
    return request.param


def make_case(cell, T, B, H, lengths_kind, seed=0):
    """Float64 inputs of one recurrence call plus upstream gradients."""
    g = torch.Generator().manual_seed(seed)
    P = (H // 2 + 1 if H > 1 else 1) if cell == "lstm_proj" else H
    G = GATES[cell]
    k = 1.0 / H ** 0.5

    def u(*shape, scale=1.0):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale

    case = dict(
        xg=u(T, B, G * H, scale=1.5), w_hh=u(G * H, P, scale=k), h0=u(B, P, scale=0.5),
        c0=u(B, H, scale=0.5), grad_out=u(T, B, P), grad_hn=u(B, P), grad_cn=u(B, H),
        w_hr=u(P, H, scale=k) if cell == "lstm_proj" else None,
        b_hn=u(H, scale=k) if cell == "gru" else None,
    )
    lengths = None
    if lengths_kind == "mixed":
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
        lens[-1] = 1
        lengths = lens.to(torch.int64)
    elif lengths_kind == "full":
        lengths = torch.full((B,), T, dtype=torch.int64)
    case["lengths"] = lengths
    return case


def run(backend, cell, case, reverse, dtype):
    """Forward then backward through one backend; returns a dict of named results."""
    c = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
         for k, v in case.items()}
    lengths = c["lengths"]
    res = {}
    if cell.startswith("lstm"):
        out, hn, cn, saved = backend.lstm_forward(c["xg"], c["w_hh"], c["w_hr"], c["h0"],
                                                  c["c0"], lengths, reverse, True)
        dg, dh0, dc0, dw_hr = backend.lstm_backward(
            c["grad_out"], c["grad_hn"], c["grad_cn"], saved, c["w_hh"], c["w_hr"], c["h0"],
            c["c0"], out, lengths, reverse)
        res.update(out=out, h_n=hn, c_n=cn, dgates=dg, dh0=dh0, dc0=dc0)
        if c["w_hr"] is not None:
            res["dw_hr"] = dw_hr
        else:
            assert dw_hr is None
    elif cell.startswith("gru"):
        out, hn, saved = backend.gru_forward(c["xg"], c["w_hh"], c["b_hn"], c["h0"], lengths,
                                             reverse, True)
        dx, dhg, dh0 = backend.gru_backward(c["grad_out"], c["grad_hn"], saved, c["w_hh"],
                                            c["b_hn"], c["h0"], out, lengths, reverse)
        res.update(out=out, h_n=hn, dxgates=dx, dhgates=dhg, dh0=dh0)
    else:
        nl = cell.split("_")[1]
        out, hn, saved = backend.rnn_forward(c["xg"], c["w_hh"], c["h0"], lengths, reverse, nl,
                                             True)
        dg, dh0 = backend.rnn_backward(c["grad_out"], c["grad_hn"], saved, c["w_hh"], c["h0"],
                                       out, lengths, reverse, nl)
        res.update(out=out, h_n=hn, dgates=dg, dh0=dh0)
    return res


def check(cell, case, reverse, dtype):
    if dtype != torch.float64:
        # Same float32-representable inputs for both, so only the arithmetic differs.
        case = {k: (v.to(dtype).double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                    else v) for k, v in case.items()}
    expected = run(reference, cell, case, reverse, torch.float64)
    actual = run(nb, cell, case, reverse, dtype)
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        assert got.dtype == dtype, name
        assert got.shape == want.shape, name
        torch.testing.assert_close(got.double(), want, **TOL[dtype],
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed"], ids=["nolen", "lens"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 1), (6, 7, 7), (11, 7, 33), (4, 1, 33)])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference(cell, T, B, H, reverse, lengths_kind, dtype, strategy):
    check(cell, make_case(cell, T, B, H, lengths_kind), reverse, dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_equal_to_T_match_no_lengths(cell):
    # lengths == T everywhere must be exactly the no-lengths computation.
    case = make_case(cell, 5, 3, 7, "full")
    for reverse in (False, True):
        with_len = run(nb, cell, case, reverse, torch.float64)
        without = run(nb, cell, dict(case, lengths=None), reverse, torch.float64)
        for name in with_len:
            torch.testing.assert_close(with_len[name], without[name], atol=0, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [0, 3])
def test_empty_batch(cell, T, strategy):
    case = make_case(cell, max(T, 1), 1, 7, None)
    empty = {k: (v[:T, :0] if k in ("xg", "grad_out") else v[:0] if k in
                 ("h0", "c0", "grad_hn", "grad_cn") else v) for k, v in case.items()}
    res = run(nb, cell, empty, False, torch.float32)
    ref = run(reference, cell, empty, False, torch.float32)
    for name, want in ref.items():
        assert res[name].shape == want.shape, name
        torch.testing.assert_close(res[name], want, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("cell", CELLS)
def test_half_types_are_the_float32_computation_rounded(cell, dtype):
    # Half inputs compute in float32 inside: results must equal the float32 run on the same
    # (upcast) values, rounded once to the half type.
    case = make_case(cell, 6, 7, 33, "mixed")
    case = {k: (v.to(dtype).double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v) for k, v in case.items()}
    half = run(nb, cell, case, True, dtype)
    single = run(nb, cell, case, True, torch.float32)
    for name in single:
        assert half[name].dtype == dtype, name
        torch.testing.assert_close(half[name], single[name].to(dtype), atol=0, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_no_grad_forward_matches_and_saves_nothing():
    case = make_case("lstm_proj", 5, 3, 7, "mixed")
    out, hn, cn, saved = nb.lstm_forward(case["xg"], case["w_hh"], case["w_hr"], case["h0"],
                                         case["c0"], case["lengths"], True, False)
    assert saved == ()
    rout, rhn, rcn, _ = reference.lstm_forward(case["xg"], case["w_hh"], case["w_hr"],
                                               case["h0"], case["c0"], case["lengths"], True,
                                               False)
    for a, b in ((out, rout), (hn, rhn), (cn, rcn)):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    for cell, fwd in (("gru", lambda c: nb.gru_forward(c["xg"], c["w_hh"], c["b_hn"], c["h0"],
                                                       c["lengths"], False, False)),
                      ("rnn_tanh", lambda c: nb.rnn_forward(c["xg"], c["w_hh"], c["h0"],
                                                            c["lengths"], False, "tanh", False))):
        c = make_case(cell, 5, 3, 7, "mixed")
        assert fwd(c)[2] == ()


def _forward(backend, cell, c, xg, reverse, need_grad):
    """The forward outputs (out, h_n[, c_n]) and saved tensors of one backend call."""
    if cell.startswith("lstm"):
        out, hn, cn, saved = backend.lstm_forward(xg, c["w_hh"], c["w_hr"], c["h0"], c["c0"],
                                                  c["lengths"], reverse, need_grad)
        return (out, hn, cn), saved
    if cell.startswith("gru"):
        out, hn, saved = backend.gru_forward(xg, c["w_hh"], c["b_hn"], c["h0"], c["lengths"],
                                             reverse, need_grad)
    else:
        out, hn, saved = backend.rnn_forward(xg, c["w_hh"], c["h0"], c["lengths"], reverse,
                                             cell.split("_")[1], need_grad)
    return (out, hn), saved


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed"], ids=["nolen", "lens"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_forward_matches_reference(cell, reverse, lengths_kind, dtype, strategy):
    # Inference runs its own pointwise rows (LSTM: nothing saved), in every strategy.
    case = make_case(cell, 11, 7, 33, lengths_kind)
    case = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in case.items()}
    got, saved = _forward(nb, cell, case, case["xg"], reverse, False)
    assert saved == ()
    want, _ = _forward(reference, cell, {k: (v.double() if isinstance(v, torch.Tensor) and
                                             v.is_floating_point() else v)
                                         for k, v in case.items()},
                       case["xg"].double(), reverse, False)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, **TOL[dtype])


@pytest.mark.parametrize("H", [7, 32])     # 32: whole vectors, the gate panels (forced on)
@pytest.mark.parametrize("cell", ["lstm", "lstm_proj"])
def test_inference_leaves_the_unwritten_buffers_alone(cell, H, strategy, monkeypatch, tune):
    # One gates and cs buffer per shape serves every LSTM call without need_grad
    # (buffers.unwritten): no strategy may read them (the poison fixture's NaN would reach the
    # outputs) or write them (checked here on 7-filled ones), dead rows included.
    tune(gate_panels_max_rows=1 << 20)
    given = {}

    def sevens(shape, dtype):
        return given.setdefault(shape, np.full(shape, 7.0, buffers.NUMPY_DTYPES[dtype]))

    monkeypatch.setattr(buffers, "unwritten", sevens)
    case = make_case(cell, 5, 3, H, "mixed")
    got, _ = _forward(nb, cell, case, case["xg"], False, False)
    assert given and all((buf == 7.0).all() for buf in given.values())
    assert all(not t.isnan().any() for t in got)


@pytest.mark.parametrize("need_grad", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed"], ids=["nolen", "lens"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_input_projected_in_chunks_matches_whole(cell, reverse, lengths_kind, need_grad, tune):
    # An ops.InputProjection is projected 3 steps at a time (the last chunk shorter), chunks
    # interleaved with the recurrence; lengths are shifted per chunk. Against the reference run
    # on the whole projection.
    T, B, H, I = 11, 7, 33, 5
    case = make_case(cell, T, B, H, lengths_kind)
    G = case["xg"].shape[2]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(T, B, I, generator=g, dtype=torch.float64) * 2 - 1
    w_ih = torch.rand(G, I, generator=g, dtype=torch.float64) - 0.5
    bias = torch.rand(G, generator=g, dtype=torch.float64) - 0.5
    whole = ops._input_projection(x, w_ih, bias)
    tune(numba_strategy="loop",
         fuse_projection=False,         # LSTM: see the test below
         project_in_chunks_from=0,
         project_chunk_bytes=3 * B * G * 8)
    chunks = list(ops.InputProjection(x, w_ih, bias).chunks(3, reverse))
    assert [t0 for t0, _, _ in chunks] == ([9, 6, 3, 0] if reverse else [0, 3, 6, 9])
    got, saved = _forward(nb, cell, case, ops.InputProjection(x, w_ih, bias), reverse,
                          need_grad)
    want, _ = _forward(reference, cell, case, whole, reverse, need_grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    if need_grad:
        # What backward reads: the same saved tensors as a forward on the whole projection.
        whole_saved = _forward(nb, cell, case, whole, reverse, True)[1]
        assert len(saved) == len(whole_saved)
        for a, b in zip(saved, whole_saved):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def _projection_case(cell, T, B, H, I, lengths_kind, dtype):
    case = make_case(cell, T, B, H, lengths_kind)
    G = GATES[cell] * H
    g = torch.Generator().manual_seed(1)
    x = torch.rand(T, B, I, generator=g, dtype=torch.float64) * 2 - 1
    w_ih = (torch.rand(G, I, generator=g, dtype=torch.float64) - 0.5) / I ** 0.5
    bias = torch.rand(G, generator=g, dtype=torch.float64) - 0.5
    # float32-representable values, so that only the arithmetic differs between dtypes
    cast = {k: (v.to(dtype).double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v) for k, v in case.items()}
    return cast, x.to(dtype).double(), w_ih.to(dtype).double(), bias.to(dtype).double()


FUSED_CELLS = ["lstm", "rnn_tanh", "rnn_relu"]
_FUSED_ROUTES = {"lstm": launch.LSTM_FORWARD, "rnn_tanh": launch.RNN_FORWARD,
                 "rnn_relu": launch.RNN_FORWARD}


@pytest.mark.parametrize("split", [False, True], ids=["one", "split"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("need_grad", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed"], ids=["nolen", "lens"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_projection_inside_the_loop_matches_reference(cell, reverse, lengths_kind, need_grad,
                                                      dtype, split, monkeypatch, tune):
    # lstm_forward_fused / rnn_forward_fused ([x_t, h] @ [W_ih, W_hh]^T each step) against the
    # reference on the whole projection, in one thread or as 3 chunks of rows (uneven: 13 rows)
    # on the team; what the LSTM saves for backward equals what the unfused loop saves.
    T, B, H, I = 9, 13, 33, 5
    case, x, w_ih, bias = _projection_case(cell, T, B, H, I, lengths_kind, dtype)
    tune(numba_strategy="loop", fuse_min_steps=2, split_min_macs=0 if split else 1 << 62)
    if split:
        monkeypatch.setattr(team, "threads", lambda: 3)
    calls = []
    real = _FUSED_ROUTES[cell]["fused"]
    monkeypatch.setitem(_FUSED_ROUTES[cell], "fused", lambda *a: calls.append(1) or real(*a))
    low = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
           for k, v in case.items()}
    projection = ops.InputProjection(x.to(dtype), w_ih.to(dtype), bias.to(dtype))
    got, saved = _forward(nb, cell, low, projection, reverse, need_grad)
    assert calls == [1]
    want, _ = _forward(reference, cell, case, ops._input_projection(x, w_ih, bias), reverse,
                       need_grad)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, **TOL[dtype])
    if need_grad and cell == "lstm":
        tune(fuse_projection=False)
        unfused = _forward(nb, cell, low, projection, reverse, True)[1]
        assert len(saved) == len(unfused) == 2
        for a, b in zip(saved, unfused):
            torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_projection_inside_the_loop_half_types(cell, dtype, monkeypatch, tune):
    # Half inputs: the float32 computation, rounded once.
    tune(fuse_min_steps=2)
    calls = []
    real = _FUSED_ROUTES[cell]["fused"]
    monkeypatch.setitem(_FUSED_ROUTES[cell], "fused", lambda *a: calls.append(1) or real(*a))
    case, x, w_ih, bias = _projection_case(cell, 6, 8, 33, 5, "mixed", dtype)

    def forward(dt):
        low = {k: (v.to(dt) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
               for k, v in case.items()}
        return _forward(nb, cell, low, ops.InputProjection(x.to(dt), w_ih.to(dt),
                                                            bias.to(dt)), True, False)[0]

    for half, single in zip(forward(dtype), forward(torch.float32)):
        assert half.dtype == dtype
        torch.testing.assert_close(half, single.to(dtype), atol=0, rtol=0)
    assert calls == [1, 1]


def test_projection_inside_the_loop_rule(monkeypatch, cpu_family):
    # Fused only for an InputProjection, without proj_size, with 4 rows or more per thread, 16
    # steps or more and [W_ih, W_hh] up to fuse_max_weight_bytes (8 MiB on AMD CPUs, 1 MiB on
    # Intel ones), or up to 8 MiB from 24 rows per thread; LSTM and RNN only.
    monkeypatch.setattr(team, "threads", lambda: 2)
    f32 = torch.float32

    def fuses(T, B, H, I, proj=False, tensor=False):
        x = torch.zeros(T, B, I)
        xg = torch.zeros(T, B, 4 * H) if tensor else ops.InputProjection(x, torch.zeros(4 * H, I),
                                                                          None)
        return launch._input_size(xg) is not None and plan.forward(
            "lstm", T, B, H, H // 2 if proj else H, launch._input_size(xg), f32).route == "fused"

    assert fuses(100, 16, 128, 128) and fuses(100, 4, 32, 32) and fuses(16, 16, 128, 128)
    assert not fuses(15, 16, 128, 128)               # too few steps to pay for the packing
    assert not fuses(100, 3, 32, 32)                 # one thread, 3 rows
    assert not fuses(100, 4, 64, 64)                 # split: 2 rows per thread
    amd = cpu_family == "amd"
    assert fuses(100, 64, 512, 512)                  # 8 MiB, 32 rows per thread
    assert fuses(100, 48, 256, 256)                  # 2 MiB, 24 rows per thread
    assert fuses(100, 46, 256, 256) == amd           # 2 MiB, 23 rows per thread
    assert fuses(100, 16, 512, 512) == amd           # 8 MiB, 8 rows per thread
    assert fuses(100, 16, 128, 384)                  # 1 MiB
    assert fuses(100, 16, 128, 385) == amd           # 1 MiB + 2 KiB
    assert fuses(100, 64, 128, 385)                  # the same from 24 rows per thread
    assert not fuses(100, 64, 512, 1024)             # 12 MiB
    assert not fuses(100, 64, 512, 513)              # 8 MiB + 8 KiB
    assert not fuses(100, 16, 128, 128, proj=True)
    assert not fuses(100, 16, 128, 128, tensor=True)
    line = nb.explain("lstm", 100, 16, 128, I=128)
    assert line.startswith("one compiled loop over 100 steps, input projection inside"), line
    assert "inside" not in nb.explain("lstm", 100, 16, 128)         # input size unknown
    assert "inside" not in nb.explain("gru", 100, 16, 128, I=128)
    assert "inside" in nb.explain("rnn", 100, 16, 128, I=128)


def test_inputs_are_not_modified():
    case = make_case("gru", 4, 3, 7, "mixed")
    before = {k: v.clone() for k, v in case.items() if isinstance(v, torch.Tensor)}
    run(nb, "gru", case, False, torch.float64)
    for k, v in before.items():
        assert torch.equal(case[k], v), k


def test_supports():
    assert nb.NAME == "numba"
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        assert nb.supports(torch.device("cpu"), dt)
        assert nb.supports("cpu", dt)
    assert not nb.supports("cpu", torch.int32)
    assert not nb.supports("meta", torch.float32)


def test_bad_nonlinearity():
    case = make_case("rnn_tanh", 2, 1, 3, None)
    with pytest.raises(ValueError, match="nonlinearity"):
        nb.rnn_forward(case["xg"], case["w_hh"], case["h0"], None, False, "sigmoid", False)


def _row_arguments(name, H, dtype):
    """Arguments of each pointwise row function for H units (one float scratch per array)."""
    from fastrnn.kernels.numba import gru, lstm, rnn
    v = {k: np.zeros(k * H, dtype) for k in (1, 3, 4)}
    one, three, four = (lambda k=k: v[k].copy() for k in (1, 3, 4))
    return {
        "lstm_forward": (lstm._lstm_forward_row, (H, H, four(), four(), four(), one(), one(),
                                                  one())),
        "lstm_forward_inference": (lstm._lstm_forward_row_inference,
                                   (H, H, four(), four(), one(), one())),
        "lstm_backward": (lstm._lstm_backward_row, (H, H, one(), one(), four(), one(), one(),
                                                    one(), four())),
        "lstm_backward_proj": (lstm._lstm_backward_row_proj, (H, one(), four(), one(), one(),
                                                              one(), four())),
        "gru_forward": (gru._gru_forward_row, (H, H, three(), three(), one(), one(), three(),
                                               one(), one())),
        "gru_backward": (gru._gru_backward_row, (H, H, one(), one(), three(), one(), one(),
                                                 three(), three())),
        "rnn_forward": (rnn._rnn_forward_row, (H, False, one(), one(), one(), one())),
        "rnn_backward": (rnn._rnn_backward_row, (H, True, one(), one(), one(), one())),
    }[name]


@pytest.mark.parametrize("name", ["lstm_forward", "lstm_forward_inference", "lstm_backward",
                                  "lstm_backward_proj", "gru_forward", "gru_backward",
                                  "rnn_forward", "rnn_backward"])
def test_pointwise_rows_compile_to_full_width_vectors(name):
    # Each row function compiled on its own, as Numba compiles it before any caller inlines it,
    # multiplies whole host-width vectors (kernels/numba/simd.py). Left to LLVM's vectoriser the
    # LSTM backward row compiled to scalar code here, and rows it did vectorise used 256-bit
    # vectors on AVX-512 Intel CPUs.
    from numba import njit

    from fastrnn.kernels.numba import simd
    from fastrnn.kernels.numba.config import JIT
    for dtype, element in ((np.float32, "float"), (np.float64, "double")):
        row, args = _row_arguments(name, 40, dtype)
        fresh = njit(**dict(JIT, cache=False))(row.py_func)    # inspectable, unlike a cached one
        fresh(*args)
        llvm_ir = fresh.inspect_llvm(fresh.signatures[0])
        lanes = simd.VECTOR_BYTES // np.dtype(dtype).itemsize
        assert re.search(rf"= fmul [a-z ]*<{lanes} x {element}>", llvm_ir), (name, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_product_odd_shapes(dtype):
    # The register-blocked product on packed weights against a float64 product: rows past a
    # multiple of 4 (2- and 1-row blocks, odd K for the 1-row block's two accumulators), columns
    # past a multiple of a panel (one-vector panels, then single columns: N = 5, 67, 100, 260),
    # and a transposed operand (the launcher packs W^T views without copying them first).
    from fastrnn.kernels.numba.linalg import matmul_packed, pack_weight, panel_width
    rng = np.random.default_rng(0)
    W = panel_width(dtype)
    for M in (1, 2, 3, 5, 6, 7, 8, 16):
        for K in (1, 7, 33, 130):
            for N in (1, 5, 67, 100, 260, 2 * W):
                a = rng.standard_normal((M, K)).astype(dtype)
                b = rng.standard_normal((N, K)).astype(dtype).T
                out = np.full((M, N), np.nan, dtype)
                matmul_packed(a, pack_weight(b), out, 0, N, 0)
                ref = a.astype(np.float64) @ b.astype(np.float64)
                tol = 1e-12 if dtype == np.float64 else 2e-6
                np.testing.assert_allclose(out, ref, rtol=0, atol=tol * np.sqrt(K) * 4,
                                           err_msg=f"{M}x{K}x{N}")


# Intel's chunk of the product's k loop (linalg.K_BLOCK_BYTES), in rows of a 4-vector panel: what
# the chunked cases below take as K past one chunk, on any CPU.
INTEL_K_BLOCK_ROWS = linalg.k_block_rows(tuning.INTEL.product_k_block_bytes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_product_backwards_panels_are_the_same_to_the_bit(dtype):
    # A recurrence's odd steps take the panels last to first (linalg.matmul_packed): every
    # column must come out exactly as in the forward order, with leftover one-vector panels and
    # single columns, k in chunks, into columns n0.. of a wider out, and matmul_packed_in leaves
    # the order alone where it prefetches.
    from fastrnn.kernels.numba.linalg import (
        matmul_packed,
        matmul_packed_blocked,
        matmul_packed_in,
        pack_weight,
        panel_width,
    )
    rng = np.random.default_rng(2)
    W = panel_width(dtype)
    for M in (1, 2, 3, 5, 8):
        for K in (1, 33, INTEL_K_BLOCK_ROWS + 7):
            for N in (W, 3 * W, 3 * W + W // 4 + 3):
                a = rng.standard_normal((M, K)).astype(dtype)
                b_full = rng.standard_normal((K, N)).astype(dtype)
                b = pack_weight(b_full)
                ref = a.astype(np.float64) @ b_full.astype(np.float64)
                outs = []
                for step in (0, 1, 2, 3):
                    out = np.full((M, N + 5), np.nan, dtype)
                    matmul_packed(a, b, out, 5, N, step)
                    outs.append(out)
                for backwards in (False, True):
                    out = np.full((M, N + 5), np.nan, dtype)
                    matmul_packed_blocked(a, b, out, 5, N, 4, False, backwards)
                    outs.append(out)
                out = np.full((M, N + 5), np.nan, dtype)
                matmul_packed_in(a, b, out, 5, N, 1 << 62, 1)      # prefetching: forward order
                outs.append(out)
                tol = 1e-12 if dtype == np.float64 else 2e-6
                np.testing.assert_allclose(outs[0][:, 5:], ref, rtol=0, atol=tol * np.sqrt(K) * 4)
                for out in outs[1:4] + outs[6:]:
                    np.testing.assert_array_equal(out, outs[0], err_msg=f"{M}x{K}x{N}")
                np.testing.assert_array_equal(outs[5], outs[4], err_msg=f"{M}x{K}x{N}, chunks of 4")


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_product_k_chunks(dtype, prefetch):
    # The k loop in chunks (linalg.K_BLOCK_BYTES): chunk sizes that divide K and that leave an
    # odd remainder (the 1-row block's pairs of k), into columns n0.. of a wider NaN-filled out
    # (the first chunk must not read out, the later ones must add to it, columns outside
    # n0..n0+N stay untouched), and K past the default chunk through matmul_packed itself;
    # with and without prefetching the next chunk (a hint: the sums must not change, and 4-12
    # rows give the 4-row blocks each a share of the next chunk's lines). The default chunk is
    # Intel's (AMD CPUs take all of K in one, k_block_rows(None)).
    from fastrnn.kernels.numba.linalg import (
        k_block_rows,
        matmul_packed,
        matmul_packed_blocked,
        pack_weight,
        panel_width,
    )
    assert k_block_rows(None) > 1 << 31
    rng = np.random.default_rng(1)
    W = panel_width(dtype)
    default = INTEL_K_BLOCK_ROWS
    cases = [(M, K, kc) for M in (1, 3, 6, 7, 12) for K, kc in ((12, 4), (13, 4), (13, 2), (9, 1))]
    cases += [(5, 2 * default + 3, None), (4, default, None), (9, 3 * default, None)]
    for M, K, kc in cases:
        N = 2 * W + 3
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
        out = np.full((M, N + 7), np.nan, dtype)
        if kc is None and not prefetch:
            matmul_packed(a, pack_weight(b), out, 5, N, 0)
        else:
            matmul_packed_blocked(a, pack_weight(b), out, 5, N, kc or default, prefetch, False)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        tol = 1e-12 if dtype == np.float64 else 2e-6
        np.testing.assert_allclose(out[:, 5:5 + N], ref, rtol=0, atol=tol * np.sqrt(K) * 4,
                                   err_msg=f"{M}x{K}x{N} in chunks of {kc}")
        assert np.isnan(out[:, :5]).all() and np.isnan(out[:, 5 + N:]).all()


def test_l2_size_read_from_sysfs(tmp_path):
    # The product prefetches from one core's L2 size (linalg.STREAM_FROM_BYTES), read from
    # sysfs: the level-2 entry among the cache indexes, in K or M; a missing or unreadable tree
    # gives the default.
    from fastrnn.kernels.numba.linalg import STREAM_FROM_BYTES
    for index, (level, size) in enumerate((("1", "48K"), ("1", "32K"), ("2", "2048K"),
                                           ("3", "266240K"))):
        d = tmp_path / f"index{index}"
        d.mkdir()
        (d / "level").write_text(level + "\n")
        (d / "size").write_text(size + "\n")
    assert cpu.l2_bytes.__wrapped__(str(tmp_path)) == 2 << 20
    (tmp_path / "index2" / "size").write_text("1M\n")
    assert cpu.l2_bytes.__wrapped__(str(tmp_path)) == 1 << 20
    (tmp_path / "index2" / "size").write_text("\n")
    assert cpu.l2_bytes.__wrapped__(str(tmp_path)) == cpu._DEFAULT_L2_BYTES
    assert cpu.l2_bytes.__wrapped__(str(tmp_path / "missing")) == cpu._DEFAULT_L2_BYTES
    assert STREAM_FROM_BYTES == cpu.l2_bytes()


def test_packed_weights_and_scratch_start_on_a_cache_line():
    # The product loads the packed weight as whole vectors 4 times per k: from numpy's usual
    # 16 bytes past a cache line every 64-byte load spans two lines (10-20% slower). Every
    # packer and the launcher's scratch buffers start on a line, whatever numpy returns.
    from fastrnn.kernels.numba import simd
    from fastrnn.kernels.numba.linalg import pack_weight, pack_weight_concat_t, pack_weight_slices
    rng = np.random.default_rng(3)
    line = simd.ALIGN_BYTES
    for dtype in (np.float32, np.float64):
        for K, N in ((3, 5), (64, 256), (100, 300), (257, 1024)):
            b = rng.standard_normal((K, N)).astype(dtype)
            assert pack_weight(b).ctypes.data % line == 0
            assert pack_weight(np.ascontiguousarray(b.T).T).ctypes.data % line == 0
            w = np.ascontiguousarray(b.T)
            assert pack_weight_concat_t(w, w).ctypes.data % line == 0
            bounds = np.array([0, N // 2, N], np.int64)
            assert pack_weight_slices(w, True, 1, bounds).ctypes.data % line == 0
            torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
            assert _SCRATCH((K, N), torch_dtype).ctypes.data % line == 0


def test_pack_weight_layout():
    # Panels of W columns (K x W row-major), then one-vector panels (K x L), then the last
    # N % L columns one after the other.
    from fastrnn.kernels.numba.linalg import pack_weight, panel_width
    W = panel_width(np.float32)
    L = W // 4
    K, N = 3, 2 * W + L + 5
    b = np.arange(K * N, dtype=np.float32).reshape(K, N)
    p = pack_weight(b)
    assert p.shape == (K * N,)
    np.testing.assert_array_equal(p[:K * W], b[:, :W].ravel())
    np.testing.assert_array_equal(p[K * W:2 * K * W], b[:, W:2 * W].ravel())
    np.testing.assert_array_equal(p[2 * K * W:2 * K * W + K * L], b[:, 2 * W:2 * W + L].ravel())
    np.testing.assert_array_equal(p[K * (2 * W + L):], b[:, 2 * W + L:].T.ravel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_weight_any_strides(dtype):
    # The compiled packers (a row-run copy, a blocked transposing copy) against the layout
    # written with numpy views, for every kind of source the launchers pass: C-contiguous (W_hh
    # for the backward), a transposed view (W_hh^T), and column slices of either (one hidden-
    # unit slice of a gate, pack_weight_slices); K and N off every block size.
    from fastrnn.kernels.numba.linalg import pack_weight, panel_width
    W = panel_width(dtype)
    L = W // 4

    def reference(b):
        K, N = b.shape
        wide, narrow = N - N % W, N - N % L
        parts = [b[:, n:n + W].ravel() for n in range(0, wide, W)]
        parts += [b[:, n:n + L].ravel() for n in range(wide, narrow, L)]
        parts += [b[:, n] for n in range(narrow, N)]
        return np.concatenate(parts) if parts else np.empty(0, dtype)

    rng = np.random.default_rng(1)
    for K, N in ((1, 1), (3, 2 * W + L + 5), (17, W), (33, 3 * W + 2 * L), (130, 67)):
        full = rng.standard_normal((K, N + 7)).astype(dtype)
        sources = {"contiguous": np.ascontiguousarray(full[:, :N]),
                   "transposed": np.ascontiguousarray(full[:, :N].T).T,
                   "column slice": full[:, 3:N + 3],
                   "transposed slice": np.ascontiguousarray(full.T)[3:N + 3].T}
        for name, b in sources.items():
            np.testing.assert_array_equal(pack_weight(b), reference(b), err_msg=f"{name} {K}x{N}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_weight_concat_t_is_the_concatenation_packed(dtype):
    # The fused LSTM loop's [W_ih, W_hh]^T packed from the two weights directly; K1 and K2 off
    # the block size (and K1 = 0 or K2 = 0), N off every panel size.
    from fastrnn.kernels.numba.linalg import pack_weight, pack_weight_concat_t, panel_width
    rng = np.random.default_rng(3)
    W = panel_width(dtype)
    for N, K1, K2 in ((2 * W + W // 4 + 3, 5, 33), (W, 16, 16), (7, 0, 9), (3 * W, 37, 0)):
        w1 = rng.standard_normal((N, K1)).astype(dtype)
        w2 = rng.standard_normal((N, K2)).astype(dtype)
        want = pack_weight(np.ascontiguousarray(np.concatenate([w1, w2], 1)).T)
        np.testing.assert_array_equal(pack_weight_concat_t(w1, w2), want, err_msg=f"{N} {K1} {K2}")


@pytest.mark.parametrize("transposed", [False, True])
def test_pack_weight_slices_layout(transposed):
    # Slice k's group g is pack_weight of that slice's columns of the group, at slice_offset;
    # uneven slices (the last takes the rest) and a width off the vector size.
    from fastrnn.kernels.numba.linalg import pack_weight, pack_weight_slices, slice_offset
    rng = np.random.default_rng(2)
    groups, n, K = 3, 37, 21
    src = rng.standard_normal((groups * n, K) if transposed else (K, groups * n))
    src = src.astype(np.float32)
    b = src.T if transposed else src
    bounds = np.array([0, 16, 32, n], dtype=np.int64)
    packed = pack_weight_slices(src, transposed, groups, bounds)
    for k in range(len(bounds) - 1):
        j0, j1 = int(bounds[k]), int(bounds[k + 1])
        for g in range(groups):
            o = slice_offset(K, groups, j0, j1, g)
            np.testing.assert_array_equal(packed[o:o + K * (j1 - j0)],
                                          pack_weight(b[:, g * n + j0:g * n + j1]))


def test_team_bounds_balance_live_steps():
    assert team.bounds(7, 3).tolist() == [0, 2, 4, 7]
    assert team.bounds(2, 2).tolist() == [0, 1, 2]
    # Sorted packed lengths: the long first rows get a chunk of their own.
    assert team.bounds(4, 2, np.array([10, 2, 2, 2])).tolist() == [0, 1, 4]
    assert team.bounds(3, 3, np.array([1, 1, 1])).tolist() == [0, 1, 2, 3]


def test_team_runs_on_torchs_openmp_threads():
    # torch's CPU builds run on OpenMP: the split must find that runtime, not fall back silently.
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch does not run on OpenMP here")
    assert team._gomp_parallel() is not None


@pytest.mark.parametrize("cell", CELLS)
def test_split_without_an_openmp_runtime_runs_every_chunk_here(cell, monkeypatch, tune):
    # No runtime found: the calling thread claims all chunks (buffers are NaN-poisoned, so a
    # skipped chunk fails). Not bitwise: the product's row blocking differs with chunk size.
    case = make_case(cell, 5, 7, 9, "mixed")
    whole = run(nb, cell, case, False, torch.float64)
    tune(split_min_macs=0, split_min_cells=0)
    monkeypatch.setattr(team, "threads", lambda: 4)
    monkeypatch.setattr(team, "_gomp_parallel", lambda: None)
    for strategy in ("step", "loop", "columns"):
        tune(numba_strategy=strategy)
        split = run(nb, cell, case, False, torch.float64)
        for name in whole:
            torch.testing.assert_close(split[name], whole[name], atol=1e-12, rtol=1e-12)


def test_split_leaves_torch_thread_count_alone():
    before = torch.get_num_threads()
    case = make_case("lstm", 4, 8, 16, None)
    run(nb, "lstm", case, False, torch.float32)
    assert torch.get_num_threads() == before


def test_pack_rejects_non_contiguous_arrays():
    a = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        team.pack(4, team.bounds(4, 2), a)


@pytest.mark.parametrize("kind,B,H,strategy", [
    ("lstm", 64, 256, "loop"),       # W_hh 1 MiB: the row-split loop from 8 rows
    ("lstm", 8, 256, "loop"),
    ("lstm", 4, 256, "columns"),     # 3-7 rows from 1 MiB: the hidden units split
    ("rnn", 6, 512, "columns"),
    ("gru", 6, 256, "loop"),         # 768 KiB: mixed at 3-7 rows, the loop stays
    ("lstm", 2, 256, "columns"),     # 1-2 rows from 512 KiB
    ("gru", 1, 256, "columns"),      # 768 KiB
    ("rnn", 1, 256, "loop"),         # 256 KiB: one row does not pay for a barrier per step
    ("gru", 16, 512, {"amd": "loop", "intel": "columns"}),   # 3 MiB, 8-16 rows
    ("lstm", 16, 512, {"amd": "loop", "intel": "columns"}),  # 4 MiB
    ("gru", 16, 440, "loop"),        # 2.2 MiB: the loop on both
    ("lstm", 17, 512, "loop"),       # past 16 rows the loop up to 4 MiB
    ("lstm", 16, 640, "columns"),    # 6.25 MiB, up to 16 rows: the hidden units split
    ("lstm", 32, 512, "loop"),       # 4 MiB, 32 rows share each pass over it
    ("gru", 16, 1024, "columns"),    # 12 MiB
    ("lstm", 64, 1024, "step"),      # 16 MiB, many rows: the per-step GEMM
])
def test_strategy_rule(kind, B, H, strategy, cpu_family):
    # The measured crossover (benchmarks/results/cpu-strategy-2026-11-26-intel.md, and -zen4.md
    # for 3-6 rows; 8-16 rows of 3-4 MiB differ by CPU family, kernels/cpu.py) as launch applies
    # it, on a machine with 2 threads for torch.
    if team.threads() < 2:
        pytest.skip("the hidden-unit split needs 2 threads")
    if isinstance(strategy, dict):
        strategy = strategy[cpu_family]
    line = nb.explain(kind, 10, B, H)
    expected = {"loop": "one compiled loop", "columns": "hidden units split",
                "step": "per step:"}[strategy]
    assert expected in line and (strategy != "loop" or "hidden" not in line), line


@pytest.mark.parametrize("kind,B,H", [("lstm", 1, 64), ("gru", 16, 256), ("rnn", 64, 1024),
                                      ("lstm", 2, 512)])
def test_single_step_takes_the_step_path_without_packing(kind, B, H, monkeypatch):
    # A cell (T = 1) whatever its size: packing W_hh for the compiled loop or for oneDNN would
    # cost more than the one step it serves.
    line = nb.explain(kind, 1, B, H)
    assert "per step:" in line and "packed" not in line, line

    def no_packing(*args, **kwargs):
        raise AssertionError("a single step packed its weight")

    monkeypatch.setattr(runners, "RepeatedLinear", no_packing)
    monkeypatch.setattr(runners, "pack_weight", no_packing)
    monkeypatch.setattr(runners, "pack_weight_slices", no_packing)
    cell = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}[kind]
    case = make_case(cell, 1, B, H, None)
    check(cell, case, False, torch.float32)


def test_projected_lstm_never_splits_hidden_units(tune):
    tune(numba_strategy="columns")
    assert plan.forward("lstm", 10, 1, 256, 128).strategy == "loop"
    tune(numba_strategy="auto")
    assert plan.forward("lstm", 10, 1, 512, 256).strategy != "columns"


def test_one_thread_never_splits_hidden_units(monkeypatch):
    monkeypatch.setattr(team, "threads", lambda: 1)
    assert plan.forward("lstm", 10, 1, 512).strategy != "columns"




@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_layers_whose_weights_outgrow_l2_match_torch(kind, monkeypatch, tune):
    # A recurrent weight a little over linalg.STREAM_FROM_BYTES (one core's L2), so the product
    # prefetches the next chunk in its 4-row blocks, forward and backward: end to end against
    # torch.nn (outputs, states, every gradient), 9 rows split 4 + 5 over two threads.
    from fastrnn.kernels.numba.linalg import STREAM_FROM_BYTES
    from rnn_cases import check_parity
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    H = int((STREAM_FROM_BYTES / (gates * 4)) ** 0.5) + 3
    assert gates * H * H * 4 >= STREAM_FROM_BYTES
    tune(numba_strategy="loop")
    monkeypatch.setattr(team, "threads", lambda: 2)
    check_parity(kind, "numba", torch.float32, 40, H, 20, 9)
