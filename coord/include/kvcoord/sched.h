/**
 * @file sched.h
 * @brief The prefill/decode scheduler: which inference instance computes a
 * prompt, which one decodes it, and which of the prompt's leading blocks
 * the prefill instance loads instead of computing.
 *
 * Inference instances register with a role (prefill, decode or both), a
 * KV capacity in blocks and, optionally, the id of a pool node co-located
 * with them: what that node holds is the instance's own cache.  They report
 * their load (queued prefill tokens, running decode requests, free KV
 * blocks); between two reports the scheduler adds what it sent them itself.
 *
 * A decision (kv_sched_schedule()) reads the global prefix index
 * (<kvcoord/prefix_index.h>): the longest cached prefix of the prompt's
 * chain, where each of its blocks lives, and so how long a prefix each
 * instance's co-located node holds.  With the cost model
 * (kv_sched_cost_t) it estimates, for each prefill instance,
 *
 *     TTFT = queue + load(cached prefix) + prefill(the rest)
 *
 * where queue is the instance's queued prefill work, load the time to move
 * the blocks it uses (its own node's at local bandwidth, others' at remote
 * bandwidth) and prefill the compute time of the uncached tokens,
 * attention over the whole context included.  The policies differ in what
 * they may use and how they choose:
 *
 * | policy | instance | blocks it loads |
 * | --- | --- | --- |
 * | cache-aware | least estimated TTFT | the global prefix, or only its own, whichever is faster (MemServe: fetch a longer prefix only when that beats recomputing it) |
 * | local-cache-aware | least estimated TTFT | its own node's prefix |
 * | load | least queued work | its own node's prefix |
 * | round-robin | the next one | its own node's prefix |
 * | random | uniformly at random (seeded) | its own node's prefix |
 *
 * The decode instance is the least busy (fewest running requests) among
 * those with room for the request's KV (prompt plus output), else the one
 * with the most free blocks.  The plan says where the prefill instance
 * saves the new blocks: the decode instance's co-located node when it has
 * one (the blocks go straight into the decode side's memory and into the
 * index: MemServe's transfer_with_insert), else the prefill instance's.
 *
 * Ownership: pointers passed in are borrowed for the call only.
 *
 * Threading: none.  A scheduler belongs to one thread (the coordinator's
 * event loop, or a simulator).
 */
#ifndef KVCOORD_SCHED_H
#define KVCOORD_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include <kvcoord/prefix_index.h>
#include <kvpool/kvpool.h>

/** Most instances one scheduler holds; ids are 1..KV_SCHED_INSTANCE_MAX. */
#define KV_SCHED_INSTANCE_MAX 4096
/** Most runs (node, consecutive blocks) in a plan's load list. */
#define KV_SCHED_RUNS_MAX 16
/** Longest prompt accepted, in tokens. */
#define KV_SCHED_PROMPT_MAX (1ull << 24)
/** Most output tokens accepted. */
#define KV_SCHED_OUTPUT_MAX (1ull << 24)

/** Roles, a bit mask (an instance may have both). */
enum {
    KV_SCHED_PREFILL = 1u << 0,
    KV_SCHED_DECODE  = 1u << 1,
    KV_SCHED_BOTH    = KV_SCHED_PREFILL | KV_SCHED_DECODE
};

/** The policies (names in kv_sched_policy_names(), same order). */
typedef enum kv_sched_policy {
    KV_SCHED_CACHE_AWARE = 0,
    KV_SCHED_LOCAL_CACHE_AWARE,
    KV_SCHED_LOAD,
    KV_SCHED_ROUND_ROBIN,
    KV_SCHED_RANDOM,
    KV_SCHED_POLICY_COUNT
} kv_sched_policy_t;

/** The policy a caller gets when it names none. */
#define KV_SCHED_DEFAULT_POLICY KV_SCHED_CACHE_AWARE

/**
 * The cost model.  Defaults (kv_sched_cost_defaults()) describe a
 * LLaMA-2-70B-class model on one 8-GPU (A100-80G) instance at about half
 * of peak FLOPs; see the README for how each figure is derived.
 */
typedef struct kv_sched_cost {
    uint32_t block_tokens;       /**< tokens per block (512) */
    double   prefill_fixed_s;    /**< per prefill, whatever its length */
    double   prefill_token_s;    /**< per computed token (weights' FLOPs) */
    double   prefill_attn_s;     /**< per (token x earlier token) pair:
                                      the quadratic attention term */
    double   kv_bytes_per_token; /**< KV cache bytes of one token */
    double   local_bytes_s;      /**< co-located pool node -> instance, bytes/s */
    double   remote_bytes_s;     /**< another pool node -> instance, bytes/s */
    double   ssd_bytes_s;        /**< staging from a node's SSD tier, bytes/s:
                                      a co-located block there moves at the
                                      lower of this and local_bytes_s */
    double   decode_step_s;      /**< time between tokens with one request */
    double   decode_step_per_request_s; /**< added per running request */
} kv_sched_cost_t;

