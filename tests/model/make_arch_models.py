#!/usr/bin/env python3
"""make_arch_models.py - tiny random-weight models of the architectures GGUF files carry besides
SmolLM2's Llama, each written with the same F32 weights as a GGUF file the way llama.cpp's
convert_hf_to_gguf.py writes it (gguf.GGUFWriter, llama.cpp's tensor names and metadata keys,
Q/K rows permuted for `llama`, not for `qwen2`) and, where the vocabulary is SmolLM2's own, as a
Hugging Face directory (config.json, model.safetensors in HF's layout, SmolLM2's tokenizer
files); then llama.cpp's logits and greedy tokens on the GGUF for a few prompts. tests/model/test_arch_llamacpp.c runs omnikv on both and
demands llama.cpp's logits and tokens.

usage: make_arch_models.py OUT_DIR
writes OUT_DIR/<name>/model.gguf, OUT_DIR/<name>/hf/ and OUT_DIR/<name>/oracle/ (the format of
llamacpp_oracle.py) for each name in MODELS (~450 MB in all), and OUT_DIR/<name>/model.gguf and oracle/ for
each name in QUANTS (~60 MB) with dequant.f32, the first rows of each of its quantized
tensors as the gguf package dequantizes them."""
import collections
import ctypes
import functools
import json
import os
import shutil
import sys

import gguf
import llama_cpp
import numpy as np
import safetensors

import tokenizer_oracle

CACHE = os.environ.get("OMNIKV_CACHE", os.path.expanduser("~/.cache/omnikv"))
TOK_GGUF = os.path.join(CACHE, "hf", "SmolLM2-135M-Instruct.bf16.gguf")
TOK_HF = os.path.join(CACHE, "hf", "SmolLM2-135M-Instruct")

# A small model of each family: its HF config (the keys of the real checkpoints), its vocabulary
# (SmolLM2's GPT-2 BPE, or a SentencePiece one made from it as Mistral and Llama 2 files carry)
# and the seed of its weights (picked so few greedy steps are near-ties).
MISTRAL = dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=256,
               intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=128, max_position_embeddings=32768,
               rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False,
               sliding_window=None, hidden_act="silu", bos_token_id=1, eos_token_id=2,
               torch_dtype="float32")
MODELS = {
    # Qwen2/Qwen2.5 small models: q/k/v biases, rotate-half (NEOX) RoPE, tied head, theta 1e6,
    # a sliding window that use_sliding_window switches off.
    "qwen2": dict(vocab="bpe", seed=1000, config=dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=256,
        intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768,
        max_window_layers=3, hidden_act="silu", bos_token_id=1, eos_token_id=2,
        torch_dtype="float32")),
    # Mistral 7B v0.2/v0.3 and Nemo: GQA, no biases, theta 1e6, untied head, a head_dim that is
    # not hidden_size / heads (Nemo's 128 of 5120 / 32), sliding_window null (no window: v0.1's
    # 4096-token window is a different attention, which the engine rejects). llama.cpp's
    # converter writes these as architecture `llama`.
    "mistral": dict(vocab="bpe", seed=1010, config=MISTRAL),
    # The same with a SentencePiece vocabulary, BOS added (GGUF only: no HF tokenizer.json).
    "mistral-spm": dict(vocab="spm", seed=1002, config=MISTRAL),
}
GGUF_ARCH = {"qwen2": "qwen2", "mistral": "llama"}
# The Mistral-style model requantized by llama.cpp's own quantizer to the file types people
# download. Its widths (256, 512, head_dim 128) are multiples of 256, so every K-quant is used
# as the mix asks (no Q5_0/Q8_0 fallbacks, unlike SmolLM2's 576): Q2_K files also hold Q3_K and
# Q4_K, Q3_K_M Q4_K and Q5_K, Q4_K_M Q6_K, and so on. GGUF only.
QUANTS = {"mistral-q2_k": "Q2_K", "mistral-q3_k_m": "Q3_K_M", "mistral-q4_k_m": "Q4_K_M",
          "mistral-q5_k_m": "Q5_K_M", "mistral-q6_k": "Q6_K", "mistral-q5_0": "Q5_0",
          "mistral-q5_1": "Q5_1", "mistral-iq4_nl": "IQ4_NL"}
