/* engine.c — forward pass of a layer range with OmniKV roles (DESIGN §3.2, §4): chunked prefill
 * with full causal attention; decode steps where filter layers pick each slot's index set from
 * the logits their attention computes anyway, and sparse layers read only those bank rows plus
 * the generated tail. Tested by tests/model/ (vs llama.cpp) and tests/unit/test_omnikv.c. */
#include "engine.h"

#include "../common.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static size_t kv_esz(const okv_engine *e) { return okv_type_row_bytes(e->rc->kv_type, 1); }

static bool layer_in_bank(const okv_engine *e, int l) {
    return e->plan.role[l] == ROLE_SPARSE && e->rc->real_offload;
}

/* Cache rows of layer l for a slot: [max_ctx][kv_dim]. */
static uint8_t *cache_rows(const okv_engine *e, void *const *arr, int l, int slot) {
    return (uint8_t *)arr[l] + (size_t)slot * e->max_ctx * e->kv_dim * kv_esz(e);
}

static okv_kv_view cache_view(const okv_engine *e, void *const *ks, void *const *vs, int l,
                              int slot, int first_row, int n, const int32_t *idx) {
    size_t off = (size_t)first_row * e->kv_dim * kv_esz(e);
    okv_kv_view v = {
        .type = e->rc->kv_type,
        .k = cache_rows(e, ks, l, slot) + off,
        .v = cache_rows(e, vs, l, slot) + off,
        .stride = e->kv_dim,
        .idx = idx,
        .n = n,
    };
    return v;
}

static void *alloc_lazy(size_t bytes, size_t *total) {
    *total += bytes;
    return calloc(1, bytes ? bytes : 1); /* large callocs are fresh pages: resident when written */
}

