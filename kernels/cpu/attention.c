/* attention.c — CPU attention: decode over KV views (two passes over fixed logical chunks of the
 * key sequence), logits only, and tiled causal prefill with an online softmax, over f32, f16, q8_0
 * or q4_0 rows. Against q8_0 and q4_0 K rows the query is rounded to q8_0 once per call and q.k
 * taken by integer block dots, as llama.cpp does (bit for bit the reference's logits; a q4_0 row
 * is first widened to its q8_0 form, okv_q4_0_as_q8_0); quantized V rows are dequantized a row or
 * a tile at a time. Compared with kernels/ref.c, decode's independence of
 * view boundaries bitwise, by tests/unit/test_kernels.c. */
#include "cpu.h"
#include "cpu_math.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(OKV_CPU_AVX512) || defined(__F16C__)
#include <immintrin.h>
#endif

/* A q8_0 block's scale: one instruction where the path has F16C (exact either way). */
static inline float att_half(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return okv_fp16_to_f32(h);
#endif
}

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

/* Bytes of e elements of a KV type: okv_type_row_bytes inlined for the row walks (e is a whole
 * number of blocks, which okv_kv_view guarantees for every offset taken here). */
static inline size_t kv_bytes(okv_type t, int64_t e) {
    if (t == OKV_TYPE_Q8_0) return (size_t)(e / OKV_QK) * sizeof(okv_block_q8_0);
    if (t == OKV_TYPE_Q4_0) return (size_t)(e / OKV_QK) * sizeof(okv_block_q4_0);
    return (size_t)e * (t == OKV_TYPE_F16 ? 2 : 4);
}

/* K (which == 0) or V row of KV head kvh at the cursor. */
static inline const void *cursor_ptr(const row_cursor *c, int which, int kvh, int hd) {
    const okv_kv_view *vw = &c->views[c->v];
    const int64_t row = vw->idx ? vw->idx[c->r] : c->r;
    const int64_t off = row * vw->stride + (int64_t)kvh * hd;
    return (const uint8_t *)(which == 0 ? vw->k : vw->v) + kv_bytes(vw->type, off);
}

/* The checks every entry point makes of a view it reads. */
static void view_check(const okv_kv_view *v, int hd) {
    OKV_ASSERT(okv_kv_type_ok(v->type));
    OKV_ASSERT(!okv_kv_type_int(v->type) || (v->stride % OKV_QK == 0 && hd % OKV_QK == 0));
}

/* ---- q8_0 logits ----------------------------------------------------------------------------------- */

/* Integer dot of two blocks' 32 quants: exact, so its summation order is free. The unsigned
 * operand is |a| with a's sign moved onto b, as ggml does (q8_0 quants lie in [-127, 127]). */
static inline int q8_isum(const int8_t *a, const int8_t *b) {
#if defined(OKV_CPU_AVX512) || defined(OKV_CPU_AVX2)
    const __m256i x = _mm256_loadu_si256((const __m256i *)a), y = _mm256_loadu_si256((const __m256i *)b);
    const __m256i ax = _mm256_sign_epi8(x, x), sy = _mm256_sign_epi8(y, x);
#if defined(OKV_CPU_AVX512)
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy);
#else
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
#endif
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    return _mm_cvtsi128_si32(t);
#else
    int sum = 0;
    for (int j = 0; j < OKV_QK; j++) sum += a[j] * b[j];
    return sum;
#endif
}

/* scale * q.k over nb blocks, the reference's expression (q8_logit_ref in kernels/ref.c). */
static inline float q8_logit(const okv_block_q8_0 *q, const okv_block_q8_0 *k, int nb, float scale) {
    float acc = 0.0f;
    for (int b = 0; b < nb; b++) acc = fmaf((float)q8_isum(q[b].qs, k[b].qs), att_half(q[b].d) * att_half(k[b].d), acc);
    return scale * acc;
}

#if defined(OKV_CPU_AVX512)
/* q8_0 dots of one row against 16 others at once, two blocks per 512-bit vector. The 16 rows'
 * quants get +128 (a byte xor) to serve as VNNI's unsigned operand, so no per-pair sign
 * handling is needed: dpbusd(y + 128, x) = x.y + 128 * sum(x), and the fixed row's block sums
 * are taken off after the lanes are reduced. Integer sums are exact, and each row's float steps
 * are q8_logit's, in its order, so every logit equals q8_logit's bit for bit. */
typedef struct q8_fixed {
    __m512i x[CPU_PF_MAX_HD / 64];  /* the quants of blocks 2c and 2c+1 */
    int32_t bias[CPU_PF_MAX_HD / OKV_QK]; /* 128 x the block's quant sum */
    float d[CPU_PF_MAX_HD / OKV_QK];
} q8_fixed;

typedef struct q8_rows16 {
    __m512i u[16][CPU_PF_MAX_HD / 64]; /* row r's quants + 128, blocks 2c and 2c+1 */
    __m512 d[CPU_PF_MAX_HD / OKV_QK];  /* lane r: row r's scale of block b */
} q8_rows16;

static inline __m512i q8_pair(const okv_block_q8_0 *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b[0].qs)),
                              _mm256_loadu_si256((const __m256i *)b[1].qs), 1);
}

static void q8_fix(q8_fixed *f, const okv_block_q8_0 *x, int nb) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    for (int c = 0; c < nb / 2; c++) f->x[c] = q8_pair(x + 2 * c);
    for (int b = 0; b < nb; b++) {
        /* sum(x) = sum(x + 128) - 32 * 128, the biased bytes summed by sad against zero */
        const __m256i t = _mm256_sad_epu8(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[b].qs), bias),
                                          _mm256_setzero_si256());
        const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        const int sum = (int)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - OKV_QK * 128;
        f->bias[b] = 128 * sum;
        f->d[b] = att_half(x[b].d);
    }
}

