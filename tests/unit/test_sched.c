/*
 * Unit tests of the scheduler (kvcoord/sched.h) on hand-built indexes,
 * where the right decision is known: the cache against the queue, both
 * sides of the transfer-versus-recompute rule, each policy's choice, the
 * decode choice and pending load, the load runs, and bad input.  A
 * property test re-derives the cost estimate from the header's formula.
 */
#include <kv/util.h>
#include <kvcoord/sched.h>
#include <test.h>
#include <test_util.h>

#include <math.h>

#define BT 512 /* block tokens (the default) */

typedef struct fixture {
    kv_prefix_index_t *index;
    uint32_t           ns;
    kv_sched_t        *sched;
    kv_sched_cost_t    cost;
    kvp_key_t          keys[64];
} fixture_t;

static void fixture_up(fixture_t *f, kv_sched_policy_t policy,
                       const kv_sched_cost_t *cost)
{
    memset(f, 0, sizeof(*f));
    ASSERT_OK(kv_index_create(0, &f->index));
    ASSERT_OK(kv_index_ns_id(f->index, "t", 1, 1, &f->ns));
    if (cost != NULL) {
        f->cost = *cost;
    } else {
        kv_sched_cost_defaults(&f->cost);
    }
    ASSERT_OK(kv_sched_create(policy, &f->cost, 7, &f->sched));
    for (int i = 0; i < 64; i++) {
        f->keys[i] = key_of("block %d", i);
    }
}

static void fixture_down(fixture_t *f)
{
    kv_sched_destroy(f->sched);
    kv_index_destroy(f->index);
}

/* Blocks [from, to) of the chain on pool node @p node. */
static void store(fixture_t *f, int from, int to, uint32_t node)
{
    for (int i = from; i < to; i++) {
        ASSERT_OK(kv_index_store(f->index, f->ns, &f->keys[i], i ? &f->keys[i - 1] : NULL,
                                 KV_LOC(node, 0)));
    }
}

/* Blocks [from, to) of the chain on pool node @p node's SSD tier. */
static void store_ssd(fixture_t *f, int from, int to, uint32_t node)
{
    for (int i = from; i < to; i++) {
        ASSERT_OK(kv_index_store(f->index, f->ns, &f->keys[i], i ? &f->keys[i - 1] : NULL,
                                 KV_LOC(node, KVP_TIER_SSD)));
    }
}

static void add(fixture_t *f, uint32_t id, uint32_t roles, uint32_t node)
{
    kv_sched_instance_t in = {id, roles, node, 100};

    ASSERT_OK(kv_sched_add(f->sched, &in));
}

static void queue(fixture_t *f, uint32_t id, uint64_t tokens)
{
    kv_sched_load_t load = {tokens, 0, 100};

    ASSERT_OK(kv_sched_report(f->sched, id, &load));
}

static kv_sched_plan_t decide(fixture_t *f, size_t blocks, uint64_t prompt)
{
    kv_sched_request_t req = {f->ns, f->keys, blocks, prompt, 50};
    kv_sched_plan_t    plan;

    ASSERT_OK(kv_sched_schedule(f->sched, f->index, &req, &plan));
    return plan;
}

/* The estimate of an instance holding @p local blocks that loads @p load. */
static double estimate(const kv_sched_cost_t *c, double queued_tokens, size_t local,
                       size_t load, uint64_t prompt)
{
    uint64_t cached = KV_MIN((uint64_t)load * c->block_tokens, prompt);

    return c->prefill_token_s * queued_tokens +
           kv_sched_transfer_s(c, local, c->local_bytes_s) +
           kv_sched_transfer_s(c, load - local, c->remote_bytes_s) +
           kv_sched_prefill_s(c, cached, prompt);
}

