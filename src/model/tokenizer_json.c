/* tokenizer_json.c — Hugging Face tokenizer.json / tokenizer_config.json -> tok_spec (format in
 * tokenizer_json.h). Tested by tests/unit/test_tokenizer_json.c and, against the `tokenizers`
 * package, by tests/model/test_tokenizer_json.c. */
#include "tokenizer_json.h"

#include "../common.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The split ByteLevel applies when use_regex is true (GPT-2's pattern). */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char spm_space[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's visible space */

typedef struct id_entry {
    const char *text;
    int32_t id;
} id_entry;

static int cmp_id_entry(const void *a, const void *b) {
    return strcmp(((const id_entry *)a)->text, ((const id_entry *)b)->text);
}

/* Parse state: paths for messages, and a sorted text -> id table for lookups. */
typedef struct tj_ctx {
    char path[4096], cfg_path[4096];
    id_entry *by_text;
    int n_by_text;
    bool byte_level, spm_like, prepend, nfc;
} tj_ctx;

static int32_t lookup(const tj_ctx *x, const char *text) {
    id_entry key = {.text = text};
    const id_entry *e = bsearch(&key, x->by_text, (size_t)x->n_by_text, sizeof key, cmp_id_entry);
    return e ? e->id : -1;
}

static const char *json_type(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static void push_regex(tok_json *tj, const char *re) {
    char **g = realloc(tj->pre_regex, sizeof *g * (size_t)(tj->spec.n_pre_regex + 1));
    OKV_ASSERT(g);
    tj->pre_regex = g;
    g[tj->spec.n_pre_regex] = strdup(re);
    OKV_ASSERT(g[tj->spec.n_pre_regex]);
    tj->spec.n_pre_regex++;
}

/* A literal string as a PCRE2 pattern: \Q...\E quotes everything except a "\E" inside. */
static void push_literal(tok_json *tj, const char *s) {
    size_t n = strlen(s);
    char *re = malloc(6 * n + 8), *o = re;
    OKV_ASSERT(re);
    o += sprintf(o, "\\Q");
    for (const char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] == 'E') {
            o += sprintf(o, "\\E\\\\\\Q");
            continue;
        }
        *o++ = *p;
    }
    sprintf(o, "\\E");
    push_regex(tj, re);
    free(re);
}

static int read_pre_tokenizer(tok_json *tj, tj_ctx *x, const cJSON *p) {
    const char *type = json_type(p);
    if (!type)
        return okv_fail(OKV_ERR_INPUT, "%s: a pre_tokenizer entry has no 'type'", x->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return okv_fail(OKV_ERR_INPUT, "%s: pre_tokenizer Sequence has no array 'pretokenizers'",
                            x->path);
        for (const cJSON *e = list->child; e; e = e->next) {
            int st = read_pre_tokenizer(tj, x, e);
            if (st) return st;
        }
        return OKV_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        x->byte_level = true;
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        if (!ur || cJSON_IsTrue(ur)) push_regex(tj, gpt2_regex);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space")))
            tj->spec.add_space_prefix = true;
        return OKV_OK;
    }
    if (!strcmp(type, "Digits")) {
        bool single = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "individual_digits"));
        push_regex(tj, single ? "\\p{N}" : "\\p{N}+");
        return OKV_OK;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *behavior = NULL;
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (cJSON_IsString(b)) behavior = b->valuestring;
        if (!behavior || strcmp(behavior, "Isolated"))
            return okv_fail(OKV_ERR_INPUT, "%s: pre_tokenizer Split has behavior '%.32s'; only "
                            "Isolated is supported", x->path, behavior ? behavior : "(none)");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "invert")))
            return okv_fail(OKV_ERR_INPUT, "%s: pre_tokenizer Split has invert true, which is not "
                            "supported", x->path);
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (cJSON_IsString(re)) push_regex(tj, re->valuestring);
        else if (cJSON_IsString(lit)) push_literal(tj, lit->valuestring);
        else
            return okv_fail(OKV_ERR_INPUT,
                            "%s: pre_tokenizer Split has no pattern {Regex} or {String}", x->path);
        return OKV_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        x->spm_like = true;
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
        if (cJSON_IsString(ps)) x->prepend |= strcmp(ps->valuestring, "never") != 0;
        else x->prepend |= !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space"));
        return OKV_OK;
    }
    return okv_fail(OKV_ERR_INPUT, "%s: pre_tokenizer '%.32s' is not supported (ByteLevel, Split, "
                    "Digits, Metaspace and Sequence are)", x->path, type);
}

