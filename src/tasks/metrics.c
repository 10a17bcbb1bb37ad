/* metrics.c — the published suites' scorers from their definitions (RULER, QA-F1, ROUGE-L,
 * LongBench's and InfiniteBench's rules); where we differ from the Python references it is said
 * at the function. Tested by tests/unit/test_tasks.c against hand-computed values. */
#include "tasks.h"

#include "../common.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small text tools ----------------------------------------------------------------------- */

/* One code point from UTF-8 (a stray byte counts as itself); advances *p. */
static uint32_t utf8_next(const char **p) {
    const unsigned char *s = (const unsigned char *)*p;
    uint32_t c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (n > 1) {
        uint32_t v = c & (0x7fu >> n);
        for (int i = 1; i < n; i++) {
            if ((s[i] & 0xc0) != 0x80) {
                n = 1;
                v = c;
                break;
            }
            v = (v << 6) | (s[i] & 0x3f);
        }
        c = v;
    }
    *p += n;
    return c;
}

/* Python's string.punctuation. */
static bool is_ascii_punct(uint32_t c) { return c < 128 && ispunct((int)c); }

/* The Chinese punctuation LongBench and InfiniteBench strip before Chinese scoring. */
static bool is_zh_punct(uint32_t c) {
    static const char *const ZH =
        "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.";
    if (is_ascii_punct(c)) return true;
    for (const char *p = ZH; *p;)
        if (utf8_next(&p) == c) return true;
    return false;
}

static bool is_space_cp(uint32_t c) { return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x3000; }

/* Tokens are compared through 64-bit hashes of their bytes (FNV-1a): collisions between the few
 * hundred words of an answer are out of reach. */
typedef struct toks { uint64_t *h; int n, cap; } toks;

static void toks_push(toks *t, const char *s, size_t n) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->h = realloc(t->h, sizeof(uint64_t) * (size_t)t->cap);
        OKV_ASSERT(t->h);
    }
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    t->h[t->n++] = h;
}

/* SQuAD's normalize_answer then split: lower-case, drop ASCII punctuation, split on white space,
 * drop the articles a/an/the. (Python lower-cases all of Unicode and removes articles at \b
 * boundaries inside a word like "the–end"; we lower-case ASCII and drop whole-word articles.) */
static void words_squad(const char *s, toks *t) {
    char *w = malloc(strlen(s) + 1);
    OKV_ASSERT(w);
    size_t k = 0;
    for (const char *p = s;;) {
        const char *q = p;
        bool end = !*p;
        uint32_t c = end ? ' ' : utf8_next(&p);
        if (is_space_cp(c)) {
            w[k] = 0;
            if (k && strcmp(w, "a") && strcmp(w, "an") && strcmp(w, "the")) toks_push(t, w, k);
            k = 0;
            if (end) break;
            continue;
        }
        if (is_ascii_punct(c)) continue;
        for (; q < p; q++) w[k++] = (char)tolower((unsigned char)*q);
    }
    free(w);
}

/* Chinese: one token per character after dropping punctuation and white space (InfiniteBench's
 * rule; LongBench cuts words with jieba, which we do not have). */
static void chars_zh(const char *s, toks *t) {
    for (const char *p = s; *p;) {
        const char *q = p;
        uint32_t c = utf8_next(&p);
        if (is_space_cp(c) || is_zh_punct(c)) continue;
        char low = c < 128 ? (char)tolower((int)c) : 0;
        if (low) toks_push(t, &low, 1);
        else toks_push(t, q, (size_t)(p - q));
    }
}

/* Google rouge_score's tokenizer: lower-case, every run of [a-z0-9] is a word. */
static void words_rouge(const char *s, toks *t) {
    const char *p = s;
    char w[256];
    while (*p) {
        while (*p && !isalnum((unsigned char)*p)) p++;
        size_t k = 0;
        while (*p && isalnum((unsigned char)*p)) {
            if (k < sizeof w) w[k++] = (char)tolower((unsigned char)*p);
            p++;
        }
        if (k) toks_push(t, w, k);
    }
}

static double f1_of(const toks *pred, const toks *ref) {
    if (!pred->n || !ref->n) return 0;
    /* Multiset intersection: each reference token matches at most once. */
    bool *used = calloc((size_t)ref->n, 1);
    OKV_ASSERT(used);
    int same = 0;
    for (int i = 0; i < pred->n; i++)
        for (int j = 0; j < ref->n; j++)
            if (!used[j] && ref->h[j] == pred->h[i]) {
                used[j] = true;
                same++;
                break;
            }
    free(used);
    if (!same) return 0;
    double p = (double)same / pred->n, r = (double)same / ref->n;
    return 2 * p * r / (p + r);
}

