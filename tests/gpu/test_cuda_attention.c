/* test_cuda_attention.c — the CUDA backend's attention and selection ops against kernels/ref.c:
 * decode over views with index lists (and its bitwise independence of view boundaries), logits,
 * causal prefill, and top-k selection (exact index lists). Prints each check with its worst
 * error; exits 77 (skipped) when no GPU is visible, non-zero on any failure. */
#include "kernels/backend.h"
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef OMNIKV_HAVE_CUDA
int main(void) {
    printf("skipped: no GPU visible (this build has no CUDA backend)\n");
    return 77;
}
#else

static int n_fail, n_checks;
static okv_backend be;

static void report(int ok, const char *what, const char *detail) {
    n_checks++;
    if (!ok) n_fail++;
    printf("%s  %-66s %s\n", ok ? "ok  " : "FAIL", what, detail);
    fflush(stdout);
}

/* ---- data ----------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint32_t rng_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static float rng_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(rng_u32() >> 8) / 16777216.0f;
}
/* Mostly small values with the odd outlier, as activations look. */
static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_uniform(-scale, scale) * (rng_u32() % 50 == 0 ? 8.0f : 1.0f);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    OKV_ASSERT(p);
    return p;
}

static void *dev_alloc(size_t bytes) {
    void *p = be.alloc(&be, bytes ? bytes : 64);
    OKV_ASSERT(p);
    return p;
}

static void *upload(const void *host, size_t bytes) {
    void *d = dev_alloc(bytes);
    if (bytes) be.copy(&be, d, host, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
    return d;
}

static void download(void *host, const void *dev, size_t bytes) {
    if (bytes) be.copy(&be, host, dev, bytes, OKV_COPY_D2H, OKV_STREAM_SYNC);
}

static void dev_free(void *p) { be.mem_free(&be, p); }

/* A KV cache twice over: host (for the reference) and device, rows of `stride` elements (wider
 * than the KV heads, so strides are really used). */
typedef struct kv_cache {
    okv_type type;
    int rows;
    int64_t stride;
    void *hk, *hv, *dk, *dv; /* [rows][stride] */
    float vmax;              /* max |v| */
} kv_cache;

static kv_cache cache_make(okv_type type, int rows, int n_kv, int hd) {
    kv_cache c = {type, rows, (int64_t)n_kv * hd + 4 * (int64_t)(rng_u32() % 3), NULL, NULL, NULL, NULL, 0};
    const int64_t ne = (int64_t)OKV_MAX(rows, 1) * c.stride;
    const size_t es = type == OKV_TYPE_F16 ? 2 : 4;
    float *k = xmalloc((size_t)ne * 4), *v = xmalloc((size_t)ne * 4);
    fill(k, ne, 1.0f);
    fill(v, ne, 1.0f);
    c.hk = xmalloc((size_t)ne * es);
    c.hv = xmalloc((size_t)ne * es);
    for (int64_t i = 0; i < ne; i++) {
        if (type == OKV_TYPE_F16) {
            ((uint16_t *)c.hk)[i] = okv_f32_to_fp16(k[i]);
            ((uint16_t *)c.hv)[i] = okv_f32_to_fp16(v[i]);
            c.vmax = fmaxf(c.vmax, fabsf(okv_fp16_to_f32(((uint16_t *)c.hv)[i])));
        } else {
            ((float *)c.hk)[i] = k[i];
            ((float *)c.hv)[i] = v[i];
            c.vmax = fmaxf(c.vmax, fabsf(v[i]));
        }
    }
    free(k);
    free(v);
    c.dk = upload(c.hk, (size_t)ne * es);
    c.dv = upload(c.hv, (size_t)ne * es);
    return c;
}

static void cache_free(kv_cache *c) {
    free(c->hk);
    free(c->hv);
    dev_free(c->dk);
    dev_free(c->dv);
}

/* A view of rows [first, first+n) (idx NULL) or of the rows idx names, on the host or device
 * copy of the cache. */
static okv_kv_view view_of(const kv_cache *c, int dev, int first, const int32_t *idx, int n) {
    const size_t off = (size_t)first * c->stride * (c->type == OKV_TYPE_F16 ? 2 : 4);
    const uint8_t *k = dev ? c->dk : c->hk, *v = dev ? c->dv : c->hv;
    return (okv_kv_view){c->type, k + off, v + off, c->stride, idx, n};
}

/* ---- decode ----------------------------------------------------------------------------------- */

static const int shapes[][3] = {{9, 3, 64}, {9, 3, 128}, {32, 8, 128}, {32, 8, 64}, {8, 8, 128},
                                {8, 8, 64}, {10, 2, 64}, {32, 2, 128}, {4, 2, 256}};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d; /* NaN counts as the worst */
    }
    return e;
}

