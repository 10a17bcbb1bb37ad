/* genmodel.h — synthetic Llama-family models for tests and throughput studies: named shapes and a
 * GGUF writer with llama metadata, a self-contained byte-level BPE tokenizer and seeded random
 * weights streamed to disk. Tested by tests/unit/test_gguf.c. */
#ifndef OKV_GENMODEL_H
#define OKV_GENMODEL_H

#include "../../kernels/types.h"
#include "model.h"

#include <stdint.h>

/* Fills cfg with a named shape: tiny, tiny-k, smollm2-135m, llama3-8b, yi-9b, llama3.1-70b. Returns
 * OKV_OK, or OKV_ERR_USAGE naming the known shapes. */
int genmodel_shape(const char *name, okv_model_config *cfg);
const char *const *genmodel_shape_names(int *n);

/* Writes a GGUF v3 file of the shape (n_layers_override > 0 replaces its layer count) with
 * weights in `type` (any okv_type_is_weight type; norms are always f32) from seed; a tensor
 * whose rows are not whole blocks of `type` is written in the type genmodel_tensor_type gives.
 * Metadata: general.* and the llama.* hyperparameters; llama3 rope scaling is written as real
 * Llama-3.1 GGUFs carry it: no llama.rope.scaling.* keys, but the f32 tensor rope_freqs.weight
 * [head_dim/2] of per-frequency divisors. Tokenizer (tokenizer.ggml.model "gpt2", pre "gpt2"):
 * ids 0..2 <|endoftext|> (bos = eos), <|im_start|>, <|im_end|> (CONTROL), 3..258 the byte
 * tokens, then BPE merges learnt from a built-in English text, then <unused_N> fillers (UNUSED),
 * and a ChatML chat_template. Tensors as llama.cpp names and lays them out (token_embd,
 * blk.N.attn_norm/attn_q/attn_k/attn_v/attn_output/ffn_norm/ffn_gate/ffn_up/ffn_down,
 * output_norm, output when untied; linear weights ne = [n_in, n_out]), generated and written a
 * few MiB at a time, so memory stays small whatever the shape.
 * Returns OKV_OK, OKV_ERR_USAGE (unknown shape or type) or OKV_ERR_INPUT (cannot write). */
int genmodel_write(const char *path, const char *shape, int n_layers_override, okv_type type,
                   uint64_t seed);

/* The type genmodel_write stores a tensor of rows of ne0 in when asked for `type`: type itself
 * when ne0 is a multiple of its block, else q8_0 (or f16 when ne0 is not a multiple of 32). As
 * with llama.cpp's quantizer this applies to the K-quants' 256-element super-blocks (llama.cpp
 * picks q5_0/q5_1/iq4_nl/q8_0 there; q8_0 is the one every build reads). */
okv_type genmodel_tensor_type(okv_type type, int64_t ne0);

/* The f32 values genmodel_write stores (before conversion to its type) for elements
 * [first, first+n) of tensor `name`, row-major: a counter-based splitmix64 stream keyed by
 * (seed, name), so any element is reproducible alone and the same on every machine. Names ending
 * in "_norm.weight" get 1 + 0.1u (u uniform in [-1, 1)); others a bell-shaped, N(0, 0.02)-like
 * value (a scaled sum of four uniforms). */
void genmodel_values(uint64_t seed, const char *name, int64_t first, int64_t n, float *out);

#endif
