#!/usr/bin/env bash
# dry_run.sh — tests/gpu/device_check.sh on this machine, as far as it goes without a GPU: a fake
# nvidia-smi that lists none, and, in a private mount namespace, the system's Open MPI, PMIx and
# hwloc plugin folders hidden behind empty ones, so that MPI runs only if the carried packages
# relocate. Checks that results.json is one JSON object naming every step, that the MPI smoke test
# passed from the prefix, and that the GPU steps were skipped, not failed.
#
# usage: tests/gpu/dry_run.sh [BUDGET_S]   (after scripts/gpu_bundle.sh; needs root for unshare)
set -u
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT" || exit 2
[ -d .gpu/debs ] || { echo "dry_run.sh: no .gpu/debs; run scripts/gpu_bundle.sh first" >&2; exit 2; }
T=$(mktemp -d /tmp/okv_dry.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/empty" "$T/out"
printf '#!/bin/sh\necho "No devices were found"\nexit 6\n' >"$T/bin/nvidia-smi"
chmod +x "$T/bin/nvidia-smi"
A=/usr/lib/x86_64-linux-gnu
unshare -m bash -c '
    set -e
    for d in '"$A"'/openmpi '"$A"'/pmix2 '"$A"'/hwloc /usr/share/openmpi /etc/openmpi; do
        [ -d "$d" ] && mount --bind "'"$T"'/empty" "$d"
    done
    for f in /usr/bin/orterun /usr/bin/orted; do [ -e "$f" ] && mount --bind /dev/null "$f"; done
    export PATH="'"$T"'/bin:$PATH" OUT="'"$T"'/out"
    tests/gpu/device_check.sh '"${1:-300}"'
'
echo "device_check.sh exit $?"
python3 - "$T/out/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["steps"]
print(json.dumps(r, indent=1)[:3000])
want = {"setup": "ok", "mpi_smoke": "ok", "gen_smollm2": "ok", "gen_llama3_8b": "skipped",
        "e2e": "skipped", "bench": "skipped"}
bad = [f"{k}: {s.get(k, {}).get('status')} (want {v})" for k, v in want.items()
       if s.get(k, {}).get("status") != v]
tests = [k for k in s if k.startswith("test:")]
assert tests, "no test executables ran"
assert not r["info"]["unresolved_libs"], r["info"]
assert not bad, bad
print(f"ok: dry run: {len(s)} steps as expected ({', '.join(tests)} "
      f"{[s[t]['status'] for t in tests]})")
PY
