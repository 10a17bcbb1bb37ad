/* hf.h — the layout change hf.c applies to HF attention weights (and model.c to the Q/K tensors
 * of NEOX-RoPE GGUF files such as qwen2), exposed for its unit test
 * (tests/unit/test_safetensors.c compares it with a hand-computed example). */
#ifndef OKV_HF_H
#define OKV_HF_H

#include <stddef.h>
#include <stdint.h>

/* HF rotates the two halves of each head (rotate-half); the kernels rotate adjacent pairs (GGUF).
 * Row r = h*hd + 2i + j of dst is row h*hd + j*hd/2 + i of src (hd = n_rows / n_heads), the
 * reshape(n_heads, 2, hd/2, n_in).swapaxes(1, 2) of llama.cpp's converter. Rows are copied
 * whole, so any element type works; biases are rows of one element. */
void hf_permute_rows(void *dst, const void *src, int64_t n_rows, size_t row_bytes, int n_heads);
/* The source row of destination row r under that permutation. */
int64_t hf_permuted_source(int64_t r, int64_t n_rows, int n_heads);

#endif
