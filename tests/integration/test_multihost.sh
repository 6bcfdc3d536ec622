#!/usr/bin/env bash
# A pool across hosts: a coordinator, three pool nodes and a client, each in
# a network namespace of its own, joined by veth pairs to a bridge in a
# "switch" namespace.  The client replays part of the trace across them;
# then one node is cut off (nftables drops all its traffic): the
# coordinator drops it when its lease runs out and a replay meanwhile sees
# clean misses (no errors, every byte it loads checked); the rule goes, the
# node joins again and re-publishes, and a last replay is clean too.
# Needs root, ip netns, nft, curl; skips (77) otherwise.  Everything it
# creates (processes, namespaces, links, rules) goes at the end.
set -euo pipefail

skip() { echo "SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for tool in ip nft curl; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done
: "${KVPOOL_COORD_BIN:?}" "${KVPOOL_NODE_BIN:?}" "${KVPOOL_CLI_BIN:?}"

tag=kvp$$
sw=$tag-sw
net=10.199.77
token=multihost-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/kvpool-multihost.XXXXXX")
pids=()
namespaces=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for f in "$work"/*.err; do echo "== $f" >&2; tail -5 "$f" >&2; done
    exit 1
}

ip netns add "$sw" 2>/dev/null || skip "cannot create a network namespace"
namespaces+=("$sw")
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
# host NAME LAST-OCTET: a namespace with eth0 at $net.LAST on the bridge
host() {
    local ns=$tag-$1
    ip netns add "$ns"
    namespaces+=("$ns")
    ip -n "$sw" link add "p-$1" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "p-$1" master br0 up
    ip -n "$ns" addr add "$net.$2/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
}
host coord 1
host n1 11
host n2 12
host n3 13
host client 100

# on NAME CMD...: run in that host's namespace, UCX on its own interface
on() {
    local ns=$tag-$1
    shift
    ip netns exec "$ns" env UCX_NET_DEVICES=eth0 KVPOOL_TOKEN="$token" "$@"
}
# start NAME CMD...: a daemon in NAME's namespace; waits for its listening line
start() {
    local name=$1
    shift
    on "$name" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q "listening on" "$work/$name.out" && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || fail "$name exited"
        sleep 0.1
    done
    fail "$name did not start"
}
coord=$net.1:7080
start coord "$KVPOOL_COORD_BIN" --listen "$net.1" --port 7080 --http-port 9480 \
    --token "$token" --lease-ms 1500
for i in 1 2 3; do
    start "n$i" "$KVPOOL_NODE_BIN" --listen "$net.1$i" --port 7070 --memory 64MiB \
        --name "n$i" --token "$token" --coord "$coord"
done

metric() { # NAME: the coordinator's value of a metric, seen from the client's host
    on client curl -sf --max-time 5 "http://$net.1:9480/metrics" |
        awk -v m="$1" '$1 == m { print $2 }'
}
wait_nodes() { # N SECONDS
    local n
    for _ in $(seq $(($2 * 5))); do
        n=$(metric kvpool_coord_nodes || true)
        [ "$n" = "$1" ] && return 0
        sleep 0.2
    done
    fail "the coordinator counts ${n:-no} nodes, not $1"
}
blocks_of() { # I: what the coordinator counts of node I's blocks
    on client curl -sf --max-time 5 "http://$net.1:9480/metrics" >"$work/coord.prom"
    awk -v n="node=\"$net.1$1:7070\"" 'index($0, "kvpool_cluster_blocks{") == 1 &&
        index($0, n) { s += $2 } END { print s + 0 }' "$work/coord.prom"
}
wait_nodes 3 10

if [ -n "${KVP_TRACE:-}" ] && [ -r "$KVP_TRACE" ]; then
    trace=$KVP_TRACE
else
    trace=$work/trace.jsonl
    "$KVPOOL_CLI_BIN" gen-trace --requests 600 --seed 11 >"$trace"
fi
replay() { # NAME REQUESTS: a replay from the client host; its JSON in $work/NAME.json
    on client "$KVPOOL_CLI_BIN" replay "$trace" --coord "$coord" --requests "$2" \
        --block-size 32KiB --json >"$work/$1.json" 2>"$work/$1.err" ||
        fail "replay $1: $(tail -1 "$work/$1.json")"
    grep -q '"errors":0' "$work/$1.json" || fail "replay $1 had errors: $(tail -1 "$work/$1.json")"
    echo "$1: $(grep -o '"hit_ratio":[0-9.]*' "$work/$1.json"), errors 0"
}

replay before 300
sleep 1 # a heartbeat carries the nodes' counters
# the victim: the node placement gave the most blocks
cut=0 most=0
for i in 1 2 3; do
    b=$(blocks_of "$i")
    [ "$b" -gt "$most" ] && cut=$i most=$b
done
[ "$cut" != 0 ] || fail "no node holds a block after the first replay"
echo "cutting node $cut off ($most blocks)"

# cut it off: everything in or out of its host is dropped
on "n$cut" nft -f - <<'NFT'
table inet kvpcut {
    chain in { type filter hook input priority 0; policy drop; iif lo accept; }
    chain out { type filter hook output priority 0; policy drop; oif lo accept; }
}
NFT
wait_nodes 2 10
[ "$(blocks_of "$cut")" = 0 ] || fail "node $cut's blocks are still counted"
replay during 300

# restore it: it joins again and publishes what it holds
on "n$cut" nft delete table inet kvpcut
wait_nodes 3 15
for _ in $(seq 50); do
    [ "$(blocks_of "$cut")" -gt 0 ] && break
    sleep 0.2
done
[ "$(blocks_of "$cut")" -gt 0 ] || fail "node $cut rejoined without its blocks"
[ "$(grep -c "joined coordinator" "$work/n$cut.err")" -ge 2 ] || fail "node $cut did not join again"
replay after 300
# the same requests each time: with the node gone its blocks were misses
# (found nowhere, so stored again elsewhere), with all back nearly all hit
ratio() { grep -o '"hit_ratio":[0-9.]*' "$work/$1.json" | cut -d: -f2; }
awk -v d="$(ratio during)" -v a="$(ratio after)" 'BEGIN { exit !(d < 0.999 && a > d) }' ||
    fail "hit ratios before/during/after: $(ratio before) $(ratio during) $(ratio after)"
echo "multihost: 3 nodes, node $cut cut off and back; every replay clean"
