/* tokenizer.h — byte-level BPE (GPT-2 / Llama-3 / SmolLM2 styles) and SentencePiece-style BPE
 * (Llama-2), built from GGUF metadata or from tokenizer.json; pre-split regexes run by PCRE2
 * (UTF + UCP). Tested id for id against llama.cpp on the real SmolLM2 vocabulary (and copies of
 * it with other pre-tokenizers) by tests/model/test_tokenizer.c; SPM by
 * tests/unit/test_tokenizer_spm.c, chat rendering by tests/unit/test_chat.c. */
#ifndef OKV_TOKENIZER_H
#define OKV_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_file;

typedef enum tok_kind { TOK_KIND_BPE = 1, TOK_KIND_SPM = 2 } tok_kind;
typedef enum chat_kind { CHAT_NONE = 0, CHAT_CHATML = 1, CHAT_LLAMA3 = 2 } chat_kind;

/* Token types as in GGUF tokenizer.ggml.token_type. */
enum { TOK_TYPE_NORMAL = 1, TOK_TYPE_UNKNOWN = 2, TOK_TYPE_CONTROL = 3, TOK_TYPE_USER = 4,
       TOK_TYPE_UNUSED = 5, TOK_TYPE_BYTE = 6 };

/* What a vocabulary source (GGUF metadata or tokenizer.json) provides; tokenizer_init copies it. */
typedef struct tok_spec {
    tok_kind kind;
    int n_vocab;
    const char *const *tokens;   /* [n_vocab] UTF-8 (byte-level: the GPT-2 byte-to-unicode map) */
    const size_t *token_lens;    /* [n_vocab] or NULL for NUL-terminated */
    const int32_t *token_types;  /* [n_vocab] or NULL (all normal) */
    const float *scores;         /* [n_vocab] (SPM) or NULL */
    int n_merges;
    const char *const *merges;   /* [n_merges] "left right" in rank order (BPE) */
    const char *pre;             /* pre-tokenizer name: "smollm", "llama-bpe", "gpt2", "default", ... */
    int n_pre_regex;             /* explicit pre-split regexes (tokenizer.json); overrides pre */
    const char *const *pre_regex;
    bool ignore_merges;          /* BPE: a pre-split word that is a token is not merged (Llama-3;
                                    also implied by the llama3/llama-bpe pre names) */
    int32_t bos_id, eos_id, eot_id, unk_id, pad_id; /* -1 when absent */
    bool add_bos, add_eos, add_space_prefix;
    const char *chat_template;   /* Jinja source or NULL */
} tok_spec;

typedef struct okv_tokenizer okv_tokenizer; /* opaque */

int tokenizer_init(okv_tokenizer **t, const tok_spec *spec); /* OKV_OK or error status */
int tokenizer_init_gguf(okv_tokenizer **t, const struct gguf_file *f);
void tokenizer_free(okv_tokenizer *t); /* NULL-safe */

/* Encode text. add_special: prepend BOS when the vocabulary says so (and append EOS likewise),
 * except that a text starting with the BOS token string already parsed as BOS (a rendered
 * Llama-3 chat) keeps just that one. parse_special: recognise control token strings like
 * "<|im_start|>" in text (user-defined tokens are always recognised, as in llama.cpp).
 * Byte-level BPE reads text that is not UTF-8 as llama.cpp does (stray bytes become U+FFFD).
 * Not thread-safe: one tokenizer keeps its working memory between calls, so concurrent callers
 * need a tokenizer each. Writes at most cap ids; returns the total count needed (may exceed
 * cap), or -1 on error with okv_last_error set. */
int tokenizer_encode(const okv_tokenizer *t, const char *text, size_t len, bool add_special,
                     bool parse_special, int32_t *out, int cap);
/* Append the text of token id to buf (byte-level decoding / SPM '▁' -> ' ' and <0xNN> bytes).
 * Control tokens decode to "" unless show_special. Returns bytes written (may be a partial UTF-8
 * sequence; concatenation of pieces is the exact text). -1 if it does not fit or id is not in
 * the vocabulary. No allocation: pieces are decoded once at init. */
int tokenizer_piece(const okv_tokenizer *t, int32_t id, bool show_special, char *buf, size_t cap);

int tokenizer_n_vocab(const okv_tokenizer *t);
int32_t tokenizer_bos(const okv_tokenizer *t);
int32_t tokenizer_eos(const okv_tokenizer *t);
/* Tokens that end generation: EOS, EOT and the template's end-of-turn (<|im_end|>, <|eot_id|>). */
bool tokenizer_is_eog(const okv_tokenizer *t, int32_t id);
chat_kind tokenizer_chat_kind(const okv_tokenizer *t); /* recognised from the template text */

typedef struct chat_msg { const char *role; const char *content; } chat_msg;
/* Render messages with the template kind and, if add_generation_prompt, the assistant header.
 * ChatML adds SmolLM2's default system message when the first message is not a system one,
 * exactly as its template does. Llama-3 starts with "<|begin_of_text|>" as its template does
 * (and trims each content); encode the result with parse_special, and add_special adds no
 * second BOS. Returns a malloc'd string or NULL with okv_last_error set. */
char *chat_render(chat_kind kind, const chat_msg *msgs, int n, bool add_generation_prompt);

#endif
