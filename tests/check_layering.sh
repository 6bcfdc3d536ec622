#!/usr/bin/env bash
# Layers (DESIGN.md): common <- proto, transport <- pool, coord, client <- tools.
# A layer includes only the public headers of the layers below it:
#   common/include/kv/*.h   (<kv/...>)      public to every layer
#   proto/include/kvproto/  (<kvproto/...>) public to pool, coord, client
#   coord/include/kvcoord/  (<kvcoord/...>) public to tools; it includes
#                           <kvproto/coord_service.h> (the KV_LOC words)
#                           and no other kvproto header
#   pool/include/kvstore/   (<kvstore/...>) public to tools: evict.h, the
#                           eviction policies (kvpool replay)
#   include/kvpool/         (<kvpool/...>)  the installed client API
# Private headers ("arena.h", "node.h", ...) stay in their folder.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
status=0
check() { # folder, forbidden include regex, why
    local hits
    hits=$(grep -rnE "#include [<\"]($2)" "$1" --include='*.c' --include='*.h' 2>/dev/null)
    if [ -n "$hits" ]; then
        echo "FAIL: $1 $3:"; echo "$hits"; status=1
    else
        echo "ok   $1 $3"
    fi
}
check common 'kvproto/|kvpool\.pb-c\.h|kvt/' "must not use upper layers"
check proto 'arena\.h|block_table\.h|node\.h|kvt/' "must not use pool, client or transport"
check client 'arena\.h|block_table\.h|node\.h|base\.h|ucx\.h' "must not use the pool's or transport's private headers"
check pool 'base\.h|ucx\.h|ucx_am\.h|client_int\.h' "must use only <kvt/transport.h> of the transport"
check coord 'arena\.h|block_table\.h|node\.h|node_int\.h|base\.h|ucx\.h|ucx_am\.h|client_int\.h' "must not use the pool's, client's or transport's private headers"
check tools 'kvproto/|kvpool\.pb-c\.h|kvt/|arena\.h|block_table\.h|node\.h' "must use only <kvpool/*.h>, <kv/*.h>, <kvcoord/*.h> and <kvstore/evict.h>"
# Tools reach <kvproto/coord_service.h> only through <kvcoord/prefix_index.h>.
hits=$(grep -rnE '#include [<"]kvproto/' coord/include 2>/dev/null | grep -v 'kvproto/coord_service\.h')
if [ -n "$hits" ]; then echo "FAIL: coord/include may use only <kvproto/coord_service.h> of proto:"; echo "$hits"; status=1; else echo "ok   coord/include uses only <kvproto/coord_service.h> of proto"; fi
# Of the pool, tools use only <kvstore/evict.h>.
hits=$(grep -rnE '#include [<"]kvstore/' tools 2>/dev/null | grep -v 'kvstore/evict\.h')
if [ -n "$hits" ]; then echo "FAIL: tools may use only <kvstore/evict.h> of the pool:"; echo "$hits"; status=1; else echo "ok   tools use only <kvstore/evict.h> of the pool"; fi
check transport 'kvproto/|kvpool\.pb-c\.h|kvpool/kvpool\.h' "must not use proto or the client API"
# gpu/ (a tier, beside pool) uses only common and the status enum.
check gpu 'kvproto/|kvpool\.pb-c\.h|kvt/|kvpool/kvpool\.h|kvstore/|kvcoord/' "must use only <kv/*.h> and <kvpool/status.h>"
# No folder reaches into another's private files by relative path.
hits=$(grep -rnE '#include "\.\./' common proto transport pool coord client gpu tools 2>/dev/null)
if [ -n "$hits" ]; then echo "FAIL: relative includes across folders:"; echo "$hits"; status=1; else echo "ok   no relative includes across folders"; fi
exit $status
