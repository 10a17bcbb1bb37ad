/* eval.h — `omnikv eval`: a grid of context lengths x depths x decode variants (dense, or OmniKV
 * budgets) over a built-in task. Each sample is prefilled once (prefill is always dense) and
 * every variant decodes from that same state, so variants differ only in what they select.
 * Per-sample JSONL plus a summary table. Tested by tests/model/test_passkey_quality.sh. */
#ifndef OKV_EVAL_H
#define OKV_EVAL_H

#include "../config.h"
#include "../model/model.h"

#include <stdio.h>

#define EVAL_MAX 32

typedef struct eval_variant {
    char name[32];  /* "dense", "k=2048", "k=0.067" */
    bool dense;
    double budget;  /* num_of_selected_tokens semantics */
} eval_variant;

typedef struct eval_opts {
    const char *task;          /* "passkey" */
    int ctx[EVAL_MAX];
    int n_ctx;
    double depth[EVAL_MAX];    /* < 0: random per sample */
    int n_depth;
    eval_variant variant[EVAL_MAX];
    int n_variant;
    int count;                 /* samples per (ctx, depth) */
    uint64_t seed;
} eval_opts;

/* Parses "dense,2048,0.067" into variants. */
int eval_parse_variants(eval_opts *o, const char *list);

/* Runs the grid; one JSON line per (sample, variant) to samples (flushed), and the accuracy table
 * (ctx x variant) to summary. rc supplies filter layers, W, selector and engine settings. */
int eval_run(const okv_model *m, const okv_run_config *rc, const eval_opts *o, FILE *samples,
             FILE *summary);

#endif
