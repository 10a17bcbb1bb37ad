/* matmul.cu — Y = X W^T on the GPU with kernels/ref.c's numerics: f32/f16/bf16 weights take the
 * activations rounded to their type with f32 accumulation (a GEMV kernel below 8 tokens, cuBLAS
 * from 8); q8_0/q4_0/q4_1 weights take them quantized per 32-block exactly as okv_quant_row_ref
 * does, then integer block dots (dp4a) scaled by the f16 scales as okv_vec_dot_ref does.
 * Compared with okv_matmul_ref over ragged shapes by tests/gpu/test_cuda_ops.c. */
#include "cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define MM_WARPS 4         /* output rows per block: one warp each */
#define MM_TILE 8          /* tokens per pass over a weight row */
#define MM_GEMM_MIN_TOK 8  /* from this many tokens f32/f16/bf16 go to cuBLAS */
#define FULL_MASK 0xffffffffu

/* ---- activation quantization ---------------------------------------------------------------- */

/* One warp per 32-block of x ([n_blocks][32] flat): d = amax/127 kept as its f16 value, the
 * multiplier 127/amax (not 1/d), round half to even, and for q8_1 s = f16(sum(q) * d) with the
 * unrounded d - okv_quant_row_ref's steps, each an IEEE f32 operation as on the host. */
__global__ void mm_quant_kernel(int8_t *qs, float *d, float *s, const float *x, int64_t n_blocks) {
    const int64_t b = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (b >= n_blocks) return; /* uniform across the warp */
    const int lane = threadIdx.x & 31;
    const float v = x[b * 32 + lane];
    float amax = fabsf(v);
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL_MASK, amax, off));
    const float db = __fdiv_rn(amax, 127.0f);
    const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    const int q = __float2int_rn(__fmul_rn(v, id));
    qs[b * 32 + lane] = (int8_t)q;
    int sum = q;
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, off);
    if (lane == 0) {
        d[b] = __half2float(__float2half_rn(db));
        if (s) s[b] = __half2float(__float2half_rn(__fmul_rn((float)sum, db)));
    }
}

/* ---- quantized GEMV, tokens tiled ------------------------------------------------------------ */

__device__ __forceinline__ float mm_h2f(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const uint16_t *)p));
}

/* Four bytes from a 2-byte aligned address (q8_0 and q4_0 blocks are 34 and 18 bytes long). */
__device__ __forceinline__ int mm_load_int_a2(const uint8_t *p) {
    const uint16_t *h = (const uint16_t *)p;
    return (int)((uint32_t)h[0] | ((uint32_t)h[1] << 16));
}

/* The weight bits one lane holds for one block: its quarter of the quants as two dp4a operands
 * (q4_0's already minus 8), the f16 scale and, for q4_1, the f16 minimum as f32. */
typedef struct mm_wq {
    int w0, w1;
    float d, m;
} mm_wq;

template <int WT>
__device__ __forceinline__ mm_wq mm_load_wq(const uint8_t *wr, int b, int sub) {
    mm_wq q;
    q.m = 0.0f;
    if (WT == OKV_TYPE_Q8_0) {
        const uint8_t *blk = wr + (size_t)b * sizeof(okv_block_q8_0);
        q.d = mm_h2f(blk);
        q.w0 = mm_load_int_a2(blk + 2 + 8 * sub);
        q.w1 = mm_load_int_a2(blk + 2 + 8 * sub + 4);
    } else if (WT == OKV_TYPE_Q4_0) {
        const uint8_t *blk = wr + (size_t)b * sizeof(okv_block_q4_0);
        q.d = mm_h2f(blk);
        const int qi = mm_load_int_a2(blk + 2 + 4 * sub);
        /* elements 4sub..4sub+3 (low nibbles) and 16+4sub.. (high), each minus 8 */
        q.w0 = (int)__vsub4((uint32_t)qi & 0x0f0f0f0fu, 0x08080808u);
        q.w1 = (int)__vsub4(((uint32_t)qi >> 4) & 0x0f0f0f0fu, 0x08080808u);
    } else {
        const uint8_t *blk = wr + (size_t)b * sizeof(okv_block_q4_1);
        q.d = mm_h2f(blk);
        q.m = mm_h2f(blk + 2);
        const int qi = *(const int *)(blk + 4 + 4 * sub);
        q.w0 = (int)((uint32_t)qi & 0x0f0f0f0fu);
        q.w1 = (int)(((uint32_t)qi >> 4) & 0x0f0f0f0fu);
    }
    return q;
}

/* Weight blocks a lane group loads before it uses the first: a warp then has MM_Q_STEPS * 8
 * blocks of its row in flight, enough to cover the memory latency with one warp per row. */
