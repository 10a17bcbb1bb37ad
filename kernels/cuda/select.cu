/* select.cu — the filter layer's selection on the GPU: candidate scores as okv_select_scores_ref
 * computes them, kept ends raised to +inf, then a radix select of the top k_s on
 * order-preserving keys and an ordered compaction to ascending positions, a window selector's
 * prompt tail appended unscored. Everything is issued on
 * the compute stream with no copy back to the host. Compared with okv_select_ref (exact index
 * lists) by tests/gpu/test_cuda_attention.c. */
#include "cuda.h"

#include <math.h>
#include <string.h>

#define SEL_THREADS 256
#define SEL_ITEMS 16                            /* keys per thread in the radix passes */
#define SEL_TILE (SEL_THREADS * SEL_ITEMS)      /* keys per block in the radix passes */
#define SEL_STAT_SPAN 4096                      /* candidates per block of the softmax statistics */
#define SEL_STAT_ROWS (OKV_SELECT_MAX_WINDOW * OKV_SELECT_MAX_HEADS)
#define SEL_STAT_SLOTS 65536                    /* (row, part) partials of the statistics */
#define SEL_PASSES 4                            /* 8-bit digits of a 32-bit key */

/* The scratch, carved from st->sel_scratch for contexts of up to max_ctx candidates. */
typedef struct sel_scratch {
    uint32_t *keys;  /* [max_ctx] */
    uint32_t *hist;  /* [SEL_PASSES][256] */
    uint32_t *blk;   /* [2][blocks]: keys above and equal to the threshold, per radix block */
    float *pmax;     /* [SEL_STAT_SLOTS] */
    double *psum;    /* [SEL_STAT_SLOTS] */
    float *mx, *inv; /* [SEL_STAT_ROWS] per (window, head): max and 1/sum of exp(l - max) */
} sel_scratch;

static size_t sel_align(size_t b) { return (b + 255) & ~(size_t)255; }

static size_t sel_layout(sel_scratch *s, void *base, int max_ctx) {
    const size_t blocks = (size_t)cuda_ceil_div(max_ctx, SEL_TILE);
    size_t off = 0;
    unsigned char *b = (unsigned char *)base;
#define SEL_CARVE(field, type, count)                                                              \
    do {                                                                                           \
        if (s) s->field = (type *)(b + off);                                                       \
        off += sel_align((size_t)(count) * sizeof(type));                                          \
    } while (0)
    SEL_CARVE(keys, uint32_t, max_ctx);
    SEL_CARVE(hist, uint32_t, SEL_PASSES * 256);
    SEL_CARVE(blk, uint32_t, 2 * blocks);
    SEL_CARVE(pmax, float, SEL_STAT_SLOTS);
    SEL_CARVE(psum, double, SEL_STAT_SLOTS);
    SEL_CARVE(mx, float, SEL_STAT_ROWS);
    SEL_CARVE(inv, float, SEL_STAT_ROWS);
#undef SEL_CARVE
    return off;
}

int cuda_select_reserve(okv_backend *be, int max_ctx) {
    cuda_state *st = (cuda_state *)be->state;
    const size_t bytes = sel_layout(NULL, NULL, OKV_MAX(max_ctx, 1));
    if (bytes <= st->sel_scratch_bytes) return OKV_OK;
    /* growth waits for work that may still use the old scratch */
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaFree(st->sel_scratch));
    st->sel_scratch = NULL;
    st->sel_scratch_bytes = 0;
    if (cudaMalloc(&st->sel_scratch, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        st->sel_scratch = NULL;
        return okv_fail(OKV_ERR_NOMEM,
                        "cannot allocate %zu bytes of GPU selection scratch for %d candidates; "
                        "lower the context length",
                        bytes, max_ctx);
    }
    st->sel_scratch_bytes = bytes;
    return OKV_OK;
}

/* ---- keys and the radix walk ------------------------------------------------------------------ */

/* An unsigned key whose order is the selection order of the scores: larger is better, -0 equals
 * +0, and NaN (key 0) comes below everything, -inf included. Equal keys then go by position. */
