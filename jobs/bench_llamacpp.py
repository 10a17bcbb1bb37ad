"""Prefill and decode throughput of llama.cpp (through the llama_cpp package) on a GGUF file, with
the protocol of `omnikv bench`: per context length a prompt of random token ids, prefill timed,
then N greedy decode steps timed one token at a time. Prints one JSON object.

usage: bench_llamacpp.py MODEL.gguf --ctx 512,2048,8192 --gen 32 --threads 2 [--flash-attn]"""
import argparse
import json
import time

import llama_cpp
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ctx", default="512,2048,8192")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ctxs = [int(c) for c in a.ctx.split(",")]
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=max(ctxs) + a.gen + 16, n_batch=512,
                          n_ubatch=512, n_threads=a.threads, n_threads_batch=a.threads,
                          logits_all=False, verbose=False, flash_attn=a.flash_attn)
    n_vocab = llm.n_vocab()

    def last_argmax():
        # logits of the last evaluated token, read in place (no copy into Python lists)
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    rng = np.random.default_rng(a.seed)
    rows = []
    for ctx in ctxs:
        ids = [int(t) for t in rng.integers(3, n_vocab - 300, size=ctx)]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tok = last_argmax()
        t2 = time.perf_counter()
        for _ in range(a.gen):
            llm.eval([tok])
            tok = last_argmax()
        t3 = time.perf_counter()
        rows.append({"ctx": ctx, "prefill_tok_s": ctx / (t1 - t0), "decode_tok_s": a.gen / (t3 - t2)})
    print(json.dumps({"engine": "llama.cpp", "flash_attn": a.flash_attn, "threads": a.threads,
                      "gen": a.gen, "rows": rows}))


if __name__ == "__main__":
    main()
