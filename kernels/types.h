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
    OKV_TYPE_Q8_0 = 8,
    OKV_TYPE_Q8_1 = 9, /* activations only: the partner of Q4_1 weights */
    OKV_TYPE_BF16 = 30,
    OKV_TYPE_COUNT = 31,
} okv_type;

#define OKV_QK 32 /* elements per block of every quantized type here */

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

/* Elements per block (1 for plain types) and bytes per block; 0 for an unknown type. */
int okv_type_block_elems(okv_type t);
size_t okv_type_block_bytes(okv_type t);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t okv_type_row_bytes(okv_type t, int64_t n);
const char *okv_type_name(okv_type t); /* "f32", "q4_1", ...; NULL when unknown */
int okv_type_from_name(const char *name); /* -1 when unknown */
/* Whether t can be a weight type of the engine (f32/f16/bf16/q8_0/q4_0/q4_1). */
int okv_type_is_weight(okv_type t);

#ifdef __cplusplus
}
#endif

#endif
