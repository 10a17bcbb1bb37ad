/* engine.h — the forward pass of a contiguous layer range with OmniKV layer roles: dense KV
 * cache for dense/filter/wait layers, the Context Bank (bank/) for the sparse layers' prompt KV,
 * a device-side tail for their generated tokens, and per-slot index sets. A pipeline stage runs
 * the same engine on its own range. Tested by tests/model/ (vs llama.cpp) and
 * tests/unit/test_omnikv.c (omnikv with k >= N equals dense bitwise). */
#ifndef OKV_ENGINE_H
#define OKV_ENGINE_H

#include "../../bank/bank.h"
#include "../../kernels/backend.h"
#include "../config.h"
#include "../model/model.h"
#include "../policy/policy.h"

#include <stdbool.h>
#include <stdint.h>

/* Counters accumulated over decode steps (reset by engine_metrics_reset). */
typedef struct okv_metrics {
    uint64_t steps;            /* decode steps (one token for every active slot) */
    uint64_t rows_dense;       /* KV rows read by dense and wait layers */
    uint64_t rows_filter;      /* KV rows read by filter layers */
    uint64_t rows_sparse;      /* KV rows read by sparse layers (selected + tail) */
    uint64_t bytes_kv;         /* KV bytes read by attention */
    uint64_t bytes_weights;    /* weight bytes read (once per step) */
    double t_select;           /* seconds in score + top-k */
    double t_attn_dense;       /* dense / wait / filter attention */
    double t_attn_sparse;      /* sparse attention */
    double t_matmul;           /* projections, MLP, head */
    double t_other;            /* norms, rope, kv stores */
} okv_metrics;

typedef void (*okv_probe_fn)(void *ctx, int layer, int slot, const float *logits, int n_heads,
                             int n);

typedef struct okv_slot {
    bool active;
    int n_prompt;  /* N: candidates for selection */
    int n_pos;     /* tokens whose KV is stored (prompt + generated) */
    okv_selection sel; /* how this sequence picks its index sets (budget, selector, kept ends) */
} okv_slot;

typedef struct okv_engine {
    const okv_model *model;
    const okv_run_config *rc;
    okv_backend be;
    okv_layer_plan plan;
    int layer_begin, layer_end;
    int max_slots, max_ctx, max_tok;
    int kv_dim, q_dim;
    okv_attn_shape shape;
    okv_slot *slots; /* [max_slots] */

    /* KV of non-sparse layers (and of sparse ones when real_offload is false):
     * cache_k[l]: [max_slots][max_ctx][kv_dim] in rc->kv_type; NULL for layers not held */
    void **cache_k, **cache_v;
    /* generated-token KV of sparse layers: [max_slots][max_ctx][kv_dim] */
    void **tail_k, **tail_v;
    okv_bank bank;

    /* index sets: sel[slot][group] -> [max_ctx] ascending prompt positions, sel_n counts */
    int32_t *sel;
    int *sel_n;
    int n_groups;
    /* window queries of filter layers (uniform / exp selectors):
     * win_q[(slot * n_groups + g) * window + i] -> [q_dim] f32, ring by position; win_prompt
     * keeps each slot's ring as prefill left it (the prompt's last queries) for a rewind */
    float *win_q, *win_prompt;
    int window;

    /* scratch, sized once: [max_tok][...] */
    float *xn, *q, *kbuf, *vbuf, *att, *gate, *up, *tmp;
    float *logits_sel;       /* [n_heads][max_ctx] */
    float *logits_win;       /* [window][n_heads][max_ctx] when a window selector is used */
    okv_selector_scratch sel_scratch;
    int32_t *pos_buf;        /* [max_tok] */
    int32_t *rows_buf;       /* [max_tok] */
    int32_t *forced;         /* [window] */

    uint64_t weight_bytes; /* of the layer range, read once per decode step */
    /* Calibration probe: when set, every non-sparse layer reports its decode logits over the
     * prompt, [n_heads][n], for each slot. */
    okv_probe_fn probe;
    void *probe_ctx;
    okv_metrics metrics;
} okv_engine;

/* Sizes everything for max_slots sequences of up to rc->max_context_len tokens; nothing is
 * allocated afterwards. Reports bytes needed when memory is short. */
int engine_init(okv_engine *e, const okv_model *m, const okv_run_config *rc, int layer_begin,
                int layer_end, int max_slots);
void engine_free(okv_engine *e);

/* Starts a sequence in a slot with a prompt of n_prompt tokens (its selection from the run
 * config: policy_selection). */
int engine_seq_start(okv_engine *e, int slot, int n_prompt);
void engine_seq_end(okv_engine *e, int slot);
/* Overrides the slot's selection (k >= n_prompt: every prompt row, i.e. dense attention). The
 * selector must be a window selector exactly when the run config's is, since the engine keeps
 * window queries only then; OKV_ERR_USAGE otherwise. */
int engine_seq_set_selection(okv_engine *e, int slot, const okv_selection *sel);
/* Forgets generated tokens back to n_pos (>= the prompt length), so several decode variants can
 * share one prefill. With a window selector only n_pos = the prompt length can be restored (the
 * ring of window queries is put back as prefill left it). */
void engine_seq_rewind(okv_engine *e, int slot, int n_pos);

/* Token embedding (first stage): x [n][dim]. */
void engine_embed(okv_engine *e, const int32_t *ids, int n, float *x);
/* Runs this range's layers over n_tok prompt tokens of one slot at positions pos0.. (chunked
 * prefill, full causal attention), x [n_tok][dim] in place. n_tok <= max_tok. */
int engine_prefill(okv_engine *e, int slot, int pos0, int n_tok, float *x);
/* One decode step: one token for each listed slot at its next position, x [n][dim] in place.
 * Filter layers of this range select the index sets of their groups. */
int engine_decode(okv_engine *e, const int *slots, int n, float *x);
/* Final norm and output head (last stage): logits [n][n_vocab]. */
void engine_head(okv_engine *e, const float *x, int n, float *logits);

/* The index set of a group for a slot (pipeline boundaries forward it to the next stage). */
int engine_get_selection(const okv_engine *e, int slot, int group, const int32_t **idx);
void engine_set_selection(okv_engine *e, int slot, int group, const int32_t *idx, int n);

/* Installs a calibration probe (allocates its logits buffer now, not per step). */
int engine_set_probe(okv_engine *e, okv_probe_fn fn, void *ctx);

void engine_metrics_reset(okv_engine *e);
/* d = b - a, counter by counter (b taken after a). */
void engine_metrics_diff(okv_metrics *d, const okv_metrics *a, const okv_metrics *b);
/* Resident bytes: weights of the range, KV cache, bank. */
void engine_memory(const okv_engine *e, uint64_t *weights, uint64_t *kv_cache, uint64_t *bank);

#endif
