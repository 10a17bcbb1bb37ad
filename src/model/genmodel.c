/* genmodel.c — synthetic Llama-family GGUF models: named shapes, a byte-level BPE vocabulary
 * learnt from a built-in English text, and seeded counter-based random weights streamed to the
 * file a few MiB at a time. Tested by tests/unit/test_gguf.c (tables, values, determinism). */
#include "genmodel.h"

#include "../../kernels/backend.h"
#include "../common.h"
#include "gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shapes ------------------------------------------------------------------------------- */

typedef struct shape_def {
    const char *name;
    int n_layers, dim, ffn_dim, n_heads, n_kv_heads, head_dim, n_vocab, ctx_train;
    float rope_theta, norm_eps;
    bool tied;
    float llama3_factor; /* 0: no rope scaling */
    float llama3_low, llama3_high;
    int llama3_orig_ctx;
} shape_def;

static const shape_def shapes[] = {
    {"tiny", 4, 64, 128, 4, 2, 16, 512, 4096, 10000.0f, 1e-5f, false, 0, 0, 0, 0},
    /* tiny with every row a multiple of 256, so K-quant files hold no fallback tensors */
    {"tiny-k", 2, 256, 512, 4, 2, 64, 512, 4096, 10000.0f, 1e-5f, false, 0, 0, 0, 0},
    {"smollm2-135m", 30, 576, 1536, 9, 3, 64, 49152, 8192, 100000.0f, 1e-5f, true, 0, 0, 0, 0},
    {"llama3-8b", 32, 4096, 14336, 32, 8, 128, 128256, 262144, 500000.0f, 1e-5f, false, 0, 0, 0, 0},
    {"yi-9b", 48, 4096, 11008, 32, 4, 128, 64000, 200000, 10000000.0f, 1e-6f, false, 0, 0, 0, 0},
    {"llama3.1-70b", 80, 8192, 28672, 64, 8, 128, 128256, 131072, 500000.0f, 1e-5f, false,
     8.0f, 1.0f, 4.0f, 8192},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

const char *const *genmodel_shape_names(int *n) {
    static const char *names[N_SHAPES];
    for (int i = 0; i < N_SHAPES; i++) names[i] = shapes[i].name;
    *n = N_SHAPES;
    return names;
}

int genmodel_shape(const char *name, okv_model_config *c) {
    const shape_def *s = NULL;
    for (int i = 0; i < N_SHAPES; i++)
        if (!strcmp(name, shapes[i].name)) s = &shapes[i];
    if (!s) {
        char known[256] = "";
        for (int i = 0; i < N_SHAPES; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     shapes[i].name);
        return okv_fail(OKV_ERR_USAGE, "unknown model shape '%s'; the known shapes are %s", name,
                        known);
    }
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "llama");
    snprintf(c->name, sizeof c->name, "%s", s->name);
    c->n_layers = s->n_layers;
    c->dim = s->dim;
    c->ffn_dim = s->ffn_dim;
    c->n_heads = s->n_heads;
    c->n_kv_heads = s->n_kv_heads;
    c->head_dim = s->head_dim;
    c->n_vocab = s->n_vocab;
    c->ctx_train = s->ctx_train;
    c->norm_eps = s->norm_eps;
    c->rope_theta = s->rope_theta;
    c->rope_dim = s->head_dim;
    c->rope_scaling = s->llama3_factor > 0 ? ROPE_SCALING_LLAMA3 : ROPE_SCALING_NONE;
    c->rope_factor = s->llama3_factor > 0 ? s->llama3_factor : 1.0f;
    c->rope_low_freq_factor = s->llama3_low;
    c->rope_high_freq_factor = s->llama3_high;
    c->rope_orig_ctx = s->llama3_orig_ctx;
    c->yarn_beta_fast = 32.0f;
    c->yarn_beta_slow = 1.0f;
    c->tied_embeddings = s->tied;
    return OKV_OK;
}

/* ---- values -------------------------------------------------------------------------------- */

static uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t stream_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the name */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return splitmix64_mix(seed ^ splitmix64_mix(h));
}

static bool is_norm(const char *name) {
    size_t n = strlen(name), k = strlen("_norm.weight");
    return n >= k && !strcmp(name + n - k, "_norm.weight");
}

/* Only integer arithmetic and single float roundings, kept in separate statements so no
 * compiler fuses them: the values are bit-identical on every machine and compiler. */
void genmodel_values(uint64_t seed, const char *name, int64_t first, int64_t n, float *out) {
    const uint64_t key = stream_key(seed, name);
    const bool norm = is_norm(name);
    /* A sum of four 16-bit uniforms has mean 131070 and standard deviation 65536/sqrt(3). */
    const float lin_scale = 0.02f / 37837.23f;
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = splitmix64_mix(key + (uint64_t)(first + i + 1) * 0x9e3779b97f4a7c15ull);
        if (norm) {
            float u = (float)((int32_t)(h >> 40) - (1 << 23)) * (1.0f / 8388608.0f);
            float d = 0.1f * u;
            out[i] = 1.0f + d;
        } else {
            int32_t s = (int32_t)((h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) +
                                  (h >> 48)) - 131070;
            out[i] = (float)s * lin_scale;
        }
    }
}

/* ---- tokenizer ----------------------------------------------------------------------------- */

/* Training text for the merges: plain English so that common words become single tokens. */
static const char corpus[] =
    "The people of the town had a long history with the river that ran through the middle of "
    "their valley. In the spring the water would rise, and in the summer it was low and warm. "
    "Children learned to swim there, and their parents told them stories about the old bridge "
    "that had been built by the first families who came to live in this place. It was a good "
    "place to live, and most of the people who were born there stayed for the rest of their "
    "lives. There was a school, a market, a small library, and a station where the morning "
    "train stopped on its way to the city. Every evening the men and women would walk along "
    "the road by the water and talk about the weather, the price of bread, and the news from "
    "other parts of the country. When the first computer arrived at the library, everyone wanted "
    "to see what it could do. The librarian showed them how to read the news, how to write a "
    "letter, and how to find information about almost anything. Some of the older people thought "
    "that it would never be useful for them, but within a year they were using it every day. "
    "This is how the world changes: slowly at first, and then all at once. A question that "
    "nobody could answer becomes a question that anyone can answer in a moment. The important "
    "thing is not the machine itself but what people decide to do with it, and whether they "
    "remember to think for themselves. Language models read a very large amount of text and "
    "learn to predict the next word. They are trained on books, articles, and conversations, "
    "and they can answer questions, summarize documents, translate between languages, and write "
    "programs. With a long context the model can read an entire report before it answers, and "
    "the system only needs to attend to the most relevant tokens for each step of generation. "
    "Information that seemed unimportant at the beginning of a conversation can become important "
    "later, so nothing should be thrown away too early. This is the main idea behind the method "
    "that keeps every token in memory and selects the ones that matter for the current step. ";

typedef struct vocab {
    int n, cap;      /* tokens so far; capacity = n_vocab */
    char **tok;      /* [cap] UTF-8 */
    int32_t *type;   /* [cap] TOK_TYPE_* */
    int n_merges;
    char **merges;   /* [n_merges] "left right" */
} vocab;

static void vocab_free(vocab *v) {
    for (int i = 0; i < v->n; i++) free(v->tok[i]);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tok);
    free(v->type);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

