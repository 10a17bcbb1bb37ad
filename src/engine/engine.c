/* engine.c — forward pass of a layer range with OmniKV roles (DESIGN §3.2, §4): chunked prefill
 * with full causal attention; decode steps where filter layers pick each slot's index set from
 * the logits their attention computes anyway, and sparse layers read only those bank rows (in
 * place, or gathered into backend memory on the copy stream while the wait layers run) plus the
 * generated tail. Every buffer is backend memory carved from one arena at start-up. Tested by
 * tests/model/ (vs llama.cpp) and tests/unit/test_omnikv.c. */
#include "engine.h"

#include "../common.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of n elements of the KV type; n is a whole number of its blocks (kv_dim is checked to be
 * a multiple of the q8_0 block at start-up), so element offsets convert exactly. */
static size_t kv_bytes(const okv_engine *e, int64_t n) { return okv_type_row_bytes(e->rc->kv_type, n); }

static bool layer_in_bank(const okv_engine *e, int l) {
    return e->plan.role[l] == ROLE_SPARSE && e->rc->real_offload;
}

/* Whether group g has sparse layers whose prompt KV is in this range's bank. */
static bool group_in_bank(const okv_engine *e, int g) {
    return g >= 0 && g < e->bank.n_groups && e->bank.groups[g].n_layers > 0;
}

/* Cache rows of layer l for a slot: [max_ctx][kv_dim]. */
static uint8_t *cache_rows(const okv_engine *e, void *const *arr, int l, int slot) {
    return (uint8_t *)arr[l] + kv_bytes(e, (int64_t)slot * e->max_ctx * e->kv_dim);
}

static okv_kv_view cache_view(const okv_engine *e, void *const *ks, void *const *vs, int l,
                              int slot, int first_row, int n, const int32_t *idx) {
    size_t off = kv_bytes(e, (int64_t)first_row * e->kv_dim);
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

/* ---- start-up: sizes, the arena, the weights ------------------------------------------------ */

/* Lays buffers out one after another (256-byte aligned) from base; with base NULL it only
 * counts, so the same walk sizes the arena and then carves it. */
typedef struct carver {
    uint8_t *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (bytes + 255) & ~(size_t)255;
    return p;
}

static void layout(okv_engine *e, carver *c) {
    const okv_model_config *m = &e->model->cfg;
    const size_t T = (size_t)e->max_tok, F = sizeof(float), I = sizeof(int32_t);
    const size_t per_layer = kv_bytes(e, (int64_t)e->max_slots * e->max_ctx * e->kv_dim);
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        void **k = layer_in_bank(e, l) ? e->tail_k : e->cache_k;
        void **v = layer_in_bank(e, l) ? e->tail_v : e->cache_v;
        k[l] = carve(c, per_layer);
        v[l] = carve(c, per_layer);
    }
    e->x = carve(c, F * T * m->dim);
    e->xn = carve(c, F * T * m->dim);
    e->q = carve(c, F * T * e->q_dim);
    e->kbuf = carve(c, F * T * e->kv_dim);
    e->vbuf = carve(c, F * T * e->kv_dim);
    e->att = carve(c, F * T * e->q_dim);
    e->gate = carve(c, F * T * m->ffn_dim);
    e->up = carve(c, F * T * m->ffn_dim);
    e->tmp = carve(c, F * T * m->dim);
    e->logits = e->model->output.data ? carve(c, F * T * m->n_vocab) : NULL;
    e->ids = carve(c, I * T);
    e->pos = carve(c, I * T);
    e->rows = carve(c, I * T);
    e->iota = carve(c, I * T);
    e->w.rope_inv_freq = carve(c, F * (size_t)(m->rope_dim / 2));
    e->logits_sel = carve(c, F * m->n_heads * e->max_ctx); /* selection scores, or a probe's */
    if (e->n_groups > 0) {
        const size_t nsel = (size_t)e->max_slots * e->n_groups;
        e->sel = carve(c, I * nsel * e->max_ctx);
        if (e->window) {
            e->win_q = carve(c, F * nsel * e->window * e->q_dim);
            e->win_prompt = carve(c, F * nsel * e->window * e->q_dim);
            e->logits_win = carve(c, F * e->window * m->n_heads * e->max_ctx);
        }
    }
    const size_t halves = e->row_cache ? 2 : 1, per_half = (size_t)e->max_slots * e->stage_rows;
    for (int g = 0; g < e->n_groups; g++) {
        if (!group_in_bank(e, g)) continue;
        const size_t row = bank_group_row_bytes(&e->bank, g);
        e->chunk[g] = carve(c, row * T);
        if (e->staged) e->stage[g] = carve(c, row * halves * per_half);
        if (e->row_cache) e->stage_idx[g] = carve(c, I * halves * per_half);
    }
    if (e->staged && e->bank.bytes) e->pf_stage = carve(c, kv_bytes(e, (int64_t)e->max_ctx * 2 * e->kv_dim));
    if (e->row_cache) e->row_hits = carve(c, sizeof(uint64_t) * (size_t)e->n_groups);
}

/* Where a slot's rows of group g lie in staging half h (0 without the row cache), and the index
 * set that half holds. */
static uint8_t *stage_at(const okv_engine *e, int g, int slot, int h) {
    const size_t row = bank_group_row_bytes(&e->bank, g);
    return e->stage[g] + ((size_t)h * e->max_slots + slot) * e->stage_rows * row;
}

static int32_t *stage_idx_at(const okv_engine *e, int g, int slot, int h) {
    return e->stage_idx[g] + ((size_t)h * e->max_slots + slot) * e->stage_rows;
}

