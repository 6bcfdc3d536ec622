/**
 * @file rpc_server.h
 * @brief The server side of the RPC channel, on a kv_evloop.
 *
 * The server accepts TCP connections, requires a Hello (method 0 of every
 * service) carrying the protocol version and the auth token as the first
 * request, then decodes each request frame with the service's generated
 * protobuf-c descriptors and calls the handler of its method.  Handlers run
 * on the loop thread, one at a time, and answer with kv_rpc_reply().
 *
 * Bad input never stops the server: a frame that breaks framing (bad magic,
 * oversized lengths) gets a KVP_ERR_PROTOCOL reply and its connection is
 * closed; a well-framed request with an unknown method or an undecodable
 * message gets an error reply and the connection stays open.
 */
#ifndef KVPROTO_RPC_SERVER_H
#define KVPROTO_RPC_SERVER_H

#include <kv/evloop.h>
#include <kvpool/kvpool.h>

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

struct Kvpool__HelloReply;

typedef struct kv_rpc_server kv_rpc_server_t;
typedef struct kv_rpc_call   kv_rpc_call_t;

/**
 * A method handler.  @p request is the decoded input message and
 * @p payload the raw bytes after it (NULL when none); both are valid until
 * kv_rpc_reply() is called for @p call, which the handler must do exactly
 * once before returning.
 */
typedef void (*kv_rpc_handler_func_t)(kv_rpc_call_t *call,
                                      const ProtobufCMessage *request,
                                      const void *payload, uint64_t payload_len,
                                      void *arg);

/**
 * A payload sink: called for a request that carries a payload, once its
 * message is decoded and before the payload is read.  Return KVP_OK with
 * @p buf_p (payload_len bytes, which the payload is read into) and an
 * opaque @p ctx_p; the handler then gets the payload in that memory and the
 * context from kv_rpc_call_payload_ctx(), and owns both.  If the frame
 * never reaches the handler (the connection dies mid-payload), the server's
 * sink_cancel(ctx, arg) runs instead.  Return an error (and a reason in
 * @p err) to refuse: the payload is read and dropped and the caller gets
 * that status.
 */
typedef kvp_status_t (*kv_rpc_sink_func_t)(const ProtobufCMessage *request,
                                           uint64_t payload_len, void *arg,
                                           void **buf_p, void **ctx_p,
                                           char *err, size_t err_len);

/** Gives back what a sink handed out, for a frame that was abandoned. */
typedef void (*kv_rpc_sink_cancel_func_t)(void *ctx, void *arg);

/** Called once the reply's payload has been sent or dropped. */
typedef void (*kv_rpc_done_func_t)(void *arg);

typedef struct kv_rpc_server_params {
    const char *listen;      /**< address to bind, e.g. "127.0.0.1" */
    uint16_t    port;        /**< TCP port; 0 picks a free one */
    const char *token;       /**< required token, or NULL/"" for none */
    const char *name;        /**< sent in HelloReply */
    uint64_t    max_payload; /**< largest request payload accepted */
    const ProtobufCServiceDescriptor *service;
    const kv_rpc_handler_func_t      *handlers; /**< one per method; [0] unused */
    const kv_rpc_sink_func_t         *sinks;    /**< per method; NULL: no payload */
    kv_rpc_sink_cancel_func_t         sink_cancel;
    void                             *arg;      /**< passed to handlers */
    /** Fields of every HelloReply beyond version and max_payload (may be NULL). */
    const struct Kvpool__HelloReply  *hello;
    /** Called when a connection whose data slot is set closes (may be NULL). */
    void (*conn_closed)(void *conn_data, void *arg);
} kv_rpc_server_params_t;

/** Slots of kv_rpc_server_stats_t.errors: statuses -1..-(SLOTS-1). */
#define KV_RPC_ERROR_SLOTS 128

/** Counters of the RPC layer. */
typedef struct kv_rpc_server_stats {
    uint64_t connections;   /**< open now */
    uint64_t accepted;      /**< since start */
    uint64_t rpc_errors;    /**< replies with an error status */
    uint64_t errors[KV_RPC_ERROR_SLOTS]; /**< rpc_errors by -status (0: other) */
    uint64_t bad_frames;    /**< connections closed for framing errors */
} kv_rpc_server_stats_t;

/**
 * Bind, listen and register with @p loop.  Refuses to listen on a
 * non-loopback address without a token (KVP_ERR_CONFIG).
 * @return KVP_OK; KVP_ERR_CONFIG; KVP_ERR_IO (bind/listen, logged).
 */
kvp_status_t kv_rpc_server_create(kv_evloop_t *loop,
                                  const kv_rpc_server_params_t *params,
                                  kv_rpc_server_t **server_p);

/** Close every connection and the listener.  NULL is accepted. */
void kv_rpc_server_destroy(kv_rpc_server_t *server);

/** The port actually bound (useful with port 0). */
uint16_t kv_rpc_server_port(const kv_rpc_server_t *server);

/** Current counters. */
void kv_rpc_server_stats(const kv_rpc_server_t *server,
                         kv_rpc_server_stats_t *stats_p);

/**
 * Answer @p call.  With @p status KVP_OK, @p reply is the method's output
 * message, packed now (it may be freed on return), and @p payload (may be
 * NULL) is sent after it without a copy: it must stay valid until @p done
 * runs (also when the connection dies before it is sent).  With an error
 * status, @p message (may be NULL) explains it, @p reply and @p payload are
 * ignored, and @p done still runs if given.
 */
void kv_rpc_reply(kv_rpc_call_t *call, kvp_status_t status,
                  const ProtobufCMessage *reply, const void *payload,
                  uint64_t payload_len, kv_rpc_done_func_t done, void *done_arg);

/** Answer @p call with an error and a reason (also logged). */
void kv_rpc_reply_error(kv_rpc_call_t *call, kvp_status_t status,
                        const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** Extra detail for an error reply: the size of a block too big to send. */
void kv_rpc_reply_too_small(kv_rpc_call_t *call, uint64_t size);

/**
 * Close connections that have not completed the handshake within 5 s.
 * Call it periodically (the node's tick does).
 */
void kv_rpc_server_expire(kv_rpc_server_t *server);

/** The context the method's sink returned for this call's payload. */
void *kv_rpc_call_payload_ctx(const kv_rpc_call_t *call);

/**
 * The call's connection's data slot: NULL until a handler stores something
 * there; conn_closed(slot, arg) runs when the connection ends.
 */
void **kv_rpc_call_conn_data(kv_rpc_call_t *call);

/** A name for the call's peer ("127.0.0.1:5000"), for log lines. */
const char *kv_rpc_call_peer(const kv_rpc_call_t *call);

#endif
