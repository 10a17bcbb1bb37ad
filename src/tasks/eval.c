/* eval.c — the `omnikv eval` grid (see eval.h): samples, optional chat template, one prefill per
 * sample, greedy (summaries: seeded sampled) decoding per variant from the rewound state. Tested
 * by tests/e2e/test_eval.sh and tests/model/test_{passkey,needle}_quality.sh. */
#include "eval.h"

#include "../common.h"
#include "../engine/engine.h"
#include "../engine/sampler.h"
#include "synth.h"
#include "tasks.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "/KEY=VALUE..." after a variant's budget: the selection settings a variant may change. */
static int parse_variant_sets(eval_variant *v, const char *sets, const char *variant) {
    okv_run_config c;
    config_defaults(&c);
    c.keep_first = c.keep_last = c.min_selected = -1;
    v->selector = -1;
    bool sel = false;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", sets);
    for (char *save = NULL, *kv = strtok_r(buf, "/", &save); kv; kv = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return okv_fail(OKV_ERR_USAGE, "variant '%s': '%s' is not KEY=VALUE", variant, kv);
        *eq = '\0';
        if (strcmp(kv, "selector_cls") && strcmp(kv, "keep_first") && strcmp(kv, "keep_last") &&
            strcmp(kv, "min_selected_tokens"))
            return okv_fail(OKV_ERR_USAGE, "variant '%s': a variant may set selector_cls, keep_first, "
                            "keep_last and min_selected_tokens, not %s (use --set for the whole run)",
                            variant, kv);
        int st = config_set(&c, kv, eq + 1);
        if (st) return st;
        sel |= !strcmp(kv, "selector_cls");
    }
    if (sel && c.selector != SELECTOR_LAST && c.selector != SELECTOR_SOFTMAX_BEFORE_LAST)
        return okv_fail(OKV_ERR_USAGE, "variant '%s': a variant's selector_cls is last or "
                        "softmax_before_last (the window selectors are set for the run with --set)", variant);
    if (sel) v->selector = (int)c.selector;
    v->keep_first = c.keep_first;
    v->keep_last = c.keep_last;
    v->min_selected = c.min_selected;
    return OKV_OK;
}

int eval_parse_variants(eval_opts *o, const char *list) {
    o->n_variant = 0;
    char buf[2048];
    if (strlen(list) >= sizeof buf) return okv_fail(OKV_ERR_USAGE, "the variant list is too long");
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_variant == EVAL_MAX) return okv_fail(OKV_ERR_USAGE, "too many variants in '%s' (at most %d)", list, EVAL_MAX);
        eval_variant *v = &o->variant[o->n_variant++];
        memset(v, 0, sizeof *v);
        v->selector = v->keep_first = v->keep_last = v->min_selected = -1;
        if (!strcmp(t, "dense")) {
            v->dense = true;
            snprintf(v->name, sizeof v->name, "dense");
            continue;
        }
        const char *num = !strncmp(t, "omnikv:", 7) ? t + 7 : t;
        char *end;
        v->budget = strtod(num, &end);
        if (!*num || (*end && *end != '/') || !(v->budget > 0))
            return okv_fail(OKV_ERR_USAGE, "variant '%s' is neither 'dense' nor a budget > 0 (a count, "
                            "or a fraction below 1, optionally as omnikv:BUDGET)", t);
        snprintf(v->name, sizeof v->name, "k=%s", num);
        int st = parse_variant_sets(v, end, t);
        if (st) return st;
    }
    if (!o->n_variant) return okv_fail(OKV_ERR_USAGE, "no variants given");
    return OKV_OK;
}

static task_suite file_suite(const char *task, const char **path) {
    if (!strncmp(task, "longbench:", 10)) {
        *path = task + 10;
        return TASK_SUITE_LONGBENCH;
    }
    if (!strncmp(task, "infinitebench:", 14)) {
        *path = task + 14;
        return TASK_SUITE_INFINITEBENCH;
    }
    return 0;
}

