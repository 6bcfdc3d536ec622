/*
 * Cluster mode, the data half: match, put and get through the coordinator.
 *
 *   match      Match(chain) -> matched.
 *   put_chain  PlanPut(chain, sizes) -> cached prefix, a node per new
 *              block -> each node gets its blocks, one chained two-phase
 *              put per contiguous run of the chain (PutStart.chain, parent
 *              = the key before the run), the nodes in parallel.
 *   get_chain  Match(chain) -> per block, the nodes holding it -> one
 *              source per block (below) -> each node one batched get of
 *              its blocks, in parallel -> the loaded prefix ends at the
 *              first block that did not arrive intact (after a node
 *              failure, its blocks are tried on their other holders).
 *   put_batch, get_batch
 *              unrelated blocks: one PlanPut / Match per block, all sent
 *              together on the coordinator's connection, then as above.
 *
 * Choosing sources.  For block i and a node n holding it, run(i, n) is how
 * many blocks from i on n holds in a row.  Walking the chain, the client
 * stays on the current node while it holds the block, else switches to the
 * holder with the longest run from there.  At block 0 that is the node with
 * the longest local prefix, and a chain kept on one node is read from it
 * alone.  Runs come from the per-block locations, computed backwards in
 * one pass.
 *
 * Trust.  Every count in a reply is checked against the request (matched
 * <= keys, one location list per matched block, one target per key) and
 * every node id must be one the reply describes or the coordinator lists;
 * a reply that breaks this fails the call with KVP_ERR_PROTOCOL.  Block
 * bytes are verified by the node connections (checksums), so a damaged
 * block is a miss.
 */
#include "cluster.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kvproto/coord_service.h>
#include <kvproto/pb_arena.h>

#include <stdlib.h>
#include <string.h>

/* Most locations one block may have in a Match reply. */
#define LOCATIONS_MAX 256

/* Stack bytes a Match reply is decoded into first (~70 bytes a block). */
#define MATCH_ARENA (8u << 10)

/* ---------------------------------------------------------------------- */
/* Spreading a call's blocks over nodes                                    */
/* ---------------------------------------------------------------------- */

/* The blocks of one call that one node serves, in chain order. */
typedef struct {
    kvp__peer_t *peer;
    size_t      *index;
    size_t       n;
    kvp_status_t status; /* of the node's call: not KVP_OK when the node failed */
} part_t;

/* One call spread over nodes: the caller's arrays and the parts. */
typedef struct {
    kvp__cluster_t    *cl;
    const char        *ns;
    const kvp_key_t   *keys;
    const void *const *datas;    /* put */
    const uint64_t    *lens;     /* put: sizes; get: capacities */
    void *const       *bufs;     /* get */
    uint64_t          *sizes;    /* get: the blocks' sizes */
    kvp_status_t      *statuses; /* per block */
    int                chain;    /* put: keys is one chain */
    part_t            *parts;
    size_t             n_parts;
} spread_t;

/* Group the blocks by source: @p source[i] (NULL: block i is not sent). */
static void spread_init(spread_t *s, kvp__peer_t *const *source, size_t count)
{
    size_t *part_of = kv_malloc((count + 1) * sizeof(*part_of), "block parts");
    size_t  last    = 0;

    s->parts   = kv_calloc(count + 1, sizeof(*s->parts), "parts");
    s->n_parts = 0;
    for (size_t i = 0; i < count; i++) {
        size_t k = last;
        if (source[i] == NULL) {
            continue;
        }
        if (k >= s->n_parts || s->parts[k].peer != source[i]) {
            for (k = 0; k < s->n_parts && s->parts[k].peer != source[i]; k++) {
            }
        }
        if (k == s->n_parts) {
            s->parts[s->n_parts++].peer = source[i];
        }
        part_of[i] = k;
        s->parts[k].n++;
        last = k;
    }
    for (size_t k = 0; k < s->n_parts; k++) {
        s->parts[k].index = kv_malloc(s->parts[k].n * sizeof(size_t), "part blocks");
        s->parts[k].n     = 0;
    }
    for (size_t i = 0; i < count; i++) {
        if (source[i] != NULL) {
            part_t *p        = &s->parts[part_of[i]];
            p->index[p->n++] = i;
        }
    }
    kv_free(part_of);
}

