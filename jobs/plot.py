#!/usr/bin/env python3
"""plot.py — the throughput-study figures from one results directory (jobs/study.sh writes it):
  accuracy_vs_budget.png    eval_*.jsonl: mean score against the share of the prompt selected
                            (k / prompt tokens, dense at 1), one line per context length, a panel
                            per task;
  latency_vs_context.png    bench_p<P>.json of the fewest ranks: median decode ms per token
                            (min-max bars) and TTFT against context length, a line per variant;
  throughput_vs_ranks.png   every bench_p<P>.json: decode and prefill tokens/s against ranks at
                            the longest context, a line per variant (all sequences of a run
                            counted when bench ran with --batch);
  NAME_heatmap.png          every calibration matrix NAME.csv (`omnikv calibrate` writes it beside
                            NAME.json, whose chosen filter layers are marked): the share of layer
                            l2's attention mass that layer l1's top-k covers.
RESULTS may also name one calibration CSV. Figures carry the model and sample counts, ticks in
tokens (512, 1K, 2K), 200 dpi. A figure whose inputs are missing is skipped with a note. Needs
matplotlib: python3's own (scripts/setup.sh installs python3-matplotlib), else the one in the
omnikv venv (scripts/setup.sh --test), which this script switches to. Tested by
tests/e2e/test_plots.sh.

usage: jobs/plot.py RESULTS_DIR|CALIBRATION.csv [--out DIR]"""
import argparse
import collections
import glob
import json
import math
import os
import re
import sys

try:
    import matplotlib
except ImportError:
    # The omnikv venv has matplotlib; run there once (OMNIKV_PLOT_REEXEC stops a second try).
    venv_py = os.path.join(os.environ.get("OMNIKV_CACHE", os.path.expanduser("~/.cache/omnikv")),
                           "venv", "bin", "python")
    if os.access(venv_py, os.X_OK) and not os.environ.get("OMNIKV_PLOT_REEXEC"):
        os.environ["OMNIKV_PLOT_REEXEC"] = "1"
        os.execv(venv_py, [venv_py] + sys.argv)
    sys.exit("plot.py: matplotlib is missing; run scripts/setup.sh (python3-matplotlib) or "
             "install it for " + sys.executable)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402

DPI = 200


def tokens_label(x, _pos=None):
    """512, 1K, 2K, 1M: token counts as people write them."""
    x = int(round(x))
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if x >= size and (4 * x) % size == 0:  # whole, or a quarter: 1K, 1.5K, 128K
            return f"{x / size:g}{unit}"
    return str(x)


def token_axis(ax, values):
    """A log2 context axis ticked at the measured lengths, labelled in tokens."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(values)))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(tokens_label))
    ax.xaxis.set_minor_locator(mticker.NullLocator())


def new_figure(width, height):
    """Constrained layout keeps titles, labels and legends inside the figure."""
    return plt.figure(figsize=(width, height), layout="constrained")


def model_name(d):
    """The study's model (meta.json), as a file name."""
    try:
        return os.path.basename(str(json.load(open(os.path.join(d, "meta.json")))["model"]).rstrip("/"))
    except (OSError, ValueError, KeyError):
        return ""


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


def plot_accuracy(ev, path, model=""):
    tasks = sorted(ev)
    fig = new_figure(5 * len(tasks), 4.4)
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        labelled = set()  # one label per variant and place, however many contexts share it
        shares = []
        for ctx in sorted(ev[task]):
            pts = []
            for variant, rows in ev[task][ctx].items():
                pts.append((mean([s for s, _ in rows]), mean([v for _, v in rows]), variant))
            pts.sort()
            shares += [p[0] for p in pts]
            n = max(len(rows) for rows in ev[task][ctx].values())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{tokens_label(ctx)} tokens, n = {n}")
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
        ax.set_xlim(right=1.6)  # room for the label of the dense point at 1
        ax.set_ylim(0, 105)
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="context, samples per point", title_fontsize=8)
    fig.suptitle(f"Accuracy against the OmniKV budget{' (' + model + ')' if model else ''}")
    fig.savefig(path, dpi=DPI)
    return fig


def by_variant(bench):
    rows = collections.defaultdict(list)
    for r in bench["results"]:
        rows[r.get("variant", r.get("policy", "run"))].append(r)
    for v in rows:
        rows[v].sort(key=lambda r: r["ctx"])
    return rows


def plot_latency(bench, ranks, path):
    fig = new_figure(11, 4.6)
    a1, a2 = fig.subplots(1, 2)
    all_ctx = []
    for variant, rows in sorted(by_variant(bench).items(), key=lambda kv: variant_key(kv[0])):
        ctx = [r["ctx"] for r in rows]
        all_ctx += ctx
        med = [r["decode_ms_per_token"]["median"] for r in rows]
        lo = [m - r["decode_ms_per_token"]["min"] for m, r in zip(med, rows)]
        hi = [r["decode_ms_per_token"]["max"] - m for m, r in zip(med, rows)]
        a1.errorbar(ctx, med, yerr=[lo, hi], marker="o", capsize=3, label=variant, color=colour(variant))
        a2.plot(ctx, [r["ttft_ms"] / 1e3 for r in rows], marker="o", label=variant, color=colour(variant))
    for ax, what in ((a1, "decode ms per token (median, min-max)"), (a2, "time to first token (s)")):
        token_axis(ax, all_ctx)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    batch = bench.get("batch", 1)
    runs = max((r.get("runs", 0) for r in bench["results"]), default=0)
    per = "" if batch == 1 else f"; batch {batch}: ms per generated token of the batch"
    fig.suptitle(f"Latency against context: {os.path.basename(bench.get('model', ''))}, {ranks} "
                 f"rank(s), {bench.get('threads', '?')} threads, {runs} runs per point{per}",
                 wrap=True)
    fig.savefig(path, dpi=DPI)
    return fig


