/* attention.c — CPU attention: decode over KV views (two passes over fixed logical chunks of the
 * key sequence), logits only, and tiled causal prefill with an online softmax. Compared with
 * kernels/ref.c, decode's independence of view boundaries bitwise, by tests/unit/test_kernels.c. */
#include "cpu.h"
#include "cpu_math.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(OKV_CPU_AVX512)
#include <immintrin.h>
#endif

/* Query heads sharing one load of a K or V row. */
#define ATT_HEAD_TILE 4

/* ---- row access ----------------------------------------------------------------------------------- */

/* Position in the logical row sequence formed by concatenating views. */
typedef struct row_cursor {
    const okv_kv_view *views;
    int n_views, v, r;
} row_cursor;

static row_cursor cursor_at(const okv_kv_view *views, int n_views, int j) {
    row_cursor c = {views, n_views, 0, j};
    while (c.v < n_views && c.r >= views[c.v].n) c.r -= views[c.v++].n;
    return c;
}

static inline void cursor_next(row_cursor *c) {
    if (++c->r < c->views[c->v].n) return;
    c->r = 0;
    while (++c->v < c->n_views && c->views[c->v].n == 0) {}
}

/* K (which == 0) or V row of KV head kvh at the cursor. */
static inline const void *cursor_ptr(const row_cursor *c, int which, int kvh, int hd) {
    const okv_kv_view *vw = &c->views[c->v];
    const int64_t row = vw->idx ? vw->idx[c->r] : c->r;
    const int64_t off = row * vw->stride + (int64_t)kvh * hd;
    const void *base = which == 0 ? vw->k : vw->v;
    return vw->type == OKV_TYPE_F16 ? (const void *)((const uint16_t *)base + off)
                                    : (const void *)((const float *)base + off);
}

/* ---- vector pieces ------------------------------------------------------------------------------- */

#if defined(OKV_CPU_AVX512)
static inline __mmask16 att_mask(int left) {
    return left <= 0 ? (__mmask16)0 : left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

static inline __m512 att_load(const void *p, int f16, int d, __mmask16 m) {
    if (f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + d));
    return _mm512_maskz_loadu_ps(m, (const float *)p + d);
}

/* r[i] = sum of the lanes of a[i], for 16 vectors: pairs are interleaved and added level by
 * level, so no lane of one row ever meets another row's. */
static inline __m512 sum16(const __m512 *a) {
    __m512 t[8], u[4], v[2];
    CPU_UNROLL for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    CPU_UNROLL for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44), _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xee));
    CPU_UNROLL for (int i = 0; i < 2; i++)
        v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x88), _mm512_shuffle_f32x4(v[0], v[1], 0xdd));
}
#endif

static inline float att_scalar(const void *p, int f16, int d) {
    return f16 ? okv_fp16_to_f32(((const uint16_t *)p)[d]) : ((const float *)p)[d];
}

static void row_f32(float *dst, const void *src, int f16, int hd) {
    if (!f16) {
        memcpy(dst, src, (size_t)hd * sizeof(float));
        return;
    }
    int d = 0;
#if defined(OKV_CPU_AVX512)
    for (; d + 16 <= hd; d += 16)
        _mm512_storeu_ps(dst + d, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)src + d))));
#endif
    for (; d < hd; d++) dst[d] = okv_fp16_to_f32(((const uint16_t *)src)[d]);
}

#if defined(OKV_CPU_AVX512)
/* q is held in NCH registers (head_dim = 16*NCH) while 16 key rows pass. */
static inline __attribute__((always_inline)) __m512 dot16_fixed(const float *q, const float *k,
                                                                 int64_t kld, const int NCH) {
    __m512 qv[16], acc[16];
    CPU_UNROLL for (int c = 0; c < NCH; c++) qv[c] = _mm512_loadu_ps(q + 16 * c);
    CPU_UNROLL for (int r = 0; r < 16; r++) {
        const float *kr = k + r * kld;
        __m512 a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kr));
        CPU_UNROLL for (int c = 1; c < NCH; c++) a = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kr + 16 * c), a);
        acc[r] = a;
    }
    return sum16(acc);
}

