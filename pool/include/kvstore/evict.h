/**
 * @file evict.h
 * @brief Eviction policies: which cached entry to drop next.
 *
 * A policy orders entries that its user embeds in its own objects (a pool
 * node's blocks, the replay tool's simulated blocks), like a list node:
 * the user owns the memory, the policy only links it.  Entries form a
 * prefix tree: an entry may be inserted with a parent (the block before it
 * in its chain), and the policy offers leaves first (entries with no child
 * in the policy), so that evicting keeps the cached set prefix-closed: if
 * block i of a chain is cached, so are blocks 0..i-1.  An entry inserted
 * without a parent is a root.
 *
 *   insert(e, parent) --> tracked --pop (the victim)--> untracked
 *                          |  ^  \--remove / replace--> untracked
 *                      pin |  | unpin
 *                          v  |
 *                         pinned (never a victim)
 *
 * The policies (kv_evict_policy_names()):
 *  - "lru": the least recently used leaf (insert and touch are uses).
 *    Among entries inserted without parents this is exact LRU.
 *  - "lfuda": LFU with dynamic aging (Arlitt et al., "Evaluating content
 *    management techniques for Web proxy caches", 2000) over leaves: an
 *    entry's priority at each use is L + f, where f is how often its key was
 *    used recently (1..15, counted in TinyLFU's count-min sketch, which also
 *    remembers keys no longer cached and halves every count after ten uses
 *    per tracked entry) and L is the priority of the last victim, so that
 *    entries that were popular long ago age out.  The leaf with the lowest
 *    priority goes first; ties go to the least recently used.
 *  - "density": LRU in time, shifted by a learned value per class of entry.
 *    An entry's priority at each use is now + s(c) * R: now is the time
 *    (kv_evict_set_time(), or the use count when it is never called), R the
 *    usual residence time (a moving average of victims' time since their
 *    last use), and s(c) the base-2 logarithm, within -4..4, of how much
 *    more often entries of its class c are hit per unit of cache time than
 *    entries of class 1, measured online.  The class is the key's recent use
 *    count (1..8, from lfuda's sketch), or 0 for a use flagged
 *    KV_EVICT_PARTIAL (a block not full, whose key rarely recurs): so a
 *    class that the workload reuses twice as densely stays one residence
 *    time longer, a class never reused goes four earlier, and when use
 *    counts say nothing every shift is 0 and the order is LRU's.  The leaf
 *    with the lowest priority goes first; ties go to the least recently
 *    used.  See docs/EVICTION.md for why and how it compares.
 *
 * The victim is the best unpinned leaf.  Only when every leaf is pinned
 * does an unpinned non-leaf go (its children become roots), so that a
 * pinned leaf never makes its whole chain unevictable: first one whose
 * children are all pinned (the deepest of a chain above a pinned block),
 * then any other.
 *
 * Cost: insert, touch, remove, pin, unpin and pop are O(log n) for n
 * tracked entries (a binary heap), plus the children of the entry for
 * remove and replace.  A policy holds 8 bytes per tracked entry, plus for
 * "lfuda" a sketch of 64 to 128 bytes per entry (at least 64 KiB), for
 * "density" one of 256 to 512 bytes per entry (at least 64 KiB); an entry
 * is 80 bytes.  "density" adds O(9) per use for its
 * statistics, and O(9) every 1,024 uses to recompute its shifts.
 *
 * Threading: none.  A policy and its entries belong to one thread.
 */
#ifndef KVSTORE_EVICT_H
#define KVSTORE_EVICT_H

#include <kvpool/status.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The policy a caller gets when it names none. */
#define KV_EVICT_DEFAULT_POLICY "lru"

/** Longest policy name, in bytes. */
#define KV_EVICT_NAME_MAX 31

typedef struct kv_evict kv_evict_t;

/**
 * The part of a cached object that a policy links.  Embed one in the
 * object, get the object back from a popped entry with kv_container_of().
 * Every field is private to the policy; the user neither reads nor writes
 * them and need not initialise them.
 */
typedef struct kv_evict_entry {
    struct kv_evict_entry *parent;   /* NULL for a root */
    struct kv_evict_entry *child;    /* first child; NULL for a leaf */
    struct kv_evict_entry *next;     /* siblings under the parent */
    struct kv_evict_entry *prev;
    uint64_t               prio;     /* lower goes first */
    uint64_t               stamp;    /* use clock at the last use */
    uint64_t               hash;     /* the key's hash, for frequency */
    uint64_t               used_at;  /* time of the last use ("density") */
    size_t                 pos;      /* heap slot; SIZE_MAX when pinned */
    uint32_t               free_children; /* children not pinned */
    uint8_t                klass;    /* class at the last use ("density") */
} kv_evict_entry_t;

