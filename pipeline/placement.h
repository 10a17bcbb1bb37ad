/* placement.h — where a rank runs: its local rank on the node, the GPU it maps to (local rank
 * modulo the node's GPUs, when the CUDA runtime finds any) and the cores hwloc binds it to, in
 * disjoint blocks so ranks on one node share no cores. The Context Bank (bank/) then allocates
 * on the NUMA node of those cores. Tested by tests/mpi/test_pipeline.sh (two ranks on this
 * two-core machine get different cores). */
#ifndef OKV_PLACEMENT_H
#define OKV_PLACEMENT_H

#include <mpi.h>
#include <stdbool.h>

typedef struct pipe_place {
    int local_rank, local_size; /* among the ranks of this node */
    int gpu;                    /* CUDA device index, -1 without one */
    int n_gpus;                 /* devices the CUDA runtime sees on this node */
    int n_cores;                /* cores this rank may use */
    bool bound;                 /* bound to its own block of cores */
    char cores[128];            /* the bound processing units as a list ("0-3"), or "all" */
    char host[64];
} pipe_place;

/* Finds the node-local rank on comm (collective), maps a GPU and binds the process to its cores
 * when the node has at least one core per rank; with more ranks than cores it leaves binding to
 * the OS and says so. Never fails: placement is an optimisation. */
void pipe_place_init(pipe_place *p, MPI_Comm comm);

#endif
