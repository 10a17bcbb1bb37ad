/* test_tokenizer.c — the tokenizer against llama.cpp: exact token ids for every case of
 * tests/model/tokenizer_oracle.py on SmolLM2's vocabulary, on copies of it with five other
 * pre-tokenizers and on a SentencePiece vocabulary derived from it (text that is not UTF-8
 * included), exact decode(encode(s)) round trips of all byte-level UTF-8 cases, EOG/chat queries
 * and encode speed on a ~100K-token text. Needs the model and venv from scripts/setup.sh; fails
 * without them. */
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "common.h"
#include "../test_util.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const k_vocabs[] = {"smollm", "llama-bpe", "qwen2", "gpt-2", "default", "starcoder", "spm"};
enum { N_VOCABS = sizeof k_vocabs / sizeof k_vocabs[0], MAX_REPORT = 8 };

static double mtime(const char *p) {
    struct stat st;
    if (stat(p, &st) != 0) return -1;
    return (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
}

static void print_text(const char *s, size_t n) {
    fputc('"', stderr);
    for (size_t i = 0; i < n && i < 160; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stderr);
        else if (c == '\t') fputs("\\t", stderr);
        else if (c < 0x20 || c == 0x7f) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fputs(n > 160 ? "\"..." : "\"", stderr);
}

static void print_ids(const char *label, const int32_t *ids, int n, int from) {
    fprintf(stderr, "    %s (%d):", label, n);
    for (int i = OKV_MAX(0, from - 2); i < n && i < from + 10; i++) fprintf(stderr, " %d", (int)ids[i]);
    fputc('\n', stderr);
}

static size_t hex_decode(const char *h, char *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        char pair[3] = {h[2 * i], h[2 * i + 1], 0};
        out[i] = (char)strtoul(pair, NULL, 16);
    }
    return n;
}

/* decode(ids) must give back text exactly. */
static bool round_trip(const okv_tokenizer *t, const int32_t *ids, int n, bool show, const char *text,
                       size_t len, char *buf, size_t cap) {
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int m = tokenizer_piece(t, ids[i], show, buf + k, cap - k);
        if (m < 0) return false;
        k += (size_t)m;
    }
    return k == len && memcmp(buf, text, len) == 0;
}

typedef struct vocab_result {
    int cases, mismatches, trips_failed;
    size_t big_bytes; /* the largest case, timed */
    int big_tokens;
    double big_s;
} vocab_result;