static void spread_cleanup(spread_t *s)
{
    for (size_t k = 0; k < s->n_parts; k++) {
        kv_free(s->parts[k].index);
    }
    kv_free(s->parts);
}

/* One node's gets: one batched get, its results put back in place. */
static void get_part(void *arg, size_t k)
{
    spread_t     *s        = arg;
    part_t       *p        = &s->parts[k];
    kvp_key_t    *keys     = kv_malloc(p->n * sizeof(*keys), "part keys");
    void        **bufs     = kv_malloc(p->n * sizeof(*bufs), "part buffers");
    uint64_t     *caps     = kv_malloc(p->n * sizeof(*caps), "part capacities");
    uint64_t     *sizes    = kv_calloc(p->n, sizeof(*sizes), "part sizes");
    kvp_status_t *statuses = kv_malloc(p->n * sizeof(*statuses), "part statuses");
    kvp_client_h  conn;
    kvp_status_t  status;

    for (size_t j = 0; j < p->n; j++) {
        keys[j] = s->keys[p->index[j]];
        bufs[j] = s->bufs[p->index[j]];
        caps[j] = s->lens[p->index[j]];
    }
    status = kvp__peer_acquire(s->cl, p->peer, &conn);
    if (status == KVP_OK) {
        status = kvp__node_get(conn, s->ns, keys, bufs, caps, p->n, sizes, statuses);
        kvp__peer_release(s->cl, p->peer, conn, status);
    }
    p->status = status;
    for (size_t j = 0; j < p->n; j++) {
        size_t i       = p->index[j];
        s->statuses[i] = status != KVP_OK ? status : statuses[j];
        if (s->statuses[i] == KVP_OK || s->statuses[i] == KVP_ERR_BUFFER_TOO_SMALL) {
            s->sizes[i] = sizes[j];
        }
    }
    kv_free(keys);
    kv_free(bufs);
    kv_free(caps);
    kv_free(sizes);
    kv_free(statuses);
}

/* Put blocks [start, start + n) of a chain on @p conn, chained to start-1. */
static kvp_status_t put_run(spread_t *s, kvp_client_h conn, size_t start, size_t n)
{
    kvp_status_t status;

    status =
        kvp__node_put(conn, s->ns, s->keys + start, s->datas + start, s->lens + start, n,
                      1, start > 0 ? &s->keys[start - 1] : NULL, s->statuses + start);
    for (size_t i = start; status != KVP_OK && i < start + n; i++) {
        s->statuses[i] = status;
    }
    return status;
}

/* Unrelated blocks on @p conn, gathered into one batch. */
static kvp_status_t put_gathered(spread_t *s, kvp_client_h conn, const part_t *p)
{
    kvp_key_t    *keys     = kv_malloc(p->n * sizeof(*keys), "part keys");
    const void  **datas    = kv_malloc(p->n * sizeof(*datas), "part data");
    uint64_t     *sizes    = kv_malloc(p->n * sizeof(*sizes), "part sizes");
    kvp_status_t *statuses = kv_malloc(p->n * sizeof(*statuses), "part statuses");
    kvp_status_t  status;

    for (size_t j = 0; j < p->n; j++) {
        keys[j]  = s->keys[p->index[j]];
        datas[j] = s->datas[p->index[j]];
        sizes[j] = s->lens[p->index[j]];
    }
    status = kvp__node_put(conn, s->ns, keys, datas, sizes, p->n, 0, NULL, statuses);
    for (size_t j = 0; j < p->n; j++) {
        s->statuses[p->index[j]] = status != KVP_OK ? status : statuses[j];
    }
    kv_free(keys);
    kv_free(datas);
    kv_free(sizes);
    kv_free(statuses);
    return status;
}

