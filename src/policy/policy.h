/* policy.h — layer roles from the run config (DESIGN §4) and the per-step selection of prompt
 * tokens at a filter layer. Tested by tests/unit/test_policy.c with hand-made queries and keys. */
#ifndef OKV_POLICY_H
#define OKV_POLICY_H

#include "../config.h"

#include <stdint.h>



typedef enum okv_role {
    ROLE_DENSE = 0,  /* before the first filter layer, or every layer under policy=dense */
    ROLE_FILTER = 1, /* full attention; picks the index set of its group */
    ROLE_WAIT = 2,   /* the W dense layers after a filter layer */
    ROLE_SPARSE = 3, /* selected prompt rows + generated tail */
} okv_role;

typedef struct okv_layer_plan {
    int n_layers;
    okv_role *role; /* [n_layers] */
    int *group;     /* [n_layers] index of the governing filter layer in filters, -1 before the first */
    int n_groups;   /* = number of filter layers */
    const int *filters;
} okv_layer_plan;

int policy_plan_init(okv_layer_plan *p, const okv_run_config *c, int n_layers);
void policy_plan_free(okv_layer_plan *p);
const char *policy_role_name(okv_role r);

/* Adds to *kv and *bank the bytes a layer of role r holds for `batch` sequences of ctx prompt
 * and gen generated tokens (row: bytes of one token's K and V). Under real_offload a sparse
 * layer keeps its prompt in the host Context Bank and only its generated tail in the KV tier;
 * every other layer keeps all ctx + gen rows. Buffers are reserved for the run's capacity, but
 * host memory is committed as rows are written and device memory is sized by the same rows, so
 * this is what a run of that shape holds: the one accounting behind plan's table, the start-up
 * line and bench's memory columns. */
void policy_kv_bytes(okv_role r, int real_offload, uint64_t batch, uint64_t ctx, uint64_t gen,
                     uint64_t row, uint64_t *kv, uint64_t *bank);

/* Scratch for one selection over up to max_n candidates; sized once at start-up. */
typedef struct okv_selector_scratch {
    float *score;  /* [max_n] */
    float *tmp_f;  /* [max_n] */
    int32_t *tmp_i;/* [max_n] */
    int max_n;
} okv_selector_scratch;

int selector_scratch_init(okv_selector_scratch *s, int max_n);
void selector_scratch_free(okv_selector_scratch *s);

/* Scores of the n prompt candidates from the current query's logits [n_heads][n] (selector
 * `last`: max over heads; `softmax_before_last`: per-head softmax, then max). For the window
 * selectors, window_logits holds [n_win][n_heads][n] (index 0 = current query, then older ones)
 * and ages[i] their distance from the current step; they sum per-head-softmax-then-max scores,
 * uniformly or with weight 2^-age. */
void selector_scores(okv_selector sel, const float *logits, int n_heads, int n,
                     const float *window_logits, const int *ages, int n_win, float *score);

/* How one sequence picks its index set: the run config's settings, which a caller (eval's
 * variants) may change per sequence without touching the config the engine was built from. */
typedef struct okv_selection {
    int k;                 /* budget in prompt tokens */
    okv_selector selector; /* a window selector only where the engine keeps window queries */
    int keep_first, keep_last;
} okv_selection;

/* The selection the run config gives a prompt of n_prompt tokens (k from config_budget). */
okv_selection policy_selection(const okv_run_config *c, int n_prompt);

/* The top of precomputed scores (calibration): keep_first / keep_last always in it, the rest by
 * top score; k' = min(sel->k, n) entries, ascending, ties to the lower position. Returns k'. The
 * engine's selection, window tails included, is the backend's select op. */
int selector_pick(const okv_selection *sel, okv_selector_scratch *s, const float *score, int n,
                  int32_t *out);

#endif
