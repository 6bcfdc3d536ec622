/*
 * The verbs backend: librdmacm connections, libibverbs RC queue pairs,
 * RDMA WRITE and READ.
 *
 * One protection domain per context, on one device (the first one, or the
 * one owning params->device_addr); memory is registered there, so every
 * connection must be on that device too (checked after address
 * resolution and on each connection request).
 *
 * Connections.  A client endpoint owns its own CM event channel, so that a
 * blocking connect reads only its own events; after the connection is up
 * the channel is polled from progress for DISCONNECTED.  Listeners and the
 * connections they accept share the context's channel (accepted ids
 * inherit their listener's channel), so closing a listener leaves its
 * accepted connections alive, as the API promises.  The accepted side never
 * posts work: its NIC serves the peer's WRITEs and READs.
 *
 * Transfers.  Each endpoint has one send queue of sq_depth entries and its
 * own CQ of the same size, so the CQ can never overrun.  Every WR is
 * signalled; its wr_id is its request.  A batch larger than the free send
 * queue space waits on the endpoint's FIFO queue and is posted from
 * progress as completions free entries.  WRs are posted in chains of up to
 * POST_BATCH and completions reaped POLL_BATCH at a time.
 *
 * Flush is a zero-length, signalled RDMA WRITE queued behind everything
 * else: RC completes WRs of one send queue in order, so its completion
 * means every earlier WR has been acknowledged by the peer's NIC.
 *
 * Failure.  An error completion moves the QP to the error state, after
 * which the NIC flushes every posted WR with IBV_WC_WR_FLUSH_ERR; WRs still
 * on our FIFO are completed from progress with the endpoint's failure.
 * ep_abort (a deadline passed) moves the QP to the error state itself and
 * reaps the flushed WRs, so no byte moves once it returns.
 *
 * Foreign conventions are converted in one place each: errno (rdmacm -1 +
 * errno, verbs NULL + errno or a returned errno) in verbs_errno_status(),
 * work completion codes in verbs_wc_status(), CM event types in
 * verbs_cm_event_status().
 */
#include "base.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>

#define SQ_DEPTH_MAX 256
#define POST_BATCH 32
#define POLL_BATCH 32
#define RD_ATOMIC_MAX 16
#define LISTEN_BACKLOG 128
#define PIECE_MAX ((size_t)1 << 30) /* below every device's max_msg_sz */

typedef struct vrb_context {
    struct kvt_context         super;
    struct ibv_context        *verbs; /**< owned by librdmacm */
    struct ibv_pd             *pd;
    struct ibv_device_attr     dev_attr;
    struct rdma_event_channel *ch; /**< listeners and accepted peers */
    kvt_list_t                 peers;
    uint32_t                   sq_depth;
} vrb_context_t;

typedef struct vrb_mem {
    struct kvt_mem super;
    struct ibv_mr *mr;
} vrb_mem_t;

/* What an id's context points to on the shared channel. */
typedef enum { OWNER_LISTENER, OWNER_PEER } owner_kind_t;

typedef struct vrb_listener {
    struct kvt_listener super;
    owner_kind_t        kind;
    struct rdma_cm_id  *id;
} vrb_listener_t;

typedef struct vrb_peer {
    owner_kind_t       kind;
    kvt_list_t         link; /**< in ctx->peers */
    struct rdma_cm_id *id;
    struct ibv_cq     *cq;
    char               addr[KVT_ADDR_STRLEN];
} vrb_peer_t;

typedef struct vrb_ep {
    struct kvt_ep              super;
    struct rdma_event_channel *ch;
    struct rdma_cm_id         *id;
    struct ibv_cq             *cq;
    int                        connected;   /**< rdma_connect succeeded */
    uint32_t                   outstanding; /**< WRs posted, not reaped */
    kvt_list_t                 queue;       /**< requests with WRs to post */
} vrb_ep_t;

typedef struct vrb_wr {
    uint64_t laddr;
    uint64_t raddr;
    uint32_t lkey;
    uint32_t rkey;
    uint32_t len;
} vrb_wr_t;

typedef struct vrb_request {
    struct kvt_request super;
    kvt_list_t         qlink; /**< in ep->queue while WRs remain */
    enum ibv_wr_opcode opcode;
    vrb_wr_t          *wrs;
    size_t             num_wrs;
    size_t             next; /**< first WR not yet posted */
} vrb_request_t;

const kvt_backend_t kvt_verbs_backend;

static vrb_context_t *to_ctx(kvt_context_h ctx)
{
    return kv_container_of(ctx, vrb_context_t, super);
}

static vrb_ep_t *to_ep(kvt_ep_h ep)
{
    return kv_container_of(ep, vrb_ep_t, super);
}

