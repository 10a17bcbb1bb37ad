/* runner.c — continuous batching over the asynchronous okv_forward: admit requests into free
 * slots (tokenize, length check, queue the prompt chunks), queue a decode step for every idle
 * micro-batch with sequences ready, and as units finish accept their tokens until each sequence
 * meets an end-of-generation token, a stop string or its token limit. A freed slot is refilled at
 * once, so new requests join their micro-batch while the others run. Everything a step touches
 * is sized at start-up or at admission. Tested by tests/e2e/test_run_batch.sh (local) and
 * tests/mpi/test_pipeline.sh (the same requests over 1..4 pipeline ranks). */
#include "runner.h"

#include "../common.h"

#include <stdlib.h>
#include <string.h>

/* ---- sampling, shared by every forward ---------------------------------------------------- */

uint64_t okv_fnv1a32(uint64_t h, const void *words, size_t n_words) {
    const unsigned char *p = words;
    for (size_t i = 0; i < n_words; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, sizeof w);
        h ^= w;
        h *= 0x100000001b3ull;
    }
    return h;
}

void forward_sample(okv_sampler *s, const float *logits, int n_logits, const okv_sample_req *q,
                    bool digest, okv_sampled *out) {
    okv_rng rng;
    rng_seed_step(&rng, q->seed, (uint64_t)q->n_gen);
    out->slot = q->slot;
    out->token = sampler_sample(s, logits, &q->sp, &rng);
    out->digest = digest ? okv_fnv1a32(OKV_FNV_OFFSET, logits, (size_t)n_logits) : 0;
}

/* ---- the forward of a whole model on this rank -------------------------------------------- */

typedef struct local_unit {
    int mb;
    bool first;
    int n;
    okv_metrics delta;
    okv_sampled *out; /* [max_slots] */
} local_unit;

/* Work runs when it is queued; finished units wait in a ring until polled. At most
 * max_slots + n_mb units are outstanding (one per prefilling slot, one per micro-batch), so a
 * ring one longer keeps a polled unit intact until the next poll. */
typedef struct local_forward {
    okv_engine *e;
    int *slots;          /* [max_slots] */
    okv_sampler sampler; /* over the tokenizer's ids */
    bool digest;
    local_unit *ring;    /* [cap] */
    okv_sampled *outs;   /* [cap][max_slots] */
    int cap, head, len;
} local_forward;

static local_unit *local_push(local_forward *lf) {
    OKV_ASSERT(lf->len < lf->cap);
    local_unit *u = &lf->ring[(lf->head + lf->len++) % lf->cap];
    return u;
}

static int local_seq_start(void *ctx, int slot, int n_prompt, int *k) {
    local_forward *lf = ctx;
    int st = engine_seq_start(lf->e, slot, n_prompt);
    if (!st) *k = lf->e->slots[slot].sel.k;
    return st;
}

static void local_seq_end(void *ctx, int slot) { engine_seq_end(((local_forward *)ctx)->e, slot); }

static int local_prefill(void *ctx, int mb, int slot, const int32_t *ids, int pos0, int n,
                         const okv_sample_req *last) {
    local_forward *lf = ctx;
    okv_engine *e = lf->e;
    engine_embed(e, ids, n);
    int st = engine_prefill(e, slot, pos0, n);
    if (st || !last) return st;
    const int nv = e->model->cfg.n_vocab;
    const float *logits = engine_head(e, n - 1, 1);
    local_unit *u = local_push(lf);
    u->mb = mb;
    u->first = true;
    u->n = 1;
    memset(&u->delta, 0, sizeof u->delta);
    forward_sample(&lf->sampler, logits, nv, last, lf->digest, &u->out[0]);
    return OKV_OK;
}

static int local_decode(void *ctx, int mb, const okv_sample_req *seqs, const int32_t *ids, int n) {
    local_forward *lf = ctx;
    okv_engine *e = lf->e;
    for (int i = 0; i < n; i++) lf->slots[i] = seqs[i].slot;
    okv_metrics before = e->metrics;
    engine_embed(e, ids, n);
    int st = engine_decode(e, lf->slots, n);
    if (st) return st;
    const int nv = e->model->cfg.n_vocab;
    const float *logits = engine_head(e, 0, n);
    local_unit *u = local_push(lf);
    u->mb = mb;
    u->first = false;
    u->n = n;
    engine_metrics_diff(&u->delta, &before, &e->metrics);
    for (int i = 0; i < n; i++)
        forward_sample(&lf->sampler, logits + (size_t)i * nv, nv, &seqs[i], lf->digest, &u->out[i]);
    return OKV_OK;
}

