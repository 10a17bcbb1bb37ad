/* msg.c — field-by-field little-endian serialisation and checking of the stage-boundary and
 * return messages specified in msg.h. Tested by tests/unit/test_pipe_msg.c (round trips of every
 * kind, the exact bytes of a header, every rejected field). */
#include "msg.h"

#include "../src/common.h"

#include <string.h>

static bool is_return(int kind) { return kind == PIPE_MSG_TOKENS || kind == PIPE_MSG_FIRST_TOKEN; }
static bool is_forward(int kind) { return kind == PIPE_MSG_DECODE || kind == PIPE_MSG_PREFILL; }

size_t pipe_msg_ctrl_bytes(pipe_msg_kind kind, int n_seq, int n_groups, int64_t n_idx) {
    if (kind == PIPE_MSG_STOP) return PIPE_HDR_BYTES;
    size_t n = PIPE_HDR_BYTES + PIPE_METRICS_BYTES;
    if (is_return(kind)) return n + PIPE_SAMPLED_BYTES * (size_t)n_seq;
    n += 4 * (size_t)n_groups;
    n += PIPE_SEQ_BYTES * (size_t)n_seq;
    n += 4 * (size_t)n_seq * (size_t)n_groups;
    n += 4 * (size_t)n_idx;
    return n;
}

static uint64_t payload_bytes(int kind, int n_tok, int dim) {
    return is_forward(kind) ? (uint64_t)n_tok * (uint64_t)dim * sizeof(float) : 0;
}

/* ---- byte cursor ----------------------------------------------------------------------------- */

typedef struct cursor {
    uint8_t *p;
    const uint8_t *q;
} cursor;

static void put_u16(cursor *c, uint16_t v) {
    c->p[0] = (uint8_t)v;
    c->p[1] = (uint8_t)(v >> 8);
    c->p += 2;
}
static void put_u32(cursor *c, uint32_t v) {
    for (int i = 0; i < 4; i++) c->p[i] = (uint8_t)(v >> (8 * i));
    c->p += 4;
}
static void put_u64(cursor *c, uint64_t v) {
    for (int i = 0; i < 8; i++) c->p[i] = (uint8_t)(v >> (8 * i));
    c->p += 8;
}
static void put_i32(cursor *c, int32_t v) { put_u32(c, (uint32_t)v); }
static void put_f32(cursor *c, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(c, u);
}
static void put_f64(cursor *c, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(c, u);
}

