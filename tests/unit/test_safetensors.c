/* test_safetensors.c — the safetensors reader and the HF checkpoint loader: every kind of corrupt
 * header rejected with its message, a file written here read back bit-exact, sharded checkpoints
 * opening only the shards they need, tiny llama/qwen2 checkpoints loaded with their conversions,
 * the Q/K row permutation against a hand-computed example and against RoPE itself, and
 * model_rope_freqs (llama3, yarn, linear, dynamic) against the published formulas. */
#include "../test_util.h"

#include "common.h"
#include "model/hf.h"
#include "model/model.h"
#include "model/safetensors.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* ---- building files ------------------------------------------------------------------------ */

/* u64 header length | json | data, into a malloc'd buffer. */
static uint8_t *st_bytes(const char *json, const void *data, size_t data_len, size_t *size) {
    size_t n = strlen(json);
    *size = 8 + n + data_len;
    uint8_t *b = calloc(1, *size + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    if (data) memcpy(b + 8 + n, data, data_len);
    return b;
}

static void expect_reject_bytes(const uint8_t *b, size_t size, const char *want, int line) {
    st_file f;
    okv_clear_error();
    int st = st_open_mem(&f, b, size, "bad.safetensors");
    test_checks++;
    if (st != OKV_ERR_INPUT || !strstr(okv_last_error(), want) ||
        !strstr(okv_last_error(), "bad.safetensors")) {
        test_failures++;
        fprintf(stderr, "FAIL line %d: status %d, message '%s', wanted a rejection naming the file "
                        "and containing '%s'\n", line, st, okv_last_error(), want);
    }
    st_close(&f);
}

static void expect_reject(const char *json, size_t data_len, const char *want, int line) {
    size_t size;
    uint8_t *b = st_bytes(json, NULL, data_len, &size);
    expect_reject_bytes(b, size, want, line);
    free(b);
}
#define REJECT(json, data_len, want) expect_reject(json, data_len, want, __LINE__)

typedef struct wt {
    const char *name, *dtype;
    int nd;
    int64_t shape[2];
    const void *data;
    size_t nbytes;
    int shard; /* 0-based */
} wt;

/* Writes the tensors of one shard as a safetensors file, header padded to 8 bytes. */
static void write_shard(const char *path, const wt *ts, int n, int shard) {
    char json[16384];
    size_t o = (size_t)snprintf(json, sizeof json, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i].shard != shard) continue;
        o += (size_t)snprintf(json + o, sizeof json - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              ts[i].name, ts[i].dtype);
        for (int d = 0; d < ts[i].nd; d++)
            o += (size_t)snprintf(json + o, sizeof json - o, "%s%lld", d ? "," : "",
                                  (long long)ts[i].shape[d]);
        o += (size_t)snprintf(json + o, sizeof json - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + ts[i].nbytes));
        off += ts[i].nbytes;
    }
    o += (size_t)snprintf(json + o, sizeof json - o, "}");
    while (o % 8) json[o++] = ' ';
    json[o] = 0;
    FILE *fp = fopen(path, "wb");
    OKV_ASSERT(fp);
    uint64_t n8 = o;
    fwrite(&n8, 8, 1, fp); /* the test machines are little-endian, like the format */
    fwrite(json, 1, o, fp);
    for (int i = 0; i < n; i++)
        if (ts[i].shard == shard && ts[i].nbytes) fwrite(ts[i].data, 1, ts[i].nbytes, fp);
    fclose(fp);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    OKV_ASSERT(fp);
    fputs(text, fp);
    fclose(fp);
}

/* A checkpoint directory: one model.safetensors, or n_shards shards and an index. */
static void write_checkpoint(const char *dir, const wt *ts, int n, int n_shards, const char *config) {
    char path[512];
    snprintf(path, sizeof path, "mkdir -p %s && rm -f %s/*", dir, dir);
    OKV_ASSERT(system(path) == 0);
    if (n_shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_shard(path, ts, n, 0);
    } else {
        char index[16384];
        size_t o = (size_t)snprintf(index, sizeof index, "{\"metadata\":{},\"weight_map\":{");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(index + o, sizeof index - o,
                                  "%s\"%s\":\"model-%05d-of-%05d.safetensors\"", i ? "," : "",
                                  ts[i].name, ts[i].shard + 1, n_shards);
        snprintf(index + o, sizeof index - o, "}}");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        write_text(path, index);
        for (int s = 0; s < n_shards; s++) {
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, n_shards);
            write_shard(path, ts, n, s);
        }
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, config);
}

/* ---- reader -------------------------------------------------------------------------------- */