static bool vocab_add(vocab *v, char *s, int32_t type) {
    if (!s) return false;
    v->tok[v->n] = s;
    v->type[v->n++] = type;
    return true;
}

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * take code points from U+0100 on in byte order. *byte receives the byte of byte token i. */
static void byte_token(int i, int *byte, char out[3]) {
    int cp;
    if (i < 94) {
        *byte = cp = 33 + i; /* '!'..'~' */
    } else if (i < 106) {
        *byte = cp = 161 + (i - 94); /* U+00A1..U+00AC */
    } else if (i < 188) {
        *byte = cp = 174 + (i - 106); /* U+00AE..U+00FF */
    } else {
        int k = i - 188, b;
        for (b = 0; b < 256; b++) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
            if (!printable && k-- == 0) break;
        }
        *byte = b;
        cp = 256 + (i - 188);
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static char *str_cat3(const char *a, const char *sep, const char *b) {
    size_t na = strlen(a), ns = strlen(sep), nb = strlen(b);
    char *s = malloc(na + ns + nb + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, sep, ns);
    memcpy(s + na + ns, b, nb + 1);
    return s;
}

#define MAX_MERGES 400
#define MAX_WORDS 1024
#define MAX_WORD_LEN 32

typedef struct word { int sym[MAX_WORD_LEN]; int len, count; } word;

/* Splits the corpus as the gpt2 pre-tokenizer does for plain text (an optional space followed
 * by letters, or a single other character) and counts the distinct words. */
static int corpus_words(word *w, const int *byte_id) {
    int n = 0;
    const char *p = corpus;
    while (*p) {
        const char *s = p;
        if (*p == ' ' && ((p[1] | 32) >= 'a' && (p[1] | 32) <= 'z')) p++;
        if ((*p | 32) >= 'a' && (*p | 32) <= 'z')
            while ((*p | 32) >= 'a' && (*p | 32) <= 'z' && p - s < MAX_WORD_LEN) p++;
        else
            p++;
        int len = (int)(p - s), k;
        for (k = 0; k < n; k++) {
            if (w[k].len != len) continue;
            int j = 0;
            while (j < len && w[k].sym[j] == byte_id[(unsigned char)s[j]]) j++;
            if (j == len) break;
        }
        if (k == n) {
            OKV_ASSERT(n < MAX_WORDS);
            w[n].len = len;
            w[n].count = 0;
            for (int j = 0; j < len; j++) w[n].sym[j] = byte_id[(unsigned char)s[j]];
            n++;
        }
        w[k].count++;
    }
    return n;
}

/* Byte-pair training: repeatedly merge the most frequent adjacent pair (ties: lowest ids). */
static int learn_merges(vocab *v, int max_new, const int *byte_id) {
    word *w = calloc(MAX_WORDS, sizeof *w);
    const int cap = v->n + max_new;
    int *count = calloc((size_t)cap * (size_t)cap, sizeof *count);
    v->merges = calloc(MAX_MERGES, sizeof *v->merges);
    int st = OKV_OK;
    if (!w || !count || !v->merges) {
        st = okv_fail(OKV_ERR_NOMEM, "cannot allocate the tokenizer training tables");
        goto done;
    }
    int n_words = corpus_words(w, byte_id), new_tokens = 0;
    while (v->n_merges < MAX_MERGES && new_tokens < max_new) {
        int best = 0, ba = 0, bb = 0;
        for (int k = 0; k < n_words; k++)
            for (int j = 0; j + 1 < w[k].len; j++)
                count[w[k].sym[j] * cap + w[k].sym[j + 1]] += w[k].count;
        for (int k = 0; k < n_words; k++)
            for (int j = 0; j + 1 < w[k].len; j++) {
                int a = w[k].sym[j], b = w[k].sym[j + 1], c = count[a * cap + b];
                if (c > best || (c == best && (a < ba || (a == ba && b < bb)))) {
                    best = c;
                    ba = a;
                    bb = b;
                }
                count[a * cap + b] = 0;
            }
        for (int k = 0; k < n_words; k++) /* clear what the selection pass did not reach */
            for (int j = 0; j + 1 < w[k].len; j++) count[w[k].sym[j] * cap + w[k].sym[j + 1]] = 0;
        if (best < 2) break;
        char *joined = str_cat3(v->tok[ba], "", v->tok[bb]);
        char *merge = str_cat3(v->tok[ba], " ", v->tok[bb]);
        if (!joined || !merge) {
            free(joined);
            free(merge);
            st = okv_fail(OKV_ERR_NOMEM, "cannot allocate tokenizer merges");
            goto done;
        }
        int id = -1;
        for (int t = 0; t < v->n && id < 0; t++)
            if (!strcmp(v->tok[t], joined)) id = t;
        if (id < 0) {
            id = v->n;
            vocab_add(v, joined, TOK_TYPE_NORMAL);
            new_tokens++;
        } else {
            free(joined);
        }
        v->merges[v->n_merges++] = merge;
        for (int k = 0; k < n_words; k++) {
            int o = 0;
            for (int j = 0; j < w[k].len; j++) {
                if (j + 1 < w[k].len && w[k].sym[j] == ba && w[k].sym[j + 1] == bb) {
                    w[k].sym[o++] = id;
                    j++;
                } else {
                    w[k].sym[o++] = w[k].sym[j];
                }
            }
            w[k].len = o;
        }
    }
done:
    free(w);
    free(count);
    return st;
}

static int vocab_build(vocab *v, int n_vocab) {
    static const char *const specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    memset(v, 0, sizeof *v);
    OKV_ASSERT(n_vocab >= 3 + 256);
    v->cap = n_vocab;
    v->tok = calloc((size_t)n_vocab, sizeof *v->tok);
    v->type = calloc((size_t)n_vocab, sizeof *v->type);
    if (!v->tok || !v->type) return okv_fail(OKV_ERR_NOMEM, "cannot allocate a %d-token vocabulary", n_vocab);
    for (int i = 0; i < 3; i++)
        if (!vocab_add(v, strdup(specials[i]), TOK_TYPE_CONTROL)) goto nomem;
    int byte_id[256];
    for (int i = 0; i < 256; i++) {
        char s[3];
        int b;
        byte_token(i, &b, s);
        byte_id[b] = v->n;
        if (!vocab_add(v, strdup(s), TOK_TYPE_NORMAL)) goto nomem;
    }
    int max_new = n_vocab - v->n < MAX_MERGES ? n_vocab - v->n : MAX_MERGES;
    int st = learn_merges(v, max_new, byte_id);
    if (st) return st;
    for (int u = 0; v->n < n_vocab; u++) {
        char s[32];
        snprintf(s, sizeof s, "<unused_%d>", u);
        if (!vocab_add(v, strdup(s), TOK_TYPE_UNUSED)) goto nomem;
    }
    return OKV_OK;
nomem:
    return okv_fail(OKV_ERR_NOMEM, "cannot allocate a %d-token vocabulary", n_vocab);
}

/* ---- the file ------------------------------------------------------------------------------ */

typedef struct gen_tensor {
    char name[48];
    okv_type type;
    int n_dims;
    int64_t ne[2];
} gen_tensor;

static const char chatml_template[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

static uint32_t ggml_file_type(okv_type t) {
    switch (t) {
    case OKV_TYPE_F32: return 0;
    case OKV_TYPE_F16: return 1;
    case OKV_TYPE_Q4_0: return 2;
    case OKV_TYPE_Q4_1: return 3;
    case OKV_TYPE_Q8_0: return 7;
    case OKV_TYPE_Q5_0: return 8;
    case OKV_TYPE_Q5_1: return 9;
    case OKV_TYPE_IQ4_NL: return 25;
    case OKV_TYPE_BF16: return 32;
    /* the K-quant file types llama.cpp names (MOSTLY_Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K) */
    case OKV_TYPE_Q2_K: return 10;
    case OKV_TYPE_Q3_K: return 12;
    case OKV_TYPE_Q4_K: return 15;
    case OKV_TYPE_Q5_K: return 17;
    case OKV_TYPE_Q6_K: return 18;
    default: OKV_ASSERT(!"ggml_file_type: not a weight type"); return 0;
    }
}

/* llama.cpp's rope_freqs for llama3 scaling: the divisor of each frequency. */
static void llama3_rope_divisors(const okv_model_config *c, float *out) {
    const double lo_wl = c->rope_orig_ctx / c->rope_low_freq_factor;
    const double hi_wl = c->rope_orig_ctx / c->rope_high_freq_factor;
    for (int i = 0; i < c->rope_dim / 2; i++) {
        double freq = pow((double)c->rope_theta, -2.0 * i / c->rope_dim);
        double wl = 2.0 * M_PI / freq, div = 1.0;
        if (wl > lo_wl) {
            div = c->rope_factor;
        } else if (wl >= hi_wl) {
            double smooth = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) /
                            (c->rope_high_freq_factor - c->rope_low_freq_factor);
            div = 1.0 / ((1.0 - smooth) / c->rope_factor + smooth);
        }
        out[i] = (float)div;
    }
}

static void write_metadata(gguf_writer *w, const okv_model_config *c, okv_type type,
                           const vocab *v) {
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "general.name", c->name);
    gguf_w_u32(w, "general.file_type", ggml_file_type(type));
    if (okv_type_block_elems(type) > 1) gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, "llama.block_count", (uint32_t)c->n_layers);
    gguf_w_u32(w, "llama.context_length", (uint32_t)c->ctx_train);
    gguf_w_u32(w, "llama.embedding_length", (uint32_t)c->dim);
    gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)c->ffn_dim);
    gguf_w_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads);
    gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_w_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim);
    gguf_w_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim);
    gguf_w_f32(w, "llama.rope.freq_base", c->rope_theta);
    gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)c->rope_dim);
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    gguf_w_u32(w, "llama.vocab_size", (uint32_t)c->n_vocab);
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "gpt2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok, (uint64_t)v->n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", v->type, (uint64_t)v->n);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                   (uint64_t)v->n_merges);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 0);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", false);
    gguf_w_str(w, "tokenizer.chat_template", chatml_template);
}

