/**
 * @file client_int.h
 * @brief What the files of libkvpool share.  Private to client/.
 */
#ifndef KV_CLIENT_INT_H
#define KV_CLIENT_INT_H

#include <kvproto/pool_service.h>
#include <kvproto/rpc_client.h>
#include <kvpool/kvpool.h>

#include "kvpool.pb-c.h"

typedef struct kvp__async   kvp__async_t;
typedef struct kvp__ucx     kvp__ucx_t;
typedef struct kvp__cluster kvp__cluster_t;

/*
 * A handle is connected to a pool node (rpc set, cluster NULL) or to the
 * coordinator (cluster set, rpc NULL: cluster.c owns the coordinator's
 * connection and one handle of the first kind per node it talks to).
 */
struct kvp_client {
    kv_rpc_client_t *rpc;
    kvp__async_t    *async;     /* workers of the async calls, or NULL */
    uint32_t         timeout_ms;
    uint8_t         *shm_base;  /* the node's arena, mapped; NULL: frames */
    uint64_t         shm_size;
    kvp__ucx_t      *ucx;       /* the network data path, or NULL */
    kvp__cluster_t  *cluster;   /* connected to a coordinator, or NULL */
};

/** kvp_client_params_t with its defaults applied (strings borrowed). */
typedef struct kvp__conn_opts {
    const char *token;      /* NULL: none */
    const char *name;
    const char *transport;  /* "auto", "shm", "ucx" or "frame" */
    uint32_t    timeout_ms;
} kvp__conn_opts_t;

/**
 * Connect to a pool node (cluster.c's node connections).
 * @return as kvp_client_connect(); KVP_ERR_PROTOCOL if the peer is a
 *         coordinator.
 */
kvp_status_t kvp__node_connect(const char *address, const kvp__conn_opts_t *opts,
                               kvp_client_h *client_p);

/**
 * Put blocks on the node @p client is connected to, arguments checked.
 * With @p chain, keys[i]'s parent is keys[i-1] and keys[0]'s is @p parent
 * (NULL: keys[0] starts the chain); the two-phase paths tell the node, the
 * frame path cannot.  Results as kvp_put_batch().
 */
kvp_status_t kvp__node_put(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                           const void *const *datas, const uint64_t *sizes,
                           size_t count, int chain, const kvp_key_t *parent,
                           kvp_status_t *statuses);

/** Get blocks from the node @p client is connected to, arguments checked. */
kvp_status_t kvp__node_get(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                           void *const *bufs, const uint64_t *capacities, size_t count,
                           uint64_t *sizes, kvp_status_t *statuses);

/**
 * Cluster mode (cluster.c, cluster_data.c).  kvp__cluster_open() takes
 * @p coord, the coordinator's connection, whatever it returns.  The other
 * calls are the public calls of the same name for a handle connected to a
 * coordinator, their arguments already checked.
 */
kvp_status_t kvp__cluster_open(kvp_client_h client, kv_rpc_client_t *coord,
                               const char *address, const kvp__conn_opts_t *opts);
void kvp__cluster_close(kvp_client_h client);
const char *kvp__cluster_transport(kvp_client_h client);
kvp_status_t kvp__cluster_match(kvp_client_h client, const char *ns,
                                const kvp_key_t *keys, size_t count, size_t *matched_p);
kvp_status_t kvp__cluster_put_chain(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, const void *const *datas,
                                    const uint64_t *sizes, size_t count,
                                    kvp_status_t *statuses);
kvp_status_t kvp__cluster_get_chain(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, void *const *bufs,
                                    const uint64_t *capacities, size_t count,
                                    uint64_t *sizes, size_t *loaded_p);
kvp_status_t kvp__cluster_put_batch(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, const void *const *datas,
                                    const uint64_t *sizes, size_t count,
                                    kvp_status_t *statuses);
kvp_status_t kvp__cluster_get_batch(kvp_client_h client, const char *ns,
                                    const kvp_key_t *keys, void *const *bufs,
                                    const uint64_t *capacities, size_t count,
                                    uint64_t *sizes, kvp_status_t *statuses);
