#!/bin/bash
# test_llamacpp_quants.sh — the weight types people download, against llama.cpp on files made by
# llama.cpp's own quantizer (tests/model/quant_models.py): SmolLM2 (from its BF16 GGUF) as
# Q4_K_M, Q5_K_M, Q6_K, Q3_K_M and Q5_0 — its 576-wide tensors fall back to Q5_0 / Q5_1 / Q8_0 /
# IQ4_NL and only the 1536-wide ones are K-quants — and an 8B-shaped stack of two F16 layers,
# whose every row is a multiple of 256, as Q2_K, Q3_K_M, Q4_K_M and Q5_K_M, so every K-quant is
# read. For each file test_llamacpp compares our last-position logits with llama.cpp's within
# llama.cpp's own flash-attention on/off spread and our greedy continuations over 32 tokens
# (near-ties excepted, checked on both sides). Files and oracles are cached under
# $OMNIKV_CACHE/models/quant and $OMNIKV_CACHE/oracle. Skips (77) without the test venv.
set -u
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SRC=${OMNIKV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${OMNIKV_BIN:-$SRC/build/omnikv}
BUILD=${OMNIKV_BUILD:-$(dirname "$BIN")}
PY=$CACHE/venv/bin/python
BF16=$CACHE/hf/SmolLM2-135M-Instruct.bf16.gguf
Q=$CACHE/models/quant
fails=0 passes=0

[ -x "$PY" ] || { echo "SKIP: no test venv at $CACHE/venv (run scripts/setup.sh --test)"; exit 77; }
for need in "$BIN" "$BUILD/test_llamacpp" "$BF16"; do
    [ -e "$need" ] || { echo "FAIL: $need is missing (build omnikv; run scripts/setup.sh --test)"; exit 1; }
done
mkdir -p "$Q"

# quantized SRC NAME FTYPE: $Q/NAME.FTYPE.gguf, made once by llama.cpp's quantizer.
quantized() {
    local out=$Q/$2.$3.gguf
    if [ ! -s "$out" ]; then
        "$PY" "$SRC/tests/model/quant_models.py" quantize "$1" "$out.tmp" "$3" >"$Q/$2.$3.log" 2>&1 ||
            { tail -n 5 "$Q/$2.$3.log"; rm -f "$out.tmp"; return 1; }
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

# compare FILE ORACLE_NAME [N_PROMPTS]: test_llamacpp on FILE; prints its lines about logits.
compare() {
    local log
    log=$(mktemp)
    if "$BUILD/test_llamacpp" "$1" "$CACHE/oracle/llamacpp-quant-v1/$2" ${3:-} >"$log" 2>&1; then
        passes=$((passes + 1))
        echo "ok: $2"
    else
        fails=$((fails + 1))
        echo "FAIL: $2"
        tail -n 8 "$log"
    fi
    grep -E "logits max|near-tie" "$log" | sed 's/^/    /'
    rm -f "$log"
}

for ft in Q4_K_M Q5_K_M Q6_K Q3_K_M Q5_0; do
    f=$(quantized "$BF16" smollm2 $ft) || { fails=$((fails + 1)); echo "FAIL: quantize SmolLM2 to $ft"; continue; }
    compare "$f" "smollm2-$ft"
done

STACK=$Q/stack8b.F16.gguf
if [ ! -s "$STACK" ]; then
    "$BIN" gen-model --shape tiny -o "$Q/vocab.gguf" >/dev/null 2>&1 &&
        "$PY" "$SRC/tests/model/quant_models.py" stack "$Q/vocab.gguf" "$STACK.tmp" && mv "$STACK.tmp" "$STACK" ||
        { echo "FAIL: cannot write the 8B-shaped stack"; exit 1; }
fi
for ft in Q2_K Q3_K_M Q4_K_M Q5_K_M; do
    f=$(quantized "$STACK" stack8b $ft) || { fails=$((fails + 1)); echo "FAIL: quantize the stack to $ft"; continue; }
    # The first four (short) prompts: the stack's prefill is an 8B layer's, twice.
    compare "$f" "stack8b-$ft" 4
done

echo "$passes files agree with llama.cpp, $fails failed"
[ "$fails" -eq 0 ]
