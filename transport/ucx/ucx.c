/*
 * The UCX backend: UCP one-sided puts and gets.
 *
 * One UCP context and one worker per kvt context (UCS_THREAD_MODE_SINGLE:
 * the caller serializes).  Endpoints are client-server (sockaddr) ones with
 * UCP_ERR_HANDLING_MODE_PEER, so a peer's death fails the endpoint and UCX
 * completes its outstanding requests with an error instead of leaving them
 * hanging.  The price: UCX uses only transports that can report peer
 * failure, which in Debian's UCX 1.13 leaves out shared memory; two
 * processes on one host then talk over TCP, where UCP emulates one-sided
 * operations with active messages served by the target's progress.
 *
 * The accepted side of a connection is a "peer": a UCP endpoint created
 * from the listener's connection request, which only serves the remote
 * side's operations.  A peer whose connection fails is closed from the next
 * kvt_progress() (UCX must not see its endpoint closed inside its own
 * error callback).
 *
 * Closing: once ucp_ep_close_nbx() has been called UCX never calls that
 * endpoint's error callback again (UCP_EP_FLAG_CLOSED), so the argument of
 * the callback may be freed right after the close is issued.
 *
 * RMA: natively (ucp_put_nbx/ucp_get_nbx) where the endpoint has a hardware
 * RMA lane, else emulated with active messages by ucx_am.c; see
 * kvt_ucx_rma_t in <kvt/transport.h> for why not UCX's own emulation.  The
 * choice is made per endpoint once it is connected, from the lanes UCX
 * reports (ucp_ep_print_info: a lane with the "rma" role; "rma_bw" lanes
 * serve only the rendezvous protocol).
 *
 * Order at teardown.  UCX asks for rkeys to be destroyed after their
 * operations are flushed and before their endpoint.  The generic layer
 * flushes, destroys the rkeys, then calls ep_cleanup.  On a deadline it
 * must stop transfers first, so ep_abort force-closes the endpoint while
 * its rkeys exist; ucp_rkey_destroy() only releases the rkey's own memory
 * (it does not touch the endpoint), so destroying them afterwards is safe.
 */
#include "ucx.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef kvt_ucx_context_t ucx_context_t;
typedef kvt_ucx_mem_t     ucx_mem_t;
typedef kvt_ucx_ep_t      ucx_ep_t;

typedef struct ucx_listener {
    struct kvt_listener super;
    ucp_listener_h      listener;
} ucx_listener_t;

typedef struct ucx_peer {
    kvt_list_t     link; /**< in ctx->peers */
    ucx_context_t *ctx;
    ucp_ep_h       ucp_ep;
    ucs_status_t   failed; /**< UCS_OK while healthy */
    char           addr[KVT_ADDR_STRLEN];
} ucx_peer_t;

const kvt_backend_t kvt_ucx_backend;

static ucx_context_t *to_ctx(kvt_context_h ctx)
{
    return kvt_ucx_ctx(ctx);
}

static ucx_ep_t *to_ep(kvt_ep_h ep)
{
    return kvt_ucx_ep(ep);
}

/* The one place a ucs_status_t becomes a kvp_status_t. */
kvp_status_t kvt__ucx_status(ucs_status_t status)
{
    switch (status) {
    case UCS_OK:
        return KVP_OK;
    case UCS_INPROGRESS:
        return KVP_INPROGRESS;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
        return KVP_ERR_NO_MEMORY;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
        return KVP_ERR_INVALID_PARAM;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NO_DEVICE:
        return KVP_ERR_UNSUPPORTED;
    case UCS_ERR_TIMED_OUT:
        return KVP_ERR_TIMED_OUT;
    case UCS_ERR_EXCEEDS_LIMIT:
    case UCS_ERR_MESSAGE_TRUNCATED:
        return KVP_ERR_TOO_LARGE;
    case UCS_ERR_NO_ELEM:
        return KVP_ERR_NOT_FOUND;
    case UCS_ERR_BUFFER_TOO_SMALL:
        return KVP_ERR_BUFFER_TOO_SMALL;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
        return KVP_ERR_CONNECTION_REFUSED;
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CANCELED:
        return KVP_ERR_CONNECTION_LOST;
    case UCS_ERR_SHMEM_SEGMENT:
    case UCS_ERR_NO_PROGRESS:
        return KVP_ERR_INTERNAL;
    default: /* UCS_ERR_IO_ERROR, UCS_ERR_BUSY (address in use), ... */
        return KVP_ERR_IO;
    }
}

