/*
 * Scheduling with real processes: a kvpool-coord, kvpool-node processes
 * joined to it, and inference instances registered through libkvpool.
 *
 * - a cached prefix on one node draws the request to the instance beside
 *   that node, and the plan's blocks load byte for byte; the prefill's new
 *   blocks go to the decode instance's node and the handover plan loads
 *   the whole chain there;
 * - an instance that stops reporting is out of scheduling within two
 *   leases, and joins again when it reports; one that leaves is out at once;
 * - the policy and the cost model come from the coordinator's flags and
 *   config file;
 * - bad input gets a clear error and changes nothing.
 */
#include <kvpool/kvpool.h>
#include <kvcoord/sched.h>
#include <test.h>
#include <test_util.h>

#include <math.h>

#define NS "sched"
#define BLOCK (16 * KiB)

/* Wait until the coordinator lists @p n nodes. */
static void wait_nodes(kvp_client_h client, uint64_t n)
{
    kvp_index_stats_t st = {0};

    for (uint64_t deadline = now_ms() + 10000;; sleep_ms(20)) {
        ASSERT_OK(kvp_index_stats(client, &st));
        if (st.nodes >= n) {
            return;
        }
        ASSERT(now_ms() < deadline);
    }
}

static kvp_instance_h join(kvp_client_h client, const char *name, uint32_t roles,
                           const char *node)
{
    kvp_instance_params_t p    = {name, roles, 1000, node};
    kvp_instance_h        inst = NULL;

    ASSERT_OK(kvp_instance_join(client, &p, &inst));
    ASSERT(kvp_instance_id(inst) > 0);
    return inst;
}

static void report_idle(kvp_instance_h inst)
{
    kvp_instance_load_t load = {0, 0, 1000};

    ASSERT_OK(kvp_instance_report(inst, &load));
}

/* A chain of @p n keys named "@p name i" and its blocks' bytes. */
typedef struct {
    kvp_key_t keys[32];
    uint8_t  *data[32];
    uint64_t  sizes[32];
    size_t    n;
} chain_t;

static void chain_make(chain_t *c, const char *name, size_t n)
{
    ASSERT(n <= 32);
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        c->keys[i]  = key_of("%s %zu", name, i);
        c->data[i]  = make_block(BLOCK, 1000 * (uint64_t)n + i + name[0]);
        c->sizes[i] = BLOCK;
    }
}

static void chain_free(chain_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->data[i]);
    }
}

/* Load with @p plan; every loaded block must equal the chain's bytes. */
static size_t plan_load_check(kvp_client_h client, const kvp_plan_t *plan,
                              const chain_t *c)
{
    uint8_t *bufs[32];
    uint64_t caps[32], sizes[32];
    size_t   loaded = 0;

    for (size_t i = 0; i < c->n; i++) {
        bufs[i] = malloc(BLOCK);
        ASSERT(bufs[i] != NULL);
        caps[i] = BLOCK;
    }
    ASSERT_OK(kvp_plan_load(client, plan, NS, c->keys, (void *const *)bufs, caps, c->n,
                            sizes, &loaded));
    for (size_t i = 0; i < loaded; i++) {
        ASSERT_EQ(sizes[i], BLOCK);
        ASSERT(memcmp(bufs[i], c->data[i], BLOCK) == 0);
    }
    for (size_t i = 0; i < c->n; i++) {
        free(bufs[i]);
    }
    return loaded;
}

/* Wait until the coordinator's index holds @p want blocks of the chain. */
static void wait_match(kvp_client_h client, const kvp_key_t *keys, size_t n, size_t want)
{
    size_t matched = 0;

    for (uint64_t deadline = now_ms() + 10000;; sleep_ms(10)) {
        ASSERT_OK(kvp_match(client, NS, keys, n, &matched));
        if (matched == want) {
            return;
        }
        ASSERT(now_ms() < deadline);
    }
}

