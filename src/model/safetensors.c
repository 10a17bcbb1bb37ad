/* safetensors.c — safetensors header parsing (cJSON) with bounds, size and overlap checks, mmap of
 * shards, and the sharded-checkpoint index. Tested by tests/unit/test_safetensors.c and fuzzed
 * through st_open_mem by tests/fuzz/fuzz_safetensors.c. */
#include "safetensors.h"

#include "../common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    int bits;
    st_dtype dtype;
} dtype_table[] = {
    {"F32", 32, ST_DTYPE_F32},      {"F16", 16, ST_DTYPE_F16},
    {"BF16", 16, ST_DTYPE_BF16},    {"F8_E4M3", 8, ST_DTYPE_F8_E4M3},
    {"F64", 64, ST_DTYPE_OTHER},    {"C64", 64, ST_DTYPE_OTHER},
    {"I64", 64, ST_DTYPE_OTHER},    {"U64", 64, ST_DTYPE_OTHER},
    {"I32", 32, ST_DTYPE_OTHER},    {"U32", 32, ST_DTYPE_OTHER},
    {"I16", 16, ST_DTYPE_OTHER},    {"U16", 16, ST_DTYPE_OTHER},
    {"I8", 8, ST_DTYPE_OTHER},      {"U8", 8, ST_DTYPE_OTHER},
    {"BOOL", 8, ST_DTYPE_OTHER},    {"F8_E5M2", 8, ST_DTYPE_OTHER},
    {"F8_E8M0", 8, ST_DTYPE_OTHER}, {"F6_E2M3", 6, ST_DTYPE_OTHER},
    {"F6_E3M2", 6, ST_DTYPE_OTHER}, {"F4", 4, ST_DTYPE_OTHER},
};

size_t st_dtype_size(st_dtype t) {
    switch (t) {
    case ST_DTYPE_F32: return 4;
    case ST_DTYPE_F16:
    case ST_DTYPE_BF16: return 2;
    case ST_DTYPE_F8_E4M3: return 1;
    default: return 0;
    }
}

/* A JSON number that is an exact non-negative integer below 2^53 (where doubles stay exact). */
static bool json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static void format_shape(const st_tensor *t, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_by_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_entry(st_file *f, const cJSON *e, st_tensor *t) {
    const char *p = f->path, *n = t->name;
    if (!cJSON_IsObject(e))
        return okv_fail(OKV_ERR_INPUT, "%s: header entry of tensor '%s' is not a JSON object", p, n);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has no string field 'dtype'", p, n);
    t->dtype_name = NULL;
    for (size_t i = 0; i < sizeof dtype_table / sizeof *dtype_table; i++)
        if (!strcmp(dt->valuestring, dtype_table[i].name)) {
            t->dtype_name = dtype_table[i].name;
            t->bits = dtype_table[i].bits;
            t->dtype = dtype_table[i].dtype;
        }
    if (!t->dtype_name)
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has unknown dtype '%.64s'", p, n,
                        dt->valuestring);

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(sh))
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has no array field 'shape'", p, n);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has %d dimensions; at most %d are supported",
                        p, n, nd, ST_MAX_DIMS);
    t->n_dims = nd;
    uint64_t elems = 1;
    bool overflow = false;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (!json_u64(cJSON_GetArrayItem(sh, d), &v))
            return okv_fail(OKV_ERR_INPUT,
                            "%s: tensor '%s' shape entry %d is not a non-negative integer", p, n, d);
        t->shape[d] = (int64_t)v;
        overflow |= __builtin_mul_overflow(elems, v, &elems);
    }
    t->n_elems = elems;

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_u64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        !json_u64(cJSON_GetArrayItem(off, 1), &t->end))
        return okv_fail(OKV_ERR_INPUT,
                        "%s: tensor '%s' field 'data_offsets' is not a pair of non-negative integers",
                        p, n);
    if (t->begin > t->end)
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has data_offsets [%llu, %llu) with begin > end",
                        p, n, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > f->data_size)
        return okv_fail(OKV_ERR_INPUT,
                        "%s: tensor '%s' data_offsets [%llu, %llu) lie outside the %llu-byte data "
                        "section; the file is truncated or corrupt",
                        p, n, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)f->data_size);
    uint64_t bits;
    char shape[160];
    format_shape(t, shape, sizeof shape);
    if (overflow || __builtin_mul_overflow(elems, (uint64_t)t->bits, &bits))
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' shape %s is too large", p, n, shape);
    if (bits % 8 || bits / 8 != t->end - t->begin)
        return okv_fail(OKV_ERR_INPUT,
                        "%s: tensor '%s' has %llu bytes at data_offsets [%llu, %llu) but dtype %s "
                        "and shape %s need %llu%s",
                        p, n, (unsigned long long)(t->end - t->begin),
                        (unsigned long long)t->begin, (unsigned long long)t->end, t->dtype_name,
                        shape, (unsigned long long)(bits / 8), bits % 8 ? " and a fraction" : "");
    t->data = f->map + 8 + f->header_len + t->begin;
    return OKV_OK;
}

