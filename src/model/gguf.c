/* gguf.c — GGUF v2/v3 reader (mmap; every length, count and offset is checked against the file
 * size before it is used) and v3 writer (in memory or streaming). Tested by
 * tests/unit/test_gguf.c (round trip, corruptions) and the libFuzzer target tests/fuzz/fuzz_gguf.c. */
#include "gguf.h"

#include "../common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32u
/* Smallest encodings, used to bound the header's counts by the file size before allocating:
 * a kv is a key length, a type and at least one value byte; a tensor info is a name length,
 * n_dims, one ne, a type and an offset. */
#define GGUF_MIN_KV_BYTES 13u
#define GGUF_MIN_TENSOR_BYTES 32u

_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "GGUF needs IEEE float and double");

/* Bytes of one element of a scalar type; 0 for STRING, ARRAY and unknown types. */
static size_t vtype_size(uint32_t t) {
    static const uint8_t sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : 0;
}

const char *gguf_vtype_name(gguf_vtype t) {
    static const char *const names[13] = {"u8",  "i8",  "u16",   "i16",   "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < 13 ? names[t] : "?";
}

static bool vtype_is_int(gguf_vtype t) {
    return t <= GGUF_VT_I32 || t == GGUF_VT_U64 || t == GGUF_VT_I64;
}
static bool vtype_is_signed(gguf_vtype t) {
    return t == GGUF_VT_I8 || t == GGUF_VT_I16 || t == GGUF_VT_I32 || t == GGUF_VT_I64;
}

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

static int str_cmp(gguf_str a, gguf_str b) {
    size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c) return c;
    return (a.len > b.len) - (a.len < b.len);
}

/* A name from the file, made safe to print: at most 60 bytes, non-printable bytes as '?'. */
typedef struct shown { char s[72]; } shown;
static shown show(gguf_str v) {
    shown o;
    size_t n = v.len > 60 ? 60 : (size_t)v.len, j = 0;
    for (size_t i = 0; i < n; i++) o.s[j++] = (v.ptr[i] >= 32 && v.ptr[i] < 127) ? v.ptr[i] : '?';
    if (v.len > 60) {
        memcpy(o.s + j, "...", 3);
        j += 3;
    }
    o.s[j] = 0;
    return o;
}

/* ---- reader ---------------------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
} rd;

static bool rd_has(const rd *r, uint64_t n) { return n <= r->size - r->pos; }

static uint32_t rd_u32(rd *r) {
    uint32_t v;
    memcpy(&v, r->p + r->pos, 4);
    r->pos += 4;
    return v;
}

static uint64_t rd_u64(rd *r) {
    uint64_t v;
    memcpy(&v, r->p + r->pos, 8);
    r->pos += 8;
    return v;
}

/* The message for a read of `need` bytes at the cursor that would pass the end of the file. */
__attribute__((format(printf, 3, 4))) static int rd_short(const rd *r, uint64_t need,
                                                          const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return okv_fail(OKV_ERR_INPUT,
                    "%s: %s at byte %zu needs %" PRIu64 " bytes but the file has %zu bytes; the "
                    "file is truncated or corrupt, download or convert it again",
                    r->path, what, r->pos, need, r->size);
}

#define RD_NEED(r, n, ...) \
    do { \
        if (!rd_has((r), (n))) return rd_short((r), (n), __VA_ARGS__); \
    } while (0)

