#!/usr/bin/env bash
# Installs fastrnn and what its tests and benchmarks need, on a fresh machine or an existing one.
# torch is left alone when present (users bring their own build: CPU, CUDA, ROCm); when absent
# we install the 2.13.0 CPU build that this project's CPU machines provide, because the newest
# registry torch pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" >/dev/null 2>&1; then
    python -m pip install "torch==2.13.0"
fi
# gpu (triton) too: on CPU the test suite runs the Triton kernels under its interpreter.
python -m pip install -e ".[test,bench,gpu]"
