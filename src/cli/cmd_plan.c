/* cmd_plan.c — `omnikv plan`: the pipeline stage plan for a model file or a named shape at a
 * context length and rank count, with memory per rank (weights, KV cache of dense/filter/wait
 * layers, Context Bank of sparse layers), a decode step time predicted from bytes read per step
 * over memory bandwidth (measured here, or given), and whether the job fits. Runs on rank 0 only.
 * Tested by tests/e2e/test_run_batch.sh and tests/mpi/test_pipeline.sh. */
#include "cli.h"

#include "../../pipeline/costs.h"
#include "../../pipeline/planner.h"
#include "../model/genmodel.h"
#include "../policy/policy.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void help_plan(FILE *f) {
    fprintf(f,
        "usage: omnikv plan (--model MODEL|SHAPE | -c CONFIG) --ctx N --ranks P [--gpu-mem B]\n"
        "                   [--host-mem B] [--gen N] [--batch B] [--micro-batches M]\n"
        "                   [--stages SPEC] [--type T] [--bw B] [--pcie-bw B]\n"
        "                   [--ranks-per-node R] [--set KEY=VALUE ...]\n"
        "\n"
        "  -m, --model M       a .gguf file, a Hugging Face directory, or a shape name (tiny,\n"
        "                      smollm2-135m, llama3-8b, yi-9b, llama3.1-70b); default: the\n"
        "                      config's model_shape (configs/*.json set it)\n"
        "  -c, --config FILE   run config (filter layers, budget, kv_type, real_offload)\n"
        "      --ctx N         prompt tokens per sequence (required)\n"
        "      --ranks P       pipeline ranks (required)\n"
        "      --gen N         generated tokens per sequence (default: max_new_tokens, 256)\n"
        "      --batch B       sequences held at once (default: max_batch, 1)\n"
        "      --micro-batches M  micro-batches the batch is split into (default: P, at most B)\n"
        "      --stages SPEC   a hand partition such as 0-7,8-17,18-29 instead of the planner's\n"
        "      --type T        weight type of a shape: f32, f16, bf16, q8_0, q4_0, q4_1 (default f16)\n"
        "      --gpu-mem B     device memory per rank: weights and KV cache live there, the bank\n"
        "                      in host memory; without it everything is in host memory (CPU)\n"
        "      --host-mem B    host memory per node (default: this machine's)\n"
        "      --ranks-per-node R  ranks sharing a node's host memory (default 1)\n"
        "      --bw B          memory bandwidth in bytes/s: the step time is bytes read over B\n"
        "                      (default with --gpu-mem: host memory's, measured here)\n"
        "      --pcie-bw B     host-to-device bandwidth for the bank gather with --gpu-mem\n"
        "                      (default 25G)\n"
        "      --set KEY=VALUE run-config key, as for run\n"
        "Sizes take K, M, G, T suffixes (powers of 1024), with an optional B or iB.\n"
        "\n"
        "On host memory (no --gpu-mem, no --bw) the step time and the planner's balance come from\n"
        "kernels timed here: the matmul of every weight type the model uses (the model's own\n"
        "tensors, or synthetic ones of a shape) and decode attention per KV row, with the run\n"
        "config's threads (default: every core). --set plan_cost=bytes balances bytes instead.\n");
}

typedef struct plan_args {
    const char *model, *config, *stages;
    long ctx, ranks, gen, batch, mb, per_node;
    uint64_t gpu_mem, host_mem, bw, pcie_bw;
    int type;
    cli_sets sets;
} plan_args;

/* "80G", "512MiB", "16e9", "1024" -> bytes. */
static int parse_size(const args *a, const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double mul = 1.0;
    if (end != v && *end) {
        const char *units = "KMGT";
        const char *u = strchr(units, *end);
        if (u && *end) {
            mul = ldexp(1.0, 10 * (int)(u - units + 1));
            end++;
        }
        if (!strcmp(end, "B") || !strcmp(end, "iB")) end += strlen(end);
    }
    if (end == v || *end || errno || !(x > 0) || !isfinite(x * mul) || x * mul > 1.8e19)
        return okv_fail(OKV_ERR_USAGE, "%s: %s takes a size such as 80G or 16e9, not '%s'",
                        a->cmd, flag, v);
    *out = (uint64_t)(x * mul);
    return OKV_OK;
}

