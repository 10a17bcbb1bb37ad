/* backend_cuda.cu — builds the CUDA backend: picks the GPU, creates its streams, cuBLAS handle and
 * scratch, and fills the table with the memory, ordering and op entries of kernels/cuda.
 * Tested by tests/gpu/test_cuda_ops.c (copies, alloc failure, every op against kernels/ref.c). */
#include "cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cuda_die(cudaError_t e, const char *file, int line, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s failed: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    okv_die(file, line, msg); /* prints the rank and host, then aborts every rank */
}

void cublas_die(cublasStatus_t s, const char *file, int line, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s failed: cuBLAS %s (%d)", what, cublasGetStatusString(s), (int)s);
    okv_die(file, line, msg);
}

static cuda_state *cuda_st(okv_backend *be) { return (cuda_state *)be->state; }

static cudaStream_t cuda_stream(okv_backend *be, int stream) {
    OKV_ASSERT(stream >= 0 && stream < OKV_N_STREAMS);
    return cuda_st(be)->stream[stream];
}

/* ---- memory -------------------------------------------------------------------------------- */

static void *cuda_alloc(okv_backend *be, size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* an out-of-memory error is not sticky: clear it for later checks */
        return NULL;
    }
    /* On the compute stream (the legacy stream does not order with our non-blocking ones), and
     * finished before any copy stream may write the buffer. */
    CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, cuda_compute(be)));
    CHECK_CUDA(cudaStreamSynchronize(cuda_compute(be)));
    return p;
}

static void cuda_mem_free(okv_backend *be, void *p) {
    if (p) CHECK_CUDA(cudaFree(p));
}

static cudaMemcpyKind cuda_copy_kind(okv_copy_kind kind) {
    switch (kind) {
    case OKV_COPY_H2D: return cudaMemcpyHostToDevice;
    case OKV_COPY_D2H: return cudaMemcpyDeviceToHost;
    case OKV_COPY_D2D: return cudaMemcpyDeviceToDevice;
    }
    okv_die(__FILE__, __LINE__, "unknown copy kind");
}

/* A synchronous copy goes on the compute stream and waits for it: it lands after every op issued
 * so far, and a pageable host-to-device copy has reached the device before any later op (plain
 * cudaMemcpy may return while its staging DMA is still in flight, unordered with our
 * non-blocking streams). */
static void cuda_copy(okv_backend *be, void *dst, const void *src, size_t bytes, okv_copy_kind kind,
                      int stream) {
    if (!bytes) return;
    const cudaStream_t s = stream == OKV_STREAM_SYNC ? cuda_compute(be) : cuda_stream(be, stream);
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cuda_copy_kind(kind), s));
    if (stream == OKV_STREAM_SYNC) CHECK_CUDA(cudaStreamSynchronize(s));
}

static void cuda_copy_2d(okv_backend *be, void *dst, size_t dst_pitch, const void *src,
                         size_t src_pitch, size_t width, size_t height, okv_copy_kind kind,
                         int stream) {
    if (!width || !height) return;
    const cudaStream_t s = stream == OKV_STREAM_SYNC ? cuda_compute(be) : cuda_stream(be, stream);
    CHECK_CUDA(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height, cuda_copy_kind(kind), s));
    if (stream == OKV_STREAM_SYNC) CHECK_CUDA(cudaStreamSynchronize(s));
}

static int cuda_host_register(okv_backend *be, void *p, size_t bytes) {
    const cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable);
    if (e == cudaSuccess) return OKV_OK;
    cudaGetLastError();
    return okv_fail(OKV_ERR_NOMEM,
                    "cannot pin %zu bytes of host memory at %p for the GPU (%s); lower the context "
                    "bank size or raise the locked-memory limit (ulimit -l)",
                    bytes, p, cudaGetErrorString(e));
}

static void cuda_host_unregister(okv_backend *be, void *p) {
    if (p) CHECK_CUDA(cudaHostUnregister(p));
}

