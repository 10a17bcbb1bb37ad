/* stage.c — pipeline start-up, rank 0's forward (stage 0 + token collection), the loop of the
 * other stages and shutdown. Nothing on the per-step path allocates: message rings, hidden
 * states, logits and sampler scratch are sized here at start-up. Tested by
 * tests/mpi/test_pipeline.sh and tests/mpi/test_fault.sh. */
#include "stage.h"

#include "costs.h"
#include "msg.h"

#include "../src/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { TAG_FWD = 100, TAG_RET = 110 };

/* acc += this stage's counters of one step; the step itself was counted by stage 0. */
static void metrics_accumulate(okv_metrics *acc, const okv_metrics *a, const okv_metrics *b) {
    okv_metrics d;
    engine_metrics_diff(&d, a, b);
    d.steps = 0;
    engine_metrics_add(acc, &d);
}

static _Noreturn void stage_fail(int line, const char *fmt, const char *detail) {
    char msg[1200];
    snprintf(msg, sizeof msg, fmt, detail);
    okv_die(__FILE__, line, msg);
}

/* ---- start-up ------------------------------------------------------------------------------ */

typedef struct setup_msg {
    int st;
    int n_mb;
    int n_stages;
    int first[OKV_MAX_STAGES + 1];
} setup_msg;


/* Logs a block of text line by line with the rank prefix. */
static void log_block(char *text) {
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) OKV_INFO("%s", line);
}

/* Rank 0: reads the model's layout (tensor pointers only), validates the run config against it
 * and chooses the stages and the micro-batch count. */
static int plan_rank0(pipe_ctx *pc, const char *path, setup_msg *sm) {
    const okv_run_config *rc = &pc->rc;
    okv_model meta;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true,
                          .need_tokenizer = false, .max_context_len = rc->max_context_len};
    int st = model_load(&meta, path, &mo);
    if (st) {
        model_free(&meta);
        return st == OKV_ERR_USAGE ? st : OKV_ERR_INPUT;
    }
    const okv_model_config *c = &meta.cfg;
    pipe_costs costs;
    memset(&costs, 0, sizeof costs);
    st = config_validate(rc, c->n_layers);
    int n_mb = rc->micro_batches > 0 ? rc->micro_batches : OKV_MIN(pc->size, rc->max_batch);
    if (!st && rc->micro_batches > rc->max_batch)
        st = okv_fail(OKV_ERR_USAGE, "micro_batches=%d exceeds max_batch=%d: every micro-batch "
                      "needs at least one sequence; raise max_batch or lower micro_batches",
                      rc->micro_batches, rc->max_batch);
    if (!st) {
        const int64_t max_ctx = rc->max_context_len > 0 ? rc->max_context_len : c->ctx_train;
        const int64_t expect = rc->expected_context > 0 ? OKV_MIN((int64_t)rc->expected_context, max_ctx)
                                                        : max_ctx;
        const int64_t gen = OKV_MIN((int64_t)rc->max_new_tokens, expect / 2);
        pipe_rates r;
        const bool measure = pc->size > 1 && rc->plan_measured;
        /* rank 0 stands for every rank: the same cores per rank are assumed */
        if (measure)
            st = pipe_rates_measure(&meta, OKV_TYPE_F32, rc->kv_type,
                                    (rc->max_batch + n_mb - 1) / n_mb, rc->threads, &r);
        if (!st) st = pipe_costs_init(&costs, &meta, OKV_TYPE_F32, rc, rc->max_batch, n_mb,
                                      expect - gen, gen, measure ? &r : NULL);
        if (!st && measure) {
            char text[400];
            pipe_rates_describe(&r, text, sizeof text);
            OKV_INFO("planner cost measured with %d thread(s), %d sequence(s) per step: %s",
                     r.n_threads, r.step_batch, text);
        }
        if (!st)
            st = rc->stages[0] ? planner_hand(&costs.cm, rc->stages, pc->size, &pc->plan)
                               : planner_plan(&costs.cm, pc->size, PLANNER_ALIGN_SLACK, &pc->plan);
        if (!st) {
            char *text = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&text, &len);
            OKV_ASSERT(f);
            planner_print(&pc->plan, &costs.cm, f);
            fclose(f);
            log_block(text);
            free(text);
        }
    }
    if (!st) {
        sm->n_mb = n_mb;
        sm->n_stages = pc->plan.n_stages;
        memcpy(sm->first, pc->plan.first, sizeof sm->first);
    }
    pipe_costs_free(&costs);
    model_free(&meta);
    return st;
}

