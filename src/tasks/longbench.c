/* longbench.c — LongBench's 21 datasets: prompt templates, max_new_tokens, metric and decoding
 * rules per dataset, as the suite's config and pred.py/eval.py define them. Tested by
 * tests/unit/test_tasks.c on tests/data/longbench/. */
#include "loader.h"

#include "../common.h"

#include <stdlib.h>
#include <string.h>

enum {
    LB_FIRST_LINE = 1,  /* eval.py scores the first line only */
    LB_NO_CHAT = 2,     /* pred.py keeps these plain even for chat models */
    LB_SAMPLE = 4,      /* summaries: sampled decoding in the OmniKV setup */
    LB_STOP_NL = 8,     /* pred.py stops samsum at a newline */
};

typedef struct lb_dataset {
    const char *name;
    int max_new;
    task_metric metric;
    int flags;
    const char *tmpl;
} lb_dataset;

static const lb_dataset LB[] = {
    {"narrativeqa", 128, TASK_METRIC_QA_F1, 0,
     "You are given a story, which can be either a novel or a movie script, and a question. Answer "
     "the question as concisely as you can, using a single phrase if possible. Do not provide any "
     "explanation.\n\nStory: {context}\n\nNow, answer the question based on the story as concisely "
     "as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: "
     "{input}\n\nAnswer:"},
    {"qasper", 128, TASK_METRIC_QA_F1, 0,
     "You are given a scientific article and a question. Answer the question as concisely as you "
     "can, using a single phrase or sentence if possible. If the question cannot be answered based "
     "on the information in the article, write \"unanswerable\". If the question is a yes/no "
     "question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\n"
     "Article: {context}\n\n Answer the question based on the above article as concisely as you "
     "can, using a single phrase or sentence if possible. If the question cannot be answered based "
     "on the information in the article, write \"unanswerable\". If the question is a yes/no "
     "question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\n"
     "Question: {input}\n\nAnswer:"},
    {"multifieldqa_en", 64, TASK_METRIC_QA_F1, 0,
     "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following "
     "question based on the above text, only give me the answer and do not output any other words."
     "\n\nQuestion: {input}\nAnswer:"},
    {"multifieldqa_zh", 64, TASK_METRIC_QA_F1_ZH, 0,
     "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，"
     "不要输出任何其他字词。\n\n问题：{input}\n回答："},
    {"hotpotqa", 32, TASK_METRIC_QA_F1, 0,
     "Answer the question based on the given passages. Only give me the answer and do not output "
     "any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question "
     "based on the given passages. Only give me the answer and do not output any other words.\n\n"
     "Question: {input}\nAnswer:"},
    {"2wikimqa", 32, TASK_METRIC_QA_F1, 0,
     "Answer the question based on the given passages. Only give me the answer and do not output "
     "any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question "
     "based on the given passages. Only give me the answer and do not output any other words.\n\n"
     "Question: {input}\nAnswer:"},
    {"musique", 32, TASK_METRIC_QA_F1, 0,
     "Answer the question based on the given passages. Only give me the answer and do not output "
     "any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question "
     "based on the given passages. Only give me the answer and do not output any other words.\n\n"
     "Question: {input}\nAnswer:"},
    {"dureader", 128, TASK_METRIC_ROUGE_L_ZH, 0,
     "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题："
     "{input}\n回答："},
    {"gov_report", 512, TASK_METRIC_ROUGE_L, LB_SAMPLE,
     "You are given a report by a government agency. Write a one-page summary of the report.\n\n"
     "Report:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"},
    {"qmsum", 512, TASK_METRIC_ROUGE_L, LB_SAMPLE,
     "You are given a meeting transcript and a query containing a question or instruction. Answer "
     "the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based "
     "on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:"},
    {"multi_news", 512, TASK_METRIC_ROUGE_L, LB_SAMPLE,
     "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n"
     "{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:"},
    {"vcsum", 512, TASK_METRIC_ROUGE_L_ZH, LB_SAMPLE,
     "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结："},
    {"trec", 64, TASK_METRIC_CLASSIFY, LB_FIRST_LINE | LB_NO_CHAT,
     "Please determine the type of the question below. Here are some examples of questions.\n\n"
     "{context}\n{input}"},
    {"triviaqa", 32, TASK_METRIC_QA_F1, LB_FIRST_LINE | LB_NO_CHAT,
     "Answer the question based on the given passage. Only give me the answer and do not output "
     "any other words. The following are some examples.\n\n{context}\n\n{input}"},
    {"samsum", 128, TASK_METRIC_ROUGE_L, LB_FIRST_LINE | LB_NO_CHAT | LB_STOP_NL,
     "Summarize the dialogue into a few short sentences. The following are some examples.\n\n"
     "{context}\n\n{input}"},
    {"lsht", 64, TASK_METRIC_CLASSIFY, LB_FIRST_LINE | LB_NO_CHAT,
     "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}"},
    {"passage_count", 32, TASK_METRIC_COUNT, 0,
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. "
     "Please carefully read these paragraphs and determine how many unique paragraphs there are "
     "after removing duplicates. In other words, how many non-repeating paragraphs are there in "
     "total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing "
     "duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\n"
     "The final answer is: "},
    {"passage_retrieval_en", 32, TASK_METRIC_RETRIEVAL, 0,
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which "
     "paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\n"
     "Please enter the number of the paragraph that the abstract is from. The answer format must "
     "be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: "},
    {"passage_retrieval_zh", 32, TASK_METRIC_RETRIEVAL_ZH, 0,
     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n"
     "下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式"
     "\n\n答案是："},
    {"lcc", 64, TASK_METRIC_CODE_SIM, LB_NO_CHAT,
     "Please complete the code given below. \n{context}Next line of code:\n"},
    {"repobench-p", 64, TASK_METRIC_CODE_SIM, LB_NO_CHAT,
     "Please complete the code given below. \n{context}{input}Next line of code:\n"},
};
enum { N_LB = sizeof LB / sizeof LB[0] };

