/**
 * @file transport.h
 * @brief kvtransport: the data plane of kvpool.  One-sided put and get of
 * byte ranges between registered memory regions of two processes.
 *
 * This is the only header of the transport layer that the pool, the client
 * and the tools include.  The layer has one operations table and two
 * backends behind it:
 *  - "ucx" (default): UCX's UCP API.  On a host with RDMA NICs UCP picks
 *    RDMA transports; on a host without, it runs over TCP.
 *  - "verbs": librdmacm + libibverbs reliable-connected queue pairs, RDMA
 *    WRITE and READ.  Built where rdma-core's headers are found; a context
 *    is refused (KVP_ERR_UNSUPPORTED, with a logged reason) on a host that
 *    has no RDMA device.
 * Every operation a backend does not provide returns KVP_ERR_UNSUPPORTED,
 * so a caller never checks which backend it has before calling.
 *
 * Model of use.  The node side registers its arena with kvt_mem_reg(),
 * publishes kvt_mem_pack_rkey()'s bytes and the arena's base address in its
 * RPC replies, opens a listener, and keeps calling kvt_progress() (or waits
 * on kvt_context_event_fd()).  The client side registers its buffers,
 * connects one endpoint per node, and moves bytes with batched
 * kvt_ep_put() / kvt_ep_get() calls that name, for each piece, the local
 * range, the remote address and the packed rkey it got over RPC.
 *
 * Threads: a context and everything created from it (memory, endpoints,
 * listeners, requests) must be used by one thread at a time (UCX's
 * UCS_THREAD_MODE_SINGLE).  Different contexts are independent.
 *
 * Progress: nothing moves unless the owner of a context calls into the
 * layer (kvt_progress(), kvt_request_test(), kvt_request_wait(),
 * kvt_ep_flush()).  Over TCP the *target* of a put or a get must progress
 * too, because UCX emulates one-sided operations with messages there; over
 * RDMA the target's NIC serves them alone, but new connections are still
 * accepted only from kvt_progress().
 *
 * Deadlines: every blocking call (kvt_ep_connect(), kvt_request_wait(),
 * kvt_ep_flush(), kvt_ep_destroy()) returns within the context's timeout.
 * A request whose deadline passes fails with KVP_ERR_TIMED_OUT and marks
 * its endpoint failed: the layer tears the connection down at once, so that
 * no late bytes land in (or are read from) a buffer the caller has taken
 * back.  A dead peer therefore never hangs a caller.
 *
 * Failures: after an endpoint has failed (the peer died or closed, or a
 * deadline passed) every later operation on it returns the failure
 * (kvt_ep_status()); destroy it and connect again.  The context and the
 * other endpoints stay usable.
 *
 * UCX notes (the default backend):
 *  - Endpoints use UCP_ERR_HANDLING_MODE_PEER, so that a peer's death is
 *    reported instead of hanging.  UCX then leaves out transports that
 *    cannot report it: in Debian's UCX 1.13 build that excludes the
 *    shared-memory transports (posix, sysv, cma), so two processes on one
 *    host talk over TCP.  Set UCX_NET_DEVICES (the tests use "lo") to pick
 *    the interface; UCX_TLS and the other UCX_* variables apply as usual.
 *  - Remote completion of puts needs kvt_ep_flush(); a put request
 *    completes when its local buffers may be reused.
 *  - Without a hardware RMA lane (TCP) puts and gets are emulated by the
 *    layer itself with active messages (see kvt_ucx_rma_t for why).
 *
 * Ownership: every pointer passed in is borrowed for the duration of the
 * call only, unless the function says otherwise.  Buffers named by a
 * kvt_iov_t are borrowed until the request completes (or fails).
 */
#ifndef KVT_TRANSPORT_H
#define KVT_TRANSPORT_H

#include <kvpool/status.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A transport instance: one per process and backend (one UCP worker). */
typedef struct kvt_context *kvt_context_h;
/** A registered memory region. */
typedef struct kvt_mem *kvt_mem_h;
/** A connection to a peer, from which puts and gets are issued. */
typedef struct kvt_ep *kvt_ep_h;
/** Accepts peers (the node side). */
typedef struct kvt_listener *kvt_listener_h;
/** One batched operation in flight. */
typedef struct kvt_request *kvt_request_h;

/** Default deadline of connects, waits and flushes, in milliseconds. */
#define KVT_TIMEOUT_DEFAULT_MS 5000

/** Longest packed rkey kvt_ep_put() / kvt_ep_get() accept, in bytes. */
#define KVT_RKEY_MAX 1024

