/* loader.h — what the LongBench and InfiniteBench readers share: JSON field helpers, template
 * filling, and each suite's record-to-sample conversion. Private to src/tasks/; tested through
 * tests/unit/test_tasks.c on the files under tests/data/. */
#ifndef OKV_TASKS_LOADER_H
#define OKV_TASKS_LOADER_H

#include "tasks.h"

#include <cjson/cJSON.h>

/* Replaces each "{name}" of tmpl whose name is in names[0..n) by vals[i]; other braces stay. */
char *loader_fill(const char *tmpl, const char *const *names, const char *const *vals, int n);
/* A JSON string, number (as text: integers without a fraction) or NULL. */
char *loader_text(const cJSON *v);
/* A JSON array of strings/numbers, or one string/number, as a list; NULL-safe (n = 0). */
char **loader_texts(const cJSON *v, int *n);

/* The dataset a file name stands for: the longest known name the base name starts with
 * ("hotpotqa_e.jsonl" -> "hotpotqa"), or NULL. */
const char *longbench_dataset(const char *name);
const char *infinitebench_dataset(const char *name);
const char *longbench_known(void);     /* "narrativeqa, qasper, ..." for messages */
const char *infinitebench_known(void);

/* One parsed record into a sample (prompt untruncated, n_tokens 0). OKV_ERR_INPUT with the
 * missing field's name in the message. */
int longbench_record(const cJSON *rec, const char *dataset, task_sample *out);
int infinitebench_record(const cJSON *rec, const char *dataset, bool chat, task_sample *out);

#endif
