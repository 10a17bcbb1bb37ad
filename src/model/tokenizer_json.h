/* tokenizer_json.h — a tok_spec from a Hugging Face tokenizer.json (+ tokenizer_config.json and
 * chat_template.jinja). Tested by tests/unit/test_tokenizer_json.c (field mapping on small files)
 * and tests/model/test_tokenizer_json.c (ids equal to the `tokenizers` package on SmolLM2).
 *
 * What is read:
 *   model: type "BPE"; vocab {token: id}; merges ["a b", ...] or [["a", "b"], ...];
 *          unk_token; byte_fallback (tokens <0xNN> become BYTE tokens)
 *   added_tokens: [{id, content, special}]: special -> CONTROL, else USER_DEFINED
 *   pre_tokenizer: ByteLevel (use_regex -> the GPT-2 split), Split {pattern {Regex|String},
 *          behavior Isolated, invert false}, Digits, Metaspace, or a Sequence of these
 *   normalizer: null; NFC (applied as identity: input text is taken to be NFC already);
 *          Prepend "▁" / Replace " " -> "▁" (Llama-2 style: SentencePiece-like settings)
 *   decoder: ByteLevel, or the SentencePiece-style Replace/ByteFallback/Fuse/Strip/Metaspace
 *   post_processor: TemplateProcessing (possibly inside a Sequence) -> add_bos/add_eos defaults
 *   tokenizer_config.json: bos/eos/unk/pad_token (string or {content}), add_bos_token,
 *          add_eos_token, chat_template (string, or [{name, template}] -> "default") */
#ifndef OKV_TOKENIZER_JSON_H
#define OKV_TOKENIZER_JSON_H

#include "tokenizer.h"

typedef struct tok_json {
    tok_spec spec;       /* points into the storage below */
    struct cJSON *root;  /* tokenizer.json; vocabulary strings point into it */
    const char **tokens; /* [spec.n_vocab] */
    int32_t *types;      /* [spec.n_vocab] */
    float *scores;       /* [spec.n_vocab] (SentencePiece-style only) */
    const char **merges; /* [spec.n_merges] */
    char *merge_text;    /* "a b" strings built from pair-form merges */
    char **pre_regex;    /* [spec.n_pre_regex] */
    char **pads;         /* "[PAD<id>]" names of ids no token uses */
    int n_pads;
    char *chat_template;
} tok_json;

/* Reads dir/tokenizer.json and the optional dir/tokenizer_config.json and dir/chat_template.jinja.
 * The vocabulary is padded with unused "[PAD<id>]" tokens to at least n_vocab_min (the model's
 * embedding rows). OKV_OK, or OKV_ERR_INPUT naming the file, the field and the value. */
int tok_json_parse(tok_json *tj, const char *dir, int n_vocab_min);
void tok_json_free(tok_json *tj); /* safe on a zeroed or half-parsed struct */

/* tok_json_parse + tokenizer_init. */
int tokenizer_init_json(okv_tokenizer **t, const char *dir, int n_vocab_min);

#endif
