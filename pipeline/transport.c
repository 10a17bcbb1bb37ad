/* transport.c — choosing and starting a stage transport, probing GPUs and CUDA-aware MPI, the
 * GPU-sharing check, and the polling wait with its deadline every stage uses. The choice and the
 * sharing check are tested by tests/unit/test_planner.c, the mpi transport end to end by
 * tests/mpi/test_pipeline.sh, the deadline by tests/mpi/test_two_hosts.sh (a cut link). */
#include "transport.h"

#include "../src/common.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

void pipe_transport_probe(MPI_Comm comm, int gpu, double timeout_s, pipe_transport_caps *caps) {
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
    MPI_Request rq;
    CHECK_MPI(MPI_Iallreduce(local, all, 2, MPI_INT, MPI_LAND, comm, &rq));
    pipe_wait_coll(comm, &rq, timeout_s, "start-up (every rank loading its layers)");
    caps->gpus = all[0];
    caps->cuda_aware = all[1];
    /* No compute backend keeps activations on a device yet (kernels/ has only the CPU one). */
    caps->device_compute = false;
}

int pipe_transport_init(pipe_transport *t, okv_transport_kind kind, MPI_Comm comm, int gpu,
                        okv_backend *be, double timeout_s) {
    memset(t, 0, sizeof *t);
    int st = OKV_ERR_INTERNAL;
    switch (kind) {
    case TRANSPORT_MPI: st = pipe_transport_mpi_init(t, comm); break;
    case TRANSPORT_MPI_CUDA: st = pipe_transport_mpi_cuda_init(t, comm, gpu); break;
    case TRANSPORT_NCCL: st = pipe_transport_nccl_init(t, comm, gpu); break;
    case TRANSPORT_AUTO:
        return okv_fail(OKV_ERR_INTERNAL, "transport %s cannot be started directly",
                        config_transport_name(kind));
    }
    CHECK_MPI(MPI_Comm_rank(comm, &t->rank));
    t->be = be;
    t->timeout_s = timeout_s;
    return st;
}

void pipe_transport_free(pipe_transport *t) {
    if (t->free) t->free(t);
    memset(t, 0, sizeof *t);
}

_Noreturn void pipe_peer_lost(const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[r%d] %s: aborting the job\n", okv_log_rank(), msg);
    fflush(stderr);
    /* MPI_Abort tells the launcher, which may be as unreachable as the peer: should the call
     * block or return, the alarm and _exit end the rank anyway. */
    alarm(10);
    MPI_Abort(MPI_COMM_WORLD, OKV_ERR_INTERNAL);
    _exit(OKV_ERR_INTERNAL);
}

/* The wait's clock: a few yields hand the core to a computing neighbour at once; after that,
 * naps keep an idle rank from spinning for the whole of a long step. Returns false once the
 * deadline has passed. */
typedef struct wait_clock {
    double t0, timeout_s;
    unsigned polls; /* wraps harmlessly after days of waiting without a deadline */
} wait_clock;

static bool wait_more(wait_clock *w) {
    const struct timespec nap = {.tv_sec = 0, .tv_nsec = 50000};
    if (w->polls < 200) sched_yield();
    else nanosleep(&nap, NULL);
    w->polls++;
    /* the clock is read every 64 polls: naps make that a few milliseconds */
    return !(w->timeout_s > 0 && (w->polls & 63) == 0 && okv_now_s() - w->t0 > w->timeout_s);
}

void pipe_wait(pipe_transport *t, pipe_buf *b, const char *what, int64_t seqno) {
    wait_clock w = {.t0 = okv_now_s(), .timeout_s = t->timeout_s};
    for (;;) {
        bool done = false;
        if (t->test(t, b, &done))
            pipe_peer_lost("the %s link with rank %d failed while %s %s %lld: %s", t->name,
                           b->peer, b->recv ? "receiving" : "sending", what, (long long)seqno,
                           okv_last_error());
        if (done) return;
        if (wait_more(&w)) continue;
        if (b->recv)
            pipe_peer_lost("no %s from rank %d for %g s while waiting for message %lld on that "
                           "link; the peer or the link is gone (peer_timeout_s sets this "
                           "deadline)", what, b->peer, t->timeout_s, (long long)seqno);
        pipe_peer_lost("rank %d has not taken %s %lld for %g s; the peer or the link is gone "
                       "(peer_timeout_s sets this deadline)", b->peer, what, (long long)seqno,
                       t->timeout_s);
    }
}

void pipe_wait_coll(MPI_Comm comm, MPI_Request *rq, double timeout_s, const char *what) {
    wait_clock w = {.t0 = okv_now_s(), .timeout_s = timeout_s};
    for (;;) {
        int flag = 0;
        CHECK_MPI(MPI_Test(rq, &flag, MPI_STATUS_IGNORE));
        if (flag) return;
        if (!wait_more(&w))
            pipe_peer_lost("%s has not completed in %g s; a rank or the link to it is gone "
                           "(peer_timeout_s sets this deadline)", what, timeout_s);
    }
}

int pipe_gpu_shared(const int *node, const char (*bus)[32], int n, int *a, int *b) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n && bus[i][0]; j++)
            if (node[i] == node[j] && !strcmp(bus[i], bus[j])) {
                *a = i;
                *b = j;
                return 1;
            }
    return 0;
}
