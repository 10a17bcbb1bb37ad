/* test_omnikv.c — the OmniKV invariants of DESIGN §4 on a generated 8-layer model and on the real
 * SmolLM2: with k >= N every sparse layer sees all prompt rows in order, so tokens and logits
 * equal the dense policy BITWISE (batch 1, and batch 4 with different prompt lengths; bank and
 * no-bank; f16, f32, q8_0 and q4_0 KV); with a small k the sparse path really reads k + tail
 * rows and the output changes; q8_0 and q4_0 KV shrink the bank to 34/64 and 18/64 of f16's and
 * gather it staged or in place alike. */
#include "common.h"
#include "engine/engine.h"
#include "model/genmodel.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STEPS 10

typedef struct run_out {
    float *logits;  /* [STEPS+1][n_seq][V] */
    int32_t *tokens;/* [STEPS+1][n_seq] */
    okv_metrics metrics;
    uint64_t staged_rows, cached_rows, saved_bytes; /* engine_row_cache_stats */
} run_out;

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* A prompt of n random ids from seed (no id among the first 3 or the last 300 of V). */
static int32_t *prompt_ids(int n, int V, uint64_t seed) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    OKV_ASSERT(ids);
    uint64_t r = seed;
    for (int i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((r >> 33) % (uint64_t)(V - 300)) + 3;
    }
    return ids;
}

/* Prefill each sequence in its slot, then STEPS batched greedy decode steps. `over`, when not NULL,
 * replaces every slot's selection after its start. */
static run_out run(const okv_model *m, const okv_run_config *rc, int n_seq, const int *lens,
                   uint64_t seed, const okv_selection *over) {
    const int V = m->cfg.n_vocab;
    okv_engine e;
    TEST_OK(engine_init(&e, m, rc, 0, m->cfg.n_layers, n_seq));
    run_out o = {.logits = calloc((size_t)(STEPS + 1) * n_seq * V, sizeof(float)),
                 .tokens = calloc((size_t)(STEPS + 1) * n_seq, sizeof(int32_t))};
    int slots[8];
    int32_t cur[8];
    for (int s = 0; s < n_seq; s++) {
        slots[s] = s;
        int32_t *ids = prompt_ids(lens[s], V, seed + (uint64_t)s * 7919);
        TEST_OK(engine_seq_start(&e, s, lens[s]));
        if (over) TEST_OK(engine_seq_set_selection(&e, s, over));
        for (int p = 0; p < lens[s]; p += rc->prefill_chunk) {
            int n = OKV_MIN(rc->prefill_chunk, lens[s] - p);
            engine_embed(&e, ids + p, n);
            TEST_OK(engine_prefill(&e, s, p, n));
            if (p + n == lens[s])
                memcpy(o.logits + (size_t)s * V, engine_head(&e, n - 1, 1), sizeof(float) * (size_t)V);
        }
        cur[s] = o.tokens[s] = argmax(o.logits + (size_t)s * V, V);
        free(ids);
    }
    engine_metrics_reset(&e);
    for (int t = 1; t <= STEPS; t++) {
        engine_embed(&e, cur, n_seq);
        TEST_OK(engine_decode(&e, slots, n_seq));
        float *lg = o.logits + (size_t)t * n_seq * V;
        memcpy(lg, engine_head(&e, 0, n_seq), sizeof(float) * (size_t)n_seq * V);
        for (int s = 0; s < n_seq; s++) cur[s] = o.tokens[t * n_seq + s] = argmax(lg + (size_t)s * V, V);
    }
    o.metrics = e.metrics;
    engine_row_cache_stats(&e, &o.staged_rows, &o.cached_rows, &o.saved_bytes);
    engine_free(&e);
    return o;
}

/* One prompt of n tokens (slot 0's prompt in run()), a decode of STEPS tokens fed with `tokens` (a
 * previous run's), a rewind to the prompt, and the same decode again: returns the second decode's
 * logits at [1..STEPS] ([0], the prefill's, is left zero). */
