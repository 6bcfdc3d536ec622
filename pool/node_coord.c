/*
 * The node's link to the coordinator (kvpool-node --coord HOST:PORT).
 *
 * Two threads share the work:
 *
 *   loop thread (owns the block table)        link thread (owns the RPC client)
 *   ----------------------------------        ---------------------------------
 *   listener: stored/removed -> pending        connect (backoff 100 ms .. 2 s)
 *     (loop-local), eventfd written once       Join -> joined, asks for a snapshot
 *   eventfd: names synced, pending -> queue    Heartbeat every lease / 3
 *     (only while joined); a requested         Publish: the snapshot in batches,
 *     snapshot taken with foreach                then the queue in batches
 *   tick: free bytes, blocks, load             KVP_ERR_NOT_FOUND -> join again
 *
 * The listener may not call the table, and the link thread may never
 * touch it, so the loop thread resolves namespace names (ids are never
 * reused, names never change) into the link's own copy before any event
 * naming them is queued.
 *
 * After every Join the coordinator holds nothing of this node (a Join
 * replaces any earlier entry of this address), so the link asks the loop
 * for a snapshot of the whole table, which supersedes every queued event,
 * publishes it, then the events that followed it.  While not joined,
 * events are dropped: the next snapshot covers them.  If the queue grows
 * past QUEUE_MAX (the coordinator is slower than the node's churn), it is
 * dropped and the link joins again, which republishes the inventory, so
 * memory stays bounded and the index converges.
 */
#include "node_int.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvproto/coord_service.h>
#include <kvproto/rpc_client.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAX          65536u  /* events waiting for the coordinator */
#define BATCH_MAX          KVP_BATCH_MAX  /* events per Publish */
#define PUBLISH_NS_MAX     1024u          /* namespaces per Publish (kvpool.proto) */
#define CALL_TIMEOUT_MS    2000u
#define CONNECT_TIMEOUT_MS 1000u
#define BACKOFF_MIN_MS     100u
#define BACKOFF_MAX_MS     2000u

typedef struct {
    kvp_key_t key;
    kvp_key_t parent;
    uint32_t  ns_id;
    uint8_t   stored;
    uint8_t   has_parent;
    uint8_t   tier;        /* KV_TIER_*: the index keeps a location per tier */
} link_event_t;

/* A growable array of events; [head, n) are live. */
typedef struct {
    link_event_t *v;
    size_t        head, n, cap;
} event_vec_t;

struct kv_node_coord {
    kv_node_t      *node;
    char            address[256];  /* advertised to the coordinator */

    /* loop thread only */
    event_vec_t     pending;       /* from the listener, not yet queued */
    int             pending_lost;  /* pending overflowed */
    int             efd;           /* wakes the loop */
    int             wake_armed;    /* efd written, handler not run yet */

    /* shared, under lock */
    pthread_mutex_t lock;
    pthread_cond_t  cond;          /* wakes the link thread */
    int             stop;
    int             joined;        /* the loop queues events */
    int             rejoin;        /* the queue overflowed */
    int             snapshot_wanted;
    int             snapshot_ready;
    event_vec_t     snapshot;      /* the inventory after the last Join */
    event_vec_t     queue;         /* events after the snapshot */
    uint64_t        queue_gen;     /* bumped whenever the queue is dropped */
    char          **ns_names;      /* [KV_BLOCK_TABLE_MAX_NAMESPACES] */
    size_t         *ns_lens;
    uint32_t        ns_count;      /* names copied so far */
    uint64_t        free_bytes, blocks;
    uint32_t        load;
    kv_node_stats_msg_t stats; /* the node's counters, for the heartbeat */
    uint32_t        node_id;       /* 0: not joined */

    /* link thread only */
    pthread_t        thread;
    int              thread_started;
    kv_rpc_client_t *client;
    uint64_t         incarnation;
    uint64_t         epoch;
    uint32_t         lease_ms;
    int              outage_logged;
};

static void vec_push(event_vec_t *vec, const link_event_t *e)
{
    if (vec->n == vec->cap) {
        vec->cap = vec->cap ? 2 * vec->cap : 1024;
        vec->v   = kv_realloc(vec->v, vec->cap * sizeof(*vec->v), "coordinator events");
    }
    vec->v[vec->n++] = *e;
}