static int lcs_len(const uint64_t *a, int na, const uint64_t *b, int nb) {
    int *row = calloc((size_t)nb + 1, sizeof(int));
    OKV_ASSERT(row);
    for (int i = 1; i <= na; i++) {
        int diag = 0;
        for (int j = 1; j <= nb; j++) {
            int up = row[j];
            row[j] = a[i - 1] == b[j - 1] ? diag + 1 : OKV_MAX(row[j], row[j - 1]);
            diag = up;
        }
    }
    int n = row[nb];
    free(row);
    return n;
}

static double lcs_f(const toks *pred, const toks *ref) {
    if (!pred->n || !ref->n) return 0;
    int l = lcs_len(pred->h, pred->n, ref->h, ref->n);
    if (!l) return 0;
    double p = (double)l / pred->n, r = (double)l / ref->n;
    return 2 * p * r / (p + r);
}

/* Runs of ASCII digits, as Python's re.findall(r"\d+") returns them (ASCII text). */
typedef struct numbers { const char *at[256]; int len[256]; int n; } numbers;

static void find_numbers(const char *s, numbers *out) {
    out->n = 0;
    for (const char *p = s; *p && out->n < 256;) {
        if (!isdigit((unsigned char)*p)) {
            p++;
            continue;
        }
        const char *q = p;
        while (isdigit((unsigned char)*q)) q++;
        out->at[out->n] = p;
        out->len[out->n++] = (int)(q - p);
        p = q;
    }
}

static double share_equal(const numbers *nums, const char *want, size_t want_len) {
    if (!nums->n) return 0;
    int right = 0;
    for (int i = 0; i < nums->n; i++)
        right += (size_t)nums->len[i] == want_len && !strncmp(nums->at[i], want, want_len);
    return (double)right / nums->n;
}

/* ---- the metrics ---------------------------------------------------------------------------- */

double metric_first_int(const char *text, const char *answer) {
    const char *p = text;
    while (*p && !isdigit((unsigned char)*p)) p++;
    const char *q = p;
    while (isdigit((unsigned char)*q)) q++;
    return q > p && (size_t)(q - p) == strlen(answer) && !strncmp(p, answer, (size_t)(q - p)) ? 1.0 : 0.0;
}

double metric_substr_all(const char *out, char *const *answers, int n) {
    if (n <= 0) return 0;
    int found = 0;
    for (int i = 0; i < n; i++) found += strcasestr(out, answers[i]) != NULL;
    return (double)found / n;
}

double metric_word(const char *out, const char *word) {
    size_t n = strlen(word);
    if (!n) return 0;
    for (const char *p = out; (p = strcasestr(p, word)); p++) {
        bool left = p == out || !isalnum((unsigned char)p[-1]);
        bool right = !isalnum((unsigned char)p[n]);
        if (left && right) return 1;
    }
    return 0;
}

double metric_qa_f1(const char *out, const char *ref) {
    toks a = {0}, b = {0};
    words_squad(out, &a);
    words_squad(ref, &b);
    double f = f1_of(&a, &b);
    free(a.h);
    free(b.h);
    return f;
}

double metric_qa_f1_zh(const char *out, const char *ref) {
    toks a = {0}, b = {0};
    chars_zh(out, &a);
    chars_zh(ref, &b);
    double f = f1_of(&a, &b);
    free(a.h);
    free(b.h);
    return f;
}

/* ROUGE-L as Google's rouge_score computes rougeL. LongBench calls the Python `rouge` package,
 * whose summary-level variant splits sentences at '.' and does not lower-case, and InfiniteBench
 * reports rougeLsum; both differ from this by a few points on multi-sentence summaries. */
double metric_rouge_l(const char *out, const char *ref) {
    toks a = {0}, b = {0};
    words_rouge(out, &a);
    words_rouge(ref, &b);
    double f = lcs_f(&a, &b);
    free(a.h);
    free(b.h);
    return f;
}

double metric_rouge_l_zh(const char *out, const char *ref) {
    toks a = {0}, b = {0};
    chars_zh(out, &a);
    chars_zh(ref, &b);
    double f = lcs_f(&a, &b);
    free(a.h);
    free(b.h);
    return f;
}

/* LongBench's classification_score: the classes named in the output, less those that are only
 * part of the right label's name; 1/(how many remain) when the right label is among them. (The
 * Python removes from the list while iterating it, which can skip an element; we remove all.) */