static int read_normalizer(tj_ctx *x, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return OKV_OK;
    const char *type = json_type(n);
    if (!type) return okv_fail(OKV_ERR_INPUT, "%s: a normalizer entry has no 'type'", x->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return okv_fail(OKV_ERR_INPUT, "%s: normalizer Sequence has no array 'normalizers'",
                            x->path);
        for (const cJSON *e = list->child; e; e = e->next) {
            int st = read_normalizer(x, e);
            if (st) return st;
        }
        return OKV_OK;
    }
    if (!strcmp(type, "NFC")) {
        x->nfc = true;
        return OKV_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "prepend"));
        if (!s || strcmp(s, spm_space))
            return okv_fail(OKV_ERR_INPUT, "%s: normalizer Prepend of '%.16s' is not supported (only "
                            "U+2581 is)", x->path, s ? s : "(none)");
        x->prepend = x->spm_like = true;
        return OKV_OK;
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "String"));
        const char *to = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "content"));
        if (!from || !to || strcmp(from, " ") || strcmp(to, spm_space))
            return okv_fail(OKV_ERR_INPUT, "%s: normalizer Replace of '%.16s' by '%.16s' is not "
                            "supported (only ' ' by U+2581 is)", x->path, from ? from : "(regex)",
                            to ? to : "(none)");
        x->spm_like = true;
        return OKV_OK;
    }
    return okv_fail(OKV_ERR_INPUT, "%s: normalizer '%.32s' is not supported (NFC and the "
                    "SentencePiece-style Prepend/Replace are)", x->path, type);
}

static int check_decoder(tj_ctx *x, const cJSON *d) {
    if (!d || cJSON_IsNull(d)) return OKV_OK;
    const char *type = json_type(d);
    if (!type) return okv_fail(OKV_ERR_INPUT, "%s: a decoder entry has no 'type'", x->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next) {
            int st = check_decoder(x, e);
            if (st) return st;
        }
        return OKV_OK;
    }
    static const char *const known[] = {"ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip",
                                        "Metaspace"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(type, known[i])) return OKV_OK;
    return okv_fail(OKV_ERR_INPUT, "%s: decoder '%.32s' is not supported (ByteLevel and the "
                    "SentencePiece-style decoders are)", x->path, type);
}

/* Whether the post-processor's single-sequence template starts (ends) with a special token. */
static void read_post_processor(const cJSON *p, bool *bos, bool *eos) {
    const char *type = json_type(p);
    if (!type) return;
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next)
            read_post_processor(e, bos, eos);
        return;
    }
    if (strcmp(type, "TemplateProcessing")) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    int n = cJSON_GetArraySize(single);
    if (n == 0) return;
    *bos = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken") != NULL;
    *eos = n > 1 &&
           cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, n - 1), "SpecialToken");
}