/* One node's puts: a chained put per contiguous run, or one batch. */
static void put_part(void *arg, size_t k)
{
    spread_t    *s = arg;
    part_t      *p = &s->parts[k];
    kvp_client_h conn;
    kvp_status_t status;

    status = kvp__peer_acquire(s->cl, p->peer, &conn);
    if (status != KVP_OK) {
        for (size_t j = 0; j < p->n; j++) {
            s->statuses[p->index[j]] = status;
        }
        return;
    }
    if (!s->chain) {
        status = put_gathered(s, conn, p);
    }
    for (size_t j = 0, len; s->chain && j < p->n; j += len) {
        for (len = 1; j + len < p->n && p->index[j + len] == p->index[j] + len; len++) {
        }
        if (KVP_STATUS_IS_CONNECTION_ERROR(status)) {
            for (size_t r = 0; r < len; r++) {
                s->statuses[p->index[j + r]] = status; /* the node is gone */
            }
            continue;
        }
        kvp_status_t run = put_run(s, conn, p->index[j], len);
        status           = status != KVP_OK ? status : run;
    }
    kvp__peer_release(s->cl, p->peer, conn, status);
}

/* ---------------------------------------------------------------------- */
/* Replies                                                                 */
/* ---------------------------------------------------------------------- */

static int node_id_valid(uint32_t id)
{
    return id >= 1 && id <= KV_COORD_NODE_MAX;
}

/* A Match reply for a chain of @p count keys. */
static kvp_status_t match_check(const Kvpool__MatchReply *r, size_t count,
                                int length_only)
{
    if (r->matched > count || r->n_blocks != (length_only ? 0 : r->matched)) {
        kv_log_warn("coordinator: Match of %zu keys says %u matched, with %zu "
                    "location lists",
                    count, r->matched, r->n_blocks);
        return KVP_ERR_PROTOCOL;
    }
    for (size_t i = 0; i < r->n_blocks; i++) {
        if (r->blocks[i]->n_locations > LOCATIONS_MAX) {
            kv_log_warn("coordinator: %zu locations for one block",
                        r->blocks[i]->n_locations);
            return KVP_ERR_PROTOCOL;
        }
        for (size_t j = 0; j < r->blocks[i]->n_locations; j++) {
            if (!node_id_valid(KV_LOC_NODE(r->blocks[i]->locations[j]))) {
                kv_log_warn("coordinator: Match names node %u",
                            KV_LOC_NODE(r->blocks[i]->locations[j]));
                return KVP_ERR_PROTOCOL;
            }
        }
    }
    for (size_t i = 0; i < r->n_nodes; i++) {
        if (!node_id_valid(r->nodes[i]->node_id) || r->nodes[i]->length > r->matched) {
            kv_log_warn("coordinator: Match says node %u holds %u of %u blocks",
                        r->nodes[i]->node_id, r->nodes[i]->length, r->matched);
            return KVP_ERR_PROTOCOL;
        }
    }
    return KVP_OK;
}

/*
 * Match, the reply decoded into @p arena (a few chunks, not one malloc per
 * block): the caller resets the arena once done, whatever this returns.
 * With @p length_only the reply carries only the matched length.
 */
static kvp_status_t match_call(kvp__cluster_t *cl, const char *ns, const kvp_key_t *keys,
                               size_t count, int length_only, kv_pb_arena_t *arena,
                               Kvpool__MatchReply **reply_p)
{
    Kvpool__MatchRequest req   = KVPOOL__MATCH_REQUEST__INIT;
    Kvpool__MatchReply  *reply = NULL;
    kvp_status_t         status;

    req.length_only = length_only;
    req.ns     = kvp__ns_bytes(ns);
    req.n_keys = count;
    req.keys   = kvp__keys_borrow(keys, count);
    status = kvp__coord_call_with(cl, KV_COORD_MATCH, &req.base, &arena->allocator,
                                  (ProtobufCMessage **)&reply);
    kv_free(req.keys);
    if (status == KVP_ERR_NOT_FOUND) {
        /* no node has published a block of the namespace: nothing matches */
        reply = kvpool__match_reply__unpack(&arena->allocator, 0, NULL); /* all 0 */
        if (reply == NULL) {
            return KVP_ERR_NO_MEMORY;
        }
        *reply_p = reply;
        return KVP_OK;
    }
    if (status != KVP_OK) {
        return status;
    }
    status = match_check(reply, count, length_only);
    if (status != KVP_OK) {
        return status;
    }
    *reply_p = reply;
    return KVP_OK;
}

