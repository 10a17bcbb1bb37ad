/* select.c — the CPU backend's small ops around attention: the filter layer's selection (scores,
 * then quickselect top-k in scratch sized at start-up), argmax for greedy sampling, bias add and
 * the row gather of bank rows. Compared with kernels/ref.c by tests/unit/test_kernels.c. */
#include "cpu.h"
#include "common.h"

#include <string.h>

void cpu_bias_add(okv_backend *be, float *y, const float *b, int n_tok, int dim) {
    for (int t = 0; t < n_tok; t++) {
        float *row = y + (int64_t)t * dim;
        for (int i = 0; i < dim; i++) row[i] += b[i];
    }
}

int cpu_select_reserve(okv_backend *be, int max_ctx) {
    cpu_state *st = be->state;
    if (max_ctx <= st->sel_cap) return OKV_OK;
    cpu_select_free(st);
    st->sel_score = okv_alloc(sizeof(float) * (size_t)max_ctx);
    st->sel_f = okv_alloc(sizeof(float) * (size_t)max_ctx);
    st->sel_i = okv_alloc(sizeof(int32_t) * (size_t)max_ctx);
    if (!st->sel_score || !st->sel_f || !st->sel_i) {
        cpu_select_free(st);
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate selection scratch for %d tokens", max_ctx);
    }
    st->sel_cap = max_ctx;
    return OKV_OK;
}

void cpu_select_free(cpu_state *st) {
    okv_free_mem(st->sel_score);
    okv_free_mem(st->sel_f);
    okv_free_mem(st->sel_i);
    st->sel_score = st->sel_f = NULL;
    st->sel_i = NULL;
    st->sel_cap = 0;
}

int cpu_select(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
               const okv_select_args *a) {
    cpu_state *st = be->state;
    if (n <= 0) return 0;
    OKV_ASSERT(n <= st->sel_cap);
    const int c = okv_select_candidates(n, a);
    okv_select_scores_ref(st->sel_score, logits, n_heads, n, a);
    okv_select_force(st->sel_score, c, a);
    int k = okv_topk(out, st->sel_score, c, okv_select_scored(a), st->sel_f, st->sel_i);
    for (int j = c; j < n; j++) out[k++] = j;
    return k;
}

void cpu_argmax(okv_backend *be, int32_t *out, const float *x, int n_rows, int n) {
    okv_argmax_ref(out, x, n_rows, n);
}

/* Position of v in the ascending a[0..n), or -1. */
static int find_sorted(const int32_t *a, int n, int32_t v) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1;
        else if (a[mid] > v) hi = mid - 1;
        else return mid;
    }
    return -1;
}

void cpu_gather_rows_cached(okv_backend *be, void *dst, const void *src, size_t src_stride,
                            size_t row_bytes, const int32_t *idx, int n, const void *old,
                            const int32_t *old_idx, int n_old, uint64_t *hits, int stream) {
    cpu_state *st = be->state;
    uint64_t found = 0;
#pragma omp parallel for num_threads(st->n_threads) schedule(static) reduction(+ : found) if (n >= 64)
    for (int i = 0; i < n; i++) {
        const int j = find_sorted(old_idx, n_old, idx[i]);
        const uint8_t *from = j >= 0 ? (const uint8_t *)old + (size_t)j * row_bytes
                                     : (const uint8_t *)src + (size_t)idx[i] * src_stride;
        memcpy((uint8_t *)dst + (size_t)i * row_bytes, from, row_bytes);
        found += j >= 0;
    }
    *hits += found;
}

void cpu_gather_rows(okv_backend *be, void *dst, const void *src, size_t src_stride,
                     size_t row_bytes, const int32_t *idx, int n, int stream) {
    cpu_state *st = be->state;
#pragma omp parallel for num_threads(st->n_threads) schedule(static) if (n >= 64)
    for (int i = 0; i < n; i++)
        memcpy((uint8_t *)dst + (size_t)i * row_bytes,
               (const uint8_t *)src + (size_t)idx[i] * src_stride, row_bytes);
}
