/*
 * Unit tests of the block table (pool/block_table.c).
 */
#include "arena.h"
#include "block_table.h"

#include <kv/hash.h>
#include <kvpool/status.h>
#include <test.h>

#define PAGE ((uint64_t)4096)
#define MiB  ((uint64_t)1 << 20)

typedef struct fixture {
    kv_arena_t       *arena;
    kv_block_table_t *table;
    uint32_t          ns;
} fixture_t;

static void setup_policy(fixture_t *f, uint64_t arena_size, const char *policy)
{
    ASSERT_OK(kv_arena_create(arena_size, &f->arena));
    ASSERT_OK(kv_block_table_create(f->arena, policy, &f->table));
    ASSERT_OK(kv_block_table_ns_id(f->table, "default", 7, 1, &f->ns));
}

/* A table with the default policy (lru). */
static void setup(fixture_t *f, uint64_t arena_size)
{
    setup_policy(f, arena_size, NULL);
}

static void teardown(fixture_t *f)
{
    kv_block_table_destroy(f->table);
    ASSERT_EQ(kv_arena_used(f->arena), 0); /* destroy returned every block */
    ASSERT_OK(kv_arena_check(f->arena));
    kv_arena_destroy(f->arena);
}

static kvp_key_t make_key(uint64_t n)
{
    kvp_key_t key;
    memset(&key, 0, sizeof(key));
    memcpy(key.bytes + 8, &n, sizeof(n)); /* not in the bytes hash64 reads */
    key.bytes[0] = (uint8_t)(n * 7);
    return key;
}

/* Store a block of @size bytes filled with @fill; returns it. */
static kv_block_t *put(fixture_t *f, uint32_t ns, uint64_t n, uint64_t size,
                       uint8_t fill)
{
    kvp_key_t   key = make_key(n);
    kv_block_t *block;

    ASSERT_OK(kv_block_table_reserve(f->table, ns, &key, size, &block));
    memset(kv_block_table_data(f->table, block), fill, size);
    kv_block_table_commit(f->table, block,
                          kv_checksum(kv_block_table_data(f->table, block), size));
    return block;
}

static kv_block_t *get(fixture_t *f, uint32_t ns, uint64_t n)
{
    kvp_key_t key = make_key(n);
    return kv_block_table_lookup(f->table, ns, &key);
}

static void stats(fixture_t *f, kv_block_table_stats_t *s)
{
    kv_block_table_stats(f->table, s);
}