/* Blocks 2c and 2c+1 of a q4_0 row as the bytes q - 8 + 128 = q + 120, in element order. */
static inline __m512i q4_pair_biased(const okv_block_q4_0 *b) {
    const __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b[0].qs)),
                                              _mm_loadu_si128((const __m128i *)b[1].qs), 1);
    const __m256i m = _mm256_set1_epi8(15);
    const __m256i lo = _mm256_and_si256(x, m), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m);
    /* lo = [low nibbles of block 0 | of block 1], hi likewise: interleave the 128-bit halves */
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                                         _mm256_permute2x128_si256(lo, hi, 0x31), 1);
    return _mm512_add_epi8(v, _mm512_set1_epi8(120));
}

/* Rows y[r] for r < nr, q8_0 or q4_0 blocks by t (rows past nr repeat row 0; their lanes are the
 * caller's to drop). A q4_0 row enters as its q8_0 form: the same d (both blocks start with it),
 * quants q - 8. */
static void q8_rows_prepare(q8_rows16 *R, const void *const *y, okv_type t, int nr, int nb) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const size_t bsz = t == OKV_TYPE_Q4_0 ? sizeof(okv_block_q4_0) : sizeof(okv_block_q8_0);
    for (int r = 0; r < 16; r++) {
        const void *yr = y[r < nr ? r : 0];
        for (int c = 0; c < nb / 2; c++)
            R->u[r][c] = t == OKV_TYPE_Q4_0 ? q4_pair_biased((const okv_block_q4_0 *)yr + 2 * c)
                                            : _mm512_xor_si512(q8_pair((const okv_block_q8_0 *)yr + 2 * c), bias);
    }
    for (int b = 0; b < nb; b++) {
        uint16_t h[16];
        for (int r = 0; r < 16; r++) memcpy(&h[r], (const uint8_t *)y[r < nr ? r : 0] + b * bsz, 2);
        R->d[b] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
    }
}

/* Lane r: scale * sum over blocks b, in order, of isum_b(f, y_r) * (d_f[b] * d_r[b]). */
static inline __m512 q8_dot16(const q8_fixed *f, const q8_rows16 *R, int nb, float scale) {
    __m512 acc = _mm512_setzero_ps();
    for (int c = 0; c < nb / 2; c++) {
        __m512i t[8], u[4];
        /* per row, the 16 lanes of its two blocks (lanes 0-7 block 2c, 8-15 block 2c+1) */
        CPU_UNROLL for (int i = 0; i < 8; i++) {
            const __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), R->u[2 * i][c], f->x[c]);
            const __m512i b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), R->u[2 * i + 1][c], f->x[c]);
            t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
        }
        /* each 128-bit lane: the sums of its 4 lanes for rows 4i .. 4i+3 */
        CPU_UNROLL for (int i = 0; i < 4; i++)
            u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                                    _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
        /* 128-bit lanes 0+1 hold block 2c, 2+3 block 2c+1: [rows 0-3 even, odd, rows 4-7 even, odd] */
        const __m512i w0 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88), _mm512_shuffle_i32x4(u[0], u[1], 0xdd));
        const __m512i w1 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], 0x88), _mm512_shuffle_i32x4(u[2], u[3], 0xdd));
        const __m512i ev = _mm512_sub_epi32(_mm512_shuffle_i32x4(w0, w1, 0x88), _mm512_set1_epi32(f->bias[2 * c]));
        const __m512i od = _mm512_sub_epi32(_mm512_shuffle_i32x4(w0, w1, 0xdd), _mm512_set1_epi32(f->bias[2 * c + 1]));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ev), _mm512_mul_ps(_mm512_set1_ps(f->d[2 * c]), R->d[2 * c]), acc);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(od), _mm512_mul_ps(_mm512_set1_ps(f->d[2 * c + 1]), R->d[2 * c + 1]), acc);
    }
    return _mm512_mul_ps(_mm512_set1_ps(scale), acc);
}
#endif

/* Floats of scratch that hold n_heads query heads rounded to q8_0. */
static size_t q8_floats(okv_attn_shape s) {
    return ((size_t)s.n_heads * (s.head_dim / OKV_QK) * sizeof(okv_block_q8_0) + sizeof(float) - 1) / sizeof(float);
}

/* ---- vector pieces ------------------------------------------------------------------------------- */

#if defined(OKV_CPU_AVX512)
static inline __mmask16 att_mask(int left) {
    return left <= 0 ? (__mmask16)0 : left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* 16 elements from d of a row of type t (masked lanes read nothing and give 0); a q8_0 row gives
 * q * d, a q4_0 row (q - 8) * d, the values okv_dequant_row_ref gives. */
static inline __m512 att_load(const void *p, okv_type t, int d, __mmask16 m) {
    if (t == OKV_TYPE_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + d));
    if (t == OKV_TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + d);
    if (!m) return _mm512_setzero_ps();
    if (t == OKV_TYPE_Q4_0) { /* d is a multiple of 16 and m whole: the low or the high nibbles */
        const okv_block_q4_0 *b = (const okv_block_q4_0 *)p + d / OKV_QK;
        __m128i x = _mm_loadu_si128((const __m128i *)b->qs);
        if (d % OKV_QK) x = _mm_srli_epi16(x, 4);
        x = _mm_and_si128(x, _mm_set1_epi8(15));
        const __m512 q = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(x), _mm512_set1_epi32(8)));
        return _mm512_mul_ps(q, _mm512_set1_ps(att_half(b->d)));
    }
    const okv_block_q8_0 *b = (const okv_block_q8_0 *)p + d / OKV_QK;
    const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b->qs + d % OKV_QK)));
    return _mm512_mul_ps(q, _mm512_set1_ps(att_half(b->d)));
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

