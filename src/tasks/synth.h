/* synth.h — what the generated tasks share: a seeded generator, a growable string, the search for
 * the filler count that brings a prompt to a token length, and the grass haystack with needles at
 * given depths. Private to src/tasks/; tested through tests/unit/test_tasks.c. */
#ifndef OKV_TASKS_SYNTH_H
#define OKV_TASKS_SYNTH_H

#include "tasks.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define SYNTH_MAX_NEEDLES 8

/* splitmix64: one stream per (seed, purpose) so adding a draw to one task moves no other. */
typedef struct synth_rng { uint64_t s; } synth_rng;
void synth_seed(synth_rng *r, uint64_t seed, uint64_t stream);
uint64_t synth_next(synth_rng *r);
int synth_below(synth_rng *r, int n);  /* uniform in [0, n) */
double synth_unit(synth_rng *r);       /* uniform in [0, 1] in steps of 1/1000 */

typedef struct sbuf { char *p; size_t len, cap; } sbuf;
void sbuf_put(sbuf *b, const char *s, size_t n);
void sbuf_puts(sbuf *b, const char *s);
void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *sbuf_take(sbuf *b); /* the string (never NULL); b is empty afterwards */

/* Tokens the engine sees for text: BOS when the vocabulary adds one, no special-token parsing. */
int synth_count(const okv_tokenizer *tok, const char *text);

/* build(ctx, m) returns the malloc'd prompt with m filler units. Finds the largest m >= 0 whose
 * prompt has at most ctx_tokens tokens (assuming the count grows with m), returns that prompt,
 * m and its count. unit_guess is a rough tokens-per-unit to start the search. */
typedef char *(*synth_build_fn)(void *ctx, int m);
int synth_fit(const okv_tokenizer *tok, int ctx_tokens, double unit_guess, synth_build_fn build,
              void *ctx, char **prompt, int *m, int *n_tokens);

/* head, then m sentences of the grass filler with needle[i] placed before sentence
 * round(depth[i] * m) (in the given order where they meet), then tail. */
typedef struct synth_hay {
    const char *head, *tail;
    const char *needle[SYNTH_MAX_NEEDLES];
    double depth[SYNTH_MAX_NEEDLES];
    int n_needles;
} synth_hay;
/* The haystack prompt fitted to ctx_tokens; sets out's prompt, n_tokens, n_filler, needle_at
 * and depth (of needle 0). */
int synth_haystack(const okv_tokenizer *tok, int ctx_tokens, const synth_hay *h, task_sample *out);

/* Sets the answers of out to copies of the given strings. */
void synth_answers(task_sample *out, const char *const *answers, int n);
/* "name-ctx-seed" ids and a copy of the task name as the dataset. */
void synth_names(task_sample *out, const char *task, int ctx_tokens, uint64_t seed);

#endif
