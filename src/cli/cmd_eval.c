/* cmd_eval.c — `omnikv eval` (tasks over contexts x depths x decode variants) and `omnikv
 * calibrate` (filter layers for a model). Tested by tests/e2e/test_eval.sh,
 * tests/model/test_passkey_quality.sh and tests/e2e/test_calibrate_cli.sh. */
#include "cli.h"

#include "../policy/calibrate.h"
#include "../tasks/eval.h"
#include "../tasks/tasks.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void help_eval(FILE *f) {
    int n;
    const task_def *t = task_list(&n);
    fprintf(f,
        "usage: omnikv eval -m MODEL [-c CONFIG.json] --task LIST [--ctx 2048,4096] [--count N]\n"
        "                   [--depth D,...] [--variants dense,2048,0.067] [--seed S] [-o OUT.jsonl]\n"
        "                   [--chat | --no-chat] [--max-new N] [--resume] [--set KEY=VALUE ...]\n"
        "\n"
        "Every sample is prefilled once (prefill is always full attention); each variant then\n"
        "decodes from that state: `dense` attends to every prompt row, a number (or omnikv:NUMBER)\n"
        "is an OmniKV budget (num_of_selected_tokens: a count, or a fraction of the prompt below 1)\n"
        "with the filter layers of the run config; a budget may carry its own selection settings,\n"
        "as in 0.067/keep_last=64/selector_cls=softmax_before_last (keys selector_cls = last |\n"
        "softmax_before_last, keep_first, keep_last, min_selected_tokens). Decoding is greedy, except summaries (sampled at\n"
        "T 0.8, top-p 0.95 from a per-sample seed shared by all variants).\n"
        "\n"
        "  -m, --model MODEL   a .gguf file or a Hugging Face directory (required)\n"
        "  -c, --config FILE   run config (filter layers, W, selector, threads...); without it the\n"
        "                      model's preset in configs/ when one matches its shape, else the\n"
        "                      dense variant only\n"
        "      --task LIST     comma-separated tasks, each a generated task (below),\n"
        "                      longbench:FILE.jsonl or infinitebench:FILE.jsonl (InfiniteBench\n"
        "                      files keep their names, e.g. kv_retrieval.jsonl) (required)\n"
        "      --ctx LIST      prompt lengths in tokens (default 4096); for files, the length\n"
        "                      longer prompts are cut to (the first and last halves are kept)\n"
        "      --count N       samples per context and depth (default 10); for files, the first N\n"
        "                      records (default: all)\n"
        "      --depth LIST    needle depths in [0, 1] (default: drawn per sample)\n"
        "      --variants LIST decode variants (default dense,2048,0.067)\n"
        "      --seed S        task seed (default 1)\n"
        "      --chat          wrap each request in the model's chat template (the answer prefix\n"
        "                      of a generated task opens the assistant turn); default for files,\n"
        "                      except LongBench's few-shot and code datasets\n"
        "      --no-chat       plain prompts (default for generated tasks)\n"
        "      --max-new N     cap every sample's new tokens (the task's own is the default)\n"
        "      --resume        with -o: keep the samples the file already holds for every variant\n"
        "                      and run only the rest (an interrupted grid continues)\n"
        "  -o, --output FILE   per-sample JSON lines (default: none); the summary table goes to\n"
        "                      stdout\n"
        "      --set KEY=VALUE set a run-config key (repeatable)\n"
        "  -t, --threads N     compute threads (default: OMP_NUM_THREADS, else the cores granted)\n"
        "  -h, --help          this text\n"
        "\n"
        "generated tasks (prompts are at most --ctx tokens, and within 2%% of it from 1K up):\n");
    for (int i = 0; i < n; i++) fprintf(f, "  %-18s %s\n", t[i].name, t[i].about);
}

static int parse_depths(const args *a, const char *v, eval_opts *o) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    o->n_depth = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double d = strtod(t, &end);
        /* Written so NaN fails too: it compares false both ways. */
        if (end == t || *end || !(d >= 0 && d <= 1) || o->n_depth == EVAL_MAX)
            return okv_fail(OKV_ERR_USAGE, "%s: --depth takes up to %d numbers in [0, 1], not '%s'",
                            a->cmd, EVAL_MAX, t);
        o->depth[o->n_depth++] = d;
    }
    return OKV_OK;
}

/* OmniKV variants without filter layers: the model's preset when configs/ has one (its keys
 * under the environment and --set, as a -c file would be), else the dense variants alone. */