static vrb_request_t *to_req(kvt_request_h req)
{
    return kv_container_of(req, vrb_request_t, super);
}

/* ------------------------------------------------------------------------ */
/* Conversions                                                               */
/* ------------------------------------------------------------------------ */

static kvp_status_t verbs_errno_status(int err)
{
    switch (err) {
    case ENODEV:
    case ENOSYS:
    case EOPNOTSUPP:
        return KVP_ERR_UNSUPPORTED;
    case EADDRNOTAVAIL:
        return KVP_ERR_INVALID_PARAM;
    default:
        return kv_status_from_errno(err);
    }
}

static kvp_status_t verbs_wc_status(enum ibv_wc_status status)
{
    switch (status) {
    case IBV_WC_SUCCESS:
        return KVP_OK;
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_LEN_ERR:
    case IBV_WC_REM_INV_REQ_ERR:
        return KVP_ERR_INVALID_PARAM;
    default: /* retry exceeded, flushed, remote operation error, ... */
        return KVP_ERR_CONNECTION_LOST;
    }
}

static kvp_status_t verbs_cm_event_status(enum rdma_cm_event_type type)
{
    switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
    case RDMA_CM_EVENT_ROUTE_RESOLVED:
    case RDMA_CM_EVENT_ESTABLISHED:
        return KVP_OK;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_CONNECT_ERROR:
        return KVP_ERR_CONNECTION_REFUSED;
    default: /* DISCONNECTED, DEVICE_REMOVAL, ADDR_CHANGE, TIMEWAIT_EXIT */
        return KVP_ERR_CONNECTION_LOST;
    }
}

