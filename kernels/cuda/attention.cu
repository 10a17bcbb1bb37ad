/* attention.cu — CUDA attention: split-key decode over KV views (one partial per KV head and
 * fixed chunk of the key sequence, combined in chunk order), logits only, and causal prefill
 * tiled with an online softmax. Compared with kernels/ref.c, and decode's independence of view
 * boundaries bitwise, by tests/gpu/test_cuda_attention.c. */
#include "cuda.h"

#include <cuda_fp16.h>
#include <math.h>
#include <string.h>

/* ---- shared pieces -------------------------------------------------------------------------- */

/* Four consecutive elements of a K or V row (F16 or F32) at element offset off, as f32. Rows are
 * read 4 elements per lane: the host checks that every row start is aligned for it. */
__device__ __forceinline__ void load4(float f[4], const void *base, int64_t off, bool f16) {
    if (f16) {
        const uint2 u = *reinterpret_cast<const uint2 *>(static_cast<const __half *>(base) + off);
        const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&u.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2 *>(&u.y));
        f[0] = a.x;
        f[1] = a.y;
        f[2] = b.x;
        f[3] = b.y;
    } else {
        const float4 u = *reinterpret_cast<const float4 *>(static_cast<const float *>(base) + off);
        f[0] = u.x;
        f[1] = u.y;
        f[2] = u.z;
        f[3] = u.w;
    }
}

/* Butterfly reductions: every lane ends with the same value, summed in the same order. */
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

static void check_kv_view(const okv_kv_view *v, int hd) {
    OKV_ASSERT(v->n >= 0);
    if (v->n == 0) return;
    OKV_ASSERT(v->type == OKV_TYPE_F16 || v->type == OKV_TYPE_F32);
    const size_t es = v->type == OKV_TYPE_F16 ? 2 : 4;
    /* 4-element loads: every row start must be a multiple of 4 elements from an aligned base */
    OKV_ASSERT(hd % 4 == 0 && v->stride % 4 == 0);
    OKV_ASSERT((uintptr_t)v->k % (4 * es) == 0 && (uintptr_t)v->v % (4 * es) == 0);
}

static void check_shape(okv_attn_shape s) {
    OKV_ASSERT(s.n_kv_heads > 0 && s.n_heads > 0 && s.n_heads % s.n_kv_heads == 0);
    OKV_ASSERT(s.head_dim > 0 && s.head_dim % 4 == 0 && s.head_dim <= 256);
}

/* ---- decode ----------------------------------------------------------------------------------- */

/* Views travel by value as a kernel parameter: no copy of the (small) view table per call. */
#define DEC_MAX_VIEWS 8
#define DEC_THREADS CUDA_ATTN_CHUNK /* phase 0 gives each thread one row of the chunk */
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_LPR 16 /* lanes per row: a warp reads two rows at once */

typedef struct dec_views {
    okv_kv_view v[DEC_MAX_VIEWS];
    int start[DEC_MAX_VIEWS + 1]; /* first logical row of each view; start[n_views] = n */
    int n_views;
} dec_views;

/* Bytes of dynamic shared memory of dec_chunk_kernel. */
static size_t dec_smem(int gt, int hd, bool logits_only) {
    return (logits_only ? 0 : (size_t)DEC_WARPS * gt * hd * sizeof(float)) +
           (size_t)gt * CUDA_ATTN_CHUNK * sizeof(float) + 2 * (size_t)CUDA_ATTN_CHUNK * sizeof(void *) +
           (size_t)CUDA_ATTN_CHUNK * sizeof(int);
}

/* Four elements of a row as raw bits (F16: the low 8 bytes; device or registered host memory);
 * unpack4 turns them into f32 later, so a warp issues all its row loads before it waits for the
 * first (converting next to each load made every load wait for the one before). */
__device__ __forceinline__ uint4 fetch4(const void *base, int64_t off, bool f16) {
    if (f16) {
        const uint2 u = *reinterpret_cast<const uint2 *>(static_cast<const __half *>(base) + off);
        return make_uint4(u.x, u.y, 0u, 0u);
    }
    return *reinterpret_cast<const uint4 *>(static_cast<const float *>(base) + off);
}

