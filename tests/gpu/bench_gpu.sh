#!/usr/bin/env bash
# bench_gpu.sh — the GPU benchmark of one device call: `omnikv bench` on a Llama-3-8B-shaped bf16
# model (filter layers 2,8,18, W = 1, k = 2048, backend=cuda), dense against OmniKV at 32K and 128K
# context with everything on the device (real_offload=false), then with the sparse layers' KV in
# the host Context Bank (real_offload=true, filled with --fill synthetic: no prefill) at 128K with
# and without the GPU row cache and at 512K, a real prefill with the bank at 32K (prefill attention
# of the sparse layers reads their staged device copy), then Hugging Face transformers on the same shape
# (hf_decode_bench.py), all within one time budget: a case whose predicted time does not fit is
# skipped and said so. Writes OUT/bench_omnikv.jsonl and OUT/bench_hf.jsonl, one JSON line per
# case. Run by tests/gpu/device_check.sh; numbers, not assertions, so it is no CTest test.
#
# usage: bench_gpu.sh --model FILE.gguf [--out DIR] [--budget S] [--cases CTXxB[o|n|p],...] [--gen N]
# (a case's suffix o: real_offload=true with a synthetic fill; n: the same without the row cache;
# p: real_offload=true with a real prefill)
# Needs OMNIKV_BIN (default: omnikv on PATH) and OMNIKV_SRC (default: the checkout holding this);
# OKV_GPU_LLAMA_LAYERS gives the model's layer count when it is not Llama-3-8B's 32.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${OMNIKV_SRC:-$(dirname "$(dirname "$HERE")")}
BIN=${OMNIKV_BIN:-omnikv}
MODEL='' OUTD=. BUDGET=300 GEN=16
# In priority order. 128K at batch 8 would hold 128 GiB of KV beside 15 GiB of weights, more than
# the H200's 139 GiB, so the largest 128K batch is 4.
CASES=32768x1,131072x1,131072x1o,131072x1n,32768x1p,524288x1o,32768x8,131072x4
HF_CASES=32768x1,131072x1,32768x8
while [ $# -gt 0 ]; do
    case $1 in
    --model) MODEL=$2; shift ;;
    --out) OUTD=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --cases) CASES=$2; shift ;;
    --hf-cases) HF_CASES=$2; shift ;;
    --gen) GEN=$2; shift ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench_gpu.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
    esac
    shift
done
[ -s "$MODEL" ] || { echo "bench_gpu.sh: --model must name a generated Llama-3-8B-shaped GGUF (got '$MODEL')" >&2; exit 2; }
mkdir -p "$OUTD"
OJ=$OUTD/bench_omnikv.jsonl HJ=$OUTD/bench_hf.jsonl
: >"$OJ"
: >"$HJ"
T=$(mktemp -d /tmp/okv_bench_gpu.XXXXXX)
trap 'rm -rf "$T"' EXIT
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
# Hugging Face needs about a minute for its imports, the model and its first case; keep that
# (2/5 of a short budget) for it unless omnikv's cases leave more.
HF_RESERVE=${HF_RESERVE:-$((BUDGET * 2 / 5 < 120 ? BUDGET * 2 / 5 : 120))}

# summarize CASE CTX B RC SECONDS FILE: one JSON line from bench's JSON object (or the failure).
summarize() {
    python3 - "$@" <<'EOF'
import json, sys
case, ctx, b, rc, secs, path = sys.argv[1:]
out = {"case": case, "ctx": int(ctx), "batch": int(b), "rc": int(rc), "seconds": float(secs)}
try:
    res = json.load(open(path))["results"]
except (OSError, ValueError, KeyError) as e:
    out["error"] = f"no bench JSON ({e.__class__.__name__})"
    print(json.dumps(out))
    sys.exit(0)
by = {r["variant"]: r for r in res}
for name, r in by.items():
    key = "dense" if r["policy"] == "dense" else "omnikv"
    ms = r["decode_ms_per_token"]["median"]
    out[f"{key}_decode_ms_per_token"] = ms
    # A step decodes B tokens: its time is B per-token times.
    out[f"{key}_step_ms"] = ms * int(b)
    out[f"{key}_prefill_tok_s"] = r["prefill_tok_s"]
    out[f"{key}_read_gb_s"] = r["read_gb_s"]
    out[f"{key}_bytes_per_token"] = r["kv_bytes_per_token"] + r["weight_bytes_per_token"] + r["bank_bytes_per_token"]
    out[f"{key}_ms_split"] = r["ms_per_token"]
    out[f"{key}_memory_bytes"] = r["memory_bytes"]
    if key == "omnikv":
        out["k"] = r["k"]
if "dense_decode_ms_per_token" in out and out.get("omnikv_decode_ms_per_token"):
    out["omnikv_speedup"] = round(out["dense_decode_ms_per_token"] / out["omnikv_decode_ms_per_token"], 3)
print(json.dumps(out))
EOF
}
# predict CTX B: seconds a case should take, from the first case's figures (prefill grows with
# B * CTX, and its attention part with CTX again), 0 when nothing is known yet.
FIRST_CTX=0 FIRST_PREFILL=0 FIRST_REST=0
predict() {
    [ "$FIRST_CTX" -gt 0 ] || { echo 0; return; }
    python3 -c 'import sys
ctx, b, c0, pf, rest = map(float, sys.argv[1:])
r = ctx / c0
print(int(rest + pf * b * r * (1 + r) / 2 * 1.3 + 1))' "$1" "$2" "$FIRST_CTX" "$FIRST_PREFILL" "$FIRST_REST"
}