/* Every rank learns whether all started; rank 0 gets the first failing rank's message. */
static int agree(pipe_ctx *pc, int st) {
    typedef struct {
        int st;
        char msg[1020];
    } report;
    report me = {.st = st};
    if (st) snprintf(me.msg, sizeof me.msg, "%s", okv_last_error());
    if (st && pc->rank != 0) OKV_ERROR("%s", me.msg);
    report *all = NULL;
    if (pc->rank == 0) {
        all = calloc((size_t)pc->size, sizeof *all);
        OKV_ASSERT(all);
    }
    MPI_Request rq;
    CHECK_MPI(MPI_Igather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0,
                          pc->comm, &rq));
    pipe_wait_coll(pc->comm, &rq, pc->rc.peer_timeout_s, "start-up (gathering every rank's status)");
    int worst = 0;
    CHECK_MPI(MPI_Iallreduce(&st, &worst, 1, MPI_INT, MPI_MAX, pc->comm, &rq));
    pipe_wait_coll(pc->comm, &rq, pc->rc.peer_timeout_s, "start-up (agreeing every rank started)");
    if (pc->rank == 0 && worst && !st) {
        for (int r = 1; r < pc->size; r++)
            if (all[r].st) {
                okv_fail(all[r].st, "rank %d: %s", r, all[r].msg);
                break;
            }
    }
    free(all);
    return worst;
}

/* Loads this stage's layers and sizes its engine and buffers. */
static int load_stage(pipe_ctx *pc, const char *path) {
    const int s = pc->rank;
    const int b = pc->plan.first[s], e = pc->plan.first[s + 1];
    model_load_opts mo = {.layer_begin = b, .layer_end = e, .need_embed = s == 0,
                          .need_head = pc->last, .need_tokenizer = s == 0,
                          .max_context_len = pc->rc.max_context_len};
    int st = model_load(&pc->model, path, &mo);
    if (st) return st == OKV_ERR_USAGE ? st : OKV_ERR_INPUT;
    if (s == 0 && !pc->model.tok)
        return okv_fail(OKV_ERR_INPUT, "%s has no tokenizer omnikv can use", path);
    if ((st = engine_init(&pc->eng, &pc->model, &pc->rc, b, e, pc->rc.max_batch))) return st;
    const okv_engine *en = &pc->eng;
    const int L = pc->model.cfg.n_layers;
    pc->dim = pc->model.cfg.dim;
    pc->n_in = planner_boundary_groups(L, en->plan.role, en->plan.group, b, pc->in_groups, OKV_MAX_FILTERS);
    pc->n_out = planner_boundary_groups(L, en->plan.role, en->plan.group, e, pc->out_groups, OKV_MAX_FILTERS);
    int64_t per_seq = OKV_MIN((int64_t)en->max_ctx, (int64_t)config_budget(&pc->rc, en->max_ctx));
    pc->max_idx = (int64_t)en->max_slots * OKV_MAX(pc->n_in, pc->n_out) * per_seq;
    pc->slots = calloc((size_t)en->max_slots, sizeof *pc->slots);
    pc->seqbuf = calloc((size_t)en->max_slots, sizeof *pc->seqbuf);
    pc->outbuf = calloc((size_t)en->max_slots, sizeof *pc->outbuf);
    OKV_ASSERT(pc->slots && pc->seqbuf && pc->outbuf);
    /* Received payloads land in host memory; sends go straight from the engine's hidden states
     * in its backend's memory (the transport stages them when they are device memory). */
    pc->act_kind = OKV_MEM_HOST;
    const size_t n_counts = (size_t)en->max_slots * OKV_MAX_FILTERS;
    pipe_msg *ms[3] = {&pc->in, &pc->out, &pc->ret_in};
    for (int i = 0; i < 3; i++) {
        pipe_msg *m = ms[i];
        m->cap_seq = en->max_slots;
        m->cap_idx = pc->max_idx;
        m->seqs = calloc((size_t)en->max_slots, sizeof *m->seqs);
        m->out = calloc((size_t)en->max_slots, sizeof *m->out);
        m->counts = calloc(n_counts, sizeof *m->counts);
        m->idx = calloc((size_t)OKV_MAX(pc->max_idx, 1), sizeof *m->idx);
        if (!m->seqs || !m->out || !m->counts || !m->idx)
            return okv_fail(OKV_ERR_NOMEM, "cannot allocate stage message buffers for %lld index "
                            "entries", (long long)pc->max_idx);
    }
    if (s == 0) {
        pc->n_prompt = calloc((size_t)en->max_slots, sizeof *pc->n_prompt);
        if (!pc->n_prompt) return okv_fail(OKV_ERR_NOMEM, "cannot allocate stage buffers");
    }
    return OKV_OK;
}