__device__ __forceinline__ void unpack4(float f[4], uint4 u, bool f16) {
    if (f16) {
        const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&u.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2 *>(&u.y));
        f[0] = a.x;
        f[1] = a.y;
        f[2] = b.x;
        f[3] = b.y;
    } else {
        f[0] = __uint_as_float(u.x);
        f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z);
        f[3] = __uint_as_float(u.w);
    }
}

/* Row jl of the chunk (rows [0, cn)) as lane li of its half-warp reads it: S pieces of 4
 * elements, piece s at element 4*(li + 16*s); pieces past head_dim or rows past cn read as 0. */
template <int S>
__device__ __forceinline__ void dec_fetch_row(uint4 raw[S], bool *f16, const void *const *s_row,
                                              const int *s_f16, int jl, int cn, int li, int hd) {
    const bool ok = jl < cn;
    const void *base = ok ? s_row[jl] : NULL;
    *f16 = ok && s_f16[jl];
#pragma unroll
    for (int s = 0; s < S; s++) {
        const int d4 = 4 * (li + DEC_LPR * s);
        raw[s] = ok && d4 < hd ? fetch4(base, d4, *f16) : make_uint4(0u, 0u, 0u, 0u);
    }
}

/* Sum over the 16 lanes of a half-warp; every lane of it ends with the same value. */
__device__ __forceinline__ float half_sum(float x) {
#pragma unroll
    for (int o = DEC_LPR / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* One block: KV head blockIdx.x, chunk blockIdx.y of the logical key sequence (rows
 * [c*CHUNK, ...)), query heads [z*GT, z*GT+ng) of that KV head's group. K and V rows are read
 * once for all those heads; the blocks of one chunk's KV heads run side by side and read whole
 * cache rows between them. Phase 0 resolves each row of the chunk to where its K and V start
 * (shared memory, so the loops read no view table). Phase 1 computes the scaled logits: each
 * half-warp takes a row (lane li reads pieces 4*(li+16s) of it) and each warp keeps RIF row
 * pairs in flight; of the rows of an iteration, warp w takes rows base + 2*RIF*w + (0..2*RIF).
 * Phase 2 takes the chunk's max and sum of exp per head; phase 3 the
 * unnormalised sum of V rows with those weights over the same row assignment, then the two
 * halves and the warps are added in a fixed order. A row's arithmetic depends only on its
 * position in the chunk, never on which view holds it. With logits_only, only phase 1 runs and
 * writes logits [n_heads][n0] for rows < n0. */
template <int GT, int S, int RIF>
__global__ void __launch_bounds__(DEC_THREADS)
dec_chunk_kernel(float *cmax, float *csum, float *part, float *logits, int n0, const float *q,
                 dec_views vw, int n, int nc, int g, int hd, float scale, int logits_only) {
    extern __shared__ __align__(16) unsigned char dec_sm[];
    constexpr int ROWS_IT = DEC_WARPS * 2 * RIF;
    const int kvh = blockIdx.x, c = blockIdx.y;
    const int h0 = kvh * g + blockIdx.z * GT, ng = min(GT, g - (int)blockIdx.z * GT);
    const int j0 = c * CUDA_ATTN_CHUNK, cn = min(CUDA_ATTN_CHUNK, n - j0);
    const int t = threadIdx.x, lane = t & 31, w = t >> 5, half = lane >> 4, li = lane & 15;
    float *s_red = reinterpret_cast<float *>(dec_sm); /* [DEC_WARPS][GT][hd] */
    float *s_l = s_red + (logits_only ? 0 : DEC_WARPS * GT * hd); /* [GT][CHUNK] */
    /* [CHUNK] each: where the row's K and V of this KV head start, and whether they are f16 */
    const void **s_k = reinterpret_cast<const void **>(s_l + GT * CUDA_ATTN_CHUNK);
    const void **s_v = s_k + CUDA_ATTN_CHUNK;
    int *s_f16 = reinterpret_cast<int *>(s_v + CUDA_ATTN_CHUNK);

    if (t < cn) {
        const int j = j0 + t;
        int v = 0;
        while (j >= vw.start[v + 1]) v++;
        const int r = j - vw.start[v];
        const int32_t *idx = vw.v[v].idx;
        const int64_t row = idx ? (int64_t)idx[r] : (int64_t)r;
        const bool f16 = vw.v[v].type == OKV_TYPE_F16;
        const int64_t off = (row * vw.v[v].stride + (int64_t)kvh * hd) * (f16 ? 2 : 4);
        s_k[t] = static_cast<const unsigned char *>(vw.v[v].k) + off;
        s_v[t] = static_cast<const unsigned char *>(vw.v[v].v) + off;
        s_f16[t] = f16;
    }
    float qr[GT][S][4];
#pragma unroll
    for (int hl = 0; hl < GT; hl++)
#pragma unroll
        for (int s = 0; s < S; s++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int d = 4 * (li + DEC_LPR * s) + e;
                qr[hl][s][e] = hl < ng && d < hd ? q[(int64_t)(h0 + hl) * hd + d] : 0.0f;
            }
    __syncthreads();

    for (int base = 0; base < cn; base += ROWS_IT) {
        uint4 raw[RIF][S];
        bool f16[RIF];
#pragma unroll
        for (int r = 0; r < RIF; r++)
            dec_fetch_row<S>(raw[r], &f16[r], s_k, s_f16, base + 2 * RIF * w + 2 * r + half, cn, li, hd);
#pragma unroll
        for (int r = 0; r < RIF; r++) {
            const int jl = base + 2 * RIF * w + 2 * r + half;
            float kf[S][4];
#pragma unroll
            for (int s = 0; s < S; s++) unpack4(kf[s], raw[r][s], f16[r]);
#pragma unroll
            for (int hl = 0; hl < GT; hl++) {
                float dot = 0.0f;
#pragma unroll
                for (int s = 0; s < S; s++)
#pragma unroll
                    for (int e = 0; e < 4; e++) dot = fmaf(qr[hl][s][e], kf[s][e], dot);
                const float l = scale * half_sum(dot);
                if (li == 0 && hl < ng && jl < cn) {
                    s_l[hl * CUDA_ATTN_CHUNK + jl] = l;
                    if (logits && j0 + jl < n0) logits[(int64_t)(h0 + hl) * n0 + j0 + jl] = l;
                }
            }
        }
    }
    if (logits_only) return;
    __syncthreads();

    if (w < ng) {
        float *lh = s_l + w * CUDA_ATTN_CHUNK;
        float m = -INFINITY;
        for (int jl = lane; jl < cn; jl += 32) m = fmaxf(m, lh[jl]);
        m = warp_max(m);
        float sum = 0.0f;
        for (int jl = lane; jl < cn; jl += 32) {
            const float p = expf(lh[jl] - m);
            lh[jl] = p;
            sum += p;
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            cmax[(int64_t)(h0 + w) * nc + c] = m;
            csum[(int64_t)(h0 + w) * nc + c] = sum;
        }
    }
    __syncthreads();

    float acc[GT][S][4];
#pragma unroll
    for (int hl = 0; hl < GT; hl++)
#pragma unroll
        for (int s = 0; s < S; s++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[hl][s][e] = 0.0f;
    for (int base = 0; base < cn; base += ROWS_IT) {
        uint4 raw[RIF][S];
        bool f16[RIF];
#pragma unroll
        for (int r = 0; r < RIF; r++)
            dec_fetch_row<S>(raw[r], &f16[r], s_v, s_f16, base + 2 * RIF * w + 2 * r + half, cn, li, hd);
#pragma unroll
        for (int r = 0; r < RIF; r++) {
            const int jl = base + 2 * RIF * w + 2 * r + half;
            float vf[S][4];
#pragma unroll
            for (int s = 0; s < S; s++) unpack4(vf[s], raw[r][s], f16[r]);
#pragma unroll
            for (int hl = 0; hl < GT; hl++) {
                const float p = hl < ng && jl < cn ? s_l[hl * CUDA_ATTN_CHUNK + jl] : 0.0f;
#pragma unroll
                for (int s = 0; s < S; s++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[hl][s][e] = fmaf(p, vf[s][e], acc[hl][s][e]);
            }
        }
    }
#pragma unroll
    for (int hl = 0; hl < GT; hl++)
#pragma unroll
        for (int s = 0; s < S; s++) {
            const int d4 = 4 * (li + DEC_LPR * s);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                /* the two rows' halves: addition commutes, so both halves hold the same bits */
                const float x = acc[hl][s][e] + __shfl_xor_sync(0xffffffffu, acc[hl][s][e], DEC_LPR);
                if (half == 0 && hl < ng && d4 < hd) s_red[(w * GT + hl) * hd + d4 + e] = x;
            }
        }
    __syncthreads();
    for (int i = t; i < ng * hd; i += DEC_THREADS) {
        const int hl = i / hd, d = i - hl * hd;
        float x = 0.0f;
#pragma unroll
        for (int ww = 0; ww < DEC_WARPS; ww++) x += s_red[(ww * GT + hl) * hd + d];
        part[((int64_t)(h0 + hl) * nc + c) * hd + d] = x;
    }
}

#define CMB_GROUPS 8 /* warps of the combine kernel, each over a contiguous run of chunks */

/* out[h] = sum over chunks c of exp(m_c - m) * part_c, divided by the same sum of
 * exp(m_c - m) * sum_c: the chunk partials rescaled to the global max m. Block (h, 32 dims):
 * warp g adds chunks [g*per, (g+1)*per) in order, then the warps' sums are added in order, so
 * the arithmetic depends only on the chunk count. */
__global__ void __launch_bounds__(32 * CMB_GROUPS)
dec_combine_kernel(float *out, const float *cmax, const float *csum, const float *part, int nc, int hd) {
    const int h = blockIdx.x, lane = threadIdx.x & 31, g = threadIdx.x >> 5;
    const int d = blockIdx.y * 32 + lane;
    const float *mh = cmax + (int64_t)h * nc, *sh = csum + (int64_t)h * nc;
    __shared__ float s_m[CMB_GROUPS], s_o[CMB_GROUPS][32], s_s[CMB_GROUPS][32];
    float m = -INFINITY;
    for (int i = threadIdx.x; i < nc; i += blockDim.x) m = fmaxf(m, mh[i]);
    m = warp_max(m);
    if (lane == 0) s_m[g] = m;
    __syncthreads();
    m = s_m[0];
    for (int i = 1; i < CMB_GROUPS; i++) m = fmaxf(m, s_m[i]);
    const int per = (nc + CMB_GROUPS - 1) / CMB_GROUPS, c0 = g * per, c1 = min(nc, c0 + per);
    float o = 0.0f, sum = 0.0f;
    for (int c = c0; c < c1; c++) {
        const float wc = expf(mh[c] - m);
        sum = fmaf(wc, sh[c], sum);
        if (d < hd) o = fmaf(wc, part[((int64_t)h * nc + c) * hd + d], o);
    }
    s_o[g][lane] = o;
    s_s[g][lane] = sum;
    __syncthreads();
    if (g == 0 && d < hd) {
        float ot = s_o[0][lane], st = s_s[0][lane];
        for (int i = 1; i < CMB_GROUPS; i++) {
            ot += s_o[i][lane];
            st += s_s[i][lane];
        }
        out[(int64_t)h * hd + d] = ot * (1.0f / st);
    }
}

/* Query heads per block: the group size rounded up to 1, 2, 4 or 8 (larger groups use several
 * blocks per KV head). */
static int dec_head_tile(int g) { return g <= 1 ? 1 : g <= 2 ? 2 : g <= 4 ? 4 : 8; }

template <int GT, int S>
static void dec_launch(cudaStream_t cs, float *cmax, float *csum, float *part, float *logits,
                       int n0, const float *q, const dec_views &vw, int n, int nc,
                       okv_attn_shape s, int logits_only) {
    /* fewer rows in flight where the pieces per row already fill the registers */
    constexpr int RIF = S >= 4 ? 2 : 4;
    static bool smem_raised;
    if (!smem_raised) {
        /* the largest shape (8 heads of 256 dims) needs more than the default 48 KB */
        CHECK_CUDA(cudaFuncSetAttribute(dec_chunk_kernel<GT, S, RIF>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)dec_smem(GT, 256, false)));
        smem_raised = true;
    }
    const int g = s.n_heads / s.n_kv_heads;
    const dim3 grid((unsigned)s.n_kv_heads, (unsigned)nc, (unsigned)cuda_ceil_div(g, GT));
    dec_chunk_kernel<GT, S, RIF><<<grid, DEC_THREADS, dec_smem(GT, s.head_dim, logits_only != 0), cs>>>(
        cmax, csum, part, logits, n0, q, vw, n, nc, g, s.head_dim, s.scale, logits_only);
    CHECK_LAUNCH();
}

template <int S>
static void dec_run_s(cudaStream_t cs, float *cmax, float *csum, float *part, float *logits,
                      int n0, const float *q, const dec_views &vw, int n, int nc,
                      okv_attn_shape s, int logits_only) {
    switch (dec_head_tile(s.n_heads / s.n_kv_heads)) {
    case 1: dec_launch<1, S>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only); break;
    case 2: dec_launch<2, S>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only); break;
    case 4: dec_launch<4, S>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only); break;
    default: dec_launch<8, S>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only); break;
    }
}