static __m512 dot16_any(const float *q, const float *k, int64_t kld, int hd) {
    __m512 acc[16];
    CPU_UNROLL for (int r = 0; r < 16; r++) {
        const float *kr = k + r * kld;
        __m512 a = _mm512_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            const __mmask16 m = att_mask(hd - d);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), _mm512_maskz_loadu_ps(m, kr + d), a);
        }
        acc[r] = a;
    }
    return sum16(acc);
}
#endif

/* dst[r] = scale * (q . k_r) for r < nr <= 16, key rows kld floats apart; all 16 rows must be
 * readable (the callers' tiles are zero-padded). A row's dot depends only on its slot r and its
 * own data. */
static void dot16(float *dst, int nr, float scale, const float *q, const float *k, int64_t kld, int hd) {
#if defined(OKV_CPU_AVX512)
    __m512 v;
    if (hd == 64) v = dot16_fixed(q, k, kld, 4);
    else if (hd == 128) v = dot16_fixed(q, k, kld, 8);
    else v = dot16_any(q, k, kld, hd);
    _mm512_mask_storeu_ps(dst, att_mask(nr), _mm512_mul_ps(_mm512_set1_ps(scale), v));
#else
    for (int r = 0; r < nr; r++) {
        float acc = 0.0f;
        for (int d = 0; d < hd; d++) acc += q[d] * k[r * kld + d];
        dst[r] = scale * acc;
    }
#endif
}

/* out[i][d] = sum over rows j in [j0, j1) of p[i][j-j0] * v_j[d] for NG heads sharing KV head kvh.
 * Accumulators stay in registers for 64 dimensions at a time; rows are added in key order. */
static inline __attribute__((always_inline)) void pv_rows(float *const *out, const float *const *p,
                                                           const int NG, const okv_kv_view *views,
                                                           int n_views, int kvh, int j0, int j1,
                                                           int hd) {
#if defined(OKV_CPU_AVX512)
    for (int d0 = 0; d0 < hd; d0 += 64) {
        __mmask16 m[4];
        __m512 acc[ATT_HEAD_TILE][4];
        CPU_UNROLL for (int c = 0; c < 4; c++) m[c] = att_mask(hd - d0 - 16 * c);
        CPU_UNROLL for (int i = 0; i < NG; i++) CPU_UNROLL for (int c = 0; c < 4; c++) acc[i][c] = _mm512_setzero_ps();
        row_cursor cur = cursor_at(views, n_views, j0);
        for (int j = j0; j < j1; j++, cursor_next(&cur)) {
            const void *v = cursor_ptr(&cur, 1, kvh, hd);
            const int f16 = views[cur.v].type == OKV_TYPE_F16;
            __m512 vv[4];
            CPU_UNROLL for (int c = 0; c < 4; c++) vv[c] = att_load(v, f16, d0 + 16 * c, m[c]);
            CPU_UNROLL for (int i = 0; i < NG; i++) {
                const __m512 pb = _mm512_set1_ps(p[i][j - j0]);
                CPU_UNROLL for (int c = 0; c < 4; c++) acc[i][c] = _mm512_fmadd_ps(pb, vv[c], acc[i][c]);
            }
        }
        CPU_UNROLL for (int i = 0; i < NG; i++) CPU_UNROLL for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(out[i] + d0 + 16 * c, m[c], acc[i][c]);
    }
#else
    CPU_UNROLL for (int i = 0; i < NG; i++) memset(out[i], 0, (size_t)hd * sizeof(float));
    row_cursor cur = cursor_at(views, n_views, j0);
    for (int j = j0; j < j1; j++, cursor_next(&cur)) {
        const void *v = cursor_ptr(&cur, 1, kvh, hd);
        const int f16 = views[cur.v].type == OKV_TYPE_F16;
        for (int d = 0; d < hd; d++) {
            const float vv = att_scalar(v, f16, d);
            CPU_UNROLL for (int i = 0; i < NG; i++) out[i][d] += p[i][j - j0] * vv;
        }
    }
#endif
}

