#!/usr/bin/env bash
# test_pipeline.sh — pipeline parallelism end to end under mpirun --oversubscribe: 1, 2, 3 and 4
# ranks give bitwise the same tokens and logits (results' logits_fnv) as one rank, for dense and
# OmniKV, at batch 1 and 5, with planner and hand partitions (some splitting a filter group, so an
# index set crosses a rank boundary), 1 and 3 micro-batches, a window selector, over shared
# memory and over TCP, and on SmolLM2; plus placement (two ranks bound to different cores), the
# trace, the checking backend (cpu-strict, staged gathers) on 2 and 3 ranks, fill=synthetic on 3
# ranks, and the start-up errors (too many ranks, a bad partition, unavailable transports).
# Every run uses --set threads=1: the CPU kernels do not depend on the thread count, and fixing it
# keeps one rank and P ranks doing the same arithmetic beyond doubt.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SMOL=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
T=$(mktemp -d /tmp/okv_mpi_pipe.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn
FAILS=0
CHECKS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
check() {
    local what=$1
    shift
    CHECKS=$((CHECKS + 1))
    "$@" || fail "$what"
}
MPI=(mpirun --allow-run-as-root --oversubscribe)

# run_np NP OUT ARGS...: omnikv run under mpirun (NP = 0: without mpirun), stderr in OUT.err.
run_np() {
    local np=$1 out=$2
    shift 2
    local cmd=("$BIN" run "$@" -o "$out")
    if [ "$np" -gt 0 ]; then cmd=("${MPI[@]}" -np "$np" "${cmd[@]}"); fi
    CHECKS=$((CHECKS + 1))
    timeout 120 "${cmd[@]}" 2>"$out.err"
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "np $np $*: exit $rc; stderr: $(tail -c 800 "$out.err")"
        return 1
    fi
}
# same A B WHAT: every request has the same tokens and logits digest in both result files.
same() {
    CHECKS=$((CHECKS + 1))
    python3 - "$1" "$2" "$3" <<'EOF' || fail "$3: results differ (see above)"
import json, sys
def load(p):
    out = {}
    for r in map(json.loads, open(p)):
        assert "error" not in r, f"{p}: {r}"
        out[r["id"]] = (r["tokens"], r["logits_fnv"])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), f"{sys.argv[3]}: ids {sorted(a)} vs {sorted(b)}"
bad = [k for k in a if a[k] != b[k]]
for k in bad[:3]:
    print(f"  {k}: one rank {a[k]}\n  {' ' * len(str(k))}  here     {b[k]}", file=sys.stderr)
assert not bad, f"{sys.argv[3]}: {len(bad)} of {len(a)} requests differ"
n = sum(len(v[0]) for v in a.values())
print(f"ok: {sys.argv[3]}: {len(a)} requests, {n} tokens and their logits identical")
EOF
}

# differ A B WHY: some request's tokens differ between the two result files (else fail with WHY).
differ() {
    CHECKS=$((CHECKS + 1))
    python3 - "$1" "$2" <<'EOF' || fail "$3"
import json, sys
a, b = ({r["id"]: r["tokens"] for r in map(json.loads, open(p))} for p in sys.argv[1:3])
sys.exit(0 if a != b else 1)
EOF
}

TINY=$T/tiny8.gguf
"$BIN" gen-model --shape tiny --layers 8 -o "$TINY" 2>/dev/null || fail "gen-model"
cat >"$T/req.jsonl" <<'EOF'
{"id":"a","prompt":"Hello there, how are you doing today?","max_new_tokens":12}
{"id":"b","prompt":"The quick brown fox","max_new_tokens":9,"temperature":0.8,"top_p":0.9,"seed":3}
{"id":"c","prompt":"One two three four five six seven eight nine ten eleven twelve","max_new_tokens":15}
{"id":"d","prompt":"Lorem ipsum dolor sit amet","max_new_tokens":7,"temperature":1.0,"top_k":20}
{"id":"e","prompt":"A","max_new_tokens":20}
{"id":"f","prompt":"Some more text here to prefill in chunks of a few tokens each time around","max_new_tokens":11}
{"id":"g","prompt":"Short","max_new_tokens":3,"temperature":0.5}
EOF
BASE=(-m "$TINY" -f "$T/req.jsonl" --set threads=1 --set max_context_len=128 --set prefill_chunk=8
      --set ignore_eos=true --set logits_digest=true)
