/* test_requant_llamacpp.c — SmolLM2 requantized by llama.cpp's own quantizer (from the BF16 twin
 * of tests/fixtures/gguf_to_hf.py, `llama_model_quantize` with allow_requantize) to Q4_K_M,
 * Q5_K_M, Q6_K, Q3_K_M, Q5_0 and Q5_1, each against llama.cpp on the same file: last-position
 * logits by llamacpp_compare.h's ORACLE_ON_AVERAGE rule, greedy continuations (32 tokens) equal
 * except at near-ties. SmolLM2's width (576) is not a multiple of 256, so most of its tensors fall
 * back to Q5_0 / Q5_1 / Q8_0 / IQ4_NL and only the 1536-wide ones hold K-quants; test_arch_llamacpp
 * covers every K-quant on every tensor. The files go to $OMNIKV_CACHE/models/quant (shared with
 * jobs/bench_quants.sh) and llama.cpp's outputs to $OMNIKV_CACHE/oracle/llamacpp-quant-v1, both
 * made on first use. */
#include "llamacpp_compare.h"

int main(void) {
    okv_log_init(0);
    static const char *const ftypes[] = {"Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q5_0", "Q5_1"};
    char py[1200], cmd[4096], model_path[1400], dir[1400], what[64];
    if (!oracle_setup(py, sizeof py)) return 77;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/models/quant", test_cache());
    TEST_CHECK(system(cmd) == 0, "%s failed", cmd);
    for (size_t f = 0; f < sizeof ftypes / sizeof *ftypes; f++) {
        snprintf(model_path, sizeof model_path, "%s/models/quant/smollm2.%s.gguf", test_cache(), ftypes[f]);
        if (!test_file_exists(model_path)) {
            snprintf(cmd, sizeof cmd, "%s %s/tests/model/quant_models.py quantize "
                     "%s/hf/SmolLM2-135M-Instruct.bf16.gguf %s %s", py, test_src(), test_cache(),
                     model_path, ftypes[f]);
            TEST_CHECK(system(cmd) == 0, "%s failed", cmd);
        }
        snprintf(dir, sizeof dir, "%s/oracle/llamacpp-quant-v1/smollm2-%s", test_cache(), ftypes[f]);
        oracle_ensure(model_path, dir, "f16");
        snprintf(what, sizeof what, "SmolLM2 %s", ftypes[f]);
        okv_model m;
        model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true};
        TEST_OK(model_load(&m, model_path, &mo));
        oracle_set s;
        oracle_load(&s, dir, m.cfg.n_vocab);
        oracle_stats st;
        oracle_compare(&m, &s, 64, 4096, OKV_TYPE_F16, ORACLE_ON_AVERAGE, what, &st);
        printf("%s: worst prompt %.4f from llama.cpp's nearer path (%.2f of 1.25x its spread + 0.1), "
               "%d of %d prompts equal for all %d greedy tokens, %d near-ties\n", what, st.worst,
               st.worst_rel, st.full, s.n, s.p[0].n_gen, st.near_ties);
        oracle_free(&s);
        model_free(&m);
    }
    return test_summary();
}
