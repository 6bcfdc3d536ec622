/*
 * Cluster mode, the membership half: the coordinator's connection, the
 * table of pool nodes (peers) and the connections to them, and the calls
 * that go to every node (stats, delete) or to the coordinator alone
 * (index stats).  cluster_data.c moves the blocks.
 *
 * Peers.  The table maps the coordinator's node ids to peers.  A peer is
 * created the first time a node list or a PlanPut reply names its id and
 * lives until the client is disconnected, so a call may hold a peer
 * pointer without a reference count; what changes is its address (a
 * restarted coordinator may give the id to another node: the connection
 * is then closed) and its connection.  The connection is opened by the
 * first call that needs it, with the client's own parameters, and closed
 * by the call that sees it fail with a connection error; that call also
 * fetches the node list again.  A connect that fails is not retried for
 * RETRY_NS: calls for that node fail at once meanwhile (their blocks are
 * misses for get_chain), so a dead node costs one connect timeout, not one
 * per call.
 *
 * Node lists.  kvp__peer_find() fetches the list (Nodes) when a reply names
 * an id the client does not know; concurrent callers that wanted the same
 * fetch share it (the generation counter says whether a list arrived since
 * they looked).
 */
#include "cluster.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvproto/coord_service.h>

#include <string.h>

/* Longest node address accepted from the coordinator ("HOST:PORT"). */
#define ADDRESS_MAX 255
/* After a failed connect, calls for that peer fail at once for this long. */
#define RETRY_NS ((uint64_t)1000000000)

static void rwlock_init(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t attr;

    /* a writer (reconnect, drop) must not wait behind a stream of calls */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
}

/* ---------------------------------------------------------------------- */
/* The coordinator's connection                                            */
/* ---------------------------------------------------------------------- */

static kvp_status_t coord_open(kvp__cluster_t *cl)
{
    kv_rpc_client_params_t params = {
        .address    = cl->address,
        .token      = cl->opts.token,
        .name       = cl->opts.name,
        .timeout_ms = cl->opts.timeout_ms,
        .service    = &kvpool__coordinator__descriptor,
    };
    kv_rpc_client_t *rpc;
    kvp_status_t     status;

    status = kv_rpc_client_create(&params, &rpc);
    if (status == KVP_OK && !kv_rpc_client_hello(rpc)->coordinator) {
        kv_rpc_client_destroy(rpc);
        status = KVP_ERR_PROTOCOL;
    }
    if (status != KVP_OK) {
        kv_log_warn("coordinator %s: cannot reconnect: %s", cl->address,
                    kvp_status_string(status));
        cl->coord_retry_ns = kv_time_ns() + RETRY_NS;
        return status;
    }
    kv_log_info("coordinator %s: reconnected", cl->address);
    cl->coord = rpc;
    return KVP_OK;
}

/* The coordinator's connection, read-held on KVP_OK (coord_release()). */
static kvp_status_t coord_acquire(kvp__cluster_t *cl, kv_rpc_client_t **rpc_p)
{
    kvp_status_t status = KVP_OK;

    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_rwlock_rdlock(&cl->coord_lock);
        if (cl->coord != NULL) {
            *rpc_p = cl->coord;
            return KVP_OK;
        }
        pthread_rwlock_unlock(&cl->coord_lock);
        pthread_rwlock_wrlock(&cl->coord_lock);
        if (cl->coord == NULL) {
            status = kv_time_ns() < cl->coord_retry_ns ? KVP_ERR_CONNECTION_REFUSED
                                                       : coord_open(cl);
        }
        pthread_rwlock_unlock(&cl->coord_lock);
        if (status != KVP_OK) {
            return status;
        }
    }
    return KVP_ERR_CONNECTION_LOST;
}

static void coord_release(kvp__cluster_t *cl, kv_rpc_client_t *rpc, kvp_status_t status)
{
    pthread_rwlock_unlock(&cl->coord_lock);
    if (!KVP_STATUS_IS_CONNECTION_ERROR(status)) {
        return;
    }
    pthread_rwlock_wrlock(&cl->coord_lock);
    if (cl->coord == rpc) {
        kv_log_warn("coordinator %s: connection failed: %s", cl->address,
                    kvp_status_string(status));
        kv_rpc_client_destroy(rpc);
        cl->coord = NULL;
    }
    pthread_rwlock_unlock(&cl->coord_lock);
}

