/* backend.h — the table every compute backend fills (DESIGN §6). A backend owns memory and
 * ordering: op pointers live where `mem` says (host or device); buffers come from `alloc`; data
 * crosses between host and backend memory only through `copy`; work is issued in order on
 * streams (compute, copy) ordered by events. kernels/cpu is threaded and vectorised,
 * kernels/strict.c checks every pointer an op receives, kernels/cuda runs on a GPU; kernels/ref.c
 * holds the plain-C reference of every op, and tests/unit/test_kernels.c compares each op of
 * each backend in the build with it. */
#ifndef OKV_BACKEND_H
#define OKV_BACKEND_H

#include "types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where a backend's op pointers live. Host memory registered with `host_register` is also
 * readable by ops (a GPU reads pinned host memory directly): the Context Bank is. */
typedef enum okv_mem_kind {
    OKV_MEM_HOST = 0,
    OKV_MEM_DEVICE = 1,
} okv_mem_kind;

typedef enum okv_copy_kind {
    OKV_COPY_H2D = 0, /* host -> backend memory */
    OKV_COPY_D2H = 1, /* backend -> host memory */
    OKV_COPY_D2D = 2, /* backend -> backend memory */
} okv_copy_kind;

/* Streams: ops run in issue order on OKV_STREAM_COMPUTE; copies and gathers may be issued on
 * OKV_STREAM_COPY and are ordered against compute work by events. OKV_STREAM_SYNC as a copy's
 * stream means "return when done" (and ordered after all compute work issued so far). */
typedef enum okv_stream {
    OKV_STREAM_SYNC = -1,
    OKV_STREAM_COMPUTE = 0,
    OKV_STREAM_COPY = 1,
    OKV_N_STREAMS = 2,
} okv_stream;

typedef struct okv_event okv_event; /* backend-defined */

/* The score kinds of the filter layers' selection (DESIGN §4; the selectors of config.h map
 * onto them one to one). */
typedef enum okv_score_kind {
    OKV_SCORE_MAX = 0,         /* `last`: max over heads of the logits */
    OKV_SCORE_SOFTMAX_MAX = 1, /* `softmax_before_last`: per-head softmax, then max */
    OKV_SCORE_WINDOW_SUM = 2,  /* `uniform`: softmax-then-max of each window query, summed */
    OKV_SCORE_WINDOW_EXP = 3,  /* `exp`: ... weighted 2^-age */
} okv_score_kind;

#define OKV_SELECT_MAX_WINDOW 256
#define OKV_SELECT_MAX_HEADS 256

/* One filter layer's selection for one sequence over the n prompt positions, as the reference
 * implementation selects: the last n_tail positions (the prompt tokens still inside a window
 * selector's window) are not scored and always selected; the scores, and the per-head softmax
 * of the softmax kinds, cover the c = n - n_tail candidates before them, so a window query never
 * normalises over keys after its own position. The candidates give k_s = k scored positions, for
 * window kinds k_s = max(1, k - n_tail), keep_first / keep_last (ours) always among them. The
 * scalar array ages is a parameter, read by the host when the op is issued. */
typedef struct okv_select_args {
    okv_score_kind kind;
    int k;                     /* budget, prompt tokens (may be 0) */
    int keep_first, keep_last; /* candidates always selected */
    int n_tail;                /* window kinds: trailing prompt positions selected unscored */
    const float *window_logits; /* window kinds: [n_win][n_heads][n], entry 0 the current query */
    int n_win;
    int ages[OKV_SELECT_MAX_WINDOW]; /* [n_win] steps between window query i and the current */
} okv_select_args;

/* How many positions a selection yields: min(k_s, n - n_tail) + n_tail (see okv_select_args). */
int okv_select_count(int n, const okv_select_args *a);

