/* runner.h — serves a list of requests with continuous batching: admission (tokenize, chat
 * template, length check), chunked prefill, decode steps per micro-batch, stop conditions,
 * detokenisation and one result per request. The model forward is behind okv_forward, an
 * asynchronous interface: the runner queues prompt chunks and decode steps and collects sampled
 * tokens as they finish, so a pipeline (pipeline/stage.h) keeps several micro-batches in flight
 * while forward_local runs every layer on this rank. Both sample through forward_sample.
 * Tested by tests/e2e/test_run_batch.sh and tests/mpi/test_pipeline.sh. */
#ifndef OKV_RUNNER_H
#define OKV_RUNNER_H

#include "../io/requests.h"
#include "engine.h"
#include "sampler.h"

#include <stdbool.h>
#include <stdint.h>

/* How to sample one sequence's next token; travels with the step to wherever the logits are.
 * The draw is counter-based (rng_seed_step(seed, n_gen)), so no generator state moves. */
typedef struct okv_sample_req {
    int32_t slot;
    int32_t n_gen; /* tokens generated before this one */
    okv_sample_params sp;
    uint64_t seed;
} okv_sample_req;

/* A sampled token. */
typedef struct okv_sampled {
    int32_t slot;
    int32_t token;
    uint64_t digest; /* FNV-1a over the bits of the logits row (0 unless asked for) */
} okv_sampled;

/* One finished unit of queued work. */
typedef struct okv_done {
    int mb;                 /* micro-batch */
    bool first;             /* the first token of a prefilled sequence; else a decode step */
    int n;                  /* tokens in out */
    const okv_sampled *out; /* [n], valid until the next poll */
    okv_metrics delta;      /* engine counters the unit added on every stage (decode steps) */
} okv_done;

/* What the runner needs from a model forward. Slots are 0..max_slots-1; slot s belongs to
 * micro-batch s % n_mb. Work is queued and finishes in any order across micro-batches. */
typedef struct okv_forward {
    void *ctx;
    int max_slots;
    int max_ctx; /* tokens per sequence, prompt + generated */
    int max_tok; /* most tokens one prefill call takes */
    int n_vocab;
    int n_mb;    /* micro-batches the runner keeps in flight (>= 1) */
    int (*seq_start)(void *ctx, int slot, int n_prompt, int *k);
    void (*seq_end)(void *ctx, int slot);
    /* Queues prompt tokens ids[0..n) of a slot at positions pos0..pos0+n-1 (n <= max_tok). With
     * last non-NULL this is the last chunk: its final row's logits are sampled as last says and
     * the token comes back from poll as a `first` unit. */
    int (*prefill)(void *ctx, int mb, int slot, const int32_t *ids, int pos0, int n,
                   const okv_sample_req *last);
    /* Queues one decode step of micro-batch mb: token ids[i] at the next position of
     * seqs[i].slot; the sampled tokens come back from poll. */
    int (*decode)(void *ctx, int mb, const okv_sample_req *seqs, const int32_t *ids, int n);
    /* A finished unit into *d (*got = true), waiting for one when wait is set. */
    int (*poll)(void *ctx, bool wait, okv_done *d, bool *got);
} okv_forward;

/* Samples q's token from a logits row of n_logits entries with a sampler over its first
 * s->n_vocab ids (the tokenizer's; the head may have padding rows). With digest set, out->digest
 * hashes the whole row. Every forward samples through this one function. */
void forward_sample(okv_sampler *s, const float *logits, int n_logits, const okv_sample_req *q,
                    bool digest, okv_sampled *out);
/* FNV-1a over 32-bit words, continuing from h (start with OKV_FNV_OFFSET). */
#define OKV_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t okv_fnv1a32(uint64_t h, const void *words, size_t n_words);

/* The forward of a whole model on this rank (layer range = all layers, embed and head here),
 * with the run config's micro_batches (1 when 0). */
int forward_local_init(okv_forward *f, okv_engine *e);
void forward_local_free(okv_forward *f);

/* Receives a request's text as it is generated: each call passes the next bytes that no stop
 * string can cut any more; the request's last bytes come before its result reaches the sink. */
typedef int (*okv_text_stream)(void *ctx, const okv_request *req, const char *text, size_t n);

typedef struct okv_runner_opts {
    bool chat;         /* apply the chat template to plain prompts too */
    double progress_s; /* seconds between decode progress lines */
    okv_text_stream stream; /* NULL: text only in the results */
    void *stream_ctx;
} okv_runner_opts;

typedef int (*okv_result_sink)(void *ctx, const okv_result *r);

/* Serves every request without .skip; each ends as exactly one call of sink (a result or an
 * error record). Returns OKV_OK when the batch ran (*n_errors counts error records), or the
 * first failure that stops serving altogether (the forward's or the sink's). */
int runner_serve(const okv_forward *fw, const okv_tokenizer *tok, const okv_run_config *rc,
                 const okv_runner_opts *opts, okv_request_list *reqs, okv_result_sink sink,
                 void *sink_ctx, int *n_errors);

#endif
