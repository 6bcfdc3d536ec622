/**
 * @file coord_int.h
 * @brief What the files of the coordinator share: the node table
 * (coord_members.c), placement (coord_place.c) and the coordinator's
 * state.  Private to coord/.
 *
 * Threading: none.  Everything here belongs to the coordinator's event
 * loop thread.
 */
#ifndef KV_COORD_COORD_INT_H
#define KV_COORD_COORD_INT_H

#include "coord.h"

#include "kvpool.pb-c.h"

#include <kv/text.h>
#include <kvcoord/prefix_index.h>
#include <kvcoord/sched.h>
#include <kvproto/coord_service.h>
#include <kvproto/rpc_server.h>

#include <stddef.h>
#include <stdint.h>

/** Longest node name (bytes, NUL excluded). */
#define KV_COORD_NAME_MAX       63
/** Longest node address "HOST:PORT" (bytes, NUL excluded). */
#define KV_COORD_ADDRESS_MAX    255
/** Largest data-plane address blob. */
#define KV_COORD_DATA_PLANE_MAX 4096
/** Most copies PlanPut places of one block. */
#define KV_COORD_REPLICAS_MAX   8
/** Tiers of kvpool.Tier (HOST, SSD, GPU): values 0..KV_COORD_TIER_COUNT-1. */
#define KV_COORD_TIER_COUNT     3
/** Most namespaces in one PublishRequest. */
#define KV_COORD_PUBLISH_NS_MAX KV_INDEX_MAX_NAMESPACES

/* ---------------------------------------------------------------------- */
/* The node table (coord_members.c)                                       */
/* ---------------------------------------------------------------------- */

/** One tier of a node's counters (kvpool.TierStats). */
typedef struct kv_coord_tier_stats {
    uint64_t capacity_bytes, used_bytes, blocks, hits, misses;
    uint64_t evictions, demotions, promotions;
} kv_coord_tier_stats_t;

/** A node's counters from its last heartbeat (HeartbeatRequest.stats). */
typedef struct kv_coord_node_stats {
    uint64_t              puts, gets, hits, misses, bytes_in, bytes_out, rpc_errors;
    uint32_t              tiers; /**< bit (1 << tier) per tier reported */
    kv_coord_tier_stats_t tier[KV_COORD_TIER_COUNT];
} kv_coord_node_stats_t;

/** A registered pool node. */
typedef struct kv_coord_member {
    uint32_t id;                 /**< 1..KV_COORD_NODE_MAX */
    uint64_t incarnation;        /**< the node process's, from its Join */
    char     name[KV_COORD_NAME_MAX + 1];
    char     address[KV_COORD_ADDRESS_MAX + 1];
    uint64_t address_hash;       /**< placement's hash input, stable across restarts */
    uint64_t capacity_bytes;
    uint64_t free_bytes;         /**< as of the last heartbeat */
    uint64_t blocks;             /**< as of the last heartbeat */
    uint32_t load;               /**< as of the last heartbeat */
    uint32_t tiers;              /**< bit (1 << tier) per tier the node has */
    uint8_t *data_plane;         /**< owned; data_plane_len bytes */
    size_t   data_plane_len;
    uint64_t deadline_ns;        /**< lease end, kv_time_ns() clock */
    uint64_t planned_bytes;      /**< placed by PlanPut since the last heartbeat */
    double   recent_bytes;       /**< placed by PlanPut, decayed (coord_place.c)
                                      as of recent_clock */
    uint64_t recent_clock;       /**< the table's placed clock at recent_bytes */
    kv_coord_node_stats_t stats; /**< as of the last heartbeat that had them */
    size_t   slot;               /* private: index in the table's list */
} kv_coord_member_t;

typedef struct kv_coord_members kv_coord_members_t;

/**
 * @brief Create an empty table holding at most @p max_nodes nodes.
 * @param [out] members_p set on success; free with kv_coord_members_destroy().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (@p max_nodes 0 or over
 *         KV_COORD_NODE_MAX).
 */
kvp_status_t kv_coord_members_create(uint32_t max_nodes, kv_coord_members_t **members_p);

/** @brief Free the table and every member.  NULL is accepted. */
void kv_coord_members_destroy(kv_coord_members_t *members);

