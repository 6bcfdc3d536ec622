/*
 * Two-phase put and leased get: the RPCs of the data plane.  The bytes
 * themselves move outside the RPC channel (memcpy through the shared arena
 * on the same host, one-sided transfers elsewhere); these calls say where
 * they go and keep the blocks safe meanwhile:
 *
 *   PutStart  reserves pending blocks (invisible, never evicted) and says
 *             where to write them;
 *   PutCommit checks each block's bytes against the client's checksum and
 *             makes the good ones visible; the others are dropped;
 *   GetStart  pins the blocks found under a lease and returns where they
 *             are with their checksums (the client verifies after reading);
 *   GetEnd    unpins.
 *
 * Each open reservation or lease is an operation of its connection's
 * session.  It ends with its second call, with its connection, or when it
 * is older than lease_ms (then a lease is unpinned and a reservation is
 * reclaimed), so a client that dies or stalls holds nothing for long.
 */
#include "node_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <string.h>

/* Open operations per connection: bounds what one client can hold. */
#define SESSION_OPS_MAX 1024

typedef struct op {
    struct op   *next;
    uint64_t     id;
    int          is_put;
    uint64_t     expires_ns;
    size_t       n;
    kv_block_t **blocks;    /* NULL where the block has no span */
    int32_t     *statuses;  /* why, for puts */
    uint64_t     start_ns;  /* when it started (latency metrics) */
    unsigned     transport; /* the client's, kv_node_transport() */
} op_t;

struct kv_node_session {
    kv_node_session_t *prev, *next;
    kv_node_t         *node;
    op_t              *ops;
    size_t             num_ops;
};

static kv_node_session_t *session_get(kv_node_t *node, kv_rpc_call_t *call)
{
    void             **slot = kv_rpc_call_conn_data(call);
    kv_node_session_t *session = *slot;

    if (session == NULL) {
        session       = kv_calloc(1, sizeof(*session), "session");
        session->node = node;
        session->next = node->sessions;
        if (node->sessions != NULL) {
            node->sessions->prev = session;
        }
        node->sessions = session;
        *slot          = session;
    }
    return session;
}

static op_t *op_create(kv_node_session_t *session, int is_put, size_t n)
{
    kv_node_t *node = session->node;
    op_t      *op   = kv_calloc(1, sizeof(*op), "operation");

    op->id         = ++node->next_op_id;
    op->is_put     = is_put;
    op->n          = n;
    op->start_ns   = kv_time_ns();
    op->expires_ns = op->start_ns + (uint64_t)node->config.lease_ms * 1000000;
    op->blocks     = kv_calloc(n, sizeof(*op->blocks), "operation blocks");
    op->statuses   = kv_calloc(n, sizeof(*op->statuses), "operation statuses");
    op->next       = session->ops;
    session->ops   = op;
    session->num_ops++;
    node->open_ops++;
    return op;
}

/* Unpin a lease's blocks or drop a reservation's, then free the op. */
static void op_release(kv_node_session_t *session, op_t *op)
{
    kv_block_table_t *table = session->node->table;

    for (op_t **pp = &session->ops; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            session->num_ops--;
            session->node->open_ops--;
            break;
        }
    }
    for (size_t i = 0; i < op->n; i++) {
        if (op->blocks[i] == NULL) {
            continue;
        }
        if (op->is_put) {
            kv_block_table_abort(table, op->blocks[i]);
        } else {
            kv_block_table_unpin(table, op->blocks[i]);
        }
    }
    kv_free(op->blocks);
    kv_free(op->statuses);
    kv_free(op);
}

static op_t *op_find(kv_node_session_t *session, uint64_t id, int is_put)
{
    for (op_t *op = session->ops; op != NULL; op = op->next) {
        if (op->id == id && op->is_put == is_put) {
            return op;
        }
    }
    return NULL;
}

/* Replies carry an array of spans; build it in one allocation. */
static Kvpool__BlockSpan **spans_alloc(size_t n)
{
    Kvpool__BlockSpan **ptrs  = kv_malloc(n * (sizeof(void *) + sizeof(Kvpool__BlockSpan)) + 1,
                                         "spans");
    Kvpool__BlockSpan  *spans = (Kvpool__BlockSpan *)(ptrs + n);

    for (size_t i = 0; i < n; i++) {
        kvpool__block_span__init(&spans[i]);
        ptrs[i] = &spans[i];
    }
    return ptrs;
}

