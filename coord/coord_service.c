/*
 * The coordinator's RPC service: its state, the handler table, Stats, and
 * the checks the handlers share.  The handlers themselves live by topic:
 * coord_nodes.c (Join, Heartbeat, Nodes, lease expiry), coord_publish.c
 * (Publish), coord_lookup.c (Match, PlanPut), coord_instances.c
 * (InstanceJoin, InstanceReport, InstanceLeave), coord_schedule.c
 * (Schedule).
 *
 * Everything runs on the loop thread, one request at a time, so handlers
 * need no locks; every field from the wire is checked before anything
 * stored (the index, the node table) changes.
 */
#include "coord_int.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <string.h>
#include <sys/random.h>

int kv_coord_check_chain(kv_rpc_call_t *call, const ProtobufCBinaryData *ns,
                         const ProtobufCBinaryData *keys, size_t n_keys,
                         size_t max_keys)
{
    if (ns->len == 0 || ns->len > KVP_NAMESPACE_MAX ||
        memchr(ns->data, '\0', ns->len) != NULL) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "namespace must be 1..%d bytes without NUL, got %zu",
                           KVP_NAMESPACE_MAX, ns->len);
        return 0;
    }
    if (n_keys > max_keys) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%zu keys in one chain (limit %zu)", n_keys, max_keys);
        return 0;
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (keys[i].len != KVP_KEY_LEN) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "block key %zu must be %d bytes, got %zu", i,
                               KVP_KEY_LEN, keys[i].len);
            return 0;
        }
    }
    return 1;
}

size_t kv_coord_id_add(uint32_t *set, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (set[i] == id) {
            return n;
        }
    }
    if (id != 0) {
        set[n++] = id;
    }
    return n;
}

uint32_t *kv_coord_scratch(kv_coord_t *coord, size_t count)
{
    if (count > coord->scratch_len) {
        kv_free(coord->scratch);
        coord->scratch_len = KV_MAX(count, 2 * coord->scratch_len);
        coord->scratch     = kv_malloc(coord->scratch_len * sizeof(uint32_t), "scratch");
    }
    return coord->scratch;
}

void *kv_coord_buf(kv_coord_buf_t *buf, size_t len)
{
    if (len > buf->len) {
        kv_free(buf->mem);
        buf->len = KV_MAX(len, 2 * buf->len);
        buf->mem = kv_malloc(buf->len, "handler buffer");
    }
    return buf->mem;
}

void kv_coord_node_info(const kv_coord_member_t *member, Kvpool__NodeInfo *info,
                        Kvpool__Tier *tiers)
{
    kvpool__node_info__init(info);
    info->node_id        = member->id;
    info->name           = (char *)member->name;
    info->address        = (char *)member->address;
    info->capacity_bytes = member->capacity_bytes;
    info->free_bytes     = member->free_bytes;
    info->blocks         = member->blocks;
    info->load           = member->load;
    info->data_plane.data = member->data_plane;
    info->data_plane.len  = member->data_plane_len;
    info->tiers          = tiers;
    for (uint32_t t = 0; t < KV_COORD_TIER_COUNT; t++) {
        if (member->tiers & (1u << t)) {
            tiers[info->n_tiers++] = (Kvpool__Tier)t;
        }
    }
}

