/* model.c — model config and weights from a GGUF file (llama, mistral, qwen2; HF directories go
 * to hf.c), RoPE frequencies with scaling, shape and metadata validation. Tested by tests/model/
 * (vs llama.cpp: test_llamacpp.c on SmolLM2, test_arch_llamacpp.c on qwen2 and Mistral-style),
 * tests/unit/test_safetensors.c (rope scaling formulas) and test_gguf.c (bad metadata). */
#include "model.h"

#include "../../kernels/kquant.h"
#include "../common.h"
#include "hf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void model_own(okv_model *m, void *buf) {
    void **grown = realloc(m->owned, sizeof(void *) * (size_t)(m->n_owned + 1));
    OKV_ASSERT(grown);
    m->owned = grown;
    m->owned[m->n_owned++] = buf;
}

void model_free(okv_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_inv_freq);
    tokenizer_free(m->tok);
    gguf_close(&m->gguf);
    if (m->hf) hf_free(m->hf);
    memset(m, 0, sizeof *m);
}

float model_rope_freqs(const okv_model_config *c, int max_context_len, float *inv_freq) {
    const int n = c->rope_dim / 2;
    float theta = c->rope_theta;
    float mscale = 1.0f;
    if (c->rope_scaling == ROPE_SCALING_DYNAMIC && max_context_len > c->rope_orig_ctx &&
        c->rope_orig_ctx > 0) {
        /* NTK-aware: grow the base so the longest wavelength covers the run's context. */
        double s = c->rope_factor * max_context_len / c->rope_orig_ctx - (c->rope_factor - 1.0);
        theta = (float)(theta * pow(s, (double)c->rope_dim / (c->rope_dim - 2)));
    }
    for (int i = 0; i < n; i++) {
        double f = pow((double)theta, -2.0 * i / c->rope_dim);
        switch (c->rope_scaling) {
        case ROPE_SCALING_LINEAR:
            f /= c->rope_factor;
            break;
        case ROPE_SCALING_LLAMA3: {
            double lo_wl = c->rope_orig_ctx / c->rope_low_freq_factor;
            double hi_wl = c->rope_orig_ctx / c->rope_high_freq_factor;
            double wl = 2.0 * M_PI / f;
            if (wl > lo_wl) {
                f /= c->rope_factor;
            } else if (wl >= hi_wl) {
                double smooth = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
            break;
        }
        case ROPE_SCALING_YARN: {
            /* Dimensions whose wavelength fits many times in the original context keep their
             * frequency, those that do not fit once are interpolated, with a linear ramp. */
            double bf = c->yarn_beta_fast > 0 ? c->yarn_beta_fast : 32.0;
            double bs = c->yarn_beta_slow > 0 ? c->yarn_beta_slow : 1.0;
            double lo = floor(c->rope_dim * log(c->rope_orig_ctx / (bf * 2 * M_PI)) /
                              (2 * log(c->rope_theta)));
            double hi = ceil(c->rope_dim * log(c->rope_orig_ctx / (bs * 2 * M_PI)) /
                             (2 * log(c->rope_theta)));
            if (lo < 0) lo = 0;
            if (hi > c->rope_dim - 1) hi = c->rope_dim - 1;
            if (hi == lo) hi += 0.001;
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extrap = 1.0 - ramp; /* 1: keep the original frequency */
            f = f / c->rope_factor * (1.0 - extrap) + f * extrap;
            mscale = (float)(0.1 * log(c->rope_factor) + 1.0);
            break;
        }
        default:
            break;
        }
        inv_freq[i] = (float)f;
    }
    return mscale;
}

uint64_t model_tensor_bytes(const okv_tensor *t) {
    if (!t->data) return 0;
    int64_t rows = 1;
    for (int d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    return okv_type_row_bytes(t->type, t->ne[0]) * (uint64_t)rows;
}

uint64_t model_layer_bytes(const okv_model *m, int b, int e) {
    uint64_t total = 0;
    for (int l = b; l < e; l++) {
        const okv_tensor *ts = &m->layers[l].attn_norm;
        for (size_t i = 0; i < sizeof(okv_layer_weights) / sizeof(okv_tensor); i++)
            total += model_tensor_bytes(&ts[i]);
    }
    return total;
}

static int check_tensor(const okv_tensor *t, const char *what, int layer, int64_t ne0, int64_t ne1,
                        bool need_f32) {
    if (!t->data) {
        if (layer >= 0) return okv_fail(OKV_ERR_INPUT, "layer %d has no %s tensor; the model file is incomplete", layer, what);
        return okv_fail(OKV_ERR_INPUT, "the model has no %s tensor; the model file is incomplete", what);
    }
    int64_t got1 = t->n_dims > 1 ? t->ne[1] : 1;
    if (t->ne[0] != ne0 || got1 != ne1 || t->n_dims > 2) {
        return okv_fail(OKV_ERR_INPUT,
                        "%s of layer %d has shape [%lld, %lld] but the config implies [%lld, %lld]; "
                        "the model file does not match its metadata",
                        what, layer, (long long)t->ne[0], (long long)got1, (long long)ne0,
                        (long long)ne1);
    }
    if (need_f32 && t->type != OKV_TYPE_F32)
        return okv_fail(OKV_ERR_INPUT, "%s of layer %d is %s; norm weights must be f32", what,
                        layer, okv_type_name(t->type) ? okv_type_name(t->type) : "?");
    if (!need_f32 && !okv_type_is_weight(t->type)) {
        char list[256], where[32] = "";
        if (layer >= 0) snprintf(where, sizeof where, " of layer %d", layer);
        return okv_fail(OKV_ERR_INPUT, "tensor %s%s has type %s, which omnikv does not read as a "
                        "weight (it reads %s); requantize the model to one of these, e.g. with "
                        "llama.cpp's llama-quantize", what, where,
                        okv_ggml_type_name(t->type) ? okv_ggml_type_name(t->type) : "unknown",
                        okv_weight_type_list(list, sizeof list));
    }
    if (!need_f32 && ne0 % okv_type_block_elems(t->type) != 0)
        return okv_fail(OKV_ERR_INPUT, "%s of layer %d has rows of %lld, not a multiple of the %s block",
                        what, layer, (long long)ne0, okv_type_name(t->type));
    /* A non-finite super-block scale turns every logit NaN; K-quant files are checked block by
     * block as their layers load. */
    if (!need_f32 && okv_type_is_kquant(t->type)) {
        const int64_t per_row = ne0 / OKV_QK_K;
        const int64_t bad = okv_kquant_find_bad_block(t->data, t->type, per_row * ne1);
        if (bad >= 0)
            return okv_fail(OKV_ERR_INPUT, "%s of layer %d (%s): super-block %lld of row %lld has a "
                            "non-finite scale (its f16 d or dmin is inf or NaN); the model file is corrupt",
                            what, layer, okv_type_name(t->type), (long long)(bad % per_row),
                            (long long)(bad / per_row));
    }
    return OKV_OK;
}

int model_validate(const okv_model *m) {
    const okv_model_config *c = &m->cfg;
    if (c->n_layers <= 0 || c->dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->ffn_dim <= 0 || c->n_vocab <= 0)
        return okv_fail(OKV_ERR_INPUT,
                        "model config is incomplete (layers %d, dim %d, heads %d/%d, head_dim %d, "
                        "ffn %d, vocab %d)",
                        c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
                        c->n_vocab);
    if (c->n_heads % c->n_kv_heads)
        return okv_fail(OKV_ERR_INPUT, "model has %d query heads, not a multiple of its %d KV heads",
                        c->n_heads, c->n_kv_heads);
    if (c->rope_dim <= 0 || c->rope_dim > c->head_dim || c->rope_dim % 2)
        return okv_fail(OKV_ERR_INPUT, "rope dimension %d is invalid for head_dim %d", c->rope_dim,
                        c->head_dim);
    /* Hyperparameters the forward pass divides by, takes logs of or exponentiates: a NaN here
     * gives empty text with a clean exit, so they are file errors. */
    if (!(isfinite(c->norm_eps) && c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return okv_fail(OKV_ERR_INPUT, "norm epsilon (rms_norm_eps, "
                        "attention.layer_norm_rms_epsilon) = %g must be a number in (0, 1)",
                        (double)c->norm_eps);
    if (!(isfinite(c->rope_theta) && c->rope_theta > 1.0f))
        return okv_fail(OKV_ERR_INPUT, "rope base (rope_theta, rope.freq_base) = %g must be a "
                        "finite number above 1", (double)c->rope_theta);
    if (c->rope_scaling != ROPE_SCALING_NONE && !(isfinite(c->rope_factor) && c->rope_factor > 0.0f))
        return okv_fail(OKV_ERR_INPUT, "rope scaling factor (rope_scaling.factor, "
                        "rope.scaling.factor) = %g must be a finite number above 0",
                        (double)c->rope_factor);
    if ((int64_t)c->n_heads * c->head_dim > (1 << 24))
        return okv_fail(OKV_ERR_INPUT, "model has %d heads of %d dimensions (%lld in all, above "
                        "2^24); the head count or head dimension is wrong", c->n_heads,
                        c->head_dim, (long long)c->n_heads * c->head_dim);
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    int st;
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        const okv_layer_weights *w = &m->layers[l];
        if ((st = check_tensor(&w->attn_norm, "attn_norm", l, c->dim, 1, true)) ||
            (st = check_tensor(&w->wq, "attn_q", l, c->dim, q, false)) ||
            (st = check_tensor(&w->wk, "attn_k", l, c->dim, kv, false)) ||
            (st = check_tensor(&w->wv, "attn_v", l, c->dim, kv, false)) ||
            (st = check_tensor(&w->wo, "attn_output", l, q, c->dim, false)) ||
            (st = check_tensor(&w->ffn_norm, "ffn_norm", l, c->dim, 1, true)) ||
            (st = check_tensor(&w->w_gate, "ffn_gate", l, c->dim, c->ffn_dim, false)) ||
            (st = check_tensor(&w->w_up, "ffn_up", l, c->dim, c->ffn_dim, false)) ||
            (st = check_tensor(&w->w_down, "ffn_down", l, c->ffn_dim, c->dim, false)))
            return st;
        if (c->qkv_bias &&
            ((st = check_tensor(&w->bq, "attn_q bias", l, q, 1, true)) ||
             (st = check_tensor(&w->bk, "attn_k bias", l, kv, 1, true)) ||
             (st = check_tensor(&w->bv, "attn_v bias", l, kv, 1, true))))
            return st;
    }
    if (m->tok_embd.data && (st = check_tensor(&m->tok_embd, "token_embd", -1, c->dim, c->n_vocab, false)))
        return st;
    if (m->output.data && (st = check_tensor(&m->output, "output", -1, c->dim, c->n_vocab, false)))
        return st;
    if (m->output_norm.data && (st = check_tensor(&m->output_norm, "output_norm", -1, c->dim, 1, true)))
        return st;
    return OKV_OK;
}

/* ---- GGUF ---------------------------------------------------------------------------------- */

static int gguf_tensor(const gguf_file *f, const char *name, okv_tensor *t) {
    const gguf_tensor_info *ti = gguf_find_tensor(f, name);
    if (!ti) return 0;
    t->type = ti->type;
    t->n_dims = ti->n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < ti->n_dims ? ti->ne[d] : 1;
    t->data = ti->data;
    return 1;
}

static int arch_int(const gguf_file *f, const char *arch, const char *key, int *out, bool required) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v = 0;
    bool found = false;
    int st = gguf_get_i64(f, full, &v, &found);
    if (st) return st;
    if (!found) {
        if (required) return okv_fail(OKV_ERR_INPUT, "GGUF metadata lacks %s; the file is not a complete %s model", full, arch);
        return OKV_OK;
    }
    if (v <= 0 || v > (1 << 30)) return okv_fail(OKV_ERR_INPUT, "GGUF metadata %s = %lld is out of range", full, (long long)v);
    *out = (int)v;
    return OKV_OK;
}

static int arch_f32(const gguf_file *f, const char *arch, const char *key, float *out) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    bool found;
    return gguf_get_f32(f, full, out, &found);
}

int model_check_layer_count(int declared, int present, const char *key) {
    if (declared == present) return OKV_OK;
    return okv_fail(OKV_ERR_INPUT, "%s = %d, but the file holds tensors for %d layers; the "
                    "metadata or the file is wrong", key, declared, present);
}

int model_layer_index(const char *name, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    if (len <= n || memcmp(name, prefix, n)) return -1;
    long v = 0;
    size_t i = n;
    for (; i < len && name[i] >= '0' && name[i] <= '9' && v < (1L << 30); i++)
        v = v * 10 + (name[i] - '0');
    return i > n && i < len && name[i] == '.' && v < (1L << 30) ? (int)v : -1;
}

/* One past the highest "blk.N." among the file's tensors: the layers it holds. */
static int gguf_layers_present(const gguf_file *f) {
    int n = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        int l = model_layer_index(f->tensors[i].name.ptr, f->tensors[i].name.len, "blk.");
        if (l >= n) n = l + 1;
    }
    return n;
}

