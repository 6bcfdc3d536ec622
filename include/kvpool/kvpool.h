/**
 * @file kvpool.h
 * @brief libkvpool: the client library of the kvpool KV-cache pool.
 *
 * An inference engine connects to a pool node, turns the token ids of a
 * prompt into a chain of 128-bit block keys, asks how long a prefix of that
 * chain is cached, loads the cached blocks and saves the new ones.
 *
 * Two modes, chosen by the address given to kvp_client_connect():
 *  - a pool node (kvpool-node): every call goes to that node;
 *  - the coordinator (kvpool-coord): the pool is the coordinator's nodes.
 *    The client asks the coordinator where a chain's blocks are (Match)
 *    and where new ones go (PlanPut), and moves the blocks to and from the
 *    nodes itself, batched per node and in parallel across nodes, over
 *    connections it opens on first use.  The chain calls (kvp_match,
 *    kvp_put_chain, kvp_get_chain) are made for this mode; every other
 *    call works in it too, as its documentation says.
 *
 * Threading: a kvp_client_h may be used by many threads at once; calls from
 * different threads are multiplexed on one connection (each call carries a
 * request id) and may be in flight together.  The library never prints; the
 * caller may install a log callback with kvp_set_log_handler().
 *
 * Ownership: every pointer passed in is borrowed for the duration of the
 * call only, unless a function says otherwise.
 */
#ifndef KVPOOL_KVPOOL_H
#define KVPOOL_KVPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <kvpool/status.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KVP_BUILDING_LIBRARY)
#define KVP_EXPORT __attribute__((visibility("default")))
#else
#define KVP_EXPORT
#endif

/** Version of the wire protocol this library speaks. */
#define KVP_PROTOCOL_VERSION 1

/** Length of a block key in bytes. */
#define KVP_KEY_LEN 16

/** Longest namespace, in bytes (a namespace is 1..KVP_NAMESPACE_MAX bytes). */
#define KVP_NAMESPACE_MAX 128

/** Longest auth token, in bytes. */
#define KVP_TOKEN_MAX 128

/** Largest block the protocol carries, in bytes (256 MiB). */
#define KVP_BLOCK_MAX ((uint64_t)256 << 20)

/** Most keys in one exists/delete call. */
#define KVP_BATCH_MAX 4096

/** A 128-bit block key.  It names a block and, being chained, its prefix. */
typedef struct kvp_key {
    uint8_t bytes[KVP_KEY_LEN];
} kvp_key_t;

/** Opaque connection to a pool node, or to the coordinator of a pool. */
typedef struct kvp_client *kvp_client_h;

/** Bits of kvp_client_params_t::field_mask. */
enum {
    KVP_CLIENT_PARAM_TOKEN      = 1u << 0,
    KVP_CLIENT_PARAM_TIMEOUT_MS = 1u << 1,
    KVP_CLIENT_PARAM_NAME       = 1u << 2,
    KVP_CLIENT_PARAM_TRANSPORT  = 1u << 3
};

/**
 * Parameters of kvp_client_connect().  Set field_mask to the fields you
 * filled; the others take their defaults, so new fields never break callers.
 */
typedef struct kvp_client_params {
    uint64_t    field_mask;
    const char *token;      /**< shared secret; default none */
    uint32_t    timeout_ms; /**< deadline of each call; default 10000 */
    const char *name;       /**< shown in the node's log; default "libkvpool" */
    /**
     * How block bytes travel:
     *  - "auto" (default): through the node's arena mapped into this
     *    process when the node runs on this host and shares it, else
     *    one-sided over UCX when the node announces its data plane and the
     *    connection comes up, else in RPC frames;
     *  - "shm": the shared arena, or kvp_client_connect() fails;
     *  - "ucx": one-sided puts and gets into the node's registered arena
     *    (kvtransport's UCX backend), or kvp_client_connect() fails; after
     *    a transport failure later calls move blocks in RPC frames;
     *  - "frame": always in RPC frames.
     * When not set, $KVPOOL_TRANSPORT, else "auto".
     */
    const char *transport;
} kvp_client_params_t;