static void test_create_params(void)
{
    kv_arena_t       *arena;
    kv_block_table_t *table = NULL;

    ASSERT_OK(kv_arena_create(MiB, &arena));
    ASSERT_STATUS(kv_block_table_create(NULL, NULL, &table), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_create(arena, NULL, NULL), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_create(arena, "nope", &table), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(kv_block_table_create(arena, "", &table), KVP_ERR_NOT_FOUND);
    ASSERT(table == NULL);
    ASSERT_OK(kv_block_table_create(arena, "lfuda", &table));
    kv_block_table_destroy(table);
    kv_block_table_destroy(NULL);
    kv_arena_destroy(arena);
}

static void test_namespace_ids(void)
{
    fixture_t f;
    char      name[KVP_NAMESPACE_MAX + 2];
    uint32_t  a, b, again, id = 999;

    setup(&f, MiB);
    ASSERT_OK(kv_block_table_ns_id(f.table, "alpha", 5, 1, &a));
    ASSERT_OK(kv_block_table_ns_id(f.table, "beta", 4, 1, &b));
    ASSERT_NE(a, b);
    ASSERT_NE(a, f.ns);
    ASSERT_OK(kv_block_table_ns_id(f.table, "alpha", 5, 0, &again));
    ASSERT_EQ(again, a);
    ASSERT_OK(kv_block_table_ns_id(f.table, "alpha", 5, 1, &again));
    ASSERT_EQ(again, a);
    /* the length counts, not a terminator: "alph" is another namespace */
    ASSERT_STATUS(kv_block_table_ns_id(f.table, "alpha", 4, 0, &id),
                  KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(kv_block_table_ns_id(f.table, "gamma", 5, 0, &id),
                  KVP_ERR_NOT_FOUND);
    ASSERT_EQ(id, 999); /* untouched on error */

    /* length limits: 1..KVP_NAMESPACE_MAX */
    memset(name, 'n', sizeof(name));
    ASSERT_STATUS(kv_block_table_ns_id(f.table, name, 0, 1, &id),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_ns_id(f.table, name, KVP_NAMESPACE_MAX + 1,
                                       1, &id), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_ns_id(f.table, NULL, 3, 1, &id),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_EQ(id, 999);
    ASSERT_OK(kv_block_table_ns_id(f.table, name, 1, 1, &id));
    ASSERT_OK(kv_block_table_ns_id(f.table, name, KVP_NAMESPACE_MAX, 1, &id));
    ASSERT_OK(kv_block_table_ns_id(f.table, name, KVP_NAMESPACE_MAX, 0, &again));
    ASSERT_EQ(again, id);
    teardown(&f);
}

static void test_namespace_cap(void)
{
    fixture_t f;
    char      name[32];
    uint32_t  id;

    setup(&f, MiB); /* "default" is namespace 1 */
    for (int i = 1; i < KV_BLOCK_TABLE_MAX_NAMESPACES; i++) {
        int len = snprintf(name, sizeof(name), "ns-%d", i);
        ASSERT_OK(kv_block_table_ns_id(f.table, name, (size_t)len, 1, &id));
        ASSERT_EQ(id, i);
    }
    ASSERT_STATUS(kv_block_table_ns_id(f.table, "one-too-many", 12, 1, &id),
                  KVP_ERR_NO_SPACE);
    ASSERT_STATUS(kv_block_table_ns_id(f.table, "one-too-many", 12, 0, &id),
                  KVP_ERR_NOT_FOUND);
    /* every interned one is still found */
    for (int i = 1; i < KV_BLOCK_TABLE_MAX_NAMESPACES; i++) {
        int len = snprintf(name, sizeof(name), "ns-%d", i);
        ASSERT_OK(kv_block_table_ns_id(f.table, name, (size_t)len, 0, &id));
        ASSERT_EQ(id, i);
    }
    ASSERT_OK(kv_block_table_ns_id(f.table, "default", 7, 0, &id));
    ASSERT_EQ(id, f.ns);
    teardown(&f);
}

static void test_insert_lookup(void)
{
    fixture_t              f;
    kvp_key_t              key = make_key(1);
    kv_block_t            *block, *found;
    kv_block_table_stats_t s;
    uint8_t               *data;

    setup(&f, 4 * MiB);
    ASSERT(get(&f, f.ns, 1) == NULL);

    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, 10000, &block));
    ASSERT_EQ(block->size, 10000);
    ASSERT_EQ(block->offset % PAGE, 0);
    ASSERT_EQ(block->ns_id, f.ns);
    ASSERT_EQ(memcmp(&block->key, &key, sizeof(key)), 0);
    ASSERT_EQ(kv_arena_used(f.arena), 3 * PAGE);
    /* pending: invisible, not counted */
    ASSERT(kv_block_table_lookup(f.table, f.ns, &key) == NULL);
    stats(&f, &s);
    ASSERT_EQ(s.blocks, 0);
    ASSERT_EQ(s.used_bytes, 0);

    data = kv_block_table_data(f.table, block);
    ASSERT(data == (uint8_t *)kv_arena_base(f.arena) + block->offset);
    memset(data, 0x5a, 10000);
    kv_block_table_commit(f.table, block, kv_checksum(data, 10000));

    found = kv_block_table_lookup(f.table, f.ns, &key);
    ASSERT(found == block);
    ASSERT_EQ(found->checksum, kv_checksum(data, 10000));
    ASSERT_EQ(found->pins, 0);
    ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, found))[9999], 0x5a);
    stats(&f, &s);
    ASSERT_EQ(s.blocks, 1);
    ASSERT_EQ(s.used_bytes, 3 * PAGE);
    ASSERT_EQ(s.evictions, 0);

    /* a different key is a miss */
    ASSERT(get(&f, f.ns, 2) == NULL);
    teardown(&f);
}

static void test_reserve_errors(void)
{
    fixture_t              f;
    kvp_key_t              key   = make_key(1);
    kv_block_t            *block = (kv_block_t *)(uintptr_t)0x1;
    kv_block_table_stats_t s;

    setup(&f, MiB);
    put(&f, f.ns, 10, MiB / 2, 1);
    put(&f, f.ns, 11, MiB / 2, 2);

    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, 0, &block),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_reserve(f.table, 12345, &key, 1, &block),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, NULL, 1, &block),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, 1, NULL),
                  KVP_ERR_INVALID_PARAM);
    /* larger than the arena: too large, and nothing is evicted for it */
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, MiB + 1, &block),
                  KVP_ERR_TOO_LARGE);
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, UINT64_MAX,
                                         &block), KVP_ERR_TOO_LARGE);
    ASSERT(block == (kv_block_t *)(uintptr_t)0x1);
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 0);
    ASSERT_EQ(s.blocks, 2);
    ASSERT(get(&f, f.ns, 10) != NULL);
    ASSERT(get(&f, f.ns, 11) != NULL);

    /* exactly the capacity: evicts both */
    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, MiB, &block));
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 2);
    ASSERT_EQ(s.evicted_bytes, MiB);
    kv_block_table_abort(f.table, block);
    teardown(&f);
}