#define MM_Q_STEPS 4

/* One warp per output row o; four lanes share a weight block (a quarter each), so a warp covers 8
 * blocks a step. The 4-lane integer sum is the block's exact dot; its f32 scale product is the
 * reference's, (d_w * d_x) * isum, and block terms add in double as in okv_vec_dot_ref. NT is the
 * tile's token capacity, nt <= NT the tokens present. xq: [nt][n_in] int8, xd/xs: [nt][n_in/32]. */
template <int WT, int NT>
__global__ void __launch_bounds__(MM_WARPS * 32)
mm_q_kernel(float *y, const uint8_t *w, size_t row_bytes, const int8_t *xq, const float *xd,
            const float *xs, int nt, int n_in, int n_out) {
    const int o = blockIdx.x * MM_WARPS + threadIdx.x / 32;
    if (o >= n_out) return; /* uniform across the warp */
    const int lane = threadIdx.x & 31, sub = lane & 3;
    const int nb = n_in / 32;
    const uint8_t *wr = w + (size_t)o * row_bytes;
    double acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0;
    for (int b0 = 0; b0 < nb; b0 += 8 * MM_Q_STEPS) {
        mm_wq q[MM_Q_STEPS];
#pragma unroll
        for (int u = 0; u < MM_Q_STEPS; u++) {
            const int b = b0 + 8 * u + (lane >> 2); /* the same for the 4 lanes of a block */
            q[u] = b < nb ? mm_load_wq<WT>(wr, b, sub) : mm_wq{0, 0, 0.0f, 0.0f};
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= nt) continue;
#pragma unroll
            for (int u = 0; u < MM_Q_STEPS; u++) {
                const int b = b0 + 8 * u + (lane >> 2);
                const bool ok = b < nb;
                int isum = 0;
                if (ok) {
                    const int8_t *xb = xq + (size_t)t * n_in + (size_t)b * 32;
                    if (WT == OKV_TYPE_Q8_0) {
                        const int2 xv = *(const int2 *)(xb + 8 * sub);
                        isum = __dp4a(q[u].w0, xv.x, __dp4a(q[u].w1, xv.y, 0));
                    } else {
                        const int xlo = *(const int *)(xb + 4 * sub);
                        const int xhi = *(const int *)(xb + 16 + 4 * sub);
                        isum = __dp4a(q[u].w0, xlo, __dp4a(q[u].w1, xhi, 0));
                    }
                }
                isum += __shfl_xor_sync(FULL_MASK, isum, 1);
                isum += __shfl_xor_sync(FULL_MASK, isum, 2);
                if (ok && sub == 0) {
                    const size_t xi = (size_t)t * nb + b;
                    acc[t] += (double)__fmul_rn(__fmul_rn(q[u].d, xd[xi]), (float)isum);
                    if (WT == OKV_TYPE_Q4_1) acc[t] += (double)__fmul_rn(q[u].m, xs[xi]);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        double v = acc[t];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
        if (lane == 0 && t < nt) y[(size_t)t * n_out + o] = (float)v;
    }
}

/* ---- f32 / f16 / bf16 GEMV ------------------------------------------------------------------- */

__device__ __forceinline__ float mm_w2f(float v) { return v; }
__device__ __forceinline__ float mm_w2f(__half v) { return __half2float(v); }
__device__ __forceinline__ float mm_w2f(__nv_bfloat16 v) { return __bfloat162float(v); }
/* An activation rounded to the weight type (round to nearest even, as okv_quant_row_ref). */
__device__ __forceinline__ float mm_round(float v, float) { return v; }
__device__ __forceinline__ float mm_round(float v, __half) { return __half2float(__float2half_rn(v)); }
__device__ __forceinline__ float mm_round(float v, __nv_bfloat16) {
    return __bfloat162float(__float2bfloat16_rn(v));
}

/* One warp per output row; with VEC each lane reads 16 bytes of the row a step (W and x
 * 16-byte aligned, n_in a multiple of E), else one element. Products of two f16 or two bf16
 * values are exact in f32; sums are f32. */
template <typename W, int NT, bool VEC>
__global__ void __launch_bounds__(MM_WARPS * 32)
mm_f_kernel(float *y, const W *w, const float *x, int nt, int n_in, int n_out) {
    constexpr int E = VEC ? 16 / (int)sizeof(W) : 1;
    const int o = blockIdx.x * MM_WARPS + threadIdx.x / 32;
    if (o >= n_out) return; /* uniform across the warp */
    const int lane = threadIdx.x & 31;
    const W *wr = w + (size_t)o * n_in;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
#pragma unroll 4
    for (int i = lane * E; i < n_in; i += 32 * E) {
        float wf[E];
        if (VEC) {
            const uint4 raw = *(const uint4 *)(wr + i);
            const W *wv = (const W *)&raw;
#pragma unroll
            for (int e = 0; e < E; e++) wf[e] = mm_w2f(wv[e]);
        } else {
            wf[0] = mm_w2f(wr[i]);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < nt) {
                const float *xt = x + (size_t)t * n_in + i;
#pragma unroll
                for (int e = 0; e < E; e += VEC ? 4 : 1) {
                    float xv[4];
                    if (VEC) {
                        const float4 f = *(const float4 *)(xt + e);
                        xv[0] = f.x, xv[1] = f.y, xv[2] = f.z, xv[3] = f.w;
                    } else {
                        xv[0] = xt[e];
                    }
#pragma unroll
                    for (int k = 0; k < (VEC ? 4 : 1); k++)
                        acc[t] = fmaf(wf[e + k], mm_round(xv[k], W()), acc[t]);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
        if (lane == 0 && t < nt) y[(size_t)t * n_out + o] = v;
    }
}

/* ---- host side ------------------------------------------------------------------------------- */

/* The smallest tile capacity (1, 2, 4, 8) that holds nt tokens. */
static int mm_tile_cap(int nt) { return nt <= 1 ? 1 : nt <= 2 ? 2 : nt <= 4 ? 4 : 8; }

template <int WT>
static void mm_q_launch(cudaStream_t s, float *y, const uint8_t *w, size_t row_bytes,
                        const int8_t *xq, const float *xd, const float *xs, int nt, int n_in,
                        int n_out) {
    const dim3 grid((unsigned)cuda_ceil_div(n_out, MM_WARPS)), block(MM_WARPS * 32);
    switch (mm_tile_cap(nt)) {
    case 1: mm_q_kernel<WT, 1><<<grid, block, 0, s>>>(y, w, row_bytes, xq, xd, xs, nt, n_in, n_out); break;
    case 2: mm_q_kernel<WT, 2><<<grid, block, 0, s>>>(y, w, row_bytes, xq, xd, xs, nt, n_in, n_out); break;
    case 4: mm_q_kernel<WT, 4><<<grid, block, 0, s>>>(y, w, row_bytes, xq, xd, xs, nt, n_in, n_out); break;
    default: mm_q_kernel<WT, 8><<<grid, block, 0, s>>>(y, w, row_bytes, xq, xd, xs, nt, n_in, n_out); break;
    }
    CHECK_LAUNCH();
}

static void mm_quantized(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                         int n_tok, int n_in, int n_out) {
    cuda_state *st = (cuda_state *)be->state;
    const cudaStream_t s = cuda_compute(be);
    OKV_ASSERT(n_in % OKV_QK == 0 && ((uintptr_t)w & 3) == 0);
    const int nb = n_in / OKV_QK;
    const int64_t n_blocks = (int64_t)n_tok * nb;
    int8_t *xq = (int8_t *)st->act;
    float *xd = (float *)(xq + (size_t)n_tok * n_in); /* n_in % 32 == 0 keeps this aligned */
    float *xs = wtype == OKV_TYPE_Q4_1 ? xd + n_blocks : NULL;
    const int per_block = 8; /* warps per quantization block */
    mm_quant_kernel<<<(unsigned)cuda_ceil_div(n_blocks, per_block), per_block * 32, 0, s>>>(
        xq, xd, xs, x, n_blocks);
    CHECK_LAUNCH();
    const size_t row_bytes = okv_type_row_bytes(wtype, n_in);
    for (int t0 = 0; t0 < n_tok; t0 += MM_TILE) {
        const int nt = OKV_MIN(MM_TILE, n_tok - t0);
        float *yt = y + (size_t)t0 * n_out;
        const int8_t *qt = xq + (size_t)t0 * n_in;
        const float *dt = xd + (size_t)t0 * nb;
        const float *stt = xs ? xs + (size_t)t0 * nb : NULL;
        switch (wtype) {
        case OKV_TYPE_Q8_0:
            mm_q_launch<OKV_TYPE_Q8_0>(s, yt, (const uint8_t *)w, row_bytes, qt, dt, stt, nt, n_in, n_out);
            break;
        case OKV_TYPE_Q4_0:
            mm_q_launch<OKV_TYPE_Q4_0>(s, yt, (const uint8_t *)w, row_bytes, qt, dt, stt, nt, n_in, n_out);
            break;
        default:
            mm_q_launch<OKV_TYPE_Q4_1>(s, yt, (const uint8_t *)w, row_bytes, qt, dt, stt, nt, n_in, n_out);
            break;
        }
    }
}

template <typename W, bool VEC>
static void mm_f_launch_vec(cudaStream_t s, float *y, const W *w, const float *x, int nt, int n_in,
                            int n_out) {
    const dim3 grid((unsigned)cuda_ceil_div(n_out, MM_WARPS)), block(MM_WARPS * 32);
    switch (mm_tile_cap(nt)) {
    case 1: mm_f_kernel<W, 1, VEC><<<grid, block, 0, s>>>(y, w, x, nt, n_in, n_out); break;
    case 2: mm_f_kernel<W, 2, VEC><<<grid, block, 0, s>>>(y, w, x, nt, n_in, n_out); break;
    case 4: mm_f_kernel<W, 4, VEC><<<grid, block, 0, s>>>(y, w, x, nt, n_in, n_out); break;
    default: mm_f_kernel<W, 8, VEC><<<grid, block, 0, s>>>(y, w, x, nt, n_in, n_out); break;
    }
    CHECK_LAUNCH();
}

template <typename W>
static void mm_f_launch(cudaStream_t s, float *y, const void *w, const float *x, int nt, int n_in,
                        int n_out) {
    const int e = 16 / (int)sizeof(W);
    const bool vec = n_in % e == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
    if (vec) mm_f_launch_vec<W, true>(s, y, (const W *)w, x, nt, n_in, n_out);
    else mm_f_launch_vec<W, false>(s, y, (const W *)w, x, nt, n_in, n_out);
}

/* Activations rounded to f16 or bf16 for cuBLAS (round to nearest even). */
__device__ __forceinline__ void mm_store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void mm_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

template <typename W>
__global__ void mm_round_kernel(W *out, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        mm_store(out + i, x[i]);
}

/* Y (column-major n_out x n_tok) = W^T (W column-major n_in x n_out) * X (n_in x n_tok): the
 * row-major [n_tok][n_out] = [n_tok][n_in] x [n_out][n_in]^T of the table, in f32 compute. */
static void mm_gemm(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                    int n_tok, int n_in, int n_out) {
    cuda_state *st = (cuda_state *)be->state;
    const cudaStream_t s = cuda_compute(be);
    const float alpha = 1.0f, beta = 0.0f;
    const void *b = x;
    cudaDataType_t dt = CUDA_R_32F;
    if (wtype != OKV_TYPE_F32) {
        const int64_t n = (int64_t)n_tok * n_in;
        const unsigned grid = (unsigned)OKV_MIN(cuda_ceil_div(n, 256), (int64_t)st->n_sm * 8);
        if (wtype == OKV_TYPE_F16) {
            mm_round_kernel<__half><<<grid, 256, 0, s>>>((__half *)st->act, x, n);
            dt = CUDA_R_16F;
        } else {
            mm_round_kernel<__nv_bfloat16><<<grid, 256, 0, s>>>((__nv_bfloat16 *)st->act, x, n);
            dt = CUDA_R_16BF;
        }
        CHECK_LAUNCH();
        b = st->act;
    }
    CHECK_CUBLAS(cublasGemmEx(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n_tok, n_in, &alpha, w,
                              dt, n_in, b, dt, n_in, &beta, y, CUDA_R_32F, n_out,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void cuda_matmul(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                 int n_tok, int n_in, int n_out) {
    const cuda_state *st = (const cuda_state *)be->state;
    OKV_ASSERT(n_tok >= 0 && n_tok <= st->max_tok && n_in >= 1 && n_in <= st->max_in && n_out >= 0);
    if (n_tok == 0 || n_out == 0) return;
    const cudaStream_t s = cuda_compute(be);
    switch (wtype) {
    case OKV_TYPE_Q8_0:
    case OKV_TYPE_Q4_0:
    case OKV_TYPE_Q4_1: mm_quantized(be, y, w, wtype, x, n_tok, n_in, n_out); return;
    case OKV_TYPE_F32:
    case OKV_TYPE_F16:
    case OKV_TYPE_BF16:
        if (n_tok >= MM_GEMM_MIN_TOK) {
            mm_gemm(be, y, w, wtype, x, n_tok, n_in, n_out);
        } else if (wtype == OKV_TYPE_F32) {
            mm_f_launch<float>(s, y, w, x, n_tok, n_in, n_out);
        } else if (wtype == OKV_TYPE_F16) {
            mm_f_launch<__half>(s, y, w, x, n_tok, n_in, n_out);
        } else {
            mm_f_launch<__nv_bfloat16>(s, y, w, x, n_tok, n_in, n_out);
        }
        return;
    default: okv_die(__FILE__, __LINE__, "cuda_matmul: not a weight type");
    }
}