/* Bytes of every tensor the range uses, for an upload. */
static void weights_walk(okv_engine *e, carver *c, bool copy) {
    const okv_model *m = e->model;
    okv_backend *be = &e->be;
    const okv_tensor *src[3] = {&m->tok_embd, &m->output_norm, &m->output};
    okv_tensor *dst[3] = {&e->w.tok_embd, &e->w.output_norm, &e->w.output};
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        const okv_tensor *s = &m->layers[l].attn_norm;
        okv_tensor *d = &e->w.layers[l].attn_norm;
        for (size_t i = 0; i < sizeof(okv_layer_weights) / sizeof(okv_tensor); i++) {
            d[i] = s[i];
            if (!s[i].data) continue;
            const size_t bytes = model_tensor_bytes(&s[i]);
            d[i].data = carve(c, bytes);
            if (copy) be->copy(be, (void *)d[i].data, s[i].data, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
        }
    }
    for (int i = 0; i < 3; i++) {
        *dst[i] = *src[i];
        if (!src[i]->data) continue;
        if (i == 2 && src[2]->data == src[0]->data) { /* tied output head */
            dst[2]->data = dst[0]->data;
            continue;
        }
        const size_t bytes = model_tensor_bytes(src[i]);
        dst[i]->data = carve(c, bytes);
        if (copy) be->copy(be, (void *)dst[i]->data, src[i]->data, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
    }
}

/* The okv_layer_weights fields in order, named as GGUF files name them. */
static const char *const layer_tensor_names[] = {
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
    "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
    "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
};
_Static_assert(sizeof layer_tensor_names / sizeof *layer_tensor_names ==
                   sizeof(okv_layer_weights) / sizeof(okv_tensor),
               "a name for every field of okv_layer_weights");

/* Every tensor the range uses is of a type the backend has kernels for (a GPU lacks some). */
static int weights_check_types(okv_engine *e) {
    const okv_model *m = e->model;
    char name[64];
    int st;
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        const okv_tensor *t = &m->layers[l].attn_norm;
        for (size_t i = 0; i < sizeof(okv_layer_weights) / sizeof(okv_tensor); i++) {
            if (!t[i].data) continue;
            snprintf(name, sizeof name, "blk.%d.%s", l, layer_tensor_names[i]);
            if ((st = okv_backend_check_weight(&e->be, t[i].type, name))) return st;
        }
    }
    const okv_tensor *ends[3] = {&m->tok_embd, &m->output_norm, &m->output};
    const char *end_names[3] = {"token_embd.weight", "output_norm.weight", "output.weight"};
    for (int i = 0; i < 3; i++)
        if (ends[i]->data && (st = okv_backend_check_weight(&e->be, ends[i]->type, end_names[i]))) return st;
    return OKV_OK;
}

/* Weights in backend memory: host backends point into the model's mapping, others get one
 * allocation and a copy. */
static int weights_upload(okv_engine *e) {
    const okv_model *m = e->model;
    int st = weights_check_types(e);
    if (st) return st;
    if (e->be.mem == OKV_MEM_HOST) {
        for (int l = e->layer_begin; l < e->layer_end; l++) e->w.layers[l] = m->layers[l];
        e->w.tok_embd = m->tok_embd;
        e->w.output_norm = m->output_norm;
        e->w.output = m->output;
        return OKV_OK;
    }
    carver c = {0};
    weights_walk(e, &c, false);
    e->w.mem = e->be.alloc(&e->be, c.off);
    if (!e->w.mem)
        return okv_fail(OKV_ERR_NOMEM, "the weights of layers %d-%d need %zu bytes of %s memory and "
                        "could not be allocated; use more pipeline ranks",
                        e->layer_begin, e->layer_end - 1, c.off, e->be.name);
    c = (carver){.base = e->w.mem};
    weights_walk(e, &c, true);
    return OKV_OK;
}

static int init_groups(okv_engine *e) {
    int *first = calloc((size_t)e->n_groups, sizeof(int));
    int *cnt = calloc((size_t)e->n_groups, sizeof(int));
    OKV_ASSERT(first && cnt);
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        if (!layer_in_bank(e, l)) continue;
        int g = e->plan.group[l];
        if (cnt[g]++ == 0) first[g] = l;
    }
    int st = bank_init(&e->bank, e->n_groups, first, cnt, e->kv_dim, e->rc->kv_type,
                       e->max_slots, e->max_ctx, e->be.pci_bus_id);
    free(first);
    free(cnt);
    return st;
}

/* Whether group g's index set is needed past this range (a later stage's sparse layers). */
static bool group_crosses_end(const okv_engine *e, int g) {
    const int n_layers = e->model->cfg.n_layers;
    const int end = g + 1 < e->n_groups ? e->plan.filters[g + 1] : n_layers;
    return e->plan.filters[g] < e->layer_end && end > e->layer_end;
}