/* o = o * corr + sum_j p[j] * v_j over n rows of f32 V, vld floats apart. */
static void pv_tile(float *o, float corr, const float *p, int n, const float *v, int64_t vld, int hd) {
#if defined(OKV_CPU_AVX512)
    for (int d0 = 0; d0 < hd; d0 += 64) {
        __mmask16 m[4];
        __m512 acc[4];
        const __m512 cv = _mm512_set1_ps(corr);
        CPU_UNROLL for (int c = 0; c < 4; c++) {
            m[c] = att_mask(hd - d0 - 16 * c);
            acc[c] = _mm512_mul_ps(cv, _mm512_maskz_loadu_ps(m[c], o + d0 + 16 * c));
        }
        for (int j = 0; j < n; j++) {
            const __m512 pb = _mm512_set1_ps(p[j]);
            CPU_UNROLL for (int c = 0; c < 4; c++)
                acc[c] = _mm512_fmadd_ps(pb, _mm512_maskz_loadu_ps(m[c], v + j * vld + d0 + 16 * c), acc[c]);
        }
        CPU_UNROLL for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(o + d0 + 16 * c, m[c], acc[c]);
    }
#else
    for (int d = 0; d < hd; d++) o[d] *= corr;
    for (int j = 0; j < n; j++)
        for (int d = 0; d < hd; d++) o[d] += p[j] * v[j * vld + d];
#endif
}

#define ATT_NG_SWITCH(ng, CALL)                                                                    \
    switch (ng) {                                                                                  \
    case 1: CALL(1); break;                                                                        \
    case 2: CALL(2); break;                                                                        \
    case 3: CALL(3); break;                                                                        \
    default: CALL(4); break;                                                                       \
    }

/* ---- decode ---------------------------------------------------------------------------------------- */

/* Scaled logits of rows [j0, j1) of the sequence for the query heads of KV heads [k0, k1):
 * l[h*ld + j - j0]. Keys go 16 at a time through a zero-padded f32 copy; j0 is a multiple of 16
 * in the logical sequence, so a row's slot, and so its logit, depends only on its index. */
static void logits_unit(float *l, int64_t ld, const float *q, const okv_kv_view *views, int n_views,
                        int k0, int k1, int j0, int j1, okv_attn_shape s) {
    const int g = s.n_heads / s.n_kv_heads, hd = s.head_dim;
    float kb[16 * CPU_PF_MAX_HD] __attribute__((aligned(64)));
    const void *rows[16];
    int f16[16];
    row_cursor c = cursor_at(views, n_views, j0);
    for (int jb = j0; jb < j1; jb += 16) {
        const int nr = OKV_MIN(16, j1 - jb);
        for (int r = 0; r < nr; r++, cursor_next(&c)) {
            rows[r] = cursor_ptr(&c, 0, 0, hd);
            f16[r] = views[c.v].type == OKV_TYPE_F16;
        }
        if (nr < 16) memset(kb + nr * hd, 0, (size_t)(16 - nr) * hd * sizeof(float));
        for (int kvh = k0; kvh < k1; kvh++) {
            for (int r = 0; r < nr; r++)
                row_f32(kb + r * hd, (const uint8_t *)rows[r] + (size_t)kvh * hd * (f16[r] ? 2 : 4), f16[r], hd);
            for (int h = kvh * g; h < (kvh + 1) * g; h++)
                dot16(l + (int64_t)h * ld + (jb - j0), nr, s.scale, q + (int64_t)h * hd, kb, hd, hd);
        }
    }
}

/* One chunk [j0, j1) for the query heads of KV heads [k0, k1): logits into l ([H][CPU_ATTN_CHUNK],
 * the thread's own), view-0 logits copied out, then per head the chunk max m, the sum of
 * exp(l - m) and the unnormalised V sum with those weights (rows in key order). */