/*
 * The checks every PutStart and GetStart makes: its keys, and room for one
 * more open operation.  Returns the connection's session, or NULL after an
 * error reply.
 */
static kv_node_session_t *op_begin(kv_rpc_call_t *call, kv_node_t *node,
                                   const ProtobufCBinaryData *ns,
                                   const ProtobufCBinaryData *keys, size_t n_keys)
{
    kv_node_session_t *session;

    if (!kv_node_check_keys(call, ns, keys, n_keys)) {
        return NULL;
    }
    session = session_get(node, call);
    if (session->num_ops >= SESSION_OPS_MAX) {
        kv_rpc_reply_error(call, KVP_ERR_NO_SPACE,
                           "%d operations already open on this connection",
                           SESSION_OPS_MAX);
        return NULL;
    }
    return session;
}

void kv_node_put_start(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__PutStartRequest *req   = (const Kvpool__PutStartRequest *)msg;
    kv_node_t                     *node  = arg;
    Kvpool__PutStartReply          reply = KVPOOL__PUT_START_REPLY__INIT;
    uint64_t max_size = KV_MIN(kv_arena_capacity(node->arena), KVP_BLOCK_MAX);
    kv_node_session_t             *session;
    uint32_t                       ns_id;
    kvp_status_t                   status;
    op_t                          *op;

    if (req->n_sizes != req->n_keys || req->n_keys == 0) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%zu keys but %zu sizes", req->n_keys, req->n_sizes);
        return;
    }
    if ((req->parent.len != 0) && (!req->chain || (req->parent.len != KVP_KEY_LEN))) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "a parent key needs chain and %d bytes, not %zu",
                           KVP_KEY_LEN, req->parent.len);
        return;
    }
    session = op_begin(call, node, &req->ns, req->keys, req->n_keys);
    if (session == NULL) {
        return;
    }
    status = kv_block_table_ns_id(node->table, (const char *)req->ns.data, req->ns.len,
                                  1, &ns_id);
    if (status != KVP_OK) {
        kv_rpc_reply_error(call, status, "cannot add another namespace");
        return;
    }
    op            = op_create(session, 1, req->n_keys);
    op->transport = kv_node_transport(req->transport);
    reply.put_id  = op->id;
    reply.n_blocks = req->n_keys;
    reply.blocks  = spans_alloc(req->n_keys);
    for (size_t i = 0; i < req->n_keys; i++) {
        if (req->sizes[i] == 0 || req->sizes[i] > max_size) {
            status = req->sizes[i] == 0 ? KVP_ERR_INVALID_PARAM : KVP_ERR_TOO_LARGE;
        } else {
            status = kv_block_table_reserve(node->table, ns_id,
                                            (const kvp_key_t *)req->keys[i].data,
                                            req->sizes[i], &op->blocks[i]);
        }
        op->statuses[i]          = status;
        reply.blocks[i]->status  = status;
        if ((status == KVP_OK) && req->chain && ((i > 0) || (req->parent.len != 0))) {
            kv_block_table_set_parent(op->blocks[i], (const kvp_key_t *)
                                      (i > 0 ? req->keys[i - 1].data : req->parent.data));
        }
        if (status == KVP_OK) {
            reply.blocks[i]->offset = op->blocks[i]->offset;
            reply.blocks[i]->size   = op->blocks[i]->size;
        }
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
    kv_free(reply.blocks);
}

