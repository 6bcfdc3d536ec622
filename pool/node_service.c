/*
 * The pool node's RPC service: Put, Get, Exists, Delete and Stats over the
 * host-memory tier.  Every field from the wire is checked here (namespace
 * and key lengths, batch sizes, checksums) before it touches the table; a
 * refused request changes nothing that is stored.
 *
 * A Get pins its block until the reply's payload has left the socket (the
 * payload is sent from the arena without a copy), so eviction, Delete or a
 * replacing Put never frees bytes that are still being sent.
 */
#include "node_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <sys/epoll.h>
#include <string.h>

typedef struct {
    kv_node_t  *node;
    kv_block_t *block;
} get_hold_t;

int kv_node_check_fields(const ProtobufCBinaryData *ns, const ProtobufCBinaryData *key,
                         char *err, size_t err_len)
{
    if (ns->len == 0 || ns->len > KVP_NAMESPACE_MAX ||
        memchr(ns->data, '\0', ns->len) != NULL) {
        snprintf(err, err_len, "namespace must be 1..%d bytes without NUL, got %zu",
                 KVP_NAMESPACE_MAX, ns->len);
        return 0;
    }
    if (key != NULL && key->len != KVP_KEY_LEN) {
        snprintf(err, err_len, "block key must be %d bytes, got %zu", KVP_KEY_LEN,
                 key->len);
        return 0;
    }
    return 1;
}

int kv_node_check_call(kv_rpc_call_t *call, const ProtobufCBinaryData *ns,
                       const ProtobufCBinaryData *key)
{
    char err[128];

    if (!kv_node_check_fields(ns, key, err, sizeof(err))) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "%s", err);
        return 0;
    }
    return 1;
}

int kv_node_check_keys(kv_rpc_call_t *call, const ProtobufCBinaryData *ns,
                       const ProtobufCBinaryData *keys, size_t n_keys)
{
    if (!kv_node_check_call(call, ns, NULL)) {
        return 0;
    }
    if (n_keys > KVP_BATCH_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%zu keys in one call (limit %d)", n_keys, KVP_BATCH_MAX);
        return 0;
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (keys[i].len != KVP_KEY_LEN) {
            kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                               "block key %zu must be %d bytes, got %zu", i, KVP_KEY_LEN,
                               keys[i].len);
            return 0;
        }
    }
    return 1;
}

int kv_node_ns_lookup(kv_node_t *node, const ProtobufCBinaryData *ns, uint32_t *id_p)
{
    return kv_block_table_ns_id(node->table, (const char *)ns->data, ns->len, 0,
                                id_p) == KVP_OK;
}

void kv_node_find_pinned(kv_node_t *node, const ProtobufCBinaryData *ns,
                         const ProtobufCBinaryData *keys, size_t n, kv_block_t **blocks)
{
    uint32_t ns_id;
    int      known = kv_node_ns_lookup(node, ns, &ns_id), on_ssd = 0;
    uint8_t *pinned = kv_calloc(n, 1, "find pins"); /* pinned before staging */

    for (size_t i = 0; i < n; i++) {
        blocks[i] = known ? kv_block_table_lookup(node->table, ns_id,
                                                  (const kvp_key_t *)keys[i].data)
                          : NULL;
        if (blocks[i] != NULL && blocks[i]->tier == KV_TIER_HOST) {
            node->tier_hits[KV_TIER_HOST]++;
            kv_block_table_pin(node->table, blocks[i]); /* kept through the staging */
            pinned[i] = 1;
        } else {
            node->tier_misses[KV_TIER_HOST]++;
            on_ssd += blocks[i] != NULL;
        }
    }
    if (on_ssd > 0) {
        kv_block_table_stage(node->table, blocks, n, node->config.ssd_readahead);
    }
    for (size_t i = 0; i < n; i++) {
        node->gets++;
        if (blocks[i] == NULL) {
            node->misses++;
            node->tier_misses[KV_TIER_SSD] += node->config.ssd_dir[0] != '\0';
            continue;
        }
        if (!pinned[i]) {
            node->tier_hits[KV_TIER_SSD]++;
            kv_block_table_pin(node->table, blocks[i]);
        }
        node->hits++;
        node->bytes_out += blocks[i]->size;
        kv_block_table_touch(node->table, blocks[i]);
    }
    kv_free(pinned);
}

/*
 * Where a Put's bytes are received.  If the arena has a free extent now,
 * straight into a pending block there (no copy); otherwise into a heap
 * buffer, and room is made by eviction only once the bytes have passed
 * their checksum, so a refused, abandoned or slow Put never evicts anything.
 */
