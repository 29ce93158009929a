#!/usr/bin/env bash
# The GPU session in one command (for a machine with CUDA, torch and triton installed):
# the GPU test set, then the benchmark against cuDNN, results under ${OUT:-gpu-results}.
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
timeout 400 python -m pytest tests/test_triton_gpu.py -q 2>&1 | tee "$out/gpu-tests.log" | tail -15
python -m fastrnn bench --device cuda --dtypes float32,bfloat16,float16 --json "$out/gpu-bench.json" \
    --markdown "$out/gpu-bench.md" --max-seconds 5 2>&1 | tee "$out/gpu-bench.log" | tail -40
