#!/usr/bin/env bash
# test_slurm.sh — jobs/run.sbatch under a real Slurm: starts munge and a one-node Slurm
# (slurmctld + slurmd, Debian's slurm-wlm) on localhost in a temporary directory, with their own
# socket, ports and state, waits for the node to be idle, then submits run.sbatch with sbatch on a
# generated tiny model: a 2-rank eval through mpirun (hwloc binding per rank), the same through
# srun when Slurm's PMIx plugin can start Open MPI, a 2-stage pipeline bench, and a job that must
# fail (a missing model).
# Checks each job's state, exit code and output, and stops every daemon it started.
# Needs OMNIKV_BIN, OMNIKV_SRC; the packages slurm-wlm and munge (scripts/setup.sh --test).
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:?OMNIKV_SRC must name the omnikv checkout}
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
for tool in munged munge unmunge slurmctld slurmd sbatch sinfo scontrol hwloc-bind; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing; install slurm-wlm and munge (scripts/setup.sh --test)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "FAIL: the test starts slurmd and munged, which needs root"; exit 1; }

T=$(mktemp -d /tmp/okv_slurm.XXXXXX)
chmod 755 "$T"
cleanup() {
    for pidfile in "$T/slurmd.pid" "$T/slurmctld.pid" "$T/munge/munged.pid"; do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null
        fi
    done
    rm -rf "$T"
}
trap cleanup EXIT
# A daemon's log, for a failure message.
show() { echo "---- $1" >&2; tail -n 20 "$1" >&2 2>/dev/null; }

# ---- munge, on its own socket ------------------------------------------------------------------
M=$T/munge
mkdir -p "$M"
dd if=/dev/urandom of="$M/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$M"
chmod 700 "$M"
chmod 400 "$M/munge.key"
runuser -u munge -- munged --force --socket="$M/munge.sock" --key-file="$M/munge.key" \
    --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/munged.seed"
if ! munge -n -S "$M/munge.sock" | unmunge -S "$M/munge.sock" >/dev/null; then
    show "$M/munged.log"
    echo "FAIL: munged did not start"
    exit 1
fi

# ---- slurm.conf: the recipe's one-node cluster, with private ports, state and munge socket -----
host=$(hostname)
node=$(slurmd -C | head -n 1)
base=$((20000 + RANDOM % 20000))
cat >"$T/slurm.conf" <<EOF
ClusterName=okvtest
SlurmctldHost=$host
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$M/munge.sock
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
mkdir -p "$T/state" "$T/spool"
export SLURM_CONF=$T/slurm.conf
slurmctld -f "$SLURM_CONF" || { show "$T/slurmctld.log"; echo "FAIL: slurmctld did not start"; exit 1; }
slurmd -f "$SLURM_CONF" || { show "$T/slurmd.log"; echo "FAIL: slurmd did not start"; exit 1; }
state=""
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1)
    [ "$state" = idle ] && break
    sleep 0.5
done
if [ "$state" != idle ]; then
    show "$T/slurmctld.log"
    show "$T/slurmd.log"
    echo "FAIL: the node is '$state', not idle, 30 s after start"
    exit 1
fi
echo "slurm up: node $host idle, ports $base/$((base + 1))"

# ---- jobs ----------------------------------------------------------------------------------------
"$BIN" gen-model --shape tiny -o "$T/tiny.gguf" 2>/dev/null || { echo "FAIL: gen-model"; exit 1; }
export OMNIKV_BIN=$BIN OMNIKV_SRC=$SRC OMNIKV_LOG=warn OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# submit NAME EXPECTED_EXIT [sbatch flags...] -- [omnikv args...]: runs the job to its end
# (bounded), then checks its state and exit code. Leaves the output in $T/NAME.out.
submit() {
    local name=$1 want=$2
    shift 2
    local flags=()
    while [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    local id
    id=$(sbatch --parsable --job-name="$name" --output="$T/$name.out" --chdir="$T" "${flags[@]}" \
        "$SRC/jobs/run.sbatch" "$@") || { fail "$name: sbatch refused the job"; return 1; }
    local jstate="" code=""
    for _ in $(seq 360); do
        jstate=$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
        case $jstate in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
        sleep 0.5
    done
    code=$(scontrol show job "$id" 2>/dev/null | grep -o ' ExitCode=[0-9]*' | cut -d= -f2)
    local want_state=COMPLETED
    [ "$want" != 0 ] && want_state=FAILED
    if [ "$jstate" != "$want_state" ] || [ "$code" != "$want" ]; then
        show "$T/$name.out"
        fail "$name: job $id ended $jstate with exit $code; want $want_state with exit $want"
        return 1
    fi
    echo "$name: job $id $jstate, exit $code"
}

check_eval() { # NAME: the job's eval wrote 2 records per variant and its summary row
    local name=$1
    grep -Eq '^passkey +512 ' "$T/$name.out" || { show "$T/$name.out"; fail "$name: no summary row for passkey 512"; }
    grep -q "2 rank(s), 2 per node, bind numa" "$T/$name.out" || fail "$name: the job did not start 2 ranks"
    grep -Eq '^\[job [0-9]+\] .* done$' "$T/$name.out" || fail "$name: the job script did not finish"
    local n
    n=$(wc -l <"$T/$name.jsonl" 2>/dev/null || echo 0)
    [ "$n" -eq 4 ] || fail "$name: $n sample records, want 4 (2 samples x 2 variants)"
    sed 's/^/  | /' "$T/$name.out"
}

submit mpirun 0 --ntasks=2 --export=ALL,LAUNCHER=mpirun,BIND=numa -- \
    eval -m "$T/tiny.gguf" --task passkey --ctx 512 --count 2 --variants dense,0.5 \
    --set do_select_layers=1 -o "$T/mpirun.jsonl" && check_eval mpirun

if srun --mpi=list 2>&1 | grep -q pmix; then
    submit srun 0 --ntasks=2 --export=ALL,LAUNCHER=srun,BIND=numa -- \
        eval -m "$T/tiny.gguf" --task passkey --ctx 512 --count 2 --variants dense,0.5 \
        --set do_select_layers=1 -o "$T/srun.jsonl" && check_eval srun
else
    echo "srun: this Slurm has no PMIx plugin; only the mpirun launcher was tried"
fi

# A pipeline over both ranks: bench splits the layers into two stages.
submit pipeline 0 --ntasks=2 --export=ALL,LAUNCHER=mpirun,BIND=numa -- \
    bench -m "$T/tiny.gguf" --ctx 64,128 --gen 4 --runs 1 --warmup 0 --variants dense,16 \
    --set do_select_layers=1 --set threads=1 -o "$T/bench.json" &&
    { python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))
assert b["ranks"] == 2 and len(b["results"]) == 4, b
assert all(r["decode_tok_s"] > 0 for r in b["results"]), b' "$T/bench.json" ||
        { show "$T/pipeline.out"; fail "pipeline: the 2-rank bench JSON is wrong"; }; }

# A job whose command fails must fail as a job, with omnikv's message in its output.
submit broken 3 --ntasks=1 --export=ALL,LAUNCHER=mpirun,BIND=numa -- \
    eval -m "$T/missing.gguf" --task passkey --ctx 512 --count 1 &&
    { grep -q "missing.gguf" "$T/broken.out" || { show "$T/broken.out"; fail "broken: no error message naming the model"; }; }

[ "$FAILS" -eq 0 ] && echo "slurm: all checks passed" || echo "slurm: $FAILS check(s) failed"
exit $((FAILS > 0))
