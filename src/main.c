/* main.c — the omnikv command line (DESIGN §8): dispatches to src/cli/cmd_*.c. Rank 0 parses,
 * validates and broadcasts the run config; errors end as one "omnikv: ..." sentence and the
 * documented exit code. Tested by tests/e2e/test_run_batch.sh. */
#include "cli/cli.h"
#include "common.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void help_top(FILE *f) {
    fprintf(f,
        "omnikv — long-context LLM inference with OmniKV dynamic context selection\n"
        "\n"
        "usage: omnikv COMMAND [options]      (works the same under mpirun -np P)\n"
        "\n"
        "commands:\n"
        "  run        generate for a prompt (-p) or a JSONL batch of requests (-f)\n"
        "  inspect    print a model's file summary and derived configuration\n"
        "  gen-model  write a synthetic model of a named shape as GGUF\n"
        "  bench      prefill and decode throughput at given context lengths\n"
        "  eval       built-in long-context tasks over contexts x depths x variants\n"
        "  calibrate  choose filter layers for a model from its attention\n"
        "  plan       pipeline stage plan, memory per rank and predicted decode speed\n"
        "\n"
        "`omnikv COMMAND --help` documents each command's options; `omnikv --version` prints the\n"
        "version and the commit the build was configured from.\n"
        "Exit codes: 0 all served; 1 some requests got error records (plan: the job does not\n"
        "fit); 2 usage or config error; 3 model or input file error; other non-zero: internal\n"
        "failure.\n"
        "Logs go to stderr; OMNIKV_LOG=debug|info|warn|error sets their level (default info).\n");
}

/* ---- main -------------------------------------------------------------------------------- */


/* Ranks without work wait for rank 0 without spinning on a core it needs. */
static void wait_for_all(void) {
    MPI_Request rq;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &rq) != MPI_SUCCESS)
        okv_die(__FILE__, __LINE__, "MPI_Ibarrier");
    int done = 0;
    while (!done) {
        MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        if (!done) nanosleep(&(struct timespec){.tv_nsec = 2000000}, NULL);
    }
}

static int dispatch(int argc, char **argv, int rank) {
    if (argc < 2) {
        if (rank == 0) help_top(stderr);
        return okv_fail(OKV_ERR_USAGE, "give a command; `omnikv --help` lists them");
    }
    const char *cmd = argv[1];
    args a = {.argc = argc, .argv = argv, .i = 2, .cmd = cmd};
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        if (rank == 0) printf("omnikv %s (commit %s)\n", OMNIKV_VERSION, OMNIKV_COMMIT);
        return OKV_OK;
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        if (rank == 0) help_top(stdout);
        return OKV_OK;
    }
    struct { const char *name; void (*help)(FILE *); } helps[] = {
        {"run", help_run}, {"inspect", help_inspect}, {"gen-model", help_gen},
        {"bench", help_bench}, {"eval", help_eval}, {"calibrate", help_calibrate},
        {"plan", help_plan},
    };
    for (size_t i = 0; i < sizeof helps / sizeof *helps; i++)
        if (!strcmp(cmd, helps[i].name) && want_help(argc, argv)) {
            if (rank == 0) helps[i].help(stdout);
            return OKV_OK;
        }
    if (!strcmp(cmd, "run")) return cmd_run(&a, rank);
    if (!strcmp(cmd, "bench")) return cmd_bench(&a, rank);
    if (!strcmp(cmd, "inspect")) return rank == 0 ? cmd_inspect(&a) : OKV_OK;
    if (!strcmp(cmd, "gen-model")) return rank == 0 ? cmd_gen_model(&a) : OKV_OK;
    if (!strcmp(cmd, "eval")) return cmd_eval(&a, rank);
    if (!strcmp(cmd, "calibrate")) return cmd_calibrate(&a, rank);
    if (!strcmp(cmd, "plan")) return rank == 0 ? cmd_plan(&a) : OKV_OK;
    return okv_fail(OKV_ERR_USAGE, "unknown command '%s'; `omnikv --help` lists the commands", cmd);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    okv_log_init(rank);
    okv_node_init();
    int st = dispatch(argc, argv, rank);
    /* Error records (1) are a served batch; anything above is a failure of the run. */
    if (st > OKV_ERR_REQUEST && rank == 0) {
        fprintf(stderr, "omnikv: %s\n", okv_last_error());
        fflush(stderr);
        if (size > 1) MPI_Abort(MPI_COMM_WORLD, st);
    }
    if (size > 1) wait_for_all();
    MPI_Finalize();
    return st;
}
