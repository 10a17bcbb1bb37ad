/* requests.c — JSONL requests in (every bad line becomes an error record with its line number),
 * JSONL results out (one flushed line each), and --resume. The formats are in requests.h.
 * Tested by tests/e2e/test_run_batch.sh. */
#include "requests.h"

#include "../common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void request_defaults(okv_request *r) {
    memset(r, 0, sizeof *r);
    r->max_new_tokens = -1;
    r->temperature = -1.0f;
    r->top_k = -1;
    r->top_p = -1.0f;
    r->ignore_eos = -1;
}

static char *dup_str(const char *s) {
    char *d = strdup(s);
    OKV_ASSERT(d);
    return d;
}

static char *fmt_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_str(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    OKV_ASSERT(n >= 0);
    return s;
}

/* The value as it appeared, shortened, for an error message. */
static void show_value(const cJSON *v, char *buf, size_t cap) {
    char *s = cJSON_PrintUnformatted(v);
    OKV_ASSERT(s);
    if (strlen(s) >= cap && cap > 4) snprintf(buf, cap, "%.*s...", (int)cap - 4, s);
    else snprintf(buf, cap, "%s", s);
    free(s);
}

/* Records the error; returns false so parsers can `return bad_field(...)`. */
static bool bad_field(okv_request *r, const char *field, const cJSON *v, const char *expect) {
    char shown[80];
    show_value(v, shown, sizeof shown);
    r->error = fmt_str("line %d: field %s must be %s, not %s", r->line, field, expect, shown);
    return false;
}

static bool whole(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= lo &&
           v->valuedouble <= hi;
}

static bool parse_messages(okv_request *r, const cJSON *msgs) {
    const char *expect = "a list of {\"role\": string, \"content\": string} objects";
    int n = cJSON_GetArraySize(msgs);
    if (!cJSON_IsArray(msgs) || n == 0) return bad_field(r, "messages", msgs, expect);
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    OKV_ASSERT(r->msgs);
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content))
            return bad_field(r, "messages", m, expect);
        r->msgs[r->n_msgs].role = dup_str(role->valuestring);
        r->msgs[r->n_msgs].content = dup_str(content->valuestring);
        r->n_msgs++;
    }
    return true;
}

static bool parse_stop(okv_request *r, const cJSON *v) {
    const char *expect = "a non-empty string or a list of them";
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0]) return bad_field(r, "stop", v, expect);
        r->stop = calloc(1, sizeof *r->stop);
        OKV_ASSERT(r->stop);
        r->stop[r->n_stop++] = dup_str(v->valuestring);
        return true;
    }
    if (!cJSON_IsArray(v)) return bad_field(r, "stop", v, expect);
    int n = cJSON_GetArraySize(v);
    r->stop = calloc((size_t)(n ? n : 1), sizeof *r->stop);
    OKV_ASSERT(r->stop);
    const cJSON *s;
    cJSON_ArrayForEach(s, v) {
        if (!cJSON_IsString(s) || !s->valuestring[0]) return bad_field(r, "stop", v, expect);
        r->stop[r->n_stop++] = dup_str(s->valuestring);
    }
    return true;
}

/* A seed as a JSON integer up to 2^53 (doubles hold those exactly) or as decimal text. */
static bool parse_seed(const cJSON *v, uint64_t *out) {
    if (whole(v, 0, 9007199254740992.0)) {
        *out = (uint64_t)v->valuedouble;
        return true;
    }
    if (!cJSON_IsString(v) || !v->valuestring[0] || v->valuestring[0] == '-') return false;
    char *end;
    errno = 0;
    *out = strtoull(v->valuestring, &end, 10);
    return !*end && !errno;
}

static bool parse_fields(okv_request *r, const cJSON *o) {
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (prompt && msgs) {
        r->error = fmt_str("line %d: give either prompt or messages, not both", r->line);
        return false;
    }
    if (!prompt && !msgs) {
        r->error = fmt_str("line %d: the request has neither prompt nor messages", r->line);
        return false;
    }
    if (prompt) {
        if (!cJSON_IsString(prompt)) return bad_field(r, "prompt", prompt, "a string");
        r->prompt = dup_str(prompt->valuestring);
    } else if (!parse_messages(r, msgs)) {
        return false;
    }
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "max_new_tokens"))) {
        if (!whole(v, 0, 1e9)) return bad_field(r, "max_new_tokens", v, "a whole number >= 0");
        r->max_new_tokens = (int)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "temperature"))) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1e6))
            return bad_field(r, "temperature", v, "a number >= 0");
        r->temperature = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "top_k"))) {
        if (!whole(v, 0, 2e9)) return bad_field(r, "top_k", v, "a whole number >= 0");
        r->top_k = (int)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "top_p"))) {
        /* Checked as the float the sampler uses: 1e-46 is above 0 but rounds to 0 ("unset"). */
        const float p = cJSON_IsNumber(v) ? (float)v->valuedouble : 0.0f;
        if (!(p > 0.0f && p <= 1.0f)) return bad_field(r, "top_p", v, "a number in (0, 1]");
        r->top_p = p;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "seed"))) {
        if (!parse_seed(v, &r->seed)) return bad_field(r, "seed", v, "a whole number >= 0");
        r->has_seed = true;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "ignore_eos"))) {
        if (!cJSON_IsBool(v)) return bad_field(r, "ignore_eos", v, "true or false");
        r->ignore_eos = cJSON_IsTrue(v) ? 1 : 0;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "stop"))) return parse_stop(r, v);
    return true;
}

