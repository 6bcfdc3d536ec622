/*
 * Two-phase put and leased get, whatever moves the bytes.
 *
 *   put:  PutStart (the node reserves pending blocks and says where)
 *         -> move the caller's bytes into the arena, noting their checksums
 *         -> PutCommit (the node checks each block against its checksum and
 *            makes the good ones visible)
 *   get:  GetStart (the node pins the blocks under a lease and says where,
 *            with their checksums)
 *         -> move the bytes into the caller's buffers, noting checksums
 *         -> verify: a mismatch is a miss, never data
 *         -> GetEnd
 *
 * The mover is the data path: memcpy through the mapped arena (shm.c) or
 * one-sided transfers (ucx.c).  A mover failure fails the call that saw it
 * with a connection error: a get's blocks are then errors (their buffers
 * hold no trusted bytes), and a put still commits, which frees its
 * reservations at once and keeps only blocks whose bytes match.
 */
#include "client_int.h"

#include <kv/alloc.h>
#include <kv/log.h>

/* The blocks of a call that have a span, packed for the mover. */
typedef struct {
    size_t    n;
    size_t   *index;     /* block number of each */
    void    **locals;
    uint64_t *offsets, *lens, *sums;
} moves_t;

static void moves_init(moves_t *m, size_t count)
{
    m->n       = 0;
    m->index   = kv_calloc(count + 1, sizeof(*m->index), "moves");
    m->locals  = kv_calloc(count + 1, sizeof(*m->locals), "moves");
    m->offsets = kv_calloc(count + 1, sizeof(*m->offsets), "moves");
    m->lens    = kv_calloc(count + 1, sizeof(*m->lens), "moves");
    m->sums    = kv_calloc(count + 1, sizeof(*m->sums), "moves");
}

static void moves_add(moves_t *m, size_t i, void *local, const Kvpool__BlockSpan *span)
{
    m->index[m->n]   = i;
    m->locals[m->n]  = local;
    m->offsets[m->n] = span->offset;
    m->lens[m->n]    = span->size;
    m->n++;
}

static void moves_cleanup(moves_t *m)
{
    kv_free(m->index);
    kv_free(m->locals);
    kv_free(m->offsets);
    kv_free(m->lens);
    kv_free(m->sums);
}

/* A span from the node must lie inside the arena before anyone uses it. */
static int span_valid(const Kvpool__BlockSpan *span, uint64_t arena_size)
{
    return span->size > 0 && span->offset <= arena_size &&
           span->size <= arena_size - span->offset;
}

/* What the node counts the bytes of @p move under. */
static Kvpool__Transport move_transport(kvp__move_func_t move)
{
    return move == kvp__shm_move ? KVPOOL__TRANSPORT__TRANSPORT_SHM
                                 : KVPOOL__TRANSPORT__TRANSPORT_UCX;
}

kvp_status_t kvp__twophase_put(kvp_client_h client, kvp__move_func_t move,
                               uint64_t arena_size, const char *ns,
                               const kvp_key_t *keys, const void *const *datas,
                               const uint64_t *sizes, size_t count, int chain,
                               const kvp_key_t *parent, kvp_status_t *statuses)
{
    Kvpool__PutStartRequest  start   = KVPOOL__PUT_START_REQUEST__INIT;
    Kvpool__PutCommitRequest commit  = KVPOOL__PUT_COMMIT_REQUEST__INIT;
    Kvpool__PutStartReply   *started = NULL;
    Kvpool__PutCommitReply  *done    = NULL;
    kvp_status_t             status, moved = KVP_OK;
    moves_t                  m;

    start.ns      = kvp__ns_bytes(ns);
    start.n_keys  = count;
    start.keys    = kvp__keys_borrow(keys, count);
    start.n_sizes = count;
    start.sizes   = (uint64_t *)sizes;
    start.chain   = chain != 0;
    start.transport = move_transport(move);
    if (chain && parent != NULL) {
        start.parent.data = (uint8_t *)parent->bytes;
        start.parent.len  = KVP_KEY_LEN;
    }
    status = kv_rpc_call(client->rpc, KV_POOL_PUT_START, &start.base, NULL, 0,
                         client->timeout_ms, (ProtobufCMessage **)&started, NULL);
    kv_free(start.keys);
    if (status != KVP_OK) {
        return status;
    }
    if (started->n_blocks != count) {
        status = KVP_ERR_PROTOCOL;
        goto out_started;
    }
    moves_init(&m, count);
    for (size_t i = 0; i < count; i++) {
        const Kvpool__BlockSpan *span = started->blocks[i];
        if (span->status != KVP_OK) {
            continue;
        }
        if (!span_valid(span, arena_size) || span->size != sizes[i]) {
            status = KVP_ERR_PROTOCOL;
            break;
        }
        moves_add(&m, i, (void *)datas[i], span);
    }
    if (status == KVP_OK && m.n > 0) {
        moved = move(client, 1, m.locals, m.offsets, m.lens, m.n, m.sums);
    }
    if (status == KVP_OK) {
        commit.put_id      = started->put_id;
        commit.n_checksums = count;
        commit.checksums   = kv_calloc(count + 1, sizeof(uint64_t), "checksums");
        for (size_t j = 0; j < m.n; j++) {
            commit.checksums[m.index[j]] = m.sums[j];
        }
        status = kv_rpc_call(client->rpc, KV_POOL_PUT_COMMIT, &commit.base, NULL, 0,
                             client->timeout_ms, (ProtobufCMessage **)&done, NULL);
        kv_free(commit.checksums);
    }
    if (status == KVP_OK && done->n_statuses != count) {
        status = KVP_ERR_PROTOCOL;
    }
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        int had_span = started->blocks[i]->status == KVP_OK;
        statuses[i]  = had_span ? (kvp_status_t)done->statuses[i]
                                : (kvp_status_t)started->blocks[i]->status;
        if (moved != KVP_OK && had_span && statuses[i] != KVP_OK) {
            statuses[i] = moved;
        }
    }
    if (status == KVP_OK) {
        status = moved;
    }
    if (done != NULL) {
        kvpool__put_commit_reply__free_unpacked(done, NULL);
    }
    moves_cleanup(&m);
