#!/usr/bin/env bash
# test_needle_quality.sh — RULER's single needle on the real SmolLM2 at 2K tokens, needles at
# depths 0, 0.5 and 1: dense attention must find most needles (>= 50%: a broken generator,
# template or scorer scores near 0), and OmniKV with k = 2048 and k = 0.067 (filter layers from
# configs/smollm2-135m.json) must score within TOL points of dense on the same samples (each
# sample is prefilled once; the variants decode from the same state). OMNIKV_QUALITY_SAMPLES
# sets samples per depth (default 2, a few minutes); TOL = max(1, 100/samples) points.
# Then 8K with the needle at depth 0.25 (3 samples, TOL one answer): there filter layers chosen by
# total attention mass (2,6,15 with W=1) lost the needle at k = 0.067 — 20 against dense's 100
# over 10 samples (eval --task needle-single --ctx 8192 --depth 0,0.25,0.5,0.75,1 --count 10
# --seed 1), and 33.3 against 100 on this part's 3 samples (--set do_select_layers=2,6,15 --set
# num_wait_load_layers=1) — because layer 2's top-k holds only the last third of the prompt.
set -euo pipefail
bin=${OMNIKV_BIN:?}
src=${OMNIKV_SRC:?}
cache=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
model=$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "FAIL: $model is missing; run scripts/setup.sh --test"; exit 1; }
n=${OMNIKV_QUALITY_SAMPLES:-2}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
OMNIKV_LOG=warn "$bin" eval -m "$model" -c "$src/configs/smollm2-135m.json" --task needle-single \
    --ctx 2048 --depth 0,0.5,1 --count "$n" --variants dense,2048,0.067 --seed 11 \
    -o "$out/samples.jsonl" | tee "$out/summary.txt"
python3 "$src/tests/model/quality_check.py" "$out/samples.jsonl" --ctx 2048 --per-cell $((3 * n)) \
    --dense-min 50
n8=${OMNIKV_QUALITY_SAMPLES_8K:-3}
OMNIKV_LOG=warn "$bin" eval -m "$model" -c "$src/configs/smollm2-135m.json" --task needle-single \
    --ctx 8192 --depth 0.25 --count "$n8" --variants dense,2048,0.067 --seed 11 \
    -o "$out/samples8k.jsonl" | tee "$out/summary8k.txt"
python3 "$src/tests/model/quality_check.py" "$out/samples8k.jsonl" --ctx 8192 --per-cell "$n8" \
    --dense-min 50