/* A PlanPut reply for @p count keys; records the nodes it describes. */
static kvp_status_t plan_check(kvp__cluster_t *cl, const Kvpool__PlanPutReply *r,
                               size_t count)
{
    if (r->n_targets != count || r->cached > count || r->n_replica_nodes != 0) {
        kv_log_warn("coordinator: PlanPut of %zu keys gives %zu targets, %u cached, "
                    "%zu replicas",
                    count, r->n_targets, r->cached, r->n_replica_nodes);
        return KVP_ERR_PROTOCOL;
    }
    for (size_t i = r->cached; i < count; i++) {
        if (!node_id_valid(r->targets[i])) {
            kv_log_warn("coordinator: PlanPut puts block %zu on node %u", i,
                        r->targets[i]);
            return KVP_ERR_PROTOCOL;
        }
    }
    return kvp__peers_learn(cl, r->nodes, r->n_nodes);
}

/* The peer of node @p id that a reply named; NULL (logged) if unknown. */
static kvp__peer_t *named_peer(kvp__cluster_t *cl, uint32_t id)
{
    kvp__peer_t *peer = kvp__peer_find(cl, id);

    if (peer == NULL) {
        kv_log_warn("coordinator: names node %u, which it does not list", id);
    }
    return peer;
}

/* ---------------------------------------------------------------------- */
/* Match and the chain calls                                               */
/* ---------------------------------------------------------------------- */

kvp_status_t kvp__cluster_match(kvp_client_h client, const char *ns,
                                const kvp_key_t *keys, size_t count, size_t *matched_p)
{
    Kvpool__MatchReply *reply;
    kv_pb_arena_t       arena;
    uint8_t             first[MATCH_ARENA];
    kvp_status_t        status;

    kv_pb_arena_init(&arena, first, sizeof(first));
    status = match_call(client->cluster, ns, keys, count, 1, &arena, &reply);
    if (status == KVP_OK) {
        *matched_p = reply->matched;
    }
    kv_pb_arena_reset(&arena);
    return status;
}

kvp_status_t kvp__cluster_put_chain(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, const void *const *datas,
                                    const uint64_t *sizes, size_t count,
                                    kvp_status_t *statuses)
{
    kvp__cluster_t        *cl   = client->cluster;
    Kvpool__PlanPutRequest req  = KVPOOL__PLAN_PUT_REQUEST__INIT;
    Kvpool__PlanPutReply  *plan = NULL;
    kvp__peer_t          **source;
    spread_t               s = {.cl       = cl,
                                .ns       = ns,
                                .keys     = keys,
                                .datas    = datas,
                                .lens     = sizes,
                                .statuses = statuses,
                                .chain    = 1};
    kvp_status_t           status;

    req.ns      = kvp__ns_bytes(ns);
    req.n_keys  = count;
    req.keys    = kvp__keys_borrow(keys, count);
    req.n_sizes = count;
    req.sizes   = (uint64_t *)sizes;
    status =
        kvp__coord_call(cl, KV_COORD_PLAN_PUT, &req.base, (ProtobufCMessage **)&plan);
    kv_free(req.keys);
    if (status != KVP_OK) {
        return status;
    }
    status = plan_check(cl, plan, count);
    source = kv_calloc(count + 1, sizeof(*source), "block sources");
    for (size_t i = plan->cached; status == KVP_OK && i < count; i++) {
        /* runs share their node: look it up once per run */
        source[i] = i > plan->cached && plan->targets[i] == plan->targets[i - 1]
                        ? source[i - 1]
                        : named_peer(cl, plan->targets[i]);
        status    = source[i] != NULL ? KVP_OK : KVP_ERR_PROTOCOL;
    }
    if (status == KVP_OK) {
        for (size_t i = 0; i < plan->cached; i++) {
            statuses[i] = KVP_OK; /* cached already */
        }
        spread_init(&s, source, count);
        kvp__fanout(cl->pool, s.n_parts, put_part, &s);
        spread_cleanup(&s);
    }
    kv_free(source);
    kvpool__plan_put_reply__free_unpacked(plan, NULL);
    return status;
}

