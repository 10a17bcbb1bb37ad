/* matmul_kquant.c — Y = X W^T on the CPU for the K-quant weights (Q2_K..Q6_K) with Q8_K
 * activations, compiled once per vector path like matmul.c: AVX-512 (maddubs + VNNI dpwssd),
 * AVX2 (maddubs + madd) and plain C. Tested against okv_matmul_ref by tests/unit/test_kernels.c.
 *
 * Every K-quant super-block is handled in one form: unsigned codes u[256] (q, or q + offset for
 * the signed types), a 16-bit scale sc[j] and min mn[j] per 16 elements, a zero point z and the
 * f32 d, dmin, so that with Q8_K activations (qs, bsums, dx)
 *     isum = sum_j sc[j] * (u . qs over group j) - z * sum_j sc[j] * bsums[j]
 *     msum = sum_j mn[j] * bsums[j]
 *     dot  = (d*dx) * isum - (dmin*dx) * msum
 * which are the integer sums of ggml's ggml_vec_dot_qN_K_q8_K (exact) with the same f32 scales. */
#include "cpu.h"
#include "../kquant.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(OKV_CPU_AVX512) || defined(OKV_CPU_AVX2)
#include <immintrin.h>
#endif

/* Rows of W per thread work item, and tokens sharing one unpacked super-block: 8 where 32 vector
 * registers hold their accumulators (Q4_K_M +4-7%, Q6_K +4-9% over 4: `omnikv bench -m
 * stack8b-4.T.gguf --ctx 512 --gen 4 --runs 2 --set policy=dense --set threads=2`), else 4. */
#define KQ_ROW_BLOCK 16
#if defined(OKV_CPU_AVX512)
#define KQ_TOK_TILE 8
#else
#define KQ_TOK_TILE 4
#endif

/* The scales of one super-block in the form above. */
typedef struct kq_scales {
    int16_t sc[16], mn[16];
    int z, has_min;
    float d, dmin;
} kq_scales;

static inline __attribute__((always_inline)) void kq_get_scales(kq_scales *s, const uint8_t *blk, okv_type wt) {
    switch (wt) {
    case OKV_TYPE_Q2_K: {
        const okv_block_q2_k *b = (const okv_block_q2_k *)blk;
        for (int j = 0; j < 16; j++) {
            s->sc[j] = (int16_t)(b->scales[j] & 15);
            s->mn[j] = (int16_t)(b->scales[j] >> 4);
        }
        s->z = 0;
        s->has_min = 1;
        s->d = okv_fp16_to_f32(b->d);
        s->dmin = okv_fp16_to_f32(b->dmin);
        break;
    }
    case OKV_TYPE_Q3_K: {
        const okv_block_q3_k *b = (const okv_block_q3_k *)blk;
        for (int j = 0; j < 16; j++) s->sc[j] = (int16_t)okv_kquant_q3_scale(b->scales, j);
        s->z = 4;
        s->has_min = 0;
        s->d = okv_fp16_to_f32(b->d);
        s->dmin = 0.0f;
        break;
    }
    case OKV_TYPE_Q4_K:
    case OKV_TYPE_Q5_K: {
        /* d, dmin and scales sit at the same offsets in both blocks */
        const okv_block_q4_k *b = (const okv_block_q4_k *)blk;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            okv_kquant_scale_min(b->scales, j, &sc, &m);
            s->sc[2 * j] = s->sc[2 * j + 1] = (int16_t)sc;
            s->mn[2 * j] = s->mn[2 * j + 1] = (int16_t)m;
        }
        s->z = 0;
        s->has_min = 1;
        s->d = okv_fp16_to_f32(b->d);
        s->dmin = okv_fp16_to_f32(b->dmin);
        break;
    }
    default: {
        const okv_block_q6_k *b = (const okv_block_q6_k *)blk;
        for (int j = 0; j < 16; j++) s->sc[j] = b->scales[j];
        s->z = 32;
        s->has_min = 0;
        s->d = okv_fp16_to_f32(b->d);
        s->dmin = 0.0f;
        break;
    }
    }
}

