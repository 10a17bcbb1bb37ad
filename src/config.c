/* config.c — the run config: defaults, one table of keys, the text parsers every source goes
 * through (JSON file, OMNIKV_<KEY> environment, --set), validation against the model, JSON
 * output and the broadcast from rank 0. Tested by tests/unit/test_config.c. */
#include "config.h"

#include "model/genmodel.h"
#include "../kernels/backend.h"
#include "../pipeline/planner.h"

#include "common.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum key_id {
    KEY_POLICY, KEY_DO_SELECT_LAYERS, KEY_NUM_WAIT_LOAD_LAYERS, KEY_NUM_SELECTED, KEY_MIN_SELECTED, KEY_SELECTOR,
    KEY_WINDOW_SIZE, KEY_REAL_OFFLOAD, KEY_DENSE_MORE, KEY_KEEP_FIRST, KEY_KEEP_LAST, KEY_THREADS,
    KEY_KV_TYPE, KEY_CPU_ISA, KEY_PREFILL_CHUNK, KEY_MAX_CONTEXT_LEN, KEY_MAX_BATCH, KEY_MAX_NEW_TOKENS,
    KEY_IGNORE_EOS, KEY_SEED, KEY_TEMPERATURE, KEY_TOP_K, KEY_TOP_P, KEY_MODEL_SHAPE,
    KEY_MICRO_BATCHES, KEY_EXPECTED_CONTEXT, KEY_STAGES, KEY_PLAN_COST, KEY_TRANSPORT, KEY_TRACE, KEY_LOGITS_DIGEST,
    KEY_BACKEND, KEY_BANK_GATHER, KEY_PEER_TIMEOUT, KEY_PROGRESS, KEY_ROW_CACHE, KEY_FILL,
} key_id;

typedef struct config_key {
    const char *name;
    key_id id;
    const char *def; /* default as shown by --help; config_defaults holds the values */
    const char *help;
} config_key;