__device__ __forceinline__ uint32_t sel_key(float f) {
    if (isnan(f)) return 0u;
    uint32_t b = __float_as_uint(f);
    if (b == 0x80000000u) b = 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* Follows the first `passes` histograms from the top digit down: the prefix of the k-th largest
 * key and how many of the keys sharing that prefix are still to take. Run by one whole warp;
 * lane L sums bins 255-8L down to 248-8L, so lanes in order cover the digits from the largest. */
__device__ void sel_walk(const uint32_t *hist, int passes, uint32_t k, uint32_t *prefix,
                         uint32_t *krem) {
    const int lane = threadIdx.x & 31;
    uint32_t pre = 0, kr = k;
    for (int p = 0; p < passes; p++) {
        const uint32_t *hp = hist + p * 256;
        uint32_t cnt[8], s = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            cnt[i] = hp[255 - 8 * lane - i];
            s += cnt[i];
        }
        uint32_t incl = s;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        const uint32_t excl = incl - s;
        const bool mine = excl < kr && kr <= incl;
        const unsigned who = __ffs(__ballot_sync(0xffffffffu, mine)) - 1;
        uint32_t digit = 0, left = 0;
        if (mine) {
            uint32_t a = excl;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                if (left == 0 && a + cnt[i] >= kr) {
                    digit = 255 - 8 * lane - i;
                    left = kr - a;
                }
                a += cnt[i];
            }
        }
        digit = __shfl_sync(0xffffffffu, digit, who);
        kr = __shfl_sync(0xffffffffu, left, who);
        pre |= digit << (24 - 8 * p);
    }
    *prefix = pre;
    *krem = kr;
}

/* The walk once per block, shared through shared memory. */
__device__ void sel_walk_block(const uint32_t *hist, int passes, uint32_t k, uint32_t *prefix,
                               uint32_t *krem) {
    __shared__ uint32_t sh[2];
    if (threadIdx.x < 32) {
        uint32_t p, r;
        sel_walk(hist, passes, k, &p, &r);
        if (threadIdx.x == 0) {
            sh[0] = p;
            sh[1] = r;
        }
    }
    __syncthreads();
    *prefix = sh[0];
    *krem = sh[1];
}

__device__ void sel_hist_flush(uint32_t *dst, const uint32_t *sh) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x)
        if (sh[b]) atomicAdd(dst + b, sh[b]);
}

/* ---- scores -------------------------------------------------------------------------------------- */

typedef struct sel_params {
    int n;  /* candidates: the prompt positions before a window selector's tail */
    int ld; /* logits per (window, head) row: every prompt position */
    int kind, n_heads, n_win, keep_first, keep_last_start;
    float weight[OKV_SELECT_MAX_WINDOW]; /* [n_win]: 1 or 2^-age */
} sel_params;

/* expf as the reference rounds it: exp of the float difference, rounded once to float. */
__device__ __forceinline__ float sel_exp(float x) { return (float)exp((double)x); }

/* Partial max of row blockIdx.x (a (window, head) row of ld logits, the first n candidates)
 * over part blockIdx.y. */
__global__ void sel_max_kernel(float *pmax, const float *src, int n, int ld, int span) {
    const int r = blockIdx.x, p = blockIdx.y;
    const float *l = src + (int64_t)r * ld;
    const int a = p * span, b = min(n, a + span);
    float m = -INFINITY;
    for (int j = a + threadIdx.x; j < b; j += blockDim.x) m = l[j] > m ? l[j] : m;
    __shared__ float sh[SEL_THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, m, o);
        m = y > m ? y : m;
    }
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < SEL_THREADS / 32; w++) m = sh[w] > m ? sh[w] : m;
        pmax[(int64_t)r * gridDim.y + p] = m;
    }
}

/* Partial sum, in double, of exp(l - max) of row blockIdx.x over part blockIdx.y. */
__global__ void sel_sum_kernel(double *psum, const float *pmax, const float *src, int n, int ld,
                               int span) {
    const int r = blockIdx.x, p = blockIdx.y, parts = gridDim.y;
    float m = -INFINITY;
    for (int i = 0; i < parts; i++) {
        const float y = pmax[(int64_t)r * parts + i];
        m = y > m ? y : m;
    }
    const float *l = src + (int64_t)r * ld;
    const int a = p * span, b = min(n, a + span);
    double s = 0.0;
    for (int j = a + threadIdx.x; j < b; j += blockDim.x) s += (double)sel_exp(l[j] - m);
    __shared__ double sh[SEL_THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < SEL_THREADS / 32; w++) s += sh[w];
        psum[(int64_t)r * parts + p] = s;
    }
}

