/* tokenizer.c — byte-level BPE (GPT-2 byte map, merges applied lowest rank first) and
 * SentencePiece-style BPE (highest score first, <0xNN> byte fallback), with llama.cpp's special-
 * token splitting and pre-split regexes run by PCRE2. Compared id for id with llama.cpp by
 * tests/model/test_tokenizer.c (SmolLM2's vocabulary under six pre-tokenizers and an SPM
 * vocabulary made from it); hand-worked cases in tests/unit/test_tokenizer_spm.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include "../common.h"
#include "gguf.h"

#include <limits.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TOK_MAX_REGEX = 4, TOK_MAX_EOG = 8 };

/* Pre-tokenizer regexes as llama.cpp's llm_tokenizer_bpe applies them, in sequence: each one
 * splits every piece left by the previous into matches and the gaps between them. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_HEAD \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct tok_pre_def {
    const char *names[8]; /* NULL-terminated aliases, as llama.cpp spells them */
    bool ignore_merges;   /* a word that is itself a token is emitted whole */
    const char *regex[TOK_MAX_REGEX + 1];
} tok_pre_def;

static const tok_pre_def tok_pre_defs[] = {
    {{"default", NULL}, false,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}},
    {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva", NULL}, false,
     {"\\p{N}", RE_GPT2, NULL}},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", NULL}, true,
     {RE_LLAMA3_HEAD "\\p{N}{1,3}|" RE_LLAMA3_TAIL, NULL}},
    {{"dbrx", "smaug-bpe", NULL}, false, {RE_LLAMA3_HEAD "\\p{N}{1,3}|" RE_LLAMA3_TAIL, NULL}},
    {{"qwen2", "deepseek-r1-qwen", "stablelm2", NULL}, false,
     {RE_LLAMA3_HEAD "\\p{N}|" RE_LLAMA3_TAIL, NULL}},
    {{"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", NULL}, false, {RE_GPT2, NULL}},
};

typedef struct tok_span { size_t off, len; } tok_span;
typedef struct tok_frag { int32_t id; size_t off, len; } tok_frag; /* id >= 0: special token */
typedef struct tok_sym { int32_t id, prev, next; uint32_t off, len; } tok_sym; /* len 0: merged away */
/* A candidate merge of two adjacent symbols; lower pri first (BPE rank, or -score for SPM), then
 * the leftmost. lid/rid are the ids the two symbols had when it was queued: a mismatch later
 * means one of them has grown and the candidate is stale. */
typedef struct tok_cand { double pri; int32_t left, right, lid, rid, res; } tok_cand;

/* Per-call working memory, grown as needed and kept between calls. */
typedef struct tok_scratch {
    tok_frag *frag[2]; size_t frag_cap[2];
    tok_span *span[2]; size_t span_cap[2];
    tok_sym *sym; size_t sym_cap;
    tok_cand *heap; size_t heap_cap;
    char *buf; size_t buf_cap;
    char *clean; size_t clean_cap;
    uint8_t *present; /* [n_special] whether each special token occurs in the text */
    pcre2_match_data *md;
} tok_scratch;

typedef struct tok_out { int32_t *ids; int cap; int64_t n; } tok_out;

/* Open-addressing map from a string of the symbol table to its id. */
typedef struct tok_strmap { int32_t *slot; uint64_t mask; } tok_strmap; /* slot: id or -1 */
/* Open-addressing map from an adjacent pair of symbol ids to (merge rank, merged id). */
typedef struct tok_pair { int32_t l, r, rank, res; } tok_pair;

struct okv_tokenizer {
    tok_kind kind;
    int n_vocab;
    /* Symbol table: ids [0, n_vocab) are the vocabulary; ids above are strings that occur only
     * inside merges (so every merge is a pair of ids, even in odd vocabularies). */
    int n_sym, sym_cap;
    char *pool; size_t pool_len, pool_cap; /* symbol text (byte-level form for BPE) */
    uint64_t *sym_off;                     /* [sym_cap] */
    uint32_t *sym_len;                     /* [sym_cap] */
    tok_strmap map;
    tok_pair *pairs; uint64_t pair_mask;   /* BPE only */
    int32_t byte_sym[256];                 /* BPE: symbol of each raw byte; SPM: byte token */
    char byte_text[256][2];                /* BPE: the GPT-2 character of each byte, UTF-8 */
    uint8_t byte_text_len[256];
    int32_t *types;                        /* [n_vocab] */
    float *scores;                         /* [n_vocab] */
    char *piece_pool; uint64_t *piece_off; /* [n_vocab + 1] decoded bytes of each token */
    int32_t *special; int n_special;       /* control/user/unknown ids, longest text first */
    int32_t *special_by_byte;              /* [n_special] indices into special, by first byte */
    int32_t special_first[257];            /* special_by_byte[special_first[b], ..[b + 1]) */
    pcre2_code *re[TOK_MAX_REGEX]; int n_re;
    bool ignore_merges;
    int32_t bos_id, eos_id, eot_id, unk_id;
    int32_t eog[TOK_MAX_EOG]; int n_eog;
    bool add_bos, add_eos, add_space_prefix;
    chat_kind chat;
    tok_scratch *scratch;
};

/* ---- GPT-2 byte <-> unicode map ----------------------------------------------------------- */

/* Bytes that are printable Latin-1 stand for themselves; the other 68 are moved to U+0100.. in
 * byte order so that every byte has a visible, non-space character. */
static bool byte_is_plain(unsigned b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
}