/* The engine rotates adjacent pairs (GGML's NORM RoPE); a NEOX-RoPE tensor pairs row i with
 * i + hd/2 in each head, so its rows are reordered once into an owned copy (whole rows: any
 * type). A tensor that is absent or of the wrong shape or type is left for model_validate. */
static int neox_to_pairs(okv_model *m, okv_tensor *t, int n_heads, int head_dim) {
    const int64_t n_rows = t->n_dims == 1 ? t->ne[0] : t->ne[1];
    if (!t->data || head_dim % 2 || n_rows != (int64_t)n_heads * head_dim || t->n_dims > 2)
        return OKV_OK;
    if (t->n_dims == 1 ? t->type != OKV_TYPE_F32 : !okv_type_is_weight(t->type)) return OKV_OK;
    const size_t row = t->n_dims == 1 ? sizeof(float) : okv_type_row_bytes(t->type, t->ne[0]);
    void *buf = okv_alloc((size_t)n_rows * row);
    if (!buf)
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate %zu bytes to reorder a NEOX-RoPE tensor",
                        (size_t)n_rows * row);
    model_own(m, buf);
    hf_permute_rows(buf, t->data, n_rows, row, n_heads);
    t->data = buf;
    return OKV_OK;
}

static int load_gguf(okv_model *m, const char *path, const model_load_opts *o) {
    int st = gguf_open(&m->gguf, path);
    if (st) return st;
    const gguf_file *f = &m->gguf;
    okv_model_config *c = &m->cfg;
    gguf_str s;
    bool found = false;
    if ((st = gguf_get_str(f, "general.architecture", &s, &found))) return st;
    if (!found) return okv_fail(OKV_ERR_INPUT, "%s has no general.architecture; it is not a model GGUF", path);
    snprintf(c->arch, sizeof c->arch, "%.*s", (int)OKV_MIN(s.len, 31), s.ptr);
    /* qwen2 is llama plus q/k/v biases, with llama.cpp's NEOX RoPE (rotate-half) on Q/K rows
     * that the converter leaves in HF's order. */
    bool neox;
    if (!strcmp(c->arch, "llama") || !strcmp(c->arch, "mistral")) neox = false;
    else if (!strcmp(c->arch, "qwen2")) neox = true;
    else return okv_fail(OKV_ERR_INPUT, "%s has architecture '%s'; omnikv runs llama-family GGUF files (llama, mistral, qwen2)", path, c->arch);
    if (!gguf_get_str(f, "general.name", &s, &found) && found)
        snprintf(c->name, sizeof c->name, "%.*s", (int)OKV_MIN(s.len, 127), s.ptr);
    const char *a = c->arch;
    if ((st = arch_int(f, a, "block_count", &c->n_layers, true)) ||
        (st = arch_int(f, a, "embedding_length", &c->dim, true)) ||
        (st = arch_int(f, a, "feed_forward_length", &c->ffn_dim, true)) ||
        (st = arch_int(f, a, "attention.head_count", &c->n_heads, true)))
        return st;
    /* Checked before any per-layer table is sized or walked. */
    if ((st = model_check_layer_count(c->n_layers, gguf_layers_present(f), "block_count"))) {
        okv_error_prefix("%s", path);
        return st;
    }
    c->n_kv_heads = c->n_heads;
    c->ctx_train = 4096;
    if ((st = arch_int(f, a, "attention.head_count_kv", &c->n_kv_heads, false)) ||
        (st = arch_int(f, a, "context_length", &c->ctx_train, false)))
        return st;
    c->head_dim = c->dim / c->n_heads;
    if ((st = arch_int(f, a, "attention.key_length", &c->head_dim, false))) return st;
    c->rope_dim = c->head_dim;
    if ((st = arch_int(f, a, "rope.dimension_count", &c->rope_dim, false))) return st;
    /* A NEOX rotation of fewer dimensions than the head would need the reordering confined to
     * the first rope_dim rows of each head; no qwen2 model has one. */
    if (neox && c->rope_dim < c->head_dim)
        return okv_fail(OKV_ERR_INPUT, "%s: %s with rope.dimension_count %d below the head "
                        "dimension %d (partial NEOX RoPE) is not supported", path, c->arch,
                        c->rope_dim, c->head_dim);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    if ((st = arch_f32(f, a, "attention.layer_norm_rms_epsilon", &c->norm_eps)) ||
        (st = arch_f32(f, a, "rope.freq_base", &c->rope_theta)))
        return st;
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (!gguf_get_str(f, key, &s, &found) && found) {
        if (gguf_str_eq(s, "linear")) c->rope_scaling = ROPE_SCALING_LINEAR;
        else if (gguf_str_eq(s, "yarn")) c->rope_scaling = ROPE_SCALING_YARN;
        else if (!gguf_str_eq(s, "none"))
            return okv_fail(OKV_ERR_INPUT, "%s: rope scaling type '%.*s' is not supported (linear and yarn are; Llama-3.1 files carry rope_freqs.weight)", path, (int)s.len, s.ptr);
        if ((st = arch_f32(f, a, "rope.scaling.factor", &c->rope_factor)) ||
            (st = arch_int(f, a, "rope.scaling.original_context_length", &c->rope_orig_ctx, false)))
            return st;
    }
    /* Llama-3.1 GGUFs carry their llama3-scaled frequencies as divisors in rope_freqs.weight. */
    if (gguf_tensor(f, "rope_freqs.weight", &m->rope_factors)) {
        if (m->rope_factors.type != OKV_TYPE_F32 || m->rope_factors.ne[0] != c->rope_dim / 2)
            return okv_fail(OKV_ERR_INPUT, "%s: rope_freqs.weight must be f32 with %d entries", path, c->rope_dim / 2);
    }

    if (!gguf_find_tensor(f, "token_embd.weight"))
        return okv_fail(OKV_ERR_INPUT, "%s has no token_embd.weight tensor; the model file is incomplete", path);
    c->n_vocab = (int)gguf_find_tensor(f, "token_embd.weight")->ne[1];
    c->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;

    int b = o->layer_begin, e = o->layer_end < 0 ? c->n_layers : o->layer_end;
    if (b < 0 || e > c->n_layers || b > e)
        return okv_fail(OKV_ERR_USAGE, "layer range [%d, %d) is outside the model's %d layers", b, e, c->n_layers);
    m->layer_begin = b;
    m->layer_end = e;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    OKV_ASSERT(m->layers);
    static const char *const names[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                        NULL, NULL, NULL, "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = b; l < e; l++) {
        okv_tensor *ts = &m->layers[l].attn_norm;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            char n[96];
            if (names[i]) {
                snprintf(n, sizeof n, "blk.%d.%s.weight", l, names[i]);
                gguf_tensor(f, n, &ts[i]);
            }
        }
        static const char *const bias[] = {"attn_q", "attn_k", "attn_v"};
        for (int i = 0; i < 3; i++) {
            char n[96];
            snprintf(n, sizeof n, "blk.%d.%s.bias", l, bias[i]);
            if (gguf_tensor(f, n, &(&m->layers[l].bq)[i])) c->qkv_bias = true;
        }
        if (neox) {
            okv_layer_weights *w = &m->layers[l];
            if ((st = neox_to_pairs(m, &w->wq, c->n_heads, c->head_dim)) ||
                (st = neox_to_pairs(m, &w->wk, c->n_kv_heads, c->head_dim)) ||
                (st = neox_to_pairs(m, &w->bq, c->n_heads, c->head_dim)) ||
                (st = neox_to_pairs(m, &w->bk, c->n_kv_heads, c->head_dim)))
                return st;
        }
    }
    if (o->need_embed) gguf_tensor(f, "token_embd.weight", &m->tok_embd);
    if (o->need_head) {
        gguf_tensor(f, "output_norm.weight", &m->output_norm);
        if (!gguf_tensor(f, "output.weight", &m->output)) gguf_tensor(f, "token_embd.weight", &m->output);
        if (!m->output_norm.data)
            return okv_fail(OKV_ERR_INPUT, "%s has no output_norm.weight tensor; the model file is incomplete", path);
    }
    if (o->need_tokenizer && (st = tokenizer_init_gguf(&m->tok, f))) {
        okv_error_prefix("%s", path);
        return st;
    }
    return OKV_OK;
}

