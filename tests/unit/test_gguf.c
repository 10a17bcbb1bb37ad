/* test_gguf.c — the GGUF reader and writer and the synthetic model generator: a writer/reader
 * round trip over every kv type and tensor type (bit-exact), generated models checked through the
 * reader (tables, metadata, tokenizer, values within one quantization step, determinism), and
 * corruptions of a valid file that must each fail with OKV_ERR_INPUT and a message naming the field. */
#include "../../kernels/backend.h"
#include "../../src/common.h"
#include "../../src/model/genmodel.h"
#include "../../src/model/gguf.h"
#include "../../src/model/model.h"
#include "../test_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* FNV-1a of the bits of two genmodel_values runs (see test_genmodel): pins the generator. */
#define GENMODEL_VALUES_HASH 0x65f8326a5f0439ceull

static char tmp_dir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k = 0;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *pa = test_read_file(a, &na), *pb = test_read_file(b, &nb);
    bool eq = na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return eq;
}

static bool str_is(gguf_str s, const char *c) { return gguf_str_eq(s, c); }

/* ---- (a) writer/reader round trip -------------------------------------------------------- */

typedef struct rt_tensor {
    const char *name;
    okv_type type;
    int n_dims;
    int64_t ne[4];
    uint8_t *data;
    size_t nbytes;
} rt_tensor;