static int corrupt(const rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int corrupt(const rd *r, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return okv_fail(OKV_ERR_INPUT, "%s: %s", r->path, what);
}

/* Reads a string whose u64 length sits at the cursor; messages call it "<what> <idx><part>". */
static int rd_str(rd *r, gguf_str *s, const char *what, uint64_t idx, const char *part) {
    RD_NEED(r, 8, "%s %" PRIu64 "%s length", what, idx, part);
    uint64_t len = rd_u64(r);
    RD_NEED(r, len, "%s %" PRIu64 "%s (string length %" PRIu64 ")", what, idx, part, len);
    s->ptr = (const char *)r->p + r->pos;
    s->len = len;
    r->pos += len;
    return OKV_OK;
}

static void decode_num(gguf_kv *kv, gguf_vtype t, const uint8_t *p) {
    uint16_t u16;
    uint32_t u32;
    float f32;
    switch (t) {
    case GGUF_VT_U8: kv->num.u = p[0]; break;
    case GGUF_VT_I8: kv->num.i = (int8_t)p[0]; break;
    case GGUF_VT_U16: memcpy(&u16, p, 2); kv->num.u = u16; break;
    case GGUF_VT_I16: memcpy(&u16, p, 2); kv->num.i = (int16_t)u16; break;
    case GGUF_VT_U32: memcpy(&u32, p, 4); kv->num.u = u32; break;
    case GGUF_VT_I32: memcpy(&u32, p, 4); kv->num.i = (int32_t)u32; break;
    case GGUF_VT_F32: memcpy(&f32, p, 4); kv->num.f = f32; break;
    case GGUF_VT_BOOL: kv->num.b = p[0] != 0; break;
    case GGUF_VT_U64: memcpy(&kv->num.u, p, 8); break;
    case GGUF_VT_I64: memcpy(&kv->num.i, p, 8); break;
    case GGUF_VT_F64: memcpy(&kv->num.f, p, 8); break;
    default: OKV_ASSERT(!"decode_num: not a scalar type");
    }
}

static int parse_kv(rd *r, gguf_kv *kv, uint64_t i) {
    int st = rd_str(r, &kv->key, "kv", i, " key");
    if (st) return st;
    if (kv->key.len == 0) return corrupt(r, "kv %" PRIu64 " has an empty key; the file is corrupt", i);
    shown k = show(kv->key);
    if (memchr(kv->key.ptr, 0, kv->key.len))
        return corrupt(r, "kv %" PRIu64 " key '%s' holds a NUL byte, so no reader can look it up; "
                          "the file is corrupt", i, k.s);
    RD_NEED(r, 4, "kv %" PRIu64 " ('%s') value type", i, k.s);
    uint32_t t = rd_u32(r);
    if (t > GGUF_VT_F64)
        return corrupt(r, "kv %" PRIu64 " ('%s') has value type %u, which is not a GGUF type (0..12); "
                          "the file is corrupt", i, k.s, t);
    kv->type = (gguf_vtype)t;
    if (t == GGUF_VT_STRING) return rd_str(r, &kv->str, "kv", i, " string value");
    if (t != GGUF_VT_ARRAY) {
        RD_NEED(r, vtype_size(t), "kv %" PRIu64 " ('%s') %s value", i, k.s, gguf_vtype_name(kv->type));
        decode_num(kv, kv->type, r->p + r->pos);
        r->pos += vtype_size(t);
        return OKV_OK;
    }
    RD_NEED(r, 12, "kv %" PRIu64 " ('%s') array element type and count", i, k.s);
    uint32_t et = rd_u32(r);
    uint64_t n = rd_u64(r);
    if (et == GGUF_VT_ARRAY)
        return corrupt(r, "kv %" PRIu64 " ('%s') is a nested array (an array of arrays), which GGUF "
                          "readers do not support; the file is corrupt", i, k.s);
    if (et > GGUF_VT_F64)
        return corrupt(r, "kv %" PRIu64 " ('%s') has array element type %u, which is not a GGUF "
                          "type (0..12); the file is corrupt", i, k.s, et);
    kv->arr_type = (gguf_vtype)et;
    kv->arr_n = n;
    kv->arr_data = r->p + r->pos;
    /* Each string element takes at least its 8-byte length. */
    uint64_t esz = et == GGUF_VT_STRING ? 8 : vtype_size(et);
    uint64_t left = r->size - r->pos;
    if (n > left / esz) {
        r->pos -= 12;
        return corrupt(r, "kv %" PRIu64 " ('%s') array count %" PRIu64 " of %s at byte %zu needs at "
                          "least %" PRIu64 " bytes per element but only %" PRIu64 " bytes remain of "
                          "the %zu-byte file; the file is truncated or corrupt, download it again",
                       i, k.s, n, gguf_vtype_name(kv->arr_type), r->pos, esz, left, r->size);
    }
    if (et != GGUF_VT_STRING) {
        r->pos += (size_t)(n * esz);
        return OKV_OK;
    }
    for (uint64_t j = 0; j < n; j++) {
        RD_NEED(r, 8, "kv %" PRIu64 " ('%s') string element %" PRIu64 " length", i, k.s, j);
        uint64_t len = rd_u64(r);
        RD_NEED(r, len, "kv %" PRIu64 " ('%s') string element %" PRIu64 " (string length %" PRIu64
                ")", i, k.s, j, len);
        r->pos += len;
    }
    return OKV_OK;
}

static int cmp_kv_key(const void *a, const void *b) {
    return str_cmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}
static int cmp_tensor_name(const void *a, const void *b) {
    return str_cmp((*(const gguf_tensor_info *const *)a)->name,
                   (*(const gguf_tensor_info *const *)b)->name);
}
static int cmp_tensor_offset(const void *a, const void *b) {
    const gguf_tensor_info *x = *(const gguf_tensor_info *const *)a;
    const gguf_tensor_info *y = *(const gguf_tensor_info *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

static int check_unique_keys(const rd *r, gguf_file *f) {
    if (f->n_kv < 2) return OKV_OK;
    const gguf_kv **ix = malloc(f->n_kv * sizeof *ix);
    if (!ix) return okv_fail(OKV_ERR_NOMEM, "%s: cannot allocate the index of %" PRIu64 " keys",
                             r->path, f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) ix[i] = &f->kv[i];
    qsort(ix, f->n_kv, sizeof *ix, cmp_kv_key);
    int st = OKV_OK;
    for (uint64_t i = 1; i < f->n_kv && !st; i++)
        if (str_cmp(ix[i - 1]->key, ix[i]->key) == 0) {
            uint64_t a = (uint64_t)(ix[i - 1] - f->kv), b = (uint64_t)(ix[i] - f->kv);
            st = corrupt(r, "duplicate key '%s' (kv %" PRIu64 " and kv %" PRIu64 "); the file is "
                            "corrupt", show(ix[i]->key).s, a < b ? a : b, a < b ? b : a);
        }
    free(ix);
    return st;
}

static int read_alignment(const rd *r, gguf_file *f) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (!kv) return OKV_OK;
    if (!vtype_is_int(kv->type))
        return corrupt(r, "general.alignment has type %s but must be an unsigned integer; the file "
                          "is corrupt", gguf_vtype_name(kv->type));
    if (vtype_is_signed(kv->type) && kv->num.i < 0)
        return corrupt(r, "general.alignment is %" PRId64 ", which is not a power of two; the file "
                          "is corrupt", kv->num.i);
    uint64_t a = kv->num.u;
    if (a == 0 || (a & (a - 1)) || a > (1u << 30))
        return corrupt(r, "general.alignment is %" PRIu64 ", which is not a power of two between 1 "
                          "and 2^30; the file is corrupt", a);
    f->alignment = (uint32_t)a;
    return OKV_OK;
}

static int parse_tensor(rd *r, gguf_file *f, gguf_tensor_info *t, uint64_t i) {
    int st = rd_str(r, &t->name, "tensor", i, " name");
    if (st) return st;
    if (t->name.len == 0)
        return corrupt(r, "tensor %" PRIu64 " has an empty name; the file is corrupt", i);
    shown nm = show(t->name);
    if (memchr(t->name.ptr, 0, t->name.len))
        return corrupt(r, "tensor %" PRIu64 " name '%s' holds a NUL byte, so no reader can look it "
                          "up; the file is corrupt", i, nm.s);
    RD_NEED(r, 4, "tensor %" PRIu64 " ('%s') n_dims", i, nm.s);
    uint32_t nd = rd_u32(r);
    if (nd < 1 || nd > 4)
        return corrupt(r, "tensor %" PRIu64 " ('%s') has n_dims %u but it must be 1..4; the file is "
                          "corrupt", i, nm.s, nd);
    t->n_dims = (int)nd;
    RD_NEED(r, 8u * nd, "tensor %" PRIu64 " ('%s') dimensions ne[0..%u]", i, nm.s, nd - 1);
    int64_t n_elems = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v = rd_u64(r);
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return corrupt(r, "tensor %" PRIu64 " ('%s') has ne[%u] = %" PRIu64 " but every "
                              "dimension must be between 1 and 2^63-1; the file is corrupt",
                           i, nm.s, d, v);
        t->ne[d] = (int64_t)v;
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems))
            return corrupt(r, "tensor %" PRIu64 " ('%s') element count overflows 64 bits at ne[%u] "
                              "= %" PRIu64 "; the file is corrupt", i, nm.s, d, v);
    }
    RD_NEED(r, 12, "tensor %" PRIu64 " ('%s') type and data offset", i, nm.s);
    uint32_t type = rd_u32(r);
    t->offset = rd_u64(r);
    size_t bb = type < OKV_TYPE_COUNT ? okv_type_block_bytes((okv_type)type) : 0;
    if (bb == 0) {
        char list[256];
        const char *gn = okv_ggml_type_name(type);
        return corrupt(r, "tensor %" PRIu64 " ('%s') has type %u (%s), which omnikv does not read "
                          "(it reads %s); requantize the model to one of these, e.g. with "
                          "llama.cpp's llama-quantize", i, nm.s, type, gn ? gn : "not a ggml type",
                       okv_weight_type_list(list, sizeof list));
    }
    t->type = (okv_type)type;
    int64_t be = okv_type_block_elems(t->type);
    if (t->ne[0] % be)
        return corrupt(r, "tensor %" PRIu64 " ('%s') has row length ne[0] = %" PRId64 ", which is "
                          "not a multiple of the %s block size %" PRId64 "; the file is corrupt",
                       i, nm.s, t->ne[0], okv_type_name(t->type), be);
    uint64_t nbytes;
    if (__builtin_mul_overflow((uint64_t)(n_elems / be), (uint64_t)bb, &nbytes))
        return corrupt(r, "tensor %" PRIu64 " ('%s') byte size overflows 64 bits; the file is "
                          "corrupt", i, nm.s);
    t->nbytes = nbytes;
    if (t->offset % f->alignment)
        return corrupt(r, "tensor %" PRIu64 " ('%s') data offset %" PRIu64 " is not a multiple of "
                          "the alignment %u; the file is corrupt", i, nm.s, t->offset, f->alignment);
    return OKV_OK;
}