static float *rerun_after_rewind(const okv_model *m, const okv_run_config *rc, int n, uint64_t seed,
                                 const int32_t *tokens) {
    const int V = m->cfg.n_vocab;
    okv_engine e;
    TEST_OK(engine_init(&e, m, rc, 0, m->cfg.n_layers, 1));
    float *logits = calloc((size_t)(STEPS + 1) * V, sizeof(float));
    int32_t *ids = prompt_ids(n, V, seed);
    TEST_OK(engine_seq_start(&e, 0, n));
    for (int p = 0; p < n; p += rc->prefill_chunk) {
        int c = OKV_MIN(rc->prefill_chunk, n - p);
        engine_embed(&e, ids + p, c);
        TEST_OK(engine_prefill(&e, 0, p, c));
    }
    for (int pass = 0; pass < 2; pass++) {
        engine_seq_rewind(&e, 0, n);
        for (int t = 1; t <= STEPS; t++) {
            engine_embed(&e, &tokens[t - 1], 1);
            TEST_OK(engine_decode(&e, (int[]){0}, 1));
            memcpy(logits + (size_t)t * V, engine_head(&e, 0, 1), sizeof(float) * (size_t)V);
        }
    }
    free(ids);
    engine_free(&e);
    return logits;
}

static void free_out(run_out *o) {
    free(o->logits);
    free(o->tokens);
}

/* Compares an OmniKV configuration with the dense policy on the same prompts. */
static void check_exact(const char *what, const okv_model *m, okv_run_config rc, int n_seq,
                        const int *lens) {
    const int V = m->cfg.n_vocab;
    okv_run_config dense = rc;
    dense.policy = POLICY_DENSE;
    run_out a = run(m, &dense, n_seq, lens, 42, NULL), b = run(m, &rc, n_seq, lens, 42, NULL);
    size_t n = (size_t)(STEPS + 1) * n_seq;
    bool tok_eq = !memcmp(a.tokens, b.tokens, n * sizeof(int32_t));
    bool log_eq = !memcmp(a.logits, b.logits, n * V * sizeof(float));
    printf("%s: k >= N vs dense over %d steps x %d seqs: tokens %s, logits %s; sparse rows read %llu\n",
           what, STEPS, n_seq, tok_eq ? "equal" : "DIFFER", log_eq ? "bitwise equal" : "DIFFER",
           (unsigned long long)b.metrics.rows_sparse);
    TEST_CHECK(tok_eq && log_eq, "%s: OmniKV with k >= N is not bitwise equal to dense", what);
    TEST_CHECK(b.metrics.rows_sparse > 0, "%s: no sparse layer ran", what);
    free_out(&a);
    free_out(&b);
}

/* Two configurations that must give the same tokens and logits bit for bit (another backend,
 * another way of reading bank rows) on the same prompts. */
static void check_same(const char *what, const okv_model *m, okv_run_config a_rc, okv_run_config b_rc,
                       int n_seq, const int *lens) {
    const int V = m->cfg.n_vocab;
    run_out a = run(m, &a_rc, n_seq, lens, 11, NULL), b = run(m, &b_rc, n_seq, lens, 11, NULL);
    size_t n = (size_t)(STEPS + 1) * n_seq;
    bool tok_eq = !memcmp(a.tokens, b.tokens, n * sizeof(int32_t));
    bool log_eq = !memcmp(a.logits, b.logits, n * V * sizeof(float));
    printf("%s over %d steps x %d seqs: tokens %s, logits %s; sparse rows %llu vs %llu; staged "
           "rows %llu, from the row cache %llu\n", what, STEPS, n_seq, tok_eq ? "equal" : "DIFFER",
           log_eq ? "bitwise equal" : "DIFFER", (unsigned long long)a.metrics.rows_sparse,
           (unsigned long long)b.metrics.rows_sparse, (unsigned long long)b.staged_rows,
           (unsigned long long)b.cached_rows);
    TEST_CHECK(tok_eq && log_eq && a.metrics.rows_sparse == b.metrics.rows_sparse, "%s differs", what);
    /* With the row cache the steps after a sequence's first take the rows consecutive index sets
     * share from the cache (the exact count is test_backend_ops's), a sequence's first step
     * none; without it, none at all. */
    const bool cache = b_rc.row_cache && b_rc.bank_gather != BANK_GATHER_INPLACE && b.staged_rows;
    TEST_CHECK(cache ? b.cached_rows > 0 && b.cached_rows < b.staged_rows : b.cached_rows == 0,
               "%s: %llu of %llu staged rows from the row cache", what,
               (unsigned long long)b.cached_rows, (unsigned long long)b.staged_rows);
    free_out(&a);
    free_out(&b);
}