typedef struct {
    kv_block_t *block; /* pending block in the arena, or NULL */
    void       *heap;  /* heap buffer when block is NULL */
    uint32_t    ns_id;
} put_landing_t;

static kvp_status_t put_sink(const ProtobufCMessage *msg, uint64_t payload_len,
                             void *arg, void **buf_p, void **ctx_p, char *err,
                             size_t err_len)
{
    const Kvpool__PutRequest *req  = (const Kvpool__PutRequest *)msg;
    kv_node_t                *node = arg;
    put_landing_t            *landing;
    uint32_t                  ns_id;
    kvp_status_t              status;

    if (!kv_node_check_fields(&req->ns, &req->key, err, err_len)) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = kv_block_table_ns_id(node->table, (const char *)req->ns.data,
                                  req->ns.len, 1, &ns_id);
    if (status != KVP_OK) {
        snprintf(err, err_len, "cannot add another namespace");
        return status;
    }
    landing        = kv_calloc(1, sizeof(*landing), "put landing");
    landing->ns_id = ns_id;
    if (kv_block_table_reserve_free(node->table, ns_id,
                                    (const kvp_key_t *)req->key.data, payload_len,
                                    &landing->block) == KVP_OK) {
        *buf_p = kv_block_table_data(node->table, landing->block);
    } else {
        landing->heap = kv_malloc_try(payload_len, "put payload");
        if (landing->heap == NULL) {
            kv_free(landing);
            snprintf(err, err_len, "no memory to receive %llu bytes",
                     (unsigned long long)payload_len);
            return KVP_ERR_NO_MEMORY;
        }
        *buf_p = landing->heap;
    }
    *ctx_p = landing;
    return KVP_OK;
}

static void put_landing_free(kv_node_t *node, put_landing_t *landing)
{
    if (landing->block != NULL) {
        kv_block_table_abort(node->table, landing->block);
    }
    kv_free(landing->heap);
    kv_free(landing);
}

static void put_sink_cancel(void *ctx, void *arg)
{
    put_landing_free(arg, ctx);
}

/* Put, once its bytes are in: check them, then make them visible. */
static void handle_put(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__PutRequest *req     = (const Kvpool__PutRequest *)msg;
    kv_node_t                *node    = arg;
    Kvpool__PutReply          reply   = KVPOOL__PUT_REPLY__INIT;
    put_landing_t            *landing = kv_rpc_call_payload_ctx(call);
    uint64_t                  start   = kv_time_ns();
    kvp_status_t              status;

    if (landing == NULL) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM, "put of an empty block");
        return;
    }
    if (kv_checksum(payload, payload_len) != req->checksum) {
        node->put_checksum_failures++;
        put_landing_free(node, landing);
        kv_rpc_reply_error(call, KVP_ERR_CHECKSUM,
                           "put payload does not match its checksum");
        return;
    }
    if (landing->block == NULL) {
        status = kv_block_table_reserve(node->table, landing->ns_id,
                                        (const kvp_key_t *)req->key.data,
                                        payload_len, &landing->block);
        if (status != KVP_OK) {
            put_landing_free(node, landing);
            kv_rpc_reply_error(call, status, "no room for a %llu-byte block",
                               (unsigned long long)payload_len);
            return;
        }
        memcpy(kv_block_table_data(node->table, landing->block), payload,
               payload_len);
    }
    kv_block_table_commit(node->table, landing->block, req->checksum);
    landing->block = NULL;
    put_landing_free(node, landing);
    node->puts++;
    node->bytes_in += payload_len;
    node->bytes_put[KVPOOL__TRANSPORT__TRANSPORT_FRAME] += payload_len;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
    kv_histogram_observe(&node->put_seconds[KVPOOL__TRANSPORT__TRANSPORT_FRAME],
                         (double)(kv_time_ns() - start) / 1e9);
    kv_block_table_balance(node->table); /* after the reply: it may write to SSD */
}

static void get_release(void *arg)
{
    get_hold_t *hold = arg;

    kv_block_table_unpin(hold->node->table, hold->block);
    kv_free(hold);
}