/* A long cached prefix on a busy instance against an idle one without it. */
static void test_cache_against_queue(void)
{
    fixture_t       f;
    kv_sched_plan_t p;
    uint64_t        prompt = 40 * BT;

    fixture_up(&f, KV_SCHED_LOCAL_CACHE_AWARE, NULL);
    store(&f, 0, 32, 1);
    add(&f, 1, KV_SCHED_PREFILL, 1);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);

    /* a little queued on instance 1: its 32 blocks still win */
    queue(&f, 1, 2000);
    p = decide(&f, 40, prompt);
    ASSERT_EQ(p.prefill, 1);
    ASSERT_EQ(p.local, 32);
    ASSERT_EQ(p.load, 32);
    ASSERT(fabs(p.ttft_s - estimate(&f.cost, 2000, 32, 32, prompt)) < 1e-9);

    /* much queued on instance 1: the idle one computes everything sooner */
    queue(&f, 1, 200000);
    queue(&f, 2, 0);
    p = decide(&f, 40, prompt);
    ASSERT_EQ(p.prefill, 2);
    ASSERT_EQ(p.load, 0);
    ASSERT(fabs(p.ttft_s - estimate(&f.cost, 0, 0, 0, prompt)) < 1e-9);
    fixture_down(&f);
}

/*
 * An SSD hit costs more than a host hit: the same prefix on node 1's host
 * tier and on node 2's SSD tier, equal queues: instance 1 wins, and each
 * estimate moves SSD blocks at the lower of ssd_bytes_s and local_bytes_s.
 */
static void test_ssd_hit_costs_more(void)
{
    fixture_t       f;
    kv_sched_plan_t p;
    uint64_t        prompt = 40 * BT;
    double          host, ssd;

    fixture_up(&f, KV_SCHED_LOCAL_CACHE_AWARE, NULL);
    store(&f, 0, 24, 1);
    store_ssd(&f, 0, 32, 2);
    add(&f, 1, KV_SCHED_PREFILL, 1);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);
    /* node 2 holds more (32 blocks against 24), but from SSD */
    host = estimate(&f.cost, 0, 24, 24, prompt);
    ssd  = kv_sched_transfer_s(&f.cost, 32, f.cost.ssd_bytes_s) +
          kv_sched_prefill_s(&f.cost, 32 * BT, prompt);
    p = decide(&f, 40, prompt);
    ASSERT(host < ssd); /* without the SSD cost, node 2 would win */
    ASSERT_EQ(p.prefill, 1u);
    ASSERT(fabs(p.ttft_s - KV_MIN(host, ssd)) < 1e-9);
    /* a fast SSD (as fast as the local link) makes node 2 the better one */
    f.cost.ssd_bytes_s = f.cost.local_bytes_s;
    kv_sched_destroy(f.sched);
    ASSERT_OK(kv_sched_create(KV_SCHED_LOCAL_CACHE_AWARE, &f.cost, 7, &f.sched));
    add(&f, 1, KV_SCHED_PREFILL, 1);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);
    p = decide(&f, 40, prompt);
    ASSERT_EQ(p.prefill, 2u);
    ASSERT_EQ(p.local, 32u);
    fixture_down(&f);
}

/*
 * The same with cache-aware, which may also load instance 1's blocks onto
 * instance 2 over the network: each side's estimate is the least of its
 * options, and the lower side wins.
 */