#if !defined(OKV_CPU_AVX512)
static inline float att_scalar(const void *p, okv_type t, int d) {
    if (t == OKV_TYPE_F16) return okv_fp16_to_f32(((const uint16_t *)p)[d]);
    if (t == OKV_TYPE_F32) return ((const float *)p)[d];
    if (t == OKV_TYPE_Q4_0) {
        const okv_block_q4_0 *b = (const okv_block_q4_0 *)p + d / OKV_QK;
        const int j = d % OKV_QK, u = j < OKV_QK / 2 ? b->qs[j] & 15 : b->qs[j - OKV_QK / 2] >> 4;
        return (float)(u - 8) * att_half(b->d);
    }
    const okv_block_q8_0 *b = (const okv_block_q8_0 *)p + d / OKV_QK;
    return (float)b->qs[d % OKV_QK] * att_half(b->d);
}
#endif

/* hd elements of a row of type t as f32, the values okv_dequant_row_ref gives. */
static void row_f32(float *dst, const void *src, okv_type t, int hd) {
    if (t == OKV_TYPE_F32) {
        memcpy(dst, src, (size_t)hd * sizeof(float));
        return;
    }
    okv_block_q8_0 k8[CPU_PF_MAX_HD / OKV_QK];
    if (t == OKV_TYPE_Q4_0) { /* its q8_0 form holds the same values */
        okv_q4_0_as_q8_0(k8, src, hd / OKV_QK);
        src = k8;
        t = OKV_TYPE_Q8_0;
    }
    if (t == OKV_TYPE_Q8_0) {
        const okv_block_q8_0 *b = src;
        for (int k = 0; k < hd / OKV_QK; k++) {
            const float d = att_half(b[k].d);
#if defined(OKV_CPU_AVX512)
            const __m512 dv = _mm512_set1_ps(d);
            const __m128i *qs = (const __m128i *)b[k].qs;
            _mm512_storeu_ps(dst + k * OKV_QK, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs))), dv));
            _mm512_storeu_ps(dst + k * OKV_QK + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs + 1))), dv));
#else
            for (int j = 0; j < OKV_QK; j++) dst[k * OKV_QK + j] = (float)b[k].qs[j] * d;
#endif
        }
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
            const okv_type t = views[cur.v].type;
            __m512 vv[4];
            CPU_UNROLL for (int c = 0; c < 4; c++) vv[c] = att_load(v, t, d0 + 16 * c, m[c]);
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
        const okv_type t = views[cur.v].type;
        for (int d = 0; d < hd; d++) {
            const float vv = att_scalar(v, t, d);
            CPU_UNROLL for (int i = 0; i < NG; i++) out[i][d] += p[i][j - j0] * vv;
        }
    }
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
 * l[h*ld + j - j0]. f16/f32 keys go 16 at a time through a zero-padded f32 copy; j0 is a multiple
 * of 16 in the logical sequence, so a row's slot, and so its logit, depends only on its index.
 * q8_0 and q4_0 keys (the latter in their q8_0 form) meet qq, the query heads rounded to q8_0:
 * 16 keys at a time where the path has AVX-512 and every row of the 16 is one of them, else one
 * row at a time. */
static void logits_unit(float *l, int64_t ld, const float *q, const okv_block_q8_0 *qq,
                        const okv_kv_view *views, int n_views, int k0, int k1, int j0, int j1,
                        okv_attn_shape s) {
    const int g = s.n_heads / s.n_kv_heads, hd = s.head_dim, nb = hd / OKV_QK;
    float kb[16 * CPU_PF_MAX_HD] __attribute__((aligned(64)));
    okv_block_q8_0 k8[CPU_PF_MAX_HD / OKV_QK]; /* a q4_0 key of one KV head widened */
    const void *rows[16];
    okv_type ty[16];
#if defined(OKV_CPU_AVX512)
    /* the query heads of [k0, k1) made ready once for the q8_0 keys of the whole range */
    const int nqf = qq && nb % 2 == 0 ? (k1 - k0) * g : 1;
    q8_fixed qf[nqf];
    if (qq && nb % 2 == 0)
        for (int i = 0; i < nqf; i++) q8_fix(&qf[i], qq + (int64_t)(k0 * g + i) * nb, nb);
#endif
    row_cursor c = cursor_at(views, n_views, j0);
    for (int jb = j0; jb < j1; jb += 16) {
        const int nr = OKV_MIN(16, j1 - jb);
        int n_q8 = 0, n_q4 = 0;
        for (int r = 0; r < nr; r++, cursor_next(&c)) {
            rows[r] = cursor_ptr(&c, 0, 0, hd);
            ty[r] = views[c.v].type;
            n_q8 += okv_kv_type_int(ty[r]);
            n_q4 += ty[r] == OKV_TYPE_Q4_0;
        }
        if (nr < 16) memset(kb + nr * hd, 0, (size_t)(16 - nr) * hd * sizeof(float));
        for (int kvh = k0; kvh < k1; kvh++) {
            if (n_q8 < nr) { /* integer-dot rows' slots get zeros here and their own logits below */
                for (int r = 0; r < nr; r++) {
                    if (okv_kv_type_int(ty[r])) memset(kb + r * hd, 0, (size_t)hd * sizeof(float));
                    else row_f32(kb + r * hd, (const uint8_t *)rows[r] + kv_bytes(ty[r], (int64_t)kvh * hd), ty[r], hd);
                }
                for (int h = kvh * g; h < (kvh + 1) * g; h++)
                    dot16(l + (int64_t)h * ld + (jb - j0), nr, s.scale, q + (int64_t)h * hd, kb, hd, hd);
            }
            if (n_q8 == 0) continue;
#if defined(OKV_CPU_AVX512)
            if (nb % 2 == 0 && n_q8 == nr && (n_q4 == 0 || n_q4 == nr)) { /* 16 keys against each query head at once */
                const void *kr[16];
                for (int r = 0; r < nr; r++) kr[r] = (const uint8_t *)rows[r] + kv_bytes(ty[r], (int64_t)kvh * hd);
                q8_rows16 keys;
                q8_rows_prepare(&keys, kr, ty[0], nr, nb);
                for (int h = kvh * g; h < (kvh + 1) * g; h++)
                    _mm512_mask_storeu_ps(l + (int64_t)h * ld + (jb - j0), att_mask(nr),
                                          q8_dot16(&qf[h - k0 * g], &keys, nb, s.scale));
                continue;
            }
#endif
            for (int r = 0; r < nr; r++) {
                if (!okv_kv_type_int(ty[r])) continue;
                const okv_block_q8_0 *kr = (const okv_block_q8_0 *)rows[r] + (int64_t)kvh * nb;
                if (ty[r] == OKV_TYPE_Q4_0) {
                    okv_q4_0_as_q8_0(k8, (const okv_block_q4_0 *)rows[r] + (int64_t)kvh * nb, nb);
                    kr = k8;
                }
                for (int h = kvh * g; h < (kvh + 1) * g; h++)
                    l[(int64_t)h * ld + (jb - j0) + r] = q8_logit(qq + (int64_t)h * nb, kr, nb, s.scale);
            }
        }
    }
}