#if defined(OKV_CPU_AVX512) || defined(OKV_CPU_AVX2)
/* Codes of elements [32c, 32c+32) of a super-block (layouts in kernels/ref_kquant.c). */
static inline __attribute__((always_inline)) __m256i kq_codes32(const uint8_t *blk, okv_type wt, int c) {
    const __m256i m2 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(15);
    switch (wt) {
    case OKV_TYPE_Q2_K:
    case OKV_TYPE_Q3_K: {
        const uint8_t *qs = wt == OKV_TYPE_Q2_K ? ((const okv_block_q2_k *)blk)->qs : ((const okv_block_q3_k *)blk)->qs;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (c / 4)));
        __m256i u = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * (c % 4))), m2);
        if (wt == OKV_TYPE_Q3_K) {
            /* bit c of each hmask byte moved to bit 2 (16-bit shifts: the mask drops what
             * crosses from the neighbouring byte) */
            const __m256i hm = _mm256_loadu_si256((const __m256i *)((const okv_block_q3_k *)blk)->hmask);
            const __m256i h = c <= 2 ? _mm256_slli_epi16(hm, 2 - c) : _mm256_srli_epi16(hm, c - 2);
            u = _mm256_or_si256(u, _mm256_and_si256(h, _mm256_set1_epi8(4)));
        }
        return u;
    }
    case OKV_TYPE_Q4_K:
    case OKV_TYPE_Q5_K: {
        const uint8_t *qs = wt == OKV_TYPE_Q4_K ? ((const okv_block_q4_k *)blk)->qs : ((const okv_block_q5_k *)blk)->qs;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (c / 2)));
        __m256i u = c % 2 ? _mm256_and_si256(_mm256_srli_epi16(q, 4), m4) : _mm256_and_si256(q, m4);
        if (wt == OKV_TYPE_Q5_K) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)((const okv_block_q5_k *)blk)->qh);
            const __m256i bit = _mm256_set1_epi8((char)(1 << c));
            const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
            u = _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi8(16)));
        }
        return u;
    }
    default: {
        const okv_block_q6_k *b = (const okv_block_q6_k *)blk;
        const int h = c / 4, k = c % 4;
        const __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k % 2)));
        const __m256i lo = k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), m2);
        return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
    }
    }
}

static inline float kq_h2f(uint16_t h) { return _cvtsh_ss(h); }

/* The scales of one super-block as 16 int16 per 16-element group (sc16, mn16) and d, dmin:
 * Q4_K/Q5_K unpack their 6-bit pairs with four 32-bit shifts and masks (bytes 0-7 of u the
 * scales, 8-15 the mins), the others widen their bytes. Same values as kq_get_scales. */