static int check_tensor_layout(const rd *r, gguf_file *f) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        uint64_t room = f->size - f->data_offset; /* data_offset <= size checked by the caller */
        if (t->offset > room || t->nbytes > room - t->offset) {
            uint64_t start, end;
            if (__builtin_add_overflow(f->data_offset, t->offset, &start) ||
                __builtin_add_overflow(start, t->nbytes, &end))
                return corrupt(r, "tensor %" PRIu64 " ('%s') data offset %" PRIu64 " lies far past "
                                  "the end of the %zu-byte file; the file is corrupt",
                               i, show(t->name).s, t->offset, f->size);
            return corrupt(r, "tensor %" PRIu64 " ('%s') data ends at byte %" PRIu64 " but the "
                              "file has %zu bytes; the file is truncated, download it again",
                           i, show(t->name).s, end, f->size);
        }
        t->data = f->map + f->data_offset + t->offset;
    }
    if (f->n_tensors < 2) return OKV_OK;
    const gguf_tensor_info **ix = malloc(f->n_tensors * sizeof *ix);
    if (!ix) return okv_fail(OKV_ERR_NOMEM, "%s: cannot allocate the index of %" PRIu64 " tensors",
                             r->path, f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++) ix[i] = &f->tensors[i];
    int st = OKV_OK;
    qsort(ix, f->n_tensors, sizeof *ix, cmp_tensor_name);
    for (uint64_t i = 1; i < f->n_tensors && !st; i++)
        if (str_cmp(ix[i - 1]->name, ix[i]->name) == 0) {
            uint64_t a = (uint64_t)(ix[i - 1] - f->tensors), b = (uint64_t)(ix[i] - f->tensors);
            st = corrupt(r, "duplicate tensor name '%s' (tensors %" PRIu64 " and %" PRIu64 "); the "
                            "file is corrupt", show(ix[i]->name).s, a < b ? a : b, a < b ? b : a);
        }
    if (!st) {
        qsort(ix, f->n_tensors, sizeof *ix, cmp_tensor_offset);
        for (uint64_t i = 1; i < f->n_tensors && !st; i++) {
            const gguf_tensor_info *a = ix[i - 1], *b = ix[i];
            if (b->offset < a->offset + a->nbytes)
                st = corrupt(r, "tensor %" PRIu64 " ('%s') data [%" PRIu64 ", %" PRIu64 ") overlaps "
                                "tensor %" PRIu64 " ('%s') data [%" PRIu64 ", %" PRIu64 "); the "
                                "file is corrupt", (uint64_t)(b - f->tensors), show(b->name).s,
                             b->offset, b->offset + b->nbytes, (uint64_t)(a - f->tensors),
                             show(a->name).s, a->offset, a->offset + a->nbytes);
        }
    }
    free(ix);
    return st;
}

