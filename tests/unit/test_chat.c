/* test_chat.c — chat_render against renderings written out by hand from the SmolLM2 (ChatML)
 * and Llama-3 templates: default system message, generation prompt, content trimming, errors. */
#include "model/tokenizer.h"
#include "common.h"
#include "../test_util.h"

#include <stdlib.h>
#include <string.h>

static void expect_render(chat_kind kind, const chat_msg *m, int n, bool gen, const char *want) {
    char *got = chat_render(kind, m, n, gen);
    TEST_CHECK(got && strcmp(got, want) == 0, "kind %d, %d messages, gen %d:\n got: %s\nwant: %s", (int)kind, n,
               gen, got ? got : okv_last_error(), want);
    free(got);
}

int main(void) {
    okv_log_init(0);
    const chat_msg user_only[] = {{"user", "Hi!"}};
    const chat_msg with_sys[] = {{"system", "Be brief."}, {"user", "Hi!"}, {"assistant", "Hello."},
                                 {"user", "  Bye \n"}};

    expect_render(CHAT_CHATML, user_only, 1, true,
                  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                  "<|im_start|>user\nHi!<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(CHAT_CHATML, with_sys, 4, false,
                  "<|im_start|>system\nBe brief.<|im_end|>\n"
                  "<|im_start|>user\nHi!<|im_end|>\n"
                  "<|im_start|>assistant\nHello.<|im_end|>\n"
                  "<|im_start|>user\n  Bye \n<|im_end|>\n");
    /* No messages: the template's loop never runs, so there is no default system message. */
    expect_render(CHAT_CHATML, NULL, 0, true, "<|im_start|>assistant\n");

    expect_render(CHAT_LLAMA3, with_sys, 4, true,
                  "<|begin_of_text|>"
                  "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(CHAT_LLAMA3, user_only, 1, false,
                  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>");

    TEST_CHECK(!chat_render(CHAT_NONE, user_only, 1, true) && strstr(okv_last_error(), "template"),
               "CHAT_NONE must fail with a message");
    const chat_msg no_content[] = {{"user", NULL}};
    TEST_CHECK(!chat_render(CHAT_CHATML, no_content, 1, true) && strstr(okv_last_error(), "content"),
               "a message without content must fail");
    printf("chat: ChatML (default system, generation prompt), Llama-3 (BOS, trim), errors\n");
    return test_summary();
}
