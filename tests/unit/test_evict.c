/*
 * Unit tests of the eviction policies (pool/evict.c, <kvstore/evict.h>),
 * and of the node's eviction_policy setting.
 */
#include "node.h"

#include <kv/util.h>
#include <kvstore/evict.h>
#include <test.h>

#define MODEL_SLOTS 48

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static size_t slot_of(const kv_evict_entry_t *entries, const kv_evict_entry_t *e)
{
    return (size_t)(e - entries);
}

/* Pop the next victim and check that it is @entries[@want]. */
static void expect_pop(kv_evict_t *policy, const kv_evict_entry_t *entries,
                       size_t want)
{
    kv_evict_entry_t *victim = kv_evict_pop(policy);

    ASSERT(victim != NULL);
    ASSERT_EQ(slot_of(entries, victim), want);
}

static void test_names(void)
{
    const char *const *names = kv_evict_policy_names();
    kv_evict_t        *policy = NULL;
    size_t             n;

    for (n = 0; names[n] != NULL; n++) {
        ASSERT(kv_evict_policy_known(names[n]));
        ASSERT_LE(strlen(names[n]), KV_EVICT_NAME_MAX);
        ASSERT_OK(kv_evict_create(names[n], &policy));
        ASSERT(strcmp(kv_evict_name(policy), names[n]) == 0);
        ASSERT_EQ(kv_evict_count(policy), 0);
        ASSERT(kv_evict_pop(policy) == NULL);
        kv_evict_destroy(policy);
    }
    ASSERT_EQ(n, 3);
    ASSERT(strcmp(names[0], KV_EVICT_DEFAULT_POLICY) == 0);
    ASSERT(strcmp(names[1], "lfuda") == 0);
    ASSERT(strcmp(names[2], "density") == 0);

    ASSERT(!kv_evict_policy_known("LRU"));
    ASSERT(!kv_evict_policy_known(""));
    ASSERT(!kv_evict_policy_known(NULL));
    policy = NULL;
    ASSERT_STATUS(kv_evict_create("nope", &policy), KVP_ERR_NOT_FOUND);
    ASSERT(policy == NULL);
    ASSERT_STATUS(kv_evict_create("lru", NULL), KVP_ERR_INVALID_PARAM);
    ASSERT_OK(kv_evict_create(NULL, &policy));
    ASSERT(strcmp(kv_evict_name(policy), KV_EVICT_DEFAULT_POLICY) == 0);
    kv_evict_destroy(policy);
    kv_evict_destroy(NULL);
}

/* lru over roots is exact LRU: insert and touch are uses, pop the oldest. */
static void test_lru_order_exact(void)
{
    kv_evict_entry_t e[8];
    kv_evict_t      *policy;
    const size_t     want[] = {1, 3, 4, 6, 7, 0, 5, 2};

    ASSERT_OK(kv_evict_create("lru", &policy));
    for (int i = 0; i < 8; i++) {
        kv_evict_insert(policy, &e[i], NULL, (uint64_t)i);
    }
    kv_evict_touch(policy, &e[0]);
    kv_evict_touch(policy, &e[5]);
    kv_evict_touch(policy, &e[2]);
    ASSERT_EQ(kv_evict_count(policy), 8);
    for (size_t i = 0; i < 8; i++) {
        expect_pop(policy, e, want[i]);
        ASSERT_EQ(kv_evict_count(policy), 7 - i);
    }
    ASSERT(kv_evict_pop(policy) == NULL);
    kv_evict_destroy(policy);
}

/*
 * A chain a -> b -> c and a root d, each policy: the chain goes from its
 * leaf up, whatever the uses; a pinned leaf holds its ancestors only while
 * another leaf exists.
 */
