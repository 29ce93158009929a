#!/usr/bin/env bash
# The GPU session in one command (for a machine with CUDA, torch and triton installed):
# the GPU test set, the benchmark against cuDNN (Triton kernels and `auto`), and the cell
# crossover; results under ${OUT:-gpu-results}. Fits one 10-minute device call on an H200.
# Used through the device tool as: bash scripts/gpu_run.sh   (nothing here needs the network).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())
PY
# fastrnn.kernels is kernels/ mapped by setup.py, so fastrnn must be installed, not just on the path.
python -m pip install -e . --no-deps --no-build-isolation -q || exit 1
# Compiling the Triton kernels for every case dominates; spread it over processes when we can.
parallel=""
python -c "import xdist" 2>/dev/null && parallel="-n 8"
timeout 240 python -m pytest tests/test_triton_gpu.py -q -p no:cacheprovider $parallel --tb=short -rf \
    2>&1 | tee "$out/gpu-tests.log" | grep -v "Warning\|warner" | tail -25
timeout 300 python -m fastrnn bench --device cuda --dtypes float32,bfloat16,float16 \
    --providers torch,fastrnn-triton,fastrnn-auto --repeats 20 --max-seconds 2 \
    --json "$out/gpu-bench.json" --markdown "$out/gpu-bench.md" 2>&1 | tee "$out/gpu-bench.log" | tail -5
timeout 60 python benchmarks/cell_crossover.py --device cuda --backend triton 2>&1 \
    | tee "$out/gpu-cells.log" | tail -5
