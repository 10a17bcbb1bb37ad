/* costs.c — kernel timings for the planner's compute-aware cost (see costs.h). Every timing
 * cycles through more distinct data than a cache holds, as a decode step does, and keeps the
 * best of three passes so a descheduled moment does not count. */
#include "costs.h"

#include "../src/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Bytes a timing pass streams through at least, so caches do not flatter it. */
#define COST_STREAM_BYTES ((uint64_t)96 << 20)
#define COST_ATTN_ROWS 4096

typedef struct mm_job {
    const void *w;
    int n_in, n_out;
} mm_job;

static uint64_t job_bytes(const mm_job *j, okv_type t) {
    return okv_type_row_bytes(t, j->n_in) * (uint64_t)j->n_out;
}

/* Evicts the caches (untimed) when the timed data is smaller than COST_STREAM_BYTES: a
 * lone tensor (the output head) would otherwise be timed from the last-level cache, while a
 * decode step reads it from memory after every layer's weights. */
static void evict(uint8_t *flush, size_t bytes) {
    if (!flush) return;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < bytes; i += 64) {
        flush[i]++;
        sink ^= flush[i];
    }
    (void)sink;
}

/* Seconds per weight byte of type t over the jobs (each run once per pass), best of 3 passes
 * after a warm-up pass. */
static double time_matmuls(okv_backend *be, okv_type t, const mm_job *jobs, int n_jobs, int n_tok) {
    int max_in = 1, max_out = 1;
    uint64_t bytes = 0;
    for (int i = 0; i < n_jobs; i++) {
        max_in = OKV_MAX(max_in, jobs[i].n_in);
        max_out = OKV_MAX(max_out, jobs[i].n_out);
        bytes += job_bytes(&jobs[i], t);
    }
    float *x = malloc(sizeof(float) * (size_t)n_tok * (size_t)max_in);
    float *y = malloc(sizeof(float) * (size_t)n_tok * (size_t)max_out);
    uint8_t *flush = bytes < COST_STREAM_BYTES ? calloc(1, COST_STREAM_BYTES) : NULL;
    double best = INFINITY;
    if (x && y) {
        for (size_t i = 0; i < (size_t)n_tok * (size_t)max_in; i++) x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
        for (int pass = 0; pass < 4; pass++) {
            evict(flush, COST_STREAM_BYTES);
            double t0 = okv_now_s();
            for (int i = 0; i < n_jobs; i++) be->matmul(be, y, jobs[i].w, t, x, n_tok, jobs[i].n_in, jobs[i].n_out);
            if (pass > 0) best = fmin(best, okv_now_s() - t0);
        }
    }
    free(x);
    free(y);
    free(flush);
    return isfinite(best) && bytes ? best / (double)bytes : 0.0;
}

/* A model's tensors of type t, in layer order then the head, until COST_STREAM_BYTES. */
static int model_jobs(const okv_model *m, okv_type t, mm_job *jobs, int cap) {
    int n = 0;
    uint64_t bytes = 0;
    for (int l = 0; l < m->cfg.n_layers && bytes < COST_STREAM_BYTES; l++) {
        const okv_layer_weights *w = &m->layers[l];
        const okv_tensor *ts[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof *ts && n < cap && bytes < COST_STREAM_BYTES; i++) {
            if (!ts[i]->data || ts[i]->type != t || ts[i]->n_dims != 2) continue;
            jobs[n] = (mm_job){ts[i]->data, (int)ts[i]->ne[0], (int)ts[i]->ne[1]};
            bytes += job_bytes(&jobs[n++], t);
        }
    }
    if (n < cap && m->output.data && m->output.type == t && bytes < COST_STREAM_BYTES)
        jobs[n++] = (mm_job){m->output.data, (int)m->output.ne[0], (int)m->output.ne[1]};
    return n;
}

/* Synthetic [n_out][n_in] weights of type t, as many copies as COST_STREAM_BYTES needs. */
static void *synth_weights(okv_type t, int n_in, int n_out, int *copies) {
    const size_t one = okv_type_row_bytes(t, n_in) * (size_t)n_out;
    *copies = (int)OKV_MAX((uint64_t)1, (COST_STREAM_BYTES + one - 1) / one);
    uint8_t *w = okv_alloc(one * (size_t)*copies);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    if (!w || !row) {
        okv_free_mem(w);
        free(row);
        return NULL;
    }
    for (int i = 0; i < n_in; i++) row[i] = (float)((i * 40503u) % 997) / 997.0f - 0.5f;
    okv_quant_row_ref(w, row, t, n_in);
    const size_t rb = okv_type_row_bytes(t, n_in);
    for (size_t r = 1; r < (size_t)n_out * (size_t)*copies; r++) memcpy(w + r * rb, w, rb);
    free(row);
    return w;
}

