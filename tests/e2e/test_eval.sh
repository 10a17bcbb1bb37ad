#!/usr/bin/env bash
# test_eval.sh — `omnikv eval` end to end on a generated tiny model (whose answers are noise, so
# this checks the machinery, not accuracy): every generated task over a ctx x depth x variant
# grid (record count, fields, prompt lengths, depths, budgets, the summary and by-depth tables),
# an OmniKV budget above the prompt length decoding exactly as dense from the shared prefill,
# --max-new, the chat template, per-variant selection settings, --resume after an interruption, LongBench and InfiniteBench files,
# and usage / input errors.
# Needs OMNIKV_BIN, OMNIKV_SRC and python3.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:?OMNIKV_SRC must name the omnikv checkout}
T=$(mktemp -d /tmp/okv_e2e_eval.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
# expect_exit CODE DESCRIPTION COMMAND...: stdout/stderr in $T/out, $T/err.
expect_exit() {
    local want=$1 what=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    [ "$got" -eq "$want" ] || { fail "$what: exit $got, want $want; stderr: $(tail -c 400 "$T/err")"; return 1; }
}
py() { python3 -c "$@" || fail "python check failed (see above)"; }

TINY=$T/tiny.gguf
"$BIN" gen-model --shape tiny -o "$TINY" 2>/dev/null || { echo "FAIL: gen-model"; exit 1; }
# One thread: these runs are tiny, and two threads stall badly when the machine is busy.
SET=(--set do_select_layers=1 --set threads=1)

# ---- every generated task over a small grid ------------------------------------------------------
for task in passkey needle-single needle-multikey needle-multivalue needle-multiquery vartrack 2stage; do
    expect_exit 0 "$task grid" "$BIN" eval -m "$TINY" "${SET[@]}" --task "$task" --ctx 1024,2048 \
        --depth 0,0.5,1 --count 2 --variants dense,omnikv:64,0.5,100000 -o "$T/$task.jsonl" || continue
    cp "$T/out" "$T/$task.txt"
    py '
import json, sys
task, path, table = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().splitlines()
rows = [json.loads(l) for l in open(path)]
assert len(rows) == 2 * 3 * 2 * 4, f"{task}: {len(rows)} records, want 48 (ctx x depth x count x variant)"
by = {}
for r in rows:
    for k in ("task", "dataset", "id", "ctx", "prompt_tokens", "depth", "needle_at", "variant", "policy",
              "budget", "answers", "answer", "output", "score", "new_tokens", "prefill_ms"):
        assert k in r, f"{task}: record lacks {k}: {r}"
    assert r["task"] == task and r["dataset"] == task, r
    n, ctx = r["prompt_tokens"], r["ctx"]
    assert 0.98 * ctx <= n <= ctx, f"{task}: {n} tokens for ctx {ctx}"
    d, v, k = r["depth"], r["variant"], r["budget"]
    assert d in (0.0, 1.0) or abs(d - 0.5) < 0.02, f"{task}: depth {d}"
    want_k = {"dense": n, "k=64": 64, "k=0.5": n // 2, "k=100000": 100000}[v]
    assert k == want_k, f"{task}: {v} budget {k}, want {want_k}"
    assert r["policy"] == ("dense" if r["variant"] == "dense" else "omnikv"), r
    assert 0 <= r["score"] <= 100 and r["new_tokens"] >= 0, r
    by.setdefault(r["id"], {})[r["variant"]] = r["output"]
# k >= N keeps every prompt row: the same tokens as dense from the same prefill.
for sid, v in by.items():
    big, dense = v["k=100000"], v["dense"]
    assert big == dense, f"{task} {sid}: k=100000 gave {big!r}, dense {dense!r}"
rows_main = [l.split() for l in table if l.startswith(task + " ")]
assert [r[1] for r in rows_main] == ["1024", "2048"] and all(len(r) == 6 for r in rows_main), table
assert "by depth:" in table and sum(1 for l in table if l.startswith("  ") and task in l) == 6, table
' "$task" "$T/$task.jsonl" "$T/$task.txt"
done

# ---- decode cap and the chat template -------------------------------------------------------------
expect_exit 0 "--max-new" "$BIN" eval -m "$TINY" "${SET[@]}" --task needle-multivalue --ctx 1024 --count 2 \
    --variants dense --max-new 3 -o "$T/cap.jsonl" &&
    py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows and all(r["new_tokens"] <= 3 for r in rows), [r["new_tokens"] for r in rows]' "$T/cap.jsonl"
expect_exit 0 "--chat" "$BIN" eval -m "$TINY" "${SET[@]}" --task passkey --ctx 1024 --count 2 --variants dense \
    --chat -o "$T/chat.jsonl" &&
    py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["chat"] for r in rows) and all(980 <= r["prompt_tokens"] <= 1024 for r in rows), rows' "$T/chat.jsonl"

# ---- per-variant selection settings equal the same settings for the whole run -----------------------
VS=(-m "$TINY" "${SET[@]}" --task needle-multikey --ctx 1024 --count 2)
if expect_exit 0 "per-variant settings" "$BIN" eval "${VS[@]}" -o "$T/pv.jsonl" \
        --variants "4/keep_last=96/selector_cls=softmax_before_last,4/keep_first=32,4,4/min_selected_tokens=48" &&
    expect_exit 0 "run-level keep_last" "$BIN" eval "${VS[@]}" -o "$T/rl1.jsonl" --variants 4 \
        --set keep_last=96 --set selector_cls=softmax_before_last &&
    expect_exit 0 "run-level keep_first" "$BIN" eval "${VS[@]}" -o "$T/rl2.jsonl" --variants 4 --set keep_first=32 &&
    expect_exit 0 "run-level plain" "$BIN" eval "${VS[@]}" -o "$T/rl3.jsonl" --variants 4 &&
    expect_exit 0 "a count of 48" "$BIN" eval "${VS[@]}" -o "$T/rl4.jsonl" --variants 48; then
    py '
import json, sys
key = lambda r: (r["sample"], r["output"], r["score"], r["new_tokens"])
pv = [json.loads(l) for l in open(sys.argv[1])]
for i, f in enumerate(sys.argv[2:]):
    want = [key(json.loads(l)) for l in open(f)]
    got = [key(r) for r in pv[i::4]]
    assert got == want, (f, got, want)
assert pv[0]["variant"] == "k=4/keep_last=96/selector_cls=softmax_before_last", pv[0]["variant"]
# min_selected_tokens=48 raises the count 4 to 48: the same records as a plain 48
assert all(r["budget"] == 48 for r in pv[3::4]), [r["budget"] for r in pv[3::4]]' \
        "$T/pv.jsonl" "$T/rl1.jsonl" "$T/rl2.jsonl" "$T/rl3.jsonl" "$T/rl4.jsonl"
fi
expect_exit 2 "a variant setting a run-wide key" "$BIN" eval "${VS[@]}" --variants "4/threads=2"
expect_exit 2 "a variant with a window selector" "$BIN" eval "${VS[@]}" --variants "4/selector_cls=exp"
expect_exit 2 "a variant with a bad keep_first" "$BIN" eval "${VS[@]}" --variants "4/keep_first=-3"

# ---- --resume: an interrupted grid continues to the same records and table -------------------------
RES=(-m "$TINY" "${SET[@]}" --task needle-multikey --ctx 1024,2048 --depth 0,1 --count 2 --variants dense,0.5)
if expect_exit 0 "full grid" "$BIN" eval "${RES[@]}" -o "$T/full.jsonl"; then
    cp "$T/out" "$T/full.txt"
    head -n 9 "$T/full.jsonl" >"$T/part.jsonl" # 4 whole samples and half of the fifth
    expect_exit 0 "resumed grid" "$BIN" eval "${RES[@]}" -o "$T/part.jsonl" --resume &&
        { cmp -s "$T/out" "$T/full.txt" || fail "resume: the summary differs from the uninterrupted run"; }
    py '
import json, sys
strip = lambda l: json.dumps({k: v for k, v in json.loads(l).items() if not k.endswith("_ms") and "ms_per" not in k}, sort_keys=True)
a = sorted(map(strip, open(sys.argv[1])))
b = sorted(map(strip, open(sys.argv[2])))
assert len(a) == 16 and a == b, (len(a), len(b))' "$T/full.jsonl" "$T/part.jsonl"
fi
expect_exit 2 "--resume without -o" "$BIN" eval -m "$TINY" --task passkey --resume

# ---- benchmark files ------------------------------------------------------------------------------
expect_exit 0 "longbench file" "$BIN" eval -m "$TINY" "${SET[@]}" --task "longbench:$SRC/tests/data/longbench/hotpotqa.jsonl" \
    --ctx 64,4096 --variants dense --max-new 4 -o "$T/lb.jsonl" &&
    py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4 and {r["id"] for r in rows} == {"hp-1", "hp-2"}, rows
assert all(r["dataset"] == "hotpotqa" and r["chat"] for r in rows), rows
short = [r for r in rows if r["ctx"] == 64]
assert all(r["prompt_tokens"] <= 64 + 40 for r in short), [r["prompt_tokens"] for r in short]
assert [r["answers"] for r in rows if r["id"] == "hp-2"][0] == ["William Shakespeare", "Shakespeare"]
' "$T/lb.jsonl"
grep -Eq '^hotpotqa +64 ' "$T/out" || fail "longbench: no summary row named after the dataset: $(cat "$T/out")"
expect_exit 0 "longbench few-shot stays plain" "$BIN" eval -m "$TINY" "${SET[@]}" \
    --task "longbench:$SRC/tests/data/longbench/trec_e.jsonl" --ctx 4096 --variants dense --max-new 2 -o "$T/trec.jsonl" &&
    py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1 and rows[0]["chat"] is False and rows[0]["dataset"] == "trec", rows' "$T/trec.jsonl"
expect_exit 0 "infinitebench file" "$BIN" eval -m "$TINY" "${SET[@]}" --task "infinitebench:$SRC/tests/data/infinitebench/kv_retrieval.jsonl" \
    --ctx 4096 --variants dense --no-chat -o "$T/ib.jsonl" &&
    py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1 and rows[0]["answers"] == ["31e0"] and rows[0]["new_tokens"] <= 50 and not rows[0]["chat"], rows' "$T/ib.jsonl"

# ---- errors ---------------------------------------------------------------------------------------
expect_exit 2 "unknown task" "$BIN" eval -m "$TINY" --task nosuch && grep -q "needle-multikey" "$T/err" ||
    fail "unknown task: the message should list the tasks"
expect_exit 2 "bad variant" "$BIN" eval -m "$TINY" --task passkey --variants dense,abc
# No filter layers and no preset for the tiny shape: the dense variant runs alone, and a line says
# so and names do_select_layers.
expect_exit 0 "omnikv variants without filter layers" "$BIN" eval -m "$TINY" --task passkey --ctx 1024 --variants 0.5
grep -q "dense variant only.*do_select_layers" "$T/err" || fail "no filter layers: the line should say dense only and name do_select_layers"
grep -Eq "ctx +dense +\(mean" "$T/out" || fail "no filter layers: the summary should hold the dense column alone"
expect_exit 2 "context too short for the task" "$BIN" eval -m "$TINY" --task needle-multiquery --ctx 40 --variants dense
expect_exit 3 "missing benchmark file" "$BIN" eval -m "$TINY" --task longbench:$T/none.jsonl --variants dense
# A bad record gets an error record and the rest are scored, as `run` does: exit 1.
expect_exit 1 "bad benchmark record" "$BIN" eval -m "$TINY" \
    --task "longbench:$SRC/tests/data/longbench/bad_missing_answers.jsonl" --variants dense
grep -q "line 2" "$T/err" || fail "a bad record's message should give its line: $(cat "$T/err")"
expect_exit 2 "unnamed InfiniteBench file" "$BIN" eval -m "$TINY" \
    --task "infinitebench:$SRC/tests/data/longbench/hotpotqa.jsonl" --variants dense

[ "$FAILS" -eq 0 ] && echo "eval e2e: all checks passed" || echo "eval e2e: $FAILS check(s) failed"
exit $((FAILS > 0))