static int parse(gguf_file *f) {
    rd r = {.p = f->map, .size = f->size, .pos = 0, .path = f->path};
    if (f->size < 4)
        return corrupt(&r, "the file has %zu bytes, too few for a GGUF header; it is truncated or "
                           "not a model file", f->size);
    uint32_t magic = rd_u32(&r);
    if (magic != GGUF_MAGIC)
        return corrupt(&r, "bad magic 0x%08x (expected 0x%08x, \"GGUF\"); this is not a GGUF model "
                           "file", magic, GGUF_MAGIC);
    RD_NEED(&r, 4, "header version");
    f->version = rd_u32(&r);
    if (f->version == 1)
        return corrupt(&r, "GGUF version 1 is not supported (only 2 and 3); convert the model "
                           "again with a current llama.cpp");
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffffu) == 0)
            return corrupt(&r, "GGUF version field reads 0x%08x, which looks like a big-endian "
                               "file; only little-endian GGUF is supported", f->version);
        return corrupt(&r, "GGUF version %u is not supported (only 2 and 3); the file is corrupt "
                           "or from a newer format", f->version);
    }
    RD_NEED(&r, 16, "header tensor and kv counts");
    f->n_tensors = rd_u64(&r);
    f->n_kv = rd_u64(&r);
    uint64_t room = f->size - r.pos;
    if (f->n_kv > room / GGUF_MIN_KV_BYTES ||
        f->n_tensors > (room - f->n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return corrupt(&r, "the header count of %" PRIu64 " kv pairs and %" PRIu64 " tensors cannot "
                           "fit in the %zu-byte file; the file is truncated or corrupt",
                       f->n_kv, f->n_tensors, f->size);
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors)
        return okv_fail(OKV_ERR_NOMEM, "%s: cannot allocate tables for %" PRIu64 " kv pairs and %"
                        PRIu64 " tensors", f->path, f->n_kv, f->n_tensors);
    int st;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if ((st = parse_kv(&r, &f->kv[i], i))) return st;
    if ((st = check_unique_keys(&r, f))) return st;
    if ((st = read_alignment(&r, f))) return st;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if ((st = parse_tensor(&r, f, &f->tensors[i], i))) return st;
    f->data_offset = (r.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (f->n_tensors && f->data_offset > f->size)
        return corrupt(&r, "the tensor data section starts at byte %" PRIu64 " (the tensor table "
                           "padded to the alignment %u) but the file has %zu bytes; the file is "
                           "truncated, download it again", f->data_offset, f->alignment, f->size);
    return check_tensor_layout(&r, f);
}

static void set_path(gguf_file *f, const char *path) {
    size_t n = strlen(path);
    if (n >= sizeof f->path) { /* keep the tail, which holds the file name */
        path += n - (sizeof f->path - 4);
        snprintf(f->path, sizeof f->path, "...%s", path);
    } else {
        memcpy(f->path, path, n + 1);
    }
}

int gguf_open_mem(gguf_file *f, const void *data, size_t size) {
    memset(f, 0, sizeof *f);
    set_path(f, "<memory>");
    f->map = data;
    f->size = size;
    int st = parse(f);
    if (st) gguf_close(f);
    return st;
}

int gguf_open(gguf_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    set_path(f, path);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return okv_fail(OKV_ERR_INPUT, "%s: cannot open: %s; check the model path", path,
                        strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return okv_fail(OKV_ERR_INPUT, "%s: not a regular file; give the path of a .gguf file",
                        path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return okv_fail(OKV_ERR_INPUT, "%s: the file is empty (0 bytes); download it again", path);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (m == MAP_FAILED)
        return okv_fail(OKV_ERR_INPUT, "%s: cannot map %lld bytes: %s", path,
                        (long long)sb.st_size, strerror(err));
    f->map = m;
    f->size = (size_t)sb.st_size;
    f->owns_map = true;
    int st = parse(f);
    if (st) gguf_close(f);
    return st;
}

void gguf_close(gguf_file *f) {
    if (f->owns_map && f->map) munmap((void *)f->map, f->size);
    free(f->kv);
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static int wrong_type(const gguf_file *f, const gguf_kv *kv, const char *want) {
    return okv_fail(OKV_ERR_INPUT, "%s: key '%s' has type %s but %s is expected; the file is "
                    "corrupt or not a supported model", f->path, show(kv->key).s,
                    gguf_vtype_name(kv->type), want);
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, bool *found) {
    const gguf_kv *kv = gguf_find(f, key);
    *found = kv != NULL;
    if (!kv) return OKV_OK;
    if (!vtype_is_int(kv->type)) return wrong_type(f, kv, "an integer");
    if (!vtype_is_signed(kv->type) && kv->num.u > (uint64_t)INT64_MAX)
        return okv_fail(OKV_ERR_INPUT, "%s: key '%s' is %" PRIu64 ", too large for a signed 64-bit "
                        "value; the file is corrupt", f->path, key, kv->num.u);
    *out = vtype_is_signed(kv->type) ? kv->num.i : (int64_t)kv->num.u;
    return OKV_OK;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out, bool *found) {
    const gguf_kv *kv = gguf_find(f, key);
    *found = kv != NULL;
    if (!kv) return OKV_OK;
    if (kv->type != GGUF_VT_F32 && kv->type != GGUF_VT_F64) return wrong_type(f, kv, "a float");
    *out = (float)kv->num.f;
    return OKV_OK;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out, bool *found) {
    const gguf_kv *kv = gguf_find(f, key);
    *found = kv != NULL;
    if (!kv) return OKV_OK;
    if (kv->type != GGUF_VT_BOOL) return wrong_type(f, kv, "a bool");
    *out = kv->num.b;
    return OKV_OK;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, bool *found) {
    const gguf_kv *kv = gguf_find(f, key);
    *found = kv != NULL;
    if (!kv) return OKV_OK;
    if (kv->type != GGUF_VT_STRING) return wrong_type(f, kv, "a string");
    *out = kv->str;
    return OKV_OK;
}

int gguf_get_arr(const gguf_file *f, const char *key, gguf_vtype *elem_type, uint64_t *n,
                 const uint8_t **data, bool *found) {
    const gguf_kv *kv = gguf_find(f, key);
    *found = kv != NULL;
    if (!kv) return OKV_OK;
    if (kv->type != GGUF_VT_ARRAY) return wrong_type(f, kv, "an array");
    *elem_type = kv->arr_type;
    *n = kv->arr_n;
    *data = kv->arr_data;
    return OKV_OK;
}

void gguf_str_iter_init(gguf_str_iter *it, const gguf_kv *kv) {
    bool ok = kv->type == GGUF_VT_ARRAY && kv->arr_type == GGUF_VT_STRING;
    it->p = ok ? kv->arr_data : NULL;
    it->left = ok ? kv->arr_n : 0;
}

gguf_str gguf_str_iter_next(gguf_str_iter *it) {
    gguf_str s = {NULL, 0};
    if (it->left == 0) return s;
    memcpy(&s.len, it->p, 8);
    s.ptr = (const char *)it->p + 8;
    it->p += 8 + s.len;
    it->left--;
    return s;
}

/* ---- summary ------------------------------------------------------------------------------- */

static void print_str(FILE *out, gguf_str s, size_t max) {
    fputc('"', out);
    size_t n = s.len > max ? max : (size_t)s.len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '\n') fputs("\\n", out);
        else if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 32 || c == 127) fprintf(out, "\\x%02x", c);
        else fputc(c, out);
    }
    fputc('"', out);
    if (s.len > max) fprintf(out, "... (%" PRIu64 " bytes)", s.len);
}

int gguf_print_summary(const gguf_file *f, FILE *out) {
    uint64_t total = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) total += f->tensors[i].nbytes;
    fprintf(out, "%s: GGUF v%u, %zu bytes, %" PRIu64 " kv, %" PRIu64 " tensors (%.1f MiB), "
            "alignment %u, data at byte %" PRIu64 "\n", f->path, f->version, f->size, f->n_kv,
            f->n_tensors, (double)total / (1024.0 * 1024.0), f->alignment, f->data_offset);
    fprintf(out, "metadata:\n");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        fprintf(out, "  %-44s = ", show(kv->key).s);
        switch (kv->type) {
        case GGUF_VT_STRING: print_str(out, kv->str, 80); break;
        case GGUF_VT_ARRAY:
            fprintf(out, "%s[%" PRIu64 "]", gguf_vtype_name(kv->arr_type), kv->arr_n);
            break;
        case GGUF_VT_BOOL: fputs(kv->num.b ? "true" : "false", out); break;
        case GGUF_VT_F32:
        case GGUF_VT_F64: fprintf(out, "%.9g", kv->num.f); break;
        default:
            if (vtype_is_signed(kv->type)) fprintf(out, "%" PRId64, kv->num.i);
            else fprintf(out, "%" PRIu64, kv->num.u);
        }
        fputc('\n', out);
    }
    fprintf(out, "tensors:\n  %5s %-36s %-5s %-28s %14s\n", "#", "name", "type", "shape (ne)",
            "bytes");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor_info *t = &f->tensors[i];
        char shape[96];
        int n = snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        snprintf(shape + n, sizeof shape - (size_t)n, "]");
        fprintf(out, "  %5" PRIu64 " %-36s %-5s %-28s %14" PRIu64 "\n", i, show(t->name).s,
                okv_type_name(t->type), shape, t->nbytes);
    }
    if (ferror(out)) return okv_fail(OKV_ERR_INPUT, "writing the summary of %s failed", f->path);
    return OKV_OK;
}