/** Longest "IP:PORT" string kvt_listener_address() writes, NUL included. */
#define KVT_ADDR_STRLEN 64

/** Bits of kvt_params_t::field_mask. */
enum {
    KVT_PARAM_FIELD_BACKEND     = 1u << 0,
    KVT_PARAM_FIELD_TIMEOUT_MS  = 1u << 1,
    KVT_PARAM_FIELD_DEVICE_ADDR = 1u << 2,
    KVT_PARAM_FIELD_UCX_RMA     = 1u << 3
};

/**
 * How the UCX backend carries puts and gets (kvt_params_t::ucx_rma).
 *
 * UCX runs one-sided operations over a hardware RMA lane where it has one
 * (RDMA NICs).  Where it has none (TCP), it emulates them with messages
 * served by the target's progress, and in UCX 1.13 that emulation aborts
 * the *target* process (ucs_fatal "unexpected error" in ucp_put_handler /
 * ucp_get_req_handler) when it answers a peer whose connection has just
 * failed, e.g. a client killed with puts in flight (and its TCP transport
 * fails an assertion, uct_iface.h:884, when a peer dies during a zero-copy
 * send).  A pool node must not die of a client's death, so without a
 * hardware lane the layer emulates puts and gets itself with UCP active
 * messages sent by copy, whose failures are reported instead; the target
 * also checks every remote range against its registered regions, which
 * UCX's emulation does not.  Puts and gets then need the target's progress
 * (as UCX's emulation does).  NATIVE over TCP is for comparison only.
 */
typedef enum kvt_ucx_rma {
    KVT_UCX_RMA_AUTO = 0, /**< native if the endpoint has a hardware RMA lane,
                               else emulated (the default) */
    KVT_UCX_RMA_NATIVE,   /**< always ucp_put_nbx / ucp_get_nbx */
    KVT_UCX_RMA_EMULATED  /**< always active messages */
} kvt_ucx_rma_t;

/**
 * Parameters of kvt_context_create().  Set field_mask to the fields you
 * filled; the others take their defaults, so new fields never break callers.
 */
typedef struct kvt_params {
    uint64_t    field_mask;
    const char *backend;     /**< "ucx" (default) or "verbs" */
    uint32_t    timeout_ms;  /**< deadline of every blocking call and of each
                                  request, from its start; default
                                  KVT_TIMEOUT_DEFAULT_MS; 0 is refused */
    const char *device_addr; /**< verbs: an IP address of the local RDMA
                                  interface to use (the context's memory is
                                  registered with that device, so listeners
                                  and connections must use it too); default
                                  the first device.  ucx: ignored (set
                                  UCX_NET_DEVICES). */
    kvt_ucx_rma_t ucx_rma;   /**< ucx: see kvt_ucx_rma_t; default AUTO.
                                  Both sides of a connection should agree:
                                  a target always serves both kinds. */
} kvt_params_t;

/**
 * One piece of a batched put or get: @p len bytes between the local range
 * starting at @p local (inside the registered region @p local_mem) and the
 * remote address @p remote (inside the peer's region whose packed rkey is
 * @p rkey / @p rkey_len).
 */
typedef struct kvt_iov {
    void       *local;     /**< local address, inside local_mem */
    kvt_mem_h   local_mem; /**< registration covering [local, local + len) */
    uint64_t    remote;    /**< remote virtual address */
    const void *rkey;      /**< packed rkey of the remote region
                                (kvt_mem_pack_rkey() bytes from the peer) */
    size_t rkey_len;       /**< 1..KVT_RKEY_MAX */
    size_t len;            /**< bytes to move; 0 is allowed and moves nothing */
} kvt_iov_t;

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * @brief Create a transport context.
 *
 * @param [in]  params  optional (NULL for all defaults).
 * @param [out] ctx_p   the new context, set only on success; release it with
 *                      kvt_context_destroy().
 * @return KVP_OK;
 *         KVP_ERR_UNSUPPORTED: the backend is unknown or not built into
 *         this library, or (verbs) the host has no RDMA device: the reason
 *         is logged at error level as "no RDMA device: ...";
 *         KVP_ERR_INVALID_PARAM: timeout_ms is 0, or device_addr is
 *         malformed or not on an RDMA device;
 *         KVP_ERR_NO_MEMORY, KVP_ERR_IO: the backend failed to start.
 */
kvp_status_t kvt_context_create(const kvt_params_t *params, kvt_context_h *ctx_p);

/**
 * @brief Destroy a context.  Destroy its endpoints, listeners and memory
 * registrations first; requests not yet freed are freed here.  Connections
 * accepted by its listeners are closed.  NULL is accepted.
 */
