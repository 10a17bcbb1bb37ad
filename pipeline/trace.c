/* trace.c — recording into a fixed buffer and writing the gathered timelines as Chrome trace
 * JSON ("X" complete events, microseconds; one process per rank, rank 0's requests on a track of
 * their own), and the tracing forward of a single rank. Tested by tests/mpi/test_pipeline.sh and
 * tests/e2e/test_day_one.sh. */
#include "trace.h"

#include "../src/common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pipe_trace_check(const char *path) {
    if (!path || !*path) return OKV_OK;
    bool existed = access(path, F_OK) == 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return okv_fail(OKV_ERR_INPUT, "cannot write the trace '%s': %s; give --trace a writable "
                        "file", path, strerror(errno));
    close(fd);
    if (!existed) unlink(path);
    return OKV_OK;
}

int pipe_trace_init(pipe_trace *t, const char *path, int cap, MPI_Comm comm) {
    memset(t, 0, sizeof *t);
    CHECK_MPI(MPI_Barrier(comm));
    t->t0 = okv_now_s();
    if (!path || !*path) return OKV_OK;
    t->ev = malloc(sizeof *t->ev * (size_t)cap);
    if (!t->ev) return okv_fail(OKV_ERR_NOMEM, "cannot allocate a trace of %d events", cap);
    t->cap = cap;
    t->on = true;
    return OKV_OK;
}

static const char *kind_name(int k) {
    switch (k) {
    case TRACE_DECODE: return "decode";
    case TRACE_PREFILL: return "prefill";
    case TRACE_RECV_WAIT: return "recv wait";
    case TRACE_SEND_WAIT: return "send wait";
    case TRACE_SAMPLE: return "head+sample";
    }
    return "?";
}

void pipe_trace_request(pipe_trace *t, const char *id, double t_start, double t_end, int n_prompt,
                        int n_tokens) {
    if (!t->on) return;
    if (t->n_req == t->cap_req) {
        t->cap_req = t->cap_req ? 2 * t->cap_req : 64;
        t->req = realloc(t->req, sizeof *t->req * (size_t)t->cap_req);
        OKV_ASSERT(t->req);
    }
    pipe_trace_req *r = &t->req[t->n_req++];
    *r = (pipe_trace_req){t_start - t->t0, t_end - t->t0, n_prompt, n_tokens, strdup(id)};
    OKV_ASSERT(r->id);
}

/* A JSON string literal of s (quotes and escapes included); malloc'd. */
static char *json_string(const char *s) {
    cJSON *j = cJSON_CreateString(s);
    char *out = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    OKV_ASSERT(out);
    return out;
}

/* Rank 0's requests meet the other events through slots: a request's first prompt chunk is the
 * first prefill rank 0 records after the request's start (the runner queues a prompt's chunks
 * together), which gives its slot; an event of that slot inside the request's span is its. */
static void requests_to_events(const pipe_trace_req *req, int n_req, const pipe_trace_ev *ev,
                               const int *counts, int size, int *slot_of, int *req_of) {
    for (int q = 0; q < n_req; q++) {
        slot_of[q] = -1;
        for (int i = 0; i < counts[0] && slot_of[q] < 0; i++)
            if (ev[i].kind == TRACE_PREFILL && ev[i].slot >= 0 && ev[i].t0 >= req[q].t0)
                slot_of[q] = ev[i].slot;
    }
    size_t k = 0;
    for (int r = 0; r < size; r++)
        for (int i = 0; i < counts[r]; i++, k++) {
            req_of[k] = -1;
            for (int q = 0; q < n_req && ev[k].slot >= 0 && req_of[k] < 0; q++)
                if (slot_of[q] == ev[k].slot && ev[k].t0 >= req[q].t0 && ev[k].t0 <= req[q].t1)
                    req_of[k] = q;
        }
}

static const char *kind_cat(int k) {
    return k == TRACE_RECV_WAIT || k == TRACE_SEND_WAIT ? "wait" : "compute";
}

