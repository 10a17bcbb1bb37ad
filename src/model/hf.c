/* hf.c — Hugging Face checkpoint directories (llama, mistral, qwen2): config.json, the tensors of
 * the requested layers (Q/K rows permuted once to interleaved RoPE pairs; norms and biases to f32;
 * F8_E4M3 to BF16) and tokenizer.json. Tested by tests/unit/test_safetensors.c and tests/model/test_hf.sh. */
#include "model.h"

#include "../common.h"
#include "hf.h"
#include "safetensors.h"
#include "tokenizer_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hf_checkpoint {
    st_checkpoint st;
};

void hf_free(struct hf_checkpoint *hf) {
    if (!hf) return;
    st_checkpoint_close(&hf->st);
    free(hf);
}

/* ---- config.json ------------------------------------------------------------------------- */

typedef struct cfg_reader {
    const char *path;
    const cJSON *root;
} cfg_reader;

/* Absent or null keys keep *out and set *found false; a present key of the wrong kind fails. */
static int cfg_num(const cfg_reader *r, const cJSON *obj, const char *obj_name, const char *key,
                   double *out, bool *found) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *found = v && !cJSON_IsNull(v);
    if (!*found) return OKV_OK;
    if (!cJSON_IsNumber(v))
        return okv_fail(OKV_ERR_INPUT, "%s: %s%s%s is not a number", r->path, obj_name,
                        obj_name[0] ? "." : "", key);
    *out = v->valuedouble;
    return OKV_OK;
}

static int cfg_int(const cfg_reader *r, const char *key, int *out, bool required) {
    double d = 0;
    bool found;
    int st = cfg_num(r, r->root, "", key, &d, &found);
    if (st) return st;
    if (!found) {
        if (required)
            return okv_fail(OKV_ERR_INPUT, "%s has no field '%s'; it is not a complete model config",
                            r->path, key);
        return OKV_OK;
    }
    if (floor(d) != d || d <= 0 || d > (double)(1 << 30))
        return okv_fail(OKV_ERR_INPUT, "%s: %s = %g is not a positive integer", r->path, key, d);
    *out = (int)d;
    return OKV_OK;
}

static int cfg_float(const cfg_reader *r, const cJSON *obj, const char *obj_name, const char *key,
                     float *out, bool positive) {
    double d = 0;
    bool found;
    int st = cfg_num(r, obj, obj_name, key, &d, &found);
    if (st || !found) return st;
    if (positive && !(d > 0 && isfinite(d)))
        return okv_fail(OKV_ERR_INPUT, "%s: %s%s%s = %g must be a positive number", r->path,
                        obj_name, obj_name[0] ? "." : "", key, d);
    *out = (float)d;
    return OKV_OK;
}

