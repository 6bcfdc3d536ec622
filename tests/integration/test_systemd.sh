#!/usr/bin/env bash
# The daemons as services: systemd-analyze verify accepts the units in
# deploy/systemd without a word; under a NOTIFY_SOCKET the daemons send
# READY=1 once their ports accept connections, WATCHDOG=1 from their tick
# and STOPPING=1 on SIGTERM; the example configs start them; `cmake
# --install` lays out binaries, library, header, units and configs, and
# CPack makes a .deb of them.  Parts whose tool is missing (systemd-analyze,
# cpack's dpkg tools) skip with a reason; if all do, the test exits 77.
set -euo pipefail

: "${KVPOOL_COORD_BIN:?}" "${KVPOOL_NODE_BIN:?}" "${KVP_BUILD_DIR:?}"
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed" >&2; exit 77; }
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kvpool-systemd.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ran=0

# ---- systemd-analyze verify, in a root that has the binaries the units name
if command -v systemd-analyze >/dev/null && [ -d /usr/lib/systemd/system ]; then
    vroot=$work/vroot
    mkdir -p "$vroot/usr/bin" "$vroot/usr/lib/systemd/system"
    cp -a /usr/lib/systemd/system/. "$vroot/usr/lib/systemd/system/"
    cp "$KVPOOL_COORD_BIN" "$KVPOOL_NODE_BIN" "$vroot/usr/bin/"
    for unit in "$root"/deploy/systemd/*.service; do
        cp "$unit" "$vroot/usr/lib/systemd/system/"
        name=$(basename "$unit")
        [ "${name%@.service}" != "$name" ] && name=${name%@.service}@a.service
        if ! out=$(systemd-analyze verify --root="$vroot" \
                       "$vroot/usr/lib/systemd/system/$name" 2>&1) || [ -n "$out" ]; then
            echo "$out" >&2
            fail "systemd-analyze verify $name"
        fi
    done
    echo "units: systemd-analyze verify is silent on $(ls "$root"/deploy/systemd/*.service | wc -l) units"
    ran=1
else
    echo "skipped: systemd-analyze verify (no systemd-analyze or unit directory)"
fi

# ---- sd_notify: READY=1 when the port accepts, WATCHDOG=1 from the tick, STOPPING=1
# notify_run NAME BIN ARGS...: run BIN with a NOTIFY_SOCKET and check its messages
notify_run() {
    local name=$1
    shift
    python3 - "$work/$name" "$@" <<'PY' || fail "sd_notify of $name"
import os, re, signal, socket, subprocess, sys, time

path, cmd = sys.argv[1] + ".sock", sys.argv[2:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="3000000")
proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        text=True)

def message(want, timeout):
    sock.settimeout(timeout)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        if want in msg.split("\n"):
            return msg
    raise SystemExit("no %s within %.0f s" % (want, timeout))

ready = message("READY=1", 20)
assert "STATUS=serving " in ready, ready
line = proc.stdout.readline()  # "... listening on HOST:PORT", printed before READY
host, port = re.search(r"listening on (\S+):(\d+)", line).groups()
socket.create_connection((host, int(port)), timeout=5).close()
message("WATCHDOG=1", 5)
proc.send_signal(signal.SIGTERM)
message("STOPPING=1", 10)
assert proc.wait(timeout=20) == 0, "exit status %s" % proc.returncode
print("notify: %s: READY=1 (%s), WATCHDOG=1, STOPPING=1" % (os.path.basename(cmd[0]),
                                                            ready.split("STATUS=")[1]))
PY
}
notify_run coord "$KVPOOL_COORD_BIN" --port 0 --http-port 0
notify_run node "$KVPOOL_NODE_BIN" --port 0 --memory 16MiB --data-plane off
ran=1

# ---- the example configurations start the daemons (flags override the ports)
"$KVPOOL_COORD_BIN" --config "$root/deploy/kvpool-coord.ini" --port 0 --http-port 0 \
    >"$work/coord.out" 2>&1 &
pids+=($!)
"$KVPOOL_NODE_BIN" --config "$root/deploy/kvpool-node.ini" --port 0 --http-port 0 \
    --memory 16MiB >"$work/node.out" 2>&1 &
pids+=($!)
for f in coord node; do
    for _ in $(seq 100); do
        grep -q " http on " "$work/$f.out" && break
        sleep 0.1
    done
    grep -q " http on " "$work/$f.out" || { cat "$work/$f.out" >&2; fail "deploy/kvpool-$f.ini"; }
done
echo "configs: deploy/kvpool-coord.ini and deploy/kvpool-node.ini start their daemons"

# ---- cmake --install into a staging directory
DESTDIR=$work/inst cmake --install "$KVP_BUILD_DIR" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; fail "cmake --install"; }
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$KVP_BUILD_DIR/CMakeCache.txt")
inst=$work/inst$prefix
for f in bin/kvpool-coord bin/kvpool-node bin/kvpool include/kvpool/kvpool.h \
         lib/systemd/system/kvpool-coord.service lib/systemd/system/kvpool-node@.service \
         lib/sysusers.d/kvpool.conf share/doc/kvpool/OPERATIONS.md; do
    [ -e "$inst/$f" ] || fail "cmake --install did not install $f"
done
ls "$inst"/lib/libkvpool.so.* >/dev/null 2>&1 || fail "no libkvpool.so installed"
etc=$(grep -o -- '--config [^ ]*coord.ini' "$inst/lib/systemd/system/kvpool-coord.service")
[ -f "$work/inst${etc#--config }" ] || fail "the unit's config ${etc#--config } is not installed"
exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$inst/lib/systemd/system/kvpool-node@.service")
[ -x "$work/inst$exe" ] || fail "the unit's $exe is not installed"
echo "install: binaries, library, header, units, user and configs under $prefix"

# ---- CPack: a .deb with the same files
if command -v cpack >/dev/null && command -v dpkg-deb >/dev/null &&
   command -v dpkg-shlibdeps >/dev/null; then
    (cd "$work" && cpack -G DEB --config "$KVP_BUILD_DIR/CPackConfig.cmake" -B "$work/pkg") \
        >"$work/cpack.log" 2>&1 || { tail -20 "$work/cpack.log" >&2; fail "cpack -G DEB"; }
    deb=$(ls "$work"/pkg/kvpool_*.deb)
    dpkg-deb -c "$deb" >"$work/deb.list"
    for f in bin/kvpool-coord bin/kvpool-node lib/systemd/system/kvpool-node@.service; do
        grep -q "$f\$" "$work/deb.list" || fail "the .deb lacks $f"
    done
    dpkg-deb -f "$deb" Depends | grep -q libmicrohttpd || fail "the .deb's Depends: $(dpkg-deb -f "$deb" Depends)"
    echo "deb: $(basename "$deb"), Depends: $(dpkg-deb -f "$deb" Depends | cut -c1-80)..."
else
    echo "skipped: the .deb (cpack, dpkg-deb or dpkg-shlibdeps missing)"
fi
[ "$ran" = 1 ] || { echo "SKIP: nothing to check here" >&2; exit 77; }
