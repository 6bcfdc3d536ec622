#!/usr/bin/env bash
# Every installed public header must compile on its own, as C11 and as C++.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
# the installed API, the pool's public header for tools, and the GPU tier's
for h in "$root"/include/kvpool/*.h "$root"/pool/include/kvstore/*.h "$root"/gpu/include/kvgpu/*.h; do
    name=$(basename "$(dirname "$h")")/$(basename "$h")
    printf '#include <%s>\n#include <%s>\nint main(void){return 0;}\n' "$name" "$name" >"$tmp/t.c"
    if ! gcc -std=c11 -pedantic -Wall -Wextra -Werror -I"$root/include" -I"$root/pool/include" -I"$root/gpu/include" -c "$tmp/t.c" -o "$tmp/t.o"; then
        echo "FAIL: $name does not compile alone as C11"; status=1
    fi
    if command -v g++ >/dev/null; then
        cp "$tmp/t.c" "$tmp/t.cc"
        if ! g++ -std=c++11 -Wall -Wextra -Werror -I"$root/include" -I"$root/pool/include" -I"$root/gpu/include" -c "$tmp/t.cc" -o "$tmp/t.o"; then
            echo "FAIL: $name does not compile alone as C++"; status=1
        fi
    fi
    echo "ok   $name"
done
exit $status
