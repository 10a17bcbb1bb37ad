/* ref_kquant.c — the plain-C reference of the K-quants: their bit layouts, dequantization, the
 * Q8_K activation quantizer, the K-quant x Q8_K dot product and the weight quantizers, all with
 * llama.cpp's numerics. tests/unit/test_kernels.c checks hand-built blocks, round trips and the
 * dot product against the dequantized f32 one, and holds the CPU paths to these.
 *
 * Bit layouts (little-endian, packed as in GGUF). A super-block holds 256 elements e = 0..255;
 * "sub-block" j covers elements [16j, 16j+16) (Q2_K, Q3_K, Q6_K) or [32j, 32j+32) (Q4_K, Q5_K).
 *
 *   Q2_K (84 bytes): uint8 scales[16]; uint8 qs[64]; f16 d; f16 dmin
 *     scales[j]   low nibble: scale s_j, high nibble: min m_j of 16-element sub-block j
 *     qs[32h + l] bits 2k..2k+1 (k = 0..3): q of element 128h + 32k + l (h = 0..1, l = 0..31)
 *     x = d * s_j * q - dmin * m_j,  q in 0..3
 *   Q3_K (110 bytes): uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d
 *     hmask[l] bit b: bit 2 of q of element 32b + l (l = 0..31, b = 0..7)
 *     qs: the low two bits of q, packed as in Q2_K
 *     scales: sixteen 6-bit values; bits 0-3 of value j are the low (j < 8) or high (j >= 8)
 *       nibble of scales[j % 8], bits 4-5 are bits 2(j/4)..2(j/4)+1 of scales[8 + j % 4]
 *     x = d * (value_j - 32) * (q - 4),  q in 0..7
 *   Q4_K (144 bytes): f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]
 *     scales: eight 6-bit scales s_j and eight 6-bit mins m_j of the 32-element sub-blocks:
 *       j < 4:  s_j = scales[j] & 63, m_j = scales[j+4] & 63
 *       j >= 4: s_j = (scales[j+4] & 15) | (scales[j-4] >> 6) << 4,
 *               m_j = (scales[j+4] >> 4) | (scales[j] >> 6) << 4
 *     qs[32g + l] low nibble: q of element 64g + l, high nibble: of element 64g + 32 + l
 *     x = d * s_j * q - dmin * m_j,  q in 0..15
 *   Q5_K (176 bytes): f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]
 *     scales and qs (the low four bits of q) as in Q4_K; qh[l] bit b: bit 4 of q of element
 *     32b + l;  x = d * s_j * q - dmin * m_j,  q in 0..31
 *   Q6_K (210 bytes): uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d
 *     ql[64h + l] (l = 0..63) low nibble: bits 0-3 of q of element 128h + l, high nibble: of
 *       element 128h + 64 + l
 *     qh[32h + l] (l = 0..31) bits 2k..2k+1: bits 4-5 of q of element 128h + 32k + l
 *     x = d * scales[j] * (q - 32),  q in 0..63
 *   Q8_K (292 bytes): f32 d; int8 qs[256]; int16 bsums[16]
 *     x = d * qs[e]; bsums[j] = sum of qs[16j .. 16j+15] */
#include "backend.h"
#include "kquant.h"
#include "common.h"

#include <math.h>
#include <string.h>

/* Round to nearest, ties to even, for |f| < 2^22 (ggml's nearest_int): adding 1.5 * 2^23 leaves
 * the rounded integer in the low mantissa bits. */
