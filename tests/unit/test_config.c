/* test_config.c — the run config: defaults, layering file < environment < --set, every bad
 * value rejected with a message naming the key and the value, fractions vs counts, the two
 * spellings of do_select_layers, the policy default, config_budget against hand-computed values,
 * and a JSON round trip. */
#include "../../src/common.h"
#include "../../src/config.h"
#include "../test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp_dir[] = "/tmp/okv_test_config_XXXXXX";

static const char *write_tmp(const char *name, const char *text) {
    static char path[4][512];
    static int turn = 0;
    char *p = path[turn++ % 4];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "FAIL: cannot write %s\n", p);
        exit(1);
    }
    return p;
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void test_defaults(void) {
    okv_run_config c;
    memset(&c, 0x5a, sizeof c);
    config_defaults(&c);
    TEST_CHECK(c.policy == POLICY_DENSE && !c.policy_explicit, "default policy is dense");
    TEST_CHECK(c.n_filter_layers == 0, "no filter layers by default");
    TEST_CHECK(c.num_wait_load_layers == 1, "W default 1, got %d", c.num_wait_load_layers);
    /* the reference implementation's defaults (config.get(..., 4096 / "softmax_before_last")) */
    TEST_CHECK(c.num_selected == 4096.0, "k default 4096, got %g", c.num_selected);
    TEST_CHECK(c.selector == SELECTOR_SOFTMAX_BEFORE_LAST, "selector default softmax_before_last");
    TEST_CHECK(c.window_size == 16, "window default 16, got %d", c.window_size);
    TEST_CHECK(c.real_offload && c.dense_more, "real_offload and dense_more default true");
    TEST_CHECK(c.keep_first == 0 && c.keep_last == 0, "keep_first/last default 0");
    TEST_CHECK(c.min_selected == 0, "min_selected_tokens default 0 (the reference's plain k)");
    TEST_CHECK(c.threads == 0, "threads default 0");
    TEST_CHECK(c.kv_type == OKV_TYPE_F16, "kv_type default f16");
    TEST_OK(config_set(&c, "kv_type", "q4_0"));
    TEST_CHECK(c.kv_type == OKV_TYPE_Q4_0, "kv_type=q4_0 sets the q4_0 type");
    TEST_OK(config_set(&c, "kv_type", "f16"));
    TEST_CHECK(c.cpu_isa == OKV_CPU_ISA_AUTO, "cpu_isa default auto");
    TEST_CHECK(c.prefill_chunk == 512, "prefill_chunk default 512, got %d", c.prefill_chunk);
    TEST_CHECK(c.max_context_len == 0, "max_context_len default 0");
    TEST_CHECK(c.max_batch == 1, "max_batch default 1");
    TEST_CHECK(c.max_new_tokens == 256, "max_new_tokens default 256, got %d", c.max_new_tokens);
    TEST_CHECK(!c.ignore_eos && c.seed == 0, "ignore_eos false, seed 0");
    TEST_CHECK(c.temperature == 0.0f && c.top_k == 0 && c.top_p == 1.0f,
               "sampling defaults greedy, top_k 0, top_p 1");
}

