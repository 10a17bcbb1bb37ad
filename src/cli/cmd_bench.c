/* cmd_bench.c — `omnikv bench`: throughput per context and variant, on one rank or a pipeline, with
 * docs/BENCHMARKS.md's latency protocol, the per-step time split, bytes per token and memory held.
 * Tested by tests/e2e/test_run_batch.sh and tests/e2e/test_plots.sh. */
#include "cli.h"

#include "../engine/engine.h"
#include "../engine/runner.h"
#include "../engine/sampler.h"
#include "../io/requests.h"
#include "../policy/policy.h"
#include "../../pipeline/stage.h"
#include "../../pipeline/trace.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_MAX_CTX 64
#define BENCH_MAX_VARIANTS 16

void help_bench(FILE *f) {
    fprintf(f,
        "usage: omnikv bench -m MODEL [-c CONFIG.json] [--ctx 512,2048,8192] [--gen N]\n"
        "                    [--variants dense,2048,0.067] [--batch B] [--runs R] [--warmup W]\n"
        "                    [--json] [-o FILE.json] [--set KEY=VALUE ...]\n"
        "\n"
        "For each variant and context length: B synthetic prompts of that many random ids (seeded\n"
        "by the seed key, no special tokens), prefill timed, then N decode steps with ignore_eos,\n"
        "the B sequences decoded together (max_batch B; default 1). Each (variant, context) runs\n"
        "R times and reports the median with min and max; before them, W warm-up runs at the\n"
        "longest context are discarded. max_context_len defaults to the largest context + N. Under\n"
        "mpirun -np P the layers are split into P pipeline stages as `omnikv run` splits them, and\n"
        "with B > 1 the B sequences form min(P, B) micro-batches in different stages at once.\n"
        "\n"
        "  -m, --model MODEL   a .gguf file or a Hugging Face directory (required)\n"
        "  -c, --config FILE   run config as a JSON object (default: none)\n"
        "      --ctx LIST      comma-separated prompt lengths (default 512,2048,8192)\n"
        "      --gen N         generated tokens per run (default 32)\n"
        "      --variants LIST dense, and OmniKV budgets (a count, or a fraction below 1, or\n"
        "                      omnikv:BUDGET) with the run config's filter layers (default: the\n"
        "                      run config as it is)\n"
        "      --batch B       sequences served together per run (default 1)\n"
        "      --runs R        measured runs per (variant, context) (default 3)\n"
        "      --warmup W      discarded runs per variant (default 1)\n"
        "      --json          print one JSON object instead of the tables\n"
        "  -o, --output FILE   also write the JSON object to FILE\n"
        "      --set KEY=VALUE set a run-config key (repeatable)\n"
        "  -t, --threads N     compute threads per rank (default: OMP_NUM_THREADS, else the\n"
        "                      cores granted to the rank)\n"
        "      --fill KIND     prefill (default) or synthetic: every prompt position but the last\n"
        "                      gets generated K/V rows instead of a prefill (the run-config key\n"
        "                      fill), so decode at 512K-1M tokens is timed in minutes; every\n"
        "                      table row then says so, and prefill/s and ttft are not prefill's\n"
        "  -h, --help          this text\n"
        "\n"
        "Per-token time is split as the engines count it, summed over the stages: dense attention\n"
        "(dense, wait and filter layers), sparse attention (sparse layers over the selected\n"
        "Context Bank rows and the generated tail; the CPU backend reads bank rows in place, so the\n"
        "bank gather is part of it), selection (score and top-k), matmul (projections, MLP and\n"
        "the output head) and other (norms, RoPE, KV stores); `rest` is the rest of the step:\n"
        "sampling, and across ranks the stage-boundary messages and waits.\n"
        "Bank MiB/tok is what the sparse layers read from the Context Bank: k rows per bank layer.\n"
        "With B > 1 a run's figures are the batch's: tok/s counts the tokens that arrive once every\n"
        "sequence has its first token, from that moment to the last token (in a pipeline the last\n"
        "micro-batch's final steps run narrower, a small share of the span); prefill/s counts every\n"
        "prompt token until the last first token; ttft is the slowest sequence's; per-token figures\n"
        "are per generated token of the batch (a step's weights are read once for all B tokens,\n"
        "and a sequence's own step takes about B times `decode ms`). When micro-batches overlap\n"
        "across stages, the stages' times add up to more than a token's, and rest shows 0. --batch\n"
        "sets max_batch; the run config's is not used.\n");
}

typedef struct bench_variant {
    char name[32];
    okv_policy_kind policy;
    double budget; /* num_of_selected_tokens for omnikv */
} bench_variant;

