/*
 * prefix_index.c - the global prefix index (see kvcoord/prefix_index.h).
 *
 * Layout.  Every key held is one 44-byte entry in a single array, named by
 * its 32-bit position; no entry is allocated on its own:
 *
 *   entries[]  key | hash_next | ns_id | flags | parent | first_child |
 *              next_sibling | prev_sibling | loc
 *
 *   buckets[]  a power-of-two array of entry indices; each bucket chains
 *              its entries through hash_next.  It doubles when the index
 *              holds more keys than buckets (load <= 1).
 *
 * Free entries are chained through hash_next from free_entry; slots at
 * and above entries_used were never handed out.  The entry array doubles
 * when it is full (a reallocation with a copy: indices stay valid,
 * pointers into it do not, so the code keeps indices across calls that
 * may grow it).
 *
 * Tree.  Each entry links to its parent and to its children (first_child,
 * then a doubly-linked sibling list, so that unlinking a leaf is O(1) even
 * under a prefix shared by thousands of chains).  Caching or uncaching a
 * block walks only the part of its subtree whose flag changes, without a
 * stack: down through first_child, across through next_sibling, back up
 * through parent.
 *
 * A placeholder (a parent named by a stored key, not stored itself since
 * its entry was made) has no ENTRY_STORED, no parent link and no
 * location; its first store links it under its parent.  A store that
 * would link it below one of its own descendants is refused, so the links
 * never form a cycle and every walk ends.
 *
 * Invariant, after every call:
 *   CACHED(e) == (e has a location) && (e has no parent || CACHED(parent))
 * and an entry with no location and no child is not held.
 *
 * Locations.  One location sits in the entry (loc; 0 = none, as no
 * location names node 0).  A block with two or more has ENTRY_OVERFLOW
 * set and loc is the index of a loc_set_t, which owns a small array.
 *
 * Memory.  With one location per block an entry costs 44 bytes, plus 4 to
 * 8 of bucket and up to 44 of unused capacity after a doubling: about 50
 * bytes per block with 1M blocks, 63 with 100k.
 *
 * Out of memory: the large arrays (entries, buckets, location sets) are
 * grown with kv_malloc_try() before anything changes, so a store that
 * cannot grow them returns KVP_ERR_NO_MEMORY and leaves the index as it
 * was; small allocations (namespace names, location arrays) abort, as
 * kv/alloc.h says.
 */
#include <kvcoord/prefix_index.h>

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/ns_table.h>
#include <kv/util.h>

#include <assert.h>
#include <string.h>

#define NONE            UINT32_MAX  /* no entry, no set */
#define ENTRIES_MAX     (UINT32_MAX - 1u)
#define ENTRIES_MIN     1024u
#define SET_FIRST_CAP   2u

enum {
    ENTRY_LIVE     = 1 << 0, /* held (else on the free list) */
    ENTRY_STORED   = 1 << 1, /* stored since it was created: parent fixed */
    ENTRY_CACHED   = 1 << 2,
    ENTRY_OVERFLOW = 1 << 3  /* loc is a loc_set_t index */
};

typedef struct index_entry {
    /* what a lookup reads, together: 24 bytes, in one cache line mostly */
    kvp_key_t key;
    uint32_t  hash_next;     /* bucket chain, or the free list */
    uint16_t  ns_id;
    uint16_t  flags;         /* ENTRY_* */

    uint32_t  parent;        /* NONE: starts a chain, or a placeholder */
    uint32_t  first_child;
    uint32_t  next_sibling;
    uint32_t  prev_sibling;
    uint32_t  loc;           /* the location, 0, or a set (ENTRY_OVERFLOW) */
} index_entry_t;

/* The locations of a block with two or more. */
typedef struct loc_set {
    uint32_t *locs;          /* NULL while on the free list */
    uint32_t  count;         /* on the free list: the next free set */
    uint32_t  cap;
} loc_set_t;

struct kv_prefix_index {
    index_entry_t *entries;
    size_t         entries_cap;
    uint32_t       entries_used; /* high-water mark */
    uint32_t       free_entry;

    uint32_t      *buckets;
    size_t         num_buckets;  /* a power of two */

    loc_set_t     *sets;
    uint32_t       sets_cap;
    uint32_t       sets_used;    /* high-water mark */
    uint32_t       free_set;
    uint64_t       set_bytes;    /* of the sets' location arrays */

