/*
 * kvpool bench-index: the global prefix index (kvcoord/prefix_index.h) in
 * this process, without a network; with --rpc, the coordinator's Match RPC.
 *
 *   kvpool bench-index [--blocks N] [--json]
 *   kvpool bench-index --rpc [--coord HOST:PORT] [--threads N] [--seconds S]
 *                      [--chain-len L] [--chains C] [--handles thread|shared]
 *                      [--full-hit]
 *                      [--json]
 *
 * In process, it grows a prompt tree of N blocks (default 1,000,000): chains
 * of 64 to 512 blocks, three in four starting with a prefix of an earlier
 * chain (cut at a random depth), with random 128-bit keys, one location each
 * on one of 8 nodes.  Then it measures:
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
 *
 * With --rpc it measures kvp_match() through a coordinator, from this one
 * process: see the part "The coordinator's Match RPC" below.
 */
#include "cli.h"

#include <kvcoord/prefix_index.h>

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---------------------------------------------------------------------- */
/* The coordinator's Match RPC                                             */
/* ---------------------------------------------------------------------- */

/*
 * kvpool bench-index --rpc: kvp_match() through a coordinator, from this
 * one process, on loopback.
 *
 * Without --coord it starts kvpool-coord and one kvpool-node joined to it
 * (child processes on free loopback ports, as kvpool demo does), the node
 * with room for the chains' blocks (a block takes a 4 KiB page: some
 * 190 MiB at the defaults), and stops them at the end.
 *
 * Populate: --chains C chains (default 192) of --chain-len L blocks
 * (default 256) of 64 bytes, three in four starting with a prefix of an
 * earlier chain (cut at a random depth), each saved with kvp_put_chain()
 * through the coordinator (PlanPut, then the node).  The node publishes
 * what it stored to the coordinator on its own, so the run then waits
 * until kvp_match() of every chain returns its whole length.
 *
 * Measure: --threads N threads (default 8) each call kvp_match() in a loop
 * for --seconds S (default 3) on chains of L keys: the first k keys of a
 * stored chain (k random in 1..L, so the coordinator binary-searches a
 * prefix of k; with --full-hit k = L) then L - k keys that are not
 * stored, cycling through queries made before the clock starts.  Each
 * call is timed alone.  With --handles thread (the default) each thread
 * has its own client handle, so its own connection, where the caller
 * reads its reply itself; with --handles shared the threads share one
 * handle, their calls multiplexed on one connection (a reply read by one
 * thread wakes another: more CPU a call on the client's side, a little
 * less on the coordinator's).  Every answer must be k: a wrong one, or a
 * failed call, fails the run (exit 1).  Missing the target (>= 50,000
 * calls/s, p99 < 1 ms) is reported, not a failure.
 */

#define RPC_NS            "bench-rpc"
#define RPC_BLOCK_SIZE    64
#define RPC_PAGE          4096       /* what a block takes of the node's arena */
#define RPC_BLOCKS_MAX    (1u << 22) /* chains * chain length */
#define RPC_QUERIES       256        /* per thread, cycled */
#define RPC_THREADS_MAX   64
#define RPC_CHAINS_MAX    4096
#define RPC_INDEX_WAIT_NS (30ull * 1000000000ull)
#define RPC_TARGET_PER_S  50000.0
#define RPC_TARGET_P99_US 1000.0

typedef struct rpc_bench rpc_bench_t;

typedef struct {
    rpc_bench_t *b;
    pthread_t    tid;
    kvp_client_h client;         /* shared, or this thread's own */
    kvp_key_t   *queries;        /* RPC_QUERIES chains of len keys */
    size_t       want[RPC_QUERIES];
    uint64_t    *lat;            /* ns per call */
    size_t       calls, cap;
    size_t       mismatches;
    uint64_t     matched;        /* sum of the answers */
    kvp_status_t error;          /* the first failed call's */
    uint64_t     end_ns;
} rpc_worker_t;

struct rpc_bench {
    size_t            chains, len, threads;
    double            seconds;
    int               own_handles;
    int               full_hit;  /* every query a whole stored chain */
    kvp_key_t        *keys;      /* chains * len: chain c at c * len */
    uint64_t          rng;
    pthread_barrier_t start;
    atomic_int        stop;
};

typedef struct {
    double   per_s, p50_us, p99_us, p999_us, max_us, matched_avg, seconds;
    size_t   calls, mismatches, errors, unique_blocks;
    uint64_t coord_matches;
} rpc_figures_t;

