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
    int st = cpu_attn_reserve(be, s, max_ctx);
    return st ? st : cpu_select_reserve(be, max_ctx);
}

int okv_backend_cpu_init(okv_backend *be, int n_threads, int max_tok, int max_in) {
    *be = (okv_backend){
        .name = "cpu",
        .matmul = cpu_matmul,
        .rmsnorm = cpu_rmsnorm,
        .rope = cpu_rope,
        .swiglu = cpu_swiglu,
        .add = cpu_add,
        .embed = cpu_embed,
        .kv_store = cpu_kv_store,
        .attn_prefill = cpu_attn_prefill,
        .attn_decode = cpu_attn_decode,
        .attn_logits = cpu_attn_logits,
        .bias_add = cpu_bias_add,
        .select = cpu_select,
        .argmax = cpu_argmax,
        .gather_rows = cpu_gather_rows,
        .reserve = cpu_reserve,
        .free = cpu_free,
    };
    okv_host_mem_ops(be);
    if (n_threads < 1 || max_tok < 1 || max_in < 1)
        return okv_fail(OKV_ERR_USAGE,
                        "CPU backend needs threads, max tokens and max row length >= 1 (got %d, %d, %d)",
                        n_threads, max_tok, max_in);
    cpu_state *st = calloc(1, sizeof *st);
    if (!st) return okv_fail(OKV_ERR_NOMEM, "out of memory for the CPU backend state");
    be->state = st;
    st->n_threads = n_threads;
    st->max_tok = max_tok;
    st->max_in = max_in;
    const size_t act_bytes = (size_t)max_tok * cpu_act_row_bytes(max_in);
    const size_t pf_bytes = (size_t)n_threads * cpu_pf_floats() * sizeof(float);
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