void kv_node_put_commit(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                        const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__PutCommitRequest *req     = (const Kvpool__PutCommitRequest *)msg;
    kv_node_t                      *node    = arg;
    Kvpool__PutCommitReply          reply   = KVPOOL__PUT_COMMIT_REPLY__INIT;
    kv_node_session_t              *session = session_get(node, call);
    op_t                           *op      = op_find(session, req->put_id, 1);

    if (op == NULL) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND,
                           "no open put %llu (committed, expired or never started)",
                           (unsigned long long)req->put_id);
        return;
    }
    if (req->n_checksums != op->n) {
        kv_rpc_reply_error(call, KVP_ERR_INVALID_PARAM,
                           "%zu checksums for %zu blocks", req->n_checksums, op->n);
        op_release(session, op);
        return;
    }
    reply.n_statuses = op->n;
    reply.statuses   = op->statuses;
    for (size_t i = 0; i < op->n; i++) {
        kv_block_t *block = op->blocks[i];
        if (block == NULL) {
            continue;
        }
        op->blocks[i] = NULL;
        if (kv_checksum(kv_block_table_data(node->table, block), block->size) !=
            req->checksums[i]) {
            kv_block_table_abort(node->table, block);
            op->statuses[i] = KVP_ERR_CHECKSUM;
            node->put_checksum_failures++;
            continue;
        }
        node->bytes_put[op->transport] += block->size;
        kv_block_table_commit(node->table, block, req->checksums[i]);
        node->puts++;
        node->bytes_in += block->size;
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
    kv_histogram_observe(&node->put_seconds[op->transport],
                         (double)(kv_time_ns() - op->start_ns) / 1e9);
    op_release(session, op);
    kv_block_table_balance(node->table); /* after the reply: it may write to SSD */
}

void kv_node_get_start(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__GetStartRequest *req   = (const Kvpool__GetStartRequest *)msg;
    kv_node_t                     *node  = arg;
    Kvpool__GetStartReply          reply = KVPOOL__GET_START_REPLY__INIT;
    kv_node_session_t             *session;
    op_t                          *op;

    session = op_begin(call, node, &req->ns, req->keys, req->n_keys);
    if (session == NULL) {
        return;
    }
    op             = op_create(session, 0, req->n_keys);
    op->transport  = kv_node_transport(req->transport);
    reply.lease_id = op->id;
    reply.lease_ms = node->config.lease_ms;
    reply.n_blocks = req->n_keys;
    reply.blocks   = spans_alloc(req->n_keys);
    kv_node_find_pinned(node, &req->ns, req->keys, req->n_keys, op->blocks);
    for (size_t i = 0; i < req->n_keys; i++) {
        kv_block_t *block = op->blocks[i];

        if (block == NULL) {
            reply.blocks[i]->status = KVP_ERR_NOT_FOUND;
            continue;
        }
        node->bytes_got[op->transport] += block->size;
        reply.blocks[i]->status   = KVP_OK;
        reply.blocks[i]->offset   = block->offset;
        reply.blocks[i]->size     = block->size;
        reply.blocks[i]->checksum = block->checksum;
    }
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
    kv_free(reply.blocks);
}

void kv_node_get_end(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                     const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__GetEndRequest *req     = (const Kvpool__GetEndRequest *)msg;
    kv_node_t                   *node    = arg;
    Kvpool__GetEndReply          reply   = KVPOOL__GET_END_REPLY__INIT;
    kv_node_session_t           *session = session_get(node, call);
    op_t                        *op      = op_find(session, req->lease_id, 0);

    if (op == NULL) {
        kv_rpc_reply_error(call, KVP_ERR_NOT_FOUND, "no lease %llu (ended or expired)",
                           (unsigned long long)req->lease_id);
        return;
    }
    kv_histogram_observe(&node->get_seconds[op->transport],
                         (double)(kv_time_ns() - op->start_ns) / 1e9);
    op_release(session, op);
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

static void session_free(kv_node_session_t *session)
{
    kv_node_t *node = session->node;

    while (session->ops != NULL) {
        op_release(session, session->ops);
    }
    if (session->prev != NULL) {
        session->prev->next = session->next;
    } else {
        node->sessions = session->next;
    }
    if (session->next != NULL) {
        session->next->prev = session->prev;
    }
    kv_free(session);
}

void kv_node_session_close(void *session, void *arg)
{
    session_free(session);
}

void kv_node_sessions_expire(kv_node_t *node)
{
    uint64_t now = kv_time_ns();

    for (kv_node_session_t *session = node->sessions; session; session = session->next) {
        op_t *op = session->ops, *next;
        for (; op != NULL; op = next) {
            next = op->next;
            if (now > op->expires_ns) {
                kv_log_info("%s %llu expired after %u ms", op->is_put ? "put" : "lease",
                            (unsigned long long)op->id, node->config.lease_ms);
                node->lease_expiries++;
                op_release(session, op);
            }
        }
    }
}

void kv_node_sessions_destroy(kv_node_t *node)
{
    while (node->sessions != NULL) {
        session_free(node->sessions);
    }
}
