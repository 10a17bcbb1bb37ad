/* test_tasks.c — src/tasks/: every generator on a tiny model's byte-level BPE and SmolLM2's
 * tokenizer (length <= request and within 2%, needle depth +- one filler sentence counted in the
 * text, seeds), every metric against hand-computed values, the loaders on tests/data/. */
#include "common.h"
#include "model/genmodel.h"
#include "model/gguf.h"
#include "tasks/tasks.h"
#include "../test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const GRASS[] = {"The grass is green. ", "The sky is blue. ", "The sun is yellow. ",
                                    "Here we go. ", "There and back again. "};

/* Filler sentences in text[0..end). */
static int count_filler(const char *text, size_t end) {
    int n = 0;
    for (int g = 0; g < 5; g++)
        for (const char *p = text; (p = strstr(p, GRASS[g])) && (size_t)(p - text) < end; p++) n++;
    return n;
}

static bool near(double a, double b, double tol) { return fabs(a - b) <= tol; }

/* Where the first asked needle starts in the prompt, found from its answer. */
static const char *find_needle(const char *task, const task_sample *s) {
    char pat[128];
    if (!strcmp(task, "passkey")) snprintf(pat, sizeof pat, "The pass key is %s.", s->answers[0]);
    else if (!strcmp(task, "vartrack")) snprintf(pat, sizeof pat, "VAR %s = ", s->answers[0]);
    else if (!strcmp(task, "2stage")) snprintf(pat, sizeof pat, "Key %d: %s.\n", s->needle_at, s->answers[0]);
    else snprintf(pat, sizeof pat, " is: %s. ", s->answers[0]);
    const char *p = strstr(s->prompt, pat);
    if (p && strncmp(task, "needle", 6) == 0) {
        while (p > s->prompt && strncmp(p, "One of", 6)) p--; /* back to the needle's start */
    }
    return p;
}