static kvp_status_t channel_nonblock(struct rdma_event_channel *ch)
{
    int flags = fcntl(ch->fd, F_GETFL);

    if (flags < 0 || fcntl(ch->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        kv_log_error("transport: verbs: fcntl(O_NONBLOCK): %m");
        return KVP_ERR_IO;
    }
    return KVP_OK;
}

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

/* Find the device: the first one, or the one owning @p device_addr. */
static kvp_status_t device_open(const kvt_params_t *params, struct ibv_context **verbs_p)
{
    struct ibv_device     **list;
    struct ibv_context    **devices;
    struct rdma_cm_id      *id;
    struct sockaddr_storage sa;
    socklen_t               sa_len;
    int                     num = 0, err;
    kvp_status_t            status;

    errno = 0;
    list  = ibv_get_device_list(&num);
    if (list == NULL) {
        err = errno;
        kv_log_error("transport: verbs: no RDMA device: ibv_get_device_list: %s",
                     strerror(err));
        return KVP_ERR_UNSUPPORTED;
    }
    ibv_free_device_list(list);
    if (num == 0) {
        kv_log_error("transport: verbs: no RDMA device: none found (no RDMA NIC, "
                     "or no driver such as mlx5_ib or rdma_rxe loaded)");
        return KVP_ERR_UNSUPPORTED;
    }
    devices = rdma_get_devices(&num);
    if (devices == NULL || num == 0) {
        kv_log_error("transport: verbs: no RDMA device: librdmacm sees none (%m)");
        if (devices != NULL) {
            rdma_free_devices(devices);
        }
        return KVP_ERR_UNSUPPORTED;
    }
    *verbs_p = devices[0];
    rdma_free_devices(devices); /* frees the array, not the devices */

    if (params == NULL || !(params->field_mask & KVT_PARAM_FIELD_DEVICE_ADDR) ||
        params->device_addr == NULL) {
        return KVP_OK;
    }
    /* Binding an id to the address tells which device owns it. */
    status = kv_addr_parse(params->device_addr, &sa, &sa_len);
    if (status != KVP_OK) {
        kv_log_error("transport: verbs: bad device_addr '%s'", params->device_addr);
        return status;
    }
    if (rdma_create_id(NULL, &id, NULL, RDMA_PS_TCP) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_create_id: %s", strerror(err));
        return verbs_errno_status(err);
    }
    status = KVP_OK;
    if (rdma_bind_addr(id, (struct sockaddr *)&sa) != 0 || id->verbs == NULL) {
        kv_log_error("transport: verbs: device_addr %s is not on an RDMA device",
                     params->device_addr);
        status = KVP_ERR_INVALID_PARAM;
    } else {
        *verbs_p = id->verbs;
    }
    rdma_destroy_id(id);
    return status;
}

static kvp_status_t verbs_context_init(kvt_context_h base, const kvt_params_t *params)
{
    vrb_context_t *ctx = to_ctx(base);
    kvp_status_t   status;
    int            err;

    kvt_list_init(&ctx->peers);
    status = device_open(params, &ctx->verbs);
    if (status != KVP_OK) {
        goto err;
    }
    err = ibv_query_device(ctx->verbs, &ctx->dev_attr); /* returns an errno */
    if (err != 0) {
        kv_log_error("transport: verbs: ibv_query_device: %s", strerror(err));
        status = verbs_errno_status(err);
        goto err;
    }
    ctx->sq_depth = (uint32_t)KV_MIN(SQ_DEPTH_MAX, ctx->dev_attr.max_qp_wr);
    ctx->pd       = ibv_alloc_pd(ctx->verbs);
    if (ctx->pd == NULL) {
        err = errno;
        kv_log_error("transport: verbs: ibv_alloc_pd: %s", strerror(err));
        status = verbs_errno_status(err);
        goto err;
    }
    ctx->ch = rdma_create_event_channel();
    if (ctx->ch == NULL) {
        err = errno;
        kv_log_error("transport: verbs: rdma_create_event_channel: %s", strerror(err));
        status = verbs_errno_status(err);
        goto err_dealloc_pd;
    }
    status = channel_nonblock(ctx->ch);
    if (status != KVP_OK) {
        goto err_destroy_channel;
    }
    kv_log_info("transport: verbs: using %s", ibv_get_device_name(ctx->verbs->device));
    return KVP_OK;

err_destroy_channel:
    rdma_destroy_event_channel(ctx->ch);
err_dealloc_pd:
    ibv_dealloc_pd(ctx->pd);
err:
    return status;
}

static void peer_destroy(vrb_peer_t *peer)
{
    if (peer->id->qp != NULL) {
        rdma_destroy_qp(peer->id);
    }
    if (peer->cq != NULL) {
        ibv_destroy_cq(peer->cq);
    }
    rdma_destroy_id(peer->id);
    kvt_list_del(&peer->link);
    kv_free(peer);
}

static void verbs_context_cleanup(kvt_context_h base)
{
    vrb_context_t *ctx = to_ctx(base);

    while (!kvt_list_is_empty(&ctx->peers)) {
        vrb_peer_t *peer = kv_container_of(ctx->peers.next, vrb_peer_t, link);
        rdma_disconnect(peer->id);
        peer_destroy(peer);
    }
    rdma_destroy_event_channel(ctx->ch);
    if (ibv_dealloc_pd(ctx->pd) != 0) {
        kv_log_error("transport: verbs: ibv_dealloc_pd failed (memory still "
                     "registered?)");
    }
}

/* ------------------------------------------------------------------------ */
/* Connection resources                                                      */
/* ------------------------------------------------------------------------ */

/* A CQ and an RC QP on @p id, for @p depth outstanding sends. */
static kvp_status_t qp_create(vrb_context_t *ctx, struct rdma_cm_id *id, uint32_t depth,
                              struct ibv_cq **cq_p)
{
    struct ibv_qp_init_attr attr;
    struct ibv_cq          *cq;
    int                     err;

    if (id->verbs != ctx->verbs) {
        kv_log_error("transport: verbs: connection on device %s, but the context "
                     "uses %s (set device_addr)",
                     id->verbs ? ibv_get_device_name(id->verbs->device) : "(none)",
                     ibv_get_device_name(ctx->verbs->device));
        return KVP_ERR_INVALID_PARAM;
    }
    cq = ibv_create_cq(ctx->verbs, (int)depth, NULL, NULL, 0);
    if (cq == NULL) {
        err = errno;
        kv_log_error("transport: verbs: ibv_create_cq: %s", strerror(err));
        return verbs_errno_status(err);
    }
    memset(&attr, 0, sizeof(attr));
    attr.send_cq          = cq;
    attr.recv_cq          = cq;
    attr.qp_type          = IBV_QPT_RC;
    attr.sq_sig_all       = 1;
    attr.cap.max_send_wr  = depth;
    attr.cap.max_recv_wr  = 1;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    if (rdma_create_qp(id, ctx->pd, &attr) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_create_qp: %s", strerror(err));
        ibv_destroy_cq(cq);
        return verbs_errno_status(err);
    }
    *cq_p = cq;
    return KVP_OK;
}

static void conn_param_init(vrb_context_t *ctx, struct rdma_conn_param *param)
{
    memset(param, 0, sizeof(*param));
    param->responder_resources =
        (uint8_t)KV_MIN(RD_ATOMIC_MAX, ctx->dev_attr.max_qp_rd_atom);
    param->initiator_depth =
        (uint8_t)KV_MIN(RD_ATOMIC_MAX, ctx->dev_attr.max_qp_init_rd_atom);
    param->retry_count     = 7;
    param->rnr_retry_count = 7;
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

static kvp_status_t verbs_mem_reg(kvt_mem_h base)
{
    vrb_mem_t *mem = kv_container_of(base, vrb_mem_t, super);
    int        err;

    mem->mr = ibv_reg_mr(to_ctx(base->ctx)->pd, base->addr, base->len,
                         IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                             IBV_ACCESS_REMOTE_READ);
    if (mem->mr == NULL) {
        err = errno;
        kv_log_error("transport: verbs: ibv_reg_mr(%p, %zu): %s", base->addr, base->len,
                     strerror(err));
        return verbs_errno_status(err);
    }
    return KVP_OK;
}

static void verbs_mem_dereg(kvt_mem_h base)
{
    vrb_mem_t *mem = kv_container_of(base, vrb_mem_t, super);
    int        err = ibv_dereg_mr(mem->mr);

    if (err != 0) {
        kv_log_error("transport: verbs: ibv_dereg_mr: %s", strerror(err));
    }
}

/* The backend's part of the packed rkey: the 32-bit rkey, little-endian
 * (the envelope carries the region's base and length). */
static kvp_status_t verbs_mem_pack_rkey(kvt_mem_h base, void **buf_p, size_t *len_p)
{
    vrb_mem_t *mem  = kv_container_of(base, vrb_mem_t, super);
    uint8_t   *buf  = kv_malloc(4, "verbs rkey");
    uint32_t   rkey = mem->mr->rkey;

    for (int i = 0; i < 4; i++) {
        buf[i] = (uint8_t)(rkey >> (8 * i));
    }
    *buf_p = buf;
    *len_p = 4;
    return KVP_OK;
}

static kvp_status_t verbs_rkey_unpack(kvt_ep_h ep, const kvt_rkey_info_t *info,
                                      void **rkey_p)
{
    const uint8_t *p = info->key;

    if (info->key_len != 4) {
        return KVP_ERR_INVALID_PARAM;
    }
    /* The rkey itself is the handle: no allocation to release. */
    *rkey_p = (void *)(uintptr_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                  (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    return KVP_OK;
}

/* ------------------------------------------------------------------------ */
/* Listener and accepted peers                                               */
/* ------------------------------------------------------------------------ */

static void peer_accept(vrb_context_t *ctx, struct rdma_cm_event *event)
{
    struct rdma_cm_id     *id = event->id;
    struct rdma_conn_param param;
    vrb_peer_t            *peer;
    kvp_status_t           status;

    peer       = kv_calloc(1, sizeof(*peer), "verbs peer");
    peer->kind = OWNER_PEER;
    peer->id   = id;
    kvt_list_init(&peer->link);
    kvt__sockaddr_format(rdma_get_peer_addr(id), peer->addr, sizeof(peer->addr));

    /* The accepted side posts nothing: a minimal send queue and CQ. */
    status = qp_create(ctx, id, 1, &peer->cq);
    if (status != KVP_OK) {
        goto err_reject;
    }
    conn_param_init(ctx, &param);
    param.responder_resources =
        (uint8_t)KV_MIN(param.responder_resources, event->param.conn.initiator_depth);
    param.initiator_depth =
        (uint8_t)KV_MIN(param.initiator_depth, event->param.conn.responder_resources);
    if (rdma_accept(id, &param) != 0) {
        kv_log_error("transport: verbs: rdma_accept(%s): %m", peer->addr);
        goto err_destroy_qp;
    }
    id->context = peer;
    kvt_list_add(&ctx->peers, &peer->link);
    kv_log_debug("transport: verbs: accepted %s", peer->addr);
    return;

err_destroy_qp:
    rdma_destroy_qp(id);
    ibv_destroy_cq(peer->cq);
err_reject:
    rdma_reject(id, NULL, 0);
    kv_free(peer);
    /* the id is destroyed by the caller, after the event is acked */
    id->context = NULL;
}

/* Events of listeners and accepted peers, from the context's channel. */
static void cm_progress(vrb_context_t *ctx)
{
    struct rdma_cm_event *event;

    while (rdma_get_cm_event(ctx->ch, &event) == 0) {
        struct rdma_cm_id      *id     = event->id;
        enum rdma_cm_event_type type   = event->event;
        vrb_peer_t             *doomed = NULL;
        int                     orphan = 0;

        if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
            peer_accept(ctx, event);
            orphan = id->context == NULL;
        } else if (id->context != NULL && *(owner_kind_t *)id->context == OWNER_PEER) {
            vrb_peer_t *peer = id->context;
            if (type == RDMA_CM_EVENT_ESTABLISHED) {
                kv_log_debug("transport: verbs: %s connected", peer->addr);
            } else if (verbs_cm_event_status(type) != KVP_OK) {
                kv_log_debug("transport: verbs: %s: %s", peer->addr,
                             rdma_event_str(type));
                doomed = peer;
            }
        } else {
            kv_log_info("transport: verbs: listener event %s", rdma_event_str(type));
        }
        rdma_ack_cm_event(event);
        /* ids are destroyed only once their events are acked */
        if (orphan) {
            rdma_destroy_id(id);
        }
        if (doomed != NULL) {
            rdma_disconnect(doomed->id);
            peer_destroy(doomed);
        }
    }
}

static kvp_status_t verbs_listener_init(kvt_listener_h base, const struct sockaddr *addr,
                                        socklen_t addr_len)
{
    vrb_listener_t *l   = kv_container_of(base, vrb_listener_t, super);
    vrb_context_t  *ctx = to_ctx(base->ctx);
    kvp_status_t    status;
    int             err;

    l->kind = OWNER_LISTENER;
    /* the id's context points at the kind tag, as peers' ids do */
    if (rdma_create_id(ctx->ch, &l->id, &l->kind, RDMA_PS_TCP) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_create_id: %s", strerror(err));
        return verbs_errno_status(err);
    }
    if (rdma_bind_addr(l->id, (struct sockaddr *)addr) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_bind_addr: %s", strerror(err));
        status = err == EADDRINUSE ? KVP_ERR_IO : verbs_errno_status(err);
        goto err_destroy_id;
    }
    if (l->id->verbs != NULL && l->id->verbs != ctx->verbs) {
        kv_log_error("transport: verbs: listen address is on %s, the context uses %s",
                     ibv_get_device_name(l->id->verbs->device),
                     ibv_get_device_name(ctx->verbs->device));
        status = KVP_ERR_INVALID_PARAM;
        goto err_destroy_id;
    }
    if (rdma_listen(l->id, LISTEN_BACKLOG) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_listen: %s", strerror(err));
        status = verbs_errno_status(err);
        goto err_destroy_id;
    }
    (void)addr_len;
    return KVP_OK;

err_destroy_id:
    rdma_destroy_id(l->id);
    return status;
}

static kvp_status_t verbs_listener_query(kvt_listener_h           base,
                                         struct sockaddr_storage *addr_p)
{
    vrb_listener_t  *l  = kv_container_of(base, vrb_listener_t, super);
    struct sockaddr *sa = rdma_get_local_addr(l->id);

    memset(addr_p, 0, sizeof(*addr_p));
    memcpy(addr_p, sa,
           sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in));
    return KVP_OK;
}

static void verbs_listener_cleanup(kvt_listener_h base)
{
    vrb_listener_t *l = kv_container_of(base, vrb_listener_t, super);

    rdma_destroy_id(l->id);
}

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                 */
/* ------------------------------------------------------------------------ */

/* Milliseconds left until @p deadline_ns, at least 1. */
static int remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = kv_time_ns();
    return now >= deadline_ns
               ? 1
               : (int)KV_MIN((deadline_ns - now) / 1000000u + 1, (uint64_t)INT32_MAX);
}

/* Wait on the endpoint's own channel for the next event, until deadline. */
static kvp_status_t ep_wait_event(vrb_ep_t *ep, enum rdma_cm_event_type want,
                                  uint64_t deadline_ns)
{
    struct rdma_cm_event   *event;
    struct pollfd           pfd = {.fd = ep->ch->fd, .events = POLLIN};
    enum rdma_cm_event_type type;
    int                     status;

    for (;;) {
        if (rdma_get_cm_event(ep->ch, &event) == 0) {
            break;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            kv_log_error("transport: verbs: rdma_get_cm_event: %m");
            return KVP_ERR_IO;
        }
        if (kv_time_ns() >= deadline_ns) {
            return KVP_ERR_TIMED_OUT;
        }
        if (poll(&pfd, 1, remaining_ms(deadline_ns)) < 0 && errno != EINTR) {
            return KVP_ERR_IO;
        }
    }
    type   = event->event;
    status = event->status;
    rdma_ack_cm_event(event);
    if (type != want) {
        kv_log_info("transport: verbs: %s: %s (status %d), expected %s", ep->super.peer,
                    rdma_event_str(type), status, rdma_event_str(want));
        return verbs_cm_event_status(type) == KVP_OK ? KVP_ERR_PROTOCOL
                                                     : verbs_cm_event_status(type);
    }
    return KVP_OK;
}

static kvp_status_t verbs_ep_connect(kvt_ep_h base, const struct sockaddr *addr,
                                     socklen_t addr_len, uint64_t deadline_ns)
{
    vrb_ep_t              *ep  = to_ep(base);
    vrb_context_t         *ctx = to_ctx(base->ctx);
    struct rdma_conn_param param;
    kvp_status_t           status;
    int                    err;

    kvt_list_init(&ep->queue);
    ep->ch = rdma_create_event_channel();
    if (ep->ch == NULL) {
        err = errno;
        kv_log_error("transport: verbs: rdma_create_event_channel: %s", strerror(err));
        return verbs_errno_status(err);
    }
    status = channel_nonblock(ep->ch);
    if (status != KVP_OK) {
        return status;
    }
    if (rdma_create_id(ep->ch, &ep->id, ep, RDMA_PS_TCP) != 0) {
        err    = errno;
        ep->id = NULL;
        kv_log_error("transport: verbs: rdma_create_id: %s", strerror(err));
        return verbs_errno_status(err);
    }
    if (rdma_resolve_addr(ep->id, NULL, (struct sockaddr *)addr,
                          remaining_ms(deadline_ns)) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_resolve_addr(%s): %s", base->peer,
                     strerror(err));
        return KVP_ERR_CONNECTION_REFUSED;
    }
    status = ep_wait_event(ep, RDMA_CM_EVENT_ADDR_RESOLVED, deadline_ns);
    if (status != KVP_OK) {
        return status;
    }
    if (rdma_resolve_route(ep->id, remaining_ms(deadline_ns)) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_resolve_route(%s): %s", base->peer,
                     strerror(err));
        return KVP_ERR_CONNECTION_REFUSED;
    }
    status = ep_wait_event(ep, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline_ns);
    if (status != KVP_OK) {
        return status;
    }
    status = qp_create(ctx, ep->id, ctx->sq_depth, &ep->cq);
    if (status != KVP_OK) {
        return status;
    }
    conn_param_init(ctx, &param);
    if (rdma_connect(ep->id, &param) != 0) {
        err = errno;
        kv_log_error("transport: verbs: rdma_connect(%s): %s", base->peer, strerror(err));
        return verbs_errno_status(err);
    }
    ep->connected = 1;
    (void)addr_len;
    return ep_wait_event(ep, RDMA_CM_EVENT_ESTABLISHED, deadline_ns);
}

