/* runner.h — serves a list of requests with continuous batching: admission (tokenize, chat
 * template, length check), chunked prefill, batched decode steps, sampling, stop conditions,
 * detokenisation and one result per request. The model forward is behind okv_forward so the
 * pipeline can reuse all of this with its own stages; forward_local runs every layer on this
 * rank with the engine. Tested by tests/e2e/test_run_batch.sh. */
#ifndef OKV_RUNNER_H
#define OKV_RUNNER_H

#include "../io/requests.h"
#include "engine.h"

#include <stdbool.h>
#include <stdint.h>

/* What the runner needs from a model forward. Slots are 0..max_slots-1. */
typedef struct okv_forward {
    void *ctx;
    int max_slots;
    int max_ctx; /* tokens per sequence, prompt + generated */
    int max_tok; /* most tokens one prefill call takes */
    int n_vocab;
    int (*seq_start)(void *ctx, int slot, int n_prompt, int *k);
    void (*seq_end)(void *ctx, int slot);
    /* Prompt tokens ids[0..n) of a slot at positions pos0..pos0+n-1 (n <= max_tok); when
     * logits is non-NULL, the logits of the last one: [n_vocab]. */
    int (*prefill)(void *ctx, int slot, const int32_t *ids, int pos0, int n, float *logits);
    /* One decode step: token ids[i] at the next position of slots[i]; logits [n][n_vocab]. */
    int (*decode)(void *ctx, const int *slots, const int32_t *ids, int n, float *logits);
    /* The engine counters accumulated so far. */
    void (*metrics)(void *ctx, okv_metrics *out);
} okv_forward;

/* The forward of a whole model on this rank (layer range = all layers, embed and head here). */
int forward_local_init(okv_forward *f, okv_engine *e);
void forward_local_free(okv_forward *f);

typedef struct okv_runner_opts {
    bool chat;         /* apply the chat template to plain prompts too */
    double progress_s; /* seconds between decode progress lines */
} okv_runner_opts;

typedef int (*okv_result_sink)(void *ctx, const okv_result *r);

/* Serves every request without .skip; each ends as exactly one call of sink (a result or an
 * error record). Returns OKV_OK when the batch ran (*n_errors counts error records), or the
 * first failure that stops serving altogether (the forward's or the sink's). */
int runner_serve(const okv_forward *fw, const okv_tokenizer *tok, const okv_run_config *rc,
                 const okv_runner_opts *opts, okv_request_list *reqs, okv_result_sink sink,
                 void *sink_ctx, int *n_errors);

#endif
