/* matmul.c — Y = X W^T for every weight type on the CPU: activation quantization (ggml numerics)
 * and int8 dot products (AVX-512 VNNI, AVX2, scalar), several tokens per weight row load.
 * Tested against okv_matmul_ref and dequantize-then-f32 by tests/unit/test_kernels.c. */
#include "cpu.h"
#include "../kquant.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(OKV_CPU_AVX512) || defined(OKV_CPU_AVX2)
#include <immintrin.h>
#endif

/* Rows of W given to a thread at a time: their bytes stay in L1 while every token tile passes. */
#define MM_ROW_BLOCK 16
/* Tokens sharing one load of a weight row. */
#define MM_TOK_TILE 4

/* Layout of one token's activations in the scratch (private to this file):
 *   quantized partners: int8 qs[nb*32] | int32 bias[nb*8] | float ds[nb][2]
 *     qs in natural element order; ds = {d, s} (f16-rounded values; s = 0 except for the Q8_1
 *     partners of Q4_1 and Q5_1);
 *     bias[b*8 + l] = -K * (sum of qs[b*32 + 4l .. 4l+3]) turns the unsigned-times-signed dot
 *     of the stored code (q + K) into the signed dot: K = 8 for Q4_0, 16 for Q5_0, and under
 *     VNNI 128 for Q8_0 and IQ4_NL (whose table entries are stored biased by 128).
 *   F16/BF16 partners: float x[n_in], each rounded through the weight's type. */
static size_t act_qs_off(int nb) { return 0; }
static size_t act_bias_off(int nb) { return (size_t)nb * 32; }
static size_t act_ds_off(int nb) { return (size_t)nb * 64; }

size_t CPU_FN(cpu_act_row_bytes)(int64_t n_in) {
    const size_t q = (size_t)((n_in + OKV_QK - 1) / OKV_QK) * 72;
    const size_t f = (size_t)n_in * sizeof(float);
    return ((q > f ? q : f) + 63) & ~(size_t)63;
}

static inline int act_bias_k(okv_type wt) {
    if (wt == OKV_TYPE_Q4_0) return 8;
    if (wt == OKV_TYPE_Q5_0) return 16;
#if defined(OKV_CPU_AVX512)
    if (wt == OKV_TYPE_Q8_0 || wt == OKV_TYPE_IQ4_NL) return 128;
#endif
    return 0;
}

/* Weight types with an offset m per block, paired with Q8_1 activations (s = d * sum q). */
static inline int has_min(okv_type wt) { return wt == OKV_TYPE_Q4_1 || wt == OKV_TYPE_Q5_1; }

/* Byte offset of the 16 nibble bytes in a block of the 4- and 5-bit types; the 5-bit ones keep
 * their 32 high bits (u32 qh) in the 4 bytes before. */
static inline int q_nibble_off(okv_type wt) {
    return wt == OKV_TYPE_Q5_1 ? 8 : wt == OKV_TYPE_Q5_0 ? 6 : wt == OKV_TYPE_Q4_1 ? 4 : 2;
}

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return okv_fp16_to_f32(h);
}

/* ---- activation preparation ------------------------------------------------------------------- */

/* Same numerics as okv_quant_row_ref for Q8_0/Q8_1 (x86 ggml): multiplier 127/amax, round half to
 * even (the default rounding mode, which both rintf and cvtps2dq use). */
static void act_quant_q8(uint8_t *row, const float *x, int nb, int bias_k, int want_s) {
    int8_t *qs = (int8_t *)(row + act_qs_off(nb));
    int32_t *bias = (int32_t *)(row + act_bias_off(nb));
    float *ds = (float *)(row + act_ds_off(nb));
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (int64_t)b * OKV_QK;
        int8_t *qb = qs + (int64_t)b * OKV_QK;
        int sum = 0;
        float d;
#if defined(OKV_CPU_AVX512)
        const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        d = amax / 127.0f;
        const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
        const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        _mm_storeu_si128((__m128i *)qb, _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(qb + 16), _mm512_cvtepi32_epi8(i1));
        sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        if (bias_k) {
            const __m256i g = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1),
                                                  _mm256_loadu_si256((const __m256i *)qb));
            _mm256_storeu_si256((__m256i *)(bias + b * 8), _mm256_mullo_epi32(g, _mm256_set1_epi32(-bias_k)));
        }