static inline __attribute__((always_inline)) kq_scales kq_scales_vec(const uint8_t *blk, okv_type wt,
                                                                     __m256i *sc16, __m256i *mn16) {
    kq_scales s = {.z = 0, .has_min = 1};
    switch (wt) {
    case OKV_TYPE_Q4_K:
    case OKV_TYPE_Q5_K: {
        const okv_block_q4_k *b = (const okv_block_q4_k *)blk;
        uint32_t a[3];
        memcpy(a, b->scales, 12);
        /* built in registers: four word stores read back as one vector would stall on
         * store-to-load forwarding */
        const __m128i v = _mm_setr_epi32((int)(a[0] & 0x3f3f3f3fu),
                                         (int)((a[2] & 0x0f0f0f0fu) | (((a[0] >> 6) & 0x03030303u) << 4)),
                                         (int)(a[1] & 0x3f3f3f3fu),
                                         (int)(((a[2] >> 4) & 0x0f0f0f0fu) | (((a[1] >> 6) & 0x03030303u) << 4)));
        *sc16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v, v));
        *mn16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v));
        s.d = kq_h2f(b->d);
        s.dmin = kq_h2f(b->dmin);
        break;
    }
    case OKV_TYPE_Q2_K: {
        const okv_block_q2_k *b = (const okv_block_q2_k *)blk;
        const __m128i v = _mm_loadu_si128((const __m128i *)b->scales);
        const __m128i m4 = _mm_set1_epi8(15);
        *sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
        *mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
        s.d = kq_h2f(b->d);
        s.dmin = kq_h2f(b->dmin);
        break;
    }
    case OKV_TYPE_Q3_K: {
        /* okv_kquant_q3_scale for all 16 groups: the low nibbles of bytes 0-7 (groups 0-7) and
         * their high nibbles (8-15), each with two bits of bytes 8-11 on top, less 32 */
        const okv_block_q3_k *b = (const okv_block_q3_k *)blk;
        uint32_t a[3];
        memcpy(a, b->scales, 12);
        const __m128i u = _mm_setr_epi32((int)((a[0] & 0x0f0f0f0fu) | ((a[2] & 0x03030303u) << 4)),
                                         (int)((a[1] & 0x0f0f0f0fu) | (((a[2] >> 2) & 0x03030303u) << 4)),
                                         (int)(((a[0] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 4) & 0x03030303u) << 4)),
                                         (int)(((a[1] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 6) & 0x03030303u) << 4)));
        const __m128i v = _mm_sub_epi8(u, _mm_set1_epi8(32));
        *sc16 = _mm256_cvtepi8_epi16(v);
        *mn16 = _mm256_setzero_si256();
        s.z = 4;
        s.has_min = 0;
        s.d = kq_h2f(b->d);
        s.dmin = 0.0f;
        break;
    }
    case OKV_TYPE_Q6_K: {
        const okv_block_q6_k *b = (const okv_block_q6_k *)blk;
        *sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        *mn16 = _mm256_setzero_si256();
        s.z = 32;
        s.has_min = 0;
        s.d = kq_h2f(b->d);
        s.dmin = 0.0f;
        break;
    }
    default:
        kq_get_scales(&s, blk, wt);
        *sc16 = _mm256_loadu_si256((const __m256i *)s.sc);
        *mn16 = _mm256_loadu_si256((const __m256i *)s.mn);
        break;
    }
    return s;
}

/* {sc[2c] x8 | sc[2c+1] x8}: the scales of the 16-bit pair sums of elements [32c, 32c+32). */
static inline __attribute__((always_inline)) __m256i kq_scale_pairs(__m256i sc16, int c) {
    /* the 128-bit lane holding groups 2c and 2c+1, then each of the two words broadcast */
    const __m128i lane = (2 * c) / 8 ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16);
    const int w = (2 * c) % 8;
    const __m128i lo = _mm_shuffle_epi8(lane, _mm_set1_epi16((short)(0x0100 + 0x0202 * w)));
    const __m128i hi = _mm_shuffle_epi8(lane, _mm_set1_epi16((short)(0x0100 + 0x0202 * (w + 1))));
    return _mm256_set_m128i(hi, lo);
}

static inline float kq_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#else
/* Plain C: the codes of the whole super-block. */
static void kq_codes256(uint8_t *u, const uint8_t *blk, okv_type wt) {
    for (int e = 0; e < OKV_QK_K; e++) {
        const int l = e % 32, c = e / 32;
        int q;
        switch (wt) {
        case OKV_TYPE_Q2_K: q = (((const okv_block_q2_k *)blk)->qs[32 * (c / 4) + l] >> (2 * (c % 4))) & 3; break;
        case OKV_TYPE_Q3_K: {
            const okv_block_q3_k *b = (const okv_block_q3_k *)blk;
            q = ((b->qs[32 * (c / 4) + l] >> (2 * (c % 4))) & 3) | (((b->hmask[l] >> c) & 1) << 2);
            break;
        }
        case OKV_TYPE_Q4_K: {
            const uint8_t v = ((const okv_block_q4_k *)blk)->qs[32 * (c / 2) + l];
            q = c % 2 ? v >> 4 : v & 15;
            break;
        }
        case OKV_TYPE_Q5_K: {
            const okv_block_q5_k *b = (const okv_block_q5_k *)blk;
            const uint8_t v = b->qs[32 * (c / 2) + l];
            q = (c % 2 ? v >> 4 : v & 15) | (((b->qh[l] >> c) & 1) << 4);
            break;
        }
        default: {
            const okv_block_q6_k *b = (const okv_block_q6_k *)blk;
            const int h = c / 4, k = c % 4;
            const uint8_t v = b->ql[64 * h + 32 * (k % 2) + l];
            q = (k < 2 ? v & 15 : v >> 4) | (((b->qh[32 * h + l] >> (2 * k)) & 3) << 4);
            break;
        }
        }
        u[e] = (uint8_t)q;
    }
}
#endif