static void chunk_unit(float *l, float *cmax, float *psum, float *part, int n_chunks, int c_idx,
                       const float *q, const okv_kv_view *views, int n_views, int k0, int k1, int j0,
                       int j1, float *logits, int n0, okv_attn_shape s) {
    const int g = s.n_heads / s.n_kv_heads, hd = s.head_dim;
    logits_unit(l, CPU_ATTN_CHUNK, q, views, n_views, k0, k1, j0, j1, s);
    for (int h = k0 * g; h < k1 * g; h++) {
        float *lh = l + (int64_t)h * CPU_ATTN_CHUNK;
        if (logits && j0 < n0) memcpy(logits + (int64_t)h * n0 + j0, lh, (size_t)(OKV_MIN(j1, n0) - j0) * sizeof(float));
        const float m = cpu_max_array(lh, j1 - j0, -INFINITY);
        cmax[(int64_t)h * n_chunks + c_idx] = m;
        psum[(int64_t)h * n_chunks + c_idx] = cpu_exp_sub_sum(lh, lh, m, j1 - j0);
    }
    for (int kvh = k0; kvh < k1; kvh++)
        for (int h0 = 0; h0 < g; h0 += ATT_HEAD_TILE) {
            const int ng = OKV_MIN(ATT_HEAD_TILE, g - h0);
            const int hb = kvh * g + h0;
            float *acc[ATT_HEAD_TILE];
            const float *p[ATT_HEAD_TILE];
            for (int i = 0; i < ng; i++) {
                acc[i] = part + ((int64_t)(hb + i) * n_chunks + c_idx) * hd;
                p[i] = l + (int64_t)(hb + i) * CPU_ATTN_CHUNK;
            }
#define ATT_PV(N) pv_rows(acc, p, N, views, n_views, kvh, j0, j1, hd)
            ATT_NG_SWITCH(ng, ATT_PV)
#undef ATT_PV
        }
}

/* How the (chunk, KV head) work is cut into thread steps. Long sequences give each step whole
 * rows (every KV head of a chunk: contiguous reads); short ones give each step one KV head so
 * threads have work. The cut never changes a result, only who computes it. */
typedef struct dec_split {
    int nc, kvb, units;
} dec_split;

static dec_split dec_split_make(int n, int n_kv, int n_threads) {
    dec_split d;
    d.nc = (n + CPU_ATTN_CHUNK - 1) / CPU_ATTN_CHUNK;
    d.kvb = d.nc >= 2 * n_threads ? n_kv : 1;
    d.units = d.nc * ((n_kv + d.kvb - 1) / d.kvb);
    return d;
}

static void dec_unit(const dec_split *d, int u, int n, int n_kv, int *c, int *k0, int *k1, int *j0, int *j1) {
    *c = u % d->nc;
    *k0 = (u / d->nc) * d->kvb;
    *k1 = OKV_MIN(n_kv, *k0 + d->kvb);
    *j0 = *c * CPU_ATTN_CHUNK;
    *j1 = OKV_MIN(n, *j0 + CPU_ATTN_CHUNK);
}

/* Grows only for callers that did not reserve (the engine reserves its maximum at start-up). */
static int dec_reserve(cpu_state *st, size_t floats) {
    if (floats <= st->dec_cap) return OKV_OK;
    okv_free_mem(st->dec);
    st->dec_cap = floats + floats / 2;
    st->dec = okv_alloc(st->dec_cap * sizeof(float));
    if (!st->dec) {
        st->dec_cap = 0;
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate %zu bytes of attention scratch", floats * sizeof(float));
    }
    return OKV_OK;
}

static size_t dec_floats(const cpu_state *st, okv_attn_shape s, int n) {
    const dec_split d = dec_split_make(n, s.n_kv_heads, st->n_threads);
    const size_t nth = (size_t)OKV_MIN(st->n_threads, d.units);
    return nth * s.n_heads * CPU_ATTN_CHUNK + (size_t)s.n_heads * d.nc * (2 + (size_t)s.head_dim);
}

int cpu_attn_reserve(okv_backend *be, okv_attn_shape s, int max_ctx) {
    cpu_state *st = be->state;
    /* the scratch grows with the context through the chunk count; the thread term saturates */
    return dec_reserve(st, dec_floats(st, s, OKV_MAX(max_ctx, CPU_ATTN_CHUNK * 2 * st->n_threads)));
}

/* Each chunk is reduced against its own max; the chunks are then combined in order, rescaled to
 * the global max (as in split-key "flash decoding"). One barrier per call. */