static void test_round_trip(const char *dir) {
    float a[6] = {1.5f, -2.25f, 3.0f, 1e-30f, -0.0f, 65504.0f};
    uint16_t b[4] = {0x3f80, 0xbf00, 0x7f80, 0x0001}; /* bf16: 1, -0.5, inf, a subnormal */
    uint16_t c[2] = {0x3c00, 0xfbff};                 /* f16: 1, -65504 */
    uint8_t d[3] = {0x38, 0x7e, 0x81};                /* f8_e4m3 */
    float s = 42.0f;
    wt ts[] = {
        {"a", "F32", 2, {2, 3}, a, sizeof a, 0}, {"b.weight", "BF16", 1, {4}, b, sizeof b, 0},
        {"c", "F16", 2, {1, 2}, c, sizeof c, 0}, {"d", "F8_E4M3", 1, {3}, d, sizeof d, 0},
        {"scalar", "F32", 0, {0}, &s, sizeof s, 0}, {"empty", "F32", 2, {0, 5}, NULL, 0, 0},
    };
    char path[512];
    snprintf(path, sizeof path, "mkdir -p %s", dir);
    OKV_ASSERT(system(path) == 0);
    snprintf(path, sizeof path, "%s/round.safetensors", dir);
    write_shard(path, ts, 6, 0);
    st_file f;
    TEST_OK(st_open(&f, path));
    TEST_CHECK(f.n_tensors == 6, "round trip: %d tensors, wanted 6", f.n_tensors);
    for (int i = 0; i < 6; i++) {
        const st_tensor *t = st_find(&f, ts[i].name);
        TEST_CHECK(t, "round trip: tensor '%s' not found", ts[i].name);
        if (!t) continue;
        TEST_CHECK(!strcmp(t->dtype_name, ts[i].dtype) && t->n_dims == ts[i].nd,
                   "round trip: '%s' has dtype %s and %d dims", t->name, t->dtype_name, t->n_dims);
        for (int k = 0; k < ts[i].nd; k++)
            TEST_CHECK(t->shape[k] == ts[i].shape[k], "round trip: '%s' dim %d is %lld", t->name,
                       k, (long long)t->shape[k]);
        TEST_CHECK(t->end - t->begin == ts[i].nbytes &&
                       (ts[i].nbytes == 0 || !memcmp(t->data, ts[i].data, ts[i].nbytes)),
                   "round trip: '%s' bytes differ", t->name);
    }
    TEST_CHECK(st_find(&f, "__metadata__") == NULL && st_find(&f, "zzz") == NULL,
               "round trip: metadata or an absent name was found");
    const st_tensor *t = st_find(&f, "d");
    TEST_CHECK(t && t->dtype == ST_DTYPE_F8_E4M3 && t->n_elems == 3, "f8 tensor misread");
    st_close(&f);
    st_close(&f); /* closing twice (a zeroed struct) is safe */
    printf("round trip: 6 tensors of 5 dtypes read back bit-exact\n");
}

static void test_rejections(void) {
    size_t size;
    uint8_t short_file[5] = {1, 0, 0, 0, 0};
    expect_reject_bytes(short_file, sizeof short_file, "too short", __LINE__);
    uint8_t *b = st_bytes("{}", NULL, 0, &size);
    b[0] = 200; /* header length beyond the file */
    expect_reject_bytes(b, size, "header length 200 exceeds the 2 bytes", __LINE__);
    free(b);
    REJECT("{\"a\":{\"dtype\":\"F32\",", 0, "not valid JSON");
    REJECT("", 0, "not valid JSON");
    REJECT("[1,2]", 0, "not an object");
    REJECT("{} xyz", 0, "bytes after its JSON object");
    REJECT("{\"a\":5}", 0, "tensor 'a' is not a JSON object");
    REJECT("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has no string field 'dtype'");
    REJECT("{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
           "tensor 'w' has unknown dtype 'F7'");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "no array field 'shape'");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
           "tensor 'w' shape entry 0 is not a non-negative integer");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape entry 0");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
           "9 dimensions");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
           "'data_offsets' is not a pair");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "begin > end");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
           "tensor 'w' data_offsets [0, 8) lie outside the 4-byte data section");
    REJECT("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,10]}}", 16,
           "tensor 'w' has 10 bytes at data_offsets [0, 10) but dtype BF16 and shape [2, 3] need 12");
    REJECT("{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 4, "and a fraction");
    REJECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
           "is too large");
    REJECT("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
           "tensors 'x' [0, 8) and 'y' [4, 12) overlap");
    REJECT("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
           "tensor 'x' appears twice");
    /* Accepted edge cases: trailing spaces, empty tensors sharing an offset, metadata. */
    st_file f;
    b = st_bytes("{\"__metadata__\":{\"k\":\"v\"},\"e\":{\"dtype\":\"F32\",\"shape\":[0],"
                 "\"data_offsets\":[4,4]},\"x\":{\"dtype\":\"I64\",\"shape\":[1],"
                 "\"data_offsets\":[0,8]}}   ", NULL, 8, &size);
    TEST_OK(st_open_mem(&f, b, size, "ok.safetensors"));
    TEST_CHECK(f.n_tensors == 2 && st_find(&f, "x")->dtype == ST_DTYPE_OTHER,
               "edge cases: %d tensors", f.n_tensors);
    st_close(&f);
    free(b);
    printf("rejections: 22 corrupt headers rejected with their messages\n");
}

/* ---- the tiny checkpoints ------------------------------------------------------------------ */

enum { DIM = 8, NH = 2, NKV = 1, HD = 4, FFN = 16, VOCAB = 16, NL = 2 };

static uint32_t rng_state = 12345;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

