/* eval.h — `omnikv eval`: contexts x depths x decode variants (dense, OmniKV budgets) over a task;
 * each sample is prefilled once and every variant decodes from that state. Tested by
 * tests/e2e/test_eval.sh and tests/model/test_{passkey,needle}_quality.sh. */
#ifndef OKV_EVAL_H
#define OKV_EVAL_H

#include "../config.h"
#include "../model/model.h"

#include <stdio.h>

#define EVAL_MAX 32

typedef struct eval_variant {
    char name[128]; /* "dense", "k=2048", "k=0.067", "k=0.067/keep_last=64" */
    bool dense;
    double budget;  /* num_of_selected_tokens semantics */
    /* Per-variant selection settings ("/KEY=VALUE" after the budget); -1 / unset: the run's */
    int selector;   /* okv_selector: last or softmax_before_last, or -1 */
    int keep_first, keep_last;
    int min_selected; /* min_selected_tokens, or -1 */
} eval_variant;

typedef struct eval_opts {
    const char *task;          /* a generated task's name, or longbench:FILE / infinitebench:FILE */
    int ctx[EVAL_MAX];         /* prompt lengths; for files, the truncation lengths */
    int n_ctx;
    double depth[EVAL_MAX];    /* needle depths; none: drawn per sample. Unused by files. */
    int n_depth;
    eval_variant variant[EVAL_MAX];
    int n_variant;
    int count;                 /* samples per (ctx, depth); for files the first `count` records;
                                  0: 10 generated samples, or every record of a file */
    uint64_t seed;
    int chat;                  /* 1 on, 0 off, -1 the task's default (see eval_chat_default) */
    int max_new;               /* > 0: caps every sample's max_new_tokens */
    bool resume;               /* samples (opened "a+") holds an earlier run of this grid */
} eval_opts;

/* Parses "dense,2048,omnikv:0.067,0.067/keep_last=64" into variants: `dense` attends to the
 * whole prompt, a number (or omnikv:NUMBER) is an OmniKV budget. A budget may carry
 * /selector_cls=last|softmax_before_last, /keep_first=N, /keep_last=N and /min_selected_tokens=N,
 * which then hold for
 * that variant's decode only (a sweep of selection settings from one prefill per sample). */
int eval_parse_variants(eval_opts *o, const char *list);

/* Whether a task uses the chat template unless told: generated tasks are plain completions
 * (SmolLM2-135M-Instruct answers them better without it: see tests/model/); benchmark files follow
 * LongBench's rule of templating every dataset but the few-shot and code ones. */
bool eval_chat_default(const char *task);

/* Runs the grid; one JSON line per (sample, variant) to samples (flushed), and the score tables
 * (ctx x variant, and by depth when several) to summary. rc supplies filter layers, W, selector
 * and engine settings. A sample's seed depends on (seed, ctx, depth slot, index) alone, so any
 * subset of the grid makes the same samples. With resume, the samples whose every variant is
 * already in the file are kept (the file is rewritten with them alone), counted in the tables and
 * not run again; without resume, samples (opened for appending) is emptied once the grid is
 * validated, so a refused grid leaves the file as it was. */
int eval_run(const okv_model *m, const okv_run_config *rc, const eval_opts *o, FILE *samples,
             FILE *summary);

#endif
