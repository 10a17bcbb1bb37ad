/* bench_kernels.c — throughput of the CPU backend's hot ops; a benchmark, not a test (CMake skips
 * it). After the CMake build, from the repository root: mpicc -std=c11 -O2 -fopenmp -D_GNU_SOURCE
 * -I. -Isrc this file build/libomnikv_core.a $(pkg-config --libs hwloc libcjson libpcre2-8 libpng)
 * -lm (the kernels take the fastest vector path the CPU has, as omnikv does).
 * Usage: [min max threads] [prefill|types|attn] (prefill: only the prefill cases; types: only
 * the decode matmul of every weight type, on SmolLM2's and an 8B model's widths; attn: only decode
 * attention over f16 and q8_0 KV). */
#include "kernels/backend.h"
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void fill(float *x, int64_t n) {
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of several timed repetitions, each long enough to dwarf the clock. On a shared machine
 * with one thread, process CPU time (BENCH_CPU_TIME=1) is steadier than wall time. */
static double time_best(void (*fn)(void *), void *arg, int reps) {
    const int use_cpu = getenv("BENCH_CPU_TIME") != NULL;
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        const double t0 = use_cpu ? cpu_s() : okv_now_s();
        for (int i = 0; i < reps; i++) fn(arg);
        best = fmin(best, ((use_cpu ? cpu_s() : okv_now_s()) - t0) / reps);
    }
    return best;
}

typedef struct mm_case {
    okv_backend *be;
    okv_type wt;
    void *w;
    float *x, *y;
    int n_tok, n_in, n_out;
} mm_case;

static void run_mm(void *p) {
    mm_case *c = p;
    c->be->matmul(c->be, c->y, c->w, c->wt, c->x, c->n_tok, c->n_in, c->n_out);
}

static void bench_matmul(okv_backend *be, okv_type wt, int n_out, int n_in, int n_tok, int reps) {
    const size_t row = okv_type_row_bytes(wt, n_in);
    float *wf = malloc((size_t)n_in * sizeof(float));
    uint8_t *w = malloc((size_t)n_out * row);
    mm_case c = {be, wt, w, malloc((size_t)n_tok * n_in * 4), malloc((size_t)n_tok * n_out * 4), n_tok, n_in, n_out};
    for (int o = 0; o < n_out; o++) {
        fill(wf, n_in);
        wf[o % n_in] += 0.001f * (float)o;
        okv_quant_row_ref(w + (size_t)o * row, wf, wt, n_in);
    }
    fill(c.x, (int64_t)n_tok * n_in);
    const double t = time_best(run_mm, &c, reps);
    const double bytes = (double)n_out * row;
    printf("%-7s matmul %6d x %-5d tok %-3d threads %s: %8.1f us  %6.2f GB/s of weights  %7.1f GMAC/s\n",
           okv_type_name(wt), n_out, n_in, n_tok, be->name, t * 1e6, bytes / t / 1e9,
           (double)n_out * n_in * n_tok / t / 1e9);
    free(wf);
    free(w);
    free(c.x);
    free(c.y);
}

/* Decode attention over n_layers copies of a layer's cache in turn, so the rows come from memory
 * as in a model's decode step rather than from the last level cache. */
typedef struct att_case {
    okv_backend *be;
    okv_kv_view view;
    size_t layer_bytes;
    int n_layers;
    float *q, *out;
    okv_attn_shape s;
} att_case;

static void run_att(void *p) {
    att_case *c = p;
    for (int l = 0; l < c->n_layers; l++) {
        okv_kv_view v = c->view;
        v.k = (const uint8_t *)v.k + l * c->layer_bytes;
        v.v = (const uint8_t *)v.v + l * c->layer_bytes;
        c->be->attn_decode(c->be, c->out, c->q, &v, 1, c->s, NULL);
    }
}

static void bench_attn(okv_backend *be, okv_type t, int n, int reps) {
    const okv_attn_shape s = {9, 3, 64, 0.125f};
    const int64_t stride = 3 * 64;
    const size_t row = okv_type_row_bytes(t, stride), layer = row * (size_t)n;
    const int n_layers = (int)(((size_t)256 << 20) / (2 * layer) + 1);
    uint8_t *k = malloc(layer * n_layers), *v = malloc(layer * n_layers);
    float *tmp = malloc((size_t)stride * 4);
    for (size_t r = 0; r < (size_t)n * n_layers; r++) {
        fill(tmp, stride);
        okv_quant_row_ref(k + r * row, tmp, t, stride);
        okv_quant_row_ref(v + r * row, tmp, t, stride);
    }
    att_case c = {be, {t, k, v, stride, NULL, n}, layer, n_layers, malloc(9 * 64 * 4), malloc(9 * 64 * 4), s};
    fill(c.q, 9 * 64);
    const double tl = time_best(run_att, &c, reps) / n_layers;
    printf("attn_decode 9/3 heads hd 64 %-4s ctx %-6d threads %s: %8.1f us per layer  %6.2f GB/s of K+V\n",
           okv_type_name(t), n, be->name, tl * 1e6, 2.0 * layer / tl / 1e9);
    free(k);
    free(v);
    free(tmp);
    free(c.q);
    free(c.out);
}

typedef struct pf_case {
    okv_backend *be;
    okv_kv_view view;
    float *q, *out;
    int n_q, q_pos0;
    okv_attn_shape s;
} pf_case;