static int local_poll(void *ctx, bool wait, okv_done *d, bool *got) {
    local_forward *lf = ctx;
    /* Work finishes when queued, so there is never anything to wait for. */
    (void)wait;
    *got = lf->len > 0;
    if (!*got) return OKV_OK;
    const local_unit *u = &lf->ring[lf->head];
    lf->head = (lf->head + 1) % lf->cap;
    lf->len--;
    d->mb = u->mb;
    d->first = u->first;
    d->n = u->n;
    d->out = u->out;
    d->delta = u->delta;
    return OKV_OK;
}

int forward_local_init(okv_forward *f, okv_engine *e) {
    memset(f, 0, sizeof *f);
    const okv_model *m = e->model;
    local_forward *lf = calloc(1, sizeof *lf);
    OKV_ASSERT(lf);
    lf->e = e;
    lf->digest = e->rc->logits_digest;
    int n_mb = e->rc->micro_batches > 0 ? OKV_MIN(e->rc->micro_batches, e->max_slots) : 1;
    lf->cap = e->max_slots + n_mb + 1;
    int nv = m->tok ? OKV_MIN(tokenizer_n_vocab(m->tok), m->cfg.n_vocab) : m->cfg.n_vocab;
    int st = sampler_init(&lf->sampler, nv);
    lf->slots = calloc((size_t)e->max_slots, sizeof(int));
    lf->ring = calloc((size_t)lf->cap, sizeof *lf->ring);
    lf->outs = calloc((size_t)lf->cap * (size_t)e->max_slots, sizeof *lf->outs);
    f->ctx = lf;
    if (st || !lf->slots || !lf->ring || !lf->outs) {
        forward_local_free(f);
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate the forward's buffers for %d tokens and "
                        "%d slots", e->max_tok, e->max_slots);
    }
    for (int i = 0; i < lf->cap; i++) lf->ring[i].out = lf->outs + (size_t)i * e->max_slots;
    f->max_slots = e->max_slots;
    f->max_ctx = e->max_ctx;
    f->max_tok = e->max_tok;
    f->n_vocab = m->cfg.n_vocab;
    f->n_mb = n_mb;
    f->seq_start = local_seq_start;
    f->seq_end = local_seq_end;
    f->prefill = local_prefill;
    f->decode = local_decode;
    f->poll = local_poll;
    return OKV_OK;
}

void forward_local_free(okv_forward *f) {
    local_forward *lf = f->ctx;
    if (lf) {
        free(lf->slots);
        free(lf->ring);
        free(lf->outs);
        sampler_free(&lf->sampler);
    }
    free(lf);
    memset(f, 0, sizeof *f);
}

/* ---- serving ----------------------------------------------------------------------------- */

typedef enum slot_state {
    SLOT_FREE = 0,
    SLOT_PREFILL = 1, /* prompt chunks queued; waiting for the first token */
    SLOT_READY = 2,   /* has a token to feed to the next step of its micro-batch */
    SLOT_RUNNING = 3, /* in a decode step in flight */
} slot_state;

typedef struct run_slot {
    okv_request *req;   /* NULL: free */
    slot_state state;
    int n_prompt, k, max_new, n_gen;
    int32_t *gen;       /* [max_new] generated ids */
    char *text;         /* [text_cap] detokenised output */
    size_t text_len, text_cap, max_stop;
    okv_sample_params sp;
    uint64_t seed;
    bool ignore_eos;
    okv_finish finish;
    uint64_t digest;
    double t_admit, t_prefill;
    double prefill_busy0; /* R->prefill_busy when its own prompt chunks were queued */
    size_t streamed;      /* text bytes passed to the stream callback */
    double *t_tok;      /* [max_new] okv_now_s() at which each generated token arrived: the
                           first token's ends the prefill, the last one's the decode */
    okv_result_metrics m;
} run_slot;

