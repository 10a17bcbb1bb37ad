/* test_util.h — small helpers shared by the C tests: checks that count failures and print the
 * failing condition, the model and cache paths from the environment, file reading. */
#ifndef OKV_TEST_UTIL_H
#define OKV_TEST_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int test_failures = 0;
static int test_checks = 0;

#define TEST_CHECK(cond, ...) \
    do { \
        test_checks++; \
        if (!(cond)) { \
            test_failures++; \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__); \
            fputc('\n', stderr); \
        } \
    } while (0)

/* A call returning an okv_status that must succeed; stops the test otherwise. */
#define TEST_OK(expr) \
    do { \
        int st_ = (expr); \
        test_checks++; \
        if (st_ != 0) { \
            fprintf(stderr, "FAIL %s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, st_, \
                    okv_last_error()); \
            exit(1); \
        } \
    } while (0)

static inline int test_summary(void) {
    printf("%d checks, %d failed\n", test_checks, test_failures);
    return test_failures ? 1 : 0;
}

static inline const char *test_env(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static inline const char *test_cache(void) {
    static char buf[1024];
    const char *c = getenv("OMNIKV_CACHE");
    if (c && *c) return c;
    snprintf(buf, sizeof buf, "%s/.cache/omnikv", test_env("HOME", "/root"));
    return buf;
}

static inline const char *test_src(void) { return test_env("OMNIKV_SRC", "."); }

static inline bool test_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* The default model; a missing file fails the test with what to do. */
static inline void test_model_path(char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", test_cache());
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "FAIL: the cache path %s is too long\n", test_cache());
        exit(1);
    }
    if (!test_file_exists(buf)) {
        fprintf(stderr, "FAIL: the default model %s is missing; run scripts/setup.sh --test\n", buf);
        exit(1);
    }
}

/* Whole file, NUL-terminated; exits the test when unreadable. */
static inline char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "FAIL: cannot read %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "FAIL: cannot read %s\n", path);
        exit(1);
    }
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

#endif
