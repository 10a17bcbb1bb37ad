/* test_tokenizer_json.c — tokenizer.json / tokenizer_config.json -> tok_spec on small files
 * written here: a Llama-3-style byte-level BPE, a Llama-2-style SentencePiece BPE, the other
 * pre-tokenizer forms, and each unsupported or malformed field rejected with its message.
 * Tokenization itself is compared with the `tokenizers` package by tests/model/test_hf_tokenizer. */
#include "../test_util.h"

#include "common.h"
#include "model/tokenizer_json.h"

#include <string.h>
#include <unistd.h>

static char dir[256];

static void write_file(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!text) {
        unlink(path);
        return;
    }
    FILE *fp = fopen(path, "w");
    OKV_ASSERT(fp);
    fputs(text, fp);
    fclose(fp);
}

static const char llama3_json[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":6,\"content\":\"<|begin_of_text|>\",\"special\":true},"
    "{\"id\":7,\"content\":\"<|eot_id|>\",\"special\":true},"
    "{\"id\":8,\"content\":\"<tool>\",\"special\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}|\\\\s+\"},\"behavior\":\"Isolated\","
    "\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},"
    "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},"
    "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|begin_of_text|>\","
    "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]}]},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"unk_token\":null,"
    "\"vocab\":{\"a\":0,\"b\":1,\"\\u0120\":2,\"ab\":3,\"\\u0120a\":4,\"\\u0120ab\":5},"
    "\"merges\":[\"a b\",\"\\u0120 a\",\"\\u0120a b\"]}}";

static const char llama3_cfg[] =
    "{\"bos_token\":{\"content\":\"<|begin_of_text|>\",\"lstrip\":false},\"eos_token\":\"<|eot_id|>\","
    "\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"T\"},"
    "{\"name\":\"default\",\"template\":\"{{ '<|start_header_id|>' }}\"}]}";

static void test_llama3(void) {
    write_file("tokenizer.json", llama3_json);
    write_file("tokenizer_config.json", llama3_cfg);
    tok_json tj;
    TEST_OK(tok_json_parse(&tj, dir, 12));
    const tok_spec *s = &tj.spec;
    TEST_CHECK(s->kind == TOK_KIND_BPE && s->n_vocab == 12, "llama3: kind %d, n_vocab %d", s->kind,
               s->n_vocab);
    TEST_CHECK(s->n_pre_regex == 1 && !strcmp(s->pre_regex[0], "\\p{N}{1,3}|\\s+"),
               "llama3: the Split regex should be the only one (ByteLevel has use_regex false)");
    TEST_CHECK(s->n_merges == 3 && !strcmp(s->merges[1], "\xc4\xa0 a"), "llama3: merges misread");
    TEST_CHECK(!strcmp(s->tokens[2], "\xc4\xa0") && !strcmp(s->tokens[7], "<|eot_id|>"),
               "llama3: token text misread");
    TEST_CHECK(s->token_types[0] == TOK_TYPE_NORMAL && s->token_types[6] == TOK_TYPE_CONTROL &&
                   s->token_types[8] == TOK_TYPE_USER && s->token_types[11] == TOK_TYPE_UNUSED &&
                   !strcmp(s->tokens[9], "[PAD9]"),
               "llama3: token types or padding wrong");
    TEST_CHECK(s->bos_id == 6 && s->eos_id == 7 && s->eot_id == 7 && s->unk_id == -1 &&
                   s->pad_id == -1,
               "llama3: special ids bos %d eos %d eot %d unk %d", s->bos_id, s->eos_id, s->eot_id,
               s->unk_id);
    TEST_CHECK(s->add_bos && !s->add_eos, "llama3: add_bos should come from the post-processor");
    TEST_CHECK(s->chat_template && !strcmp(s->chat_template, "{{ '<|start_header_id|>' }}"),
               "llama3: the 'default' chat template was not chosen");
    okv_tokenizer *t = NULL;
    TEST_OK(tokenizer_init(&t, s));
    TEST_CHECK(tokenizer_chat_kind(t) == CHAT_LLAMA3, "llama3: template not recognised");
    int32_t ids[16];
    int n = tokenizer_encode(t, " ab", 3, true, true, ids, 16);
    /* The Split isolates the space, so ' ab' is BOS, 'Ġ' and 'ab' (not 'Ġab'). */
    TEST_CHECK(n == 3 && ids[0] == 6 && ids[1] == 2 && ids[2] == 3, "llama3: ' ab' gave %d ids", n);
    tokenizer_free(t);
    tok_json_free(&tj);
    tok_json_free(&tj); /* twice: a zeroed struct */

    /* add_bos_token in the config beats the post-processor; the template may live in a file. */
    write_file("tokenizer_config.json", "{\"add_bos_token\":false,\"bos_token\":\"<|begin_of_text|>\"}");
    write_file("chat_template.jinja", "<|im_start|>{{ m }}");
    TEST_OK(tok_json_parse(&tj, dir, 0));
    TEST_CHECK(!tj.spec.add_bos && tj.spec.n_vocab == 9, "config add_bos_token false was ignored");
    TEST_CHECK(tj.spec.chat_template && !strcmp(tj.spec.chat_template, "<|im_start|>{{ m }}"),
               "chat_template.jinja was not read");
    tok_json_free(&tj);
    write_file("chat_template.jinja", NULL);
    printf("llama3-style: regex, merges, added tokens, padding, special ids, template list\n");
}

static const char llama2_json[] =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
    "\"pre_tokenizer\":null,"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\"},{\"type\":\"ByteFallback\"},"
    "{\"type\":\"Fuse\"},{\"type\":\"Strip\"}]},"
    "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\","
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x0A>\":3,\"\\u2581\":4,\"t\":5,\"o\":6,"
    "\"\\u2581t\":7,\"\\u2581to\":8,\"xyz\":9},"
    "\"merges\":[[\"\\u2581\",\"t\"],[\"\\u2581t\",\"o\"]]}}";

static void test_llama2(void) {
    write_file("tokenizer.json", llama2_json);
    write_file("tokenizer_config.json", "{\"add_bos_token\":true,\"bos_token\":\"<s>\","
                                        "\"eos_token\":\"</s>\",\"unk_token\":\"<unk>\"}");
    tok_json tj;
    TEST_OK(tok_json_parse(&tj, dir, 0));
    const tok_spec *s = &tj.spec;
    TEST_CHECK(s->kind == TOK_KIND_SPM && s->add_space_prefix && s->add_bos && s->n_vocab == 10,
               "llama2: kind %d, space prefix %d, add_bos %d", s->kind, s->add_space_prefix,
               s->add_bos);
    TEST_CHECK(s->n_merges == 2 && !strcmp(s->merges[0], "\xe2\x96\x81 t"),
               "llama2: pair-form merges misread");
    TEST_CHECK(s->token_types[3] == TOK_TYPE_BYTE && s->token_types[5] == TOK_TYPE_NORMAL &&
                   s->token_types[1] == TOK_TYPE_CONTROL,
               "llama2: byte or control types wrong");
    TEST_CHECK(s->scores && s->scores[7] == 0.0f && s->scores[8] == -1.0f && s->scores[9] < -1e8f,
               "llama2: merge-rank scores wrong");
    TEST_CHECK(s->bos_id == 1 && s->eos_id == 2 && s->unk_id == 0, "llama2: special ids wrong");
    okv_tokenizer *t = NULL;
    TEST_OK(tokenizer_init(&t, s));
    int32_t ids[16];
    int n = tokenizer_encode(t, "to", 2, true, false, ids, 16);
    TEST_CHECK(n == 2 && ids[0] == 1 && ids[1] == 8, "llama2: 'to' gave %d ids (%d %d)", n, ids[0],
               ids[1]);
    tokenizer_free(t);
    tok_json_free(&tj);
    printf("llama2-style: SentencePiece settings, byte tokens, merge-rank scores\n");
}

/* Replaces the first occurrence of from in the Llama-3 file and parses it. */
static int parse_variant(const char *from, const char *to, tok_json *tj) {
    static char buf[8192];
    const char *p = strstr(llama3_json, from);
    OKV_ASSERT(p);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - llama3_json), llama3_json, to, p + strlen(from));
    write_file("tokenizer.json", buf);
    okv_clear_error();
    return tok_json_parse(tj, dir, 0);
}