/** The tiers of a node, as kvp_stats_t::tiers indexes them. */
typedef enum kvp_tier {
    KVP_TIER_HOST = 0, /**< host DRAM */
    KVP_TIER_SSD  = 1, /**< SSD (kvpool-node --ssd-dir) */
    KVP_TIER_GPU  = 2, /**< GPU memory */
    KVP_TIERS     = 3
} kvp_tier_t;

/** One tier's counters (all zero for a tier the node does not have). */
typedef struct kvp_tier_stats {
    uint64_t capacity_bytes; /**< 0: the node has no such tier */
    uint64_t used_bytes;     /**< bytes its blocks take */
    uint64_t blocks;         /**< committed blocks in the tier */
    uint64_t hits;           /**< reads that found their block here */
    uint64_t misses;         /**< reads that did not (nor in a faster tier) */
    uint64_t evictions;      /**< blocks dropped from the tier for room */
    uint64_t demotions;      /**< blocks moved from host to SSD */
    uint64_t promotions;     /**< blocks moved from SSD to host */
    uint64_t bytes_written;  /**< into the tier (host: puts; SSD: its writes) */
    uint64_t bytes_read;     /**< out of it (host: gets; SSD: its reads) */
} kvp_tier_stats_t;

/** Node counters returned by kvp_stats(). */
typedef struct kvp_stats {
    uint64_t capacity_bytes; /**< size of the host arena */
    uint64_t used_bytes;     /**< bytes allocated to blocks */
    uint64_t blocks;         /**< committed blocks */
    uint64_t puts;           /**< successful puts */
    uint64_t gets;           /**< get requests */
    uint64_t hits;           /**< gets that found their block */
    uint64_t misses;         /**< gets that did not */
    uint64_t evictions;      /**< blocks evicted to make room */
    uint64_t bytes_in;       /**< block bytes received */
    uint64_t bytes_out;      /**< block bytes sent */
    uint64_t connections;    /**< connections open now */
    uint64_t rpc_errors;     /**< requests answered with an error */
    kvp_tier_stats_t tiers[KVP_TIERS]; /**< by kvp_tier_t */
} kvp_stats_t;

/**
 * @brief Connect to a pool node, or to the coordinator of a pool, and
 * complete the handshake.
 *
 * The peer's handshake reply says which it is.  Connected to the
 * coordinator, the client fetches the list of nodes (the coordinator's
 * Nodes) and opens a connection to a node the first time a call needs it,
 * with the same @p params (token, timeout, transport, name).  It fetches
 * the list again when the coordinator names a node it does not know or a
 * node's connection fails; a node it cannot reach is tried again after a
 * second.  A lost coordinator connection is reopened by the next call.
 *
 * @param [in]  address  "HOST:PORT" (IPv4 or a name; "[v6]:PORT" for IPv6).
 * @param [in]  params   optional (NULL for all defaults).
 * @param [out] client_p the new handle, set only on success; release it with
 *                       kvp_client_disconnect().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM for a malformed address or too long
 *         a token; KVP_ERR_CONNECTION_REFUSED; KVP_ERR_VERSION or
 *         KVP_ERR_AUTH when the peer refuses the handshake;
 *         KVP_ERR_TIMED_OUT; KVP_ERR_PROTOCOL for a malformed node list.
 */
KVP_EXPORT kvp_status_t kvp_client_connect(const char *address,
                                           const kvp_client_params_t *params,
                                           kvp_client_h *client_p);

/**
 * @brief The transport this connection moves block bytes with: "shm" (the
 * node's arena, mapped), "ucx" (one-sided over UCX; becomes "frame" once
 * the UCX connection has failed) or "frame" (inside RPC frames).  A static
 * string.  Connected to a coordinator: the transport of the node
 * connections open now when they all agree, "mixed" when they differ,
 * "none" when none is open yet.
 */
KVP_EXPORT const char *kvp_client_transport(kvp_client_h client);

/**
 * @brief Close the connection and free the handle.  Calls still in flight
 * in other threads fail with KVP_ERR_CONNECTION_LOST; the caller must not
 * start new ones.  NULL is accepted.
 */
KVP_EXPORT void kvp_client_disconnect(kvp_client_h client);