/* One served request, as the sink saw it, or one run of a batch (batch_run). */
typedef struct bench_run {
    double ttft_ms, prefill_tok_s, decode_tok_s;
    double t_prefill_s;
    double *t_tok; /* [n_gen] when each token arrived (a copy; NULL in a batch's figures) */
    okv_result_metrics m;
    int prompt_tokens, k, n_gen;
} bench_run;

typedef struct bench_sink {
    bench_run *runs; /* [cap] */
    int n, cap;
} bench_sink;

static int sink_bench(void *ctx, const okv_result *r) {
    bench_sink *b = ctx;
    if (r->error) return okv_fail(OKV_ERR_USAGE, "bench: %s", r->error);
    OKV_ASSERT(b->n < b->cap); /* one result per request */
    bench_run *x = &b->runs[b->n++];
    x->ttft_ms = r->ttft_ms;
    x->prefill_tok_s = r->prefill_tok_s;
    x->decode_tok_s = r->decode_tok_s;
    x->m = r->metrics;
    x->prompt_tokens = r->prompt_tokens;
    x->k = r->k;
    x->n_gen = r->n_tokens;
    x->t_prefill_s = r->t_prefill_s;
    x->t_tok = malloc(sizeof(double) * (size_t)OKV_MAX(r->n_tokens, 1));
    OKV_ASSERT(x->t_tok);
    if (r->n_tokens) memcpy(x->t_tok, r->token_times, sizeof(double) * (size_t)r->n_tokens);
    return OKV_OK;
}

static void metrics_add(okv_result_metrics *a, const okv_result_metrics *b) {
#define METRICS_ADD(name, type, what) a->name += b->name;
    OKV_METRICS_FIELDS(METRICS_ADD)
#undef METRICS_ADD
}

/* The figures of n sequences served together, as one run. Decode tok/s is the batch at full
 * width: the tokens that arrived after every sequence had its first token, over the span from
 * that moment to the last token (a pipeline starts decoding the first sequences while it still
 * prefills the others, and that span would mix prefill into decode). Prefill tok/s is every
 * prompt token over the span from the first prefill queued to the last first token; ttft is the
 * slowest sequence's. The metrics are summed with `steps` counting decode tokens, so what cell_of
 * divides by it is per generated token. For n = 1 these are the sequence's own figures. */
