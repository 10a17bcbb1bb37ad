/* strict.c — the checking backend (`backend=cpu-strict`): the CPU backend's ops on memory carved
 * from one arena of its own, where every op first checks that each pointer it receives (and the
 * extent it will touch) lies in that arena, or in registered host memory where the table allows
 * it, and copies check their direction. A host pointer leaking into an op is a named failure (op,
 * argument, address), found without a GPU. Tested by tests/unit/test_strict.c and by the engine,
 * runner and pipeline tests run with backend=cpu-strict. */
#include "backend.h"
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRICT_MAX_BLOCKS 4096
#define STRICT_MAX_REGIONS 64
#define STRICT_MAX_PENDING 4096

/* Work issued on the copy stream (copies, 2D copies, gathers) is held back until an event
 * recorded after it is waited on (or the stream is synchronised), and its destination is
 * poisoned with NaN bytes when it is issued: a reader that forgot to wait sees garbage, as it
 * would (sometimes) on a GPU. Compute work runs at once, so a compute event is complete when
 * recorded; a copy with OKV_STREAM_SYNC is compute work too and does not wait for the copy stream,
 * as on a GPU whose streams do not block each other. */
typedef struct strict_op {
    bool gather, strided; /* gather_rows(_cached), copy_2d, else copy */
    void *dst;
    const void *src;
    size_t src_stride, row_bytes, bytes;
    const int32_t *idx;
    int n;
    const void *old; /* a cached gather: the previous rows and their indices */
    const int32_t *old_idx;
    int n_old;
    uint64_t *hits;
    size_t dst_pitch, src_pitch, width, height; /* copy_2d */
} strict_op;

struct okv_event {
    uint64_t copy_mark; /* pending copy-stream ops before this event (0: a compute event) */
    bool live;
};
#define STRICT_MAX_EVENTS 256

typedef struct strict_block {
    size_t off, bytes;
} strict_block;

typedef struct strict_state {
    okv_backend cpu;      /* the ops that do the work */
    uint8_t *arena;       /* [arena_bytes] all backend memory */
    size_t arena_bytes;
    strict_block blocks[STRICT_MAX_BLOCKS]; /* live allocations, ascending by offset */
    int n_blocks;
    struct {
        const uint8_t *p;
        size_t bytes;
    } regions[STRICT_MAX_REGIONS]; /* registered host memory */
    int n_regions;
    strict_op pending[STRICT_MAX_PENDING]; /* copy-stream ops not yet run, in issue order */
    int n_pending;
    uint64_t issued, done;                 /* copy-stream ops issued / run so far */
    okv_event events[STRICT_MAX_EVENTS];
} strict_state;

static okv_strict_fail_fn fail_hook;

void okv_strict_set_fail_hook(okv_strict_fail_fn fn) { fail_hook = fn; }

static void strict_fail(const char *op, const char *arg, const void *p, size_t bytes,
                        const char *why) {
    char msg[320];
    snprintf(msg, sizeof msg, "cpu-strict: %s got %s = %p (%zu bytes), which %s", op, arg, p, bytes,
             why);
    if (fail_hook) fail_hook(msg);
    okv_die(__FILE__, __LINE__, msg);
}

/* Whether [p, p + bytes) lies inside one live allocation of the arena. */
static bool in_arena(const strict_state *s, const void *p, size_t bytes) {
    const uint8_t *b = p;
    if (b < s->arena || b >= s->arena + s->arena_bytes) return false;
    const size_t off = (size_t)(b - s->arena);
    int lo = 0, hi = s->n_blocks - 1;
    while (lo <= hi) { /* the last block starting at or before off */
        const int mid = (lo + hi) / 2;
        if (s->blocks[mid].off <= off) lo = mid + 1;
        else hi = mid - 1;
    }
    if (hi < 0) return false;
    const strict_block *blk = &s->blocks[hi];
    return off - blk->off <= blk->bytes && bytes <= blk->bytes - (off - blk->off);
}

static bool in_region(const strict_state *s, const void *p, size_t bytes) {
    const uint8_t *b = p;
    for (int i = 0; i < s->n_regions; i++)
        if (b >= s->regions[i].p && b <= s->regions[i].p + s->regions[i].bytes &&
            bytes <= (size_t)(s->regions[i].p + s->regions[i].bytes - b))
            return true;
    return false;
}