/* ---- writer -------------------------------------------------------------------------------- */

typedef struct wtensor {
    char *name;
    okv_type type;
    int n_dims;
    int64_t ne[4];
    uint64_t nbytes, offset; /* offset within the data section */
    uint8_t *data;           /* copy made by gguf_w_tensor; NULL when streamed */
} wtensor;

typedef struct wbuf { uint8_t *p; size_t len, cap; } wbuf;

struct gguf_writer {
    uint32_t alignment;
    int err;         /* first failure; later calls return it */
    wbuf kv;         /* serialised kv pairs */
    uint64_t n_kv;
    char **keys;     /* [n_kv], for the uniqueness check */
    wtensor *t;      /* [n_t] */
    uint64_t n_t, cap_t;
    uint64_t data_size;
    FILE *fp;        /* open between begin and finish */
    char *path, *part;
    uint64_t cur, cur_done; /* streaming position: tensor index and bytes of it written */
};

static void wbuf_put(gguf_writer *w, const void *p, size_t n) {
    if (w->err || n == 0) return;
    wbuf *b = &w->kv;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            w->err = okv_fail(OKV_ERR_NOMEM, "cannot allocate %zu bytes of GGUF metadata", cap);
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void wbuf_str(gguf_writer *w, const char *s, size_t n) {
    uint64_t len = n;
    wbuf_put(w, &len, 8);
    wbuf_put(w, s, n);
}

/* Starts a kv: checks the key is new and writes it with the value type. */
static void w_key(gguf_writer *w, const char *key, gguf_vtype t) {
    OKV_ASSERT(key && key[0]);
    for (uint64_t i = 0; i < w->n_kv; i++) OKV_ASSERT(strcmp(w->keys[i], key) != 0);
    OKV_ASSERT(!w->fp); /* metadata is written by begin */
    if (w->err) return;
    char **k = realloc(w->keys, (w->n_kv + 1) * sizeof *k);
    char *dup = strdup(key);
    if (k) w->keys = k;
    if (!k || !dup) {
        free(dup);
        w->err = okv_fail(OKV_ERR_NOMEM, "cannot allocate GGUF key '%s'", key);
        return;
    }
    w->keys[w->n_kv++] = dup;
    wbuf_str(w, key, strlen(key));
    uint32_t tt = t;
    wbuf_put(w, &tt, 4);
}

gguf_writer *gguf_writer_new(uint32_t alignment) {
    if (alignment == 0) alignment = GGUF_DEFAULT_ALIGNMENT;
    OKV_ASSERT((alignment & (alignment - 1)) == 0 && alignment <= (1u << 30));
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = alignment;
    if (alignment != GGUF_DEFAULT_ALIGNMENT) gguf_w_u32(w, "general.alignment", alignment);
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->fp) {
        fclose(w->fp);
        unlink(w->part);
    }
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (uint64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv.p);
    free(w->path);
    free(w->part);
    free(w);
}

