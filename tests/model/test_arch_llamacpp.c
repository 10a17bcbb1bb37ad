/* test_arch_llamacpp.c — the architectures GGUF files carry besides Llama, against llama.cpp:
 * make_arch_models.py writes tiny random-weight qwen2 (q/k/v biases, NEOX RoPE, tied head) and
 * Mistral-style (GQA, head_dim 128 of hidden 256, theta 1e6, untied head; `llama` in GGUF) models
 * as GGUF files the way llama.cpp's converter does and as HF directories with the same weights
 * (plus a GGUF-only Mistral with a SentencePiece vocabulary), and records llama.cpp's outputs on
 * the GGUF. omnikv on the GGUF and on the HF directory must each match them: the same tokens for
 * the prompts, logits within llamacpp_compare.h's tolerance and the same greedy tokens. The
 * Mistral-style model is also requantized by llama.cpp's quantizer to Q2_K, Q3_K_M, Q4_K_M,
 * Q5_K_M, Q6_K, Q5_0, Q5_1 and IQ4_NL (all widths multiples of 256, so each K-quant is used
 * where the mix puts it) and held to the same rule: an independent check of every weight type's
 * dequantization and dot product, which a quantizer that matches llama.cpp's bytes cannot give.
 * Skips (77) only where the test venv is missing. */
#include "llamacpp_compare.h"

#include "model/model.h"

#include <stdlib.h>
#include <unistd.h>

typedef struct arch_case {
    const char *name; /* OUT_DIR/<name> of make_arch_models.py */
    const char *gguf_arch, *hf_arch; /* hf_arch NULL: GGUF only */
    bool bias, tied;
    int n_kv_heads, head_dim;
    bool quantized; /* llama.cpp's two paths 1-3 logits apart: most greedy steps are near-ties */
} arch_case;

static const arch_case k_cases[] = {
    {"qwen2", "qwen2", "qwen2", true, true, 2, 64, false},
    {"mistral", "llama", "mistral", false, false, 2, 128, false},
    {"mistral-spm", "llama", NULL, false, false, 2, 128, false},
    /* the Mistral-style model as llama.cpp's quantizer writes the usual file types (every
     * weight type of the mix: K-quants, Q5_0, Q5_1, IQ4_NL, and the Q8_0/Q6_K heads) */
    {"mistral-q2_k", "llama", NULL, false, false, 2, 128, true},
    {"mistral-q3_k_m", "llama", NULL, false, false, 2, 128, true},
    {"mistral-q4_k_m", "llama", NULL, false, false, 2, 128, true},
    {"mistral-q5_k_m", "llama", NULL, false, false, 2, 128, true},
    {"mistral-q6_k", "llama", NULL, false, false, 2, 128, true},
    {"mistral-q5_0", "llama", NULL, false, false, 2, 128, true},
    {"mistral-q5_1", "llama", NULL, false, false, 2, 128, true},
    {"mistral-iq4_nl", "llama", NULL, false, false, 2, 128, true},
};

/* The tokenizer of the loaded model must give llama.cpp's tokens for each prompt (BOS as the
 * vocabulary asks, control tokens parsed). */
static void check_tokens(const okv_model *m, const oracle_set *s, const char *what) {
    int equal = 0;
    for (int i = 0; i < s->n; i++) {
        const oracle_prompt *p = &s->p[i];
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)(p->n_tokens + 8));
        int n = tokenizer_encode(m->tok, p->text, strlen(p->text), true, true, ids, p->n_tokens + 8);
        bool same = n == p->n_tokens && !memcmp(ids, p->tokens, sizeof(int32_t) * (size_t)n);
        TEST_CHECK(same, "%s prompt %d: %d tokens from omnikv's tokenizer, %d from llama.cpp's%s",
                   what, i, n, p->n_tokens, n == p->n_tokens ? " (different ids)" : "");
        equal += same;
        free(ids);
    }
    printf("%s: tokenizer gives llama.cpp's tokens for %d/%d prompts\n", what, equal, s->n);
}

/* Our dequantization of each quantized tensor's first rows against the gguf package's
 * (make_arch_models.py's dequant.f32, the tensors in file order): equal within 1e-6 of the row's
 * largest magnitude (the two multiply the same f16 scales in different orders). */