/* cpu_num_threads is the reference implementation's name for threads. */
static const config_key keys[] = {
    {"policy", KEY_POLICY, "dense, or omnikv once do_select_layers is set",
     "omnikv | dense; omnikv needs do_select_layers"},
    {"do_select_layers", KEY_DO_SELECT_LAYERS, "none",
     "filter layers, \"2,8,18\" or [2,8,18]: ascending, distinct, below the model's layer count"},
    {"num_wait_load_layers", KEY_NUM_WAIT_LOAD_LAYERS, "1",
     "W: dense layers after each filter layer (>= 0)"},
    {"num_of_selected_tokens", KEY_NUM_SELECTED, "4096",
     "k: a value in (0, 1) is a fraction of the prompt, truncated as the reference implementation "
     "does (0.29 of 100 is 28, under one token none), >= 1 a whole token count; unlike the "
     "reference a JSON 2048.0 is a count, not a fraction, and 1.0 is one token, not all"},
    {"min_selected_tokens", KEY_MIN_SELECTED, "0",
     "k is never below this many prompt tokens (>= 0), so a fractional k stays useful on short "
     "prompts; 0 = the reference's plain fraction"},
    {"selector_cls", KEY_SELECTOR, "softmax_before_last", "last | softmax_before_last | uniform | exp"},
    {"window_size", KEY_WINDOW_SIZE, "16", "queries scored by the uniform / exp selectors (>= 1)"},
    {"real_offload", KEY_REAL_OFFLOAD, "true",
     "keep the sparse layers' prompt KV in the host Context Bank (false: on the device)"},
    {"dense_more", KEY_DENSE_MORE, "true", "only true is supported: wait layers are dense"},
    {"keep_first", KEY_KEEP_FIRST, "0", "first prompt tokens always selected (>= 0; above the prompt's length: all of it)"},
    {"keep_last", KEY_KEEP_LAST, "0", "last prompt tokens always selected (>= 0; above the prompt's length: all of it)"},
    {"threads", KEY_THREADS, "0",
     "compute threads per rank (also -t), 0..1024; 0 = OMP_NUM_THREADS, else the rank's granted cores"},
    {"cpu_num_threads", KEY_THREADS, "0", "alias of threads"},
    {"kv_type", KEY_KV_TYPE, "f16",
     "KV cache, tail and bank element type: f16 | f32 | q8_0 (53% of f16's bytes) | q4_0 (28%); "
     "q8_0 and q4_0 on the CPU backend only"},
    {"cpu_isa", KEY_CPU_ISA, "auto",
     "CPU kernel path: auto (the fastest this CPU supports) | avx512 | avx2 | generic"},
    {"prefill_chunk", KEY_PREFILL_CHUNK, "512", "prompt tokens per prefill chunk, 1..65536"},
    {"max_context_len", KEY_MAX_CONTEXT_LEN, "0",
     "prompt + generated tokens per sequence, up to 1G (128K = 131072); 0 = the model's training context"},
    {"max_batch", KEY_MAX_BATCH, "1", "sequences decoded together, 1..4096"},
    {"max_new_tokens", KEY_MAX_NEW_TOKENS, "256", "default generation limit per request (>= 0)"},
    {"ignore_eos", KEY_IGNORE_EOS, "false", "keep generating past end-of-generation tokens"},
    {"seed", KEY_SEED, "0", "sampling seed; a request without its own seed uses seed + its line"},
    {"temperature", KEY_TEMPERATURE, "0", "0 = greedy (>= 0)"},
    {"top_k", KEY_TOP_K, "0", "keep the k most likely tokens; 0 = off (>= 0)"},
    {"top_p", KEY_TOP_P, "1", "nucleus mass, 0 < p <= 1; 1 = off"},
    {"model_shape", KEY_MODEL_SHAPE, "\"\"", "named model shape (gen-model --shape) for `plan`; presets set it"},
    {"micro_batches", KEY_MICRO_BATCHES, "0",
     "micro-batches the active batch is split into, each in a different pipeline stage; 0 = the "
     "rank count (at most max_batch when given)"},
    {"expected_context", KEY_EXPECTED_CONTEXT, "0",
     "tokens per sequence (prompt + generated) the stage planner balances KV reads for; 0 = "
     "max_context_len"},
    {"stages", KEY_STAGES, "\"\"",
     "hand partition of the layers over the ranks, \"0-7,8-17,18-29\"; \"\" = the planner's"},
    {"plan_cost", KEY_PLAN_COST, "measured",
     "what the stage planner balances: measured (matmul and attention timed on rank 0 at "
     "start-up) | bytes (bytes read per step; the same plan on every run)"},
    {"transport", KEY_TRANSPORT, "auto", "stage-boundary transport: auto | mpi | mpi-cuda | nccl"},
    {"trace", KEY_TRACE, "\"\"", "write a Chrome/Perfetto trace of every rank to this file"},
    {"peer_timeout_s", KEY_PEER_TIMEOUT, "60",
     "seconds a rank waits on another (a boundary message, a token return, a start-up step) "
     "before it says which peer fell silent and aborts the job; 0 = wait forever. Raise it when "
     "one pipeline step or one stage's start-up can take longer"},
    {"progress_s", KEY_PROGRESS, "5",
     "seconds between the decode progress lines of run and bench (rates leave out prefill); 0 = none"},
    {"logits_digest", KEY_LOGITS_DIGEST, "false",
     "results carry logits_fnv, a hash of every logits row sampled from"},
    {"backend", KEY_BACKEND, "auto",
     "auto (cuda when built with it and a GPU is visible, else cpu) | cpu | cpu-strict (checks "
     "that every op gets backend memory) | cuda"},
    {"bank_gather", KEY_BANK_GATHER, "auto",
     "how sparse layers read selected bank rows: inplace (where they are) | staged (gathered "
     "into backend memory on the copy stream) | auto (inplace on the CPU, staged on a GPU)"},
    {"row_cache", KEY_ROW_CACHE, "true",
     "with staged gathers, keep each group's previous selected rows in backend memory and copy "
     "only the rows new this step (twice the staging memory)"},
    {"fill", KEY_FILL, "prefill",
     "how prompts reach the KV cache and bank: prefill (computed) | synthetic (every position but "
     "the last gets generated K/V rows, not computed; the last is computed over them), so decode "
     "at long contexts can be timed without a long prefill; outputs are not meaningful"},
};
#define N_KEYS (sizeof keys / sizeof *keys)

/* Keys of the reference implementation's configs that configure its Python stack (model
 * classes, quantization, flash-attention, analysis switches) and have no meaning here; a preset
 * written for it loads unchanged. */
static const char *const ignored_keys[] = {
    "model_name", "model_cls", "cache_cls", "use_chat_template", "cot", "load_in_8bit",
    "load_in_4bit", "use_flash_attn", "sparse_in_prefill", "max_len_can_hold", "attn_seg_sz",
    "offload_sparse_layers", "decoder_start_layer_idx", "offload_sid", "skip_threshold",
    "pretraining_tp", "rope_factor",
};