/* Decode attention seconds per row over views cycling through COST_STREAM_BYTES of cache. */
static double time_attention(okv_backend *be, const okv_model_config *c, okv_type kv_type) {
    const int kv_dim = c->n_kv_heads * c->head_dim, n = COST_ATTN_ROWS;
    if (c->head_dim % okv_type_block_elems(kv_type)) return 0.0; /* refused by the engine itself */
    const size_t layer = okv_type_row_bytes(kv_type, (int64_t)n * kv_dim);
    const int n_layers = (int)OKV_MAX((uint64_t)1, COST_STREAM_BYTES / (2 * layer));
    uint8_t *k = okv_alloc(layer * n_layers), *v = okv_alloc(layer * n_layers);
    float *q = malloc(sizeof(float) * (size_t)c->n_heads * c->head_dim);
    float *out = malloc(sizeof(float) * (size_t)c->n_heads * c->head_dim);
    float *row = malloc(sizeof(float) * (size_t)kv_dim);
    double best = INFINITY;
    if (k && v && q && out && row) {
        const size_t row_bytes = okv_type_row_bytes(kv_type, kv_dim);
        for (size_t r = 0; r < (size_t)n * n_layers; r++) {
            for (int i = 0; i < kv_dim; i++)
                row[i] = (float)(((r * kv_dim + i) * 2654435761u) % 2001) / 2000.0f - 0.5f;
            okv_quant_row_ref(k + r * row_bytes, row, kv_type, kv_dim);
            for (int i = 0; i < kv_dim; i++) row[i] = -row[i];
            okv_quant_row_ref(v + r * row_bytes, row, kv_type, kv_dim);
        }
        for (int i = 0; i < c->n_heads * c->head_dim; i++) q[i] = (float)(i % 7) / 7.0f;
        okv_attn_shape s = {c->n_heads, c->n_kv_heads, c->head_dim, 1.0f / sqrtf((float)c->head_dim)};
        if (be->reserve(be, s, n) == OKV_OK)
            for (int pass = 0; pass < 4; pass++) {
                double t0 = okv_now_s();
                for (int l = 0; l < n_layers; l++) {
                    okv_kv_view view = {kv_type, k + layer * l, v + layer * l, kv_dim, NULL, n};
                    be->attn_decode(be, out, q, &view, 1, s, NULL);
                }
                if (pass > 0) best = fmin(best, okv_now_s() - t0);
            }
    }
    okv_free_mem(k);
    okv_free_mem(v);
    free(q);
    free(out);
    free(row);
    return isfinite(best) ? best / ((double)n * n_layers) : 0.0;
}

int pipe_rates_measure(const okv_model *m, okv_type wtype, okv_type kv_type, int step_batch,
                       int n_threads, pipe_rates *r) {
    memset(r, 0, sizeof *r);
    r->n_threads = n_threads;
    r->step_batch = step_batch = OKV_MAX(1, step_batch);
    const okv_model_config *c = &m->cfg;
    const int max_in = OKV_MAX(OKV_MAX(c->dim, c->ffn_dim), c->n_heads * c->head_dim);
    okv_backend be;
    int st = okv_backend_cpu_init(&be, n_threads, step_batch, max_in);
    if (st) return st;
    if (m->layers) {
        enum { CAP = 1024 };
        mm_job *jobs = malloc(sizeof *jobs * CAP);
        OKV_ASSERT(jobs);
        for (int t = 0; t < OKV_TYPE_COUNT; t++) {
            if (!okv_type_is_weight((okv_type)t)) continue;
            int n = model_jobs(m, (okv_type)t, jobs, CAP);
            if (n) r->s_per_byte[t] = time_matmuls(&be, (okv_type)t, jobs, n, step_batch);
        }
        free(jobs);
    } else {
        int copies;
        void *w = synth_weights(wtype, c->dim, c->ffn_dim, &copies);
        if (!w) st = okv_fail(OKV_ERR_NOMEM, "plan: cannot allocate weights to time the matmul");
        if (!st) {
            mm_job *jobs = malloc(sizeof *jobs * (size_t)copies);
            OKV_ASSERT(jobs);
            const size_t one = okv_type_row_bytes(wtype, c->dim) * (size_t)c->ffn_dim;
            for (int i = 0; i < copies; i++) jobs[i] = (mm_job){(const uint8_t *)w + one * i, c->dim, c->ffn_dim};
            r->s_per_byte[wtype] = time_matmuls(&be, wtype, jobs, copies, step_batch);
            free(jobs);
        }
        okv_free_mem(w);
    }
    if (!st) r->s_per_row = time_attention(&be, c, kv_type);
    be.free(&be);
    return st;
}

static double tensor_s(const pipe_rates *r, const okv_tensor *t) {
    if (!t->data || t->n_dims != 2) return 0.0;
    return r->s_per_byte[t->type] * (double)model_tensor_bytes(t);
}

