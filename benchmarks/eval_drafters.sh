#!/usr/bin/env bash
# Reproduce the numbers in assets/drafters/RESULTS.md (CPU, ~30 minutes on 2 cores).
# Spec-Bench MT-bench first turns, N questions per category, 128 new tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-3}"
Q="${Q:-../shared/benchmarks/spec_bench_questions.jsonl}"
CATS=writing,roleplay,reasoning,math,coding,extraction,stem,humanities
out="${OUT:-benchmarks/results}"; mkdir -p "$out"
run() { .venv/bin/python -m core bench --prompts "$Q" --categories "$CATS" --limit-per-category "$N" \
          --max-new-tokens 128 "$@"; }
# 1. greedy, both drafters and plain decoding, raw acceptance (no fallback), float32 and bfloat16
run --drafters jakiro,eagle,none --dtype float32 --no-fallback --json "$out/mtbench-fp32.json" --markdown "$out/mtbench-fp32.md"
run --drafters jakiro,eagle,none,hf-generate,hf-prompt-lookup --dtype bfloat16 --json "$out/mtbench-bf16.json" \
    --markdown "$out/mtbench-bf16.md"
# 2. the contrastive last layer: Jakiro with the standard schedule (one drafter forward more per cycle)
run --drafters jakiro,none --dtype bfloat16 --schedule standard --no-fallback --json "$out/mtbench-bf16-standard.json" \
    --markdown "$out/mtbench-bf16-standard.md"
# 3. temperature 1
run --drafters jakiro,eagle,none --dtype bfloat16 --temperature 1.0 --no-fallback --json "$out/mtbench-bf16-t1.json" \
    --markdown "$out/mtbench-bf16-t1.md"