static void test_replace(void)
{
    fixture_t              f;
    kv_block_t            *a, *b;
    kv_block_table_stats_t s;

    setup(&f, 4 * MiB);
    a = put(&f, f.ns, 1, 8 * PAGE, 0xaa);
    ASSERT(get(&f, f.ns, 1) == a);
    b = put(&f, f.ns, 1, 2 * PAGE, 0xbb);
    ASSERT(get(&f, f.ns, 1) == b);
    ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, b))[0], 0xbb);
    /* the old block was unpinned: freed at once */
    ASSERT_EQ(kv_arena_used(f.arena), 2 * PAGE);
    stats(&f, &s);
    ASSERT_EQ(s.blocks, 1);
    ASSERT_EQ(s.used_bytes, 2 * PAGE);
    ASSERT_EQ(s.evictions, 0);
    teardown(&f);
}

static void test_replace_pinned(void)
{
    fixture_t              f;
    kv_block_t            *a, *b;
    kv_block_table_stats_t s;
    const uint8_t         *old_data;

    setup(&f, 4 * MiB);
    a = put(&f, f.ns, 1, 8 * PAGE, 0xaa);
    kv_block_table_pin(f.table, a);
    kv_block_table_pin(f.table, a);
    b = put(&f, f.ns, 1, 2 * PAGE, 0xbb);

    /* the new one is visible, the old one is dead but still readable */
    ASSERT(get(&f, f.ns, 1) == b);
    old_data = kv_block_table_data(f.table, a);
    ASSERT_EQ(old_data[0], 0xaa);
    ASSERT_EQ(old_data[8 * PAGE - 1], 0xaa);
    ASSERT_EQ(kv_arena_used(f.arena), 10 * PAGE);
    stats(&f, &s);
    ASSERT_EQ(s.blocks, 1);
    ASSERT_EQ(s.used_bytes, 2 * PAGE);

    kv_block_table_unpin(f.table, a);
    ASSERT_EQ(kv_arena_used(f.arena), 10 * PAGE);
    kv_block_table_touch(f.table, a); /* a no-op on a dead block */
    kv_block_table_unpin(f.table, a); /* last pin: freed */
    ASSERT_EQ(kv_arena_used(f.arena), 2 * PAGE);
    ASSERT(get(&f, f.ns, 1) == b);
    teardown(&f);
}

static void test_abort(void)
{
    fixture_t   f;
    kvp_key_t   key = make_key(5);
    kv_block_t *block, *old;

    setup(&f, MiB);
    old = put(&f, f.ns, 5, PAGE, 1);
    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, 3 * PAGE, &block));
    ASSERT_EQ(kv_arena_used(f.arena), 4 * PAGE);
    /* while the new one is pending the old one stays visible */
    ASSERT(get(&f, f.ns, 5) == old);
    kv_block_table_abort(f.table, block);
    ASSERT_EQ(kv_arena_used(f.arena), PAGE);
    ASSERT(get(&f, f.ns, 5) == old);
    teardown(&f);
}

/* An arena of 8 one-page blocks; the 9th evicts the oldest untouched one. */
static void test_lru_eviction_order(void)
{
    fixture_t              f;
    kv_block_table_stats_t s;

    setup(&f, 8 * PAGE);
    for (uint64_t i = 0; i < 8; i++) {
        put(&f, f.ns, i, PAGE, (uint8_t)i);
    }
    ASSERT_EQ(kv_arena_used(f.arena), 8 * PAGE);

    /* use 0 and 2: the LRU order is now 1 3 4 5 6 7 0 2 */
    kv_block_table_touch(f.table, get(&f, f.ns, 0));
    kv_block_table_touch(f.table, get(&f, f.ns, 2));
    /* lookup alone does not count as a use */
    ASSERT(get(&f, f.ns, 1) != NULL);

    put(&f, f.ns, 100, PAGE, 0);
    ASSERT(get(&f, f.ns, 1) == NULL);
    ASSERT(get(&f, f.ns, 0) != NULL);
    ASSERT(get(&f, f.ns, 2) != NULL);

    put(&f, f.ns, 101, PAGE, 0);
    ASSERT(get(&f, f.ns, 3) == NULL);
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 2);
    ASSERT_EQ(s.evicted_bytes, 2 * PAGE);
    ASSERT_EQ(s.blocks, 8);

    /* a two-page block evicts the next two: 4 and 5 */
    put(&f, f.ns, 102, 2 * PAGE, 0);
    ASSERT(get(&f, f.ns, 4) == NULL);
    ASSERT(get(&f, f.ns, 5) == NULL);
    ASSERT(get(&f, f.ns, 6) != NULL);
    /* then 6, 7, 0, 2 in that order */
    put(&f, f.ns, 103, PAGE, 0);
    ASSERT(get(&f, f.ns, 6) == NULL);
    ASSERT(get(&f, f.ns, 7) != NULL);
    put(&f, f.ns, 104, PAGE, 0);
    ASSERT(get(&f, f.ns, 7) == NULL);
    ASSERT(get(&f, f.ns, 0) != NULL);
    put(&f, f.ns, 105, PAGE, 0);
    ASSERT(get(&f, f.ns, 0) == NULL);
    ASSERT(get(&f, f.ns, 2) != NULL);
    /* a new block is the most recent: 100 outlives 2 only if touched */
    kv_block_table_touch(f.table, get(&f, f.ns, 100));
    put(&f, f.ns, 106, PAGE, 0);
    ASSERT(get(&f, f.ns, 2) == NULL);
    put(&f, f.ns, 107, PAGE, 0);
    ASSERT(get(&f, f.ns, 101) == NULL);
    ASSERT(get(&f, f.ns, 100) != NULL);
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 9); /* 1 3 4 5 6 7 0 2 101 */
    ASSERT_EQ(s.blocks, 7); /* 102 is two pages */
    teardown(&f);
}

