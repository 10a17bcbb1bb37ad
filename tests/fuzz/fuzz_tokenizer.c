/* fuzz_tokenizer.c — libFuzzer target for the byte-level BPE tokenizer of the default model
 * (SmolLM2's, read from its GGUF in the cache): any bytes encode without error into ids of the
 * vocabulary, and valid UTF-8 comes back when the ids' pieces are concatenated, byte for byte,
 * less the bytes that have no token of their own. That is the byte-level BPE's own guarantee, an
 * oracle independent of how the merges were applied: SmolLM2's vocabulary lacks a few control
 * bytes (0x04 among them), and Hugging Face's tokenizer drops those too rather than mapping them
 * to an unknown token. Text that is not UTF-8 only has to encode (stray bytes become U+FFFD, as in
 * llama.cpp). */
#include "../test_util.h"
#include "common.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static gguf_file g_file;
static okv_tokenizer *g_tok;
static bool g_has_byte[256]; /* whether byte b is a token's whole text */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[1024];
    test_model_path(path, sizeof path);
    if (gguf_open(&g_file, path) != OKV_OK || tokenizer_init_gguf(&g_tok, &g_file) != OKV_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load the tokenizer of %s: %s\n", path, okv_last_error());
        exit(1);
    }
    int missing = 0;
    for (int32_t id = 0; id < tokenizer_n_vocab(g_tok); id++) {
        char piece[8];
        if (tokenizer_piece(g_tok, id, true, piece, sizeof piece) == 1) g_has_byte[(uint8_t)piece[0]] = true;
    }
    for (int b = 0; b < 256; b++) missing += !g_has_byte[b];
    fprintf(stderr, "fuzz_tokenizer: %d of 256 bytes have no token of their own\n", missing);
    return 0;
}

/* Whether s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || i + len > n) return false;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

/* Says which property broke before libFuzzer records the input. */
static void broken(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_tokenizer: %s%s\n", what, detail ? detail : "");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* long inputs add time, not paths */
    const char *text = (const char *)data;
    int cap = (int)size + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) abort();
    int n = tokenizer_encode(g_tok, text, size, false, false, ids, cap);
    if (n < 0) broken("encode failed: ", okv_last_error());
    if (n > cap) broken("more ids than bytes", NULL); /* byte-level BPE never needs more */
    const int V = tokenizer_n_vocab(g_tok);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) broken("an id outside the vocabulary", NULL);
    if (utf8_valid(data, size)) {
        char *back = malloc(size + 64);
        if (!back) abort();
        size_t len = 0;
        for (int i = 0; i < n; i++) {
            int w = tokenizer_piece(g_tok, ids[i], true, back + len, size + 64 - len);
            if (w < 0) broken("a piece does not fit the text's length", NULL);
            len += (size_t)w;
        }
        size_t kept = 0; /* the text without the bytes that have no token */
        char *want = malloc(size + 1);
        if (!want) abort();
        for (size_t i = 0; i < size; i++)
            if (g_has_byte[data[i]]) want[kept++] = (char)data[i];
        if (len != kept || (kept && memcmp(back, want, kept)))
            broken("decode(encode(text)) is not the text less its bytes without a token", NULL);
        free(want);
        free(back);
    }
    free(ids);
    return 0;
}