/* Device memory: must lie in the arena. */
static void need_dev(const okv_backend *be, const char *op, const char *arg, const void *p,
                     size_t bytes) {
    const strict_state *s = be->state;
    if (!in_arena(s, p, bytes))
        strict_fail(op, arg, p, bytes, "is not backend memory (a host pointer leaked into an op)");
}

/* Memory an op may also read in place when it is registered host memory (bank rows). */
static void need_dev_or_reg(const okv_backend *be, const char *op, const char *arg,
                            const void *p, size_t bytes) {
    const strict_state *s = be->state;
    if (!in_arena(s, p, bytes) && !in_region(s, p, bytes))
        strict_fail(op, arg, p, bytes, "is neither backend memory nor registered host memory");
}

static okv_backend *inner(okv_backend *be) { return &((strict_state *)be->state)->cpu; }

/* ---- the deferred copy stream ----------------------------------------------------------------- */

static void run_op(strict_state *s, const strict_op *op) {
    if (op->gather && op->hits)
        s->cpu.gather_rows_cached(&s->cpu, op->dst, op->src, op->src_stride, op->row_bytes, op->idx,
                                  op->n, op->old, op->old_idx, op->n_old, op->hits, OKV_STREAM_COMPUTE);
    else if (op->gather)
        s->cpu.gather_rows(&s->cpu, op->dst, op->src, op->src_stride, op->row_bytes, op->idx, op->n,
                           OKV_STREAM_COMPUTE);
    else if (op->strided)
        s->cpu.copy_2d(&s->cpu, op->dst, op->dst_pitch, op->src, op->src_pitch, op->width,
                       op->height, OKV_COPY_D2D, OKV_STREAM_COMPUTE);
    else if (op->bytes && op->dst != op->src)
        memmove(op->dst, op->src, op->bytes);
}

/* Runs the held-back copy-stream ops up to issue count `until`. */
static void flush_until(strict_state *s, uint64_t until) {
    int k = 0;
    while (s->done < until && k < s->n_pending) run_op(s, &s->pending[k++]), s->done++;
    memmove(s->pending, s->pending + k, sizeof(strict_op) * (size_t)(s->n_pending - k));
    s->n_pending -= k;
}

static void defer(strict_state *s, const strict_op *op, size_t poison_bytes) {
    if (s->n_pending == STRICT_MAX_PENDING) flush_until(s, s->done + 1);
    if (op->strided)
        for (size_t r = 0; r < op->height; r++) memset((uint8_t *)op->dst + r * op->dst_pitch, 0xff, op->width);
    else
        memset(op->dst, 0xff, poison_bytes);
    s->pending[s->n_pending++] = *op;
    s->issued++;
}

static okv_event *st_event_new(okv_backend *be) {
    strict_state *s = be->state;
    for (int i = 0; i < STRICT_MAX_EVENTS; i++)
        if (!s->events[i].live) {
            s->events[i] = (okv_event){.live = true};
            return &s->events[i];
        }
    return NULL;
}

static void st_event_free(okv_backend *be, okv_event *ev) { ev->live = false; }

static void st_event_record(okv_backend *be, okv_event *ev, int stream) {
    strict_state *s = be->state;
    ev->copy_mark = stream == OKV_STREAM_COPY ? s->issued : 0;
}

static void st_event_wait(okv_backend *be, int stream, okv_event *ev) {
    flush_until(be->state, ev->copy_mark);
}

static void st_sync(okv_backend *be, int stream) {
    strict_state *s = be->state;
    if (stream != OKV_STREAM_COMPUTE) flush_until(s, s->issued);
}

/* ---- memory -------------------------------------------------------------------------------- */

static void *st_alloc(okv_backend *be, size_t bytes) {
    strict_state *s = be->state;
    bytes = (bytes + 63) & ~(size_t)63;
    if (!bytes) bytes = 64;
    if (s->n_blocks == STRICT_MAX_BLOCKS) return NULL;
    size_t off = 0;
    int at = 0;
    for (; at < s->n_blocks; at++) { /* first fit between live blocks */
        if (s->blocks[at].off - off >= bytes) break;
        off = s->blocks[at].off + s->blocks[at].bytes;
    }
    if (off + bytes > s->arena_bytes) return NULL;
    memmove(&s->blocks[at + 1], &s->blocks[at], sizeof(strict_block) * (size_t)(s->n_blocks - at));
    s->blocks[at] = (strict_block){off, bytes};
    s->n_blocks++;
    return s->arena + off; /* zero: the arena is fresh pages and freed blocks are cleared */
}

