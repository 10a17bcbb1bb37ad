/* runner.c — continuous batching over okv_forward: admit requests into free slots (tokenize,
 * length check, chunked prefill, first token), then batched decode steps until each sequence
 * meets an end-of-generation token, a stop string or its token limit. Everything a step touches
 * is sized at start-up or at admission. Tested by tests/e2e/test_run_batch.sh. */
#include "runner.h"

#include "../common.h"
#include "sampler.h"

#include <stdlib.h>
#include <string.h>

/* ---- the forward of a whole model on this rank ------------------------------------------- */

typedef struct local_forward {
    okv_engine *e;
    float *x; /* [max_tok][dim] hidden states */
} local_forward;

static int local_seq_start(void *ctx, int slot, int n_prompt, int *k) {
    local_forward *lf = ctx;
    int st = engine_seq_start(lf->e, slot, n_prompt);
    if (!st) *k = lf->e->slots[slot].k;
    return st;
}

static void local_seq_end(void *ctx, int slot) { engine_seq_end(((local_forward *)ctx)->e, slot); }

static int local_prefill(void *ctx, int slot, const int32_t *ids, int pos0, int n, float *logits) {
    local_forward *lf = ctx;
    okv_engine *e = lf->e;
    engine_embed(e, ids, n, lf->x);
    int st = engine_prefill(e, slot, pos0, n, lf->x);
    if (st) return st;
    if (logits) engine_head(e, lf->x + (size_t)(n - 1) * e->model->cfg.dim, 1, logits);
    return OKV_OK;
}

static int local_decode(void *ctx, const int *slots, const int32_t *ids, int n, float *logits) {
    local_forward *lf = ctx;
    okv_engine *e = lf->e;
    engine_embed(e, ids, n, lf->x);
    int st = engine_decode(e, slots, n, lf->x);
    if (st) return st;
    engine_head(e, lf->x, n, logits);
    return OKV_OK;
}

static void local_metrics(void *ctx, okv_metrics *out) { *out = ((local_forward *)ctx)->e->metrics; }

int forward_local_init(okv_forward *f, okv_engine *e) {
    memset(f, 0, sizeof *f);
    local_forward *lf = calloc(1, sizeof *lf);
    OKV_ASSERT(lf);
    lf->e = e;
    lf->x = okv_alloc(sizeof(float) * (size_t)e->max_tok * e->model->cfg.dim);
    if (!lf->x) {
        free(lf);
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate hidden states for %d tokens", e->max_tok);
    }
    f->ctx = lf;
    f->max_slots = e->max_slots;
    f->max_ctx = e->max_ctx;
    f->max_tok = e->max_tok;
    f->n_vocab = e->model->cfg.n_vocab;
    f->seq_start = local_seq_start;
    f->seq_end = local_seq_end;
    f->prefill = local_prefill;
    f->decode = local_decode;
    f->metrics = local_metrics;
    return OKV_OK;
}

void forward_local_free(okv_forward *f) {
    local_forward *lf = f->ctx;
    if (lf) okv_free_mem(lf->x);
    free(lf);
    memset(f, 0, sizeof *f);
}

/* ---- serving ----------------------------------------------------------------------------- */

typedef struct run_slot {
    okv_request *req;   /* NULL: free */
    int n_prompt, k, max_new, n_gen;
    int32_t *gen;       /* [max_new] generated ids */
    char *text;         /* [text_cap] detokenised output */
    size_t text_len, text_cap, max_stop;
    okv_sample_params sp;
    okv_rng rng;
    bool ignore_eos;
    okv_finish finish;
    double t_admit, t_first, t_last, prefill_s;
    okv_result_metrics m;
} run_slot;

typedef struct runner {
    const okv_forward *fw;
    const okv_tokenizer *tok;
    const okv_run_config *rc;
    const okv_runner_opts *o;
    okv_sampler sampler;  /* over the tokenizer's ids (the head may have padding rows) */
    run_slot *slots;      /* [max_slots] */
    int32_t *prompt;      /* [max_ctx + 1] ids of the request being admitted */
    float *logits;        /* [max_slots][fw->n_vocab] */
    int *step_slots;      /* [max_slots] */
    int32_t *step_ids;    /* [max_slots] */
    int max_piece;        /* longest token text in bytes */
    okv_result_sink sink;
    void *sink_ctx;
    int n_errors, n_done, n_todo;
} runner;

static int emit(runner *R, const okv_result *res) {
    if (res->error) {
        R->n_errors++;
        OKV_INFO("request %s: %s", res->req->id, res->error);
    }
    R->n_done++;
    return R->sink(R->sink_ctx, res);
}

static int emit_error(runner *R, const okv_request *req, const char *msg) {
    okv_result res = {.req = req, .error = msg};
    return emit(R, &res);
}

