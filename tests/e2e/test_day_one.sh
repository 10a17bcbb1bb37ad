#!/usr/bin/env bash
# test_day_one.sh — what a new user meets first, on SmolLM2 and generated models: `run -p` streams
# its text, per-request prefill figures and metrics.steps, the thread count and where it came
# from, --trace checks and names requests, plan's presets, device table and fit verdict, and the
# small commands (--version, inspect -m, eval --task lists, gen-model's BOS/EOS). Needs OMNIKV_BIN,
# OMNIKV_SRC, python3 and the model in OMNIKV_CACHE.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:?OMNIKV_SRC must name the omnikv checkout}
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SMOL=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$SMOL" ] || { echo "FAIL: no model at $SMOL; run scripts/setup.sh"; exit 1; }
T=$(mktemp -d /tmp/okv_e2e_day1.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn
. "$(dirname "$0")/checks.sh"
ok() { CHECKS=$((CHECKS + 1)); echo "ok: $*"; }

# ---- run -p streams: stdout receives the text in several writes while the model generates, and
# the bytes are the --json result's text and a newline. Before streaming the text went out in one
# write at the end, so the first read held all of it.
STREAM_ARGS=(run -m "$SMOL" -p "Write a long story about a dragon." -n 48 --set ignore_eos=true
             --set threads=1)
if expect_exit 0 "run -p --json" "$BIN" "${STREAM_ARGS[@]}" --json; then
    cp "$T/out" "$T/json"
    python3 - "$BIN" "$T/json" "${STREAM_ARGS[@]}" <<'PY' && ok "run -p streams" || fail "run -p streams"
import json, os, subprocess, sys
bin_, ref = sys.argv[1], json.load(open(sys.argv[2]))
p = subprocess.Popen([bin_] + sys.argv[3:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
reads = []
while True:
    b = os.read(p.stdout.fileno(), 1 << 16)
    if not b:
        break
    reads.append(b)
rc = p.wait()
out = b"".join(reads)
want = ref["text"].encode() + b"\n"
print(f"stream: {len(reads)} reads, first {len(reads[0]) if reads else 0} of {len(out)} bytes, exit {rc}")
assert rc == 0
assert out == want, (out, want)
assert len(reads[0]) < len(out), "the first read already held the whole text: nothing was streamed"
PY
fi

# ---- prefill figures: three requests admitted together prefill one after another on one rank,
# so their own prefill times add up to no more than the batch's wall time; before, a request's
# time also held the prefills queued after its own. metrics.steps counts the decode steps the
# request took part in: a whole number, its tokens less the one the prefill gave.
python3 - "$T/req.jsonl" <<'PY'
import json, sys
words = " ".join(f"item{i} is the colour {i % 7}." for i in range(70))
with open(sys.argv[1], "w") as f:
    for i, n in enumerate([4, 7, 9]):
        f.write(json.dumps({"id": f"r{i}", "prompt": words, "max_new_tokens": n, "ignore_eos": True}) + "\n")
PY
if expect_exit 0 "run -f three requests" env OMNIKV_LOG=info "$BIN" run -m "$SMOL" -f "$T/req.jsonl" \
    -o "$T/res.jsonl" --set max_batch=3 --set threads=1; then
    python3 - "$T/res.jsonl" "$T/err" <<'PY' && ok "prefill times and steps" || fail "prefill times and steps"
import json, re, sys
res = [json.loads(l) for l in open(sys.argv[1])]
log = open(sys.argv[2]).read()
pre = {m.group(1): float(m.group(2)) for m in re.finditer(r"request (\S+): \d+ prompt tokens, prefill [0-9.]+ tok/s \(([0-9.]+) ms\)", log)}
wall = float(re.search(r"served 3 requests .* in ([0-9.]+) s", log).group(1)) * 1e3
print(f"prefill ms {pre}, sum {sum(pre.values()):.0f}, wall {wall:.0f} ms")
assert len(pre) == 3, log
assert sum(pre.values()) <= wall + 100, "prefill times overlap: one request's holds another's"
for r in res:
    st = r["metrics"]["steps"]
    print(r["id"], "tokens", len(r["tokens"]), "steps", st)
    assert isinstance(st, int) and st == len(r["tokens"]) - 1, r["metrics"]
PY
fi

# ---- threads: -t, then the run config, then OMP_NUM_THREADS, then the cores granted to the
# process (taskset narrows them as a Slurm or mpirun binding does); one info line says which.
threads_line() { # threads_line WANT DESCRIPTION ENV... -- ARGS...
    local want=$1 what=$2
    shift 2
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    if expect_exit 0 "$what" env -u OMP_NUM_THREADS OMNIKV_LOG=info "${envs[@]}" "$@"; then
        if grep -q "threads $want" "$T/err"; then ok "$what: $(grep -o "threads $want.*" "$T/err")"
        else fail "$what: no 'threads $want' line in: $(grep -i thread "$T/err")"; fi
    fi
}
TINY_RUN=(run -m "$SMOL" -p "Hi" -n 2)
threads_line "1 (from OMP_NUM_THREADS)" "OMP_NUM_THREADS" OMP_NUM_THREADS=1 -- "$BIN" "${TINY_RUN[@]}"
threads_line "2 (from -t" "-t over OMP_NUM_THREADS" OMP_NUM_THREADS=1 -- "$BIN" "${TINY_RUN[@]}" -t 2
threads_line "1 (from -t" "--threads" -- "$BIN" "${TINY_RUN[@]}" --threads 1
threads_line "1 (from OMNIKV_THREADS)" "run-config key over OMP_NUM_THREADS" OMP_NUM_THREADS=2 OMNIKV_THREADS=1 -- "$BIN" "${TINY_RUN[@]}"
if command -v taskset >/dev/null; then
    threads_line "1 (the 1 core" "affinity mask" -- taskset -c 0 "$BIN" "${TINY_RUN[@]}"
fi
threads_line "1 (from OMP_NUM_THREADS)" "bench honours OMP_NUM_THREADS" OMP_NUM_THREADS=1 -- \
    "$BIN" bench -m "$SMOL" --ctx 64 --gen 2 --runs 1 --warmup 0 --variants dense --json
if [ -f "$T/out" ] && python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["threads"] == 1' "$T/out"; then
    ok "bench reports the threads it used"
else fail "bench's JSON does not report 1 thread"; fi

# ---- the whole run config is a debug line, not an info one.
if expect_exit 0 "run at info" env OMNIKV_LOG=info "$BIN" "${TINY_RUN[@]}"; then
    if grep -q "run config:" "$T/err"; then fail "the run config is logged at info level"
    else ok "no run-config JSON at info level"; fi
fi
if expect_exit 0 "run at debug" env OMNIKV_LOG=debug "$BIN" "${TINY_RUN[@]}"; then
    grep -q "run config: {" "$T/err" && ok "run config at debug level" || fail "no run config at debug"
fi

# ---- --version names the version and the commit (the checkout's, when it is a git checkout).
if expect_exit 0 "--version" "$BIN" --version; then
    # The commit is the one the build was configured from: a commit of this checkout.
    commit=$(sed -nE 's/^omnikv [0-9]+\.[0-9]+\.[0-9]+ \(commit ([0-9a-f]+)(-dirty)?\)$/\1/p' "$T/out")
    if [ -n "$commit" ] && { ! git -C "$SRC" rev-parse 2>/dev/null || git -C "$SRC" cat-file -e "$commit^{commit}"; }; then
        ok "--version: $(cat "$T/out")"
    else fail "--version printed '$(cat "$T/out")', want the version and a commit of $SRC"; fi
fi

# ---- inspect takes -m as every other command does, and says the same as without it.
if expect_exit 0 "inspect -m" "$BIN" inspect -m "$SMOL"; then
    cp "$T/out" "$T/inspect_m"
    expect_exit 0 "inspect MODEL" "$BIN" inspect "$SMOL" && cmp -s "$T/out" "$T/inspect_m" \
        && ok "inspect -m" || fail "inspect -m differs from inspect MODEL"
fi

# ---- eval without -c: the model's preset (SmolLM2's configs/smollm2-135m.json) gives the filter
# layers; with no preset to find, the dense variant runs alone and a line says so. --task takes a
# list, each task scored in turn into one results file.
EVAL=(eval -m "$SMOL" --ctx 256 --count 1 --variants dense,0.2 --max-new 8 -t 1)
if expect_exit 0 "eval --task a,b without -c" env OMNIKV_LOG=info "$BIN" "${EVAL[@]}" \
    --task passkey,needle-single -o "$T/eval.jsonl"; then
    grep -q "smollm2-135m.json" "$T/err" && ok "eval uses the model's preset" \
        || fail "eval without -c did not name the preset: $(grep eval "$T/err" | head -3)"
    python3 - "$T/eval.jsonl" <<'PY' && ok "eval --task list" || fail "eval --task list"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
got = sorted({(r["task"], r["variant"]) for r in recs})
print("eval records:", got)
assert got == [("needle-single", "dense"), ("needle-single", "k=0.2"), ("passkey", "dense"), ("passkey", "k=0.2")], got
PY
fi
if expect_exit 0 "eval without a preset" env OMNIKV_CONFIGS="$T" "$BIN" "${EVAL[@]}" --task passkey \
    -o "$T/eval_dense.jsonl"; then
    grep -q "dense variant only" "$T/err" && ok "eval says it runs dense only" || fail "no dense-only line"
    python3 -c 'import json,sys; v={json.loads(l)["variant"] for l in open(sys.argv[1])}; assert v=={"dense"}, v' \
        "$T/eval_dense.jsonl" && ok "eval without filter layers ran dense" || fail "eval without a preset ran $(cat "$T/eval_dense.jsonl" | head -c 300)"
fi

# ---- gen-model: the BOS and EOS ids are tokens of the vocabulary, and the model generates text.
if expect_exit 0 "gen-model tiny" "$BIN" gen-model --shape tiny -o "$T/tiny.gguf"; then
    if expect_exit 0 "inspect tiny" "$BIN" inspect "$T/tiny.gguf"; then
        python3 - "$T/out" <<'PY' && ok "gen-model BOS/EOS in the vocabulary" || fail "gen-model BOS/EOS"
import re, sys
t = open(sys.argv[1]).read()
n, bos, eos = map(int, re.search(r"tokenizer\s+(\d+) tokens, bos (-?\d+), eos (-?\d+)", t).groups())
print(f"vocabulary {n}, bos {bos}, eos {eos}")
assert 0 <= bos < n and 0 <= eos < n
PY
    fi
    expect_exit 0 "run on gen-model" "$BIN" run -m "$T/tiny.gguf" -p "hello" -n 8 --json && python3 -c '
import json, sys; r = json.load(open(sys.argv[1])); assert r["text"] and len(r["tokens"]) == 8, r' "$T/out" \
        && ok "gen-model's model generates text" || fail "gen-model's model generated no text"
fi

# ---- plan: without -c it plans the model's preset and says so; --gpu takes a known device's
# figures, so the step time is the device's (70B f16 weights, 141e9 bytes, over 3.35 TB/s give at
# least 42 ms a step; this machine's host memory gave seconds); a plan that does not fit exits 1
# and names changes that fit, and the first of them is checked by planning it.
if expect_exit 0 "plan without -c" "$BIN" plan -m "$SMOL" --ctx 4096 --ranks 2 --set plan_cost=bytes --bw 10G; then
    grep -Eq "^policy: omnikv .*preset .*smollm2-135m.json" "$T/out" && ok "plan uses the model's preset" \
        || fail "plan without -c: $(grep -i policy "$T/out")"
fi
if expect_exit 0 "plan --gpu H100" "$BIN" plan --model llama3.1-70b --ctx 131072 --ranks 8 --gpu H100; then
    python3 - "$T/out" <<'PY' && ok "plan's step time comes from the H100's bandwidth" || fail "plan --gpu H100 step time"
import re, sys
t = open(sys.argv[1]).read()
ms = float(re.search(r"predicted decode: ([0-9.]+) ms per micro-batch step", t).group(1))
print(f"70B at 128K on 8 x H100: {ms} ms per step (weights alone: {141e9 / 3.35e12 * 1e3:.1f} ms)")
assert "device: H100" in t and 141e9 / 3.35e12 * 1e3 <= ms <= 2 * 141e9 / 3.35e12 * 1e3, t
PY
fi
expect_exit 2 "plan --gpu-mem without a bandwidth" "$BIN" plan --model llama3-8b --ctx 4096 --ranks 2 --gpu-mem 80G \
    && grep -q "gpu NAME" "$T/err" && ok "plan --gpu-mem needs --gpu or --bw"
expect_exit 2 "plan --gpu unknown" "$BIN" plan --model llama3-8b --ctx 4096 --ranks 2 --gpu X9000 \
    && grep -q "H100" "$T/err" && ok "an unknown --gpu lists the known ones"
if expect_exit 1 "plan that does not fit" "$BIN" plan --model llama3-8b --set policy=dense --ctx 1000000 \
    --ranks 1 --gpu H100; then
    ranks=$(grep -Eo -- "--ranks [0-9]+" "$T/out" | head -1 | cut -d' ' -f2)
    if grep -q "^fits: no" "$T/out" && [ -n "$ranks" ]; then
        expect_exit 0 "the suggested rank count" "$BIN" plan --model llama3-8b --set policy=dense --ctx 1000000 \
            --ranks "$ranks" --gpu H100 && grep -q "^fits: yes" "$T/out" && ok "plan suggests --ranks $ranks, which fits"
    else
        fail "plan that does not fit suggests no rank count: $(tail -5 "$T/out")"
    fi
fi

# ---- --trace: an unwritable path fails at start-up, before any result is written (it failed a
# finished run at the end); one rank writes a trace too; request spans carry the ids (a quote in
# one) and each prompt's events name their request, on every rank of a pipeline.
printf '%s\n' '{"id":"a","prompt":"Hello there","max_new_tokens":3}' \
    '{"id":"b\"q","prompt":"Once upon a time","max_new_tokens":5}' >"$T/tr_req.jsonl"
if expect_exit 3 "--trace to a missing folder" "$BIN" run -m "$SMOL" -f "$T/tr_req.jsonl" -o "$T/tr_res.jsonl" \
    --trace "$T/no/such/dir/t.json" -t 1; then
    if grep -q "trace" "$T/err" && [ ! -e "$T/tr_res.jsonl" ]; then ok "an unwritable --trace fails before serving"
    else fail "unwritable --trace: results written or no sentence: $(tail -2 "$T/err")"; fi
fi
check_trace() { # check_trace FILE RANKS DESCRIPTION
    python3 - "$1" "$2" <<'PY' && ok "$3" || fail "$3"
import json, sys
d = json.load(open(sys.argv[1]))
ranks = int(sys.argv[2])
ev = d["traceEvents"]
reqs = {e["name"]: e for e in ev if e.get("cat") == "request"}
assert set(reqs) == {"a", 'b"q'}, reqs
pids = {e["pid"] for e in ev if e.get("ph") == "X"}
assert pids == set(range(ranks)), pids
for r in range(ranks):
    named = {e["args"].get("request") for e in ev if e.get("pid") == r and e.get("name") == "prefill"}
    assert named == {"a", 'b"q'}, (r, named)
print(f"{ranks} rank(s): requests {sorted(reqs)}, prefill events named on every rank")
PY
}
if expect_exit 0 "--trace on one rank" "$BIN" run -m "$SMOL" -f "$T/tr_req.jsonl" -o "$T/tr_res.jsonl" \
    --set max_batch=2 --trace "$T/trace1.json" -t 1; then
    check_trace "$T/trace1.json" 1 "one rank writes a trace naming its requests"
fi
if command -v mpirun >/dev/null; then
    if expect_exit 0 "--trace on two ranks" mpirun -np 2 --oversubscribe "$BIN" run -m "$SMOL" -f "$T/tr_req.jsonl" \
        -o "$T/tr_res2.jsonl" --set max_batch=2 --trace "$T/trace2.json" -t 1; then
        check_trace "$T/trace2.json" 2 "a pipeline's trace names requests on every rank"
    fi
fi

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
