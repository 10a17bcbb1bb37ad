/* requests.c — JSONL requests in (every bad line becomes an error record with its line number),
 * JSONL results out (one flushed line each), and --resume. The formats are in requests.h.
 * Tested by tests/e2e/test_run_batch.sh, tests/e2e/test_trust_inputs.sh and fuzz_requests. */
#include "requests.h"

#include "../common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* text with every byte that is not part of valid UTF-8 replaced: by U+FFFD, or with escape set
 * by the four characters \xNN, which keeps distinct ids distinct. */
static char *utf8_fix(const char *text, size_t n, bool escape) {
    char *out = malloc(n * 4 + 1);
    OKV_ASSERT(out);
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else if (escape) {
            snprintf(out + o, 5, "\\x%02x", s[i]);
            o += 4;
            i++;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

static bool utf8_valid(const char *text) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq(s + i, n - i))) return false;
    return true;
}

/* The value as it appeared, shortened, for an error message. */
static void show_value(const cJSON *v, char *buf, size_t cap) {
    char *raw = cJSON_PrintUnformatted(v);
    OKV_ASSERT(raw);
    char *s = utf8_fix(raw, strlen(raw), true);
    free(raw);
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

static const char *const request_fields[] = {
    "id", "prompt", "messages", "max_new_tokens", "temperature", "top_k", "top_p", "seed",
    "ignore_eos", "stop",
};
#define FIELD_LIST "id, prompt, messages, max_new_tokens, temperature, top_k, top_p, seed, " \
                   "ignore_eos, stop"

/* Unknown and repeated fields are errors: a misspelt "temprature" would otherwise run with the
 * default silently, and a repeated one would let the order decide. */
static bool check_field_names(okv_request *r, const cJSON *o) {
    for (const cJSON *it = o->child; it; it = it->next) {
        bool known = false;
        for (size_t i = 0; i < sizeof request_fields / sizeof *request_fields; i++)
            known = known || !strcmp(it->string, request_fields[i]);
        /* The name as a JSON string (control characters escaped) for the message. */
        cJSON *js = cJSON_CreateString(it->string);
        OKV_ASSERT(js);
        char name[80];
        show_value(js, name, sizeof name);
        cJSON_Delete(js);
        if (!known)
            r->error = fmt_str("line %d: unknown field %s; a request has only " FIELD_LIST,
                               r->line, name);
        for (const cJSON *p = o->child; known && p != it; p = p->next)
            if (!strcmp(p->string, it->string))
                r->error = fmt_str("line %d: field %s appears twice; give it once", r->line, name);
        if (r->error) return false;
    }
    return true;
}

/* Whether the JSON text holds the escape \u0000: cJSON would cut the string there. Escapes are
 * skipped whole so an escaped backslash followed by "u0000" is not one. */
static bool has_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 5 < n && !memcmp(s + i + 2, "0000", 4)) return true;
        i++;
    }
    return false;
}

void request_parse_line(const char *line, size_t len, int line_no, okv_request *r) {
    request_defaults(r);
    r->line = line_no;
    const char *end = NULL;
    cJSON *o = memchr(line, 0, len) ? NULL : cJSON_ParseWithLengthOpts(line, len, &end, 0);
    const cJSON *id = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
    bool id_bad_utf8 = false;
    if (cJSON_IsString(id) && id->valuestring[0]) {
        id_bad_utf8 = !utf8_valid(id->valuestring);
        /* Escaped, so the error record that names it is valid JSON. */
        r->id = id_bad_utf8 ? utf8_fix(id->valuestring, strlen(id->valuestring), true)
                            : dup_str(id->valuestring);
    } else if (whole(id, -9007199254740992.0, 9007199254740992.0)) {
        r->id = fmt_str("%.0f", id->valuedouble);
        r->id_numeric = true;
    } else {
        r->id = fmt_str("line-%d", line_no);
    }
    size_t rest = o ? strspn(end, " \t\r\n") + (size_t)(end - line) : 0;
    if (memchr(line, 0, len))
        r->error = fmt_str("line %d holds a NUL byte; request lines are JSON text", line_no);
    else if (!o) r->error = fmt_str("line %d is not valid JSON", line_no);
    else if (rest < len)
        r->error = fmt_str("line %d holds text after its JSON value (from column %zu); give one "
                           "request object per line", line_no, rest + 1);
    else if (!cJSON_IsObject(o)) r->error = fmt_str("line %d must be a JSON object", line_no);
    else if (has_nul_escape(line, len))
        r->error = fmt_str("line %d: a string holds \\u0000 (a NUL character), which a prompt "
                           "cannot carry; remove it", line_no);
    else if (id_bad_utf8)
        r->error = fmt_str("line %d: the id is not valid UTF-8 (shown with \\xNN escapes); ids "
                           "must be UTF-8 text", line_no);
    else if (id && !r->id_numeric && !cJSON_IsString(id)) bad_field(r, "id", id, "a string or a whole number");
    else if (cJSON_IsString(id) && !id->valuestring[0]) bad_field(r, "id", id, "a non-empty string");
    else if (check_field_names(r, o)) parse_fields(r, o);
    cJSON_Delete(o);
}

