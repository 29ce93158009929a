"""The benchmark runner itself (`python -m fastrnn bench`): options, checks, reports.

Tiny sizes and torch-only providers (plus fastrnn's reference backend) keep this file fast;
no test here asserts a time.
"""

import json
import subprocess
import sys
import types

import pytest
import torch

from fastrnn import dispatch
from fastrnn.bench import check, cli, grid, machine, providers, runner
from fastrnn.bench.grid import Case, Size

TINY = Size(4, 2, 3, 5)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Shifted(providers.Provider):
    """torch.nn's result plus 1: fast and wrong."""
    name = "test-wrong"

    def build(self, kind, reference):
        return providers.Runnable(lambda x: reference(x)[0] + 1, reference)


class _WrongGradient(providers.Provider):
    """Right output, wrong input gradient (adds 0.5 * sum(x) - its detached value)."""
    name = "test-wrong-grad"

    def build(self, kind, reference):
        return providers.Runnable(
            lambda x: reference(x)[0] + 0.5 * (x - x.detach()).sum(), reference)


class _Broken(providers.Provider):
    name = "test-error"

    def build(self, kind, reference):
        raise RuntimeError("kernel exploded")


class _FailsLater(providers.Provider):
    """Passes the check, then raises while being timed."""
    name = "test-fails-later"

    def build(self, kind, reference):
        calls = []

        def forward(x):
            calls.append(1)
            if len(calls) > 2:
                raise ValueError("out of luck on call 3")
            return reference(x)[0]
        return providers.Runnable(forward, reference)


@pytest.fixture
def injected():
    added = [_Shifted(), _WrongGradient(), _Broken(), _FailsLater()]
    for p in added:
        providers.register(p)
    yield
    for p in added:
        providers.unregister(p.name)


def _rows_by_provider(rows):
    return {r["provider"]: r for r in rows}


# ------------------------------------------------------------------------------ options


def test_parse_options():
    args = cli.build_parser().parse_args(
        ["--device", "cpu", "--kinds", "lstm,rnn", "--sizes", "100x16x128x128, 5x1x2x3",
         "--dtypes", "fp32,float64", "--modes", "training", "--providers", "torch,fastrnn-numba",
         "--repeats", "3", "--warmup", "0", "--json", "out.json", "--plot", "out.png"])
    assert args.device == torch.device("cpu")
    assert args.kinds == ["lstm", "rnn"]
    assert args.sizes == [Size(100, 16, 128, 128), Size(5, 1, 2, 3)]
    assert args.dtypes == ["float32", "float64"]
    assert args.modes == ["training"]
    assert args.providers == ["torch", "fastrnn-numba"]
    assert (args.repeats, args.warmup, args.json, args.plot) == (3, 0, "out.json", "out.png")


def test_defaults_depend_on_device_and_quick():
    s = cli.resolve_settings(cli.build_parser().parse_args(["--device", "cpu"]))
    assert s["sizes"] == list(grid.CPU_SIZES)
    assert s["kinds"] == list(grid.KINDS) and s["modes"] == list(grid.MODES)
    assert s["dtypes"] == ["float32"] and s["providers"] is None
    quick = cli.resolve_settings(cli.build_parser().parse_args(["--device", "cpu", "--quick"]))
    assert quick["sizes"] == list(grid.QUICK_CPU_SIZES) and quick["repeats"] < s["repeats"]