static void vec_clear(event_vec_t *vec)
{
    vec->head = vec->n = 0;
}

static void vec_free(event_vec_t *vec)
{
    kv_free(vec->v);
    memset(vec, 0, sizeof(*vec));
}

/* Drop the first @p count live events. */
static void vec_consume(event_vec_t *vec, size_t count)
{
    vec->head += count;
    if (vec->head == vec->n) {
        vec_clear(vec);
    } else if (vec->head > vec->cap / 2) {
        memmove(vec->v, vec->v + vec->head, (vec->n - vec->head) * sizeof(*vec->v));
        vec->n -= vec->head;
        vec->head = 0;
    }
}

static uint64_t ms_now(void)
{
    return kv_time_ns() / 1000000u;
}

static void wake_loop(kv_node_coord_t *link)
{
    uint64_t one = 1;

    if (write(link->efd, &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
        kv_log_error("coordinator link: eventfd write: %m");
    }
}

/* ---------------------------------------------------------------------- */
/* Loop thread                                                             */
/* ---------------------------------------------------------------------- */

static void on_block(void *arg, int stored, const kv_block_t *block)
{
    kv_node_coord_t *link = arg;
    link_event_t     e    = {0};

    if (link->pending.n >= QUEUE_MAX) {
        vec_clear(&link->pending);
        link->pending_lost = 1;
    }
    e.key        = block->key;
    e.ns_id      = block->ns_id;
    e.tier       = (uint8_t)block->tier;
    e.stored     = (uint8_t)stored;
    e.has_parent = (uint8_t)(stored && block->has_parent);
    if (e.has_parent) {
        e.parent = block->parent;
    }
    vec_push(&link->pending, &e);
    if (!link->wake_armed) {
        link->wake_armed = 1;
        wake_loop(link);
    }
}

/* Copy namespace names the link has not seen yet (under lock). */
static void names_sync(kv_node_coord_t *link)
{
    const char *name;
    size_t      len;

    while (link->ns_count < KV_BLOCK_TABLE_MAX_NAMESPACES &&
           (name = kv_block_table_ns_name(link->node->table, link->ns_count, &len)) !=
               NULL) {
        link->ns_names[link->ns_count] = kv_malloc(len, "namespace");
        memcpy(link->ns_names[link->ns_count], name, len);
        link->ns_lens[link->ns_count++] = len;
    }
}

/* The figures heartbeats report (under lock). */
static void figures_update(kv_node_coord_t *link)
{
    kv_node_t             *node = link->node;
    kv_block_table_stats_t st;

    kv_block_table_stats(node->table, &st);
    link->free_bytes = kv_arena_capacity(node->arena) - kv_arena_used(node->arena);
    link->blocks     = st.blocks;
    link->load       = (uint32_t)KV_MIN(node->open_ops, UINT32_MAX);
}

static int snapshot_add(const kv_block_t *block, void *arg)
{
    link_event_t e = {0};

    e.key        = block->key;
    e.ns_id      = block->ns_id;
    e.tier       = (uint8_t)block->tier;
    e.stored     = 1;
    e.has_parent = (uint8_t)block->has_parent;
    if (block->has_parent) {
        e.parent = block->parent;
    }
    vec_push(arg, &e);
    return 0;
}

/* The eventfd: hand pending events over, take a requested snapshot. */
static void on_wake(int fd, uint32_t events, void *arg)
{
    kv_node_coord_t *link = arg;
    uint64_t         count;

    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        kv_log_error("coordinator link: eventfd read: %m");
    }
    link->wake_armed = 0;
    pthread_mutex_lock(&link->lock);
    names_sync(link);
    if (link->joined && !link->rejoin) {
        if (link->pending_lost ||
            link->queue.n - link->queue.head + link->pending.n > QUEUE_MAX) {
            kv_log_warn("coordinator link: over %u events wait for the coordinator; "
                        "dropping them and re-publishing the inventory", QUEUE_MAX);
            vec_clear(&link->queue);
            link->queue_gen++;
            link->rejoin = 1;
        } else {
            for (size_t i = 0; i < link->pending.n; i++) {
                vec_push(&link->queue, &link->pending.v[i]);
            }
        }
    }
    vec_clear(&link->pending);
    link->pending_lost = 0;
    if (link->snapshot_wanted) {
        /* the inventory now: it supersedes everything queued before */
        vec_clear(&link->snapshot);
        kv_block_table_foreach(link->node->table, snapshot_add, &link->snapshot);
        vec_clear(&link->queue);
        link->queue_gen++;
        link->snapshot_wanted = 0;
        link->snapshot_ready  = 1;
    }
    figures_update(link);
    pthread_cond_signal(&link->cond);
    pthread_mutex_unlock(&link->lock);
}