/**
 * @brief Store one block.
 *
 * The node checks the XXH3-64 checksum the library computes over @p data,
 * evicts least-recently-used unpinned blocks if it needs room, and replaces
 * any block already stored under the same key.
 *
 * @param [in] ns    namespace, 1..KVP_NAMESPACE_MAX bytes, NUL-terminated.
 * @param [in] key   the block key.
 * @param [in] data  the block bytes (copied before the call returns).
 * @param [in] size  1..KVP_BLOCK_MAX.
 *
 * Connected to a coordinator, the block is a chain of one block: the
 * coordinator places it (PlanPut), and a key the pool already caches is
 * not stored again.
 *
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; KVP_ERR_TOO_LARGE (larger than the
 *         node's arena); KVP_ERR_NO_SPACE (everything else is pinned by
 *         readers); a connection error.
 */
KVP_EXPORT kvp_status_t kvp_put(kvp_client_h client, const char *ns,
                                const kvp_key_t *key, const void *data,
                                uint64_t size);

/**
 * @brief Load one block into a caller buffer.
 *
 * @param [out] buf      receives the block bytes.
 * @param [in]  capacity length of @p buf.
 * @param [out] size_p   the block's size, set on success and on
 *                       KVP_ERR_BUFFER_TOO_SMALL.  May be NULL.
 *
 * Connected to a coordinator, the block is read from a node the
 * coordinator says holds it.
 *
 * @return KVP_OK; KVP_ERR_NOT_FOUND (a miss); KVP_ERR_BUFFER_TOO_SMALL;
 *         KVP_ERR_CHECKSUM (the bytes arrived damaged: treat as a miss;
 *         @p buf content is then undefined); KVP_ERR_INVALID_PARAM; a
 *         connection error.
 */
KVP_EXPORT kvp_status_t kvp_get(kvp_client_h client, const char *ns,
                                const kvp_key_t *key, void *buf,
                                uint64_t capacity, uint64_t *size_p);

/**
 * @brief Store many blocks in one go.  Through the shared arena this is two
 * round trips whatever @p count is (reserve, copy, commit); in frames it is
 * one put per block.
 *
 * The keys are unrelated blocks (for a prompt's chain, kvp_put_chain()
 * tells the pool how they chain).  Connected to a coordinator, each block
 * is placed as a chain of one block (one PlanPut each, sent together), a
 * key already cached is skipped (KVP_OK), and the blocks go to their nodes
 * batched per node, in parallel; a block whose node fails has that node's
 * connection error as its status.
 *
 * @param [in]  keys      @p count keys (0..KVP_BATCH_MAX).
 * @param [in]  datas     @p count pointers to block bytes (copied before
 *                        the call returns).
 * @param [in]  sizes     @p count sizes, each > 0.
 * @param [out] statuses  @p count per-block results, as kvp_put() returns
 *                        them; set when the call returns KVP_OK.
 * @return KVP_OK (see @p statuses); KVP_ERR_INVALID_PARAM; a connection
 *         error or KVP_ERR_TIMED_OUT (then @p statuses is undefined).
 */
KVP_EXPORT kvp_status_t kvp_put_batch(kvp_client_h client, const char *ns,
                                      const kvp_key_t *keys,
                                      const void *const *datas,
                                      const uint64_t *sizes, size_t count,
                                      kvp_status_t *statuses);

/**
 * @brief Load many blocks in one go into caller buffers.  Through the
 * shared arena the blocks are pinned under one lease, copied and verified.
 *
 * Connected to a coordinator, each key is looked up on its own (one Match
 * each, sent together) and read from a node holding it, batched per node,
 * in parallel; a block whose node fails has that node's connection error
 * as its status.
 *
 * @param [out] bufs       @p count buffers.
 * @param [in]  capacities their lengths.
 * @param [out] sizes      each block's size (on KVP_OK and
 *                         KVP_ERR_BUFFER_TOO_SMALL).
 * @param [out] statuses   per-block results, as kvp_get() returns them:
 *                         KVP_ERR_NOT_FOUND and KVP_ERR_CHECKSUM are misses.
 * @return KVP_OK (see @p statuses); KVP_ERR_INVALID_PARAM; a connection
 *         error or KVP_ERR_TIMED_OUT.
 */