def test_torch_is_always_the_baseline():
    s = cli.resolve_settings(cli.build_parser().parse_args(["--providers", "torch-cell-loop"]))
    assert cli.provider_names(s, "float32") == ["torch", "torch-cell-loop"]


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "100x16x128"], "TxBxIxH"),
    (["--sizes", "100x16xAx128"], "TxBxIxH"),
    (["--sizes", "0x1x1x1"], ">= 1"),
    (["--kinds", "transformer"], "unknown kind"),
    (["--dtypes", "int8"], "unknown dtype"),
    (["--modes", "sleep"], "unknown mode"),
    (["--providers", "torch,magic"], "unknown provider"),
    (["--repeats", "0"], "must be >= 1"),
    (["--warmup", "x"], "expected an integer"),
    (["--max-seconds", "-1"], "must be > 0"),
    (["--device", "tpu"], "device"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_options_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "fastrnn", "bench", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for option in ("--kinds", "--sizes", "--dtypes", "--modes", "--providers", "--device",
                   "--repeats", "--warmup", "--json", "--plot", "--quick"):
        assert option in done.stdout


def test_unknown_command_exits_2():
    from fastrnn.__main__ import main
    assert main(["frobnicate"]) == 2


# ------------------------------------------------------------------------------ grid


def test_flops_follow_the_formula():
    s = Size(10, 4, 8, 16)
    assert grid.case_flops("lstm", s, "inference") == 2 * 4 * (8 + 16) * 4 * 16 * 10
    assert grid.case_flops("gru", s, "inference") == 2 * 4 * (8 + 16) * 3 * 16 * 10
    assert grid.case_flops("rnn", s, "training") == 3 * 2 * 4 * (8 + 16) * 1 * 16 * 10


def test_grid_is_every_combination():
    cases = grid.make_grid(("lstm", "gru"), (TINY, Size(1, 1, 1, 1)), ("float32",), grid.MODES)
    assert len(cases) == 2 * 2 * 2 and len(set(cases)) == len(cases)


# ------------------------------------------------------------------------------ providers


def test_default_providers_skip_reference_and_cpu_triton(monkeypatch):
    monkeypatch.setattr(providers, "available_backends",
                        lambda d, t: ["triton", "numba", "reference"])
    assert providers.default_names("cpu", torch.float32) == ["torch", "torch-cell-loop",
                                                             "fastrnn-numba"]
    names = providers.default_names("cuda", torch.float32)
    assert "fastrnn-triton" in names and "fastrnn-reference" not in names


def test_half_written_backend_does_not_stop_the_run(monkeypatch):
    def broken(device, dtype):
        raise AttributeError("module 'fastrnn.kernels.triton' has no attribute 'supports'")
    monkeypatch.setattr(dispatch, "available", broken)
    assert "reference" in providers.available_backends("cpu", torch.float32)


def test_backend_explain_is_shown(monkeypatch):
    fake = types.SimpleNamespace(NAME="numba", supports=lambda device, dtype: True,
                                 explain=lambda kind, T, B, H, P, dtype, device, I:
                                 f"{kind} T={T} B={B} H={H} P={P} I={I}")
    monkeypatch.setattr(dispatch, "get", lambda name: fake)
    text = providers.get("fastrnn-numba").strategy("gru", TINY, torch.float32, torch.device("cpu"))
    assert text == "gru T=4 B=2 H=5 P=5 I=3"


@pytest.mark.parametrize("kind", grid.KINDS)
@pytest.mark.parametrize("mode", grid.MODES)
def test_builtin_providers_agree_with_torch(kind, mode):
    rows = runner.run_case(Case(kind, mode, "float32", TINY),
                           ["torch", "torch-cell-loop", "fastrnn-reference"], "cpu", 2, 0)
    for row in rows:
        assert row["status"] == "ok", row
        assert row["max_rel_error"] <= row["tolerance"]
        assert row["median_ms"] > 0 and row["repeats"] == 2
    assert _rows_by_provider(rows)["torch"]["speedup"] == 1.0


# ------------------------------------------------------------------------------ wrong / error


def test_wrong_provider_is_reported_and_not_timed(injected):
    rows = _rows_by_provider(runner.run_case(Case("lstm", "inference", "float32", TINY),
                                             ["torch", "test-wrong"], "cpu", 2, 0))
    wrong = rows["test-wrong"]
    assert wrong["status"] == "wrong"
    assert "output differs from torch.nn" in wrong["error"]
    assert wrong["median_ms"] is None and wrong["speedup"] is None and wrong["repeats"] == 0
    assert rows["torch"]["status"] == "ok"


def test_wrong_gradient_is_reported_in_training(injected):
    rows = _rows_by_provider(runner.run_case(Case("gru", "training", "float32", TINY),
                                             ["torch", "test-wrong-grad"], "cpu", 1, 0))
    assert rows["test-wrong-grad"]["status"] == "wrong"
    assert "input gradient" in rows["test-wrong-grad"]["error"]


def test_erroring_providers_are_reported_and_the_run_continues(injected):
    rows = _rows_by_provider(runner.run_case(
        Case("rnn", "inference", "float32", TINY),
        ["torch", "test-error", "test-fails-later", "torch-cell-loop"], "cpu", 3, 0))
    assert rows["test-error"]["status"] == "error"
    assert rows["test-error"]["error"] == "RuntimeError: kernel exploded"
    assert rows["test-fails-later"]["status"] == "error"
    assert "out of luck" in rows["test-fails-later"]["error"]
    assert rows["torch"]["status"] == rows["torch-cell-loop"]["status"] == "ok"


def test_time_budget_cuts_repeats_of_slow_cases():
    import time

    from fastrnn.bench import timing
    samples, errors = timing.interleaved({"slow": lambda: time.sleep(0.02)}, repeats=50, warmup=0,
                                         device="cpu", budget_s=0.01)
    assert not errors and len(samples["slow"]) == timing.MIN_REPEATS


def test_relative_error_catches_nan_and_shape():
    a = torch.zeros(3)
    assert check.relative_error(a, a) == 0.0
    assert check.relative_error(torch.full((3,), float("nan")), a) == float("inf")
    assert check.relative_error(torch.zeros(2), a) == float("inf")


# ------------------------------------------------------------------------------ reports


def test_gemm_rate_is_measured():
    assert machine.gemm_rate("cpu", torch.float32, n=64, min_seconds=0.01) > 0


def test_json_markdown_and_plot_are_written(tmp_path, injected, capsys, monkeypatch):
    # A small GEMM keeps this test quick; the rate itself is tested above.
    real_gemm_rate = machine.gemm_rate
    monkeypatch.setattr(machine, "gemm_rate",
                        lambda device, dtype: real_gemm_rate(device, dtype, n=128,
                                                             min_seconds=0.02))
    out_json, out_png, out_md = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.md"
    code = cli.main(["--device", "cpu", "--kinds", "rnn,lstm", "--sizes", "4x2x3x5,3x1x2x2",
                     "--modes", "inference,training", "--repeats", "2", "--warmup", "0",
                     "--providers", "torch,torch-cell-loop,test-wrong,test-error",
                     "--json", str(out_json), "--plot", str(out_png), "--markdown", str(out_md)])
    assert code == 0
    captured = capsys.readouterr()
    assert "torch-cell-loop" in captured.out and "[8/8]" in captured.err  # table, progress

    data = json.loads(out_json.read_text())
    assert data["schema_version"] == 1
    m = data["machine"]
    for key in ("date", "device", "cpu", "cpu_cores", "versions", "gemm_gflops"):
        assert key in m
    assert {"torch", "numba", "triton"} <= set(m["versions"])
    assert m["gemm_gflops"]["float32"] > 0
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 2 * 4
    fields = {"kind", "mode", "dtype", "T", "B", "I", "H", "provider", "status", "error",
              "median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "repeats", "speedup", "gflops",
              "pct_gemm", "gemm_gflops", "flops", "max_rel_error", "tolerance", "strategy"}
    for row in rows:
        assert set(row) == fields
        assert row["status"] in ("ok", "wrong", "error")
        if row["status"] == "ok":
            assert row["median_ms"] > 0 and row["gflops"] > 0 and row["pct_gemm"] > 0
            assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
        else:
            assert row["error"] and row["median_ms"] is None
    assert {r["status"] for r in rows if r["provider"] == "test-wrong"} == {"wrong"}
    assert {r["status"] for r in rows if r["provider"] == "test-error"} == {"error"}

    assert out_png.read_bytes()[:8] == PNG_MAGIC
    md = out_md.read_text()
    for text in ("| kind |", "| torch-cell-loop |", "machine:", "versions:", "date:", "Not timed"):
        assert text in md


def test_step_suite_compares_one_step_calls(tmp_path, capsys):
    md, js = tmp_path / "step.md", tmp_path / "step.json"
    assert cli.main(["--suite", "step", "--quick", "--kinds", "rnn", "--repeats", "3",
                     "--markdown", str(md), "--json", str(js)]) == 0
    rows = json.loads(js.read_text())["rows"]
    assert len(rows) == 2 * 2 * 2                     # module and cell, 2 sizes, 2 modes
    assert all(r["status"] == "ok" and r["speedup"] > 0 for r in rows)
    assert {r["runs"] for r in rows if r["mode"] == "no_grad"} == {"numba"}
    text = md.read_text()
    assert "module no_grad" in text and "Python call floor" in text
    with pytest.raises(SystemExit):
        cli.main(["--suite", "nope"])