static int parse_header(st_file *f) {
    const char *p = f->path;
    if (f->size < 8)
        return okv_fail(OKV_ERR_INPUT,
                        "%s is %zu bytes, too short to hold the 8-byte safetensors header length",
                        p, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->map[i];
    if (n > f->size - 8)
        return okv_fail(OKV_ERR_INPUT,
                        "%s: header length %llu exceeds the %zu bytes that follow it; the file is "
                        "truncated or not safetensors",
                        p, (unsigned long long)n, f->size - 8);
    if (n > ST_MAX_HEADER)
        return okv_fail(OKV_ERR_INPUT, "%s: header length %llu exceeds the format's limit of %u bytes",
                        p, (unsigned long long)n, ST_MAX_HEADER);
    f->header_len = n;
    f->data_size = f->size - 8 - n;

    const char *json = (const char *)f->map + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, 0);
    if (!root) {
        long at = end ? (long)(end - json) : 0;
        return okv_fail(OKV_ERR_INPUT, "%s: header is not valid JSON (parse error at byte %ld of %llu)",
                        p, at, (unsigned long long)n);
    }
    int st = OKV_OK;
    for (const char *q = end; q < json + n; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            st = okv_fail(OKV_ERR_INPUT,
                          "%s: header has bytes after its JSON object (at byte %ld of %llu)", p,
                          (long)(q - json), (unsigned long long)n);
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        st = okv_fail(OKV_ERR_INPUT, "%s: header is JSON but not an object", p);
        goto done;
    }
    int count = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) count++;
    f->tensors = calloc((size_t)count + 1, sizeof *f->tensors);
    OKV_ASSERT(f->tensors);
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(e->string);
        OKV_ASSERT(t->name);
        f->n_tensors++;
        if ((st = parse_entry(f, e, t))) goto done;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_by_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name)) {
            st = okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' appears twice in the header", p,
                          f->tensors[i].name);
            goto done;
        }

    /* Overlap: sort views by begin; empty tensors own no bytes and cannot overlap. */
    const st_tensor **by_off = malloc(sizeof *by_off * ((size_t)f->n_tensors + 1));
    OKV_ASSERT(by_off);
    int m = 0;
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].end > f->tensors[i].begin) by_off[m++] = &f->tensors[i];
    qsort(by_off, (size_t)m, sizeof *by_off, cmp_by_begin);
    for (int i = 1; i < m; i++)
        if (by_off[i]->begin < by_off[i - 1]->end) {
            const st_tensor *a = by_off[i - 1], *b = by_off[i];
            st = okv_fail(OKV_ERR_INPUT,
                          "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", p,
                          a->name, (unsigned long long)a->begin, (unsigned long long)a->end,
                          b->name, (unsigned long long)b->begin, (unsigned long long)b->end);
            break;
        }
    free(by_off);