static uint32_t byte_to_cp(unsigned b) {
    if (byte_is_plain(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++) n += !byte_is_plain(i);
    return 256 + n;
}

static int cp_to_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

/* Length of the UTF-8 sequence starting with lead byte c, by its high nibble as llama.cpp
 * counts it (continuation bytes count as 1). */
static size_t utf8_len(unsigned char c) {
    static const uint8_t n[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return n[c >> 4];
}

/* Decode one well-formed UTF-8 sequence; returns its length, or 0 when malformed. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    size_t k = utf8_len(s[0]);
    if (k == 1) { *cp = s[0]; return s[0] < 0x80; }
    if (k > n) return 0;
    uint32_t v = s[0] & (0x7f >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 63);
    }
    *cp = v;
    return k;
}

/* ---- symbol table and maps ---------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(int32_t l, int32_t r) {
    uint64_t h = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 31);
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int32_t sym_find(const okv_tokenizer *t, const char *s, size_t n) {
    for (uint64_t i = hash_bytes(s, n) & t->map.mask;; i = (i + 1) & t->map.mask) {
        int32_t id = t->map.slot[i];
        if (id < 0) return -1;
        if (t->sym_len[id] == n && memcmp(t->pool + t->sym_off[id], s, n) == 0) return id;
    }
}

/* The id of string s, adding it to the symbol table when absent. The map was sized for the
 * worst case up front, so it never fills. */
static int32_t sym_intern(okv_tokenizer *t, const char *s, size_t n, bool *fail) {
    uint64_t i = hash_bytes(s, n) & t->map.mask;
    for (;; i = (i + 1) & t->map.mask) {
        int32_t id = t->map.slot[i];
        if (id < 0) break;
        if (t->sym_len[id] == n && memcmp(t->pool + t->sym_off[id], s, n) == 0) return id;
    }
    OKV_ASSERT(t->n_sym < t->sym_cap);
    if (t->pool_len + n + 1 > t->pool_cap) {
        size_t cap = OKV_MAX(t->pool_cap * 2, t->pool_len + n + 1);
        char *p = realloc(t->pool, cap);
        if (!p) { *fail = true; return -1; }
        t->pool = p;
        t->pool_cap = cap;
    }
    int32_t id = t->n_sym++;
    memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = 0;
    t->sym_off[id] = t->pool_len;
    t->sym_len[id] = (uint32_t)n;
    t->pool_len += n + 1;
    t->map.slot[i] = id;
    return id;
}

static const tok_pair *pair_find(const okv_tokenizer *t, int32_t l, int32_t r) {
    for (uint64_t i = hash_pair(l, r) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        const tok_pair *p = &t->pairs[i];
        if (p->l < 0) return NULL;
        if (p->l == l && p->r == r) return p;
    }
}

/* ---- construction ------------------------------------------------------------------------- */

static int tok_compile(okv_tokenizer *t, const char *const *rx, int n) {
    if (n > TOK_MAX_REGEX)
        return okv_fail(OKV_ERR_INPUT, "the pre-tokenizer has %d regexes; at most %d are supported",
                        n, TOK_MAX_REGEX);
    for (int i = 0; i < n; i++) {
        int err;
        PCRE2_SIZE at;
        /* MATCH_INVALID_UTF: what is still not UTF-8 after cleaning (encoded surrogates, which
         * llama.cpp lets through) never matches and falls into the gaps instead of failing. */
        t->re[i] = pcre2_compile((PCRE2_SPTR)rx[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            return okv_fail(OKV_ERR_INPUT, "pre-tokenizer regex '%s' does not compile at offset %zu: %s",
                            rx[i], (size_t)at, (const char *)msg);
        }
        t->n_re = i + 1;
        pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    }
    return OKV_OK;
}

static int tok_set_pre(okv_tokenizer *t, const tok_spec *s) {
    if (s->n_pre_regex > 0) return tok_compile(t, s->pre_regex, s->n_pre_regex);
    const char *name = s->pre && s->pre[0] ? s->pre : "default";
    for (size_t d = 0; d < sizeof tok_pre_defs / sizeof tok_pre_defs[0]; d++) {
        const tok_pre_def *def = &tok_pre_defs[d];
        for (int a = 0; def->names[a]; a++) {
            if (strcmp(def->names[a], name) != 0) continue;
            int n = 0;
            while (def->regex[n]) n++;
            t->ignore_merges |= def->ignore_merges;
            return tok_compile(t, def->regex, n);
        }
    }
    return okv_fail(OKV_ERR_INPUT,
                    "unknown pre-tokenizer '%s'; supported: smollm, llama-bpe/llama3, gpt2, qwen2, "
                    "starcoder, default and their llama.cpp aliases", name);
}

static int tok_build_merges(okv_tokenizer *t, const tok_spec *s) {
    t->pair_mask = pow2_at_least(2 * (uint64_t)s->n_merges + 2) - 1;
    t->pairs = malloc(sizeof(tok_pair) * (t->pair_mask + 1));
    if (!t->pairs) return okv_fail(OKV_ERR_NOMEM, "no memory for %d BPE merges", s->n_merges);
    for (uint64_t i = 0; i <= t->pair_mask; i++) t->pairs[i].l = -1;
    char *tmp = NULL;
    size_t tmp_cap = 0;
    bool fail = false;
    for (int m = 0; m < s->n_merges && !fail; m++) {
        const char *w = s->merges[m] ? s->merges[m] : "";
        size_t n = strlen(w);
        /* The separator is the first space after the first byte, so a merge may start with a
         * space; a merge without one can never apply (llama.cpp keys it as an empty pair). */
        const char *sp = n > 1 ? memchr(w + 1, ' ', n - 1) : NULL;
        if (!sp) continue;
        size_t nl = (size_t)(sp - w), nr = n - nl - 1;
        if (nl + nr > tmp_cap) {
            tmp_cap = 2 * (nl + nr);
            char *g = realloc(tmp, tmp_cap);
            if (!g) { fail = true; break; }
            tmp = g;
        }
        int32_t l = sym_intern(t, w, nl, &fail);
        int32_t r = sym_intern(t, sp + 1, nr, &fail);
        memcpy(tmp, w, nl);
        memcpy(tmp + nl, sp + 1, nr);
        int32_t res = sym_intern(t, tmp, nl + nr, &fail);
        if (fail) break;
        uint64_t i = hash_pair(l, r) & t->pair_mask;
        while (t->pairs[i].l >= 0 && !(t->pairs[i].l == l && t->pairs[i].r == r))
            i = (i + 1) & t->pair_mask;
        if (t->pairs[i].l < 0) t->pairs[i] = (tok_pair){l, r, m, res}; /* the first rank wins */
    }
    free(tmp);
    if (fail) return okv_fail(OKV_ERR_NOMEM, "no memory for the BPE merge table");
    return OKV_OK;
}

/* cp_byte: the inverse of byte_to_cp, -1 for characters that stand for no byte. */
static void piece_bpe(const int16_t *cp_byte, const char *s, size_t n, char *o, size_t *on) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (len && cp < 256 + 68 && cp_byte[cp] >= 0) {
            o[k++] = (char)cp_byte[cp];
            i += len;
        } else { /* not a byte-map character: kept as written */
            len = len ? len : 1;
            memcpy(o + k, s + i, len);
            k += len;
            i += len;
        }
    }
    *on = k;
}

static int byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The bytes each token stands for, worked out once so that decoding is a copy. */
static int tok_build_pieces(okv_tokenizer *t) {
    size_t total = 0;
    for (int i = 0; i < t->n_vocab; i++) total += t->sym_len[i];
    t->piece_pool = malloc(total + 1);
    t->piece_off = malloc(sizeof(uint64_t) * ((size_t)t->n_vocab + 1));
    if (!t->piece_pool || !t->piece_off)
        return okv_fail(OKV_ERR_NOMEM, "no memory for the %d token pieces", t->n_vocab);
    int16_t cp_byte[256 + 68];
    for (int i = 0; i < 256 + 68; i++) cp_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) cp_byte[byte_to_cp(b)] = (int16_t)b;
    uint64_t k = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        const char *s = t->pool + t->sym_off[i];
        size_t n = t->sym_len[i], on = 0;
        char *o = t->piece_pool + k;
        int ty = t->types[i];
        t->piece_off[i] = k;
        if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER || ty == TOK_TYPE_UNKNOWN) {
            memcpy(o, s, n);
            on = n;
        } else if (ty == TOK_TYPE_BYTE) {
            int v = byte_token_value(s, n);
            if (v >= 0) { o[0] = (char)v; on = 1; }
        } else if (ty == TOK_TYPE_NORMAL && t->kind == TOK_KIND_BPE) {
            piece_bpe(cp_byte, s, n, o, &on);
        } else if (ty == TOK_TYPE_NORMAL) { /* SPM: U+2581 stands for a space */
            for (size_t j = 0; j < n;) {
                if (j + 3 <= n && memcmp(s + j, "\xe2\x96\x81", 3) == 0) {
                    o[on++] = ' ';
                    j += 3;
                } else {
                    o[on++] = s[j++];
                }
            }
        } /* unused and undefined types decode to nothing, as in llama.cpp */
        k += on;
    }
    t->piece_off[t->n_vocab] = k;
    return OKV_OK;
}

