/* test_transport.c — the mpi transport's memory kinds on one rank sending to itself: host to host,
 * and backend ("device") memory of the checking backend cpu-strict to backend memory, whose
 * payload must arrive bit-exact in the strict arena (strict fails on a host pointer where backend
 * memory belongs); a payload that disagrees with its header, and a message of another version,
 * are refused with a sentence. */
#include "common.h"
#include "kernels/backend.h"
#include "pipeline/msg.h"
#include "pipeline/transport.h"
#include "test_util.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

enum { DIM = 8, ROWS = 5, TAG = 100 };

static void strict_hook(const char *msg) {
    TEST_CHECK(0, "cpu-strict refused a pointer: %s", msg);
    exit(test_summary());
}

/* Sends a prefill message of ROWS rows at x (kind `where`) to this rank and receives it in b. */
static int round_trip(pipe_transport *t, pipe_buf *out, pipe_buf *in, const void *x,
                      okv_mem_kind where, size_t payload) {
    pipe_seq seq = {.slot = 1, .pos = 0, .n_prompt = ROWS};
    pipe_msg m = {.seqs = &seq};
    pipe_msg_init(&m, PIPE_MSG_PREFILL, 0, 1, ROWS, DIM, 0, 0, 0);
    size_t n = pipe_msg_write(out->wire, out->ctrl_cap, &m);
    t->recv(t, in, 0, TAG);
    t->send(t, out, n, x, where, payload, 0, TAG);
    bool done = false;
    int st = OKV_OK;
    while (!done && !st) st = t->test(t, in, &done);
    pipe_wait(t, out, "test message", 0);
    return st;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    okv_log_init(0);
    okv_strict_set_fail_hook(strict_hook);
    okv_backend be;
    TEST_OK(okv_backend_strict_init(&be, 1, 16, 64, 1 << 20));
    pipe_transport t;
    TEST_OK(pipe_transport_init(&t, TRANSPORT_MPI, MPI_COMM_WORLD, -1, &be, 0));
    const size_t ctrl = pipe_msg_ctrl_bytes(PIPE_MSG_PREFILL, 1, 0, 0);
    const size_t bytes = sizeof(float) * ROWS * DIM;
    float x[ROWS * DIM], back[ROWS * DIM];
    for (int i = 0; i < ROWS * DIM; i++) x[i] = (float)i * 0.37f - 3.0f;

    /* host to host */
    pipe_buf hs, hr;
    TEST_OK(t.buf_init(&t, &hs, ctrl, bytes, OKV_MEM_HOST));
    TEST_OK(t.buf_init(&t, &hr, ctrl, bytes, OKV_MEM_HOST));
    TEST_OK(round_trip(&t, &hs, &hr, x, OKV_MEM_HOST, bytes));
    TEST_CHECK(hr.got_data == bytes && hr.data && !memcmp(hr.data, x, bytes),
               "host payload of %zu bytes arrives bit-exact in host memory", bytes);

    /* backend memory to backend memory: staged through the wire with the backend's copy */
    float *dx = be.alloc(&be, bytes);
    TEST_CHECK(dx != NULL, "strict arena allocation");
    be.copy(&be, dx, x, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
    pipe_buf ds, dr;
    TEST_OK(t.buf_init(&t, &ds, ctrl, bytes, OKV_MEM_DEVICE));
    TEST_OK(t.buf_init(&t, &dr, ctrl, bytes, OKV_MEM_DEVICE));
    TEST_OK(round_trip(&t, &ds, &dr, dx, OKV_MEM_DEVICE, bytes));
    TEST_CHECK(dr.got_data == bytes && dr.data == dr.dev, "the payload is delivered into the "
               "buffer's backend memory");
    memset(back, 0, sizeof back);
    be.copy(&be, back, dr.data, bytes, OKV_COPY_D2H, OKV_STREAM_SYNC);
    TEST_CHECK(!memcmp(back, x, bytes), "backend payload arrives bit-exact in backend memory");

    /* a payload shorter than its header says */
    okv_clear_error();
    int st = round_trip(&t, &hs, &hr, x, OKV_MEM_HOST, bytes - 4 * DIM);
    TEST_CHECK(st == OKV_ERR_INTERNAL && strstr(okv_last_error(), "its header says 160"),
               "a payload of one row less is refused: %s", okv_last_error());

    /* a message of the previous version */
    pipe_msg m = {0};
    pipe_msg_init(&m, PIPE_MSG_STOP, -1, 0, 0, DIM, 0, 0, 0);
    size_t n = pipe_msg_write(hs.wire, hs.ctrl_cap, &m);
    hs.wire[4] = 1;
    t.recv(&t, &hr, 0, TAG);
    t.send(&t, &hs, n, NULL, OKV_MEM_HOST, 0, 0, TAG);
    bool done = false;
    okv_clear_error();
    st = OKV_OK;
    while (!done && !st) st = t.test(&t, &hr, &done);
    pipe_wait(&t, &hs, "test message", 0);
    TEST_CHECK(st == OKV_ERR_INTERNAL && strstr(okv_last_error(), "version 1; this build speaks 2"),
               "a version-1 message is refused: %s", okv_last_error());

    t.buf_free(&t, &hs);
    t.buf_free(&t, &hr);
    t.buf_free(&t, &ds);
    t.buf_free(&t, &dr);
    be.mem_free(&be, dx);
    pipe_transport_free(&t);
    be.free(&be);
    MPI_Finalize();
    return test_summary();
}