/* A view of one layer's cached K and V rows, as an attention op reads them. Row r of KV head h
 * starts at element e = r * stride + h * head_dim of k (and of v), that is at byte
 * okv_type_row_bytes(type, e). Rows visited are idx[0..n) when idx is given (ascending row ids:
 * the OmniKV index set into the Context Bank), else 0..n-1. The element type is a KV type
 * (okv_kv_type_ok); for Q8_0, stride and head_dim are multiples of its 32-element block, so every
 * head of every row is whole blocks and element offsets stay exact. Against a Q8_0 K row, every
 * attention op rounds the query head to q8_0 (once per call) and takes q.k as llama.cpp does with
 * a q8_0 K cache: per block the integer dot times f16(d_q) * f16(d_k), added in block order by
 * fused multiply-adds (okv_attn_decode_ref's definition, matched bit for bit). */
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
    okv_mem_kind mem; /* where the pointers ops take live */
    char pci_bus_id[32]; /* the device's ("0000:3b:00.0"); "" for host backends */
    void *state;      /* backend-private: thread count, scratch, streams */

    /* ---- memory and ordering ---- */
    /* Backend memory (64-byte aligned, zeroed); NULL when it cannot be had. */
    void *(*alloc)(okv_backend *be, size_t bytes);
    void (*mem_free)(okv_backend *be, void *p);
    /* Copies bytes between host and backend memory as kind says, on stream (OKV_STREAM_SYNC:
     * returns when the copy is done). An asynchronous copy from or to host memory needs that
     * memory registered, or kept unchanged until the stream passes it. */
    void (*copy)(okv_backend *be, void *dst, const void *src, size_t bytes, okv_copy_kind kind,
                 int stream);
    /* A strided copy: height rows of width bytes, rows dst_pitch / src_pitch bytes apart. */
    void (*copy_2d)(okv_backend *be, void *dst, size_t dst_pitch, const void *src,
                    size_t src_pitch, size_t width, size_t height, okv_copy_kind kind, int stream);
    /* Registers (pins) host memory so asynchronous copies and ops may read it; OKV_OK or a
     * status with okv_last_error set. */
    int (*host_register)(okv_backend *be, void *p, size_t bytes);
    void (*host_unregister)(okv_backend *be, void *p);
    okv_event *(*event_new)(okv_backend *be); /* NULL when it cannot be had */
    void (*event_free)(okv_backend *be, okv_event *ev);
    /* ev completes when the work issued on stream so far has. */
    void (*event_record)(okv_backend *be, okv_event *ev, int stream);
    /* Work issued on stream after this call starts after ev completes. */
    void (*event_wait)(okv_backend *be, int stream, okv_event *ev);
    /* Returns when the work issued on stream (OKV_STREAM_SYNC: every stream) is done. */
    void (*sync)(okv_backend *be, int stream);

    /* ---- ops: every pointer is backend memory (or registered host memory where said); they run
     * on OKV_STREAM_COMPUTE unless they take a stream ---- */

    /* Y[t][o] = sum_i W[o][i] * X[t][i]. W is [n_out][n_in] in its stored type (row-major,
     * rows of okv_type_row_bytes(wtype, n_in) bytes). For quantized W the activations are first
     * quantized to the partner type okv_act_type_for names (Q8_1 for Q4_1 and Q5_1, Q8_0 for
     * Q4_0, Q5_0, IQ4_NL and Q8_0), for F16/BF16 W they are rounded to that type, with f32
     * accumulation - the same numerics as llama.cpp.
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

    /* y[t][i] += b[i]; y: [n_tok][dim], b: [dim] (the QKV biases of qwen2-style models). */
    void (*bias_add)(okv_backend *be, float *y, const float *b, int n_tok, int dim);

    /* out[t][:] = row ids[t] of table [n_vocab][dim] (stored type), dequantized to f32. */
    void (*embed)(okv_backend *be, float *out, const void *table, okv_type type,
                  const int32_t *ids, int n_tok, int dim);

    /* Writes n_tok rows of f32 src ([n_tok][row_elems]) into a KV store of type dst_type (a KV
     * type) at rows dst_rows[t], row stride dst_stride elements (row t at byte
     * okv_type_row_bytes(dst_type, dst_rows[t] * dst_stride)). Q8_0 rows are quantized per
     * 32-element block as okv_quant_row_ref does (ggml's quantize_row_q8_0), bit for bit. */
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

    /* The filter layer's selection (okv_select_args): scores of the candidates from logits
     * [n_heads][n] (or a->window_logits, rows of n), then out[0..k') = the k_s best candidates
     * ascending (ties to the lower position; keep_first / keep_last first, the lower ones first
     * when k_s is short), then the n_tail trailing positions. Returns k' = okv_select_count,
     * known on the host at issue time. */
    int (*select)(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
                  const okv_select_args *a);

    /* out[r] = the index of the largest of x[r][0..n) (the first on ties); x: [n_rows][n]. */
    void (*argmax)(okv_backend *be, int32_t *out, const float *x, int n_rows, int n);

    /* dst[i][0..row_bytes) = src[idx[i]][0..row_bytes) for i < n; src rows src_stride bytes
     * apart in registered host memory (the bank), dst rows row_bytes apart in backend memory,
     * idx in backend memory. Issued on stream. */
    void (*gather_rows)(okv_backend *be, void *dst, const void *src, size_t src_stride,
                        size_t row_bytes, const int32_t *idx, int n, int stream);

    /* The row cache's gather (consecutive steps' index sets overlap heavily): as gather_rows,
     * with idx ascending, but a row whose index is among old_idx[0..n_old) (ascending; the rows
     * the previous gather left in old, row_bytes apart) is copied from old in backend memory
     * instead of crossing from src. dst and old do not overlap; old_idx and *hits live in backend
     * memory; *hits grows by the rows taken from old. Issued on stream. */
    void (*gather_rows_cached)(okv_backend *be, void *dst, const void *src, size_t src_stride,
                               size_t row_bytes, const int32_t *idx, int n, const void *old,
                               const int32_t *old_idx, int n_old, uint64_t *hits, int stream);

    /* Sizes the attention and selection scratch for contexts of up to max_ctx rows at
     * start-up, so no decode step allocates. Returns OKV_OK or OKV_ERR_NOMEM. */
    int (*reserve)(okv_backend *be, okv_attn_shape s, int max_ctx);

    /* Whether matmul and embed take weights of type t: every okv_type_is_weight type on the host
     * backends (okv_weight_ok_all), fewer where a backend lacks kernels. The engine asks for
     * every tensor before it uploads them (okv_backend_check_weight). */
    bool (*weight_ok)(okv_backend *be, okv_type t);

    void (*free)(okv_backend *be);
};

