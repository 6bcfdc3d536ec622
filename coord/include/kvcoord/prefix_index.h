/**
 * @file prefix_index.h
 * @brief The global prefix index: which blocks of which chains are cached,
 * and where.
 *
 * Blocks are named by (namespace id, 128-bit key).  Keys are chained (a
 * key hashes its block and every block before it), so each key has one
 * parent: the key before it in its chain, or none for a chain's first
 * block.  The index is a tree of such keys; each entry holds the set of
 * locations (pool node, tier) that hold a committed copy.
 *
 * A block is *cached* when it has at least one location and its parent is
 * cached (or it has no parent).  Cached is prefix-closed by construction:
 * if block i of a chain is cached, so are blocks 0..i-1.  So the longest
 * cached prefix of a chain is found by binary search over the chain, with
 * O(log n) hash lookups.  A block stored before its parent (events from
 * two nodes may cross) is kept, uncached, and becomes cached when its
 * parent does; when a block loses its last location, its descendants
 * become uncached (they keep their locations).
 *
 * A key that is not stored but is named as the parent of a stored key is
 * held as a *placeholder* (no locations, not cached) until it is stored;
 * a key with no locations and no children is forgotten, with the parent
 * it was stored with.
 *
 * Locations are packed words, as on the wire: KV_LOC(node, tier) of
 * <kvproto/coord_service.h>, included here (node 1..KV_COORD_NODE_MAX,
 * tier 0..255).
 *
 * Ownership: pointers passed in are borrowed for the call only.
 *
 * Threading: none.  An index belongs to one thread.
 */
#ifndef KVCOORD_PREFIX_INDEX_H
#define KVCOORD_PREFIX_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include <kvpool/kvpool.h>
#include <kvproto/coord_service.h>

/** Most namespaces an index interns. */
#define KV_INDEX_MAX_NAMESPACES 1024
/** Longest chain Match and PlanPut accept. */
#define KV_INDEX_MAX_CHAIN KVP_BATCH_MAX

typedef struct kv_prefix_index kv_prefix_index_t;

/** Counters of kv_index_stats(). */
typedef struct kv_index_stats {
    uint64_t entries;     /**< keys held (cached or not, placeholders too) */
    uint64_t cached;      /**< cached blocks */
    uint64_t locations;   /**< (block, location) pairs */
    uint64_t bytes;       /**< memory the index holds, all included */
} kv_index_stats_t;

/**
 * @brief Create an empty index.
 * @param [in]  expected_blocks a sizing hint: room for that many keys is
 *                              allocated now (0 for a small default); the
 *                              index grows past it as needed.
 * @param [out] index_p         the index, set only on success; free it
 *                              with kv_index_destroy().
 * @return KVP_OK; KVP_ERR_NO_MEMORY; KVP_ERR_INVALID_PARAM (NULL).
 */
kvp_status_t kv_index_create(size_t expected_blocks, kv_prefix_index_t **index_p);

/** @brief Free the index.  NULL is accepted. */
void kv_index_destroy(kv_prefix_index_t *index);

/**
 * @brief The id of namespace @p ns (@p len bytes, 1..KVP_NAMESPACE_MAX,
 * copied), interning it if @p create.
 * @param [out] id_p the id (0, 1, 2... in order of creation), set only on
 *                   success.  Ids are never reused or forgotten.
 * @return KVP_OK; KVP_ERR_NOT_FOUND (unknown and !create);
 *         KVP_ERR_NO_SPACE (KV_INDEX_MAX_NAMESPACES reached);
 *         KVP_ERR_INVALID_PARAM.
 */
kvp_status_t kv_index_ns_id(kv_prefix_index_t *index, const void *ns, size_t len,
                            int create, uint32_t *id_p);

/**
 * @brief Record that @p loc holds a committed copy of @p key.
 *
 * @param [in] parent the key before @p key in its chain, or NULL when
 *                    @p key starts a chain.  A key keeps the parent it was
 *                    first stored with (while it is held: see above); a
 *                    different @p parent later is ignored.
 * @return KVP_OK (also when @p loc was already recorded);
 *         KVP_ERR_NO_MEMORY (nothing changed); KVP_ERR_INVALID_PARAM
 *         (NULL index or key, bad ns id, loc with node 0 or above
 *         KV_COORD_NODE_MAX, a @p parent that is @p key itself or one of
 *         its descendants: a cycle), and then nothing changed.
 */
