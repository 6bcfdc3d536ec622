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
 *      density: now + s(c) * R (below).
 *
 * "density" ranks by time like LRU, but shifts each entry by what its class
 * is worth.  The class c of a use is the key's sketch count capped at
 * DENSITY_CLASSES - 1, or 0 for a use flagged KV_EVICT_PARTIAL.  For each
 * class the policy keeps how many tracked entries are in it (occ), the
 * integral of that over time (occ_time: entry-time spent in the cache) and
 * how many hits entries of the class got (hits): hits / occ_time is the
 * class's hit density, hits per unit of cache space and time, the quantity
 * an eviction order should sort by (Beckmann et al., "LHD: improving cache
 * hit rate by maximizing hit density", NSDI 2018).  Every DENSITY_REFRESH
 * uses, s(c) = log2(density(c) / density(1)) clamped to +-DENSITY_SHIFT_MAX
 * (a class never hit gets -DENSITY_SHIFT_MAX); the statistics are halved
 * with the sketch, so they follow the workload.  R ("resid") is a moving
 * average (weight 1/DENSITY_RESID_WEIGHT) of each victim's time since its
 * last use: the time an entry stays without hits, the unit a shift is
 * counted in.  Priorities are now + s(c) * R, as unsigned (a negative one is
 * 0).  Unlike a per-entry score this ordering is static between uses, so
 * the heap needs no refresh, and with every s(c) = 0 it is LRU.
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
 * other's counts.  "density" takes DENSITY_COLUMNS: a key seen once that
 * collides into count 2 lands in a class of its own, and with 16 columns
 * per entry that cost 0.004 of hit ratio at 10,000 blocks on the
 * conversation trace (0.231 instead of 0.235).  The width doubles as the tracked entries grow; that
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
#define DENSITY_COLUMNS    64 /* "density": its classes need exact low counts */
#define SKETCH_MIN_COLUMNS ((size_t)1 << 14)

#define DENSITY_CLASSES      9    /* 0: partial; 1..8: use count */
#define DENSITY_REFRESH      1024 /* uses between two recomputations */
#define DENSITY_SHIFT_MAX    4.0  /* residence times, either way */
#define DENSITY_RESID_WEIGHT 1024

_Static_assert(SKETCH_COLUMNS >= SKETCH_SAMPLE, "a column per key of a window");
_Static_assert(DENSITY_COLUMNS >= SKETCH_SAMPLE, "a column per key of a window");

typedef struct evict_ops {
    const char *name;
    size_t      uses_sketch; /* 0, or the sketch's columns per entry */
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

    /* time: set by kv_evict_set_time(), else the use clock */
    int                 has_time;
    uint64_t            time;

    /* density */
    uint64_t            stat_time;  /* occ_time is integrated up to here */
    uint64_t            resid;      /* R, in time units; 0 = none yet */
    uint64_t            refresh;    /* uses since the shifts were computed */
    uint64_t            occ[DENSITY_CLASSES];
    double              occ_time[DENSITY_CLASSES];
    double              hits[DENSITY_CLASSES];
    double              shift[DENSITY_CLASSES];
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

static void density_halve(kv_evict_t *policy);

/* Count a use of @hash; return its estimated count, 1..SKETCH_MAX. */
static uint64_t sketch_add(kv_evict_t *policy, uint64_t hash)
{
    uint8_t *cell[SKETCH_ROWS];
    uint8_t  min     = UINT8_MAX;
    size_t   columns = policy->ops->uses_sketch;

    while (policy->count > policy->width / columns) {
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
    if (++policy->additions >= SKETCH_SAMPLE * (uint64_t)(policy->width / columns)) {
        for (size_t i = 0; i < SKETCH_ROWS * policy->width; i++) {
            policy->sketch[i] >>= 1;
        }
        policy->additions = 0;
        density_halve(policy);
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

/* ---- density ------------------------------------------------------------ */

static uint64_t evict_now(const kv_evict_t *policy)
{
    return policy->has_time ? policy->time : policy->clock;
}

/* Add the entry-time spent since stat_time to each class's integral. */
static void density_integrate(kv_evict_t *policy)
{
    uint64_t now = evict_now(policy);

    if (now > policy->stat_time) {
        double dt = (double)(now - policy->stat_time);
        for (int c = 0; c < DENSITY_CLASSES; c++) {
            policy->occ_time[c] += dt * (double)policy->occ[c];
        }
    }
    policy->stat_time = now;
}

static void density_halve(kv_evict_t *policy)
{
    for (int c = 0; c < DENSITY_CLASSES; c++) {
        policy->occ_time[c] /= 2;
        policy->hits[c] /= 2;
    }
}

/* log2(x) clamped to +-DENSITY_SHIFT_MAX, without libm: the power of two,
   then ln of the mantissa m in [1, 2) by the atanh series in
   y = (m - 1) / (m + 1) <= 1/3 (four terms: off by 1e-5 at most). */
static double density_log2(double x)
{
    double e = 0;

    if (!(x > 0)) {
        return -DENSITY_SHIFT_MAX;
    }
    while (x >= 2 && e < DENSITY_SHIFT_MAX) {
        x /= 2;
        e += 1;
    }
    while (x < 1 && e > -DENSITY_SHIFT_MAX) {
        x *= 2;
        e -= 1;
    }
    if (e >= DENSITY_SHIFT_MAX || e <= -DENSITY_SHIFT_MAX) {
        return e;
    }
    {
        double y = (x - 1) / (x + 1), y2 = y * y;
        double ln = 2 * y * (1 + y2 * (1.0 / 3 + y2 * (1.0 / 5 + y2 / 7)));
        e += ln * 1.4426950408889634; /* 1 / ln 2 */
    }
    return e > DENSITY_SHIFT_MAX ? DENSITY_SHIFT_MAX : e;
}

static void density_refresh(kv_evict_t *policy)
{
    double base;

    policy->refresh = 0;
    if (policy->occ_time[1] <= 0 || policy->hits[1] <= 0) {
        for (int c = 0; c < DENSITY_CLASSES; c++) {
            policy->shift[c] = 0;
        }
        return;
    }
    base = policy->hits[1] / policy->occ_time[1];
    for (int c = 0; c < DENSITY_CLASSES; c++) {
        policy->shift[c] =
            policy->occ_time[c] > 0
                ? density_log2(policy->hits[c] / policy->occ_time[c] / base)
                : 0;
    }
}

static uint64_t density_prio(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    uint64_t now = evict_now(policy);
    double   prio;

    if (++policy->refresh >= DENSITY_REFRESH) {
        density_refresh(policy);
    }
    prio = (double)now + policy->shift[entry->klass] * (double)policy->resid;
    return prio <= 0 ? 0 : (uint64_t)prio;
}

/* A use of @entry, tracked (@hit) or new, with flags: its class moves. */
static void density_use(kv_evict_t *policy, kv_evict_entry_t *entry, int hit,
                        unsigned flags)
{
    uint64_t count;

    density_integrate(policy);
    count = sketch_add(policy, entry->hash);
    if (hit) {
        assert(policy->occ[entry->klass] > 0);
        policy->hits[entry->klass] += 1;
        policy->occ[entry->klass]--;
    }
    entry->klass = (flags & KV_EVICT_PARTIAL)
                       ? 0
                       : (uint8_t)(count < DENSITY_CLASSES - 1 ? count
                                                               : DENSITY_CLASSES - 1);
    policy->occ[entry->klass]++;
}

/* @entry leaves; @victim: it was evicted (its age counts for R). */
static void density_leave(kv_evict_t *policy, kv_evict_entry_t *entry, int victim)
{
    density_integrate(policy);
    assert(policy->occ[entry->klass] > 0);
    policy->occ[entry->klass]--;
    if (victim) {
        uint64_t now = evict_now(policy);
        uint64_t age = now > entry->used_at ? now - entry->used_at : 0;
        if (policy->resid == 0) {
            policy->resid = age;
        } else if (age >= policy->resid) {
            policy->resid += (age - policy->resid) / DENSITY_RESID_WEIGHT;
        } else {
            policy->resid -= (policy->resid - age) / DENSITY_RESID_WEIGHT;
        }
    }
}

static const evict_ops_t evict_policies[] = {
    {"lru", 0, lru_prio},
    {"lfuda", SKETCH_COLUMNS, lfuda_prio},
    {"density", DENSITY_COLUMNS, density_prio},
};

#define NUM_POLICIES (sizeof(evict_policies) / sizeof(evict_policies[0]))

static const char *const evict_names[NUM_POLICIES + 1] = {"lru", "lfuda", "density",
                                                           NULL};

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

static int is_density(const kv_evict_t *policy)
{
    return policy->ops->prio == density_prio;
}

/* A use of @entry (@hit: it was tracked already): new stamp and priority. */
static void evict_use(kv_evict_t *policy, kv_evict_entry_t *entry, int hit,
                      unsigned flags)
{
    entry->stamp = ++policy->clock;
    if (is_density(policy)) {
        density_use(policy, entry, hit, flags);
    }
    entry->used_at = evict_now(policy);
    entry->prio    = policy->ops->prio(policy, entry);
}

void kv_evict_set_time(kv_evict_t *policy, uint64_t now)
{
    if (!policy->has_time) {
        /* from the use count to this clock: restart the integral here */
        density_integrate(policy);
        policy->has_time  = 1;
        policy->time      = now;
        policy->stat_time = now;
        policy->resid     = 0;
        return;
    }
    if (now > policy->time) {
        policy->time = now;
    }
}

void kv_evict_insert_flags(kv_evict_t *policy, kv_evict_entry_t *entry,
                           kv_evict_entry_t *parent, uint64_t key_hash,
                           unsigned flags)
{
    assert(parent != entry);
    entry->child         = NULL;
    entry->free_children = 0;
    entry->hash          = key_hash;
    entry->pos           = NOT_IN_HEAP;
    entry->klass         = 0;
    policy->count++;
    evict_use(policy, entry, 0, flags);
    heap_push(policy, entry);
    tree_link(policy, entry, parent);
}

void kv_evict_insert(kv_evict_t *policy, kv_evict_entry_t *entry,
                     kv_evict_entry_t *parent, uint64_t key_hash)
{
    kv_evict_insert_flags(policy, entry, parent, key_hash, 0);
}

void kv_evict_touch_flags(kv_evict_t *policy, kv_evict_entry_t *entry,
                          unsigned flags)
{
    evict_use(policy, entry, 1, flags);
    heap_fix(policy, entry);
}

void kv_evict_touch(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    kv_evict_touch_flags(policy, entry, 0);
}

/* Stop tracking @entry; @victim: popped, not removed. */
static void evict_untrack(kv_evict_t *policy, kv_evict_entry_t *entry, int victim)
{
    int was_free = entry->pos != NOT_IN_HEAP;

    assert(policy->count > 0);
    if (is_density(policy)) {
        density_leave(policy, entry, victim);
    }
    if (was_free) {
        heap_delete(policy, entry);
    }
    tree_unlink(policy, entry, was_free);
    tree_orphan_children(entry);
    policy->count--;
}

void kv_evict_remove(kv_evict_t *policy, kv_evict_entry_t *entry)
{
    evict_untrack(policy, entry, 0);
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
    evict_untrack(policy, victim, 1);
    return victim;
}