PROMPTS = [
    "Once upon a time, in a small village at the edge of a great forest, there lived",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nList three facts about the planet Mars.<|im_end|>\n<|im_start|>assistant\n",
    "The Roman Empire was one of the largest empires in history. At its height, it",
    # ~750 tokens: twelve prefill chunks of 64 (repeat counts picked for clear top-1 gaps)
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 16
    + "The pass key is 71432. Remember it. 71432 is the pass key. "
    + "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 14
    + "What is the pass key? The pass key is",
]


def make_weights(c, rng):
    """HF-named F32 weights. The blocks' output projections are scaled up so what they add to the
    residual is ~16x the embedding: with a tied head the last token's own logit would otherwise
    win every step (one token repeated). Embedding and untied head are scaled so the logits have
    a spread of ~16 and the best token usually stands clear of the second."""
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim", d // c["num_attention_heads"])
    nq, nkv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def mat(o, i, scale=1.0):
        return (scale * rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((v, d)).astype(np.float32),
         "model.norm.weight": norm(d)}
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, d, 16.0)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        # q and k scaled up so attention is peaked rather than a plain average.
        w[p + "self_attn.q_proj.weight"] = mat(nq, d, 2.0)
        w[p + "self_attn.k_proj.weight"] = mat(nkv, d, 2.0)
        w[p + "self_attn.v_proj.weight"] = mat(nkv, d)
        w[p + "self_attn.o_proj.weight"] = mat(d, nq, 16.0)
        w[p + "mlp.gate_proj.weight"] = mat(f, d)
        w[p + "mlp.up_proj.weight"] = mat(f, d)
        w[p + "mlp.down_proj.weight"] = mat(d, f, 16.0)
        if c["model_type"] == "qwen2":
            for n, size in (("q", nq), ("k", nkv), ("v", nkv)):
                w[p + f"self_attn.{n}_proj.bias"] = rng.standard_normal(size).astype(np.float32)
    return w


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF's rotate-half rows of each head reordered
    so that llama.cpp's interleaved (GGML_ROPE_TYPE_NORM) RoPE pairs rows 2i and 2i+1."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_tensors(c, w, arch):
    """The converter's tensor names for each HF weight, Q/K (and their biases) permuted for
    `llama`; `qwen2` keeps HF's layout, since llama.cpp runs it with NEOX RoPE."""
    T = gguf.MODEL_TENSOR
    names = {"model.embed_tokens.weight": T.TOKEN_EMBD, "model.norm.weight": T.OUTPUT_NORM,
             "lm_head.weight": T.OUTPUT, "input_layernorm": T.ATTN_NORM,
             "post_attention_layernorm": T.FFN_NORM, "self_attn.q_proj": T.ATTN_Q,
             "self_attn.k_proj": T.ATTN_K, "self_attn.v_proj": T.ATTN_V,
             "self_attn.o_proj": T.ATTN_OUT, "mlp.gate_proj": T.FFN_GATE, "mlp.up_proj": T.FFN_UP,
             "mlp.down_proj": T.FFN_DOWN}
    out = {}
    for name, a in w.items():
        if name in names:
            out[gguf.TENSOR_NAMES[names[name]] + ".weight"] = a
            continue
        _, _, l, rest = name.split(".", 3)  # model.layers.L.<module>.<weight|bias>
        module, kind = rest.rsplit(".", 1)
        if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            heads = c["num_attention_heads"] if module == "self_attn.q_proj" else c["num_key_value_heads"]
            a = permute(a, heads)
        out[gguf.TENSOR_NAMES[names[module]].format(bid=int(l)) + "." + kind] = a
    return out