static void dec_run(cudaStream_t cs, float *cmax, float *csum, float *part, float *logits, int n0,
                    const float *q, const dec_views &vw, int n, okv_attn_shape s, int logits_only) {
    const int nc = (int)cuda_ceil_div(n, CUDA_ATTN_CHUNK);
    OKV_ASSERT(nc <= 65535); /* the grid's y dimension */
    /* pieces of 4 elements per lane of a 16-lane row */
    if (s.head_dim <= 64) dec_run_s<1>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only);
    else if (s.head_dim <= 128) dec_run_s<2>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only);
    else dec_run_s<4>(cs, cmax, csum, part, logits, n0, q, vw, n, nc, s, logits_only);
}

/* The views as a kernel parameter; returns the total row count. */
static int dec_views_make(dec_views *vw, const okv_kv_view *views, int n_views, int hd) {
    OKV_ASSERT(n_views >= 0 && n_views <= DEC_MAX_VIEWS);
    memset(vw, 0, sizeof *vw);
    int64_t n = 0;
    for (int v = 0; v < n_views; v++) {
        check_kv_view(&views[v], hd);
        vw->v[v] = views[v];
        vw->start[v] = (int)n;
        n += views[v].n;
    }
    OKV_ASSERT(n <= INT32_MAX);
    /* rows past the end never occur; the sentinel stops the view search */
    for (int v = n_views; v <= DEC_MAX_VIEWS; v++) vw->start[v] = (int)n;
    vw->n_views = n_views;
    return (int)n;
}