DENSE=(--set policy=dense)
# Filter layers 2 and 5 of 8 with W = 1: D D F W S F W S; k = 4 of prompts up to 60 tokens.
OMNI=(--set do_select_layers=2,5 --set num_of_selected_tokens=4)

# ---- one rank: the reference -------------------------------------------------------------------
for pol in dense omni; do
    for b in 1 5; do
        if [ $pol = dense ]; then P=("${DENSE[@]}"); else P=("${OMNI[@]}"); fi
        run_np 0 "$T/ref_${pol}_$b.jsonl" "${BASE[@]}" "${P[@]}" --set max_batch=$b
    done
done
same "$T/ref_dense_1.jsonl" "$T/ref_dense_5.jsonl" "one rank: batch 1 and batch 5 agree (dense)"
same "$T/ref_omni_1.jsonl" "$T/ref_omni_5.jsonl" "one rank: batch 1 and batch 5 agree (omnikv)"
run_np 0 "$T/local_mb3.jsonl" "${BASE[@]}" "${OMNI[@]}" --set max_batch=5 --micro-batches 3
same "$T/ref_omni_5.jsonl" "$T/local_mb3.jsonl" "one rank, 3 micro-batches"
differ "$T/ref_dense_5.jsonl" "$T/ref_omni_5.jsonl" \
    "k = 4 should change some tokens, or the omnikv cases test nothing beyond dense"

# ---- 1..4 ranks, planner partitions --------------------------------------------------------------
for np in 1 2 3 4; do
    for pol in dense omni; do
        for b in 1 5; do
            if [ $pol = dense ]; then P=("${DENSE[@]}"); else P=("${OMNI[@]}"); fi
            out=$T/np${np}_${pol}_$b.jsonl
            run_np $np "$out" "${BASE[@]}" "${P[@]}" --set max_batch=$b &&
                same "$T/ref_${pol}_$b.jsonl" "$out" "$np ranks, $pol, batch $b"
        done
    done
done

# ---- hand partitions splitting groups, micro-batch counts, a window selector ---------------------
OMNIKV_LOG=info run_np 2 "$T/hand2.jsonl" "${BASE[@]}" "${OMNI[@]}" --set max_batch=5 --stages 0-3,4-7 &&
    same "$T/ref_omni_5.jsonl" "$T/hand2.jsonl" "2 ranks, stages 0-3,4-7 (group 0 crosses)"
check "the start-up plan marks the crossing boundary" grep -Eq "^\[r0\] +1 +>4-7 +S F W S " "$T/hand2.jsonl.err"
run_np 3 "$T/hand3.jsonl" "${BASE[@]}" "${OMNI[@]}" --set max_batch=5 --stages 0-2,3-6,7 &&
    same "$T/ref_omni_5.jsonl" "$T/hand3.jsonl" "3 ranks, stages 0-2,3-6,7 (both groups cross)"
run_np 2 "$T/mb1.jsonl" "${BASE[@]}" "${OMNI[@]}" --set max_batch=5 --micro-batches 1 &&
    same "$T/ref_omni_5.jsonl" "$T/mb1.jsonl" "2 ranks, 1 micro-batch"
run_np 3 "$T/mb5.jsonl" "${BASE[@]}" "${OMNI[@]}" --set max_batch=5 --micro-batches 5 &&
    same "$T/ref_omni_5.jsonl" "$T/mb5.jsonl" "3 ranks, 5 micro-batches"
WIN=(--set do_select_layers=1,4 --set num_of_selected_tokens=5 --set selector_cls=uniform
     --set window_size=4 --set max_batch=5)
run_np 0 "$T/ref_win.jsonl" "${BASE[@]}" "${WIN[@]}"
run_np 4 "$T/win4.jsonl" "${BASE[@]}" "${WIN[@]}" --stages 0-1,2-3,4-5,6-7 &&
    same "$T/ref_win.jsonl" "$T/win4.jsonl" "4 ranks, uniform window selector"