typedef struct tiny {
    uint16_t embed[VOCAB * DIM], head[VOCAB * DIM], norm[DIM];
    uint16_t attn_norm[NL][DIM], wq[NL][NH * HD * DIM], wv[NL][NKV * HD * DIM];
    uint8_t wk[NL][NKV * HD * DIM];
    float k_scale[NL][NKV * HD], wo[NL][DIM * NH * HD], ffn_norm[NL][DIM];
    uint16_t gate[NL][FFN * DIM], up[NL][FFN * DIM], down[NL][DIM * FFN];
    uint16_t bq[NL][NH * HD], bk[NL][NKV * HD], bv[NL][NKV * HD];
    char names[NL][16][64];
} tiny;

/* F8_E4M3 codes with the values they stand for, worked out by hand from the format. */
static const uint8_t f8_codes[8] = {0x38, 0x40, 0x7e, 0x01, 0x08, 0xb8, 0x3c, 0x00};
static const float f8_values[8] = {1.0f, 2.0f, 448.0f, 0.001953125f, 0.015625f, -1.0f, 1.5f, 0.0f};

static void fill_bf16(uint16_t *p, int n) {
    for (int i = 0; i < n; i++) p[i] = okv_f32_to_bf16(frand());
}

static void tiny_fill(tiny *t) {
    fill_bf16(t->embed, VOCAB * DIM);
    fill_bf16(t->head, VOCAB * DIM);
    fill_bf16(t->norm, DIM);
    static const float row_scales[NKV * HD] = {0.5f, 0.25f, 2.0f, 1.0f};
    memcpy(t->k_scale[1], row_scales, sizeof row_scales);
    t->k_scale[0][0] = 0.5f;
    for (int l = 0; l < NL; l++) {
        fill_bf16(t->attn_norm[l], DIM);
        fill_bf16(t->wq[l], NH * HD * DIM);
        for (int i = 0; i < NKV * HD * DIM; i++) t->wk[l][i] = f8_codes[(i + l) % 8];
        for (int i = 0; i < NKV * HD * DIM; i++) t->wv[l][i] = okv_f32_to_fp16(frand());
        for (int i = 0; i < DIM * NH * HD; i++) t->wo[l][i] = frand();
        for (int i = 0; i < DIM; i++) t->ffn_norm[l][i] = frand();
        fill_bf16(t->gate[l], FFN * DIM);
        fill_bf16(t->up[l], FFN * DIM);
        fill_bf16(t->down[l], DIM * FFN);
        fill_bf16(t->bq[l], NH * HD);
        fill_bf16(t->bk[l], NKV * HD);
        fill_bf16(t->bv[l], NKV * HD);
    }
}

/* Tensors of the tiny model; layer l goes to shard l (the rest to the last shard). */
static int tiny_tensors(tiny *t, wt *ts, bool bias, bool head, int n_shards) {
    int n = 0, last = n_shards - 1;
    ts[n++] = (wt){"model.embed_tokens.weight", "BF16", 2, {VOCAB, DIM}, t->embed, sizeof t->embed, last};
    ts[n++] = (wt){"model.norm.weight", "BF16", 1, {DIM}, t->norm, sizeof t->norm, last};
    if (head) ts[n++] = (wt){"lm_head.weight", "BF16", 2, {VOCAB, DIM}, t->head, sizeof t->head, last};
    for (int l = 0; l < NL; l++) {
        int s = l < n_shards ? l : last, k = 0;
        char(*nm)[64] = t->names[l];
#define T(suffix, dt, nd_, s0, s1, ptr)                                                        \
    do {                                                                                       \
        snprintf(nm[k], 64, "model.layers.%d.%s", l, suffix);                                  \
        ts[n++] = (wt){nm[k++], dt, nd_, {s0, s1}, ptr, sizeof(ptr), s};                        \
    } while (0)
        T("input_layernorm.weight", "BF16", 1, DIM, 0, t->attn_norm[l]);
        T("self_attn.q_proj.weight", "BF16", 2, NH * HD, DIM, t->wq[l]);
        T("self_attn.k_proj.weight", "F8_E4M3", 2, NKV * HD, DIM, t->wk[l]);
        /* Layer 0: one scale for the tensor; layer 1: one per row, as [rows, 1]. */
        snprintf(nm[k], 64, "model.layers.%d.self_attn.k_proj.weight_scale", l);
        if (l == 0) ts[n++] = (wt){nm[k++], "F32", 0, {0}, t->k_scale[0], 4, s};
        else ts[n++] = (wt){nm[k++], "F32", 2, {NKV * HD, 1}, t->k_scale[1], sizeof t->k_scale[1], s};
        T("self_attn.v_proj.weight", "F16", 2, NKV * HD, DIM, t->wv[l]);
        T("self_attn.o_proj.weight", "F32", 2, DIM, NH * HD, t->wo[l]);
        T("post_attention_layernorm.weight", "F32", 1, DIM, 0, t->ffn_norm[l]);
        T("mlp.gate_proj.weight", "BF16", 2, FFN, DIM, t->gate[l]);
        T("mlp.up_proj.weight", "BF16", 2, FFN, DIM, t->up[l]);
        T("mlp.down_proj.weight", "BF16", 2, DIM, FFN, t->down[l]);
        if (bias) {
            T("self_attn.q_proj.bias", "BF16", 1, NH * HD, 0, t->bq[l]);
            T("self_attn.k_proj.bias", "BF16", 1, NKV * HD, 0, t->bk[l]);
            T("self_attn.v_proj.bias", "BF16", 1, NKV * HD, 0, t->bv[l]);
        }
#undef T
    }
    return n;
}

