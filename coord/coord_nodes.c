/*
 * Membership: Join, Heartbeat, Nodes, and lease expiry.
 *
 * A node joins with its address and a random incarnation (one per node
 * process), gets an id and a lease of lease_ms, and renews the lease with
 * heartbeats.  A node whose lease runs out is dropped with its blocks; so
 * is a node replaced by a Join from the same address (the node restarted,
 * or re-joins after losing us).  Heartbeats from an unknown id or another
 * incarnation get KVP_ERR_NOT_FOUND, which tells the node to join again
 * and re-publish its inventory.
 */
#include "coord_int.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t kv_coord_lease_end(const kv_coord_t *coord)
{
    return kv_time_ns() + (uint64_t)coord->config.lease_ms * 1000000ull;
}

/*
 * Check "HOST:PORT" (HOST may be "[V6]") and write into @p out the address
 * clients should dial: a wildcard HOST becomes the IP of @p peer
 * ("IP:PORT" as kv_rpc_call_peer() writes it).  Returns 0 with a reason.
 */
static int join_address(const char *address, const char *peer, char *out, size_t out_len,
                        char *err, size_t err_len)
{
    size_t      len = strlen(address), host_len, peer_host_len;
    const char *colon = strrchr(address, ':'), *peer_colon;
    const char *host  = address;
    char       *end;
    long        port;

    if (len == 0 || len > KV_COORD_ADDRESS_MAX || colon == NULL) {
        snprintf(err, err_len, "node address must be HOST:PORT of at most %d bytes",
                 KV_COORD_ADDRESS_MAX);
        return 0;
    }
    port = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || port < 1 || port > 65535) {
        snprintf(err, err_len, "node address '%.*s' has no port 1..65535",
                 KV_COORD_ADDRESS_MAX, address);
        return 0;
    }
    host_len = (size_t)(colon - address);
    for (size_t i = 0; i < host_len; i++) {
        if ((unsigned char)host[i] <= ' ' || (unsigned char)host[i] >= 0x7f) {
            snprintf(err, err_len, "node address has a control or non-ASCII byte");
            return 0;
        }
    }
    if (host_len != 0 && !(host_len == 7 && memcmp(host, "0.0.0.0", 7) == 0) &&
        !(host_len == 4 && memcmp(host, "[::]", 4) == 0)) {
        snprintf(out, out_len, "%s", address);
        return 1;
    }
    /* a wildcard: the node listens everywhere; use the address it came from */
    peer_colon = strrchr(peer, ':');
    if (peer_colon == NULL || peer[0] == '?') {
        snprintf(err, err_len, "node address '%s' is a wildcard and the peer's is "
                 "unknown: set the node's advertise address", address);
        return 0;
    }
    peer_host_len = (size_t)(peer_colon - peer);
    snprintf(out, out_len, memchr(peer, ':', peer_host_len) ? "[%.*s]:%ld" : "%.*s:%ld",
             (int)peer_host_len, peer, port);
    return 1;
}

/* Check the NodeInfo of a Join into @p m (address resolved); 0 after a reply. */
static int join_check(kv_rpc_call_t *call, const Kvpool__JoinRequest *req,
                      kv_coord_member_t *m)
{
    const Kvpool__NodeInfo *info = req->node;
    const char             *name;
    char                    err[300];

    if (info == NULL) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "Join without a node");
        return 0;
    }
    if (req->incarnation == 0) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "Join with incarnation 0");
        return 0;
    }
    name = info->name ? info->name : "";
    if (strlen(name) > KV_COORD_NAME_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "node name is longer than %d bytes", KV_COORD_NAME_MAX);
        return 0;
    }
    if (!join_address(info->address ? info->address : "", kv_rpc_call_peer(call),
                      m->address, sizeof(m->address), err, sizeof(err))) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "%s",
                           err[0] ? err : "node address must be HOST:PORT");
        return 0;
    }
    if (info->capacity_bytes == 0) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "node capacity of 0 bytes");
        return 0;
    }
    if (info->n_tiers > KV_COORD_TIER_COUNT) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "%zu tiers (at most %d)",
                           info->n_tiers, KV_COORD_TIER_COUNT);
        return 0;
    }
    for (size_t i = 0; i < info->n_tiers; i++) {
        if ((unsigned)info->tiers[i] >= KV_COORD_TIER_COUNT) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "unknown tier %d",
                               (int)info->tiers[i]);
            return 0;
        }
        m->tiers |= 1u << info->tiers[i];
    }
    if (info->data_plane.len > KV_COORD_DATA_PLANE_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "data-plane address of %zu bytes (at most %d)",
                           info->data_plane.len, KV_COORD_DATA_PLANE_MAX);
        return 0;
    }
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->incarnation    = req->incarnation;
    m->capacity_bytes = info->capacity_bytes;
    m->free_bytes     = KV_MIN(info->free_bytes, info->capacity_bytes);
    m->blocks         = info->blocks;
    m->load           = info->load;
    return 1;
}

/* Forget @p m and every block it held. */
static void member_drop(kv_coord_t *coord, kv_coord_member_t *m, const char *why)
{
    size_t dropped = kv_index_remove_node(coord->index, m->id);

    kv_log_info("node %u '%s' at %s %s: %zu block locations dropped", m->id, m->name,
                m->address, why, dropped);
    kv_coord_members_remove(coord->members, m);
}