typedef struct tok_len_id { uint32_t len; int32_t id; } tok_len_id;

static int cmp_longest_first(const void *a, const void *b) {
    const tok_len_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int tok_build_special(okv_tokenizer *t) {
    tok_len_id *li = malloc(sizeof(tok_len_id) * (size_t)t->n_vocab);
    t->special = malloc(sizeof(int32_t) * (size_t)t->n_vocab);
    t->special_by_byte = malloc(sizeof(int32_t) * (size_t)t->n_vocab);
    t->scratch->present = malloc((size_t)t->n_vocab);
    if (!li || !t->special || !t->special_by_byte || !t->scratch->present) {
        free(li);
        return okv_fail(OKV_ERR_NOMEM, "no memory for the special-token list");
    }
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        int ty = t->types[i];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER || ty == TOK_TYPE_UNKNOWN) && t->sym_len[i])
            li[n++] = (tok_len_id){t->sym_len[i], i};
    }
    /* Longest first, so that a special token containing another is split out before it. */
    qsort(li, (size_t)n, sizeof *li, cmp_longest_first);
    for (int i = 0; i < n; i++) t->special[i] = li[i].id;
    t->n_special = n;
    free(li);
    /* Bucket by first byte so one pass over a text finds which special tokens it contains. */
    int count[256] = {0};
    for (int i = 0; i < n; i++) count[(unsigned char)t->pool[t->sym_off[t->special[i]]]]++;
    t->special_first[0] = 0;
    for (int b = 0; b < 256; b++) t->special_first[b + 1] = t->special_first[b] + count[b];
    int fill[256];
    memcpy(fill, t->special_first, sizeof fill);
    for (int i = 0; i < n; i++) t->special_by_byte[fill[(unsigned char)t->pool[t->sym_off[t->special[i]]]]++] = i;
    return OKV_OK;
}

