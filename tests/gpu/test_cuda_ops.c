/* test_cuda_ops.c — the CUDA backend against kernels/ref.c: every op but attention and selection
 * over many shapes (ragged ones included) on random inputs from fixed seeds, plus its memory and
 * ordering entries (copies, pinning, events, alloc failure). Prints each op's shapes and worst
 * error. Exits 77 (CTest: skipped) when no GPU is visible, unless OMNIKV_REQUIRE_GPU=1. */
#include "kernels/backend.h"
#include "common.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static okv_backend be;

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f; }
static void rnd_fill(float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = rnd_f(lo, hi);
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "FAIL: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* Backend memory holding a copy of host bytes (or NaN-filled 0xff bytes when src is NULL, so an
 * element an op fails to write shows up). */
static void *dev_from(const void *src, size_t bytes) {
    void *d = be.alloc(&be, bytes);
    if (!d) {
        fprintf(stderr, "FAIL: cannot allocate %zu bytes of GPU memory\n", bytes);
        exit(1);
    }
    if (src) {
        be.copy(&be, d, src, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
    } else {
        void *poison = xmalloc(bytes);
        memset(poison, 0xff, bytes);
        be.copy(&be, d, poison, bytes, OKV_COPY_H2D, OKV_STREAM_SYNC);
        free(poison);
    }
    return d;
}

static void dev_to(void *dst, const void *d, size_t bytes) {
    be.copy(&be, dst, d, bytes, OKV_COPY_D2H, OKV_STREAM_SYNC);
}

/* Worst error of one op over all its shapes, as a ratio to its tolerance: <= 1 passes. */
typedef struct op_stat {
    const char *name;
    int cases;
    double worst;     /* worst error (in the op's measure) */
    double worst_tol; /* the tolerance at that element */
    char where[160];  /* shape and element of the worst error */
    int bad;          /* elements over tolerance */
} op_stat;

static void stat_add(op_stat *st, double err, double tol, const char *where) {
    if (!(err <= tol)) st->bad++;
    const double r = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0);
    const double wr = st->worst_tol > 0 ? st->worst / st->worst_tol : (st->worst > 0 ? INFINITY : 0);
    if (!(r <= wr) || st->where[0] == 0) {
        st->worst = err;
        st->worst_tol = tol;
        snprintf(st->where, sizeof st->where, "%s", where);
    }
}

static void stat_report(const op_stat *st, const char *shapes) {
    printf("%-14s %4d shapes (%s): worst error %.3g (tolerance there %.3g) at %s\n", st->name,
           st->cases, shapes, st->worst, st->worst_tol, st->where[0] ? st->where : "-");
    TEST_CHECK(st->bad == 0, "%s: %d elements over tolerance; worst %.6g > %.6g at %s", st->name,
               st->bad, st->worst, st->worst_tol, st->where);
}

/* atol + rtol*|ref| elementwise; NaN (an unwritten element) always fails. */
static void cmp_close(op_stat *st, const float *got, const float *ref, int64_t n, double atol,
                      double rtol, const char *shape) {
    for (int64_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - (double)ref[i]);
        const double tol = atol + rtol * fabs((double)ref[i]);
        if (!(err <= tol) || err > 0) {
            char where[160];
            snprintf(where, sizeof where, "%s [%lld] got %.9g want %.9g", shape, (long long)i,
                     got[i], ref[i]);
            stat_add(st, isnan(got[i]) ? INFINITY : err, tol, where);
        }
    }
    st->cases++;
}

/* Bitwise; the error is the count of differing bytes. */
static void cmp_exact(op_stat *st, const void *got, const void *ref, size_t bytes, const char *shape) {
    const uint8_t *g = got, *r = ref;
    size_t diff = 0, first = bytes;
    for (size_t i = 0; i < bytes; i++)
        if (g[i] != r[i]) {
            if (first == bytes) first = i;
            diff++;
        }
    if (diff) {
        char where[160];
        snprintf(where, sizeof where, "%s: %zu bytes differ, the first at byte %zu", shape, diff, first);
        stat_add(st, (double)diff, 0, where);
    }
    st->cases++;
}

