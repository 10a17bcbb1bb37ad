/* main.c — the omnikv command line (DESIGN §8): run, inspect, gen-model, bench, and the
 * subcommands still to come. Rank 0 parses, validates and broadcasts the run config; errors
 * end as one "omnikv: ..." sentence and the documented exit code.
 * Tested by tests/e2e/test_run_batch.sh. */
#include "common.h"
#include "config.h"
#include "engine/engine.h"
#include "engine/runner.h"
#include "engine/sampler.h"
#include "io/requests.h"
#include "model/genmodel.h"
#include "model/gguf.h"
#include "model/model.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- argument scanning ------------------------------------------------------------------- */

typedef struct args {
    int argc;
    char **argv;
    int i;
    const char *cmd;
    bool missing; /* a flag came without its value */
} args;

/* Whether argv[i] is -s or --long (or --long=VALUE). A flag with a value (val non-NULL) stores
 * it and consumes it; a missing value sets a->missing and the message. */
static bool opt(args *a, const char *s, const char *l, const char **val) {
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

static int unknown_arg(const args *a) {
    return okv_fail(OKV_ERR_USAGE, "%s: unknown argument '%s'; see `omnikv %s --help`", a->cmd,
                    a->argv[a->i], a->cmd);
}

static int parse_count(const args *a, const char *flag, const char *v, long lo, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo)
        return okv_fail(OKV_ERR_USAGE, "%s: %s takes a whole number >= %ld, not '%s'", a->cmd, flag,
                        lo, v);
    *out = x;
    return OKV_OK;
}

/* Run-config settings from the command line, applied in order after the file and environment. */
typedef struct cli_sets {
    const char *key[256];
    const char *val[256];
    char *owned[256]; /* "KEY=VALUE" copies split in place */
    int n;
} cli_sets;

static int cli_set(const args *a, cli_sets *s, const char *key, const char *val) {
    if (s->n == 256)
        return okv_fail(OKV_ERR_USAGE, "%s: more than 256 run-config settings on the command line",
                        a->cmd);
    s->key[s->n] = key;
    s->val[s->n] = val;
    s->owned[s->n] = NULL;
    s->n++;
    return OKV_OK;
}

static int cli_set_kv(const args *a, cli_sets *s, const char *kv) {
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

static void cli_sets_free(cli_sets *s) {
    for (int i = 0; i < s->n; i++) free(s->owned[i]);
    s->n = 0;
}

/* Defaults, then the file, the environment and the command line (DESIGN §8 order). */
static int load_config(okv_run_config *rc, const char *path, const cli_sets *s) {
    config_defaults(rc);
    int st;
    if (path && (st = config_load_json(rc, path))) return st;
    if ((st = config_load_env(rc))) return st;
    for (int i = 0; i < s->n; i++)
        if ((st = config_set(rc, s->key[i], s->val[i]))) return st;
    return OKV_OK;
}

/* Rank 0 decides; the others learn the outcome and the config. */
static int share_config(okv_run_config *rc, int st) {
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size == 1) return st;
    if (!st && okv_log_rank() == 0)
        OKV_INFO("%d ranks: rank 0 runs every layer; the other ranks wait until pipeline stages "
                 "exist", size);
    if (MPI_Bcast(&st, 1, MPI_INT, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        okv_die(__FILE__, __LINE__, "MPI_Bcast of the start-up status");
    if (!st) config_bcast(rc);
    return st;
}

static void log_config(const okv_run_config *rc) {
    char *js = config_to_json(rc);
    OKV_INFO("run config: %s", js);
    free(js);
}

static int load_model(okv_model *m, const char *path, const okv_run_config *rc) {
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                          .need_head = true, .need_tokenizer = true,
                          .max_context_len = rc ? rc->max_context_len : 0};
    int st = model_load(m, path, &mo);
    if (st) return st == OKV_ERR_USAGE ? st : OKV_ERR_INPUT;
    if (!m->tok)
        return okv_fail(OKV_ERR_INPUT, "%s has no tokenizer omnikv can use", path);
    return OKV_OK;
}

/* ---- help -------------------------------------------------------------------------------- */

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
        "  eval       built-in long-context tasks (not implemented yet)\n"
        "  calibrate  choose filter layers for a model (not implemented yet)\n"
        "  plan       pipeline stage plan for a model, context and rank count (not implemented yet)\n"
        "\n"
        "`omnikv COMMAND --help` documents each command's options.\n"
        "Exit codes: 0 all served; 1 some requests got error records; 2 usage or config error;\n"
        "3 model or input file error; other non-zero: internal failure.\n"
        "Logs go to stderr; OMNIKV_LOG=debug|info|warn|error sets their level (default info).\n");
}