static int check_vocab(const char *jsonl, okv_tokenizer **tok_out, gguf_file *gf, vocab_result *r) {
    FILE *f = fopen(jsonl, "r");
    if (!f) {
        fprintf(stderr, "FAIL: cannot read the oracle file %s\n", jsonl);
        return 1;
    }
    char *line = NULL;
    size_t line_cap = 0;
    if (getline(&line, &line_cap, f) < 0) {
        fprintf(stderr, "FAIL: %s is empty\n", jsonl);
        fclose(f);
        return 1;
    }
    cJSON *hdr = cJSON_Parse(line);
    const char *gpath = cJSON_GetStringValue(cJSON_GetObjectItem(hdr, "gguf"));
    const char *pre = cJSON_GetStringValue(cJSON_GetObjectItem(hdr, "pre"));
    bool trips = cJSON_IsTrue(cJSON_GetObjectItem(hdr, "round_trip"));
    okv_tokenizer *t = NULL;
    if (!gpath || gguf_open(gf, gpath) || tokenizer_init_gguf(&t, gf)) {
        fprintf(stderr, "FAIL: cannot load the tokenizer of %s: %s\n", gpath ? gpath : jsonl, okv_last_error());
        cJSON_Delete(hdr);
        free(line);
        fclose(f);
        return 1;
    }
    char *text = NULL, *dec = NULL;
    int32_t *ids = NULL;
    size_t text_cap = 0;
    while (getline(&line, &line_cap, f) > 0) {
        cJSON *c = cJSON_Parse(line);
        const char *hex = cJSON_GetStringValue(cJSON_GetObjectItem(c, "hex"));
        cJSON *want = cJSON_GetObjectItem(c, "ids");
        OKV_ASSERT(hex && cJSON_IsArray(want));
        bool special = cJSON_IsTrue(cJSON_GetObjectItem(c, "special"));
        bool add = cJSON_IsTrue(cJSON_GetObjectItem(c, "add"));
        bool utf8 = cJSON_IsTrue(cJSON_GetObjectItem(c, "utf8"));
        size_t len = strlen(hex) / 2;
        if (len + 16 > text_cap) {
            text_cap = 2 * (len + 16);
            text = realloc(text, text_cap);
            dec = realloc(dec, text_cap);
            ids = realloc(ids, sizeof(int32_t) * text_cap);
            OKV_ASSERT(text && dec && ids);
        }
        hex_decode(hex, text);
        int cap = (int)len + 8;
        double t0 = okv_now_s();
        int n = tokenizer_encode(t, text, len, add, special, ids, cap);
        double dt = okv_now_s() - t0;
        int nw = 0;
        int32_t *w = malloc(sizeof(int32_t) * ((size_t)cJSON_GetArraySize(want) + 1));
        OKV_ASSERT(w);
        const cJSON *e;
        cJSON_ArrayForEach(e, want) w[nw++] = (int32_t)e->valueint;
        r->cases++;
        if (len > r->big_bytes) {
            r->big_bytes = len;
            r->big_tokens = n;
            r->big_s = dt;
        }
        int first = n < 0 ? 0 : -1;
        if (n >= 0 && n <= cap) {
            for (int i = 0; i < n && i < nw && first < 0; i++)
                if (ids[i] != w[i]) first = i;
            if (first < 0 && n != nw) first = OKV_MIN(n, nw);
        } else if (n > cap) {
            first = 0;
        }
        if (first >= 0) {
            if (r->mismatches++ < MAX_REPORT) {
                fprintf(stderr, "MISMATCH [%s] special=%d add=%d at token %d, text ", pre, special, add, first);
                print_text(text, len);
                fputc('\n', stderr);
                print_ids("llama.cpp", w, nw, first);
                print_ids("omnikv   ", ids, OKV_MAX(n, 0), first);
                if (n < 0) fprintf(stderr, "    error: %s\n", okv_last_error());
            }
        } else if (trips && !add && utf8 && !round_trip(t, ids, n, special, text, len, dec, text_cap)) {
            if (r->trips_failed++ < MAX_REPORT) {
                fprintf(stderr, "ROUND TRIP [%s] special=%d: ", pre, special);
                print_text(text, len);
                fputc('\n', stderr);
            }
        }
        free(w);
        cJSON_Delete(c);
    }
    free(text);
    free(dec);
    free(ids);
    free(line);
    cJSON_Delete(hdr);
    fclose(f);
    *tok_out = t;
    return 0;
}

static void check_smollm_queries(const okv_tokenizer *t) {
    TEST_CHECK(tokenizer_n_vocab(t) == 49152, "n_vocab %d", tokenizer_n_vocab(t));
    TEST_CHECK(tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2, "bos %d eos %d", tokenizer_bos(t), tokenizer_eos(t));
    TEST_CHECK(tokenizer_is_eog(t, 2) && tokenizer_is_eog(t, 0), "<|im_end|> and <|endoftext|> must end generation");
    TEST_CHECK(!tokenizer_is_eog(t, 1) && !tokenizer_is_eog(t, 19556), "<|im_start|> and 'Hello' must not end generation");
    TEST_CHECK(tokenizer_chat_kind(t) == CHAT_CHATML, "chat kind %d, expected ChatML", (int)tokenizer_chat_kind(t));

    char buf[64];
    TEST_CHECK(tokenizer_piece(t, 1, false, buf, sizeof buf) == 0, "a control token must decode to nothing");
    int n = tokenizer_piece(t, 1, true, buf, sizeof buf);
    TEST_CHECK(n == 12 && memcmp(buf, "<|im_start|>", 12) == 0, "<|im_start|> with show_special gives %d bytes", n);
    TEST_CHECK(tokenizer_piece(t, 1, true, buf, 5) == -1, "a piece that does not fit must return -1");
    TEST_CHECK(tokenizer_piece(t, 49152, true, buf, sizeof buf) == -1, "an out-of-range id must return -1");

    /* The count is the full length even when cap cuts the output, and nothing past cap is written. */
    int32_t ids[4] = {-7, -7, -7, -7};
    n = tokenizer_encode(t, "Hello world", 11, true, false, ids, 1);
    TEST_CHECK(n == 2 && ids[0] == 19556 && ids[1] == -7, "cap=1 encode gave n=%d ids %d %d", n, ids[0], ids[1]);
    TEST_CHECK(tokenizer_encode(t, "", 0, true, true, ids, 4) == 0, "SmolLM2 adds no BOS to empty text");

    /* The rendered ChatML prompt is in the oracle corpus; its ids are checked there. */
    chat_msg m = {"user", "What is 2+2?"};
    char *p = chat_render(tokenizer_chat_kind(t), &m, 1, true);
    const char *want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                       "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    TEST_CHECK(p && strcmp(p, want) == 0, "ChatML rendering differs: %s", p ? p : okv_last_error());
    free(p);
}