void config_defaults(okv_run_config *c) {
    memset(c, 0, sizeof *c);
    c->policy = POLICY_DENSE;
    c->policy_explicit = false;
    c->n_filter_layers = 0;
    c->num_wait_load_layers = 1;
    c->num_selected = 4096; /* the reference's defaults, so its configs that omit them load alike */
    c->min_selected = 0;
    c->selector = SELECTOR_SOFTMAX_BEFORE_LAST;
    c->window_size = 16;
    c->real_offload = true;
    c->dense_more = true;
    c->keep_first = 0;
    c->keep_last = 0;
    c->threads = 0;
    c->kv_type = OKV_TYPE_F16;
    c->cpu_isa = OKV_CPU_ISA_AUTO;
    c->prefill_chunk = 512;
    c->max_context_len = 0;
    c->max_batch = 1;
    c->max_new_tokens = 256;
    c->ignore_eos = false;
    c->seed = 0;
    c->temperature = 0.0f;
    c->top_k = 0;
    c->top_p = 1.0f;
    c->micro_batches = 0;
    c->plan_measured = true;
    c->transport = TRANSPORT_AUTO;
    c->peer_timeout_s = 60.0;
    c->progress_s = 5.0;
    c->logits_digest = false;
    c->row_cache = true;
}

const char *config_transport_name(okv_transport_kind t) {
    switch (t) {
    case TRANSPORT_AUTO: return "auto";
    case TRANSPORT_MPI: return "mpi";
    case TRANSPORT_MPI_CUDA: return "mpi-cuda";
    case TRANSPORT_NCCL: return "nccl";
    }
    return "?";
}

static const config_key *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static bool is_ignored(const char *name) {
    for (size_t i = 0; i < sizeof ignored_keys / sizeof *ignored_keys; i++)
        if (!strcmp(ignored_keys[i], name)) return true;
    return false;
}

static int bad_value(const char *key, const char *value, const char *expect) {
    return okv_fail(OKV_ERR_USAGE, "run-config key %s has the value '%s', but it must be %s", key,
                    value, expect);
}

/* A copy of value without surrounding white space, in buf. */
static const char *trimmed(const char *value, char *buf, size_t cap) {
    while (isspace((unsigned char)*value)) value++;
    size_t n = strlen(value);
    while (n && isspace((unsigned char)value[n - 1])) n--;
    if (n >= cap) n = cap - 1;
    memcpy(buf, value, n);
    buf[n] = 0;
    return buf;
}