static void fill_bytes(uint8_t *p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* Every value type once as a scalar and once as an array. */
static const uint8_t u8 = 200;
static const int8_t i8 = -100;
static const uint16_t u16 = 60000;
static const int16_t i16 = -30000;
static const uint32_t u32 = 4000000000u;
static const int32_t i32 = -2000000000;
static const float f32 = 3.25f;
static const bool bt = true;
static const uint64_t u64 = (1ull << 60) + 5;
static const int64_t i64 = -(1ll << 60) - 7;
static const double f64 = 1e300;
static const uint8_t a_u8[3] = {0, 1, 255};
static const int8_t a_i8[2] = {-128, 127};
static const uint16_t a_u16[2] = {1, 65535};
static const int16_t a_i16[3] = {-32768, 0, 32767};
static const uint32_t a_u32[2] = {7, 4294967295u};
static const int32_t a_i32[4] = {-1, 2, -3, 2147483647};
static const float a_f32[3] = {1.5f, -0.0f, 1e-30f};
static const bool a_bool[3] = {true, false, true};
static const uint64_t a_u64[2] = {UINT64_MAX, 0};
static const int64_t a_i64[2] = {INT64_MIN, INT64_MAX};
static const double a_f64[2] = {-2.5, 1e-300};
static const char *const a_str[4] = {"alpha", "", "g\xc4\xa0h", "line\nbreak"};

static void add_rt_kvs(gguf_writer *w) {
    gguf_w_scalar(w, "t.u8", GGUF_VT_U8, &u8);
    gguf_w_scalar(w, "t.i8", GGUF_VT_I8, &i8);
    gguf_w_scalar(w, "t.u16", GGUF_VT_U16, &u16);
    gguf_w_scalar(w, "t.i16", GGUF_VT_I16, &i16);
    gguf_w_u32(w, "t.u32", u32);
    gguf_w_i32(w, "t.i32", i32);
    gguf_w_f32(w, "t.f32", f32);
    gguf_w_bool(w, "t.bool", bt);
    gguf_w_scalar(w, "t.u64", GGUF_VT_U64, &u64);
    gguf_w_scalar(w, "t.i64", GGUF_VT_I64, &i64);
    gguf_w_scalar(w, "t.f64", GGUF_VT_F64, &f64);
    gguf_w_str(w, "t.str", "h\xc3\xa9llo \"world\"");
    gguf_w_str(w, "t.empty", "");
    gguf_w_arr(w, "a.u8", GGUF_VT_U8, a_u8, 3);
    gguf_w_arr(w, "a.i8", GGUF_VT_I8, a_i8, 2);
    gguf_w_arr(w, "a.u16", GGUF_VT_U16, a_u16, 2);
    gguf_w_arr(w, "a.i16", GGUF_VT_I16, a_i16, 3);
    gguf_w_arr(w, "a.u32", GGUF_VT_U32, a_u32, 2);
    gguf_w_arr_i32(w, "a.i32", a_i32, 4);
    gguf_w_arr_f32(w, "a.f32", a_f32, 3);
    gguf_w_arr(w, "a.bool", GGUF_VT_BOOL, a_bool, 3);
    gguf_w_arr(w, "a.u64", GGUF_VT_U64, a_u64, 2);
    gguf_w_arr(w, "a.i64", GGUF_VT_I64, a_i64, 2);
    gguf_w_arr(w, "a.f64", GGUF_VT_F64, a_f64, 2);
    gguf_w_arr_str(w, "a.str", a_str, 4);
    gguf_w_arr_i32(w, "a.none", NULL, 0);
}

static void test_round_trip(void) {
    gguf_writer *w = gguf_writer_new(64);
    OKV_ASSERT(w);
    add_rt_kvs(w);
    rt_tensor ts[] = {
        {"plain.f32", OKV_TYPE_F32, 2, {7, 3, 1, 1}, NULL, 0},
        {"w.f16", OKV_TYPE_F16, 2, {64, 2, 1, 1}, NULL, 0},
        {"v.bf16", OKV_TYPE_BF16, 1, {5, 1, 1, 1}, NULL, 0},
        {"w.q8_0", OKV_TYPE_Q8_0, 2, {64, 3, 1, 1}, NULL, 0},
        {"w.q4_0", OKV_TYPE_Q4_0, 3, {32, 2, 2, 1}, NULL, 0},
        {"w.q4_1", OKV_TYPE_Q4_1, 4, {96, 1, 1, 2}, NULL, 0},
    };
    const int nt = (int)(sizeof ts / sizeof ts[0]);
    for (int i = 0; i < nt; i++) {
        ts[i].nbytes = okv_type_row_bytes(ts[i].type, ts[i].ne[0]) *
                       (size_t)(ts[i].ne[1] * ts[i].ne[2] * ts[i].ne[3]);
        ts[i].data = malloc(ts[i].nbytes);
        fill_bytes(ts[i].data, ts[i].nbytes, (uint32_t)i + 1);
        gguf_w_tensor(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne, ts[i].data);
    }
    const char *path = tmp_path("rt.gguf");
    TEST_CHECK(gguf_writer_save(w, path) == OKV_OK, "%s", okv_last_error());
    char part[600];
    snprintf(part, sizeof part, "%s.part", path);
    TEST_CHECK(access(part, F_OK) != 0, "the .part file is left behind");
    gguf_writer_free(w);

    /* The same file streamed in 7-byte pieces that straddle tensor boundaries. */
    w = gguf_writer_new(64);
    add_rt_kvs(w);
    size_t all = 0;
    for (int i = 0; i < nt; i++) {
        gguf_w_tensor_info(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne);
        all += ts[i].nbytes;
    }
    uint8_t *cat = malloc(all);
    for (size_t i = 0, o = 0; i < (size_t)nt; o += ts[i].nbytes, i++) memcpy(cat + o, ts[i].data, ts[i].nbytes);
    const char *spath = tmp_path("rt_stream.gguf");
    TEST_CHECK(gguf_writer_begin(w, spath) == OKV_OK, "%s", okv_last_error());
    for (size_t o = 0; o < all; o += 7) gguf_writer_write(w, cat + o, all - o < 7 ? all - o : 7);
    TEST_CHECK(gguf_writer_finish(w) == OKV_OK, "%s", okv_last_error());
    gguf_writer_free(w);
    free(cat);
    TEST_CHECK(same_file(path, spath), "streamed file differs from the saved one");

    gguf_file f;
    int st = gguf_open(&f, path);
    TEST_CHECK(st == OKV_OK, "%s", okv_last_error());
    if (st) return;
    TEST_CHECK(f.version == 3 && f.alignment == 64, "version %u alignment %u", f.version, f.alignment);
    TEST_CHECK(f.n_kv == 27 && f.n_tensors == (uint64_t)nt, "n_kv %" PRIu64 " n_tensors %" PRIu64,
          f.n_kv, f.n_tensors);
    TEST_CHECK(f.data_offset % 64 == 0, "data offset %" PRIu64, f.data_offset);
    const gguf_kv *kv;
#define KV(key, ty) ((kv = gguf_find(&f, key)) != NULL && kv->type == (ty))
    TEST_CHECK(KV("general.alignment", GGUF_VT_U32) && kv->num.u == 64, "general.alignment");
    TEST_CHECK(KV("t.u8", GGUF_VT_U8) && kv->num.u == u8, "u8");
    TEST_CHECK(KV("t.i8", GGUF_VT_I8) && kv->num.i == i8, "i8");
    TEST_CHECK(KV("t.u16", GGUF_VT_U16) && kv->num.u == u16, "u16");
    TEST_CHECK(KV("t.i16", GGUF_VT_I16) && kv->num.i == i16, "i16");
    TEST_CHECK(KV("t.u32", GGUF_VT_U32) && kv->num.u == u32, "u32");
    TEST_CHECK(KV("t.i32", GGUF_VT_I32) && kv->num.i == i32, "i32");
    TEST_CHECK(KV("t.f32", GGUF_VT_F32) && kv->num.f == f32, "f32");
    TEST_CHECK(KV("t.bool", GGUF_VT_BOOL) && kv->num.b, "bool");
    TEST_CHECK(KV("t.u64", GGUF_VT_U64) && kv->num.u == u64, "u64");
    TEST_CHECK(KV("t.i64", GGUF_VT_I64) && kv->num.i == i64, "i64");
    TEST_CHECK(KV("t.f64", GGUF_VT_F64) && kv->num.f == f64, "f64");
    TEST_CHECK(KV("t.str", GGUF_VT_STRING) && str_is(kv->str, "h\xc3\xa9llo \"world\""), "str");
    TEST_CHECK(KV("t.empty", GGUF_VT_STRING) && kv->str.len == 0, "empty str");
#define ARR(key, et, arr) \
    TEST_CHECK(KV(key, GGUF_VT_ARRAY) && kv->arr_type == (et) && \
              kv->arr_n == sizeof(arr) / sizeof((arr)[0]) && \
              memcmp(kv->arr_data, arr, sizeof(arr)) == 0, "array %s", key)
    ARR("a.u8", GGUF_VT_U8, a_u8);
    ARR("a.i8", GGUF_VT_I8, a_i8);
    ARR("a.u16", GGUF_VT_U16, a_u16);
    ARR("a.i16", GGUF_VT_I16, a_i16);
    ARR("a.u32", GGUF_VT_U32, a_u32);
    ARR("a.i32", GGUF_VT_I32, a_i32);
    ARR("a.f32", GGUF_VT_F32, a_f32);
    ARR("a.u64", GGUF_VT_U64, a_u64);
    ARR("a.i64", GGUF_VT_I64, a_i64);
    ARR("a.f64", GGUF_VT_F64, a_f64);
    TEST_CHECK(KV("a.bool", GGUF_VT_ARRAY) && kv->arr_type == GGUF_VT_BOOL && kv->arr_n == 3 &&
              kv->arr_data[0] == 1 && kv->arr_data[1] == 0 && kv->arr_data[2] == 1, "bool array");
    TEST_CHECK(KV("a.none", GGUF_VT_ARRAY) && kv->arr_n == 0, "empty array");
    if (KV("a.str", GGUF_VT_ARRAY) && kv->arr_type == GGUF_VT_STRING && kv->arr_n == 4) {
        gguf_str_iter it;
        gguf_str_iter_init(&it, kv);
        for (int i = 0; i < 4; i++) {
            gguf_str s = gguf_str_iter_next(&it);
            TEST_CHECK(str_is(s, a_str[i]), "string array element %d", i);
        }
        TEST_CHECK(gguf_str_iter_next(&it).ptr == NULL, "iterator runs past the end");
    } else {
        TEST_CHECK(0, "string array missing");
    }

    /* Typed getters: conversions that fit, refusals that do not. */
    int64_t iv = 0;
    float fv = 0;
    bool bv = false, found = false;
    gguf_str sv;
    TEST_CHECK(gguf_get_i64(&f, "t.u8", &iv, &found) == OKV_OK && found && iv == 200, "i64 from u8");
    TEST_CHECK(gguf_get_i64(&f, "t.i16", &iv, &found) == OKV_OK && iv == -30000, "i64 from i16");
    TEST_CHECK(gguf_get_i64(&f, "t.u64", &iv, &found) == OKV_OK && iv == (int64_t)u64, "i64 from u64");
    TEST_CHECK(gguf_get_i64(&f, "a.u64", &iv, &found) == OKV_ERR_INPUT && strstr(okv_last_error(), "a.u64"),
          "an array is not an integer: %s", okv_last_error());
    TEST_CHECK(gguf_get_i64(&f, "t.str", &iv, &found) == OKV_ERR_INPUT &&
              strstr(okv_last_error(), "type string"), "%s", okv_last_error());
    iv = 42;
    TEST_CHECK(gguf_get_i64(&f, "no.such", &iv, &found) == OKV_OK && !found && iv == 42, "absent key");
    TEST_CHECK(gguf_get_f32(&f, "t.f64", &fv, &found) == OKV_OK && isinf(fv), "f32 from 1e300");
    TEST_CHECK(gguf_get_f32(&f, "t.f32", &fv, &found) == OKV_OK && fv == 3.25f, "f32");
    TEST_CHECK(gguf_get_f32(&f, "t.u8", &fv, &found) == OKV_ERR_INPUT, "f32 from u8 accepted");
    TEST_CHECK(gguf_get_bool(&f, "t.bool", &bv, &found) == OKV_OK && bv, "bool");
    TEST_CHECK(gguf_get_str(&f, "t.str", &sv, &found) == OKV_OK && sv.len == 14, "str");
    TEST_CHECK(gguf_get_str(&f, "t.u32", &sv, &found) == OKV_ERR_INPUT, "str from u32 accepted");
    gguf_vtype et;
    uint64_t an;
    const uint8_t *ad;
    TEST_CHECK(gguf_get_arr(&f, "a.i32", &et, &an, &ad, &found) == OKV_OK && et == GGUF_VT_I32 &&
              an == 4 && memcmp(ad, a_i32, sizeof a_i32) == 0, "get_arr");

    for (int i = 0; i < nt; i++) {
        const gguf_tensor_info *t = gguf_find_tensor(&f, ts[i].name);
        TEST_CHECK(t && t == &f.tensors[i], "tensor %s missing or out of order", ts[i].name);
        if (!t) continue;
        bool shape_ok = t->n_dims == ts[i].n_dims;
        for (int d = 0; d < 4; d++) shape_ok = shape_ok && t->ne[d] == ts[i].ne[d];
        TEST_CHECK(shape_ok && t->type == ts[i].type && t->nbytes == ts[i].nbytes,
              "tensor %s shape/type/bytes", ts[i].name);
        TEST_CHECK(t->offset % 64 == 0 && ((uintptr_t)t->data - (uintptr_t)f.map) % 64 == 0,
              "tensor %s offset %" PRIu64 " not aligned", ts[i].name, t->offset);
        TEST_CHECK(memcmp(t->data, ts[i].data, ts[i].nbytes) == 0, "tensor %s data differs", ts[i].name);
    }

    char *sum = NULL;
    size_t sum_len = 0;
    FILE *ms = open_memstream(&sum, &sum_len);
    TEST_CHECK(gguf_print_summary(&f, ms) == OKV_OK, "summary");
    fclose(ms);
    TEST_CHECK(strstr(sum, "a.str") && strstr(sum, "string[4]") && strstr(sum, "u8[3]") &&
              strstr(sum, "w.q4_1") && strstr(sum, "[96, 1, 1, 2]") && strstr(sum, "q4_0"),
          "summary lacks entries:\n%s", sum);
    free(sum);
    gguf_close(&f);
    gguf_close(&f); /* closing twice is harmless */
    for (int i = 0; i < nt; i++) free(ts[i].data);
    printf("round trip: 27 kv of all 13 value types and %d tensors of 6 types bit-exact; streamed "
           "file identical to saved one\n", nt);
}

/* ---- (a) generated models ------------------------------------------------------------------ */

/* One quantization step of the block (what rounding to the type may cost, at most). */
static double block_step(okv_type t, const float *x, int n) {
    float amax = 0, mn = x[0], mx = x[0];
    for (int i = 0; i < n; i++) {
        amax = fmaxf(amax, fabsf(x[i]));
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    switch (t) {
    case OKV_TYPE_Q8_0: return amax / 127.0;
    case OKV_TYPE_Q4_0: return amax / 8.0 * (1.0 + 1.0 / 512);
    case OKV_TYPE_Q4_1: return (mx - mn) / 15.0 + fabs(mn) / 1024.0;
    /* K-quants: the range over the level count, times 1.5 because each sub-block's scale (and
     * min) is itself quantized to 4-8 bits relative to the super-block's */
    case OKV_TYPE_Q2_K: return 1.5 * (mx - mn) / 3.0;
    case OKV_TYPE_Q3_K: return 1.5 * 2 * amax / 7.0;
    case OKV_TYPE_Q4_K: return 1.5 * (mx - mn) / 15.0;
    case OKV_TYPE_Q5_K: return 1.5 * (mx - mn) / 31.0;
    case OKV_TYPE_Q6_K: return 1.5 * 2 * amax / 63.0;
    /* -max clamps to code 31, a step off, and 15 steps of the f16-rounded d add 15 * 2^-11 */
    case OKV_TYPE_Q5_0: return amax / 16.0 * (1.0 + 1.0 / 128);
    case OKV_TYPE_Q5_1: return (mx - mn) / 31.0 + fabs(mn) / 1024.0;
    /* the widest gap of its table (24 of 127) or the clamp of its short side (113 of 127) */
    case OKV_TYPE_IQ4_NL: return amax / 8.0;
    default: return 0;
    }
}

/* Every element of every tensor against the generator: returns the worst error in steps. */
static double check_values(const gguf_file *f, uint64_t seed, const char *what) {
    double worst = 0;
    for (uint64_t ti = 0; ti < f->n_tensors; ti++) {
        const gguf_tensor_info *t = &f->tensors[ti];
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (!strcmp(name, "rope_freqs.weight")) continue;
        const int64_t ne0 = t->ne[0], rows = t->nbytes / okv_type_row_bytes(t->type, ne0);
        float *got = malloc((size_t)ne0 * sizeof *got), *want = malloc((size_t)ne0 * sizeof *want);
        int bad = 0;
        for (int64_t r = 0; r < rows && bad < 3; r++) {
            okv_dequant_row_ref(got, (const uint8_t *)t->data + r * okv_type_row_bytes(t->type, ne0),
                                t->type, ne0);
            genmodel_values(seed, name, r * ne0, ne0, want);
            for (int64_t b = 0; b < ne0; b += 32) {
                int n = ne0 - b < 32 ? (int)(ne0 - b) : 32;
                double step = block_step(t->type, want + b, n);
                for (int i = 0; i < n; i++) {
                    double e = fabs((double)got[b + i] - want[b + i]);
                    double tol = t->type == OKV_TYPE_F32   ? 0
                                 : t->type == OKV_TYPE_F16 ? fabs(want[b + i]) / 2048 + 6e-8
                                 : t->type == OKV_TYPE_BF16 ? fabs(want[b + i]) / 256
                                                            : step;
                    if (e > tol) {
                        if (bad++ < 3)
                            TEST_CHECK(0, "%s %s[%" PRId64 "]: got %g want %g (tolerance %g)", what,
                                  name, r * ne0 + b + i, got[b + i], want[b + i], tol);
                    }
                    if (step > 0) worst = fmax(worst, e / step);
                }
            }
        }
        free(got);
        free(want);
    }
    return worst;
}

static void check_tiny_tables(const gguf_file *f, okv_type type, const char *what) {
    int64_t v;
    bool found;
    gguf_str s;
    TEST_CHECK(gguf_get_str(f, "general.architecture", &s, &found) == OKV_OK && found &&
              str_is(s, "llama"), "%s architecture", what);
    static const struct { const char *key; int64_t want; } ints[] = {
        {"llama.block_count", 4},          {"llama.embedding_length", 64},
        {"llama.feed_forward_length", 128}, {"llama.attention.head_count", 4},
        {"llama.attention.head_count_kv", 2}, {"llama.context_length", 4096},
        {"llama.rope.dimension_count", 16}, {"llama.vocab_size", 512},
        {"tokenizer.ggml.bos_token_id", 0}, {"tokenizer.ggml.eos_token_id", 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        TEST_CHECK(gguf_get_i64(f, ints[i].key, &v, &found) == OKV_OK && found && v == ints[i].want,
              "%s %s = %" PRId64 ", want %" PRId64, what, ints[i].key, v, ints[i].want);
    float theta = 0;
    TEST_CHECK(gguf_get_f32(f, "llama.rope.freq_base", &theta, &found) == OKV_OK && theta == 10000.0f,
          "%s rope.freq_base %g", what, theta);
    TEST_CHECK(gguf_get_str(f, "tokenizer.chat_template", &s, &found) == OKV_OK && found &&
              memmem(s.ptr, s.len, "<|im_start|>", 12), "%s chat template", what);

    /* Vocabulary: specials, the 256 byte tokens, merges whose parts and result are tokens. */
    const gguf_kv *tok = gguf_find(f, "tokenizer.ggml.tokens");
    const gguf_kv *typ = gguf_find(f, "tokenizer.ggml.token_type");
    const gguf_kv *mer = gguf_find(f, "tokenizer.ggml.merges");
    TEST_CHECK(tok && tok->arr_type == GGUF_VT_STRING && tok->arr_n == 512, "%s tokens", what);
    TEST_CHECK(typ && typ->arr_type == GGUF_VT_I32 && typ->arr_n == 512, "%s token types", what);
    TEST_CHECK(mer && mer->arr_type == GGUF_VT_STRING && mer->arr_n >= 100, "%s merges (%" PRIu64 ")",
          what, mer ? mer->arr_n : 0);
    if (!tok || !typ || !mer || tok->arr_n != 512 || typ->arr_n != 512) return;
    char *toks[512];
    gguf_str_iter it;
    gguf_str_iter_init(&it, tok);
    for (int i = 0; i < 512; i++) {
        gguf_str t = gguf_str_iter_next(&it);
        toks[i] = strndup(t.ptr, t.len);
    }
    int32_t types[512];
    memcpy(types, typ->arr_data, sizeof types);
    TEST_CHECK(!strcmp(toks[0], "<|endoftext|>") && !strcmp(toks[1], "<|im_start|>") &&
              !strcmp(toks[2], "<|im_end|>") && types[0] == 3 && types[2] == 3,
          "%s specials", what);
    TEST_CHECK(!strcmp(toks[3], "!") && !strcmp(toks[3 + 'a' - 33], "a") && types[3] == 1,
          "%s byte tokens", what);
    int space = -1, unused = 0, normal = 0;
    for (int i = 3; i < 512; i++) {
        if (!strcmp(toks[i], "\xc4\xa0")) space = i; /* U+0120 stands for the space byte */
        unused += types[i] == 5;
        normal += types[i] == 1;
    }
    TEST_CHECK(space >= 3 && space < 259, "%s: no byte token for the space", what);
    TEST_CHECK(normal + unused == 509 && (unused == 0 || !strcmp(toks[512 - unused], "<unused_0>")),
          "%s token types: %d normal, %d unused", what, normal, unused);
    gguf_str_iter_init(&it, mer);
    int merges_ok = 0;
    for (uint64_t m = 0; m < mer->arr_n; m++) {
        gguf_str ms = gguf_str_iter_next(&it);
        char *line = strndup(ms.ptr, ms.len), *sp = strchr(line, ' ');
        bool ok = sp != NULL;
        if (ok) {
            *sp = 0;
            char joined[128];
            snprintf(joined, sizeof joined, "%s%s", line, sp + 1);
            int have = 0;
            for (int i = 3; i < 512; i++)
                have |= (!strcmp(toks[i], line)) | (!strcmp(toks[i], sp + 1)) << 1 |
                        (!strcmp(toks[i], joined)) << 2;
            ok = have == 7;
        }
        merges_ok += ok;
        free(line);
    }
    TEST_CHECK(merges_ok == (int)mer->arr_n, "%s: %d of %" PRIu64 " merges are consistent", what,
          merges_ok, mer->arr_n);
    for (int i = 0; i < 512; i++) free(toks[i]);

    /* Tensor table: llama.cpp names, ne = [n_in, n_out], norms f32, output (untied). */
    TEST_CHECK(f->n_tensors == 1 + 9 * 4 + 2, "%s: %" PRIu64 " tensors", what, f->n_tensors);
    static const struct { const char *name; int64_t ne0, ne1; bool norm; } want[] = {
        {"token_embd.weight", 64, 512, false}, {"output_norm.weight", 64, 1, true},
        {"output.weight", 64, 512, false},     {"blk.3.attn_norm.weight", 64, 1, true},
        {"blk.0.attn_q.weight", 64, 64, false}, {"blk.1.attn_k.weight", 64, 32, false},
        {"blk.2.attn_v.weight", 64, 32, false}, {"blk.3.attn_output.weight", 64, 64, false},
        {"blk.0.ffn_norm.weight", 64, 1, true}, {"blk.1.ffn_gate.weight", 64, 128, false},
        {"blk.2.ffn_up.weight", 64, 128, false}, {"blk.3.ffn_down.weight", 128, 64, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gguf_tensor_info *t = gguf_find_tensor(f, want[i].name);
        TEST_CHECK(t && t->n_dims == (want[i].norm ? 1 : 2) && t->ne[0] == want[i].ne0 &&
                  t->ne[1] == want[i].ne1 && t->type == (want[i].norm ? OKV_TYPE_F32 : type),
              "%s tensor %s", what, want[i].name);
    }
}

static void test_genmodel(void) {
    static const okv_type types[] = {OKV_TYPE_F32,  OKV_TYPE_F16,  OKV_TYPE_BF16,
                                     OKV_TYPE_Q8_0, OKV_TYPE_Q4_0, OKV_TYPE_Q4_1,
                                     OKV_TYPE_Q5_0, OKV_TYPE_Q5_1, OKV_TYPE_IQ4_NL};
    /* llama.cpp's LLAMA_FTYPE_* of each, which general.file_type carries */
    static const int64_t ftypes[] = {0, 1, 32, 7, 2, 3, 8, 9, 25};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "tiny-%s.gguf", okv_type_name(types[k]));
        const char *path = tmp_path(name);
        int st = genmodel_write(path, "tiny", 0, types[k], 7);
        TEST_CHECK(st == OKV_OK, "genmodel_write %s: %s", name, okv_last_error());
        gguf_file f;
        if (st || (st = gguf_open(&f, path)) != OKV_OK) {
            TEST_CHECK(0, "open %s: %s", name, okv_last_error());
            continue;
        }
        check_tiny_tables(&f, types[k], name);
        int64_t ft = -1;
        bool found = false;
        TEST_CHECK(gguf_get_i64(&f, "general.file_type", &ft, &found) == OKV_OK && ft == ftypes[k],
                   "%s general.file_type %" PRId64 ", want %" PRId64, name, ft, ftypes[k]);
        double worst = check_values(&f, 7, name);
        printf("genmodel tiny %-5s: %" PRIu64 " tensors, %" PRIu64 " kv, %zu bytes; worst error "
               "%.3f quantization steps\n", okv_type_name(types[k]), f.n_tensors, f.n_kv, f.size,
               worst);
        TEST_CHECK(worst <= 1.0, "%s error above one step", name);
        gguf_close(&f);
        okv_model m;
        model_load_opts o = {.layer_end = -1, .need_embed = true, .need_head = true};
        TEST_CHECK(model_load(&m, path, &o) == OKV_OK && m.layers[1].w_down.type == types[k],
                   "%s loads as a model: %s", name, okv_last_error());
        model_free(&m);
    }

    /* K-quants on tiny-k, whose rows are all multiples of 256; on tiny every tensor falls back to
     * q8_0. Values within one step of the generator, and each file loads. */
    static const okv_type kq[] = {OKV_TYPE_Q2_K, OKV_TYPE_Q3_K, OKV_TYPE_Q4_K, OKV_TYPE_Q5_K, OKV_TYPE_Q6_K};
    for (size_t k = 0; k < sizeof kq / sizeof kq[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "tiny-k-%s.gguf", okv_type_name(kq[k]));
        const char *path = tmp_path(name);
        TEST_CHECK(genmodel_write(path, "tiny-k", 0, kq[k], 7) == OKV_OK, "%s: %s", name, okv_last_error());
        gguf_file f;
        if (gguf_open(&f, path) != OKV_OK) {
            TEST_CHECK(0, "open %s: %s", name, okv_last_error());
            continue;
        }
        const gguf_tensor_info *emb = gguf_find_tensor(&f, "token_embd.weight");
        const gguf_tensor_info *down = gguf_find_tensor(&f, "blk.1.ffn_down.weight");
        TEST_CHECK(emb && emb->type == kq[k] && down && down->type == kq[k] && down->ne[0] == 512,
                   "%s tensor types", name);
        double worst = check_values(&f, 7, name);
        printf("genmodel tiny-k %-5s: %" PRIu64 " tensors, %zu bytes; worst error %.3f steps\n",
               okv_type_name(kq[k]), f.n_tensors, f.size, worst);
        TEST_CHECK(worst <= 1.0, "%s error above one step", name);
        gguf_close(&f);
        okv_model m;
        model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
        TEST_CHECK(model_load(&m, path, &mo) == OKV_OK, "load %s: %s", name, okv_last_error());
        model_free(&m);
        unlink(path);
    }
    {
        const char *path = tmp_path("tiny-q4_k.gguf");
        TEST_CHECK(genmodel_write(path, "tiny", 1, OKV_TYPE_Q4_K, 7) == OKV_OK, "%s", okv_last_error());
        gguf_file f;
        if (gguf_open(&f, path) == OKV_OK) {
            int n_q8 = 0, n_2d = 0;
            for (uint64_t i = 0; i < f.n_tensors; i++)
                if (f.tensors[i].n_dims == 2) {
                    n_2d++;
                    n_q8 += f.tensors[i].type == OKV_TYPE_Q8_0;
                }
            TEST_CHECK(n_2d > 0 && n_q8 == n_2d, "tiny q4_k: %d of %d tensors fell back to q8_0", n_q8, n_2d);
            TEST_CHECK(check_values(&f, 7, "tiny-q4_k") <= 1.0, "tiny q4_k fallback values");
            gguf_close(&f);
        } else {
            TEST_CHECK(0, "%s", okv_last_error());
        }
        unlink(path);
    }

    /* Deterministic: same seed, same bytes; another seed, other weights. */
    const char *a = tmp_path("det-a.gguf"), *b = tmp_path("det-b.gguf"), *c = tmp_path("det-c.gguf");
    TEST_CHECK(genmodel_write(a, "tiny", 2, OKV_TYPE_Q4_1, 11) == OKV_OK, "%s", okv_last_error());
    TEST_CHECK(genmodel_write(b, "tiny", 2, OKV_TYPE_Q4_1, 11) == OKV_OK, "%s", okv_last_error());
    TEST_CHECK(genmodel_write(c, "tiny", 2, OKV_TYPE_Q4_1, 12) == OKV_OK, "%s", okv_last_error());
    TEST_CHECK(same_file(a, b), "two writes with seed 11 differ");
    TEST_CHECK(!same_file(a, c), "seeds 11 and 12 give the same file");
    unlink(a);
    unlink(b);
    unlink(c);

    /* The generator is pinned: these hashes change only if the value stream changes. */
    float vals[4096];
    uint64_t h = 0xcbf29ce484222325ull;
    genmodel_values(1234, "blk.0.attn_q.weight", 1000, 4096, vals);
    for (int i = 0; i < 4096; i++) {
        uint32_t bits;
        memcpy(&bits, &vals[i], 4);
        h = (h ^ bits) * 0x100000001b3ull;
    }
    double mean = 0, var = 0;
    for (int i = 0; i < 4096; i++) mean += vals[i] / 4096.0;
    for (int i = 0; i < 4096; i++) var += (vals[i] - mean) * (vals[i] - mean) / 4096.0;
    TEST_CHECK(fabs(mean) < 0.002 && fabs(sqrt(var) - 0.02) < 0.002, "linear weights: mean %g std %g",
          mean, sqrt(var));
    genmodel_values(1234, "blk.0.ffn_norm.weight", 0, 4096, vals);
    float nmin = 2, nmax = 0;
    for (int i = 0; i < 4096; i++) {
        uint32_t bits;
        memcpy(&bits, &vals[i], 4);
        h = (h ^ bits) * 0x100000001b3ull;
        nmin = fminf(nmin, vals[i]);
        nmax = fmaxf(nmax, vals[i]);
    }
    TEST_CHECK(nmin >= 0.9f && nmax < 1.1f && nmax - nmin > 0.19f, "norms in [%g, %g]", nmin, nmax);
    TEST_CHECK(h == GENMODEL_VALUES_HASH, "value stream hash %016" PRIx64 " changed", h);

    /* Shapes: a tied one (no output.weight), a large vocabulary, unknown names and types. */
    okv_model_config cfg;
    const char *sm = tmp_path("smol-1.gguf");
    TEST_CHECK(genmodel_write(sm, "smollm2-135m", 1, OKV_TYPE_Q8_0, 3) == OKV_OK, "%s", okv_last_error());
    gguf_file f;
    if (gguf_open(&f, sm) == OKV_OK) {
        const gguf_kv *tok = gguf_find(&f, "tokenizer.ggml.tokens");
        TEST_CHECK(f.n_tensors == 1 + 9 + 1 && !gguf_find_tensor(&f, "output.weight"),
              "smollm2 tied: %" PRIu64 " tensors", f.n_tensors);
        TEST_CHECK(tok && tok->arr_n == 49152, "smollm2 vocabulary");
        const gguf_tensor_info *e = gguf_find_tensor(&f, "token_embd.weight");
        TEST_CHECK(e && e->ne[0] == 576 && e->ne[1] == 49152 && e->type == OKV_TYPE_Q8_0,
              "smollm2 token_embd");
        gguf_close(&f);
    } else {
        TEST_CHECK(0, "%s", okv_last_error());
    }
    unlink(sm);
    TEST_CHECK(genmodel_shape("llama3.1-70b", &cfg) == OKV_OK && cfg.n_layers == 80 && cfg.dim == 8192 &&
              cfg.rope_scaling == ROPE_SCALING_LLAMA3 && cfg.rope_factor == 8.0f &&
              cfg.rope_orig_ctx == 8192 && !cfg.tied_embeddings, "llama3.1-70b shape");
    TEST_CHECK(genmodel_shape("yi-9b", &cfg) == OKV_OK && cfg.n_kv_heads == 4 &&
              cfg.rope_theta == 1e7f && cfg.ctx_train == 200000, "yi-9b shape");
    int n_names = 0;
    const char *const *names = genmodel_shape_names(&n_names);
    TEST_CHECK(n_names == 6 && !strcmp(names[0], "tiny") && !strcmp(names[1], "tiny-k"), "shape names");
    TEST_CHECK(genmodel_shape("llama2-7b", &cfg) == OKV_ERR_USAGE &&
              strstr(okv_last_error(), "llama2-7b") && strstr(okv_last_error(), "smollm2-135m"),
          "unknown shape: %s", okv_last_error());
    TEST_CHECK(genmodel_write(tmp_path("x.gguf"), "tiny", 0, OKV_TYPE_Q8_1, 1) == OKV_ERR_USAGE &&
              strstr(okv_last_error(), "q8_1"), "q8_1 weights: %s", okv_last_error());
    TEST_CHECK(genmodel_write("/nonexistent-dir/x.gguf", "tiny", 1, OKV_TYPE_F16, 1) == OKV_ERR_INPUT &&
              strstr(okv_last_error(), "/nonexistent-dir/x.gguf"), "unwritable: %s",
          okv_last_error());
}

/* K-quant files with one super-block's f16 scale set to inf or NaN fail to load with a file
 * error naming the tensor, the row and the block; the untouched file loads. */
static void test_kquant_bad_blocks(void) {
    static const struct {
        okv_type t;
        size_t field; /* byte offset of the f16 in the block */
        uint16_t value;
        const char *what;
    } cases[] = {
        {OKV_TYPE_Q4_K, 0, 0x7c00, "q4_k d = +inf"},
        {OKV_TYPE_Q4_K, 2, 0x7e00, "q4_k dmin = NaN"},
        {OKV_TYPE_Q5_K, 2, 0xfc00, "q5_k dmin = -inf"},
        {OKV_TYPE_Q2_K, 82, 0x7c01, "q2_k dmin = NaN"},
        {OKV_TYPE_Q3_K, 108, 0xfe00, "q3_k d = NaN"},
        {OKV_TYPE_Q6_K, 208, 0x7c00, "q6_k d = +inf"},
    };
    int n_ok = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *good = tmp_path("kq-good.gguf"), *bad = tmp_path("kq-bad.gguf");
        OKV_ASSERT(genmodel_write(good, "tiny-k", 0, cases[k].t, 9) == OKV_OK);
        okv_model m;
        model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
        const bool good_loads = model_load(&m, good, &mo) == OKV_OK;
        model_free(&m);
        gguf_file f;
        OKV_ASSERT(gguf_open(&f, good) == OKV_OK);
        const gguf_tensor_info *t = gguf_find_tensor(&f, "blk.1.ffn_down.weight"); /* rows of 512 */
        OKV_ASSERT(t && t->type == cases[k].t);
        /* row 3, super-block 1 of its row */
        const size_t bs = okv_type_block_bytes(cases[k].t), per_row = (size_t)t->ne[0] / OKV_QK_K;
        const size_t at = (size_t)((const uint8_t *)t->data - f.map) + (3 * per_row + 1) * bs + cases[k].field;
        const size_t size = f.size;
        uint8_t *bytes = malloc(size);
        OKV_ASSERT(bytes);
        memcpy(bytes, f.map, size);
        gguf_close(&f);
        memcpy(bytes + at, &cases[k].value, 2);
        FILE *fp = fopen(bad, "wb");
        OKV_ASSERT(fp && fwrite(bytes, 1, size, fp) == size && fclose(fp) == 0);
        free(bytes);
        const int st = model_load(&m, bad, &mo);
        const char *e = okv_last_error();
        const bool named = st == OKV_ERR_INPUT && strstr(e, "ffn_down") && strstr(e, "layer 1") &&
                           strstr(e, "super-block 1 of row 3") && strstr(e, "non-finite");
        TEST_CHECK(good_loads && named, "%s: load gave %d: %s", cases[k].what, st, e);
        if (st == OKV_OK) model_free(&m);
        n_ok += good_loads && named;
        unlink(good);
        unlink(bad);
    }
    printf("K-quant blocks with a non-finite scale: %d of %zu files rejected naming the block\n", n_ok,
           sizeof cases / sizeof cases[0]);
}

/* ---- (b) corruptions ------------------------------------------------------------------------ */

static const uint8_t *good;  /* a valid generated file */
static size_t good_size;
static gguf_file good_f;     /* its parse, to find the byte offsets of fields */
static int n_corrupt = 0;

static size_t kv_at(const char *key) { /* offset of the kv's key length */
    const gguf_kv *kv = gguf_find(&good_f, key);
    OKV_ASSERT(kv);
    return (size_t)((const uint8_t *)kv->key.ptr - good_f.map) - 8;
}
static size_t kv_type_at(const char *key) { return kv_at(key) + 8 + strlen(key); }
static size_t tensor_at(int i) { /* offset of the tensor's name length */
    return (size_t)((const uint8_t *)good_f.tensors[i].name.ptr - good_f.map) - 8;
}
static size_t tensor_ndims_at(int i) { return tensor_at(i) + 8 + good_f.tensors[i].name.len; }
static size_t tensor_type_at(int i) {
    return tensor_ndims_at(i) + 4 + 8 * (size_t)good_f.tensors[i].n_dims;
}
static size_t tensor_offset_at(int i) { return tensor_type_at(i) + 4; }

static void put_u32(uint8_t *p, size_t at, uint32_t v) { memcpy(p + at, &v, 4); }
static void put_u64(uint8_t *p, size_t at, uint64_t v) { memcpy(p + at, &v, 8); }

typedef struct patch { size_t at; int width; uint64_t v; } patch; /* width 1, 4 or 8 bytes */

/* A copy of the good file, cut to `size` bytes (0: whole), with the patches applied, must fail
 * with OKV_ERR_INPUT and a message containing `expect`. */
static void expect_reject(const char *what, size_t size, const patch *ps, int n, const char *expect) {
    if (size == 0) size = good_size;
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, good, size);
    for (int i = 0; i < n; i++) {
        if (ps[i].width == 1) buf[ps[i].at] = (uint8_t)ps[i].v;
        else if (ps[i].width == 4) put_u32(buf, ps[i].at, (uint32_t)ps[i].v);
        else put_u64(buf, ps[i].at, ps[i].v);
    }
    gguf_file f;
    okv_clear_error();
    int st = gguf_open_mem(&f, buf, size);
    const char *msg = okv_last_error();
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(msg, expect) && !strncmp(msg, "<memory>: ", 10),
          "%s: status %d, message \"%s\" should contain \"%s\"", what, st, msg, expect);
    TEST_CHECK(f.kv == NULL && f.tensors == NULL && f.map == NULL, "%s: struct not cleared", what);
    if (st == OKV_OK) gguf_close(&f);
    printf("  %-28s -> %s\n", what, msg);
    free(buf);
    n_corrupt++;
}

