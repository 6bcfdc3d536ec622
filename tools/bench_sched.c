/*
 * kvpool bench-sched: the prefill/decode scheduler (kvcoord/sched.h) in this
 * process, over a large prefix index.
 *
 *   kvpool bench-sched [--blocks N] [--instances N] [--seconds S]
 *                      [--policy NAME] [--rpc [--threads N]] [--json]
 *
 * It builds an index of N blocks (default 1,000,000) shaped like a
 * conversation trace: 16 shared system prompts of 4 blocks, then
 * conversations of 5 to 60 blocks under one of them, each stored on one of
 * 8 pool nodes and one in five also on the next node.  It registers
 * --instances instances (default 16): half prefill, each beside one of the
 * nodes, half decode.  Then for --seconds (default 3) it schedules
 * requests: a random conversation's chain, cut at a random depth, plus 1
 * to 8 blocks no one holds (a new turn), with a load report from every
 * instance every 64 decisions, as engines would send.  Each call is timed
 * alone with the monotonic clock.
 *
 * With --rpc it times the Schedule RPC instead (bench_rpc() below).
 *
 * Every plan is checked: cached equals kv_index_match() of the chain, the
 * runs cover [0, load) in order and each run's node holds its blocks; a
 * wrong one fails the run (exit 1).  With --json the last line is one
 * JSON object of the figures.
 */
#include "cli.h"

#include <kv/alloc.h>
#include <kv/util.h>
#include <kvcoord/prefix_index.h>
#include <kvcoord/sched.h>

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NODES 8
#define ROOTS 16
#define ROOT_BLOCKS 4
#define CONV_MIN 5
#define CONV_MAX 60
#define TAIL_MAX 8
#define REPORT_EVERY 64
#define QUERY_MAX (ROOT_BLOCKS + CONV_MAX + TAIL_MAX)

typedef struct bench {
    kv_prefix_index_t *index;
    uint32_t           ns;
    kvp_key_t         *keys; /* conversation c: keys[c * (ROOT_BLOCKS + CONV_MAX)...] */
    uint32_t          *len;  /* blocks of conversation c, root included */
    size_t             n_convs;
    uint64_t           rng;
    uint64_t           fresh; /* counter of keys no one holds */
} bench_t;

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static kvp_key_t key_of(uint64_t a, uint64_t b)
{
    kvp_key_t k;

    memcpy(k.bytes, &a, 8);
    memcpy(k.bytes + 8, &b, 8);
    return k;
}

static kvp_key_t *conv_keys(const bench_t *b, size_t c)
{
    return b->keys + c * (ROOT_BLOCKS + CONV_MAX);
}

/* Store the roots, then conversations until @p blocks blocks are indexed. */
static void build(bench_t *b, uint64_t blocks)
{
    kvp_key_t roots[ROOTS][ROOT_BLOCKS];
    uint64_t  stored = 0;

    for (int r = 0; r < ROOTS; r++) {
        for (int i = 0; i < ROOT_BLOCKS; i++) {
            roots[r][i] = key_of(0xa000 + (uint64_t)r, (uint64_t)i);
            for (uint32_t n = 1; n <= NODES; n++) {
                kv_index_store(b->index, b->ns, &roots[r][i], i ? &roots[r][i - 1] : NULL,
                               KV_LOC(n, 0));
            }
            stored++;
        }
    }
    b->n_convs = blocks / ((CONV_MIN + CONV_MAX) / 2) + 1;
    b->keys =
        kv_malloc(b->n_convs * (ROOT_BLOCKS + CONV_MAX) * sizeof(*b->keys), "bench keys");
    b->len = kv_malloc(b->n_convs * sizeof(*b->len), "bench lengths");
    for (size_t c = 0; c < b->n_convs; c++) {
        kvp_key_t *k = conv_keys(b, c);
        uint32_t   n =
            CONV_MIN + (uint32_t)(next_rand(&b->rng) % (CONV_MAX - CONV_MIN + 1));
        uint32_t node = 1 + (uint32_t)(c % NODES);
        int      twin = next_rand(&b->rng) % 5 == 0;

        memcpy(k, roots[next_rand(&b->rng) % ROOTS], sizeof(roots[0]));
        if (stored >= blocks) {
            n = 0; /* past the budget: a conversation never stored */
        }
        for (uint32_t i = 0; i < n; i++) {
            kvp_key_t *key = &k[ROOT_BLOCKS + i];

            *key = key_of(c + 1, i);
            kv_index_store(b->index, b->ns, key, key - 1, KV_LOC(node, 0));
            if (twin) {
                kv_index_store(b->index, b->ns, key, key - 1,
                               KV_LOC(node % NODES + 1, 0));
            }
        }
        stored += n;
        b->len[c] = ROOT_BLOCKS + n;
    }
}