/* ---- matmul ---------------------------------------------------------------------------------- */

/* One shape: Y from the GPU against okv_matmul_ref. The error of y[t][o] is measured against
 * sum_i |w_i x_i| over the dequantized weights and the activations as the op sees them (rounded
 * or quantized), the scale of any summation error: so a tolerance of 1e-5 still catches one
 * missing term out of 100000. */
static void matmul_case(op_stat *st, okv_type wt, int n_tok, int n_in, int n_out, double tol) {
    const okv_type at = okv_act_type_for(wt);
    const size_t wrow = okv_type_row_bytes(wt, n_in);
    float *wf = xmalloc(sizeof(float) * (size_t)n_in);
    uint8_t *w = xmalloc(wrow * (size_t)n_out);
    float *wdq = xmalloc(sizeof(float) * (size_t)n_in * n_out);
    for (int o = 0; o < n_out; o++) {
        /* rows of varied magnitude so per-block scales differ */
        const float mag = rnd_f(0.01f, 2.0f);
        rnd_fill(wf, n_in, -mag, mag);
        okv_quant_row_ref(w + (size_t)o * wrow, wf, wt, n_in);
        okv_dequant_row_ref(wdq + (size_t)o * n_in, w + (size_t)o * wrow, wt, n_in);
    }
    float *x = xmalloc(sizeof(float) * (size_t)n_tok * n_in);
    for (int t = 0; t < n_tok; t++) rnd_fill(x + (size_t)t * n_in, n_in, -3.0f, 3.0f);
    float *xdq = xmalloc(sizeof(float) * (size_t)n_in);
    void *xq = xmalloc(okv_type_row_bytes(at, n_in));
    float *ref = xmalloc(sizeof(float) * (size_t)n_tok * n_out);
    float *got = xmalloc(sizeof(float) * (size_t)n_tok * n_out);
    okv_matmul_ref(ref, w, wt, x, n_tok, n_in, n_out);

    void *dw = dev_from(w, wrow * (size_t)n_out);
    float *dx = dev_from(x, sizeof(float) * (size_t)n_tok * n_in);
    float *dy = dev_from(NULL, sizeof(float) * (size_t)n_tok * n_out);
    be.matmul(&be, dy, dw, wt, dx, n_tok, n_in, n_out);
    dev_to(got, dy, sizeof(float) * (size_t)n_tok * n_out);

    for (int t = 0; t < n_tok; t++) {
        okv_quant_row_ref(xq, x + (size_t)t * n_in, at, n_in);
        okv_dequant_row_ref(xdq, xq, at, n_in);
        for (int o = 0; o < n_out; o++) {
            double absdot = 0;
            for (int i = 0; i < n_in; i++) absdot += fabs((double)wdq[(size_t)o * n_in + i] * xdq[i]);
            const size_t k = (size_t)t * n_out + o;
            const double err = fabs((double)got[k] - ref[k]);
            if (!(err <= tol * absdot) || err > 0) {
                char where[160];
                snprintf(where, sizeof where, "n_tok %d n_in %d n_out %d: y[%d][%d] got %.9g want %.9g",
                         n_tok, n_in, n_out, t, o, got[k], ref[k]);
                stat_add(st, isnan(got[k]) ? INFINITY : err / absdot, tol, where);
            }
        }
    }
    st->cases++;
    be.mem_free(&be, dw);
    be.mem_free(&be, dx);
    be.mem_free(&be, dy);
    free(wf), free(w), free(wdq), free(x), free(xdq), free(xq), free(ref), free(got);
}