/* backend / bank_gather variants of rc that must all equal the CPU backend reading in place. */
static void check_backends(const char *name, const okv_model *m, okv_run_config rc, int n_seq,
                           const int *lens) {
    okv_run_config base = rc, strict = rc, staged = rc;
    base.backend = OKV_BACKEND_CPU, base.bank_gather = BANK_GATHER_INPLACE;
    strict.backend = OKV_BACKEND_CPU_STRICT; /* auto: staged gathers, as on a GPU */
    staged.backend = OKV_BACKEND_CPU, staged.bank_gather = BANK_GATHER_STAGED;
    char what[160];
    snprintf(what, sizeof what, "%s: cpu-strict (staged) vs cpu (in place)", name);
    check_same(what, m, base, strict, n_seq, lens);
    snprintf(what, sizeof what, "%s: cpu staged vs in place", name);
    check_same(what, m, base, staged, n_seq, lens);
    staged.row_cache = false;
    snprintf(what, sizeof what, "%s: cpu staged without the row cache vs in place", name);
    check_same(what, m, base, staged, n_seq, lens);
    strict.bank_gather = BANK_GATHER_INPLACE;
    snprintf(what, sizeof what, "%s: cpu-strict in place vs cpu", name);
    check_same(what, m, base, strict, n_seq, lens);
}

static okv_run_config omnikv_config(int n_filters, const int *filters) {
    okv_run_config rc;
    config_defaults(&rc);
    rc.policy = POLICY_OMNIKV;
    rc.n_filter_layers = n_filters;
    memcpy(rc.filter_layers, filters, sizeof(int) * (size_t)n_filters);
    rc.num_wait_load_layers = 1;
    rc.num_selected = 1e6; /* k >= N */
    rc.max_context_len = 1024;
    rc.prefill_chunk = 64;
    rc.threads = 2;
    return rc;
}

/* A quantized KV type's rows really are stored and read (the logits move off f16's), and the
 * bank and the KV cache hold `bytes` per 32 elements where f16 holds 64. */
static void check_quant_kv(const okv_model *m, const okv_run_config *f16, const okv_run_config *qc, int bytes) {
    const char *name = okv_type_name(qc->kv_type);
    run_out a = run(m, f16, 1, (int[]){120}, 3, NULL), b = run(m, qc, 1, (int[]){120}, 3, NULL);
    const size_t V = (size_t)m->cfg.n_vocab;
    TEST_CHECK(memcmp(a.logits, b.logits, (STEPS + 1) * V * sizeof(float)) != 0,
               "%s KV gave f16 KV's logits bitwise: %s rows were not used", name, name);
    okv_engine e16, eq;
    uint64_t w, kv16, kvq, bank16, bankq;
    TEST_OK(engine_init(&e16, m, f16, 0, m->cfg.n_layers, 2));
    TEST_OK(engine_init(&eq, m, qc, 0, m->cfg.n_layers, 2));
    engine_memory(&e16, 1000, 24, &w, &kv16, &bank16);
    engine_memory(&eq, 1000, 24, &w, &kvq, &bankq);
    TEST_CHECK(bank16 > 0 && bankq * 64 == bank16 * (uint64_t)bytes && kvq * 64 == kv16 * (uint64_t)bytes,
               "%s bank %llu / KV %llu bytes against f16's %llu / %llu: not %d/64", name,
               (unsigned long long)bankq, (unsigned long long)kvq, (unsigned long long)bank16,
               (unsigned long long)kv16, bytes);
    printf("%s KV: logits differ from f16's; bank %llu bytes (f16 %llu), KV cache and tails %llu "
           "(f16 %llu)\n", name, (unsigned long long)bankq, (unsigned long long)bank16,
           (unsigned long long)kvq, (unsigned long long)kv16);
    engine_free(&e16);
    engine_free(&eq);
    free_out(&a);
    free_out(&b);
}

