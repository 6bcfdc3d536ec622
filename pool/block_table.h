/**
 * @file block_table.h
 * @brief The node's block table: which blocks it stores, where in the arena,
 * who is reading them, and which to evict (by the eviction policy chosen at
 * creation, <kvstore/evict.h>).
 *
 * Committed blocks form the policy's prefix tree: a block committed with a
 * parent (kv_block_table_set_parent()) that is itself committed here is its
 * child, and the policy evicts leaves first.  A block committed before its
 * parent stays a root.
 *
 * A block is named by (namespace id, 128-bit key).  Namespaces are interned:
 * kv_block_table_ns_id() maps a namespace string to a small id once, and the
 * id is used from then on.
 *
 * Life of a block:
 *
 *   reserve --> PENDING --commit--> COMMITTED --remove/replace--> freed
 *                  |                    |   \                       ^
 *                abort                evict  `--(pinned)--> DEAD ----'
 *                  v                    v                 last unpin
 *                freed                freed
 *
 *  - PENDING: space reserved while the bytes arrive; invisible to lookup
 *    and never evicted.
 *  - COMMITTED: visible to lookup, tracked by the eviction policy;
 *    evictable while its pin count is 0.
 *  - DEAD: removed or replaced while pinned; invisible, never evicted, its
 *    bytes stay valid until the last kv_block_table_unpin() frees it.
 *
 * Tiers: a table may have an SSD tier behind host memory
 * (kv_block_table_open_ssd()).  Then eviction demotes: the host policy's
 * victims are written to SSD and stay COMMITTED with tier KV_TIER_SSD (no
 * arena space), tracked by a second policy of the same kind that evicts
 * them for real when the SSD is full.  kv_block_table_stage() brings SSD
 * blocks back into host memory (a promotion; the SSD copy is freed: the
 * tiers are exclusive).  The listener sees a tier change as the block
 * leaving one tier and arriving in the other.  Only host blocks have
 * bytes in the arena, can be pinned or read with kv_block_table_data().
 *
 * Readers pin a block for as long as they use its bytes: a pinned block is
 * never freed under them.  Pointers to kv_block_t stay valid while the block
 * is pinned or pending; a committed unpinned block may be evicted by any
 * kv_block_table_reserve() call, so do not keep its pointer across one.
 *
 * Threading: none.  The table belongs to one thread (the node's event loop).
 */
#ifndef KV_POOL_BLOCK_TABLE_H
#define KV_POOL_BLOCK_TABLE_H

#include "arena.h"
#include "ssd.h"

#include <kvpool/kvpool.h>
#include <kvstore/evict.h>

#include <stddef.h>
#include <stdint.h>

/** Most namespaces a table interns. */
#define KV_BLOCK_TABLE_MAX_NAMESPACES 4096

typedef struct kv_block_table kv_block_table_t;

/**
 * A stored block.  The fields up to has_parent may be read by the table's
 * users; none may be written but through the calls below.  The rest is
 * private to block_table.c.
 */
typedef struct kv_block {
    kvp_key_t        key;
    uint32_t         ns_id;
    uint32_t         pins;       /**< readers holding the block */
    uint64_t         offset;     /**< arena offset of the bytes */
    uint64_t         size;       /**< block size in bytes, as reserved */
    uint64_t         checksum;   /**< XXH3-64 of the bytes, set by commit */
    kvp_key_t        parent;     /**< the key before this one in its chain */
    int              has_parent; /**< 0: a chain's first block, or unknown */
    int              tier;       /**< KV_TIER_HOST (offset valid) or KV_TIER_SSD */

    /* private */
    kv_ssd_loc_t     ssd_loc;    /* the record, while tier is KV_TIER_SSD */
    uint64_t         ssd_seq;    /* the record's sequence number (recovery) */
    kvp_key_t        child;      /* the last block committed with this parent */
    int              has_child;
    int              demoting;   /* a victim of the demotion batch in flight */
    uint64_t         alloc_size; /* arena extent size (rounded) */
    int              state;      /* KV_BLOCK_STATE_* in block_table.c */
    struct kv_block *prev;       /* committed list (MRU first) or limbo */
    struct kv_block *next;
    struct kv_block *hash_next;  /* hash chain (committed only) */
    kv_evict_entry_t evict;      /* in the policy (committed only) */
} kv_block_t;