static bool cfg_true(const cJSON *obj, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

static const char *cfg_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int parse_rope_scaling(const cfg_reader *r, const cJSON *rs, const char *rs_name,
                              okv_model_config *c) {
    const char *kind = cfg_str(rs, "rope_type");
    if (!kind) kind = cfg_str(rs, "type");
    if (!kind)
        return okv_fail(OKV_ERR_INPUT, "%s: %s has neither 'rope_type' nor 'type'", r->path, rs_name);
    if (!strcmp(kind, "default")) return OKV_OK;
    int st;
    c->rope_factor = 0;
    if ((st = cfg_float(r, rs, rs_name, "factor", &c->rope_factor, true))) return st;
    if (c->rope_factor == 0)
        return okv_fail(OKV_ERR_INPUT, "%s: %s of type '%s' has no 'factor'", r->path, rs_name, kind);
    double orig = 0;
    bool has_orig;
    if ((st = cfg_num(r, rs, rs_name, "original_max_position_embeddings", &orig, &has_orig)))
        return st;
    if (has_orig && (orig < 1 || orig > (double)(1 << 30) || floor(orig) != orig))
        return okv_fail(OKV_ERR_INPUT, "%s: %s.original_max_position_embeddings = %g is not a "
                        "positive integer", r->path, rs_name, orig);
    c->rope_orig_ctx = has_orig ? (int)orig : c->ctx_train;

    if (!strcmp(kind, "linear")) {
        c->rope_scaling = ROPE_SCALING_LINEAR;
    } else if (!strcmp(kind, "dynamic")) {
        c->rope_scaling = ROPE_SCALING_DYNAMIC;
    } else if (!strcmp(kind, "llama3")) {
        c->rope_scaling = ROPE_SCALING_LLAMA3;
        if (!has_orig)
            return okv_fail(OKV_ERR_INPUT, "%s: %s of type 'llama3' has no "
                            "'original_max_position_embeddings'", r->path, rs_name);
        c->rope_low_freq_factor = 1.0f;
        c->rope_high_freq_factor = 4.0f;
        if ((st = cfg_float(r, rs, rs_name, "low_freq_factor", &c->rope_low_freq_factor, true)) ||
            (st = cfg_float(r, rs, rs_name, "high_freq_factor", &c->rope_high_freq_factor, true)))
            return st;
        if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
            return okv_fail(OKV_ERR_INPUT, "%s: %s.high_freq_factor %g must exceed low_freq_factor %g",
                            r->path, rs_name, c->rope_high_freq_factor, c->rope_low_freq_factor);
    } else if (!strcmp(kind, "yarn")) {
        c->rope_scaling = ROPE_SCALING_YARN;
        c->yarn_beta_fast = 32.0f;
        c->yarn_beta_slow = 1.0f;
        if ((st = cfg_float(r, rs, rs_name, "beta_fast", &c->yarn_beta_fast, true)) ||
            (st = cfg_float(r, rs, rs_name, "beta_slow", &c->yarn_beta_slow, true)))
            return st;
        /* The engine scales logits by 0.1 ln(factor) + 1; a config asking for another factor
         * would silently change the model. */
        float af = 0;
        if ((st = cfg_float(r, rs, rs_name, "attention_factor", &af, true))) return st;
        float want = (float)(0.1 * log(c->rope_factor) + 1.0);
        if (af != 0 && fabsf(af - want) > 1e-4f * want)
            return okv_fail(OKV_ERR_INPUT, "%s: %s.attention_factor = %g is not supported (only the "
                            "default 0.1*ln(factor)+1 = %g is)", r->path, rs_name, af, want);
    } else {
        return okv_fail(OKV_ERR_INPUT, "%s: rope scaling type '%s' is not supported (linear, dynamic, "
                        "llama3 and yarn are)", r->path, kind);
    }
    return OKV_OK;
}

static int parse_config(okv_model_config *c, const cJSON *root, const char *path, const char *dir) {
    cfg_reader r = {.path = path, .root = root};
    if (!cJSON_IsObject(root)) return okv_fail(OKV_ERR_INPUT, "%s is not a JSON object", path);
    const char *type = cfg_str(root, "model_type");
    if (!type)
        return okv_fail(OKV_ERR_INPUT, "%s has no string field 'model_type'; it is not a model config",
                        path);
    if (strcmp(type, "llama") && strcmp(type, "mistral") && strcmp(type, "qwen2"))
        return okv_fail(OKV_ERR_INPUT, "%s: model_type '%.64s' is not supported; omnikv loads llama, "
                        "mistral and qwen2 checkpoints", path, type);
    snprintf(c->arch, sizeof c->arch, "%s", type);
    const char *name = cfg_str(root, "_name_or_path");
    if (!name || !name[0]) {
        name = strrchr(dir, '/');
        name = name && name[1] ? name + 1 : dir;
    }
    snprintf(c->name, sizeof c->name, "%s", name);

    int st;
    c->ctx_train = 2048;
    if ((st = cfg_int(&r, "num_hidden_layers", &c->n_layers, true)) ||
        (st = cfg_int(&r, "hidden_size", &c->dim, true)) ||
        (st = cfg_int(&r, "intermediate_size", &c->ffn_dim, true)) ||
        (st = cfg_int(&r, "num_attention_heads", &c->n_heads, true)) ||
        (st = cfg_int(&r, "vocab_size", &c->n_vocab, true)) ||
        (st = cfg_int(&r, "max_position_embeddings", &c->ctx_train, false)))
        return st;
    c->n_kv_heads = c->n_heads;
    if ((st = cfg_int(&r, "num_key_value_heads", &c->n_kv_heads, false))) return st;
    if (c->dim % c->n_heads)
        return okv_fail(OKV_ERR_INPUT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                        path, c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    if ((st = cfg_int(&r, "head_dim", &c->head_dim, false))) return st;
    if (c->head_dim % 2)
        return okv_fail(OKV_ERR_INPUT, "%s: head_dim %d is odd; rotary embeddings need pairs", path,
                        c->head_dim);
    c->rope_dim = c->head_dim;
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    if ((st = cfg_float(&r, root, "", "rms_norm_eps", &c->norm_eps, true)) ||
        (st = cfg_float(&r, root, "", "rope_theta", &c->rope_theta, true)))
        return st;

    const char *act = cfg_str(root, "hidden_act");
    if (act && strcmp(act, "silu"))
        return okv_fail(OKV_ERR_INPUT, "%s: hidden_act '%.32s' is not supported (only silu is)", path,
                        act);
    if (cfg_true(root, "attention_bias"))
        return okv_fail(OKV_ERR_INPUT, "%s: attention_bias is true; biases on all four attention "
                        "projections are not supported (qwen2's q/k/v biases are)", path);
    if (cfg_true(root, "mlp_bias"))
        return okv_fail(OKV_ERR_INPUT, "%s: mlp_bias is true; MLP biases are not supported", path);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (cJSON_IsObject(q)) {
        const char *qm = cfg_str(q, "quant_method");
        if (!qm || (strcmp(qm, "fp8") && strcmp(qm, "compressed-tensors")))
            return okv_fail(OKV_ERR_INPUT, "%s: quantization_config.quant_method '%.32s' is not "
                            "supported (fp8 weights are; or convert the checkpoint to GGUF)", path,
                            qm ? qm : "(none)");
    }

    /* Rope settings: transformers 5 nests them in rope_parameters, older configs keep
     * rope_theta at the top and rope_scaling beside it. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (cJSON_IsObject(rp)) {
        if ((st = cfg_float(&r, rp, "rope_parameters", "rope_theta", &c->rope_theta, true)) ||
            (st = parse_rope_scaling(&r, rp, "rope_parameters", c)))
            return st;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (cJSON_IsObject(rs)) {
        if ((st = parse_rope_scaling(&r, rs, "rope_scaling", c))) return st;
    } else if (rs && !cJSON_IsNull(rs)) {
        return okv_fail(OKV_ERR_INPUT, "%s: rope_scaling is neither an object nor null", path);
    }

    c->tied_embeddings = cfg_true(root, "tie_word_embeddings");
    if (!strcmp(type, "qwen2")) c->qkv_bias = true;

    /* A window at least as long as the trained context never drops a key, so it is the same as
     * full attention; a shorter one would need sliding-window attention, which the engine lacks. */
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    bool window_used = strcmp(type, "qwen2") ? true : cfg_true(root, "use_sliding_window");
    if (window_used && sw && !cJSON_IsNull(sw)) {
        if (!cJSON_IsNumber(sw))
            return okv_fail(OKV_ERR_INPUT, "%s: sliding_window is neither a number nor null", path);
        if (sw->valuedouble < c->ctx_train)
            return okv_fail(OKV_ERR_INPUT, "%s: sliding_window = %g is shorter than "
                            "max_position_embeddings = %d; sliding-window attention is not "
                            "implemented", path, sw->valuedouble, c->ctx_train);
    }
    c->sliding_window = 0;
    return OKV_OK;
}

/* ---- tensors ------------------------------------------------------------------------------ */

typedef struct hf_ctx {
    okv_model *m;
    st_checkpoint *st;
    const char *dir;
} hf_ctx;

static float f8_e4m3_to_f32(uint8_t b) {
    int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
    float v;
    if (exp == 15 && man == 7) v = NAN;
    else if (exp == 0) v = ldexpf((float)man, -9);
    else v = ldexpf(1.0f + man / 8.0f, exp - 7);
    return sign ? -v : v;
}

static float st_elem(const st_tensor *t, const uint8_t *base, uint64_t i) {
    switch (t->dtype) {
    case ST_DTYPE_F32: {
        float v;
        memcpy(&v, base + 4 * i, 4);
        return v;
    }
    case ST_DTYPE_F16:
    case ST_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, base + 2 * i, 2);
        return t->dtype == ST_DTYPE_F16 ? okv_fp16_to_f32(h) : okv_bf16_to_f32(h);
    }
    case ST_DTYPE_F8_E4M3: return f8_e4m3_to_f32(base[i]);
    default: okv_die(__FILE__, __LINE__, "an unreadable dtype reached conversion");
    }
}