void gguf_w_scalar(gguf_writer *w, const char *key, gguf_vtype t, const void *v) {
    size_t sz = vtype_size(t);
    OKV_ASSERT(sz > 0);
    w_key(w, key, t);
    if (t == GGUF_VT_BOOL) {
        uint8_t b = *(const bool *)v ? 1 : 0;
        wbuf_put(w, &b, 1);
    } else {
        wbuf_put(w, v, sz);
    }
}

void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) { gguf_w_scalar(w, key, GGUF_VT_U32, &v); }
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v) { gguf_w_scalar(w, key, GGUF_VT_I32, &v); }
void gguf_w_f32(gguf_writer *w, const char *key, float v) { gguf_w_scalar(w, key, GGUF_VT_F32, &v); }
void gguf_w_bool(gguf_writer *w, const char *key, bool v) { gguf_w_scalar(w, key, GGUF_VT_BOOL, &v); }

void gguf_w_str(gguf_writer *w, const char *key, const char *v) {
    w_key(w, key, GGUF_VT_STRING);
    wbuf_str(w, v, strlen(v));
}

void gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *v, uint64_t n) {
    size_t sz = vtype_size(elem);
    OKV_ASSERT(sz > 0);
    w_key(w, key, GGUF_VT_ARRAY);
    uint32_t et = elem;
    wbuf_put(w, &et, 4);
    wbuf_put(w, &n, 8);
    if (elem == GGUF_VT_BOOL) { /* bool is one byte in the file whatever the C type's size */
        for (uint64_t i = 0; i < n; i++) {
            uint8_t b = ((const bool *)v)[i] ? 1 : 0;
            wbuf_put(w, &b, 1);
        }
    } else {
        wbuf_put(w, v, (size_t)(n * sz));
    }
}

