/*
 * The network data path: block bytes move one-sided through the transport
 * layer (kvt, backend "ucx") between the caller's buffers and the node's
 * arena, which the node registered whole and announced in its HelloReply
 * (ucx_address, ucx_rkey, arena_base; see pool/node_ucx.c).  The RPCs are
 * the same-host path's two-phase ones (client/shm.c):
 *   put: PutStart -> kvt_ep_put(caller's data -> arena_base + span.offset)
 *        -> wait -> kvt_ep_flush (remote completion) -> PutCommit with the
 *        checksums of the caller's data (the node checks the arena's bytes);
 *   get: GetStart -> kvt_ep_get(arena -> caller's buffers) -> wait ->
 *        verify each block's checksum (a mismatch is KVP_ERR_CHECKSUM, a
 *        miss) -> GetEnd.
 *
 * Local memory: each caller buffer is registered for the call
 * (kvt_mem_reg / kvt_mem_dereg).  Simple and always correct; the cost is
 * one registration per block per call (cheap over TCP, a page pinning on
 * RDMA NICs: a registration cache would be the next step there).
 *
 * Threads: a kvt context is single-threaded, so every kvt_* call of a
 * client holds ucx->lock (several application threads and the async
 * workers share a client).  The RPCs themselves run outside the lock.
 *
 * Failures: every wait is bounded by the context's deadline (the client's
 * timeout).  A transport failure (the endpoint failed, or a deadline
 * passed) fails the call that saw it with a connection error: the puts of
 * that call that the node did not verify, and every get of it, report the
 * error (a get never returns bytes that did not pass their checksum).  The
 * endpoint is then dropped, and later calls of the client move their bytes
 * in frames over the RPC connection (kvp_client_transport() then says
 * "frame"); if the node itself is gone, those fail as frame calls do.
 */
#include "client_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>

#include <kvt/transport.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct kvp__ucx {
    pthread_mutex_t lock;      /* every kvt_* call holds it */
    kvt_context_h   ctx;
    kvt_ep_h        ep;        /* NULL once failed */
    atomic_int      failed;    /* the endpoint failed: use frames */
    uint8_t        *rkey;
    size_t          rkey_len;
    uint64_t        arena_base;
    uint64_t        arena_size;
    struct kvp_mem *mems;      /* the caller's registrations (kvp_mem_reg) */
};

/* A registration of caller memory (kvp_mem_reg). */
struct kvp_mem {
    struct kvp_mem *next;
    kvp_client_h    client;
    void           *addr;
    size_t          len;
    kvt_mem_h       mem;       /* NULL without the network data path */
};

/*
 * The address to connect to: the node's announced listener, except that a
 * node listening on every interface announces "0.0.0.0:P" / "[::]:P"; then
 * the host this client reached the node's RPCs at, with port P.
 */
static int ucx_target(const char *announced, const char *rpc_address, char *out,
                      size_t len)
{
    const char *port = strrchr(announced, ':');
    const char *host_end;

    if (port == NULL) {
        return -1;
    }
    if (strncmp(announced, "0.0.0.0:", 8) != 0 && strncmp(announced, "[::]:", 5) != 0) {
        return snprintf(out, len, "%s", announced) < (int)len ? 0 : -1;
    }
    host_end = strrchr(rpc_address, ':');
    if (host_end == NULL) {
        return -1;
    }
    return snprintf(out, len, "%.*s%s", (int)(host_end - rpc_address), rpc_address, port) <
                   (int)len
               ? 0
               : -1;
}