int64_t hf_permuted_source(int64_t r, int64_t n_rows, int n_heads) {
    const int64_t hd = n_rows / n_heads;
    return (r / hd) * hd + (r % 2) * (hd / 2) + (r % hd) / 2;
}

void hf_permute_rows(void *dst, const void *src, int64_t n_rows, size_t row_bytes, int n_heads) {
    for (int64_t r = 0; r < n_rows; r++)
        memcpy((uint8_t *)dst + r * row_bytes,
               (const uint8_t *)src + hf_permuted_source(r, n_rows, n_heads) * row_bytes, row_bytes);
}

/* A dequantization scale beside an F8 weight: one value, one per row, or one per block of rows
 * and columns (".weight_scale" in compressed-tensors, ".weight_scale_inv" in block-FP8 exports;
 * both multiply). */
typedef struct f8_scale {
    const st_tensor *t;
    int64_t rows, cols, block_r, block_c;
} f8_scale;

static int find_f8_scale(hf_ctx *x, const char *name, int64_t n_out, int64_t n_in, f8_scale *s) {
    memset(s, 0, sizeof *s);
    char base[256];
    size_t n = strlen(name);
    if (n < 7 || n >= sizeof base - 16 || strcmp(name + n - 7, ".weight")) return OKV_OK;
    static const char *const suffixes[] = {"_scale", "_scale_inv"};
    for (int k = 0; k < 2 && !s->t; k++) {
        snprintf(base, sizeof base, "%s%s", name, suffixes[k]);
        int st = st_checkpoint_find(x->st, base, &s->t);
        if (st) return st;
    }
    if (!s->t) return OKV_OK;
    const st_tensor *t = s->t;
    if (st_dtype_size(t->dtype) == 0 || t->dtype == ST_DTYPE_F8_E4M3 || t->n_dims > 2)
        return okv_fail(OKV_ERR_INPUT, "%s: scale tensor '%s' has dtype %s and %d dimensions; "
                        "a float scalar, vector or matrix is expected", x->dir, t->name,
                        t->dtype_name, t->n_dims);
    s->rows = t->n_dims >= 1 ? t->shape[0] : 1;
    s->cols = t->n_dims == 2 ? t->shape[1] : 1;
    if (s->rows <= 0 || s->cols <= 0) s->rows = s->cols = 0;
    else {
        s->block_r = (n_out + s->rows - 1) / s->rows;
        s->block_c = (n_in + s->cols - 1) / s->cols;
    }
    if (!s->rows || (n_out + s->block_r - 1) / s->block_r != s->rows ||
        (n_in + s->block_c - 1) / s->block_c != s->cols)
        return okv_fail(OKV_ERR_INPUT, "%s: scale tensor '%s' of shape [%lld, %lld] does not tile "
                        "weight '%s' of shape [%lld, %lld]", x->dir, t->name, (long long)s->rows,
                        (long long)s->cols, name, (long long)n_out, (long long)n_in);
    return OKV_OK;
}

