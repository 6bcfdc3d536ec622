#!/usr/bin/env bash
# A pool across hosts: a coordinator, three pool nodes and a client, each in
# a network namespace of its own, joined by veth pairs to a bridge in a
# "switch" namespace.  The client replays part of the trace across them;
# then one node is cut off (nftables drops all its traffic) while a paced
# replay is in flight.  That replay, and one after the node's lease has run
# out (the coordinator counts 2 nodes, and the node's blocks have left its
# index), see clean misses: no errors, every byte loaded checked.  The rule
# goes, the node joins again and re-publishes (3 nodes, its blocks back in
# the index), and a last replay is clean and hits what the node held.  The
# coordinator's counters come from `kvpool stat --coord` (its /metrics
# gauge is checked too when curl is there).
# Needs root, ip netns and nft; skips (77) otherwise.  Everything it creates
# (processes, namespaces with their links and rules) goes at the end, even
# on failure.  KEEP=1 keeps the work directory (logs, JSON).
set -euo pipefail

skip() { echo "SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for tool in ip nft; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done
: "${KVPOOL_COORD_BIN:?}" "${KVPOOL_NODE_BIN:?}" "${KVPOOL_CLI_BIN:?}"
t0=$(date +%s.%N)

tag=kvp$$
net=10.199.77
token=multihost-$$-$RANDOM
work=$(mktemp -d "${TMPDIR:-/tmp}/kvpool-multihost.XXXXXX")
pids=()
namespaces=()
cleanup() {
    local rc=$? ns p left
    trap - EXIT INT TERM
    # the daemons started here, then anything else still in the namespaces
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    done
    for _ in $(seq 50); do
        left=0
        for ns in "${namespaces[@]}"; do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || left=1
        done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    for ns in "${namespaces[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    done
    wait 2>/dev/null || true
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
    echo "FAIL: $*" >&2
    for f in "$work"/*.err; do
        [ -s "$f" ] || continue
        echo "== $f" >&2
        tail -5 "$f" >&2
    done
    exit 1
}
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }

sw=$tag-sw
ip netns add "$sw" 2>/dev/null || skip "cannot create a network namespace"
namespaces+=("$sw")
ip netns exec "$sw" nft list tables >/dev/null 2>&1 ||
    skip "nft does not work in a network namespace (no nf_tables?)"
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

# on NAME CMD...: run CMD in that host's namespace (UCX on its own interface)
on() {
    local ns=$tag-$1
    shift
    ip netns exec "$ns" env UCX_NET_DEVICES=eth0 KVPOOL_TOKEN="$token" "$@"
}
# start NAME CMD...: a daemon in NAME's namespace; waits for its listening
# line.  `ip netns exec` and `env` exec the daemon, so $! is its pid.
start() {
    local name=$1
    shift
    ip netns exec "$tag-$name" env UCX_NET_DEVICES=eth0 "$@" \
        >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q "listening on" "$work/$name.out" && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || fail "$name exited"
        sleep 0.1
    done
    fail "$name did not start"
}

coord=$net.1:7080
http=""
if command -v curl >/dev/null && "$KVPOOL_COORD_BIN" --help 2>&1 | grep -q -- --http-port; then
    http=9480
fi
start coord "$KVPOOL_COORD_BIN" --listen "$net.1" --port 7080 --token "$token" \
    --lease-ms 1000 ${http:+--http-port "$http"}
for i in 1 2 3; do
    start "n$i" "$KVPOOL_NODE_BIN" --listen "$net.1$i" --port 7070 \
        --advertise "$net.1$i:7070" --memory 192MiB --name "n$i" --token "$token" \
        --coord "$coord"
done

field() { # NAME: a number from the JSON object on stdin
    grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2
}
coord_stat() { # FIELD: the coordinator's counter, asked from the client's host
    on client "$KVPOOL_CLI_BIN" stat --coord "$coord" --json 2>>"$work/stat.err" | field "$1"
}
node_blocks() { # I: the blocks node I holds (all tiers), asked from the client's host
    on client "$KVPOOL_CLI_BIN" stat --node "$net.1$1:7070" --json 2>>"$work/stat.err" |
        grep -o '"blocks":[0-9]*' | awk -F: '{ s += $2 } END { print s + 0 }'
}
wait_nodes() { # N SECONDS: until the coordinator counts N nodes
    local n=""
    for _ in $(seq $(($2 * 10))); do
        n=$(coord_stat nodes || true)
        [ "$n" = "$1" ] && return 0
        sleep 0.1
    done
    fail "the coordinator counts ${n:-no} nodes, not $1 (after $2 s)"
}
wait_blocks_steady() { # the index's block count, once two readings 0.3 s apart agree
    local a b=""
    for _ in $(seq 30); do
        a=$(coord_stat blocks || true)
        sleep 0.3
        b=$(coord_stat blocks || true)
        [ -n "$a" ] && [ "$a" = "$b" ] && { echo "$b"; return 0; }
    done
    echo "${b:-0}"
}
check_gauge() { # N: the /metrics gauge of joined nodes agrees, when there is one
    local g
    [ -n "$http" ] || return 0
    g=$(on client curl -sf --max-time 5 "http://$net.1:$http/metrics" |
        awk '$1 == "kvpool_coord_nodes" { print $2 }') || true
    [ -z "$g" ] || [ "$g" = "$1" ] || fail "/metrics says $g nodes, kvpool stat says $1"
}
wait_nodes 3 10
check_gauge 3

if [ -n "${KVP_TRACE:-}" ] && [ -r "$KVP_TRACE" ]; then
    trace=$KVP_TRACE
else
    trace=$work/trace.jsonl
    "$KVPOOL_CLI_BIN" gen-trace --requests 300 --seed 11 >"$trace"
fi
replay() { # NAME [ARGS...]: 300 records from the client's host; JSON in $work/NAME.json
    local name=$1 s=$SECONDS
    shift
    on client "$KVPOOL_CLI_BIN" replay "$trace" --coord "$coord" --requests 300 \
        --block-size 32KiB --json "$@" >"$work/$name.json" 2>"$work/$name.err" ||
        fail "replay $name failed: $(tail -1 "$work/$name.json")"
    grep -q '"errors":0[,}]' "$work/$name.json" ||
        fail "replay $name had errors: $(tail -1 "$work/$name.json")"
    echo "replay $name: $(tail -1 "$work/$name.json" | grep -o '"hit_ratio":[0-9.]*')," \
         "errors 0, $((SECONDS - s)) s"
}
ratio() { tail -1 "$work/$1.json" | grep -o '"hit_ratio":[0-9.]*' | cut -d: -f2; }

replay before
total=$(wait_blocks_steady)
# the victim: the node placement gave the most blocks
cut=0 most=0
for i in 1 2 3; do
    b=$(node_blocks "$i")
    echo "node n$i holds $b blocks"
    [ "$b" -gt "$most" ] && cut=$i most=$b
done
[ "$cut" != 0 ] || fail "no node holds a block after the first replay"
echo "index: $total blocks; cutting node n$cut off ($most blocks) at $(elapsed)"
expiries=$(coord_stat lease_expiries)

# a replay paced over about 4 s (--time-scale), in flight when the node is
# cut off: the calls that were going to it fail, and the blocks are misses
last=$(sed -n 300p "$trace" | grep -o '"timestamp": *[0-9]*' | grep -o '[0-9]*$' || true)
replay cut --time-scale "$(awk -v t="${last:-0}" 'BEGIN { print (t > 4000 ? t / 4000 : 1) }')" &
replay_pid=$!
pids+=("$replay_pid")
sleep 1.5
# cut it off: everything in or out of its host is dropped
on "n$cut" nft -f - <<'NFT'
table inet kvpcut {
    chain in { type filter hook input priority 0; policy drop; iif lo accept; }
    chain out { type filter hook output priority 0; policy drop; oif lo accept; }
}
NFT
echo "node n$cut cut off at $(elapsed)"
wait "$replay_pid" || exit 1
wait_nodes 2 10
echo "node n$cut left the coordinator at $(elapsed)"
check_gauge 2
[ "$(coord_stat lease_expiries)" -gt "$expiries" ] || fail "no lease expired"
# its blocks left the index (only theirs: the others' stay; the cut replay
# may have stored some of them again on the other two)
left=$(wait_blocks_steady)
[ "$left" -lt "$total" ] || fail "the index still has $left of $total blocks"
replay during
wait_blocks_steady >/dev/null
events=$(coord_stat events)

# restore it: it joins again and publishes what it holds
on "n$cut" nft delete table inet kvpcut
wait_nodes 3 15
echo "node n$cut rejoined at $(elapsed)"
check_gauge 3
[ "$(grep -c "joined coordinator" "$work/n$cut.err")" -ge 2 ] || fail "node n$cut did not join again"
# it publishes its whole inventory again: as many events as it holds blocks
held=$(node_blocks "$cut")
for _ in $(seq 50); do
    [ $(($(coord_stat events) - events)) -ge "$held" ] && break
    sleep 0.1
done
[ $(($(coord_stat events) - events)) -ge "$held" ] ||
    fail "node n$cut rejoined without its $held blocks ($(($(coord_stat events) - events)) events)"
echo "node n$cut published its $held blocks again"
replay after
# the same requests each time: with the node gone its blocks were misses
# (found nowhere, so stored again elsewhere), with all back nearly all hit
awk -v d="$(ratio during)" -v a="$(ratio after)" 'BEGIN { exit !(d < 0.999 && a > d) }' ||
    fail "hit ratios before/cut/during/after: $(ratio before) $(ratio cut) $(ratio during) $(ratio after)"
echo "hit ratios before/cut/during/after: $(ratio before) $(ratio cut) $(ratio during) $(ratio after)"
echo "multihost: 3 nodes, node n$cut cut off and back; every replay clean; $(elapsed)"