/**
 * @brief Register a node under a fresh id: the one not used for the longest
 * time, so a node that lost its lease finds its old id is no longer its.
 * @param [in] proto the node's fields (id, slot and data_plane ignored).
 * @param [in] data_plane @p data_plane_len bytes (<= KV_COORD_DATA_PLANE_MAX), copied.
 * @param [in] id     the id to take if it is free (a node re-joining with
 *                    its incarnation keeps its id), or 0.
 * @param [out] member_p the member, owned by the table; valid until it is
 *                       removed.
 * @return KVP_OK; KVP_ERR_NO_SPACE (max_nodes nodes registered).
 */
kvp_status_t kv_coord_members_add(kv_coord_members_t *members,
                                  const kv_coord_member_t *proto,
                                  const void *data_plane, size_t data_plane_len,
                                  uint32_t id, kv_coord_member_t **member_p);

/** @brief Unregister and free @p member. */
void kv_coord_members_remove(kv_coord_members_t *members, kv_coord_member_t *member);

/** @return the member with id @p id, or NULL. */
kv_coord_member_t *kv_coord_members_find(const kv_coord_members_t *members, uint32_t id);

/** @return the member whose address is @p address, or NULL. */
kv_coord_member_t *kv_coord_members_find_address(const kv_coord_members_t *members,
                                                 const char *address);

/** @return how many nodes are registered. */
size_t kv_coord_members_count(const kv_coord_members_t *members);

/**
 * @return member @p i, 0 <= i < kv_coord_members_count(), in no particular
 *         order (removing a member changes the order).
 */
kv_coord_member_t *kv_coord_members_at(const kv_coord_members_t *members, size_t i);

/**
 * @return the bytes PlanPut placed on all nodes since the table was made:
 *         the clock by which placement decays each node's recent bytes.
 */
uint64_t kv_coord_members_clock(const kv_coord_members_t *members);

/** @brief Advance the placed clock by @p bytes. */
void kv_coord_members_tick(kv_coord_members_t *members, uint64_t bytes);

/** @return a member whose lease ended before @p now_ns, or NULL. */
kv_coord_member_t *kv_coord_members_expired(const kv_coord_members_t *members,
                                            uint64_t now_ns);

/* ---------------------------------------------------------------------- */
/* Placement (coord_place.c)                                               */
/* ---------------------------------------------------------------------- */

/** A placement question: the new blocks of one chain. */
typedef struct kv_coord_place_req {
    const kvp_key_t *rank_key;   /**< the chain's first new key (the first
                                      block that needs a home) */
    const uint64_t  *sizes;      /**< of each new block, 1..KVP_BLOCK_MAX */
    size_t           count;      /**< new blocks */
    uint32_t         replicas;   /**< copies of each, 1..KV_COORD_REPLICAS_MAX */
    const uint32_t  *prefer;     /**< ids of the nodes holding the chain's last
                                      cached block (may be unknown ids) */
    size_t           n_prefer;
} kv_coord_place_req_t;

/**
 * @brief Choose the nodes that store the new blocks of a chain (the
 * algorithm is described in coord_place.c).  Every chosen node's
 * planned_bytes and recent_bytes grow by the block's size, and the
 * table's placed clock by the sizes of all copies placed.
 * @param [out] targets       @p req->count node ids, the first copy of each block.
 * @param [out] replica_nodes (replicas - 1) ids per block, in block order;
 *                            0 where no further distinct node exists.
 * @return KVP_OK; KVP_ERR_NO_SPACE (no node registered) or KVP_ERR_TOO_LARGE
 *         (a block larger than every node), with a reason in @p err and
 *         nothing changed.
 */
kvp_status_t kv_coord_place(kv_coord_members_t *members, const kv_coord_place_req_t *req,
                            uint32_t *targets, uint32_t *replica_nodes, char *err,
                            size_t err_len);

/* ---------------------------------------------------------------------- */
/* Inference instances (coord_instances.c)                                 */
/* ---------------------------------------------------------------------- */

/** An inference instance: what the coordinator keeps beside the scheduler's
    entry of the same id. */