int model_load(okv_model *m, const char *path, const model_load_opts *o) {
    memset(m, 0, sizeof *m);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return okv_fail(OKV_ERR_INPUT, "cannot open model '%s': %s", path,
                        errno == ELOOP ? "a loop of symbolic links" : strerror(errno));
    /* Before any open: opening a FIFO would wait for a writer. */
    if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode))
        return okv_fail(OKV_ERR_INPUT, "model '%s' is neither a file nor a directory (a FIFO, "
                        "device or socket); give a .gguf file or a checkpoint directory", path);
    int st = S_ISDIR(sb.st_mode) ? hf_load(m, path, o) : load_gguf(m, path, o);
    if (st) return st;
    if ((st = model_validate(m))) {
        okv_error_prefix("%s", path);
        return st;
    }
    okv_model_config *c = &m->cfg;
    m->rope_inv_freq = calloc((size_t)c->rope_dim / 2, sizeof(float));
    OKV_ASSERT(m->rope_inv_freq);
    m->rope_mscale = model_rope_freqs(c, o->max_context_len > 0 ? o->max_context_len : c->ctx_train,
                                      m->rope_inv_freq);
    if (m->rope_factors.data) {
        const float *div = m->rope_factors.data;
        for (int i = 0; i < c->rope_dim / 2; i++) m->rope_inv_freq[i] /= div[i];
    }
    return OKV_OK;
}
