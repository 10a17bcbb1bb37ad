/* cmd_run.c — `omnikv run`: a prompt or a JSONL batch through the runner, on one rank with every
 * layer, or under mpirun -np P as a pipeline of P stages (pipeline/stage.h). Tested by
 * tests/e2e/test_run_batch.sh and tests/mpi/. */
#include "cli.h"

#include "../engine/engine.h"
#include "../engine/runner.h"
#include "../engine/sampler.h"
#include "../io/requests.h"
#include "../model/genmodel.h"
#include "../model/gguf.h"
#include "../../pipeline/planner.h"
#include "../../pipeline/stage.h"
#include "../../pipeline/trace.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void help_run(FILE *f) {
    fprintf(f,
        "usage: omnikv run -m MODEL [-c CONFIG.json] (-p PROMPT | -f REQUESTS.jsonl)\n"
        "                  [-o RESULTS.jsonl] [-n MAX_NEW] [--temp T] [--top-k K] [--top-p P]\n"
        "                  [--seed S] [-t N] [--chat] [--json] [--resume] [--set KEY=VALUE ...]\n"
        "\n"
        "  -m, --model MODEL     a .gguf file or a Hugging Face checkpoint directory (required)\n"
        "  -c, --config FILE     run config as a JSON object (default: none)\n"
        "  -p, --prompt TEXT     one prompt; prints the completion on stdout as it is generated\n"
        "  -f, --file FILE       JSONL requests, one object per line (\"-\": stdin); one JSON\n"
        "                        result per request to -o or stdout\n"
        "  -o, --output FILE     results file for -f (default: stdout)\n"
        "  -n, --max-new N       same as --set max_new_tokens=N (default 256)\n"
        "      --temp T          same as --set temperature=T (default 0: greedy)\n"
        "      --top-k K         same as --set top_k=K (default 0: off)\n"
        "      --top-p P         same as --set top_p=P (default 1: off)\n"
        "      --seed S          same as --set seed=S (default 0)\n"
        "  -t, --threads N       same as --set threads=N: compute threads per rank (default:\n"
        "                        OMP_NUM_THREADS, else the cores granted to the rank)\n"
        "      --chat            apply the model's chat template to plain prompts (default off;\n"
        "                        requests with \"messages\" always use it)\n"
        "      --json            with -p: print the result object instead of the text\n"
        "      --resume          with -f and -o: keep the results already in -o, retry its error\n"
        "                        records and serve only the requests it lacks, appending (an id\n"
        "                        with a result there is skipped)\n"
        "      --set KEY=VALUE   set a run-config key (repeatable; applied in order)\n"
        "\n"
        "Under mpirun -np P the layers are split into P pipeline stages, one per rank:\n"
        "      --stages SPEC     same as --set stages=SPEC: a hand partition such as\n"
        "                        0-7,8-17,18-29 (default: the planner's, printed at start-up);\n"
        "                        one stage per rank, so more than one on a single rank is refused\n"
        "      --micro-batches M same as --set micro_batches=M (default: P, at most max_batch)\n"
        "      --transport T     same as --set transport=T: auto | mpi | mpi-cuda | nccl\n"
        "      --trace FILE      same as --set trace=FILE: a Chrome/Perfetto trace of every rank\n"
        "                        (one rank too), each request's span named by its id; the file\n"
        "                        is checked at start-up\n"
        "  -h, --help            this text\n"
        "\n"
        "Request lines: {\"id\", \"prompt\" | \"messages\": [{\"role\", \"content\"}],\n"
        "  \"max_new_tokens\", \"temperature\", \"top_k\", \"top_p\", \"seed\", \"stop\": [strings],\n"
        "  \"ignore_eos\"}. A line that cannot be used gets {\"id\", \"error\"} and the batch goes on:\n"
        "  text after the object, any other or repeated field, \\u0000 in a string, an id that is\n"
        "  not UTF-8, or an id already used on an earlier line (ids are unique).\n"
        "-o is checked before the model loads and written only once the run is set up: a file\n"
        "(through a symlink, to its target), a FIFO or /dev/stdout; not the -f file.\n"
        "Exit codes: 0 all served, 1 some error records, 2 usage or config, 3 model, input or\n"
        "results file (a failed write included), 4 out of memory.\n"
        "Result lines: {\"id\", \"text\", \"tokens\", \"prompt_tokens\", \"finish_reason\",\n"
        "  \"ttft_ms\", \"prefill_tok_s\", \"decode_tok_s\", \"k\", \"policy\", \"metrics\"}.\n"
        "\n");
    config_print_help(f);
}

