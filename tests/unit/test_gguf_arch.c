/* test_gguf_arch.c — GGUF architectures beyond llama, at the level of the loaded tensors: a qwen2
 * file's Q/K weights (F32, F16, BF16, Q8_0, Q4_1) and biases are reordered from NEOX's rotate-half rows into the
 * interleaved pairs the kernels rotate, row for row as hand-computed here, while V and a `llama`
 * file's Q stay as stored; a qwen2 file with partial RoPE and an unknown architecture are refused
 * with a sentence. Against llama.cpp: tests/model/test_arch_llamacpp.c. */
#include "common.h"
#include "model/gguf.h"
#include "model/model.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { DIM = 32, NH = 2, NKV = 1, HD = 4, FFN = 32, VOCAB = 4 };

/* Byte i of row r of every test tensor: rows tell apart by content, whatever their type (the
 * loader moves rows whole and never reads the values). */
static uint8_t pattern(int64_t r, size_t i) { return (uint8_t)(r * 37 + (int64_t)i * 11 + 1); }

/* rows x cols of type t (rows == 1: a 1-D tensor of cols elements). */
static void add_tensor(gguf_writer *w, const char *name, okv_type t, int rows, int cols) {
    const size_t rb = okv_type_row_bytes(t, cols);
    uint8_t *b = malloc(rb * (size_t)rows);
    for (int r = 0; r < rows; r++)
        for (size_t i = 0; i < rb; i++) b[r * rb + i] = pattern(r, i);
    const int64_t ne[2] = {cols, rows};
    gguf_w_tensor(w, name, t, rows > 1 ? 2 : 1, ne, b);
    free(b);
}

/* A one-layer model of architecture arch; wq/wk of type qk_type; rope_dim 0 leaves the key out. */
static void write_model(const char *path, const char *arch, okv_type qk_type, int rope_dim) {
    gguf_writer *w = gguf_writer_new(32);
    char key[96];
    gguf_w_str(w, "general.architecture", arch);
#define ARCH_U32(k, v) (snprintf(key, sizeof key, "%s." k, arch), gguf_w_u32(w, key, (v)))
    ARCH_U32("block_count", 1);
    ARCH_U32("embedding_length", DIM);
    ARCH_U32("feed_forward_length", FFN);
    ARCH_U32("attention.head_count", NH);
    ARCH_U32("attention.head_count_kv", NKV);
    ARCH_U32("attention.key_length", HD); /* heads narrower than DIM / NH, as Mistral Nemo's */
    ARCH_U32("context_length", 64);
    if (rope_dim) ARCH_U32("rope.dimension_count", (uint32_t)rope_dim);
#undef ARCH_U32
    add_tensor(w, "token_embd.weight", OKV_TYPE_F32, VOCAB, DIM);
    add_tensor(w, "output_norm.weight", OKV_TYPE_F32, 1, DIM);
    add_tensor(w, "blk.0.attn_norm.weight", OKV_TYPE_F32, 1, DIM);
    add_tensor(w, "blk.0.ffn_norm.weight", OKV_TYPE_F32, 1, DIM);
    add_tensor(w, "blk.0.attn_q.weight", qk_type, NH * HD, DIM);
    add_tensor(w, "blk.0.attn_k.weight", qk_type, NKV * HD, DIM);
    add_tensor(w, "blk.0.attn_v.weight", OKV_TYPE_F32, NKV * HD, DIM);
    add_tensor(w, "blk.0.attn_output.weight", OKV_TYPE_F32, DIM, NH * HD);
    add_tensor(w, "blk.0.ffn_gate.weight", OKV_TYPE_F32, FFN, DIM);
    add_tensor(w, "blk.0.ffn_up.weight", OKV_TYPE_F32, FFN, DIM);
    add_tensor(w, "blk.0.ffn_down.weight", OKV_TYPE_F32, DIM, FFN);
    if (!strcmp(arch, "qwen2")) {
        add_tensor(w, "blk.0.attn_q.bias", OKV_TYPE_F32, 1, NH * HD);
        add_tensor(w, "blk.0.attn_k.bias", OKV_TYPE_F32, 1, NKV * HD);
        add_tensor(w, "blk.0.attn_v.bias", OKV_TYPE_F32, 1, NKV * HD);
    }
    TEST_OK(gguf_writer_save(w, path));
    gguf_writer_free(w);
}