static void test_cache_aware_against_queue(void)
{
    static const uint64_t queued[] = {200, 200000};
    uint64_t              prompt   = 40 * BT;

    for (int remote_fast = 0; remote_fast < 2; remote_fast++) {
        for (size_t k = 0; k < sizeof(queued) / sizeof(queued[0]); k++) {
            kv_sched_cost_t c;
            fixture_t       f;
            kv_sched_plan_t p;
            double          busy, idle_own, idle_all;

            kv_sched_cost_defaults(&c);
            c.remote_bytes_s = remote_fast ? 25e9 : 1e8;
            fixture_up(&f, KV_SCHED_CACHE_AWARE, &c);
            store(&f, 0, 32, 1);
            add(&f, 1, KV_SCHED_PREFILL, 1);
            add(&f, 2, KV_SCHED_PREFILL, 2);
            add(&f, 3, KV_SCHED_DECODE, 0);
            queue(&f, 1, queued[k]);
            busy     = estimate(&f.cost, (double)queued[k], 32, 32, prompt);
            idle_own = estimate(&f.cost, 0, 0, 0, prompt);
            idle_all = estimate(&f.cost, 0, 0, 32, prompt);
            p        = decide(&f, 40, prompt);
            ASSERT_EQ(p.cached, 32);
            if (k == 0) { /* a little queued: the cache wins */
                ASSERT(busy < KV_MIN(idle_own, idle_all));
                ASSERT_EQ(p.prefill, 1);
                ASSERT_EQ(p.load, 32);
                ASSERT(fabs(p.ttft_s - busy) < 1e-9);
            } else if (remote_fast) { /* idle, loading node 1's blocks */
                ASSERT(idle_all < KV_MIN(busy, idle_own));
                ASSERT_EQ(p.prefill, 2);
                ASSERT_EQ(p.local, 0);
                ASSERT_EQ(p.load, 32);
                ASSERT_EQ(p.n_runs, 1);
                ASSERT(p.runs[0].node == 1 && p.runs[0].first == 0 &&
                       p.runs[0].count == 32);
                ASSERT(fabs(p.ttft_s - idle_all) < 1e-9);
            } else { /* idle, computing everything */
                ASSERT(idle_own < KV_MIN(busy, idle_all));
                ASSERT_EQ(p.prefill, 2);
                ASSERT_EQ(p.load, 0);
                ASSERT_EQ(p.n_runs, 0);
                ASSERT(fabs(p.ttft_s - idle_own) < 1e-9);
            }
            ASSERT(fabs(p.ttft_s - (p.queue_s + p.transfer_s + p.prefill_s)) < 1e-12);
            fixture_down(&f);
        }
    }
}

/* MemServe's rule: fetch a longer prefix only when that beats recomputing. */
static void test_transfer_or_recompute(void)
{
    kv_sched_cost_t slow;
    fixture_t       f;
    kv_sched_plan_t p;

    /* fast network: instance 2 (node 2 holds 4 blocks) loads all 30 */
    fixture_up(&f, KV_SCHED_CACHE_AWARE, NULL);
    store(&f, 0, 30, 1);
    store(&f, 0, 4, 2);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);
    p = decide(&f, 32, 32 * BT);
    ASSERT_EQ(p.cached, 30);
    ASSERT_EQ(p.local, 4);
    ASSERT_EQ(p.load, 30);
    ASSERT_EQ(p.n_runs, 2);
    ASSERT(p.runs[0].node == 2 && p.runs[0].first == 0 && p.runs[0].count == 4);
    ASSERT(p.runs[1].node == 1 && p.runs[1].first == 4 && p.runs[1].count == 26);
    fixture_down(&f);

    /* a network slower than computing: only the local prefix */
    kv_sched_cost_defaults(&slow);
    slow.remote_bytes_s = 1e6;
    fixture_up(&f, KV_SCHED_CACHE_AWARE, &slow);
    store(&f, 0, 30, 1);
    store(&f, 0, 4, 2);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);
    p = decide(&f, 32, 32 * BT);
    ASSERT_EQ(p.cached, 30);
    ASSERT_EQ(p.load, 4);
    ASSERT_EQ(p.load, p.local);
    fixture_down(&f);
}

