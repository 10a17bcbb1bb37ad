#!/usr/bin/env bash
# gpu_bundle.sh — fills .gpu/ (git-ignored) with what one device call carries: .gpu/bin, the
# omnikv binary and the GPU test executables built for sm_90, and .gpu/debs, the Debian packages
# of every runtime library they and Open MPI load that the GPU image lacks (Open MPI with its
# plugins and launcher, PMIx, hwloc, cJSON, PCRE2, libpng, libevent, libfabric, UCX, ...), found
# as a closure over `ldd` and `apt-cache depends`. Checked by tests/gpu/dry_run.sh, which unpacks
# the packages into a prefix, hides the system Open MPI and runs tests/gpu/device_check.sh.
#
# usage: scripts/gpu_bundle.sh [--no-build] [--max-mib N]
#   --no-build   reuse build-gpu/ as it is
#   --max-mib N  fail when .gpu/ plus the tree that travels exceeds N MiB (default 56 of 64)
# OKV_GPU_CFLAGS adds host-code flags (default none: the CPU kernels choose their vector path at
# run time, so the binaries run on any x86-64 host).
set -euo pipefail

ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
BUILD=build-gpu
DEST=.gpu
MAX_MIB=56
DO_BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
    --no-build) DO_BUILD=0 ;;
    --max-mib) MAX_MIB=${2:?--max-mib needs a number}; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
    esac
    shift
done
CFLAGS=${OKV_GPU_CFLAGS:-}

# Packages never carried: the C and C++ runtimes the image's own programs are built on (a
# Debian copy first on the library path would shadow newer ones), and packaging or login tools
# that only the Debian dependency graph names (ssh is for multi-node launches).
EXCLUDE=" libc6 libgcc-s1 libstdc++6 gcc-12-base libcrypt1 debconf cdebconf dpkg adduser passwd
 tar install-info perl-base openssh-client libpam0g libpam-modules libpam-modules-bin
 libxml2 libicu72 "
# libxml2 (and its 10 MB libicu72) only feeds hwloc's optional libxml XML backend; hwloc falls
# back to its own parser without it.

# ---- 1. the binaries --------------------------------------------------------------------------
if [ $DO_BUILD = 1 ]; then
    cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DOMNIKV_CUDA=ON "-DCMAKE_C_FLAGS=$CFLAGS" >/dev/null
    cmake --build $BUILD -j "$(nproc)"
fi
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/debs"
grep -qx '/.gpu/' .gitignore || echo '/.gpu/' >>.gitignore
# test_backend_ops loops over every backend the build has, so it checks each CUDA op on the device
# through the table, as the engine calls it.
TESTS=(test_backend_ops)
for src in tests/gpu/test_*.c; do
    [ -e "$src" ] && TESTS+=("$(basename "$src" .c)")
done
cp $BUILD/omnikv "$DEST/bin/"
for t in "${TESTS[@]}"; do
    if [ -x "$BUILD/$t" ]; then cp "$BUILD/$t" "$DEST/bin/"; else echo "missing $BUILD/$t" >&2; exit 1; fi