static int engine_init_inner(okv_engine *e) {
    const okv_run_config *rc = e->rc;
    const okv_model_config *c = &e->model->cfg;
    if (okv_kv_type_int(rc->kv_type) && c->head_dim % OKV_QK != 0)
        return okv_fail(OKV_ERR_USAGE,
                        "kv_type=%s stores each attention head as 32-element blocks, but this "
                        "model's head_dim is %d; use kv_type=f16",
                        okv_type_name(rc->kv_type), c->head_dim);
    int st = policy_plan_init(&e->plan, rc, c->n_layers);
    if (st) return st;
    e->n_groups = e->plan.n_groups;
    e->window = e->n_groups > 0 && config_selector_is_window(rc->selector) ? rc->window_size : 0;

    e->cache_k = calloc((size_t)c->n_layers, sizeof(void *));
    e->cache_v = calloc((size_t)c->n_layers, sizeof(void *));
    e->tail_k = calloc((size_t)c->n_layers, sizeof(void *));
    e->tail_v = calloc((size_t)c->n_layers, sizeof(void *));
    e->w.layers = calloc((size_t)c->n_layers, sizeof *e->w.layers);
    e->slots = calloc((size_t)e->max_slots, sizeof *e->slots);
    e->stage = calloc((size_t)e->n_groups + 1, sizeof *e->stage);
    e->chunk = calloc((size_t)e->n_groups + 1, sizeof *e->chunk);
    e->ev_select = calloc((size_t)e->n_groups + 1, sizeof *e->ev_select);
    e->ev_gather = calloc((size_t)e->n_groups + 1, sizeof *e->ev_gather);
    e->ev_chunk = calloc((size_t)e->n_groups + 1, sizeof *e->ev_chunk);
    e->ev_bank = calloc((size_t)e->n_groups + 1, sizeof *e->ev_bank);
    e->sel_n = calloc((size_t)e->max_slots * e->n_groups + 1, sizeof *e->sel_n);
    e->stage_idx = calloc((size_t)e->n_groups + 1, sizeof *e->stage_idx);
    e->stage_half = calloc((size_t)e->max_slots * e->n_groups + 1, sizeof *e->stage_half);
    e->stage_n = calloc(2 * (size_t)e->max_slots * e->n_groups + 1, sizeof *e->stage_n);
    e->rows_staged = calloc((size_t)e->n_groups + 1, sizeof *e->rows_staged);
    e->pos_host = calloc((size_t)e->max_tok, sizeof(int32_t));
    e->rows_host = calloc((size_t)e->max_tok, sizeof(int32_t));
    OKV_ASSERT(e->cache_k && e->cache_v && e->tail_k && e->tail_v && e->w.layers && e->slots &&
               e->stage && e->chunk && e->ev_select && e->ev_gather && e->ev_chunk && e->ev_bank &&
               e->sel_n && e->pos_host && e->rows_host && e->stage_idx && e->stage_half &&
               e->stage_n && e->rows_staged);
    if (e->n_groups > 0 && (st = init_groups(e))) return st;

    /* Staging holds the most rows a selection can take: the budget at the longest prompt, or a
     * window selector's scored token plus its window. */
    e->stage_rows = OKV_MIN(e->max_ctx, OKV_MAX(config_budget(rc, e->max_ctx - 1), e->window + 1));
    carver sizing = {0};
    layout(e, &sizing);
    e->arena_bytes = sizing.off;

    const int max_in = OKV_MAX(OKV_MAX(c->dim, c->ffn_dim), e->q_dim);
    const okv_backend_params bp = {
        .n_threads = rc->threads > 0 ? rc->threads : omp_get_num_procs(),
        .max_tok = e->max_tok,
        .max_in = max_in,
        .device = -1,
        .arena_bytes = e->arena_bytes + model_layer_bytes(e->model, e->layer_begin, e->layer_end) +
                       model_tensor_bytes(&e->model->tok_embd) + model_tensor_bytes(&e->model->output) +
                       model_tensor_bytes(&e->model->output_norm) + ((size_t)64 << 20),
    };
    if ((st = okv_backend_init(&e->be, (okv_backend_kind)rc->backend, &bp))) return st;
    if (!strcmp(e->be.name, "cuda") && rc->kv_type != OKV_TYPE_F16 && rc->kv_type != OKV_TYPE_F32)
        return okv_fail(OKV_ERR_USAGE,
                        "the %s backend's attention reads f16 or f32 KV only, not kv_type=%s; use "
                        "backend=cpu or kv_type=f16",
                        e->be.name, okv_type_name(rc->kv_type));
    e->staged = rc->bank_gather == BANK_GATHER_STAGED ||
                (rc->bank_gather == BANK_GATHER_AUTO && e->be.mem == OKV_MEM_DEVICE);
    e->row_cache = e->staged && rc->row_cache;
    if (e->staged) { /* staging buffers change the layout */
        sizing = (carver){0};
        layout(e, &sizing);
        e->arena_bytes = sizing.off;
    }
    OKV_INFO("backend %s (asked for %s)%s", e->be.name, okv_backend_kind_name((okv_backend_kind)rc->backend),
             e->n_groups > 0 && rc->real_offload
                 ? (e->staged ? (e->row_cache ? ", bank rows gathered (staged, row cache)" : ", bank rows gathered (staged)")
                              : ", bank rows read in place")
                 : "");
    if ((st = e->be.reserve(&e->be, e->shape, e->max_ctx))) return st;
    if ((st = weights_upload(e))) return st;

    e->arena = e->be.alloc(&e->be, e->arena_bytes);
    if (!e->arena)
        return okv_fail(OKV_ERR_NOMEM,
                        "the KV cache, index sets and scratch need %zu bytes of %s memory for %d "
                        "slot(s) of %d tokens and could not be allocated; lower max_context_len or "
                        "max_batch, or use more pipeline ranks",
                        e->arena_bytes, e->be.name, e->max_slots, e->max_ctx);
    carver carving = {.base = e->arena};
    layout(e, &carving);
    OKV_ASSERT(carving.off == e->arena_bytes);
    if (e->row_cache) {
        uint64_t zero[OKV_MAX_FILTERS] = {0};
        e->be.copy(&e->be, e->row_hits, zero, sizeof(uint64_t) * (size_t)e->n_groups, OKV_COPY_H2D,
                   OKV_STREAM_SYNC);
    }

    if (e->bank.bytes && (st = bank_register(&e->bank, &e->be))) return st;
    for (int g = 0; g < e->n_groups; g++) {
        if (!e->staged || !group_in_bank(e, g)) continue;
        e->ev_select[g] = e->be.event_new(&e->be);
        e->ev_gather[g] = e->be.event_new(&e->be);
        e->ev_chunk[g] = e->be.event_new(&e->be);
        e->ev_bank[g] = e->be.event_new(&e->be);
        if (!e->ev_select[g] || !e->ev_gather[g] || !e->ev_chunk[g] || !e->ev_bank[g])
            return okv_fail(OKV_ERR_NOMEM, "the %s backend cannot create gather events", e->be.name);
    }

    /* Host mirrors and constants. */
    e->logits_host = e->logits ? okv_alloc(sizeof(float) * (size_t)e->max_tok * c->n_vocab) : NULL;
    bool crosses = false;
    for (int g = 0; g < e->n_groups; g++) crosses |= group_crosses_end(e, g);
    if (crosses)
        e->sel_host = calloc((size_t)e->max_slots * e->n_groups * e->max_ctx, sizeof(int32_t));
    if (rc->fill_synthetic)
        e->synth_host = okv_alloc(sizeof(float) * 2 * (size_t)e->max_tok * e->kv_dim);
    if ((e->logits && !e->logits_host) || (crosses && !e->sel_host) ||
        (rc->fill_synthetic && !e->synth_host))
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate the engine's host buffers (logits of %d "
                        "tokens, index sets of %d slots)", e->max_tok, e->max_slots);
    for (int i = 0; i < e->max_tok; i++) e->rows_host[i] = i;
    e->be.copy(&e->be, e->iota, e->rows_host, sizeof(int32_t) * (size_t)e->max_tok, OKV_COPY_H2D,
               OKV_STREAM_SYNC);
    e->be.copy(&e->be, e->w.rope_inv_freq, e->model->rope_inv_freq,
               sizeof(float) * (size_t)(c->rope_dim / 2), OKV_COPY_H2D, OKV_STREAM_SYNC);
    return OKV_OK;
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
    int st = engine_init_inner(e);
    if (st) engine_free(e);
    return st;
}

