/* transport_nccl.c — NCCL send/recv for the payload, the control part over host MPI. Each link
 * (rank r and r + 1) has a two-rank NCCL communicator and a stream of its own, so a stage's
 * receive from its predecessor never queues behind its send to its successor. The receiver learns
 * the payload size from the control part's header, then queues ncclRecv into the buffer's device
 * memory (and, for a host buffer, a copy to pinned host memory) on the link's stream; completion
 * is a CUDA event, and while it is pending the link's ncclCommGetAsyncError is checked, so a dead
 * peer ends the job with a sentence instead of a hang. A send copies the payload into the
 * buffer's device memory first (device to device on a copy stream, or through pinned host memory
 * for a host payload), so the caller may reuse it at once. Two ranks of a node on one GPU are a
 * usage error (NCCL cannot pair a GPU with itself). Built when CMake finds NCCL; it needs a
 * distinct GPU per rank, which neither this project's CI nor its single-GPU test machines have:
 * untested here. */
#include "transport.h"

#include "../src/common.h"

#ifdef OMNIKV_HAVE_NCCL
#include "cuda_check.h"
#include "msg.h"

#include <stdlib.h>
#include <string.h>

typedef struct nccl_link {
    ncclComm_t comm;     /* the two ranks of the link; NULL: no such neighbour */
    cudaStream_t stream; /* every NCCL operation of the link, in issue order */
    int peer;            /* the neighbour's rank in the transport's communicator */
    int peer_in_link;    /* ... and in the link's communicator */
} nccl_link;

typedef struct nccl_state {
    nccl_link link[2];  /* [0]: with rank - 1, [1]: with rank + 1 */
    cudaStream_t copy;  /* device-to-device copies of payloads into send buffers */
} nccl_state;

enum { NCCL_PHASE_CTRL = 0, NCCL_PHASE_DATA = 1 };

static nccl_link *link_of(pipe_transport *t, int peer) {
    nccl_state *ns = t->state;
    for (int i = 0; i < 2; i++)
        if (ns->link[i].comm && ns->link[i].peer == peer) return &ns->link[i];
    okv_die(__FILE__, __LINE__, "the nccl transport links neighbouring ranks only");
}

static int nc_buf_init(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap,
                       okv_mem_kind into) {
    memset(b, 0, sizeof *b);
    b->rq[0] = b->rq[1] = MPI_REQUEST_NULL;
    b->ctrl_cap = pipe_msg_data_offset(ctrl_cap);
    b->data_cap = data_cap;
    b->into = into;
    b->wire = okv_alloc(b->ctrl_cap);
    if (!b->wire) return okv_fail(OKV_ERR_NOMEM, "cannot allocate a stage message buffer");
    const size_t n = data_cap ? data_cap : 64;
    if (cudaMalloc(&b->dev, n) != cudaSuccess || cudaMallocHost(&b->host, n) != cudaSuccess)
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
    if (b->host) cudaFreeHost(b->host);
    if (b->event) cudaEventDestroy((cudaEvent_t)b->event);
    memset(b, 0, sizeof *b);
}