/* Ids name results, so the second and later requests with an id get an error record naming it;
 * --resume follows the same rule (an id with a result is served). */
typedef struct id_ref {
    const char *id;
    int index;
} id_ref;

static int cmp_id_ref(const void *a, const void *b) {
    const id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

static void mark_duplicates(okv_request_list *l) {
    if (l->n < 2) return;
    id_ref *refs = malloc(sizeof *refs * (size_t)l->n);
    OKV_ASSERT(refs);
    for (int i = 0; i < l->n; i++) refs[i] = (id_ref){l->items[i].id, i};
    qsort(refs, (size_t)l->n, sizeof *refs, cmp_id_ref);
    for (int i = 1; i < l->n; i++) {
        if (strcmp(refs[i].id, refs[i - 1].id)) continue;
        int first = i - 1;
        while (first > 0 && !strcmp(refs[first - 1].id, refs[i].id)) first--;
        okv_request *r = &l->items[refs[i].index];
        free(r->error);
        r->error = fmt_str("line %d: id '%.200s' is already used on line %d; ids must be unique",
                           r->line, r->id, l->items[refs[first].index].line);
    }
    free(refs);
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
        request_parse_line(line, (size_t)len, line_no, &out->items[out->n++]);
    }
    free(line);
    bool err = ferror(f);
    if (!use_stdin) fclose(f);
    if (err) {
        requests_free(out);
        return okv_fail(OKV_ERR_INPUT, "cannot read request file '%s'", path);
    }
    mark_duplicates(out);
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

/* Reads the earlier results into w->kept (the records without "error", whole lines only) and
 * marks the requests they served. Nothing is written. */
static int resume_read(okv_results *w, okv_request_list *l) {
    FILE *f = fopen(w->path, "rb");
    if (!f) {
        if (errno == ENOENT) return OKV_OK;
        return okv_fail(OKV_ERR_INPUT, "cannot open output file '%s' to resume: %s", w->path,
                        strerror(errno));
    }
    char **done = NULL;
    int n_done = 0, alloc = 0, dropped = 0;
    size_t kept_cap = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len == 0 || line[len - 1] != '\n') {
            OKV_WARN("%s ends in a partial line (an interrupted run); it is dropped", w->path);
            w->rewrite = true;
            break;
        }
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
        const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
        char *key = NULL;
        if (cJSON_IsObject(o) && !cJSON_GetObjectItemCaseSensitive(o, "error")) {
            if (cJSON_IsString(id)) key = dup_str(id->valuestring);
            else if (cJSON_IsNumber(id)) key = fmt_str("%.0f", id->valuedouble);
        }
        cJSON_Delete(o);
        if (!key) {
            dropped++;
            w->rewrite = true;
            continue;
        }
        if (n_done == alloc) {
            alloc = alloc ? alloc * 2 : 256;
            char **grown = realloc(done, sizeof *grown * (size_t)alloc);
            OKV_ASSERT(grown);
            done = grown;
        }
        done[n_done++] = key;
        if (w->kept_len + (size_t)len > kept_cap) {
            kept_cap = (w->kept_len + (size_t)len) * 2;
            char *grown = realloc(w->kept, kept_cap);
            OKV_ASSERT(grown);
            w->kept = grown;
        }
        memcpy(w->kept + w->kept_len, line, (size_t)len);
        w->kept_len += (size_t)len;
    }
    free(line);
    bool err = ferror(f);
    fclose(f);
    if (err) {
        for (int i = 0; i < n_done; i++) free(done[i]);
        free(done);
        return okv_fail(OKV_ERR_INPUT, "cannot read output file '%s' to resume", w->path);
    }
    qsort(done, (size_t)n_done, sizeof *done, cmp_str);
    int skipped = 0;
    for (int i = 0; i < l->n; i++) {
        okv_request *r = &l->items[i];
        if (!r->error && bsearch(&r->id, done, (size_t)n_done, sizeof *done, cmp_str)) {
            r->skip = true;
            skipped++;
        }
    }
    OKV_INFO("resume: %d results kept from %s, %d error or unreadable records retried; "
             "%d of %d requests skipped", n_done, w->path, dropped, skipped, l->n);
    for (int i = 0; i < n_done; i++) free(done[i]);
    free(done);
    return OKV_OK;
}

const char *finish_name(okv_finish f) {
    switch (f) {
    case FINISH_STOP: return "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_EOS: return "eos";
    }
    return "?";
}

static double round3(double x) { return round(x * 1e3) / 1e3; }