int engine_init(okv_engine *e, const okv_model *m, const okv_run_config *rc, int layer_begin,
                int layer_end, int max_slots) {
    memset(e, 0, sizeof *e);
    const okv_model_config *c = &m->cfg;
    e->model = m;
    e->rc = rc;
    e->layer_begin = layer_begin;
    e->layer_end = layer_end;
    e->max_slots = max_slots;
    e->max_ctx = rc->max_context_len > 0 ? rc->max_context_len : c->ctx_train;
    e->max_tok = OKV_MAX(rc->prefill_chunk, max_slots);
    e->kv_dim = c->n_kv_heads * c->head_dim;
    e->q_dim = c->n_heads * c->head_dim;
    e->shape = (okv_attn_shape){
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = m->rope_mscale * m->rope_mscale / sqrtf((float)c->head_dim),
    };
    e->weight_bytes = model_layer_bytes(m, layer_begin, layer_end);
    int st = policy_plan_init(&e->plan, rc, c->n_layers);
    if (st) return st;
    e->n_groups = e->plan.n_groups;
    int threads = rc->threads > 0 ? rc->threads : omp_get_num_procs();
    int max_in = OKV_MAX(OKV_MAX(c->dim, c->ffn_dim), e->q_dim);
    if ((st = okv_backend_cpu_init(&e->be, threads, e->max_tok, max_in)) ||
        (st = e->be.reserve(&e->be, e->shape, e->max_ctx)))
        return st;

    size_t total = 0, esz = kv_esz(e);
    size_t per_layer = (size_t)max_slots * e->max_ctx * e->kv_dim * esz;
    e->cache_k = calloc((size_t)c->n_layers, sizeof(void *));
    e->cache_v = calloc((size_t)c->n_layers, sizeof(void *));
    e->tail_k = calloc((size_t)c->n_layers, sizeof(void *));
    e->tail_v = calloc((size_t)c->n_layers, sizeof(void *));
    OKV_ASSERT(e->cache_k && e->cache_v && e->tail_k && e->tail_v);
    bool oom = false;
    for (int l = layer_begin; l < layer_end; l++) {
        void **k = layer_in_bank(e, l) ? e->tail_k : e->cache_k;
        void **v = layer_in_bank(e, l) ? e->tail_v : e->cache_v;
        k[l] = alloc_lazy(per_layer, &total);
        v[l] = alloc_lazy(per_layer, &total);
        oom |= !k[l] || !v[l];
    }
    if (oom) {
        int ctx = e->max_ctx;
        engine_free(e);
        return okv_fail(OKV_ERR_NOMEM,
                        "the KV cache needs %zu bytes for %d slot(s) of %d tokens and could not be "
                        "allocated; lower max_context_len or max_batch",
                        total, max_slots, ctx);
    }

    /* Bank groups: the sparse layers of each group that fall in this range. */
    if (e->n_groups > 0) {
        int *first = calloc((size_t)e->n_groups, sizeof(int));
        int *cnt = calloc((size_t)e->n_groups, sizeof(int));
        OKV_ASSERT(first && cnt);
        for (int l = layer_begin; l < layer_end; l++) {
            if (!layer_in_bank(e, l)) continue;
            int g = e->plan.group[l];
            if (cnt[g]++ == 0) first[g] = l;
        }
        st = bank_init(&e->bank, e->n_groups, first, cnt, e->kv_dim, rc->kv_type, max_slots,
                       e->max_ctx);
        free(first);
        free(cnt);
        if (st) {
            engine_free(e);
            return st;
        }
    }

    int T = e->max_tok;
    e->slots = calloc((size_t)max_slots, sizeof *e->slots);
    e->xn = okv_alloc(sizeof(float) * (size_t)T * c->dim);
    e->q = okv_alloc(sizeof(float) * (size_t)T * e->q_dim);
    e->kbuf = okv_alloc(sizeof(float) * (size_t)T * e->kv_dim);
    e->vbuf = okv_alloc(sizeof(float) * (size_t)T * e->kv_dim);
    e->att = okv_alloc(sizeof(float) * (size_t)T * e->q_dim);
    e->gate = okv_alloc(sizeof(float) * (size_t)T * c->ffn_dim);
    e->up = okv_alloc(sizeof(float) * (size_t)T * c->ffn_dim);
    e->tmp = okv_alloc(sizeof(float) * (size_t)T * c->dim);
    e->pos_buf = okv_alloc(sizeof(int32_t) * (size_t)T);
    e->rows_buf = okv_alloc(sizeof(int32_t) * (size_t)T);
    OKV_ASSERT(e->slots && e->xn && e->q && e->kbuf && e->vbuf && e->att && e->gate && e->up &&
               e->tmp && e->pos_buf && e->rows_buf);
    if (e->n_groups > 0) {
        size_t nsel = (size_t)max_slots * e->n_groups;
        e->sel = alloc_lazy(sizeof(int32_t) * nsel * e->max_ctx, &total);
        e->sel_n = calloc(nsel, sizeof(int));
        e->logits_sel = okv_alloc(sizeof(float) * (size_t)c->n_heads * e->max_ctx);
        OKV_ASSERT(e->sel && e->sel_n && e->logits_sel);
        if ((st = selector_scratch_init(&e->sel_scratch, e->max_ctx))) {
            engine_free(e);
            return st;
        }
        if (config_selector_is_window(rc->selector)) {
            e->window = rc->window_size;
            e->win_q = okv_alloc(sizeof(float) * nsel * e->window * e->q_dim);
            e->win_prompt = okv_alloc(sizeof(float) * nsel * e->window * e->q_dim);
            e->logits_win = alloc_lazy(sizeof(float) * (size_t)e->window * c->n_heads * e->max_ctx, &total);
            e->forced = okv_alloc(sizeof(int32_t) * (size_t)e->window);
            OKV_ASSERT(e->win_q && e->win_prompt && e->logits_win && e->forced);
        }
    }
    return OKV_OK;
}

void engine_free(okv_engine *e) {
    if (!e) return;
    if (e->be.free) e->be.free(&e->be);
    int n_layers = e->model ? e->model->cfg.n_layers : 0;
    for (int l = 0; l < n_layers; l++) {
        if (e->cache_k) free(e->cache_k[l]);
        if (e->cache_v) free(e->cache_v[l]);
        if (e->tail_k) free(e->tail_k[l]);
        if (e->tail_v) free(e->tail_v[l]);
    }
    free(e->cache_k);
    free(e->cache_v);
    free(e->tail_k);
    free(e->tail_v);
    bank_free(&e->bank);
    policy_plan_free(&e->plan);
    free(e->slots);
    okv_free_mem(e->xn);
    okv_free_mem(e->q);
    okv_free_mem(e->kbuf);
    okv_free_mem(e->vbuf);
    okv_free_mem(e->att);
    okv_free_mem(e->gate);
    okv_free_mem(e->up);
    okv_free_mem(e->tmp);
    okv_free_mem(e->pos_buf);
    okv_free_mem(e->rows_buf);
    free(e->sel);
    free(e->sel_n);
    okv_free_mem(e->logits_sel);
    free(e->logits_win);
    okv_free_mem(e->win_q);
    okv_free_mem(e->win_prompt);
    okv_free_mem(e->forced);
    selector_scratch_free(&e->sel_scratch);
    memset(e, 0, sizeof *e);
}

