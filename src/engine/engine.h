/* engine.h — the forward pass of a contiguous layer range with OmniKV layer roles: dense KV
 * cache for dense/filter/wait layers, the Context Bank (bank/) for the sparse layers' prompt KV,
 * a device-side tail for their generated tokens, and per-slot index sets. Everything the pass
 * touches lives in backend memory carved from one arena sized at start-up; the engine owns its
 * activations and logits, and data crosses to the host only through the backend's copies. A
 * pipeline stage runs the same engine on its own range. Tested by tests/model/ (vs llama.cpp),
 * tests/unit/test_omnikv.c (omnikv with k >= N equals dense bitwise; cpu-strict and staged
 * gathers equal cpu and in place bitwise). */
#ifndef OKV_ENGINE_H
#define OKV_ENGINE_H

#include "../../bank/bank.h"
#include "../../kernels/backend.h"
#include "../config.h"
#include "../model/model.h"
#include "../policy/policy.h"
#include "metrics.h"

#include <stdbool.h>
#include <stdint.h>

/* Counters accumulated over decode steps (reset by engine_metrics_reset). */
typedef struct okv_metrics {
#define OKV_METRICS_DECLARE(name, type, what) type name;
    OKV_METRICS_FIELDS(OKV_METRICS_DECLARE)
#undef OKV_METRICS_DECLARE
} okv_metrics;

typedef void (*okv_probe_fn)(void *ctx, int layer, int slot, const float *logits, int n_heads,
                             int n);

typedef struct okv_slot {
    bool active;
    int n_prompt;  /* N: candidates for selection */
    int n_pos;     /* tokens whose KV is stored (prompt + generated) */
    okv_selection sel; /* how this sequence picks its index sets (budget, selector, kept ends) */
} okv_slot;

/* Weights of the range in backend memory: aliases of the model's mmap on host backends, copies
 * in one upload on device ones. */
typedef struct okv_engine_weights {
    okv_layer_weights *layers; /* [n_layers]; only [layer_begin, layer_end) set */
    okv_tensor tok_embd, output_norm, output; /* data NULL where the model lacks them here */
    float *rope_inv_freq;      /* [rope_dim/2] */
    void *mem;                 /* the upload's backend allocation (NULL when aliased) */
} okv_engine_weights;

typedef struct okv_engine {
    const okv_model *model;
    const okv_run_config *rc;
    okv_backend be;
    bool staged; /* sparse layers read bank rows gathered into backend memory */
    okv_layer_plan plan;
    int layer_begin, layer_end;
    int max_slots, max_ctx, max_tok;
    int kv_dim, q_dim;
    okv_attn_shape shape;
    okv_slot *slots; /* [max_slots] host */
    okv_engine_weights w;
    okv_bank bank;      /* the sparse layers' prompt KV (host memory, registered) */
    void *arena;        /* backend memory every buffer below is carved from */
    size_t arena_bytes;

    /* ---- backend memory ---- */
    /* KV of non-sparse layers (and of sparse ones when real_offload is false):
     * cache_k[l]: [max_slots][max_ctx][kv_dim] in rc->kv_type; NULL for layers not held */
    void **cache_k, **cache_v; /* host arrays of backend pointers, [n_layers] */
    /* generated-token KV of sparse layers: [max_slots][max_ctx][kv_dim] */
    void **tail_k, **tail_v;
    /* index sets: sel[(slot * n_groups + g) * max_ctx + i], ascending prompt positions */
    int32_t *sel;
    /* staged gathers: stage[g] -> [max_slots][stage_rows][bank_row_bytes(g)] selected rows;
     * chunk[g] -> [max_tok][bank_row_bytes(g)] a prefill chunk's rows on their way to the bank */
    uint8_t **stage, **chunk;  /* host arrays [n_groups] of backend pointers */
    int stage_rows;            /* most rows a staged index set may hold */
    /* staged prefill of a bank layer: [max_ctx][2 * kv_dim] (K then V per row) that layer's
     * prompt so far, earlier chunks copied from the bank and this chunk from chunk[g], so its
     * attention reads backend memory only (NULL without staged gathers or a bank) */
    uint8_t *pf_stage;
    /* the row cache (rc->row_cache with staged gathers): stage[g] holds two halves,
     * [2][max_slots][stage_rows][row], and a step gathers into the half its slot did not use last
     * time, taking the rows the other half already holds; stage_idx[g] -> [2][max_slots]
     * [stage_rows] the index set each half holds (backend memory) */
    bool row_cache;
    int32_t **stage_idx;       /* host array [n_groups] of backend pointers */
    int *stage_half;           /* [max_slots][n_groups] the half a slot's current rows are in */
    int *stage_n;              /* [max_slots][n_groups][2] rows each half holds; 0 after a reset */
    uint64_t *row_hits;        /* [n_groups] backend memory: rows the cache supplied */
    uint64_t *rows_staged;     /* [n_groups] host: rows gathered through staging */
    okv_event **ev_select, **ev_gather; /* [n_groups] */
    /* staged prefill: group g's chunk rows stored (compute stream), and their copy to the bank
     * issued on the copy stream [n_groups] */
    okv_event **ev_chunk, **ev_bank;
    /* window queries of filter layers (uniform / exp selectors):
     * win_q[(slot * n_groups + g) * window + i] -> [q_dim] f32, ring by position; win_prompt
     * keeps each slot's ring as prefill left it (the prompt's last queries) for a rewind */
    float *win_q, *win_prompt;
    int window;
    float *x;                  /* [max_tok][dim] hidden states */
    float *xn, *q, *kbuf, *vbuf, *att, *gate, *up, *tmp; /* [max_tok][...] scratch */
    float *logits;             /* [max_tok][n_vocab] */
    float *logits_sel;         /* [n_heads][max_ctx] */
    float *logits_win;         /* [window][n_heads][max_ctx] when a window selector is used */
    int32_t *ids, *pos, *rows, *iota; /* [max_tok] */

    /* ---- host ---- */
    int n_groups;
    int *sel_n;                /* [max_slots][n_groups] index counts */
    int32_t *sel_host;         /* [max_slots][n_groups][max_ctx] mirror, for groups that cross
                                * the range's end (filled by engine_get_selection); NULL if none */
    float *logits_host;        /* [max_tok][n_vocab] */
    float *probe_host;         /* [n_heads][max_ctx] when a probe is set */
    int32_t *pos_host, *rows_host; /* [max_tok] */
    float *synth_host;             /* [2][max_tok][kv_dim] generated K, V rows (fill=synthetic) */

    uint64_t weight_bytes; /* of the layer range, read once per decode step */
    /* Calibration probe: when set, every non-sparse layer reports its decode logits over the
     * prompt, [n_heads][n], for each slot. */
    okv_probe_fn probe;
    void *probe_ctx;
    okv_metrics metrics;
} okv_engine;