static int filter_layers_or_dense(okv_run_config *rc, eval_opts *o, const okv_model *m,
                                  const char *model_path, const char *config, const cli_sets *sets) {
    bool sparse = false;
    for (int v = 0; v < o->n_variant; v++) sparse |= !o->variant[v].dense;
    if (!sparse) return OKV_OK;
    char preset[4096];
    if (!config && preset_find(&m->cfg, NULL, preset, sizeof preset)) {
        OKV_INFO("eval: no -c; using %s, the preset of %s's shape", preset, model_path);
        int st = load_config(rc, preset, sets);
        if (st || rc->n_filter_layers) return st;
    }
    int n = 0;
    for (int v = 0; v < o->n_variant; v++)
        if (o->variant[v].dense) o->variant[n++] = o->variant[v];
    o->n_variant = n;
    OKV_WARN("eval: no filter layers (%s, and no preset in configs/ matches %s): running the "
             "dense variant only; give -c or --set do_select_layers=... for OmniKV",
             config ? "the config sets none" : "no -c", model_path);
    return n ? OKV_OK : eval_parse_variants(o, "dense");
}

int cmd_eval(args *a, int rank) {
    const char *model_path = NULL, *config = NULL, *out_path = NULL, *variants = "dense,2048,0.067";
    eval_opts o = {.task = NULL, .n_ctx = 1, .count = 0, .seed = 1, .chat = -1};
    o.ctx[0] = 4096;
    cli_sets sets = {0};
    okv_run_config rc;
    int st = OKV_OK;
    for (a->i = 2; a->i < a->argc && !st; a->i++) {
        const char *v = NULL;
        if (opt(a, "-m", "--model", &v)) model_path = v;
        else if (opt(a, "-c", "--config", &v)) config = v;
        else if (opt(a, NULL, "--task", &v)) o.task = v;
        else if (opt(a, NULL, "--ctx", &v)) st = v ? parse_ctx_list(a, v, o.ctx, EVAL_MAX, &o.n_ctx) : 0;
        else if (opt(a, NULL, "--count", &v)) st = v ? parse_int(a, "--count", v, 1, &o.count) : 0;
        else if (opt(a, NULL, "--depth", &v)) st = v ? parse_depths(a, v, &o) : 0;
        else if (opt(a, NULL, "--variants", &v)) variants = v;
        else if (opt(a, NULL, "--seed", &v)) st = v ? parse_u64(a, "--seed", v, &o.seed) : 0;
        else if (opt(a, "-o", "--output", &v)) out_path = v;
        else if (opt(a, NULL, "--chat", NULL)) o.chat = 1;
        else if (opt(a, NULL, "--no-chat", NULL)) o.chat = 0;
        else if (opt(a, NULL, "--resume", NULL)) o.resume = true;
        else if (opt(a, NULL, "--max-new", &v)) st = v ? parse_int(a, "--max-new", v, 1, &o.max_new) : 0;
        else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &sets, v) : 0;
        else if (opt(a, "-t", "--threads", &v)) st = v ? cli_set(a, &sets, "threads", v) : 0;
        else st = unknown_arg(a);
        if (a->missing) st = OKV_ERR_USAGE;
    }
    if (!st && !model_path) st = okv_fail(OKV_ERR_USAGE, "eval: -m MODEL is required");
    /* The grid keeps a flag per (ctx, depth, sample): a count beyond any real run is refused. */
    if (!st && o.count > (1 << 20))
        st = okv_fail(OKV_ERR_USAGE, "eval: --count %d is above the limit of %d samples", o.count,
                      1 << 20);
    if (!st && !o.task)
        st = okv_fail(OKV_ERR_USAGE, "eval: --task NAME is required (`omnikv eval --help` lists them)");
    if (!st) st = eval_parse_variants(&o, variants);
    if (!st && o.resume && (!out_path || !strcmp(out_path, "-")))
        st = okv_fail(OKV_ERR_USAGE, "eval: --resume needs -o RESULTS.jsonl (a file)");
    if (!st) st = load_config(&rc, config, &sets);
    /* Checked before the model loads; opened (and truncated) only once it has. */
    if (!st && out_path && (st = okv_output_check(out_path, "eval output", false)))
        okv_error_prefix("eval");
    st = share_config(&rc, st);
    if (rank != 0 || st) {
        cli_sets_free(&sets);
        return st;
    }
    okv_model m;
    FILE *out = NULL;
    if ((st = load_model(&m, model_path, &rc))) {
        cli_sets_free(&sets);
        return st;
    }
    if (!rc.n_filter_layers) st = filter_layers_or_dense(&rc, &o, &m, model_path, config, &sets);
    cli_sets_free(&sets);
    log_config(&rc);
    resolve_threads(&rc);
    if (!st && !(st = config_validate(&rc, m.cfg.n_layers))) {
        /* Opened without truncation: eval_run empties it once the first grid is validated. */
        if (out_path && !(out = fopen(out_path, "a+")))
            st = okv_fail(OKV_ERR_INPUT, "eval: cannot write %s: %s", out_path, strerror(errno));
        /* --task a,b: each task in turn, into the same results file; the later ones append to
         * what the first started, as a resume keeps other tasks' records. */
        char tasks[4096];
        snprintf(tasks, sizeof tasks, "%s", o.task);
        for (char *save = NULL, *t = strtok_r(tasks, ",", &save); t && !st; t = strtok_r(NULL, ",", &save)) {
            o.task = t;
            st = eval_run(&m, &rc, &o, out, stdout);
            o.resume = true;
        }
    }
    if (out) {
        bool bad = ferror(out) != 0;
        if (fclose(out) != 0) bad = true;
        if (bad && st <= OKV_ERR_REQUEST)
            st = okv_fail(OKV_ERR_INPUT, "eval: writing %s failed: %s", out_path, strerror(errno));
    }
    model_free(&m);
    return st;
}

