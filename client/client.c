/*
 * libkvpool: the public client API over the RPC channel.  Checks arguments
 * before anything goes on the wire, computes checksums on put and verifies
 * them on get (damaged bytes are reported as KVP_ERR_CHECKSUM: a miss).
 */
#include "client_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>

#include <stdlib.h>
#include <string.h>

#define DEFAULT_TIMEOUT_MS 10000

int kvp__ns_valid(const char *ns)
{
    return ns != NULL && ns[0] != '\0' &&
           strnlen(ns, KVP_NAMESPACE_MAX + 1) <= KVP_NAMESPACE_MAX;
}

ProtobufCBinaryData kvp__ns_bytes(const char *ns)
{
    ProtobufCBinaryData bin = {strlen(ns), (uint8_t *)ns};
    return bin;
}

/* kvp_client_params_t and $KVPOOL_TRANSPORT with their defaults applied. */
static kvp_status_t conn_opts(const kvp_client_params_t *params, kvp__conn_opts_t *opts)
{
    uint64_t    mask      = params ? params->field_mask : 0;
    const char *transport = getenv("KVPOOL_TRANSPORT");

    if ((mask & KVP_CLIENT_PARAM_TRANSPORT) && params->transport != NULL) {
        transport = params->transport;
    } else if (transport == NULL) {
        transport = "auto";
    }
    if (strcmp(transport, "auto") != 0 && strcmp(transport, "shm") != 0 &&
        strcmp(transport, "frame") != 0 && strcmp(transport, "ucx") != 0) {
        return KVP_ERR_INVALID_PARAM;
    }
    opts->transport  = transport;
    opts->token      = (mask & KVP_CLIENT_PARAM_TOKEN) ? params->token : NULL;
    opts->name       = (mask & KVP_CLIENT_PARAM_NAME) && params->name != NULL ? params->name
                                                                              : "libkvpool";
    opts->timeout_ms = (mask & KVP_CLIENT_PARAM_TIMEOUT_MS) ? params->timeout_ms
                                                            : DEFAULT_TIMEOUT_MS;
    return KVP_OK;
}

/* Set up the data path @p opts asks for to the node @p client reached. */
static kvp_status_t attach_data_path(kvp_client_h client, const char *address,
                                     const kvp__conn_opts_t *opts)
{
    const char  *transport = opts->transport;
    kvp_status_t status;

    if (strcmp(transport, "auto") == 0 || strcmp(transport, "shm") == 0) {
        status = kvp__shm_attach(client, opts->token);
        if (status != KVP_OK && strcmp(transport, "shm") == 0) {
            kv_log_warn("%s: no shared arena: %s", address, kvp_status_string(status));
            return status;
        }
    }
    if ((strcmp(transport, "auto") == 0 && client->shm_base == NULL) ||
        strcmp(transport, "ucx") == 0) {
        status = kvp__ucx_attach(client, address);
        if (status != KVP_OK && strcmp(transport, "ucx") == 0) {
            kv_log_warn("%s: no ucx data path: %s", address, kvp_status_string(status));
            return status;
        }
    }
    return KVP_OK;
}

/*
 * Connect and shake hands.  The HelloReply says whether the peer is a pool
 * node (then the data path is set up) or the coordinator (then, if
 * @p allow_coord, the handle goes into cluster mode).
 */