static void tok_add_eog(okv_tokenizer *t, int32_t id) {
    if (id < 0 || t->n_eog == TOK_MAX_EOG) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

static int check_id(const char *what, int32_t id, int n_vocab) {
    if (id < -1 || id >= n_vocab)
        return okv_fail(OKV_ERR_INPUT, "tokenizer %s %d is outside the %d-token vocabulary; fix "
                        "the model metadata", what, (int)id, n_vocab);
    return OKV_OK;
}

int tokenizer_init(okv_tokenizer **out, const tok_spec *s) {
    *out = NULL;
    if (s->kind != TOK_KIND_BPE && s->kind != TOK_KIND_SPM)
        return okv_fail(OKV_ERR_INPUT, "unknown tokenizer kind %d", (int)s->kind);
    if (s->n_vocab <= 0 || !s->tokens)
        return okv_fail(OKV_ERR_INPUT, "the tokenizer vocabulary is empty (n_vocab %d)", s->n_vocab);
    if (s->kind == TOK_KIND_BPE && s->n_merges > 0 && !s->merges)
        return okv_fail(OKV_ERR_INPUT, "the BPE vocabulary has %d merges but no merge list",
                        s->n_merges);
    int st;
    if ((st = check_id("bos id", s->bos_id, s->n_vocab)) || (st = check_id("eos id", s->eos_id, s->n_vocab)) ||
        (st = check_id("eot id", s->eot_id, s->n_vocab)) || (st = check_id("unk id", s->unk_id, s->n_vocab)) ||
        (st = check_id("pad id", s->pad_id, s->n_vocab)))
        return st;
    if ((s->add_bos && s->bos_id < 0) || (s->add_eos && s->eos_id < 0))
        return okv_fail(OKV_ERR_INPUT, "the tokenizer asks to add %s but has no such token",
                        s->add_bos && s->bos_id < 0 ? "BOS" : "EOS");

    okv_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return okv_fail(OKV_ERR_NOMEM, "no memory for the tokenizer");
    t->kind = s->kind;
    t->n_vocab = s->n_vocab;
    int64_t n_merges = s->kind == TOK_KIND_BPE ? OKV_MAX(s->n_merges, 0) : 0;
    if (s->n_vocab + 3 * n_merges > INT32_MAX) {
        free(t);
        return okv_fail(OKV_ERR_INPUT, "a vocabulary of %d tokens and %lld merges is too large", s->n_vocab,
                        (long long)n_merges);
    }
    t->sym_cap = (int)(s->n_vocab + 3 * n_merges);
    t->map.mask = pow2_at_least(2 * (uint64_t)t->sym_cap) - 1;
    t->map.slot = malloc(sizeof(int32_t) * (t->map.mask + 1));
    t->sym_off = malloc(sizeof(uint64_t) * (size_t)t->sym_cap);
    t->sym_len = malloc(sizeof(uint32_t) * (size_t)t->sym_cap);
    t->types = malloc(sizeof(int32_t) * (size_t)s->n_vocab);
    t->scores = calloc((size_t)s->n_vocab, sizeof(float));
    t->scratch = calloc(1, sizeof(tok_scratch));
    if (!t->map.slot || !t->sym_off || !t->sym_len || !t->types || !t->scores || !t->scratch) {
        tokenizer_free(t);
        return okv_fail(OKV_ERR_NOMEM, "no memory for a %d-token vocabulary", s->n_vocab);
    }
    memset(t->map.slot, 0xff, sizeof(int32_t) * (t->map.mask + 1));
    t->scratch->md = pcre2_match_data_create(1, NULL);

    /* Vocabulary strings first so that ids match; a repeated string maps to its last id, as
     * llama.cpp's token_to_id does, and empty strings are never looked up. */
    bool fail = !t->scratch->md;
    for (int i = 0; i < s->n_vocab && !fail; i++) {
        const char *w = s->tokens[i] ? s->tokens[i] : "";
        size_t n = s->token_lens ? s->token_lens[i] : strlen(w);
        t->types[i] = s->token_types ? s->token_types[i] : TOK_TYPE_NORMAL;
        if (s->scores) t->scores[i] = s->scores[i];
        if (t->pool_len + n + 1 > t->pool_cap) {
            size_t cap = OKV_MAX(t->pool_cap * 2, t->pool_len + n + 1 + (1u << 16));
            char *p = realloc(t->pool, cap);
            if (!p) { fail = true; break; }
            t->pool = p;
            t->pool_cap = cap;
        }
        memcpy(t->pool + t->pool_len, w, n);
        t->pool[t->pool_len + n] = 0;
        t->sym_off[i] = t->pool_len;
        t->sym_len[i] = (uint32_t)n;
        t->pool_len += n + 1;
        t->n_sym = i + 1;
        if (n == 0) continue;
        uint64_t h = hash_bytes(w, n) & t->map.mask;
        while (t->map.slot[h] >= 0 &&
               !(t->sym_len[t->map.slot[h]] == n && memcmp(t->pool + t->sym_off[t->map.slot[h]], w, n) == 0))
            h = (h + 1) & t->map.mask;
        t->map.slot[h] = i;
    }
    if (fail) {
        tokenizer_free(t);
        return okv_fail(OKV_ERR_NOMEM, "no memory for a %d-token vocabulary", s->n_vocab);
    }

    t->bos_id = s->bos_id; t->eos_id = s->eos_id; t->eot_id = s->eot_id;
    t->unk_id = s->unk_id;
    t->add_bos = s->add_bos; t->add_eos = s->add_eos; t->add_space_prefix = s->add_space_prefix;
    t->ignore_merges = s->ignore_merges;

    if (s->kind == TOK_KIND_BPE) {
        if ((st = tok_set_pre(t, s)) || (st = tok_build_merges(t, s))) {
            tokenizer_free(t);
            return st;
        }
        for (unsigned b = 0; b < 256; b++) {
            char e[4];
            int n = cp_to_utf8(byte_to_cp(b), e);
            memcpy(t->byte_text[b], e, 2); /* every GPT-2 character is below U+0800 */
            t->byte_text_len[b] = (uint8_t)n;
            t->byte_sym[b] = sym_find(t, e, (size_t)n);
        }
    } else {
        for (unsigned b = 0; b < 256; b++) {
            char hex[8], raw[1] = {(char)b};
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            int32_t id = sym_find(t, hex, 6);
            t->byte_sym[b] = id >= 0 ? id : sym_find(t, raw, 1);
        }
    }
    if ((st = tok_build_pieces(t)) || (st = tok_build_special(t))) {
        tokenizer_free(t);
        return st;
    }

    tok_add_eog(t, t->eos_id);
    tok_add_eog(t, t->eot_id);
    static const char *const eog_names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int32_t id = sym_find(t, eog_names[i], strlen(eog_names[i]));
        if (id >= 0 && id < t->n_vocab && t->types[id] == TOK_TYPE_CONTROL) tok_add_eog(t, id);
    }
    if (s->chat_template && strstr(s->chat_template, "<|im_start|>")) t->chat = CHAT_CHATML;
    else if (s->chat_template && strstr(s->chat_template, "<|start_header_id|>")) t->chat = CHAT_LLAMA3;
    *out = t;
    return OKV_OK;
}

void tokenizer_free(okv_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    if (t->scratch) {
        tok_scratch *w = t->scratch;
        for (int i = 0; i < 2; i++) { free(w->frag[i]); free(w->span[i]); }
        free(w->sym);
        free(w->heap);
        free(w->buf);
        free(w->clean);
        free(w->present);
        pcre2_match_data_free(w->md);
        free(w);
    }
    free(t->pool); free(t->sym_off); free(t->sym_len); free(t->map.slot); free(t->pairs);
    free(t->types); free(t->scores); free(t->piece_pool); free(t->piece_off); free(t->special);
    free(t->special_by_byte);
    free(t);
}

/* ---- GGUF --------------------------------------------------------------------------------- */