/* ---------------------------------------------------------------------- */
/* Link thread                                                             */
/* ---------------------------------------------------------------------- */

/* Sleep until @p deadline_ms or a signal on cond (under lock). */
static void wait_until(kv_node_coord_t *link, uint64_t deadline_ms)
{
    struct timespec ts;
    uint64_t        now = ms_now();

    if (deadline_ms <= now) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)((deadline_ms - now) / 1000);
    ts.tv_nsec += (long)((deadline_ms - now) % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&link->cond, &link->lock, &ts);
}

static void set_unjoined(kv_node_coord_t *link)
{
    pthread_mutex_lock(&link->lock);
    link->joined          = 0;
    link->node_id         = 0;
    link->rejoin          = 0;
    link->snapshot_wanted = 0;
    link->snapshot_ready  = 0;
    vec_free(&link->snapshot);
    vec_clear(&link->queue);
    link->queue_gen++;
    pthread_mutex_unlock(&link->lock);
}

/* A call failed with @p status: drop the connection if it is broken. */
static void link_failed(kv_node_coord_t *link, const char *what, kvp_status_t status)
{
    if (link->client != NULL && (KVP_STATUS_IS_CONNECTION_ERROR(status) ||
                                 status == KVP_ERR_TIMED_OUT)) {
        kv_rpc_client_destroy(link->client);
        link->client = NULL;
    }
    if (!link->outage_logged) {
        kv_log_warn("coordinator %s: %s failed (%s); not joined, retrying",
                    link->node->config.coordinator, what, kvp_status_string(status));
        link->outage_logged = 1;
    }
}

static kvp_status_t link_connect(kv_node_coord_t *link)
{
    kv_rpc_client_params_t params = {0};
    kvp_status_t           status;

    params.address    = link->node->config.coordinator;
    params.token      = link->node->config.token;
    params.name       = link->node->config.name;
    params.timeout_ms = CONNECT_TIMEOUT_MS;
    params.service    = &kvpool__coordinator__descriptor;
    status            = kv_rpc_client_create(&params, &link->client);
    if (status == KVP_OK && !kv_rpc_client_hello(link->client)->coordinator) {
        kv_log_error("%s is not a kvpool-coord", params.address);
        kv_rpc_client_destroy(link->client);
        link->client = NULL;
        status       = KVP_ERR_PROTOCOL;
    }
    return status;
}

static kvp_status_t link_join(kv_node_coord_t *link)
{
    kv_node_t          *node  = link->node;
    Kvpool__JoinRequest req   = KVPOOL__JOIN_REQUEST__INIT;
    Kvpool__NodeInfo    info  = KVPOOL__NODE_INFO__INIT;
    Kvpool__Tier        tiers[] = {KVPOOL__TIER__TIER_HOST, KVPOOL__TIER__TIER_SSD};
    Kvpool__JoinReply  *reply;
    kvp_status_t        status;

    pthread_mutex_lock(&link->lock);
    info.free_bytes = link->free_bytes;
    info.blocks     = link->blocks;
    info.load       = link->load;
    pthread_mutex_unlock(&link->lock);
    info.name            = node->config.name;
    info.address         = link->address;
    info.capacity_bytes  = kv_arena_capacity(node->arena);
    info.n_tiers         = node->config.ssd_dir[0] != '\0' ? 2 : 1;
    info.tiers           = tiers;
    info.data_plane.data = (uint8_t *)node->ucx_address;
    info.data_plane.len  = strlen(node->ucx_address);
    req.node             = &info;
    req.incarnation      = link->incarnation;
    status = kv_rpc_call(link->client, KV_COORD_JOIN, &req.base, NULL, 0, CALL_TIMEOUT_MS,
                         (ProtobufCMessage **)&reply, NULL);
    if (status != KVP_OK) {
        return status;
    }
    link->lease_ms = KV_MAX(reply->lease_ms, 30u);
    link->epoch    = reply->epoch;
    pthread_mutex_lock(&link->lock);
    link->joined          = 1;
    link->node_id         = reply->node_id;
    link->rejoin          = 0;
    link->snapshot_wanted = 1;
    link->snapshot_ready  = 0;
    pthread_mutex_unlock(&link->lock);
    wake_loop(link);
    kv_log_info("joined coordinator %s as node %u (%s, lease %u ms)",
                node->config.coordinator, reply->node_id, link->address, link->lease_ms);
    link->outage_logged = 0;
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    return KVP_OK;
}