/* A request: a conversation cut at a random depth, then new blocks. */
static size_t make_query(bench_t *b, kvp_key_t *q)
{
    size_t c    = (size_t)(next_rand(&b->rng) % b->n_convs);
    size_t keep = 1 + (size_t)(next_rand(&b->rng) % b->len[c]);
    size_t tail = 1 + (size_t)(next_rand(&b->rng) % TAIL_MAX);

    memcpy(q, conv_keys(b, c), keep * sizeof(*q));
    for (size_t i = 0; i < tail; i++) {
        q[keep + i] = key_of(UINT64_MAX - b->fresh++, i);
    }
    return keep + tail;
}

/* The plan's claims against the index; 0 with a message if one is wrong. */
static int plan_ok(const bench_t *b, const kvp_key_t *q, size_t n,
                   const kv_sched_plan_t *p)
{
    uint32_t next = 0;

    if (p->cached != kv_index_match(b->index, b->ns, q, n) || p->load > p->cached ||
        p->local > p->load) {
        fprintf(stderr,
                "kvpool bench-sched: plan of %u/%u/%u blocks, index matches %zu\n",
                p->local, p->load, p->cached, kv_index_match(b->index, b->ns, q, n));
        return 0;
    }
    for (uint32_t r = 0; r < p->n_runs; r++) {
        const kv_sched_run_t *run = &p->runs[r];

        if (run->first != next || run->count == 0) {
            fprintf(stderr, "kvpool bench-sched: plan run %u does not follow\n", r);
            return 0;
        }
        for (uint32_t i = run->first; i < run->first + run->count; i++) {
            uint32_t locs[16];
            size_t   m = kv_index_locations(b->index, b->ns, &q[i], locs, 16), j = 0;

            while (j < KV_MIN(m, (size_t)16) && KV_LOC_NODE(locs[j]) != run->node) {
                j++;
            }
            if (j == KV_MIN(m, (size_t)16)) {
                fprintf(stderr,
                        "kvpool bench-sched: run %u names node %u, which does "
                        "not hold block %u\n",
                        r, run->node, i);
                return 0;
            }
        }
        next += run->count;
    }
    if (next != p->load) {
        fprintf(stderr, "kvpool bench-sched: runs cover %u of %u blocks\n", next,
                p->load);
        return 0;
    }
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* One --rpc thread: Schedule calls until the end, each timed. */
typedef struct rpc_worker {
    kvp_client_h client;
    uint64_t     end_ns;
    uint64_t     seed;
    uint64_t    *lat;
    uint64_t     n, cap;
    kvp_status_t status;
} rpc_worker_t;

static void *rpc_worker_main(void *arg)
{
    rpc_worker_t *w = arg;
    kvp_key_t     q[64];

    for (uint64_t now = kv_time_ns(); now < w->end_ns; w->n++) {
        size_t     count = 1 + (size_t)(next_rand(&w->seed) % 64);
        kvp_plan_t plan;
        uint64_t   t0;

        for (size_t i = 0; i < count; i++) {
            q[i] = key_of(w->seed, i);
        }
        t0        = kv_time_ns();
        w->status = kvp_schedule(w->client, "bench", q, count, count * 512, 200, &plan);
        now       = kv_time_ns();
        if (w->status != KVP_OK) {
            break;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 1 << 16;
            w->lat = kv_realloc(w->lat, w->cap * sizeof(*w->lat), "latencies");
        }
        w->lat[w->n] = now - t0;
    }
    return NULL;
}

/*
 * --rpc: the Schedule RPC of a coordinator started for the run, from
 * @p threads threads of this process sharing one client, with @p instances
 * instances registered through libkvpool (reporting every 100 ms) and no
 * node: every request is a miss, the decision itself being the in-process
 * part above.
 */
static int bench_rpc(uint64_t instances, uint64_t seconds, uint64_t threads, int json)
{
    kv_cli_conn_t  conn            = {NULL, "bench", NULL};
    kvp_client_h   client          = NULL;
    kvp_instance_h inst[2 * NODES] = {0};
    kv_cli_pool_t  pool            = {0};
    rpc_worker_t   w[64]           = {0};
    pthread_t      tids[64];
    uint64_t       n  = 0, *all, end;
    int            rc = 1;

    if (kv_cli_pool_start(&pool, 0, NULL) != 0) {
        return 1;
    }
    conn.node = pool.address;
    if (kv_cli_connect(&conn, &client) != KVP_OK) {
        goto out;
    }
    for (uint64_t i = 0; i < instances; i++) {
        char                  name[32];
        kvp_instance_params_t p = {
            name, i < instances / 2 ? KVP_ROLE_PREFILL : KVP_ROLE_DECODE, 2900, NULL};

        snprintf(name, sizeof(name), "bench-%llu", (unsigned long long)i);
        if (kvp_instance_join(client, &p, &inst[i]) != KVP_OK) {
            fprintf(stderr, "kvpool bench-sched: cannot register an instance\n");
            goto out;
        }
    }
    end = kv_time_ns() + seconds * 1000000000ull;
    for (uint64_t t = 0; t < threads; t++) {
        w[t] = (rpc_worker_t){.client = client, .end_ns = end, .seed = t + 1};
        pthread_create(&tids[t], NULL, rpc_worker_main, &w[t]);
    }
    while (kv_time_ns() < end) { /* the engines' reports */
        for (uint64_t i = 0; i < instances; i++) {
            kvp_instance_load_t load = {0, 0, 2900};
            kvp_instance_report(inst[i], &load);
        }
        usleep(100000);
    }
    for (uint64_t t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        n += w[t].n;
        if (w[t].status != KVP_OK) {
            fprintf(stderr, "kvpool bench-sched: Schedule: %s\n",
                    kvp_status_string(w[t].status));
            goto out;
        }
    }
    all = kv_malloc((n + 1) * sizeof(*all), "latencies");
    for (uint64_t t = 0, k = 0; t < threads; t++) {
        memcpy(all + k, w[t].lat, w[t].n * sizeof(*all));
        k += w[t].n;
    }
    qsort(all, n, sizeof(*all), cmp_u64);
    printf("Schedule RPC %llu calls in %llu s from %llu threads: %.0f/s, p50 %.1f us, "
           "p99 %.1f us\n",
           (unsigned long long)n, (unsigned long long)seconds,
           (unsigned long long)threads, (double)n / (double)seconds,
           (double)all[n / 2] / 1e3, (double)all[(size_t)((double)(n - 1) * 0.99)] / 1e3);
    if (json) {
        printf("{\"mode\":\"rpc\",\"instances\":%llu,\"threads\":%llu,\"calls\":%llu,"
               "\"calls_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
               (unsigned long long)instances, (unsigned long long)threads,
               (unsigned long long)n, (double)n / (double)seconds,
               (double)all[n / 2] / 1e3,
               (double)all[(size_t)((double)(n - 1) * 0.99)] / 1e3);
    }
    kv_free(all);
    rc = 0;
out:
    for (uint64_t i = 0; i < instances; i++) {
        kvp_instance_leave(inst[i]);
    }
    for (uint64_t t = 0; t < threads; t++) {
        kv_free(w[t].lat);
    }
    kvp_client_disconnect(client);
    kv_cli_pool_stop(&pool);
    return rc;
}

int kv_cli_bench_sched(int argc, char **argv)
{
    static const struct option options[] = {
        {"blocks", required_argument, NULL, 'b'},
        {"instances", required_argument, NULL, 'i'},
        {"seconds", required_argument, NULL, 's'},
        {"policy", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"rpc", no_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    kv_sched_policy_t policy = KV_SCHED_DEFAULT_POLICY;
    kv_sched_cost_t   cost;
    kv_sched_t       *sched = NULL;
    kv_index_stats_t  st;
    bench_t           b      = {0};
    uint64_t          blocks = 1000000, instances = 16, seconds = 3, *lat = NULL;
    uint64_t          threads = 4;
    uint64_t          start, end, n = 0, cap = 0, hits = 0, asked = 0;
    kvp_key_t         q[QUERY_MAX];
    int               opt, json = 0, rpc = 0, rc = 1;

    b.rng  = 42;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (!kv_cli_parse_u64("bench-sched", "--blocks", optarg, 1000, 100000000,
                                  &blocks)) {
                return 2;
            }
            break;
        case 'i':
            if (!kv_cli_parse_u64("bench-sched", "--instances", optarg, 2, 2 * NODES,
                                  &instances)) {
                return 2;
            }
            break;
        case 's':
            if (!kv_cli_parse_u64("bench-sched", "--seconds", optarg, 1, 3600,
                                  &seconds)) {
                return 2;
            }
            break;
        case 'p':
            if (kv_sched_policy_parse(optarg, &policy) != KVP_OK) {
                fprintf(stderr, "kvpool bench-sched: unknown policy '%s'\n", optarg);
                return 2;
            }
            break;
        case 'r':
            rpc = 1;
            break;
        case 't':
            if (!kv_cli_parse_u64("bench-sched", "--threads", optarg, 1, 64, &threads)) {
                return 2;
            }
            break;
        case 'j':
            json = 1;
            break;
        default:
            fprintf(stderr,
                    "usage: kvpool bench-sched [--blocks N] [--instances N] "
                    "[--seconds S] [--policy NAME] [--rpc [--threads N]] [--json]\n");
            return 2;
        }
    }
    if (rpc) {
        return bench_rpc(instances, seconds, threads, json);
    }
    kv_sched_cost_defaults(&cost);
    if (kv_index_create(blocks, &b.index) != KVP_OK ||
        kv_index_ns_id(b.index, "bench", 5, 1, &b.ns) != KVP_OK ||
        kv_sched_create(policy, &cost, 1, &sched) != KVP_OK) {
        fprintf(stderr, "kvpool bench-sched: cannot set up\n");
        goto out;
    }
    build(&b, blocks);
    for (uint32_t i = 0; i < instances; i++) {
        int                 prefill = i < instances / 2;
        kv_sched_instance_t in = {i + 1, prefill ? KV_SCHED_PREFILL : KV_SCHED_DECODE,
                                  prefill ? i % NODES + 1 : 0, 2900};
        kv_sched_add(sched, &in);
    }
    start = kv_time_ns();
    end   = start + seconds * 1000000000ull;
    for (uint64_t now = start; now < end; n++) {
        kv_sched_request_t req = {b.ns, q, 0, 0, 200};
        kv_sched_plan_t    plan;
        uint64_t           t0;

        req.count         = make_query(&b, q);
        req.prompt_tokens = req.count * cost.block_tokens - 100;
        if (n % REPORT_EVERY == 0) {
            for (uint32_t i = 0; i < instances; i++) {
                kv_sched_load_t load = {next_rand(&b.rng) % 20000, (uint32_t)(i % 7),
                                        2000};
                kv_sched_report(sched, i + 1, &load);
            }
        }
        t0 = kv_time_ns();
        if (kv_sched_schedule(sched, b.index, &req, &plan) != KVP_OK) {
            fprintf(stderr, "kvpool bench-sched: a decision failed\n");
            goto out;
        }
        now = kv_time_ns();
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            lat = kv_realloc(lat, cap * sizeof(*lat), "latencies");
        }
        lat[n] = now - t0;
        hits += plan.cached;
        asked += req.count;
        if (!plan_ok(&b, q, req.count, &plan)) {
            goto out;
        }
    }
    qsort(lat, n, sizeof(*lat), cmp_u64);
    kv_index_stats(b.index, &st);
    {
        double total_s = 0;
        for (uint64_t i = 0; i < n; i++) {
            total_s += (double)lat[i] / 1e9;
        }
        printf("index        %llu blocks, %llu bytes (%.1f per block)\n",
               (unsigned long long)st.cached, (unsigned long long)st.bytes,
               (double)st.bytes / (double)st.cached);
        printf(
            "instances    %llu (%llu prefill beside %d nodes, %llu decode), policy %s\n",
            (unsigned long long)instances, (unsigned long long)instances / 2, NODES,
            (unsigned long long)(instances - instances / 2),
            kv_sched_policy_name(policy));
        printf("decisions    %llu: %.0f/s (time in kv_sched_schedule only)\n",
               (unsigned long long)n, (double)n / total_s);
        printf("latency      p50 %.2f us, p99 %.2f us\n", (double)lat[n / 2] / 1e3,
               (double)lat[(size_t)((double)(n - 1) * 0.99)] / 1e3);
        printf("cached       %.4f of the requested blocks\n",
               (double)hits / (double)asked);
        if (json) {
            printf("{\"blocks\":%llu,\"index_bytes\":%llu,\"bytes_per_block\":%.1f,"
                   "\"instances\":%llu,"
                   "\"policy\":\"%s\",\"decisions\":%llu,\"decisions_per_s\":%.0f,"
                   "\"p50_us\":%.3f,\"p99_us\":%.3f,\"cached_ratio\":%.4f}\n",
                   (unsigned long long)st.cached, (unsigned long long)st.bytes,
                   (double)st.bytes / (double)st.cached, (unsigned long long)instances,
                   kv_sched_policy_name(policy), (unsigned long long)n,
                   (double)n / total_s, (double)lat[n / 2] / 1e3,
                   (double)lat[(size_t)((double)(n - 1) * 0.99)] / 1e3,
                   (double)hits / (double)asked);
        }
    }
    rc = 0;
out:
    kv_free(lat);
    kv_free(b.keys);
    kv_free(b.len);
    kv_sched_destroy(sched);
    kv_index_destroy(b.index);
    return rc;
}
