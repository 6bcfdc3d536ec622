/*
 * Inference instances: InstanceJoin, InstanceReport, InstanceLeave, and
 * lease expiry.
 *
 * The scheduler (kv_sched_t) holds what decisions need (roles, capacity,
 * co-located node id, load); the coordinator keeps the rest beside it, by
 * the same id: name, incarnation, the co-located node's address and the
 * lease.  The node's id is looked up by address at join and at every
 * report, since a node that re-joins gets a new id.
 *
 * Ids are taken round-robin from the free ones, so a freed id is not
 * reused at once; a report or leave from another incarnation of an id is
 * refused with KVP_ERR_NOT_FOUND (join again), as for nodes.
 */
#include "coord_int.h"

#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <string.h>

static kv_coord_instance_t *find(kv_coord_t *coord, uint32_t id, uint64_t incarnation)
{
    kv_coord_instance_t *in;

    if (id == 0 || id > coord->config.max_instances) {
        return NULL;
    }
    in = &coord->instances[id];
    return in->id == id && in->incarnation == incarnation ? in : NULL;
}

/* The co-located node's id now (0: none has joined with that address). */
static uint32_t node_of(const kv_coord_t *coord, const kv_coord_instance_t *in)
{
    const kv_coord_member_t *m;

    if (in->node_address[0] == '\0') {
        return 0;
    }
    m = kv_coord_members_find_address(coord->members, in->node_address);
    return m != NULL ? m->id : 0;
}

static void instance_remove(kv_coord_t *coord, kv_coord_instance_t *in)
{
    kv_sched_remove(coord->sched, in->id);
    memset(in, 0, sizeof(*in));
}

static int check_text(kv_rpc_call_t *call, const char *what, const char *text, size_t min,
                      size_t max)
{
    size_t len = strlen(text);

    if (len < min || len > max) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%s must be %zu..%zu bytes, got %zu", what, min, max, len);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)text[i] < ' ' || (unsigned char)text[i] >= 0x7f) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "%s has a control or non-ASCII byte", what);
            return 0;
        }
    }
    return 1;
}

void kv_coord_handle_instance_join(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                                   const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__InstanceJoinRequest *req   = (const Kvpool__InstanceJoinRequest *)msg;
    kv_coord_t                        *coord = arg;
    Kvpool__InstanceJoinReply          reply = KVPOOL__INSTANCE_JOIN_REPLY__INIT;
    kv_sched_instance_t                si;
    kv_coord_instance_t               *in  = NULL;
    uint32_t                           max = coord->config.max_instances;

    if (!check_text(call, "instance name", req->name, 1, KV_COORD_NAME_MAX) ||
        !check_text(call, "node address", req->node, 0, KV_COORD_ADDRESS_MAX)) {
        return;
    }
    if ((req->roles & KV_SCHED_BOTH) == 0 ||
        (req->roles & ~(uint32_t)KV_SCHED_BOTH) != 0) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "roles must be 1 (prefill), 2 (decode) or 3 (both), not %u",
                           req->roles);
        return;
    }
    if (req->capacity_blocks == 0) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "capacity_blocks must be >= 1");
        return;
    }
    if (kv_sched_count(coord->sched, KV_SCHED_BOTH) >= max) {
        kv_rpc_reply_error(call, KVP_ERR_NO_SPACE,
                           "%u instances are registered (max_instances)", max);
        return;
    }
    for (uint32_t i = 0; i < max; i++) {
        uint32_t id = 1 + (coord->next_instance + i) % max;
        if (coord->instances[id].id == 0) {
            in                   = &coord->instances[id];
            in->id               = id;
            coord->next_instance = id % max;
            break;
        }
    }
    in->incarnation = req->incarnation;
    in->deadline_ns = kv_coord_lease_end(coord);
    snprintf(in->name, sizeof(in->name), "%s", req->name);
    snprintf(in->node_address, sizeof(in->node_address), "%s", req->node);
    in->node_id = node_of(coord, in);
    si = (kv_sched_instance_t){in->id, req->roles, in->node_id, req->capacity_blocks};
    if (kv_sched_add(coord->sched, &si) != KVP_OK) {
        memset(in, 0, sizeof(*in));
        kv_rpc_reply_error(call, KVP_ERR_INTERNAL, "the scheduler refused instance %u",
                           si.id);
        return;
    }
    kv_log_info("instance %u '%s' joined: roles %u, %llu blocks, node %s (id %u)", in->id,
                in->name, req->roles, (unsigned long long)req->capacity_blocks,
                in->node_address[0] ? in->node_address : "none", in->node_id);
    reply.instance_id = in->id;
    reply.lease_ms    = coord->config.lease_ms;
    reply.node_id     = in->node_id;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

void kv_coord_handle_instance_report(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                                     const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__InstanceReportRequest *req = (const Kvpool__InstanceReportRequest *)msg;
    kv_coord_t                          *coord = arg;
    Kvpool__InstanceReportReply          reply = KVPOOL__INSTANCE_REPORT_REPLY__INIT;
    kv_coord_instance_t *in   = find(coord, req->instance_id, req->incarnation);
    kv_sched_load_t      load = {req->queued_prefill_tokens, req->running_decode,
                                 req->free_blocks};
    uint32_t             node;

    if (in == NULL) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND,
                           "instance %u (this incarnation) is not registered: join again",
                           req->instance_id);
        return;
    }
    node = node_of(coord, in);
    if (node != in->node_id) {
        kv_sched_set_node(coord->sched, in->id, node);
        in->node_id = node;
    }
    kv_sched_report(coord->sched, in->id, &load);
    in->deadline_ns = kv_coord_lease_end(coord);
    reply.lease_ms  = coord->config.lease_ms;
    reply.node_id   = in->node_id;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

void kv_coord_handle_instance_leave(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                                    const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__InstanceLeaveRequest *req   = (const Kvpool__InstanceLeaveRequest *)msg;
    kv_coord_t                         *coord = arg;
    Kvpool__InstanceLeaveReply          reply = KVPOOL__INSTANCE_LEAVE_REPLY__INIT;
    kv_coord_instance_t *in = find(coord, req->instance_id, req->incarnation);

    if (in == NULL) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND,
                           "instance %u (this incarnation) is not registered",
                           req->instance_id);
        return;
    }
    kv_log_info("instance %u '%s' left", in->id, in->name);
    instance_remove(coord, in);
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

void kv_coord_expire_instances(kv_coord_t *coord)
{
    uint64_t now = kv_time_ns();

    for (uint32_t id = 1; id <= coord->config.max_instances; id++) {
        kv_coord_instance_t *in = &coord->instances[id];

        if (in->id != 0 && in->deadline_ns < now) {
            kv_log_warn("instance %u '%s': lease expired", in->id, in->name);
            coord->lease_expiries++;
            coord->view.instance_expiries++;
            instance_remove(coord, in);
        }
    }
}
