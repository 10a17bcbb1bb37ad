/* passkey.c — the passkey retrieval task (Landmark-attention / InfiniteBench style, defined in
 * docs/BENCHMARKS.md). Tested by tests/unit/test_tasks.c (needle depth, length within 2%). */
#include "synth.h"

#include "../common.h"

#include <stdio.h>
#include <string.h>

static const char *const INTRO =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n";
static const char *const PREFIX = "The pass key is";

int task_passkey(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                 task_sample *out) {
    memset(out, 0, sizeof *out);
    synth_rng rng;
    synth_seed(&rng, seed, 1);
    int key = 10000 + synth_below(&rng, 90000);
    if (depth < 0) depth = synth_unit(&rng);
    char needle[128], ans[16];
    snprintf(needle, sizeof needle, "The pass key is %d. Remember it. %d is the pass key. ", key, key);
    snprintf(ans, sizeof ans, "%d", key);
    synth_hay h = {.head = INTRO, .tail = "\nWhat is the pass key? The pass key is", .n_needles = 1};
    h.needle[0] = needle;
    h.depth[0] = depth;
    int st = synth_haystack(tok, ctx_tokens, &h, out);
    if (st) {
        task_sample_free(out);
        return st;
    }
    synth_names(out, "passkey", ctx_tokens, seed);
    out->prefix_len = strlen(PREFIX);
    const char *a = ans;
    synth_answers(out, &a, 1);
    out->metric = TASK_METRIC_FIRST_INT;
    out->max_new_tokens = 8;
    return OKV_OK;
}