static void test_pinned_never_evicted(void)
{
    fixture_t              f;
    kv_block_t            *blocks[4], *block;
    kvp_key_t              key = make_key(99);
    kv_block_table_stats_t s;

    setup(&f, 4 * PAGE);
    for (uint64_t i = 0; i < 4; i++) {
        blocks[i] = put(&f, f.ns, i, PAGE, (uint8_t)(0x10 + i));
    }
    /* pin the oldest: the next oldest goes instead */
    kv_block_table_pin(f.table, blocks[0]);
    put(&f, f.ns, 10, PAGE, 0);
    ASSERT(get(&f, f.ns, 0) == blocks[0]);
    ASSERT(get(&f, f.ns, 1) == NULL);

    /* pin everything: no room can be made, and nothing is evicted */
    kv_block_table_pin(f.table, blocks[2]);
    kv_block_table_pin(f.table, blocks[3]);
    kv_block_table_pin(f.table, get(&f, f.ns, 10));
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 1);
    block = (kv_block_t *)(uintptr_t)0x1;
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, PAGE, &block),
                  KVP_ERR_NO_SPACE);
    ASSERT(block == (kv_block_t *)(uintptr_t)0x1);
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 1);
    ASSERT_EQ(s.blocks, 4);
    for (int i = 0; i < 4; i++) {
        if (i != 1) {
            ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, blocks[i]))[0],
                      0x10 + i);
        }
    }

    /* unpinning one makes exactly that one evictable */
    kv_block_table_unpin(f.table, blocks[3]);
    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, PAGE, &block));
    ASSERT(get(&f, f.ns, 3) == NULL);
    ASSERT(get(&f, f.ns, 0) == blocks[0]);
    kv_block_table_commit(f.table, block, 0);
    teardown(&f); /* destroy frees pinned blocks too */
}

/*
 * Not enough room even after evicting all evictable blocks: NO_SPACE, and
 * the evictable blocks survive (nothing is evicted for nothing).
 */
static void test_no_pointless_eviction(void)
{
    fixture_t              f;
    kv_block_t            *pinned;
    kvp_key_t              key = make_key(50);
    kv_block_t            *block;
    kv_block_table_stats_t s;

    setup(&f, 8 * PAGE);
    pinned = put(&f, f.ns, 1, 4 * PAGE, 1);
    kv_block_table_pin(f.table, pinned);
    put(&f, f.ns, 2, 2 * PAGE, 2);
    put(&f, f.ns, 3, 2 * PAGE, 3);
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, 5 * PAGE, &block),
                  KVP_ERR_NO_SPACE);
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 0);
    ASSERT(get(&f, f.ns, 2) != NULL);
    ASSERT(get(&f, f.ns, 3) != NULL);
    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, 4 * PAGE, &block));
    stats(&f, &s);
    ASSERT_EQ(s.evictions, 2);
    kv_block_table_abort(f.table, block);
    kv_block_table_unpin(f.table, pinned);
    teardown(&f);
}

static void test_pending_never_evicted(void)
{
    fixture_t   f;
    kv_block_t *pending[4], *block;
    kvp_key_t   key;

    setup(&f, 4 * PAGE);
    for (int i = 0; i < 4; i++) {
        key = make_key((uint64_t)i);
        ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, PAGE, &pending[i]));
        memset(kv_block_table_data(f.table, pending[i]), i, PAGE);
    }
    key = make_key(9);
    ASSERT_STATUS(kv_block_table_reserve(f.table, f.ns, &key, PAGE, &block),
                  KVP_ERR_NO_SPACE);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, pending[i]))[7], i);
    }
    kv_block_table_commit(f.table, pending[0], 0);
    kv_block_table_abort(f.table, pending[1]);
    teardown(&f); /* two pending blocks left: destroy frees them */
}

