#!/usr/bin/env bash
# device_check.sh — every GPU check of one device call, run from the repository root with .gpu/
# carried (scripts/gpu_bundle.sh): unpacks the carried Debian packages into a prefix under /tmp,
# points the loader and a relocated Open MPI at it, then runs, each under `timeout` and within
# one budget, the GPU test executables, an MPI smoke test, model generation, the GPU end-to-end
# test and the benchmark. Logs to $OUT/device_check.log; $OUT/results.json holds one object per
# step (exit code, seconds, key figures) and is rewritten after every step, so a call cut short
# still reports. Dry-run without a GPU by tests/gpu/dry_run.sh.
#
# usage: tests/gpu/device_check.sh [BUDGET_S]   (default 480: the seconds the whole script may take)
set -u

BUDGET=${1:-480}
case $BUDGET in '' | *[!0-9]*) echo "device_check.sh: the budget must be whole seconds, got '$BUDGET'" >&2; exit 2 ;; esac
ROOT=$(pwd)
[ ! -f "$ROOT/.gpu/bin.tar.xz" ] || [ -d "$ROOT/.gpu/bin" ] || tar -C "$ROOT/.gpu" -xJf "$ROOT/.gpu/bin.tar.xz"
[ -f "$ROOT/.gpu/bin/omnikv" ] ||
    { echo "device_check.sh: no .gpu/bin/omnikv here; run scripts/gpu_bundle.sh and carry .gpu" >&2; exit 2; }
OUT=${OUT:-/tmp/okv-device-out}
mkdir -p "$OUT"
LOG=$OUT/device_check.log
: >"$LOG"
P=${OKV_GPU_PREFIX:-/tmp/okv-prefix}     # the unpacked packages and the wrappers
W=${OKV_GPU_WORK:-/tmp/okv-work}         # models, the test cache, scratch
RESERVE=10                               # seconds kept for writing results at the end
STEP_OUT=$W/step.out
START=$(date +%s)

log() { echo "[$(date -u +%T) +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - START) - RESERVE)); }

# ---- results.json: one JSON object, rewritten after each step ------------------------------------
NAMES=() RCS=() SECS=() STATES=() FIGS=()
INFO='{}'
write_results() {
    local i sep=''
    {
        printf '{"budget_s": %s, "elapsed_s": %s, "info": %s, "steps": {' "$BUDGET" \
            "$(($(date +%s) - START))" "$INFO"
        for i in "${!NAMES[@]}"; do
            printf '%s\n  "%s": {"status": "%s", "rc": %s, "seconds": %s, "figures": %s}' "$sep" \
                "${NAMES[$i]}" "${STATES[$i]}" "${RCS[$i]}" "${SECS[$i]}" "${FIGS[$i]}"
            sep=,
        done
        printf '\n}}\n'
    } >"$OUT/results.json.tmp" && mv "$OUT/results.json.tmp" "$OUT/results.json"
}
record() { # record NAME STATUS RC SECONDS FIGURES_JSON
    NAMES+=("$1") STATES+=("$2") RCS+=("$3") SECS+=("$4") FIGS+=("${5:-"{}"}")
    write_results
}
# figures PYTHON ARGS...: a JSON object computed by a python snippet, {} when it fails.
figures() {
    local code=$1 js
    shift
    js=$(python3 -c "$code" "$@" 2>>"$LOG") && [ -n "$js" ] && echo "$js" || echo '{}'
}
# step NAME NEED_S LIMIT_S CMD...: runs CMD under timeout (at most LIMIT_S, never past the budget)
# unless fewer than NEED_S seconds are left. Its exit status is the step's: 77 reads as skipped,
# 124 and 137 as timed out. Sets STEP_RC, STEP_S and STATES_PENDING; its output is in $STEP_OUT.
step() {
    local name=$1 need=$2 limit=$3 rem state t0
    shift 3
    rem=$(left)
    STEP_RC=-1 STEP_S=0
    if [ "$rem" -lt "$need" ]; then
        log "== $name: skipped, ${rem}s left of the budget and it needs ${need}s"
        STATES_PENDING=skipped-budget
        return 1
    fi
    [ "$limit" -le "$rem" ] || limit=$rem
    log "== $name (limit ${limit}s): $*"
    t0=$(date +%s.%N)
    timeout -k 5 "$limit" "$@" >"$STEP_OUT" 2>&1
    STEP_RC=$?
    cat "$STEP_OUT" >>"$LOG"
    STEP_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    case $STEP_RC in
    0) state=ok ;;
    77) state=skipped ;;
    124 | 137) state=timeout ;;
    *) state=failed ;;
    esac
    STATES_PENDING=$state
    log "== $name: $state (exit $STEP_RC, ${STEP_S}s)"
    [ "$STEP_RC" -eq 0 ]
}
# run_step NAME NEED LIMIT CMD...: step, then record it with no figures.
run_step() {
    local name=$1
    step "$@"
    local rc=$?
    if [ "$STATES_PENDING" = skipped-budget ]; then record "$name" skipped-budget -1 0
    else record "$name" "$STATES_PENDING" "$STEP_RC" "$STEP_S"; fi
    return $rc
}