int engine_seq_start(okv_engine *e, int slot, int n_prompt) {
    OKV_ASSERT(slot >= 0 && slot < e->max_slots);
    if (n_prompt <= 0 || n_prompt >= e->max_ctx)
        return okv_fail(OKV_ERR_REQUEST,
                        "a prompt of %d tokens does not fit max_context_len %d; raise "
                        "max_context_len or shorten the prompt",
                        n_prompt, e->max_ctx);
    okv_slot *s = &e->slots[slot];
    s->active = true;
    s->n_prompt = n_prompt;
    s->n_pos = 0;
    s->sel = policy_selection(e->rc, n_prompt);
    for (int g = 0; g < e->n_groups; g++) e->sel_n[slot * e->n_groups + g] = 0;
    return OKV_OK;
}

void engine_seq_end(okv_engine *e, int slot) { e->slots[slot].active = false; }

int engine_seq_set_selection(okv_engine *e, int slot, const okv_selection *sel) {
    OKV_ASSERT(sel->k >= 0 && sel->keep_first >= 0 && sel->keep_last >= 0);
    if (config_selector_is_window(sel->selector) != config_selector_is_window(e->rc->selector))
        return okv_fail(OKV_ERR_USAGE, "selector_cls %s cannot replace the run's %s: a sequence's "
                        "selector is a window selector (uniform, exp) exactly when the run's is, "
                        "since the engine was built for one kind",
                        config_selector_name(sel->selector), config_selector_name(e->rc->selector));
    e->slots[slot].sel = *sel;
    return OKV_OK;
}

/* One slot's window rings, all groups: [n_groups][window][q_dim]. */
static size_t win_ring_floats(const okv_engine *e) { return (size_t)e->n_groups * e->window * e->q_dim; }

void engine_seq_rewind(okv_engine *e, int slot, int n_pos) {
    okv_slot *s = &e->slots[slot];
    OKV_ASSERT(n_pos >= s->n_prompt && n_pos <= s->n_pos);
    if (e->window && n_pos < s->n_pos) {
        /* Decoding overwrote ring entries of the prompt's last queries; put them back. */
        OKV_ASSERT(n_pos == s->n_prompt);
        memcpy(e->win_q + slot * win_ring_floats(e), e->win_prompt + slot * win_ring_floats(e),
               sizeof(float) * win_ring_floats(e));
    }
    s->n_pos = n_pos;
}

void engine_embed(okv_engine *e, const int32_t *ids, int n, float *x) {
    const okv_tensor *t = &e->model->tok_embd;
    OKV_ASSERT(t->data);
    e->be.embed(&e->be, x, t->data, t->type, ids, n, e->model->cfg.dim);
}

void engine_head(okv_engine *e, const float *x, int n, float *logits) {
    const okv_model *m = e->model;
    const okv_model_config *c = &m->cfg;
    OKV_ASSERT(m->output.data && n <= e->max_tok);
    double t0 = okv_now_s();
    e->be.rmsnorm(&e->be, e->xn, x, m->output_norm.data, n, c->dim, c->norm_eps);
    e->be.matmul(&e->be, logits, m->output.data, m->output.type, e->xn, n, c->dim, c->n_vocab);
    e->metrics.t_matmul += okv_now_s() - t0;
}

int engine_get_selection(const okv_engine *e, int slot, int group, const int32_t **idx) {
    size_t i = (size_t)slot * e->n_groups + group;
    *idx = e->sel + i * e->max_ctx;
    return e->sel_n[i];
}

void engine_set_selection(okv_engine *e, int slot, int group, const int32_t *idx, int n) {
    size_t i = (size_t)slot * e->n_groups + group;
    OKV_ASSERT(n >= 0 && n <= e->max_ctx);
    memcpy(e->sel + i * e->max_ctx, idx, sizeof(int32_t) * (size_t)n);
    e->sel_n[i] = n;
}

int engine_set_probe(okv_engine *e, okv_probe_fn fn, void *ctx) {
    if (!e->logits_sel) {
        e->logits_sel = okv_alloc(sizeof(float) * (size_t)e->shape.n_heads * e->max_ctx);
        if (!e->logits_sel) return okv_fail(OKV_ERR_NOMEM, "cannot allocate the probe's logits buffer");
    }
    e->probe = fn;
    e->probe_ctx = ctx;
    return OKV_OK;
}

