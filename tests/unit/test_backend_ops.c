/* test_backend_ops.c — every op of every backend in the build (cpu, cpu-strict, and cuda where a
 * GPU is visible) against its kernels/ref.c reference, through the backend's own memory: inputs
 * go in with `copy`, results come back with `copy`, so a backend that reads host memory fails.
 * Elementwise math within atol + rtol*|ref|, long reductions within a share of sum |terms|,
 * selections, argmax, gathers, KV stores and copies bit-exact. Prints each check and its worst
 * error; non-zero on failure. On a GPU machine this is the CUDA backend's op test too. */
#include "kernels/backend.h"
#include "common.h"
#include "test_rand.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail, n_checks;

static void report(int ok, const char *be, const char *what, const char *detail) {
    n_checks++;
    if (!ok) n_fail++;
    printf("%s  %-10s %-46s %s\n", ok ? "ok  " : "FAIL", be, what, detail);
}

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    OKV_ASSERT(p);
    return p;
}

/* Backend memory holding a copy of host bytes. */
static void *up(okv_backend *be, const void *host, size_t bytes) {
    void *d = be->alloc(be, bytes);
    OKV_ASSERT(d);
    if (host) be->copy(be, d, host, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
    return d;
}
/* Host memory holding a copy of backend bytes (the caller frees it). */
static void *down(okv_backend *be, const void *dev, size_t bytes) {
    void *h = xmalloc(bytes);
    be->copy(be, h, dev, bytes, OKV_COPY_D2H, OKV_STREAM_SYNC);
    return h;
}

/* Worst |got - ref| / (atol + rtol*|ref|) (NaN counts as failure) and the worst absolute error. */
static double elem_err(const float *got, const float *ref, int64_t n, double atol, double rtol, double *wa) {
    double worst = 0.0;
    *wa = 0.0;
    for (int64_t i = 0; i < n; i++) {
        /* an exact match is no error even where the tolerance is 0 (0/0 would read as NaN) */
        const double e = fabs((double)got[i] - ref[i]), r = e == 0.0 ? 0.0 : e / (atol + rtol * fabs(ref[i]));
        if (!(r <= worst)) worst = r;
        if (e > *wa) *wa = e;
    }
    return worst;
}

/* ---- ops --------------------------------------------------------------------------------------- */

/* The weight types be has kernels for (weight_ok), in type order; returns the count. */
static int weight_types(okv_backend *be, okv_type *types) {
    int n = 0;
    for (int t = 0; t < OKV_TYPE_COUNT; t++)
        if (okv_type_is_weight((okv_type)t) && be->weight_ok(be, (okv_type)t)) types[n++] = (okv_type)t;
    return n;
}

static void test_matmul(okv_backend *be) {
    okv_type types[OKV_TYPE_COUNT];
    const int n_types = weight_types(be, types);
    const int ins[] = {32, 96, 576}, ins_k[] = {256, 768, 2304}, outs[] = {1, 7, 129}, toks[] = {1, 3, 8, 17};
    for (int ti = 0; ti < n_types; ti++) {
        double worst = 0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 4; c++) {
                    const okv_type t = types[ti];
                    /* rows of whole blocks: the K-quants' super-blocks hold 256 elements */
                    const int n_in = okv_type_block_elems(t) > OKV_QK ? ins_k[a] : ins[a];
                    const int n_out = outs[b], n_tok = toks[c];
                    const size_t rb = okv_type_row_bytes(t, n_in);
                    float *wf = xmalloc(sizeof(float) * (size_t)n_in), *x = xmalloc(sizeof(float) * (size_t)n_tok * n_in);
                    uint8_t *w = xmalloc(rb * (size_t)n_out);
                    for (int o = 0; o < n_out; o++) {
                        fill(wf, n_in, 1.0f);
                        okv_quant_row_ref(w + (size_t)o * rb, wf, t, n_in);
                    }
                    fill(x, (int64_t)n_tok * n_in, 1.0f);
                    float *ref = xmalloc(sizeof(float) * (size_t)n_tok * n_out);
                    okv_matmul_ref(ref, w, t, x, n_tok, n_in, n_out);
                    void *dw = up(be, w, rb * (size_t)n_out), *dx = up(be, x, sizeof(float) * (size_t)n_tok * n_in);
                    float *dy = up(be, NULL, sizeof(float) * (size_t)n_tok * n_out);
                    be->matmul(be, dy, dw, t, dx, n_tok, n_in, n_out);
                    float *got = down(be, dy, sizeof(float) * (size_t)n_tok * n_out);
                    /* a dot product of n_in terms of |w x| <= 8: 1e-5 per term, plus 1e-4 of the value */
                    double e;
                    worst = fmax(worst, elem_err(got, ref, (int64_t)n_tok * n_out, 1e-5 * n_in, 1e-4, &e));
                    be->mem_free(be, dw), be->mem_free(be, dx), be->mem_free(be, dy);
                    free(wf), free(x), free(w), free(ref), free(got);
                }
        char what[64], d[64];
        snprintf(what, sizeof what, "matmul %s (27 shapes)", okv_type_name(types[ti]));
        snprintf(d, sizeof d, "worst %.3f of tolerance", worst);
        report(worst <= 1.0, be->name, what, d);
    }
}

