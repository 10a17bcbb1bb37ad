#!/usr/bin/env bash
# bench_vs_llamacpp.sh — prefill and decode tok/s of omnikv (dense) and of llama.cpp on the same
# GGUF, in one run on this machine, with the ratios. Needs scripts/setup.sh --test (llama.cpp's
# Python package). Usage: jobs/bench_vs_llamacpp.sh [MODEL.gguf] [CTX_LIST] [GEN] [THREADS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
bin=${OMNIKV_BIN:-$here/build/omnikv}
model=${1:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ctx=${2:-512,2048,8192}
gen=${3:-64}
threads=${4:-$(nproc)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

OMNIKV_LOG=warn "$bin" bench -m "$model" --ctx "$ctx" --gen "$gen" --json \
    --set policy=dense --set threads="$threads" >"$out/ours.json"
"$cache/venv/bin/python" "$here/jobs/bench_llamacpp.py" "$model" --ctx "$ctx" --gen "$gen" \
    --threads "$threads" >"$out/llama.json"
"$cache/venv/bin/python" "$here/jobs/bench_llamacpp.py" "$model" --ctx "$ctx" --gen "$gen" \
    --threads "$threads" --flash-attn >"$out/llama_fa.json"
python3 - "$out" "$threads" <<'PY'
import json, os, sys
d = sys.argv[1]
ours = json.load(open(os.path.join(d, "ours.json")))
ll = {r["ctx"]: r for r in json.load(open(os.path.join(d, "llama.json")))["rows"]}
fa = {r["ctx"]: r for r in json.load(open(os.path.join(d, "llama_fa.json")))["rows"]}
rows = ours["rows"] if "rows" in ours else ours["results"]
print(f"threads {sys.argv[2]}; llama.cpp best of flash attention off/on per cell")
print(f"{'ctx':>6} {'ours pre':>9} {'llama pre':>10} {'ratio':>6} {'ours dec':>9} {'llama dec':>10} {'ratio':>6}")
for r in rows:
    c = r["ctx"]
    lp = max(ll[c]["prefill_tok_s"], fa[c]["prefill_tok_s"])
    ld = max(ll[c]["decode_tok_s"], fa[c]["decode_tok_s"])
    print(f"{c:>6} {r['prefill_tok_s']:>9.1f} {lp:>10.1f} {r['prefill_tok_s'] / lp:>6.2f} "
          f"{r['decode_tok_s']:>9.1f} {ld:>10.1f} {r['decode_tok_s'] / ld:>6.2f}")
PY
