/* calibrate.c — filter-layer calibration (see calibrate.h). The attention mass of a layer is the
 * mean over its query heads of the softmax restricted to prompt tokens; its top-k is what the
 * `last` selector would pick there; the needle is where the prompt's answers occur among its
 * tokens. Tested by tests/unit/test_calibrate.c. */
#include "calibrate.h"

#include "../common.h"
#include "../engine/engine.h"
#include "../tasks/tasks.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct probe_state {
    int n_layers, max_n;
    okv_selection pick; /* the plain top-k of the run's budget: no keep_first/last */
    float *mass;     /* [n_layers][max_n] this step's attention mass per layer */
    int32_t *top;    /* [n_layers][max_n] this step's top-k per layer */
    int *n_top;      /* [n_layers] */
    bool *seen;      /* [n_layers] */
    int32_t *needle; /* [n_needle] the counted positions: the prompt's answer tokens (NEEDLE), or
                        every prompt token (MASS) */
    int n_needle;
    bool *in_top;    /* [max_n] scratch: membership in one layer's top-k */
    double *cover;   /* [n_layers][n_layers] this prompt's sums of covered (needle) mass */
    double *total;   /* [n_layers] this prompt's sums of (needle) mass */
    double *share;   /* [n_layers][n_layers] sums over prompts of cover / total */
    double *mass_sum; /* [n_layers] sums over prompts of total per step */
    int n_prompts, n_steps; /* prompts summed into share; steps into this prompt's sums */
    okv_selector_scratch ss;
} probe_state;

static void probe(void *ctx, int layer, int slot, const float *logits, int n_heads, int n) {
    probe_state *ps = ctx;
    float *mass = ps->mass + (size_t)layer * ps->max_n;
    float *score = ps->ss.tmp_f;
    for (int j = 0; j < n; j++) mass[j] = 0;
    for (int h = 0; h < n_heads; h++) {
        const float *l = logits + (size_t)h * n;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = fmaxf(mx, l[j]);
        double z = 0;
        for (int j = 0; j < n; j++) z += exp(l[j] - mx);
        for (int j = 0; j < n; j++) mass[j] += (float)(exp(l[j] - mx) / z / n_heads);
    }
    (void)slot;
    selector_scores(SELECTOR_LAST, logits, n_heads, n, NULL, NULL, 0, score);
    /* score lives in tmp_f: selector_pick copies it into ss.score before its top-k reuses tmp_f */
    ps->n_top[layer] = selector_pick(&ps->pick, &ps->ss, score, n,
                                     ps->top + (size_t)layer * ps->max_n);
    ps->seen[layer] = true;
}

/* Adds this step's covered mass on the counted positions (the needle, or every prompt token for
 * MASS) for every layer pair, and each layer's mass on them, to this prompt's sums. */
static void accumulate(probe_state *ps) {
    const int L = ps->n_layers;
    for (int b = 0; b < L; b++) {
        if (!ps->seen[b]) continue;
        const float *mass = ps->mass + (size_t)b * ps->max_n;
        for (int i = 0; i < ps->n_needle; i++) ps->total[b] += mass[ps->needle[i]];
    }
    for (int a = 0; a < L; a++) {
        if (!ps->seen[a]) continue;
        const int32_t *top = ps->top + (size_t)a * ps->max_n;
        for (int i = 0; i < ps->n_top[a]; i++) ps->in_top[top[i]] = true;
        for (int b = 0; b < L; b++) {
            if (!ps->seen[b]) continue;
            const float *mass = ps->mass + (size_t)b * ps->max_n;
            double s = 0;
            for (int i = 0; i < ps->n_needle; i++)
                if (ps->in_top[ps->needle[i]]) s += mass[ps->needle[i]];
            ps->cover[(size_t)a * L + b] += s;
        }
        for (int i = 0; i < ps->n_top[a]; i++) ps->in_top[top[i]] = false;
    }
}

