/* ref.c — the plain-C reference of every op in backend.h, the reference backend built from them,
 * and top-k selection. Single-threaded and written to be obviously right; tests/unit/test_kernels.c
 * holds the CPU backend to these within stated tolerances. */
#include "backend.h"
#include "kquant.h"
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- quantization ---------------------------------------------------------------------------- */

/* Activation quantization exactly as ggml's x86 quantize_row_q8_0/q8_1, which is what llama.cpp
 * runs on these CPUs: d = amax/127 stored as f16, multiplier 127/amax (not 1/d), round half to
 * even. s = d * sum(q) with the unrounded d, which is returned in *d_f32. Returns the sum of q. */
static int quant_block_q8(int8_t *q, uint16_t *d_out, float *d_f32, const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < OKV_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    *d_out = okv_f32_to_fp16(d);
    *d_f32 = d;
    int sum = 0;
    for (int j = 0; j < OKV_QK; j++) {
        q[j] = (int8_t)rintf(x[j] * id);
        sum += q[j];
    }
    return sum;
}

/* Weight formats follow ggml's quantize_row_q4_0_ref / q4_1_ref (used when converting checkpoints
 * and to make test weights). */
static void quant_block_q4_0(okv_block_q4_0 *b, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < OKV_QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = okv_f32_to_fp16(d);
    for (int j = 0; j < OKV_QK / 2; j++) {
        int lo = OKV_MIN(15, (int8_t)(x[j] * id + 8.5f));
        int hi = OKV_MIN(15, (int8_t)(x[j + OKV_QK / 2] * id + 8.5f));
        b->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

static void quant_block_q4_1(okv_block_q4_1 *b, const float *x) {
    float min = x[0], max = x[0];
    for (int j = 1; j < OKV_QK; j++) {
        min = fminf(min, x[j]);
        max = fmaxf(max, x[j]);
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = okv_f32_to_fp16(d);
    b->m = okv_f32_to_fp16(min);
    for (int j = 0; j < OKV_QK / 2; j++) {
        int lo = OKV_MIN(15, (int8_t)((x[j] - min) * id + 0.5f));
        int hi = OKV_MIN(15, (int8_t)((x[j + OKV_QK / 2] - min) * id + 0.5f));
        b->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

/* ggml's quantize_row_q5_0_ref / q5_1_ref: the q4 rules with 32 levels; bit 4 of each code goes
 * to bit j of qh. */
static void quant_block_q5_0(okv_block_q5_0 *b, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < OKV_QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = okv_f32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < OKV_QK / 2; j++) {
        const int lo = OKV_MIN(31, (int8_t)(x[j] * id + 16.5f));
        const int hi = OKV_MIN(31, (int8_t)(x[j + OKV_QK / 2] * id + 16.5f));
        b->qs[j] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + OKV_QK / 2);
    }
    memcpy(b->qh, &qh, 4);
}

static void quant_block_q5_1(okv_block_q5_1 *b, const float *x) {
    float min = x[0], max = x[0];
    for (int j = 1; j < OKV_QK; j++) {
        min = fminf(min, x[j]);
        max = fmaxf(max, x[j]);
    }
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = okv_f32_to_fp16(d);
    b->m = okv_f32_to_fp16(min);
    uint32_t qh = 0;
    for (int j = 0; j < OKV_QK / 2; j++) {
        const int lo = (uint8_t)((x[j] - min) * id + 0.5f);
        const int hi = (uint8_t)((x[j + OKV_QK / 2] - min) * id + 0.5f);
        b->qs[j] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
        qh |= (uint32_t)((lo >> 4) & 1) << j | (uint32_t)((hi >> 4) & 1) << (j + OKV_QK / 2);
    }
    memcpy(b->qh, &qh, 4);
}

/* The index of the okv_iq4nl_values entry nearest to v (the table ascends; ties go up). */
static int iq4nl_nearest(float v) {
    const int8_t *t = okv_iq4nl_values;
    if (v <= t[0]) return 0;
    if (v >= t[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < t[mid]) hi = mid;
        else lo = mid;
    }
    return v - t[lo] < t[hi] - v ? lo : hi;
}

/* sum w*q*x and sum w*q^2 over the block for codes chosen with multiplier id (weights w = x^2,
 * as ggml's IQ4_NL quantizer uses without an importance matrix); codes go to l when given. */
static void iq4nl_fit(const float *x, float id, uint8_t *l, float *sqx, float *sq2) {
    float a = 0.0f, b = 0.0f;
    for (int j = 0; j < OKV_QK; j++) {
        const int k = iq4nl_nearest(id * x[j]);
        const float q = okv_iq4nl_values[k], w = x[j] * x[j];
        a += w * q * x[j];
        b += w * q * q;
        if (l) l[j] = (uint8_t)k;
    }
    *sqx = a;
    *sq2 = b;
}

/* ggml's IQ4_NL search without an importance matrix: a first least-squares scale from the
 * multiplier 127/max (max the element of largest magnitude), then 15 multipliers around
 * -127/max, keeping the scale of the best fit; the codes are the nearest table entries under
 * the kept scale (all index 8, the entry nearest 0, for a zero block). */
static void quant_block_iq4_nl(okv_block_iq4_nl *b, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < OKV_QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const int8_t v0 = okv_iq4nl_values[0];
    float d = 0.0f, sqx, sq2;
    if (amax >= 1e-15f) {
        iq4nl_fit(x, (float)-v0 / max, NULL, &sqx, &sq2);
        d = sqx / sq2;
        float best = d * sqx;
        for (int t = -7; t <= 7; t++) {
            iq4nl_fit(x, (float)(t + v0) / max, NULL, &sqx, &sq2);
            if (sq2 > 0 && sqx * sqx > best * sq2) {
                d = sqx / sq2;
                best = d * sqx;
            }
        }
    }
    b->d = okv_f32_to_fp16(d);
    uint8_t l[OKV_QK];
    iq4nl_fit(x, d != 0.0f ? 1.0f / d : 0.0f, l, &sqx, &sq2);
    for (int j = 0; j < OKV_QK / 2; j++) b->qs[j] = (uint8_t)(l[j] | (l[j + OKV_QK / 2] << 4));
}

void okv_quant_row_ref(void *y, const float *x, okv_type t, int64_t n) {
    if (okv_type_is_kquant(t) || t == OKV_TYPE_Q8_K) {
        okv_kquant_quant_row_ref(y, x, t, n);
        return;
    }
    const int bs = okv_type_block_elems(t);
    OKV_ASSERT(bs > 0 && n % bs == 0);
    const int64_t nb = n / bs;
    switch (t) {
    case OKV_TYPE_F32: memcpy(y, x, (size_t)n * sizeof(float)); break;
    case OKV_TYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i] = okv_f32_to_fp16(x[i]);
        break;
    case OKV_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i] = okv_f32_to_bf16(x[i]);
        break;
    case OKV_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            okv_block_q8_0 *blk = (okv_block_q8_0 *)y + b;
            float d;
            quant_block_q8(blk->qs, &blk->d, &d, x + b * OKV_QK);
        }
        break;
    case OKV_TYPE_Q8_1:
        for (int64_t b = 0; b < nb; b++) {
            okv_block_q8_1 *blk = (okv_block_q8_1 *)y + b;
            float d;
            const int sum = quant_block_q8(blk->qs, &blk->d, &d, x + b * OKV_QK);
            blk->s = okv_f32_to_fp16((float)sum * d);
        }
        break;
    case OKV_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++) quant_block_q4_0((okv_block_q4_0 *)y + b, x + b * OKV_QK);
        break;
    case OKV_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++) quant_block_q4_1((okv_block_q4_1 *)y + b, x + b * OKV_QK);
        break;
    case OKV_TYPE_Q5_0:
        for (int64_t b = 0; b < nb; b++) quant_block_q5_0((okv_block_q5_0 *)y + b, x + b * OKV_QK);
        break;
    case OKV_TYPE_Q5_1:
        for (int64_t b = 0; b < nb; b++) quant_block_q5_1((okv_block_q5_1 *)y + b, x + b * OKV_QK);
        break;
    case OKV_TYPE_IQ4_NL:
        for (int64_t b = 0; b < nb; b++) quant_block_iq4_nl((okv_block_iq4_nl *)y + b, x + b * OKV_QK);
        break;
    default: OKV_ASSERT(!"okv_quant_row_ref: unsupported type");
    }
}

