/* infinitebench.c — InfiniteBench's 12 tasks: its completion-style prompt templates (those it
 * uses for base models) and its chat-model templates, max_new_tokens and scoring rule per task.
 * Tested by tests/unit/test_tasks.c on tests/data/infinitebench/. */
#include "loader.h"

#include "../common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ib_task {
    const char *name;
    int max_new;
    task_metric metric;
    bool sample;
    const char *plain; /* ends in an answer prefix */
    const char *chat;  /* a request for a chat model */
} ib_task;

#define IB_DIALOGUE_HEAD                                                                          \
    "Below is a dialogue script where one random occurrence of a character name is replaced with " \
    "\"$$MASK$$\", and you should try to guess who that character is.\n\n"

static const ib_task IB[] = {
    {"passkey", 6, TASK_METRIC_FIRST_INT, false,
     "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
     "I will quiz you about the important information there.\n\n{context}\n\n{input}\n\nThe pass "
     "key is",
     "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
     "I will quiz you about the important information there.\n\n{context}\n\n{input}"},
    {"number_string", 12, TASK_METRIC_FIRST_INT, false,
     "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you "
     "about the important information there.\n\n{context}\n\n{input}\n\nThe sequence of digits is",
     "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you "
     "about the important information there.\n\n{context}\n\n{input}"},
    {"kv_retrieval", 50, TASK_METRIC_LABEL_WORD, false,
     "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}"
     "\n\n{input}",
     "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}"
     "\n\n{input}"},
    {"longbook_sum_eng", 1200, TASK_METRIC_ROUGE_L, true,
     "Summarize the book below.\n\n{context}\n\nSummary:",
     "Summarize the following book.\n\n{context}"},
    {"longbook_choice_eng", 40, TASK_METRIC_CHOICE, false,
     "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\nA. {OPTION_A}\n"
     "B. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nThe letter of the correct answer is",
     "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n\nOnly one of "
     "the following options is correct, tell me the answer using one single letter (A, B, C, or D). "
     "Don't say anything else.\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}"},
    {"longbook_qa_eng", 40, TASK_METRIC_QA_F1, false,
     "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\n"
     "Question: {question}\nAnswer:",
     "Read the book below and answer a question.\n\n{context}\n\nQuestion: {question}\n\nBe very "
     "concise."},
    {"longbook_qa_chn", 40, TASK_METRIC_QA_F1_ZH, false,
     "阅读以下书籍然后回答问题。\n\n{context}\n\n问题：{question}\n答案：",
     "请根据以下书籍回答我的问题。\n\n{context}\n\n问题：{question}\n请尽量简短地回答。"},
    {"longdialogue_qa_eng", 40, TASK_METRIC_LABEL_WORD, false,
     IB_DIALOGUE_HEAD "{context}\n\nThe name that has been replaced with $$MASK$$ is likely",
     IB_DIALOGUE_HEAD "The dialogue:\n\n---\n\n{context}\n\n---\n\nEnd of dialogue.\n\nWhich "
     "character is most likely \"$$MASK$$\"? Just say the name used by the scriptwriter (before "
     "the colon marks) of one single character and nothing else."},
    {"math_find", 3, TASK_METRIC_FIRST_NUMBER, false, "{prompt}\n\n{context}\n\n{input}",
     "{prompt}\n\n{context}\n\n{input}"},
    {"math_calc", 30000, TASK_METRIC_PREFIX_NUMBERS, false,
     "Let us calculate the intermediate values of an expression.\n\nExpression: 1 + 3 + 4\n"
     "Values: [1, 4, 8]\n\nExpression: 8 - 3 + 2 - 4\nValues: [8, 5, 7, 3]\n\nExpression: "
     "{context}\nValues:",
     "Compute the intermediate values in the following long expression.\n\n{context}"},
    {"code_run", 5, TASK_METRIC_LAST_INT, false,
     "There is a function called {func} in the following Python code.\n\n{context}\n\nPlease "
     "compute the exact value of {func_call}. The value of {func_call} is",
     "Following is a set of Python functions. There is a function called named {func}.\n\n"
     "{context}\n\nPlease give me the exact number of the return value of {func_call}. Be concise. "
     "Your response must end with the final returned value."},
    {"code_debug", 5, TASK_METRIC_CHOICE, false,
     "Following is a Python code where exactly one of the functions/methods has a deliberate error "
     "that makes it crash.\n\n{context}\n\nOptions:\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\n"
     "D. {OPTION_D}\n\nThe correct option is:",
     "There is ONLY ONE function in the large project that is deliberately made to include an "
     "obvious error. Please find the function that contains the most obvious errors. I will give "
     "you four options to narrow your scope. You can inspect through the options and think. "
     "Eventually, tell me the answer using one single letter (A, B, C, or D).\n\n{context}\n\n"
     "Which funtion has deliberate error?\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. "
     "{OPTION_D}\n\nYou should first find the functions in the options. Repeat their content, "
     "inspect through code, and at last give me your answer for the function that has the "
     "deliberate and obvious error in A, B, C, or D."},
};
enum { N_IB = sizeof IB / sizeof IB[0] };

static const ib_task *ib_find(const char *name) {
    for (int i = 0; i < N_IB; i++)
        if (!strcmp(IB[i].name, name)) return &IB[i];
    return NULL;
}

const char *infinitebench_dataset(const char *name) {
    const char *best = NULL;
    for (int i = 0; i < N_IB; i++) {
        size_t n = strlen(IB[i].name);
        if (!strncmp(name, IB[i].name, n) && (!best || n > strlen(best))) best = IB[i].name;
    }
    return best;
}

