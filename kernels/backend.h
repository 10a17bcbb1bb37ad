/* backend.h — the operation table every compute backend fills (DESIGN §6). The CPU backend
 * (kernels/cpu) is threaded and vectorised; kernels/ref.c holds the plain-C reference of every
 * op, and tests/unit/test_kernels.c compares each backend op with its reference. */
#ifndef OKV_BACKEND_H
#define OKV_BACKEND_H

#include "types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A view of one layer's cached K and V rows, as an attention op reads them. Row r of KV head h
 * starts at element (r * stride + h * head_dim) of k (and of v). Rows visited are idx[0..n)
 * when idx is given (ascending row ids: the OmniKV index set into the Context Bank), else 0..n-1.
 * Element type is F16 or F32. */
typedef struct okv_kv_view {
    okv_type type;
    const void *k;
    const void *v;
    int64_t stride;     /* elements between consecutive rows */
    const int32_t *idx; /* [n] or NULL */
    int n;
} okv_kv_view;

typedef struct okv_attn_shape {
    int n_heads;    /* query heads */
    int n_kv_heads; /* query head h reads KV head h / (n_heads / n_kv_heads) */
    int head_dim;
    float scale;    /* usually 1/sqrt(head_dim) */
} okv_attn_shape;

typedef struct okv_backend okv_backend;

struct okv_backend {
    const char *name;
    void *state; /* backend-private: thread count, scratch */

    /* Y[t][o] = sum_i W[o][i] * X[t][i]. W is [n_out][n_in] in its stored type (row-major,
     * rows of okv_type_row_bytes(wtype, n_in) bytes). For quantized W the activations are first
     * quantized per 32-block (Q8_1 for Q4_1, Q8_0 for Q4_0/Q8_0), for F16/BF16 W they are
     * rounded to that type, with f32 accumulation - the same numerics as llama.cpp.
     * x: [n_tok][n_in], y: [n_tok][n_out]. */
    void (*matmul)(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                   int n_tok, int n_in, int n_out);

    /* y = x / sqrt(mean(x^2) + eps) * w, per token; x, y: [n_tok][dim] (may alias). */
    void (*rmsnorm)(okv_backend *be, float *y, const float *x, const float *w, int n_tok, int dim,
                    float eps);

    /* Rotary embedding in place on x: [n_tok][n_heads][head_dim], token t at position pos[t].
     * Adjacent pairs (2i, 2i+1) of the first 2*n_freq dims of each head rotate by
     * angle pos * inv_freq[i] (GGUF layout; HF checkpoints are permuted at load). */
    void (*rope)(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads,
                 int head_dim, const float *inv_freq, int n_freq);

    /* out[i] = silu(gate[i]) * up[i]; out may alias gate. */
    void (*swiglu)(okv_backend *be, float *out, const float *gate, const float *up, int64_t n);

    /* y[i] += x[i] */
    void (*add)(okv_backend *be, float *y, const float *x, int64_t n);

    /* out[t][:] = row ids[t] of table [n_vocab][dim] (stored type), dequantized to f32. */
    void (*embed)(okv_backend *be, float *out, const void *table, okv_type type,
                  const int32_t *ids, int n_tok, int dim);

    /* Writes n_tok rows of f32 src ([n_tok][n_kv_heads*head_dim]) into a KV store of type dst_type
     * (F16 or F32) at rows dst_rows[t], row stride dst_stride elements. */
    void (*kv_store)(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,
                     const int32_t *dst_rows, const float *src, int n_tok, int row_elems);

    /* Causal prefill attention. q: [n_q][n_heads][head_dim], query i sits at position
     * q_pos0 + i and sees rows 0..q_pos0+i of kv (kv.idx must be NULL, kv.n >= q_pos0 + n_q).
     * out: [n_q][n_heads][head_dim]. Tiled with an online softmax: memory O(tile), not O(n^2). */
    void (*attn_prefill)(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                         okv_kv_view kv, okv_attn_shape s);

    /* Decode attention of one query per sequence over the concatenation of n_views KV views
     * (e.g. selected prompt rows from the bank, then the generated tail).
     * q, out: [n_heads][head_dim]. The result depends only on the sequence of rows visited
     * (their values and order) - never on how they are split into views - so an index set that
     * names every prompt row reproduces dense attention bitwise.
     * If logits is non-NULL, the scaled logits q.k of view 0 are written to it: [n_heads][views[0].n]
     * (the filter layer's selection scores, computed once). */
    void (*attn_decode)(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                        int n_views, okv_attn_shape s, float *logits);

    /* Scaled logits only: logits[h][r] = scale * q_h . k_{kvhead(h), row r of kv}.
     * q: [n_heads][head_dim]. Used for the window selectors' older queries. */
    void (*attn_logits)(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                        okv_attn_shape s);

    /* Sizes the attention scratch for contexts of up to max_ctx rows at start-up, so no decode
     * step allocates. Returns OKV_OK or OKV_ERR_NOMEM. */
    int (*reserve)(okv_backend *be, okv_attn_shape s, int max_ctx);

    void (*free)(okv_backend *be);
};

/* The CPU backend with n_threads OpenMP threads and scratch for activations of up to
 * max_tok x max_in. Returns OKV_OK (0) or an okv_status with okv_last_error set. */
int okv_backend_cpu_init(okv_backend *be, int n_threads, int max_tok, int max_in);
/* The reference backend: the *_ref functions below, single-threaded. */
int okv_backend_ref_init(okv_backend *be);

/* ---- plain-C references (kernels/ref.c) ---- */
void okv_dequant_row_ref(float *y, const void *x, okv_type t, int64_t n);
void okv_quant_row_ref(void *y, const float *x, okv_type t, int64_t n); /* q8_0, q8_1, q4_0, q4_1, f16, bf16 */
float okv_vec_dot_ref(const void *w, okv_type wtype, const void *xq, int64_t n); /* xq in the partner type */
okv_type okv_act_type_for(okv_type wtype); /* activation type paired with a weight type */

void okv_matmul_ref(float *y, const void *w, okv_type wtype, const float *x, int n_tok, int n_in,
                    int n_out);
void okv_rmsnorm_ref(float *y, const float *x, const float *w, int n_tok, int dim, float eps);
void okv_rope_ref(float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
                  const float *inv_freq, int n_freq);
void okv_swiglu_ref(float *out, const float *gate, const float *up, int64_t n);
void okv_add_ref(float *y, const float *x, int64_t n);
void okv_embed_ref(float *out, const void *table, okv_type type, const int32_t *ids, int n_tok,
                   int dim);
void okv_kv_store_ref(void *dst, okv_type dst_type, int64_t dst_stride, const int32_t *dst_rows,
                      const float *src, int n_tok, int row_elems);
void okv_attn_prefill_ref(float *out, const float *q, int n_q, int q_pos0, okv_kv_view kv,
                          okv_attn_shape s);
void okv_attn_decode_ref(float *out, const float *q, const okv_kv_view *views, int n_views,
                         okv_attn_shape s, float *logits);
void okv_attn_logits_ref(float *logits, const float *q, okv_kv_view kv, okv_attn_shape s);

/* Top-k selection over scores[0..n): writes the k' = min(k, n) indices of the largest scores,
 * ascending by index; ties prefer the lower index. Average O(n) (quickselect on a copy kept in
 * scratch [n] floats + [n] ints supplied by the caller), not a full sort. Returns k'. */
int okv_topk(int32_t *out, const float *scores, int n, int k, float *scratch_f, int32_t *scratch_i);
int okv_topk_ref(int32_t *out, const float *scores, int n, int k); /* full sort, for the tests */

#endif
