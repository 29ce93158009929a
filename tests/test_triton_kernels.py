"""The triton backend against fastrnn.reference, under the Triton interpreter on CPU (CI).

TRITON_INTERPRET=1 must be in the environment before triton is imported (tests/conftest.py sets
it when CUDA is missing); without it, or without triton, this module is skipped. Shapes are tiny
because the interpreter costs milliseconds per program per step.

Every case: the reference in float64 vs the kernels in float32 (3e-5 abs / 2e-4 rel), forward
outputs, final states and every backward return, with all kernel buffers NaN-poisoned and
padded outputs checked to be exactly zero.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

import fastrnn.kernels.triton as tk  # noqa: E402
import fastrnn.reference as ref  # noqa: E402
from fastrnn.steps import active_mask  # noqa: E402

if os.environ.get("TRITON_INTERPRET") != "1" or not tk.supports("cpu", torch.float32):
    pytest.skip("needs TRITON_INTERPRET=1 set before triton is imported", allow_module_level=True)

ATOL, RTOL = 3e-5, 2e-4
# (cell, option): LSTM with/without projection, GRU with/without b_hn, RNN tanh/relu.
CELLS = [("lstm", None), ("lstm", "proj"), ("gru", "bhn"), ("gru", None), ("rnn", "tanh"),
         ("rnn", "relu")]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def cell_id(c):
    return f"{c[0]}-{c[1]}"


def make_case(cell, opt, T, B, H, lengths=None, seed=0):
    """float64 inputs, upstream gradients and lengths for one layer/direction."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    P = max(1, H - 2) if opt == "proj" else H
    case = dict(
        xg=rnd(T, B, GATES[cell] * H), w_hh=rnd(GATES[cell] * H, P, scale=0.6),
        w_hr=rnd(P, H, scale=0.6) if opt == "proj" else None,
        b_hn=rnd(H) if opt == "bhn" else None,
        h0=rnd(B, P), c0=rnd(B, H) if cell == "lstm" else None,
        grad_out=rnd(T, B, P), grad_hn=rnd(B, P), grad_cn=rnd(B, H) if cell == "lstm" else None,
        lengths=None if lengths is None else torch.tensor(lengths, dtype=torch.int64),
    )
    return case


def run(backend, cell, opt, case, reverse, dtype):
    """Forward then backward through ``backend``; returns (forward outputs, backward outputs)."""
    c = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
         for k, v in case.items()}
    if cell == "lstm":
        out, h_n, c_n, saved = backend.lstm_forward(
            c["xg"], c["w_hh"], c["w_hr"], c["h0"], c["c0"], c["lengths"], reverse, True)
        grads = backend.lstm_backward(
            c["grad_out"], c["grad_hn"], c["grad_cn"], saved, c["w_hh"], c["w_hr"], c["h0"],
            c["c0"], out, c["lengths"], reverse)
        fwd = (out, h_n, c_n)
    elif cell == "gru":
        out, h_n, saved = backend.gru_forward(
            c["xg"], c["w_hh"], c["b_hn"], c["h0"], c["lengths"], reverse, True)
        grads = backend.gru_backward(
            c["grad_out"], c["grad_hn"], saved, c["w_hh"], c["b_hn"], c["h0"], out,
            c["lengths"], reverse)
        fwd = (out, h_n)
    else:
        out, h_n, saved = backend.rnn_forward(
            c["xg"], c["w_hh"], c["h0"], c["lengths"], reverse, opt, True)
        grads = backend.rnn_backward(
            c["grad_out"], c["grad_hn"], saved, c["w_hh"], c["h0"], out, c["lengths"], reverse, opt)
        fwd = (out, h_n)
    return fwd, tuple(grads)


def check(cell, opt, case, reverse, dtype=torch.float32, atol=ATOL, rtol=RTOL, **options):
    want_fwd, want_bwd = run(ref, cell, opt, case, reverse, torch.float64)
    with tk.options(poison=True, **options):
        got_fwd, got_bwd = run(tk, cell, opt, case, reverse, dtype)
    names = ["out", "h_n", "c_n"][:len(want_fwd)]
    names += {"lstm": ["dgates", "dh0", "dc0", "dw_hr"], "gru": ["dxgates", "dhgates", "dh0"],
              "rnn": ["dgates", "dh0"]}[cell]
    for name, got, want in zip(names, got_fwd + got_bwd, want_fwd + want_bwd):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == dtype and got.shape == want.shape, name
        torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # A dead step writes exact zeros to the output.
    T, B = case["xg"].shape[:2]
    mask = active_mask(case["lengths"], T, "cpu")
    if mask is not None:
        assert (got_fwd[0][~mask.expand_as(got_fwd[0])] == 0).all()