void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    w_key(w, key, GGUF_VT_ARRAY);
    uint32_t et = GGUF_VT_STRING;
    wbuf_put(w, &et, 4);
    wbuf_put(w, &n, 8);
    for (uint64_t i = 0; i < n; i++) wbuf_str(w, v[i], strlen(v[i]));
}

void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    gguf_w_arr(w, key, GGUF_VT_I32, v, n);
}

void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n) {
    gguf_w_arr(w, key, GGUF_VT_F32, v, n);
}

void gguf_w_tensor_info(gguf_writer *w, const char *name, okv_type type, int n_dims,
                        const int64_t *ne) {
    OKV_ASSERT(name && name[0] && n_dims >= 1 && n_dims <= 4 && !w->fp);
    OKV_ASSERT(type < OKV_TYPE_COUNT && okv_type_block_bytes(type) > 0);
    for (uint64_t i = 0; i < w->n_t; i++) OKV_ASSERT(strcmp(w->t[i].name, name) != 0);
    if (w->err) return;
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    uint64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        OKV_ASSERT(ne[d] >= 1);
        t.ne[d] = ne[d];
        if (d) rows *= (uint64_t)ne[d];
    }
    OKV_ASSERT(ne[0] % okv_type_block_elems(type) == 0);
    t.nbytes = okv_type_row_bytes(type, ne[0]) * rows;
    t.offset = w->data_size;
    if (w->n_t == w->cap_t) {
        uint64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *q = realloc(w->t, cap * sizeof *q);
        if (!q) {
            w->err = okv_fail(OKV_ERR_NOMEM, "cannot allocate the GGUF tensor table");
            return;
        }
        w->t = q;
        w->cap_t = cap;
    }
    t.name = strdup(name);
    if (!t.name) {
        w->err = okv_fail(OKV_ERR_NOMEM, "cannot allocate GGUF tensor name '%s'", name);
        return;
    }
    w->t[w->n_t++] = t;
    w->data_size += (t.nbytes + w->alignment - 1) / w->alignment * w->alignment;
}

void gguf_w_tensor(gguf_writer *w, const char *name, okv_type type, int n_dims,
                   const int64_t *ne, const void *data) {
    gguf_w_tensor_info(w, name, type, n_dims, ne);
    if (w->err) return;
    wtensor *t = &w->t[w->n_t - 1];
    t->data = malloc(t->nbytes);
    if (!t->data) {
        w->err = okv_fail(OKV_ERR_NOMEM, "cannot allocate %" PRIu64 " bytes for tensor '%s'; use "
                          "the streaming writer", t->nbytes, name);
        return;
    }
    memcpy(t->data, data, t->nbytes);
}