void cpu_attn_decode(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                     int n_views, okv_attn_shape s, float *logits) {
    cpu_state *st = be->state;
    const int hd = s.head_dim, H = s.n_heads;
    OKV_ASSERT(s.n_kv_heads > 0 && H % s.n_kv_heads == 0 && hd <= CPU_PF_MAX_HD);
    int n = 0;
    for (int v = 0; v < n_views; v++) {
        OKV_ASSERT(views[v].type == OKV_TYPE_F16 || views[v].type == OKV_TYPE_F32);
        n += views[v].n;
    }
    if (n == 0) {
        memset(out, 0, (size_t)H * hd * sizeof(float));
        return;
    }
    const dec_split d = dec_split_make(n, s.n_kv_heads, st->n_threads);
    const int nc = d.nc, nth = OKV_MIN(st->n_threads, d.units);
    const size_t lper = (size_t)H * CPU_ATTN_CHUNK;
    OKV_ASSERT(dec_reserve(st, (size_t)nth * lper + (size_t)H * nc * (2 + (size_t)hd)) == OKV_OK);
    float *cmax = st->dec + (size_t)nth * lper;
    float *psum = cmax + (size_t)H * nc;
    float *part = psum + (size_t)H * nc;
    const int n0 = n_views > 0 ? views[0].n : 0;
#pragma omp parallel num_threads(nth)
    {
        float *l = st->dec + (size_t)omp_get_thread_num() * lper;
#pragma omp for schedule(static)
        for (int u = 0; u < d.units; u++) {
            int c, k0, k1, j0, j1;
            dec_unit(&d, u, n, s.n_kv_heads, &c, &k0, &k1, &j0, &j1);
            chunk_unit(l, cmax, psum, part, nc, c, q, views, n_views, k0, k1, j0, j1, logits, n0, s);
        }
#pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            const float *mh = cmax + (int64_t)h * nc;
            const float m = cpu_max_array(mh, nc, -INFINITY);
            float *o = out + (int64_t)h * hd;
            float sum = 0.0f;
            memset(o, 0, (size_t)hd * sizeof(float));
            for (int c = 0; c < nc; c++) {
                const float w = expf(mh[c] - m);
                const float *pc = part + ((int64_t)h * nc + c) * hd;
                sum += w * psum[(int64_t)h * nc + c];
                for (int e = 0; e < hd; e++) o[e] += w * pc[e];
            }
            const float inv = 1.0f / sum;
            for (int e = 0; e < hd; e++) o[e] *= inv;
        }
    }
}

void cpu_attn_logits(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                     okv_attn_shape s) {
    cpu_state *st = be->state;
    OKV_ASSERT(kv.type == OKV_TYPE_F16 || kv.type == OKV_TYPE_F32);
    OKV_ASSERT(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 && s.head_dim <= CPU_PF_MAX_HD);
    if (kv.n == 0) return;
    const dec_split d = dec_split_make(kv.n, s.n_kv_heads, st->n_threads);
#pragma omp parallel for num_threads(OKV_MIN(st->n_threads, d.units)) schedule(static)
    for (int u = 0; u < d.units; u++) {
        int c, k0, k1, j0, j1;
        dec_unit(&d, u, kv.n, s.n_kv_heads, &c, &k0, &k1, &j0, &j1);
        logits_unit(logits + j0, kv.n, q, &kv, 1, k0, k1, j0, j1, s);
    }
}

/* ---- prefill --------------------------------------------------------------------------------------- */

/* Per-thread tile scratch: K and V tiles as f32, one row of scores, the output accumulators and
 * the running max and sum of each (query, head) row. */
size_t cpu_pf_floats(void) {
    return (size_t)2 * CPU_PF_KEYS * CPU_PF_MAX_HD + CPU_PF_KEYS + (size_t)CPU_PF_ROWS * CPU_PF_MAX_HD +
           2 * CPU_PF_ROWS;
}

/* Rows [k0, k0+kn) of KV head kvh as f32 rows of hd floats: V of an f32 cache is read in place,
 * everything else is converted into buf, K zero-padded to whole groups of 16 rows for dot16.
 * Returns the first row; *ld receives the row stride. */
static const float *pf_rows(float *buf, const okv_kv_view *kv, int which, int kvh, int k0, int kn,
                            int hd, int64_t *ld) {
    const void *base = which == 0 ? kv->k : kv->v;
    const int f16 = kv->type == OKV_TYPE_F16;
    if (!f16 && which == 1) {
        *ld = kv->stride;
        return (const float *)base + (int64_t)k0 * kv->stride + (int64_t)kvh * hd;
    }
    for (int j = 0; j < kn; j++) {
        const int64_t off = (int64_t)(k0 + j) * kv->stride + (int64_t)kvh * hd;
        row_f32(buf + (int64_t)j * hd, f16 ? (const void *)((const uint16_t *)base + off) : (const void *)((const float *)base + off), f16, hd);
    }
    const int padded = (kn + 15) & ~15;
    if (which == 0 && padded > kn) memset(buf + (int64_t)kn * hd, 0, (size_t)(padded - kn) * hd * sizeof(float));
    *ld = hd;
    return buf;
}