done:
    cJSON_Delete(root);
    return st;
}

int st_open_mem(st_file *f, const void *data, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    f->path = strdup(name ? name : "(memory)");
    OKV_ASSERT(f->path);
    f->map = data;
    f->size = size;
    return parse_header(f);
}

int st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    OKV_ASSERT(f->path);
    /* O_NONBLOCK: a FIFO must not wait for a writer; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return okv_fail(OKV_ERR_INPUT, "cannot open safetensors file '%s': %s", path, strerror(errno));
    struct stat sb;
    CHECK_SYS(fstat(fd, &sb));
    int st = OKV_OK;
    f->size = (size_t)sb.st_size;
    if (!S_ISREG(sb.st_mode)) {
        st = okv_fail(OKV_ERR_INPUT, "safetensors path '%s' is not a regular file", path);
    } else if (f->size >= 8) {
        /* The mapping outlives the descriptor, so nothing but the mapping is kept. */
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            st = okv_fail(OKV_ERR_INPUT, "cannot map safetensors file '%s' (%zu bytes): %s", path,
                          f->size, strerror(errno));
        } else {
            f->map = p;
            f->owns_map = true;
        }
    }
    close(fd);
    return st ? st : parse_header(f);
}

void st_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    if (f->owns_map && f->map) munmap((void *)f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_by_name);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->tensor, ((const st_entry *)b)->tensor);
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    OKV_ASSERT(s);
    snprintf(s, n, "%s/%s", dir, name);
    return s;
}