okv_type genmodel_tensor_type(okv_type type, int64_t ne0) {
    if (ne0 % okv_type_block_elems(type) == 0) return type;
    return ne0 % OKV_QK == 0 ? OKV_TYPE_Q8_0 : OKV_TYPE_F16;
}

/* The tensor table in file order. Returns the count; t must hold 4 + 9 * n_layers entries. */
static int tensor_table(const okv_model_config *c, okv_type type, gen_tensor *t) {
    int n = 0;
    const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
#define ADD(ty, nd, a, b, ...) \
    do { \
        snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__); \
        t[n].type = genmodel_tensor_type((ty), (a)); \
        t[n].n_dims = (nd); \
        t[n].ne[0] = (a); \
        t[n].ne[1] = (b); \
        n++; \
    } while (0)
    ADD(type, 2, c->dim, c->n_vocab, "token_embd.weight");
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) ADD(OKV_TYPE_F32, 1, c->rope_dim / 2, 1, "rope_freqs.weight");
    for (int l = 0; l < c->n_layers; l++) {
        ADD(OKV_TYPE_F32, 1, c->dim, 1, "blk.%d.attn_norm.weight", l);
        ADD(type, 2, c->dim, q, "blk.%d.attn_q.weight", l);
        ADD(type, 2, c->dim, kv, "blk.%d.attn_k.weight", l);
        ADD(type, 2, c->dim, kv, "blk.%d.attn_v.weight", l);
        ADD(type, 2, q, c->dim, "blk.%d.attn_output.weight", l);
        ADD(OKV_TYPE_F32, 1, c->dim, 1, "blk.%d.ffn_norm.weight", l);
        ADD(type, 2, c->dim, c->ffn_dim, "blk.%d.ffn_gate.weight", l);
        ADD(type, 2, c->dim, c->ffn_dim, "blk.%d.ffn_up.weight", l);
        ADD(type, 2, c->ffn_dim, c->dim, "blk.%d.ffn_down.weight", l);
    }
    ADD(OKV_TYPE_F32, 1, c->dim, 1, "output_norm.weight");
    if (!c->tied_embeddings) ADD(type, 2, c->dim, c->n_vocab, "output.weight");