bool eval_chat_default(const char *task) {
    const char *path;
    return file_suite(task, &path) != 0;
}

/* What the engine is fed for a sample: the plain prompt, or the chat rendering of its request
 * with the answer prefix opening the assistant turn. */
static char *render_prompt(const okv_tokenizer *tok, const task_sample *s, bool chat) {
    if (!chat || s->chat_exempt) return strdup(s->prompt);
    size_t len = strlen(s->prompt), body = len - s->prefix_len;
    while (body > 0 && isspace((unsigned char)s->prompt[body - 1])) body--;
    char *user = strndup(s->prompt, body);
    OKV_ASSERT(user);
    chat_msg msg = {"user", user};
    char *r = chat_render(tokenizer_chat_kind(tok), &msg, 1, true);
    free(user);
    if (!r) return NULL;
    sbuf b = {0};
    sbuf_puts(&b, r);
    sbuf_puts(&b, s->prompt + len - s->prefix_len);
    free(r);
    return sbuf_take(&b);
}

/* Tokens the chat wrapper adds around a request, so generated prompts can leave room for it. */
static int chat_overhead(const okv_tokenizer *tok) {
    chat_msg msg = {"user", "x"};
    char *r = chat_render(tokenizer_chat_kind(tok), &msg, 1, true);
    if (!r) return -1;
    int with = tokenizer_encode(tok, r, strlen(r), true, true, NULL, 0);
    free(r);
    return with - synth_count(tok, "x");
}

typedef struct decode_out {
    sbuf text;
    int n_tokens;
} decode_out;

/* Decodes up to s->max_new_tokens from the prefilled state: argmax, or for summaries a draw at
 * T 0.8 / top-p 0.95 from a generator seeded per sample (the same for every variant). */
static int decode(okv_engine *e, const okv_model *m, okv_sampler *smp, const task_sample *s,
                  int max_new, uint64_t seed, const float *first_logits, decode_out *out) {
    const okv_sample_params greedy = {.temperature = 0, .top_k = 0, .top_p = 1};
    const okv_sample_params summary = {.temperature = 0.8f, .top_k = 0, .top_p = 0.95f};
    okv_rng rng;
    rng_seed(&rng, seed);
    out->text.len = 0;
    sbuf_put(&out->text, "", 0);
    out->n_tokens = 0;
    const float *lg = first_logits;
    char piece[256];
    for (int t = 0; t < max_new; t++) {
        int32_t tok = sampler_sample(smp, lg, s->sample ? &summary : &greedy, &rng);
        if (tokenizer_is_eog(m->tok, tok)) break;
        int n = tokenizer_piece(m->tok, tok, false, piece, sizeof piece);
        out->n_tokens++;
        if (n > 0) sbuf_put(&out->text, piece, (size_t)n);
        if (s->stop_newline && t > 0 && n > 0 && memchr(piece, '\n', (size_t)n)) break;
        if (t + 1 == max_new) break;
        engine_embed(e, &tok, 1);
        int st = engine_decode(e, (int[]){0}, 1);
        if (st) return st;
        lg = engine_head(e, 0, 1);
    }
    return OKV_OK;
}

/* The grid's samples come from a generator or a file; this hides which. */
typedef struct sample_source {
    const task_def *gen;
    task_file file;
    bool is_file;
    int overhead; /* tokens the chat template adds */
} sample_source;

static int source_get(const sample_source *src, const okv_tokenizer *tok, int ctx, double depth,
                      uint64_t seed, int i, task_sample *s) {
    int target = ctx - src->overhead;
    if (src->is_file) return task_file_sample(&src->file, i, tok, target, s);
    return src->gen->gen(tok, target, depth, seed, s);
}

/* A copy of text with every byte that does not start a well-formed UTF-8 sequence replaced by
 * U+FFFD, so a JSON line stays valid when a token ends inside a character. */