static double max_abs(const float *a, int64_t n) {
    double m = 1e-30;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* Views: an index set with gaps into the prompt rows, a contiguous tail in a separate buffer,
 * and (every third case) a third view of a few more indexed rows. q and the tolerance stated in
 * the report: |out - ref| <= 2e-5 * max|v|, |logit - ref| <= 4e-6 * max|logit|. */
static void test_decode(void) {
    const int ctxs[] = {1, 2, 31, 255, 256, 257, 1000, 2049, 5000, 40000};
    double worst_o = 0, worst_l = 0;
    int cases = 0, bad = 0;
    char first_bad[256] = "";
    for (int kt = 0; kt < 2; kt++)
        for (int si = 0; si < N_SHAPES; si++)
            for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2], N = ctxs[ci];
                const okv_type type = kt ? OKV_TYPE_F32 : OKV_TYPE_F16;
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                const int tail = (int)(ci % 4), extra = ci % 3 == 0 ? 5 : 0;
                kv_cache c = cache_make(type, N + 8, KV, hd), tc = cache_make(type, tail + 1, KV, hd);
                int32_t *idx = xmalloc((size_t)(N + extra) * 4);
                int m = 0;
                for (int r = 0; r < N; r++)
                    if (rng_u32() % 5 < 3 || (m == 0 && r == N - 1)) idx[m++] = r;
                for (int e = 0; e < extra; e++) idx[m + e] = (int)(rng_u32() % (unsigned)(N + 8));
                int32_t *didx = upload(idx, (size_t)(m + extra) * 4);
                const int nv = extra ? 3 : 2;
                okv_kv_view hv[3] = {view_of(&c, 0, 0, idx, m), view_of(&tc, 0, 1, NULL, tail),
                                     view_of(&c, 0, 0, idx + m, extra)};
                okv_kv_view dv[3] = {view_of(&c, 1, 0, didx, m), view_of(&tc, 1, 1, NULL, tail),
                                     view_of(&c, 1, 0, didx + m, extra)};
                const size_t ob = (size_t)H * hd * 4, lb = (size_t)H * m * 4;
                float *q = xmalloc(ob), *or = xmalloc(ob), *og = xmalloc(ob), *lr = xmalloc(lb), *lg = xmalloc(lb);
                fill(q, (int64_t)H * hd, 1.0f);
                float *dq = upload(q, ob), *dout = dev_alloc(ob), *dl = dev_alloc(lb);
                okv_attn_decode_ref(or, q, hv, nv, s, lr);
                be.attn_decode(&be, dout, dq, dv, nv, s, dl);
                download(og, dout, ob);
                download(lg, dl, lb);
                const double eo = max_abs_diff(og, or, (int64_t)H * hd) / (2e-5 * c.vmax);
                const double el = max_abs_diff(lg, lr, (int64_t)H * m) / (4e-6 * max_abs(lr, (int64_t)H * m));
                worst_o = fmax(worst_o, eo);
                worst_l = fmax(worst_l, el);
                if (!(eo <= 1.0 && el <= 1.0) && bad++ == 0)
                    snprintf(first_bad, sizeof first_bad,
                             "; first bad: %s H=%d KV=%d hd=%d rows=%d+%d+%d out %.3g logits %.3g of tol",
                             kt ? "f32" : "f16", H, KV, hd, m, tail, extra, eo, el);
                cases++;
                free(idx); free(q); free(or); free(og); free(lr); free(lg);
                dev_free(didx); dev_free(dq); dev_free(dout); dev_free(dl);
                cache_free(&c);
                cache_free(&tc);
            }
    char what[160], det[512];
    snprintf(what, sizeof what, "attn_decode: cuda vs ref, %d cases (GQA 1/3/4/5/16, hd 64/128/256, n 1..40000, gaps, 2-3 views, f16/f32)", cases);
    snprintf(det, sizeof det, "out worst %.3f of 2e-5*max|v|; logits worst %.3f of 4e-6*max|logit|; %d bad%s",
             worst_o, worst_l, bad, first_bad);
    report(bad == 0, what, det);
}