enum { AS_STORED = 0, AS_F32 = 1 };

/* Points *out at the tensor (mmapped) or at an owned copy when it must be converted (to f32 for
 * norms and biases, F8 to BF16), permuted (Q/K heads, permute_heads > 0) or realigned. Absent:
 * OKV_OK with out->data NULL, unless required. */
static int load_tensor(hf_ctx *x, const char *name, okv_tensor *out, int mode, int permute_heads,
                       bool required) {
    memset(out, 0, sizeof *out);
    const st_tensor *t;
    int st = st_checkpoint_find(x->st, name, &t);
    if (st) return st;
    if (!t) {
        if (required)
            return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' is missing from the checkpoint", x->dir,
                            name);
        return OKV_OK;
    }
    size_t esize = st_dtype_size(t->dtype);
    if (!esize)
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has dtype %s; omnikv reads F32, F16, BF16 "
                        "and F8_E4M3 weights", x->dir, name, t->dtype_name);
    if (t->n_dims < 1 || t->n_dims > 2)
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has %d dimensions; 1 or 2 are expected",
                        x->dir, name, t->n_dims);
    int64_t n_rows = t->shape[0], row_elems = t->n_dims == 2 ? t->shape[1] : 1;
    out->n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = d < t->n_dims ? t->shape[t->n_dims - 1 - d] : 1;

    okv_type want;
    if (mode == AS_F32) want = OKV_TYPE_F32;
    else if (t->dtype == ST_DTYPE_F8_E4M3) want = OKV_TYPE_BF16;
    else want = t->dtype == ST_DTYPE_F32 ? OKV_TYPE_F32
              : t->dtype == ST_DTYPE_F16 ? OKV_TYPE_F16 : OKV_TYPE_BF16;
    out->type = want;
    bool convert = want != (t->dtype == ST_DTYPE_F32 ? OKV_TYPE_F32
                            : t->dtype == ST_DTYPE_F16 ? OKV_TYPE_F16
                            : t->dtype == ST_DTYPE_BF16 ? OKV_TYPE_BF16 : OKV_TYPE_COUNT);
    bool misaligned = ((uintptr_t)t->data % esize) != 0;
    if (permute_heads > 0 && (n_rows % permute_heads || (n_rows / permute_heads) % 2))
        return okv_fail(OKV_ERR_INPUT, "%s: tensor '%s' has %lld rows, not %d heads of an even size",
                        x->dir, name, (long long)n_rows, permute_heads);
    if (!convert && !misaligned && permute_heads <= 0) {
        out->data = t->data;
        return OKV_OK;
    }

    f8_scale sc = {0};
    if (t->dtype == ST_DTYPE_F8_E4M3 && (st = find_f8_scale(x, name, n_rows, row_elems, &sc)))
        return st;
    size_t out_esize = want == OKV_TYPE_F32 ? 4 : 2;
    size_t row_bytes = (size_t)row_elems * out_esize;
    uint8_t *buf = okv_alloc((size_t)n_rows * row_bytes);
    if (!buf)
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate %zu bytes to convert tensor '%s'",
                        (size_t)n_rows * row_bytes, name);
    model_own(x->m, buf);
    out->data = buf;
    if (!convert) {
        if (permute_heads > 0) hf_permute_rows(buf, t->data, n_rows, row_bytes, permute_heads);
        else memcpy(buf, t->data, (size_t)n_rows * row_bytes);
        return OKV_OK;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t from = permute_heads > 0 ? hf_permuted_source(r, n_rows, permute_heads) : r;
        for (int64_t c = 0; c < row_elems; c++) {
            float v = st_elem(t, t->data, (uint64_t)(from * row_elems + c));
            if (sc.t) v *= st_elem(sc.t, sc.t->data, (uint64_t)((from / sc.block_r) * sc.cols + c / sc.block_c));
            uint64_t i = (uint64_t)(r * row_elems + c);
            if (want == OKV_TYPE_F32) {
                memcpy(buf + 4 * i, &v, 4);
            } else {
                uint16_t h = want == OKV_TYPE_BF16 ? okv_f32_to_bf16(v) : okv_f32_to_fp16(v);
                memcpy(buf + 2 * i, &h, 2);
            }
        }
    }
    return OKV_OK;
}

