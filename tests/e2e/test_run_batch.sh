#!/usr/bin/env bash
# test_run_batch.sh — `omnikv run` end to end on a generated tiny model and on SmolLM2: a JSONL
# batch with good requests, a bad JSON line, a bad field and an over-long prompt (exit 1, error
# records, the batch goes on), batching not changing the tokens, stop strings, --resume, -p,
# usage errors (exit 2), bad model and input files (exit 3), inspect, bench, and a --chat batch
# on the real model. Needs OMNIKV_BIN and python3 (for reading the JSON results).
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SMOL=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
T=$(mktemp -d /tmp/okv_e2e_run.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn
. "$(dirname "$0")/checks.sh"

TINY=$T/tiny.gguf
expect_exit 0 "gen-model tiny" "$BIN" gen-model --shape tiny -o "$TINY"
check "gen-model wrote the file" test -s "$TINY"

# ---- a batch with good and bad requests ---------------------------------------------------
LONG=$(python3 -c "print('word ' * 200)")
cat >"$T/req.jsonl" <<EOF
{"id":"a","prompt":"Hello there","max_new_tokens":5,"ignore_eos":true}
{"id":"b","prompt":"The quick brown fox","max_new_tokens":6,"temperature":0.8,"top_p":0.9,"seed":3,"ignore_eos":true}
this is not json

{"id":"long","prompt":"$LONG","max_new_tokens":10}
{"id":7,"messages":[{"role":"user","content":"Hi"}],"max_new_tokens":4,"ignore_eos":true}
{"id":"bad-field","prompt":"x","top_p":1.5}
{"id":"zero","prompt":"Hello","max_new_tokens":0}
{"prompt":"no id here","max_new_tokens":2,"ignore_eos":true}
EOF
RUN=("$BIN" run -m "$TINY" --set max_context_len=160)
expect_exit 1 "batch with error records exits 1" "${RUN[@]}" -f "$T/req.jsonl" -o "$T/out2.jsonl" \
    --set max_batch=2
py '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
by = {r["id"]: r for r in recs}
ids = [r["id"] for r in recs]
assert len(recs) == 8 and len(by) == 8, f"8 records, one per request: {ids}"
for k in ("a", "b", 7, "zero", "line-9"):
    r = by[k]
    assert "error" not in r, f"{k}: {r}"
    for f in ("text", "tokens", "prompt_tokens", "finish_reason", "ttft_ms", "decode_tok_s", "metrics", "policy"):
        assert f in r, f"{k} lacks {f}"
    assert r["policy"] == "dense" and r["prompt_tokens"] > 0, r
assert len(by["a"]["tokens"]) == 5 and by["a"]["finish_reason"] == "length", by["a"]
assert len(by["b"]["tokens"]) == 6, by["b"]
assert len(by[7]["tokens"]) == 4 and by[7]["prompt_tokens"] > 20, by[7]
assert by["zero"]["tokens"] == [] and by["zero"]["text"] == "" and by["zero"]["finish_reason"] == "length"
assert by["a"]["metrics"]["steps"] > 0 and by["a"]["metrics"]["bytes_weights"] > 0, by["a"]["metrics"]
assert "line 3 is not valid JSON" in by["line-3"]["error"], by["line-3"]
assert "exceeds max_context_len 160" in by["long"]["error"] and "new tokens" in by["long"]["error"], by["long"]
assert "top_p" in by["bad-field"]["error"] and "line 7" in by["bad-field"]["error"], by["bad-field"]
' "$T/out2.jsonl"

# A top_p above 0 that single precision rounds to 0 would read as "unset": it is refused.
printf '%s\n' '{"id":"tiny-top-p","prompt":"x","top_p":1e-46}' >"$T/tp.jsonl"
expect_exit 1 "a top_p that rounds to 0" "${RUN[@]}" -f "$T/tp.jsonl" -o "$T/tp.out"
py '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert "top_p" in r.get("error", ""), r
' "$T/tp.out"

# One slot at a time gives the same tokens: batching does not change a sequence.
expect_exit 1 "the same batch with max_batch=1" "${RUN[@]}" -f "$T/req.jsonl" -o "$T/out1.jsonl"
py '
import json, sys
a = {r["id"]: r.get("tokens") for r in map(json.loads, open(sys.argv[1]))}
b = {r["id"]: r.get("tokens") for r in map(json.loads, open(sys.argv[2]))}
assert a == b, f"max_batch 1 vs 2 differ: {a} vs {b}"
' "$T/out1.jsonl" "$T/out2.jsonl"

# Stop strings: cut a longer greedy text at a piece of it.
printf '%s\n' '{"id":"s","prompt":"Hello there","max_new_tokens":24,"ignore_eos":true}' >"$T/s.jsonl"
expect_exit 0 "24 greedy tokens" "${RUN[@]}" -f "$T/s.jsonl" -o "$T/s_out.jsonl"
STOP=$(python3 -c '
import json, sys
t = json.loads(open(sys.argv[1]).readline())["text"]
s = t[len(t) // 2:len(t) // 2 + 2]
print(json.dumps({"id": "s", "prompt": "Hello there", "max_new_tokens": 24, "ignore_eos": True, "stop": ["never-appears-here", s]}))
' "$T/s_out.jsonl")
printf '%s\n' "$STOP" >"$T/s2.jsonl"
expect_exit 0 "the same request with a stop string" "${RUN[@]}" -f "$T/s2.jsonl" -o "$T/s2_out.jsonl"
py '
import json, sys
full = json.loads(open(sys.argv[1]).readline())
cut = json.loads(open(sys.argv[2]).readline())
stop = json.loads(open(sys.argv[3]).readline())["stop"][1]
i = full["text"].find(stop)
assert cut["finish_reason"] == "stop", cut
assert cut["text"] == full["text"][:i], (cut["text"], full["text"], stop)
assert cut["tokens"] == full["tokens"][:len(cut["tokens"])] and len(cut["tokens"]) < 24, cut
' "$T/s_out.jsonl" "$T/s2_out.jsonl" "$T/s2.jsonl"

# ---- --resume -----------------------------------------------------------------------------
cp "$T/out2.jsonl" "$T/res.jsonl"
grep -v '"id":"a"' "$T/out2.jsonl" >"$T/res.jsonl"
grep '"id":"b"' "$T/res.jsonl" >"$T/b_before"
printf '{"id":"zzz","text":"interrupted' >>"$T/res.jsonl"
expect_exit 1 "--resume retries error records, so exit 1" "${RUN[@]}" -f "$T/req.jsonl" \
    -o "$T/res.jsonl" --resume
py '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
recs = [json.loads(l) for l in lines]
ids = [r["id"] for r in recs]
assert sorted(map(str, ids)) == sorted(map(str, ["a", "b", 7, "zero", "line-9", "line-3", "long", "bad-field"])), ids
old = {r["id"]: r for r in map(json.loads, open(sys.argv[2]))}
new = {r["id"]: r for r in recs}
assert new["a"]["tokens"] == old["a"]["tokens"], "re-served a differs"
assert "zzz" not in new, "the partial line is dropped"
b_line = open(sys.argv[3]).read().strip()
assert b_line in lines, "b was served before and must be kept, not re-served"
' "$T/res.jsonl" "$T/out2.jsonl" "$T/b_before"
# Nothing left to serve but the error records: only they are written again.
grep -v '"error"' "$T/res.jsonl" >"$T/res_ok.jsonl"
cp "$T/res_ok.jsonl" "$T/res2.jsonl"
expect_exit 1 "second --resume" "${RUN[@]}" -f "$T/req.jsonl" -o "$T/res2.jsonl" --resume
py '
import json, sys
ok = open(sys.argv[1]).read().splitlines()
now = open(sys.argv[2]).read().splitlines()
assert now[:len(ok)] == ok, "served records are kept as they were"
added = [json.loads(l) for l in now[len(ok):]]
assert all("error" in r for r in added) and len(added) == 3, added
' "$T/res_ok.jsonl" "$T/res2.jsonl"

# ---- -p -----------------------------------------------------------------------------------
expect_exit 0 "-p --json" "${RUN[@]}" -p "Hello there" -n 5 --set ignore_eos=true --json
py '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, f"stdout holds only the result object: {lines}"
r = json.loads(lines[0])
a = {x["id"]: x for x in map(json.loads, open(sys.argv[2]))}["a"]
assert r["tokens"] == a["tokens"] and r["text"] == a["text"], (r, a)
' "$T/out" "$T/out2.jsonl"
expect_exit 0 "-p" "${RUN[@]}" -p "Hello there" -n 5 --set ignore_eos=true
check "-p prints the text and a newline" test "$(tail -c 1 "$T/out" | od -An -c | tr -d ' ')" = '\n'
check "-p prints nothing else" test "$(wc -c <"$T/out")" -ge 1
expect_exit 1 "-p with a prompt that does not fit" "${RUN[@]}" -p "$LONG" -n 4
check "the reason goes to stderr" grep -q "exceeds max_context_len 160" "$T/err"

# ---- the omnikv policy on the tiny model --------------------------------------------------
expect_exit 1 "omnikv policy batch" "${RUN[@]}" -f "$T/req.jsonl" -o "$T/omni.jsonl" \
    --set do_select_layers=1 --set num_of_selected_tokens=4
py '
import json, sys
recs = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
a = recs["a"]
assert a["policy"] == "omnikv" and a["k"] == 4 and len(a["tokens"]) == 5, a
assert a["metrics"]["rows_sparse"] > 0 and a["metrics"]["rows_filter"] > 0, a["metrics"]
' "$T/omni.jsonl"

# ---- usage and config errors: exit 2 ------------------------------------------------------
expect_exit 2 "run without -m" "$BIN" run -p hi && one_sentence "-m"
expect_exit 2 "both -p and -f" "$BIN" run -m "$TINY" -p hi -f "$T/req.jsonl" && one_sentence "-p" "-f"
expect_exit 2 "unknown flag" "$BIN" run -m "$TINY" -p hi --frobnicate && one_sentence "--frobnicate"
expect_exit 2 "flag without value" "$BIN" run -m "$TINY" -p && one_sentence "-p" "value"
expect_exit 2 "unknown key" "${RUN[@]}" -p hi --set windw_size=4 && one_sentence "windw_size"
expect_exit 2 "bad value" "${RUN[@]}" -p hi --set window_size=0 && one_sentence "window_size" "'0'" ">= 1"
expect_exit 2 "bad -n" "${RUN[@]}" -p hi -n -3 && one_sentence "max_new_tokens" "'-3'"
expect_exit 2 "dense_more=false" "${RUN[@]}" -p hi --set dense_more=false && one_sentence "dense_more=true"
expect_exit 2 "omnikv without filter layers" "${RUN[@]}" -p hi --set policy=omnikv && one_sentence "do_select_layers"
expect_exit 2 "filter layer beyond the model" "${RUN[@]}" -p hi --set do_select_layers=2,9 && one_sentence "9" "4 layers"
expect_exit 2 "missing config file" "${RUN[@]}" -p hi -c "$T/none.json" && one_sentence "none.json"
echo '{"window_size": 4, "kv_type": "q4"}' >"$T/bad.json"
expect_exit 2 "bad config file value" "${RUN[@]}" -p hi -c "$T/bad.json" && one_sentence "bad.json" "kv_type" "'q4'"
OMNIKV_TOP_P=2 expect_exit 2 "bad environment value" "${RUN[@]}" -p hi && one_sentence "OMNIKV_TOP_P"
expect_exit 2 "--resume without -o" "${RUN[@]}" -f "$T/req.jsonl" --resume && one_sentence "--resume"
expect_exit 2 "unknown command" "$BIN" frobnicate && one_sentence "frobnicate"
expect_exit 2 "no command" "$BIN" && one_sentence "command"
for c in eval calibrate; do
    expect_exit 2 "$c without -m" "$BIN" $c && one_sentence "-m MODEL is required"
done
expect_exit 2 "calibrate with a bad objective" "$BIN" calibrate -m "$TINY" --objective most \
    && one_sentence "--objective" "'most'"
expect_exit 2 "calibrate with an unknown task" "$BIN" calibrate -m "$TINY" --task haystack \
    && one_sentence "'haystack'"
expect_exit 2 "eval with an unknown variant" "$BIN" eval -m "$TINY" --task passkey --variants dense,zero \
    && one_sentence "'zero'"
expect_exit 2 "plan without --ctx" "$BIN" plan --model tiny --ranks 2 && one_sentence "--ctx"
expect_exit 2 "plan with more ranks than layers" "$BIN" plan --model tiny --ctx 64 --ranks 5 \
    && one_sentence "4 layers over 5 ranks" "at most 4 ranks"
expect_exit 2 "plan with an unknown shape" "$BIN" plan --model nope --ctx 64 --ranks 2 && one_sentence "'nope'"
expect_exit 2 "plan with a bad size" "$BIN" plan --model tiny --ctx 64 --ranks 2 --gpu-mem 8X && one_sentence "--gpu-mem"
expect_exit 2 "gen-model with an unknown shape" "$BIN" gen-model --shape nope -o "$T/x.gguf" && one_sentence "nope"
expect_exit 2 "bench without -m" "$BIN" bench && one_sentence "-m"

# ---- model and input file errors: exit 3 --------------------------------------------------
head -c 4096 "$TINY" >"$T/truncated.gguf"
expect_exit 3 "truncated model" "$BIN" run -m "$T/truncated.gguf" -p hi && one_sentence "truncated.gguf"
check "one error line on stderr" test "$(grep -c '^omnikv: ' "$T/err")" -eq 1
printf 'GGUF\003\000\000\000garbage' >"$T/garbage.gguf"
expect_exit 3 "corrupt model" "$BIN" run -m "$T/garbage.gguf" -p hi && one_sentence "garbage.gguf"
expect_exit 3 "missing model" "$BIN" run -m "$T/nope.gguf" -p hi && one_sentence "nope.gguf"
expect_exit 3 "missing request file" "${RUN[@]}" -f "$T/nope.jsonl" && one_sentence "nope.jsonl"
expect_exit 3 "inspect a corrupt model" "$BIN" inspect "$T/garbage.gguf" && one_sentence "garbage.gguf"

# ---- help, inspect, bench -----------------------------------------------------------------
expect_exit 0 "run --help" "$BIN" run --help
for w in num_of_selected_tokens do_select_layers cpu_num_threads --top-p --resume "default"; do
    check "run --help mentions $w" grep -q -- "$w" "$T/out"
done
expect_exit 0 "--help" "$BIN" --help && check "top help lists bench" grep -q bench "$T/out"
for c in inspect gen-model bench plan; do
    expect_exit 0 "$c --help" "$BIN" $c --help && check "$c --help has a usage line" grep -q "usage: omnikv $c" "$T/out"
done
expect_exit 0 "inspect" "$BIN" inspect "$TINY"
check "inspect shows the tensors" grep -q "blk.3.ffn_down.weight" "$T/out"
check "inspect shows the derived config" grep -Eq "layers +4" "$T/out"
expect_exit 0 "bench --json" "$BIN" bench -m "$TINY" --ctx 16,40 --gen 4 --json
py '
import json, sys
b = json.load(open(sys.argv[1]))
rs = b["results"]
assert [r["ctx"] for r in rs] == [16, 40], rs
for r in rs:
    assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["weight_bytes_per_token"] > 0, r
    assert r["kv_bytes_per_token"] > 0, r
' "$T/out"
# --batch: the sequences of a run step together, so a step's weights serve B tokens (1/B of the
# one-sequence weight bytes per token, to rounding) while KV bytes and rows per token stay a
# sequence's own.
cp "$T/out" "$T/bench1.json"
expect_exit 0 "bench --batch 3" "$BIN" bench -m "$TINY" --ctx 16,40 --gen 4 --batch 3 --json
py '
import json, math, sys
one, three = (json.load(open(f)) for f in sys.argv[1:3])
assert one["batch"] == 1 and three["batch"] == 3, (one["batch"], three["batch"])
for a, b in zip(one["results"], three["results"]):
    assert math.isclose(b["weight_bytes_per_token"] * 3, a["weight_bytes_per_token"], rel_tol=1e-12), (a, b)
    assert b["kv_bytes_per_token"] == a["kv_bytes_per_token"], (a, b)
    assert b["rows_per_token"] == a["rows_per_token"], (a, b)
    assert b["decode_tok_s"] > 0 and b["prefill_tok_s"] > 0, b
' "$T/bench1.json" "$T/out"
expect_exit 2 "bench --batch 0" "$BIN" bench -m "$TINY" --batch 0 && one_sentence "--batch"
expect_exit 0 "bench table" "$BIN" bench -m "$TINY" --ctx 16 --gen 2
check "bench prints a table row for ctx 16" grep -Eq "^ +16 " "$T/out"

# ---- plan -------------------------------------------------------------------------------------
expect_exit 0 "plan for a preset" "$BIN" plan -c "${OMNIKV_SRC:-.}/configs/llama3-8b-262k.json" \
    --ctx 131072 --ranks 4 --gpu-mem 80G --bw 2T
check "plan lists rank 3" grep -Eq "^  3 +>?[0-9]+-31 " "$T/out"
check "plan predicts a step time" grep -q "^predicted decode: " "$T/out"
check "a 128K Llama-3-8B context fits 4 x 80G" grep -q "^fits: yes" "$T/out"
expect_exit 1 "plan that does not fit" "$BIN" plan --model llama3-8b --set policy=dense --ctx 1000000 \
    --ranks 2 --gpu-mem 40G --bw 2T
check "a dense 1M context does not fit 2 x 40G" grep -q "^fits: no" "$T/out"
expect_exit 0 "plan for a model file" "$BIN" plan --model "$TINY" --ctx 64 --ranks 2 --stages 0-0,1-3 --bw 10G
check "plan keeps the hand partition" grep -q "hand partition" "$T/out"

# ---- the real model, a chat batch ---------------------------------------------------------
if [ ! -f "$SMOL" ]; then
    fail "the default model $SMOL is missing; run scripts/setup.sh --test"
else
    cat >"$T/chat.jsonl" <<'EOF'
{"id":"capital","prompt":"What is the capital of France? Answer in one sentence.","max_new_tokens":24}
{"id":"msgs","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Name one primary colour."}],"max_new_tokens":12,"stop":["\n"]}
EOF
    expect_exit 0 "SmolLM2 chat batch" "$BIN" run -m "$SMOL" -f "$T/chat.jsonl" --chat --set max_batch=2 \
        --set max_context_len=512
    py '
import json, sys
recs = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
c, m = recs["capital"], recs["msgs"]
assert "error" not in c and "error" not in m, recs
text = c["text"]
assert "Paris" in text, f"greedy SmolLM2 should answer Paris: {text!r}"
assert c["finish_reason"] in ("eos", "length") and c["prompt_tokens"] > 20, c
assert m["text"].strip() and "\n" not in m["text"], m
print("SmolLM2:", repr(c["text"]), "|", repr(m["text"]))
' "$T/out"

    # Progress lines: a long prompt and a short one decoded together, a line every 0.5 s. The
    # lines count no decoded token twice (tokens after the last line are not reported), and their
    # seconds of decoding leave out the prefill:
    # they sum to at most the run's time less the prompts' prefill time (each record's own
    # prompt_tokens / prefill_tok_s), with 0.1 s per line for their rounding and 0.5 s of slack.
    python3 -c "
import json
print(json.dumps({'id': 'long', 'prompt': 'The grass is green. ' * 300, 'max_new_tokens': 160}))
print(json.dumps({'id': 'short', 'prompt': 'Hello there', 'max_new_tokens': 160}))" >"$T/progress.jsonl"
    expect_exit 0 "progress lines" env OMNIKV_LOG=info "$BIN" run -m "$SMOL" -f "$T/progress.jsonl" \
        -o "$T/progress.out" --set max_batch=2 --set ignore_eos=true --set progress_s=0.5
    py '
import json, re, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
log = open(sys.argv[2]).read()
lines = re.findall(r"decode: (\d+) tokens in ([0-9.]+) s of decoding", log)
served = float(re.search(r"served 2 requests \(0 error records\) in ([0-9.]+) s", log).group(1))
prefill = sum(r["prompt_tokens"] / r["prefill_tok_s"] for r in recs)
tokens, dec = sum(int(n) for n, _ in lines), sum(float(s) for _, s in lines)
want = sum(len(r["tokens"]) - 1 for r in recs)
print(f"progress: {len(lines)} lines, {tokens} tokens (records: {want} after the first), {dec:.1f} s "
      f"of decoding; run {served:.1f} s, prefill {prefill:.1f} s")
assert len(lines) >= 2, log
assert 0 < tokens <= want, (tokens, want)
assert dec <= served - prefill + 0.1 * len(lines) + 0.5, (dec, served, prefill)
' "$T/progress.out" "$T/err"
fi

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