static void help_run(FILE *f) {
    fprintf(f,
        "usage: omnikv run -m MODEL [-c CONFIG.json] (-p PROMPT | -f REQUESTS.jsonl)\n"
        "                  [-o RESULTS.jsonl] [-n MAX_NEW] [--temp T] [--top-k K] [--top-p P]\n"
        "                  [--seed S] [--chat] [--json] [--resume] [--set KEY=VALUE ...]\n"
        "\n"
        "  -m, --model MODEL     a .gguf file or a Hugging Face checkpoint directory (required)\n"
        "  -c, --config FILE     run config as a JSON object (default: none)\n"
        "  -p, --prompt TEXT     one prompt; prints the completion text on stdout\n"
        "  -f, --file FILE       JSONL requests, one object per line (\"-\": stdin); one JSON\n"
        "                        result per request to -o or stdout\n"
        "  -o, --output FILE     results file for -f (default: stdout)\n"
        "  -n, --max-new N       same as --set max_new_tokens=N (default 256)\n"
        "      --temp T          same as --set temperature=T (default 0: greedy)\n"
        "      --top-k K         same as --set top_k=K (default 0: off)\n"
        "      --top-p P         same as --set top_p=P (default 1: off)\n"
        "      --seed S          same as --set seed=S (default 0)\n"
        "      --chat            apply the model's chat template to plain prompts (default off;\n"
        "                        requests with \"messages\" always use it)\n"
        "      --json            with -p: print the result object instead of the text\n"
        "      --resume          with -f and -o: keep the results already in -o, retry its error\n"
        "                        records and serve only the requests it lacks, appending\n"
        "      --set KEY=VALUE   set a run-config key (repeatable; applied in order)\n"
        "  -h, --help            this text\n"
        "\n"
        "Request lines: {\"id\", \"prompt\" | \"messages\": [{\"role\", \"content\"}],\n"
        "  \"max_new_tokens\", \"temperature\", \"top_k\", \"top_p\", \"seed\", \"stop\": [strings],\n"
        "  \"ignore_eos\"}. A line that cannot be used gets {\"id\", \"error\"} and the batch goes on.\n"
        "Result lines: {\"id\", \"text\", \"tokens\", \"prompt_tokens\", \"finish_reason\",\n"
        "  \"ttft_ms\", \"prefill_tok_s\", \"decode_tok_s\", \"k\", \"policy\", \"metrics\"}.\n"
        "\n");
    config_print_help(f);
}

static void help_inspect(FILE *f) {
    fprintf(f,
        "usage: omnikv inspect MODEL\n"
        "\n"
        "  MODEL        a .gguf file (prints its header, metadata and tensors, then the derived\n"
        "               model configuration) or a Hugging Face directory (the configuration)\n"
        "  -h, --help   this text\n");
}

static void help_gen(FILE *f) {
    int n;
    const char *const *names = genmodel_shape_names(&n);
    fprintf(f,
        "usage: omnikv gen-model --shape NAME [--layers N] [--type T] [--seed S] -o FILE.gguf\n"
        "\n"
        "  --shape NAME     model shape (required):");
    for (int i = 0; i < n; i++) fprintf(f, " %s", names[i]);
    fprintf(f,
        "\n"
        "  --layers N       layer count instead of the shape's (default: the shape's)\n"
        "  --type T         weight type: f32, f16, bf16, q8_0, q4_0, q4_1 (default f16)\n"
        "  --seed S         seed of the random weights (default 0)\n"
        "  -o, --output F   the GGUF file to write (required)\n"
        "  -h, --help       this text\n");
}

