/* backend.c — what every backend shares: building the one a run asks for, backend kind names,
 * and the memory and ordering entries of backends whose memory is host memory (cpu, ref).
 * Tested by tests/unit/test_kernels.c and test_strict.c. */
#include "backend.h"
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* Backend memory of host backends is anonymous mmap: zero pages that become resident only when
 * written, so a KV cache sized for the longest context costs what the sequences use. One page in
 * front of the block holds its mapped size. */
#define HOST_HDR 4096

void *okv_host_alloc_lazy(size_t bytes) {
    size_t total = HOST_HDR + (bytes ? bytes : 1);
    uint8_t *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    *(size_t *)p = total;
    return p + HOST_HDR;
}

void okv_host_free_lazy(void *p) {
    if (!p) return;
    uint8_t *b = (uint8_t *)p - HOST_HDR;
    munmap(b, *(size_t *)b);
}

static void *host_alloc(okv_backend *be, size_t bytes) { return okv_host_alloc_lazy(bytes); }
static void host_mem_free(okv_backend *be, void *p) { okv_host_free_lazy(p); }
static void host_copy(okv_backend *be, void *dst, const void *src, size_t bytes, okv_copy_kind kind,
                      int stream) {
    if (bytes && dst != src) memmove(dst, src, bytes);
}
static void host_copy_2d(okv_backend *be, void *dst, size_t dst_pitch, const void *src,
                         size_t src_pitch, size_t width, size_t height, okv_copy_kind kind,
                         int stream) {
    for (size_t r = 0; r < height; r++)
        memmove((uint8_t *)dst + r * dst_pitch, (const uint8_t *)src + r * src_pitch, width);
}
static int host_register(okv_backend *be, void *p, size_t bytes) { return OKV_OK; }
static void host_unregister(okv_backend *be, void *p) {}
/* Host backends finish every op before returning, so an event is complete when recorded. */
static okv_event *host_event_new(okv_backend *be) {
    static char done;
    return (okv_event *)&done;
}
static void host_event_free(okv_backend *be, okv_event *ev) {}
static void host_event_record(okv_backend *be, okv_event *ev, int stream) {}
static void host_event_wait(okv_backend *be, int stream, okv_event *ev) {}
static void host_sync(okv_backend *be, int stream) {}

void okv_host_mem_ops(okv_backend *be) {
    be->mem = OKV_MEM_HOST;
    be->alloc = host_alloc;
    be->mem_free = host_mem_free;
    be->copy = host_copy;
    be->copy_2d = host_copy_2d;
    be->host_register = host_register;
    be->host_unregister = host_unregister;
    be->event_new = host_event_new;
    be->event_free = host_event_free;
    be->event_record = host_event_record;
    be->event_wait = host_event_wait;
    be->sync = host_sync;
}

static const char *const kind_names[] = {"auto", "cpu", "cpu-strict", "cuda"};

const char *okv_backend_kind_name(okv_backend_kind k) {
    return k >= 0 && k < (int)(sizeof kind_names / sizeof *kind_names) ? kind_names[k] : "?";
}

int okv_backend_kind_from_name(const char *name) {
    for (int i = 0; i < (int)(sizeof kind_names / sizeof *kind_names); i++)
        if (strcmp(name, kind_names[i]) == 0) return i;
    return -1;
}

int okv_backend_init(okv_backend *be, okv_backend_kind kind, const okv_backend_params *p) {
    memset(be, 0, sizeof *be);
    switch (kind) {
    case OKV_BACKEND_AUTO:
#ifdef OMNIKV_HAVE_CUDA
        if (okv_backend_cuda_init(be, p->device, p->max_tok, p->max_in) == OKV_OK) return OKV_OK;
        OKV_INFO("no usable GPU (%s): using the CPU backend", okv_last_error());
        memset(be, 0, sizeof *be);
#endif
        return okv_backend_cpu_init(be, p->n_threads, p->max_tok, p->max_in);
    case OKV_BACKEND_CPU:
        return okv_backend_cpu_init(be, p->n_threads, p->max_tok, p->max_in);
    case OKV_BACKEND_CPU_STRICT:
        return okv_backend_strict_init(be, p->n_threads, p->max_tok, p->max_in, p->arena_bytes);
    case OKV_BACKEND_CUDA:
#ifdef OMNIKV_HAVE_CUDA
        return okv_backend_cuda_init(be, p->device, p->max_tok, p->max_in);
#else
        return okv_fail(OKV_ERR_USAGE, "backend=cuda needs a build with the CUDA toolkit (this one "
                        "has none); rebuild with -DOMNIKV_CUDA=ON or use backend=cpu");
#endif
    }
    return okv_fail(OKV_ERR_USAGE, "unknown backend kind %d", (int)kind);
}

bool okv_weight_ok_all(okv_backend *be, okv_type t) { return okv_type_is_weight(t); }

int okv_backend_check_weight(okv_backend *be, okv_type t, const char *tensor) {
    if (be->weight_ok(be, t)) return OKV_OK;
    char list[256] = "";
    size_t n = 0;
    for (int u = 0; u < OKV_TYPE_COUNT && n < sizeof list; u++)
        if (okv_type_is_weight((okv_type)u) && be->weight_ok(be, (okv_type)u))
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", okv_type_name((okv_type)u));
    const char *name = okv_type_name(t) ? okv_type_name(t) : okv_ggml_type_name(t);
    return okv_fail(OKV_ERR_USAGE, "tensor %s has type %s, which the %s backend has no kernels for; "
                    "run it with backend=cpu, or use a model whose weights are of a type the %s "
                    "backend reads (%s)", tensor, name ? name : "unknown", be->name, be->name, list);
}