/* Destination row r of a NEOX tensor: head h = r / HD, pair i = (r % HD) / 2, member j = r % 2,
 * from source row h*HD + j*HD/2 + i (the first half holds the pairs' first members). */
static int neox_source(int r) { return (r / HD) * HD + (r % 2) * (HD / 2) + (r % HD) / 2; }

/* Rows of a matrix (elements of a bias) as loaded that are not the stored row they should be. */
static int rows_wrong(const okv_tensor *t, int rows, bool permuted) {
    const bool bias = t->n_dims == 1;
    const size_t rb = bias ? sizeof(float) : okv_type_row_bytes(t->type, t->ne[0]);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        /* a bias was written as one row: element e holds bytes pattern(0, 4e .. 4e+3) */
        int64_t from = permuted ? neox_source(r) : r;
        for (size_t i = 0; i < rb; i++) {
            uint8_t want = bias ? pattern(0, (size_t)from * rb + i) : pattern(from, i);
            if (((const uint8_t *)t->data)[(size_t)r * rb + i] != want) {
                bad++;
                break;
            }
        }
    }
    return bad;
}

int main(void) {
    okv_log_init(0);
    char dir[] = "/tmp/test_gguf_arch.XXXXXX", path[64];
    OKV_ASSERT(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    const model_load_opts o = {.layer_end = -1, .need_embed = true, .need_head = true};
    okv_model m;

    const okv_type types[] = {OKV_TYPE_F32, OKV_TYPE_F16, OKV_TYPE_BF16, OKV_TYPE_Q8_0, OKV_TYPE_Q4_1};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        write_model(path, "qwen2", types[i], 0);
        TEST_OK(model_load(&m, path, &o));
        const okv_layer_weights *l = &m.layers[0];
        TEST_CHECK(m.cfg.qkv_bias && !strcmp(m.cfg.arch, "qwen2"), "qwen2: arch or bias flag");
        int wq = rows_wrong(&l->wq, NH * HD, true), wk = rows_wrong(&l->wk, NKV * HD, true);
        int bq = rows_wrong(&l->bq, NH * HD, true), bk = rows_wrong(&l->bk, NKV * HD, true);
        int wv = rows_wrong(&l->wv, NKV * HD, false), bv = rows_wrong(&l->bv, NKV * HD, false);
        TEST_CHECK(wq + wk + bq + bk + wv + bv == 0, "qwen2 %s: wrong rows wq %d wk %d bq %d bk %d "
                   "wv %d bv %d", okv_type_name(types[i]), wq, wk, bq, bk, wv, bv);
        printf("qwen2 (%s Q/K): Q, K and their biases reordered into RoPE pairs, V as stored\n",
               okv_type_name(types[i]));
        model_free(&m);
    }

    write_model(path, "llama", OKV_TYPE_F32, 0);
    TEST_OK(model_load(&m, path, &o));
    TEST_CHECK(rows_wrong(&m.layers[0].wq, NH * HD, false) == 0 && !m.cfg.qkv_bias,
               "llama: Q not as stored, or a bias flag without biases");
    model_free(&m);
    printf("llama: Q as stored (the converter already paired its rows)\n");

    struct { const char *arch; int rope_dim; const char *want; } refused[] = {
        {"qwen2", 2, "partial NEOX RoPE"},
        {"phi3", 0, "architecture 'phi3'"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        write_model(path, refused[i].arch, OKV_TYPE_F32, refused[i].rope_dim);
        okv_clear_error();
        int st = model_load(&m, path, &o);
        TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), refused[i].want),
                   "%s rope_dim %d: status %d, message '%s' (want '%s')", refused[i].arch,
                   refused[i].rope_dim, st, okv_last_error(), refused[i].want);
        model_free(&m);
    }
    printf("refused: qwen2 with partial RoPE, an unknown architecture\n");
    unlink(path);
    rmdir(dir);
    return test_summary();
}