/* Post queued WRs while the send queue has room. */
static void ep_post(vrb_ep_t *ep)
{
    vrb_context_t     *ctx = to_ctx(ep->super.ctx);
    struct ibv_send_wr wrs[POST_BATCH], *bad;
    struct ibv_sge     sges[POST_BATCH];

    while (ep->super.status == KVP_OK && !kvt_list_is_empty(&ep->queue) &&
           ep->outstanding < ctx->sq_depth) {
        vrb_request_t *req   = kv_container_of(ep->queue.next, vrb_request_t, qlink);
        size_t         count = KV_MIN(KV_MIN(req->num_wrs - req->next, POST_BATCH),
                                      ctx->sq_depth - ep->outstanding);
        int            err;

        for (size_t i = 0; i < count; i++) {
            const vrb_wr_t *w = &req->wrs[req->next + i];

            sges[i].addr   = w->laddr;
            sges[i].length = w->len;
            sges[i].lkey   = w->lkey;
            memset(&wrs[i], 0, sizeof(wrs[i]));
            wrs[i].wr_id               = (uintptr_t)&req->super;
            wrs[i].sg_list             = w->len ? &sges[i] : NULL;
            wrs[i].num_sge             = w->len ? 1 : 0;
            wrs[i].opcode              = req->opcode;
            wrs[i].send_flags          = IBV_SEND_SIGNALED;
            wrs[i].wr.rdma.remote_addr = w->raddr;
            wrs[i].wr.rdma.rkey        = w->rkey;
            wrs[i].next                = i + 1 < count ? &wrs[i + 1] : NULL;
        }
        err = ibv_post_send(ep->id->qp, wrs, &bad); /* returns an errno */
        if (err != 0) {
            size_t posted = (size_t)(bad - wrs);
            kv_log_error("transport: verbs: %s: ibv_post_send: %s", ep->super.peer,
                         strerror(err));
            req->next += posted;
            ep->outstanding += (uint32_t)posted;
            kvt__ep_set_failed(&ep->super, verbs_errno_status(err));
            return;
        }
        req->next += count;
        ep->outstanding += (uint32_t)count;
        if (req->next == req->num_wrs) {
            kvt_list_del(&req->qlink);
        }
    }
}