static void test_matmul(void) {
    const okv_type types[] = {OKV_TYPE_F32, OKV_TYPE_F16, OKV_TYPE_BF16,
                              OKV_TYPE_Q8_0, OKV_TYPE_Q4_0, OKV_TYPE_Q4_1};
    const int n_ins[] = {32, 64, 96, 160, 512, 1024, 4096};
    const int n_outs[] = {1, 7, 33, 129, 255};
    const int n_toks[] = {1, 2, 3, 7, 8, 17, 64};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const okv_type wt = types[ti];
        const bool quant = okv_type_block_elems(wt) > 1;
        /* quantized: the GPU forms the reference's block terms exactly and sums them in double,
         * so only the final rounding may differ; float types sum in f32 (and cuBLAS from 8 tokens) */
        const double tol = quant ? 1e-6 : 1e-5;
        char name[32];
        snprintf(name, sizeof name, "matmul %s", okv_type_name(wt));
        op_stat st = {.name = name};
        for (size_t a = 0; a < sizeof n_ins / sizeof n_ins[0]; a++)
            for (size_t b = 0; b < sizeof n_outs / sizeof n_outs[0]; b++)
                for (size_t c = 0; c < sizeof n_toks / sizeof n_toks[0]; c++)
                    matmul_case(&st, wt, n_toks[c], n_ins[a], n_outs[b], tol);
        /* many output rows: a grid of thousands of blocks */
        for (int nt = 1; nt <= 9; nt += 4) matmul_case(&st, wt, nt, 64, 17001, tol);
        if (!quant) /* rows that are no multiple of the 16-byte vector: the scalar kernel */
            for (size_t c = 0; c < sizeof n_toks / sizeof n_toks[0]; c++) {
                matmul_case(&st, wt, n_toks[c], 45, 17, tol);
                matmul_case(&st, wt, n_toks[c], 1001, 3, tol);
            }
        stat_report(&st, quant ? "n_in 32..4096, n_out 1..255 and 17001, n_tok 1..64; error / sum|w x|"
                               : "n_in 32..4096 and 45, 1001, n_out 1..255 and 17001, n_tok 1..64; "
                                 "error / sum|w x|");
    }
}

/* ---- elementwise ----------------------------------------------------------------------------- */

static void test_rmsnorm(void) {
    op_stat st = {.name = "rmsnorm"};
    const int n_toks[] = {1, 3, 17, 64}, dims[] = {32, 576, 1000, 4096, 4097};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 5; b++) {
            const int nt = n_toks[a], dim = dims[b];
            const bool in_place = b == 2;
            const size_t n = (size_t)nt * dim;
            float *x = xmalloc(4 * n), *w = xmalloc(4 * (size_t)dim), *ref = xmalloc(4 * n),
                  *got = xmalloc(4 * n);
            rnd_fill(x, (int64_t)n, -4.0f, 4.0f);
            rnd_fill(w, dim, 0.5f, 1.5f);
            okv_rmsnorm_ref(ref, x, w, nt, dim, 1e-5f);
            float *dx = dev_from(x, 4 * n), *dw = dev_from(w, 4 * (size_t)dim);
            float *dy = in_place ? dx : dev_from(NULL, 4 * n);
            be.rmsnorm(&be, dy, dx, dw, nt, dim, 1e-5f);
            dev_to(got, dy, 4 * n);
            char shape[64];
            snprintf(shape, sizeof shape, "n_tok %d dim %d%s", nt, dim, in_place ? " in place" : "");
            cmp_close(&st, got, ref, (int64_t)n, 1e-6, 1e-6, shape);
            if (!in_place) be.mem_free(&be, dy);
            be.mem_free(&be, dx), be.mem_free(&be, dw);
            free(x), free(w), free(ref), free(got);
        }
    stat_report(&st, "n_tok 1..64, dim 32..4097, one in place; atol 1e-6 + rtol 1e-6");
}