/*
 * Close @p uep and wait for it until @p deadline_ns (0: do not wait; UCX
 * finishes the close from later progress).  UCX calls the endpoint's error
 * callback no more once this is issued.
 */
static kvp_status_t ucx_ep_close(ucp_worker_h worker, ucp_ep_h uep, int force,
                                 uint64_t deadline_ns)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags        = force ? UCP_EP_CLOSE_FLAG_FORCE : 0};
    ucs_status_ptr_t    req   = ucp_ep_close_nbx(uep, &param);
    ucs_status_t        status;

    if (req == NULL) {
        return KVP_OK;
    }
    if (UCS_PTR_IS_ERR(req)) {
        return kvt__ucx_status(UCS_PTR_STATUS(req));
    }
    while ((status = ucp_request_check_status(req)) == UCS_INPROGRESS &&
           kv_time_ns() < deadline_ns) {
        ucp_worker_progress(worker);
    }
    ucp_request_free(req); /* released on completion if still going */
    return status == UCS_INPROGRESS ? KVP_ERR_TIMED_OUT : kvt__ucx_status(status);
}

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Defaults that suit KV blocks (MiB-sized) better than UCX's, each applied
 * only where the user set neither the UCX_* variable nor a UCX_TLS without
 * TCP.  TCP segments of 64 KiB instead of 8 KiB: 2 MiB pieces over loopback
 * go from ~1200 to ~3800 MiB/s (test_throughput).  UCX takes transport keys
 * without their transport prefix here ("TX_SEG_SIZE").
 */
static void config_tune(ucp_config_t *config)
{
    static const struct {
        const char *name, *env, *value;
    } tuning[]       = {{"TX_SEG_SIZE", "UCX_TCP_TX_SEG_SIZE", "64k"},
                        {"RX_SEG_SIZE", "UCX_TCP_RX_SEG_SIZE", "64k"}};
    const char  *tls = getenv("UCX_TLS");
    ucs_status_t status;

    if (tls != NULL && strstr(tls, "tcp") == NULL && strstr(tls, "all") == NULL) {
        return;
    }
    for (size_t i = 0; i < sizeof(tuning) / sizeof(tuning[0]); i++) {
        if (getenv(tuning[i].env) != NULL) {
            continue;
        }
        status = ucp_config_modify(config, tuning[i].name, tuning[i].value);
        if (status != UCS_OK) {
            kv_log_debug("transport: ucx: %s=%s not applied: %s", tuning[i].env,
                         tuning[i].value, ucs_status_string(status));
        }
    }
}

static kvp_status_t ucx_context_init(kvt_context_h base, const kvt_params_t *params)
{
    ucx_context_t      *ctx = to_ctx(base);
    ucp_config_t       *config;
    ucp_params_t        ucp_params;
    ucp_worker_params_t worker_params;
    ucs_status_t        status;
    kvp_status_t        kstatus;

    kvt_list_init(&ctx->peers);
    kvt_list_init(&ctx->mems);
    if (params != NULL && (params->field_mask & KVT_PARAM_FIELD_UCX_RMA)) {
        if (params->ucx_rma > KVT_UCX_RMA_EMULATED) {
            kv_log_error("transport: ucx: unknown ucx_rma %d", (int)params->ucx_rma);
            return KVP_ERR_INVALID_PARAM;
        }
        ctx->rma = params->ucx_rma;
    }
    status = ucp_config_read(NULL, NULL, &config);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: reading UCX_* configuration failed: %s",
                     ucs_status_string(status));
        kstatus = kvt__ucx_status(status);
        goto err;
    }
    config_tune(config);
    memset(&ucp_params, 0, sizeof(ucp_params));
    ucp_params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    ucp_params.features   = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    ucp_params.name       = "kvpool";
    status                = ucp_init(&ucp_params, config, &ctx->ucp);
    ucp_config_release(config);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_init failed: %s", ucs_status_string(status));
        kstatus = kvt__ucx_status(status);
        goto err;
    }

    memset(&worker_params, 0, sizeof(worker_params));
    worker_params.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    status                    = ucp_worker_create(ctx->ucp, &worker_params, &ctx->worker);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_worker_create failed: %s",
                     ucs_status_string(status));
        kstatus = kvt__ucx_status(status);
        goto err_cleanup_ucp;
    }
    kstatus = kvt__ucx_am_init(ctx);
    if (kstatus != KVP_OK) {
        goto err_destroy_worker;
    }
    return KVP_OK;

