/* planner.h — the stage planner (DESIGN §3.3): splits a model's layers into P contiguous stages,
 * placing boundaries where no OmniKV index set has to cross when that costs little balance, from a
 * cost model of seconds (measured kernel rates, costs.h) or bytes read per decode step; also parses hand partitions ("0-7,8-17,18-29") and
 * estimates each stage's memory. Tested by tests/unit/test_planner.c. */
#ifndef OKV_PLANNER_H
#define OKV_PLANNER_H

#include "../kernels/types.h"
#include "../src/config.h"
#include "../src/policy/policy.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* What a stage costs, per layer and per decode step of one micro-batch. */
typedef struct pipe_cost_model {
    int n_layers;
    const okv_role *role;         /* [n_layers] */
    const int *group;             /* [n_layers] governing filter group, -1 before the first */
    const uint64_t *weight_bytes; /* [n_layers] stored weight bytes, read once per step */
    uint64_t embed_bytes;         /* token embedding table (stage 0; one row read per token) */
    uint64_t head_bytes;          /* output norm + head (last stage; read once per step) */
    uint64_t head_shared_bytes;   /* of head_bytes, the tied embedding: held once by a stage that
                                     is both first and last */
    int kv_dim;                   /* n_kv_heads * head_dim */
    int dim;                      /* hidden size: a boundary carries step_batch rows of it */
    okv_type kv_type;             /* a KV type: f16, f32 or q8_0 */
    int batch;                    /* sequences held per rank */
    int step_batch;               /* sequences in one decode step (a micro-batch) */
    int64_t ctx;                  /* prompt tokens per sequence */
    int64_t gen;                  /* generated tokens per sequence (the sparse layers' tail) */
    int64_t k;                    /* selected prompt rows per sparse layer and step */
    bool real_offload;            /* sparse prompt KV in the host bank, else on the device */
    /* Measured costs (costs.h); without them (matmul_s NULL) a stage costs the bytes it reads. */
    const double *matmul_s;       /* [n_layers] matmul seconds per step */
    double head_s;                /* the output head's matmul seconds per step */
    double row_s;                 /* decode attention seconds per KV row and sequence */
} pipe_cost_model;

/* One stage's estimate. */
typedef struct pipe_stage_est {
    uint64_t weight_bytes; /* its layers, plus the embedding on stage 0 and the head on the last */
    uint64_t kv_bytes;     /* device-tier KV: dense/filter/wait layers, sparse tails (and sparse
                              prompts when real_offload is off) */
    uint64_t bank_bytes;   /* host Context Bank: the sparse layers' prompt KV */
    uint64_t read_bytes;   /* bytes read per decode step of one micro-batch */
    uint64_t gather_bytes; /* of which selected bank rows (copied to a device, when there is one) */
    uint64_t pf_stage_bytes; /* on a device: one sparse layer's whole context, which prefill
                                attention reads there instead of the bank (engine.h's pf_stage) */
    int n_role[4];         /* layers per okv_role */
    int n_cross;           /* index sets entering the stage (groups continuing across its start) */
    double step_s;         /* predicted seconds per step of one micro-batch (measured costs only) */
} pipe_stage_est;

typedef struct pipe_plan {
    int n_layers, n_stages;
    int first[OKV_MAX_STAGES + 1]; /* stage s holds layers [first[s], first[s+1]) */
    bool hand;                     /* a hand partition (config key stages) */
    bool aligned;                  /* no boundary carries an index set */
    double bottleneck;             /* largest stage cost (seconds, or bytes read, per step) */
    pipe_stage_est est[OKV_MAX_STAGES];
} pipe_plan;

/* Largest relative loss of balance accepted to keep every boundary free of index sets. */
#define PLANNER_ALIGN_SLACK 0.10

/* Parses "a-b,c-d,..." (a single layer may be written "a") into first[0..*n]: ranges must start
 * at layer 0 and follow each other without gaps; with n_layers >= 0 the last must end at
 * n_layers - 1. Returns OKV_OK or OKV_ERR_USAGE with a message naming the bad part. */
int planner_parse_stages(const char *spec, int n_layers, int *first, int cap, int *n);

/* The groups whose index sets cross the boundary before layer b: filter layer < b and a sparse
 * layer of the group >= b. Writes up to cap group ids ascending and returns the count. */
int planner_boundary_groups(int n_layers, const okv_role *role, const int *group, int b,
                            int *groups, int cap);

/* Chooses n_ranks stages by cost (measured seconds when the model has them, else bytes read
 * per step): the most balanced split (smallest largest stage, then smallest sum of
 * squares) among boundaries that carry no index set, unless a split with index sets is more
 * than `slack` better or no such split exists. Fails (OKV_ERR_USAGE) when n_ranks < 1, or more
 * ranks than layers, or more than OKV_MAX_STAGES. */
int planner_plan(const pipe_cost_model *cm, int n_ranks, double slack, pipe_plan *out);
/* A hand partition checked against the model and the rank count. */
int planner_hand(const pipe_cost_model *cm, const char *spec, int n_ranks, pipe_plan *out);
/* Fills out->est, aligned and bottleneck from out->first (planner_plan and planner_hand call it). */
void planner_estimate(const pipe_cost_model *cm, pipe_plan *out);

/* The plan as a table: layers, roles, weight / KV / bank bytes and bytes read per step per rank. */
void planner_print(const pipe_plan *p, const pipe_cost_model *cm, FILE *f);
/* "1.5 GiB" */
void planner_fmt_bytes(double bytes, char *buf, size_t cap);

#endif