static size_t dec_part_floats(okv_attn_shape s, int n) {
    return (size_t)s.n_heads * (size_t)cuda_ceil_div(n, CUDA_ATTN_CHUNK) * (2 + (size_t)s.head_dim);
}

int cuda_attn_reserve(okv_backend *be, okv_attn_shape s, int max_ctx) {
    cuda_state *st = (cuda_state *)be->state;
    check_shape(s);
    const size_t bytes = dec_part_floats(s, OKV_MAX(max_ctx, 1)) * sizeof(float);
    if (bytes <= st->attn_part_bytes) return OKV_OK;
    /* growth waits for work that may still read the old partials */
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaFree(st->attn_part));
    st->attn_part = NULL;
    st->attn_part_bytes = 0;
    if (cudaMalloc((void **)&st->attn_part, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        st->attn_part = NULL;
        return okv_fail(OKV_ERR_NOMEM,
                        "cannot allocate %zu bytes of GPU attention scratch for %d rows; lower "
                        "the context length",
                        bytes, max_ctx);
    }
    st->attn_part_bytes = bytes;
    return OKV_OK;
}

void cuda_attn_decode(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                      int n_views, okv_attn_shape s, float *logits) {
    cuda_state *st = (cuda_state *)be->state;
    check_shape(s);
    dec_views vw;
    const int n = dec_views_make(&vw, views, n_views, s.head_dim);
    const cudaStream_t cs = cuda_compute(be);
    if (n == 0) {
        CHECK_CUDA(cudaMemsetAsync(out, 0, (size_t)s.n_heads * s.head_dim * sizeof(float), cs));
        return;
    }
    /* callers that reserved their maximum never grow here */
    OKV_ASSERT(cuda_attn_reserve(be, s, n) == OKV_OK);
    const int nc = (int)cuda_ceil_div(n, CUDA_ATTN_CHUNK);
    float *cmax = st->attn_part, *csum = cmax + (size_t)s.n_heads * nc;
    float *part = csum + (size_t)s.n_heads * nc;
    dec_run(cs, cmax, csum, part, logits, n_views > 0 ? views[0].n : 0, q, vw, n, s, 0);
    const dim3 cgrid((unsigned)s.n_heads, (unsigned)cuda_ceil_div(s.head_dim, 32));
    dec_combine_kernel<<<cgrid, 32 * CMB_GROUPS, 0, cs>>>(out, cmax, csum, part, nc, s.head_dim);
    CHECK_LAUNCH();
}