kvp_status_t kvp__coord_call(kvp__cluster_t *cl, unsigned method,
                             const ProtobufCMessage *request, ProtobufCMessage **reply_p)
{
    return kvp__coord_call_with(cl, method, request, NULL, reply_p);
}

kvp_status_t kvp__coord_call_with(kvp__cluster_t *cl, unsigned method,
                                  const ProtobufCMessage *request,
                                  ProtobufCAllocator *allocator, ProtobufCMessage **reply_p)
{
    kv_rpc_recv_t    recv   = {.allocator = allocator};
    kv_rpc_client_t *rpc;
    kvp_status_t     status = KVP_OK;

    /* a lost connection is reopened once: the coordinator may have restarted */
    for (int attempt = 0; attempt < 2; attempt++) {
        status = coord_acquire(cl, &rpc);
        if (status != KVP_OK) {
            return status;
        }
        status = kv_rpc_call(rpc, method, request, NULL, 0, cl->opts.timeout_ms, reply_p,
                             &recv);
        coord_release(cl, rpc, status);
        if (!KVP_STATUS_IS_CONNECTION_ERROR(status)) {
            break;
        }
    }
    return status;
}

kvp_status_t kvp__coord_calls(kvp__cluster_t *cl, unsigned method,
                              const ProtobufCMessage *const *requests, size_t n,
                              ProtobufCMessage **replies, kvp_status_t *statuses)
{
    kv_rpc_pending_t **pending = kv_calloc(n + 1, sizeof(*pending), "pending calls");
    kv_rpc_client_t   *rpc;
    kvp_status_t       status = KVP_OK;

    for (int attempt = 0; attempt < 2; attempt++) {
        status = coord_acquire(cl, &rpc);
        if (status != KVP_OK) {
            break;
        }
        for (size_t i = 0; i < n; i++) {
            replies[i]  = NULL;
            pending[i]  = NULL;
            statuses[i] = kv_rpc_call_start(rpc, method, requests[i], NULL, 0,
                                            cl->opts.timeout_ms, NULL, &pending[i]);
        }
        for (size_t i = 0; i < n; i++) {
            if (pending[i] != NULL) {
                statuses[i] = kv_rpc_call_finish(rpc, pending[i], &replies[i]);
            }
            if (KVP_STATUS_IS_CONNECTION_ERROR(statuses[i]) && status == KVP_OK) {
                status = statuses[i];
            }
        }
        coord_release(cl, rpc, status);
        if (status == KVP_OK) {
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (replies[i] != NULL) {
                protobuf_c_message_free_unpacked(replies[i], NULL);
                replies[i] = NULL;
            }
        }
        if (attempt == 0) {
            status = KVP_OK; /* try once more on a new connection */
        }
    }
    kv_free(pending);
    return status;
}

/* ---------------------------------------------------------------------- */
/* Peers                                                                   */
/* ---------------------------------------------------------------------- */

static kvp__peer_t *peer_lookup(kvp__cluster_t *cl, uint32_t id)
{
    return id < cl->num_peers ? cl->peers[id] : NULL;
}

/* The peer of @p id, created if new (refresh_lock held). */
static kvp__peer_t *peer_upsert(kvp__cluster_t *cl, uint32_t id, const char *address)
{
    kvp__peer_t *peer;

    pthread_mutex_lock(&cl->table_lock);
    if (id >= cl->num_peers) {
        size_t num = KV_MAX(cl->num_peers * 2, 16);
        num        = KV_MIN(KV_MAX(num, (size_t)id + 1), (size_t)KV_COORD_NODE_MAX + 1);
        cl->peers  = kv_realloc(cl->peers, num * sizeof(*cl->peers), "peer table");
        memset(cl->peers + cl->num_peers, 0, (num - cl->num_peers) * sizeof(*cl->peers));
        cl->num_peers = num;
    }
    peer = cl->peers[id];
    if (peer == NULL) {
        peer          = kv_calloc(1, sizeof(*peer), "peer");
        peer->id      = id;
        peer->address = kv_strdup(address, "peer address");
        rwlock_init(&peer->lock);
        cl->peers[id] = peer;
    }
    pthread_mutex_unlock(&cl->table_lock);
    if (strcmp(peer->address, address) != 0) {
        /* the id now names another node: forget the old one's connection */
        pthread_rwlock_wrlock(&peer->lock);
        kv_log_info("node %u moved from %s to %s", id, peer->address, address);
        kv_free(peer->address);
        peer->address = kv_strdup(address, "peer address");
        kvp_client_disconnect(peer->conn);
        peer->conn     = NULL;
        peer->retry_ns = 0;
        pthread_rwlock_unlock(&peer->lock);
    }
    return peer;
}