static void test_elementwise(okv_backend *be) {
    const int n_tok = 5, dim = 96, H = 6, hd = 16;
    const size_t n = (size_t)n_tok * dim;
    float *x = xmalloc(n * 4), *y = xmalloc(n * 4), *w = xmalloc(dim * 4), *ref = xmalloc(n * 4);
    fill(x, (int64_t)n, 2.0f), fill(y, (int64_t)n, 2.0f), fill(w, dim, 1.0f);
    float *dx = up(be, x, n * 4), *dy = up(be, y, n * 4), *dw = up(be, w, dim * 4), *got;
    double e, r;
    char d[64];
    okv_rmsnorm_ref(ref, x, w, n_tok, dim, 1e-5f);
    be->rmsnorm(be, dy, dx, dw, n_tok, dim, 1e-5f);
    got = down(be, dy, n * 4);
    r = elem_err(got, ref, (int64_t)n, 1e-5, 1e-4, &e);
    snprintf(d, sizeof d, "worst abs %.2e", e), report(r <= 1, be->name, "rmsnorm", d), free(got);

    memcpy(ref, x, n * 4), okv_swiglu_ref(ref, x, y, (int64_t)n);
    be->copy(be, dy, y, n * 4, OKV_COPY_H2D, OKV_STREAM_SYNC);
    float *dout = up(be, NULL, n * 4);
    be->swiglu(be, dout, dx, dy, (int64_t)n);
    got = down(be, dout, n * 4);
    r = elem_err(got, ref, (int64_t)n, 1e-6, 1e-5, &e);
    snprintf(d, sizeof d, "worst abs %.2e", e), report(r <= 1, be->name, "swiglu", d), free(got);

    memcpy(ref, y, n * 4), okv_add_ref(ref, x, (int64_t)n);
    be->add(be, dy, dx, (int64_t)n);
    got = down(be, dy, n * 4);
    r = elem_err(got, ref, (int64_t)n, 0, 0 + 1e-7, &e);
    snprintf(d, sizeof d, "worst abs %.2e", e), report(r <= 1, be->name, "add", d), free(got);

    memcpy(ref, y, n * 4), okv_add_ref(ref, x, (int64_t)n), okv_bias_add_ref(ref, w, n_tok, dim);
    be->bias_add(be, dy, dw, n_tok, dim);
    got = down(be, dy, n * 4);
    r = elem_err(got, ref, (int64_t)n, 1e-7, 1e-6, &e);
    snprintf(d, sizeof d, "worst abs %.2e", e), report(r <= 1, be->name, "bias_add", d), free(got);

    /* rope over [n_tok][H][hd] = n floats, full and partial rotary dims */
    for (int n_freq = hd / 2; n_freq >= hd / 4; n_freq -= hd / 4) {
        int32_t pos[5] = {0, 1, 17, 4095, 70000};
        float inv[8];
        for (int i = 0; i < n_freq; i++) inv[i] = powf(10000.0f, -2.0f * i / hd);
        memcpy(ref, x, n * 4), okv_rope_ref(ref, pos, n_tok, H, hd, inv, n_freq);
        int32_t *dpos = up(be, pos, sizeof pos);
        float *dinv = up(be, inv, sizeof(float) * (size_t)n_freq);
        be->copy(be, dy, x, n * 4, OKV_COPY_H2D, OKV_STREAM_SYNC);
        be->rope(be, dy, dpos, n_tok, H, hd, dinv, n_freq);
        got = down(be, dy, n * 4);
        r = elem_err(got, ref, (int64_t)n, 2e-5, 2e-4, &e);
        char what[48];
        snprintf(what, sizeof what, "rope (%d of %d dims)", 2 * n_freq, hd);
        snprintf(d, sizeof d, "worst abs %.2e", e), report(r <= 1, be->name, what, d), free(got);
        be->mem_free(be, dpos), be->mem_free(be, dinv);
    }
    be->mem_free(be, dx), be->mem_free(be, dy), be->mem_free(be, dw), be->mem_free(be, dout);
    free(x), free(y), free(w), free(ref);
}

