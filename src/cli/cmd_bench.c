/* cmd_bench.c — `omnikv bench`: prefill and decode throughput per context length, with the
 * engine's counters. Tested by tests/e2e/test_run_batch.sh. */
#include "cli.h"

#include "../engine/engine.h"
#include "../engine/runner.h"
#include "../engine/sampler.h"
#include "../io/requests.h"
#include "../model/genmodel.h"
#include "../model/gguf.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void help_bench(FILE *f) {
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


int cmd_bench(args *a, int rank) {
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