static int node_info_valid(const Kvpool__NodeInfo *node)
{
    return node != NULL && node->node_id >= 1 && node->node_id <= KV_COORD_NODE_MAX &&
           node->address != NULL && node->address[0] != '\0' &&
           strnlen(node->address, ADDRESS_MAX + 1) <= ADDRESS_MAX;
}

/* Record @p nodes (refresh_lock held); with @p whole, they are every node. */
static kvp_status_t peers_apply(kvp__cluster_t *cl, Kvpool__NodeInfo *const *nodes,
                                size_t n, int whole)
{
    kvp__peer_t **named;

    if (n > KV_COORD_NODE_MAX) {
        kv_log_warn("coordinator: %zu nodes in one list", n);
        return KVP_ERR_PROTOCOL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!node_info_valid(nodes[i])) {
            kv_log_warn("coordinator: a malformed node (id %u)",
                        nodes[i] ? nodes[i]->node_id : 0);
            return KVP_ERR_PROTOCOL;
        }
    }
    named = kv_calloc(n + 1, sizeof(*named), "named peers");
    for (size_t i = 0; i < n; i++) {
        named[i] = peer_upsert(cl, nodes[i]->node_id, nodes[i]->address);
    }
    pthread_mutex_lock(&cl->table_lock);
    for (size_t id = 0; whole && id < cl->num_peers; id++) {
        if (cl->peers[id] != NULL) {
            cl->peers[id]->listed = 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        named[i]->listed = 1;
    }
    cl->generation++;
    pthread_mutex_unlock(&cl->table_lock);
    kv_free(named);
    return KVP_OK;
}

/* Fetch the node list, unless one arrived since generation @p seen. */
static kvp_status_t peers_refresh(kvp__cluster_t *cl, uint64_t seen)
{
    Kvpool__NodesRequest req    = KVPOOL__NODES_REQUEST__INIT;
    Kvpool__NodesReply  *reply  = NULL;
    kvp_status_t         status = KVP_OK;
    uint64_t             generation;

    pthread_mutex_lock(&cl->refresh_lock);
    pthread_mutex_lock(&cl->table_lock);
    generation = cl->generation;
    pthread_mutex_unlock(&cl->table_lock);
    if (generation == seen) {
        status =
            kvp__coord_call(cl, KV_COORD_NODES, &req.base, (ProtobufCMessage **)&reply);
        if (status == KVP_OK) {
            status = peers_apply(cl, reply->nodes, reply->n_nodes, 1);
            kvpool__nodes_reply__free_unpacked(reply, NULL);
        }
    }
    pthread_mutex_unlock(&cl->refresh_lock);
    return status;
}

static uint64_t generation_now(kvp__cluster_t *cl)
{
    uint64_t generation;

    pthread_mutex_lock(&cl->table_lock);
    generation = cl->generation;
    pthread_mutex_unlock(&cl->table_lock);
    return generation;
}

kvp__peer_t *kvp__peer_find(kvp__cluster_t *cl, uint32_t id)
{
    kvp__peer_t *peer;
    uint64_t     generation;

    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_mutex_lock(&cl->table_lock);
        peer       = peer_lookup(cl, id);
        peer       = peer != NULL && peer->listed ? peer : NULL;
        generation = cl->generation;
        pthread_mutex_unlock(&cl->table_lock);
        if (peer != NULL || attempt == 1 || peers_refresh(cl, generation) != KVP_OK) {
            break;
        }
    }
    return peer;
}

