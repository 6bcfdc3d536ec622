/*
 * Integration tests of a real kvpool-coord against bad input: unknown
 * namespaces, chains over the limit, events from nodes that are not
 * registered, malformed keys, parents, namespaces and batches, bad Joins
 * and PlanPuts, bad instance joins, reports and leaves (unknown ids,
 * another incarnation, max_instances), bad Schedules, bad handshakes, and
 * random bytes.
 *
 * Every test follows the same pattern:
 *  1. start a coordinator (--token s3cret) and register a fake node with a
 *     raw Join; the fake node publishes a chain of CHAIN blocks;
 *  2. attack over raw frames; each bad request must get a clear error (the
 *     reply's status and a non-empty ErrorReply message) and the
 *     connection stays usable, except after framing errors;
 *  3. the coordinator is alive, Match answers for the chain are unchanged,
 *     the index holds exactly what it held, a new client is served;
 *  4. SIGTERM: the coordinator exits with status 0 (under the sanitizers,
 *     that is also its leak check).
 */
#include <kvpool/kvpool.h>
#include <kvproto/coord_service.h>
#include <kvproto/frame.h>

#include "kvpool.pb-c.h"

#include <coord_rpc.h>
#include <node_proc.h>
#include <raw_frame.h>
#include <test.h>
#include <test_util.h>

#define TOKEN       "s3cret"
#define NS          "good"
#define CHAIN       8
#define INCARNATION 0x1234abcdull
#define FAKE_NODE   "127.0.0.1:1"

typedef struct {
    kv_test_node_t   coord;
    kv_rpc_client_t *rpc;
    uint32_t         node_id; /* the fake node's */
    kvp_key_t        keys[CHAIN];
    uint64_t         entries; /* Stats.entries once the chain is in */
} fixture_t;

/* ---------------------------------------------------------------------- */
/* Requests                                                                */
/* ---------------------------------------------------------------------- */

static ProtobufCBinaryData bin(const void *data, size_t len)
{
    ProtobufCBinaryData b = {len, (uint8_t *)data};
    return b;
}

static ProtobufCBinaryData bin_str(const char *s)
{
    return bin(s, strlen(s));
}

/* A batch of events under construction (fixed room, test-sized). */
enum { EVENTS_MAX = KVP_BATCH_MAX + 8, NS_MAX = 1100 };

typedef struct {
    Kvpool__PublishRequest req;
    Kvpool__BlockEvent     events[EVENTS_MAX];
    Kvpool__BlockEvent    *ptrs[EVENTS_MAX];
    ProtobufCBinaryData    namespaces[NS_MAX];
} batch_t;

static batch_t *batch_new(uint32_t node_id, uint64_t incarnation)
{
    batch_t                     *b    = calloc(1, sizeof(*b));
    const Kvpool__PublishRequest init = KVPOOL__PUBLISH_REQUEST__INIT;

    ASSERT(b != NULL);
    b->req              = init;
    b->req.node_id      = node_id;
    b->req.incarnation  = incarnation;
    b->req.namespaces   = b->namespaces;
    b->req.events       = b->ptrs;
    b->namespaces[0]    = bin_str(NS);
    b->req.n_namespaces = 1;
    return b;
}

/* Append an event; returns it for changes.  Keys are borrowed. */
static Kvpool__BlockEvent *batch_add(batch_t *b, int stored, const kvp_key_t *key,
                                     const kvp_key_t *parent)
{
    Kvpool__BlockEvent *e = &b->events[b->req.n_events];

    ASSERT(b->req.n_events < EVENTS_MAX);
    kvpool__block_event__init(e);
    e->stored = stored;
    e->key    = bin(key->bytes, KVP_KEY_LEN);
    if (parent != NULL) {
        e->parent = bin(parent->bytes, KVP_KEY_LEN);
    }
    b->ptrs[b->req.n_events++] = e;
    return e;
}

/* The fake node's Join request, fields set to good values. */
static void join_request(Kvpool__JoinRequest *req, Kvpool__NodeInfo *info,
                         Kvpool__Tier *tiers)
{
    const Kvpool__JoinRequest rinit = KVPOOL__JOIN_REQUEST__INIT;
    const Kvpool__NodeInfo    ninit = KVPOOL__NODE_INFO__INIT;

    *req                 = rinit;
    *info                = ninit;
    tiers[0]             = KVPOOL__TIER__TIER_HOST;
    info->name           = "fake";
    info->address        = FAKE_NODE;
    info->capacity_bytes = 1ull << 30;
    info->free_bytes     = 1ull << 30;
    info->n_tiers        = 1;
    info->tiers          = tiers;
    req->node            = info;
    req->incarnation     = INCARNATION;
}

/* ---------------------------------------------------------------------- */
/* The fixture                                                             */
/* ---------------------------------------------------------------------- */

/* A coordinator with no node, taking at most @p max_nodes (and 2 instances). */
static void coord_only_up(fixture_t *f, const char *max_nodes)
{
    const char *const extra[] = {"--token",         TOKEN,   "--lease-ms",  "60000",
                                 "--log-level",     "error", "--max-nodes", max_nodes,
                                 "--max-instances", "2",     NULL};

    signal(SIGPIPE, SIG_IGN);
    memset(f, 0, sizeof(*f));
    coord_up(&f->coord, 0, extra);
    f->rpc = coord_connect(&f->coord, TOKEN);
}