static bool parse_long(const char *s, long long *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* A count (okv_parse_count: 128K = 131072) in lo..hi. */
static int set_int(const char *key, const char *v, long long lo, long long hi, int *out) {
    int64_t x;
    if (!okv_parse_count(v, lo, hi, &x)) {
        char expect[160];
        snprintf(expect, sizeof expect, "a whole number >= %lld and at most %lld (K and M "
                 "multiply by 1024 and 1024^2)", lo, hi);
        return bad_value(key, v, expect);
    }
    *out = (int)x;
    return OKV_OK;
}

/* A duration in seconds, 0..1e9; zero_means says what 0 does. */
static int set_seconds(const char *key, const char *v, const char *zero_means, double *out) {
    double x;
    if (!parse_double(v, &x) || !(x >= 0.0 && x <= 1e9)) {
        char what[96];
        snprintf(what, sizeof what, "a number of seconds >= 0 (0: %s)", zero_means);
        return bad_value(key, v, what);
    }
    *out = x;
    return OKV_OK;
}

static int set_bool(const char *key, const char *v, bool *out) {
    if (!strcasecmp(v, "true") || !strcmp(v, "1")) *out = true;
    else if (!strcasecmp(v, "false") || !strcmp(v, "0")) *out = false;
    else return bad_value(key, v, "true or false");
    return OKV_OK;
}

/* "2,8,18", "[2, 8, 18]" or "" (no filter layers). */
static int set_layers(okv_run_config *c, const char *key, const char *v) {
    const char *expect = "a list of ascending, distinct layer numbers >= 0 such as \"2,8,18\"";
    char buf[1024];
    size_t n = strlen(v);
    if (n >= sizeof buf) return bad_value(key, v, expect);
    memcpy(buf, v, n + 1);
    char *s = buf;
    if (*s == '[') {
        if (n < 2 || s[n - 1] != ']') return bad_value(key, v, expect);
        s[n - 1] = 0;
        s++;
    }
    int layers[OKV_MAX_FILTERS];
    int count = 0;
    char tmp[64];
    bool empty = strspn(s, " \t") == strlen(s); /* "" and "[]": no filter layers */
    /* Entries are split by hand: strtok would accept "2,,8" by merging the commas. */
    for (char *p = s; !empty;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        long long x;
        if (!parse_long(trimmed(p, tmp, sizeof tmp), &x) || x < 0 || x > INT_MAX)
            return bad_value(key, v, expect);
        if (count && x <= layers[count - 1]) return bad_value(key, v, expect);
        if (count == OKV_MAX_FILTERS) {
            char lim[96];
            snprintf(lim, sizeof lim, "a list of at most %d filter layers", OKV_MAX_FILTERS);
            return bad_value(key, v, lim);
        }
        layers[count++] = (int)x;
        if (!comma) break;
        p = comma + 1;
    }
    memcpy(c->filter_layers, layers, sizeof(int) * (size_t)count);
    c->n_filter_layers = count;
    if (!c->policy_explicit) c->policy = count ? POLICY_OMNIKV : POLICY_DENSE;
    return OKV_OK;
}

static int set_num_selected(okv_run_config *c, const char *key, const char *v) {
    double x;
    int64_t n;
    const char *expect = "a fraction of the prompt in (0, 1) or a whole token count >= 1 (2K = "
                         "2048)";
    if (okv_parse_count(v, 1, INT_MAX, &n)) x = (double)n;
    else if (!parse_double(v, &x) || x <= 0.0) return bad_value(key, v, expect);
    if (x >= 1.0 && (x != floor(x) || x > INT_MAX)) return bad_value(key, v, expect);
    c->num_selected = x;
    return OKV_OK;
}

int config_set(okv_run_config *c, const char *key, const char *value) {
    const config_key *k = find_key(key);
    if (!k) {
        if (is_ignored(key)) {
            /* rope_factor changes the numerics, so its absence deserves more than a debug line. */
            okv_log(strcmp(key, "rope_factor") ? OKV_LOG_DEBUG : OKV_LOG_WARN,
                    "run-config key %s belongs to the reference implementation's Python stack; "
                    "ignored%s", key,
                    strcmp(key, "rope_factor") ? "" : " (the model file's rope scaling is used)");
            return OKV_OK;
        }
        return okv_fail(OKV_ERR_USAGE,
                        "unknown run-config key '%s'; `omnikv run --help` lists the keys", key);
    }
    char buf[1024];
    if (strlen(value) >= sizeof buf)
        return okv_fail(OKV_ERR_USAGE, "run-config key %s has a value of %zu bytes; no key takes "
                        "more than %zu", key, strlen(value), sizeof buf - 1);
    const char *v = trimmed(value, buf, sizeof buf);
    switch (k->id) {
    case KEY_POLICY:
        if (!strcmp(v, "omnikv")) c->policy = POLICY_OMNIKV;
        else if (!strcmp(v, "dense")) c->policy = POLICY_DENSE;
        else return bad_value(key, v, "omnikv or dense");
        c->policy_explicit = true;
        return OKV_OK;
    case KEY_DO_SELECT_LAYERS: return set_layers(c, key, v);
    case KEY_NUM_WAIT_LOAD_LAYERS:
        return set_int(key, v, 0, INT_MAX, &c->num_wait_load_layers);
    case KEY_NUM_SELECTED: return set_num_selected(c, key, v);
    case KEY_SELECTOR:
        if (!strcmp(v, "last")) c->selector = SELECTOR_LAST;
        else if (!strcmp(v, "softmax_before_last")) c->selector = SELECTOR_SOFTMAX_BEFORE_LAST;
        else if (!strcmp(v, "uniform")) c->selector = SELECTOR_UNIFORM;
        else if (!strcmp(v, "exp")) c->selector = SELECTOR_EXP;
        else return bad_value(key, v, "one of last, softmax_before_last, uniform, exp");
        return OKV_OK;
    case KEY_WINDOW_SIZE: {
        return set_int(key, v, 1, OKV_MAX_WINDOW, &c->window_size);
    }
    case KEY_MODEL_SHAPE: {
        okv_model_config shape;
        if (*v && genmodel_shape(v, &shape) != OKV_OK) return bad_value(key, v, "a shape gen-model knows (omnikv gen-model --help lists them)");
        snprintf(c->model_shape, sizeof c->model_shape, "%s", v);
        return OKV_OK;
    }
    case KEY_MICRO_BATCHES:
        return set_int(key, v, 0, OKV_MAX_BATCH, &c->micro_batches);
    case KEY_EXPECTED_CONTEXT:
        return set_int(key, v, 0, OKV_MAX_CONTEXT, &c->expected_context);
    case KEY_STAGES: {
        int first[OKV_MAX_STAGES + 1], n = 0;
        if (*v && planner_parse_stages(v, -1, first, OKV_MAX_STAGES, &n) != OKV_OK)
            return bad_value(key, v, "contiguous layer ranges from layer 0 such as "
                             "\"0-7,8-17,18-29\"");
        snprintf(c->stages, sizeof c->stages, "%s", v);
        return OKV_OK;
    }
    case KEY_PLAN_COST:
        if (!strcmp(v, "measured")) c->plan_measured = true;
        else if (!strcmp(v, "bytes")) c->plan_measured = false;
        else return bad_value(key, v, "measured or bytes");
        return OKV_OK;
    case KEY_TRANSPORT:
        if (!strcmp(v, "auto")) c->transport = TRANSPORT_AUTO;
        else if (!strcmp(v, "mpi")) c->transport = TRANSPORT_MPI;
        else if (!strcmp(v, "mpi-cuda")) c->transport = TRANSPORT_MPI_CUDA;
        else if (!strcmp(v, "nccl")) c->transport = TRANSPORT_NCCL;
        else return bad_value(key, v, "one of auto, mpi, mpi-cuda, nccl");
        return OKV_OK;
    case KEY_CPU_ISA: {
        const int isa = okv_cpu_isa_from_name(v);
        if (isa < 0) return bad_value(key, v, "one of auto, avx512, avx2, generic");
        c->cpu_isa = (okv_cpu_isa)isa;
        return OKV_OK;
    }
    case KEY_TRACE:
        if (strlen(v) >= sizeof c->trace) return bad_value(key, v, "a path shorter than 512 bytes");
        snprintf(c->trace, sizeof c->trace, "%s", v);
        return OKV_OK;
    case KEY_LOGITS_DIGEST: return set_bool(key, v, &c->logits_digest);
    case KEY_ROW_CACHE: return set_bool(key, v, &c->row_cache);
    case KEY_FILL:
        if (!strcmp(v, "prefill")) c->fill_synthetic = false;
        else if (!strcmp(v, "synthetic")) c->fill_synthetic = true;
        else return bad_value(key, v, "prefill or synthetic");
        return OKV_OK;
    case KEY_BACKEND: {
        int k = okv_backend_kind_from_name(v);
        if (k < 0) return bad_value(key, v, "one of auto, cpu, cpu-strict, cuda");
        c->backend = k;
        return OKV_OK;
    }
    case KEY_BANK_GATHER:
        if (!strcmp(v, "auto")) c->bank_gather = BANK_GATHER_AUTO;
        else if (!strcmp(v, "inplace")) c->bank_gather = BANK_GATHER_INPLACE;
        else if (!strcmp(v, "staged")) c->bank_gather = BANK_GATHER_STAGED;
        else return bad_value(key, v, "one of auto, inplace, staged");
        return OKV_OK;
    case KEY_REAL_OFFLOAD: return set_bool(key, v, &c->real_offload);
    case KEY_DENSE_MORE: {
        bool b;
        int st = set_bool(key, v, &b);
        if (st) return st;
        if (!b)
            return okv_fail(OKV_ERR_USAGE, "run-config key dense_more has the value '%s', but only "
                            "dense_more=true is supported: wait layers are dense", v);
        c->dense_more = true;
        return OKV_OK;
    }
    case KEY_MIN_SELECTED: return set_int(key, v, 0, OKV_MAX_CONTEXT, &c->min_selected);
    case KEY_KEEP_FIRST: return set_int(key, v, 0, INT_MAX, &c->keep_first);
    case KEY_KEEP_LAST: return set_int(key, v, 0, INT_MAX, &c->keep_last);
    case KEY_THREADS: return set_int(key, v, 0, OKV_MAX_THREADS, &c->threads);
    case KEY_KV_TYPE:
        if (!strcmp(v, "f16")) c->kv_type = OKV_TYPE_F16;
        else if (!strcmp(v, "f32")) c->kv_type = OKV_TYPE_F32;
        else if (!strcmp(v, "q8_0")) c->kv_type = OKV_TYPE_Q8_0;
        else if (!strcmp(v, "q4_0")) c->kv_type = OKV_TYPE_Q4_0;
        else return bad_value(key, v, "f16, f32, q8_0 or q4_0");
        return OKV_OK;
    case KEY_PREFILL_CHUNK: return set_int(key, v, 1, OKV_MAX_PREFILL_CHUNK, &c->prefill_chunk);
    case KEY_MAX_CONTEXT_LEN:
        return set_int(key, v, 0, OKV_MAX_CONTEXT, &c->max_context_len);
    case KEY_MAX_BATCH: return set_int(key, v, 1, OKV_MAX_BATCH, &c->max_batch);
    case KEY_MAX_NEW_TOKENS:
        return set_int(key, v, 0, INT_MAX, &c->max_new_tokens);
    case KEY_IGNORE_EOS: return set_bool(key, v, &c->ignore_eos);
    case KEY_SEED: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno || *v == '-')
            return bad_value(key, v, "a whole number in 0..18446744073709551615");
        c->seed = x;
        return OKV_OK;
    }
    case KEY_TEMPERATURE: {
        double x;
        if (!parse_double(v, &x) || x < 0.0 || x > 1e6)
            return bad_value(key, v, "a number >= 0 (0: greedy)");
        c->temperature = (float)x;
        return OKV_OK;
    }
    case KEY_TOP_K: return set_int(key, v, 0, INT_MAX, &c->top_k);
    case KEY_PEER_TIMEOUT: return set_seconds(key, v, "no deadline", &c->peer_timeout_s);
    case KEY_PROGRESS: return set_seconds(key, v, "no progress lines", &c->progress_s);
    case KEY_TOP_P: {
        double x;
        if (!parse_double(v, &x) || !(x > 0.0 && x <= 1.0))
            return bad_value(key, v, "a number with 0 < top_p <= 1 (1: off)");
        c->top_p = (float)x;
        return OKV_OK;
    }
    }
    okv_die(__FILE__, __LINE__, "unhandled run-config key");
}

