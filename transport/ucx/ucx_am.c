/*
 * Puts and gets emulated with UCP active messages, for endpoints that have
 * no hardware RMA lane (TCP).  Why not UCX's own emulation: see
 * kvt_ucx_rma_t in <kvt/transport.h>; in short, UCX 1.13 aborts the target
 * when it answers a peer that has just failed, and it writes wherever the
 * initiator says.
 *
 *   initiator                                   target
 *   PUT {raddr, len, id} + bytes   ------>      check range, copy
 *                                  <------      ACK {id, status}
 *   GET {raddr, len, id}           ------>      check range
 *                                  <------      GET_REP {id, status} + bytes
 *
 * Every message is sent eager (UCP_AM_SEND_FLAG_EAGER), so a handler gets
 * whole messages and never has to start a rendezvous receive; a target
 * refuses a rendezvous message.  Every message asks for a reply endpoint
 * (UCP_AM_SEND_FLAG_REPLY): the target answers on it, and the initiator
 * accepts an answer only on the endpoint the piece was sent on.
 *
 * A piece is one iov of a batch.  It is found again through a slot table:
 * its id is (generation << 32 | slot), so a late or forged answer finds
 * nothing.  A piece is finished when it is answered (reply, send error or
 * endpoint failure: whichever comes first) and UCX no longer holds its send
 * (the send callback ran, or it completed at once); only then does its
 * request hear of it, so a buffer is never handed back while UCX may still
 * read or write it.  Once a piece is answered its slot is released, so a
 * late GET_REP is dropped and never lands in a buffer the caller has taken
 * back.
 *
 * Flush: a put piece is acknowledged after the target copied its bytes, so
 * "no put pending" is remote completion; a flush waits for that.
 *
 * Headers are kept alive until their send completes (UCX 1.13 may send a
 * queued message's header later, from progress).
 *
 * Payloads are sent through a generic (pack-callback) datatype, which UCX
 * can only send by copying (bcopy), never zero-copy: UCX 1.13's TCP
 * transport fails an assertion (uct_iface.h:884 "comp->count > 0", a
 * zero-copy completion invoked twice on its disconnect path) and aborts
 * the sender when the peer dies in the middle of a zero-copy send.  One
 * copy on a TCP path costs little.
 */
#include "ucx.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <string.h>

#define SLOT_NONE UINT32_MAX

typedef struct am_req_hdr {
    uint64_t raddr;
    uint64_t len;
    uint64_t id;
} am_req_hdr_t;

typedef struct am_rep_hdr {
    uint64_t id;
    int32_t  status; /* a kvp_status_t */
    uint32_t reserved;
} am_rep_hdr_t;

/*
 * The "buffer" handed to UCX with the copy-only datatype is a dt_state_t
 * describing the bytes, kept in the piece or reply until the send
 * completes; it is the pack state itself.  Nothing is allocated per send:
 * UCX 1.13 does not call finish() for sends it cancels when an endpoint
 * fails.
 */
typedef struct dt_state {
    uint8_t *buf;
    size_t   len;
} dt_state_t;

typedef enum { PIECE_PUT, PIECE_GET, PIECE_FLUSH } piece_op_t;

typedef struct kvt_ucx_piece {
    kvt_list_t    link; /**< in ep->pieces or ep->flushes */
    kvt_ucx_ep_t *ep;
    kvt_request_h req;
    piece_op_t    op;
    int           sending;  /**< UCX holds its send request */
    int           answered; /**< its outcome is known */
    kvp_status_t  status;
    void         *local;
    size_t        len;
    dt_state_t    payload; /**< what a put sends, for the datatype */
    am_req_hdr_t  hdr;     /**< sent header; hdr.id is 0 for flushes */
} kvt_ucx_piece_t;

/* ------------------------------------------------------------------------ */
/* The copy-only datatype                                                    */
/* ------------------------------------------------------------------------ */