/* The distinct nodes a Match reply names, sorted, and their peers. */
typedef struct {
    uint32_t     *ids;
    kvp__peer_t **peers; /* NULL: the coordinator does not list it */
    size_t        n;
} holders_t;

static int id_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static void holders_init(holders_t *h, kvp__cluster_t *cl, const Kvpool__MatchReply *r)
{
    size_t total = 0, n = 0;

    for (size_t i = 0; i < r->n_blocks; i++) {
        total += r->blocks[i]->n_locations;
    }
    h->ids = kv_malloc((total + 1) * sizeof(*h->ids), "holder ids");
    for (size_t i = 0; i < r->n_blocks; i++) {
        for (size_t j = 0; j < r->blocks[i]->n_locations; j++) {
            h->ids[n++] = KV_LOC_NODE(r->blocks[i]->locations[j]);
        }
    }
    qsort(h->ids, n, sizeof(*h->ids), id_cmp);
    h->n = 0;
    for (size_t j = 0; j < n; j++) {
        if (h->n == 0 || h->ids[h->n - 1] != h->ids[j]) {
            h->ids[h->n++] = h->ids[j];
        }
    }
    h->peers = kv_calloc(h->n + 1, sizeof(*h->peers), "holder peers");
    for (size_t u = 0; u < h->n; u++) {
        h->peers[u] = named_peer(cl, h->ids[u]);
    }
}

static kvp__peer_t *holders_peer(const holders_t *h, uint32_t id)
{
    const uint32_t *found = bsearch(&id, h->ids, h->n, sizeof(*h->ids), id_cmp);

    return found != NULL ? h->peers[found - h->ids] : NULL;
}

static void holders_cleanup(holders_t *h)
{
    kv_free(h->ids);
    kv_free(h->peers);
}

/* run(i, node): blocks from i on that @p node holds in a row (0: not i). */
static uint32_t run_at(const Kvpool__MatchReply *r, const uint32_t *const *runs, size_t i,
                       uint32_t node)
{
    if (i >= r->n_blocks) {
        return 0;
    }
    for (size_t j = 0; j < r->blocks[i]->n_locations; j++) {
        if (KV_LOC_NODE(r->blocks[i]->locations[j]) == node) {
            return runs[i][j];
        }
    }
    return 0;
}

/* Stop reading from @p peer in this call (its node failed). */
static void holders_exclude(holders_t *h, const kvp__peer_t *peer)
{
    for (size_t u = 0; u < h->n; u++) {
        if (h->peers[u] == peer) {
            h->peers[u] = NULL;
        }
    }
}

/*
 * Pick a source for each matched block from block @p from on (see the top
 * of the file).  @return where the blocks with a source end: at a block
 * none of whose holders the client can reach, or at the last one.
 */
static size_t choose_sources(const Kvpool__MatchReply *r, const holders_t *h, size_t from,
                             kvp__peer_t **source)
{
    uint32_t **runs = kv_calloc(r->n_blocks + 1, sizeof(*runs), "runs");
    uint32_t   cur  = 0;
    size_t     i;

    for (i = r->n_blocks; i-- > 0;) {
        const Kvpool__BlockLocations *b = r->blocks[i];
        runs[i] = kv_calloc(b->n_locations + 1, sizeof(**runs), "block runs");
        for (size_t j = 0; j < b->n_locations; j++) {
            uint32_t node = KV_LOC_NODE(b->locations[j]);
            if (holders_peer(h, node) != NULL) {
                runs[i][j] = 1 + run_at(r, (const uint32_t *const *)runs, i + 1, node);
            }
        }
    }
    for (i = from; i < r->n_blocks; i++) {
        const Kvpool__BlockLocations *b = r->blocks[i];
        if (cur == 0 || run_at(r, (const uint32_t *const *)runs, i, cur) == 0) {
            uint32_t best = 0;
            cur           = 0;
            for (size_t j = 0; j < b->n_locations; j++) {
                if (runs[i][j] > best) {
                    best = runs[i][j];
                    cur  = KV_LOC_NODE(b->locations[j]);
                }
            }
            if (cur == 0) {
                break; /* no reachable holder: the prefix ends here */
            }
        }
        source[i] = holders_peer(h, cur);
    }
    for (size_t k = 0; k < r->n_blocks; k++) {
        kv_free(runs[k]);
    }
    kv_free(runs);
    return i;
}