static char *str_dup(gguf_str s) {
    char *c = malloc(s.len + 1);
    if (c) {
        memcpy(c, s.ptr, s.len);
        c[s.len] = 0;
    }
    return c;
}

static int gguf_id(const struct gguf_file *f, const char *key, int32_t *id) {
    int64_t v;
    bool found = false;
    int st = gguf_get_i64(f, key, &v, &found);
    if (st) return st;
    if (found) {
        if (v < -1 || v > INT32_MAX)
            return okv_fail(OKV_ERR_INPUT, "GGUF key %s = %lld is not a token id", key, (long long)v);
        *id = (int32_t)v;
    }
    return OKV_OK;
}

/* A string array as C strings: pointers into one NUL-separated copy (*pool). */
static int gguf_str_array(const struct gguf_file *f, const char *key, bool required, char ***strs,
                          size_t **lens, char **pool, uint64_t *n) {
    const gguf_kv *kv = gguf_find(f, key);
    *n = 0;
    if (!kv) return required ? okv_fail(OKV_ERR_INPUT, "the model has no %s; it cannot be tokenized", key)
                             : OKV_OK;
    if (kv->type != GGUF_VT_ARRAY || kv->arr_type != GGUF_VT_STRING)
        return okv_fail(OKV_ERR_INPUT, "GGUF key %s is not an array of strings", key);
    if (kv->arr_n > INT32_MAX)
        return okv_fail(OKV_ERR_INPUT, "GGUF key %s has %llu entries; at most %d are supported", key,
                        (unsigned long long)kv->arr_n, INT32_MAX);
    gguf_str_iter it;
    size_t total = 0;
    gguf_str_iter_init(&it, kv);
    for (uint64_t i = 0; i < kv->arr_n; i++) total += gguf_str_iter_next(&it).len + 1;
    *strs = malloc(sizeof(char *) * (kv->arr_n + 1));
    *lens = malloc(sizeof(size_t) * (kv->arr_n + 1));
    *pool = malloc(total + 1);
    if (!*strs || !*lens || !*pool) return okv_fail(OKV_ERR_NOMEM, "no memory to read %s", key);
    size_t k = 0;
    gguf_str_iter_init(&it, kv);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        gguf_str s = gguf_str_iter_next(&it);
        memcpy(*pool + k, s.ptr, s.len);
        (*pool)[k + s.len] = 0;
        (*strs)[i] = *pool + k;
        (*lens)[i] = s.len;
        k += s.len + 1;
    }
    *n = kv->arr_n;
    return OKV_OK;
}

int tokenizer_init_gguf(okv_tokenizer **out, const struct gguf_file *f) {
    *out = NULL;
    tok_spec s = {0};
    char **tokens = NULL, **merges = NULL, *tok_pool = NULL, *merge_pool = NULL;
    size_t *tok_lens = NULL, *merge_lens = NULL;
    char *model = NULL, *pre = NULL, *tmpl = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    uint64_t n_tok = 0, n_merge = 0;
    gguf_str str;
    bool found;
    int st;

    if ((st = gguf_get_str(f, "tokenizer.ggml.model", &str, &found))) goto done;
    if (!found) {
        st = okv_fail(OKV_ERR_INPUT, "the model has no tokenizer.ggml.model; it cannot be tokenized");
        goto done;
    }
    if (!(model = str_dup(str))) goto nomem;
    if (strcmp(model, "gpt2") == 0) {
        s.kind = TOK_KIND_BPE;
        s.bos_id = s.eos_id = -1;
        s.unk_id = -1;
    } else if (strcmp(model, "llama") == 0) {
        s.kind = TOK_KIND_SPM;
        s.bos_id = 1; s.eos_id = 2; s.unk_id = 0; /* SentencePiece's defaults */
        s.add_bos = true;
        s.add_space_prefix = true;
    } else {
        st = okv_fail(OKV_ERR_INPUT, "tokenizer.ggml.model '%s' is not supported; use a model with "
                      "a 'gpt2' (byte-level BPE) or 'llama' (SentencePiece) tokenizer", model);
        goto done;
    }
    s.eot_id = s.pad_id = -1;

    if ((st = gguf_str_array(f, "tokenizer.ggml.tokens", true, &tokens, &tok_lens, &tok_pool, &n_tok)))
        goto done;
    if (n_tok == 0) {
        st = okv_fail(OKV_ERR_INPUT, "tokenizer.ggml.tokens is empty");
        goto done;
    }
    /* llama.cpp reads GGUF token strings as C strings; a NUL ends the token there too. */
    for (uint64_t i = 0; i < n_tok; i++) tok_lens[i] = strnlen(tokens[i], tok_lens[i]);
    s.n_vocab = (int)n_tok;
    s.tokens = (const char *const *)tokens;
    s.token_lens = tok_lens;

    gguf_vtype et;
    uint64_t n;
    const uint8_t *data;
    if ((st = gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &n, &data, &found))) goto done;
    if (found) {
        if (et != GGUF_VT_I32 || n < n_tok) {
            st = okv_fail(OKV_ERR_INPUT, "tokenizer.ggml.token_type must hold %llu int32 values",
                          (unsigned long long)n_tok);
            goto done;
        }
        if (!(types = malloc(sizeof(int32_t) * n_tok))) goto nomem;
        memcpy(types, data, sizeof(int32_t) * n_tok);
        s.token_types = types;
    }
    if ((st = gguf_get_arr(f, "tokenizer.ggml.scores", &et, &n, &data, &found))) goto done;
    if (found) {
        if ((et != GGUF_VT_F32 && et != GGUF_VT_I32) || n < n_tok) {
            st = okv_fail(OKV_ERR_INPUT, "tokenizer.ggml.scores must hold %llu float32 values",
                          (unsigned long long)n_tok);
            goto done;
        }
        if (!(scores = malloc(sizeof(float) * n_tok))) goto nomem;
        for (uint64_t i = 0; i < n_tok; i++) {
            int32_t iv;
            memcpy(et == GGUF_VT_F32 ? (void *)&scores[i] : (void *)&iv, data + 4 * i, 4);
            if (et == GGUF_VT_I32) scores[i] = (float)iv;
        }
        s.scores = scores;
    }
    if (s.kind == TOK_KIND_BPE) {
        if ((st = gguf_str_array(f, "tokenizer.ggml.merges", true, &merges, &merge_lens, &merge_pool,
                                 &n_merge)))
            goto done;
        s.n_merges = (int)n_merge;
        s.merges = (const char *const *)merges;
        if ((st = gguf_get_str(f, "tokenizer.ggml.pre", &str, &found))) goto done;
        if (found && !(pre = str_dup(str))) goto nomem;
        s.pre = pre;
        /* Llama-3 vocabularies add BOS unless the file says otherwise, as in llama.cpp. */
        if (pre && (!strcmp(pre, "llama3") || !strcmp(pre, "llama-v3") || !strcmp(pre, "llama-bpe") ||
                    !strcmp(pre, "falcon3")))
            s.add_bos = true;
    }

    if ((st = gguf_id(f, "tokenizer.ggml.bos_token_id", &s.bos_id)) ||
        (st = gguf_id(f, "tokenizer.ggml.eos_token_id", &s.eos_id)) ||
        (st = gguf_id(f, "tokenizer.ggml.eot_token_id", &s.eot_id)) ||
        (st = gguf_id(f, "tokenizer.ggml.unknown_token_id", &s.unk_id)) ||
        (st = gguf_id(f, "tokenizer.ggml.padding_token_id", &s.pad_id)))
        goto done;
    if (s.kind == TOK_KIND_SPM) { /* SentencePiece defaults that this vocabulary may not have */
        if (s.bos_id >= s.n_vocab) s.bos_id = -1;
        if (s.eos_id >= s.n_vocab) s.eos_id = -1;
        if (s.unk_id >= s.n_vocab) s.unk_id = -1;
    }
    if ((st = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &s.add_bos, &found)) ||
        (st = gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &s.add_eos, &found)) ||
        (st = gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &s.add_space_prefix, &found)))
        goto done;
    if ((st = gguf_get_str(f, "tokenizer.chat_template", &str, &found))) goto done;
    if (found && !(tmpl = str_dup(str))) goto nomem;
    s.chat_template = tmpl;

    st = tokenizer_init(out, &s);
    goto done;
