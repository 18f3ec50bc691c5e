#!/usr/bin/env bash
# One prepared run for a CUDA machine (see the device tool): the cost model, then the test suite on CUDA.
# Usage there:  bash benchmarks/gpu_check.sh   (results under $OUT, or ./gpu-out when OUT is unset)
# The tiny test models and the cost model borrow the default model's tokenizer, not its weights (which do not fit
# the 64 MiB a device call carries): carry a folder JAKIRO_CACHE/SmolLM2-135M-Instruct holding its config.json,
# generation_config.json, chat_template.jinja and tokenizer files, and set JAKIRO_CACHE to it there.
# PY picks the interpreter (default python3); each part has its own time limit so one hang cannot eat the other.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"; mkdir -p "$out"
py="${PY:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 JAKIRO_TEST_DEVICE=cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$out/gpu.txt"
timeout "${COST_LIMIT_S:-300}" "$py" benchmarks/gpu_check.py --out "$out/gpu_costs.json" 2>&1 | tee "$out/gpu_costs.log"
timeout "${TEST_LIMIT_S:-240}" "$py" -m pytest -q --maxfail=5 -p no:cacheprovider tests/test_lossless.py \
    tests/test_sampling.py tests/test_policy.py tests/test_tree.py tests/test_verify.py tests/test_sizing.py \
    tests/test_lookup.py tests/test_train.py tests/test_expert_overlap.py 2>&1 | tee "$out/tests.log"
