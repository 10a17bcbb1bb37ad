/* transport_mpi_cuda.c — CUDA-aware MPI: the control part as a host MPI message, the payload as a
 * second MPI message (tag + 1; always sent, possibly empty, so the two streams of messages stay
 * paired) straight from and into the buffer's own memory: device memory for a device payload,
 * pinned host memory for a host one. CUDA-aware MPI moves either kind, and between kinds, so
 * nothing crosses the host that does not live there. A send first copies the payload into the
 * buffer (device to device on the transport's copy stream, or a host memcpy), so the caller may
 * reuse it at once. Built when CMake finds the CUDA runtime; run only where
 * MPIX_Query_cuda_support() reports CUDA-aware MPI and every rank has a GPU, which no machine of
 * this project's CI has: untested here. */
#include "transport.h"

#include "../src/common.h"

#ifdef OMNIKV_HAVE_CUDART
#include "cuda_check.h"
#include "msg.h"

#include <stdlib.h>
#include <string.h>

typedef struct mc_state {
    cudaStream_t copy; /* device-to-device copies of payloads into send buffers */
} mc_state;

static int mc_buf_init(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap,
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
    return OKV_OK;
}

static void mc_buf_free(pipe_transport *t, pipe_buf *b) {
    okv_free_mem(b->wire);
    if (b->dev) cudaFree(b->dev);
    if (b->host) cudaFreeHost(b->host);
    memset(b, 0, sizeof *b);
}

static void mc_send(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const void *x,
                    okv_mem_kind where, size_t data_bytes, int peer, int tag) {
    mc_state *ms = t->state;
    OKV_ASSERT(!b->active && ctrl_bytes <= b->ctrl_cap && data_bytes <= b->data_cap);
    void *src = where == OKV_MEM_DEVICE ? b->dev : b->host;
    if (data_bytes && where == OKV_MEM_DEVICE) {
        CHECK_CUDA(cudaMemcpyAsync(b->dev, x, data_bytes, cudaMemcpyDeviceToDevice, ms->copy));
        CHECK_CUDA(cudaStreamSynchronize(ms->copy));
    } else if (data_bytes) {
        memcpy(b->host, x, data_bytes);
    }
    OKV_ASSERT(data_bytes <= (size_t)1 << 31);
    CHECK_MPI(MPI_Isend(b->wire, (int)ctrl_bytes, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    CHECK_MPI(MPI_Isend(src, (int)data_bytes, MPI_BYTE, peer, tag + 1, t->comm, &b->rq[1]));
    b->active = true;
    b->recv = false;
    b->peer = peer;
}

static void mc_recv(pipe_transport *t, pipe_buf *b, int peer, int tag) {
    OKV_ASSERT(!b->active);
    void *dst = b->into == OKV_MEM_DEVICE ? b->dev : b->host;
    CHECK_MPI(MPI_Irecv(b->wire, (int)b->ctrl_cap, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    CHECK_MPI(MPI_Irecv(dst, (int)b->data_cap, MPI_BYTE, peer, tag + 1, t->comm, &b->rq[1]));
    b->active = true;
    b->recv = true;
    b->peer = peer;
    b->data = NULL;
    b->got_ctrl = b->got_data = 0;
}

static int mc_test(pipe_transport *t, pipe_buf *b, bool *done) {
    *done = !b->active;
    if (*done) return OKV_OK;
    int flag = 0;
    MPI_Status st[2];
    CHECK_MPI(MPI_Testall(2, b->rq, &flag, st));
    if (!flag) return OKV_OK;
    b->active = false;
    *done = true;
    if (!b->recv) return OKV_OK;
    int got_c = 0, got_d = 0;
    CHECK_MPI(MPI_Get_count(&st[0], MPI_BYTE, &got_c));
    CHECK_MPI(MPI_Get_count(&st[1], MPI_BYTE, &got_d));
    pipe_hdr h;
    if (pipe_hdr_read(b->wire, (size_t)got_c, &h)) return OKV_ERR_INTERNAL;
    if (pipe_msg_check_payload(&h, (size_t)got_d)) return OKV_ERR_INTERNAL;
    b->got_ctrl = (size_t)h.ctrl_bytes;
    b->got_data = (size_t)got_d;
    if (got_d) b->data = b->into == OKV_MEM_DEVICE ? b->dev : b->host;
    return OKV_OK;
}

static void mc_free(pipe_transport *t) {
    mc_state *ms = t->state;
    if (!ms) return;
    if (ms->copy) cudaStreamDestroy(ms->copy);
    free(ms);
    t->state = NULL;
}

int pipe_transport_mpi_cuda_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    if (gpu < 0)
        return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda needs a GPU on every rank");
    CHECK_CUDA(cudaSetDevice(gpu));
    mc_state *ms = calloc(1, sizeof *ms);
    OKV_ASSERT(ms);
    t->state = ms;
    CHECK_CUDA(cudaStreamCreateWithFlags(&ms->copy, cudaStreamNonBlocking));
    t->kind = TRANSPORT_MPI_CUDA;
    t->name = "mpi-cuda";
    t->comm = comm;
    t->buf_init = mc_buf_init;
    t->buf_free = mc_buf_free;
    t->send = mc_send;
    t->recv = mc_recv;
    t->test = mc_test;
    t->free = mc_free;
    return OKV_OK;
}

#else

int pipe_transport_mpi_cuda_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda: this omnikv was built without the CUDA "
                    "runtime; use --transport mpi");
}

#endif