static bench_run batch_run(const bench_run *r, int n) {
    for (int i = 0; i < n; i++) OKV_ASSERT(r[i].n_gen >= 1); /* --gen >= 1 with ignore_eos */
    bench_run b = r[0];
    b.t_tok = NULL;
    double t_prefill = r[0].t_prefill_s, t_full = r[0].t_tok[0], t_last = r[0].t_tok[0];
    long decode_tokens = 0, prompt = 0;
    memset(&b.m, 0, sizeof b.m);
    for (int i = 0; i < n; i++) {
        t_prefill = fmin(t_prefill, r[i].t_prefill_s);
        t_full = fmax(t_full, r[i].t_tok[0]);
        t_last = fmax(t_last, r[i].t_tok[r[i].n_gen - 1]);
        b.ttft_ms = fmax(b.ttft_ms, r[i].ttft_ms);
        decode_tokens += r[i].n_gen - 1;
        prompt += r[i].prompt_tokens;
        metrics_add(&b.m, &r[i].m);
    }
    long in_window = 0;
    for (int i = 0; i < n; i++)
        for (int j = 1; j < r[i].n_gen; j++) in_window += r[i].t_tok[j] > t_full;
    b.m.steps = (double)decode_tokens;
    b.decode_tok_s = in_window > 0 && t_last > t_full ? in_window / (t_last - t_full) : 0.0;
    b.prefill_tok_s = t_full > t_prefill ? prompt / (t_full - t_prefill) : 0.0;
    return b;
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

/* Median, min and max of v[0..n) (sorted in place). */
typedef struct spread { double median, min, max; } spread;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static spread spread_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    spread s = {.min = v[0], .max = v[n - 1]};
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

/* The figures of one (variant, context): spreads over the measured runs, per-token means. */
typedef struct bench_cell {
    const bench_variant *var;
    int ctx, k, runs;
    spread ttft_ms, decode_ms, prefill_tok_s;
    double decode_tok_s;
    double ms_dense, ms_sparse, ms_select, ms_matmul, ms_other, ms_rest;
    double kv_bytes, weight_bytes, bank_bytes;   /* per token */
    double rows_dense, rows_filter, rows_sparse; /* per token */
    double gb_s;                                 /* bytes read per second of decode */
    uint64_t mem_weights, mem_kv, mem_bank;
    /* the row cache over all of the variant's runs (staged gathers only; rows 0 otherwise) */
    double cache_rows, cache_hit_rate, cache_saved_per_step; /* bytes per sequence step */
} bench_cell;

/* Latency spreads over the runs; the breakdown and bytes come from the run with the median
 * decode latency, so they describe the same run as the median (an outlier run cannot skew them). */
static void cell_of(bench_cell *c, const bench_run *r, int n, double bank_row_bytes) {
    double *ttft = calloc((size_t)n * 4, sizeof(double)), *dms = ttft + n, *pf = ttft + 2 * n;
    double *order = ttft + 3 * n;
    OKV_ASSERT(ttft);
    for (int i = 0; i < n; i++) {
        ttft[i] = r[i].ttft_ms;
        dms[i] = order[i] = r[i].decode_tok_s > 0 ? 1e3 / r[i].decode_tok_s : 0;
        pf[i] = r[i].prefill_tok_s;
    }
    c->runs = n;
    c->k = r[0].k;
    c->ttft_ms = spread_of(ttft, n);
    c->decode_ms = spread_of(dms, n);
    c->prefill_tok_s = spread_of(pf, n);
    c->decode_tok_s = c->decode_ms.median > 0 ? 1e3 / c->decode_ms.median : 0;
    int mid = 0;
    for (int i = 0; i < n; i++)
        if (order[i] == dms[(n - 1) / 2]) mid = i;
    free(ttft);
    const okv_result_metrics *m = &r[mid].m;
    double steps = m->steps > 0 ? m->steps : 1;
    c->ms_dense = 1e3 * m->t_attn_dense / steps, c->ms_sparse = 1e3 * m->t_attn_sparse / steps;
    c->ms_select = 1e3 * m->t_select / steps, c->ms_matmul = 1e3 * m->t_matmul / steps;
    c->ms_other = 1e3 * m->t_other / steps;
    c->kv_bytes = m->bytes_kv / steps, c->weight_bytes = m->bytes_weights / steps;
    c->bank_bytes = bank_row_bytes * OKV_MIN(c->k, c->ctx);
    c->ms_rest = OKV_MAX(0.0, c->decode_ms.median - c->ms_dense - c->ms_sparse - c->ms_select -
                                  c->ms_matmul - c->ms_other);
    c->rows_dense = m->rows_dense / steps, c->rows_filter = m->rows_filter / steps;
    c->rows_sparse = m->rows_sparse / steps;
    c->gb_s = (c->kv_bytes + c->weight_bytes) * c->decode_tok_s / 1e9;
}

static cJSON *spread_json(spread s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "median", s.median);
    cJSON_AddNumberToObject(o, "min", s.min);
    cJSON_AddNumberToObject(o, "max", s.max);
    return o;
}