static void w_file(gguf_writer *w, const void *p, size_t n) {
    if (w->err || n == 0) return;
    if (fwrite(p, 1, n, w->fp) != n)
        w->err = okv_fail(OKV_ERR_INPUT, "%s: write failed: %s; check free disk space", w->part,
                          strerror(errno));
}

static void w_pad(gguf_writer *w, uint64_t pos) {
    static const uint8_t zeros[64];
    uint64_t pad = (w->alignment - pos % w->alignment) % w->alignment;
    while (pad) {
        size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        w_file(w, zeros, n);
        pad -= n;
    }
}

int gguf_writer_begin(gguf_writer *w, const char *path) {
    OKV_ASSERT(!w->fp && !w->path);
    if (w->err) return w->err;
    if ((w->err = okv_output_check(path, "model file", false))) return w->err;
    /* The file is written beside a symlink's target and renamed onto it, so the link stays. */
    char real[PATH_MAX];
    if (!okv_link_target(path, real, sizeof real))
        return w->err = okv_fail(OKV_ERR_USAGE, "model file '%s': its symbolic links cannot be "
                                 "followed to a file; give the target's path", path);
    path = real;
    size_t n = strlen(path);
    w->path = strdup(path);
    w->part = malloc(n + 6);
    if (!w->path || !w->part) return w->err = okv_fail(OKV_ERR_NOMEM, "out of memory");
    memcpy(w->part, path, n);
    memcpy(w->part + n, ".part", 6);
    w->fp = fopen(w->part, "wb");
    if (!w->fp)
        return w->err = okv_fail(OKV_ERR_INPUT, "%s: cannot create: %s; check that the directory "
                                 "exists and is writable", w->part, strerror(errno));
    setvbuf(w->fp, NULL, _IOFBF, 1 << 20);
    uint32_t hdr[2] = {GGUF_MAGIC, 3};
    w_file(w, hdr, 8);
    w_file(w, &w->n_t, 8);
    w_file(w, &w->n_kv, 8);
    w_file(w, w->kv.p, w->kv.len);
    uint64_t pos = 24 + w->kv.len;
    for (uint64_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, type = (uint32_t)t->type;
        w_file(w, &len, 8);
        w_file(w, t->name, len);
        w_file(w, &nd, 4);
        w_file(w, t->ne, 8u * nd);
        w_file(w, &type, 4);
        w_file(w, &t->offset, 8);
        pos += 8 + len + 4 + 8u * nd + 4 + 8;
    }
    w_pad(w, pos);
    w->cur = 0;
    w->cur_done = 0;
    return w->err;
}

int gguf_writer_write(gguf_writer *w, const void *data, size_t n) {
    OKV_ASSERT(w->fp);
    const uint8_t *p = data;
    while (n && !w->err) {
        OKV_ASSERT(w->cur < w->n_t); /* more data than the declared tensors hold */
        const wtensor *t = &w->t[w->cur];
        uint64_t take = t->nbytes - w->cur_done;
        if (take > n) take = n;
        w_file(w, p, (size_t)take);
        p += take;
        n -= (size_t)take;
        w->cur_done += take;
        if (w->cur_done == t->nbytes) {
            w_pad(w, t->nbytes);
            w->cur++;
            w->cur_done = 0;
        }
    }
    return w->err;
}

int gguf_writer_finish(gguf_writer *w) {
    OKV_ASSERT(w->fp);
    if (!w->err) OKV_ASSERT(w->cur == w->n_t && w->cur_done == 0); /* every byte was given */
    if (!w->err && fflush(w->fp) != 0)
        w->err = okv_fail(OKV_ERR_INPUT, "%s: write failed: %s; check free disk space", w->part,
                          strerror(errno));
    int cl = fclose(w->fp);
    w->fp = NULL;
    if (!w->err && cl != 0)
        w->err = okv_fail(OKV_ERR_INPUT, "%s: write failed: %s; check free disk space", w->part,
                          strerror(errno));
    if (!w->err && rename(w->part, w->path) != 0)
        w->err = okv_fail(OKV_ERR_INPUT, "%s: cannot rename to %s: %s", w->part, w->path,
                          strerror(errno));
    if (w->err) unlink(w->part);
    return w->err;
}

int gguf_writer_save(gguf_writer *w, const char *path) {
    int st = gguf_writer_begin(w, path);
    for (uint64_t i = 0; i < w->n_t && !st; i++) {
        OKV_ASSERT(w->t[i].data); /* declared with gguf_w_tensor_info: stream it instead */
        st = gguf_writer_write(w, w->t[i].data, (size_t)w->t[i].nbytes);
    }
    if (w->fp) st = gguf_writer_finish(w);
    return st;
}
