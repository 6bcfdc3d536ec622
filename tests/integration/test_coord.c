/*
 * Integration tests of a real kvpool-coord with three real kvpool-node
 * processes (--coord) on loopback: membership, the index the nodes'
 * publications build, lease expiry of a killed node, a restarted
 * coordinator rebuilt from the nodes' re-publication, a node that comes
 * back after losing its lease, and PlanPut placement.
 *
 * Blocks are put with libkvpool on a client connected to one node; the
 * node publishes them, asynchronously, so every check of the index polls
 * with a deadline.  The keys of one batch are unrelated blocks (no
 * parents), each cached on its own, so a Match over them answers like a
 * chain of cached blocks.
 */
#include <kvpool/kvpool.h>
#include <kvproto/coord_service.h>

#include "kvpool.pb-c.h"

#include <coord_rpc.h>
#include <node_proc.h>
#include <test.h>
#include <test_util.h>

#define TOKEN    "s3cret"
#define NS       "coord-test"
#define LEASE_MS 600
#define NODES    3
#define PER_NODE 8
#define BLOCK    (4 * KiB)
#define WAIT_MS  10000

typedef struct {
    kv_test_node_t   coord;
    kv_test_node_t   nodes[NODES];
    kvp_client_h     clients[NODES];
    kv_rpc_client_t *rpc;
    uint32_t         ids[NODES];  /* each node's id at the coordinator */
    kvp_key_t        keys[NODES][PER_NODE];
} cluster_t;

static void coord_start(cluster_t *c, int port)
{
    static const char *const extra[] = {"--token",     TOKEN,  "--lease-ms", "600",
                                        "--log-level", "warn", NULL};

    coord_up(&c->coord, port, extra);
    c->rpc = coord_connect(&c->coord, TOKEN);
}

/* Learn each node's id from the coordinator's list (by address). */
static void cluster_map_ids(cluster_t *c)
{
    Kvpool__NodesReply *nodes;

    ASSERT_EQ(coord_wait_nodes(c->rpc, NODES, WAIT_MS), 0);
    nodes = coord_nodes(c->rpc);
    for (int i = 0; i < NODES; i++) {
        c->ids[i] = 0;
        for (size_t j = 0; j < nodes->n_nodes; j++) {
            if (strcmp(nodes->nodes[j]->address, c->nodes[i].address) == 0) {
                c->ids[i] = nodes->nodes[j]->node_id;
                ASSERT_EQ(nodes->nodes[j]->n_tiers, 1);
                ASSERT_EQ(nodes->nodes[j]->tiers[0], KVPOOL__TIER__TIER_HOST);
            }
        }
        ASSERT_NE(c->ids[i], 0);
    }
    coord_free(nodes);
}

/* A coordinator and three nodes of @p memory each, joined, with clients. */
static void cluster_up(cluster_t *c, const char *const memory[NODES])
{
    kvp_client_params_t params = {0};

    signal(SIGPIPE, SIG_IGN);
    memset(c, 0, sizeof(*c));
    coord_start(c, 0);
    params.field_mask = KVP_CLIENT_PARAM_TOKEN;
    params.token      = TOKEN;
    for (int i = 0; i < NODES; i++) {
        const char *extra[] = {"--token",      TOKEN, "--coord",     c->coord.address,
                               "--data-plane", "off", "--log-level", "warn",
                               NULL};
        node_up(&c->nodes[i], memory[i], extra);
        ASSERT_OK(kvp_client_connect(c->nodes[i].address, &params, &c->clients[i]));
    }
    cluster_map_ids(c);
}

static void cluster_down(cluster_t *c)
{
    for (int i = 0; i < NODES; i++) {
        if (c->clients[i] != NULL) {
            kvp_client_disconnect(c->clients[i]);
            node_down(&c->nodes[i]);
        }
    }
    kv_rpc_client_destroy(c->rpc);
    node_down(&c->coord);
}

static uint64_t block_seed(int node, int j)
{
    return 1000 * (uint64_t)node + (uint64_t)j;
}