/* y[t*n_out] for T tokens of one weight row of nb super-blocks; x holds the tokens' Q8_K rows,
 * astride bytes apart. */
static inline __attribute__((always_inline)) void kq_row(float *y, int n_out, const uint8_t *wr, okv_type wt,
                                                          int nb, const uint8_t *act, size_t astride, const int T) {
    const size_t bsz = okv_type_block_bytes(wt);
#if defined(OKV_CPU_AVX512) || defined(OKV_CPU_AVX2)
    __m256 accf[KQ_TOK_TILE];
    CPU_UNROLL for (int t = 0; t < T; t++) accf[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = wr + (size_t)b * bsz;
        __m256i sc16, mn16;
        const kq_scales s = kq_scales_vec(blk, wt, &sc16, &mn16);
        const okv_block_q8_k *xb[KQ_TOK_TILE];
        CPU_UNROLL for (int t = 0; t < T; t++) xb[t] = (const okv_block_q8_k *)(act + (size_t)t * astride) + b;
#if defined(OKV_CPU_AVX512)
        __m512i acc[KQ_TOK_TILE];
        CPU_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_si512();
        CPU_UNROLL for (int c = 0; c < 8; c += 2) {
            const __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(kq_codes32(blk, wt, c)), kq_codes32(blk, wt, c + 1), 1);
            /* scales of the four 16-element groups, each over its 8 pair sums */
            const __m512i idx = _mm512_set_epi16(2 * c + 3, 2 * c + 3, 2 * c + 3, 2 * c + 3, 2 * c + 3, 2 * c + 3, 2 * c + 3, 2 * c + 3,
                                                 2 * c + 2, 2 * c + 2, 2 * c + 2, 2 * c + 2, 2 * c + 2, 2 * c + 2, 2 * c + 2, 2 * c + 2,
                                                 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1,
                                                 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c);
            const __m512i sv = _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(sc16));
            CPU_UNROLL for (int t = 0; t < T; t++) {
                const __m512i p = _mm512_maddubs_epi16(u, _mm512_loadu_si512(xb[t]->qs + 32 * c));
                acc[t] = _mm512_dpwssd_epi32(acc[t], p, sv);
            }
        }
#else
        __m256i acc[KQ_TOK_TILE];
        CPU_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_si256();
        CPU_UNROLL for (int c = 0; c < 8; c++) {
            const __m256i u = kq_codes32(blk, wt, c);
            const __m256i sv = kq_scale_pairs(sc16, c);
            CPU_UNROLL for (int t = 0; t < T; t++) {
                const __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * c)));
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(p, sv));
            }
        }
#endif
        CPU_UNROLL for (int t = 0; t < T; t++) {
#if defined(OKV_CPU_AVX512)
            __m256i isum = _mm256_add_epi32(_mm512_castsi512_si256(acc[t]), _mm512_extracti64x4_epi64(acc[t], 1));
#else
            __m256i isum = acc[t];
#endif
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb[t]->bsums);
            /* z is 4 (Q3_K) or 32 (Q6_K): a shift */
            if (s.z) isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), s.z == 4 ? 2 : 5));
            accf[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(s.d * xb[t]->d), accf[t]);
            if (s.has_min)
                accf[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn16)), _mm256_set1_ps(s.dmin * xb[t]->d), accf[t]);
        }
    }
    CPU_UNROLL for (int t = 0; t < T; t++) y[(size_t)t * n_out] = kq_hsum256(accf[t]);