static int init_buffers(pipe_ctx *pc) {
    const okv_engine *en = &pc->eng;
    const size_t data_cap = sizeof(float) * (size_t)en->max_tok * pc->dim;
    size_t pre = pipe_msg_ctrl_bytes(PIPE_MSG_PREFILL, 1, 0, 0);
    int st = OKV_OK;
    if (!pc->last) {
        size_t cap = OKV_MAX(pre, pipe_msg_ctrl_bytes(PIPE_MSG_DECODE, en->max_slots, pc->n_out, pc->max_idx));
        for (int i = 0; i < PIPE_RING && !st; i++)
            st = pc->tr.buf_init(&pc->tr, &pc->send[i], cap, data_cap, pc->act_kind);
    }
    if (pc->rank > 0) {
        size_t cap = OKV_MAX(pre, pipe_msg_ctrl_bytes(PIPE_MSG_DECODE, en->max_slots, pc->n_in, pc->max_idx));
        for (int i = 0; i < PIPE_RING && !st; i++)
            st = pc->tr.buf_init(&pc->tr, &pc->recv[i], cap, data_cap, pc->act_kind);
    }
    /* Rank 0 keeps a receive posted for every unit that can be outstanding (a prefilling slot
     * or a micro-batch step each), so the last stage's returns always land at once. */
    if (pc->rank == 0) pc->n_retq = en->max_slots + pc->n_mb + 1;
    else if (pc->last) pc->n_retq = PIPE_RING;
    if (pc->n_retq) {
        pc->retq = calloc((size_t)pc->n_retq, sizeof *pc->retq);
        OKV_ASSERT(pc->retq);
        size_t cap = pipe_msg_ctrl_bytes(PIPE_MSG_TOKENS, en->max_slots, 0, 0);
        for (int i = 0; i < pc->n_retq && !st; i++)
            st = pc->ret.buf_init(&pc->ret, &pc->retq[i], cap, 0, OKV_MEM_HOST);
    }
    return st;
}

typedef struct stage_info {
    uint64_t weights, kv, bank;
    int pid, n_cores, gpu, bound;
    char cores[128], host[64], bank_desc[256];
} stage_info;

/* Rank 0 prints what every rank holds and where it runs. */
static void report_stages(pipe_ctx *pc, okv_transport_kind kind) {
    stage_info me;
    memset(&me, 0, sizeof me);
    const int gen = OKV_MIN(pc->rc.max_new_tokens, pc->eng.max_ctx);
    engine_memory(&pc->eng, pc->eng.max_ctx - gen, gen, &me.weights, &me.kv, &me.bank);
    me.pid = (int)getpid();
    me.n_cores = pc->place.n_cores;
    me.gpu = pc->place.gpu;
    me.bound = pc->place.bound;
    snprintf(me.cores, sizeof me.cores, "%s", pc->place.cores);
    snprintf(me.host, sizeof me.host, "%s", pc->place.host);
    bank_describe(&pc->eng.bank, me.bank_desc, sizeof me.bank_desc);
    stage_info *all = NULL;
    if (pc->rank == 0) {
        all = calloc((size_t)pc->size, sizeof *all);
        OKV_ASSERT(all);
    }
    MPI_Request rq;
    CHECK_MPI(MPI_Igather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0,
                          pc->comm, &rq));
    pipe_wait_coll(pc->comm, &rq, pc->rc.peer_timeout_s, "start-up (what every rank holds)");
    if (pc->rank == 0) {
        OKV_INFO("pipeline: %d stages, %d micro-batch(es) for max_batch %d, transport %s, %d "
                 "thread(s) per rank; memory for %d sequence(s) of %d prompt + %d generated tokens",
                 pc->size, pc->n_mb, pc->rc.max_batch, config_transport_name(kind), pc->rc.threads,
                 pc->eng.max_slots, pc->eng.max_ctx - gen, gen);
        for (int r = 0; r < pc->size; r++) {
            char w[32], kv[32], bank[32];
            planner_fmt_bytes((double)all[r].weights, w, sizeof w);
            planner_fmt_bytes((double)all[r].kv, kv, sizeof kv);
            planner_fmt_bytes((double)all[r].bank, bank, sizeof bank);
            char gpu[16] = "none";
            if (all[r].gpu >= 0) snprintf(gpu, sizeof gpu, "%d", all[r].gpu);
            OKV_INFO("rank %d: layers %d-%d, weights %s, KV cache %s, Context Bank %s (%s); cores "
                     "%s%s, GPU %s, pid %d on %s", r, pc->plan.first[r], pc->plan.first[r + 1] - 1,
                     w, kv, bank, all[r].bank_desc, all[r].cores, all[r].bound ? " (bound)" : "", gpu,
                     all[r].pid, all[r].host);
        }
    }
    free(all);
}