KVP_EXPORT kvp_status_t kvp_get_batch(kvp_client_h client, const char *ns,
                                      const kvp_key_t *keys, void *const *bufs,
                                      const uint64_t *capacities, size_t count,
                                      uint64_t *sizes, kvp_status_t *statuses);

/** Opaque handle of a registered memory region. */
typedef struct kvp_mem *kvp_mem_h;

/**
 * @brief Register memory the engine will put from and get into (its KV
 * cache buffers, pinned), once, instead of on every call.  With the
 * network data path ("ucx") the region is registered with the transport,
 * as RDMA needs, and calls whose buffers lie inside it skip the per-call
 * registration; with "shm" and "frame" it only records the region, as it
 * does connected to a coordinator (each node connection then registers
 * the buffers of a call for that call).  Any buffer works with every call,
 * registered or not.
 *
 * @param [in]  addr,len the region; it must stay valid until deregistered.
 * @param [out] mem_p    set on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; a transport error.
 */
KVP_EXPORT kvp_status_t kvp_mem_reg(kvp_client_h client, void *addr, size_t len,
                                    kvp_mem_h *mem_p);

/**
 * @brief Release a registration.  No call using the region may be in
 * flight.  Every registration must be released before
 * kvp_client_disconnect().  NULL is accepted.
 */
KVP_EXPORT void kvp_mem_dereg(kvp_mem_h mem);

/** Opaque handle of an asynchronous call. */
typedef struct kvp_request *kvp_request_h;

/**
 * @brief kvp_put_batch() without waiting.  Every array (and @p ns) is
 * borrowed until the request completes; @p statuses is filled by then.
 * Requests run on a few library threads and share the connection, so
 * several may be in flight at once.
 *
 * @param [out] req_p the request, set on KVP_OK: poll it with
 *                    kvp_request_test(), or kvp_request_wait(), then
 *                    kvp_request_free() it.
 * @return KVP_OK (submitted); KVP_ERR_INVALID_PARAM; KVP_ERR_NO_MEMORY.
 */
KVP_EXPORT kvp_status_t kvp_put_batch_async(kvp_client_h client, const char *ns,
                                            const kvp_key_t *keys,
                                            const void *const *datas,
                                            const uint64_t *sizes, size_t count,
                                            kvp_status_t *statuses,
                                            kvp_request_h *req_p);

/** @brief kvp_get_batch() without waiting; as kvp_put_batch_async(). */
KVP_EXPORT kvp_status_t kvp_get_batch_async(kvp_client_h client, const char *ns,
                                            const kvp_key_t *keys, void *const *bufs,
                                            const uint64_t *capacities, size_t count,
                                            uint64_t *sizes, kvp_status_t *statuses,
                                            kvp_request_h *req_p);

/**
 * @brief Poll a request.
 * @return KVP_INPROGRESS, or what the blocking call would have returned.
 */
KVP_EXPORT kvp_status_t kvp_request_test(kvp_request_h req);

/** @brief Wait for a request to complete; returns its final status. */
KVP_EXPORT kvp_status_t kvp_request_wait(kvp_request_h req);

/**
 * @brief Free a request, waiting for it first if it is still running.
 * Every request must be freed before kvp_client_disconnect().  NULL is
 * accepted.
 */
KVP_EXPORT void kvp_request_free(kvp_request_h req);

/**
 * @brief How many leading keys of a chain are stored.  Connected to a
 * coordinator, this is kvp_match().
 *
 * @param [in]  keys      the chain, @p count keys, 0..KVP_BATCH_MAX.
 * @param [out] present_p the length of the longest stored prefix.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; a connection error.
 */
KVP_EXPORT kvp_status_t kvp_exists(kvp_client_h client, const char *ns,
                                   const kvp_key_t *keys, size_t count,
                                   size_t *present_p);

/**
 * @brief Delete blocks.  Blocks being read stay readable until the reader
 * is done and are then freed.  Missing keys are not an error.
 *
 * Connected to a coordinator, the keys are deleted on every node the
 * coordinator lists (in parallel); the nodes then publish the removals.
 *
 * @param [out] deleted_p how many of the keys were stored (may be NULL);
 *                        connected to a coordinator, the copies deleted,
 *                        summed over the nodes.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; a connection error (connected to
 *         a coordinator: the first node that failed, after every node was
 *         asked).
 */