/* A node failure, as opposed to a block missing or damaged on a live node. */
static int node_failed(kvp_status_t status)
{
    return KVP_STATUS_IS_CONNECTION_ERROR(status) || status == KVP_ERR_TIMED_OUT ||
           status <= KVP_ERR_FIRST_NODE;
}

/*
 * Rounds of reads.  Each round reads the blocks from the end of the loaded
 * prefix on that have not arrived, from the sources chosen among the
 * holders still trusted.  A node whose call failed is no longer trusted in
 * this call, and if the prefix stopped at one of its blocks, the next
 * round tries that block's other holders.  The prefix ends for good at a
 * block that is missing or damaged on a live node, too large for its
 * buffer, or whose holders have all failed.
 */
#define GET_ROUNDS 3

kvp_status_t kvp__cluster_get_chain(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, void *const *bufs,
                                    const uint64_t *capacities, size_t count,
                                    uint64_t *sizes, size_t *loaded_p)
{
    kvp__cluster_t     *cl = client->cluster;
    Kvpool__MatchReply *match;
    kv_pb_arena_t       arena;
    uint8_t             first[MATCH_ARENA];
    kvp__peer_t       **source;
    holders_t           h;
    spread_t            s      = {.cl    = cl,
                                  .ns    = ns,
                                  .keys  = keys,
                                  .lens  = capacities,
                                  .bufs  = bufs,
                                  .sizes = sizes};
    size_t              loaded = 0;
    kvp_status_t        status;

    kv_pb_arena_init(&arena, first, sizeof(first));
    status = match_call(cl, ns, keys, count, 0, &arena, &match);
    if (status != KVP_OK) {
        kv_pb_arena_reset(&arena);
        return status;
    }
    holders_init(&h, cl, match);
    source     = kv_calloc(match->matched + 1, sizeof(*source), "block sources");
    s.statuses = kv_malloc((match->matched + 1) * sizeof(*s.statuses), "block statuses");
    for (size_t i = 0; i < match->matched; i++) {
        s.statuses[i] = KVP_ERR_NOT_FOUND;
    }
    for (int round = 0; round < GET_ROUNDS && loaded < match->matched; round++) {
        size_t end    = choose_sources(match, &h, loaded, source);
        int    failed = 0;
        for (size_t i = loaded; i < end; i++) {
            if (s.statuses[i] == KVP_OK) {
                source[i] = NULL; /* arrived in an earlier round */
            }
        }
        spread_init(&s, source, end);
        kvp__fanout(cl->pool, s.n_parts, get_part, &s);
        for (size_t k = 0; k < s.n_parts; k++) {
            if (node_failed(s.parts[k].status)) {
                holders_exclude(&h, s.parts[k].peer);
                failed = 1;
            }
        }
        spread_cleanup(&s);
        memset(source, 0, (match->matched + 1) * sizeof(*source));
        while (loaded < end && s.statuses[loaded] == KVP_OK) {
            loaded++;
        }
        if (loaded == end || !failed || !node_failed(s.statuses[loaded])) {
            break; /* done, or the block at the cut is a miss on a live node */
        }
    }
    kv_free(s.statuses);
    kv_free(source);
    holders_cleanup(&h);
    kv_pb_arena_reset(&arena);
    *loaded_p = loaded;
    return KVP_OK;
}

/* ---------------------------------------------------------------------- */
/* Blocks from and to named nodes (a Schedule plan: client/schedule.c)     */
/* ---------------------------------------------------------------------- */

