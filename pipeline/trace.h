/* trace.h — per-rank timelines in the Chrome/Perfetto trace format: each rank records complete
 * events (compute, send wait, receive wait) into a buffer sized at start-up; at the end rank 0
 * gathers them and writes one JSON file with a process per rank, so pipeline bubbles show as
 * gaps. Rank 0 also records each request's span under its id, and a prompt's events carry the
 * id of their request. A single rank traces through a wrapping forward. Tested by
 * tests/mpi/test_pipeline.sh (valid JSON, every rank present) and tests/e2e/test_day_one.sh (one
 * rank, request names, the start-up check); read by jobs/bench_pipeline.sh for each stage's busy
 * share. */
#ifndef OKV_TRACE_H
#define OKV_TRACE_H

#include "../src/engine/runner.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#define PIPE_TRACE_CAP (1 << 18) /* events per rank */

typedef enum pipe_trace_kind {
    TRACE_DECODE = 0,    /* a decode step of a micro-batch on this stage */
    TRACE_PREFILL = 1,   /* a prompt chunk on this stage */
    TRACE_RECV_WAIT = 2, /* waiting for the previous stage (or, on rank 0, for tokens) */
    TRACE_SEND_WAIT = 3, /* waiting for a send buffer to drain */
    TRACE_SAMPLE = 4,    /* head and sampling on the last stage */
} pipe_trace_kind;

typedef struct pipe_trace_ev {
    double t0, t1;  /* seconds since the common start */
    int32_t kind;
    int32_t mb;     /* micro-batch, -1 when none */
    int32_t n;      /* sequences or tokens */
    int32_t slot;   /* prefill: the slot, else -1 */
    double bank_s;  /* compute: seconds of sparse attention over Context Bank rows within it */
} pipe_trace_ev;

/* A request's span on rank 0: from its first prompt chunk to its last token. */
typedef struct pipe_trace_req {
    double t0, t1;    /* seconds since the common start */
    int n_prompt, n_tokens;
    char *id;
} pipe_trace_req;

typedef struct pipe_trace {
    bool on;
    pipe_trace_ev *ev; /* [cap] */
    int n, cap;
    uint64_t dropped;  /* events past cap (counted, not stored) */
    double t0;
    pipe_trace_req *req; /* [n_req] rank 0's requests */
    int n_req, cap_req;
} pipe_trace;

/* Whether path can be written, checked before any work so a bad path fails at start-up (the
 * file is not truncated; one created by the check is removed). OKV_OK or OKV_ERR_INPUT. */
int pipe_trace_check(const char *path);

/* Starts recording (when path is non-empty) with room for cap events; the clock starts at a
 * barrier on comm so ranks share a time origin. Collective. */
int pipe_trace_init(pipe_trace *t, const char *path, int cap, MPI_Comm comm);
static inline void pipe_trace_add(pipe_trace *t, pipe_trace_kind kind, double t0, double t1,
                                  int mb, int n, int slot, double bank_s) {
    if (!t->on) return;
    if (t->n == t->cap) {
        t->dropped++;
        return;
    }
    t->ev[t->n++] = (pipe_trace_ev){t0 - t->t0, t1 - t->t0, (int32_t)kind, mb, n, slot, bank_s};
}
/* Rank 0: a finished request (times from okv_now_s()), shown as its own event and used to name
 * the prompt events of its slot on every rank. */
void pipe_trace_request(pipe_trace *t, const char *id, double t_start, double t_end, int n_prompt,
                        int n_tokens);
/* A forward that records each prefill chunk and decode step of `inner` into t (one rank running
 * every layer). inner and t must outlive outer. */
void pipe_trace_forward_init(okv_forward *outer, const okv_forward *inner, pipe_trace *t);
void pipe_trace_forward_free(okv_forward *outer);

/* Gathers every rank's events on rank 0 and writes the JSON file there; names[r] labels rank r's
 * track (only rank 0's array is read). Collective. Returns OKV_OK or OKV_ERR_INPUT (rank 0 could
 * not write). */
int pipe_trace_write(pipe_trace *t, const char *path, MPI_Comm comm, char (*names)[96]);
void pipe_trace_free(pipe_trace *t);

#endif
