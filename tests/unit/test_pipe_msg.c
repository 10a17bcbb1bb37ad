/* test_pipe_msg.c — the stage-boundary wire format (pipeline/msg.h): a header's bytes equal a
 * hand-written little-endian byte string; a decode message with index sets, a prefill message, a
 * token return and a stop round-trip field for field; every field the receiver checks (length,
 * magic, version, kind, order, dim, sizes, payload size, capacities, index sets) is rejected
 * with a sentence naming it. */
#include "common.h"
#include "pipeline/msg.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static uint8_t buf[1 << 16];

/* Receiver-side arrays. */
static pipe_seq r_seqs[8];
static okv_sampled r_out[8];
static int32_t r_counts[8 * OKV_MAX_FILTERS];
static int32_t r_idx[64];

static pipe_msg receiver(void) {
    return (pipe_msg){.seqs = r_seqs, .out = r_out, .counts = r_counts, .idx = r_idx,
                      .cap_seq = 8, .cap_idx = 64};
}

/* A decode message: 3 sequences, group 2 carried, index sets of 3, 0 and 2 entries, dim 8. */
static pipe_seq s_seqs[3];
static int32_t s_counts[3] = {3, 0, 2};
static int32_t s_idx[5] = {0, 4, 9, 1, 6};

static size_t build_decode(int64_t seqno) {
    pipe_msg m = {.seqs = s_seqs, .counts = s_counts, .idx = s_idx};
    pipe_msg_init(&m, PIPE_MSG_DECODE, 5, 3, 3, 8, 1, 5, seqno);
    m.metrics.rows_sparse = 77;
    m.metrics.bytes_weights = 1ull << 40;
    m.metrics.t_matmul = 0.25;
    m.metrics.t_other = -1.5e-300;
    m.groups[0] = 2;
    for (int i = 0; i < 3; i++)
        s_seqs[i] = (pipe_seq){.slot = i * 2, .pos = 20 + i, .n_prompt = 10, .n_gen = i,
                               .flags = PIPE_SEQ_SAMPLE, .top_k = 40, .temperature = 0.7f,
                               .top_p = 0.9f, .seed = 1234567890123ull + (uint64_t)i};
    return pipe_msg_write(buf, sizeof buf, &m);
}

static void expect_reject(size_t n, int dim, int64_t seqno, const char *says, const char *what) {
    pipe_msg m = receiver();
    okv_clear_error();
    int st = pipe_msg_read(buf, n, dim, seqno, &m);
    TEST_CHECK(st == OKV_ERR_INTERNAL && strstr(okv_last_error(), says),
               "%s must be rejected mentioning '%s'; got %d: %s", what, says, st, okv_last_error());
}

static void put32(size_t off, uint32_t v) {
    for (int i = 0; i < 4; i++) buf[off + i] = (uint8_t)(v >> (8 * i));
}

