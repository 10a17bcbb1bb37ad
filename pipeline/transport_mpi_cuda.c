/* transport_mpi_cuda.c — CUDA-aware MPI: the control part as a host MPI message, the hidden
 * states as a second MPI message straight from device memory (tag + 1; always sent, possibly
 * empty, so the two streams of messages stay paired). With today's CPU backend the hidden states
 * are staged host -> device before a send and device -> pinned host after a receive. Built when
 * CMake finds the CUDA runtime; run only where MPIX_Query_cuda_support() reports CUDA-aware MPI
 * and every rank has a GPU, which no machine of this project's CI has: untested here. */
#include "transport.h"

#include "../src/common.h"

#ifdef OMNIKV_HAVE_CUDART
#include "cuda_check.h"
#include "msg.h"

#include <string.h>

static int mc_buf_init(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap) {
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
    return OKV_OK;
}

static void mc_buf_free(pipe_transport *t, pipe_buf *b) {
    okv_free_mem(b->wire);
    if (b->dev) cudaFree(b->dev);
    if (b->host_data) cudaFreeHost(b->host_data);
    memset(b, 0, sizeof *b);
}

static void mc_send(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const float *x,
                    size_t data_bytes, int peer, int tag) {
    OKV_ASSERT(!b->active && ctrl_bytes <= b->ctrl_cap && data_bytes <= b->data_cap);
    if (data_bytes) CHECK_CUDA(cudaMemcpy(b->dev, x, data_bytes, cudaMemcpyHostToDevice));
    CHECK_MPI(MPI_Isend(b->wire, (int)ctrl_bytes, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    CHECK_MPI(MPI_Isend(b->dev, (int)data_bytes, MPI_BYTE, peer, tag + 1, t->comm, &b->rq[1]));
    b->active = true;
    b->recv = false;
    b->peer = peer;
}

static void mc_recv(pipe_transport *t, pipe_buf *b, int peer, int tag) {
    OKV_ASSERT(!b->active);
    CHECK_MPI(MPI_Irecv(b->wire, (int)b->ctrl_cap, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    CHECK_MPI(MPI_Irecv(b->dev, (int)b->data_cap, MPI_BYTE, peer, tag + 1, t->comm, &b->rq[1]));
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
    b->got_ctrl = (size_t)got_c;
    b->got_data = (size_t)got_d;
    if (got_d) {
        CHECK_CUDA(cudaMemcpy(b->host_data, b->dev, (size_t)got_d, cudaMemcpyDeviceToHost));
        b->data = b->host_data;
    }
    return OKV_OK;
}

int pipe_transport_mpi_cuda_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    if (gpu < 0)
        return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda needs a GPU on every rank");
    CHECK_CUDA(cudaSetDevice(gpu));
    t->kind = TRANSPORT_MPI_CUDA;
    t->name = "mpi-cuda";
    t->comm = comm;
    t->buf_init = mc_buf_init;
    t->buf_free = mc_buf_free;
    t->send = mc_send;
    t->recv = mc_recv;
    t->test = mc_test;
    return OKV_OK;
}

#else

int pipe_transport_mpi_cuda_init(pipe_transport *t, MPI_Comm comm, int gpu) {
    return okv_fail(OKV_ERR_USAGE, "transport mpi-cuda: this omnikv was built without the CUDA "
                    "runtime; use --transport mpi");
}

#endif