/* Per row: the max and 1/sum from the partials, in part order. */
__global__ void sel_stats_kernel(float *mx, float *inv, const float *pmax, const double *psum,
                                 int rows, int parts) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float m = -INFINITY;
    double s = 0.0;
    for (int i = 0; i < parts; i++) {
        const float y = pmax[(int64_t)r * parts + i];
        m = y > m ? y : m;
        s += psum[(int64_t)r * parts + i];
    }
    mx[r] = m;
    inv[r] = (float)(1.0 / s);
}

__device__ __forceinline__ bool sel_is_forced(const sel_params &P, int j) {
    return j < P.keep_first || j >= P.keep_last_start;
}

/* Each candidate's score (the comparisons and roundings of okv_select_scores_ref), +inf where
 * forced, as a key; the keys' top digits go into the first histogram. One candidate a thread. */
__global__ void __launch_bounds__(SEL_THREADS)
sel_score_kernel(uint32_t *keys, uint32_t *hist0, const float *src, const float *mx,
                 const float *inv, const sel_params P) {
    __shared__ uint32_t sh[256];
    sh[threadIdx.x] = 0;
    __syncthreads();
    const int n = P.n, ld = P.ld;
    const int64_t rs = (int64_t)P.n_heads * ld; /* one window's logits */
    const int j = blockIdx.x * SEL_THREADS + threadIdx.x;
    if (j < n) {
        float score;
        if (P.kind == OKV_SCORE_MAX) {
            score = src[j];
            for (int h = 1; h < P.n_heads; h++) {
                const float l = src[(int64_t)h * ld + j];
                score = l > score ? l : score;
            }
        } else {
            score = 0.0f;
            for (int w = 0; w < P.n_win; w++) {
                float best = 0.0f;
                for (int h = 0; h < P.n_heads; h++) {
                    const int r = w * P.n_heads + h;
                    const float v = __fmul_rn(sel_exp(src[w * rs + (int64_t)h * ld + j] - mx[r]), inv[r]);
                    best = v > best ? v : best;
                }
                score = __fadd_rn(score, __fmul_rn(P.weight[w], best));
            }
        }
        if (sel_is_forced(P, j)) score = INFINITY;
        const uint32_t key = sel_key(score);
        keys[j] = key;
        atomicAdd(&sh[key >> 24], 1u);
    }
    __syncthreads();
    sel_hist_flush(hist0, sh);
}

/* ---- radix select and compaction ------------------------------------------------------------------ */

/* Histogram of digit `pass` of the keys that share the prefix chosen by the earlier passes. */
__global__ void __launch_bounds__(SEL_THREADS)
sel_hist_kernel(uint32_t *hist, const uint32_t *keys, int n, uint32_t k, int pass) {
    __shared__ uint32_t sh[256];
    sh[threadIdx.x] = 0;
    uint32_t prefix, krem;
    sel_walk_block(hist, pass, k, &prefix, &krem);
    const int shift = 32 - 8 * pass;
    const uint32_t mask = ~0u << shift;
    for (int i = 0; i < SEL_ITEMS; i++) {
        const int j = blockIdx.x * SEL_TILE + i * SEL_THREADS + threadIdx.x;
        if (j >= n) break;
        const uint32_t key = keys[j];
        if ((key & mask) == prefix) atomicAdd(&sh[(key >> (shift - 8)) & 255u], 1u);
    }
    __syncthreads();
    sel_hist_flush(hist + pass * 256, sh);
}

