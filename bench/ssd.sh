#!/usr/bin/env bash
# bench/ssd.sh [DIR]: the SSD tier against fio on the same directory, in
# the same run.  `kvpool bench --tier ssd` measures a node's demotion (SSD
# writes while blocks are put through a host tier too small for them) and
# staging (SSD reads while the oldest blocks are got back), with 2 MiB
# blocks; fio writes and then reads a file of the same size with O_DIRECT
# through io_uring, 2 MiB per I/O, as many in flight as the node
# (ssd_queue_depth 16), and an fdatasync every 32 writes, as the node does
# after each batch of at most 32 demoted blocks.  Prints both and the
# ratios.
#
# DIR (default: a new directory under ${TMPDIR:-/tmp}) must be on a
# filesystem with O_DIRECT; the bench's files in it are removed on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KVP_EXTRA_PACKAGES="fio"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

BLOCKS=2048          # of 2 MiB: 4 GiB put through 1 GiB of host memory
SIZE_MIB=$((BLOCKS * 2))
if [ $# -gt 0 ]; then
    DIR=$(mktemp -d "$1/kvpool-ssd-bench.XXXXXX")
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/kvpool-ssd-bench.XXXXXX")
fi
# shellcheck disable=SC2317 # run by the trap
cleanup() { rm -rf "$DIR"; }
trap cleanup EXIT

if [ ! -x build/tools/kvpool ] || [ ! -x build/pool/kvpool-node ]; then
    echo "building kvpool into build/" >&2
    KVP_TARGETS="kvpool-node kvpool-cli" kvp_build build
fi

echo "kvpool bench --tier ssd in $DIR ($SIZE_MIB MiB)" >&2
KV=$(build/tools/kvpool bench --tier ssd --ssd-dir "$DIR/kvpool" --ssd-size 8GiB \
    --memory 1GiB --blocks "$BLOCKS" --json | grep '^{')
rm -rf "$DIR/kvpool"

fio_gbps() { # RW EXTRA...: fio's bandwidth in GB/s
    local rw=$1
    shift
    fio --name=ssd --directory="$DIR" --filename=fio.dat --rw="$rw" --bs=2M \
        --size="${SIZE_MIB}M" --direct=1 --ioengine=io_uring --iodepth=16 "$@" \
        --output-format=json |
        python3 -c 'import json, sys
j = json.load(sys.stdin)["jobs"][0]
print(j[sys.argv[1]]["bw_bytes"] / 1e9)' "$rw"
}
echo "fio write, then read, of $SIZE_MIB MiB in $DIR" >&2
FIO_W=$(fio_gbps write --fdatasync=32)
FIO_R=$(fio_gbps read)

python3 - "$KV" "$FIO_W" "$FIO_R" <<'EOF'
import json, sys
kv = {}
for line in sys.argv[1].splitlines():
    r = json.loads(line)
    kv[r["op"]] = r
fio_w, fio_r = float(sys.argv[2]), float(sys.argv[3])
print("| path | kvpool GB/s | fio GB/s | kvpool / fio |")
print("| --- | --- | --- | --- |")
for op, name, fio in (("demote", "write (demotion)", fio_w), ("stage", "read (staging)", fio_r)):
    g = kv[op]["gbps"]
    print(f"| {name} | {g:.3f} | {fio:.3f} | {g / fio:.2f} |")
EOF