static char *bench_json(const char *model_name, const okv_run_config *rc, const bench_cell *cells,
                        int n, int gen, int runs, int warmup, int ranks) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model_name);
    cJSON_AddNumberToObject(root, "ranks", ranks);
    cJSON_AddNumberToObject(root, "threads", rc->threads);
    cJSON_AddNumberToObject(root, "batch", rc->max_batch);
    cJSON_AddNumberToObject(root, "gen", gen);
    cJSON_AddNumberToObject(root, "runs", runs);
    cJSON_AddNumberToObject(root, "warmup", warmup);
    cJSON_AddStringToObject(root, "policy", rc->policy == POLICY_OMNIKV ? "omnikv" : "dense");
    cJSON *filters = cJSON_AddArrayToObject(root, "do_select_layers");
    for (int i = 0; i < rc->n_filter_layers; i++)
        cJSON_AddItemToArray(filters, cJSON_CreateNumber(rc->filter_layers[i]));
    cJSON *res = cJSON_AddArrayToObject(root, "results");
    for (int i = 0; i < n; i++) {
        const bench_cell *c = &cells[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "ctx", c->ctx);
        cJSON_AddStringToObject(o, "fill", rc->fill_synthetic ? "synthetic" : "prefill");
        cJSON_AddStringToObject(o, "variant", c->var->name);
        cJSON_AddStringToObject(o, "policy", c->var->policy == POLICY_OMNIKV ? "omnikv" : "dense");
        cJSON_AddNumberToObject(o, "k", c->k);
        cJSON_AddNumberToObject(o, "runs", c->runs);
        cJSON_AddNumberToObject(o, "prefill_tok_s", c->prefill_tok_s.median);
        cJSON_AddNumberToObject(o, "decode_tok_s", c->decode_tok_s);
        cJSON_AddNumberToObject(o, "ttft_ms", c->ttft_ms.median);
        cJSON_AddItemToObject(o, "ttft_ms_spread", spread_json(c->ttft_ms));
        cJSON_AddItemToObject(o, "decode_ms_per_token", spread_json(c->decode_ms));
        cJSON_AddItemToObject(o, "prefill_tok_s_spread", spread_json(c->prefill_tok_s));
        cJSON_AddNumberToObject(o, "kv_bytes_per_token", c->kv_bytes);
        cJSON_AddNumberToObject(o, "weight_bytes_per_token", c->weight_bytes);
        cJSON_AddNumberToObject(o, "bank_bytes_per_token", c->bank_bytes);
        cJSON_AddNumberToObject(o, "read_gb_s", c->gb_s);
        cJSON *rows = cJSON_AddObjectToObject(o, "rows_per_token");
        cJSON_AddNumberToObject(rows, "dense", c->rows_dense);
        cJSON_AddNumberToObject(rows, "filter", c->rows_filter);
        cJSON_AddNumberToObject(rows, "sparse", c->rows_sparse);
        cJSON *ms = cJSON_AddObjectToObject(o, "ms_per_token");
        cJSON_AddNumberToObject(ms, "attn_dense", c->ms_dense);
        cJSON_AddNumberToObject(ms, "attn_sparse", c->ms_sparse);
        cJSON_AddNumberToObject(ms, "select", c->ms_select);
        cJSON_AddNumberToObject(ms, "matmul", c->ms_matmul);
        cJSON_AddNumberToObject(ms, "other", c->ms_other);
        cJSON_AddNumberToObject(ms, "rest", c->ms_rest);
        cJSON *mem = cJSON_AddObjectToObject(o, "memory_bytes");
        cJSON_AddNumberToObject(mem, "weights", (double)c->mem_weights);
        cJSON_AddNumberToObject(mem, "kv_cache", (double)c->mem_kv);
        cJSON_AddNumberToObject(mem, "bank", (double)c->mem_bank);
        if (c->cache_rows > 0) {
            cJSON *rcj = cJSON_AddObjectToObject(o, "row_cache");
            cJSON_AddNumberToObject(rcj, "hit_rate", c->cache_hit_rate);
            cJSON_AddNumberToObject(rcj, "bytes_saved_per_step", c->cache_saved_per_step);
        }
        cJSON_AddItemToArray(res, o);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void bench_tables(const char *model_name, const okv_run_config *rc, const bench_cell *cells,
                         int n, int gen, int runs, int warmup, int ranks) {
    const double MiB = 1048576.0;
    printf("model %s, %d sequence(s) of %d decode steps per run, median of %d run(s) after %d "
           "warm-up, %d thread(s), %d rank(s)\n", model_name, rc->max_batch, gen, runs, warmup,
           rc->threads, ranks);
    if (rc->max_batch > 1)
        printf("(batch %d: per-token figures are per generated token of the batch; a sequence's "
               "own step takes about %d times the decode ms)\n", rc->max_batch, rc->max_batch);
    const char *fill = rc->fill_synthetic ? "  synthetic fill" : "";
    if (rc->fill_synthetic)
        printf("(synthetic fill: the prompts' KV cache and bank rows are generated, not prefilled; "
               "decode figures are real, prefill/s and ttft are not a prefill's)\n");
    printf("%8s %-10s %6s %10s %9s %20s %8s | %7s %7s %7s %7s %7s %7s  (ms per token)\n", "ctx",
           "variant", "k", "prefill/s", "ttft ms", "decode ms [min-max]", "tok/s", "dense",
           "sparse", "select", "matmul", "other", "rest");
    for (int i = 0; i < n; i++) {
        const bench_cell *c = &cells[i];
        char dms[40];
        snprintf(dms, sizeof dms, "%.2f [%.2f-%.2f]", c->decode_ms.median, c->decode_ms.min,
                 c->decode_ms.max);
        printf("%8d %-10s %6d %10.1f %9.1f %20s %8.2f | %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f%s\n",
               c->ctx, c->var->name, c->k, c->prefill_tok_s.median, c->ttft_ms.median, dms,
               c->decode_tok_s, c->ms_dense, c->ms_sparse, c->ms_select, c->ms_matmul, c->ms_other,
               c->ms_rest, fill);
    }
    printf("\n%8s %-10s %11s %11s %11s %8s | %11s %11s %11s  (MiB held)\n", "ctx", "variant",
           "KV MiB/tok", "bank MiB/tok", "W MiB/tok", "GB/s", "weights", "KV cache", "bank");
    for (int i = 0; i < n; i++) {
        const bench_cell *c = &cells[i];
        printf("%8d %-10s %11.3f %11.3f %11.3f %8.2f | %11.1f %11.1f %11.1f%s\n", c->ctx,
               c->var->name, c->kv_bytes / MiB, c->bank_bytes / MiB, c->weight_bytes / MiB,
               c->gb_s, c->mem_weights / MiB, c->mem_kv / MiB, c->mem_bank / MiB, fill);
    }
    if (ranks > 1) printf("(MiB held: summed over the %d pipeline stages)\n", ranks);
    for (int i = 0; i < n; i++) /* once per variant: the figures cover all its runs */
        if (cells[i].cache_rows > 0 && (i == 0 || cells[i - 1].var != cells[i].var))
            printf("row cache (%s): %.1f%% of the staged bank rows were already in backend "
                   "memory; %.3f MiB per decode step not copied%s\n", cells[i].var->name,
                   100.0 * cells[i].cache_hit_rate, cells[i].cache_saved_per_step / MiB, fill);
}

static int parse_variants(const char *list, bench_variant *v, int *n) {
    *n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == BENCH_MAX_VARIANTS)
            return okv_fail(OKV_ERR_USAGE, "bench: at most %d variants, not '%s'", BENCH_MAX_VARIANTS, list);
        bench_variant *x = &v[(*n)++];
        memset(x, 0, sizeof *x);
        if (!strcmp(t, "dense")) {
            x->policy = POLICY_DENSE;
            snprintf(x->name, sizeof x->name, "dense");
            continue;
        }
        const char *num = !strncmp(t, "omnikv:", 7) ? t + 7 : t;
        char *end;
        x->budget = strtod(num, &end);
        if (!*num || *end || !(x->budget > 0))
            return okv_fail(OKV_ERR_USAGE, "bench: variant '%s' is neither 'dense' nor a budget > 0 "
                            "(a count, or a fraction below 1, optionally as omnikv:BUDGET)", t);
        x->policy = POLICY_OMNIKV;
        snprintf(x->name, sizeof x->name, "k=%s", num);
    }
    return *n ? OKV_OK : okv_fail(OKV_ERR_USAGE, "bench: --variants lists nothing");
}