static void test_rope(void) {
    op_stat st = {.name = "rope"};
    const int n_toks[] = {1, 2, 7, 17}, heads[] = {1, 3, 32}, hds[] = {64, 128};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 3; b++)
            for (size_t c = 0; c < 2; c++)
                for (int partial = 0; partial < 2; partial++) {
                    const int nt = n_toks[a], nh = heads[b], hd = hds[c];
                    const int nf = partial ? hd / 4 : hd / 2;
                    const size_t n = (size_t)nt * nh * hd;
                    float *x = xmalloc(4 * n), *ref = xmalloc(4 * n), *got = xmalloc(4 * n);
                    float *inv = xmalloc(4 * (size_t)nf);
                    int32_t *pos = xmalloc(4 * (size_t)nt);
                    rnd_fill(x, (int64_t)n, -2.0f, 2.0f);
                    for (int i = 0; i < nf; i++) inv[i] = powf(500000.0f, -2.0f * (float)i / (float)hd);
                    for (int t = 0; t < nt; t++) pos[t] = t % 2 ? (int32_t)(rnd_u32() % 1000000) : t;
                    memcpy(ref, x, 4 * n);
                    okv_rope_ref(ref, pos, nt, nh, hd, inv, nf);
                    float *dx = dev_from(x, 4 * n), *dinv = dev_from(inv, 4 * (size_t)nf);
                    int32_t *dpos = dev_from(pos, 4 * (size_t)nt);
                    be.rope(&be, dx, dpos, nt, nh, hd, dinv, nf);
                    dev_to(got, dx, 4 * n);
                    char shape[80];
                    snprintf(shape, sizeof shape, "n_tok %d heads %d head_dim %d n_freq %d", nt, nh, hd, nf);
                    cmp_close(&st, got, ref, (int64_t)n, 1e-5, 1e-5, shape);
                    be.mem_free(&be, dx), be.mem_free(&be, dinv), be.mem_free(&be, dpos);
                    free(x), free(ref), free(got), free(inv), free(pos);
                }
    stat_report(&st, "n_tok 1..17, heads 1..32, head_dim 64/128, full and partial, positions to 1e6; "
                     "atol 1e-5 + rtol 1e-5 (sin/cos differ by ulps)");
}

static void test_swiglu_add_bias(void) {
    op_stat sw = {.name = "swiglu"}, ad = {.name = "add"}, bi = {.name = "bias_add"};
    const int64_t ns[] = {1, 7, 1000, 65537};
    for (size_t a = 0; a < 4; a++) {
        const int64_t n = ns[a];
        const size_t bytes = 4 * (size_t)n;
        float *g = xmalloc(bytes), *u = xmalloc(bytes), *ref = xmalloc(bytes), *got = xmalloc(bytes);
        rnd_fill(g, n, -20.0f, 20.0f);
        rnd_fill(u, n, -2.0f, 2.0f);
        char shape[64];
        snprintf(shape, sizeof shape, "n %lld", (long long)n);
        for (int alias = 0; alias < 2; alias++) {
            okv_swiglu_ref(ref, g, u, n);
            float *dg = dev_from(g, bytes), *du = dev_from(u, bytes);
            float *dout = alias ? dg : dev_from(NULL, bytes);
            be.swiglu(&be, dout, dg, du, n);
            dev_to(got, dout, bytes);
            cmp_close(&sw, got, ref, n, 1e-7, 2e-6, shape);
            if (!alias) be.mem_free(&be, dout);
            be.mem_free(&be, dg), be.mem_free(&be, du);
        }
        memcpy(ref, g, bytes);
        okv_add_ref(ref, u, n);
        float *dy = dev_from(g, bytes), *dx = dev_from(u, bytes);
        be.add(&be, dy, dx, n);
        dev_to(got, dy, bytes);
        cmp_exact(&ad, got, ref, bytes, shape);
        be.mem_free(&be, dy), be.mem_free(&be, dx);
        /* bias over n_tok rows of dim = n / n_tok */
        const int nt = n % 7 == 0 ? 7 : 1, dim = (int)(n / nt);
        memcpy(ref, g, bytes);
        okv_bias_add_ref(ref, u, nt, dim);
        dy = dev_from(g, bytes);
        float *db = dev_from(u, 4 * (size_t)dim);
        be.bias_add(&be, dy, db, nt, dim);
        dev_to(got, dy, bytes);
        snprintf(shape, sizeof shape, "n_tok %d dim %d", nt, dim);
        cmp_exact(&bi, got, ref, bytes, shape);
        be.mem_free(&be, dy), be.mem_free(&be, db);
        free(g), free(u), free(ref), free(got);
    }
    stat_report(&sw, "n 1..65537, gate in [-20, 20], out aliasing gate too; atol 1e-7 + rtol 2e-6");
    stat_report(&ad, "n 1..65537; bit-exact");
    stat_report(&bi, "n_tok 1/7, dim 1..65537; bit-exact");
}

