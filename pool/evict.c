/*
 * evict.c - eviction policies over a prefix tree of entries (see evict.h).
 *
 * Every policy here is the same machine with a different priority:
 *
 *  - the tree: each entry links its parent, its first child and its
 *    siblings (a doubly-linked list under the parent), so that removing an
 *    entry can unlink it and orphan its children in O(children);
 *
 *  - one binary min-heap of every unpinned entry, ordered by
 *        (rank, prio, stamp)
 *    where rank is 0 for a leaf, 1 for an entry whose children are all
 *    pinned, 2 for one with an unpinned child: leaves go first, and when
 *    every leaf is pinned, the parents of pinned entries go before their
 *    own ancestors, so what stays cached is still as long a prefix as can
 *    be.  Within a rank, the lower priority, then the older use goes first.
 *    The top is the victim.  An entry's key changes when it is used (prio,
 *    stamp) and when its rank does (a child linked, unlinked, pinned or
 *    unpinned); each change re-sifts that one entry.  A pinned entry is out
 *    of the heap (pos == SIZE_MAX) but stays in the tree, so its parent
 *    still has a child.
 *
 *  - a priority function called at each use (insert, touch, replace):
 *      lru:   0, so the order is the stamp: least recently used first;
 *      lfuda: L + f, with f the key's estimated recent use count (the
 *             sketch below) and L ("age") the priority of the last popped
 *             victim, which only grows: an entry not used for a while
 *             falls below newly used ones however popular it was.
 *
 * The frequency sketch (lfuda only) is TinyLFU's (Einziger et al., "TinyLFU:
 * a highly efficient cache admission policy", 2017): a count-min sketch of
 * SKETCH_ROWS rows of `width` 8-bit counters, each key hashed to one counter
 * per row; the estimate is the smallest of its counters, and an increment
 * raises only the counters equal to that smallest one (conservative
 * update), saturating at SKETCH_MAX.  The sketch is sized for
 * width / SKETCH_COLUMNS >= tracked entries; after SKETCH_SAMPLE increments
 * per entry it is sized for (the sample window) every counter is halved, so
 * counts describe recent uses, also of keys evicted meanwhile.  A window
 * may name up to SKETCH_SAMPLE different keys per entry, hence at least
 * SKETCH_COLUMNS columns per entry: with fewer, colliding keys inflate each
 * other's counts.  The width doubles as the tracked entries grow; that
 * copies each counter to its two new columns, which keeps every estimate.
 */
#include <kvstore/evict.h>

#include <kv/alloc.h>

#include <assert.h>
#include <string.h>

#define NOT_IN_HEAP        SIZE_MAX
#define SKETCH_ROWS        4
#define SKETCH_MAX         15
#define SKETCH_SAMPLE      10 /* uses per entry between two halvings */
#define SKETCH_COLUMNS     16 /* columns per entry, >= SKETCH_SAMPLE */
#define SKETCH_MIN_COLUMNS ((size_t)1 << 14)

_Static_assert(SKETCH_COLUMNS >= SKETCH_SAMPLE, "a column per key of a window");

typedef struct evict_ops {
    const char *name;
    int         uses_sketch;
    /* the priority of @entry at a use (its stamp is already set) */
    uint64_t  (*prio)(kv_evict_t *policy, kv_evict_entry_t *entry);
} evict_ops_t;

struct kv_evict {
    const evict_ops_t  *ops;
    kv_evict_entry_t  **heap;
    size_t              heap_len;
    size_t              heap_cap;
    size_t              count;     /* tracked, pinned included */
    uint64_t            clock;     /* uses so far */
    uint64_t            age;       /* priority of the last victim */

    uint8_t            *sketch;    /* [SKETCH_ROWS][width] */
    size_t              width;     /* a power of two */
    uint64_t            additions; /* increments since the last halving */
};

/* Odd multipliers that spread a key's hash into one column per row. */
static const uint64_t sketch_seeds[SKETCH_ROWS] = {
    0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull,
    0x94d049bb133111ebull, 0xd6e8feb86659fd93ull,
};