static void help_bench(FILE *f) {
    fprintf(f,
        "usage: omnikv bench -m MODEL [-c CONFIG.json] [--ctx 512,2048,8192] [--gen N] [--json]\n"
        "                    [--set KEY=VALUE ...]\n"
        "\n"
        "For each context length: a synthetic prompt of that many random ids (seeded by the seed\n"
        "key, no special tokens), prefill timed, then N decode steps with ignore_eos. One sequence\n"
        "at a time (max_batch 1); max_context_len defaults to the largest context + N.\n"
        "\n"
        "  -m, --model MODEL   a .gguf file or a Hugging Face directory (required)\n"
        "  -c, --config FILE   run config as a JSON object (default: none)\n"
        "      --ctx LIST      comma-separated prompt lengths (default 512,2048,8192)\n"
        "      --gen N         generated tokens per context (default 32)\n"
        "      --json          print one JSON object instead of the table\n"
        "      --set KEY=VALUE set a run-config key (repeatable)\n"
        "  -h, --help          this text\n");
}

static bool want_help(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return true;
    return false;
}

/* ---- run --------------------------------------------------------------------------------- */

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
        fwrite(r->text, 1, r->text_len, stdout);
        fputc('\n', stdout);
    }
    return fflush(stdout) == 0 ? OKV_OK : okv_fail(OKV_ERR_INPUT, "cannot write to stdout");
}

static int sink_file(void *ctx, const okv_result *r) { return results_write(ctx, r); }

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
        else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &ra->sets, v) : 0;
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

/* Serves the requests on this rank. Returns 0, 1 (error records) or a failure status. */
static int serve(const run_args *ra, const okv_run_config *rc, okv_request_list *reqs) {
    okv_model model;
    okv_engine eng;
    okv_forward fw;
    okv_results out;
    memset(&eng, 0, sizeof eng);
    memset(&fw, 0, sizeof fw);
    memset(&out, 0, sizeof out);
    int st = load_model(&model, ra->model, rc);
    if (!st) st = config_validate(rc, model.cfg.n_layers);
    if (!st) st = engine_init(&eng, &model, rc, 0, model.cfg.n_layers, rc->max_batch);
    if (!st) st = forward_local_init(&fw, &eng);
    if (!st && ra->file) {
        if (ra->resume) {
            int skipped = requests_resume(reqs, ra->output);
            if (skipped < 0) st = -skipped;
        }
        if (!st) st = results_open(&out, ra->output, ra->resume);
    }
    int n_errors = 0;
    if (!st) {
        okv_runner_opts ro = {.chat = ra->chat, .progress_s = 5.0};
        prompt_out po = {.json = ra->json};
        st = ra->file ? runner_serve(&fw, model.tok, rc, &ro, reqs, sink_file, &out, &n_errors)
                      : runner_serve(&fw, model.tok, rc, &ro, reqs, sink_prompt, &po, &n_errors);
    }
    results_close(&out);
    forward_local_free(&fw);
    engine_free(&eng);
    model_free(&model);
    if (st) return st;
    return n_errors ? OKV_ERR_REQUEST : OKV_OK;
}