static void handle_stats(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                         const void *payload, uint64_t payload_len, void *arg)
{
    kv_coord_t            *coord = arg;
    Kvpool__CoordStatsReply reply = KVPOOL__COORD_STATS_REPLY__INIT;
    kv_index_stats_t       index;

    kv_index_stats(coord->index, &index);
    reply.nodes            = kv_coord_members_count(coord->members);
    reply.blocks           = index.cached;
    reply.entries          = index.entries;
    reply.index_bytes      = index.bytes;
    reply.matches          = coord->matches;
    reply.matched_blocks   = coord->matched_blocks;
    reply.requested_blocks = coord->requested_blocks;
    reply.events           = coord->events;
    reply.lease_expiries   = coord->lease_expiries;
    reply.instances        = kv_sched_count(coord->sched, KV_SCHED_BOTH);
    reply.n_decisions      = KV_SCHED_POLICY_COUNT;
    reply.decisions        = coord->decisions;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

static const kv_rpc_handler_func_t coord_handlers[KV_COORD_METHOD_COUNT] = {
    [KV_COORD_JOIN]      = kv_coord_handle_join,
    [KV_COORD_HEARTBEAT] = kv_coord_handle_heartbeat,
    [KV_COORD_PUBLISH]   = kv_coord_handle_publish,
    [KV_COORD_MATCH]     = kv_coord_handle_match,
    [KV_COORD_PLAN_PUT]  = kv_coord_handle_plan_put,
    [KV_COORD_NODES]     = kv_coord_handle_nodes,
    [KV_COORD_STATS]     = handle_stats,
    [KV_COORD_INSTANCE_JOIN]   = kv_coord_handle_instance_join,
    [KV_COORD_INSTANCE_REPORT] = kv_coord_handle_instance_report,
    [KV_COORD_INSTANCE_LEAVE]  = kv_coord_handle_instance_leave,
    [KV_COORD_SCHEDULE]        = kv_coord_handle_schedule,
};

/* No method takes a payload. */
static const kv_rpc_sink_func_t coord_sinks[KV_COORD_METHOD_COUNT];

static uint64_t random_u64(void)
{
    uint64_t v = 0;

    if (getrandom(&v, sizeof(v), 0) != sizeof(v)) {
        v = kv_time_ns() * 0x9e3779b97f4a7c15ull; /* still differs per start */
    }
    return v;
}

kvp_status_t kv_coord_create(kv_evloop_t *loop, const kv_coord_config_t *config,
                             kv_coord_t **coord_p)
{
    kv_rpc_server_params_t params = {0};
    Kvpool__HelloReply     hello  = KVPOOL__HELLO_REPLY__INIT;
    kv_coord_t            *coord;
    kvp_status_t           status;

    _Static_assert(KV_COORD_METHOD_COUNT == 12, "coord_handlers must list every method");
    if (kvpool__coordinator__descriptor.n_methods != KV_COORD_METHOD_COUNT) {
        kv_log_error("the Coordinator service has %u methods, the coordinator knows %d",
                     kvpool__coordinator__descriptor.n_methods, KV_COORD_METHOD_COUNT);
        return KVP_ERR_INTERNAL;
    }
    coord         = kv_calloc(1, sizeof(*coord), "coordinator");
    coord->config = *config;
    coord->loop   = loop;
    coord->epoch  = random_u64();
    status        = kv_index_create(0, &coord->index);
    if (status != KVP_OK) {
        goto err_free;
    }
    status = kv_coord_members_create(config->max_nodes, &coord->members);
    if (status != KVP_OK) {
        goto err_index;
    }
    status = kv_sched_create(config->policy, &config->cost, config->seed, &coord->sched);
    if (status != KVP_OK) {
        kv_log_error("the scheduler's cost model is not usable");
        goto err_members;
    }
    coord->instances = kv_calloc(config->max_instances + 1, sizeof(*coord->instances),
                                 "instances");
    coord->hello             = hello;
    coord->hello.coordinator = 1;
    params.listen      = config->listen;
    params.port        = config->port;
    params.token       = config->token;
    params.name        = "kvpool-coord";
    params.max_payload = 0;
    params.service     = &kvpool__coordinator__descriptor;
    params.handlers    = coord_handlers;
    params.sinks       = coord_sinks;
    params.arg         = coord;
    params.hello       = &coord->hello;
    status = kv_rpc_server_create(loop, &params, &coord->server);
    if (status != KVP_OK) {
        goto err_sched;
    }
    status = kv_coord_view_start(coord);
    if (status != KVP_OK) {
        kv_rpc_server_destroy(coord->server);
        goto err_sched;
    }
    *coord_p = coord;
    return KVP_OK;

err_sched:
    kv_free(coord->instances);
    kv_sched_destroy(coord->sched);
err_members:
    kv_coord_members_destroy(coord->members);
err_index:
    kv_index_destroy(coord->index);
err_free:
    kv_free(coord);
    return status;
}

void kv_coord_destroy(kv_coord_t *coord)
{
    if (coord == NULL) {
        return;
    }
    kv_coord_view_stop(coord);
    kv_rpc_server_destroy(coord->server);
    kv_coord_members_destroy(coord->members);
    kv_free(coord->instances);
    kv_sched_destroy(coord->sched);
    kv_index_destroy(coord->index);
    kv_free(coord->scratch);
    kv_free(coord->schedule_keys.mem);
    for (int i = 0; i < KV_COORD_MATCH_BUFS; i++) {
        kv_free(coord->match_buf[i].mem);
    }
    kv_free(coord);
}

uint16_t kv_coord_port(const kv_coord_t *coord)
{
    return kv_rpc_server_port(coord->server);
}

uint32_t kv_coord_tick_ms(const kv_coord_t *coord)
{
    /* expiry is noticed within a tenth of a lease (at most 1 s late) */
    return KV_MIN(KV_MAX(coord->config.lease_ms / 10, 10u), 1000u);
}

void kv_coord_tick(kv_coord_t *coord)
{
    kv_rpc_server_expire(coord->server);
    kv_coord_expire_members(coord);
    kv_coord_expire_instances(coord);
    kv_coord_view_tick(coord);
}