/* Put PER_NODE unrelated blocks on node @p i in one batch. */
static void put_blocks(cluster_t *c, int i)
{
    const void  *datas[PER_NODE];
    uint64_t     sizes[PER_NODE];
    kvp_status_t statuses[PER_NODE];

    for (int j = 0; j < PER_NODE; j++) {
        c->keys[i][j] = key_of("node%d-block%d", i, j);
        datas[j]      = make_block(BLOCK, block_seed(i, j));
        sizes[j]      = BLOCK;
    }
    ASSERT_OK(kvp_put_batch(c->clients[i], NS, c->keys[i], datas, sizes, PER_NODE,
                            statuses));
    for (int j = 0; j < PER_NODE; j++) {
        ASSERT_OK(statuses[j]);
        free((void *)datas[j]);
    }
}

/* Node @p i still serves its blocks, byte for byte. */
static void expect_gets(cluster_t *c, int i)
{
    uint8_t buf[BLOCK];

    for (int j = 0; j < PER_NODE; j++) {
        uint8_t *want = make_block(BLOCK, block_seed(i, j));
        uint64_t got  = 0;

        ASSERT_OK(kvp_get(c->clients[i], NS, &c->keys[i][j], buf, sizeof(buf), &got));
        ASSERT_EQ(got, BLOCK);
        ASSERT(memcmp(buf, want, BLOCK) == 0);
        free(want);
    }
}

/* Match finds node @p i's blocks, each at that node only (host tier). */
static void expect_match_on(cluster_t *c, int i)
{
    Kvpool__MatchReply *reply;

    ASSERT_EQ(coord_wait_matched(c->rpc, NS, c->keys[i], PER_NODE, PER_NODE, WAIT_MS), 0);
    ASSERT_OK(coord_match(c->rpc, NS, c->keys[i], PER_NODE, &reply));
    ASSERT_EQ(reply->matched, PER_NODE);
    ASSERT_EQ(reply->n_blocks, PER_NODE);
    for (int j = 0; j < PER_NODE; j++) {
        ASSERT_EQ(reply->blocks[j]->n_locations, 1);
        ASSERT_EQ(reply->blocks[j]->locations[0],
                  KV_LOC(c->ids[i], KVPOOL__TIER__TIER_HOST));
    }
    ASSERT_EQ(reply->n_nodes, 1);
    ASSERT_EQ(reply->nodes[0]->node_id, c->ids[i]);
    ASSERT_EQ(reply->nodes[0]->length, PER_NODE);
    coord_free(reply);
}

/* ---------------------------------------------------------------------- */

static const char *const small[NODES] = {"16MiB", "16MiB", "16MiB"};

static void test_cluster_match_and_node_loss(void)
{
    cluster_t                c;
    kvp_key_t                both[2 * PER_NODE];
    Kvpool__MatchReply      *reply;
    Kvpool__CoordStatsReply *stats;
    Kvpool__NodesReply      *nodes;
    uint64_t                 t0, elapsed;

    cluster_up(&c, small);
    for (int i = 0; i < NODES; i++) {
        put_blocks(&c, i);
    }
    for (int i = 0; i < NODES; i++) {
        expect_match_on(&c, i);
    }

    /* a chain across two nodes: per-block locations, per-node prefixes */
    memcpy(both, c.keys[0], sizeof(c.keys[0]));
    memcpy(both + PER_NODE, c.keys[1], sizeof(c.keys[1]));
    ASSERT_OK(coord_match(c.rpc, NS, both, 2 * PER_NODE, &reply));
    ASSERT_EQ(reply->matched, 2 * PER_NODE);
    ASSERT_EQ(reply->blocks[0]->locations[0], KV_LOC(c.ids[0], 0));
    ASSERT_EQ(reply->blocks[PER_NODE]->locations[0], KV_LOC(c.ids[1], 0));
    ASSERT_EQ(reply->n_nodes, 1); /* only nodes holding block 0 */
    ASSERT_EQ(reply->nodes[0]->node_id, c.ids[0]);
    ASSERT_EQ(reply->nodes[0]->length, PER_NODE);
    coord_free(reply);

    stats = coord_stats(c.rpc);
    ASSERT_EQ(stats->nodes, NODES);
    ASSERT_EQ(stats->blocks, NODES * PER_NODE);
    ASSERT_EQ(stats->lease_expiries, 0);
    ASSERT(stats->matches > 0);
    coord_free(stats);

    /* kill -9 node 2: its blocks leave the index within two leases */
    kvp_client_disconnect(c.clients[2]);
    c.clients[2] = NULL;
    proc_kill(&c.nodes[2]);
    t0 = now_ms();
    ASSERT_EQ(coord_wait_matched(c.rpc, NS, c.keys[2], PER_NODE, 0, WAIT_MS), 0);
    elapsed = now_ms() - t0;
    fprintf(stderr, "node 2 left the index %" PRIu64 " ms after kill -9 (lease %d ms)\n",
            elapsed, LEASE_MS);
    ASSERT_LE(elapsed, 2 * LEASE_MS);
    nodes = coord_nodes(c.rpc);
    ASSERT_EQ(nodes->n_nodes, NODES - 1);
    for (size_t j = 0; j < nodes->n_nodes; j++) {
        ASSERT_NE(nodes->nodes[j]->node_id, c.ids[2]);
    }
    coord_free(nodes);

    /* the others still match and still serve */
    for (int i = 0; i < 2; i++) {
        expect_match_on(&c, i);
        expect_gets(&c, i);
    }
    stats = coord_stats(c.rpc);
    ASSERT_EQ(stats->nodes, NODES - 1);
    ASSERT_EQ(stats->blocks, 2 * PER_NODE);
    ASSERT_EQ(stats->lease_expiries, 1);
    coord_free(stats);
    cluster_down(&c);
}

