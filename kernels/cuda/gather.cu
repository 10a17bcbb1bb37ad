/* gather.cu — gather_rows: selected rows of the Context Bank, which lives in registered (mapped)
 * host memory, read over the bus by one kernel into contiguous device rows, many rows in flight;
 * gather_rows_cached: the same, taking the rows the previous step already brought from device
 * memory (the row cache). Compared bit-exactly with okv_gather_rows_ref and
 * okv_gather_rows_cached_ref by tests/unit/test_backend_ops.c and tests/gpu/test_cuda_ops.c;
 * timed against one contiguous copy by tests/bench/bench_cuda.c. */
#include "cuda.h"

#define GATHER_WARPS 8  /* rows in flight per block: one warp each */
#define GATHER_UNROLL 4 /* loads a lane issues before its first store */

/* Position of v in the ascending a[0..n), or -1 (every lane of a warp searches alike). */
__device__ static int find_sorted(const int32_t *a, int n, int32_t v) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        const int32_t x = a[mid];
        if (x < v) lo = mid + 1;
        else if (x > v) hi = mid - 1;
        else return mid;
    }
    return -1;
}

/* Each warp copies whole rows, its lanes striding over the row in V-sized words; GATHER_UNROLL
 * independent loads per lane keep the bus busy while the first ones are in flight. With a cache
 * (n_old > 0) a row found among old_idx comes from old, in device memory, instead. */
template <typename V>
__global__ void __launch_bounds__(GATHER_WARPS * 32)
gather_kernel(uint8_t *dst, const uint8_t *src, size_t src_stride, size_t row_bytes,
              const int32_t *idx, int n, const uint8_t *old, const int32_t *old_idx, int n_old,
              unsigned long long *hits) {
    const size_t nv = row_bytes / sizeof(V);
    const size_t lane = threadIdx.x & 31;
    for (int64_t i = (int64_t)blockIdx.x * GATHER_WARPS + threadIdx.x / 32; i < n;
         i += (int64_t)gridDim.x * GATHER_WARPS) {
        const int j = n_old > 0 ? find_sorted(old_idx, n_old, idx[i]) : -1;
        if (j >= 0 && lane == 0) atomicAdd(hits, 1ull);
        const V *s = (const V *)(j >= 0 ? old + (size_t)j * row_bytes : src + (size_t)idx[i] * src_stride);
        V *d = (V *)(dst + (size_t)i * row_bytes);
        size_t k = lane;
        for (; k + 32 * (GATHER_UNROLL - 1) < nv; k += 32 * GATHER_UNROLL) {
            V v[GATHER_UNROLL];
#pragma unroll
            for (int u = 0; u < GATHER_UNROLL; u++) v[u] = s[k + 32 * u];
#pragma unroll
            for (int u = 0; u < GATHER_UNROLL; u++) d[k + 32 * u] = v[u];
        }
        for (; k < nv; k += 32) d[k] = s[k];
    }
}

static void gather_launch(okv_backend *be, void *dst, const void *src, size_t src_stride,
                          size_t row_bytes, const int32_t *idx, int n, const void *old,
                          const int32_t *old_idx, int n_old, uint64_t *hits, int stream) {
    OKV_ASSERT(stream >= 0 && stream < OKV_N_STREAMS);
    if (n <= 0 || row_bytes == 0) return;
    const cuda_state *st = (const cuda_state *)be->state;
    const uint8_t *s = (const uint8_t *)src;
    if (!st->host_ptr_ok) { /* the device sees registered host memory at another address */
        void *dp = NULL;
        CHECK_CUDA(cudaHostGetDevicePointer(&dp, (void *)src, 0));
        s = (const uint8_t *)dp;
    }
    const cudaStream_t cs = st->stream[stream];
    const unsigned grid = (unsigned)OKV_MIN(cuda_ceil_div(n, GATHER_WARPS), (int64_t)st->n_sm * 8);
    const uintptr_t align = (uintptr_t)s | (uintptr_t)dst | (uintptr_t)old | src_stride | row_bytes;
    const uint8_t *o = (const uint8_t *)old;
    unsigned long long *h = (unsigned long long *)hits;
    if (align % 16 == 0)
        gather_kernel<uint4><<<grid, GATHER_WARPS * 32, 0, cs>>>((uint8_t *)dst, s, src_stride,
                                                                 row_bytes, idx, n, o, old_idx, n_old, h);
    else if (align % 4 == 0)
        gather_kernel<uint32_t><<<grid, GATHER_WARPS * 32, 0, cs>>>((uint8_t *)dst, s, src_stride,
                                                                    row_bytes, idx, n, o, old_idx, n_old, h);
    else
        gather_kernel<uint8_t><<<grid, GATHER_WARPS * 32, 0, cs>>>((uint8_t *)dst, s, src_stride,
                                                                   row_bytes, idx, n, o, old_idx, n_old, h);
    CHECK_LAUNCH();
}

void cuda_gather_rows(okv_backend *be, void *dst, const void *src, size_t src_stride,
                      size_t row_bytes, const int32_t *idx, int n, int stream) {
    gather_launch(be, dst, src, src_stride, row_bytes, idx, n, NULL, NULL, 0, NULL, stream);
}

void cuda_gather_rows_cached(okv_backend *be, void *dst, const void *src, size_t src_stride,
                             size_t row_bytes, const int32_t *idx, int n, const void *old,
                             const int32_t *old_idx, int n_old, uint64_t *hits, int stream) {
    gather_launch(be, dst, src, src_stride, row_bytes, idx, n, old, old_idx, n_old, hits, stream);
}
