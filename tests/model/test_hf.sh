#!/bin/bash
# test_hf.sh — Hugging Face checkpoints end to end through the CLI: the SmolLM2 checkpoint made by
# tests/fixtures/gguf_to_hf.py must give the same greedy tokens as its BF16 GGUF twin (plain and
# --chat prompts), and the same first token as the original Q4_1 GGUF; tiny Qwen2 and Llama-3.1
# checkpoints from tests/fixtures/make_tiny_hf.py must give the tokens of a numpy forward pass;
# a sliding-window Mistral config must fail with exit code 3 and its reason.
set -u
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SRC=${OMNIKV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${OMNIKV_BIN:-$SRC/build/omnikv}
PY=$CACHE/venv/bin/python
HF=$CACHE/hf/SmolLM2-135M-Instruct
TWIN=$CACHE/hf/SmolLM2-135M-Instruct.bf16.gguf
Q41=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0 passes=0

pass() { passes=$((passes + 1)); echo "ok: $*"; }
fail() { fails=$((fails + 1)); echo "FAIL: $*"; }

for need in "$BIN" "$PY" "$Q41"; do
    [ -e "$need" ] || { echo "FAIL: $need is missing (build omnikv; run scripts/setup.sh --test)"; exit 1; }
done
"$PY" "$SRC/tests/fixtures/gguf_to_hf.py" || { echo "FAIL: gguf_to_hf.py did not succeed"; exit 1; }

# tokens MODEL OUT ARGS...: the generated ids of one greedy run, space-separated, into OUT.
tokens() {
    local model=$1 out=$2
    shift 2
    if ! "$BIN" run -m "$model" -n 32 --json --set ignore_eos=true "$@" >"$out.json" 2>"$out.err"; then
        echo "omnikv run -m $model $* failed:"; tail -5 "$out.err"
        return 1
    fi
    "$PY" -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["tokens"])))' \
        "$out.json" >"$out"
}

# SmolLM2: HF directory vs the GGUF twin holding the same bf16 values.
i=0
for args in "-p|The capital of France is" "-p|def fibonacci(n):" "--chat|-p|Name three primary colors."; do
    i=$((i + 1))
    IFS='|' read -r -a a <<<"$args"
    tokens "$HF" "$TMP/hf$i" "${a[@]}" && tokens "$TWIN" "$TMP/gg$i" "${a[@]}" || { fail "run $i"; continue; }
    if [ -s "$TMP/hf$i" ] && cmp -s "$TMP/hf$i" "$TMP/gg$i"; then
        pass "HF == BF16 GGUF, 32 tokens, ${a[*]}"
    else
        fail "HF and BF16 GGUF differ for ${a[*]}: HF [$(cat "$TMP/hf$i")] GGUF [$(cat "$TMP/gg$i")]"
    fi
done

# The original Q4_1 file rounds differently; an unambiguous prompt still agrees on its first token.
if tokens "$Q41" "$TMP/q41" -p "The capital of France is"; then
    read -r -a h <"$TMP/hf1"
    read -r -a q <"$TMP/q41"
    same=0
    while [ $same -lt ${#h[@]} ] && [ "${h[$same]}" = "${q[$same]:-}" ]; do same=$((same + 1)); done
    if [ $same -ge 1 ]; then pass "HF (bf16) and Q4_1 GGUF agree on the first $same tokens"
    else fail "HF (bf16) and Q4_1 GGUF disagree from the first token: [${h[*]}] vs [${q[*]}]"; fi
else
    fail "Q4_1 run"
fi

# Tiny shapes against the numpy reference (f32 weights and KV, so only rounding order differs).
if "$PY" "$SRC/tests/fixtures/make_tiny_hf.py" "$TMP/tiny" "$HF" "The capital of France is" 8 >"$TMP/ref.jsonl"; then
    while read -r line; do
        dir=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["model"])' "$line")
        want=$("$PY" -c 'import json,sys; print(" ".join(map(str, json.loads(sys.argv[1])["tokens"])))' "$line")
        margin=$("$PY" -c 'import json,sys; print("%.3g" % json.loads(sys.argv[1])["min_margin"])' "$line")
        if "$BIN" run -m "$dir" -p "The capital of France is" -n 8 --json --set ignore_eos=true \
            --set kv_type=f32 >"$TMP/t.json" 2>"$TMP/t.err"; then
            got=$("$PY" -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["tokens"])))' "$TMP/t.json")
            if [ "$got" = "$want" ]; then pass "$(basename "$dir"): 8 tokens equal the numpy reference (closest top-2 gap $margin)"
            else fail "$(basename "$dir"): engine [$got] vs numpy reference [$want]"; fi
        else
            fail "$(basename "$dir") did not run:"; tail -5 "$TMP/t.err"
        fi
    done <"$TMP/ref.jsonl"
else
    fail "make_tiny_hf.py did not succeed"
fi

# A config the engine cannot honour is a model error (exit 3) with its reason.
if [ -d "$TMP/tiny/llama31" ]; then
    cp -r "$TMP/tiny/llama31" "$TMP/mistral"
    "$PY" -c 'import json,sys
p = sys.argv[1] + "/config.json"; c = json.load(open(p))
c.update(model_type="mistral", sliding_window=256); json.dump(c, open(p, "w"))' "$TMP/mistral"
    "$BIN" run -m "$TMP/mistral" -p "hi" -n 1 >/dev/null 2>"$TMP/m.err"
    rc=$?
    if [ $rc -eq 3 ] && grep -q "sliding-window attention is not implemented" "$TMP/m.err"; then
        pass "sliding-window mistral rejected with exit 3"
    else
        fail "sliding-window mistral: exit $rc, stderr: $(tail -2 "$TMP/m.err")"
    fi
fi

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
