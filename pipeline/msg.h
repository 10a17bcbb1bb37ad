/* msg.h — the stage-boundary message (DESIGN §3.3) and the token return message: the wire format
 * field by field below; pipe_msg_write serialises a message, pipe_msg_read checks and decodes one.
 * Tested by tests/unit/test_pipe_msg.c (round trips, every rejected field) and end to end by
 * tests/mpi/.
 *
 * Every field is a fixed-width little-endian integer (f32 / f64: their IEEE-754 bits as u32 /
 * u64), written and read one at a time, so ranks of different builds or byte orders agree on the
 * bytes; no in-memory struct is ever copied onto the wire. A message is a control part, then (for
 * the forward kinds) a payload of hidden states that the transport moves (transport.h): after
 * the control part in the same host message (mpi), or as a message of its own (mpi-cuda, nccl).
 *
 *   header, 56 bytes (PIPE_HDR_BYTES)
 *     0   u32 magic       PIPE_MAGIC, the bytes "OKVP"
 *     4   u16 version     PIPE_VERSION (2); a receiver rejects any other
 *     6   u16 kind        pipe_msg_kind
 *     8   i32 mb          micro-batch id (-1 for a stop)
 *     12  i32 n_seq       sequences described (prefill: 1)
 *     16  i32 n_tok       hidden-state rows in the payload (decode: n_seq; prefill: chunk length)
 *     20  i32 dim         floats per hidden-state row (the model's dim; checked)
 *     24  i32 n_groups    groups whose index sets are carried (decode only)
 *     28  i32 n_idx       index entries carried in total
 *     32  i64 seqno       the sender's message count on this link (0, 1, ...: order check)
 *     40  u64 ctrl_bytes  bytes of the control part, this header included
 *     48  u64 data_bytes  payload bytes: n_tok * dim * 4 (f32 rows) for the forward kinds, else 0
 *   metrics, 88 bytes (every kind but stop): engine counters of this step summed over the stages
 *           so far, in okv_metrics order: u64 steps, rows_dense, rows_filter, rows_sparse,
 *           bytes_kv, bytes_weights; f64 t_select, t_attn_dense, t_attn_sparse, t_matmul, t_other
 *   forward kinds (decode, prefill):
 *     i32 groups[n_groups]            ascending group ids
 *     seq[n_seq], 40 bytes each:
 *       i32 slot        sequence slot (the same on every stage)
 *       i32 pos         decode: position of this step's token; prefill: first position
 *       i32 n_prompt    prompt length N (prefill: a stage starts the slot at pos 0)
 *       i32 n_gen       tokens generated before this step (the sampling counter)
 *       i32 flags       PIPE_SEQ_SAMPLE: the last stage samples for this sequence
 *       i32 top_k       sampling parameters, as okv_sample_params
 *       f32 temperature
 *       f32 top_p
 *       u64 seed        the request's sampling seed
 *     i32 counts[n_seq][n_groups]     index-set sizes
 *     i32 idx[n_idx]                  for seq i, group j in order: counts[i][j] ascending
 *                                     prompt positions
 *   return kinds (tokens, first token): sampled[n_seq], 16 bytes each: i32 slot, i32 token,
 *           u64 digest (FNV-1a of the logits row, 0 unless asked for)
 *   stop: the header alone.
 * Payload: f32 hidden[n_tok][dim] (data_bytes). The mpi transport places it at
 * pipe_msg_data_offset(ctrl_bytes), 64-byte aligned, so a stage computes on it in place. */
#ifndef OKV_PIPE_MSG_H
#define OKV_PIPE_MSG_H

#include "../src/engine/engine.h"
#include "../src/engine/runner.h"

#include <stddef.h>
#include <stdint.h>

#define PIPE_MAGIC 0x50564B4Fu /* the bytes "OKVP" as a little-endian u32 */
#define PIPE_VERSION 2
#define PIPE_HDR_BYTES 56
#define PIPE_METRICS_BYTES 88
#define PIPE_SEQ_BYTES 40
#define PIPE_SAMPLED_BYTES 16

