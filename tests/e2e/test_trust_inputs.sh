#!/usr/bin/env bash
# test_trust_inputs.sh — hostile input against `omnikv` on a generated tiny model: request lines
# that must become error records (text after the object, unknown or repeated fields, NUL, ids
# that are not UTF-8, repeated ids) with every output line valid JSON and --resume agreeing;
# results and model outputs that must never be lost or replaced (-o equal to -f, symlinks,
# directories, devices, FIFOs, usage errors after -o, a full device); model paths that must not
# hang (FIFO) or mislead (symlink loop); counts with suffixes and stated limits; eval's depth and
# LongBench error records. Needs OMNIKV_BIN and python3; mpirun for the multi-rank case.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d /tmp/okv_e2e_trust.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn
. "$(dirname "$0")/checks.sh"

TINY=$T/tiny.gguf
expect_exit 0 "gen-model tiny" "$BIN" gen-model --shape tiny -o "$TINY"
RUN=("$BIN" run -m "$TINY" --set max_context_len=160)

# ---- request lines ------------------------------------------------------------------------
{
    printf '%s\n' '{"id":"two","prompt":"x","max_new_tokens":2}{"id":"two-b","prompt":"y"}'
    printf '%s\n' '{"id":"a","prompt":"Hello","max_new_tokens":3,"ignore_eos":true}'
    printf '%s\n' '{"id":"typo","prompt":"x","temprature":0.5}'
    printf '%s\n' '{"id":"nul","prompt":"a\u0000b"}'
    printf '%s\n' '{"id":"rep","prompt":"x","prompt":"y"}'
    printf '{"id":"bad\xff\xfeid","prompt":"x"}\n'
    printf '%s\n' '{"id":"a","prompt":"again","max_new_tokens":3}'
    printf '%s\n' '{"id":"b","prompt":"Hi","max_new_tokens":3,"ignore_eos":true}'
    printf '%s\n' '{"id":"esc","prompt":"a\\u0000 is text here","max_new_tokens":1,"ignore_eos":true}'
} >"$T/req.jsonl"
expect_exit 1 "a batch of refused lines exits 1" "${RUN[@]}" -f "$T/req.jsonl" -o "$T/res.jsonl"
py '
import json, sys
raw = open(sys.argv[1], "rb").read().splitlines()
recs = [json.loads(l.decode("utf-8")) for l in raw]  # every line is UTF-8 JSON
assert len(recs) == 9, f"one record per request line: {len(recs)}"
err = {}
ok = []
for r in recs:
    (err.setdefault(r["id"], []).append(r["error"]) if "error" in r else ok.append(r["id"]))
assert sorted(ok) == ["a", "b", "esc"], ok
assert "text after its JSON value" in err["two"][0], err["two"]
assert "two-b" not in err, "the second object is not served"
assert "temprature" in err["typo"][0], err["typo"]
assert "\\u0000" in err["nul"][0], err["nul"]
assert "\"prompt\" appears twice" in err["rep"][0], err["rep"]
assert err["bad\\xff\\xfeid"] and "UTF-8" in err["bad\\xff\\xfeid"][0], err
assert len(err["a"]) == 1 and "already used on line 2" in err["a"][0], err["a"]
' "$T/res.jsonl"

# --resume agrees: the served a and b are kept, the repeated a gets its error record again.
grep -v '"id":"b"' "$T/res.jsonl" >"$T/res2.jsonl"
expect_exit 1 "--resume with a repeated id" "${RUN[@]}" -f "$T/req.jsonl" -o "$T/res2.jsonl" --resume
py '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
served = [r["id"] for r in recs if "error" not in r]
assert sorted(served) == ["a", "b", "esc"], f"each id served once: {served}"
assert sum(1 for r in recs if r["id"] == "a" and "error" in r) == 1, recs
' "$T/res2.jsonl"

