/*
 * kvpool bench-index: the global prefix index (kvcoord/prefix_index.h) in
 * this process, without a network.
 *
 *   kvpool bench-index [--blocks N] [--json]
 *
 * It grows a prompt tree of N blocks (default 1,000,000): chains of 64 to
 * 512 blocks, three in four starting with a prefix of an earlier chain
 * (cut at a random depth), with random 128-bit keys, one location each on
 * one of 8 nodes.  Then it measures:
 *  - insert: kv_index_store() of every block, parents first, into an index
 *    created without a size hint (so growth is included);
 *  - match: kv_index_match() of whole chains ending at random blocks, each
 *    followed by up to 64 blocks that are not stored (a partial hit, as a
 *    new turn of a conversation), timed per batch of 64 calls;
 *  - match of a 256-block chain: the first k blocks of a stored chain
 *    (k random in 1..256) then 256 - k blocks not stored; each call timed
 *    alone with the monotonic clock (the figure includes one clock read,
 *    some tens of ns);
 *  - bytes per block: kv_index_stats().bytes / blocks;
 *  - remove_node: dropping one node's blocks (a lease expiry: a full scan).
 * Every match answer is checked against the tree; a wrong one fails the run.
 * With --json the last line is one JSON object of the figures.
 */
#include "cli.h"

#include <kvcoord/prefix_index.h>

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_PARENT     UINT32_MAX
#define CHAIN_MIN     64
#define CHAIN_MAX     512
#define TAIL_MAX      64      /* unstored blocks after a match chain */
#define QUERY_MAX     (CHAIN_MAX + TAIL_MAX)
#define MATCH_CHAIN   256
#define BATCH         64
#define MATCH_CALLS   100000
#define NODES         8
#define BLOCKS_MAX    100000000ull

/* The prompt tree: block i, its parent block and its depth (1 = first). */
typedef struct {
    size_t     blocks;
    kvp_key_t *keys;
    uint32_t  *parent;
    uint16_t  *depth;
    uint32_t  *tails;         /* the last block of each chain */
    size_t     chains;
    uint64_t   rng;
} tree_t;

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

static kvp_key_t random_key(uint64_t *state)
{
    kvp_key_t key;
    uint64_t  half[2] = {rng_next(state), rng_next(state)};

    memcpy(key.bytes, half, sizeof(key.bytes));
    return key;
}

static void tree_grow(tree_t *t)
{
    size_t n = 0;

    while (n < t->blocks) {
        size_t   len  = CHAIN_MIN + rng_below(&t->rng, CHAIN_MAX - CHAIN_MIN + 1);
        size_t   from = 0;
        uint32_t at   = NO_PARENT;

        if ((t->chains > 0) && (rng_below(&t->rng, 4) != 0)) {
            /* share the first blocks of an earlier chain, at least one */
            at   = t->tails[rng_below(&t->rng, t->chains)];
            from = 1 + rng_below(&t->rng, KV_MIN((size_t)t->depth[at], len - 1));
            while (t->depth[at] > from) {
                at = t->parent[at];
            }
        }
        for (size_t d = from + 1; (d <= len) && (n < t->blocks); d++, n++) {
            t->keys[n]   = random_key(&t->rng);
            t->parent[n] = at;
            t->depth[n]  = (uint16_t)d;
            at           = (uint32_t)n;
        }
        t->tails[t->chains++] = at;
    }
}

/*
 * Write into @p out the chain of @p keep blocks ending at the ancestor of
 * @p block at depth @p keep, then @p extra keys that are not stored.
 */
static size_t tree_query(tree_t *t, uint32_t block, size_t keep, size_t extra,
                         kvp_key_t *out)
{
    while (t->depth[block] > keep) {
        block = t->parent[block];
    }
    for (size_t i = keep; i-- > 0; block = t->parent[block]) {
        out[i] = t->keys[block];
    }
    for (size_t i = 0; i < extra; i++) {
        out[keep + i] = random_key(&t->rng);
    }
    return keep + extra;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double insert_per_s, match_per_s, match_keys;
    double p50_us, p99_us, bytes_per_block, remove_ms;
    size_t removed;
} figures_t;