kvp_status_t kvp__cluster_get_from(kvp_client_h client, const char *ns,
                                   const kvp_key_t *keys, const uint32_t *node_ids,
                                   void *const *bufs, const uint64_t *capacities,
                                   size_t count, uint64_t *sizes, size_t *loaded_p)
{
    kvp__cluster_t *cl     = client->cluster;
    kvp__peer_t   **source = kv_calloc(count + 1, sizeof(*source), "block sources");
    spread_t        s      = {.cl    = cl,
                              .ns    = ns,
                              .keys  = keys,
                              .lens  = capacities,
                              .bufs  = bufs,
                              .sizes = sizes};
    size_t          loaded = 0, end = 0;

    s.statuses = kv_malloc((count + 1) * sizeof(*s.statuses), "block statuses");
    while (end < count) {
        source[end] = end > 0 && node_ids[end] == node_ids[end - 1]
                          ? source[end - 1]
                          : named_peer(cl, node_ids[end]);
        if (source[end] == NULL) {
            break; /* a node the coordinator no longer lists: the prefix ends */
        }
        s.statuses[end++] = KVP_ERR_NOT_FOUND;
    }
    spread_init(&s, source, end);
    kvp__fanout(cl->pool, s.n_parts, get_part, &s);
    spread_cleanup(&s);
    while (loaded < end && s.statuses[loaded] == KVP_OK) {
        loaded++;
    }
    kv_free(s.statuses);
    kv_free(source);
    *loaded_p = loaded;
    return KVP_OK;
}

kvp_status_t kvp__cluster_put_to(kvp_client_h client, const char *ns,
                                 const kvp_key_t *keys, const void *const *datas,
                                 const uint64_t *sizes, size_t first, size_t count,
                                 uint32_t node_id)
{
    kvp__cluster_t *cl   = client->cluster;
    kvp__peer_t    *peer = kvp__peer_find(cl, node_id);
    spread_t        s    = {.cl = cl, .ns = ns, .keys = keys, .datas = datas,
                            .lens = sizes, .chain = 1};
    kvp__peer_t   **source;
    kvp_status_t    status = KVP_OK;

    if (peer == NULL) {
        return KVP_ERR_NOT_FOUND;
    }
    source     = kv_calloc(count + 1, sizeof(*source), "block sources");
    s.statuses = kv_malloc((count + 1) * sizeof(*s.statuses), "block statuses");
    for (size_t i = first; i < count; i++) {
        source[i] = peer;
    }
    spread_init(&s, source, count);
    kvp__fanout(cl->pool, s.n_parts, put_part, &s);
    spread_cleanup(&s);
    for (size_t i = first; status == KVP_OK && i < count; i++) {
        status = s.statuses[i];
    }
    kv_free(s.statuses);
    kv_free(source);
    return status;
}

/* ---------------------------------------------------------------------- */
/* Unrelated blocks                                                        */
/* ---------------------------------------------------------------------- */