# ---- the checking backend: every op gets backend memory, gathers staged (as on a GPU) ------------
STRICT=(--set backend=cpu-strict)
run_np 0 "$T/strict1.jsonl" "${BASE[@]}" "${OMNI[@]}" "${STRICT[@]}" --set max_batch=5 &&
    same "$T/ref_omni_5.jsonl" "$T/strict1.jsonl" "one rank, cpu-strict, omnikv, batch 5"
for b in 1 5; do
    run_np 2 "$T/strict2_$b.jsonl" "${BASE[@]}" "${OMNI[@]}" "${STRICT[@]}" --set max_batch=$b --stages 0-3,4-7 &&
        same "$T/ref_omni_$b.jsonl" "$T/strict2_$b.jsonl" "2 ranks, cpu-strict, omnikv, batch $b (group 0 crosses)"
done
run_np 3 "$T/strict3.jsonl" "${BASE[@]}" "${OMNI[@]}" "${STRICT[@]}" --set max_batch=5 --stages 0-2,3-6,7 &&
    same "$T/ref_omni_5.jsonl" "$T/strict3.jsonl" "3 ranks, cpu-strict, omnikv (both groups cross)"
run_np 3 "$T/strict3d.jsonl" "${BASE[@]}" "${DENSE[@]}" "${STRICT[@]}" --set max_batch=5 &&
    same "$T/ref_dense_5.jsonl" "$T/strict3d.jsonl" "3 ranks, cpu-strict, dense"

# ---- fill=synthetic: each stage generates its own layers' prompt K/V from (seed, layer, position)
SYN=(--set fill=synthetic --set max_batch=5)
run_np 0 "$T/syn1.jsonl" "${BASE[@]}" "${OMNI[@]}" "${SYN[@]}"
run_np 3 "$T/syn3.jsonl" "${BASE[@]}" "${OMNI[@]}" "${SYN[@]}" --stages 0-2,3-6,7 &&
    same "$T/syn1.jsonl" "$T/syn3.jsonl" "3 ranks, fill=synthetic, omnikv (both groups cross)"
differ "$T/ref_omni_5.jsonl" "$T/syn1.jsonl" \
    "fill=synthetic gave the prefilled tokens: the generated prompt K/V were not used"

# ---- TCP ----------------------------------------------------------------------------------------
MPI=(mpirun --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl tcp,self)
run_np 3 "$T/tcp3.jsonl" "${BASE[@]}" "${OMNI[@]}" --set max_batch=5 --stages 0-3,4-5,6-7 &&
    same "$T/ref_omni_5.jsonl" "$T/tcp3.jsonl" "TCP, 3 ranks, omnikv"
run_np 2 "$T/tcp2.jsonl" "${BASE[@]}" "${DENSE[@]}" --set max_batch=5 &&
    same "$T/ref_dense_5.jsonl" "$T/tcp2.jsonl" "TCP, 2 ranks, dense"
MPI=(mpirun --allow-run-as-root --oversubscribe)

# ---- placement and trace -------------------------------------------------------------------------
CHECKS=$((CHECKS + 1))
OMNIKV_LOG=info timeout 60 mpirun --allow-run-as-root -np 2 "$BIN" run "${BASE[@]}" "${OMNI[@]}" \
    --set max_batch=5 -o "$T/bind.jsonl" --trace "$T/trace.json" 2>"$T/bind.err" || fail "traced run"
python3 - "$T/bind.err" "$(nproc)" <<'EOF' || fail "placement"
import re, sys
log = open(sys.argv[1]).read()
cores = re.findall(r"rank (\d): layers .*?; cores (\S+)( \(bound\))?,", log)
assert len(cores) == 2, f"two rank lines expected in the log:\n{log}"
if int(sys.argv[2]) >= 2:
    assert all(c[2] for c in cores), f"two ranks on {sys.argv[2]} cores must be bound: {cores}"
    assert cores[0][1] != cores[1][1], f"ranks on one node share no cores: {cores}"