const char *infinitebench_known(void) {
    static char buf[512];
    if (!buf[0])
        for (int i = 0; i < N_IB; i++) {
            if (i) strcat(buf, ", ");
            strcat(buf, IB[i].name);
        }
    return buf;
}

/* math_find asks for "The <adjective> number" in its input; the prompt restates it. */
static char *math_find_prompt(const char *input) {
    for (const char *p = input; (p = strstr(p, "The ")); p++) {
        const char *w = p + 4, *e = w;
        while (isalnum((unsigned char)*e) || *e == '_') e++;
        if (e > w && !strncmp(e, " number", 7)) {
            char *s;
            OKV_ASSERT(asprintf(&s, "What is the %.*s number in the following list?", (int)(e - w), w) > 0);
            return s;
        }
    }
    return NULL;
}

/* The correct option letters: an answer that is one letter A-D, or the option equal to it. */
static int choice_letters(task_sample *out, char **options, int n_options) {
    char **letters = calloc((size_t)out->n_answers, sizeof(char *));
    OKV_ASSERT(letters);
    int n = 0;
    for (int i = 0; i < out->n_answers; i++) {
        const char *a = out->answers[i];
        char l = 0;
        if (strlen(a) == 1 && a[0] >= 'A' && a[0] <= 'D') l = a[0];
        for (int j = 0; j < n_options && j < 4 && !l; j++)
            if (!strcmp(options[j], a)) l = (char)('A' + j);
        if (l) {
            letters[n] = malloc(2);
            OKV_ASSERT(letters[n]);
            letters[n][0] = l;
            letters[n++][1] = 0;
        }
    }
    for (int i = 0; i < out->n_answers; i++) free(out->answers[i]);
    free(out->answers);
    out->answers = letters;
    out->n_answers = n;
    return n ? OKV_OK : okv_fail(OKV_ERR_INPUT, "no answer of the record is one of its \"options\"");
}

int infinitebench_record(const cJSON *rec, const char *dataset, bool chat, task_sample *out) {
    memset(out, 0, sizeof *out);
    const ib_task *t = dataset ? ib_find(dataset) : NULL;
    if (!t)
        return okv_fail(OKV_ERR_INPUT, "the file name names no InfiniteBench task (known: %s)",
                        infinitebench_known());
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(rec, "context");
    if (!cJSON_IsString(ctx)) return okv_fail(OKV_ERR_INPUT, "the record has no string \"context\"");
    const cJSON *inj = cJSON_GetObjectItemCaseSensitive(rec, "input");
    const char *input = cJSON_IsString(inj) ? inj->valuestring : "";
    out->answers = loader_texts(cJSON_GetObjectItemCaseSensitive(rec, "answer"), &out->n_answers);
    if (!out->n_answers) return okv_fail(OKV_ERR_INPUT, "the record has no \"answer\"");
    int n_opt = 0;
    char **opt = loader_texts(cJSON_GetObjectItemCaseSensitive(rec, "options"), &n_opt);
    int st = OKV_OK;
    if (t->metric == TASK_METRIC_CHOICE) st = choice_letters(out, opt, n_opt);
    if (!st && t->metric == TASK_METRIC_PREFIX_NUMBERS) {
        /* The expected values are one sequence: a single answer listing them in order. */
        size_t len = 1;
        for (int i = 0; i < out->n_answers; i++) len += strlen(out->answers[i]) + 1;
        char *all = calloc(len, 1);
        OKV_ASSERT(all);
        for (int i = 0; i < out->n_answers; i++) {
            if (i) strcat(all, " ");
            strcat(all, out->answers[i]);
            free(out->answers[i]);
        }
        out->answers[0] = all;
        out->n_answers = 1;
    }
    char *prompt_text = NULL, *func = NULL;
    if (!st && t->metric == TASK_METRIC_FIRST_NUMBER && !(prompt_text = math_find_prompt(input)))
        st = okv_fail(OKV_ERR_INPUT, "a math_find input names no \"The ... number\": '%.80s'", input);
    /* code_run records give the call ("func_3(12)"); the function is the name before '('. */
    const cJSON *fj = cJSON_GetObjectItemCaseSensitive(rec, "func");
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(rec, "func_call");
    const char *call = cJSON_IsString(cj) ? cj->valuestring : input;
    func = cJSON_IsString(fj) ? strdup(fj->valuestring) : strndup(call, strcspn(call, "("));
    OKV_ASSERT(func);
    if (!st) {
        const char *names[] = {"context", "input", "question", "prompt", "func", "func_call",
                               "OPTION_A", "OPTION_B", "OPTION_C", "OPTION_D"};
        const char *vals[] = {ctx->valuestring, input, input, prompt_text ? prompt_text : "", func,
                              call, n_opt > 0 ? opt[0] : "", n_opt > 1 ? opt[1] : "",
                              n_opt > 2 ? opt[2] : "", n_opt > 3 ? opt[3] : ""};
        out->prompt = loader_fill(chat ? t->chat : t->plain, names, vals, 10);
        out->id = loader_text(cJSON_GetObjectItemCaseSensitive(rec, "id"));
        if (!out->id) out->id = strdup("");
        out->dataset = strdup(t->name);
        OKV_ASSERT(out->id && out->dataset);
        out->metric = t->metric;
        out->max_new_tokens = t->max_new;
        out->sample = t->sample;
        out->needle_at = -1;
    }
    for (int i = 0; i < n_opt; i++) free(opt[i]);
    free(opt);
    free(prompt_text);
    free(func);
    if (st) task_sample_free(out);
    return st;
}