static void test_layering(void) {
    okv_run_config c;
    config_defaults(&c);
    const char *path = write_tmp("layer.json", "{\"window_size\": 4, \"top_k\": 5, \"seed\": 7, "
                                               "\"temperature\": 0.5, \"max_batch\": 3}");
    setenv("OMNIKV_TOP_K", "9", 1);
    setenv("OMNIKV_SEED", "8", 1);
    setenv("OMNIKV_MAX_BATCH", "4", 1);
    TEST_OK(config_load_json(&c, path));
    TEST_OK(config_load_env(&c));
    TEST_OK(config_set(&c, "seed", "11"));
    TEST_CHECK(c.window_size == 4, "file value kept when nothing overrides it, got %d", c.window_size);
    TEST_CHECK(c.temperature == 0.5f, "file temperature 0.5, got %g", (double)c.temperature);
    TEST_CHECK(c.top_k == 9, "environment beats file: top_k 9, got %d", c.top_k);
    TEST_CHECK(c.max_batch == 4, "environment beats file: max_batch 4, got %d", c.max_batch);
    TEST_CHECK(c.seed == 11, "--set beats environment: seed 11, got %llu",
               (unsigned long long)c.seed);
    /* A bad environment value names the variable. */
    setenv("OMNIKV_WINDOW_SIZE", "0", 1);
    int st = config_load_env(&c);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "OMNIKV_WINDOW_SIZE") &&
                   has(okv_last_error(), "window_size"),
               "bad environment value: %s", okv_last_error());
    unsetenv("OMNIKV_TOP_K");
    unsetenv("OMNIKV_SEED");
    unsetenv("OMNIKV_MAX_BATCH");
    unsetenv("OMNIKV_WINDOW_SIZE");
    /* The alias of the reference implementation. */
    setenv("OMNIKV_CPU_NUM_THREADS", "6", 1);
    config_defaults(&c);
    TEST_OK(config_load_env(&c));
    TEST_CHECK(c.threads == 6, "OMNIKV_CPU_NUM_THREADS sets threads, got %d", c.threads);
    unsetenv("OMNIKV_CPU_NUM_THREADS");
    setenv("OMNIKV_CPU_ISA", "avx2", 1);
    config_defaults(&c);
    TEST_OK(config_load_env(&c));
    TEST_CHECK(c.cpu_isa == OKV_CPU_ISA_AVX2, "OMNIKV_CPU_ISA=avx2 sets cpu_isa, got %d", (int)c.cpu_isa);
    unsetenv("OMNIKV_CPU_ISA");
}