err_destroy_worker:
    ucp_worker_destroy(ctx->worker);
err_cleanup_ucp:
    ucp_cleanup(ctx->ucp);
err:
    kvt__ucx_am_cleanup(ctx);
    return kstatus;
}

static void peer_destroy(ucx_peer_t *peer, uint64_t deadline_ns)
{
    kvp_status_t status;

    if (peer->ucp_ep != NULL) {
        status = ucx_ep_close(peer->ctx->worker, peer->ucp_ep, 1, deadline_ns);
        if (status != KVP_OK && status != KVP_ERR_TIMED_OUT) {
            kv_log_debug("transport: ucx: closing peer %s: %s", peer->addr,
                         kvp_status_string(status));
        }
    }
    kvt_list_del(&peer->link);
    kv_free(peer);
}

static void ucx_context_cleanup(kvt_context_h base)
{
    ucx_context_t *ctx      = to_ctx(base);
    uint64_t       deadline = kvt__deadline(base);

    while (!kvt_list_is_empty(&ctx->peers)) {
        peer_destroy(kv_container_of(ctx->peers.next, ucx_peer_t, link), deadline);
    }
    if (!kvt_list_is_empty(&ctx->mems)) {
        kv_log_warn("transport: ucx: context destroyed with memory still registered");
    }
    ucp_worker_destroy(ctx->worker);
    ucp_cleanup(ctx->ucp);
    kvt__ucx_am_cleanup(ctx);
}

static void ucx_progress(kvt_context_h base)
{
    ucx_context_t *ctx = to_ctx(base);
    kvt_list_t    *it, *next;

    ucp_worker_progress(ctx->worker);
    if (!ctx->peers_failed) {
        return;
    }
    ctx->peers_failed = 0;
    for (it = ctx->peers.next; it != &ctx->peers; it = next) {
        ucx_peer_t *peer = kv_container_of(it, ucx_peer_t, link);
        next             = it->next;
        if (peer->failed != UCS_OK) {
            peer_destroy(peer, 0);
        }
    }
}

static kvp_status_t ucx_event_fd(kvt_context_h base, int *fd_p)
{
    ucs_status_t status = ucp_worker_get_efd(to_ctx(base)->worker, fd_p);

    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_worker_get_efd failed: %s",
                     ucs_status_string(status));
    }
    return kvt__ucx_status(status);
}

static kvp_status_t ucx_arm(kvt_context_h base)
{
    ucs_status_t status = ucp_worker_arm(to_ctx(base)->worker);

    /* BUSY here is not an error: events are pending, progress first. */
    return status == UCS_ERR_BUSY ? KVP_INPROGRESS : kvt__ucx_status(status);
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

static kvp_status_t ucx_mem_reg(kvt_mem_h base)
{
    ucx_mem_t           *mem = kv_container_of(base, ucx_mem_t, super);
    ucp_mem_map_params_t params;
    ucs_status_t         status;

    memset(&params, 0, sizeof(params));
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    params.address    = base->addr;
    params.length     = base->len;
    status            = ucp_mem_map(to_ctx(base->ctx)->ucp, &params, &mem->memh);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_mem_map(%p, %zu) failed: %s", base->addr,
                     base->len, ucs_status_string(status));
        return kvt__ucx_status(status);
    }
    kvt_list_add(&to_ctx(base->ctx)->mems, &mem->link); /* served by ucx_am.c */
    return KVP_OK;
}