/* Complete the WRs of a failed endpoint that never reached the NIC. */
static void ep_drain_queue(vrb_ep_t *ep)
{
    while (!kvt_list_is_empty(&ep->queue)) {
        vrb_request_t *req  = kv_container_of(ep->queue.next, vrb_request_t, qlink);
        size_t         left = req->num_wrs - req->next;

        kvt_list_del(&req->qlink);
        req->next = req->num_wrs;
        /* the last kvt__request_done() may free req: count first */
        while (left-- > 0) {
            kvt__request_done(&req->super, ep->super.status);
        }
    }
}

/* Reap completions; returns how many. */
static int ep_poll_cq(vrb_ep_t *ep)
{
    struct ibv_wc wcs[POLL_BATCH];
    int           n, total = 0;

    if (ep->cq == NULL) {
        return 0;
    }
    do {
        n = ibv_poll_cq(ep->cq, POLL_BATCH, wcs);
        if (n < 0) {
            kv_log_error("transport: verbs: %s: ibv_poll_cq failed", ep->super.peer);
            kvt__ep_set_failed(&ep->super, KVP_ERR_IO);
            return total;
        }
        for (int i = 0; i < n; i++) {
            kvp_status_t status = verbs_wc_status(wcs[i].status);

            if (status != KVP_OK) {
                if (wcs[i].status != IBV_WC_WR_FLUSH_ERR) {
                    kv_log_error("transport: verbs: %s: work completion: %s",
                                 ep->super.peer, ibv_wc_status_str(wcs[i].status));
                }
                kvt__ep_set_failed(&ep->super, KVP_ERR_CONNECTION_LOST);
                if (ep->super.status == KVP_ERR_TIMED_OUT) {
                    status = KVP_ERR_TIMED_OUT;
                }
            }
            ep->outstanding--;
            kvt__request_done((kvt_request_h)(uintptr_t)wcs[i].wr_id, status);
        }
        total += n;
    } while (n == POLL_BATCH);
    return total;
}