static void fixture_up(fixture_t *f)
{
    Kvpool__JoinRequest      join;
    Kvpool__NodeInfo         info;
    Kvpool__Tier             tiers[1];
    Kvpool__JoinReply       *joined;
    Kvpool__PublishReply    *published;
    Kvpool__CoordStatsReply *stats;
    batch_t                 *b;

    coord_only_up(f, "16");
    join_request(&join, &info, tiers);
    ASSERT_OK(kv_rpc_call(f->rpc, KV_COORD_JOIN, &join.base, NULL, 0, COORD_CALL_MS,
                          (ProtobufCMessage **)&joined, NULL));
    f->node_id = joined->node_id;
    coord_free(joined);

    b = batch_new(f->node_id, INCARNATION);
    for (int i = 0; i < CHAIN; i++) {
        f->keys[i] = key_of("chain-%d", i);
        batch_add(b, 1, &f->keys[i], i ? &f->keys[i - 1] : NULL);
    }
    ASSERT_OK(kv_rpc_call(f->rpc, KV_COORD_PUBLISH, &b->req.base, NULL, 0, COORD_CALL_MS,
                          (ProtobufCMessage **)&published, NULL));
    ASSERT_EQ(published->applied, CHAIN);
    coord_free(published);
    free(b);

    stats      = coord_stats(f->rpc);
    f->entries = stats->entries;
    ASSERT_EQ(stats->blocks, CHAIN);
    coord_free(stats);
}

/* The index is as the fixture made it; the coordinator serves anyone. */
static void fixture_check(fixture_t *f)
{
    Kvpool__MatchReply      *reply;
    Kvpool__CoordStatsReply *stats;
    Kvpool__NodesReply      *nodes;
    kv_rpc_client_t         *fresh;

    ASSERT(kv_test_node_alive(&f->coord));
    ASSERT_OK(coord_match(f->rpc, NS, f->keys, CHAIN, &reply));
    ASSERT_EQ(reply->matched, CHAIN);
    for (int i = 0; i < CHAIN; i++) {
        ASSERT_EQ(reply->blocks[i]->n_locations, 1);
        ASSERT_EQ(reply->blocks[i]->locations[0], KV_LOC(f->node_id, 0));
    }
    ASSERT_EQ(reply->n_nodes, 1);
    ASSERT_EQ(reply->nodes[0]->length, CHAIN);
    coord_free(reply);
    stats = coord_stats(f->rpc);
    ASSERT_EQ(stats->nodes, 1);
    ASSERT_EQ(stats->blocks, CHAIN);
    ASSERT_EQ(stats->entries, f->entries);
    coord_free(stats);

    fresh = coord_connect(&f->coord, TOKEN);
    nodes = coord_nodes(fresh);
    ASSERT_EQ(nodes->n_nodes, 1);
    ASSERT_EQ(nodes->nodes[0]->node_id, f->node_id);
    ASSERT(strcmp(nodes->nodes[0]->address, FAKE_NODE) == 0);
    coord_free(nodes);
    kv_rpc_client_destroy(fresh);
}

static void fixture_down(fixture_t *f)
{
    if (f->node_id != 0) {
        fixture_check(f);
    }
    kv_rpc_client_destroy(f->rpc);
    node_down(&f->coord);
}

/* A raw connection past the handshake. */
static int raw_authed(const fixture_t *f)
{
    Kvpool__Hello       hello = KVPOOL__HELLO__INIT;
    Kvpool__HelloReply *reply;
    reply_t             r;
    int                 fd = raw_connect(&f->coord);

    hello.version     = KVP_PROTOCOL_VERSION;
    hello.token       = bin_str(TOKEN);
    hello.client_name = "raw-test";
    ASSERT_OK(call(fd, KV_COORD_HELLO, &hello.base, NULL, 0, &r));
    reply = kvpool__hello_reply__unpack(NULL, r.hdr.msg_len, r.msg);
    ASSERT(reply != NULL);
    ASSERT(reply->coordinator);
    kvpool__hello_reply__free_unpacked(reply, NULL);
    reply_free(&r);
    return fd;
}

/* A call refused with @p want whose message contains @p words (or any). */
static void expect_refused(int fd, uint16_t method, const ProtobufCMessage *msg,
                           kvp_status_t want, const char *words)
{
    Kvpool__ErrorReply *err;
    reply_t             r;

    call(fd, method, msg, NULL, 0, &r);
    expect_error(&r, want);
    err = kvpool__error_reply__unpack(NULL, r.hdr.msg_len, r.msg);
    if (words != NULL && strstr(err->message, words) == NULL) {
        fprintf(stderr, "error message '%s' does not say '%s'\n", err->message, words);
        ASSERT(!"unclear error message");
    }
    kvpool__error_reply__free_unpacked(err, NULL);
    reply_free(&r);
}

