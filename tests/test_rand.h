/* test_rand.h — the kernel tests' random inputs: one xorshift64 stream per test program (so a
 * failure replays), uniform floats from its top bits, and activation-like fills. */
#ifndef OKV_TEST_RAND_H
#define OKV_TEST_RAND_H

#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline uint32_t rng_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static inline float rng_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(rng_u32() >> 8) / 16777216.0f;
}

/* Mostly small values with the odd outlier, as activations look. */
static inline void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_uniform(-scale, scale) * (rng_u32() % 50 == 0 ? 8.0f : 1.0f);
}

#endif