static void slot_release(runner *R, int s) {
    run_slot *sl = &R->slots[s];
    free(sl->gen);
    free(sl->text);
    memset(sl, 0, sizeof *sl);
}

static int slot_finish(runner *R, int s) {
    run_slot *sl = &R->slots[s];
    R->fw->seq_end(R->fw->ctx, s);
    double dec_s = sl->t_last - sl->t_first;
    okv_result res = {
        .req = sl->req,
        .text = sl->text,
        .text_len = sl->text_len,
        .tokens = sl->gen,
        .n_tokens = sl->n_gen,
        .prompt_tokens = sl->n_prompt,
        .finish = sl->finish,
        .ttft_ms = (sl->t_first - sl->t_admit) * 1e3,
        .prefill_tok_s = sl->prefill_s > 0 ? sl->n_prompt / sl->prefill_s : 0.0,
        .decode_tok_s = sl->n_gen > 1 && dec_s > 0 ? (sl->n_gen - 1) / dec_s : 0.0,
        .k = R->rc->policy == POLICY_OMNIKV ? OKV_MIN(sl->k, sl->n_prompt) : sl->n_prompt,
        .policy = R->rc->policy == POLICY_OMNIKV ? "omnikv" : "dense",
        .metrics = sl->m,
    };
    int st = emit(R, &res);
    slot_release(R, s);
    return st;
}

/* Appends a sampled token; returns true when the sequence is finished (sl->finish set). */
static bool accept_token(runner *R, run_slot *sl, int32_t id) {
    sl->gen[sl->n_gen++] = id;
    sl->t_last = okv_now_s();
    if (!sl->ignore_eos && tokenizer_is_eog(R->tok, id)) {
        sl->finish = FINISH_EOS;
        return true;
    }
    size_t old = sl->text_len;
    int n = tokenizer_piece(R->tok, id, false, sl->text + old, sl->text_cap - old);
    if (n > 0) sl->text_len += (size_t)n;
    if (sl->max_stop) {
        /* Only the new bytes and the max_stop-1 before them can complete a stop string. */
        size_t from = old >= sl->max_stop - 1 ? old - (sl->max_stop - 1) : 0;
        const char *hit = NULL;
        for (int i = 0; i < sl->req->n_stop; i++) {
            const char *s = sl->req->stop[i];
            const char *p = memmem(sl->text + from, sl->text_len - from, s, strlen(s));
            if (p && (!hit || p < hit)) hit = p;
        }
        if (hit) {
            sl->text_len = (size_t)(hit - sl->text);
            sl->finish = FINISH_STOP;
            return true;
        }
    }
    if (sl->n_gen >= sl->max_new) {
        sl->finish = FINISH_LENGTH;
        return true;
    }
    return false;
}

/* The prompt's token ids into R->prompt; returns the count, or -1 with *err set (malloc'd). */
static int tokenize(runner *R, const okv_request *req, char **err) {
    const int cap = R->fw->max_ctx + 1;
    if (req->ids) {
        int nv = tokenizer_n_vocab(R->tok);
        for (int i = 0; i < req->n_ids; i++)
            if (req->ids[i] < 0 || req->ids[i] >= nv) {
                OKV_ASSERT(asprintf(err, "prompt token %d is outside the %d-token vocabulary",
                                    (int)req->ids[i], nv) >= 0);
                return -1;
            }
        memcpy(R->prompt, req->ids, sizeof(int32_t) * (size_t)OKV_MIN(req->n_ids, cap));
        return req->n_ids;
    }
    char *rendered = NULL;
    const char *text = req->prompt;
    bool chat = req->msgs || R->o->chat;
    if (chat) {
        chat_msg one = {"user", req->prompt};
        rendered = chat_render(tokenizer_chat_kind(R->tok), req->msgs ? req->msgs : &one,
                               req->msgs ? req->n_msgs : 1, true);
        if (!rendered) {
            *err = strdup(okv_last_error());
            return -1;
        }
        text = rendered;
    }
    /* Template markup is parsed as special tokens; a plain prompt is taken literally. */
    int n = tokenizer_encode(R->tok, text, strlen(text), true, chat, R->prompt, cap);
    free(rendered);
    if (n < 0) *err = strdup(okv_last_error());
    return n;
}

/* Admits req into free slot s. The request may finish here (an error record, no tokens to
 * generate, or an end at its first token), leaving the slot free. */