#else
        float amax = 0.0f;
        for (int j = 0; j < OKV_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < OKV_QK; j++) {
            qb[j] = (int8_t)rintf(xb[j] * id);
            sum += qb[j];
        }
        if (bias_k)
            for (int l = 0; l < 8; l++)
                bias[b * 8 + l] = -bias_k * (qb[4 * l] + qb[4 * l + 1] + qb[4 * l + 2] + qb[4 * l + 3]);
#endif
        ds[2 * b] = okv_fp16_to_f32(okv_f32_to_fp16(d));
        ds[2 * b + 1] = want_s ? okv_fp16_to_f32(okv_f32_to_fp16((float)sum * d)) : 0.0f;
    }
}

static void act_round(float *y, const float *x, int n, okv_type wt) {
    int i = 0;
#if defined(OKV_CPU_AVX512)
    if (wt == OKV_TYPE_F16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i),
                                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    }
#endif
    for (; i < n; i++)
        y[i] = wt == OKV_TYPE_F16 ? okv_fp16_to_f32(okv_f32_to_fp16(x[i]))
                                  : okv_bf16_to_f32(okv_f32_to_bf16(x[i]));
}

static void act_prepare(uint8_t *row, const float *x, int n_in, okv_type wt) {
    switch (wt) {
    case OKV_TYPE_Q4_1:
    case OKV_TYPE_Q5_1: act_quant_q8(row, x, n_in / OKV_QK, 0, 1); break;
    case OKV_TYPE_Q4_0:
    case OKV_TYPE_Q5_0:
    case OKV_TYPE_IQ4_NL:
    case OKV_TYPE_Q8_0: act_quant_q8(row, x, n_in / OKV_QK, act_bias_k(wt), 0); break;
    case OKV_TYPE_F16:
    case OKV_TYPE_BF16: act_round((float *)row, x, n_in, wt); break;
    default: break;
    }
}

/* ---- tiles ------------------------------------------------------------------------------------------ */

/* A tile is R weight rows x T tokens (R*T <= MM_ACC accumulators): each weight block is unpacked
 * once for its T tokens, and the R*T horizontal sums at the end are done four at a time. */
#define MM_ACC 8

/* One block of any quantized weight type against one token's activations, plain C (the AVX-512
 * tail rows and the generic path; the AVX2 path has its own). */
#if defined(OKV_CPU_AVX512) || !defined(OKV_CPU_AVX2)
static inline float q_block_scalar(const uint8_t *wb, okv_type wt, const int8_t *xq, const float *ds) {
    const int h = OKV_QK / 2;
    int isum = 0;
    if (wt == OKV_TYPE_Q8_0) {
        const int8_t *q = (const int8_t *)(wb + 2);
        for (int j = 0; j < OKV_QK; j++) isum += q[j] * xq[j];
    } else if (wt == OKV_TYPE_IQ4_NL) {
        const uint8_t *q = wb + 2;
        for (int j = 0; j < h; j++)
            isum += okv_iq4nl_values[q[j] & 15] * xq[j] + okv_iq4nl_values[q[j] >> 4] * xq[j + h];
    } else {
        const int off = q_nibble_off(wt);
        const int zero = wt == OKV_TYPE_Q4_0 ? 8 : wt == OKV_TYPE_Q5_0 ? 16 : 0;
        const int five = wt == OKV_TYPE_Q5_0 || wt == OKV_TYPE_Q5_1;
        uint32_t qh = 0;
        if (five) memcpy(&qh, wb + off - 4, 4);
        const uint8_t *q = wb + off;
        for (int j = 0; j < h; j++) {
            const int lo = (q[j] & 15) | (int)((qh >> j) & 1) << 4;
            const int hi = (q[j] >> 4) | (int)((qh >> (j + h)) & 1) << 4;
            isum += (lo - zero) * xq[j] + (hi - zero) * xq[j + h];
        }
    }
    const float m = has_min(wt) ? h2f(wb + 2) : 0.0f;
    return h2f(wb) * ds[0] * (float)isum + m * ds[1];
}
#endif

