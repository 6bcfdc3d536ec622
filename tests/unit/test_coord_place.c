/*
 * Unit tests of the coordinator's node table (coord_members.c) and of
 * placement (coord_place.c), on synthetic nodes: ids, lookups and expiry;
 * chains kept together, spread by weight, spilled when a node is full,
 * kept on the node holding their prefix while that node has not received
 * more than its share recently, spread when they share only a first
 * block, refused when too large, and replicas on distinct nodes.
 */
#include "coord_int.h"

#include <kv/util.h>

#include <test.h>
#include <test_util.h>

#define GiB (1024 * MiB)

/* A table of @p n nodes with @p free_bytes[i] free of @p capacity each. */
static kv_coord_members_t *members_make(size_t n, const uint64_t *free_bytes,
                                        uint64_t capacity)
{
    kv_coord_members_t *members;

    ASSERT_OK(kv_coord_members_create(64, &members));
    for (size_t i = 0; i < n; i++) {
        kv_coord_member_t proto = {0}, *m;

        snprintf(proto.name, sizeof(proto.name), "n%zu", i);
        snprintf(proto.address, sizeof(proto.address), "10.0.0.%zu:7070", i + 1);
        proto.incarnation    = i + 1;
        proto.capacity_bytes = capacity;
        proto.free_bytes     = free_bytes[i];
        proto.deadline_ns    = UINT64_MAX;
        ASSERT_OK(kv_coord_members_add(members, &proto, NULL, 0, 0, &m));
        ASSERT_EQ(m->id, i + 1);
    }
    return members;
}

static kvp_status_t place(kv_coord_members_t *members, const kvp_key_t *first,
                          const uint64_t *sizes, size_t count, uint32_t replicas,
                          const uint32_t *prefer, size_t n_prefer, uint32_t *targets,
                          uint32_t *replica_nodes)
{
    kv_coord_place_req_t req = {first, sizes, count, replicas, prefer, n_prefer};
    char                 err[200] = "";
    kvp_status_t         status;

    status = kv_coord_place(members, &req, targets, replica_nodes, err, sizeof(err));
    ASSERT(status == KVP_OK || err[0] != '\0');
    return status;
}

static void fill(uint64_t *sizes, size_t n, uint64_t size)
{
    for (size_t i = 0; i < n; i++) {
        sizes[i] = size;
    }
}

