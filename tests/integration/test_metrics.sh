#!/usr/bin/env bash
# /metrics of kvpool-coord and kvpool-node, live: the text parses and lints
# as Prometheus exposition (promtool), counters move when traffic flows,
# /health answers, and every metric the Grafana dashboard and the
# documentation query exists.  Needs promtool (Debian's prometheus package),
# curl and python3; skips (77) without them.
set -euo pipefail

for tool in promtool curl python3; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed" >&2; exit 77; }
done
: "${KVPOOL_COORD_BIN:?}" "${KVPOOL_NODE_BIN:?}" "${KVPOOL_CLI_BIN:?}"
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${KVP_BUILD_DIR:-${TMPDIR:-/tmp}}/kvpool-metrics.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# start NAME CMD...: run it, wait for its "http on" line, set $addr and $http
start() {
    local name=$1 i
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for i in $(seq 100); do
        grep -q " http on " "$work/$name.out" 2>/dev/null && break
        kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/$name.err" >&2; fail "$name exited"; }
        sleep 0.1
    done
    addr=$(sed -n 's/.* listening on //p' "$work/$name.out")
    http=$(sed -n 's/.* http on //p' "$work/$name.out")
    [ -n "$addr" ] && [ -n "$http" ] || fail "$name printed no addresses"
}

start coord "$KVPOOL_COORD_BIN" --port 0 --http-port 0 --lease-ms 2000
coord=$addr coord_http=$http
start node1 "$KVPOOL_NODE_BIN" --port 0 --http-port 0 --memory 64MiB --name n1 --coord "$coord"
node1=$addr node1_http=$http

scrape() { curl -sf "http://$1/metrics"; }
# value FILE METRIC-WITH-LABELS: the sum of the samples that start with it
value() { awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%.0f\n", s }' "$1"; }
# joined N: wait until the coordinator counts N nodes, each with its counters
# (a heartbeat carries them); its metrics are left in $work/coord0.prom
joined() {
    for _ in $(seq 50); do
        scrape "$coord_http" >"$work/coord0.prom"
        [ "$(value "$work/coord0.prom" 'kvpool_coord_nodes ')" = "$1" ] &&
            [ "$(grep -c '^kvpool_cluster_capacity_bytes{node=.*tier="host"}' "$work/coord0.prom")" = "$1" ] &&
            return 0
        sleep 0.2
    done
    fail "the coordinator does not count $1 nodes"
}
joined 1
scrape "$node1_http" >"$work/node1_0.prom"
cp "$work/coord0.prom" "$work/coord_before.prom"

# traffic: a replay through the coordinator, with every byte checked by kvpool;
# node 1 alone holds the blocks, so its reads are the replay's hits
if [ -n "${KVP_TRACE:-}" ] && [ -r "$KVP_TRACE" ]; then
    trace=$KVP_TRACE
else
    trace=$work/trace.jsonl
    "$KVPOOL_CLI_BIN" gen-trace --requests 300 --seed 7 >"$trace"
fi
"$KVPOOL_CLI_BIN" replay "$trace" --coord "$coord" --requests 300 --block-size 64KiB --json \
    >"$work/replay.json"
grep -q '"errors":0' "$work/replay.json" || fail "the replay had errors: $(cat "$work/replay.json")"

# the second node has an SSD tier when the build directory takes O_DIRECT; 16 MiB
# straight into its 8 MiB of host memory: with an SSD tier it demotes
ssd=()
if python3 -c "import os,sys; os.close(os.open(sys.argv[1] + '/probe', os.O_CREAT | os.O_WRONLY | os.O_DIRECT))" "$work" 2>/dev/null; then
    ssd=(--ssd-dir "$work/ssd" --ssd-size 64MiB)
fi
start node2 "$KVPOOL_NODE_BIN" --port 0 --http-port 0 --memory 8MiB --name n2 --coord "$coord" "${ssd[@]}"
node2=$addr node2_http=$http
"$KVPOOL_CLI_BIN" bench --node "$node2" --blocks 256 --block-size 64KiB --json >"$work/bench.json"

for ep in "$coord_http" "$node1_http" "$node2_http"; do
    [ "$(curl -sf "http://$ep/health")" = "ok" ] || fail "/health of $ep"
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ep/no-such-page")" = 404 ] || fail "404 of $ep"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x "http://$ep/metrics")" = 405 ] || fail "405 of $ep"
done
joined 2
sleep 2.5 # another heartbeat (lease / 3) carries the nodes' latest counters

