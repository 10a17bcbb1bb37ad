/* kquant.h — the K-quant weight types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and their Q8_K activations:
 * references in kernels/ref_kquant.c (bit layouts specified there), fast CPU paths in
 * kernels/cpu/matmul_kquant.c. Both are checked by tests/unit/test_kernels.c. */
#ifndef OKV_KQUANT_H
#define OKV_KQUANT_H

#include "types.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline bool okv_type_is_kquant(okv_type t) {
    return t == OKV_TYPE_Q2_K || t == OKV_TYPE_Q3_K || t == OKV_TYPE_Q4_K || t == OKV_TYPE_Q5_K ||
           t == OKV_TYPE_Q6_K;
}

/* n must be a multiple of OKV_QK_K. quant_row also writes Q8_K (activations, llama.cpp's
 * quantize_row_q8_K); the weight quantizers are llama.cpp's reference ones (no importance
 * matrix), so a row quantized here has the bytes llama.cpp's quantizer writes for it. */
void okv_kquant_dequant_row_ref(float *y, const void *x, okv_type t, int64_t n);
void okv_kquant_quant_row_ref(void *y, const float *x, okv_type t, int64_t n);
/* Dot of one K-quant row with a Q8_K row: per super-block the integer sums of ggml's scalar
 * ggml_vec_dot_qN_K_q8_K, scaled in f32 as there; super-blocks summed in double. */
float okv_kquant_vec_dot_ref(const void *w, okv_type t, const void *xq, int64_t n);
/* The first of n_blocks super-blocks of type t at data whose f16 d (or dmin) is an infinity or a
 * NaN, or -1 when every scale is finite: such a block makes every dot product with it NaN. */
int64_t okv_kquant_find_bad_block(const void *data, okv_type t, int64_t n_blocks);
/* 6-bit scale j (0..7) and min of a Q4_K/Q5_K super-block's packed scales[12]. */
static inline void okv_kquant_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}
/* 6-bit scale j (0..15) of a Q3_K super-block's packed scales[12], minus 32. */
static inline int okv_kquant_q3_scale(const uint8_t *s, int j) {
    const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

#ifdef __cplusplus
}
#endif

#endif