/* The text form config_set expects for one JSON member. */
static int json_member_text(const cJSON *it, char *buf, size_t cap) {
    const char *key = it->string;
    if (cJSON_IsString(it)) {
        if (strlen(it->valuestring) >= cap)
            return okv_fail(OKV_ERR_USAGE, "run-config key %s has a value longer than %zu bytes",
                            key, cap - 1);
        snprintf(buf, cap, "%s", it->valuestring);
    } else if (cJSON_IsBool(it)) {
        snprintf(buf, cap, "%s", cJSON_IsTrue(it) ? "true" : "false");
    } else if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        /* Whole numbers print without a fraction so 2048.0 reads as the count 2048. */
        if (d == floor(d) && fabs(d) < 1e18) snprintf(buf, cap, "%.0f", d);
        else snprintf(buf, cap, "%.17g", d);
    } else if (cJSON_IsArray(it)) {
        if (strcmp(key, "do_select_layers"))
            return okv_fail(OKV_ERR_USAGE, "run-config key %s takes a single value, not a list",
                            key);
        size_t n = 0;
        buf[0] = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, it) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble))
                return okv_fail(OKV_ERR_USAGE, "run-config key do_select_layers must list whole "
                                "layer numbers such as [2, 8, 18]");
            int w = snprintf(buf + n, cap - n, "%s%.0f", n ? "," : "", e->valuedouble);
            if (w < 0 || (size_t)w >= cap - n)
                return okv_fail(OKV_ERR_USAGE, "run-config key do_select_layers lists too many "
                                "layers");
            n += (size_t)w;
        }
    } else {
        return okv_fail(OKV_ERR_USAGE, "run-config key %s must be a string, number, boolean or "
                        "(for do_select_layers) a list, not %s", key,
                        cJSON_IsNull(it) ? "null" : "an object");
    }
    return OKV_OK;
}