static int cmd_run(args *a, int rank) {
    run_args ra = {0};
    okv_run_config rc;
    config_defaults(&rc);
    okv_request_list reqs = {0};
    int st = OKV_OK;
    if (rank == 0) {
        st = parse_run(a, &ra);
        if (!st) st = load_config(&rc, ra.config, &ra.sets);
        if (!st) log_config(&rc);
    }
    st = share_config(&rc, st);
    if (rank != 0 || st) {
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
    if (!st) st = serve(&ra, &rc, &reqs);
    requests_free(&reqs);
    cli_sets_free(&ra.sets);
    return st;
}

/* ---- inspect ----------------------------------------------------------------------------- */

static const char *rope_scaling_name(rope_scaling_kind k) {
    switch (k) {
    case ROPE_SCALING_NONE: return "none";
    case ROPE_SCALING_LINEAR: return "linear";
    case ROPE_SCALING_LLAMA3: return "llama3";
    case ROPE_SCALING_DYNAMIC: return "dynamic";
    case ROPE_SCALING_YARN: return "yarn";
    }
    return "?";
}

static void print_model_config(const okv_model *m, FILE *f) {
    const okv_model_config *c = &m->cfg;
    fprintf(f, "model config:\n");
    fprintf(f, "  arch              %s\n", c->arch);
    fprintf(f, "  name              %s\n", c->name[0] ? c->name : "(none)");
    fprintf(f, "  layers            %d\n", c->n_layers);
    fprintf(f, "  dim               %d\n", c->dim);
    fprintf(f, "  ffn_dim           %d\n", c->ffn_dim);
    fprintf(f, "  heads             %d (kv heads %d, head_dim %d)\n", c->n_heads, c->n_kv_heads,
            c->head_dim);
    fprintf(f, "  vocab             %d\n", c->n_vocab);
    fprintf(f, "  ctx_train         %d\n", c->ctx_train);
    fprintf(f, "  norm_eps          %g\n", (double)c->norm_eps);
    fprintf(f, "  rope              theta %g, %d dims, scaling %s", (double)c->rope_theta,
            c->rope_dim, rope_scaling_name(c->rope_scaling));
    if (c->rope_scaling != ROPE_SCALING_NONE)
        fprintf(f, " (factor %g, original context %d)", (double)c->rope_factor, c->rope_orig_ctx);
    if (m->rope_factors.data) fprintf(f, ", per-frequency factors from rope_freqs.weight");
    fprintf(f, "\n");
    fprintf(f, "  tied embeddings   %s\n", c->tied_embeddings ? "yes" : "no");
    fprintf(f, "  qkv bias          %s\n", c->qkv_bias ? "yes" : "no");
    if (c->sliding_window) fprintf(f, "  sliding window    %d\n", c->sliding_window);
    uint64_t wb = model_layer_bytes(m, 0, c->n_layers);
    fprintf(f, "  layer weights     %.1f MiB\n", (double)wb / (1024.0 * 1024.0));
    uint64_t kv_tok = 2ull * c->n_layers * c->n_kv_heads * c->head_dim * 2;
    fprintf(f, "  KV per token      %llu bytes (f16, all layers)\n", (unsigned long long)kv_tok);
    if (m->tok) {
        static const char *const chat[] = {"none", "chatml", "llama3"};
        chat_kind ck = tokenizer_chat_kind(m->tok);
        fprintf(f, "  tokenizer         %d tokens, bos %d, eos %d, chat template %s\n",
                tokenizer_n_vocab(m->tok), (int)tokenizer_bos(m->tok), (int)tokenizer_eos(m->tok),
                ck >= CHAT_NONE && ck <= CHAT_LLAMA3 ? chat[ck] : "?");
    }
}

static int cmd_inspect(args *a) {
    const char *path = NULL;
    for (a->i = 2; a->i < a->argc; a->i++) {
        if (a->argv[a->i][0] == '-' || path) return unknown_arg(a);
        path = a->argv[a->i];
    }
    if (!path) return okv_fail(OKV_ERR_USAGE, "inspect: give the MODEL to inspect");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return okv_fail(OKV_ERR_INPUT, "cannot open model '%s': %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        gguf_file g;
        memset(&g, 0, sizeof g);
        int st = gguf_open(&g, path);
        if (st) {
            gguf_close(&g);
            return st;
        }
        gguf_print_summary(&g, stdout);
        gguf_close(&g);
    }
    okv_model m;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                          .need_head = true, .need_tokenizer = true};
    int st = model_load(&m, path, &mo);
    if (st) {
        /* The configuration is still worth showing when only the tokenizer is unusable. */
        char why[1024];
        snprintf(why, sizeof why, "%s", okv_last_error());
        model_free(&m);
        mo.need_tokenizer = false;
        if (model_load(&m, path, &mo)) {
            model_free(&m);
            okv_fail(OKV_ERR_INPUT, "%s", why);
            return OKV_ERR_INPUT;
        }
        OKV_WARN("%s", why);
    }
    print_model_config(&m, stdout);
    model_free(&m);
    return OKV_OK;
}