static void test_bad_values(void) {
    static const struct { const char *key, *value, *expect; } bad[] = {
        {"policy", "sparse", "omnikv or dense"},
        {"do_select_layers", "8,2", "ascending"},
        {"do_select_layers", "2,2", "distinct"},
        {"do_select_layers", "-1", "layer numbers >= 0"},
        {"do_select_layers", "2,,8", "ascending"},
        {"do_select_layers", "two", "ascending"},
        {"do_select_layers", "[2,8", "ascending"},
        {"num_wait_load_layers", "-1", ">= 0"},
        {"num_of_selected_tokens", "0", "fraction"},
        {"num_of_selected_tokens", "-0.5", "fraction"},
        {"num_of_selected_tokens", "2048.5", "whole token count"},
        {"num_of_selected_tokens", "lots", "fraction"},
        {"selector_cls", "random", "softmax_before_last"},
        {"window_size", "0", ">= 1"},
        {"real_offload", "maybe", "true or false"},
        {"dense_more", "false", "only dense_more=true is supported: wait layers are dense"},
        {"min_selected_tokens", "-1", ">= 0"},
        {"keep_first", "-1", ">= 0"},
        {"keep_last", "x", ">= 0"},
        {"threads", "-2", ">= 0"},
        {"cpu_num_threads", "-1", ">= 0"},
        {"kv_type", "bf16", "f16, f32, q8_0 or q4_0"},
        {"kv_type", "q4_1", "f16, f32, q8_0 or q4_0"},
        {"cpu_isa", "avx3", "auto, avx512, avx2, generic"},
        {"prefill_chunk", "0", ">= 1"},
        {"max_context_len", "-5", ">= 0"},
        {"max_batch", "0", ">= 1"},
        {"max_new_tokens", "-1", ">= 0"},
        {"max_new_tokens", "1.5", ">= 0"},
        {"ignore_eos", "2", "true or false"},
        {"seed", "-1", "whole number"},
        {"temperature", "-0.1", ">= 0"},
        {"temperature", "nan", ">= 0"},
        {"top_k", "-1", ">= 0"},
        {"top_p", "0", "0 < top_p <= 1"},
        {"top_p", "1.5", "0 < top_p <= 1"},
        /* Sizes whose larger values only exhaust memory have a stated limit (usage errors, not
         * a failed allocation); suffixed counts that overflow are refused, not wrapped. */
        {"threads", "1000000", "at most 1024"},
        {"max_batch", "100000000", "at most 4096"},
        {"micro_batches", "5000", "at most 4096"},
        {"prefill_chunk", "65537", "at most 65536"},
        {"max_context_len", "2G", "at most 1073741824"},
        {"max_context_len", "9999999999999999999K", "at most"},
        {"window_size", "257", "at most 256"},
        {"keep_last", "3X", ">= 0"},
        {"max_new_tokens", "16KK", ">= 0"},
        {"num_of_selected_tokens", "3G", "whole token count"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        okv_run_config c, before;
        config_defaults(&c);
        memcpy(&before, &c, sizeof c);
        okv_clear_error();
        int st = config_set(&c, bad[i].key, bad[i].value);
        const char *msg = okv_last_error();
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i].value);
        TEST_CHECK(st == OKV_ERR_USAGE, "%s=%s must be rejected", bad[i].key, bad[i].value);
        TEST_CHECK(has(msg, bad[i].key) && has(msg, quoted) && has(msg, bad[i].expect),
                   "%s=%s: message '%s' must name the key, the value and '%s'", bad[i].key,
                   bad[i].value, msg, bad[i].expect);
        TEST_CHECK(!memcmp(&c, &before, sizeof c), "%s=%s must leave the config unchanged",
                   bad[i].key, bad[i].value);
    }
    okv_run_config c;
    config_defaults(&c);
    int st = config_set(&c, "num_of_selected_tokenz", "5");
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "num_of_selected_tokenz"),
               "unknown key named: %s", okv_last_error());
    /* The reference implementation's own keys load and change nothing. */
    okv_run_config before;
    memcpy(&before, &c, sizeof c);
    TEST_OK(config_set(&c, "model_name", "../models/x"));
    TEST_OK(config_set(&c, "use_flash_attn", "true"));
    TEST_CHECK(!memcmp(&c, &before, sizeof c), "ignored keys change nothing");
}