static int parse_plan(args *a, plan_args *pa) {
    pa->ctx = pa->ranks = pa->gen = pa->batch = -1;
    pa->mb = 0;
    pa->per_node = 1;
    pa->type = OKV_TYPE_F16;
    pa->pcie_bw = 25ull << 30;
    for (a->i = 2; a->i < a->argc; a->i++) {
        const char *v = NULL;
        int st = OKV_OK;
        if (opt(a, "-m", "--model", &v)) pa->model = v;
        else if (opt(a, "-c", "--config", &v)) pa->config = v;
        else if (opt(a, NULL, "--ctx", &v)) st = v ? parse_count(a, "--ctx", v, 1, &pa->ctx) : 0;
        else if (opt(a, NULL, "--ranks", &v)) st = v ? parse_count(a, "--ranks", v, 1, &pa->ranks) : 0;
        else if (opt(a, NULL, "--gen", &v)) st = v ? parse_count(a, "--gen", v, 0, &pa->gen) : 0;
        else if (opt(a, NULL, "--batch", &v)) st = v ? parse_count(a, "--batch", v, 1, &pa->batch) : 0;
        else if (opt(a, NULL, "--micro-batches", &v)) st = v ? parse_count(a, "--micro-batches", v, 1, &pa->mb) : 0;
        else if (opt(a, NULL, "--ranks-per-node", &v)) st = v ? parse_count(a, "--ranks-per-node", v, 1, &pa->per_node) : 0;
        else if (opt(a, NULL, "--stages", &v)) pa->stages = v;
        else if (opt(a, NULL, "--gpu-mem", &v)) st = v ? parse_size(a, "--gpu-mem", v, &pa->gpu_mem) : 0;
        else if (opt(a, NULL, "--host-mem", &v)) st = v ? parse_size(a, "--host-mem", v, &pa->host_mem) : 0;
        else if (opt(a, NULL, "--bw", &v)) st = v ? parse_size(a, "--bw", v, &pa->bw) : 0;
        else if (opt(a, NULL, "--pcie-bw", &v)) st = v ? parse_size(a, "--pcie-bw", v, &pa->pcie_bw) : 0;
        else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &pa->sets, v) : 0;
        else if (opt(a, NULL, "--type", &v)) {
            if (v && ((pa->type = okv_type_from_name(v)) < 0 || !okv_type_is_weight((okv_type)pa->type)))
                st = okv_fail(OKV_ERR_USAGE, "plan: --type '%s' is not a weight type; use f32, f16, "
                              "bf16, q8_0, q4_0 or q4_1", v);
        } else return unknown_arg(a);
        if (a->missing) return OKV_ERR_USAGE;
        if (st) return st;
    }
    if (pa->ctx < 0) return okv_fail(OKV_ERR_USAGE, "plan: --ctx N (prompt tokens) is required");
    if (pa->ranks < 0) return okv_fail(OKV_ERR_USAGE, "plan: --ranks P is required");
    return OKV_OK;
}

/* Layer weights of a named shape in a weight type (norms f32), as genmodel_write lays them out. */
static void shape_bytes(const okv_model_config *c, okv_type t, uint64_t *layer, uint64_t *embed,
                        uint64_t *head) {
    const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    uint64_t rows_dim = (uint64_t)(q + 2 * kv + 2 * c->ffn_dim); /* inputs of length dim */
    *layer = okv_type_row_bytes(t, c->dim) * rows_dim + okv_type_row_bytes(t, q) * (uint64_t)c->dim +
             okv_type_row_bytes(t, c->ffn_dim) * (uint64_t)c->dim + 2 * sizeof(float) * (uint64_t)c->dim;
    *embed = okv_type_row_bytes(t, c->dim) * (uint64_t)c->n_vocab;
    *head = (c->tied_embeddings ? *embed : okv_type_row_bytes(t, c->dim) * (uint64_t)c->n_vocab) +
            sizeof(float) * (uint64_t)c->dim;
}


/* Read bandwidth of host memory: the best of three sums over 256 MiB with every thread. */
static double measure_bw(void) {
    const size_t n = (size_t)64 << 20;
    float *buf = malloc(n * sizeof *buf);
    if (!buf) return 0.0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = okv_now_s();
        float s = 0.0f;
#pragma omp parallel for simd reduction(+ : s) schedule(static)
        for (size_t i = 0; i < n; i++) s += buf[i];
        double dt = okv_now_s() - t0;
        sink += s;
        if (dt > 0) best = fmax(best, (double)(n * sizeof *buf) / dt);
    }
    (void)sink;
    free(buf);
    return best;
}