static int read_vocab(tok_json *tj, tj_ctx *x, const cJSON *model, const cJSON *added,
                      int n_vocab_min) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return okv_fail(OKV_ERR_INPUT, "%s: model has no object 'vocab'", x->path);
    if (added && !cJSON_IsArray(added))
        return okv_fail(OKV_ERR_INPUT, "%s: added_tokens is not an array", x->path);
    int max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 24) ||
            e->valuedouble != (int)e->valuedouble)
            return okv_fail(OKV_ERR_INPUT, "%s: vocab entry '%.64s' has no valid id", x->path,
                            e->string);
        max_id = OKV_MAX(max_id, e->valueint);
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) ||
            !cJSON_IsString(content))
            return okv_fail(OKV_ERR_INPUT, "%s: an added_tokens entry lacks a valid id or content",
                            x->path);
        max_id = OKV_MAX(max_id, id->valueint);
    }
    int n = OKV_MAX(max_id + 1, n_vocab_min);
    tj->tokens = calloc((size_t)n + 1, sizeof *tj->tokens);
    tj->types = calloc((size_t)n + 1, sizeof *tj->types);
    OKV_ASSERT(tj->tokens && tj->types);
    tj->spec.n_vocab = n;
    bool byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (tj->tokens[e->valueint])
            return okv_fail(OKV_ERR_INPUT, "%s: vocab gives id %d to both '%.64s' and '%.64s'",
                            x->path, e->valueint, tj->tokens[e->valueint], e->string);
        tj->tokens[e->valueint] = e->string;
        unsigned byte;
        char tail;
        bool is_byte = byte_fallback && strlen(e->string) == 6 &&
                       sscanf(e->string, "<0x%2X>%c", &byte, &tail) == 1;
        tj->types[e->valueint] = is_byte ? TOK_TYPE_BYTE : TOK_TYPE_NORMAL;
    }
    /* Added tokens take precedence over a vocab entry with the same id, as in the library. */
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        tj->tokens[id] = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        tj->types[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"))
                            ? TOK_TYPE_CONTROL : TOK_TYPE_USER;
    }
    for (int i = 0; i < n; i++) {
        if (tj->tokens[i]) continue;
        char **g = realloc(tj->pads, sizeof *g * (size_t)(tj->n_pads + 1));
        OKV_ASSERT(g);
        tj->pads = g;
        char name[32];
        snprintf(name, sizeof name, "[PAD%d]", i);
        tj->pads[tj->n_pads] = strdup(name);
        OKV_ASSERT(tj->pads[tj->n_pads]);
        tj->tokens[i] = tj->pads[tj->n_pads++];
        tj->types[i] = TOK_TYPE_UNUSED;
    }
    x->by_text = malloc(sizeof *x->by_text * (size_t)n);
    OKV_ASSERT(x->by_text);
    for (int i = 0; i < n; i++)
        if (tj->types[i] != TOK_TYPE_UNUSED)
            x->by_text[x->n_by_text++] = (id_entry){tj->tokens[i], i};
    qsort(x->by_text, (size_t)x->n_by_text, sizeof *x->by_text, cmp_id_entry);
    return OKV_OK;
}

static int read_merges(tok_json *tj, tj_ctx *x, const cJSON *model) {
    /* Llama-3: a pre-split word that is itself a token is taken whole, before any merge. */
    tj->spec.ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!merges || cJSON_IsNull(merges)) return OKV_OK;
    if (!cJSON_IsArray(merges))
        return okv_fail(OKV_ERR_INPUT, "%s: model.merges is not an array", x->path);
    int n = cJSON_GetArraySize(merges);
    size_t text_bytes = 0;
    for (const cJSON *e = merges->child; e; e = e->next)
        if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
            cJSON_IsString(e->child->next))
            text_bytes += strlen(e->child->valuestring) + strlen(e->child->next->valuestring) + 2;
    tj->merges = calloc((size_t)n + 1, sizeof *tj->merges);
    tj->merge_text = malloc(text_bytes + 1);
    OKV_ASSERT(tj->merges && tj->merge_text);
    char *o = tj->merge_text;
    int i = 0;
    for (const cJSON *e = merges->child; e; e = e->next, i++) {
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || sp == e->valuestring || !sp[1] || strchr(sp + 1, ' '))
                return okv_fail(OKV_ERR_INPUT, "%s: merge %d '%.64s' is not two tokens separated by "
                                "one space", x->path, i, e->valuestring);
            tj->merges[i] = e->valuestring;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            /* tok_spec writes a merge as "left right", so neither side may hold a space. */
            if (!a[0] || !b[0] || strchr(a, ' ') || strchr(b, ' '))
                return okv_fail(OKV_ERR_INPUT, "%s: merge %d ['%.32s', '%.32s'] has an empty side or "
                                "a space inside a token, which is not supported", x->path, i, a, b);
            tj->merges[i] = o;
            o += sprintf(o, "%s %s", a, b) + 1;
        } else {
            return okv_fail(OKV_ERR_INPUT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]",
                            x->path, i);
        }
    }
    tj->spec.n_merges = n;
    tj->spec.merges = tj->merges;
    return OKV_OK;
}

/* SentencePiece-style tokenizers merge the adjacent pair whose result scores highest; HF's BPE
 * merges the pair of lowest rank. Scoring each token by minus the rank of the first merge that
 * makes it gives the same order; tokens no merge makes score below every merge result. */