# ---- omnikv --------------------------------------------------------------------------------------
for c in ${CASES//,/ }; do
    ctx=${c%x*} b=${c#*x} mode=${c##*[0-9]}
    b=${b%[onp]}
    extra=(--set real_offload=false) label=''
    case "$mode" in
    o) extra=(--set real_offload=true --fill synthetic) label=', offload' ;;
    n) extra=(--set real_offload=true --fill synthetic --set row_cache=false) label=', offload, no row cache' ;;
    p) extra=(--set real_offload=true) label=', offload, real prefill' ;;
    esac
    case="omnikv ctx=$ctx batch=$b$label"
    want=$(predict "$ctx" "$b")
    # a synthetic fill has no prefill: about the first case's rest, growing with the context
    [ -n "$mode" ] && [ "$mode" != p ] && [ "$FIRST_CTX" -gt 0 ] && want=$(python3 -c 'import sys
c, c0, rest = map(float, sys.argv[1:]); print(int(rest * (1 + c / c0 / 4) + 1))' "$ctx" "$FIRST_CTX" "$FIRST_REST")
    avail=$(($(left) - HF_RESERVE))
    if [ "$want" -gt "$avail" ] || [ "$avail" -lt 20 ]; then
        echo "skip: $case: predicted ${want}s, ${avail}s left before the Hugging Face reserve"
        printf '{"case": "%s", "ctx": %s, "batch": %s, "skipped": "predicted %ss, %ss left"}\n' \
            "$case" "$ctx" "$b" "$want" "$avail" >>"$OJ"
        continue
    fi
    echo "== $case (limit ${avail}s)"
    t0=$(date +%s.%N)
    timeout -k 5 "$avail" "$BIN" bench -m "$MODEL" -c "$SRC/configs/llama3-8b-262k.json" \
        "${extra[@]}" --set backend=cuda --ctx "$ctx" --gen "$GEN" --variants dense,2048 \
        --batch "$b" --runs 1 --warmup 0 --json -o "$T/b.json" >/dev/null 2>"$T/b.err"
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    tail -n 15 "$T/b.err"
    line=$(summarize "$case" "$ctx" "$b" "$rc" "$secs" "$T/b.json")
    echo "$line" | tee -a "$OJ"
    rm -f "$T/b.json"
    if [ "$FIRST_CTX" -eq 0 ] && [ "$rc" -eq 0 ]; then
        # Prefill seconds per variant, and the rest of the wall time (loading, decode, start-up).
        read -r FIRST_PREFILL FIRST_REST < <(python3 -c 'import json, sys
r = json.loads(sys.argv[1]); n = r["ctx"] * r["batch"]
pf = sum(n / r[k] for k in ("dense_prefill_tok_s", "omnikv_prefill_tok_s") if r.get(k))
rest = max(r["seconds"] - pf, 0)
print(f"{pf:.2f} {rest:.2f}")' "$line" 2>/dev/null || echo "0 0")
        [ "${FIRST_PREFILL%.*}" = 0 ] && [ "${FIRST_REST%.*}" = 0 ] || FIRST_CTX=$ctx
    fi
done

# ---- Hugging Face transformers -------------------------------------------------------------------
hf_left=$(($(left) - 5))
if [ "$hf_left" -lt 40 ]; then
    echo "skip: Hugging Face: ${hf_left}s left"
    printf '{"case": "hf", "skipped": "%ss left"}\n' "$hf_left" >>"$HJ"
else
    echo "== Hugging Face transformers (limit ${hf_left}s)"
    PYTHONUNBUFFERED=1 timeout -k 5 "$hf_left" python3 "$HERE/hf_decode_bench.py" --cases "$HF_CASES" \
        --gen "$GEN" --budget $((hf_left - 10)) --layers "${OKV_GPU_LLAMA_LAYERS:-32}" | tee -a "$HJ"
    echo "Hugging Face: exit ${PIPESTATUS[0]}"
fi
