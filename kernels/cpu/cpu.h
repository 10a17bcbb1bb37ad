/* cpu.h — private to the CPU backend: its state and the entry points each source file here
 * provides to backend_cpu.c. Every op here is compared with its kernels/ref.c twin by
 * tests/unit/test_kernels.c. */
#ifndef OKV_CPU_H
#define OKV_CPU_H

#include "../backend.h"
#include "../cpu_isa.h"

#include <stddef.h>
#include <stdint.h>

/* matmul.c, matmul_kquant.c, elementwise.c and attention.c are compiled once per vector path (CMakeLists.txt
 * passes OKV_CPU_PATH=avx512|avx2|generic and that path's flags); their entry points carry the
 * path as a suffix, cpu_matmul_avx2, so one binary holds all three and isa.c picks at run time. */
#if defined(OKV_CPU_PATH_AVX512)
#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
      defined(__AVX512VNNI__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "the avx512 path is compiled without the AVX-512 flags CMakeLists.txt gives it"
#endif
#define OKV_CPU_AVX512 1
#elif defined(OKV_CPU_PATH_AVX2)
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "the avx2 path is compiled without the AVX2 flags CMakeLists.txt gives it"
#endif
#define OKV_CPU_AVX2 1
#endif
#define CPU_FN_CAT2(f, path) f##_##path
#define CPU_FN_CAT(f, path) CPU_FN_CAT2(f, path)
#define CPU_FN(f) CPU_FN_CAT(f, OKV_CPU_PATH)

/* Fully unrolls the short loops over a tile of tokens or heads so their accumulators live in
 * registers (GCC at -O2 otherwise keeps them in memory). */
#define CPU_UNROLL _Pragma("GCC unroll 16")

/* Decode attention cuts the logical key sequence (all views concatenated) at multiples of this
 * and combines the pieces in order, so its result depends neither on view boundaries nor on the
 * thread count. */
#define CPU_ATTN_CHUNK 256
/* Prefill tiles: up to CPU_PF_ROWS (query, head) rows against CPU_PF_KEYS keys at a time. Every
 * row of a unit shares each K/V tile read from the cache, so more rows mean fewer passes over it;
 * at 128 rows a unit's working set stays in L2 (about 220 KiB at head_dim 128). */
#define CPU_PF_ROWS 128
#define CPU_PF_KEYS 64
#define CPU_PF_MAX_HD 256

typedef struct cpu_state {
    int n_threads;
    int max_tok, max_in;
    uint8_t *act;   /* [max_tok][cpu_act_row_bytes(max_in)] quantized/rounded activations */
    float *dec;     /* decode scratch, grown on demand: [threads][n_heads][CPU_ATTN_CHUNK] logits,
                     * then per (head, chunk) the max, the exp sum and [head_dim] partial outputs */
    size_t dec_cap; /* floats in dec */
    float *pf;      /* [n_threads][cpu_pf_floats()] prefill tiles */
    float *sel_score, *sel_f; /* [sel_cap] selection scores and quickselect keys */
    int32_t *sel_i;           /* [sel_cap] quickselect positions */
    int sel_cap;
    const struct cpu_path *path; /* the vector path the ops come from */
} cpu_state;

/* ---- matmul.c, matmul_kquant.c, elementwise.c, attention.c: one set per path ---- */
#define CPU_PATH_DECLARE(path)                                                                     \
    size_t cpu_act_row_bytes_##path(int64_t n_in);                                                 \
    void cpu_matmul_##path(okv_backend *be, float *y, const void *w, okv_type wtype,               \
                           const float *x, int n_tok, int n_in, int n_out);                        \
    void cpu_matmul_kquant_##path(okv_backend *be, float *y, const void *w, okv_type wtype,        \
                                  const float *x, int n_tok, int n_in, int n_out);                 \
    void cpu_rmsnorm_##path(okv_backend *be, float *y, const float *x, const float *w, int n_tok,  \
                            int dim, float eps);                                                   \
    void cpu_rope_##path(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads,    \
                         int head_dim, const float *inv_freq, int n_freq);                         \
    void cpu_swiglu_##path(okv_backend *be, float *out, const float *gate, const float *up,        \
                           int64_t n);                                                             \
    void cpu_add_##path(okv_backend *be, float *y, const float *x, int64_t n);                     \
    void cpu_embed_##path(okv_backend *be, float *out, const void *table, okv_type type,           \
                          const int32_t *ids, int n_tok, int dim);                                 \
    void cpu_kv_store_##path(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,    \
                             const int32_t *dst_rows, const float *src, int n_tok, int row_elems); \
    size_t cpu_pf_floats_##path(void);                                                             \
    void cpu_attn_prefill_##path(okv_backend *be, float *out, const float *q, int n_q, int q_pos0, \
                                 okv_kv_view kv, okv_attn_shape s);                                \
    int cpu_attn_reserve_##path(okv_backend *be, okv_attn_shape s, int max_ctx);                   \
    void cpu_attn_decode_##path(okv_backend *be, float *out, const float *q,                       \
                                const okv_kv_view *views, int n_views, okv_attn_shape s,           \
                                float *logits);                                                    \
    void cpu_attn_logits_##path(okv_backend *be, float *logits, const float *q, okv_kv_view kv,    \
                                okv_attn_shape s);
CPU_PATH_DECLARE(avx512)
CPU_PATH_DECLARE(avx2)
CPU_PATH_DECLARE(generic)
#undef CPU_PATH_DECLARE

/* One path's entry points: the ops it puts in the table and the sizes and reservation the
 * backend's scratch follows. */
typedef struct cpu_path {
    okv_cpu_isa isa;
    size_t (*act_row_bytes)(int64_t n_in);
    size_t (*pf_floats)(void);
    int (*attn_reserve)(okv_backend *be, okv_attn_shape s, int max_ctx);
    okv_backend ops; /* the per-path op entries; the rest stay NULL */
} cpu_path;

/* ---- isa.c ---- */
/* The path the request (okv_cpu_isa_request) and this CPU give, logged when it changes; NULL
 * with okv_fail(OKV_ERR_USAGE) set when the requested path needs features the CPU lacks. */
const cpu_path *cpu_path_choose(void);

/* ---- select.c ---- */
void cpu_bias_add(okv_backend *be, float *y, const float *b, int n_tok, int dim);
int cpu_select(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
               const okv_select_args *a);
void cpu_argmax(okv_backend *be, int32_t *out, const float *x, int n_rows, int n);
void cpu_gather_rows_cached(okv_backend *be, void *dst, const void *src, size_t src_stride,
                            size_t row_bytes, const int32_t *idx, int n, const void *old,
                            const int32_t *old_idx, int n_old, uint64_t *hits, int stream);
void cpu_gather_rows(okv_backend *be, void *dst, const void *src, size_t src_stride,
                     size_t row_bytes, const int32_t *idx, int n, int stream);
int cpu_select_reserve(okv_backend *be, int max_ctx);
void cpu_select_free(cpu_state *st);

#endif