/* Match on the raw connection; returns the matched length. */
static uint32_t raw_match(int fd, const char *ns, const kvp_key_t *keys, size_t n)
{
    Kvpool__MatchRequest req  = KVPOOL__MATCH_REQUEST__INIT;
    ProtobufCBinaryData *bins = coord_keys(keys, n);
    Kvpool__MatchReply  *reply;
    uint32_t             matched;
    reply_t              r;

    req.ns     = bin_str(ns);
    req.n_keys = n;
    req.keys   = bins;
    ASSERT_OK(call(fd, KV_COORD_MATCH, &req.base, NULL, 0, &r));
    reply = kvpool__match_reply__unpack(NULL, r.hdr.msg_len, r.msg);
    ASSERT(reply != NULL);
    matched = reply->matched;
    kvpool__match_reply__free_unpacked(reply, NULL);
    reply_free(&r);
    free(bins);
    return matched;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                   */
/* ---------------------------------------------------------------------- */

static void test_unknown_namespace(void)
{
    static const char   nul_ns[] = {'g', 'o', '\0', 'o', 'd'};
    char                long_ns[KVP_NAMESPACE_MAX + 2];
    Kvpool__MatchRequest req = KVPOOL__MATCH_REQUEST__INIT;
    ProtobufCBinaryData *keys;
    fixture_t            f;
    int                  fd;

    fixture_up(&f);
    keys       = coord_keys(f.keys, CHAIN);
    req.keys   = keys;
    req.n_keys = CHAIN;
    fd         = raw_authed(&f);

    req.ns = bin_str("nope");
    expect_refused(fd, KV_COORD_MATCH, &req.base, KVP_ERR_NOT_FOUND, "unknown namespace");
    req.ns = bin("", 0);
    expect_refused(fd, KV_COORD_MATCH, &req.base, KVP_ERR_INVALID_PARAM, "namespace");
    memset(long_ns, 'x', sizeof(long_ns));
    req.ns = bin(long_ns, KVP_NAMESPACE_MAX + 1);
    expect_refused(fd, KV_COORD_MATCH, &req.base, KVP_ERR_INVALID_PARAM, "namespace");
    req.ns = bin(nul_ns, sizeof(nul_ns));
    expect_refused(fd, KV_COORD_MATCH, &req.base, KVP_ERR_INVALID_PARAM, "namespace");
    /* a namespace of exactly the longest length is fine, and unknown */
    req.ns = bin(long_ns, KVP_NAMESPACE_MAX);
    expect_refused(fd, KV_COORD_MATCH, &req.base, KVP_ERR_NOT_FOUND, "unknown namespace");

    /* the same connection still answers */
    ASSERT_EQ(raw_match(fd, NS, f.keys, CHAIN), CHAIN);
    close(fd);
    free(keys);
    fixture_down(&f);
}

static void test_chain_too_long(void)
{
    enum { N = KVP_BATCH_MAX + 1 }; /* the chain limit of Match and PlanPut, plus one */
    Kvpool__MatchRequest   match = KVPOOL__MATCH_REQUEST__INIT;
    Kvpool__PlanPutRequest plan  = KVPOOL__PLAN_PUT_REQUEST__INIT;
    kvp_key_t             *keys  = calloc(N, sizeof(*keys));
    uint64_t              *sizes = calloc(N, sizeof(*sizes));
    ProtobufCBinaryData   *bins;
    fixture_t              f;
    int                    fd;

    ASSERT(keys != NULL && sizes != NULL);
    fixture_up(&f);
    memcpy(keys, f.keys, sizeof(f.keys));
    for (int i = CHAIN; i < N; i++) {
        keys[i] = key_of("tail-%d", i);
    }
    for (int i = 0; i < N; i++) {
        sizes[i] = 4096;
    }
    bins = coord_keys(keys, N);
    fd   = raw_authed(&f);

    match.ns     = bin_str(NS);
    match.keys   = bins;
    match.n_keys = N;
    expect_refused(fd, KV_COORD_MATCH, &match.base, KVP_ERR_INVALID_PARAM, "limit");
    plan.ns      = bin_str(NS);
    plan.keys    = bins;
    plan.n_keys  = N;
    plan.sizes   = sizes;
    plan.n_sizes = N;
    expect_refused(fd, KV_COORD_PLAN_PUT, &plan.base, KVP_ERR_INVALID_PARAM, "limit");

    /* exactly the limit is answered */
    ASSERT_EQ(raw_match(fd, NS, keys, N - 1), CHAIN);
    close(fd);
    free(bins);
    free(sizes);
    free(keys);
    fixture_down(&f);
}

static void test_events_from_unregistered_node(void)
{
    Kvpool__HeartbeatRequest hb = KVPOOL__HEARTBEAT_REQUEST__INIT;
    kvp_key_t                intruder = key_of("intruder");
    fixture_t                f;
    batch_t                 *b;
    int                      fd;

    fixture_up(&f);
    fd = raw_authed(&f);
    {
        const struct {
            uint32_t id;
            uint64_t incarnation;
        } who[] = {{999, INCARNATION},
                   {0, INCARNATION},
                   {f.node_id, INCARNATION + 1},
                   {f.node_id, 0},
                   {KV_COORD_NODE_MAX + 7, INCARNATION}};

        for (size_t i = 0; i < sizeof(who) / sizeof(who[0]); i++) {
            b = batch_new(who[i].id, who[i].incarnation);
            batch_add(b, 1, &intruder, NULL);
            batch_add(b, 0, &f.keys[CHAIN - 1], NULL);
            expect_refused(fd, KV_COORD_PUBLISH, &b->req.base, KVP_ERR_NOT_FOUND,
                           "unknown node");
            free(b);
            hb.node_id     = who[i].id;
            hb.incarnation = who[i].incarnation;
            expect_refused(fd, KV_COORD_HEARTBEAT, &hb.base, KVP_ERR_NOT_FOUND,
                           "unknown node");
        }
    }
    ASSERT_EQ(raw_match(fd, NS, &intruder, 1), 0);
    close(fd);
    fixture_down(&f);
}

/* A heartbeat's counters with a tier that is unknown, repeated or one too
 * many: refused whole; the node keeps its lease and its blocks. */
static void test_bad_heartbeat_stats(void)
{
    Kvpool__HeartbeatRequest hb    = KVPOOL__HEARTBEAT_REQUEST__INIT;
    Kvpool__StatsReply       stats = KVPOOL__STATS_REPLY__INIT;
    Kvpool__TierStats        tiers[4];
    Kvpool__TierStats       *ptrs[4];
    const struct {
        int tier[4];
        int n;
    } bad[] = {{{7}, 1}, {{-1}, 1}, {{0, 0}, 2}, {{0, 1, 2, 1}, 4}};
    fixture_t f;
    reply_t   r;
    int       fd;

    fixture_up(&f);
    fd             = raw_authed(&f);
    hb.node_id     = f.node_id;
    hb.incarnation = INCARNATION;
    hb.stats       = &stats;
    stats.tiers    = ptrs;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int t = 0; t < bad[i].n; t++) {
            kvpool__tier_stats__init(&tiers[t]);
            tiers[t].tier = (Kvpool__Tier)bad[i].tier[t];
            ptrs[t]       = &tiers[t];
        }
        stats.n_tiers = (size_t)bad[i].n;
        expect_refused(fd, KV_COORD_HEARTBEAT, &hb.base, KVP_ERR_INVALID_PARAM, "tiers");
    }
    stats.n_tiers = 1;
    tiers[0].tier = KVPOOL__TIER__TIER_HOST;
    ASSERT_OK(call(fd, KV_COORD_HEARTBEAT, &hb.base, NULL, 0, &r));
    reply_free(&r);
    close(fd);
    fixture_down(&f); /* the node and its chain are still there */
}

