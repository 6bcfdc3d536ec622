#!/usr/bin/env bash
# The daemons as installed services.  Two modes (ctest runs each as a test):
#
#   units    (check_units)  `cmake --install` into a staging root that also
#            holds systemd's own units, then `systemd-analyze verify
#            --root=ROOT` of every unit in deploy/systemd (which name /usr/bin
#            and /etc) and of the installed ones (which name the configured
#            prefix): any output, a warning included, fails.  --root makes
#            verify look for the ExecStart binaries in ROOT, so a unit naming
#            a binary the install does not provide fails too.  The service
#            user: systemd-sysusers --dry-run in the root must create it.
#   install  (test_install) `cmake --install` into a staging directory: the
#            binaries, libkvpool and its headers (a program is compiled and
#            linked against them), the units, the sysusers file, the example
#            configs (the installed daemons start with them); then, with
#            cpack and dpkg-deb, `cpack -G DEB` and the .deb's contents.
#
# A missing tool is a skip (exit 77, the reason on stderr).  The sd_notify
# side is tests/integration/test_systemd.c (test_notify).
set -euo pipefail

mode=${1:-}
: "${KVP_BUILD_DIR:?}"
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
skip() { echo "SKIP: $*" >&2; exit 77; }

prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$KVP_BUILD_DIR/CMakeCache.txt")
[ -n "$prefix" ] || fail "no CMAKE_INSTALL_PREFIX in $KVP_BUILD_DIR/CMakeCache.txt"
# the installed units name the binaries and configs by these paths
unit_bindir=$(sed -n 's/^ExecStart=\(.*\)\/kvpool-coord .*/\1/p' "$KVP_BUILD_DIR/systemd/kvpool-coord.service")
[ -n "$unit_bindir" ] || fail "no ExecStart in $KVP_BUILD_DIR/systemd/kvpool-coord.service"

# install_to DIR: cmake --install with DESTDIR=DIR
install_to() {
    DESTDIR=$1 cmake --install "$KVP_BUILD_DIR" >"$work/install.log" 2>&1 ||
        { cat "$work/install.log" >&2; fail "cmake --install"; }
}