#else
    float acc[KQ_TOK_TILE] = {0};
    uint8_t u[OKV_QK_K];
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = wr + (size_t)b * bsz;
        kq_scales s;
        kq_get_scales(&s, blk, wt);
        kq_codes256(u, blk, wt);
        for (int t = 0; t < T; t++) {
            const okv_block_q8_k *xb = (const okv_block_q8_k *)(act + (size_t)t * astride) + b;
            int isum = 0, msum = 0;
            for (int j = 0; j < 16; j++) {
                int g = 0;
                for (int e = 16 * j; e < 16 * j + 16; e++) g += u[e] * xb->qs[e];
                isum += s.sc[j] * (g - s.z * xb->bsums[j]);
                msum += s.mn[j] * xb->bsums[j];
            }
            acc[t] += (s.d * xb->d) * (float)isum - (s.dmin * xb->d) * (float)msum;
        }
    }
    for (int t = 0; t < T; t++) y[(size_t)t * n_out] = acc[t];
#endif
}

/* One token's activations as Q8_K blocks, exactly llama.cpp's quantize_row_q8_K (as
 * okv_kquant_quant_row_ref): the scale comes from the first element of largest magnitude,
 * q = round-half-even(x * -127/max), d = 1/iscale. The vector paths round with cvtps2dq in the
 * default rounding mode, which is the same rounding. */
static void kq_act_quant(okv_block_q8_k *y, const float *x, int nb) {
#if defined(OKV_CPU_AVX512) || defined(OKV_CPU_AVX2)
    for (int b = 0; b < nb; b++, x += OKV_QK_K) {
        okv_block_q8_k *yb = y + b;
#if defined(OKV_CPU_AVX512)
        __m512 m = _mm512_setzero_ps();
        for (int e = 0; e < OKV_QK_K; e += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + e)));
        const float amax = _mm512_reduce_max_ps(m);
#else
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 m = _mm256_setzero_ps();
        for (int e = 0; e < OKV_QK_K; e += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + e)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
#endif
        if (amax == 0.0f) {
            memset(yb, 0, sizeof *yb);
            continue;
        }
        int first = 0;
        while (fabsf(x[first]) != amax) first++;
        const float iscale = -127.0f / x[first];
#if defined(OKV_CPU_AVX512)
        const __m512 is = _mm512_set1_ps(iscale);
        for (int j = 0; j < 16; j++) {
            const __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), is)),
                                               _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(yb->qs + 16 * j), _mm512_cvtsepi32_epi8(q));
            yb->bsums[j] = (int16_t)_mm512_reduce_add_epi32(q);
        }
#else
        const __m256 is = _mm256_set1_ps(iscale);
        for (int j = 0; j < 16; j++) {
            const __m256i q0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * j), is)),
                                                _mm256_set1_epi32(127));
            const __m256i q1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * j + 8), is)),
                                                _mm256_set1_epi32(127));
            /* 16 int32 -> 16 int8 in order: packs work per 128-bit lane, the permute restores it */
            const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xd8);
            const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            _mm_storeu_si128((__m128i *)(yb->qs + 16 * j), bytes);
            __m256i s = _mm256_add_epi32(q0, q1);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            yb->bsums[j] = (int16_t)_mm_cvtsi128_si32(s4);
        }
#endif
        yb->d = 1.0f / iscale;
    }
#else
    okv_kquant_quant_row_ref(y, x, OKV_TYPE_Q8_K, (int64_t)nb * OKV_QK_K);
#endif
}