static int bench_insert(kv_prefix_index_t *index, uint32_t ns, const tree_t *t,
                        figures_t *f)
{
    uint64_t     t0 = kv_time_ns();
    kvp_status_t status;

    for (size_t i = 0; i < t->blocks; i++) {
        status = kv_index_store(index, ns, &t->keys[i],
                                t->parent[i] == NO_PARENT ? NULL : &t->keys[t->parent[i]],
                                KV_LOC(1 + i % NODES, 0));
        if (status != KVP_OK) {
            fprintf(stderr, "kvpool bench-index: store of block %zu: %s\n", i,
                    kvp_status_string(status));
            return 1;
        }
    }
    f->insert_per_s = (double)t->blocks / ((double)(kv_time_ns() - t0) / 1e9);
    return 0;
}

/* Batches of whole chains with an unstored tail; @return mismatches. */
static size_t bench_match(const kv_prefix_index_t *index, uint32_t ns, tree_t *t,
                          figures_t *f)
{
    kvp_key_t *queries = kv_malloc(BATCH * QUERY_MAX * sizeof(kvp_key_t), "queries");
    size_t     lens[BATCH], want[BATCH], got[BATCH], bad = 0, keys = 0;
    uint64_t   elapsed = 0, t0;

    for (size_t done = 0; done < MATCH_CALLS; done += BATCH) {
        for (size_t q = 0; q < BATCH; q++) {
            uint32_t tail = t->tails[rng_below(&t->rng, t->chains)];

            want[q] = t->depth[tail];
            lens[q] = tree_query(t, tail, want[q], rng_below(&t->rng, TAIL_MAX + 1),
                                 &queries[q * QUERY_MAX]);
            keys += lens[q];
        }
        t0 = kv_time_ns();
        for (size_t q = 0; q < BATCH; q++) {
            got[q] = kv_index_match(index, ns, &queries[q * QUERY_MAX], lens[q]);
        }
        elapsed += kv_time_ns() - t0;
        for (size_t q = 0; q < BATCH; q++) {
            bad += got[q] != want[q];
        }
    }
    f->match_per_s = (double)MATCH_CALLS / ((double)elapsed / 1e9);
    f->match_keys  = (double)keys / MATCH_CALLS;
    kv_free(queries);
    return bad;
}

/* 256-block chains, each call timed alone; @return mismatches. */
static size_t bench_latency(const kv_prefix_index_t *index, uint32_t ns, tree_t *t,
                            figures_t *f)
{
    uint64_t  *lat = kv_malloc(MATCH_CALLS * sizeof(uint64_t), "latencies");
    kvp_key_t  query[MATCH_CHAIN];
    size_t     bad = 0, keep, got;
    uint64_t   t0;

    for (size_t c = 0; c < MATCH_CALLS; c++) {
        uint32_t tail = t->tails[rng_below(&t->rng, t->chains)];

        keep = 1 + rng_below(&t->rng, KV_MIN((size_t)t->depth[tail], (size_t)MATCH_CHAIN));
        tree_query(t, tail, keep, MATCH_CHAIN - keep, query);
        t0     = kv_time_ns();
        got    = kv_index_match(index, ns, query, MATCH_CHAIN);
        lat[c] = kv_time_ns() - t0;
        bad   += got != keep;
    }
    qsort(lat, MATCH_CALLS, sizeof(*lat), cmp_u64);
    f->p50_us = (double)lat[MATCH_CALLS / 2] / 1e3;
    f->p99_us = (double)lat[MATCH_CALLS * 99 / 100] / 1e3;
    kv_free(lat);
    return bad;
}

static int parse_blocks(const char *text, size_t *blocks_p)
{
    char              *end;
    unsigned long long n;

    errno = 0;
    n     = strtoull(text, &end, 10);
    if ((errno != 0) || (end == text) || (*end != '\0') || (text[0] == '-') ||
        (n == 0) || (n > BLOCKS_MAX)) {
        fprintf(stderr, "kvpool bench-index: --blocks takes 1..%llu, not '%s'\n",
                BLOCKS_MAX, text);
        return 0;
    }
    *blocks_p = (size_t)n;
    return 1;
}