static char *tiny_config(const char *type, const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"model_type\":\"%s\",\"hidden_size\":%d,\"intermediate_size\":%d,"
             "\"num_hidden_layers\":%d,\"num_attention_heads\":%d,\"num_key_value_heads\":%d,"
             "\"vocab_size\":%d,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-05,"
             "\"rope_theta\":500000.0,\"hidden_act\":\"silu\"%s}",
             type, DIM, FFN, NL, NH, NKV, VOCAB, extra);
    return buf;
}

/* Row r of a head of 4 comes from row perm4[r]: pairs (0, 2) and (1, 3) of the halves,
 * worked out by hand from the reshape(2, 2).swapaxes rule. */
static const int perm4[4] = {0, 2, 1, 3};

static void check_rows_u16(const char *what, const void *got, const uint16_t *src, int rows,
                           int cols, bool permuted) {
    const uint16_t *g = got;
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        int from = permuted ? (r / 4) * 4 + perm4[r % 4] : r;
        bad += memcmp(g + r * cols, src + from * cols, (size_t)cols * 2) != 0;
    }
    TEST_CHECK(bad == 0, "%s: %d of %d rows differ", what, bad, rows);
}

static void check_f32(const char *what, const okv_tensor *t, int n, float (*want)(int, const void *),
                      const void *src, bool permuted) {
    TEST_CHECK(t->data && t->type == OKV_TYPE_F32, "%s: absent or not f32", what);
    if (!t->data) return;
    const float *g = t->data;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int from = permuted ? (i / 4) * 4 + perm4[i % 4] : i;
        float w = want(from, src);
        bad += memcmp(&g[i], &w, 4) != 0;
    }
    TEST_CHECK(bad == 0, "%s: %d of %d values differ", what, bad, n);
}

static float from_bf16(int i, const void *p) { return okv_bf16_to_f32(((const uint16_t *)p)[i]); }
static float from_f32(int i, const void *p) { return ((const float *)p)[i]; }

static void test_tiny_llama(const char *base) {
    static tiny t;
    tiny_fill(&t);
    wt ts[64];
    int n = tiny_tensors(&t, ts, false, false, 2);
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tiny-llama", base);
    write_checkpoint(dir, ts, n, 2,
                     tiny_config("llama", ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                                          "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                                          "\"original_max_position_embeddings\":512}"));
    /* The last stage: layer 1 and the (tied) head, all in shard 2; shard 1 must stay closed. */
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    char moved[640];
    snprintf(moved, sizeof moved, "%s.away", path);
    OKV_ASSERT(rename(path, moved) == 0);
    okv_model m;
    model_load_opts o = {.layer_begin = 1, .layer_end = 2, .need_head = true};
    TEST_OK(model_load(&m, dir, &o));
    const okv_model_config *c = &m.cfg;
    TEST_CHECK(!strcmp(c->arch, "llama") && c->n_layers == NL && c->dim == DIM && c->n_heads == NH &&
                   c->n_kv_heads == NKV && c->head_dim == HD && c->ffn_dim == FFN &&
                   c->n_vocab == VOCAB && c->ctx_train == 4096 && c->rope_dim == HD,
               "tiny llama: config misread");
    TEST_CHECK(c->rope_scaling == ROPE_SCALING_LLAMA3 && c->rope_factor == 8.0f &&
                   c->rope_low_freq_factor == 1.0f && c->rope_high_freq_factor == 4.0f &&
                   c->rope_orig_ctx == 512 && c->rope_theta == 500000.0f && c->norm_eps == 1e-5f,
               "tiny llama: rope or norm settings misread");
    TEST_CHECK(c->tied_embeddings && m.output.data && !m.tok_embd.data,
               "tiny llama: the head should be the tied embedding, and the embedding not kept");
    const okv_layer_weights *w = &m.layers[1];
    TEST_CHECK(!m.layers[0].wq.data, "tiny llama: layer 0 is outside the range but was loaded");
    TEST_CHECK(w->wq.type == OKV_TYPE_BF16 && w->wq.ne[0] == DIM && w->wq.ne[1] == NH * HD,
               "tiny llama: wq type %d ne [%lld, %lld]", w->wq.type, (long long)w->wq.ne[0],
               (long long)w->wq.ne[1]);
    check_rows_u16("wq (permuted per head)", w->wq.data, t.wq[1], NH * HD, DIM, true);
    /* k_proj: F8 codes times their row's scale, as bf16, then permuted. */
    uint16_t kbf[NKV * HD * DIM];
    for (int i = 0; i < NKV * HD * DIM; i++)
        kbf[i] = okv_f32_to_bf16(t.k_scale[1][i / DIM] * f8_values[(i + 1) % 8]);
    TEST_CHECK(w->wk.type == OKV_TYPE_BF16, "tiny llama: F8 k_proj should load as bf16");
    check_rows_u16("wk (F8 x row scale, permuted)", w->wk.data, kbf, NKV * HD, DIM, true);
    TEST_CHECK(w->wv.type == OKV_TYPE_F16, "tiny llama: v_proj should stay f16");
    check_rows_u16("wv (as stored)", w->wv.data, t.wv[1], NKV * HD, DIM, false);
    TEST_CHECK(w->wo.type == OKV_TYPE_F32 && !memcmp(w->wo.data, t.wo[1], sizeof t.wo[1]),
               "tiny llama: o_proj differs");
    check_f32("attn_norm (bf16 -> f32)", &w->attn_norm, DIM, from_bf16, t.attn_norm[1], false);
    check_f32("ffn_norm (f32)", &w->ffn_norm, DIM, from_f32, t.ffn_norm[1], false);
    check_f32("output_norm (bf16 -> f32)", &m.output_norm, DIM, from_bf16, t.norm, false);
    check_rows_u16("output (tied embedding)", m.output.data, t.embed, VOCAB, DIM, false);
    TEST_CHECK(!w->bq.data && !c->qkv_bias, "tiny llama: llama has no biases");
    model_free(&m);

    /* The whole model needs shard 1: its absence is named. */
    o = (model_load_opts){.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
    okv_clear_error();
    int st = model_load(&m, dir, &o);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "model-00001-of-00002.safetensors") &&
                   strstr(okv_last_error(), "missing"),
               "missing shard: status %d, message '%s'", st, okv_last_error());
    model_free(&m);
    OKV_ASSERT(rename(moved, path) == 0);
    TEST_OK(model_load(&m, dir, &o));
    TEST_CHECK(m.tok_embd.data && m.output.data == m.tok_embd.data && m.layers[0].wq.data,
               "whole tiny llama: embedding, tied head or layer 0 missing");
    check_rows_u16("layer 0 wq", m.layers[0].wq.data, t.wq[0], NH * HD, DIM, true);
    for (int i = 0; i < NKV * HD * DIM; i++) kbf[i] = okv_f32_to_bf16(0.5f * f8_values[i % 8]);
    check_rows_u16("layer 0 wk (F8 x tensor scale, permuted)", m.layers[0].wk.data, kbf, NKV * HD,
                   DIM, true);
    model_free(&m);
    printf("tiny llama: 2 shards, layer range, tied head, F8+scale, bf16/f16/f32, norms to f32\n");
}