static void st_mem_free(okv_backend *be, void *p) {
    strict_state *s = be->state;
    if (!p) return;
    for (int i = 0; i < s->n_blocks; i++)
        if (s->arena + s->blocks[i].off == p) {
            memset(p, 0, s->blocks[i].bytes);
            memmove(&s->blocks[i], &s->blocks[i + 1], sizeof(strict_block) * (size_t)(s->n_blocks - i - 1));
            s->n_blocks--;
            return;
        }
    strict_fail("mem_free", "p", p, 0, "was not allocated by this backend");
}

static void st_copy(okv_backend *be, void *dst, const void *src, size_t bytes, okv_copy_kind kind,
                    int stream) {
    strict_state *s = be->state;
    if (kind == OKV_COPY_H2D || kind == OKV_COPY_D2D) need_dev(be, "copy", "dst", dst, bytes);
    if (kind == OKV_COPY_D2H || kind == OKV_COPY_D2D) need_dev(be, "copy", "src", src, bytes);
    if (kind == OKV_COPY_H2D && in_arena(s, src, bytes))
        strict_fail("copy", "src", src, bytes, "is backend memory in a host-to-device copy");
    if (kind == OKV_COPY_D2H && in_arena(s, dst, bytes))
        strict_fail("copy", "dst", dst, bytes, "is backend memory in a device-to-host copy");
    if (stream == OKV_STREAM_COPY) {
        defer(s, &(strict_op){.dst = dst, .src = src, .bytes = bytes}, bytes);
        return;
    }
    if (bytes && dst != src) memmove(dst, src, bytes); /* like compute work: the copy stream is not waited for */
}

static void st_copy_2d(okv_backend *be, void *dst, size_t dst_pitch, const void *src,
                       size_t src_pitch, size_t width, size_t height, okv_copy_kind kind, int stream) {
    strict_state *s = be->state;
    if (height == 0) return;
    const size_t dst_ext = (height - 1) * dst_pitch + width, src_ext = (height - 1) * src_pitch + width;
    if (kind == OKV_COPY_H2D || kind == OKV_COPY_D2D) need_dev(be, "copy_2d", "dst", dst, dst_ext);
    if (kind == OKV_COPY_D2H || kind == OKV_COPY_D2D) need_dev(be, "copy_2d", "src", src, src_ext);
    if (kind == OKV_COPY_H2D && in_arena(s, src, src_ext))
        strict_fail("copy_2d", "src", src, src_ext, "is backend memory in a host-to-device copy");
    if (kind == OKV_COPY_D2H && in_arena(s, dst, dst_ext))
        strict_fail("copy_2d", "dst", dst, dst_ext, "is backend memory in a device-to-host copy");
    if (stream == OKV_STREAM_COPY) {
        defer(s, &(strict_op){.strided = true, .dst = dst, .src = src, .dst_pitch = dst_pitch,
                              .src_pitch = src_pitch, .width = width, .height = height}, 0);
        return;
    }
    s->cpu.copy_2d(&s->cpu, dst, dst_pitch, src, src_pitch, width, height, kind, OKV_STREAM_COMPUTE);
}

static int st_host_register(okv_backend *be, void *p, size_t bytes) {
    strict_state *s = be->state;
    if (s->n_regions == STRICT_MAX_REGIONS)
        return okv_fail(OKV_ERR_NOMEM, "cpu-strict registers at most %d host regions", STRICT_MAX_REGIONS);
    if (in_arena(s, p, bytes))
        strict_fail("host_register", "p", p, bytes, "is backend memory, not host memory");
    s->regions[s->n_regions].p = p;
    s->regions[s->n_regions].bytes = bytes;
    s->n_regions++;
    return OKV_OK;
}

static void st_host_unregister(okv_backend *be, void *p) {
    strict_state *s = be->state;
    for (int i = 0; i < s->n_regions; i++)
        if (s->regions[i].p == p) {
            s->regions[i] = s->regions[--s->n_regions];
            return;
        }
    strict_fail("host_unregister", "p", p, 0, "was never registered");
}

