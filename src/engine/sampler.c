/* sampler.c — greedy, temperature, top-k and top-p sampling over scratch sized once per
 * vocabulary; top-k is a quickselect and top-p sorts only the tokens that can reach the nucleus.
 * Tested by tests/unit/test_sampler.c. */
#include "sampler.h"

#include "../common.h"

#include <math.h>
#include <string.h>

void rng_seed(okv_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = okv_splitmix64(&x);
}

void rng_seed_step(okv_rng *r, uint64_t seed, uint64_t step) {
    /* Two splitmix rounds decorrelate neighbouring seeds and steps before seeding the state. */
    uint64_t x = seed;
    uint64_t key = okv_splitmix64(&x);
    x = key ^ (step * 0xd1b54a32d192ed03ull);
    rng_seed(r, okv_splitmix64(&x));
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(okv_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double rng_uniform(okv_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

int sampler_init(okv_sampler *s, int n_vocab) {
    memset(s, 0, sizeof *s);
    s->n_vocab = n_vocab;
    s->prob = okv_alloc(sizeof(float) * (size_t)n_vocab);
    s->cand = okv_alloc(sizeof(int32_t) * (size_t)n_vocab);
    if (!s->prob || !s->cand) {
        sampler_free(s);
        return okv_fail(OKV_ERR_NOMEM, "cannot allocate sampler scratch for %d tokens", n_vocab);
    }
    return OKV_OK;
}

void sampler_free(okv_sampler *s) {
    okv_free_mem(s->prob);
    okv_free_mem(s->cand);
    memset(s, 0, sizeof *s);
}

int32_t sampler_argmax(const float *logits, int n) {
    int32_t best = 0;
    float bv = -INFINITY;
    bool found = false;
    for (int i = 0; i < n; i++) {
        /* Strictly greater keeps the first (lowest) id among equals; NaN compares false. */
        if (logits[i] > bv || (!found && logits[i] == bv)) {
            bv = logits[i];
            best = i;
            found = true;
        }
    }
    return best;
}

/* The total order candidates are ranked by: higher probability first, then lower id. */
static inline bool better(const float *p, int32_t a, int32_t b) {
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

/* Sorts a[0..n) best first, in place: a heapsort, because qsort may allocate a buffer and this
 * runs every token. */
static void sort_ranked(const float *p, int32_t *a, int n) {
    /* A heap whose root is the candidate ranked last; each pass moves the root to the end. */
    for (int end = n, start = n / 2 - 1;;) {
        int root;
        if (start >= 0) {
            root = start--;
        } else {
            if (--end <= 0) return;
            int32_t t = a[0];
            a[0] = a[end];
            a[end] = t;
            root = 0;
        }
        for (;;) {
            int child = 2 * root + 1;
            if (child >= end) break;
            if (child + 1 < end && better(p, a[child], a[child + 1])) child++;
            if (!better(p, a[root], a[child])) break;
            int32_t t = a[root];
            a[root] = a[child];
            a[child] = t;
            root = child;
        }
    }
}

/* Moves the k best of a[0..n) to a[0..k) (in no particular order): Hoare quickselect with a
 * median-of-three pivot, average O(n). */
static void select_top(const float *p, int32_t *a, int n, int k) {
    int lo = 0, hi = n - 1;
    const int kth = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int32_t x = a[lo], y = a[mid], z = a[hi], piv;
        if (better(p, x, y)) piv = better(p, y, z) ? y : (better(p, x, z) ? z : x);
        else piv = better(p, x, z) ? x : (better(p, y, z) ? z : y);
        int i = lo, j = hi;
        while (i <= j) {
            while (better(p, a[i], piv)) i++;
            while (better(p, piv, a[j])) j--;
            if (i <= j) {
                int32_t t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (kth <= j) hi = j;
        else if (kth >= i) lo = i;
        else break;
    }
}

/* prob[j] = exp((l_j - max) / T); NaN logits get 0. Returns the sum. */
static double softmax_unnorm(float *prob, const float *logits, int n, float temp) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    if (!(mx > -INFINITY)) { /* no finite logit: all the mass on the argmax */
        memset(prob, 0, sizeof(float) * (size_t)n);
        prob[sampler_argmax(logits, n)] = 1.0f;
        return 1.0;
    }
    const float inv_t = 1.0f / temp;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        float e = l == l ? expf((l - mx) * inv_t) : 0.0f;
        prob[i] = e;
        sum += e;
    }
    return sum;
}

/* Candidates whose probability can be inside the nucleus: bucket tokens by binary exponent,
 * find the highest buckets holding mass >= target, keep those tokens. Every token ranked above
 * the nucleus cut lies in them, so sorting only them is exact. */
static int gather_nucleus(const float *prob, int n, double target, int32_t *cand) {
    enum { NB = 64 };
    double mass[NB] = {0};
    for (int i = 0; i < n; i++) {
        if (prob[i] <= 0.0f) continue;
        int e;
        frexpf(prob[i], &e);
        int b = OKV_MIN(OKV_MAX(-e, 0), NB - 1);
        mass[b] += prob[i];
    }
    int cut = NB - 1;
    double cum = 0.0;
    for (int b = 0; b < NB; b++) {
        cum += mass[b];
        if (cum >= target) {
            cut = b;
            break;
        }
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (prob[i] <= 0.0f) continue;
        int e;
        frexpf(prob[i], &e);
        if (OKV_MIN(OKV_MAX(-e, 0), NB - 1) <= cut) cand[m++] = i;
    }
    return m;
}

int sampler_candidates(okv_sampler *s, const float *logits, const okv_sample_params *p) {
    OKV_ASSERT(p->temperature > 0.0f);
    const int n = s->n_vocab;
    float *prob = s->prob;
    int32_t *cand = s->cand;
    double total = softmax_unnorm(prob, logits, n, p->temperature);
    const bool use_k = p->top_k > 0 && p->top_k < n;
    const bool use_p = p->top_p < 1.0f;
    int m;
    if (use_k) {
        for (int i = 0; i < n; i++) cand[i] = i;
        select_top(prob, cand, n, p->top_k);
        m = p->top_k;
        total = 0.0;
        for (int i = 0; i < m; i++) total += prob[cand[i]];
    } else if (use_p) {
        m = gather_nucleus(prob, n, (double)p->top_p * total, cand);
    } else {
        for (int i = 0; i < n; i++) cand[i] = i;
        return n;
    }
    sort_ranked(prob, cand, m);
    if (use_p) {
        const double target = (double)p->top_p * total;
        double cum = 0.0;
        for (int i = 0; i < m; i++) {
            cum += prob[cand[i]];
            if (cum >= target) return i + 1;
        }
    }
    return m;
}

int32_t sampler_sample(okv_sampler *s, const float *logits, const okv_sample_params *p,
                       okv_rng *rng) {
    if (p->temperature <= 0.0f) return sampler_argmax(logits, s->n_vocab);
    int m = sampler_candidates(s, logits, p);
    double total = 0.0;
    for (int i = 0; i < m; i++) total += s->prob[s->cand[i]];
    double u = rng_uniform(rng) * total;
    double cum = 0.0;
    int32_t last = s->cand[0];
    for (int i = 0; i < m; i++) {
        float pr = s->prob[s->cand[i]];
        if (pr <= 0.0f) continue;
        cum += pr;
        last = s->cand[i];
        if (u < cum) return last;
    }
    return last; /* u landed in the rounding gap at the very end */
}