static void test_schedule_follows_the_cache(void)
{
    kv_test_node_t coord, a, b;
    kvp_client_h   client, on_a, on_b;
    kvp_instance_h pa, pb, dec;
    kvp_status_t   statuses[32];
    kvp_plan_t     plan, handover;
    chain_t        c;
    size_t         present = 0;

    coord_up(&coord, 0, NULL);
    cluster_node_up(&a, "64MiB", &coord);
    cluster_node_up(&b, "64MiB", &coord);
    client = connect_to(coord.address);
    wait_nodes(client, 2);
    pa  = join(client, "prefill-a", KVP_ROLE_PREFILL, a.address);
    pb  = join(client, "prefill-b", KVP_ROLE_PREFILL, b.address);
    dec = join(client, "decode-b", KVP_ROLE_DECODE, b.address);

    /* 8 blocks of a 12-block prompt, put on node A itself */
    chain_make(&c, "conversation", 12);
    on_a = connect_to(a.address);
    ASSERT_OK(kvp_put_chain(on_a, NS, c.keys, (const void *const *)c.data, c.sizes, 8,
                            statuses));
    wait_match(client, c.keys, 12, 8);

    ASSERT_OK(kvp_schedule(client, NS, c.keys, 12, 12 * 512, 100, &plan));
    ASSERT_EQ(plan.prefill_id, kvp_instance_id(pa)); /* beside the cached prefix */
    ASSERT_EQ(plan.decode_id, kvp_instance_id(dec));
    ASSERT_EQ(plan.cached, 8);
    ASSERT_EQ(plan.local, 8);
    ASSERT_EQ(plan.load, 8);
    ASSERT_EQ(plan.n_runs, 1);
    ASSERT(strcmp(plan.prefill_name, "prefill-a") == 0);
    ASSERT(plan.ttft_s > 0 &&
           plan.ttft_s == plan.queue_s + plan.transfer_s + plan.prefill_s);
    ASSERT_EQ(plan_load_check(client, &plan, &c), 8);

    /* the prefill saves blocks 8..11 on the decode instance's node (B) */
    ASSERT(plan.save_node_id != 0 && plan.save_node_id != plan.runs[0].node_id);
    ASSERT_OK(kvp_plan_save(client, &plan, NS, c.keys, (const void *const *)c.data,
                            c.sizes, 8, 12));
    on_b = connect_to(b.address);
    ASSERT_OK(kvp_exists(on_b, NS, c.keys + 8, 4, &present));
    ASSERT_EQ(present, 4);
    /* the decode side loads all 12 where the handover plan says */
    ASSERT_OK(kvp_plan_handover(&plan, 8, 12, &handover));
    ASSERT_EQ(handover.load, 12);
    ASSERT_EQ(plan_load_check(client, &handover, &c), 12);
    wait_match(client, c.keys, 12, 12); /* node B published them, with parents */

    /* prefill-b's node now holds none of the first 8: a plan with a
       remote prefix for it must load from node A (runs name A first) */
    ASSERT_OK(kvp_instance_leave(pa));
    ASSERT_OK(kvp_schedule(client, NS, c.keys, 12, 12 * 512, 100, &plan));
    ASSERT_EQ(plan.prefill_id, kvp_instance_id(pb));
    ASSERT_EQ(plan.local, 0);
    ASSERT_EQ(plan.load, 12); /* fetching beats recomputing with the defaults */
    ASSERT_EQ(plan_load_check(client, &plan, &c), 12);

    ASSERT_OK(kvp_instance_leave(pb));
    ASSERT_OK(kvp_instance_leave(dec));
    kvp_client_disconnect(on_a);
    kvp_client_disconnect(on_b);
    kvp_client_disconnect(client);
    chain_free(&c);
    node_down(&b);
    node_down(&a);
    node_down(&coord);
}

/* Which prefill instance the next decision picks. */
static uint32_t next_prefill(kvp_client_h client)
{
    kvp_key_t  key = key_of("lease");
    kvp_plan_t plan;

    ASSERT_OK(kvp_schedule(client, NS, &key, 1, 100, 10, &plan));
    return plan.prefill_id;
}