/* Ways to spoil the last event (or the batch) of a good batch. */
enum {
    BAD_KEY_SHORT, BAD_KEY_LONG, BAD_KEY_EMPTY, BAD_PARENT_SHORT, BAD_PARENT_SELF,
    BAD_PARENT_ON_REMOVE, BAD_NS_INDEX, BAD_TIER, BAD_NS_EMPTY, BAD_NS_NUL, BAD_NS_LONG,
    BAD_TOO_MANY_EVENTS, BAD_TOO_MANY_NAMESPACES, BAD_COUNT
};

/* What each refusal's message names. */
static const char *const bad_words[BAD_COUNT] = {
    [BAD_KEY_SHORT] = "block key",       [BAD_KEY_LONG] = "block key",
    [BAD_KEY_EMPTY] = "block key",       [BAD_PARENT_SHORT] = "parent",
    [BAD_PARENT_SELF] = "own parent",    [BAD_PARENT_ON_REMOVE] = "parent",
    [BAD_NS_INDEX] = "names namespace",  [BAD_TIER] = "tier",
    [BAD_NS_EMPTY] = "namespace 1",      [BAD_NS_NUL] = "namespace 1",
    [BAD_NS_LONG] = "namespace 1",       [BAD_TOO_MANY_EVENTS] = "events",
    [BAD_TOO_MANY_NAMESPACES] = "namespaces",
};

static void test_malformed_events(void)
{
    static const char nul_ns[] = {'a', '\0', 'b'};
    char              long_ns[KVP_NAMESPACE_MAX + 1];
    kvp_key_t         fresh = key_of("fresh"), other = key_of("other");
    fixture_t         f;
    int               fd;

    memset(long_ns, 'n', sizeof(long_ns));
    fixture_up(&f);
    fd = raw_authed(&f);
    for (int bad = 0; bad < BAD_COUNT; bad++) {
        batch_t            *b = batch_new(f.node_id, INCARNATION);
        Kvpool__BlockEvent *e;

        /* good events first: none of them may be applied */
        batch_add(b, 1, &fresh, &f.keys[CHAIN - 1]);
        batch_add(b, 0, &f.keys[CHAIN - 1], NULL);
        b->namespaces[1]    = bin_str("second");
        b->req.n_namespaces = 2;
        e                   = batch_add(b, 1, &other, NULL);
        e->ns               = 1;
        switch (bad) {
        case BAD_KEY_SHORT:
            e->key.len = KVP_KEY_LEN - 1;
            break;
        case BAD_KEY_LONG:
            e->key = bin(long_ns, KVP_KEY_LEN + 1);
            break;
        case BAD_KEY_EMPTY:
            e->key.len = 0;
            break;
        case BAD_PARENT_SHORT:
            e->parent = bin(f.keys[0].bytes, 8);
            break;
        case BAD_PARENT_SELF:
            e->parent = bin(other.bytes, KVP_KEY_LEN);
            break;
        case BAD_PARENT_ON_REMOVE:
            e->stored = 0;
            e->parent = bin(f.keys[0].bytes, KVP_KEY_LEN);
            break;
        case BAD_NS_INDEX:
            e->ns = 2;
            break;
        case BAD_TIER:
            e->tier = (Kvpool__Tier)7;
            break;
        case BAD_NS_EMPTY:
            b->namespaces[1] = bin("", 0);
            break;
        case BAD_NS_NUL:
            b->namespaces[1] = bin(nul_ns, sizeof(nul_ns));
            break;
        case BAD_NS_LONG:
            b->namespaces[1] = bin(long_ns, sizeof(long_ns));
            break;
        case BAD_TOO_MANY_EVENTS:
            while (b->req.n_events <= KVP_BATCH_MAX) {
                batch_add(b, 1, &other, NULL);
            }
            break;
        default: /* BAD_TOO_MANY_NAMESPACES */
            for (int i = 2; i < NS_MAX; i++) {
                b->namespaces[i] = bin_str("many");
            }
            b->req.n_namespaces = NS_MAX;
            break;
        }
        expect_refused(fd, KV_COORD_PUBLISH, &b->req.base, KVP_ERR_INVALID_PARAM,
                       bad_words[bad]);
        free(b);
        ASSERT_EQ(raw_match(fd, NS, &fresh, 1), 0);
        ASSERT_EQ(raw_match(fd, NS, f.keys, CHAIN), CHAIN);
    }
    /* "second" was never interned: nothing of a refused batch stays */
    ASSERT_STATUS(coord_match(f.rpc, "second", &other, 1, NULL), KVP_ERR_NOT_FOUND);
    close(fd);
    fixture_down(&f);
}