static void expect_error(const char *from, const char *to, const char *want, int line) {
    tok_json tj;
    int st = parse_variant(from, to, &tj);
    test_checks++;
    if (st != OKV_ERR_INPUT || !strstr(okv_last_error(), want) ||
        !strstr(okv_last_error(), "tokenizer")) {
        test_failures++;
        fprintf(stderr, "FAIL line %d: status %d, message '%s', wanted '%s'\n", line, st,
                okv_last_error(), want);
    }
    tok_json_free(&tj);
}
#define EXPECT_ERROR(from, to, want) expect_error(from, to, want, __LINE__)

static void test_variants(void) {
    write_file("tokenizer_config.json", NULL);
    tok_json tj;
    /* ByteLevel alone without use_regex: the text stays one piece. */
    TEST_OK(parse_variant("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}|\\\\s+\"},"
                          "\"behavior\":\"Isolated\",\"invert\":false},", "", &tj));
    TEST_CHECK(tj.spec.n_pre_regex == 1 && !strcmp(tj.spec.pre_regex[0], "[\\s\\S]+"),
               "ByteLevel without use_regex and no Split should be one catch-all piece");
    tok_json_free(&tj);
    TEST_OK(parse_variant("\"use_regex\":false", "\"use_regex\":true", &tj));
    TEST_CHECK(tj.spec.n_pre_regex == 2 && !strncmp(tj.spec.pre_regex[1], "'s|'t|'re", 9),
               "ByteLevel use_regex should add the GPT-2 regex after the Split");
    tok_json_free(&tj);
    TEST_OK(parse_variant("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}|\\\\s+\"},",
                          "{\"type\":\"Digits\",\"individual_digits\":true},{\"type\":\"Split\","
                          "\"pattern\":{\"String\":\"a\\\\E.\"},", &tj));
    TEST_CHECK(tj.spec.n_pre_regex == 2 && !strcmp(tj.spec.pre_regex[0], "\\p{N}") &&
                   !strcmp(tj.spec.pre_regex[1], "\\Qa\\E\\\\\\QE.\\E"),
               "Digits or a String Split misread (%s)", tj.spec.n_pre_regex > 1 ? tj.spec.pre_regex[1] : "");
    tok_json_free(&tj);
    TEST_OK(parse_variant("\"normalizer\":null", "\"normalizer\":{\"type\":\"NFC\"}", &tj));
    tok_json_free(&tj);

    EXPECT_ERROR("\"type\":\"BPE\"", "\"type\":\"Unigram\"", "model type 'Unigram' is not supported");
    EXPECT_ERROR("\"Isolated\"", "\"Removed\"", "Split has behavior 'Removed'");
    EXPECT_ERROR("\"invert\":false", "\"invert\":true", "invert true");
    EXPECT_ERROR("\"normalizer\":null", "\"normalizer\":{\"type\":\"Lowercase\"}",
                 "normalizer 'Lowercase' is not supported");
    EXPECT_ERROR("{\"type\":\"ByteLevel\",\"add_prefix_space\"",
                 "{\"type\":\"Whitespace\"},{\"type\":\"ByteLevel\",\"add_prefix_space\"",
                 "pre_tokenizer 'Whitespace' is not supported");
    EXPECT_ERROR("\"decoder\":{\"type\":\"ByteLevel\"}", "\"decoder\":{\"type\":\"WordPiece\"}",
                 "decoder 'WordPiece' is not supported");
    EXPECT_ERROR("\"a b\"", "\"ab\"", "merge 0 'ab' is not two tokens");
    EXPECT_ERROR("\"a b\"", "[\"a\",\"b c\"]", "a space inside a token");
    EXPECT_ERROR("\"b\":1", "\"b\":0", "vocab gives id 0 to both");
    EXPECT_ERROR("\"b\":1", "\"b\":-1", "vocab entry 'b' has no valid id");
    EXPECT_ERROR("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"
                 "\"use_regex\":false}", "{\"type\":\"Digits\"}",
                 "neither byte-level nor SentencePiece-style");
    EXPECT_ERROR("\"model\":{", "\"modelx\":{", "has no object 'model'");
    EXPECT_ERROR("{\"version\"", "{{\"version\"", "is not valid JSON");
    write_file("tokenizer_config.json", "{\"bos_token\":\"<bos>\"}");
    EXPECT_ERROR("\"a b\"", "\"a b\"", "bos_token '<bos>' is not a token of the vocabulary");
    write_file("tokenizer_config.json", "{\"bos_token\":");
    EXPECT_ERROR("\"a b\"", "\"a b\"", "tokenizer_config.json is not a JSON object");
    write_file("tokenizer_config.json", NULL);
    printf("variants: GPT-2 split, Digits, String Split, NFC; 15 malformed files rejected\n");
}

int main(void) {
    okv_log_init(0);
    snprintf(dir, sizeof dir, "%s/omnikv-test-tj-%d", test_env("TMPDIR", "/tmp"), (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    OKV_ASSERT(system(cmd) == 0);
    test_llama3();
    test_llama2();
    test_variants();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