typedef struct kv_coord_instance {
    uint32_t id;                 /**< 1..max_instances; 0: the slot is free */
    uint64_t incarnation;        /**< the engine process's, from its join */
    char     name[KV_COORD_NAME_MAX + 1];
    char     node_address[KV_COORD_ADDRESS_MAX + 1]; /**< "" for none */
    uint32_t node_id;            /**< that node's id when last looked up */
    uint64_t deadline_ns;        /**< lease end, kv_time_ns() clock */
    /* Schedule's choices of it since it joined (metrics, dashboard) */
    uint64_t prefills, decodes;  /**< requests it was chosen for, by role */
    uint64_t prompt_blocks;      /**< blocks of the prompts it prefilled */
    uint64_t loaded_blocks;      /**< of those, cached blocks it loads */
    uint64_t prompt_tokens;      /**< tokens of the prompts it prefilled */
    uint64_t loaded_tokens;      /**< of those, tokens it loads rather than computes */
} kv_coord_instance_t;

/* ---------------------------------------------------------------------- */
/* What the HTTP endpoint shows (coord_metrics.c, coord_dashboard.c)       */
/* ---------------------------------------------------------------------- */

/** Prefixes the dashboard ranks: the most matched chains' first blocks. */
#define KV_COORD_TOP_MAX 64
/** Samples of the dashboard's history: one a second, ten minutes. */
#define KV_COORD_HISTORY 600
/** Bytes of a namespace name kept for labels and the dashboard. */
#define KV_COORD_NS_LABEL_MAX 63

/** Match calls of one namespace. */
typedef struct kv_coord_ns_stats {
    char     name[KV_COORD_NS_LABEL_MAX + 1];
    uint64_t lookups, requested_blocks, matched_blocks;
} kv_coord_ns_stats_t;

/** A chain's first block as Match saw it (space-saving counts). */
typedef struct kv_coord_top {
    uint32_t  ns_id;
    kvp_key_t key;
    uint64_t  matches, matched_blocks, longest;
} kv_coord_top_t;

/** Cluster-wide running totals: the nodes' counters summed, Match's and
    Schedule's (the prompt blocks it placed, and the cached ones it found). */
typedef struct kv_coord_totals {
    uint64_t requested_blocks, matched_blocks;
    uint64_t scheduled_blocks, scheduled_cached;
    uint64_t hit[KV_COORD_TIER_COUNT], miss;
    uint64_t bytes_in, bytes_out, evictions, demotions, promotions;
} kv_coord_totals_t;

/** One history sample: what the totals grew by in one interval. */
typedef struct kv_coord_sample {
    double            t; /**< unix seconds at its end */
    kv_coord_totals_t delta;
} kv_coord_sample_t;

/** The endpoint's state, inside kv_coord_t. */
typedef struct kv_coord_view {
    struct kv_http      *http;      /**< NULL without http_port */
    kv_coord_ns_stats_t *ns;        /**< [KV_INDEX_MAX_NAMESPACES], by index ns id */
    kv_coord_top_t       top[KV_COORD_TOP_MAX];
    size_t               n_top;
    kv_histogram_t       cached_blocks, loaded_blocks, ttft_s; /**< Schedule's plans */
    kv_coord_sample_t    history[KV_COORD_HISTORY]; /**< a ring */
    size_t               history_head, history_len;
    kv_coord_totals_t    last;      /**< totals at the last sample */
    uint64_t             next_sample_ns;
    uint64_t             node_expiries, instance_expiries;
    uint64_t             scheduled_blocks, scheduled_cached; /**< Schedule's */
} kv_coord_view_t;

/** Start the endpoint if config.http_port asks for one. */
kvp_status_t kv_coord_view_start(kv_coord_t *coord);

/** Stop it and free what it holds. */
void kv_coord_view_stop(kv_coord_t *coord);

/** Take a history sample when one is due; from the tick. */
void kv_coord_view_tick(kv_coord_t *coord);

/** Count a Match of @p matched blocks of the @p n_keys of @p keys. */
void kv_coord_view_match(kv_coord_t *coord, uint32_t ns_id, const ProtobufCBinaryData *ns,
                         const kvp_key_t *keys, size_t n_keys, size_t matched);

/** Count Schedule's @p plan for @p req (namespace @p ns_id, UINT32_MAX when
    the index has none of it). */
void kv_coord_view_schedule(kv_coord_t *coord, const kv_sched_plan_t *plan,
                            const kv_sched_request_t *req, uint32_t ns_id,
                            const ProtobufCBinaryData *ns);