for ep in coord:"$coord_http" node1:"$node1_http" node2:"$node2_http"; do
    name=${ep%%:*}
    scrape "${ep#*:}" >"$work/$name.prom"
    promtool check metrics <"$work/$name.prom" >"$work/$name.lint" 2>&1 ||
        { cat "$work/$name.lint" >&2; fail "promtool rejects the metrics of $name"; }
    [ -s "$work/$name.lint" ] && { cat "$work/$name.lint" >&2; fail "promtool lints the metrics of $name"; }
done

# counters moved with the traffic
moved() { # FILE0 FILE1 METRIC
    local a b
    a=$(value "$1" "$3") b=$(value "$2" "$3")
    [ "$b" -gt "$a" ] || fail "$3 did not move ($a -> $b)"
}
moved "$work/node1_0.prom" "$work/node1.prom" 'kvpool_node_puts_total{'
moved "$work/node1_0.prom" "$work/node1.prom" "kvpool_node_get_blocks_total{node=\"$node1\",tier=\"host\",result=\"hit\"}"
grep -q "^kvpool_node_info{node=\"$node1\",name=\"n1\"} 1\$" "$work/node1.prom" || fail "kvpool_node_info of n1"
moved "$work/node1_0.prom" "$work/node1.prom" 'kvpool_node_put_duration_seconds_count{'
moved "$work/coord_before.prom" "$work/coord.prom" 'kvpool_lookup_blocks_total{namespace="replay",result="hit"}'
moved "$work/coord_before.prom" "$work/coord.prom" 'kvpool_cluster_hit_blocks_total{'
moved "$work/coord_before.prom" "$work/coord.prom" 'kvpool_coord_index_blocks '
bytes=$(value "$work/node1.prom" 'kvpool_node_put_bytes_total{')
[ "$bytes" -gt 0 ] || fail "no put bytes by transport"
if [ ${#ssd[@]} -gt 0 ]; then # 8 MiB of host memory: the replay demotes
    [ "$(value "$work/node2.prom" 'kvpool_node_demotions_total{')" -gt 0 ] || fail "node 2 demoted nothing"
    grep -q "^kvpool_node_used_bytes{node=\"$node2\",tier=\"ssd\"}" "$work/node2.prom" || fail "no ssd tier in node 2's metrics"
fi

# the dashboard's JSON is JSON with the figures the page draws
curl -sf "http://$coord_http/api/dashboard" >"$work/dashboard.json"
python3 - "$work/dashboard.json" <<'PY' || fail "/api/dashboard"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["cluster"]["nodes"] == 2, d["cluster"]
assert d["cluster"]["lookups"] > 0 and d["cluster"]["matched_blocks"] > 0
assert len(d["nodes"]) == 2 and all(n["tiers"] for n in d["nodes"])
assert len(d["history"]) >= 2
assert sum(s["requested_blocks"] for s in d["history"]) == d["cluster"]["requested_blocks"]
assert d["top_prefixes"] and d["top_prefixes"][0]["matches"] >= d["top_prefixes"][-1]["matches"]
PY
curl -sf "http://$coord_http/dashboard" >"$work/dashboard.html"
grep -qi "<html" "$work/dashboard.html" || fail "/dashboard is not a page"

# every metric the Grafana dashboard and the docs name is served
cat "$work"/*.prom | sed -n 's/^# TYPE \([a-z_]*\) .*/\1/p' | sort -u >"$work/served"
python3 - "$root/deploy/grafana/kvpool.json" "$work/served" <<'PY' || fail "the Grafana dashboard"
import json, re, sys
dash = json.load(open(sys.argv[1]))
served = set(open(sys.argv[2]).read().split())
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "no queries"
missing = set()
for e in exprs:
    for name in re.findall(r"\bkvpool_[a-z_]+", e):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in served and base not in served:
            missing.add(name)
assert not missing, "not served: %s" % sorted(missing)
PY
promtool check config "$root/deploy/prometheus/prometheus.yml" >/dev/null ||
    fail "promtool rejects deploy/prometheus/prometheus.yml"
echo "metrics: $(wc -l <"$work/served") families served, all checks passed"