static void check_generators(const char *label, const okv_tokenizer *tok, const int *ctxs, int n_ctx) {
    int n_tasks;
    const task_def *tasks = task_list(&n_tasks);
    const double depths[] = {0.0, 0.25, 0.5, 0.9, 1.0};
    double worst_len = 0, worst_depth = 0, t0 = okv_now_s();
    for (int t = 0; t < n_tasks; t++) {
        const char *name = tasks[t].name;
        for (int c = 0; c < n_ctx; c++) {
            for (int d = 0; d < 5; d++) {
                task_sample s;
                uint64_t seed = 100 + (uint64_t)d;
                TEST_OK(tasks[t].gen(tok, ctxs[c], depths[d], seed, &s));
                int recount = tokenizer_encode(tok, s.prompt, strlen(s.prompt), true, false, NULL, 0);
                double short_by = (double)(ctxs[c] - s.n_tokens) / ctxs[c];
                worst_len = fmax(worst_len, short_by);
                TEST_CHECK(recount == s.n_tokens, "%s %s ctx %d: n_tokens %d but the prompt encodes to %d",
                           label, name, ctxs[c], s.n_tokens, recount);
                TEST_CHECK(s.n_tokens <= ctxs[c] && short_by <= 0.02,
                           "%s %s: %d tokens for a request of %d (%.2f%% short)", label, name,
                           s.n_tokens, ctxs[c], 100 * short_by);
                TEST_CHECK(s.n_answers >= 1 && s.max_new_tokens > 0 && s.prefix_len > 0 &&
                               s.prefix_len < strlen(s.prompt) && s.id && s.dataset &&
                               !strcmp(s.dataset, name),
                           "%s %s: sample fields", label, name);
                /* Every expected value is in the prompt (the colour of 2stage too). */
                for (int a = 0; a < s.n_answers; a++)
                    TEST_CHECK(strstr(s.prompt, s.answers[a]), "%s %s: answer '%s' is not in the prompt",
                               label, name, s.answers[a]);
                const char *at = find_needle(name, &s);
                TEST_CHECK(at, "%s %s ctx %d depth %.2f: needle not found", label, name, ctxs[c], depths[d]);
                if (at && strcmp(name, "2stage")) {
                    int before = count_filler(s.prompt, (size_t)(at - s.prompt));
                    double want = depths[d] * s.n_filler;
                    worst_depth = fmax(worst_depth, fabs(before - want));
                    TEST_CHECK(before == s.needle_at && fabs(before - want) <= 1.0,
                               "%s %s ctx %d depth %.2f: %d filler sentences before the needle "
                               "(reported %d), want %.1f +- 1 of %d",
                               label, name, ctxs[c], depths[d], before, s.needle_at, want, s.n_filler);
                } else if (at) {
                    /* 2stage: the target key's line index is the depth over the dictionary. */
                    double want = depths[d] * (s.n_filler - 1);
                    worst_depth = fmax(worst_depth, fabs(s.needle_at - want));
                    TEST_CHECK(fabs(s.needle_at - want) <= 1.0, "%s 2stage depth %.2f: key %d of %d",
                               label, depths[d], s.needle_at, s.n_filler);
                    int a, b;
                    const char *eq = strstr(s.prompt, "The equation is ");
                    TEST_CHECK(eq && sscanf(eq, "The equation is %d + %d", &a, &b) == 2 &&
                                   a >= 0 && b >= 0 && a + b == s.needle_at,
                               "%s 2stage: the equation does not sum to the target key %d", label, s.needle_at);
                }
                /* Same seed, same sample; another seed, another one. */
                task_sample s2, s3;
                TEST_OK(tasks[t].gen(tok, ctxs[c], depths[d], seed, &s2));
                TEST_OK(tasks[t].gen(tok, ctxs[c], depths[d], seed + 1000, &s3));
                TEST_CHECK(!strcmp(s.prompt, s2.prompt), "%s %s: a seed does not reproduce its sample", label, name);
                TEST_CHECK(strcmp(s.prompt, s3.prompt), "%s %s: two seeds gave the same sample", label, name);
                task_sample_free(&s2);
                task_sample_free(&s3);
                task_sample_free(&s);
            }
        }
        /* A drawn depth stays inside the haystack. */
        task_sample s;
        TEST_OK(tasks[t].gen(tok, ctxs[0], -1.0, 7, &s));
        TEST_CHECK(s.needle_at >= 0 && s.needle_at <= s.n_filler && s.depth >= 0 && s.depth <= 1,
                   "%s %s: drawn depth %.3f", label, name, s.depth);
        task_sample_free(&s);
    }
    /* Too short a context is a usage error, not a broken sample. */
    task_sample s;
    TEST_CHECK(task_needle_multiquery(tok, 20, 0.5, 1, &s) == OKV_ERR_USAGE, "%s: ctx 20 must be refused", label);
    printf("%s: %d tasks x %d lengths x 5 depths in %.1f s; worst length %.2f%% short, worst needle "
           "offset %.2f filler units\n", label, n_tasks, n_ctx, okv_now_s() - t0, 100 * worst_len, worst_depth);
}