void cuda_attn_logits(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                      okv_attn_shape s) {
    check_shape(s);
    dec_views vw;
    const int n = dec_views_make(&vw, &kv, 1, s.head_dim);
    if (n == 0) return;
    dec_run(cuda_compute(be), NULL, NULL, NULL, logits, n, q, vw, n, s, 1);
}

/* ---- prefill ------------------------------------------------------------------------------------ */

#define PF_BQ 32                /* queries per block */
#define PF_THREADS (4 * PF_BQ)  /* four threads per query */

/* One block: PF_BQ consecutive queries of one head against their causal keys, BK keys per tile.
 * Thread (query qi, sub) holds dims 16*e + 4*sub + (0..3) of its query and output accumulators;
 * the four threads of a query add their partial dots by shuffles. K and V tiles are converted to
 * f32 in shared memory once for the block. Online softmax per tile: the running max moves to
 * include the tile, the sum and accumulators are rescaled once, then the tile's weights added.
 * Memory is O(tile). Later query tiles (more keys) are started first. */
template <int HD, int BK>
__global__ void __launch_bounds__(PF_THREADS)
pf_kernel(float *out, const float *q, int n_q, int q_pos0, okv_kv_view kv, int n_heads, int g,
          float scale) {
    constexpr int NE = HD / 16;
    __shared__ __align__(16) float ks[BK][HD];
    __shared__ __align__(16) float vs[BK][HD];
    const int tile = (int)gridDim.x - 1 - (int)blockIdx.x;
    const int h = blockIdx.y, kvh = h / g;
    const int t = threadIdx.x, qi = t >> 2, sub = t & 3;
    const int iq = tile * PF_BQ + qi;
    const bool valid = iq < n_q;
    /* padding rows repeat the last query so their softmax stays finite; they are not written */
    const int i = valid ? iq : n_q - 1;
    const int pos = q_pos0 + i;
    const bool f16 = kv.type == OKV_TYPE_F16;

    float qr[NE][4], acc[NE][4];
#pragma unroll
    for (int e = 0; e < NE; e++) {
        const float4 v = *reinterpret_cast<const float4 *>(q + ((int64_t)i * n_heads + h) * HD + 16 * e + 4 * sub);
        qr[e][0] = v.x;
        qr[e][1] = v.y;
        qr[e][2] = v.z;
        qr[e][3] = v.w;
        acc[e][0] = acc[e][1] = acc[e][2] = acc[e][3] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int kend = q_pos0 + min(n_q, (tile + 1) * PF_BQ);
    for (int k0 = 0; k0 < kend; k0 += BK) {
        for (int x = t; x < BK * HD / 4; x += PF_THREADS) {
            const int j = x / (HD / 4), d4 = 4 * (x - j * (HD / 4));
            float kf[4] = {0.0f, 0.0f, 0.0f, 0.0f}, vf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (k0 + j < kend) {
                const int64_t off = (int64_t)(k0 + j) * kv.stride + (int64_t)kvh * HD + d4;
                load4(kf, kv.k, off, f16);
                load4(vf, kv.v, off, f16);
            }
            *reinterpret_cast<float4 *>(&ks[j][d4]) = make_float4(kf[0], kf[1], kf[2], kf[3]);
            *reinterpret_cast<float4 *>(&vs[j][d4]) = make_float4(vf[0], vf[1], vf[2], vf[3]);
        }
        __syncthreads();
        float sc[BK];
        float tmax = -INFINITY;
#pragma unroll
        for (int j = 0; j < BK; j++) {
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < NE; e++) {
                const float4 kv4 = *reinterpret_cast<const float4 *>(&ks[j][16 * e + 4 * sub]);
                dot = fmaf(qr[e][0], kv4.x, dot);
                dot = fmaf(qr[e][1], kv4.y, dot);
                dot = fmaf(qr[e][2], kv4.z, dot);
                dot = fmaf(qr[e][3], kv4.w, dot);
            }
            dot += __shfl_xor_sync(0xffffffffu, dot, 1);
            dot += __shfl_xor_sync(0xffffffffu, dot, 2);
            sc[j] = k0 + j <= pos ? scale * dot : -INFINITY;
            tmax = fmaxf(tmax, sc[j]);
        }
        /* key 0 is in every query's first tile, so mn is finite from the first tile on */
        const float mn = fmaxf(m, tmax);
        const float corr = expf(m - mn);
        float ps = 0.0f;
#pragma unroll
        for (int j = 0; j < BK; j++) {
            sc[j] = expf(sc[j] - mn);
            ps += sc[j];
        }
        l = l * corr + ps;
        m = mn;
#pragma unroll
        for (int e = 0; e < NE; e++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[e][c] *= corr;
#pragma unroll
        for (int j = 0; j < BK; j++)
#pragma unroll
            for (int e = 0; e < NE; e++) {
                const float4 v4 = *reinterpret_cast<const float4 *>(&vs[j][16 * e + 4 * sub]);
                acc[e][0] = fmaf(sc[j], v4.x, acc[e][0]);
                acc[e][1] = fmaf(sc[j], v4.y, acc[e][1]);
                acc[e][2] = fmaf(sc[j], v4.z, acc[e][2]);
                acc[e][3] = fmaf(sc[j], v4.w, acc[e][3]);
            }
        __syncthreads();
    }
    if (!valid) return;
    const float inv = 1.0f / l;
#pragma unroll
    for (int e = 0; e < NE; e++)
        *reinterpret_cast<float4 *>(out + ((int64_t)i * n_heads + h) * HD + 16 * e + 4 * sub) =
            make_float4(acc[e][0] * inv, acc[e][1] * inv, acc[e][2] * inv, acc[e][3] * inv);
}

template <int HD, int BK>
static void pf_launch(cudaStream_t cs, float *out, const float *q, int n_q, int q_pos0,
                      const okv_kv_view &kv, okv_attn_shape s) {
    const dim3 grid((unsigned)cuda_ceil_div(n_q, PF_BQ), (unsigned)s.n_heads);
    pf_kernel<HD, BK><<<grid, PF_THREADS, 0, cs>>>(out, q, n_q, q_pos0, kv, s.n_heads,
                                                  s.n_heads / s.n_kv_heads, s.scale);
    CHECK_LAUNCH();
}

void cuda_attn_prefill(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                       okv_kv_view kv, okv_attn_shape s) {
    check_shape(s);
    OKV_ASSERT(kv.idx == NULL && q_pos0 >= 0 && kv.n >= q_pos0 + n_q);
    if (n_q <= 0) return;
    check_kv_view(&kv, s.head_dim);
    OKV_ASSERT((uintptr_t)q % 16 == 0 && (uintptr_t)out % 16 == 0);
    const cudaStream_t cs = cuda_compute(be);
    /* tiles of 32 KB of K and V in shared memory */
    switch (s.head_dim) {
    case 64: pf_launch<64, 64>(cs, out, q, n_q, q_pos0, kv, s); break;
    case 128: pf_launch<128, 32>(cs, out, q, n_q, q_pos0, kv, s); break;
    case 256: pf_launch<256, 16>(cs, out, q, n_q, q_pos0, kv, s); break;
    default:
        okv_die(__FILE__, __LINE__, "CUDA prefill attention supports head_dim 64, 128 and 256");
    }
}
