/* msg.h — the stage-boundary message (DESIGN §3.3) and the token return message, laid out
 * field by field below; pack with pipe_msg_layout, check what arrived with pipe_msg_parse.
 * Tested bit-exact by tests/unit/test_pipe_msg.c and end to end by tests/mpi/.
 *
 * All ranks run the same binary on the same architecture, so fields are in host byte order.
 * Every message is one control part, then (forward messages only) the hidden states:
 *
 *   offset  field
 *   0       pipe_hdr (48 bytes)
 *             uint32 magic     PIPE_MAGIC ("OKVP")
 *             uint16 version   PIPE_VERSION; a receiver rejects any other
 *             uint16 kind      pipe_msg_kind
 *             int32  mb        micro-batch id
 *             int32  n_seq     sequences described (prefill: 1)
 *             int32  n_tok     hidden-state rows that follow (decode: n_seq, prefill: chunk length)
 *             int32  dim       floats per hidden-state row (the model's dim; checked)
 *             int32  n_groups  groups whose index sets are carried (decode only)
 *             int32  n_idx     index entries carried in total
 *             int64  seqno     the sender's message count on this link (0, 1, ...: order check)
 *             uint64 ctrl_bytes bytes of the control part (this header included)
 *   48      okv_metrics        engine counters of this step summed over the stages so far
 *   48+M    int32 groups[n_groups]               ascending group ids, padded to 8 bytes
 *   ...     pipe_seq seqs[n_seq] (48 bytes each)
 *             int32 slot       sequence slot (the same on every stage)
 *             int32 pos        decode: position of this step's token; prefill: first position
 *             int32 n_prompt   prompt length N (prefill: a stage starts the slot at pos 0)
 *             int32 n_gen      tokens generated before this step (the sampling counter)
 *             int32 flags      PIPE_SEQ_SAMPLE: the last stage samples for this sequence
 *             int32 top_k      sampling parameters, as okv_sample_params
 *             float temperature
 *             float top_p
 *             uint64 seed      the request's sampling seed
 *             uint64 reserved  0
 *   ...     int32 counts[n_seq][n_groups]        index-set sizes, padded to 8 bytes
 *   ...     int32 idx[n_idx]   for seq i, group j in order: counts[i][j] ascending prompt positions
 *   ctrl_bytes (rounded up to 64) — float hidden[n_tok][dim] (forward messages)
 *
 * Return messages (last stage -> rank 0, kinds PIPE_MSG_TOKENS and PIPE_MSG_FIRST_TOKEN) carry
 * the header, the summed metrics, then okv_sampled out[n_seq] (slot, token, logits digest) in
 * place of groups, seqs and index sets; they have no hidden states. PIPE_MSG_STOP is a bare
 * header. */
#ifndef OKV_PIPE_MSG_H
#define OKV_PIPE_MSG_H

#include "../src/engine/engine.h"
#include "../src/engine/runner.h"

#include <stddef.h>
#include <stdint.h>

#define PIPE_MAGIC 0x504B564Fu /* "OKVP" read as little-endian bytes */
#define PIPE_VERSION 1

typedef enum pipe_msg_kind {
    PIPE_MSG_DECODE = 1,      /* one decode step of a micro-batch */
    PIPE_MSG_PREFILL = 2,     /* one prompt chunk of one sequence */
    PIPE_MSG_STOP = 3,        /* no more work: forward it and leave the stage loop */
    PIPE_MSG_TOKENS = 4,      /* return: a decode step's sampled tokens */
    PIPE_MSG_FIRST_TOKEN = 5, /* return: the first token of a prefilled sequence */
} pipe_msg_kind;

enum { PIPE_SEQ_SAMPLE = 1 };

typedef struct pipe_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    int32_t mb;
    int32_t n_seq;
    int32_t n_tok;
    int32_t dim;
    int32_t n_groups;
    int32_t n_idx;
    int64_t seqno;
    uint64_t ctrl_bytes;
} pipe_hdr;

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
    uint64_t reserved;
} pipe_seq;

/* Pointers into one message buffer. */
typedef struct pipe_msg {
    pipe_hdr *hdr;
    okv_metrics *metrics;
    int32_t *groups;   /* [n_groups] */
    pipe_seq *seqs;    /* [n_seq] (forward kinds) */
    okv_sampled *out;  /* [n_seq] (return kinds) */
    int32_t *counts;   /* [n_seq][n_groups] */
    int32_t *idx;      /* [n_idx] */
    size_t ctrl_bytes; /* hidden states start at pipe_msg_data_offset(ctrl_bytes) */
} pipe_msg;

/* Control bytes of a message with these counts (return kinds ignore n_groups and n_idx). */
size_t pipe_msg_ctrl_bytes(pipe_msg_kind kind, int n_seq, int n_groups, int64_t n_idx);
static inline size_t pipe_msg_data_offset(size_t ctrl_bytes) { return (ctrl_bytes + 63) & ~(size_t)63; }

/* Writes the header into buf and points m at the sections; the caller fills them. */
void pipe_msg_layout(void *buf, pipe_msg_kind kind, int mb, int n_seq, int n_tok, int dim,
                     int n_groups, int n_idx, int64_t seqno, pipe_msg *m);
/* Checks a received control part of `got` bytes (magic, version, kind, sizes, expected dim and
 * seqno, index counts summing to n_idx, ascending index sets below each n_prompt) and points m
 * into it. Returns OKV_OK or OKV_ERR_INTERNAL with a message naming the bad field. */
int pipe_msg_parse(void *buf, size_t got, int dim, int64_t seqno, pipe_msg *m);

#endif
