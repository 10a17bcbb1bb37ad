"""llama.cpp as the oracle for the engine: greedy continuations and last-prompt-position logits
of a few prompts on the same GGUF file, written for tests/model/test_llamacpp.c.

usage: llamacpp_oracle.py MODEL.gguf OUT_DIR [N_GEN [KV_TYPE]]
writes OUT_DIR/oracle.json ({"prompts": [{"text", "tokens", "generated", "gaps"}]}) and
OUT_DIR/logits_<i>.f32 (the n_vocab logits after the last prompt token, little-endian f32), and
OUT_DIR/logits_fa_<i>.f32, the same logits from llama.cpp's other attention path: how far
llama.cpp's two attention paths are apart measures the rounding noise of a correct result.
KV_TYPE f16 (default): the reference runs without flash attention, the other path with it.
KV_TYPE q8_0 or q4_0 (`-ctk T -ctv T`): llama.cpp runs a quantized V cache only with flash
attention, so the reference is T for K and V with flash attention, and the other path T for K with
f16 V without it (the only non-flash path with a quantized cache)."""
import json
import os
import sys

import llama_cpp
import numpy as np

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nList three facts about the planet Mars.<|im_end|>\n<|im_start|>assistant\n",
    "The Roman Empire was one of the largest empires in history. At its height, it",
    # long enough to span several prefill chunks
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 40
    + "The pass key is 71432. Remember it. 71432 is the pass key. "
    + "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 20
    + "What is the pass key? The pass key is",
]


def main():
    model, out = sys.argv[1], sys.argv[2]
    n_gen = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    kv = sys.argv[4] if len(sys.argv) > 4 else "f16"
    os.makedirs(out, exist_ok=True)
    quant = {"q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
    if kv == "f16":
        ref_args, other_args = {"flash_attn": False}, {"flash_attn": True}
    elif kv in quant:
        ref_args = {"flash_attn": True, "type_k": quant[kv], "type_v": quant[kv]}
        other_args = {"flash_attn": False, "type_k": quant[kv]}
    else:
        sys.exit(f"KV_TYPE must be f16, q8_0 or q4_0, not {kv}")
    llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_batch=512, n_threads=2,
                          logits_all=True, verbose=False, **ref_args)
    llm_fa = llama_cpp.Llama(model_path=model, n_ctx=4096, n_batch=512, n_threads=2,
                             logits_all=True, verbose=False, **other_args)
    result = {"model": os.path.basename(model), "n_gen": n_gen, "kv_type": kv, "prompts": []}
    for i, text in enumerate(PROMPTS):
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        logits = np.array(llm._scores[llm.n_tokens - 1], dtype=np.float32)
        logits.astype("<f4").tofile(os.path.join(out, f"logits_{i}.f32"))
        llm_fa.reset()
        llm_fa.eval(tokens)
        fa = np.array(llm_fa._scores[llm_fa.n_tokens - 1], dtype=np.float32)
        fa.astype("<f4").tofile(os.path.join(out, f"logits_fa_{i}.f32"))
        generated, gaps = [], []
        step = logits
        for _ in range(n_gen):
            top2 = np.argsort(-step)[:2]
            gaps.append(float(step[top2[0]] - step[top2[1]]))
            tok = int(top2[0])
            generated.append(tok)
            llm.eval([tok])
            step = np.array(llm._scores[llm.n_tokens - 1], dtype=np.float32)
        result["prompts"].append({"text": text, "tokens": tokens, "generated": generated,
                                  "gaps": gaps})
    with open(os.path.join(out, "oracle.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
