/* passkey.c — the passkey retrieval task (Landmark-attention / InfiniteBench style) and the
 * first-integer scorer. Tested by tests/unit/test_tasks.c. */
#include "tasks.h"

#include "../common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const INTRO =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n";
static const char *const FILLER =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
static const char *const QUESTION = "\nWhat is the pass key? The pass key is";

void task_sample_free(task_sample *s) {
    if (!s) return;
    free(s->prompt);
    free(s->answer);
    memset(s, 0, sizeof *s);
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int count_tokens(const okv_tokenizer *tok, const char *s) {
    return tokenizer_encode(tok, s, strlen(s), false, false, NULL, 0);
}

int task_passkey(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                 task_sample *out) {
    memset(out, 0, sizeof *out);
    uint64_t rng = seed * 0x2545f4914f6cdd1dull + 1;
    int key = 10000 + (int)(splitmix(&rng) % 90000);
    if (depth < 0) depth = (double)(splitmix(&rng) % 1001) / 1000.0;
    char needle[160];
    snprintf(needle, sizeof needle, "The pass key is %d. Remember it. %d is the pass key. ", key, key);
    int fixed = count_tokens(tok, INTRO) + count_tokens(tok, needle) + count_tokens(tok, QUESTION);
    int per = count_tokens(tok, FILLER);
    if (per <= 0 || fixed < 0)
        return okv_fail(OKV_ERR_INTERNAL, "the tokenizer could not encode the passkey text");
    /* Token counts of concatenations can differ from the sum at the seams; refine once. */
    int reps = (ctx_tokens - fixed) / per;
    if (reps < 1)
        return okv_fail(OKV_ERR_USAGE, "passkey needs a context of at least %d tokens, not %d",
                        fixed + per, ctx_tokens);
    int at = (int)(depth * reps + 0.5);
    size_t cap = strlen(INTRO) + strlen(needle) + strlen(QUESTION) + (size_t)reps * strlen(FILLER) + 1;
    char *p = malloc(cap);
    OKV_ASSERT(p);
    for (int pass = 0; pass < 2; pass++) {
        at = (int)(depth * reps + 0.5);
        size_t len = 0;
        len += (size_t)sprintf(p + len, "%s", INTRO);
        for (int r = 0; r <= reps; r++) {
            if (r == at) len += (size_t)sprintf(p + len, "%s", needle);
            if (r < reps) len += (size_t)sprintf(p + len, "%s", FILLER);
        }
        sprintf(p + len, "%s", QUESTION);
        int n = count_tokens(tok, p);
        if (pass == 0 && n != ctx_tokens) {
            int fix = (ctx_tokens - n) / per;
            if (fix == 0) break;
            reps += fix;
            if (reps < 1) reps = 1;
            free(p);
            cap = strlen(INTRO) + strlen(needle) + strlen(QUESTION) + (size_t)reps * strlen(FILLER) + 1;
            p = malloc(cap);
            OKV_ASSERT(p);
        }
    }
    out->prompt = p;
    out->n_tokens = count_tokens(tok, p);
    out->depth = reps ? (double)at / reps : 0;
    char ans[16];
    snprintf(ans, sizeof ans, "%d", key);
    out->answer = strdup(ans);
    out->max_new_tokens = 8;
    return OKV_OK;
}

double task_score_first_int(const char *text, const char *answer) {
    const char *p = text;
    while (*p && !isdigit((unsigned char)*p)) p++;
    if (!*p) return 0;
    const char *q = p;
    while (isdigit((unsigned char)*q)) q++;
    return (size_t)(q - p) == strlen(answer) && !strncmp(p, answer, (size_t)(q - p)) ? 100.0 : 0.0;
}