static void check_metrics(void) {
    const double e = 1e-9;
    /* QA-F1: normalisation drops case, punctuation and articles; multiset overlap. */
    TEST_CHECK(near(metric_qa_f1("The Eiffel Tower!", "eiffel tower"), 1.0, e), "qa_f1 normalisation");
    TEST_CHECK(near(metric_qa_f1("in Paris, France", "Paris"), 0.5, e), "qa_f1 P 1/3 R 1 -> 0.5");
    TEST_CHECK(near(metric_qa_f1("a b b c", "b c c"), 2.0 / 3, e), "qa_f1 multiset overlap 2 of 3");
    TEST_CHECK(metric_qa_f1("", "x") == 0 && metric_qa_f1("nothing", "else") == 0, "qa_f1 no overlap");
    TEST_CHECK(near(metric_qa_f1_zh("北京。", "北京"), 1.0, e), "qa_f1_zh punctuation");
    TEST_CHECK(near(metric_qa_f1_zh("北京市", "北京"), 0.8, e), "qa_f1_zh P 2/3 R 1 -> 0.8");
    /* ROUGE-L: LCS "the cat on the mat" = 5 of 6 and 6. */
    TEST_CHECK(near(metric_rouge_l("the cat sat on the mat", "The cat is on the mat."), 5.0 / 6, e), "rouge_l 5/6");
    double p = 2.0 / 4, r = 2.0 / 3;
    TEST_CHECK(near(metric_rouge_l("A B C D", "b d e"), 2 * p * r / (p + r), e), "rouge_l LCS 2 of 4 and 3");
    p = 4.0 / 5, r = 4.0 / 6;
    TEST_CHECK(near(metric_rouge_l_zh("今天天气好", "今天天气不错"), 2 * p * r / (p + r), e), "rouge_l_zh");
    /* Classification: a class that is only part of the right label is not counted. */
    char *cls[] = {"city", "other city", "state"};
    TEST_CHECK(near(metric_classify("other city", "other city", cls, 3), 1.0, e), "classify drops the sub-label");
    TEST_CHECK(near(metric_classify("state or other city", "other city", cls, 3), 0.5, e), "classify 1/2");
    TEST_CHECK(metric_classify("state", "other city", cls, 3) == 0, "classify wrong");
    /* Retrieval and count: share of the numbers that are right. */
    TEST_CHECK(near(metric_retrieval("Paragraph 3 and Paragraph 12", "Paragraph 12", false), 0.5, e), "retrieval 1/2");
    TEST_CHECK(near(metric_retrieval("答案是段落5", "段落5", true), 1.0, e), "retrieval zh");
    TEST_CHECK(metric_retrieval("no number", "Paragraph 2", false) == 0, "retrieval no numbers");
    TEST_CHECK(near(metric_count("There are 7 unique, not 8", "7"), 0.5, e), "count 1/2");
    /* Edit similarity 2 LCS / (|a| + |b|). */
    TEST_CHECK(near(metric_edit_sim("abc", "abd"), 4.0 / 6, e), "edit_sim abc/abd");
    TEST_CHECK(near(metric_edit_sim("kitten", "sitting"), 8.0 / 13, e), "edit_sim kitten/sitting");
    TEST_CHECK(near(metric_edit_sim("", ""), 1.0, e) && metric_edit_sim("", "x") == 0, "edit_sim empty");
    TEST_CHECK(near(metric_code_sim("```python\n# comment\nx = foo(1)\ny = 2", "x = foo(2)"), 0.9, e),
               "code_sim skips fenced and comment lines");
    /* Integer, substring, word and label rules. */
    TEST_CHECK(metric_first_int("The pass key is 12345.", "12345") == 1, "first_int");
    TEST_CHECK(metric_first_int("123456", "12345") == 0 && metric_first_int("none", "1") == 0, "first_int whole run");
    char *vals[] = {"1234567", "7654321", "1111111"};
    TEST_CHECK(near(metric_substr_all("values: 1234567 and 7654321", vals, 3), 2.0 / 3, e), "substr_all 2/3");
    char *names[] = {"abcde", "FGHIJ"};
    TEST_CHECK(near(metric_substr_all("Answer: ABCDE, fghij", names, 2), 1.0, e), "substr_all ignores case");
    TEST_CHECK(metric_word("The colour is Red.", "red") == 1 && metric_word("reddish", "red") == 0, "word");
    TEST_CHECK(metric_label_word("The value is: 3f2a-11.", "3f2a-11") == 1, "label_word");
    TEST_CHECK(metric_label_word("x3f2a-11", "3f2a-11") == 0, "label_word needs the whole word");
    TEST_CHECK(metric_choice("B. The second", "B") == 1 && metric_choice(" The answer is C", "C") == 1, "choice");
    TEST_CHECK(metric_choice("Definitely A", "A") == 1 && metric_choice("D", "A") == 0, "choice first letter");
    TEST_CHECK(metric_first_number("It is 3.5 or 4", "3.5") == 1 && metric_first_number("42 apples", "42") == 1,
               "first_number");
    TEST_CHECK(metric_last_int("The value is `-12`.", "-12") == 1 && metric_last_int("-12 is it", "-12") == 0,
               "last_int");
    TEST_CHECK(near(metric_prefix_numbers("[1, 4, 8, 9]", "1 4 8 7"), 0.75, e), "prefix_numbers 3/4");
    /* task_score: best over the answers, first line only when asked, x100. */
    char *ans[] = {"William Shakespeare", "Shakespeare"};
    task_sample s = {.answers = ans, .n_answers = 2, .metric = TASK_METRIC_QA_F1};
    TEST_CHECK(near(task_score(&s, "Shakespeare"), 100.0, e), "task_score takes the best answer");
    s.first_line = true;
    TEST_CHECK(near(task_score(&s, "\nShakespeare\nWilliam"), 100.0, e), "task_score first line");
    s.first_line = false;
    p = 1.0 / 3, r = 1.0;
    TEST_CHECK(near(task_score(&s, "\nShakespeare\nby the"), 100.0 * 2 * 0.5 * 1 / 1.5, 1e-6),
               "task_score whole output: 'shakespeare by' vs 'shakespeare'");
}