static void test_coordinator_restart(void)
{
    cluster_t           c;
    Kvpool__NodesReply *nodes;
    uint64_t            epoch, t0;
    int                 port;

    cluster_up(&c, small);
    for (int i = 0; i < NODES; i++) {
        put_blocks(&c, i);
    }
    for (int i = 0; i < NODES; i++) {
        expect_match_on(&c, i);
    }
    nodes = coord_nodes(c.rpc);
    epoch = nodes->epoch;
    coord_free(nodes);

    /* kill the coordinator; a new one on the same port knows nothing */
    port = c.coord.port;
    kv_rpc_client_destroy(c.rpc);
    proc_kill(&c.coord);
    coord_start(&c, port);
    t0 = now_ms();

    /* the nodes re-join and re-publish: the same answers */
    cluster_map_ids(&c);
    for (int i = 0; i < NODES; i++) {
        expect_match_on(&c, i);
    }
    fprintf(stderr, "index rebuilt %" PRIu64 " ms after the restart\n", now_ms() - t0);
    nodes = coord_nodes(c.rpc);
    ASSERT_NE(nodes->epoch, epoch);
    coord_free(nodes);
    for (int i = 0; i < NODES; i++) {
        expect_gets(&c, i);
    }
    cluster_down(&c);
}

static void test_node_returns_after_lease(void)
{
    cluster_t                c;
    Kvpool__CoordStatsReply *stats;

    cluster_up(&c, small);
    for (int i = 0; i < NODES; i++) {
        put_blocks(&c, i);
        expect_match_on(&c, i);
    }
    /* node 1 stops answering: it loses its lease and its blocks */
    kill(c.nodes[1].pid, SIGSTOP);
    ASSERT_EQ(coord_wait_matched(c.rpc, NS, c.keys[1], PER_NODE, 0, WAIT_MS), 0);
    ASSERT_EQ(coord_wait_nodes(c.rpc, NODES - 1, WAIT_MS), 0);

    /* back: its heartbeat is refused, it joins again and re-publishes */
    kill(c.nodes[1].pid, SIGCONT);
    cluster_map_ids(&c);
    for (int i = 0; i < NODES; i++) {
        expect_match_on(&c, i);
    }
    expect_gets(&c, 1);
    stats = coord_stats(c.rpc);
    ASSERT_EQ(stats->lease_expiries, 1);
    ASSERT_EQ(stats->blocks, NODES * PER_NODE);
    coord_free(stats);
    cluster_down(&c);
}

/* Index of the node with id @p id. */
static int node_index(const cluster_t *c, uint32_t id)
{
    for (int i = 0; i < NODES; i++) {
        if (c->ids[i] == id) {
            return i;
        }
    }
    ASSERT(!"a target that is no node of the cluster");
    return -1;
}

/* The NodeInfo of @p id in a PlanPut reply. */
static const Kvpool__NodeInfo *plan_node(const Kvpool__PlanPutReply *plan, uint32_t id)
{
    for (size_t i = 0; i < plan->n_nodes; i++) {
        if (plan->nodes[i]->node_id == id) {
            return plan->nodes[i];
        }
    }
    ASSERT(!"a target missing from PlanPutReply.nodes");
    return NULL;
}