out_started:
    kvpool__put_start_reply__free_unpacked(started, NULL);
    return status;
}

kvp_status_t kvp__twophase_get(kvp_client_h client, kvp__move_func_t move,
                               uint64_t arena_size, const char *ns,
                               const kvp_key_t *keys, void *const *bufs,
                               const uint64_t *capacities, size_t count,
                               uint64_t *sizes, kvp_status_t *statuses)
{
    Kvpool__GetStartRequest start   = KVPOOL__GET_START_REQUEST__INIT;
    Kvpool__GetEndRequest   end     = KVPOOL__GET_END_REQUEST__INIT;
    Kvpool__GetStartReply  *started = NULL;
    kvp_status_t            status, end_status, moved = KVP_OK;
    moves_t                 m;

    start.ns        = kvp__ns_bytes(ns);
    start.n_keys    = count;
    start.keys      = kvp__keys_borrow(keys, count);
    start.transport = move_transport(move);
    status = kv_rpc_call(client->rpc, KV_POOL_GET_START, &start.base, NULL, 0,
                         client->timeout_ms, (ProtobufCMessage **)&started, NULL);
    kv_free(start.keys);
    if (status != KVP_OK) {
        return status;
    }
    if (started->n_blocks != count) {
        status = KVP_ERR_PROTOCOL;
    }
    moves_init(&m, count);
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        const Kvpool__BlockSpan *span = started->blocks[i];
        statuses[i] = (kvp_status_t)span->status;
        if (span->status != KVP_OK) {
            continue;
        }
        if (!span_valid(span, arena_size)) {
            status = KVP_ERR_PROTOCOL;
            break;
        }
        sizes[i] = span->size;
        if (span->size > capacities[i]) {
            statuses[i] = KVP_ERR_BUFFER_TOO_SMALL;
            continue;
        }
        moves_add(&m, i, bufs[i], span);
    }
    if (status == KVP_OK && m.n > 0) {
        moved = move(client, 0, m.locals, m.offsets, m.lens, m.n, m.sums);
    }
    for (size_t j = 0; status == KVP_OK && j < m.n; j++) {
        size_t i = m.index[j];
        if (moved != KVP_OK) {
            statuses[i] = moved; /* the buffer's bytes are not the block's */
        } else if (m.sums[j] != started->blocks[i]->checksum) {
            kv_log_warn("get: block failed its checksum; treating it as a miss");
            statuses[i] = KVP_ERR_CHECKSUM;
        }
    }
    moves_cleanup(&m);
    /* end the lease even if the node gave nonsense: it pins blocks */
    end.lease_id = started->lease_id;
    end_status   = kv_rpc_call(client->rpc, KV_POOL_GET_END, &end.base, NULL, 0,
                               client->timeout_ms, NULL, NULL);
    if (status == KVP_OK) {
        status = moved;
    }
    if (status == KVP_OK && end_status != KVP_OK && end_status != KVP_ERR_NOT_FOUND) {
        status = end_status;
    }
    kvpool__get_start_reply__free_unpacked(started, NULL);
    return status;
}
