#!/usr/bin/env bash
# test_plots.sh — jobs/study.sh and jobs/plot.py end to end on a generated tiny model: a small
# study (bench of 2-sequence batches on 1 and 2 ranks over three contexts and three variants, eval
# of two tasks) into one results directory, then checks the bench JSON (rank count, batch, every
# cell, latency spreads, memory), the eval records, and that the three figures are real PNGs of a
# sensible size; and that plot.py refuses a directory with nothing to plot. Needs OMNIKV_BIN,
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

mkdir -p "$T/empty"
if "$PY" "$SRC/jobs/plot.py" "$T/empty" >/dev/null 2>&1; then fail "plot.py should fail on a directory with no results"; fi

[ "$FAILS" -eq 0 ] && echo "plots: all checks passed" || echo "plots: $FAILS check(s) failed"
exit $((FAILS > 0))
