/*
 * Integration tests of libkvpool's cluster mode: a real kvpool-coord
 * ($KVPOOL_COORD_BIN) and kvpool-node processes joined to it
 * (--coord), on free loopback ports; the client connects to the
 * coordinator's address.  Block bytes move as $KVPOOL_TRANSPORT says
 * (ctest runs the file with frames and with the shared arena).
 *
 * The index learns of stored blocks when the nodes publish them, a moment
 * after the puts; tests wait for Match to see what they stored before
 * they read it back.
 *
 * A fake coordinator (a kv_rpc_server in a child process) answers with
 * malformed Nodes, Match and PlanPut replies: the client must refuse them
 * with KVP_ERR_PROTOCOL and never move a block through them.
 */
#include <kv/evloop.h>
#include <kvpool/kvpool.h>
#include <kvproto/coord_service.h>
#include <kvproto/rpc_server.h>

#include "kvpool.pb-c.h"

#include <node_proc.h>
#include <test.h>
#include <test_util.h>

#include <math.h>
#include <pthread.h>

#define NS "cluster"
#define CHAIN_MAX 32
#define WAIT_MS 8000

/* ---------------------------------------------------------------------- */
/* A pool: a coordinator and nodes                                         */
/* ---------------------------------------------------------------------- */

typedef struct {
    kv_test_node_t coord;
    kv_test_node_t nodes[4];
    int            n;
    int            alive[4];
} pool_t;

static void pool_up(pool_t *pool, int n, const char *memory, const char *lease_ms)
{
    const char *const extra[] = {"--log-level", "warn", "--lease-ms", lease_ms, NULL};

    memset(pool, 0, sizeof(*pool));
    coord_up(&pool->coord, 0, extra);
    for (int i = 0; i < n; i++) {
        cluster_node_up(&pool->nodes[i], memory, &pool->coord);
        pool->alive[i] = 1;
    }
    pool->n = n;
}

static void pool_down(pool_t *pool)
{
    for (int i = 0; i < pool->n; i++) {
        if (pool->alive[i]) {
            node_down(&pool->nodes[i]);
        }
    }
    node_down(&pool->coord);
}

/* SIGKILL node @p i, as a crash would. */
static void pool_kill(pool_t *pool, int i)
{
    proc_kill(&pool->nodes[i]);
    pool->alive[i] = 0;
}

/* Within WAIT_MS, the coordinator counts @p n nodes. */
static void wait_joined(kvp_client_h client, uint64_t n)
{
    kvp_index_stats_t st = {0};

    for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline; sleep_ms(10)) {
        ASSERT_OK(kvp_index_stats(client, &st));
        if (st.nodes == n) {
            return;
        }
    }
    ASSERT_EQ(st.nodes, n);
}

/* ---------------------------------------------------------------------- */
/* Chains                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * A chain of n blocks whose first `shared` blocks are those of chain
 * `base` (keys and bytes).  Keys chain as an engine's do: each hashes the
 * key before it, so a key names its whole prefix.
 */
typedef struct {
    size_t    n;
    kvp_key_t keys[CHAIN_MAX];
    uint64_t  sizes[CHAIN_MAX];
    uint8_t  *data[CHAIN_MAX];
} chain_t;

static void chain_make(chain_t *c, const char *name, size_t n, const chain_t *base,
                       size_t shared)
{
    ASSERT_LE(n, CHAIN_MAX);
    ASSERT(shared == 0 || (base != NULL && shared <= base->n));
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        if (i < shared) {
            c->keys[i]  = base->keys[i];
            c->sizes[i] = base->sizes[i];
            c->data[i]  = malloc(c->sizes[i]);
            ASSERT(c->data[i] != NULL);
            memcpy(c->data[i], base->data[i], c->sizes[i]);
            continue;
        }
        uint8_t label[KVP_KEY_LEN + 64];
        size_t len = (size_t)snprintf((char *)label + KVP_KEY_LEN, 64, "%s-%zu", name, i);
        memset(label, 0, KVP_KEY_LEN);
        if (i > 0) {
            memcpy(label, c->keys[i - 1].bytes, KVP_KEY_LEN);
        }
        c->keys[i]  = kvp_key_from_bytes(label, KVP_KEY_LEN + len);
        c->sizes[i] = (uint64_t)(24 + (i * 7) % 40) * KiB + i;
        c->data[i]  = make_block(c->sizes[i], c->keys[i].bytes[0] * 1000u + i);
    }
}