typedef enum pipe_msg_kind {
    PIPE_MSG_DECODE = 1,      /* one decode step of a micro-batch */
    PIPE_MSG_PREFILL = 2,     /* one prompt chunk of one sequence */
    PIPE_MSG_STOP = 3,        /* no more work: forward it and leave the stage loop */
    PIPE_MSG_TOKENS = 4,      /* return: a decode step's sampled tokens */
    PIPE_MSG_FIRST_TOKEN = 5, /* return: the first token of a prefilled sequence */
} pipe_msg_kind;

enum { PIPE_SEQ_SAMPLE = 1 };

/* The header, decoded. */
typedef struct pipe_hdr {
    int kind; /* pipe_msg_kind */
    int mb, n_seq, n_tok, dim, n_groups, n_idx;
    int64_t seqno;
    uint64_t ctrl_bytes, data_bytes;
} pipe_hdr;

/* One sequence of a forward message, decoded. */
typedef struct pipe_seq {
    int32_t slot;
    int32_t pos;
    int32_t n_prompt;
    int32_t n_gen;
    int32_t flags;
    int32_t top_k;
    float temperature;
    float top_p;
    uint64_t seed;
} pipe_seq;

/* A message in memory. The arrays belong to the caller: pipe_msg_write reads them, pipe_msg_read
 * fills them and fails when a message needs more than their capacities. */
typedef struct pipe_msg {
    pipe_hdr hdr;
    okv_metrics metrics;
    int32_t groups[OKV_MAX_FILTERS]; /* [n_groups] */
    pipe_seq *seqs;                  /* [cap_seq] (forward kinds) */
    okv_sampled *out;                /* [cap_seq] (return kinds) */
    int32_t *counts;                 /* [cap_seq][OKV_MAX_FILTERS], row-major as [n_seq][n_groups] */
    int32_t *idx;                    /* [cap_idx] */
    int cap_seq;
    int64_t cap_idx;
} pipe_msg;

/* Control bytes of a message with these counts (return kinds ignore n_groups and n_idx). */
size_t pipe_msg_ctrl_bytes(pipe_msg_kind kind, int n_seq, int n_groups, int64_t n_idx);
static inline size_t pipe_msg_data_offset(size_t ctrl_bytes) { return (ctrl_bytes + 63) & ~(size_t)63; }

/* Sets m's header for a message of these counts (ctrl_bytes and data_bytes derived) and zeroes
 * its metrics; the caller then fills the sections its kind carries. */
void pipe_msg_init(pipe_msg *m, pipe_msg_kind kind, int mb, int n_seq, int n_tok, int dim,
                   int n_groups, int n_idx, int64_t seqno);
/* Serialises m into buf (cap bytes, at least hdr.ctrl_bytes) and returns the control bytes. */
size_t pipe_msg_write(uint8_t *buf, size_t cap, const pipe_msg *m);
/* Decodes and checks the header of `got` received control bytes (length, magic, version, kind,
 * the control size its counts imply, the payload size n_tok * dim floats). OKV_OK or
 * OKV_ERR_INTERNAL with a sentence naming the bad field. */
int pipe_hdr_read(const uint8_t *buf, size_t got, pipe_hdr *h);
/* pipe_hdr_read, then the receiver's expectations (dim, seqno), then the sections into m's
 * arrays (within their capacities), index counts summing to n_idx and ascending index sets below
 * each n_prompt. OKV_OK or OKV_ERR_INTERNAL naming the bad field. */
int pipe_msg_read(const uint8_t *buf, size_t got, int dim, int64_t seqno, pipe_msg *m);
/* Whether the payload that arrived (got bytes) is the one the header announces. */
int pipe_msg_check_payload(const pipe_hdr *h, size_t got);

#endif