KVP_EXPORT kvp_status_t kvp_delete(kvp_client_h client, const char *ns,
                                   const kvp_key_t *keys, size_t count,
                                   size_t *deleted_p);

/**
 * @brief Fetch the node's counters.  Connected to a coordinator: the sum
 * over the nodes it lists that answer (a node that cannot be reached is
 * left out).
 * @param [out] stats_p filled on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; a connection error (connected to
 *         a coordinator: only when no node answered, or the coordinator
 *         did not).
 */
KVP_EXPORT kvp_status_t kvp_stats(kvp_client_h client, kvp_stats_t *stats_p);

/**
 * @brief The longest cached prefix of a chain.
 *
 * Connected to a coordinator, its index answers (a Match asking for the
 * length only, so the reply stays small): the blocks cached
 * anywhere in the pool.  Connected to a node, the node's own blocks
 * (as kvp_exists()).
 *
 * @param [in]  ns        namespace, as kvp_put().
 * @param [in]  keys      the chain from its first block, @p count keys,
 *                        0..KVP_BATCH_MAX.
 * @param [out] matched_p how many leading keys are cached; set on KVP_OK.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; KVP_ERR_PROTOCOL (a malformed
 *         reply); a connection error.
 */
KVP_EXPORT kvp_status_t kvp_match(kvp_client_h client, const char *ns,
                                  const kvp_key_t *keys, size_t count,
                                  size_t *matched_p);

/**
 * @brief Save a chain: store the blocks of @p keys that are not cached yet.
 *
 * @p keys is a whole chain from its first block (keys[i]'s parent is
 * keys[i-1]), so the pool can keep chains prefix-closed: it evicts a
 * block's descendants before the block.  The leading blocks already cached
 * are skipped; @p datas of those are not read.
 *
 * Connected to a coordinator, PlanPut says which blocks are cached and on
 * which node each new one goes (it keeps a chain on few nodes); each node
 * gets its blocks in one chained two-phase put per contiguous run of the
 * chain, the nodes in parallel.  Connected to a node: one Exists, then one
 * chained two-phase put (in frames, when that is the transport, the node
 * is not told the chain).
 *
 * @param [in]  ns        namespace, as kvp_put().
 * @param [in]  keys      the chain, @p count keys, 0..KVP_BATCH_MAX.
 * @param [in]  datas     @p count pointers to block bytes (read before the
 *                        call returns; only those of new blocks are read,
 *                        but every pointer must be non-NULL).
 * @param [in]  sizes     @p count sizes, 1..KVP_BLOCK_MAX each.
 * @param [out] statuses  @p count per-block results, set when the call
 *                        returns KVP_OK: KVP_OK for a block stored or
 *                        already cached, else why it was not stored (as
 *                        kvp_put(); a connection error when its node
 *                        failed).
 * @return KVP_OK (see @p statuses); KVP_ERR_INVALID_PARAM;
 *         KVP_ERR_PROTOCOL (a malformed plan); the coordinator's refusal
 *         (KVP_ERR_NO_SPACE: no node has joined; KVP_ERR_TOO_LARGE: a
 *         block larger than every node); a connection error of the
 *         coordinator (or, connected to a node, of the node).  On an
 *         error @p statuses is undefined.
 */
KVP_EXPORT kvp_status_t kvp_put_chain(kvp_client_h client, const char *ns,
                                      const kvp_key_t *keys,
                                      const void *const *datas,
                                      const uint64_t *sizes, size_t count,
                                      kvp_status_t *statuses);