static void spm_scores(tok_json *tj, tj_ctx *x) {
    const int n = tj->spec.n_vocab;
    tj->scores = malloc(sizeof *tj->scores * ((size_t)n + 1));
    OKV_ASSERT(tj->scores);
    for (int i = 0; i < n; i++) tj->scores[i] = -1e9f;
    char buf[1024];
    for (int r = tj->spec.n_merges - 1; r >= 0; r--) {
        const char *m = tj->merges[r], *sp = strchr(m, ' ');
        size_t la = (size_t)(sp - m), lb = strlen(sp + 1);
        if (la + lb + 1 > sizeof buf) continue;
        memcpy(buf, m, la);
        memcpy(buf + la, sp + 1, lb + 1);
        int32_t id = lookup(x, buf);
        if (id >= 0) tj->scores[id] = -(float)r;
    }
    for (int i = 0; i < n; i++)
        if (tj->types[i] != TOK_TYPE_NORMAL) tj->scores[i] = 0;
    tj->spec.scores = tj->scores;
}

/* A special-token field of tokenizer_config.json: a string or {"content": string}. */
static const char *cfg_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "content"));
    return NULL;
}

static int special_id(const tj_ctx *x, const cJSON *cfg, const char *key, int32_t *out) {
    const char *s = cfg_token(cfg, key);
    if (!s) return OKV_OK;
    int32_t id = lookup(x, s);
    if (id < 0)
        return okv_fail(OKV_ERR_INPUT, "%s: %s '%.64s' is not a token of the vocabulary", x->cfg_path,
                        key, s);
    *out = id;
    return OKV_OK;
}

static int read_config(tok_json *tj, tj_ctx *x, const char *dir, bool post_bos, bool post_eos) {
    tok_spec *s = &tj->spec;
    s->add_bos = post_bos;
    s->add_eos = post_eos;
    snprintf(x->cfg_path, sizeof x->cfg_path, "%s/tokenizer_config.json", dir);
    cJSON *cfg = NULL;
    int st = OKV_OK;
    if (access(x->cfg_path, F_OK) == 0) {
        char *text = NULL;
        if ((st = st_read_text(x->cfg_path, &text))) return st;
        const char *end = NULL;
        cfg = cJSON_ParseWithOpts(text, &end, 0);
        if (!cfg || !cJSON_IsObject(cfg))
            st = okv_fail(OKV_ERR_INPUT, "%s is not a JSON object (parse error at byte %ld)",
                          x->cfg_path, !cfg && end ? (long)(end - text) : 0L);
        free(text);
        if (st) goto done;
    }
    if ((st = special_id(x, cfg, "bos_token", &s->bos_id)) ||
        (st = special_id(x, cfg, "eos_token", &s->eos_id)) ||
        (st = special_id(x, cfg, "unk_token", &s->unk_id)) ||
        (st = special_id(x, cfg, "pad_token", &s->pad_id)))
        goto done;
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    if (cJSON_IsBool(ab)) s->add_bos = cJSON_IsTrue(ab);
    if (cJSON_IsBool(ae)) s->add_eos = cJSON_IsTrue(ae);

    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const char *tmpl = cJSON_GetStringValue(ct);
    if (cJSON_IsArray(ct)) {
        for (const cJSON *e = ct->child; e; e = e->next) {
            const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "name"));
            if (name && !strcmp(name, "default"))
                tmpl = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "template"));
        }
        if (!tmpl)
            OKV_WARN("%s: chat_template lists no template named 'default'; --chat will not work",
                     x->cfg_path);
    }
    if (tmpl) {
        tj->chat_template = strdup(tmpl);
        OKV_ASSERT(tj->chat_template);
    } else if (!ct) {
        /* Newer exports keep the template in its own file. */
        char jpath[4200];
        snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", dir);
        if (access(jpath, F_OK) == 0 && (st = st_read_text(jpath, &tj->chat_template))) goto done;
    }
    s->chat_template = tj->chat_template;
done:
    cJSON_Delete(cfg);
    return st;
}