typedef struct runner {
    const okv_forward *fw;
    const okv_tokenizer *tok;
    const okv_run_config *rc;
    const okv_runner_opts *o;
    run_slot *slots;            /* [max_slots] */
    int32_t *prompt;            /* [max_ctx + 1] ids of the request being admitted */
    bool *mb_busy;              /* [n_mb] a decode step of the micro-batch is in flight */
    okv_sample_req *step_reqs;  /* [max_slots] */
    int32_t *step_ids;          /* [max_slots] */
    int max_piece;              /* longest token text in bytes */
    okv_result_sink sink;
    void *sink_ctx;
    int n_errors, n_done, n_todo;
    int n_prefill, n_busy;      /* slots in SLOT_PREFILL, micro-batches in flight */
    int decoded;                /* tokens since the last progress line */
    double prefill_busy;        /* seconds spent queueing prompt chunks (prefill on this rank) */
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
    free(sl->t_tok);
    free(sl->text);
    memset(sl, 0, sizeof *sl);
}

/* Seconds from the request's first prompt chunk to its first token, less the prefill of other
 * requests that ran on this rank in between (their chunks were queued after its own). */
static double prefill_seconds(const runner *R, const run_slot *sl) {
    return OKV_MAX(0.0, sl->t_tok[0] - sl->t_prefill - (R->prefill_busy - sl->prefill_busy0));
}

/* Passes the text no stop string can cut any more to the stream callback (all of it when the
 * request has finished). */
static int stream_text(const runner *R, run_slot *sl, bool finished) {
    if (!R->o->stream) return OKV_OK;
    const size_t hold = finished || !sl->max_stop ? 0 : sl->max_stop - 1;
    const size_t end = sl->text_len > hold ? sl->text_len - hold : 0;
    if (end <= sl->streamed) return OKV_OK;
    int st = R->o->stream(R->o->stream_ctx, sl->req, sl->text + sl->streamed, end - sl->streamed);
    sl->streamed = end;
    return st;
}

static int slot_finish(runner *R, int s) {
    run_slot *sl = &R->slots[s];
    R->fw->seq_end(R->fw->ctx, s);
    OKV_ASSERT(sl->n_gen >= 1); /* a sequence finishes on an accepted token */
    const double t_first = sl->t_tok[0], dec_s = sl->t_tok[sl->n_gen - 1] - t_first;
    const double prefill_s = prefill_seconds(R, sl);
    int st = stream_text(R, sl, true);
    if (st) return st;
    okv_result res = {
        .req = sl->req,
        .text = sl->text,
        .text_len = sl->text_len,
        .tokens = sl->gen,
        .n_tokens = sl->n_gen,
        .prompt_tokens = sl->n_prompt,
        .finish = sl->finish,
        .ttft_ms = (t_first - sl->t_admit) * 1e3,
        .prefill_tok_s = prefill_s > 0 ? sl->n_prompt / prefill_s : 0.0,
        .decode_tok_s = sl->n_gen > 1 && dec_s > 0 ? (sl->n_gen - 1) / dec_s : 0.0,
        .t_prefill_s = sl->t_prefill,
        .token_times = sl->t_tok,
        .k = R->rc->policy == POLICY_OMNIKV ? OKV_MIN(sl->k, sl->n_prompt) : sl->n_prompt,
        .policy = R->rc->policy == POLICY_OMNIKV ? "omnikv" : "dense",
        .metrics = sl->m,
        .has_digest = R->rc->logits_digest,
        .logits_digest = sl->digest,
    };
    st = emit(R, &res);
    slot_release(R, s);
    return st;
}

