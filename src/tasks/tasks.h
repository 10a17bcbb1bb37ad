/* tasks.h — long-context tasks for `omnikv eval`: seeded generators (passkey, RULER needles, variable
 * tracking, 2StageRetr), LongBench / InfiniteBench file loaders and the suites' scorers. Tested by
 * tests/unit/test_tasks.c (needle depth, 2% length, hand-computed scores, tests/data/ files). */
#ifndef OKV_TASKS_H
#define OKV_TASKS_H

#include "../model/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How an output is scored; every score is in [0, 100]. */
typedef enum task_metric {
    TASK_METRIC_FIRST_INT = 0, /* the first run of digits equals the answer (passkey) */
    TASK_METRIC_SUBSTR_ALL,    /* share of the answers found as substrings, ignoring case (RULER) */
    TASK_METRIC_WORD,          /* the answer is a whole word of the output, ignoring case */
    TASK_METRIC_QA_F1,         /* token F1 after SQuAD normalisation, best over the answers */
    TASK_METRIC_QA_F1_ZH,      /* the same over characters, for Chinese */
    TASK_METRIC_ROUGE_L,       /* LCS F-measure over lower-cased alphanumeric words */
    TASK_METRIC_ROUGE_L_ZH,    /* the same over characters */
    TASK_METRIC_CLASSIFY,      /* LongBench classification: 1/(classes named) if the right one is */
    TASK_METRIC_RETRIEVAL,     /* LongBench: share of the output's numbers equal to the paragraph */
    TASK_METRIC_RETRIEVAL_ZH,  /* the same with the Chinese paragraph label */
    TASK_METRIC_COUNT,         /* LongBench passage_count: share of numbers equal to the count */
    TASK_METRIC_CODE_SIM,      /* edit similarity of the first code line (LongBench lcc) */
    TASK_METRIC_LABEL_WORD,    /* InfiniteBench kv_retrieval / longdialogue: label among the words */
    TASK_METRIC_CHOICE,        /* the first option letter is a correct one */
    TASK_METRIC_FIRST_NUMBER,  /* InfiniteBench math_find: the first number equals the answer */
    TASK_METRIC_LAST_INT,      /* InfiniteBench code_run: the last word is the integer answer */
    TASK_METRIC_PREFIX_NUMBERS /* InfiniteBench math_calc: share of leading numbers that match */
} task_metric;

typedef struct task_sample {
    char *id;             /* malloc'd: "passkey-2048-3" or the record's id */
    char *dataset;        /* malloc'd: the task or the benchmark's dataset name */
    char *prompt;         /* malloc'd plain text (no chat template), ending in the answer prefix */
    size_t prefix_len;    /* the prompt's last prefix_len bytes open the answer ("The pass key is");
                             with a chat template they become the start of the assistant turn */
    char **answers;       /* [n_answers] expected values; the metric says how they combine */
    int n_answers;
    char **classes;       /* [n_classes] label set of a classification task */
    int n_classes;
    task_metric metric;
    int max_new_tokens;
    int n_tokens;         /* plain prompt length in tokens, as the engine sees it (BOS included) */
    double depth;         /* where the (first) needle sits: needle_at / n_filler */
    int needle_at;        /* filler units before the (first) needle; -1 for loaded records */
    int n_filler;         /* filler units in the haystack */
    bool first_line;      /* score only the first line of the output (LongBench trec, samsum...) */
    bool stop_newline;    /* generation ends at the first newline (LongBench samsum) */
    bool sample;          /* sampled decoding (T 0.8, top-p 0.95) instead of greedy: summaries */
    bool chat_exempt;     /* keep plain even when the chat template is on (LongBench few-shot, code) */
    char *error;          /* malloc'd: a file record that cannot be used (the sentence naming its
                             line); eval writes it as an error record and goes on */
} task_sample;

void task_sample_free(task_sample *s);

/* ---- generators -------------------------------------------------------------------------------
 * Each writes a prompt of at most ctx_tokens tokens, short of it by less than one filler unit (a
 * haystack sentence or a dictionary line, under 20 tokens: within 2% from 1K tokens up), with its
 * needle(s) at depth in [0, 1] (< 0: drawn from the seed). The same (ctx_tokens, depth, seed)
 * always gives the same sample. */
