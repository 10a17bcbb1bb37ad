/* transport.c — choosing and starting a stage transport, probing GPUs and CUDA-aware MPI, and
 * the polling wait every stage uses. The choice is tested by tests/unit/test_planner.c, the mpi
 * transport end to end by tests/mpi/test_pipeline.sh. */
#include "transport.h"

#include "../src/common.h"

#include <sched.h>
#include <string.h>
#include <time.h>

#if defined(__has_include)
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif
#endif
#ifdef OMNIKV_HAVE_CUDART
#include <cuda_runtime.h>
#endif

int pipe_transport_choose(okv_transport_kind want, const pipe_transport_caps *caps,
                          okv_transport_kind *out) {
    switch (want) {
    case TRANSPORT_AUTO:
        if (!caps->device_compute) *out = TRANSPORT_MPI;
        else if (caps->nccl && caps->gpus) *out = TRANSPORT_NCCL;
        else if (caps->cuda && caps->cuda_aware && caps->gpus) *out = TRANSPORT_MPI_CUDA;
        else *out = TRANSPORT_MPI;
        return OKV_OK;
    case TRANSPORT_MPI:
        *out = TRANSPORT_MPI;
        return OKV_OK;
    case TRANSPORT_MPI_CUDA:
        if (!caps->cuda)
            return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda: this omnikv was built without the "
                            "CUDA runtime; use --transport mpi");
        if (!caps->cuda_aware)
            return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda: this MPI is not CUDA-aware "
                            "(MPIX_Query_cuda_support() returned 0); use --transport mpi or nccl");
        if (!caps->gpus)
            return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda needs a GPU on every rank, and at "
                            "least one rank has none; use --transport mpi");
        *out = TRANSPORT_MPI_CUDA;
        return OKV_OK;
    case TRANSPORT_NCCL:
        if (!caps->nccl)
            return okv_fail(OKV_ERR_USAGE, "transport nccl: this omnikv was built without NCCL; "
                            "use --transport mpi");
        if (!caps->gpus)
            return okv_fail(OKV_ERR_USAGE, "transport nccl needs a GPU on every rank, and at least "
                            "one rank has none; use --transport mpi");
        *out = TRANSPORT_NCCL;
        return OKV_OK;
    }
    return okv_fail(OKV_ERR_USAGE, "unknown transport %d", (int)want);
}

void pipe_transport_probe(MPI_Comm comm, int gpu, pipe_transport_caps *caps) {
    memset(caps, 0, sizeof *caps);
#ifdef OMNIKV_HAVE_CUDART
    caps->cuda = true;
#endif
#ifdef OMNIKV_HAVE_NCCL
    caps->nccl = true;
#endif
#if defined(MPIX_CUDA_AWARE_SUPPORT)
    caps->cuda_aware = MPIX_Query_cuda_support() == 1;
#endif
    int local[2] = {gpu >= 0, caps->cuda_aware}, all[2];
    CHECK_MPI(MPI_Allreduce(local, all, 2, MPI_INT, MPI_LAND, comm));
    caps->gpus = all[0];
    caps->cuda_aware = all[1];
    /* No compute backend keeps activations on a device yet (kernels/ has only the CPU one). */
    caps->device_compute = false;
}

int pipe_transport_init(pipe_transport *t, okv_transport_kind kind, MPI_Comm comm, int gpu) {
    memset(t, 0, sizeof *t);
    switch (kind) {
    case TRANSPORT_MPI: return pipe_transport_mpi_init(t, comm);
    case TRANSPORT_MPI_CUDA: return pipe_transport_mpi_cuda_init(t, comm, gpu);
    case TRANSPORT_NCCL: return pipe_transport_nccl_init(t, comm, gpu);
    case TRANSPORT_AUTO: break;
    }
    return okv_fail(OKV_ERR_INTERNAL, "transport %s cannot be started directly",
                    config_transport_name(kind));
}

void pipe_transport_free(pipe_transport *t) {
    if (t->free) t->free(t);
    memset(t, 0, sizeof *t);
}

void pipe_wait(pipe_transport *t, pipe_buf *b) {
    const struct timespec nap = {.tv_sec = 0, .tv_nsec = 50000};
    for (int spin = 0;; spin++) {
        bool done = false;
        if (t->test(t, b, &done)) okv_die(__FILE__, __LINE__, okv_last_error());
        if (done) return;
        /* A few yields hand the core to a computing neighbour at once; after that, naps keep
         * an idle rank from spinning for the whole of a long step. */
        if (spin < 200) sched_yield();
        else nanosleep(&nap, NULL);
    }
}