nomem:
    st = okv_fail(OKV_ERR_NOMEM, "no memory to read the tokenizer from the model file");
done:
    free(tokens); free(tok_lens); free(tok_pool);
    free(merges); free(merge_lens); free(merge_pool);
    free(model); free(pre); free(tmpl); free(scores); free(types);
    return st;
}

/* ---- encoding ----------------------------------------------------------------------------- */

/* p grown to hold need elements of elem bytes. On failure the old block is released and *cap
 * reset, so the caller's pointer can simply take the NULL. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = OKV_MAX(OKV_MAX(need, *cap * 2), (size_t)64);
    void *g = realloc(p, c * elem);
    if (!g) {
        free(p);
        *cap = 0;
        return NULL;
    }
    *cap = c;
    return g;
}
#define GROW(arr, cap, need) (((arr) = grow((arr), &(cap), (need), sizeof *(arr))) != NULL)

static void out_push(tok_out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

static void heap_push(tok_cand *h, size_t *n, tok_cand c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].pri < c.pri || (h[p].pri == c.pri && h[p].left < c.left)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static tok_cand heap_pop(tok_cand *h, size_t *n) {
    tok_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && (h[c + 1].pri < h[c].pri || (h[c + 1].pri == h[c].pri && h[c + 1].left < h[c].left)))
            c++;
        if (last.pri < h[c].pri || (last.pri == h[c].pri && last.left < h[c].left)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* Queue the merge of symbols a and b if the vocabulary has one. text is the word being
 * merged (SPM looks its candidates up by their text). */
static void cand_push(const okv_tokenizer *t, tok_scratch *w, size_t *nh, const char *text, int32_t a,
                      int32_t b) {
    if (a < 0 || b < 0) return;
    const tok_sym *sa = &w->sym[a], *sb = &w->sym[b];
    tok_cand c = {.left = a, .right = b, .lid = sa->id, .rid = sb->id};
    if (t->kind == TOK_KIND_BPE) {
        if (sa->id < 0 || sb->id < 0) return;
        const tok_pair *p = pair_find(t, sa->id, sb->id);
        if (!p) return;
        c.pri = p->rank;
        c.res = p->res;
    } else {
        int32_t id = sym_find(t, text + sa->off, sa->len + sb->len);
        if (id < 0) return;
        c.pri = -(double)t->scores[id];
        c.res = id;
    }
    heap_push(w->heap, nh, c);
}

/* Merge the symbols of one word (already in w->sym, linked in order) until no queued merge
 * applies: the best candidate first, skipping candidates made stale by earlier merges. */
static void merge_word(const okv_tokenizer *t, tok_scratch *w, const char *text, int32_t n) {
    size_t nh = 0;
    for (int32_t i = 1; i < n; i++) cand_push(t, w, &nh, text, i - 1, i);
    while (nh) {
        tok_cand c = heap_pop(w->heap, &nh);
        tok_sym *l = &w->sym[c.left], *r = &w->sym[c.right];
        if (!l->len || !r->len || l->id != c.lid || r->id != c.rid) continue;
        l->id = c.res;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = c.left;
        cand_push(t, w, &nh, text, l->prev, c.left);
        cand_push(t, w, &nh, text, c.left, l->next);
    }
}

/* A BPE symbol that is not a vocabulary token: llama.cpp emits the single-byte tokens of its
 * byte-level text, skipping bytes that have none. */
static void bpe_emit_unknown(const okv_tokenizer *t, const char *s, size_t n, tok_out *o) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = sym_find(t, s + i, 1);
        if (id >= 0 && id < t->n_vocab) out_push(o, id);
    }
}