void engine_free(okv_engine *e) {
    if (!e) return;
    okv_backend *be = &e->be;
    if (be->state) be->sync(be, OKV_STREAM_SYNC); /* copies into the bank may be in flight */
    bank_free(&e->bank); /* unregisters from the backend, so before it goes */
    if (be->state) {
        okv_event **evs[] = {e->ev_select, e->ev_gather, e->ev_chunk, e->ev_bank};
        for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
            for (int g = 0; evs[i] && g < e->n_groups; g++)
                if (evs[i][g]) be->event_free(be, evs[i][g]);
        if (e->arena) be->mem_free(be, e->arena);
        if (e->w.mem) be->mem_free(be, e->w.mem);
        be->free(be);
    }
    free(e->cache_k);
    free(e->cache_v);
    free(e->tail_k);
    free(e->tail_v);
    free(e->w.layers);
    free(e->stage);
    free(e->chunk);
    free(e->ev_select);
    free(e->ev_gather);
    free(e->ev_chunk);
    free(e->ev_bank);
    policy_plan_free(&e->plan);
    free(e->slots);
    free(e->sel_n);
    free(e->stage_idx);
    free(e->stage_half);
    free(e->stage_n);
    free(e->rows_staged);
    free(e->sel_host);
    okv_free_mem(e->logits_host);
    okv_free_mem(e->synth_host);
    okv_free_mem(e->probe_host);
    free(e->pos_host);
    free(e->rows_host);
    memset(e, 0, sizeof *e);
}

/* ---- sequences --------------------------------------------------------------------------------- */

static int check_stage_rows(const okv_engine *e, const okv_selection *sel, int n_prompt) {
    const int rows = OKV_MIN(OKV_MAX(sel->k, e->window + 1), n_prompt);
    if (e->staged && e->bank.bytes && rows > e->stage_rows)
        return okv_fail(OKV_ERR_USAGE, "a selection of %d rows does not fit the %d staging rows "
                        "that num_of_selected_tokens sized at start-up; raise "
                        "num_of_selected_tokens or use bank_gather=inplace",
                        rows, e->stage_rows);
    return OKV_OK;
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
    for (int g = 0; g < e->n_groups; g++) {
        e->sel_n[slot * e->n_groups + g] = 0;
        /* a new prompt's bank rows: nothing staged for the slot is valid any more */
        e->stage_n[2 * (slot * e->n_groups + g)] = e->stage_n[2 * (slot * e->n_groups + g) + 1] = 0;
    }
    return check_stage_rows(e, &s->sel, n_prompt);
}

void engine_seq_end(okv_engine *e, int slot) { e->slots[slot].active = false; }

int engine_seq_set_selection(okv_engine *e, int slot, const okv_selection *sel) {
    OKV_ASSERT(sel->k >= 0 && sel->keep_first >= 0 && sel->keep_last >= 0);
    if (config_selector_is_window(sel->selector) != config_selector_is_window(e->rc->selector))
        return okv_fail(OKV_ERR_USAGE, "selector_cls %s cannot replace the run's %s: a sequence's "
                        "selector is a window selector (uniform, exp) exactly when the run's is, "
                        "since the engine was built for one kind",
                        config_selector_name(sel->selector), config_selector_name(e->rc->selector));
    int st = check_stage_rows(e, sel, e->slots[slot].n_prompt);
    if (st) return st;
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
        e->be.copy(&e->be, e->win_q + slot * win_ring_floats(e), e->win_prompt + slot * win_ring_floats(e),
                   sizeof(float) * win_ring_floats(e), OKV_COPY_D2D, OKV_STREAM_COMPUTE);
    }
    s->n_pos = n_pos;
}

/* ---- hidden states, embedding, head ----------------------------------------------------------- */

float *engine_x(okv_engine *e) { return e->x; }

void engine_x_load(okv_engine *e, const float *x, int n) {
    OKV_ASSERT(n <= e->max_tok);
    e->be.copy(&e->be, e->x, x, sizeof(float) * (size_t)n * e->model->cfg.dim, OKV_COPY_H2D,
               OKV_STREAM_SYNC);
}

void engine_embed(okv_engine *e, const int32_t *ids, int n) {
    const okv_tensor *t = &e->w.tok_embd;
    OKV_ASSERT(t->data && n <= e->max_tok);
    e->be.copy(&e->be, e->ids, ids, sizeof(int32_t) * (size_t)n, OKV_COPY_H2D, OKV_STREAM_SYNC);
    e->be.embed(&e->be, e->x, t->data, t->type, e->ids, n, e->model->cfg.dim);
}

const float *engine_head(okv_engine *e, int row0, int n) {
    const okv_model_config *c = &e->model->cfg;
    OKV_ASSERT(e->logits && row0 >= 0 && row0 + n <= e->max_tok);
    okv_backend *be = &e->be;
    double t0 = okv_now_s();
    be->rmsnorm(be, e->xn, e->x + (size_t)row0 * c->dim, e->w.output_norm.data, n, c->dim, c->norm_eps);
    be->matmul(be, e->logits, e->w.output.data, e->w.output.type, e->xn, n, c->dim, c->n_vocab);
    be->copy(be, e->logits_host, e->logits, sizeof(float) * (size_t)n * c->n_vocab, OKV_COPY_D2H,
             OKV_STREAM_SYNC);
    e->metrics.t_matmul += okv_now_s() - t0;
    return e->logits_host;
}

/* ---- index sets --------------------------------------------------------------------------------- */

static int32_t *sel_of(const okv_engine *e, int slot, int group) {
    return e->sel + ((size_t)slot * e->n_groups + group) * e->max_ctx;
}

int engine_get_selection(okv_engine *e, int slot, int group, const int32_t **idx) {
    OKV_ASSERT(e->sel_host);
    const size_t i = (size_t)slot * e->n_groups + group;
    const int n = e->sel_n[i];
    int32_t *mirror = e->sel_host + i * e->max_ctx;
    e->be.copy(&e->be, mirror, sel_of(e, slot, group), sizeof(int32_t) * (size_t)n, OKV_COPY_D2H,
               OKV_STREAM_SYNC);
    *idx = mirror;
    return n;
}

void engine_set_selection(okv_engine *e, int slot, int group, const int32_t *idx, int n) {
    OKV_ASSERT(n >= 0 && n <= e->max_ctx);
    e->be.copy(&e->be, sel_of(e, slot, group), idx, sizeof(int32_t) * (size_t)n, OKV_COPY_H2D,
               OKV_STREAM_SYNC);
    e->sel_n[(size_t)slot * e->n_groups + group] = n;
}

