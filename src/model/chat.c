/* chat.c — renders a conversation the way the model's chat template does, for the two template
 * families the tokenizer recognises (ChatML as in SmolLM2, Llama-3). Tested against hand-written
 * renderings by tests/unit/test_chat.c. */
#include "tokenizer.h"

#include "../common.h"

#include <stdlib.h>
#include <string.h>

typedef struct chat_buf { char *p; size_t n, cap; bool oom; } chat_buf;

static void put(chat_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = OKV_MAX(2 * b->cap, b->n + n + 1);
        char *g = realloc(b->p, cap);
        if (!g) {
            b->oom = true;
            return;
        }
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(chat_buf *b, const char *s) { put(b, s, strlen(s)); }

static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* SmolLM2's template:
 *   {% if loop.first and messages[0]['role'] != 'system' %}<|im_start|>system\n
 *   You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n{% endif %}
 *   <|im_start|>{{role}}\n{{content}}<|im_end|>\n ... {% if add_generation_prompt %}
 *   <|im_start|>assistant\n{% endif %} */
static void render_chatml(chat_buf *b, const chat_msg *m, int n, bool gen) {
    for (int i = 0; i < n; i++) {
        if (i == 0 && strcmp(m[0].role, "system") != 0)
            puts_(b, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                     "Hugging Face<|im_end|>\n");
        puts_(b, "<|im_start|>");
        puts_(b, m[i].role);
        puts_(b, "\n");
        puts_(b, m[i].content);
        puts_(b, "<|im_end|>\n");
    }
    if (gen) puts_(b, "<|im_start|>assistant\n");
}

/* Llama-3's template: bos_token, then per message
 *   <|start_header_id|>{{role}}<|end_header_id|>\n\n{{content | trim}}<|eot_id|>
 * and, for a generation prompt, an open assistant header. The text starts with
 * <|begin_of_text|> as the template's does; tokenizer_encode does not add a second one. */
static void render_llama3(chat_buf *b, const chat_msg *m, int n, bool gen) {
    puts_(b, "<|begin_of_text|>");
    for (int i = 0; i < n; i++) {
        const char *c = m[i].content, *e = c + strlen(c);
        while (c < e && is_space(*c)) c++;
        while (e > c && is_space(e[-1])) e--;
        puts_(b, "<|start_header_id|>");
        puts_(b, m[i].role);
        puts_(b, "<|end_header_id|>\n\n");
        put(b, c, (size_t)(e - c));
        puts_(b, "<|eot_id|>");
    }
    if (gen) puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

char *chat_render(chat_kind kind, const chat_msg *msgs, int n, bool add_generation_prompt) {
    if (kind != CHAT_CHATML && kind != CHAT_LLAMA3) {
        okv_fail(OKV_ERR_USAGE, "the model's chat template is not one omnikv can render (ChatML or "
                 "Llama-3); send a plain prompt instead of chat messages");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) {
            okv_fail(OKV_ERR_REQUEST, "chat message %d has no %s", i, msgs[i].role ? "content" : "role");
            return NULL;
        }
    chat_buf b = {0};
    put(&b, "", 0);
    if (kind == CHAT_CHATML) render_chatml(&b, msgs, n, add_generation_prompt);
    else render_llama3(&b, msgs, n, add_generation_prompt);
    if (b.oom) {
        free(b.p);
        okv_fail(OKV_ERR_NOMEM, "no memory to render a %d-message chat", n);
        return NULL;
    }
    return b.p;
}