/* Token counts take K/M/G suffixes (powers of 1024) wherever a count is read. */
static void test_suffixes(void) {
    okv_run_config c;
    config_defaults(&c);
    TEST_OK(config_set(&c, "max_context_len", "128K"));
    TEST_OK(config_set(&c, "expected_context", "1M"));
    TEST_OK(config_set(&c, "num_of_selected_tokens", "2k"));
    TEST_OK(config_set(&c, "keep_last", "16K"));
    TEST_OK(config_set(&c, "prefill_chunk", "1K"));
    TEST_CHECK(c.max_context_len == 131072 && c.expected_context == 1048576 &&
                   c.num_selected == 2048.0 && c.keep_last == 16384 && c.prefill_chunk == 1024,
               "suffixed counts: %d %d %g %d %d", c.max_context_len, c.expected_context,
               c.num_selected, c.keep_last, c.prefill_chunk);
    const char *path = write_tmp("suffix.json", "{\"max_context_len\": \"16K\"}");
    TEST_OK(config_load_json(&c, path));
    TEST_CHECK(c.max_context_len == 16384, "a JSON string count with a suffix: %d", c.max_context_len);
    static const struct { const char *s; int64_t lo, hi; bool ok; int64_t want; } cases[] = {
        {"0", 0, 10, true, 0},         {"1K", 0, 1 << 30, true, 1024},
        {"3m", 0, 1 << 30, true, 3145728}, {"1G", 0, 1 << 30, true, 1 << 30},
        {"2G", 0, 1 << 30, false, 0},  {"8589934591G", 0, INT64_MAX, true, 8589934591LL << 30},
        {"8589934592G", 0, INT64_MAX, false, 0}, {"-1", -5, 5, false, 0},
        {"+1", 0, 5, false, 0},        {"1.5K", 0, 1 << 30, false, 0},
        {"K", 0, 5, false, 0},         {"", 0, 5, false, 0},
        {"1 K", 0, 1 << 30, false, 0}, {"18446744073709551616", 0, INT64_MAX, false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t got = -7;
        bool ok = okv_parse_count(cases[i].s, cases[i].lo, cases[i].hi, &got);
        TEST_CHECK(ok == cases[i].ok && (!ok || got == cases[i].want),
                   "okv_parse_count('%s') = %d, %lld; want %d, %lld", cases[i].s, ok,
                   (long long)got, cases[i].ok, (long long)cases[i].want);
    }
}

/* A config file is one JSON object: text after it, or a key given twice, is refused. */
static void test_file_shape(void) {
    static const struct { const char *text, *expect; } bad[] = {
        {"{\"window_size\": 4}x", "more than one JSON value"},
        {"{\"window_size\": 4}\n{\"window_size\": 8}\n", "line 2"},
        {"{\"window_size\": 4, \"window_size\": 8}", "sets key window_size twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        okv_run_config c;
        config_defaults(&c);
        const char *path = write_tmp("shape.json", bad[i].text);
        okv_clear_error();
        int st = config_load_json(&c, path);
        TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), bad[i].expect),
                   "config file %zu: status %d, message '%s' lacks '%s'", i, st, okv_last_error(),
                   bad[i].expect);
    }
    okv_run_config c;
    config_defaults(&c);
    TEST_OK(config_load_json(&c, write_tmp("ws.json", "  {\"window_size\": 4}\n\n  ")));
    TEST_CHECK(c.window_size == 4, "white space around the object is fine");
}

static void test_fraction_and_budget(void) {
    okv_run_config c;
    config_defaults(&c);
    TEST_OK(config_set(&c, "num_of_selected_tokens", "0.067"));
    TEST_CHECK(c.num_selected == 0.067, "fraction stored as given");
    /* as the reference's int(f * N): int(0.067 * 1000) = int(67.0000...01) = 67; int(0.67) = 0
     * (no token, as there); int(8609.5) = 8609 */
    TEST_CHECK(config_budget(&c, 1000) == 67, "0.067 of 1000 -> 67, got %d", config_budget(&c, 1000));
    TEST_CHECK(config_budget(&c, 10) == 0, "0.067 of 10 -> 0, got %d", config_budget(&c, 10));
    TEST_CHECK(config_budget(&c, 128500) == 8609, "0.067 of 128500 -> 8609, got %d",
               config_budget(&c, 128500));
    TEST_OK(config_set(&c, "num_of_selected_tokens", "0.29"));
    TEST_CHECK(config_budget(&c, 100) == 28, "0.29 of 100 -> 28 (0.29 * 100 = 28.999...), got %d",
               config_budget(&c, 100));
    TEST_OK(config_set(&c, "num_of_selected_tokens", "2048"));
    TEST_CHECK(config_budget(&c, 100000) == 2048, "count 2048, got %d", config_budget(&c, 100000));
    TEST_CHECK(config_budget(&c, 100) == 2048, "a count is not cut to the prompt (the selector "
               "takes min(k, N)), got %d", config_budget(&c, 100));
    TEST_OK(config_set(&c, "num_of_selected_tokens", "1"));
    TEST_CHECK(config_budget(&c, 500) == 1, "1 is a count of one token, got %d",
               config_budget(&c, 500));
    /* Unlike the reference implementation a JSON 2048.0 is a count. */
    const char *p = write_tmp("k.json", "{\"num_of_selected_tokens\": 2048.0}");
    config_defaults(&c);
    c.num_selected = 0.5;
    TEST_OK(config_load_json(&c, p));
    TEST_CHECK(c.num_selected == 2048.0 && config_budget(&c, 100000) == 2048,
               "JSON 2048.0 is the count 2048, got %g", c.num_selected);
    p = write_tmp("k2.json", "{\"num_of_selected_tokens\": 0.5}");
    TEST_OK(config_load_json(&c, p));
    TEST_CHECK(config_budget(&c, 101) == 50, "JSON 0.5 of 101 -> 50, got %d", config_budget(&c, 101));
}

