/* tasks.h — built-in long-context tasks, generated in C from a seed so every run and every rank
 * sees the same samples, and their scorers (BENCHMARKS.md). Tested by tests/unit/test_tasks.c
 * (needle position, length within 2% of the request, scorers on hand-made answers). */
#ifndef OKV_TASKS_H
#define OKV_TASKS_H

#include "../model/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct task_sample {
    char *prompt;       /* malloc'd; plain text (no chat template) */
    char *answer;       /* expected value(s); for several, separated by '\n' */
    int n_tokens;       /* prompt length in tokens */
    double depth;       /* where the needle sits (fraction of the haystack) */
    int max_new_tokens; /* what the task needs to answer */
} task_sample;

void task_sample_free(task_sample *s);

/* Passkey: the standard haystack with "The pass key is K..." at depth (0..1; < 0 random),
 * a 5-digit K, padded to ctx_tokens tokens. */
int task_passkey(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                 task_sample *out);

/* The first integer in text equals the answer: 100 or 0. */
double task_score_first_int(const char *text, const char *answer);

#endif