static void chain_free(chain_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->data[i]);
    }
}

static void chain_put(kvp_client_h client, const chain_t *c)
{
    kvp_status_t st[CHAIN_MAX];

    ASSERT_OK(kvp_put_chain(client, NS, c->keys, (const void *const *)c->data, c->sizes,
                            c->n, st));
    for (size_t i = 0; i < c->n; i++) {
        ASSERT_OK(st[i]);
    }
}

static size_t chain_match(kvp_client_h client, const chain_t *c)
{
    size_t matched = 999;

    ASSERT_OK(kvp_match(client, NS, c->keys, c->n, &matched));
    ASSERT_LE(matched, c->n);
    return matched;
}

/* Within WAIT_MS, Match of @p c says @p want. */
static void wait_match(kvp_client_h client, const chain_t *c, size_t want)
{
    size_t matched = 0;

    for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline; sleep_ms(10)) {
        matched = chain_match(client, c);
        if (matched == want) {
            return;
        }
    }
    ASSERT_EQ(matched, want);
}

/* get_chain of @p c: how many blocks it loaded; each of them byte for byte. */
static size_t chain_get(kvp_client_h client, const chain_t *c)
{
    void    *bufs[CHAIN_MAX];
    uint64_t caps[CHAIN_MAX], sizes[CHAIN_MAX];
    size_t   loaded = 999;

    for (size_t i = 0; i < c->n; i++) {
        caps[i] = c->sizes[i] + 100;
        bufs[i] = malloc(caps[i]);
        memset(bufs[i], 0xee, caps[i]);
    }
    ASSERT_OK(kvp_get_chain(client, NS, c->keys, bufs, caps, c->n, sizes, &loaded));
    ASSERT_LE(loaded, c->n);
    for (size_t i = 0; i < loaded; i++) {
        ASSERT_EQ(sizes[i], c->sizes[i]);
        ASSERT(memcmp(bufs[i], c->data[i], c->sizes[i]) == 0);
    }
    for (size_t i = 0; i < c->n; i++) {
        free(bufs[i]);
    }
    return loaded;
}

/* Which nodes hold a block of @p c (bit i: pool->nodes[i]), asked directly. */
static unsigned chain_holders(const pool_t *pool, const chain_t *c)
{
    unsigned mask = 0;

    for (int k = 0; k < pool->n; k++) {
        kvp_client_h node;
        if (!pool->alive[k]) {
            continue;
        }
        node = connect_to(pool->nodes[k].address);
        for (size_t i = 0; i < c->n; i++) {
            size_t present = 0;
            ASSERT_OK(kvp_exists(node, NS, &c->keys[i], 1, &present));
            if (present) {
                mask |= 1u << k;
            }
        }
        kvp_client_disconnect(node);
    }
    return mask;
}

static int bits(unsigned mask)
{
    return __builtin_popcount(mask);
}

/* How many nodes store at least one block, asked directly. */
static int nodes_with_blocks(const pool_t *pool)
{
    int with = 0;

    for (int k = 0; k < pool->n; k++) {
        kvp_client_h node = connect_to(pool->nodes[k].address);
        kvp_stats_t  st;
        ASSERT_OK(kvp_stats(node, &st));
        with += st.blocks > 0;
        kvp_client_disconnect(node);
    }
    return with;
}