/* The run config of a variant. */
static int variant_config(const okv_run_config *base, const bench_variant *var, okv_run_config *rc) {
    *rc = *base;
    rc->policy = var->policy;
    rc->policy_explicit = true;
    if (var->policy == POLICY_OMNIKV) {
        rc->num_selected = var->budget;
        if (rc->n_filter_layers == 0)
            return okv_fail(OKV_ERR_USAGE, "bench: variant %s needs filter layers; set do_select_layers "
                            "(e.g. -c configs/smollm2-135m.json)", var->name);
    }
    return OKV_OK;
}

/* Bytes the sparse layers read from the Context Bank per selected row: K and V of every layer
 * kept in the bank. */
static double bank_row_bytes(const okv_model_config *mc, const okv_run_config *rc) {
    if (rc->policy != POLICY_OMNIKV || !rc->real_offload) return 0;
    okv_layer_plan plan;
    if (policy_plan_init(&plan, rc, mc->n_layers)) return 0;
    int n = 0;
    for (int l = 0; l < mc->n_layers; l++) n += plan.role[l] == ROLE_SPARSE;
    policy_plan_free(&plan);
    return (double)okv_type_row_bytes(rc->kv_type, (int64_t)n * 2 * mc->n_kv_heads * mc->head_dim);
}

/* Serves warm-up then measured runs of every context through fw (one rank's engine or the
 * pipeline) and fills the variant's cells (memory is filled by the caller). A run is
 * rc->max_batch sequences served together, alone: one runner_serve per run, so no run's
 * sequences share a step with another's. */