static void test_leaves_first(void)
{
    const char *const *names = kv_evict_policy_names();

    for (size_t n = 0; names[n] != NULL; n++) {
        kv_evict_entry_t e[4]; /* a b c d */
        kv_evict_t      *policy;

        ASSERT_OK(kv_evict_create(names[n], &policy));
        kv_evict_insert(policy, &e[0], NULL, 10);
        kv_evict_insert(policy, &e[1], &e[0], 11);
        kv_evict_insert(policy, &e[2], &e[1], 12);
        kv_evict_insert(policy, &e[3], NULL, 13);
        for (int i = 0; i < 5; i++) {
            kv_evict_touch(policy, &e[3]); /* d: most used, most recent */
        }
        expect_pop(policy, e, 2);
        expect_pop(policy, e, 1);
        expect_pop(policy, e, 0);
        expect_pop(policy, e, 3);
        ASSERT(kv_evict_pop(policy) == NULL);

        /* c pinned: d goes, then (no unpinned leaf left) c's parent b, not
         * the older a: what stays is still a prefix; then a */
        kv_evict_insert(policy, &e[0], NULL, 10);
        kv_evict_insert(policy, &e[1], &e[0], 11);
        kv_evict_insert(policy, &e[2], &e[1], 12);
        kv_evict_insert(policy, &e[3], NULL, 13);
        kv_evict_pin(policy, &e[2]);
        expect_pop(policy, e, 3);
        expect_pop(policy, e, 1);
        expect_pop(policy, e, 0);
        ASSERT(kv_evict_pop(policy) == NULL); /* only c, pinned */
        ASSERT_EQ(kv_evict_count(policy), 1);
        kv_evict_unpin(policy, &e[2]);
        expect_pop(policy, e, 2);
        ASSERT_EQ(kv_evict_count(policy), 0);
        kv_evict_destroy(policy);
    }
}

/* replace: the new entry takes the old one's place in the tree. */
static void test_replace(void)
{
    const char *const *names = kv_evict_policy_names();

    for (size_t n = 0; names[n] != NULL; n++) {
        kv_evict_entry_t e[5]; /* a b c, b2 replaces b, d */
        kv_evict_t      *policy;

        ASSERT_OK(kv_evict_create(names[n], &policy));
        kv_evict_insert(policy, &e[0], NULL, 1);
        kv_evict_insert(policy, &e[1], &e[0], 2);
        kv_evict_insert(policy, &e[2], &e[1], 3);
        kv_evict_insert(policy, &e[4], NULL, 5);
        kv_evict_pin(policy, &e[1]); /* a reader of the old copy */
        kv_evict_replace(policy, &e[1], &e[3]);
        ASSERT_EQ(kv_evict_count(policy), 4);
        /* c is the oldest leaf; then d, then b2 (not pinned, and used
         * last), then a */
        expect_pop(policy, e, 2);
        expect_pop(policy, e, 4);
        expect_pop(policy, e, 3);
        expect_pop(policy, e, 0);
        ASSERT(kv_evict_pop(policy) == NULL);
        kv_evict_destroy(policy);
    }
}

/*
 * lfuda: an entry used often outlives newer entries used once, until the
 * aging value passes its priority.
 */
static void test_lfuda_frequency_and_aging(void)
{
    kv_evict_entry_t hot, fresh[32];
    kv_evict_t      *policy;
    int              pops = 0, hot_gone = 0;

    ASSERT_OK(kv_evict_create("lfuda", &policy));
    kv_evict_insert(policy, &hot, NULL, 1000);
    for (int i = 0; i < 4; i++) {
        kv_evict_touch(policy, &hot); /* priority 0 + 5 uses */
    }
    /* a stream of one-use entries, each pop taking one: at first the
     * previous newcomer (priority age + 1), until the age has caught up
     * with hot's priority; then hot goes, although it was used the most */
    kv_evict_insert(policy, &fresh[0], NULL, 0);
    for (int i = 1; i < 32 && !hot_gone; i++) {
        kv_evict_entry_t *victim;

        kv_evict_insert(policy, &fresh[i], NULL, (uint64_t)i);
        victim = kv_evict_pop(policy);
        pops++;
        hot_gone = victim == &hot;
        ASSERT(hot_gone || victim == &fresh[i - 1]);
    }
    ASSERT(hot_gone);
    ASSERT(pops > 4); /* it outlived four newer entries, at least */
    kv_evict_destroy(policy);
}

/* The model of one entry slot. */
typedef struct model {
    int      tracked;
    int      pinned;
    int      parent; /* slot, or -1 */
    uint64_t last_use;
} model_t;