static uint64_t pool_puts(kvp_client_h client)
{
    kvp_stats_t st;

    ASSERT_OK(kvp_stats(client, &st));
    return st.puts;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                   */
/* ---------------------------------------------------------------------- */

/*
 * Chains put through the coordinator come back byte for byte; each stays
 * on one node, and the chains spread over the nodes; a chain extending a
 * cached one stores only its new blocks, on the node of its prefix.
 */
static void test_cluster_chains(void)
{
    enum { CHAINS = 12 };
    pool_t            pool;
    kvp_client_h      client;
    chain_t           chains[CHAINS], ext, longer;
    unsigned          used = 0;
    uint64_t          puts;
    kvp_index_stats_t ist;
    char              name[32];
    const char       *want = getenv("KVPOOL_TRANSPORT");

    pool_up(&pool, 3, "64MiB", "3000");
    client = connect_to(pool.coord.address);
    wait_joined(client, 3);
    ASSERT(strcmp(kvp_client_transport(client), "none") == 0);
    for (int c = 0; c < CHAINS; c++) {
        snprintf(name, sizeof(name), "chain%d", c);
        chain_make(&chains[c], name, 12, NULL, 0);
        ASSERT_EQ(chain_match(client, &chains[c]), 0);
        ASSERT_EQ(chain_get(client, &chains[c]), 0);
        chain_put(client, &chains[c]);
    }
    if (want != NULL && strcmp(want, "auto") != 0) {
        ASSERT(strcmp(kvp_client_transport(client), want) == 0);
    }
    for (int c = 0; c < CHAINS; c++) {
        unsigned holders;
        wait_match(client, &chains[c], 12);
        ASSERT_EQ(chain_get(client, &chains[c]), 12);
        holders = chain_holders(&pool, &chains[c]);
        ASSERT_EQ(bits(holders), 1); /* a chain stays on one node */
        used |= holders;
    }
    ASSERT(bits(used) >= 2); /* and the chains spread over the nodes */

    /* ext continues chain0: only its 8 new blocks are stored, next to it */
    chain_make(&ext, "ext", 20, &chains[0], 12);
    ASSERT_EQ(chain_match(client, &ext), 12);
    puts = pool_puts(client);
    chain_put(client, &ext);
    ASSERT_EQ(pool_puts(client) - puts, 8);
    wait_match(client, &ext, 20);
    ASSERT_EQ(chain_get(client, &ext), 20);
    ASSERT_EQ(chain_holders(&pool, &ext), chain_holders(&pool, &chains[0]));

    /* putting it again stores nothing; a longer chain loads the cached part */
    puts = pool_puts(client);
    chain_put(client, &ext);
    ASSERT_EQ(pool_puts(client), puts);
    chain_make(&longer, "longer", 26, &ext, 20);
    ASSERT_EQ(chain_match(client, &longer), 20);
    ASSERT_EQ(chain_get(client, &longer), 20);

    ASSERT_OK(kvp_index_stats(client, &ist));
    ASSERT_EQ(ist.nodes, 3);
    ASSERT(ist.blocks >= CHAINS * 12 + 8);
    ASSERT(ist.matches > 0 && ist.matched_blocks <= ist.requested_blocks);
    for (int c = 0; c < CHAINS; c++) {
        chain_free(&chains[c]);
    }
    chain_free(&ext);
    chain_free(&longer);
    kvp_client_disconnect(client);
    pool_down(&pool);
}

/*
 * A killed node: the chains it held load no further than what other nodes
 * hold (a block also held elsewhere is read there), never wrong bytes;
 * the other chains still load whole, and no call waits for a timeout.
 */
static void test_cluster_node_killed(void)
{
    enum { CHAINS = 6 };
    pool_t       pool;
    kvp_client_h client, direct;
    chain_t      split, chains[CHAINS];
    unsigned     holders[CHAINS];
    char         name[32];
    uint64_t     start;

    pool_up(&pool, 3, "64MiB", "1000");
    client = connect_to(pool.coord.address);
    wait_joined(client, 3);

    /* split: blocks 0..5 on node 0, the whole chain on node 1 */
    chain_make(&split, "split", 12, NULL, 0);
    split.n = 6;
    direct  = connect_to(pool.nodes[0].address);
    chain_put(direct, &split);
    kvp_client_disconnect(direct);
    split.n = 12;
    direct  = connect_to(pool.nodes[1].address);
    chain_put(direct, &split);
    kvp_client_disconnect(direct);
    wait_match(client, &split, 12);
    ASSERT_EQ(chain_get(client, &split), 12);

    for (int c = 0; c < CHAINS; c++) {
        snprintf(name, sizeof(name), "kill%d", c);
        chain_make(&chains[c], name, 10, NULL, 0);
        chain_put(client, &chains[c]);
    }
    for (int c = 0; c < CHAINS; c++) {
        wait_match(client, &chains[c], 10);
        holders[c] = chain_holders(&pool, &chains[c]);
        ASSERT_EQ(bits(holders[c]), 1);
    }

    pool_kill(&pool, 1);
    start = now_ms();
    /* the client read split from node 1; now node 0 serves its first half */
    ASSERT_EQ(chain_get(client, &split), 6);
    for (int c = 0; c < CHAINS; c++) {
        ASSERT_EQ(chain_get(client, &chains[c]), holders[c] == 2u ? 0 : 10);
    }
    ASSERT(now_ms() - start < 3000);

    /* once its lease runs out, the node's blocks leave the index */
    wait_match(client, &split, 6);
    for (int c = 0; c < CHAINS; c++) {
        ASSERT_EQ(chain_match(client, &chains[c]), holders[c] == 2u ? 0 : 10);
        chain_free(&chains[c]);
    }
    chain_free(&split);
    kvp_client_disconnect(client);
    pool_down(&pool);
}

/*
 * The block calls in cluster mode: put/get/exists/delete/stats, the
 * batches and their async forms; nodes that join after the client
 * connected are used too.
 */
static void test_cluster_block_calls(void)
{
    enum { N = 24 };
    pool_t        pool;
    kvp_client_h  client;
    kvp_key_t     keys[N];
    uint8_t      *data[N], *got[N];
    uint64_t      sizes[N], caps[N], got_sizes[N];
    kvp_status_t  st[N];
    kvp_stats_t   stats;
    kvp_request_h req;
    size_t        n = 0;

    pool_up(&pool, 1, "64MiB", "3000");
    client = connect_to(pool.coord.address);
    wait_joined(client, 1);
    cluster_node_up(&pool.nodes[1], "64MiB", &pool.coord);
    cluster_node_up(&pool.nodes[2], "64MiB", &pool.coord);
    pool.alive[1] = pool.alive[2] = 1;
    pool.n                        = 3;
    wait_joined(client, 3);

    for (int i = 0; i < N; i++) {
        keys[i]  = key_of("block-%d", i);
        sizes[i] = caps[i] = (uint64_t)(8 + 5 * i) * KiB + 3;
        data[i]            = make_block(sizes[i], 77 + (uint64_t)i);
        got[i]             = malloc(caps[i]);
    }
    ASSERT_OK(
        kvp_put_batch(client, NS, keys, (const void *const *)data, sizes, N - 1, st));
    for (int i = 0; i < N - 1; i++) {
        ASSERT_OK(st[i]);
    }
    ASSERT_OK(kvp_put(client, NS, &keys[N - 1], data[N - 1], sizes[N - 1]));
    for (int i = 0; i < N; i++) {
        for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline; sleep_ms(10)) {
            ASSERT_OK(kvp_exists(client, NS, &keys[i], 1, &n));
            if (n == 1) {
                break;
            }
        }
        ASSERT_EQ(n, 1);
    }
    ASSERT_OK(kvp_stats(client, &stats)); /* the sum over the nodes */
    ASSERT_EQ(stats.blocks, N);
    ASSERT(nodes_with_blocks(&pool) >= 2); /* unrelated blocks spread */

    ASSERT_OK(
        kvp_get_batch(client, NS, keys, (void *const *)got, caps, N, got_sizes, st));
    for (int i = 0; i < N; i++) {
        ASSERT_OK(st[i]);
        ASSERT_EQ(got_sizes[i], sizes[i]);
        ASSERT(memcmp(got[i], data[i], sizes[i]) == 0);
    }
    memset(got[3], 0, caps[3]);
    ASSERT_OK(kvp_get(client, NS, &keys[3], got[3], caps[3], &got_sizes[3]));
    ASSERT(memcmp(got[3], data[3], sizes[3]) == 0);
    ASSERT_STATUS(kvp_get(client, NS, &(kvp_key_t){{1}}, got[0], caps[0], NULL),
                  KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(kvp_get(client, "never-used", &keys[0], got[0], caps[0], NULL),
                  KVP_ERR_NOT_FOUND);

    /* async batches run the same calls on the library's threads */
    ASSERT_OK(kvp_get_batch_async(client, NS, keys, (void *const *)got, caps, N,
                                  got_sizes, st, &req));
    ASSERT_OK(kvp_request_wait(req));
    kvp_request_free(req);
    for (int i = 0; i < N; i++) {
        ASSERT_OK(st[i]);
        ASSERT(memcmp(got[i], data[i], sizes[i]) == 0);
    }

    /* delete on every node; the blocks are then misses */
    ASSERT_OK(kvp_delete(client, NS, keys, 5, &n));
    ASSERT_EQ(n, 5);
    ASSERT_OK(
        kvp_get_batch(client, NS, keys, (void *const *)got, caps, 6, got_sizes, st));
    for (int i = 0; i < 5; i++) {
        ASSERT_STATUS(st[i], KVP_ERR_NOT_FOUND);
    }
    ASSERT_OK(st[5]);
    ASSERT_OK(kvp_stats(client, &stats));
    ASSERT_EQ(stats.blocks, N - 5);
    for (int i = 0; i < N; i++) {
        free(data[i]);
        free(got[i]);
    }
    kvp_client_disconnect(client);
    pool_down(&pool);
}

/* ---------------------------------------------------------------------- */
/* A fake coordinator with malformed replies                               */
/* ---------------------------------------------------------------------- */

/*
 * It lists one node, id 1, at an address where nothing listens (so a
 * client that tried to move a block would get a connection error, not
 * KVP_ERR_PROTOCOL), or with bad_list a node with id 0.  Its Match and
 * PlanPut replies break the contract as the request's namespace says.
 */
static int fake_bad_list;

static int ns_is(const ProtobufCBinaryData *ns, const char *name)
{
    return ns->len == strlen(name) && memcmp(ns->data, name, ns->len) == 0;
}

static void fake_nodes(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg)
{
    Kvpool__NodesReply reply = KVPOOL__NODES_REPLY__INIT;
    Kvpool__NodeInfo   node = KVPOOL__NODE_INFO__INIT, *nodes[] = {&node};

    node.node_id  = fake_bad_list ? 0 : 1;
    node.address  = "127.0.0.1:1";
    reply.n_nodes = 1;
    reply.nodes   = nodes;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

static void fake_match(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__MatchRequest *req   = (const Kvpool__MatchRequest *)msg;
    Kvpool__MatchReply          reply = KVPOOL__MATCH_REPLY__INIT;
    Kvpool__BlockLocations      blocks[KVP_BATCH_MAX + 1], *ptrs[KVP_BATCH_MAX + 1];
    Kvpool__NodePrefix prefix = KVPOOL__NODE_PREFIX__INIT, *prefixes[] = {&prefix};
    uint32_t           loc = KV_LOC(1, 0);
    size_t             n   = req->n_keys;

    if (ns_is(&req->ns, "too-many")) {
        n++;
    } else if (ns_is(&req->ns, "node-zero")) {
        loc = KV_LOC(0, 0);
    } else if (ns_is(&req->ns, "unknown-node")) {
        loc = KV_LOC(77, 0);
    }
    for (size_t i = 0; i < n; i++) {
        kvpool__block_locations__init(&blocks[i]);
        blocks[i].n_locations = 1;
        blocks[i].locations   = &loc;
        ptrs[i]               = &blocks[i];
    }
    reply.matched  = (uint32_t)n;
    reply.n_blocks = ns_is(&req->ns, "lists-short") ? n - 1 : n;
    reply.blocks   = ptrs;
    if (ns_is(&req->ns, "prefix-long")) {
        prefix.node_id = 1;
        prefix.length  = (uint32_t)n + 1;
        reply.n_nodes  = 1;
        reply.nodes    = prefixes;
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

static void fake_plan_put(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                          const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__PlanPutRequest *req   = (const Kvpool__PlanPutRequest *)msg;
    Kvpool__PlanPutReply          reply = KVPOOL__PLAN_PUT_REPLY__INIT;
    Kvpool__NodeInfo              node = KVPOOL__NODE_INFO__INIT, *nodes[] = {&node};
    uint32_t                      targets[KVP_BATCH_MAX + 1], replica      = 1;
    size_t                        n = req->n_keys;

    for (size_t i = 0; i <= n; i++) {
        targets[i] = 1;
    }
    reply.n_targets = n;
    reply.targets   = targets;
    if (ns_is(&req->ns, "targets-short")) {
        reply.n_targets = n - 1;
    } else if (ns_is(&req->ns, "cached-too-many")) {
        reply.cached = (uint32_t)n + 1;
    } else if (ns_is(&req->ns, "target-zero")) {
        targets[n - 1] = 0;
    } else if (ns_is(&req->ns, "target-unknown")) {
        targets[0] = 99;
    } else if (ns_is(&req->ns, "replicas")) {
        reply.n_replica_nodes = 1;
        reply.replica_nodes   = &replica;
    } else if (ns_is(&req->ns, "bad-node")) {
        node.node_id  = 5;
        node.address  = "";
        targets[0]    = 5;
        reply.n_nodes = 1;
        reply.nodes   = nodes;
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

static void fake_unsupported(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                             const void *payload, uint64_t payload_len, void *arg)
{
    kv_rpc_reply_error(call, KVP_ERR_UNSUPPORTED, "not in the fake coordinator");
}

/* Start the fake coordinator in a child process; its address into @p fake. */
static void fake_up(kv_test_node_t *fake, int bad_list)
{
    static const kv_rpc_handler_func_t handlers[KV_COORD_METHOD_COUNT] = {
        [KV_COORD_JOIN] = fake_unsupported,    [KV_COORD_HEARTBEAT] = fake_unsupported,
        [KV_COORD_PUBLISH] = fake_unsupported, [KV_COORD_MATCH] = fake_match,
        [KV_COORD_PLAN_PUT] = fake_plan_put,   [KV_COORD_NODES] = fake_nodes,
        [KV_COORD_STATS] = fake_unsupported,
    };
    Kvpool__HelloReply     hello  = KVPOOL__HELLO_REPLY__INIT;
    kv_rpc_server_params_t params = {.listen      = "127.0.0.1",
                                     .name        = "fake-coord",
                                     .max_payload = 1 << 20,
                                     .service     = &kvpool__coordinator__descriptor,
                                     .handlers    = handlers,
                                     .hello       = &hello};
    kv_rpc_server_t       *server;
    kv_evloop_t           *loop;
    int                    pipefd[2], port = 0;

    ASSERT_EQ(pipe(pipefd), 0);
    fake->pid = fork();
    ASSERT(fake->pid >= 0);
    if (fake->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fake_bad_list     = bad_list;
        hello.coordinator = 1;
        ASSERT_OK(kv_evloop_create(&loop));
        ASSERT_OK(kv_rpc_server_create(loop, &params, &server));
        port = kv_rpc_server_port(server);
        ASSERT_EQ(write(pipefd[1], &port, sizeof(port)), sizeof(port));
        kv_evloop_run(loop);
        _exit(0);
    }
    close(pipefd[1]);
    ASSERT_EQ(read(pipefd[0], &port, sizeof(port)), sizeof(port));
    close(pipefd[0]);
    reap_add(fake->pid);
    snprintf(fake->address, sizeof(fake->address), "127.0.0.1:%d", port);
}

/* Malformed replies fail the call with KVP_ERR_PROTOCOL; nothing moves. */
static void test_cluster_bad_replies(void)
{
    static const char *const bad_match[] = {"too-many", "lists-short", "node-zero",
                                            "prefix-long"};
    static const char *const bad_plan[]  = {"targets-short", "cached-too-many",
                                            "target-zero",   "target-unknown",
                                            "replicas",      "bad-node"};
    kv_test_node_t           fake;
    kvp_client_h             client;
    kvp_key_t                keys[3]   = {key_of("k0"), key_of("k1"), key_of("k2")};
    uint8_t                  block[64] = {1}, buf[3][64];
    const void              *datas[3]  = {block, block, block};
    void                    *bufs[3]   = {buf[0], buf[1], buf[2]};
    uint64_t                 sizes[3]  = {64, 64, 64}, got[3];
    kvp_status_t             st[3];
    size_t                   n;

    fake_up(&fake, 1); /* a node with id 0 in the list: no client */
    ASSERT_STATUS(kvp_client_connect(fake.address, NULL, &client), KVP_ERR_PROTOCOL);
    proc_kill(&fake);

    fake_up(&fake, 0);
    client = connect_to(fake.address);
    for (size_t i = 0; i < sizeof(bad_match) / sizeof(bad_match[0]); i++) {
        ASSERT_STATUS(kvp_match(client, bad_match[i], keys, 3, &n), KVP_ERR_PROTOCOL);
        ASSERT_STATUS(kvp_get_chain(client, bad_match[i], keys, bufs, sizes, 3, got, &n),
                      KVP_ERR_PROTOCOL);
    }
    for (size_t i = 0; i < sizeof(bad_plan) / sizeof(bad_plan[0]); i++) {
        ASSERT_STATUS(kvp_put_chain(client, bad_plan[i], keys, datas, sizes, 3, st),
                      KVP_ERR_PROTOCOL);
    }
    /* a block whose only holder the coordinator does not list is a miss */
    n = 99;
    ASSERT_OK(kvp_get_chain(client, "unknown-node", keys, bufs, sizes, 3, got, &n));
    ASSERT_EQ(n, 0);
    /* a listed node that cannot be reached: a miss for get, an error for put */
    ASSERT_OK(kvp_get_chain(client, "good", keys, bufs, sizes, 3, got, &n));
    ASSERT_EQ(n, 0);
    ASSERT_OK(kvp_put_chain(client, "good", keys, datas, sizes, 3, st));
    ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(st[0]));
    kvp_client_disconnect(client);
    proc_kill(&fake);
}

/* ---------------------------------------------------------------------- */
/* The command line: kvpool replay (live) and kvpool demo                  */
/* ---------------------------------------------------------------------- */

/* Milliseconds between the records of the synthetic trace. */
#define GAP_MS 40

/*
 * Write a synthetic Mooncake-format trace of @p records records, GAP_MS
 * apart: conversations over shared system prompts, each turn's hash_ids
 * its conversation so far plus new blocks.  Returns the block- and
 * token-level hit ratios of replaying it with nothing evicted (a block
 * hits when it and every block before it in its chain were seen before).
 */
static void synthetic_trace(const char *path, int records, double *hit_p, double *token_p)
{
    enum { CONVS = 12, LEN_MAX = 40 };
    uint64_t conv[CONVS][LEN_MAX], next_id = 1000;
    size_t   len[CONVS] = {0};
    uint8_t *seen       = calloc(1 << 16, 1);
    uint64_t asked = 0, hit = 0, tokens = 0, hit_tokens = 0;
    FILE    *f = fopen(path, "w");
    rng_t    rng;
    int      closed;

    ASSERT(f != NULL && seen != NULL);
    rng_seed(&rng, 42);
    for (int r = 0; r < records; r++) {
        int      c = (int)rng_range(&rng, 0, CONVS - 1);
        size_t   add, matched = 0;
        uint64_t input;

        if (len[c] == 0 || len[c] + 3 > LEN_MAX) { /* a new conversation */
            uint64_t prompt = rng_range(&rng, 0, 3);
            len[c]          = 0;
            for (uint64_t i = 0; i <= prompt; i++) {
                conv[c][len[c]++] = 10 * prompt + i; /* shared system prompt */
            }
        }
        add = (size_t)rng_range(&rng, 1, 3);
        for (size_t i = 0; i < add; i++) {
            conv[c][len[c]++] = next_id++;
        }
        input = len[c] * 512 - rng_range(&rng, 0, 511);
        fprintf(f,
                "{\"timestamp\": %d, \"input_length\": %llu, \"output_length\": 10, "
                "\"hash_ids\": [",
                GAP_MS * r, (unsigned long long)input);
        for (size_t i = 0; i < len[c]; i++) {
            fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)conv[c][i]);
        }
        fprintf(f, "]}\n");
        while (matched < len[c] && seen[conv[c][matched]]) {
            matched++;
        }
        for (size_t i = 0; i < len[c]; i++) {
            seen[conv[c][i]] = 1;
        }
        asked += len[c];
        hit += matched;
        tokens += input;
        hit_tokens += matched * 512 < input ? matched * 512 : input;
    }
    closed = fclose(f);
    ASSERT_EQ(closed, 0);
    free(seen);
    *hit_p   = (double)hit / (double)asked;
    *token_p = (double)hit_tokens / (double)tokens;
}

/*
 * Replay @p trace live against a fresh coordinator and 2 nodes (one
 * thread, paced: GAP_MS between records, so each record finds the index
 * after the nodes published the blocks of the ones before).  Checks the
 * summary, and that every block the index matched was loaded (the index's
 * matched blocks = the replay's hits).  @return the summary line.
 */
static char *replay_live(cli_files_t *f, const char *trace)
{
    pool_t            pool;
    kvp_client_h      client;
    kvp_index_stats_t ist;
    char             *last;
    int               rc;
    const char       *replay[] = {"replay",       trace,   "--coord",      NULL,
                                  "--block-size", "16KiB", "--requests",   "150",
                                  "--threads",    "1",     "--time-scale", "1",
                                  "--json",       NULL};

    pool_up(&pool, 2, "128MiB", "3000");
    replay[3] = pool.coord.address;
    client    = connect_to(pool.coord.address);
    wait_joined(client, 2);
    rc = run_cli(replay, f->so, f->se);
    if (rc != 0) {
        char *err = read_last_line(f->se);
        fprintf(stderr, "kvpool replay failed: %s\n", err);
        free(err);
    }
    ASSERT_EQ(rc, 0);
    last = read_last_line(f->so);
    fprintf(stderr, "kvpool replay said: %s\n", last);
    ASSERT(last[0] == '{' && last[strlen(last) - 1] == '}');
    ASSERT_EQ(json_number(last, "requests"), 150);
    ASSERT_EQ(json_number(last, "errors"), 0);
    ASSERT(strstr(last, "\"policy\":\"") != NULL && strstr(last, "\"capacity_blocks\":"));
    ASSERT(json_number(last, "gbps") > 0 && json_number(last, "get_p99_us") > 0);
    ASSERT_OK(kvp_index_stats(client, &ist));
    ASSERT_EQ(ist.matched_blocks, json_number(last, "hit_blocks"));
    kvp_client_disconnect(client);
    pool_down(&pool);
    return last;
}

/*
 * A live replay's hit ratios are what the trace gives with nothing evicted
 * (computed here, and by kvpool replay --offline).  The index learns of
 * blocks asynchronously: a node starved of CPU for longer than GAP_MS may
 * publish a record's blocks after the next record's lookup, which then
 * misses them (its loads all succeed: the check above).  So a replay that
 * falls short is run once more on a fresh pool.
 */
static void test_cluster_replay_live(void)
{
    cli_files_t f;
    char        trace[160], *last = NULL;
    double      hit, token_hit;

    if (getenv("KVPOOL_CLI_BIN") == NULL) {
        KV_SKIP("KVPOOL_CLI_BIN is not set");
    }
    cli_files_make(&f);
    snprintf(trace, sizeof(trace), "%s/trace.jsonl", f.dir);
    synthetic_trace(trace, 150, &hit, &token_hit);
    fprintf(stderr, "offline: hit ratio %.6f, token hit ratio %.6f\n", hit, token_hit);
    for (int attempt = 0; attempt < 2; attempt++) {
        free(last);
        last = replay_live(&f, trace);
        if (fabs(json_number(last, "hit_ratio") - hit) < 1e-5) {
            break;
        }
        fprintf(stderr, "the index lagged behind the replay; once more\n");
    }
    ASSERT(fabs(json_number(last, "hit_ratio") - hit) < 1e-5);
    ASSERT(fabs(json_number(last, "token_hit_ratio") - token_hit) < 1e-5);
    free(last);
    {
        /* kvpool replay --offline, nothing evicted, says the same */
        const char *offline[] = {
            "replay",    trace,        "--offline", "--capacity-blocks",
            "unlimited", "--requests", "150",       "--json",
            NULL};
        ASSERT_EQ(run_cli(offline, f.so, f.se), 0);
    }
    last = read_last_line(f.so);
    ASSERT(fabs(json_number(last, "hit_ratio") - hit) < 1e-5);
    ASSERT(fabs(json_number(last, "token_hit_ratio") - token_hit) < 1e-5);
    free(last);
    unlink(trace);
    cli_files_remove(&f);
}

/* kvpool demo starts a coordinator and nodes and reports both hit ratios. */
static void test_cluster_demo_json(void)
{
    cli_files_t f;
    char       *last;
    const char *demo[] = {"demo",  "--requests",   "300",   "--nodes", "3", "--memory",
                          "64MiB", "--block-size", "16KiB", "--json",  NULL};

    if (getenv("KVPOOL_CLI_BIN") == NULL) {
        KV_SKIP("KVPOOL_CLI_BIN is not set");
    }
    cli_files_make(&f);
    ASSERT_EQ(run_cli(demo, f.so, f.se), 0);
    last = read_last_line(f.so);
    fprintf(stderr, "kvpool demo said: %s\n", last);
    ASSERT_EQ(json_number(last, "requests"), 300);
    ASSERT_EQ(json_number(last, "nodes"), 3);
    ASSERT_EQ(json_number(last, "mismatches"), 0);
    ASSERT_EQ(json_number(last, "errors"), 0);
    ASSERT(json_number(last, "hit_ratio") > 0.2);
    /* the index saw at least what the client loaded */
    ASSERT(json_number(last, "index_hit_ratio") >= json_number(last, "hit_ratio") - 1e-9);
    free(last);
    cli_files_remove(&f);
}

KV_TEST_MAIN(KV_TEST(test_cluster_chains), KV_TEST(test_cluster_node_killed),
             KV_TEST(test_cluster_block_calls), KV_TEST(test_cluster_bad_replies),
             KV_TEST(test_cluster_replay_live), KV_TEST(test_cluster_demo_json))
