/* fuzz_gguf.c — libFuzzer target for the GGUF reader: any input must either be rejected with
 * OKV_ERR_INPUT or open into tables whose every string, array and tensor range can be walked
 * without reading outside the input. Built with -DOMNIKV_FUZZ=ON; run by tests/fuzz/run_fuzz.sh. */
#include "../../kernels/types.h"
#include "../../src/common.h"
#include "../../src/model/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads every byte a consumer could touch, so ASan sees any range that escapes the input. */
static uint64_t touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint64_t h = 0;
    for (uint64_t i = 0; i < n; i++) h = h * 31 + b[i];
    return h;
}

/* A string's text as a C string (freshly allocated), to look it up the way callers do. */
static char *c_string(gguf_str s) {
    char *c = malloc(s.len + 1);
    if (!c) abort();
    if (s.len) memcpy(c, s.ptr, s.len);
    c[s.len] = '\0';
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy sized exactly, so a read one past the end is caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    gguf_file f;
    int st = gguf_open_mem(&f, buf, size);
    if (st != OKV_OK) {
        if (st != OKV_ERR_INPUT && st != OKV_ERR_NOMEM) abort();
        if (strncmp(okv_last_error(), "<memory>: ", 10) != 0) abort();
        free(buf);
        return 0;
    }
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < f.n_kv; i++) {
        const gguf_kv *kv = &f.kv[i];
        sink += touch(kv->key.ptr, kv->key.len);
        char *key = c_string(kv->key);
        if (gguf_find(&f, key) != kv) abort(); /* keys are unique and NUL-free */
        free(key);
        if (kv->type == GGUF_VT_STRING) sink += touch(kv->str.ptr, kv->str.len);
        if (kv->type != GGUF_VT_ARRAY) continue;
        if (kv->arr_type == GGUF_VT_STRING) {
            gguf_str_iter it;
            gguf_str_iter_init(&it, kv);
            uint64_t n = 0;
            for (gguf_str s = gguf_str_iter_next(&it); s.ptr; s = gguf_str_iter_next(&it), n++)
                sink += touch(s.ptr, s.len);
            if (n != kv->arr_n) abort();
        } else {
            static const uint8_t esz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
            sink += touch(kv->arr_data, kv->arr_n * esz[kv->arr_type]);
        }
    }
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor_info *t = &f.tensors[i];
        sink += touch(t->name.ptr, t->name.len);
        char *name = c_string(t->name);
        if (gguf_find_tensor(&f, name) != t) abort(); /* names are unique and NUL-free */
        free(name);
        if ((const uint8_t *)t->data < buf || (const uint8_t *)t->data + t->nbytes > buf + size)
            abort();
        sink += touch(t->data, t->nbytes < 4096 ? t->nbytes : 4096);
        if (t->nbytes > 4096) sink += touch((const uint8_t *)t->data + t->nbytes - 4096, 4096);
        if (t->nbytes != okv_type_row_bytes(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]))
            abort();
    }
    static FILE *null;
    if (!null) null = fopen("/dev/null", "w");
    if (null) gguf_print_summary(&f, null);
    (void)sink;
    gguf_close(&f);
    free(buf);
    return 0;
}
