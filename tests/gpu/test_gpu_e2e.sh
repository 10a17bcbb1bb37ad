#!/usr/bin/env bash
# test_gpu_e2e.sh — the CUDA backend end to end on a generated SmolLM2-shaped model (f16, random
# weights; OMNIKV_GPU_SMOL names one already made): greedy tokens with backend=cuda against
# backend=cpu on the same machine, dense and OmniKV (k = 64 of prompts up to ~1000 tokens, so
# selection matters); OmniKV with k >= N against dense on the GPU, bitwise (tokens and
# logits_fnv); `mpirun -np 2` on one GPU (host-staged MPI transport) against one rank, bitwise.
# The CLI exposes no logits, so the near-tie rule is on tokens: a sequence may leave the CPU's
# only after MIN_AGREE (8) equal tokens, where a top-2 near-tie can flip one f32 rounding apart.
# Exits 77 (skipped) where nvidia-smi lists no GPU or the binary cannot run backend=cuda.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:?OMNIKV_SRC must name the omnikv checkout}
MIN_AGREE=${MIN_AGREE:-8}
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "skip: nvidia-smi -L lists no GPU"
    exit 77
fi
T=$(mktemp -d /tmp/okv_gpu_e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=${OMNIKV_LOG:-warn}
FAILS=0
CHECKS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

MODEL=${OMNIKV_GPU_SMOL:-$T/smol.gguf}
if [ ! -s "$MODEL" ] && ! "$BIN" gen-model --shape smollm2-135m -o "$MODEL" 2>"$T/gen.err"; then
    echo "FAIL: gen-model --shape smollm2-135m: $(tail -n 1 "$T/gen.err")"
    exit 1
fi
# A build without CUDA refuses backend=cuda as a configuration error (exit 2): skip, and say why.
echo '{"id":"probe","prompt":"Hello","max_new_tokens":1}' >"$T/probe_req.jsonl"
"$BIN" run -m "$MODEL" -f "$T/probe_req.jsonl" --set backend=cuda -o "$T/probe.jsonl" \
    >/dev/null 2>"$T/probe.err"
rc=$?
if [ $rc -eq 2 ]; then
    echo "skip: this omnikv does not run backend=cuda: $(tail -n 1 "$T/probe.err")"
    exit 77
elif [ $rc -ne 0 ]; then
    echo "FAIL: a one-token run with backend=cuda exits $rc: $(tail -n 5 "$T/probe.err")"
    exit 1
fi

LONG=$(python3 -c "
import random
r = random.Random(7)
words = 'the river town spring water summer children bridge family stories old valley first people'.split()
print(' '.join(r.choice(words) for _ in range(350)))")
cat >"$T/req.jsonl" <<EOF
{"id":"short","prompt":"The capital of France is","max_new_tokens":24}
{"id":"code","prompt":"def add(a, b):\n    return","max_new_tokens":24}
{"id":"mid","prompt":"Once upon a time in a small village by the sea, there lived an old fisherman who","max_new_tokens":24}
{"id":"long","prompt":"$LONG","max_new_tokens":24}
EOF
BASE=(-m "$MODEL" -f "$T/req.jsonl" --set ignore_eos=true --set logits_digest=true
      --set max_context_len=2048 --set max_batch=4)
OMNI=(-c "$SRC/configs/smollm2-135m.json" --set real_offload=false)

# run OUT ARGS...: omnikv run (under mpirun when MPIRUN_NP is set), stderr in OUT.err.
run() {
    local out=$1
    shift
    local cmd=("$BIN" run "${BASE[@]}" "$@" -o "$out")
    [ -z "${MPIRUN_NP:-}" ] || cmd=(mpirun --allow-run-as-root -np "$MPIRUN_NP" "${cmd[@]}")
    CHECKS=$((CHECKS + 1))
    timeout 120 "${cmd[@]}" 2>"$out.err"
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "${MPIRUN_NP:+mpirun -np $MPIRUN_NP }$*: exit $rc; stderr: $(tail -c 800 "$out.err")"
        return 1
    fi
}
# compare MODE A B WHAT: MODE bitwise (tokens and logits digests equal) or greedy (tokens equal,
# or first different after MIN_AGREE equal ones).
compare() {
    CHECKS=$((CHECKS + 1))
    python3 - "$@" "$MIN_AGREE" <<'EOF' || fail "$4 (see above)"
import json, sys
mode, pa, pb, what, min_agree = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def load(p):
    out = {}
    for r in map(json.loads, open(p)):
        assert "error" not in r, f"{what}: {p}: {r}"
        out[r["id"]] = r
    return out
a, b = load(pa), load(pb)
assert a.keys() == b.keys(), f"{what}: ids {sorted(a)} vs {sorted(b)}"
bad, notes, n = [], [], 0
for k in sorted(a):
    ta, tb = a[k]["tokens"], b[k]["tokens"]
    n += len(ta)
    if mode == "bitwise":
        if (ta, a[k]["logits_fnv"]) != (tb, b[k]["logits_fnv"]):
            bad.append(f"{k}: {ta} {a[k]['logits_fnv']}\n    vs {tb} {b[k]['logits_fnv']}")
        continue
    first = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
    if first is None and len(ta) != len(tb):
        first = min(len(ta), len(tb))
    if first is None:
        continue
    if first < min_agree:
        bad.append(f"{k}: differ at token {first} (< {min_agree}): {ta}\n    vs {tb}")
    else:
        notes.append(f"{k} from token {first}")
for m in bad:
    print("  " + m, file=sys.stderr)
assert not bad, f"{what}: {len(bad)} of {len(a)} requests differ"
extra = f"; taken as near-ties after >= {min_agree} equal tokens: {', '.join(notes)}" if notes else ""
kind = "tokens and logits identical" if mode == "bitwise" else "greedy tokens equal"
print(f"ok: {what}: {len(a)} requests, {n} tokens, {kind}{extra}")
EOF
}

# ---- the GPU against the CPU on this machine -----------------------------------------------------
run "$T/cpu_dense.jsonl" --set backend=cpu --set policy=dense &&
    run "$T/gpu_dense.jsonl" --set backend=cuda --set policy=dense &&
    compare greedy "$T/cpu_dense.jsonl" "$T/gpu_dense.jsonl" "cuda vs cpu, dense"
run "$T/cpu_k64.jsonl" --set backend=cpu "${OMNI[@]}" --set num_of_selected_tokens=64 &&
    run "$T/gpu_k64.jsonl" --set backend=cuda "${OMNI[@]}" --set num_of_selected_tokens=64 &&
    compare greedy "$T/cpu_k64.jsonl" "$T/gpu_k64.jsonl" "cuda vs cpu, omnikv k=64"

# ---- OmniKV with k >= N is dense, bitwise, on the GPU ------------------------------------------
run "$T/gpu_kN.jsonl" --set backend=cuda "${OMNI[@]}" --set num_of_selected_tokens=2048 &&
    [ -s "$T/gpu_dense.jsonl" ] &&
    compare bitwise "$T/gpu_dense.jsonl" "$T/gpu_kN.jsonl" "cuda: omnikv k=2048 >= N vs dense"

# ---- two ranks on one GPU, host-staged MPI transport, equal one rank -----------------------------
# One micro-batch, so each stage decodes the same 4 sequences as the single rank does.
MPI=(--set backend=cuda "${OMNI[@]}" --set num_of_selected_tokens=64 --set transport=mpi
     --set micro_batches=1)
run "$T/np1.jsonl" "${MPI[@]}" &&
    MPIRUN_NP=2 run "$T/np2.jsonl" "${MPI[@]}" &&
    compare bitwise "$T/np1.jsonl" "$T/np2.jsonl" "cuda: mpirun -np 2 on one GPU vs one rank"

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