/* The endpoint's own CM events, after the connection is up. */
static void ep_cm_progress(vrb_ep_t *ep)
{
    struct rdma_cm_event *event;

    while (ep->ch != NULL && rdma_get_cm_event(ep->ch, &event) == 0) {
        enum rdma_cm_event_type type = event->event;

        rdma_ack_cm_event(event);
        if (verbs_cm_event_status(type) != KVP_OK) {
            kv_log_info("transport: verbs: %s: %s", ep->super.peer, rdma_event_str(type));
            kvt__ep_set_failed(&ep->super, verbs_cm_event_status(type));
            /* moves the QP to the error state: posted WRs flush now rather
             * than after the NIC's retries run out */
            rdma_disconnect(ep->id);
        }
    }
}

static void ep_progress(vrb_ep_t *ep)
{
    ep_cm_progress(ep);
    ep_poll_cq(ep);
    if (ep->super.status == KVP_OK) {
        ep_post(ep);
    } else {
        ep_drain_queue(ep);
    }
}

static void verbs_progress(kvt_context_h base)
{
    kvt_list_t *it, *next;

    cm_progress(to_ctx(base));
    for (it = base->eps.next; it != &base->eps; it = next) {
        next = it->next;
        ep_progress(to_ep(kv_container_of(it, struct kvt_ep, link)));
    }
}