/* Asks for the K and V rows of KV heads [k0, k1) in [j0, j1) ahead of use, when rows come by
 * index (the Context Bank's selected rows): scattered rows defeat the hardware prefetcher, and
 * one pass of independent prefetches overlaps their misses instead of meeting them one by one.
 * A chunk's rows (256 x 2 x kv_dim) fit in L2. Contiguous views are left to the hardware. */
static void prefetch_chunk(const okv_kv_view *views, int n_views, int k0, int k1, int j0, int j1,
                           int hd) {
    bool indexed = false;
    for (int v = 0; v < n_views; v++) indexed |= views[v].idx != NULL;
    if (!indexed) return; /* dense decode: no walk over the chunk's rows */
    row_cursor c = cursor_at(views, n_views, j0);
    for (int j = j0; j < j1; j++, cursor_next(&c)) {
        if (!views[c.v].idx) continue;
        const size_t bytes = kv_bytes(views[c.v].type, (int64_t)(k1 - k0) * hd);
        const char *k = cursor_ptr(&c, 0, k0, hd), *v = cursor_ptr(&c, 1, k0, hd);
        for (size_t o = 0; o < bytes; o += 64) {
            __builtin_prefetch(k + o, 0, 2);
            __builtin_prefetch(v + o, 0, 2);
        }
    }
}

/* One chunk [j0, j1) for the query heads of KV heads [k0, k1): logits into l ([H][CPU_ATTN_CHUNK],
 * the thread's own), view-0 logits copied out, then per head the chunk max m, the sum of
 * exp(l - m) and the unnormalised V sum with those weights (rows in key order). */
static void chunk_unit(float *l, float *cmax, float *psum, float *part, int n_chunks, int c_idx,
                       const float *q, const okv_block_q8_0 *qq, const okv_kv_view *views, int n_views, int k0, int k1, int j0,
                       int j1, float *logits, int n0, okv_attn_shape s) {
    const int g = s.n_heads / s.n_kv_heads, hd = s.head_dim;
    prefetch_chunk(views, n_views, k0, k1, j0, j1, hd);
    logits_unit(l, CPU_ATTN_CHUNK, q, qq, views, n_views, k0, k1, j0, j1, s);
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
    return nth * s.n_heads * CPU_ATTN_CHUNK + (size_t)s.n_heads * d.nc * (2 + (size_t)s.head_dim) + q8_floats(s);
}

/* The query heads rounded to q8_0 into qq when some view holds q8_0 or q4_0 rows (which alone
 * read it). */
static const okv_block_q8_0 *quant_q(float *qq, const float *q, const okv_kv_view *views, int n_views,
                                     okv_attn_shape s) {
    for (int v = 0; v < n_views; v++)
        if (okv_kv_type_int(views[v].type)) {
            okv_quant_row_ref(qq, q, OKV_TYPE_Q8_0, (int64_t)s.n_heads * s.head_dim);
            return (const okv_block_q8_0 *)qq;
        }
    return NULL;
}

int CPU_FN(cpu_attn_reserve)(okv_backend *be, okv_attn_shape s, int max_ctx) {
    cpu_state *st = be->state;
    /* the scratch grows with the context through the chunk count; the thread term saturates */
    return dec_reserve(st, dec_floats(st, s, OKV_MAX(max_ctx, CPU_ATTN_CHUNK * 2 * st->n_threads)));
}

/* Each chunk is reduced against its own max; the chunks are then combined in order, rescaled to
 * the global max (as in split-key "flash decoding"). One barrier per call. */