/** The tiers of a block (the values of kvpool.Tier). */
enum {
    KV_TIER_HOST = 0,
    KV_TIER_SSD  = 1
};

/** Counters of kv_block_table_stats(). */
typedef struct kv_block_table_stats {
    uint64_t blocks;         /**< committed blocks in host memory */
    uint64_t used_bytes;     /**< arena bytes of those (rounded) */
    uint64_t evictions;      /**< blocks dropped from host memory */
    uint64_t evicted_bytes;  /**< arena bytes they held (rounded) */
    uint64_t ssd_blocks;     /**< committed blocks on SSD */
    uint64_t ssd_used_bytes; /**< disk bytes of their records */
    uint64_t ssd_evictions;  /**< blocks dropped from SSD */
    uint64_t demotions;      /**< blocks written to SSD instead of dropped */
    uint64_t demoted_bytes;
    uint64_t promotions;     /**< blocks staged from SSD into host memory */
    uint64_t promoted_bytes;
    uint64_t ssd_failures;   /**< SSD blocks dropped: a read error or bad checksum */
} kv_block_table_stats_t;

/**
 * @brief Create an empty table that allocates block space from @p arena.
 *
 * @param [in]  arena   borrowed: it must outlive the table, and nothing else
 *                      should allocate from it (eviction assumes the table
 *                      owns all its space).
 * @param [in]  policy  the eviction policy's name (kv_evict_policy_names()),
 *                      or NULL for KV_EVICT_DEFAULT_POLICY.
 * @param [out] table_p the new table, set only on success; the caller owns
 *                      it and releases it with kv_block_table_destroy().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM if @p arena or @p table_p is NULL;
 *         KVP_ERR_NOT_FOUND for an unknown policy.
 */
kvp_status_t kv_block_table_create(kv_arena_t *arena, const char *policy,
                                   kv_block_table_t **table_p);

/**
 * @brief Free every block (pending, committed, dead, pinned or not) back
 * to the arena, then the table and its namespaces.  Every kv_block_t
 * pointer becomes invalid.  NULL is accepted.
 */
void kv_block_table_destroy(kv_block_table_t *table);

/**
 * @brief The id of namespace @p ns, optionally interning it.
 *
 * @param [in]  ns     @p len bytes (need not be NUL-terminated; copied).
 * @param [in]  len    1..KVP_NAMESPACE_MAX.
 * @param [in]  create non-zero to intern @p ns if it is new.
 * @param [out] id_p   the id (0, 1, 2... in order of creation), set only on
 *                     success.  Ids are never reused or forgotten.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM for a bad length or NULL argument;
 *         KVP_ERR_NOT_FOUND if @p ns is unknown and !@p create;
 *         KVP_ERR_NO_SPACE if it would be namespace number
 *         KV_BLOCK_TABLE_MAX_NAMESPACES + 1.
 */
kvp_status_t kv_block_table_ns_id(kv_block_table_t *table, const char *ns,
                                  size_t len, int create, uint32_t *id_p);

/**
 * @brief Reserve arena space for a new block.
 *
 * If the arena has no room, committed blocks with no pins are evicted
 * (freed) one by one, in the order of the table's eviction policy, until
 * the allocation succeeds.
 * Nothing is evicted when the request cannot succeed even after evicting
 * every evictable block.
 *
 * @param [in]  ns_id   an id from kv_block_table_ns_id().
 * @param [in]  key     copied.
 * @param [in]  size    1..arena capacity bytes.
 * @param [out] block_p the new PENDING block, set only on success: its
 *                      offset and size are set, its bytes are
 *                      uninitialised.  It is invisible to lookup and never
 *                      evicted; the caller must end it with
 *                      kv_block_table_commit() or kv_block_table_abort().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (size 0, unknown ns_id, NULL);
 *         KVP_ERR_TOO_LARGE if @p size exceeds the arena capacity (nothing
 *         evicted); KVP_ERR_NO_SPACE if no room can be made (the rest is
 *         pinned or pending, or too fragmented).
 */
