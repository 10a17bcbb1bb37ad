/* trace.c — recording into a fixed buffer and writing the gathered timelines as Chrome trace
 * JSON ("X" complete events, microseconds; one process per rank). Tested by
 * tests/mpi/test_pipeline.sh. */
#include "trace.h"

#include "../src/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const char *kind_cat(int k) {
    return k == TRACE_RECV_WAIT || k == TRACE_SEND_WAIT ? "wait" : "compute";
}

static int write_json(const char *path, const pipe_trace_ev *ev, const int *counts, int size,
                      const uint64_t *dropped, char (*names)[96]) {
    FILE *f = fopen(path, "w");
    if (!f) return okv_fail(OKV_ERR_INPUT, "cannot write the trace '%s': %s", path, strerror(errno));
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    bool first = true;
    for (int r = 0; r < size; r++) {
        fprintf(f, "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":"
                "{\"name\":\"%s\"}}", first ? "" : ",\n", r, names[r]);
        fprintf(f, ",\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"sort_index\":%d}}", r, r);
        first = false;
    }
    size_t k = 0;
    for (int r = 0; r < size; r++)
        for (int i = 0; i < counts[r]; i++, k++) {
            const pipe_trace_ev *e = &ev[k];
            fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                    "\"pid\":%d,\"tid\":0,\"args\":{\"mb\":%d,\"n\":%d", kind_name(e->kind),
                    kind_cat(e->kind), e->t0 * 1e6, (e->t1 - e->t0) * 1e6, r, e->mb, e->n);
            if (e->slot >= 0) fprintf(f, ",\"slot\":%d", e->slot);
            if (e->kind == TRACE_DECODE) fprintf(f, ",\"bank_ms\":%.4f", e->bank_s * 1e3);
            fprintf(f, "}}");
        }
    fprintf(f, "\n],\"otherData\":{\"dropped_events\":[");
    for (int r = 0; r < size; r++) fprintf(f, "%s%llu", r ? "," : "", (unsigned long long)dropped[r]);
    fprintf(f, "]}}\n");
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
        st = write_json(path, all, counts, size, dropped, names);
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
    free(t->ev);
    memset(t, 0, sizeof *t);
}