kvp_status_t kvp__ucx_attach(kvp_client_h client, const char *rpc_address)
{
    char target[300];
    const Kvpool__HelloReply *hello  = kv_rpc_client_hello(client->rpc);
    kvt_params_t              params = {
                     .field_mask = KVT_PARAM_FIELD_BACKEND | KVT_PARAM_FIELD_TIMEOUT_MS,
                     .backend    = "ucx",
                     .timeout_ms = client->timeout_ms > 0 ? client->timeout_ms : 1};
    kvp__ucx_t  *ucx;
    kvp_status_t status;

    if (hello->ucx_address == NULL || hello->ucx_address[0] == '\0' ||
        hello->ucx_rkey.len == 0 || hello->ucx_rkey.len > KVT_RKEY_MAX ||
        hello->arena_size == 0) {
        return KVP_ERR_UNSUPPORTED;
    }
    if (ucx_target(hello->ucx_address, rpc_address, target, sizeof(target)) != 0) {
        return KVP_ERR_PROTOCOL;
    }
    ucx = kv_calloc(1, sizeof(*ucx), "ucx path");
    status = kvt_context_create(&params, &ucx->ctx);
    if (status != KVP_OK) {
        kv_log_info("ucx: no context: %s", kvp_status_string(status));
        goto err_free;
    }
    status = kvt_ep_connect(ucx->ctx, target, &ucx->ep);
    if (status != KVP_OK) {
        kv_log_info("ucx: cannot connect to %s: %s", target,
                    kvp_status_string(status));
        goto err_ctx;
    }
    {
        char info[512];
        if (kvt_ucx_ep_info(ucx->ep, info, sizeof(info)) == KVP_OK) {
            info[strcspn(info, "\n")] = '\0';
            kv_log_info("ucx: connected to %s (%s)", target, info);
        }
    }
    pthread_mutex_init(&ucx->lock, NULL);
    ucx->rkey = kv_malloc(hello->ucx_rkey.len, "ucx rkey");
    memcpy(ucx->rkey, hello->ucx_rkey.data, hello->ucx_rkey.len);
    ucx->rkey_len   = hello->ucx_rkey.len;
    ucx->arena_base = hello->arena_base;
    ucx->arena_size = hello->arena_size;
    client->ucx     = ucx;
    return KVP_OK;

err_ctx:
    kvt_context_destroy(ucx->ctx);
err_free:
    kv_free(ucx);
    return status;
}

void kvp__ucx_detach(kvp_client_h client)
{
    kvp__ucx_t *ucx = client->ucx;

    if (ucx == NULL) {
        return;
    }
    while (ucx->mems != NULL) { /* left registered by the caller */
        struct kvp_mem *m = ucx->mems;
        ucx->mems         = m->next;
        kvt_mem_dereg(m->mem);
        kv_free(m);
    }
    kvt_ep_destroy(ucx->ep);
    kvt_context_destroy(ucx->ctx);
    pthread_mutex_destroy(&ucx->lock);
    kv_free(ucx->rkey);
    kv_free(ucx);
    client->ucx = NULL;
}

int kvp__ucx_usable(kvp_client_h client)
{
    return client->ucx != NULL && !atomic_load(&client->ucx->failed);
}

/* Record an endpoint failure (lock held): later calls use frames. */
static void ep_failed(kvp__ucx_t *ucx, kvp_status_t status)
{
    if (!atomic_exchange(&ucx->failed, 1)) {
        kv_log_warn("ucx: data path failed (%s); moving blocks in frames from now on",
                    kvp_status_string(status));
    }
    kvt_ep_destroy(ucx->ep);
    ucx->ep = NULL;
}

/* Map any transport failure onto a connection error for the caller. */
static kvp_status_t as_connection_error(kvp_status_t status)
{
    return status == KVP_ERR_TIMED_OUT || KVP_STATUS_IS_CONNECTION_ERROR(status)
               ? status
               : KVP_ERR_CONNECTION_LOST;
}

/* The caller's registration covering [addr, addr + len), or NULL.  Under lock. */
static kvt_mem_h registered(const kvp__ucx_t *ucx, const void *addr, size_t len)
{
    for (const struct kvp_mem *m = ucx->mems; m != NULL; m = m->next) {
        if ((const uint8_t *)addr >= (const uint8_t *)m->addr &&
            len <= m->len - (size_t)((const uint8_t *)addr - (const uint8_t *)m->addr)) {
            return m->mem;
        }
    }
    return NULL;
}

kvp_status_t kvp_mem_reg(kvp_client_h client, void *addr, size_t len, kvp_mem_h *mem_p)
{
    kvp__ucx_t     *ucx = client != NULL ? client->ucx : NULL;
    struct kvp_mem *m;
    kvp_status_t    status = KVP_OK;

    if (client == NULL || addr == NULL || len == 0 || mem_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    m         = kv_calloc(1, sizeof(*m), "registration");
    m->client = client;
    m->addr   = addr;
    m->len    = len;
    if (ucx == NULL) {
        *mem_p = m; /* nothing to register with: shared arena or frames */
        return KVP_OK;
    }
    pthread_mutex_lock(&ucx->lock);
    status = kvt_mem_reg(ucx->ctx, addr, len, &m->mem);
    if (status == KVP_OK) {
        m->next   = ucx->mems;
        ucx->mems = m;
    }
    pthread_mutex_unlock(&ucx->lock);
    if (status != KVP_OK) {
        kv_free(m);
        return status;
    }
    *mem_p = m;
    return KVP_OK;
}

void kvp_mem_dereg(kvp_mem_h m)
{
    kvp__ucx_t *ucx;

    if (m == NULL) {
        return;
    }
    ucx = m->client->ucx;
    if (m->mem != NULL && ucx != NULL) {
        pthread_mutex_lock(&ucx->lock);
        for (struct kvp_mem **pp = &ucx->mems; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == m) {
                *pp = m->next;
                break;
            }
        }
        kvt_mem_dereg(m->mem);
        pthread_mutex_unlock(&ucx->lock);
    }
    kv_free(m);
}