/**
 * @brief Load the longest cached prefix of a chain.
 *
 * Finds the cached prefix (Match, or Exists connected to a node) and reads
 * those blocks into @p bufs, verifying every block's checksum.  Connected
 * to a coordinator, each block is read from one of the nodes holding it,
 * preferring the node that holds the longest run of the chain from there
 * (so a chain kept on one node is read from that node alone), batched per
 * node, the nodes in parallel.
 *
 * A block that is missing (evicted since the lookup), damaged, too large
 * for its buffer, or whose holders all fail ends the prefix there (when a
 * node fails, the blocks it was to send are read from their other holders,
 * if any): @p loaded_p counts only leading blocks whose bytes arrived and
 * passed their checksum.  The buffers of the blocks after those hold
 * undefined bytes.
 *
 * @param [in]  ns         namespace, as kvp_put().
 * @param [in]  keys       the chain from its first block, @p count keys,
 *                         0..KVP_BATCH_MAX.
 * @param [out] bufs       @p count buffers.
 * @param [in]  capacities their lengths.
 * @param [out] sizes      @p count entries; sizes[i] is block i's size for
 *                         i < *loaded_p (and for a block that did not fit
 *                         its buffer); others are left undefined.
 * @param [out] loaded_p   how many leading blocks were loaded; set on
 *                         KVP_OK.
 * @return KVP_OK (see @p loaded_p, 0 included); KVP_ERR_INVALID_PARAM;
 *         KVP_ERR_PROTOCOL (a malformed lookup reply); a connection error
 *         of the coordinator (connected to a node: of the node).
 */
KVP_EXPORT kvp_status_t kvp_get_chain(kvp_client_h client, const char *ns,
                                      const kvp_key_t *keys, void *const *bufs,
                                      const uint64_t *capacities, size_t count,
                                      uint64_t *sizes, size_t *loaded_p);

/** Counters of the coordinator's index, returned by kvp_index_stats(). */
typedef struct kvp_index_stats {
    uint64_t nodes;            /**< pool nodes registered now */
    uint64_t blocks;           /**< cached blocks in the index */
    uint64_t entries;          /**< index entries (cached or not) */
    uint64_t index_bytes;      /**< memory the index holds */
    uint64_t matches;          /**< Match requests served */
    uint64_t matched_blocks;   /**< sum of their results */
    uint64_t requested_blocks; /**< sum of their chain lengths */
    uint64_t events;           /**< stored/removed events applied */
    uint64_t lease_expiries;   /**< nodes dropped when their lease ran out */
} kvp_index_stats_t;

/**
 * @brief Fetch the coordinator's counters.  The hit ratio its index saw
 * is matched_blocks / requested_blocks (take the difference of two
 * readings for an interval).
 *
 * @param [out] stats_p filled on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; KVP_ERR_UNSUPPORTED (connected
 *         to a node, not a coordinator); a connection error.
 */
KVP_EXPORT kvp_status_t kvp_index_stats(kvp_client_h client,
                                        kvp_index_stats_t *stats_p);

/* ---------------------------------------------------------------------- */
/* Disaggregated serving: instances, Schedule and the handover             */
/* (connected to a coordinator; docs/SCHEDULING.md)                        */
/* ---------------------------------------------------------------------- */

/** Roles of an inference instance (kvp_instance_params_t::roles, a mask). */
#define KVP_ROLE_PREFILL 1u
#define KVP_ROLE_DECODE  2u

/** Longest instance name, in bytes. */
#define KVP_INSTANCE_NAME_MAX 63
/** Most load runs in a plan. */
#define KVP_PLAN_RUNS_MAX 16

/** An inference instance registered with the coordinator. */
typedef struct kvp_instance *kvp_instance_h;

/** What an instance registers with. */
typedef struct kvp_instance_params {
    const char *name;            /**< 1..KVP_INSTANCE_NAME_MAX printable bytes */
    uint32_t    roles;           /**< KVP_ROLE_PREFILL and/or KVP_ROLE_DECODE */
    uint64_t    capacity_blocks; /**< KV blocks it holds for decoding, >= 1 */
    const char *node;            /**< "HOST:PORT" of the pool node on the same
                                      host (its blocks are the instance's own
                                      cache), or NULL */
} kvp_instance_params_t;

/** An instance's load (kvp_instance_report()). */
typedef struct kvp_instance_load {
    uint64_t queued_prefill_tokens; /**< prompt tokens queued or being computed */
    uint32_t running_decode;        /**< requests decoding */
    uint64_t free_blocks;           /**< KV blocks free for decoding */
} kvp_instance_load_t;

/**
 * @brief Register an inference instance; it holds a lease, renewed by
 * kvp_instance_report() (report at least every third of a lease: 1 s with
 * the default 3 s).
 * @param [out] inst_p the instance, set on success; end it with
 *                     kvp_instance_leave().  It borrows @p client, which
 *                     must outlive it.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (bad params; the coordinator's
 *         message is logged); KVP_ERR_NO_SPACE (the coordinator has
 *         max_instances); KVP_ERR_UNSUPPORTED (connected to a node, not a
 *         coordinator); a connection error.
 */