static int serve_cells(const okv_forward *fw, const okv_model *model, const okv_run_config *rc,
                       const bench_variant *var, const int *ctx, int n_ctx, int runs, int warmup,
                       bench_cell *cells) {
    const int batch = rc->max_batch;
    int longest = 0;
    for (int i = 1; i < n_ctx; i++)
        if (ctx[i] > ctx[longest]) longest = i;
    const int n_run = warmup + runs * n_ctx;
    bench_run *per_run = calloc((size_t)n_run, sizeof *per_run);
    bench_sink bs = {.runs = calloc((size_t)batch, sizeof(bench_run)), .cap = batch};
    OKV_ASSERT(per_run && bs.runs);
    okv_runner_opts ro = {.chat = false, .progress_s = rc->progress_s};
    int st = OKV_OK;
    for (int r = 0; r < n_run && !st; r++) {
        const int c = r < warmup ? longest : (r - warmup) / runs;
        okv_request_list reqs = {.items = calloc((size_t)batch, sizeof(okv_request)), .n = batch};
        OKV_ASSERT(reqs.items);
        for (int b = 0; b < batch; b++) {
            okv_request *q = &reqs.items[b];
            request_defaults(q);
            OKV_ASSERT(asprintf(&q->id, "%s-ctx-%d-run-%d-seq-%d", var->name, ctx[c], r, b) >= 0);
            q->line = r * batch + b + 1;
            q->ids = malloc(sizeof(int32_t) * (size_t)ctx[c]);
            OKV_ASSERT(q->ids);
            q->n_ids = ctx[c];
            /* sequence 0 keeps the prompt a one-sequence bench has always used */
            bench_prompt(model->tok, rc->seed + (uint64_t)c + (uint64_t)b * 1000003, q->ids, ctx[c]);
        }
        int n_errors = 0;
        bs.n = 0;
        st = runner_serve(fw, model->tok, rc, &ro, &reqs, sink_bench, &bs, &n_errors);
        if (!st && bs.n != batch)
            st = okv_fail(OKV_ERR_INTERNAL, "bench: %d of %d sequences came back", bs.n, batch);
        if (!st) per_run[r] = batch_run(bs.runs, batch);
        for (int b = 0; b < bs.n; b++) free(bs.runs[b].t_tok);
        requests_free(&reqs);
    }
    if (!st) {
        double row = bank_row_bytes(&model->cfg, rc);
        for (int c = 0; c < n_ctx; c++) {
            cells[c].var = var;
            cells[c].ctx = ctx[c];
            cell_of(&cells[c], per_run + warmup + c * runs, runs, row);
        }
    }
    free(bs.runs);
    free(per_run);
    return st;
}

/* The row cache's figures of a variant's runs (counts summed over its ranks) into its cells:
 * the share of staged rows already on the device, and the bytes per decode step of a sequence
 * it kept off the bus (each run's sequences decode gen - 1 steps after the prefill's token). */
static void set_row_cache(bench_cell *cells, int n, const uint64_t c[3], int n_run, int batch,
                          int gen) {
    const double steps = (double)n_run * batch * OKV_MAX(gen - 1, 1);
    for (int i = 0; i < n; i++) {
        cells[i].cache_rows = (double)c[0];
        cells[i].cache_hit_rate = c[0] ? (double)c[1] / (double)c[0] : 0.0;
        cells[i].cache_saved_per_step = (double)c[2] / steps;
    }
}

/* What e holds at each context of cells (and gen generated tokens), in mem[3 * n]: weights, KV
 * cache, bank per cell, as the planner and the start-up line count them. */
static void cell_memory(const okv_engine *e, const int *ctx, int n, int gen, uint64_t *mem) {
    for (int c = 0; c < n; c++) engine_memory(e, ctx[c], gen, &mem[3 * c], &mem[3 * c + 1], &mem[3 * c + 2]);
}

static void set_memory(bench_cell *cells, int n, const uint64_t *mem) {
    for (int c = 0; c < n; c++)
        cells[c].mem_weights = mem[3 * c], cells[c].mem_kv = mem[3 * c + 1], cells[c].mem_bank = mem[3 * c + 2];
}

/* One rank: the whole model on this rank's engine. */
static int bench_local(const char *model_path, const okv_run_config *base, const bench_variant *var,
                       int n_var, const int *ctx, int n_ctx, int runs, int warmup, bench_cell *cells,
                       char *name, size_t cap) {
    okv_model m;
    okv_model *model = &m;
    memset(model, 0, sizeof *model);
    int st = load_model(model, model_path, base);
    if (!st) st = config_validate(base, model->cfg.n_layers);
    if (!st) snprintf(name, cap, "%.*s", (int)cap - 1, model->cfg.name);
    for (int v = 0; v < n_var && !st; v++) {
        okv_run_config rc;
        okv_engine eng;
        okv_forward fw;
        memset(&eng, 0, sizeof eng);
        memset(&fw, 0, sizeof fw);
        bench_cell *vc = cells + (size_t)v * n_ctx;
        st = variant_config(base, &var[v], &rc);
        if (!st) st = engine_init(&eng, model, &rc, 0, model->cfg.n_layers, rc.max_batch);
        if (!st) st = forward_local_init(&fw, &eng);
        if (!st) st = serve_cells(&fw, model, &rc, &var[v], ctx, n_ctx, runs, warmup, vc);
        if (!st) {
            uint64_t mem[3 * BENCH_MAX_CTX], rc_stats[3];
            cell_memory(&eng, ctx, n_ctx, rc.max_new_tokens, mem);
            set_memory(vc, n_ctx, mem);
            engine_row_cache_stats(&eng, &rc_stats[0], &rc_stats[1], &rc_stats[2]);
            set_row_cache(vc, n_ctx, rc_stats, warmup + runs * n_ctx, rc.max_batch, rc.max_new_tokens);
        }
        forward_local_free(&fw);
        engine_free(&eng);
    }
    model_free(model);
    return st;
}