typedef struct prompt_out {
    bool json;
} prompt_out;

static int sink_prompt(void *ctx, const okv_result *r) {
    const prompt_out *po = ctx;
    if (po->json) {
        char *s = result_to_json(r);
        puts(s);
        free(s);
    } else if (r->error) {
        fprintf(stderr, "omnikv: %s\n", r->error);
    } else {
        fputc('\n', stdout); /* the text itself went out through stream_prompt */
    }
    return fflush(stdout) == 0 ? OKV_OK : okv_fail(OKV_ERR_INPUT, "cannot write to stdout");
}

/* -p without --json: each piece of text goes to stdout as soon as the runner has it. */
static int stream_prompt(void *ctx, const okv_request *req, const char *text, size_t n) {
    (void)ctx;
    (void)req;
    fwrite(text, 1, n, stdout);
    return fflush(stdout) == 0 ? OKV_OK : okv_fail(OKV_ERR_INPUT, "cannot write to stdout");
}

static int sink_file(void *ctx, const okv_result *r) { return results_write(ctx, r); }

/* With --trace every result passes through here first: its request's span goes to the trace. */
typedef struct traced_sink {
    pipe_trace *trace;
    okv_result_sink sink;
    void *ctx;
} traced_sink;

static int sink_traced(void *ctx, const okv_result *r) {
    const traced_sink *ts = ctx;
    if (!r->error && r->n_tokens > 0)
        pipe_trace_request(ts->trace, r->req->id, r->t_prefill_s, r->token_times[r->n_tokens - 1],
                           r->prompt_tokens, r->n_tokens);
    return ts->sink(ts->ctx, r);
}

typedef struct run_args {
    const char *model, *config, *prompt, *file, *output;
    bool chat, json, resume;
    cli_sets sets;
} run_args;

static int parse_run(args *a, run_args *ra) {
    for (a->i = 2; a->i < a->argc; a->i++) {
        const char *v = NULL;
        int st = OKV_OK;
        if (opt(a, "-m", "--model", &v)) ra->model = v;
        else if (opt(a, "-c", "--config", &v)) ra->config = v;
        else if (opt(a, "-p", "--prompt", &v)) ra->prompt = v;
        else if (opt(a, "-f", "--file", &v)) ra->file = v;
        else if (opt(a, "-o", "--output", &v)) ra->output = v;
        else if (opt(a, "-n", "--max-new", &v)) st = v ? cli_set(a, &ra->sets, "max_new_tokens", v) : 0;
        else if (opt(a, NULL, "--temp", &v)) st = v ? cli_set(a, &ra->sets, "temperature", v) : 0;
        else if (opt(a, NULL, "--top-k", &v)) st = v ? cli_set(a, &ra->sets, "top_k", v) : 0;
        else if (opt(a, NULL, "--top-p", &v)) st = v ? cli_set(a, &ra->sets, "top_p", v) : 0;
        else if (opt(a, NULL, "--seed", &v)) st = v ? cli_set(a, &ra->sets, "seed", v) : 0;
        else if (opt(a, "-t", "--threads", &v)) st = v ? cli_set(a, &ra->sets, "threads", v) : 0;
        else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &ra->sets, v) : 0;
        else if (opt(a, NULL, "--stages", &v)) st = v ? cli_set(a, &ra->sets, "stages", v) : 0;
        else if (opt(a, NULL, "--micro-batches", &v)) st = v ? cli_set(a, &ra->sets, "micro_batches", v) : 0;
        else if (opt(a, NULL, "--transport", &v)) st = v ? cli_set(a, &ra->sets, "transport", v) : 0;
        else if (opt(a, NULL, "--trace", &v)) st = v ? cli_set(a, &ra->sets, "trace", v) : 0;
        else if (opt(a, NULL, "--chat", NULL)) ra->chat = true;
        else if (opt(a, NULL, "--json", NULL)) ra->json = true;
        else if (opt(a, NULL, "--resume", NULL)) ra->resume = true;
        else return unknown_arg(a);
        if (a->missing) return OKV_ERR_USAGE;
        if (st) return st;
    }
    if (!ra->model) return okv_fail(OKV_ERR_USAGE, "run: -m MODEL is required");
    if (!ra->prompt == !ra->file)
        return okv_fail(OKV_ERR_USAGE, "run: give exactly one of -p PROMPT and -f REQUESTS.jsonl");
    if (ra->output && !ra->file)
        return okv_fail(OKV_ERR_USAGE, "run: -o applies to -f; -p prints to stdout");
    if (ra->json && !ra->prompt)
        return okv_fail(OKV_ERR_USAGE, "run: --json applies to -p; -f always writes JSON lines");
    if (ra->resume && (!ra->file || !ra->output || !strcmp(ra->output, "-")))
        return okv_fail(OKV_ERR_USAGE, "run: --resume needs -f REQUESTS and -o RESULTS (a file)");
    return OKV_OK;
}

