/* config.h — the one run-config struct, its defaults, and its layering: JSON file, then
 * environment (OMNIKV_<KEY>), then --set KEY=VALUE, all through config_set so every source is
 * validated the same way. Rank 0 parses; config_bcast sends it to the others.
 * Tested by tests/unit/test_config.c. */
#ifndef OKV_CONFIG_H
#define OKV_CONFIG_H

#include "../kernels/cpu_isa.h"
#include "../kernels/types.h"

#include <stdbool.h>
#include <stdint.h>

#define OKV_MAX_FILTERS 64
#define OKV_MAX_WINDOW 256 /* window_size limit */
/* Upper limits of counts whose larger values only exhaust memory: the message states them. */
#define OKV_MAX_THREADS 1024
#define OKV_MAX_BATCH 4096
#define OKV_MAX_PREFILL_CHUNK 65536
#define OKV_MAX_CONTEXT (1 << 30)

typedef enum okv_policy_kind { POLICY_OMNIKV = 0, POLICY_DENSE = 1 } okv_policy_kind;

typedef enum okv_selector {
    SELECTOR_LAST = 0,
    SELECTOR_SOFTMAX_BEFORE_LAST = 1,
    SELECTOR_UNIFORM = 2,
    SELECTOR_EXP = 3,
} okv_selector;

/* How stage-boundary data moves between ranks (pipeline/transport.h). */
typedef enum okv_transport_kind {
    TRANSPORT_AUTO = 0,
    TRANSPORT_MPI = 1,      /* MPI with host buffers (always available) */
    TRANSPORT_MPI_CUDA = 2, /* CUDA-aware MPI on device buffers */
    TRANSPORT_NCCL = 3,     /* NCCL send/recv on device buffers */
} okv_transport_kind;

#define OKV_MAX_STAGES 256

/* How sparse layers read the selected Context Bank rows (DESIGN §5). */
typedef enum okv_bank_gather {
    BANK_GATHER_AUTO = 0,    /* inplace on host-memory backends, staged on device ones */
    BANK_GATHER_INPLACE = 1, /* read the rows where they are */
    BANK_GATHER_STAGED = 2,  /* gather them into backend memory on the copy stream */
} okv_bank_gather;

typedef struct okv_run_config {
    /* OmniKV (keys keep the reference implementation's names) */
    okv_policy_kind policy;        /* policy: omnikv | dense */
    bool policy_explicit;          /* policy was given; else do_select_layers decides it */
    int filter_layers[OKV_MAX_FILTERS]; /* do_select_layers, ascending */
    int n_filter_layers;
    int num_wait_load_layers;      /* W, default 1 */
    double num_selected;           /* num_of_selected_tokens: < 1 fraction of the prompt, >= 1 count */
    int min_selected;              /* min_selected_tokens: floor on k (ours; 0 = off) */
    okv_selector selector;         /* selector_cls */
    int window_size;               /* for uniform / exp, default 16, at most OKV_MAX_WINDOW */
    bool real_offload;             /* sparse-layer prompt KV lives in the Context Bank */
    bool dense_more;               /* only true is meaningful */
    int keep_first, keep_last;     /* prompt tokens always selected */
    /* engine */
    int threads;                   /* threads / cpu_num_threads; 0 = the rank's cores */
    char threads_from[40];         /* where threads was set, for the start-up log ("" = not) */
    okv_type kv_type;              /* kv_type: f16 | f32 | q8_0 */
    okv_cpu_isa cpu_isa;           /* cpu_isa: auto | avx512 | avx2 | generic */
    int prefill_chunk;             /* tokens per prefill chunk, default 512 */
    int max_context_len;           /* prompt + generated capacity per sequence; 0 = model's */
    int max_batch;                 /* sequences decoded together, default 1 */
    int max_new_tokens;            /* default per request, default 256 */
    bool ignore_eos;
    uint64_t seed;
    /* sampling defaults (requests may override) */
    float temperature;             /* 0 = greedy */
    int top_k;                     /* 0 = off */
    float top_p;                   /* 1 = off */
    char model_shape[32];          /* model_shape: a gen-model shape name for `plan` ("" = none) */
    /* pipeline parallelism (pipeline/) */
    int micro_batches;             /* micro-batches in flight; 0 = the rank count */
    int expected_context;          /* tokens per sequence the stage planner balances for; 0 =
                                      max_context_len */
    char stages[1024];             /* hand partition "0-7,8-17,18-29"; "" = the planner's */
    bool plan_measured;            /* plan_cost: measured (kernel timings, costs.h) | bytes */
    okv_transport_kind transport;  /* transport: auto | mpi | mpi-cuda | nccl */
    char trace[512];               /* Chrome/Perfetto trace file; "" = none */
    double peer_timeout_s;         /* deadline of every wait on another rank; 0 = none */
    double progress_s;             /* seconds between decode progress lines; 0 = none */
    bool logits_digest;            /* results carry logits_fnv (equivalence tests) */
    /* backend (kernels/backend.h) */
    int backend;                   /* okv_backend_kind: auto | cpu | cpu-strict | cuda */
    okv_bank_gather bank_gather;   /* how sparse layers read selected bank rows */
    bool row_cache;                /* staged gathers copy only rows new since the last step */
    bool fill_synthetic;           /* prompts' K/V generated, not computed (engine_prefill) */
} okv_run_config;

void config_defaults(okv_run_config *c);
/* Set one key from its text form ("2,8,18", "0.067", "true", "last"). Unknown keys and bad values
 * return OKV_ERR_USAGE with a message naming the key and the value. */
int config_set(okv_run_config *c, const char *key, const char *value);
/* A JSON object file: each member through config_set (numbers and lists turned into text). */
int config_load_json(okv_run_config *c, const char *path);
/* Every OMNIKV_<KEY> environment variable that names a known key (OMNIKV_POLICY=dense). */
int config_load_env(okv_run_config *c);
/* Checks that need the model: filter layers < n_layers, etc. */
int config_validate(const okv_run_config *c, int n_layers);
/* Budget k for a prompt of n tokens: the count, or the fraction rounded down; then at least
 * min_selected_tokens, and at least 1. */
int config_budget(const okv_run_config *c, int n_prompt);
const char *config_transport_name(okv_transport_kind t);
const char *config_selector_name(okv_selector s); /* "last", ... */
/* Whether s scores with a window of recent queries (uniform, exp) rather than the current one. */
bool config_selector_is_window(okv_selector s);
/* Writes the effective configuration as one JSON object (for the start-up log and results). */
char *config_to_json(const okv_run_config *c); /* malloc'd */
/* Rank 0's config to every rank (plain struct copy: it holds no pointers). */
void config_bcast(okv_run_config *c);
/* The list of keys with defaults and descriptions, for --help. */
void config_print_help(void *file);

#endif
