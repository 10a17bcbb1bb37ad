#!/usr/bin/env bash
# test_plan_bench.sh — `omnikv plan` against `omnikv bench` on the same shape and machine: SmolLM2
# at a 2048-token prompt, dense and OmniKV at two budgets, one thread. plan's predicted decode
# step (kernels timed here, costs.h) must lie within a factor PLAN_FACTOR (2) of the step bench
# measures, and must order the three variants as bench does when bench sees them > 15% apart.
# The factor covers what plan leaves out (norms, RoPE, KV stores, selection, sampling) and a
# shared machine's noise. Needs OMNIKV_BIN, OMNIKV_SRC, the model in OMNIKV_CACHE and python3.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:?OMNIKV_SRC must name the omnikv checkout}
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
MODEL=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
FACTOR=${PLAN_FACTOR:-2}
[ -f "$MODEL" ] || { echo "FAIL: no model at $MODEL; run scripts/setup.sh"; exit 1; }
T=$(mktemp -d /tmp/okv_e2e_plan.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn
CFG=(-c "$SRC/configs/smollm2-135m.json" --set threads=1)
CTX=2048 GEN=16

if ! "$BIN" bench -m "$MODEL" "${CFG[@]}" --ctx $CTX --gen $GEN --variants dense,1024,0.125 \
    --runs 2 --warmup 0 --json -o "$T/bench.json" >/dev/null 2>"$T/bench.err"; then
    tail -n 20 "$T/bench.err" >&2
    echo "FAIL: bench failed"
    exit 1
fi
for k in dense 1024 0.125; do
    sets=(--set policy=dense)
    [ $k = dense ] || sets=(--set policy=omnikv --set num_of_selected_tokens=$k)
    if ! "$BIN" plan -m "$MODEL" "${CFG[@]}" "${sets[@]}" --ctx $CTX --gen $GEN --ranks 1 \
        >"$T/plan_$k.txt" 2>&1; then
        cat "$T/plan_$k.txt" >&2
        echo "FAIL: plan failed for $k"
        exit 1
    fi
done

python3 - "$T" "$FACTOR" <<'PY'
import json, re, sys
d, factor = sys.argv[1], float(sys.argv[2])
bench = {r["variant"]: r["decode_ms_per_token"]["median"] for r in json.load(open(f"{d}/bench.json"))["results"]}
names = {"dense": "dense", "1024": "k=1024", "0.125": "k=0.125"}
plan = {}
for k, v in names.items():
    text = open(f"{d}/plan_{k}.txt").read()
    m = re.search(r"predicted decode: ([0-9.]+) ms per micro-batch step", text)
    assert m, text
    plan[v] = float(m.group(1))
fails = 0
for v in names.values():
    r = plan[v] / bench[v]
    ok = 1 / factor <= r <= factor
    print(f"{v:8s} bench {bench[v]:7.3f} ms  plan {plan[v]:7.3f} ms  plan/bench {r:5.2f}  {'ok' if ok else 'FAIL'}")
    fails += not ok
vs = list(names.values())
for a in vs:
    for b in vs:
        if bench[a] > 1.15 * bench[b] and not plan[a] > plan[b]:
            print(f"FAIL: bench has {a} slower than {b} by > 15%, plan does not")
            fails += 1
sys.exit(1 if fails else 0)
PY
