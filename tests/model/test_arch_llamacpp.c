/* test_arch_llamacpp.c — the architectures GGUF files carry besides Llama, against llama.cpp:
 * make_arch_models.py writes tiny random-weight qwen2 (q/k/v biases, NEOX RoPE, tied head) and
 * Mistral-style (GQA, head_dim 128 of hidden 256, theta 1e6, untied head; `llama` in GGUF) models
 * as GGUF files the way llama.cpp's converter does and as HF directories with the same weights
 * (plus a GGUF-only Mistral with a SentencePiece vocabulary), and records llama.cpp's outputs on
 * the GGUF. omnikv on the GGUF and on the HF directory must each match them: the same tokens for
 * the prompts, logits within llamacpp_compare.h's tolerance and the same greedy tokens.
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
} arch_case;

static const arch_case k_cases[] = {
    {"qwen2", "qwen2", "qwen2", true, true, 2, 64},
    {"mistral", "llama", "mistral", false, false, 2, 128},
    {"mistral-spm", "llama", NULL, false, false, 2, 128},
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
    snprintf(py, sizeof py, "%s/venv/bin/python", test_cache());
    if (!test_file_exists(py)) {
        printf("SKIP: %s is missing (scripts/setup.sh --test makes the venv with llama.cpp)\n", py);
        return 77;
    }
    /* SmolLM2's tokenizer files, which the tiny models reuse. */
    snprintf(cmd, sizeof cmd, "%s %s/tests/fixtures/gguf_to_hf.py", py, test_src());
    TEST_CHECK(system(cmd) == 0, "%s failed", cmd);
    snprintf(g_tmp, sizeof g_tmp, "%s/okv-arch-XXXXXX", test_env("TMPDIR", "/tmp"));
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "FAIL: cannot make a temporary directory %s\n", g_tmp);
        return 1;
    }
    atexit(remove_tmp);
    const char *tmp = g_tmp;
    snprintf(cmd, sizeof cmd, "%s %s/tests/model/make_arch_models.py %s", py, test_src(), tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "FAIL: %s failed\n", cmd);
        return 1;
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
            check_tokens(&m, &s, what);
            oracle_stats st;
            oracle_compare(&m, &s, 64, 2048, what, &st);
            printf("%s: worst logit difference %.4f (%.2f of its tolerance), %d of %d prompts equal "
                   "for all %d greedy tokens, %d near-ties\n", what, st.worst, st.worst_rel,
                   st.full, s.n, s.p[0].n_gen, st.near_ties);
            /* Near-ties end a continuation's comparison; most must still run to the end. */
            TEST_CHECK(st.full >= s.n - 2, "%s: only %d of %d prompts matched llama.cpp for all "
                       "greedy tokens", what, st.full, s.n);
            worst_rel = fmaxf(worst_rel, st.worst_rel);
            model_free(&m);
        }
        oracle_free(&s);
    }
    printf("worst logit difference over all runs: %.2f of its tolerance\n", worst_rel);
    return test_summary();
}