print("ok: placement:", ", ".join(f"rank {r} on cores {c}" for r, c, _ in cores))
EOF
same "$T/ref_omni_5.jsonl" "$T/bind.jsonl" "2 bound ranks with a trace"
python3 - "$T/trace.json" <<'EOF' || fail "trace"
import json, sys
t = json.load(open(sys.argv[1]))
ev = t["traceEvents"]
names = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
assert sorted(names) == [0, 1], names
for pid in (0, 1):
    mine = [e for e in ev if e["ph"] == "X" and e["pid"] == pid]
    kinds = {e["name"] for e in mine}
    assert {"decode", "prefill"} <= kinds, f"rank {pid}: {kinds}"
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in mine)
    dec = [e for e in mine if e["name"] == "decode"]
    assert all(e["args"]["mb"] in (0, 1) for e in dec), "two micro-batches"
assert any(e["name"] == "head+sample" for e in ev if e.get("pid") == 1), "the last stage samples"
print(f"ok: trace with {len(ev)} events on 2 ranks")
EOF

# ---- start-up errors -----------------------------------------------------------------------------
# expect_fail NP WHAT TEXT ARGS...: the run fails (non-zero), and stderr holds TEXT.
expect_fail() {
    local np=$1 what=$2 text=$3
    shift 3
    CHECKS=$((CHECKS + 1))
    timeout 60 "${MPI[@]}" -np "$np" "$BIN" run "$@" -o "$T/x.jsonl" >"$T/x.out" 2>"$T/x.err"
    local rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
        fail "$what: exit $rc, want a failure"
    elif ! grep -q -- "$text" "$T/x.err"; then
        fail "$what: stderr lacks '$text': $(tail -c 600 "$T/x.err")"
    fi
}
TINY4=$T/tiny4.gguf
"$BIN" gen-model --shape tiny -o "$TINY4" 2>/dev/null
expect_fail 5 "more ranks than layers" "4 layers over 5 ranks" -m "$TINY4" -f "$T/req.jsonl"
expect_fail 2 "a partition for 3 ranks on 2" "names 3 stages, but 2 ranks" "${BASE[@]}" --stages 0-1,2-3,4-7
expect_fail 2 "a partition past the model" "covers layers 0-8" "${BASE[@]}" --stages 0-3,4-8
expect_fail 2 "more micro-batches than sequences" "micro_batches=3 exceeds max_batch=2" "${BASE[@]}" \
    --set max_batch=2 --micro-batches 3
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    expect_fail 2 "nccl without GPUs" "transport nccl" "${BASE[@]}" --transport nccl
    expect_fail 2 "mpi-cuda without GPUs" "transport mpi-cuda" "${BASE[@]}" --transport mpi-cuda
fi

# ---- the real model ------------------------------------------------------------------------------
if [ ! -f "$SMOL" ]; then
    fail "the default model $SMOL is missing; run scripts/setup.sh --test"
else
    cat >"$T/smol.jsonl" <<'EOF'
{"id":"s1","prompt":"The capital of France is","max_new_tokens":8}
{"id":"s2","prompt":"List three colours: red,","max_new_tokens":6,"temperature":0.7,"seed":11}
{"id":"s3","prompt":"def add(a, b):\n    return","max_new_tokens":8}
EOF
    SB=(-m "$SMOL" -f "$T/smol.jsonl" --set threads=1 --set max_context_len=256 --set max_batch=3
        --set ignore_eos=true --set logits_digest=true --set do_select_layers=4,12,20
        --set num_of_selected_tokens=3)
    run_np 0 "$T/smol_ref.jsonl" "${SB[@]}"
    run_np 3 "$T/smol3.jsonl" "${SB[@]}" --stages 0-6,7-15,16-29 &&
        same "$T/smol_ref.jsonl" "$T/smol3.jsonl" "SmolLM2, 3 ranks, groups split at 7 and 16"
    run_np 2 "$T/smol2s.jsonl" "${SB[@]}" --set backend=cpu-strict --stages 0-9,10-29 &&
        same "$T/smol_ref.jsonl" "$T/smol2s.jsonl" "SmolLM2, 2 ranks, cpu-strict"
fi

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
