#!/usr/bin/env bash
# run_fuzz.sh — build the libFuzzer targets (clang, -DOMNIKV_FUZZ=ON) in BUILD_DIR, seed the GGUF
# corpus with generated tiny models, and run every fuzz_* target for SECONDS (default 30).
# Exits non-zero when a target crashes; the input that did it is left in BUILD_DIR/fuzz-artifacts.
#   tests/fuzz/run_fuzz.sh BUILD_DIR [SECONDS]
# Seeds come from `omnikv gen-model`: $OMNIKV_BIN, else BUILD_DIR/omnikv, else <src>/build/omnikv.
# FUZZ_SEED (default 1) fixes libFuzzer's mutation sequence: from the same starting corpus (a fresh
# BUILD_DIR, as in CI) a run walks the same inputs, as far as SECONDS lets it on that machine, so a
# CI failure can be replayed; FUZZ_SEED=0 lets libFuzzer pick a fresh seed for exploratory runs.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}
secs=${2:-30}
seed=${FUZZ_SEED:-1}

CC=${CC:-clang} cmake -S "$src" -B "$build" -DOMNIKV_FUZZ=ON -DOMNIKV_CUDA=OFF >/dev/null
targets=()
for f in "$src"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null

gen=${OMNIKV_BIN:-}
if [ -z "$gen" ]; then
  if cmake --build "$build" --target omnikv >/dev/null 2>&1; then gen=$build/omnikv
  elif [ -x "$src/build/omnikv" ]; then gen=$src/build/omnikv
  fi
fi
corpus=$build/fuzz-corpus
mkdir -p "$corpus/fuzz_gguf" "$build/fuzz-artifacts"
if [ -n "$gen" ]; then
  for t in f32 q4_0 q4_1; do
    "$gen" gen-model --shape tiny --layers 1 --type $t --seed 1 -o "$corpus/fuzz_gguf/tiny-$t.gguf" 2>/dev/null
  done
else
  echo "run_fuzz.sh: no omnikv binary to generate GGUF seeds (set OMNIKV_BIN); fuzz_gguf starts empty" >&2
fi

# Seeds of the text targets: request lines with every field, and prose with code and non-ASCII
# text for the tokenizer (which reads the default model's tokenizer from the cache).
mkdir -p "$corpus/fuzz_requests" "$corpus/fuzz_tokenizer"
printf '%s' '{"id":"a","prompt":"hi","max_new_tokens":3,"stop":["x"],"top_p":0.5,"temperature":0.7,"top_k":40}' \
  >"$corpus/fuzz_requests/prompt.json"
printf '%s' '{"id":7,"messages":[{"role":"user","content":"hi"}],"seed":"123","ignore_eos":true,"stop":"y"}' \
  >"$corpus/fuzz_requests/chat.json"
# Lines each rule refuses: two objects, a misspelt field, a NUL escape, an id that is not UTF-8.
printf '%s' '{"id":"b","prompt":"x"}{"id":"b2","prompt":"y"}' >"$corpus/fuzz_requests/two.json"
printf '%s' '{"id":"c","prompt":"x","temprature":0.5}' >"$corpus/fuzz_requests/unknown.json"
printf '%s' '{"id":"d","prompt":"a\u0000b"}' >"$corpus/fuzz_requests/nul.json"
printf '{"id":"e\xff\xc0","prompt":"x"}' >"$corpus/fuzz_requests/badid.json"
head -c 3000 "$src/README.md" >"$corpus/fuzz_tokenizer/readme.md"
printf 'naïve café, 日本語のテスト 🙂\n\tif (x == 1) { return "ok"; }  \r\n' >"$corpus/fuzz_tokenizer/mixed.txt"

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "$corpus/$t"
  echo "== $t: ${secs}s, corpus $corpus/$t"
  if ! "$build/$t" -max_total_time="$secs" -seed="$seed" -print_final_stats=1 \
       -artifact_prefix="$build/fuzz-artifacts/$t-" "$corpus/$t" 2>"$build/fuzz-artifacts/$t.log"; then
    echo "== $t FAILED; see $build/fuzz-artifacts/$t.log" >&2
    tail -40 "$build/fuzz-artifacts/$t.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^Done" "$build/fuzz-artifacts/$t.log" || true
  fi
done
exit $status