/* The Context Bank's case: view 0's K and V in registered host memory, read by the kernel in
 * place, with a device index list; same tolerance as above. */
static void test_decode_host_view(void) {
    const int H = 32, KV = 8, hd = 128, N = 3000, T = 7;
    const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
    kv_cache c = cache_make(OKV_TYPE_F16, N, KV, hd), tc = cache_make(OKV_TYPE_F16, T, KV, hd);
    const size_t bytes = (size_t)N * c.stride * 2;
    const int rk = be.host_register(&be, c.hk, bytes), rv = be.host_register(&be, c.hv, bytes);
    if (rk != OKV_OK || rv != OKV_OK) {
        report(0, "attn_decode: view in registered host memory", okv_last_error());
        return;
    }
    int32_t *idx = xmalloc((size_t)N * 4);
    int m = 0;
    for (int r = 0; r < N; r += 1 + (int)(rng_u32() % 3)) idx[m++] = r;
    int32_t *didx = upload(idx, (size_t)m * 4);
    okv_kv_view hv[2] = {view_of(&c, 0, 0, idx, m), view_of(&tc, 0, 0, NULL, T)};
    okv_kv_view dv[2] = {view_of(&c, 0, 0, didx, m), view_of(&tc, 1, 0, NULL, T)};
    const size_t ob = (size_t)H * hd * 4;
    float *q = xmalloc(ob), *or = xmalloc(ob), *og = xmalloc(ob);
    fill(q, (int64_t)H * hd, 1.0f);
    float *dq = upload(q, ob), *dout = dev_alloc(ob);
    okv_attn_decode_ref(or, q, hv, 2, s, NULL);
    be.attn_decode(&be, dout, dq, dv, 2, s, NULL);
    download(og, dout, ob);
    const double e = max_abs_diff(og, or, (int64_t)H * hd) / (2e-5 * c.vmax);
    char det[128];
    snprintf(det, sizeof det, "worst %.3f of 2e-5*max|v| (%d indexed host rows + %d device rows)", e, m, T);
    report(e <= 1.0, "attn_decode: view 0 in registered host memory (bank-like)", det);
    be.host_unregister(&be, c.hk);
    be.host_unregister(&be, c.hv);
    free(idx); free(q); free(or); free(og);
    dev_free(didx); dev_free(dq); dev_free(dout);
    cache_free(&c);
    cache_free(&tc);
}

/* The same rows split into views at different boundaries must give the same bits, and view 0's
 * logits must equal the dense logits of those rows bitwise. */