void CPU_FN(cpu_attn_decode)(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                             int n_views, okv_attn_shape s, float *logits) {
    cpu_state *st = be->state;
    const int hd = s.head_dim, H = s.n_heads;
    OKV_ASSERT(s.n_kv_heads > 0 && H % s.n_kv_heads == 0 && hd <= CPU_PF_MAX_HD);
    int n = 0;
    for (int v = 0; v < n_views; v++) {
        view_check(&views[v], hd);
        n += views[v].n;
    }
    if (n == 0) {
        memset(out, 0, (size_t)H * hd * sizeof(float));
        return;
    }
    const dec_split d = dec_split_make(n, s.n_kv_heads, st->n_threads);
    const int nc = d.nc, nth = OKV_MIN(st->n_threads, d.units);
    const size_t lper = (size_t)H * CPU_ATTN_CHUNK;
    OKV_ASSERT(dec_reserve(st, (size_t)nth * lper + (size_t)H * nc * (2 + (size_t)hd) + q8_floats(s)) == OKV_OK);
    float *cmax = st->dec + (size_t)nth * lper;
    float *psum = cmax + (size_t)H * nc;
    float *part = psum + (size_t)H * nc;
    const okv_block_q8_0 *qq = quant_q(part + (size_t)H * nc * hd, q, views, n_views, s);
    const int n0 = n_views > 0 ? views[0].n : 0;
#pragma omp parallel num_threads(nth)
    {
        float *l = st->dec + (size_t)omp_get_thread_num() * lper;
#pragma omp for schedule(static)
        for (int u = 0; u < d.units; u++) {
            int c, k0, k1, j0, j1;
            dec_unit(&d, u, n, s.n_kv_heads, &c, &k0, &k1, &j0, &j1);
            chunk_unit(l, cmax, psum, part, nc, c, q, qq, views, n_views, k0, k1, j0, j1, logits, n0, s);
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

void CPU_FN(cpu_attn_logits)(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                             okv_attn_shape s) {
    cpu_state *st = be->state;
    view_check(&kv, s.head_dim);
    OKV_ASSERT(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 && s.head_dim <= CPU_PF_MAX_HD);
    if (kv.n == 0) return;
    OKV_ASSERT(dec_reserve(st, q8_floats(s)) == OKV_OK);
    const okv_block_q8_0 *qq = quant_q(st->dec, q, &kv, 1, s);
    const dec_split d = dec_split_make(kv.n, s.n_kv_heads, st->n_threads);
#pragma omp parallel for num_threads(OKV_MIN(st->n_threads, d.units)) schedule(static)
    for (int u = 0; u < d.units; u++) {
        int c, k0, k1, j0, j1;
        dec_unit(&d, u, kv.n, s.n_kv_heads, &c, &k0, &k1, &j0, &j1);
        logits_unit(logits + j0, kv.n, q, qq, &kv, 1, k0, k1, j0, j1, s);
    }
}

/* ---- prefill --------------------------------------------------------------------------------------- */

/* A unit is up to CPU_PF_ROWS (query, head) rows that share one KV head: row r is query i0 + r/g
 * of head kvh*g + r%g, and rp is the row count rounded up to 16. The unit's queries are held
 * transposed (qt[d][r]) so that a tile's scores come out transposed too, st[j][r] = q_r . k_j:
 * one broadcast key element then feeds a multiply-add for 16 rows at once, and each row's
 * softmax max and sum run down a column, with no horizontal reductions. Each K and V tile is
 * converted to f32 once and used by every row of the unit. */

/* Per-thread scratch: qt, the K and V tiles as f32, the scores st and the output accumulators. */
size_t CPU_FN(cpu_pf_floats)(void) {
    return (size_t)CPU_PF_MAX_HD * CPU_PF_ROWS + (size_t)2 * CPU_PF_KEYS * CPU_PF_MAX_HD +
           (size_t)CPU_PF_KEYS * CPU_PF_ROWS + (size_t)CPU_PF_ROWS * CPU_PF_MAX_HD;
}

/* Rows [k0, k0+kn) of KV head kvh as f32 rows of hd floats: an f32 cache is read in place, an f16,
 * q8_0 or q4_0 one converted into buf. Returns the first row; *ld receives the row stride. */
static const float *pf_rows(float *buf, const okv_kv_view *kv, int which, int kvh, int k0, int kn,
                            int hd, int64_t *ld) {
    const uint8_t *base = which == 0 ? kv->k : kv->v;
    const int64_t off = (int64_t)k0 * kv->stride + (int64_t)kvh * hd;
    if (kv->type == OKV_TYPE_F32) {
        *ld = kv->stride;
        return (const float *)base + off;
    }
    for (int j = 0; j < kn; j++)
        row_f32(buf + (int64_t)j * hd, base + kv_bytes(kv->type, off + j * kv->stride), kv->type, hd);
    *ld = hd;
    return buf;
}

/* Asks for rows [k0, k0+kn) of KV head kvh, K and V, while the current tile is computed: a unit
 * walks its whole causal span of the cache in strided rows that the hardware prefetcher does not
 * fetch in time (about 10% at head_dim 128). */
static void pf_prefetch(const okv_kv_view *kv, int kvh, int k0, int kn, int hd) {
    const size_t row = kv_bytes(kv->type, hd);
    for (int j = 0; j < kn; j++) {
        const size_t off = kv_bytes(kv->type, (int64_t)(k0 + j) * kv->stride + (int64_t)kvh * hd);
        for (size_t b = 0; b < row; b += 64) {
            __builtin_prefetch((const char *)kv->k + off + b, 0, 2);
            __builtin_prefetch((const char *)kv->v + off + b, 0, 2);
        }
    }
}

#if defined(OKV_CPU_AVX512)
/* Scores of JB keys against 16*RV rows: JB*RV accumulators stay in registers while d runs, so
 * each qt load serves JB keys and each key element RV vectors of rows. */
static inline __attribute__((always_inline)) void pf_qk_block(float *st, const float *qt, int rp,
                                                              const float *k, int64_t kld, int hd,
                                                              __m512 sc, const int JB, const int RV) {
    __m512 acc[4][4];
    CPU_UNROLL for (int j = 0; j < JB; j++) CPU_UNROLL for (int v = 0; v < RV; v++) acc[j][v] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d++) {
        __m512 qv[4];
        CPU_UNROLL for (int v = 0; v < RV; v++) {
            qv[v] = _mm512_load_ps(qt + (int64_t)d * rp + 16 * v);
            /* keeps qv in a register: GCC would otherwise fold the load into all JB multiply-adds */
            __asm__("" : "+v"(qv[v]));
        }
        CPU_UNROLL for (int j = 0; j < JB; j++) {
            const __m512 kb = _mm512_set1_ps(k[j * kld + d]);
            CPU_UNROLL for (int v = 0; v < RV; v++) acc[j][v] = _mm512_fmadd_ps(kb, qv[v], acc[j][v]);
        }
    }
    CPU_UNROLL for (int j = 0; j < JB; j++) CPU_UNROLL for (int v = 0; v < RV; v++)
        _mm512_store_ps(st + (int64_t)j * rp + 16 * v, _mm512_mul_ps(sc, acc[j][v]));
}

static inline __attribute__((always_inline)) void pf_qk_rv(float *st, const float *qt, int rp,
                                                           const float *k, int64_t kld, int kn, int hd,
                                                           float scale, const int RV) {
    const __m512 sc = _mm512_set1_ps(scale);
    int j = 0;
    for (; j + 4 <= kn; j += 4) pf_qk_block(st + (int64_t)j * rp, qt, rp, k + j * kld, kld, hd, sc, 4, RV);
    switch (kn - j) {
    case 3: pf_qk_block(st + (int64_t)j * rp, qt, rp, k + j * kld, kld, hd, sc, 3, RV); break;
    case 2: pf_qk_block(st + (int64_t)j * rp, qt, rp, k + j * kld, kld, hd, sc, 2, RV); break;
    case 1: pf_qk_block(st + (int64_t)j * rp, qt, rp, k + j * kld, kld, hd, sc, 1, RV); break;
    default: break;
    }
}
#endif

/* st[j][r] = scale * (q_r . k_j) for keys j < kn and all rp rows (padding rows of qt are zero). */
static void pf_qk(float *st, const float *qt, int rp, const float *k, int64_t kld, int kn, int hd, float scale) {
#if defined(OKV_CPU_AVX512)
    /* panels of up to 64 rows (16 accumulators), each reading the whole K tile */
    for (int r0 = 0; r0 < rp; r0 += 64) {
        switch (OKV_MIN(4, (rp - r0) / 16)) {
        case 1: pf_qk_rv(st + r0, qt + r0, rp, k, kld, kn, hd, scale, 1); break;
        case 2: pf_qk_rv(st + r0, qt + r0, rp, k, kld, kn, hd, scale, 2); break;
        case 3: pf_qk_rv(st + r0, qt + r0, rp, k, kld, kn, hd, scale, 3); break;
        default: pf_qk_rv(st + r0, qt + r0, rp, k, kld, kn, hd, scale, 4); break;
        }
    }
#else
    for (int j = 0; j < kn; j++) {
        float *sj = st + (int64_t)j * rp;
        const float *kj = k + j * kld;
        for (int r = 0; r < rp; r++) sj[r] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float kd = kj[d];
            const float *qd = qt + (int64_t)d * rp;
            for (int r = 0; r < rp; r++) sj[r] += kd * qd[r];
        }
        for (int r = 0; r < rp; r++) sj[r] *= scale;
    }
#endif
}

/* st[j][r] = scale * (q_r . k_j) for q8_0 or q4_0 keys k0 + j < k0 + kn of KV head kvh against
 * the R rows rounded to q8_0 (qq, nb blocks a row); padding rows r in [R, rp) score zero. */
static void pf_qk_q8(float *st, const okv_block_q8_0 *qq, const void *qrows, int R, int rp,
                     const okv_kv_view *kv, int kvh, int k0, int kn, int nb, float scale) {
    const int hd = nb * OKV_QK;
    okv_block_q8_0 k8[CPU_PF_MAX_HD / OKV_QK];
    for (int j = 0; j < kn; j++) {
        const void *krow = (const uint8_t *)kv->k + kv_bytes(kv->type, (int64_t)(k0 + j) * kv->stride + (int64_t)kvh * hd);
        const okv_block_q8_0 *kj = krow;
        if (kv->type == OKV_TYPE_Q4_0) {
            okv_q4_0_as_q8_0(k8, krow, nb);
            kj = k8;
        }
        float *sj = st + (int64_t)j * rp;
#if defined(OKV_CPU_AVX512)
        if (qrows) { /* the key against 16 rows at once */
            const q8_rows16 *qr = qrows;
            q8_fixed kf;
            q8_fix(&kf, kj, nb);
            for (int r0 = 0; r0 < rp; r0 += 16)
                _mm512_store_ps(sj + r0, _mm512_maskz_mov_ps(att_mask(R - r0), q8_dot16(&kf, &qr[r0 / 16], nb, scale)));
            continue;
        }
#else
        (void)qrows;
#endif
        for (int r = 0; r < R; r++) sj[r] = q8_logit(qq + (int64_t)r * nb, kj, nb, scale);
        for (int r = R; r < rp; r++) sj[r] = 0.0f;
    }
}

/* Online softmax step over one tile: key k0 + j is visible to row r iff k0 + j < lim[r] (checked
 * only when masked is set). Moves each row's running max mx to include the tile, rescales its sum
 * sm, leaves the factor for its output in corr and turns st into the weights exp(s - max), 0 where
 * masked. Every row sees key 0 in the first tile, so mx is finite from then on. */
static void pf_softmax(float *st, int rp, int kn, int k0, const int32_t *lim, int masked, float *mx,
                       float *sm, float *corr) {
#if defined(OKV_CPU_AVX512)
    for (int r = 0; r < rp; r += 16) {
        const __m512i lv = _mm512_load_si512((const void *)(lim + r));
        __m512 mt = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < kn; j++) {
            const __mmask16 m = masked ? _mm512_cmpgt_epi32_mask(lv, _mm512_set1_epi32(k0 + j)) : (__mmask16)0xffff;
            mt = _mm512_mask_max_ps(mt, m, mt, _mm512_load_ps(st + (int64_t)j * rp + r));
        }
        const __m512 mold = _mm512_load_ps(mx + r);
        const __m512 mnew = _mm512_max_ps(mold, mt);
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < kn; j++) {
            float *sj = st + (int64_t)j * rp + r;
            const __mmask16 m = masked ? _mm512_cmpgt_epi32_mask(lv, _mm512_set1_epi32(k0 + j)) : (__mmask16)0xffff;
            const __m512 p = _mm512_maskz_mov_ps(m, cpu_exp512(_mm512_sub_ps(_mm512_load_ps(sj), mnew)));
            _mm512_store_ps(sj, p);
            sum = _mm512_add_ps(sum, p);
        }
        const __m512 c = cpu_exp512(_mm512_sub_ps(mold, mnew));
        _mm512_store_ps(corr + r, c);
        _mm512_store_ps(sm + r, _mm512_fmadd_ps(_mm512_load_ps(sm + r), c, sum));
        _mm512_store_ps(mx + r, mnew);
    }
