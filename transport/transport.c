/*
 * The generic half of the transport layer: backend registry, default
 * operations, argument checks, the packed-rkey envelope and the per-endpoint
 * rkey cache, request bookkeeping, deadlines and endpoint failure.
 *
 * Requests.  A batched put/get becomes one kvt_request with a count of
 * pieces in flight.  The backend bumps the count for every piece that does
 * not complete at once and calls kvt__request_done() as each one finishes,
 * always from inside progress (never from the issuing call).  A request the
 * caller frees while pieces are still in flight becomes an orphan: it stays
 * on ctx->requests and is freed by the last completion, or by
 * kvt_context_destroy() if the backend never completes it (a UCX callback
 * may still arrive for it until the worker is gone, so it is never freed
 * earlier).
 *
 * Deadlines.  Each request carries issue time + timeout.  When it passes,
 * the request's status becomes KVP_ERR_TIMED_OUT, its endpoint is marked
 * failed and the backend aborts the connection (ops.ep_abort), which stops
 * every transfer: a late reply must never land in a buffer the caller has
 * taken back.
 *
 * Packed rkey envelope (little-endian), around the backend's own bytes:
 *
 *     0  u32 magic "KVTR"   4  u8 version   5  u8 backend id   6  u16 key_len
 *     8  u64 region base   16  u64 region length               24  key bytes
 *
 * It lets the caller's side refuse a remote range outside the region and an
 * rkey of another backend before anything reaches the wire.
 */
#include "base.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <netdb.h>
#include <stdio.h>
#include <netinet/in.h>
#include <string.h>

#define RKEY_MAGIC 0x5254564bu /* "KVTR" read as little-endian */
#define RKEY_VERSION 1
#define RKEY_HEADER_LEN 24
#define RKEY_STACK_MAX 64 /* pieces whose rkeys fit on the stack */
#define MAX_BACKENDS 8

/* ------------------------------------------------------------------------ */
/* Registry                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Built-in backends are listed here at compile time rather than registered
 * from constructors: the layer is a static library, and the linker drops an
 * object file nothing refers to, constructor and all.  Adding a backend is
 * a folder, a CMake line and a line here; tests add stubs at run time with
 * kvt__backend_register().
 */
#ifdef KVT_HAVE_UCX
extern const kvt_backend_t kvt_ucx_backend;
#endif
#ifdef KVT_HAVE_VERBS
extern const kvt_backend_t kvt_verbs_backend;
#endif

static const kvt_backend_t *const builtin_backends[] = {
#ifdef KVT_HAVE_UCX
    &kvt_ucx_backend,
#endif
#ifdef KVT_HAVE_VERBS
    &kvt_verbs_backend,
#endif
    NULL};

static const kvt_backend_t *registered[MAX_BACKENDS];

kvp_status_t kvt__backend_register(const kvt_backend_t *backend)
{
    for (size_t i = 0; i < MAX_BACKENDS; i++) {
        if (registered[i] == NULL) {
            registered[i] = backend;
            return KVP_OK;
        }
    }
    return KVP_ERR_NO_SPACE;
}