int st_read_text(const char *path, char **out) {
    /* Checked as a regular file before reading: a FIFO in a checkpoint would block. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return okv_fail(OKV_ERR_INPUT, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    FILE *fp = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || !(fp = fdopen(fd, "rb"))) {
        close(fd);
        return okv_fail(OKV_ERR_INPUT, "'%s' is not a regular file; a checkpoint holds files", path);
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 65536;
            char *g = realloc(buf, cap);
            OKV_ASSERT(g);
            buf = g;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, fp);
        len += r;
        if (r == 0) break;
    }
    bool err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        return okv_fail(OKV_ERR_INPUT, "cannot read '%s'", path);
    }
    buf[len] = 0;
    *out = buf;
    return OKV_OK;
}

static int add_shard(st_checkpoint *c, const char *name) {
    for (int i = 0; i < c->n_shards; i++)
        if (!strcmp(c->shards[i].name, name)) return i;
    st_shard *g = realloc(c->shards, sizeof *g * (size_t)(c->n_shards + 1));
    OKV_ASSERT(g);
    c->shards = g;
    st_shard *s = &c->shards[c->n_shards];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    OKV_ASSERT(s->name);
    return c->n_shards++;
}

static int read_index(st_checkpoint *c) {
    char *text = NULL;
    int st = st_read_text(c->index_path, &text);
    if (st) return st;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root) {
        st = okv_fail(OKV_ERR_INPUT, "%s is not valid JSON (parse error at byte %ld)", c->index_path,
                      end ? (long)(end - text) : 0L);
        free(text);
        return st;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        st = okv_fail(OKV_ERR_INPUT, "%s has no object field 'weight_map'", c->index_path);
        goto done;
    }
    int n = cJSON_GetArraySize(wm);
    c->entries = calloc((size_t)n + 1, sizeof *c->entries);
    OKV_ASSERT(c->entries);
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0]) {
            st = okv_fail(OKV_ERR_INPUT, "%s: weight_map entry of tensor '%s' is not a file name",
                          c->index_path, e->string);
            goto done;
        }
        if (e->valuestring[0] == '/' || strstr(e->valuestring, "..")) {
            st = okv_fail(OKV_ERR_INPUT,
                          "%s: weight_map puts tensor '%s' in '%s', which is outside the checkpoint "
                          "directory",
                          c->index_path, e->string, e->valuestring);
            goto done;
        }
        char *name = strdup(e->string);
        OKV_ASSERT(name);
        c->entries[c->n_entries].tensor = name;
        c->entries[c->n_entries].shard = add_shard(c, e->valuestring);
        c->n_entries++;
    }
    qsort(c->entries, (size_t)c->n_entries, sizeof *c->entries, cmp_entry);
    for (int i = 1; i < c->n_entries; i++)
        if (!strcmp(c->entries[i - 1].tensor, c->entries[i].tensor)) {
            st = okv_fail(OKV_ERR_INPUT, "%s: weight_map lists tensor '%s' twice", c->index_path,
                          c->entries[i].tensor);
            goto done;
        }
done:
    cJSON_Delete(root);
    free(text);
    return st;
}

int st_checkpoint_open(st_checkpoint *c, const char *dir) {
    memset(c, 0, sizeof *c);
    c->dir = strdup(dir);
    OKV_ASSERT(c->dir);
    char *index = path_join(dir, "model.safetensors.index.json");
    if (access(index, F_OK) == 0) {
        c->index_path = index;
        return read_index(c);
    }
    free(index);
    char *single = path_join(dir, "model.safetensors");
    bool have = access(single, F_OK) == 0;
    free(single);
    if (!have)
        return okv_fail(OKV_ERR_INPUT,
                        "%s has neither model.safetensors nor model.safetensors.index.json; omnikv "
                        "reads Hugging Face checkpoints in safetensors format",
                        dir);
    add_shard(c, "model.safetensors");
    return OKV_OK;
}

static int open_shard(st_checkpoint *c, int i) {
    st_shard *s = &c->shards[i];
    if (s->opened) return OKV_OK;
    char *path = path_join(c->dir, s->name);
    int st;
    if (access(path, F_OK) != 0) {
        st = okv_fail(OKV_ERR_INPUT, "shard file '%s' listed by %s is missing", path,
                      c->index_path ? c->index_path : "the checkpoint");
    } else {
        st_close(&s->file);
        st = st_open(&s->file, path);
    }
    free(path);
    if (st) return st;
    s->opened = true;
    return OKV_OK;
}

int st_checkpoint_has(st_checkpoint *c, const char *name, bool *has) {
    if (!c->index_path) {
        int st = open_shard(c, 0);
        if (st) return st;
        *has = st_find(&c->shards[0].file, name) != NULL;
        return OKV_OK;
    }
    st_entry key = {.tensor = name};
    *has = bsearch(&key, c->entries, (size_t)c->n_entries, sizeof key, cmp_entry) != NULL;
    return OKV_OK;
}

int st_checkpoint_find(st_checkpoint *c, const char *name, const st_tensor **t) {
    *t = NULL;
    int shard = 0;
    if (c->index_path) {
        st_entry key = {.tensor = name};
        const st_entry *e = bsearch(&key, c->entries, (size_t)c->n_entries, sizeof key, cmp_entry);
        if (!e) return OKV_OK;
        shard = e->shard;
    }
    int st = open_shard(c, shard);
    if (st) return st;
    *t = st_find(&c->shards[shard].file, name);
    if (!*t && c->index_path)
        return okv_fail(OKV_ERR_INPUT, "%s lists tensor '%s' in shard '%s', which does not hold it",
                        c->index_path, name, c->shards[shard].name);
    return OKV_OK;
}

int st_checkpoint_shards_opened(const st_checkpoint *c) {
    int n = 0;
    for (int i = 0; i < c->n_shards; i++) n += c->shards[i].opened;
    return n;
}

void st_checkpoint_close(st_checkpoint *c) {
    if (!c) return;
    for (int i = 0; i < c->n_shards; i++) {
        st_close(&c->shards[i].file);
        free(c->shards[i].name);
    }
    free(c->shards);
    for (int i = 0; i < c->n_entries; i++) free((char *)c->entries[i].tensor);
    free(c->entries);
    free(c->index_path);
    free(c->dir);
    memset(c, 0, sizeof *c);
}
