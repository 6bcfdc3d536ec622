/**
 * @file cluster.h
 * @brief Cluster mode: the coordinator's connection, the pool nodes the
 * client knows and its connections to them (cluster.c), shared with the
 * data calls (cluster_data.c).  Private to client/.
 *
 * Locks, in the order they are taken:
 *   refresh_lock  one update of the node list at a time;
 *   table_lock    the peer table (short, never held across a call);
 *   a peer's lock read-held by each call using the peer's connection,
 *                 write-held to connect, drop or re-address it;
 *   coord_lock    read-held by each coordinator call, write-held to
 *                 reconnect.
 * No lock is held while waiting for another lock's holder except in that
 * order, and a node call never takes a coordinator lock.
 */
#ifndef KV_CLIENT_CLUSTER_H
#define KV_CLIENT_CLUSTER_H

#include "client_int.h"
#include "fanout.h"

#include <pthread.h>

/** A pool node as the client knows it. */
typedef struct kvp__peer {
    uint32_t         id;     /* the coordinator's node id */
    int              listed; /* named by the coordinator's latest list (table_lock) */
    pthread_rwlock_t lock;
    char            *address;  /* written under lock and refresh_lock */
    kvp_client_h     conn;     /* NULL until needed, and after a failure */
    uint64_t         retry_ns; /* after a failed connect: none before this */
} kvp__peer_t;

struct kvp__cluster {
    kvp__conn_opts_t    opts;    /* for every connection; strings owned */
    char               *address; /* the coordinator's */
    pthread_rwlock_t    coord_lock;
    kv_rpc_client_t    *coord; /* NULL after a failure, until reopened */
    uint64_t            coord_retry_ns;
    pthread_mutex_t     refresh_lock;
    pthread_mutex_t     table_lock;
    kvp__peer_t       **peers;      /* by node id; NULL: never heard of */
    size_t              num_peers;  /* length of peers */
    uint64_t            generation; /* node lists applied so far */
    kvp__fanout_pool_t *pool;
};

/**
 * One coordinator call (reopening a lost connection once).  Arguments and
 * results as kv_rpc_call().
 */
kvp_status_t kvp__coord_call(kvp__cluster_t *cl, unsigned method,
                             const ProtobufCMessage *request, ProtobufCMessage **reply_p);

/**
 * kvp__coord_call() with the reply decoded by @p allocator (a
 * kv_pb_arena_t's: the caller resets the arena instead of freeing the
 * reply; NULL: as kvp__coord_call()).
 */
kvp_status_t kvp__coord_call_with(kvp__cluster_t *cl, unsigned method,
                                  const ProtobufCMessage *request,
                                  ProtobufCAllocator *allocator, ProtobufCMessage **reply_p);

/**
 * @p n coordinator calls sent together, then awaited (one round trip).
 * @return KVP_OK, with each call's result in statuses[i] and replies[i]
 *         (set on its KVP_OK; free with protobuf_c_message_free_unpacked);
 *         else the connection error that failed them all.
 */
kvp_status_t kvp__coord_calls(kvp__cluster_t *cl, unsigned method,
                              const ProtobufCMessage *const *requests, size_t n,
                              ProtobufCMessage **replies, kvp_status_t *statuses);

/**
 * The node @p id as the coordinator lists it; fetches the node list once
 * if it is not known.  @return the peer (valid until the client is
 * disconnected), or NULL: no such node.
 */
kvp__peer_t *kvp__peer_find(kvp__cluster_t *cl, uint32_t id);

/**
 * Record the nodes a reply describes (PlanPut's nodes).
 * @return KVP_OK; KVP_ERR_PROTOCOL if one is malformed (nothing recorded).
 */
kvp_status_t kvp__peers_learn(kvp__cluster_t *cl, Kvpool__NodeInfo *const *nodes,
                              size_t n);

/**
 * The peers the coordinator lists now (after fetching the list).
 * @param [out] peers_p a kv_malloc'ed array (kv_free it); set on KVP_OK.
 * @return KVP_OK; a coordinator error.
 */
kvp_status_t kvp__peers_listed(kvp__cluster_t *cl, kvp__peer_t ***peers_p, size_t *n_p);

/**
 * Use @p peer's connection, opening it if needed.  On KVP_OK the caller
 * holds it until kvp__peer_release(); else a connection error.
 */
kvp_status_t kvp__peer_acquire(kvp__cluster_t *cl, kvp__peer_t *peer,
                               kvp_client_h *conn_p);

/**
 * Done with the connection; @p status is the call's result.  A connection
 * error closes it (the next call reopens it) and fetches the node list.
 */
void kvp__peer_release(kvp__cluster_t *cl, kvp__peer_t *peer, kvp_client_h conn,
                       kvp_status_t status);

/**
 * Read blocks [0, count) of a chain, block i from node @p node_ids[i]
 * (in parallel, one batch per node); the loaded prefix ends at the first
 * block that did not arrive intact or whose node is not listed.
 * @return KVP_OK, with *@p loaded_p set.
 */
kvp_status_t kvp__cluster_get_from(kvp_client_h client, const char *ns,
                                   const kvp_key_t *keys, const uint32_t *node_ids,
                                   void *const *bufs, const uint64_t *capacities,
                                   size_t count, uint64_t *sizes, size_t *loaded_p);

/**
 * Put blocks [first, count) of a chain on node @p node_id, chained (the
 * parent of block first is keys[first - 1]).
 * @return KVP_OK when every block was stored; KVP_ERR_NOT_FOUND (the node
 *         is not listed); else the first block's error.
 */
kvp_status_t kvp__cluster_put_to(kvp_client_h client, const char *ns,
                                 const kvp_key_t *keys, const void *const *datas,
                                 const uint64_t *sizes, size_t first, size_t count,
                                 uint32_t node_id);

#endif