/* The KV types a backend's kv_store and attention take: the CUDA kernels read f16 and f32 only
 * (the engine refuses q8_0 and q4_0 KV there at start-up), cpu and cpu-strict those too. */
static const okv_type kv_types[] = {OKV_TYPE_F16, OKV_TYPE_F32, OKV_TYPE_Q8_0, OKV_TYPE_Q4_0};
static int kv_type_count(const okv_backend *be) { return strcmp(be->name, "cuda") ? 4 : 2; }

static void test_embed_store_argmax(okv_backend *be) {
    okv_type types[OKV_TYPE_COUNT];
    const int n_types = weight_types(be, types);
    const int V = 50, n_tok = 7;
    int32_t ids[7] = {0, 49, 3, 3, 17, 25, 1};
    for (int ti = 0; ti < n_types; ti++) {
        const int dim = okv_type_block_elems(types[ti]) > OKV_QK ? 256 : 64; /* whole blocks */
        const size_t rb = okv_type_row_bytes(types[ti], dim);
        uint8_t *tab = xmalloc(rb * V);
        float row[256], *ref = xmalloc(sizeof(float) * n_tok * dim);
        for (int v = 0; v < V; v++) fill(row, dim, 1.0f), okv_quant_row_ref(tab + (size_t)v * rb, row, types[ti], dim);
        okv_embed_ref(ref, tab, types[ti], ids, n_tok, dim);
        void *dtab = up(be, tab, rb * V), *dids = up(be, ids, sizeof ids), *dout = up(be, NULL, sizeof(float) * n_tok * dim);
        be->embed(be, dout, dtab, types[ti], dids, n_tok, dim);
        float *got = down(be, dout, sizeof(float) * n_tok * dim);
        double e, r = elem_err(got, ref, (int64_t)n_tok * dim, 0, 1e-6, &e);
        char what[48], d[48];
        snprintf(what, sizeof what, "embed %s", okv_type_name(types[ti]));
        snprintf(d, sizeof d, "worst abs %.2e", e), report(r <= 1, be->name, what, d);
        be->mem_free(be, dtab), be->mem_free(be, dids), be->mem_free(be, dout);
        free(tab), free(ref), free(got);
    }
    /* kv_store: rows scattered into a strided store, bit-exact (q8_0/q4_0 rows in whole blocks) */
    for (int ti = 0; ti < kv_type_count(be); ti++) {
        const okv_type t = kv_types[ti];
        const int row_elems = okv_kv_type_int(t) ? 64 : 48, stride = okv_kv_type_int(t) ? 96 : 80, n_rows = 20;
        const size_t bytes = okv_type_row_bytes(t, (int64_t)stride * n_rows);
        float src[4 * 64];
        fill(src, 4 * row_elems, 3.0f);
        int32_t rows[4] = {19, 0, 7, 8};
        uint8_t *ref = xmalloc(bytes);
        okv_kv_store_ref(ref, t, stride, rows, src, 4, row_elems);
        void *dst = up(be, NULL, bytes), *dsrc = up(be, src, sizeof src), *drows = up(be, rows, sizeof rows);
        be->kv_store(be, dst, t, stride, drows, dsrc, 4, row_elems);
        uint8_t *got = down(be, dst, bytes);
        char what[32];
        snprintf(what, sizeof what, "kv_store %s", okv_type_name(t));
        report(!memcmp(got, ref, bytes), be->name, what, "bit-exact");
        be->mem_free(be, dst), be->mem_free(be, dsrc), be->mem_free(be, drows);
        free(ref), free(got);
    }
    /* argmax: ties go to the first index */
    const int rows = 3, n = 1000;
    float *x = xmalloc(sizeof(float) * rows * n);
    fill(x, rows * n, 1.0f);
    x[1 * n + 10] = x[1 * n + 900] = 50.0f;
    x[2 * n + 999] = 60.0f;
    int32_t want[3], *got;
    okv_argmax_ref(want, x, rows, n);
    void *dx = up(be, x, sizeof(float) * rows * n), *dout = up(be, NULL, sizeof want);
    be->argmax(be, dout, dx, rows, n);
    got = down(be, dout, sizeof want);
    char d[64];
    snprintf(d, sizeof d, "got %d %d %d, want %d %d %d", got[0], got[1], got[2], want[0], want[1], want[2]);
    report(!memcmp(got, want, sizeof want) && want[1] == 10 && want[2] == 999, be->name, "argmax", d);
    be->mem_free(be, dx), be->mem_free(be, dout);
    free(x), free(got);
}