double metric_classify(const char *out, const char *ref, char *const *classes, int n_classes) {
    int named = 0;
    bool right = false;
    for (int i = 0; i < n_classes; i++) {
        if (!strstr(out, classes[i])) continue;
        if (strstr(ref, classes[i]) && strcmp(ref, classes[i])) continue;
        named++;
        right |= !strcmp(ref, classes[i]);
    }
    return right ? 1.0 / named : 0.0;
}

/* LongBench's retrieval_score: the paragraph number in "Paragraph 12" ("段落12" for Chinese), then
 * the share of the numbers in the output equal to it. */
double metric_retrieval(const char *out, const char *ref, bool zh) {
    const char *label = zh ? "段落" : "Paragraph ";
    const char *p = strstr(ref, label);
    if (!p) return 0;
    p += strlen(label);
    size_t n = 0;
    while (isdigit((unsigned char)p[n])) n++;
    if (!n) return 0;
    numbers nums;
    find_numbers(out, &nums);
    return share_equal(&nums, p, n);
}

double metric_count(const char *out, const char *ref) {
    numbers nums;
    find_numbers(out, &nums);
    return share_equal(&nums, ref, strlen(ref));
}

/* Similarity from the indel distance (insertions and deletions only), 2 * LCS / (|a| + |b|)
 * over code points: what fuzzywuzzy's fuzz.ratio computes with python-Levenshtein (which then
 * rounds to a whole percent; we do not round). */
double metric_edit_sim(const char *a, const char *b) {
    toks x = {0}, y = {0};
    for (const char *p = a; *p;) {
        const char *q = p;
        utf8_next(&p);
        toks_push(&x, q, (size_t)(p - q));
    }
    for (const char *p = b; *p;) {
        const char *q = p;
        utf8_next(&p);
        toks_push(&y, q, (size_t)(p - q));
    }
    double s = x.n + y.n == 0 ? 1.0 : 2.0 * lcs_len(x.h, x.n, y.h, y.n) / (x.n + y.n);
    free(x.h);
    free(y.h);
    return s;
}

/* LongBench's code_sim_score: the first output line (leading newlines skipped) that has no '`',
 * '#' or "//", against the reference line. */
double metric_code_sim(const char *out, const char *ref) {
    while (*out == '\n') out++;
    const char *line = "";
    size_t len = 0;
    for (const char *p = out; *p || p == out;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool code = true;
        for (size_t i = 0; i < n && code; i++)
            code = p[i] != '`' && p[i] != '#' && !(p[i] == '/' && i + 1 < n && p[i + 1] == '/');
        if (code) {
            line = p;
            len = n;
            break;
        }
        if (!e) break;
        p = e + 1;
    }
    char *first = strndup(line, len);
    OKV_ASSERT(first);
    double s = metric_edit_sim(first, ref);
    free(first);
    return s;
}

static bool label_sep(char c) { return strchr("\n:\"'.,?!{}", c) != NULL || isspace((unsigned char)c); }

/* InfiniteBench kv_retrieval and longdialogue_qa_eng: the output's words (split at white space and
 * \n : " ' . , ? ! { }) include the label. Case is ignored: longdialogue compares upper-cased
 * words with an upper-case name, and kv_retrieval's labels are lower-case hex either way. */
double metric_label_word(const char *out, const char *label) {
    size_t n = strlen(label);
    if (!n) return 0;
    for (const char *p = out; *p;) {
        while (*p && label_sep(*p)) p++;
        const char *q = p;
        while (*q && !label_sep(*q)) q++;
        if ((size_t)(q - p) == n && !strncasecmp(p, label, n)) return 1;
        p = q;
    }
    return 0;
}

/* The first option letter of the output: the first character when it is A-D and not the start
 * of a word, else the first word that is a single letter A-D. */
double metric_choice(const char *out, const char *letter) {
    const char *p = out;
    while (*p && isspace((unsigned char)*p)) p++;
    char got = 0;
    if (*p >= 'A' && *p <= 'D' && !isalpha((unsigned char)p[1])) got = *p;
    for (const char *q = p; !got && *q;) {
        while (*q && !isalnum((unsigned char)*q)) q++;
        const char *e = q;
        while (*e && isalnum((unsigned char)*e)) e++;
        if (e - q == 1 && *q >= 'A' && *q <= 'D') got = *q;
        q = e;
    }
    return got && letter[0] == got ? 1 : 0;
}

