/* bench_cuda_attn.c — speed of the CUDA attention and selection ops at Llama-3-8B shape (32 query
 * heads, 8 KV heads, head_dim 128, f16 KV); a benchmark, not a test (built with the CUDA backend,
 * never run by CTest). Decode at 32K and 128K rows as bandwidth against a device-to-device copy
 * measured here, decode over 2048 indexed rows (device and registered host memory), select at
 * 128K with k = 2048, prefill TFLOP/s at 4K. Usage: bench_cuda_attn OUT.json */
#include "kernels/backend.h"
#include "kernels/cuda/cuda.h"
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H 32
#define KV 8
#define HD 128

static okv_backend be;

static uint32_t rng = 12345u;
static float rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 16777216.0f - 0.5f;
}

static void *dev_upload(const void *host, size_t bytes) {
    void *d = be.alloc(&be, bytes);
    if (!d) {
        fprintf(stderr, "bench_cuda_attn: cannot allocate %zu bytes of GPU memory\n", bytes);
        exit(1);
    }
    be.copy(&be, d, host, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
    return d;
}

/* Mean milliseconds per call over reps calls issued back to back on the compute stream, after
 * warm-up calls; CUDA events bracket the whole run. */
typedef void (*bench_fn)(void *arg);
static double time_ms(bench_fn fn, void *arg, int reps) {
    const cudaStream_t cs = cuda_compute(&be);
    for (int i = 0; i < 3; i++) fn(arg);
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    CHECK_CUDA(cudaEventRecord(a, cs));
    for (int i = 0; i < reps; i++) fn(arg);
    CHECK_CUDA(cudaEventRecord(b, cs));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    CHECK_CUDA(cudaEventDestroy(a));
    CHECK_CUDA(cudaEventDestroy(b));
    return ms / reps;
}

typedef struct copy_arg {
    void *dst;
    const void *src;
    size_t bytes;
} copy_arg;
static void run_copy(void *p) {
    copy_arg *c = p;
    CHECK_CUDA(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, cuda_compute(&be)));
}

typedef struct dec_arg {
    float *out, *logits;
    const float *q;
    okv_kv_view views[2];
    int n_views;
} dec_arg;
static void run_decode(void *p) {
    dec_arg *d = p;
    const okv_attn_shape s = {H, KV, HD, 1.0f / sqrtf((float)HD)};
    be.attn_decode(&be, d->out, d->q, d->views, d->n_views, s, d->logits);
}

typedef struct sel_arg {
    int32_t *out;
    const float *logits;
    int n;
    okv_select_args a;
} sel_arg;
static void run_select(void *p) {
    sel_arg *s = p;
    be.select(&be, s->out, s->logits, H, s->n, &s->a);
}

