/*
 * Publish: a node's batch of stored / removed events, applied to the
 * index in order.
 *
 * The whole batch is checked first (node and incarnation, counts, every
 * namespace, key, parent and tier, and room for the namespaces it adds),
 * so a bad batch is refused whole and the index is exactly as before.
 * Namespaces are interned only for stored events: a removal in an unknown
 * namespace removes nothing.  What the index itself refuses of a checked
 * event (a parent that descends from its key: a cycle no honest node can
 * make, since keys hash their whole prefix) is skipped, and the reply's
 * applied count says so.
 */
#include "coord_int.h"

#include <kv/log.h>
#include <kv/util.h>

#include <string.h>

#define NS_UNRESOLVED UINT32_MAX

static int ns_bad(const ProtobufCBinaryData *ns)
{
    return ns->len == 0 || ns->len > KVP_NAMESPACE_MAX ||
           memchr(ns->data, '\0', ns->len) != NULL;
}

static int ns_equal(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Check every event; 0 after an error reply. */
static int events_check(kv_rpc_call_t *call, const Kvpool__PublishRequest *req)
{
    if (req->n_events > KVP_BATCH_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%zu events in one Publish (limit %d)", req->n_events,
                           KVP_BATCH_MAX);
        return 0;
    }
    if (req->n_namespaces > KV_COORD_PUBLISH_NS_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%zu namespaces in one Publish (limit %d)",
                           req->n_namespaces, KV_COORD_PUBLISH_NS_MAX);
        return 0;
    }
    for (size_t i = 0; i < req->n_namespaces; i++) {
        if (ns_bad(&req->namespaces[i])) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "namespace %zu must be 1..%d bytes without NUL, got %zu",
                               i, KVP_NAMESPACE_MAX, req->namespaces[i].len);
            return 0;
        }
    }
    for (size_t i = 0; i < req->n_events; i++) {
        const Kvpool__BlockEvent *e = req->events[i];

        if (e->ns >= req->n_namespaces) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "event %zu names namespace %u of %zu", i, e->ns,
                               req->n_namespaces);
            return 0;
        }
        if (e->key.len != KVP_KEY_LEN) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "event %zu: block key must be %d bytes, got %zu", i,
                               KVP_KEY_LEN, e->key.len);
            return 0;
        }
        if (e->parent.len != 0 && (e->parent.len != KVP_KEY_LEN || !e->stored)) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "event %zu: a parent key is %d bytes on a stored "
                               "event, got %zu",
                               i, KVP_KEY_LEN, e->parent.len);
            return 0;
        }
        if (e->parent.len != 0 && memcmp(e->parent.data, e->key.data, KVP_KEY_LEN) == 0) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "event %zu: a block cannot be its own parent", i);
            return 0;
        }
        if ((unsigned)e->tier >= KV_COORD_TIER_COUNT) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "event %zu: unknown tier %d",
                               i, (int)e->tier);
            return 0;
        }
    }
    return 1;
}

/*
 * Look up the namespaces into @p ids (NS_UNRESOLVED where unknown) and
 * check that those the stored events would add fit in the index; 0 after
 * an error reply.
 */
static int namespaces_check(kv_coord_t *coord, kv_rpc_call_t *call,
                            const Kvpool__PublishRequest *req, uint32_t *ids)
{
    uint32_t *needed = ids + req->n_namespaces; /* 1: a stored event uses it */
    uint32_t  added  = 0;

    memset(needed, 0, req->n_namespaces * sizeof(*needed));
    for (size_t i = 0; i < req->n_events; i++) {
        if (req->events[i]->stored) {
            needed[req->events[i]->ns] = 1;
        }
    }
    for (size_t i = 0; i < req->n_namespaces; i++) {
        const ProtobufCBinaryData *ns = &req->namespaces[i];
        int                        dup = 0;

        if (kv_index_ns_id(coord->index, ns->data, ns->len, 0, &ids[i]) != KVP_OK) {
            ids[i] = NS_UNRESOLVED;
        }
        if (ids[i] != NS_UNRESOLVED || !needed[i]) {
            continue;
        }
        for (size_t j = 0; j < i && !dup; j++) {
            dup = needed[j] && ids[j] == NS_UNRESOLVED && ns_equal(ns, &req->namespaces[j]);
        }
        added += !dup;
    }
    if (coord->namespaces + added > KV_INDEX_MAX_NAMESPACES) {
        kv_rpc_reply_error(call, KVP_ERR_NO_SPACE,
                           "the batch adds %u namespaces to %u (limit %d)", added,
                           coord->namespaces, KV_INDEX_MAX_NAMESPACES);
        return 0;
    }
    return 1;
}

/* The id of namespace @p i, interning it (checked to fit before). */
static uint32_t ns_intern(kv_coord_t *coord, const Kvpool__PublishRequest *req,
                          uint32_t *ids, uint32_t i)
{
    const ProtobufCBinaryData *ns = &req->namespaces[i];

    if (ids[i] == NS_UNRESOLVED) {
        if (kv_index_ns_id(coord->index, ns->data, ns->len, 0, &ids[i]) != KVP_OK &&
            kv_index_ns_id(coord->index, ns->data, ns->len, 1, &ids[i]) == KVP_OK) {
            coord->namespaces++;
        }
    }
    return ids[i];
}

void kv_coord_handle_publish(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                             const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__PublishRequest *req   = (const Kvpool__PublishRequest *)msg;
    kv_coord_t                   *coord = arg;
    Kvpool__PublishReply          reply = KVPOOL__PUBLISH_REPLY__INIT;
    kv_coord_member_t *m = kv_coord_members_find(coord->members, req->node_id);
    uint32_t          *ids;
    size_t             skipped = 0;
    kvp_status_t       status;

    if (m == NULL || m->incarnation != req->incarnation) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND,
                           "unknown node %u (or another incarnation): join again",
                           req->node_id);
        return;
    }
    if (!events_check(call, req)) {
        return;
    }
    ids = kv_coord_scratch(coord, 2 * req->n_namespaces + 1);
    if (!namespaces_check(coord, call, req, ids)) {
        return;
    }
    for (size_t i = 0; i < req->n_events; i++) {
        const Kvpool__BlockEvent  *e   = req->events[i];
        const ProtobufCBinaryData *ns  = &req->namespaces[e->ns];
        uint32_t                   loc = KV_LOC(m->id, e->tier);

        if (e->stored) {
            status = kv_index_store(coord->index, ns_intern(coord, req, ids, e->ns),
                                    (const kvp_key_t *)e->key.data,
                                    e->parent.len ? (const kvp_key_t *)e->parent.data
                                                  : NULL,
                                    loc);
            if (status == KVP_ERR_INVALID_PARAM) {
                /* its parent descends from it: a cycle the index refuses */
                skipped++;
                continue;
            }
            if (status != KVP_OK) {
                kv_rpc_reply_error(call, status, "event %zu of node %u not applied", i,
                                   m->id);
                return;
            }
        } else if (ids[e->ns] != NS_UNRESOLVED ||
                   kv_index_ns_id(coord->index, ns->data, ns->len, 0, &ids[e->ns]) ==
                       KVP_OK) {
            kv_index_remove(coord->index, ids[e->ns], (const kvp_key_t *)e->key.data,
                            loc);
        }
    }
    if (skipped > 0) {
        kv_log_warn("node %u published %zu blocks whose parent descends from them: "
                    "skipped", m->id, skipped);
    }
    reply.applied = (uint32_t)(req->n_events - skipped);
    coord->events += req->n_events;
    m->deadline_ns = kv_time_ns() + (uint64_t)coord->config.lease_ms * 1000000ull;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}