#else
    for (int r = 0; r < rp; r++) {
        const int n = masked ? OKV_MAX(0, OKV_MIN(kn, lim[r] - k0)) : kn;
        float mt = -INFINITY, sum = 0.0f;
        for (int j = 0; j < n; j++) mt = cpu_maxf(mt, st[(int64_t)j * rp + r]);
        const float mnew = cpu_maxf(mx[r], mt);
        for (int j = 0; j < kn; j++) {
            float *sj = st + (int64_t)j * rp + r;
            *sj = j < n ? expf(*sj - mnew) : 0.0f;
            sum += *sj;
        }
        corr[r] = expf(mx[r] - mnew);
        sm[r] = sm[r] * corr[r] + sum;
        mx[r] = mnew;
    }
#endif
}

#if defined(OKV_CPU_AVX512)
/* RB rows of o (64 dimensions at a time) take their corr and then the kn weighted V rows: each V
 * load serves RB rows, each weight 4 vectors of dimensions. */
static inline __attribute__((always_inline)) void pf_pv_block(float *o, int hd, const float *p, int rp,
                                                              const float *v, int64_t vld, int kn,
                                                              const float *corr, const int RB) {
    for (int d0 = 0; d0 < hd; d0 += 64) {
        __mmask16 m[4];
        __m512 acc[6][4];
        CPU_UNROLL for (int c = 0; c < 4; c++) m[c] = att_mask(hd - d0 - 16 * c);
        CPU_UNROLL for (int r = 0; r < RB; r++) {
            const __m512 cr = _mm512_set1_ps(corr[r]);
            CPU_UNROLL for (int c = 0; c < 4; c++)
                acc[r][c] = _mm512_mul_ps(cr, _mm512_maskz_loadu_ps(m[c], o + (int64_t)r * hd + d0 + 16 * c));
        }
        for (int j = 0; j < kn; j++) {
            __m512 vv[4];
            CPU_UNROLL for (int c = 0; c < 4; c++) vv[c] = _mm512_maskz_loadu_ps(m[c], v + j * vld + d0 + 16 * c);
            CPU_UNROLL for (int r = 0; r < RB; r++) {
                const __m512 pb = _mm512_set1_ps(p[(int64_t)j * rp + r]);
                CPU_UNROLL for (int c = 0; c < 4; c++) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
            }
        }
        CPU_UNROLL for (int r = 0; r < RB; r++) CPU_UNROLL for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(o + (int64_t)r * hd + d0 + 16 * c, m[c], acc[r][c]);
    }
}
#endif