void request_parse_line(const char *line, int line_no, okv_request *r) {
    request_defaults(r);
    r->line = line_no;
    cJSON *o = cJSON_Parse(line);
    const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
    if (cJSON_IsString(id) && id->valuestring[0]) {
        r->id = dup_str(id->valuestring);
    } else if (whole(id, -9007199254740992.0, 9007199254740992.0)) {
        r->id = fmt_str("%.0f", id->valuedouble);
        r->id_numeric = true;
    } else {
        r->id = fmt_str("line-%d", line_no);
    }
    if (!o) r->error = fmt_str("line %d is not valid JSON", line_no);
    else if (!cJSON_IsObject(o)) r->error = fmt_str("line %d must be a JSON object", line_no);
    else if (id && !r->id_numeric && !cJSON_IsString(id)) bad_field(r, "id", id, "a string or a whole number");
    else if (cJSON_IsString(id) && !id->valuestring[0]) bad_field(r, "id", id, "a non-empty string");
    else parse_fields(r, o);
    cJSON_Delete(o);
}

int requests_read_jsonl(const char *path, okv_request_list *out) {
    memset(out, 0, sizeof *out);
    bool use_stdin = !strcmp(path, "-");
    FILE *f = use_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return okv_fail(OKV_ERR_INPUT, "cannot open request file '%s': %s", path,
                        strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int line_no = 0, alloc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (strspn(line, " \t") == (size_t)len) continue;
        if (out->n == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            okv_request *grown = realloc(out->items, sizeof *grown * (size_t)alloc);
            OKV_ASSERT(grown);
            out->items = grown;
        }
        request_parse_line(line, line_no, &out->items[out->n++]);
    }
    free(line);
    bool err = ferror(f);
    if (!use_stdin) fclose(f);
    if (err) {
        requests_free(out);
        return okv_fail(OKV_ERR_INPUT, "cannot read request file '%s'", path);
    }
    return OKV_OK;
}

void requests_free(okv_request_list *l) {
    for (int i = 0; i < l->n; i++) {
        okv_request *r = &l->items[i];
        free(r->id);
        free(r->prompt);
        for (int j = 0; j < r->n_msgs; j++) {
            free((char *)r->msgs[j].role);
            free((char *)r->msgs[j].content);
        }
        free(r->msgs);
        free(r->ids);
        for (int j = 0; j < r->n_stop; j++) free(r->stop[j]);
        free(r->stop);
        free(r->error);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int requests_resume(okv_request_list *l, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        return -okv_fail(OKV_ERR_INPUT, "cannot open output file '%s' to resume: %s", path,
                         strerror(errno));
    }
    char tmp_path[4096];
    snprintf(tmp_path, sizeof tmp_path, "%s.resume-tmp", path);
    FILE *out = fopen(tmp_path, "wb");
    if (!out) {
        fclose(f);
        return -okv_fail(OKV_ERR_INPUT, "cannot write '%s' to resume: %s", tmp_path,
                         strerror(errno));
    }
    char **done = NULL;
    int n_done = 0, alloc = 0, dropped = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len == 0 || line[len - 1] != '\n') {
            OKV_WARN("%s ends in a partial line (an interrupted run); it is dropped", path);
            break;
        }
        cJSON *o = cJSON_Parse(line);
        const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
        char *key = NULL;
        if (cJSON_IsObject(o) && !cJSON_GetObjectItemCaseSensitive(o, "error")) {
            if (cJSON_IsString(id)) key = dup_str(id->valuestring);
            else if (cJSON_IsNumber(id)) key = fmt_str("%.0f", id->valuedouble);
        }
        cJSON_Delete(o);
        if (!key) {
            dropped++;
            continue;
        }
        if (n_done == alloc) {
            alloc = alloc ? alloc * 2 : 256;
            char **grown = realloc(done, sizeof *grown * (size_t)alloc);
            OKV_ASSERT(grown);
            done = grown;
        }
        done[n_done++] = key;
        fwrite(line, 1, (size_t)len, out);
    }
    free(line);
    fclose(f);
    int st = OKV_OK;
    if (fclose(out) != 0 || rename(tmp_path, path) != 0)
        st = okv_fail(OKV_ERR_INPUT, "cannot rewrite '%s' to resume: %s", path, strerror(errno));
    int skipped = 0;
    if (!st) {
        qsort(done, (size_t)n_done, sizeof *done, cmp_str);
        for (int i = 0; i < l->n; i++) {
            okv_request *r = &l->items[i];
            if (!r->error && bsearch(&r->id, done, (size_t)n_done, sizeof *done, cmp_str)) {
                r->skip = true;
                skipped++;
            }
        }
        OKV_INFO("resume: %d results kept from %s, %d error or unreadable records retried; "
                 "%d of %d requests skipped", n_done, path, dropped, skipped, l->n);
    }
    for (int i = 0; i < n_done; i++) free(done[i]);
    free(done);
    return st ? -st : skipped;
}

