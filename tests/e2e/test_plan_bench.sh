#!/usr/bin/env bash
# test_plan_bench.sh — `omnikv plan` against `omnikv bench` on the same shape and machine: SmolLM2
# at a 2048-token prompt, dense and OmniKV at two budgets, one thread. plan's predicted decode
# step (kernels timed here, costs.h) must lie within a factor PLAN_FACTOR (2) of the step bench
# measures, and must order the three variants as bench does when bench sees them > 15% apart.
# The factor covers what plan leaves out (norms, RoPE, KV stores, selection, sampling) and a
# shared machine's noise. Then the memory each reports for that shape (k=1024): plan's table,
# the start-up line of `run` and bench's memory columns must agree on the weights and equal the
# KV cache and bank bytes computed here by hand from SmolLM2's shape and the config (4 full-attention layers of 30, f16 KV rows of
# 2 x 192 elements; the 26 sparse layers keep the prompt in the bank and only the generated
# tail in the KV cache), within the 0.05 MiB of the tables' rounding. Needs OMNIKV_BIN,
# OMNIKV_SRC, the model in OMNIKV_CACHE and python3. Last, bench --fill synthetic on the same
# cells must report the same byte and row counts, each table row marked as synthetic.
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
# The same cells with the prompts' KV generated (bench --fill synthetic): every table row must say
# so, and the byte counts (memory held, bytes and rows read per token) must equal the prefilled
# run's, since only the values differ.
if ! "$BIN" bench -m "$MODEL" "${CFG[@]}" --ctx $CTX --gen $GEN --variants dense,1024,0.125 \
    --runs 1 --warmup 0 --fill synthetic -o "$T/synth.json" >"$T/synth.txt" 2>"$T/synth.err"; then
    tail -n 20 "$T/synth.err" >&2
    echo "FAIL: bench --fill synthetic failed"
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

if ! OMNIKV_LOG=info "$BIN" run -m "$MODEL" "${CFG[@]}" --set num_of_selected_tokens=1024 \
    --set max_context_len=$((CTX + GEN)) --set max_new_tokens=$GEN -p "hello" \
    >/dev/null 2>"$T/run.err"; then
    tail -n 20 "$T/run.err" >&2
    echo "FAIL: run failed"
    exit 1
fi

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

# Memory: one accounting behind the three reports.
MiB = 1048576.0
row, ctx, gen, full, sparse = 2 * 192 * 2, 2048, 16, 4, 26
want = {"KV cache": (full * (ctx + gen) + sparse * gen) * row, "bank": sparse * ctx * row}
def mib(text):
    v, unit = text.split()
    return float(v) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]
res = {r["variant"]: r for r in json.load(open(f"{d}/bench.json"))["results"]}["k=1024"]["memory_bytes"]
bench = {"weights": res["weights"] / MiB, "KV cache": res["kv_cache"] / MiB, "bank": res["bank"] / MiB}
row0 = re.search(r"\n\s*0\s+0-29\s+[A-Z0-9 ]+?\s+([0-9.]+ [KMG]iB)\s+([0-9.]+ [KMG]iB)\s+([0-9.]+ [KMG]iB)",
                 open(f"{d}/plan_1024.txt").read())
assert row0, "no rank 0 row in plan's table"
plan = dict(zip(("weights", "KV cache", "bank"), (mib(g) for g in row0.groups())))
line = re.search(r"weights ([0-9.]+ [KMG]iB), KV cache ([0-9.]+ [KMG]iB), Context Bank ([0-9.]+ [KMG]iB)",
                 open(f"{d}/run.err").read())
assert line, "no memory line in run's start-up log"
run = dict(zip(("weights", "KV cache", "bank"), (mib(g) for g in line.groups())))
for what in ("weights", "KV cache", "bank"):
    ref = want[what] / MiB if what in want else bench[what]
    got = {"plan": plan[what], "start-up": run[what], "bench": bench[what]}
    ok = all(abs(v - ref) <= 0.05 for v in got.values())
    print(f"memory {what:9s} by hand {ref:8.2f} MiB  " + "  ".join(f"{k} {v:8.2f}" for k, v in got.items())
          + ("  ok" if ok else "  FAIL"))
    fails += not ok

# bench --fill synthetic: the prefilled run's byte counts, and every row says synthetic.
real = {r["variant"]: r for r in json.load(open(f"{d}/bench.json"))["results"]}
synth = {r["variant"]: r for r in json.load(open(f"{d}/synth.json"))["results"]}
keys = ("memory_bytes", "rows_per_token", "kv_bytes_per_token", "bank_bytes_per_token", "k")
for v in names.values():
    same = all(real[v][k] == synth[v][k] for k in keys) and synth[v]["fill"] == "synthetic"
    print(f"{v:8s} synthetic fill: byte and row counts {'equal' if same else 'DIFFER from'} the "
          f"prefilled run's; decode {synth[v]['decode_ms_per_token']['median']:.3f} ms "
          f"(prefilled {real[v]['decode_ms_per_token']['median']:.3f})")
    fails += not same
rows = [l for l in open(f"{d}/synth.txt").read().splitlines() if re.match(r"\s+2048 ", l)]
unmarked = [l for l in rows if not l.endswith("synthetic fill")]
print(f"synthetic fill: {len(rows)} table rows, {len(unmarked)} without the mark")
fails += len(rows) != 6 or len(unmarked) > 0
sys.exit(1 if fails else 0)
PY