static int load_layer(hf_ctx *x, int l) {
    const okv_model_config *c = &x->m->cfg;
    okv_layer_weights *w = &x->m->layers[l];
    char n[160];
    int st;
#define LAYER_TENSOR(field, suffix, mode, heads, req)                                  \
    do {                                                                               \
        snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                        \
        if ((st = load_tensor(x, n, &w->field, mode, heads, req))) return st;          \
    } while (0)
    LAYER_TENSOR(attn_norm, "input_layernorm.weight", AS_F32, 0, true);
    LAYER_TENSOR(wq, "self_attn.q_proj.weight", AS_STORED, c->n_heads, true);
    LAYER_TENSOR(wk, "self_attn.k_proj.weight", AS_STORED, c->n_kv_heads, true);
    LAYER_TENSOR(wv, "self_attn.v_proj.weight", AS_STORED, 0, true);
    LAYER_TENSOR(wo, "self_attn.o_proj.weight", AS_STORED, 0, true);
    if (c->qkv_bias) {
        LAYER_TENSOR(bq, "self_attn.q_proj.bias", AS_F32, c->n_heads, true);
        LAYER_TENSOR(bk, "self_attn.k_proj.bias", AS_F32, c->n_kv_heads, true);
        LAYER_TENSOR(bv, "self_attn.v_proj.bias", AS_F32, 0, true);
    }
    LAYER_TENSOR(ffn_norm, "post_attention_layernorm.weight", AS_F32, 0, true);
    LAYER_TENSOR(w_gate, "mlp.gate_proj.weight", AS_STORED, 0, true);
    LAYER_TENSOR(w_up, "mlp.up_proj.weight", AS_STORED, 0, true);
    LAYER_TENSOR(w_down, "mlp.down_proj.weight", AS_STORED, 0, true);
#undef LAYER_TENSOR
    return OKV_OK;
}