/* The chains: three in four share a prefix of an earlier one. */
static size_t rpc_chains_grow(rpc_bench_t *b)
{
    size_t unique = 0;

    for (size_t c = 0; c < b->chains; c++) {
        kvp_key_t *chain = &b->keys[c * b->len];
        size_t     from  = 0;

        if (c > 0 && b->len > 1 && rng_below(&b->rng, 4) != 0) {
            const kvp_key_t *base = &b->keys[rng_below(&b->rng, c) * b->len];

            from = 1 + rng_below(&b->rng, b->len - 1);
            memcpy(chain, base, from * sizeof(*chain));
        }
        for (size_t i = from; i < b->len; i++) {
            chain[i] = random_key(&b->rng);
        }
        unique += b->len - from;
    }
    return unique;
}

/* Wait until the coordinator lists a node (a node joins as it starts). */
static kvp_status_t rpc_wait_node(kvp_client_h client)
{
    kvp_index_stats_t st = {0};
    kvp_status_t      status;

    for (uint64_t deadline = kv_time_ns() + 10000000000ull;;) {
        status = kvp_index_stats(client, &st);
        if (status != KVP_OK || st.nodes > 0) {
            return status;
        }
        if (kv_time_ns() > deadline) {
            fprintf(stderr, "kvpool bench-index: no node joined the coordinator\n");
            return KVP_ERR_TIMED_OUT;
        }
        usleep(20000);
    }
}

/* Save every chain, then wait until the index matches each whole. */
static int rpc_populate(rpc_bench_t *b, kvp_client_h client)
{
    static const uint8_t block[RPC_BLOCK_SIZE] = {0};
    const void          **datas    = kv_malloc(b->len * sizeof(*datas), "datas");
    uint64_t             *sizes    = kv_malloc(b->len * sizeof(*sizes), "sizes");
    kvp_status_t         *statuses = kv_malloc(b->len * sizeof(*statuses), "statuses");
    uint64_t              deadline;
    kvp_status_t          status   = KVP_OK;
    size_t                got      = 0;
    int                   rc       = 1;

    for (size_t i = 0; i < b->len; i++) {
        datas[i] = block;
        sizes[i] = sizeof(block);
    }
    for (size_t c = 0; c < b->chains && status == KVP_OK; c++) {
        status = kvp_put_chain(client, RPC_NS, &b->keys[c * b->len], datas, sizes,
                               b->len, statuses);
        for (size_t i = 0; i < b->len && status == KVP_OK; i++) {
            status = statuses[i];
        }
    }
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool bench-index: kvp_put_chain: %s\n",
                kvp_status_string(status));
        goto out;
    }
    deadline = kv_time_ns() + RPC_INDEX_WAIT_NS;
    for (size_t c = 0; c < b->chains;) {
        status = kvp_match(client, RPC_NS, &b->keys[c * b->len], b->len, &got);
        if (status != KVP_OK) {
            fprintf(stderr, "kvpool bench-index: kvp_match: %s\n",
                    kvp_status_string(status));
            goto out;
        }
        if (got == b->len) {
            c++;
            continue;
        }
        if (kv_time_ns() > deadline) {
            fprintf(stderr, "kvpool bench-index: after %llu s the coordinator matches "
                    "%zu of the %zu blocks of chain %zu\n",
                    RPC_INDEX_WAIT_NS / 1000000000ull, got, b->len, c);
            goto out;
        }
        usleep(10000);
    }
    rc = 0;
out:
    kv_free(datas);
    kv_free(sizes);
    kv_free(statuses);
    return rc;
}

/* A worker's queries: k leading keys of a stored chain, then new keys. */
static void rpc_queries_make(rpc_bench_t *b, rpc_worker_t *w)
{
    w->queries = kv_malloc(RPC_QUERIES * b->len * sizeof(kvp_key_t), "queries");
    for (size_t q = 0; q < RPC_QUERIES; q++) {
        const kvp_key_t *chain = &b->keys[rng_below(&b->rng, b->chains) * b->len];
        kvp_key_t       *out   = &w->queries[q * b->len];
        size_t           keep  = b->full_hit ? b->len : 1 + rng_below(&b->rng, b->len);

        memcpy(out, chain, keep * sizeof(*out));
        for (size_t i = keep; i < b->len; i++) {
            out[i] = random_key(&b->rng);
        }
        w->want[q] = keep;
    }
}

