#!/usr/bin/env bash
# Reproduce the numbers in assets/drafters/RESULTS.md and benchmarks/RESULTS.md (CPU, ~30 minutes on 2 cores).
# Spec-Bench MT-bench first turns, N questions per category, 128 new tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2}"
Q="${Q:-../shared/benchmarks/spec_bench_questions.jsonl}"
CATS=writing,roleplay,reasoning,math,coding,extraction,stem,humanities
out="${OUT:-benchmarks/results}"; mkdir -p "$out"
run() { .venv/bin/python -m core bench --prompts "$Q" --categories "$CATS" --limit-per-category "$N" \
          --max-new-tokens 128 "$@"; }
# 1. greedy, bfloat16: both drafters with the adaptive (default) and the fixed tree, plain decoding and HF's methods;
#    fallback off, so these are the drafters' raw numbers
run --dtype bfloat16 --no-fallback --drafters jakiro,eagle,jakiro@fixed,eagle@fixed,none,hf-generate,hf-prompt-lookup \
    --json "$out/mtbench-bf16-v2.json" --markdown "$out/mtbench-bf16-v2.md"
# 2. temperature 1, fixed tree (tau)
N=1 run --dtype bfloat16 --no-fallback --tree-size fixed --temperature 1.0 --drafters jakiro,eagle,none \
    --json "$out/mtbench-bf16-t1-v2.json" --markdown "$out/mtbench-bf16-t1-v2.md"
# 3. the contrastive last layer: Jakiro with the standard schedule (one drafter forward more per cycle)
run --dtype bfloat16 --no-fallback --tree-size fixed --schedule standard --drafters jakiro,none \
    --json "$out/mtbench-bf16-standard.json" --markdown "$out/mtbench-bf16-standard.md"
# 4. float32: lossless (greedy match 1.00)
N=1 run --dtype float32 --no-fallback --drafters jakiro,eagle,none --json "$out/mtbench-fp32.json" \
    --markdown "$out/mtbench-fp32.md"