/* ---- ops: check, then run the CPU op ------------------------------------------------------------ */

static size_t f32s(int64_t n) { return sizeof(float) * (size_t)n; }
static size_t i32s(int64_t n) { return sizeof(int32_t) * (size_t)n; }

static void st_matmul(okv_backend *be, float *y, const void *w, okv_type wtype, const float *x,
                      int n_tok, int n_in, int n_out) {
    need_dev(be, "matmul", "w", w, okv_type_row_bytes(wtype, n_in) * (size_t)n_out);
    need_dev(be, "matmul", "x", x, f32s((int64_t)n_tok * n_in));
    need_dev(be, "matmul", "y", y, f32s((int64_t)n_tok * n_out));
    inner(be)->matmul(inner(be), y, w, wtype, x, n_tok, n_in, n_out);
}

static void st_rmsnorm(okv_backend *be, float *y, const float *x, const float *w, int n_tok,
                       int dim, float eps) {
    need_dev(be, "rmsnorm", "x", x, f32s((int64_t)n_tok * dim));
    need_dev(be, "rmsnorm", "y", y, f32s((int64_t)n_tok * dim));
    need_dev(be, "rmsnorm", "w", w, f32s(dim));
    inner(be)->rmsnorm(inner(be), y, x, w, n_tok, dim, eps);
}

static void st_rope(okv_backend *be, float *x, const int32_t *pos, int n_tok, int n_heads,
                    int head_dim, const float *inv_freq, int n_freq) {
    need_dev(be, "rope", "x", x, f32s((int64_t)n_tok * n_heads * head_dim));
    need_dev(be, "rope", "pos", pos, i32s(n_tok));
    need_dev(be, "rope", "inv_freq", inv_freq, f32s(n_freq));
    inner(be)->rope(inner(be), x, pos, n_tok, n_heads, head_dim, inv_freq, n_freq);
}

static void st_swiglu(okv_backend *be, float *out, const float *gate, const float *up, int64_t n) {
    need_dev(be, "swiglu", "out", out, f32s(n));
    need_dev(be, "swiglu", "gate", gate, f32s(n));
    need_dev(be, "swiglu", "up", up, f32s(n));
    inner(be)->swiglu(inner(be), out, gate, up, n);
}

static void st_add(okv_backend *be, float *y, const float *x, int64_t n) {
    need_dev(be, "add", "y", y, f32s(n));
    need_dev(be, "add", "x", x, f32s(n));
    inner(be)->add(inner(be), y, x, n);
}

static void st_bias_add(okv_backend *be, float *y, const float *b, int n_tok, int dim) {
    need_dev(be, "bias_add", "y", y, f32s((int64_t)n_tok * dim));
    need_dev(be, "bias_add", "b", b, f32s(dim));
    inner(be)->bias_add(inner(be), y, b, n_tok, dim);
}

static void st_embed(okv_backend *be, float *out, const void *table, okv_type type,
                     const int32_t *ids, int n_tok, int dim) {
    need_dev(be, "embed", "out", out, f32s((int64_t)n_tok * dim));
    need_dev(be, "embed", "ids", ids, i32s(n_tok));
    need_dev(be, "embed", "table", table, okv_type_row_bytes(type, dim));
    inner(be)->embed(inner(be), out, table, type, ids, n_tok, dim);
}

static void st_kv_store(okv_backend *be, void *dst, okv_type dst_type, int64_t dst_stride,
                        const int32_t *dst_rows, const float *src, int n_tok, int row_elems) {
    need_dev(be, "kv_store", "src", src, f32s((int64_t)n_tok * row_elems));
    need_dev(be, "kv_store", "dst_rows", dst_rows, i32s(n_tok));
    for (int t = 0; t < n_tok; t++)
        need_dev(be, "kv_store", "dst row",
                 (const uint8_t *)dst + okv_type_row_bytes(dst_type, (int64_t)dst_rows[t] * dst_stride),
                 okv_type_row_bytes(dst_type, row_elems));
    inner(be)->kv_store(inner(be), dst, dst_type, dst_stride, dst_rows, src, n_tok, row_elems);
}