static int write_json(const char *path, const pipe_trace_ev *ev, const int *counts, int size,
                      const uint64_t *dropped, char (*names)[96], const pipe_trace *t) {
    size_t total = 0;
    for (int r = 0; r < size; r++) total += (size_t)counts[r];
    int *slot_of = malloc(sizeof(int) * ((size_t)t->n_req + 1));
    int *req_of = malloc(sizeof(int) * (total + 1));
    char **ids = calloc((size_t)t->n_req + 1, sizeof *ids);
    OKV_ASSERT(slot_of && req_of && ids);
    requests_to_events(t->req, t->n_req, ev, counts, size, slot_of, req_of);
    for (int q = 0; q < t->n_req; q++) ids[q] = json_string(t->req[q].id);
    FILE *f = fopen(path, "w");
    if (!f) {
        for (int q = 0; q < t->n_req; q++) free(ids[q]);
        free(ids);
        free(slot_of);
        free(req_of);
        return okv_fail(OKV_ERR_INPUT, "cannot write the trace '%s': %s", path, strerror(errno));
    }
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    bool first = true;
    for (int r = 0; r < size; r++) {
        fprintf(f, "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":"
                "{\"name\":\"%s\"}}", first ? "" : ",\n", r, names[r]);
        fprintf(f, ",\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"sort_index\":%d}}", r, r);
        first = false;
    }
    if (t->n_req)
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":1,\"args\":"
                "{\"name\":\"requests\"}}");
    for (int q = 0; q < t->n_req; q++) {
        const pipe_trace_req *r = &t->req[q];
        fprintf(f, ",\n{\"name\":%s,\"cat\":\"request\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                "\"pid\":0,\"tid\":1,\"args\":{\"request\":%s,\"slot\":%d,\"prompt_tokens\":%d,"
                "\"tokens\":%d}}", ids[q], r->t0 * 1e6, (r->t1 - r->t0) * 1e6, ids[q], slot_of[q],
                r->n_prompt, r->n_tokens);
    }
    size_t k = 0;
    for (int r = 0; r < size; r++)
        for (int i = 0; i < counts[r]; i++, k++) {
            const pipe_trace_ev *e = &ev[k];
            fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                    "\"pid\":%d,\"tid\":0,\"args\":{\"mb\":%d,\"n\":%d", kind_name(e->kind),
                    kind_cat(e->kind), e->t0 * 1e6, (e->t1 - e->t0) * 1e6, r, e->mb, e->n);
            if (e->slot >= 0) fprintf(f, ",\"slot\":%d", e->slot);
            if (req_of[k] >= 0) fprintf(f, ",\"request\":%s", ids[req_of[k]]);
            if (e->kind == TRACE_DECODE) fprintf(f, ",\"bank_ms\":%.4f", e->bank_s * 1e3);
            fprintf(f, "}}");
        }
    fprintf(f, "\n],\"otherData\":{\"dropped_events\":[");
    for (int r = 0; r < size; r++) fprintf(f, "%s%llu", r ? "," : "", (unsigned long long)dropped[r]);
    fprintf(f, "]}}\n");
    for (int q = 0; q < t->n_req; q++) free(ids[q]);
    free(ids);
    free(slot_of);
    free(req_of);
    bool bad = ferror(f);
    if (fclose(f) != 0 || bad) return okv_fail(OKV_ERR_INPUT, "cannot write the trace '%s'", path);
    return OKV_OK;
}