kvp_status_t kv_block_table_reserve(kv_block_table_t *table, uint32_t ns_id,
                                    const kvp_key_t *key, uint64_t size,
                                    kv_block_t **block_p);

/**
 * @brief Like kv_block_table_reserve(), but only from free space: nothing
 * is evicted, and KVP_ERR_NO_SPACE means the arena has no free extent of
 * @p size now.  For space reserved before the bytes are known to be good.
 */
kvp_status_t kv_block_table_reserve_free(kv_block_table_t *table, uint32_t ns_id,
                                         const kvp_key_t *key, uint64_t size,
                                         kv_block_t **block_p);

/**
 * @brief Make a PENDING block visible, with @p checksum; this counts as a
 * use.  Its parent, if set and committed, becomes its parent in the
 * eviction policy.  A committed block with the same (namespace, key) is
 * replaced (the new block takes its place in the policy): freed now if
 * unpinned, else made DEAD (invisible) and freed at its last unpin.
 * @p block stays valid (see above) and may now be pinned.
 */
void kv_block_table_commit(kv_block_table_t *table, kv_block_t *block,
                           uint64_t checksum);

/** @brief Drop a PENDING block and free its space; @p block is freed. */
void kv_block_table_abort(kv_block_table_t *table, kv_block_t *block);

/**
 * @return the COMMITTED block (@p ns_id, @p key), or NULL.  This is not a
 *         use (call kv_block_table_touch() for a real use).  The
 *         pointer is owned by the table; pin it to keep it across a
 *         reserve.
 */
kv_block_t *kv_block_table_lookup(kv_block_table_t *table, uint32_t ns_id,
                                  const kvp_key_t *key);

/**
 * @brief Record a use of a COMMITTED block (for the eviction policy, and
 * the order of kv_block_table_foreach()).  A DEAD block (still pinned by a
 * reader) is left alone.
 */
void kv_block_table_touch(kv_block_table_t *table, kv_block_t *block);

/**
 * @brief Take a reader's pin on a COMMITTED (or DEAD) block: until the
 * matching kv_block_table_unpin() it is neither evicted nor freed, and its
 * bytes stay valid even if it is removed or replaced meanwhile.
 */
void kv_block_table_pin(kv_block_table_t *table, kv_block_t *block);

/**
 * @brief Drop a pin.  The last unpin of a DEAD block frees it (and the
 * pointer becomes invalid); a COMMITTED block becomes evictable again.
 */
void kv_block_table_unpin(kv_block_table_t *table, kv_block_t *block);

/**
 * @brief Remove the COMMITTED block (@p ns_id, @p key): it becomes invisible
 * at once and is freed now, or at its last unpin if pinned.
 * @return 1 if such a block was removed, else 0.
 */
int kv_block_table_remove(kv_block_table_t *table, uint32_t ns_id,
                          const kvp_key_t *key);

/**
 * @brief Set the key before a PENDING @p block's key in its chain (see
 * kv_block_t::parent).  Blocks without one start a chain, or were stored
 * without chain information.
 */
void kv_block_table_set_parent(kv_block_t *block, const kvp_key_t *parent);

/**
 * Called when a block becomes visible (@p stored = 1: committed) or stops
 * being visible (@p stored = 0: evicted, removed, or replaced by a newer
 * commit of the same key, in which case the removal comes first).  The
 * block must not be changed or kept; the table must not be called from
 * the listener.
 */
typedef void (*kv_block_listener_t)(void *arg, int stored, const kv_block_t *block);

