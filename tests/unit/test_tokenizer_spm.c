/* test_tokenizer_spm.c — the tokenizer on small hand-built vocabularies whose ids were worked
 * out by hand: SentencePiece (merge by score, ties leftmost, space prefix, <0xNN> fallback,
 * special tokens, no doubled BOS) and byte-level BPE (merge by rank, stale candidates). */
#include "model/tokenizer.h"
#include "common.h"
#include "../test_util.h"

#include <string.h>

static void expect_ids(const okv_tokenizer *t, const char *text, bool add, bool special, const int32_t *want,
                       int n_want) {
    int32_t ids[64];
    int n = tokenizer_encode(t, text, strlen(text), add, special, ids, 64);
    bool ok = n == n_want;
    for (int i = 0; ok && i < n; i++) ok = ids[i] == want[i];
    TEST_CHECK(ok, "'%s' (add %d, special %d) gave %d ids:", text, add, special, n);
    if (!ok) {
        for (int i = 0; i < n && i < 64; i++) fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, "  wanted:");
        for (int i = 0; i < n_want; i++) fprintf(stderr, " %d", (int)want[i]);
        fputc('\n', stderr);
    }
}
#define EXPECT_IDS(t, text, add, special, ...) \
    do { \
        const int32_t w_[] = {__VA_ARGS__}; \
        expect_ids(t, text, add, special, w_, (int)(sizeof w_ / sizeof w_[0])); \
    } while (0)

static void expect_decode(const okv_tokenizer *t, const int32_t *ids, int n, bool show, const char *want) {
    char buf[256];
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int m = tokenizer_piece(t, ids[i], show, buf + k, sizeof buf - k);
        TEST_CHECK(m >= 0, "piece of %d failed", (int)ids[i]);
        if (m < 0) return;
        k += (size_t)m;
    }
    TEST_CHECK(k == strlen(want) && memcmp(buf, want, k) == 0, "decode gave '%.*s', wanted '%s'", (int)k, buf, want);
}

/* ids 0-2 <unk> <s> </s>; 3..258 <0x00>..<0xFF>; then the pieces below. */
enum { SPM_BYTE0 = 3, SPM_N = 276 };
static const struct { const char *text; float score; int type; } spm_pieces[] = {
    {"\xe2\x96\x81", -10, TOK_TYPE_NORMAL},                 /* 259 ▁ */
    {"h", -20, TOK_TYPE_NORMAL},   {"e", -20, TOK_TYPE_NORMAL}, {"l", -20, TOK_TYPE_NORMAL}, /* 260-262 */
    {"o", -20, TOK_TYPE_NORMAL},   {"w", -20, TOK_TYPE_NORMAL}, {"r", -20, TOK_TYPE_NORMAL}, /* 263-265 */
    {"d", -20, TOK_TYPE_NORMAL},                             /* 266 */
    {"he", -3, TOK_TYPE_NORMAL},   {"ll", -2, TOK_TYPE_NORMAL}, {"llo", -4, TOK_TYPE_NORMAL}, /* 267-269 */
    {"hello", -1, TOK_TYPE_NORMAL},                          /* 270 */
    {"\xe2\x96\x81hello", -0.5f, TOK_TYPE_NORMAL},           /* 271 ▁hello */
    {"wo", -6, TOK_TYPE_NORMAL},                             /* 272 */
    {"\xe2\x96\x81w", -5, TOK_TYPE_NORMAL},                  /* 273 ▁w */
    {"or", -5.5f, TOK_TYPE_NORMAL},                          /* 274 */
    {"<user>", 0, TOK_TYPE_USER},                            /* 275 */
};