static void test_decode_bitwise(void) {
    const int ctxs[] = {1, 7, 255, 256, 700, 3000, 5000, 40000};
    int bad = 0, cases = 0;
    char first_bad[160] = "";
    for (int kt = 0; kt < 2; kt++)
        for (int si = 0; si < N_SHAPES; si++)
            for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2], N = ctxs[ci], T = 3;
                const okv_type type = kt ? OKV_TYPE_F32 : OKV_TYPE_F16;
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                const size_t es = type == OKV_TYPE_F16 ? 2 : 4;
                kv_cache c = cache_make(type, N + T, KV, hd);
                /* the tail also lives in a separate buffer with its own stride */
                kv_cache tc = cache_make(type, T, KV, hd);
                for (int r = 0; r < T; r++) {
                    memcpy((uint8_t *)tc.hk + r * tc.stride * es, (uint8_t *)c.hk + (N + r) * c.stride * es, (size_t)KV * hd * es);
                    memcpy((uint8_t *)tc.hv + r * tc.stride * es, (uint8_t *)c.hv + (N + r) * c.stride * es, (size_t)KV * hd * es);
                }
                be.copy(&be, tc.dk, tc.hk, (size_t)T * tc.stride * es, OKV_COPY_H2D, OKV_STREAM_SYNC);
                be.copy(&be, tc.dv, tc.hv, (size_t)T * tc.stride * es, OKV_COPY_H2D, OKV_STREAM_SYNC);
                int32_t *all = xmalloc((size_t)(N + T) * 4);
                for (int r = 0; r < N + T; r++) all[r] = r;
                int32_t *dall = upload(all, (size_t)(N + T) * 4);
                const size_t ob = (size_t)H * hd * 4;
                float *q = xmalloc(ob), *dense = xmalloc(ob), *o = xmalloc(ob);
                float *ld = xmalloc((size_t)H * (N + T) * 4), *l = xmalloc((size_t)H * N * 4);
                fill(q, (int64_t)H * hd, 1.0f);
                float *dq = upload(q, ob), *dout = dev_alloc(ob);
                float *dld = dev_alloc((size_t)H * (N + T) * 4), *dl = dev_alloc((size_t)H * N * 4);

                okv_kv_view one = view_of(&c, 1, 0, NULL, N + T);
                be.attn_decode(&be, dout, dq, &one, 1, s, dld);
                download(dense, dout, ob);
                download(ld, dld, (size_t)H * (N + T) * 4);
                int ok = 1;

                okv_kv_view v1[2] = {view_of(&c, 1, 0, dall, N), view_of(&tc, 1, 0, NULL, T)};
                be.attn_decode(&be, dout, dq, v1, 2, s, dl);
                download(o, dout, ob);
                download(l, dl, (size_t)H * N * 4);
                ok &= memcmp(o, dense, ob) == 0;
                for (int h = 0; h < H; h++) ok &= memcmp(l + (size_t)h * N, ld + (size_t)h * (N + T), (size_t)N * 4) == 0;

                const int a = N / 3, b = N / 3 + 1 < N ? N / 3 + 1 : N;
                okv_kv_view v2[5] = {view_of(&c, 1, 0, dall, a), view_of(&c, 1, a, NULL, b - a),
                                     view_of(&c, 1, 0, dall, 0), view_of(&c, 1, 0, dall + b, N - b),
                                     view_of(&tc, 1, 0, NULL, T)};
                be.attn_decode(&be, dout, dq, v2, 5, s, NULL);
                download(o, dout, ob);
                ok &= memcmp(o, dense, ob) == 0;

                okv_kv_view single = view_of(&c, 1, 0, dall, N + T);
                be.attn_decode(&be, dout, dq, &single, 1, s, NULL);
                download(o, dout, ob);
                ok &= memcmp(o, dense, ob) == 0;
                if (!ok && bad++ == 0)
                    snprintf(first_bad, sizeof first_bad, "; first: %s H=%d KV=%d hd=%d N=%d",
                             kt ? "f32" : "f16", H, KV, hd, N);
                cases++;
                free(all); free(q); free(dense); free(o); free(ld); free(l);
                dev_free(dall); dev_free(dq); dev_free(dout); dev_free(dld); dev_free(dl);
                cache_free(&c);
                cache_free(&tc);
            }
    char det[256];
    snprintf(det, sizeof det, "%d of %d cases differ%s", bad, cases, first_bad);
    report(bad == 0, "attn_decode bitwise: dense == idx{0..N-1}+tail == 5 views == 1 idx view", det);
}