static inline int nearest_int(float f) {
    const float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- dequantization ---------------------------------------------------------------------------- */

static void dequant_q2_k(float *y, const okv_block_q2_k *b) {
    const float d = okv_fp16_to_f32(b->d), dmin = okv_fp16_to_f32(b->dmin);
    for (int e = 0; e < OKV_QK_K; e++) {
        const int j = e / 16, h = e / 128, k = (e / 32) % 4, l = e % 32;
        const int q = (b->qs[32 * h + l] >> (2 * k)) & 3;
        y[e] = d * (float)(b->scales[j] & 15) * (float)q - dmin * (float)(b->scales[j] >> 4);
    }
}

static void dequant_q3_k(float *y, const okv_block_q3_k *b) {
    const float d = okv_fp16_to_f32(b->d);
    for (int e = 0; e < OKV_QK_K; e++) {
        const int h = e / 128, k = (e / 32) % 4, l = e % 32;
        const int q = ((b->qs[32 * h + l] >> (2 * k)) & 3) | (((b->hmask[l] >> (e / 32)) & 1) << 2);
        y[e] = d * (float)okv_kquant_q3_scale(b->scales, e / 16) * (float)(q - 4);
    }
}

/* Q4_K and Q5_K share everything but bit 4 of q (qh == NULL for Q4_K). */
static void dequant_q45_k(float *y, uint16_t dh, uint16_t dminh, const uint8_t *scales,
                          const uint8_t *qh, const uint8_t *qs) {
    const float d = okv_fp16_to_f32(dh), dmin = okv_fp16_to_f32(dminh);
    for (int e = 0; e < OKV_QK_K; e++) {
        const int g = e / 64, l = e % 32;
        int q = (e % 64 < 32 ? qs[32 * g + l] & 15 : qs[32 * g + l] >> 4);
        if (qh) q |= ((qh[l] >> (e / 32)) & 1) << 4;
        int sc, m;
        okv_kquant_scale_min(scales, e / 32, &sc, &m);
        y[e] = d * (float)sc * (float)q - dmin * (float)m;
    }
}

static void dequant_q6_k(float *y, const okv_block_q6_k *b) {
    const float d = okv_fp16_to_f32(b->d);
    for (int e = 0; e < OKV_QK_K; e++) {
        const int h = e / 128, r = e % 128;
        const int lo = r < 64 ? b->ql[64 * h + r] & 15 : b->ql[64 * h + r - 64] >> 4;
        const int hi = (b->qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        y[e] = d * (float)b->scales[e / 16] * (float)((lo | (hi << 4)) - 32);
    }
}

void okv_kquant_dequant_row_ref(float *y, const void *x, okv_type t, int64_t n) {
    OKV_ASSERT(n % OKV_QK_K == 0);
    const size_t bs = okv_type_block_bytes(t);
    for (int64_t i = 0; i < n / OKV_QK_K; i++) {
        const void *b = (const uint8_t *)x + (size_t)i * bs;
        float *yb = y + i * OKV_QK_K;
        switch (t) {
        case OKV_TYPE_Q2_K: dequant_q2_k(yb, b); break;
        case OKV_TYPE_Q3_K: dequant_q3_k(yb, b); break;
        case OKV_TYPE_Q4_K: {
            const okv_block_q4_k *q = b;
            dequant_q45_k(yb, q->d, q->dmin, q->scales, NULL, q->qs);
            break;
        }
        case OKV_TYPE_Q5_K: {
            const okv_block_q5_k *q = b;
            dequant_q45_k(yb, q->d, q->dmin, q->scales, q->qh, q->qs);
            break;
        }
        case OKV_TYPE_Q6_K: dequant_q6_k(yb, b); break;
        case OKV_TYPE_Q8_K: {
            const okv_block_q8_k *q = b;
            for (int e = 0; e < OKV_QK_K; e++) yb[e] = q->d * (float)q->qs[e];
            break;
        }
        default: OKV_ASSERT(!"okv_kquant_dequant_row_ref: not a K-quant");
        }
    }
}

/* ---- Q8_K activations -------------------------------------------------------------------------- */

/* llama.cpp's quantize_row_q8_K (what its x86 CPU backend runs): the scale is keyed on the
 * signed element of largest magnitude (the first such), iscale = -127/max, so that element
 * becomes -127 and d = 1/iscale may be negative. */
static void quant_q8_k(okv_block_q8_k *b, const float *x) {
    float max = 0.0f, amax = 0.0f;
    for (int e = 0; e < OKV_QK_K; e++)
        if (fabsf(x[e]) > amax) {
            amax = fabsf(x[e]);
            max = x[e];
        }
    memset(b, 0, sizeof *b);
    if (amax == 0.0f) return;
    const float iscale = -127.0f / max;
    for (int e = 0; e < OKV_QK_K; e++) b->qs[e] = (int8_t)OKV_MIN(127, nearest_int(iscale * x[e]));
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += b->qs[16 * j + l];
        b->bsums[j] = (int16_t)s;
    }
    b->d = 1.0f / iscale;
}

/* ---- weight quantizers (llama.cpp's reference algorithms, without an importance matrix) --------- */

/* Scale and min for n values in 0..nmax, minimising the weighted error over a sweep of trial
 * scales (ggml's make_qkx2_quants). Returns the scale; *neg_min gets -min (>= 0). */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                           float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    uint8_t Laux[32];
    for (int i = 1; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)OKV_MAX(0, OKV_MIN(nmax, nearest_int(iscale * (x[i] - min))));
        const float diff = scale * L[i] + min - x[i];
        best += w[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = OKV_MAX(0, OKV_MIN(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

static void quant_q2_k(okv_block_q2_k *b, const float *x) {
    uint8_t L[OKV_QK_K];
    float w[16], mins[16], scales[16], max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
        scales[j] = fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, 1);
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    memset(b->scales, 0, sizeof b->scales);
    b->d = b->dmin = okv_f32_to_fp16(0.0f);
    if (max_scale > 0) {
        const float is = 15.0f / max_scale;
        for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)nearest_int(is * scales[j]);
        b->d = okv_f32_to_fp16(max_scale / 15.0f);
    }
    if (max_min > 0) {
        const float is = 15.0f / max_min;
        for (int j = 0; j < 16; j++) b->scales[j] |= (uint8_t)(nearest_int(is * mins[j]) << 4);
        b->dmin = okv_f32_to_fp16(max_min / 15.0f);
    }
    for (int j = 0; j < 16; j++) {
        const float d = okv_fp16_to_f32(b->d) * (b->scales[j] & 15);
        if (d == 0.0f) continue;
        const float dm = okv_fp16_to_f32(b->dmin) * (b->scales[j] >> 4);
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (uint8_t)OKV_MAX(0, OKV_MIN(3, nearest_int((x[16 * j + l] + dm) / d)));
    }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * h + l] = (uint8_t)(L[128 * h + l] | (L[128 * h + l + 32] << 2) |
                                          (L[128 * h + l + 64] << 4) | (L[128 * h + l + 96] << 6));
}

/* The element of largest magnitude, with its sign (the first of equals), or 0. */
static float signed_max(int n, const float *x) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    return max;
}