int engine_set_probe(okv_engine *e, okv_probe_fn fn, void *ctx) {
    if (!e->probe_host) {
        e->probe_host = okv_alloc(sizeof(float) * (size_t)e->shape.n_heads * e->max_ctx);
        if (!e->probe_host) return okv_fail(OKV_ERR_NOMEM, "cannot allocate the probe's logits buffer");
    }
    e->probe = fn;
    e->probe_ctx = ctx;
    return OKV_OK;
}

/* ---- metrics ---------------------------------------------------------------------------------- */

void engine_metrics_diff(okv_metrics *d, const okv_metrics *a, const okv_metrics *b) {
#define OKV_METRICS_DIFF(name, type, what) d->name = b->name - a->name;
    OKV_METRICS_FIELDS(OKV_METRICS_DIFF)
#undef OKV_METRICS_DIFF
}

void engine_metrics_add(okv_metrics *a, const okv_metrics *b) {
#define OKV_METRICS_ADD(name, type, what) a->name += b->name;
    OKV_METRICS_FIELDS(OKV_METRICS_ADD)
#undef OKV_METRICS_ADD
}

void engine_metrics_reset(okv_engine *e) { memset(&e->metrics, 0, sizeof e->metrics); }

void engine_memory(const okv_engine *e, int64_t ctx, int64_t gen, uint64_t *weights,
                   uint64_t *kv_cache, uint64_t *bank) {
    const okv_model *m = e->model;
    *weights = e->weight_bytes + model_tensor_bytes(&m->tok_embd) + model_tensor_bytes(&m->output_norm);
    if (m->output.data != m->tok_embd.data) *weights += model_tensor_bytes(&m->output);
    const uint64_t row = okv_type_row_bytes(e->rc->kv_type, e->kv_dim) * 2;
    *kv_cache = *bank = 0;
    for (int l = e->layer_begin; l < e->layer_end; l++)
        policy_kv_bytes(e->plan.role[l], e->rc->real_offload, (uint64_t)e->max_slots, (uint64_t)ctx,
                        (uint64_t)gen, row, kv_cache, bank);
}

/* ---- the layers ------------------------------------------------------------------------------- */

