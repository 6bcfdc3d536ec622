/**
 * @file base.h
 * @brief Private to transport/: the operations table every backend fills,
 * the base objects backends extend, and the helpers they call back.
 *
 * Object model (UCT's, rdma-core's): the generic layer allocates each
 * object with the size its backend asks for; the backend's struct starts
 * with the generic one and reaches its own fields with kv_container_of():
 *
 *     struct ucx_ep { struct kvt_ep super; ucp_ep_h ucp_ep; ... };
 *
 * The generic layer (transport.c) owns argument checks, deadlines, the
 * per-endpoint rkey cache, request bookkeeping and endpoint failure; a
 * backend only moves bytes.  A backend leaves NULL any operation it does
 * not provide: registration replaces it with a default that returns
 * KVP_ERR_UNSUPPORTED (void operations: does nothing), so nothing calls
 * through a NULL pointer (rdma-core's dummy_ops.c).
 */
#ifndef KVT_BASE_H
#define KVT_BASE_H

#include <kvt/transport.h>

#include <stdint.h>
#include <sys/socket.h>

typedef enum kvt_xfer_op { KVT_XFER_PUT, KVT_XFER_GET } kvt_xfer_op_t;

/** A parsed, validated rkey header, then the backend's own key bytes. */
typedef struct kvt_rkey_info {
    uint64_t    base;   /**< start of the remote region */
    uint64_t    length; /**< its length */
    const void *key;    /**< the backend's packed key */
    size_t      key_len;
} kvt_rkey_info_t;

typedef struct kvt_backend_ops {
    /* context: ctx is zeroed, its generic fields filled */
    kvp_status_t (*context_init)(kvt_context_h ctx, const kvt_params_t *params);
    void (*context_cleanup)(kvt_context_h ctx);
    void (*progress)(kvt_context_h ctx);
    kvp_status_t (*event_fd)(kvt_context_h ctx, int *fd_p);
    kvp_status_t (*arm)(kvt_context_h ctx);

    /* memory: mem->addr/len are set; pack returns kv_malloc'd bytes */
    kvp_status_t (*mem_reg)(kvt_mem_h mem);
    void (*mem_dereg)(kvt_mem_h mem);
    kvp_status_t (*mem_pack_rkey)(kvt_mem_h mem, void **buf_p, size_t *len_p);

    /* listener */
    kvp_status_t (*listener_init)(kvt_listener_h l, const struct sockaddr *addr,
                                  socklen_t addr_len);
    kvp_status_t (*listener_query)(kvt_listener_h l, struct sockaddr_storage *addr_p);
    void (*listener_cleanup)(kvt_listener_h l);

    /*
     * endpoint: connect waits for the connection until deadline_ns; on
     * failure the generic layer calls ep_cleanup.  ep_abort stops every
     * transfer of a healthy endpoint now (after a deadline passed): no
     * byte may move afterwards, and every piece in flight must complete
     * (with an error) through kvt__request_done(), now or from progress.
     * ep_cleanup releases everything, on a healthy or failed endpoint; it
     * runs after the rkeys are gone and must, by the time it returns, have
     * completed every piece still in flight (with an error).  When a
     * backend sees its endpoint fail, it calls kvt__ep_set_failed() and
     * completes the pieces in flight, now or from progress.
     */
    kvp_status_t (*ep_connect)(kvt_ep_h ep, const struct sockaddr *addr,
                               socklen_t addr_len, uint64_t deadline_ns);
    void (*ep_abort)(kvt_ep_h ep);
    void (*ep_cleanup)(kvt_ep_h ep);

    /* rkeys: unpack one packed key for use on ep */
    kvp_status_t (*rkey_unpack)(kvt_ep_h ep, const kvt_rkey_info_t *info, void **rkey_p);
    void (*rkey_destroy)(kvt_ep_h ep, void *rkey);

    /*
     * Transfers.  Issue @p n pieces (rkeys[i] from rkey_unpack); call
     * kvt__request_add() once for every piece that will complete later
     * (and kvt__request_done() when it does).  Returns KVP_OK when every
     * piece was issued, or the error that stopped issuing.
     */
    kvp_status_t (*ep_xfer)(kvt_ep_h ep, kvt_xfer_op_t op, const kvt_iov_t *iov,
                            void *const *rkeys, size_t n, kvt_request_h req);
    /* Issue a flush of ep's puts, completing through @p req as above. */
    kvp_status_t (*ep_flush)(kvt_ep_h ep, kvt_request_h req);
    /* Release backend state of a request whose pieces are all done. */
    void (*request_cleanup)(kvt_request_h req);
} kvt_backend_ops_t;