void kvt_context_destroy(kvt_context_h ctx);

/** @return the backend's name ("ucx", "verbs"); static storage. */
const char *kvt_context_backend(kvt_context_h ctx);

/**
 * @brief Progress the context once: complete finished operations, accept
 * new peers, and (over TCP) serve the peers' puts and gets.  Never blocks.
 */
void kvt_progress(kvt_context_h ctx);

/**
 * @brief A file descriptor that becomes readable when the context has work
 * for kvt_progress(), for use with poll/epoll.  Valid until the context is
 * destroyed; the caller must not close it.
 *
 * @param [out] fd_p  the descriptor, set only on success.
 * @return KVP_OK; KVP_ERR_UNSUPPORTED (the verbs backend: poll instead).
 */
kvp_status_t kvt_context_event_fd(kvt_context_h ctx, int *fd_p);

/**
 * @brief Arm the event descriptor before sleeping on it.
 * @return KVP_OK: armed, safe to sleep; KVP_INPROGRESS: events are already
 *         pending, call kvt_progress() and arm again; KVP_ERR_UNSUPPORTED.
 */
kvp_status_t kvt_context_arm(kvt_context_h ctx);

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/**
 * @brief Register [@p addr, @p addr + @p len) for local use in puts and
 * gets and for remote access by peers holding its packed rkey.
 *
 * The memory stays the caller's; it must stay allocated until
 * kvt_mem_dereg().  Peers get both read and write access.
 *
 * @param [out] mem_p  the registration, set only on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (NULL or empty range);
 *         KVP_ERR_NO_MEMORY or KVP_ERR_IO (the NIC refused it).
 */
kvp_status_t kvt_mem_reg(kvt_context_h ctx, void *addr, size_t len, kvt_mem_h *mem_p);

/**
 * @brief Deregister.  No request may still use the region, locally or (as
 * far as the caller can tell) remotely.  NULL is accepted.
 */
void kvt_mem_dereg(kvt_mem_h mem);

/** @return the registered range's start and length (for checks). */
void *kvt_mem_addr(kvt_mem_h mem);
/** @copydoc kvt_mem_addr */
size_t kvt_mem_len(kvt_mem_h mem);

/**
 * @brief Pack the region's remote key: an opaque byte string that a peer
 * passes as kvt_iov_t::rkey to reach this region.  It names the backend,
 * the region's base and length (so a peer's out-of-range access fails
 * locally with KVP_ERR_INVALID_PARAM) and the backend's own key.
 *
 * @param [out] buf_p  the bytes, set only on success; the caller frees them
 *                     with kv_free().
 * @param [out] len_p  their length, at most KVT_RKEY_MAX.
 * @return KVP_OK; KVP_ERR_NO_MEMORY; KVP_ERR_IO.
 */
kvp_status_t kvt_mem_pack_rkey(kvt_mem_h mem, void **buf_p, size_t *len_p);

/* ------------------------------------------------------------------------ */
/* Listener (the node side)                                                  */
/* ------------------------------------------------------------------------ */

/**
 * @brief Accept peers on "IP:PORT" (port 0: any free port; "[v6]:PORT" for
 * IPv6).  Connections are accepted from kvt_progress(); the accepted side
 * issues no operations, it only serves the peers' puts and gets.
 *
 * @param [out] l_p  the listener, set only on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (malformed address); KVP_ERR_IO
 *         (bind failed, e.g. the port is in use).
 */
kvp_status_t kvt_listener_create(kvt_context_h ctx, const char *addr,
                                 kvt_listener_h *l_p);

/**
 * @brief The address actually bound, as "IP:PORT" ("[v6]:PORT").
 * @param [out] buf  receives the NUL-terminated string.
 * @param [in]  len  size of @p buf; KVT_ADDR_STRLEN is always enough.
 * @return KVP_OK; KVP_ERR_BUFFER_TOO_SMALL; KVP_ERR_IO.
 */
kvp_status_t kvt_listener_address(kvt_listener_h l, char *buf, size_t len);

/**
 * @brief Stop accepting.  Connections already accepted stay open until the
 * peer closes them or the context is destroyed.  NULL is accepted.
 */
void kvt_listener_destroy(kvt_listener_h l);

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * @brief Connect to a listener at "IP:PORT" and wait, up to the context's
 * deadline, until the connection is up.
 *
 * @param [out] ep_p  the endpoint, set only on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (malformed address);
 *         KVP_ERR_CONNECTION_REFUSED (nobody listens there);
 *         KVP_ERR_CONNECTION_LOST; KVP_ERR_TIMED_OUT.
 */