/* Per radix block: how many keys lie above the threshold key and how many equal it. */
__global__ void __launch_bounds__(SEL_THREADS)
sel_count_kernel(uint32_t *blk, const uint32_t *hist, const uint32_t *keys, int n, uint32_t k) {
    uint32_t thr, krem;
    sel_walk_block(hist, SEL_PASSES, k, &thr, &krem);
    uint32_t gt = 0, eq = 0;
    for (int i = 0; i < SEL_ITEMS; i++) {
        const int j = blockIdx.x * SEL_TILE + i * SEL_THREADS + threadIdx.x;
        if (j >= n) break;
        const uint32_t key = keys[j];
        gt += key > thr;
        eq += key == thr;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        gt += __shfl_xor_sync(0xffffffffu, gt, o);
        eq += __shfl_xor_sync(0xffffffffu, eq, o);
    }
    __shared__ uint32_t sh[2][SEL_THREADS / 32];
    if ((threadIdx.x & 31) == 0) {
        sh[0][threadIdx.x >> 5] = gt;
        sh[1][threadIdx.x >> 5] = eq;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < SEL_THREADS / 32; w++) {
            gt += sh[0][w];
            eq += sh[1][w];
        }
        blk[2 * blockIdx.x] = gt;
        blk[2 * blockIdx.x + 1] = eq;
    }
}

/* Writes the selected positions in ascending order. Position j is selected when its key is above
 * the threshold, or equal to it with fewer than krem equal keys before it; it goes to
 * out[GT(<j) + min(EQ(<j), krem)], the number of selected positions before it. Each thread takes
 * SEL_ITEMS consecutive positions; a block scan orders the threads. */
__global__ void __launch_bounds__(SEL_THREADS)
sel_write_kernel(int32_t *out, const uint32_t *blk, const uint32_t *hist, const uint32_t *keys,
                 int n, uint32_t k) {
    uint32_t thr, krem;
    sel_walk_block(hist, SEL_PASSES, k, &thr, &krem);
    __shared__ uint32_t base[2];
    if (threadIdx.x < 32) {
        uint32_t gt = 0, eq = 0;
        for (int b = threadIdx.x; b < (int)blockIdx.x; b += 32) {
            gt += blk[2 * b];
            eq += blk[2 * b + 1];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            gt += __shfl_xor_sync(0xffffffffu, gt, o);
            eq += __shfl_xor_sync(0xffffffffu, eq, o);
        }
        if (threadIdx.x == 0) {
            base[0] = gt;
            base[1] = eq;
        }
    }
    const int j0 = blockIdx.x * SEL_TILE + threadIdx.x * SEL_ITEMS;
    uint32_t key[SEL_ITEMS];
    uint32_t mine = 0; /* keys above the threshold << 16 | keys equal to it, in this thread's run */
#pragma unroll
    for (int i = 0; i < SEL_ITEMS; i++) {
        key[i] = j0 + i < n ? keys[j0 + i] : 0u;
        if (j0 + i < n) mine += (key[i] > thr ? 1u << 16 : 0u) + (key[i] == thr ? 1u : 0u);
    }
    /* exclusive scan of the packed counts over the block (each count <= SEL_TILE < 2^16) */
    __shared__ uint32_t wsum[SEL_THREADS / 32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    uint32_t incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) wsum[w] = incl;
    __syncthreads();
    uint32_t before = incl - mine;
    for (int ww = 0; ww < w; ww++) before += wsum[ww];
    uint32_t gt = base[0] + (before >> 16), eq = base[1] + (before & 0xffffu);
#pragma unroll
    for (int i = 0; i < SEL_ITEMS; i++) {
        if (j0 + i >= n) break;
        if (key[i] > thr) {
            out[gt + min(eq, krem)] = j0 + i;
            gt++;
        } else if (key[i] == thr) {
            if (eq < krem) out[gt + eq] = j0 + i;
            eq++;
        }
    }
}

/* out[j] = first + j for j < n. */
__global__ void sel_iota_kernel(int32_t *out, int first, int n) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) out[j] = first + j;
}

static void sel_iota(int32_t *out, int first, int n, cudaStream_t cs) {
    if (n <= 0) return;
    sel_iota_kernel<<<(unsigned)cuda_ceil_div(n, 256), 256, 0, cs>>>(out, first, n);
    CHECK_LAUNCH();
}

/* ---- the op ------------------------------------------------------------------------------------------ */