static char *utf8_valid(const char *text) {
    sbuf b = {0};
    const unsigned char *s = (const unsigned char *)text;
    while (*s) {
        int n = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
        for (int i = 1; i < n; i++)
            if ((s[i] & 0xc0) != 0x80) n = 0;
        if (n == 2 && s[0] < 0xc2) n = 0; /* overlong */
        if (n) sbuf_put(&b, (const char *)s, (size_t)n);
        else sbuf_puts(&b, "\xef\xbf\xbd");
        s += n ? n : 1;
    }
    return sbuf_take(&b);
}

static void write_sample(FILE *f, const char *task, const task_sample *s, int ctx, int n, int d,
                         int i, const eval_variant *var, int budget, bool chat, const char *output,
                         int new_tokens, double score, double prefill_ms, double decode_ms) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "task", task);
    cJSON_AddStringToObject(j, "dataset", s->dataset);
    cJSON_AddStringToObject(j, "id", s->id);
    cJSON_AddNumberToObject(j, "ctx", ctx);
    cJSON_AddNumberToObject(j, "prompt_tokens", n);
    if (s->needle_at >= 0) {
        cJSON_AddNumberToObject(j, "depth", s->depth);
        cJSON_AddNumberToObject(j, "needle_at", s->needle_at);
    }
    cJSON_AddNumberToObject(j, "depth_index", d);
    cJSON_AddNumberToObject(j, "sample", i);
    cJSON_AddStringToObject(j, "variant", var->name);
    cJSON_AddStringToObject(j, "policy", var->dense ? "dense" : "omnikv");
    cJSON_AddNumberToObject(j, "budget", budget);
    cJSON_AddBoolToObject(j, "chat", chat && !s->chat_exempt);
    sbuf joined = {0};
    cJSON *arr = cJSON_AddArrayToObject(j, "answers");
    for (int a = 0; a < s->n_answers; a++) {
        cJSON_AddItemToArray(arr, cJSON_CreateString(s->answers[a]));
        if (a) sbuf_puts(&joined, "\n");
        sbuf_puts(&joined, s->answers[a]);
    }
    char *ans = sbuf_take(&joined);
    cJSON_AddStringToObject(j, "answer", ans);
    free(ans);
    char *clean = utf8_valid(output);
    cJSON_AddStringToObject(j, "output", clean);
    free(clean);
    cJSON_AddNumberToObject(j, "new_tokens", new_tokens);
    cJSON_AddNumberToObject(j, "score", score);
    cJSON_AddNumberToObject(j, "prefill_ms", prefill_ms);
    cJSON_AddNumberToObject(j, "decode_ms_per_token", decode_ms);
    char *line = cJSON_PrintUnformatted(j);
    fprintf(f, "%s\n", line);
    fflush(f);
    free(line);
    cJSON_Delete(j);
}

/* Score sums per (ctx, depth slot, variant); depth slot n_depth is "all depths". */
typedef struct score_grid {
    double *sum;
    int *n;
    int n_ctx, n_slots, n_variant;
} score_grid;

static void grid_add(score_grid *g, int c, int d, int v, double score) {
    for (int slot = d; ; slot = g->n_slots - 1) {
        size_t k = ((size_t)c * g->n_slots + slot) * g->n_variant + v;
        g->sum[k] += score;
        g->n[k]++;
        if (slot == g->n_slots - 1) break;
    }
}

static double grid_mean(const score_grid *g, int c, int slot, int v, int *n) {
    size_t k = ((size_t)c * g->n_slots + slot) * g->n_variant + v;
    *n = g->n[k];
    return g->n[k] ? g->sum[k] / g->n[k] : 0.0;
}

/* --resume: reads the earlier records of this grid from f, keeps those of samples that every
 * variant finished (rewriting f with them alone, so an interrupted sample leaves no half), adds
 * their scores to g and marks the samples in done[(c * n_depth + d) * count + i]. */