kvp_status_t kvp__peers_learn(kvp__cluster_t *cl, Kvpool__NodeInfo *const *nodes,
                              size_t n)
{
    kvp_status_t status;

    pthread_mutex_lock(&cl->refresh_lock);
    status = peers_apply(cl, nodes, n, 0);
    pthread_mutex_unlock(&cl->refresh_lock);
    return status;
}

kvp_status_t kvp__peers_listed(kvp__cluster_t *cl, kvp__peer_t ***peers_p, size_t *n_p)
{
    kvp__peer_t **peers;
    size_t        n = 0;
    kvp_status_t  status;

    status = peers_refresh(cl, generation_now(cl));
    if (status != KVP_OK) {
        return status;
    }
    pthread_mutex_lock(&cl->table_lock);
    peers = kv_calloc(cl->num_peers + 1, sizeof(*peers), "listed peers");
    for (size_t id = 0; id < cl->num_peers; id++) {
        if (cl->peers[id] != NULL && cl->peers[id]->listed) {
            peers[n++] = cl->peers[id];
        }
    }
    pthread_mutex_unlock(&cl->table_lock);
    *peers_p = peers;
    *n_p     = n;
    return KVP_OK;
}

static kvp_status_t peer_connect(kvp__cluster_t *cl, kvp__peer_t *peer)
{
    kvp_status_t status = KVP_OK;

    pthread_rwlock_wrlock(&peer->lock);
    if (peer->conn == NULL) {
        if (kv_time_ns() < peer->retry_ns) {
            status = KVP_ERR_CONNECTION_REFUSED;
        } else {
            status = kvp__node_connect(peer->address, &cl->opts, &peer->conn);
            if (status != KVP_OK) {
                kv_log_warn("node %u (%s): cannot connect: %s", peer->id, peer->address,
                            kvp_status_string(status));
                peer->retry_ns = kv_time_ns() + RETRY_NS;
            }
        }
    }
    pthread_rwlock_unlock(&peer->lock);
    return status;
}

kvp_status_t kvp__peer_acquire(kvp__cluster_t *cl, kvp__peer_t *peer,
                               kvp_client_h *conn_p)
{
    kvp_status_t status;

    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_rwlock_rdlock(&peer->lock);
        if (peer->conn != NULL) {
            *conn_p = peer->conn;
            return KVP_OK;
        }
        pthread_rwlock_unlock(&peer->lock);
        status = peer_connect(cl, peer);
        if (status != KVP_OK) {
            return status;
        }
    }
    return KVP_ERR_CONNECTION_LOST; /* dropped again at once: give up */
}

void kvp__peer_release(kvp__cluster_t *cl, kvp__peer_t *peer, kvp_client_h conn,
                       kvp_status_t status)
{
    int dropped = 0;

    pthread_rwlock_unlock(&peer->lock);
    if (!KVP_STATUS_IS_CONNECTION_ERROR(status)) {
        return;
    }
    pthread_rwlock_wrlock(&peer->lock);
    if (peer->conn == conn) {
        kv_log_warn("node %u (%s): connection failed: %s", peer->id, peer->address,
                    kvp_status_string(status));
        kvp_client_disconnect(conn);
        peer->conn = NULL;
        dropped    = 1;
    }
    pthread_rwlock_unlock(&peer->lock);
    if (dropped) {
        peers_refresh(cl, generation_now(cl)); /* the node may have left */
    }
}

/* ---------------------------------------------------------------------- */
/* Open and close                                                          */
/* ---------------------------------------------------------------------- */

kvp_status_t kvp__cluster_open(kvp_client_h client, kv_rpc_client_t *coord,
                               const char *address, const kvp__conn_opts_t *opts)
{
    kvp__cluster_t *cl = kv_calloc(1, sizeof(*cl), "cluster");
    kvp_status_t    status;

    cl->address         = kv_strdup(address, "coordinator address");
    cl->opts.token      = opts->token ? kv_strdup(opts->token, "token") : NULL;
    cl->opts.name       = kv_strdup(opts->name, "client name");
    cl->opts.transport  = kv_strdup(opts->transport, "transport");
    cl->opts.timeout_ms = opts->timeout_ms;
    cl->coord           = coord;
    rwlock_init(&cl->coord_lock);
    pthread_mutex_init(&cl->refresh_lock, NULL);
    pthread_mutex_init(&cl->table_lock, NULL);
    client->cluster = cl;
    status          = peers_refresh(cl, 0);
    if (status != KVP_OK) {
        kv_log_warn("coordinator %s: no node list: %s", address,
                    kvp_status_string(status));
        kvp__cluster_close(client);
        return status;
    }
    cl->pool = kvp__fanout_pool_create();
    return KVP_OK;
}

