/* synth.c — shared machinery of the generated tasks (see synth.h): seeded draws, strings, the
 * length search and the grass haystack. Tested through tests/unit/test_tasks.c (needle position
 * and the 2% length bound on two tokenizers). */
#include "synth.h"

#include "../common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The haystack of the passkey literature, one sentence per filler unit so the length search can
 * land within one short sentence of the request. */
static const char *const GRASS[] = {"The grass is green. ", "The sky is blue. ",
                                    "The sun is yellow. ", "Here we go. ",
                                    "There and back again. "};
enum { N_GRASS = sizeof GRASS / sizeof GRASS[0] };

void synth_seed(synth_rng *r, uint64_t seed, uint64_t stream) {
    r->s = seed * 0x9e3779b97f4a7c15ull ^ (stream + 1) * 0xd1b54a32d192ed03ull;
}

uint64_t synth_next(synth_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int synth_below(synth_rng *r, int n) { return (int)(synth_next(r) % (uint64_t)n); }

double synth_unit(synth_rng *r) { return (double)synth_below(r, 1001) / 1000.0; }

void sbuf_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = OKV_MAX(2 * b->cap, b->len + n + 1);
        cap = OKV_MAX(cap, (size_t)256);
        char *p = realloc(b->p, cap);
        OKV_ASSERT(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void sbuf_puts(sbuf *b, const char *s) { sbuf_put(b, s, strlen(s)); }

void sbuf_printf(sbuf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    OKV_ASSERT(n >= 0);
    if ((size_t)n < sizeof small) {
        sbuf_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    OKV_ASSERT(big);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sbuf_put(b, big, (size_t)n);
    free(big);
}

char *sbuf_take(sbuf *b) {
    if (!b->p) sbuf_put(b, "", 0);
    char *p = b->p;
    memset(b, 0, sizeof *b);
    return p;
}

int synth_count(const okv_tokenizer *tok, const char *text) {
    return tokenizer_encode(tok, text, strlen(text), true, false, NULL, 0);
}

int synth_fit(const okv_tokenizer *tok, int ctx_tokens, double unit_guess, synth_build_fn build,
              void *ctx, char **prompt, int *m_out, int *n_tokens) {
    char *best = build(ctx, 0);
    int base = synth_count(tok, best);
    if (base < 0) {
        free(best);
        return okv_fail(OKV_ERR_INTERNAL, "the tokenizer could not encode a task prompt: %s",
                        okv_last_error());
    }
    if (base > ctx_tokens) {
        free(best);
        return okv_fail(OKV_ERR_USAGE, "this task needs a context of at least %d tokens, not %d",
                        base + (int)ceil(unit_guess), ctx_tokens);
    }
    /* lo is the largest count known to fit, hi (when >= 0) the smallest known not to. The count is
     * close to linear in m, so secant steps land within a unit or two; bisection after a few
     * steps bounds the work when seams make it less regular. */
    int lo = 0, c_lo = base, hi = -1, c_hi = 0;
    double unit = unit_guess > 0 ? unit_guess : 1.0;
    for (int it = 0; it < 64 && c_lo < ctx_tokens && (hi < 0 || hi - lo > 1); it++) {
        int m;
        if (hi < 0) {
            if (lo > 0) unit = OKV_MAX((double)(c_lo - base) / lo, 0.25);
            m = lo + OKV_MAX(1, (int)((ctx_tokens - c_lo) / unit));
        } else if (it < 8) {
            m = lo + (int)((double)(ctx_tokens - c_lo) * (hi - lo) / (c_hi - c_lo));
            m = OKV_MIN(OKV_MAX(m, lo + 1), hi - 1);
        } else {
            m = lo + (hi - lo) / 2;
        }
        char *p = build(ctx, m);
        int c = synth_count(tok, p);
        if (c < 0) {
            free(p);
            free(best);
            return okv_fail(OKV_ERR_INTERNAL, "the tokenizer could not encode a task prompt: %s",
                            okv_last_error());
        }
        if (c <= ctx_tokens) {
            free(best);
            best = p, lo = m, c_lo = c;
        } else {
            free(p);
            hi = m, c_hi = c;
        }
    }
    *prompt = best;
    *m_out = lo;
    *n_tokens = c_lo;
    return OKV_OK;
}

typedef struct hay_ctx {
    const synth_hay *h;
    int at[SYNTH_MAX_NEEDLES];
} hay_ctx;

static int needle_pos(double depth, int m) {
    int at = (int)floor(depth * m + 0.5);
    return OKV_MIN(OKV_MAX(at, 0), m);
}

static char *hay_build(void *vctx, int m) {
    hay_ctx *c = vctx;
    const synth_hay *h = c->h;
    sbuf b = {0};
    sbuf_puts(&b, h->head);
    for (int i = 0; i < h->n_needles; i++) c->at[i] = needle_pos(h->depth[i], m);
    for (int s = 0; s <= m; s++) {
        for (int i = 0; i < h->n_needles; i++)
            if (c->at[i] == s) sbuf_puts(&b, h->needle[i]);
        if (s < m) sbuf_puts(&b, GRASS[s % N_GRASS]);
    }
    sbuf_puts(&b, h->tail);
    return sbuf_take(&b);
}

int synth_haystack(const okv_tokenizer *tok, int ctx_tokens, const synth_hay *h, task_sample *out) {
    OKV_ASSERT(h->n_needles >= 1 && h->n_needles <= SYNTH_MAX_NEEDLES);
    hay_ctx c = {.h = h};
    int per_block = 0;
    for (int i = 0; i < N_GRASS; i++) per_block += synth_count(tok, GRASS[i]);
    int m, st = synth_fit(tok, ctx_tokens, (double)per_block / N_GRASS, hay_build, &c, &out->prompt,
                          &m, &out->n_tokens);
    if (st) return st;
    out->n_filler = m;
    out->needle_at = needle_pos(h->depth[0], m);
    out->depth = m ? (double)out->needle_at / m : 0.0;
    return OKV_OK;
}

void synth_answers(task_sample *out, const char *const *answers, int n) {
    out->answers = calloc((size_t)n, sizeof(char *));
    OKV_ASSERT(out->answers);
    for (int i = 0; i < n; i++) {
        out->answers[i] = strdup(answers[i]);
        OKV_ASSERT(out->answers[i]);
    }
    out->n_answers = n;
}

void synth_names(task_sample *out, const char *task, int ctx_tokens, uint64_t seed) {
    OKV_ASSERT(asprintf(&out->id, "%s-%d-%llu", task, ctx_tokens, (unsigned long long)seed) > 0);
    out->dataset = strdup(task);
    OKV_ASSERT(out->dataset);
}
