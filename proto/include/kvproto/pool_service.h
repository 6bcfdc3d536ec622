/**
 * @file pool_service.h
 * @brief Method ids of the PoolNode service.
 *
 * A method's wire id is its index in the service of kvpool.proto; this
 * enum names them in that order, for the node, the client and tests alike.
 * The node checks at start-up that the generated descriptor has
 * KV_POOL_METHOD_COUNT methods.  Append new methods at the end.
 */
#ifndef KVPROTO_POOL_SERVICE_H
#define KVPROTO_POOL_SERVICE_H

typedef enum kv_pool_method {
    KV_POOL_HELLO,
    KV_POOL_PUT,
    KV_POOL_GET,
    KV_POOL_EXISTS,
    KV_POOL_DELETE,
    KV_POOL_STATS,
    KV_POOL_PUT_START,
    KV_POOL_PUT_COMMIT,
    KV_POOL_GET_START,
    KV_POOL_GET_END,
    KV_POOL_METHOD_COUNT
} kv_pool_method_t;

#endif