#define REJECT(what, size, expect, ...) \
    do { \
        const patch ps_[] = {__VA_ARGS__}; \
        expect_reject(what, size, ps_, (int)(sizeof ps_ / sizeof ps_[0]), expect); \
    } while (0)
#define P1(at, v) {(at), 1, (v)}
#define P4(at, v) {(at), 4, (v)}
#define P8(at, v) {(at), 8, (v)}

static void test_corruptions(void) {
    const char *path = tmp_path("corrupt-base.gguf");
    OKV_ASSERT(genmodel_write(path, "tiny", 2, OKV_TYPE_Q4_0, 5) == OKV_OK);
    uint8_t *base = (uint8_t *)test_read_file(path, &good_size);
    good = base;
    OKV_ASSERT(gguf_open_mem(&good_f, good, good_size) == OKV_OK);
    OKV_ASSERT(good_f.n_tensors >= 4);
    printf("corruptions of a %zu-byte tiny q4_0 file:\n", good_size);

    /* Tensor 1 is blk.0.attn_norm, 2 blk.0.attn_q (q4_0), 3 blk.0.attn_k. */
    OKV_ASSERT(str_is(good_f.tensors[2].name, "blk.0.attn_q.weight") &&
               str_is(good_f.tensors[3].name, "blk.0.attn_k.weight"));
    const size_t toks = kv_type_at("tokenizer.ggml.tokens");
    const size_t ttype = kv_type_at("tokenizer.ggml.token_type");
    const size_t ftype = kv_at("general.file_type");
    const gguf_tensor_info *t2 = &good_f.tensors[2], *last = &good_f.tensors[good_f.n_tensors - 1];

    REJECT("bad magic", 0, "magic", P1(0, 'X'));
    REJECT("version 1", 0, "version 1", P4(4, 1));
    REJECT("version 99", 0, "version 99", P4(4, 99));
    REJECT("big-endian version", 0, "big-endian", P4(4, 0x03000000));
    REJECT("too short for magic", 3, "too few");
    REJECT("truncated header", 20, "header");
    REJECT("absurd kv count", 0, "cannot fit", P8(16, 1ull << 40));
    REJECT("absurd tensor count", 0, "cannot fit", P8(8, 1ull << 50));
    REJECT("huge key length", 0, "string length", P8(kv_at("general.name"), 1ull << 62));
    REJECT("huge string value length", 0, "string value",
           P8(kv_type_at("general.name") + 4, UINT64_MAX));
    REJECT("bad value type", 0, "value type 13", P4(kv_type_at("llama.block_count"), 13));
    REJECT("huge array count", 0, "array count", P8(toks + 8, 1ull << 61));
    REJECT("huge string element length", 0, "string element 0",
           P8(toks + 16, 1ull << 40));
    REJECT("nested array", 0, "nested", P4(ttype + 4, GGUF_VT_ARRAY));
    REJECT("bad array element type", 0, "element type 77", P4(ttype + 4, 77));
    REJECT("duplicate key", 0, "duplicate key",
           P1(kv_at("tokenizer.ggml.eos_token_id") + 8 + strlen("tokenizer.ggml."), 'b'));
    /* general.file_type and general.alignment have the same length: rename the key, set the value. */
    REJECT("alignment not a power of 2", 0, "power of two",
           P1(ftype + 8 + 8, 'a'), P1(ftype + 8 + 9, 'l'), P1(ftype + 8 + 10, 'i'),
           P1(ftype + 8 + 11, 'g'), P1(ftype + 8 + 12, 'n'), P1(ftype + 8 + 13, 'm'),
           P1(ftype + 8 + 14, 'e'), P1(ftype + 8 + 15, 'n'), P1(ftype + 8 + 16, 't'),
           P4(ftype + 8 + 17 + 4, 48));
    REJECT("NUL byte in a key", 0, "NUL byte", P1(kv_at("tokenizer.ggml.tokens") + 8 + 3, 0));
    REJECT("empty tensor name", 0, "empty name", P8(tensor_at(0), 0));
    REJECT("NUL byte in a tensor name", 0, "NUL byte", P1(tensor_at(3) + 8 + 4, 0));
    REJECT("n_dims 0", 0, "n_dims 0", P4(tensor_ndims_at(2), 0));
    REJECT("n_dims 5", 0, "n_dims 5", P4(tensor_ndims_at(2), 5));
    REJECT("ne 0", 0, "ne[1] = 0", P8(tensor_ndims_at(2) + 4 + 8, 0));
    REJECT("ne product overflow", 0, "overflows", P8(tensor_ndims_at(2) + 4, 1ull << 40),
           P8(tensor_ndims_at(2) + 12, 1ull << 40));
    REJECT("row not whole blocks", 0, "block size", P8(tensor_ndims_at(2) + 4, 48));
    REJECT("unknown tensor type", 0, "type 16", P4(tensor_type_at(2), 16));
    REJECT("offset past end of file", 0, "data ends at byte",
           P8(tensor_offset_at(2), (uint64_t)good_size / 32 * 32));
    REJECT("offset far past the end", 0, "far past", P8(tensor_offset_at(2), UINT64_MAX - 31));
    REJECT("misaligned offset", 0, "not a multiple of the alignment",
           P8(tensor_offset_at(2), t2->offset + 4));
    REJECT("overlapping tensors", 0, "overlaps", P8(tensor_offset_at(3), t2->offset));
    REJECT("duplicate tensor name", 0, "duplicate tensor name",
           P1(tensor_at(3) + 8 + strlen("blk.0.attn_"), 'q'));
    REJECT("truncated tensor data", good_size - 100, "data ends at byte");
    REJECT("truncated tensor table", (size_t)(good_f.data_offset - 40), "tensor");
    const size_t table_end = tensor_offset_at((int)good_f.n_tensors - 1) + 8;
    REJECT("file ends after the table", table_end,
           table_end % 32 ? "data section starts" : "data ends at byte");

    /* Through a file: the message names the path. */
    const char *cut = tmp_path("truncated.gguf");
    FILE *fp = fopen(cut, "wb");
    fwrite(good, 1, good_size - 1000, fp);
    fclose(fp);
    gguf_file f;
    int st = gguf_open(&f, cut);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), cut) &&
              strstr(okv_last_error(), "truncated"), "truncated file: %s", okv_last_error());
    st = gguf_open(&f, tmp_path("does-not-exist.gguf"));
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "cannot open"), "%s", okv_last_error());
    fp = fopen(cut, "wb");
    fclose(fp);
    st = gguf_open(&f, cut);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "empty"), "%s", okv_last_error());
    unlink(cut);

    /* Every prefix of the file fails cleanly unless it holds all tensor data, and random byte
     * changes in the header never crash (run under ASan this catches over-reads). */
    uint64_t data_end = good_f.data_offset + last->offset + last->nbytes;
    int prefix_bad = 0, n_prefix = 0;
    for (size_t n = 0; n < good_size; n += (n < good_f.data_offset ? 1 : 61)) {
        uint8_t *buf = malloc(n ? n : 1);
        memcpy(buf, good, n);
        st = gguf_open_mem(&f, buf, n);
        if ((n < data_end) != (st == OKV_ERR_INPUT)) prefix_bad++;
        if (st == OKV_OK) gguf_close(&f);
        free(buf);
        n_prefix++;
    }
    TEST_CHECK(prefix_bad == 0, "%d truncated prefixes misjudged", prefix_bad);
    uint8_t *buf = malloc(good_size);
    uint32_t x = 12345;
    int n_ok = 0, n_rej = 0, other = 0;
    for (int k = 0; k < 3000; k++) {
        memcpy(buf, good, good_size);
        for (int j = 0; j < 1 + k % 4; j++) {
            x = x * 1664525u + 1013904223u;
            size_t at = (x >> 8) % good_f.data_offset;
            x = x * 1664525u + 1013904223u;
            buf[at] = (uint8_t)(x >> 24);
        }
        st = gguf_open_mem(&f, buf, good_size);
        if (st == OKV_OK) {
            for (uint64_t i = 0; i < f.n_kv; i++)
                if (f.kv[i].type == GGUF_VT_ARRAY && f.kv[i].arr_type == GGUF_VT_STRING) {
                    gguf_str_iter it;
                    gguf_str_iter_init(&it, &f.kv[i]);
                    while (gguf_str_iter_next(&it).ptr) {}
                }
            gguf_close(&f);
            n_ok++;
        } else if (st == OKV_ERR_INPUT) {
            n_rej++;
        } else {
            other++;
        }
    }
    free(buf);
    TEST_CHECK(other == 0, "%d mutations gave a status other than OK or INPUT", other);
    printf("%d targeted corruptions rejected; %d truncations judged; 3000 random header "
           "mutations: %d accepted, %d rejected\n", n_corrupt, n_prefix, n_ok, n_rej);
    gguf_close(&good_f);
    free(base);
    unlink(path);
}