static void test_embed(void) {
    op_stat st = {.name = "embed"};
    const okv_type types[] = {OKV_TYPE_F32, OKV_TYPE_F16, OKV_TYPE_BF16,
                              OKV_TYPE_Q8_0, OKV_TYPE_Q4_0, OKV_TYPE_Q4_1};
    const int dims[] = {32, 96, 4096}, n_toks[] = {1, 3, 17, 64};
    const int n_vocab = 301;
    for (size_t ti = 0; ti < 6; ti++)
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 4; b++) {
                const okv_type ty = types[ti];
                const int dim = dims[a], nt = n_toks[b];
                const size_t row = okv_type_row_bytes(ty, dim);
                uint8_t *table = xmalloc(row * n_vocab);
                float *tmp = xmalloc(4 * (size_t)dim);
                for (int v = 0; v < n_vocab; v++) {
                    rnd_fill(tmp, dim, -1.0f, 1.0f);
                    okv_quant_row_ref(table + (size_t)v * row, tmp, ty, dim);
                }
                int32_t *ids = xmalloc(4 * (size_t)nt);
                for (int t = 0; t < nt; t++) ids[t] = t == 1 ? ids[0] : (int32_t)(rnd_u32() % n_vocab);
                const size_t ob = 4 * (size_t)nt * dim;
                float *ref = xmalloc(ob), *got = xmalloc(ob);
                okv_embed_ref(ref, table, ty, ids, nt, dim);
                void *dt = dev_from(table, row * n_vocab);
                int32_t *di = dev_from(ids, 4 * (size_t)nt);
                float *dout = dev_from(NULL, ob);
                be.embed(&be, dout, dt, ty, di, nt, dim);
                dev_to(got, dout, ob);
                char shape[64];
                snprintf(shape, sizeof shape, "%s dim %d n_tok %d", okv_type_name(ty), dim, nt);
                cmp_exact(&st, got, ref, ob, shape);
                be.mem_free(&be, dt), be.mem_free(&be, di), be.mem_free(&be, dout);
                free(table), free(tmp), free(ids), free(ref), free(got);
            }
    stat_report(&st, "f32/f16/bf16/q8_0/q4_0/q4_1, dim 32..4096, n_tok 1..64, repeated ids; bit-exact");
}