#undef ADD
    return n;
}

/* Generates, converts and writes one tensor in blocks of rows (rows in parallel: the values
 * depend only on the element index, so the file does not depend on the thread count). */
static int stream_tensor(gguf_writer *w, const gen_tensor *t, uint64_t seed, uint8_t *buf,
                         size_t buf_bytes) {
    const int64_t ne0 = t->ne[0], rows = t->n_dims > 1 ? t->ne[1] : 1;
    const size_t row_bytes = okv_type_row_bytes(t->type, ne0);
    int64_t chunk = (int64_t)(buf_bytes / row_bytes);
    if (chunk < 1) chunk = 1;
    OKV_ASSERT((size_t)chunk * row_bytes <= buf_bytes);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        bool nomem = false;
#pragma omp parallel reduction(|| : nomem)
        {
            float *x = malloc((size_t)ne0 * sizeof *x);
            nomem = x == NULL;
#pragma omp for schedule(static)
            for (int64_t r = 0; r < nr; r++) {
                if (!x) continue;
                genmodel_values(seed, t->name, (r0 + r) * ne0, ne0, x);
                okv_quant_row_ref(buf + (size_t)r * row_bytes, x, t->type, ne0);
            }
            free(x);
        }
        if (nomem) return okv_fail(OKV_ERR_NOMEM, "cannot allocate a row of %" PRId64 " floats", ne0);
        int st = gguf_writer_write(w, buf, (size_t)nr * row_bytes);
        if (st) return st;
    }
    return OKV_OK;
}