int main(void) {
    okv_log_init(0);

    /* The header's bytes, written out by hand from msg.h's table. */
    size_t n = build_decode(0x0102030405060708ll);
    const size_t want_ctrl = 56 + 88 + 4 * 1 + 40 * 3 + 4 * 3 + 4 * 5;
    const uint8_t hdr[56] = {
        'O', 'K', 'V', 'P', 2, 0, 1, 0,                  /* magic, version 2, kind decode */
        5, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 8, 0, 0, 0,  /* mb, n_seq, n_tok, dim */
        1, 0, 0, 0, 5, 0, 0, 0,                          /* n_groups, n_idx */
        8, 7, 6, 5, 4, 3, 2, 1,                          /* seqno */
        (uint8_t)want_ctrl, (uint8_t)(want_ctrl >> 8), 0, 0, 0, 0, 0, 0, /* ctrl_bytes */
        96, 0, 0, 0, 0, 0, 0, 0,                         /* data_bytes: 3 rows of 8 floats */
    };
    TEST_CHECK(n == want_ctrl && !memcmp(buf, hdr, sizeof hdr),
               "a decode header is the little-endian bytes of msg.h (%zu control bytes, want %zu)",
               n, want_ctrl);
    /* seq 0 starts after header, metrics and one group: slot 0, pos 20, ..., temperature 0.7f */
    const uint8_t seq0[16] = {0, 0, 0, 0, 20, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0};
    TEST_CHECK(!memcmp(buf + 56 + 88 + 4, seq0, sizeof seq0) && buf[56 + 88] == 2,
               "the group id and the first sequence's fields follow the metrics");
    TEST_CHECK(buf[56 + 24] == 77 && buf[56 + 40 + 5] == 1,
               "rows_sparse and bytes_weights (2^40) sit at their metrics offsets");

    /* Round trip of the decode message. */
    n = build_decode(7);
    pipe_msg m = receiver();
    TEST_OK(pipe_msg_read(buf, n, 8, 7, &m));
    TEST_CHECK(m.hdr.kind == PIPE_MSG_DECODE && m.hdr.mb == 5 && m.hdr.n_seq == 3 &&
                   m.hdr.n_tok == 3 && m.hdr.ctrl_bytes == n && m.hdr.data_bytes == 96 &&
                   m.groups[0] == 2,
               "header and group read back");
    TEST_CHECK(m.metrics.rows_sparse == 77 && m.metrics.bytes_weights == 1ull << 40 &&
                   m.metrics.t_matmul == 0.25 && m.metrics.t_other == -1.5e-300 &&
                   m.metrics.steps == 0,
               "metrics read back exactly");
    TEST_CHECK(!memcmp(r_seqs, s_seqs, sizeof s_seqs) && !memcmp(r_counts, s_counts, sizeof s_counts) &&
                   !memcmp(r_idx, s_idx, sizeof s_idx),
               "sequences (seed %llu, temperature %g), counts and index sets read back",
               (unsigned long long)r_seqs[2].seed, r_seqs[1].temperature);
    TEST_CHECK(pipe_msg_data_offset(n) % 64 == 0 && pipe_msg_data_offset(n) >= n,
               "the payload starts 64-byte aligned after the control part");
    TEST_OK(pipe_msg_check_payload(&m.hdr, 96));

    /* The header's checks. */
    expect_reject(55, 8, 7, "shorter than its 56-byte header", "a truncated header");
    expect_reject(0, 8, 7, "shorter than its", "an empty message");
    buf[0] ^= 1;
    expect_reject(n, 8, 7, "magic", "a bad magic");
    buf[0] ^= 1;
    buf[4] = 1;
    expect_reject(n, 8, 7, "version 1; this build speaks 2", "the previous version");
    buf[4] = 3;
    expect_reject(n, 8, 7, "version 3", "a later version");
    buf[4] = 2;
    buf[6] = 9;
    expect_reject(n, 8, 7, "unknown kind 9", "an unknown kind");
    buf[6] = 1;
    expect_reject(n, 8, 8, "arrived where 8 was expected", "a message out of order");
    expect_reject(n, 16, 7, "dim 8 for a model of dim 16", "another model's dim");
    expect_reject(n - 4, 8, 7, "control bytes", "a short control part");
    put32(28, 8);
    expect_reject(n, 8, 7, "control bytes", "counts that disagree with the size");
    put32(28, 5);
    put32(48, 100);
    expect_reject(n, 8, 7, "payload of 100 bytes; 3 rows of 8 floats make 96",
                  "a payload size that disagrees with the rows");
    put32(48, 96);
    TEST_OK(pipe_msg_read(buf, n, 8, 7, &m));
    okv_clear_error();
    TEST_CHECK(pipe_msg_check_payload(&m.hdr, 64) == OKV_ERR_INTERNAL &&
                   strstr(okv_last_error(), "payload of 64 bytes; its header says 96"),
               "a payload shorter than announced is rejected: %s", okv_last_error());

    /* The sections' checks. */
    pipe_msg small = receiver();
    small.cap_seq = 2;
    okv_clear_error();
    TEST_CHECK(pipe_msg_read(buf, n, 8, 7, &small) == OKV_ERR_INTERNAL &&
                   strstr(okv_last_error(), "this stage holds 2"),
               "more sequences than the receiver holds: %s", okv_last_error());
    s_idx[1] = 0;
    n = build_decode(7);
    expect_reject(n, 8, 7, "not ascending", "an index set out of order");
    s_idx[1] = 4;
    s_idx[2] = 10;
    n = build_decode(7);
    expect_reject(n, 8, 7, "not ascending prompt positions", "an index past the prompt");
    s_idx[2] = 9;
    s_counts[0] = 11;
    s_counts[1] = -8;
    n = build_decode(7);
    expect_reject(n, 8, 7, "has 11 entries (prompt 10", "an index set larger than its prompt");
    s_counts[0] = 3;
    s_counts[1] = 0;
    n = build_decode(7);
    put32(16, 2);
    put32(48, 64);
    expect_reject(n, 8, 7, "2 rows for 3 sequences", "rows that do not match the sequences");

    /* A prefill chunk: one sequence, 12 rows, no index sets. */
    pipe_seq one = {.slot = 3, .pos = 24, .n_prompt = 40, .flags = PIPE_SEQ_SAMPLE, .seed = 9};
    pipe_msg w = {.seqs = &one};
    pipe_msg_init(&w, PIPE_MSG_PREFILL, 1, 1, 12, 8, 0, 0, 0);
    n = pipe_msg_write(buf, sizeof buf, &w);
    m = receiver();
    TEST_OK(pipe_msg_read(buf, n, 8, 0, &m));
    TEST_CHECK(m.hdr.n_tok == 12 && m.hdr.data_bytes == 12 * 8 * 4 && m.hdr.n_groups == 0 &&
                   !memcmp(&r_seqs[0], &one, sizeof one),
               "prefill round trip");

    /* A token return and a stop. */
    okv_sampled out[2] = {{.slot = 1, .token = 99, .digest = 0xfeedfacecafebeefull},
                          {.slot = 4, .token = -7, .digest = 1}};
    w = (pipe_msg){.out = out};
    pipe_msg_init(&w, PIPE_MSG_TOKENS, 3, 2, 0, 8, 0, 0, 41);
    w.metrics.steps = 1;
    n = pipe_msg_write(buf, sizeof buf, &w);
    TEST_CHECK(n == 56 + 88 + 2 * 16, "a token return is %zu bytes", n);
    m = receiver();
    TEST_OK(pipe_msg_read(buf, n, 8, 41, &m));
    TEST_CHECK(!memcmp(r_out, out, sizeof out) && m.metrics.steps == 1 && m.hdr.data_bytes == 0,
               "token return round trip");
    pipe_msg_init(&w, PIPE_MSG_STOP, -1, 0, 0, 8, 0, 0, 42);
    n = pipe_msg_write(buf, sizeof buf, &w);
    TEST_CHECK(n == PIPE_HDR_BYTES, "a stop is a bare header");
    TEST_OK(pipe_msg_read(buf, n, 8, 42, &m));
    TEST_CHECK(m.hdr.kind == PIPE_MSG_STOP && m.hdr.mb == -1, "stop round trip");
    return test_summary();
}