/* Code j (0..31) of a Q5_0/Q5_1 block: its nibble in qs and bit j of qh. */
static inline int q5_code(const uint8_t *qs, const uint8_t *qh, int j) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const int nib = j < OKV_QK / 2 ? qs[j] & 15 : qs[j - OKV_QK / 2] >> 4;
    return nib | (int)((h >> j) & 1) << 4;
}

/* Code j (0..15 index into okv_iq4nl_values) of an IQ4_NL block. */
static inline int iq4nl_code(const uint8_t *qs, int j) {
    return j < OKV_QK / 2 ? qs[j] & 15 : qs[j - OKV_QK / 2] >> 4;
}

void okv_dequant_row_ref(float *y, const void *x, okv_type t, int64_t n) {
    if (okv_type_is_kquant(t) || t == OKV_TYPE_Q8_K) {
        okv_kquant_dequant_row_ref(y, x, t, n);
        return;
    }
    const int bs = okv_type_block_elems(t);
    OKV_ASSERT(bs > 0 && n % bs == 0);
    const int64_t nb = n / bs;
    const int h = OKV_QK / 2;
    switch (t) {
    case OKV_TYPE_F32: memcpy(y, x, (size_t)n * sizeof(float)); break;
    case OKV_TYPE_F16:
        for (int64_t i = 0; i < n; i++) y[i] = okv_fp16_to_f32(((const uint16_t *)x)[i]);
        break;
    case OKV_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) y[i] = okv_bf16_to_f32(((const uint16_t *)x)[i]);
        break;
    case OKV_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q4_0 *blk = (const okv_block_q4_0 *)x + b;
            const float d = okv_fp16_to_f32(blk->d);
            for (int j = 0; j < h; j++) {
                y[b * OKV_QK + j] = (float)((blk->qs[j] & 15) - 8) * d;
                y[b * OKV_QK + j + h] = (float)((blk->qs[j] >> 4) - 8) * d;
            }
        }
        break;
    case OKV_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q4_1 *blk = (const okv_block_q4_1 *)x + b;
            const float d = okv_fp16_to_f32(blk->d), m = okv_fp16_to_f32(blk->m);
            for (int j = 0; j < h; j++) {
                y[b * OKV_QK + j] = (float)(blk->qs[j] & 15) * d + m;
                y[b * OKV_QK + j + h] = (float)(blk->qs[j] >> 4) * d + m;
            }
        }
        break;
    case OKV_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q8_0 *blk = (const okv_block_q8_0 *)x + b;
            const float d = okv_fp16_to_f32(blk->d);
            for (int j = 0; j < OKV_QK; j++) y[b * OKV_QK + j] = (float)blk->qs[j] * d;
        }
        break;
    case OKV_TYPE_Q8_1:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q8_1 *blk = (const okv_block_q8_1 *)x + b;
            const float d = okv_fp16_to_f32(blk->d);
            for (int j = 0; j < OKV_QK; j++) y[b * OKV_QK + j] = (float)blk->qs[j] * d;
        }
        break;
    case OKV_TYPE_Q5_0:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q5_0 *blk = (const okv_block_q5_0 *)x + b;
            const float d = okv_fp16_to_f32(blk->d);
            for (int j = 0; j < OKV_QK; j++) y[b * OKV_QK + j] = (float)(q5_code(blk->qs, blk->qh, j) - 16) * d;
        }
        break;
    case OKV_TYPE_Q5_1:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q5_1 *blk = (const okv_block_q5_1 *)x + b;
            const float d = okv_fp16_to_f32(blk->d), m = okv_fp16_to_f32(blk->m);
            for (int j = 0; j < OKV_QK; j++) y[b * OKV_QK + j] = (float)q5_code(blk->qs, blk->qh, j) * d + m;
        }
        break;
    case OKV_TYPE_IQ4_NL:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_iq4_nl *blk = (const okv_block_iq4_nl *)x + b;
            const float d = okv_fp16_to_f32(blk->d);
            for (int j = 0; j < OKV_QK; j++) y[b * OKV_QK + j] = (float)okv_iq4nl_values[iq4nl_code(blk->qs, j)] * d;
        }
        break;
    default: OKV_ASSERT(!"okv_dequant_row_ref: unsupported type");
    }
}