static void test_plan_put(void)
{
    static const char *const memory[NODES] = {"16MiB", "16MiB", "32MiB"};
    enum { CHAIN = 16, BIG = 40, REP = 4 };
    cluster_t             c;
    Kvpool__PlanPutReply *plan;
    kvp_key_t             chain[BIG];
    uint64_t              sizes[BIG], per_node[NODES] = {0};
    const void           *datas[4];
    kvp_status_t          statuses[4];
    uint32_t              first;
    int                   runs, u;

    cluster_up(&c, memory);

    /* a new chain goes to one node */
    for (int i = 0; i < CHAIN; i++) {
        chain[i] = key_of("plan-%d", i);
        sizes[i] = 64 * KiB;
    }
    ASSERT_OK(coord_plan_put(c.rpc, NS, chain, sizes, CHAIN, 0, &plan));
    ASSERT_EQ(plan->cached, 0);
    ASSERT_EQ(plan->n_targets, CHAIN);
    ASSERT_EQ(plan->n_replica_nodes, 0);
    first = plan->targets[0];
    for (int i = 0; i < CHAIN; i++) {
        ASSERT_EQ(plan->targets[i], first);
    }
    ASSERT_EQ(plan->n_nodes, 1);
    ASSERT_EQ(plan->nodes[0]->node_id, first);
    ASSERT(strcmp(plan->nodes[0]->address, c.nodes[node_index(&c, first)].address) == 0);
    coord_free(plan);

    /* its first 4 blocks stored on another node: cached, and the rest
     * follows them there */
    u = (node_index(&c, first) + 1) % NODES;
    for (int i = 0; i < 4; i++) {
        datas[i] = make_block(sizes[i], (uint64_t)i);
    }
    ASSERT_OK(kvp_put_batch(c.clients[u], NS, chain, datas, sizes, 4, statuses));
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(statuses[i]);
        free((void *)datas[i]);
    }
    ASSERT_EQ(coord_wait_matched(c.rpc, NS, chain, CHAIN, 4, WAIT_MS), 0);
    ASSERT_OK(coord_plan_put(c.rpc, NS, chain, sizes, CHAIN, 1, &plan));
    ASSERT_EQ(plan->cached, 4);
    for (int i = 0; i < CHAIN; i++) {
        ASSERT_EQ(plan->targets[i], i < 4 ? 0 : c.ids[u]);
    }
    coord_free(plan);

    /* 40 MiB: more than one node's room; each node gets at most its free
     * bytes, and the chain stays in few runs */
    for (int i = 0; i < BIG; i++) {
        chain[i] = key_of("big-%d", i);
        sizes[i] = MiB;
    }
    ASSERT_OK(coord_plan_put(c.rpc, NS, chain, sizes, BIG, 1, &plan));
    runs = 1;
    for (int i = 0; i < BIG; i++) {
        ASSERT_NE(plan->targets[i], 0);
        per_node[node_index(&c, plan->targets[i])] += sizes[i];
        runs += i > 0 && plan->targets[i] != plan->targets[i - 1];
    }
    ASSERT_LE(runs, NODES);
    for (int i = 0; i < NODES; i++) {
        if (per_node[i] > 0) {
            ASSERT_LE(per_node[i], plan_node(plan, c.ids[i])->free_bytes);
        }
    }
    coord_free(plan);

    /* blocks only the 32 MiB node can hold go there, even when full */
    for (int i = 0; i < 3; i++) {
        chain[i] = key_of("huge-%d", i);
        sizes[i] = 20 * MiB;
    }
    ASSERT_OK(coord_plan_put(c.rpc, NS, chain, sizes, 3, 1, &plan));
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(plan->targets[i], c.ids[2]);
    }
    coord_free(plan);
    sizes[0] = 48 * MiB; /* larger than every node */
    ASSERT_STATUS(coord_plan_put(c.rpc, NS, chain, sizes, 1, 1, &plan),
                  KVP_ERR_TOO_LARGE);

    /* replicas on distinct nodes, each copy's chain together too */
    for (int i = 0; i < REP; i++) {
        chain[i] = key_of("rep-%d", i);
        sizes[i] = 64 * KiB;
    }
    ASSERT_OK(coord_plan_put(c.rpc, NS, chain, sizes, REP, NODES, &plan));
    ASSERT_EQ(plan->n_replica_nodes, REP * (NODES - 1));
    for (int i = 0; i < REP; i++) {
        uint32_t a = plan->targets[i], b = plan->replica_nodes[2 * i],
                 d = plan->replica_nodes[2 * i + 1];
        ASSERT(a != 0 && b != 0 && d != 0 && a != b && a != d && b != d);
        ASSERT_EQ(a, plan->targets[0]);
        ASSERT_EQ(b, plan->replica_nodes[0]);
        ASSERT_EQ(d, plan->replica_nodes[1]);
    }
    ASSERT_EQ(plan->n_nodes, NODES);
    coord_free(plan);
    /* more copies than nodes: the extra ones have no node */
    ASSERT_OK(coord_plan_put(c.rpc, NS, chain, sizes, 1, NODES + 1, &plan));
    ASSERT_EQ(plan->n_replica_nodes, NODES);
    ASSERT_EQ(plan->replica_nodes[NODES - 1], 0);
    coord_free(plan);
    cluster_down(&c);
}