static void test_remove(void)
{
    fixture_t              f;
    kv_block_t            *a;
    kvp_key_t              key = make_key(1), missing = make_key(2);
    kv_block_table_stats_t s;

    setup(&f, MiB);
    put(&f, f.ns, 1, 3 * PAGE, 1);
    ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &missing), 0);
    ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &key), 1);
    ASSERT(get(&f, f.ns, 1) == NULL);
    ASSERT_EQ(kv_arena_used(f.arena), 0);
    ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &key), 0);

    /* a pinned block: invisible at once, freed at the last unpin */
    a = put(&f, f.ns, 1, 3 * PAGE, 0x77);
    kv_block_table_pin(f.table, a);
    kv_block_table_pin(f.table, a);
    ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &key), 1);
    ASSERT(get(&f, f.ns, 1) == NULL);
    ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &key), 0);
    stats(&f, &s);
    ASSERT_EQ(s.blocks, 0);
    ASSERT_EQ(s.used_bytes, 0);
    ASSERT_EQ(kv_arena_used(f.arena), 3 * PAGE);
    ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, a))[3 * PAGE - 1], 0x77);

    /* a new block under the same key meanwhile is independent */
    put(&f, f.ns, 1, PAGE, 0x88);
    kv_block_table_unpin(f.table, a);
    ASSERT_EQ(kv_arena_used(f.arena), 4 * PAGE);
    kv_block_table_unpin(f.table, a);
    ASSERT_EQ(kv_arena_used(f.arena), PAGE);
    ASSERT(get(&f, f.ns, 1) != NULL);
    ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, get(&f, f.ns, 1)))[0],
              0x88);
    teardown(&f);
}

static void test_namespace_isolation(void)
{
    fixture_t   f;
    uint32_t    other;
    kv_block_t *a, *b;
    kvp_key_t   key = make_key(1);

    setup(&f, MiB);
    ASSERT_OK(kv_block_table_ns_id(f.table, "other", 5, 1, &other));
    a = put(&f, f.ns, 1, PAGE, 0xa);
    ASSERT(get(&f, other, 1) == NULL);
    b = put(&f, other, 1, PAGE, 0xb);
    ASSERT(a != b);
    ASSERT_NE(a->offset, b->offset);
    ASSERT(get(&f, f.ns, 1) == a);
    ASSERT(get(&f, other, 1) == b);
    ASSERT_EQ(b->ns_id, other);

    ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &key), 1);
    ASSERT(get(&f, f.ns, 1) == NULL);
    ASSERT(get(&f, other, 1) == b);
    ASSERT_EQ(((uint8_t *)kv_block_table_data(f.table, b))[0], 0xb);
    /* lookups in an unknown namespace id miss */
    ASSERT(get(&f, 4000, 1) == NULL);
    teardown(&f);
}

/* Many blocks: the hash table grows and finds every one. */
static void test_many_blocks(void)
{
    enum { N = 20000 };
    fixture_t              f;
    kv_block_table_stats_t s;
    kvp_key_t              key;
    kv_block_t            *block;

    setup(&f, N * PAGE);
    for (uint64_t i = 0; i < N; i++) {
        key = make_key(i);
        ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, 1, &block));
        kv_block_table_commit(f.table, block, i);
    }
    stats(&f, &s);
    ASSERT_EQ(s.blocks, N);
    ASSERT_EQ(s.evictions, 0);
    for (uint64_t i = 0; i < N; i++) {
        block = get(&f, f.ns, i);
        ASSERT(block != NULL);
        ASSERT_EQ(block->checksum, i);
    }
    for (uint64_t i = 0; i < N; i += 2) {
        key = make_key(i);
        ASSERT_EQ(kv_block_table_remove(f.table, f.ns, &key), 1);
    }
    for (uint64_t i = 0; i < N; i++) {
        ASSERT_EQ(get(&f, f.ns, i) != NULL, i % 2);
    }
    ASSERT_EQ(kv_arena_used(f.arena), N / 2 * PAGE);
    teardown(&f);
}

/*
 * A seeded random mix of every operation against a small model.  After each
 * reserve, every block that disappeared must have been evictable (committed,
 * unpinned) and older than every surviving evictable block; pinned blocks'
 * bytes never change; the counters match the model.
 */
enum { MODEL_KEYS = 48 };

typedef struct model_entry {
    int         present;  /* committed in the table */
    kv_block_t *block;
    uint64_t    last_use; /* commit or touch tick */
    uint8_t     fill;
    int         pins;
} model_entry_t;

static uint64_t rng_state = 0x1234567;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void model_check_data(fixture_t *f, const model_entry_t *e)
{
    const uint8_t *p = kv_block_table_data(f->table, e->block);
    ASSERT_EQ(p[0], e->fill);
    ASSERT_EQ(p[e->block->size - 1], e->fill);
    ASSERT_EQ(e->block->checksum, kv_checksum(p, e->block->size));
}

