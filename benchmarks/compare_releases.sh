#!/usr/bin/env bash
# MT-bench, one run: new drafters from their training runs (RUNS/jakiro-$NEW, RUNS/eagle-$NEW) against the shipped
# ones, plain decoding and HF's methods (how release 4 was judged against release 3 before it shipped).
#   RUNS=~/.cache/jakiro-explorer/train/runs NEW=v4 TAG=v4 benchmarks/compare_releases.sh
# EXTRA=",jakiro@nolayerstop" appends methods to the run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-$HOME/.cache/jakiro-explorer/train/runs}"
NEW="${NEW:-v4}"
TAG="${TAG:-$NEW}"
EXTRA="${EXTRA:-}"
J="$RUNS/jakiro-$NEW"; E="$RUNS/eagle-$NEW"
.venv/bin/python -m core bench --prompts ../shared/benchmarks/spec_bench_questions.jsonl --limit-per-category 2 \
  --max-new-tokens 128 --categories writing,roleplay,reasoning,math,coding,extraction,stem,humanities \
  --dtype bfloat16 --no-fallback \
  --drafters "$J,$E,$J@nolookup,$E@nolookup,$J@fixed+nolookup,$E@fixed+nolookup,$J@fixed+standard+nolookup,jakiro,eagle,jakiro@fixed+nolookup,eagle@fixed+nolookup,none,hf-generate,hf-prompt-lookup$EXTRA" \
  --json "benchmarks/results/mtbench-bf16-$TAG.json" --markdown "benchmarks/results/mtbench-bf16-$TAG.md"