static void *rpc_worker_main(void *arg)
{
    rpc_worker_t *w = arg;
    rpc_bench_t  *b = w->b;
    size_t        got;
    uint64_t      t0, t1;
    kvp_status_t  status;

    pthread_barrier_wait(&b->start);
    for (size_t q = 0; !atomic_load_explicit(&b->stop, memory_order_relaxed);
         q = (q + 1) % RPC_QUERIES) {
        got    = 0;
        t0     = kv_time_ns();
        status = kvp_match(w->client, RPC_NS, &w->queries[q * b->len], b->len, &got);
        t1     = kv_time_ns();
        if (status != KVP_OK) {
            w->error = status;
            break;
        }
        if (w->calls == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 65536;
            w->lat = kv_realloc(w->lat, w->cap * sizeof(*w->lat), "latencies");
        }
        w->lat[w->calls++] = t1 - t0;
        w->matched += got;
        w->mismatches += got != w->want[q];
    }
    w->end_ns = kv_time_ns();
    return NULL;
}

/* Run the workers for b->seconds; fills @p f from their records. */
static int rpc_measure(rpc_bench_t *b, rpc_worker_t *w, rpc_figures_t *f)
{
    uint64_t *all, t0, end = 0;
    size_t    n = 0, started = 0;
    int       rc = 0;

    pthread_barrier_init(&b->start, NULL, (unsigned)b->threads + 1);
    atomic_store(&b->stop, 0);
    for (; started < b->threads; started++) {
        if (pthread_create(&w[started].tid, NULL, rpc_worker_main, &w[started]) != 0) {
            fprintf(stderr, "kvpool bench-index: cannot start thread %zu\n", started);
            abort(); /* the barrier would wait forever */
        }
    }
    pthread_barrier_wait(&b->start);
    t0 = kv_time_ns();
    while (kv_time_ns() - t0 < (uint64_t)(b->seconds * 1e9)) {
        usleep(10000);
    }
    atomic_store(&b->stop, 1);
    for (size_t i = 0; i < b->threads; i++) {
        pthread_join(w[i].tid, NULL);
        end = KV_MAX(end, w[i].end_ns);
        n += w[i].calls;
        f->mismatches += w[i].mismatches;
        f->matched_avg += (double)w[i].matched;
        if (w[i].error != KVP_OK) {
            fprintf(stderr, "kvpool bench-index: thread %zu: kvp_match: %s\n", i,
                    kvp_status_string(w[i].error));
            f->errors++;
            rc = 1;
        }
    }
    pthread_barrier_destroy(&b->start);
    f->calls       = n;
    f->seconds     = (double)(end - t0) / 1e9;
    f->per_s       = (double)n / f->seconds;
    f->matched_avg = n ? f->matched_avg / (double)n : 0.0;
    if (n == 0) {
        fprintf(stderr, "kvpool bench-index: no Match call completed\n");
        return 1;
    }
    all = kv_malloc(n * sizeof(*all), "latencies");
    n   = 0;
    for (size_t i = 0; i < b->threads; i++) {
        memcpy(all + n, w[i].lat, w[i].calls * sizeof(*all));
        n += w[i].calls;
    }
    qsort(all, n, sizeof(*all), cmp_u64);
    f->p50_us  = (double)all[n / 2] / 1e3;
    f->p99_us  = (double)all[n * 99 / 100] / 1e3;
    f->p999_us = (double)all[n * 999 / 1000] / 1e3;
    f->max_us  = (double)all[n - 1] / 1e3;
    kv_free(all);
    return rc;
}