void kvp__cluster_close(kvp_client_h client)
{
    kvp__cluster_t *cl = client->cluster;

    if (cl == NULL) {
        return;
    }
    kvp__fanout_pool_destroy(cl->pool);
    for (size_t id = 0; id < cl->num_peers; id++) {
        kvp__peer_t *peer = cl->peers[id];
        if (peer != NULL) {
            kvp_client_disconnect(peer->conn);
            pthread_rwlock_destroy(&peer->lock);
            kv_free(peer->address);
            kv_free(peer);
        }
    }
    kv_free(cl->peers);
    kv_rpc_client_destroy(cl->coord);
    pthread_rwlock_destroy(&cl->coord_lock);
    pthread_mutex_destroy(&cl->refresh_lock);
    pthread_mutex_destroy(&cl->table_lock);
    kv_free((char *)cl->opts.token);
    kv_free((char *)cl->opts.name);
    kv_free((char *)cl->opts.transport);
    kv_free(cl->address);
    kv_free(cl);
    client->cluster = NULL;
}

const char *kvp__cluster_transport(kvp_client_h client)
{
    kvp__cluster_t *cl     = client->cluster;
    const char     *common = NULL;

    pthread_mutex_lock(&cl->table_lock);
    for (size_t id = 0; id < cl->num_peers; id++) {
        kvp__peer_t *peer = cl->peers[id];
        /* a peer being connected or dropped right now is skipped */
        if (peer == NULL || pthread_rwlock_tryrdlock(&peer->lock) != 0) {
            continue;
        }
        if (peer->conn != NULL) {
            const char *mine = kvp_client_transport(peer->conn);
            common = common == NULL || strcmp(common, mine) == 0 ? mine : "mixed";
        }
        pthread_rwlock_unlock(&peer->lock);
    }
    pthread_mutex_unlock(&cl->table_lock);
    return common != NULL ? common : "none";
}

/* ---------------------------------------------------------------------- */
/* Calls to every node, and to the coordinator alone                       */
/* ---------------------------------------------------------------------- */

/* One call per listed node, in parallel. */
typedef struct {
    kvp__cluster_t  *cl;
    kvp__peer_t    **peers;
    kvp_status_t    *statuses;
    const char      *ns; /* delete */
    const kvp_key_t *keys;
    size_t           count;
    size_t          *deleted; /* delete: per node */
    kvp_stats_t     *stats;   /* stats: per node */
} each_node_t;

static void delete_part(void *arg, size_t i)
{
    each_node_t *e = arg;
    kvp_client_h conn;

    e->statuses[i] = kvp__peer_acquire(e->cl, e->peers[i], &conn);
    if (e->statuses[i] == KVP_OK) {
        e->statuses[i] = kvp_delete(conn, e->ns, e->keys, e->count, &e->deleted[i]);
        kvp__peer_release(e->cl, e->peers[i], conn, e->statuses[i]);
    }
}

static void stats_part(void *arg, size_t i)
{
    each_node_t *e = arg;
    kvp_client_h conn;

    e->statuses[i] = kvp__peer_acquire(e->cl, e->peers[i], &conn);
    if (e->statuses[i] == KVP_OK) {
        e->statuses[i] = kvp_stats(conn, &e->stats[i]);
        kvp__peer_release(e->cl, e->peers[i], conn, e->statuses[i]);
    }
}

/* Run @p part on every listed node; @p n_p says how many there were. */
static kvp_status_t each_node(kvp__cluster_t *cl, each_node_t *e, kvp__part_func_t part,
                              size_t *n_p)
{
    size_t       n;
    kvp_status_t status;

    status = kvp__peers_listed(cl, &e->peers, &n);
    if (status != KVP_OK) {
        return status;
    }
    e->cl       = cl;
    e->statuses = kv_calloc(n + 1, sizeof(*e->statuses), "node statuses");
    e->deleted  = kv_calloc(n + 1, sizeof(*e->deleted), "node deletes");
    e->stats    = kv_calloc(n + 1, sizeof(*e->stats), "node stats");
    kvp__fanout(cl->pool, n, part, e);
    *n_p = n;
    return KVP_OK;
}