static inline size_t q_block_bytes(okv_type wt) {
    switch (wt) {
    case OKV_TYPE_Q8_0: return sizeof(okv_block_q8_0);
    case OKV_TYPE_Q4_1: return sizeof(okv_block_q4_1);
    case OKV_TYPE_Q5_0: return sizeof(okv_block_q5_0);
    case OKV_TYPE_Q5_1: return sizeof(okv_block_q5_1);
    case OKV_TYPE_IQ4_NL: return sizeof(okv_block_iq4_nl);
    default: return sizeof(okv_block_q4_0);
    }
}

#if defined(OKV_CPU_AVX512)
/* {sum(a), sum(b), sum(c), sum(d)}: interleave and add, then fold the four 128-bit lanes. */
static inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(t0, t1, 0x44), _mm512_shuffle_ps(t0, t1, 0xee));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(u), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* {a1+a3, b1+b3, c1+c3, d1+d3}: the m*s lanes of the Q4_1/Q5_1 offset accumulators. */
static inline __m128 sum4_odd(__m128 a, __m128 b, __m128 c, __m128 d) {
    return _mm_hadd_ps(_mm_shuffle_ps(a, b, 0xdd), _mm_shuffle_ps(c, d, 0xdd));
}

/* y[t][r] = sum(acc[r*T+t]) (+ the odd lanes of ms when given) + tail[r*T+t]. */
static inline __attribute__((always_inline)) void tile_store(float *y, int n_out, const int R, const int T,
                                                              const __m512 *acc, const __m128 *ms,
                                                              const float *tail) {
    float s[MM_ACC];
    const __m512 z = _mm512_setzero_ps();
    const __m128 z4 = _mm_setzero_ps();
    CPU_UNROLL for (int k = 0; k < R * T; k += 4) {
        __m128 v = sum4(acc[k], k + 1 < R * T ? acc[k + 1] : z, k + 2 < R * T ? acc[k + 2] : z,
                        k + 3 < R * T ? acc[k + 3] : z);
        if (ms)
            v = _mm_add_ps(v, sum4_odd(ms[k], k + 1 < R * T ? ms[k + 1] : z4, k + 2 < R * T ? ms[k + 2] : z4,
                                       k + 3 < R * T ? ms[k + 3] : z4));
        if (k + 4 <= R * T) _mm_storeu_ps(s + k, v);
        else _mm_mask_storeu_ps(s + k, (__mmask8)((1u << (R * T - k)) - 1u), v);
    }
    CPU_UNROLL for (int r = 0; r < R; r++) CPU_UNROLL for (int t = 0; t < T; t++)
        y[(size_t)t * n_out + r] = s[r * T + t] + tail[r * T + t];
}

/* Two blocks per 512-bit step: bytes 0-31 of the vector are block b, 32-63 block b+1, and each
 * 32-bit lane of the VNNI product sums four elements of one block. The 5-bit types add 16 to the
 * bytes their qh bits mark (one byte-masked add for both blocks); IQ4_NL looks its nibbles up in
 * the table biased by 128. Scales arrive as {d_w*d_x, m_w*s_x} per block (one f16 conversion
 * for both blocks) and are spread over the lanes of their block with one permute. An odd last
 * block is done in plain C. */
