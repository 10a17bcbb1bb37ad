/* test_pipe_msg.c — the stage-boundary message format (pipeline/msg.h): a decode message with
 * index sets, a prefill message and a token return round-trip bit-exactly through a copy, and
 * every field the receiver checks (magic, version, kind, order, dim, sizes, index sets) is
 * rejected when wrong. */
#include "common.h"
#include "pipeline/msg.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static uint8_t a_buf[1 << 16], b_buf[1 << 16];

/* A decode message: 3 sequences, group 2 carried, index sets of 3, 0 and 2 entries. */
static size_t build_decode(int64_t seqno) {
    pipe_msg m;
    pipe_msg_layout(a_buf, PIPE_MSG_DECODE, 5, 3, 3, 8, 1, 5, seqno, &m);
    m.metrics->rows_sparse = 77;
    m.metrics->t_matmul = 0.25;
    m.groups[0] = 2;
    const int counts[3] = {3, 0, 2};
    const int32_t idx[5] = {0, 4, 9, 1, 6};
    for (int i = 0; i < 3; i++) {
        m.seqs[i] = (pipe_seq){.slot = i * 2, .pos = 20 + i, .n_prompt = 10, .n_gen = i,
                               .flags = PIPE_SEQ_SAMPLE, .top_k = 40, .temperature = 0.7f,
                               .top_p = 0.9f, .seed = 1234567890123ull + (uint64_t)i};
        m.counts[i] = counts[i];
    }
    memcpy(m.idx, idx, sizeof idx);
    return m.ctrl_bytes;
}

static int parse_copy(size_t n, int dim, int64_t seqno, pipe_msg *m) {
    memcpy(b_buf, a_buf, n);
    return pipe_msg_parse(b_buf, n, dim, seqno, m);
}

static void expect_reject(size_t n, int dim, int64_t seqno, const char *says, const char *what) {
    pipe_msg m;
    okv_clear_error();
    int st = parse_copy(n, dim, seqno, &m);
    TEST_CHECK(st == OKV_ERR_INTERNAL && strstr(okv_last_error(), says),
               "%s must be rejected mentioning '%s'; got %d: %s", what, says, st, okv_last_error());
}

int main(void) {
    okv_log_init(0);
    TEST_CHECK(sizeof(pipe_hdr) == 48 && sizeof(pipe_seq) == 48 && sizeof(okv_sampled) == 16,
               "field layout: header %zu, seq %zu, sampled %zu bytes", sizeof(pipe_hdr),
               sizeof(pipe_seq), sizeof(okv_sampled));

    size_t n = build_decode(7);
    pipe_msg m;
    TEST_OK(parse_copy(n, 8, 7, &m));
    TEST_CHECK(!memcmp(a_buf, b_buf, n), "the copy is bit-exact");
    TEST_CHECK(m.hdr->kind == PIPE_MSG_DECODE && m.hdr->mb == 5 && m.hdr->n_seq == 3 &&
                   m.groups[0] == 2 && m.metrics->rows_sparse == 77 && m.metrics->t_matmul == 0.25,
               "header, group and metrics read back");
    TEST_CHECK(m.seqs[2].slot == 4 && m.seqs[2].pos == 22 && m.seqs[2].seed == 1234567890125ull &&
                   m.seqs[1].temperature == 0.7f && m.counts[2] == 2 && m.idx[3] == 1 && m.idx[4] == 6,
               "sequences and index sets read back");
    TEST_CHECK(pipe_msg_data_offset(n) % 64 == 0 && pipe_msg_data_offset(n) >= n,
               "hidden states start 64-byte aligned after the control part");

    /* Every checked field. */
    pipe_hdr *h = (pipe_hdr *)a_buf;
    expect_reject(20, 8, 7, "shorter than its header", "a truncated header");
    h->magic ^= 1;
    expect_reject(n, 8, 7, "magic", "a bad magic");
    h->magic ^= 1;
    h->version = 2;
    expect_reject(n, 8, 7, "version 2", "another version");
    h->version = PIPE_VERSION;
    h->kind = 9;
    expect_reject(n, 8, 7, "unknown kind", "an unknown kind");
    h->kind = PIPE_MSG_DECODE;
    expect_reject(n, 8, 8, "arrived where 8 was expected", "a message out of order");
    expect_reject(n, 16, 7, "dim 8 for a model of dim 16", "another model's dim");
    expect_reject(n - 4, 8, 7, "control bytes", "a short control part");
    h->n_idx = 8;
    expect_reject(n, 8, 7, "control bytes", "counts that disagree with the size");
    h->n_idx = 6;
    expect_reject(n, 8, 7, "index sets hold 5 entries, the header says 6", "a wrong index total");
    h->n_idx = 5;
    TEST_OK(parse_copy(n, 8, 7, &m));

    pipe_msg w;
    build_decode(7);
    pipe_msg_parse(a_buf, n, 8, 7, &w);
    w.idx[1] = 0;
    expect_reject(n, 8, 7, "not ascending", "an index set out of order");
    build_decode(7);
    pipe_msg_parse(a_buf, n, 8, 7, &w);
    w.idx[2] = 10;
    expect_reject(n, 8, 7, "not ascending prompt positions", "an index past the prompt");
    build_decode(7);
    pipe_msg_parse(a_buf, n, 8, 7, &w);
    w.counts[1] = 1;
    w.counts[2] = 1;
    TEST_CHECK(parse_copy(n, 8, 7, &m) == OKV_OK, "counts may move between sequences if they "
               "still sum to n_idx and stay ascending");
    w.counts[0] = 11;
    expect_reject(n, 8, 7, "entries", "an index set larger than its prompt");
    build_decode(7);
    pipe_msg_parse(a_buf, n, 8, 7, &w);
    w.hdr->n_tok = 2;
    expect_reject(n, 8, 7, "2 rows for 3 sequences", "rows that do not match the sequences");

    /* A prefill chunk: one sequence, 12 rows, no index sets. */
    pipe_msg_layout(a_buf, PIPE_MSG_PREFILL, 1, 1, 12, 8, 0, 0, 0, &w);
    w.seqs[0] = (pipe_seq){.slot = 3, .pos = 24, .n_prompt = 40};
    TEST_OK(parse_copy(w.ctrl_bytes, 8, 0, &m));
    TEST_CHECK(m.hdr->n_tok == 12 && m.seqs[0].n_prompt == 40 && m.hdr->n_groups == 0, "prefill");

    /* A token return and a stop. */
    pipe_msg_layout(a_buf, PIPE_MSG_TOKENS, 3, 2, 0, 8, 0, 0, 41, &w);
    w.out[0] = (okv_sampled){.slot = 1, .token = 99, .digest = 0xfeedfacecafebeefull};
    w.out[1] = (okv_sampled){.slot = 4, .token = 7, .digest = 1};
    w.metrics->steps = 1;
    TEST_OK(parse_copy(w.ctrl_bytes, 8, 41, &m));
    TEST_CHECK(m.out[0].digest == 0xfeedfacecafebeefull && m.out[1].token == 7 && m.metrics->steps == 1,
               "token return");
    pipe_msg_layout(a_buf, PIPE_MSG_STOP, -1, 0, 0, 8, 0, 0, 42, &w);
    TEST_CHECK(w.ctrl_bytes == sizeof(pipe_hdr), "a stop is a bare header");
    TEST_OK(parse_copy(w.ctrl_bytes, 8, 42, &m));
    return test_summary();
}