static uint16_t get_u16(cursor *c) {
    uint16_t v = (uint16_t)(c->q[0] | (unsigned)c->q[1] << 8);
    c->q += 2;
    return v;
}
static uint32_t get_u32(cursor *c) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)c->q[i] << (8 * i);
    c->q += 4;
    return v;
}
static uint64_t get_u64(cursor *c) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)c->q[i] << (8 * i);
    c->q += 8;
    return v;
}
static int32_t get_i32(cursor *c) { return (int32_t)get_u32(c); }
static float get_f32(cursor *c) {
    uint32_t u = get_u32(c);
    float v;
    memcpy(&v, &u, 4);
    return v;
}
static double get_f64(cursor *c) {
    uint64_t u = get_u64(c);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* ---- writing --------------------------------------------------------------------------------- */

void pipe_msg_init(pipe_msg *m, pipe_msg_kind kind, int mb, int n_seq, int n_tok, int dim,
                   int n_groups, int n_idx, int64_t seqno) {
    m->hdr = (pipe_hdr){.kind = kind, .mb = mb, .n_seq = n_seq, .n_tok = n_tok, .dim = dim,
                        .n_groups = n_groups, .n_idx = n_idx, .seqno = seqno,
                        .ctrl_bytes = pipe_msg_ctrl_bytes(kind, n_seq, n_groups, n_idx),
                        .data_bytes = payload_bytes(kind, n_tok, dim)};
    memset(&m->metrics, 0, sizeof m->metrics);
}

static void put_metrics(cursor *c, const okv_metrics *x) {
    put_u64(c, x->steps);
    put_u64(c, x->rows_dense);
    put_u64(c, x->rows_filter);
    put_u64(c, x->rows_sparse);
    put_u64(c, x->bytes_kv);
    put_u64(c, x->bytes_weights);
    put_f64(c, x->t_select);
    put_f64(c, x->t_attn_dense);
    put_f64(c, x->t_attn_sparse);
    put_f64(c, x->t_matmul);
    put_f64(c, x->t_other);
}

static void get_metrics(cursor *c, okv_metrics *x) {
    x->steps = get_u64(c);
    x->rows_dense = get_u64(c);
    x->rows_filter = get_u64(c);
    x->rows_sparse = get_u64(c);
    x->bytes_kv = get_u64(c);
    x->bytes_weights = get_u64(c);
    x->t_select = get_f64(c);
    x->t_attn_dense = get_f64(c);
    x->t_attn_sparse = get_f64(c);
    x->t_matmul = get_f64(c);
    x->t_other = get_f64(c);
}

size_t pipe_msg_write(uint8_t *buf, size_t cap, const pipe_msg *m) {
    const pipe_hdr *h = &m->hdr;
    OKV_ASSERT(h->ctrl_bytes == pipe_msg_ctrl_bytes(h->kind, h->n_seq, h->n_groups, h->n_idx) &&
               h->ctrl_bytes <= cap);
    cursor c = {.p = buf};
    put_u32(&c, PIPE_MAGIC);
    put_u16(&c, PIPE_VERSION);
    put_u16(&c, (uint16_t)h->kind);
    put_i32(&c, h->mb);
    put_i32(&c, h->n_seq);
    put_i32(&c, h->n_tok);
    put_i32(&c, h->dim);
    put_i32(&c, h->n_groups);
    put_i32(&c, h->n_idx);
    put_u64(&c, (uint64_t)h->seqno);
    put_u64(&c, h->ctrl_bytes);
    put_u64(&c, h->data_bytes);
    if (h->kind != PIPE_MSG_STOP) put_metrics(&c, &m->metrics);
    if (is_return(h->kind)) {
        for (int i = 0; i < h->n_seq; i++) {
            put_i32(&c, m->out[i].slot);
            put_i32(&c, m->out[i].token);
            put_u64(&c, m->out[i].digest);
        }
    } else if (is_forward(h->kind)) {
        for (int g = 0; g < h->n_groups; g++) put_i32(&c, m->groups[g]);
        for (int i = 0; i < h->n_seq; i++) {
            const pipe_seq *s = &m->seqs[i];
            put_i32(&c, s->slot);
            put_i32(&c, s->pos);
            put_i32(&c, s->n_prompt);
            put_i32(&c, s->n_gen);
            put_i32(&c, s->flags);
            put_i32(&c, s->top_k);
            put_f32(&c, s->temperature);
            put_f32(&c, s->top_p);
            put_u64(&c, s->seed);
        }
        for (int i = 0; i < h->n_seq * h->n_groups; i++) put_i32(&c, m->counts[i]);
        for (int i = 0; i < h->n_idx; i++) put_i32(&c, m->idx[i]);
    }
    OKV_ASSERT((size_t)(c.p - buf) == h->ctrl_bytes);
    return (size_t)h->ctrl_bytes;
}

/* ---- reading --------------------------------------------------------------------------------- */

int pipe_hdr_read(const uint8_t *buf, size_t got, pipe_hdr *h) {
    if (got < PIPE_HDR_BYTES)
        return okv_fail(OKV_ERR_INTERNAL, "stage message of %zu bytes is shorter than its %d-byte "
                        "header", got, PIPE_HDR_BYTES);
    cursor c = {.q = buf};
    const uint32_t magic = get_u32(&c);
    const unsigned version = get_u16(&c);
    if (magic != PIPE_MAGIC)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has magic 0x%08x, not 0x%08x: it is not an "
                        "omnikv stage message", magic, PIPE_MAGIC);
    if (version != PIPE_VERSION)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has version %u; this build speaks %d "
                        "(all ranks must run the same omnikv)", version, PIPE_VERSION);
    h->kind = get_u16(&c);
    h->mb = get_i32(&c);
    h->n_seq = get_i32(&c);
    h->n_tok = get_i32(&c);
    h->dim = get_i32(&c);
    h->n_groups = get_i32(&c);
    h->n_idx = get_i32(&c);
    h->seqno = (int64_t)get_u64(&c);
    h->ctrl_bytes = get_u64(&c);
    h->data_bytes = get_u64(&c);
    if (h->kind < PIPE_MSG_DECODE || h->kind > PIPE_MSG_FIRST_TOKEN)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has unknown kind %d", h->kind);
    if (h->n_seq < 0 || h->n_tok < 0 || h->dim < 0 || h->n_groups < 0 ||
        h->n_groups > OKV_MAX_FILTERS || h->n_idx < 0)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has bad counts (n_seq %d, n_tok %d, dim "
                        "%d, groups %d, idx %d)", h->n_seq, h->n_tok, h->dim, h->n_groups, h->n_idx);
    const size_t want = pipe_msg_ctrl_bytes(h->kind, h->n_seq, h->n_groups, h->n_idx);
    if (h->ctrl_bytes != want || got < want)
        return okv_fail(OKV_ERR_INTERNAL, "stage message says %llu control bytes, its counts "
                        "imply %zu and %zu arrived", (unsigned long long)h->ctrl_bytes, want, got);
    const uint64_t data = payload_bytes(h->kind, h->n_tok, h->dim);
    if (h->data_bytes != data)
        return okv_fail(OKV_ERR_INTERNAL, "stage message announces a payload of %llu bytes; %d rows "
                        "of %d floats make %llu", (unsigned long long)h->data_bytes, h->n_tok,
                        h->dim, (unsigned long long)data);
    return OKV_OK;
}