static int serve_with(const okv_forward *fw, const okv_tokenizer *tok, const run_args *ra,
                      const okv_run_config *rc, okv_request_list *reqs, okv_results *out,
                      pipe_trace *trace, int *n_errors) {
    okv_runner_opts ro = {.chat = ra->chat, .progress_s = rc->progress_s,
                          .stream = ra->prompt && !ra->json ? stream_prompt : NULL};
    prompt_out po = {.json = ra->json};
    traced_sink ts = {.trace = trace, .sink = ra->file ? sink_file : sink_prompt,
                      .ctx = ra->file ? (void *)out : (void *)&po};
    return trace->on ? runner_serve(fw, tok, rc, &ro, reqs, sink_traced, &ts, n_errors)
                     : runner_serve(fw, tok, rc, &ro, reqs, ts.sink, ts.ctx, n_errors);
}

/* Serves the requests on this rank alone into out (prepared, not yet started). Returns 0, 1
 * (error records) or a failure status. */
/* One rank's start-up line of what it holds, counted as `plan` and `bench` count it (and as the
 * pipeline's per-rank lines do): sequences of max_context_len with max_new_tokens generated. */
static void log_memory(const okv_engine *e, const okv_run_config *rc) {
    const int gen = OKV_MIN(rc->max_new_tokens, e->max_ctx);
    uint64_t wb, kb, bb;
    engine_memory(e, e->max_ctx - gen, gen, &wb, &kb, &bb);
    char w[32], kv[32], bank[32];
    planner_fmt_bytes((double)wb, w, sizeof w);
    planner_fmt_bytes((double)kb, kv, sizeof kv);
    planner_fmt_bytes((double)bb, bank, sizeof bank);
    OKV_INFO("memory for %d sequence(s) of %d prompt + %d generated tokens: weights %s, KV cache "
             "%s, Context Bank %s", e->max_slots, e->max_ctx - gen, gen, w, kv, bank);
    if (e->bank.bytes) {
        char desc[256];
        bank_describe(&e->bank, desc, sizeof desc);
        OKV_INFO("Context Bank: %s", desc);
    }
}

static int serve(const run_args *ra, const okv_run_config *rc, okv_request_list *reqs,
                 okv_results *out) {
    okv_model model;
    okv_engine eng;
    okv_forward fw;
    pipe_trace trace;
    okv_forward traced;
    memset(&eng, 0, sizeof eng);
    memset(&fw, 0, sizeof fw);
    memset(&trace, 0, sizeof trace);
    memset(&traced, 0, sizeof traced);
    int st = load_model(&model, ra->model, rc);
    if (!st) st = config_validate(rc, model.cfg.n_layers);
    if (!st) st = engine_init(&eng, &model, rc, 0, model.cfg.n_layers, rc->max_batch);
    if (!st) log_memory(&eng, rc);
    if (!st) st = forward_local_init(&fw, &eng);
    if (!st) st = pipe_trace_init(&trace, rc->trace, PIPE_TRACE_CAP, MPI_COMM_SELF);
    if (!st) pipe_trace_forward_init(&traced, &fw, &trace);
    if (!st && ra->file) st = results_start(out);
    int n_errors = 0;
    if (!st) st = serve_with(&traced, model.tok, ra, rc, reqs, out, &trace, &n_errors);
    int st_close = results_close(out);
    if (!st) st = st_close;
    if (!st && trace.on) {
        char name[1][96];
        snprintf(name[0], sizeof name[0], "rank 0: layers 0-%d", model.cfg.n_layers - 1);
        st = pipe_trace_write(&trace, rc->trace, MPI_COMM_SELF, name);
    }
    if (traced.ctx) pipe_trace_forward_free(&traced);
    pipe_trace_free(&trace);
    forward_local_free(&fw);
    engine_free(&eng);
    model_free(&model);
    if (st) return st;
    return n_errors ? OKV_ERR_REQUEST : OKV_OK;
}