static void test_random_against_model(void)
{
    fixture_t              f;
    model_entry_t          model[MODEL_KEYS];
    /* readers of dead blocks: removed or replaced while pinned */
    kv_block_t            *dead[4096];
    uint8_t                dead_fill[4096];
    size_t                 ndead = 0;
    uint64_t               tick = 0, evictions = 0, no_space = 0;
    kv_block_table_stats_t s;

    memset(model, 0, sizeof(model));
    setup(&f, 32 * PAGE);

    for (int op = 0; op < 20000; op++) {
        unsigned       k = (unsigned)(rng_next() % MODEL_KEYS);
        model_entry_t *e = &model[k];
        kvp_key_t      key = make_key(k);
        unsigned       r = (unsigned)(rng_next() % 100);

        if (r < 40) {
            /* put: reserve, maybe abort, else commit */
            uint64_t     size = 1 + rng_next() % (6 * PAGE);
            kv_block_t  *block;
            kvp_status_t status;

            status = kv_block_table_reserve(f.table, f.ns, &key, size, &block);
            /* who vanished was evicted: evictable and the oldest */
            uint64_t oldest_survivor = UINT64_MAX, newest_victim = 0;
            uint64_t vanished = 0;
            for (unsigned i = 0; i < MODEL_KEYS; i++) {
                model_entry_t *m = &model[i];
                kvp_key_t      mk = make_key(i);
                if (!m->present) {
                    continue;
                }
                if (kv_block_table_lookup(f.table, f.ns, &mk) == NULL) {
                    ASSERT_EQ(m->pins, 0);
                    m->present = 0;
                    vanished++;
                    if (m->last_use > newest_victim) {
                        newest_victim = m->last_use;
                    }
                } else if (m->pins == 0 && m->last_use < oldest_survivor) {
                    oldest_survivor = m->last_use;
                }
            }
            ASSERT(vanished == 0 || newest_victim < oldest_survivor);
            evictions += vanished;
            if (status == KVP_ERR_NO_SPACE) {
                /* refused only if evicting all evictable cannot help */
                uint64_t evictable = 0, rounded = (size + PAGE - 1) / PAGE * PAGE;
                for (unsigned i = 0; i < MODEL_KEYS; i++) {
                    if (model[i].present && model[i].pins == 0) {
                        evictable += kv_arena_alloc_size(f.arena,
                                                         model[i].block->offset);
                    }
                }
                ASSERT(evictable == 0 ||
                       kv_arena_capacity(f.arena) - kv_arena_used(f.arena) +
                       evictable < rounded);
                no_space++;
                continue;
            }
            ASSERT_OK(status);
            uint8_t fill = (uint8_t)rng_next();
            memset(kv_block_table_data(f.table, block), fill, size);
            if (rng_next() % 8 == 0) {
                kv_block_table_abort(f.table, block);
                continue;
            }
            /* replacing a block being read: its readers keep it (dead) */
            for (int p = 0; e->present && p < e->pins; p++) {
                ASSERT(ndead < 4096);
                dead_fill[ndead] = e->fill;
                dead[ndead++]    = e->block;
            }
            kv_block_table_commit(f.table, block,
                                  kv_checksum(kv_block_table_data(f.table, block),
                                              size));
            e->present  = 1;
            e->block    = block;
            e->fill     = fill;
            e->pins     = 0;
            e->last_use = ++tick;
        } else if (r < 50) {
            kv_block_t *block = kv_block_table_lookup(f.table, f.ns, &key);
            ASSERT_EQ(block != NULL, e->present);
            if (block != NULL) {
                ASSERT(block == e->block);
                model_check_data(&f, e);
                kv_block_table_touch(f.table, block);
                e->last_use = ++tick;
            }
        } else if (r < 66) {
            /* a reader starts: pin the first present block from k on */
            for (unsigned j = 0; j < MODEL_KEYS; j++) {
                model_entry_t *m = &model[(k + j) % MODEL_KEYS];
                if (m->present && m->pins < 3) {
                    kv_block_table_pin(f.table, m->block);
                    m->pins++;
                    break;
                }
            }
        } else if (r < 82) {
            /* a reader ends: of a dead block, or of a live one */
            if ((ndead > 0) && (rng_next() % 2)) {
                size_t         i = (size_t)(rng_next() % ndead);
                const uint8_t *p = kv_block_table_data(f.table, dead[i]);
                ASSERT_EQ(p[0], dead_fill[i]); /* still intact */
                kv_block_table_unpin(f.table, dead[i]);
                dead[i]      = dead[ndead - 1];
                dead_fill[i] = dead_fill[ndead - 1];
                ndead--;
                continue;
            }
            for (unsigned j = 0; j < MODEL_KEYS; j++) {
                model_entry_t *m = &model[(k + j) % MODEL_KEYS];
                if (m->present && m->pins > 0) {
                    model_check_data(&f, m);
                    kv_block_table_unpin(f.table, m->block);
                    m->pins--;
                    break;
                }
            }
        } else {
            int removed = kv_block_table_remove(f.table, f.ns, &key);
            ASSERT_EQ(removed, e->present);
            if (e->present) {
                for (int p = 0; p < e->pins; p++) {
                    ASSERT(ndead < 4096);
                    dead_fill[ndead] = e->fill;
                    dead[ndead++]    = e->block;
                }
                e->present = 0;
                e->pins    = 0;
            }
        }

        if (op % 100 == 0) {
            uint64_t blocks = 0, used = 0;
            for (unsigned i = 0; i < MODEL_KEYS; i++) {
                if (model[i].present) {
                    blocks++;
                    used += kv_arena_alloc_size(f.arena, model[i].block->offset);
                }
            }
            stats(&f, &s);
            ASSERT_EQ(s.blocks, blocks);
            ASSERT_EQ(s.used_bytes, used);
            ASSERT_EQ(s.evictions, evictions);
            ASSERT_LE(used, kv_arena_used(f.arena));
            ASSERT_OK(kv_arena_check(f.arena));
        }
    }
    ASSERT(evictions > 100);
    ASSERT(no_space > 10);

    /* release every reader: only committed blocks remain */
    while (ndead > 0) {
        kv_block_table_unpin(f.table, dead[--ndead]);
    }
    for (unsigned i = 0; i < MODEL_KEYS; i++) {
        while (model[i].present && model[i].pins > 0) {
            kv_block_table_unpin(f.table, model[i].block);
            model[i].pins--;
        }
    }
    stats(&f, &s);
    ASSERT_EQ(s.used_bytes, kv_arena_used(f.arena));
    teardown(&f);
}