void engine_metrics_diff(okv_metrics *d, const okv_metrics *a, const okv_metrics *b) {
    d->steps = b->steps - a->steps;
    d->rows_dense = b->rows_dense - a->rows_dense;
    d->rows_filter = b->rows_filter - a->rows_filter;
    d->rows_sparse = b->rows_sparse - a->rows_sparse;
    d->bytes_kv = b->bytes_kv - a->bytes_kv;
    d->bytes_weights = b->bytes_weights - a->bytes_weights;
    d->t_select = b->t_select - a->t_select;
    d->t_attn_dense = b->t_attn_dense - a->t_attn_dense;
    d->t_attn_sparse = b->t_attn_sparse - a->t_attn_sparse;
    d->t_matmul = b->t_matmul - a->t_matmul;
    d->t_other = b->t_other - a->t_other;
}

void engine_metrics_reset(okv_engine *e) { memset(&e->metrics, 0, sizeof e->metrics); }

void engine_memory(const okv_engine *e, uint64_t *weights, uint64_t *kv_cache, uint64_t *bank) {
    *weights = e->weight_bytes;
    uint64_t per_layer = (uint64_t)e->max_slots * e->max_ctx * e->kv_dim * kv_esz(e) * 2;
    *kv_cache = per_layer * (uint64_t)(e->layer_end - e->layer_begin);
    *bank = e->bank.bytes;
}

/* x += W_o(att) then the MLP block, for n tokens (shared by prefill and decode). */
static void attn_out_and_mlp(okv_engine *e, const okv_layer_weights *w, int n, float *x) {
    const okv_model_config *c = &e->model->cfg;
    okv_backend *be = &e->be;
    double t0 = okv_now_s();
    be->matmul(be, e->tmp, w->wo.data, w->wo.type, e->att, n, e->q_dim, c->dim);
    be->add(be, x, e->tmp, (int64_t)n * c->dim);
    be->rmsnorm(be, e->xn, x, w->ffn_norm.data, n, c->dim, c->norm_eps);
    be->matmul(be, e->gate, w->w_gate.data, w->w_gate.type, e->xn, n, c->dim, c->ffn_dim);
    be->matmul(be, e->up, w->w_up.data, w->w_up.type, e->xn, n, c->dim, c->ffn_dim);
    be->swiglu(be, e->gate, e->gate, e->up, (int64_t)n * c->ffn_dim);
    be->matmul(be, e->tmp, w->w_down.data, w->w_down.type, e->gate, n, c->ffn_dim, c->dim);
    be->add(be, x, e->tmp, (int64_t)n * c->dim);
    e->metrics.t_matmul += okv_now_s() - t0;
}

static void add_bias(float *y, const okv_tensor *b, int n, int dim) {
    if (!b->data) return;
    const float *bb = b->data;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++) y[(size_t)t * dim + i] += bb[i];
}

/* Norm, Q/K/V projections and RoPE for n tokens at positions pos_buf[0..n). */
static void qkv(okv_engine *e, const okv_layer_weights *w, int n, const float *x) {
    const okv_model *m = e->model;
    const okv_model_config *c = &m->cfg;
    okv_backend *be = &e->be;
    double t0 = okv_now_s();
    be->rmsnorm(be, e->xn, x, w->attn_norm.data, n, c->dim, c->norm_eps);
    double t1 = okv_now_s();
    be->matmul(be, e->q, w->wq.data, w->wq.type, e->xn, n, c->dim, e->q_dim);
    be->matmul(be, e->kbuf, w->wk.data, w->wk.type, e->xn, n, c->dim, e->kv_dim);
    be->matmul(be, e->vbuf, w->wv.data, w->wv.type, e->xn, n, c->dim, e->kv_dim);
    double t2 = okv_now_s();
    add_bias(e->q, &w->bq, n, e->q_dim);
    add_bias(e->kbuf, &w->bk, n, e->kv_dim);
    add_bias(e->vbuf, &w->bv, n, e->kv_dim);
    be->rope(be, e->q, e->pos_buf, n, c->n_heads, c->head_dim, m->rope_inv_freq, c->rope_dim / 2);
    be->rope(be, e->kbuf, e->pos_buf, n, c->n_kv_heads, c->head_dim, m->rope_inv_freq, c->rope_dim / 2);
    e->metrics.t_matmul += t2 - t1;
    e->metrics.t_other += (t1 - t0) + (okv_now_s() - t2);
}