static size_t sketch_column(const kv_evict_t *policy, uint64_t hash, int row)
{
    return (size_t)(((hash ^ (hash >> 29)) * sketch_seeds[row]) >> 32) &
           (policy->width - 1);
}

static void sketch_grow(kv_evict_t *policy)
{
    size_t   old_width = policy->width;
    uint8_t *old       = policy->sketch;

    policy->width  = 2 * old_width;
    policy->sketch = kv_malloc(SKETCH_ROWS * policy->width, "evict sketch");
    for (int row = 0; row < SKETCH_ROWS; row++) {
        uint8_t *dst = policy->sketch + (size_t)row * policy->width;
        memcpy(dst, old + (size_t)row * old_width, old_width);
        memcpy(dst + old_width, old + (size_t)row * old_width, old_width);
    }
    kv_free(old);
}

/* Count a use of @hash; return its estimated count, 1..SKETCH_MAX. */
static uint64_t sketch_add(kv_evict_t *policy, uint64_t hash)
{
    uint8_t *cell[SKETCH_ROWS];
    uint8_t  min = UINT8_MAX;

    while (policy->count > policy->width / SKETCH_COLUMNS) {
        sketch_grow(policy);
    }
    for (int row = 0; row < SKETCH_ROWS; row++) {
        cell[row] = &policy->sketch[(size_t)row * policy->width +
                                    sketch_column(policy, hash, row)];
        if (*cell[row] < min) {
            min = *cell[row];
        }
    }
    if (min < SKETCH_MAX) {
        for (int row = 0; row < SKETCH_ROWS; row++) {
            if (*cell[row] == min) {
                (*cell[row])++;
            }
        }
        min++;
    }
    if (++policy->additions >= SKETCH_SAMPLE * (uint64_t)(policy->width / SKETCH_COLUMNS)) {
        for (size_t i = 0; i < SKETCH_ROWS * policy->width; i++) {
            policy->sketch[i] >>= 1;
        }
        policy->additions = 0;
    }
    return min;
}

static uint64_t lru_prio(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    (void)policy;
    (void)entry;
    return 0;
}

static uint64_t lfuda_prio(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    return policy->age + sketch_add(policy, entry->hash);
}

static const evict_ops_t evict_policies[] = {
    {"lru", 0, lru_prio},
    {"lfuda", 1, lfuda_prio},
};

#define NUM_POLICIES (sizeof(evict_policies) / sizeof(evict_policies[0]))

static const char *const evict_names[NUM_POLICIES + 1] = {"lru", "lfuda", NULL};

_Static_assert(sizeof(evict_names) / sizeof(evict_names[0]) == NUM_POLICIES + 1,
               "one name per policy");

/* ---- the heap ---------------------------------------------------------- */

static int entry_rank(const kv_evict_entry_t *entry)
{
    if (entry->child == NULL) {
        return 0;
    }
    return entry->free_children == 0 ? 1 : 2;
}

/* a goes before b */
static int entry_before(const kv_evict_entry_t *a, const kv_evict_entry_t *b)
{
    int a_rank = entry_rank(a), b_rank = entry_rank(b);

    if (a_rank != b_rank) {
        return a_rank < b_rank;
    }
    if (a->prio != b->prio) {
        return a->prio < b->prio;
    }
    return a->stamp < b->stamp;
}

static void heap_set(kv_evict_t *policy, size_t pos, kv_evict_entry_t *entry)
{
    policy->heap[pos] = entry;
    entry->pos        = pos;
}

static void heap_up(kv_evict_t *policy, size_t pos)
{
    kv_evict_entry_t *entry = policy->heap[pos];

    while (pos > 0) {
        size_t up = (pos - 1) / 2;
        if (!entry_before(entry, policy->heap[up])) {
            break;
        }
        heap_set(policy, pos, policy->heap[up]);
        pos = up;
    }
    heap_set(policy, pos, entry);
}