/** @brief Fill @p cost with the defaults. */
void kv_sched_cost_defaults(kv_sched_cost_t *cost);

/**
 * @return non-zero if every figure of @p cost is usable: block_tokens
 *         1..65536, times and sizes finite and >= 0, bandwidths > 0.
 */
int kv_sched_cost_valid(const kv_sched_cost_t *cost);

/**
 * @brief Set one figure of @p cost by its name, the field's name
 * ("block_tokens", "prefill_token_s", ...: the coordinator's config keys
 * and `kvpool simulate --cost KEY=VALUE` use these names).
 * @param [in] value decimal text; block_tokens 1..65536, the others
 *                   finite, >= 0 and below 1e15, bandwidths > 0.
 * @return KVP_OK; KVP_ERR_NOT_FOUND (no such figure); KVP_ERR_CONFIG (a
 *         bad value); both with a reason in @p err.  @p cost is changed
 *         only on success.
 */
kvp_status_t kv_sched_cost_set(kv_sched_cost_t *cost, const char *key, const char *value,
                               char *err, size_t err_len);

/**
 * @return the names kv_sched_cost_set() takes, in the order of the
 *         struct; NULL-terminated.  Static storage.
 */
const char *const *kv_sched_cost_keys(void);

/** @return the figure named @p key (as a double), or NaN for an unknown name. */
double kv_sched_cost_get(const kv_sched_cost_t *cost, const char *key);

/**
 * @return seconds to prefill a prompt of @p prompt_tokens whose first
 *         @p cached_tokens (<= prompt_tokens) are already in memory:
 *         fixed + token x new + attn x (prompt^2 - cached^2) / 2.
 */
double kv_sched_prefill_s(const kv_sched_cost_t *cost, uint64_t cached_tokens,
                          uint64_t prompt_tokens);

/** @return seconds to load @p blocks blocks at @p bytes_s bytes/s. */
double kv_sched_transfer_s(const kv_sched_cost_t *cost, uint64_t blocks, double bytes_s);

/** @return the time between tokens of a decode instance running @p running requests. */
double kv_sched_decode_step_s(const kv_sched_cost_t *cost, uint32_t running);

/**
 * @return the policy names, the default first in enum order; NULL-terminated.
 *         Static storage.
 */
const char *const *kv_sched_policy_names(void);

/** @return the name of @p policy ("?" for an unknown value). */
const char *kv_sched_policy_name(kv_sched_policy_t policy);

/**
 * @brief The policy named @p name.
 * @return KVP_OK; KVP_ERR_NOT_FOUND for an unknown name (@p policy_p untouched).
 */
kvp_status_t kv_sched_policy_parse(const char *name, kv_sched_policy_t *policy_p);

typedef struct kv_sched kv_sched_t;

/** What an instance registers with. */
typedef struct kv_sched_instance {
    uint32_t id;              /**< 1..KV_SCHED_INSTANCE_MAX, unique */
    uint32_t roles;           /**< KV_SCHED_PREFILL and/or KV_SCHED_DECODE */
    uint32_t node;            /**< co-located pool node id, or 0 */
    uint64_t capacity_blocks; /**< KV blocks it holds (decode memory), >= 1 */
} kv_sched_instance_t;

/** An instance's load report. */
typedef struct kv_sched_load {
    uint64_t queued_tokens;   /**< prefill tokens queued or being computed */
    uint32_t running;         /**< decode requests running */
    uint64_t free_blocks;     /**< KV blocks free for decode */
} kv_sched_load_t;

/**
 * @brief Create a scheduler with no instances.
 * @param [in] cost  the cost model (copied); must be kv_sched_cost_valid().
 * @param [in] seed  the random policy's seed: the same seed and the same
 *                   calls give the same decisions.
 * @param [out] sched_p set only on success; free with kv_sched_destroy().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (bad policy or cost, NULL).
 */
kvp_status_t kv_sched_create(kv_sched_policy_t policy, const kv_sched_cost_t *cost,
                             uint64_t seed, kv_sched_t **sched_p);

/** @brief Free the scheduler.  NULL is accepted. */
void kv_sched_destroy(kv_sched_t *sched);

/** @return the scheduler's policy. */
kv_sched_policy_t kv_sched_policy(const kv_sched_t *sched);

/** @return the scheduler's cost model. */
const kv_sched_cost_t *kv_sched_cost(const kv_sched_t *sched);

