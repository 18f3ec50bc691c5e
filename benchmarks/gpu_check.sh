#!/usr/bin/env bash
# One prepared run for a CUDA machine (see the device tool): the test suite on CUDA, then the cost model.
# Usage there:  bash benchmarks/gpu_check.sh   (results under $OUT, or ./gpu-out when OUT is unset)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 JAKIRO_TEST_DEVICE=cuda
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python -m pytest -q -x tests/test_lossless.py tests/test_sampling.py tests/test_policy.py tests/test_tree.py \
    tests/test_verify.py 2>&1 | tee "$out/tests.log"
python benchmarks/gpu_check.py --out "$out/gpu_costs.json" 2>&1 | tee "$out/gpu_costs.log"
