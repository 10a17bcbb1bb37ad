/* loader.c — reading the user's LongBench / InfiniteBench JSONL files (one record per line,
 * lines of any length) and the suites' middle truncation. The per-suite tables are in
 * longbench.c and infinitebench.c. Tested by tests/unit/test_tasks.c on tests/data/. */
#include "loader.h"

#include "../common.h"
#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *loader_fill(const char *tmpl, const char *const *names, const char *const *vals, int n) {
    sbuf b = {0};
    for (const char *p = tmpl; *p;) {
        const char *open = strchr(p, '{');
        if (!open) {
            sbuf_puts(&b, p);
            break;
        }
        sbuf_put(&b, p, (size_t)(open - p));
        const char *close = strchr(open, '}');
        int hit = -1;
        for (int i = 0; close && i < n && hit < 0; i++)
            if ((size_t)(close - open - 1) == strlen(names[i]) &&
                !strncmp(open + 1, names[i], strlen(names[i])))
                hit = i;
        if (hit >= 0) {
            sbuf_puts(&b, vals[hit]);
            p = close + 1;
        } else {
            sbuf_put(&b, open, 1);
            p = open + 1;
        }
    }
    return sbuf_take(&b);
}

char *loader_text(const cJSON *v) {
    char *s = NULL;
    if (cJSON_IsString(v)) {
        s = strdup(v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9e15) OKV_ASSERT(asprintf(&s, "%.0f", d) > 0);
        else OKV_ASSERT(asprintf(&s, "%.17g", d) > 0);
    } else {
        return NULL;
    }
    OKV_ASSERT(s);
    return s;
}