void kv_coord_handle_join(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                          const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__JoinRequest *req   = (const Kvpool__JoinRequest *)msg;
    kv_coord_t                *coord = arg;
    Kvpool__JoinReply          reply = KVPOOL__JOIN_REPLY__INIT;
    kv_coord_member_t          proto, *old, *m;
    uint32_t                   keep_id = 0;
    kvp_status_t               status;

    memset(&proto, 0, sizeof(proto));
    if (!join_check(call, req, &proto)) {
        return;
    }
    old = kv_coord_members_find_address(coord->members, proto.address);
    if (old == NULL && kv_coord_members_count(coord->members) >= coord->config.max_nodes) {
        kv_rpc_reply_error(call, KVP_ERR_NO_SPACE,
                           "the coordinator already has max_nodes = %u nodes",
                           coord->config.max_nodes);
        return;
    }
    if (old != NULL) {
        /* the same process re-joining keeps its id; a new one gets a new id */
        keep_id = old->incarnation == proto.incarnation ? old->id : 0;
        member_drop(coord, old, "is replaced by a new Join");
    }
    proto.deadline_ns = kv_coord_lease_end(coord);
    status = kv_coord_members_add(coord->members, &proto, req->node->data_plane.data,
                                  req->node->data_plane.len, keep_id, &m);
    if (status != KVP_OK) {
        kv_rpc_reply_error(call, status, "cannot register the node");
        return;
    }
    kv_log_info("node %u '%s' at %s joined (%llu bytes, incarnation %016llx)", m->id,
                m->name, m->address, (unsigned long long)m->capacity_bytes,
                (unsigned long long)m->incarnation);
    reply.node_id  = m->id;
    reply.lease_ms = coord->config.lease_ms;
    reply.epoch    = coord->epoch;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

/* A heartbeat's counters into @p out: 0 if a tier is unknown or repeated. */
static int node_stats_copy(const Kvpool__StatsReply *in, kv_coord_node_stats_t *out)
{
    kv_coord_node_stats_t s = {0};

    if (in->n_tiers > KV_COORD_TIER_COUNT) {
        return 0;
    }
    for (size_t i = 0; i < in->n_tiers; i++) {
        const Kvpool__TierStats *t = in->tiers[i];
        unsigned                 k = (unsigned)t->tier;
        if (t->tier < 0 || k >= KV_COORD_TIER_COUNT || (s.tiers & (1u << k))) {
            return 0;
        }
        s.tiers |= 1u << k;
        s.tier[k] = (kv_coord_tier_stats_t){
            .capacity_bytes = t->capacity_bytes, .used_bytes = t->used_bytes,
            .blocks = t->blocks, .hits = t->hits, .misses = t->misses,
            .evictions = t->evictions, .demotions = t->demotions,
            .promotions = t->promotions};
    }
    s.puts       = in->puts;
    s.gets       = in->gets;
    s.hits       = in->hits;
    s.misses     = in->misses;
    s.bytes_in   = in->bytes_in;
    s.bytes_out  = in->bytes_out;
    s.rpc_errors = in->rpc_errors;
    *out         = s;
    return 1;
}

void kv_coord_handle_heartbeat(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                               const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__HeartbeatRequest *req   = (const Kvpool__HeartbeatRequest *)msg;
    kv_coord_t                     *coord = arg;
    Kvpool__HeartbeatReply          reply = KVPOOL__HEARTBEAT_REPLY__INIT;
    kv_coord_member_t              *m = kv_coord_members_find(coord->members, req->node_id);

    if (m == NULL || m->incarnation != req->incarnation) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND,
                           "unknown node %u (or another incarnation): join again",
                           req->node_id);
        return;
    }
    if (req->stats != NULL && !node_stats_copy(req->stats, &m->stats)) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "heartbeat stats: at most %d tiers, each known and once",
                           KV_COORD_TIER_COUNT);
        return;
    }
    m->free_bytes    = KV_MIN(req->free_bytes, m->capacity_bytes);
    m->blocks        = req->blocks;
    m->load          = req->load;
    m->planned_bytes = 0; /* free_bytes now counts what was stored since */
    m->deadline_ns   = kv_coord_lease_end(coord);
    reply.lease_ms   = coord->config.lease_ms;
    reply.epoch      = coord->epoch;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

void kv_coord_handle_nodes(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                           const void *payload, uint64_t payload_len, void *arg)
{
    kv_coord_t        *coord = arg;
    Kvpool__NodesReply reply = KVPOOL__NODES_REPLY__INIT;
    size_t             n     = kv_coord_members_count(coord->members);
    Kvpool__NodeInfo  *infos = kv_calloc(n + 1, sizeof(*infos), "node infos");
    Kvpool__NodeInfo **ptrs  = kv_calloc(n + 1, sizeof(*ptrs), "node infos");
    Kvpool__Tier      *tiers = kv_calloc(n * KV_COORD_TIER_COUNT + 1, sizeof(*tiers), "tiers");

    for (size_t i = 0; i < n; i++) {
        kv_coord_node_info(kv_coord_members_at(coord->members, i), &infos[i],
                           &tiers[i * KV_COORD_TIER_COUNT]);
        ptrs[i] = &infos[i];
    }
    reply.epoch   = coord->epoch;
    reply.n_nodes = n;
    reply.nodes   = ptrs;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
    kv_free(tiers);
    kv_free(ptrs);
    kv_free(infos);
}

void kv_coord_expire_members(kv_coord_t *coord)
{
    uint64_t           now = kv_time_ns();
    kv_coord_member_t *m;
    char               why[64];

    while ((m = kv_coord_members_expired(coord->members, now)) != NULL) {
        coord->lease_expiries++;
        coord->view.node_expiries++;
        snprintf(why, sizeof(why), "missed its %u ms lease", coord->config.lease_ms);
        member_drop(coord, m, why);
    }
}