okv_type okv_act_type_for(okv_type wtype) {
    if (okv_type_is_kquant(wtype)) return OKV_TYPE_Q8_K;
    switch (wtype) {
    case OKV_TYPE_Q4_1:
    case OKV_TYPE_Q5_1: return OKV_TYPE_Q8_1;
    case OKV_TYPE_Q4_0:
    case OKV_TYPE_Q5_0:
    case OKV_TYPE_IQ4_NL:
    case OKV_TYPE_Q8_0: return OKV_TYPE_Q8_0;
    case OKV_TYPE_F16: return OKV_TYPE_F16;
    case OKV_TYPE_BF16: return OKV_TYPE_BF16;
    case OKV_TYPE_F32: return OKV_TYPE_F32;
    default: OKV_ASSERT(!"okv_act_type_for: not a weight type"); return OKV_TYPE_F32;
    }
}

/* Per block the integer dot is exact; its scale d_w*d_x is formed in f32 from the f16 scales
 * (as ggml does) and the block terms are summed in double. */
float okv_vec_dot_ref(const void *w, okv_type wtype, const void *xq, int64_t n) {
    if (okv_type_is_kquant(wtype)) return okv_kquant_vec_dot_ref(w, wtype, xq, n);
    const int64_t nb = n / OKV_QK;
    const int h = OKV_QK / 2;
    double sum = 0.0;
    switch (wtype) {
    case OKV_TYPE_F32:
        for (int64_t i = 0; i < n; i++) sum += (double)((const float *)w)[i] * ((const float *)xq)[i];
        break;
    case OKV_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            sum += (double)okv_fp16_to_f32(((const uint16_t *)w)[i]) *
                   okv_fp16_to_f32(((const uint16_t *)xq)[i]);
        break;
    case OKV_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            sum += (double)okv_bf16_to_f32(((const uint16_t *)w)[i]) *
                   okv_bf16_to_f32(((const uint16_t *)xq)[i]);
        break;
    case OKV_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q4_0 *wb = (const okv_block_q4_0 *)w + b;
            const okv_block_q8_0 *xb = (const okv_block_q8_0 *)xq + b;
            int isum = 0;
            for (int j = 0; j < h; j++)
                isum += ((wb->qs[j] & 15) - 8) * xb->qs[j] + ((wb->qs[j] >> 4) - 8) * xb->qs[j + h];
            sum += (double)(okv_fp16_to_f32(wb->d) * okv_fp16_to_f32(xb->d) * (float)isum);
        }
        break;
    case OKV_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q4_1 *wb = (const okv_block_q4_1 *)w + b;
            const okv_block_q8_1 *xb = (const okv_block_q8_1 *)xq + b;
            int isum = 0;
            for (int j = 0; j < h; j++)
                isum += (wb->qs[j] & 15) * xb->qs[j] + (wb->qs[j] >> 4) * xb->qs[j + h];
            sum += (double)(okv_fp16_to_f32(wb->d) * okv_fp16_to_f32(xb->d) * (float)isum);
            sum += (double)(okv_fp16_to_f32(wb->m) * okv_fp16_to_f32(xb->s));
        }
        break;
    case OKV_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q8_0 *wb = (const okv_block_q8_0 *)w + b;
            const okv_block_q8_0 *xb = (const okv_block_q8_0 *)xq + b;
            int isum = 0;
            for (int j = 0; j < OKV_QK; j++) isum += wb->qs[j] * xb->qs[j];
            sum += (double)(okv_fp16_to_f32(wb->d) * okv_fp16_to_f32(xb->d) * (float)isum);
        }
        break;
    case OKV_TYPE_Q5_0:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q5_0 *wb = (const okv_block_q5_0 *)w + b;
            const okv_block_q8_0 *xb = (const okv_block_q8_0 *)xq + b;
            int isum = 0;
            for (int j = 0; j < OKV_QK; j++) isum += (q5_code(wb->qs, wb->qh, j) - 16) * xb->qs[j];
            sum += (double)(okv_fp16_to_f32(wb->d) * okv_fp16_to_f32(xb->d) * (float)isum);
        }
        break;
    case OKV_TYPE_Q5_1:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_q5_1 *wb = (const okv_block_q5_1 *)w + b;
            const okv_block_q8_1 *xb = (const okv_block_q8_1 *)xq + b;
            int isum = 0;
            for (int j = 0; j < OKV_QK; j++) isum += q5_code(wb->qs, wb->qh, j) * xb->qs[j];
            sum += (double)(okv_fp16_to_f32(wb->d) * okv_fp16_to_f32(xb->d) * (float)isum);
            sum += (double)(okv_fp16_to_f32(wb->m) * okv_fp16_to_f32(xb->s));
        }
        break;
    case OKV_TYPE_IQ4_NL:
        for (int64_t b = 0; b < nb; b++) {
            const okv_block_iq4_nl *wb = (const okv_block_iq4_nl *)w + b;
            const okv_block_q8_0 *xb = (const okv_block_q8_0 *)xq + b;
            int isum = 0;
            for (int j = 0; j < OKV_QK; j++) isum += okv_iq4nl_values[iq4nl_code(wb->qs, j)] * xb->qs[j];
            sum += (double)(okv_fp16_to_f32(wb->d) * okv_fp16_to_f32(xb->d) * (float)isum);
        }
        break;
    default: OKV_ASSERT(!"okv_vec_dot_ref: not a weight type");
    }
    return (float)sum;
}