/* A view's rows: K and V of the last row it visits must lie in the arena or a registered region. */
static void need_view(okv_backend *be, const char *op, const okv_kv_view *v, okv_attn_shape s) {
    if (v->n == 0) return;
    const size_t row = okv_type_row_bytes(v->type, (int64_t)s.n_kv_heads * s.head_dim);
    int64_t last = v->n - 1;
    if (v->idx) {
        need_dev(be, op, "view.idx", v->idx, i32s(v->n));
        last = 0;
        for (int i = 0; i < v->n; i++) last = v->idx[i] > last ? v->idx[i] : last;
    }
    const size_t extent = okv_type_row_bytes(v->type, last * v->stride) + row;
    need_dev_or_reg(be, op, "view.k", v->k, extent);
    need_dev_or_reg(be, op, "view.v", v->v, extent);
}

static void st_attn_prefill(okv_backend *be, float *out, const float *q, int n_q, int q_pos0,
                            okv_kv_view kv, okv_attn_shape s) {
    const size_t n = f32s((int64_t)n_q * s.n_heads * s.head_dim);
    need_dev(be, "attn_prefill", "q", q, n);
    need_dev(be, "attn_prefill", "out", out, n);
    need_view(be, "attn_prefill", &kv, s);
    inner(be)->attn_prefill(inner(be), out, q, n_q, q_pos0, kv, s);
}

static void st_attn_decode(okv_backend *be, float *out, const float *q, const okv_kv_view *views,
                           int n_views, okv_attn_shape s, float *logits) {
    const size_t n = f32s((int64_t)s.n_heads * s.head_dim);
    need_dev(be, "attn_decode", "q", q, n);
    need_dev(be, "attn_decode", "out", out, n);
    for (int v = 0; v < n_views; v++) need_view(be, "attn_decode", &views[v], s);
    if (logits && n_views > 0)
        need_dev(be, "attn_decode", "logits", logits, f32s((int64_t)s.n_heads * views[0].n));
    inner(be)->attn_decode(inner(be), out, q, views, n_views, s, logits);
}

static void st_attn_logits(okv_backend *be, float *logits, const float *q, okv_kv_view kv,
                           okv_attn_shape s) {
    need_dev(be, "attn_logits", "q", q, f32s((int64_t)s.n_heads * s.head_dim));
    need_dev(be, "attn_logits", "logits", logits, f32s((int64_t)s.n_heads * kv.n));
    need_view(be, "attn_logits", &kv, s);
    inner(be)->attn_logits(inner(be), logits, q, kv, s);
}

static int st_select(okv_backend *be, int32_t *out, const float *logits, int n_heads, int n,
                     const okv_select_args *a) {
    const bool window = a->kind == OKV_SCORE_WINDOW_SUM || a->kind == OKV_SCORE_WINDOW_EXP;
    if (window)
        need_dev(be, "select", "window_logits", a->window_logits, f32s((int64_t)a->n_win * n_heads * n));
    else
        need_dev(be, "select", "logits", logits, f32s((int64_t)n_heads * n));
    if (n > 0 && okv_select_count(n, a) > 0) need_dev(be, "select", "out", out, i32s(okv_select_count(n, a)));
    return inner(be)->select(inner(be), out, logits, n_heads, n, a);
}

static void st_argmax(okv_backend *be, int32_t *out, const float *x, int n_rows, int n) {
    need_dev(be, "argmax", "x", x, f32s((int64_t)n_rows * n));
    need_dev(be, "argmax", "out", out, i32s(n_rows));
    inner(be)->argmax(inner(be), out, x, n_rows, n);
}

static void st_gather_rows(okv_backend *be, void *dst, const void *src, size_t src_stride,
                           size_t row_bytes, const int32_t *idx, int n, int stream) {
    strict_state *s = be->state;
    if (n == 0) return;
    need_dev(be, "gather_rows", "dst", dst, row_bytes * (size_t)n);
    need_dev(be, "gather_rows", "idx", idx, i32s(n));
    for (int i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)src + (size_t)idx[i] * src_stride;
        if (!in_region(s, row, row_bytes))
            strict_fail("gather_rows", "src row", row, row_bytes, "is not registered host memory");
    }
    if (stream == OKV_STREAM_COPY)
        defer(s, &(strict_op){.gather = true, .dst = dst, .src = src, .src_stride = src_stride,
                              .row_bytes = row_bytes, .idx = idx, .n = n},
              row_bytes * (size_t)n);
    else
        inner(be)->gather_rows(inner(be), dst, src, src_stride, row_bytes, idx, n, stream);
}

