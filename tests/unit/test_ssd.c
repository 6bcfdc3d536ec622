/*
 * The SSD tier: the segment store (pool/ssd.c) on a real directory with
 * O_DIRECT and io_uring, and the block table's demotion, staging and
 * recovery over it.  Skips (77) where the temporary directory's
 * filesystem has no O_DIRECT (tmpfs) or io_uring is not allowed.
 */
#include "test.h"
#include "test_util.h"

#include "block_table.h"
#include "ssd.h"

#include <kv/hash.h>
#include <kv/log.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char test_dir[256];

static kvp_key_t make_key(int i)
{
    kvp_key_t key;

    memset(&key, 0, sizeof(key));
    memcpy(key.bytes, &i, sizeof(i));
    key.bytes[15] = (uint8_t)(i * 13 + 1);
    return key;
}

static void rm_dir(void)
{
    dir_remove(test_dir);
}

static void make_dir(void)
{
    odirect_dir_make(test_dir, sizeof(test_dir));
}

static void fill(void *buf, uint64_t len, uint64_t seed)
{
    uint64_t *w = buf;

    for (uint64_t i = 0; i < len / 8; i++) {
        w[i] = (seed + i) * 0x9e3779b97f4a7c15ull;
    }
}

static void *page_buf(uint64_t len)
{
    void *p = NULL;

    ASSERT_EQ(
        posix_memalign(&p, KV_SSD_PAGE, (len + KV_SSD_PAGE - 1) & ~(KV_SSD_PAGE - 1)), 0);
    return p;
}

typedef struct {
    kv_ssd_loc_t loc[64];
    int          moved;
    int          lost;
} owners_t;

static void on_move(void *arg, void *owner, kv_ssd_loc_t loc)
{
    owners_t *o = arg;
    size_t    i = (size_t)(uintptr_t)owner - 1;

    o->loc[i] = loc;
    o->moved++;
    o->lost += loc == KV_SSD_LOC_NONE;
}

static kvp_status_t open_store(kv_ssd_t **ssd_p, uint64_t capacity, owners_t *o)
{
    kv_ssd_config_t config = {.dir          = test_dir,
                              .capacity     = capacity,
                              .segment_size = MiB,
                              .queue_depth  = 8,
                              .sync         = 1};

    return kv_ssd_open(&config, on_move, o, ssd_p);
}

static void meta_of(kv_ssd_meta_t *meta, int i, uint64_t size, const void *data)
{
    memset(meta, 0, sizeof(*meta));
    meta->ns       = "test";
    meta->ns_len   = 4;
    meta->key      = make_key(i);
    meta->size     = size;
    meta->checksum = kv_checksum(data, size);
}

/* Write @p n records of @p size (seed i), owners 1..n. */
static void write_records(kv_ssd_t *ssd, owners_t *o, void **bufs, int n, uint64_t size)
{
    kv_ssd_io_t ios[64];

    for (int i = 0; i < n; i++) {
        bufs[i] = page_buf(size);
        fill(bufs[i], size, (uint64_t)i);
        memset(&ios[i], 0, sizeof(ios[i]));
        meta_of(&ios[i].meta, i, size, bufs[i]);
        ios[i].data  = bufs[i];
        ios[i].owner = (void *)(uintptr_t)(i + 1);
    }
    kv_ssd_write(ssd, ios, (size_t)n);
    for (int i = 0; i < n; i++) {
        ASSERT_OK(ios[i].status);
        o->loc[i] = ios[i].loc;
    }
}

/* Read record @p i back: its status, and on KVP_OK its bytes checked. */
static kvp_status_t read_record(kv_ssd_t *ssd, owners_t *o, int i, uint64_t size)
{
    kv_ssd_io_t  io   = {0};
    void        *want = page_buf(size);
    kvp_status_t status;

    fill(want, size, (uint64_t)i);
    meta_of(&io.meta, i, size, want);
    io.data = page_buf(size);
    io.loc  = o->loc[i];
    kv_ssd_read(ssd, &io, 1);
    if (io.status == KVP_OK) {
        ASSERT(memcmp(io.data, want, size) == 0);
    }
    status = io.status;
    free(io.data);
    free(want);
    return status;
}

