#!/usr/bin/env bash
# demo.sh — the main job on the default model: passkey retrieval in a 4K-token haystack answered
# with full attention and with OmniKV (budgets 2048 and 6.7%), then decode throughput at 8K
# context, dense vs OmniKV. Expects scripts/setup.sh to have run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${OMNIKV_BIN:-$here/build/omnikv}
cache=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
model=${1:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
config=$here/configs/smollm2-135m.json
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== passkey retrieval, 4096-token prompts, 3 samples: dense vs OmniKV (filter layers from $config)"
OMNIKV_LOG=warn "$bin" eval -m "$model" -c "$config" --task passkey --ctx 4096 --count 3 \
    --variants dense,2048,0.067 -o "$out/samples.jsonl"
python3 - "$out/samples.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"  sample {r['sample']}  {r['variant']:>8}  key {r['answer']}  answered {r['output'].strip()!r}")
PY

echo
echo "== decode throughput at 8192 tokens of context (32 generated tokens; one prefill, then each variant)"
OMNIKV_LOG=warn "$bin" bench -m "$model" -c "$config" --ctx 8192 --gen 32 --variants dense,2048,0.067