/* Store one page for key @n whose chain parent is key @parent. */
static kv_block_t *put_child(fixture_t *f, uint64_t n, uint64_t parent)
{
    kvp_key_t   key = make_key(n), pkey = make_key(parent);
    kv_block_t *block;

    ASSERT_OK(kv_block_table_reserve(f->table, f->ns, &key, PAGE, &block));
    kv_block_table_set_parent(block, &pkey);
    kv_block_table_commit(f->table, block, 0);
    return block;
}

/*
 * Chains evict from their leaf, with either policy: a <- b <- c and d;
 * a is used last, yet the victims are c, then b (a leaf by then) or d.
 */
static void test_chain_leaves_first(void)
{
    const char *const *names = kv_evict_policy_names();

    for (size_t n = 0; names[n] != NULL; n++) {
        fixture_t f;

        setup_policy(&f, 4 * PAGE, names[n]);
        put(&f, f.ns, 1, PAGE, 1);
        put_child(&f, 2, 1);
        put_child(&f, 3, 2);
        put(&f, f.ns, 4, PAGE, 4);
        kv_block_table_touch(f.table, get(&f, f.ns, 1));
        put(&f, f.ns, 5, PAGE, 5);
        ASSERT(get(&f, f.ns, 3) == NULL);  /* lru alone would take 2 */
        ASSERT(get(&f, f.ns, 2) != NULL);
        put(&f, f.ns, 6, PAGE, 6);
        put(&f, f.ns, 7, PAGE, 7);
        ASSERT(get(&f, f.ns, 1) != NULL);  /* the root outlives its chain */
        ASSERT(get(&f, f.ns, 2) == NULL);
        ASSERT(get(&f, f.ns, 4) == NULL);

        teardown(&f);

        /* a new copy of a parent keeps its children: 1 is older than 10
         * but still 8's parent, so 10 goes first */
        setup_policy(&f, 4 * PAGE, names[n]);
        put(&f, f.ns, 1, PAGE, 1);
        put_child(&f, 8, 1);
        put(&f, f.ns, 1, PAGE, 9);
        put(&f, f.ns, 10, PAGE, 10);
        kv_block_table_touch(f.table, get(&f, f.ns, 8));
        put(&f, f.ns, 11, PAGE, 11);
        put(&f, f.ns, 12, PAGE, 12);
        ASSERT(get(&f, f.ns, 10) == NULL);
        ASSERT(get(&f, f.ns, 1) != NULL);
        teardown(&f);
    }
}

/*
 * A pinned leaf does not hold its unpinned ancestors: when nothing else
 * can go, its parent is evicted (reserve only fails when evicting every
 * unpinned block cannot make room).
 */
static void test_pinned_leaf_parent_evictable(void)
{
    fixture_t   f;
    kv_block_t *leaf, *block;
    kvp_key_t   key = make_key(3);

    setup_policy(&f, 2 * PAGE, "lfuda");
    put(&f, f.ns, 1, PAGE, 1);
    leaf = put_child(&f, 2, 1);
    kv_block_table_pin(f.table, leaf);
    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &key, PAGE, &block));
    ASSERT(get(&f, f.ns, 1) == NULL);
    ASSERT(get(&f, f.ns, 2) == leaf);
    kv_block_table_commit(f.table, block, 0);
    kv_block_table_unpin(f.table, leaf);
    teardown(&f);
}