static inline __attribute__((always_inline)) void q_tile(float *y, int n_out, const uint8_t *w,
                                                          size_t wrow, okv_type wt, int nb,
                                                          const uint8_t *act, size_t astride,
                                                          const int R, const int T) {
    const size_t bsz = q_block_bytes(wt);
    const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i spread = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i nl_table = _mm512_broadcast_i32x4(
        _mm_xor_si128(_mm_loadu_si128((const __m128i *)okv_iq4nl_values), _mm_set1_epi8((char)0x80)));
    const int use_bias = act_bias_k(wt) != 0;
    __m512 acc[MM_ACC];
    __m128 ms[MM_ACC];
    float tail[MM_ACC];
    CPU_UNROLL for (int k = 0; k < R * T; k++) {
        acc[k] = _mm512_setzero_ps();
        ms[k] = _mm_setzero_ps();
        tail[k] = 0.0f;
    }
    /* Rows one after another (each a sequential stream, which the prefetchers follow); only the
     * final sums of the R rows are done together. */
    CPU_UNROLL for (int r = 0; r < R; r++) {
        const uint8_t *wr = w + r * wrow;
        int b = 0;
        for (; b + 1 < nb; b += 2) {
            const uint8_t *b0 = wr + (size_t)b * bsz, *b1 = b0 + bsz;
            __m512i v;
            if (wt == OKV_TYPE_Q8_0) {
                v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                                       _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
                v = _mm512_xor_si512(v, flip);
            } else {
                const int off = q_nibble_off(wt);
                v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(b0 + off)));
                v = _mm512_mask_broadcast_i32x4(v, 0xff00, _mm_loadu_si128((const __m128i *)(b1 + off)));
                v = _mm512_and_si512(_mm512_srlv_epi64(v, shift), m4);
                if (wt == OKV_TYPE_Q5_0 || wt == OKV_TYPE_Q5_1) {
                    uint32_t h0, h1;
                    memcpy(&h0, b0 + off - 4, 4);
                    memcpy(&h1, b1 + off - 4, 4);
                    v = _mm512_mask_add_epi8(v, (__mmask64)h0 | (__mmask64)h1 << 32, v, _mm512_set1_epi8(16));
                } else if (wt == OKV_TYPE_IQ4_NL) {
                    v = _mm512_shuffle_epi8(nl_table, v);
                }
            }
            __m128i wh;
            if (has_min(wt)) {
                uint32_t dm0, dm1;
                memcpy(&dm0, b0, 4);
                memcpy(&dm1, b1, 4);
                wh = _mm_insert_epi32(_mm_cvtsi32_si128((int)dm0), (int)dm1, 1);
            } else {
                uint16_t d0, d1;
                memcpy(&d0, b0, 2);
                memcpy(&d1, b1, 2);
                wh = _mm_insert_epi16(_mm_cvtsi32_si128(d0), d1, 2);
            }
            const __m128 wd = _mm_cvtph_ps(wh);
            CPU_UNROLL for (int t = 0; t < T; t++) {
                const uint8_t *a = act + (size_t)t * astride;
                const __m128 prod = _mm_mul_ps(wd, _mm_loadu_ps((const float *)(a + act_ds_off(nb)) + 2 * b));
                if (has_min(wt)) ms[r * T + t] = _mm_add_ps(ms[r * T + t], prod);
                const __m512i init = use_bias ? _mm512_loadu_si512(a + act_bias_off(nb) + (size_t)b * 32)
                                              : _mm512_setzero_si512();
                const __m512i p = _mm512_dpbusd_epi32(init, v, _mm512_loadu_si512(a + act_qs_off(nb) + (size_t)b * 32));
                const __m512 sc = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(prod));
                acc[r * T + t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[r * T + t]);
            }
        }
        if (b < nb)
            CPU_UNROLL for (int t = 0; t < T; t++) {
                const uint8_t *a = act + (size_t)t * astride;
                tail[r * T + t] = q_block_scalar(wr + (size_t)b * bsz, wt, (const int8_t *)(a + act_qs_off(nb)) + b * OKV_QK,
                                                 (const float *)(a + act_ds_off(nb)) + 2 * b);
            }
    }
    tile_store(y, n_out, R, T, acc, has_min(wt) ? ms : NULL, tail);
}