static int admit(runner *R, okv_request *req, int s) {
    const okv_run_config *rc = R->rc;
    const okv_forward *fw = R->fw;
    run_slot *sl = &R->slots[s];
    if (req->error) return emit_error(R, req, req->error);
    double t_admit = okv_now_s();
    int max_new = req->max_new_tokens >= 0 ? req->max_new_tokens : rc->max_new_tokens;
    char *err = NULL;
    int n = tokenize(R, req, &err);
    if (n < 0) {
        int st = emit_error(R, req, err);
        free(err);
        return st;
    }
    if (n == 0) return emit_error(R, req, "the prompt is empty: it encodes to no tokens");
    if ((int64_t)n + max_new > fw->max_ctx) {
        char msg[256];
        snprintf(msg, sizeof msg, "prompt of %d tokens plus %d new tokens exceeds "
                 "max_context_len %d; raise max_context_len or shorten the prompt",
                 n, max_new, fw->max_ctx);
        return emit_error(R, req, msg);
    }
    if (max_new == 0) {
        okv_result res = {.req = req, .prompt_tokens = n, .finish = FINISH_LENGTH,
                          .policy = rc->policy == POLICY_OMNIKV ? "omnikv" : "dense"};
        return emit(R, &res);
    }
    int k = 0;
    int st = fw->seq_start(fw->ctx, s, n, &k);
    if (st) return st == OKV_ERR_REQUEST ? emit_error(R, req, okv_last_error()) : st;

    float *logits = R->logits + (size_t)s * fw->n_vocab;
    const int chunk = OKV_MIN(rc->prefill_chunk, fw->max_tok);
    double t0 = okv_now_s();
    for (int p = 0; p < n; p += chunk) {
        int m = OKV_MIN(chunk, n - p);
        st = fw->prefill(fw->ctx, s, R->prompt + p, p, m, p + m == n ? logits : NULL);
        if (st) {
            fw->seq_end(fw->ctx, s);
            return st == OKV_ERR_REQUEST ? emit_error(R, req, okv_last_error()) : st;
        }
    }
    double prefill_s = okv_now_s() - t0;
    OKV_INFO("request %s: %d prompt tokens, prefill %.1f tok/s (%.0f ms)", req->id, n,
             prefill_s > 0 ? n / prefill_s : 0.0, prefill_s * 1e3);

    sl->req = req;
    sl->n_prompt = n;
    sl->k = k;
    sl->max_new = max_new;
    sl->gen = malloc(sizeof(int32_t) * (size_t)max_new);
    sl->text_cap = (size_t)max_new * (size_t)R->max_piece + 1;
    sl->text = malloc(sl->text_cap);
    OKV_ASSERT(sl->gen && sl->text);
    sl->sp.temperature = req->temperature >= 0 ? req->temperature : rc->temperature;
    sl->sp.top_k = req->top_k >= 0 ? req->top_k : rc->top_k;
    sl->sp.top_p = req->top_p > 0 ? req->top_p : rc->top_p;
    /* Without its own seed a request's stream depends on its line, not on batching or
     * --resume order. */
    rng_seed(&sl->rng, req->has_seed ? req->seed : rc->seed + (uint64_t)req->line);
    sl->ignore_eos = req->ignore_eos >= 0 ? req->ignore_eos : rc->ignore_eos;
    for (int i = 0; i < req->n_stop; i++) sl->max_stop = OKV_MAX(sl->max_stop, strlen(req->stop[i]));
    sl->t_admit = t_admit;
    sl->prefill_s = prefill_s;

    int32_t id = sampler_sample(&R->sampler, logits, &sl->sp, &sl->rng);
    bool done = accept_token(R, sl, id);
    sl->t_first = sl->t_last;
    return done ? slot_finish(R, s) : OKV_OK;
}

static void metrics_share(okv_result_metrics *m, const okv_metrics *a, const okv_metrics *b,
                          double share) {
    m->steps += (double)(b->steps - a->steps) * share;
    m->rows_dense += (double)(b->rows_dense - a->rows_dense) * share;
    m->rows_filter += (double)(b->rows_filter - a->rows_filter) * share;
    m->rows_sparse += (double)(b->rows_sparse - a->rows_sparse) * share;
    m->bytes_kv += (double)(b->bytes_kv - a->bytes_kv) * share;
    m->bytes_weights += (double)(b->bytes_weights - a->bytes_weights) * share;
    m->t_select += (b->t_select - a->t_select) * share;
    m->t_attn_dense += (b->t_attn_dense - a->t_attn_dense) * share;
    m->t_attn_sparse += (b->t_attn_sparse - a->t_attn_sparse) * share;
    m->t_matmul += (b->t_matmul - a->t_matmul) * share;
    m->t_other += (b->t_other - a->t_other) * share;
}