/* Several ranks (collective): each variant is a pipeline over every rank, set up as `omnikv run`
 * sets it up; rank 0 drives the runs. A failure that stops serving on rank 0 is returned at once
 * (main ends the job) since the other ranks are still serving. */
static int bench_pipeline(const char *model_path, const okv_run_config *base,
                          const bench_variant *var, int n_var, const int *ctx, int n_ctx, int runs,
                          int warmup, bench_cell *cells, int rank, char *name, size_t cap,
                          int *threads) {
    int st = OKV_OK;
    for (int v = 0; v < n_var && !st; v++) {
        okv_run_config rc;
        int pre = variant_config(base, &var[v], &rc);
        pipe_ctx pc;
        st = pipe_setup(&pc, model_path, &rc, pre);
        if (!st) {
            bench_cell *vc = cells + (size_t)v * n_ctx;
            if (rank == 0) {
                okv_forward fw;
                snprintf(name, cap, "%.*s", (int)cap - 1, pc.model.cfg.name);
                *threads = pc.rc.threads;
                pipe_forward(&pc, &fw);
                st = serve_cells(&fw, &pc.model, &pc.rc, &var[v], ctx, n_ctx, runs, warmup, vc);
                if (st) return st;
            } else {
                pipe_stage_run(&pc);
            }
            st = pipe_finish(&pc);
            uint64_t mine[3 * BENCH_MAX_CTX + 3], all[3 * BENCH_MAX_CTX + 3];
            cell_memory(&pc.eng, ctx, n_ctx, pc.rc.max_new_tokens, mine);
            uint64_t *cs = mine + 3 * n_ctx;
            engine_row_cache_stats(&pc.eng, &cs[0], &cs[1], &cs[2]);
            CHECK_MPI(MPI_Reduce(mine, all, 3 * n_ctx + 3, MPI_UINT64_T, MPI_SUM, 0, pc.comm));
            if (rank == 0) {
                set_memory(vc, n_ctx, all);
                set_row_cache(vc, n_ctx, all + 3 * n_ctx, warmup + runs * n_ctx, pc.rc.max_batch,
                              pc.rc.max_new_tokens);
            }
        }
        pipe_free(&pc);
    }
    return st;
}

