/* calibrate.h — filter-layer calibration: run full attention over calibration prompts, record
 * every layer's top-k at several decode steps, measure for every layer pair (l1 < l2) the share
 * of l2's attention mass that l1's top-k covers, and choose filter layers. Replaces hand-made
 * layer lists. Tested by tests/unit/test_calibrate.c on a model with planted layer groups. */
#ifndef OKV_CALIBRATE_H
#define OKV_CALIBRATE_H

#include "../config.h"
#include "../model/model.h"

typedef struct calib_opts {
    int n_prompts;   /* calibration prompts (passkey haystacks at random depths) */
    int ctx;         /* tokens per prompt */
    int steps;       /* decode steps recorded per prompt */
    double budget;   /* k as in num_of_selected_tokens (count or fraction) */
    int n_filters;   /* filter layers to propose */
    int wait;        /* W of the proposed config */
    double dense_cost; /* cost of a dense layer before the first filter, in lost-mass units */
    uint64_t seed;
    int threads;
} calib_opts;

typedef struct calib_result {
    int n_layers;
    double *cover;   /* [n_layers][n_layers]: cover[l1][l2] = mean share of l2's mass in l1's top-k */
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
 * runs full attention: a speed cost, in units of lost attention mass), plus 1 - cover[f][l] for
 * each sparse layer l governed by filter f. Returns the loss (infinite when n filters cannot fit). */
double calib_choose(const double *cover, int n_layers, int n_filters, int wait, double dense_cost,
                    int *filters);

/* Outputs: the config fragment (JSON), the matrix as CSV, and as a PNG heat map. */
int calib_write_fragment(const calib_result *r, const calib_opts *o, const char *path);
int calib_write_csv(const calib_result *r, const char *path);
int calib_write_png(const calib_result *r, const char *path);

#endif
