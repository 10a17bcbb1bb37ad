#!/bin/bash
# test_kquant_llamacpp.sh — omnikv's K-quant quantizers against llama.cpp's: a tiny-k model
# (every row a multiple of 256) generated in F32 is quantized by llama.cpp to Q2_K, Q3_K, Q4_K,
# Q5_K and Q6_K (pure), and every tensor must be byte-identical to gen-model --type of the same
# seed (tests/model/kquant_oracle.py); then omnikv runs each file (greedy, 8 tokens) without error.
set -u
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SRC=${OMNIKV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${OMNIKV_BIN:-$SRC/build/omnikv}
PY=$CACHE/venv/bin/python
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0 passes=0
pass() { passes=$((passes + 1)); echo "ok: $*"; }
fail() { fails=$((fails + 1)); echo "FAIL: $*"; }

for need in "$BIN" "$PY"; do
    [ -e "$need" ] || { echo "FAIL: $need is missing (build omnikv; run scripts/setup.sh --test)"; exit 1; }
done
"$BIN" gen-model --shape tiny-k --type f32 --seed 5 -o "$TMP/f32.gguf" >/dev/null 2>&1 ||
    { echo "FAIL: gen-model f32"; exit 1; }
# llama.cpp file types whose base type is the K-quant (MOSTLY_Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K)
for tf in q2_k:10 q3_k:12 q4_k:15 q5_k:17 q6_k:18; do
    t=${tf%%:*} ftype=${tf##*:}
    "$BIN" gen-model --shape tiny-k --type "$t" --seed 5 -o "$TMP/$t.gguf" >/dev/null 2>&1 ||
        { fail "gen-model --type $t"; continue; }
    if "$PY" "$SRC/tests/model/kquant_oracle.py" "$TMP/f32.gguf" "$TMP/$t.gguf" "$ftype" "$TMP/ll-$t.gguf" \
        >"$TMP/$t.log" 2>&1; then
        pass "$t: $(grep -c '^ok' "$TMP/$t.log") tensors byte-identical to llama.cpp's quantizer"
    else
        fail "$t: differs from llama.cpp's quantizer"; grep -v '^ok' "$TMP/$t.log" | tail -5
    fi
    if out=$("$BIN" run -m "$TMP/ll-$t.gguf" -p "hello world" -n 8 2>&1); then
        pass "$t: llama.cpp's file runs"
    else
        fail "$t: omnikv run on llama.cpp's file: $(echo "$out" | tail -2)"
    fi
done
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
