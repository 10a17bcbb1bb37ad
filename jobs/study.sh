#!/usr/bin/env bash
# study.sh — a long-context study into one results directory: for each rank count, `omnikv bench`
# over context lengths x decode variants (policies and budgets); once, `omnikv eval` of each task
# over the same contexts and variants (results do not depend on the rank count); then
# jobs/plot.py draws accuracy vs budget, decode latency vs context and throughput vs ranks.
# Runs anywhere with mpirun, or inside a Slurm allocation with --launcher srun.
# Tested by tests/e2e/test_plots.sh (a small study on a generated model, ranks 1 and 2).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: jobs/study.sh -m MODEL -o DIR [-c CONFIG.json] [--ctx 2048,4096,8192]
                     [--variants dense,2048,0.067] [--ranks 1,2] [--tasks passkey,needle-single]
                     [--count N] [--gen N] [--batch B] [--runs R] [--warmup W]
                     [--launcher mpirun|srun]
                     [--no-plot] [--set KEY=VALUE ...]

  -m MODEL         model file or directory (required)
  -o DIR           results directory (created; existing result files are replaced)
  -c CONFIG        run config (filter layers for the OmniKV variants)
  --ctx LIST       context lengths (default 2048,4096,8192)
  --variants LIST  dense and OmniKV budgets (default dense,2048,0.067)
  --ranks LIST     MPI rank counts for bench (default 1)
  --tasks LIST     eval tasks, generated or longbench:FILE / infinitebench:FILE
                   (default passkey; "none" skips eval)
  --count N        eval samples per context (default 10)
  --gen N          bench decode steps per run (default 32)
  --batch B        bench sequences decoded together per run (default 1); with B > 1 a
                   pipeline keeps min(ranks, B) micro-batches in flight
  --runs R         bench measured runs (default 3); --warmup W discarded runs (default 1)
  --launcher L     how ranks start: mpirun (default) or srun (inside an allocation)
  --no-plot        leave the figures out
  --set KEY=VALUE  run-config key for every command (repeatable)
Environment: OMNIKV_BIN (default build/omnikv), OMNIKV_CACHE (venv with matplotlib), BIND.
EOF
}

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${OMNIKV_BIN:-$here/build/omnikv}
cache=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
model="" out="" config="" ctx=2048,4096,8192 variants=dense,2048,0.067 ranks=1 tasks=passkey
count=10 gen=32 batch=1 runs=3 warmup=1 launcher=mpirun plot=1
sets=()
while [ $# -gt 0 ]; do
    case $1 in
    -m) model=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    -c) config=$2; shift 2 ;;
    --ctx) ctx=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --gen) gen=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --launcher) launcher=$2; shift 2 ;;
    --no-plot) plot=0; shift ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "study.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$model" ] && [ -n "$out" ] || { echo "study.sh: -m MODEL and -o DIR are required" >&2; usage >&2; exit 2; }
[ -x "$bin" ] || { echo "study.sh: no omnikv binary at $bin (build it or set OMNIKV_BIN)" >&2; exit 2; }
case $launcher in mpirun | srun) ;; *) echo "study.sh: --launcher is mpirun or srun, not '$launcher'" >&2; exit 2 ;; esac
cfg=()
[ -n "$config" ] && cfg=(-c "$config")
mkdir -p "$out"
log=$out/study.log
: >"$log"

# run P CMD...: the omnikv command on P ranks, each bound by jobs/bind.sh; logged.
run() {
    local p=$1
    shift
    local cmd
    if [ "$p" -eq 1 ]; then
        cmd=("$bin" "$@")
    elif [ "$launcher" = srun ]; then
        cmd=(srun -n "$p" --mpi="${SRUN_MPI:-pmix}" --cpu-bind=none "$here/jobs/bind.sh" "$bin" "$@")
    else
        local root=()
        [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
        cmd=(mpirun "${root[@]}" --oversubscribe --bind-to none -np "$p" "$here/jobs/bind.sh" "$bin" "$@")
    fi
    echo "$(date -u +%FT%TZ) ${cmd[*]}" >>"$log"
    "${cmd[@]}"
}

python3 - "$out/meta.json" "$model" "$config" "$ctx" "$variants" "$ranks" "$tasks" "$count" \
    "$gen" "$runs" "$warmup" "$launcher" "$bin" "$batch" <<'PY'
import json, platform, sys, time
keys = ["model", "config", "ctx", "variants", "ranks", "tasks", "count", "gen", "runs", "warmup",
        "launcher", "bin", "batch"]
meta = dict(zip(keys, sys.argv[2:]))
meta.update(host=platform.node(), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY

IFS=, read -r -a rank_list <<<"$ranks"
for p in "${rank_list[@]}"; do
    echo "[study] bench on $p rank(s): contexts $ctx, variants $variants" >&2
    run "$p" bench -m "$model" "${cfg[@]}" --ctx "$ctx" --variants "$variants" --gen "$gen" \
        --batch "$batch" --runs "$runs" --warmup "$warmup" "${sets[@]}" -o "$out/bench_p$p.json" \
        >"$out/bench_p$p.txt"
done

if [ "$tasks" != none ]; then
    IFS=, read -r -a task_list <<<"$tasks"
    for t in "${task_list[@]}"; do
        name=${t##*/}
        name=${name%.jsonl}
        name=${name#*:}
        echo "[study] eval $t: contexts $ctx, variants $variants, $count sample(s)" >&2
        run 1 eval -m "$model" "${cfg[@]}" --task "$t" --ctx "$ctx" --variants "$variants" \
            --count "$count" "${sets[@]}" -o "$out/eval_$name.jsonl" >"$out/eval_$name.txt"
    done
fi

if [ "$plot" = 1 ]; then
    "$here/jobs/plot.py" "$out" # it finds matplotlib itself (python3's, or the omnikv venv's)
fi
echo "[study] results in $out" >&2
