/* transport_nccl.c — NCCL send/recv for the hidden states, the control part over host MPI. The
 * receiver learns the size from the control part, then queues ncclRecv and a copy to pinned host
 * memory on its stream; completion is a CUDA event. One stream per rank keeps NCCL operations in
 * issue order, and since data only flows downstream no rank waits on a later one. Built when CMake
 * finds NCCL (OMNIKV_HAVE_NCCL); it needs a distinct GPU per rank, which neither this project's
 * CI nor its single-GPU test machines have: untested here. */
#include "transport.h"

#include "../src/common.h"

#ifdef OMNIKV_HAVE_NCCL
#include "cuda_check.h"
#include "msg.h"

#include <stdlib.h>
#include <string.h>

typedef struct nccl_state {
    ncclComm_t comm;
    cudaStream_t stream;
} nccl_state;

enum { NCCL_PHASE_CTRL = 0, NCCL_PHASE_DATA = 1 };

static int nc_buf_init(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap) {
    memset(b, 0, sizeof *b);
    b->rq[0] = b->rq[1] = MPI_REQUEST_NULL;
    b->ctrl_cap = pipe_msg_data_offset(ctrl_cap);
    b->data_cap = data_cap;
    b->wire = okv_alloc(b->ctrl_cap);
    if (!b->wire) return okv_fail(OKV_ERR_NOMEM, "cannot allocate a stage message buffer");
    if (cudaMalloc(&b->dev, data_cap ? data_cap : 64) != cudaSuccess ||
        cudaMallocHost((void **)&b->host_data, data_cap ? data_cap : 64) != cudaSuccess)
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate %zu bytes of device and pinned host "
                        "memory for a stage message buffer", data_cap);
    cudaEvent_t ev;
    CHECK_CUDA(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    b->event = ev;
    return OKV_OK;
}

static void nc_buf_free(pipe_transport *t, pipe_buf *b) {
    okv_free_mem(b->wire);
    if (b->dev) cudaFree(b->dev);
    if (b->host_data) cudaFreeHost(b->host_data);
    if (b->event) cudaEventDestroy((cudaEvent_t)b->event);
    memset(b, 0, sizeof *b);
}

static void nc_send(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const float *x,
                    size_t data_bytes, int peer, int tag) {
    nccl_state *ns = t->state;
    OKV_ASSERT(!b->active && ctrl_bytes <= b->ctrl_cap && data_bytes <= b->data_cap);
    CHECK_MPI(MPI_Isend(b->wire, (int)ctrl_bytes, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    b->phase = NCCL_PHASE_CTRL;
    if (data_bytes) {
        CHECK_CUDA(cudaMemcpyAsync(b->dev, x, data_bytes, cudaMemcpyHostToDevice, ns->stream));
        CHECK_NCCL(ncclSend(b->dev, data_bytes, ncclUint8, peer, ns->comm, ns->stream));
        CHECK_CUDA(cudaEventRecord((cudaEvent_t)b->event, ns->stream));
        b->phase = NCCL_PHASE_DATA;
    }
    b->active = true;
    b->recv = false;
    b->peer = peer;
}

static void nc_recv(pipe_transport *t, pipe_buf *b, int peer, int tag) {
    OKV_ASSERT(!b->active);
    CHECK_MPI(MPI_Irecv(b->wire, (int)b->ctrl_cap, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    b->active = true;
    b->recv = true;
    b->peer = peer;
    b->phase = NCCL_PHASE_CTRL;
    b->data = NULL;
    b->got_ctrl = b->got_data = 0;
}

/* Whether the queued device work of b has finished. */
static bool event_done(pipe_buf *b) {
    cudaError_t e = cudaEventQuery((cudaEvent_t)b->event);
    if (e == cudaErrorNotReady) return false;
    CHECK_CUDA(e);
    return true;
}

static int nc_test(pipe_transport *t, pipe_buf *b, bool *done) {
    nccl_state *ns = t->state;
    *done = !b->active;
    if (*done) return OKV_OK;
    if (!b->recv) {
        int flag = 0;
        CHECK_MPI(MPI_Test(&b->rq[0], &flag, MPI_STATUS_IGNORE));
        if (!flag || (b->phase == NCCL_PHASE_DATA && !event_done(b))) return OKV_OK;
        b->active = false;
        *done = true;
        return OKV_OK;
    }
    if (b->phase == NCCL_PHASE_CTRL) {
        int flag = 0, got = 0;
        MPI_Status st;
        CHECK_MPI(MPI_Test(&b->rq[0], &flag, &st));
        if (!flag) return OKV_OK;
        CHECK_MPI(MPI_Get_count(&st, MPI_BYTE, &got));
        b->got_ctrl = (size_t)got;
        const pipe_hdr *h = (const pipe_hdr *)b->wire;
        size_t bytes = 0;
        if ((size_t)got >= sizeof *h && (h->kind == PIPE_MSG_DECODE || h->kind == PIPE_MSG_PREFILL))
            bytes = (size_t)h->n_tok * (size_t)h->dim * sizeof(float);
        if (bytes > b->data_cap)
            return okv_fail(OKV_ERR_INTERNAL, "a stage message announces %zu bytes of hidden "
                            "states; buffers hold %zu", bytes, b->data_cap);
        if (!bytes) {
            b->active = false;
            *done = true;
            return OKV_OK;
        }
        CHECK_NCCL(ncclRecv(b->dev, bytes, ncclUint8, b->peer, ns->comm, ns->stream));
        CHECK_CUDA(cudaMemcpyAsync(b->host_data, b->dev, bytes, cudaMemcpyDeviceToHost, ns->stream));
        CHECK_CUDA(cudaEventRecord((cudaEvent_t)b->event, ns->stream));
        b->got_data = bytes;
        b->phase = NCCL_PHASE_DATA;
    }
    if (!event_done(b)) return OKV_OK;
    b->data = b->host_data;
    b->active = false;
    *done = true;
    return OKV_OK;
}

static void nc_free(pipe_transport *t) {
    nccl_state *ns = t->state;
    if (!ns) return;
    if (ns->comm) ncclCommDestroy(ns->comm);
    if (ns->stream) cudaStreamDestroy(ns->stream);
    free(ns);
    t->state = NULL;
}

int pipe_transport_nccl_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    if (gpu < 0) return okv_fail(OKV_ERR_USAGE, "transport nccl needs a GPU on every rank");
    int rank, size;
    CHECK_MPI(MPI_Comm_rank(comm, &rank));
    CHECK_MPI(MPI_Comm_size(comm, &size));
    CHECK_CUDA(cudaSetDevice(gpu));
    ncclUniqueId id;
    if (rank == 0) CHECK_NCCL(ncclGetUniqueId(&id));
    CHECK_MPI(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, comm));
    nccl_state *ns = calloc(1, sizeof *ns);
    OKV_ASSERT(ns);
    t->state = ns;
    CHECK_CUDA(cudaStreamCreateWithFlags(&ns->stream, cudaStreamNonBlocking));
    CHECK_NCCL(ncclCommInitRank(&ns->comm, size, id, rank));
    t->kind = TRANSPORT_NCCL;
    t->name = "nccl";
    t->comm = comm;
    t->buf_init = nc_buf_init;
    t->buf_free = nc_buf_free;
    t->send = nc_send;
    t->recv = nc_recv;
    t->test = nc_test;
    t->free = nc_free;
    return OKV_OK;
}

#else

int pipe_transport_nccl_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    return okv_fail(OKV_ERR_USAGE, "transport nccl: this omnikv was built without NCCL; use "
                    "--transport mpi");
}

#endif