static void ucx_mem_dereg(kvt_mem_h base)
{
    ucx_mem_t   *mem = kv_container_of(base, ucx_mem_t, super);
    ucs_status_t status;

    kvt_list_del(&mem->link);
    status = ucp_mem_unmap(to_ctx(base->ctx)->ucp, mem->memh);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_mem_unmap failed: %s",
                     ucs_status_string(status));
    }
}

static kvp_status_t ucx_mem_pack_rkey(kvt_mem_h base, void **buf_p, size_t *len_p)
{
    ucx_mem_t   *mem = kv_container_of(base, ucx_mem_t, super);
    void        *packed, *buf;
    size_t       len;
    ucs_status_t status;

    status = ucp_rkey_pack(to_ctx(base->ctx)->ucp, mem->memh, &packed, &len);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_rkey_pack failed: %s",
                     ucs_status_string(status));
        return kvt__ucx_status(status);
    }
    buf = kv_malloc(len ? len : 1, "ucx rkey");
    memcpy(buf, packed, len);
    ucp_rkey_buffer_release(packed);
    *buf_p = buf;
    *len_p = len;
    return KVP_OK;
}

/* ------------------------------------------------------------------------ */
/* Listener and accepted peers                                               */
/* ------------------------------------------------------------------------ */

static void peer_err_cb(void *arg, ucp_ep_h uep, ucs_status_t status)
{
    ucx_peer_t *peer = arg;

    /* A client closing its endpoint shows up here as a reset too. */
    kv_log_debug("transport: ucx: peer %s gone: %s", peer->addr,
                 ucs_status_string(status));
    peer->failed            = status;
    peer->ctx->peers_failed = 1;
}

static void conn_cb(ucp_conn_request_h conn_request, void *arg)
{
    ucx_listener_t         *l   = arg;
    ucx_context_t          *ctx = to_ctx(l->super.ctx);
    ucp_conn_request_attr_t attr;
    ucp_ep_params_t         params;
    ucx_peer_t             *peer;
    ucs_status_t            status;

    peer         = kv_calloc(1, sizeof(*peer), "ucx peer");
    peer->ctx    = ctx;
    peer->failed = UCS_OK;
    snprintf(peer->addr, sizeof(peer->addr), "(unknown)");
    attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
    if (ucp_conn_request_query(conn_request, &attr) == UCS_OK) {
        kvt__sockaddr_format((struct sockaddr *)&attr.client_address, peer->addr,
                             sizeof(peer->addr));
    }

    memset(&params, 0, sizeof(params));
    params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.conn_request    = conn_request;
    params.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb  = peer_err_cb;
    params.err_handler.arg = peer;
    status                 = ucp_ep_create(ctx->worker, &params, &peer->ucp_ep);
    if (status != UCS_OK) {
        /* ucp_ep_create consumed the request; nothing to reject */
        kv_log_error("transport: ucx: accepting %s failed: %s", peer->addr,
                     ucs_status_string(status));
        kv_free(peer);
        return;
    }
    kvt_list_init(&peer->link);
    kvt_list_add(&ctx->peers, &peer->link);
    kv_log_debug("transport: ucx: accepted %s", peer->addr);
}

static kvp_status_t ucx_listener_init(kvt_listener_h base, const struct sockaddr *addr,
                                      socklen_t addr_len)
{
    ucx_listener_t       *l = kv_container_of(base, ucx_listener_t, super);
    ucp_listener_params_t params;
    ucs_status_t          status;

    memset(&params, 0, sizeof(params));
    params.field_mask =
        UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    params.sockaddr.addr    = addr;
    params.sockaddr.addrlen = addr_len;
    params.conn_handler.cb  = conn_cb;
    params.conn_handler.arg = l;
    status = ucp_listener_create(to_ctx(base->ctx)->worker, &params, &l->listener);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_listener_create failed: %s",
                     ucs_status_string(status));
    }
    return kvt__ucx_status(status);
}

static kvp_status_t ucx_listener_query(kvt_listener_h           base,
                                       struct sockaddr_storage *addr_p)
{
    ucx_listener_t     *l = kv_container_of(base, ucx_listener_t, super);
    ucp_listener_attr_t attr;
    ucs_status_t        status;

    attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    status          = ucp_listener_query(l->listener, &attr);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_listener_query failed: %s",
                     ucs_status_string(status));
        return kvt__ucx_status(status);
    }
    *addr_p = attr.sockaddr;
    return KVP_OK;
}

static void ucx_listener_cleanup(kvt_listener_h base)
{
    ucx_listener_t *l = kv_container_of(base, ucx_listener_t, super);

    ucp_listener_destroy(l->listener);
}

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                 */
/* ------------------------------------------------------------------------ */

static void ep_err_cb(void *arg, ucp_ep_h uep, ucs_status_t status)
{
    ucx_ep_t *ep = arg;

    kv_log_info("transport: ucx: %s: %s", ep->super.peer, ucs_status_string(status));
    kvt__ep_set_failed(&ep->super, kvt__ucx_status(status));
    kvt__ucx_am_ep_fail(ep, ep->super.status);
}

/* Does UCX give @p ep a hardware RMA lane?  Only its lane dump says so. */
static int ep_has_rma_lane(ucx_ep_t *ep)
{
    char  buf[8192];
    FILE *f;

    memset(buf, 0, sizeof(buf));
    f = fmemopen(buf, sizeof(buf) - 1, "w");
    if (f == NULL) {
        return 0;
    }
    ucp_ep_print_info(ep->ucp_ep, f);
    fclose(f);
    return strstr(buf, " rma#") != NULL; /* "rma_bw" lanes only serve rndv */
}

/*
 * Create the endpoint, then flush it: the flush completes once UCX has
 * wired the connection up (or fails with it), which is how we know the
 * peer is there before the deadline.  The flush request is polled, not
 * called back, so giving up on it leaves nothing pointing at this frame.
 */
static kvp_status_t ucx_ep_connect(kvt_ep_h base, const struct sockaddr *addr,
                                   socklen_t addr_len, uint64_t deadline_ns)
{
    ucx_ep_t           *ep     = to_ep(base);
    ucx_context_t      *ctx    = to_ctx(base->ctx);
    ucp_request_param_t fparam = {.op_attr_mask = 0};
    ucp_ep_params_t     params;
    ucs_status_ptr_t    req;
    ucs_status_t        status;
    kvp_status_t        kstatus;

    kvt_list_init(&ep->pieces);
    kvt_list_init(&ep->flushes);
    memset(&params, 0, sizeof(params));
    params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    params.sockaddr.addr    = addr;
    params.sockaddr.addrlen = addr_len;
    params.err_mode         = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb   = ep_err_cb;
    params.err_handler.arg  = ep;
    status                  = ucp_ep_create(ctx->worker, &params, &ep->ucp_ep);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_ep_create(%s) failed: %s", base->peer,
                     ucs_status_string(status));
        ep->ucp_ep = NULL;
        kstatus    = kvt__ucx_status(status);
        return kstatus == KVP_ERR_NO_MEMORY ? kstatus : KVP_ERR_CONNECTION_REFUSED;
    }

    req = ucp_ep_flush_nbx(ep->ucp_ep, &fparam);
    if (req == NULL) {
        status = UCS_OK;
    } else if (UCS_PTR_IS_ERR(req)) {
        status = UCS_PTR_STATUS(req);
    } else {
        while ((status = ucp_request_check_status(req)) == UCS_INPROGRESS &&
               base->status == KVP_OK && kv_time_ns() < deadline_ns) {
            ucp_worker_progress(ctx->worker);
        }
        ucp_request_free(req);
    }
    if (status == UCS_OK && base->status == KVP_OK) {
        switch (ctx->rma) {
        case KVT_UCX_RMA_NATIVE:
            ep->emulated = 0;
            break;
        case KVT_UCX_RMA_EMULATED:
            ep->emulated = 1;
            break;
        default:
            ep->emulated = !ep_has_rma_lane(ep);
            break;
        }
        kv_log_debug("transport: ucx: %s: %s RMA", base->peer,
                     ep->emulated ? "emulated" : "native");
        return KVP_OK;
    }

    /* Failed or timed out: report the cause.  A peer that never answered is
     * "refused" whatever UCX called it; ep_cleanup force-closes. */
    if (status == UCS_INPROGRESS && base->status == KVP_OK) {
        kstatus = KVP_ERR_TIMED_OUT;
    } else {
        kstatus = KVP_ERR_CONNECTION_REFUSED;
    }
    kvt__ep_set_failed(base, kstatus);
    return kstatus;
}