/* Stop everything now: error state flushes the posted WRs, reap them. */
static void verbs_ep_abort(kvt_ep_h base)
{
    vrb_ep_t          *ep       = to_ep(base);
    struct ibv_qp_attr attr     = {.qp_state = IBV_QPS_ERR};
    uint64_t           deadline = kvt__deadline(base->ctx);
    int                err;

    if (ep->id != NULL && ep->id->qp != NULL) {
        err = ibv_modify_qp(ep->id->qp, &attr, IBV_QP_STATE);
        if (err != 0) {
            kv_log_error("transport: verbs: %s: ibv_modify_qp(ERR): %s", base->peer,
                         strerror(err));
        }
    }
    while (ep->outstanding > 0 && kv_time_ns() < deadline) {
        ep_poll_cq(ep);
    }
    if (ep->outstanding > 0) {
        kv_log_error("transport: verbs: %s: %u WRs never flushed", base->peer,
                     ep->outstanding);
    }
    ep_drain_queue(ep);
}

static void verbs_ep_cleanup(kvt_ep_h base)
{
    vrb_ep_t *ep = to_ep(base);

    if (ep->id != NULL) {
        if (ep->connected) {
            rdma_disconnect(ep->id);
        }
        if (ep->outstanding > 0 || !kvt_list_is_empty(&ep->queue)) {
            kvt__ep_set_failed(base, KVP_ERR_CONNECTION_LOST);
            verbs_ep_abort(base);
        }
        if (ep->id->qp != NULL) {
            rdma_destroy_qp(ep->id);
        }
    }
    if (ep->cq != NULL) {
        ibv_destroy_cq(ep->cq);
    }
    if (ep->id != NULL) {
        rdma_destroy_id(ep->id); /* our events are all acked */
    }
    if (ep->ch != NULL) {
        rdma_destroy_event_channel(ep->ch);
    }
}