KVP_EXPORT kvp_status_t kvp_instance_join(kvp_client_h client,
                                          const kvp_instance_params_t *params,
                                          kvp_instance_h *inst_p);

/** @return the instance's id as the coordinator knows it (plans name it). */
KVP_EXPORT uint32_t kvp_instance_id(kvp_instance_h inst);

/**
 * @brief Report the instance's load and renew its lease.  When the
 * coordinator no longer knows it (it restarted, or the lease ran out), the
 * instance joins again, possibly under another id (kvp_instance_id()).
 * @return KVP_OK; a connection error; KVP_ERR_INVALID_PARAM.
 */
KVP_EXPORT kvp_status_t kvp_instance_report(kvp_instance_h inst,
                                            const kvp_instance_load_t *load);

/**
 * @brief Unregister the instance at once and free @p inst (also when the
 * coordinator cannot be told: its lease then runs out).  NULL is accepted.
 * @return KVP_OK; the error of telling the coordinator.
 */
KVP_EXPORT kvp_status_t kvp_instance_leave(kvp_instance_h inst);

/** Blocks [first, first + count) of a chain, to load from pool node @c node_id. */
typedef struct kvp_plan_run {
    uint32_t first;
    uint32_t count;
    uint32_t node_id;
} kvp_plan_run_t;

/**
 * A Schedule decision.  It holds no pointers, so a frontend may pass it to
 * the engines as it is.
 */
typedef struct kvp_plan {
    uint32_t       prefill_id;    /**< the prefill instance */
    char           prefill_name[KVP_INSTANCE_NAME_MAX + 1];
    uint32_t       decode_id;     /**< the decode instance */
    char           decode_name[KVP_INSTANCE_NAME_MAX + 1];
    uint32_t       cached;        /**< blocks of the longest prefix cached anywhere */
    uint32_t       local;         /**< of them, on the prefill instance's node */
    uint32_t       load;          /**< leading blocks to load; compute the rest */
    uint32_t       n_runs;        /**< runs covering [0, load), in order */
    kvp_plan_run_t runs[KVP_PLAN_RUNS_MAX];
    uint32_t       save_node_id;  /**< where the new blocks go; 0: placement */
    double         queue_s;       /**< the cost model's estimates, seconds */
    double         transfer_s;
    double         prefill_s;
    double         ttft_s;
} kvp_plan_t;

/**
 * @brief Ask the coordinator where a request runs: its prefill and decode
 * instances, and which leading blocks of its chain the prefill instance
 * loads (the coordinator's scheduler_policy decides; docs/SCHEDULING.md).
 * @param [in] keys          the prompt's chain, 0..KVP_BATCH_MAX keys.
 * @param [in] prompt_tokens 1..2^24.
 * @param [in] output_tokens expected answer length, 0..2^24.
 * @param [out] plan_p       set on success.
 * @return KVP_OK; KVP_ERR_NO_SPACE (no prefill or no decode instance);
 *         KVP_ERR_INVALID_PARAM; KVP_ERR_UNSUPPORTED (connected to a node);
 *         KVP_ERR_PROTOCOL (a reply that does not fit the request); a
 *         connection error.
 */
KVP_EXPORT kvp_status_t kvp_schedule(kvp_client_h client, const char *ns,
                                     const kvp_key_t *keys, size_t count,
                                     uint64_t prompt_tokens, uint64_t output_tokens,
                                     kvp_plan_t *plan_p);

/**
 * @brief The prefill instance's load: read the plan's blocks [0,
 * plan->load) from the nodes its runs name, in parallel, checksums
 * verified.  A block that is missing, damaged or on a lost node ends the
 * loaded prefix there: the engine computes from *@p loaded_p on.
 * @param [in] bufs, capacities, sizes as kvp_get_chain(), for @p count
 *                  (>= plan->load) keys of the chain.
 * @return KVP_OK (also when fewer blocks than planned arrived);
 *         KVP_ERR_INVALID_PARAM (arguments, or a plan whose runs do not
 *         cover [0, load) in order); KVP_ERR_UNSUPPORTED (connected to a
 *         node).
 */
