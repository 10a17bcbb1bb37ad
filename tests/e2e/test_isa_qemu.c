/* test_isa_qemu.c — one binary for every x86-64 node: SmolLM2's greedy tokens on a short prompt
 * agree (near-ties excepted) on every CPU vector path this machine has, and the default build run
 * under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512) logs the avx2 path, gives the native tokens
 * and refuses cpu_isa=avx512 with a usage error. Without qemu-x86_64 (Debian package qemu-user)
 * the emulated part is skipped with a message. */
#include "engine/engine.h"
#include "kernels/cpu_isa.h"
#include "model/tokenizer.h"
#include "common.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROMPT "The three primary colors are"
#define N_GEN 6  /* emulation decodes about one token a second */
#define N_TOP 8  /* logits kept per step for judging a near-tie */
/* Paths differ only in the order of float sums and in exp's last bits (each meets kernels/ref.c
 * within test_kernels' tolerances), but a last-bit change can flip the rounding of an int8
 * activation, and on this model logits then move by up to about 0.7. llama.cpp differs from
 * itself by 0.5-1.5 between two summation orders (tests/model/test_llamacpp.c), so that is the
 * tolerance: for the logits after the prompt, and for a near-tie, where both runs see the other's
 * token within it of their own best. */
#define TOL 1.5f

typedef struct greedy_run {
    int32_t tok[N_GEN];
    int32_t top_id[N_GEN][N_TOP];
    float top_logit[N_GEN][N_TOP];
    float *first; /* [n_vocab] logits after the prompt, native runs only */
} greedy_run;

/* The logit of id at step s, or -inf when id is not among that step's top N_TOP. */
static float logit_of(const greedy_run *r, int s, int32_t id) {
    for (int i = 0; i < N_TOP; i++)
        if (r->top_id[s][i] == id) return r->top_logit[s][i];
    return -INFINITY;
}

static void keep_top(greedy_run *r, int s, const float *logits, int V) {
    for (int i = 0; i < N_TOP; i++) {
        r->top_id[s][i] = -1;
        r->top_logit[s][i] = -INFINITY;
    }
    for (int v = 0; v < V; v++) {
        if (logits[v] <= r->top_logit[s][N_TOP - 1]) continue;
        int i = N_TOP - 1;
        for (; i > 0 && logits[v] > r->top_logit[s][i - 1]; i--) {
            r->top_id[s][i] = r->top_id[s][i - 1];
            r->top_logit[s][i] = r->top_logit[s][i - 1];
        }
        r->top_id[s][i] = v;
        r->top_logit[s][i] = logits[v];
    }
    r->tok[s] = r->top_id[s][0];
}

/* Greedy decoding of PROMPT with one thread on the path okv_cpu_isa_request last set. */
static void greedy(const okv_model *m, greedy_run *r) {
    const int V = m->cfg.n_vocab;
    int32_t ids[64];
    const int n = tokenizer_encode(m->tok, PROMPT, strlen(PROMPT), true, false, ids, 64);
    OKV_ASSERT(n > 0 && n <= 64);
    okv_run_config rc;
    config_defaults(&rc);
    rc.threads = 1;
    rc.max_context_len = 128;
    okv_engine e;
    TEST_OK(engine_init(&e, m, &rc, 0, m->cfg.n_layers, 1));
    TEST_OK(engine_seq_start(&e, 0, n));
    engine_embed(&e, ids, n);
    TEST_OK(engine_prefill(&e, 0, 0, n));
    const float *logits = engine_head(&e, n - 1, 1);
    if (r->first) memcpy(r->first, logits, (size_t)V * sizeof(float));
    for (int s = 0; s < N_GEN; s++) {
        keep_top(r, s, logits, V);
        engine_embed(&e, &r->tok[s], 1);
        TEST_OK(engine_decode(&e, (int[]){0}, 1));
        logits = engine_head(&e, 0, 1);
    }
    engine_seq_end(&e, 0);
    engine_free(&e);
}

/* a's tokens against b's: equal, or equal up to a step where both runs see the other's token
 * within TOL of their own best (a near-tie; the rest is then not compared). */