static void handle_get(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__GetRequest *req   = (const Kvpool__GetRequest *)msg;
    kv_node_t                *node  = arg;
    Kvpool__GetReply          reply = KVPOOL__GET_REPLY__INIT;
    kv_block_t               *block = NULL;
    get_hold_t               *hold;
    uint64_t                  start = kv_time_ns();

    if (!kv_node_check_call(call, &req->ns, &req->key)) {
        return;
    }
    kv_node_find_pinned(node, &req->ns, &req->key, 1, &block);
    if (block == NULL) {
        kv_rpc_reply(call, KVP_ERR_NOT_FOUND, NULL, NULL, 0, NULL, NULL);
        return;
    }
    if (block->size > req->max_size) {
        node->bytes_out -= block->size;
        kv_block_table_unpin(node->table, block);
        kv_rpc_reply_too_small(call, block->size);
        return;
    }
    hold         = kv_malloc(sizeof(*hold), "get hold");
    hold->node   = node;
    hold->block  = block;
    reply.size     = block->size;
    reply.checksum = block->checksum;
    node->bytes_got[KVPOOL__TRANSPORT__TRANSPORT_FRAME] += block->size;
    kv_rpc_reply(call, KVP_OK, &reply.base, kv_block_table_data(node->table, block),
                 block->size, get_release, hold);
    kv_histogram_observe(&node->get_seconds[KVPOOL__TRANSPORT__TRANSPORT_FRAME],
                         (double)(kv_time_ns() - start) / 1e9);
}

/* Checks of Exists and Delete: -1 after an error reply, else whether the
 * namespace is known (with *ns_id_p). */
static int keys_request_ns(kv_node_t *node, kv_rpc_call_t *call,
                           const Kvpool__KeysRequest *req, uint32_t *ns_id_p)
{
    if (!kv_node_check_keys(call, &req->ns, req->keys, req->n_keys)) {
        return -1;
    }
    return kv_node_ns_lookup(node, &req->ns, ns_id_p);
}