static void test_policies(void)
{
    fixture_t       f;
    kv_sched_plan_t p;
    uint32_t        seq_a[16], seq_b[16], seen = 0;
    int             differ = 0;

    /* local-cache-aware never loads past its own node's prefix */
    fixture_up(&f, KV_SCHED_LOCAL_CACHE_AWARE, NULL);
    store(&f, 0, 20, 1);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);
    p = decide(&f, 20, 20 * BT);
    ASSERT_EQ(p.cached, 20);
    ASSERT_EQ(p.load, 0);
    fixture_down(&f);

    /* load: the least queued, whatever is cached */
    fixture_up(&f, KV_SCHED_LOAD, NULL);
    store(&f, 0, 20, 1);
    add(&f, 1, KV_SCHED_PREFILL, 1);
    add(&f, 2, KV_SCHED_PREFILL, 2);
    add(&f, 3, KV_SCHED_DECODE, 0);
    queue(&f, 1, 10);
    p = decide(&f, 20, 20 * BT);
    ASSERT_EQ(p.prefill, 2);
    ASSERT_EQ(p.load, 0); /* its own node holds nothing */
    fixture_down(&f);

    /* round-robin: the prefill instances in turn, decode ones skipped */
    fixture_up(&f, KV_SCHED_ROUND_ROBIN, NULL);
    add(&f, 5, KV_SCHED_PREFILL, 0);
    add(&f, 6, KV_SCHED_DECODE, 0);
    add(&f, 7, KV_SCHED_BOTH, 0);
    add(&f, 8, KV_SCHED_PREFILL, 0);
    for (int round = 0; round < 3; round++) {
        ASSERT_EQ(decide(&f, 1, 100).prefill, 5);
        ASSERT_EQ(decide(&f, 1, 100).prefill, 7);
        ASSERT_EQ(decide(&f, 1, 100).prefill, 8);
    }
    fixture_down(&f);

    /* random: the same seed, the same sequence; every instance reached */
    for (int run = 0; run < 2; run++) {
        fixture_up(&f, KV_SCHED_RANDOM, NULL);
        for (uint32_t id = 1; id <= 4; id++) {
            add(&f, id, KV_SCHED_BOTH, 0);
        }
        for (int i = 0; i < 16; i++) {
            (run ? seq_b : seq_a)[i] = decide(&f, 1, 100).prefill;
            seen |= 1u << (run ? seq_b : seq_a)[i];
        }
        fixture_down(&f);
    }
    ASSERT(memcmp(seq_a, seq_b, sizeof(seq_a)) == 0);
    ASSERT_EQ(seen, 0x1e);
    {
        kv_sched_t        *other;
        kv_sched_cost_t    c;
        kv_prefix_index_t *index;
        uint32_t           ns;

        kv_sched_cost_defaults(&c);
        ASSERT_OK(kv_sched_create(KV_SCHED_RANDOM, &c, 8, &other));
        ASSERT_OK(kv_index_create(0, &index));
        ASSERT_OK(kv_index_ns_id(index, "t", 1, 1, &ns));
        for (uint32_t id = 1; id <= 4; id++) {
            kv_sched_instance_t in = {id, KV_SCHED_BOTH, 0, 100};
            ASSERT_OK(kv_sched_add(other, &in));
        }
        for (int i = 0; i < 16; i++) {
            kvp_key_t          k   = key_of("x");
            kv_sched_request_t req = {ns, &k, 1, 100, 0};
            kv_sched_plan_t    q;
            ASSERT_OK(kv_sched_schedule(other, index, &req, &q));
            differ |= q.prefill != seq_a[i];
        }
        ASSERT(differ);
        kv_sched_destroy(other);
        kv_index_destroy(index);
    }
}

static void test_decode_choice(void)
{
    fixture_t           f;
    kv_sched_plan_t     p, q;
    kv_sched_load_t     load;
    kv_sched_instance_t in;

    fixture_up(&f, KV_SCHED_CACHE_AWARE, NULL);
    add(&f, 1, KV_SCHED_PREFILL, 0);
    add(&f, 2, KV_SCHED_DECODE, 12);
    add(&f, 3, KV_SCHED_DECODE, 13);
    /* two back-to-back decisions: the second goes to the other idle one */
    p = decide(&f, 1, 100);
    q = decide(&f, 1, 100);
    ASSERT(p.decode != q.decode);
    ASSERT_EQ(p.save_node, p.decode == 2 ? 12 : 13); /* the decode side's node */
    ASSERT_OK(kv_sched_get(f.sched, 2, &in, &load));
    ASSERT_EQ(load.running, 1);
    ASSERT_EQ(load.free_blocks, 100 - 1); /* 150 tokens: one block */

    /* a report replaces the estimate: instance 2 busy, 3 idle */
    load = (kv_sched_load_t){0, 5, 100};
    ASSERT_OK(kv_sched_report(f.sched, 2, &load));
    load = (kv_sched_load_t){0, 0, 100};
    ASSERT_OK(kv_sched_report(f.sched, 3, &load));
    ASSERT_OK(kv_sched_get(f.sched, 3, NULL, &load));
    ASSERT_EQ(load.running, 0);
    ASSERT_EQ(decide(&f, 1, 100).decode, 3);

    /* the least running has no room for 60 blocks: the next one that has */
    load = (kv_sched_load_t){0, 0, 10};
    ASSERT_OK(kv_sched_report(f.sched, 3, &load));
    load = (kv_sched_load_t){0, 4, 100};
    ASSERT_OK(kv_sched_report(f.sched, 2, &load));
    {
        kv_sched_request_t req = {f.ns, f.keys, 1, 100, 60 * BT};
        ASSERT_OK(kv_sched_schedule(f.sched, f.index, &req, &p));
        ASSERT_EQ(p.decode, 2);
    }

    /* no room anywhere for 60 blocks: the one with the most free blocks */
    load = (kv_sched_load_t){0, 0, 40};
    ASSERT_OK(kv_sched_report(f.sched, 2, &load));
    load = (kv_sched_load_t){0, 0, 20};
    ASSERT_OK(kv_sched_report(f.sched, 3, &load));
    {
        kv_sched_request_t req = {f.ns, f.keys, 1, 100, 60 * BT};
        ASSERT_OK(kv_sched_schedule(f.sched, f.index, &req, &p));
        ASSERT_EQ(p.decode, 2);
    }
    /* a decode instance without a node: the prefill's node takes the blocks */
    ASSERT_OK(kv_sched_remove(f.sched, 2));
    ASSERT_OK(kv_sched_remove(f.sched, 3));
    ASSERT_OK(kv_sched_remove(f.sched, 1));
    add(&f, 1, KV_SCHED_PREFILL, 21);
    add(&f, 2, KV_SCHED_DECODE, 0);
    ASSERT_EQ(decide(&f, 1, 100).save_node, 21);
    fixture_down(&f);
}