/* Sizes everything for max_slots sequences of up to rc->max_context_len tokens in one backend
 * arena; nothing is allocated afterwards. Short memory is OKV_ERR_NOMEM naming the bytes needed.
 * On failure the engine is freed (engine_free is still safe on it). */
int engine_init(okv_engine *e, const okv_model *m, const okv_run_config *rc, int layer_begin,
                int layer_end, int max_slots);
void engine_free(okv_engine *e);

/* Starts a sequence in a slot with a prompt of n_prompt tokens (its selection from the run
 * config: policy_selection). */
int engine_seq_start(okv_engine *e, int slot, int n_prompt);
void engine_seq_end(okv_engine *e, int slot);
/* Overrides the slot's selection (k >= n_prompt: every prompt row, i.e. dense attention). The
 * selector must be a window selector exactly when the run config's is, since the engine keeps
 * window queries only then; with staged gathers k may not exceed the staging rows. OKV_ERR_USAGE
 * otherwise. */
int engine_seq_set_selection(okv_engine *e, int slot, const okv_selection *sel);
/* Forgets generated tokens back to n_pos (>= the prompt length), so several decode variants can
 * share one prefill. With a window selector only n_pos = the prompt length can be restored (the
 * ring of window queries is put back as prefill left it). */
void engine_seq_rewind(okv_engine *e, int slot, int n_pos);

/* The engine's hidden states, [max_tok][dim] in backend memory (be.mem says where). */
float *engine_x(okv_engine *e);
/* Hidden states from host memory (a received boundary payload): rows [0, n). A stage sends
 * engine_x itself, with be.mem telling the transport where it lives. */
void engine_x_load(okv_engine *e, const float *x, int n);
/* Token embedding (first stage) of host ids into the hidden states. */
void engine_embed(okv_engine *e, const int32_t *ids, int n);
/* Runs this range's layers over n_tok prompt tokens of one slot at positions pos0.. (chunked
 * prefill, full causal attention) on the hidden states. n_tok <= max_tok. */
int engine_prefill(okv_engine *e, int slot, int pos0, int n_tok);
/* The K and V rows fill=synthetic gives positions pos0 .. pos0+n-1 of a layer ([n][kv_dim] each,
 * before any rounding to the KV type): uniform values of variance 1 from the run's seed. */
void engine_synth_rows(uint64_t seed, int layer, int pos0, int n, int kv_dim, float *k, float *v);
/* One decode step: one token for each listed slot at its next position, on hidden-state rows
 * [0, n). Filter layers of this range select the index sets of their groups. */
int engine_decode(okv_engine *e, const int *slots, int n);
/* Final norm and output head (last stage) of hidden-state rows [row0, row0 + n): the logits,
 * [n][n_vocab] in host memory, valid until the next call. */
const float *engine_head(okv_engine *e, int row0, int n);

/* The index set of a group for a slot in host memory (pipeline boundaries forward it). */
int engine_get_selection(okv_engine *e, int slot, int group, const int32_t **idx);
/* Sets a group's index set from host memory (received from the previous stage). */
void engine_set_selection(okv_engine *e, int slot, int group, const int32_t *idx, int n);

/* Installs a calibration probe (allocates its host buffer now, not per step). */
int engine_set_probe(okv_engine *e, okv_probe_fn fn, void *ctx);

void engine_metrics_reset(okv_engine *e);
/* d = b - a, counter by counter (b taken after a). */
void engine_metrics_diff(okv_metrics *d, const okv_metrics *a, const okv_metrics *b);
/* a += b, counter by counter. */
void engine_metrics_add(okv_metrics *a, const okv_metrics *b);
/* The row cache's counts so far, over every group of the range: rows gathered through staging
 * and those the cache supplied, and the bytes it kept off the bus (waits for the copy stream). */
void engine_row_cache_stats(okv_engine *e, uint64_t *rows, uint64_t *hits, uint64_t *bytes_saved);
/* Bytes held for max_slots sequences of ctx prompt + gen generated tokens, counted as the
 * planner counts them (policy_kv_bytes): the range's weights (with the embedding and the head
 * where the range holds them, a tied head once), the KV cache (sparse layers' tails only, under
 * real_offload) and the bank. */
void engine_memory(const okv_engine *e, int64_t ctx, int64_t gen, uint64_t *weights,
                   uint64_t *kv_cache, uint64_t *bank);

#endif