static void test_members(void)
{
    kv_coord_members_t *members;
    kv_coord_member_t   proto = {0}, *a, *b, *c;

    ASSERT_STATUS(kv_coord_members_create(0, &members), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_coord_members_create(KV_COORD_NODE_MAX + 1, &members),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_OK(kv_coord_members_create(2, &members));
    snprintf(proto.address, sizeof(proto.address), "a:1");
    proto.deadline_ns = 100;
    ASSERT_OK(kv_coord_members_add(members, &proto, "xy", 2, 0, &a));
    snprintf(proto.address, sizeof(proto.address), "b:1");
    proto.deadline_ns = 200;
    ASSERT_OK(kv_coord_members_add(members, &proto, NULL, 0, 0, &b));
    ASSERT_EQ(a->id, 1);
    ASSERT_EQ(b->id, 2);
    ASSERT(memcmp(a->data_plane, "xy", 2) == 0 && a->data_plane_len == 2);
    ASSERT_STATUS(kv_coord_members_add(members, &proto, NULL, 0, 0, &c), KVP_ERR_NO_SPACE);
    ASSERT(kv_coord_members_find(members, 1) == a);
    ASSERT(kv_coord_members_find(members, 0) == NULL);
    ASSERT(kv_coord_members_find(members, 3) == NULL);
    ASSERT(kv_coord_members_find(members, KV_COORD_NODE_MAX + 1) == NULL);
    ASSERT(kv_coord_members_find_address(members, "b:1") == b);
    ASSERT(kv_coord_members_find_address(members, "c:1") == NULL);
    ASSERT(kv_coord_members_expired(members, 50) == NULL);
    ASSERT(kv_coord_members_expired(members, 150) == a);

    /* a freed id is not handed out again before the others */
    kv_coord_members_remove(members, a);
    ASSERT_EQ(kv_coord_members_count(members), 1);
    ASSERT(kv_coord_members_at(members, 0) == b);
    snprintf(proto.address, sizeof(proto.address), "c:1");
    ASSERT_OK(kv_coord_members_add(members, &proto, NULL, 0, 0, &c));
    ASSERT_EQ(c->id, 3);
    kv_coord_members_remove(members, c);
    /* ... unless asked for (a re-join of the same incarnation) */
    ASSERT_OK(kv_coord_members_add(members, &proto, NULL, 0, 3, &c));
    ASSERT_EQ(c->id, 3);
    kv_coord_members_destroy(members);
}

static void test_no_node_and_too_large(void)
{
    static const uint64_t free_bytes[2] = {GiB, GiB};
    kv_coord_members_t   *members;
    kvp_key_t             first = key_of("chain");
    uint64_t              sizes[3];
    uint32_t              targets[3];

    ASSERT_OK(kv_coord_members_create(4, &members));
    fill(sizes, 3, MiB);
    ASSERT_STATUS(place(members, &first, sizes, 3, 1, NULL, 0, targets, NULL),
                  KVP_ERR_NO_SPACE);
    kv_coord_members_destroy(members);

    members  = members_make(2, free_bytes, 2 * GiB);
    sizes[2] = 2 * GiB + 1;
    ASSERT_STATUS(place(members, &first, sizes, 3, 1, NULL, 0, targets, NULL),
                  KVP_ERR_TOO_LARGE);
    /* refused whole: nothing was planned */
    for (size_t i = 0; i < 2; i++) {
        ASSERT_EQ(kv_coord_members_at(members, i)->planned_bytes, 0);
    }
    kv_coord_members_destroy(members);
}

static void test_chains_together_and_spread(void)
{
    enum { NODES = 4, CHAINS = 400, LEN = 8 };
    static const uint64_t free_bytes[NODES] = {GiB, GiB, GiB, GiB};
    kv_coord_members_t   *members = members_make(NODES, free_bytes, GiB);
    kv_coord_members_t   *twin    = members_make(NODES, free_bytes, GiB);
    uint64_t              sizes[LEN];
    uint32_t              targets[LEN], again[LEN];
    int                   per_node[NODES + 1] = {0};

    fill(sizes, LEN, 64 * KiB);
    for (int c = 0; c < CHAINS; c++) {
        kvp_key_t first = key_of("chain-%d", c);

        ASSERT_OK(place(members, &first, sizes, LEN, 1, NULL, 0, targets, NULL));
        for (int i = 1; i < LEN; i++) {
            ASSERT_EQ(targets[i], targets[0]);
        }
        per_node[targets[0]]++;
        /* the same question to the same state gets the same answer */
        ASSERT_OK(place(twin, &first, sizes, LEN, 1, NULL, 0, again, NULL));
        ASSERT(memcmp(again, targets, sizeof(targets)) == 0);
    }
    for (int n = 1; n <= NODES; n++) {
        ASSERT_LE(CHAINS / NODES / 2, per_node[n]); /* roughly even */
    }
    kv_coord_members_destroy(twin);
    kv_coord_members_destroy(members);
}

static void test_weights(void)
{
    enum { CHAINS = 2000 };
    /* node 1 nearly full, node 2 empty; same capacity */
    static const uint64_t free_bytes[2] = {GiB / 16, GiB};
    kv_coord_members_t   *members = members_make(2, free_bytes, GiB);
    uint64_t              size    = 4 * KiB;
    uint32_t              target;
    int                   per_node[3] = {0};

    for (int c = 0; c < CHAINS; c++) {
        kvp_key_t first = key_of("w-%d", c);

        ASSERT_OK(place(members, &first, &size, 1, 1, NULL, 0, &target, NULL));
        per_node[target]++;
    }
    /* weights (free + capacity): 17 : 32 */
    ASSERT_LE(per_node[1] * 3 / 2, per_node[2]);
    ASSERT_LE(CHAINS / 5, per_node[1]);

    /* load halves a node's weight at 16 requests in flight */
    kv_coord_members_at(members, 1)->load = 1000;
    per_node[1] = per_node[2] = 0;
    for (int c = 0; c < CHAINS; c++) {
        kvp_key_t first = key_of("l-%d", c);

        ASSERT_OK(place(members, &first, &size, 1, 1, NULL, 0, &target, NULL));
        per_node[target]++;
    }
    ASSERT_LE(per_node[2] * 4, per_node[1]);
    kv_coord_members_destroy(members);
}

static void test_spill_and_full_pool(void)
{
    enum { NODES = 3, LEN = 50 }; /* exactly the room of all nodes */
    static const uint64_t free_bytes[NODES] = {10 * MiB, 10 * MiB, 30 * MiB};
    kv_coord_members_t   *members = members_make(NODES, free_bytes, 32 * MiB);
    kvp_key_t             first   = key_of("spill");
    uint64_t              sizes[LEN], per_node[NODES + 1] = {0};
    uint32_t              targets[LEN];
    int                   runs = 1;

    fill(sizes, LEN, MiB);
    ASSERT_OK(place(members, &first, sizes, LEN, 1, NULL, 0, targets, NULL));
    for (int i = 0; i < LEN; i++) {
        per_node[targets[i]] += sizes[i];
        runs += i > 0 && targets[i] != targets[i - 1];
    }
    ASSERT_LE(runs, NODES);
    for (int n = 1; n <= NODES; n++) {
        ASSERT_EQ(per_node[n], free_bytes[n - 1]);
        ASSERT_EQ(kv_coord_members_find(members, (uint32_t)n)->planned_bytes, per_node[n]);
    }
    /* now no node has room: a new chain stays on one node (it evicts) */
    first = key_of("full");
    ASSERT_OK(place(members, &first, sizes, 8, 1, NULL, 0, targets, NULL));
    for (int i = 1; i < 8; i++) {
        ASSERT_EQ(targets[i], targets[0]);
    }
    kv_coord_members_destroy(members);
}

static void test_prefer_prefix_node(void)
{
    static const uint64_t free_bytes[3] = {GiB, GiB, GiB};
    kv_coord_members_t   *members = members_make(3, free_bytes, GiB);
    uint64_t              sizes[4];
    uint32_t              targets[4], prefer[2] = {77, 0}, natural;
    kvp_key_t             first = key_of("prefix");

    fill(sizes, 4, MiB);
    ASSERT_OK(place(members, &first, sizes, 1, 1, NULL, 0, &natural, NULL));
    prefer[1] = natural % 3 + 1; /* another node (77 is no node) */
    ASSERT_OK(place(members, &first, sizes, 4, 1, prefer, 2, targets, NULL));
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(targets[i], prefer[1]);
    }
    /* a preferred node without room is passed over */
    kv_coord_members_find(members, prefer[1])->free_bytes = MiB / 2;
    ASSERT_OK(place(members, &first, sizes, 4, 1, prefer, 2, targets, NULL));
    ASSERT_NE(targets[0], prefer[1]);
    kv_coord_members_destroy(members);
}

