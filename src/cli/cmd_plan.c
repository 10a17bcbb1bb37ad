/* cmd_plan.c — `omnikv plan`: the pipeline stage plan for a model file or a named shape at a
 * context length and rank count, with memory per rank (weights, KV cache of dense/filter/wait
 * layers, Context Bank of sparse layers), a decode step time (kernels timed here, or bytes over
 * a known device's or a given bandwidth), whether the job fits and, when not, what would make it
 * fit. Runs on rank 0 only. Tested by tests/e2e/test_run_batch.sh and test_day_one.sh. */
#include "cli.h"

#include "../../pipeline/costs.h"
#include "../../pipeline/planner.h"
#include "../model/genmodel.h"
#include "../policy/policy.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* The exit status of a plan that does not fit (documented in --help and the README). */
#define PLAN_DOES_NOT_FIT 1

void help_plan(FILE *f) {
    char list[256];
    fprintf(f,
        "usage: omnikv plan (--model MODEL|SHAPE | -c CONFIG) --ctx N --ranks P [--gpu NAME]\n"
        "                   [--gpu-mem B] [--host-mem B] [--gen N] [--batch B] [--micro-batches M]\n"
        "                   [--stages SPEC] [--type T] [--bw B] [--pcie-bw B] [-t N]\n"
        "                   [--ranks-per-node R] [--set KEY=VALUE ...]\n"
        "\n"
        "  -m, --model M       a .gguf file, a Hugging Face directory, or a shape name (tiny,\n"
        "                      smollm2-135m, llama3-8b, yi-9b, llama3.1-70b); default: the\n"
        "                      config's model_shape (configs/*.json set it)\n"
        "  -c, --config FILE   run config (filter layers, budget, kv_type, real_offload); without\n"
        "                      it the model's preset in configs/, else dense (the output says which)\n"
        "      --ctx N         prompt tokens per sequence (required)\n"
        "      --ranks P       pipeline ranks (required)\n"
        "      --gen N         generated tokens per sequence (default: max_new_tokens, 256)\n"
        "      --batch B       sequences held at once (default: max_batch, 1)\n"
        "      --micro-batches M  micro-batches the batch is split into (default: P, at most B)\n"
        "      --stages SPEC   a hand partition such as 0-7,8-17,18-29 instead of the planner's\n"
        "      --type T        weight type of a shape (default f16): %s\n"
        "      --gpu NAME      one GPU per rank, with its published figures: H100 (SXM: 80 GB,\n"
        "                      3.35 TB/s, PCIe Gen5 50 GB/s, NVLink 450 GB/s each way), H200\n"
        "                      (141 GB, 4.8 TB/s, Gen5, NVLink 450 GB/s) or A100 (80 GB, 2.0 TB/s,\n"
        "                      PCIe Gen4 25 GB/s, NVLink 300 GB/s); --gpu-mem, --bw, --pcie-bw\n"
        "                      override them\n"
        "      --gpu-mem B     device memory per rank: weights and KV cache live there, the bank\n"
        "                      in host memory; without it or --gpu everything is in host memory\n"
        "      --host-mem B    host memory per node (default: this machine's)\n"
        "      --ranks-per-node R  ranks sharing a node's host memory (default 1)\n"
        "      --bw B          memory bandwidth in bytes/s: the step time is bytes read over B\n"
        "                      (with --gpu-mem, --bw or --gpu is required)\n"
        "      --pcie-bw B     host-to-device bandwidth for the bank gather on a GPU (default:\n"
        "                      --gpu's, else 25e9)\n"
        "  -t, --threads N     threads for the kernels timed here (default: OMP_NUM_THREADS, else\n"
        "                      the cores granted)\n"
        "      --set KEY=VALUE run-config key, as for run\n"
        "Sizes take K, M, G, T suffixes (powers of 1024), with an optional B or iB.\n"
        "\n"
        "On host memory (no --gpu-mem, no --bw) the step time and the planner's balance come from\n"
        "kernels timed here: the matmul of every weight type the model uses (the model's own\n"
        "tensors, or synthetic ones of a shape) and decode attention per KV row, with the run\n"
        "config's threads. --set plan_cost=bytes balances bytes instead.\n"
        "\n"
        "Exit status: 0 the job fits; 1 it does not (the output lists changes that would make it\n"
        "fit: more ranks, the Context Bank, a smaller batch, budget or context); 2 usage or config\n"
        "error; 3 model file error.\n",
        okv_weight_type_list(list, sizeof list));
}

