/* needle.c — RULER-style needle-in-a-haystack variants (single, multi-key, multi-value,
 * multi-query) and variable tracking, in RULER's wording, scored by substring-all (defined in
 * docs/BENCHMARKS.md). Tested by tests/unit/test_tasks.c (needle depth, length within 2%,
 * answers in the prompt). */
#include "synth.h"

#include "../common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keys are adjective-noun pairs as in RULER's word-pair keys: 32 x 32 distinct pairs. */
static const char *const ADJ[] = {
    "amber",  "brave",  "calm",   "dusty",  "eager",  "fancy",  "gentle", "hollow",
    "icy",    "jolly",  "kind",   "lively", "misty",  "noble",  "odd",    "proud",
    "quiet",  "rapid",  "silent", "tidy",   "upper",  "vivid",  "wild",   "young",
    "zesty",  "bold",   "crisp",  "deep",   "early",  "fresh",  "grand",  "humble"};
static const char *const NOUN[] = {
    "anchor", "barrel", "candle", "dragon", "engine", "falcon", "garden", "harbor",
    "island", "jacket", "kettle", "ladder", "marble", "needle", "orchid", "pepper",
    "quartz", "rabbit", "saddle", "tunnel", "umbrella", "violin", "walnut", "yacht",
    "zebra",  "bridge", "castle", "desert", "feather", "glacier", "helmet", "lantern"};
enum { N_ADJ = sizeof ADJ / sizeof ADJ[0], N_NOUN = sizeof NOUN / sizeof NOUN[0] };

#define N_MULTI 4

static const char *const NEEDLE_HEAD =
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards.\n";

/* n distinct keys and n distinct 7-digit values. */
static void draw_keys(synth_rng *r, int n, char keys[][40]) {
    int used[N_MULTI * 2];
    for (int i = 0; i < n; i++) {
        int pick, dup;
        do {
            pick = synth_below(r, N_ADJ * N_NOUN);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= used[j] == pick;
        } while (dup);
        used[i] = pick;
        snprintf(keys[i], 40, "%s-%s", ADJ[pick / N_NOUN], NOUN[pick % N_NOUN]);
    }
}

static void draw_values(synth_rng *r, int n, char vals[][16]) {
    int used[N_MULTI * 2];
    for (int i = 0; i < n; i++) {
        int v, dup;
        do {
            v = 1000000 + synth_below(r, 9000000);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= used[j] == v;
        } while (dup);
        used[i] = v;
        snprintf(vals[i], 16, "%d", v);
    }
}

typedef enum needle_kind {
    NEEDLE_SINGLE,
    NEEDLE_MULTIKEY,
    NEEDLE_MULTIVALUE,
    NEEDLE_MULTIQUERY
} needle_kind;

static const char *const KIND_NAME[] = {"needle-single", "needle-multikey", "needle-multivalue",
                                        "needle-multiquery"};

/* The asked needles sit at depth, depth + (1-depth)/n, ...: the first where the request says,
 * the rest spread evenly over what follows, keeping their order. */
static double spread(double depth, int i, int n) { return depth + (1.0 - depth) * i / n; }