/*
 * Move @p n pieces (put: local -> remote; get: remote -> local), every
 * local buffer registered, by the caller (kvp_mem_reg) or for the call.  @return KVP_OK or the failure (the
 * endpoint is then dropped).
 */
static kvp_status_t transfer(kvp__ucx_t *ucx, int is_put, kvt_iov_t *iov, size_t n)
{
    kvt_mem_h    *mems = kv_calloc(n + 1, sizeof(*mems), "ucx registrations");
    kvt_request_h req  = NULL;
    kvp_status_t  status = KVP_OK;
    size_t        reg    = 0;

    pthread_mutex_lock(&ucx->lock);
    if (ucx->ep == NULL) {
        status = KVP_ERR_CONNECTION_LOST;
        goto out;
    }
    for (; reg < n; reg++) {
        iov[reg].local_mem = registered(ucx, iov[reg].local, iov[reg].len);
        if (iov[reg].local_mem != NULL) {
            continue; /* the caller registered it once (kvp_mem_reg) */
        }
        status = kvt_mem_reg(ucx->ctx, iov[reg].local, iov[reg].len, &mems[reg]);
        if (status != KVP_OK) {
            kv_log_warn("ucx: cannot register %zu bytes: %s", iov[reg].len,
                        kvp_status_string(status));
            goto out;
        }
        iov[reg].local_mem = mems[reg];
    }
    status = is_put ? kvt_ep_put(ucx->ep, iov, n, &req) : kvt_ep_get(ucx->ep, iov, n, &req);
    if (status == KVP_INPROGRESS) {
        status = kvt_request_wait(req);
        kvt_request_free(req);
    }
    if (status == KVP_OK && is_put) {
        status = kvt_ep_flush(ucx->ep);
    }
    if (status != KVP_OK && kvt_ep_status(ucx->ep) != KVP_OK) {
        ep_failed(ucx, kvt_ep_status(ucx->ep));
    } else if (status != KVP_OK) {
        /* a local refusal (registration, range): no data moved; the
         * endpoint is healthy but this call cannot trust it */
        ep_failed(ucx, status);
    }
out:
    /* after a failure the layer has torn the connection down: no bytes
     * land in (or leave) these buffers any more */
    for (size_t i = 0; i < reg; i++) {
        if (mems[i] != NULL) {
            kvt_mem_dereg(mems[i]);
        }
    }
    pthread_mutex_unlock(&ucx->lock);
    kv_free(mems);
    return status == KVP_OK ? KVP_OK : as_connection_error(status);
}

uint64_t kvp__ucx_arena_size(kvp_client_h client)
{
    return client->ucx->arena_size;
}

kvp_status_t kvp__ucx_move(kvp_client_h client, int is_put, void *const *locals,
                           const uint64_t *offsets, const uint64_t *lens, size_t n,
                           uint64_t *sums)
{
    kvp__ucx_t  *ucx = client->ucx;
    kvt_iov_t   *iov = kv_calloc(n + 1, sizeof(*iov), "ucx pieces");
    kvp_status_t status;

    for (size_t j = 0; j < n; j++) {
        iov[j].local    = locals[j];
        iov[j].remote   = ucx->arena_base + offsets[j];
        iov[j].rkey     = ucx->rkey;
        iov[j].rkey_len = ucx->rkey_len;
        iov[j].len      = lens[j];
        if (is_put) {
            sums[j] = kv_checksum(locals[j], lens[j]);
        }
    }
    status = transfer(ucx, is_put, iov, n);
    for (size_t j = 0; status == KVP_OK && !is_put && j < n; j++) {
        sums[j] = kv_checksum(locals[j], lens[j]);
    }
    kv_free(iov);
    return status;
}