/** @brief Set (or clear, with NULL) the table's one listener. */
void kv_block_table_set_listener(kv_block_table_t *table,
                                 kv_block_listener_t listener, void *arg);

/**
 * @brief Call @p fn for each COMMITTED block, most recently used first,
 * until it returns non-zero.  @p fn must not call the table.
 */
void kv_block_table_foreach(const kv_block_table_t *table,
                            int (*fn)(const kv_block_t *block, void *arg),
                            void *arg);

/**
 * @return the bytes of namespace @p ns_id (not NUL-terminated) and their
 *         length in @p len_p, or NULL for an unknown id.
 */
const char *kv_block_table_ns_name(const kv_block_table_t *table, uint32_t ns_id,
                                   size_t *len_p);

/** @return the address of @p block's bytes in the arena. */
void *kv_block_table_data(kv_block_table_t *table, const kv_block_t *block);

/**
 * @brief Put an SSD tier behind host memory: open the store of @p config
 * (ssd.h), track its blocks with a policy of the table's kind, and recover
 * what an earlier run left there: every good record becomes a COMMITTED
 * SSD block (a record whose namespace cannot be interned, or an older
 * record of a key, is freed).  Call once, before any block is reserved;
 * the listener is not told of recovered blocks (kv_block_table_foreach()
 * lists them).
 * @param [in] high_bytes, low_bytes the host watermarks of
 *                        kv_block_table_balance() (low <= high <= the
 *                        arena capacity).
 * @param [out] recovered_p blocks recovered (may be NULL).
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (watermarks, a second call); the
 *         errors of kv_ssd_open().
 */
kvp_status_t kv_block_table_open_ssd(kv_block_table_t *table, const kv_ssd_config_t *config,
                                     uint64_t high_bytes, uint64_t low_bytes,
                                     uint64_t *recovered_p);

/**
 * @brief When host memory holds more than the high watermark, demote
 * blocks (the policy's victims, leaves first) until it holds no more than
 * the low one.  Nothing without an SSD tier.  One batch at a time, left
 * writing while the caller goes on: each call finishes the batch if its
 * writes are done and starts the next; call it again when
 * kv_block_table_event_fd() is readable (and from a periodic tick).
 */
void kv_block_table_balance(kv_block_table_t *table);

/**
 * @brief The SSD store's completion eventfd (kv_ssd_event_fd()), for the
 * caller's loop to watch and answer with kv_block_table_balance(), which
 * clears it; -1 without an SSD tier.
 */
int kv_block_table_event_fd(const kv_block_table_t *table);

/**
 * @brief Bring the SSD blocks among @p blocks (COMMITTED, from
 * kv_block_table_lookup(); host blocks and NULLs are skipped) into host
 * memory, in one batch of reads, together with up to @p readahead blocks
 * that follow the last of them in its chain.  Space is made as for a
 * reserve (demoting other blocks).  A block that cannot be staged is set
 * to NULL in @p blocks: for a read error or a checksum mismatch it is also
 * removed (logged), for want of space it stays on SSD.  Staged blocks are
 * host blocks, not pinned: pin them before another reserve.
 * @return how many blocks of @p blocks were staged.
 */
size_t kv_block_table_stage(kv_block_table_t *table, kv_block_t **blocks, size_t n,
                            size_t readahead);

/** @brief Write what the SSD tier has pending (freed records); from the tick. */
void kv_block_table_flush(kv_block_table_t *table);

/** @brief The SSD store's counters; zeros without an SSD tier. */
void kv_block_table_ssd_stats(const kv_block_table_t *table, kv_ssd_stats_t *stats_p);

/**
 * @brief Fill @p stats_p: blocks and used_bytes count COMMITTED blocks only
 * (not pending or dead ones; kv_arena_used() counts every block).
 */
void kv_block_table_stats(const kv_block_table_t *table,
                          kv_block_table_stats_t *stats_p);

#endif
