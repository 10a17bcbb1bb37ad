"""hf_decode_bench.py — what a user would run instead of omnikv: Hugging Face transformers'
LlamaForCausalLM in the Llama-3-8B shape (config built here, random bf16 weights made on the GPU,
no download), sdpa attention, its default dynamic KV cache. Per case: one prefill, then greedy
decode steps timed with CUDA events (warm-up steps excluded). Also the device-to-device copy
bandwidth, the ceiling for a decode step. Prints one JSON line per case on stdout, progress on
stderr. Run by tests/gpu/bench_gpu.sh on the GPU machine; checked here only by py_compile.

usage: python3 hf_decode_bench.py [--cases 32768x1,131072x1,32768x8] [--gen 16] [--budget S]
"""
import time

T0 = time.monotonic()  # before the imports: torch and transformers take seconds, inside the budget

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def say(msg):
    print(f"[hf +{time.monotonic() - T0:.0f}s] {msg}", file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


def llama3_8b_config(max_pos, layers):
    # The keys of Llama-3-8B's own config.json, which every transformers release loads.
    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
        max_position_embeddings=max_pos, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
        attn_implementation="sdpa")


def copy_bandwidth():
    """Bytes read plus written per second by a device-to-device copy of 4 GiB, mean of 10."""
    n = 1 << 31
    a = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(10):
        b.copy_(a)
    t1.record()
    torch.cuda.synchronize()
    s = t0.elapsed_time(t1) / 1e3 / 10
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 2 / s / 1e9


def forward(model, ids, cache):
    try:
        return model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    except TypeError:  # transformers before 4.50 names it num_logits_to_keep
        return model(input_ids=ids, past_key_values=cache, use_cache=True, num_logits_to_keep=1)


def run_case(model, ctx, batch, gen, warmup):
    vocab = model.config.vocab_size
    g = torch.Generator(device="cuda").manual_seed(ctx + batch)
    ids = torch.randint(0, vocab, (batch, ctx), device="cuda", generator=g)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    ev[0].record()
    out = forward(model, ids, None)
    ev[1].record()
    torch.cuda.synchronize()
    prefill_s = ev[0].elapsed_time(ev[1]) / 1e3
    cache = out.past_key_values
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    del out
    steps = []
    for i in range(warmup + gen):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        out = forward(model, nxt, cache)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        e1.record()
        torch.cuda.synchronize()
        if i >= warmup:
            steps.append(e0.elapsed_time(e1))
        cache = out.past_key_values
        del out
    peak = torch.cuda.max_memory_allocated()
    del cache, nxt, ids
    torch.cuda.empty_cache()
    kv_bytes = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads * 128 * 2
    return {
        "prefill_s": round(prefill_s, 3), "prefill_tok_s": round(batch * ctx / prefill_s, 1),
        "decode_step_ms_median": round(statistics.median(steps), 3),
        "decode_step_ms_mean": round(statistics.fmean(steps), 3),
        "decode_step_ms_min": round(min(steps), 3),
        # per generated token of the batch, as omnikv bench counts it
        "decode_ms_per_token": round(statistics.median(steps) / batch, 3),
        "steps": len(steps), "warmup_steps": warmup,
        "kv_gib": round(batch * ctx * kv_bytes / 2**30, 2), "peak_mem_gib": round(peak / 2**30, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="32768x1,131072x1,32768x8", help="CTXxBATCH,...")
    ap.add_argument("--gen", type=int, default=16, help="timed decode steps per case")
    ap.add_argument("--warmup", type=int, default=2, help="untimed decode steps first")
    ap.add_argument("--budget", type=float, default=300, help="seconds for the whole script")
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (Llama-3-8B has 32)")
    args = ap.parse_args()
    try:
        cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    except ValueError:
        ap.error(f"--cases must read CTXxBATCH,... (got '{args.cases}')")
    if not torch.cuda.is_available():
        emit({"case": "hf", "skipped": "no GPU visible to PyTorch"})
        return 0
    base = {"torch": torch.__version__, "transformers": transformers.__version__,
            "cache": "dynamic", "dtype": "bfloat16",
            "gpu": torch.cuda.get_device_name(0)}
    bw = copy_bandwidth()
    emit({"case": "copy_bandwidth", "gb_s": round(bw, 1), "note": "device-to-device copy, read + write"})
    say(f"copy bandwidth {bw:.0f} GB/s; building the model")

    max_pos = max(c for c, _ in cases) + args.gen + args.warmup + 16
    torch.manual_seed(0)
    t = time.monotonic()
    # Made in bf16 on the GPU: no 32 GB float32 copy, and the random init runs there in seconds.
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(llama3_8b_config(max_pos, args.layers))
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model of {n_params / 1e9:.2f} B parameters built in {time.monotonic() - t:.1f} s")
    base["params"] = n_params
    base["layers"] = args.layers
    # cuBLAS handles, attention kernel choice and the allocator's first blocks, outside the timings.
    with torch.inference_mode():
        run_case(model, 512, 1, 2, 1)
    say("warmed up")
    base["attn"] = getattr(model.config, "_attn_implementation", "unknown")

    first = None  # (ctx, batch, seconds) of the first case that ran, to predict the others
    for ctx, batch in cases:
        case = f"hf ctx={ctx} batch={batch}"
        left = args.budget - (time.monotonic() - T0)
        if first:
            r = ctx / first[0]
            want = first[2] * batch / first[1] * r * (1 + r) / 2 * 1.3
            if want > left:
                emit({"case": case, "ctx": ctx, "batch": batch,
                      "skipped": f"predicted {want:.0f}s, {left:.0f}s left"})
                continue
        say(f"{case}")
        t = time.monotonic()
        try:
            with torch.inference_mode():
                res = run_case(model, ctx, batch, args.gen, args.warmup)
        except torch.cuda.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            emit({"case": case, "ctx": ctx, "batch": batch, "error": f"out of memory: {str(e)[:200]}"})
            continue
        secs = time.monotonic() - t
        first = first or (ctx, batch, secs)
        emit({"case": case, "ctx": ctx, "batch": batch, "seconds": round(secs, 1), **res, **base})
    return 0


if __name__ == "__main__":
    sys.exit(main())