/* A KV store of n rows ([n][kv_heads*hd], a KV type) with its twin in backend memory. */
typedef struct kv_pair {
    void *k, *v, *dk, *dv;
    size_t bytes;
} kv_pair;

static kv_pair kv_make(okv_backend *be, okv_type t, int n, int kv_dim) {
    kv_pair p;
    p.bytes = okv_type_row_bytes(t, (int64_t)n * kv_dim);
    p.k = xmalloc(p.bytes), p.v = xmalloc(p.bytes);
    float *tmp = xmalloc(sizeof(float) * (size_t)n * kv_dim);
    fill(tmp, (int64_t)n * kv_dim, 1.0f), okv_quant_row_ref(p.k, tmp, t, (int64_t)n * kv_dim);
    fill(tmp, (int64_t)n * kv_dim, 1.0f), okv_quant_row_ref(p.v, tmp, t, (int64_t)n * kv_dim);
    free(tmp);
    p.dk = up(be, p.k, p.bytes), p.dv = up(be, p.v, p.bytes);
    return p;
}

static void kv_drop(okv_backend *be, kv_pair *p) {
    be->mem_free(be, p->dk), be->mem_free(be, p->dv);
    free(p->k), free(p->v);
}

static void test_attention(okv_backend *be) {
    const okv_attn_shape shapes[] = {{9, 3, 64, 0.125f}, {4, 4, 64, 0.125f}, {8, 2, 128, 0.08838835f}};
    for (int si = 0; si < 3; si++) {
        const okv_attn_shape s = shapes[si];
        const int kv_dim = s.n_kv_heads * s.head_dim, qd = s.n_heads * s.head_dim;
        for (int ti = 0; ti < kv_type_count(be); ti++) {
            const okv_type t = kv_types[ti];
            const int N = 700;
            kv_pair kv = kv_make(be, t, N, kv_dim);
            char what[64], d[64];
            /* prefill: n_q queries from q_pos0 */
            double worst = 0, wa = 0;
            const int cases[][2] = {{1, 0}, {17, 0}, {70, 33}, {5, 600}};
            for (int c = 0; c < 4; c++) {
                const int n_q = cases[c][0], p0 = cases[c][1];
                float *q = xmalloc(sizeof(float) * n_q * qd), *ref = xmalloc(sizeof(float) * n_q * qd);
                fill(q, (int64_t)n_q * qd, 1.0f);
                okv_kv_view hv = {t, kv.k, kv.v, kv_dim, NULL, p0 + n_q};
                okv_attn_prefill_ref(ref, q, n_q, p0, hv, s);
                okv_kv_view dv = {t, kv.dk, kv.dv, kv_dim, NULL, p0 + n_q};
                float *dq = up(be, q, sizeof(float) * n_q * qd), *dout = up(be, NULL, sizeof(float) * n_q * qd);
                be->attn_prefill(be, dout, dq, n_q, p0, dv, s);
                float *got = down(be, dout, sizeof(float) * n_q * qd);
                double e;
                worst = fmax(worst, elem_err(got, ref, (int64_t)n_q * qd, 2e-4, 2e-3, &e));
                wa = fmax(wa, e);
                be->mem_free(be, dq), be->mem_free(be, dout);
                free(q), free(ref), free(got);
            }
            snprintf(what, sizeof what, "attn_prefill %d/%d hd %d %s", s.n_heads, s.n_kv_heads, s.head_dim, okv_type_name(t));
            snprintf(d, sizeof d, "worst abs %.2e (%.2f of tol)", wa, worst);
            report(worst <= 1, be->name, what, d);

            /* decode over an index list + a tail view, with view-0 logits */
            float *q = xmalloc(sizeof(float) * qd), *ref = xmalloc(sizeof(float) * qd);
            fill(q, qd, 1.0f);
            const int n_idx = 300, tail0 = 650, n_tail = 50;
            int32_t *idx = xmalloc(sizeof(int32_t) * n_idx);
            for (int i = 0, r = 0; i < n_idx; i++) r += 1 + (int)(rng_u32() % 2), idx[i] = r;
            int32_t *didx = up(be, idx, sizeof(int32_t) * n_idx);
            const size_t toff = okv_type_row_bytes(t, (int64_t)tail0 * kv_dim);
            okv_kv_view hv[2] = {{t, kv.k, kv.v, kv_dim, idx, n_idx},
                                 {t, (uint8_t *)kv.k + toff, (uint8_t *)kv.v + toff, kv_dim, NULL, n_tail}};
            okv_kv_view dv[2] = {{t, kv.dk, kv.dv, kv_dim, didx, n_idx},
                                 {t, (uint8_t *)kv.dk + toff, (uint8_t *)kv.dv + toff, kv_dim, NULL, n_tail}};
            float *lref = xmalloc(sizeof(float) * s.n_heads * n_idx);
            okv_attn_decode_ref(ref, q, hv, 2, s, lref);
            float *dq = up(be, q, sizeof(float) * qd), *dout = up(be, NULL, sizeof(float) * qd);
            float *dl = up(be, NULL, sizeof(float) * s.n_heads * n_idx);
            be->attn_decode(be, dout, dq, dv, 2, s, dl);
            float *got = down(be, dout, sizeof(float) * qd), *lgot = down(be, dl, sizeof(float) * s.n_heads * n_idx);
            double e1, e2;
            const double r1 = elem_err(got, ref, qd, 1e-5, 1e-4, &e1);
            const double r2 = elem_err(lgot, lref, (int64_t)s.n_heads * n_idx, 1e-5, 1e-5, &e2);
            /* q8_0/q4_0 K: every backend that runs it takes the ref's integer block dots and f32 steps */
            const size_t lbytes = sizeof(float) * s.n_heads * n_idx;
            const int l_exact = !okv_kv_type_int(t) || !memcmp(lgot, lref, lbytes);
            snprintf(what, sizeof what, "attn_decode idx+tail %d/%d hd %d %s", s.n_heads, s.n_kv_heads, s.head_dim, okv_type_name(t));
            snprintf(d, sizeof d, "out %.2e, logits %.2e%s", e1, e2, okv_kv_type_int(t) ? (l_exact ? " (bit-exact)" : " (not bit-exact)") : "");
            report(r1 <= 1 && r2 <= 1 && l_exact, be->name, what, d);
            /* attn_logits over the same rows */
            okv_attn_logits_ref(lref, q, hv[0], s);
            be->attn_logits(be, dl, dq, dv[0], s);
            free(lgot);
            lgot = down(be, dl, sizeof(float) * s.n_heads * n_idx);
            const double r3 = elem_err(lgot, lref, (int64_t)s.n_heads * n_idx, 1e-5, 1e-5, &e2);
            const int l3_exact = !okv_kv_type_int(t) || !memcmp(lgot, lref, lbytes);
            snprintf(what, sizeof what, "attn_logits %d/%d hd %d %s", s.n_heads, s.n_kv_heads, s.head_dim, okv_type_name(t));
            snprintf(d, sizeof d, "worst abs %.2e%s", e2, okv_kv_type_int(t) ? (l3_exact ? " (bit-exact)" : " (not bit-exact)") : "");
            report(r3 <= 1 && l3_exact, be->name, what, d);
            /* the result depends only on the rows visited: dense rows [0, N) as one view equal an
             * index list naming them all plus a tail split at another row, bit for bit */
            int32_t *all = xmalloc(sizeof(int32_t) * 400);
            for (int i = 0; i < 400; i++) all[i] = i;
            int32_t *dall = up(be, all, sizeof(int32_t) * 400);
            const size_t off = okv_type_row_bytes(t, (int64_t)400 * kv_dim);
            okv_kv_view one = {t, kv.dk, kv.dv, kv_dim, NULL, 650};
            okv_kv_view two[2] = {{t, kv.dk, kv.dv, kv_dim, dall, 400},
                                  {t, (uint8_t *)kv.dk + off, (uint8_t *)kv.dv + off, kv_dim, NULL, 250}};
            float *dout2 = up(be, NULL, sizeof(float) * qd);
            be->attn_decode(be, dout, dq, &one, 1, s, NULL);
            be->attn_decode(be, dout2, dq, two, 2, s, NULL);
            float *g1 = down(be, dout, sizeof(float) * qd), *g2 = down(be, dout2, sizeof(float) * qd);
            snprintf(what, sizeof what, "attn_decode split-invariant %d/%d %s", s.n_heads, s.n_kv_heads, okv_type_name(t));
            report(!memcmp(g1, g2, sizeof(float) * qd), be->name, what, "bit-exact");
            be->mem_free(be, dall), be->mem_free(be, dout2);
            free(all), free(g1), free(g2);
            be->mem_free(be, didx), be->mem_free(be, dq), be->mem_free(be, dout), be->mem_free(be, dl);
            free(q), free(ref), free(idx), free(lref), free(got), free(lgot);
            kv_drop(be, &kv);
        }
    }
}

