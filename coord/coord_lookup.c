/*
 * Lookups: Match (where the longest cached prefix of a chain is) and
 * PlanPut (what of a chain is cached, and where its new blocks go).
 * Neither changes the index; PlanPut only adds to the chosen nodes'
 * planned and recent bytes (see coord_place.c).  Placement ranks by the
 * chain's first new key and prefers the nodes holding its last cached
 * block.
 */
#include "coord_int.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <string.h>

/* Nodes holding a chain's last cached block that placement looks at. */
#define PREFER_MAX 64

/* The keys of a checked chain, contiguous as the index wants them. */
static kvp_key_t *chain_keys(const ProtobufCBinaryData *keys, size_t n)
{
    kvp_key_t *out = kv_malloc(n * sizeof(*out) + 1, "chain keys");

    for (size_t i = 0; i < n; i++) {
        memcpy(out[i].bytes, keys[i].data, KVP_KEY_LEN);
    }
    return out;
}

/*
 * Match: the longest cached prefix, each of its blocks' locations (one
 * walk up the index's parent links) and each node's prefix; only the
 * length with length_only.  The reply is
 * built in buffers the coordinator keeps, so a call allocates nothing.
 */
void kv_coord_handle_match(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                           const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__MatchRequest *req   = (const Kvpool__MatchRequest *)msg;
    kv_coord_t                 *coord = arg;
    kv_coord_buf_t             *bufs  = coord->match_buf;
    Kvpool__MatchReply          reply = KVPOOL__MATCH_REPLY__INIT;
    Kvpool__BlockLocations     *blocks, **block_ptrs;
    Kvpool__NodePrefix         *prefixes, **prefix_ptrs;
    kv_index_node_run_t        *runs;
    size_t                      matched, total, cap, off = 0, n_prefixes;
    uint32_t                    ns_id, *locs, *cnt;
    kvp_key_t                  *keys;

    if (!kv_coord_check_chain(call, &req->ns, req->keys, req->n_keys,
                              KV_INDEX_MAX_CHAIN)) {
        return;
    }
    if (kv_index_ns_id(coord->index, req->ns.data, req->ns.len, 0, &ns_id) != KVP_OK) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND,
                           "unknown namespace: no node has published a block of it");
        return;
    }
    keys = kv_coord_buf(&bufs[0], req->n_keys * sizeof(*keys) + 1);
    for (size_t i = 0; i < req->n_keys; i++) {
        memcpy(keys[i].bytes, req->keys[i].data, KVP_KEY_LEN);
    }
    matched = kv_index_match(coord->index, ns_id, keys, req->n_keys);
    coord->matches++;
    coord->matched_blocks += matched;
    coord->requested_blocks += req->n_keys;
    kv_coord_view_match(coord, ns_id, &req->ns, keys, req->n_keys, matched);
    reply.matched = (uint32_t)matched;
    if (req->length_only) {
        kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
        return;
    }

    /* every matched block's locations, block after block */
    cnt   = kv_coord_buf(&bufs[1], matched * sizeof(*cnt) + 1);
    locs  = kv_coord_buf(&bufs[2], (2 * matched + 1) * sizeof(*locs));
    cap   = bufs[2].len / sizeof(*locs); /* what it holds: maybe more */
    total = kv_index_chain_locations(coord->index, ns_id, keys, matched, cnt, locs, cap);
    if (total > cap) {
        locs = kv_coord_buf(&bufs[2], total * sizeof(*locs));
        kv_index_chain_locations(coord->index, ns_id, keys, matched, cnt, locs, total);
    }
    blocks     = kv_coord_buf(&bufs[3], matched * (sizeof(*blocks) + sizeof(*block_ptrs)) + 1);
    block_ptrs = (Kvpool__BlockLocations **)(blocks + matched);
    for (size_t i = 0; i < matched; off += cnt[i++]) {
        kvpool__block_locations__init(&blocks[i]);
        blocks[i].n_locations = cnt[i];
        blocks[i].locations   = locs + off;
        block_ptrs[i]         = &blocks[i];
    }
    n_prefixes  = matched > 0 ? cnt[0] : 0;
    prefixes    = kv_coord_buf(&bufs[4], n_prefixes * (sizeof(*prefixes) +
                                                       sizeof(*prefix_ptrs) +
                                                       sizeof(*runs)) + 1);
    prefix_ptrs = (Kvpool__NodePrefix **)(prefixes + n_prefixes);
    runs        = (kv_index_node_run_t *)(prefix_ptrs + n_prefixes);
    reply.n_nodes = kv_index_node_prefixes(cnt, locs, matched, runs, n_prefixes);
    for (size_t k = 0; k < reply.n_nodes; k++) {
        kvpool__node_prefix__init(&prefixes[k]);
        prefixes[k].node_id = runs[k].node;
        prefixes[k].length  = runs[k].length;
        prefix_ptrs[k]      = &prefixes[k];
    }
    reply.n_blocks = matched;
    reply.blocks   = block_ptrs;
    reply.nodes    = prefix_ptrs;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