int kv_cli_bench_index(int argc, char **argv)
{
    static const struct option options[] = {
        {"blocks", required_argument, NULL, 'N'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    tree_t             t     = {0};
    figures_t          f     = {0};
    kv_prefix_index_t *index = NULL;
    kv_index_stats_t   st;
    uint32_t           ns;
    size_t             bad;
    int                opt, json = 0, rc = 1;
    char               mem[32];
    uint64_t           t0;
    kvp_status_t       status;

    t.blocks = 1000000;
    t.rng    = 42;
    optind   = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'N':
            if (!parse_blocks(optarg, &t.blocks)) {
                return 2;
            }
            break;
        case 'j': json = 1; break;
        default: return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kvpool bench-index: unexpected '%s'\n", argv[optind]);
        return 2;
    }

    t.keys   = kv_malloc(t.blocks * sizeof(*t.keys), "bench keys");
    t.parent = kv_malloc(t.blocks * sizeof(*t.parent), "bench tree");
    t.depth  = kv_malloc(t.blocks * sizeof(*t.depth), "bench tree");
    t.tails  = kv_malloc(t.blocks * sizeof(*t.tails), "bench tree");
    tree_grow(&t);

    status = kv_index_create(0, &index);
    if (status == KVP_OK) {
        status = kv_index_ns_id(index, "bench", 5, 1, &ns);
    }
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool bench-index: %s\n", kvp_status_string(status));
        goto out;
    }
    if (bench_insert(index, ns, &t, &f) != 0) {
        goto out;
    }
    kv_index_stats(index, &st);
    f.bytes_per_block = (double)st.bytes / (double)t.blocks;
    bad  = bench_match(index, ns, &t, &f);
    bad += bench_latency(index, ns, &t, &f);
    t0        = kv_time_ns();
    f.removed = kv_index_remove_node(index, 1);
    f.remove_ms = (double)(kv_time_ns() - t0) / 1e6;

    kv_size_format(st.bytes, mem, sizeof(mem));
    printf("index    %zu blocks in %zu chains of %d..%d blocks sharing prefixes, "
           "one location each\n", t.blocks, t.chains, CHAIN_MIN, CHAIN_MAX);
    printf("insert   %.2f M blocks/s\n", f.insert_per_s / 1e6);
    printf("match    %.2f M calls/s (chains of %.0f blocks on average, "
           "a partial hit)\n", f.match_per_s / 1e6, f.match_keys);
    printf("match    %d-block chain: p50 %.2f us, p99 %.2f us (%d calls)\n",
           MATCH_CHAIN, f.p50_us, f.p99_us, MATCH_CALLS);
    printf("memory   %.1f bytes per block (%s)\n", f.bytes_per_block, mem);
    printf("remove   node 1 of %d (%zu locations): %.1f ms\n", NODES, f.removed,
           f.remove_ms);
    if (bad > 0) {
        printf("WRONG    %zu match answers\n", bad);
    }
    if (json) {
        printf("{\"blocks\":%zu,\"chains\":%zu,\"insert_per_s\":%.0f,"
               "\"match_per_s\":%.0f,\"match_chain_avg\":%.1f,"
               "\"match256_p50_us\":%.3f,\"match256_p99_us\":%.3f,"
               "\"bytes_per_block\":%.1f,\"remove_node_ms\":%.2f,"
               "\"mismatches\":%zu}\n",
               t.blocks, t.chains, f.insert_per_s, f.match_per_s, f.match_keys,
               f.p50_us, f.p99_us, f.bytes_per_block, f.remove_ms, bad);
    }
    rc = bad == 0 ? 0 : 1;
out:
    kv_index_destroy(index);
    kv_free(t.keys);
    kv_free(t.parent);
    kv_free(t.depth);
    kv_free(t.tails);
    return rc;
}