static void test_tiny_qwen2(const char *base) {
    static tiny t;
    tiny_fill(&t);
    wt ts[64];
    int n = tiny_tensors(&t, ts, true, true, 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", base);
    write_checkpoint(dir, ts, n, 1,
                     tiny_config("qwen2", ",\"head_dim\":4,\"tie_word_embeddings\":false,"
                                          "\"use_sliding_window\":false,\"sliding_window\":64,"
                                          "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,"
                                          "\"original_max_position_embeddings\":1024}"));
    okv_model m;
    model_load_opts o = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
    TEST_OK(model_load(&m, dir, &o));
    const okv_model_config *c = &m.cfg;
    TEST_CHECK(!strcmp(c->arch, "qwen2") && c->qkv_bias && !c->tied_embeddings,
               "tiny qwen2: arch, bias or tie flags wrong");
    TEST_CHECK(c->rope_scaling == ROPE_SCALING_YARN && c->rope_factor == 4.0f &&
                   c->rope_orig_ctx == 1024 && c->yarn_beta_fast == 32.0f && c->yarn_beta_slow == 1.0f,
               "tiny qwen2: yarn settings misread");
    TEST_CHECK(fabsf(m.rope_mscale - (float)(0.1 * log(4.0) + 1.0)) < 1e-6f,
               "tiny qwen2: yarn mscale %g", m.rope_mscale);
    check_rows_u16("lm_head (untied)", m.output.data, t.head, VOCAB, DIM, false);
    for (int l = 0; l < NL; l++) {
        const okv_layer_weights *w = &m.layers[l];
        check_f32("bq (permuted, f32)", &w->bq, NH * HD, from_bf16, t.bq[l], true);
        check_f32("bk (permuted, f32)", &w->bk, NKV * HD, from_bf16, t.bk[l], true);
        check_f32("bv (as stored, f32)", &w->bv, NKV * HD, from_bf16, t.bv[l], false);
        check_rows_u16("qwen2 wq", w->wq.data, t.wq[l], NH * HD, DIM, true);
    }
    model_free(&m);
    printf("tiny qwen2: single file, q/k/v biases permuted to f32, untied head, yarn\n");
}

/* The tiny llama config with key's value replaced by value (key must be in it). */
static const char *config_with(const char *key, const char *value) {
    static char out[2048];
    const char *cfg = tiny_config("llama", "");
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(cfg, pat);
    OKV_ASSERT(at);
    at += strlen(pat);
    const char *end = at + strcspn(at, ",}");
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - cfg), cfg, value, end);
    return out;
}