int config_load_json(okv_run_config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return okv_fail(OKV_ERR_USAGE, "cannot open run-config file '%s': %s", path,
                        strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(text, cap);
            OKV_ASSERT(grown);
            text = grown;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    bool read_err = ferror(f);
    fclose(f);
    if (read_err) {
        free(text);
        return okv_fail(OKV_ERR_USAGE, "cannot read run-config file '%s'", path);
    }
    text[len] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    const char *at = root ? end + strspn(end, " \t\r\n") : cJSON_GetErrorPtr();
    if (!root || at < text + len) {
        int line = 1;
        for (const char *p = text; at && p < at && *p; p++) line += *p == '\n';
        free(text);
        cJSON_Delete(root);
        if (root)
            return okv_fail(OKV_ERR_USAGE, "run-config file '%s' holds more than one JSON value "
                            "(text after the object at line %d); keep one object", path, line);
        return okv_fail(OKV_ERR_USAGE, "run-config file '%s' is not valid JSON (error near line "
                        "%d)", path, line);
    }
    free(text);
    int st = OKV_OK;
    if (!cJSON_IsObject(root)) {
        st = okv_fail(OKV_ERR_USAGE, "run-config file '%s' must hold one JSON object of "
                      "key: value pairs", path);
    } else {
        const cJSON *it;
        char buf[1024];
        cJSON_ArrayForEach(it, root) {
            /* A repeated key would let the file's order decide silently. */
            for (const cJSON *p = root->child; p != it && !st; p = p->next)
                if (!strcmp(p->string, it->string))
                    st = okv_fail(OKV_ERR_USAGE, "run-config file '%s' sets key %s twice; keep "
                                  "one", path, it->string);
            if (st) break;
            if (!find_key(it->string) && is_ignored(it->string)) {
                config_set(c, it->string, ""); /* logs that it is ignored */
                continue;
            }
            if ((st = json_member_text(it, buf, sizeof buf)) ||
                (st = config_set(c, it->string, buf))) {
                okv_error_prefix("%s", path);
                break;
            }
        }
    }
    cJSON_Delete(root);
    return st;
}

int config_load_env(okv_run_config *c) {
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[96] = "OMNIKV_";
        size_t n = strlen(name);
        for (const char *p = keys[i].name; *p && n + 1 < sizeof name; p++)
            name[n++] = (char)toupper((unsigned char)*p);
        name[n] = 0;
        const char *v = getenv(name);
        if (!v) continue;
        int st = config_set(c, keys[i].name, v);
        if (st) {
            okv_error_prefix("environment variable %s", name);
            return st;
        }
    }
    return OKV_OK;
}

