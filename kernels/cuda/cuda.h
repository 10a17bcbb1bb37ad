/* cuda.h — private to the CUDA backend (kernels/cuda): its state and the host launcher each
 * .cu file here provides to backend_cuda.cu, with the table's signatures (backend.h). Every op
 * is compared with its kernels/ref.c twin by tests/gpu/ on a GPU. Included by the .cu files here and
 * by tests/bench/bench_cuda.c (which times on the backend's streams). */
#ifndef OKV_CUDA_H
#define OKV_CUDA_H

#include "../backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* C linkage: tests/bench/bench_cuda.c (C) calls into the backend through this header. */
#ifdef __cplusplus
extern "C" {
#endif

/* A failing CUDA / cuBLAS call: file:line, rank, host, expression and the library's message,
 * then every rank aborts (okv_die). */
void cuda_die(cudaError_t e, const char *file, int line, const char *what);
void cublas_die(cublasStatus_t s, const char *file, int line, const char *what);
#define CHECK_CUDA(expr) \
    do { \
        cudaError_t e_ = (expr); \
        if (e_ != cudaSuccess) cuda_die(e_, __FILE__, __LINE__, #expr); \
    } while (0)
#define CHECK_CUBLAS(expr) \
    do { \
        cublasStatus_t s_ = (expr); \
        if (s_ != CUBLAS_STATUS_SUCCESS) cublas_die(s_, __FILE__, __LINE__, #expr); \
    } while (0)
/* After a kernel launch: a bad launch configuration fails here, at its line. */
#define CHECK_LAUNCH() CHECK_CUDA(cudaGetLastError())

static inline int64_t cuda_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Decode attention cuts the logical key sequence (all views concatenated) at multiples of this
 * and combines the pieces in order: the result depends only on the rows visited, never on how
 * they are split into views, so OmniKV with k >= N equals dense bitwise. */
#define CUDA_ATTN_CHUNK 256

typedef struct cuda_state {
    int device;
    cudaStream_t stream[OKV_N_STREAMS]; /* compute, copy */
    cublasHandle_t cublas;              /* bound to the compute stream */
    int max_tok, max_in;
    void *act;          /* matmul activations: [max_tok][max_in] in f16/bf16, or quantized as
                         * int8 qs [n_tok][n_in], then f32 d [n_tok][n_in/32], f32 s likewise */
    size_t act_bytes;
    int n_sm;           /* multiprocessors: sizes grids that loop */
    bool host_ptr_ok;   /* registered host memory is read on the device at its host address */
    /* attention and selection scratch sized by reserve (attention.cu, select.cu) */
    float *attn_part;   /* split-K partials */
    size_t attn_part_bytes;
    void *sel_scratch;  /* scores, radix histograms, candidates */
    size_t sel_scratch_bytes;
    int max_ctx;
} cuda_state;

static inline cudaStream_t cuda_compute(okv_backend *be) {
    return ((cuda_state *)be->state)->stream[OKV_STREAM_COMPUTE];
}

/* ---- matmul.cu ---- */
void cuda_matmul(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                 int n_tok, int n_in, int n_out);
/* ---- elementwise.cu ---- */
void cuda_rmsnorm(okv_backend *be, float *y, const float *x, const float *w, int n_tok, int dim,
                  float eps);
void cuda_rope(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
               const float *inv_freq, int n_freq);
void cuda_swiglu(okv_backend *be, float *out, const float *gate, const float *up, int64_t n);
void cuda_add(okv_backend *be, float *y, const float *x, int64_t n);
void cuda_bias_add(okv_backend *be, float *y, const float *b, int n_tok, int dim);
void cuda_embed(okv_backend *be, float *out, const void *table, okv_type type, const int32_t *ids,
                int n_tok, int dim);
void cuda_kv_store(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,
                   const int32_t *dst_rows, const float *src, int n_tok, int row_elems);
void cuda_argmax(okv_backend *be, int32_t *out, const float *x, int n_rows, int n);
/* ---- gather.cu ---- */
void cuda_gather_rows(okv_backend *be, void *dst, const void *src, size_t src_stride,
                      size_t row_bytes, const int32_t *idx, int n, int stream);
void cuda_gather_rows_cached(okv_backend *be, void *dst, const void *src, size_t src_stride,
                             size_t row_bytes, const int32_t *idx, int n, const void *old,
                             const int32_t *old_idx, int n_old, uint64_t *hits, int stream);
/* ---- attention.cu ---- */
void cuda_attn_prefill(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                       okv_kv_view kv, okv_attn_shape s);
void cuda_attn_decode(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                      int n_views, okv_attn_shape s, float *logits);
void cuda_attn_logits(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                      okv_attn_shape s);
int cuda_attn_reserve(okv_backend *be, okv_attn_shape s, int max_ctx);
/* ---- select.cu ---- */
int cuda_select(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
                const okv_select_args *a);
int cuda_select_reserve(okv_backend *be, int max_ctx);

#ifdef __cplusplus
}
#endif

#endif