static void test_select(okv_backend *be) {
    const int H = 4;
    const int ns[] = {1, 37, 1000, 5000};
    const okv_score_kind kinds[] = {OKV_SCORE_MAX, OKV_SCORE_SOFTMAX_MAX, OKV_SCORE_WINDOW_SUM, OKV_SCORE_WINDOW_EXP};
    int cases = 0, bad = 0;
    char d[96] = "all equal";
    for (int ni = 0; ni < 4; ni++)
        for (int ki = 0; ki < 4; ki++)
            for (int variant = 0; variant < 4; variant++) {
                const int n = ns[ni], n_win = 3;
                float *lg = xmalloc(sizeof(float) * n_win * H * n);
                fill(lg, (int64_t)n_win * H * n, 4.0f);
                if (variant == 1) /* heavy ties */
                    for (int i = 0; i < n_win * H * n; i++) lg[i] = (float)(i % 3);
                if (variant == 2) /* all equal */
                    for (int i = 0; i < n_win * H * n; i++) lg[i] = 0.5f;
                okv_select_args a = {.kind = kinds[ki], .k = variant == 3 ? n + 5 : (n + 2) / 3,
                                     .keep_first = variant == 1 ? 2 : 0, .keep_last = variant == 2 ? 3 : 0,
                                     .n_win = n_win, .ages = {0, 1, 2}};
                if (variant == 2) a.n_tail = n / 2; /* ignored by the non-window kinds */
                float *dlg = up(be, lg, sizeof(float) * n_win * H * n);
                a.window_logits = dlg;
                int32_t *want = xmalloc(sizeof(int32_t) * (size_t)n);
                okv_select_args ha = a;
                ha.window_logits = lg;
                const int kw = okv_select_ref(want, lg, H, n, &ha);
                int32_t *dout = up(be, NULL, sizeof(int32_t) * (size_t)n);
                const int kg = be->select(be, dout, dlg, H, n, &a);
                int32_t *got = down(be, dout, sizeof(int32_t) * (size_t)n);
                cases++;
                if (kg != kw || memcmp(got, want, sizeof(int32_t) * (size_t)kw)) {
                    if (!bad) snprintf(d, sizeof d, "first mismatch: n %d kind %d variant %d (k %d vs %d)", n, ki, variant, kg, kw);
                    bad++;
                }
                be->mem_free(be, dlg), be->mem_free(be, dout);
                free(lg), free(want), free(got);
            }
    char what[48];
    snprintf(what, sizeof what, "select (%d cases: kinds, ties, tails, k > n)", cases);
    report(bad == 0, be->name, what, d);
}

