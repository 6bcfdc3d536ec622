/**
 * @file rpc_client.h
 * @brief The client side of the RPC channel.
 *
 * One TCP connection carries many calls at once: each call gets a request
 * id, its thread sends the frame and waits until the reply with that id
 * is read, or the call's deadline passes.  One thread reads the socket at
 * a time: the caller of kv_rpc_call() itself when nobody else is reading
 * (a call alone on its connection costs no thread handoff), else whoever
 * reads hands it its reply; calls started with kv_rpc_call_start() are
 * read for by the connection's receiver thread when no caller reads.
 * Reply payloads are read straight into the caller's buffer.
 */
#ifndef KVPROTO_RPC_CLIENT_H
#define KVPROTO_RPC_CLIENT_H

#include <kvpool/kvpool.h>

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

typedef struct kv_rpc_client kv_rpc_client_t;

typedef struct kv_rpc_client_params {
    const char *address;    /**< "HOST:PORT" */
    const char *token;      /**< NULL or "" for none; <= KVP_TOKEN_MAX bytes */
    const char *name;       /**< client name for the peer's log */
    uint32_t    timeout_ms; /**< connect + handshake deadline */
    const ProtobufCServiceDescriptor *service; /**< method 0 must be Hello */
} kv_rpc_client_params_t;

/**
 * Connect and send Hello.
 * @param [out] client_p set only on success; free with kv_rpc_client_destroy().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; KVP_ERR_CONNECTION_REFUSED;
 *         KVP_ERR_TIMED_OUT; KVP_ERR_VERSION / KVP_ERR_AUTH from the peer.
 */
kvp_status_t kv_rpc_client_create(const kv_rpc_client_params_t *params,
                                  kv_rpc_client_t **client_p);

/**
 * Type the connection's later calls by another service whose method 0 is
 * Hello too: a client learns from the HelloReply whether it reached a pool
 * node or the coordinator.  Only before any call other than the handshake.
 */
void kv_rpc_client_set_service(kv_rpc_client_t *client,
                               const ProtobufCServiceDescriptor *service);

/** Close the connection; calls in flight fail with CONNECTION_LOST. */
void kv_rpc_client_destroy(kv_rpc_client_t *client);

/** The largest payload the peer accepts (from its HelloReply). */
uint64_t kv_rpc_client_max_payload(const kv_rpc_client_t *client);

struct Kvpool__HelloReply;

/** The peer's HelloReply (owned by the client, valid until destroy). */
const struct Kvpool__HelloReply *kv_rpc_client_hello(const kv_rpc_client_t *client);

/** Where a call's reply payload goes. */
typedef struct kv_rpc_recv {
    void    *buf;        /**< caller memory, or NULL if no payload expected */
    uint64_t capacity;
    uint64_t len;        /**< out: payload bytes written */
    uint64_t error_size; /**< out: ErrorReply.size on BUFFER_TOO_SMALL */
    /**
     * What the reply message is decoded with (e.g. a kv_pb_arena_t's
     * allocator); NULL: malloc, and the caller frees the reply with
     * protobuf_c_message_free_unpacked(reply, NULL).
     */
    ProtobufCAllocator *allocator;
} kv_rpc_recv_t;

/**
 * Make one call and wait for its reply.
 *
 * @param [in]  method      index in the service.
 * @param [in]  request     the method's input message.
 * @param [in]  payload     raw bytes after the message (NULL: none).
 * @param [in]  timeout_ms  deadline of this call (0: none).
 * @param [out] reply_p     the decoded output message, set only on KVP_OK;
 *                          free it with protobuf_c_message_free_unpacked().
 *                          May be NULL if the caller does not want it.
 * @param [in,out] recv     where a reply payload goes (may be NULL).
 * @return KVP_OK; the peer's error status; KVP_ERR_TIMED_OUT;
 *         KVP_ERR_PROTOCOL for an undecodable reply; a connection error.
 */
kvp_status_t kv_rpc_call(kv_rpc_client_t *client, unsigned method,
                         const ProtobufCMessage *request, const void *payload,
                         uint64_t payload_len, uint32_t timeout_ms,
                         ProtobufCMessage **reply_p, kv_rpc_recv_t *recv);

/** A call started with kv_rpc_call_start(), not yet finished. */
typedef struct kv_rpc_pending kv_rpc_pending_t;

/**
 * The first half of kv_rpc_call(): send the request and return at once, so
 * one thread can have many calls in flight (a batch in frames).  @p recv
 * must stay valid until the call is finished.
 * @param [out] pending_p set on KVP_OK; pass it to kv_rpc_call_finish()
 *                        exactly once.
 * @return KVP_OK (sent, or failed to send: the finish reports it);
 *         KVP_ERR_INVALID_PARAM; KVP_ERR_TOO_LARGE; the connection's error
 *         if it is already broken.
 */
kvp_status_t kv_rpc_call_start(kv_rpc_client_t *client, unsigned method,
                               const ProtobufCMessage *request, const void *payload,
                               uint64_t payload_len, uint32_t timeout_ms,
                               kv_rpc_recv_t *recv, kv_rpc_pending_t **pending_p);

/**
 * The second half: wait for the reply (the deadline counts from the send)
 * and free @p pending.  Returns and sets @p reply_p as kv_rpc_call() does.
 */
kvp_status_t kv_rpc_call_finish(kv_rpc_client_t *client, kv_rpc_pending_t *pending,
                                ProtobufCMessage **reply_p);

#endif