/* o[r] = o[r] * corr[r] + sum over keys j < kn of p[j][r] * v_j, for rows r < R; keys in order. */
static void pf_pv(float *o, int hd, const float *p, int rp, int R, const float *v, int64_t vld, int kn,
                  const float *corr) {
#if defined(OKV_CPU_AVX512)
    int r = 0;
    for (; r + 6 <= R; r += 6) pf_pv_block(o + (int64_t)r * hd, hd, p + r, rp, v, vld, kn, corr + r, 6);
    switch (R - r) {
    case 5: pf_pv_block(o + (int64_t)r * hd, hd, p + r, rp, v, vld, kn, corr + r, 5); break;
    case 4: pf_pv_block(o + (int64_t)r * hd, hd, p + r, rp, v, vld, kn, corr + r, 4); break;
    case 3: pf_pv_block(o + (int64_t)r * hd, hd, p + r, rp, v, vld, kn, corr + r, 3); break;
    case 2: pf_pv_block(o + (int64_t)r * hd, hd, p + r, rp, v, vld, kn, corr + r, 2); break;
    case 1: pf_pv_block(o + (int64_t)r * hd, hd, p + r, rp, v, vld, kn, corr + r, 1); break;
    default: break;
    }
#else
    for (int r = 0; r < R; r++) {
        float *orow = o + (int64_t)r * hd;
        for (int d = 0; d < hd; d++) orow[d] *= corr[r];
        for (int j = 0; j < kn; j++) {
            const float pj = p[(int64_t)j * rp + r];
            const float *vj = v + j * vld;
            for (int d = 0; d < hd; d++) orow[d] += pj * vj[d];
        }
    }
#endif
}

/* Queries [i0, i1) x the heads of KV head kvh, against their causal keys in tiles. Only tiles that
 * reach past the first query's last key need the causal mask. Against q8_0 or q4_0 K the unit's
 * rows are rounded to q8_0 once, into the space of qt, and K is read in place. */