static void test_write_read_free(void)
{
    owners_t       o = {0};
    kv_ssd_t      *ssd;
    kv_ssd_stats_t st;
    void          *bufs[64];

    make_dir();
    ASSERT_OK(open_store(&ssd, 16 * MiB, &o));
    write_records(ssd, &o, bufs, 20, 100000); /* 25 pages + 1 each */
    for (int i = 0; i < 20; i++) {
        ASSERT_OK(read_record(ssd, &o, i, 100000));
    }
    kv_ssd_stats(ssd, &st);
    ASSERT_EQ(st.live_bytes, 20 * kv_ssd_record_bytes(100000));
    ASSERT_EQ(st.bytes_written, 20 * kv_ssd_record_bytes(100000));
    for (int i = 0; i < 20; i += 2) {
        kv_ssd_free(ssd, o.loc[i], 0);
    }
    kv_ssd_flush(ssd);
    kv_ssd_stats(ssd, &st);
    ASSERT_EQ(st.live_bytes, 10 * kv_ssd_record_bytes(100000));
    /* a wrong expectation (size) is refused, not read */
    {
        kv_ssd_io_t io = {0};
        meta_of(&io.meta, 1, 4096, bufs[1]);
        io.data = bufs[1];
        io.loc  = o.loc[1];
        kv_ssd_read(ssd, &io, 1);
        ASSERT(io.status != KVP_OK);
    }
    /* a second process (or store) may not open the same directory */
    {
        owners_t  o2 = {0};
        kv_ssd_t *other;
        ASSERT_STATUS(open_store(&other, 16 * MiB, &o2), KVP_ERR_CONFIG);
    }
    kv_ssd_close(ssd);
    for (int i = 0; i < 20; i++) {
        free(bufs[i]);
    }
    rm_dir();
}

typedef struct {
    int      found[64];
    uint64_t kept;
    owners_t where; /* the locations recovery gave */
} recovered_t;

static void *on_recover(void *arg, const kv_ssd_meta_t *meta, kv_ssd_loc_t loc)
{
    recovered_t *r = arg;

    for (int i = 0; i < 64; i++) {
        kvp_key_t key = make_key(i);
        if (memcmp(key.bytes, meta->key.bytes, KVP_KEY_LEN) == 0) {
            r->found[i]++;
            r->where.loc[i] = loc;
            return (void *)(uintptr_t)(i + 1);
        }
    }
    return NULL;
}

