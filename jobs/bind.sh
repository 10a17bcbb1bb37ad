#!/usr/bin/env bash
# bind.sh — per-rank wrapper: binds the rank's cores and memory with hwloc before exec'ing the
# command, by the node-local rank (Open MPI, Slurm or MPICH variables). BIND=numa: rank i of a
# node gets NUMA node i mod (NUMA nodes), and ranks sharing a node split its cores; BIND=gpu:
# rank i gets GPU i (CUDA_VISIBLE_DEVICES, unless Slurm already narrowed it) and the cores and
# memory nearest to it; BIND=none: no binding. OMNIKV_THREADS defaults to the cores bound. Used by jobs/run.sbatch; tested through
# tests/slurm/test_slurm.sh (numa on a one-NUMA-node machine).
set -euo pipefail
lr=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-${MPI_LOCALRANKID:-0}}}
ls=${OMPI_COMM_WORLD_LOCAL_SIZE:-${SLURM_TASKS_PER_NODE:-${MPI_LOCALNRANKS:-1}}}
ls=${ls%%[(,]*} # Slurm writes "2(x3)" or "3,1"
mode=${BIND:-numa}
say() { [ "${OMNIKV_BIND_VERBOSE:-0}" = 1 ] && echo "[bind] local rank $lr: $*" >&2 || true; }

n_numa=$(hwloc-calc --number-of numanode machine:0 2>/dev/null || echo 0)
[ "$n_numa" -ge 1 ] 2>/dev/null || n_numa=1
# Ranks of this node that share a NUMA node (more ranks than nodes) split its cores evenly.
numa_location() {
    local node=$((lr % n_numa)) sharers=$(((ls + n_numa - 1) / n_numa)) cores per slot
    cores=$(hwloc-calc --number-of core "numa:$node" 2>/dev/null || echo 0)
    if [ "$sharers" -gt 1 ] && [ "$cores" -ge "$sharers" ] 2>/dev/null; then
        per=$((cores / sharers))
        slot=$((lr / n_numa))
        echo "numa:$node.core:$((slot * per))-$((slot * per + per - 1))"
    else
        echo "numa:$node"
    fi
}

case $mode in
none)
    exec "$@"
    ;;
numa)
    loc=$(numa_location)
    ;;
gpu)
    if [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then
        export CUDA_VISIBLE_DEVICES=$lr
        gpu=$lr
    else
        gpu=${CUDA_VISIBLE_DEVICES%%,*} # Slurm's --gpus-per-task leaves the rank its own GPU first
    fi
    # hwloc wants the PCI address as dddd:bb:dd.f; nvidia-smi prints dddddddd:bb:dd.f.
    bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader -i "$gpu" 2>/dev/null | head -n1 || true)
    if [ -n "$bus" ]; then
        loc="pci=${bus: -12}"
        loc=${loc,,}
    else
        say "no nvidia-smi answer for GPU $gpu; binding to a NUMA node instead"
        loc=$(numa_location)
    fi
    ;;
*)
    echo "bind.sh: BIND must be numa, gpu or none, not '$mode'" >&2
    exit 2
    ;;
esac
if [ -z "${OMNIKV_THREADS:-}" ]; then
    cores=$(hwloc-calc --number-of core "$loc" 2>/dev/null || echo 0)
    [ "$cores" -ge 1 ] 2>/dev/null && export OMNIKV_THREADS=$cores
fi
say "$loc, OMNIKV_THREADS=${OMNIKV_THREADS:-auto}"
exec hwloc-bind --cpubind "$loc" --membind "$loc" -- "$@"
