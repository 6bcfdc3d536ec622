/*
 * Unit tests of the global prefix index (coord/prefix_index.c), checked
 * against a brute-force model on random chain forests.
 */
#include <kvcoord/prefix_index.h>

#include <kvpool/status.h>
#include <test.h>

#define NODES      4  /* model locations: nodes 1..4, tiers 0..1 */
#define TIERS      2
#define MODEL_LOCS (NODES * TIERS)

static kvp_key_t make_key(uint32_t tag, uint32_t n)
{
    kvp_key_t key;

    /* mostly zero bytes: the index must not rely on random keys */
    memset(&key, 0, sizeof(key));
    memcpy(key.bytes + 4, &n, sizeof(n));
    memcpy(key.bytes + 12, &tag, sizeof(tag));
    return key;
}

static uint32_t model_loc(int bit)
{
    return KV_LOC(1 + bit / TIERS, bit % TIERS);
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t rng_below(uint64_t *state, size_t n)
{
    return (size_t)(rng_next(state) % n);
}

static kv_prefix_index_t *make_index(size_t expected, uint32_t *ns_p)
{
    kv_prefix_index_t *index = NULL;

    ASSERT_OK(kv_index_create(expected, &index));
    ASSERT(index != NULL);
    ASSERT_OK(kv_index_ns_id(index, "default", 7, 1, ns_p));
    return index;
}

static kv_index_stats_t stats_of(const kv_prefix_index_t *index)
{
    kv_index_stats_t s;

    kv_index_stats(index, &s);
    return s;
}

static void test_create_params(void)
{
    kv_prefix_index_t *index = NULL;
    kv_index_stats_t   s;

    ASSERT_STATUS(kv_index_create(0, NULL), KVP_ERR_INVALID_PARAM);
    kv_index_destroy(NULL);
    memset(&s, 0xff, sizeof(s));
    kv_index_stats(NULL, &s);
    ASSERT_EQ(s.entries + s.cached + s.locations + s.bytes, 0);
    ASSERT_OK(kv_index_create(0, &index));
    kv_index_stats(index, NULL);
    s = stats_of(index);
    ASSERT_EQ(s.entries, 0);
    ASSERT(s.bytes > 0);
    kv_index_destroy(index);
}

static void test_namespaces(void)
{
    kv_prefix_index_t *index;
    uint32_t           a, b, id, again;
    char               name[KVP_NAMESPACE_MAX + 1];
    kvp_key_t          key = make_key(0, 1);

    ASSERT_OK(kv_index_create(0, &index));
    ASSERT_STATUS(kv_index_ns_id(index, "a", 1, 0, &a), KVP_ERR_NOT_FOUND);
    ASSERT_OK(kv_index_ns_id(index, "a", 1, 1, &a));
    ASSERT_OK(kv_index_ns_id(index, "b", 1, 1, &b));
    ASSERT_EQ(a, 0);
    ASSERT_EQ(b, 1);
    ASSERT_OK(kv_index_ns_id(index, "a", 1, 0, &again));
    ASSERT_EQ(again, a);
    /* not NUL-terminated: only len bytes count */
    ASSERT_OK(kv_index_ns_id(index, "bXX", 1, 0, &again));
    ASSERT_EQ(again, b);

    ASSERT_STATUS(kv_index_ns_id(NULL, "a", 1, 1, &id), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_ns_id(index, NULL, 1, 1, &id), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_ns_id(index, "a", 0, 1, &id), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_ns_id(index, "a", 1, 1, NULL), KVP_ERR_INVALID_PARAM);
    memset(name, 'n', sizeof(name));
    ASSERT_STATUS(kv_index_ns_id(index, name, KVP_NAMESPACE_MAX + 1, 1, &id),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_OK(kv_index_ns_id(index, name, KVP_NAMESPACE_MAX, 1, &id));
    ASSERT_EQ(id, 2);

    /* the same key in two namespaces is two blocks */
    ASSERT_OK(kv_index_store(index, a, &key, NULL, KV_LOC(1, 0)));
    ASSERT(kv_index_cached(index, a, &key));
    ASSERT(!kv_index_cached(index, b, &key));
    ASSERT_OK(kv_index_store(index, b, &key, NULL, KV_LOC(2, 0)));
    ASSERT_EQ(stats_of(index).entries, 2);
    ASSERT(kv_index_remove(index, a, &key, KV_LOC(1, 0)));
    ASSERT(kv_index_cached(index, b, &key));

    /* up to the limit, then NO_SPACE; the ones interned stay */
    for (uint32_t n = 3; n < KV_INDEX_MAX_NAMESPACES; n++) {
        int len = snprintf(name, sizeof(name), "ns-%u", n);
        ASSERT_OK(kv_index_ns_id(index, name, (size_t)len, 1, &id));
        ASSERT_EQ(id, n);
    }
    ASSERT_STATUS(kv_index_ns_id(index, "one-more", 8, 1, &id), KVP_ERR_NO_SPACE);
    ASSERT_STATUS(kv_index_ns_id(index, "one-more", 8, 0, &id), KVP_ERR_NOT_FOUND);
    ASSERT_OK(kv_index_ns_id(index, "ns-1000", 7, 0, &id));
    ASSERT_EQ(id, 1000);
    ASSERT_OK(kv_index_ns_id(index, "b", 1, 1, &id));
    ASSERT_EQ(id, b);
    ASSERT_OK(kv_index_store(index, KV_INDEX_MAX_NAMESPACES - 1, &key, NULL,
                             KV_LOC(1, 0)));
    ASSERT_STATUS(kv_index_store(index, KV_INDEX_MAX_NAMESPACES, &key, NULL,
                                 KV_LOC(1, 0)), KVP_ERR_INVALID_PARAM);
    kv_index_destroy(index);
}

static int count_cb(uint32_t ns_id, const kvp_key_t *key, const kvp_key_t *parent,
                    uint32_t loc, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

static int stop_cb(uint32_t ns_id, const kvp_key_t *key, const kvp_key_t *parent,
                   uint32_t loc, void *arg)
{
    (*(size_t *)arg)++;
    return 1;
}

/* What kv_index_foreach_node() reported. */
typedef struct seen {
    int       n;
    uint32_t  ns[8];
    kvp_key_t key[8];
    kvp_key_t parent[8];
    int       has_parent[8];
    uint32_t  loc[8];
} seen_t;

static int record_cb(uint32_t ns_id, const kvp_key_t *key, const kvp_key_t *parent,
                     uint32_t loc, void *arg)
{
    seen_t *seen = arg;

    ASSERT(seen->n < 8);
    seen->ns[seen->n]         = ns_id;
    seen->key[seen->n]        = *key;
    seen->has_parent[seen->n] = parent != NULL;
    if (parent != NULL) {
        seen->parent[seen->n] = *parent;
    }
    seen->loc[seen->n++] = loc;
    return 0;
}

static void test_bad_arguments(void)
{
    uint32_t           ns, locs[4];
    kv_prefix_index_t *index = make_index(0, &ns);
    kvp_key_t          k[4];
    kv_index_stats_t   before, after;
    size_t             calls = 0;

    for (uint32_t i = 0; i < 4; i++) {
        k[i] = make_key(9, i);
    }
    ASSERT_STATUS(kv_index_store(NULL, ns, &k[0], NULL, KV_LOC(1, 0)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_store(index, ns, NULL, NULL, KV_LOC(1, 0)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_store(index, ns + 1, &k[0], NULL, KV_LOC(1, 0)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_store(index, ns, &k[0], NULL, KV_LOC(0, 1)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_store(index, ns, &k[0], NULL, 0), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_store(index, ns, &k[0], NULL, UINT32_MAX),
                  KVP_ERR_INVALID_PARAM); /* node above KV_COORD_NODE_MAX */
    ASSERT_STATUS(kv_index_store(index, ns, &k[0], &k[0], KV_LOC(1, 0)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_EQ(stats_of(index).entries, 0);
    ASSERT_OK(kv_index_store(index, ns, &k[0], NULL, KV_LOC(KV_COORD_NODE_MAX, 255)));

    /* cycles through placeholders: 1 -> 2 (placeholder), 3 -> 1; then 2 -> 3 */
    ASSERT_OK(kv_index_store(index, ns, &k[1], &k[2], KV_LOC(1, 0)));
    ASSERT_OK(kv_index_store(index, ns, &k[3], &k[1], KV_LOC(1, 0)));
    before = stats_of(index);
    ASSERT_STATUS(kv_index_store(index, ns, &k[2], &k[3], KV_LOC(1, 0)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_index_store(index, ns, &k[2], &k[1], KV_LOC(1, 0)),
                  KVP_ERR_INVALID_PARAM);
    after = stats_of(index);
    ASSERT_EQ(after.entries, before.entries);
    ASSERT_EQ(after.locations, before.locations);
    ASSERT_EQ(after.cached, before.cached);
    ASSERT_EQ(kv_index_locations(index, ns, &k[2], locs, 4), 0);
    /* a parent that is not below it is fine */
    ASSERT_OK(kv_index_store(index, ns, &k[2], &k[0], KV_LOC(1, 0)));
    ASSERT_EQ(kv_index_match(index, ns, (kvp_key_t[]){k[0], k[2], k[1], k[3]}, 4), 4);

    ASSERT_EQ(kv_index_remove(NULL, ns, &k[0], KV_LOC(1, 0)), 0);
    ASSERT_EQ(kv_index_remove(index, ns, NULL, KV_LOC(1, 0)), 0);
    ASSERT_EQ(kv_index_remove(index, ns + 1, &k[0], KV_LOC(1, 0)), 0);
    ASSERT_EQ(kv_index_remove(index, ns, &k[1], KV_LOC(2, 0)), 0);
    ASSERT_EQ(kv_index_remove(index, ns, &k[1], 0), 0);
    ASSERT_EQ(kv_index_remove_node(NULL, 1), 0);
    ASSERT_EQ(kv_index_remove_node(index, 0), 0);
    ASSERT_EQ(kv_index_remove_node(index, 77), 0);

    ASSERT_EQ(kv_index_match(NULL, ns, k, 1), 0);
    ASSERT_EQ(kv_index_match(index, ns, NULL, 1), 0);
    ASSERT_EQ(kv_index_match(index, ns + 1, k, 1), 0);
    ASSERT_EQ(kv_index_match(index, ns, k, 0), 0);
    ASSERT_EQ(kv_index_cached(NULL, ns, &k[0]), 0);
    ASSERT_EQ(kv_index_cached(index, ns, NULL), 0);
    ASSERT_EQ(kv_index_cached(index, ns + 1, &k[0]), 0);
    ASSERT_EQ(kv_index_locations(NULL, ns, &k[0], locs, 4), 0);
    ASSERT_EQ(kv_index_locations(index, ns, NULL, locs, 4), 0);
    ASSERT_EQ(kv_index_locations(index, ns + 1, &k[0], locs, 4), 0);
    ASSERT_EQ(kv_index_locations(index, ns, &k[0], NULL, 4), 1);
    ASSERT_EQ(kv_index_locations(index, ns, &k[0], NULL, 0), 1);
    kv_index_foreach_node(NULL, 1, count_cb, &calls);
    kv_index_foreach_node(index, 1, NULL, &calls);
    kv_index_foreach_node(index, 0, count_cb, &calls);
    ASSERT_EQ(calls, 0);
    kv_index_foreach_node(index, 1, stop_cb, &calls);
    ASSERT_EQ(calls, 1);
    kv_index_destroy(index);
}

static void test_chain_limit(void)
{
    uint32_t           ns;
    kv_prefix_index_t *index = make_index(0, &ns);
    size_t             n     = KV_INDEX_MAX_CHAIN + 1;
    kvp_key_t         *keys  = calloc(n, sizeof(*keys));

    ASSERT(keys != NULL);
    for (size_t i = 0; i < n; i++) {
        keys[i] = make_key(1, (uint32_t)i);
        ASSERT_OK(kv_index_store(index, ns, &keys[i], i ? &keys[i - 1] : NULL,
                                 KV_LOC(1, 0)));
    }
    ASSERT_EQ(kv_index_match(index, ns, keys, KV_INDEX_MAX_CHAIN),
              KV_INDEX_MAX_CHAIN);
    ASSERT_EQ(kv_index_match(index, ns, keys, n), 0); /* over the limit */
    ASSERT_EQ(stats_of(index).cached, n);
    free(keys);
    kv_index_destroy(index);
}

static void test_out_of_order(void)
{
    uint32_t           ns, locs[2];
    kv_prefix_index_t *index = make_index(0, &ns);
    kvp_key_t          k[5];
    kv_index_stats_t   s;

    for (uint32_t i = 0; i < 5; i++) {
        k[i] = make_key(2, i);
    }
    /* children first: 4, 3, 2; 1 is a placeholder */
    for (int i = 4; i >= 2; i--) {
        ASSERT_OK(kv_index_store(index, ns, &k[i], &k[i - 1], KV_LOC(1 + i, 0)));
    }
    s = stats_of(index);
    ASSERT_EQ(s.entries, 4);
    ASSERT_EQ(s.cached, 0);
    ASSERT_EQ(s.locations, 3);
    ASSERT_EQ(kv_index_locations(index, ns, &k[1], locs, 2), 0);
    ASSERT_EQ(kv_index_match(index, ns, k, 5), 0);
    ASSERT_OK(kv_index_store(index, ns, &k[0], NULL, KV_LOC(1, 0)));
    ASSERT_EQ(kv_index_match(index, ns, k, 5), 1);
    ASSERT_EQ(stats_of(index).cached, 1);
    ASSERT_OK(kv_index_store(index, ns, &k[1], &k[0], KV_LOC(2, 0)));
    ASSERT_EQ(kv_index_match(index, ns, k, 5), 5);
    ASSERT_EQ(stats_of(index).cached, 5);
    ASSERT_EQ(kv_index_match(index, ns, k, 3), 3);

    /* a middle block goes: its descendants stay, uncached */
    ASSERT_EQ(kv_index_remove(index, ns, &k[2], KV_LOC(3, 0)), 1);
    ASSERT_EQ(kv_index_remove(index, ns, &k[2], KV_LOC(3, 0)), 0);
    ASSERT_EQ(kv_index_match(index, ns, k, 5), 2);
    s = stats_of(index);
    ASSERT_EQ(s.entries, 5);
    ASSERT_EQ(s.cached, 2);
    ASSERT_EQ(s.locations, 4);
    ASSERT(!kv_index_cached(index, ns, &k[4]));
    ASSERT_EQ(kv_index_locations(index, ns, &k[4], locs, 2), 1);
    ASSERT_EQ(locs[0], KV_LOC(5, 0));
    /* and comes back: the whole chain is cached again */
    ASSERT_OK(kv_index_store(index, ns, &k[2], &k[1], KV_LOC(3, 1)));
    ASSERT_EQ(kv_index_match(index, ns, k, 5), 5);

    /* the root goes: nothing is cached, everything is kept */
    ASSERT_EQ(kv_index_remove(index, ns, &k[0], KV_LOC(1, 0)), 1);
    s = stats_of(index);
    ASSERT_EQ(s.cached, 0);
    ASSERT_EQ(s.entries, 5);
    /* leaves go first, then the rest: the index empties */
    for (int i = 4; i >= 1; i--) {
        uint32_t loc = (i == 2) ? KV_LOC(3, 1) : KV_LOC(1 + i, 0);
        ASSERT_EQ(kv_index_remove(index, ns, &k[i], loc), 1);
        ASSERT_EQ(stats_of(index).entries, (uint64_t)(i == 1 ? 0 : i));
    }
    kv_index_destroy(index);
}

static void test_placeholders(void)
{
    uint32_t           ns;
    kv_prefix_index_t *index = make_index(0, &ns);
    kvp_key_t          a = make_key(3, 1), b = make_key(3, 2), c = make_key(3, 3);
    kvp_key_t          x = make_key(3, 4), y = make_key(3, 5);
    seen_t             seen;

    /* a child alone holds its parent as a placeholder, freed with it */
    ASSERT_OK(kv_index_store(index, ns, &c, &b, KV_LOC(1, 0)));
    ASSERT_EQ(stats_of(index).entries, 2);
    ASSERT(!kv_index_cached(index, ns, &c));
    ASSERT_EQ(kv_index_remove(index, ns, &c, KV_LOC(1, 0)), 1);
    ASSERT_EQ(stats_of(index).entries, 0);

    /* the first parent a key is stored with is kept */
    ASSERT_OK(kv_index_store(index, ns, &x, &a, KV_LOC(1, 0)));
    ASSERT_OK(kv_index_store(index, ns, &x, &b, KV_LOC(2, 0)));
    ASSERT_EQ(stats_of(index).entries, 2); /* x and a; b is not held */
    /* ... also when it was first stored as a chain's start */
    ASSERT_OK(kv_index_store(index, ns, &y, NULL, KV_LOC(3, 0)));
    ASSERT_OK(kv_index_store(index, ns, &y, &b, KV_LOC(4, 0)));
    ASSERT_EQ(stats_of(index).entries, 3);
    ASSERT(kv_index_cached(index, ns, &y));
    ASSERT_EQ(kv_index_remove_node(index, 3) + kv_index_remove_node(index, 4), 2);
    ASSERT_EQ(stats_of(index).entries, 2);
    ASSERT_OK(kv_index_store(index, ns, &b, NULL, KV_LOC(1, 0)));
    ASSERT(!kv_index_cached(index, ns, &x));
    ASSERT_OK(kv_index_store(index, ns, &a, NULL, KV_LOC(1, 0)));
    ASSERT(kv_index_cached(index, ns, &x));

    /* foreach_node reports that parent */
    memset(&seen, 0, sizeof(seen));
    kv_index_foreach_node(index, 2, record_cb, &seen);
    ASSERT_EQ(seen.n, 1);
    ASSERT_EQ(seen.ns[0], ns);
    ASSERT(memcmp(&seen.key[0], &x, sizeof(x)) == 0);
    ASSERT(seen.has_parent[0]);
    ASSERT(memcmp(&seen.parent[0], &a, sizeof(a)) == 0);
    ASSERT_EQ(seen.loc[0], KV_LOC(2, 0));
    memset(&seen, 0, sizeof(seen));
    kv_index_foreach_node(index, 1, record_cb, &seen);
    ASSERT_EQ(seen.n, 3); /* x, b and a */
    for (int i = 0; i < seen.n; i++) {
        int is_x = memcmp(&seen.key[i], &x, sizeof(x)) == 0;
        ASSERT_EQ(seen.has_parent[i], is_x);
    }

    /* a stored key that loses its locations but has a child stays, and is
     * forgotten with its last child */
    ASSERT_EQ(kv_index_remove(index, ns, &a, KV_LOC(1, 0)), 1);
    ASSERT_EQ(stats_of(index).entries, 3);
    ASSERT_EQ(kv_index_remove_node(index, 1), 2); /* x's and b's copies on node 1 */
    ASSERT_EQ(stats_of(index).entries, 2);        /* x (on node 2) and a */
    ASSERT_EQ(kv_index_remove_node(index, 2), 1);
    ASSERT_EQ(stats_of(index).entries, 0);
    ASSERT_EQ(stats_of(index).locations, 0);
    kv_index_destroy(index);
}

static int has_loc(const uint32_t *locs, size_t n, uint32_t loc)
{
    for (size_t i = 0; i < n; i++) {
        if (locs[i] == loc) {
            return 1;
        }
    }
    return 0;
}

static void test_locations(void)
{
    uint32_t           ns, locs[8];
    kv_prefix_index_t *index = make_index(0, &ns);
    kvp_key_t          a = make_key(4, 1), b = make_key(4, 2);
    const uint32_t     want[] = {KV_LOC(1, 0), KV_LOC(1, 1), KV_LOC(2, 0),
                                 KV_LOC(3, 2), KV_LOC(4, 0)};

    for (size_t i = 0; i < 5; i++) {
        ASSERT_OK(kv_index_store(index, ns, &a, NULL, want[i]));
        ASSERT_OK(kv_index_store(index, ns, &a, NULL, want[i])); /* again: no-op */
        ASSERT_EQ(kv_index_locations(index, ns, &a, locs, 8), i + 1);
        ASSERT_EQ(stats_of(index).locations, i + 1);
    }
    ASSERT_OK(kv_index_store(index, ns, &b, &a, KV_LOC(2, 0)));
    ASSERT_EQ(kv_index_locations(index, ns, &a, locs, 8), 5);
    for (size_t i = 0; i < 5; i++) {
        ASSERT(has_loc(locs, 5, want[i]));
    }
    memset(locs, 0, sizeof(locs));
    ASSERT_EQ(kv_index_locations(index, ns, &a, locs, 2), 5); /* copies 2 */
    ASSERT(has_loc(want, 5, locs[0]) && has_loc(want, 5, locs[1]));
    ASSERT_EQ(locs[2], 0);

    /* node 1 holds a on two tiers: both go */
    ASSERT_EQ(kv_index_remove_node(index, 1), 2);
    ASSERT_EQ(kv_index_locations(index, ns, &a, locs, 8), 3);
    ASSERT(!has_loc(locs, 3, KV_LOC(1, 0)) && !has_loc(locs, 3, KV_LOC(1, 1)));
    ASSERT_EQ(kv_index_remove(index, ns, &a, KV_LOC(3, 2)), 1);
    ASSERT_EQ(kv_index_remove(index, ns, &a, KV_LOC(3, 2)), 0);
    ASSERT_EQ(kv_index_remove(index, ns, &a, KV_LOC(4, 0)), 1);
    ASSERT_EQ(kv_index_locations(index, ns, &a, locs, 8), 1); /* back in the entry */
    ASSERT_EQ(locs[0], KV_LOC(2, 0));
    ASSERT(kv_index_cached(index, ns, &b));
    /* node 2 holds both: everything goes */
    ASSERT_EQ(kv_index_remove_node(index, 2), 2);
    ASSERT_EQ(stats_of(index).entries, 0);
    ASSERT_EQ(stats_of(index).cached, 0);
    ASSERT_EQ(stats_of(index).locations, 0);
    /* the freed sets are reused */
    for (size_t i = 0; i < 5; i++) {
        ASSERT_OK(kv_index_store(index, ns, &b, NULL, want[i]));
    }
    ASSERT_EQ(kv_index_locations(index, ns, &b, locs, 8), 5);
    kv_index_destroy(index);
}

/*
 * 100k blocks with one location each, in chains of 64..512, from an index
 * created without a hint (so after growth).
 */
static void test_memory_per_block(void)
{
    const uint32_t     total = 100000;
    uint32_t           ns, made = 0, chain = 0, on_node_3 = 0;
    kv_prefix_index_t *index = make_index(0, &ns);
    kvp_key_t          prev;
    kv_index_stats_t   s;
    uint64_t           rng = 7;

    while (made < total) {
        uint32_t len = 64 + (uint32_t)rng_below(&rng, 449);

        for (uint32_t i = 0; i < len && made < total; i++, made++) {
            kvp_key_t key = make_key(chain, i);
            ASSERT_OK(kv_index_store(index, ns, &key, i ? &prev : NULL,
                                     KV_LOC(1 + made % 7, 0)));
            on_node_3 += (1 + made % 7) == 3;
            prev = key;
        }
        chain++;
    }
    s = stats_of(index);
    ASSERT_EQ(s.entries, total);
    ASSERT_EQ(s.cached, total);
    ASSERT_EQ(s.locations, total);
    fprintf(stderr, "%.1f bytes per block\n", (double)s.bytes / total);
    ASSERT_LE(s.bytes, 100ull * total);
    ASSERT(s.bytes >= 40ull * total); /* counts the entries, at least */
    ASSERT_EQ(kv_index_remove_node(index, 3), on_node_3);
    kv_index_destroy(index);
}

/*
 * The model: a forest of nkeys keys per namespace (key j's parent is a key
 * before it, mostly j - 1, or none), with a location mask per key and the
 * parent each key was stored with, as the header defines them.
 */
#define KEYS_MAX 1500
#define NS      2
#define NO_REC  (-2) /* not stored since held: no recorded parent */
#define ROOT    (-1)

typedef struct model {
    kv_prefix_index_t *index;
    uint32_t           ns_ids[NS];
    int                parent[NS][KEYS_MAX];    /* the true forest */
    uint8_t            locs[NS][KEYS_MAX];      /* bit b: model_loc(b) */
    int                recorded[NS][KEYS_MAX];  /* NO_REC, ROOT or a key */
    uint8_t            held[NS][KEYS_MAX];
    uint8_t            cached[NS][KEYS_MAX];
    kvp_key_t          keys[NS][KEYS_MAX];
    int                nkeys;
} model_t;

/*
 * After every change: recompute which keys are held and cached, and forget
 * the parents of the others (a key stored again after being forgotten
 * takes the parent of that store).
 */
static void model_update(model_t *m)
{
    for (int n = 0; n < NS; n++) {
        memset(m->held[n], 0, sizeof(m->held[n]));
        for (int j = 0; j < m->nkeys; j++) {
            for (int k = j; m->locs[n][j] != 0 && k >= 0 && !m->held[n][k];
                 k = m->recorded[n][k]) {
                m->held[n][k] = 1;
            }
        }
        for (int j = 0; j < m->nkeys; j++) {
            int r;

            if (!m->held[n][j]) {
                m->recorded[n][j] = NO_REC;
            }
            r = m->recorded[n][j];
            /* parents come before children, so cached[r] is final */
            m->cached[n][j] = m->held[n][j] && m->locs[n][j] != 0 &&
                              (r == ROOT || (r >= 0 && m->cached[n][r]));
        }
    }
}

static void model_count(const model_t *m, uint64_t *entries, uint64_t *cached,
                        uint64_t *locs)
{
    *entries = *cached = *locs = 0;
    for (int n = 0; n < NS; n++) {
        for (int j = 0; j < m->nkeys; j++) {
            *entries += m->held[n][j];
            *cached  += m->cached[n][j];
            *locs    += (uint64_t)__builtin_popcount(m->locs[n][j]);
        }
    }
}

/* The chain ending at key j: its keys root first; returns its length. */
static size_t model_chain(const model_t *m, int n, int j, kvp_key_t *out, int *idx)
{
    size_t len = 0;

    for (int k = j; k >= 0; k = m->parent[n][k]) {
        len++;
    }
    for (size_t i = len; j >= 0; j = m->parent[n][j]) {
        i--;
        out[i] = m->keys[n][j];
        idx[i] = j;
    }
    return len;
}

typedef struct node_check {
    const model_t *m;
    uint32_t       node;
    size_t         calls;
} node_check_t;

static int check_node_cb(uint32_t ns_id, const kvp_key_t *key,
                         const kvp_key_t *parent, uint32_t loc, void *arg)
{
    node_check_t *c = arg;
    int           n = -1, j, r;

    for (int i = 0; i < NS; i++) {
        if (c->m->ns_ids[i] == ns_id) {
            n = i;
        }
    }
    ASSERT(n >= 0);
    memcpy(&j, key->bytes + 4, sizeof(j));
    ASSERT(j >= 0 && j < c->m->nkeys);
    ASSERT(memcmp(key, &c->m->keys[n][j], sizeof(*key)) == 0);
    ASSERT_EQ(KV_LOC_NODE(loc), c->node);
    ASSERT(c->m->locs[n][j] & (1u << ((KV_LOC_NODE(loc) - 1) * TIERS + KV_LOC_TIER(loc))));
    r = c->m->recorded[n][j];
    ASSERT(r != NO_REC);
    if (r == ROOT) {
        ASSERT(parent == NULL);
    } else {
        ASSERT(parent != NULL);
        ASSERT(memcmp(parent, &c->m->keys[n][r], sizeof(*parent)) == 0);
    }
    c->calls++;
    return 0;
}

/* Every key, every node and a few chains against the model. */
static void model_check(model_t *m, uint64_t *rng)
{
    uint64_t         entries, cached, locs;
    kv_index_stats_t s = stats_of(m->index);
    uint32_t         got[MODEL_LOCS + 1];
    kvp_key_t        chain[KEYS_MAX];
    int              idx[KEYS_MAX];

    model_count(m, &entries, &cached, &locs);
    ASSERT_EQ(s.entries, entries);
    ASSERT_EQ(s.cached, cached);
    ASSERT_EQ(s.locations, locs);
    for (int n = 0; n < NS; n++) {
        for (int j = 0; j < m->nkeys; j++) {
            size_t count = kv_index_locations(m->index, m->ns_ids[n], &m->keys[n][j],
                                              got, MODEL_LOCS + 1);

            ASSERT_EQ(kv_index_cached(m->index, m->ns_ids[n], &m->keys[n][j]),
                      m->cached[n][j]);
            ASSERT_EQ(count, __builtin_popcount(m->locs[n][j]));
            for (int b = 0; b < MODEL_LOCS; b++) {
                ASSERT_EQ(has_loc(got, count, model_loc(b)), (m->locs[n][j] >> b) & 1);
            }
        }
    }
    for (uint32_t node = 1; node <= NODES; node++) {
        node_check_t c = {m, node, 0};
        size_t       want = 0;

        for (int n = 0; n < NS; n++) {
            for (int j = 0; j < m->nkeys; j++) {
                want += (size_t)__builtin_popcount((m->locs[n][j] >> ((node - 1) * TIERS)) &
                                                   ((1u << TIERS) - 1));
            }
        }
        kv_index_foreach_node(m->index, node, check_node_cb, &c);
        ASSERT_EQ(c.calls, want);
    }
    for (int t = 0; t < 8; t++) {
        int    n   = (int)rng_below(rng, NS);
        size_t len = model_chain(m, n, (int)rng_below(rng, (size_t)m->nkeys), chain, idx);
        size_t brute = 0;

        while (brute < len && m->cached[n][idx[brute]]) {
            brute++;
        }
        /* prefix-closed: nothing cached past the first uncached block */
        for (size_t i = brute; i < len; i++) {
            ASSERT(!kv_index_cached(m->index, m->ns_ids[n], &chain[i]));
        }
        ASSERT_EQ(kv_index_match(m->index, m->ns_ids[n], chain, len), brute);
        for (size_t cut = 0; cut <= len; cut += 1 + rng_below(rng, 4)) {
            ASSERT_EQ(kv_index_match(m->index, m->ns_ids[n], chain, cut),
                      cut < brute ? cut : brute);
        }
    }
}

/*
 * @p ops random operations on @p nkeys keys per namespace; in the first
 * half, per mille stores below grow[0] and removals below grow[1].
 */
static void model_run(uint64_t seed, int nkeys, int ops, const size_t grow[2])
{
    model_t *m   = calloc(1, sizeof(*m));
    uint64_t rng = seed;
    char     name[16];

    ASSERT(m != NULL);
    ASSERT(nkeys <= KEYS_MAX);
    m->nkeys = nkeys;
    ASSERT_OK(kv_index_create(0, &m->index));
    for (int n = 0; n < NS; n++) {
        int len = snprintf(name, sizeof(name), "ns%d", n);
        ASSERT_OK(kv_index_ns_id(m->index, name, (size_t)len, 1, &m->ns_ids[n]));
        for (int j = 0; j < m->nkeys; j++) {
            size_t r = rng_below(&rng, 10);

            /* chains (j - 1), branches (any earlier key) and new roots */
            m->parent[n][j]   = (j == 0 || r == 0) ? ROOT
                                : (r < 8) ? j - 1 : (int)rng_below(&rng, (size_t)j);
            m->recorded[n][j] = NO_REC;
            m->keys[n][j]     = make_key((uint32_t)n * 7 + 1, (uint32_t)j);
        }
    }
    for (int op = 0; op < ops; op++) {
        int      n = (int)rng_below(&rng, NS), j = (int)rng_below(&rng, (size_t)m->nkeys);
        int      b = (int)rng_below(&rng, MODEL_LOCS), p = m->parent[n][j];
        uint32_t ns = m->ns_ids[n];
        size_t   what = rng_below(&rng, 1000);
        /* per mille: stores, then removals, the rest drops a node */
        size_t   stores = (op < ops / 2) ? grow[0] : 550;
        size_t   removes = (op < ops / 2) ? grow[1] : 970;

        if (what < stores) {
            ASSERT_OK(kv_index_store(m->index, ns, &m->keys[n][j],
                                     p >= 0 ? &m->keys[n][p] : NULL, model_loc(b)));
            if (m->recorded[n][j] == NO_REC) {
                m->recorded[n][j] = p;
            }
            m->locs[n][j] |= (uint8_t)(1u << b);
        } else if (what < removes) {
            /* mostly a location the key has: evictions */
            if (m->locs[n][j] != 0 && rng_below(&rng, 4) != 0) {
                while (!((m->locs[n][j] >> b) & 1)) {
                    b = (b + 1) % MODEL_LOCS;
                }
            }
            ASSERT_EQ(kv_index_remove(m->index, ns, &m->keys[n][j], model_loc(b)),
                      (m->locs[n][j] >> b) & 1);
            m->locs[n][j] &= (uint8_t)~(1u << b);
        } else {
            uint32_t node = 1 + (uint32_t)rng_below(&rng, NODES);
            uint8_t  mask = (uint8_t)(((1u << TIERS) - 1) << ((node - 1) * TIERS));
            size_t   want = 0;

            for (int nn = 0; nn < NS; nn++) {
                for (int k = 0; k < m->nkeys; k++) {
                    want += (size_t)__builtin_popcount(m->locs[nn][k] & mask);
                    m->locs[nn][k] &= (uint8_t)~mask;
                }
            }
            ASSERT_EQ(kv_index_remove_node(m->index, node), want);
        }
        model_update(m);
        if (op % 16 == 0 || op == ops - 1) {
            model_check(m, &rng);
        }
    }
    kv_index_destroy(m->index);
    free(m);
}

static void test_random_against_model(void)
{
    static const size_t steady[2] = {550, 970}, growing[2] = {900, 998};

    for (uint64_t seed = 1; seed <= 16; seed++) {
        model_run(seed, 160, 6000, steady); /* most keys come and go often */
    }
    /* more keys than the smallest index holds: growth, rehash, reuse */
    model_run(17, KEYS_MAX, 30000, growing);
}

/* Growth from the smallest size with keys stored children first. */
static void test_growth_out_of_order(void)
{
    const uint32_t     len = 3000, chains = 4; /* len even */
    uint32_t           ns;
    kv_prefix_index_t *index = make_index(0, &ns);
    kvp_key_t         *keys  = calloc(len, sizeof(*keys));

    ASSERT(keys != NULL);
    for (uint32_t c = 0; c < chains; c++) {
        for (uint32_t i = 0; i < len; i++) {
            keys[i] = make_key(100 + c, i);
        }
        /* every other block first (each with its parent a placeholder),
         * then the rest from the end */
        for (uint32_t i = 1; i < len; i += 2) {
            ASSERT_OK(kv_index_store(index, ns, &keys[i], &keys[i - 1], KV_LOC(1, 0)));
        }
        ASSERT_EQ(kv_index_match(index, ns, keys, len), 0);
        for (int i = (int)len - 2; i >= 0; i -= 2) {
            ASSERT_OK(kv_index_store(index, ns, &keys[i], i ? &keys[i - 1] : NULL,
                                     KV_LOC(2, 0)));
            ASSERT_EQ(kv_index_match(index, ns, keys, len), i == 0 ? len : 0);
        }
        ASSERT_EQ(kv_index_remove(index, ns, &keys[len / 2], KV_LOC(1, 0)) +
                  kv_index_remove(index, ns, &keys[len / 2], KV_LOC(2, 0)), 1);
        ASSERT_EQ(kv_index_match(index, ns, keys, len), len / 2);
    }
    ASSERT_EQ(stats_of(index).entries, chains * len);
    ASSERT_EQ(stats_of(index).cached, chains * (len / 2));
    ASSERT_EQ(kv_index_remove_node(index, 1), chains * (len / 2)); /* the odd blocks */
    ASSERT_EQ(stats_of(index).cached, chains); /* the first blocks */
    kv_index_destroy(index);
    free(keys);
}

KV_TEST_MAIN(KV_TEST(test_create_params), KV_TEST(test_namespaces),
             KV_TEST(test_bad_arguments), KV_TEST(test_chain_limit),
             KV_TEST(test_out_of_order), KV_TEST(test_placeholders),
             KV_TEST(test_locations), KV_TEST(test_memory_per_block),
             KV_TEST(test_random_against_model), KV_TEST(test_growth_out_of_order))