def plot_ranks(benches, path):
    fig = new_figure(11, 4.8)
    a1, a2 = fig.subplots(1, 2)
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
    model = os.path.basename(next(iter(benches.values())).get("model", ""))
    runs = max((r.get("runs", 0) for b in benches.values() for r in b["results"]), default=0)
    fig.suptitle(f"Throughput against ranks at {tokens_label(longest)} tokens of context: {model}, "
                 f"{runs} runs per point\n(bench decodes {how})", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return fig


def load_calibration(csv_path):
    """(matrix cover[l1][l2], layer weights, chosen filter layers, fragment) from a calibrate CSV
    and the JSON fragment beside it."""
    rows = [line.rstrip("\n").split(",") for line in open(csv_path) if line.strip()]
    if not rows or rows[0][0] != "l1":
        raise ValueError(f"{csv_path} is not a calibration matrix (its header does not start 'l1')")
    n = len(rows[0]) - 1
    cover = [[float(v) for v in r[1:]] for r in rows[1:1 + n]]
    weight = [float(v) for v in rows[1 + n][1:]] if len(rows) > 1 + n and rows[1 + n][0] == "weight" else []
    frag = {}
    base = csv_path[:-4] if csv_path.endswith(".csv") else csv_path
    if os.path.exists(base + ".json"):
        frag = json.load(open(base + ".json"))
    filters = [int(x) for x in str(frag.get("do_select_layers", "")).split(",") if x.strip()]
    return cover, weight, filters, frag


def plot_heatmap(csv_path, path, model=""):
    cover, _weight, filters, frag = load_calibration(csv_path)
    n = len(cover)
    m = np.array(cover, dtype=float)
    m[np.tril_indices(n, -1)] = np.nan  # l2 < l1: a layer never selects for an earlier one
    fig = new_figure(7.2, 6.4)
    ax = fig.subplots()
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("0.85")
    im = ax.imshow(m, cmap=cmap, vmin=0, vmax=1, origin="upper", interpolation="nearest")
    step = 1 if n <= 16 else 2 if n <= 32 else 4 if n <= 64 else 8
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("l2: the layer whose attention mass is covered")
    ax.set_ylabel("l1: the layer whose top-k selects")
    for f in filters:
        ax.axhline(f, color="red", lw=0.8, alpha=0.6)
    if filters:
        ax.plot([-0.5] * len(filters), filters, ls="none", marker=">", ms=8, color="red",
                clip_on=False, label="chosen filter layer (" + ",".join(map(str, filters)) + ")")
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    bar = fig.colorbar(im, ax=ax, shrink=0.85)
    bar.set_label("share of l2's attention mass in l1's top-k")
    cal = frag.get("calibration", {})
    detail = ", ".join(x for x in (
        model,
        f"{cal['samples']} samples" if "samples" in cal else "",
        f"{tokens_label(cal['prompt_tokens'])}-token {cal.get('task', '')} prompts" if "prompt_tokens" in cal else "",
        f"k = {frag['num_of_selected_tokens']:g}" if "num_of_selected_tokens" in frag else "",
        f"objective {cal['objective']}" if "objective" in cal else "") if x)
    ax.set_title("Layer-pair coverage (grey: l2 before l1)" + ("\n" + detail if detail else ""),
                 fontsize=10)
    fig.savefig(path, dpi=DPI)
    return fig


def is_calibration_csv(path):
    try:
        with open(path) as f:
            return f.readline().startswith("l1,")
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="a study directory, or one calibration CSV")
    ap.add_argument("--out", help="where the PNGs go (default: RESULTS)")
    a = ap.parse_args()
    if not os.path.exists(a.results):
        print(f"plot.py: {a.results} does not exist; give a results directory or a calibration CSV",
              file=sys.stderr)
        return 2
    if os.path.isfile(a.results):
        if not is_calibration_csv(a.results):
            print(f"plot.py: {a.results} is neither a results directory nor a calibration CSV",
                  file=sys.stderr)
            return 2
        out = a.out or os.path.dirname(os.path.abspath(a.results))
        os.makedirs(out, exist_ok=True)
        name = os.path.splitext(os.path.basename(a.results))[0] + "_heatmap.png"
        plt.close(plot_heatmap(a.results, os.path.join(out, name)))
        print("wrote " + os.path.join(out, name))
        return 0
    out = a.out or a.results
    os.makedirs(out, exist_ok=True)
    wrote = []
    model = model_name(a.results)
    ev = load_eval(a.results)
    if ev:
        plt.close(plot_accuracy(ev, os.path.join(out, "accuracy_vs_budget.png"), model))
        wrote.append("accuracy_vs_budget.png")
    else:
        print("plot.py: no eval_*.jsonl; skipping accuracy_vs_budget.png", file=sys.stderr)
    benches = load_bench(a.results)
    if benches:
        p = min(benches)
        plt.close(plot_latency(benches[p], p, os.path.join(out, "latency_vs_context.png")))
        plt.close(plot_ranks(benches, os.path.join(out, "throughput_vs_ranks.png")))
        wrote += ["latency_vs_context.png", "throughput_vs_ranks.png"]
    else:
        print("plot.py: no bench_p*.json; skipping the latency and ranks figures", file=sys.stderr)
    for csv_path in sorted(glob.glob(os.path.join(a.results, "*.csv"))):
        if is_calibration_csv(csv_path):
            name = os.path.splitext(os.path.basename(csv_path))[0] + "_heatmap.png"
            plt.close(plot_heatmap(csv_path, os.path.join(out, name), model))
            wrote.append(name)
    if not wrote:
        print(f"plot.py: nothing to plot in {a.results}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(os.path.join(out, w) for w in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