/* The row cache over a chain of decode steps: each step's ascending index set keeps some of the
 * previous one and adds new rows (ragged counts, k = 0, k = every row). The cached gather must
 * give the plain gather's rows bit for bit, and count as hits exactly the indices the two
 * steps share (counted here with a mark array); the merge-walk reference must agree. */
static void test_row_cache(okv_backend *be) {
    const int rows = 700, row_bytes = 80, steps = 12;
    uint8_t *bank = xmalloc((size_t)rows * row_bytes), *want = xmalloc((size_t)rows * row_bytes);
    uint8_t *ref[2] = {xmalloc((size_t)rows * row_bytes), xmalloc((size_t)rows * row_bytes)};
    for (int i = 0; i < rows * row_bytes; i++) bank[i] = (uint8_t)rng_u32();
    OKV_ASSERT(be->host_register(be, bank, (size_t)rows * row_bytes) == OKV_OK);
    int32_t *idx[2] = {xmalloc(sizeof(int32_t) * rows), xmalloc(sizeof(int32_t) * rows)};
    int n[2] = {0, 0};
    uint8_t *mark = xmalloc((size_t)rows);
    uint8_t *buf[2] = {up(be, NULL, (size_t)rows * row_bytes), up(be, NULL, (size_t)rows * row_bytes)};
    int32_t *didx[2] = {up(be, NULL, sizeof(int32_t) * rows), up(be, NULL, sizeof(int32_t) * rows)};
    uint64_t *dhits = up(be, &(uint64_t){0}, sizeof(uint64_t));
    uint64_t hits_want = 0, hits_ref = 0;
    int bad = 0;
    for (int t = 0; t < steps; t++) {
        const int b = t & 1, p = b ^ 1;
        /* keep about 3/4 of the previous set, add new rows; step 3 selects nothing, step 7 all */
        memset(mark, 0, (size_t)rows);
        for (int i = 0; i < n[p]; i++)
            if (rng_u32() % 4) mark[idx[p][i]] = 1;
        const int add = (int)(rng_u32() % 200);
        for (int i = 0; i < add; i++) mark[rng_u32() % rows] = 1;
        if (t == 3) memset(mark, 0, (size_t)rows);
        if (t == 7) memset(mark, 1, (size_t)rows);
        n[b] = 0;
        for (int r = 0; r < rows; r++)
            if (mark[r]) idx[b][n[b]++] = r;
        for (int i = 0; i < n[p]; i++) hits_want += mark[idx[p][i]];
        be->copy(be, didx[b], idx[b], sizeof(int32_t) * (size_t)n[b], OKV_COPY_H2D, OKV_STREAM_SYNC);
        be->gather_rows_cached(be, buf[b], bank, row_bytes, row_bytes, didx[b], n[b], buf[p],
                               didx[p], n[p], dhits, OKV_STREAM_COPY);
        be->sync(be, OKV_STREAM_COPY);
        okv_gather_rows_ref(want, bank, row_bytes, row_bytes, idx[b], n[b]);
        okv_gather_rows_cached_ref(ref[b], bank, row_bytes, row_bytes, idx[b], n[b], ref[p], idx[p],
                                   n[p], &hits_ref);
        uint8_t *got = down(be, buf[b], n[b] ? (size_t)n[b] * row_bytes : 1);
        bad += memcmp(got, want, (size_t)n[b] * row_bytes) != 0 || memcmp(ref[b], want, (size_t)n[b] * row_bytes) != 0;
        free(got);
    }
    uint64_t hits_got;
    be->copy(be, &hits_got, dhits, sizeof hits_got, OKV_COPY_D2H, OKV_STREAM_SYNC);
    char d[96];
    snprintf(d, sizeof d, "%d steps, %llu hits (want %llu)", steps, (unsigned long long)hits_got,
             (unsigned long long)hits_want);
    report(bad == 0 && hits_got == hits_want && hits_ref == hits_want, be->name, "gather_rows_cached (row cache chain)", d);
    be->host_unregister(be, bank);
    for (int k = 0; k < 2; k++) be->mem_free(be, buf[k]), be->mem_free(be, didx[k]), free(idx[k]);
    be->mem_free(be, dhits);
    free(bank), free(want), free(ref[0]), free(ref[1]), free(mark);
}