typedef struct pf_arg {
    float *out;
    const float *q;
    okv_kv_view kv;
    int n_q;
} pf_arg;
static void run_prefill(void *p) {
    pf_arg *a = p;
    const okv_attn_shape s = {H, KV, HD, 1.0f / sqrtf((float)HD)};
    be.attn_prefill(&be, a->out, a->q, a->n_q, 0, a->kv, s);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench_cuda_attn OUT.json\n");
        return 2;
    }
    okv_log_init(0);
    if (okv_backend_cuda_init(&be, 0, 64, 4096) != OKV_OK) {
        fprintf(stderr, "bench_cuda_attn: %s\n", okv_last_error());
        return 1;
    }
    const int NMAX = 131072;
    const okv_attn_shape shape = {H, KV, HD, 1.0f / sqrtf((float)HD)};
    if (be.reserve(&be, shape, NMAX) != OKV_OK) {
        fprintf(stderr, "bench_cuda_attn: %s\n", okv_last_error());
        return 1;
    }

    /* the copy ceiling: 1 GiB device to device, read + write counted */
    const size_t cb = (size_t)1 << 30;
    copy_arg ca = {be.alloc(&be, cb), be.alloc(&be, cb), cb};
    OKV_ASSERT(ca.dst && ca.src);
    const double copy_ms = time_ms(run_copy, &ca, 10);
    const double copy_gbs = 2.0 * cb / (copy_ms * 1e-3) / 1e9;
    be.mem_free(&be, ca.dst);
    be.mem_free(&be, (void *)ca.src);

    /* KV cache: NMAX rows of 8 heads x 128 f16, K and V */
    const int64_t row = (int64_t)KV * HD, ne = (int64_t)NMAX * row;
    uint16_t *hk = malloc((size_t)ne * 2), *hv = malloc((size_t)ne * 2);
    OKV_ASSERT(hk && hv);
    for (int64_t i = 0; i < ne; i++) {
        hk[i] = okv_f32_to_fp16(rnd());
        hv[i] = okv_f32_to_fp16(rnd());
    }
    void *dk = dev_upload(hk, (size_t)ne * 2), *dv = dev_upload(hv, (size_t)ne * 2);
    float q[H * HD];
    for (int i = 0; i < H * HD; i++) q[i] = rnd();
    float *dlogits = be.alloc(&be, (size_t)H * NMAX * 4);
    dec_arg d = {be.alloc(&be, sizeof q), NULL, dev_upload(q, sizeof q), {{0}}, 1};

    const int ns[2] = {32768, 131072};
    double dec_ms[2], dec_gbs[2], dec_logits_ms = 0;
    for (int i = 0; i < 2; i++) {
        d.views[0] = (okv_kv_view){OKV_TYPE_F16, dk, dv, row, NULL, ns[i]};
        d.n_views = 1;
        dec_ms[i] = time_ms(run_decode, &d, 50);
        dec_gbs[i] = 2.0 * ns[i] * row * 2 / (dec_ms[i] * 1e-3) / 1e9;
    }
    d.logits = dlogits;
    dec_logits_ms = time_ms(run_decode, &d, 50); /* 128K, with view-0 logits written */

    /* 2048 indexed rows spread over the 128K (the OmniKV sparse layer) plus a 16-row tail */
    int32_t idx[2048];
    for (int i = 0; i < 2048; i++) idx[i] = (int32_t)((int64_t)i * NMAX / 2048 + (i * 7) % 31);
    int32_t *didx = dev_upload(idx, sizeof idx);
    d.views[0] = (okv_kv_view){OKV_TYPE_F16, dk, dv, row, didx, 2048};
    d.views[1] = (okv_kv_view){OKV_TYPE_F16, dk, dv, row, NULL, 16};
    d.n_views = 2;
    d.logits = NULL;
    const double idx_ms = time_ms(run_decode, &d, 200);
    const double idx_bytes = 2.0 * (2048 + 16) * row * 2;
    /* the same rows read from registered host memory (the Context Bank) */
    double host_ms = -1;
    if (be.host_register(&be, hk, (size_t)ne * 2) == OKV_OK && be.host_register(&be, hv, (size_t)ne * 2) == OKV_OK) {
        d.views[0] = (okv_kv_view){OKV_TYPE_F16, hk, hv, row, didx, 2048};
        host_ms = time_ms(run_decode, &d, 20);
        be.host_unregister(&be, hk);
        be.host_unregister(&be, hv);
    }

    /* select over 128K candidates, k = 2048 */
    float *hl = malloc((size_t)H * NMAX * 4);
    OKV_ASSERT(hl);
    for (int64_t i = 0; i < (int64_t)H * NMAX; i++) hl[i] = 8.0f * rnd();
    sel_arg sa;
    memset(&sa, 0, sizeof sa);
    sa.out = be.alloc(&be, 2048 * 4);
    sa.logits = dev_upload(hl, (size_t)H * NMAX * 4);
    sa.n = NMAX;
    sa.a.k = 2048;
    sa.a.keep_first = 4;
    sa.a.keep_last = 32;
    sa.a.kind = OKV_SCORE_MAX;
    const double sel_max_ms = time_ms(run_select, &sa, 200);
    sa.a.kind = OKV_SCORE_SOFTMAX_MAX;
    const double sel_soft_ms = time_ms(run_select, &sa, 200);

    /* prefill 4K: 4 * H * HD flops per (query, visible key) pair, n(n+1)/2 pairs */
    const int nq = 4096;
    float *hq = malloc((size_t)nq * H * HD * 4);
    OKV_ASSERT(hq);
    for (int64_t i = 0; i < (int64_t)nq * H * HD; i++) hq[i] = rnd();
    pf_arg pa = {be.alloc(&be, (size_t)nq * H * HD * 4), dev_upload(hq, (size_t)nq * H * HD * 4),
                 {OKV_TYPE_F16, dk, dv, row, NULL, nq}, nq};
    const double pf_ms = time_ms(run_prefill, &pa, 5);
    const double pf_tflops = 4.0 * H * HD * ((double)nq * (nq + 1) / 2) / (pf_ms * 1e-3) / 1e12;

    FILE *f = fopen(argv[1], "w");
    if (!f) {
        fprintf(stderr, "bench_cuda_attn: cannot write %s\n", argv[1]);
        return 1;
    }
    fprintf(f,
            "{\"shape\": \"32 q heads, 8 kv heads, head_dim 128, f16 KV\",\n"
            " \"copy_d2d_gbs_read_plus_write\": %.1f,\n"
            " \"decode_32k_us\": %.2f, \"decode_32k_kv_read_gbs\": %.1f, \"decode_32k_share_of_copy\": %.3f,\n"
            " \"decode_128k_us\": %.2f, \"decode_128k_kv_read_gbs\": %.1f, \"decode_128k_share_of_copy\": %.3f,\n"
            " \"decode_128k_with_logits_us\": %.2f,\n"
            " \"decode_idx2048_tail16_device_us\": %.2f, \"decode_idx2048_device_gbs\": %.1f,\n"
            " \"decode_idx2048_tail16_host_registered_us\": %.2f, \"decode_idx2048_host_gbs\": %.2f,\n"
            " \"select_128k_k2048_max_us\": %.2f, \"select_128k_k2048_softmax_max_us\": %.2f,\n"
            " \"prefill_4k_ms\": %.3f, \"prefill_4k_tflops\": %.2f}\n",
            copy_gbs, dec_ms[0] * 1e3, dec_gbs[0], dec_gbs[0] / copy_gbs, dec_ms[1] * 1e3, dec_gbs[1],
            dec_gbs[1] / copy_gbs, dec_logits_ms * 1e3, idx_ms * 1e3, idx_bytes / (idx_ms * 1e-3) / 1e9,
            host_ms * 1e3, host_ms > 0 ? 2.0 * 2048 * row * 2 / (host_ms * 1e-3) / 1e9 : -1.0,
            sel_max_ms * 1e3, sel_soft_ms * 1e3, pf_ms, pf_tflops);
    fclose(f);
    printf("copy %.0f GB/s (r+w); decode 32K %.1f us (%.0f GB/s), 128K %.1f us (%.0f GB/s), with logits %.1f us\n",
           copy_gbs, dec_ms[0] * 1e3, dec_gbs[0], dec_ms[1] * 1e3, dec_gbs[1], dec_logits_ms * 1e3);
    printf("idx 2048 device %.1f us, host %.1f us; select max %.1f us, softmax_max %.1f us; prefill 4K %.2f ms = %.2f TFLOP/s\n",
           idx_ms * 1e3, host_ms * 1e3, sel_max_ms * 1e3, sel_soft_ms * 1e3, pf_ms, pf_tflops);
    be.free(&be);
    free(hk); free(hv); free(hl); free(hq);
    return 0;
}