# ---------------------------------------------------------------------------
# What verify cannot see: the settings the daemons rely on, and none in the
# node's unit that would shut its devices (RDMA, GPUs) or forbid the code
# the CUDA runtime and UCX generate.  ProtectClock= implies DeviceAllow=, and
# any DeviceAllow= closes every device not listed.
check_settings() {
    local unit key
    for unit in "$root"/deploy/systemd/*.service; do
        for key in Type=notify WatchdogSec= Restart=on-failure LimitMEMLOCK=infinity \
                   User=kvpool Group=kvpool NoNewPrivileges=yes ProtectSystem=strict \
                   ProtectHome=yes PrivateTmp=yes; do
            grep -q "^$key" "$unit" || fail "$(basename "$unit") lacks $key"
        done
    done
    unit=$root/deploy/systemd/kvpool-node@.service
    if grep -E -n '^(PrivateDevices|ProtectClock|DeviceAllow|DevicePolicy|MemoryDenyWriteExecute|SystemCallFilter|PrivateNetwork|PrivateUsers)=' \
            "$unit" >&2; then
        fail "kvpool-node@.service: a setting above shuts RDMA or GPU devices, or the memory or calls they need"
    fi
    grep -q '^StateDirectory=kvpool' "$unit" || fail "kvpool-node@.service has no StateDirectory=kvpool..."
    grep -q '^RestrictAddressFamilies=.*AF_NETLINK' "$unit" ||
        fail "kvpool-node@.service: UCX and rdma-core need AF_NETLINK"
    echo "settings: notify, watchdog, restart, memlock, user, hardening; the node's devices open"
}

check_units() {
    check_settings
    command -v systemd-analyze >/dev/null || skip "systemd-analyze is not installed"
    local sysunits=/usr/lib/systemd/system
    [ -f $sysunits/sysinit.target ] || sysunits=/lib/systemd/system
    [ -f $sysunits/sysinit.target ] ||
        skip "systemd's own units (sysinit.target...) are not installed"

    # two roots, each holding systemd's own units (for sysinit.target,
    # network-online.target...): "src" with deploy/systemd's units in
    # /usr/lib/systemd/system and the installed binaries copied to /usr/bin,
    # which they name; "inst" with `cmake --install`'s tree.  verify looks a
    # unit up by its name on the root's unit path, so each root has one copy.
    local vroot=$work/inst src=$work/src unit name out n=0 b
    install_to "$vroot"
    for r in "$src" "$vroot"; do
        mkdir -p "$r/usr/lib/systemd/system" "$r/usr/bin"
        cp -an $sysunits/. "$r/usr/lib/systemd/system/"
    done
    for b in kvpool-coord kvpool-node; do
        [ -x "$vroot$unit_bindir/$b" ] || fail "cmake --install did not install $unit_bindir/$b"
        cp "$vroot$unit_bindir/$b" "$src/usr/bin/$b"
    done
    cp "$root"/deploy/systemd/*.service "$src/usr/lib/systemd/system/"
    for unit in "$root"/deploy/systemd/*.service "$vroot$prefix"/lib/systemd/system/kvpool*.service; do
        [ -f "$unit" ] || fail "no unit $unit"
        name=$(basename "$unit")
        case $unit in
        "$root"/*) r=$src dir=$src/usr/lib/systemd/system ;;
        *) r=$vroot dir=$(dirname "$unit") ;;
        esac
        # a template is verified as an instance of it
        [ "${name%@.service}" != "$name" ] && name=${name%@.service}@a.service
        if ! out=$(systemd-analyze verify --root="$r" "$dir/$name" 2>&1) || [ -n "$out" ]; then
            echo "$out" >&2
            fail "systemd-analyze verify $name (${unit#"$work"}) is not silent"
        fi
        n=$((n + 1))
    done
    echo "systemd-analyze verify: silent on $n units (deploy/systemd and installed under $prefix)"

    # the service user: systemd-sysusers finds the installed file by its name
    # (PREFIX/lib/sysusers.d is on its search path for /usr and /usr/local)
    if command -v systemd-sysusers >/dev/null; then
        [ -f "$vroot$prefix/lib/sysusers.d/kvpool.conf" ] ||
            fail "cmake --install did not install lib/sysusers.d/kvpool.conf"
        out=$(systemd-sysusers --root="$vroot" --dry-run kvpool.conf 2>&1) ||
            { echo "$out" >&2; fail "systemd-sysusers kvpool.conf"; }
        grep -q "Creating user 'kvpool'" <<<"$out" ||
            { echo "$out" >&2; fail "systemd-sysusers does not create the user kvpool"; }
        if grep -v "^Creating \|^Would write " <<<"$out" >/dev/null; then
            echo "$out" >&2
            fail "systemd-sysusers says more than it creates"
        fi
        echo "systemd-sysusers: kvpool.conf creates the user and group kvpool"
    else
        echo "not checked: the sysusers file (no systemd-sysusers)"
    fi
}

# ---------------------------------------------------------------------------
# wait_line FILE PATTERN: up to 10 s for a line matching PATTERN in FILE
wait_line() {
    for _ in $(seq 100); do
        grep -q "$2" "$1" && return 0
        sleep 0.1
    done
    return 1
}

test_install() {
    local inst=$work/inst f
    install_to "$inst"
    local p=$inst$prefix etc
    etc=$(sed -n 's/^ExecStart=.*--config \(.*\)\/coord.ini$/\1/p' \
              "$KVP_BUILD_DIR/systemd/kvpool-coord.service")
    [ -n "$etc" ] || fail "the coordinator's unit names no --config .../coord.ini"
    for f in "$unit_bindir/kvpool-coord" "$unit_bindir/kvpool-node" "$unit_bindir/kvpool"; do
        [ -x "$inst$f" ] || fail "cmake --install did not install $f"
    done
    for f in include/kvpool/kvpool.h include/kvpool/status.h \
             lib/systemd/system/kvpool-coord.service lib/systemd/system/kvpool-node@.service \
             lib/sysusers.d/kvpool.conf; do
        [ -f "$p/$f" ] || fail "cmake --install did not install $prefix/$f"
    done
    for f in "$etc/coord.ini" "$etc/node-example.ini"; do
        [ -f "$inst$f" ] || fail "cmake --install did not install $f"
    done
    local libdir
    libdir=$(dirname "$(ls "$p"/lib*/libkvpool.so.0 "$p"/lib*/*/libkvpool.so.0 2>/dev/null | head -1)")
    [ -f "$libdir/libkvpool.so.0" ] || fail "cmake --install did not install libkvpool.so.0"
    [ -L "$libdir/libkvpool.so" ] || fail "cmake --install did not install the libkvpool.so link"
    grep -q "^ExecStart=$unit_bindir/kvpool-node --config $etc/node-%i.ini$" \
        "$p/lib/systemd/system/kvpool-node@.service" ||
        fail "the installed node unit does not run $unit_bindir/kvpool-node with $etc/node-%i.ini"
    for f in "$p"/lib/systemd/system/kvpool*.service; do
        local doc
        doc=$(sed -n 's/^Documentation=file://p' "$f")
        [ -f "$inst$doc" ] || fail "$(basename "$f") points at $doc, which is not installed"
    done
    echo "install: binaries, libkvpool, headers, units, sysusers file, configs, docs under $prefix"

    # the installed header and library are enough to build a client
    if command -v cc >/dev/null; then
        cat >"$work/client.c" <<'EOF'
#include <kvpool/kvpool.h>
#include <stdio.h>
int main(void)
{
    puts(kvp_status_string(KVP_OK));
    return 0;
}
EOF
        # a sanitized build's library needs the program built the same way
        san=$(sed -n 's/^KVP_SANITIZE:STRING=//p' "$KVP_BUILD_DIR/CMakeCache.txt" | tr ';' ',')
        cc -std=c11 -Wall -Werror ${san:+-fsanitize=$san} -I"$p/include" "$work/client.c" \
            -L"$libdir" -lkvpool -o "$work/client" 2>"$work/cc.log" || { cat "$work/cc.log" >&2; fail "building against the installed libkvpool"; }
        LD_LIBRARY_PATH=$libdir "$work/client" >/dev/null || fail "a program linked to the installed libkvpool"
        echo "install: a program builds against include/kvpool/kvpool.h and links libkvpool"
    fi
    LD_LIBRARY_PATH=$libdir "$inst$unit_bindir/kvpool" --help >/dev/null 2>&1 ||
        fail "the installed kvpool --help"

    # the installed daemons start with the installed example configs (free ports)
    "$inst$unit_bindir/kvpool-coord" --config "$inst$etc/coord.ini" --port 0 --http-port 0 \
        >"$work/coord.out" 2>&1 &
    pids+=($!)
    "$inst$unit_bindir/kvpool-node" --config "$inst$etc/node-example.ini" --port 0 \
        --http-port 0 --memory 16MiB --data-plane off >"$work/node.out" 2>&1 &
    pids+=($!)
    for f in coord node; do
        wait_line "$work/$f.out" "listening on " ||
            { cat "$work/$f.out" >&2; fail "kvpool-$f with the installed example config"; }
    done
    echo "install: the installed daemons start with coord.ini and node-example.ini"

    # the .deb
    if ! command -v cpack >/dev/null || ! command -v dpkg-deb >/dev/null; then
        echo "not checked: the .deb (no cpack or dpkg-deb)"
        return 0
    fi
    (cd "$work" && cpack -G DEB --config "$KVP_BUILD_DIR/CPackConfig.cmake" -B "$work/pkg") \
        >"$work/cpack.log" 2>&1 || { tail -30 "$work/cpack.log" >&2; fail "cpack -G DEB"; }
    local deb
    deb=$(ls "$work"/pkg/kvpool_*.deb 2>/dev/null | head -1)
    [ -f "$deb" ] || { tail -30 "$work/cpack.log" >&2; fail "cpack made no kvpool_*.deb"; }
    dpkg-deb -c "$deb" >"$work/deb.list"
    for f in "$unit_bindir/kvpool-coord" "$unit_bindir/kvpool-node" "$unit_bindir/kvpool" \
             "$prefix/lib/systemd/system/kvpool-coord.service" \
             "$prefix/lib/systemd/system/kvpool-node@.service" \
             "$prefix/lib/sysusers.d/kvpool.conf" "$prefix/include/kvpool/kvpool.h" \
             "$etc/coord.ini" "$etc/node-example.ini" "libkvpool.so.0"; do
        grep -q -- "$f\$" "$work/deb.list" || { cat "$work/deb.list" >&2; fail "the .deb lacks $f"; }
    done
    [ "$(dpkg-deb -f "$deb" Package)" = kvpool ] || fail "the .deb's package is not kvpool"
    # (no `cmd | grep -q` under pipefail: grep quits at the first match and the
    # writer's SIGPIPE would fail the pipeline now and then; files instead)
    [ -n "$(dpkg-deb -f "$deb" Maintainer)" ] || fail "the .deb has no Maintainer"
    grep -q libmicrohttpd <<<"$(dpkg-deb -f "$deb" Depends)" ||
        fail "the .deb's Depends lacks libmicrohttpd: $(dpkg-deb -f "$deb" Depends)"
    mkdir "$work/control"
    dpkg-deb -e "$deb" "$work/control"
    [ -x "$work/control/postinst" ] || fail "the .deb has no postinst"
    grep -q "^$etc/coord.ini$" "$work/control/conffiles" ||
        fail "the .deb does not mark $etc/coord.ini as a conffile"
    echo "deb: $(basename "$deb"): binaries, units, user, configs (conffiles), library;" \
         "Depends: $(dpkg-deb -f "$deb" Depends | cut -c1-60)..."
}

case $mode in
units) check_units ;;
install) test_install ;;
*) echo "usage: $0 units|install" >&2; exit 2 ;;
esac