kvp_status_t kvp__cluster_delete(kvp_client_h client, const char *ns,
                                 const kvp_key_t *keys, size_t count, size_t *deleted_p);
kvp_status_t kvp__cluster_stats(kvp_client_h client, kvp_stats_t *stats_p);

/** A namespace as the wire carries it. */
ProtobufCBinaryData kvp__ns_bytes(const char *ns);

/**
 * Keys as a request's repeated bytes field, borrowing the caller's key
 * bytes.  Free the array (only) with kv_free().
 */
ProtobufCBinaryData *kvp__keys_borrow(const kvp_key_t *keys, size_t count);

/** @return non-zero if @p ns is 1..KVP_NAMESPACE_MAX bytes. */
int kvp__ns_valid(const char *ns);

/**
 * Map the node's arena if the node is on this host and shares it.
 * @return KVP_OK (mapped); KVP_ERR_UNSUPPORTED (another host, or the node
 *         does not share); KVP_ERR_AUTH / KVP_ERR_IO (refused or failed).
 */
kvp_status_t kvp__shm_attach(kvp_client_h client, const char *token);

/** Unmap the arena (if mapped). */
void kvp__shm_detach(kvp_client_h client);


/**
 * Connect the network data path (kvt "ucx") to the node's arena if the node
 * announced one (a wildcard listener address is reached at the host of
 * @p rpc_address, the "HOST:PORT" of the node's RPCs).
 * @return KVP_OK (client->ucx set); KVP_ERR_UNSUPPORTED (not announced, or
 * no UCX here); a connect error.
 */
kvp_status_t kvp__ucx_attach(kvp_client_h client, const char *rpc_address);
/** Close the network data path (if any). */
void kvp__ucx_detach(kvp_client_h client);
/** @return non-zero while the network data path is up (not failed). */
int kvp__ucx_usable(kvp_client_h client);

/**
 * Stop the async workers after they finish what is queued.  Called by
 * kvp_client_disconnect() before the connection closes.
 */
void kvp__async_destroy(kvp_client_h client);

/**
 * A data path of the two-phase calls: move @p n blocks between the
 * caller's memory (@p locals) and the node's arena (@p offsets), @p lens
 * bytes each (put: to the arena), and set @p sums to the XXH3-64 of each
 * block's bytes (put: of the caller's; get: of what arrived).
 * @return KVP_OK, or a connection error (then no moved byte is trusted).
 */
typedef kvp_status_t (*kvp__move_func_t)(kvp_client_h client, int is_put,
                                         void *const *locals, const uint64_t *offsets,
                                         const uint64_t *lens, size_t n, uint64_t *sums);

/** Movers: memcpy through the mapped arena; one-sided transfers over kvt. */
kvp_status_t kvp__shm_move(kvp_client_h client, int is_put, void *const *locals,
                           const uint64_t *offsets, const uint64_t *lens, size_t n,
                           uint64_t *sums);
kvp_status_t kvp__ucx_move(kvp_client_h client, int is_put, void *const *locals,
                           const uint64_t *offsets, const uint64_t *lens, size_t n,
                           uint64_t *sums);
/** The size of the arena the ucx path reaches. */
uint64_t kvp__ucx_arena_size(kvp_client_h client);

/**
 * Batched put/get under the two-phase RPCs (twophase.c), with @p move
 * moving the bytes into or out of an arena of @p arena_size bytes.
 * Arguments and results as kvp_put_batch() / kvp_get_batch(); the put's
 * @p chain and @p parent as kvp__node_put().
 */
kvp_status_t kvp__twophase_put(kvp_client_h client, kvp__move_func_t move,
                               uint64_t arena_size, const char *ns,
                               const kvp_key_t *keys, const void *const *datas,
                               const uint64_t *sizes, size_t count, int chain,
                               const kvp_key_t *parent, kvp_status_t *statuses);
kvp_status_t kvp__twophase_get(kvp_client_h client, kvp__move_func_t move,
                               uint64_t arena_size, const char *ns,
                               const kvp_key_t *keys, void *const *bufs,
                               const uint64_t *capacities, size_t count,
                               uint64_t *sizes, kvp_status_t *statuses);

#endif
