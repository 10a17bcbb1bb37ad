/* costs.h — what a decode step costs on this machine, for the stage planner and `omnikv plan`:
 * the seconds a matmul takes per weight byte of each type the model uses (timed on the model's
 * own tensors, or on synthetic ones of a shape), and the seconds decode attention takes per KV
 * row (timed on a synthetic cache of the model's head shape, larger than the caches). Bytes
 * alone mislead on a CPU, where a q4_1 byte costs more arithmetic than a q8_0 one and attention
 * is not a memory copy. Tested by tests/unit/test_planner.c and tests/e2e/test_plan_bench.sh. */
#ifndef OKV_COSTS_H
#define OKV_COSTS_H

#include "../kernels/backend.h"
#include "../src/model/model.h"
#include "planner.h"

typedef struct pipe_rates {
    double s_per_byte[OKV_TYPE_COUNT]; /* matmul, step_batch tokens; 0 where not measured */
    double s_per_row;                  /* decode attention, one sequence */
    int n_threads, step_batch;
} pipe_rates;

/* Times the kernels with a CPU backend of n_threads for steps of step_batch tokens. With
 * m->layers set (a loaded model, tensor data mapped) the largest tensor of every weight type in
 * the layers and the output head is timed; otherwise (a shape) a synthetic [ffn][dim] tensor of
 * type wtype. Takes about 0.1-1 s. Returns OKV_OK or OKV_ERR_NOMEM. */
int pipe_rates_measure(const okv_model *m, okv_type wtype, okv_type kv_type, int step_batch,
                       int n_threads, pipe_rates *r);

/* Sets cm's measured costs from r: layer_s[l] (the caller's array of cm->n_layers) receives
 * layer l's matmul seconds per step, from its tensors, or for a shape (m->layers NULL) from
 * cm->weight_bytes[l] at wtype's rate; then cm->matmul_s, head_s and row_s are set. */
void pipe_costs_apply(const pipe_rates *r, const okv_model *m, okv_type wtype, double *layer_s,
                      pipe_cost_model *cm);
/* "matmul q4_1 7.4 GB/s q8_0 11.0 GB/s, attention 104.1 ns per KV row" */
void pipe_rates_describe(const pipe_rates *r, char *buf, size_t cap);

/* A cost model with the arrays it points into: the one builder behind a pipeline's start-up
 * (pipeline/stage.c) and `omnikv plan`, so both cost a model alike. */
typedef struct pipe_costs {
    pipe_cost_model cm;
    okv_layer_plan lp;      /* roles and groups; lp.filters points into the run config */
    uint64_t *weight_bytes; /* [n_layers] */
    double *layer_s;        /* [n_layers] matmul seconds per step; NULL when costed in bytes */
} pipe_costs;

/* The cost of decoding `batch` sequences of ctx prompt and gen generated tokens in n_mb
 * micro-batches under rc's policy, budget and kv_type, for m: a loaded model (m->layers set: its
 * tensors' bytes) or a shape (m->layers NULL: m->cfg with every weight in wtype, laid out as
 * genmodel_write does). With rates non-NULL stages cost the seconds the rates give, else the
 * bytes they read. rc must outlive c. Returns OKV_OK or the policy's OKV_ERR_USAGE. */
int pipe_costs_init(pipe_costs *c, const okv_model *m, okv_type wtype, const okv_run_config *rc,
                    int batch, int n_mb, int64_t ctx, int64_t gen, const pipe_rates *rates);
void pipe_costs_free(pipe_costs *c);

#endif
