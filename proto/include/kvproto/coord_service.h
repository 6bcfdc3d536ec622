/**
 * @file coord_service.h
 * @brief Method ids of the Coordinator service, and how a block location
 * is packed.
 *
 * A method's wire id is its index in the Coordinator service of
 * kvpool.proto; this enum names them in that order.  Append new methods at
 * the end.
 */
#ifndef KVPROTO_COORD_SERVICE_H
#define KVPROTO_COORD_SERVICE_H

typedef enum kv_coord_method {
    KV_COORD_HELLO,
    KV_COORD_JOIN,
    KV_COORD_HEARTBEAT,
    KV_COORD_PUBLISH,
    KV_COORD_MATCH,
    KV_COORD_PLAN_PUT,
    KV_COORD_NODES,
    KV_COORD_STATS,
    KV_COORD_INSTANCE_JOIN,
    KV_COORD_INSTANCE_REPORT,
    KV_COORD_INSTANCE_LEAVE,
    KV_COORD_SCHEDULE,
    KV_COORD_METHOD_COUNT
} kv_coord_method_t;

/** Node ids are 1..KV_COORD_NODE_MAX; 0 means none. */
#define KV_COORD_NODE_MAX 65535u

/** A location on the wire: node id and tier (kvpool.Tier) in one word. */
#define KV_LOC(node, tier)  (((uint32_t)(node) << 8) | ((uint32_t)(tier) & 0xffu))
#define KV_LOC_NODE(loc)    ((uint32_t)(loc) >> 8)
#define KV_LOC_TIER(loc)    ((uint32_t)(loc) & 0xffu)

#endif