static void ucx_ep_abort(kvt_ep_h base)
{
    ucx_ep_t    *ep = to_ep(base);
    kvp_status_t status;

    if (ep->ucp_ep == NULL) {
        return;
    }
    /* Force close purges the requests in flight: their callbacks run (now or
     * from progress) with UCS_ERR_CANCELED; no byte moves afterwards. */
    status =
        ucx_ep_close(to_ctx(base->ctx)->worker, ep->ucp_ep, 1, kvt__deadline(base->ctx));
    if (status != KVP_OK) {
        kv_log_warn("transport: ucx: %s: force close: %s", base->peer,
                    kvp_status_string(status));
    }
    ep->ucp_ep = NULL;
    kvt__ucx_am_ep_fail(ep, base->status);
}

static void ucx_ep_cleanup(kvt_ep_h base)
{
    ucx_ep_t    *ep = to_ep(base);
    kvp_status_t status;

    if (ep->ucp_ep == NULL) {
        kvt__ucx_am_ep_fail(ep, KVP_ERR_CONNECTION_LOST);
        return;
    }
    /* A healthy endpoint says goodbye to its peer; a failed one just goes. */
    status = ucx_ep_close(to_ctx(base->ctx)->worker, ep->ucp_ep, base->status != KVP_OK,
                          kvt__deadline(base->ctx));
    if (status != KVP_OK && base->status == KVP_OK) {
        kv_log_warn("transport: ucx: %s: close: %s", base->peer,
                    kvp_status_string(status));
    }
    ep->ucp_ep = NULL;
    kvt__ucx_am_ep_fail(ep, KVP_ERR_CONNECTION_LOST);
}

static kvp_status_t ucx_rkey_unpack(kvt_ep_h base, const kvt_rkey_info_t *info,
                                    void **rkey_p)
{
    ucx_ep_t    *ep = to_ep(base);
    ucp_rkey_h   rkey;
    ucs_status_t status;

    if (ep->ucp_ep == NULL) {
        return KVP_ERR_CONNECTION_LOST;
    }
    status = ucp_ep_rkey_unpack(ep->ucp_ep, info->key, &rkey);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: %s: ucp_ep_rkey_unpack failed: %s", base->peer,
                     ucs_status_string(status));
        return status == UCS_ERR_UNREACHABLE ? KVP_ERR_INVALID_PARAM
                                             : kvt__ucx_status(status);
    }
    *rkey_p = rkey;
    return KVP_OK;
}

static void ucx_rkey_destroy(kvt_ep_h base, void *rkey)
{
    ucp_rkey_destroy(rkey);
}

static void xfer_cb(void *request, ucs_status_t status, void *user_data)
{
    kvt__request_done(user_data, kvt__ucx_status(status));
    ucp_request_free(request);
}

static kvp_status_t ucx_ep_xfer(kvt_ep_h base, kvt_xfer_op_t op, const kvt_iov_t *iov,
                                void *const *rkeys, size_t n, kvt_request_h req)
{
    ucx_ep_t           *ep = to_ep(base);
    ucp_request_param_t param;
    ucs_status_ptr_t    sp;

    if (ep->ucp_ep == NULL) {
        return KVP_ERR_CONNECTION_LOST;
    }
    if (ep->emulated) {
        return kvt__ucx_am_xfer(ep, op, iov, n, req);
    }
    param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_MEMH;
    param.cb.send   = xfer_cb;
    param.user_data = req;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].len == 0) {
            continue;
        }
        param.memh = kv_container_of(iov[i].local_mem, ucx_mem_t, super)->memh;
        if (op == KVT_XFER_PUT) {
            sp = ucp_put_nbx(ep->ucp_ep, iov[i].local, iov[i].len, iov[i].remote,
                             rkeys[i], &param);
        } else {
            sp = ucp_get_nbx(ep->ucp_ep, iov[i].local, iov[i].len, iov[i].remote,
                             rkeys[i], &param);
        }
        if (UCS_PTR_IS_ERR(sp)) {
            kv_log_error("transport: ucx: %s: %s of piece %zu failed: %s", base->peer,
                         op == KVT_XFER_PUT ? "put" : "get", i,
                         ucs_status_string(UCS_PTR_STATUS(sp)));
            return kvt__ucx_status(UCS_PTR_STATUS(sp));
        }
        if (sp != NULL) {
            kvt__request_add(req);
        }
    }
    return KVP_OK;
}