int main(void) {
    /* Paths come from the environment; sized so that no composition can truncate. */
    char model[1100], py[1100], script[1100], dir[1100], path[1200], cmd[8192];
    test_model_path(model, sizeof model);
    snprintf(py, sizeof py, "%s/venv/bin/python", test_cache());
    snprintf(script, sizeof script, "%s/tests/model/tokenizer_oracle.py", test_src());
    snprintf(dir, sizeof dir, "%s/oracle-tokenizer", test_cache());
    if (!test_file_exists(py)) {
        fprintf(stderr, "FAIL: %s is missing; run scripts/setup.sh --test to build the llama.cpp oracle\n", py);
        return 1;
    }
    if (!test_file_exists(script)) {
        fprintf(stderr, "FAIL: the oracle script %s is missing (set OMNIKV_SRC to the source tree)\n", script);
        return 1;
    }

    /* The oracle output is cached; it is rebuilt when the script or the model is newer. */
    snprintf(path, sizeof path, "%s/tok_smollm.jsonl", dir);
    double have = mtime(path);
    if (have < mtime(script) || have < mtime(model)) {
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && '%s' '%s' --model '%s' --outdir '%s' > '%s/oracle.log' 2>&1", dir,
                 py, script, model, dir, dir);
        double t0 = okv_now_s();
        if (system(cmd) != 0) {
            fprintf(stderr, "FAIL: the llama.cpp oracle failed; see %s/oracle.log (rerun scripts/setup.sh if "
                    "llama_cpp is not installed)\n", dir);
            return 1;
        }
        printf("oracle: llama.cpp ids written to %s in %.1f s\n", dir, okv_now_s() - t0);
    }

    int total = 0, mismatches = 0, trips = 0;
    for (int v = 0; v < N_VOCABS; v++) {
        snprintf(path, sizeof path, "%s/tok_%s.jsonl", dir, k_vocabs[v]);
        gguf_file gf = {0};
        okv_tokenizer *t = NULL;
        vocab_result r = {0};
        if (check_vocab(path, &t, &gf, &r)) {
            test_failures++;
            gguf_close(&gf);
            continue;
        }
        printf("%-10s %d cases, %d id mismatches, %d round-trip failures; largest case %zu bytes -> %d tokens in "
               "%.3f s (%.0f tokens/s)\n", k_vocabs[v], r.cases, r.mismatches, r.trips_failed, r.big_bytes,
               r.big_tokens, r.big_s, r.big_tokens / (r.big_s > 0 ? r.big_s : 1e-9));
        TEST_CHECK(r.cases >= 400, "[%s] only %d oracle cases", k_vocabs[v], r.cases);
        TEST_CHECK(r.big_tokens >= 90000, "[%s] the speed case has only %d tokens", k_vocabs[v], r.big_tokens);
        TEST_CHECK(r.big_s < 5.0, "[%s] encoding %d tokens took %.2f s", k_vocabs[v], r.big_tokens, r.big_s);
        total += r.cases;
        mismatches += r.mismatches;
        trips += r.trips_failed;
        if (v == 0) check_smollm_queries(t);
        tokenizer_free(t);
        gguf_close(&gf);
    }
    TEST_CHECK(mismatches == 0, "%d cases differ from llama.cpp", mismatches);
    TEST_CHECK(trips == 0, "%d cases do not round-trip", trips);
    printf("test_tokenizer: %d cases compared over %d vocabularies, %d mismatches, %d round-trip failures\n",
           total, N_VOCABS, mismatches, trips);
    return test_summary();
}
