/* backend_cpu.c — builds the CPU backend: thread count, the scratch sized once at start-up and
 * the op table pointing at the other files of kernels/cpu. Exercised by tests/unit/test_kernels.c. */
#include "cpu.h"
#include "common.h"

#include <stdlib.h>

static void cpu_free(okv_backend *be) {
    cpu_state *st = be->state;
    if (st) {
        okv_free_mem(st->act);
        okv_free_mem(st->dec);
        okv_free_mem(st->pf);
        cpu_select_free(st);
        free(st);
    }
    be->state = NULL;
}

static int cpu_reserve(okv_backend *be, okv_attn_shape s, int max_ctx) {
    cpu_state *cs = be->state;
    int st = cs->path->attn_reserve(be, s, max_ctx);
    return st ? st : cpu_select_reserve(be, max_ctx);
}

/* The ops of the vector path isa.c chooses, then this file's and select.c's. */
int okv_backend_cpu_init(okv_backend *be, int n_threads, int max_tok, int max_in) {
    const cpu_path *path = cpu_path_choose();
    *be = path ? path->ops : (okv_backend){0};
    be->name = "cpu";
    be->bias_add = cpu_bias_add;
    be->select = cpu_select;
    be->argmax = cpu_argmax;
    be->gather_rows = cpu_gather_rows;
    be->gather_rows_cached = cpu_gather_rows_cached;
    be->reserve = cpu_reserve;
    be->weight_ok = okv_weight_ok_all;
    be->free = cpu_free;
    okv_host_mem_ops(be);
    if (!path) return OKV_ERR_USAGE;
    if (n_threads < 1 || max_tok < 1 || max_in < 1)
        return okv_fail(OKV_ERR_USAGE,
                        "CPU backend needs threads, max tokens and max row length >= 1 (got %d, %d, %d)",
                        n_threads, max_tok, max_in);
    cpu_state *st = calloc(1, sizeof *st);
    if (!st) return okv_fail(OKV_ERR_NOMEM, "out of memory for the CPU backend state");
    be->state = st;
    st->path = path;
    st->n_threads = n_threads;
    st->max_tok = max_tok;
    st->max_in = max_in;
    const size_t act_bytes = (size_t)max_tok * path->act_row_bytes(max_in);
    const size_t pf_bytes = (size_t)n_threads * path->pf_floats() * sizeof(float);
    st->act = okv_alloc(act_bytes);
    st->pf = okv_alloc(pf_bytes);
    if (!st->act || !st->pf) {
        cpu_free(be);
        return okv_fail(OKV_ERR_NOMEM,
                        "cannot allocate %zu bytes of CPU scratch (%d tokens x %d inputs, %d threads); "
                        "lower the batch/chunk size or the thread count",
                        act_bytes + pf_bytes, max_tok, max_in, n_threads);
    }
    return OKV_OK;
}