KVP_EXPORT kvp_status_t kvp_plan_load(kvp_client_h client, const kvp_plan_t *plan,
                                      const char *ns, const kvp_key_t *keys,
                                      void *const *bufs, const uint64_t *capacities,
                                      size_t count, uint64_t *sizes, size_t *loaded_p);

/**
 * @brief The prefill instance's save: put blocks [first, count) of the
 * chain, chained (each block's parent is the one before it), on the plan's
 * save node: the decode instance's node, so the KV lands where it is read
 * and enters the index as it is committed (MemServe's
 * transfer_with_insert).  With no save node, or when that node fails, it
 * saves the whole chain as kvp_put_chain() does.
 * @param [in] datas, sizes all @p count blocks of the chain (those before
 *                   @p first are read only by the fallback).
 * @return KVP_OK when every block was saved; else the first error.
 */
KVP_EXPORT kvp_status_t kvp_plan_save(kvp_client_h client, const kvp_plan_t *plan,
                                      const char *ns, const kvp_key_t *keys,
                                      const void *const *datas, const uint64_t *sizes,
                                      size_t first, size_t count);

/**
 * @brief The decode side's plan: where the whole chain is once the prefill
 * instance is done.  Its first @p loaded blocks where @p plan loaded them
 * from, the rest on @p plan's save node (kvp_plan_save()).  Pass it to
 * kvp_plan_load() on the decode instance.  Without a save node, or when
 * the runs would pass KVP_PLAN_RUNS_MAX, it covers only the loaded prefix
 * (the decode side finds the rest with kvp_get_chain()).
 * @param [in] loaded what kvp_plan_load() loaded for @p plan (<= plan->load).
 * @param [in] count  blocks of the chain.
 * @param [out] out_p the decode plan (its load is the blocks it covers).
 * @return KVP_OK; KVP_ERR_INVALID_PARAM.
 */
KVP_EXPORT kvp_status_t kvp_plan_handover(const kvp_plan_t *plan, size_t loaded,
                                          size_t count, kvp_plan_t *out_p);

/**
 * @brief Turn token ids into chained block keys.
 *
 * key_i = XXH3-128(key_{i-1} || little-endian uint32 tokens of block i), the
 * first block hashing @p parent (or 16 zero bytes when NULL).  Only full
 * blocks get a key: a trailing partial block is not keyed, as engines only
 * cache full pages.
 *
 * @param [in]  tokens       token ids.
 * @param [in]  num_tokens   how many.
 * @param [in]  block_tokens tokens per block, > 0.
 * @param [in]  parent       key preceding the first block, or NULL.
 * @param [out] keys         room for num_tokens / block_tokens keys.
 * @return the number of keys written.
 */
KVP_EXPORT size_t kvp_chain_keys(const uint32_t *tokens, size_t num_tokens,
                                 size_t block_tokens, const kvp_key_t *parent,
                                 kvp_key_t *keys);

/**
 * @brief Turn an identifier the engine already has (a vLLM block hash, a
 * Mooncake trace hash_id, a file name) into a key: XXH3-128 of the bytes.
 * Use this where the engine's own ids already chain their prefix.
 */
KVP_EXPORT kvp_key_t kvp_key_from_bytes(const void *bytes, size_t len);

/** Log levels of kvp_set_log_handler(). */
typedef enum kvp_log_level {
    KVP_LOG_ERROR = 0,
    KVP_LOG_WARN  = 1,
    KVP_LOG_INFO  = 2,
    KVP_LOG_DEBUG = 3
} kvp_log_level_t;

/** A log callback: @p message is valid only during the call. */
typedef void (*kvp_log_func_t)(kvp_log_level_t level, const char *message,
                               void *arg);

/**
 * @brief Route the library's log lines at or above @p level to @p func.
 * By default the library logs nothing.  Pass NULL to stop.  Not
 * thread-safe against calls in flight: set it once, at start-up.
 */
KVP_EXPORT void kvp_set_log_handler(kvp_log_level_t level, kvp_log_func_t func,
                                    void *arg);

#ifdef __cplusplus
}
#endif
#endif