/* Stores this step's K/V rows (kbuf/vbuf rows [i0, i0+n)) of layer l for one slot. */
static void store_kv(okv_engine *e, int l, int slot, int i0, int n, const int32_t *rows, bool bank) {
    okv_backend *be = &e->be;
    void *kd, *vd;
    int64_t stride;
    if (bank) {
        int g = e->plan.group[l];
        kd = bank_layer_base(&e->bank, g, l, slot, &stride);
        vd = (uint8_t *)kd + (size_t)e->kv_dim * kv_esz(e);
    } else {
        void **ks = layer_in_bank(e, l) ? e->tail_k : e->cache_k;
        void **vs = layer_in_bank(e, l) ? e->tail_v : e->cache_v;
        kd = cache_rows(e, ks, l, slot);
        vd = cache_rows(e, vs, l, slot);
        stride = e->kv_dim;
    }
    be->kv_store(be, kd, e->rc->kv_type, stride, rows, e->kbuf + (size_t)i0 * e->kv_dim, n, e->kv_dim);
    be->kv_store(be, vd, e->rc->kv_type, stride, rows, e->vbuf + (size_t)i0 * e->kv_dim, n, e->kv_dim);
}

static float *win_slot(okv_engine *e, int slot, int g, int pos) {
    size_t base = ((size_t)slot * e->n_groups + g) * e->window + (size_t)(pos % e->window);
    return e->win_q + base * e->q_dim;
}

int engine_prefill(okv_engine *e, int slot, int pos0, int n_tok, float *x) {
    okv_slot *s = &e->slots[slot];
    OKV_ASSERT(s->active && n_tok > 0 && n_tok <= e->max_tok);
    OKV_ASSERT(pos0 == s->n_pos && pos0 + n_tok <= s->n_prompt);
    for (int i = 0; i < n_tok; i++) e->pos_buf[i] = e->rows_buf[i] = pos0 + i;
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        const okv_layer_weights *w = &e->model->layers[l];
        qkv(e, w, n_tok, x);
        bool bank = layer_in_bank(e, l);
        double t0 = okv_now_s();
        store_kv(e, l, slot, 0, n_tok, e->rows_buf, bank);
        okv_kv_view kv = bank ? bank_view(&e->bank, e->plan.group[l], l, slot, NULL, pos0 + n_tok)
                              : cache_view(e, e->cache_k, e->cache_v, l, slot, 0, pos0 + n_tok, NULL);
        e->be.attn_prefill(&e->be, e->att, e->q, n_tok, pos0, kv, e->shape);
        e->metrics.t_attn_dense += okv_now_s() - t0;
        if (e->window && e->plan.role[l] == ROLE_FILTER) {
            /* The last `window` prompt queries seed the window selectors. */
            for (int i = 0; i < n_tok; i++)
                if (pos0 + i >= s->n_prompt - e->window)
                    memcpy(win_slot(e, slot, e->plan.group[l], pos0 + i), e->q + (size_t)i * e->q_dim,
                           sizeof(float) * (size_t)e->q_dim);
        }
        attn_out_and_mlp(e, w, n_tok, x);
    }
    s->n_pos = pos0 + n_tok;
    if (e->window && s->n_pos == s->n_prompt)
        memcpy(e->win_prompt + slot * win_ring_floats(e), e->win_q + slot * win_ring_floats(e),
               sizeof(float) * win_ring_floats(e));
    if (e->bank.bytes) e->bank.rows_written += (uint64_t)n_tok;
    return OKV_OK;
}

/* Selection of group g's index set for a slot from the filter layer's logits (DESIGN §4). */
static void select_tokens(okv_engine *e, int l, int slot, const float *q) {
    okv_slot *s = &e->slots[slot];
    const int N = s->n_prompt, g = e->plan.group[l], pos = s->n_pos;
    const int H = e->shape.n_heads;
    double t0 = okv_now_s();
    int n_forced = 0, n_win = 0;
    int ages[OKV_MAX_WINDOW];
    if (e->window) {
        memcpy(win_slot(e, slot, g, pos), q, sizeof(float) * (size_t)e->q_dim);
        okv_kv_view prompt = cache_view(e, e->cache_k, e->cache_v, l, slot, 0, N, NULL);
        for (int p = pos; p > pos - e->window && p >= 0; p--, n_win++) {
            ages[n_win] = pos - p;
            if (p < N) e->forced[n_forced++] = p;
            if (p == pos) continue; /* the current query's logits came with its attention */
            e->be.attn_logits(&e->be, e->logits_win + (size_t)n_win * H * N, win_slot(e, slot, g, p),
                              prompt, e->shape);
        }
    }
    int32_t *out = e->sel + ((size_t)slot * e->n_groups + g) * e->max_ctx;
    selector_scores(s->sel.selector, e->logits_sel, H, N, e->logits_win, ages, n_win,
                    e->sel_scratch.score);
    e->sel_n[slot * e->n_groups + g] =
        selector_pick(&s->sel, &e->sel_scratch, e->sel_scratch.score, N, e->forced, n_forced, out);
    e->metrics.t_select += okv_now_s() - t0;
}