/* @p n chains "NAME-c" of @p len blocks of @p size continuing a cached
 * block held by @p holder (0: none); per_node[id] counts where they start. */
static void place_chains(kv_coord_members_t *members, const char *name, int n, int len,
                         uint64_t size, uint32_t holder, int *per_node)
{
    uint64_t sizes[64];
    uint32_t targets[64];

    ASSERT(len <= 64);
    fill(sizes, (size_t)len, size);
    for (int c = 0; c < n; c++) {
        kvp_key_t first_new = key_of("%s-%d", name, c);

        ASSERT_OK(place(members, &first_new, sizes, (size_t)len, 1, &holder,
                        holder != 0, targets, NULL));
        for (int i = 1; i < len; i++) {
            ASSERT_EQ(targets[i], targets[0]); /* each chain together */
        }
        if (per_node != NULL) {
            per_node[targets[0]]++;
        }
    }
}

/*
 * 1000 conversations sharing one cached system-prompt block (held by node
 * 1) and differing after it spread over 3 equal nodes, with free room and
 * in a full pool: the holder keeps only about its share.
 */
static void test_shared_first_block_spreads(void)
{
    enum { NODES = 3, CHAINS = 1000 };
    static const uint64_t roomy[NODES] = {GiB, GiB, GiB}, full[NODES] = {0, 0, 0};
    const uint64_t       *free_bytes[2] = {roomy, full};

    for (int f = 0; f < 2; f++) {
        kv_coord_members_t *members = members_make(NODES, free_bytes[f], GiB);
        int                 per_node[NODES + 1] = {0};

        /* 2 GiB in all: each node's share stays under its room */
        place_chains(members, "conv", CHAINS, 8, 256 * KiB, 1, per_node);
        for (int n = 1; n <= NODES; n++) {
            ASSERT_LE(CHAINS * 20 / 100, per_node[n]);
            ASSERT_LE(per_node[n], CHAINS * 47 / 100);
        }
        kv_coord_members_destroy(members);
    }
}