int config_validate(const okv_run_config *c, int n_layers) {
    if (c->fill_synthetic && config_selector_is_window(c->selector))
        return okv_fail(OKV_ERR_USAGE, "fill=synthetic cannot seed selector_cls %s, which needs the "
                        "real queries of the prompt's last tokens: use selector_cls last or "
                        "softmax_before_last, or fill=prefill", config_selector_name(c->selector));
    if (c->policy != POLICY_OMNIKV) return OKV_OK;
    if (c->n_filter_layers == 0)
        return okv_fail(OKV_ERR_USAGE, "policy=omnikv needs filter layers: set do_select_layers "
                        "(for example \"2,8,18\") or use policy=dense");
    int last = c->filter_layers[c->n_filter_layers - 1];
    if (last >= n_layers)
        return okv_fail(OKV_ERR_USAGE, "run-config key do_select_layers names layer %d, but the "
                        "model has %d layers (0..%d)", last, n_layers, n_layers - 1);
    return OKV_OK;
}

int config_budget(const okv_run_config *c, int n_prompt) {
    /* A fraction truncates as the reference's int(f * N) does: 0.29 of 100 is 28 (0.29 * 100 is
     * 28.999...), and under one token it is none. */
    int k = c->num_selected < 1.0 ? (int)(c->num_selected * n_prompt) : (int)c->num_selected;
    return k > c->min_selected ? k : c->min_selected;
}

static const char *policy_name(okv_policy_kind p) { return p == POLICY_OMNIKV ? "omnikv" : "dense"; }

const char *config_selector_name(okv_selector s) {
    switch (s) {
    case SELECTOR_LAST: return "last";
    case SELECTOR_SOFTMAX_BEFORE_LAST: return "softmax_before_last";
    case SELECTOR_UNIFORM: return "uniform";
    case SELECTOR_EXP: return "exp";
    }
    return "?";
}

bool config_selector_is_window(okv_selector s) { return s == SELECTOR_UNIFORM || s == SELECTOR_EXP; }