static void compare_runs(const char *what, const greedy_run *a, const greedy_run *b) {
    for (int s = 0; s < N_GEN; s++) {
        if (a->tok[s] == b->tok[s]) continue;
        const float gap_a = a->top_logit[s][0] - logit_of(a, s, b->tok[s]);
        const float gap_b = b->top_logit[s][0] - logit_of(b, s, a->tok[s]);
        TEST_CHECK(gap_a < TOL && gap_b < TOL,
                   "%s: step %d gives %d vs %d with top-2 gaps %.3f and %.3f, not near-ties (< %.1f)",
                   what, s, a->tok[s], b->tok[s], gap_a, gap_b, TOL);
        printf("%s: near-tie at step %d (gaps %.3f, %.3f < %.1f); compared up to here\n", what, s,
               gap_a, gap_b, TOL);
        return;
    }
    printf("%s: %d/%d greedy tokens equal\n", what, N_GEN, N_GEN);
}

/* The child's stdout: per step the token, then N_TOP "id logit" pairs. */
static void print_run(const greedy_run *r) {
    for (int s = 0; s < N_GEN; s++) {
        printf("%d", r->tok[s]);
        for (int i = 0; i < N_TOP; i++) printf(" %d %.9g", r->top_id[s][i], r->top_logit[s][i]);
        printf("\n");
    }
}

static int read_run(const char *path, greedy_run *r) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = 1;
    for (int s = 0; s < N_GEN && ok; s++) {
        ok = fscanf(f, "%d", &r->tok[s]) == 1;
        for (int i = 0; i < N_TOP && ok; i++)
            ok = fscanf(f, "%d %f", &r->top_id[s][i], &r->top_logit[s][i]) == 2;
    }
    fclose(f);
    return ok ? 0 : -1;
}

static bool file_has(const char *path, const char *needle) {
    char *text = test_read_file(path, NULL);
    const bool has = strstr(text, needle) != NULL;
    free(text);
    return has;
}

/* The shell's exit code (128 + the signal for a killed command), from system()'s status. */
static int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

static bool have_qemu(void) { return system("command -v qemu-x86_64 >/dev/null 2>&1") == 0; }