static void test_layers_and_policy(void) {
    okv_run_config c;
    config_defaults(&c);
    TEST_OK(config_set(&c, "do_select_layers", "2,8,18"));
    TEST_CHECK(c.n_filter_layers == 3 && c.filter_layers[0] == 2 && c.filter_layers[1] == 8 &&
                   c.filter_layers[2] == 18, "\"2,8,18\" parsed");
    TEST_CHECK(c.policy == POLICY_OMNIKV, "filter layers make the default policy omnikv");
    TEST_OK(config_set(&c, "do_select_layers", " [ 3, 9 ] "));
    TEST_CHECK(c.n_filter_layers == 2 && c.filter_layers[0] == 3 && c.filter_layers[1] == 9,
               "\"[3, 9]\" parsed");
    TEST_OK(config_set(&c, "do_select_layers", ""));
    TEST_CHECK(c.n_filter_layers == 0 && c.policy == POLICY_DENSE, "empty list: dense again");

    const char *p = write_tmp("list.json", "{\"do_select_layers\": [2, 8, 18]}");
    config_defaults(&c);
    TEST_OK(config_load_json(&c, p));
    TEST_CHECK(c.n_filter_layers == 3 && c.filter_layers[2] == 18 && c.policy == POLICY_OMNIKV,
               "JSON list parsed");
    /* An explicit policy wins whatever the member order. */
    p = write_tmp("dense_first.json", "{\"policy\": \"dense\", \"do_select_layers\": \"2,8\"}");
    config_defaults(&c);
    TEST_OK(config_load_json(&c, p));
    TEST_CHECK(c.policy == POLICY_DENSE && c.n_filter_layers == 2, "explicit dense kept");
    config_defaults(&c);
    TEST_OK(config_set(&c, "policy", "omnikv"));
    int st = config_validate(&c, 30);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "do_select_layers") &&
                   has(okv_last_error(), "policy=omnikv"),
               "omnikv without filter layers: %s", okv_last_error());
    TEST_OK(config_set(&c, "do_select_layers", "2,8,30"));
    st = config_validate(&c, 30);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "30 layers") &&
                   has(okv_last_error(), "layer 30"),
               "filter layer beyond the model: %s", okv_last_error());
    TEST_OK(config_validate(&c, 31));
    config_defaults(&c);
    TEST_OK(config_validate(&c, 30));

    /* Errors inside a file name the file and the key. */
    p = write_tmp("bad.json", "{\"window_size\": [1, 2]}");
    st = config_load_json(&c, p);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "bad.json") &&
                   has(okv_last_error(), "window_size"),
               "list for a scalar key: %s", okv_last_error());
    p = write_tmp("null.json", "{\"seed\": null}");
    st = config_load_json(&c, p);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "seed") && has(okv_last_error(), "null"),
               "null value: %s", okv_last_error());
    p = write_tmp("unknown.json", "{\"window_size\": 4,\n \"windw_size\": 4}");
    st = config_load_json(&c, p);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "windw_size"),
               "unknown key in a file: %s", okv_last_error());
    p = write_tmp("broken.json", "{\"window_size\": 4,\n\n \"seed\" 4}");
    st = config_load_json(&c, p);
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "not valid JSON") &&
                   has(okv_last_error(), "line 3"),
               "broken JSON: %s", okv_last_error());
    st = config_load_json(&c, "/nonexistent/omnikv.json");
    TEST_CHECK(st == OKV_ERR_USAGE && has(okv_last_error(), "/nonexistent/omnikv.json"),
               "missing file: %s", okv_last_error());
}