char **loader_texts(const cJSON *v, int *n) {
    *n = 0;
    if (!v || cJSON_IsNull(v)) return NULL;
    int cap = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (cap == 0) return NULL;
    char **out = calloc((size_t)cap, sizeof(char *));
    OKV_ASSERT(out);
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            char *s = loader_text(e);
            if (s) out[(*n)++] = s;
        }
    } else {
        char *s = loader_text(v);
        if (s) out[(*n)++] = s;
    }
    if (!*n) {
        free(out);
        return NULL;
    }
    return out;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int task_file_load(task_file *f, task_suite suite, const char *path, bool chat, int max_records) {
    memset(f, 0, sizeof *f);
    f->suite = suite;
    const char *base = base_name(path);
    const char *ds = suite == TASK_SUITE_LONGBENCH ? longbench_dataset(base) : infinitebench_dataset(base);
    if (suite == TASK_SUITE_INFINITEBENCH && !ds)
        return okv_fail(OKV_ERR_USAGE, "%s: InfiniteBench files are recognised by name; it should "
                        "start with one of %s (as the suite's files do)", path, infinitebench_known());
    FILE *in = fopen(path, "r");
    if (!in) return okv_fail(OKV_ERR_INPUT, "cannot read %s", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int line_no = 0, st = OKV_OK, rec_cap = 0;
    int *lines = NULL; /* [n] the file line of each record */
    while (!st && (max_records <= 0 || f->n < max_records) && (len = getline(&line, &cap, in)) >= 0) {
        line_no++;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r')) k++;
        if (k == (size_t)len) continue;
        if (f->n == rec_cap) {
            rec_cap = rec_cap ? 2 * rec_cap : 16;
            f->rec = realloc(f->rec, sizeof *f->rec * (size_t)rec_cap);
            lines = realloc(lines, sizeof *lines * (size_t)rec_cap);
            OKV_ASSERT(f->rec && lines);
        }
        task_sample *s = &f->rec[f->n];
        lines[f->n++] = line_no;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        int rst = !cJSON_IsObject(j) ? (int)okv_fail(OKV_ERR_INPUT, "it is not a JSON object")
                  : suite == TASK_SUITE_LONGBENCH ? longbench_record(j, ds, s)
                                                 : infinitebench_record(j, ds, chat, s);
        if (rst) {
            /* Kept as an error record: one bad record does not end the file. */
            okv_error_prefix("%s line %d", path, line_no);
            memset(s, 0, sizeof *s);
            char *id = cJSON_IsObject(j) ? loader_text(cJSON_GetObjectItemCaseSensitive(j, "_id")) : NULL;
            if (!id) OKV_ASSERT(asprintf(&id, "line-%d", line_no) >= 0);
            s->id = id;
            s->dataset = strdup(ds ? ds : "?");
            s->error = strdup(okv_last_error());
            s->needle_at = -1;
            OKV_ASSERT(s->dataset && s->error);
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(in);
    const task_sample *first = NULL;
    for (int i = 0; i < f->n && !st; i++) {
        if (f->rec[i].error) continue;
        if (!first) first = &f->rec[i];
        else if (strcmp(first->dataset, f->rec[i].dataset))
            st = okv_fail(OKV_ERR_INPUT, "%s mixes datasets: line %d is %s, line %d is %s; give "
                          "one dataset per file (as the suite's files are) so each is scored and "
                          "summarised by its own metric", path, lines[first - f->rec],
                          first->dataset, lines[i], f->rec[i].dataset);
    }
    free(lines);
    if (!st && f->n == 0) st = okv_fail(OKV_ERR_INPUT, "%s holds no records", path);
    if (!st) {
        f->dataset = strdup(first ? first->dataset : f->rec[0].dataset);
        OKV_ASSERT(f->dataset);
    }
    if (st) task_file_free(f);
    return st;
}

void task_file_free(task_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) task_sample_free(&f->rec[i]);
    free(f->rec);
    free(f->dataset);
    memset(f, 0, sizeof *f);
}

static char **copy_strs(char *const *v, int n) {
    if (!n) return NULL;
    char **c = calloc((size_t)n, sizeof(char *));
    OKV_ASSERT(c);
    for (int i = 0; i < n; i++) {
        c[i] = strdup(v[i]);
        OKV_ASSERT(c[i]);
    }
    return c;
}

/* Text of ids[0..n) (control tokens such as BOS decode to nothing). */
static void put_pieces(sbuf *b, const okv_tokenizer *tok, const int32_t *ids, int n) {
    char piece[1024];
    for (int i = 0; i < n; i++) {
        int k = tokenizer_piece(tok, ids[i], false, piece, sizeof piece);
        if (k > 0) sbuf_put(b, piece, (size_t)k);
    }
}

int task_file_sample(const task_file *f, int i, const okv_tokenizer *tok, int max_tokens,
                     task_sample *out) {
    OKV_ASSERT(i >= 0 && i < f->n);
    const task_sample *r = &f->rec[i];
    OKV_ASSERT(!r->error); /* error records are written as such, never sampled */
    *out = *r;
    out->id = strdup(r->id);
    out->dataset = strdup(r->dataset);
    out->answers = copy_strs(r->answers, r->n_answers);
    out->classes = copy_strs(r->classes, r->n_classes);
    out->prompt = NULL;
    OKV_ASSERT(out->id && out->dataset);
    int n = synth_count(tok, r->prompt);
    if (n < 0) {
        task_sample_free(out);
        return okv_fail(OKV_ERR_INPUT, "record %s could not be tokenized: %s", r->id, okv_last_error());
    }
    if (n <= max_tokens) {
        out->prompt = strdup(r->prompt);
        OKV_ASSERT(out->prompt);
        out->n_tokens = n;
        return OKV_OK;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    OKV_ASSERT(ids);
    tokenizer_encode(tok, r->prompt, strlen(r->prompt), true, false, ids, n);
    int half = max_tokens / 2;
    sbuf b = {0};
    put_pieces(&b, tok, ids, half);
    put_pieces(&b, tok, ids + n - half, half);
    free(ids);
    out->prompt = sbuf_take(&b);
    out->n_tokens = synth_count(tok, out->prompt);
    return OKV_OK;
}