static int bpe_word(const okv_tokenizer *t, tok_scratch *w, const unsigned char *s, size_t n, tok_out *o) {
    if (n == 0) return OKV_OK;
    if (n > INT32_MAX / 2) return okv_fail(OKV_ERR_REQUEST, "a %zu-byte word is too long to encode", n);
    if (t->ignore_merges) {
        if (!GROW(w->buf, w->buf_cap, 2 * n)) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(w->buf + k, t->byte_text[s[i]], 2);
            k += t->byte_text_len[s[i]];
        }
        int32_t id = sym_find(t, w->buf, k);
        if (id >= 0 && id < t->n_vocab) {
            out_push(o, id);
            return OKV_OK;
        }
    }
    if (!GROW(w->sym, w->sym_cap, n) || !GROW(w->heap, w->heap_cap, 3 * n))
        return okv_fail(OKV_ERR_NOMEM, "no memory to encode a %zu-byte word", n);
    for (size_t i = 0; i < n; i++)
        w->sym[i] = (tok_sym){t->byte_sym[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, (uint32_t)i, 1};
    merge_word(t, w, NULL, (int32_t)n);
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        int32_t id = w->sym[i].id;
        if (id >= 0 && id < t->n_vocab) {
            out_push(o, id);
        } else if (id >= 0) {
            bpe_emit_unknown(t, t->pool + t->sym_off[id], t->sym_len[id], o);
        } else {
            unsigned char b = s[w->sym[i].off];
            bpe_emit_unknown(t, t->byte_text[b], t->byte_text_len[b], o);
        }
    }
    return OKV_OK;
}

/* Split [0, n) of s with each regex in turn; the pieces end up in w->span[*which][0, *n_out). */
static int pre_split(const okv_tokenizer *t, tok_scratch *w, const char *s, size_t n, int *which,
                     size_t *n_out) {
    int a = 0;
    size_t na = 1;
    if (!GROW(w->span[0], w->span_cap[0], 1)) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
    w->span[0][0] = (tok_span){0, n};
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
    for (int r = 0; r < t->n_re; r++) {
        int b = 1 - a;
        size_t nb = 0;
        for (size_t p = 0; p < na; p++) {
            tok_span in = w->span[a][p];
            /* The piece is the whole subject, so lookaheads like (?!\S) stop at its end. */
            const PCRE2_SPTR subj = (PCRE2_SPTR)(s + in.off);
            size_t pos = 0, last = 0;
            while (pos < in.len) {
                int rc = pcre2_match(t->re[r], subj, in.len, pos, 0, w->md, NULL);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(rc, msg, sizeof msg);
                    return okv_fail(OKV_ERR_REQUEST, "pre-tokenizer regex failed: %s", (const char *)msg);
                }
                size_t ms = ov[0], me = ov[1];
                if (me == ms) { /* an empty match splits nothing; step over one character */
                    pos = me + 1;
                    while (pos < in.len && (subj[pos] & 0xc0) == 0x80) pos++;
                    continue;
                }
                if (!GROW(w->span[b], w->span_cap[b], nb + 2))
                    return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
                if (ms > last) w->span[b][nb++] = (tok_span){in.off + last, ms - last};
                w->span[b][nb++] = (tok_span){in.off + ms, me - ms};
                last = pos = me;
            }
            if (last < in.len) {
                if (!GROW(w->span[b], w->span_cap[b], nb + 1))
                    return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
                w->span[b][nb++] = (tok_span){in.off + last, in.len - last};
            }
        }
        a = b;
        na = nb;
    }
    *which = a;
    *n_out = na;
    return OKV_OK;
}

/* One character as llama.cpp's unicode_cpt_from_utf8 reads it: the lead byte gives the length,
 * continuation bytes are checked, overlong forms and surrogates are accepted. Returns the bytes
 * used, or 0 for a byte that starts no character (it becomes U+FFFD). */
static size_t utf8_read_lenient(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t k = c < 0x80 ? 1 : !(c & 0x40) ? 0 : !(c & 0x20) ? 2 : !(c & 0x10) ? 3 : !(c & 0x08) ? 4 : 0;
    if (k == 0 || k > n) return 0;
    uint32_t v = k == 1 ? c : c & (0x7fu >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 63);
    }
    if (v > 0x10ffff) return 0; /* llama.cpp throws here; read it as not a character */
    *cp = v;
    return k;
}

/* The text as the byte-level tokenizer sees it: every character re-encoded in shortest form and
 * every stray byte replaced by U+FFFD, as llama.cpp does before pre-splitting. Returns s itself
 * when that changes nothing (the usual case), else a copy in w->clean. */
static const char *bpe_clean(tok_scratch *w, const char *s, size_t *n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, len = *n;
    uint32_t cp;
    char e[4];
    while (i < len) {
        size_t k = u[i] < 0x80 ? 1 : utf8_read_lenient(u + i, len - i, &cp);
        if (k == 0 || (k > 1 && (size_t)cp_to_utf8(cp, e) != k)) break;
        i += k;
    }
    if (i == len) return s;
    if (!GROW(w->clean, w->clean_cap, 3 * len)) return NULL;
    memcpy(w->clean, s, i);
    size_t o = i;
    while (i < len) {
        size_t k = utf8_read_lenient(u + i, len - i, &cp);
        if (k == 0) {
            cp = 0xfffd;
            k = 1;
        }
        o += (size_t)cp_to_utf8(cp, w->clean + o);
        i += k;
    }
    *n = o;
    return w->clean;
}

static int bpe_text(const okv_tokenizer *t, tok_scratch *w, const char *s, size_t n, tok_out *o) {
    int which = 0, st;
    size_t np = 0;
    if (!(s = bpe_clean(w, s, &n))) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
    if ((st = pre_split(t, w, s, n, &which, &np))) return st;
    for (size_t p = 0; p < np; p++) {
        tok_span sp = w->span[which][p];
        if ((st = bpe_word(t, w, (const unsigned char *)s + sp.off, sp.len, o))) return st;
    }
    return OKV_OK;
}

/* SentencePiece: spaces become U+2581 (with one in front when add_space_prefix asks for it),
 * characters are merged by score, and characters left without a token fall back to bytes. */