# ---- 1. the prefix: packages, wrappers, the loader path ------------------------------------------
log "device_check: budget ${BUDGET}s, prefix $P, work $W, out $OUT"
rm -rf "$P" "$W"
mkdir -p "$P/wrap" "$W/cache" "$W/models"
chmod +x "$ROOT"/.gpu/bin/* 2>/dev/null
t0=$(date +%s)
n_debs=0
for d in "$ROOT"/.gpu/debs/*.deb; do
    dpkg -x "$d" "$P" >>"$LOG" 2>&1 && n_debs=$((n_debs + 1))
done
A=x86_64-linux-gnu
OMPI_LIB=$P/usr/lib/$A/openmpi/lib
# Libraries the carried packages do not hold (the CUDA runtime, cuBLAS, NCCL) come from the
# image: its toolkit, or the wheels beside PyTorch.
CUDA_DIRS=''
find_lib() {
    local lib=$1 d f
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
        /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/$A; do
        [ -e "$d/$lib" ] && { echo "$d"; return 0; }
    done
    f=$(find /opt /usr/local -maxdepth 9 -path '*nvidia*' -name "$lib" 2>/dev/null | head -n 1)
    [ -n "$f" ] && dirname "$f"
}
write_env() {
    cat >"$P/env.sh" <<EOF
# Written by tests/gpu/device_check.sh: the relocated packages under $P.
export LD_LIBRARY_PATH=$OMPI_LIB:$P/usr/lib/$A/pmix2/lib:$P/usr/lib/$A:$P/lib/$A${CUDA_DIRS}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OPAL_PREFIX=$P/usr OPAL_LIBDIR=$OMPI_LIB OPAL_PKGLIBDIR=$OMPI_LIB/openmpi3
export OPAL_PKGDATADIR=$P/usr/share/openmpi OPAL_SYSCONFDIR=$P/etc/openmpi
export PMIX_PREFIX=$P/usr/lib/$A/pmix2 HWLOC_PLUGINS_PATH=$P/usr/lib/$A/hwloc
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One node: shared memory and TCP, no probing for InfiniBand, UCX or libfabric devices.
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_vader_single_copy_mechanism=none
EOF
}
write_env
# Wrappers: omnikv, mpirun and `run CMD` load the prefix; python3 and the rest keep the image's.
printf '#!/bin/sh\n. %s/env.sh\nexec %s/.gpu/bin/omnikv "$@"\n' "$P" "$ROOT" >"$P/wrap/omnikv"
printf '#!/bin/sh\n. %s/env.sh\nexec %s/usr/bin/orterun "$@"\n' "$P" "$P" >"$P/wrap/mpirun"
printf '#!/bin/sh\n. %s/env.sh\nexec "$@"\n' "$P" >"$P/wrap/run"
cp "$P/wrap/mpirun" "$P/wrap/mpiexec"
chmod +x "$P"/wrap/*
missing=$("$P/wrap/run" ldd "$ROOT"/.gpu/bin/* 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
for lib in $missing; do
    d=$(find_lib "$lib") && CUDA_DIRS="$CUDA_DIRS:$d" && log "found $lib in $d"
done
write_env
unresolved=$("$P/wrap/run" ldd "$ROOT"/.gpu/bin/* "$P/usr/bin/orterun" 2>/dev/null |
    awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
outside=$("$P/wrap/run" ldd "$ROOT/.gpu/bin/omnikv" | awk '$3 ~ /^\// && index($3, "'"$P"'") != 1 {print $3}' | tr '\n' ' ')
export PATH=$P/wrap:$PATH
export OMNIKV_BIN=$P/wrap/omnikv OMNIKV_SRC=$ROOT OMNIKV_CACHE=$W/cache OMNIKV_BUILD=$ROOT/.gpu/bin
export OMNIKV_LOG=${OMNIKV_LOG:-info}

GPU=$(nvidia-smi -L 2>/dev/null | grep '^GPU ' || true)
N_GPU=$(printf '%s' "$GPU" | grep -c '^GPU ' || true)
{
    echo "---- nvidia-smi"; nvidia-smi 2>&1
    echo "---- processor"; lscpu 2>&1 | grep -E 'Model name|^CPU\(s\)|Flags' | cut -c1-400
    echo "---- memory and disks"; free -g 2>&1; df -h /tmp /dev/shm 2>&1
    echo "---- glibc"; ldd --version 2>&1 | head -n 1
    echo "---- .gpu/bin/BUILD_INFO"; cat "$ROOT/.gpu/bin/BUILD_INFO" 2>&1
    echo "---- ldd omnikv"; "$P/wrap/run" ldd "$ROOT/.gpu/bin/omnikv" 2>&1
    echo "---- mpirun --version"; mpirun --version 2>&1 | head -n 2
} >>"$LOG"
INFO=$(python3 -c '
import json, sys
gpus = [g for g in sys.argv[1].split("\n") if g]
print(json.dumps({"gpus": gpus, "debs_unpacked": int(sys.argv[2]),
                  "unresolved_libs": sys.argv[3].split(), "omnikv_libs_outside_prefix": sys.argv[4].split(),
                  "glibc": sys.argv[5]}))' "$GPU" "$n_debs" "$unresolved" "$outside" \
    "$(ldd --version 2>&1 | head -n 1)" 2>>"$LOG" || echo '{}')
st=ok
[ -z "$unresolved" ] || st=failed
record setup "$st" 0 $(($(date +%s) - t0)) "$INFO"
log "setup: $n_debs packages unpacked; GPUs: ${N_GPU}; unresolved libraries: ${unresolved:-none}"

# ---- 2. MPI smoke test: 2 ranks equal 1 on a tiny model (the relocated Open MPI) ----------------
mpi_smoke() {
    local d=$W/smoke
    mkdir -p "$d"
    omnikv gen-model --shape tiny --layers 8 -o "$d/tiny.gguf" || return 1
    printf '%s\n' '{"id":"a","prompt":"Hello there, how are you?","max_new_tokens":8}' \
        '{"id":"b","prompt":"One two three four five six","max_new_tokens":8}' >"$d/req.jsonl"
    local args=(run -m "$d/tiny.gguf" -f "$d/req.jsonl" --set ignore_eos=true --set logits_digest=true
        --set transport=mpi --set max_batch=2)
    # On the CPU backend where the build has the key, so that this step checks MPI alone.
    if omnikv run --help 2>&1 | grep -qE '^ +backend '; then args+=(--set backend=cpu); fi
    omnikv "${args[@]}" -o "$d/one.jsonl" || return 1
    mpirun -np 2 omnikv "${args[@]}" -o "$d/two.jsonl" || return 1
    python3 - "$d/one.jsonl" "$d/two.jsonl" <<'EOF'
import json, sys
a, b = ([(r["id"], r["tokens"], r["logits_fnv"]) for r in map(json.loads, open(p))] for p in sys.argv[1:])
assert a == b, f"one rank {a}\n two ranks {b}"
print(f"ok: mpirun -np 2 equals one rank on {len(a)} requests")
EOF
}
export -f mpi_smoke
export W
if [ "${OKV_GPU_SMOKE:-1}" = 1 ]; then run_step mpi_smoke 20 60 bash -c mpi_smoke
else record mpi_smoke skipped -1 0 '{"reason": "OKV_GPU_SMOKE=0"}'; fi

# share BUDGET/4, clamped to [LO, HI]: the cap of a step, so that the end-to-end test and the
# benchmark keep their part of a short budget.
share() { local s=$((BUDGET / 4)); [ $s -ge "$1" ] || s=$1; [ $s -le "$2" ] || s=$2; echo $s; }

# ---- 3. the SmolLM2-shaped model and the GPU end-to-end test: the engine on the GPU ----------------
SMOL=$W/models/smollm2-135m.gguf
run_step gen_smollm2 10 60 omnikv gen-model --shape smollm2-135m -o "$SMOL"
step e2e 30 "${OKV_GPU_E2E_S:-$(share 45 120)}" env OMNIKV_GPU_SMOL="$SMOL" bash "$ROOT/tests/gpu/test_gpu_e2e.sh"
if [ "$STATES_PENDING" = skipped-budget ]; then record e2e skipped-budget -1 0
else
    fig=$(figures 'import json, re, sys
log = open(sys.argv[1], errors="replace").read()
ok = [l[4:] for l in log.splitlines() if l.startswith("ok: ")]
bad = [l[6:] for l in log.splitlines() if l.startswith("FAIL: ")]
m = re.findall(r"(\d+) checks, (\d+) failed", log)
print(json.dumps({"checks": int(m[-1][0]) if m else None, "failed": int(m[-1][1]) if m else None,
                  "ok": ok[:12], "fail": bad[:12]}))' "$STEP_OUT")
    record e2e "$STATES_PENDING" "$STEP_RC" "$STEP_S" "$fig"
fi

# ---- 4. the GPU test executables (ctest -L gpu, with CTest's environment) ------------------------
# The test executables together get OKV_GPU_TESTS_S seconds (default: a quarter of the budget).
TESTS_S=${OKV_GPU_TESTS_S:-$(share 30 150)}
[ -z "${OKV_GPU_TESTS:-}" ] || TESTS_S=$(left)
TESTS_END=$(($(date +%s) + TESTS_S))
# OKV_GPU_TESTS="name:limit ..." runs those, in that order, with those caps (a short call puts
# the tests that never ran on a GPU first).
PLAN=${OKV_GPU_TESTS:-}
if [ -z "$PLAN" ]; then
    for t in "$ROOT"/.gpu/bin/test_*; do [ -f "$t" ] && PLAN="$PLAN $(basename "$t"):120"; done
fi
for item in $PLAN; do
    t=$ROOT/.gpu/bin/${item%%:*}
    [ -f "$t" ] || { log "== ${item%%:*}: not in .gpu/bin"; continue; }
    name=test:$(basename "$t")
    lim=$((TESTS_END - $(date +%s)))
    [ "$lim" -le "${item##*:}" ] || lim=${item##*:}
    if [ "$lim" -lt 15 ]; then
        log "== $name: skipped, the tests' ${TESTS_S}s are spent"
        record "$name" skipped-budget -1 0
        continue
    fi
    step "$name" 15 "$lim" env OMP_NUM_THREADS=16 "$P/wrap/run" "$t"
    if [ "$STATES_PENDING" = skipped-budget ]; then record "$name" skipped-budget -1 0; continue; fi
    record "$name" "$STATES_PENDING" "$STEP_RC" "$STEP_S" "$(figures 'import json, sys
print(json.dumps({"tail": open(sys.argv[1], errors="replace").read().splitlines()[-3:]}))' "$STEP_OUT")"
done

# ---- 5. the Llama-3-8B-shaped model ------------------------------------------------------------
# Llama-3-8B in bf16 is 16 GB. Here at 2 threads gen-model wrote 3.9 s per GB, so 16 threads
# should take 10-20 s; OKV_GPU_LLAMA_LAYERS bounds it (the benchmark's filter layers need 19).
LLAMA=$W/models/llama3-8b-bf16.gguf
LAYERS=${OKV_GPU_LLAMA_LAYERS:-}
if [ "$N_GPU" -eq 0 ] || [ "${OKV_GPU_BENCH:-1}" = 0 ]; then
    record gen_llama3_8b skipped -1 0 '{"reason": "no GPU, or OKV_GPU_BENCH=0"}'
else
    free_gb=$(df -BG --output=avail /tmp | tail -n 1 | tr -dc 0-9)
    [ "${free_gb:-0}" -ge 24 ] || { LLAMA=/dev/shm/llama3-8b-bf16.gguf; log "/tmp has ${free_gb} GB free; the model goes to /dev/shm"; }
    step gen_llama3_8b 40 150 omnikv gen-model --shape llama3-8b --type bf16 ${LAYERS:+--layers $LAYERS} -o "$LLAMA"
    fig=$(figures 'import os, sys; b = os.path.getsize(sys.argv[1]) / 1e9; s = float(sys.argv[2])
print(f"{{\"gb\": {b:.2f}, \"s_per_gb\": {s / b:.2f}, \"layers\": \"{sys.argv[3] or 32}\"}}")' "$LLAMA" "$STEP_S" "$LAYERS")
    if [ "$STATES_PENDING" = skipped-budget ]; then record gen_llama3_8b skipped-budget -1 0
    else record gen_llama3_8b "$STATES_PENDING" "$STEP_RC" "$STEP_S" "$fig"; fi
fi

# ---- 6. the benchmark: omnikv, then Hugging Face transformers, in what is left -------------------
if [ "$N_GPU" -eq 0 ] || [ "${OKV_GPU_BENCH:-1}" = 0 ]; then
    record bench skipped -1 0 '{"reason": "no GPU, or OKV_GPU_BENCH=0"}'
elif [ ! -s "$LLAMA" ]; then
    record bench skipped -1 0 '{"reason": "no Llama-3-8B-shaped model"}'
else
    rem=$(left)
    step bench 60 "$rem" bash "$ROOT/tests/gpu/bench_gpu.sh" --model "$LLAMA" --out "$OUT" --budget $((rem - 5))
    fig=$(figures 'import json, sys
cases = {}
for path, kind in ((sys.argv[1], "omnikv"), (sys.argv[2], "hf")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for l in lines:
        r = json.loads(l)
        cases[r["case"]] = {k: v for k, v in r.items() if k != "case"}
print(json.dumps(cases))' "$OUT/bench_omnikv.jsonl" "$OUT/bench_hf.jsonl")
    if [ "$STATES_PENDING" = skipped-budget ]; then record bench skipped-budget -1 0
    else record bench "$STATES_PENDING" "$STEP_RC" "$STEP_S" "$fig"; fi
fi

log "device_check: done in $(($(date +%s) - START))s of ${BUDGET}s; results in $OUT/results.json"
write_results
cat "$OUT/results.json"
