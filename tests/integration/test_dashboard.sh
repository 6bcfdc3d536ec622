#!/usr/bin/env bash
# The coordinator's dashboard in a real browser: a coordinator with its
# HTTP endpoint, two nodes, a disaggregated demo's worth of traffic (so
# instances and prefixes exist), then headless Chromium loads /dashboard
# and the test checks, in the DOM it rendered, that every chart and table
# drew real numbers; a screenshot goes to the build directory.  Needs
# Debian's chromium; skips (77) without it.
set -euo pipefail

chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || { echo "SKIP: chromium is not installed (Debian package chromium)" >&2; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed" >&2; exit 77; }
: "${KVPOOL_CLI_BIN:?}"
out_dir=${KVP_BUILD_DIR:-${TMPDIR:-/tmp}}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvpool-dashboard.XXXXXX")
demo=
cleanup() {
    [ -n "$demo" ] && kill "$demo" 2>/dev/null && wait "$demo" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# the disaggregated demo starts a coordinator (with its HTTP endpoint), two
# nodes and two engines, runs its requests, and with --serve stays up
"$KVPOOL_CLI_BIN" demo --disaggregated --requests 200 --block-size 16KiB --memory 256MiB \
    --serve >"$work/demo.out" 2>"$work/demo.err" &
demo=$!
for _ in $(seq 300); do
    grep -q "serving until" "$work/demo.out" 2>/dev/null && break
    kill -0 "$demo" 2>/dev/null || { cat "$work/demo.out" "$work/demo.err" >&2; fail "the demo exited"; }
    sleep 0.1
done
grep -q "mismatches  0" "$work/demo.out" || { cat "$work/demo.out" >&2; fail "the demo failed"; }
url=$(grep -o 'http://[^ ]*/dashboard' "$work/demo.out" | head -1)
[ -n "$url" ] || fail "the demo printed no dashboard address"
sleep 3 # a heartbeat carries the nodes' counters; the history gets samples

browse() { # ARGS...: headless Chromium with a throwaway profile
    timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$work/profile" --virtual-time-budget=8000 "$@" 2>>"$work/chromium.err"
}
browse --dump-dom "$url" >"$work/dom.html" || { tail "$work/chromium.err" >&2; fail "chromium"; }
browse --window-size=1400,1100 --screenshot="$out_dir/dashboard.png" "$url" >/dev/null ||
    { tail "$work/chromium.err" >&2; fail "chromium screenshot"; }
[ -s "$out_dir/dashboard.png" ] || fail "no screenshot"

python3 - "$work/dom.html" "${url%/dashboard}/metrics" <<'PY' || fail "the dashboard did not render its data"
import re, sys, urllib.request
dom = open(sys.argv[1]).read()

# the scheduler's metrics counted the demo's decisions, in blocks and tokens
metrics = urllib.request.urlopen(sys.argv[2], timeout=10).read().decode()
def total(prefix):
    return sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith(prefix))
assert total('kvpool_sched_decisions_total{policy="cache-aware",instance="prefill-1",role="prefill"}') == 200
for kind in ("prompt", "loaded"):
    assert total('kvpool_sched_prompt_tokens_total{instance="prefill-1",kind="%s"}' % kind) > 0, kind
assert total("kvpool_sched_loaded_prefix_blocks_count") == 200

def element(id_):
    m = re.search(r'<[a-z]+ [^>]*id="%s"[^>]*>' % id_, dom)
    assert m, "no element #%s" % id_
    return m.group(0)

def text(id_):
    m = re.search(r' id="%s"[^>]*>([^<]*)<' % id_, dom)
    assert m, "no text in #%s" % id_
    return m.group(1)

for chart in ("chart-hit-ratio", "chart-throughput", "chart-moves"):
    tag = element(chart)
    assert 'data-rendered="1"' in tag, chart + " not drawn"
    points = int(re.search(r'data-points="(\d+)"', tag).group(1))
    assert points >= 2, "%s: %d samples" % (chart, points)
assert dom.count("<polyline") >= 6, "too few chart lines"
for table, rows in (("table-nodes", 2), ("table-instances", 2), ("table-prefixes", 1)):
    tag = element(table)
    assert 'data-rendered="1"' in tag, table + " not drawn"
    assert int(re.search(r'data-rows="(\d+)"', tag).group(1)) >= rows, table
# the figures are numbers, not placeholders
hit = text("kpi-hit-ratio")
assert re.fullmatch(r"\d+\.\d %", hit), "hit ratio: " + hit
assert 0 < float(hit.split()[0]) <= 100, hit
assert re.fullmatch(r"2 · 2", text("kpi-nodes")), text("kpi-nodes")
assert re.fullmatch(r"[\d,]+", text("kpi-blocks")) and text("kpi-blocks") != "0"
for name in ("prefill-1", "decode-1"):
    assert name in dom, name + " missing from the instances"
assert len(re.findall(r"127\.0\.0\.1:\d+", dom)) >= 2, "node addresses missing"
assert text("banner") == "", "error banner shown: " + text("banner")
print("dashboard: hit ratio %s, charts and tables drawn" % hit)
PY