int pipe_setup(pipe_ctx *pc, const char *model_path, const okv_run_config *rc, int pre) {
    memset(pc, 0, sizeof *pc);
    CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &pc->comm));
    CHECK_MPI(MPI_Comm_set_errhandler(pc->comm, MPI_ERRORS_RETURN));
    CHECK_MPI(MPI_Comm_rank(pc->comm, &pc->rank));
    CHECK_MPI(MPI_Comm_size(pc->comm, &pc->size));
    pc->last = pc->rank == pc->size - 1;
    pc->rc = *rc;
    pc->ret_repost = -1;
    pipe_place_init(&pc->place, pc->comm);
    /* After binding, so the count is the cores this rank was given. */
    pc->rc.threads = okv_threads_resolve(pc->rc.threads, pc->rc.threads_from);

    setup_msg sm;
    memset(&sm, 0, sizeof sm);
    sm.st = pre;
    if (pc->rank == 0 && !sm.st) sm.st = plan_rank0(pc, model_path, &sm);
    MPI_Request rq;
    CHECK_MPI(MPI_Ibcast(&sm, (int)sizeof sm, MPI_BYTE, 0, pc->comm, &rq));
    pipe_wait_coll(pc->comm, &rq, pc->rc.peer_timeout_s, "start-up (the stage plan from rank 0)");
    if (sm.st) return sm.st;
    pc->n_mb = sm.n_mb;
    pc->plan.n_stages = sm.n_stages;
    memcpy(pc->plan.first, sm.first, sizeof sm.first);

    int st = load_stage(pc, model_path);
    pipe_transport_caps caps;
    pipe_transport_probe(pc->comm, pc->place.gpu, pc->rc.peer_timeout_s, &caps);
    okv_transport_kind kind = TRANSPORT_MPI;
    if (!st) st = pipe_transport_choose(pc->rc.transport, &caps, &kind);
    if ((st = agree(pc, st))) return st;

    int sv = 0;
    if (pc->rank == 0) sv = OKV_MIN(tokenizer_n_vocab(pc->model.tok), pc->model.cfg.n_vocab);
    CHECK_MPI(MPI_Ibcast(&sv, 1, MPI_INT, 0, pc->comm, &rq));
    pipe_wait_coll(pc->comm, &rq, pc->rc.peer_timeout_s, "start-up (the vocabulary from rank 0)");
    pc->sample_vocab = sv;
    st = pipe_transport_init(&pc->tr, kind, pc->comm, pc->place.gpu, &pc->eng.be,
                             pc->rc.peer_timeout_s);
    if (!st)
        st = pipe_transport_init(&pc->ret, TRANSPORT_MPI, pc->comm, -1, NULL, pc->rc.peer_timeout_s);
    if (!st) st = init_buffers(pc);
    if (!st && pc->last) st = sampler_init(&pc->sampler, sv);
    if (!st && pc->rank == 0 && pc->rc.trace[0]) {
        pc->names = calloc((size_t)pc->size, sizeof *pc->names);
        OKV_ASSERT(pc->names);
        for (int r = 0; r < pc->size; r++)
            snprintf(pc->names[r], sizeof pc->names[r], "stage %d: layers %d-%d", r,
                     pc->plan.first[r], pc->plan.first[r + 1] - 1);
    }
    if ((st = agree(pc, st))) return st;
    report_stages(pc, kind);
    st = pipe_trace_init(&pc->trace, pc->rc.trace, PIPE_TRACE_CAP, pc->comm);
    return agree(pc, st);
}

/* ---- sending -------------------------------------------------------------------------------- */

/* The next buffer of a send ring, once its previous send (message seqno - n) has drained. */
static pipe_buf *next_buf(pipe_ctx *pc, pipe_transport *t, pipe_buf *ring, int n, int *next,
                          int64_t seqno, const char *what) {
    pipe_buf *b = &ring[*next];
    *next = (*next + 1) % n;
    if (b->active) {
        double t0 = okv_now_s();
        pipe_wait(t, b, what, seqno - n);
        pipe_trace_add(&pc->trace, TRACE_SEND_WAIT, t0, okv_now_s(), -1, 0, -1, 0.0);
    }
    return b;
}

/* Serialises pc->out into the next forward buffer and sends it with n_tok rows of x. */
static void send_forward(pipe_ctx *pc, const void *x, int n_tok) {
    pipe_buf *b = next_buf(pc, &pc->tr, pc->send, PIPE_RING, &pc->send_next, pc->send_seqno,
                           "boundary message");
    pc->out.hdr.seqno = pc->send_seqno++;
    size_t n = pipe_msg_write(b->wire, b->ctrl_cap, &pc->out);
    pc->tr.send(&pc->tr, b, n, x, pc->eng.be.mem, sizeof(float) * (size_t)n_tok * pc->dim,
                pc->rank + 1, TAG_FWD);
}