/*
 * In a balanced pool a continuation stays on the node of its prefix, with
 * room or (a full pool) without: even on a node its key would not rank first.
 */
static void test_continue_on_holder(void)
{
    enum { NODES = 3 };
    static const uint64_t roomy[NODES] = {GiB, GiB, GiB}, full[NODES] = {0, 0, 0};
    const uint64_t       *free_bytes[2] = {roomy, full};

    for (int f = 0; f < 2; f++) {
        kv_coord_members_t *members = members_make(NODES, free_bytes[f], GiB);
        uint64_t            sizes[6];
        uint32_t            targets[6];

        /* a balanced history: 300 chains of 512 KiB by rendezvous alone */
        place_chains(members, "hist", 300, 8, 64 * KiB, 0, NULL);
        fill(sizes, 6, 64 * KiB);
        for (uint32_t h = 1; h <= NODES; h++) {
            for (int c = 0; c < 20; c++) {
                kvp_key_t next = key_of("cont-%u-%d", h, c);

                ASSERT_OK(place(members, &next, sizes, 6, 1, &h, 1, targets, NULL));
                for (int i = 0; i < 6; i++) {
                    ASSERT_EQ(targets[i], h);
                }
            }
        }
        kv_coord_members_destroy(members);
    }
}

/*
 * A holder with more than half its room free keeps its continuations,
 * however much more than its share it received: they cost no eviction.
 */
static void test_roomy_holder_keeps_chains(void)
{
    enum { NODES = 3, LEN = 64 };
    static const uint64_t roomy[NODES] = {GiB, GiB, GiB};
    kv_coord_members_t   *members = members_make(NODES, roomy, GiB);
    kvp_key_t             first   = key_of("lonely");
    uint64_t              sizes[LEN];
    uint32_t              targets[LEN], holder;

    fill(sizes, LEN, MiB);
    ASSERT_OK(place(members, &first, sizes, LEN, 1, NULL, 0, targets, NULL));
    holder = targets[0];
    for (int c = 0; c < 20; c++) {
        kvp_key_t next = key_of("lonely-cont-%d", c);

        ASSERT_OK(place(members, &next, sizes, 4, 1, &holder, 1, targets, NULL));
        for (int i = 0; i < 4; i++) {
            ASSERT_EQ(targets[i], holder);
        }
    }
    kv_coord_members_destroy(members);
}

/*
 * A holder that received far more than its share recently gets no
 * continuations (they go elsewhere, still together) until the others
 * catch up; a holder that did not still gets its own.
 */
static void test_overloaded_holder_skipped(void)
{
    enum { NODES = 3, BIG = 256 };
    /* half free: after the hog's 256 MiB, its node is more than half full */
    static const uint64_t roomy[NODES] = {GiB / 2, GiB / 2, GiB / 2},
                          full[NODES]  = {0, 0, 0};
    const uint64_t       *free_bytes[2] = {roomy, full};

    for (int f = 0; f < 2; f++) {
        kv_coord_members_t *members = members_make(NODES, free_bytes[f], GiB);
        kvp_key_t           first   = key_of("hog");
        uint64_t            sizes[BIG];
        uint32_t            targets[BIG], hog, other;
        int                 per_node[NODES + 1] = {0};

        /* 256 MiB in one chain, all on one node */
        fill(sizes, BIG, MiB);
        ASSERT_OK(place(members, &first, sizes, BIG, 1, NULL, 0, targets, NULL));
        hog = targets[0];
        for (int i = 1; i < BIG; i++) {
            ASSERT_EQ(targets[i], hog);
        }
        /* its continuations go elsewhere */
        place_chains(members, "after-hog", 50, 4, MiB, hog, per_node);
        ASSERT_EQ(per_node[hog], 0);
        /* another holder's continuation stays on it */
        other = hog % NODES + 1;
        first = key_of("other");
        ASSERT_OK(place(members, &first, sizes, 4, 1, &other, 1, targets, NULL));
        for (int i = 0; i < 4; i++) {
            ASSERT_EQ(targets[i], other);
        }
        /* once the others received as much, the hog's turn comes again */
        place_chains(members, "catch-up", 300, 4, MiB, 0, NULL);
        first = key_of("hog-again");
        ASSERT_OK(place(members, &first, sizes, 4, 1, &hog, 1, targets, NULL));
        ASSERT_EQ(targets[0], hog);
        kv_coord_members_destroy(members);
    }
}