static void *dt_start_pack(void *context, const void *buffer, size_t count)
{
    return (void *)(uintptr_t)buffer;
}

static void *dt_start_unpack(void *context, void *buffer, size_t count)
{
    return buffer;
}

static size_t dt_packed_size(void *state)
{
    return ((dt_state_t *)state)->len;
}

static size_t dt_pack(void *arg, size_t offset, void *dest, size_t max_length)
{
    dt_state_t *state = arg;
    size_t      n     = offset < state->len ? KV_MIN(max_length, state->len - offset) : 0;

    memcpy(dest, state->buf + offset, n);
    return n;
}

static ucs_status_t dt_unpack(void *arg, size_t offset, const void *src, size_t length)
{
    dt_state_t *state = arg;

    if (offset > state->len || length > state->len - offset) {
        return UCS_ERR_MESSAGE_TRUNCATED;
    }
    memcpy(state->buf + offset, src, length);
    return UCS_OK;
}

static void dt_finish(void *state)
{
}

static const ucp_generic_dt_ops_t dt_ops = {
    .start_pack   = dt_start_pack,
    .start_unpack = dt_start_unpack,
    .packed_size  = dt_packed_size,
    .pack         = dt_pack,
    .unpack       = dt_unpack,
    .finish       = dt_finish,
};

/* ------------------------------------------------------------------------ */
/* Slot table                                                                */
/* ------------------------------------------------------------------------ */

static uint64_t slot_alloc(kvt_ucx_context_t *ctx, kvt_ucx_piece_t *piece)
{
    uint32_t idx;

    if (ctx->free_slot == SLOT_NONE) {
        uint32_t old = ctx->num_slots, cap = old ? old * 2 : 256;

        ctx->slots = kv_realloc(ctx->slots, cap * sizeof(*ctx->slots), "ucx am slots");
        for (uint32_t i = old; i < cap; i++) {
            ctx->slots[i] = (kvt_ucx_slot_t){
                .piece = NULL, .gen = 0, .next_free = i + 1 < cap ? i + 1 : SLOT_NONE};
        }
        ctx->free_slot = old;
        ctx->num_slots = cap;
    }
    idx                   = ctx->free_slot;
    ctx->free_slot        = ctx->slots[idx].next_free;
    ctx->slots[idx].piece = piece;
    if (++ctx->slots[idx].gen == 0) {
        ctx->slots[idx].gen = 1; /* id 0 means "no slot" */
    }
    return (uint64_t)ctx->slots[idx].gen << 32 | idx;
}

static kvt_ucx_piece_t *slot_find(kvt_ucx_context_t *ctx, uint64_t id)
{
    uint32_t idx = (uint32_t)id;

    if (idx >= ctx->num_slots || ctx->slots[idx].piece == NULL ||
        ctx->slots[idx].gen != (uint32_t)(id >> 32)) {
        return NULL;
    }
    return ctx->slots[idx].piece;
}

static void slot_release(kvt_ucx_context_t *ctx, uint64_t id)
{
    uint32_t idx = (uint32_t)id;

    if (slot_find(ctx, id) == NULL) {
        return;
    }
    ctx->slots[idx].piece     = NULL;
    ctx->slots[idx].next_free = ctx->free_slot;
    ctx->free_slot            = idx;
}

/* ------------------------------------------------------------------------ */
/* Pieces                                                                    */
/* ------------------------------------------------------------------------ */

static void piece_answer(kvt_ucx_piece_t *piece, kvp_status_t status)
{
    if (piece->answered) {
        return;
    }
    piece->answered = 1;
    piece->status   = status;
    if (piece->hdr.id != 0) {
        slot_release(kvt_ucx_ctx(piece->ep->super.ctx), piece->hdr.id);
    }
}

static void flushes_answer(kvt_ucx_ep_t *ep, kvp_status_t status);