static kvp_status_t client_open(const char *address, const kvp__conn_opts_t *opts,
                                int allow_coord, kvp_client_h *client_p)
{
    kv_rpc_client_params_t rpc = {0};
    kvp_client_h           client;
    kv_rpc_client_t       *coord;
    kvp_status_t           status;

    client             = kv_calloc(1, sizeof(*client), "client");
    client->timeout_ms = opts->timeout_ms;
    rpc.address    = address;
    rpc.token      = opts->token;
    rpc.name       = opts->name;
    rpc.timeout_ms = opts->timeout_ms;
    rpc.service    = &kvpool__pool_node__descriptor;
    status         = kv_rpc_client_create(&rpc, &client->rpc);
    if (status != KVP_OK) {
        kv_log_warn("connect to %s: %s", address, kvp_status_string(status));
        goto err_free;
    }
    if (kv_rpc_client_hello(client->rpc)->coordinator) {
        if (!allow_coord) {
            kv_log_warn("%s is a coordinator, not a pool node", address);
            status = KVP_ERR_PROTOCOL;
            goto err_rpc;
        }
        coord       = client->rpc;
        client->rpc = NULL;
        kv_rpc_client_set_service(coord, &kvpool__coordinator__descriptor);
        status = kvp__cluster_open(client, coord, address, opts);
        if (status != KVP_OK) {
            goto err_free;
        }
        *client_p = client;
        return KVP_OK;
    }
    status = attach_data_path(client, address, opts);
    if (status != KVP_OK) {
        goto err_rpc;
    }
    *client_p = client;
    return KVP_OK;

err_rpc:
    kv_rpc_client_destroy(client->rpc);
err_free:
    kv_free(client);
    return status;
}

kvp_status_t kvp__node_connect(const char *address, const kvp__conn_opts_t *opts,
                               kvp_client_h *client_p)
{
    return client_open(address, opts, 0, client_p);
}

kvp_status_t kvp_client_connect(const char *address,
                                const kvp_client_params_t *params,
                                kvp_client_h *client_p)
{
    kvp__conn_opts_t opts;
    kvp_status_t     status;

    if (address == NULL || client_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = conn_opts(params, &opts);
    if (status != KVP_OK) {
        return status;
    }
    return client_open(address, &opts, 1, client_p);
}

const char *kvp_client_transport(kvp_client_h client)
{
    if (client->cluster != NULL) {
        return kvp__cluster_transport(client);
    }
    if (client->shm_base != NULL) {
        return "shm";
    }
    return kvp__ucx_usable(client) ? "ucx" : "frame";
}

void kvp_client_disconnect(kvp_client_h client)
{
    if (client == NULL) {
        return;
    }
    kvp__async_destroy(client);
    kvp__cluster_close(client);
    kv_rpc_client_destroy(client->rpc);
    kvp__shm_detach(client);
    kvp__ucx_detach(client);
    kv_free(client);
}

/* A per-block status that means the whole call failed. */
static int call_failed(kvp_status_t status)
{
    return KVP_STATUS_IS_CONNECTION_ERROR(status) || status == KVP_ERR_TIMED_OUT ||
           status <= KVP_ERR_FIRST_NODE;
}

/* The call's status from its per-block ones: the first call-level failure. */
static kvp_status_t call_status(const kvp_status_t *statuses, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (call_failed(statuses[i])) {
            return statuses[i];
        }
    }
    return KVP_OK;
}

/*
 * Blocks in frames: every Put is sent before any reply is awaited, so a
 * batch costs about one round trip plus the bytes, not one per block.
 */
static kvp_status_t frame_put(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                              const void *const *datas, const uint64_t *sizes,
                              size_t count, kvp_status_t *statuses)
{
    kv_rpc_pending_t **pending = kv_calloc(count, sizeof(*pending), "pending puts");

    for (size_t i = 0; i < count; i++) {
        Kvpool__PutRequest req = KVPOOL__PUT_REQUEST__INIT;
        req.ns       = kvp__ns_bytes(ns);
        req.key.data = (uint8_t *)keys[i].bytes;
        req.key.len  = KVP_KEY_LEN;
        req.checksum = kv_checksum(datas[i], sizes[i]);
        statuses[i]  = kv_rpc_call_start(client->rpc, KV_POOL_PUT, &req.base, datas[i],
                                         sizes[i], client->timeout_ms, NULL, &pending[i]);
    }
    for (size_t i = 0; i < count; i++) {
        if (pending[i] != NULL) {
            statuses[i] = kv_rpc_call_finish(client->rpc, pending[i], NULL);
        }
    }
    kv_free(pending);
    return call_status(statuses, count);
}