static void test_kv_store(void) {
    op_stat st = {.name = "kv_store"};
    const int n_toks[] = {1, 5, 64}, elems[] = {64, 1024, 1000};
    for (int f16 = 0; f16 < 2; f16++)
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 3; b++) {
                const int nt = n_toks[a], re = elems[b];
                const int64_t stride = re + (b == 2 ? 24 : 0);
                const int n_rows = 3 * nt + 5;
                const okv_type ty = f16 ? OKV_TYPE_F16 : OKV_TYPE_F32;
                const size_t eb = f16 ? 2 : 4, db = eb * (size_t)stride * n_rows;
                uint8_t *init = xmalloc(db), *ref = xmalloc(db), *got = xmalloc(db);
                for (size_t i = 0; i < db; i++) init[i] = (uint8_t)rnd_u32();
                memcpy(ref, init, db);
                float *src = xmalloc(4 * (size_t)nt * re);
                rnd_fill(src, (int64_t)nt * re, -70000.0f, 70000.0f); /* f16 overflow too */
                for (int i = 0; i < nt * re; i += 3) src[i] *= 1e-6f;  /* and subnormals */
                int32_t *rows = xmalloc(4 * (size_t)n_rows);
                for (int i = 0; i < n_rows; i++) rows[i] = i; /* distinct rows: a shuffled prefix */
                for (int i = n_rows - 1; i > 0; i--) {
                    const int j = (int)(rnd_u32() % (uint32_t)(i + 1));
                    const int32_t t = rows[i];
                    rows[i] = rows[j], rows[j] = t;
                }
                okv_kv_store_ref(ref, ty, stride, rows, src, nt, re);
                void *dd = dev_from(init, db);
                float *ds = dev_from(src, 4 * (size_t)nt * re);
                int32_t *dr = dev_from(rows, 4 * (size_t)nt);
                be.kv_store(&be, dd, ty, stride, dr, ds, nt, re);
                dev_to(got, dd, db);
                char shape[64];
                snprintf(shape, sizeof shape, "%s n_tok %d row %d stride %lld", okv_type_name(ty), nt,
                         re, (long long)stride);
                cmp_exact(&st, got, ref, db, shape);
                be.mem_free(&be, dd), be.mem_free(&be, ds), be.mem_free(&be, dr);
                free(init), free(ref), free(got), free(src), free(rows);
            }
    stat_report(&st, "f16/f32, n_tok 1..64, rows 64..1024, padded stride, whole store compared; "
                     "bit-exact");
}

static void test_argmax(void) {
    op_stat st = {.name = "argmax"};
    const int n_rows_v[] = {1, 5, 64}, ns[] = {1, 7, 1000, 128256};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 4; b++) {
            const int nr = n_rows_v[a], n = ns[b];
            float *x = xmalloc(4 * (size_t)nr * n);
            rnd_fill(x, (int64_t)nr * n, -10.0f, 10.0f);
            for (int r = 0; r < nr; r++) {
                float *row = x + (size_t)r * n;
                if (n > 2 && r % 5 == 1) { /* a tie for the maximum: the first index wins */
                    const int i = (int)(rnd_u32() % (uint32_t)n), j = (int)(rnd_u32() % (uint32_t)n);
                    row[i] = row[j] = 100.0f;
                }
                if (r % 5 == 2) for (int i = 0; i < n; i++) row[i] = -INFINITY;
                if (r % 5 == 3) row[0] = NAN; /* the reference keeps index 0 */
                if (n > 3 && r % 5 == 4) row[n / 2] = NAN, row[n - 1] = 50.0f;
            }
            int32_t *ref = xmalloc(4 * (size_t)nr), *got = xmalloc(4 * (size_t)nr);
            okv_argmax_ref(ref, x, nr, n);
            float *dx = dev_from(x, 4 * (size_t)nr * n);
            int32_t *dout = dev_from(NULL, 4 * (size_t)nr);
            be.argmax(&be, dout, dx, nr, n);
            dev_to(got, dout, 4 * (size_t)nr);
            char shape[64];
            snprintf(shape, sizeof shape, "n_rows %d n %d", nr, n);
            cmp_exact(&st, got, ref, 4 * (size_t)nr, shape);
            be.mem_free(&be, dx), be.mem_free(&be, dout);
            free(x), free(ref), free(got);
        }
    stat_report(&st, "n_rows 1..64, n 1..128256, ties, -inf rows, NaNs; exact");
}

/* ---- gather and memory ----------------------------------------------------------------------- */

