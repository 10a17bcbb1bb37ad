/* fuzz_requests.c — libFuzzer target for the request-line parser of `omnikv run` (request_parse_line):
 * any line yields either an error record (one line of text naming the input line) or a request
 * that the runner can use as it stands: an id, exactly one of prompt and messages, non-empty stop
 * strings, and every override unset or inside its documented range. */
#include "common.h"
#include "io/requests.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *line = malloc(size + 1);
    if (!line) abort();
    if (size) memcpy(line, data, size);
    line[size] = '\0';
    okv_request_list l = {.items = calloc(1, sizeof(okv_request)), .n = 1};
    if (!l.items) abort();
    okv_request *r = &l.items[0];
    request_parse_line(line, 7, r);
    if (!r->id || !r->id[0]) abort();
    if (r->error) {
        if (strncmp(r->error, "line 7", 6) || strchr(r->error, '\n')) abort();
    } else {
        if (!r->prompt == !r->msgs) abort();
        for (int i = 0; i < r->n_msgs; i++)
            if (!r->msgs[i].role || !r->msgs[i].content) abort();
        for (int i = 0; i < r->n_stop; i++)
            if (!r->stop[i] || !r->stop[i][0]) abort();
        if (r->max_new_tokens < -1 || r->top_k < -1 || r->ignore_eos < -1 || r->ignore_eos > 1) abort();
        if (!(r->temperature >= 0 || r->temperature == -1.0f)) abort();
        if (!((r->top_p > 0 && r->top_p <= 1) || r->top_p == -1.0f)) abort();
    }
    requests_free(&l);
    free(line);
    return 0;
}