static kvp_status_t frame_get(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                              void *const *bufs, const uint64_t *capacities,
                              size_t count, uint64_t *sizes, kvp_status_t *statuses)
{
    kv_rpc_pending_t **pending = kv_calloc(count, sizeof(*pending), "pending gets");
    kv_rpc_recv_t     *recv    = kv_calloc(count, sizeof(*recv), "get buffers");

    for (size_t i = 0; i < count; i++) {
        Kvpool__GetRequest req = KVPOOL__GET_REQUEST__INIT;
        req.ns       = kvp__ns_bytes(ns);
        req.key.data = (uint8_t *)keys[i].bytes;
        req.key.len  = KVP_KEY_LEN;
        req.max_size = capacities[i];
        recv[i].buf      = bufs[i];
        recv[i].capacity = capacities[i];
        statuses[i] = kv_rpc_call_start(client->rpc, KV_POOL_GET, &req.base, NULL, 0,
                                        client->timeout_ms, &recv[i], &pending[i]);
    }
    for (size_t i = 0; i < count; i++) {
        Kvpool__GetReply *reply = NULL;
        if (pending[i] == NULL) {
            continue;
        }
        statuses[i] = kv_rpc_call_finish(client->rpc, pending[i],
                                         (ProtobufCMessage **)&reply);
        if (statuses[i] == KVP_ERR_BUFFER_TOO_SMALL) {
            sizes[i] = recv[i].error_size;
        }
        if (statuses[i] != KVP_OK) {
            continue;
        }
        if (reply->size != recv[i].len) {
            kv_log_warn("get: node announced %llu bytes, sent %llu",
                        (unsigned long long)reply->size,
                        (unsigned long long)recv[i].len);
            statuses[i] = KVP_ERR_PROTOCOL;
        } else if (kv_checksum(bufs[i], recv[i].len) != reply->checksum) {
            kv_log_warn("get: block failed its checksum; treating it as a miss");
            statuses[i] = KVP_ERR_CHECKSUM;
        } else {
            sizes[i] = recv[i].len;
        }
        kvpool__get_reply__free_unpacked(reply, NULL);
    }
    kv_free(pending);
    kv_free(recv);
    return call_status(statuses, count);
}

kvp_status_t kvp__node_put(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                           const void *const *datas, const uint64_t *sizes,
                           size_t count, int chain, const kvp_key_t *parent,
                           kvp_status_t *statuses)
{
    if (count == 0) {
        return KVP_OK;
    }
    if (client->shm_base != NULL) {
        return kvp__twophase_put(client, kvp__shm_move, client->shm_size, ns, keys,
                                 datas, sizes, count, chain, parent, statuses);
    }
    if (kvp__ucx_usable(client)) {
        return kvp__twophase_put(client, kvp__ucx_move, kvp__ucx_arena_size(client), ns,
                                 keys, datas, sizes, count, chain, parent, statuses);
    }
    return frame_put(client, ns, keys, datas, sizes, count, statuses);
}

kvp_status_t kvp__node_get(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                           void *const *bufs, const uint64_t *capacities, size_t count,
                           uint64_t *sizes, kvp_status_t *statuses)
{
    if (count == 0) {
        return KVP_OK;
    }
    if (client->shm_base != NULL) {
        return kvp__twophase_get(client, kvp__shm_move, client->shm_size, ns, keys,
                                 bufs, capacities, count, sizes, statuses);
    }
    if (kvp__ucx_usable(client)) {
        return kvp__twophase_get(client, kvp__ucx_move, kvp__ucx_arena_size(client), ns,
                                 keys, bufs, capacities, count, sizes, statuses);
    }
    return frame_get(client, ns, keys, bufs, capacities, count, sizes, statuses);
}

kvp_status_t kvp_put_batch(kvp_client_h client, const char *ns,
                           const kvp_key_t *keys, const void *const *datas,
                           const uint64_t *sizes, size_t count,
                           kvp_status_t *statuses)
{
    if (client == NULL || !kvp__ns_valid(ns) || keys == NULL || datas == NULL ||
        sizes == NULL || statuses == NULL || count > KVP_BATCH_MAX) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < count; i++) {
        if (datas[i] == NULL || sizes[i] == 0) {
            return KVP_ERR_INVALID_PARAM;
        }
    }
    if (count == 0) {
        return KVP_OK;
    }
    if (client->cluster != NULL) {
        return kvp__cluster_put_batch(client, ns, keys, datas, sizes, count, statuses);
    }
    return kvp__node_put(client, ns, keys, datas, sizes, count, 0, NULL, statuses);
}