static kvp_status_t ucx_ep_flush(kvt_ep_h base, kvt_request_h req)
{
    ucx_ep_t           *ep = to_ep(base);
    ucp_request_param_t param;
    ucs_status_ptr_t    sp;

    if (ep->ucp_ep == NULL) {
        return KVP_ERR_CONNECTION_LOST;
    }
    if (ep->emulated) {
        return kvt__ucx_am_flush(ep, req);
    }
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.send      = xfer_cb;
    param.user_data    = req;
    sp                 = ucp_ep_flush_nbx(ep->ucp_ep, &param);
    if (UCS_PTR_IS_ERR(sp)) {
        return kvt__ucx_status(UCS_PTR_STATUS(sp));
    }
    if (sp != NULL) {
        kvt__request_add(req);
    }
    return KVP_OK;
}

/* ------------------------------------------------------------------------ */
/* Extension                                                                 */
/* ------------------------------------------------------------------------ */

kvp_status_t kvt_ucx_ep_info(kvt_ep_h base, char *buf, size_t len)
{
    ucx_ep_t *ep;
    FILE     *f;

    if (base == NULL || buf == NULL || len == 0) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (base->ctx->backend != &kvt_ucx_backend) {
        return KVP_ERR_UNSUPPORTED;
    }
    ep = to_ep(base);
    if (ep->ucp_ep == NULL) {
        return KVP_ERR_UNSUPPORTED;
    }
    memset(buf, 0, len);
    f = fmemopen(buf, len > 1 ? len - 1 : 1, "w");
    if (f == NULL) {
        kv_log_error("transport: ucx: fmemopen: %m");
        return KVP_ERR_IO;
    }
    fprintf(f, "# kvt RMA: %s\n",
            ep->emulated ? "emulated (active messages)"
                         : "native (ucp_put_nbx/ucp_get_nbx)");
    ucp_ep_print_info(ep->ucp_ep, f);
    fclose(f);
    buf[len - 1] = '\0';
    return KVP_OK;
}

const kvt_backend_t kvt_ucx_backend = {
    .name          = "ucx",
    .id            = 1,
    .context_size  = sizeof(ucx_context_t),
    .mem_size      = sizeof(ucx_mem_t),
    .listener_size = sizeof(ucx_listener_t),
    .ep_size       = sizeof(ucx_ep_t),
    .request_size  = sizeof(struct kvt_request),
    .ops =
        {
            .context_init     = ucx_context_init,
            .context_cleanup  = ucx_context_cleanup,
            .progress         = ucx_progress,
            .event_fd         = ucx_event_fd,
            .arm              = ucx_arm,
            .mem_reg          = ucx_mem_reg,
            .mem_dereg        = ucx_mem_dereg,
            .mem_pack_rkey    = ucx_mem_pack_rkey,
            .listener_init    = ucx_listener_init,
            .listener_query   = ucx_listener_query,
            .listener_cleanup = ucx_listener_cleanup,
            .ep_connect       = ucx_ep_connect,
            .ep_abort         = ucx_ep_abort,
            .ep_cleanup       = ucx_ep_cleanup,
            .rkey_unpack      = ucx_rkey_unpack,
            .rkey_destroy     = ucx_rkey_destroy,
            .ep_xfer          = ucx_ep_xfer,
            .ep_flush         = ucx_ep_flush,
        },
};