static const lb_dataset *lb_find(const char *name) {
    for (int i = 0; i < N_LB; i++)
        if (!strcmp(LB[i].name, name)) return &LB[i];
    return NULL;
}

const char *longbench_dataset(const char *name) {
    const char *best = NULL;
    for (int i = 0; i < N_LB; i++) {
        size_t n = strlen(LB[i].name);
        if (!strncmp(name, LB[i].name, n) && (!best || n > strlen(best))) best = LB[i].name;
    }
    return best;
}

const char *longbench_known(void) {
    static char buf[512];
    if (!buf[0])
        for (int i = 0; i < N_LB; i++) {
            if (i) strcat(buf, ", ");
            strcat(buf, LB[i].name);
        }
    return buf;
}

int longbench_record(const cJSON *rec, const char *dataset, task_sample *out) {
    memset(out, 0, sizeof *out);
    /* The record's own dataset wins over the file name; LongBench-E names end in "_e". */
    const cJSON *dj = cJSON_GetObjectItemCaseSensitive(rec, "dataset");
    const lb_dataset *d = NULL;
    if (cJSON_IsString(dj)) d = lb_find(dj->valuestring);
    if (!d && cJSON_IsString(dj) && longbench_dataset(dj->valuestring))
        d = lb_find(longbench_dataset(dj->valuestring));
    /* The file name stands in only for records that name no dataset: a name omnikv does not
     * know must not be scored as the file's. */
    if (!d && dataset && !dj) d = lb_find(dataset);
    if (!d)
        return okv_fail(OKV_ERR_INPUT, "the record names no LongBench dataset omnikv knows (\"dataset\" "
                        "is %s; known: %s)", cJSON_IsString(dj) ? dj->valuestring : "absent",
                        longbench_known());
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(rec, "context");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(rec, "input");
    if (!cJSON_IsString(ctx)) return okv_fail(OKV_ERR_INPUT, "the record has no string \"context\"");
    if (!cJSON_IsString(in)) return okv_fail(OKV_ERR_INPUT, "the record has no string \"input\"");
    out->answers = loader_texts(cJSON_GetObjectItemCaseSensitive(rec, "answers"), &out->n_answers);
    if (!out->n_answers) {
        task_sample_free(out);
        return okv_fail(OKV_ERR_INPUT, "the record has no \"answers\"");
    }
    out->classes = loader_texts(cJSON_GetObjectItemCaseSensitive(rec, "all_classes"), &out->n_classes);
    if (d->metric == TASK_METRIC_CLASSIFY && !out->n_classes) {
        task_sample_free(out);
        return okv_fail(OKV_ERR_INPUT, "a %s record needs \"all_classes\"", d->name);
    }
    const char *names[] = {"context", "input"};
    const char *vals[] = {ctx->valuestring, in->valuestring};
    out->prompt = loader_fill(d->tmpl, names, vals, 2);
    out->id = loader_text(cJSON_GetObjectItemCaseSensitive(rec, "_id"));
    if (!out->id) out->id = strdup("");
    out->dataset = strdup(d->name);
    OKV_ASSERT(out->id && out->dataset);
    out->metric = d->metric;
    out->max_new_tokens = d->max_new;
    out->first_line = d->flags & LB_FIRST_LINE;
    out->chat_exempt = d->flags & LB_NO_CHAT;
    out->sample = d->flags & LB_SAMPLE;
    out->stop_newline = d->flags & LB_STOP_NL;
    out->needle_at = -1;
    return OKV_OK;
}
