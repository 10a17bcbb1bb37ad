"""quality_check.py — the verdict of the model quality tests (test_passkey_quality.sh,
test_needle_quality.sh) from `omnikv eval`'s per-sample JSON lines: every (context, variant)
cell must hold exactly the samples asked for; dense must average at least --dense-min (a broken
generator, template or scorer scores near 0); each OmniKV variant must score within
TOL = max(1, 100 / samples per cell) points of dense in every context (one flipped answer's
worth at small counts, the issue's 1 point from 100 samples on).

usage: quality_check.py SAMPLES.jsonl --ctx 2048,4096 --per-cell N [--dense-min P]
"""
import argparse
import collections
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument("samples")
ap.add_argument("--ctx", required=True)
ap.add_argument("--per-cell", type=int, required=True)
ap.add_argument("--dense-min", type=float, default=0.0)
ap.add_argument("--variants", default="k=2048,k=0.067")
a = ap.parse_args()

cells = collections.defaultdict(list)
for line in open(a.samples):
    r = json.loads(line)
    cells[(r["ctx"], r["variant"])].append(r["score"])
ctxs = [int(c) for c in a.ctx.split(",")]
variants = a.variants.split(",")
tol = max(1.0, 100.0 / a.per_cell)
bad = 0
for ctx in ctxs:
    for v in ["dense"] + variants:
        got = len(cells[(ctx, v)])
        if got != a.per_cell:
            print(f"FAIL: ctx {ctx} {v}: {got} samples, want {a.per_cell}")
            bad += 1
    if bad:
        continue
    mean = {v: sum(cells[(ctx, v)]) / a.per_cell for v in ["dense"] + variants}
    ok = mean["dense"] >= a.dense_min
    bad += not ok
    print(f"ctx {ctx}: dense {mean['dense']:.1f} {'>=' if ok else '<'} {a.dense_min:.0f}")
    for v in variants:
        d = abs(mean[v] - mean["dense"])
        ok = d <= tol + 1e-9
        bad += not ok
        print(f"ctx {ctx}: {v} {mean[v]:.1f}: |diff| {d:.1f} {'<=' if ok else '>'} {tol:.1f} points")
print("quality: " + ("FAIL" if bad else "ok"))
sys.exit(1 if bad else 0)
