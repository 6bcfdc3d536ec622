/**
 * @file node_int.h
 * @brief What the files of the node share: its state, its method ids, and
 * the checks of wire fields.  Private to pool/.
 */
#ifndef KV_POOL_NODE_INT_H
#define KV_POOL_NODE_INT_H

#include "node.h"

#include "kvpool.pb-c.h"

#include <kv/http.h>
#include <kv/text.h>
#include <kvproto/pool_service.h>

#include <kvt/transport.h>

typedef struct kv_node_session kv_node_session_t;
typedef struct kv_node_shm     kv_node_shm_t;
typedef struct kv_node_coord   kv_node_coord_t;

/** Kvpool__Transport values: unknown, frame, shm, ucx. */
#define KV_NODE_TRANSPORTS 4

struct kv_node {
    kv_node_config_t   config;
    kv_evloop_t       *loop;
    kv_arena_t        *arena;
    kv_block_table_t  *table;
    kv_rpc_server_t   *server;
    kv_node_shm_t     *shm;
    kv_node_session_t *sessions;   /* connections with leases or puts open */
    uint64_t           open_ops;   /* leases and puts open, all sessions */
    kv_node_coord_t   *coord;      /* the link to kvpool-coord, or NULL */
    char               host_id[64];
    char               shm_name[64];  /* abstract socket sharing the arena */
    kvt_context_h      kvt;           /* the network data plane, or NULL */
    kvt_mem_h          kvt_mem;       /* the whole arena */
    kvt_listener_h     kvt_listener;
    void              *kvt_rkey;      /* packed rkey of kvt_mem */
    size_t             kvt_rkey_len;
    int                kvt_fd;        /* kvt's event fd in the loop, or -1 */
    char               ucx_address[KVT_ADDR_STRLEN]; /* "" if no data plane */
    Kvpool__HelloReply hello;         /* what every HelloReply adds */
    uint64_t           next_op_id;
    uint64_t           puts, gets, hits, misses, bytes_in, bytes_out;
    uint64_t           tier_hits[2];   /* by KV_TIER_*: found there */
    uint64_t           tier_misses[2]; /* not found there (nor above) */
    uint64_t           lease_expiries;
    /* what /metrics adds (node_metrics.c); transports by Kvpool__Transport */
    uint64_t           bytes_put[KV_NODE_TRANSPORTS], bytes_got[KV_NODE_TRANSPORTS];
    kv_histogram_t     put_seconds[KV_NODE_TRANSPORTS], get_seconds[KV_NODE_TRANSPORTS];
    uint64_t           put_checksum_failures; /* puts whose bytes did not match */
    kv_http_t         *http;                  /* /metrics and /health, or NULL */
};

/** A StatsReply with the storage of its tiers (kv_node_stats_fill()). */
typedef struct kv_node_stats_msg {
    Kvpool__StatsReply reply;
    Kvpool__TierStats  tiers[2];
    Kvpool__TierStats *tier_ptrs[2];
} kv_node_stats_msg_t;

/** The node's counters, as its Stats method answers them (node_service.c);
    reply.tiers points into @p stats, which must not move while it is used. */
void kv_node_stats_fill(kv_node_t *node, kv_node_stats_msg_t *stats);

/** The address clients dial: advertise, else listen:port (bracketed v6). */
void kv_node_advertised_address(const kv_node_t *node, char *out, size_t len);

/** Start the HTTP endpoint if config.http_port asks for one (node_metrics.c). */
kvp_status_t kv_node_http_start(kv_node_t *node);

/** The transport index of a request's @p transport field (unknown ones: 0). */
static inline unsigned kv_node_transport(int transport)
{
    return transport > 0 && transport < KV_NODE_TRANSPORTS ? (unsigned)transport : 0;
}

/**
 * Check a namespace (1..KVP_NAMESPACE_MAX bytes, no NUL) and, if @p key is
 * not NULL, a key (KVP_KEY_LEN bytes).  On failure write why into @p err.
 * @return 1 if both are good, else 0.
 */