static void rpc_report(const rpc_bench_t *b, const rpc_figures_t *f, const char *coord,
                       int started, int json)
{
    int met = f->per_s >= RPC_TARGET_PER_S && f->p99_us < RPC_TARGET_P99_US;

    printf("coord    %s (%s), namespace \"%s\"\n", coord,
           started ? "kvpool-coord and one kvpool-node started for the run"
                   : "given with --coord", RPC_NS);
    printf("index    %zu chains of %zu blocks sharing prefixes (%zu blocks of %d "
           "bytes), saved with kvp_put_chain\n", b->chains, b->len, f->unique_blocks,
           RPC_BLOCK_SIZE);
    printf("match    %zu threads, %s, %zu-key chains with %s cached prefix "
           "(%.1f blocks on average), %.2f s\n", b->threads,
           b->own_handles ? "one client handle each" : "one shared client handle",
           b->len, b->full_hit ? "a whole" : "a random", f->matched_avg, f->seconds);
    printf("rpc      %.0f calls/s (%zu calls; the coordinator counted %llu)\n",
           f->per_s, f->calls, (unsigned long long)f->coord_matches);
    printf("latency  p50 %.1f us, p99 %.1f us, p999 %.1f us, max %.1f us\n", f->p50_us,
           f->p99_us, f->p999_us, f->max_us);
    printf("target   >= %.0f calls/s with p99 < %.0f us: %s\n", RPC_TARGET_PER_S,
           RPC_TARGET_P99_US, met ? "met" : "missed");
    if (f->mismatches > 0) {
        printf("WRONG    %zu match answers\n", f->mismatches);
    }
    if (json) {
        printf("{\"mode\":\"rpc\",\"threads\":%zu,\"handles\":\"%s\",\"full_hit\":%s,"
               "\"chain_len\":%zu,"
               "\"chains\":%zu,\"blocks\":%zu,\"seconds\":%.3f,\"calls\":%zu,"
               "\"calls_per_s\":%.0f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
               "\"p999_us\":%.2f,\"max_us\":%.2f,\"matched_avg\":%.2f,"
               "\"coord_matches\":%llu,\"mismatches\":%zu,\"errors\":%zu,"
               "\"target_met\":%s}\n",
               b->threads, b->own_handles ? "thread" : "shared",
               b->full_hit ? "true" : "false", b->len, b->chains,
               f->unique_blocks, f->seconds, f->calls, f->per_s, f->p50_us, f->p99_us,
               f->p999_us, f->max_us, f->matched_avg,
               (unsigned long long)f->coord_matches, f->mismatches, f->errors,
               met ? "true" : "false");
    }
}