static int model_is_leaf(const model_t *m, int slot)
{
    for (int i = 0; i < MODEL_SLOTS; i++) {
        if (m[i].tracked && m[i].parent == slot) {
            return 0;
        }
    }
    return 1;
}

/* 0: a leaf; 1: every child pinned; 2: an unpinned child. */
static int model_rank(const model_t *m, int slot)
{
    int rank = 0;

    for (int i = 0; i < MODEL_SLOTS; i++) {
        if (m[i].tracked && m[i].parent == slot) {
            rank = m[i].pinned ? KV_MAX(rank, 1) : 2;
        }
    }
    return rank;
}

static void model_untrack(model_t *m, int slot)
{
    for (int i = 0; i < MODEL_SLOTS; i++) {
        if (m[i].tracked && m[i].parent == slot) {
            m[i].parent = -1; /* children become roots */
        }
    }
    m[slot].tracked = 0;
}

/* A random slot with tracked == @tracked (and pinned == @pinned unless
 * -1), or -1. */
static int model_pick(const model_t *m, int tracked, int pinned)
{
    int start = (int)(rng_next() % MODEL_SLOTS);

    for (int j = 0; j < MODEL_SLOTS; j++) {
        int i = (start + j) % MODEL_SLOTS;
        if (m[i].tracked == tracked && (pinned < 0 || m[i].pinned == pinned)) {
            return i;
        }
    }
    return -1;
}

/*
 * Random insert (with random parents) / touch / remove / replace / pin /
 * unpin / pop against a model, for each policy: count agrees; a pop
 * returns a tracked unpinned entry of the lowest rank there is (a leaf
 * whenever an unpinned leaf exists, else one whose children are all
 * pinned, if any), NULL only when everything is pinned; for lru, the least
 * recently used of those candidates.
 */
static void test_random_against_model(void)
{
    const char *const *names = kv_evict_policy_names();

    for (size_t n = 0; names[n] != NULL; n++) {
        kv_evict_entry_t e[MODEL_SLOTS];
        model_t          m[MODEL_SLOTS];
        kv_evict_t      *policy;
        uint64_t         tick = 0, pops = 0, fallbacks = 0;
        size_t           count = 0;
        int              is_lru = strcmp(names[n], "lru") == 0;

        memset(m, 0, sizeof(m));
        ASSERT_OK(kv_evict_create(names[n], &policy));
        for (int op = 0; op < 200000; op++) {
            unsigned r = (unsigned)(rng_next() % 100);
            int      i, j;

            if (r < 30) { /* insert, under a random tracked entry or none */
                i = model_pick(m, 0, -1);
                if (i < 0) {
                    continue;
                }
                j = (rng_next() % 4 == 0) ? -1 : model_pick(m, 1, -1);
                kv_evict_insert(policy, &e[i], j >= 0 ? &e[j] : NULL,
                                (uint64_t)(rng_next() % 64));
                m[i] = (model_t){1, 0, j, ++tick};
                count++;
            } else if (r < 45) {
                if ((i = model_pick(m, 1, -1)) >= 0) {
                    kv_evict_touch(policy, &e[i]);
                    m[i].last_use = ++tick;
                }
            } else if (r < 50) {
                if ((i = model_pick(m, 1, -1)) >= 0) {
                    kv_evict_remove(policy, &e[i]);
                    model_untrack(m, i);
                    count--;
                }
            } else if (r < 54) { /* replace i by a free slot j */
                i = model_pick(m, 1, -1);
                j = model_pick(m, 0, -1);
                if (i < 0 || j < 0) {
                    continue;
                }
                kv_evict_replace(policy, &e[i], &e[j]);
                m[j] = (model_t){1, 0, m[i].parent, ++tick};
                for (int c = 0; c < MODEL_SLOTS; c++) {
                    if (m[c].tracked && m[c].parent == i) {
                        m[c].parent = j;
                    }
                }
                m[i].tracked = 0;
            } else if (r < 64) {
                if ((i = model_pick(m, 1, 0)) >= 0) {
                    kv_evict_pin(policy, &e[i]);
                    m[i].pinned = 1;
                }
            } else if (r < 74) {
                if ((i = model_pick(m, 1, 1)) >= 0) {
                    kv_evict_unpin(policy, &e[i]);
                    m[i].pinned = 0;
                }
            } else {
                kv_evict_entry_t *victim = kv_evict_pop(policy);
                int               min_rank = 3, best = -1;

                for (int k = 0; k < MODEL_SLOTS; k++) {
                    if (m[k].tracked && !m[k].pinned) {
                        min_rank = KV_MIN(min_rank, model_rank(m, k));
                    }
                }
                if (min_rank == 3) {
                    ASSERT(victim == NULL);
                    continue;
                }
                ASSERT(victim != NULL);
                i = (int)slot_of(e, victim);
                ASSERT(i >= 0 && i < MODEL_SLOTS);
                ASSERT(m[i].tracked);
                ASSERT(!m[i].pinned);
                ASSERT_EQ(model_rank(m, i), min_rank);
                fallbacks += min_rank > 0;
                if (is_lru) {
                    for (int k = 0; k < MODEL_SLOTS; k++) {
                        if (m[k].tracked && !m[k].pinned &&
                            model_rank(m, k) == min_rank &&
                            (best < 0 || m[k].last_use < m[best].last_use)) {
                            best = k;
                        }
                    }
                    ASSERT_EQ(i, best);
                }
                model_untrack(m, i);
                count--;
                pops++;
            }
            ASSERT_EQ(kv_evict_count(policy), count);
        }
        ASSERT(pops > 10000);
        ASSERT(fallbacks > 0);
        /* drain: everything unpinned comes out, leaves first */
        for (int k = 0; k < MODEL_SLOTS; k++) {
            if (m[k].tracked && m[k].pinned) {
                kv_evict_unpin(policy, &e[k]);
                m[k].pinned = 0;
            }
        }
        while (count > 0) {
            kv_evict_entry_t *victim = kv_evict_pop(policy);
            ASSERT(victim != NULL);
            ASSERT(model_is_leaf(m, (int)slot_of(e, victim)));
            model_untrack(m, (int)slot_of(e, victim));
            count--;
        }
        ASSERT(kv_evict_pop(policy) == NULL);
        kv_evict_destroy(policy);
    }
}

