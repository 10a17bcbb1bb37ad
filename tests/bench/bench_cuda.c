/* bench_cuda.c — kernel benchmark of the CUDA backend, not a test (built with CUDA; the ops'
 * numerics are checked by tests/gpu/test_cuda_ops.c): one-token matmul (GEMV) at Llama-3-8B shapes
 * in bf16, q8_0 and q4_0 against the measured device-to-device copy bandwidth, and gather_rows
 * of scattered rows from pinned host memory against one contiguous copy of the same bytes.
 * Usage: bench_cuda OUT.json (prints a table; writes every figure to OUT.json). */
#include "kernels/cuda/cuda.h"
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static okv_backend be;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static void fill_bytes(uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        memcpy(p + i, &rng, 8);
    }
    for (; i < n; i++) p[i] = (uint8_t)(rng >> (8 * (i % 8)));
}

static void *dev_alloc(size_t bytes) {
    void *p = be.alloc(&be, bytes);
    if (!p) {
        fprintf(stderr, "bench_cuda: cannot allocate %zu bytes on the GPU\n", bytes);
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over 7 batches of the mean seconds per call of fn, timed with events on stream. */
typedef void (*bench_fn)(void *arg, int rep);
static double time_median(bench_fn fn, void *arg, cudaStream_t s, int per_batch) {
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) fn(arg, i); /* warm-up */
    double t[7];
    for (int k = 0; k < 7; k++) {
        CHECK_CUDA(cudaEventRecord(a, s));
        for (int i = 0; i < per_batch; i++) fn(arg, k * per_batch + i);
        CHECK_CUDA(cudaEventRecord(b, s));
        CHECK_CUDA(cudaEventSynchronize(b));
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
        t[k] = ms * 1e-3 / per_batch;
    }
    qsort(t, 7, sizeof t[0], cmp_double);
    CHECK_CUDA(cudaEventDestroy(a));
    CHECK_CUDA(cudaEventDestroy(b));
    return t[3];
}

/* ---- device-to-device copy: the bandwidth ceiling ----------------------------------------- */

typedef struct copy_arg {
    void *dst;
    const void *src;
    size_t bytes;
    enum cudaMemcpyKind kind;
    cudaStream_t s;
} copy_arg;

static void run_copy(void *p, int rep) {
    copy_arg *c = p;
    CHECK_CUDA(cudaMemcpyAsync(c->dst, c->src, c->bytes, c->kind, c->s));
}

/* ---- GEMV ------------------------------------------------------------------------------------ */

typedef struct gemv_arg {
    void **w; /* copies of the weights, cycled so the L2 cache cannot hold them */
    int n_copies;
    okv_type type;
    float *x, *y;
    int n_in, n_out;
} gemv_arg;

static void run_gemv(void *p, int rep) {
    gemv_arg *g = p;
    be.matmul(&be, g->y, g->w[rep % g->n_copies], g->type, g->x, 1, g->n_in, g->n_out);
}

/* ---- gather ---------------------------------------------------------------------------------- */

typedef struct gather_arg {
    void *dst;
    const uint8_t *src;
    size_t row_bytes;
    const int32_t *idx;
    int n;
} gather_arg;

static void run_gather(void *p, int rep) {
    gather_arg *g = p;
    be.gather_rows(&be, g->dst, g->src, g->row_bytes, g->row_bytes, g->idx, g->n, OKV_STREAM_COPY);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench_cuda OUT.json\n");
        return 2;
    }
    okv_log_init(0);
    if (okv_backend_cuda_init(&be, 0, 1, 14336) != OKV_OK) {
        fprintf(stderr, "bench_cuda: %s\n", okv_last_error());
        return 2;
    }
    const cuda_state *st = be.state;
    const cudaStream_t cs = st->stream[OKV_STREAM_COMPUTE], ys = st->stream[OKV_STREAM_COPY];
    struct cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, st->device));
    FILE *js = fopen(argv[1], "w");
    if (!js) {
        fprintf(stderr, "bench_cuda: cannot write %s\n", argv[1]);
        return 2;
    }
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    fprintf(js, "{\"device\": \"%s\", \"sms\": %d,\n", prop.name, prop.multiProcessorCount);

    /* host random bytes, reused as weights and as the bank */
    const size_t host_bytes = (size_t)1 << 30;
    uint8_t *host = okv_alloc(host_bytes);
    OKV_ASSERT(host);
    fill_bytes(host, host_bytes);

    /* 1 GiB device-to-device copy; counted as bytes read plus bytes written */
    const size_t cb = (size_t)1 << 30;
    copy_arg ca = {dev_alloc(cb), dev_alloc(cb), cb, cudaMemcpyDeviceToDevice, cs};
    CHECK_CUDA(cudaMemcpy(ca.dst, host, cb, cudaMemcpyHostToDevice));
    const double t_copy = time_median(run_copy, &ca, cs, 5);
    const double copy_gbs = 2.0 * (double)cb / t_copy * 1e-9;
    printf("d2d copy 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", t_copy * 1e3, copy_gbs);
    fprintf(js, "\"d2d_copy\": {\"bytes\": %zu, \"ms\": %.4f, \"GBps_read_plus_write\": %.1f},\n", cb,
            t_copy * 1e3, copy_gbs);
    be.mem_free(&be, ca.dst);
    be.mem_free(&be, (void *)ca.src);

    /* GEMV at the shapes of one Llama-3-8B layer and its output head */
    const int shapes[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}};
    const okv_type types[] = {OKV_TYPE_BF16, OKV_TYPE_Q8_0, OKV_TYPE_Q4_0};
    float *x = dev_alloc(14336 * sizeof(float)), *y = dev_alloc(128256 * sizeof(float));
    {
        float hx[14336];
        for (int i = 0; i < 14336; i++) hx[i] = (float)(host[i] % 200) / 100.0f - 1.0f;
        CHECK_CUDA(cudaMemcpy(x, hx, sizeof hx, cudaMemcpyHostToDevice));
    }
    printf("%-6s %7s %6s %10s %12s %9s %8s\n", "type", "n_out", "n_in", "us/call", "weight MB",
           "GB/s", "of copy");
    fprintf(js, "\"gemv\": [\n");
    int first = 1;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const okv_type ty = types[ti];
            const int n_out = shapes[si][0], n_in = shapes[si][1];
            const size_t wb = okv_type_row_bytes(ty, n_in) * (size_t)n_out;
            gemv_arg g = {.type = ty, .x = x, .y = y, .n_in = n_in, .n_out = n_out};
            g.n_copies = (int)OKV_MAX((size_t)1, ((size_t)256 << 20) / wb + 1);
            g.w = malloc(sizeof(void *) * (size_t)g.n_copies);
            OKV_ASSERT(g.w);
            for (int c = 0; c < g.n_copies; c++) {
                g.w[c] = dev_alloc(wb);
                CHECK_CUDA(cudaMemcpy(g.w[c], host + ((size_t)c * 4096) % (host_bytes - wb + 1), wb,
                                 cudaMemcpyHostToDevice));
            }
            const double t = time_median(run_gemv, &g, cs, 20);
            const double moved = (double)wb + 4.0 * (n_in + n_out);
            const double gbs = moved / t * 1e-9;
            printf("%-6s %7d %6d %10.2f %12.1f %9.0f %7.0f%%\n", okv_type_name(ty), n_out, n_in,
                   t * 1e6, (double)wb / 1e6, gbs, 100.0 * gbs / copy_gbs);
            fprintf(js,
                    "%s  {\"type\": \"%s\", \"n_out\": %d, \"n_in\": %d, \"n_tok\": 1, \"us\": %.2f, "
                    "\"bytes\": %.0f, \"GBps\": %.1f, \"frac_of_copy\": %.3f}",
                    first ? "" : ",\n", okv_type_name(ty), n_out, n_in, t * 1e6, moved, gbs,
                    gbs / copy_gbs);
            first = 0;
            for (int c = 0; c < g.n_copies; c++) be.mem_free(&be, g.w[c]);
            free(g.w);
        }
    fprintf(js, "\n],\n");

    /* gather of 2048 scattered rows from pinned host memory vs one contiguous copy */
    if (be.host_register(&be, host, host_bytes) != OKV_OK) {
        fprintf(stderr, "bench_cuda: %s\n", okv_last_error());
        return 1;
    }
    const size_t row_sizes[] = {4096, 28672};
    const int n_rows = 2048;
    int32_t hidx[2048];
    int32_t *didx = dev_alloc(sizeof hidx);
    void *dst = dev_alloc((size_t)n_rows * 28672);
    printf("%-10s %6s %12s %12s %12s %12s\n", "row bytes", "rows", "gather us", "gather GB/s",
           "contig us", "contig GB/s");
    fprintf(js, "\"gather\": [\n");
    for (size_t ri = 0; ri < 2; ri++) {
        const size_t rb = row_sizes[ri];
        const int bank_rows = (int)(host_bytes / rb);
        for (int i = 0; i < n_rows; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            hidx[i] = (int32_t)(rng % (uint64_t)bank_rows);
        }
        CHECK_CUDA(cudaMemcpy(didx, hidx, sizeof hidx, cudaMemcpyHostToDevice));
        gather_arg g = {dst, host, rb, didx, n_rows};
        const double tg = time_median(run_gather, &g, ys, 10);
        copy_arg c = {dst, host, rb * n_rows, cudaMemcpyHostToDevice, ys};
        const double tc = time_median(run_copy, &c, ys, 10);
        const double bytes = (double)rb * n_rows;
        printf("%-10zu %6d %12.1f %12.1f %12.1f %12.1f\n", rb, n_rows, tg * 1e6, bytes / tg * 1e-9,
               tc * 1e6, bytes / tc * 1e-9);
        fprintf(js,
                "%s  {\"row_bytes\": %zu, \"rows\": %d, \"gather_us\": %.1f, \"gather_GBps\": %.2f, "
                "\"contiguous_us\": %.1f, \"contiguous_GBps\": %.2f}",
                ri ? ",\n" : "", rb, n_rows, tg * 1e6, bytes / tg * 1e-9, tc * 1e6, bytes / tc * 1e-9);
    }
    fprintf(js, "\n]}\n");
    fclose(js);
    be.host_unregister(&be, host);
    be.mem_free(&be, didx);
    be.mem_free(&be, dst);
    be.mem_free(&be, x);
    be.mem_free(&be, y);
    be.free(&be);
    okv_free_mem(host);
    return 0;
}