static void test_spm(void) {
    static char bytes[256][8];
    const char *tokens[SPM_N];
    int32_t types[SPM_N];
    float scores[SPM_N];
    tokens[0] = "<unk>"; tokens[1] = "<s>"; tokens[2] = "</s>";
    types[0] = TOK_TYPE_UNKNOWN; types[1] = types[2] = TOK_TYPE_CONTROL;
    scores[0] = scores[1] = scores[2] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[SPM_BYTE0 + b] = bytes[b];
        types[SPM_BYTE0 + b] = TOK_TYPE_BYTE;
        scores[SPM_BYTE0 + b] = 0;
    }
    for (int i = 0; i < (int)(sizeof spm_pieces / sizeof spm_pieces[0]); i++) {
        tokens[259 + i] = spm_pieces[i].text;
        scores[259 + i] = spm_pieces[i].score;
        types[259 + i] = spm_pieces[i].type;
    }
    tok_spec s = {.kind = TOK_KIND_SPM, .n_vocab = SPM_N, .tokens = tokens, .token_types = types,
                  .scores = scores, .bos_id = 1, .eos_id = 2, .eot_id = -1, .unk_id = 0, .pad_id = -1,
                  .add_bos = true, .add_space_prefix = true};
    okv_tokenizer *t = NULL;
    TEST_OK(tokenizer_init(&t, &s));

    /* ▁hello▁world: ll(-2), he(-3), llo(-4), hello(-1), ▁hello(-0.5), ▁w(-5), or(-5.5); the
     * queued wo(-6) is stale by then. Left over: l, d. */
    EXPECT_IDS(t, "hello world", true, false, 1, 271, 273, 274, 262, 266);
    EXPECT_IDS(t, "hello world", false, false, 271, 273, 274, 262, 266);
    /* Equal scores: the leftmost pair merges first. */
    EXPECT_IDS(t, "lll", false, false, 259, 268, 262);
    /* é is not in the vocabulary: its two bytes. */
    EXPECT_IDS(t, "\xc3\xa9", false, false, 259, SPM_BYTE0 + 0xc3, SPM_BYTE0 + 0xa9);
    /* A parsed <s> at the start is the BOS: add_special does not add another; the text after a
     * special token gets the space prefix again. */
    EXPECT_IDS(t, "<s>hello", true, true, 1, 271);
    /* Unparsed, <s> is text: '<', 's', '>' fall back to bytes. */
    EXPECT_IDS(t, "<s>hello", false, false, 259, SPM_BYTE0 + '<', SPM_BYTE0 + 's', SPM_BYTE0 + '>', 270);
    /* User-defined tokens are split out even without parse_special. */
    EXPECT_IDS(t, "hi<user>hello", false, false, 259, 260, SPM_BYTE0 + 'i', 275, 271);
    /* Empty text: only BOS when asked. */
    int32_t one[2];
    TEST_CHECK(tokenizer_encode(t, "", 0, true, false, one, 2) == 1 && one[0] == 1, "empty text should be [BOS]");
    TEST_CHECK(tokenizer_encode(t, "", 0, false, false, one, 2) == 0, "empty text should give no ids");

    const int32_t d1[] = {1, 271, 273, 274, 262, 266};
    expect_decode(t, d1, 6, false, " hello world");
    expect_decode(t, d1, 6, true, "<s> hello world");
    const int32_t d2[] = {259, SPM_BYTE0 + 0xc3, SPM_BYTE0 + 0xa9, 275, 0};
    expect_decode(t, d2, 5, false, " \xc3\xa9<user>");
    TEST_CHECK(tokenizer_is_eog(t, 2) && !tokenizer_is_eog(t, 1), "</s> ends generation, <s> does not");
    TEST_CHECK(tokenizer_chat_kind(t) == CHAT_NONE, "no template, no chat kind");
    tokenizer_free(t);

    /* A vocabulary that asks for BOS without having one is rejected. */
    s.bos_id = -1;
    t = NULL;
    TEST_CHECK(tokenizer_init(&t, &s) == OKV_ERR_INPUT && !t, "add_bos without a BOS id must fail");
    s.bos_id = SPM_N;
    TEST_CHECK(tokenizer_init(&t, &s) == OKV_ERR_INPUT && !t, "an out-of-range BOS id must fail");
    printf("spm: score order, leftmost ties, byte fallback, special tokens, BOS once, decoding\n");
}

static void test_bpe(void) {
    /* Byte-level: Ġ (U+0120) is the space. */
    const char *tokens[] = {"a", "b", "c", "\xc4\xa0", "ab", "abc", ("\xc4\xa0" "a"), ("\xc4\xa0" "ab"), "<|end|>"};
    const int32_t types[] = {1, 1, 1, 1, 1, 1, 1, 1, TOK_TYPE_CONTROL};
    const char *merges[] = {"a b", "ab c", "\xc4\xa0 a", ("\xc4\xa0" "a b")};
    tok_spec s = {.kind = TOK_KIND_BPE, .n_vocab = 9, .tokens = tokens, .token_types = types, .n_merges = 4,
                  .merges = merges, .pre = "gpt2", .bos_id = -1, .eos_id = 8, .eot_id = -1, .unk_id = -1,
                  .pad_id = -1, .chat_template = "{{ '<|im_start|>' }}"};
    okv_tokenizer *t = NULL;
    TEST_OK(tokenizer_init(&t, &s));
    /* 'abc' then ' ab': in ' ab' the rank-0 'a b' beats the leftmost 'Ġ a' (rank 2), and no
     * merge joins Ġ with ab. */
    EXPECT_IDS(t, "abc ab", false, false, 5, 3, 4);
    EXPECT_IDS(t, "abc a", false, false, 5, 6);
    /* ' abab': both 'a b' merge first, so the queued 'Ġ a' is stale and skipped. */
    EXPECT_IDS(t, " abab", false, false, 3, 4, 4);
    /* 'd' has no token and no single-byte fallback: dropped, as llama.cpp does. */
    EXPECT_IDS(t, "abd", false, false, 4);
    EXPECT_IDS(t, "ab<|end|>c", false, true, 4, 8, 2);
    const int32_t d[] = {5, 7, 8};
    expect_decode(t, d, 3, false, "abc ab");
    expect_decode(t, d, 3, true, "abc ab<|end|>");
    TEST_CHECK(tokenizer_is_eog(t, 8) && tokenizer_chat_kind(t) == CHAT_CHATML, "eog or chat kind wrong");
    tokenizer_free(t);

    s.pre = "no-such-pre";
    TEST_CHECK(tokenizer_init(&t, &s) == OKV_ERR_INPUT && strstr(okv_last_error(), "no-such-pre"),
               "an unknown pre-tokenizer must fail naming it: %s", okv_last_error());
    const char *bad[] = {"(unclosed"};
    s.pre = NULL;
    s.n_pre_regex = 1;
    s.pre_regex = bad;
    TEST_CHECK(tokenizer_init(&t, &s) == OKV_ERR_INPUT && strstr(okv_last_error(), "(unclosed"),
               "a bad regex must fail naming it: %s", okv_last_error());
    tokenizer_free(NULL);
    printf("bpe: rank order, stale candidates, missing bytes, special tokens, decoding\n");
}

int main(void) {
    okv_log_init(0);
    test_spm();
    test_bpe();
    return test_summary();
}