/* ---- gen-model --------------------------------------------------------------------------- */

static int cmd_gen_model(args *a) {
    const char *shape = NULL, *out = NULL, *type_name = "f16";
    long layers = 0, seed = 0;
    for (a->i = 2; a->i < a->argc; a->i++) {
        const char *v = NULL;
        int st = OKV_OK;
        if (opt(a, NULL, "--shape", &v)) shape = v;
        else if (opt(a, NULL, "--layers", &v)) st = v ? parse_count(a, "--layers", v, 1, &layers) : 0;
        else if (opt(a, NULL, "--type", &v)) type_name = v;
        else if (opt(a, NULL, "--seed", &v)) st = v ? parse_count(a, "--seed", v, 0, &seed) : 0;
        else if (opt(a, "-o", "--output", &v)) out = v;
        else return unknown_arg(a);
        if (a->missing) return OKV_ERR_USAGE;
        if (st) return st;
    }
    if (!shape || !out)
        return okv_fail(OKV_ERR_USAGE, "gen-model: --shape NAME and -o FILE.gguf are required");
    int t = okv_type_from_name(type_name);
    if (t < 0 || !okv_type_is_weight((okv_type)t))
        return okv_fail(OKV_ERR_USAGE, "gen-model: --type '%s' is not a weight type; use f32, "
                        "f16, bf16, q8_0, q4_0 or q4_1", type_name);
    double t0 = okv_now_s();
    int st = genmodel_write(out, shape, (int)layers, (okv_type)t, (uint64_t)seed);
    if (!st) OKV_INFO("wrote %s (shape %s, %s) in %.1f s", out, shape, type_name, okv_now_s() - t0);
    return st;
}

/* ---- bench ------------------------------------------------------------------------------- */

typedef struct bench_out {
    okv_result *res; /* [n] copies; text and tokens are not kept */
    int n;
} bench_out;

static int sink_bench(void *ctx, const okv_result *r) {
    bench_out *b = ctx;
    if (r->error) return okv_fail(OKV_ERR_USAGE, "bench: %s", r->error);
    b->res[b->n] = *r;
    b->res[b->n].text = NULL;
    b->res[b->n].tokens = NULL;
    b->n++;
    return OKV_OK;
}

/* Random prompt ids: no control, unknown or end-of-generation tokens, so every one is text. */
static void bench_prompt(const okv_tokenizer *tok, uint64_t seed, int32_t *ids, int n) {
    okv_rng rng;
    rng_seed(&rng, seed);
    int nv = tokenizer_n_vocab(tok);
    char piece[1 << 12];
    for (int i = 0; i < n;) {
        int32_t id = (int32_t)(rng_next(&rng) % (uint64_t)nv);
        if (tokenizer_is_eog(tok, id) || id == tokenizer_bos(tok) ||
            tokenizer_piece(tok, id, false, piece, sizeof piece) <= 0)
            continue;
        ids[i++] = id;
    }
}