kvp_status_t kv_index_store(kv_prefix_index_t *index, uint32_t ns_id,
                            const kvp_key_t *key, const kvp_key_t *parent,
                            uint32_t loc);

/**
 * @brief Record that @p loc no longer holds @p key.
 * @return 1 if that location was recorded, else 0 (also for a NULL or
 *         unknown argument).
 */
int kv_index_remove(kv_prefix_index_t *index, uint32_t ns_id,
                    const kvp_key_t *key, uint32_t loc);

/**
 * @brief Drop every location on pool node @p node (its lease ran out).
 * Scans the whole index.
 * @return how many locations were dropped (0 for node 0 or a NULL index).
 */
size_t kv_index_remove_node(kv_prefix_index_t *index, uint32_t node);

/**
 * @return the length of the longest cached prefix of @p keys (@p count
 *         keys, a chain), by binary search: O(log count) lookups.  0 for
 *         an unknown ns id, NULL arguments, or @p count above
 *         KV_INDEX_MAX_CHAIN (callers reject those first).
 */
size_t kv_index_match(const kv_prefix_index_t *index, uint32_t ns_id,
                      const kvp_key_t *keys, size_t count);

/**
 * @brief The locations of @p key, in no particular order.
 * @param [out] locs up to @p max of them (may be NULL when @p max is 0;
 *                   NULL copies nothing).
 * @return how many locations the key has (may exceed @p max); 0 if the
 *         key is unknown (or a placeholder).
 */
size_t kv_index_locations(const kv_prefix_index_t *index, uint32_t ns_id,
                          const kvp_key_t *key, uint32_t *locs, size_t max);

/**
 * @brief The locations of every key of a chain, as kv_index_locations() of
 * each key gives them, in one call: it walks up the parent links from the
 * last key, so where each keys[i - 1] is the parent keys[i] is held with
 * (as in a prefix kv_index_match() matched) it costs one hash lookup, not
 * @p count; a key whose held parent differs is looked up on its own.
 * @param [in]  keys   @p count keys (0..KV_INDEX_MAX_CHAIN).
 * @param [out] counts @p count numbers: how many locations keys[i] has (0
 *                     if it is unknown or a placeholder).
 * @param [out] locs   the locations of keys[0], then those of keys[1]...,
 *                     at most @p max (may be NULL when @p max is 0).
 * @return how many locations the keys have in all; above @p max, @p locs
 *         holds only some of them (call again with room for all).  0, with
 *         @p counts zeroed, for an unknown ns id or NULL @p keys.
 */
size_t kv_index_chain_locations(const kv_prefix_index_t *index, uint32_t ns_id,
                                const kvp_key_t *keys, size_t count, uint32_t *counts,
                                uint32_t *locs, size_t max);

/** A pool node's run of a chain: it holds blocks [0, length). */
typedef struct kv_index_node_run {
    uint32_t node;
    uint32_t length;
} kv_index_node_run_t;

/**
 * @brief Each node's prefix of a chain: how many leading blocks it holds
 * (in any tier), from what kv_index_chain_locations() gave for the chain's
 * first @p count blocks (all their locations).
 * @param [out] runs one per node holding block 0, in the order of block
 *                   0's locations; at most @p max (nodes past it are left
 *                   out).
 * @return how many runs were written.
 */
size_t kv_index_node_prefixes(const uint32_t *counts, const uint32_t *locs, size_t count,
                              kv_index_node_run_t *runs, size_t max);

/** @return non-zero if @p key is cached (see above). */
int kv_index_cached(const kv_prefix_index_t *index, uint32_t ns_id,
                    const kvp_key_t *key);

/**
 * @brief Call @p fn for each (namespace id, key, parent or NULL, location)
 * held at pool node @p node, until it returns non-zero.  Scans the whole
 * index (nothing for a NULL @p index or @p fn).  @p key and @p parent are
 * valid during the call only; @p fn must not change the index.
 */
void kv_index_foreach_node(const kv_prefix_index_t *index, uint32_t node,
                           int (*fn)(uint32_t ns_id, const kvp_key_t *key,
                                     const kvp_key_t *parent, uint32_t loc,
                                     void *arg),
                           void *arg);

/** @brief Fill @p stats_p (zeros for a NULL @p index; NULL @p stats_p: nothing). */
void kv_index_stats(const kv_prefix_index_t *index, kv_index_stats_t *stats_p);

#endif