/* One decode step over every active slot. */
static int decode_step(runner *R, int *n_tokens) {
    const okv_forward *fw = R->fw;
    int n = 0;
    for (int s = 0; s < fw->max_slots; s++) {
        run_slot *sl = &R->slots[s];
        if (!sl->req) continue;
        R->step_slots[n] = s;
        R->step_ids[n] = sl->gen[sl->n_gen - 1];
        n++;
    }
    okv_metrics before, after;
    fw->metrics(fw->ctx, &before);
    int st = fw->decode(fw->ctx, R->step_slots, R->step_ids, n, R->logits);
    if (st) {
        if (st != OKV_ERR_REQUEST) return st;
        /* The step failed for the batch: each of its requests gets the reason. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", okv_last_error());
        for (int i = 0; i < n; i++) {
            int s = R->step_slots[i];
            fw->seq_end(fw->ctx, s);
            int st2 = emit_error(R, R->slots[s].req, msg);
            slot_release(R, s);
            if (st2) return st2;
        }
        return OKV_OK;
    }
    fw->metrics(fw->ctx, &after);
    for (int i = 0; i < n; i++) {
        int s = R->step_slots[i];
        run_slot *sl = &R->slots[s];
        metrics_share(&sl->m, &before, &after, 1.0 / n);
        int32_t id = sampler_sample(&R->sampler, R->logits + (size_t)i * fw->n_vocab, &sl->sp,
                                    &sl->rng);
        if (accept_token(R, sl, id) && (st = slot_finish(R, s))) return st;
    }
    *n_tokens += n;
    return OKV_OK;
}

static void runner_free(runner *R) {
    if (R->slots)
        for (int s = 0; s < R->fw->max_slots; s++) slot_release(R, s);
    free(R->slots);
    free(R->prompt);
    okv_free_mem(R->logits);
    free(R->step_slots);
    free(R->step_ids);
    sampler_free(&R->sampler);
}

static int runner_init(runner *R) {
    const okv_forward *fw = R->fw;
    int nv = OKV_MIN(tokenizer_n_vocab(R->tok), fw->n_vocab);
    int st = sampler_init(&R->sampler, nv);
    if (st) return st;
    R->slots = calloc((size_t)fw->max_slots, sizeof *R->slots);
    R->prompt = malloc(sizeof(int32_t) * ((size_t)fw->max_ctx + 1));
    R->logits = okv_alloc(sizeof(float) * (size_t)fw->max_slots * fw->n_vocab);
    R->step_slots = malloc(sizeof(int) * (size_t)fw->max_slots);
    R->step_ids = malloc(sizeof(int32_t) * (size_t)fw->max_slots);
    if (!R->slots || !R->prompt || !R->logits || !R->step_slots || !R->step_ids)
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate the runner's buffers for %d slots of %d "
                        "tokens", fw->max_slots, fw->max_ctx);
    char piece[1 << 16];
    R->max_piece = 1;
    for (int id = 0; id < tokenizer_n_vocab(R->tok); id++)
        R->max_piece = OKV_MAX(R->max_piece, tokenizer_piece(R->tok, id, false, piece, sizeof piece));
    return OKV_OK;
}

int runner_serve(const okv_forward *fw, const okv_tokenizer *tok, const okv_run_config *rc,
                 const okv_runner_opts *opts, okv_request_list *reqs, okv_result_sink sink,
                 void *sink_ctx, int *n_errors) {
    runner R = {.fw = fw, .tok = tok, .rc = rc, .o = opts, .sink = sink, .sink_ctx = sink_ctx};
    *n_errors = 0;
    int st = runner_init(&R);
    for (int i = 0; i < reqs->n; i++) R.n_todo += !reqs->items[i].skip;
    int next = 0, decoded = 0;
    double t_log = okv_now_s(), t_start = t_log, t_decode = 0.0;
    while (!st) {
        for (int s = 0; s < fw->max_slots && !st; s++) {
            while (!R.slots[s].req && !st) {
                while (next < reqs->n && reqs->items[next].skip) next++;
                if (next == reqs->n) break;
                st = admit(&R, &reqs->items[next++], s);
            }
        }
        int active = 0;
        for (int s = 0; s < fw->max_slots; s++) active += R.slots[s].req != NULL;
        if (st || !active) break;
        double t0 = okv_now_s();
        st = decode_step(&R, &decoded);
        double now = okv_now_s();
        t_decode += now - t0;
        /* Admissions run between steps, so the rate counts decode time only. */
        if (now - t_log >= opts->progress_s && t_decode > 0) {
            OKV_INFO("decode: %d tokens in %.1f s of decoding (%.1f tok/s), %d active, %d of %d "
                     "requests done", decoded, t_decode, decoded / t_decode, active, R.n_done,
                     R.n_todo);
            decoded = 0;
            t_decode = 0.0;
            t_log = now;
        }
    }
    if (!st)
        OKV_INFO("served %d requests (%d error records) in %.1f s", R.n_done, R.n_errors,
                 okv_now_s() - t_start);
    *n_errors = R.n_errors;
    runner_free(&R);
    return st;
}