/* Serves the requests as a pipeline over every rank (collective). pre is rank 0's status so
 * far; rank 0's out is prepared and is started only once every rank has set up, so a refused
 * plan leaves the results file as it was. Rank 0 returns 0, 1 or a failure status; the other
 * ranks return once rank 0 stops them. */
static int serve_pipeline(const run_args *ra, const okv_run_config *rc, okv_request_list *reqs,
                          okv_results *out, int rank, int pre) {
    /* Only rank 0 parsed the command line; every rank opens the model itself. */
    char model[4096] = "";
    if (rank == 0) snprintf(model, sizeof model, "%s", ra->model);
    CHECK_MPI(MPI_Bcast(model, (int)sizeof model, MPI_CHAR, 0, MPI_COMM_WORLD));
    pipe_ctx pc;
    int st = pipe_setup(&pc, model, rc, pre);
    int n_errors = 0;
    if (!st) {
        if (rank == 0) {
            okv_forward fw;
            pipe_forward(&pc, &fw);
            if (ra->file) st = results_start(out);
            if (!st) st = serve_with(&fw, pc.model.tok, ra, &pc.rc, reqs, out, &pc.trace, &n_errors);
            int st_close = results_close(out);
            if (!st) st = st_close;
        } else {
            pipe_stage_run(&pc);
        }
        /* A failure that stops serving ends the job from main (MPI_Abort) while the other
         * ranks still wait for work, so nothing collective may run before it. */
        if (st > OKV_ERR_REQUEST) return st;
        st = pipe_finish(&pc);
    }
    if (rank == 0) results_close(out);
    pipe_free(&pc);
    if (st) return st;
    return n_errors ? OKV_ERR_REQUEST : OKV_OK;
}

/* A hand partition names one stage per rank; on one rank anything but a single stage would be
 * ignored, so it is refused. */
static int check_stages_one_rank(const okv_run_config *rc) {
    int first[OKV_MAX_STAGES + 1], n = 0;
    if (!rc->stages[0] || planner_parse_stages(rc->stages, -1, first, OKV_MAX_STAGES, &n) ||
        n == 1)
        return OKV_OK;
    return okv_fail(OKV_ERR_USAGE, "stages=%s splits the layers into %d pipeline stages, but this "
                    "run has one rank; start it under mpirun -np %d or drop --stages", rc->stages,
                    n, n);
}

int cmd_run(args *a, int rank) {
    run_args ra = {0};
    okv_run_config rc;
    config_defaults(&rc);
    okv_request_list reqs = {0};
    int st = OKV_OK;
    if (rank == 0) {
        st = parse_run(a, &ra);
        if (!st) st = load_config(&rc, ra.config, &ra.sets);
        if (!st) st = pipe_trace_check(rc.trace);
        if (!st) log_config(&rc);
    }
    st = share_config_quiet(&rc, st);
    int size = 1;
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    if (st || (rank != 0 && size == 1)) {
        cli_sets_free(&ra.sets);
        return st;
    }
    if (size == 1) resolve_threads(&rc); /* a pipeline's ranks each resolve their own */
    if (rank != 0) {
        st = serve_pipeline(&ra, &rc, &reqs, NULL, rank, OKV_OK);
        cli_sets_free(&ra.sets);
        return st;
    }
    if (ra.file) {
        st = requests_read_jsonl(ra.file, &reqs);
    } else {
        reqs.items = calloc(1, sizeof *reqs.items);
        OKV_ASSERT(reqs.items);
        request_defaults(&reqs.items[0]);
        reqs.items[0].id = strdup("prompt");
        reqs.items[0].prompt = strdup(ra.prompt);
        OKV_ASSERT(reqs.items[0].id && reqs.items[0].prompt);
        reqs.n = 1;
    }
    okv_results out;
    memset(&out, 0, sizeof out);
    if (!st && size == 1) st = check_stages_one_rank(&rc);
    if (!st && ra.file) st = results_prepare(&out, ra.output, ra.file, ra.resume, &reqs);
    if (size > 1) st = serve_pipeline(&ra, &rc, &reqs, &out, rank, st);
    else if (!st) st = serve(&ra, &rc, &reqs, &out);
    results_close(&out);
    requests_free(&reqs);
    cli_sets_free(&ra.sets);
    return st;
}