    uint64_t       num_entries;
    uint64_t       num_cached;
    uint64_t       num_locs;

    kv_ns_table_t *ns;
};

_Static_assert(sizeof(index_entry_t) == 44, "an entry stays 44 bytes");
_Static_assert(KV_INDEX_MAX_NAMESPACES <= UINT16_MAX, "ns ids fit an entry");

static uint64_t entry_hash(uint32_t ns_id, const kvp_key_t *key)
{
    uint64_t lo, hi, h;

    memcpy(&lo, key->bytes, sizeof(lo));
    memcpy(&hi, key->bytes + sizeof(lo), sizeof(hi));
    /* keys need not be random in every byte: mix both halves and the ns */
    h  = lo ^ (hi * 0x9e3779b97f4a7c15ull) ^ ((ns_id + 1ull) * 0xc2b2ae3d27d4eb4full);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static uint32_t *index_bucket(const kv_prefix_index_t *index, uint32_t ns_id,
                              const kvp_key_t *key)
{
    return &index->buckets[entry_hash(ns_id, key) & (index->num_buckets - 1)];
}

/* The entry of (ns_id, key), or NONE. */
static uint32_t index_find(const kv_prefix_index_t *index, uint32_t ns_id,
                           const kvp_key_t *key)
{
    uint32_t i;

    for (i = *index_bucket(index, ns_id, key); i != NONE;
         i = index->entries[i].hash_next) {
        const index_entry_t *entry = &index->entries[i];

        if ((entry->ns_id == ns_id) &&
            (memcmp(entry->key.bytes, key->bytes, KVP_KEY_LEN) == 0)) {
            return i;
        }
    }
    return NONE;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;

    while (p < n) {
        p <<= 1;
    }
    return p;
}

/* Replace the bucket array by one of @p num_buckets and rechain every entry. */
static kvp_status_t index_rehash(kv_prefix_index_t *index, size_t num_buckets)
{
    uint32_t *buckets = kv_malloc_try(num_buckets * sizeof(*buckets),
                                      "prefix index buckets");

    if (buckets == NULL) {
        return KVP_ERR_NO_MEMORY;
    }
    memset(buckets, 0xff, num_buckets * sizeof(*buckets)); /* all NONE */
    kv_free(index->buckets);
    index->buckets     = buckets;
    index->num_buckets = num_buckets;
    for (uint32_t i = 0; i < index->entries_used; i++) {
        index_entry_t *entry = &index->entries[i];
        uint32_t      *bucket;

        if (entry->flags & ENTRY_LIVE) {
            bucket           = index_bucket(index, entry->ns_id, &entry->key);
            entry->hash_next = *bucket;
            *bucket          = i;
        }
    }
    return KVP_OK;
}

/*
 * Make room for @p new_entries more entries and, if @p new_set, one more
 * location set, growing the arrays as needed.  Changes nothing else, so a
 * failure leaves the index as it was.
 */
static kvp_status_t index_reserve(kv_prefix_index_t *index, size_t new_entries,
                                  int new_set)
{
    size_t         cap;
    index_entry_t *entries;
    loc_set_t     *sets;
    kvp_status_t   status;

    if (index->entries_cap - index->num_entries < new_entries) {
        cap = KV_MIN(2 * index->entries_cap, (size_t)ENTRIES_MAX);
        if (cap - index->num_entries < new_entries) {
            kv_log_warn("prefix index: %u keys, the most it holds", ENTRIES_MAX);
            return KVP_ERR_NO_MEMORY;
        }
        entries = kv_malloc_try(cap * sizeof(*entries), "prefix index entries");
        if (entries == NULL) {
            return KVP_ERR_NO_MEMORY;
        }
        memcpy(entries, index->entries, index->entries_used * sizeof(*entries));
        kv_free(index->entries);
        index->entries     = entries;
        index->entries_cap = cap;
    }
    if (index->num_entries + new_entries > index->num_buckets) {
        status = index_rehash(index, 2 * index->num_buckets);
        if (status != KVP_OK) {
            return status;
        }
    }
    if (new_set && (index->free_set == NONE) &&
        (index->sets_used == index->sets_cap)) {
        if (index->sets_cap >= NONE / 2) {
            kv_log_warn("prefix index: %u blocks with several locations, the most "
                        "it holds", index->sets_cap);
            return KVP_ERR_NO_MEMORY;
        }
        cap  = KV_MAX(2 * (size_t)index->sets_cap, (size_t)64);
        sets = kv_malloc_try(cap * sizeof(*sets), "prefix index location sets");
        if (sets == NULL) {
            return KVP_ERR_NO_MEMORY;
        }
        if (index->sets_used > 0) {
            memcpy(sets, index->sets, index->sets_used * sizeof(*sets));
        }
        kv_free(index->sets);
        index->sets     = sets;
        index->sets_cap = (uint32_t)cap;
    }
    return KVP_OK;
}

/* A new entry for (ns_id, key): held, hashed, no parent, no location. */
static uint32_t entry_new(kv_prefix_index_t *index, uint32_t ns_id,
                          const kvp_key_t *key)
{
    index_entry_t *entry;
    uint32_t      *bucket, i;

    assert(index->num_entries < index->entries_cap);
    if (index->free_entry != NONE) {
        i                 = index->free_entry;
        index->free_entry = index->entries[i].hash_next;
    } else {
        i = index->entries_used++;
    }
    entry               = &index->entries[i];
    entry->key          = *key;
    entry->parent       = NONE;
    entry->first_child  = NONE;
    entry->next_sibling = NONE;
    entry->prev_sibling = NONE;
    entry->loc          = 0;
    entry->ns_id        = (uint16_t)ns_id;
    entry->flags        = ENTRY_LIVE;
    bucket              = index_bucket(index, ns_id, key);
    entry->hash_next    = *bucket;
    *bucket             = i;
    index->num_entries++;
    return i;
}

static void child_link(kv_prefix_index_t *index, uint32_t parent, uint32_t child)
{
    index_entry_t *p = &index->entries[parent];
    index_entry_t *c = &index->entries[child];

    c->parent       = parent;
    c->prev_sibling = NONE;
    c->next_sibling = p->first_child;
    if (p->first_child != NONE) {
        index->entries[p->first_child].prev_sibling = child;
    }
    p->first_child = child;
}

static void child_unlink(kv_prefix_index_t *index, uint32_t child)
{
    index_entry_t *c = &index->entries[child];

    if (c->prev_sibling != NONE) {
        index->entries[c->prev_sibling].next_sibling = c->next_sibling;
    } else {
        index->entries[c->parent].first_child = c->next_sibling;
    }
    if (c->next_sibling != NONE) {
        index->entries[c->next_sibling].prev_sibling = c->prev_sibling;
    }
    c->parent = c->next_sibling = c->prev_sibling = NONE;
}

static uint32_t entry_loc_count(const kv_prefix_index_t *index,
                                const index_entry_t *entry)
{
    if (entry->flags & ENTRY_OVERFLOW) {
        return index->sets[entry->loc].count;
    }
    return entry->loc != 0;
}

/* The locations of @p entry, @p *count_p of them. */
static const uint32_t *entry_locs(const kv_prefix_index_t *index,
                                  const index_entry_t *entry, uint32_t *count_p)
{
    if (entry->flags & ENTRY_OVERFLOW) {
        *count_p = index->sets[entry->loc].count;
        return index->sets[entry->loc].locs;
    }
    *count_p = entry->loc != 0;
    return &entry->loc;
}

static int entry_has_loc(const kv_prefix_index_t *index,
                         const index_entry_t *entry, uint32_t loc)
{
    uint32_t        count;
    const uint32_t *locs = entry_locs(index, entry, &count);

    for (uint32_t j = 0; j < count; j++) {
        if (locs[j] == loc) {
            return 1;
        }
    }
    return 0;
}

/* Add @p loc, which @p entry does not hold; a set must be reserved. */
static void entry_loc_add(kv_prefix_index_t *index, index_entry_t *entry,
                          uint32_t loc)
{
    loc_set_t *set;
    uint32_t   s;

    if (entry->flags & ENTRY_OVERFLOW) {
        set = &index->sets[entry->loc];
        if (set->count == set->cap) {
            assert(set->cap <= UINT32_MAX / 2);
            set->locs = kv_realloc(set->locs, 2 * (size_t)set->cap * sizeof(uint32_t),
                                   "block locations");
            index->set_bytes += (uint64_t)set->cap * sizeof(uint32_t);
            set->cap *= 2;
        }
        set->locs[set->count++] = loc;
    } else if (entry->loc == 0) {
        entry->loc = loc;
    } else {
        if (index->free_set != NONE) {
            s               = index->free_set;
            index->free_set = index->sets[s].count;
        } else {
            assert(index->sets_used < index->sets_cap);
            s = index->sets_used++;
        }
        set          = &index->sets[s];
        set->locs    = kv_malloc(SET_FIRST_CAP * sizeof(uint32_t), "block locations");
        set->cap     = SET_FIRST_CAP;
        set->count   = 2;
        set->locs[0] = entry->loc;
        set->locs[1] = loc;
        index->set_bytes += SET_FIRST_CAP * sizeof(uint32_t);
        entry->loc    = s;
        entry->flags |= ENTRY_OVERFLOW;
    }
    index->num_locs++;
}

/* Back to one location in the entry when a set holds fewer than two. */
static void entry_loc_compact(kv_prefix_index_t *index, index_entry_t *entry)
{
    uint32_t   s   = entry->loc;
    loc_set_t *set = &index->sets[s];

    if (set->count >= 2) {
        return;
    }
    entry->loc    = (set->count == 1) ? set->locs[0] : 0;
    entry->flags &= (uint16_t)~ENTRY_OVERFLOW;
    index->set_bytes -= (uint64_t)set->cap * sizeof(uint32_t);
    kv_free(set->locs);
    set->locs       = NULL;
    set->cap        = 0;
    set->count      = index->free_set;
    index->free_set = s;
}

/*
 * Drop the location @p value of @p entry or, if @p by_node, every location
 * on node @p value.  @return how many were dropped.
 */
static uint32_t entry_loc_drop(kv_prefix_index_t *index, index_entry_t *entry,
                               int by_node, uint32_t value)
{
    uint32_t   dropped = 0;
    loc_set_t *set;

#define LOC_MATCHES(_loc) (by_node ? (KV_LOC_NODE(_loc) == value) : ((_loc) == value))
    if (!(entry->flags & ENTRY_OVERFLOW)) {
        if ((entry->loc != 0) && LOC_MATCHES(entry->loc)) {
            entry->loc = 0;
            dropped    = 1;
        }
    } else {
        set = &index->sets[entry->loc];
        for (uint32_t j = set->count; j-- > 0;) {
            if (LOC_MATCHES(set->locs[j])) {
                set->locs[j] = set->locs[--set->count];
                dropped++;
            }
        }
        entry_loc_compact(index, entry);
    }
#undef LOC_MATCHES
    index->num_locs -= dropped;
    return dropped;
}

static void entry_set_cached(kv_prefix_index_t *index, index_entry_t *entry,
                             int cached)
{
    if (cached) {
        entry->flags |= ENTRY_CACHED;
        index->num_cached++;
    } else {
        entry->flags &= (uint16_t)~ENTRY_CACHED;
        index->num_cached--;
    }
}

/*
 * The first of @p i and its next siblings whose cached flag must change
 * to @p cached below a parent whose flag just did: on caching, those with
 * a location; on uncaching, the cached ones.
 */
static uint32_t sibling_to_flip(const kv_prefix_index_t *index, uint32_t i,
                                int cached)
{
    for (; i != NONE; i = index->entries[i].next_sibling) {
        const index_entry_t *entry = &index->entries[i];

        if (cached ? (entry_loc_count(index, entry) > 0 &&
                      !(entry->flags & ENTRY_CACHED))
                   : ((entry->flags & ENTRY_CACHED) != 0)) {
            return i;
        }
    }
    return NONE;
}

/*
 * Set @p root's cached flag to @p cached and restore the invariant below
 * it, visiting only the entries whose flag changes (and their children),
 * depth first without a stack.
 */
static void subtree_set_cached(kv_prefix_index_t *index, uint32_t root, int cached)
{
    uint32_t cur = root, next;

    entry_set_cached(index, &index->entries[root], cached);
    for (;;) {
        next = sibling_to_flip(index, index->entries[cur].first_child, cached);
        /* cur's subtree done: on to the next sibling of cur or of an ancestor */
        while (next == NONE) {
            if (cur == root) {
                return;
            }
            next = sibling_to_flip(index, index->entries[cur].next_sibling, cached);
            if (next == NONE) {
                cur = index->entries[cur].parent;
            }
        }
        entry_set_cached(index, &index->entries[next], cached);
        cur = next;
    }
}

/*
 * Forget @p i and then its ancestors while they hold no location and have
 * no child (an evicted leaf, or placeholders left without children).
 */
static void entry_forget(kv_prefix_index_t *index, uint32_t i)
{
    index_entry_t *entry;
    uint32_t      *link, parent;

    while (i != NONE) {
        entry = &index->entries[i];
        if ((entry_loc_count(index, entry) > 0) || (entry->first_child != NONE)) {
            return;
        }
        assert(!(entry->flags & ENTRY_CACHED));
        parent = entry->parent;
        if (parent != NONE) {
            child_unlink(index, i);
        }
        for (link = index_bucket(index, entry->ns_id, &entry->key); *link != i;
             link = &index->entries[*link].hash_next) {
            assert(*link != NONE);
        }
        *link             = entry->hash_next;
        entry->flags      = 0;
        entry->hash_next  = index->free_entry;
        index->free_entry = i;
        index->num_entries--;
        i = parent;
    }
}

/* @p i lost locations; if it has none left, uncache its subtree and forget it. */
static void entry_after_drop(kv_prefix_index_t *index, uint32_t i)
{
    index_entry_t *entry = &index->entries[i];

    if (entry_loc_count(index, entry) > 0) {
        return;
    }
    if (entry->flags & ENTRY_CACHED) {
        subtree_set_cached(index, i, 0);
    }
    entry_forget(index, i);
}

kvp_status_t kv_index_create(size_t expected_blocks, kv_prefix_index_t **index_p)
{
    kv_prefix_index_t *index;
    size_t             cap;
    kvp_status_t       status;

    if (index_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }

    cap   = KV_MIN(KV_MAX(expected_blocks, (size_t)ENTRIES_MIN), (size_t)ENTRIES_MAX);
    index = kv_calloc(1, sizeof(*index), "prefix index");
    index->free_entry = NONE;
    index->free_set   = NONE;
    index->entries    = kv_malloc_try(cap * sizeof(*index->entries),
                                      "prefix index entries");
    if (index->entries == NULL) {
        status = KVP_ERR_NO_MEMORY;
        goto err_free_index;
    }
    index->entries_cap = cap;
    status = index_rehash(index, pow2_at_least(cap));
    if (status != KVP_OK) {
        goto err_free_entries;
    }
    index->ns = kv_ns_table_create(KV_INDEX_MAX_NAMESPACES, "prefix index");
    *index_p = index;
    return KVP_OK;

err_free_entries:
    kv_free(index->entries);
err_free_index:
    kv_free(index);
    return status;
}

void kv_index_destroy(kv_prefix_index_t *index)
{
    if (index == NULL) {
        return;
    }
    for (uint32_t s = 0; s < index->sets_used; s++) {
        kv_free(index->sets[s].locs); /* NULL for free sets */
    }
    kv_ns_table_destroy(index->ns);
    kv_free(index->sets);
    kv_free(index->buckets);
    kv_free(index->entries);
    kv_free(index);
}

kvp_status_t kv_index_ns_id(kv_prefix_index_t *index, const void *ns, size_t len,
                            int create, uint32_t *id_p)
{
    if (index == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    return kv_ns_table_id(index->ns, ns, len, create, id_p);
}

/* Non-zero if @p ancestor is @p i or one of its ancestors. */
static int entry_is_ancestor(const kv_prefix_index_t *index, uint32_t ancestor,
                             uint32_t i)
{
    for (; i != NONE; i = index->entries[i].parent) {
        if (i == ancestor) {
            return 1;
        }
    }
    return 0;
}

kvp_status_t kv_index_store(kv_prefix_index_t *index, uint32_t ns_id,
                            const kvp_key_t *key, const kvp_key_t *parent,
                            uint32_t loc)
{
    uint32_t       i, p = NONE, node = KV_LOC_NODE(loc);
    size_t         new_entries = 0;
    int            new_set = 0, set_parent = 1;
    index_entry_t *entry;
    kvp_status_t   status;

    if ((index == NULL) || (key == NULL) || (ns_id >= kv_ns_table_count(index->ns)) ||
        (node == 0) || (node > KV_COORD_NODE_MAX) ||
        ((parent != NULL) && (memcmp(parent->bytes, key->bytes, KVP_KEY_LEN) == 0))) {
        return KVP_ERR_INVALID_PARAM;
    }

    i = index_find(index, ns_id, key);
    if (i == NONE) {
        new_entries++;
    } else {
        entry = &index->entries[i];
        if (entry_has_loc(index, entry, loc)) {
            return KVP_OK;
        }
        new_set    = !(entry->flags & ENTRY_OVERFLOW) && (entry->loc != 0);
        set_parent = !(entry->flags & ENTRY_STORED);
    }
    if (set_parent && (parent != NULL)) {
        p = index_find(index, ns_id, parent);
        if (p == NONE) {
            new_entries++;
        } else if ((i != NONE) && entry_is_ancestor(index, i, p)) {
            return KVP_ERR_INVALID_PARAM; /* a placeholder below its own child */
        }
    }
    status = index_reserve(index, new_entries, new_set);
    if (status != KVP_OK) {
        return status;
    }

    if (i == NONE) {
        i = entry_new(index, ns_id, key);
    }
    if (set_parent) {
        if (parent != NULL) {
            if (p == NONE) {
                p = entry_new(index, ns_id, parent);
            }
            child_link(index, p, i);
        }
        index->entries[i].flags |= ENTRY_STORED;
    }
    entry = &index->entries[i];
    entry_loc_add(index, entry, loc);
    if ((entry_loc_count(index, entry) == 1) &&
        ((entry->parent == NONE) ||
         (index->entries[entry->parent].flags & ENTRY_CACHED))) {
        subtree_set_cached(index, i, 1);
    }
    return KVP_OK;
}

int kv_index_remove(kv_prefix_index_t *index, uint32_t ns_id,
                    const kvp_key_t *key, uint32_t loc)
{
    uint32_t i;

    if ((index == NULL) || (key == NULL) || (ns_id >= kv_ns_table_count(index->ns))) {
        return 0;
    }
    i = index_find(index, ns_id, key);
    if ((i == NONE) || (entry_loc_drop(index, &index->entries[i], 0, loc) == 0)) {
        return 0;
    }
    entry_after_drop(index, i);
    return 1;
}

size_t kv_index_remove_node(kv_prefix_index_t *index, uint32_t node)
{
    size_t dropped = 0, n;

    if ((index == NULL) || (node == 0)) {
        return 0;
    }
    /*
     * Entries forgotten on the way hold no location, and are either behind
     * us or skipped as free; nothing is allocated, so no slot is reused.
     */
    for (uint32_t i = 0; i < index->entries_used; i++) {
        if (!(index->entries[i].flags & ENTRY_LIVE)) {
            continue;
        }
        n = entry_loc_drop(index, &index->entries[i], 1, node);
        if (n > 0) {
            dropped += n;
            entry_after_drop(index, i);
        }
    }
    return dropped;
}

static int index_cached(const kv_prefix_index_t *index, uint32_t ns_id,
                        const kvp_key_t *key)
{
    uint32_t i = index_find(index, ns_id, key);

    return (i != NONE) && (index->entries[i].flags & ENTRY_CACHED);
}

size_t kv_index_match(const kv_prefix_index_t *index, uint32_t ns_id,
                      const kvp_key_t *keys, size_t count)
{
    size_t lo = 0, hi = count, mid;

    if ((index == NULL) || (keys == NULL) || (ns_id >= kv_ns_table_count(index->ns)) ||
        (count > KV_INDEX_MAX_CHAIN)) {
        return 0;
    }
    /* keys[0..lo) are cached, keys[hi..count) are not */
    while (lo < hi) {
        mid = lo + (hi - lo + 1) / 2;
        if (index_cached(index, ns_id, &keys[mid - 1])) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

size_t kv_index_locations(const kv_prefix_index_t *index, uint32_t ns_id,
                          const kvp_key_t *key, uint32_t *locs, size_t max)
{
    uint32_t        i, count;
    const uint32_t *held;

    if ((index == NULL) || (key == NULL) || (ns_id >= kv_ns_table_count(index->ns))) {
        return 0;
    }
    i = index_find(index, ns_id, key);
    if (i == NONE) {
        return 0;
    }
    held = entry_locs(index, &index->entries[i], &count);
    if (locs != NULL) {
        memcpy(locs, held, KV_MIN((size_t)count, max) * sizeof(*locs));
    }
    return count;
}

size_t kv_index_chain_locations(const kv_prefix_index_t *index, uint32_t ns_id,
                                const kvp_key_t *keys, size_t count, uint32_t *counts,
                                uint32_t *locs, size_t max)
{
    uint32_t e = NONE;
    size_t   total = 0;

    if ((counts == NULL) || (count > KV_INDEX_MAX_CHAIN)) {
        return 0;
    }
    if ((index == NULL) || (keys == NULL) || (ns_id >= kv_ns_table_count(index->ns))) {
        memset(counts, 0, count * sizeof(*counts));
        return 0;
    }
    /* last key first: each entry's parent is most likely the key before */
    for (size_t i = count; i-- > 0;) {
        uint32_t p = e != NONE ? index->entries[e].parent : NONE;

        if ((p != NONE) && (index->entries[p].ns_id == ns_id) &&
            (memcmp(index->entries[p].key.bytes, keys[i].bytes, KVP_KEY_LEN) == 0)) {
            e = p;
        } else {
            e = index_find(index, ns_id, &keys[i]);
        }
        counts[i] = e; /* the entry, until the pass below */
    }
    for (size_t i = 0; i < count; i++) {
        const uint32_t *held = NULL;
        uint32_t        n    = 0;

        if (counts[i] != NONE) {
            held = entry_locs(index, &index->entries[counts[i]], &n);
        }
        if ((n > 0) && (locs != NULL) && (n <= max) && (total <= max - n)) {
            memcpy(locs + total, held, n * sizeof(*locs));
        }
        counts[i] = n;
        total += n;
    }
    return total;
}

int kv_index_cached(const kv_prefix_index_t *index, uint32_t ns_id,
                    const kvp_key_t *key)
{
    if ((index == NULL) || (key == NULL) || (ns_id >= kv_ns_table_count(index->ns))) {
        return 0;
    }
    return index_cached(index, ns_id, key);
}

void kv_index_foreach_node(const kv_prefix_index_t *index, uint32_t node,
                           int (*fn)(uint32_t ns_id, const kvp_key_t *key,
                                     const kvp_key_t *parent, uint32_t loc,
                                     void *arg),
                           void *arg)
{
    if ((index == NULL) || (fn == NULL) || (node == 0)) {
        return;
    }
    for (uint32_t i = 0; i < index->entries_used; i++) {
        const index_entry_t *entry = &index->entries[i];
        const kvp_key_t     *parent;
        const uint32_t      *locs;
        uint32_t             count;

        if (!(entry->flags & ENTRY_LIVE)) {
            continue;
        }
        locs   = entry_locs(index, entry, &count);
        parent = (entry->parent != NONE) ? &index->entries[entry->parent].key : NULL;
        for (uint32_t j = 0; j < count; j++) {
            if ((KV_LOC_NODE(locs[j]) == node) &&
                (fn(entry->ns_id, &entry->key, parent, locs[j], arg) != 0)) {
                return;
            }
        }
    }
}

void kv_index_stats(const kv_prefix_index_t *index, kv_index_stats_t *stats_p)
{
    if (stats_p == NULL) {
        return;
    }
    memset(stats_p, 0, sizeof(*stats_p));
    if (index == NULL) {
        return;
    }
    stats_p->entries   = index->num_entries;
    stats_p->cached    = index->num_cached;
    stats_p->locations = index->num_locs;
    stats_p->bytes     = sizeof(*index) +
                         index->entries_cap * sizeof(*index->entries) +
                         index->num_buckets * sizeof(*index->buckets) +
                         (uint64_t)index->sets_cap * sizeof(*index->sets) +
                         index->set_bytes + kv_ns_table_bytes(index->ns);
}

size_t kv_index_node_prefixes(const uint32_t *counts, const uint32_t *locs, size_t count,
                              kv_index_node_run_t *runs, size_t max)
{
    size_t n = 0;

    for (size_t j = 0; count > 0 && j < counts[0]; j++) {
        uint32_t node = KV_LOC_NODE(locs[j]);
        size_t   k    = 0;

        while (k < n && runs[k].node != node) {
            k++;
        }
        if (k == n && n < max) {
            runs[n].node     = node;
            runs[n++].length = 1;
        }
    }
    locs += count > 0 ? counts[0] : 0;
    for (size_t i = 1; i < count; locs += counts[i++]) {
        for (size_t k = 0; k < n; k++) {
            if (runs[k].length != i) {
                continue; /* its run ended before block i */
            }
            for (size_t j = 0; j < counts[i]; j++) {
                if (KV_LOC_NODE(locs[j]) == runs[k].node) {
                    runs[k].length++;
                    break;
                }
            }
        }
    }
    return n;
}
