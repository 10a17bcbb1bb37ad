/* cli.c — what every subcommand shares: option scanning, run-config layering (file, then
 * environment, then --set), the rank-0 decision shared with the other ranks, and model loading
 * for whole-model commands. Tested through tests/e2e/test_run_batch.sh. */
#include "cli.h"

#include <errno.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>


/* Whether argv[i] is -s or --long (or --long=VALUE). A flag with a value (val non-NULL) stores
 * it and consumes it; a missing value sets a->missing and the message. */
bool opt(args *a, const char *s, const char *l, const char **val) {
    const char *arg = a->argv[a->i];
    const char *inline_val = NULL;
    bool hit = s && !strcmp(arg, s);
    if (!hit && l) {
        size_t n = strlen(l);
        if (!strncmp(arg, l, n) && (arg[n] == 0 || (arg[n] == '=' && val))) {
            hit = true;
            if (arg[n] == '=') inline_val = arg + n + 1;
        }
    }
    if (!hit || !val) return hit;
    if (inline_val) {
        *val = inline_val;
    } else if (a->i + 1 < a->argc) {
        *val = a->argv[++a->i];
    } else {
        a->missing = true;
        okv_fail(OKV_ERR_USAGE, "%s: option %s needs a value; see `omnikv %s --help`", a->cmd,
                 arg, a->cmd);
    }
    return true;
}

int unknown_arg(const args *a) {
    return okv_fail(OKV_ERR_USAGE, "%s: unknown argument '%s'; see `omnikv %s --help`", a->cmd,
                    a->argv[a->i], a->cmd);
}

int parse_count(const args *a, const char *flag, const char *v, long lo, long *out) {
    int64_t x;
    if (!okv_parse_count(v, lo, INT32_MAX, &x))
        return okv_fail(OKV_ERR_USAGE, "%s: %s takes a whole number in %ld..%d (K, M and G "
                        "multiply by 1024, 1024^2, 1024^3: 16K = 16384), not '%s'", a->cmd, flag,
                        lo, INT32_MAX, v);
    *out = (long)x;
    return OKV_OK;
}

int cli_set(const args *a, cli_sets *s, const char *key, const char *val) {
    if (s->n == 256)
        return okv_fail(OKV_ERR_USAGE, "%s: more than 256 run-config settings on the command line",
                        a->cmd);
    s->key[s->n] = key;
    s->val[s->n] = val;
    s->owned[s->n] = NULL;
    s->n++;
    return OKV_OK;
}

int cli_set_kv(const args *a, cli_sets *s, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return okv_fail(OKV_ERR_USAGE, "%s: --set takes KEY=VALUE (for example --set "
                        "policy=dense), not '%s'", a->cmd, kv);
    char *copy = strdup(kv);
    OKV_ASSERT(copy);
    copy[eq - kv] = 0;
    int st = cli_set(a, s, copy, copy + (eq - kv) + 1);
    if (!st) s->owned[s->n - 1] = copy;
    else free(copy);
    return st;
}

void cli_sets_free(cli_sets *s) {
    for (int i = 0; i < s->n; i++) free(s->owned[i]);
    s->n = 0;
}

/* Defaults, then the file, the environment and the command line (DESIGN §8 order); each layer
 * that sets threads is remembered for the log line that reports the count. */
int load_config(okv_run_config *rc, const char *path, const cli_sets *s) {
    config_defaults(rc);
    int st;
    if (path && (st = config_load_json(rc, path))) return st;
    if (rc->threads) snprintf(rc->threads_from, sizeof rc->threads_from, "%s", "the config file");
    int before = rc->threads;
    if ((st = config_load_env(rc))) return st;
    if (rc->threads != before)
        snprintf(rc->threads_from, sizeof rc->threads_from, "%s", "OMNIKV_THREADS");
    before = rc->threads;
    for (int i = 0; i < s->n; i++)
        if ((st = config_set(rc, s->key[i], s->val[i]))) return st;
    if (rc->threads != before)
        snprintf(rc->threads_from, sizeof rc->threads_from, "%s", "-t or --set threads");
    if (!rc->threads) rc->threads_from[0] = 0;
    okv_cpu_isa_request(rc->cpu_isa);
    return OKV_OK;
}

void resolve_threads(okv_run_config *rc) {
    rc->threads = okv_threads_resolve(rc->threads, rc->threads_from);
}

/* Rank 0 decides; the others learn the outcome and the config. */
int share_config(okv_run_config *rc, int st) {
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1 && !st && okv_log_rank() == 0)
        OKV_INFO("%d ranks: rank 0 runs every layer of this command; the other ranks wait", size);
    return share_config_quiet(rc, st);
}

int share_config_quiet(okv_run_config *rc, int st) {
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size == 1) return st;
    if (MPI_Bcast(&st, 1, MPI_INT, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        okv_die(__FILE__, __LINE__, "MPI_Bcast of the start-up status");
    if (!st) config_bcast(rc);
    /* each rank resolves cpu_isa=auto against its own CPU when it builds its backend */
    if (!st) okv_cpu_isa_request(rc->cpu_isa);
    return st;
}

/* The whole configuration only at debug level: it is long, and results carry what matters. */
void log_config(const okv_run_config *rc) {
    char *js = config_to_json(rc);
    OKV_DEBUG("run config: %s", js);
    free(js);
}

int load_model(okv_model *m, const char *path, const okv_run_config *rc) {
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                          .need_head = true, .need_tokenizer = true,
                          .max_context_len = rc ? rc->max_context_len : 0};
    int st = model_load(m, path, &mo);
    if (st) return st == OKV_ERR_USAGE ? st : OKV_ERR_INPUT;
    if (!m->tok)
        return okv_fail(OKV_ERR_INPUT, "%s has no tokenizer omnikv can use", path);
    return OKV_OK;
}

bool want_help(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return true;
    return false;
}

int parse_ctx_list(const args *a, const char *v, int *ctx, int cap, int *n) {
    *n = 0;
    char buf[1024];
    if (strlen(v) >= sizeof buf)
        return okv_fail(OKV_ERR_USAGE, "%s: --ctx takes up to %d lengths, not %zu bytes of them",
                        a->cmd, cap, strlen(v));
    snprintf(buf, sizeof buf, "%s", v);
    /* Entries are split by hand: strtok would accept "512,,2048" by merging the commas. */
    for (char *p = buf;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        int64_t x;
        if (!okv_parse_count(p, 1, 1 << 30, &x) || *n == cap)
            return okv_fail(OKV_ERR_USAGE, "%s: --ctx takes up to %d comma-separated lengths in "
                            "1..%d such as 512,2K,128K (K = 1024, M = 1024^2), not '%s'", a->cmd,
                            cap, 1 << 30, v);
        ctx[(*n)++] = (int)x;
        if (!comma) break;
        p = comma + 1;
    }
    return OKV_OK;
}

int parse_int(const args *a, const char *flag, const char *v, long lo, int *out) {
    long x = 0;
    int st = parse_count(a, flag, v, lo, &x);
    if (!st) *out = (int)x;
    return st;
}

int parse_u64(const args *a, const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || *v == '-')
        return okv_fail(OKV_ERR_USAGE, "%s: %s takes a whole number >= 0, not '%s'", a->cmd, flag, v);
    *out = x;
    return OKV_OK;
}
