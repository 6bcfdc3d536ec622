#!/usr/bin/env bash
# bench/run.sh [--quick]: measure kvpool's put/get bandwidth next to the
# ceilings of each path (memcpy, TCP loopback, a veth pair between two
# network namespaces) and next to Redis, and print one markdown table.
# bench/README.md says what each row means.
#
#   --quick   128 KiB and 2 MiB blocks only, a quarter of the data, shorter
#             ceilings: a check that everything runs, not figures to quote.
#
# Progress goes to stderr, the report to stdout.  Runs from any directory;
# builds kvpool into build/ if it is not there; everything it starts is
# stopped and every temporary file removed on exit, failure included.
set -euo pipefail

usage() { echo "usage: bench/run.sh [--quick]"; }
QUICK=0
case "${1:-}" in
    "") ;;
    --quick) QUICK=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Installs whatever kvpool and the bench's own tools need and defines kvp_build.
export KVP_EXTRA_PACKAGES="iperf3 redis-server redis-tools jq iproute2"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

MiB=$((1 << 20))
GiB=$((1 << 30))
if [ "$QUICK" = 1 ]; then
    SIZES=(131072 2097152)
    TARGET=$((256 * MiB)) # bytes each kvpool or Redis run moves, at least
    CEIL_SECS=2           # iperf3 seconds; memcpy copies for a quarter of it
else
    SIZES=(131072 2097152 16777216)
    TARGET=$GiB
    CEIL_SECS=5
fi
BATCHES=(1 32)
MIN_BLOCKS=128            # so that batch 32 makes 4 calls at 16 MiB
REDIS_SPAN=$((128 * MiB)) # Redis keyspace bytes: well past the LLC
NODE=build/pool/kvpool-node
CLI=build/tools/kvpool
NS_A=kvb-a NS_B=kvb-b ADDR_A=10.77.0.1 ADDR_B=10.77.0.2 TOKEN=x

log() { printf 'bench: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d -t kvpool-bench.XXXXXX)
PIDS=()  # servers started and not yet stopped
NETNS=() # namespaces this run created
# shellcheck disable=SC2317 # run by the trap
cleanup() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
# ns_prefix NS: set PRE to the prefix that runs a command in netns NS ("-":
# this one).  Servers are started as "${PRE[@]}" cmd &, never through a
# function, so that $! is the server itself (ip netns exec execs it).
ns_prefix() {
    PRE=()
    [ "$1" = - ] || PRE=(ip netns exec "$1")
}

# stop PID: terminate a server started here and wait for it.
stop() {
    local pid=$1 p keep=()
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# free_port: a TCP port nothing listens on right now.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 30000))
        [ -z "$(ss -Htln "sport = :$port")" ] && { echo "$port"; return; }
    done
}

# serve NS PORT CMD...: start a server in netns NS and wait until something
# listens on PORT there; sets SERVER_PID.  Fails if the server exits first
# (a port taken since free_port looked, say).
serve() {
    local ns=$1 port=$2 i
    shift 2
    ns_prefix "$ns"
    "${PRE[@]}" "$@" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 100; i++)); do
        [ -n "$("${PRE[@]}" ss -Htln "sport = :$port")" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/server.log" >&2
    stop "$SERVER_PID"
    return 1
}

# serve_loopback CMD...: serve on a free loopback port, the word PORT in
# CMD standing for it; sets SERVER_PORT too.
serve_loopback() {
    local arg cmd
    for _ in 1 2 3; do
        SERVER_PORT=$(free_port)
        cmd=()
        for arg in "$@"; do cmd+=("${arg/#PORT/$SERVER_PORT}"); done
        serve - "$SERVER_PORT" "${cmd[@]}" && return 0
    done
    log "cannot start $1"
    return 1
}