static void test_malformed_match_plan_join(void)
{
    fixture_t f;
    int       fd;

    fixture_up(&f);
    fd = raw_authed(&f);
    {
        /* a Match whose middle key is 15 bytes */
        Kvpool__MatchRequest req  = KVPOOL__MATCH_REQUEST__INIT;
        ProtobufCBinaryData *bins = coord_keys(f.keys, CHAIN);

        bins[3].len = KVP_KEY_LEN - 1;
        req.ns      = bin_str(NS);
        req.keys    = bins;
        req.n_keys  = CHAIN;
        expect_refused(fd, KV_COORD_MATCH, &req.base, KVP_ERR_INVALID_PARAM, "key 3");
        free(bins);
    }
    {
        /* PlanPuts with bad sizes, counts or replicas */
        Kvpool__PlanPutRequest req   = KVPOOL__PLAN_PUT_REQUEST__INIT;
        ProtobufCBinaryData   *bins  = coord_keys(f.keys, CHAIN);
        uint64_t               sizes[CHAIN];

        for (int i = 0; i < CHAIN; i++) {
            sizes[i] = 4096;
        }
        req.ns      = bin_str(NS);
        req.keys    = bins;
        req.n_keys  = CHAIN;
        req.sizes   = sizes;
        req.n_sizes = CHAIN - 1;
        expect_refused(fd, KV_COORD_PLAN_PUT, &req.base, KVP_ERR_INVALID_PARAM, "size");
        req.n_sizes = CHAIN;
        sizes[2]    = 0;
        expect_refused(fd, KV_COORD_PLAN_PUT, &req.base, KVP_ERR_INVALID_PARAM, "size");
        sizes[2] = KVP_BLOCK_MAX + 1;
        expect_refused(fd, KV_COORD_PLAN_PUT, &req.base, KVP_ERR_INVALID_PARAM, "size");
        sizes[2]     = 4096;
        req.replicas = 9;
        expect_refused(fd, KV_COORD_PLAN_PUT, &req.base, KVP_ERR_INVALID_PARAM,
                       "replicas");
        req.replicas = 1;
        req.n_keys   = req.n_sizes = 0;
        expect_refused(fd, KV_COORD_PLAN_PUT, &req.base, KVP_ERR_INVALID_PARAM, "size");
        free(bins);
    }
    {
        /* Joins with one bad field each */
        static const char *const addresses[] = {"nohost", "127.0.0.1:", "127.0.0.1:0",
                                                "127.0.0.1:65536", "127.0.0.1:80x",
                                                "bad host:80", ":"};
        Kvpool__JoinRequest      req;
        Kvpool__NodeInfo         info;
        Kvpool__Tier             tiers[4];
        char                     big[KV_FRAME_MSG_MAX / 4];

        memset(big, 'a', sizeof(big));
        big[sizeof(big) - 1] = '\0';
        join_request(&req, &info, tiers);
        req.node = NULL;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "node");
        join_request(&req, &info, tiers);
        req.incarnation = 0;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "incarnation");
        for (size_t i = 0; i < sizeof(addresses) / sizeof(addresses[0]); i++) {
            join_request(&req, &info, tiers);
            info.address = (char *)addresses[i];
            expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                           "address");
        }
        join_request(&req, &info, tiers);
        info.address = big;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "address");
        join_request(&req, &info, tiers);
        info.name = big;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "name");
        join_request(&req, &info, tiers);
        info.capacity_bytes = 0;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "capacity");
        join_request(&req, &info, tiers);
        tiers[0] = (Kvpool__Tier)9;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "tier");
        join_request(&req, &info, tiers);
        info.n_tiers = 4;
        tiers[1] = tiers[2] = tiers[3] = KVPOOL__TIER__TIER_HOST;
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "tiers");
        join_request(&req, &info, tiers);
        info.data_plane = bin(big, 4097);
        expect_refused(fd, KV_COORD_JOIN, &req.base, KVP_ERR_INVALID_PARAM, "data-plane");
    }
    ASSERT_EQ(raw_match(fd, NS, f.keys, CHAIN), CHAIN);
    close(fd);
    fixture_down(&f);
}

static void test_random_bytes(void)
{
    fixture_t f;
    rng_t     rng;
    uint8_t   junk[4096];
    reply_t   r;
    int       fd;

    fixture_up(&f);
    rng_seed(&rng, 7);
    /* garbage instead of frames: an error reply, then the close */
    for (int round = 0; round < 20; round++) {
        size_t len = (size_t)rng_range(&rng, KV_FRAME_HEADER_LEN, sizeof(junk));

        fill_random(junk, len, rng_next(&rng));
        fd = round % 2 ? raw_authed(&f) : raw_connect(&f.coord);
        if (send_try(fd, junk, len) == 0 && read_reply(fd, &r) == 0) {
            ASSERT(r.hdr.status < 0);
            expect_error(&r, (kvp_status_t)r.hdr.status);
            reply_free(&r);
        }
        expect_closed(fd);
        close(fd);
    }
    /* well-framed requests of every method with random messages: each gets
     * a reply (often an error with a reason), the connection stays usable */
    fd = raw_authed(&f);
    for (int round = 0; round < 300; round++) {
        uint16_t method = (uint16_t)rng_range(&rng, 1, KV_COORD_METHOD_COUNT);
        size_t   len    = (size_t)rng_range(&rng, 0, 256);
        uint64_t id     = next_id++;

        fill_random(junk, len, rng_next(&rng));
        send_frame_bytes(fd, method, id, junk, len, NULL, 0);
        ASSERT_EQ(read_reply(fd, &r), 0);
        ASSERT_EQ(r.hdr.id, id);
        if (r.hdr.status < 0) {
            expect_error(&r, (kvp_status_t)r.hdr.status);
        }
        reply_free(&r);
    }
    ASSERT_EQ(raw_match(fd, NS, f.keys, CHAIN), CHAIN);
    close(fd);
    fixture_down(&f);
}