/* Appends a sampled token; returns true when the sequence is finished (sl->finish set). */
static bool accept_token(runner *R, run_slot *sl, const okv_sampled *o) {
    const int32_t id = o->token;
    sl->t_tok[sl->n_gen] = okv_now_s();
    sl->gen[sl->n_gen++] = id;
    sl->digest = okv_fnv1a32(sl->digest, &o->digest, 2);
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

static okv_sample_req sample_req(const run_slot *sl, int s) {
    return (okv_sample_req){.slot = s, .n_gen = sl->n_gen, .sp = sl->sp, .seed = sl->seed};
}

/* Admits req into free slot s and queues its prompt. The request may end here (an error record
 * or no tokens to generate), leaving the slot free. */
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

    sl->req = req;
    sl->state = SLOT_PREFILL;
    sl->n_prompt = n;
    sl->k = k;
    sl->max_new = max_new;
    sl->gen = malloc(sizeof(int32_t) * (size_t)max_new);
    sl->t_tok = malloc(sizeof(double) * (size_t)max_new);
    sl->text_cap = (size_t)max_new * (size_t)R->max_piece + 1;
    sl->text = malloc(sl->text_cap);
    OKV_ASSERT(sl->gen && sl->t_tok && sl->text);
    sl->sp.temperature = req->temperature >= 0 ? req->temperature : rc->temperature;
    sl->sp.top_k = req->top_k >= 0 ? req->top_k : rc->top_k;
    sl->sp.top_p = req->top_p > 0 ? req->top_p : rc->top_p;
    /* Without its own seed a request's stream depends on its line, not on batching, the rank
     * count or --resume order. */
    sl->seed = req->has_seed ? req->seed : rc->seed + (uint64_t)req->line;
    sl->ignore_eos = req->ignore_eos >= 0 ? req->ignore_eos : rc->ignore_eos;
    for (int i = 0; i < req->n_stop; i++) sl->max_stop = OKV_MAX(sl->max_stop, strlen(req->stop[i]));
    sl->digest = OKV_FNV_OFFSET;
    sl->t_admit = t_admit;
    R->n_prefill++;

    const int mb = s % fw->n_mb;
    const int chunk = OKV_MIN(rc->prefill_chunk, fw->max_tok);
    const okv_sample_req first = sample_req(sl, s);
    sl->t_prefill = okv_now_s();
    sl->prefill_busy0 = R->prefill_busy;
    for (int p = 0; p < n; p += chunk) {
        int m = OKV_MIN(chunk, n - p);
        st = fw->prefill(fw->ctx, mb, s, R->prompt + p, p, m, p + m == n ? &first : NULL);
        if (st) {
            fw->seq_end(fw->ctx, s);
            R->n_prefill--;
            slot_release(R, s);
            return st == OKV_ERR_REQUEST ? emit_error(R, req, okv_last_error()) : st;
        }
    }
    /* This request's own chunks are not another request's prefill. */
    const double own = okv_now_s() - sl->t_prefill;
    R->prefill_busy += own;
    sl->prefill_busy0 += own;
    return OKV_OK;
}

/* A request's share of a decode step's counters; the step itself counts whole for each request
 * it advanced, so steps is the number of steps the request took part in. */
static void metrics_share(okv_result_metrics *m, const okv_metrics *d, double share) {
    const double steps = m->steps; /* a request takes part in whole steps */
#define METRICS_SHARE(name, type, what) m->name += (double)d->name * share;
    OKV_METRICS_FIELDS(METRICS_SHARE)
#undef METRICS_SHARE
    m->steps = steps + (double)d->steps;
}

