/* stage.h — pipeline parallelism over MPI ranks (DESIGN §3): start-up (placement, the stage plan,
 * each rank loading only its layers, the transport), rank 0's forward (stage 0 plus the runner's
 * okv_forward: it computes its layers for a prompt chunk or a micro-batch step, sends the hidden
 * states on and collects sampled tokens from the last stage), the loop every other rank runs
 * (receive, set forwarded index sets, compute, send on or sample and return), and shutdown.
 * Micro-batches flow independently: rank 0 queues micro-batch m's next step as soon as m's tokens
 * return. Tested by tests/mpi/test_pipeline.sh (bitwise equivalence with one rank), and
 * tests/mpi/test_fault.sh (a killed rank ends the job). */
#ifndef OKV_STAGE_H
#define OKV_STAGE_H

#include "../src/engine/engine.h"
#include "../src/engine/runner.h"
#include "../src/engine/sampler.h"
#include "msg.h"
#include "placement.h"
#include "planner.h"
#include "trace.h"
#include "transport.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#define PIPE_RING 4 /* send and receive buffers per link */

typedef struct pipe_ctx {
    MPI_Comm comm;     /* a duplicate of MPI_COMM_WORLD whose errors return to CHECK_MPI */
    int rank, size;    /* stage s runs on rank s */
    bool last;
    pipe_place place;
    pipe_plan plan;
    okv_run_config rc; /* the run config, threads resolved for this rank's cores */
    okv_model model;   /* this stage's layers; embedding and tokenizer on 0, head on the last */
    okv_engine eng;
    pipe_transport tr;  /* stage links */
    pipe_transport ret; /* token returns: always host MPI */
    pipe_trace trace;
    int n_mb;           /* micro-batches in flight */
    int sample_vocab;   /* ids the last stage samples over (the tokenizer's) */
    int dim;
    int in_groups[OKV_MAX_FILTERS], n_in;   /* index sets received with the hidden states */
    int out_groups[OKV_MAX_FILTERS], n_out; /* index sets sent on */
    int64_t max_idx;    /* index entries one message can carry */

    pipe_buf send[PIPE_RING], recv[PIPE_RING];
    int send_next, recv_next;
    int64_t send_seqno, recv_seqno;
    /* token returns: rank 0 keeps n_retq receives posted; the last stage sends from a ring */
    pipe_buf *retq;
    int n_retq, ret_next, ret_repost;
    int64_t ret_seqno;

    /* Where the hidden states this stage sends and receives live: set once in load_stage. */
    okv_mem_kind act_kind;
    pipe_msg in;        /* the message being served (decoded; arrays [max_slots], [max_idx]) */
    pipe_msg out;       /* the message being sent (counts and idx are scratch) */
    pipe_msg ret_in;    /* rank 0: the token return being read (out [max_slots]) */

    okv_sampler sampler;
    int *slots;         /* [max_slots] */
    pipe_seq *seqbuf;   /* [max_slots] stage 0's step descriptions */
    okv_sampled *outbuf; /* [max_slots] the last stage's sampled tokens */
    int32_t *n_prompt;  /* rank 0: [max_slots] prompt length per slot */
    char (*names)[96];  /* rank 0: trace track names, [size] */
} pipe_ctx;

/* Collective start-up on MPI_COMM_WORLD. pre is rank 0's status so far (reading requests and
 * results), shared so every rank stops together. Rank 0 plans (rc->stages or the planner) and
 * prints the plan; each rank loads its layers and builds its engine and transport; rank 0 then
 * prints what every rank holds. On failure every rank returns the same status and rank 0 holds
 * the message (naming the failing rank). */
int pipe_setup(pipe_ctx *pc, const char *model_path, const okv_run_config *rc, int pre);
/* Rank 0: the okv_forward the runner drives. */
void pipe_forward(pipe_ctx *pc, okv_forward *fw);
/* Ranks > 0: serve messages until rank 0's stop arrives. Any failure aborts the job. */
void pipe_stage_run(pipe_ctx *pc);
/* Collective shutdown: rank 0 sends the stop down the pipeline, every rank drains its sends and
 * the trace is written. Returns OKV_OK or the trace's write error. */
int pipe_finish(pipe_ctx *pc);
void pipe_free(pipe_ctx *pc);

#endif