static void heap_down(kv_evict_t *policy, size_t pos)
{
    kv_evict_entry_t *entry = policy->heap[pos];
    size_t            len   = policy->heap_len;

    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= len) {
            break;
        }
        if (child + 1 < len &&
            entry_before(policy->heap[child + 1], policy->heap[child])) {
            child++;
        }
        if (!entry_before(policy->heap[child], entry)) {
            break;
        }
        heap_set(policy, pos, policy->heap[child]);
        pos = child;
    }
    heap_set(policy, pos, entry);
}

/* Restore the heap after @entry's key changed either way. */
static void heap_fix(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    if (entry->pos == NOT_IN_HEAP) {
        return;
    }
    heap_up(policy, entry->pos);
    heap_down(policy, entry->pos);
}

static void heap_push(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    if (policy->heap_len == policy->heap_cap) {
        policy->heap_cap = policy->heap_cap ? 2 * policy->heap_cap : 64;
        policy->heap     = kv_realloc(policy->heap,
                                      policy->heap_cap * sizeof(*policy->heap),
                                      "evict heap");
    }
    heap_set(policy, policy->heap_len++, entry);
    heap_up(policy, entry->pos);
}

static void heap_delete(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    size_t            pos  = entry->pos;
    kv_evict_entry_t *last = policy->heap[--policy->heap_len];

    entry->pos = NOT_IN_HEAP;
    if (last == entry) {
        return;
    }
    heap_set(policy, pos, last);
    heap_fix(policy, last);
}

/* ---- the tree ---------------------------------------------------------- */

/* One more (@delta 1) or one fewer (-1) unpinned child of @parent. */
static void tree_count_free(kv_evict_t *policy, kv_evict_entry_t *parent, int delta)
{
    if (parent == NULL) {
        return;
    }
    parent->free_children = (uint32_t)((int64_t)parent->free_children + delta);
    heap_fix(policy, parent); /* its rank may have changed */
}

/* Link an unpinned @entry under @parent (or make it a root). */
static void tree_link(kv_evict_t *policy, kv_evict_entry_t *entry,
                      kv_evict_entry_t *parent)
{
    entry->parent = parent;
    entry->prev   = NULL;
    entry->next   = NULL;
    if (parent == NULL) {
        return;
    }
    assert(parent->free_children < UINT32_MAX);
    entry->next = parent->child;
    if (parent->child != NULL) {
        parent->child->prev = entry;
    }
    parent->child = entry;
    tree_count_free(policy, parent, 1);
}

/* Unlink @entry from its parent; @was_free: it was not pinned. */
static void tree_unlink(kv_evict_t *policy, kv_evict_entry_t *entry, int was_free)
{
    kv_evict_entry_t *parent = entry->parent;

    if (parent == NULL) {
        return;
    }
    if (entry->prev != NULL) {
        entry->prev->next = entry->next;
    } else {
        parent->child = entry->next;
    }
    if (entry->next != NULL) {
        entry->next->prev = entry->prev;
    }
    entry->parent = entry->prev = entry->next = NULL;
    if (was_free) {
        tree_count_free(policy, parent, -1);
    } else {
        heap_fix(policy, parent); /* a pinned child left: maybe a leaf now */
    }
}

/* Make every child of @entry a root (no parent, no siblings). */
static void tree_orphan_children(kv_evict_entry_t *entry)
{
    kv_evict_entry_t *child = entry->child, *next;

    for (; child != NULL; child = next) {
        next         = child->next;
        child->parent = child->prev = child->next = NULL;
    }
    entry->child = NULL;
}

/* ---- the calls --------------------------------------------------------- */

const char *const *kv_evict_policy_names(void)
{
    return evict_names;
}

static const evict_ops_t *evict_ops_find(const char *name)
{
    for (size_t i = 0; i < NUM_POLICIES; i++) {
        if (strcmp(evict_policies[i].name, name) == 0) {
            return &evict_policies[i];
        }
    }
    return NULL;
}

int kv_evict_policy_known(const char *name)
{
    return (name != NULL) && (evict_ops_find(name) != NULL);
}