int pipe_msg_check_payload(const pipe_hdr *h, size_t got) {
    if (got != h->data_bytes)
        return okv_fail(OKV_ERR_INTERNAL, "stage message carries a payload of %zu bytes; its "
                        "header says %llu", got, (unsigned long long)h->data_bytes);
    return OKV_OK;
}

/* The index sets: counts within each prompt, summing to n_idx, ascending prompt positions. */
static int check_index_sets(const pipe_msg *m) {
    const pipe_hdr *h = &m->hdr;
    int64_t total = 0;
    for (int i = 0; i < h->n_seq; i++) {
        const int N = m->seqs[i].n_prompt;
        for (int g = 0; g < h->n_groups; g++) {
            const int c = m->counts[(size_t)i * h->n_groups + g];
            if (c < 0 || c > N || total + c > h->n_idx)
                return okv_fail(OKV_ERR_INTERNAL, "stage message: index set of sequence %d group "
                                "%d has %d entries (prompt %d, %d carried)", i, m->groups[g], c,
                                N, h->n_idx);
            const int32_t *x = m->idx + total;
            for (int j = 0; j < c; j++)
                if (x[j] < 0 || x[j] >= N || (j && x[j] <= x[j - 1]))
                    return okv_fail(OKV_ERR_INTERNAL, "stage message: index set of sequence %d "
                                    "group %d is not ascending prompt positions", i, m->groups[g]);
            total += c;
        }
    }
    if (total != h->n_idx)
        return okv_fail(OKV_ERR_INTERNAL, "stage message: index sets hold %lld entries, the "
                        "header says %d", (long long)total, h->n_idx);
    return OKV_OK;
}

int pipe_msg_read(const uint8_t *buf, size_t got, int dim, int64_t seqno, pipe_msg *m) {
    pipe_hdr *h = &m->hdr;
    int st = pipe_hdr_read(buf, got, h);
    if (st) return st;
    if (h->seqno != seqno)
        return okv_fail(OKV_ERR_INTERNAL, "stage message %lld arrived where %lld was expected",
                        (long long)h->seqno, (long long)seqno);
    if (h->kind != PIPE_MSG_STOP && h->dim != dim)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has dim %d for a model of dim %d",
                        h->dim, dim);
    if (h->kind != PIPE_MSG_STOP && (h->n_seq > m->cap_seq || h->n_idx > m->cap_idx))
        return okv_fail(OKV_ERR_INTERNAL, "stage message describes %d sequences and %d index "
                        "entries; this stage holds %d and %lld", h->n_seq, h->n_idx, m->cap_seq,
                        (long long)m->cap_idx);
    memset(&m->metrics, 0, sizeof m->metrics);
    cursor c = {.q = buf + PIPE_HDR_BYTES};
    if (h->kind == PIPE_MSG_STOP) return OKV_OK;
    get_metrics(&c, &m->metrics);
    if (is_return(h->kind)) {
        for (int i = 0; i < h->n_seq; i++) {
            m->out[i].slot = get_i32(&c);
            m->out[i].token = get_i32(&c);
            m->out[i].digest = get_u64(&c);
        }
        return OKV_OK;
    }
    if (h->kind == PIPE_MSG_DECODE ? h->n_tok != h->n_seq : h->n_seq != 1)
        return okv_fail(OKV_ERR_INTERNAL, "stage message of kind %d has %d rows for %d sequences",
                        h->kind, h->n_tok, h->n_seq);
    for (int g = 0; g < h->n_groups; g++) m->groups[g] = get_i32(&c);
    for (int i = 0; i < h->n_seq; i++) {
        pipe_seq *s = &m->seqs[i];
        s->slot = get_i32(&c);
        s->pos = get_i32(&c);
        s->n_prompt = get_i32(&c);
        s->n_gen = get_i32(&c);
        s->flags = get_i32(&c);
        s->top_k = get_i32(&c);
        s->temperature = get_f32(&c);
        s->top_p = get_f32(&c);
        s->seed = get_u64(&c);
    }
    for (int i = 0; i < h->n_seq * h->n_groups; i++) m->counts[i] = get_i32(&c);
    for (int i = 0; i < h->n_idx; i++) m->idx[i] = get_i32(&c);
    return check_index_sets(m);
}
