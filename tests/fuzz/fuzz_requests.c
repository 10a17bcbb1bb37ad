/* fuzz_requests.c — libFuzzer target for the request-line parser of `omnikv run` (request_parse_line):
 * any line yields either an error record (one line of text naming the input line) or a request
 * that the runner can use as it stands: an id, exactly one of prompt and messages, non-empty stop
 * strings, and every override unset or inside its documented range. A line is accepted only when
 * it is one JSON object and nothing more, holds no NUL (raw or \u0000), only known fields, each
 * once, and a UTF-8 id; whatever the line, the record written for it is valid UTF-8 JSON. */
#include "common.h"
#include "io/requests.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *const known[] = {"id", "prompt", "messages", "max_new_tokens", "temperature",
                                    "top_k", "top_p", "seed", "ignore_eos", "stop"};

/* Plain byte-level UTF-8 check (overlongs and surrogates included), written apart from the
 * parser's so the two do not share a mistake. */
static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], cp;
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return 0;
        cp = len == 1 ? c : c & (0x7fu >> len);
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3fu);
        }
        static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* What an accepted line must satisfy, checked on cJSON's own reading of it. */
static void check_accepted(const char *line, size_t size) {
    if (memchr(line, 0, size)) abort();
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(line, size, &end, 0);
    if (!cJSON_IsObject(o)) abort();
    if (end + strspn(end, " \t\r\n") != line + size) abort();
    for (const cJSON *it = o->child; it; it = it->next) {
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(it->string, known[i]);
        if (!ok) abort();
        for (const cJSON *p = o->child; p != it; p = p->next)
            if (!strcmp(p->string, it->string)) abort();
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (cJSON_IsString(id) && !valid_utf8((const unsigned char *)id->valuestring, strlen(id->valuestring)))
        abort();
    /* A NUL escape would have cut a string short. */
    for (size_t i = 0; i + 5 < size; i++) {
        if (line[i] != '\\') continue;
        if (!memcmp(line + i + 1, "u0000", 5)) abort();
        i++;
    }
    cJSON_Delete(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *line = malloc(size + 1);
    if (!line) abort();
    if (size) memcpy(line, data, size);
    line[size] = '\0';
    okv_request_list l = {.items = calloc(1, sizeof(okv_request)), .n = 1};
    if (!l.items) abort();
    okv_request *r = &l.items[0];
    request_parse_line(line, size, 7, r);
    if (!r->id || !r->id[0]) abort();
    if (r->error) {
        if (strncmp(r->error, "line 7", 6) || strchr(r->error, '\n')) abort();
    } else {
        check_accepted(line, size);
        if (!r->prompt == !r->msgs) abort();
        for (int i = 0; i < r->n_msgs; i++)
            if (!r->msgs[i].role || !r->msgs[i].content) abort();
        for (int i = 0; i < r->n_stop; i++)
            if (!r->stop[i] || !r->stop[i][0]) abort();
        if (r->max_new_tokens < -1 || r->top_k < -1 || r->ignore_eos < -1 || r->ignore_eos > 1) abort();
        if (!(r->temperature >= 0 || r->temperature == -1.0f)) abort();
        if (!((r->top_p > 0 && r->top_p <= 1) || r->top_p == -1.0f)) abort();
    }
    /* The record written for the line (an error record, or a result with no text) is one line of
     * valid UTF-8 JSON that reads back as an object with the same id. */
    okv_result res = {.req = r, .error = r->error};
    char *js = result_to_json(&res);
    if (!valid_utf8((const unsigned char *)js, strlen(js)) || strchr(js, '\n')) abort();
    cJSON *back = cJSON_Parse(js);
    if (!cJSON_IsObject(back)) abort();
    const cJSON *bid = cJSON_GetObjectItemCaseSensitive(back, "id");
    if (r->id_numeric ? !cJSON_IsNumber(bid) : !cJSON_IsString(bid) || strcmp(bid->valuestring, r->id))
        abort();
    cJSON_Delete(back);
    free(js);
    requests_free(&l);
    free(line);
    return 0;
}