static kvp_status_t link_heartbeat(kv_node_coord_t *link)
{
    Kvpool__HeartbeatRequest req = KVPOOL__HEARTBEAT_REQUEST__INIT;
    Kvpool__HeartbeatReply  *reply;
    kv_node_stats_msg_t      stats;
    kvp_status_t             status;

    pthread_mutex_lock(&link->lock);
    req.node_id    = link->node_id;
    req.free_bytes = link->free_bytes;
    req.blocks     = link->blocks;
    req.load       = link->load;
    stats          = link->stats;
    pthread_mutex_unlock(&link->lock);
    for (size_t i = 0; i < stats.reply.n_tiers; i++) {
        stats.tier_ptrs[i] = &stats.tiers[i];
    }
    stats.reply.tiers = stats.tier_ptrs;
    if (stats.reply.base.descriptor != NULL) { /* none before the first tick */
        req.stats = &stats.reply;
    }
    req.incarnation = link->incarnation;
    status = kv_rpc_call(link->client, KV_COORD_HEARTBEAT, &req.base, NULL, 0,
                         CALL_TIMEOUT_MS, (ProtobufCMessage **)&reply, NULL);
    if (status == KVP_OK) {
        if (reply->epoch != link->epoch) {
            status = KVP_ERR_NOT_FOUND; /* another coordinator process: join it */
        }
        protobuf_c_message_free_unpacked(&reply->base, NULL);
    }
    return status;
}

/*
 * Publish the next batch: from the snapshot until it is all sent, then
 * from the queue.  Returns KVP_OK with *sent_p = 0 when there is nothing
 * to send.  Called with the lock held; drops it during the call.
 */