/* InfiniteBench math_find: the first number (\d+\.\d+ or \d+) equals the answer. */
double metric_first_number(const char *out, const char *ref) {
    const char *p = out;
    while (*p && !isdigit((unsigned char)*p)) p++;
    if (!*p) return 0;
    const char *q = p;
    while (isdigit((unsigned char)*q)) q++;
    if (*q == '.' && isdigit((unsigned char)q[1])) {
        q++;
        while (isdigit((unsigned char)*q)) q++;
    }
    char *num = strndup(p, (size_t)(q - p));
    OKV_ASSERT(num);
    double got = strtod(num, NULL), want = strtod(ref, NULL);
    free(num);
    return got == want ? 1 : 0;
}

/* InfiniteBench code_run: the last word (after \n . ` ' " : become spaces) is the integer. */
double metric_last_int(const char *out, const char *ref) {
    const char *end = out + strlen(out), *w = NULL, *we = NULL;
    for (const char *p = out; p < end;) {
        while (p < end && (isspace((unsigned char)*p) || strchr("\n.`'\":", *p))) p++;
        if (p == end) break;
        const char *q = p;
        while (q < end && !(isspace((unsigned char)*q) || strchr("\n.`'\":", *q))) q++;
        w = p, we = q;
        p = q;
    }
    if (!w) return 0;
    char *word = strndup(w, (size_t)(we - w)), *e1, *e2;
    OKV_ASSERT(word);
    long got = strtol(word, &e1, 10), want = strtol(ref, &e2, 10);
    bool ok = *e1 == 0 && e1 != word && got == want;
    free(word);
    return ok ? 1 : 0;
}

/* InfiniteBench math_calc: how many of the expected values (the answer lists them separated by
 * spaces or commas) the output reproduces in order from the start, as a share. */
double metric_prefix_numbers(const char *out, const char *ref) {
    int want = 0, right = 0;
    bool ok = true;
    const char *o = out;
    for (const char *r = ref; *r;) {
        char *e;
        long v = strtol(r, &e, 10);
        if (e == r) {
            r++;
            continue;
        }
        r = e;
        want++;
        if (!ok) continue;
        while (*o && !isdigit((unsigned char)*o) && !(*o == '-' && isdigit((unsigned char)o[1]))) o++;
        if (!*o) {
            ok = false;
            continue;
        }
        long g = strtol(o, &e, 10);
        o = e;
        if (g == v) right++;
        else ok = false;
    }
    return want ? (double)right / want : 0;
}

/* ---- per sample ----------------------------------------------------------------------------- */

static double score_one(const task_sample *s, const char *out, const char *ref) {
    switch (s->metric) {
    case TASK_METRIC_FIRST_INT: return metric_first_int(out, ref);
    case TASK_METRIC_WORD: return metric_word(out, ref);
    case TASK_METRIC_QA_F1: return metric_qa_f1(out, ref);
    case TASK_METRIC_QA_F1_ZH: return metric_qa_f1_zh(out, ref);
    case TASK_METRIC_ROUGE_L: return metric_rouge_l(out, ref);
    case TASK_METRIC_ROUGE_L_ZH: return metric_rouge_l_zh(out, ref);
    case TASK_METRIC_CLASSIFY: return metric_classify(out, ref, s->classes, s->n_classes);
    case TASK_METRIC_RETRIEVAL: return metric_retrieval(out, ref, false);
    case TASK_METRIC_RETRIEVAL_ZH: return metric_retrieval(out, ref, true);
    case TASK_METRIC_COUNT: return metric_count(out, ref);
    case TASK_METRIC_CODE_SIM: return metric_code_sim(out, ref);
    case TASK_METRIC_LABEL_WORD: return metric_label_word(out, ref);
    case TASK_METRIC_CHOICE: return metric_choice(out, ref);
    case TASK_METRIC_FIRST_NUMBER: return metric_first_number(out, ref);
    case TASK_METRIC_LAST_INT: return metric_last_int(out, ref);
    case TASK_METRIC_PREFIX_NUMBERS: return metric_prefix_numbers(out, ref);
    case TASK_METRIC_SUBSTR_ALL: break;
    }
    OKV_ASSERT(!"substring-all scores all answers together");
}

double task_score(const task_sample *s, const char *output) {
    char *line = NULL;
    if (s->first_line) {
        while (*output == '\n') output++;
        const char *e = strchr(output, '\n');
        line = strndup(output, e ? (size_t)(e - output) : strlen(output));
        OKV_ASSERT(line);
        output = line;
    }
    double best = 0;
    if (s->metric == TASK_METRIC_SUBSTR_ALL) {
        best = metric_substr_all(output, s->answers, s->n_answers);
    } else {
        for (int i = 0; i < s->n_answers; i++) best = fmax(best, score_one(s, output, s->answers[i]));
    }
    free(line);
    return 100.0 * best;
}