/* Backend-only calls (kvt_ucx_*, kvt_verbs_*) are not in the table: each
 * backend defines them and checks ctx->backend; where a backend is not
 * built, transport.c defines them as KVP_ERR_UNSUPPORTED. */

typedef struct kvt_backend {
    const char       *name;
    uint8_t           id;           /**< in packed rkeys; unique, non-zero */
    size_t            context_size; /**< sizes of the derived structs */
    size_t            mem_size;
    size_t            listener_size;
    size_t            ep_size;
    size_t            request_size;
    kvt_backend_ops_t ops; /**< NULL entries get defaults */
} kvt_backend_t;

typedef struct kvt_list {
    struct kvt_list *prev, *next;
} kvt_list_t;

struct kvt_context {
    const kvt_backend_t *backend;
    kvt_backend_ops_t    ops; /**< backend ops, defaults filled in */
    uint64_t             timeout_ns;
    kvt_list_t           requests; /**< every live request */
    kvt_list_t           eps;      /**< every endpoint */
};

struct kvt_mem {
    kvt_context_h ctx;
    void         *addr;
    size_t        len;
};

struct kvt_listener {
    kvt_context_h ctx;
};

typedef struct kvt_rkey_entry kvt_rkey_entry_t;

struct kvt_ep {
    kvt_context_h     ctx;
    kvt_list_t        link;    /**< in ctx->eps */
    kvp_status_t      status;  /**< KVP_OK or the failure */
    int               aborted; /**< ops.ep_abort() ran */
    char              peer[KVT_ADDR_STRLEN];
    kvt_rkey_entry_t *rkeys; /**< open-addressing table */
    size_t            rkey_count;
    size_t            rkey_cap; /**< power of two, or 0 */
};

struct kvt_request {
    kvt_context_h ctx;
    kvt_ep_h      ep;   /**< NULL once the endpoint is destroyed */
    kvt_list_t    link; /**< in ctx->requests */
    uint64_t      deadline_ns;
    size_t        pending; /**< pieces issued and not yet done */
    kvp_status_t  status;  /**< KVP_OK or the first error */
    int           freed;   /**< the caller let go; free when done */
};

static inline void kvt_list_init(kvt_list_t *head)
{
    head->prev = head->next = head;
}

static inline int kvt_list_is_empty(const kvt_list_t *head)
{
    return head->next == head;
}

/** Append @p node at the tail of @p head. */
static inline void kvt_list_add(kvt_list_t *head, kvt_list_t *node)
{
    node->prev       = head->prev;
    node->next       = head;
    head->prev->next = node;
    head->prev       = node;
}

static inline void kvt_list_del(kvt_list_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

/** Register a backend (start-up only, not thread-safe).  Tests use it to
 * add stub backends; the built-in ones are always present. */
kvp_status_t kvt__backend_register(const kvt_backend_t *backend);

/** A piece of @p req was issued and will complete later. */
void kvt__request_add(kvt_request_h req);

/** A piece of @p req completed with @p status (may free the request). */
void kvt__request_done(kvt_request_h req, kvp_status_t status);

/**
 * Mark @p ep failed with @p status (the first failure wins); a status that
 * is not a connection error or a timeout becomes KVP_ERR_CONNECTION_LOST.
 * Safe from inside backend callbacks: it only records.
 */
void kvt__ep_set_failed(kvt_ep_h ep, kvp_status_t status);

/** Format @p addr as "IP:PORT" / "[v6]:PORT". */
kvp_status_t kvt__sockaddr_format(const struct sockaddr *addr, char *buf, size_t len);

/** Absolute deadline @p ctx's timeout from now. */
uint64_t kvt__deadline(kvt_context_h ctx);

#endif