static kvp_status_t verbs_ep_xfer(kvt_ep_h base, kvt_xfer_op_t op, const kvt_iov_t *iov,
                                  void *const *rkeys, size_t n, kvt_request_h req_base)
{
    vrb_ep_t      *ep  = to_ep(base);
    vrb_request_t *req = to_req(req_base);

    kvt_list_init(&req->qlink);
    req->opcode = op == KVT_XFER_PUT ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
    req->wrs    = kv_malloc(n * sizeof(*req->wrs), "verbs wrs");
    for (size_t i = 0; i < n; i++) {
        if (iov[i].len == 0) {
            continue;
        }
        if (iov[i].len > PIECE_MAX) {
            kv_log_error("transport: verbs: piece %zu: %zu bytes (limit %zu)", i,
                         iov[i].len, PIECE_MAX);
            return KVP_ERR_TOO_LARGE; /* nothing issued yet */
        }
        req->wrs[req->num_wrs++] = (vrb_wr_t){
            .laddr = (uintptr_t)iov[i].local,
            .raddr = iov[i].remote,
            .lkey  = kv_container_of(iov[i].local_mem, vrb_mem_t, super)->mr->lkey,
            .rkey  = (uint32_t)(uintptr_t)rkeys[i],
            .len   = (uint32_t)iov[i].len,
        };
    }
    if (req->num_wrs == 0) {
        return KVP_OK;
    }
    for (size_t i = 0; i < req->num_wrs; i++) {
        kvt__request_add(req_base);
    }
    kvt_list_add(&ep->queue, &req->qlink);
    ep_post(ep);
    return KVP_OK;
}

static kvp_status_t verbs_ep_flush(kvt_ep_h base, kvt_request_h req_base)
{
    vrb_ep_t      *ep  = to_ep(base);
    vrb_request_t *req = to_req(req_base);

    kvt_list_init(&req->qlink);
    if (ep->outstanding == 0 && kvt_list_is_empty(&ep->queue)) {
        return KVP_OK;
    }
    req->opcode  = IBV_WR_RDMA_WRITE;
    req->wrs     = kv_calloc(1, sizeof(*req->wrs), "verbs flush wr");
    req->num_wrs = 1; /* zero-length write: no rkey or address checked */
    kvt__request_add(req_base);
    kvt_list_add(&ep->queue, &req->qlink);
    ep_post(ep);
    return KVP_OK;
}

static void verbs_request_cleanup(kvt_request_h base)
{
    vrb_request_t *req = to_req(base);

    if (req->qlink.next != NULL) {
        kvt_list_del(&req->qlink);
    }
    kv_free(req->wrs);
}

/* ------------------------------------------------------------------------ */
/* Extension                                                                 */
/* ------------------------------------------------------------------------ */

kvp_status_t kvt_verbs_device_name(kvt_context_h ctx, char *buf, size_t len)
{
    const char *name;

    if (ctx == NULL || buf == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (ctx->backend != &kvt_verbs_backend) {
        return KVP_ERR_UNSUPPORTED;
    }
    name = ibv_get_device_name(to_ctx(ctx)->verbs->device);
    if (strlen(name) >= len) {
        return KVP_ERR_BUFFER_TOO_SMALL;
    }
    strcpy(buf, name);
    return KVP_OK;
}

const kvt_backend_t kvt_verbs_backend = {
    .name          = "verbs",
    .id            = 2,
    .context_size  = sizeof(vrb_context_t),
    .mem_size      = sizeof(vrb_mem_t),
    .listener_size = sizeof(vrb_listener_t),
    .ep_size       = sizeof(vrb_ep_t),
    .request_size  = sizeof(vrb_request_t),
    .ops =
        {
            .context_init     = verbs_context_init,
            .context_cleanup  = verbs_context_cleanup,
            .progress         = verbs_progress,
            .mem_reg          = verbs_mem_reg,
            .mem_dereg        = verbs_mem_dereg,
            .mem_pack_rkey    = verbs_mem_pack_rkey,
            .listener_init    = verbs_listener_init,
            .listener_query   = verbs_listener_query,
            .listener_cleanup = verbs_listener_cleanup,
            .ep_connect       = verbs_ep_connect,
            .ep_abort         = verbs_ep_abort,
            .ep_cleanup       = verbs_ep_cleanup,
            .rkey_unpack      = verbs_rkey_unpack,
            .ep_xfer          = verbs_ep_xfer,
            .ep_flush         = verbs_ep_flush,
            .request_cleanup  = verbs_request_cleanup,
        },
};