static void each_node_cleanup(each_node_t *e)
{
    kv_free(e->peers);
    kv_free(e->statuses);
    kv_free(e->deleted);
    kv_free(e->stats);
}

kvp_status_t kvp__cluster_delete(kvp_client_h client, const char *ns,
                                 const kvp_key_t *keys, size_t count, size_t *deleted_p)
{
    each_node_t  e = {.ns = ns, .keys = keys, .count = count};
    size_t       n, deleted = 0;
    kvp_status_t status;

    status = each_node(client->cluster, &e, delete_part, &n);
    if (status != KVP_OK) {
        return status;
    }
    for (size_t i = 0; i < n; i++) {
        if (e.statuses[i] == KVP_OK) {
            deleted += e.deleted[i];
        } else if (status == KVP_OK) {
            status = e.statuses[i];
        }
    }
    each_node_cleanup(&e);
    if (status == KVP_OK && deleted_p != NULL) {
        *deleted_p = deleted;
    }
    return status;
}

kvp_status_t kvp__cluster_stats(kvp_client_h client, kvp_stats_t *stats_p)
{
    each_node_t  e   = {0};
    kvp_stats_t  sum = {0};
    size_t       n, answered         = 0;
    kvp_status_t status, first_error = KVP_OK;

    status = each_node(client->cluster, &e, stats_part, &n);
    if (status != KVP_OK) {
        return status;
    }
    for (size_t i = 0; i < n; i++) {
        const kvp_stats_t *s = &e.stats[i];
        if (e.statuses[i] != KVP_OK) {
            first_error = first_error != KVP_OK ? first_error : e.statuses[i];
            continue;
        }
        answered++;
        sum.capacity_bytes += s->capacity_bytes;
        sum.used_bytes += s->used_bytes;
        sum.blocks += s->blocks;
        sum.puts += s->puts;
        sum.gets += s->gets;
        sum.hits += s->hits;
        sum.misses += s->misses;
        sum.evictions += s->evictions;
        sum.bytes_in += s->bytes_in;
        sum.bytes_out += s->bytes_out;
        sum.connections += s->connections;
        sum.rpc_errors += s->rpc_errors;
        for (int t = 0; t < KVP_TIERS; t++) {
            const uint64_t *from = (const uint64_t *)&s->tiers[t];
            uint64_t       *to   = (uint64_t *)&sum.tiers[t];
            for (size_t f = 0; f < sizeof(kvp_tier_stats_t) / sizeof(uint64_t); f++) {
                to[f] += from[f];
            }
        }
    }
    each_node_cleanup(&e);
    if (n > 0 && answered == 0) {
        return first_error;
    }
    *stats_p = sum;
    return KVP_OK;
}

kvp_status_t kvp_index_stats(kvp_client_h client, kvp_index_stats_t *stats_p)
{
    Kvpool__CoordStatsRequest req   = KVPOOL__COORD_STATS_REQUEST__INIT;
    Kvpool__CoordStatsReply  *reply = NULL;
    kvp_status_t              status;

    if (client == NULL || stats_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (client->cluster == NULL) {
        return KVP_ERR_UNSUPPORTED;
    }
    status = kvp__coord_call(client->cluster, KV_COORD_STATS, &req.base,
                             (ProtobufCMessage **)&reply);
    if (status != KVP_OK) {
        return status;
    }
    stats_p->nodes            = reply->nodes;
    stats_p->blocks           = reply->blocks;
    stats_p->entries          = reply->entries;
    stats_p->index_bytes      = reply->index_bytes;
    stats_p->matches          = reply->matches;
    stats_p->matched_blocks   = reply->matched_blocks;
    stats_p->requested_blocks = reply->requested_blocks;
    stats_p->events           = reply->events;
    stats_p->lease_expiries   = reply->lease_expiries;
    kvpool__coord_stats_reply__free_unpacked(reply, NULL);
    return KVP_OK;
}