int calib_mark_answers(const okv_tokenizer *tok, const char *const *answers, int n_answers,
                       const int32_t *ids, int n, bool *mark) {
    int32_t pat[64];
    char text[256];
    int marked = 0;
    for (int i = 0; i < n; i++) mark[i] = false;
    for (int a = 0; a < n_answers; a++)
        for (int spaced = 0; spaced < 2; spaced++) {
            snprintf(text, sizeof text, "%s%s", spaced ? " " : "", answers[a]);
            int m = tokenizer_encode(tok, text, strlen(text), false, false, pat, 64);
            if (m <= 0) continue;
            for (int i = 0; i + m <= n; i++) {
                if (memcmp(ids + i, pat, sizeof(int32_t) * (size_t)m)) continue;
                for (int j = i; j < i + m; j++) marked += !mark[j], mark[j] = true;
            }
        }
    return marked;
}

double calib_choose(const double *cover, const double *weight, int L, int nf, int wait,
                    double dense_cost, int *filters) {
    OKV_ASSERT(nf >= 1 && nf <= L);
    /* seg[f][e]: lost mass of the sparse layers f+W+1..e-1 when f is a filter and e the next one
     * (or L); infinite when f would govern no sparse layer. */
    double *seg = malloc(sizeof(double) * (size_t)L * (L + 1));
    double *best = malloc(sizeof(double) * (size_t)nf * L);
    int *from = malloc(sizeof(int) * (size_t)nf * L);
    OKV_ASSERT(seg && best && from);
#define SEG(f, e) seg[(size_t)(f) * (L + 1) + (e)]
    for (int f = 0; f < L; f++)
        for (int e = f + 1; e <= L; e++) {
            double c = e < f + wait + 2 ? INFINITY : 0.0;
            for (int l = f + 1 + wait; l < e; l++)
                c += (weight ? weight[l] : 1.0) * (1.0 - cover[(size_t)f * L + l]);
            SEG(f, e) = c;
        }
    /* best[i][f]: the lowest loss of layers 0..f-1 with filter i (0-based) at layer f. */
    for (int f = 0; f < L; f++) best[f] = dense_cost * f, from[f] = -1;
    for (int i = 1; i < nf; i++)
        for (int f = 0; f < L; f++) {
            best[i * L + f] = INFINITY;
            from[i * L + f] = -1;
            for (int p = 0; p < f; p++) {
                double c = best[(i - 1) * L + p] + SEG(p, f);
                if (c < best[i * L + f]) best[i * L + f] = c, from[i * L + f] = p;
            }
        }
    double loss = INFINITY;
    int last = -1;
    for (int f = 0; f < L; f++) {
        double c = best[(nf - 1) * L + f] + SEG(f, L);
        if (c < loss) loss = c, last = f;
    }
    for (int i = nf - 1; i >= 0; i--) {
        filters[i] = last;
        last = last >= 0 ? from[i * L + last] : -1;
    }
#undef SEG
    free(seg);
    free(best);
    free(from);
    return loss;
}

/* One prompt's sums -> its shares (each prompt counts alike: a needle near the end draws far
 * more attention than one far back, and would otherwise outweigh it), then cleared. */
static void close_prompt(probe_state *ps) {
    const int L = ps->n_layers;
    if (!ps->n_steps) return;
    for (int b = 0; b < L; b++) {
        for (int a = 0; a < L; a++)
            ps->share[(size_t)a * L + b] += ps->total[b] > 0 ? ps->cover[(size_t)a * L + b] / ps->total[b] : 1.0;
        ps->mass_sum[b] += ps->total[b] / ps->n_steps;
    }
    ps->n_prompts++;
    ps->n_steps = 0;
    memset(ps->cover, 0, sizeof(double) * (size_t)L * L);
    memset(ps->total, 0, sizeof(double) * (size_t)L);
}