static void bench_print(const okv_model *m, const okv_run_config *rc, const bench_out *b,
                        int gen, bool json) {
    if (json) {
        printf("{\"model\":\"%s\",\"policy\":\"%s\",\"gen\":%d,\"results\":[", m->cfg.name,
               rc->policy == POLICY_OMNIKV ? "omnikv" : "dense", gen);
        for (int i = 0; i < b->n; i++) {
            const okv_result *r = &b->res[i];
            const okv_result_metrics *x = &r->metrics;
            double steps = x->steps > 0 ? x->steps : 1;
            printf("%s{\"ctx\":%d,\"k\":%d,\"prefill_tok_s\":%.3f,\"decode_tok_s\":%.3f,"
                   "\"ttft_ms\":%.3f,\"kv_bytes_per_token\":%.1f,\"weight_bytes_per_token\":%.1f,"
                   "\"rows_per_token\":{\"dense\":%.1f,\"filter\":%.1f,\"sparse\":%.1f},"
                   "\"ms_per_token\":{\"select\":%.4f,\"attn_dense\":%.4f,\"attn_sparse\":%.4f,"
                   "\"matmul\":%.4f,\"other\":%.4f}}",
                   i ? "," : "", r->prompt_tokens, r->k, r->prefill_tok_s, r->decode_tok_s,
                   r->ttft_ms, x->bytes_kv / steps, x->bytes_weights / steps,
                   x->rows_dense / steps, x->rows_filter / steps, x->rows_sparse / steps,
                   x->t_select * 1e3 / steps, x->t_attn_dense * 1e3 / steps,
                   x->t_attn_sparse * 1e3 / steps, x->t_matmul * 1e3 / steps,
                   x->t_other * 1e3 / steps);
        }
        printf("]}\n");
        return;
    }
    printf("model %s, policy %s, %d decode steps per context\n", m->cfg.name,
           rc->policy == POLICY_OMNIKV ? "omnikv" : "dense", gen);
    printf("%8s %7s %13s %12s %10s %12s %12s %8s %8s %8s %8s %8s\n", "ctx", "k", "prefill tok/s",
           "decode tok/s", "ttft ms", "KV MiB/tok", "W MiB/tok", "select%", "dense%", "sparse%",
           "matmul%", "other%");
    for (int i = 0; i < b->n; i++) {
        const okv_result *r = &b->res[i];
        const okv_result_metrics *x = &r->metrics;
        double steps = x->steps > 0 ? x->steps : 1;
        double t = x->t_select + x->t_attn_dense + x->t_attn_sparse + x->t_matmul + x->t_other;
        double pct = t > 0 ? 100.0 / t : 0.0;
        printf("%8d %7d %13.1f %12.2f %10.1f %12.3f %12.3f %8.1f %8.1f %8.1f %8.1f %8.1f\n",
               r->prompt_tokens, r->k, r->prefill_tok_s, r->decode_tok_s, r->ttft_ms,
               x->bytes_kv / steps / 1048576.0, x->bytes_weights / steps / 1048576.0,
               x->t_select * pct, x->t_attn_dense * pct, x->t_attn_sparse * pct,
               x->t_matmul * pct, x->t_other * pct);
    }
}

static int parse_ctx_list(const args *a, const char *v, int *ctx, int cap, int *n) {
    *n = 0;
    const char *p = v;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 1 || x > 1 << 30 || (*end && *end != ',') || *n == cap)
            return okv_fail(OKV_ERR_USAGE, "%s: --ctx takes up to %d comma-separated lengths >= 1 "
                            "such as 512,2048,8192, not '%s'", a->cmd, cap, v);
        ctx[(*n)++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (!*n) return okv_fail(OKV_ERR_USAGE, "%s: --ctx needs at least one length", a->cmd);
    return OKV_OK;
}

