/* fuzz_safetensors.c — libFuzzer target over the safetensors header parser (st_open_mem): any
 * input is either rejected with a message or yields tensors whose every byte lies inside the
 * buffer, which the target touches so that ASan sees any overrun. Built with -DOMNIKV_FUZZ=ON. */
#include "common.h"
#include "model/safetensors.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    int st = st_open_mem(&f, data, size, "fuzz.safetensors");
    if (st == OKV_OK) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            OKV_ASSERT(t->begin <= t->end && t->end <= f.data_size);
            OKV_ASSERT(st_find(&f, t->name) == t);
            if (t->end > t->begin) {
                const uint8_t *p = t->data;
                sink ^= p[0] ^ p[t->end - t->begin - 1];
            }
        }
        (void)sink;
    } else {
        OKV_ASSERT(st == OKV_ERR_INPUT && strstr(okv_last_error(), "fuzz.safetensors"));
    }
    st_close(&f);
    return 0;
}