static void expect_config_error(const char *base, const char *type, const char *extra,
                                const char *want, int line) {
    static tiny t;
    tiny_fill(&t);
    wt ts[64];
    int n = tiny_tensors(&t, ts, false, false, 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny-bad", base);
    /* type NULL: extra is the whole config text. */
    write_checkpoint(dir, ts, n, 1, type ? tiny_config(type, extra) : extra);
    okv_model m;
    model_load_opts o = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
    okv_clear_error();
    int st = model_load(&m, dir, &o);
    test_checks++;
    if (want ? (st != OKV_ERR_INPUT || !strstr(okv_last_error(), want)) : st != OKV_OK) {
        test_failures++;
        fprintf(stderr, "FAIL line %d: model_type %s%s: status %d, message '%s', wanted '%s'\n",
                line, type ? type : "", extra, st, okv_last_error(), want ? want : "success");
    }
    model_free(&m);
}
#define CONFIG_ERROR(type, extra, want) expect_config_error(base, type, extra, want, __LINE__)

static void test_config_errors(const char *base) {
    CONFIG_ERROR("gpt2", "", "model_type 'gpt2' is not supported");
    CONFIG_ERROR("mistral", ",\"sliding_window\":1024",
                 "sliding_window = 1024 is shorter than max_position_embeddings = 4096; "
                 "sliding-window attention is not implemented");
    CONFIG_ERROR("mistral", ",\"sliding_window\":null", NULL);
    CONFIG_ERROR("mistral", ",\"sliding_window\":4096", NULL);
    CONFIG_ERROR("qwen2", ",\"use_sliding_window\":true,\"sliding_window\":128",
                 "sliding-window attention is not implemented");
    CONFIG_ERROR("llama", ",\"rope_scaling\":{\"rope_type\":\"longrope\",\"factor\":2.0}",
                 "rope scaling type 'longrope' is not supported");
    CONFIG_ERROR("llama", ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}",
                 "has no 'original_max_position_embeddings'");
    CONFIG_ERROR("llama", ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":-2}",
                 "rope_scaling.factor = -2 must be a positive number");
    CONFIG_ERROR("llama", ",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0}", NULL);
    CONFIG_ERROR("llama", ",\"rope_scaling\":null", NULL);
    CONFIG_ERROR("llama", ",\"head_dim\":3", "head_dim 3 is odd");
    CONFIG_ERROR("llama", ",\"attention_bias\":true", "attention_bias is true");
    CONFIG_ERROR("llama", ",\"quantization_config\":{\"quant_method\":\"gptq\"}",
                 "quant_method 'gptq' is not supported");
    CONFIG_ERROR("llama", ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000.0}",
                 NULL);
    CONFIG_ERROR("llama", ",\"head_dim\":0", "head_dim = 0 is not a positive "
                 "integer");
    /* Layer counts are checked against the tensors before any per-layer work (1e9 used to abort
     * on an allocation); out-of-range hyperparameters are file errors naming the key. */
    char want[160];
    snprintf(want, sizeof want, "num_hidden_layers = 1000000000, but the file holds tensors for %d "
             "layers", NL);
    CONFIG_ERROR(NULL, config_with("num_hidden_layers", "1000000000"), want);
    char fewer[16];
    snprintf(fewer, sizeof fewer, "%d", NL - 1);
    snprintf(want, sizeof want, "num_hidden_layers = %d, but the file holds tensors for %d layers",
             NL - 1, NL);
    CONFIG_ERROR(NULL, config_with("num_hidden_layers", fewer), want);
    CONFIG_ERROR(NULL, config_with("rms_norm_eps", "2.0"), "norm epsilon");
    CONFIG_ERROR(NULL, config_with("rope_theta", "1e999"), "rope_theta");
    CONFIG_ERROR(NULL, config_with("rope_theta", "0.5"), "rope base");
    char dir[512], path[600], text[2048];
    snprintf(dir, sizeof dir, "%s/tiny-bad", base);
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(text, sizeof text, "%s", tiny_config("llama", ""));
    memcpy(strstr(text, "silu"), "gelu", 4);
    write_text(path, text);
    okv_model m;
    model_load_opts o = {.layer_end = -1};
    okv_clear_error();
    int st = model_load(&m, dir, &o);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "hidden_act 'gelu' is not supported"),
               "gelu config: '%s'", okv_last_error());
    model_free(&m);
    write_text(path, "{\"model_type\":\"llama\",\"hidden_size\":8}");
    okv_clear_error();
    st = model_load(&m, dir, &o);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "no field 'num_hidden_layers'"),
               "incomplete config: '%s'", okv_last_error());
    model_free(&m);
    write_text(path, "{\"model_type\": \"llama\",");
    okv_clear_error();
    st = model_load(&m, dir, &o);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "config.json is not valid JSON"),
               "broken config: '%s'", okv_last_error());
    model_free(&m);

    /* A needed tensor in a dtype the engine cannot use is named with its dtype. */
    static tiny t;
    tiny_fill(&t);
    wt ts[64];
    int n = tiny_tensors(&t, ts, false, false, 1);
    for (int i = 0; i < n; i++)
        if (!strcmp(ts[i].name, "model.layers.0.mlp.up_proj.weight")) {
            ts[i].dtype = "I16";
        }
    write_checkpoint(dir, ts, n, 1, tiny_config("llama", ""));
    o = (model_load_opts){.layer_end = -1};
    okv_clear_error();
    st = model_load(&m, dir, &o);
    TEST_CHECK(st == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "tensor 'model.layers.0.mlp.up_proj.weight' has dtype I16"),
               "I16 weight: '%s'", okv_last_error());
    model_free(&m);
    /* A missing tensor is named. */
    n = tiny_tensors(&t, ts, false, false, 1);
    ts[n - 1].name = "model.layers.1.mlp.extra"; /* the last entry was layer 1's down_proj */
    write_checkpoint(dir, ts, n, 1, tiny_config("llama", ""));
    okv_clear_error();
    st = model_load(&m, dir, &o);
    TEST_CHECK(st == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "tensor 'model.layers.1.mlp.down_proj.weight' is missing"),
               "missing tensor: '%s'", okv_last_error());
    model_free(&m);
    printf("config: 20 bad or edge-case configs and tensors handled as expected\n");
}