/* The fields the reader checks, on files of the 5-bit types and IQ4_NL (blocks of 22, 24 and 18
 * bytes feed the size and layout checks), and a type the engine does not take as a weight. */
static void test_corrupt_blocks(void) {
    static const okv_type ts[] = {OKV_TYPE_Q5_0, OKV_TYPE_Q5_1, OKV_TYPE_IQ4_NL};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "corrupt-%s.gguf", okv_type_name(ts[k]));
        const char *path = tmp_path(name);
        OKV_ASSERT(genmodel_write(path, "tiny", 2, ts[k], 5) == OKV_OK);
        uint8_t *base = (uint8_t *)test_read_file(path, &good_size);
        good = base;
        OKV_ASSERT(gguf_open_mem(&good_f, good, good_size) == OKV_OK);
        const int n = (int)good_f.n_tensors;
        const gguf_tensor_info *t2 = &good_f.tensors[2], *last = &good_f.tensors[n - 1];
        OKV_ASSERT(str_is(t2->name, "blk.0.attn_q.weight") && t2->type == ts[k] && last->type == ts[k]);
        OKV_ASSERT(t2->nbytes == (uint64_t)64 * 2 * okv_type_block_bytes(ts[k]));
        printf("block corruptions of a %zu-byte tiny %s file:\n", good_size, okv_type_name(ts[k]));
        const size_t ne0 = tensor_ndims_at(2) + 4;
        REJECT("row of 48: not whole blocks", 0, "not a multiple of the", P8(ne0, 48));
        REJECT("row of 63: a block short", 0, "block size 32", P8(ne0, 63));
        REJECT("type iq2_xxs", 0, "type 16 (iq2_xxs), which omnikv does not read", P4(tensor_type_at(2), 16));
        REJECT("type iq4_xs", 0, "(iq4_xs)", P4(tensor_type_at(2), 23));
        REJECT("type i32", 0, "(i32)", P4(tensor_type_at(2), 26));
        REJECT("type 99", 0, "type 99 (not a ggml type)", P4(tensor_type_at(2), 99));
        /* Wider blocks than the data holds: over the next tensor, or past the end of the file. */
        REJECT("q8_0 blocks overlap the next", 0, "overlaps", P4(tensor_type_at(2), OKV_TYPE_Q8_0));
        REJECT("q8_0 blocks past the end", 0, "data ends at byte",
               P4(tensor_type_at(n - 1), OKV_TYPE_Q8_0));
        REJECT("last block cut short", (size_t)(good_f.data_offset + last->offset + last->nbytes - 1),
               "data ends at byte");
        /* The reader's message lists what omnikv reads, this type among them. */
        REJECT("the list of types read", 0, okv_type_name(ts[k]), P4(tensor_type_at(2), 16));
        gguf_close(&good_f);
        free(base);
        unlink(path);
    }

    /* q8_1 blocks are sized and read, but only as activations: refused as a weight, by name. */
    const char *path = tmp_path("q8_1-weight.gguf");
    OKV_ASSERT(genmodel_write(path, "tiny", 2, OKV_TYPE_F32, 5) == OKV_OK);
    gguf_file f;
    OKV_ASSERT(gguf_open(&f, path) == OKV_OK);
    const gguf_tensor_info *t = gguf_find_tensor(&f, "blk.1.attn_q.weight");
    OKV_ASSERT(t);
    const long at = (long)((const uint8_t *)t->name.ptr - f.map) + (long)t->name.len + 4 + 8 * t->n_dims;
    gguf_close(&f);
    FILE *fp = fopen(path, "r+b");
    const uint32_t q8_1 = OKV_TYPE_Q8_1;
    OKV_ASSERT(fp && fseek(fp, at, SEEK_SET) == 0 && fwrite(&q8_1, 4, 1, fp) == 1);
    fclose(fp);
    okv_model m;
    model_load_opts o = {.layer_end = -1, .need_embed = true, .need_head = true};
    okv_clear_error();
    const int st = model_load(&m, path, &o);
    const char *msg = okv_last_error();
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(msg, "attn_q of layer 1 has type q8_1") &&
                   strstr(msg, "does not read as a weight") && strstr(msg, "q5_0") && strstr(msg, "iq4_nl"),
               "q8_1 weight: status %d, message \"%s\"", st, msg);
    printf("  %-28s -> %s\n", "q8_1 as a weight", msg);
    model_free(&m);
    unlink(path);
}