static void test_runs(void)
{
    fixture_t       f;
    kv_sched_plan_t p;

    /* blocks 0..39 cached, spread: node n holds [0, 2n + 2) for n = 1..20 */
    fixture_up(&f, KV_SCHED_CACHE_AWARE, NULL);
    for (uint32_t n = 1; n <= 20; n++) {
        store(&f, 0, (int)(2 * n + 2), n);
    }
    add(&f, 30, KV_SCHED_PREFILL, 0);
    add(&f, 31, KV_SCHED_DECODE, 0);
    p = decide(&f, 42, 42 * BT);
    ASSERT_EQ(p.cached, 42);
    /* one run from node 20, which holds the whole prefix */
    ASSERT_EQ(p.n_runs, 1);
    ASSERT_EQ(p.runs[0].node, 20);
    fixture_down(&f);

    /* 40 blocks, block i only on node i % 20 + 1: a run per block, cut at
       KV_SCHED_RUNS_MAX; every run's node holds its blocks */
    fixture_up(&f, KV_SCHED_CACHE_AWARE, NULL);
    for (int i = 0; i < 40; i++) {
        store(&f, i, i + 1, (uint32_t)(i % 20) + 1);
    }
    add(&f, 30, KV_SCHED_PREFILL, 0);
    add(&f, 31, KV_SCHED_DECODE, 0);
    p = decide(&f, 40, 40 * BT);
    ASSERT_EQ(p.cached, 40);
    ASSERT_EQ(p.n_runs, KV_SCHED_RUNS_MAX);
    ASSERT_EQ(p.load, KV_SCHED_RUNS_MAX);
    for (uint32_t r = 0; r < p.n_runs; r++) {
        uint32_t locs[4];
        ASSERT_EQ(p.runs[r].first, r);
        ASSERT_EQ(p.runs[r].count, 1);
        ASSERT_EQ(kv_index_locations(f.index, f.ns, &f.keys[r], locs, 4), 1);
        ASSERT_EQ(KV_LOC_NODE(locs[0]), p.runs[r].node);
    }
    fixture_down(&f);
}