static void test_handshake(void)
{
    Kvpool__Hello        hello = KVPOOL__HELLO__INIT;
    Kvpool__NodesRequest nodes = KVPOOL__NODES_REQUEST__INIT;
    fixture_t            f;
    int                  fd;

    fixture_up(&f);
    hello.version = KVP_PROTOCOL_VERSION;
    hello.token   = bin_str("wrong");
    fd            = raw_connect(&f.coord);
    expect_refused(fd, KV_COORD_HELLO, &hello.base, KVP_ERR_AUTH, "token");
    expect_closed(fd);
    close(fd);

    hello.version = KVP_PROTOCOL_VERSION + 1;
    hello.token   = bin_str(TOKEN);
    fd            = raw_connect(&f.coord);
    expect_refused(fd, KV_COORD_HELLO, &hello.base, KVP_ERR_VERSION, "kvpool-coord speaks");
    expect_closed(fd);
    close(fd);

    /* anything before the Hello */
    fd = raw_connect(&f.coord);
    send_frame(fd, KV_COORD_NODES, 77, &nodes.base, NULL, 0);
    expect_frame_error(fd, KVP_ERR_AUTH, 77, 0);
    fixture_down(&f);
}

/* Join @p address with @p incarnation; returns the id, or the error. */
static int64_t join_as(kv_rpc_client_t *rpc, const char *address, uint64_t incarnation)
{
    Kvpool__JoinRequest req;
    Kvpool__NodeInfo    info;
    Kvpool__Tier        tiers[1];
    Kvpool__JoinReply  *reply;
    kvp_status_t        status;
    int64_t             id;

    join_request(&req, &info, tiers);
    info.address    = (char *)address;
    req.incarnation = incarnation;
    status = kv_rpc_call(rpc, KV_COORD_JOIN, &req.base, NULL, 0, COORD_CALL_MS,
                         (ProtobufCMessage **)&reply, NULL);
    if (status != KVP_OK) {
        return status;
    }
    id = reply->node_id;
    coord_free(reply);
    return id;
}

/* The address the coordinator lists for node @p id ("" if none). */
static void listed_address(kv_rpc_client_t *rpc, int64_t id, char *out, size_t len)
{
    Kvpool__NodesReply *nodes = coord_nodes(rpc);

    out[0] = '\0';
    for (size_t i = 0; i < nodes->n_nodes; i++) {
        if (nodes->nodes[i]->node_id == id) {
            snprintf(out, len, "%s", nodes->nodes[i]->address);
        }
    }
    coord_free(nodes);
}

static void test_join_rules(void)
{
    fixture_t f;
    int64_t   a, b, c;
    char      address[300];

    coord_only_up(&f, "2");
    /* a wildcard host becomes the address the Join came from */
    a = join_as(f.rpc, "0.0.0.0:7070", 5);
    ASSERT(a > 0);
    listed_address(f.rpc, a, address, sizeof(address));
    ASSERT(strcmp(address, "127.0.0.1:7070") == 0);
    b = join_as(f.rpc, "[::]:7071", 6);
    ASSERT(b > 0);
    listed_address(f.rpc, b, address, sizeof(address));
    ASSERT(strcmp(address, "127.0.0.1:7071") == 0);

    /* max_nodes = 2: a third node is refused, a known address is not */
    ASSERT_STATUS(join_as(f.rpc, "127.0.0.1:7072", 7), KVP_ERR_NO_SPACE);
    /* the same process re-joining keeps its id; a new one replaces it */
    ASSERT_EQ(join_as(f.rpc, "127.0.0.1:7070", 5), a);
    c = join_as(f.rpc, "127.0.0.1:7070", 8);
    ASSERT(c > 0 && c != a);
    ASSERT_EQ(coord_wait_nodes(f.rpc, 2, 0), 0);
    listed_address(f.rpc, a, address, sizeof(address));
    ASSERT(address[0] == '\0');
    fixture_down(&f);
}

static void test_no_node_registered(void)
{
    fixture_t            f;
    Kvpool__PlanPutRequest req  = KVPOOL__PLAN_PUT_REQUEST__INIT;
    kvp_key_t            key  = key_of("lonely");
    uint64_t             size = 4096;
    ProtobufCBinaryData  kbin = bin(key.bytes, KVP_KEY_LEN);
    Kvpool__NodesReply  *nodes;
    int                  fd;

    coord_only_up(&f, "16");
    fd          = raw_authed(&f);
    req.ns      = bin_str(NS);
    req.keys    = &kbin;
    req.n_keys  = 1;
    req.sizes   = &size;
    req.n_sizes = 1;
    expect_refused(fd, KV_COORD_PLAN_PUT, &req.base, KVP_ERR_NO_SPACE, "no pool node");
    nodes = coord_nodes(f.rpc);
    ASSERT_EQ(nodes->n_nodes, 0);
    coord_free(nodes);
    ASSERT_STATUS(coord_match(f.rpc, NS, &key, 1, NULL), KVP_ERR_NOT_FOUND);
    close(fd);
    fixture_down(&f);
}

/* A raw InstanceJoin; returns the id. */
static uint32_t raw_instance_join(int fd, const char *name, uint32_t roles,
                                  const char *node, uint32_t *node_id_p)
{
    Kvpool__InstanceJoinRequest req = KVPOOL__INSTANCE_JOIN_REQUEST__INIT;
    Kvpool__InstanceJoinReply  *reply;
    uint32_t                    id;
    reply_t                     r;

    req.name            = (char *)name;
    req.roles           = roles;
    req.capacity_blocks = 100;
    req.node            = (char *)node;
    req.incarnation     = INCARNATION;
    ASSERT_OK(call(fd, KV_COORD_INSTANCE_JOIN, &req.base, NULL, 0, &r));
    reply = kvpool__instance_join_reply__unpack(NULL, r.hdr.msg_len, r.msg);
    ASSERT(reply != NULL);
    ASSERT(reply->instance_id != 0);
    ASSERT_EQ(reply->lease_ms, 60000);
    id         = reply->instance_id;
    *node_id_p = reply->node_id;
    kvpool__instance_join_reply__free_unpacked(reply, NULL);
    reply_free(&r);
    return id;
}

