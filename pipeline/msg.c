/* msg.c — layout and checking of the stage-boundary and return messages specified in msg.h.
 * Tested bit-exact by tests/unit/test_pipe_msg.c (round trip, every rejected field). */
#include "msg.h"

#include "../src/common.h"

#include <string.h>

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

static bool is_return(int kind) { return kind == PIPE_MSG_TOKENS || kind == PIPE_MSG_FIRST_TOKEN; }

size_t pipe_msg_ctrl_bytes(pipe_msg_kind kind, int n_seq, int n_groups, int64_t n_idx) {
    size_t n = sizeof(pipe_hdr) + sizeof(okv_metrics);
    if (kind == PIPE_MSG_STOP) return sizeof(pipe_hdr);
    if (is_return(kind)) return n + sizeof(okv_sampled) * (size_t)n_seq;
    n += pad8(sizeof(int32_t) * (size_t)n_groups);
    n += sizeof(pipe_seq) * (size_t)n_seq;
    n += pad8(sizeof(int32_t) * (size_t)n_seq * (size_t)n_groups);
    n += pad8(sizeof(int32_t) * (size_t)n_idx);
    return n;
}

/* Points m's sections into buf from the header's counts. */
static void point(uint8_t *buf, pipe_msg *m) {
    pipe_hdr *h = (pipe_hdr *)buf;
    memset(m, 0, sizeof *m);
    m->hdr = h;
    m->ctrl_bytes = (size_t)h->ctrl_bytes;
    if (h->kind == PIPE_MSG_STOP) return;
    size_t off = sizeof(pipe_hdr);
    m->metrics = (okv_metrics *)(buf + off);
    off += sizeof(okv_metrics);
    if (is_return(h->kind)) {
        m->out = (okv_sampled *)(buf + off);
        return;
    }
    m->groups = (int32_t *)(buf + off);
    off += pad8(sizeof(int32_t) * (size_t)h->n_groups);
    m->seqs = (pipe_seq *)(buf + off);
    off += sizeof(pipe_seq) * (size_t)h->n_seq;
    m->counts = (int32_t *)(buf + off);
    off += pad8(sizeof(int32_t) * (size_t)h->n_seq * (size_t)h->n_groups);
    m->idx = (int32_t *)(buf + off);
}

void pipe_msg_layout(void *buf, pipe_msg_kind kind, int mb, int n_seq, int n_tok, int dim,
                     int n_groups, int n_idx, int64_t seqno, pipe_msg *m) {
    pipe_hdr *h = buf;
    memset(h, 0, sizeof *h);
    h->magic = PIPE_MAGIC;
    h->version = PIPE_VERSION;
    h->kind = (uint16_t)kind;
    h->mb = mb;
    h->n_seq = n_seq;
    h->n_tok = n_tok;
    h->dim = dim;
    h->n_groups = n_groups;
    h->n_idx = n_idx;
    h->seqno = seqno;
    h->ctrl_bytes = pipe_msg_ctrl_bytes(kind, n_seq, n_groups, n_idx);
    point(buf, m);
    if (m->metrics) memset(m->metrics, 0, sizeof *m->metrics);
}

int pipe_msg_parse(void *buf, size_t got, int dim, int64_t seqno, pipe_msg *m) {
    const pipe_hdr *h = buf;
    if (got < sizeof *h)
        return okv_fail(OKV_ERR_INTERNAL, "stage message of %zu bytes is shorter than its header", got);
    if (h->magic != PIPE_MAGIC)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has magic 0x%08x, not 0x%08x", h->magic,
                        PIPE_MAGIC);
    if (h->version != PIPE_VERSION)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has version %u; this build speaks %d "
                        "(all ranks must run the same omnikv)", h->version, PIPE_VERSION);
    if (h->kind < PIPE_MSG_DECODE || h->kind > PIPE_MSG_FIRST_TOKEN)
        return okv_fail(OKV_ERR_INTERNAL, "stage message has unknown kind %u", h->kind);
    if (h->seqno != seqno)
        return okv_fail(OKV_ERR_INTERNAL, "stage message %lld arrived where %lld was expected",
                        (long long)h->seqno, (long long)seqno);
    if (h->n_seq < 0 || h->n_tok < 0 || h->n_groups < 0 || h->n_idx < 0 ||
        (h->kind != PIPE_MSG_STOP && h->dim != dim))
        return okv_fail(OKV_ERR_INTERNAL, "stage message has bad counts (n_seq %d, n_tok %d, "
                        "dim %d for a model of dim %d, groups %d, idx %d)", h->n_seq, h->n_tok,
                        h->dim, dim, h->n_groups, h->n_idx);
    size_t want = pipe_msg_ctrl_bytes(h->kind, h->n_seq, h->n_groups, h->n_idx);
    if (h->ctrl_bytes != want || got < want)
        return okv_fail(OKV_ERR_INTERNAL, "stage message says %llu control bytes, its counts "
                        "imply %zu and %zu arrived", (unsigned long long)h->ctrl_bytes, want, got);
    point(buf, m);
    if (h->kind != PIPE_MSG_DECODE && h->kind != PIPE_MSG_PREFILL) return OKV_OK;
    if (h->kind == PIPE_MSG_DECODE ? h->n_tok != h->n_seq : h->n_seq != 1)
        return okv_fail(OKV_ERR_INTERNAL, "stage message of kind %u has %d rows for %d sequences",
                        h->kind, h->n_tok, h->n_seq);
    int64_t total = 0;
    for (int i = 0; i < h->n_seq; i++) {
        const int N = m->seqs[i].n_prompt;
        for (int g = 0; g < h->n_groups; g++) {
            int c = m->counts[(size_t)i * h->n_groups + g];
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
