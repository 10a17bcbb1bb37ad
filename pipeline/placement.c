/* placement.c — node-local rank, GPU mapping and hwloc core binding for pipeline ranks. Tested by
 * tests/mpi/test_pipeline.sh, which checks that two ranks on one node are bound to disjoint
 * cores. */
#include "placement.h"

#include "../src/common.h"

#include <hwloc.h>
#include <string.h>
#include <unistd.h>

#ifdef OMNIKV_HAVE_CUDART
#include <cuda_runtime.h>
#endif

static void map_gpu(pipe_place *p) {
    p->gpu = -1;
    p->n_gpus = 0;
#ifdef OMNIKV_HAVE_CUDART
    int n = 0;
    /* Without a driver or device the runtime reports an error: that is "no GPU", not a failure. */
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        cudaGetLastError();
        return;
    }
    p->n_gpus = n;
    p->gpu = p->local_rank % n;
    if (cudaSetDevice(p->gpu) != cudaSuccess) {
        OKV_WARN("cannot select GPU %d; running without one", p->gpu);
        cudaGetLastError();
        p->gpu = -1;
    }
    if (p->local_size > n && p->local_rank == 0)
        OKV_WARN("%d ranks share this node's %d GPU(s)", p->local_size, n);
#endif
}

static void bind_cores(pipe_place *p) {
    hwloc_topology_t topo;
    snprintf(p->cores, sizeof p->cores, "all");
    if (hwloc_topology_init(&topo) || hwloc_topology_load(topo)) {
        OKV_WARN("hwloc could not read the machine topology; ranks are not bound to cores");
        return;
    }
    int n_cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    hwloc_obj_type_t unit = HWLOC_OBJ_CORE;
    if (n_cores <= 0) {
        unit = HWLOC_OBJ_PU;
        n_cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    }
    p->n_cores = n_cores > 0 ? n_cores : 1;
    if (p->local_size > n_cores || n_cores <= 0) {
        /* Oversubscribed: any binding would put two ranks on a core; the OS balances better. */
        p->n_cores = 1;
        if (p->local_rank == 0)
            OKV_INFO("%d ranks on this node's %d core(s): ranks are not bound, they share cores",
                     p->local_size, n_cores);
        hwloc_topology_destroy(topo);
        return;
    }
    int first = p->local_rank * n_cores / p->local_size;
    int last = (p->local_rank + 1) * n_cores / p->local_size;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    for (int c = first; c < last; c++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, unit, (unsigned)c);
        if (o && o->cpuset) hwloc_bitmap_or(set, set, o->cpuset);
    }
    if (hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) == 0) {
        p->bound = true;
        p->n_cores = last - first;
        hwloc_bitmap_list_snprintf(p->cores, sizeof p->cores, set);
    } else {
        OKV_WARN("hwloc could not bind this rank to cores %d-%d; it runs unbound", first, last - 1);
        p->n_cores = OKV_MAX(1, n_cores / p->local_size);
    }
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(topo);
}

void pipe_place_init(pipe_place *p, MPI_Comm comm) {
    memset(p, 0, sizeof *p);
    gethostname(p->host, sizeof p->host - 1);
    MPI_Comm node;
    CHECK_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    CHECK_MPI(MPI_Comm_rank(node, &p->local_rank));
    CHECK_MPI(MPI_Comm_size(node, &p->local_size));
    CHECK_MPI(MPI_Comm_free(&node));
    map_gpu(p);
    bind_cores(p);
}