/* A raw Schedule of the fixture's chain that must succeed. */
static Kvpool__ScheduleReply *raw_schedule(int fd, const char *ns, const kvp_key_t *keys,
                                           size_t n)
{
    Kvpool__ScheduleRequest req  = KVPOOL__SCHEDULE_REQUEST__INIT;
    ProtobufCBinaryData    *bins = coord_keys(keys, n);
    Kvpool__ScheduleReply  *reply;
    reply_t                 r;

    req.ns            = bin_str(ns);
    req.keys          = bins;
    req.n_keys        = n;
    req.prompt_tokens = 1u << 20;
    req.output_tokens = 100;
    ASSERT_OK(call(fd, KV_COORD_SCHEDULE, &req.base, NULL, 0, &r));
    reply = kvpool__schedule_reply__unpack(NULL, r.hdr.msg_len, r.msg);
    ASSERT(reply != NULL);
    reply_free(&r);
    free(bins);
    return reply;
}

static uint64_t stats_instances(fixture_t *f, uint64_t *decisions_p)
{
    Kvpool__CoordStatsReply *stats = coord_stats(f->rpc);
    uint64_t                 n     = stats->instances;

    *decisions_p = 0;
    for (size_t i = 0; i < stats->n_decisions; i++) {
        *decisions_p += stats->decisions[i];
    }
    coord_free(stats);
    return n;
}

/*
 * Instances and Schedule over raw frames: bad joins, reports and leaves
 * for unknown ids or another incarnation, bad Schedules; none changes the
 * registered instances or counts a decision.
 */