static double layer_matmul_s(const pipe_rates *r, const okv_model *m, int l) {
    const okv_layer_weights *w = &m->layers[l];
    return tensor_s(r, &w->wq) + tensor_s(r, &w->wk) + tensor_s(r, &w->wv) + tensor_s(r, &w->wo) +
           tensor_s(r, &w->w_gate) + tensor_s(r, &w->w_up) + tensor_s(r, &w->w_down);
}

void pipe_costs_apply(const pipe_rates *r, const okv_model *m, okv_type wtype, double *layer_s,
                      pipe_cost_model *cm) {
    for (int l = 0; l < cm->n_layers; l++)
        layer_s[l] = m->layers ? layer_matmul_s(r, m, l) : r->s_per_byte[wtype] * (double)cm->weight_bytes[l];
    cm->matmul_s = layer_s;
    cm->head_s = m->layers ? tensor_s(r, &m->output) : r->s_per_byte[wtype] * (double)cm->head_bytes;
    cm->row_s = r->s_per_row;
}

/* Layer, embedding and head bytes of a shape in a weight type (norms f32), as genmodel_write
 * lays them out. */
static void shape_bytes(const okv_model_config *c, okv_type t, uint64_t *layer, uint64_t *embed,
                        uint64_t *head) {
    const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    const uint64_t rows_dim = (uint64_t)(q + 2 * kv + 2 * c->ffn_dim); /* inputs of length dim */
    *layer = okv_type_row_bytes(t, c->dim) * rows_dim + okv_type_row_bytes(t, q) * (uint64_t)c->dim +
             okv_type_row_bytes(t, c->ffn_dim) * (uint64_t)c->dim + 2 * sizeof(float) * (uint64_t)c->dim;
    *embed = okv_type_row_bytes(t, c->dim) * (uint64_t)c->n_vocab;
    *head = (c->tied_embeddings ? *embed : okv_type_row_bytes(t, c->dim) * (uint64_t)c->n_vocab) +
            sizeof(float) * (uint64_t)c->dim;
}

int pipe_costs_init(pipe_costs *c, const okv_model *m, okv_type wtype, const okv_run_config *rc,
                    int batch, int n_mb, int64_t ctx, int64_t gen, const pipe_rates *rates) {
    memset(c, 0, sizeof *c);
    const okv_model_config *mc = &m->cfg;
    const int L = mc->n_layers;
    int st = policy_plan_init(&c->lp, rc, L);
    if (st) return st;
    c->weight_bytes = calloc((size_t)L, sizeof *c->weight_bytes);
    OKV_ASSERT(c->weight_bytes);
    uint64_t embed, head;
    if (m->layers) {
        for (int l = 0; l < L; l++) c->weight_bytes[l] = model_layer_bytes(m, l, l + 1);
        embed = model_tensor_bytes(&m->tok_embd);
        head = model_tensor_bytes(&m->output) + model_tensor_bytes(&m->output_norm);
    } else {
        uint64_t layer;
        shape_bytes(mc, wtype, &layer, &embed, &head);
        for (int l = 0; l < L; l++) c->weight_bytes[l] = layer;
    }
    /* The budget of a prompt longer than an int can count is the count's (a fraction saturates). */
    const int64_t k = rc->policy == POLICY_OMNIKV
                          ? OKV_MIN((int64_t)config_budget(rc, (int)OKV_MIN(ctx, (int64_t)INT32_MAX)), ctx)
                          : ctx;
    c->cm = (pipe_cost_model){
        .n_layers = L, .role = c->lp.role, .group = c->lp.group, .weight_bytes = c->weight_bytes,
        .embed_bytes = embed, .head_bytes = head, .head_shared_bytes = mc->tied_embeddings ? embed : 0,
        .kv_dim = mc->n_kv_heads * mc->head_dim,
        .dim = mc->dim, .kv_type = rc->kv_type, .batch = batch,
        .step_batch = (batch + n_mb - 1) / n_mb, .ctx = ctx, .gen = gen, .k = k,
        .real_offload = rc->real_offload,
    };
    if (rates) {
        c->layer_s = calloc((size_t)L, sizeof *c->layer_s);
        OKV_ASSERT(c->layer_s);
        pipe_costs_apply(rates, m, wtype, c->layer_s, &c->cm);
    }
    return OKV_OK;
}

void pipe_costs_free(pipe_costs *c) {
    free(c->weight_bytes);
    free(c->layer_s);
    policy_plan_free(&c->lp);
    memset(c, 0, sizeof *c);
}

void pipe_rates_describe(const pipe_rates *r, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "matmul");
    for (int t = 0; t < OKV_TYPE_COUNT && n < cap; t++)
        if (r->s_per_byte[t] > 0)
            n += (size_t)snprintf(buf + n, cap - n, " %s %.1f GB/s", okv_type_name((okv_type)t), 1e-9 / r->s_per_byte[t]);
    if (n < cap) snprintf(buf + n, cap - n, ", attention %.1f ns per KV row", 1e9 * r->s_per_row);
}