done
strip "$DEST"/bin/*
{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%FT%TZ) on $(hostname), C flags: $CFLAGS"
    grep -E '^(CMAKE_CUDA_ARCHITECTURES|CMAKE_CUDA_COMPILER|OMNIKV_CUDA):' $BUILD/CMakeCache.txt
} >"$DEST/bin/BUILD_INFO"

# Each test executable holds its own copy of the CUDA kernels' machine code, which xz shrinks
# several times; device_check.sh unpacks .gpu/bin.tar.xz when there is one.
if [ "$(du -sm "$DEST/bin" | cut -f1)" -gt 16 ]; then
    tar -C "$DEST" -cJf "$DEST/bin.tar.xz" bin
    echo "packed .gpu/bin ($(du -sh "$DEST/bin" | cut -f1)) into .gpu/bin.tar.xz ($(du -sh "$DEST/bin.tar.xz" | cut -f1))"
fi

# ---- 2. the package closure -------------------------------------------------------------------
# OWNER[path]: the package that installed each shared library (dpkg's file lists, read once).
declare -A OWNER=()
while read -r pkg path; do OWNER[$path]=$pkg; done < <(
    awk '/\.so(\.|$)/ { f = FILENAME; sub(/.*\//, "", f); sub(/(:[a-z0-9]+)?\.list$/, "", f); print f, $0 }' \
        /var/lib/dpkg/info/*.list)
# owner FILE: the package that installed FILE (merged /usr: try the path both ways).
owner() {
    local f=$1 p
    for p in "$f" "${f#/usr}" "/usr$f" "$(readlink -f "$f")"; do
        if [ -n "${OWNER[$p]:-}" ]; then echo "${OWNER[$p]}"; return 0; fi
    done
    return 1
}
# elf_deps FILE...: the packages owning the libraries the files load; libraries no package owns
# (the CUDA toolkit's) go to $DEST/unowned.txt, unresolved ones to $DEST/unresolved.txt.
elf_deps() {
    local f lib path
    for f in "$@"; do
        [ -f "$f" ] && [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
        while read -r lib path; do
            if [ "$path" = "not" ]; then echo "$lib (for $f)" >>"$DEST/unresolved.txt"; continue; fi
            [ -n "$path" ] || continue
            owner "$path" || echo "$path" >>"$DEST/unowned.txt"
        done < <(ldd "$f" 2>/dev/null | awk '/=>/ {print $1, $3}')
    done
}
# depends PKG: its direct Depends and Pre-Depends, first alternative, real packages only.
depends() {
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances "$1" 2>/dev/null |
        awk '/^ *(\|)?(Pre)?Depends:/ { alt = ($1 ~ /^\|/); if (!skip && $2 !~ /^</) print $2; skip = alt }'
}
: >"$DEST/unowned.txt"
: >"$DEST/unresolved.txt"
declare -A SEEN=()
QUEUE=(openmpi-bin libopenmpi3 openmpi-common libpmix2)
mapfile -t -O ${#QUEUE[@]} QUEUE < <(elf_deps "$DEST"/bin/* | sort -u)
while [ ${#QUEUE[@]} -gt 0 ]; do
    pkg=${QUEUE[0]%%:*}
    QUEUE=("${QUEUE[@]:1}")
    [ -z "${SEEN[$pkg]:-}" ] || continue
    case $EXCLUDE in *" $pkg "*) continue ;; esac
    SEEN[$pkg]=1
    mapfile -t -O ${#QUEUE[@]} QUEUE < <(depends "$pkg")
    if dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        mapfile -t files < <(dpkg-query -L "$pkg" | grep -E '\.so(\.|$)|/bin/|/libexec/')
        mapfile -t -O ${#QUEUE[@]} QUEUE < <(elf_deps "${files[@]}" | sort -u)
    fi
done
PKGS=$(printf '%s\n' "${!SEEN[@]}" | sort)
echo "packages ($(echo "$PKGS" | wc -l)): $(echo $PKGS)"
sort -u -o "$DEST/unowned.txt" "$DEST/unowned.txt"
sort -u -o "$DEST/unresolved.txt" "$DEST/unresolved.txt"
if [ -s "$DEST/unowned.txt" ]; then
    echo "libraries no package owns (the device image must have them):"
    sed 's/^/  /' "$DEST/unowned.txt"
fi
if [ -s "$DEST/unresolved.txt" ]; then
    echo "libraries not found here (optional plugins' dependencies):"
    sed 's/^/  /' "$DEST/unresolved.txt"
fi

# The installed version where the archive still has it, so the device loads what was tested
# here; otherwise the archive's current one.
for p in $PKGS; do
    v=$(dpkg-query -W -f '${Version}' "$p" 2>/dev/null || true)
    if [ -n "$v" ] && apt-cache madison "$p" | awk -F'|' -v v="$v" '{gsub(/ /, "", $2)} $2 == v {f = 1} END {exit !f}'; then
        spec="$p=$v"
    else
        spec=$p
        [ -z "$v" ] || echo "$p: $v is no longer in the archive; taking $(apt-cache policy "$p" | awk '/Candidate/ {print $2}')"
    fi
    (cd "$DEST/debs" && apt-get download -q -o APT::Sandbox::User=root "$spec" >/dev/null)
done
echo "$PKGS" >"$DEST/debs/PACKAGES"

[ ! -f "$DEST/bin.tar.xz" ] || rm -rf "${DEST:?}/bin"

# ---- 3. the size of what travels ---------------------------------------------------------------
tree_b=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
gpu_b=$(du -sb "$DEST" | cut -f1)
debs_b=$(du -sb "$DEST/debs" | cut -f1)
bin_b=$(du -scb "$DEST"/bin* | tail -n 1 | cut -f1)
total_mib=$(( (tree_b + gpu_b + 1048575) / 1048576 ))
printf 'size: tree %.1f MiB + .gpu %.1f MiB (bin %.1f, debs %.1f in %d files) = %d MiB of 64\n' \
    "$(echo "$tree_b / 1048576" | bc -l)" "$(echo "$gpu_b / 1048576" | bc -l)" \
    "$(echo "$bin_b / 1048576" | bc -l)" "$(echo "$debs_b / 1048576" | bc -l)" \
    "$(ls "$DEST"/debs/*.deb | wc -l)" "$total_mib"
if [ "$total_mib" -gt "$MAX_MIB" ]; then
    echo "gpu_bundle.sh: $total_mib MiB would travel, over the $MAX_MIB MiB allowed; drop packages or strip the binaries" >&2
    exit 1
fi