# start_node NS MEMORY [ARGS...]: start kvpool-node in netns NS on a port it
# picks; sets NODE_PID, and NODE_PORT from its "listening on" line.
start_node() {
    local ns=$1 memory=$2 i
    shift 2
    ns_prefix "$ns"
    "${PRE[@]}" "$NODE" --port 0 --memory "$memory" "$@" >"$TMP/node.out" 2>"$TMP/node.err" &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    for ((i = 0; i < 100; i++)); do
        NODE_PORT=$(sed -n 's/^kvpool-node listening on .*:\([0-9]*\)$/\1/p' "$TMP/node.out")
        [ -n "$NODE_PORT" ] && return 0
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/node.err" >&2
    stop "$NODE_PID"
    return 1
}

# Results, keyed PATH/OP/SIZE/BATCH ("-" where one does not apply): GB/s,
# p50 and p99 in us, how it was measured, a remark.  ROWS: table order.
# PATH is memcpy, lo (iperf3 on loopback), veth (iperf3 on the veth pair),
# redis, shm, frame, ucx (kvt UCX one-sided, TCP loopback) or vethkv
# (kvpool frame on the veth pair).
declare -A GBPS P50 P99 HOW NOTE
ROWS=()
FAILED=0
record() { # KEY GBPS P50 P99 HOW [NOTE]
    ROWS+=("$1")
    GBPS[$1]=$2 P50[$1]=$3 P99[$1]=$4 HOW[$1]=$5 NOTE[$1]=${6:-}
}

# ceiling KEY GBPS HOW: record a ceiling.  Each is measured before and
# after the rest; other load only ever lowers a ceiling, so the higher run
# is kept and both are shown.
declare -A RUNS
ceiling() {
    local key=$1 gbps=$2 how=$3
    if [ -z "${GBPS[$key]:-}" ]; then
        record "$key" "$gbps" - - "$how"
        RUNS[$key]=$(num "$gbps")
    else
        RUNS[$key]+=" and $(num "$gbps")"
        GBPS[$key]=$(awk -v a="${GBPS[$key]}" -v b="$gbps" 'BEGIN { print (b > a ? b : a) }')
        NOTE[$key]="best of ${RUNS[$key]} GB/s, measured before and after the rest"
    fi
}

num() { # 3 significant-ish digits; words pass through
    awk -v x="$1" 'BEGIN { if (x ~ /^[0-9.]+([eE][-+]?[0-9]+)?$/)
        printf "%.*f", (x < 10 ? 2 : (x < 100 ? 1 : 0)), x; else printf "%s", x }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }

size_label() {
    if (($1 % MiB == 0)); then echo "$(($1 / MiB)) MiB"; else echo "$(($1 >> 10)) KiB"; fi
}

# blocks_for SIZE: blocks (or values) one run moves: TARGET bytes, and at
# least MIN_BLOCKS.
blocks_for() {
    local n=$((TARGET / $1))
    echo $((n < MIN_BLOCKS ? MIN_BLOCKS : n))
}

# ------------------------------------------------------------ measurements
# memcpy ceiling: one thread copying blocks through a 1 GiB span.
bench_memcpy() {
    local size secs
    secs=$(awk -v s="$CEIL_SECS" 'BEGIN { print s / 4 }')
    [ -x "$TMP/memcpy_bw" ] || cc -O2 -o "$TMP/memcpy_bw" bench/memcpy_bw.c
    for size in "${SIZES[@]}"; do
        log "memcpy, $(size_label "$size") blocks"
        ceiling "memcpy/copy/$size/-" "$("$TMP/memcpy_bw" "$size" "$GiB" "$secs")" \
            "bench/memcpy_bw.c: 1 thread, ${secs} s through a 1 GiB span"
    done
}

# iperf PATH CLIENT_NS ADDR PORT: single-stream TCP bandwidth from netns
# CLIENT_NS to the iperf3 server at ADDR:PORT, in writes of 1 MiB (iperf3's
# largest; its default 128 KiB gets ~15% less on loopback).
iperf() {
    local path=$1 ns=$2 addr=$3 port=$4
    log "iperf3, $path"
    ns_prefix "$ns"
    "${PRE[@]}" iperf3 -c "$addr" -p "$port" -t "$CEIL_SECS" -l 1M -J >"$TMP/iperf.json"
    ceiling "$path/stream/-/-" \
        "$(jq -r '.end.sum_received.bits_per_second / 8e9' "$TMP/iperf.json")" \
        "iperf3 -c $addr -t $CEIL_SECS -l 1M -J, 1 stream"
}