static void test_index_errors(const char *base) {
    char dir[512], path[1100];
    snprintf(dir, sizeof dir, "%s/index-bad", base);
    snprintf(path, sizeof path, "mkdir -p %s && rm -f %s/*", dir, dir);
    OKV_ASSERT(system(path) == 0);
    st_checkpoint c;
    okv_clear_error();
    TEST_CHECK(st_checkpoint_open(&c, dir) == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "neither model.safetensors nor"),
               "empty dir: '%s'", okv_last_error());
    st_checkpoint_close(&c);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    okv_clear_error();
    TEST_CHECK(st_checkpoint_open(&c, dir) == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "outside the checkpoint directory"),
               "escaping shard: '%s'", okv_last_error());
    st_checkpoint_close(&c);
    write_text(path, "{\"weight_map\":[]}");
    okv_clear_error();
    TEST_CHECK(st_checkpoint_open(&c, dir) == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "no object field 'weight_map'"),
               "bad weight_map: '%s'", okv_last_error());
    st_checkpoint_close(&c);
    /* The index names a shard that exists but lacks the tensor. */
    float v = 1;
    wt ts[] = {{"a", "F32", 1, {1}, &v, 4, 0}};
    char shard[600];
    snprintf(shard, sizeof shard, "%s/s1.safetensors", dir);
    write_shard(shard, ts, 1, 0);
    write_text(path, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
                     "\"c\":\"s2.safetensors\"}}");
    TEST_OK(st_checkpoint_open(&c, dir));
    const st_tensor *t = NULL;
    bool has = false;
    TEST_OK(st_checkpoint_has(&c, "c", &has));
    TEST_CHECK(has && st_checkpoint_shards_opened(&c) == 0, "has() should not open shards");
    TEST_OK(st_checkpoint_find(&c, "a", &t));
    TEST_CHECK(t && *(const float *)t->data == 1.0f && st_checkpoint_shards_opened(&c) == 1,
               "tensor a not read from its shard");
    TEST_OK(st_checkpoint_find(&c, "zz", &t));
    TEST_CHECK(t == NULL, "an unlisted tensor was found");
    okv_clear_error();
    TEST_CHECK(st_checkpoint_find(&c, "b", &t) == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "lists tensor 'b' in shard 's1.safetensors'"),
               "listed but absent: '%s'", okv_last_error());
    okv_clear_error();
    TEST_CHECK(st_checkpoint_find(&c, "c", &t) == OKV_ERR_INPUT &&
                   strstr(okv_last_error(), "s2.safetensors' listed by") &&
                   strstr(okv_last_error(), "is missing"),
               "missing shard: '%s'", okv_last_error());
    st_checkpoint_close(&c);
    printf("index: escaping, malformed, listed-but-absent and missing shards rejected\n");
}

/* ---- permutation --------------------------------------------------------------------------- */

static void test_permutation(void) {
    /* Hand-computed: 2 heads of 4 rows -> rows 0 2 1 3 | 4 6 5 7; 1 head of 8 -> 0 4 1 5 2 6 3 7. */
    int32_t src[8] = {0, 1, 2, 3, 4, 5, 6, 7}, dst[8];
    static const int32_t want2[8] = {0, 2, 1, 3, 4, 6, 5, 7}, want1[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    hf_permute_rows(dst, src, 8, sizeof(int32_t), 2);
    TEST_CHECK(!memcmp(dst, want2, sizeof dst), "permutation of 2 heads x 4 rows is wrong");
    hf_permute_rows(dst, src, 8, sizeof(int32_t), 1);
    TEST_CHECK(!memcmp(dst, want1, sizeof dst), "permutation of 1 head x 8 rows is wrong");

    /* Semantics: interleaved RoPE on permuted rows reorders HF's rotate-half RoPE, so q.k per
     * head is unchanged. hd = 8, 3 heads, rows of 5 inputs, position 37. */
    enum { H = 3, D = 8, IN = 5 };
    float w[H * D][IN], wp[H * D][IN], x[IN], q[H * D], qp[H * D];
    for (int r = 0; r < H * D; r++)
        for (int i = 0; i < IN; i++) w[r][i] = frand();
    for (int i = 0; i < IN; i++) x[i] = frand();
    hf_permute_rows(wp, w, H * D, sizeof w[0], H);
    for (int r = 0; r < H * D; r++) {
        q[r] = qp[r] = 0;
        for (int i = 0; i < IN; i++) q[r] += w[r][i] * x[i], qp[r] += wp[r][i] * x[i];
    }
    double worst = 0;
    for (int h = 0; h < H; h++) {
        float *a = q + h * D, *b = qp + h * D;
        for (int i = 0; i < D / 2; i++) {
            double th = 37.0 * pow(10000.0, -2.0 * i / D), cs = cos(th), sn = sin(th);
            double hf0 = a[i] * cs - a[i + D / 2] * sn, hf1 = a[i + D / 2] * cs + a[i] * sn;
            double il0 = b[2 * i] * cs - b[2 * i + 1] * sn, il1 = b[2 * i + 1] * cs + b[2 * i] * sn;
            worst = fmax(worst, fmax(fabs(hf0 - il0), fabs(hf1 - il1)));
        }
    }
    TEST_CHECK(worst < 1e-6, "interleaved RoPE of permuted rows differs from rotate-half by %g", worst);
    printf("permutation: hand-computed rows exact; RoPE equivalence worst error %.2e\n", worst);
}

/* ---- rope frequencies ---------------------------------------------------------------------- */

static double base_freq(double theta, int i, int d) { return 1.0 / pow(theta, 2.0 * i / d); }

static double compare(const char *what, const float *got, const double *want, int n) {
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - want[i]) / fabs(want[i]));
    TEST_CHECK(worst < 2e-6, "%s: worst relative error %g", what, worst);
    return worst;
}