/*
 * More changes than the node queues while the coordinator does not answer:
 * the node drops its queue, joins again and re-publishes its inventory,
 * and the index ends up holding exactly what the node holds.
 */
static void test_inventory_after_overflow(void)
{
    enum { FLOOD = 81920, BATCH = 4096, SIZE = 64 }; /* > the 65536 queued */
    static const char *const coord_extra[] = {"--lease-ms", "5000", "--log-level",
                                              "error", NULL};
    kv_test_node_t           coord, node;
    kvp_client_params_t      params = {0};
    kvp_client_h             client;
    kv_rpc_client_t         *rpc;
    static kvp_key_t         keys[BATCH];
    static const void       *datas[BATCH];
    static uint64_t          sizes[BATCH];
    static kvp_status_t      statuses[BATCH];
    static uint8_t           bytes[SIZE];
    kvp_stats_t              st;
    uint64_t                 deadline;

    signal(SIGPIPE, SIG_IGN);
    coord_up(&coord, 0, coord_extra);
    rpc = coord_connect(&coord, NULL);
    {
        const char *extra[] = {"--coord", coord.address, "--data-plane", "off",
                               "--log-level", "error", NULL};
        node_up(&node, "64MiB", extra);
    }
    ASSERT_EQ(coord_wait_nodes(rpc, 1, WAIT_MS), 0);
    params.field_mask = KVP_CLIENT_PARAM_TRANSPORT;
    params.transport  = "shm"; /* fast enough to outrun a stopped coordinator */
    ASSERT_OK(kvp_client_connect(node.address, &params, &client));

    kill(coord.pid, SIGSTOP);
    for (int done = 0; done < FLOOD; done += BATCH) {
        for (int i = 0; i < BATCH; i++) {
            keys[i]  = key_of("flood-%d", done + i);
            datas[i] = bytes;
            sizes[i] = SIZE;
        }
        ASSERT_OK(kvp_put_batch(client, NS, keys, datas, sizes, BATCH, statuses));
        for (int i = 0; i < BATCH; i++) {
            ASSERT_OK(statuses[i]);
        }
    }
    kill(coord.pid, SIGCONT);

    /* the index converges on the node's table: the last blocks stored are
     * there (each its own chain), the evicted first ones are not */
    ASSERT_OK(kvp_stats(client, &st));
    ASSERT(st.evictions > 0);
    for (deadline = now_ms() + WAIT_MS;; sleep_ms(20)) {
        Kvpool__CoordStatsReply *stats = coord_stats(rpc);
        int                      same  = stats->blocks == st.blocks;

        /* through the inventory, not by replaying every change */
        ASSERT_LE(stats->events, FLOOD / 2);
        coord_free(stats);
        if (same) {
            break;
        }
        ASSERT(now_ms() < deadline);
    }
    ASSERT_EQ(coord_matched(rpc, NS, keys, BATCH), BATCH);
    keys[0] = key_of("flood-%d", 0);
    ASSERT_EQ(coord_matched(rpc, NS, keys, 1), 0);

    kvp_client_disconnect(client);
    kv_rpc_client_destroy(rpc);
    node_down(&node);
    node_down(&coord);
}

KV_TEST_MAIN(KV_TEST(test_cluster_match_and_node_loss), KV_TEST(test_coordinator_restart),
             KV_TEST(test_node_returns_after_lease), KV_TEST(test_plan_put),
             KV_TEST(test_inventory_after_overflow))