kvp_status_t kvp__cluster_put_batch(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, const void *const *datas,
                                    const uint64_t *sizes, size_t count,
                                    kvp_status_t *statuses)
{
    kvp__cluster_t          *cl      = client->cluster;
    Kvpool__PlanPutRequest  *reqs    = kv_calloc(count, sizeof(*reqs), "plans");
    const ProtobufCMessage **msgs    = kv_calloc(count, sizeof(*msgs), "plan messages");
    ProtobufCMessage       **replies = kv_calloc(count, sizeof(*replies), "plan replies");
    ProtobufCBinaryData     *bins    = kvp__keys_borrow(keys, count);
    kvp__peer_t            **source  = kv_calloc(count, sizeof(*source), "block sources");
    spread_t                 s       = {.cl       = cl,
                                        .ns       = ns,
                                        .keys     = keys,
                                        .datas    = datas,
                                        .lens     = sizes,
                                        .statuses = statuses};
    kvp_status_t             status;

    for (size_t i = 0; i < count; i++) {
        kvpool__plan_put_request__init(&reqs[i]);
        reqs[i].ns      = kvp__ns_bytes(ns);
        reqs[i].n_keys  = 1;
        reqs[i].keys    = &bins[i];
        reqs[i].n_sizes = 1;
        reqs[i].sizes   = (uint64_t *)&sizes[i];
        msgs[i]         = &reqs[i].base;
    }
    status = kvp__coord_calls(cl, KV_COORD_PLAN_PUT, msgs, count, replies, statuses);
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        Kvpool__PlanPutReply *plan = (Kvpool__PlanPutReply *)replies[i];
        if (statuses[i] != KVP_OK) {
            continue;
        }
        statuses[i] = plan_check(cl, plan, 1);
        if (statuses[i] == KVP_OK && plan->cached == 0) {
            source[i]   = named_peer(cl, plan->targets[0]);
            statuses[i] = source[i] != NULL ? KVP_OK : KVP_ERR_PROTOCOL;
        }
    }
    if (status == KVP_OK) {
        spread_init(&s, source, count);
        kvp__fanout(cl->pool, s.n_parts, put_part, &s);
        spread_cleanup(&s);
    }
    for (size_t i = 0; i < count; i++) {
        if (replies[i] != NULL) {
            protobuf_c_message_free_unpacked(replies[i], NULL);
        }
    }
    kv_free(source);
    kv_free(bins);
    kv_free(replies);
    kv_free(msgs);
    kv_free(reqs);
    return status;
}

kvp_status_t kvp__cluster_get_batch(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, void *const *bufs,
                                    const uint64_t *capacities, size_t count,
                                    uint64_t *sizes, kvp_status_t *statuses)
{
    kvp__cluster_t          *cl   = client->cluster;
    Kvpool__MatchRequest    *reqs = kv_calloc(count, sizeof(*reqs), "matches");
    const ProtobufCMessage **msgs = kv_calloc(count, sizeof(*msgs), "match messages");
    ProtobufCMessage   **replies  = kv_calloc(count, sizeof(*replies), "match replies");
    ProtobufCBinaryData *bins     = kvp__keys_borrow(keys, count);
    kvp__peer_t        **source   = kv_calloc(count, sizeof(*source), "block sources");
    spread_t             s        = {.cl       = cl,
                                     .ns       = ns,
                                     .keys     = keys,
                                     .lens     = capacities,
                                     .bufs     = bufs,
                                     .sizes    = sizes,
                                     .statuses = statuses};
    kvp_status_t         status;

    for (size_t i = 0; i < count; i++) {
        kvpool__match_request__init(&reqs[i]);
        reqs[i].ns     = kvp__ns_bytes(ns);
        reqs[i].n_keys = 1;
        reqs[i].keys   = &bins[i];
        msgs[i]        = &reqs[i].base;
    }
    status = kvp__coord_calls(cl, KV_COORD_MATCH, msgs, count, replies, statuses);
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        Kvpool__MatchReply *match = (Kvpool__MatchReply *)replies[i];
        if (statuses[i] != KVP_OK) {
            continue;
        }
        statuses[i] = match_check(match, 1, 0);
        if (statuses[i] != KVP_OK) {
            continue;
        }
        statuses[i] = KVP_ERR_NOT_FOUND; /* a miss, unless a holder is reachable */
        for (size_t j = 0; match->matched == 1 && j < match->blocks[0]->n_locations;
             j++) {
            kvp__peer_t *peer =
                named_peer(cl, KV_LOC_NODE(match->blocks[0]->locations[j]));
            /* the previous block's node if it holds this one: talk to few nodes */
            if (peer != NULL && (source[i] == NULL || (i > 0 && peer == source[i - 1]))) {
                source[i]   = peer;
                statuses[i] = KVP_OK;
            }
        }
    }
    if (status == KVP_OK) {
        spread_init(&s, source, count);
        kvp__fanout(cl->pool, s.n_parts, get_part, &s);
        spread_cleanup(&s);
    }
    for (size_t i = 0; i < count; i++) {
        if (replies[i] != NULL) {
            protobuf_c_message_free_unpacked(replies[i], NULL);
        }
    }
    kv_free(source);
    kv_free(bins);
    kv_free(replies);
    kv_free(msgs);
    kv_free(reqs);
    return status;
}
