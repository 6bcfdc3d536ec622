/**
 * @file coord_rpc.h
 * @brief Calls to a real kvpool-coord through a raw kv_rpc_client, for the
 * coordinator's integration tests: connect, Nodes, Match, PlanPut, Stats,
 * and polling until the asynchronous index reaches an expected state.
 * Include it after "test.h" and "test_util.h".
 *
 * Replies are protobuf-c messages the caller frees with
 * protobuf_c_message_free_unpacked(&reply->base, NULL).
 */
#ifndef KV_TEST_COORD_RPC_H
#define KV_TEST_COORD_RPC_H

#include <kvproto/coord_service.h>
#include <kvproto/rpc_client.h>

#include "kvpool.pb-c.h"

#include <test.h>
#include <test_util.h>

/** Deadline of each call. */
#define COORD_CALL_MS 5000

/** Connect to @p coord as a client, presenting @p token (may be NULL). */
static inline kv_rpc_client_t *coord_connect(const kv_test_node_t *coord,
                                             const char *token)
{
    kv_rpc_client_params_t params = {0};
    kv_rpc_client_t       *client = NULL;

    params.address    = coord->address;
    params.token      = token;
    params.name       = "coord-test";
    params.timeout_ms = COORD_CALL_MS;
    params.service    = &kvpool__coordinator__descriptor;
    ASSERT_OK(kv_rpc_client_create(&params, &client));
    ASSERT(kv_rpc_client_hello(client)->coordinator);
    return client;
}

/** Free a reply (NULL accepted). */
static inline void coord_free(void *reply)
{
    if (reply != NULL) {
        protobuf_c_message_free_unpacked(reply, NULL);
    }
}

/** @return the Nodes reply. */
static inline Kvpool__NodesReply *coord_nodes(kv_rpc_client_t *client)
{
    Kvpool__NodesRequest req = KVPOOL__NODES_REQUEST__INIT;
    Kvpool__NodesReply  *reply;

    ASSERT_OK(kv_rpc_call(client, KV_COORD_NODES, &req.base, NULL, 0, COORD_CALL_MS,
                          (ProtobufCMessage **)&reply, NULL));
    return reply;
}

/** @return the Stats reply. */
static inline Kvpool__CoordStatsReply *coord_stats(kv_rpc_client_t *client)
{
    Kvpool__CoordStatsRequest req = KVPOOL__COORD_STATS_REQUEST__INIT;
    Kvpool__CoordStatsReply  *reply;

    ASSERT_OK(kv_rpc_call(client, KV_COORD_STATS, &req.base, NULL, 0, COORD_CALL_MS,
                          (ProtobufCMessage **)&reply, NULL));
    return reply;
}

/** A chain of @p n keys as the wire carries it (pointing into @p keys). */
static inline ProtobufCBinaryData *coord_keys(const kvp_key_t *keys, size_t n)
{
    ProtobufCBinaryData *bins = calloc(n + 1, sizeof(*bins));

    ASSERT(bins != NULL);
    for (size_t i = 0; i < n; i++) {
        bins[i].data = (uint8_t *)keys[i].bytes;
        bins[i].len  = KVP_KEY_LEN;
    }
    return bins;
}

/* Match @p n keys of @p ns, only their length if @p length_only. */
static inline kvp_status_t coord_match_call(kv_rpc_client_t *client, const char *ns,
                                            const kvp_key_t *keys, size_t n,
                                            int length_only, Kvpool__MatchReply **reply_p)
{
    Kvpool__MatchRequest req  = KVPOOL__MATCH_REQUEST__INIT;
    ProtobufCBinaryData *bins = coord_keys(keys, n);
    kvp_status_t         status;

    req.ns.data     = (uint8_t *)ns;
    req.ns.len      = strlen(ns);
    req.n_keys      = n;
    req.keys        = bins;
    req.length_only = length_only;
    status = kv_rpc_call(client, KV_COORD_MATCH, &req.base, NULL, 0, COORD_CALL_MS,
                         (ProtobufCMessage **)reply_p, NULL);
    free(bins);
    return status;
}

/**
 * Match @p n keys of namespace @p ns, with locations.  Returns the status;
 * on KVP_OK *@p reply_p is set.
 */
static inline kvp_status_t coord_match(kv_rpc_client_t *client, const char *ns,
                                       const kvp_key_t *keys, size_t n,
                                       Kvpool__MatchReply **reply_p)
{
    return coord_match_call(client, ns, keys, n, 0, reply_p);
}

/**
 * The matched length of @p n keys (0 for an unknown namespace), asked with
 * length_only: the reply must then carry no locations.
 */
static inline size_t coord_matched(kv_rpc_client_t *client, const char *ns,
                                   const kvp_key_t *keys, size_t n)
{
    Kvpool__MatchReply *reply;
    kvp_status_t        status = coord_match_call(client, ns, keys, n, 1, &reply);
    size_t              matched;

    if (status == KVP_ERR_NOT_FOUND) {
        return 0;
    }
    ASSERT_OK(status);
    ASSERT_EQ(reply->n_blocks, 0);
    ASSERT_EQ(reply->n_nodes, 0);
    matched = reply->matched;
    coord_free(reply);
    return matched;
}

/** Wait (up to @p ms) until Match of the chain gives @p want; 0 if it does. */
static inline int coord_wait_matched(kv_rpc_client_t *client, const char *ns,
                                     const kvp_key_t *keys, size_t n, size_t want,
                                     uint64_t ms)
{
    for (uint64_t deadline = now_ms() + ms;;) {
        if (coord_matched(client, ns, keys, n) == want) {
            return 0;
        }
        if (now_ms() > deadline) {
            return -1;
        }
        sleep_ms(10);
    }
}

/** Wait (up to @p ms) until the coordinator lists @p want nodes; 0 if it does. */
static inline int coord_wait_nodes(kv_rpc_client_t *client, size_t want, uint64_t ms)
{
    for (uint64_t deadline = now_ms() + ms;;) {
        Kvpool__NodesReply *nodes = coord_nodes(client);
        size_t              n     = nodes->n_nodes;

        coord_free(nodes);
        if (n == want) {
            return 0;
        }
        if (now_ms() > deadline) {
            return -1;
        }
        sleep_ms(10);
    }
}

/**
 * PlanPut @p n keys of @p ns with @p sizes and @p replicas.  Returns the
 * status; on KVP_OK *@p reply_p is set.
 */
static inline kvp_status_t coord_plan_put(kv_rpc_client_t *client, const char *ns,
                                          const kvp_key_t *keys, const uint64_t *sizes,
                                          size_t n, uint32_t replicas,
                                          Kvpool__PlanPutReply **reply_p)
{
    Kvpool__PlanPutRequest req  = KVPOOL__PLAN_PUT_REQUEST__INIT;
    ProtobufCBinaryData   *bins = coord_keys(keys, n);
    kvp_status_t           status;

    req.ns.data  = (uint8_t *)ns;
    req.ns.len   = strlen(ns);
    req.n_keys   = n;
    req.keys     = bins;
    req.n_sizes  = n;
    req.sizes    = (uint64_t *)sizes;
    req.replicas = replicas;
    status = kv_rpc_call(client, KV_COORD_PLAN_PUT, &req.base, NULL, 0, COORD_CALL_MS,
                         (ProtobufCMessage **)reply_p, NULL);
    free(bins);
    return status;
}

#endif
