/* test_strict.c — the checking backend can fail: a host pointer handed to an op, a copy in the
 * wrong direction, an unregistered gather source and a freed block each stop with a message
 * naming the op, the argument and the address; work on the copy stream is not visible before
 * its event is waited on (the destination reads as poison until then). The engine-level proof
 * (cpu-strict equals cpu bitwise on the real model) is in test_omnikv.c. */
#include "kernels/backend.h"
#include "common.h"
#include "test_util.h"

#include <math.h>
#include <setjmp.h>
#include <string.h>

static jmp_buf back;
static char caught[400];

static void on_fail(const char *msg) {
    snprintf(caught, sizeof caught, "%s", msg);
    longjmp(back, 1);
}

/* Runs one misuse; it must be caught with a message holding every word of `want`. */
#define EXPECT_CAUGHT(what, stmt, ...) \
    do { \
        caught[0] = 0; \
        if (!setjmp(back)) { \
            stmt; \
        } \
        const char *words[] = {__VA_ARGS__}; \
        bool ok = caught[0] != 0; \
        for (size_t w_ = 0; ok && w_ < sizeof words / sizeof *words; w_++) ok = strstr(caught, words[w_]) != NULL; \
        printf("%s: %s\n", what, caught[0] ? caught : "(not caught)"); \
        TEST_CHECK(ok, "%s: the strict backend did not name the misuse", what); \
    } while (0)

int main(void) {
    okv_log_init(0);
    okv_strict_set_fail_hook(on_fail);
    okv_backend be;
    TEST_OK(okv_backend_strict_init(&be, 1, 8, 256, (size_t)1 << 20));
    TEST_CHECK(be.mem == OKV_MEM_DEVICE, "cpu-strict must present its memory as device memory");

    float host_x[64] = {1}, host_w[64] = {1};
    float *x = be.alloc(&be, sizeof host_x), *w = be.alloc(&be, sizeof host_w), *y = be.alloc(&be, sizeof host_x);
    TEST_CHECK(x && w && y, "arena allocations");
    be.copy(&be, x, host_x, sizeof host_x, OKV_COPY_H2D, OKV_STREAM_SYNC);
    be.copy(&be, w, host_w, sizeof host_w, OKV_COPY_H2D, OKV_STREAM_SYNC);

    /* The same op with backend pointers runs; with one host pointer it is named. */
    be.rmsnorm(&be, y, x, w, 1, 64, 1e-5f);
    EXPECT_CAUGHT("host weight", be.rmsnorm(&be, y, x, host_w, 1, 64, 1e-5f), "rmsnorm", "w =",
                  "not backend memory");
    EXPECT_CAUGHT("host output", be.add(&be, host_x, x, 64), "add", "y =", "not backend memory");
    /* An extent running past the arena block counts, not only the base address. */
    EXPECT_CAUGHT("extent past the arena", be.add(&be, y, x, (int64_t)1 << 20), "add", "not backend memory");
    EXPECT_CAUGHT("copy direction", be.copy(&be, y, x, 16, OKV_COPY_H2D, OKV_STREAM_SYNC), "copy", "src",
                  "host-to-device");
    EXPECT_CAUGHT("copy to host into the arena", be.copy(&be, y, x, 16, OKV_COPY_D2H, OKV_STREAM_SYNC),
                  "copy", "dst", "device-to-host");

    /* Gathers read registered host memory only. */
    uint8_t rows[8][32];
    for (int r = 0; r < 8; r++) memset(rows[r], r + 1, sizeof rows[r]);
    int32_t idx_host[3] = {5, 0, 5};
    int32_t *idx = be.alloc(&be, sizeof idx_host);
    uint8_t *dst = be.alloc(&be, 3 * 32);
    be.copy(&be, idx, idx_host, sizeof idx_host, OKV_COPY_H2D, OKV_STREAM_SYNC);
    EXPECT_CAUGHT("unregistered gather source",
                  be.gather_rows(&be, dst, rows, 32, 32, idx, 3, OKV_STREAM_COPY), "gather_rows",
                  "not registered");
    TEST_OK(be.host_register(&be, rows, sizeof rows));
    /* Issued on the copy stream: poisoned until its event is waited on, then the rows. */
    okv_event *ev = be.event_new(&be);
    be.gather_rows(&be, dst, rows, 32, 32, idx, 3, OKV_STREAM_COPY);
    be.event_record(&be, ev, OKV_STREAM_COPY);
    uint8_t early[96], late[96];
    memcpy(early, dst, sizeof early); /* what a reader that skipped the wait would see */
    be.event_wait(&be, OKV_STREAM_COMPUTE, ev);
    be.copy(&be, late, dst, sizeof late, OKV_COPY_D2H, OKV_STREAM_SYNC);
    bool poisoned = early[0] == 0xff && early[95] == 0xff;
    bool landed = late[0] == 6 && late[32] == 1 && late[64] == 6;
    printf("gather on the copy stream: before the wait %s, after it %s\n",
           poisoned ? "poison" : "DATA (not deferred)", landed ? "the rows" : "WRONG");
    TEST_CHECK(poisoned && landed, "the copy stream must hold work back until its event is waited on");

    /* A strided copy to host on the copy stream: its rows poisoned (and only them: the gaps
     * between them keep their bytes) until the wait, whatever synchronous copy comes between,
     * since a GPU's streams do not wait for each other. */
    uint8_t host[3][48];
    memset(host, 7, sizeof host);
    be.copy_2d(&be, host, 48, dst, 32, 32, 3, OKV_COPY_D2H, OKV_STREAM_COPY);
    be.event_record(&be, ev, OKV_STREAM_COPY);
    uint8_t scratch[16];
    be.copy(&be, scratch, dst, sizeof scratch, OKV_COPY_D2H, OKV_STREAM_SYNC);
    poisoned = host[0][0] == 0xff && host[2][31] == 0xff && host[0][32] == 7 && host[1][47] == 7;
    be.event_wait(&be, OKV_STREAM_COMPUTE, ev);
    landed = host[0][0] == 6 && host[1][31] == 1 && host[2][0] == 6 && host[0][32] == 7 && host[2][47] == 7;
    printf("2D copy on the copy stream: before the wait %s, after it %s\n",
           poisoned ? "its rows poisoned" : "NOT DEFERRED (or the gaps overwritten)", landed ? "the rows" : "WRONG");
    TEST_CHECK(poisoned && landed, "the copy stream must hold a 2D copy back until its event is waited on");
    be.event_free(&be, ev);
    be.host_unregister(&be, rows);

    be.mem_free(&be, y);
    EXPECT_CAUGHT("double free", be.mem_free(&be, y), "mem_free", "not allocated");
    EXPECT_CAUGHT("freed block", be.add(&be, y, x, 64), "add", "not backend memory");
    TEST_CHECK(be.alloc(&be, (size_t)2 << 20) == NULL, "an allocation larger than the arena must return NULL");
    be.free(&be);
    return test_summary();
}