static int cmd_bench(args *a, int rank) {
    const char *model_path = NULL, *config = NULL;
    int ctx[64], n_ctx = 3;
    ctx[0] = 512, ctx[1] = 2048, ctx[2] = 8192;
    long gen = 32;
    bool json = false;
    cli_sets sets = {0};
    okv_run_config rc;
    config_defaults(&rc);
    int st = OKV_OK;
    if (rank == 0) {
        for (a->i = 2; a->i < a->argc && !st; a->i++) {
            const char *v = NULL;
            if (opt(a, "-m", "--model", &v)) model_path = v;
            else if (opt(a, "-c", "--config", &v)) config = v;
            else if (opt(a, NULL, "--ctx", &v)) st = v ? parse_ctx_list(a, v, ctx, 64, &n_ctx) : 0;
            else if (opt(a, NULL, "--gen", &v)) st = v ? parse_count(a, "--gen", v, 1, &gen) : 0;
            else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &sets, v) : 0;
            else if (opt(a, NULL, "--json", NULL)) json = true;
            else st = unknown_arg(a);
            if (a->missing) st = OKV_ERR_USAGE;
        }
        if (!st && !model_path) st = okv_fail(OKV_ERR_USAGE, "bench: -m MODEL is required");
        if (!st) st = load_config(&rc, config, &sets);
        int max_ctx = 0;
        for (int i = 0; i < n_ctx; i++) max_ctx = OKV_MAX(max_ctx, ctx[i]);
        if (!st && rc.max_context_len == 0) rc.max_context_len = max_ctx + (int)gen;
        if (!st && rc.max_context_len < max_ctx + gen)
            st = okv_fail(OKV_ERR_USAGE, "bench: --ctx %d with --gen %ld needs max_context_len >= "
                          "%ld, but it is %d", max_ctx, gen, max_ctx + gen, rc.max_context_len);
        if (!st) {
            rc.max_batch = 1;
            rc.ignore_eos = true;
            rc.max_new_tokens = (int)gen;
            log_config(&rc);
        }
    }
    st = share_config(&rc, st);
    cli_sets_free(&sets);
    if (rank != 0 || st) return st;

    okv_model model;
    okv_engine eng;
    okv_forward fw;
    memset(&eng, 0, sizeof eng);
    memset(&fw, 0, sizeof fw);
    okv_request_list reqs = {0};
    bench_out bo = {0};
    st = load_model(&model, model_path, &rc);
    if (!st) st = config_validate(&rc, model.cfg.n_layers);
    if (!st) st = engine_init(&eng, &model, &rc, 0, model.cfg.n_layers, 1);
    if (!st) st = forward_local_init(&fw, &eng);
    if (!st) {
        reqs.items = calloc((size_t)n_ctx, sizeof *reqs.items);
        bo.res = calloc((size_t)n_ctx, sizeof *bo.res);
        OKV_ASSERT(reqs.items && bo.res);
        for (int i = 0; i < n_ctx; i++) {
            okv_request *r = &reqs.items[i];
            request_defaults(r);
            OKV_ASSERT(asprintf(&r->id, "ctx-%d", ctx[i]) >= 0);
            r->line = i + 1;
            r->ids = malloc(sizeof(int32_t) * (size_t)ctx[i]);
            OKV_ASSERT(r->ids);
            r->n_ids = ctx[i];
            bench_prompt(model.tok, rc.seed + (uint64_t)i, r->ids, ctx[i]);
        }
        reqs.n = n_ctx;
        okv_runner_opts ro = {.chat = false, .progress_s = 5.0};
        int n_errors = 0;
        st = runner_serve(&fw, model.tok, &rc, &ro, &reqs, sink_bench, &bo, &n_errors);
    }
    if (!st) bench_print(&model, &rc, &bo, (int)gen, json);
    free(bo.res);
    requests_free(&reqs);
    forward_local_free(&fw);
    engine_free(&eng);
    model_free(&model);
    return st;
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
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        if (rank == 0) help_top(stdout);
        return OKV_OK;
    }
    struct { const char *name; void (*help)(FILE *); } helps[] = {
        {"run", help_run}, {"inspect", help_inspect}, {"gen-model", help_gen},
        {"bench", help_bench},
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
    if (!strcmp(cmd, "eval") || !strcmp(cmd, "calibrate") || !strcmp(cmd, "plan"))
        return okv_fail(OKV_ERR_USAGE, "%s is not implemented yet", cmd);
    return okv_fail(OKV_ERR_USAGE, "unknown command '%s'; `omnikv --help` lists the commands", cmd);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    okv_log_init(rank);
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