/* Mean shares over the prompts; weights from the layers' needle mass (NEEDLE) or 1 (MASS). */
static int finish(const probe_state *ps, const calib_opts *o, calib_result *r) {
    const int L = ps->n_layers;
    double mean = 0;
    for (int b = 0; b < L; b++) mean += ps->mass_sum[b] / L;
    if (!(mean > 0))
        return okv_fail(OKV_ERR_INPUT, "no layer attended to the answer tokens of the calibration "
                        "prompts; use --objective mass or longer --steps");
    for (int b = 0; b < L; b++) {
        r->weight[b] = o->objective == CALIB_OBJECTIVE_NEEDLE ? ps->mass_sum[b] / mean : 1.0;
        for (int a = 0; a < L; a++) r->cover[(size_t)a * L + b] = ps->share[(size_t)a * L + b] / ps->n_prompts;
    }
    r->n_filters = o->n_filters;
    r->loss = calib_choose(r->cover, r->weight, L, o->n_filters, o->wait, o->dense_cost, r->filters);
    if (!isfinite(r->loss))
        return okv_fail(OKV_ERR_USAGE, "%d filter layers with %d wait layers each do not fit %d layers (each filter needs a sparse layer after its wait layers)", o->n_filters, o->wait, L);
    return OKV_OK;
}

int calib_run(const okv_model *m, const calib_opts *o, calib_result *r) {
    memset(r, 0, sizeof *r);
    const int L = m->cfg.n_layers, V = m->cfg.n_vocab;
    if (o->n_filters < 1 || o->n_filters > L || o->n_filters > OKV_MAX_FILTERS)
        return okv_fail(OKV_ERR_USAGE, "--filters %d is out of range for a model of %d layers", o->n_filters, L);
    if (!m->tok) return okv_fail(OKV_ERR_INPUT, "calibration needs the model's tokenizer");
    const char *task_name = o->task ? o->task : "passkey";
    const task_def *task = task_find(task_name);
    if (!task)
        return okv_fail(OKV_ERR_USAGE, "calibrate: unknown task '%s'; see omnikv eval --help for "
                        "the generated tasks", task_name);
    okv_run_config rc;
    config_defaults(&rc);
    rc.policy = POLICY_DENSE;
    rc.max_context_len = o->ctx + o->steps + 64;
    rc.threads = o->threads;
    rc.num_selected = o->budget;
    rc.min_selected = o->min_selected;
    okv_engine e;
    int st = engine_init(&e, m, &rc, 0, L, 1);
    if (st) return st;
    probe_state ps = {.n_layers = L, .max_n = rc.max_context_len};
    ps.mass = calloc((size_t)L * ps.max_n, sizeof(float));
    ps.top = calloc((size_t)L * ps.max_n, sizeof(int32_t));
    ps.n_top = calloc((size_t)L, sizeof(int));
    ps.seen = calloc((size_t)L, sizeof(bool));
    ps.needle = calloc((size_t)ps.max_n, sizeof(int32_t));
    ps.in_top = calloc((size_t)ps.max_n, sizeof(bool));
    ps.cover = calloc((size_t)L * L, sizeof(double));
    ps.total = calloc((size_t)L, sizeof(double));
    ps.share = calloc((size_t)L * L, sizeof(double));
    ps.mass_sum = calloc((size_t)L, sizeof(double));
    r->n_layers = L;
    r->cover = calloc((size_t)L * L, sizeof(double));
    r->weight = calloc((size_t)L, sizeof(double));
    const float *logits = NULL;
    int32_t *ids = calloc((size_t)rc.max_context_len, sizeof(int32_t));
    bool *mark = calloc((size_t)rc.max_context_len, sizeof(bool));
    OKV_ASSERT(ps.mass && ps.top && ps.n_top && ps.seen && ps.needle && ps.in_top && ps.cover &&
               ps.total && ps.share && ps.mass_sum && r->cover && r->weight && ids && mark);
    if ((st = selector_scratch_init(&ps.ss, ps.max_n))) goto done;
    if ((st = engine_set_probe(&e, probe, &ps))) goto done;
    for (int p = 0; p < o->n_prompts && !st; p++) {
        task_sample s;
        /* Needles spread evenly over the haystack: what an early filter layer finds depends on
         * how far back the needle is, and a few random depths can all land near the end. */
        double depth = (p + 0.5) / o->n_prompts;
        if ((st = task->gen(m->tok, o->ctx, depth, o->seed + (uint64_t)p, &s))) break;
        int n = tokenizer_encode(m->tok, s.prompt, strlen(s.prompt), true, false, ids, rc.max_context_len);
        int n_marked = n > 0 ? calib_mark_answers(m->tok, (const char *const *)s.answers, s.n_answers,
                                                  ids, n, mark) : 0;
        if (n <= 0 || n > o->ctx + 64) {
            st = okv_fail(OKV_ERR_INTERNAL, "calibration prompt %d encoded to %d tokens", p, n);
        } else if (o->objective == CALIB_OBJECTIVE_NEEDLE && !n_marked) {
            st = okv_fail(OKV_ERR_INPUT, "calibration prompt %s: its answer '%s' is not among its "
                          "tokens; use --objective mass", s.id, s.n_answers ? s.answers[0] : "");
        }
        task_sample_free(&s);
        if (st) break;
        ps.n_needle = 0;
        for (int i = 0; i < n; i++)
            if (mark[i] || o->objective == CALIB_OBJECTIVE_MASS) ps.needle[ps.n_needle++] = i;
        ps.pick = (okv_selection){.k = config_budget(&rc, n), .selector = SELECTOR_LAST};
        if ((st = engine_seq_start(&e, 0, n))) break;
        for (int pos = 0; pos < n && !st; pos += rc.prefill_chunk) {
            int c = OKV_MIN(rc.prefill_chunk, n - pos);
            engine_embed(&e, ids + pos, c);
            st = engine_prefill(&e, 0, pos, c);
            if (pos + c == n) logits = engine_head(&e, c - 1, 1);
        }
        for (int t = 0; t < o->steps && !st; t++) {
            int32_t tok = 0;
            for (int v = 1; v < V; v++)
                if (logits[v] > logits[tok]) tok = v;
            memset(ps.seen, 0, sizeof(bool) * (size_t)L);
            engine_embed(&e, &tok, 1);
            if ((st = engine_decode(&e, (int[]){0}, 1))) break;
            logits = engine_head(&e, 0, 1);
            accumulate(&ps);
            ps.n_steps++;
            r->samples++;
        }
        close_prompt(&ps);
        engine_seq_end(&e, 0);
        OKV_INFO("calibration prompt %d/%d done (%d tokens, %d answer tokens)", p + 1, o->n_prompts,
                 n, n_marked);
    }
    if (!st && r->samples) st = finish(&ps, o, r);
done:
    selector_scratch_free(&ps.ss);
    free(ps.mass);
    free(ps.top);
    free(ps.n_top);
    free(ps.seen);
    free(ps.needle);
    free(ps.in_top);
    free(ps.cover);
    free(ps.total);
    free(ps.share);
    free(ps.mass_sum);
    free(ids);
    free(mark);
    engine_free(&e);
    if (st) calib_result_free(r);
    return st;
}