static void test_logits(void) {
    double worst = 0;
    int cases = 0;
    for (int kt = 0; kt < 2; kt++)
        for (int si = 0; si < N_SHAPES; si++)
            for (int N = 1; N <= 5000; N = N * 5 + 2) {
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2];
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                kv_cache c = cache_make(kt ? OKV_TYPE_F32 : OKV_TYPE_F16, 2 * N, KV, hd);
                int32_t *idx = xmalloc((size_t)N * 4);
                for (int i = 0; i < N; i++) idx[i] = 2 * i + (int)(rng_u32() & 1);
                int32_t *didx = upload(idx, (size_t)N * 4);
                const size_t lb = (size_t)H * N * 4;
                float *q = xmalloc((size_t)H * hd * 4), *lr = xmalloc(lb), *lg = xmalloc(lb);
                fill(q, (int64_t)H * hd, 1.0f);
                float *dq = upload(q, (size_t)H * hd * 4), *dl = dev_alloc(lb);
                okv_attn_logits_ref(lr, q, view_of(&c, 0, 0, idx, N), s);
                be.attn_logits(&be, dl, dq, view_of(&c, 1, 0, didx, N), s);
                download(lg, dl, lb);
                worst = fmax(worst, max_abs_diff(lg, lr, (int64_t)H * N) / max_abs(lr, (int64_t)H * N));
                cases++;
                free(idx); free(q); free(lr); free(lg);
                dev_free(didx); dev_free(dq); dev_free(dl);
                cache_free(&c);
            }
    char what[96], det[96];
    snprintf(what, sizeof what, "attn_logits: cuda vs ref, %d cases, index sets with gaps", cases);
    snprintf(det, sizeof det, "worst %.2e of max|logit| (tol 4e-6)", worst);
    report(worst <= 4e-6, what, det);
}

/* ---- prefill ---------------------------------------------------------------------------------- */

static void test_prefill(void) {
    const int cfg[][2] = {{1, 0}, {5, 3}, {33, 0}, {33, 700}, {100, 70}, {300, 0}, {300, 700}};
    const int pshapes[] = {0, 2, 4, 6, 8}; /* 9/3x64, 32/8x128, 8/8x128, 10/2x64, 4/2x256 */
    double worst = 0;
    int cases = 0;
    char worst_case[128] = "";
    for (int kt = 0; kt < 2; kt++)
        for (size_t pi = 0; pi < sizeof pshapes / sizeof pshapes[0]; pi++)
            for (size_t a = 0; a < sizeof cfg / sizeof cfg[0]; a++) {
                const int si = pshapes[pi];
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2];
                const int nq = cfg[a][0], p0 = cfg[a][1];
                /* the largest cases only for one shape: the reference is slow */
                if (nq * (p0 + nq) > 100000 && si != 2) continue;
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                kv_cache c = cache_make(kt ? OKV_TYPE_F32 : OKV_TYPE_F16, p0 + nq + 2, KV, hd);
                const int kvn = p0 + nq + (int)(a & 1) * 2;
                const size_t ob = (size_t)nq * H * hd * 4;
                float *q = xmalloc(ob), *or = xmalloc(ob), *og = xmalloc(ob);
                fill(q, (int64_t)nq * H * hd, 2.0f);
                float *dq = upload(q, ob), *dout = dev_alloc(ob);
                okv_attn_prefill_ref(or, q, nq, p0, view_of(&c, 0, 0, NULL, kvn), s);
                be.attn_prefill(&be, dout, dq, nq, p0, view_of(&c, 1, 0, NULL, kvn), s);
                download(og, dout, ob);
                const double e = max_abs_diff(og, or, (int64_t)nq * H * hd) / (2e-5 * c.vmax);
                if (!(e <= worst)) {
                    worst = e;
                    snprintf(worst_case, sizeof worst_case, " (%s H=%d KV=%d hd=%d n_q=%d pos0=%d)",
                             kt ? "f32" : "f16", H, KV, hd, nq, p0);
                }
                cases++;
                free(q); free(or); free(og);
                dev_free(dq); dev_free(dout);
                cache_free(&c);
            }
    char what[128], det[192];
    snprintf(what, sizeof what, "attn_prefill: cuda vs ref, %d cases (n_q 1..300, pos0 0..700, hd 64/128/256)", cases);
    snprintf(det, sizeof det, "worst %.3f of 2e-5*max|v|%s", worst, worst_case);
    report(worst <= 1.0, what, det);
}