int pipe_trace_write(pipe_trace *t, const char *path, MPI_Comm comm, char (*names)[96]) {
    int rank, size;
    CHECK_MPI(MPI_Comm_rank(comm, &rank));
    CHECK_MPI(MPI_Comm_size(comm, &size));
    int *counts = NULL, *bytes = NULL, *displs = NULL;
    uint64_t *dropped = NULL;
    pipe_trace_ev *all = NULL;
    int nbytes = t->n * (int)sizeof *t->ev;
    if (rank == 0) {
        counts = calloc((size_t)size, sizeof *counts);
        bytes = calloc((size_t)size, sizeof *bytes);
        displs = calloc((size_t)size, sizeof *displs);
        dropped = calloc((size_t)size, sizeof *dropped);
        OKV_ASSERT(counts && bytes && displs && dropped);
    }
    CHECK_MPI(MPI_Gather(&t->n, 1, MPI_INT, counts, 1, MPI_INT, 0, comm));
    CHECK_MPI(MPI_Gather(&t->dropped, 1, MPI_UINT64_T, dropped, 1, MPI_UINT64_T, 0, comm));
    if (rank == 0) {
        int64_t total = 0;
        for (int r = 0; r < size; r++) {
            bytes[r] = counts[r] * (int)sizeof *t->ev;
            displs[r] = (int)total;
            total += bytes[r];
        }
        OKV_ASSERT(total < INT32_MAX);
        all = malloc((size_t)total + 1);
        OKV_ASSERT(all);
    }
    CHECK_MPI(MPI_Gatherv(t->ev, nbytes, MPI_BYTE, all, bytes, displs, MPI_BYTE, 0, comm));
    int st = OKV_OK;
    if (rank == 0) {
        st = write_json(path, all, counts, size, dropped, names, t);
        if (!st) {
            uint64_t lost = 0;
            for (int r = 0; r < size; r++) lost += dropped[r];
            if (lost)
                OKV_WARN("the trace buffers overflowed: %llu events were not recorded",
                         (unsigned long long)lost);
            OKV_INFO("trace of %d rank(s) written to %s", size, path);
        }
    }
    free(counts);
    free(bytes);
    free(displs);
    free(dropped);
    free(all);
    return st;
}

void pipe_trace_free(pipe_trace *t) {
    for (int q = 0; q < t->n_req; q++) free(t->req[q].id);
    free(t->req);
    free(t->ev);
    memset(t, 0, sizeof *t);
}

/* ---- the tracing forward of a single rank ---------------------------------------------------- */

typedef struct traced_fwd {
    okv_forward inner;
    pipe_trace *t;
} traced_fwd;

static int traced_seq_start(void *ctx, int slot, int n_prompt, int *k) {
    traced_fwd *w = ctx;
    return w->inner.seq_start(w->inner.ctx, slot, n_prompt, k);
}

static void traced_seq_end(void *ctx, int slot) {
    traced_fwd *w = ctx;
    w->inner.seq_end(w->inner.ctx, slot);
}

static int traced_prefill(void *ctx, int mb, int slot, const int32_t *ids, int pos0, int n,
                          const okv_sample_req *last) {
    traced_fwd *w = ctx;
    double t0 = okv_now_s();
    int st = w->inner.prefill(w->inner.ctx, mb, slot, ids, pos0, n, last);
    if (!st) pipe_trace_add(w->t, TRACE_PREFILL, t0, okv_now_s(), mb, n, slot, 0.0);
    return st;
}

static int traced_decode(void *ctx, int mb, const okv_sample_req *seqs, const int32_t *ids, int n) {
    traced_fwd *w = ctx;
    double t0 = okv_now_s();
    int st = w->inner.decode(w->inner.ctx, mb, seqs, ids, n);
    if (!st) pipe_trace_add(w->t, TRACE_DECODE, t0, okv_now_s(), mb, n, -1, 0.0);
    return st;
}

static int traced_poll(void *ctx, bool wait, okv_done *d, bool *got) {
    traced_fwd *w = ctx;
    return w->inner.poll(w->inner.ctx, wait, d, got);
}

void pipe_trace_forward_init(okv_forward *outer, const okv_forward *inner, pipe_trace *t) {
    traced_fwd *w = calloc(1, sizeof *w);
    OKV_ASSERT(w);
    w->inner = *inner;
    w->t = t;
    *outer = *inner;
    outer->ctx = w;
    outer->seq_start = traced_seq_start;
    outer->seq_end = traced_seq_end;
    outer->prefill = traced_prefill;
    outer->decode = traced_decode;
    outer->poll = traced_poll;
}

void pipe_trace_forward_free(okv_forward *outer) {
    free(outer->ctx);
    memset(outer, 0, sizeof *outer);
}
