/* types.h — tensor element types (numbered as in GGUF so the reader needs no table) and the
 * block layouts of the quantized ones. Block sizes are checked by tests/unit/test_kernels.c. */
#ifndef OKV_TYPES_H
#define OKV_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum okv_type {
    OKV_TYPE_F32 = 0,
    OKV_TYPE_F16 = 1,
    OKV_TYPE_Q4_0 = 2,
    OKV_TYPE_Q4_1 = 3,
    OKV_TYPE_Q5_0 = 6,
    OKV_TYPE_Q5_1 = 7,
    OKV_TYPE_Q8_0 = 8,
    OKV_TYPE_Q8_1 = 9, /* activations only: the partner of Q4_1 and Q5_1 weights */
    OKV_TYPE_Q2_K = 10,
    OKV_TYPE_Q3_K = 11,
    OKV_TYPE_Q4_K = 12,
    OKV_TYPE_Q5_K = 13,
    OKV_TYPE_Q6_K = 14,
    OKV_TYPE_Q8_K = 15, /* activations only: the partner of the K-quant weights */
    OKV_TYPE_IQ4_NL = 20,
    OKV_TYPE_BF16 = 30,
    OKV_TYPE_COUNT = 31,
} okv_type;

#define OKV_QK 32   /* elements per block of the legacy quantized types and IQ4_NL */
#define OKV_QK_K 256 /* elements per super-block of the K-quants */
#define OKV_K_SCALE_SIZE 12

/* Block layouts (little-endian, packed, as stored in GGUF):
 *   Q4_0: f16 d;           uint8 qs[16]  x = d * (q - 8), q in 0..15
 *   Q4_1: f16 d; f16 m;    uint8 qs[16]  x = d * q + m
 *   Q8_0: f16 d;           int8  qs[32]  x = d * q
 *   Q8_1: f16 d; f16 s;    int8  qs[32]  x = d * q, s = d * sum(q)
 * In qs, element j (j < 16) is the low nibble of byte j and element j+16 the high nibble. */
typedef struct { uint16_t d; uint8_t qs[16]; } okv_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } okv_block_q4_1;
typedef struct { uint16_t d; int8_t qs[32]; } okv_block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[32]; } okv_block_q8_1;

/*   Q5_0: f16 d;           uint8 qh[4]; uint8 qs[16]  x = d * (q - 16), q in 0..31
 *   Q5_1: f16 d; f16 m;    uint8 qh[4]; uint8 qs[16]  x = d * q + m
 * The low four bits of q are packed as in Q4_0; bit j of the little-endian u32 qh is bit 4 of
 * element j.
 *   IQ4_NL: f16 d;         uint8 qs[16]  x = d * okv_iq4nl_values[q], nibbles as in Q4_0. */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } okv_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } okv_block_q5_1;
typedef struct { uint16_t d; uint8_t qs[16]; } okv_block_iq4_nl;
extern const int8_t okv_iq4nl_values[16];

/* K-quants: 256-element super-blocks of 16 sub-blocks (Q2_K, Q3_K, Q6_K) or 8 (Q4_K, Q5_K), each
 * sub-block with its own quantized scale (and min); the exact bit layouts are specified beside
 * their dequantizers in kernels/ref_kquant.c.
 *   Q2_K: uint8 scales[16] (4-bit scale | 4-bit min << 4); uint8 qs[64] (2-bit q); f16 d, dmin
 *   Q3_K: uint8 hmask[32] (bit 2 of q); uint8 qs[64] (low 2 bits); uint8 scales[12] (16 6-bit
 *         scales); f16 d
 *   Q4_K: f16 d, dmin; uint8 scales[12] (8 6-bit scales, 8 6-bit mins); uint8 qs[128]
 *   Q5_K: f16 d, dmin; uint8 scales[12]; uint8 qh[32] (bit 4 of q); uint8 qs[128]
 *   Q6_K: uint8 ql[128] (low 4 bits); uint8 qh[64] (high 2 bits); int8 scales[16]; f16 d
 *   Q8_K: f32 d; int8 qs[256]; int16 bsums[16] (sums of each 16 qs) */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } okv_block_q2_k;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } okv_block_q3_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } okv_block_q4_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } okv_block_q5_k;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } okv_block_q6_k;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } okv_block_q8_k;

/* Elements per block (1 for plain types) and bytes per block; 0 for an unknown type. */
int okv_type_block_elems(okv_type t);
size_t okv_type_block_bytes(okv_type t);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t okv_type_row_bytes(okv_type t, int64_t n);
const char *okv_type_name(okv_type t); /* "f32", "q4_1", ...; NULL when unknown */
int okv_type_from_name(const char *name); /* -1 when unknown */
/* Whether t can be a weight type of the engine (f32/f16/bf16/q8_0/q4_0/q4_1/q5_0/q5_1/iq4_nl and
 * the K-quants q2_k..q6_k): every such type has its reference kernels in kernels/ref.c (the
 * K-quants' in kernels/ref_kquant.c) and a CPU matmul path. */
int okv_type_is_weight(okv_type t);

/* The name ggml gives GGUF tensor type number t ("iq2_xxs", "q4_k", "i32", ...), whether or
 * not omnikv reads it, for messages; NULL for a number ggml never used. */
const char *okv_ggml_type_name(uint32_t t);
/* The weight types (okv_type_is_weight) as "f32, f16, ..., iq4_nl", for messages; returns buf. */
const char *okv_weight_type_list(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