/* ---- selection -------------------------------------------------------------------------------- */

static const char *kind_name(okv_score_kind k) {
    static const char *names[] = {"max", "softmax_max", "window_sum", "window_exp"};
    return names[k];
}

/* Logit patterns: random, few distinct values (ties), all equal, signed zeros only (-0 ties
 * +0), only special values, and random with +inf / -inf / NaN / -0 sprinkled in. */
#define N_PATTERNS 6
static void fill_logits(float *l, int64_t n, int pattern) {
    static const float special[] = {INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 1.0f};
    for (int64_t i = 0; i < n; i++) {
        switch (pattern) {
        case 0: l[i] = rng_uniform(-8.0f, 8.0f); break;
        case 1: l[i] = (float)(rng_u32() % 5); break;
        case 2: l[i] = 1.5f; break;
        case 3: l[i] = rng_u32() % 2 ? 0.0f : -0.0f; break;
        case 4: l[i] = special[rng_u32() % 6]; break;
        default: {
            const uint32_t r = rng_u32() % 40;
            l[i] = r == 0 ? INFINITY : r == 1 ? -INFINITY : r == 2 ? NAN : r == 3 ? -0.0f : r == 4 ? 0.0f : rng_uniform(-4.0f, 4.0f);
        }
        }
    }
}

/* One selection on the GPU and in the reference; returns 1 when the index lists are equal. */
static int select_case(okv_score_kind kind, int H, int n, int k, int n_win, int pattern,
                       int keep_first, int keep_last, int n_tail, char *why, size_t why_cap) {
    okv_select_args a;
    memset(&a, 0, sizeof a);
    a.kind = kind;
    a.k = k;
    a.keep_first = keep_first;
    a.keep_last = keep_last;
    const int window = kind == OKV_SCORE_WINDOW_SUM || kind == OKV_SCORE_WINDOW_EXP;
    const int rows = window ? n_win * H : H;
    float *l = xmalloc((size_t)rows * n * 4);
    fill_logits(l, (int64_t)rows * n, pattern);
    float *dl = upload(l, (size_t)rows * n * 4);
    a.n_win = window ? n_win : 0;
    for (int w = 0; w < a.n_win; w++) a.ages[w] = w == 0 ? 0 : (int)(rng_u32() % 12);
    a.n_tail = n_tail; /* beyond n too, and ignored by the non-window kinds */
    okv_select_args ha = a, da = a;
    ha.window_logits = window ? l : NULL;
    da.window_logits = window ? dl : NULL;
    int32_t *ref = xmalloc((size_t)n * 4), *got = xmalloc((size_t)n * 4);
    int32_t *dout = dev_alloc((size_t)n * 4);
    const int kr = okv_select_ref(ref, window ? NULL : l, H, n, &ha);
    const int kg = be.select(&be, dout, window ? NULL : dl, H, n, &da);
    download(got, dout, (size_t)(kg > 0 ? kg : 0) * 4);
    int ok = kr == kg && memcmp(ref, got, (size_t)(kr > 0 ? kr : 0) * 4) == 0;
    if (!ok) {
        int at = 0;
        while (at < kr && at < kg && ref[at] == got[at]) at++;
        float *sc = xmalloc((size_t)n * 4);
        okv_select_scores_ref(sc, window ? NULL : l, H, n, &ha);
        okv_select_force(sc, okv_select_candidates(n, &ha), &ha);
        snprintf(why, why_cap,
                 "%s H=%d n=%d k=%d win=%d pattern=%d: k' ref %d gpu %d; first difference at %d: "
                 "ref %d (score %.9g) gpu %d (score %.9g)",
                 kind_name(kind), H, n, k, n_win, pattern, kr, kg, at, at < kr ? ref[at] : -1,
                 at < kr ? sc[ref[at]] : 0.0, at < kg ? got[at] : -1,
                 at < kg && got[at] >= 0 && got[at] < n ? sc[got[at]] : 0.0);
        free(sc);
    }
    free(l); free(ref); free(got);
    dev_free(dl); dev_free(dout);
    return ok;
}