/* Weight elements [i, i+16) (masked) as f32. */
static inline __m512 f_load_w(const void *w, okv_type wt, int i, __mmask16 m) {
    if (wt == OKV_TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
    if (wt == OKV_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* x holds T token rows of f32 (already rounded to the weight type), xstride floats apart. */
static inline __attribute__((always_inline)) void f_tile(float *y, int n_out, const uint8_t *w,
                                                          size_t wrow, okv_type wt, int n,
                                                          const float *x, size_t xstride,
                                                          const int R, const int T) {
    __m512 acc[MM_ACC];
    float tail[MM_ACC];
    CPU_UNROLL for (int k = 0; k < R * T; k++) {
        acc[k] = _mm512_setzero_ps();
        tail[k] = 0.0f;
    }
    CPU_UNROLL for (int r = 0; r < R; r++)
        for (int i = 0; i < n; i += 16) {
            const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
            const __m512 wv = f_load_w(w + r * wrow, wt, i, m);
            CPU_UNROLL for (int t = 0; t < T; t++)
                acc[r * T + t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * xstride + i), acc[r * T + t]);
        }
    tile_store(y, n_out, R, T, acc, NULL, tail);
}
#else
#if defined(OKV_CPU_AVX2)
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#if defined(OKV_CPU_AVX2)
/* 0x10 in byte j where bit j of the block's u32 qh is set: byte j/8 of qh copied to the eight
 * bytes of its quarter, each byte tested against its own bit. */
static inline __m256i q5_high(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i rep = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                              0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(rep, bit), bit), _mm256_set1_epi8(0x10));
}
#endif

/* One block per 256-bit step (maddubs + madd; Q8_0 and IQ4_NL move the weight sign onto the
 * activation so the unsigned operand stays in 0..128 and the 16-bit pair sums cannot saturate;
 * the 4- and 5-bit codes are unsigned, at most 31), or plain C. */
static inline __attribute__((always_inline)) void q_tile(float *y, int n_out, const uint8_t *w,
                                                          size_t wrow, okv_type wt, int nb,
                                                          const uint8_t *act, size_t astride,
                                                          const int R, const int T) {
    const size_t bsz = q_block_bytes(wt);
    for (int r = 0; r < R; r++) {
        const uint8_t *wr = w + r * wrow;
        for (int t = 0; t < T; t++) {
            const uint8_t *a = act + (size_t)t * astride;
            const int8_t *xq = (const int8_t *)(a + act_qs_off(nb));
            const float *ds = (const float *)(a + act_ds_off(nb));
            float out = 0.0f;
#if defined(OKV_CPU_AVX2)
            const __m256i m4 = _mm256_set1_epi8(0x0f);
            const __m256i ones = _mm256_set1_epi16(1);
            const __m128i nl = _mm_loadu_si128((const __m128i *)okv_iq4nl_values);
            const __m256i nl_table = _mm256_set_m128i(nl, nl);
            __m256 accv = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                const uint8_t *wb = wr + (size_t)b * bsz;
                const __m256i x = _mm256_loadu_si256((const __m256i *)(xq + (size_t)b * 32));
                __m256i p;
                if (wt == OKV_TYPE_Q8_0) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(wb + 2));
                    p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(x, v)), ones);
                } else {
                    const int off = q_nibble_off(wt);
                    const __m128i q = _mm_loadu_si128((const __m128i *)(wb + off));
                    __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4);
                    if (wt == OKV_TYPE_IQ4_NL) {
                        v = _mm256_shuffle_epi8(nl_table, v);
                        p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(x, v)), ones);
                    } else {
                        if (wt == OKV_TYPE_Q5_0 || wt == OKV_TYPE_Q5_1) v = _mm256_or_si256(v, q5_high(wb + off - 4));
                        p = _mm256_madd_epi16(_mm256_maddubs_epi16(v, x), ones);
                    }
                }
                if (act_bias_k(wt))
                    p = _mm256_add_epi32(p, _mm256_loadu_si256((const __m256i *)(a + act_bias_off(nb) + (size_t)b * 32)));
                accv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(h2f(wb) * ds[2 * b]), accv);
                if (has_min(wt)) out += h2f(wb + 2) * ds[2 * b + 1];
            }
            out += hsum256(accv);
