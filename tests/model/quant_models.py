"""Models for checking quantized weights against llama.cpp (jobs/bench_quants.sh).

usage: quant_models.py quantize SRC.gguf OUT.gguf FTYPE   requantize with llama.cpp's own quantizer
                                                         (FTYPE: Q4_K_M, Q5_K_M, Q6_K, Q3_K_M,
                                                         Q2_K, Q5_0, ... as llama.cpp names them)
       quant_models.py stack VOCAB.gguf OUT.gguf [N]     an 8B-shaped stack of N (2) Llama layers
                                                         in F16 (dim 4096, ffn 14336, 32/8 heads
                                                         of 128), so that every tensor's rows are
                                                         a multiple of 256 and llama.cpp's
                                                         quantizer uses the K-quants everywhere;
                                                         the tokenizer (and so the small vocab) is
                                                         copied from VOCAB.gguf (a `gen-model
                                                         --shape tiny` file)

Weights are random: N(0, 0.02)-like for matrices, 1 + 0.1u for norms, from a fixed seed, so the
file is the same on every machine. Written with the gguf package's writer, as llama.cpp's own
converter writes files."""
import sys

import numpy as np


def quantize(src, out, ftype):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype)
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize({src}, {ftype}) failed with {rc}")


def stack(vocab_path, out, n_layers="2"):
    import gguf
    dim, ffn, n_head, n_kv, hd, n_layers = 4096, 14336, 32, 8, 128, int(n_layers)
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = int(reader.fields["llama.vocab_size"].parts[-1][0])
    w = gguf.GGUFWriter(out, "llama")
    w.add_name(f"llama3-8b-shaped stack of {n_layers} layers")
    w.add_context_length(8192)
    w.add_embedding_length(dim)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = field.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                vals = [field.parts[i][0].item() for i in field.data]
            w.add_array(name, vals)
        elif t == gguf.GGUFValueType.STRING:
            value = bytes(field.parts[-1]).decode("utf-8")
            # llama.cpp knows GPT-2's pre-tokenizer as "gpt-2" or "olmo", not gen-model's "gpt2"
            # (omnikv reads all three alike)
            w.add_string(name, "olmo" if name == "tokenizer.ggml.pre" and value == "gpt2" else value)
        elif t == gguf.GGUFValueType.UINT32:
            w.add_uint32(name, int(field.parts[-1][0]))
        elif t == gguf.GGUFValueType.BOOL:
            w.add_bool(name, bool(field.parts[-1][0]))
        else:
            sys.exit(f"unexpected tokenizer key type {t} for {name}")
    rng = np.random.default_rng(20261204)

    def mat(n_out, n_in):  # stored [n_out][n_in]: GGUF ne = [n_in, n_out]
        return (rng.standard_normal((n_out, n_in), dtype=np.float32) * 0.02).astype(np.float16)

    def norm():
        return (1.0 + 0.1 * rng.uniform(-1, 1, dim)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, dim))
    for l in range(n_layers):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", norm())
        w.add_tensor(p + "attn_q.weight", mat(n_head * hd, dim))
        w.add_tensor(p + "attn_k.weight", mat(n_kv * hd, dim))
        w.add_tensor(p + "attn_v.weight", mat(n_kv * hd, dim))
        w.add_tensor(p + "attn_output.weight", mat(dim, n_head * hd))
        w.add_tensor(p + "ffn_norm.weight", norm())
        w.add_tensor(p + "ffn_gate.weight", mat(ffn, dim))
        w.add_tensor(p + "ffn_up.weight", mat(ffn, dim))
        w.add_tensor(p + "ffn_down.weight", mat(dim, ffn))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", mat(n_vocab, dim))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "quantize":
        quantize(*sys.argv[2:])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "stack":
        stack(*sys.argv[2:])
    else:
        sys.exit(__doc__)
