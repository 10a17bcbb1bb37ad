/* sampler.h — next-token choice from logits: greedy (argmax), or temperature with optional
 * top-k and top-p, driven by xoshiro256** generators keyed by (request seed, token index) so a
 * seed fixes the sequence wherever it is sampled.
 * Tested by tests/unit/test_sampler.c (tie rule, hand-computed cuts, frequencies vs softmax). */
#ifndef OKV_SAMPLER_H
#define OKV_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct okv_sample_params {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
} okv_sample_params;

/* xoshiro256**, seeded through splitmix64 (any seed, 0 included, gives a good state). */
typedef struct okv_rng {
    uint64_t s[4];
} okv_rng;

void rng_seed(okv_rng *r, uint64_t seed);
/* The generator of draw number `step` of a stream: counter-based, so whichever rank holds the
 * logits can sample token n of a sequence from (seed, n) alone, with no state carried between
 * steps or ranks. */
void rng_seed_step(okv_rng *r, uint64_t seed, uint64_t step);
uint64_t rng_next(okv_rng *r);
double rng_uniform(okv_rng *r); /* [0, 1) with 53 random bits */

/* Scratch for one vocabulary, sized once; sampling allocates nothing. */
typedef struct okv_sampler {
    int n_vocab;
    float *prob;   /* [n_vocab] probabilities at the temperature (unnormalised after a cut) */
    int32_t *cand; /* [n_vocab] candidate token ids, most likely first after a cut */
} okv_sampler;

int sampler_init(okv_sampler *s, int n_vocab);
void sampler_free(okv_sampler *s);

/* Index of the largest logit; ties go to the lower id (NaNs are never chosen). */
int32_t sampler_argmax(const float *logits, int n);

/* The candidates sampling draws from: fills s->cand[0..ret) and their s->prob (softmax at the
 * temperature, before renormalisation). top-k keeps the k most likely tokens; top-p then keeps
 * the shortest most-likely-first prefix whose mass reaches top_p of the remaining mass. Ties in
 * probability order by lower id. Without a cut, the candidates are every id in order. Needs
 * temperature > 0. */
int sampler_candidates(okv_sampler *s, const float *logits, const okv_sample_params *p);

/* The next token: argmax when temperature is 0, else one draw from the candidates. */
int32_t sampler_sample(okv_sampler *s, const float *logits, const okv_sample_params *p,
                       okv_rng *rng);

#endif
