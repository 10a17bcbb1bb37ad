#!/usr/bin/env bash
# bench_quants.sh — decode (and prefill) tok/s per weight type, omnikv against llama.cpp on the
# same files in one run (jobs/bench_vs_llamacpp.sh per file): SmolLM2 requantized by llama.cpp's
# quantizer from its BF16 GGUF, and an 8B-shaped stack of 4 F16 layers in the K-quants. Files
# are made once under $OMNIKV_CACHE/models/quant (tests/model/quant_models.py).
# Usage: jobs/bench_quants.sh [CTX] [GEN] [THREADS]   (defaults 512 64 nproc)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
bin=${OMNIKV_BIN:-$here/build/omnikv}
py=$cache/venv/bin/python
ctx=${1:-512} gen=${2:-64} threads=${3:-$(nproc)}
q=$cache/models/quant
mkdir -p "$q"
quantized() { # SRC NAME FTYPE -> path
    local out=$q/$2.$3.gguf
    [ -s "$out" ] || "$py" "$here/tests/model/quant_models.py" quantize "$1" "$out" "$3" >/dev/null 2>&1
    echo "$out"
}
stack=$q/stack8b-4.F16.gguf
if [ ! -s "$stack" ]; then
    "$bin" gen-model --shape tiny -o "$q/vocab.gguf" >/dev/null 2>&1
    "$py" "$here/tests/model/quant_models.py" stack "$q/vocab.gguf" "$stack" 4
fi
files=()
for ft in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_M Q5_K_M Q6_K Q3_K_M; do
    files+=("$(quantized "$cache/hf/SmolLM2-135M-Instruct.bf16.gguf" smollm2 $ft)")
done
for ft in Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
    files+=("$(quantized "$stack" stack8b-4 $ft)")
done
for f in "${files[@]}"; do
    echo "== $(basename "$f")"
    "$here/jobs/bench_vs_llamacpp.sh" "$f" "$ctx" "$gen" "$threads" | tail -n 1
done
