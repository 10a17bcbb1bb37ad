/* cpu_math.h — vector exp for the CPU backend (swiglu and the attention softmax).
 * Accuracy (about 2 ulp against expf) is checked through those ops by tests/unit/test_kernels.c. */
#ifndef OKV_CPU_MATH_H
#define OKV_CPU_MATH_H

#include "cpu.h"

#include <math.h>

#if defined(OKV_CPU_AVX512)
#include <immintrin.h>

/* e^x = 2^n * e^r with n = round(x / ln2) and |r| <= ln2/2 (ln2 split in two so r is exact);
 * e^r by its degree-7 Taylor polynomial (truncation 5e-9), 2^n applied by scalef so overflow
 * gives inf and underflow 0. Inputs are clamped so -inf yields 0. */
static inline __m512 cpu_exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(89.0f)), _mm512_set1_ps(-104.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

static inline float cpu_maxf(float a, float b) { return a > b ? a : b; }

/* max(init, x[0..n)); order does not matter for a max, so this is exact. */
static inline float cpu_max_array(const float *x, int n, float init) {
    int i = 0;
#if defined(OKV_CPU_AVX512)
    __m512 m = _mm512_set1_ps(init);
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    init = _mm512_reduce_max_ps(m);
#endif
    for (; i < n; i++) init = cpu_maxf(init, x[i]);
    return init;
}

/* y[i] = exp(x[i] - sub) for i < n (y may alias x); returns the sum of y in a fixed order that
 * depends only on n. */
static inline float cpu_exp_sub_sum(float *y, const float *x, float sub, int n) {
    int i = 0;
    float sum = 0.0f;
#if defined(OKV_CPU_AVX512)
    __m512 acc = _mm512_setzero_ps();
    const __m512 s = _mm512_set1_ps(sub);
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 e = cpu_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
        _mm512_mask_storeu_ps(y + i, m, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
    }
    sum = _mm512_reduce_add_ps(acc);
#endif
    for (; i < n; i++) {
        y[i] = expf(x[i] - sub);
        sum += y[i];
    }
    return sum;
}

#endif
