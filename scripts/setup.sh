#!/usr/bin/env bash
# Install the Debian packages kvpool needs, if any are missing (idempotent),
# then configure and build into $1 (default build/) with extra CMake args.
# Sourced by scripts/demo and scripts/test.
set -euo pipefail

KVP_PACKAGES="cmake make gcc g++ pkg-config protobuf-c-compiler libprotobuf-c-dev libxxhash-dev libinih-dev libjansson-dev liburing-dev libmicrohttpd-dev libsystemd-dev systemd libucx-dev libibverbs-dev librdmacm-dev clang libclang-rt-14-dev"
# Extra packages a caller needs (bench/run.sh: iperf3, Redis...).
KVP_PACKAGES="$KVP_PACKAGES ${KVP_EXTRA_PACKAGES:-}"

kvp_install_packages() {
    local missing=() pkg sudo=""
    for pkg in $KVP_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
        { $sudo apt-get update -qq && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# kvp_build DIR [cmake args...]: configure and build everything, or only
# the targets in $KVP_TARGETS; the compiler's output is shown on failure.
kvp_build() {
    local dir=$1 log
    shift
    mkdir -p "$dir"
    log="$dir/build.log"
    if ! { cmake -S "$KVP_ROOT" -B "$dir" -DKVP_WERROR=ON "$@" &&
           cmake --build "$dir" -j "$(nproc)" ${KVP_TARGETS:+--target $KVP_TARGETS}; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "build failed in $dir" >&2
        return 1
    fi
}

KVP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KVP_ROOT
kvp_install_packages