int cuda_select(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
                const okv_select_args *a) {
    if (n <= 0) return 0;
    /* c candidates give k of their best; the window's prompt tail follows unscored */
    const int ld = n, c = okv_select_candidates(ld, a), k = OKV_MIN(okv_select_scored(a), c);
    const int total = okv_select_count(ld, a);
    const cudaStream_t cs = cuda_compute(be);
    sel_iota(out + k, c, ld - c, cs);
    if (k == 0) return total;
    if (k == c) {
        sel_iota(out, 0, c, cs);
        return total;
    }
    n = c;
    OKV_ASSERT(n_heads >= 1 && n_heads <= OKV_SELECT_MAX_HEADS);
    OKV_ASSERT(a->kind >= OKV_SCORE_MAX && a->kind <= OKV_SCORE_WINDOW_EXP);
    /* callers that reserved their maximum never grow here */
    OKV_ASSERT(cuda_select_reserve(be, n) == OKV_OK);
    cuda_state *st = (cuda_state *)be->state;
    sel_scratch sc;
    sel_layout(&sc, st->sel_scratch, n);

    sel_params P;
    memset(&P, 0, sizeof P);
    P.n = n;
    P.ld = ld;
    P.kind = a->kind;
    P.n_heads = n_heads;
    P.keep_first = a->keep_first;
    P.keep_last_start = n - OKV_MIN(a->keep_last, n);
    const bool window = a->kind == OKV_SCORE_WINDOW_SUM || a->kind == OKV_SCORE_WINDOW_EXP;
    const float *src = window ? a->window_logits : logits;
    if (window) {
        OKV_ASSERT(a->n_win >= 0 && a->n_win <= OKV_SELECT_MAX_WINDOW);
        P.n_win = a->n_win;
        for (int w = 0; w < a->n_win; w++)
            P.weight[w] = a->kind == OKV_SCORE_WINDOW_EXP ? ldexpf(1.0f, -a->ages[w]) : 1.0f;
    } else if (a->kind == OKV_SCORE_SOFTMAX_MAX) {
        P.n_win = 1;
        P.weight[0] = 1.0f;
    }

    CHECK_CUDA(cudaMemsetAsync(sc.hist, 0, SEL_PASSES * 256 * sizeof(uint32_t), cs));
    const int rows = P.n_win * n_heads;
    if (a->kind != OKV_SCORE_MAX && rows > 0) {
        const int parts = (int)OKV_MAX(1, OKV_MIN(cuda_ceil_div(n, SEL_STAT_SPAN), SEL_STAT_SLOTS / rows));
        const int span = (int)cuda_ceil_div(n, parts);
        const dim3 grid((unsigned)rows, (unsigned)parts);
        sel_max_kernel<<<grid, SEL_THREADS, 0, cs>>>(sc.pmax, src, n, ld, span);
        CHECK_LAUNCH();
        sel_sum_kernel<<<grid, SEL_THREADS, 0, cs>>>(sc.psum, sc.pmax, src, n, ld, span);
        CHECK_LAUNCH();
        sel_stats_kernel<<<(unsigned)cuda_ceil_div(rows, 128), 128, 0, cs>>>(sc.mx, sc.inv, sc.pmax,
                                                                             sc.psum, rows, parts);
        CHECK_LAUNCH();
    }
    sel_score_kernel<<<(unsigned)cuda_ceil_div(n, SEL_THREADS), SEL_THREADS, 0, cs>>>(
        sc.keys, sc.hist, src, sc.mx, sc.inv, P);
    CHECK_LAUNCH();
    const unsigned blocks = (unsigned)cuda_ceil_div(n, SEL_TILE);
    for (int pass = 1; pass < SEL_PASSES; pass++) {
        sel_hist_kernel<<<blocks, SEL_THREADS, 0, cs>>>(sc.hist, sc.keys, n, (uint32_t)k, pass);
        CHECK_LAUNCH();
    }
    sel_count_kernel<<<blocks, SEL_THREADS, 0, cs>>>(sc.blk, sc.hist, sc.keys, n, (uint32_t)k);
    CHECK_LAUNCH();
    sel_write_kernel<<<blocks, SEL_THREADS, 0, cs>>>(out, sc.blk, sc.hist, sc.keys, n, (uint32_t)k);
    CHECK_LAUNCH();
    return total;
}