static int spm_text(const okv_tokenizer *t, tok_scratch *w, const char *s, size_t n, bool prefix,
                    tok_out *o) {
    if (n > INT32_MAX / 4) return okv_fail(OKV_ERR_REQUEST, "a %zu-byte text is too long to encode", n);
    if (!GROW(w->buf, w->buf_cap, 3 * (n + 1))) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
    size_t k = 0;
    if (prefix) { memcpy(w->buf, "\xe2\x96\x81", 3); k = 3; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(w->buf + k, "\xe2\x96\x81", 3); k += 3; }
        else w->buf[k++] = s[i];
    }
    if (k == 0) return OKV_OK;
    if (!GROW(w->sym, w->sym_cap, k) || !GROW(w->heap, w->heap_cap, 3 * k))
        return okv_fail(OKV_ERR_NOMEM, "no memory to encode a %zu-byte text", n);
    int32_t ns = 0;
    for (size_t i = 0; i < k;) {
        size_t len = OKV_MIN(utf8_len((unsigned char)w->buf[i]), k - i);
        w->sym[ns] = (tok_sym){sym_find(t, w->buf + i, len), ns - 1, i + len < k ? ns + 1 : -1, (uint32_t)i,
                               (uint32_t)len};
        ns++;
        i += len;
    }
    merge_word(t, w, w->buf, ns);
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const tok_sym *y = &w->sym[i];
        if (y->id >= 0) {
            out_push(o, y->id);
            continue;
        }
        for (uint32_t j = 0; j < y->len; j++) {
            int32_t id = t->byte_sym[(unsigned char)w->buf[y->off + j]];
            id = id >= 0 ? id : t->unk_id;
            if (id >= 0) out_push(o, id);
        }
    }
    return OKV_OK;
}

/* Cut the text at every occurrence of each special token, longest tokens first, as llama.cpp's
 * tokenizer_st_partition does. Control and unknown tokens count only with parse_special;
 * user-defined ones always. Leaves the fragments in w->frag[*which][0, *n_out). */
static int split_special(const okv_tokenizer *t, tok_scratch *w, const char *text, size_t len,
                         bool parse_special, int *which, size_t *n_out) {
    int a = 0;
    size_t na = 0;
    if (!GROW(w->frag[0], w->frag_cap[0], 1)) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
    if (len) w->frag[0][na++] = (tok_frag){-1, 0, len};
    /* Which special tokens occur at all; only those need a splitting pass. */
    memset(w->present, 0, (size_t)t->n_special);
    bool any = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        for (int j = t->special_first[c]; j < t->special_first[c + 1]; j++) {
            int k = t->special_by_byte[j];
            int32_t id = t->special[k];
            if (!w->present[k] && (parse_special || t->types[id] == TOK_TYPE_USER) && t->sym_len[id] <= len - i &&
                memcmp(text + i, t->pool + t->sym_off[id], t->sym_len[id]) == 0) {
                w->present[k] = 1;
                any = true;
            }
        }
    }
    for (int k = 0; any && k < t->n_special && na; k++) {
        int32_t id = t->special[k];
        if (!w->present[k]) continue;
        const char *tok = t->pool + t->sym_off[id];
        size_t tl = t->sym_len[id];
        int b = 1 - a;
        size_t nb = 0;
        for (size_t f = 0; f < na; f++) {
            tok_frag fr = w->frag[a][f];
            if (fr.id >= 0) {
                if (!GROW(w->frag[b], w->frag_cap[b], nb + 1)) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
                w->frag[b][nb++] = fr;
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *m = memmem(text + pos, end - pos, tok, tl);
                if (!GROW(w->frag[b], w->frag_cap[b], nb + 2)) return okv_fail(OKV_ERR_NOMEM, "no memory to encode");
                size_t at = m ? (size_t)(m - text) : end;
                if (at > pos) w->frag[b][nb++] = (tok_frag){-1, pos, at - pos};
                if (!m) break;
                w->frag[b][nb++] = (tok_frag){id, at, tl};
                pos = at + tl;
            }
        }
        a = b;
        na = nb;
    }
    *which = a;
    *n_out = na;
    return OKV_OK;
}

int tokenizer_encode(const okv_tokenizer *t, const char *text, size_t len, bool add_special,
                     bool parse_special, int32_t *out, int cap) {
    tok_scratch *w = t->scratch;
    tok_out o = {out, cap < 0 ? 0 : cap, 0};
    int which = 0, st = OKV_OK;
    size_t nf = 0;
    if ((st = split_special(t, w, text, len, parse_special, &which, &nf))) return -1;
    const tok_frag *fr = w->frag[which];
    /* A text that starts with the BOS token itself (a rendered Llama-3 chat) keeps that one. */
    if (add_special && t->add_bos && !(nf && fr[0].id == t->bos_id)) out_push(&o, t->bos_id);
    bool prev_special = true;
    for (size_t f = 0; f < nf && !st; f++) {
        if (fr[f].id >= 0) {
            out_push(&o, fr[f].id);
            prev_special = true;
            continue;
        }
        if (t->kind == TOK_KIND_BPE) st = bpe_text(t, w, text + fr[f].off, fr[f].len, &o);
        else st = spm_text(t, w, text + fr[f].off, fr[f].len, t->add_space_prefix && prev_special, &o);
        prev_special = false;
    }
    if (st) return -1;
    if (add_special && t->add_eos) out_push(&o, t->eos_id);
    if (o.n > INT_MAX) {
        okv_fail(OKV_ERR_REQUEST, "the text encodes to %lld tokens, more than %d", (long long)o.n, INT_MAX);
        return -1;
    }
    return (int)o.n;
}

/* ---- decoding and queries ----------------------------------------------------------------- */

int tokenizer_piece(const okv_tokenizer *t, int32_t id, bool show_special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) {
        okv_fail(OKV_ERR_REQUEST, "token id %d is outside the %d-token vocabulary", (int)id, t->n_vocab);
        return -1;
    }
    int ty = t->types[id];
    if (!show_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) return 0;
    size_t n = t->piece_off[id + 1] - t->piece_off[id];
    if (n > cap) return -1;
    memcpy(buf, t->piece_pool + t->piece_off[id], n);
    return (int)n;
}

int tokenizer_n_vocab(const okv_tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const okv_tokenizer *t) { return t->bos_id; }
int32_t tokenizer_eos(const okv_tokenizer *t) { return t->eos_id; }
chat_kind tokenizer_chat_kind(const okv_tokenizer *t) { return t->chat; }

bool tokenizer_is_eog(const okv_tokenizer *t, int32_t id) {
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}