static int resume_read(FILE *f, const eval_opts *o, int n_depth, int count, score_grid *g,
                       bool *done) {
    typedef struct old_rec { char *line; int key, c, d, v; double score; } old_rec;
    const int n_keys = o->n_ctx * n_depth * count;
    uint32_t *have = calloc((size_t)n_keys, sizeof(uint32_t)), *kept = calloc((size_t)n_keys, sizeof(uint32_t));
    old_rec *rec = NULL;
    int n = 0, cap = 0, dropped = 0;
    char *line = NULL;
    size_t lcap = 0;
    OKV_ASSERT(have && kept);
    rewind(f);
    while (getline(&line, &lcap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "task");
        const cJSON *cx = cJSON_GetObjectItemCaseSensitive(j, "ctx");
        const cJSON *di = cJSON_GetObjectItemCaseSensitive(j, "depth_index");
        const cJSON *si = cJSON_GetObjectItemCaseSensitive(j, "sample");
        const cJSON *vn = cJSON_GetObjectItemCaseSensitive(j, "variant");
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "score");
        int c = -1, v = -1;
        /* Another task's records (eval --task a,b into one file) stay as they are. */
        const bool other = cJSON_IsString(t) && strcmp(t->valuestring, o->task);
        if (!other && cJSON_IsString(t) && cJSON_IsNumber(cx) &&
            cJSON_IsNumber(di) && cJSON_IsNumber(si) && cJSON_IsString(vn) && cJSON_IsNumber(sc)) {
            for (int k = 0; k < o->n_ctx; k++)
                if (o->ctx[k] == cx->valueint) c = k;
            for (int k = 0; k < o->n_variant; k++)
                if (!strcmp(o->variant[k].name, vn->valuestring)) v = k;
        }
        int d = cJSON_IsNumber(di) ? di->valueint : -1, i = cJSON_IsNumber(si) ? si->valueint : -1;
        if (!other && (c < 0 || v < 0 || d < 0 || d >= n_depth || i < 0 || i >= count)) {
            dropped++;
        } else {
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                rec = realloc(rec, sizeof *rec * (size_t)cap);
                OKV_ASSERT(rec);
            }
            int key = other ? -1 : (c * n_depth + d) * count + i;
            rec[n++] = (old_rec){strdup(line), key, c, d, v, other ? 0.0 : sc->valuedouble};
            if (!other) have[key] |= 1u << v;
        }
        cJSON_Delete(j);
    }
    free(line);
    const uint32_t all = o->n_variant == 32 ? 0xffffffffu : (1u << o->n_variant) - 1;
    int st = OKV_OK, n_kept = 0;
    if (ftruncate(fileno(f), 0) || fseek(f, 0, SEEK_END))
        st = okv_fail(OKV_ERR_INPUT, "eval: cannot rewrite the results file to resume");
    for (int r = 0; r < n; r++) {
        const old_rec *x = &rec[r];
        if (!st && x->key < 0) {
            fputs(x->line, f);
        } else if (!st && have[x->key] == all && !(kept[x->key] & (1u << x->v))) {
            kept[x->key] |= 1u << x->v;
            fputs(x->line, f);
            grid_add(g, x->c, x->d, x->v, x->score);
            done[x->key] = true;
            n_kept++;
        } else {
            dropped++;
        }
        free(x->line);
    }
    if (!st && fflush(f)) st = okv_fail(OKV_ERR_INPUT, "eval: cannot rewrite the results file to resume");
    if (!st)
        OKV_INFO("eval: resuming with %d finished record(s); %d other line(s) dropped", n_kept, dropped);
    free(rec);
    free(have);
    free(kept);
    return st;
}