/* ---- ordering ------------------------------------------------------------------------------ */

/* An okv_event is the cudaEvent_t itself (an opaque pointer). */
static okv_event *cuda_event_new(okv_backend *be) {
    cudaEvent_t e;
    if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return (okv_event *)e;
}

static void cuda_event_free(okv_backend *be, okv_event *ev) {
    if (ev) CHECK_CUDA(cudaEventDestroy((cudaEvent_t)ev));
}

static void cuda_event_record(okv_backend *be, okv_event *ev, int stream) {
    CHECK_CUDA(cudaEventRecord((cudaEvent_t)ev, cuda_stream(be, stream)));
}

static void cuda_event_wait(okv_backend *be, int stream, okv_event *ev) {
    CHECK_CUDA(cudaStreamWaitEvent(cuda_stream(be, stream), (cudaEvent_t)ev, 0));
}

static void cuda_sync(okv_backend *be, int stream) {
    if (stream == OKV_STREAM_SYNC) {
        for (int i = 0; i < OKV_N_STREAMS; i++) CHECK_CUDA(cudaStreamSynchronize(cuda_st(be)->stream[i]));
    } else {
        CHECK_CUDA(cudaStreamSynchronize(cuda_stream(be, stream)));
    }
}

static int cuda_reserve(okv_backend *be, okv_attn_shape s, int max_ctx) {
    const int st = cuda_attn_reserve(be, s, max_ctx);
    return st ? st : cuda_select_reserve(be, max_ctx);
}

/* Safe on a half-built state: every handle is checked before it is released. */
static void cuda_free(okv_backend *be) {
    cuda_state *st = cuda_st(be);
    if (st) {
        for (int i = 0; i < OKV_N_STREAMS; i++)
            if (st->stream[i]) CHECK_CUDA(cudaStreamSynchronize(st->stream[i]));
        if (st->cublas) CHECK_CUBLAS(cublasDestroy(st->cublas));
        void *bufs[] = {st->act, st->attn_part, st->sel_scratch};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) CHECK_CUDA(cudaFree(bufs[i]));
        for (int i = 0; i < OKV_N_STREAMS; i++)
            if (st->stream[i]) CHECK_CUDA(cudaStreamDestroy(st->stream[i]));
        free(st);
    }
    be->state = NULL;
}

/* -1: the node-local rank the launcher exports (Open MPI, Slurm), modulo the GPUs; 0 without one. */
static int cuda_pick_device(int device, int n_dev) {
    if (device >= 0) return device;
    const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v) % n_dev;
    }
    return 0;
}