/* Queues the next decode step of micro-batch mb over its ready sequences. */
static int submit_step(runner *R, int mb) {
    const okv_forward *fw = R->fw;
    int n = 0;
    for (int s = mb; s < fw->max_slots; s += fw->n_mb) {
        run_slot *sl = &R->slots[s];
        if (sl->state != SLOT_READY) continue;
        R->step_reqs[n] = sample_req(sl, s);
        R->step_ids[n] = sl->gen[sl->n_gen - 1];
        n++;
    }
    if (!n) return OKV_OK;
    int st = fw->decode(fw->ctx, mb, R->step_reqs, R->step_ids, n);
    if (st) {
        if (st != OKV_ERR_REQUEST) return st;
        /* The step failed for the micro-batch: each of its requests gets the reason. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", okv_last_error());
        for (int i = 0; i < n; i++) {
            int s = R->step_reqs[i].slot;
            fw->seq_end(fw->ctx, s);
            int st2 = emit_error(R, R->slots[s].req, msg);
            slot_release(R, s);
            if (st2) return st2;
        }
        return OKV_OK;
    }
    for (int i = 0; i < n; i++) R->slots[R->step_reqs[i].slot].state = SLOT_RUNNING;
    R->mb_busy[mb] = true;
    R->n_busy++;
    return OKV_OK;
}

/* Takes in a finished unit: first tokens and decode steps. */
static int on_done(runner *R, const okv_done *d) {
    int st = OKV_OK;
    if (d->first) {
        OKV_ASSERT(d->n == 1);
        const int s = d->out[0].slot;
        run_slot *sl = &R->slots[s];
        OKV_ASSERT(sl->state == SLOT_PREFILL);
        R->n_prefill--;
        bool done = accept_token(R, sl, &d->out[0]);
        double prefill_s = prefill_seconds(R, sl);
        OKV_INFO("request %s: %d prompt tokens, prefill %.1f tok/s (%.0f ms)", sl->req->id,
                 sl->n_prompt, prefill_s > 0 ? sl->n_prompt / prefill_s : 0.0, prefill_s * 1e3);
        sl->state = SLOT_READY;
        return done ? slot_finish(R, s) : stream_text(R, sl, false);
    }
    OKV_ASSERT(R->mb_busy[d->mb]);
    R->mb_busy[d->mb] = false;
    R->n_busy--;
    R->decoded += d->n;
    for (int i = 0; i < d->n && !st; i++) {
        const int s = d->out[i].slot;
        run_slot *sl = &R->slots[s];
        OKV_ASSERT(sl->state == SLOT_RUNNING && s % R->fw->n_mb == d->mb);
        metrics_share(&sl->m, &d->delta, 1.0 / d->n);
        sl->state = SLOT_READY;
        st = accept_token(R, sl, &d->out[i]) ? slot_finish(R, s) : stream_text(R, sl, false);
    }
    return st;
}

static void runner_free(runner *R) {
    if (R->slots)
        for (int s = 0; s < R->fw->max_slots; s++) slot_release(R, s);
    free(R->slots);
    free(R->prompt);
    free(R->mb_busy);
    free(R->step_reqs);
    free(R->step_ids);
}

static int runner_init(runner *R) {
    const okv_forward *fw = R->fw;
    OKV_ASSERT(fw->n_mb >= 1 && fw->n_mb <= fw->max_slots);
    R->slots = calloc((size_t)fw->max_slots, sizeof *R->slots);
    R->prompt = malloc(sizeof(int32_t) * ((size_t)fw->max_ctx + 1));
    R->mb_busy = calloc((size_t)fw->n_mb, sizeof *R->mb_busy);
    R->step_reqs = malloc(sizeof *R->step_reqs * (size_t)fw->max_slots);
    R->step_ids = malloc(sizeof(int32_t) * (size_t)fw->max_slots);
    if (!R->slots || !R->prompt || !R->mb_busy || !R->step_reqs || !R->step_ids)
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
    int next = 0;
    double t_log = okv_now_s(), t_start = t_log, busy_log = 0.0;
    while (!st) {
        for (int s = 0; s < fw->max_slots && !st; s++) {
            while (R.slots[s].state == SLOT_FREE && !st) {
                while (next < reqs->n && reqs->items[next].skip) next++;
                if (next == reqs->n) break;
                st = admit(&R, &reqs->items[next++], s);
            }
        }
        for (int mb = 0; mb < fw->n_mb && !st; mb++)
            if (!R.mb_busy[mb]) st = submit_step(&R, mb);
        if (st || (!R.n_busy && !R.n_prefill)) break;
        /* Wait for one unit, then take whatever else has finished before queueing more, so
         * sequences that became ready together step together. */
        bool wait = true, got = true;
        while (!st && got) {
            okv_done d;
            st = fw->poll(fw->ctx, wait, &d, &got);
            if (!st && got) st = on_done(&R, &d);
            wait = false;
        }
        double now = okv_now_s();
        if (opts->progress_s > 0 && now - t_log >= opts->progress_s && R.decoded) {
            int active = 0;
            for (int s = 0; s < fw->max_slots; s++) active += R.slots[s].state != SLOT_FREE;
            /* The rate leaves out the seconds this rank spent on prompts in the interval. */
            const double dec_s = now - t_log - (R.prefill_busy - busy_log);
            OKV_INFO("decode: %d tokens in %.1f s of decoding (%.1f tok/s), %d active, %d of %d "
                     "requests done", R.decoded, dec_s, dec_s > 0 ? R.decoded / dec_s : 0.0, active,
                     R.n_done, R.n_todo);
            R.decoded = 0;
            t_log = now;
            busy_log = R.prefill_busy;
        }
    }
    if (!st)
        OKV_INFO("served %d requests (%d error records) in %.1f s", R.n_done, R.n_errors,
                 okv_now_s() - t_start);
    *n_errors = R.n_errors;
    runner_free(&R);
    return st;
}