static void print_summary(FILE *f, const eval_opts *o, const char *name, const score_grid *g) {
    int n_cell, w[EVAL_MAX]; /* column widths: 10, or a longer variant name */
    grid_mean(g, 0, g->n_slots - 1, 0, &n_cell);
    for (int v = 0; v < o->n_variant; v++) w[v] = OKV_MAX(10, (int)strlen(o->variant[v].name));
    fprintf(f, "%-18s %8s", "task", "ctx");
    for (int v = 0; v < o->n_variant; v++) fprintf(f, " %*s", w[v], o->variant[v].name);
    fprintf(f, "   (mean score 0-100, %d samples per cell)\n", n_cell);
    for (int c = 0; c < o->n_ctx; c++) {
        fprintf(f, "%-18s %8d", name, o->ctx[c]);
        for (int v = 0; v < o->n_variant; v++) fprintf(f, " %*.1f", w[v], grid_mean(g, c, g->n_slots - 1, v, &n_cell));
        fprintf(f, "\n");
    }
    if (g->n_slots > 2) {
        /* Indented rows, so a reader keying on the task name sees only the table above. */
        fprintf(f, "\nby depth:\n  %-10s %-18s %8s", "depth", "task", "ctx");
        for (int v = 0; v < o->n_variant; v++) fprintf(f, " %*s", w[v], o->variant[v].name);
        fprintf(f, "\n");
        for (int c = 0; c < o->n_ctx; c++)
            for (int d = 0; d < g->n_slots - 1; d++) {
                fprintf(f, "  %-10.2f %-18s %8d", o->depth[d], name, o->ctx[c]);
                for (int v = 0; v < o->n_variant; v++) fprintf(f, " %*.1f", w[v], grid_mean(g, c, d, v, &n_cell));
                fprintf(f, "\n");
            }
    }
    fflush(f);
}

/* A record that could not be used, as one line (no score, so --resume retries it). */
static void write_error(FILE *f, const char *task, const task_sample *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "task", task);
    cJSON_AddStringToObject(j, "dataset", s->dataset);
    char *id = utf8_valid(s->id), *msg = utf8_valid(s->error);
    cJSON_AddStringToObject(j, "id", id);
    cJSON_AddStringToObject(j, "error", msg);
    free(id);
    free(msg);
    char *line = cJSON_PrintUnformatted(j);
    OKV_ASSERT(line);
    fprintf(f, "%s\n", line);
    fflush(f);
    free(line);
    cJSON_Delete(j);
}

static int open_source(const okv_model *m, const eval_opts *o, bool chat, sample_source *src) {
    memset(src, 0, sizeof *src);
    const char *path;
    task_suite suite = file_suite(o->task, &path);
    if (chat) {
        if (tokenizer_chat_kind(m->tok) == CHAT_NONE)
            return okv_fail(OKV_ERR_USAGE, "eval: --chat needs a model with a ChatML or Llama-3 chat "
                            "template; this one has none (use --no-chat)");
        src->overhead = chat_overhead(m->tok);
    }
    if (suite) {
        src->is_file = true;
        return task_file_load(&src->file, suite, path, chat, o->count);
    }
    if (!(src->gen = task_find(o->task))) {
        int n;
        const task_def *t = task_list(&n);
        char known[512] = "";
        for (int i = 0; i < n; i++) {
            strcat(known, t[i].name);
            strcat(known, ", ");
        }
        return okv_fail(OKV_ERR_USAGE, "unknown task '%s' (known: %slongbench:FILE, infinitebench:FILE)",
                        o->task, known);
    }
    return OKV_OK;
}

/* A variant's selection for a prompt of n tokens: the run's, with the variant's budget (dense: every
 * prompt token) and whatever selector settings it overrides. */
static okv_selection variant_selection(const okv_run_config *rc, const eval_variant *var, int n) {
    okv_run_config vb = *rc;
    vb.num_selected = var->budget;
    if (var->min_selected >= 0) vb.min_selected = var->min_selected;
    okv_selection sel = policy_selection(&vb, n);
    if (var->dense) sel.k = n;
    if (var->selector >= 0) sel.selector = (okv_selector)var->selector;
    if (var->keep_first >= 0) sel.keep_first = var->keep_first;
    if (var->keep_last >= 0) sel.keep_last = var->keep_last;
    return sel;
}