static int needle_task(needle_kind kind, const okv_tokenizer *tok, int ctx_tokens, double depth,
                       uint64_t seed, task_sample *out) {
    memset(out, 0, sizeof *out);
    synth_rng rng;
    synth_seed(&rng, seed, 2 + (uint64_t)kind);
    char keys[N_MULTI][40], vals[N_MULTI][16], needles[N_MULTI][256];
    draw_keys(&rng, N_MULTI, keys);
    draw_values(&rng, N_MULTI, vals);
    if (depth < 0) depth = synth_unit(&rng);
    synth_hay h = {.head = NEEDLE_HEAD};
    const char *answers[N_MULTI];
    int n_answers = 0;
    char query[200];
    switch (kind) {
    case NEEDLE_SINGLE:
        h.n_needles = 1;
        snprintf(needles[0], 256, "One of the special magic numbers for %s is: %s. ", keys[0], vals[0]);
        h.depth[0] = depth;
        answers[n_answers++] = vals[0];
        snprintf(query, sizeof query, "%s", keys[0]);
        break;
    case NEEDLE_MULTIKEY:
        /* Key 0 is asked; the distractor keys sit at the middles of equal thirds. */
        h.n_needles = N_MULTI;
        for (int i = 0; i < N_MULTI; i++) {
            snprintf(needles[i], 256, "One of the special magic numbers for %s is: %s. ", keys[i], vals[i]);
            h.depth[i] = i == 0 ? depth : (i - 0.5) / (N_MULTI - 1);
        }
        answers[n_answers++] = vals[0];
        snprintf(query, sizeof query, "%s", keys[0]);
        break;
    case NEEDLE_MULTIVALUE:
        h.n_needles = N_MULTI;
        for (int i = 0; i < N_MULTI; i++) {
            snprintf(needles[i], 256, "One of the special magic numbers for %s is: %s. ", keys[0], vals[i]);
            h.depth[i] = spread(depth, i, N_MULTI);
            answers[n_answers++] = vals[i];
        }
        snprintf(query, sizeof query, "%s", keys[0]);
        break;
    case NEEDLE_MULTIQUERY:
        h.n_needles = N_MULTI;
        for (int i = 0; i < N_MULTI; i++) {
            snprintf(needles[i], 256, "One of the special magic numbers for %s is: %s. ", keys[i], vals[i]);
            h.depth[i] = spread(depth, i, N_MULTI);
            answers[n_answers++] = vals[i];
        }
        snprintf(query, sizeof query, "%s, %s, %s, and %s", keys[0], keys[1], keys[2], keys[3]);
        break;
    }
    for (int i = 0; i < h.n_needles; i++) h.needle[i] = needles[i];
    char tail[600], prefix[300];
    snprintf(prefix, sizeof prefix,
             "The special magic numbers for %s mentioned in the provided text are", query);
    snprintf(tail, sizeof tail,
             "\nWhat are all the special magic numbers for %s mentioned in the provided text? %s",
             query, prefix);
    h.tail = tail;
    int st = synth_haystack(tok, ctx_tokens, &h, out);
    if (st) {
        task_sample_free(out);
        return st;
    }
    synth_names(out, KIND_NAME[kind], ctx_tokens, seed);
    out->prefix_len = strlen(prefix);
    synth_answers(out, answers, n_answers);
    out->metric = TASK_METRIC_SUBSTR_ALL;
    /* A 7-digit value is about 8 tokens with its separator. */
    out->max_new_tokens = n_answers == 1 ? 16 : 12 * n_answers;
    return OKV_OK;
}

int task_needle_single(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                       task_sample *out) {
    return needle_task(NEEDLE_SINGLE, tok, ctx_tokens, depth, seed, out);
}

int task_needle_multikey(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                         task_sample *out) {
    return needle_task(NEEDLE_MULTIKEY, tok, ctx_tokens, depth, seed, out);
}

int task_needle_multivalue(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                           task_sample *out) {
    return needle_task(NEEDLE_MULTIVALUE, tok, ctx_tokens, depth, seed, out);
}

int task_needle_multiquery(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                           task_sample *out) {
    return needle_task(NEEDLE_MULTIQUERY, tok, ctx_tokens, depth, seed, out);
}

#define VT_VARS 5 /* one chain of 4 hops */

int task_vartrack(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                  task_sample *out) {
    memset(out, 0, sizeof *out);
    synth_rng rng;
    synth_seed(&rng, seed, 7);
    char names[VT_VARS][8], stmts[VT_VARS][64];
    for (int i = 0; i < VT_VARS; i++) {
        int dup;
        do {
            for (int c = 0; c < 5; c++) names[i][c] = (char)('A' + synth_below(&rng, 26));
            names[i][5] = 0;
            dup = 0;
            for (int j = 0; j < i; j++) dup |= !strcmp(names[i], names[j]);
        } while (dup);
    }
    int value = 10000 + synth_below(&rng, 90000);
    if (depth < 0) depth = synth_unit(&rng);
    synth_hay h = {.head = "Memorize and track the chain(s) of variable assignment hidden in the "
                           "following text.\n\n",
                   .n_needles = VT_VARS};
    const char *answers[VT_VARS];
    for (int i = 0; i < VT_VARS; i++) {
        if (i == 0) snprintf(stmts[i], 64, "VAR %s = %d. ", names[0], value);
        else snprintf(stmts[i], 64, "VAR %s = VAR %s. ", names[i], names[i - 1]);
        h.needle[i] = stmts[i];
        h.depth[i] = spread(depth, i, VT_VARS);
        answers[i] = names[i];
    }
    char tail[400], prefix[200];
    snprintf(prefix, sizeof prefix,
             "Answer: According to the chain(s) of variable assignment in the text above, %d "
             "variables are assigned the value %d, they are:", VT_VARS, value);
    snprintf(tail, sizeof tail,
             "\nQuestion: Find all variables that are assigned the value %d in the text above. %s",
             value, prefix);
    h.tail = tail;
    int st = synth_haystack(tok, ctx_tokens, &h, out);
    if (st) {
        task_sample_free(out);
        return st;
    }
    synth_names(out, "vartrack", ctx_tokens, seed);
    out->prefix_len = strlen(prefix);
    synth_answers(out, answers, VT_VARS);
    out->metric = TASK_METRIC_SUBSTR_ALL;
    out->max_new_tokens = 30;
    return OKV_OK;
}
