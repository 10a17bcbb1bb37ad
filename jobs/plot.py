"""plot.py — the throughput-study figures from one results directory (jobs/study.sh writes it):
  accuracy_vs_budget.png    eval_*.jsonl: mean score against the share of the prompt selected
                            (k / prompt tokens, dense at 1), one line per context length, a panel
                            per task;
  latency_vs_context.png    bench_p<P>.json of the fewest ranks: median decode ms per token
                            (min-max bars) and TTFT against context length, a line per variant;
  throughput_vs_ranks.png   every bench_p<P>.json: decode and prefill tokens/s against ranks at
                            the longest context, a line per variant (all sequences of a run
                            counted when bench ran with --batch).
A figure whose inputs are missing is skipped with a note. Tested by tests/e2e/test_plots.sh.

usage: python3 plot.py RESULTS_DIR [--out DIR]"""
import argparse
import collections
import glob
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402


def load_eval(d):
    """{task: {ctx: {variant: [(selected share, score), ...]}}} from every eval_*.jsonl."""
    out = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for path in sorted(glob.glob(os.path.join(d, "eval_*.jsonl"))):
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            share = 1.0 if r["policy"] == "dense" else min(1.0, r["budget"] / r["prompt_tokens"])
            out[r.get("dataset") or r["task"]][r["ctx"]][r["variant"]].append((share, r["score"]))
    return out


def load_bench(d):
    """{ranks: bench JSON} from every bench_p<P>.json."""
    out = {}
    for path in glob.glob(os.path.join(d, "bench_p*.json")):
        m = re.search(r"bench_p(\d+)\.json$", path)
        if m:
            out[int(m.group(1))] = json.load(open(path))
    return out


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def variant_key(name):
    """dense first, then budgets from the largest: counts before fractions of the prompt."""
    if name == "dense":
        return (0, 0.0)
    try:
        k = float(name.split("=", 1)[1])
    except (IndexError, ValueError):
        return (3, 0.0)
    return (1, -k) if k >= 1 else (2, -k)


COLOURS = {}


def colour(name):
    """One colour per variant across every figure, in the order variants are first drawn."""
    if name not in COLOURS:
        COLOURS[name] = f"C{len(COLOURS) % 10}"
    return COLOURS[name]


def plot_accuracy(ev, path):
    tasks = sorted(ev)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        labelled = set()  # one label per variant and place, however many contexts share it
        shares = []
        for ctx in sorted(ev[task]):
            pts = []
            for variant, rows in ev[task][ctx].items():
                pts.append((mean([s for s, _ in rows]), mean([v for _, v in rows]), variant))
            pts.sort()
            shares += [p[0] for p in pts]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{ctx} tokens")
            for x, y, name in pts:
                spot = (round(math.log10(x), 1), round(y / 5))
                if (name,) + spot in labelled:
                    continue
                # a second label at the same spot goes below the point, a third lower still
                below = sum(1 for lab in labelled if lab[1:] == spot)
                labelled.add((name,) + spot)
                ax.annotate(name, (x, y), textcoords="offset points",
                            xytext=(3, 4 if below == 0 else -4 - 9 * below), fontsize=7)
        ax.set_xscale("log")
        lo = min(shares) if shares else 0.01
        ax.set_xticks([t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0) if t >= lo / 2])
        ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xlabel("share of the prompt selected (k / N; dense = 1)")
        ax.set_ylabel("mean score (0-100)")
        ax.set_ylim(-5, 105)
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy against the OmniKV budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def by_variant(bench):
    rows = collections.defaultdict(list)
    for r in bench["results"]:
        rows[r.get("variant", r.get("policy", "run"))].append(r)
    for v in rows:
        rows[v].sort(key=lambda r: r["ctx"])
    return rows


def plot_latency(bench, ranks, path):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, rows in sorted(by_variant(bench).items(), key=lambda kv: variant_key(kv[0])):
        ctx = [r["ctx"] for r in rows]
        med = [r["decode_ms_per_token"]["median"] for r in rows]
        lo = [m - r["decode_ms_per_token"]["min"] for m, r in zip(med, rows)]
        hi = [r["decode_ms_per_token"]["max"] - m for m, r in zip(med, rows)]
        a1.errorbar(ctx, med, yerr=[lo, hi], marker="o", capsize=3, label=variant, color=colour(variant))
        a2.plot(ctx, [r["ttft_ms"] / 1e3 for r in rows], marker="o", label=variant, color=colour(variant))
    for ax, what in ((a1, "decode ms per token (median, min-max)"), (a2, "time to first token (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    batch = bench.get("batch", 1)
    per = "" if batch == 1 else f", batch {batch}: ms per generated token of the batch"
    fig.suptitle(f"Latency against context ({bench.get('model', '')}, {ranks} rank(s), "
                 f"{bench.get('threads', '?')} threads{per})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ranks(benches, path):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    ranks = sorted(benches)
    longest = max(r["ctx"] for b in benches.values() for r in b["results"])
    series = collections.defaultdict(dict)
    for p in ranks:
        for variant, rows in by_variant(benches[p]).items():
            for r in rows:
                if r["ctx"] == longest:
                    series[variant][p] = r
    for variant, pts in sorted(series.items(), key=lambda kv: variant_key(kv[0])):
        ps = sorted(pts)
        a1.plot(ps, [pts[p]["decode_tok_s"] for p in ps], marker="o", label=variant, color=colour(variant))
        a2.plot(ps, [pts[p]["prefill_tok_s"] for p in ps], marker="o", label=variant, color=colour(variant))
    for ax, what in ((a1, "decode tokens/s"), (a2, "prefill tokens/s")):
        ax.set_xlabel("MPI ranks")
        ax.set_xticks(ranks)
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    batch = max(b.get("batch", 1) for b in benches.values())
    how = ("one sequence at a time: stages take turns, so this shows the pipeline's cost, not its "
           "overlap" if batch == 1 else
           f"{batch} sequences per run, in min(ranks, {batch}) micro-batches that overlap across stages")
    fig.suptitle(f"Throughput against ranks at {longest} tokens of context (bench decodes {how})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--out", help="where the PNGs go (default: RESULTS)")
    a = ap.parse_args()
    out = a.out or a.results
    os.makedirs(out, exist_ok=True)
    wrote = []
    ev = load_eval(a.results)
    if ev:
        plot_accuracy(ev, os.path.join(out, "accuracy_vs_budget.png"))
        wrote.append("accuracy_vs_budget.png")
    else:
        print("plot.py: no eval_*.jsonl; skipping accuracy_vs_budget.png", file=sys.stderr)
    benches = load_bench(a.results)
    if benches:
        p = min(benches)
        plot_latency(benches[p], p, os.path.join(out, "latency_vs_context.png"))
        plot_ranks(benches, os.path.join(out, "throughput_vs_ranks.png"))
        wrote += ["latency_vs_context.png", "throughput_vs_ranks.png"]
    else:
        print("plot.py: no bench_p*.json; skipping the latency and ranks figures", file=sys.stderr)
    if not wrote:
        print(f"plot.py: nothing to plot in {a.results}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(os.path.join(out, w) for w in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
