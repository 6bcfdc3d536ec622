/*
 * Placement: which node stores each new block of a chain.
 *
 * Goals, in order: every block goes to a node that can hold it; the nodes
 * receive new bytes in proportion to their capacity (in a full pool the
 * bytes a node receives are the bytes it evicts, so a node that receives
 * more than its share turns its contents over faster and loses prefixes
 * whose continuations live elsewhere); a chain's blocks stay on one node
 * where that does not unbalance the pool (a later load then talks to one
 * node); distinct chains spread even when they share a cached prefix (the
 * same system prompt); the same question gets the same answer while the
 * cluster does not change much.
 *
 *  1. Rank the nodes by weighted rendezvous hashing: node n scores
 *     w_n / -ln(u_n), where u_n in (0, 1) is a hash of the chain's first
 *     NEW key (the first block that needs a home, not the chain's first
 *     block: chains sharing a cached prefix still rank differently) and
 *     the node's address, and
 *         w_n = (avail_n + capacity_n) / (16 + load_n),
 *     avail_n = free bytes at the last heartbeat minus bytes planned since.
 *     The highest score wins; each node wins with probability w_n / sum(w):
 *     free room counts, capacity keeps full nodes (caches that evict) in
 *     the game, and 16 requests in flight halve a node's share.  The
 *     address, not the id, is hashed, so a restarted coordinator ranks
 *     alike.
 *  2. Recent bytes: each node keeps the bytes placed on it, decayed
 *     exponentially by the bytes placed on the whole pool since (the
 *     table's clock) with a scale of half the pool's capacity: roughly
 *     what it received in the last half-pool of placements.  A node is
 *     "over" when its recent bytes exceed 1.1 times its fair share (all
 *     nodes' recent bytes times its part of the capacity) plus 1/64 of its
 *     capacity (small volumes do not count), and it is at least half full
 *     (avail < capacity / 2: while a node has that much room, continuing
 *     a chain there costs no eviction).  Computed once per plan.
 *  3. Walk the new blocks in chain order with a current node.  The first
 *     block goes to the first node found in this order:
 *       a. a node holding the chain's last cached block that is not over
 *          and has room (the chain continues where its prefix is);
 *       b. the best-ranked node not over with room;
 *       c. a holder, then the best-ranked node, with room (over or not);
 *       d. as a to c, with "capacity >= size" for "room": a full pool,
 *          where nodes evict least recently used blocks to make room.
 *     So a continuation leaves its holder only for balance, and room is
 *     preferred to balance (placing into free room evicts nothing).  A
 *     block stays on the current node while it has room ("room": avail >=
 *     size); when it is full the block spills to the best-ranked node not
 *     over with room, else with room, else (a full pool) stays on the
 *     current node if its capacity can hold the block, else goes to the
 *     best-ranked node not over, then any, whose capacity can.
 *  4. Replica k of each block walks the same way with its own current
 *     node, never on a node already holding a copy of that block.
 *
 * Each choice adds the block's size to the node's planned bytes (so
 * concurrent plans see the room already promised; a heartbeat resets it)
 * and to its recent bytes, and advances the clock.  Recent bytes live in
 * the coordinator only: a restarted coordinator, or a node that joins
 * again, starts from zero.
 */
#include "coord_int.h"

#include <kv/alloc.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_HALF     16.0   /* requests in flight that halve a node's weight */
#define RECENT_SCALE  0.5    /* recent bytes' decay scale, in pool capacities */
#define OVER_SHARE    1.1    /* recent bytes over this many fair shares: over */
#define OVER_SLACK    64.0   /* ... plus 1/OVER_SLACK of the node's capacity */

typedef struct {
    kv_coord_member_t *member;
    double             score;
    int                over;   /* received more than its share recently */
} ranked_t;

static uint64_t member_avail(const kv_coord_member_t *m)
{
    return m->free_bytes > m->planned_bytes ? m->free_bytes - m->planned_bytes : 0;
}

/* Bring @p m's recent bytes to the table's @p clock (decay scale @p scale). */
static void recent_decay(kv_coord_member_t *m, uint64_t clock, double scale)
{
    if (clock != m->recent_clock) {
        m->recent_bytes *= exp(-(double)(clock - m->recent_clock) / scale);
        m->recent_clock = clock;
    }
}