STRATEGIES = ["step", "persistent"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("lengths", [None, [1, 3, 2]], ids=["full", "varlen"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_matches_reference(cell, reverse, lengths, strategy):
    case = make_case(*cell, T=3, B=3, H=5, lengths=lengths, seed=CELLS.index(cell) * 2 + reverse)
    check(*cell, case, reverse, strategy=strategy)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_step_multi_tile(cell, reverse):
    # Tiles of 2 turn T=3, B=3, H=5 into a 2x3 grid with 3-iteration K loops: exercises the
    # tile seams, the double-buffered h and the lazy backward matmul across programs.
    # Lengths with a 0 and max < T cover sequences that never start and trailing dead steps.
    case = make_case(*cell, T=3, B=3, H=5, lengths=[2, 0, 1], seed=7)
    check(*cell, case, reverse, strategy="step", block_b=2, block_h=2, block_k=2)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_persistent_multi_program(cell, reverse):
    # Batch tiles of 2: two persistent programs, the second one half empty.
    case = make_case(*cell, T=3, B=3, H=5, lengths=[3, 1, 2], seed=11)
    check(*cell, case, reverse, strategy="persistent", block_b=2)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 5), (1, 3, 1), (4, 2, 8)],
                         ids=lambda s: "T{}B{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_odd_sizes(cell, shape, strategy):
    T, B, H = shape
    if cell[1] == "proj" and H < 3:
        pytest.skip("projection needs proj_size < hidden_size")
    case = make_case(*cell, T=T, B=B, H=H, seed=3)
    check(*cell, case, False, strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("TB", [(3, 0), (0, 2)], ids=["B0", "T0"])
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_empty(cell, TB, strategy):
    T, B = TB
    case = make_case(*cell, T=T, B=B, H=4, lengths=[] if B == 0 else None)
    check(*cell, case, True, strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cell", [("lstm", None), ("lstm", "proj"), ("gru", "bhn"),
                                  ("rnn", "relu")],
                         ids=cell_id)
def test_no_grad_forward(cell, strategy):
    # need_grad=False skips the saved tensors (the projection then uses a one-step buffer).
    case = make_case(*cell, T=3, B=2, H=5, lengths=[3, 2], seed=5)
    c32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
           for k, v in case.items()}
    with tk.options(strategy=strategy, poison=True):
        if cell[0] == "lstm":
            got = tk.lstm_forward(c32["xg"], c32["w_hh"], c32["w_hr"], c32["h0"], c32["c0"],
                                  c32["lengths"], False, False)
            want = ref.lstm_forward(case["xg"], case["w_hh"], case["w_hr"], case["h0"], case["c0"],
                                    case["lengths"], False, False)
        elif cell[0] == "gru":
            got = tk.gru_forward(c32["xg"], c32["w_hh"], c32["b_hn"], c32["h0"], c32["lengths"],
                                 False, False)
            want = ref.gru_forward(case["xg"], case["w_hh"], case["b_hn"], case["h0"],
                                   case["lengths"], False, False)
        else:
            got = tk.rnn_forward(c32["xg"], c32["w_hh"], c32["h0"], c32["lengths"], False, "relu",
                                 False)
            want = ref.rnn_forward(case["xg"], case["w_hh"], case["h0"], case["lengths"], False,
                                   "relu", False)
    assert got[-1] == ()
    for g, w in zip(got[:-1], want[:-1]):
        torch.testing.assert_close(g.double(), w, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_half_types_store_own_dtype(dtype, strategy):
    # Half inputs compute in float32 and store in their own dtype. The oracle gets the same
    # rounded inputs in float64, so what is left is output rounding plus float32 arithmetic
    # fed by rounded saved outputs: a few units of the half type's epsilon.
    eps = torch.finfo(dtype).eps
    case = make_case("lstm", "proj", T=3, B=2, H=5, lengths=[3, 2], seed=9)
    case = {k: (v.to(dtype).double() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in case.items()}
    # (The interpreter truncates float32 -> bfloat16 instead of rounding to nearest, so allow
    # a whole unit per rounding here; on a GPU the cast rounds to nearest.)
    check("lstm", "proj", case, False, dtype=dtype, atol=8 * eps, rtol=8 * eps, strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_xg_with_half_state(strategy):
    # Beyond the interface: xg may stay float32 for a bfloat16 layer; outputs take h0's dtype.
    eps = torch.finfo(torch.bfloat16).eps
    case = make_case("gru", "bhn", T=3, B=2, H=5, lengths=[2, 3], seed=4)
    case = {k: (v.to(torch.bfloat16).double()
                if torch.is_tensor(v) and v.is_floating_point() and k != "xg" else v)
            for k, v in case.items()}
    want = ref.gru_forward(case["xg"], case["w_hh"], case["b_hn"], case["h0"], case["lengths"],
                           True, False)
    bf = lambda t: t.to(torch.bfloat16)  # noqa: E731
    with tk.options(strategy=strategy, poison=True):
        out, h_n, _ = tk.gru_forward(case["xg"].float(), bf(case["w_hh"]), bf(case["b_hn"]),
                                     bf(case["h0"]), case["lengths"], True, False)
    assert out.dtype == h_n.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), want[0], atol=2 * eps, rtol=2 * eps)
    torch.testing.assert_close(h_n.double(), want[1], atol=2 * eps, rtol=2 * eps)


def test_strategy_env_and_explain(monkeypatch):
    assert "persistent" in tk.explain("lstm", 10, 4, 32, dtype=torch.float32, device="cpu")
    assert "step" in tk.explain("lstm", 10, 4, 1024, dtype=torch.float32, device="cpu")
    monkeypatch.setenv("FASTRNN_TRITON_STRATEGY", "step")
    assert tk.explain("gru", 10, 4, 8, device="cpu").startswith("triton step")
    assert "not used" in tk.explain("gru", 10, 4, 8, dtype=torch.float64, device="cpu")
    monkeypatch.setenv("FASTRNN_TRITON_STRATEGY", "bogus")
    with pytest.raises(ValueError, match="valid: auto, step, persistent"):
        case = make_case("rnn", "tanh", T=1, B=1, H=2)
        run(tk, "rnn", "tanh", case, False, torch.float32)


def test_supports():
    assert tk.NAME == "triton"
    assert tk.supports("cpu", torch.float32) and tk.supports("cpu", torch.bfloat16)
    assert not tk.supports("cpu", torch.float64)
    assert not tk.supports("cpu", torch.int64)


def _python(code, env_update, unset=()):
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(env_update)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cpu_without_interpreter_raises_clear_error():
    # TRITON_INTERPRET is read when the kernels are defined, so this needs a fresh process.
    code = """
        import torch
        import fastrnn.kernels.triton as tk
        assert not tk.supports("cpu", torch.float32)
        x = torch.zeros(2, 1, 4); w = torch.zeros(4, 1); h = torch.zeros(1, 1)
        try:
            tk.rnn_forward(x, w, h, None, False, "tanh", False)
        except RuntimeError as e:
            print("MSG", e)
        """
    r = _python(code, {"CUDA_VISIBLE_DEVICES": ""}, unset=("TRITON_INTERPRET",))
    assert r.returncode == 0, r.stderr
    assert "MSG" in r.stdout and "TRITON_INTERPRET=1" in r.stdout and "CUDA" in r.stdout


def test_import_without_triton():
    # sys.modules["triton"] = None makes every `import triton` fail, as if not installed.
    code = """
        import sys
        sys.modules["triton"] = None
        import torch
        import fastrnn.kernels.triton as tk
        assert not tk.supports("cpu", torch.float32)
        assert "not used" in tk.explain("lstm", 1, 1, 4, device="cpu")
        try:
            tk.gru_forward(torch.zeros(1, 1, 3), torch.zeros(3, 1), None, torch.zeros(1, 1), None,
                           False, False)
        except RuntimeError as e:
            print("MSG", e)
        """
    r = _python(code, {})
    assert r.returncode == 0, r.stderr
    assert "MSG" in r.stdout and "triton is not available" in r.stdout
