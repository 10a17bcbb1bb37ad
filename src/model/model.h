/* model.h — a Llama-family model as the engine sees it: its config and, for one contiguous layer
 * range, pointers into mmapped weights in their stored types. Sources: a GGUF file (model.c) or a
 * Hugging Face checkpoint directory (hf.c). Tested by tests/model/ against llama.cpp. */
#ifndef OKV_MODEL_H
#define OKV_MODEL_H

#include "../../kernels/types.h"
#include "gguf.h"
#include "tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct okv_tensor {
    okv_type type;
    int n_dims;
    int64_t ne[4];    /* ne[0] is the row length (innermost) */
    const void *data; /* NULL: absent (optional tensors such as biases) */
} okv_tensor;

typedef enum rope_scaling_kind {
    ROPE_SCALING_NONE = 0,
    ROPE_SCALING_LINEAR = 1,
    ROPE_SCALING_LLAMA3 = 2,
    ROPE_SCALING_DYNAMIC = 3, /* NTK-aware, fixed at load for max_context_len */
    ROPE_SCALING_YARN = 4,
} rope_scaling_kind;

typedef struct okv_model_config {
    char arch[32];  /* "llama", "mistral", "qwen2" */
    char name[128];
    int n_layers, dim, ffn_dim, n_heads, n_kv_heads, head_dim, n_vocab, ctx_train;
    float norm_eps;
    float rope_theta;
    int rope_dim; /* rotated dims per head (= head_dim for these families) */
    rope_scaling_kind rope_scaling;
    float rope_factor;
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_orig_ctx;                                 /* llama3, yarn, dynamic */
    float yarn_beta_fast, yarn_beta_slow;              /* yarn (defaults 32, 1) */
    bool tied_embeddings;
    bool qkv_bias;      /* qwen2 */
    int sliding_window; /* 0: none */
} okv_model_config;

typedef struct okv_layer_weights {
    okv_tensor attn_norm;                   /* [dim] f32 */
    okv_tensor wq, wk, wv, wo;              /* [n_out][n_in] rows; wq: [n_heads*hd][dim] ... */
    okv_tensor bq, bk, bv;                  /* [n_out] or absent */
    okv_tensor ffn_norm;                    /* [dim] f32 */
    okv_tensor w_gate, w_up, w_down;        /* [ffn][dim], [ffn][dim], [dim][ffn] */
} okv_layer_weights;

typedef struct okv_model {
    okv_model_config cfg;
    int layer_begin, layer_end; /* the loaded range [begin, end) */
    okv_tensor tok_embd;        /* [n_vocab][dim] or absent when not needed */
    okv_tensor output_norm;     /* [dim] */
    okv_tensor output;          /* [n_vocab][dim]; equals tok_embd when tied */
    okv_layer_weights *layers;  /* [n_layers]; entries outside the range are zeroed */
    okv_tensor rope_factors;    /* [rope_dim/2] f32 divisors of the frequencies (Llama-3.1 GGUF) */
    float *rope_inv_freq;       /* [rope_dim/2], scaling applied */
    float rope_mscale;          /* attention logit factor from YaRN (1 otherwise) */
    okv_tokenizer *tok;         /* NULL when not requested */
    gguf_file gguf;             /* GGUF source */
    struct hf_checkpoint *hf;   /* HF source (hf.c) */
    void **owned;               /* buffers made at load (permuted or converted tensors) */
    int n_owned;
} okv_model;

typedef struct model_load_opts {
    int layer_begin, layer_end; /* [begin, end); end < 0 means n_layers */
    bool need_embed;            /* token embedding (first stage) */
    bool need_head;             /* output norm + head (last stage) */
    bool need_tokenizer;
    int max_context_len;        /* for dynamic rope scaling; 0 = ctx_train */
} model_load_opts;

/* Loads a .gguf file or a Hugging Face directory. Only the tensors of the requested layers are
 * touched (each is bounds- and shape-checked). Returns OKV_OK or OKV_ERR_INPUT with a message. */
int model_load(okv_model *m, const char *path, const model_load_opts *opts);
void model_free(okv_model *m); /* safe on a zeroed or half-loaded model */

/* Shape checks shared by both loaders once cfg and tensors are filled. */
int model_validate(const okv_model *m);
/* The layer N of a tensor name "<prefix>N.<rest>" (name[0..len), not NUL-terminated), or -1. */
int model_layer_index(const char *name, size_t len, const char *prefix);
/* OKV_ERR_INPUT naming key when the metadata's layer count is not the layers the tensors hold
 * (counted from the tensor names before any per-layer work). */
int model_check_layer_count(int declared, int present, const char *key);
/* inv_freq[i] for i < rope_dim/2 with the config's scaling; returns the YaRN mscale (else 1). */
float model_rope_freqs(const okv_model_config *c, int max_context_len, float *inv_freq);
/* Bytes of weights of layers [b, e) (for planners and bench). */
uint64_t model_layer_bytes(const okv_model *m, int b, int e);
/* Stored bytes of one tensor (0 when absent). */
uint64_t model_tensor_bytes(const okv_tensor *t);
/* Register a malloc'd buffer to be freed by model_free. */
void model_own(okv_model *m, void *buf);

/* HF checkpoints (hf.c): fills cfg, tensors and tokenizer from a directory. */
int hf_load(okv_model *m, const char *dir, const model_load_opts *opts);
void hf_free(struct hf_checkpoint *hf);

#endif