static void check_loaders(const okv_tokenizer *tok) {
    char path[1024];
    const char *src = test_src();
    task_file f;
    snprintf(path, sizeof path, "%s/tests/data/longbench/hotpotqa.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_LONGBENCH, path, true, 0));
    TEST_CHECK(f.n == 2 && !strcmp(f.dataset, "hotpotqa"), "hotpotqa: %d records", f.n);
    const char *want =
        "Answer the question based on the given passages. Only give me the answer and do not output "
        "any other words.\n\nThe following are given passages.\nPassage 1:\nThe Eiffel Tower is a "
        "landmark in Paris.\n\nAnswer the question based on the given passages. Only give me the "
        "answer and do not output any other words.\n\nQuestion: Which city is the Eiffel Tower in?\nAnswer:";
    TEST_CHECK(!strcmp(f.rec[0].prompt, want), "hotpotqa template:\n%s", f.rec[0].prompt);
    TEST_CHECK(f.rec[0].metric == TASK_METRIC_QA_F1 && f.rec[0].max_new_tokens == 32 &&
                   !f.rec[0].first_line && !f.rec[0].chat_exempt && !strcmp(f.rec[0].id, "hp-1"),
               "hotpotqa fields");
    TEST_CHECK(f.rec[1].n_answers == 2 && !strcmp(f.rec[1].answers[1], "Shakespeare"), "hotpotqa answers");
    /* Middle truncation keeps the instruction and the question. */
    task_sample s;
    TEST_OK(task_file_sample(&f, 1, tok, 128, &s));
    TEST_CHECK(s.n_tokens <= 128 + 2 && s.n_tokens >= 120, "truncated to %d tokens, want 128", s.n_tokens);
    TEST_CHECK(!strncmp(s.prompt, "Answer the question", 19) && strstr(s.prompt, "Question: Who wrote Hamlet?\nAnswer:"),
               "truncation lost the head or the tail:\n%s", s.prompt);
    task_sample_free(&s);
    TEST_OK(task_file_sample(&f, 0, tok, 4096, &s));
    TEST_CHECK(!strcmp(s.prompt, want), "a short record is not truncated");
    task_sample_free(&s);
    task_file_free(&f);

    snprintf(path, sizeof path, "%s/tests/data/longbench/trec_e.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_LONGBENCH, path, true, 0));
    TEST_CHECK(!strcmp(f.dataset, "trec") && f.rec[0].metric == TASK_METRIC_CLASSIFY && f.rec[0].first_line &&
                   f.rec[0].chat_exempt && f.rec[0].n_classes == 4 && f.rec[0].max_new_tokens == 64,
               "trec (LongBench-E name) fields");
    TEST_CHECK(near(task_score(&f.rec[0], "Other location\nCity"), 100.0, 1e-9), "trec scores the first line");
    task_file_free(&f);

    snprintf(path, sizeof path, "%s/tests/data/longbench/passage_retrieval_en.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_LONGBENCH, path, false, 0));
    TEST_CHECK(f.rec[0].metric == TASK_METRIC_RETRIEVAL && near(task_score(&f.rec[0], "Paragraph 2"), 100, 1e-9),
               "passage_retrieval_en");
    task_file_free(&f);

    /* A bad record becomes an error record naming its line; the others load. */
    snprintf(path, sizeof path, "%s/tests/data/longbench/bad_missing_answers.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_LONGBENCH, path, false, 0));
    TEST_CHECK(f.n == 2 && !f.rec[0].error && f.rec[1].error && strstr(f.rec[1].error, "line 2") &&
                   strstr(f.rec[1].error, "answers") && !strcmp(f.rec[1].id, "bad"),
               "a record without answers: %d records, error '%s'", f.n,
               f.n == 2 && f.rec[1].error ? f.rec[1].error : "none");
    task_file_free(&f);
    /* An unknown "dataset" is an error, not the file name's dataset; a line that is not JSON is
     * an error record with a line id; a record without "dataset" takes the file name's. */
    snprintf(path, sizeof path, "%s/tests/data/longbench/hotpotqa_bad_records.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_LONGBENCH, path, false, 0));
    TEST_CHECK(f.n == 4 && !f.rec[0].error && f.rec[1].error && strstr(f.rec[1].error, "wikiqa") &&
                   f.rec[2].error && strstr(f.rec[2].error, "line 3") && !strcmp(f.rec[2].id, "line-3") &&
                   !f.rec[3].error && !strcmp(f.rec[3].dataset, "hotpotqa") && !strcmp(f.dataset, "hotpotqa"),
               "bad records kept as error records (%d records): %s | %s | %s", f.n,
               f.n > 1 && f.rec[1].error ? f.rec[1].error : "-", f.n > 2 && f.rec[2].error ? f.rec[2].error : "-",
               f.n > 3 ? f.rec[3].dataset : "-");
    task_file_free(&f);
    /* A file mixing datasets would be summarised under the first one's name: refused. */
    snprintf(path, sizeof path, "%s/tests/data/longbench/hotpotqa_mixed.jsonl", src);
    int st = task_file_load(&f, TASK_SUITE_LONGBENCH, path, false, 0);
    TEST_CHECK(st == OKV_ERR_INPUT && strstr(okv_last_error(), "line 2 is qasper") &&
                   strstr(okv_last_error(), "line 1 is hotpotqa"),
               "a mixed file: %d %s", st, okv_last_error());
    snprintf(path, sizeof path, "%s/tests/data/longbench/missing.jsonl", src);
    TEST_CHECK(task_file_load(&f, TASK_SUITE_LONGBENCH, path, false, 0) == OKV_ERR_INPUT, "missing file");

    snprintf(path, sizeof path, "%s/tests/data/infinitebench/kv_retrieval.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_INFINITEBENCH, path, false, 0));
    TEST_CHECK(!strcmp(f.dataset, "kv_retrieval") && f.rec[0].metric == TASK_METRIC_LABEL_WORD &&
                   f.rec[0].max_new_tokens == 50 && !strcmp(f.rec[0].id, "0") &&
                   !strncmp(f.rec[0].prompt, "Extract the value corresponding", 31),
               "kv_retrieval fields");
    TEST_CHECK(near(task_score(&f.rec[0], "The value is \"31e0\"."), 100, 1e-9), "kv_retrieval score");
    task_file_free(&f);

    snprintf(path, sizeof path, "%s/tests/data/infinitebench/longbook_choice_eng.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_INFINITEBENCH, path, false, 0));
    TEST_CHECK(f.rec[0].n_answers == 1 && !strcmp(f.rec[0].answers[0], "B") &&
                   strstr(f.rec[0].prompt, "A. School\nB. Home\nC. Work\nD. Park\n\nThe letter of the correct answer is"),
               "longbook_choice_eng options and completion template:\n%s", f.rec[0].prompt);
    TEST_CHECK(near(task_score(&f.rec[0], " B"), 100, 1e-9) && task_score(&f.rec[0], "A") == 0, "choice score");
    task_file_free(&f);
    TEST_OK(task_file_load(&f, TASK_SUITE_INFINITEBENCH, path, true, 0));
    TEST_CHECK(strstr(f.rec[0].prompt, "tell me the answer using one single letter"), "chat template for choice");
    task_file_free(&f);

    snprintf(path, sizeof path, "%s/tests/data/infinitebench/math_find.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_INFINITEBENCH, path, false, 0));
    TEST_CHECK(!strncmp(f.rec[0].prompt, "What is the largest number in the following list?\n\n[3, 9, 2, 7]", 60) &&
                   !strcmp(f.rec[0].answers[0], "9") && f.rec[0].max_new_tokens == 3,
               "math_find prompt:\n%s", f.rec[0].prompt);
    task_file_free(&f);

    snprintf(path, sizeof path, "%s/tests/data/infinitebench/code_run.jsonl", src);
    TEST_OK(task_file_load(&f, TASK_SUITE_INFINITEBENCH, path, false, 0));
    TEST_CHECK(strstr(f.rec[0].prompt, "There is a function called func_1 in") &&
                   strstr(f.rec[0].prompt, "The value of func_1(-6) is") && !strcmp(f.rec[0].answers[0], "-12"),
               "code_run prompt:\n%s", f.rec[0].prompt);
    TEST_CHECK(near(task_score(&f.rec[0], " -12"), 100, 1e-9), "code_run score");
    task_file_free(&f);

    snprintf(path, sizeof path, "%s/tests/data/longbench/hotpotqa.jsonl", src);
    TEST_CHECK(task_file_load(&f, TASK_SUITE_INFINITEBENCH, path, false, 0) == OKV_ERR_USAGE &&
                   strstr(okv_last_error(), "kv_retrieval"),
               "an InfiniteBench file must be named after its task: %s", okv_last_error());
}

static okv_tokenizer *open_tokenizer(const char *path, gguf_file *g) {
    okv_tokenizer *t = NULL;
    TEST_OK(gguf_open(g, path));
    TEST_OK(tokenizer_init_gguf(&t, g));
    return t;
}

int main(void) {
    okv_log_init(0);
    check_metrics();

    char tiny[] = "/tmp/okv_test_tasks_XXXXXX";
    int fd = mkstemp(tiny);
    TEST_CHECK(fd >= 0, "mkstemp");
    close(fd);
    TEST_OK(genmodel_write(tiny, "tiny", 0, OKV_TYPE_F32, 1));
    gguf_file g1;
    okv_tokenizer *t1 = open_tokenizer(tiny, &g1);
    const int tiny_ctx[] = {1024, 2048, 4096};
    check_generators("tiny byte-level BPE", t1, tiny_ctx, 3);
    check_loaders(t1);
    tokenizer_free(t1);
    gguf_close(&g1);
    unlink(tiny);

    char smol[2048];
    snprintf(smol, sizeof smol, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", test_cache());
    if (test_file_exists(smol)) {
        gguf_file g2;
        okv_tokenizer *t2 = open_tokenizer(smol, &g2);
        const int smol_ctx[] = {1024, 2048, 4096, 8192};
        check_generators("SmolLM2 tokenizer", t2, smol_ctx, 4);
        tokenizer_free(t2);
        gguf_close(&g2);
    } else {
        printf("NOTE: %s is missing (scripts/setup.sh fetches it); checked the tiny tokenizer only\n", smol);
    }
    return test_summary();
}