/* The backends a run can ask for (run-config key `backend`). */
typedef enum okv_backend_kind {
    OKV_BACKEND_AUTO = 0,   /* cuda when the build has it and a GPU is visible, else cpu */
    OKV_BACKEND_CPU = 1,
    OKV_BACKEND_CPU_STRICT = 2,
    OKV_BACKEND_CUDA = 3,
} okv_backend_kind;

/* Sizes every backend takes at start-up: scratch for activations of up to max_tok x max_in. */
typedef struct okv_backend_params {
    int n_threads; /* CPU backends */
    int max_tok, max_in;
    int device;    /* cuda: the GPU ordinal (-1: from the node-local rank) */
    size_t arena_bytes; /* cpu-strict: all backend memory comes from one arena of this size */
} okv_backend_params;

/* Builds the backend kind asks for (auto resolved as above). Returns OKV_OK (0) or an
 * okv_status with okv_last_error set. */
int okv_backend_init(okv_backend *be, okv_backend_kind kind, const okv_backend_params *p);
/* The CPU backend with n_threads OpenMP threads and scratch for activations of up to
 * max_tok x max_in. */
int okv_backend_cpu_init(okv_backend *be, int n_threads, int max_tok, int max_in);
/* The checking backend: the CPU backend's ops on memory from its own arena of arena_bytes;
 * every op checks its pointers lie there (or in registered host memory where allowed) and dies
 * naming the op, the argument and the address otherwise. */
int okv_backend_strict_init(okv_backend *be, int n_threads, int max_tok, int max_in,
                            size_t arena_bytes);
/* cpu-strict prints its finding and aborts; a test may install a hook that runs first (and
 * need not return). */
typedef void (*okv_strict_fail_fn)(const char *msg);
void okv_strict_set_fail_hook(okv_strict_fail_fn fn);
/* The reference backend: the *_ref functions below, single-threaded, on host memory. */
int okv_backend_ref_init(okv_backend *be);
#ifdef OMNIKV_HAVE_CUDA
/* The CUDA backend on GPU `device` (kernels/cuda). */
int okv_backend_cuda_init(okv_backend *be, int device, int max_tok, int max_in);
#endif
/* Fills the memory and ordering entries of a backend whose memory is host memory: alloc is
 * okv_alloc, copies are memcpy (every stream is synchronous), events and sync do nothing. */