/* ---- the real model, when the cache has it -------------------------------------------------- */

static void test_real_model(void) {
    char path[1100];
    snprintf(path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", test_cache());
    if (access(path, R_OK) != 0) {
        printf("real model: %s not present, skipped\n", path);
        return;
    }
    gguf_file f;
    int st = gguf_open(&f, path);
    TEST_CHECK(st == OKV_OK, "%s", okv_last_error());
    if (st) return;
    const gguf_tensor_info *e = gguf_find_tensor(&f, "token_embd.weight");
    TEST_CHECK(f.n_tensors == 272 && f.n_kv == 33, "%" PRIu64 " tensors, %" PRIu64 " kv", f.n_tensors,
          f.n_kv);
    TEST_CHECK(e && e->ne[0] == 576 && e->ne[1] == 49152, "token_embd.weight shape");
    printf("real model: %s opens, %" PRIu64 " tensors, %" PRIu64 " kv\n", path, f.n_tensors, f.n_kv);
    gguf_close(&f);
}

/* Overwrites the 4-byte value of metadata key `key` in a GGUF file (u32, i32 or f32 keys). */
static void patch_kv(const char *path, const char *key, const void *value4) {
    FILE *fp = fopen(path, "r+b");
    OKV_ASSERT(fp);
    OKV_ASSERT(fseek(fp, 0, SEEK_END) == 0);
    long n = ftell(fp);
    char *buf = malloc((size_t)n);
    OKV_ASSERT(buf);
    rewind(fp);
    OKV_ASSERT(fread(buf, 1, (size_t)n, fp) == (size_t)n);
    size_t klen = strlen(key);
    long at = -1;
    for (long i = 8; i + (long)klen + 8 <= n && at < 0; i++) {
        uint64_t len;
        memcpy(&len, buf + i - 8, 8);
        if (len == klen && !memcmp(buf + i, key, klen)) at = i + (long)klen + 4; /* after the type */
    }
    OKV_ASSERT(at > 0);
    OKV_ASSERT(fseek(fp, at, SEEK_SET) == 0 && fwrite(value4, 1, 4, fp) == 4);
    fclose(fp);
    free(buf);
}

/* Metadata that disagrees with the tensors or holds non-finite or out-of-range hyperparameters is
 * a file error naming the key, found before any per-layer work (a block_count of 2^30 used to
 * abort on an allocation, 2^24 to stall, and one less than the layers present to run on). */
static void test_bad_metadata(void) {
    char good[300], bad[300];
    snprintf(good, sizeof good, "%s", tmp_path("meta-good.gguf"));
    snprintf(bad, sizeof bad, "%s", tmp_path("meta-bad.gguf"));
    TEST_CHECK(genmodel_write(good, "tiny", 4, OKV_TYPE_F32, 5) == OKV_OK, "%s", okv_last_error());
    const uint32_t u32s[] = {3, 5, 1u << 24, 1u << 30};
    const float nan_f = NAN, inf_f = INFINITY, neg_eps = -1e-5f, big_eps = 2.0f, one = 1.0f;
    struct { const char *key; const void *val; const char *want; } cases[] = {
        {"llama.block_count", &u32s[0], "block_count = 3, but the file holds tensors for 4 layers"},
        {"llama.block_count", &u32s[1], "block_count = 5, but the file holds tensors for 4 layers"},
        {"llama.block_count", &u32s[2], "block_count = 16777216"},
        {"llama.block_count", &u32s[3], "block_count = 1073741824"},
        {"llama.rope.freq_base", &nan_f, "rope base"},
        {"llama.rope.freq_base", &inf_f, "rope base"},
        {"llama.rope.freq_base", &one, "rope base"},
        {"llama.attention.layer_norm_rms_epsilon", &neg_eps, "norm epsilon"},
        {"llama.attention.layer_norm_rms_epsilon", &big_eps, "norm epsilon"},
        {"llama.attention.key_length", &u32s[2], "head dimension"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", good, bad);
        OKV_ASSERT(system(cmd) == 0);
        patch_kv(bad, cases[i].key, cases[i].val);
        okv_model m;
        model_load_opts o = {.layer_end = -1, .need_embed = true, .need_head = true};
        okv_clear_error();
        int st = model_load(&m, bad, &o);
        TEST_CHECK(st == OKV_ERR_INPUT, "%s patched: status %d, want %d", cases[i].key, st,
                   OKV_ERR_INPUT);
        TEST_CHECK(strstr(okv_last_error(), cases[i].want), "%s: message '%s' lacks '%s'",
                   cases[i].key, okv_last_error(), cases[i].want);
        model_free(&m);
    }
    okv_model m;
    model_load_opts o = {.layer_end = -1, .need_embed = true, .need_head = true};
    TEST_CHECK(model_load(&m, good, &o) == OKV_OK, "the unpatched file loads: %s", okv_last_error());
    model_free(&m);
    printf("bad metadata: %zu patched files refused with the key named\n",
           sizeof cases / sizeof *cases);
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/test_gguf.XXXXXX", t ? t : "/tmp");
    OKV_ASSERT(mkdtemp(tmp_dir));
    test_round_trip();
    test_genmodel();
    test_corruptions();
    test_kquant_bad_blocks();
    test_corrupt_blocks();
    test_bad_metadata();
    test_real_model();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    return test_summary();
}