/*
 * density with nothing to learn (every entry used once, so every class has
 * the same shift) is LRU: by the use count without a clock, by the time
 * with one, ties by use.
 */
static void test_density_lru_without_signal(void)
{
    for (int timed = 0; timed < 2; timed++) {
        kv_evict_entry_t e[64];
        kv_evict_t      *policy;

        ASSERT_OK(kv_evict_create("density", &policy));
        for (int i = 0; i < 64; i++) {
            if (timed) {
                kv_evict_set_time(policy, 1000 + (uint64_t)i / 4);
            }
            kv_evict_insert(policy, &e[i], NULL, (uint64_t)i);
        }
        for (int i = 0; i < 64; i++) {
            expect_pop(policy, e, (size_t)i);
        }
        ASSERT(kv_evict_pop(policy) == NULL);
        kv_evict_destroy(policy);
    }
}

/*
 * density learns what a class is worth: in a cache of 64 where partial
 * blocks (KV_EVICT_PARTIAL) are never hit and other blocks are, a new
 * partial block goes before an older full one, which plain LRU would drop
 * first.  A time set backwards is taken as the last one.
 */
static void test_density_learns_partial(void)
{
    enum { STEPS = 3000, CAP = 64 };
    kv_evict_entry_t *e = calloc(2 * STEPS + 2, sizeof(*e));
    uint8_t          *in = calloc(2 * STEPS + 2, 1);
    kv_evict_t       *policy;
    uint64_t          t = 0;
    size_t            full = 2 * STEPS, part = 2 * STEPS + 1;

    ASSERT(e != NULL && in != NULL);
    ASSERT_OK(kv_evict_create("density", &policy));
    for (size_t i = 0; i < STEPS; i++) {
        kv_evict_set_time(policy, ++t);
        kv_evict_set_time(policy, t - 1); /* ignored */
        kv_evict_insert(policy, &e[2 * i], NULL, 2 * i);
        kv_evict_insert_flags(policy, &e[2 * i + 1], NULL, 2 * i + 1,
                              KV_EVICT_PARTIAL);
        in[2 * i] = in[2 * i + 1] = 1;
        if (i >= 5 && in[2 * (i - 5)]) {
            kv_evict_touch(policy, &e[2 * (i - 5)]);
        }
        while (kv_evict_count(policy) > CAP) {
            in[slot_of(e, kv_evict_pop(policy))] = 0;
        }
    }
    /* a full block, then a newer partial one */
    kv_evict_set_time(policy, ++t);
    kv_evict_insert(policy, &e[full], NULL, full);
    kv_evict_set_time(policy, ++t);
    kv_evict_insert_flags(policy, &e[part], NULL, part, KV_EVICT_PARTIAL);
    for (;;) {
        size_t k = slot_of(e, kv_evict_pop(policy));
        ASSERT(k != full);
        if (k == part) {
            break;
        }
    }
    kv_evict_destroy(policy);

    /* the same under lru: the older full block goes first */
    ASSERT_OK(kv_evict_create("lru", &policy));
    kv_evict_insert(policy, &e[full], NULL, full);
    kv_evict_insert_flags(policy, &e[part], NULL, part, KV_EVICT_PARTIAL);
    expect_pop(policy, e, full);
    kv_evict_destroy(policy);
    free(in);
    free(e);
}