static void send_decode(pipe_ctx *pc, int mb, const pipe_seq *seqs, int n, const void *x,
                        const okv_metrics *metrics) {
    okv_engine *e = &pc->eng;
    pipe_msg *m = &pc->out;
    int64_t off = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < pc->n_out; j++) {
            const int32_t *idx;
            int c = engine_get_selection(e, seqs[i].slot, pc->out_groups[j], &idx);
            OKV_ASSERT(off + c <= pc->max_idx);
            m->counts[i * pc->n_out + j] = c;
            memcpy(m->idx + off, idx, sizeof(int32_t) * (size_t)c);
            off += c;
        }
    pipe_msg_init(m, PIPE_MSG_DECODE, mb, n, n, pc->dim, pc->n_out, (int)off, 0);
    m->metrics = *metrics;
    for (int j = 0; j < pc->n_out; j++) m->groups[j] = pc->out_groups[j];
    memcpy(m->seqs, seqs, sizeof *seqs * (size_t)n);
    send_forward(pc, x, n);
}

static void send_prefill(pipe_ctx *pc, int mb, const pipe_seq *seq, int n_tok, const void *x) {
    pipe_msg *m = &pc->out;
    pipe_msg_init(m, PIPE_MSG_PREFILL, mb, 1, n_tok, pc->dim, 0, 0, 0);
    m->seqs[0] = *seq;
    send_forward(pc, x, n_tok);
}

static void send_stop(pipe_ctx *pc) {
    pipe_msg_init(&pc->out, PIPE_MSG_STOP, -1, 0, 0, pc->dim, 0, 0, 0);
    send_forward(pc, NULL, 0);
}

static void send_return(pipe_ctx *pc, pipe_msg_kind kind, int mb, const okv_sampled *out, int n,
                        const okv_metrics *metrics) {
    pipe_buf *b = next_buf(pc, &pc->ret, pc->retq, pc->n_retq, &pc->ret_next, pc->ret_seqno,
                           "token return");
    pipe_msg m = {.out = (okv_sampled *)out};
    pipe_msg_init(&m, kind, mb, n, 0, pc->dim, 0, 0, pc->ret_seqno++);
    m.metrics = *metrics;
    size_t bytes = pipe_msg_write(b->wire, b->ctrl_cap, &m);
    pc->ret.send(&pc->ret, b, bytes, NULL, OKV_MEM_HOST, 0, 0, TAG_RET);
}

static pipe_seq seq_of(const okv_sample_req *q, int pos, int n_prompt, int flags) {
    return (pipe_seq){.slot = q->slot, .pos = pos, .n_prompt = n_prompt, .n_gen = q->n_gen,
                      .flags = flags, .top_k = q->sp.top_k, .temperature = q->sp.temperature,
                      .top_p = q->sp.top_p, .seed = q->seed};
}

static okv_sample_req req_of(const pipe_seq *s) {
    return (okv_sample_req){.slot = s->slot, .n_gen = s->n_gen,
                            .sp = {.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p},
                            .seed = s->seed};
}

/* ---- rank 0: stage 0 behind okv_forward ------------------------------------------------------ */

static int fwd_seq_start(void *ctx, int slot, int n_prompt, int *k) {
    pipe_ctx *pc = ctx;
    int st = engine_seq_start(&pc->eng, slot, n_prompt);
    if (st) return st;
    pc->n_prompt[slot] = n_prompt;
    *k = pc->eng.slots[slot].sel.k;
    return OKV_OK;
}

static void fwd_seq_end(void *ctx, int slot) { engine_seq_end(&((pipe_ctx *)ctx)->eng, slot); }

static int fwd_prefill(void *ctx, int mb, int slot, const int32_t *ids, int pos0, int n,
                       const okv_sample_req *last) {
    pipe_ctx *pc = ctx;
    okv_engine *e = &pc->eng;
    double t0 = okv_now_s();
    engine_embed(e, ids, n);
    int st = engine_prefill(e, slot, pos0, n);
    if (st) return st;
    pipe_trace_add(&pc->trace, TRACE_PREFILL, t0, okv_now_s(), mb, n, slot, 0.0);
    okv_sample_req none = {.slot = slot};
    pipe_seq seq = seq_of(last ? last : &none, pos0, pc->n_prompt[slot], last ? PIPE_SEQ_SAMPLE : 0);
    send_prefill(pc, mb, &seq, n, engine_x(e));
    return OKV_OK;
}