static kvp_status_t link_publish(kv_node_coord_t *link, size_t *sent_p)
{
    Kvpool__PublishRequest req = KVPOOL__PUBLISH_REQUEST__INIT;
    Kvpool__PublishReply  *reply;
    event_vec_t           *src = NULL;
    Kvpool__BlockEvent    *events, **event_ptrs;
    ProtobufCBinaryData   *namespaces;
    uint32_t              *ns_slot; /* ns_id -> index in namespaces, +1 */
    uint8_t               *keys;    /* key and parent of each event */
    uint64_t               gen = link->queue_gen;
    size_t                 count;
    kvp_status_t           status;

    *sent_p = 0;
    if (link->snapshot_ready && link->snapshot.n > link->snapshot.head) {
        src = &link->snapshot;
    } else if (link->snapshot_ready && link->queue.n > link->queue.head) {
        src = &link->queue;
    }
    if (src == NULL) {
        return KVP_OK;
    }
    count      = KV_MIN(src->n - src->head, (size_t)BATCH_MAX);
    events     = kv_calloc(count, sizeof(*events) + sizeof(*event_ptrs), "publish events");
    event_ptrs = (Kvpool__BlockEvent **)(events + count);
    namespaces = kv_calloc(count, sizeof(*namespaces), "publish namespaces");
    ns_slot    = kv_calloc(link->ns_count + 1, sizeof(*ns_slot), "publish slots");
    keys       = kv_malloc(count * 2 * KVP_KEY_LEN, "publish keys");
    /* copied out under the lock: the loop may grow the vector meanwhile */
    for (size_t i = 0; i < count; i++) {
        const link_event_t *e = &src->v[src->head + i];

        if (ns_slot[e->ns_id] == 0 && req.n_namespaces == PUBLISH_NS_MAX) {
            count = i; /* the rest goes in the next batch */
            break;
        }
        if (ns_slot[e->ns_id] == 0) {
            namespaces[req.n_namespaces].data = (uint8_t *)link->ns_names[e->ns_id];
            namespaces[req.n_namespaces].len  = link->ns_lens[e->ns_id];
            ns_slot[e->ns_id]                 = (uint32_t)++req.n_namespaces;
        }
        kvpool__block_event__init(&events[i]);
        events[i].stored   = e->stored;
        events[i].ns       = ns_slot[e->ns_id] - 1;
        events[i].key.data = keys + i * 2 * KVP_KEY_LEN;
        events[i].key.len  = KVP_KEY_LEN;
        memcpy(events[i].key.data, e->key.bytes, KVP_KEY_LEN);
        if (e->has_parent) {
            events[i].parent.data = events[i].key.data + KVP_KEY_LEN;
            events[i].parent.len  = KVP_KEY_LEN;
            memcpy(events[i].parent.data, e->parent.bytes, KVP_KEY_LEN);
        }
        events[i].tier = e->tier == KV_TIER_SSD ? KVPOOL__TIER__TIER_SSD
                                                : KVPOOL__TIER__TIER_HOST;
        event_ptrs[i]  = &events[i];
    }
    req.node_id     = link->node_id;
    req.incarnation = link->incarnation;
    req.namespaces  = namespaces;
    req.n_events    = count;
    req.events      = event_ptrs;
    pthread_mutex_unlock(&link->lock);

    status = kv_rpc_call(link->client, KV_COORD_PUBLISH, &req.base, NULL, 0,
                         CALL_TIMEOUT_MS, (ProtobufCMessage **)&reply, NULL);
    if (status == KVP_OK) {
        protobuf_c_message_free_unpacked(&reply->base, NULL);
    } else if (status == KVP_ERR_INVALID_PARAM || status == KVP_ERR_NO_SPACE) {
        /* resending cannot help (e.g. more namespaces than it takes) */
        kv_log_warn("coordinator refused %zu events: %s; dropped", count,
                    kvp_status_string(status));
        status = KVP_OK;
    }
    kv_free(keys);
    kv_free(ns_slot);
    kv_free(namespaces);
    kv_free(events);

    pthread_mutex_lock(&link->lock);
    if (status == KVP_OK && (src == &link->snapshot || gen == link->queue_gen)) {
        vec_consume(src, count);
        *sent_p = count;
        if (src == &link->snapshot && link->snapshot.n == 0) {
            vec_free(&link->snapshot); /* all sent: give the memory back */
        }
    }
    return status;
}

