/* twostage.c — 2StageRetr, the OmniKV paper's multi-step retrieval: add two numbers, then look
 * the sum up in a long integer-to-colour dictionary (docs/BENCHMARKS.md). The dictionary grows with
 * the requested length. Tested by tests/unit/test_tasks.c (target depth, length within 2%). */
#include "synth.h"

#include "../common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const COLOURS[] = {
    "red",    "orange", "yellow", "green", "blue",   "purple", "pink",      "brown",
    "black",  "white",  "gray",   "cyan",  "magenta", "violet", "indigo",   "maroon",
    "navy",   "olive",  "teal",   "beige", "gold",   "silver", "turquoise"};
enum { N_COLOURS = sizeof COLOURS / sizeof COLOURS[0] };

static const char *const PREFIX = "Answer:";

typedef struct two_ctx {
    uint64_t seed;
    double depth;    /* of the target key */
    double split;    /* a = split * (t + 1), rounded down */
    int t, a, b;     /* of the last build */
} two_ctx;

/* The colour of key i depends on (seed, i) only, so the dictionary is the same prefix at every
 * length. */
static const char *colour_of(uint64_t seed, int i) {
    synth_rng r;
    synth_seed(&r, seed ^ ((uint64_t)i * 0x632be59bd9b4e019ull), 11);
    return COLOURS[synth_below(&r, N_COLOURS)];
}

static char *two_build(void *vctx, int m) {
    two_ctx *c = vctx;
    int n = m + 1; /* at least one key */
    c->t = (int)floor(c->depth * (n - 1) + 0.5);
    c->a = OKV_MIN((int)(c->split * (c->t + 1)), c->t);
    c->b = c->t - c->a;
    sbuf b = {0};
    sbuf_puts(&b, "Below is a dictionary that maps integer keys to colours. Read it carefully: you "
                  "will have to look up one key.\n\n");
    for (int i = 0; i < n; i++) sbuf_printf(&b, "Key %d: %s.\n", i, colour_of(c->seed, i));
    sbuf_printf(&b, "\nThe equation is %d + %d = ?\nFirst compute the sum of the equation, then give "
                    "the colour stored under that sum as a key in the dictionary above. %s",
                c->a, c->b, PREFIX);
    return sbuf_take(&b);
}

int task_two_stage(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                   task_sample *out) {
    memset(out, 0, sizeof *out);
    synth_rng rng;
    synth_seed(&rng, seed, 13);
    two_ctx c = {.seed = seed};
    c.split = synth_unit(&rng);
    c.depth = depth < 0 ? synth_unit(&rng) : depth;
    int m, st = synth_fit(tok, ctx_tokens, synth_count(tok, "Key 1234: green.\n"), two_build, &c,
                          &out->prompt, &m, &out->n_tokens);
    if (st) return st;
    /* Rebuilt so t, a and b are the fitted m's (the search's last build may have been larger). */
    free(out->prompt);
    out->prompt = two_build(&c, m);
    synth_names(out, "2stage", ctx_tokens, seed);
    out->prefix_len = strlen(PREFIX);
    const char *colour = colour_of(seed, c.t);
    synth_answers(out, &colour, 1);
    out->metric = TASK_METRIC_WORD;
    out->max_new_tokens = 24;
    out->n_filler = m + 1;
    out->needle_at = c.t;
    out->depth = m ? (double)c.t / m : 0.0;
    return OKV_OK;
}