/* ---- dense ops ------------------------------------------------------------------------------- */

void okv_matmul_ref(float *y, const void *w, okv_type wtype, const float *x, int n_tok, int n_in,
                    int n_out) {
    const okv_type at = okv_act_type_for(wtype);
    const size_t wrow = okv_type_row_bytes(wtype, n_in);
    void *xq = malloc(okv_type_row_bytes(at, n_in));
    OKV_ASSERT(xq != NULL);
    for (int t = 0; t < n_tok; t++) {
        okv_quant_row_ref(xq, x + (int64_t)t * n_in, at, n_in);
        for (int o = 0; o < n_out; o++)
            y[(int64_t)t * n_out + o] =
                okv_vec_dot_ref((const uint8_t *)w + (size_t)o * wrow, wtype, xq, n_in);
    }
    free(xq);
}

/* As ggml: squares formed in f32, summed in double; the weight multiplies the normalised value. */
void okv_rmsnorm_ref(float *y, const float *x, const float *w, int n_tok, int dim, float eps) {
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (int64_t)t * dim;
        float *yt = y + (int64_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)(xt[i] * xt[i]);
        const float mean = (float)(ss / dim);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int i = 0; i < dim; i++) yt[i] = (xt[i] * scale) * w[i];
    }
}

void okv_rope_ref(float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
                  const float *inv_freq, int n_freq) {
    OKV_ASSERT(2 * n_freq <= head_dim);
    for (int t = 0; t < n_tok; t++) {
        for (int i = 0; i < n_freq; i++) {
            const float theta = (float)pos[t] * inv_freq[i];
            const float c = cosf(theta), s = sinf(theta);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((int64_t)t * n_heads + h) * head_dim + 2 * i;
                const float a = v[0], b = v[1];
                v[0] = a * c - b * s;
                v[1] = a * s + b * c;
            }
        }
    }
}

