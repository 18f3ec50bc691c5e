#!/usr/bin/env bash
# Reproduce the numbers in assets/drafters/RESULTS.md and benchmarks/RESULTS.md (CPU, ~60 minutes on 2 cores).
# Spec-Bench questions (first turns), N per category, 128 new tokens; every method interleaved on every prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2}"
Q="${Q:-../shared/benchmarks/spec_bench_questions.jsonl}"
TAG="${TAG:-v4}"
MT=writing,roleplay,reasoning,math,coding,extraction,stem,humanities
REST=translation,summarization,qa,math_reasoning,rag
out="${OUT:-benchmarks/results}"; mkdir -p "$out"
STEPS="${STEPS:-1 2 3 4}"  # which of the runs below, e.g. STEPS="2 3 4"
step() { [[ " $STEPS " == *" $1 "* ]]; }
run() { .venv/bin/python -m core bench --prompts "$Q" --limit-per-category "$N" --max-new-tokens 128 "$@"; }
# 1. MT-bench, greedy, bfloat16: both drafters as the engine runs them by default (adaptive tree, context lookup),
#    without the lookup, and as pure drafters (fixed tree, no lookup: the drafters' own tau); Jakiro without its
#    contrastive last layer (@standard: one drafter forward more per cycle); plain decoding and HF's methods;
#    fallback off, so these are the raw numbers
step 1 && run --categories "$MT" --dtype bfloat16 --no-fallback \
    --drafters jakiro,eagle,jakiro@nolookup,eagle@nolookup,jakiro@fixed+nolookup,eagle@fixed+nolookup,jakiro@fixed+standard+nolookup,none,hf-generate,hf-prompt-lookup \
    --json "$out/mtbench-bf16-$TAG.json" --markdown "$out/mtbench-bf16-$TAG.md"
# 2. the other Spec-Bench categories (translation, summarization, QA, math reasoning, RAG)
step 2 && run --categories "$REST" --dtype bfloat16 --no-fallback \
    --drafters jakiro,eagle,jakiro@nolookup,eagle@nolookup,jakiro@fixed+nolookup,eagle@fixed+nolookup,none,hf-prompt-lookup \
    --json "$out/specbench-rest-bf16-$TAG.json" --markdown "$out/specbench-rest-bf16-$TAG.md"
# 3. temperature 1, fixed tree (tau), context lookup on
step 3 && run --categories "$MT" --dtype bfloat16 --no-fallback --tree-size fixed --temperature 1.0 --drafters jakiro,eagle,jakiro@nolookup,eagle@nolookup,none \
    --json "$out/mtbench-bf16-t1-$TAG.json" --markdown "$out/mtbench-bf16-t1-$TAG.md"
# 4. float32: lossless (greedy match 1.00), context lookup on
step 4 && N=1 run --categories "$MT" --dtype float32 --no-fallback --drafters jakiro,eagle,none \
    --json "$out/mtbench-fp32-$TAG.json" --markdown "$out/mtbench-fp32-$TAG.md"
true  # the last step may be left out