/* The reference implementation's example preset loads unchanged. */
static void test_reference_preset(void) {
    const char *p = write_tmp("example.json",
        "{\"cpu_num_threads\": 8, \"use_chat_template\": false, \"cot\": false,\n"
        " \"max_context_len\": 128500, \"model_name\": \"../models/Llama-3-8B-Instruct-262k\",\n"
        " \"load_in_8bit\": false, \"load_in_4bit\": false, \"model_cls\": \"multi\",\n"
        " \"cache_cls\": \"multi\", \"use_flash_attn\": true, \"do_select_layers\": \"2,8,18\",\n"
        " \"num_wait_load_layers\": 1, \"real_offload\": false, \"dense_more\": true,\n"
        " \"num_of_selected_tokens\": 0.067, \"selector_cls\": \"last\", \"window_size\": 16}");
    okv_run_config c;
    config_defaults(&c);
    TEST_OK(config_load_json(&c, p));
    TEST_CHECK(c.threads == 8 && c.max_context_len == 128500 && c.n_filter_layers == 3 &&
                   c.filter_layers[1] == 8 && c.num_wait_load_layers == 1 && !c.real_offload &&
                   c.num_selected == 0.067 && c.selector == SELECTOR_LAST &&
                   c.window_size == 16 && c.policy == POLICY_OMNIKV,
               "reference preset values");
}

static void test_json_round_trip(void) {
    okv_run_config a, b;
    config_defaults(&a);
    TEST_OK(config_set(&a, "do_select_layers", "1,5,9"));
    TEST_OK(config_set(&a, "num_wait_load_layers", "2"));
    TEST_OK(config_set(&a, "num_of_selected_tokens", "0.125"));
    TEST_OK(config_set(&a, "selector_cls", "exp"));
    TEST_OK(config_set(&a, "window_size", "8"));
    TEST_OK(config_set(&a, "real_offload", "false"));
    TEST_OK(config_set(&a, "min_selected_tokens", "96"));
    TEST_OK(config_set(&a, "keep_first", "4"));
    TEST_OK(config_set(&a, "keep_last", "2"));
    TEST_OK(config_set(&a, "threads", "3"));
    TEST_OK(config_set(&a, "kv_type", "q8_0"));
    TEST_OK(config_set(&a, "prefill_chunk", "64"));
    TEST_OK(config_set(&a, "max_context_len", "9000"));
    TEST_OK(config_set(&a, "max_batch", "4"));
    TEST_OK(config_set(&a, "max_new_tokens", "17"));
    TEST_OK(config_set(&a, "ignore_eos", "true"));
    TEST_OK(config_set(&a, "seed", "18446744073709551615"));
    TEST_OK(config_set(&a, "temperature", "0.7"));
    TEST_OK(config_set(&a, "top_k", "40"));
    TEST_OK(config_set(&a, "top_p", "0.9"));
    char *js = config_to_json(&a);
    TEST_CHECK(has(js, "\"temperature\":0.7,") && has(js, "\"do_select_layers\":[1,5,9]") &&
                   has(js, "\"seed\":\"18446744073709551615\""),
               "JSON text: %s", js);
    const char *p = write_tmp("round.json", js);
    free(js);
    config_defaults(&b);
    TEST_OK(config_load_json(&b, p));
    b.policy_explicit = a.policy_explicit; /* the file names the policy; the source did not */
    TEST_CHECK(!memcmp(&a, &b, sizeof a), "config_to_json -> config_load_json reproduces the struct");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    okv_log_init(0);
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_defaults();
    test_layering();
    test_bad_values();
    test_suffixes();
    test_file_shape();
    test_fraction_and_budget();
    test_layers_and_policy();
    test_reference_preset();
    test_json_round_trip();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    MPI_Finalize();
    return test_summary();
}