/* Finish the piece if it is answered and UCX is done with it. */
static void piece_try_finish(kvt_ucx_piece_t *piece)
{
    kvt_ucx_ep_t *ep = piece->ep;
    kvt_request_h req;
    kvp_status_t  status;

    if (!piece->answered || piece->sending) {
        return;
    }
    req    = piece->req;
    status = piece->status;
    kvt_list_del(&piece->link);
    if (piece->op == PIECE_PUT && --ep->puts_pending == 0) {
        flushes_answer(ep, ep->super.status);
    }
    kv_free(piece);
    kvt__request_done(req, status); /* last: may free the request */
}

static void flushes_answer(kvt_ucx_ep_t *ep, kvp_status_t status)
{
    kvt_list_t *it, *next;

    for (it = ep->flushes.next; it != &ep->flushes; it = next) {
        kvt_ucx_piece_t *piece = kv_container_of(it, kvt_ucx_piece_t, link);
        next                   = it->next;
        piece_answer(piece, status);
        piece_try_finish(piece);
    }
}

void kvt__ucx_am_ep_fail(kvt_ucx_ep_t *ep, kvp_status_t status)
{
    kvt_list_t *it, *next;

    if (ep->pieces.next == NULL) {
        return; /* failed before the lists were set up */
    }
    for (it = ep->pieces.next; it != &ep->pieces; it = next) {
        kvt_ucx_piece_t *piece = kv_container_of(it, kvt_ucx_piece_t, link);
        next                   = it->next;
        piece_answer(piece, status);
        piece_try_finish(piece);
    }
    flushes_answer(ep, status);
}

static void piece_send_cb(void *request, ucs_status_t status, void *user_data)
{
    kvt_ucx_piece_t *piece = user_data;

    piece->sending = 0;
    if (status != UCS_OK) {
        piece_answer(piece, kvt__ucx_status(status));
    }
    ucp_request_free(request);
    piece_try_finish(piece);
}

kvp_status_t kvt__ucx_am_xfer(kvt_ucx_ep_t *ep, kvt_xfer_op_t op, const kvt_iov_t *iov,
                              size_t n, kvt_request_h req)
{
    kvt_ucx_context_t  *ctx = kvt_ucx_ctx(ep->super.ctx);
    ucp_request_param_t param;
    ucs_status_ptr_t    sp;

    for (size_t i = 0; i < n; i++) {
        kvt_ucx_piece_t *piece;

        if (iov[i].len == 0) {
            continue;
        }
        piece          = kv_calloc(1, sizeof(*piece), "ucx am piece");
        piece->ep      = ep;
        piece->req     = req;
        piece->op      = op == KVT_XFER_PUT ? PIECE_PUT : PIECE_GET;
        piece->local   = iov[i].local;
        piece->len     = iov[i].len;
        piece->payload = (dt_state_t){.buf = iov[i].local, .len = iov[i].len};
        piece->hdr     = (am_req_hdr_t){
                .raddr = iov[i].remote, .len = iov[i].len, .id = slot_alloc(ctx, piece)};

        param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                             UCP_OP_ATTR_FIELD_FLAGS;
        param.cb.send   = piece_send_cb;
        param.user_data = piece;
        param.flags     = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
        if (op == KVT_XFER_PUT) {
            param.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
            param.datatype = ctx->am_dt;
            sp             = ucp_am_send_nbx(ep->ucp_ep, KVT_UCX_AM_PUT, &piece->hdr,
                                             sizeof(piece->hdr), &piece->payload, iov[i].len, &param);
        } else {
            sp = ucp_am_send_nbx(ep->ucp_ep, KVT_UCX_AM_GET, &piece->hdr,
                                 sizeof(piece->hdr), NULL, 0, &param);
        }
        if (UCS_PTR_IS_ERR(sp)) {
            kv_log_error("transport: ucx: %s: sending piece %zu failed: %s",
                         ep->super.peer, i, ucs_status_string(UCS_PTR_STATUS(sp)));
            slot_release(ctx, piece->hdr.id);
            kv_free(piece);
            return kvt__ucx_status(UCS_PTR_STATUS(sp));
        }
        piece->sending = sp != NULL;
        kvt_list_add(&ep->pieces, &piece->link);
        if (piece->op == PIECE_PUT) {
            ep->puts_pending++;
        }
        kvt__request_add(req);
    }
    return KVP_OK;
}