int tok_json_parse(tok_json *tj, const char *dir, int n_vocab_min) {
    memset(tj, 0, sizeof *tj);
    tok_spec *s = &tj->spec;
    s->bos_id = s->eos_id = s->eot_id = s->unk_id = s->pad_id = -1;
    tj_ctx x = {0};
    snprintf(x.path, sizeof x.path, "%s/tokenizer.json", dir);
    char *text = NULL;
    int st = st_read_text(x.path, &text);
    if (st) return st;
    const char *end = NULL;
    tj->root = cJSON_ParseWithOpts(text, &end, 0);
    if (!tj->root) st = okv_fail(OKV_ERR_INPUT, "%s is not valid JSON (parse error at byte %ld)",
                                 x.path, end ? (long)(end - text) : 0L);
    free(text);
    if (st) return st;
    const cJSON *root = tj->root;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = json_type(model);
    if (!cJSON_IsObject(model))
        return okv_fail(OKV_ERR_INPUT, "%s has no object 'model'", x.path);
    if (mtype && strcmp(mtype, "BPE"))
        return okv_fail(OKV_ERR_INPUT, "%s: model type '%.32s' is not supported (only BPE is)",
                        x.path, mtype);
    if ((st = read_vocab(tj, &x, model, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"),
                         n_vocab_min)) ||
        (st = read_merges(tj, &x, model)) ||
        (st = read_normalizer(&x, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))) ||
        (st = check_decoder(&x, cJSON_GetObjectItemCaseSensitive(root, "decoder"))))
        goto done;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre) && (st = read_pre_tokenizer(tj, &x, pre))) goto done;
    if (x.byte_level == x.spm_like) {
        st = okv_fail(OKV_ERR_INPUT, "%s: the tokenizer is %s; omnikv supports byte-level BPE "
                      "(ByteLevel pre-tokenizer) and SentencePiece-style BPE (U+2581 spaces)",
                      x.path, x.byte_level ? "both byte-level and SentencePiece-style"
                                           : "neither byte-level nor SentencePiece-style");
        goto done;
    }
    if (x.nfc)
        OKV_DEBUG("%s: normalizer NFC is taken as identity (input text is assumed to be NFC)",
                  x.path);
    /* ByteLevel without use_regex and no Split: the whole text is one piece, which an empty list
     * would not say (the tokenizer then falls back to a named default split). */
    if (x.byte_level && s->n_pre_regex == 0) push_regex(tj, "[\\s\\S]+");
    s->kind = x.byte_level ? TOK_KIND_BPE : TOK_KIND_SPM;
    if (x.spm_like) {
        s->add_space_prefix = x.prepend;
        spm_scores(tj, &x);
    }
    s->tokens = tj->tokens;
    s->token_types = tj->types;
    s->pre = "default";
    s->pre_regex = (const char *const *)tj->pre_regex;
    const char *unk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "unk_token"));
    if (unk) s->unk_id = lookup(&x, unk);

    bool post_bos = false, post_eos = false;
    read_post_processor(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &post_bos,
                        &post_eos);
    if ((st = read_config(tj, &x, dir, post_bos, post_eos))) goto done;
    /* End of turn of the chat formats tokenizer_chat_kind knows, when the vocabulary has one. */
    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"};
    for (size_t i = 0; i < sizeof eot_names / sizeof *eot_names && s->eot_id < 0; i++)
        s->eot_id = lookup(&x, eot_names[i]);
done:
    free(x.by_text);
    return st;
}

void tok_json_free(tok_json *tj) {
    if (!tj) return;
    cJSON_Delete(tj->root);
    free(tj->tokens);
    free(tj->types);
    free(tj->scores);
    free(tj->merges);
    free(tj->merge_text);
    for (int i = 0; i < tj->spec.n_pre_regex; i++) free(tj->pre_regex[i]);
    free(tj->pre_regex);
    for (int i = 0; i < tj->n_pads; i++) free(tj->pads[i]);
    free(tj->pads);
    free(tj->chat_template);
    memset(tj, 0, sizeof *tj);
}

int tokenizer_init_json(okv_tokenizer **t, const char *dir, int n_vocab_min) {
    tok_json tj;
    int st = tok_json_parse(&tj, dir, n_vocab_min);
    if (!st && (st = tokenizer_init(t, &tj.spec))) okv_error_prefix("%s/tokenizer.json", dir);
    tok_json_free(&tj);
    return st;
}
