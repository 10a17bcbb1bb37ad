/* elementwise.cu — the CUDA backend's per-element and per-row ops: rmsnorm, rope, swiglu, add,
 * bias_add, embedding lookup, KV-cache stores and argmax, each with kernels/ref.c's formula and
 * operation order (explicit _rn intrinsics keep nvcc from fusing a multiply and an add the host
 * keeps apart). Compared with the references by tests/gpu/test_cuda_ops.c (embed, kv_store, add,
 * bias_add and argmax exactly). */
#include "cuda.h"

#include <cuda_fp16.h>

#define EW_THREADS 256
#define FULL_MASK 0xffffffffu

/* Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than needed. */
static unsigned ew_grid(okv_backend *be, int64_t n) {
    const int64_t cap = (int64_t)((cuda_state *)be->state)->n_sm * 16;
    return (unsigned)OKV_MAX((int64_t)1, OKV_MIN(cuda_ceil_div(n, EW_THREADS), cap));
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- rmsnorm --------------------------------------------------------------------------------- */

/* One block per token: squares in f32 summed in double, then okv_rmsnorm_ref's f32 steps. */
__global__ void __launch_bounds__(EW_THREADS)
rmsnorm_kernel(float *y, const float *x, const float *w, int dim, float eps) {
    __shared__ double part[EW_THREADS / 32];
    __shared__ float scale_sh;
    const float *xt = x + (int64_t)blockIdx.x * dim;
    float *yt = y + (int64_t)blockIdx.x * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)__fmul_rn(xt[i], xt[i]);
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(FULL_MASK, ss, off);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0.0;
        for (int k = 0; k < EW_THREADS / 32; k++) tot += part[k];
        const float mean = (float)(tot / dim);
        scale_sh = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    }
    __syncthreads();
    const float scale = scale_sh;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yt[i] = __fmul_rn(__fmul_rn(xt[i], scale), w[i]);
}

void cuda_rmsnorm(okv_backend *be, float *y, const float *x, const float *w, int n_tok, int dim,
                  float eps) {
    if (n_tok <= 0 || dim <= 0) return;
    rmsnorm_kernel<<<n_tok, EW_THREADS, 0, cuda_compute(be)>>>(y, x, w, dim, eps);
    CHECK_LAUNCH();
}

/* ---- rope ------------------------------------------------------------------------------------ */

/* One thread per (token, head, frequency) pair, okv_rope_ref's expressions in its order. */
__global__ void rope_kernel(float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
                            const float *inv_freq, int n_freq) {
    const int64_t n = (int64_t)n_tok * n_heads * n_freq;
    GRID_STRIDE(k, n) {
        const int i = (int)(k % n_freq);
        const int64_t th = k / n_freq; /* token * n_heads + head */
        const int t = (int)(th / n_heads);
        const float theta = __fmul_rn((float)pos[t], inv_freq[i]);
        const float c = cosf(theta), s = sinf(theta);
        float *v = x + th * head_dim + 2 * i;
        const float a = v[0], b = v[1];
        v[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        v[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

void cuda_rope(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
               const float *inv_freq, int n_freq) {
    OKV_ASSERT(2 * n_freq <= head_dim);
    const int64_t n = (int64_t)n_tok * n_heads * n_freq;
    if (n <= 0) return;
    rope_kernel<<<ew_grid(be, n), EW_THREADS, 0, cuda_compute(be)>>>(x, pos, n_tok, n_heads, head_dim,
                                                                     inv_freq, n_freq);
    CHECK_LAUNCH();
}

/* ---- swiglu, add, bias_add ------------------------------------------------------------------ */

__global__ void swiglu_kernel(float *out, const float *gate, const float *up, int64_t n) {
    GRID_STRIDE(i, n) {
        const float g = gate[i];
        out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
    }
}

void cuda_swiglu(okv_backend *be, float *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    swiglu_kernel<<<ew_grid(be, n), EW_THREADS, 0, cuda_compute(be)>>>(out, gate, up, n);
    CHECK_LAUNCH();
}

__global__ void add_kernel(float *y, const float *x, int64_t n) {
    GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], x[i]);
}

void cuda_add(okv_backend *be, float *y, const float *x, int64_t n) {
    if (n <= 0) return;
    add_kernel<<<ew_grid(be, n), EW_THREADS, 0, cuda_compute(be)>>>(y, x, n);
    CHECK_LAUNCH();
}

__global__ void bias_add_kernel(float *y, const float *b, int dim, int64_t n) {
    GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], b[i % dim]);
}

void cuda_bias_add(okv_backend *be, float *y, const float *b, int n_tok, int dim) {
    const int64_t n = (int64_t)n_tok * dim;
    if (n <= 0) return;
    bias_add_kernel<<<ew_grid(be, n), EW_THREADS, 0, cuda_compute(be)>>>(y, b, dim, n);
    CHECK_LAUNCH();
}

/* ---- embed ----------------------------------------------------------------------------------- */