static void nc_send(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const void *x,
                    okv_mem_kind where, size_t data_bytes, int peer, int tag) {
    nccl_state *ns = t->state;
    OKV_ASSERT(!b->active && ctrl_bytes <= b->ctrl_cap && data_bytes <= b->data_cap);
    CHECK_MPI(MPI_Isend(b->wire, (int)ctrl_bytes, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    b->phase = NCCL_PHASE_CTRL;
    if (data_bytes) {
        nccl_link *l = link_of(t, peer);
        if (where == OKV_MEM_DEVICE) {
            CHECK_CUDA(cudaMemcpyAsync(b->dev, x, data_bytes, cudaMemcpyDeviceToDevice, ns->copy));
            CHECK_CUDA(cudaStreamSynchronize(ns->copy));
        } else {
            memcpy(b->host, x, data_bytes);
            CHECK_CUDA(cudaMemcpyAsync(b->dev, b->host, data_bytes, cudaMemcpyHostToDevice,
                                       l->stream));
        }
        CHECK_NCCL(ncclSend(b->dev, data_bytes, ncclUint8, l->peer_in_link, l->comm, l->stream));
        CHECK_CUDA(cudaEventRecord((cudaEvent_t)b->event, l->stream));
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

/* Whether the device work queued for b has finished; a link error (the peer died, the network
 * failed) aborts the link's communicator and returns a status naming it. */
static int event_done(pipe_transport *t, pipe_buf *b, bool *done) {
    cudaError_t e = cudaEventQuery((cudaEvent_t)b->event);
    *done = e == cudaSuccess;
    if (e != cudaErrorNotReady) {
        CHECK_CUDA(e);
        return OKV_OK;
    }
    nccl_link *l = link_of(t, b->peer);
    ncclResult_t r = ncclSuccess;
    CHECK_NCCL(ncclCommGetAsyncError(l->comm, &r));
    if (r == ncclSuccess || r == ncclInProgress) return OKV_OK;
    ncclCommAbort(l->comm);
    l->comm = NULL;
    return okv_fail(OKV_ERR_INTERNAL, "NCCL reports '%s' on the link with rank %d",
                    ncclGetErrorString(r), b->peer);
}

static int nc_test(pipe_transport *t, pipe_buf *b, bool *done) {
    *done = !b->active;
    if (*done) return OKV_OK;
    bool dev_done = true;
    if (!b->recv) {
        int flag = 0;
        CHECK_MPI(MPI_Test(&b->rq[0], &flag, MPI_STATUS_IGNORE));
        if (b->phase == NCCL_PHASE_DATA && event_done(t, b, &dev_done)) return OKV_ERR_INTERNAL;
        if (!flag || !dev_done) return OKV_OK;
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
        pipe_hdr h;
        if (pipe_hdr_read(b->wire, (size_t)got, &h)) return OKV_ERR_INTERNAL;
        b->got_ctrl = (size_t)h.ctrl_bytes;
        if (h.data_bytes > b->data_cap)
            return okv_fail(OKV_ERR_INTERNAL, "a stage message announces a payload of %llu bytes; "
                            "buffers hold %zu", (unsigned long long)h.data_bytes, b->data_cap);
        if (!h.data_bytes) {
            b->active = false;
            *done = true;
            return OKV_OK;
        }
        nccl_link *l = link_of(t, b->peer);
        CHECK_NCCL(ncclRecv(b->dev, (size_t)h.data_bytes, ncclUint8, l->peer_in_link, l->comm,
                            l->stream));
        if (b->into == OKV_MEM_HOST)
            CHECK_CUDA(cudaMemcpyAsync(b->host, b->dev, (size_t)h.data_bytes,
                                       cudaMemcpyDeviceToHost, l->stream));
        CHECK_CUDA(cudaEventRecord((cudaEvent_t)b->event, l->stream));
        b->got_data = (size_t)h.data_bytes;
        b->phase = NCCL_PHASE_DATA;
    }
    if (event_done(t, b, &dev_done)) return OKV_ERR_INTERNAL;
    if (!dev_done) return OKV_OK;
    b->data = b->into == OKV_MEM_DEVICE ? b->dev : b->host;
    b->active = false;
    *done = true;
    return OKV_OK;
}

static void nc_free(pipe_transport *t) {
    nccl_state *ns = t->state;
    if (!ns) return;
    for (int i = 0; i < 2; i++) {
        if (ns->link[i].comm) ncclCommDestroy(ns->link[i].comm);
        if (ns->link[i].stream) cudaStreamDestroy(ns->link[i].stream);
    }
    if (ns->copy) cudaStreamDestroy(ns->copy);
    free(ns);
    t->state = NULL;
}

typedef struct gpu_id {
    int node;        /* the lowest rank on the node */
    char bus[32];    /* PCI bus id of the rank's GPU */
    char host[64];
} gpu_id;

/* Collective: OKV_ERR_USAGE on every rank, with the same sentence, when two ranks of a node use
 * one GPU. */
static int check_gpu_sharing(MPI_Comm comm, int rank, int size, int gpu) {
    gpu_id me;
    memset(&me, 0, sizeof me);
    MPI_Comm node;
    CHECK_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    CHECK_MPI(MPI_Allreduce(&rank, &me.node, 1, MPI_INT, MPI_MIN, node));
    CHECK_MPI(MPI_Comm_free(&node));
    CHECK_CUDA(cudaDeviceGetPCIBusId(me.bus, (int)sizeof me.bus, gpu));
    int len = 0;
    char host[MPI_MAX_PROCESSOR_NAME];
    CHECK_MPI(MPI_Get_processor_name(host, &len));
    snprintf(me.host, sizeof me.host, "%.63s", host);
    gpu_id *all = calloc((size_t)size, sizeof *all);
    int *nodes = calloc((size_t)size, sizeof *nodes);
    char(*bus)[32] = calloc((size_t)size, sizeof *bus);
    OKV_ASSERT(all && nodes && bus);
    CHECK_MPI(MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, comm));
    for (int r = 0; r < size; r++) {
        nodes[r] = all[r].node;
        memcpy(bus[r], all[r].bus, sizeof bus[r]);
    }
    int a = 0, b = 0, st = OKV_OK;
    if (pipe_gpu_shared(nodes, (const char(*)[32])bus, size, &a, &b))
        st = okv_fail(OKV_ERR_USAGE, "transport nccl: ranks %d and %d on %s share the GPU at PCI "
                      "bus %s, and NCCL needs a GPU of its own for every rank; start one rank per "
                      "GPU or use --transport mpi", a, b, all[a].host, all[a].bus);
    free(all);
    free(nodes);
    free(bus);
    return st;
}

int pipe_transport_nccl_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    if (gpu < 0) return okv_fail(OKV_ERR_USAGE, "transport nccl needs a GPU on every rank");
    int rank, size;
    CHECK_MPI(MPI_Comm_rank(comm, &rank));
    CHECK_MPI(MPI_Comm_size(comm, &size));
    CHECK_CUDA(cudaSetDevice(gpu));
    int st = check_gpu_sharing(comm, rank, size, gpu);
    if (st) return st;
    ncclUniqueId id;
    if (rank == 0) CHECK_NCCL(ncclGetUniqueId(&id));
    CHECK_MPI(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, comm));
    nccl_state *ns = calloc(1, sizeof *ns);
    OKV_ASSERT(ns);
    t->state = ns;
    ncclComm_t world;
    CHECK_NCCL(ncclCommInitRank(&world, size, id, rank));
    /* Two splits make every link's communicator: links (2i, 2i+1), then (2i+1, 2i+2); a rank is
     * in one link of each split, the lower rank first. */
    for (int round = 0; round < 2; round++) {
        const int partner = round == 0 ? rank ^ 1 : ((rank - 1) ^ 1) + 1;
        const bool has = partner >= 0 && partner < size;
        const int color = has ? (round == 0 ? rank / 2 : (rank + 1) / 2) : NCCL_SPLIT_NOCOLOR;
        ncclComm_t c = NULL;
        CHECK_NCCL(ncclCommSplit(world, color, rank, &c, NULL));
        if (!has) continue;
        nccl_link *l = &ns->link[partner > rank];
        l->comm = c;
        l->peer = partner;
        l->peer_in_link = partner > rank;
        CHECK_CUDA(cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking));
    }
    CHECK_NCCL(ncclCommDestroy(world));
    CHECK_CUDA(cudaStreamCreateWithFlags(&ns->copy, cudaStreamNonBlocking));
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