void help_calibrate(FILE *f) {
    fprintf(f,
        "usage: omnikv calibrate -m MODEL [--filters N] [-o FRAGMENT.json] [--ctx N] [--prompts N]\n"
        "                        [--steps N] [--budget K] [--wait W] [--seed S] [--task NAME]\n"
        "                        [--objective needle|mass] [--set KEY=VALUE]\n"
        "\n"
        "Runs full attention over generated calibration prompts, records every layer's top-k\n"
        "over several decode steps, and measures for each layer pair (l1 < l2) the share of l2's\n"
        "attention mass that l1's top-k covers. The filter layers (each governing at least one\n"
        "sparse layer) minimising the lost mass of the sparse layers plus --dense-cost for each\n"
        "dense layer before the first filter are written as a run-config fragment, with the\n"
        "matrix (and a last row of layer weights) as FRAGMENT.csv and a heat map FRAGMENT.png\n"
        "beside it: bare cells; `jobs/plot.py FRAGMENT.csv` draws it labelled (axes, layer\n"
        "numbers, colour bar, the chosen filter layers marked).\n"
        "\n"
        "  -m, --model MODEL  a .gguf file or a Hugging Face directory (required)\n"
        "      --filters N    filter layers to propose (default 3)\n"
        "  -o, --output FILE  the config fragment (default calibration.json)\n"
        "      --ctx N        tokens per calibration prompt (default 2048)\n"
        "      --prompts N    calibration prompts (default 4)\n"
        "      --steps N      decode steps recorded per prompt (default 8)\n"
        "      --budget K     top-k as num_of_selected_tokens (default 0.067)\n"
        "      --wait W       num_wait_load_layers of the fragment (default 1)\n"
        "      --dense-cost C cost of each dense layer before the first filter, in units of a\n"
        "                     sparse layer's lost attention mass (default 0.25)\n"
        "      --seed S       prompt seed (default 1)\n"
        "      --task NAME    generated task of the prompts (default passkey; see eval --help)\n"
        "      --objective O  needle (default): only the mass on the prompt's answer tokens\n"
        "                     counts, each sparse layer weighted by its share of it (the\n"
        "                     retrieval that long-context tasks need); mass: all attention mass,\n"
        "                     every sparse layer alike\n"
        "      --set KEY=VALUE run-config key for the engine (threads, kv_type...)\n"
        "  -t, --threads N    compute threads (default: OMP_NUM_THREADS, else the cores granted)\n"
        "  -h, --help         this text\n");
}

/* PATH.json -> PATH.csv / PATH.png (or PATH + ext when there is no .json). */
static void sibling(const char *path, const char *ext, char *out, size_t cap) {
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".json")) n -= 5;
    snprintf(out, cap, "%.*s%s", (int)n, path, ext);
}