/*
 * Balance never beats capacity: a block only an over node can hold goes
 * there, and the over node's free room is used before others evict.
 */
static void test_balance_within_capacity(void)
{
    static const uint64_t free_bytes[3] = {0, 0, 64 * MiB};
    kv_coord_members_t   *members;
    kv_coord_member_t    *big;
    uint64_t              sizes[16];
    uint32_t              targets[16], holder = 1;
    kvp_key_t             first;

    members = members_make(3, free_bytes, 16 * MiB);
    big     = kv_coord_members_find(members, 3);
    big->capacity_bytes = 256 * MiB;
    /* node 3 gets 40 MiB: its room, and over its recent share */
    fill(sizes, 16, 2500 * KiB);
    first = key_of("fill-3");
    ASSERT_OK(place(members, &first, sizes, 16, 1, NULL, 0, targets, NULL));
    for (int i = 0; i < 16; i++) {
        ASSERT_EQ(targets[i], 3);
    }
    /* a continuation of node 1 with room only on node 3 goes there */
    fill(sizes, 4, MiB);
    first = key_of("room-3");
    ASSERT_OK(place(members, &first, sizes, 4, 1, &holder, 1, targets, NULL));
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(targets[i], 3);
    }
    /* a block only node 3 can hold goes there, room or not */
    big->free_bytes = 0;
    sizes[0]        = 32 * MiB;
    first           = key_of("only-3");
    ASSERT_OK(place(members, &first, sizes, 1, 1, &holder, 1, targets, NULL));
    ASSERT_EQ(targets[0], 3);
    /* and with no room anywhere, a small continuation stays on its holder */
    sizes[0] = MiB;
    first    = key_of("evict-1");
    ASSERT_OK(place(members, &first, sizes, 4, 1, &holder, 1, targets, NULL));
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(targets[i], 1);
    }
    kv_coord_members_destroy(members);
}

static void test_replicas(void)
{
    enum { LEN = 12 };
    /* node 1 holds 4 blocks, the others plenty: copies move around */
    static const uint64_t free_bytes[3] = {4 * MiB, GiB, GiB};
    kv_coord_members_t   *members = members_make(3, free_bytes, GiB);
    uint64_t              sizes[LEN];
    uint32_t              targets[LEN], replicas[3 * LEN];
    kvp_key_t             first;

    fill(sizes, LEN, MiB);
    for (int c = 0; c < 50; c++) {
        first = key_of("rep-%d", c);

        ASSERT_OK(place(members, &first, sizes, LEN, 3, NULL, 0, targets, replicas));
        for (int i = 0; i < LEN; i++) {
            uint32_t a = targets[i], b = replicas[2 * i], d = replicas[2 * i + 1];
            ASSERT(a != 0 && b != 0 && d != 0);
            ASSERT(a != b && a != d && b != d);
        }
    }
    /* more copies than nodes: the extra ones have no node */
    first = key_of("rep-more");
    ASSERT_OK(place(members, &first, sizes, 1, 4, NULL, 0, targets, replicas));
    ASSERT_NE(replicas[0], 0);
    ASSERT_NE(replicas[1], 0);
    ASSERT_EQ(replicas[2], 0);
    kv_coord_members_destroy(members);
}

KV_TEST_MAIN(KV_TEST(test_members), KV_TEST(test_no_node_and_too_large),
             KV_TEST(test_chains_together_and_spread), KV_TEST(test_weights),
             KV_TEST(test_spill_and_full_pool), KV_TEST(test_prefer_prefix_node),
             KV_TEST(test_shared_first_block_spreads),
             KV_TEST(test_continue_on_holder), KV_TEST(test_overloaded_holder_skipped),
             KV_TEST(test_roomy_holder_keeps_chains),
             KV_TEST(test_balance_within_capacity), KV_TEST(test_replicas))