static int fwd_decode(void *ctx, int mb, const okv_sample_req *seqs, const int32_t *ids, int n) {
    pipe_ctx *pc = ctx;
    okv_engine *e = &pc->eng;
    pipe_seq *sq = pc->seqbuf;
    for (int i = 0; i < n; i++) {
        const int s = seqs[i].slot;
        pc->slots[i] = s;
        sq[i] = seq_of(&seqs[i], e->slots[s].n_pos, e->slots[s].n_prompt, PIPE_SEQ_SAMPLE);
    }
    okv_metrics before = e->metrics, delta;
    double t0 = okv_now_s();
    engine_embed(e, ids, n);
    int st = engine_decode(e, pc->slots, n);
    if (st) return st;
    pipe_trace_add(&pc->trace, TRACE_DECODE, t0, okv_now_s(), mb, n, -1,
                   e->metrics.t_attn_sparse - before.t_attn_sparse);
    engine_metrics_diff(&delta, &before, &e->metrics);
    send_decode(pc, mb, sq, n, engine_x(e), &delta);
    return OKV_OK;
}

static int fwd_poll(void *ctx, bool wait, okv_done *d, bool *got) {
    pipe_ctx *pc = ctx;
    *got = false;
    if (pc->ret_repost >= 0) {
        pc->ret.recv(&pc->ret, &pc->retq[pc->ret_repost], pc->size - 1, TAG_RET);
        pc->ret_repost = -1;
    }
    pipe_buf *b = &pc->retq[pc->ret_next];
    bool done = false;
    if (pc->ret.test(&pc->ret, b, &done)) okv_die(__FILE__, __LINE__, okv_last_error());
    if (!done) {
        if (!wait) return OKV_OK;
        double t0 = okv_now_s();
        pipe_wait(&pc->ret, b, "token return", pc->ret_seqno);
        pipe_trace_add(&pc->trace, TRACE_RECV_WAIT, t0, okv_now_s(), -1, 0, -1, 0.0);
    }
    pipe_msg *m = &pc->ret_in;
    if (pipe_msg_read(b->wire, b->got_ctrl, pc->dim, pc->ret_seqno++, m))
        stage_fail(__LINE__, "token return from the last stage: %s", okv_last_error());
    const int kind = m->hdr.kind;
    if (kind != PIPE_MSG_TOKENS && kind != PIPE_MSG_FIRST_TOKEN)
        stage_fail(__LINE__, "rank 0 expected tokens from the last stage, got message kind %s",
                   kind == PIPE_MSG_STOP ? "stop" : "decode/prefill");
    d->mb = m->hdr.mb;
    d->first = kind == PIPE_MSG_FIRST_TOKEN;
    d->n = m->hdr.n_seq;
    d->out = m->out;
    d->delta = m->metrics;
    pc->ret_repost = pc->ret_next;
    pc->ret_next = (pc->ret_next + 1) % pc->n_retq;
    *got = true;
    return OKV_OK;
}

void pipe_forward(pipe_ctx *pc, okv_forward *fw) {
    memset(fw, 0, sizeof *fw);
    for (int i = 0; i < pc->n_retq; i++) pc->ret.recv(&pc->ret, &pc->retq[i], pc->size - 1, TAG_RET);
    fw->ctx = pc;
    fw->max_slots = pc->eng.max_slots;
    fw->max_ctx = pc->eng.max_ctx;
    fw->max_tok = pc->eng.max_tok;
    fw->n_vocab = pc->model.cfg.n_vocab;
    fw->n_mb = pc->n_mb;
    fw->seq_start = fwd_seq_start;
    fw->seq_end = fwd_seq_end;
    fw->prefill = fwd_prefill;
    fw->decode = fwd_decode;
    fw->poll = fwd_poll;
}

/* ---- the other stages ------------------------------------------------------------------------ */

static void check_slot(const pipe_ctx *pc, const pipe_seq *sq) {
    if (sq->slot >= 0 && sq->slot < pc->eng.max_slots) return;
    char what[96];
    snprintf(what, sizeof what, "slot %d of %d", sq->slot, pc->eng.max_slots);
    stage_fail(__LINE__, "stage message names %s", what);
}

