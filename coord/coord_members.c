/*
 * The node table: registered pool nodes by id, and in a dense list for
 * walks (placement, Nodes, expiry).
 *
 * Ids are 1..KV_COORD_NODE_MAX and handed out round-robin from the last one
 * given, so an id freed by an expired node is the last to be reused: a
 * node that lost its lease and still sends its old id is refused (its
 * incarnation differs too) instead of being mistaken for a newcomer.
 */
#include "coord_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>

#include <string.h>

struct kv_coord_members {
    kv_coord_member_t **by_id;    /* [KV_COORD_NODE_MAX + 1]; [0] unused */
    kv_coord_member_t **list;     /* [max_nodes], the first count used */
    size_t              count;
    uint32_t            max_nodes;
    uint32_t            last_id;  /* the id handed out last */
    uint64_t            clock;    /* bytes placed by PlanPut, all nodes */
};

kvp_status_t kv_coord_members_create(uint32_t max_nodes, kv_coord_members_t **members_p)
{
    kv_coord_members_t *members;

    if (max_nodes == 0 || max_nodes > KV_COORD_NODE_MAX || members_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    members            = kv_calloc(1, sizeof(*members), "node table");
    members->by_id     = kv_calloc(KV_COORD_NODE_MAX + 1, sizeof(*members->by_id),
                                   "node ids");
    members->list      = kv_calloc(max_nodes, sizeof(*members->list), "node list");
    members->max_nodes = max_nodes;
    *members_p         = members;
    return KVP_OK;
}

static void member_free(kv_coord_member_t *member)
{
    kv_free(member->data_plane);
    kv_free(member);
}

void kv_coord_members_destroy(kv_coord_members_t *members)
{
    if (members == NULL) {
        return;
    }
    for (size_t i = 0; i < members->count; i++) {
        member_free(members->list[i]);
    }
    kv_free(members->list);
    kv_free(members->by_id);
    kv_free(members);
}

static uint32_t next_free_id(kv_coord_members_t *members)
{
    uint32_t id = members->last_id;

    /* count < max_nodes <= KV_COORD_NODE_MAX: a free id exists */
    do {
        id = id >= KV_COORD_NODE_MAX ? 1 : id + 1;
    } while (members->by_id[id] != NULL);
    return id;
}

kvp_status_t kv_coord_members_add(kv_coord_members_t *members,
                                  const kv_coord_member_t *proto,
                                  const void *data_plane, size_t data_plane_len,
                                  uint32_t id, kv_coord_member_t **member_p)
{
    kv_coord_member_t *member;

    if (members->count >= members->max_nodes) {
        return KVP_ERR_NO_SPACE;
    }
    if (id == 0 || id > KV_COORD_NODE_MAX || members->by_id[id] != NULL) {
        id               = next_free_id(members);
        members->last_id = id;
    }
    member  = kv_malloc(sizeof(*member), "node");
    *member = *proto;
    member->id           = id;
    member->address_hash = kv_checksum(member->address, strlen(member->address));
    member->data_plane   = NULL;
    member->recent_bytes = 0;
    member->recent_clock = members->clock;
    member->data_plane_len = data_plane_len;
    if (data_plane_len > 0) {
        member->data_plane = kv_malloc(data_plane_len, "data-plane address");
        memcpy(member->data_plane, data_plane, data_plane_len);
    }
    member->slot                  = members->count;
    members->list[members->count++] = member;
    members->by_id[id]            = member;
    *member_p                     = member;
    return KVP_OK;
}

void kv_coord_members_remove(kv_coord_members_t *members, kv_coord_member_t *member)
{
    kv_coord_member_t *last = members->list[--members->count];

    last->slot                  = member->slot;
    members->list[member->slot] = last;
    members->by_id[member->id]  = NULL;
    member_free(member);
}

kv_coord_member_t *kv_coord_members_find(const kv_coord_members_t *members, uint32_t id)
{
    return id >= 1 && id <= KV_COORD_NODE_MAX ? members->by_id[id] : NULL;
}

kv_coord_member_t *kv_coord_members_find_address(const kv_coord_members_t *members,
                                                 const char *address)
{
    for (size_t i = 0; i < members->count; i++) {
        if (strcmp(members->list[i]->address, address) == 0) {
            return members->list[i];
        }
    }
    return NULL;
}

size_t kv_coord_members_count(const kv_coord_members_t *members)
{
    return members->count;
}

kv_coord_member_t *kv_coord_members_at(const kv_coord_members_t *members, size_t i)
{
    return members->list[i];
}

uint64_t kv_coord_members_clock(const kv_coord_members_t *members)
{
    return members->clock;
}

void kv_coord_members_tick(kv_coord_members_t *members, uint64_t bytes)
{
    members->clock += bytes;
}

kv_coord_member_t *kv_coord_members_expired(const kv_coord_members_t *members,
                                            uint64_t now_ns)
{
    for (size_t i = 0; i < members->count; i++) {
        if (members->list[i]->deadline_ns < now_ns) {
            return members->list[i];
        }
    }
    return NULL;
}
