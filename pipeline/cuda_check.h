/* cuda_check.h — CHECK_CUDA and CHECK_NCCL for the pipeline's device transports and GPU
 * placement: a failing call prints file:line, rank, host, the expression and the library's error
 * string, then aborts every rank. Compiled only where CMake found the CUDA runtime / NCCL; no
 * test here has a GPU to make them fire. */
#ifndef OKV_PIPE_CUDA_CHECK_H
#define OKV_PIPE_CUDA_CHECK_H

#include "../src/common.h"

#include <stdio.h>

#ifdef OMNIKV_HAVE_CUDART
#include <cuda_runtime.h>
static inline void pipe_check_cuda(cudaError_t e, const char *file, int line, const char *what) {
    if (e == cudaSuccess) return;
    char msg[512];
    snprintf(msg, sizeof msg, "%s failed: %s", what, cudaGetErrorString(e));
    okv_die(file, line, msg);
}
#ifndef CHECK_CUDA
#define CHECK_CUDA(expr) pipe_check_cuda((expr), __FILE__, __LINE__, #expr)
#endif
#endif

#ifdef OMNIKV_HAVE_NCCL
#include <nccl.h>
static inline void pipe_check_nccl(ncclResult_t r, const char *file, int line, const char *what) {
    if (r == ncclSuccess) return;
    char msg[512];
    snprintf(msg, sizeof msg, "%s failed: %s", what, ncclGetErrorString(r));
    okv_die(file, line, msg);
}
#ifndef CHECK_NCCL
#define CHECK_NCCL(expr) pipe_check_nccl((expr), __FILE__, __LINE__, #expr)
#endif
#endif

#endif