static void stage_prefill(pipe_ctx *pc, const pipe_msg *m, float *x) {
    okv_engine *e = &pc->eng;
    const pipe_seq *sq = &m->seqs[0];
    const int n_tok = m->hdr.n_tok;
    check_slot(pc, sq);
    if (sq->pos == 0 && engine_seq_start(e, sq->slot, sq->n_prompt))
        stage_fail(__LINE__, "cannot start a sequence: %s", okv_last_error());
    const okv_slot *s = &e->slots[sq->slot];
    if (!s->active || s->n_pos != sq->pos || sq->pos + n_tok > s->n_prompt) {
        char what[160];
        snprintf(what, sizeof what, "prompt chunk for slot %d at %d+%d, but the slot holds %d of %d "
                 "tokens", sq->slot, sq->pos, n_tok, s->n_pos, s->n_prompt);
        stage_fail(__LINE__, "stage messages out of order: %s", what);
    }
    double t0 = okv_now_s();
    engine_x_load(e, x, n_tok);
    if (engine_prefill(e, sq->slot, sq->pos, n_tok))
        stage_fail(__LINE__, "prefill failed: %s", okv_last_error());
    pipe_trace_add(&pc->trace, TRACE_PREFILL, t0, okv_now_s(), m->hdr.mb, n_tok, sq->slot, 0.0);
    if (!pc->last) {
        send_prefill(pc, m->hdr.mb, sq, n_tok, engine_x(e));
        return;
    }
    if (!(sq->flags & PIPE_SEQ_SAMPLE)) return;
    const int nv = pc->model.cfg.n_vocab;
    double t1 = okv_now_s();
    const float *logits = engine_head(e, n_tok - 1, 1);
    okv_sample_req q = req_of(sq);
    okv_sampled out;
    forward_sample(&pc->sampler, logits, nv, &q, pc->rc.logits_digest, &out);
    pipe_trace_add(&pc->trace, TRACE_SAMPLE, t1, okv_now_s(), m->hdr.mb, 1, sq->slot, 0.0);
    okv_metrics none;
    memset(&none, 0, sizeof none);
    send_return(pc, PIPE_MSG_FIRST_TOKEN, m->hdr.mb, &out, 1, &none);
}

static void stage_decode(pipe_ctx *pc, pipe_msg *m, float *x) {
    okv_engine *e = &pc->eng;
    const int n = m->hdr.n_seq, ng = m->hdr.n_groups;
    bool groups_ok = ng == pc->n_in;
    for (int j = 0; j < ng && groups_ok; j++) groups_ok = m->groups[j] == pc->in_groups[j];
    if (!groups_ok)
        stage_fail(__LINE__, "a decode message carries index sets of other groups than this "
                   "stage's boundary needs%s", "");
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const pipe_seq *sq = &m->seqs[i];
        check_slot(pc, sq);
        const okv_slot *s = &e->slots[sq->slot];
        if (!s->active || s->n_pos != sq->pos) {
            char what[128];
            snprintf(what, sizeof what, "decode step for slot %d at position %d, but the slot is "
                     "at %d", sq->slot, sq->pos, s->n_pos);
            stage_fail(__LINE__, "stage messages out of order: %s", what);
        }
        pc->slots[i] = sq->slot;
        for (int j = 0; j < ng; j++) {
            int c = m->counts[i * ng + j];
            engine_set_selection(e, sq->slot, m->groups[j], m->idx + off, c);
            off += c;
        }
    }
    okv_metrics before = e->metrics;
    double t0 = okv_now_s();
    engine_x_load(e, x, n);
    if (engine_decode(e, pc->slots, n)) stage_fail(__LINE__, "decode failed: %s", okv_last_error());
    double t1 = okv_now_s();
    pipe_trace_add(&pc->trace, TRACE_DECODE, t0, t1, m->hdr.mb, n, -1,
                   e->metrics.t_attn_sparse - before.t_attn_sparse);
    if (!pc->last) {
        metrics_accumulate(&m->metrics, &before, &e->metrics);
        send_decode(pc, m->hdr.mb, m->seqs, n, engine_x(e), &m->metrics);
        return;
    }
    const int nv = pc->model.cfg.n_vocab;
    okv_sampled *out = pc->outbuf;
    const float *logits = engine_head(e, 0, n);
    /* after the head, whose matmul one rank counts too, so the time splits agree */
    metrics_accumulate(&m->metrics, &before, &e->metrics);
    for (int i = 0; i < n; i++) {
        okv_sample_req q = req_of(&m->seqs[i]);
        forward_sample(&pc->sampler, logits + (size_t)i * nv, nv, &q, pc->rc.logits_digest, &out[i]);
    }
    pipe_trace_add(&pc->trace, TRACE_SAMPLE, t1, okv_now_s(), m->hdr.mb, n, -1, 0.0);
    send_return(pc, PIPE_MSG_TOKENS, m->hdr.mb, out, n, &m->metrics);
}