static void run_pf(void *p) {
    pf_case *c = p;
    c->be->attn_prefill(c->be, c->out, c->q, c->n_q, c->q_pos0, c->view, c->s);
}

/* One prefill chunk of n_q queries after q_pos0 cached rows, as the engine issues it; FLOP counts
 * the causal part only (q.k and p.v, 2 each per query, key and dimension). */
static void bench_prefill(okv_backend *be, okv_attn_shape s, int n_q, int q_pos0, int reps) {
    const int n = q_pos0 + n_q, qd = s.n_heads * s.head_dim;
    const int64_t stride = (int64_t)s.n_kv_heads * s.head_dim;
    uint16_t *k = malloc((size_t)n * stride * 2), *v = malloc((size_t)n * stride * 2);
    float *tmp = malloc((size_t)n * stride * 4);
    fill(tmp, n * stride);
    for (int64_t i = 0; i < n * stride; i++) k[i] = okv_f32_to_fp16(tmp[i]);
    for (int64_t i = 0; i < n * stride; i++) v[i] = okv_f32_to_fp16(tmp[(i * 7 + 3) % (n * stride)]);
    pf_case c = {be, {OKV_TYPE_F16, k, v, stride, NULL, n}, malloc((size_t)n_q * qd * 4), malloc((size_t)n_q * qd * 4),
                 n_q, q_pos0, s};
    fill(c.q, (int64_t)n_q * qd);
    const double t = time_best(run_pf, &c, reps);
    const double flop = 4.0 * qd * ((double)n_q * q_pos0 + (double)n_q * (n_q + 1) / 2.0);
    printf("attn_prefill %2d/%d heads hd %-3d n_q %-4d pos0 %-5d threads %s: %9.2f ms  %6.2f GFLOP/s\n", s.n_heads,
           s.n_kv_heads, s.head_dim, n_q, q_pos0, be->name, t * 1e3, flop / t / 1e9);
    free(k);
    free(v);
    free(tmp);
    free(c.q);
    free(c.out);
}

static void bench_prefill_all(okv_backend *be) {
    const okv_attn_shape shapes[2] = {{9, 3, 64, 0.125f}, {32, 8, 128, 0.08838834764831845f}};
    const int pos0[3] = {0, 3584, 7680};
    for (int si = 0; si < 2; si++)
        for (int pi = 0; pi < 3; pi++) bench_prefill(be, shapes[si], 512, pos0[pi], 1);
}

int main(int argc, char **argv) {
    const int min_threads = argc > 1 ? atoi(argv[1]) : 1;
    const int max_threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *only = argc > 3 ? argv[3] : "";
    for (int nt = min_threads; nt <= max_threads; nt++) {
        okv_backend be;
        if (okv_backend_cpu_init(&be, nt, 64, 4096)) return 1;
        char name[16];
        snprintf(name, sizeof name, "%d", nt);
        be.name = name;
        if (!strcmp(only, "types")) {
            for (int t = 0; t < OKV_TYPE_COUNT; t++) {
                if (!okv_type_is_weight((okv_type)t)) continue;
                bench_matmul(&be, (okv_type)t, 1536, 576, 1, 200);
                bench_matmul(&be, (okv_type)t, 4096, 4096, 1, 10);
            }
            be.free(&be);
            continue;
        }
        if (strcmp(only, "prefill") && strcmp(only, "attn")) {
            bench_matmul(&be, OKV_TYPE_Q4_1, 1536, 576, 1, 200);
            bench_matmul(&be, OKV_TYPE_Q4_1, 192, 576, 1, 1000);
            bench_matmul(&be, OKV_TYPE_Q4_1, 576, 1536, 1, 200);
            bench_matmul(&be, OKV_TYPE_Q8_0, 49152, 576, 1, 5);
            bench_matmul(&be, OKV_TYPE_Q4_1, 196608, 576, 1, 3);
            bench_matmul(&be, OKV_TYPE_Q4_0, 1536, 576, 1, 200);
            bench_matmul(&be, OKV_TYPE_F16, 1536, 576, 1, 100);
            bench_matmul(&be, OKV_TYPE_Q4_1, 1536, 576, 64, 5);
            /* the K-quants of Q4_K_M files at 8B widths: decode and a prefill tile */
            bench_matmul(&be, OKV_TYPE_Q4_K, 4096, 4096, 1, 20);
            bench_matmul(&be, OKV_TYPE_Q6_K, 4096, 4096, 1, 20);
            bench_matmul(&be, OKV_TYPE_Q4_K, 14336, 4096, 1, 5);
            bench_matmul(&be, OKV_TYPE_Q4_K, 4096, 4096, 64, 3);
            bench_matmul(&be, OKV_TYPE_Q5_K, 4096, 4096, 1, 20);
            bench_matmul(&be, OKV_TYPE_Q3_K, 4096, 4096, 1, 20);
            bench_matmul(&be, OKV_TYPE_Q2_K, 4096, 4096, 1, 20);
        }
        if (strcmp(only, "prefill"))
            for (int t = 0; t < 2; t++) {
                bench_attn(&be, t ? OKV_TYPE_Q8_0 : OKV_TYPE_F16, 1024, 50);
                bench_attn(&be, t ? OKV_TYPE_Q8_0 : OKV_TYPE_F16, 16384, 5);
            }
        if (strcmp(only, "attn")) bench_prefill_all(&be);
        be.free(&be);
    }
    return 0;
}