/** The cluster's totals now. */
void kv_coord_view_totals(const kv_coord_t *coord, kv_coord_totals_t *totals);

/** The dashboard's JSON (GET /api/dashboard) into @p text. */
void kv_coord_dashboard_json(kv_coord_t *coord, kv_text_t *text);

/* ---------------------------------------------------------------------- */
/* The coordinator (coord_service.c)                                       */
/* ---------------------------------------------------------------------- */

/** Memory a handler keeps from one request to the next (grow-only). */
typedef struct kv_coord_buf {
    void  *mem;
    size_t len;
} kv_coord_buf_t;

/** Match's buffers: keys, counts, locations, blocks, node prefixes. */
#define KV_COORD_MATCH_BUFS 5

struct kv_coord {
    kv_coord_config_t   config;
    kv_evloop_t        *loop;
    kv_rpc_server_t    *server;
    kv_prefix_index_t  *index;
    kv_coord_members_t *members;
    uint64_t            epoch;        /* random per process start */
    uint32_t            namespaces;   /* interned in the index */
    Kvpool__HelloReply  hello;        /* what every HelloReply adds */
    uint32_t           *scratch;      /* Publish: namespace ids */
    size_t              scratch_len;  /* in uint32_t */
    kv_coord_buf_t      match_buf[KV_COORD_MATCH_BUFS]; /* Match's, kept */
    uint64_t            matches, matched_blocks, requested_blocks;
    uint64_t            events, lease_expiries;
    /* scheduling (coord_instances.c, coord_schedule.c) */
    kv_sched_t          *sched;
    kv_coord_instance_t *instances;      /* [max_instances + 1]; [0] unused */
    uint32_t             next_instance;  /* where the search for a free id starts */
    kv_coord_buf_t       schedule_keys;  /* Schedule's keys, kept */
    uint64_t             decisions[KV_SCHED_POLICY_COUNT];
    kv_coord_view_t      view; /* the HTTP endpoint's (coord_metrics.c) */
};

/** @return when a lease granted now ends (kv_time_ns() clock). */
uint64_t kv_coord_lease_end(const kv_coord_t *coord);

/** Add node id @p id to the @p n distinct ids of @p set (0 is skipped);
    @return the new count. */
size_t kv_coord_id_add(uint32_t *set, size_t n, uint32_t id);

/** @return @p count uint32_t of the coordinator's scratch memory. */
uint32_t *kv_coord_scratch(kv_coord_t *coord, size_t count);

/** @return @p len bytes of @p buf (its content is not kept when it grows). */
void *kv_coord_buf(kv_coord_buf_t *buf, size_t len);

/**
 * Check a namespace (1..KVP_NAMESPACE_MAX bytes, no NUL) and a list of
 * keys (at most @p max_keys, each KVP_KEY_LEN bytes).  On failure replies
 * KVP_ERR_INVALID_PARAM on @p call and returns 0.
 */
int kv_coord_check_chain(kv_rpc_call_t *call, const ProtobufCBinaryData *ns,
                         const ProtobufCBinaryData *keys, size_t n_keys,
                         size_t max_keys);

/** Fill @p info (whose strings borrow from @p member) for a reply. */
void kv_coord_node_info(const kv_coord_member_t *member, Kvpool__NodeInfo *info,
                        Kvpool__Tier *tiers);

/* Handlers, split by what they serve. */
void kv_coord_handle_join(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                          const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_heartbeat(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                               const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_publish(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                             const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_nodes(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                           const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_match(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                           const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_plan_put(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                              const void *payload, uint64_t payload_len, void *arg);

void kv_coord_handle_instance_join(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                                   const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_instance_report(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                                     const void *payload, uint64_t payload_len,
                                     void *arg);
void kv_coord_handle_instance_leave(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                                    const void *payload, uint64_t payload_len, void *arg);
void kv_coord_handle_schedule(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                              const void *payload, uint64_t payload_len, void *arg);

/** Drop every member whose lease ran out, and its blocks from the index. */
void kv_coord_expire_members(kv_coord_t *coord);

/** Unregister every instance whose lease ran out. */
void kv_coord_expire_instances(kv_coord_t *coord);

#endif