/** Flags of a use (kv_evict_insert_flags(), kv_evict_touch_flags()). */
enum {
    /** The object is not full (a chain's last, partial block): its key is
        unlikely to be used again once the chain grows ("density" learns how
        unlikely; the other policies ignore it). */
    KV_EVICT_PARTIAL = 1u << 0
};

/**
 * @return the names of the policies, the default first, then the others;
 *         NULL-terminated.  Static storage.
 */
const char *const *kv_evict_policy_names(void);

/** @return non-zero if @p name (NUL-terminated) names a policy. */
int kv_evict_policy_known(const char *name);

/**
 * @brief Create an empty policy.
 *
 * @param [in]  name     a name from kv_evict_policy_names(), or NULL for
 *                       KV_EVICT_DEFAULT_POLICY.
 * @param [out] policy_p the policy, set only on success; free it with
 *                       kv_evict_destroy().
 * @return KVP_OK; KVP_ERR_NOT_FOUND for an unknown name;
 *         KVP_ERR_INVALID_PARAM if @p policy_p is NULL.
 */
kvp_status_t kv_evict_create(const char *name, kv_evict_t **policy_p);

/**
 * @brief Free a policy.  Its entries are left as they are (they belong to
 * the user, who must not pass them to another policy without inserting them
 * again).  NULL is accepted.
 */
void kv_evict_destroy(kv_evict_t *policy);

/** @return the policy's name (static storage). */
const char *kv_evict_name(const kv_evict_t *policy);

/** @return how many entries the policy tracks, pinned ones included. */
size_t kv_evict_count(const kv_evict_t *policy);

/**
 * @brief Start tracking @p entry, as just used (insert counts as a use).
 *
 * @param [in] entry    not tracked by any policy; the user keeps it alive
 *                      until it leaves through kv_evict_pop(),
 *                      kv_evict_remove() or kv_evict_replace().
 * @param [in] parent   a tracked entry (pinned or not), or NULL: @p entry
 *                      becomes its child, and @p parent is not offered
 *                      while it has children (unless every leaf is pinned).
 * @param [in] key_hash a hash of the object's key: uses of the same key,
 *                      even of entries no longer tracked, count for its
 *                      frequency ("lfuda", "density"; "lru" ignores it).
 */
void kv_evict_insert(kv_evict_t *policy, kv_evict_entry_t *entry,
                     kv_evict_entry_t *parent, uint64_t key_hash);

/** @brief kv_evict_insert() with flags of the use (KV_EVICT_PARTIAL). */
void kv_evict_insert_flags(kv_evict_t *policy, kv_evict_entry_t *entry,
                           kv_evict_entry_t *parent, uint64_t key_hash,
                           unsigned flags);

/** @brief Record a use of the tracked @p entry (a hit). */
void kv_evict_touch(kv_evict_t *policy, kv_evict_entry_t *entry);

/** @brief kv_evict_touch() with flags of the use (KV_EVICT_PARTIAL). */
void kv_evict_touch_flags(kv_evict_t *policy, kv_evict_entry_t *entry,
                          unsigned flags);

/**
 * @brief Set the time of the uses that follow, in any unit (a pool node
 * passes its monotonic clock in microseconds, the replay the trace's
 * milliseconds).  A time earlier than the last one set is taken as that
 * one.  "density" measures ages in this time; until the first call, and in
 * the other policies, time is the count of uses.
 */
void kv_evict_set_time(kv_evict_t *policy, uint64_t now);

/**
 * @brief Stop tracking @p entry (its object was deleted), pinned or not.
 * Its children, if any, become roots.  Not counted as an eviction.
 */
void kv_evict_remove(kv_evict_t *policy, kv_evict_entry_t *entry);

/**
 * @brief Put @p entry in the place of the tracked @p old (a newer copy of
 * the same key): it takes @p old's parent, children and key hash, is not
 * pinned, and is used (as kv_evict_touch()).  @p old is no longer tracked.
 */
void kv_evict_replace(kv_evict_t *policy, kv_evict_entry_t *old,
                      kv_evict_entry_t *entry);

/**
 * @brief Keep the tracked @p entry from being a victim until
 * kv_evict_unpin(): for objects in use.  It keeps its place in the tree and
 * its priority.  Pins do not nest: the user counts its own readers and
 * calls this on the first one.
 */
void kv_evict_pin(kv_evict_t *policy, kv_evict_entry_t *entry);

/** @brief Make a pinned @p entry a possible victim again. */
void kv_evict_unpin(kv_evict_t *policy, kv_evict_entry_t *entry);

/**
 * @brief Take the next victim out of the policy, for the user to evict.
 *
 * @return the best unpinned leaf by the policy's order; if every leaf is
 *         pinned, an unpinned non-leaf as said above (its children become
 *         roots);
 *         NULL if every tracked entry is pinned, or none is tracked.  The
 *         entry is no longer tracked; its object is the user's to free.
 */
kv_evict_entry_t *kv_evict_pop(kv_evict_t *policy);

#ifdef __cplusplus
}
#endif
#endif