/* Many entries: the lfuda sketch grows past its first size, and every
 * entry still comes out once. */
static void test_many_entries(void)
{
    const char *const *names = kv_evict_policy_names();
    const size_t       count = 100000;

    for (size_t n = 0; names[n] != NULL; n++) {
        kv_evict_entry_t *e    = calloc(count, sizeof(*e));
        uint8_t          *seen = calloc(count, 1);
        kv_evict_t       *policy;

        ASSERT(e != NULL && seen != NULL);
        ASSERT_OK(kv_evict_create(names[n], &policy));
        for (size_t i = 0; i < count; i++) {
            /* chains of 10 */
            kv_evict_insert(policy, &e[i], i % 10 ? &e[i - 1] : NULL, i);
            if (i % 3 == 0) {
                kv_evict_touch(policy, &e[i / 2]);
            }
        }
        for (size_t i = 0; i < count; i++) {
            kv_evict_entry_t *victim = kv_evict_pop(policy);
            size_t            k      = slot_of(e, victim);
            ASSERT(k < count && !seen[k]);
            /* its successor in the chain left before it */
            ASSERT(k % 10 == 9 || k + 1 >= count || seen[k + 1]);
            seen[k] = 1;
        }
        ASSERT(kv_evict_pop(policy) == NULL);
        kv_evict_destroy(policy);
        free(seen);
        free(e);
    }
}

/* The node's eviction_policy setting takes a known name, and names them
 * all when given another. */
static void test_node_config_policy(void)
{
    kv_node_config_t config;
    char             err[256];

    kv_node_config_defaults(&config);
    ASSERT(strcmp(config.eviction_policy, KV_EVICT_DEFAULT_POLICY) == 0);
    ASSERT_OK(kv_node_config_set(&config, "eviction_policy", "lfuda", err,
                                 sizeof(err)));
    ASSERT(strcmp(config.eviction_policy, "lfuda") == 0);
    ASSERT_STATUS(kv_node_config_set(&config, "eviction_policy", "mru", err,
                                     sizeof(err)), KVP_ERR_CONFIG);
    ASSERT(strcmp(config.eviction_policy, "lfuda") == 0);
    ASSERT(strstr(err, "'mru'") != NULL);
    ASSERT(strstr(err, "lru, lfuda") != NULL);
    /* a short error buffer is cut, not overrun */
    ASSERT_STATUS(kv_node_config_set(&config, "eviction_policy", "mru", err, 20),
                  KVP_ERR_CONFIG);
    ASSERT_LE(strlen(err), 19);
}

KV_TEST_MAIN(KV_TEST(test_names), KV_TEST(test_lru_order_exact),
             KV_TEST(test_leaves_first), KV_TEST(test_replace),
             KV_TEST(test_lfuda_frequency_and_aging),
             KV_TEST(test_density_lru_without_signal),
             KV_TEST(test_density_learns_partial),
             KV_TEST(test_random_against_model), KV_TEST(test_many_entries),
             KV_TEST(test_node_config_policy))