int cmd_calibrate(args *a, int rank) {
    const char *model_path = NULL, *out_path = "calibration.json";
    calib_opts o = {.task = "passkey", .objective = CALIB_OBJECTIVE_NEEDLE, .n_prompts = 4,
                    .ctx = 2048, .steps = 8, .budget = 0.067, .n_filters = 3, .wait = 1,
                    .dense_cost = 0.25, .seed = 1};
    cli_sets sets = {0};
    okv_run_config rc;
    int st = OKV_OK;
    for (a->i = 2; a->i < a->argc && !st; a->i++) {
        const char *v = NULL;
        if (opt(a, "-m", "--model", &v)) model_path = v;
        else if (opt(a, "-o", "--output", &v)) out_path = v;
        else if (opt(a, NULL, "--filters", &v)) st = v ? parse_int(a, "--filters", v, 1, &o.n_filters) : 0;
        else if (opt(a, NULL, "--ctx", &v)) st = v ? parse_int(a, "--ctx", v, 64, &o.ctx) : 0;
        else if (opt(a, NULL, "--prompts", &v)) st = v ? parse_int(a, "--prompts", v, 1, &o.n_prompts) : 0;
        else if (opt(a, NULL, "--steps", &v)) st = v ? parse_int(a, "--steps", v, 1, &o.steps) : 0;
        else if (opt(a, NULL, "--wait", &v)) st = v ? parse_int(a, "--wait", v, 0, &o.wait) : 0;
        else if (opt(a, NULL, "--seed", &v)) st = v ? parse_u64(a, "--seed", v, &o.seed) : 0;
        else if (opt(a, NULL, "--task", &v)) o.task = v ? v : o.task;
        else if (opt(a, NULL, "--objective", &v)) {
            if (v && !strcmp(v, "needle")) o.objective = CALIB_OBJECTIVE_NEEDLE;
            else if (v && !strcmp(v, "mass")) o.objective = CALIB_OBJECTIVE_MASS;
            else if (v) st = okv_fail(OKV_ERR_USAGE, "calibrate: --objective takes needle or mass, not '%s'", v);
        } else if (opt(a, NULL, "--dense-cost", &v)) {
            char *end;
            o.dense_cost = v ? strtod(v, &end) : 0;
            if (v && (*end || !(o.dense_cost >= 0)))
                st = okv_fail(OKV_ERR_USAGE, "calibrate: --dense-cost takes a number >= 0, not '%s'", v);
        } else if (opt(a, NULL, "--budget", &v)) {
            char *end;
            o.budget = v ? strtod(v, &end) : 0;
            if (v && (*end || !(o.budget > 0)))
                st = okv_fail(OKV_ERR_USAGE, "calibrate: --budget takes a count or a fraction > 0, not '%s'", v);
        } else if (opt(a, NULL, "--set", &v)) st = v ? cli_set_kv(a, &sets, v) : 0;
        else if (opt(a, "-t", "--threads", &v)) st = v ? cli_set(a, &sets, "threads", v) : 0;
        else st = unknown_arg(a);
        if (a->missing) st = OKV_ERR_USAGE;
    }
    if (!st && !model_path) st = okv_fail(OKV_ERR_USAGE, "calibrate: -m MODEL is required");
    if (!st) st = load_config(&rc, NULL, &sets);
    /* Checked before the model loads, not after the calibration run. */
    if (!st && (st = okv_output_check(out_path, "calibration output", false)))
        okv_error_prefix("calibrate");
    cli_sets_free(&sets);
    st = share_config(&rc, st);
    if (rank != 0 || st) return st;
    resolve_threads(&rc);
    o.threads = rc.threads;
    o.min_selected = rc.min_selected;
    okv_model m;
    if ((st = load_model(&m, model_path, &rc))) return st;
    calib_result r;
    st = calib_run(&m, &o, &r);
    char csv[1024], png[1024];
    sibling(out_path, ".csv", csv, sizeof csv);
    sibling(out_path, ".png", png, sizeof png);
    if (!st) st = calib_write_fragment(&r, &o, out_path);
    if (!st) st = calib_write_csv(&r, csv);
    if (!st) st = calib_write_png(&r, png);
    if (!st) {
        printf("filter layers:");
        for (int i = 0; i < r.n_filters; i++) printf(" %d", r.filters[i]);
        printf("  (loss %.3f over %d layers, %d samples)\nwrote %s, %s, %s\n"
               "jobs/plot.py %s draws the labelled heat map (the PNG is bare cells)\n", r.loss,
               r.n_layers, r.samples, out_path, csv, png, csv);
    }
    calib_result_free(&r);
    model_free(&m);
    return st;
}