static void test_select(void) {
    const int ns[] = {1, 2, 3, 100, 4096, 4097, 5000, 70000};
    for (int kind = OKV_SCORE_MAX; kind <= OKV_SCORE_WINDOW_EXP; kind++) {
        int bad = 0, cases = 0;
        char why[600] = "";
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (int pattern = 0; pattern < N_PATTERNS; pattern++)
                for (int rep = 0; rep < 3; rep++) {
                    const int n = ns[ni];
                    const int H = rep == 0 ? 1 : rep == 1 ? 9 : 32;
                    const int ks[] = {0, 1, n - 1, n, n + 5, (int)(rng_u32() % (unsigned)(n + 1)), 2048};
                    const int k = pattern == 3 ? n / 2 + rep : ks[(pattern + 3 * rep) % 7]; /* the cut among zeros */
                    const int kf = rep == 2 ? 4 : 0, kl = rep == 2 ? 64 : rep, nf = rep == 1 ? 5 : rep * 40; /* window tail */
                    char w[512];
                    const int ok = select_case((okv_score_kind)kind, H, n, k, 1 + rep, pattern, kf, kl, nf, w, sizeof w);
                    if (!ok && bad++ == 0) snprintf(why, sizeof why, "; first: %s", w);
                    cases++;
                }
        /* the decode-step size: n = 128K, k = 2048 */
        for (int pattern = 0; pattern < 2; pattern++) {
            char w[512];
            const int ok = select_case((okv_score_kind)kind, 8, 131072, 2048, 3, pattern, 4, 32, 16, w, sizeof w);
            if (!ok && bad++ == 0) snprintf(why, sizeof why, "; first: %s", w);
            cases++;
        }
        char what[128], det[640];
        snprintf(what, sizeof what, "select %s: cuda vs ref, exact lists (n 1..128K, k 0..n+5, ties, +-0, inf/NaN, window tails)", kind_name((okv_score_kind)kind));
        snprintf(det, sizeof det, "%d of %d cases differ%s", bad, cases, why);
        report(bad == 0, what, det);
    }
}

int main(void) {
    okv_log_init(0);
    if (okv_backend_cuda_init(&be, 0, 64, 4096) != OKV_OK) {
        printf("skipped: no GPU visible (%s)\n", okv_last_error());
        return 77;
    }
    const okv_attn_shape big = {32, 8, 128, 0.088f};
    if (be.reserve(&be, big, 8192) != OKV_OK) {
        fprintf(stderr, "FAIL: reserve: %s\n", okv_last_error());
        return 1;
    }
    test_decode();
    test_decode_host_view();
    test_decode_bitwise();
    test_logits();
    test_prefill();
    test_select();
    be.free(&be);
    printf("%d checks, %d failed\n", n_checks, n_fail);
    return n_fail ? 1 : 0;
}
#endif
