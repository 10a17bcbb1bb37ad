/* tasks.c — the registry of generated tasks (name -> generator) and task_sample_free. Tested by
 * tests/unit/test_tasks.c, which runs every registered generator. */
#include "tasks.h"

#include <stdlib.h>
#include <string.h>

static const task_def TASKS[] = {
    {"passkey", task_passkey, "5-digit pass key in the grass haystack; first-integer match"},
    {"needle-single", task_needle_single, "RULER: one key, one 7-digit value; substring-all"},
    {"needle-multikey", task_needle_multikey, "RULER: 4 keys, one asked, 3 distractors"},
    {"needle-multivalue", task_needle_multivalue, "RULER: one key with 4 values, all asked"},
    {"needle-multiquery", task_needle_multiquery, "RULER: 4 keys, all asked"},
    {"vartrack", task_vartrack, "RULER variable tracking: one chain of 4 hops, all names asked"},
    {"2stage", task_two_stage, "2StageRetr: add two numbers, look the sum up; colour word match"},
};

const task_def *task_list(int *n) {
    *n = (int)(sizeof TASKS / sizeof TASKS[0]);
    return TASKS;
}

const task_def *task_find(const char *name) {
    int n;
    const task_def *t = task_list(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

static void free_strs(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

void task_sample_free(task_sample *s) {
    if (!s) return;
    free(s->id);
    free(s->dataset);
    free(s->prompt);
    free_strs(s->answers, s->n_answers);
    free_strs(s->classes, s->n_classes);
    free(s->error);
    memset(s, 0, sizeof *s);
}