kvp_status_t kvt__ucx_am_flush(kvt_ucx_ep_t *ep, kvt_request_h req)
{
    kvt_ucx_piece_t *piece;

    if (ep->puts_pending == 0) {
        return KVP_OK;
    }
    piece      = kv_calloc(1, sizeof(*piece), "ucx am flush");
    piece->ep  = ep;
    piece->req = req;
    piece->op  = PIECE_FLUSH;
    kvt_list_add(&ep->flushes, &piece->link);
    kvt__request_add(req);
    return KVP_OK;
}

/* ------------------------------------------------------------------------ */
/* Target side                                                               */
/* ------------------------------------------------------------------------ */

/* Is [raddr, raddr + len) inside a region registered here? */
static kvt_ucx_mem_t *region_find(kvt_ucx_context_t *ctx, uint64_t raddr, uint64_t len)
{
    for (kvt_list_t *it = ctx->mems.next; it != &ctx->mems; it = it->next) {
        kvt_ucx_mem_t *mem  = kv_container_of(it, kvt_ucx_mem_t, link);
        uint64_t       base = (uint64_t)(uintptr_t)mem->super.addr;

        if (raddr >= base && raddr - base <= mem->super.len &&
            len <= mem->super.len - (raddr - base)) {
            return mem;
        }
    }
    return NULL;
}

/* An answer in flight: header and payload descriptor live until sent. */
typedef struct am_reply {
    am_rep_hdr_t hdr;
    dt_state_t   payload;
} am_reply_t;

static void reply_send_cb(void *request, ucs_status_t status, void *user_data)
{
    kv_free(user_data);
    ucp_request_free(request);
}

/* Answer on @p reply_ep; a failure only means the initiator is gone. */
static void reply_send(kvt_ucx_context_t *ctx, const ucp_am_recv_param_t *rparam,
                       unsigned am_id, uint64_t id, kvp_status_t status, const void *data,
                       size_t len)
{
    ucp_request_param_t param;
    am_reply_t         *reply;
    ucs_status_ptr_t    sp;

    if (!(rparam->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
        kv_log_error("transport: ucx: request %llx without a reply endpoint dropped",
                     (unsigned long long)id);
        return;
    }
    reply          = kv_malloc(sizeof(*reply), "ucx am reply");
    reply->hdr     = (am_rep_hdr_t){.id = id, .status = (int32_t)status, .reserved = 0};
    reply->payload = (dt_state_t){.buf = (uint8_t *)(uintptr_t)data, .len = len};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                         UCP_OP_ATTR_FIELD_FLAGS;
    param.cb.send   = reply_send_cb;
    param.user_data = reply;
    param.flags     = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    if (len > 0) {
        param.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
        param.datatype = ctx->am_dt;
    }
    sp = ucp_am_send_nbx(rparam->reply_ep, am_id, &reply->hdr, sizeof(reply->hdr),
                         len > 0 ? &reply->payload : NULL, len, &param);
    if (sp == NULL || UCS_PTR_IS_ERR(sp)) {
        if (UCS_PTR_IS_ERR(sp)) {
            kv_log_debug("transport: ucx: reply not sent: %s",
                         ucs_status_string(UCS_PTR_STATUS(sp)));
        }
        kv_free(reply);
    }
}

/* Check a request header off the wire; KVP_OK and the region, or why not. */
static kvp_status_t request_check(kvt_ucx_context_t *ctx, const void *header,
                                  size_t header_length, const ucp_am_recv_param_t *param,
                                  am_req_hdr_t *hdr, kvt_ucx_mem_t **mem_p)
{
    if (header_length != sizeof(*hdr)) {
        return KVP_ERR_PROTOCOL;
    }
    memcpy(hdr, header, sizeof(*hdr)); /* the header may be unaligned */
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
        return KVP_ERR_PROTOCOL; /* returning UCS_OK drops the data */
    }
    *mem_p = region_find(ctx, hdr->raddr, hdr->len);
    if (*mem_p == NULL) {
        kv_log_error("transport: ucx: a peer asked for 0x%llx+%llu, outside every "
                     "registered region",
                     (unsigned long long)hdr->raddr, (unsigned long long)hdr->len);
        return KVP_ERR_INVALID_PARAM;
    }
    return KVP_OK;
}