/* The double that prints as the shortest decimal reading back to f (0.7f -> 0.7). */
static double float_for_json(float f) {
    char buf[32];
    for (int prec = 6; prec < 10; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

char *config_to_json(const okv_run_config *c) {
    cJSON *o = cJSON_CreateObject();
    OKV_ASSERT(o);
    cJSON_AddStringToObject(o, "policy", policy_name(c->policy));
    cJSON_AddItemToObject(o, "do_select_layers",
                          cJSON_CreateIntArray(c->filter_layers, c->n_filter_layers));
    cJSON_AddNumberToObject(o, "num_wait_load_layers", c->num_wait_load_layers);
    cJSON_AddNumberToObject(o, "num_of_selected_tokens", c->num_selected);
    cJSON_AddNumberToObject(o, "min_selected_tokens", c->min_selected);
    cJSON_AddStringToObject(o, "selector_cls", config_selector_name(c->selector));
    cJSON_AddNumberToObject(o, "window_size", c->window_size);
    if (c->model_shape[0]) cJSON_AddStringToObject(o, "model_shape", c->model_shape);
    cJSON_AddBoolToObject(o, "real_offload", c->real_offload);
    cJSON_AddBoolToObject(o, "dense_more", c->dense_more);
    cJSON_AddNumberToObject(o, "keep_first", c->keep_first);
    cJSON_AddNumberToObject(o, "keep_last", c->keep_last);
    cJSON_AddNumberToObject(o, "threads", c->threads);
    cJSON_AddStringToObject(o, "kv_type", okv_type_name(c->kv_type));
    cJSON_AddStringToObject(o, "cpu_isa", okv_cpu_isa_name(c->cpu_isa));
    cJSON_AddNumberToObject(o, "prefill_chunk", c->prefill_chunk);
    cJSON_AddNumberToObject(o, "max_context_len", c->max_context_len);
    cJSON_AddNumberToObject(o, "max_batch", c->max_batch);
    cJSON_AddNumberToObject(o, "max_new_tokens", c->max_new_tokens);
    cJSON_AddBoolToObject(o, "ignore_eos", c->ignore_eos);
    /* A JSON number is a double: larger seeds go out as text so they read back exactly. */
    if (c->seed <= (1ull << 53)) {
        cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    } else {
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)c->seed);
        cJSON_AddStringToObject(o, "seed", s);
    }
    cJSON_AddNumberToObject(o, "temperature", float_for_json(c->temperature));
    cJSON_AddNumberToObject(o, "top_k", c->top_k);
    cJSON_AddNumberToObject(o, "top_p", float_for_json(c->top_p));
    cJSON_AddNumberToObject(o, "micro_batches", c->micro_batches);
    cJSON_AddNumberToObject(o, "expected_context", c->expected_context);
    cJSON_AddStringToObject(o, "stages", c->stages);
    cJSON_AddStringToObject(o, "plan_cost", c->plan_measured ? "measured" : "bytes");
    cJSON_AddStringToObject(o, "transport", config_transport_name(c->transport));
    cJSON_AddStringToObject(o, "trace", c->trace);
    cJSON_AddNumberToObject(o, "peer_timeout_s", c->peer_timeout_s);
    cJSON_AddNumberToObject(o, "progress_s", c->progress_s);
    cJSON_AddBoolToObject(o, "logits_digest", c->logits_digest);
    cJSON_AddBoolToObject(o, "row_cache", c->row_cache);
    cJSON_AddStringToObject(o, "backend", okv_backend_kind_name(c->backend));
    static const char *const gathers[] = {"auto", "inplace", "staged"};
    cJSON_AddStringToObject(o, "bank_gather", gathers[c->bank_gather]);
    cJSON_AddStringToObject(o, "fill", c->fill_synthetic ? "synthetic" : "prefill");
    char *s = cJSON_PrintUnformatted(o);
    OKV_ASSERT(s);
    cJSON_Delete(o);
    return s;
}

void config_bcast(okv_run_config *c) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) return;
    int rc = MPI_Bcast(c, (int)sizeof *c, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) okv_die(__FILE__, __LINE__, "MPI_Bcast of the run config");
}

void config_print_help(void *file) {
    FILE *f = file;
    fprintf(f, "Run-config keys (JSON file via -c, then OMNIKV_<KEY> environment variables, then "
               "--set KEY=VALUE; later sources win):\n");
    for (size_t i = 0; i < N_KEYS; i++)
        fprintf(f, "  %-24s %s (default: %s)\n", keys[i].name, keys[i].help, keys[i].def);
    fprintf(f, "Keys of the reference implementation's configs that are accepted and ignored:\n ");
    size_t col = 1;
    for (size_t i = 0; i < sizeof ignored_keys / sizeof *ignored_keys; i++) {
        size_t w = strlen(ignored_keys[i]) + 1;
        if (col + w > 98) {
            fprintf(f, "\n ");
            col = 1;
        }
        fprintf(f, " %s", ignored_keys[i]);
        col += w;
    }
    fprintf(f, "\n");
}
