/**
 * @file ucx.h
 * @brief Private to transport/ucx/: the UCX backend's objects, shared by
 * ucx.c (context, memory, connections, native RMA) and ucx_am.c (RMA
 * emulated with active messages).
 */
#ifndef KVT_UCX_H
#define KVT_UCX_H

#include "base.h"

#include <kv/util.h>

#include <ucp/api/ucp.h>

/* Active message ids of the emulated RMA protocol (ucx_am.c).  The worker
 * is ours alone; UCX sizes its handler table by the largest id, so small. */
enum {
    KVT_UCX_AM_PUT     = 1, /* initiator -> target: header + bytes */
    KVT_UCX_AM_GET     = 2, /* initiator -> target: header */
    KVT_UCX_AM_ACK     = 3, /* target -> initiator: a put landed (or not) */
    KVT_UCX_AM_GET_REP = 4  /* target -> initiator: header + bytes */
};

/** Where emulated pieces are found by the id their replies carry. */
typedef struct kvt_ucx_slot {
    struct kvt_ucx_piece *piece; /**< NULL: free */
    uint32_t              gen;   /**< bumped on each use of the slot */
    uint32_t              next_free;
} kvt_ucx_slot_t;

typedef struct kvt_ucx_context {
    struct kvt_context super;
    ucp_context_h      ucp;
    ucp_worker_h       worker;
    kvt_ucx_rma_t      rma;          /**< the params' choice */
    kvt_list_t         mems;         /**< registered regions (served by AM) */
    kvt_list_t         peers;        /**< accepted connections */
    int                peers_failed; /**< some peer awaits closing */
    kvt_ucx_slot_t    *slots;        /**< emulated pieces awaiting a reply */
    uint32_t           num_slots;
    uint32_t           free_slot; /**< head of the free list, or UINT32_MAX */
    ucp_datatype_t     am_dt;     /**< copy-only datatype of AM payloads */
    int                have_am_dt;
} kvt_ucx_context_t;

typedef struct kvt_ucx_mem {
    struct kvt_mem super;
    kvt_list_t     link; /**< in ctx->mems */
    ucp_mem_h      memh;
} kvt_ucx_mem_t;

typedef struct kvt_ucx_ep {
    struct kvt_ep super;
    ucp_ep_h      ucp_ep;       /**< NULL once closed */
    int           emulated;     /**< RMA by active messages (ucx_am.c) */
    kvt_list_t    pieces;       /**< emulated pieces in flight */
    kvt_list_t    flushes;      /**< emulated flushes waiting */
    size_t        puts_pending; /**< emulated puts not yet acknowledged */
} kvt_ucx_ep_t;

static inline kvt_ucx_context_t *kvt_ucx_ctx(kvt_context_h ctx)
{
    return kv_container_of(ctx, kvt_ucx_context_t, super);
}

static inline kvt_ucx_ep_t *kvt_ucx_ep(kvt_ep_h ep)
{
    return kv_container_of(ep, kvt_ucx_ep_t, super);
}

/** The one place a ucs_status_t becomes a kvp_status_t (ucx.c). */
kvp_status_t kvt__ucx_status(ucs_status_t status);

/** Register the emulated protocol's handlers on the worker (ucx_am.c). */
kvp_status_t kvt__ucx_am_init(kvt_ucx_context_t *ctx);
void         kvt__ucx_am_cleanup(kvt_ucx_context_t *ctx);

/** Issue emulated puts/gets/flush (same contract as the ops). */
kvp_status_t kvt__ucx_am_xfer(kvt_ucx_ep_t *ep, kvt_xfer_op_t op, const kvt_iov_t *iov,
                              size_t n, kvt_request_h req);
kvp_status_t kvt__ucx_am_flush(kvt_ucx_ep_t *ep, kvt_request_h req);

/**
 * The endpoint failed or is going away: fail every emulated piece still
 * waiting for a reply with @p status.  Pieces whose send UCX still holds
 * finish from its callback.
 */
void kvt__ucx_am_ep_fail(kvt_ucx_ep_t *ep, kvp_status_t status);

#endif