@functools.cache
def tokenizer_fields(vocab):
    """The tokenizer.* metadata of a vocabulary, (value, type, array element type) by key:
    "bpe" is SmolLM2's GPT-2 BPE vocabulary, merges and special ids as its GGUF carries them;
    "spm" tokenizer_oracle.py's SentencePiece vocabulary made from it, with BOS added and a
    space prefix as in Mistral's files. Made once: parsing the GGUF takes seconds."""
    r = smollm2_reader()
    if vocab == "bpe":
        return {key: (f.contents(), f.types[0], f.types[1] if len(f.types) > 1 else None)
                for key, f in r.fields.items() if key.startswith("tokenizer.")}
    tokens, scores, types = tokenizer_oracle.spm_vocab(r)
    V, K = gguf.GGUFValueType, gguf.Keys.Tokenizer
    return {K.MODEL: ("llama", V.STRING, None), K.LIST: (tokens, V.ARRAY, V.STRING),
            K.SCORES: (scores, V.ARRAY, V.FLOAT32), K.TOKEN_TYPE: (types, V.ARRAY, V.INT32),
            K.BOS_ID: (1, V.UINT32, None), K.EOS_ID: (2, V.UINT32, None),
            K.UNK_ID: (0, V.UINT32, None), K.ADD_BOS: (True, V.BOOL, None),
            K.ADD_EOS: (False, V.BOOL, None), K.ADD_PREFIX: (True, V.BOOL, None)}


@functools.cache
def smollm2_reader():
    return gguf.GGUFReader(TOK_GGUF)


def write_gguf(path, name, c, vocab, w):
    arch = GGUF_ARCH[c["model_type"]]
    hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    wr = gguf.GGUFWriter(path, arch)
    wr.add_type(gguf.GGUFType.MODEL)
    wr.add_name(f"omnikv tiny {name}")
    wr.add_block_count(c["num_hidden_layers"])
    wr.add_context_length(c["max_position_embeddings"])
    wr.add_embedding_length(c["hidden_size"])
    wr.add_feed_forward_length(c["intermediate_size"])
    wr.add_head_count(c["num_attention_heads"])
    wr.add_head_count_kv(c["num_key_value_heads"])
    wr.add_rope_freq_base(c["rope_theta"])
    wr.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if arch == "llama":  # LlamaModel.set_gguf_parameters adds these two; Qwen2Model does not
        wr.add_vocab_size(c["vocab_size"])
        wr.add_rope_dimension_count(hd)
    if "head_dim" in c:
        wr.add_key_length(hd)
        wr.add_value_length(hd)
    wr.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, (val, vtype, sub) in tokenizer_fields(vocab).items():
        wr.add_key_value(key, val, vtype, sub)
    for tname, a in gguf_tensors(c, w, arch).items():
        wr.add_tensor(tname, a)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def write_hf(d, c, w):
    os.makedirs(d, exist_ok=True)
    specs = {n: safetensors.TensorSpec(dtype="float32", shape=list(a.shape), data_ptr=a.ctypes.data,
                                       data_len=a.nbytes) for n, a in w.items()}
    safetensors.serialize_file(specs, os.path.join(d, "model.safetensors"), {"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as fp:
        json.dump(c, fp, indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOK_HF, f), d)


def last_logits(llm):
    """The logits of the last token evaluated (the only row kept without logits_all)."""
    p = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(p, shape=(llm.n_vocab(),)).astype(np.float32)


def oracle(model, out, n_gen):
    """llama.cpp on the GGUF, in llamacpp_oracle.py's format (oracle.json, logits_<i>.f32 and the
    flash-attention twin logits_fa_<i>.f32), keeping only the last position's logits: asking
    for every position's would copy ~50 MB per 256 prompt tokens at this vocabulary."""
    os.makedirs(out, exist_ok=True)
    # One thread per token: a second only adds hand-over cost at this size (and on a busy
    # machine much more); two for prompts.
    kw = dict(model_path=model, n_ctx=2048, n_batch=512, n_threads=1, n_threads_batch=2,
              logits_all=False, verbose=False)
    llm = llama_cpp.Llama(flash_attn=False, **kw)
    llm_fa = llama_cpp.Llama(flash_attn=True, **kw)
    result = {"model": os.path.basename(model), "n_gen": n_gen, "prompts": []}
    for i, text in enumerate(PROMPTS):
        # BOS as the vocabulary asks (SentencePiece yes, SmolLM2's BPE no)
        tokens = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        step = last_logits(llm)
        step.astype("<f4").tofile(os.path.join(out, f"logits_{i}.f32"))
        llm_fa.reset()
        llm_fa.eval(tokens)
        last_logits(llm_fa).astype("<f4").tofile(os.path.join(out, f"logits_fa_{i}.f32"))
        generated, gaps = [], []
        for _ in range(n_gen):
            top2 = np.argsort(-step)[:2]
            gaps.append(float(step[top2[0]] - step[top2[1]]))
            generated.append(int(top2[0]))
            llm.eval([int(top2[0])])
            step = last_logits(llm)
        result["prompts"].append({"text": text, "tokens": tokens, "generated": generated,
                                  "gaps": gaps})
    with open(os.path.join(out, "oracle.json"), "w") as f:
        json.dump(result, f)


def quantize(src, out, ftype_name):
    """llama.cpp's quantizer (no importance matrix: its reference quantizers) on an F32 GGUF."""
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype_name)
    p.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p)) != 0:
        sys.exit(f"llama_model_quantize({src}, {ftype_name}) failed")