/* A 64-bit mix of two words (the finalizer of SplitMix64). */
static uint64_t mix64(uint64_t a, uint64_t b)
{
    uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rendezvous_score(const kv_coord_member_t *m, uint64_t chain_hash)
{
    /* u in (0, 1): 53 random bits, never 0 */
    double u = ((double)(mix64(chain_hash, m->address_hash) >> 11) + 0.5) /
               9007199254740992.0;
    double w = ((double)member_avail(m) + (double)m->capacity_bytes) /
               (LOAD_HALF + (double)m->load);

    return w / -log(u);
}

static int by_score(const void *a, const void *b)
{
    const ranked_t *x = a, *y = b;

    if (x->score != y->score) {
        return x->score < y->score ? 1 : -1;
    }
    return x->member->id < y->member->id ? -1 : x->member->id > y->member->id;
}

typedef struct {
    ranked_t       *rank;
    size_t          n;
    const uint32_t *prefer;
    size_t          n_prefer;
} plan_t;

static int excluded(const kv_coord_member_t *m, const uint32_t *exclude, size_t n_exclude)
{
    for (size_t i = 0; i < n_exclude; i++) {
        if (exclude[i] == m->id) {
            return 1;
        }
    }
    return 0;
}

static int preferred(const plan_t *plan, const kv_coord_member_t *m)
{
    return excluded(m, plan->prefer, plan->n_prefer);
}

/* What a search looks for. */
enum {
    F_PREFER   = 1, /* a node holding the chain's last cached block */
    F_BALANCED = 2, /* a node not over its share */
    F_EVICTING = 4, /* capacity >= size will do (else avail >= size) */
};

/* The best-ranked allowed node that has all of @p flags and takes @p size. */
static kv_coord_member_t *first_fit(const plan_t *plan, int flags, uint64_t size,
                                    const uint32_t *exclude, size_t n_exclude)
{
    for (size_t i = 0; i < plan->n; i++) {
        kv_coord_member_t *m = plan->rank[i].member;

        if (((flags & F_PREFER) && !preferred(plan, m)) ||
            ((flags & F_BALANCED) && plan->rank[i].over) ||
            excluded(m, exclude, n_exclude) ||
            ((flags & F_EVICTING) ? m->capacity_bytes : member_avail(m)) < size) {
            continue;
        }
        return m;
    }
    return NULL;
}

/* The searches at a chain's start, and after a full current node. */
static const int start_order[] = {
    F_PREFER | F_BALANCED, F_BALANCED, F_PREFER, 0,
    F_EVICTING | F_PREFER | F_BALANCED, F_EVICTING | F_BALANCED,
    F_EVICTING | F_PREFER, F_EVICTING,
};
static const int spill_order[] = {F_BALANCED, 0};
static const int evict_order[] = {F_EVICTING | F_BALANCED, F_EVICTING};

static kv_coord_member_t *search(const plan_t *plan, const int *order, size_t n_order,
                                 uint64_t size, const uint32_t *exclude,
                                 size_t n_exclude)
{
    for (size_t i = 0; i < n_order; i++) {
        kv_coord_member_t *m = first_fit(plan, order[i], size, exclude, n_exclude);
        if (m != NULL) {
            return m;
        }
    }
    return NULL;
}

#define SEARCH(plan, order, size, exclude, n_exclude)                              \
    search(plan, order, sizeof(order) / sizeof(order[0]), size, exclude, n_exclude)

/*
 * The node for a block of @p size after @p cur (NULL at a chain's start),
 * never one in @p exclude.  NULL only if no allowed node has the capacity.
 */
static kv_coord_member_t *pick(const plan_t *plan, kv_coord_member_t *cur, uint64_t size,
                               const uint32_t *exclude, size_t n_exclude)
{
    kv_coord_member_t *m;

    if (cur != NULL && excluded(cur, exclude, n_exclude)) {
        cur = NULL; /* another copy of this block took it: start afresh */
    }
    if (cur == NULL) {
        return SEARCH(plan, start_order, size, exclude, n_exclude);
    }
    if (member_avail(cur) >= size) {
        return cur;
    }
    m = SEARCH(plan, spill_order, size, exclude, n_exclude);
    if (m != NULL) {
        return m;
    }
    /* a full pool: stay if it can evict enough */
    if (cur->capacity_bytes >= size) {
        return cur;
    }
    return SEARCH(plan, evict_order, size, exclude, n_exclude);
}

kvp_status_t kv_coord_place(kv_coord_members_t *members, const kv_coord_place_req_t *req,
                            uint32_t *targets, uint32_t *replica_nodes, char *err,
                            size_t err_len)
{
    size_t              n = kv_coord_members_count(members);
    uint32_t            extra = req->replicas - 1;
    uint64_t            max_capacity = 0, clock = kv_coord_members_clock(members);
    uint64_t            chain_hash, halves[2];
    double              capacity = 0, recent = 0, scale;
    kv_coord_member_t  *cur[KV_COORD_REPLICAS_MAX] = {NULL};
    uint32_t            copies[KV_COORD_REPLICAS_MAX];
    plan_t              plan;

    if (n == 0) {
        snprintf(err, err_len, "no pool node has joined the coordinator");
        return KVP_ERR_NO_SPACE;
    }
    for (size_t i = 0; i < n; i++) {
        kv_coord_member_t *m = kv_coord_members_at(members, i);
        max_capacity = m->capacity_bytes > max_capacity ? m->capacity_bytes
                                                        : max_capacity;
        capacity += (double)m->capacity_bytes;
    }
    for (size_t b = 0; b < req->count; b++) {
        if (req->sizes[b] > max_capacity) {
            snprintf(err, err_len,
                     "new block %zu of %llu bytes is larger than every node "
                     "(largest %llu bytes)",
                     b, (unsigned long long)req->sizes[b],
                     (unsigned long long)max_capacity);
            return KVP_ERR_TOO_LARGE;
        }
    }
    scale         = capacity * RECENT_SCALE + 1.0;
    plan.rank     = kv_malloc(n * sizeof(*plan.rank), "placement ranking");
    plan.n        = n;
    plan.prefer   = req->prefer;
    plan.n_prefer = req->n_prefer;
    memcpy(halves, req->rank_key->bytes, sizeof(halves));
    chain_hash = mix64(halves[0], halves[1]);
    for (size_t i = 0; i < n; i++) {
        kv_coord_member_t *m = kv_coord_members_at(members, i);

        recent_decay(m, clock, scale);
        recent += m->recent_bytes;
        plan.rank[i].member = m;
        plan.rank[i].score  = rendezvous_score(m, chain_hash);
    }
    for (size_t i = 0; i < n; i++) {
        const kv_coord_member_t *m = plan.rank[i].member;
        double cap = (double)m->capacity_bytes;

        plan.rank[i].over = capacity > 0 && member_avail(m) < m->capacity_bytes / 2 &&
                            m->recent_bytes > OVER_SHARE * recent * cap / capacity +
                                                  cap / OVER_SLACK;
    }
    qsort(plan.rank, n, sizeof(*plan.rank), by_score);

    /* from here every block of capacity <= max_capacity finds a node */
    for (size_t b = 0; b < req->count; b++) {
        uint64_t size = req->sizes[b];

        for (uint32_t r = 0; r <= extra; r++) {
            kv_coord_member_t *m = pick(&plan, cur[r], size, copies, r);
            if (m == NULL) {
                copies[r] = 0;
                if (r > 0) {
                    replica_nodes[b * extra + r - 1] = 0;
                }
                continue;
            }
            cur[r]    = m;
            copies[r] = m->id;
            m->planned_bytes += size;
            kv_coord_members_tick(members, size);
            recent_decay(m, kv_coord_members_clock(members), scale);
            m->recent_bytes += (double)size;
            if (r == 0) {
                targets[b] = m->id;
            } else {
                replica_nodes[b * extra + r - 1] = m->id;
            }
        }
    }
    kv_free(plan.rank);
    return KVP_OK;
}