static ucs_status_t am_put_cb(void *arg, const void *header, size_t header_length,
                              void *data, size_t length, const ucp_am_recv_param_t *param)
{
    kvt_ucx_context_t *ctx = arg;
    kvt_ucx_mem_t     *mem = NULL;
    am_req_hdr_t       hdr;
    kvp_status_t       status;

    status = request_check(ctx, header, header_length, param, &hdr, &mem);
    if (status == KVP_ERR_PROTOCOL && header_length != sizeof(hdr)) {
        kv_log_error("transport: ucx: malformed put dropped");
        return UCS_OK;
    }
    if (status == KVP_OK && length != hdr.len) {
        status = KVP_ERR_PROTOCOL;
    }
    if (status == KVP_OK) {
        memcpy((void *)(uintptr_t)hdr.raddr, data, length);
    }
    reply_send(ctx, param, KVT_UCX_AM_ACK, hdr.id, status, NULL, 0);
    return UCS_OK;
}

static ucs_status_t am_get_cb(void *arg, const void *header, size_t header_length,
                              void *data, size_t length, const ucp_am_recv_param_t *param)
{
    kvt_ucx_context_t *ctx = arg;
    kvt_ucx_mem_t     *mem = NULL;
    am_req_hdr_t       hdr;
    kvp_status_t       status;

    status = request_check(ctx, header, header_length, param, &hdr, &mem);
    if (status == KVP_ERR_PROTOCOL && header_length != sizeof(hdr)) {
        kv_log_error("transport: ucx: malformed get dropped");
        return UCS_OK;
    }
    if (status == KVP_OK && length != 0) {
        status = KVP_ERR_PROTOCOL;
    }
    if (status == KVP_OK) {
        reply_send(ctx, param, KVT_UCX_AM_GET_REP, hdr.id, KVP_OK,
                   (const void *)(uintptr_t)hdr.raddr, hdr.len);
    } else {
        reply_send(ctx, param, KVT_UCX_AM_GET_REP, hdr.id, status, NULL, 0);
    }
    return UCS_OK;
}

/* ------------------------------------------------------------------------ */
/* Initiator side: answers                                                   */
/* ------------------------------------------------------------------------ */

/* A status off the wire: only the values we send are believed. */
static kvp_status_t wire_status(int32_t status)
{
    switch (status) {
    case KVP_OK:
    case KVP_ERR_INVALID_PARAM:
    case KVP_ERR_PROTOCOL:
        return (kvp_status_t)status;
    default:
        return KVP_ERR_PROTOCOL;
    }
}

/* The piece an answer is for, if it is still waiting on that endpoint. */
static kvt_ucx_piece_t *answer_piece(kvt_ucx_context_t *ctx, const void *header,
                                     size_t                     header_length,
                                     const ucp_am_recv_param_t *param, piece_op_t op,
                                     am_rep_hdr_t *hdr)
{
    kvt_ucx_piece_t *piece;

    if (header_length != sizeof(*hdr)) {
        kv_log_error("transport: ucx: malformed answer dropped");
        return NULL;
    }
    memcpy(hdr, header, sizeof(*hdr));
    piece = slot_find(ctx, hdr->id);
    if (piece == NULL || piece->op != op) {
        return NULL; /* late: the piece already failed or timed out */
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ||
        param->reply_ep != piece->ep->ucp_ep) {
        kv_log_error("transport: ucx: answer for %s from another endpoint dropped",
                     piece->ep->super.peer);
        return NULL;
    }
    return piece;
}