int cmd_bench(args *a, int rank) {
    const char *model_path = NULL, *config = NULL, *variants = NULL, *out_path = NULL;
    int ctx[BENCH_MAX_CTX], n_ctx = 3, runs = 3, warmup = 1, batch = 1;
    ctx[0] = 512, ctx[1] = 2048, ctx[2] = 8192;
    long gen = 32;
    bool json = false;
    cli_sets sets = {0};
    okv_run_config rc;
    config_defaults(&rc);
    bench_variant var[BENCH_MAX_VARIANTS];
    int n_var = 0;
    int st = OKV_OK;
    if (rank == 0) {
        for (a->i = 2; a->i < a->argc && !st; a->i++) {
            const char *v = NULL;
            if (opt(a, "-m", "--model", &v)) model_path = v;
            else if (opt(a, "-c", "--config", &v)) config = v;
            else if (opt(a, NULL, "--ctx", &v)) st = v ? parse_ctx_list(a, v, ctx, BENCH_MAX_CTX, &n_ctx) : 0;
            else if (opt(a, NULL, "--gen", &v)) st = v ? parse_count(a, "--gen", v, 1, &gen) : 0;
            else if (opt(a, NULL, "--runs", &v)) st = v ? parse_int(a, "--runs", v, 1, &runs) : 0;
            else if (opt(a, NULL, "--batch", &v)) st = v ? parse_int(a, "--batch", v, 1, &batch) : 0;
            else if (opt(a, NULL, "--warmup", &v)) st = v ? parse_int(a, "--warmup", v, 0, &warmup) : 0;
            else if (opt(a, NULL, "--variants", &v)) variants = v;
            else if (opt(a, "-o", "--output", &v)) out_path = v;
            else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &sets, v) : 0;
            else if (opt(a, "-t", "--threads", &v)) st = v ? cli_set(a, &sets, "threads", v) : 0;
            else if (opt(a, NULL, "--fill", &v)) st = v ? cli_set(a, &sets, "fill", v) : 0;
            else if (opt(a, NULL, "--json", NULL)) json = true;
            else st = unknown_arg(a);
            if (a->missing) st = OKV_ERR_USAGE;
        }
        if (!st && !model_path) st = okv_fail(OKV_ERR_USAGE, "bench: -m MODEL is required");
        if (!st && batch > OKV_MAX_BATCH)
            st = okv_fail(OKV_ERR_USAGE, "bench: --batch %d is above the limit of %d", batch,
                          OKV_MAX_BATCH);
        if (!st && out_path && (st = okv_output_check(out_path, "bench output", false)))
            okv_error_prefix("bench");
        if (!st) st = load_config(&rc, config, &sets);
        if (!st) st = pipe_trace_check(rc.trace);
        if (!st && variants) st = parse_variants(variants, var, &n_var);
        int max_ctx = 0;
        for (int i = 0; i < n_ctx; i++) max_ctx = OKV_MAX(max_ctx, ctx[i]);
        if (!st && (int64_t)max_ctx + gen > OKV_MAX_CONTEXT)
            st = okv_fail(OKV_ERR_USAGE, "bench: --ctx %d with --gen %ld is above the limit of %d "
                          "tokens per sequence", max_ctx, gen, OKV_MAX_CONTEXT);
        if (!st && rc.max_context_len == 0) rc.max_context_len = max_ctx + (int)gen;
        if (!st && rc.max_context_len < max_ctx + gen)
            st = okv_fail(OKV_ERR_USAGE, "bench: --ctx %d with --gen %ld needs max_context_len >= "
                          "%ld, but it is %d", max_ctx, gen, max_ctx + gen, rc.max_context_len);
        if (!st) {
            rc.max_batch = batch;
            rc.ignore_eos = true;
            rc.max_new_tokens = (int)gen;
            log_config(&rc);
        }
    }
    st = share_config_quiet(&rc, st);
    cli_sets_free(&sets);
    if (st) return st;
    int ranks = 1;
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &ranks));
    if (ranks > 1) {
        /* Every rank needs the model path, the variants and the contexts (each rank counts the
         * memory it holds at each); only rank 0 parsed them. */
        char path[4096] = "";
        if (rank == 0) snprintf(path, sizeof path, "%s", model_path);
        CHECK_MPI(MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Bcast(&n_var, 1, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Bcast(var, (int)sizeof var, MPI_BYTE, 0, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Bcast(&n_ctx, 1, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Bcast(ctx, n_ctx, MPI_INT, 0, MPI_COMM_WORLD));
        model_path = rank == 0 ? model_path : strdup(path);
    }
    if (!n_var) {
        /* The run config as it is: one variant named after its policy and budget. */
        n_var = 1;
        memset(&var[0], 0, sizeof var[0]);
        var[0].policy = rc.policy;
        var[0].budget = rc.num_selected;
        if (rc.policy == POLICY_DENSE) snprintf(var[0].name, sizeof var[0].name, "dense");
        else snprintf(var[0].name, sizeof var[0].name, "k=%g", rc.num_selected);
    }
    if (ranks == 1) resolve_threads(&rc); /* a pipeline's ranks each resolve their own */
    if (ranks == 1 && rank == 0 && rc.trace[0])
        OKV_WARN("bench writes a trace under mpirun only; `omnikv run --trace` traces one rank (%s)",
                 rc.trace);

    char name[128] = "";
    bench_cell *cells = calloc((size_t)n_var * n_ctx, sizeof *cells);
    OKV_ASSERT(cells);
    if (ranks > 1)
        st = bench_pipeline(model_path, &rc, var, n_var, ctx, n_ctx, runs, warmup, cells, rank, name,
                            sizeof name, &rc.threads);
    else st = bench_local(model_path, &rc, var, n_var, ctx, n_ctx, runs, warmup, cells, name, sizeof name);
    if (!st && rank == 0) {
        char *js = bench_json(name, &rc, cells, n_var * n_ctx, (int)gen, runs, warmup, ranks);
        if (json) printf("%s\n", js);
        else bench_tables(name, &rc, cells, n_var * n_ctx, (int)gen, runs, warmup, ranks);
        if (out_path) {
            FILE *f = fopen(out_path, "w");
            bool bad = !f || fprintf(f, "%s\n", js) < 0;
            if (f && fclose(f) != 0) bad = true;
            if (bad) st = okv_fail(OKV_ERR_INPUT, "bench: cannot write %s", out_path);
        }
        free(js);
    }
    if (rank != 0 && ranks > 1) free((char *)model_path);
    free(cells);
    return st;
}