/* Queries [i0, i1) x the heads of KV head kvh, against their causal keys in tiles. */
static void prefill_unit(float *scratch, float *out, const float *q, int i0, int i1, int q_pos0,
                         const okv_kv_view *kv, int kvh, okv_attn_shape s) {
    const int g = s.n_heads / s.n_kv_heads, hd = s.head_dim;
    const int R = (i1 - i0) * g;
    float *kbuf = scratch;
    float *vbuf = kbuf + CPU_PF_KEYS * CPU_PF_MAX_HD;
    float *sc = vbuf + CPU_PF_KEYS * CPU_PF_MAX_HD;
    float *o = sc + CPU_PF_KEYS;
    float *mx = o + CPU_PF_ROWS * CPU_PF_MAX_HD;
    float *sm = mx + CPU_PF_ROWS;
    memset(o, 0, (size_t)R * hd * sizeof(float));
    for (int r = 0; r < R; r++) {
        mx[r] = -INFINITY;
        sm[r] = 0.0f;
    }
    const int kend = q_pos0 + i1;
    for (int k0 = 0; k0 < kend; k0 += CPU_PF_KEYS) {
        const int kn = OKV_MIN(CPU_PF_KEYS, kend - k0);
        int64_t kld, vld;
        const float *kr = pf_rows(kbuf, kv, 0, kvh, k0, kn, hd, &kld);
        const float *vr = pf_rows(vbuf, kv, 1, kvh, k0, kn, hd, &vld);
        for (int r = 0; r < R; r++) {
            const int i = i0 + r / g, h = kvh * g + r % g;
            const int lim = OKV_MIN(kn, q_pos0 + i + 1 - k0);
            if (lim <= 0) continue;
            const float *qr = q + ((int64_t)i * s.n_heads + h) * hd;
            for (int j = 0; j < lim; j += 16) dot16(sc + j, OKV_MIN(16, lim - j), s.scale, qr, kr + j * kld, kld, hd);
            const float mnew = cpu_max_array(sc, lim, mx[r]);
            const float corr = expf(mx[r] - mnew);
            sm[r] = sm[r] * corr + cpu_exp_sub_sum(sc, sc, mnew, lim);
            mx[r] = mnew;
            pv_tile(o + (int64_t)r * hd, corr, sc, lim, vr, vld, hd);
        }
    }
    for (int r = 0; r < R; r++) {
        const int i = i0 + r / g, h = kvh * g + r % g;
        float *dst = out + ((int64_t)i * s.n_heads + h) * hd;
        const float inv = 1.0f / sm[r];
        for (int d = 0; d < hd; d++) dst[d] = o[(int64_t)r * hd + d] * inv;
    }
}

void cpu_attn_prefill(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                      okv_kv_view kv, okv_attn_shape s) {
    cpu_state *st = be->state;
    OKV_ASSERT(kv.idx == NULL && kv.n >= q_pos0 + n_q);
    OKV_ASSERT(kv.type == OKV_TYPE_F16 || kv.type == OKV_TYPE_F32);
    OKV_ASSERT(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0);
    const int g = s.n_heads / s.n_kv_heads;
    OKV_ASSERT(g <= CPU_PF_ROWS && s.head_dim <= CPU_PF_MAX_HD);
    const int qt = CPU_PF_ROWS / g;
    const int n_qt = (n_q + qt - 1) / qt;
    const int units = n_qt * s.n_kv_heads;
    const size_t per = cpu_pf_floats();
    /* Later query tiles see more keys; handing them out first evens the threads' loads. */
#pragma omp parallel for num_threads(OKV_MAX(1, OKV_MIN(st->n_threads, units))) schedule(dynamic, 1)
    for (int u = 0; u < units; u++) {
        const int t = n_qt - 1 - u / s.n_kv_heads, kvh = u % s.n_kv_heads;
        const int i0 = t * qt, i1 = OKV_MIN(n_q, i0 + qt);
        prefill_unit(st->pf + (size_t)omp_get_thread_num() * per, out, q, i0, i1, q_pos0, &kv, kvh, s);
    }
}
