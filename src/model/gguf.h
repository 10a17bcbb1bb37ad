/* gguf.h — GGUF v2/v3 reader (mmap, every offset checked) and writer (used by gen-model).
 * Tested by tests/unit/test_gguf.c (round trip, corruptions) and tests/fuzz/fuzz_gguf.c.
 *
 * File layout (little-endian):
 *   u32 magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | u32 value_type | value }
 *      string = u64 len + bytes (no NUL); array = u32 elem_type + u64 count + elems
 *      value types: 0 u8 1 i8 2 u16 3 i16 4 u32 5 i32 6 f32 7 bool 8 string 9 array
 *                   10 u64 11 i64 12 f64
 *   n_tensors x { string name | u32 n_dims (1..4) | u64 ne[n_dims] | u32 type | u64 offset }
 *   padding to general.alignment (default 32) | tensor data (offsets relative to its start,
 *   each aligned) */
#ifndef OKV_GGUF_H
#define OKV_GGUF_H

#include "../../kernels/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum gguf_vtype {
    GGUF_VT_U8 = 0, GGUF_VT_I8 = 1, GGUF_VT_U16 = 2, GGUF_VT_I16 = 3, GGUF_VT_U32 = 4,
    GGUF_VT_I32 = 5, GGUF_VT_F32 = 6, GGUF_VT_BOOL = 7, GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9,
    GGUF_VT_U64 = 10, GGUF_VT_I64 = 11, GGUF_VT_F64 = 12,
} gguf_vtype;

typedef struct gguf_str {
    const char *ptr; /* points into the mapping; NOT NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    gguf_vtype type;
    /* scalars: u for u8..u64, i for i8..i64, f for f32 and f64, b for bool */
    union { uint64_t u; int64_t i; double f; bool b; } num;
    gguf_str str;            /* type == STRING */
    gguf_vtype arr_type;     /* type == ARRAY */
    uint64_t arr_n;
    const uint8_t *arr_data; /* start of the array's elements in the mapping */
} gguf_kv;

typedef struct gguf_tensor_info {
    gguf_str name;
    int n_dims;
    int64_t ne[4];       /* ne[0] is the innermost (row) length */
    okv_type type;
    uint64_t offset;     /* relative to the data section */
    uint64_t nbytes;
    const void *data;    /* into the mapping */
} gguf_tensor_info;

typedef struct gguf_file {
    char path[256];     /* for messages; "<memory>" for gguf_open_mem */
    const uint8_t *map; /* whole file (the descriptor is closed once mapped) */
    size_t size;
    bool owns_map;      /* false for gguf_open_mem */
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;               /* [n_kv] */
    gguf_tensor_info *tensors; /* [n_tensors] */
    uint64_t data_offset;
} gguf_file;

/* Open and validate. Returns OKV_OK or OKV_ERR_INPUT (OKV_ERR_NOMEM when the tables cannot be
 * allocated) with okv_last_error naming the file, the field and its value, e.g. "m.gguf: tensor
 * 12 ('blk.1.attn_q.weight') data ends at byte 9876543 but the file has 1234 bytes; ...".
 * Checked before use: version (1 rejected), counts against the file size, string lengths, array
 * counts (nested arrays rejected), duplicate keys, general.alignment (a power of two), n_dims
 * 1..4, ne >= 1 without overflow, known tensor type, ne[0] a multiple of the block size,
 * offsets aligned, data inside the file, duplicate names and overlapping data.
 * On failure the struct is left zeroed; gguf_close is safe on a zeroed or closed struct. */
int gguf_open(gguf_file *f, const char *path);
/* No copy: data must outlive f; tensor data is only as aligned as data is. For the fuzzer. */
int gguf_open_mem(gguf_file *f, const void *data, size_t size);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name);
bool gguf_str_eq(gguf_str s, const char *c);
/* Typed getters: OKV_OK, or OKV_ERR_INPUT when present with the wrong type; *found says
 * whether the key exists (absent keys leave *out untouched and return OKV_OK). Integer getters
 * accept any integer type whose value fits. */
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, bool *found);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, bool *found);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, bool *found);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, bool *found);
/* Array access (bounds-checked at open); string arrays are walked with gguf_str_iter. */
int gguf_get_arr(const gguf_file *f, const char *key, gguf_vtype *elem_type, uint64_t *n,
                 const uint8_t **data, bool *found);
/* The strings of a string array, in order (lengths validated at open, so this cannot over-read);
 * next returns {NULL, 0} once the array is exhausted or when kv is not a string array. */
typedef struct gguf_str_iter { const uint8_t *p; uint64_t left; } gguf_str_iter;
void gguf_str_iter_init(gguf_str_iter *it, const gguf_kv *kv);
gguf_str gguf_str_iter_next(gguf_str_iter *it);

/* ---- writer ----
 * Writes GGUF v3. Keys and tensor names must be unique (checked: a broken invariant). The void
 * calls record the first allocation failure, which begin/save/finish then return. */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(uint32_t alignment);
void gguf_writer_free(gguf_writer *w);
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_w_f32(gguf_writer *w, const char *key, float v);
void gguf_w_bool(gguf_writer *w, const char *key, bool v);
void gguf_w_str(gguf_writer *w, const char *key, const char *v);
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n);
/* The data is copied; ne as in gguf_tensor_info. */
void gguf_w_tensor(gguf_writer *w, const char *name, okv_type type, int n_dims,
                   const int64_t *ne, const void *data);
int gguf_writer_save(gguf_writer *w, const char *path); /* OKV_OK or OKV_ERR_INPUT */

/* Any scalar type but STRING/ARRAY (v points to the matching C type: uint8_t ... double, bool),
 * and arrays of any non-string, non-array element type (n packed little-endian elements). */
void gguf_w_scalar(gguf_writer *w, const char *key, gguf_vtype t, const void *v);
void gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *v, uint64_t n);

/* Streaming: for files larger than memory. Declare every tensor with gguf_w_tensor_info (no
 * data), call gguf_writer_begin (writes header, metadata and tensor table to "<path>.part"), then
 * pass the data of the tensors in declaration order with any number of gguf_writer_write calls
 * (a call may span tensors; padding is inserted between them), then gguf_writer_finish, which
 * checks every byte was given and renames the file to path. gguf_writer_save is begin + the
 * copied data of gguf_w_tensor + finish. gguf_writer_free removes an unfinished .part file. */
void gguf_w_tensor_info(gguf_writer *w, const char *name, okv_type type, int n_dims,
                        const int64_t *ne);
int gguf_writer_begin(gguf_writer *w, const char *path);
int gguf_writer_write(gguf_writer *w, const void *data, size_t n);
int gguf_writer_finish(gguf_writer *w);

/* For `omnikv inspect`: header, metadata (arrays summarised as type[n]) and the tensor table
 * (name, type, shape, bytes). Returns OKV_OK, or OKV_ERR_INPUT if writing to out failed. */
int gguf_print_summary(const gguf_file *f, FILE *out);
const char *gguf_vtype_name(gguf_vtype t); /* "u8" ... "array"; "?" when unknown */

#endif