/* Element e of a stored row as f32, okv_dequant_row_ref's formula for each type. */
__device__ __forceinline__ float embed_elem(const uint8_t *row, int type, int e) {
    const int b = e / OKV_QK, j = e % OKV_QK, h = OKV_QK / 2;
    switch (type) {
    case OKV_TYPE_F32: return ((const float *)row)[e];
    case OKV_TYPE_F16: return __half2float(__ushort_as_half(((const uint16_t *)row)[e]));
    case OKV_TYPE_BF16: return __uint_as_float((uint32_t)((const uint16_t *)row)[e] << 16);
    case OKV_TYPE_Q4_0: {
        const okv_block_q4_0 *blk = (const okv_block_q4_0 *)row + b;
        const int q = j < h ? blk->qs[j] & 15 : blk->qs[j - h] >> 4;
        return __fmul_rn((float)(q - 8), __half2float(__ushort_as_half(blk->d)));
    }
    case OKV_TYPE_Q4_1: {
        const okv_block_q4_1 *blk = (const okv_block_q4_1 *)row + b;
        const int q = j < h ? blk->qs[j] & 15 : blk->qs[j - h] >> 4;
        return __fadd_rn(__fmul_rn((float)q, __half2float(__ushort_as_half(blk->d))),
                         __half2float(__ushort_as_half(blk->m)));
    }
    default: { /* OKV_TYPE_Q8_0 */
        const okv_block_q8_0 *blk = (const okv_block_q8_0 *)row + b;
        return __fmul_rn((float)blk->qs[j], __half2float(__ushort_as_half(blk->d)));
    }
    }
}

/* Grid: x covers the elements of a row, y the tokens (at most 65535). */
__global__ void embed_kernel(float *out, const uint8_t *table, int type, size_t row_bytes,
                             const int32_t *ids, int dim) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= dim) return;
    const int t = blockIdx.y;
    out[(int64_t)t * dim + e] = embed_elem(table + (size_t)ids[t] * row_bytes, type, e);
}

void cuda_embed(okv_backend *be, float *out, const void *table, okv_type type, const int32_t *ids,
                int n_tok, int dim) {
    OKV_ASSERT(okv_type_is_weight(type) && dim % okv_type_block_elems(type) == 0 && n_tok <= 65535);
    if (n_tok <= 0 || dim <= 0) return;
    const dim3 grid((unsigned)cuda_ceil_div(dim, EW_THREADS), (unsigned)n_tok);
    embed_kernel<<<grid, EW_THREADS, 0, cuda_compute(be)>>>(
        out, (const uint8_t *)table, (int)type, okv_type_row_bytes(type, dim), ids, dim);
    CHECK_LAUNCH();
}

/* ---- kv_store -------------------------------------------------------------------------------- */

/* Grid: x covers a row's elements, y the tokens (at most 65535). f16 by round to nearest even,
 * as okv_f32_to_fp16. */
__global__ void kv_store_kernel(void *dst, int f16, int64_t stride, const int32_t *rows,
                                const float *src, int row_elems) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= row_elems) return;
    const int t = blockIdx.y;
    const float v = src[(int64_t)t * row_elems + e];
    const int64_t off = (int64_t)rows[t] * stride + e;
    if (f16) ((__half *)dst)[off] = __float2half_rn(v);
    else ((float *)dst)[off] = v;
}

void cuda_kv_store(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,
                   const int32_t *dst_rows, const float *src, int n_tok, int row_elems) {
    OKV_ASSERT((dst_type == OKV_TYPE_F16 || dst_type == OKV_TYPE_F32) && n_tok <= 65535);
    if (n_tok <= 0 || row_elems <= 0) return;
    const dim3 grid((unsigned)cuda_ceil_div(row_elems, EW_THREADS), (unsigned)n_tok);
    kv_store_kernel<<<grid, EW_THREADS, 0, cuda_compute(be)>>>(dst, dst_type == OKV_TYPE_F16,
                                                               dst_stride, dst_rows, src, row_elems);
    CHECK_LAUNCH();
}

/* ---- argmax ---------------------------------------------------------------------------------- */

/* Whether (v, i) comes before (bv, bi): larger first, then the lower index; NaN never wins, as
 * in okv_argmax_ref's scan where no NaN compares greater. */
__device__ __forceinline__ bool argmax_before(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

/* One block per row. The reference's scan keeps index 0 when x[0] is NaN (nothing compares
 * greater than it) and when every value is NaN; both cases are settled after the reduction. */
__global__ void __launch_bounds__(EW_THREADS)
argmax_kernel(int32_t *out, const float *x, int n) {
    __shared__ float sv[EW_THREADS / 32];
    __shared__ int si[EW_THREADS / 32];
    const float *row = x + (int64_t)blockIdx.x * n;
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        if (argmax_before(row[j], j, bv, bi)) bv = row[j], bi = j;
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, bv, off);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, off);
        if (argmax_before(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if ((threadIdx.x & 31) == 0) sv[threadIdx.x / 32] = bv, si[threadIdx.x / 32] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < EW_THREADS / 32; k++)
            if (argmax_before(sv[k], si[k], bv, bi)) bv = sv[k], bi = si[k];
        out[blockIdx.x] = (n == 0 || bi == INT_MAX || isnan(row[0])) ? 0 : bi;
    }
}

void cuda_argmax(okv_backend *be, int32_t *out, const float *x, int n_rows, int n) {
    if (n_rows <= 0) return;
    argmax_kernel<<<n_rows, EW_THREADS, 0, cuda_compute(be)>>>(out, x, n);
    CHECK_LAUNCH();
}
