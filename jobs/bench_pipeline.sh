#!/usr/bin/env bash
# bench_pipeline.sh — pipeline overlap study: decode throughput of `omnikv run` for P ranks and
# M micro-batches, and each stage's busy share read from its --trace (compute time over the
# middle 80% of the decode period, so the fill at the start and the drain at the end do not
# count). The goal (DESIGN §7) is every stage >= 80% busy when M >= P. On a machine with fewer
# cores than ranks the ranks time-share cores: the table then shows overlap, not speed-up, and a
# descheduled rank's compute events stretch, which flatters its busy share.
#
# usage: jobs/bench_pipeline.sh [-m MODEL] [--ranks "1 2 4"] [--mb "1 2 3 4 5 6 7 8"]
#                               [--requests N] [--gen N] [--batch B] [--threads T] [-o DIR]
#                               [--stages "P:SPEC ..."] [-- extra `omnikv run` arguments]
# --stages gives hand partitions per rank count ("2:0-19,20-29"); other counts use the planner.
# Needs OMNIKV_BIN (default build/omnikv), mpirun and python3. Prints a markdown table and keeps
# results, logs and traces in DIR (default: a temporary directory, removed at the end).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${OMNIKV_BIN:-$here/build/omnikv}
MODEL=${OMNIKV_CACHE:-$HOME/.cache/omnikv}/models/SmolLM2-135M-Instruct.Q4_1.gguf
RANKS="1 2 4"
MBS="1 2 3 4 5 6 7 8"
REQUESTS=32
GEN=48
BATCH=8
THREADS=1
STAGES=
OUT=
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
    -m) MODEL=$2; shift 2 ;;
    --ranks) RANKS=$2; shift 2 ;;
    --mb) MBS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --gen) GEN=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --stages) STAGES=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "bench_pipeline.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "bench_pipeline.sh: no omnikv binary at $BIN (set OMNIKV_BIN)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "bench_pipeline.sh: no model at $MODEL (use -m)" >&2; exit 2; }
keep=1
if [ -z "$OUT" ]; then
    OUT=$(mktemp -d /tmp/okv_bench_pipe.XXXXXX)
    keep=0
fi
mkdir -p "$OUT"
cleanup() { [ $keep = 1 ] || rm -rf "$OUT"; }
trap cleanup EXIT

python3 - "$REQUESTS" "$GEN" >"$OUT/requests.jsonl" <<'EOF'
import json, sys
n, gen = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    print(json.dumps({"id": f"r{i}", "prompt": f"Tell a short story about the number {i}.",
                      "max_new_tokens": gen}))
EOF

MPI=(mpirun --allow-run-as-root --oversubscribe)
cores=$(nproc)
echo "pipeline overlap: $(basename "$MODEL"), $REQUESTS requests x $GEN tokens, max_batch $BATCH," \
     "$THREADS thread(s) per rank, $cores core(s) on $(hostname)"
echo
echo "| P | M | stages | decode tok/s | busy share per stage (middle 80% of decode) | sum (cores kept busy) | min busy | goal (M >= P) |"
echo "|---|---|---|---|---|---|---|---|"
for P in $RANKS; do
    spec=
    for s in $STAGES; do [ "${s%%:*}" = "$P" ] && spec=${s#*:}; done
    for M in $MBS; do
        [ "$M" -le "$BATCH" ] || continue
        tag=p${P}_m$M
        args=(run -m "$MODEL" -f "$OUT/requests.jsonl" -o "$OUT/$tag.jsonl" --set threads=$THREADS
              --set max_batch=$BATCH --set micro_batches=$M --set max_context_len=512
              --set ignore_eos=true "${EXTRA[@]}")
        [ -n "$spec" ] && args+=(--stages "$spec")
        if [ "$P" -gt 1 ]; then
            OMNIKV_LOG=info "${MPI[@]}" -np "$P" "$BIN" "${args[@]}" --trace "$OUT/$tag.trace.json" \
                2>"$OUT/$tag.log"
        else
            OMNIKV_LOG=info "$BIN" "${args[@]}" 2>"$OUT/$tag.log"
        fi
        python3 - "$OUT/$tag.jsonl" "$OUT/$tag.log" "$OUT/$tag.trace.json" "$P" "$M" <<'EOF'
import json, os, re, sys
res, log, trace, P, M = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
text = open(log).read()
stages = ",".join(f"{a}-{b}" for a, b in re.findall(r"\] rank \d+: layers (\d+)-(\d+),", text)) or "0-all"
tokens = sum(len(json.loads(l)["tokens"]) for l in open(res))
served = float(re.search(r"served \d+ requests .* in ([0-9.]+) s", text).group(1))
busy = []
if P > 1 and os.path.exists(trace):
    ev = [e for e in json.load(open(trace))["traceEvents"] if e["ph"] == "X"]
    dec = [e for e in ev if e["name"] == "decode"]
    lo = min(e["ts"] for e in dec)
    hi = max(e["ts"] + e["dur"] for e in dec)
    lo, hi = lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)
    for r in range(P):
        t = 0.0
        for e in ev:
            if e["pid"] == r and e["cat"] == "compute":
                t += max(0.0, min(hi, e["ts"] + e["dur"]) - max(lo, e["ts"]))
        busy.append(t / (hi - lo))
shares = " ".join(f"{b:.0%}" for b in busy) if busy else "(one rank: no pipeline)"
low = f"{min(busy):.0%}" if busy else "-"
goal = "-" if M < P or not busy else ("met" if min(busy) >= 0.8 else "MISSED")
total = f"{sum(busy):.2f}" if busy else "-"
print(f"| {P} | {M} | {stages} | {tokens / served:.1f} | {shares} | {total} | {low} | {goal} |")
EOF
    done
done
echo
echo "decode tok/s = generated tokens / serving time (prompts are a few tokens, so decode dominates);"
echo "sum = busy shares added up: how many cores the pipeline kept computing (at most min(P, $cores))"
[ $keep = 1 ] && echo "results, logs and traces in $OUT"
exit 0
