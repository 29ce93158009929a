"""pytest-benchmark suite over the same grid and providers as `python -m fastrnn bench`.

    pytest benchmarks/ --benchmark-only                         # the default grid for the device
    FASTRNN_BENCH_QUICK=1 pytest benchmarks/ --benchmark-only   # the --quick grid
    pytest benchmarks/ --benchmark-only --benchmark-group-by=group --benchmark-json=out.json

Environment: FASTRNN_BENCH_DEVICE (cpu/cuda, default cuda if available), FASTRNN_BENCH_QUICK=1,
FASTRNN_BENCH_DTYPES (comma-separated, default float32), FASTRNN_BENCH_ROUNDS (default 10).

Not part of the default test run (pyproject's testpaths = ["tests"]). pytest-benchmark times one
test after another, so it does not interleave providers the way the CLI does; for a side-by-side
comparison on a busy machine prefer the CLI. Each benchmark is one group per case, so
pytest-benchmark's table compares the providers of a case directly. A provider that disagrees
with torch.nn fails its benchmark instead of reporting a meaningless time.
"""

import os

import pytest
import torch

from fastrnn.bench import grid, providers, runner

DEVICE = torch.device(os.environ.get("FASTRNN_BENCH_DEVICE")
                      or ("cuda" if torch.cuda.is_available() else "cpu"))
QUICK = os.environ.get("FASTRNN_BENCH_QUICK", "") not in ("", "0")
DTYPES = [grid.parse_dtype(d) for d in os.environ.get("FASTRNN_BENCH_DTYPES", "float32").split(",")]
ROUNDS = int(os.environ.get("FASTRNN_BENCH_ROUNDS", "5" if QUICK else "10"))

CASES = grid.make_grid(grid.KINDS, grid.default_sizes(DEVICE, QUICK), DTYPES, grid.MODES)
PARAMS = [pytest.param(case, name, id=f"{case.kind}-{case.mode}-{case.dtype}-{case.size}-{name}")
          for case in CASES for name in providers.default_names(DEVICE, case.torch_dtype)]


@pytest.fixture(scope="module")
def gemm_gflops():
    from fastrnn.bench.machine import gemm_rate
    return {d: gemm_rate(DEVICE, grid.DTYPES[d]) for d in DTYPES}


@pytest.mark.parametrize("case, provider_name", PARAMS)
def test_rnn(benchmark, case, provider_name, gemm_gflops):
    reference, x, expected = runner.make_expected(case, DEVICE)
    step, err, tol, message = runner.checked_step(case, providers.get(provider_name), reference, x,
                                                  expected, DEVICE)
    if message is not None:
        pytest.fail(f"{provider_name}: {message}")

    if DEVICE.type == "cuda":
        def run():  # kernels are asynchronous: time until the work is done
            step()
            torch.cuda.synchronize()
    else:
        run = step
    benchmark.group = f"{case.kind} {case.mode} {case.dtype} {case.size}"
    benchmark.extra_info.update(provider=provider_name, flops=case.flops,
                                max_rel_error=err, gemm_gflops=gemm_gflops[case.dtype])
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    if stats is not None:
        gflops = case.flops / stats.stats.median / 1e9
        benchmark.extra_info.update(gflops=gflops, pct_gemm=100 * gflops / gemm_gflops[case.dtype])
