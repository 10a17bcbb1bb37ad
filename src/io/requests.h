/* requests.h — the JSONL request reader and the JSONL result writer of `omnikv run` (DESIGN
 * §8), and --resume. A bad input line becomes an error record, never the end of the batch.
 * Tested by tests/e2e/test_run_batch.sh.
 *
 * Request line (one JSON object and nothing after it; any other field, a field given twice, a
 * string holding \u0000, or an id that is not valid UTF-8 makes the line an error record):
 *   id              string or integer; "line-N" when absent (N = 1-based line number)
 *   prompt          string, or
 *   messages        [{"role": "system"|"user"|"assistant", "content": string}, ...] (chat)
 *   max_new_tokens  integer >= 0          temperature  number >= 0
 *   top_k           integer >= 0          top_p        number in (0, 1]
 *   seed            integer >= 0          ignore_eos   boolean
 *   stop            [string, ...] or one string; generation ends when the text contains one,
 *                   and the text is cut before it
 * Ids are unique: the second and later requests with an id get an error record naming it.
 * Results are written in the order requests finish (continuous batching), one per request.
 * Result line: {"id", "text", "tokens": [generated ids, a final end-of-generation id included],
 *   "prompt_tokens", "finish_reason": "stop"|"length"|"eos", "ttft_ms", "prefill_tok_s",
 *   "decode_tok_s", "k", "policy", "metrics": {...}} or {"id", "error": "one sentence"}; with
 *   the run-config key logits_digest also "logits_fnv": 16 hex digits identifying the bits of
 *   every logits row the request sampled from (rank-count equivalence tests compare it). */
#ifndef OKV_REQUESTS_H
#define OKV_REQUESTS_H

#include "../engine/metrics.h"
#include "../model/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct okv_request {
    int line;             /* 1-based line in the input (0: not from a file) */
    char *id;             /* text form of the id */
    bool id_numeric;      /* the id was a JSON number and is written back as one */
    char *prompt;         /* NULL when msgs or ids are given */
    chat_msg *msgs;       /* [n_msgs], strings owned */
    int n_msgs;
    int32_t *ids;         /* [n_ids] a tokenized prompt (bench, tasks); NULL otherwise */
    int n_ids;
    int max_new_tokens;   /* < 0: the run config's */
    float temperature;    /* < 0: the run config's */
    int top_k;            /* < 0: the run config's */
    float top_p;          /* < 0: the run config's */
    bool has_seed;
    uint64_t seed;
    int ignore_eos;       /* < 0: the run config's, else 0 / 1 */
    char **stop;          /* [n_stop] non-empty strings */
    int n_stop;
    char *error;          /* the line could not be used: written as an error record */
    bool skip;            /* served by an earlier run (--resume) */
} okv_request;

typedef struct okv_request_list {
    okv_request *items; /* [n] */
    int n;
} okv_request_list;

/* A request with every override unset (the run config decides). */
void request_defaults(okv_request *r);
/* Reads a JSONL file ("-": stdin). Blank lines are skipped. Fails (OKV_ERR_INPUT) only when the
 * file cannot be read; bad lines and repeated ids become requests with .error set. */
int requests_read_jsonl(const char *path, okv_request_list *out);
/* Parses line[0..len) (no newline) into r (used by the reader; exposed for the fuzz target). */
void request_parse_line(const char *line, size_t len, int line_no, okv_request *r);
void requests_free(okv_request_list *l);

typedef enum okv_finish { FINISH_STOP = 0, FINISH_LENGTH = 1, FINISH_EOS = 2 } okv_finish;
const char *finish_name(okv_finish f);

/* A request's share of the engine's decode counters (okv_metrics): a batched step's counters are
 * split evenly among the sequences it advanced. Times in seconds. */
typedef struct okv_result_metrics {
#define OKV_RESULT_METRICS_DECLARE(name, type, what) double name;
    OKV_METRICS_FIELDS(OKV_RESULT_METRICS_DECLARE)
#undef OKV_RESULT_METRICS_DECLARE
} okv_result_metrics;

typedef struct okv_result {
    const okv_request *req;
    const char *error;      /* non-NULL: an error record */
    const char *text;       /* [text_len] bytes, may end inside a UTF-8 sequence */
    size_t text_len;
    const int32_t *tokens;  /* [n_tokens] */
    int n_tokens;
    int prompt_tokens;
    okv_finish finish;
    double ttft_ms, prefill_tok_s, decode_tok_s;
    /* On okv_now_s()'s clock, for figures over several requests (bench --batch): when the
     * prefill was queued, and when each generated token arrived ([n_tokens]). Not written to the
     * result line. */
    double t_prefill_s;
    const double *token_times;
    int k;                  /* selection budget for this prompt (omnikv) */
    const char *policy;
    okv_result_metrics metrics;
    bool has_digest;        /* run config logits_digest: write logits_fnv */
    uint64_t logits_digest; /* FNV-1a over the digests of every logits row sampled from */
} okv_result;

/* The result as one JSON object (malloc'd, no newline). Text bytes that are not valid UTF-8
 * become U+FFFD so the line stays valid JSON. */
char *result_to_json(const okv_result *r);

typedef struct okv_results {
    FILE *f;
    bool close;       /* opened here (not stdout) */
    int n_ok, n_err;
    const char *path; /* NULL: stdout */
    bool resume;
    bool rewrite;     /* --resume found error records or a partial line to drop */
    char *kept;       /* [kept_len] --resume: the earlier records kept, whole lines */
    size_t kept_len;
} okv_results;

/* Checks the results path before anything runs, writing nothing: NULL, "-" and /dev/stdout are
 * stdout; otherwise okv_output_check's rules (a FIFO streams), and the path must not be the
 * request file `input` (same device and inode; OKV_ERR_USAGE). With resume the file must be
 * regular; the ids of its records without "error" were served, so matching requests without
 * an error of their own get .skip. A missing file means nothing was served. */
int results_prepare(okv_results *w, const char *path, const char *input, bool resume,
                    okv_request_list *l);
/* Opens the results once everything else is validated: truncates, or with --resume keeps the
 * served records (error records and a partial last line are dropped by an atomic rewrite of
 * the link's target) and appends. */
int results_start(okv_results *w);
/* One line per result, flushed at once so an interrupted run keeps what it finished. */
int results_write(okv_results *w, const okv_result *r);
/* A failed flush or close (a full disk) is OKV_ERR_INPUT: the results are incomplete. Safe on a
 * zeroed or never-started writer. */
int results_close(okv_results *w);

#endif