static const kvt_backend_t *backend_find(const char *name)
{
    for (size_t i = 0; builtin_backends[i] != NULL; i++) {
        if (strcmp(builtin_backends[i]->name, name) == 0) {
            return builtin_backends[i];
        }
    }
    for (size_t i = 0; i < MAX_BACKENDS && registered[i] != NULL; i++) {
        if (strcmp(registered[i]->name, name) == 0) {
            return registered[i];
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Default operations                                                        */
/* ------------------------------------------------------------------------ */

static kvp_status_t unsup_context_init(kvt_context_h ctx, const kvt_params_t *params)
{
    return KVP_ERR_UNSUPPORTED;
}

static void noop_context(kvt_context_h ctx)
{
}

static kvp_status_t unsup_event_fd(kvt_context_h ctx, int *fd_p)
{
    return KVP_ERR_UNSUPPORTED;
}

static kvp_status_t unsup_context(kvt_context_h ctx)
{
    return KVP_ERR_UNSUPPORTED;
}

static kvp_status_t unsup_mem(kvt_mem_h mem)
{
    return KVP_ERR_UNSUPPORTED;
}

static void noop_mem(kvt_mem_h mem)
{
}

static kvp_status_t unsup_mem_pack_rkey(kvt_mem_h mem, void **buf_p, size_t *len_p)
{
    return KVP_ERR_UNSUPPORTED;
}

static kvp_status_t unsup_listener_init(kvt_listener_h l, const struct sockaddr *addr,
                                        socklen_t addr_len)
{
    return KVP_ERR_UNSUPPORTED;
}

static kvp_status_t unsup_listener_query(kvt_listener_h           l,
                                         struct sockaddr_storage *addr_p)
{
    return KVP_ERR_UNSUPPORTED;
}

static void noop_listener(kvt_listener_h l)
{
}

static kvp_status_t unsup_ep_connect(kvt_ep_h ep, const struct sockaddr *addr,
                                     socklen_t addr_len, uint64_t deadline_ns)
{
    return KVP_ERR_UNSUPPORTED;
}

static void noop_ep(kvt_ep_h ep)
{
}

static kvp_status_t unsup_rkey_unpack(kvt_ep_h ep, const kvt_rkey_info_t *info,
                                      void **rkey_p)
{
    return KVP_ERR_UNSUPPORTED;
}

static void noop_rkey_destroy(kvt_ep_h ep, void *rkey)
{
}

static kvp_status_t unsup_ep_xfer(kvt_ep_h ep, kvt_xfer_op_t op, const kvt_iov_t *iov,
                                  void *const *rkeys, size_t n, kvt_request_h req)
{
    return KVP_ERR_UNSUPPORTED;
}

static kvp_status_t unsup_ep_flush(kvt_ep_h ep, kvt_request_h req)
{
    return KVP_ERR_UNSUPPORTED;
}

static void noop_request(kvt_request_h req)
{
}

static void ops_fill(kvt_backend_ops_t *dst, const kvt_backend_ops_t *src)
{
#define OP_(_name, _default) dst->_name = src->_name ? src->_name : _default
    OP_(context_init, unsup_context_init);
    OP_(context_cleanup, noop_context);
    OP_(progress, noop_context);
    OP_(event_fd, unsup_event_fd);
    OP_(arm, unsup_context);
    OP_(mem_reg, unsup_mem);
    OP_(mem_dereg, noop_mem);
    OP_(mem_pack_rkey, unsup_mem_pack_rkey);
    OP_(listener_init, unsup_listener_init);
    OP_(listener_query, unsup_listener_query);
    OP_(listener_cleanup, noop_listener);
    OP_(ep_connect, unsup_ep_connect);
    OP_(ep_abort, noop_ep);
    OP_(ep_cleanup, noop_ep);
    OP_(rkey_unpack, unsup_rkey_unpack);
    OP_(rkey_destroy, noop_rkey_destroy);
    OP_(ep_xfer, unsup_ep_xfer);
    OP_(ep_flush, unsup_ep_flush);
    OP_(request_cleanup, noop_request);
#undef OP_
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

uint64_t kvt__deadline(kvt_context_h ctx)
{
    return kv_time_ns() + ctx->timeout_ns;
}

kvp_status_t kvt__sockaddr_format(const struct sockaddr *addr, char *buf, size_t len)
{
    char      host[NI_MAXHOST], port[NI_MAXSERV];
    socklen_t addr_len;
    int       n;

    if (addr->sa_family == AF_INET) {
        addr_len = sizeof(struct sockaddr_in);
    } else if (addr->sa_family == AF_INET6) {
        addr_len = sizeof(struct sockaddr_in6);
    } else {
        return KVP_ERR_INVALID_PARAM;
    }
    if (getnameinfo(addr, addr_len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return KVP_ERR_IO;
    }
    n = snprintf(buf, len, addr->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
    if (n < 0 || (size_t)n >= len) {
        return KVP_ERR_BUFFER_TOO_SMALL;
    }
    return KVP_OK;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

kvp_status_t kvt_context_create(const kvt_params_t *params, kvt_context_h *ctx_p)
{
    const char          *name       = "ucx";
    uint32_t             timeout_ms = KVT_TIMEOUT_DEFAULT_MS;
    const kvt_backend_t *backend;
    kvt_context_h        ctx;
    kvp_status_t         status;

    if (ctx_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (params != NULL) {
        if ((params->field_mask & KVT_PARAM_FIELD_BACKEND) && params->backend != NULL) {
            name = params->backend;
        }
        if (params->field_mask & KVT_PARAM_FIELD_TIMEOUT_MS) {
            timeout_ms = params->timeout_ms;
        }
    }
    if (timeout_ms == 0) {
        kv_log_error("transport: timeout_ms must be positive");
        return KVP_ERR_INVALID_PARAM;
    }

    backend = backend_find(name);
    if (backend == NULL) {
        kv_log_error("transport: backend '%s' is not built into this library", name);
        return KVP_ERR_UNSUPPORTED;
    }

    ctx             = kv_calloc(1, backend->context_size, "kvt_context");
    ctx->backend    = backend;
    ctx->timeout_ns = (uint64_t)timeout_ms * 1000000ull;
    ops_fill(&ctx->ops, &backend->ops);
    kvt_list_init(&ctx->requests);
    kvt_list_init(&ctx->eps);

    status = ctx->ops.context_init(ctx, params);
    if (status != KVP_OK) {
        goto err_free;
    }
    *ctx_p = ctx;
    return KVP_OK;

err_free:
    kv_free(ctx);
    return status;
}

static void request_destroy(kvt_request_h req)
{
    req->ctx->ops.request_cleanup(req);
    kvt_list_del(&req->link);
    kv_free(req);
}

void kvt_context_destroy(kvt_context_h ctx)
{
    if (ctx == NULL) {
        return;
    }
    if (!kvt_list_is_empty(&ctx->eps)) {
        kv_log_warn("transport: context destroyed with endpoints open; closing them");
        while (!kvt_list_is_empty(&ctx->eps)) {
            kvt_ep_destroy(kv_container_of(ctx->eps.next, struct kvt_ep, link));
        }
    }
    ctx->ops.context_cleanup(ctx);
    /* Nothing can complete a request any more: free what is left. */
    while (!kvt_list_is_empty(&ctx->requests)) {
        request_destroy(kv_container_of(ctx->requests.next, struct kvt_request, link));
    }
    kv_free(ctx);
}

const char *kvt_context_backend(kvt_context_h ctx)
{
    return ctx->backend->name;
}

void kvt_progress(kvt_context_h ctx)
{
    ctx->ops.progress(ctx);
}

kvp_status_t kvt_context_event_fd(kvt_context_h ctx, int *fd_p)
{
    if (fd_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    return ctx->ops.event_fd(ctx, fd_p);
}

kvp_status_t kvt_context_arm(kvt_context_h ctx)
{
    return ctx->ops.arm(ctx);
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

kvp_status_t kvt_mem_reg(kvt_context_h ctx, void *addr, size_t len, kvt_mem_h *mem_p)
{
    kvt_mem_h    mem;
    kvp_status_t status;

    if (addr == NULL || len == 0 || mem_p == NULL ||
        (uintptr_t)addr + len < (uintptr_t)addr) {
        return KVP_ERR_INVALID_PARAM;
    }
    mem       = kv_calloc(1, ctx->backend->mem_size, "kvt_mem");
    mem->ctx  = ctx;
    mem->addr = addr;
    mem->len  = len;
    status    = ctx->ops.mem_reg(mem);
    if (status != KVP_OK) {
        goto err_free;
    }
    *mem_p = mem;
    return KVP_OK;

err_free:
    kv_free(mem);
    return status;
}

void kvt_mem_dereg(kvt_mem_h mem)
{
    if (mem == NULL) {
        return;
    }
    mem->ctx->ops.mem_dereg(mem);
    kv_free(mem);
}

void *kvt_mem_addr(kvt_mem_h mem)
{
    return mem->addr;
}

size_t kvt_mem_len(kvt_mem_h mem)
{
    return mem->len;
}

kvp_status_t kvt_mem_pack_rkey(kvt_mem_h mem, void **buf_p, size_t *len_p)
{
    void        *key;
    size_t       key_len;
    uint8_t     *buf;
    kvp_status_t status;

    if (buf_p == NULL || len_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = mem->ctx->ops.mem_pack_rkey(mem, &key, &key_len);
    if (status != KVP_OK) {
        return status;
    }
    if (key_len == 0 || key_len > KVT_RKEY_MAX - RKEY_HEADER_LEN) {
        kv_log_error("transport: %s packed a %zu-byte rkey (limit %d)",
                     mem->ctx->backend->name, key_len, KVT_RKEY_MAX - RKEY_HEADER_LEN);
        status = KVP_ERR_INTERNAL;
        goto out_free_key;
    }
    buf = kv_malloc(RKEY_HEADER_LEN + key_len, "kvt packed rkey");
    put_u32(buf, RKEY_MAGIC);
    buf[4] = RKEY_VERSION;
    buf[5] = mem->ctx->backend->id;
    put_u16(buf + 6, (uint16_t)key_len);
    put_u64(buf + 8, (uint64_t)(uintptr_t)mem->addr);
    put_u64(buf + 16, (uint64_t)mem->len);
    memcpy(buf + RKEY_HEADER_LEN, key, key_len);
    *buf_p = buf;
    *len_p = RKEY_HEADER_LEN + key_len;

out_free_key:
    kv_free(key);
    return status;
}

/* Check a packed rkey from a peer: it is input off the wire. */
static kvp_status_t rkey_parse(kvt_context_h ctx, const void *buf, size_t len,
                               kvt_rkey_info_t *info)
{
    const uint8_t *p = buf;
    size_t         key_len;

    if (buf == NULL || len < RKEY_HEADER_LEN || len > KVT_RKEY_MAX ||
        get_le(p, 4) != RKEY_MAGIC || p[4] != RKEY_VERSION) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (p[5] != ctx->backend->id) {
        kv_log_error("transport: rkey of backend id %u used on a %s endpoint", p[5],
                     ctx->backend->name);
        return KVP_ERR_INVALID_PARAM;
    }
    key_len = (size_t)get_le(p + 6, 2);
    if (key_len == 0 || RKEY_HEADER_LEN + key_len != len) {
        return KVP_ERR_INVALID_PARAM;
    }
    info->base    = get_le(p + 8, 8);
    info->length  = get_le(p + 16, 8);
    info->key     = p + RKEY_HEADER_LEN;
    info->key_len = key_len;
    if (info->base + info->length < info->base) {
        return KVP_ERR_INVALID_PARAM;
    }
    return KVP_OK;
}

/* ------------------------------------------------------------------------ */
/* Listener                                                                  */
/* ------------------------------------------------------------------------ */

kvp_status_t kvt_listener_create(kvt_context_h ctx, const char *addr, kvt_listener_h *l_p)
{
    struct sockaddr_storage sa;
    socklen_t               sa_len;
    kvt_listener_h          l;
    kvp_status_t            status;

    if (l_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = kv_addr_parse(addr, &sa, &sa_len);
    if (status != KVP_OK) {
        kv_log_error("transport: bad listen address '%s'", addr ? addr : "(null)");
        return status;
    }
    l      = kv_calloc(1, ctx->backend->listener_size, "kvt_listener");
    l->ctx = ctx;
    status = ctx->ops.listener_init(l, (struct sockaddr *)&sa, sa_len);
    if (status != KVP_OK) {
        goto err_free;
    }
    *l_p = l;
    return KVP_OK;

err_free:
    kv_free(l);
    return status;
}

kvp_status_t kvt_listener_address(kvt_listener_h l, char *buf, size_t len)
{
    struct sockaddr_storage sa;
    kvp_status_t            status;

    if (buf == NULL || len == 0) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = l->ctx->ops.listener_query(l, &sa);
    if (status != KVP_OK) {
        return status;
    }
    return kvt__sockaddr_format((struct sockaddr *)&sa, buf, len);
}

void kvt_listener_destroy(kvt_listener_h l)
{
    if (l == NULL) {
        return;
    }
    l->ctx->ops.listener_cleanup(l);
    kv_free(l);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

static kvt_request_h request_create(kvt_ep_h ep)
{
    kvt_context_h ctx = ep->ctx;
    kvt_request_h req = kv_calloc(1, ctx->backend->request_size, "kvt_request");

    req->ctx         = ctx;
    req->ep          = ep;
    req->deadline_ns = kvt__deadline(ctx);
    req->status      = KVP_OK;
    kvt_list_add(&ctx->requests, &req->link);
    return req;
}

void kvt__request_add(kvt_request_h req)
{
    req->pending++;
}

void kvt__request_done(kvt_request_h req, kvp_status_t status)
{
    if (req->pending == 0) {
        kv_log_error("transport: request completed more pieces than it issued");
        return;
    }
    if (status != KVP_OK && req->status == KVP_OK) {
        req->status = status;
    }
    if (--req->pending == 0 && req->freed) {
        request_destroy(req);
    }
}

/* The request's deadline passed: fail it, fail its endpoint, stop it. */
static kvp_status_t request_expire(kvt_request_h req)
{
    kvt_ep_h ep = req->ep;

    if (req->status == KVP_OK) {
        req->status = KVP_ERR_TIMED_OUT;
    }
    if (ep != NULL) {
        if (ep->status == KVP_OK) {
            kv_log_warn("transport: %s: operation timed out after %llu ms; "
                        "closing the connection",
                        ep->peer,
                        (unsigned long long)(req->ctx->timeout_ns / 1000000ull));
        }
        kvt__ep_set_failed(ep, KVP_ERR_TIMED_OUT);
        if (!ep->aborted) {
            ep->aborted = 1;
            req->ctx->ops.ep_abort(ep);
        }
    }
    return req->status;
}

static int request_expired(kvt_request_h req)
{
    return req->status == KVP_ERR_TIMED_OUT || kv_time_ns() >= req->deadline_ns;
}

kvp_status_t kvt_request_test(kvt_request_h req)
{
    if (req->pending == 0) {
        return req->status;
    }
    req->ctx->ops.progress(req->ctx);
    if (req->pending == 0) {
        return req->status;
    }
    if (request_expired(req)) {
        return request_expire(req);
    }
    return KVP_INPROGRESS;
}

kvp_status_t kvt_request_wait(kvt_request_h req)
{
    while (req->pending > 0) {
        if (request_expired(req)) {
            return request_expire(req);
        }
        req->ctx->ops.progress(req->ctx);
    }
    return req->status;
}

void kvt_request_free(kvt_request_h req)
{
    if (req == NULL) {
        return;
    }
    if (req->pending == 0) {
        request_destroy(req);
    } else {
        req->freed = 1; /* the last completion frees it */
    }
}

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                 */
/* ------------------------------------------------------------------------ */

void kvt__ep_set_failed(kvt_ep_h ep, kvp_status_t status)
{
    if (ep->status != KVP_OK) {
        return;
    }
    if (status != KVP_ERR_TIMED_OUT && !KVP_STATUS_IS_CONNECTION_ERROR(status)) {
        status = KVP_ERR_CONNECTION_LOST;
    }
    ep->status = status;
    kv_log_info("transport: %s: connection failed: %s", ep->peer,
                kvp_status_string(status));
}

kvp_status_t kvt_ep_connect(kvt_context_h ctx, const char *addr, kvt_ep_h *ep_p)
{
    struct sockaddr_storage sa;
    socklen_t               sa_len;
    kvt_ep_h                ep;
    kvp_status_t            status;

    if (ep_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = kv_addr_parse(addr, &sa, &sa_len);
    if (status != KVP_OK) {
        kv_log_error("transport: bad peer address '%s'", addr ? addr : "(null)");
        return status;
    }
    ep         = kv_calloc(1, ctx->backend->ep_size, "kvt_ep");
    ep->ctx    = ctx;
    ep->status = KVP_OK;
    kvt__sockaddr_format((struct sockaddr *)&sa, ep->peer, sizeof(ep->peer));
    kvt_list_add(&ctx->eps, &ep->link);

    status = ctx->ops.ep_connect(ep, (struct sockaddr *)&sa, sa_len, kvt__deadline(ctx));
    if (status != KVP_OK) {
        goto err_cleanup;
    }
    if (ep->status != KVP_OK) { /* failed while connecting */
        status = ep->status;
        goto err_cleanup;
    }
    *ep_p = ep;
    return KVP_OK;

err_cleanup:
    kv_log_info("transport: connect to %s failed: %s", ep->peer,
                kvp_status_string(status));
    ctx->ops.ep_cleanup(ep);
    kvt_list_del(&ep->link);
    kv_free(ep);
    return status;
}

kvp_status_t kvt_ep_status(kvt_ep_h ep)
{
    return ep->status;
}

struct kvt_rkey_entry {
    uint64_t hash;  /**< 0: empty slot */
    uint8_t *bytes; /**< copy of the packed rkey */
    size_t   len;
    uint64_t base;
    uint64_t length;
    void    *rkey; /**< the backend's unpacked key */
};

static uint64_t rkey_hash(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t       h = 1469598103934665603ull; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 1099511628211ull;
    }
    return h ? h : 1;
}

static kvt_rkey_entry_t *rkey_slot(kvt_rkey_entry_t *table, size_t cap, uint64_t hash,
                                   const void *buf, size_t len)
{
    for (size_t i = hash & (cap - 1);; i = (i + 1) & (cap - 1)) {
        kvt_rkey_entry_t *e = &table[i];
        if (e->hash == 0 ||
            (e->hash == hash && e->len == len && memcmp(e->bytes, buf, len) == 0)) {
            return e;
        }
    }
}

static void rkey_cache_grow(kvt_ep_h ep)
{
    size_t            cap   = ep->rkey_cap ? ep->rkey_cap * 2 : 8;
    kvt_rkey_entry_t *table = kv_calloc(cap, sizeof(*table), "kvt rkey cache");

    for (size_t i = 0; i < ep->rkey_cap; i++) {
        kvt_rkey_entry_t *e = &ep->rkeys[i];
        if (e->hash != 0) {
            *rkey_slot(table, cap, e->hash, e->bytes, e->len) = *e;
        }
    }
    kv_free(ep->rkeys);
    ep->rkeys    = table;
    ep->rkey_cap = cap;
}

static kvp_status_t rkey_lookup(kvt_ep_h ep, const void *buf, size_t len,
                                kvt_rkey_entry_t **entry_p)
{
    uint64_t          hash = rkey_hash(buf, len);
    kvt_rkey_entry_t *e    = NULL;
    kvt_rkey_info_t   info;
    void             *rkey;
    kvp_status_t      status;

    if (ep->rkey_cap != 0) {
        e = rkey_slot(ep->rkeys, ep->rkey_cap, hash, buf, len);
        if (e->hash != 0) {
            *entry_p = e;
            return KVP_OK;
        }
    }
    status = rkey_parse(ep->ctx, buf, len, &info);
    if (status != KVP_OK) {
        return status;
    }
    status = ep->ctx->ops.rkey_unpack(ep, &info, &rkey);
    if (status != KVP_OK) {
        return status;
    }
    if ((ep->rkey_count + 1) * 2 > ep->rkey_cap) {
        rkey_cache_grow(ep);
    }
    e         = rkey_slot(ep->rkeys, ep->rkey_cap, hash, buf, len);
    e->hash   = hash;
    e->bytes  = kv_malloc(len, "kvt rkey cache key");
    e->len    = len;
    e->base   = info.base;
    e->length = info.length;
    e->rkey   = rkey;
    memcpy(e->bytes, buf, len);
    ep->rkey_count++;
    *entry_p = e;
    return KVP_OK;
}

static void rkey_cache_clear(kvt_ep_h ep)
{
    for (size_t i = 0; i < ep->rkey_cap; i++) {
        kvt_rkey_entry_t *e = &ep->rkeys[i];
        if (e->hash != 0) {
            ep->ctx->ops.rkey_destroy(ep, e->rkey);
            kv_free(e->bytes);
        }
    }
    kv_free(ep->rkeys);
    ep->rkeys      = NULL;
    ep->rkey_cap   = 0;
    ep->rkey_count = 0;
}

/* Check the local and remote range of each piece and find its rkey. */
static kvp_status_t xfer_prepare(kvt_ep_h ep, const kvt_iov_t *iov, size_t n,
                                 void **rkeys)
{
    kvt_rkey_entry_t *e     = NULL; /* the rkey of piece... */
    const void       *e_buf = NULL; /* ...whose rkey bytes were these */
    size_t            e_len = 0;
    kvp_status_t      status;

    for (size_t i = 0; i < n; i++) {
        const kvt_iov_t *v = &iov[i];
        uintptr_t        local, mem_start;

        rkeys[i] = NULL;
        if (v->len == 0) {
            continue;
        }
        local = (uintptr_t)v->local;
        if (v->local_mem == NULL || v->local_mem->ctx != ep->ctx) {
            return KVP_ERR_INVALID_PARAM;
        }
        mem_start = (uintptr_t)v->local_mem->addr;
        if (local < mem_start || local - mem_start > v->local_mem->len ||
            v->len > v->local_mem->len - (local - mem_start)) {
            kv_log_error("transport: piece %zu: local range outside its registration", i);
            return KVP_ERR_INVALID_PARAM;
        }
        /* Consecutive pieces usually share one rkey: skip the lookup. */
        if (e == NULL || v->rkey != e_buf || v->rkey_len != e_len) {
            status = rkey_lookup(ep, v->rkey, v->rkey_len, &e);
            if (status != KVP_OK) {
                kv_log_error("transport: piece %zu: unusable rkey: %s", i,
                             kvp_status_string(status));
                return status;
            }
            e_buf = v->rkey;
            e_len = v->rkey_len;
        }
        if (v->remote < e->base || v->remote - e->base > e->length ||
            v->len > e->length - (v->remote - e->base)) {
            kv_log_error("transport: piece %zu: remote range 0x%llx+%zu outside the "
                         "region 0x%llx+%llu",
                         i, (unsigned long long)v->remote, v->len,
                         (unsigned long long)e->base, (unsigned long long)e->length);
            return KVP_ERR_INVALID_PARAM;
        }
        rkeys[i] = e->rkey;
    }
    return KVP_OK;
}

static kvp_status_t ep_xfer(kvt_ep_h ep, kvt_xfer_op_t op, const kvt_iov_t *iov, size_t n,
                            kvt_request_h *req_p)
{
    void         *stack_rkeys[RKEY_STACK_MAX];
    void        **rkeys = stack_rkeys;
    kvt_request_h req;
    kvp_status_t  status;

    if (req_p == NULL || (iov == NULL && n > 0)) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (ep->status != KVP_OK) {
        return ep->status;
    }
    if (n == 0) {
        return KVP_OK;
    }
    if (n > RKEY_STACK_MAX) {
        rkeys = kv_malloc(n * sizeof(*rkeys), "kvt rkey list");
    }
    status = xfer_prepare(ep, iov, n, rkeys);
    if (status != KVP_OK) {
        goto out;
    }

    req    = request_create(ep);
    status = ep->ctx->ops.ep_xfer(ep, op, iov, rkeys, n, req);
    if (status != KVP_OK && req->status == KVP_OK) {
        req->status = status;
    }
    if (req->pending == 0) {
        status = req->status;
        request_destroy(req);
    } else {
        *req_p = req;
        status = KVP_INPROGRESS;
    }

out:
    if (rkeys != stack_rkeys) {
        kv_free(rkeys);
    }
    return status;
}

kvp_status_t kvt_ep_put(kvt_ep_h ep, const kvt_iov_t *iov, size_t n, kvt_request_h *req_p)
{
    return ep_xfer(ep, KVT_XFER_PUT, iov, n, req_p);
}

kvp_status_t kvt_ep_get(kvt_ep_h ep, const kvt_iov_t *iov, size_t n, kvt_request_h *req_p)
{
    return ep_xfer(ep, KVT_XFER_GET, iov, n, req_p);
}

kvp_status_t kvt_ep_flush(kvt_ep_h ep)
{
    kvt_request_h req;
    kvp_status_t  status;

    if (ep->status != KVP_OK) {
        return ep->status;
    }
    req    = request_create(ep);
    status = ep->ctx->ops.ep_flush(ep, req);
    if (status != KVP_OK && req->status == KVP_OK) {
        req->status = status;
    }
    status = kvt_request_wait(req);
    kvt_request_free(req);
    return status;
}

void kvt_ep_destroy(kvt_ep_h ep)
{
    kvt_context_h ctx;
    kvt_list_t   *it;
    kvp_status_t  status;

    if (ep == NULL) {
        return;
    }
    ctx = ep->ctx;
    /* Remote completion of the puts before closing; on failure this aborts
     * the connection, which completes whatever is still in flight. */
    if (ep->status == KVP_OK) {
        status = kvt_ep_flush(ep);
        if (status != KVP_OK) {
            kv_log_warn("transport: %s: flush before close failed: %s", ep->peer,
                        kvp_status_string(status));
        }
    }
    /* UCX wants rkeys gone before their endpoint; pieces that used them
     * completed above (or were cancelled by the abort). */
    rkey_cache_clear(ep);
    ctx->ops.ep_cleanup(ep);

    for (it = ctx->requests.next; it != &ctx->requests; it = it->next) {
        kvt_request_h req = kv_container_of(it, struct kvt_request, link);
        if (req->ep == ep) {
            if (req->pending > 0) {
                kv_log_error("transport: %s: a request still has %zu pieces in "
                             "flight after close",
                             ep->peer, req->pending);
            }
            req->ep = NULL;
        }
    }
    kvt_list_del(&ep->link);
    kv_free(ep);
}

/* ------------------------------------------------------------------------ */
/* Extensions of backends not built here                                     */
/* ------------------------------------------------------------------------ */

#ifndef KVT_HAVE_UCX
kvp_status_t kvt_ucx_ep_info(kvt_ep_h ep, char *buf, size_t len)
{
    return KVP_ERR_UNSUPPORTED;
}
#endif

#ifndef KVT_HAVE_VERBS
kvp_status_t kvt_verbs_device_name(kvt_context_h ctx, char *buf, size_t len)
{
    return KVP_ERR_UNSUPPORTED;
}
#endif