typedef struct plan_args {
    const char *model, *config, *stages, *gpu;
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
        else if (opt(a, "-t", "--threads", &v)) st = v ? cli_set(a, &pa->sets, "threads", v) : 0;
        else if (opt(a, NULL, "--gpu", &v)) pa->gpu = v;
        else if (opt(a, NULL, "--type", &v)) {
            char list[256];
            if (v && ((pa->type = okv_type_from_name(v)) < 0 || !okv_type_is_weight((okv_type)pa->type)))
                st = okv_fail(OKV_ERR_USAGE, "plan: --type '%s' is not a weight type; use one of %s", v,
                              okv_weight_type_list(list, sizeof list));
        } else return unknown_arg(a);
        if (a->missing) return OKV_ERR_USAGE;
        if (st) return st;
    }
    if (pa->ctx < 0) return okv_fail(OKV_ERR_USAGE, "plan: --ctx N (prompt tokens) is required");
    if (pa->ranks < 0) return okv_fail(OKV_ERR_USAGE, "plan: --ranks P is required");
    return OKV_OK;
}

/* ---- devices ------------------------------------------------------------------------------- */

/* Published figures of the devices --gpu names. The GPU-to-GPU link is taken per direction, as a
 * pipeline boundary uses it; host links are what a x16 slot of that generation carries. */
typedef struct plan_device {
    const char *name, *aliases; /* aliases: comma-separated, matched without case */
    double mem, mem_bw, pcie_bw, link_bw;
    const char *pcie, *link;
} plan_device;

static const plan_device DEVICES[] = {
    {"H100", "h100-sxm,h100-sxm5", 80e9, 3.35e12, 50e9, 450e9, "PCIe Gen5", "NVLink 4"},
    {"H200", "h200-sxm", 141e9, 4.8e12, 50e9, 450e9, "PCIe Gen5", "NVLink 4"},
    {"A100", "a100-80gb,a100-sxm", 80e9, 2.0e12, 25e9, 300e9, "PCIe Gen4", "NVLink 3"},
};
#define N_DEVICES (int)(sizeof DEVICES / sizeof DEVICES[0])