#else
            for (int b = 0; b < nb; b++)
                out += q_block_scalar(wr + (size_t)b * bsz, wt, xq + (size_t)b * OKV_QK, ds + 2 * b);
#endif
            y[(size_t)t * n_out + r] = out;
        }
    }
}

static inline float f_w_scalar(const void *w, okv_type wt, int i) {
    if (wt == OKV_TYPE_F32) return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return wt == OKV_TYPE_F16 ? okv_fp16_to_f32(h) : okv_bf16_to_f32(h);
}

static inline __attribute__((always_inline)) void f_tile(float *y, int n_out, const uint8_t *w,
                                                          size_t wrow, okv_type wt, int n,
                                                          const float *x, size_t xstride,
                                                          const int R, const int T) {
    for (int r = 0; r < R; r++) {
        const uint8_t *wr = w + r * wrow;
        for (int t = 0; t < T; t++) {
            const float *xt = x + t * xstride;
            float out = 0.0f;
            int i = 0;
#if defined(OKV_CPU_AVX2)
            __m256 accv = _mm256_setzero_ps();
            for (; i + 8 <= n; i += 8) {
                __m256 wv;
                if (wt == OKV_TYPE_F32) {
                    wv = _mm256_loadu_ps((const float *)wr + i);
                } else {
                    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)wr + i));
                    wv = wt == OKV_TYPE_F16 ? _mm256_cvtph_ps(h)
                                            : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
                }
                accv = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xt + i), accv);
            }
            out = hsum256(accv);
#endif
            for (; i < n; i++) out += f_w_scalar(wr, wt, i) * xt[i];
            y[(size_t)t * n_out + r] = out;
        }
    }
}
#endif

/* ---- driver --------------------------------------------------------------------------------------- */

/* y[t][r] for rows [r0, r1) and all tokens: every weight row is loaded once per token tile while
 * the row block stays in L1. Decode (one token) takes four rows per tile, prefill two rows by up
 * to four tokens. */
static inline __attribute__((always_inline)) void mm_block(float *y, const uint8_t *w, size_t wrow,
                                                            okv_type wt, const float *x,
                                                            const uint8_t *act, size_t astride,
                                                            int n_tok, int n_in, int n_out, int r0,
                                                            int r1) {
    const int quant = wt == OKV_TYPE_Q4_0 || wt == OKV_TYPE_Q4_1 || wt == OKV_TYPE_Q8_0 ||
                      wt == OKV_TYPE_Q5_0 || wt == OKV_TYPE_Q5_1 || wt == OKV_TYPE_IQ4_NL;
    const int nb = n_in / OKV_QK;
    for (int t0 = 0; t0 < n_tok; t0 += MM_TOK_TILE) {
        const int T = OKV_MIN(MM_TOK_TILE, n_tok - t0);
        const int R = T == 1 ? 4 : 2;
        const uint8_t *a = act + (size_t)t0 * astride;
        const float *xf = wt == OKV_TYPE_F32 ? x + (size_t)t0 * n_in : (const float *)a;
        const size_t xs = wt == OKV_TYPE_F32 ? (size_t)n_in : astride / sizeof(float);
        float *yt = y + (size_t)t0 * n_out;
        for (int r = r0; r < r1;) {
            const int rr = r + R <= r1 ? R : 1;
            const uint8_t *wr = w + (size_t)r * wrow;
#define MM_TILE(RR, TT)                                                                             \
    if (quant) q_tile(yt + r, n_out, wr, wrow, wt, nb, a, astride, RR, TT);                        \
    else f_tile(yt + r, n_out, wr, wrow, wt, n_in, xf, xs, RR, TT);
            if (rr == 4) {
                MM_TILE(4, 1)
            } else if (rr == 2) {
                switch (T) {
                case 2: MM_TILE(2, 2) break;
                case 3: MM_TILE(2, 3) break;
                default: MM_TILE(2, 4) break;
                }
            } else {
                switch (T) {
                case 1: MM_TILE(1, 1) break;
                case 2: MM_TILE(1, 2) break;
                case 3: MM_TILE(1, 3) break;
                default: MM_TILE(1, 4) break;
                }
            }
#undef MM_TILE
            r += rr;
        }
    }
}