int genmodel_write(const char *path, const char *shape, int n_layers_override, okv_type type,
                   uint64_t seed) {
    okv_model_config c;
    int st = genmodel_shape(shape, &c);
    if (st) return st;
    if ((unsigned)type >= OKV_TYPE_COUNT || !okv_type_is_weight(type)) {
        char list[256];
        return okv_fail(OKV_ERR_USAGE, "weight type %d ('%s') cannot be generated; use one of %s",
                        (int)type, okv_ggml_type_name(type) ? okv_ggml_type_name(type) : "?",
                        okv_weight_type_list(list, sizeof list));
    }
    if (n_layers_override > 0) c.n_layers = n_layers_override;

    const size_t buf_bytes = (size_t)4 << 20;
    vocab v;
    gen_tensor *t = calloc((size_t)c.n_layers * 9 + 4, sizeof *t);
    uint8_t *buf = malloc(buf_bytes);
    gguf_writer *w = gguf_writer_new(32);
    if ((st = vocab_build(&v, c.n_vocab))) goto done;
    if (!t || !buf || !w) {
        st = okv_fail(OKV_ERR_NOMEM, "cannot allocate the tables of a %d-layer model", c.n_layers);
        goto done;
    }
    write_metadata(w, &c, type, &v);
    int n_t = tensor_table(&c, type, t);
    uint64_t total = 0;
    for (int i = 0; i < n_t; i++) {
        gguf_w_tensor_info(w, t[i].name, t[i].type, t[i].n_dims, t[i].ne);
        total += okv_type_row_bytes(t[i].type, t[i].ne[0]) * (uint64_t)t[i].ne[1];
    }
    OKV_INFO("gen-model: writing %s (%s, %d layer%s, %s, %.2f GiB of weights, seed %" PRIu64 ")",
             path, c.name, c.n_layers, c.n_layers == 1 ? "" : "s", okv_type_name(type),
             (double)total / (1u << 30), seed);
    if ((st = gguf_writer_begin(w, path))) goto done;
    for (int i = 0; i < n_t && !st; i++) {
        if (!strcmp(t[i].name, "rope_freqs.weight")) {
            float div[512];
            OKV_ASSERT(c.rope_dim / 2 <= 512);
            llama3_rope_divisors(&c, div);
            st = gguf_writer_write(w, div, (size_t)(c.rope_dim / 2) * sizeof(float));
        } else {
            st = stream_tensor(w, &t[i], seed, buf, buf_bytes);
        }
    }
    int fin = gguf_writer_finish(w);
    if (!st) st = fin;
done:
    gguf_writer_free(w);
    free(buf);
    free(t);
    vocab_free(&v);
    return st;
}