kvp_status_t kvp_get_batch(kvp_client_h client, const char *ns,
                           const kvp_key_t *keys, void *const *bufs,
                           const uint64_t *capacities, size_t count,
                           uint64_t *sizes, kvp_status_t *statuses)
{
    if (client == NULL || !kvp__ns_valid(ns) || keys == NULL || bufs == NULL ||
        capacities == NULL || sizes == NULL || statuses == NULL ||
        count > KVP_BATCH_MAX) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < count; i++) {
        if (bufs[i] == NULL && capacities[i] > 0) {
            return KVP_ERR_INVALID_PARAM;
        }
    }
    if (count == 0) {
        return KVP_OK;
    }
    if (client->cluster != NULL) {
        return kvp__cluster_get_batch(client, ns, keys, bufs, capacities, count, sizes,
                                      statuses);
    }
    return kvp__node_get(client, ns, keys, bufs, capacities, count, sizes, statuses);
}

kvp_status_t kvp_put(kvp_client_h client, const char *ns, const kvp_key_t *key,
                     const void *data, uint64_t size)
{
    kvp_status_t block_status, status;

    if (key == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (size > KVP_BLOCK_MAX) {
        return KVP_ERR_TOO_LARGE;
    }
    status = kvp_put_batch(client, ns, key, &data, &size, 1, &block_status);
    return status != KVP_OK ? status : block_status;
}

kvp_status_t kvp_get(kvp_client_h client, const char *ns, const kvp_key_t *key,
                     void *buf, uint64_t capacity, uint64_t *size_p)
{
    kvp_status_t block_status, status;
    uint64_t     size = 0;

    if (key == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = kvp_get_batch(client, ns, key, &buf, &capacity, 1, &size, &block_status);
    status = status != KVP_OK ? status : block_status;
    if ((status == KVP_OK || status == KVP_ERR_BUFFER_TOO_SMALL) && size_p != NULL) {
        *size_p = size;
    }
    return status;
}

ProtobufCBinaryData *kvp__keys_borrow(const kvp_key_t *keys, size_t count)
{
    ProtobufCBinaryData *bin = kv_malloc(count * sizeof(*bin) + 1, "key list");

    for (size_t i = 0; i < count; i++) {
        bin[i].data = (uint8_t *)keys[i].bytes;
        bin[i].len  = KVP_KEY_LEN;
    }
    return bin;
}

static kvp_status_t keys_call(kvp_client_h client, unsigned method,
                              const char *ns, const kvp_key_t *keys, size_t count,
                              ProtobufCMessage **reply_p)
{
    Kvpool__KeysRequest req = KVPOOL__KEYS_REQUEST__INIT;
    kvp_status_t        status;

    if (client == NULL || !kvp__ns_valid(ns) || (keys == NULL && count > 0) ||
        count > KVP_BATCH_MAX) {
        return KVP_ERR_INVALID_PARAM;
    }
    req.ns     = kvp__ns_bytes(ns);
    req.n_keys = count;
    req.keys   = kvp__keys_borrow(keys, count);
    status     = kv_rpc_call(client->rpc, method, &req.base, NULL, 0,
                             client->timeout_ms, reply_p, NULL);
    kv_free(req.keys);
    return status;
}

kvp_status_t kvp_exists(kvp_client_h client, const char *ns,
                        const kvp_key_t *keys, size_t count, size_t *present_p)
{
    Kvpool__ExistsReply *reply;
    kvp_status_t         status;

    if (present_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (client != NULL && client->cluster != NULL) {
        return kvp_match(client, ns, keys, count, present_p);
    }
    status = keys_call(client, KV_POOL_EXISTS, ns, keys, count,
                       (ProtobufCMessage **)&reply);
    if (status != KVP_OK) {
        return status;
    }
    *present_p = reply->present < count ? reply->present : count;
    kvpool__exists_reply__free_unpacked(reply, NULL);
    return KVP_OK;
}

kvp_status_t kvp_delete(kvp_client_h client, const char *ns,
                        const kvp_key_t *keys, size_t count, size_t *deleted_p)
{
    Kvpool__DeleteReply *reply;
    kvp_status_t         status;

    if (client != NULL && client->cluster != NULL) {
        if (!kvp__ns_valid(ns) || (keys == NULL && count > 0) || count > KVP_BATCH_MAX) {
            return KVP_ERR_INVALID_PARAM;
        }
        return kvp__cluster_delete(client, ns, keys, count, deleted_p);
    }
    status = keys_call(client, KV_POOL_DELETE, ns, keys, count,
                       (ProtobufCMessage **)&reply);
    if (status != KVP_OK) {
        return status;
    }
    if (deleted_p != NULL) {
        *deleted_p = reply->deleted;
    }
    kvpool__delete_reply__free_unpacked(reply, NULL);
    return KVP_OK;
}

kvp_status_t kvp_stats(kvp_client_h client, kvp_stats_t *stats_p)
{
    Kvpool__StatsRequest req = KVPOOL__STATS_REQUEST__INIT;
    Kvpool__StatsReply  *reply;
    kvp_status_t         status;

    if (client == NULL || stats_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (client->cluster != NULL) {
        return kvp__cluster_stats(client, stats_p);
    }
    status = kv_rpc_call(client->rpc, KV_POOL_STATS, &req.base, NULL, 0,
                         client->timeout_ms, (ProtobufCMessage **)&reply, NULL);
    if (status != KVP_OK) {
        return status;
    }
    stats_p->capacity_bytes = reply->capacity_bytes;
    stats_p->used_bytes     = reply->used_bytes;
    stats_p->blocks         = reply->blocks;
    stats_p->puts           = reply->puts;
    stats_p->gets           = reply->gets;
    stats_p->hits           = reply->hits;
    stats_p->misses         = reply->misses;
    stats_p->evictions      = reply->evictions;
    stats_p->bytes_in       = reply->bytes_in;
    stats_p->bytes_out      = reply->bytes_out;
    stats_p->connections    = reply->connections;
    stats_p->rpc_errors     = reply->rpc_errors;
    memset(stats_p->tiers, 0, sizeof(stats_p->tiers));
    for (size_t i = 0; i < reply->n_tiers; i++) {
        const Kvpool__TierStats *t = reply->tiers[i];
        kvp_tier_stats_t        *out;

        if ((unsigned)t->tier >= KVP_TIERS) {
            continue; /* a tier this library does not know */
        }
        out                 = &stats_p->tiers[t->tier];
        out->capacity_bytes = t->capacity_bytes;
        out->used_bytes     = t->used_bytes;
        out->blocks         = t->blocks;
        out->hits           = t->hits;
        out->misses         = t->misses;
        out->evictions      = t->evictions;
        out->demotions      = t->demotions;
        out->promotions     = t->promotions;
        out->bytes_written  = t->bytes_written;
        out->bytes_read     = t->bytes_read;
    }
    kvpool__stats_reply__free_unpacked(reply, NULL);
    return KVP_OK;
}

size_t kvp_chain_keys(const uint32_t *tokens, size_t num_tokens,
                      size_t block_tokens, const kvp_key_t *parent,
                      kvp_key_t *keys)
{
    size_t blocks;

    if (tokens == NULL || keys == NULL || block_tokens == 0) {
        return 0;
    }
    blocks = num_tokens / block_tokens;
    for (size_t i = 0; i < blocks; i++) {
        keys[i] = kv_key_chain(i ? &keys[i - 1] : parent, tokens + i * block_tokens,
                               block_tokens);
    }
    return blocks;
}

kvp_key_t kvp_key_from_bytes(const void *bytes, size_t len)
{
    return kv_key_hash(bytes, len);
}

void kvp_set_log_handler(kvp_log_level_t level, kvp_log_func_t func, void *arg)
{
    kv_log_set_handler(level, func, arg);
}