typedef int (*task_gen_fn)(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                           task_sample *out);

/* "The pass key is K. Remember it. K is the pass key." in the grass haystack; K has 5 digits. */
int task_passkey(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                 task_sample *out);
/* RULER needles "One of the special magic numbers for KEY is: VALUE." with 7-digit values:
 * single (one key), multikey (4 keys, one asked: the others are distractors spread evenly),
 * multivalue (one key with 4 values, all asked), multiquery (4 keys, all asked). The asked
 * needles start at depth and spread evenly over the rest of the haystack. */
int task_needle_single(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                       task_sample *out);
int task_needle_multikey(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                         task_sample *out);
int task_needle_multivalue(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                           task_sample *out);
int task_needle_multiquery(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                           task_sample *out);
/* Variable tracking: "VAR A = 12345." then 4 hops "VAR B = VAR A." ..., in order from depth to
 * the end of the haystack; the answer is all 5 names. */
int task_vartrack(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                  task_sample *out);
/* 2StageRetr: a dictionary of n integer keys to colour words (n set by the length), the target
 * t = a + b at depth t/(n-1); the model has to add, then look the sum up. */
int task_two_stage(const okv_tokenizer *tok, int ctx_tokens, double depth, uint64_t seed,
                   task_sample *out);

typedef struct task_def {
    const char *name;
    task_gen_fn gen;
    const char *about;
} task_def;

/* The built-in generated tasks by name (NULL if unknown); task_list for --help and errors. */
const task_def *task_find(const char *name);
const task_def *task_list(int *n);

/* ---- benchmark files ------------------------------------------------------------------------ */
typedef enum task_suite { TASK_SUITE_LONGBENCH = 1, TASK_SUITE_INFINITEBENCH = 2 } task_suite;

typedef struct task_file {
    task_suite suite;
    char *dataset;      /* from the records' "dataset" field or the file name */
    task_sample *rec;   /* [n] records, template filled in, untruncated (n_tokens 0) */
    int n;
} task_file;

/* Reads up to max_records lines (0: all) of a LongBench or InfiniteBench JSONL file. chat picks
 * InfiniteBench's chat-model templates instead of its completion-style ones. The dataset comes
 * from each LongBench record's "dataset" field, else from the longest known name the file name
 * starts with. A record that cannot be used (not an object, a missing field, an unknown
 * dataset) becomes a sample with .error naming the file, line and field; the rest load. Fails
 * (OKV_ERR_INPUT) when the file cannot be read, holds no records, or mixes datasets (its
 * summary would average different metrics): the message names the first line that differs. */
int task_file_load(task_file *f, task_suite suite, const char *path, bool chat, int max_records);
void task_file_free(task_file *f);
/* Record i as a sample whose prompt keeps the first and last max_tokens/2 tokens when it is
 * longer than max_tokens (the suites' middle truncation). */
int task_file_sample(const task_file *f, int i, const okv_tokenizer *tok, int max_tokens,
                     task_sample *out);

/* ---- scoring -------------------------------------------------------------------------------- */

/* The sample's metric on output, in [0, 100] (first line only when the sample says so; the best
 * over several reference answers for the reference-based metrics). */
double task_score(const task_sample *s, const char *output);

/* The metrics themselves, each in [0, 1] for one reference. */
double metric_first_int(const char *out, const char *ref);
double metric_substr_all(const char *out, char *const *answers, int n);
double metric_word(const char *out, const char *word);
double metric_qa_f1(const char *out, const char *ref);
double metric_qa_f1_zh(const char *out, const char *ref);
double metric_rouge_l(const char *out, const char *ref);
double metric_rouge_l_zh(const char *out, const char *ref);
double metric_classify(const char *out, const char *ref, char *const *classes, int n_classes);
double metric_retrieval(const char *out, const char *ref, bool zh);
double metric_count(const char *out, const char *ref);
double metric_code_sim(const char *out, const char *ref);
double metric_edit_sim(const char *a, const char *b);
double metric_label_word(const char *out, const char *label);
double metric_choice(const char *out, const char *letters);
double metric_first_number(const char *out, const char *ref);
double metric_last_int(const char *out, const char *ref);
double metric_prefix_numbers(const char *out, const char *ref);

#endif