/**
 * @brief Register an instance (its load starts empty: nothing queued,
 * nothing running, capacity_blocks free).
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (the id is registered already,
 *         or out of range; no role; zero capacity; node above
 *         KV_COORD_NODE_MAX).
 */
kvp_status_t kv_sched_add(kv_sched_t *sched, const kv_sched_instance_t *instance);

/**
 * @brief Unregister instance @p id (its lease ran out, or it left).
 * @return KVP_OK; KVP_ERR_NOT_FOUND.
 */
kvp_status_t kv_sched_remove(kv_sched_t *sched, uint32_t id);

/**
 * @brief Change the pool node co-located with instance @p id (its node
 * joined again under another id); its load and history stay.
 * @return KVP_OK; KVP_ERR_NOT_FOUND; KVP_ERR_INVALID_PARAM (node above
 *         KV_COORD_NODE_MAX).
 */
kvp_status_t kv_sched_set_node(kv_sched_t *sched, uint32_t id, uint32_t node);

/**
 * @brief Record instance @p id's load.  What the scheduler sent it since
 * the last report is forgotten: the report counts it.
 * @return KVP_OK; KVP_ERR_NOT_FOUND.
 */
kvp_status_t kv_sched_report(kv_sched_t *sched, uint32_t id, const kv_sched_load_t *load);

/** @return how many instances are registered with any of the roles in @p roles. */
size_t kv_sched_count(const kv_sched_t *sched, uint32_t roles);

/**
 * @brief Instance @p id's registration and its load as the scheduler
 * estimates it now (the last report plus what was sent since).
 * @return KVP_OK; KVP_ERR_NOT_FOUND.
 */
kvp_status_t kv_sched_get(const kv_sched_t *sched, uint32_t id,
                          kv_sched_instance_t *instance_p, kv_sched_load_t *load_p);

/** A request to schedule. */
typedef struct kv_sched_request {
    uint32_t         ns_id;         /**< in the index; an unknown id: nothing cached */
    const kvp_key_t *keys;          /**< the prompt's chain, 0..KV_INDEX_MAX_CHAIN keys */
    size_t           count;
    uint64_t         prompt_tokens; /**< 1..KV_SCHED_PROMPT_MAX */
    uint64_t         output_tokens; /**< expected, 0..KV_SCHED_OUTPUT_MAX */
} kv_sched_request_t;

/** One run of a plan's load list: blocks [first, first + count) from @p node. */
typedef struct kv_sched_run {
    uint32_t first;
    uint32_t count;
    uint32_t node;   /**< pool node id */
} kv_sched_run_t;

/** A decision. */
typedef struct kv_sched_plan {
    uint32_t prefill;        /**< prefill instance id */
    uint32_t decode;         /**< decode instance id */
    uint32_t save_node;      /**< pool node that receives the new blocks, or
                                  0: the caller places them (PlanPut) */
    uint32_t cached;         /**< blocks of the longest cached prefix anywhere */
    uint32_t local;          /**< blocks of it on the prefill instance's node */
    uint32_t load;           /**< leading blocks the prefill instance loads
                                  (local <= load <= cached); it computes the
                                  rest: tokens from load x block_tokens on */
    uint32_t n_runs;         /**< runs covering blocks [0, load), in order */
    kv_sched_run_t runs[KV_SCHED_RUNS_MAX];
    double   queue_s;        /**< estimated wait before the prefill starts */
    double   transfer_s;     /**< estimated time to load the @c load blocks */
    double   prefill_s;      /**< estimated compute time */
    double   ttft_s;         /**< queue + transfer + prefill */
} kv_sched_plan_t;

/**
 * @brief Choose the prefill and decode instances of @p req and plan its
 * prefix (see the file comment).  The chosen instances' estimated load
 * grows by the request (until their next report).  With more than
 * KV_SCHED_RUNS_MAX runs needed, @c load stops where the runs do.
 *
 * @param [in] index the index to read (not changed); NULL: nothing cached.
 * @param [out] plan_p set only on success.
 * @return KVP_OK; KVP_ERR_NO_SPACE (no prefill instance, or no decode
 *         instance, registered) with nothing changed;
 *         KVP_ERR_INVALID_PARAM (NULL, a chain longer than
 *         KV_INDEX_MAX_CHAIN, prompt 0 or over KV_SCHED_PROMPT_MAX,
 *         output over KV_SCHED_OUTPUT_MAX).
 */
kvp_status_t kv_sched_schedule(kv_sched_t *sched, const kv_prefix_index_t *index,
                               const kv_sched_request_t *req, kv_sched_plan_t *plan_p);

#endif