/* Signed levels in -nmax..nmax-1 with the weighted-least-squares scale, refined by moving one
 * level at a time (ggml's make_q3_quants with rmse). L gets level + nmax. */
static float fit_q3(int n, int nmax, const float *x, int8_t *L) {
    const float max = signed_max(n, x);
    if (fabsf(max) < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = OKV_MAX(-nmax, OKV_MIN(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                const int nl = OKV_MAX(-nmax, OKV_MIN(nmax - 1, nearest_int(x[i] * sl2 / slx)));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static void quant_q3_k(okv_block_q3_k *b, const float *x) {
    int8_t L[OKV_QK_K];
    float scales[16];
    for (int j = 0; j < 16; j++) scales[j] = fit_q3(16, 4, x + 16 * j, L + 16 * j);
    const float max_scale = signed_max(16, scales);
    memset(b->scales, 0, sizeof b->scales);
    b->d = okv_f32_to_fp16(0.0f);
    if (max_scale != 0.0f) {
        const float iscale = -32.0f / max_scale;
        for (int j = 0; j < 16; j++) {
            const int l = OKV_MAX(-32, OKV_MIN(31, (int8_t)nearest_int(iscale * scales[j]))) + 32;
            if (j < 8) b->scales[j] = (uint8_t)(l & 15);
            else b->scales[j - 8] |= (uint8_t)((l & 15) << 4);
            b->scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        b->d = okv_f32_to_fp16(1 / iscale);
    }
    for (int j = 0; j < 16; j++) {
        const float d = okv_fp16_to_f32(b->d) * (float)okv_kquant_q3_scale(b->scales, j);
        if (d == 0.0f) continue;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (int8_t)(OKV_MAX(-4, OKV_MIN(3, nearest_int(x[16 * j + l] / d))) + 4);
    }
    memset(b->hmask, 0, sizeof b->hmask);
    for (int e = 0; e < OKV_QK_K; e++)
        if (L[e] > 3) {
            b->hmask[e % 32] |= (uint8_t)(1 << (e / 32));
            L[e] -= 4;
        }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * h + l] = (uint8_t)(L[128 * h + l] | (L[128 * h + l + 32] << 2) |
                                          (L[128 * h + l + 64] << 4) | (L[128 * h + l + 96] << 6));
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): 32-element sub-blocks with 6-bit scales and mins. Writes
 * d, dmin, scales and the levels L[256]. */
static void quant_q45_k(uint16_t *dh, uint16_t *dminh, uint8_t *sc12, uint8_t *L, const float *x,
                        int nmax) {
    float w[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = nmax == 15 ? fit_scale_min(32, 15, x + 32 * j, w, L + 32 * j, &mins[j], -1.0f, 0.1f, 20, 0)
                               : fit_scale_min(32, 31, x + 32 * j, w, L + 32 * j, &mins[j], -0.5f, 0.1f, 15, 0);
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(sc12, 0, 12);
    for (int j = 0; j < 8; j++) {
        const uint8_t ls = (uint8_t)OKV_MIN(63, (uint8_t)nearest_int(inv_scale * scales[j]));
        const uint8_t lm = (uint8_t)OKV_MIN(63, (uint8_t)nearest_int(inv_min * mins[j]));
        if (j < 4) {
            sc12[j] = ls;
            sc12[j + 4] = lm;
        } else {
            sc12[j + 4] = (uint8_t)((ls & 15) | ((lm & 15) << 4));
            sc12[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc12[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *dh = okv_f32_to_fp16(max_scale / 63.0f);
    *dminh = okv_f32_to_fp16(max_min / 63.0f);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        okv_kquant_scale_min(sc12, j, &sc, &m);
        const float d = okv_fp16_to_f32(*dh) * (float)sc;
        if (d == 0.0f) continue;
        const float dm = okv_fp16_to_f32(*dminh) * (float)m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)OKV_MAX(0, OKV_MIN(nmax, nearest_int((x[32 * j + l] + dm) / d)));
    }
}

static void quant_q4_k(okv_block_q4_k *b, const float *x) {
    uint8_t L[OKV_QK_K];
    quant_q45_k(&b->d, &b->dmin, b->scales, L, x, 15);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) b->qs[32 * g + l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
}

static void quant_q5_k(okv_block_q5_k *b, const float *x) {
    uint8_t L[OKV_QK_K];
    quant_q45_k(&b->d, &b->dmin, b->scales, L, x, 31);
    memset(b->qh, 0, sizeof b->qh);
    for (int e = 0; e < OKV_QK_K; e++)
        if (L[e] > 15) b->qh[e % 32] |= (uint8_t)(1 << (e / 32));
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * g + l] = (uint8_t)((L[64 * g + l] & 15) | ((L[64 * g + 32 + l] & 15) << 4));
}

/* Signed levels in -nmax..nmax-1, the scale chosen among 19 trials by weighted least squares
 * with weights x^2 (ggml's make_qx_quants, rmse_type 1). L gets level + nmax. */
static float fit_qx(int n, int nmax, const float *x, int8_t *L) {
    const float max = signed_max(n, x);
    if (fabsf(max) < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = OKV_MAX(-nmax, OKV_MIN(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = OKV_MAX(-nmax, OKV_MIN(nmax - 1, nearest_int(iscale * x[i])));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + OKV_MAX(-nmax, OKV_MIN(nmax - 1, nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void quant_q6_k(okv_block_q6_k *b, const float *x) {
    int8_t L[OKV_QK_K];
    float scales[16];
    for (int j = 0; j < 16; j++) scales[j] = fit_qx(16, 32, x + 16 * j, L + 16 * j);
    const float max_scale = signed_max(16, scales);
    memset(b, 0, sizeof *b);
    if (fabsf(max_scale) < 1e-15f) return;
    const float iscale = -128.0f / max_scale;
    b->d = okv_f32_to_fp16(1 / iscale);
    for (int j = 0; j < 16; j++) b->scales[j] = (int8_t)OKV_MIN(127, nearest_int(iscale * scales[j]));
    for (int j = 0; j < 16; j++) {
        const float d = okv_fp16_to_f32(b->d) * b->scales[j];
        if (d == 0.0f) continue;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (int8_t)(OKV_MAX(-32, OKV_MIN(31, nearest_int(x[16 * j + l] / d))) + 32);
    }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const int8_t *Lh = L + 128 * h;
            b->ql[64 * h + l] = (uint8_t)((Lh[l] & 15) | ((Lh[l + 64] & 15) << 4));
            b->ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4));
            b->qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                          ((Lh[l + 96] >> 4) << 6));
        }
}

void okv_kquant_quant_row_ref(void *y, const float *x, okv_type t, int64_t n) {
    OKV_ASSERT(n % OKV_QK_K == 0);
    const size_t bs = okv_type_block_bytes(t);
    for (int64_t i = 0; i < n / OKV_QK_K; i++) {
        void *b = (uint8_t *)y + (size_t)i * bs;
        const float *xb = x + i * OKV_QK_K;
        switch (t) {
        case OKV_TYPE_Q2_K: quant_q2_k(b, xb); break;
        case OKV_TYPE_Q3_K: quant_q3_k(b, xb); break;
        case OKV_TYPE_Q4_K: quant_q4_k(b, xb); break;
        case OKV_TYPE_Q5_K: quant_q5_k(b, xb); break;
        case OKV_TYPE_Q6_K: quant_q6_k(b, xb); break;
        case OKV_TYPE_Q8_K: quant_q8_k(b, xb); break;
        default: OKV_ASSERT(!"okv_kquant_quant_row_ref: not a K-quant");
        }
    }
}

/* ---- dot product with Q8_K ---------------------------------------------------------------------- */

/* One super-block: the integer sum over sub-blocks of scale * (q . x) and, for the types with
 * mins, of min * (sum of x), then d*isum - dmin*msum in f32 as ggml forms them. */
static float dot_block(const void *wb, okv_type t, const okv_block_q8_k *x) {
    int isum = 0, msum = 0;
    float d, dmin = 0.0f;
    switch (t) {
    case OKV_TYPE_Q2_K: {
        const okv_block_q2_k *b = wb;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int e = 16 * j; e < 16 * j + 16; e++)
                s += x->qs[e] * ((b->qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3);
            isum += (b->scales[j] & 15) * s;
            msum += (b->scales[j] >> 4) * x->bsums[j];
        }
        d = x->d * okv_fp16_to_f32(b->d);
        dmin = x->d * okv_fp16_to_f32(b->dmin);
        break;
    }
    case OKV_TYPE_Q3_K: {
        const okv_block_q3_k *b = wb;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int e = 16 * j; e < 16 * j + 16; e++) {
                const int q = (b->qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
                s += x->qs[e] * (q - ((b->hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4));
            }
            isum += okv_kquant_q3_scale(b->scales, j) * s;
        }
        d = okv_fp16_to_f32(b->d) * x->d;
        break;
    }
    case OKV_TYPE_Q4_K:
    case OKV_TYPE_Q5_K: {
        const int five = t == OKV_TYPE_Q5_K;
        const okv_block_q4_k *b4 = wb;
        const okv_block_q5_k *b5 = wb;
        const uint8_t *scales = five ? b5->scales : b4->scales, *qs = five ? b5->qs : b4->qs;
        for (int j = 0; j < 8; j++) {
            int sc, m, s = 0;
            okv_kquant_scale_min(scales, j, &sc, &m);
            for (int e = 32 * j; e < 32 * j + 32; e++) {
                int q = j % 2 == 0 ? qs[32 * (e / 64) + e % 32] & 15 : qs[32 * (e / 64) + e % 32] >> 4;
                if (five) q += ((b5->qh[e % 32] >> j) & 1) << 4;
                s += x->qs[e] * q;
            }
            isum += sc * s;
            msum += m * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
        }
        d = okv_fp16_to_f32(five ? b5->d : b4->d) * x->d;
        dmin = okv_fp16_to_f32(five ? b5->dmin : b4->dmin) * x->d;
        break;
    }
    case OKV_TYPE_Q6_K: {
        const okv_block_q6_k *b = wb;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int e = 16 * j; e < 16 * j + 16; e++) {
                const int h = e / 128, r = e % 128;
                const int lo = r < 64 ? b->ql[64 * h + r] & 15 : b->ql[64 * h + r - 64] >> 4;
                const int hi = (b->qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
                s += x->qs[e] * ((lo | (hi << 4)) - 32);
            }
            isum += b->scales[j] * s;
        }
        d = okv_fp16_to_f32(b->d) * x->d;
        break;
    }
    default: OKV_ASSERT(!"okv_kquant_vec_dot_ref: not a K-quant weight type"); return 0.0f;
    }
    return d * (float)isum - dmin * (float)msum;
}

float okv_kquant_vec_dot_ref(const void *w, okv_type t, const void *xq, int64_t n) {
    OKV_ASSERT(n % OKV_QK_K == 0);
    const size_t bs = okv_type_block_bytes(t);
    double sum = 0.0;
    for (int64_t i = 0; i < n / OKV_QK_K; i++)
        sum += (double)dot_block((const uint8_t *)w + (size_t)i * bs, t, (const okv_block_q8_k *)xq + i);
    return (float)sum;
}

/* ---- block checks -------------------------------------------------------------------------------- */

static inline bool f16_finite(uint16_t h) { return (h & 0x7c00) != 0x7c00; }

int64_t okv_kquant_find_bad_block(const void *data, okv_type t, int64_t n_blocks) {
    const size_t bs = okv_type_block_bytes(t);
    for (int64_t i = 0; i < n_blocks; i++) {
        const void *b = (const uint8_t *)data + (size_t)i * bs;
        uint16_t d, dmin = 0;
        switch (t) {
        case OKV_TYPE_Q2_K:
            d = ((const okv_block_q2_k *)b)->d;
            dmin = ((const okv_block_q2_k *)b)->dmin;
            break;
        case OKV_TYPE_Q3_K: d = ((const okv_block_q3_k *)b)->d; break;
        case OKV_TYPE_Q4_K:
            d = ((const okv_block_q4_k *)b)->d;
            dmin = ((const okv_block_q4_k *)b)->dmin;
            break;
        case OKV_TYPE_Q5_K:
            d = ((const okv_block_q5_k *)b)->d;
            dmin = ((const okv_block_q5_k *)b)->dmin;
            break;
        case OKV_TYPE_Q6_K: d = ((const okv_block_q6_k *)b)->d; break;
        default: OKV_ASSERT(!"okv_kquant_find_bad_block: not a K-quant weight type"); return -1;
        }
        if (!f16_finite(d) || !f16_finite(dmin)) return i;
    }
    return -1;
}