iperf_loopback() {
    serve_loopback iperf3 -s -B 127.0.0.1 -p PORT
    iperf lo - 127.0.0.1 "$SERVER_PORT"
    stop "$SERVER_PID"
}

iperf_veth() {
    serve "$NS_A" 5201 iperf3 -s -B "$ADDR_A" -p 5201
    iperf veth "$NS_B" "$ADDR_A" 5201
    stop "$SERVER_PID"
}

# Redis: SET, then GET, of SIZE-byte values with redis-benchmark, one
# client, without and with pipelining.  Keys are random over a keyspace of
# about REDIS_SPAN bytes, at most n/8 keys so that a GET of a key no SET
# wrote is rare (e^-8); the table says if any key was left unset.
bench_redis() {
    local size n keys pipe op args rps p50 p99 real user sys nset note
    serve_loopback redis-server --port PORT --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$TMP" --logfile "$TMP/redis.log"
    local port=$SERVER_PORT redis_pid=$SERVER_PID
    for size in "${SIZES[@]}"; do
        n=$(blocks_for "$size")
        keys=$((REDIS_SPAN / size))
        if ((keys > n / 8)); then keys=$((n / 8)); fi
        for pipe in "${BATCHES[@]}"; do
            redis-cli -p "$port" flushall >/dev/null
            note=""
            for op in set get; do
                log "redis $op, $(size_label "$size") values, -P $pipe"
                args=(-t "$op" -d "$size" -n "$n" -r "$keys" -c 1 -P "$pipe")
                # The client's user CPU time tells whether redis-benchmark,
                # not Redis, was what limited the figure.
                { TIMEFORMAT='%R %U %S'; time redis-benchmark -p "$port" "${args[@]}" --csv \
                    >"$TMP/redis.csv"; } 2>"$TMP/redis.time"
                IFS=, read -r _ rps _ _ p50 _ p99 _ < <(tr -d '"' <"$TMP/redis.csv" | grep -i "^$op,")
                read -r real user sys <"$TMP/redis.time"
                if [ "$op" = set ]; then
                    nset=$(redis-cli -p "$port" dbsize)
                    ((nset < keys)) && note="$nset of $keys keys set, so some GETs miss; "
                fi
                note+=$(awk -v r="$real" -v u="$user" -v s="$sys" 'BEGIN {
                    printf "client CPU: %d%% user, %d%% sys", 100 * u / r, 100 * s / r
                    if (u > 0.5 * r) printf "; CLIENT-BOUND (redis-benchmark user CPU)" }')
                record "redis/$([ "$op" = set ] && echo put || echo get)/$size/$pipe" \
                    "$(awk -v r="$rps" -v s="$size" 'BEGIN { print r * s / 1e9 }')" \
                    "$(awk -v x="$p50" 'BEGIN { print x * 1000 }')" \
                    "$(awk -v x="$p99" 'BEGIN { print x * 1000 }')" \
                    "redis-benchmark ${args[*]}" "$note"
                note=${note%%client CPU*} # GET keeps only the SET's key count
            done
        done
    done
    stop "$redis_pid"
}

