/* test_hf_tokenizer.c — the tokenizer built from tokenizer.json (tokenizer_init_json) against the
 * `tokenizers` package: tests/fixtures/gguf_to_hf.py writes the SmolLM2 checkpoint and
 * tok_cases.jsonl (>= 200 strings with the package's ids); every id must match, the pieces must
 * concatenate back to the text, and the GGUF tokenizer of the same vocabulary must agree. */
#include "../test_util.h"

#include "common.h"
#include "model/gguf.h"
#include "model/tokenizer_json.h"

#include <cjson/cJSON.h>
#include <string.h>

static void run_fixture(void) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/venv/bin/python %s/tests/fixtures/gguf_to_hf.py", test_cache(),
             test_src());
    if (system(cmd) != 0) {
        fprintf(stderr, "FAIL: '%s' did not succeed; run scripts/setup.sh --test to get the model "
                        "and the venv\n", cmd);
        exit(1);
    }
}

int main(void) {
    okv_log_init(0);
    run_fixture();
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/hf/SmolLM2-135M-Instruct", test_cache());
    okv_tokenizer *tj = NULL, *tg = NULL;
    TEST_OK(tokenizer_init_json(&tj, dir, 0));
    char gpath[1024];
    test_model_path(gpath, sizeof gpath);
    gguf_file g;
    TEST_OK(gguf_open(&g, gpath));
    TEST_OK(tokenizer_init_gguf(&tg, &g));
    TEST_CHECK(tokenizer_n_vocab(tj) == tokenizer_n_vocab(tg) && tokenizer_bos(tj) == tokenizer_bos(tg) &&
                   tokenizer_eos(tj) == tokenizer_eos(tg),
               "vocab %d/%d, bos %d/%d, eos %d/%d differ between tokenizer.json and GGUF",
               tokenizer_n_vocab(tj), tokenizer_n_vocab(tg), tokenizer_bos(tj), tokenizer_bos(tg),
               tokenizer_eos(tj), tokenizer_eos(tg));
    TEST_CHECK(tokenizer_chat_kind(tj) == CHAT_CHATML, "the SmolLM2 template is not seen as ChatML");
    TEST_CHECK(tokenizer_is_eog(tj, 2), "<|im_end|> does not end generation");

    snprintf(path, sizeof path, "%s/tok_cases.jsonl", dir);
    char *text = test_read_file(path, NULL);
    int n_cases = 0, n_ids = 0, bad_ids = 0, bad_gguf = 0, bad_text = 0;
    static int32_t ids[65536], gids[65536];
    static char back[1 << 18];
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        OKV_ASSERT(c);
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(c, "text"));
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        OKV_ASSERT(s && cJSON_IsArray(want));
        int n = tokenizer_encode(tj, s, strlen(s), false, true, ids, 65536);
        int ng = tokenizer_encode(tg, s, strlen(s), false, true, gids, 65536);
        bool same = n == cJSON_GetArraySize(want);
        for (int i = 0; same && i < n; i++) same = ids[i] == cJSON_GetArrayItem(want, i)->valueint;
        if (!same && bad_ids++ < 5) {
            fprintf(stderr, "case %d %s: %d ids, the package gives %d:", n_cases, line, n,
                    cJSON_GetArraySize(want));
            for (int i = 0; i < n && i < 20; i++) fprintf(stderr, " %d", ids[i]);
            fputc('\n', stderr);
        }
        bad_gguf += ng != n || memcmp(ids, gids, sizeof *ids * (size_t)OKV_MAX(n, 0)) != 0;
        size_t o = 0;
        for (int i = 0; i < n; i++) {
            int k = tokenizer_piece(tj, ids[i], true, back + o, sizeof back - o);
            OKV_ASSERT(k >= 0);
            o += (size_t)k;
        }
        bad_text += o != strlen(s) || memcmp(back, s, o) != 0;
        n_cases++;
        n_ids += n;
        cJSON_Delete(c);
    }
    free(text);
    TEST_CHECK(n_cases >= 200, "only %d cases in %s", n_cases, path);
    TEST_CHECK(bad_ids == 0, "%d of %d cases differ from the tokenizers package", bad_ids, n_cases);
    TEST_CHECK(bad_gguf == 0, "%d of %d cases differ between tokenizer.json and the GGUF vocabulary",
               bad_gguf, n_cases);
    TEST_CHECK(bad_text == 0, "%d of %d cases do not decode back to their text", bad_text, n_cases);
    printf("tokenizer.json vs tokenizers: %d strings, %d ids; %d differ from the package, %d from "
           "the GGUF tokenizer, %d fail to round-trip\n", n_cases, n_ids, bad_ids, bad_gguf, bad_text);
    tokenizer_free(tj);
    tokenizer_free(tg);
    gguf_close(&g);
    return test_summary();
}