void okv_swiglu_ref(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void okv_add_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void okv_embed_ref(float *out, const void *table, okv_type type, const int32_t *ids, int n_tok,
                   int dim) {
    const size_t row = okv_type_row_bytes(type, dim);
    for (int t = 0; t < n_tok; t++)
        okv_dequant_row_ref(out + (int64_t)t * dim, (const uint8_t *)table + (size_t)ids[t] * row,
                            type, dim);
}

void okv_kv_store_ref(void *dst, okv_type dst_type, int64_t dst_stride, const int32_t *dst_rows,
                      const float *src, int n_tok, int row_elems) {
    OKV_ASSERT(okv_kv_type_ok(dst_type) && dst_stride % okv_type_block_elems(dst_type) == 0);
    for (int t = 0; t < n_tok; t++) {
        const size_t off = okv_type_row_bytes(dst_type, (int64_t)dst_rows[t] * dst_stride);
        okv_quant_row_ref((uint8_t *)dst + off, src + (int64_t)t * row_elems, dst_type, row_elems);
    }
}

/* ---- attention ------------------------------------------------------------------------------- */

/* Row r (a cache row id) of KV head h of view kv, K when which == 0 else V, as f32. */
static void kv_row_f32(float *out, const okv_kv_view *kv, int which, int64_t r, int h, int hd) {
    const size_t off = okv_type_row_bytes(kv->type, r * kv->stride + (int64_t)h * hd);
    okv_dequant_row_ref(out, (const uint8_t *)(which == 0 ? kv->k : kv->v) + off, kv->type, hd);
}

static int64_t view_row(const okv_kv_view *kv, int j) { return kv->idx ? kv->idx[j] : j; }

static float logit_ref(const float *q, const float *k, int hd, float scale) {
    double dot = 0.0;
    for (int d = 0; d < hd; d++) dot += (double)q[d] * k[d];
    return scale * (float)dot;
}

/* A q8_0 K row's logit as llama.cpp computes it (ggml_vec_dot_q8_0_q8_0, which its attention uses
 * with the query rounded to q8_0): per 32-block the integer dot times f16(d_q) * f16(d_k) (a
 * product exact in f32), added in block order with one fused multiply-add each. The CPU paths
 * compute the same expression, so they equal this bit for bit. */
static float q8_logit_ref(const okv_block_q8_0 *q, const okv_block_q8_0 *k, int hd, float scale) {
    float acc = 0.0f;
    for (int b = 0; b < hd / OKV_QK; b++) {
        int isum = 0;
        for (int j = 0; j < OKV_QK; j++) isum += q[b].qs[j] * k[b].qs[j];
        acc = fmaf((float)isum, okv_fp16_to_f32(q[b].d) * okv_fp16_to_f32(k[b].d), acc);
    }
    return scale * acc;
}

/* Logit of query head qh (qq: the same head rounded to q8_0) against K row r of KV head kvh. */
static float kv_logit_ref(const float *qh, const okv_block_q8_0 *qq, const okv_kv_view *kv, int64_t r,
                          int kvh, int hd, float scale, float *buf) {
    const size_t off = okv_type_row_bytes(kv->type, r * kv->stride + (int64_t)kvh * hd);
    if (kv->type == OKV_TYPE_Q8_0)
        return q8_logit_ref(qq, (const okv_block_q8_0 *)((const uint8_t *)kv->k + off), hd, scale);
    if (kv->type == OKV_TYPE_Q4_0) { /* ggml_vec_dot_q4_0_q8_0: the same sums as its q8_0 form */
        okv_block_q8_0 k8[512 / OKV_QK];
        OKV_ASSERT(hd <= 512);
        okv_q4_0_as_q8_0(k8, (const okv_block_q4_0 *)((const uint8_t *)kv->k + off), hd / OKV_QK);
        return q8_logit_ref(qq, k8, hd, scale);
    }
    kv_row_f32(buf, kv, 0, r, kvh, hd);
    return logit_ref(qh, buf, hd, scale);
}

/* n rows of hd query values rounded to q8_0 (read only against q8_0 and q4_0 K rows). */
static okv_block_q8_0 *quant_q_ref(const float *q, int64_t n, int hd) {
    okv_block_q8_0 *qq = malloc(okv_type_row_bytes(OKV_TYPE_Q8_0, n * hd) + 1);
    OKV_ASSERT(qq);
    if (hd % OKV_QK == 0) okv_quant_row_ref(qq, q, OKV_TYPE_Q8_0, n * hd);
    return qq;
}

/* Softmax over logits[0..n) applied to the V rows listed by (view, row) pairs. */
typedef struct ref_row {
    const okv_kv_view *view;
    int64_t row;
} ref_row;

static void softmax_v_ref(float *out, const float *logits, const ref_row *rows, int n, int kvh,
                          int hd, float *vbuf) {
    float max = -INFINITY;
    for (int j = 0; j < n; j++) max = fmaxf(max, logits[j]);
    double sum = 0.0;
    double acc[512];
    OKV_ASSERT(hd <= 512);
    for (int d = 0; d < hd; d++) acc[d] = 0.0;
    for (int j = 0; j < n; j++) {
        const double p = exp((double)logits[j] - max);
        sum += p;
        kv_row_f32(vbuf, rows[j].view, 1, rows[j].row, kvh, hd);
        for (int d = 0; d < hd; d++) acc[d] += p * vbuf[d];
    }
    for (int d = 0; d < hd; d++) out[d] = n > 0 ? (float)(acc[d] / sum) : 0.0f;
}

void okv_attn_decode_ref(float *out, const float *q, const okv_kv_view *views, int n_views,
                         okv_attn_shape s, float *logits) {
    const int hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
    int n = 0;
    for (int v = 0; v < n_views; v++) n += views[v].n;
    ref_row *rows = malloc((size_t)(n > 0 ? n : 1) * sizeof *rows);
    float *l = malloc((size_t)(n > 0 ? n : 1) * sizeof *l);
    float *buf = malloc((size_t)hd * sizeof *buf);
    okv_block_q8_0 *qq = quant_q_ref(q, s.n_heads, hd);
    OKV_ASSERT(rows && l && buf);
    int j = 0;
    for (int v = 0; v < n_views; v++)
        for (int r = 0; r < views[v].n; r++) rows[j++] = (ref_row){&views[v], view_row(&views[v], r)};
    for (int h = 0; h < s.n_heads; h++) {
        const int kvh = h / group;
        for (j = 0; j < n; j++)
            l[j] = kv_logit_ref(q + (int64_t)h * hd, qq + (int64_t)h * hd / OKV_QK, rows[j].view,
                                rows[j].row, kvh, hd, s.scale, buf);
        if (logits && n_views > 0)
            memcpy(logits + (int64_t)h * views[0].n, l, (size_t)views[0].n * sizeof(float));
        softmax_v_ref(out + (int64_t)h * hd, l, rows, n, kvh, hd, buf);
    }
    free(rows);
    free(l);
    free(buf);
    free(qq);
}

void okv_attn_logits_ref(float *logits, const float *q, okv_kv_view kv, okv_attn_shape s) {
    const int hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
    float *buf = malloc((size_t)hd * sizeof *buf);
    okv_block_q8_0 *qq = quant_q_ref(q, s.n_heads, hd);
    OKV_ASSERT(buf);
    for (int h = 0; h < s.n_heads; h++)
        for (int j = 0; j < kv.n; j++)
            logits[(int64_t)h * kv.n + j] = kv_logit_ref(q + (int64_t)h * hd, qq + (int64_t)h * hd / OKV_QK,
                                                         &kv, view_row(&kv, j), h / group, hd, s.scale, buf);
    free(buf);
    free(qq);
}

void okv_attn_prefill_ref(float *out, const float *q, int n_q, int q_pos0, okv_kv_view kv,
                          okv_attn_shape s) {
    OKV_ASSERT(kv.idx == NULL && kv.n >= q_pos0 + n_q);
    const int hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
    const int n_max = q_pos0 + n_q;
    ref_row *rows = malloc((size_t)n_max * sizeof *rows);
    float *l = malloc((size_t)n_max * sizeof *l);
    float *buf = malloc((size_t)hd * sizeof *buf);
    okv_block_q8_0 *qq = quant_q_ref(q, (int64_t)n_q * s.n_heads, hd);
    OKV_ASSERT(rows && l && buf);
    for (int j = 0; j < n_max; j++) rows[j] = (ref_row){&kv, j};
    for (int i = 0; i < n_q; i++) {
        const int n = q_pos0 + i + 1;
        for (int h = 0; h < s.n_heads; h++) {
            const float *qh = q + ((int64_t)i * s.n_heads + h) * hd;
            const okv_block_q8_0 *qqh = qq + ((int64_t)i * s.n_heads + h) * hd / OKV_QK;
            for (int j = 0; j < n; j++) l[j] = kv_logit_ref(qh, qqh, &kv, j, h / group, hd, s.scale, buf);
            softmax_v_ref(out + ((int64_t)i * s.n_heads + h) * hd, l, rows, n, h / group, hd, buf);
        }
    }
    free(rows);
    free(l);
    free(buf);
    free(qq);
}

/* ---- top-k ----------------------------------------------------------------------------------- */

/* The selection order: higher score first, lower index on ties, NaN last. */
static inline int topk_before(float sa, int32_t ia, float sb, int32_t ib) {
    if (isnan(sa)) return isnan(sb) && ia < ib;
    if (isnan(sb)) return 1;
    return sa > sb || (sa == sb && ia < ib);
}

int okv_topk(int32_t *out, const float *scores, int n, int k, float *scratch_f, int32_t *scratch_i) {
    if (k <= 0 || n <= 0) return 0;
    if (k >= n) {
        for (int i = 0; i < n; i++) out[i] = i;
        return n;
    }
    float *f = scratch_f;
    int32_t *id = scratch_i;
    memcpy(f, scores, (size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) id[i] = i;
    /* Quickselect for the element of rank k-1; the order is strict, so no two keys tie. */
    int lo = 0, hi = n - 1;
    const int want = k - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        int a = lo, b = mid, c = hi, m;
        if (topk_before(f[a], id[a], f[b], id[b]))
            m = topk_before(f[b], id[b], f[c], id[c]) ? b : (topk_before(f[a], id[a], f[c], id[c]) ? c : a);
        else
            m = topk_before(f[a], id[a], f[c], id[c]) ? a : (topk_before(f[b], id[b], f[c], id[c]) ? c : b);
        const float pf = f[m];
        const int32_t pi = id[m];
        int i = lo, j = hi;
        while (i <= j) {
            while (topk_before(f[i], id[i], pf, pi)) i++;
            while (topk_before(pf, pi, f[j], id[j])) j--;
            if (i <= j) {
                float tf = f[i];
                f[i] = f[j];
                f[j] = tf;
                int32_t ti = id[i];
                id[i] = id[j];
                id[j] = ti;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    const float tf = f[want];
    const int32_t ti = id[want];
    int m = 0;
    for (int i = 0; i < n; i++)
        if (i == ti || topk_before(scores[i], i, tf, ti)) out[m++] = i;
    OKV_ASSERT(m == k);
    return k;
}

typedef struct topk_item {
    float s;
    int32_t i;
} topk_item;

static int topk_cmp_rank(const void *pa, const void *pb) {
    const topk_item *a = pa, *b = pb;
    return topk_before(a->s, a->i, b->s, b->i) ? -1 : (topk_before(b->s, b->i, a->s, a->i) ? 1 : 0);
}

static int topk_cmp_index(const void *pa, const void *pb) {
    const int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

int okv_topk_ref(int32_t *out, const float *scores, int n, int k) {
    const int kk = OKV_MAX(0, OKV_MIN(k, n));
    if (kk == 0) return 0;
    topk_item *it = malloc((size_t)n * sizeof *it);
    OKV_ASSERT(it);
    for (int i = 0; i < n; i++) it[i] = (topk_item){scores[i], i};
    qsort(it, (size_t)n, sizeof *it, topk_cmp_rank);
    for (int i = 0; i < kk; i++) out[i] = it[i].i;
    qsort(out, (size_t)kk, sizeof *out, topk_cmp_index);
    free(it);
    return kk;
}

/* ---- selection, argmax, bias, gather ----------------------------------------------------------- */

void okv_bias_add_ref(float *y, const float *b, int n_tok, int dim) {
    for (int t = 0; t < n_tok; t++)
        for (int i = 0; i < dim; i++) y[(int64_t)t * dim + i] += b[i];
}

void okv_argmax_ref(int32_t *out, const float *x, int n_rows, int n) {
    for (int r = 0; r < n_rows; r++) {
        const float *row = x + (int64_t)r * n;
        int best = 0;
        for (int j = 1; j < n; j++)
            if (row[j] > row[best]) best = j;
        out[r] = best;
    }
}

void okv_gather_rows_ref(void *dst, const void *src, size_t src_stride, size_t row_bytes,
                         const int32_t *idx, int n) {
    for (int i = 0; i < n; i++)
        memcpy((uint8_t *)dst + (size_t)i * row_bytes,
               (const uint8_t *)src + (size_t)idx[i] * src_stride, row_bytes);
}

void okv_gather_rows_cached_ref(void *dst, const void *src, size_t src_stride, size_t row_bytes,
                                const int32_t *idx, int n, const void *old, const int32_t *old_idx,
                                int n_old, uint64_t *hits) {
    int j = 0;
    for (int i = 0; i < n; i++) {
        while (j < n_old && old_idx[j] < idx[i]) j++;
        const bool hit = j < n_old && old_idx[j] == idx[i];
        const uint8_t *from = hit ? (const uint8_t *)old + (size_t)j * row_bytes
                                  : (const uint8_t *)src + (size_t)idx[i] * src_stride;
        memcpy((uint8_t *)dst + (size_t)i * row_bytes, from, row_bytes);
        *hits += hit;
    }
}

/* Adds weight * max over heads of softmax_h(logits[h][0..c))[j] to score[j] (logit rows hold n).
 * The per-head softmax statistics come first so each candidate is then one pass over the heads. */
static void add_softmax_max(const float *logits, int n_heads, int n, int c, float weight, float *score) {
    float mx[OKV_SELECT_MAX_HEADS], inv[OKV_SELECT_MAX_HEADS];
    for (int h = 0; h < n_heads; h++) {
        const float *l = logits + (size_t)h * n;
        float m = -INFINITY;
        for (int j = 0; j < c; j++) m = l[j] > m ? l[j] : m;
        double sum = 0;
        for (int j = 0; j < c; j++) sum += expf(l[j] - m);
        mx[h] = m;
        inv[h] = (float)(1.0 / sum);
    }
    for (int j = 0; j < c; j++) {
        float best = 0;
        for (int h = 0; h < n_heads; h++) {
            float v = expf(logits[(size_t)h * n + j] - mx[h]) * inv[h];
            best = v > best ? v : best;
        }
        score[j] += weight * best;
    }
}

static bool select_is_window(const okv_select_args *a) {
    return a->kind == OKV_SCORE_WINDOW_SUM || a->kind == OKV_SCORE_WINDOW_EXP;
}

int okv_select_scored(const okv_select_args *a) {
    return select_is_window(a) ? OKV_MAX(1, a->k - a->n_tail) : OKV_MAX(0, a->k);
}

int okv_select_candidates(int n, const okv_select_args *a) {
    return select_is_window(a) ? n - OKV_MIN(OKV_MAX(a->n_tail, 0), n) : n;
}

int okv_select_count(int n, const okv_select_args *a) {
    const int c = okv_select_candidates(n, a);
    return OKV_MIN(okv_select_scored(a), c) + (n - c);
}

void okv_select_scores_ref(float *score, const float *logits, int n_heads, int n,
                           const okv_select_args *a) {
    OKV_ASSERT(n_heads <= OKV_SELECT_MAX_HEADS);
    const int c = okv_select_candidates(n, a);
    if (a->kind == OKV_SCORE_MAX) {
        for (int j = 0; j < c; j++) score[j] = logits[j];
        for (int h = 1; h < n_heads; h++) {
            const float *l = logits + (size_t)h * n;
            for (int j = 0; j < c; j++) score[j] = l[j] > score[j] ? l[j] : score[j];
        }
        return;
    }
    for (int j = 0; j < c; j++) score[j] = 0;
    if (c == 0) return;
    if (a->kind == OKV_SCORE_SOFTMAX_MAX) {
        add_softmax_max(logits, n_heads, n, c, 1.0f, score);
        return;
    }
    for (int w = 0; w < a->n_win; w++) {
        float weight = a->kind == OKV_SCORE_WINDOW_EXP ? ldexpf(1.0f, -a->ages[w]) : 1.0f;
        add_softmax_max(a->window_logits + (size_t)w * n_heads * n, n_heads, n, c, weight, score);
    }
}

/* Kept ends outrank every score; among them the lower position wins if k_s is short. */
void okv_select_force(float *score, int c, const okv_select_args *a) {
    for (int j = 0; j < a->keep_first && j < c; j++) score[j] = INFINITY;
    for (int j = c - OKV_MIN(a->keep_last, c); j < c; j++) score[j] = INFINITY;
}

int okv_select_ref(int32_t *out, const float *logits, int n_heads, int n, const okv_select_args *a) {
    if (n <= 0) return 0;
    const int total = okv_select_count(n, a), c = okv_select_candidates(n, a);
    float *score = malloc(sizeof(float) * (size_t)(c ? c : 1));
    OKV_ASSERT(score);
    okv_select_scores_ref(score, logits, n_heads, n, a);
    okv_select_force(score, c, a);
    int k = okv_topk_ref(out, score, c, okv_select_scored(a));
    for (int j = c; j < n; j++) out[k++] = j;
    OKV_ASSERT(k == total);
    free(score);
    return k;
}

/* ---- the reference backend ------------------------------------------------------------------- */

static void ref_matmul(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                       int n_tok, int n_in, int n_out) {
    okv_matmul_ref(y, w, wtype, x, n_tok, n_in, n_out);
}
static void ref_rmsnorm(okv_backend *be, float *y, const float *x, const float *w, int n_tok,
                        int dim, float eps) {
    okv_rmsnorm_ref(y, x, w, n_tok, dim, eps);
}
static void ref_rope(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads,
                     int head_dim, const float *inv_freq, int n_freq) {
    okv_rope_ref(x, pos, n_tok, n_heads, head_dim, inv_freq, n_freq);
}
static void ref_swiglu(okv_backend *be, float *out, const float *gate, const float *up, int64_t n) {
    okv_swiglu_ref(out, gate, up, n);
}
static void ref_add(okv_backend *be, float *y, const float *x, int64_t n) { okv_add_ref(y, x, n); }
static void ref_embed(okv_backend *be, float *out, const void *table, okv_type type,
                      const int32_t *ids, int n_tok, int dim) {
    okv_embed_ref(out, table, type, ids, n_tok, dim);
}
static void ref_kv_store(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,
                         const int32_t *dst_rows, const float *src, int n_tok, int row_elems) {
    okv_kv_store_ref(dst, dst_type, dst_stride, dst_rows, src, n_tok, row_elems);
}
static void ref_attn_prefill(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                             okv_kv_view kv, okv_attn_shape s) {
    okv_attn_prefill_ref(out, q, n_q, q_pos0, kv, s);
}
static void ref_attn_decode(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                            int n_views, okv_attn_shape s, float *logits) {
    okv_attn_decode_ref(out, q, views, n_views, s, logits);
}
static void ref_attn_logits(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                            okv_attn_shape s) {
    okv_attn_logits_ref(logits, q, kv, s);
}
static void ref_bias_add(okv_backend *be, float *y, const float *b, int n_tok, int dim) {
    okv_bias_add_ref(y, b, n_tok, dim);
}
static int ref_select(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
                      const okv_select_args *a) {
    return okv_select_ref(out, logits, n_heads, n, a);
}
static void ref_argmax(okv_backend *be, int32_t *out, const float *x, int n_rows, int n) {
    okv_argmax_ref(out, x, n_rows, n);
}
static void ref_gather_rows_cached(okv_backend *be, void *dst, const void *src, size_t src_stride,
                                   size_t row_bytes, const int32_t *idx, int n, const void *old,
                                   const int32_t *old_idx, int n_old, uint64_t *hits, int stream) {
    okv_gather_rows_cached_ref(dst, src, src_stride, row_bytes, idx, n, old, old_idx, n_old, hits);
}

static void ref_gather_rows(okv_backend *be, void *dst, const void *src, size_t src_stride,
                            size_t row_bytes, const int32_t *idx, int n, int stream) {
    okv_gather_rows_ref(dst, src, src_stride, row_bytes, idx, n);
}
static int ref_reserve(okv_backend *be, okv_attn_shape s, int max_ctx) { return OKV_OK; }
static void ref_free(okv_backend *be) { be->state = NULL; }

int okv_backend_ref_init(okv_backend *be) {
    *be = (okv_backend){
        .name = "ref",
        .matmul = ref_matmul,
        .rmsnorm = ref_rmsnorm,
        .rope = ref_rope,
        .swiglu = ref_swiglu,
        .add = ref_add,
        .embed = ref_embed,
        .kv_store = ref_kv_store,
        .attn_prefill = ref_attn_prefill,
        .attn_decode = ref_attn_decode,
        .attn_logits = ref_attn_logits,
        .bias_add = ref_bias_add,
        .select = ref_select,
        .argmax = ref_argmax,
        .gather_rows = ref_gather_rows,
        .gather_rows_cached = ref_gather_rows_cached,
        .reserve = ref_reserve,
        .weight_ok = okv_weight_ok_all,
        .free = ref_free,
    };
    okv_host_mem_ops(be);
    return OKV_OK;
}