static ucs_status_t am_ack_cb(void *arg, const void *header, size_t header_length,
                              void *data, size_t length, const ucp_am_recv_param_t *param)
{
    am_rep_hdr_t     hdr;
    kvt_ucx_piece_t *piece;

    piece = answer_piece(arg, header, header_length, param, PIECE_PUT, &hdr);
    if (piece != NULL) {
        piece_answer(piece, wire_status(hdr.status));
        piece_try_finish(piece);
    }
    return UCS_OK;
}

static ucs_status_t am_get_rep_cb(void *arg, const void *header, size_t header_length,
                                  void *data, size_t length,
                                  const ucp_am_recv_param_t *param)
{
    am_rep_hdr_t     hdr;
    kvt_ucx_piece_t *piece;
    kvp_status_t     status;

    piece = answer_piece(arg, header, header_length, param, PIECE_GET, &hdr);
    if (piece == NULL) {
        return UCS_OK;
    }
    status = wire_status(hdr.status);
    if (status == KVP_OK &&
        ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) || length != piece->len)) {
        kv_log_error("transport: ucx: %s: get reply of %zu bytes for %zu",
                     piece->ep->super.peer, length, piece->len);
        status = KVP_ERR_PROTOCOL;
    }
    if (status == KVP_OK) {
        memcpy(piece->local, data, length);
    }
    piece_answer(piece, status);
    piece_try_finish(piece);
    return UCS_OK;
}

/* ------------------------------------------------------------------------ */
/* Set-up                                                                    */
/* ------------------------------------------------------------------------ */

kvp_status_t kvt__ucx_am_init(kvt_ucx_context_t *ctx)
{
    static const struct {
        unsigned               id;
        ucp_am_recv_callback_t cb;
    } handlers[] = {{KVT_UCX_AM_PUT, am_put_cb},
                    {KVT_UCX_AM_GET, am_get_cb},
                    {KVT_UCX_AM_ACK, am_ack_cb},
                    {KVT_UCX_AM_GET_REP, am_get_rep_cb}};
    ucp_am_handler_param_t param;
    ucs_status_t           status;

    ctx->free_slot = SLOT_NONE;
    status         = ucp_dt_create_generic(&dt_ops, NULL, &ctx->am_dt);
    if (status != UCS_OK) {
        kv_log_error("transport: ucx: ucp_dt_create_generic: %s",
                     ucs_status_string(status));
        return kvt__ucx_status(status);
    }
    ctx->have_am_dt = 1;
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                           UCP_AM_HANDLER_PARAM_FIELD_ARG |
                           UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
        param.id    = handlers[i].id;
        param.cb    = handlers[i].cb;
        param.arg   = ctx;
        param.flags = UCP_AM_FLAG_WHOLE_MSG;
        status      = ucp_worker_set_am_recv_handler(ctx->worker, &param);
        if (status != UCS_OK) {
            kv_log_error("transport: ucx: ucp_worker_set_am_recv_handler: %s",
                         ucs_status_string(status));
            return kvt__ucx_status(status);
        }
    }
    return KVP_OK;
}

void kvt__ucx_am_cleanup(kvt_ucx_context_t *ctx)
{
    if (ctx->have_am_dt) {
        ucp_dt_destroy(ctx->am_dt);
        ctx->have_am_dt = 0;
    }
    kv_free(ctx->slots);
    ctx->slots     = NULL;
    ctx->num_slots = 0;
}
