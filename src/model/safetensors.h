/* safetensors.h — safetensors reader (mmap, every field checked) and sharded checkpoints through
 * model.safetensors.index.json, opening only the shards that hold requested tensors. Tested by
 * tests/unit/test_safetensors.c (round trip, corruptions) and tests/fuzz/fuzz_safetensors.c.
 *
 * File layout:
 *   u64 N (little-endian)  | N bytes of UTF-8 JSON (may end in spaces) | data section
 *   JSON: { "__metadata__": {string: string} (optional, ignored),
 *           "<tensor name>": { "dtype": "BF16", "shape": [d0, d1, ...],
 *                              "data_offsets": [begin, end] }, ... }
 *   shape is outermost first (row-major); [begin, end) is relative to the first byte after the
 *   header and holds exactly product(shape) elements. Tensors may not overlap. Zero dims
 *   (scalars) are allowed.
 * Index (sharded checkpoints): model.safetensors.index.json =
 *   { "metadata": {...} (ignored), "weight_map": { "<tensor name>": "<shard file name>", ... } } */
#ifndef OKV_SAFETENSORS_H
#define OKV_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20) /* the format's own limit on the JSON header */

/* The dtypes the engine reads; every other dtype of the format is ST_DTYPE_OTHER (its name is kept
 * so the loader can say which one it met). A dtype the format does not define fails at open. */
typedef enum st_dtype {
    ST_DTYPE_F32 = 0,
    ST_DTYPE_F16 = 1,
    ST_DTYPE_BF16 = 2,
    ST_DTYPE_F8_E4M3 = 3, /* converted to BF16 at load by hf.c */
    ST_DTYPE_OTHER = 4,
} st_dtype;

typedef struct st_tensor {
    const char *name;             /* owned by the st_file */
    const char *dtype_name;       /* "BF16", "I64", ... (static) */
    st_dtype dtype;
    int bits;                     /* bits per element */
    int n_dims;                   /* 0..ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];   /* outermost first, as in the header */
    uint64_t n_elems;
    uint64_t begin, end;          /* data_offsets, relative to the data section */
    const void *data;             /* into the mapping (or the caller's buffer) */
} st_tensor;

typedef struct st_file {
    char *path;                   /* for messages */
    const uint8_t *map;           /* whole file */
    size_t size;
    bool owns_map;                /* false for st_open_mem */
    uint64_t header_len;
    uint64_t data_size;           /* bytes after the header */
    int n_tensors;
    st_tensor *tensors;           /* [n_tensors] sorted by name */
} st_file;

/* Open and validate a file. OKV_OK, or OKV_ERR_INPUT with okv_last_error naming the file, the
 * tensor or field and the offending value. st_close is safe on a zeroed or half-opened struct. */
int st_open(st_file *f, const char *path);
/* The same over a caller's buffer (no copy; the buffer must outlive f). name is for messages. */
int st_open_mem(st_file *f, const void *data, size_t size, const char *name);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name); /* NULL when absent */
size_t st_dtype_size(st_dtype t); /* bytes per element of the readable dtypes; 0 for OTHER */
/* A whole small text file of a checkpoint directory (index, config, tokenizer) into a malloc'd
 * NUL-terminated buffer; OKV_ERR_INPUT naming the path when it cannot be read. */
int st_read_text(const char *path, char **out);

/* A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json. */
typedef struct st_shard {
    char *name;                   /* file name relative to the directory */
    st_file file;
    bool opened;
} st_shard;

typedef struct st_entry {
    const char *tensor;           /* owned by the checkpoint */
    int shard;
} st_entry;

typedef struct st_checkpoint {
    char *dir;
    char *index_path;             /* NULL for a single-file checkpoint */
    int n_shards;
    st_shard *shards;             /* [n_shards] */
    int n_entries;
    st_entry *entries;            /* [n_entries] sorted by tensor (index only) */
} st_checkpoint;

/* Reads the index (or notes the single file); opens no shard yet. */
int st_checkpoint_open(st_checkpoint *c, const char *dir);
/* Whether the checkpoint holds name, without opening any shard (the single file is opened). */
int st_checkpoint_has(st_checkpoint *c, const char *name, bool *has);
/* Finds a tensor, opening its shard on first use. *t is NULL when the checkpoint does not list
 * it (OKV_OK); a listed tensor in a missing or corrupt shard is OKV_ERR_INPUT. */
int st_checkpoint_find(st_checkpoint *c, const char *name, const st_tensor **t);
int st_checkpoint_shards_opened(const st_checkpoint *c);
void st_checkpoint_close(st_checkpoint *c); /* safe on a zeroed or half-opened struct */

#endif