/* The policy is the table's choice: lfuda keeps a block used often over
 * newer blocks used once, where lru evicts it as the least recent. */
static void test_policy_choice(void)
{
    const char *policies[] = {"lru", "lfuda"};

    for (int p = 0; p < 2; p++) {
        fixture_t f;

        setup_policy(&f, 4 * PAGE, policies[p]);
        put(&f, f.ns, 1, PAGE, 1);
        for (int i = 0; i < 3; i++) {
            kv_block_table_touch(f.table, get(&f, f.ns, 1));
        }
        put(&f, f.ns, 2, PAGE, 2);
        put(&f, f.ns, 3, PAGE, 3);
        put(&f, f.ns, 4, PAGE, 4);
        put(&f, f.ns, 5, PAGE, 5);
        if (p == 0) {
            ASSERT(get(&f, f.ns, 1) == NULL);
            ASSERT(get(&f, f.ns, 2) != NULL);
        } else {
            ASSERT(get(&f, f.ns, 1) != NULL);
            ASSERT(get(&f, f.ns, 2) == NULL);
        }
        teardown(&f);
    }
}

/* What the listener saw: +n for a store of key n, -n for a removal. */
typedef struct events {
    int64_t seen[16];
    int     n;
} events_t;

static void record(void *arg, int stored, const kv_block_t *block)
{
    events_t *ev = arg;
    uint64_t  n;

    memcpy(&n, block->key.bytes + 8, sizeof(n));
    ASSERT(ev->n < 16);
    ev->seen[ev->n++] = stored ? (int64_t)n : -(int64_t)n;
}

static int count_block(const kv_block_t *block, void *arg)
{
    (*(int *)arg)++;
    return 0;
}

static void test_listener_parent_foreach(void)
{
    fixture_t   f;
    events_t    ev = { .n = 0 };
    kvp_key_t   k1 = make_key(1), k2 = make_key(2);
    kv_block_t *block;
    size_t      len;
    int         count = 0;

    setup(&f, 4 * PAGE);
    kv_block_table_set_listener(f.table, record, &ev);
    put(&f, f.ns, 1, PAGE, 1);
    ASSERT_OK(kv_block_table_reserve(f.table, f.ns, &k2, PAGE, &block));
    ASSERT(!block->has_parent);
    kv_block_table_set_parent(block, &k1);
    kv_block_table_commit(f.table, block, 0);
    block = get(&f, f.ns, 2);
    ASSERT(block->has_parent);
    ASSERT(memcmp(&block->parent, &k1, sizeof(k1)) == 0);
    put(&f, f.ns, 2, PAGE, 2);           /* replace: removal first */
    put(&f, f.ns, 3, PAGE, 3);
    put(&f, f.ns, 4, PAGE, 4);
    /* evicts the least recently used leaf, 2: 1 is older, but 2's parent */
    put(&f, f.ns, 5, PAGE, 5);
    ASSERT(kv_block_table_remove(f.table, f.ns, &k1));
    {
        const int64_t want[] = { 1, 2, -2, 2, 3, 4, -2, 5, -1 };
        ASSERT_EQ(ev.n, (int)(sizeof(want) / sizeof(want[0])));
        for (int i = 0; i < ev.n; i++) {
            ASSERT_EQ(ev.seen[i], want[i]);
        }
    }
    kv_block_table_foreach(f.table, count_block, &count);
    ASSERT_EQ(count, 3);
    ASSERT(memcmp(kv_block_table_ns_name(f.table, f.ns, &len), "default", 7) == 0);
    ASSERT_EQ(len, 7);
    ASSERT(kv_block_table_ns_name(f.table, f.ns + 1, &len) == NULL);
    teardown(&f);
}

KV_TEST_MAIN(KV_TEST(test_create_params), KV_TEST(test_namespace_ids),
             KV_TEST(test_namespace_cap), KV_TEST(test_insert_lookup),
             KV_TEST(test_reserve_errors), KV_TEST(test_replace),
             KV_TEST(test_replace_pinned), KV_TEST(test_abort),
             KV_TEST(test_lru_eviction_order), KV_TEST(test_pinned_never_evicted),
             KV_TEST(test_no_pointless_eviction),
             KV_TEST(test_pending_never_evicted), KV_TEST(test_remove),
             KV_TEST(test_namespace_isolation), KV_TEST(test_many_blocks),
             KV_TEST(test_random_against_model),
             KV_TEST(test_listener_parent_foreach),
             KV_TEST(test_chain_leaves_first),
             KV_TEST(test_pinned_leaf_parent_evictable),
             KV_TEST(test_policy_choice))