/* The default build under an emulated Haswell: this test's own greedy run, then omnikv itself. */
static void test_emulated(const char *self, const char *model_path, const greedy_run *native) {
    const char *bin = getenv("OMNIKV_BIN");
    char dir[] = "/tmp/okv_isa_qemu.XXXXXX", cmd[8192], out[1200], err[1200];
    OKV_ASSERT(mkdtemp(dir));
    snprintf(out, sizeof out, "%s/child.out", dir);
    snprintf(err, sizeof err, "%s/child.err", dir);
    snprintf(cmd, sizeof cmd, "OMNIKV_LOG=info qemu-x86_64 -cpu Haswell '%s' --greedy >'%s' 2>'%s'",
             self, out, err);
    int rc = exit_code(system(cmd));
    TEST_CHECK(rc == 0, "under qemu Haswell this test's greedy run exited with %d (132 is SIGILL: "
               "an instruction the CPU lacks); stderr in %s", rc, err);
    greedy_run emu = {0};
    if (rc == 0) {
        TEST_CHECK(file_has(err, "CPU kernels: avx2 path"),
                   "under qemu Haswell the log does not say the avx2 path was chosen (%s)", err);
        TEST_CHECK(read_run(out, &emu) == 0, "cannot read the emulated run's tokens from %s", out);
        compare_runs("qemu Haswell (avx2) vs native avx2", native, &emu);
    }

    TEST_CHECK(bin != NULL, "OMNIKV_BIN must name the omnikv binary");
    if (!bin) return;
    snprintf(out, sizeof out, "%s/run.json", dir);
    snprintf(err, sizeof err, "%s/run.err", dir);
    snprintf(cmd, sizeof cmd, "OMNIKV_LOG=info qemu-x86_64 -cpu Haswell '%s' run -m '%s' -p '%s' "
             "-n %d --json --set threads=1 --set max_context_len=128 >'%s' 2>'%s'",
             bin, model_path, PROMPT, N_GEN, out, err);
    rc = exit_code(system(cmd));
    TEST_CHECK(rc == 0, "under qemu Haswell `omnikv run` exited with %d (132 is SIGILL); stderr "
               "in %s", rc, err);
    if (rc == 0) {
        TEST_CHECK(file_has(err, "CPU kernels: avx2 path"),
                   "under qemu Haswell omnikv's log does not say the avx2 path was chosen (%s)", err);
        char *json = test_read_file(out, NULL);
        cJSON *res = cJSON_Parse(json);
        cJSON *toks = res ? cJSON_GetObjectItem(res, "tokens") : NULL;
        const int n = cJSON_GetArraySize(toks);
        int equal = n == N_GEN;
        for (int s = 0; s < n && equal; s++) equal = cJSON_GetArrayItem(toks, s)->valueint == emu.tok[s];
        TEST_CHECK(equal, "under qemu Haswell `omnikv run` gave other tokens than the test's own "
                   "avx2 greedy run there: %s", json);
        if (equal) printf("qemu Haswell: omnikv run chose avx2 and gave the same %d tokens\n", n);
        cJSON_Delete(res);
        free(json);
    }

    snprintf(cmd, sizeof cmd, "qemu-x86_64 -cpu Haswell '%s' run -m '%s' -p '%s' -n 1 --set "
             "cpu_isa=avx512 >/dev/null 2>'%s'", bin, model_path, PROMPT, err);
    rc = exit_code(system(cmd));
    const bool refused = rc == 2 && file_has(err, "cpu_isa=avx512 needs a CPU");
    TEST_CHECK(refused, "under qemu Haswell cpu_isa=avx512 should be a usage error (exit 2) naming "
               "the missing features; got exit %d, stderr in %s", rc, err);
    if (refused) printf("qemu Haswell: cpu_isa=avx512 refused with exit 2\n");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (test_failures == 0 && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

int main(int argc, char **argv) {
    okv_log_init(0);
    char model_path[1024];
    test_model_path(model_path, sizeof model_path);
    okv_model m;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true,
                          .need_tokenizer = true};
    TEST_OK(model_load(&m, model_path, &mo));
    if (argc > 1 && !strcmp(argv[1], "--greedy")) { /* the emulated child: path auto */
        greedy_run r = {0};
        greedy(&m, &r);
        print_run(&r);
        model_free(&m);
        return test_failures ? 1 : 0;
    }

    const int V = m.cfg.n_vocab;
    greedy_run runs[OKV_CPU_ISA_GENERIC + 1] = {0};
    int best = -1; /* the fastest path this CPU has: the others are compared with it */
    for (int i = OKV_CPU_ISA_AVX512; i <= OKV_CPU_ISA_GENERIC; i++) {
        if (!okv_cpu_isa_supported((okv_cpu_isa)i)) {
            printf("skip: this CPU lacks the %s path\n", okv_cpu_isa_name((okv_cpu_isa)i));
            continue;
        }
        okv_cpu_isa_request((okv_cpu_isa)i);
        runs[i].first = calloc((size_t)V, sizeof(float));
        greedy(&m, &runs[i]);
        if (best < 0) {
            best = i;
            continue;
        }
        char what[96];
        snprintf(what, sizeof what, "native %s vs %s", okv_cpu_isa_name((okv_cpu_isa)i),
                 okv_cpu_isa_name((okv_cpu_isa)best));
        float d = 0;
        for (int v = 0; v < V; v++) d = fmaxf(d, fabsf(runs[i].first[v] - runs[best].first[v]));

        printf("%s: logits after the prompt differ by at most %.3f (tolerance %.1f)\n", what, d, TOL);
        TEST_CHECK(d <= TOL, "%s: logits after the prompt differ by %.3f > %.1f", what, d, TOL);
        compare_runs(what, &runs[best], &runs[i]);
    }
    okv_cpu_isa_request(OKV_CPU_ISA_AUTO);

    if (!okv_cpu_isa_supported(OKV_CPU_ISA_AVX2)) {
        printf("skip: the emulated Haswell run is compared with this CPU's avx2 path, which it lacks\n");
    } else if (!have_qemu()) {
        printf("skip: qemu-x86_64 is not installed (Debian package qemu-user; scripts/setup.sh "
               "--test installs it): the default build was not run on an emulated AVX2-only CPU\n");
    } else {
        char self[1024];
        const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        OKV_ASSERT(n > 0);
        self[n] = 0;
        test_emulated(self, model_path, &runs[OKV_CPU_ISA_AVX2]);
    }
    for (int i = 0; i <= OKV_CPU_ISA_GENERIC; i++) free(runs[i].first);
    model_free(&m);
    return test_summary();
}