/* Change one byte of the file at @p offset (under the store's feet). */
static void poke(const char *name, off_t offset)
{
    char    path[320];
    uint8_t b;
    int     fd;

    snprintf(path, sizeof(path), "%s/%s", test_dir, name);
    fd = open(path, O_RDWR);
    ASSERT(fd >= 0);
    ASSERT_EQ(pread(fd, &b, 1, offset), 1);
    b ^= 0x5a;
    ASSERT_EQ(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

static void test_recover_torn_and_corrupt(void)
{
    owners_t    o = {0};
    recovered_t r = {0};
    kv_ssd_t   *ssd;
    void       *bufs[64];
    uint64_t    rec = kv_ssd_record_bytes(60000); /* 16 pages */

    make_dir();
    ASSERT_OK(open_store(&ssd, 16 * MiB, &o));
    write_records(ssd, &o, bufs, 12, 60000); /* all in seg-0000000000.kvs */
    kv_ssd_free(ssd, o.loc[3], 1);           /* freed: must not come back */
    kv_ssd_close(ssd);

    /* record 5's bytes torn; record 11 (the last) cut short */
    poke("seg-0000000000.kvs", (off_t)(5 * rec + KV_SSD_PAGE + 777));
    {
        char path[320];
        snprintf(path, sizeof(path), "%s/seg-0000000000.kvs", test_dir);
        ASSERT_EQ(truncate(path, (off_t)(11 * rec + 3 * KV_SSD_PAGE)), 0);
    }
    ASSERT_OK(open_store(&ssd, 16 * MiB, &o));
    r.kept = kv_ssd_recover(ssd, on_recover, &r);
    ASSERT_EQ(r.kept, 9u);
    for (int i = 0; i < 12; i++) {
        ASSERT_EQ(r.found[i], (i == 3 || i == 5 || i == 11) ? 0 : 1);
    }
    /* what came back reads back */
    for (int i = 0; i < 11; i++) {
        if (r.found[i]) {
            ASSERT_OK(read_record(ssd, &r.where, i, 60000));
        }
    }
    /* a byte changed after recovery: a checksum error, never data */
    kv_ssd_close(ssd);
    poke("seg-0000000000.kvs", (off_t)(7 * rec + KV_SSD_PAGE + 5));
    memset(&r, 0, sizeof(r));
    ASSERT_OK(open_store(&ssd, 16 * MiB, &o));
    ASSERT_EQ(kv_ssd_recover(ssd, on_recover, &r), 8u);
    ASSERT_EQ(r.found[7], 0);
    kv_ssd_close(ssd);
    for (int i = 0; i < 12; i++) {
        free(bufs[i]);
    }
    rm_dir();
}

static void test_read_corrupt_is_miss(void)
{
    owners_t  o = {0};
    kv_ssd_t *ssd;
    void     *bufs[64];
    uint64_t  rec = kv_ssd_record_bytes(60000);

    make_dir();
    ASSERT_OK(open_store(&ssd, 16 * MiB, &o));
    write_records(ssd, &o, bufs, 4, 60000);
    poke("seg-0000000000.kvs", (off_t)(2 * rec + KV_SSD_PAGE + 100)); /* bytes */
    poke("seg-0000000000.kvs", (off_t)(1 * rec + 20));                /* header */
    ASSERT_OK(read_record(ssd, &o, 0, 60000));
    ASSERT_STATUS(read_record(ssd, &o, 1, 60000), KVP_ERR_CHECKSUM);
    ASSERT_STATUS(read_record(ssd, &o, 2, 60000), KVP_ERR_CHECKSUM);
    ASSERT_OK(read_record(ssd, &o, 3, 60000));
    kv_ssd_close(ssd);
    for (int i = 0; i < 4; i++) {
        free(bufs[i]);
    }
    rm_dir();
}

static void test_compaction(void)
{
    owners_t       o = {0};
    kv_ssd_t      *ssd;
    kv_ssd_stats_t st;
    void          *bufs[64];
    uint64_t       size     = 200000; /* 50 pages: 5 records a 1 MiB segment */
    int            live[64] = {0};

    make_dir();
    ASSERT_OK(open_store(&ssd, 6 * MiB, &o)); /* 6 segments, 4 MiB live at most */
    /* write in rounds, freeing most of each round: the store must compact */
    for (int round = 0; round < 8; round++) {
        kv_ssd_io_t ios[5];
        for (int j = 0; j < 5; j++) {
            int i   = round * 5 + j;
            bufs[i] = page_buf(size);
            fill(bufs[i], size, (uint64_t)i);
            memset(&ios[j], 0, sizeof(ios[j]));
            meta_of(&ios[j].meta, i, size, bufs[i]);
            ios[j].data  = bufs[i];
            ios[j].owner = (void *)(uintptr_t)(i + 1);
        }
        ASSERT(kv_ssd_fits(ssd, 5 * kv_ssd_record_bytes(size)));
        kv_ssd_write(ssd, ios, 5);
        for (int j = 0; j < 5; j++) {
            int i = round * 5 + j;
            ASSERT_OK(ios[j].status);
            o.loc[i] = ios[j].loc;
            live[i]  = 1;
            if (j != 2) { /* one of five stays */
                kv_ssd_free(ssd, o.loc[i], 0);
                live[i] = 0;
            }
        }
    }
    kv_ssd_stats(ssd, &st);
    ASSERT(st.segments <= 6);
    ASSERT(st.compactions > 0);
    ASSERT_EQ(o.lost, 0);
    for (int i = 0; i < 40; i++) {
        if (live[i]) {
            ASSERT_OK(read_record(ssd, &o, i, size));
        }
    }
    /* full: fits says no once live bytes reach capacity - 2 segments */
    ASSERT(!kv_ssd_fits(ssd, 4 * MiB));
    kv_ssd_close(ssd);
    for (int i = 0; i < 40; i++) {
        free(bufs[i]);
    }
    rm_dir();
}

/* The block table over an SSD tier: demotion, staging, recovery. */
static kv_block_table_t *table_open_marks(kv_arena_t **arena_p, uint64_t *recovered_p,
                                          uint64_t high, uint64_t low)
{
    kv_block_table_t *table;
    kv_ssd_config_t   config = {.dir          = test_dir,
                                .capacity     = 32 * MiB,
                                .segment_size = MiB,
                                .queue_depth  = 8,
                                .sync         = 1};

    ASSERT_OK(kv_arena_create(MiB, arena_p));
    ASSERT_OK(kv_block_table_create(*arena_p, "lru", &table));
    ASSERT_OK(kv_block_table_open_ssd(table, &config, high, low, recovered_p));
    return table;
}

static kv_block_table_t *table_open(kv_arena_t **arena_p, uint64_t *recovered_p)
{
    return table_open_marks(arena_p, recovered_p, MiB, MiB / 2);
}

static void put_block(kv_block_table_t *table, uint32_t ns_id, int i, uint64_t size)
{
    kv_block_t *block;
    kvp_key_t   key = make_key(i), parent;

    ASSERT_OK(kv_block_table_reserve(table, ns_id, &key, size, &block));
    fill(kv_block_table_data(table, block), size, (uint64_t)i);
    if (i > 0) {
        int p  = i - 1;
        parent = make_key(p);
        kv_block_table_set_parent(block, &parent);
    }
    kv_block_table_commit(table, block,
                          kv_checksum(kv_block_table_data(table, block), size));
}

static void test_table_demote_stage_recover(void)
{
    kv_arena_t            *arena;
    kv_block_table_t      *table;
    kv_block_table_stats_t st;
    uint32_t               ns_id;
    uint64_t               recovered;
    void                  *want = page_buf(64 * 1024);

    make_dir();
    table = table_open(&arena, &recovered);
    ASSERT_EQ(recovered, 0u);
    ASSERT_OK(kv_block_table_ns_id(table, "test", 4, 1, &ns_id));
    /* 64 blocks of 64 KiB into a 1 MiB arena: most are demoted, none lost */
    for (int i = 0; i < 64; i++) {
        put_block(table, ns_id, i, 64 * 1024);
    }
    kv_block_table_stats(table, &st);
    ASSERT_EQ(st.evictions, 0u);
    ASSERT(st.demotions >= 48);
    ASSERT_EQ(st.blocks + st.ssd_blocks, 64u);
    /* each block is there; those on SSD come back byte for byte */
    for (int i = 0; i < 64; i++) {
        kvp_key_t   key   = make_key(i);
        kv_block_t *block = kv_block_table_lookup(table, ns_id, &key);
        ASSERT(block != NULL);
        if (block->tier == KV_TIER_SSD) {
            ASSERT_EQ(kv_block_table_stage(table, &block, 1, 2), 1u);
            ASSERT_EQ(block->tier, KV_TIER_HOST);
        }
        fill(want, 64 * 1024, (uint64_t)i);
        ASSERT(memcmp(kv_block_table_data(table, block), want, 64 * 1024) == 0);
    }
    kv_block_table_stats(table, &st);
    ASSERT(st.promotions >= 48);
    /* a removal is final, even across a restart */
    {
        int       gone = 10;
        kvp_key_t key  = make_key(gone);
        ASSERT_EQ(kv_block_table_remove(table, ns_id, &key), 1);
    }
    /* restart: what was on SSD comes back (what was in host memory is gone) */
    kv_block_table_destroy(table);
    kv_arena_destroy(arena);

    table = table_open(&arena, &recovered);
    kv_block_table_stats(table, &st);
    ASSERT_EQ(st.ssd_blocks, recovered);
    ASSERT(recovered >= 40);
    ASSERT_OK(kv_block_table_ns_id(table, "test", 4, 0, &ns_id));
    for (int i = 0; i < 64; i++) {
        kvp_key_t   key   = make_key(i);
        kv_block_t *block = kv_block_table_lookup(table, ns_id, &key);
        if (i == 10) {
            ASSERT(block == NULL);
        }
        if (block == NULL) {
            continue;
        }
        ASSERT_EQ(block->tier, KV_TIER_SSD);
        ASSERT_EQ(kv_block_table_stage(table, &block, 1, 0), 1u);
        fill(want, 64 * 1024, (uint64_t)i);
        ASSERT(memcmp(kv_block_table_data(table, block), want, 64 * 1024) == 0);
    }
    kv_block_table_destroy(table);
    kv_arena_destroy(arena);
    free(want);
    rm_dir();
}

/* Staging a chain's block brings the next ones along (read-ahead). */
static void test_stage_reads_ahead(void)
{
    kv_arena_t            *arena;
    kv_block_table_t      *table;
    kv_block_table_stats_t st;
    uint32_t               ns_id;
    kv_block_t            *blocks[40];

    make_dir();
    table = table_open(&arena, NULL);
    ASSERT_OK(kv_block_table_ns_id(table, "test", 4, 1, &ns_id));
    for (int i = 0; i < 40; i++) { /* one chain: block i's parent is i - 1 */
        put_block(table, ns_id, i, 64 * 1024);
    }
    for (int i = 0; i < 40; i++) {
        kvp_key_t key = make_key(i);
        blocks[i]     = kv_block_table_lookup(table, ns_id, &key);
        ASSERT(blocks[i] != NULL);
    }
    ASSERT_EQ(blocks[0]->tier, KV_TIER_SSD); /* leaves went first, then the rest */
    ASSERT_EQ(blocks[4]->tier, KV_TIER_SSD);
    kv_block_table_stats(table, &st);
    ASSERT_EQ(kv_block_table_stage(table, &blocks[0], 1, 3), 1u);
    ASSERT_EQ(blocks[0]->tier, KV_TIER_HOST);
    for (int i = 1; i <= 3; i++) {
        ASSERT_EQ(blocks[i]->tier, KV_TIER_HOST);
    }
    ASSERT_EQ(blocks[4]->tier, KV_TIER_SSD);
    {
        kv_block_table_stats_t after;
        kv_block_table_stats(table, &after);
        ASSERT_EQ(after.promotions - st.promotions, 4u);
    }
    kv_block_table_destroy(table);
    kv_arena_destroy(arena);
    rm_dir();
}

/* Every block of 0..n-1 is found, byte for byte (SSD ones staged). */
static void check_blocks(kv_block_table_t *table, uint32_t ns_id, int n)
{
    void *want = page_buf(64 * 1024);

    for (int i = 0; i < n; i++) {
        kvp_key_t   key   = make_key(i);
        kv_block_t *block = kv_block_table_lookup(table, ns_id, &key);
        ASSERT(block != NULL);
        if (block->tier == KV_TIER_SSD) {
            ASSERT_EQ(kv_block_table_stage(table, &block, 1, 0), 1u);
        }
        fill(want, 64 * 1024, (uint64_t)i);
        ASSERT(memcmp(kv_block_table_data(table, block), want, 64 * 1024) == 0);
    }
    free(want);
}

/*
 * Balance leaves its batch writing and returns; the eventfd announces the
 * completion, and calls on it drain host memory to the low watermark.  A
 * lookup of a victim still in flight finds it whole.
 */
static void test_balance_in_background(void)
{
    kv_arena_t            *arena;
    kv_block_table_t      *table;
    kv_block_table_stats_t st;
    uint32_t               ns_id;
    struct pollfd          pfd = {.events = POLLIN};
    int                    rounds;

    make_dir();
    table = table_open_marks(&arena, NULL, MiB / 2, MiB / 4);
    ASSERT_OK(kv_block_table_ns_id(table, "test", 4, 1, &ns_id));
    pfd.fd = kv_block_table_event_fd(table);
    ASSERT(pfd.fd >= 0);
    for (int i = 0; i < 12; i++) { /* 768 KiB: over the high watermark */
        put_block(table, ns_id, i, 64 * 1024);
    }
    kv_block_table_stats(table, &st);
    ASSERT_EQ(st.demotions, 0u);
    /* each completion wakes the loop; balance goes on until the low mark */
    kv_block_table_balance(table);
    for (rounds = 0; rounds < 1000 && kv_arena_used(arena) > MiB / 4; rounds++) {
        ASSERT_EQ(poll(&pfd, 1, 5000), 1);
        kv_block_table_balance(table);
    }
    ASSERT(kv_arena_used(arena) <= MiB / 4);
    kv_block_table_stats(table, &st);
    ASSERT(st.demotions >= 8);
    ASSERT_EQ(st.evictions, 0u);
    ASSERT_EQ(st.blocks + st.ssd_blocks, 12u);
    /* two batches' worth over the mark again: look up while one is in flight */
    for (int i = 12; i < 20; i++) {
        put_block(table, ns_id, i, 64 * 1024);
    }
    kv_block_table_balance(table);
    check_blocks(table, ns_id, 20);
    kv_block_table_stats(table, &st);
    ASSERT_EQ(st.evictions, 0u);
    ASSERT_EQ(st.blocks + st.ssd_blocks, 20u);
    kv_block_table_destroy(table);
    kv_arena_destroy(arena);
    rm_dir();
}

KV_TEST_MAIN(KV_TEST(test_balance_in_background), KV_TEST(test_stage_reads_ahead), KV_TEST(test_write_read_free),
             KV_TEST(test_recover_torn_and_corrupt), KV_TEST(test_read_corrupt_is_miss),
             KV_TEST(test_compaction), KV_TEST(test_table_demote_stage_recover))