static void test_bad_input(void)
{
    fixture_t           f;
    kv_sched_plan_t     p;
    kv_sched_request_t  req;
    kv_sched_instance_t in;
    kv_sched_cost_t     c;
    kv_sched_policy_t   policy;
    char                err[200];

    fixture_up(&f, KV_SCHED_CACHE_AWARE, NULL);
    req = (kv_sched_request_t){f.ns, f.keys, 1, 100, 0};
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_NO_SPACE);
    add(&f, 1, KV_SCHED_PREFILL, 0);
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_NO_SPACE);
    add(&f, 2, KV_SCHED_DECODE, 0);
    req.prompt_tokens = 0;
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_INVALID_PARAM);
    req.prompt_tokens = KV_SCHED_PROMPT_MAX + 1;
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_INVALID_PARAM);
    req.prompt_tokens = 100;
    req.output_tokens = KV_SCHED_OUTPUT_MAX + 1;
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_INVALID_PARAM);
    req.output_tokens = 0;
    req.count         = KV_INDEX_MAX_CHAIN + 1;
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_INVALID_PARAM);

    in = (kv_sched_instance_t){1, KV_SCHED_PREFILL, 0, 10}; /* id taken */
    ASSERT_STATUS(kv_sched_add(f.sched, &in), KVP_ERR_INVALID_PARAM);
    in.id = 0;
    ASSERT_STATUS(kv_sched_add(f.sched, &in), KVP_ERR_INVALID_PARAM);
    in = (kv_sched_instance_t){3, 0, 0, 10};
    ASSERT_STATUS(kv_sched_add(f.sched, &in), KVP_ERR_INVALID_PARAM);
    in = (kv_sched_instance_t){3, KV_SCHED_DECODE, 0, 0};
    ASSERT_STATUS(kv_sched_add(f.sched, &in), KVP_ERR_INVALID_PARAM);
    in = (kv_sched_instance_t){KV_SCHED_INSTANCE_MAX + 1, KV_SCHED_DECODE, 0, 10};
    ASSERT_STATUS(kv_sched_add(f.sched, &in), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_sched_remove(f.sched, 9), KVP_ERR_NOT_FOUND);
    ASSERT_EQ(kv_sched_count(f.sched, KV_SCHED_BOTH), 2);
    /* what was refused changed nothing: the two still schedule */
    req.count = 1;
    ASSERT_OK(kv_sched_schedule(f.sched, f.index, &req, &p));
    ASSERT(p.prefill == 1 && p.decode == 2);
    fixture_down(&f);

    /* removing one keeps the others: round-robin goes on over the rest */
    fixture_up(&f, KV_SCHED_ROUND_ROBIN, NULL);
    for (uint32_t id = 1; id <= 5; id++) {
        add(&f, id, id <= 4 ? KV_SCHED_PREFILL : KV_SCHED_DECODE, id);
    }
    ASSERT_OK(kv_sched_remove(f.sched, 2));
    ASSERT_STATUS(kv_sched_remove(f.sched, 2), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(kv_sched_get(f.sched, 2, NULL, NULL), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(kv_sched_report(f.sched, 2, &(kv_sched_load_t){0, 0, 1}),
                  KVP_ERR_NOT_FOUND);
    ASSERT_EQ(kv_sched_count(f.sched, KV_SCHED_PREFILL), 3);
    for (uint32_t id = 3; id <= 5; id++) {
        ASSERT_OK(kv_sched_get(f.sched, id, &in, NULL));
        ASSERT_EQ(in.id, id);
        ASSERT_EQ(in.node, id);
    }
    for (int round = 0; round < 2; round++) {
        static const uint32_t order[] = {1, 3, 4};
        for (int i = 0; i < 3; i++) {
            p = decide(&f, 1, 100);
            ASSERT_EQ(p.prefill, order[i]);
            ASSERT_EQ(p.decode, 5);
        }
    }
    ASSERT_OK(kv_sched_remove(f.sched, 5));
    ASSERT_STATUS(kv_sched_schedule(f.sched, f.index, &req, &p), KVP_ERR_NO_SPACE);

    /* names and the cost model */
    for (int i = 0; i < KV_SCHED_POLICY_COUNT; i++) {
        ASSERT_OK(kv_sched_policy_parse(kv_sched_policy_name(i), &policy));
        ASSERT_EQ(policy, i);
    }
    ASSERT_STATUS(kv_sched_policy_parse("fastest", &policy), KVP_ERR_NOT_FOUND);
    kv_sched_cost_defaults(&c);
    ASSERT(kv_sched_cost_valid(&c));
    ASSERT_OK(kv_sched_cost_set(&c, "remote_bytes_s", "1e9", err, sizeof(err)));
    ASSERT(kv_sched_cost_get(&c, "remote_bytes_s") == 1e9);
    ASSERT_OK(kv_sched_cost_set(&c, "block_tokens", "256", err, sizeof(err)));
    ASSERT_EQ(c.block_tokens, 256);
    ASSERT_STATUS(kv_sched_cost_set(&c, "remote_bytes_s", "0", err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT_STATUS(kv_sched_cost_set(&c, "prefill_token_s", "-1", err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT_STATUS(kv_sched_cost_set(&c, "prefill_token_s", "nan", err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT_STATUS(kv_sched_cost_set(&c, "block_tokens", "1.5", err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT_STATUS(kv_sched_cost_set(&c, "warp", "1", err, sizeof(err)),
                  KVP_ERR_NOT_FOUND);
    ASSERT(c.remote_bytes_s == 1e9); /* unchanged by the refusals */
    c.local_bytes_s = 0;
    ASSERT(!kv_sched_cost_valid(&c));
    c.local_bytes_s  = 1e9;
    c.remote_bytes_s = -1e9;
    ASSERT(!kv_sched_cost_valid(&c));
    c.remote_bytes_s  = 1e9;
    c.prefill_token_s = -1e-6;
    ASSERT(!kv_sched_cost_valid(&c));
    c.prefill_token_s = 1e-6;
    ASSERT(kv_sched_cost_valid(&c));
    c.prefill_attn_s = NAN;
    ASSERT(!kv_sched_cost_valid(&c));
    ASSERT_STATUS(kv_sched_create(KV_SCHED_LOAD, &c, 1, &f.sched), KVP_ERR_INVALID_PARAM);
    fixture_down(&f);
}

/* Random indexes and instances: cache-aware's estimate is the least. */
static void test_cache_aware_is_least(void)
{
    rng_t rng;

    rng_seed(&rng, 11);
    for (int round = 0; round < 200; round++) {
        fixture_t       f;
        kv_sched_plan_t p;
        uint64_t        queued[9] = {0};
        size_t          cached, count = 1 + rng_range(&rng, 0, 63);
        uint64_t        prompt = count * BT - rng_range(&rng, 0, BT - 1);

        fixture_up(&f, KV_SCHED_CACHE_AWARE, NULL);
        for (uint32_t node = 1; node <= 4; node++) {
            store(&f, 0, (int)rng_range(&rng, 0, count), node);
        }
        for (uint32_t id = 1; id <= 8; id++) {
            add(&f, id, id <= 6 ? KV_SCHED_PREFILL : KV_SCHED_DECODE,
                (uint32_t)rng_range(&rng, 0, 5)); /* node 5: holds nothing */
            queued[id] = rng_range(&rng, 0, 30000);
            queue(&f, id, queued[id]);
        }
        cached = kv_index_match(f.index, f.ns, f.keys, count);
        p      = decide(&f, count, prompt);
        ASSERT_EQ(p.cached, cached);
        for (uint32_t id = 1; id <= 6; id++) {
            kv_sched_instance_t in;
            size_t              local = 0;
            double              own, all;

            ASSERT_OK(kv_sched_get(f.sched, id, &in, NULL));
            while (local < cached && in.node != 0) {
                uint32_t locs[8];
                size_t n = kv_index_locations(f.index, f.ns, &f.keys[local], locs, 8), j;
                for (j = 0; j < n && KV_LOC_NODE(locs[j]) != in.node; j++) {
                }
                if (j == n) {
                    break;
                }
                local++;
            }
            own = estimate(&f.cost, (double)queued[id], local, local, prompt);
            all = estimate(&f.cost, (double)queued[id], local, cached, prompt);
            ASSERT(p.ttft_s <= KV_MIN(own, all) + 1e-9);
        }
        fixture_down(&f);
    }
}

KV_TEST_MAIN(KV_TEST(test_ssd_hit_costs_more), KV_TEST(test_cache_against_queue),
             KV_TEST(test_cache_aware_against_queue), KV_TEST(test_transfer_or_recompute),
             KV_TEST(test_policies), KV_TEST(test_decode_choice), KV_TEST(test_runs),
             KV_TEST(test_bad_input), KV_TEST(test_cache_aware_is_least))