/* A GPU that cannot be used gives a status (never a crash): backend=auto then runs on the CPU. */
static int cuda_setup(okv_backend *be, int device, int max_tok, int max_in) {
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        return okv_fail(OKV_ERR_USAGE, "no GPU is visible (%s); use backend=cpu on this machine",
                        e != cudaSuccess ? cudaGetErrorString(e) : "the CUDA runtime found 0 devices");
    }
    const int dev = cuda_pick_device(device, n_dev);
    if (dev >= n_dev)
        return okv_fail(OKV_ERR_USAGE, "GPU %d does not exist: %d visible; pick a device below %d",
                        dev, n_dev, n_dev);
    cuda_state *st = (cuda_state *)calloc(1, sizeof *st);
    if (!st) return okv_fail(OKV_ERR_NOMEM, "out of memory for the CUDA backend state");
    be->state = st;
    st->device = dev;
    st->max_tok = max_tok;
    st->max_in = max_in;
    e = cudaSetDevice(dev);
    for (int i = 0; i < OKV_N_STREAMS && e == cudaSuccess; i++)
        e = cudaStreamCreateWithFlags(&st->stream[i], cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return okv_fail(OKV_ERR_USAGE, "GPU %d is not usable (%s); free it or use backend=cpu", dev,
                        cudaGetErrorString(e));
    }
    int host_ptr = 0;
    CHECK_CUDA(cudaDeviceGetPCIBusId(be->pci_bus_id, (int)sizeof be->pci_bus_id, dev));
    CHECK_CUDA(cudaDeviceGetAttribute(&st->n_sm, cudaDevAttrMultiProcessorCount, dev));
    CHECK_CUDA(cudaDeviceGetAttribute(&host_ptr, cudaDevAttrCanUseHostPointerForRegisteredMem, dev));
    st->host_ptr_ok = host_ptr != 0;
    if (cublasCreate(&st->cublas) != CUBLAS_STATUS_SUCCESS) {
        st->cublas = NULL;
        return okv_fail(OKV_ERR_NOMEM, "cannot create a cuBLAS handle on GPU %d (out of device "
                        "memory?)", dev);
    }
    CHECK_CUBLAS(cublasSetStream(st->cublas, st->stream[OKV_STREAM_COMPUTE]));
    /* f16/bf16 rounded activations need 2 bytes an element; quantized ones 1 + 8/32. */
    st->act_bytes = (size_t)max_tok * (size_t)max_in * 2 + 256;
    if (cudaMalloc(&st->act, st->act_bytes) != cudaSuccess) {
        cudaGetLastError();
        st->act = NULL;
        return okv_fail(OKV_ERR_NOMEM,
                        "cannot allocate %zu bytes of GPU scratch (%d tokens x %d inputs); lower the "
                        "batch or chunk size", st->act_bytes, max_tok, max_in);
    }
    return OKV_OK;
}

/* The weight types matmul.cu and embed (elementwise.cu) have kernels for. */
static bool cuda_weight_ok(okv_backend *be, okv_type t) {
    switch (t) {
    case OKV_TYPE_F32:
    case OKV_TYPE_F16:
    case OKV_TYPE_BF16:
    case OKV_TYPE_Q8_0:
    case OKV_TYPE_Q4_0:
    case OKV_TYPE_Q4_1: return true;
    default: return false;
    }
}

int okv_backend_cuda_init(okv_backend *be, int device, int max_tok, int max_in) {
    memset(be, 0, sizeof *be);
    be->name = "cuda";
    be->mem = OKV_MEM_DEVICE;
    be->alloc = cuda_alloc;
    be->mem_free = cuda_mem_free;
    be->copy = cuda_copy;
    be->copy_2d = cuda_copy_2d;
    be->host_register = cuda_host_register;
    be->host_unregister = cuda_host_unregister;
    be->event_new = cuda_event_new;
    be->event_free = cuda_event_free;
    be->event_record = cuda_event_record;
    be->event_wait = cuda_event_wait;
    be->sync = cuda_sync;
    be->matmul = cuda_matmul;
    be->rmsnorm = cuda_rmsnorm;
    be->rope = cuda_rope;
    be->swiglu = cuda_swiglu;
    be->add = cuda_add;
    be->bias_add = cuda_bias_add;
    be->embed = cuda_embed;
    be->kv_store = cuda_kv_store;
    be->attn_prefill = cuda_attn_prefill;
    be->attn_decode = cuda_attn_decode;
    be->attn_logits = cuda_attn_logits;
    be->select = cuda_select;
    be->argmax = cuda_argmax;
    be->gather_rows = cuda_gather_rows;
    be->gather_rows_cached = cuda_gather_rows_cached;
    be->reserve = cuda_reserve;
    be->weight_ok = cuda_weight_ok;
    be->free = cuda_free;
    if (max_tok < 1 || max_in < 1)
        return okv_fail(OKV_ERR_USAGE,
                        "CUDA backend needs max tokens and max row length >= 1 (got %d, %d)", max_tok,
                        max_in);
    const int st = cuda_setup(be, device, max_tok, max_in);
    if (st != OKV_OK) cuda_free(be);
    return st;
}