kvp_status_t kvt_ep_connect(kvt_context_h ctx, const char *addr, kvt_ep_h *ep_p);

/**
 * @brief Close the connection and free the endpoint: on a healthy
 * endpoint, first wait (up to the deadline) for its puts to complete
 * remotely.  Requests of the endpoint still held by the caller fail with
 * KVP_ERR_CONNECTION_LOST and must still be freed.  NULL is accepted.
 */
void kvt_ep_destroy(kvt_ep_h ep);

/**
 * @brief KVP_OK while the endpoint is healthy, else the failure that ended
 * it (KVP_ERR_CONNECTION_LOST, KVP_ERR_TIMED_OUT, ...).
 */
kvp_status_t kvt_ep_status(kvt_ep_h ep);

/**
 * @brief Write @p n pieces to the peer, one-sided.
 *
 * Each piece's packed rkey is unpacked once per endpoint and cached, keyed
 * by its bytes, until the endpoint is destroyed (a node registers one arena,
 * so this is one or a few keys per endpoint).
 *
 * @param [in]  iov    @p n pieces; the array itself is borrowed for the call
 *                     only, the buffers it names until completion.
 * @param [out] req_p  set only when KVP_INPROGRESS is returned: the request,
 *                     which the caller frees with kvt_request_free().
 * @return KVP_OK: all done (local buffers may be reused); KVP_INPROGRESS;
 *         KVP_ERR_INVALID_PARAM (a local range outside its registration,
 *         a remote range outside the rkey's region, an rkey of another
 *         backend or a malformed one); the endpoint's failure.
 *         Completion means the local buffers may be reused; use
 *         kvt_ep_flush() for remote completion.
 */
kvp_status_t kvt_ep_put(kvt_ep_h ep, const kvt_iov_t *iov, size_t n,
                        kvt_request_h *req_p);

/**
 * @brief Read @p n pieces from the peer into local registered memory.
 * Same contract as kvt_ep_put(); completion means the bytes have arrived.
 */
kvp_status_t kvt_ep_get(kvt_ep_h ep, const kvt_iov_t *iov, size_t n,
                        kvt_request_h *req_p);

/**
 * @brief Wait, up to the deadline, until every put issued on @p ep so far
 * is complete at the peer (visible in its memory).
 * @return KVP_OK; KVP_ERR_TIMED_OUT (the endpoint is now failed); the
 *         endpoint's failure.
 */
kvp_status_t kvt_ep_flush(kvt_ep_h ep);

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * @brief Progress the context once and report the request's state.
 * @return KVP_INPROGRESS; or the final status: KVP_OK, the first error of
 *         its pieces, or KVP_ERR_TIMED_OUT once its deadline has passed
 *         (the endpoint is then failed).
 */
kvp_status_t kvt_request_test(kvt_request_h req);

/**
 * @brief Progress until the request completes or its deadline passes;
 * never hangs.
 * @return KVP_OK; KVP_ERR_TIMED_OUT (the endpoint is now failed);
 *         KVP_ERR_CONNECTION_LOST (the peer failed); another error of a
 *         piece.
 */
kvp_status_t kvt_request_wait(kvt_request_h req);

/**
 * @brief Free a request, complete or not.  An incomplete request's buffers
 * stay borrowed until its endpoint completes or fails it; wait first if you
 * need them back.  NULL is accepted.
 */
void kvt_request_free(kvt_request_h req);

/* ------------------------------------------------------------------------ */
/* Backend extensions: KVP_ERR_UNSUPPORTED on other backends                */
/* ------------------------------------------------------------------------ */

/**
 * @brief (ucx) Describe @p ep: a first line "# kvt RMA: native ..." or
 * "# kvt RMA: emulated ...", then its UCX lanes ("tcp/lo" ...) as printed
 * by ucp_ep_print_info(), into @p buf (truncated to @p len - 1 bytes).
 * @return KVP_OK; KVP_ERR_UNSUPPORTED (not a UCX endpoint, or the endpoint
 *         has failed); KVP_ERR_INVALID_PARAM.
 */
kvp_status_t kvt_ucx_ep_info(kvt_ep_h ep, char *buf, size_t len);

/**
 * @brief (verbs) The name of the RDMA device the context uses ("mlx5_0").
 * @return KVP_OK; KVP_ERR_UNSUPPORTED (not a verbs context);
 *         KVP_ERR_BUFFER_TOO_SMALL.
 */
kvp_status_t kvt_verbs_device_name(kvt_context_h ctx, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