static const plan_device *device_find(const char *name) {
    for (int i = 0; i < N_DEVICES; i++) {
        if (!strcasecmp(name, DEVICES[i].name)) return &DEVICES[i];
        char al[128];
        snprintf(al, sizeof al, "%s", DEVICES[i].aliases);
        for (char *save = NULL, *t = strtok_r(al, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (!strcasecmp(name, t)) return &DEVICES[i];
    }
    return NULL;
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

/* What a plan is judged against: device memory and bandwidths (GPU plans), host memory. */
typedef struct plan_target {
    bool gpu, measured;         /* measured: step times from kernels timed here */
    const plan_device *dev;     /* --gpu's entry, or NULL */
    double dev_mem, bw, pcie_bw, link_bw, host_per_rank;
    const char *bw_from;
} plan_target;

static int plan_target_init(const plan_args *pa, const okv_run_config *rc, plan_target *t) {
    memset(t, 0, sizeof *t);
    t->gpu = pa->gpu || pa->gpu_mem > 0;
    if (pa->gpu && !(t->dev = device_find(pa->gpu))) {
        char names[256] = "";
        for (int i = 0; i < N_DEVICES; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     DEVICES[i].name);
        return okv_fail(OKV_ERR_USAGE, "plan: --gpu '%s' is not a device plan knows (%s); give "
                        "--gpu-mem and --bw for another", pa->gpu, names);
    }
    t->dev_mem = pa->gpu_mem ? (double)pa->gpu_mem : t->dev ? t->dev->mem : 0.0;
    t->bw = pa->bw ? (double)pa->bw : t->gpu && t->dev ? t->dev->mem_bw : 0.0;
    t->bw_from = pa->bw ? "--bw" : t->dev ? t->dev->name : NULL;
    t->pcie_bw = pa->pcie_bw ? (double)pa->pcie_bw : t->dev ? t->dev->pcie_bw : 25e9;
    t->link_bw = t->dev ? t->dev->link_bw : 0.0;
    if (t->gpu && t->bw <= 0)
        return okv_fail(OKV_ERR_USAGE, "plan: --gpu-mem needs the device's memory bandwidth: give "
                        "--gpu NAME (H100, H200, A100) or --bw, such as --bw 3.35T");
    t->measured = !t->gpu && !pa->bw && rc->plan_measured;
    if (!t->gpu && t->bw <= 0 && !t->measured) {
        t->bw = measure_bw();
        t->bw_from = "measured on this machine's host memory";
    }
    const uint64_t host = pa->host_mem ? pa->host_mem : okv_meminfo_bytes("MemTotal");
    t->host_per_rank = (double)host / (double)pa->per_node;
    return OKV_OK;
}

/* ---- the model and the policy --------------------------------------------------------------- */

/* The model a plan is for: a file's layout (tensors mapped, not read) or a shape's (no layers). */
typedef struct plan_model {
    okv_model m;
    const char *name;
    bool file;
    char policy_from[4200]; /* where the policy came from, for the output */
} plan_model;

/* The run config (-c, else the model's preset, else dense) and the model or shape. */
static int plan_load(const plan_args *pa, okv_run_config *rc, plan_model *pm) {
    memset(pm, 0, sizeof *pm);
    int st = load_config(rc, pa->config, &pa->sets);
    if (st) return st;
    pm->name = pa->model ? pa->model : (rc->model_shape[0] ? rc->model_shape : NULL);
    if (!pm->name)
        return okv_fail(OKV_ERR_USAGE, "plan: give --model MODEL|SHAPE, or a config with "
                        "model_shape (such as configs/llama3-8b-262k.json)");
    struct stat sb;
    pm->file = stat(pm->name, &sb) == 0;
    if (pm->file) {
        model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                              .need_head = true, .need_tokenizer = false};
        if ((st = model_load(&pm->m, pm->name, &mo))) return st == OKV_ERR_USAGE ? st : OKV_ERR_INPUT;
    } else if ((st = genmodel_shape(pm->name, &pm->m.cfg))) {
        okv_error_prefix("plan: '%s' is neither a model file nor a shape", pm->name);
        return st;
    }
    const okv_model_config *mc = &pm->m.cfg;
    const okv_type wt = (okv_type)pa->type;
    if (!pm->file && (genmodel_tensor_type(wt, mc->dim) != wt || genmodel_tensor_type(wt, mc->ffn_dim) != wt ||
                      genmodel_tensor_type(wt, (int64_t)mc->n_heads * mc->head_dim) != wt))
        return okv_fail(OKV_ERR_USAGE, "plan: --type %s needs rows that are whole %d-element blocks, but "
                        "shape %s has rows of %d, %d and %d; a %s file of this shape stores some "
                        "tensors in another type, so plan it from the file (--model FILE.gguf)",
                        okv_type_name(wt), okv_type_block_elems(wt), pm->name, mc->dim, mc->ffn_dim,
                        mc->n_heads * mc->head_dim, okv_type_name(wt));
    char preset[4096];
    if (pa->config) {
        snprintf(pm->policy_from, sizeof pm->policy_from, "run config from -c %s", pa->config);
    } else if (preset_find(&pm->m.cfg, pm->file ? NULL : pm->name, preset, sizeof preset)) {
        if ((st = load_config(rc, preset, &pa->sets))) return st;
        snprintf(pm->policy_from, sizeof pm->policy_from, "run config from the model's preset %s", preset);
    } else {
        snprintf(pm->policy_from, sizeof pm->policy_from, "no -c, and no preset in configs/ "
                 "matches this model: dense; give -c for OmniKV");
    }
    return config_validate(rc, pm->m.cfg.n_layers);
}

/* ---- costing and the verdict ---------------------------------------------------------------- */

/* The shape of the job being planned. */
typedef struct plan_job {
    int ranks, batch, n_mb;
    int64_t ctx, gen;
} plan_job;

static plan_job job_with(const plan_args *pa, const okv_run_config *rc, int ranks, int batch,
                         int64_t ctx) {
    plan_job j = {.ranks = ranks, .batch = batch, .ctx = ctx,
                  .gen = pa->gen >= 0 ? pa->gen : rc->max_new_tokens};
    j.n_mb = pa->mb > 0 ? (int)pa->mb : rc->micro_batches > 0 ? rc->micro_batches : OKV_MIN(ranks, batch);
    return j;
}

/* The stage plan of job j and the cost model it was made from (rates NULL: bytes). */
static int plan_cost(const plan_args *pa, const okv_run_config *rc, const plan_model *pm,
                     const pipe_rates *rates, const plan_job *j, pipe_costs *c, pipe_plan *plan) {
    if (j->n_mb > j->batch)
        return okv_fail(OKV_ERR_USAGE, "plan: %d micro-batches need a batch of at least %d "
                        "sequences, not %d", j->n_mb, j->n_mb, j->batch);
    int st = pipe_costs_init(c, &pm->m, (okv_type)pa->type, rc, j->batch, j->n_mb, j->ctx, j->gen, rates);
    const char *spec = pa->stages ? pa->stages : (rc->stages[0] ? rc->stages : NULL);
    if (!st) st = spec ? planner_hand(&c->cm, spec, j->ranks, plan)
                       : planner_plan(&c->cm, j->ranks, PLANNER_ALIGN_SLACK, plan);
    return st;
}

typedef struct plan_verdict {
    double dev[OKV_MAX_STAGES], host[OKV_MAX_STAGES], ms[OKV_MAX_STAGES];
    bool ok[OKV_MAX_STAGES];
    bool fits;
    double worst_ms, sum_ms;
} plan_verdict;

/* Memory per rank against the target, and each stage's step time: measured seconds, or bytes
 * read over the memory bandwidth, plus on a GPU the bank rows gathered over PCIe and the boundary
 * (hidden states and index sets) over the GPU link. */
static void plan_judge(const pipe_plan *plan, const pipe_cost_model *cm, const plan_target *t,
                       plan_verdict *v) {
    memset(v, 0, sizeof *v);
    v->fits = true;
    for (int s = 0; s < plan->n_stages; s++) {
        const pipe_stage_est *e = &plan->est[s];
        v->dev[s] = (double)(e->weight_bytes + e->kv_bytes +
                             (t->gpu ? e->gather_bytes + e->pf_stage_bytes : e->bank_bytes));
        v->host[s] = t->gpu ? (double)e->bank_bytes : 0.0;
        double ms = t->measured ? 1e3 * e->step_s : 1e3 * (double)e->read_bytes / t->bw;
        if (t->gpu) ms += 1e3 * (double)e->gather_bytes / t->pcie_bw;
        if (t->link_bw > 0 && s > 0) {
            const double boundary = (double)cm->step_batch *
                                    ((double)cm->dim * sizeof(float) + (double)e->n_cross * (double)cm->k * sizeof(int32_t));
            ms += 1e3 * boundary / t->link_bw;
        }
        v->ms[s] = ms;
        v->ok[s] = t->gpu ? v->dev[s] <= t->dev_mem && v->host[s] <= t->host_per_rank
                          : v->dev[s] <= t->host_per_rank;
        v->fits &= v->ok[s];
        v->worst_ms = fmax(v->worst_ms, ms);
        v->sum_ms += ms;
    }
}

/* Whether job j fits the target, costed in bytes (memory does not depend on the rates). */
static bool job_fits(const plan_args *pa, const okv_run_config *rc, const plan_model *pm,
                     const plan_target *t, const plan_job *j) {
    pipe_costs c;
    pipe_plan plan;
    plan_verdict v;
    int st = plan_cost(pa, rc, pm, NULL, j, &c, &plan);
    if (!st) plan_judge(&plan, &c.cm, t, &v);
    pipe_costs_free(&c);
    okv_clear_error();
    return !st && v.fits;
}

/* Changes that make a plan fit that does not, each costed and judged as the plan was: more
 * ranks, the Context Bank for the sparse layers' prompt KV, a smaller batch, a smaller budget
 * or a shorter context. */
static void plan_suggest(const plan_args *pa, const okv_run_config *rc, const plan_model *pm,
                         const plan_target *t, const plan_job *j) {
    int n = 0;
    const int max_ranks = OKV_MIN(pm->m.cfg.n_layers, OKV_MAX_STAGES);
    if (!pa->stages && !rc->stages[0])
        for (int p = j->ranks + 1; p <= max_ranks; p++) {
            plan_job more = job_with(pa, rc, p, j->batch, j->ctx);
            if (more.n_mb <= more.batch && job_fits(pa, rc, pm, t, &more)) {
                printf("  - %d ranks (--ranks %d)\n", p, p);
                n++;
                break;
            }
        }
    if (rc->policy == POLICY_OMNIKV && !rc->real_offload) {
        okv_run_config off = *rc;
        off.real_offload = true;
        if (job_fits(pa, &off, pm, t, j)) {
            printf("  - the sparse layers' prompt KV in the host Context Bank (--set real_offload=true)\n");
            n++;
        }
    }
    for (int b = j->batch / 2; b >= 1; b /= 2) {
        plan_job fewer = job_with(pa, rc, j->ranks, b, j->ctx);
        if (fewer.n_mb <= fewer.batch && job_fits(pa, rc, pm, t, &fewer)) {
            printf("  - a batch of %d (--batch %d)\n", b, b);
            n++;
            break;
        }
    }
    if (rc->policy == POLICY_OMNIKV && t->gpu && rc->num_selected >= 1)
        for (double k = floor(rc->num_selected / 2); k >= 64; k = floor(k / 2)) {
            okv_run_config small = *rc;
            small.num_selected = k;
            if (job_fits(pa, &small, pm, t, j)) {
                printf("  - a budget of %.0f tokens (--set num_of_selected_tokens=%.0f)\n", k, k);
                n++;
                break;
            }
        }
    for (int64_t c = j->ctx / 2; c >= 1024; c /= 2) {
        plan_job shorter = job_with(pa, rc, j->ranks, j->batch, c);
        if (job_fits(pa, rc, pm, t, &shorter)) {
            printf("  - a context of %lld tokens (--ctx %lld)\n", (long long)c, (long long)c);
            n++;
            break;
        }
    }
    if (!n) printf("  nothing tried fits (more ranks, offload, smaller batch, budget or context): "
                   "each rank needs more memory\n");
}

/* ---- output ---------------------------------------------------------------------------------- */

static void plan_print(const plan_args *pa, const okv_run_config *rc, const plan_model *pm,
                       const pipe_costs *c, const pipe_plan *plan, const plan_target *t,
                       const pipe_rates *rates, const plan_job *j, const plan_verdict *v) {
    const okv_model_config *cfg = &pm->m.cfg;
    printf("model: %s (%s), %d layers, dim %d, %d/%d heads, vocab %d\n", pm->name,
           pm->file ? "file" : "shape", cfg->n_layers, cfg->dim, cfg->n_heads, cfg->n_kv_heads,
           cfg->n_vocab);
    printf("policy: %s", rc->policy == POLICY_OMNIKV ? "omnikv" : "dense");
    if (rc->policy == POLICY_OMNIKV) {
        printf(" (filter layers");
        for (int i = 0; i < rc->n_filter_layers; i++) printf("%s%d", i ? "," : " ", rc->filter_layers[i]);
        printf(", W %d, k %lld)", rc->num_wait_load_layers, (long long)c->cm.k);
    }
    printf(", %s\n", pm->policy_from);
    printf("%d micro-batch(es) of up to %d sequence(s)\n", j->n_mb, c->cm.step_batch);
    planner_print(plan, &c->cm, stdout);

    char b1[32], b2[32], b3[32];
    if (t->measured) {
        char text[400];
        pipe_rates_describe(rates, text, sizeof text);
        printf("\nstep time from kernels timed here with %d thread(s), %d sequence(s) per step: %s\n",
               rates->n_threads, rates->step_batch, text);
    } else if (t->gpu) {
        planner_fmt_bytes(t->bw, b1, sizeof b1);
        planner_fmt_bytes(t->pcie_bw, b2, sizeof b2);
        printf("\ndevice: %s; memory bandwidth %s/s (%s), bank gather over %s at %s/s", t->dev ? t->dev->name : "given",
               b1, t->bw_from, t->dev && !pa->pcie_bw ? t->dev->pcie : "PCIe", b2);
        if (t->link_bw > 0) {
            planner_fmt_bytes(t->link_bw, b3, sizeof b3);
            printf(", stage boundaries over %s at %s/s", t->dev->link, b3);
        }
        printf("\n");
    } else {
        planner_fmt_bytes(t->bw, b1, sizeof b1);
        printf("\nbandwidth %s/s (%s)\n", b1, t->bw_from);
    }
    printf("  %-5s %12s %12s %10s   %s\n", "rank", t->gpu ? "device mem" : "host mem",
           t->gpu ? "host (bank)" : "", "step ms", "fits");
    for (int s = 0; s < plan->n_stages; s++) {
        planner_fmt_bytes(v->dev[s], b1, sizeof b1);
        planner_fmt_bytes(v->host[s], b2, sizeof b2);
        printf("  %-5d %12s %12s %10.3f   %s\n", s, b1, t->gpu ? b2 : "", v->ms[s], v->ok[s] ? "yes" : "NO");
    }
    planner_fmt_bytes(t->gpu ? t->dev_mem : t->host_per_rank, b1, sizeof b1);
    planner_fmt_bytes(t->host_per_rank, b3, sizeof b3);
    printf("limits per rank: %s%s%s%s\n", t->gpu ? "device " : "host ", b1, t->gpu ? ", host " : "",
           t->gpu ? b3 : "");
    /* With M >= P micro-batches the slowest stage sets the pace; with fewer, each micro-batch's
     * step takes the whole pipeline and only M of them overlap. */
    const double interval = j->n_mb >= j->ranks ? v->worst_ms : fmax(v->worst_ms, v->sum_ms / j->n_mb);
    printf("predicted decode: %.3f ms per micro-batch step through all stages; with %d "
           "micro-batch(es) on %d rank(s) a step ends every %.3f ms: %.1f tok/s for %d sequence(s)\n",
           v->sum_ms, j->n_mb, j->ranks, interval,
           interval > 0 ? 1e3 * j->batch / (interval * j->n_mb) : 0.0, j->batch);
    if (j->n_mb < j->ranks)
        printf("note: fewer micro-batches (%d) than ranks (%d): stages idle part of each step\n",
               j->n_mb, j->ranks);
    printf("fits: %s\n", v->fits ? "yes" : "no (see the NO rows); it would fit with any of:");
}

static int run_plan(plan_args *pa) {
    okv_run_config rc;
    plan_model pm;
    plan_target t;
    int st = plan_load(pa, &rc, &pm);
    if (!st) st = plan_target_init(pa, &rc, &t);
    const plan_job j = job_with(pa, &rc, (int)pa->ranks,
                                pa->batch > 0 ? (int)pa->batch : rc.max_batch, pa->ctx);
    pipe_rates rates;
    if (!st && t.measured) {
        resolve_threads(&rc);
        st = pipe_rates_measure(&pm.m, (okv_type)pa->type, rc.kv_type,
                                (j.batch + j.n_mb - 1) / OKV_MAX(j.n_mb, 1), rc.threads, &rates);
    }
    pipe_costs c;
    memset(&c, 0, sizeof c);
    pipe_plan plan;
    plan_verdict v = {.fits = true};
    if (!st) st = plan_cost(pa, &rc, &pm, t.measured ? &rates : NULL, &j, &c, &plan);
    if (!st) {
        plan_judge(&plan, &c.cm, &t, &v);
        plan_print(pa, &rc, &pm, &c, &plan, &t, &rates, &j, &v);
        if (!v.fits) plan_suggest(pa, &rc, &pm, &t, &j);
    }
    pipe_costs_free(&c);
    model_free(&pm.m);
    if (st) return st;
    return v.fits ? OKV_OK : PLAN_DOES_NOT_FIT;
}

int cmd_plan(args *a) {
    plan_args pa;
    memset(&pa, 0, sizeof pa);
    int st = parse_plan(a, &pa);
    if (!st) st = run_plan(&pa);
    cli_sets_free(&pa.sets);
    return st;
}