int eval_run(const okv_model *m, const okv_run_config *rc, const eval_opts *o, FILE *samples,
             FILE *summary) {
    const bool chat = o->chat >= 0 ? o->chat : eval_chat_default(o->task);
    sample_source src;
    int st = open_source(m, o, chat, &src);
    if (st) {
        task_file_free(&src.file);
        return st;
    }
    const bool is_file = src.is_file;
    const int n_depth = is_file || !o->n_depth ? 1 : o->n_depth;
    const int count = is_file ? src.file.n : (o->count > 0 ? o->count : 10);
    const char *name = is_file ? src.file.dataset : o->task;

    /* Capacity: the longest prompt (generators stay at or below ctx; truncated records may come
     * back a few tokens over when re-tokenized) plus the longest answer. */
    int max_new = 0, max_ctx = 0;
    if (is_file) {
        for (int i = 0; i < src.file.n; i++) max_new = OKV_MAX(max_new, src.file.rec[i].max_new_tokens);
    } else {
        task_sample probe;
        if ((st = src.gen->gen(m->tok, o->ctx[0] - src.overhead, 0.5, o->seed, &probe))) return st;
        max_new = probe.max_new_tokens;
        task_sample_free(&probe);
    }
    if (o->max_new > 0) max_new = OKV_MIN(max_new, o->max_new);
    for (int c = 0; c < o->n_ctx; c++) max_ctx = OKV_MAX(max_ctx, o->ctx[c]);
    okv_run_config erc = *rc;
    erc.max_context_len = max_ctx + max_new + 64;
    bool sparse = false;
    for (int v = 0; v < o->n_variant; v++) sparse |= !o->variant[v].dense;
    if (sparse) {
        if (erc.n_filter_layers == 0) {
            task_file_free(&src.file);
            return okv_fail(OKV_ERR_USAGE, "OmniKV variants need filter layers; set do_select_layers (e.g. --set do_select_layers=2,8,18) or use a config preset");
        }
        erc.policy = POLICY_OMNIKV;
    }
    OKV_INFO("eval: task %s (%s), %d sample(s) per cell, chat template %s, max_context_len %d",
             name, is_file ? "file" : "generated", count, chat ? "on" : "off", erc.max_context_len);

    const int V = m->cfg.n_vocab;
    for (int v = 0; v < o->n_variant; v++)
        if (o->variant[v].selector >= 0 && config_selector_is_window(erc.selector)) {
            task_file_free(&src.file);
            return okv_fail(OKV_ERR_USAGE, "variant %s sets selector_cls, but the run uses a window "
                            "selector; give the run selector_cls=last", o->variant[v].name);
        }
    okv_engine e;
    okv_sampler smp;
    memset(&smp, 0, sizeof smp);
    if ((st = engine_init(&e, m, &erc, 0, m->cfg.n_layers, 1))) {
        task_file_free(&src.file);
        return st;
    }
    /* Draws over the tokenizer's ids: an output head may have padding rows past them. */
    st = sampler_init(&smp, OKV_MIN(V, tokenizer_n_vocab(m->tok)));
    float *first = calloc((size_t)V, sizeof(float));
    int32_t *ids = calloc((size_t)erc.max_context_len, sizeof(int32_t));
    score_grid g = {.n_ctx = o->n_ctx, .n_slots = n_depth + 1, .n_variant = o->n_variant};
    g.sum = calloc((size_t)o->n_ctx * g.n_slots * o->n_variant, sizeof(double));
    g.n = calloc((size_t)o->n_ctx * g.n_slots * o->n_variant, sizeof(int));
    bool *done = calloc((size_t)o->n_ctx * n_depth * count, sizeof(bool));
    decode_out out = {0};
    int n_err = 0; /* file records written as error records */
    OKV_ASSERT(first && ids && g.sum && g.n && done);
    if (!st && o->resume && samples) st = resume_read(samples, o, n_depth, count, &g, done);
    if (!st && !o->resume && samples && ftruncate(fileno(samples), 0) != 0)
        st = okv_fail(OKV_ERR_INPUT, "eval: cannot empty the output file: %s", strerror(errno));
    for (int c = 0; c < o->n_ctx && !st; c++) {
        double t_ctx = okv_now_s();
        for (int d = 0; d < n_depth && !st; d++) {
            for (int i = 0; i < count && !st; i++) {
                if (done[(c * n_depth + d) * count + i]) continue;
                if (is_file && src.file.rec[i].error) {
                    if (c == 0) {
                        OKV_WARN("eval: %s", src.file.rec[i].error);
                        n_err++;
                        if (samples) write_error(samples, o->task, &src.file.rec[i]);
                    }
                    continue;
                }
                uint64_t seed = o->seed + (uint64_t)o->ctx[c] * 1000003 + (uint64_t)d * 10007 + (uint64_t)i;
                double depth = !is_file && o->n_depth ? o->depth[d] : -1.0;
                task_sample s;
                if ((st = source_get(&src, m->tok, o->ctx[c], depth, seed, i, &s))) break;
                int s_new = o->max_new > 0 ? OKV_MIN(s.max_new_tokens, o->max_new) : s.max_new_tokens;
                char *text = render_prompt(m->tok, &s, chat);
                int n = text ? tokenizer_encode(m->tok, text, strlen(text), true, chat && !s.chat_exempt,
                                                ids, erc.max_context_len) : -1;
                free(text);
                if (n <= 0 || n + s_new > erc.max_context_len) {
                    st = n < 0 ? OKV_ERR_INPUT
                               : okv_fail(OKV_ERR_INTERNAL, "sample %s encoded to %d tokens, over the "
                                          "capacity %d", s.id, n, erc.max_context_len - s_new);
                    task_sample_free(&s);
                    break;
                }
                double t0 = okv_now_s();
                if ((st = engine_seq_start(&e, 0, n))) {
                    task_sample_free(&s);
                    break;
                }
                for (int pos = 0; pos < n && !st; pos += erc.prefill_chunk) {
                    int k = OKV_MIN(erc.prefill_chunk, n - pos);
                    engine_embed(&e, ids + pos, k);
                    st = engine_prefill(&e, 0, pos, k);
                    if (pos + k == n)
                        memcpy(first, engine_head(&e, k - 1, 1), sizeof(float) * (size_t)V);
                }
                double prefill_ms = (okv_now_s() - t0) * 1e3;
                for (int v = 0; v < o->n_variant && !st; v++) {
                    const eval_variant *var = &o->variant[v];
                    okv_selection sel = variant_selection(&erc, var, n);
                    engine_seq_rewind(&e, 0, n);
                    if ((st = engine_seq_set_selection(&e, 0, &sel))) break;
                    double t1 = okv_now_s();
                    if ((st = decode(&e, m, &smp, &s, s_new, seed, first, &out))) break;
                    double decode_ms = out.n_tokens > 1 ? (okv_now_s() - t1) * 1e3 / (out.n_tokens - 1) : 0;
                    double sc = task_score(&s, out.text.p);
                    grid_add(&g, c, d, v, sc);
                    if (samples)
                        write_sample(samples, o->task, &s, o->ctx[c], n, d, i, var, sel.k, chat,
                                     out.text.p, out.n_tokens, sc, prefill_ms, decode_ms);
                }
                engine_seq_end(&e, 0);
                task_sample_free(&s);
            }
        }
        OKV_INFO("eval: ctx %d done in %.1f s", o->ctx[c], okv_now_s() - t_ctx);
    }
    if (!st && summary) print_summary(summary, o, name, &g);
    free(out.text.p);
    free(first);
    free(ids);
    free(g.sum);
    free(g.n);
    free(done);
    sampler_free(&smp);
    engine_free(&e);
    task_file_free(&src.file);
    return st ? st : n_err ? OKV_ERR_REQUEST : OKV_OK;
}