static void st_gather_rows_cached(okv_backend *be, void *dst, const void *src, size_t src_stride,
                                  size_t row_bytes, const int32_t *idx, int n, const void *old,
                                  const int32_t *old_idx, int n_old, uint64_t *hits, int stream) {
    strict_state *s = be->state;
    const char *op = "gather_rows_cached";
    need_dev(be, op, "hits", hits, sizeof *hits);
    if (n == 0) return;
    need_dev(be, op, "dst", dst, row_bytes * (size_t)n);
    need_dev(be, op, "idx", idx, i32s(n));
    if (n_old > 0) {
        need_dev(be, op, "old", old, row_bytes * (size_t)n_old);
        need_dev(be, op, "old_idx", old_idx, i32s(n_old));
        const uint8_t *d = dst, *o = old;
        if (d < o + row_bytes * (size_t)n_old && o < d + row_bytes * (size_t)n)
            strict_fail(op, "dst", dst, row_bytes * (size_t)n, "overlaps old, the rows it reads");
    }
    for (int i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)src + (size_t)idx[i] * src_stride;
        if (!in_region(s, row, row_bytes))
            strict_fail(op, "src row", row, row_bytes, "is not registered host memory");
    }
    const strict_op o = {.gather = true, .dst = dst, .src = src, .src_stride = src_stride,
                         .row_bytes = row_bytes, .idx = idx, .n = n, .old = old,
                         .old_idx = old_idx, .n_old = n_old, .hits = hits};
    if (stream == OKV_STREAM_COPY) defer(s, &o, row_bytes * (size_t)n);
    else run_op(s, &o);
}

static int st_reserve(okv_backend *be, okv_attn_shape s, int max_ctx) {
    return inner(be)->reserve(inner(be), s, max_ctx);
}

static void st_free(okv_backend *be) {
    strict_state *s = be->state;
    if (s) {
        if (s->cpu.free) s->cpu.free(&s->cpu);
        okv_host_free_lazy(s->arena);
        free(s);
    }
    be->state = NULL;
}

int okv_backend_strict_init(okv_backend *be, int n_threads, int max_tok, int max_in,
                            size_t arena_bytes) {
    strict_state *s = calloc(1, sizeof *s);
    if (!s) return okv_fail(OKV_ERR_NOMEM, "out of memory for the cpu-strict backend state");
    int st = okv_backend_cpu_init(&s->cpu, n_threads, max_tok, max_in);
    if (st) {
        free(s);
        return st;
    }
    *be = s->cpu; /* the host ordering entries (every stream synchronous) carry over */
    be->name = "cpu-strict";
    be->state = s;
    be->mem = OKV_MEM_DEVICE; /* callers must treat its memory as not host-addressable */
    be->alloc = st_alloc;
    be->mem_free = st_mem_free;
    be->copy = st_copy;
    be->copy_2d = st_copy_2d;
    be->host_register = st_host_register;
    be->host_unregister = st_host_unregister;
    be->event_new = st_event_new;
    be->event_free = st_event_free;
    be->event_record = st_event_record;
    be->event_wait = st_event_wait;
    be->sync = st_sync;
    be->matmul = st_matmul;
    be->rmsnorm = st_rmsnorm;
    be->rope = st_rope;
    be->swiglu = st_swiglu;
    be->add = st_add;
    be->bias_add = st_bias_add;
    be->embed = st_embed;
    be->kv_store = st_kv_store;
    be->attn_prefill = st_attn_prefill;
    be->attn_decode = st_attn_decode;
    be->attn_logits = st_attn_logits;
    be->select = st_select;
    be->argmax = st_argmax;
    be->gather_rows = st_gather_rows;
    be->gather_rows_cached = st_gather_rows_cached;
    be->reserve = st_reserve;
    be->free = st_free;
    s->arena_bytes = arena_bytes;
    s->arena = okv_host_alloc_lazy(arena_bytes);
    if (!s->arena) {
        st_free(be);
        return okv_fail(OKV_ERR_NOMEM, "cpu-strict cannot allocate its arena of %zu bytes",
                        arena_bytes);
    }
    return OKV_OK;
}