static void check_dequant(const char *model_path, const char *ref_path, const char *what) {
    enum { ROWS = 512 }; /* make_arch_models.py's DEQUANT_ROWS */
    size_t ref_bytes = 0;
    float *ref = (float *)test_read_file(ref_path, &ref_bytes);
    gguf_file g;
    TEST_OK(gguf_open(&g, model_path));
    size_t at = 0, n_tensors = 0, exact = 0, total = 0;
    double worst = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor_info *t = &g.tensors[i];
        if (t->type == OKV_TYPE_F32 || t->type == OKV_TYPE_F16 || t->type == OKV_TYPE_BF16) continue;
        const int64_t n = t->ne[0], rows = OKV_MIN(ROWS, (int64_t)(t->nbytes / okv_type_row_bytes(t->type, n)));
        float *row = malloc(sizeof(float) * (size_t)n);
        for (int64_t r = 0; r < rows; r++, at += (size_t)n) {
            TEST_CHECK((at + (size_t)n) * sizeof(float) <= ref_bytes, "%s: %s holds fewer rows than "
                       "the file's quantized tensors", what, ref_path);
            okv_dequant_row_ref(row, (const uint8_t *)t->data + (size_t)r * okv_type_row_bytes(t->type, n),
                                t->type, n);
            float big = 0, diff = 0;
            for (int64_t j = 0; j < n; j++) {
                big = fmaxf(big, fabsf(ref[at + (size_t)j]));
                diff = fmaxf(diff, fabsf(row[j] - ref[at + (size_t)j]));
                exact += row[j] == ref[at + (size_t)j];
            }
            total += (size_t)n;
            worst = fmax(worst, big > 0 ? diff / big : diff);
            TEST_CHECK(diff <= 1e-6f * big, "%s: %.*s (%s) row %lld dequantizes %g away from the "
                       "gguf package's (row max %g)", what, (int)t->name.len, t->name.ptr,
                       okv_type_name(t->type), (long long)r, (double)diff, (double)big);
        }
        free(row);
        n_tensors++;
    }
    TEST_CHECK(at * sizeof(float) == ref_bytes, "%s: %s holds %zu values, the file's quantized "
               "tensors' first rows %zu", what, ref_path, ref_bytes / sizeof(float), at);
    printf("%s: %zu quantized tensors dequantize as the gguf package does: %zu of %zu values "
           "identical, worst difference %.2g of a row's largest\n", what, n_tensors, exact, total, worst);
    gguf_close(&g);
    free(ref);
}

/* The generated models (~450 MB, under $TMPDIR) go whichever way the test ends (TEST_OK exits). */
static char g_tmp[600];

static void remove_tmp(void) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", g_tmp);
}

int main(void) {
    okv_log_init(0);
    char py[1200], cmd[4096], dir[1200], path[1400];
    if (!oracle_setup(py, sizeof py)) return 77; /* the tiny models reuse SmolLM2's tokenizer */
    /* OKV_ARCH_MODELS names a folder make_arch_models.py already filled (kept), for reruns. */
    const char *tmp = getenv("OKV_ARCH_MODELS");
    if (!tmp) {
        snprintf(g_tmp, sizeof g_tmp, "%s/okv-arch-XXXXXX", test_env("TMPDIR", "/tmp"));
        if (!mkdtemp(g_tmp)) {
            fprintf(stderr, "FAIL: cannot make a temporary directory %s\n", g_tmp);
            return 1;
        }
        atexit(remove_tmp);
        tmp = g_tmp;
        snprintf(cmd, sizeof cmd, "%s %s/tests/model/make_arch_models.py %s", py, test_src(), tmp);
        if (system(cmd) != 0) {
            fprintf(stderr, "FAIL: %s failed\n", cmd);
            return 1;
        }
    }

    float worst_rel = 0;
    for (size_t c = 0; c < sizeof k_cases / sizeof *k_cases; c++) {
        const arch_case *k = &k_cases[c];
        snprintf(dir, sizeof dir, "%s/%s/oracle", tmp, k->name);
        oracle_set s;
        for (int src = 0; src < (k->hf_arch ? 2 : 1); src++) {
            snprintf(path, sizeof path, "%s/%s/%s", tmp, k->name, src ? "hf" : "model.gguf");
            char what[64];
            snprintf(what, sizeof what, "%s %s", k->name, src ? "HF" : "GGUF");
            okv_model m;
            model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                                  .need_head = true, .need_tokenizer = true};
            TEST_OK(model_load(&m, path, &mo));
            const okv_model_config *mc = &m.cfg;
            TEST_CHECK(!strcmp(mc->arch, src ? k->hf_arch : k->gguf_arch) && mc->qkv_bias == k->bias &&
                       mc->tied_embeddings == k->tied && mc->n_kv_heads == k->n_kv_heads &&
                       mc->head_dim == k->head_dim && mc->rope_theta == 1e6f,
                       "%s: read as %s, bias %d, tied %d, %d KV heads of %d, theta %g", what,
                       mc->arch, mc->qkv_bias, mc->tied_embeddings, mc->n_kv_heads, mc->head_dim,
                       (double)mc->rope_theta);
            if (src == 0) oracle_load(&s, dir, mc->n_vocab);
            char deq[1400];
            snprintf(deq, sizeof deq, "%s/%s/dequant.f32", tmp, k->name);
            if (src == 0 && test_file_exists(deq)) check_dequant(path, deq, what);
            check_tokens(&m, &s, what);
            oracle_stats st;
            oracle_compare(&m, &s, 64, 2048, OKV_TYPE_F16, ORACLE_EACH_PROMPT, what, &st);
            printf("%s: worst logit difference %.4f (%.2f of its tolerance), %d of %d prompts equal "
                   "for all %d greedy tokens, %d near-ties\n", what, st.worst, st.worst_rel,
                   st.full, s.n, s.p[0].n_gen, st.near_ties);
            /* Near-ties end a continuation's comparison; most must still run to the end, except
             * on quantized weights, where every divergence must still be a near-tie. */
            TEST_CHECK(k->quantized || st.full >= s.n - 2, "%s: only %d of %d prompts matched llama.cpp for all "
                       "greedy tokens", what, st.full, s.n);
            worst_rel = fmaxf(worst_rel, st.worst_rel);
            model_free(&m);
        }
        oracle_free(&s);
    }
    printf("worst logit difference over all runs: %.2f of its tolerance\n", worst_rel);
    return test_summary();
}