static void test_instances_and_schedule(void)
{
    enum { N = KVP_BATCH_MAX + 1 };
    fixture_t              f;
    kvp_key_t             *long_chain = calloc(N, sizeof(*long_chain));
    char                   long_name[KVP_INSTANCE_NAME_MAX + 2];
    char                   long_ns[KVP_NAMESPACE_MAX + 2];
    Kvpool__ScheduleReply *plan;
    uint32_t               pre, dec, pre_node, dec_node;
    uint64_t               decisions, before;
    int                    fd;

    ASSERT(long_chain != NULL);
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    memset(long_ns, 's', sizeof(long_ns) - 1);
    long_ns[sizeof(long_ns) - 1] = '\0';
    fixture_up(&f);
    fd = raw_authed(&f);
    {
        /* Schedule with no instance, then bad joins */
        Kvpool__ScheduleRequest     sreq = KVPOOL__SCHEDULE_REQUEST__INIT;
        Kvpool__InstanceJoinRequest req  = KVPOOL__INSTANCE_JOIN_REQUEST__INIT;
        ProtobufCBinaryData        *bins = coord_keys(f.keys, CHAIN);

        sreq.ns            = bin_str(NS);
        sreq.keys          = bins;
        sreq.n_keys        = CHAIN;
        sreq.prompt_tokens = 1u << 20;
        expect_refused(fd, KV_COORD_SCHEDULE, &sreq.base, KVP_ERR_NO_SPACE,
                       "no prefill instance registered");
        free(bins);

        req.name            = "x";
        req.capacity_blocks = 10;
        req.incarnation     = INCARNATION;
        req.roles           = 0;
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                       "roles");
        req.roles = 4;
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                       "roles");
        req.roles           = 3;
        req.capacity_blocks = 0;
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                       "capacity_blocks");
        req.capacity_blocks = 10;
        req.name            = long_name;
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                       "instance name");
        req.name = "";
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                       "instance name");
        req.name = "x";
        req.node = "127.0.0.1:1\n";
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_INVALID_PARAM,
                       "node address");
    }
    ASSERT_EQ(stats_instances(&f, &decisions), 0);

    /* prefill co-located with the fake node, decode with an unknown address */
    pre = raw_instance_join(fd, "pre", 1, FAKE_NODE, &pre_node);
    ASSERT_EQ(pre_node, f.node_id);
    dec = raw_instance_join(fd, "dec", 2, "127.0.0.1:2", &dec_node);
    ASSERT_EQ(dec_node, 0);
    ASSERT(pre != dec);
    {
        /* max_instances (2) reached */
        Kvpool__InstanceJoinRequest req = KVPOOL__INSTANCE_JOIN_REQUEST__INIT;

        req.name            = "third";
        req.roles           = 3;
        req.capacity_blocks = 10;
        req.incarnation     = INCARNATION;
        expect_refused(fd, KV_COORD_INSTANCE_JOIN, &req.base, KVP_ERR_NO_SPACE,
                       "max_instances");
    }
    {
        /* reports and leaves for unknown ids or another incarnation */
        static const uint32_t         ids[] = {0, 3, 1000, 0xffffffffu};
        Kvpool__InstanceReportRequest rep   = KVPOOL__INSTANCE_REPORT_REQUEST__INIT;
        Kvpool__InstanceLeaveRequest  lv    = KVPOOL__INSTANCE_LEAVE_REQUEST__INIT;

        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
            rep.instance_id = ids[i];
            rep.incarnation = INCARNATION;
            expect_refused(fd, KV_COORD_INSTANCE_REPORT, &rep.base, KVP_ERR_NOT_FOUND,
                           "join again");
            lv.instance_id = ids[i];
            lv.incarnation = INCARNATION;
            expect_refused(fd, KV_COORD_INSTANCE_LEAVE, &lv.base, KVP_ERR_NOT_FOUND,
                           "not registered");
        }
        rep.instance_id           = pre;
        rep.incarnation           = INCARNATION + 1;
        rep.queued_prefill_tokens = 1u << 30;
        expect_refused(fd, KV_COORD_INSTANCE_REPORT, &rep.base, KVP_ERR_NOT_FOUND,
                       "join again");
        lv.instance_id = dec;
        lv.incarnation = INCARNATION + 1;
        expect_refused(fd, KV_COORD_INSTANCE_LEAVE, &lv.base, KVP_ERR_NOT_FOUND,
                       "not registered");
    }
    ASSERT_EQ(stats_instances(&f, &decisions), 2);
    ASSERT_EQ(decisions, 0);
    {
        /* bad Schedules */
        Kvpool__ScheduleRequest req  = KVPOOL__SCHEDULE_REQUEST__INIT;
        ProtobufCBinaryData    *bins = coord_keys(f.keys, CHAIN);
        ProtobufCBinaryData    *lbins;

        for (int i = 0; i < N; i++) {
            long_chain[i] = key_of("long-%d", i);
        }
        lbins             = coord_keys(long_chain, N);
        req.ns            = bin_str(NS);
        req.keys          = bins;
        req.n_keys        = CHAIN;
        req.prompt_tokens = 0;
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "prompt_tokens");
        req.prompt_tokens = UINT64_MAX;
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "prompt_tokens");
        req.prompt_tokens = 1000;
        req.output_tokens = UINT64_MAX;
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "output_tokens");
        req.output_tokens = 10;
        req.prompt_tokens = 1; /* 8 keys for one token */
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "keys for a prompt of 1 tokens");
        req.prompt_tokens = 1u << 20;
        req.ns            = bin_str("");
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "namespace");
        req.ns = bin_str(long_ns);
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "namespace");
        req.ns = bin("go\0od", 5);
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM,
                       "namespace");
        req.ns      = bin_str(NS);
        bins[5].len = KVP_KEY_LEN + 1;
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM, "key 5");
        req.keys   = lbins;
        req.n_keys = N;
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_INVALID_PARAM, "limit");
        free(lbins);
        free(bins);
    }
    ASSERT_EQ(stats_instances(&f, &decisions), 2);
    ASSERT_EQ(decisions, 0);

    /* the good Schedule: the cached chain, on the prefill instance's node */
    plan = raw_schedule(fd, NS, f.keys, CHAIN);
    ASSERT_EQ(plan->prefill_id, pre);
    ASSERT(strcmp(plan->prefill_name, "pre") == 0);
    ASSERT_EQ(plan->decode_id, dec);
    ASSERT(strcmp(plan->decode_name, "dec") == 0);
    ASSERT_EQ(plan->cached, CHAIN);
    ASSERT_EQ(plan->local, CHAIN);
    ASSERT_EQ(plan->load, CHAIN); /* all local: loading beats recomputing */
    ASSERT_EQ(plan->n_runs, 1);
    ASSERT_EQ(plan->runs[0]->first, 0);
    ASSERT_EQ(plan->runs[0]->count, CHAIN);
    ASSERT_EQ(plan->runs[0]->node_id, f.node_id);
    ASSERT_EQ(plan->n_nodes, 1);
    ASSERT_EQ(plan->nodes[0]->node_id, f.node_id);
    ASSERT(strcmp(plan->nodes[0]->address, FAKE_NODE) == 0);
    kvpool__schedule_reply__free_unpacked(plan, NULL);
    /* a namespace never published: legitimate, nothing cached */
    plan = raw_schedule(fd, "never-published", f.keys, CHAIN);
    ASSERT_EQ(plan->cached, 0);
    ASSERT_EQ(plan->load, 0);
    ASSERT_EQ(plan->n_runs, 0);
    kvpool__schedule_reply__free_unpacked(plan, NULL);
    ASSERT_EQ(stats_instances(&f, &decisions), 2);
    ASSERT_EQ(decisions, 2);

    {
        /* the decode instance leaves (right incarnation): no decision */
        Kvpool__InstanceLeaveRequest lv   = KVPOOL__INSTANCE_LEAVE_REQUEST__INIT;
        Kvpool__ScheduleRequest      req  = KVPOOL__SCHEDULE_REQUEST__INIT;
        ProtobufCBinaryData         *bins = coord_keys(f.keys, CHAIN);
        reply_t                      r;

        lv.instance_id = dec;
        lv.incarnation = INCARNATION;
        ASSERT_OK(call(fd, KV_COORD_INSTANCE_LEAVE, &lv.base, NULL, 0, &r));
        reply_free(&r);
        req.ns            = bin_str(NS);
        req.keys          = bins;
        req.n_keys        = CHAIN;
        req.prompt_tokens = 1u << 20;
        expect_refused(fd, KV_COORD_SCHEDULE, &req.base, KVP_ERR_NO_SPACE,
                       "no decode instance registered");
        expect_refused(fd, KV_COORD_INSTANCE_LEAVE, &lv.base, KVP_ERR_NOT_FOUND,
                       "not registered");
        free(bins);
    }
    before = decisions;
    ASSERT_EQ(stats_instances(&f, &decisions), 1);
    ASSERT_EQ(decisions, before);
    ASSERT_EQ(raw_match(fd, NS, f.keys, CHAIN), CHAIN);
    close(fd);
    free(long_chain);
    fixture_down(&f);
}

KV_TEST_MAIN(KV_TEST(test_unknown_namespace), KV_TEST(test_chain_too_long),
             KV_TEST(test_events_from_unregistered_node), KV_TEST(test_malformed_events),
             KV_TEST(test_malformed_match_plan_join), KV_TEST(test_random_bytes),
             KV_TEST(test_handshake), KV_TEST(test_join_rules),
             KV_TEST(test_no_node_registered), KV_TEST(test_instances_and_schedule),
             KV_TEST(test_bad_heartbeat_stats))