int engine_decode(okv_engine *e, const int *slots, int n, float *x) {
    OKV_ASSERT(n > 0 && n <= e->max_tok);
    const size_t esz = kv_esz(e);
    for (int i = 0; i < n; i++) {
        okv_slot *s = &e->slots[slots[i]];
        OKV_ASSERT(s->active && s->n_pos >= s->n_prompt);
        if (s->n_pos >= e->max_ctx)
            return okv_fail(OKV_ERR_REQUEST, "sequence reached max_context_len %d", e->max_ctx);
        e->pos_buf[i] = s->n_pos;
    }
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        const okv_layer_weights *w = &e->model->layers[l];
        const okv_role role = e->plan.role[l];
        const bool bank = layer_in_bank(e, l);
        qkv(e, w, n, x);
        for (int i = 0; i < n; i++) {
            const int slot = slots[i];
            const okv_slot *s = &e->slots[slot];
            const int N = s->n_prompt, pos = s->n_pos, n_gen = pos - N + 1;
            double t0 = okv_now_s();
            int32_t row = bank ? pos - N : pos;
            store_kv(e, l, slot, i, 1, &row, false);
            okv_kv_view views[2];
            uint64_t rows;
            if (role == ROLE_SPARSE) {
                const int g = e->plan.group[l];
                const int32_t *idx = e->sel + ((size_t)slot * e->n_groups + g) * e->max_ctx;
                const int k = e->sel_n[slot * e->n_groups + g];
                if (bank) {
                    views[0] = bank_view(&e->bank, g, l, slot, idx, k);
                    views[1] = cache_view(e, e->tail_k, e->tail_v, l, slot, 0, n_gen, NULL);
                    e->bank.rows_read += (uint64_t)k;
                    e->bank.bytes_read += (uint64_t)k * 2 * e->kv_dim * esz;
                } else {
                    views[0] = cache_view(e, e->cache_k, e->cache_v, l, slot, 0, k, idx);
                    views[1] = cache_view(e, e->cache_k, e->cache_v, l, slot, N, n_gen, NULL);
                }
                e->be.attn_decode(&e->be, e->att + (size_t)i * e->q_dim, e->q + (size_t)i * e->q_dim,
                                  views, 2, e->shape, NULL);
                rows = (uint64_t)(k + n_gen);
                e->metrics.rows_sparse += rows;
                e->metrics.t_attn_sparse += okv_now_s() - t0;
            } else {
                views[0] = cache_view(e, e->cache_k, e->cache_v, l, slot, 0, N, NULL);
                views[1] = cache_view(e, e->cache_k, e->cache_v, l, slot, N, n_gen, NULL);
                float *logits = NULL;
                if (role == ROLE_FILTER) logits = e->window ? e->logits_win : e->logits_sel;
                else if (e->probe) logits = e->logits_sel;
                e->be.attn_decode(&e->be, e->att + (size_t)i * e->q_dim, e->q + (size_t)i * e->q_dim,
                                  views, 2, e->shape, logits);
                rows = (uint64_t)(N + n_gen);
                if (role == ROLE_FILTER) e->metrics.rows_filter += rows;
                else e->metrics.rows_dense += rows;
                e->metrics.t_attn_dense += okv_now_s() - t0;
                if (e->probe) e->probe(e->probe_ctx, l, slot, logits, e->shape.n_heads, N);
                if (role == ROLE_FILTER) select_tokens(e, l, slot, e->q + (size_t)i * e->q_dim);
            }
            e->metrics.bytes_kv += rows * 2 * e->kv_dim * esz;
        }
        attn_out_and_mlp(e, w, n, x);
    }
    for (int i = 0; i < n; i++) e->slots[slots[i]].n_pos++;
    e->metrics.steps++;
    e->metrics.bytes_weights += e->weight_bytes;
    return OKV_OK;
}
