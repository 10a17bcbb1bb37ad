/* calibrate.h — filter-layer calibration: run full attention over calibration prompts, record
 * every layer's top-k at several decode steps, measure for every layer pair (l1 < l2) the share
 * of l2's attention mass (all of it, or only the mass on the prompt's answer tokens) that l1's
 * top-k covers, and choose filter layers. Replaces hand-made layer lists. Tested by
 * tests/unit/test_calibrate.c on a model with planted layer groups and on hand-made matrices. */
#ifndef OKV_CALIBRATE_H
#define OKV_CALIBRATE_H

#include "../config.h"
#include "../model/model.h"

/* What a sparse layer loses when its filter's top-k misses a token.
 * MASS: the token's share of the layer's attention, every prompt token alike.
 * NEEDLE: only the attention on the prompt's answer tokens (the needle) counts, and each sparse
 * layer weighs by how much of it it pays to the needle. Total mass is dominated by the first and
 * the most recent tokens, which every layer finds; what retrieval loses is the small mass on the
 * needle, which early layers do not see at long context. */
typedef enum calib_objective { CALIB_OBJECTIVE_MASS = 0, CALIB_OBJECTIVE_NEEDLE } calib_objective;

typedef struct calib_opts {
    const char *task; /* generated task of the prompts (tasks.h; default passkey) */
    calib_objective objective;
    int n_prompts;   /* calibration prompts (needles at depths (i + 0.5) / n_prompts) */
    int ctx;         /* tokens per prompt */
    int steps;       /* decode steps recorded per prompt */
    double budget;   /* k as in num_of_selected_tokens (count or fraction) */
    int min_selected; /* floor on k, as min_selected_tokens (0: none) */
    int n_filters;   /* filter layers to propose */
    int wait;        /* W of the proposed config */
    double dense_cost; /* cost of a dense layer before the first filter, in lost-mass units */
    uint64_t seed;
    int threads;
} calib_opts;

typedef struct calib_result {
    int n_layers;
    double *cover;   /* [n_layers][n_layers]: cover[l1][l2] = share of l2's (needle) mass in l1's
                        top-k, over all recorded steps */
    double *weight;  /* [n_layers]: a sparse layer's weight in the loss: 1 for MASS; for NEEDLE its
                        needle mass over the mean of all layers' */
    int n_filters;
    int filters[OKV_MAX_FILTERS];
    double loss;     /* of the chosen filters (see calib_choose) */
    int samples;     /* (prompt, step) pairs averaged */
} calib_result;

/* Runs the model densely over the calibration prompts and fills r (including the choice). */
int calib_run(const okv_model *m, const calib_opts *o, calib_result *r);
void calib_result_free(calib_result *r);

/* Exact choice (dynamic programming) of n filter layers. Each filter must govern at least one
 * sparse layer (after its W wait layers). With n and W fixed, the full-attention layers they
 * imply are a constant, so the loss is: dense_cost for each layer before the first filter (it
 * runs full attention: a speed cost, in units of lost attention mass), plus
 * weight[l] * (1 - cover[f][l]) for each sparse layer l governed by filter f (weight NULL: 1).
 * Returns the loss (infinite when n filters cannot fit). */
double calib_choose(const double *cover, const double *weight, int n_layers, int n_filters, int wait,
                    double dense_cost, int *filters);

/* Marks in mark[0..n) the positions of ids where one of the sample's answers occurs as tokens
 * (as encoded alone, and after a space). Returns how many positions were marked. */
int calib_mark_answers(const okv_tokenizer *tok, const char *const *answers, int n_answers,
                       const int32_t *ids, int n, bool *mark);

/* Outputs: the config fragment (JSON), the matrix as CSV, and as a PNG heat map. */
int calib_write_fragment(const calib_result *r, const calib_opts *o, const char *path);
int calib_write_csv(const calib_result *r, const char *path);
int calib_write_png(const calib_result *r, const char *path);

#endif