# ---- results files ------------------------------------------------------------------------
printf '%s\n' '{"id":"x","prompt":"Hello","max_new_tokens":2}' >"$T/one.jsonl"
cp "$T/one.jsonl" "$T/one.keep"
expect_exit 2 "-o naming the request file" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/one.jsonl" \
    && one_sentence "is the request file"
check "the requests are intact" cmp -s "$T/one.jsonl" "$T/one.keep"
ln -s one.jsonl "$T/one-link.jsonl"
expect_exit 2 "-o a symlink to the request file" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/one-link.jsonl"
check "the requests are intact (link)" cmp -s "$T/one.jsonl" "$T/one.keep"

echo "earlier results" >"$T/keep.jsonl"
expect_exit 2 "--stages with two stages on one rank" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/keep.jsonl" \
    --stages 0-1,2-3 && one_sentence "2 pipeline stages" "one rank"
expect_exit 2 "a filter layer beyond the model" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/keep.jsonl" \
    --set do_select_layers=9
check "usage errors leave the results file as it was" grep -qx "earlier results" "$T/keep.jsonl"

ln -s target.jsonl "$T/link.jsonl"
expect_exit 0 "-o through a dangling symlink" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/link.jsonl"
check "the link stays a link" test -L "$T/link.jsonl"
check "the target holds the result" grep -q '"id":"x"' "$T/target.jsonl"
echo '{"id":"x","error":"retry me"}' >"$T/target.jsonl"
expect_exit 0 "--resume through a symlink" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/link.jsonl" --resume
check "the link stays a link after --resume" test -L "$T/link.jsonl"
py '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 1 and "error" not in recs[0], recs
' "$T/target.jsonl"

expect_exit 2 "-o a directory" "${RUN[@]}" -f "$T/one.jsonl" -o "$T" && one_sentence "directory"
expect_exit 2 "-o a device" "${RUN[@]}" -f "$T/one.jsonl" -o /dev/full && one_sentence "character device"
check "/dev/full is still a device" test -c /dev/full
ln -s loop-b "$T/loop-a"
ln -s loop-a "$T/loop-b"
expect_exit 2 "-o a symlink loop" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/loop-a" && one_sentence "loop"
CHECKS=$((CHECKS + 1))
timeout 120 "${RUN[@]}" -f "$T/one.jsonl" -o /dev/stdout >/dev/full 2>"$T/err"
got=$?
[ "$got" -eq 3 ] || fail "a failed write to stdout: exit $got, want 3"
one_sentence "No space left"
mkfifo "$T/fifo"
(cat "$T/fifo" >"$T/from-fifo") &
reader=$!
expect_exit 0 "-o a FIFO streams" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/fifo"
wait "$reader"
check "the FIFO's reader got the result" grep -q '"id":"x"' "$T/from-fifo"
expect_exit 2 "--resume on a FIFO" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/fifo" --resume \
    && one_sentence "regular file"

if command -v mpirun >/dev/null; then
    MPI=(mpirun --oversubscribe -np 6)
    expect_exit 2 "more ranks than layers" "${MPI[@]}" "${RUN[@]}" -f "$T/one.jsonl" -o "$T/keep.jsonl"
    check "a refused plan leaves the results file as it was" grep -qx "earlier results" "$T/keep.jsonl"
else
    echo "mpirun not found: the multi-rank case is skipped"
fi

# ---- model paths and model outputs ------------------------------------------------------------
mkfifo "$T/model-fifo"
expect_exit 3 "a FIFO as the model does not hang" "$BIN" run -m "$T/model-fifo" -p hi \
    && one_sentence "neither a file nor a directory"
mkdir "$T/hf-fifo"
mkfifo "$T/hf-fifo/config.json"
expect_exit 3 "a FIFO inside a checkpoint directory does not hang" "$BIN" run -m "$T/hf-fifo" -p hi \
    && one_sentence "not a regular file"