int main(void) {
    okv_log_init(0);
    char path[256];
    snprintf(path, sizeof path, "/tmp/omnikv-test-omnikv-%d.gguf", (int)getpid());
    TEST_OK(genmodel_write(path, "tiny", 8, OKV_TYPE_Q8_0, 7));
    okv_model m;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
    TEST_OK(model_load(&m, path, &mo));
    unlink(path);
    const int filters_tiny[2] = {1, 4};
    okv_run_config rc = omnikv_config(2, filters_tiny);
    check_exact("tiny batch 1", &m, rc, 1, (int[]){150});
    check_exact("tiny batch 4", &m, rc, 4, (int[]){150, 37, 300, 64});
    rc.real_offload = false;
    check_exact("tiny batch 4 without bank", &m, rc, 4, (int[]){150, 37, 300, 64});
    rc.real_offload = true;
    rc.kv_type = OKV_TYPE_F32;
    check_exact("tiny batch 4 f32 KV", &m, rc, 4, (int[]){150, 37, 300, 64});
    rc.kv_type = OKV_TYPE_F16;
    rc.selector = SELECTOR_SOFTMAX_BEFORE_LAST;
    check_exact("tiny softmax_before_last", &m, rc, 2, (int[]){90, 200});
    rc.selector = SELECTOR_EXP;
    check_exact("tiny exp window", &m, rc, 2, (int[]){90, 200});
    rc.selector = SELECTOR_LAST;

    /* Small k: sparse layers read k selected rows + the tail; the output departs from dense. */
    rc.num_selected = 16;
    run_out s = run(&m, &rc, 1, (int[]){300}, 42, NULL);
    okv_run_config dense = rc;
    dense.policy = POLICY_DENSE;
    run_out d = run(&m, &dense, 1, (int[]){300}, 42, NULL);
    /* 3 sparse layers (3, 6, 7) per step; at step t the tail holds t+1 rows (t = 0..STEPS-1). */
    uint64_t want = 0;
    for (int t = 0; t < STEPS; t++) want += 3ull * (16 + t + 1);
    TEST_CHECK(s.metrics.rows_sparse == want, "k=16 sparse rows %llu, expected %llu",
               (unsigned long long)s.metrics.rows_sparse, (unsigned long long)want);
    size_t V = (size_t)m.cfg.n_vocab;
    TEST_CHECK(!memcmp(s.logits, d.logits, V * sizeof(float)), "prefill must stay dense");
    TEST_CHECK(memcmp(s.logits + V, d.logits + V, V * sizeof(float)) != 0,
               "k=16 of 300 gave dense logits: the sparse path did not run");
    printf("k=16: sparse rows read %llu (expected %llu); first-token logits equal dense (prefill is "
           "never sparse), later logits differ\n",
           (unsigned long long)s.metrics.rows_sparse, (unsigned long long)want);
    free_out(&s);
    free_out(&d);
    check_backends("tiny k=16 batch 4", &m, rc, 4, (int[]){150, 37, 300, 64});
    rc.selector = SELECTOR_EXP;
    check_backends("tiny k=16 exp window batch 2", &m, rc, 2, (int[]){90, 200});
    rc.selector = SELECTOR_LAST;

    /* A slot's selection set after its start (eval's variants) acts exactly as a run config with
     * the same settings: budget, selector and kept ends. */
    int st;
    okv_run_config want_rc = rc;
    want_rc.num_selected = 24;
    want_rc.selector = SELECTOR_SOFTMAX_BEFORE_LAST;
    want_rc.keep_first = 2;
    want_rc.keep_last = 3;
    okv_run_config wide = rc;
    wide.num_selected = 1e6;
    const okv_selection over = {.k = 24, .selector = SELECTOR_SOFTMAX_BEFORE_LAST, .keep_first = 2,
                                .keep_last = 3};
    run_out a = run(&m, &want_rc, 2, (int[]){300, 120}, 5, NULL);
    run_out b = run(&m, &wide, 2, (int[]){300, 120}, 5, &over);
    TEST_CHECK(!memcmp(a.logits, b.logits, (size_t)(STEPS + 1) * 2 * V * sizeof(float)) &&
               a.metrics.rows_sparse == b.metrics.rows_sparse,
               "a slot's selection override differs from the same settings in the run config");
    printf("selection override (k 24, softmax_before_last, keep 2 + 3) equals the config run "
           "bitwise; sparse rows %llu\n", (unsigned long long)b.metrics.rows_sparse);
    free_out(&a);
    free_out(&b);
    /* Several decode variants share one prefill (eval): after a rewind a window selector sees
     * the prompt's last queries again, not the previous variant's decode queries, so decoding
     * twice gives the same logits as a fresh run. `uniform` weighs every query alike; under
     * `exp` the overwritten queries are 7+ steps old and weigh 2^-7 or less, too little to move
     * the index set of this test. */
    okv_run_config wrc = rc;
    wrc.selector = SELECTOR_UNIFORM;
    wrc.num_selected = 24;
    run_out fresh = run(&m, &wrc, 1, (int[]){300}, 9, NULL);
    float *again = rerun_after_rewind(&m, &wrc, 300, 9, fresh.tokens);
    TEST_CHECK(!memcmp(fresh.logits + V, again + V, (size_t)STEPS * V * sizeof(float)),
               "uniform window selector: decoding again after a rewind differs from a fresh run");
    printf("uniform window, k 24: a decode after rewinding to the prompt equals a fresh run bitwise\n");
    free_out(&fresh);
    free(again);
    /* fill=synthetic: prompt positions before the last hold engine_synth_rows' K and V where a
     * prefill puts them (layer 0's KV cache, sparse layer 3's bank rows), the last position is
     * computed; results do not depend on the chunking, and k >= N still equals dense bitwise. */
    {
        okv_run_config sy = rc;
        sy.fill_synthetic = true;
        sy.kv_type = OKV_TYPE_F32; /* rows stored as generated */
        sy.seed = 77;
        const int N = 150, kvd = m.cfg.n_kv_heads * m.cfg.head_dim;
        okv_engine e;
        TEST_OK(engine_init(&e, &m, &sy, 0, m.cfg.n_layers, 1));
        TEST_OK(engine_seq_start(&e, 0, N));
        int32_t *ids = prompt_ids(N, m.cfg.n_vocab, 1);
        for (int p = 0; p < N; p += sy.prefill_chunk) {
            const int n = OKV_MIN(sy.prefill_chunk, N - p);
            engine_embed(&e, ids + p, n);
            TEST_OK(engine_prefill(&e, 0, p, n));
        }
        float *want = malloc(sizeof(float) * 2 * (size_t)N * kvd), *got = malloc(sizeof(float) * 2 * (size_t)kvd);
        int bad = 0, last_equal = 0;
        for (int pass = 0; pass < 2; pass++) {
            const int l = pass == 0 ? 0 : 3;
            TEST_CHECK(e.plan.role[l] == (pass == 0 ? ROLE_DENSE : ROLE_SPARSE), "layer %d's role", l);
            engine_synth_rows(sy.seed, l, 0, N, kvd, want, want + (size_t)N * kvd);
            okv_kv_view kv = pass == 0 ? (okv_kv_view){.k = e.cache_k[l], .v = e.cache_v[l], .stride = kvd}
                                       : bank_view(&e.bank, e.plan.group[l], l, 0, NULL, N);
            for (int p = 0; p < N; p++) {
                e.be.copy(&e.be, got, (const float *)kv.k + (size_t)p * kv.stride, sizeof(float) * kvd,
                          OKV_COPY_D2H, OKV_STREAM_SYNC);
                e.be.copy(&e.be, got + kvd, (const float *)kv.v + (size_t)p * kv.stride, sizeof(float) * kvd,
                          OKV_COPY_D2H, OKV_STREAM_SYNC);
                const bool same = !memcmp(got, want + (size_t)p * kvd, sizeof(float) * kvd) &&
                                  !memcmp(got + kvd, want + (size_t)(N + p) * kvd, sizeof(float) * kvd);
                if (p < N - 1) bad += !same;
                else last_equal += same;
            }
        }
        TEST_CHECK(bad == 0 && last_equal == 0, "fill=synthetic: %d generated rows misplaced, the last "
                   "position generated in %d of 2 layers instead of computed", bad, last_equal);
        printf("fill=synthetic: %d positions x 2 layers (KV cache, bank) hold the generated rows, the "
               "last position is computed\n", N - 1);
        free(want);
        free(got);
        free(ids);
        engine_free(&e);
        okv_run_config sy48 = sy;
        sy48.prefill_chunk = 48;
        check_same("fill=synthetic, k=16: prefill chunks of 48 vs 64", &m, sy, sy48, 2, (int[]){150, 37});
        okv_run_config all = sy;
        all.num_selected = 1e6; /* k >= N (sy has rc's k = 16) */
        check_exact("fill=synthetic", &m, all, 2, (int[]){150, 37});
        okv_run_config win = sy;
        win.selector = SELECTOR_UNIFORM;
        st = config_validate(&win, m.cfg.n_layers);
        TEST_CHECK(st == OKV_ERR_USAGE && strstr(okv_last_error(), "fill=synthetic"),
                   "fill=synthetic with a window selector: %d %s", st, okv_last_error());
    }
    /* q8_0 and q4_0 KV store each head as 32-element blocks: tiny's 16-wide heads are refused. */
    okv_engine e;
    okv_run_config q8 = rc;
    q8.kv_type = OKV_TYPE_Q8_0;
    st = engine_init(&e, &m, &q8, 0, m.cfg.n_layers, 1);
    TEST_CHECK(st == OKV_ERR_USAGE && strstr(okv_last_error(), "head_dim is 16"),
               "q8_0 KV with head_dim 16: %d %s", st, okv_last_error());
    q8.kv_type = OKV_TYPE_Q4_0;
    st = engine_init(&e, &m, &q8, 0, m.cfg.n_layers, 1);
    TEST_CHECK(st == OKV_ERR_USAGE && strstr(okv_last_error(), "kv_type=q4_0") && strstr(okv_last_error(), "head_dim is 16"),
               "q4_0 KV with head_dim 16: %d %s", st, okv_last_error());
    /* A window selector cannot replace `last`: the engine kept no window queries. */
    TEST_OK(engine_init(&e, &m, &rc, 0, m.cfg.n_layers, 1));
    TEST_OK(engine_seq_start(&e, 0, 50));
    st = engine_seq_set_selection(&e, 0, &(okv_selection){.k = 8, .selector = SELECTOR_EXP});
    TEST_CHECK(st == OKV_ERR_USAGE && strstr(okv_last_error(), "window"),
               "window selector over last: %d %s", st, okv_last_error());
    engine_free(&e);
    model_free(&m);

    /* The real model with the paper-style filter layers. */
    char real[1024];
    test_model_path(real, sizeof real);
    TEST_OK(model_load(&m, real, &mo));
    const int filters_real[3] = {2, 8, 18};
    rc = omnikv_config(3, filters_real);
    check_exact("SmolLM2 batch 1", &m, rc, 1, (int[]){200});
    check_exact("SmolLM2 batch 4", &m, rc, 4, (int[]){200, 45, 130, 77});
    q8 = rc;
    q8.kv_type = OKV_TYPE_Q8_0;
    check_exact("SmolLM2 batch 4 q8_0 KV", &m, q8, 4, (int[]){200, 45, 130, 77});
    q8.real_offload = false;
    check_exact("SmolLM2 batch 2 q8_0 KV without bank", &m, q8, 2, (int[]){200, 77});
    q8.real_offload = true;
    okv_run_config q4 = q8;
    q4.kv_type = OKV_TYPE_Q4_0;
    check_exact("SmolLM2 batch 4 q4_0 KV", &m, q4, 4, (int[]){200, 45, 130, 77});
    q4.real_offload = false;
    check_exact("SmolLM2 batch 2 q4_0 KV without bank", &m, q4, 2, (int[]){200, 77});
    q4.real_offload = true;
    check_quant_kv(&m, &rc, &q8, 34);
    check_quant_kv(&m, &rc, &q4, 18);
    /* k = 64 so selection matters; dense too */
    rc.num_selected = 64;
    okv_run_config strict = rc;
    strict.backend = OKV_BACKEND_CPU_STRICT;
    check_same("SmolLM2 k=64 batch 1: cpu-strict (staged) vs cpu (in place)", &m, rc, strict, 1, (int[]){200});
    check_backends("SmolLM2 k=64 batch 4", &m, rc, 4, (int[]){200, 45, 130, 77});
    q8 = rc;
    q8.kv_type = OKV_TYPE_Q8_0;
    check_backends("SmolLM2 k=64 batch 2 q8_0 KV", &m, q8, 2, (int[]){200, 77});
    q8.kv_type = OKV_TYPE_Q4_0;
    check_backends("SmolLM2 k=64 batch 2 q4_0 KV", &m, q8, 2, (int[]){200, 77});
    rc.policy = POLICY_DENSE;
    strict = rc;
    strict.backend = OKV_BACKEND_CPU_STRICT;
    check_same("SmolLM2 dense batch 4: cpu-strict vs cpu", &m, rc, strict, 4, (int[]){200, 45, 130, 77});
    model_free(&m);
    return test_summary();
}
