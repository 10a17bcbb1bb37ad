/* policy.c — layer roles from the run config and the selection of prompt tokens at filter
 * layers (DESIGN §4). Tested by tests/unit/test_policy.c. */
#include "policy.h"

#include "../../kernels/backend.h"
#include "../common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *policy_role_name(okv_role r) {
    switch (r) {
    case ROLE_DENSE: return "dense";
    case ROLE_FILTER: return "filter";
    case ROLE_WAIT: return "wait";
    case ROLE_SPARSE: return "sparse";
    }
    return "?";
}

void policy_kv_bytes(okv_role r, int real_offload, uint64_t batch, uint64_t ctx, uint64_t gen,
                     uint64_t row, uint64_t *kv, uint64_t *bank) {
    if (r == ROLE_SPARSE && real_offload) {
        *bank += batch * ctx * row;
        *kv += batch * gen * row;
    } else {
        *kv += batch * (ctx + gen) * row;
    }
}

int policy_plan_init(okv_layer_plan *p, const okv_run_config *c, int n_layers) {
    memset(p, 0, sizeof *p);
    p->n_layers = n_layers;
    p->role = calloc((size_t)n_layers, sizeof *p->role);
    p->group = calloc((size_t)n_layers, sizeof *p->group);
    OKV_ASSERT(p->role && p->group);
    for (int l = 0; l < n_layers; l++) p->group[l] = -1;
    if (c->policy == POLICY_DENSE) return OKV_OK;
    for (int i = 0; i < c->n_filter_layers; i++) {
        int f = c->filter_layers[i];
        if (f < 0 || f >= n_layers || (i > 0 && f <= c->filter_layers[i - 1]))
            return okv_fail(OKV_ERR_USAGE,
                            "do_select_layers entry %d is invalid for a model of %d layers "
                            "(filter layers must be ascending and below %d)",
                            f, n_layers, n_layers);
    }
    p->n_groups = c->n_filter_layers;
    p->filters = c->filter_layers;
    for (int i = 0; i < c->n_filter_layers; i++) {
        int f = c->filter_layers[i];
        int end = i + 1 < c->n_filter_layers ? c->filter_layers[i + 1] : n_layers;
        p->role[f] = ROLE_FILTER;
        p->group[f] = i;
        for (int l = f + 1; l < end; l++) {
            /* l - f, not f + W: W may be as large as INT_MAX (every layer waits). */
            p->role[l] = l - f <= c->num_wait_load_layers ? ROLE_WAIT : ROLE_SPARSE;
            p->group[l] = i;
        }
    }
    return OKV_OK;
}

void policy_plan_free(okv_layer_plan *p) {
    free(p->role);
    free(p->group);
    memset(p, 0, sizeof *p);
}

int selector_scratch_init(okv_selector_scratch *s, int max_n) {
    memset(s, 0, sizeof *s);
    s->max_n = max_n;
    s->score = okv_alloc(sizeof(float) * (size_t)max_n);
    s->tmp_f = okv_alloc(sizeof(float) * (size_t)max_n);
    s->tmp_i = okv_alloc(sizeof(int32_t) * (size_t)max_n);
    if (!s->score || !s->tmp_f || !s->tmp_i) {
        selector_scratch_free(s);
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate selection scratch for %d tokens", max_n);
    }
    return OKV_OK;
}

void selector_scratch_free(okv_selector_scratch *s) {
    okv_free_mem(s->score);
    okv_free_mem(s->tmp_f);
    okv_free_mem(s->tmp_i);
    memset(s, 0, sizeof *s);
}

static okv_select_args select_args(okv_selector sel, int k, int keep_first, int keep_last) {
    static const okv_score_kind kinds[] = {
        [SELECTOR_LAST] = OKV_SCORE_MAX,
        [SELECTOR_SOFTMAX_BEFORE_LAST] = OKV_SCORE_SOFTMAX_MAX,
        [SELECTOR_UNIFORM] = OKV_SCORE_WINDOW_SUM,
        [SELECTOR_EXP] = OKV_SCORE_WINDOW_EXP,
    };
    return (okv_select_args){.kind = kinds[sel], .k = k, .keep_first = keep_first,
                             .keep_last = keep_last};
}

void selector_scores(okv_selector sel, const float *logits, int n_heads, int n,
                     const float *window_logits, const int *ages, int n_win, float *score) {
    OKV_ASSERT(n_win <= OKV_SELECT_MAX_WINDOW);
    okv_select_args a = select_args(sel, 0, 0, 0);
    a.window_logits = window_logits;
    a.n_win = n_win;
    for (int i = 0; i < n_win; i++) a.ages[i] = ages[i];
    okv_select_scores_ref(score, logits, n_heads, n, &a);
}

okv_selection policy_selection(const okv_run_config *c, int n_prompt) {
    return (okv_selection){.k = config_budget(c, n_prompt), .selector = c->selector,
                           .keep_first = c->keep_first, .keep_last = c->keep_last};
}

int selector_pick(const okv_selection *sel, okv_selector_scratch *s, const float *score, int n,
                  int32_t *out) {
    OKV_ASSERT(n <= s->max_n);
    int k = sel->k < n ? sel->k : n;
    if (k <= 0) return 0;
    float *sc = s->score;
    if (sc != score) memcpy(sc, score, sizeof(float) * (size_t)n);
    const okv_select_args a = select_args(SELECTOR_LAST, k, sel->keep_first, sel->keep_last);
    okv_select_force(sc, n, &a);
    return okv_topk(out, sc, n, k, s->tmp_f, s->tmp_i);
}