void okv_host_mem_ops(okv_backend *be);
/* Zeroed host memory committed as it is written (page aligned); the host backends' alloc. */
void *okv_host_alloc_lazy(size_t bytes);
void okv_host_free_lazy(void *p);
const char *okv_backend_kind_name(okv_backend_kind k); /* "auto", "cpu", "cpu-strict", "cuda" */
/* weight_ok of backends with kernels for every weight type. */
bool okv_weight_ok_all(okv_backend *be, okv_type t);
/* OKV_OK when be takes weights of type t, else OKV_ERR_USAGE with one sentence naming the tensor,
 * its type, the types be reads, and what to do. */
int okv_backend_check_weight(okv_backend *be, okv_type t, const char *tensor);
int okv_backend_kind_from_name(const char *name);      /* -1 when unknown */

/* The element types a KV cache, tail or Context Bank may hold (run-config key kv_type): F32, F16,
 * Q8_0 and Q4_0. */
static inline int okv_kv_type_ok(okv_type t) {
    return t == OKV_TYPE_F32 || t == OKV_TYPE_F16 || t == OKV_TYPE_Q8_0 || t == OKV_TYPE_Q4_0;
}

/* KV types whose K rows meet a query rounded to q8_0 in integer block dots, as llama.cpp's
 * ggml_vec_dot_q8_0_q8_0 and ggml_vec_dot_q4_0_q8_0 do. */
static inline int okv_kv_type_int(okv_type t) { return t == OKV_TYPE_Q8_0 || t == OKV_TYPE_Q4_0; }

/* nb q4_0 blocks as q8_0 blocks: the same d, quants q - 8. A q8_0 query's integer dot with either
 * is the same number, so q4_0 keys take the q8_0 paths exactly. */
static inline void okv_q4_0_as_q8_0(okv_block_q8_0 *dst, const okv_block_q4_0 *src, int nb) {
    for (int b = 0; b < nb; b++) {
        dst[b].d = src[b].d;
        for (int j = 0; j < OKV_QK / 2; j++) {
            dst[b].qs[j] = (int8_t)((src[b].qs[j] & 15) - 8);
            dst[b].qs[j + OKV_QK / 2] = (int8_t)((src[b].qs[j] >> 4) - 8);
        }
    }
}

/* ---- plain-C references (kernels/ref.c) ---- */
void okv_dequant_row_ref(float *y, const void *x, okv_type t, int64_t n);
/* q8_0, q8_1, f16, bf16 and every quantized weight type (llama.cpp's reference quantizers) */
void okv_quant_row_ref(void *y, const float *x, okv_type t, int64_t n);
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
void okv_bias_add_ref(float *y, const float *b, int n_tok, int dim);
void okv_argmax_ref(int32_t *out, const float *x, int n_rows, int n);
void okv_gather_rows_ref(void *dst, const void *src, size_t src_stride, size_t row_bytes,
                         const int32_t *idx, int n);
/* Merges idx with old_idx in one ascending walk (the fast ops search instead). */
void okv_gather_rows_cached_ref(void *dst, const void *src, size_t src_stride, size_t row_bytes,
                                const int32_t *idx, int n, const void *old, const int32_t *old_idx,
                                int n_old, uint64_t *hits);
/* Selection scores of the c = n - n_tail candidates ([c] floats out; logit rows hold n) as
 * okv_select_args describe. */
void okv_select_scores_ref(float *score, const float *logits, int n_heads, int n,
                           const okv_select_args *a);
/* Raises keep_first / keep_last of the c candidates score[0..c) to +inf. */
void okv_select_force(float *score, int c, const okv_select_args *a);
/* The scored budget k_s of a selection, and its candidate count c. */
int okv_select_scored(const okv_select_args *a);
int okv_select_candidates(int n, const okv_select_args *a);
/* The whole selection with a full sort: the reference of the select op. */
int okv_select_ref(int32_t *out, const float *logits, int n_heads, int n, const okv_select_args *a);

/* Top-k selection over scores[0..n): writes the k' = min(k, n) indices of the largest scores,
 * ascending by index; ties prefer the lower index. Average O(n) (quickselect on a copy kept in
 * scratch [n] floats + [n] ints supplied by the caller), not a full sort. Returns k'. */
int okv_topk(int32_t *out, const float *scores, int n, int k, float *scratch_f, int32_t *scratch_i);
int okv_topk_ref(int32_t *out, const float *scores, int n, int k); /* full sort, for the tests */

#ifdef __cplusplus
}
#endif

#endif