static void test_gather(void) {
    op_stat st = {.name = "gather_rows"};
    const size_t row_bytes_v[] = {4096, 28672, 100, 33};
    const int ns[] = {0, 1, 7, 2048};
    const int n_src = 3000;
    for (size_t a = 0; a < 4; a++) {
        const size_t rb = row_bytes_v[a], stride = rb + (a == 1 ? 0 : 48);
        const size_t sb = stride * n_src;
        uint8_t *src = okv_alloc(sb); /* page-aligned enough to pin; 64-byte aligned rows */
        TEST_CHECK(src != NULL, "cannot allocate %zu bytes of host memory", sb);
        if (!src) return;
        for (size_t i = 0; i < sb; i++) src[i] = (uint8_t)rnd_u32();
        TEST_OK(be.host_register(&be, src, sb));
        for (size_t b = 0; b < 4; b++) {
            const int n = ns[b];
            int32_t *idx = xmalloc(4 * (size_t)(n + 1));
            idx[n] = 0;
            for (int i = 0; i < n; i++) idx[i] = i % 3 == 2 ? idx[i - 1] : (int32_t)(rnd_u32() % n_src);
            const size_t ob = rb * (size_t)(n + 1); /* one spare row must stay untouched */
            uint8_t *ref = xmalloc(ob), *got = xmalloc(ob);
            memset(ref, 0xff, ob);
            okv_gather_rows_ref(ref, src, stride, rb, idx, n);
            int32_t *didx = dev_from(idx, 4 * (size_t)(n + 1));
            void *dout = dev_from(NULL, ob);
            be.gather_rows(&be, dout, src, stride, rb, didx, n, OKV_STREAM_COPY);
            be.sync(&be, OKV_STREAM_COPY);
            dev_to(got, dout, ob);
            char shape[64];
            snprintf(shape, sizeof shape, "row %zu bytes, stride %zu, n %d", rb, stride, n);
            cmp_exact(&st, got, ref, ob, shape);
            be.mem_free(&be, didx), be.mem_free(&be, dout);
            free(idx), free(ref), free(got);
        }
        be.host_unregister(&be, src);
        okv_free_mem(src);
    }
    stat_report(&st, "rows of 4096/28672 (16-byte loads), 100 (4-byte), 33 bytes, n 0..2048, "
                     "repeated idx, from pinned host memory on the copy stream; bit-exact");
}

