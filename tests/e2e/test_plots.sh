#!/usr/bin/env bash
# test_plots.sh — jobs/study.sh and jobs/plot.py end to end on a generated tiny model: a small
# study (bench of 2-sequence batches on 1 and 2 ranks over three contexts and three variants, eval
# of two tasks) into one results directory, then checks the bench JSON (rank count, batch, every
# cell, latency spreads, memory), the eval records, and that the three figures are real PNGs of a
# sensible size, that the figures are fit to print (text inside, token ticks, y from 0, model and
# counts, dpi), the labelled calibration heat map; and that plot.py refuses a directory with
# nothing to plot. Needs OMNIKV_BIN,
# mpirun, and matplotlib (the venv under OMNIKV_CACHE that scripts/setup.sh --test builds, or
# python3's own).
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
SRC=${OMNIKV_SRC:?OMNIKV_SRC must name the omnikv checkout}
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
PY=python3
[ -x "$CACHE/venv/bin/python" ] && PY=$CACHE/venv/bin/python
"$PY" -c "import matplotlib" 2>/dev/null || { echo "FAIL: $PY has no matplotlib; run scripts/setup.sh --test"; exit 1; }
T=$(mktemp -d /tmp/okv_e2e_plots.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMNIKV_LOG=warn OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

"$BIN" gen-model --shape tiny -o "$T/tiny.gguf" 2>/dev/null || { echo "FAIL: gen-model"; exit 1; }
R=$T/results
if ! OMNIKV_BIN=$BIN "$SRC/jobs/study.sh" -m "$T/tiny.gguf" -o "$R" --ctx 256,512,1024 \
    --variants dense,64,0.25 --ranks 1,2 --tasks passkey,2stage --count 2 --gen 8 --batch 2 --runs 2 \
    --warmup 1 --set do_select_layers=1 --set threads=1 >"$T/study.out" 2>&1; then
    tail -n 30 "$T/study.out" >&2
    echo "FAIL: study.sh failed"
    exit 1
fi

"$PY" - "$R" <<'PY' || fail "results check failed (see above)"
import json, os, struct, sys
d = sys.argv[1]
for p in (1, 2):
    b = json.load(open(os.path.join(d, f"bench_p{p}.json")))
    assert b["ranks"] == p and b["batch"] == 2, (p, b["ranks"], b["batch"])
    cells = {(r["variant"], r["ctx"]) for r in b["results"]}
    want = {(v, c) for v in ("dense", "k=64", "k=0.25") for c in (256, 512, 1024)}
    assert cells == want, cells
    for r in b["results"]:
        s = r["decode_ms_per_token"]
        assert 0 < s["min"] <= s["median"] <= s["max"], s
        assert r["runs"] == 2 and r["prefill_tok_s"] > 0 and r["ttft_ms"] > 0, r
        assert r["memory_bytes"]["weights"] > 0 and r["memory_bytes"]["kv_cache"] > 0, r
        sparse = r["variant"] != "dense"
        assert (r["memory_bytes"]["bank"] > 0) == sparse, r
        assert (r["bank_bytes_per_token"] > 0) == sparse and (r["ms_per_token"]["select"] > 0) == sparse, r
        assert r["k"] == {"dense": r["ctx"], "k=64": 64, "k=0.25": r["ctx"] // 4}[r["variant"]], r
for task in ("passkey", "2stage"):
    rows = [json.loads(l) for l in open(os.path.join(d, f"eval_{task}.jsonl"))]
    assert len(rows) == 3 * 2 * 3, (task, len(rows))
meta = json.load(open(os.path.join(d, "meta.json")))
assert meta["ranks"] == "1,2" and meta["batch"] == "2" and meta["model"].endswith("tiny.gguf"), meta
for name in ("accuracy_vs_budget", "latency_vs_context", "throughput_vs_ranks"):
    raw = open(os.path.join(d, name + ".png"), "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR", name
    w, h = struct.unpack(">II", raw[16:24])
    assert w >= 600 and h >= 300 and len(raw) > 20000, (name, w, h, len(raw))
    print(f"{name}.png: {w}x{h}, {len(raw)} bytes")
PY

# plot.py runs by itself (shebang, run bit) after scripts/setup.sh, and its figures are fit to
# print: every title, label and tick label inside the figure, ticks in tokens, y from 0 where a
# ratio is read, the model and sample counts named, >= 150 dpi. The calibration heat map is drawn
# from calibrate's CSV with axes, layer numbers, a title, a colour bar and the filter layers.
[ -x "$SRC/jobs/plot.py" ] && head -1 "$SRC/jobs/plot.py" | grep -q "^#!/usr/bin/env python3" \
    || fail "jobs/plot.py has no run bit or shebang"
"$SRC/jobs/plot.py" "$R" --out "$T/figs" >"$T/plot.out" 2>&1 || fail "jobs/plot.py DIR failed: $(tail -3 "$T/plot.out")"
if "$BIN" calibrate -m "$T/tiny.gguf" --ctx 256 --prompts 1 --steps 2 --filters 1 -o "$R/calib.json" \
    -t 1 >"$T/calib.out" 2>&1; then
    grep -q "jobs/plot.py .*calib.csv" "$T/calib.out" || fail "calibrate does not say where the labelled heat map comes from"
    "$SRC/jobs/plot.py" "$R/calib.csv" >"$T/plot.out" 2>&1 || fail "jobs/plot.py CSV failed: $(tail -3 "$T/plot.out")"
else
    fail "calibrate on the tiny model failed: $(tail -3 "$T/calib.out")"
fi
"$PY" - "$SRC/jobs/plot.py" "$R" <<'PY' || fail "figure check failed (see above)"
import importlib.util, os, struct, sys
spec = importlib.util.spec_from_file_location("plot", sys.argv[1])
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)
d = sys.argv[2]
figs = {
    "accuracy": plot.plot_accuracy(plot.load_eval(d), os.path.join(d, "a.png"), plot.model_name(d)),
    "latency": plot.plot_latency(plot.load_bench(d)[1], 1, os.path.join(d, "l.png")),
    "ranks": plot.plot_ranks(plot.load_bench(d), os.path.join(d, "r.png")),
    "heatmap": plot.plot_heatmap(os.path.join(d, "calib.csv"), os.path.join(d, "h.png"), "tiny.gguf"),
}
for name, fig in figs.items():
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        # tick labels in view (a locator also makes labels for ticks past the limits, not drawn)
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        texts += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
        texts += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
        if ax.get_legend():
            texts += ax.get_legend().get_texts()
    for t in texts:
        if not t.get_text() or not t.get_visible():
            continue
        e = t.get_window_extent(rend)
        assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1 and e.y1 <= box.y1 + 1, \
            (name, t.get_text(), e, box)
    print(f"{name}: {len(texts)} texts inside the {box.width:.0f}x{box.height:.0f} figure")
assert plot.DPI >= 150, plot.DPI
for png, fig in (("a.png", figs["accuracy"]), ("h.png", figs["heatmap"])):
    raw = open(os.path.join(d, png), "rb").read()
    w, h = struct.unpack(">II", raw[16:24])
    assert w >= 150 * fig.get_figwidth() - 2, (png, w, fig.get_figwidth())
lat = figs["latency"]
ticks = [t.get_text() for t in lat.axes[0].get_xticklabels()]
assert ticks == ["256", "512", "1K"], ticks
assert all(ax.get_ylim()[0] == 0 for ax in lat.axes + figs["ranks"].axes + figs["accuracy"].axes), "y from 0"
for name in ("latency", "ranks", "accuracy"):
    assert "tiny" in figs[name]._suptitle.get_text(), (name, figs[name]._suptitle.get_text())
assert "runs per point" in lat._suptitle.get_text(), lat._suptitle.get_text()
legend = " ".join(t.get_text() for ax in figs["accuracy"].axes if ax.get_legend() for t in ax.get_legend().get_texts())
assert "n = 2" in legend, legend
hm = figs["heatmap"]
main, bar = hm.axes[0], hm.axes[1]
assert main.get_title() and main.get_xlabel().startswith("l2") and main.get_ylabel().startswith("l1"), main.get_title()
assert [t.get_text() for t in main.get_xticklabels()] == ["0", "1", "2", "3"], main.get_xticklabels()
assert "share" in bar.get_ylabel(), bar.get_ylabel()
assert "chosen filter layer (1)" in main.get_legend().get_texts()[0].get_text()
print("figures: titles and labels inside, ticks", ticks, f"dpi {plot.DPI}, model and counts named, heat map labelled")
PY

mkdir -p "$T/empty"
if "$PY" "$SRC/jobs/plot.py" "$T/empty" >/dev/null 2>&1; then fail "plot.py should fail on a directory with no results"; fi

[ "$FAILS" -eq 0 ] && echo "plots: all checks passed" || echo "plots: $FAILS check(s) failed"
exit $((FAILS > 0))