static int run_plan(plan_args *pa) {
    okv_run_config rc;
    int st = load_config(&rc, pa->config, &pa->sets);
    if (st) return st;
    const char *model = pa->model ? pa->model : (rc.model_shape[0] ? rc.model_shape : NULL);
    if (!model)
        return okv_fail(OKV_ERR_USAGE, "plan: give --model MODEL|SHAPE, or a config with "
                        "model_shape (such as configs/llama3-8b-262k.json)");
    okv_model m;
    memset(&m, 0, sizeof m);
    okv_model_config cfg;
    uint64_t *wb = NULL, embed = 0, head = 0;
    struct stat sb;
    bool file = stat(model, &sb) == 0;
    if (file) {
        model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                              .need_head = true, .need_tokenizer = false};
        if ((st = model_load(&m, model, &mo))) {
            model_free(&m);
            return st == OKV_ERR_USAGE ? st : OKV_ERR_INPUT;
        }
        cfg = m.cfg;
        wb = calloc((size_t)cfg.n_layers, sizeof *wb);
        OKV_ASSERT(wb);
        for (int l = 0; l < cfg.n_layers; l++) wb[l] = model_layer_bytes(&m, l, l + 1);
        embed = model_tensor_bytes(&m.tok_embd);
        head = model_tensor_bytes(&m.output) + model_tensor_bytes(&m.output_norm);
    } else {
        if ((st = genmodel_shape(model, &cfg))) {
            okv_error_prefix("plan: '%s' is neither a model file nor a shape", model);
            return st;
        }
        uint64_t layer;
        shape_bytes(&cfg, (okv_type)pa->type, &layer, &embed, &head);
        wb = calloc((size_t)cfg.n_layers, sizeof *wb);
        OKV_ASSERT(wb);
        for (int l = 0; l < cfg.n_layers; l++) wb[l] = layer;
    }
    okv_layer_plan lp;
    memset(&lp, 0, sizeof lp);
    if (!st) st = config_validate(&rc, cfg.n_layers);
    if (!st) st = policy_plan_init(&lp, &rc, cfg.n_layers);
    const int batch = pa->batch > 0 ? (int)pa->batch : rc.max_batch;
    const int ranks = (int)pa->ranks;
    int n_mb = pa->mb > 0 ? (int)pa->mb : (rc.micro_batches > 0 ? rc.micro_batches : OKV_MIN(ranks, batch));
    if (!st && n_mb > batch)
        st = okv_fail(OKV_ERR_USAGE, "plan: %d micro-batches need a batch of at least %d sequences, "
                      "not %d", n_mb, n_mb, batch);
    const int64_t gen = pa->gen >= 0 ? pa->gen : rc.max_new_tokens;
    pipe_cost_model cm = {
        .n_layers = cfg.n_layers, .role = lp.role, .group = lp.group, .weight_bytes = wb,
        .embed_bytes = embed, .head_bytes = head, .kv_dim = cfg.n_kv_heads * cfg.head_dim,
        .kv_type = rc.kv_type, .batch = batch, .step_batch = (batch + n_mb - 1) / n_mb,
        .ctx = pa->ctx, .gen = gen,
        .k = rc.policy == POLICY_OMNIKV ? OKV_MIN((int64_t)config_budget(&rc, (int)pa->ctx), pa->ctx) : pa->ctx,
        .real_offload = rc.real_offload,
    };
    /* On host memory (no --gpu-mem, no --bw) the step time comes from kernels timed here. */
    const bool gpu = pa->gpu_mem > 0;
    const bool measured = !gpu && pa->bw == 0 && rc.plan_measured;
    double *layer_s = NULL;
    pipe_rates rates;
    okv_model shape_model;
    memset(&shape_model, 0, sizeof shape_model);
    shape_model.cfg = cfg;
    const okv_model *mm = file ? &m : &shape_model;
    const okv_type wtype = (okv_type)pa->type;
    if (!st && measured) {
        const int threads = rc.threads > 0 ? rc.threads : omp_get_num_procs();
        st = pipe_rates_measure(mm, wtype, rc.kv_type, cm.step_batch, threads, &rates);
        if (!st) {
            layer_s = calloc((size_t)cfg.n_layers, sizeof *layer_s);
            OKV_ASSERT(layer_s);
            pipe_costs_apply(&rates, mm, wtype, layer_s, &cm);
        }
    }
    pipe_plan plan;
    const char *spec = pa->stages ? pa->stages : (rc.stages[0] ? rc.stages : NULL);
    if (!st) st = spec ? planner_hand(&cm, spec, ranks, &plan) : planner_plan(&cm, ranks, PLANNER_ALIGN_SLACK, &plan);
    if (st) goto done;

    printf("model: %s (%s), %d layers, dim %d, %d/%d heads, vocab %d; policy %s", model,
           file ? "file" : "shape", cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads,
           cfg.n_vocab, rc.policy == POLICY_OMNIKV ? "omnikv" : "dense");
    if (rc.policy == POLICY_OMNIKV) {
        printf(" (filter layers");
        for (int i = 0; i < rc.n_filter_layers; i++) printf("%s%d", i ? "," : " ", rc.filter_layers[i]);
        printf(", W %d, k %lld)", rc.num_wait_load_layers, (long long)cm.k);
    }
    printf("\n%d micro-batch(es) of up to %d sequence(s)\n", n_mb, cm.step_batch);
    planner_print(&plan, &cm, stdout);

    double bw = (double)pa->bw;
    const char *bw_src = "given";
    if (bw <= 0 && !measured) {
        bw = measure_bw();
        bw_src = "measured on this machine's host memory";
    }
    uint64_t host = pa->host_mem ? pa->host_mem : okv_meminfo_bytes("MemTotal");
    const double host_per_rank = (double)host / (double)pa->per_node;
    char b1[32], b2[32], b3[32];
    planner_fmt_bytes(bw, b1, sizeof b1);
    if (measured) {
        char text[400];
        pipe_rates_describe(&rates, text, sizeof text);
        printf("\nstep time from kernels timed here with %d thread(s), %d sequence(s) per step: %s\n",
               rates.n_threads, rates.step_batch, text);
    } else {
        printf("\nbandwidth %s/s (%s)%s\n", b1, bw_src, gpu ? "; bank gather over PCIe" : "");
    }
    printf("  %-5s %12s %12s %10s   %s\n", "rank", gpu ? "device mem" : "host mem",
           gpu ? "host (bank)" : "", "step ms", "fits");
    bool fits = true;
    double worst_ms = 0.0, sum_ms = 0.0;
    for (int s = 0; s < plan.n_stages; s++) {
        const pipe_stage_est *e = &plan.est[s];
        double dev = (double)(e->weight_bytes + e->kv_bytes + (gpu ? e->gather_bytes : e->bank_bytes));
        double hostb = gpu ? (double)e->bank_bytes : 0.0;
        double ms = measured ? 1e3 * e->step_s : 1e3 * (double)e->read_bytes / bw;
        if (gpu) ms += 1e3 * (double)e->gather_bytes / (double)pa->pcie_bw;
        bool ok = gpu ? dev <= (double)pa->gpu_mem && hostb <= host_per_rank : dev <= host_per_rank;
        fits &= ok;
        worst_ms = fmax(worst_ms, ms);
        sum_ms += ms;
        planner_fmt_bytes(dev, b1, sizeof b1);
        planner_fmt_bytes(hostb, b2, sizeof b2);
        printf("  %-5d %12s %12s %10.3f   %s\n", s, b1, gpu ? b2 : "", ms, ok ? "yes" : "NO");
    }
    planner_fmt_bytes(gpu ? (double)pa->gpu_mem : host_per_rank, b1, sizeof b1);
    planner_fmt_bytes(host_per_rank, b3, sizeof b3);
    printf("limits per rank: %s%s%s%s\n", gpu ? "device " : "host ", b1, gpu ? ", host " : "",
           gpu ? b3 : "");
    /* With M >= P micro-batches the slowest stage sets the pace; with fewer, each micro-batch's
     * step takes the whole pipeline and only M of them overlap. */
    double interval = n_mb >= ranks ? worst_ms : fmax(worst_ms, sum_ms / n_mb);
    printf("predicted decode: %.3f ms per micro-batch step through all stages; with %d "
           "micro-batch(es) on %d rank(s) a step ends every %.3f ms: %.1f tok/s for %d sequence(s)\n",
           sum_ms, n_mb, ranks, interval, interval > 0 ? 1e3 * batch / (interval * n_mb) : 0.0, batch);
    if (n_mb < ranks)
        printf("note: fewer micro-batches (%d) than ranks (%d): stages idle part of each step\n",
               n_mb, ranks);
    printf("fits: %s\n", fits ? "yes" : "no (see the NO rows)");
done:
    free(layer_s);
    free(wb);
    policy_plan_free(&lp);
    model_free(&m);
    return st;
}

int cmd_plan(args *a) {
    plan_args pa;
    memset(&pa, 0, sizeof pa);
    int st = parse_plan(a, &pa);
    if (!st) st = run_plan(&pa);
    cli_sets_free(&pa.sets);
    return st;
}