/* Instantiated per weight type so the type tests inside the kernels fold away. */
#define MM_TYPED(name, WT)                                                                         \
    static void name(float *y, const uint8_t *w, size_t wrow, const float *x, const uint8_t *act,  \
                     size_t astride, int n_tok, int n_in, int n_out, int r0, int r1) {             \
        mm_block(y, w, wrow, WT, x, act, astride, n_tok, n_in, n_out, r0, r1);                     \
    }
MM_TYPED(mm_q4_0, OKV_TYPE_Q4_0)
MM_TYPED(mm_q4_1, OKV_TYPE_Q4_1)
MM_TYPED(mm_q8_0, OKV_TYPE_Q8_0)
MM_TYPED(mm_q5_0, OKV_TYPE_Q5_0)
MM_TYPED(mm_q5_1, OKV_TYPE_Q5_1)
MM_TYPED(mm_iq4_nl, OKV_TYPE_IQ4_NL)
MM_TYPED(mm_f16, OKV_TYPE_F16)
MM_TYPED(mm_bf16, OKV_TYPE_BF16)
MM_TYPED(mm_f32, OKV_TYPE_F32)
#undef MM_TYPED

typedef void (*mm_fn)(float *, const uint8_t *, size_t, const float *, const uint8_t *, size_t, int,
                      int, int, int, int);

void CPU_FN(cpu_matmul)(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                        int n_tok, int n_in, int n_out) {
    cpu_state *st = be->state;
    if (okv_type_is_kquant(wtype)) { /* matmul_kquant.c */
        CPU_FN(cpu_matmul_kquant)(be, y, w, wtype, x, n_tok, n_in, n_out);
        return;
    }
    mm_fn fn;
    switch (wtype) {
    case OKV_TYPE_Q4_0: fn = mm_q4_0; break;
    case OKV_TYPE_Q4_1: fn = mm_q4_1; break;
    case OKV_TYPE_Q8_0: fn = mm_q8_0; break;
    case OKV_TYPE_Q5_0: fn = mm_q5_0; break;
    case OKV_TYPE_Q5_1: fn = mm_q5_1; break;
    case OKV_TYPE_IQ4_NL: fn = mm_iq4_nl; break;
    case OKV_TYPE_F16: fn = mm_f16; break;
    case OKV_TYPE_BF16: fn = mm_bf16; break;
    case OKV_TYPE_F32: fn = mm_f32; break;
    default: OKV_ASSERT(!"cpu_matmul: not a weight type"); return;
    }
    OKV_ASSERT(okv_type_block_elems(wtype) == 1 || n_in % OKV_QK == 0);
    const int needs_act = wtype != OKV_TYPE_F32;
    OKV_ASSERT(!needs_act || (n_tok <= st->max_tok && n_in <= st->max_in));
    const size_t astride = CPU_FN(cpu_act_row_bytes)(n_in);
    const size_t wrow = okv_type_row_bytes(wtype, n_in);
    const int n_blocks = (n_out + MM_ROW_BLOCK - 1) / MM_ROW_BLOCK;
    uint8_t *act = st->act;
#pragma omp parallel num_threads(st->n_threads)
    {
        if (needs_act) {
#pragma omp for schedule(static)
            for (int t = 0; t < n_tok; t++)
                act_prepare(act + (size_t)t * astride, x + (size_t)t * n_in, n_in, wtype);
        }
#pragma omp for schedule(static)
        for (int rb = 0; rb < n_blocks; rb++) {
            const int r0 = rb * MM_ROW_BLOCK, r1 = OKV_MIN(n_out, r0 + MM_ROW_BLOCK);
            fn(y, w, wrow, x, act, astride, n_tok, n_in, n_out, r0, r1);
        }
    }
}