kvp_status_t kv_evict_create(const char *name, kv_evict_t **policy_p)
{
    const evict_ops_t *ops;
    kv_evict_t        *policy;

    if (policy_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    ops = evict_ops_find(name != NULL ? name : KV_EVICT_DEFAULT_POLICY);
    if (ops == NULL) {
        return KVP_ERR_NOT_FOUND;
    }
    policy      = kv_calloc(1, sizeof(*policy), "evict policy");
    policy->ops = ops;
    if (ops->uses_sketch) {
        policy->width  = SKETCH_MIN_COLUMNS;
        policy->sketch = kv_calloc(SKETCH_ROWS, policy->width, "evict sketch");
    }
    *policy_p = policy;
    return KVP_OK;
}

void kv_evict_destroy(kv_evict_t *policy)
{
    if (policy == NULL) {
        return;
    }
    kv_free(policy->sketch);
    kv_free(policy->heap);
    kv_free(policy);
}

const char *kv_evict_name(const kv_evict_t *policy)
{
    return policy->ops->name;
}

size_t kv_evict_count(const kv_evict_t *policy)
{
    return policy->count;
}

/* A use of a tracked @entry: new stamp and priority. */
static void evict_use(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    entry->stamp = ++policy->clock;
    entry->prio  = policy->ops->prio(policy, entry);
}

void kv_evict_insert(kv_evict_t *policy, kv_evict_entry_t *entry,
                     kv_evict_entry_t *parent, uint64_t key_hash)
{
    assert(parent != entry);
    entry->child         = NULL;
    entry->free_children = 0;
    entry->hash          = key_hash;
    entry->pos           = NOT_IN_HEAP;
    policy->count++;
    evict_use(policy, entry);
    heap_push(policy, entry);
    tree_link(policy, entry, parent);
}

void kv_evict_touch(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    evict_use(policy, entry);
    heap_fix(policy, entry);
}

void kv_evict_remove(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    int was_free = entry->pos != NOT_IN_HEAP;

    assert(policy->count > 0);
    if (was_free) {
        heap_delete(policy, entry);
    }
    tree_unlink(policy, entry, was_free);
    tree_orphan_children(entry);
    policy->count--;
}

void kv_evict_replace(kv_evict_t *policy, kv_evict_entry_t *old,
                      kv_evict_entry_t *entry)
{
    /* take old's place among its siblings, and its children */
    *entry = *old;
    if (entry->prev != NULL) {
        entry->prev->next = entry;
    } else if (entry->parent != NULL) {
        entry->parent->child = entry;
    }
    if (entry->next != NULL) {
        entry->next->prev = entry;
    }
    for (kv_evict_entry_t *child = entry->child; child != NULL; child = child->next) {
        child->parent = entry;
    }
    old->parent = old->child = old->next = old->prev = NULL;

    /* and its heap slot, or a new one if old was pinned */
    old->pos = NOT_IN_HEAP;
    if (entry->pos != NOT_IN_HEAP) {
        policy->heap[entry->pos] = entry;
    } else {
        heap_push(policy, entry);
        tree_count_free(policy, entry->parent, 1);
    }
    kv_evict_touch(policy, entry);
}

void kv_evict_pin(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    assert(entry->pos != NOT_IN_HEAP);
    heap_delete(policy, entry);
    tree_count_free(policy, entry->parent, -1);
}

void kv_evict_unpin(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    assert(entry->pos == NOT_IN_HEAP);
    heap_push(policy, entry);
    tree_count_free(policy, entry->parent, 1);
}

kv_evict_entry_t *kv_evict_pop(kv_evict_t *policy)
{
    kv_evict_entry_t *victim;

    if (policy->heap_len == 0) {
        return NULL;
    }
    victim = policy->heap[0];
    if (victim->prio > policy->age) {
        policy->age = victim->prio; /* never back: a parent that became a leaf
                                       may hold an older, lower priority */
    }
    kv_evict_remove(policy, victim);
    return victim;
}