static void handle_exists(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                          const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__KeysRequest *req   = (const Kvpool__KeysRequest *)msg;
    kv_node_t                 *node  = arg;
    Kvpool__ExistsReply        reply = KVPOOL__EXISTS_REPLY__INIT;
    uint32_t                   ns_id;
    int                        known = keys_request_ns(node, call, req, &ns_id);

    if (known < 0) {
        return;
    }
    while (known && reply.present < req->n_keys &&
           kv_block_table_lookup(node->table, ns_id,
                                 (const kvp_key_t *)req->keys[reply.present].data)) {
        reply.present++;
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

static void handle_delete(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                          const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__KeysRequest *req   = (const Kvpool__KeysRequest *)msg;
    kv_node_t                 *node  = arg;
    Kvpool__DeleteReply        reply = KVPOOL__DELETE_REPLY__INIT;
    uint32_t                   ns_id;
    int                        known = keys_request_ns(node, call, req, &ns_id);

    if (known < 0) {
        return;
    }
    for (size_t i = 0; known && i < req->n_keys; i++) {
        reply.deleted += (uint32_t)kv_block_table_remove(
            node->table, ns_id, (const kvp_key_t *)req->keys[i].data);
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

/* The host tier's figures, and the SSD tier's when there is one. */
static void tier_stats(kv_node_t *node, const kv_block_table_stats_t *table,
                       Kvpool__TierStats tiers[2], Kvpool__TierStats *ptrs[2])
{
    kv_ssd_stats_t ssd;

    kv_block_table_ssd_stats(node->table, &ssd);
    for (int t = 0; t < 2; t++) {
        kvpool__tier_stats__init(&tiers[t]);
        ptrs[t]              = &tiers[t];
        tiers[t].tier        = t == 0 ? KVPOOL__TIER__TIER_HOST : KVPOOL__TIER__TIER_SSD;
        tiers[t].hits        = node->tier_hits[t];
        tiers[t].misses      = node->tier_misses[t];
        tiers[t].demotions   = table->demotions;
        tiers[t].promotions  = table->promotions;
    }
    tiers[0].capacity_bytes = kv_arena_capacity(node->arena);
    tiers[0].used_bytes     = table->used_bytes;
    tiers[0].blocks         = table->blocks;
    tiers[0].evictions      = table->evictions;
    tiers[0].bytes_written  = node->bytes_in;
    tiers[0].bytes_read     = node->bytes_out;
    tiers[1].capacity_bytes = ssd.capacity_bytes;
    tiers[1].used_bytes     = table->ssd_used_bytes;
    tiers[1].blocks         = table->ssd_blocks;
    tiers[1].evictions      = table->ssd_evictions;
    tiers[1].bytes_written  = ssd.bytes_written;
    tiers[1].bytes_read     = ssd.bytes_read;
}

void kv_node_stats_fill(kv_node_t *node, kv_node_stats_msg_t *stats)
{
    Kvpool__StatsReply     reply = KVPOOL__STATS_REPLY__INIT;
    kv_block_table_stats_t table;
    kv_rpc_server_stats_t  rpc;

    kv_block_table_stats(node->table, &table);
    kv_rpc_server_stats(node->server, &rpc);
    reply.capacity_bytes = kv_arena_capacity(node->arena);
    reply.used_bytes     = table.used_bytes;
    reply.blocks         = table.blocks;
    reply.evictions      = table.evictions;
    reply.puts           = node->puts;
    reply.gets           = node->gets;
    reply.hits           = node->hits;
    reply.misses         = node->misses;
    reply.bytes_in       = node->bytes_in;
    reply.bytes_out      = node->bytes_out;
    reply.connections    = rpc.connections;
    reply.rpc_errors     = rpc.rpc_errors;
    reply.coord_node_id  = kv_node_coord_id(node);
    tier_stats(node, &table, stats->tiers, stats->tier_ptrs);
    reply.tiers   = stats->tier_ptrs;
    reply.n_tiers = node->config.ssd_dir[0] != '\0' ? 2 : 1;
    stats->reply  = reply;
}

static void handle_stats(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                         const void *payload, uint64_t payload_len, void *arg)
{
    kv_node_stats_msg_t stats;

    kv_node_stats_fill(arg, &stats);
    kv_rpc_reply(call, KVP_OK, &stats.reply.base, NULL, 0, NULL, NULL);
}

static void on_ssd_event(int fd, uint32_t events, void *arg)
{
    kv_node_t *node = arg;

    (void)fd;
    (void)events;
    kv_block_table_balance(node->table);
}

/* The SSD tier of config.ssd_dir, if any, with what an earlier run left there. */
static kvp_status_t node_ssd_open(kv_node_t *node)
{
    const kv_node_config_t *config = &node->config;
    uint64_t                capacity = kv_arena_capacity(node->arena), recovered;
    kv_ssd_config_t         ssd = {0};
    kvp_status_t            status;

    if (config->ssd_dir[0] == '\0') {
        return KVP_OK;
    }
    if (config->ssd_size == 0 || config->low_watermark > config->high_watermark) {
        kv_log_error("an SSD tier needs ssd_size, and low_watermark <= high_watermark");
        return KVP_ERR_CONFIG;
    }
    ssd.dir          = config->ssd_dir;
    ssd.capacity     = config->ssd_size;
    ssd.segment_size = config->ssd_segment_size;
    ssd.queue_depth  = config->ssd_queue_depth;
    ssd.sync         = config->ssd_sync;
    status = kv_block_table_open_ssd(node->table, &ssd,
                                     capacity / 100 * config->high_watermark,
                                     capacity / 100 * config->low_watermark, &recovered);
    if (status != KVP_OK) {
        kv_log_error("cannot open the SSD tier in %s: %s", config->ssd_dir,
                     kvp_status_string(status));
        return status;
    }
    kv_log_info("SSD tier in %s: %llu bytes, %llu blocks recovered", config->ssd_dir,
                (unsigned long long)config->ssd_size, (unsigned long long)recovered);
    /* demotion writes run while the loop serves; their completions wake it */
    return kv_evloop_add(node->loop, kv_block_table_event_fd(node->table), EPOLLIN,
                         on_ssd_event, node);
}

static const kv_rpc_handler_func_t node_handlers[KV_POOL_METHOD_COUNT] = {
    [KV_POOL_PUT]        = handle_put,
    [KV_POOL_GET]        = handle_get,
    [KV_POOL_EXISTS]     = handle_exists,
    [KV_POOL_DELETE]     = handle_delete,
    [KV_POOL_STATS]      = handle_stats,
    [KV_POOL_PUT_START]  = kv_node_put_start,
    [KV_POOL_PUT_COMMIT] = kv_node_put_commit,
    [KV_POOL_GET_START]  = kv_node_get_start,
    [KV_POOL_GET_END]    = kv_node_get_end,
};

static const kv_rpc_sink_func_t node_sinks[KV_POOL_METHOD_COUNT] = {
    [KV_POOL_PUT] = put_sink,
};

kvp_status_t kv_node_create(kv_evloop_t *loop, const kv_node_config_t *config,
                            kv_node_t **node_p)
{
    kv_rpc_server_params_t params = {0};
    Kvpool__HelloReply     hello  = KVPOOL__HELLO_REPLY__INIT;
    kv_node_t             *node;
    kvp_status_t           status;

    _Static_assert(KV_POOL_METHOD_COUNT == 10, "node_handlers must list every method");
    if (kvpool__pool_node__descriptor.n_methods != KV_POOL_METHOD_COUNT) {
        kv_log_error("the PoolNode service has %u methods, the node knows %d",
                     kvpool__pool_node__descriptor.n_methods, KV_POOL_METHOD_COUNT);
        return KVP_ERR_INTERNAL;
    }
    node         = kv_calloc(1, sizeof(*node), "node");
    node->config = *config;
    node->loop   = loop;
    kv_host_id(node->host_id, sizeof(node->host_id)); /* clients compare theirs */
    status = kv_arena_create(config->memory, &node->arena);
    if (status != KVP_OK) {
        goto err_free;
    }
    status = kv_block_table_create(node->arena, config->eviction_policy, &node->table);
    if (status != KVP_OK) {
        goto err_arena;
    }
    status = node_ssd_open(node);
    if (status == KVP_OK) {
        status = kv_node_http_start(node);
    }
    if (status != KVP_OK) {
        goto err_shm;
    }
    if (config->shared_memory &&
        kv_node_shm_create(node, node->shm_name, sizeof(node->shm_name)) != KVP_OK) {
        kv_log_warn("sharing the arena with local clients is off");
        node->shm_name[0] = '\0';
    }
    node->kvt_fd = -1;
    if (config->data_plane_ucx && kv_node_ucx_create(node) != KVP_OK) {
        kv_log_warn("the network data plane is off: clients elsewhere use frames");
    }
    node->hello               = hello;
    node->hello.host_id.data  = (uint8_t *)node->host_id;
    node->hello.host_id.len   = strlen(node->host_id);
    node->hello.shm_socket    = node->shm_name;
    node->hello.arena_size    = kv_arena_capacity(node->arena);
    node->hello.ucx_address   = node->ucx_address;
    if (node->kvt != NULL) {
        node->hello.ucx_rkey.data = node->kvt_rkey;
        node->hello.ucx_rkey.len  = node->kvt_rkey_len;
        node->hello.arena_base    = (uint64_t)(uintptr_t)kv_arena_base(node->arena);
    }
    params.listen         = config->listen;
    params.port           = config->port;
    params.token          = config->token;
    params.name           = config->name;
    params.max_payload    = KV_MIN(kv_arena_capacity(node->arena), KVP_BLOCK_MAX);
    params.service        = &kvpool__pool_node__descriptor;
    params.handlers       = node_handlers;
    params.sinks          = node_sinks;
    params.sink_cancel    = put_sink_cancel;
    params.arg            = node;
    params.hello          = &node->hello;
    params.conn_closed    = kv_node_session_close;
    status = kv_rpc_server_create(loop, &params, &node->server);
    if (status != KVP_OK) {
        goto err_shm;
    }
    if (config->coordinator[0] != '\0') {
        status = kv_node_coord_create(node);
        if (status != KVP_OK) {
            goto err_server;
        }
    }
    *node_p = node;
    return KVP_OK;

err_server:
    kv_rpc_server_destroy(node->server);
err_shm:
    kv_http_stop(node->http);
    kv_node_ucx_destroy(node);
    kv_node_shm_destroy(node);
    kv_block_table_destroy(node->table);
err_arena:
    kv_arena_destroy(node->arena);
err_free:
    kv_free(node);
    return status;
}

void kv_node_destroy(kv_node_t *node)
{
    if (node == NULL) {
        return;
    }
    /* the link first: its thread stops, the table loses its listener */
    kv_node_coord_destroy(node);
    /* closing connections releases Get pins, leases and open puts first */
    kv_rpc_server_destroy(node->server);
    kv_node_sessions_destroy(node);
    kv_http_stop(node->http);
    /* the data plane goes before the arena it registered */
    kv_node_ucx_destroy(node);
    kv_node_shm_destroy(node);
    if (kv_block_table_event_fd(node->table) >= 0) {
        kv_evloop_remove(node->loop, kv_block_table_event_fd(node->table));
    }
    kv_block_table_destroy(node->table);
    kv_arena_destroy(node->arena);
    kv_free(node);
}

uint16_t kv_node_port(const kv_node_t *node)
{
    return kv_rpc_server_port(node->server);
}

void kv_node_tick(kv_node_t *node)
{
    kv_rpc_server_expire(node->server);
    kv_node_sessions_expire(node);
    kv_node_shm_expire(node);
    kv_node_ucx_progress(node);
    kv_node_coord_tick(node);
    kv_block_table_balance(node->table);
    kv_block_table_flush(node->table);
    kv_http_tick(node->http);
}
