/* cli.h — shared pieces of the subcommands (src/cli/cmd_*.c): option scanning, run-config
 * layering, sharing rank 0's decision, model loading. Tested through tests/e2e. */
#ifndef OKV_CLI_H
#define OKV_CLI_H

#include "../common.h"
#include "../config.h"
#include "../model/model.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct args {
    int argc;
    char **argv;
    int i;
    const char *cmd;
    bool missing; /* a flag came without its value */
} args;

/* Run-config settings from the command line, applied in order after the file and environment. */
typedef struct cli_sets {
    const char *key[256];
    const char *val[256];
    char *owned[256]; /* "KEY=VALUE" copies split in place */
    int n;
} cli_sets;

/* Whether argv[i] is -s or --long (or --long=VALUE). A flag with a value (val non-NULL) stores
 * it and consumes it; a missing value sets a->missing and the message. */
bool opt(args *a, const char *s, const char *l, const char **val);
int unknown_arg(const args *a);
/* A count flag: lo..2^31-1, with okv_parse_count's K/M/G suffixes. */
int parse_count(const args *a, const char *flag, const char *v, long lo, long *out);
int parse_int(const args *a, const char *flag, const char *v, long lo, int *out);
int parse_u64(const args *a, const char *flag, const char *v, uint64_t *out);
/* "512,2K,128K" into ctx[0..*n), each in 1..2^30. */
int parse_ctx_list(const args *a, const char *v, int *ctx, int cap, int *n);
int cli_set(const args *a, cli_sets *s, const char *key, const char *val);
int cli_set_kv(const args *a, cli_sets *s, const char *kv);
void cli_sets_free(cli_sets *s);
/* Defaults, then the file, the environment and the command line (DESIGN §8 order). */
int load_config(okv_run_config *rc, const char *path, const cli_sets *s);
/* Fixes rc->threads (> 0 afterwards) for this rank and logs the count with its source. */
void resolve_threads(okv_run_config *rc);
/* Rank 0 decides; the others learn the outcome and the config. share_config also says that rank
 * 0 runs the command alone; run, which pipelines, uses share_config_quiet. */
int share_config(okv_run_config *rc, int st);
int share_config_quiet(okv_run_config *rc, int st);
void log_config(const okv_run_config *rc);
/* The whole model with its tokenizer (run, bench, eval, calibrate on one rank). */
int load_model(okv_model *m, const char *path, const okv_run_config *rc);
bool want_help(int argc, char **argv);
/* The preset in configs/ (or $OMNIKV_CONFIGS) for a model: with shape non-NULL the preset whose
 * model_shape is that name, else one whose shape has cfg's dimensions. Writes its path. */
bool preset_find(const okv_model_config *cfg, const char *shape, char *path, size_t cap);

/* The subcommands: each returns an okv_status (the exit code). */
int cmd_run(args *a, int rank);
int cmd_inspect(args *a);
int cmd_gen_model(args *a);
int cmd_bench(args *a, int rank);
int cmd_eval(args *a, int rank);
int cmd_calibrate(args *a, int rank);
int cmd_plan(args *a);
void help_run(FILE *f);
void help_inspect(FILE *f);
void help_gen(FILE *f);
void help_bench(FILE *f);
void help_eval(FILE *f);
void help_calibrate(FILE *f);
void help_plan(FILE *f);

#endif