static void prefill_unit(float *scratch, float *out, const float *q, int i0, int i1, int q_pos0,
                         const okv_kv_view *kv, int kvh, okv_attn_shape s) {
    const int g = s.n_heads / s.n_kv_heads, hd = s.head_dim;
    const int R = (i1 - i0) * g, rp = (R + 15) & ~15, q8 = okv_kv_type_int(kv->type);
    float *qt = scratch;
    okv_block_q8_0 *qq = (okv_block_q8_0 *)scratch; /* R * hd/32 blocks fit in qt's floats */
    float *kbuf = qt + CPU_PF_MAX_HD * CPU_PF_ROWS;
    float *vbuf = kbuf + CPU_PF_KEYS * CPU_PF_MAX_HD;
    float *st = vbuf + CPU_PF_KEYS * CPU_PF_MAX_HD;
    float *o = st + CPU_PF_KEYS * CPU_PF_ROWS;
    int32_t lim[CPU_PF_ROWS] __attribute__((aligned(64)));
    float mx[CPU_PF_ROWS] __attribute__((aligned(64)));
    float sm[CPU_PF_ROWS] __attribute__((aligned(64)));
    float corr[CPU_PF_ROWS] __attribute__((aligned(64)));
    /* padding rows copy the last row's mask and score zero, so they stay finite and unused */
    for (int r = 0; r < rp; r++) {
        const int rr = OKV_MIN(r, R - 1), i = i0 + rr / g;
        const float *qr = q + ((int64_t)i * s.n_heads + kvh * g + rr % g) * hd;
        if (q8 && r < R) okv_quant_row_ref(qq + (int64_t)r * (hd / OKV_QK), qr, OKV_TYPE_Q8_0, hd);
        else if (!q8) for (int d = 0; d < hd; d++) qt[(int64_t)d * rp + r] = r < R ? qr[d] : 0.0f;
        lim[r] = q_pos0 + i + 1;
        mx[r] = -INFINITY;
        sm[r] = 0.0f;
    }
    const void *qrows = NULL;
#if defined(OKV_CPU_AVX512)
    /* the rows in groups of 16 for q8_dot16, after qq in qt's space */
    if (q8 && (hd / OKV_QK) % 2 == 0) {
        _Static_assert(CPU_PF_ROWS * (CPU_PF_MAX_HD / OKV_QK) * sizeof(okv_block_q8_0) + 64 +
                       CPU_PF_ROWS / 16 * sizeof(q8_rows16) <= CPU_PF_MAX_HD * CPU_PF_ROWS * sizeof(float),
                       "qt's space holds qq and its 16-row groups");
        const int nb = hd / OKV_QK;
        q8_rows16 *groups = (q8_rows16 *)(((uintptr_t)(qq + (int64_t)R * nb) + 63) & ~(uintptr_t)63);
        for (int r0 = 0; r0 < R; r0 += 16) {
            const void *y[16];
            for (int i = 0; i < 16; i++) y[i] = qq + (int64_t)OKV_MIN(r0 + i, R - 1) * nb;
            q8_rows_prepare(&groups[r0 / 16], y, OKV_TYPE_Q8_0, OKV_MIN(16, R - r0), nb);
        }
        qrows = groups;
    }
#endif
    memset(o, 0, (size_t)R * hd * sizeof(float));
    const int kend = q_pos0 + i1, kall = q_pos0 + i0 + 1;
    for (int k0 = 0; k0 < kend; k0 += CPU_PF_KEYS) {
        const int kn = OKV_MIN(CPU_PF_KEYS, kend - k0);
        int64_t kld, vld;
        const float *vr = pf_rows(vbuf, kv, 1, kvh, k0, kn, hd, &vld);
        if (k0 + CPU_PF_KEYS < kend) pf_prefetch(kv, kvh, k0 + CPU_PF_KEYS, OKV_MIN(CPU_PF_KEYS, kend - k0 - CPU_PF_KEYS), hd);
        if (q8) {
            pf_qk_q8(st, qq, qrows, R, rp, kv, kvh, k0, kn, hd / OKV_QK, s.scale);
        } else {
            const float *kr = pf_rows(kbuf, kv, 0, kvh, k0, kn, hd, &kld);
            pf_qk(st, qt, rp, kr, kld, kn, hd, s.scale);
        }
        pf_softmax(st, rp, kn, k0, lim, k0 + kn > kall, mx, sm, corr);
        pf_pv(o, hd, st, rp, R, vr, vld, kn, corr);
    }
    for (int r = 0; r < R; r++) {
        const int i = i0 + r / g, h = kvh * g + r % g;
        float *dst = out + ((int64_t)i * s.n_heads + h) * hd;
        const float inv = 1.0f / sm[r];
        for (int d = 0; d < hd; d++) dst[d] = o[(int64_t)r * hd + d] * inv;
    }
}

void CPU_FN(cpu_attn_prefill)(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                              okv_kv_view kv, okv_attn_shape s) {
    cpu_state *st = be->state;
    OKV_ASSERT(kv.idx == NULL && kv.n >= q_pos0 + n_q);
    view_check(&kv, s.head_dim);
    OKV_ASSERT(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0);
    const int g = s.n_heads / s.n_kv_heads;
    OKV_ASSERT(g <= CPU_PF_ROWS && s.head_dim <= CPU_PF_MAX_HD);
    const int qt = CPU_PF_ROWS / g;
    const int n_qt = (n_q + qt - 1) / qt;
    const int units = n_qt * s.n_kv_heads;
    const size_t per = CPU_FN(cpu_pf_floats)();
    /* Later query tiles see more keys; handing them out first evens the threads' loads. */
#pragma omp parallel for num_threads(OKV_MAX(1, OKV_MIN(st->n_threads, units))) schedule(dynamic, 1)
    for (int u = 0; u < units; u++) {
        const int t = n_qt - 1 - u / s.n_kv_heads, kvh = u % s.n_kv_heads;
        const int i0 = t * qt, i1 = OKV_MIN(n_q, i0 + qt);
        prefill_unit(st->pf + (size_t)omp_get_thread_num() * per, out, q, i0, i1, q_pos0, &kv, kvh, s);
    }
}