void calib_result_free(calib_result *r) {
    free(r->cover);
    free(r->weight);
    memset(r, 0, sizeof *r);
}

int calib_write_fragment(const calib_result *r, const calib_opts *o, const char *path) {
    cJSON *j = cJSON_CreateObject();
    char list[OKV_MAX_FILTERS * 8] = "";
    for (int i = 0; i < r->n_filters; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", r->filters[i]);
    cJSON_AddStringToObject(j, "policy", "omnikv");
    cJSON_AddStringToObject(j, "do_select_layers", list);
    cJSON_AddNumberToObject(j, "num_wait_load_layers", o->wait);
    cJSON_AddNumberToObject(j, "num_of_selected_tokens", o->budget);
    cJSON_AddStringToObject(j, "selector_cls", "last");
    cJSON *cal = cJSON_AddObjectToObject(j, "calibration");
    cJSON_AddStringToObject(cal, "objective", o->objective == CALIB_OBJECTIVE_NEEDLE ? "needle" : "mass");
    cJSON_AddStringToObject(cal, "task", o->task ? o->task : "passkey");
    cJSON_AddNumberToObject(cal, "loss", r->loss);
    cJSON_AddNumberToObject(cal, "dense_cost", o->dense_cost);
    cJSON_AddNumberToObject(cal, "samples", r->samples);
    cJSON_AddNumberToObject(cal, "prompt_tokens", o->ctx);
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = fopen(path, "w");
    if (!f) {
        free(txt);
        return okv_fail(OKV_ERR_INPUT, "cannot write %s", path);
    }
    fprintf(f, "%s\n", txt);
    free(txt);
    return fclose(f) ? okv_fail(OKV_ERR_INPUT, "cannot write %s", path) : OKV_OK;
}

int calib_write_csv(const calib_result *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return okv_fail(OKV_ERR_INPUT, "cannot write %s", path);
    fprintf(f, "l1");
    for (int b = 0; b < r->n_layers; b++) fprintf(f, ",%d", b);
    fprintf(f, "\n");
    for (int a = 0; a < r->n_layers; a++) {
        fprintf(f, "%d", a);
        for (int b = 0; b < r->n_layers; b++) fprintf(f, ",%.5f", r->cover[(size_t)a * r->n_layers + b]);
        fprintf(f, "\n");
    }
    fprintf(f, "weight");
    for (int b = 0; b < r->n_layers; b++) fprintf(f, ",%.5f", r->weight[b]);
    fprintf(f, "\n");
    return fclose(f) ? okv_fail(OKV_ERR_INPUT, "cannot write %s", path) : OKV_OK;
}

/* A perceptually ordered dark-blue -> teal -> yellow ramp. */
static void colormap(double v, uint8_t rgb[3]) {
    static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    double x = v * 4;
    int i = x >= 4 ? 3 : (int)x;
    double t = x - i;
    for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)(stops[i][c] + t * (stops[i + 1][c] - stops[i][c]) + 0.5);
}