static void test_rope_freqs(void) {
    enum { D = 128, N = D / 2 };
    float got[N];
    double want[N], worst = 0;
    okv_model_config c = {.rope_dim = D, .rope_theta = 500000.0f};

    /* llama3 (Llama-3.1: factor 8, low 1, high 4, original 8192). */
    c.rope_scaling = ROPE_SCALING_LLAMA3;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_orig_ctx = 8192;
    int kept = 0, scaled = 0, blended = 0;
    for (int i = 0; i < N; i++) {
        double f = base_freq(500000.0, i, D), wl = 2 * M_PI / f;
        if (wl < 8192 / 4.0) {
            want[i] = f, kept++;
        } else if (wl > 8192 / 1.0) {
            want[i] = f / 8, scaled++;
        } else {
            double s = (8192 / wl - 1) / (4 - 1);
            want[i] = (1 - s) * f / 8 + s * f, blended++;
        }
    }
    TEST_CHECK(kept && scaled && blended, "llama3 case does not reach all three regimes");
    TEST_CHECK(model_rope_freqs(&c, 131072, got) == 1.0f, "llama3: mscale should be 1");
    worst = fmax(worst, compare("llama3", got, want, N));

    /* linear */
    c.rope_scaling = ROPE_SCALING_LINEAR;
    c.rope_factor = 4;
    c.rope_theta = 10000.0f;
    for (int i = 0; i < N; i++) want[i] = base_freq(10000.0, i, D) / 4;
    model_rope_freqs(&c, 4096, got);
    worst = fmax(worst, compare("linear", got, want, N));

    /* dynamic NTK: the base grows to cover 16384 positions of a 4096 model with factor 2. */
    c.rope_scaling = ROPE_SCALING_DYNAMIC;
    c.rope_factor = 2;
    c.rope_orig_ctx = 4096;
    double theta = 10000.0 * pow(2.0 * 16384 / 4096 - 1.0, (double)D / (D - 2));
    for (int i = 0; i < N; i++) want[i] = base_freq(theta, i, D);
    model_rope_freqs(&c, 16384, got);
    worst = fmax(worst, compare("dynamic", got, want, N));

    /* yarn, as transformers computes it: correction dims clamped to [0, D-1], a linear ramp over
     * the N frequency indices between them; mscale 0.1 ln(factor) + 1. The second case has a
     * high correction dim above N-1. */
    static const struct { double theta, orig, factor; } yc[] = {{1e6, 32768, 4}, {10000, 131072, 8}};
    for (int k = 0; k < 2; k++) {
        c = (okv_model_config){.rope_dim = D, .rope_theta = (float)yc[k].theta,
                               .rope_scaling = ROPE_SCALING_YARN, .rope_factor = (float)yc[k].factor,
                               .rope_orig_ctx = (int)yc[k].orig, .yarn_beta_fast = 32,
                               .yarn_beta_slow = 1};
        double lo = floor(D * log(yc[k].orig / (32 * 2 * M_PI)) / (2 * log(yc[k].theta)));
        double hi = ceil(D * log(yc[k].orig / (1 * 2 * M_PI)) / (2 * log(yc[k].theta)));
        lo = fmax(lo, 0);
        hi = fmin(hi, D - 1);
        for (int i = 0; i < N; i++) {
            double ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1), keep = 1 - ramp;
            double f = base_freq(yc[k].theta, i, D);
            want[i] = f / yc[k].factor * (1 - keep) + f * keep;
        }
        float ms = model_rope_freqs(&c, (int)yc[k].orig * 4, got);
        TEST_CHECK(fabsf(ms - (float)(0.1 * log(yc[k].factor) + 1)) < 1e-6f, "yarn %d: mscale %g", k, ms);
        char what[32];
        snprintf(what, sizeof what, "yarn case %d (hi %g)", k, hi);
        worst = fmax(worst, compare(what, got, want, N));
    }
    printf("rope frequencies: llama3 (%d kept, %d scaled, %d blended), linear, dynamic, 2 yarn "
           "cases; worst relative error %.2e\n", kept, scaled, blended, worst);
}

int main(void) {
    okv_log_init(0);
    char base[256];
    snprintf(base, sizeof base, "%s/omnikv-test-st-%d", test_env("TMPDIR", "/tmp"), (int)getpid());
    test_rejections();
    test_round_trip(base);
    test_permutation();
    test_index_errors(base);
    test_tiny_llama(base);
    test_tiny_qwen2(base);
    test_config_errors(base);
    test_rope_freqs();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (!test_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
    return test_summary();
}