/* x += W_o(att) then the MLP block, for n tokens (shared by prefill and decode). */
static void attn_out_and_mlp(okv_engine *e, const okv_layer_weights *w, int n) {
    const okv_model_config *c = &e->model->cfg;
    okv_backend *be = &e->be;
    float *x = e->x;
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

/* Norm, Q/K/V projections (+ biases) and RoPE for n tokens at positions e->pos[0..n). */
static void qkv(okv_engine *e, const okv_layer_weights *w, int n) {
    const okv_model_config *c = &e->model->cfg;
    okv_backend *be = &e->be;
    double t0 = okv_now_s();
    be->rmsnorm(be, e->xn, e->x, w->attn_norm.data, n, c->dim, c->norm_eps);
    double t1 = okv_now_s();
    be->matmul(be, e->q, w->wq.data, w->wq.type, e->xn, n, c->dim, e->q_dim);
    be->matmul(be, e->kbuf, w->wk.data, w->wk.type, e->xn, n, c->dim, e->kv_dim);
    be->matmul(be, e->vbuf, w->wv.data, w->wv.type, e->xn, n, c->dim, e->kv_dim);
    double t2 = okv_now_s();
    if (w->bq.data) be->bias_add(be, e->q, w->bq.data, n, e->q_dim);
    if (w->bk.data) be->bias_add(be, e->kbuf, w->bk.data, n, e->kv_dim);
    if (w->bv.data) be->bias_add(be, e->vbuf, w->bv.data, n, e->kv_dim);
    const int n_freq = c->rope_dim / 2;
    be->rope(be, e->q, e->pos, n, c->n_heads, c->head_dim, e->w.rope_inv_freq, n_freq);
    be->rope(be, e->kbuf, e->pos, n, c->n_kv_heads, c->head_dim, e->w.rope_inv_freq, n_freq);
    e->metrics.t_matmul += t2 - t1;
    e->metrics.t_other += (t1 - t0) + (okv_now_s() - t2);
}

/* Stores n K/V rows (kbuf/vbuf rows [i0, i0+n)) of layer l for a slot at rows[0..n) (backend
 * memory) of its cache, or of its tail for a bank layer. */
static void store_kv(okv_engine *e, int l, int slot, int i0, int n, const int32_t *rows) {
    okv_backend *be = &e->be;
    void **ks = layer_in_bank(e, l) ? e->tail_k : e->cache_k;
    void **vs = layer_in_bank(e, l) ? e->tail_v : e->cache_v;
    be->kv_store(be, cache_rows(e, ks, l, slot), e->rc->kv_type, e->kv_dim, rows,
                 e->kbuf + (size_t)i0 * e->kv_dim, n, e->kv_dim);
    be->kv_store(be, cache_rows(e, vs, l, slot), e->rc->kv_type, e->kv_dim, rows,
                 e->vbuf + (size_t)i0 * e->kv_dim, n, e->kv_dim);
}

/* Layer l's K (then V) within its group's prefill chunk rows. */
static uint8_t *chunk_layer(const okv_engine *e, int l) {
    const int g = e->plan.group[l];
    return e->chunk[g] + kv_bytes(e, (int64_t)(l - e->bank.groups[g].first_layer) * 2 * e->kv_dim);
}

/* A prefill chunk of a bank layer: K/V into the group's chunk rows in backend memory, then one
 * strided copy of this layer's part of those rows into the bank at positions pos0... In place,
 * on the compute stream, so the attention that follows sees them in the bank. Staged, on the
 * copy stream while the next layers compute (their attention reads backend copies: see
 * prefill_bank_view); the group's first layer waits for the previous chunk's copies, both before
 * its chunk rows are overwritten and before the bank's rows are read back. */
static void store_bank(okv_engine *e, int l, int slot, int pos0, int n) {
    okv_backend *be = &e->be;
    const int g = e->plan.group[l];
    if (e->staged && l == e->bank.groups[g].first_layer)
        be->event_wait(be, OKV_STREAM_COMPUTE, e->ev_bank[g]);
    const size_t row = bank_group_row_bytes(&e->bank, g);
    const int64_t row_elems = e->bank.groups[g].row_elems;
    uint8_t *k = chunk_layer(e, l);
    be->kv_store(be, k, e->rc->kv_type, row_elems, e->iota, e->kbuf, n, e->kv_dim);
    be->kv_store(be, k + kv_bytes(e, e->kv_dim), e->rc->kv_type, row_elems, e->iota, e->vbuf, n,
                 e->kv_dim);
    int64_t stride;
    uint8_t *dst = (uint8_t *)bank_layer_base(&e->bank, g, l, slot, &stride) + (size_t)pos0 * row;
    const size_t layer_row = kv_bytes(e, 2 * (int64_t)e->kv_dim);
    if (!e->staged) {
        be->copy_2d(be, dst, row, k, row, layer_row, (size_t)n, OKV_COPY_D2H, OKV_STREAM_COMPUTE);
        return;
    }
    be->event_record(be, e->ev_chunk[g], OKV_STREAM_COMPUTE);
    be->event_wait(be, OKV_STREAM_COPY, e->ev_chunk[g]);
    be->copy_2d(be, dst, row, k, row, layer_row, (size_t)n, OKV_COPY_D2H, OKV_STREAM_COPY);
    be->event_record(be, e->ev_bank[g], OKV_STREAM_COPY);
}

/* The view prefill attention of bank layer l reads for positions [0, n) after store_bank put
 * rows [pos0, n) in: in place, the bank itself; staged, pf_stage filled with the bank's rows
 * [0, pos0) and the chunk's device copy, so a device reads no host memory in its attention (a
 * kernel reading the bank would fetch each row over the bus once per query tile and head). */
static okv_kv_view prefill_bank_view(okv_engine *e, int l, int slot, int pos0, int n) {
    const int g = e->plan.group[l];
    if (!e->staged) return bank_view(&e->bank, g, l, slot, NULL, n);
    okv_backend *be = &e->be;
    const size_t row = bank_group_row_bytes(&e->bank, g), layer_row = kv_bytes(e, 2 * (int64_t)e->kv_dim);
    int64_t stride;
    const uint8_t *prompt = bank_layer_base(&e->bank, g, l, slot, &stride);
    if (pos0 > 0)
        be->copy_2d(be, e->pf_stage, layer_row, prompt, row, layer_row, (size_t)pos0, OKV_COPY_H2D,
                    OKV_STREAM_COMPUTE);
    be->copy_2d(be, e->pf_stage + (size_t)pos0 * layer_row, layer_row, chunk_layer(e, l), row,
                layer_row, (size_t)(n - pos0), OKV_COPY_D2D, OKV_STREAM_COMPUTE);
    okv_kv_view v = {
        .type = e->rc->kv_type,
        .k = e->pf_stage,
        .v = e->pf_stage + kv_bytes(e, e->kv_dim),
        .stride = 2 * e->kv_dim,
        .n = n,
    };
    return v;
}

static float *win_slot(okv_engine *e, int slot, int g, int pos) {
    size_t base = ((size_t)slot * e->n_groups + g) * e->window + (size_t)(pos % e->window);
    return e->win_q + base * e->q_dim;
}

static void load_positions(okv_engine *e, int n) {
    okv_backend *be = &e->be;
    be->copy(be, e->pos, e->pos_host, sizeof(int32_t) * (size_t)n, OKV_COPY_H2D, OKV_STREAM_SYNC);
    be->copy(be, e->rows, e->rows_host, sizeof(int32_t) * (size_t)n, OKV_COPY_H2D, OKV_STREAM_SYNC);
}

void engine_synth_rows(uint64_t seed, int layer, int pos0, int n, int kv_dim, float *k, float *v) {
    for (int i = 0; i < n; i++) {
        /* one stream per (seed, layer, position), so a row does not depend on the chunking */
        uint64_t x = seed ^ ((uint64_t)(uint32_t)layer << 32 | (uint32_t)(pos0 + i));
        for (int j = 0; j < 2 * kv_dim; j++) {
            const uint64_t r = okv_splitmix64(&x);
            /* uniform on [-sqrt(3), sqrt(3)): mean 0, variance 1 */
            const float u = (float)((double)(r >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0) * 1.7320508f;
            (j < kv_dim ? k : v)[(size_t)i * kv_dim + (size_t)(j % kv_dim)] = u;
        }
    }
}

static int prefill_layers(okv_engine *e, int slot, int pos0, int n_tok);

/* fill=synthetic: positions before the prompt's last get generated K/V rows in every layer,
 * stored where a prefill stores them (KV cache, or bank for sparse layers), without computing;
 * the last position is computed as usual, over them, so its logits, window state and first
 * selection are a real step's. x rows of the generated positions pass through unchanged. */
static int prefill_synthetic(okv_engine *e, int slot, int pos0, int n_tok) {
    okv_slot *s = &e->slots[slot];
    const int m = OKV_MIN(n_tok, s->n_prompt - 1 - pos0);
    if (m > 0) {
        for (int i = 0; i < m; i++) e->pos_host[i] = e->rows_host[i] = pos0 + i;
        load_positions(e, m);
        float *kh = e->synth_host, *vh = kh + (size_t)m * e->kv_dim;
        const size_t bytes = sizeof(float) * (size_t)m * e->kv_dim;
        for (int l = e->layer_begin; l < e->layer_end; l++) {
            engine_synth_rows(e->rc->seed, l, pos0, m, e->kv_dim, kh, vh);
            e->be.copy(&e->be, e->kbuf, kh, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
            e->be.copy(&e->be, e->vbuf, vh, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
            if (layer_in_bank(e, l)) store_bank(e, l, slot, pos0, m);
            else store_kv(e, l, slot, 0, m, e->pos);
        }
        s->n_pos = pos0 + m;
        if (e->bank.bytes) e->bank.rows_written += (uint64_t)m;
    }
    if (m == n_tok) return OKV_OK;
    /* The chunk ends the prompt: its last row computed alone, in x row 0, and put back. */
    const size_t row = sizeof(float) * (size_t)e->model->cfg.dim;
    float *last = e->x + (size_t)(n_tok - 1) * e->model->cfg.dim;
    if (n_tok > 1) e->be.copy(&e->be, e->x, last, row, OKV_COPY_D2D, OKV_STREAM_COMPUTE);
    int st = prefill_layers(e, slot, s->n_prompt - 1, 1);
    if (n_tok > 1) e->be.copy(&e->be, last, e->x, row, OKV_COPY_D2D, OKV_STREAM_COMPUTE);
    return st;
}

int engine_prefill(okv_engine *e, int slot, int pos0, int n_tok) {
    okv_slot *s = &e->slots[slot];
    OKV_ASSERT(s->active && n_tok > 0 && n_tok <= e->max_tok);
    OKV_ASSERT(pos0 == s->n_pos && pos0 + n_tok <= s->n_prompt);
    return e->rc->fill_synthetic ? prefill_synthetic(e, slot, pos0, n_tok) : prefill_layers(e, slot, pos0, n_tok);
}

static int prefill_layers(okv_engine *e, int slot, int pos0, int n_tok) {
    okv_slot *s = &e->slots[slot];
    for (int i = 0; i < n_tok; i++) e->pos_host[i] = e->rows_host[i] = pos0 + i;
    load_positions(e, n_tok);
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        const okv_layer_weights *w = &e->w.layers[l];
        qkv(e, w, n_tok);
        const bool bank = layer_in_bank(e, l);
        double t0 = okv_now_s();
        if (bank) store_bank(e, l, slot, pos0, n_tok);
        else store_kv(e, l, slot, 0, n_tok, e->pos);
        okv_kv_view kv = bank ? prefill_bank_view(e, l, slot, pos0, pos0 + n_tok)
                              : cache_view(e, e->cache_k, e->cache_v, l, slot, 0, pos0 + n_tok, NULL);
        e->be.attn_prefill(&e->be, e->att, e->q, n_tok, pos0, kv, e->shape);
        e->metrics.t_attn_dense += okv_now_s() - t0;
        if (e->window && e->plan.role[l] == ROLE_FILTER) {
            /* The last `window` prompt queries seed the window selectors. */
            for (int i = 0; i < n_tok; i++)
                if (pos0 + i >= s->n_prompt - e->window)
                    e->be.copy(&e->be, win_slot(e, slot, e->plan.group[l], pos0 + i),
                               e->q + (size_t)i * e->q_dim, sizeof(float) * (size_t)e->q_dim,
                               OKV_COPY_D2D, OKV_STREAM_COMPUTE);
        }
        attn_out_and_mlp(e, w, n_tok);
    }
    s->n_pos = pos0 + n_tok;
    if (e->window && s->n_pos == s->n_prompt)
        e->be.copy(&e->be, e->win_prompt + slot * win_ring_floats(e), e->win_q + slot * win_ring_floats(e),
                   sizeof(float) * win_ring_floats(e), OKV_COPY_D2D, OKV_STREAM_COMPUTE);
    if (e->bank.bytes) e->bank.rows_written += (uint64_t)n_tok;
    return OKV_OK;
}

static okv_score_kind score_kind(okv_selector s) {
    switch (s) {
    case SELECTOR_LAST: return OKV_SCORE_MAX;
    case SELECTOR_SOFTMAX_BEFORE_LAST: return OKV_SCORE_SOFTMAX_MAX;
    case SELECTOR_UNIFORM: return OKV_SCORE_WINDOW_SUM;
    case SELECTOR_EXP: return OKV_SCORE_WINDOW_EXP;
    }
    return OKV_SCORE_MAX;
}

/* Selection of group g's index set for a slot from the filter layer's logits (DESIGN §4); q is
 * the slot's current query (backend memory). */
static void select_tokens(okv_engine *e, int l, int slot, const float *q) {
    okv_slot *s = &e->slots[slot];
    const int N = s->n_prompt, g = e->plan.group[l], pos = s->n_pos;
    const int H = e->shape.n_heads;
    double t0 = okv_now_s();
    okv_select_args a = {
        .kind = score_kind(s->sel.selector),
        .k = s->sel.k,
        .keep_first = s->sel.keep_first,
        .keep_last = s->sel.keep_last,
        .window_logits = e->logits_win,
    };
    if (e->window) {
        OKV_ASSERT(e->window <= OKV_SELECT_MAX_WINDOW);
        e->be.copy(&e->be, win_slot(e, slot, g, pos), q, sizeof(float) * (size_t)e->q_dim,
                   OKV_COPY_D2D, OKV_STREAM_COMPUTE);
        okv_kv_view prompt = cache_view(e, e->cache_k, e->cache_v, l, slot, 0, N, NULL);
        for (int p = pos; p > pos - e->window && p >= 0; p--, a.n_win++) {
            a.ages[a.n_win] = pos - p;
            a.n_tail += p < N; /* the window's prompt tokens: the last ones of the prompt */
            if (p == pos) continue; /* the current query's logits came with its attention */
            e->be.attn_logits(&e->be, e->logits_win + (size_t)a.n_win * H * N, win_slot(e, slot, g, p),
                              prompt, e->shape);
        }
    }
    e->sel_n[slot * e->n_groups + g] = e->be.select(&e->be, sel_of(e, slot, g), e->logits_sel, H, N, &a);
    e->metrics.t_select += okv_now_s() - t0;
}

/* Staged gathers: group g's selected rows of every slot of the step into its staging area, on
 * the copy stream once the index sets exist; sparse layers wait on ev_gather[g]. */
static void gather_group(okv_engine *e, int g, const int *slots, int n) {
    okv_backend *be = &e->be;
    be->event_record(be, e->ev_select[g], OKV_STREAM_COMPUTE);
    be->event_wait(be, OKV_STREAM_COPY, e->ev_select[g]);
    for (int i = 0; i < n; i++) {
        const int slot = slots[i], sg = slot * e->n_groups + g, k = e->sel_n[sg];
        const int32_t *idx = sel_of(e, slot, g);
        e->rows_staged[g] += (uint64_t)k;
        if (!e->row_cache) {
            bank_gather(&e->bank, be, g, slot, idx, k, stage_at(e, g, slot, 0), OKV_STREAM_COPY);
            continue;
        }
        /* Into the other half, taking what this half holds; then that half's index set. */
        const int old = e->stage_half[sg], now = old ^ 1;
        bank_gather_cached(&e->bank, be, g, slot, idx, k, stage_at(e, g, slot, now),
                           stage_at(e, g, slot, old), stage_idx_at(e, g, slot, old),
                           e->stage_n[2 * sg + old], &e->row_hits[g], OKV_STREAM_COPY);
        be->copy(be, stage_idx_at(e, g, slot, now), idx, sizeof(int32_t) * (size_t)k, OKV_COPY_D2D,
                 OKV_STREAM_COPY);
        e->stage_n[2 * sg + now] = k;
        e->stage_half[sg] = now;
    }
    be->event_record(be, e->ev_gather[g], OKV_STREAM_COPY);
}

void engine_row_cache_stats(okv_engine *e, uint64_t *rows, uint64_t *hits, uint64_t *bytes_saved) {
    *rows = *hits = *bytes_saved = 0;
    uint64_t h[OKV_MAX_FILTERS] = {0};
    if (e->row_cache) {
        e->be.sync(&e->be, OKV_STREAM_COPY);
        e->be.copy(&e->be, h, e->row_hits, sizeof(uint64_t) * (size_t)e->n_groups, OKV_COPY_D2H,
                   OKV_STREAM_SYNC);
    }
    for (int g = 0; g < e->n_groups; g++) {
        *rows += e->rows_staged[g];
        *hits += h[g];
        if (group_in_bank(e, g)) *bytes_saved += h[g] * bank_group_row_bytes(&e->bank, g);
    }
}

/* The view of sparse layer l's selected prompt rows for a slot: staged rows, bank rows in place,
 * or (without offload) the cache through the index set. */
static okv_kv_view sparse_view(okv_engine *e, int l, int slot, int k) {
    const int g = e->plan.group[l];
    const int32_t *idx = sel_of(e, slot, g);
    if (!layer_in_bank(e, l)) return cache_view(e, e->cache_k, e->cache_v, l, slot, 0, k, idx);
    if (!e->staged) return bank_view(&e->bank, g, l, slot, idx, k);
    uint8_t *base = stage_at(e, g, slot, e->stage_half[slot * e->n_groups + g]) +
                    kv_bytes(e, (int64_t)(l - e->bank.groups[g].first_layer) * 2 * e->kv_dim);
    okv_kv_view v = {
        .type = e->rc->kv_type,
        .k = base,
        .v = base + kv_bytes(e, e->kv_dim),
        .stride = e->bank.groups[g].row_elems,
        .idx = NULL,
        .n = k,
    };
    return v;
}

int engine_decode(okv_engine *e, const int *slots, int n) {
    OKV_ASSERT(n > 0 && n <= e->max_tok);
    for (int i = 0; i < n; i++) {
        okv_slot *s = &e->slots[slots[i]];
        OKV_ASSERT(s->active && s->n_pos >= s->n_prompt);
        if (s->n_pos >= e->max_ctx)
            return okv_fail(OKV_ERR_REQUEST, "sequence reached max_context_len %d", e->max_ctx);
        e->pos_host[i] = s->n_pos;
        e->rows_host[i] = s->n_pos - s->n_prompt; /* the token's row in a sparse layer's tail */
    }
    load_positions(e, n);
    bool waited[OKV_MAX_FILTERS] = {0};
    if (e->staged) /* index sets that came from the previous stage */
        for (int g = 0; g < e->n_groups; g++)
            if (group_in_bank(e, g) && e->plan.filters[g] < e->layer_begin) gather_group(e, g, slots, n);
    for (int l = e->layer_begin; l < e->layer_end; l++) {
        const okv_layer_weights *w = &e->w.layers[l];
        const okv_role role = e->plan.role[l];
        const int g = e->plan.group[l];
        const bool bank = layer_in_bank(e, l);
        qkv(e, w, n);
        if (bank && e->staged && !waited[g]) {
            double t0 = okv_now_s();
            e->be.event_wait(&e->be, OKV_STREAM_COMPUTE, e->ev_gather[g]);
            waited[g] = true;
            e->metrics.t_attn_sparse += okv_now_s() - t0;
        }
        for (int i = 0; i < n; i++) {
            const int slot = slots[i];
            const okv_slot *s = &e->slots[slot];
            const int N = s->n_prompt, n_gen = s->n_pos - N + 1;
            float *q = e->q + (size_t)i * e->q_dim, *att = e->att + (size_t)i * e->q_dim;
            double t0 = okv_now_s();
            store_kv(e, l, slot, i, 1, bank ? e->rows + i : e->pos + i);
            okv_kv_view views[2];
            uint64_t rows;
            if (role == ROLE_SPARSE) {
                const int k = e->sel_n[slot * e->n_groups + g];
                views[0] = sparse_view(e, l, slot, k);
                views[1] = bank ? cache_view(e, e->tail_k, e->tail_v, l, slot, 0, n_gen, NULL)
                                : cache_view(e, e->cache_k, e->cache_v, l, slot, N, n_gen, NULL);
                if (bank && !e->staged) {
                    e->bank.rows_read += (uint64_t)k;
                    e->bank.bytes_read += kv_bytes(e, (int64_t)k * 2 * e->kv_dim);
                }
                e->be.attn_decode(&e->be, att, q, views, 2, e->shape, NULL);
                rows = (uint64_t)(k + n_gen);
                e->metrics.rows_sparse += rows;
                e->metrics.t_attn_sparse += okv_now_s() - t0;
            } else {
                views[0] = cache_view(e, e->cache_k, e->cache_v, l, slot, 0, N, NULL);
                views[1] = cache_view(e, e->cache_k, e->cache_v, l, slot, N, n_gen, NULL);
                float *logits = NULL;
                if (role == ROLE_FILTER) logits = e->window ? e->logits_win : e->logits_sel;
                else if (e->probe) logits = e->logits_sel;
                e->be.attn_decode(&e->be, att, q, views, 2, e->shape, logits);
                rows = (uint64_t)(N + n_gen);
                if (role == ROLE_FILTER) e->metrics.rows_filter += rows;
                else e->metrics.rows_dense += rows;
                e->metrics.t_attn_dense += okv_now_s() - t0;
                if (e->probe) {
                    e->be.copy(&e->be, e->probe_host, logits, sizeof(float) * (size_t)e->shape.n_heads * N,
                               OKV_COPY_D2H, OKV_STREAM_SYNC);
                    e->probe(e->probe_ctx, l, slot, e->probe_host, e->shape.n_heads, N);
                }
                if (role == ROLE_FILTER) select_tokens(e, l, slot, q);
            }
            e->metrics.bytes_kv += kv_bytes(e, (int64_t)rows * 2 * e->kv_dim);
        }
        if (role == ROLE_FILTER && e->staged && group_in_bank(e, g)) gather_group(e, g, slots, n);
        attn_out_and_mlp(e, w, n);
    }
    for (int i = 0; i < n; i++) e->slots[slots[i]].n_pos++;
    e->metrics.steps++;
    e->metrics.bytes_weights += e->weight_bytes;
    return OKV_OK;
}