# kvbench_one PATH NODE_NS HOST TRANSPORT CLIENT_NS SIZE BATCH [NODE ARGS]:
# kvpool bench put then get against a fresh node sized for the blocks.
kvbench_one() {
    local path=$1 node_ns=$2 host=$3 transport=$4 client_ns=$5 size=$6 batch=$7
    local blocks memory how op ok=0
    shift 7
    blocks=$(blocks_for "$size")
    memory=$(((blocks * (size + 4096) >> 20) + 64))MiB
    how="kvpool bench --transport $transport --blocks $blocks --batch $batch"
    log "kvpool $path, $(size_label "$size") blocks, batch $batch"
    : >"$TMP/kvbench.out"
    if start_node "$node_ns" "$memory" "$@"; then
        ns_prefix "$client_ns"
        # --token only where the node wants one (KVPOOL_TOKEN in the env)
        "${PRE[@]}" "$CLI" bench --node "$host:$NODE_PORT" --block-size "$size" \
            --blocks "$blocks" --batch "$batch" --transport "$transport" --json \
            >"$TMP/kvbench.out" 2>&1 &&
            [ "$(grep -c "\"transport\":\"$transport\",\"mismatches\":0}\$" "$TMP/kvbench.out")" = 2 ] &&
            ok=1
        stop "$NODE_PID"
    fi
    for op in put get; do
        if [ "$ok" = 1 ]; then
            # shellcheck disable=SC2046 # three numbers
            record "$path/$op/$size/$batch" $(grep '^{' "$TMP/kvbench.out" |
                jq -r "select(.op == \"$op\") | \"\(.gbps) \(.p50_us) \(.p99_us)\"") "$how"
        else
            record "$path/$op/$size/$batch" failed - - "$how" "see the log on stderr"
        fi
    done
    if [ "$ok" = 0 ]; then
        log "FAILED: $how; the bench said:"
        tail -5 "$TMP/kvbench.out" >&2
        log "and the node:"
        tail -5 "$TMP/node.err" >&2
        FAILED=1
    fi
}

# kvbench PATH NODE_NS HOST TRANSPORT CLIENT_NS [NODE ARGS]: every block
# size and batch.
kvbench() {
    local size batch
    for size in "${SIZES[@]}"; do
        for batch in "${BATCHES[@]}"; do
            kvbench_one "$1" "$2" "$3" "$4" "$5" "$size" "$batch" "${@:6}"
        done
    done
}

# setup_netns: namespaces NS_A and NS_B joined by a veth pair (MTU left at
# its default).  Sets VETH_SKIP to why not when it cannot.
setup_netns() {
    local ns
    if [ "$(id -u)" != 0 ]; then
        VETH_SKIP="skipped: needs root"
        return 1
    fi
    for ns in "$NS_A" "$NS_B"; do
        if ip netns list 2>/dev/null | grep -qw "$ns"; then
            VETH_SKIP="skipped: netns $ns exists (a run still going, or one killed: ip netns del $ns)"
            return 1
        fi
        if ! ip netns add "$ns" 2>"$TMP/netns.err"; then
            VETH_SKIP="skipped: ip netns add: $(head -1 "$TMP/netns.err")"
            return 1
        fi
        NETNS+=("$ns")
    done
    if ! { ip link add kvb-a0 netns "$NS_A" type veth peer name kvb-b0 netns "$NS_B" &&
        ip -n "$NS_A" addr add "$ADDR_A/24" dev kvb-a0 &&
        ip -n "$NS_B" addr add "$ADDR_B/24" dev kvb-b0 &&
        ip -n "$NS_A" link set lo up && ip -n "$NS_A" link set kvb-a0 up &&
        ip -n "$NS_B" link set lo up && ip -n "$NS_B" link set kvb-b0 up; } 2>"$TMP/netns.err"; then
        VETH_SKIP="skipped: veth setup: $(head -1 "$TMP/netns.err")"
        return 1
    fi
    VETH_MTU=$(ip -n "$NS_A" -o link show kvb-a0 | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
}

# ------------------------------------------------------------------- run
START=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ ! -x "$NODE" ] || [ ! -x "$CLI" ]; then
    log "building kvpool into build/"
    KVP_TARGETS="kvpool-node kvpool-cli" kvp_build build
fi

bench_memcpy
iperf_loopback
bench_redis
kvbench shm - 127.0.0.1 shm -
kvbench frame - 127.0.0.1 frame -
UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} kvbench ucx - 127.0.0.1 ucx -
VETH_SKIP="" VETH_MTU="?"
if setup_netns; then
    iperf_veth
    KVPOOL_TOKEN=$TOKEN kvbench vethkv "$NS_A" "$ADDR_A" frame "$NS_B" \
        --listen "$ADDR_A" --token "$TOKEN"
    iperf_veth