static void test_memory(void) {
    op_stat st = {.name = "copy"};
    const size_t sizes[] = {1, 3, 4097, (1u << 20) + 7};
    for (size_t a = 0; a < 4; a++) {
        const size_t n = sizes[a];
        uint8_t *h = xmalloc(n), *back = xmalloc(n);
        for (size_t i = 0; i < n; i++) h[i] = (uint8_t)rnd_u32();
        void *d1 = dev_from(h, n), *d2 = be.alloc(&be, n);
        TEST_CHECK(d2 != NULL, "alloc of %zu bytes failed", n);
        be.copy(&be, d2, d1, n, OKV_COPY_D2D, OKV_STREAM_SYNC);
        memset(back, 0, n);
        dev_to(back, d2, n);
        char shape[64];
        snprintf(shape, sizeof shape, "%zu bytes H2D, D2D, D2H", n);
        cmp_exact(&st, back, h, n, shape);
        be.mem_free(&be, d1), be.mem_free(&be, d2);
        free(h), free(back);
    }
    stat_report(&st, "1 byte .. 1 MiB + 7, synchronous; bit-exact");

    /* Asynchronous: H2D on the copy stream from pinned memory, ordered before an op on the
     * compute stream by an event, then D2H on the copy stream after the op. */
    op_stat as = {.name = "copy async"};
    const int64_t n = 1 << 22;
    float *a = okv_alloc(4 * (size_t)n), *b = okv_alloc(4 * (size_t)n), *got = okv_alloc(4 * (size_t)n);
    TEST_CHECK(a && b && got, "host allocation failed");
    rnd_fill(a, n, -1, 1);
    rnd_fill(b, n, -1, 1);
    TEST_OK(be.host_register(&be, a, 4 * (size_t)n));
    TEST_OK(be.host_register(&be, got, 4 * (size_t)n));
    float *da = be.alloc(&be, 4 * (size_t)n), *db = dev_from(b, 4 * (size_t)n);
    TEST_CHECK(da != NULL, "alloc failed");
    okv_event *copied = be.event_new(&be), *added = be.event_new(&be);
    TEST_CHECK(copied && added, "event_new failed");
    be.copy(&be, da, a, 4 * (size_t)n, OKV_COPY_H2D, OKV_STREAM_COPY);
    be.event_record(&be, copied, OKV_STREAM_COPY);
    be.event_wait(&be, OKV_STREAM_COMPUTE, copied);
    be.add(&be, db, da, n);
    be.event_record(&be, added, OKV_STREAM_COMPUTE);
    be.event_wait(&be, OKV_STREAM_COPY, added);
    be.copy(&be, got, db, 4 * (size_t)n, OKV_COPY_D2H, OKV_STREAM_COPY);
    be.sync(&be, OKV_STREAM_SYNC);
    okv_add_ref(b, a, n);
    cmp_exact(&as, got, b, 4 * (size_t)n, "16 MiB H2D, add, D2H across streams");
    stat_report(&as, "copy stream + events around a compute op; bit-exact");
    be.event_free(&be, copied), be.event_free(&be, added);
    be.mem_free(&be, da), be.mem_free(&be, db);

    /* Pinning memory twice is a user-visible failure, returned, not fatal. */
    const int again = be.host_register(&be, a, 4 * (size_t)n);
    TEST_CHECK(again != OKV_OK, "registering the same host memory twice succeeded");
    printf("host_register twice: status %d (%s)\n", again, okv_last_error());
    be.host_unregister(&be, a), be.host_unregister(&be, got);
    okv_free_mem(a), okv_free_mem(b), okv_free_mem(got);

    /* An absurd allocation is NULL, and leaves the backend usable. */
    void *huge = be.alloc(&be, (size_t)1 << 60);
    TEST_CHECK(huge == NULL, "alloc of 2^60 bytes returned %p", huge);
    float one = 1.0f, two = 2.0f, sum = 0.0f;
    float *d1 = dev_from(&one, 4), *d2 = dev_from(&two, 4);
    be.add(&be, d1, d2, 1);
    dev_to(&sum, d1, 4);
    TEST_CHECK(sum == 3.0f, "add after a failed alloc gave %g, want 3", sum);
    be.mem_free(&be, d1), be.mem_free(&be, d2);
    printf("alloc of 2^60 bytes: %s; the backend works after it\n", huge ? "not NULL" : "NULL");
}

int main(void) {
    okv_log_init(0);
    const okv_backend_params p = {.n_threads = 1, .max_tok = 64, .max_in = 4096, .device = -1};
    const int rc = okv_backend_init(&be, OKV_BACKEND_CUDA, &p);
    if (rc != OKV_OK) {
        const char *req = getenv("OMNIKV_REQUIRE_GPU");
        if (req && !strcmp(req, "1")) {
            fprintf(stderr, "FAIL: OMNIKV_REQUIRE_GPU=1 but the CUDA backend did not start: %s\n",
                    okv_last_error());
            return 1;
        }
        printf("skipped: %s\n", okv_last_error());
        return 77;
    }
    printf("CUDA backend up: %s\n", be.name);
    test_memory();
    test_gather();
    test_rmsnorm();
    test_rope();
    test_swiglu_add_bias();
    test_embed();
    test_kv_store();
    test_argmax();
    test_matmul();
    be.free(&be);
    TEST_CHECK(be.state == NULL, "free left the state behind");
    return test_summary();
}