/* Rows [r0, r1) for all tokens, the row block staying in cache while the token tiles pass. */
static inline __attribute__((always_inline)) void kq_block(float *y, const uint8_t *w, size_t wrow, okv_type wt,
                                                            const uint8_t *act, size_t astride, int n_tok,
                                                            int nb, int n_out, int r0, int r1) {
    for (int t0 = 0; t0 < n_tok; t0 += KQ_TOK_TILE) {
        const int T = OKV_MIN(KQ_TOK_TILE, n_tok - t0);
        const uint8_t *a = act + (size_t)t0 * astride;
        for (int r = r0; r < r1; r++) {
            float *yr = y + (size_t)t0 * n_out + r;
            const uint8_t *wr = w + (size_t)r * wrow;
            switch (T) {
            case 1: kq_row(yr, n_out, wr, wt, nb, a, astride, 1); break;
            case 2: kq_row(yr, n_out, wr, wt, nb, a, astride, 2); break;
            case 3: kq_row(yr, n_out, wr, wt, nb, a, astride, 3); break;
#if KQ_TOK_TILE == 4
            default: kq_row(yr, n_out, wr, wt, nb, a, astride, 4); break;
#else
            case 4: kq_row(yr, n_out, wr, wt, nb, a, astride, 4); break;
            case 5: kq_row(yr, n_out, wr, wt, nb, a, astride, 5); break;
            case 6: kq_row(yr, n_out, wr, wt, nb, a, astride, 6); break;
            case 7: kq_row(yr, n_out, wr, wt, nb, a, astride, 7); break;
            default: kq_row(yr, n_out, wr, wt, nb, a, astride, 8); break;
#endif
            }
        }
    }
}

/* Instantiated per weight type so the type tests inside fold away. */
#define KQ_TYPED(name, WT)                                                                         \
    static void name(float *y, const uint8_t *w, size_t wrow, const uint8_t *act, size_t astride, \
                     int n_tok, int nb, int n_out, int r0, int r1) {                               \
        kq_block(y, w, wrow, WT, act, astride, n_tok, nb, n_out, r0, r1);                          \
    }
KQ_TYPED(kq_q2_k, OKV_TYPE_Q2_K)
KQ_TYPED(kq_q3_k, OKV_TYPE_Q3_K)
KQ_TYPED(kq_q4_k, OKV_TYPE_Q4_K)
KQ_TYPED(kq_q5_k, OKV_TYPE_Q5_K)
KQ_TYPED(kq_q6_k, OKV_TYPE_Q6_K)
#undef KQ_TYPED

typedef void (*kq_fn)(float *, const uint8_t *, size_t, const uint8_t *, size_t, int, int, int, int, int);

void CPU_FN(cpu_matmul_kquant)(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                               int n_tok, int n_in, int n_out) {
    cpu_state *st = be->state;
    kq_fn fn;
    switch (wtype) {
    case OKV_TYPE_Q2_K: fn = kq_q2_k; break;
    case OKV_TYPE_Q3_K: fn = kq_q3_k; break;
    case OKV_TYPE_Q4_K: fn = kq_q4_k; break;
    case OKV_TYPE_Q5_K: fn = kq_q5_k; break;
    case OKV_TYPE_Q6_K: fn = kq_q6_k; break;
    default: OKV_ASSERT(!"cpu_matmul_kquant: not a K-quant"); return;
    }
    OKV_ASSERT(n_in % OKV_QK_K == 0 && n_tok <= st->max_tok && n_in <= st->max_in);
    /* Each token's activations are a row of Q8_K blocks in the scratch, which matmul.c sizes for
     * its own (larger) layouts. */
    const size_t astride = CPU_FN(cpu_act_row_bytes)(n_in);
    OKV_ASSERT(okv_type_row_bytes(OKV_TYPE_Q8_K, n_in) <= astride);
    const size_t wrow = okv_type_row_bytes(wtype, n_in);
    const int nb = n_in / OKV_QK_K, n_blocks = (n_out + KQ_ROW_BLOCK - 1) / KQ_ROW_BLOCK;
    uint8_t *act = st->act;
#pragma omp parallel num_threads(st->n_threads)
    {
#pragma omp for schedule(static)
        for (int t = 0; t < n_tok; t++)
            kq_act_quant((okv_block_q8_k *)(act + (size_t)t * astride), x + (size_t)t * n_in, nb);
#pragma omp for schedule(static)
        for (int rb = 0; rb < n_blocks; rb++) {
            const int r0 = rb * KQ_ROW_BLOCK, r1 = OKV_MIN(n_out, r0 + KQ_ROW_BLOCK);
            fn(y, (const uint8_t *)w, wrow, act, astride, n_tok, nb, n_out, r0, r1);
        }
    }
}
