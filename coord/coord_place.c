/*
 * Placement: which node stores each new block of a chain.
 *
 * Goals, in order: every block goes to a node that can hold it; a chain's
 * blocks stay on one node (a later load then talks to one node); chains
 * spread over the nodes in proportion to their room and inversely to
 * their load; the same chain goes to the same node while the cluster does
 * not change much.
 *
 *  1. Rank the nodes for the chain by weighted rendezvous hashing: node n
 *     scores w_n / -ln(u_n), where u_n in (0, 1) is a hash of the chain's
 *     first key and the node's address, and
 *         w_n = (avail_n + capacity_n) / (16 + load_n),
 *     avail_n = free bytes at the last heartbeat minus bytes planned since.
 *     The highest score wins; each node wins with probability w_n / sum(w):
 *     free room counts, capacity keeps full nodes (caches that evict) in
 *     the game, and 16 requests in flight halve a node's share.  The
 *     address, not the id, is hashed, so a restarted coordinator ranks
 *     alike.
 *  2. Walk the new blocks in chain order with a current node.  The first
 *     block starts on a node holding the chain's last cached block if one
 *     has room, so the chain continues where its prefix is; otherwise on
 *     the best-ranked node with room.  A block stays on the current node
 *     while it has room ("room": avail >= size), and spills to the next
 *     best-ranked node with room when it is full.
 *  3. When no node has free room (a full pool, where nodes evict least
 *     recently used blocks to make room), the current node is kept if its
 *     capacity can hold the block, else the best-ranked node that can.
 *  4. Replica k of each block walks the same way with its own current
 *     node, never on a node already holding a copy of that block.
 *
 * Each choice adds the block's size to the node's planned bytes, so
 * concurrent plans see the room already promised; a heartbeat resets it.
 */
#include "coord_int.h"

#include <kv/alloc.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_HALF 16.0   /* requests in flight that halve a node's weight */

typedef struct {
    kv_coord_member_t *member;
    double             score;
} ranked_t;

static uint64_t member_avail(const kv_coord_member_t *m)
{
    return m->free_bytes > m->planned_bytes ? m->free_bytes - m->planned_bytes : 0;
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

/*
 * The best-ranked allowed node that can take @p size: into its free room,
 * or (@p evicting) into its capacity.  With @p start, a preferred node
 * comes first.
 */
static kv_coord_member_t *first_fit(const plan_t *plan, int start, uint64_t size,
                                    int evicting, const uint32_t *exclude,
                                    size_t n_exclude)
{
    for (int pass = start ? 0 : 1; pass < 2; pass++) {
        for (size_t i = 0; i < plan->n; i++) {
            kv_coord_member_t *m = plan->rank[i].member;

            if ((pass == 0 && !preferred(plan, m)) || excluded(m, exclude, n_exclude) ||
                (evicting ? m->capacity_bytes : member_avail(m)) < size) {
                continue;
            }
            return m;
        }
    }
    return NULL;
}

/*
 * The node for a block of @p size after @p cur (NULL at a chain's start,
 * when the preferred nodes come first), never one in @p exclude.  NULL
 * only if no allowed node has the capacity.
 */
static kv_coord_member_t *pick(const plan_t *plan, kv_coord_member_t *cur, uint64_t size,
                               const uint32_t *exclude, size_t n_exclude)
{
    kv_coord_member_t *m;
    int                start = cur == NULL;

    if (cur != NULL && excluded(cur, exclude, n_exclude)) {
        cur = NULL; /* another copy of this block took it: move on */
    }
    if (cur != NULL && member_avail(cur) >= size) {
        return cur;
    }
    m = first_fit(plan, start, size, 0, exclude, n_exclude);
    if (m != NULL) {
        return m;
    }
    /* a full pool: stay (or start where the prefix is) if it can evict enough */
    if (cur != NULL && cur->capacity_bytes >= size) {
        return cur;
    }
    return first_fit(plan, start, size, 1, exclude, n_exclude);
}

kvp_status_t kv_coord_place(kv_coord_members_t *members, const kv_coord_place_req_t *req,
                            uint32_t *targets, uint32_t *replica_nodes, char *err,
                            size_t err_len)
{
    size_t              n = kv_coord_members_count(members);
    uint32_t            extra = req->replicas - 1;
    uint64_t            max_capacity = 0;
    uint64_t            chain_hash, halves[2];
    kv_coord_member_t  *cur[KV_COORD_REPLICAS_MAX] = {NULL};
    uint32_t            copies[KV_COORD_REPLICAS_MAX];
    plan_t              plan;

    if (n == 0) {
        snprintf(err, err_len, "no pool node has joined the coordinator");
        return KVP_ERR_NO_SPACE;
    }
    plan.rank     = kv_malloc(n * sizeof(*plan.rank), "placement ranking");
    plan.n        = n;
    plan.prefer   = req->prefer;
    plan.n_prefer = req->n_prefer;
    memcpy(halves, req->first_key->bytes, sizeof(halves));
    chain_hash = mix64(halves[0], halves[1]);
    for (size_t i = 0; i < n; i++) {
        kv_coord_member_t *m = kv_coord_members_at(members, i);
        plan.rank[i].member  = m;
        plan.rank[i].score   = rendezvous_score(m, chain_hash);
        max_capacity         = m->capacity_bytes > max_capacity ? m->capacity_bytes
                                                                : max_capacity;
    }
    for (size_t b = 0; b < req->count; b++) {
        if (req->sizes[b] > max_capacity) {
            snprintf(err, err_len,
                     "new block %zu of %llu bytes is larger than every node "
                     "(largest %llu bytes)",
                     b, (unsigned long long)req->sizes[b],
                     (unsigned long long)max_capacity);
            kv_free(plan.rank);
            return KVP_ERR_TOO_LARGE;
        }
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