/* Checks of PlanPut beyond the chain's; 0 after an error reply. */
static int plan_check(kv_rpc_call_t *call, const Kvpool__PlanPutRequest *req)
{
    if (req->n_keys == 0 || req->n_sizes != req->n_keys) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "PlanPut needs one size per key: %zu keys, %zu sizes",
                           req->n_keys, req->n_sizes);
        return 0;
    }
    for (size_t i = 0; i < req->n_sizes; i++) {
        if (req->sizes[i] == 0 || req->sizes[i] > KVP_BLOCK_MAX) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "block %zu has size %llu (1..%llu)", i,
                               (unsigned long long)req->sizes[i],
                               (unsigned long long)KVP_BLOCK_MAX);
            return 0;
        }
    }
    if (req->replicas > KV_COORD_REPLICAS_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "%u replicas (at most %d)",
                           req->replicas, KV_COORD_REPLICAS_MAX);
        return 0;
    }
    return 1;
}

void kv_coord_handle_plan_put(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                              const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__PlanPutRequest *req   = (const Kvpool__PlanPutRequest *)msg;
    kv_coord_t                   *coord = arg;
    Kvpool__PlanPutReply          reply = KVPOOL__PLAN_PUT_REPLY__INIT;
    kv_coord_place_req_t          place = {0};
    uint32_t replicas = req->replicas ? req->replicas : 1;
    uint32_t ns_id, prefer[PREFER_MAX];
    uint32_t *targets, *replica_nodes, *named;
    size_t    cached = 0, fresh, n_named = 0;
    Kvpool__NodeInfo  *infos, **info_ptrs;
    Kvpool__Tier      *tiers;
    kvp_key_t         *keys;
    kvp_status_t       status;
    char               err[200];

    if (!kv_coord_check_chain(call, &req->ns, req->keys, req->n_keys,
                              KV_INDEX_MAX_CHAIN) ||
        !plan_check(call, req)) {
        return;
    }
    keys = chain_keys(req->keys, req->n_keys);
    if (kv_index_ns_id(coord->index, req->ns.data, req->ns.len, 0, &ns_id) == KVP_OK) {
        cached = kv_index_match(coord->index, ns_id, keys, req->n_keys);
    }
    fresh         = req->n_keys - cached;
    /* targets[n_keys], replica_nodes[fresh * (replicas - 1)], named[fresh * replicas] */
    targets       = kv_calloc(req->n_keys + 2 * fresh * replicas + 1, sizeof(*targets),
                              "plan targets");
    replica_nodes = targets + req->n_keys;
    named         = replica_nodes + fresh * (replicas - 1);
    if (cached > 0) {
        uint32_t locs[PREFER_MAX];
        size_t   n = kv_index_locations(coord->index, ns_id, &keys[cached - 1], locs,
                                        PREFER_MAX);

        for (size_t i = 0; i < KV_MIN(n, (size_t)PREFER_MAX); i++) {
            place.n_prefer = kv_coord_id_add(prefer, place.n_prefer, KV_LOC_NODE(locs[i]));
        }
    }
    if (fresh > 0) {
        place.rank_key  = &keys[cached];
        place.sizes     = req->sizes + cached;
        place.count     = fresh;
        place.replicas  = replicas;
        place.prefer    = prefer;
        status = kv_coord_place(coord->members, &place, targets + cached, replica_nodes,
                                err, sizeof(err));
        if (status != KVP_OK) {
            kv_rpc_reply_error(call, status, "%s", err);
            goto out;
        }
    }
    for (size_t i = cached; i < req->n_keys + fresh * (replicas - 1); i++) {
        n_named = kv_coord_id_add(named, n_named, targets[i]);
    }
    infos     = kv_calloc(n_named + 1, sizeof(*infos) + sizeof(*info_ptrs), "plan nodes");
    info_ptrs = (Kvpool__NodeInfo **)(infos + n_named);
    tiers     = kv_calloc(n_named * KV_COORD_TIER_COUNT + 1, sizeof(*tiers), "tiers");
    for (size_t i = 0; i < n_named; i++) {
        kv_coord_node_info(kv_coord_members_find(coord->members, named[i]), &infos[i],
                           &tiers[i * KV_COORD_TIER_COUNT]);
        info_ptrs[i] = &infos[i];
    }
    reply.cached          = (uint32_t)cached;
    reply.n_targets       = req->n_keys;
    reply.targets         = targets;
    reply.n_replica_nodes = fresh * (replicas - 1);
    reply.replica_nodes   = replica_nodes;
    reply.n_nodes         = n_named;
    reply.nodes           = info_ptrs;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
    kv_free(tiers);
    kv_free(infos);
out:
    kv_free(targets);
    kv_free(keys);
}