DEQUANT_ROWS = 512


def dequant_rows(model, out):
    """The gguf package's own dequantizer (independent of ggml's and ours) on the first
    DEQUANT_ROWS rows of every quantized tensor, in file order, as little-endian f32."""
    with open(out, "wb") as f:
        for t in gguf.GGUFReader(model).tensors:
            if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                 gguf.GGMLQuantizationType.BF16):
                continue
            rows = gguf.quants.dequantize(np.asarray(t.data)[:DEQUANT_ROWS], t.tensor_type)
            rows.astype("<f4").tofile(f)


def main():
    out = sys.argv[1]
    for name, spec in MODELS.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        tokens = tokenizer_fields(spec["vocab"])[gguf.Keys.Tokenizer.LIST][0]
        c = dict(spec["config"], vocab_size=len(tokens))
        w = make_weights(c, np.random.default_rng(spec["seed"]))
        write_gguf(os.path.join(d, "model.gguf"), name, c, spec["vocab"], w)
        if spec["vocab"] == "bpe":
            write_hf(os.path.join(d, "hf"), c, w)
        oracle(os.path.join(d, "model.gguf"), os.path.join(d, "oracle"), 32)
        print(f"{name}: {d}/model.gguf ({GGUF_ARCH[c['model_type']]}, {spec['vocab']} vocabulary)"
              + (f", {d}/hf ({c['model_type']})" if spec["vocab"] == "bpe" else "")
              + f", llama.cpp's outputs in {d}/oracle")
    for name, ftype in QUANTS.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        quantize(os.path.join(out, "mistral", "model.gguf"), os.path.join(d, "model.gguf"), ftype)
        oracle(os.path.join(d, "model.gguf"), os.path.join(d, "oracle"), 32)
        types = collections.Counter(t.tensor_type.name for t in
                                    gguf.GGUFReader(os.path.join(d, "model.gguf")).tensors)
        dequant_rows(os.path.join(d, "model.gguf"), os.path.join(d, "dequant.f32"))
        print(f"{name}: {d}/model.gguf (llama.cpp's {ftype}: "
              + ", ".join(f"{n} {t}" for t, n in sorted(types.items())) + " tensors), "
              f"llama.cpp's outputs in {d}/oracle")


if __name__ == "__main__":
    main()