/* kvpool bench-index --rpc: @p coord NULL starts a coordinator and a node. */
static int bench_rpc(rpc_bench_t *b, const char *coord, int json)
{
    kv_cli_conn_t     conn = {coord, RPC_NS, getenv("KVPOOL_TOKEN")};
    rpc_figures_t     f    = {0};
    rpc_worker_t     *w    = kv_calloc(b->threads, sizeof(*w), "workers");
    kvp_client_h      client = NULL;
    kvp_index_stats_t st0 = {0}, st1 = {0};
    pid_t             coord_pid = -1, node_pid = -1;
    char              coord_addr[256], node_addr[256], memory[32];
    int               rc = 1;

    b->keys         = kv_malloc(b->chains * b->len * sizeof(*b->keys), "chains");
    f.unique_blocks = rpc_chains_grow(b);
    if (coord == NULL) {
        /* room for every block, a quarter more, and some slack */
        snprintf(memory, sizeof(memory), "%lluMiB",
                 (unsigned long long)((f.unique_blocks * RPC_PAGE / 4 * 5 >> 20) + 32));
        coord_pid = kv_cli_coord_start(coord_addr, sizeof(coord_addr), NULL, 0);
        if (coord_pid < 0) {
            goto out;
        }
        node_pid = kv_cli_node_start(memory, coord_addr, node_addr, sizeof(node_addr));
        if (node_pid < 0) {
            goto out;
        }
        conn.node = coord_addr;
    }
    if (kv_cli_connect(&conn, &client) != KVP_OK) {
        goto out;
    }
    if (kvp_index_stats(client, &st0) != KVP_OK) {
        fprintf(stderr, "kvpool bench-index: %s is not a coordinator\n", conn.node);
        goto out;
    }
    if (rpc_wait_node(client) != KVP_OK) {
        goto out;
    }
    if (rpc_populate(b, client) != 0) {
        goto out;
    }
    for (size_t i = 0; i < b->threads; i++) {
        w[i].b      = b;
        w[i].client = client;
        rpc_queries_make(b, &w[i]);
        if (b->own_handles && kv_cli_connect(&conn, &w[i].client) != KVP_OK) {
            w[i].client = NULL;
            goto out;
        }
    }
    if (kvp_index_stats(client, &st0) != KVP_OK) {
        goto out;
    }
    rc = rpc_measure(b, w, &f);
    if (kvp_index_stats(client, &st1) == KVP_OK) {
        f.coord_matches = st1.matches - st0.matches;
    }
    rpc_report(b, &f, conn.node, coord_pid > 0, json);
    if (f.mismatches > 0) {
        rc = 1;
    }
out:
    for (size_t i = 0; i < b->threads; i++) {
        if (w[i].client != client) {
            kvp_client_disconnect(w[i].client);
        }
        kv_free(w[i].queries);
        kv_free(w[i].lat);
    }
    kv_free(w);
    kvp_client_disconnect(client);
    kv_free(b->keys);
    kv_cli_daemon_stop(node_pid);
    kv_cli_daemon_stop(coord_pid);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Options                                                                 */
/* ---------------------------------------------------------------------- */

/* An integer option in [min, max]; prints why not and returns 0. */
static int parse_count(const char *name, const char *text, unsigned long long min,
                       unsigned long long max, size_t *out_p)
{
    char              *end;
    unsigned long long n;

    errno = 0;
    n     = strtoull(text, &end, 10);
    if ((errno != 0) || (end == text) || (*end != '\0') || (text[0] == '-') ||
        (n < min) || (n > max)) {
        fprintf(stderr, "kvpool bench-index: --%s takes %llu..%llu, not '%s'\n", name,
                min, max, text);
        return 0;
    }
    *out_p = (size_t)n;
    return 1;
}

static int parse_seconds(const char *text, double *out_p)
{
    char  *end;
    double s;

    errno = 0;
    s     = strtod(text, &end);
    if ((errno != 0) || (end == text) || (*end != '\0') || !(s >= 0.1 && s <= 3600)) {
        fprintf(stderr, "kvpool bench-index: --seconds takes 0.1..3600, not '%s'\n",
                text);
        return 0;
    }
    *out_p = s;
    return 1;
}

/* The in-process part: an index of @p blocks blocks. */
static int bench_in_process(size_t blocks, int json)
{
    tree_t             t     = {0};
    figures_t          f     = {0};
    kv_prefix_index_t *index = NULL;
    kv_index_stats_t   st;
    uint32_t           ns;
    size_t             bad;
    int                rc = 1;
    char               mem[32];
    uint64_t           t0;
    kvp_status_t       status;

    t.blocks = blocks;
    t.rng    = 42;
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

int kv_cli_bench_index(int argc, char **argv)
{
    static const struct option options[] = {
        {"blocks", required_argument, NULL, 'N'},
        {"json", no_argument, NULL, 'j'},
        {"rpc", no_argument, NULL, 'r'},
        {"coord", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 'w'},
        {"seconds", required_argument, NULL, 's'},
        {"chain-len", required_argument, NULL, 'L'},
        {"chains", required_argument, NULL, 'C'},
        {"handles", required_argument, NULL, 'H'},
        {"full-hit", no_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    rpc_bench_t b      = {0};
    size_t      blocks = 1000000;
    const char *coord  = NULL;
    int         opt, json = 0, rpc = 0, rpc_only = 0, blocks_set = 0;

    b.threads     = 8;
    b.own_handles = 1;
    b.seconds = 3.0;
    b.len     = 256;
    b.chains  = 192;
    b.rng     = 7;
    optind    = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'N':
            if (!parse_count("blocks", optarg, 1, BLOCKS_MAX, &blocks)) {
                return 2;
            }
            blocks_set = 1;
            break;
        case 'j': json = 1; break;
        case 'r': rpc = 1; break;
        case 'c':
            coord    = optarg;
            rpc_only = 1;
            break;
        case 'w':
            if (!parse_count("threads", optarg, 1, RPC_THREADS_MAX, &b.threads)) {
                return 2;
            }
            rpc_only = 1;
            break;
        case 's':
            if (!parse_seconds(optarg, &b.seconds)) {
                return 2;
            }
            rpc_only = 1;
            break;
        case 'L':
            if (!parse_count("chain-len", optarg, 1, KVP_BATCH_MAX, &b.len)) {
                return 2;
            }
            rpc_only = 1;
            break;
        case 'C':
            if (!parse_count("chains", optarg, 1, RPC_CHAINS_MAX, &b.chains)) {
                return 2;
            }
            rpc_only = 1;
            break;
        case 'H':
            if (strcmp(optarg, "shared") != 0 && strcmp(optarg, "thread") != 0) {
                fprintf(stderr, "kvpool bench-index: --handles is shared or thread, "
                        "not '%s'\n", optarg);
                return 2;
            }
            b.own_handles = strcmp(optarg, "thread") == 0;
            rpc_only      = 1;
            break;
        case 'F':
            b.full_hit = 1;
            rpc_only   = 1;
            break;
        default: return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kvpool bench-index: unexpected '%s'\n", argv[optind]);
        return 2;
    }
    if (b.chains * b.len > RPC_BLOCKS_MAX) {
        fprintf(stderr, "kvpool bench-index: --chains times --chain-len is at most %u\n",
                RPC_BLOCKS_MAX);
        return 2;
    }
    if (rpc ? blocks_set : rpc_only) {
        fprintf(stderr, "kvpool bench-index: --blocks is for the in-process index; "
                "--coord, --threads, --seconds, --chain-len, --chains, --handles and "
                "--full-hit for --rpc\n");
        return 2;
    }
    return rpc ? bench_rpc(&b, coord, json) : bench_in_process(blocks, json);
}
