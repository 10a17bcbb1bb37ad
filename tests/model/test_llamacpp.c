/* test_llamacpp.c — the engine against llama.cpp on the real SmolLM2 GGUF, by the rule of
 * llamacpp_compare.h: per prompt, the last-position logits within 1.25x llama.cpp's own
 * flash/non-flash spread + 0.1 of the nearer of its two paths, and greedy continuations (32
 * tokens) equal except at a near-tie. Prompts and oracle outputs come from llamacpp_oracle.py,
 * cached under $OMNIKV_CACHE/oracle. Also: the same prompts decoded as one batch give the same
 * tokens as one at a time, with chunked prefill (chunks of 64 and 48).
 * The same rule with kv_type=q8_0 against llama.cpp's q8_0 cache (-ctk q8_0 -ctv q8_0, which
 * llama.cpp runs with flash attention only): there the spread is between that and llama.cpp's
 * non-flash path with a q8_0 K cache (see llamacpp_oracle.py). q4_0 runs by hand only: a 4-bit
 * step turns the ~1e-6 differences of any two correct matmuls into whole steps of K and V, which
 * llama.cpp's two paths (bit-identical up to attention) do not see; on SmolLM2 our own query
 * rounding alone moves the q4_0 logits by 2-9, more than the rule allows. Other files run by hand
 * (`test_llamacpp MODEL NAME [KV]`, e.g. the 8B-shaped stacks of jobs/bench_quants.sh), with no
 * count of whole continuations asked for: see main. SmolLM2 requantized by llama.cpp runs in
 * test_requant_llamacpp. */
#include "llamacpp_compare.h"

/* The whole comparison with KV cache type kv against the oracle in $OMNIKV_CACHE/oracle/name
 * (made by llamacpp_oracle.py with KV_TYPE kv's name when missing): one prompt at a time with
 * prefill chunks of 64 (llamacpp_compare.h's rule), at least min_full of them equal for all their
 * greedy tokens, then all prompts as one batch with chunks of 48, whose greedy tokens must equal
 * the one-at-a-time runs'. */
static void check_case(const char *model_path, const okv_model *m, okv_type kv, const char *name,
                       int min_full) {
    char dir[1024];
    const char *kv_name = okv_type_name(kv);
    printf("---- %s, KV cache %s against llama.cpp's %s cache ----\n", model_path, kv_name, kv_name);
    snprintf(dir, sizeof dir, "%s/oracle/%s", test_cache(), name);
    oracle_ensure(model_path, dir, kv_name);
    const int V = m->cfg.n_vocab;
    oracle_set s;
    oracle_load(&s, dir, V);
    TEST_CHECK(s.n >= 3, "oracle holds %d prompts; expected at least 3", s.n);
    oracle_stats st;
    oracle_compare(m, &s, 64, 4096, kv, ORACLE_EACH_PROMPT, name, &st);

    /* All prompts as one batch: each slot's greedy tokens equal its single-sequence run. */
    okv_run_config rc;
    config_defaults(&rc);
    rc.policy = POLICY_DENSE;
    rc.max_context_len = 4096;
    rc.prefill_chunk = 48;
    rc.max_batch = s.n;
    rc.kv_type = kv;
    okv_engine e;
    TEST_OK(engine_init(&e, m, &rc, 0, m->cfg.n_layers, s.n));
    float *logits = calloc((size_t)s.n * V, sizeof(float));
    int32_t cur[ORACLE_MAX_PROMPTS];
    int slots[ORACLE_MAX_PROMPTS];
    for (int i = 0; i < s.n; i++) {
        oracle_prefill(&e, i, &s.p[i], rc.prefill_chunk, logits);
        cur[i] = oracle_argmax(logits, V);
        slots[i] = i;
    }
    int batch_equal = 0, batch_total = 0;
    for (int step = 0; step < 16; step++) {
        for (int i = 0; i < s.n; i++) {
            if (step < st.compared[i]) {
                batch_total++;
                batch_equal += cur[i] == st.ours[i][step];
            }
        }
        engine_embed(&e, cur, s.n);
        TEST_OK(engine_decode(&e, slots, s.n));
        memcpy(logits, engine_head(&e, 0, s.n), sizeof(float) * (size_t)s.n * V);
        for (int i = 0; i < s.n; i++) cur[i] = oracle_argmax(logits + (size_t)i * V, V);
    }
    printf("batch of %d: %d/%d tokens equal to the one-at-a-time runs\n", s.n, batch_equal, batch_total);
    TEST_CHECK(batch_equal == batch_total, "batched decode differs from single-sequence decode");
    printf("%s: worst last-position logit difference vs llama.cpp %.4f (%.2f of its tolerance); %d "
           "of %d prompts equal for all %d greedy tokens\n", name, st.worst, st.worst_rel, st.full,
           s.n, s.p[0].n_gen);
    TEST_CHECK(st.full >= min_full, "fewer than %d prompts matched llama.cpp for all greedy tokens", min_full);
    engine_free(&e);
    free(logits);
    oracle_free(&s);
}

/* test_llamacpp                       SmolLM2 with f16 and q8_0 KV, as CTest runs it
 * test_llamacpp MODEL.gguf NAME [KV]  any GGUF file against llama.cpp's outputs cached under
 *                                     $OMNIKV_CACHE/oracle/NAME (made on first use) */
int main(int argc, char **argv) {
    okv_log_init(0);
    /* OMNIKV_CPU_ISA=avx2|generic holds another vector path to llama.cpp (by hand) */
    const char *isa = getenv("OMNIKV_CPU_ISA");
    if (isa && okv_cpu_isa_from_name(isa) >= 0) okv_cpu_isa_request((okv_cpu_isa)okv_cpu_isa_from_name(isa));
    char model_path[1024];
    const bool other = argc > 2;
    if (other)
        snprintf(model_path, sizeof model_path, "%s", argv[1]);
    else
        test_model_path(model_path, sizeof model_path);
    okv_model m;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
    TEST_OK(model_load(&m, model_path, &mo));
    if (other) {
        int kv = argc > 3 ? okv_type_from_name(argv[3]) : OKV_TYPE_F16;
        TEST_CHECK(kv == OKV_TYPE_F16 || okv_kv_type_int((okv_type)kv), "KV type %s: f16, q8_0 or q4_0", argv[3]);
        /* any file: every divergence must be a near-tie, but on quantized weights most are */
        check_case(model_path, &m, (okv_type)kv, argv[2], 0);
    } else {
        check_case(model_path, &m, OKV_TYPE_F16, "llamacpp-smollm2-v2", 3);
        check_case(model_path, &m, OKV_TYPE_Q8_0, "llamacpp-smollm2-q8_0-v1", 3);
    }
    model_free(&m);
    return test_summary();
}
