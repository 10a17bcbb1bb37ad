/* elementwise.c — the CPU backend's per-element and per-row ops: rmsnorm, rope, swiglu, add,
 * embedding lookup and KV-cache stores (f32, f16, q8_0 rows). Compared with kernels/ref.c by tests/unit/test_kernels.c
 * (kv_store and embed bit-exact). */
#include "cpu.h"
#include "cpu_math.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(OKV_CPU_AVX512)
#include <immintrin.h>
#endif

/* Below this many elements a fork/join costs more than the work. */
#define EW_PAR_MIN 16384

static int ew_threads(const okv_backend *be, int64_t work) {
    const cpu_state *st = be->state;
    return work >= EW_PAR_MIN ? st->n_threads : 1;
}

/* Squares in f32, summed in double (as ggml); the weight multiplies the normalised value. */
static void rmsnorm_row(float *y, const float *x, const float *w, int dim, float eps) {
    double ss = 0.0;
    int i = 0;
#if defined(OKV_CPU_AVX512)
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (; i + 16 <= dim; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512 sq = _mm512_mul_ps(v, v);
        a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sq), 1))));
    }
    ss = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
    for (; i < dim; i++) ss += (double)(x[i] * x[i]);
    const float mean = (float)(ss / dim);
    const float scale = 1.0f / sqrtf(mean + eps);
    i = 0;
#if defined(OKV_CPU_AVX512)
    const __m512 sc = _mm512_set1_ps(scale);
    for (; i + 16 <= dim; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sc), _mm512_loadu_ps(w + i)));
#endif
    for (; i < dim; i++) y[i] = (x[i] * scale) * w[i];
}

void CPU_FN(cpu_rmsnorm)(okv_backend *be, float *y, const float *x, const float *w, int n_tok, int dim,
                         float eps) {
#pragma omp parallel for num_threads(ew_threads(be, (int64_t)n_tok * dim)) schedule(static)
    for (int t = 0; t < n_tok; t++)
        rmsnorm_row(y + (int64_t)t * dim, x + (int64_t)t * dim, w, dim, eps);
}

/* cos/sin once per (token, frequency), shared by all heads; otherwise the reference's f32
 * expressions, in the same order. */
void CPU_FN(cpu_rope)(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads,
                      int head_dim, const float *inv_freq, int n_freq) {
    OKV_ASSERT(2 * n_freq <= head_dim && n_freq <= 512);
#pragma omp parallel for num_threads(ew_threads(be, (int64_t)n_tok * n_heads * head_dim)) schedule(static)
    for (int t = 0; t < n_tok; t++) {
        float c[512], s[512];
        for (int i = 0; i < n_freq; i++) {
            const float theta = (float)pos[t] * inv_freq[i];
            c[i] = cosf(theta);
            s[i] = sinf(theta);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < n_freq; i++) {
                const float a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c[i] - b * s[i];
                v[2 * i + 1] = a * s[i] + b * c[i];
            }
        }
    }
}

static void swiglu_range(float *out, const float *gate, const float *up, int64_t i0, int64_t i1) {
    int64_t i = i0;
#if defined(OKV_CPU_AVX512)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= i1; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i);
        const __m512 e = cpu_exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
    }
#endif
    for (; i < i1; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void CPU_FN(cpu_swiglu)(okv_backend *be, float *out, const float *gate, const float *up, int64_t n) {
    const int nth = ew_threads(be, n);
    const int64_t per = ((n + nth - 1) / nth + 15) & ~(int64_t)15;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int k = 0; k < nth; k++) swiglu_range(out, gate, up, OKV_MIN(n, k * per), OKV_MIN(n, (k + 1) * per));
}

void CPU_FN(cpu_add)(okv_backend *be, float *y, const float *x, int64_t n) {
#pragma omp parallel for simd num_threads(ew_threads(be, n)) schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void CPU_FN(cpu_embed)(okv_backend *be, float *out, const void *table, okv_type type,
                       const int32_t *ids, int n_tok, int dim) {
    const size_t row = okv_type_row_bytes(type, dim);
#pragma omp parallel for num_threads(ew_threads(be, (int64_t)n_tok * dim)) schedule(static)
    for (int t = 0; t < n_tok; t++)
        okv_dequant_row_ref(out + (int64_t)t * dim, (const uint8_t *)table + (size_t)ids[t] * row, type, dim);
}

/* f32 -> f16 by the hardware conversion, round to nearest even like okv_f32_to_fp16. */
static void store_row_f16(uint16_t *d, const float *s, int n) {
    int i = 0;
#if defined(OKV_CPU_AVX512)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(d + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; i < n; i++) d[i] = okv_f32_to_fp16(s[i]);
}

/* f32 -> q8_0 blocks with the reference's numerics (d = amax/127 stored as f16, q =
 * rint(x * 127/amax), half to even), so rows equal okv_quant_row_ref's bit for bit. */
static void store_row_q8_0(okv_block_q8_0 *d, const float *s, int n) {
#if defined(OKV_CPU_AVX512)
    for (int b = 0; b < n / OKV_QK; b++) {
        const __m512 x0 = _mm512_loadu_ps(s + b * OKV_QK), x1 = _mm512_loadu_ps(s + b * OKV_QK + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        d[b].d = okv_f32_to_fp16(amax / 127.0f);
#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* an immediate, also at -O0 */
        _mm_storeu_si128((__m128i *)d[b].qs, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(x0, id), RN))));
        _mm_storeu_si128((__m128i *)(d[b].qs + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(x1, id), RN))));
    }
#undef RN
#else
    okv_quant_row_ref(d, s, OKV_TYPE_Q8_0, n);
#endif
}

void CPU_FN(cpu_kv_store)(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,
                          const int32_t *dst_rows, const float *src, int n_tok, int row_elems) {
    OKV_ASSERT(okv_kv_type_ok(dst_type) && dst_stride % okv_type_block_elems(dst_type) == 0 &&
               row_elems % okv_type_block_elems(dst_type) == 0);
#pragma omp parallel for num_threads(ew_threads(be, (int64_t)n_tok * row_elems)) schedule(static)
    for (int t = 0; t < n_tok; t++) {
        const float *s = src + (int64_t)t * row_elems;
        uint8_t *d = (uint8_t *)dst + okv_type_row_bytes(dst_type, (int64_t)dst_rows[t] * dst_stride);
        if (dst_type == OKV_TYPE_F16) store_row_f16((uint16_t *)d, s, row_elems);
        else if (dst_type == OKV_TYPE_Q8_0) store_row_q8_0((okv_block_q8_0 *)d, s, row_elems);
        else if (dst_type == OKV_TYPE_Q4_0) okv_quant_row_ref(d, s, OKV_TYPE_Q4_0, row_elems);
        else memcpy(d, s, (size_t)row_elems * sizeof(float));
    }
}