/* One past the highest "model.layers.N." among the checkpoint's tensors, from the index or the
 * single file's header (no shard data is read). */
static int hf_layers_present(st_checkpoint *ck, int *n) {
    bool has;
    int st = st_checkpoint_has(ck, "model.norm.weight", &has); /* opens a single file */
    if (st) return st;
    *n = 0;
    const char *prefix = "model.layers.";
    if (ck->index_path) {
        for (int i = 0; i < ck->n_entries; i++) {
            int l = model_layer_index(ck->entries[i].tensor, strlen(ck->entries[i].tensor), prefix);
            if (l >= *n) *n = l + 1;
        }
    } else {
        const st_file *f = &ck->shards[0].file;
        for (int i = 0; i < f->n_tensors; i++) {
            int l = model_layer_index(f->tensors[i].name, strlen(f->tensors[i].name), prefix);
            if (l >= *n) *n = l + 1;
        }
    }
    return OKV_OK;
}

int hf_load(okv_model *m, const char *dir, const model_load_opts *o) {
    m->hf = calloc(1, sizeof *m->hf);
    OKV_ASSERT(m->hf);
    okv_model_config *c = &m->cfg;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    int st = st_read_text(path, &text);
    if (st) {
        okv_error_prefix("%s is not a Hugging Face checkpoint (it needs a readable config.json)",
                         dir);
        return st;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root) {
        st = okv_fail(OKV_ERR_INPUT, "%s is not valid JSON (parse error at byte %ld)", path,
                      end ? (long)(end - text) : 0L);
    } else {
        st = parse_config(c, root, path, dir);
    }
    cJSON_Delete(root);
    free(text);
    if (st) return st;

    if ((st = st_checkpoint_open(&m->hf->st, dir))) return st;
    hf_ctx x = {.m = m, .st = &m->hf->st, .dir = dir};
    int present = 0;
    if ((st = hf_layers_present(x.st, &present))) return st;
    if ((st = model_check_layer_count(c->n_layers, present, "num_hidden_layers"))) {
        okv_error_prefix("%s", path);
        return st;
    }

    int b = o->layer_begin, e = o->layer_end < 0 ? c->n_layers : o->layer_end;
    if (b < 0 || e > c->n_layers || b > e)
        return okv_fail(OKV_ERR_USAGE, "layer range [%d, %d) is outside the model's %d layers", b, e,
                        c->n_layers);
    m->layer_begin = b;
    m->layer_end = e;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    OKV_ASSERT(m->layers);
    for (int l = b; l < e; l++)
        if ((st = load_layer(&x, l))) return st;

    /* HF ties the head to the embedding when the config says so (any lm_head.weight is then
     * ignored) or when no head is stored. */
    bool has_head = false;
    if ((st = st_checkpoint_has(x.st, "lm_head.weight", &has_head))) return st;
    c->tied_embeddings = c->tied_embeddings || !has_head;
    if (o->need_embed || (o->need_head && c->tied_embeddings))
        if ((st = load_tensor(&x, "model.embed_tokens.weight", &m->tok_embd, AS_STORED, 0, true)))
            return st;
    if (o->need_head) {
        if ((st = load_tensor(&x, "model.norm.weight", &m->output_norm, AS_F32, 0, true))) return st;
        if (c->tied_embeddings) m->output = m->tok_embd;
        else if ((st = load_tensor(&x, "lm_head.weight", &m->output, AS_STORED, 0, true)))
            return st;
        if (!o->need_embed) memset(&m->tok_embd, 0, sizeof m->tok_embd);
    }
    OKV_DEBUG("%s: %d of %d safetensors shards opened for layers [%d, %d)", dir,
              st_checkpoint_shards_opened(x.st), x.st->n_shards, b, e);

    if (o->need_tokenizer && (st = tokenizer_init_json(&m->tok, dir, c->n_vocab))) return st;
    return OKV_OK;
}
