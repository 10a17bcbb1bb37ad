/* transport_mpi.c — the always-available transport: the control part and the payload in one host
 * MPI message (the payload at the 64-byte-aligned offset after the control part, so a stage
 * computes on it in place). It takes host memory; a payload in backend (device) memory is staged
 * here, through the wire buffer, with the backend's copy (the backend given at init), and a
 * buffer that receives into backend memory gets a copy of the payload there. Tested by
 * tests/unit/test_transport.c (memory kinds, on cpu-strict) and tests/mpi/test_pipeline.sh, over
 * shared memory and over TCP (--mca btl tcp,self). */
#include "msg.h"
#include "transport.h"

#include "../src/common.h"

#include <string.h>

static int mpi_buf_init(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap,
                        okv_mem_kind into) {
    memset(b, 0, sizeof *b);
    b->rq[0] = b->rq[1] = MPI_REQUEST_NULL;
    b->ctrl_cap = pipe_msg_data_offset(ctrl_cap);
    b->data_cap = data_cap;
    b->into = into;
    b->wire = okv_alloc(b->ctrl_cap + data_cap);
    if (!b->wire)
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate a %zu-byte stage message buffer",
                        b->ctrl_cap + data_cap);
    if (into == OKV_MEM_DEVICE) {
        OKV_ASSERT(t->be);
        b->dev = t->be->alloc(t->be, data_cap ? data_cap : 64);
        if (!b->dev)
            return okv_fail(OKV_ERR_NOMEM, "cannot allocate %zu bytes of %s memory for a stage "
                            "message buffer", data_cap, t->be->name);
    }
    return OKV_OK;
}

static void mpi_buf_free(pipe_transport *t, pipe_buf *b) {
    okv_free_mem(b->wire);
    if (b->dev) t->be->mem_free(t->be, b->dev);
    memset(b, 0, sizeof *b);
}

static void mpi_send(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const void *x,
                     okv_mem_kind where, size_t data_bytes, int peer, int tag) {
    OKV_ASSERT(!b->active && ctrl_bytes <= b->ctrl_cap && data_bytes <= b->data_cap);
    size_t off = pipe_msg_data_offset(ctrl_bytes);
    if (data_bytes && where == OKV_MEM_DEVICE)
        t->be->copy(t->be, b->wire + off, x, data_bytes, OKV_COPY_D2H, OKV_STREAM_SYNC);
    else if (data_bytes && (const uint8_t *)x != b->wire + off)
        memcpy(b->wire + off, x, data_bytes);
    size_t total = data_bytes ? off + data_bytes : ctrl_bytes;
    OKV_ASSERT(total <= (size_t)1 << 31);
    CHECK_MPI(MPI_Isend(b->wire, (int)total, MPI_BYTE, peer, tag, t->comm, &b->rq[0]));
    b->active = true;
    b->recv = false;
    b->peer = peer;
}

static void mpi_recv(pipe_transport *t, pipe_buf *b, int peer, int tag) {
    OKV_ASSERT(!b->active);
    CHECK_MPI(MPI_Irecv(b->wire, (int)(b->ctrl_cap + b->data_cap), MPI_BYTE, peer, tag, t->comm,
                        &b->rq[0]));
    b->active = true;
    b->recv = true;
    b->data = NULL;
    b->got_ctrl = b->got_data = 0;
    b->peer = peer;
}

static int mpi_test(pipe_transport *t, pipe_buf *b, bool *done) {
    *done = !b->active;
    if (*done) return OKV_OK;
    int flag = 0;
    MPI_Status status;
    CHECK_MPI(MPI_Test(&b->rq[0], &flag, &status));
    if (!flag) return OKV_OK;
    b->active = false;
    *done = true;
    if (!b->recv) return OKV_OK;
    int got = 0;
    CHECK_MPI(MPI_Get_count(&status, MPI_BYTE, &got));
    pipe_hdr h;
    if (pipe_hdr_read(b->wire, (size_t)got, &h)) return OKV_ERR_INTERNAL;
    size_t off = pipe_msg_data_offset((size_t)h.ctrl_bytes);
    b->got_ctrl = (size_t)h.ctrl_bytes;
    b->got_data = h.data_bytes && (size_t)got > off ? (size_t)got - off : 0;
    if (pipe_msg_check_payload(&h, b->got_data)) return OKV_ERR_INTERNAL;
    if (!b->got_data) return OKV_OK;
    b->data = b->wire + off;
    if (b->into == OKV_MEM_DEVICE) {
        t->be->copy(t->be, b->dev, b->data, b->got_data, OKV_COPY_H2D, OKV_STREAM_SYNC);
        b->data = b->dev;
    }
    return OKV_OK;
}

int pipe_transport_mpi_init(pipe_transport *t, MPI_Comm comm) {
    t->kind = TRANSPORT_MPI;
    t->name = "mpi";
    t->comm = comm;
    t->buf_init = mpi_buf_init;
    t->buf_free = mpi_buf_free;
    t->send = mpi_send;
    t->recv = mpi_recv;
    t->test = mpi_test;
    return OKV_OK;
}