fi
bench_memcpy
iperf_loopback
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ table

declare -A PATH_NAME=([memcpy]="memcpy (ceiling of shm)" [lo]="TCP loopback (ceiling)"
    [veth]="veth, 2 netns (ceiling)" [redis]="Redis, TCP loopback"
    [shm]="kvpool shm, same host" [frame]="kvpool frame, TCP loopback"
    [ucx]="kvpool ucx, TCP loopback"
    [vethkv]="kvpool frame, veth")
declare -A CEILING=([redis]=lo [shm]=memcpy [frame]=lo [ucx]=lo [vethkv]=veth)

row() {
    local key=$1 path op size batch ceil ck rk vs_ceil=- vs_redis=- block how label
    IFS=/ read -r path op size batch <<<"$key"
    ceil=${CEILING[$path]:-}
    if [ -n "$ceil" ]; then
        if [ "$ceil" = memcpy ]; then ck="memcpy/copy/$size/-"; else ck="$ceil/stream/-/-"; fi
        vs_ceil="$(ratio "${GBPS[$key]}" "${GBPS[$ck]:-}") of $ceil"
    fi
    how=${HOW[$key]}
    [ -n "${NOTE[$key]}" ] && how+="; ${NOTE[$key]}"
    rk="redis/$op/$size/$batch"
    if [ "$path" = redis ]; then
        [ "$op" = put ] && label="put (SET)" || label="get (GET)"
        if [ "$batch" != 1 ] && awk -v a="${GBPS[$key]}" -v b="${GBPS[redis/$op/$size/1]}" \
            'BEGIN { exit !(a < b) }'; then
            how+="; SLOWER than -P 1"
        fi
    else
        label=$op
        if [ "$op" != copy ] && [ "$op" != stream ]; then
            vs_redis=$(ratio "${GBPS[$key]}" "${GBPS[$rk]:-}")
            case ${NOTE[$rk]:-} in *CLIENT-BOUND*) vs_redis+=" (Redis client-bound)" ;; esac
        fi
    fi
    [ "$size" = - ] && block=- || block=$(size_label "$size")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "${PATH_NAME[$path]}" "$label" "$block" "$batch" "$(num "${GBPS[$key]}")" \
        "$(num "${P50[$key]}")" "$(num "${P99[$key]}")" "$vs_ceil" "$vs_redis" "$how"
}

echo "kvpool bench$([ "$QUICK" = 1 ] && echo " (--quick)"), $(date -u '+%Y-%m-%d %H:%M UTC'):" \
    "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))," \
    "Linux $(uname -r), load average $LOAD_START at start, $LOAD_END at end" \
    "(other work on the machine skews every figure)."
echo
echo "| path | op | block | batch | GB/s | p50 us | p99 us | vs ceiling | vs Redis | how |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for key in "${ROWS[@]}"; do row "$key"; done
if [ -n "$VETH_SKIP" ]; then
    echo "| kvpool frame, veth | - | - | - | $VETH_SKIP | - | - | - | - | netns $NS_A <-> $NS_B |"
fi
echo
echo "GB/s: 1e9 block (value) bytes per second.  p50/p99: kvpool, per block ="
echo "a call's time / batch, over calls; Redis, redis-benchmark's per-request"
echo "latency (with -P 32, from sending a pipeline to the first reply).  vs ceiling:"
echo "shm against memcpy of the same block size; TCP paths against iperf3 on the"
echo "same path.  vs Redis: the Redis row of the same op, value size and batch"
echo "(= -P depth), over loopback for every kvpool path.  Redis client CPU:"
echo "redis-benchmark's CPU time / wall time (on loopback, sys includes much of the"
echo "kernel's TCP work); CLIENT-BOUND: over half of it in user space, so the figure"
if [ -z "$VETH_SKIP" ]; then
    echo "is redis-benchmark's limit, not Redis's.  veth MTU: $VETH_MTU."
else
    echo "is redis-benchmark's limit, not Redis's."
fi
echo "Took $((SECONDS - START)) s."
exit "$FAILED"
