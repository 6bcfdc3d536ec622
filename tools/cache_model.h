/**
 * @file cache_model.h
 * @brief A simulated pool node's block store for the offline tools
 * (`kvpool replay --offline`, `kvpool simulate`): the real eviction code
 * (<kvstore/evict.h>) over a capacity in blocks, recording every stored and
 * evicted block at one location of a real prefix index
 * (<kvcoord/prefix_index.h>), which several stores may share.
 *
 * Threading: none.
 */
#ifndef KV_TOOLS_CACHE_MODEL_H
#define KV_TOOLS_CACHE_MODEL_H

#include <kvcoord/prefix_index.h>

#include <stddef.h>
#include <stdint.h>

typedef struct kv_cache_model kv_cache_model_t;

/**
 * @brief Create an empty store.
 * @param [in] index    the index it records into (borrowed: it must outlive
 *                      the store).
 * @param [in] ns_id    the namespace of its blocks in @p index.
 * @param [in] loc      its location, KV_LOC(node, tier).
 * @param [in] policy   an eviction policy name, or NULL for the default.
 * @param [in] capacity most blocks stored; 0 = no limit.
 * @param [out] model_p set only on success; free with kv_cache_model_destroy().
 * @return KVP_OK; KVP_ERR_NOT_FOUND (unknown policy).
 */
kvp_status_t kv_cache_model_create(kv_prefix_index_t *index, uint32_t ns_id, uint32_t loc,
                                   const char *policy, uint64_t capacity,
                                   kv_cache_model_t **model_p);

/** @brief Free the store (its blocks stay recorded in the index).  NULL is accepted. */
void kv_cache_model_destroy(kv_cache_model_t *model);

/** @return the eviction policy's name (static storage). */
const char *kv_cache_model_policy(const kv_cache_model_t *model);

/**
 * @brief Set the eviction policy's clock for the uses that follow
 * (kv_evict_set_time()).
 */
void kv_cache_model_set_time(kv_cache_model_t *model, uint64_t now);

/**
 * @brief Use the first @p count blocks of a chain, in chain order: the
 * stored ones are touched, the others stored (a block's parent is the one
 * before it), each store evicting while more than the capacity is stored.
 * @param [in] partial_last the chain's last block (keys[count - 1]) is not
 *                          full (KV_EVICT_PARTIAL).
 * @return KVP_OK; an error of kv_index_store() (then the blocks before it
 *         were used).
 */
kvp_status_t kv_cache_model_use(kv_cache_model_t *model, const kvp_key_t *keys,
                                size_t count, int partial_last);

/** @return the length of the chain's prefix that the store holds. */
size_t kv_cache_model_prefix(const kv_cache_model_t *model, const kvp_key_t *keys,
                             size_t count);

/** @return blocks stored now. */
size_t kv_cache_model_blocks(const kv_cache_model_t *model);

/** @return blocks evicted so far. */
uint64_t kv_cache_model_evictions(const kv_cache_model_t *model);

#endif