int calib_write_png(const calib_result *r, const char *path) {
    const int L = r->n_layers, cell = L <= 40 ? 16 : 8, size = L * cell;
    FILE *f = fopen(path, "wb");
    if (!f) return okv_fail(OKV_ERR_INPUT, "cannot write %s", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *row = malloc((size_t)size * 3);
    if (!png || !info || !row || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(row);
        fclose(f);
        return okv_fail(OKV_ERR_INPUT, "cannot write the PNG %s", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)size, (png_uint_32)size, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* These are bare cells; the text says how to read them and where the labelled figure is. */
    png_text text[2] = {
        {.compression = PNG_TEXT_COMPRESSION_NONE, .key = "Title",
         .text = "omnikv calibrate: layer-pair coverage, unlabelled"},
        {.compression = PNG_TEXT_COMPRESSION_NONE, .key = "Description",
         .text = "Row l1 (the selecting layer), column l2: the share of l2's attention mass in "
                 "l1's top-k, dark blue 0 to yellow 1; grey below the diagonal; a white tick on "
                 "the left edge marks a chosen filter layer. `jobs/plot.py FRAGMENT.csv` draws "
                 "the labelled heat map (axes, layer numbers, colour bar) from the CSV beside "
                 "this file."},
    };
    png_set_text(png, info, text, 2);
    png_write_info(png, info);
    /* Row = l1 (the selecting layer), column = l2; cells below the diagonal are drawn grey, and
     * the chosen filter layers get a white tick on the left edge. */
    for (int y = 0; y < size; y++) {
        int a = y / cell;
        bool chosen = false;
        for (int i = 0; i < r->n_filters; i++) chosen |= r->filters[i] == a;
        for (int x = 0; x < size; x++) {
            int b = x / cell;
            uint8_t *px = row + (size_t)x * 3;
            if (chosen && x < cell / 4) px[0] = px[1] = px[2] = 255;
            else if (b < a) px[0] = px[1] = px[2] = 40;
            else colormap(r->cover[(size_t)a * L + b], px);
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    return fclose(f) ? okv_fail(OKV_ERR_INPUT, "cannot write %s", path) : OKV_OK;
}