ln -s m-loop-b "$T/m-loop-a"
ln -s m-loop-a "$T/m-loop-b"
expect_exit 3 "a symlink loop as the model" "$BIN" run -m "$T/m-loop-a" -p hi && one_sentence "loop"
ln -s real.gguf "$T/model-link.gguf"
expect_exit 0 "gen-model through a dangling symlink" "$BIN" gen-model --shape tiny --layers 1 -o "$T/model-link.gguf"
check "gen-model keeps the link" test -L "$T/model-link.gguf"
check "gen-model wrote the target" test -s "$T/real.gguf"
# A FIFO stands for every non-regular target here: a writer that replaces its target would
# replace a device node as well, and this test must not harm one.
mkfifo "$T/gen-fifo"
expect_exit 2 "gen-model to a FIFO" "$BIN" gen-model --shape tiny -o "$T/gen-fifo" && one_sentence "a FIFO"
check "the FIFO is still a FIFO after gen-model" test -p "$T/gen-fifo"

# ---- counts -------------------------------------------------------------------------------------
expect_exit 2 "threads 1e6" "${RUN[@]}" -p hi --set threads=1000000 && one_sentence "threads" "at most 1024"
expect_exit 2 "max_batch 1e8" "${RUN[@]}" -p hi --set max_batch=100000000 && one_sentence "max_batch" "at most 4096"
expect_exit 0 "keep_last 2^31-1 means the whole prompt" "${RUN[@]}" -p "Hello there" -n 4 \
    --set do_select_layers=1 --set num_of_selected_tokens=2 --set keep_last=2147483647 --set ignore_eos=true
expect_exit 0 "max_context_len with a suffix" "$BIN" run -m "$TINY" --set max_context_len=1K -p hi -n 2
expect_exit 0 "plan --ctx 1M" "$BIN" plan --model tiny --ctx 1M --ranks 2
check "plan reads 1M as 1048576" grep -q "1048576" "$T/out"
expect_exit 2 "plan --ctx 2^63-1" "$BIN" plan --model tiny --ctx 9223372036854775807 --ranks 2 \
    && one_sentence "--ctx" "2147483647"
expect_exit 0 "bench --ctx with a suffix" "$BIN" bench -m "$TINY" --ctx 16,1K --gen 2 --runs 1 --json
py '
import json, sys
assert [r["ctx"] for r in json.load(open(sys.argv[1]))["results"]] == [16, 1024]
' "$T/out"
printf '{"window_size": 4}{"window_size": 8}' >"$T/two.json"
expect_exit 2 "a config file with two objects" "${RUN[@]}" -p hi -c "$T/two.json" && one_sentence "two.json" "more than one"

# ---- eval ----------------------------------------------------------------------------------------
echo "earlier samples" >"$T/ev.jsonl"
# A filter layer past the model's is found only once the model is loaded.
expect_exit 2 "eval refused after the model loads" "$BIN" eval -m "$TINY" --task passkey --ctx 256 \
    --variants 0.5 --set do_select_layers=99 -o "$T/ev.jsonl" && one_sentence "do_select_layers"
check "a refused eval leaves its output file as it was" grep -qx "earlier samples" "$T/ev.jsonl"
expect_exit 2 "eval --depth nan" "$BIN" eval -m "$TINY" --task passkey --depth nan && one_sentence "--depth" "nan"
expect_exit 1 "a LongBench file with a bad record goes on" "$BIN" eval -m "$TINY" \
    --task "longbench:$SRC/tests/data/longbench/bad_missing_answers.jsonl" --ctx 256 --variants dense \
    -o "$T/lb.jsonl"
py '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
err = [r for r in recs if "error" in r]
ok = [r for r in recs if "score" in r]
assert len(err) == 1 and err[0]["id"] == "bad" and "line 2" in err[0]["error"], recs
assert len(ok) == 1 and ok[0]["id"] == "ok", recs
' "$T/lb.jsonl"
expect_exit 3 "a LongBench file mixing datasets" "$BIN" eval -m "$TINY" \
    --task "longbench:$SRC/tests/data/longbench/hotpotqa_mixed.jsonl" --ctx 256 --variants dense \
    && one_sentence "mixes datasets" "line 2 is qasper"

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