static void *link_main(void *arg)
{
    kv_node_coord_t *link    = arg;
    uint32_t         backoff = BACKOFF_MIN_MS;
    uint64_t         next_heartbeat = 0;
    kvp_status_t     status  = KVP_OK;
    size_t           sent;

    pthread_mutex_lock(&link->lock);
    while (!link->stop) {
        if (link->client == NULL || !link->joined || link->rejoin) {
            pthread_mutex_unlock(&link->lock);
            set_unjoined(link);
            status = link->client ? KVP_OK : link_connect(link);
            if (status == KVP_OK) {
                status = link_join(link);
            }
            if (status != KVP_OK) {
                link_failed(link, link->client ? "Join" : "connecting", status);
                pthread_mutex_lock(&link->lock);
                wait_until(link, ms_now() + backoff);
                backoff = KV_MIN(2 * backoff, BACKOFF_MAX_MS);
                continue;
            }
            backoff        = BACKOFF_MIN_MS;
            next_heartbeat = ms_now() + link->lease_ms / 3;
            pthread_mutex_lock(&link->lock);
            continue;
        }
        if (ms_now() >= next_heartbeat) {
            pthread_mutex_unlock(&link->lock);
            status = link_heartbeat(link);
            if (status != KVP_OK) {
                link_failed(link, "Heartbeat", status);
            }
            next_heartbeat = ms_now() + link->lease_ms / 3;
            pthread_mutex_lock(&link->lock);
            if (status != KVP_OK) {
                link->joined = 0;
            }
            continue;
        }
        status = link_publish(link, &sent);
        if (status != KVP_OK) {
            pthread_mutex_unlock(&link->lock);
            link_failed(link, "Publish", status);
            pthread_mutex_lock(&link->lock);
            link->joined = 0;
            continue;
        }
        if (sent == 0) {
            wait_until(link, next_heartbeat);
        }
    }
    pthread_mutex_unlock(&link->lock);
    if (link->client != NULL) {
        kv_rpc_client_destroy(link->client);
        link->client = NULL;
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Life cycle                                                              */
/* ---------------------------------------------------------------------- */

void kv_node_advertised_address(const kv_node_t *node, char *out, size_t len)
{
    const kv_node_config_t *config = &node->config;

    if (config->advertise[0] != '\0') {
        snprintf(out, len, "%s", config->advertise);
    } else {
        snprintf(out, len, strchr(config->listen, ':') ? "[%s]:%u" : "%s:%u",
                 config->listen, kv_rpc_server_port(node->server));
    }
}

kvp_status_t kv_node_coord_create(kv_node_t *node)
{
    kv_node_coord_t   *link = kv_calloc(1, sizeof(*link), "coordinator link");
    pthread_condattr_t attr;

    link->node     = node;
    link->ns_names = kv_calloc(KV_BLOCK_TABLE_MAX_NAMESPACES, sizeof(*link->ns_names),
                               "namespace names");
    link->ns_lens  = kv_calloc(KV_BLOCK_TABLE_MAX_NAMESPACES, sizeof(*link->ns_lens),
                               "namespace lengths");
    kv_node_advertised_address(node, link->address, sizeof(link->address));
    if (getrandom(&link->incarnation, sizeof(link->incarnation), 0) !=
        sizeof(link->incarnation)) {
        /* still differs per process start, which is all it must do */
        link->incarnation = kv_time_ns() ^ ((uint64_t)getpid() << 40);
    }
    link->incarnation |= 1; /* never 0, which the coordinator refuses */
    pthread_mutex_init(&link->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&link->cond, &attr);
    pthread_condattr_destroy(&attr);
    node->coord = link;
    link->efd   = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (link->efd < 0) {
        kv_log_error("coordinator link: eventfd: %m");
        goto err;
    }
    if (kv_evloop_add(node->loop, link->efd, EPOLLIN, on_wake, link) != KVP_OK) {
        close(link->efd);
        link->efd = -1;
        goto err;
    }
    figures_update(link);
    kv_block_table_set_listener(node->table, on_block, link);
    if (pthread_create(&link->thread, NULL, link_main, link) != 0) {
        kv_log_error("coordinator link: cannot start its thread");
        goto err;
    }
    link->thread_started = 1;
    kv_log_info("coordinator %s: joining as %s", node->config.coordinator, link->address);
    return KVP_OK;

err:
    kv_node_coord_destroy(node);
    return KVP_ERR_IO;
}

void kv_node_coord_tick(kv_node_t *node)
{
    kv_node_coord_t    *link = node->coord;
    kv_node_stats_msg_t stats;

    if (link == NULL) {
        return;
    }
    kv_node_stats_fill(node, &stats); /* it takes the lock itself */
    pthread_mutex_lock(&link->lock);
    figures_update(link);
    link->stats = stats; /* the heartbeat points its tiers at its copy */
    pthread_mutex_unlock(&link->lock);
}

uint32_t kv_node_coord_id(kv_node_t *node)
{
    kv_node_coord_t *link = node->coord;
    uint32_t         id;

    if (link == NULL) {
        return 0;
    }
    pthread_mutex_lock(&link->lock);
    id = link->node_id;
    pthread_mutex_unlock(&link->lock);
    return id;
}

void kv_node_coord_destroy(kv_node_t *node)
{
    kv_node_coord_t *link = node->coord;

    if (link == NULL) {
        return;
    }
    if (link->thread_started) {
        pthread_mutex_lock(&link->lock);
        link->stop = 1;
        pthread_cond_signal(&link->cond);
        pthread_mutex_unlock(&link->lock);
        pthread_join(link->thread, NULL);
    }
    kv_block_table_set_listener(node->table, NULL, NULL);
    if (link->efd >= 0) {
        kv_evloop_remove(node->loop, link->efd);
        close(link->efd);
    }
    for (uint32_t i = 0; i < link->ns_count; i++) {
        kv_free(link->ns_names[i]);
    }
    kv_free(link->ns_names);
    kv_free(link->ns_lens);
    vec_free(&link->pending);
    vec_free(&link->snapshot);
    vec_free(&link->queue);
    pthread_cond_destroy(&link->cond);
    pthread_mutex_destroy(&link->lock);
    kv_free(link);
    node->coord = NULL;
}