int kv_node_check_fields(const ProtobufCBinaryData *ns, const ProtobufCBinaryData *key,
                         char *err, size_t err_len);

/** The same check for a handler: replies KVP_ERR_INVALID_PARAM if bad. */
int kv_node_check_call(kv_rpc_call_t *call, const ProtobufCBinaryData *ns,
                       const ProtobufCBinaryData *key);

/** Check a list of keys (count and lengths); replies and returns 0 if bad. */
int kv_node_check_keys(kv_rpc_call_t *call, const ProtobufCBinaryData *ns,
                       const ProtobufCBinaryData *keys, size_t n_keys);

/** The namespace's id: 1 if known, 0 if the node has never seen it. */
int kv_node_ns_lookup(kv_node_t *node, const ProtobufCBinaryData *ns, uint32_t *id_p);

/**
 * Find the blocks of @p n checked keys of namespace @p ns for a read:
 * those on SSD are staged into host memory first (one batch, with
 * read-ahead).  Counts gets, hits and misses (per tier) and bytes out.
 * @param [out] blocks @p n pointers: a COMMITTED host block, touched and
 *                     pinned (the caller unpins it), or NULL for a miss.
 */
void kv_node_find_pinned(kv_node_t *node, const ProtobufCBinaryData *ns,
                         const ProtobufCBinaryData *keys, size_t n, kv_block_t **blocks);

/* Two-phase put and leased get (node_twophase.c). */
void kv_node_put_start(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg);
void kv_node_put_commit(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                        const void *payload, uint64_t payload_len, void *arg);
void kv_node_get_start(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg);
void kv_node_get_end(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                     const void *payload, uint64_t payload_len, void *arg);
/** A connection ended: release its leases and reclaim its open puts. */
void kv_node_session_close(void *session, void *arg);
/** Release leases and puts older than their timeouts. */
void kv_node_sessions_expire(kv_node_t *node);
/** Release every session (node shutdown). */
void kv_node_sessions_destroy(kv_node_t *node);

/* Sharing the arena with clients on the same host (node_shm.c). */
/**
 * Listen on an abstract Unix socket; a client that connects and presents
 * the node's token (or, with no token, runs as the node's user) receives
 * the arena's memfd.  Writes the socket's name (without the leading NUL)
 * into @p name.
 */
kvp_status_t kv_node_shm_create(kv_node_t *node, char *name, size_t name_len);
/** Drop local clients that did not finish their handshake in 5 s. */
void kv_node_shm_expire(kv_node_t *node);
/** Stop sharing (mappings clients already have stay valid).  Accepts none. */
void kv_node_shm_destroy(kv_node_t *node);

/* The network data plane (node_ucx.c). */
/**
 * Create a kvt "ucx" context, register the arena, pack its rkey, listen on
 * the node's address (any port) and progress from the node's loop.  On
 * failure everything is released, node->ucx_address stays "".
 */
kvp_status_t kv_node_ucx_create(kv_node_t *node);
/** Progress the data plane (from the tick: a safety net for missed wakeups). */
void kv_node_ucx_progress(kv_node_t *node);
/** Stop the data plane (its connections close).  Accepts none. */
void kv_node_ucx_destroy(kv_node_t *node);

/* The link to the coordinator (node_coord.c). */
/**
 * Start the link to config.coordinator: a thread that joins, heartbeats
 * and publishes the block table's changes (and its whole inventory after
 * every join), reconnecting with backoff.  Call once the RPC server is
 * bound (the advertised address defaults to its address).
 * @return KVP_OK; KVP_ERR_IO (eventfd or thread, logged).
 */
kvp_status_t kv_node_coord_create(kv_node_t *node);
/** Refresh the figures heartbeats report (from the tick). */
void kv_node_coord_tick(kv_node_t *node);
/** The node id the coordinator gave this node, 0 when not joined. */
uint32_t kv_node_coord_id(kv_node_t *node);
/** Stop the link (joins its thread).  Accepts none. */
void kv_node_coord_destroy(kv_node_t *node);

#endif