char *result_to_json(const okv_result *r) {
    cJSON *o = cJSON_CreateObject();
    OKV_ASSERT(o);
    /* Ids and messages from the reader are valid UTF-8 already; ids a caller made up and
     * messages quoting input are made so here, since every line must be valid JSON. */
    if (r->req->id_numeric) {
        cJSON_AddNumberToObject(o, "id", strtod(r->req->id, NULL));
    } else {
        char *id = utf8_fix(r->req->id, strlen(r->req->id), true);
        cJSON_AddStringToObject(o, "id", id);
        free(id);
    }
    if (r->error) {
        char *msg = utf8_fix(r->error, strlen(r->error), false);
        cJSON_AddStringToObject(o, "error", msg);
        free(msg);
    } else {
        char *text = utf8_fix(r->text ? r->text : "", r->text_len, false);
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

static bool is_stdout(const char *path) {
    return !path || !strcmp(path, "-") || !strcmp(path, "/dev/stdout");
}

int results_prepare(okv_results *w, const char *path, const char *input, bool resume,
                    okv_request_list *l) {
    memset(w, 0, sizeof *w);
    if (is_stdout(path) && resume)
        return okv_fail(OKV_ERR_USAGE, "--resume reads back the results file, so -o must name a "
                        "regular file, not standard output");
    if (is_stdout(path)) return OKV_OK;
    w->path = path;
    w->resume = resume;
    int st = okv_output_check(path, "results file", !resume);
    if (st) return st;
    struct stat so, si;
    if (input && strcmp(input, "-") && stat(path, &so) == 0 && stat(input, &si) == 0 &&
        so.st_dev == si.st_dev && so.st_ino == si.st_ino)
        return okv_fail(OKV_ERR_USAGE, "the results file '%s' is the request file '%s'; give -o "
                        "another path", path, input);
    if (resume && stat(path, &so) == 0 && !S_ISREG(so.st_mode))
        return okv_fail(OKV_ERR_USAGE, "--resume reads back the results file, so '%s' must be a "
                        "regular file", path);
    return resume ? resume_read(w, l) : OKV_OK;
}

/* --resume when records were dropped: the kept ones replace the file in one rename, so an
 * interruption leaves the old file or the new one. The rename goes to the link's target, so a
 * symlinked results file stays a link. */
static int resume_rewrite(okv_results *w) {
    char real[PATH_MAX];
    if (!okv_link_target(w->path, real, sizeof real))
        return okv_fail(OKV_ERR_INPUT, "cannot follow the symbolic links of results file '%s'",
                        w->path);
    struct stat sb;
    if (stat(real, &sb) != 0)
        return okv_fail(OKV_ERR_INPUT, "cannot stat results file '%s': %s", real, strerror(errno));
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.resume-tmp", real);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, sb.st_mode & 07777);
    if (fd < 0)
        return okv_fail(OKV_ERR_INPUT, "cannot write '%s' to resume: %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < w->kept_len) {
        ssize_t n = write(fd, w->kept + off, w->kept_len - off);
        if (n <= 0) break;
        off += (size_t)n;
    }
    int bad = off < w->kept_len || fsync(fd) != 0;
    int err = errno;
    if (close(fd) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad || rename(tmp, real) != 0) {
        if (!bad) err = errno;
        unlink(tmp);
        return okv_fail(OKV_ERR_INPUT, "cannot rewrite '%s' to resume: %s", real, strerror(err));
    }
    return OKV_OK;
}

int results_start(okv_results *w) {
    if (!w->path) {
        w->f = stdout;
        return OKV_OK;
    }
    int st = w->resume && w->rewrite ? resume_rewrite(w) : OKV_OK;
    free(w->kept);
    w->kept = NULL;
    w->kept_len = 0;
    if (st) return st;
    /* open(2) follows a symlink to its target and writes there; O_TRUNC leaves a FIFO alone. */
    int fd = open(w->path, O_WRONLY | O_CREAT | O_CLOEXEC | (w->resume ? O_APPEND : O_TRUNC), 0666);
    if (fd < 0 || !(w->f = fdopen(fd, w->resume ? "ab" : "wb"))) {
        int err = errno;
        if (fd >= 0) close(fd);
        return okv_fail(OKV_ERR_INPUT, "cannot open results file '%s': %s", w->path,
                        strerror(err));
    }
    w->close = true;
    return OKV_OK;
}

int results_write(okv_results *w, const okv_result *r) {
    char *s = result_to_json(r);
    bool bad = fputs(s, w->f) < 0 || fputc('\n', w->f) == EOF || fflush(w->f) != 0;
    free(s);
    if (r->error) w->n_err++;
    else w->n_ok++;
    if (bad)
        return okv_fail(OKV_ERR_INPUT, "cannot write a result to %s: %s",
                        w->path ? w->path : "stdout", strerror(errno));
    return OKV_OK;
}

int results_close(okv_results *w) {
    int st = OKV_OK;
    if (w->f) {
        bool bad = fflush(w->f) != 0;
        if (w->close && fclose(w->f) != 0) bad = true;
        if (bad)
            st = okv_fail(OKV_ERR_INPUT, "cannot finish writing results to %s: %s",
                          w->path ? w->path : "stdout", strerror(errno));
    }
    free(w->kept);
    memset(w, 0, sizeof *w);
    return st;
}