static void test_schedule_lease_expiry(void)
{
    /* round-robin: while p2 is registered, every other decision picks it */
    const char *const flags[] = {"--lease-ms",  "300",         "--scheduler-policy",
                                 "round-robin", "--log-level", "error",
                                 NULL};
    kv_test_node_t    coord;
    kvp_client_h      client;
    kvp_instance_h    p1, p2, dec;
    kvp_plan_t        plan;
    kvp_key_t         key = key_of("lease");
    uint32_t          id2;
    int               seen2 = 0;
    uint64_t          stopped;

    coord_up(&coord, 0, flags);
    client = connect_to(coord.address);
    p1     = join(client, "p1", KVP_ROLE_PREFILL, NULL);
    p2     = join(client, "p2", KVP_ROLE_PREFILL, NULL);
    dec    = join(client, "d", KVP_ROLE_DECODE, NULL);
    id2    = kvp_instance_id(p2);
    for (int i = 0; i < 2; i++) {
        seen2 |= next_prefill(client) == id2;
    }
    ASSERT(seen2);

    /* p2 stops reporting; p1 and d go on */
    stopped = now_ms();
    for (;;) {
        int chose2 = 0;
        report_idle(p1);
        report_idle(dec);
        for (int i = 0; i < 2; i++) {
            chose2 |= next_prefill(client) == id2;
        }
        if (!chose2) {
            break;
        }
        ASSERT(now_ms() - stopped < 2 * 300 + 200); /* two leases, and a tick */
        sleep_ms(50);
    }
    for (int i = 0; i < 20; i++) {
        ASSERT(next_prefill(client) != id2);
    }
    /* a report from p2 joins it again, under another id */
    report_idle(p2);
    ASSERT(kvp_instance_id(p2) != id2);
    seen2 = 0;
    for (int i = 0; i < 2; i++) {
        seen2 |= next_prefill(client) == kvp_instance_id(p2);
    }
    ASSERT(seen2);

    /* the only decode instance leaves: no decision can be made */
    ASSERT_OK(kvp_instance_leave(dec));
    ASSERT_STATUS(kvp_schedule(client, NS, &key, 1, 100, 10, &plan), KVP_ERR_NO_SPACE);
    ASSERT_OK(kvp_instance_leave(p1));
    ASSERT_OK(kvp_instance_leave(p2));
    kvp_client_disconnect(client);
    node_down(&coord);
}

static void test_schedule_config(void)
{
    const char *const rr[] = {"--scheduler-policy", "round-robin", "--log-level", "error",
                              NULL};
    char              path[] = "/tmp/kvp-sched-XXXXXX";
    const char *const cfg[]  = {"--config", path, "--log-level", "error", NULL};
    static const char ini[] =
        "[coord]\nscheduler_policy = load\nprefill_token_s = 0.001\n"
        "prefill_attn_s = 0\nprefill_fixed_s = 0.5\n";
    kv_test_node_t coord;
    kvp_client_h   client;
    kvp_instance_h p[3], dec;
    kvp_key_t      key = key_of("cfg");
    kvp_plan_t     plan;
    int            fd;

    /* round-robin: the prefill instances in turn */
    coord_up(&coord, 0, rr);
    client = connect_to(coord.address);
    p[0]   = join(client, "p0", KVP_ROLE_PREFILL, NULL);
    p[1]   = join(client, "p1", KVP_ROLE_PREFILL | KVP_ROLE_DECODE, NULL);
    p[2]   = join(client, "p2", KVP_ROLE_PREFILL, NULL);
    dec    = join(client, "d", KVP_ROLE_DECODE, NULL);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++) {
            ASSERT_OK(kvp_schedule(client, NS, &key, 1, 100, 10, &plan));
            ASSERT_EQ(plan.prefill_id, kvp_instance_id(p[i]));
        }
    }
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(kvp_instance_leave(p[i]));
    }
    ASSERT_OK(kvp_instance_leave(dec));
    kvp_client_disconnect(client);
    node_down(&coord);

    /* a config file: load policy, and the cost model's figures */
    fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, ini, sizeof(ini) - 1), (ssize_t)(sizeof(ini) - 1));
    close(fd);
    coord_up(&coord, 0, cfg);
    client = connect_to(coord.address);
    p[0]   = join(client, "p0", KVP_ROLE_PREFILL, NULL);
    p[1]   = join(client, "p1", KVP_ROLE_PREFILL, NULL);
    dec    = join(client, "d", KVP_ROLE_DECODE, NULL);
    {
        kvp_instance_load_t busy = {100000, 0, 1000};
        ASSERT_OK(kvp_instance_report(p[0], &busy));
    }
    ASSERT_OK(kvp_schedule(client, NS, &key, 1, 100, 10, &plan));
    ASSERT_EQ(plan.prefill_id, kvp_instance_id(p[1])); /* the least queued */
    ASSERT(fabs(plan.prefill_s - (0.5 + 0.001 * 100)) < 1e-9);
    ASSERT_OK(kvp_instance_leave(p[0]));
    ASSERT_OK(kvp_instance_leave(p[1]));
    ASSERT_OK(kvp_instance_leave(dec));
    kvp_client_disconnect(client);
    node_down(&coord);
    unlink(path);
}