static void test_memory(okv_backend *be) {
    /* copies round-trip bit for bit; a strided copy moves exactly its rectangle */
    const size_t bytes = 100003;
    uint8_t *h = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) h[i] = (uint8_t)rng_u32();
    uint8_t *d1 = up(be, h, bytes), *d2 = up(be, NULL, bytes);
    be->copy(be, d2, d1, bytes, OKV_COPY_D2D, OKV_STREAM_SYNC);
    uint8_t *back = down(be, d2, bytes);
    int ok = !memcmp(back, h, bytes);
    uint8_t *rect = xmalloc(bytes);
    be->copy_2d(be, rect + 5, 1000, d1 + 7, 900, 300, 50, OKV_COPY_D2H, OKV_STREAM_SYNC);
    for (int r = 0; r < 50 && ok; r++) ok = !memcmp(rect + 5 + r * 1000, h + 7 + r * 900, 300) && rect[5 + r * 1000 + 300] == 0;
    report(ok, be->name, "copy H2D/D2D/D2H and copy_2d", "bit-exact");
    /* gather of registered host rows, issued on the copy stream and awaited through an event */
    const int rows = 500, row_bytes = 96, n = 257;
    uint8_t *bank = xmalloc((size_t)rows * row_bytes), *want = xmalloc((size_t)n * row_bytes);
    for (int i = 0; i < rows * row_bytes; i++) bank[i] = (uint8_t)rng_u32();
    OKV_ASSERT(be->host_register(be, bank, (size_t)rows * row_bytes) == OKV_OK);
    int32_t idx[257];
    for (int i = 0; i < n; i++) idx[i] = (int32_t)(rng_u32() % rows); /* duplicates too */
    okv_gather_rows_ref(want, bank, row_bytes, row_bytes, idx, n);
    int32_t *didx = up(be, idx, sizeof idx);
    uint8_t *dst = up(be, NULL, (size_t)n * row_bytes);
    okv_event *ev = be->event_new(be);
    be->gather_rows(be, dst, bank, row_bytes, row_bytes, didx, n, OKV_STREAM_COPY);
    be->gather_rows(be, dst, bank, row_bytes, row_bytes, didx, 0, OKV_STREAM_COPY); /* n = 0 */
    be->event_record(be, ev, OKV_STREAM_COPY);
    be->event_wait(be, OKV_STREAM_COMPUTE, ev);
    uint8_t *got = down(be, dst, (size_t)n * row_bytes);
    report(!memcmp(got, want, (size_t)n * row_bytes), be->name, "gather_rows (registered host, copy stream)", "bit-exact");
    be->event_free(be, ev);
    be->host_unregister(be, bank);
    be->mem_free(be, d1), be->mem_free(be, d2), be->mem_free(be, didx), be->mem_free(be, dst);
    free(h), free(back), free(rect), free(bank), free(want), free(got);
}