const char *finish_name(okv_finish f) {
    switch (f) {
    case FINISH_STOP: return "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_EOS: return "eos";
    }
    return "?";
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return c ? 1 : 0;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0; /* overlong */
        if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return len;
}

static char *utf8_clean(const char *text, size_t n) {
    char *out = malloc(n * 3 + 1);
    OKV_ASSERT(out);
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

static double round3(double x) { return round(x * 1e3) / 1e3; }

char *result_to_json(const okv_result *r) {
    cJSON *o = cJSON_CreateObject();
    OKV_ASSERT(o);
    if (r->req->id_numeric) cJSON_AddNumberToObject(o, "id", strtod(r->req->id, NULL));
    else cJSON_AddStringToObject(o, "id", r->req->id);
    if (r->error) {
        cJSON_AddStringToObject(o, "error", r->error);
    } else {
        char *text = utf8_clean(r->text ? r->text : "", r->text_len);
        cJSON_AddStringToObject(o, "text", text);
        free(text);
        cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
        for (int i = 0; i < r->n_tokens; i++)
            cJSON_AddItemToArray(toks, cJSON_CreateNumber(r->tokens[i]));
        cJSON_AddNumberToObject(o, "prompt_tokens", r->prompt_tokens);
        cJSON_AddStringToObject(o, "finish_reason", finish_name(r->finish));
        cJSON_AddNumberToObject(o, "ttft_ms", round3(r->ttft_ms));
        cJSON_AddNumberToObject(o, "prefill_tok_s", round3(r->prefill_tok_s));
        cJSON_AddNumberToObject(o, "decode_tok_s", round3(r->decode_tok_s));
        cJSON_AddNumberToObject(o, "k", r->k);
        cJSON_AddStringToObject(o, "policy", r->policy ? r->policy : "");
        const okv_result_metrics *m = &r->metrics;
        cJSON *mo = cJSON_AddObjectToObject(o, "metrics");
        cJSON_AddNumberToObject(mo, "steps", round3(m->steps));
        cJSON_AddNumberToObject(mo, "rows_dense", round3(m->rows_dense));
        cJSON_AddNumberToObject(mo, "rows_filter", round3(m->rows_filter));
        cJSON_AddNumberToObject(mo, "rows_sparse", round3(m->rows_sparse));
        cJSON_AddNumberToObject(mo, "bytes_kv", round3(m->bytes_kv));
        cJSON_AddNumberToObject(mo, "bytes_weights", round3(m->bytes_weights));
        cJSON_AddNumberToObject(mo, "select_ms", round3(m->t_select * 1e3));
        cJSON_AddNumberToObject(mo, "attn_dense_ms", round3(m->t_attn_dense * 1e3));
        cJSON_AddNumberToObject(mo, "attn_sparse_ms", round3(m->t_attn_sparse * 1e3));
        cJSON_AddNumberToObject(mo, "matmul_ms", round3(m->t_matmul * 1e3));
        cJSON_AddNumberToObject(mo, "other_ms", round3(m->t_other * 1e3));
        if (r->has_digest) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)r->logits_digest);
            cJSON_AddStringToObject(o, "logits_fnv", hex);
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    OKV_ASSERT(s);
    cJSON_Delete(o);
    return s;
}

int results_open(okv_results *w, const char *path, bool append) {
    memset(w, 0, sizeof *w);
    if (!path || !strcmp(path, "-")) {
        w->f = stdout;
        return OKV_OK;
    }
    w->f = fopen(path, append ? "ab" : "wb");
    if (!w->f)
        return okv_fail(OKV_ERR_INPUT, "cannot open output file '%s': %s", path,
                        strerror(errno));
    w->close = true;
    return OKV_OK;
}

int results_write(okv_results *w, const okv_result *r) {
    char *s = result_to_json(r);
    bool bad = fputs(s, w->f) < 0 || fputc('\n', w->f) == EOF || fflush(w->f) != 0;
    free(s);
    if (r->error) w->n_err++;
    else w->n_ok++;
    if (bad) return okv_fail(OKV_ERR_INPUT, "cannot write a result: %s", strerror(errno));
    return OKV_OK;
}

void results_close(okv_results *w) {
    if (w->close && w->f) fclose(w->f);
    memset(w, 0, sizeof *w);
}