static void test_schedule_bad_input(void)
{
    kv_test_node_t        coord;
    kvp_client_h          client;
    kvp_instance_h        pre, dec, inst = NULL;
    kvp_key_t             keys[12];
    kvp_plan_t            plan;
    char                  long_name[KVP_INSTANCE_NAME_MAX + 2];
    kvp_instance_params_t bad_roles = {"x", 0, 10, NULL};
    kvp_instance_params_t bad_cap   = {"x", KVP_ROLE_DECODE, 0, NULL};
    kvp_instance_params_t bad_name  = {long_name, KVP_ROLE_DECODE, 10, NULL};
    kvp_instance_params_t bad_node  = {"x", KVP_ROLE_DECODE, 10, "bad\001node:1"};

    for (int i = 0; i < 12; i++) {
        keys[i] = key_of("bad %d", i);
    }
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    coord_up(&coord, 0, NULL);
    client = connect_to(coord.address);

    /* no instance of a role */
    ASSERT_STATUS(kvp_schedule(client, NS, keys, 1, 100, 10, &plan), KVP_ERR_NO_SPACE);
    pre = join(client, "p", KVP_ROLE_PREFILL, NULL);
    ASSERT_STATUS(kvp_schedule(client, NS, keys, 1, 100, 10, &plan), KVP_ERR_NO_SPACE);
    dec = join(client, "d", KVP_ROLE_DECODE, NULL);

    /* bad joins */
    ASSERT_STATUS(kvp_instance_join(client, &bad_roles, &inst), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvp_instance_join(client, &bad_cap, &inst), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvp_instance_join(client, &bad_name, &inst), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvp_instance_join(client, &bad_node, &inst), KVP_ERR_INVALID_PARAM);
    ASSERT(inst == NULL);

    /* absurd lengths */
    ASSERT_STATUS(kvp_schedule(client, NS, keys, 1, 0, 10, &plan), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvp_schedule(client, NS, keys, 1, KV_SCHED_PROMPT_MAX + 1, 10, &plan),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvp_schedule(client, NS, keys, 1, 100, KV_SCHED_OUTPUT_MAX + 1, &plan),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvp_schedule(client, NS, keys, 12, 100, 10, &plan),
                  KVP_ERR_INVALID_PARAM); /* 12 blocks cannot hold 100 tokens */
    ASSERT_STATUS(kvp_schedule(client, "", keys, 1, 100, 10, &plan),
                  KVP_ERR_INVALID_PARAM);

    /* nothing changed: the same two instances still schedule */
    ASSERT_OK(kvp_schedule(client, NS, keys, 12, 12 * 512, 10, &plan));
    ASSERT_EQ(plan.prefill_id, kvp_instance_id(pre));
    ASSERT_EQ(plan.decode_id, kvp_instance_id(dec));
    ASSERT_EQ(plan.cached, 0);
    ASSERT_OK(kvp_instance_leave(pre));
    ASSERT_OK(kvp_instance_leave(dec));
    kvp_client_disconnect(client);
    node_down(&coord);
}

KV_TEST_MAIN(KV_TEST(test_schedule_follows_the_cache),
             KV_TEST(test_schedule_lease_expiry), KV_TEST(test_schedule_config),
             KV_TEST(test_schedule_bad_input))