/* weight_ok only names weight types; host backends take them all, cuda the six it has kernels
 * for; a refused type is a usage error naming the tensor, the type, the backend and what it
 * reads. The refusal is also checked on a stand-in for a backend without q5_0 kernels, so
 * machines without a GPU test it too. */
static bool no_q5_0(okv_backend *be, okv_type t) { return okv_type_is_weight(t) && t != OKV_TYPE_Q5_0; }

static void test_weight_ok(okv_backend *be) {
    okv_type types[OKV_TYPE_COUNT];
    const int n = weight_types(be, types);
    int ok = 1;
    for (int t = 0; t < OKV_TYPE_COUNT; t++) ok &= !be->weight_ok(be, (okv_type)t) || okv_type_is_weight((okv_type)t);
    const bool host = strcmp(be->name, "cuda") != 0;
    int n_weight = 0;
    for (int t = 0; t < OKV_TYPE_COUNT; t++) n_weight += okv_type_is_weight((okv_type)t);
    ok &= host ? n == n_weight : n == 6 && !be->weight_ok(be, OKV_TYPE_Q5_0) && be->weight_ok(be, OKV_TYPE_Q4_1);
    char d[128];
    snprintf(d, sizeof d, "%d of %d weight types", n, n_weight);
    report(ok, be->name, "weight_ok: weight types only (all on the host)", d);

    okv_backend fake = *be;
    fake.name = "stand-in";
    fake.weight_ok = no_q5_0;
    okv_clear_error();
    const int st = okv_backend_check_weight(&fake, OKV_TYPE_Q5_0, "blk.3.ffn_up.weight");
    const char *msg = okv_last_error();
    report(st == OKV_ERR_USAGE && strstr(msg, "blk.3.ffn_up.weight") && strstr(msg, "q5_0") &&
               strstr(msg, "backend=cpu") && strstr(msg, "(f32, f16, q4_0, q4_1, q5_1, q8_0") &&
               okv_backend_check_weight(&fake, OKV_TYPE_Q4_0, "x") == OKV_OK,
           be->name, "a weight type without kernels is refused by name", msg);
}

static void run_backend(okv_backend *be) {
    OKV_ASSERT(be->reserve(be, (okv_attn_shape){9, 3, 64, 0.125f}, 8192) == OKV_OK);
    test_weight_ok(be);
    test_memory(be);
    test_row_cache(be);
    test_matmul(be);
    test_elementwise(be);
    test_embed_store_argmax(be);
    test_attention(be);
    test_select(be);
}

int main(void) {
    okv_log_init(0);
    rng_state = 0x2545f4914f6cdd1dull; /* its own stream, not test_kernels' */
    const okv_backend_kind kinds[] = {OKV_BACKEND_CPU, OKV_BACKEND_CPU_STRICT, OKV_BACKEND_CUDA};
    const okv_backend_params p = {.n_threads = 2, .max_tok = 64, .max_in = 4096, .device = -1,
                                  .arena_bytes = (size_t)256 << 20};
    int ran = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        okv_backend be;
        if (okv_backend_init(&be, kinds[i], &p) != OKV_OK) {
            printf("skip  %-10s %s\n", okv_backend_kind_name(kinds[i]), okv_last_error());
            continue;
        }
        run_backend(&be);
        be.free(&be);
        ran++;
    }
    printf("%d backends, %d checks, %d failed\n", ran, n_checks, n_fail);
    return n_fail || ran < 2 ? 1 : 0;
}