void pipe_stage_run(pipe_ctx *pc) {
    for (int i = 0; i < PIPE_RING; i++) pc->tr.recv(&pc->tr, &pc->recv[i], pc->rank - 1, TAG_FWD);
    for (;;) {
        pipe_buf *b = &pc->recv[pc->recv_next];
        double t0 = okv_now_s();
        pipe_wait(&pc->tr, b, "boundary message", pc->recv_seqno);
        pipe_trace_add(&pc->trace, TRACE_RECV_WAIT, t0, okv_now_s(), -1, 0, -1, 0.0);
        pipe_msg *m = &pc->in;
        if (pipe_msg_read(b->wire, b->got_ctrl, pc->dim, pc->recv_seqno++, m))
            stage_fail(__LINE__, "bad message from the previous stage: %s", okv_last_error());
        const int kind = m->hdr.kind;
        if (kind == PIPE_MSG_STOP) {
            if (!pc->last) send_stop(pc);
            break;
        }
        if (kind != PIPE_MSG_DECODE && kind != PIPE_MSG_PREFILL)
            stage_fail(__LINE__, "unexpected message kind from the previous stage%s", "");
        if (pipe_msg_check_payload(&m->hdr, b->got_data))
            stage_fail(__LINE__, "bad message from the previous stage: %s", okv_last_error());
        if (!b->data) stage_fail(__LINE__, "a stage message without hidden states%s", "");
        /* act_kind is host memory today, so the engine takes the payload as it lies */
        if (kind == PIPE_MSG_PREFILL) stage_prefill(pc, m, b->data);
        else stage_decode(pc, m, b->data);
        pc->tr.recv(&pc->tr, b, pc->rank - 1, TAG_FWD);
        pc->recv_next = (pc->recv_next + 1) % PIPE_RING;
    }
}

/* ---- shutdown -------------------------------------------------------------------------------- */

static void cancel_recv(pipe_buf *b) {
    if (!b->active || !b->recv) return;
    for (int k = 0; k < 2; k++)
        if (b->rq[k] != MPI_REQUEST_NULL) {
            CHECK_MPI(MPI_Cancel(&b->rq[k]));
            CHECK_MPI(MPI_Wait(&b->rq[k], MPI_STATUS_IGNORE));
        }
    b->active = false;
}

int pipe_finish(pipe_ctx *pc) {
    if (pc->rank == 0) send_stop(pc);
    /* the last PIPE_RING (n_retq) messages sent may still be in flight */
    for (int i = 0; i < PIPE_RING; i++) {
        if (pc->send[i].active) pipe_wait(&pc->tr, &pc->send[i], "boundary message", pc->send_seqno - 1);
        cancel_recv(&pc->recv[i]);
    }
    for (int i = 0; i < pc->n_retq; i++) {
        if (pc->retq[i].active && !pc->retq[i].recv)
            pipe_wait(&pc->ret, &pc->retq[i], "token return", pc->ret_seqno - 1);
        cancel_recv(&pc->retq[i]);
    }
    int st = OKV_OK;
    if (pc->rc.trace[0]) st = pipe_trace_write(&pc->trace, pc->rc.trace, pc->comm, pc->names);
    int all = 0;
    MPI_Request rq;
    CHECK_MPI(MPI_Iallreduce(&st, &all, 1, MPI_INT, MPI_MAX, pc->comm, &rq));
    pipe_wait_coll(pc->comm, &rq, pc->rc.peer_timeout_s, "shutdown (every rank's final status)");
    return st ? st : all;
}

void pipe_free(pipe_ctx *pc) {
    for (int i = 0; i < PIPE_RING; i++) {
        if (pc->tr.buf_free && pc->send[i].wire) pc->tr.buf_free(&pc->tr, &pc->send[i]);
        if (pc->tr.buf_free && pc->recv[i].wire) pc->tr.buf_free(&pc->tr, &pc->recv[i]);
    }
    for (int i = 0; i < pc->n_retq && pc->retq; i++)
        if (pc->ret.buf_free && pc->retq[i].wire) pc->ret.buf_free(&pc->ret, &pc->retq[i]);
    free(pc->retq);
    pipe_transport_free(&pc->tr);
    pipe_transport_free(&pc->ret);
    pipe_trace_free(&pc->trace);
    sampler_free(&pc->sampler);
    free(pc->slots);
    free(pc->seqbuf);
    free(pc->outbuf);
    pipe_msg *ms[3] = {&pc->in, &pc->out, &pc->ret_in};
    for (int i = 0; i < 3; i++) {
        free(ms[i]->seqs);
        free(ms[i]->out);
        free(ms[i]->counts);
        free(ms[i]->idx);
    }
    free(pc->n_prompt);
    free(pc->names);
    engine_free(&pc->eng);
    model_free(&pc->model);
    if (pc->comm && pc->comm != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&pc->comm));
    memset(pc, 0, sizeof *pc);
}
