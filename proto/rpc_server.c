/*
 * Server side of the RPC channel.
 *
 * Each connection reads one frame at a time through three phases, each
 * bounded before anything is allocated:
 *
 *     HEADER (40 bytes) -> MESSAGE (msg_len <= 1 MiB) -> PAYLOAD -> dispatch
 *
 * A payload is accepted only by methods that take one (they have a sink),
 * only after the handshake, and only up to max_payload.  Once the message
 * is decoded, the method's sink says where the payload goes (the node
 * reserves the block in its arena, so the bytes land there with no copy).
 * A refused payload (too large, no space, bad message) is read and dropped
 * so the stream stays in sync, then the caller gets the reason.
 *
 * Small reads go through a per-connection read-ahead buffer (one recv
 * brings a header, its message and often the next frames); a large
 * message or payload is read straight into its place.  A request is
 * decoded into a per-connection arena freed at once after its handler
 * ran.  The replies of the frames run in one wakeup are queued per
 * connection and sent together with writev; a reply's payload is sent
 * straight from the handler's memory and its done callback runs once it
 * left (or the connection died).  A
 * connection is not read while it has OUT_HIGH_WATER bytes queued (each
 * frame also charged its bookkeeping), or while it has anything queued and
 * all connections together hold OUT_TOTAL_HIGH_WATER: clients that do not
 * read their replies cannot grow the node's memory without bound.
 */
#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvproto/frame.h>
#include <kvproto/pb_arena.h>
#include <kvproto/rpc_server.h>

#include "kvpool.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define OUT_HIGH_WATER      (64ull << 20)  /* queued per connection */
#define OUT_TOTAL_HIGH_WATER (1ull << 30)  /* queued over all connections */
#define OUT_FRAME_OVERHEAD  256            /* bookkeeping of one queued frame */
#define MAX_CONNECTIONS     4096
#define HANDSHAKE_TIMEOUT_NS (5ull * 1000000000ull)
#define FRAME_TIMEOUT_NS     (60ull * 1000000000ull)
#define FRAMES_PER_WAKEUP   32
#define MSG_KEEP            (64u << 10)    /* a larger message buffer is freed */
#define ARENA_CHUNK         (16u << 10)    /* decoding arena: its first buffer */
#define IN_BUF              (16u << 10)    /* read-ahead per connection */

typedef struct out_frame {
    struct out_frame  *next;
    uint8_t           *head;     /* frame header + packed message, after this */
    size_t             head_len;
    const uint8_t     *payload;
    uint64_t           payload_len;
    uint64_t           sent;
    uint64_t           cost;     /* charged to out_bytes while queued */
    kv_rpc_done_func_t done;
    void              *done_arg;
} out_frame_t;

typedef enum { READ_HEADER, READ_MESSAGE, READ_PAYLOAD } read_phase_t;

typedef struct conn {
    kv_rpc_server_t   *server;
    struct conn       *prev, *next;
    int                fd;
    char               peer[64];
    int                authed;
    int                closing;       /* close once the queue is flushed */
    int                reading;       /* EPOLLIN armed */
    uint32_t           events;        /* what epoll watches now */
    uint64_t           accepted_ns;

    read_phase_t       phase;
    uint8_t            hdr_buf[KV_FRAME_HEADER_LEN];
    size_t             got;           /* bytes of the current phase */
    kv_frame_header_t  hdr;
    uint8_t           *msg;           /* msg_cap bytes, kept between frames */
    size_t             msg_cap;
    ProtobufCMessage  *request;       /* decoded once the message is in */
    kv_pb_arena_t      arena;         /* where requests are decoded */
    uint8_t           *arena_first;   /* its first ARENA_CHUNK bytes, kept */
    uint8_t           *payload;       /* sink memory; NULL: being dropped */
    void              *payload_ctx;   /* the sink's, until a handler takes it */
    kvp_status_t       drop_status;   /* why the frame is refused */
    char               drop_reason[160];
    uint64_t           frame_start_ns;
    uint8_t           *in;            /* IN_BUF bytes read ahead ... */
    size_t             in_start, in_end; /* ... of which these are not taken */

    out_frame_t       *out_head, *out_tail;
    uint64_t           out_bytes;
    void              *data;          /* the handlers' per-connection state */
} conn_t;

struct kv_rpc_call {
    conn_t  *conn;
    uint64_t id;
    uint16_t method;
    int      replied;
    uint64_t too_small_size;
    void    *payload_ctx;
};

struct kv_rpc_server {
    kv_evloop_t           *loop;
    int                    listen_fd;
    uint16_t               port;
    char                  *token;
    char                  *name;
    kv_rpc_server_params_t params;
    conn_t                *conns;
    uint64_t               out_total; /* queued reply bytes, all connections */
    kv_rpc_server_stats_t  stats;
};

static void conn_close(conn_t *conn);
static int  conn_flush(conn_t *conn);

/* Reading may go on: not closing, and not too much queued to send. */
static int conn_may_read(const conn_t *conn)
{
    return !conn->closing && conn->out_bytes < OUT_HIGH_WATER &&
           (conn->out_bytes == 0 || conn->server->out_total < OUT_TOTAL_HIGH_WATER);
}

static void conn_update_events(conn_t *conn)
{
    uint32_t events  = 0;
    int      reading = conn_may_read(conn);

    if (reading) {
        events |= EPOLLIN;
    }
    if (conn->out_head != NULL) {
        events |= EPOLLOUT;
    }
    conn->reading = reading;
    if (events != conn->events) {
        conn->events = events;
        kv_evloop_modify(conn->server->loop, conn->fd, events);
    }
}

static void conn_reset_frame(conn_t *conn)
{
    if (conn->payload_ctx != NULL) {
        /* the frame never reached its handler: give the memory back */
        conn->server->params.sink_cancel(conn->payload_ctx, conn->server->params.arg);
    }
    /* the request lives in the arena: nothing to free piece by piece */
    kv_pb_arena_reset(&conn->arena);
    if (conn->msg_cap > MSG_KEEP) {
        kv_free(conn->msg);
        conn->msg     = NULL;
        conn->msg_cap = 0;
    }
    conn->request     = NULL;
    conn->payload     = NULL;
    conn->payload_ctx = NULL;
    conn->drop_status = KVP_OK;
    conn->phase   = READ_HEADER;
    conn->got     = 0;
    memset(&conn->hdr, 0, sizeof(conn->hdr));
}

static void queue_frame(conn_t *conn, uint64_t id, uint16_t method,
                        kvp_status_t status, const ProtobufCMessage *msg,
                        const void *payload, uint64_t payload_len,
                        kv_rpc_done_func_t done, void *done_arg)
{
    size_t            msg_len = msg ? protobuf_c_message_get_packed_size(msg) : 0;
    out_frame_t      *frame;
    kv_frame_header_t hdr     = {
        .kind        = KV_FRAME_RESPONSE,
        .method      = method,
        .id          = id,
        .status      = status,
        .msg_len     = (uint32_t)msg_len,
        .payload_len = payload ? payload_len : 0,
    };

    /* one allocation: the frame's bookkeeping, then its bytes */
    frame = kv_malloc(sizeof(*frame) + KV_FRAME_HEADER_LEN + msg_len, "reply frame");
    memset(frame, 0, sizeof(*frame));
    frame->head_len = KV_FRAME_HEADER_LEN + msg_len;
    frame->head     = (uint8_t *)(frame + 1);
    kv_frame_header_pack(&hdr, frame->head);
    if (msg) {
        protobuf_c_message_pack(msg, frame->head + KV_FRAME_HEADER_LEN);
    }
    frame->payload     = payload;
    frame->payload_len = hdr.payload_len;
    frame->done        = done;
    frame->done_arg    = done_arg;

    if (conn->out_tail) {
        conn->out_tail->next = frame;
    } else {
        conn->out_head = frame;
    }
    conn->out_tail = frame;
    /* count what the queue costs in memory, not only on the wire */
    frame->cost = frame->head_len + frame->payload_len + OUT_FRAME_OVERHEAD;
    conn->out_bytes += frame->cost;
    conn->server->out_total += frame->cost;
    if (status < 0) {
        conn->server->stats.rpc_errors++;
        conn->server->stats.errors[status > -KV_RPC_ERROR_SLOTS ? -status : 0]++;
    }
}

static void frame_release(conn_t *conn, out_frame_t *frame)
{
    conn->out_bytes -= frame->cost;
    conn->server->out_total -= frame->cost;
    if (frame->done) {
        frame->done(frame->done_arg);
    }
    kv_free(frame);
}

static void send_error(conn_t *conn, uint64_t id, uint16_t method,
                       kvp_status_t status, uint64_t size, const char *message)
{
    Kvpool__ErrorReply err = KVPOOL__ERROR_REPLY__INIT;

    err.message = (char *)message;
    err.size    = size;
    queue_frame(conn, id, method, status, &err.base, NULL, 0, NULL, NULL);
}

/* A framing error: answer once, then close; nothing more is read. */
static void conn_fail(conn_t *conn, kvp_status_t status, const char *why)
{
    kv_log_warn("%s: %s; closing the connection", conn->peer, why);
    conn->server->stats.bad_frames++;
    send_error(conn, conn->hdr.id, conn->hdr.method, status, 0, why);
    conn->closing = 1;
    conn_update_events(conn); /* the reply goes out on EPOLLOUT, then close */
}

static void call_answer(kv_rpc_call_t *call, kvp_status_t status,
                        const ProtobufCMessage *reply, const void *payload,
                        uint64_t payload_len, kv_rpc_done_func_t done,
                        void *done_arg, const char *message)
{
    conn_t *conn = call->conn;

    if (call->replied) {
        kv_log_error("%s: second reply to request %llu ignored", conn->peer,
                     (unsigned long long)call->id);
        if (done) {
            done(done_arg);
        }
        return;
    }
    call->replied = 1;
    if (status < 0) {
        send_error(conn, call->id, call->method, status, call->too_small_size,
                   message ? message : kvp_status_string(status));
        if (done) {
            done(done_arg);
        }
    } else {
        queue_frame(conn, call->id, call->method, status, reply, payload,
                    payload_len, done, done_arg);
    }
}

void kv_rpc_reply(kv_rpc_call_t *call, kvp_status_t status,
                  const ProtobufCMessage *reply, const void *payload,
                  uint64_t payload_len, kv_rpc_done_func_t done, void *done_arg)
{
    call_answer(call, status, reply, payload, payload_len, done, done_arg, NULL);
}

void kv_rpc_reply_error(kv_rpc_call_t *call, kvp_status_t status,
                        const char *fmt, ...)
{
    char    message[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    kv_log_info("%s: %s: %s", call->conn->peer, kvp_status_string(status),
                message);
    call_answer(call, status, NULL, NULL, 0, NULL, NULL, message);
}

void kv_rpc_reply_too_small(kv_rpc_call_t *call, uint64_t size)
{
    call->too_small_size = size;
    call_answer(call, KVP_ERR_BUFFER_TOO_SMALL, NULL, NULL, 0, NULL, NULL,
                "block larger than the caller's buffer");
}

void **kv_rpc_call_conn_data(kv_rpc_call_t *call)
{
    return &call->conn->data;
}

void *kv_rpc_call_payload_ctx(const kv_rpc_call_t *call)
{
    return call->payload_ctx;
}

const char *kv_rpc_call_peer(const kv_rpc_call_t *call)
{
    return call->conn->peer;
}

/* Compare tokens in time independent of where they differ. */
static int token_equal(const char *want, const uint8_t *got, size_t got_len)
{
    size_t   want_len = strlen(want);
    unsigned diff     = (unsigned)(want_len ^ got_len);

    for (size_t i = 0; i < got_len; i++) {
        diff |= (unsigned)(got[i] ^ (uint8_t)want[i < want_len ? i : 0]);
    }
    return diff == 0;
}

static void handle_hello(conn_t *conn, kv_rpc_call_t *call,
                         const Kvpool__Hello *hello)
{
    kv_rpc_server_t   *server = conn->server;
    Kvpool__HelloReply reply  = KVPOOL__HELLO_REPLY__INIT;

    if (hello->version != KVP_PROTOCOL_VERSION) {
        kv_rpc_reply_error(call, KVP_ERR_VERSION,
                           "protocol version %u not supported (%s speaks %u)",
                           hello->version, server->name, KVP_PROTOCOL_VERSION);
        conn->closing = 1;
        return;
    }
    if (!token_equal(server->token, hello->token.data, hello->token.len)) {
        kv_rpc_reply_error(call, KVP_ERR_AUTH, "wrong auth token");
        conn->closing = 1;
        return;
    }
    conn->authed      = 1;
    if (server->params.hello != NULL) {
        reply = *server->params.hello;
    }
    reply.version     = KVP_PROTOCOL_VERSION;
    reply.node_name   = server->name;
    reply.max_payload = server->params.max_payload;
    kv_log_debug("%s: hello from '%.64s'", conn->peer,
                 hello->client_name ? hello->client_name : "");
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}

/* A whole frame is in: run its method. */
static void conn_dispatch(conn_t *conn)
{
    kv_rpc_server_t                 *server = conn->server;
    const ProtobufCServiceDescriptor *svc   = server->params.service;
    kv_rpc_call_t                    call   = {conn, conn->hdr.id, conn->hdr.method,
                                               0, 0, NULL};
    const ProtobufCMethodDescriptor *method;
    uint64_t                         elapsed_ms;

    if (conn->drop_status != KVP_OK) {
        kv_rpc_reply_error(&call, conn->drop_status, "%s", conn->drop_reason);
        return;
    }
    method     = &svc->methods[conn->hdr.method];
    elapsed_ms = (kv_time_ns() - conn->frame_start_ns) / 1000000;
    if (conn->hdr.timeout_ms != 0 && elapsed_ms > conn->hdr.timeout_ms) {
        kv_rpc_reply_error(&call, KVP_ERR_TIMED_OUT,
                           "%s arrived after its %u ms deadline", method->name,
                           conn->hdr.timeout_ms);
        return;
    }
    if (conn->hdr.method == 0) {
        handle_hello(conn, &call, (const Kvpool__Hello *)conn->request);
        return;
    }
    /* from here the handler owns the payload's memory */
    call.payload_ctx  = conn->payload_ctx;
    conn->payload_ctx = NULL;
    server->params.handlers[conn->hdr.method](&call, conn->request, conn->payload,
                                              conn->hdr.payload_len,
                                              server->params.arg);
    if (!call.replied) {
        kv_log_error("handler of %s did not reply", method->name);
        call_answer(&call, KVP_ERR_INTERNAL, NULL, NULL, 0, NULL, NULL, NULL);
    }
}

/* Refuse the frame being read: its payload is dropped, then this replies. */
static void conn_refuse(conn_t *conn, kvp_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_refuse(conn_t *conn, kvp_status_t status, const char *fmt, ...)
{
    va_list ap;

    conn->drop_status = status;
    va_start(ap, fmt);
    vsnprintf(conn->drop_reason, sizeof(conn->drop_reason), fmt, ap);
    va_end(ap);
}

/* The header is in: check it against every limit before allocating. */
static int conn_header_done(conn_t *conn)
{
    kv_rpc_server_t *server = conn->server;
    const ProtobufCServiceDescriptor *svc = server->params.service;
    kv_frame_header_t *hdr = &conn->hdr;

    conn->frame_start_ns = kv_time_ns();
    if (kv_frame_header_unpack(conn->hdr_buf, hdr) != KVP_OK) {
        conn_fail(conn, KVP_ERR_PROTOCOL, "malformed frame header");
        return 0;
    }
    if (hdr->kind != KV_FRAME_REQUEST) {
        conn_fail(conn, KVP_ERR_PROTOCOL, "a client sent a reply frame");
        return 0;
    }
    if (!conn->authed && hdr->method != 0) {
        conn_fail(conn, KVP_ERR_AUTH, "first request must be Hello");
        return 0;
    }
    if (hdr->payload_len > 0 &&
        (hdr->method >= svc->n_methods || server->params.sinks[hdr->method] == NULL)) {
        conn_fail(conn, KVP_ERR_PROTOCOL, "payload on a method that takes none");
        return 0;
    }
    if (hdr->method >= svc->n_methods) {
        conn_refuse(conn, KVP_ERR_UNKNOWN_METHOD, "no method %u in %s",
                    hdr->method, svc->name);
    }
    if (hdr->msg_len > conn->msg_cap) {
        kv_free(conn->msg);
        conn->msg_cap = KV_MAX((size_t)hdr->msg_len, (size_t)1024);
        conn->msg     = kv_malloc(conn->msg_cap, "request message");
    }
    conn->phase = READ_MESSAGE;
    conn->got   = 0;
    return 1;
}

/* The message is in: decode it, and find where its payload goes. */
static void conn_message_done(conn_t *conn)
{
    kv_rpc_server_t                 *server = conn->server;
    const ProtobufCMethodDescriptor *method;
    kvp_status_t                     status;
    void                            *buf;
    char                             reason[160];

    if (conn->drop_status != KVP_OK) {
        return;
    }
    method        = &server->params.service->methods[conn->hdr.method];
    conn->request = protobuf_c_message_unpack(method->input, &conn->arena.allocator,
                                              conn->hdr.msg_len, conn->msg);
    if (conn->request == NULL) {
        conn_refuse(conn, KVP_ERR_PROTOCOL, "cannot decode %s for %s",
                    method->input->name, method->name);
        return;
    }
    if (conn->hdr.payload_len == 0) {
        return;
    }
    if (conn->hdr.payload_len > server->params.max_payload) {
        conn_refuse(conn, KVP_ERR_TOO_LARGE,
                    "payload of %llu bytes is over the limit of %llu",
                    (unsigned long long)conn->hdr.payload_len,
                    (unsigned long long)server->params.max_payload);
        return;
    }
    reason[0] = '\0';
    status    = server->params.sinks[conn->hdr.method](
        conn->request, conn->hdr.payload_len, server->params.arg, &buf,
        &conn->payload_ctx, reason, sizeof(reason));
    if (status != KVP_OK) {
        conn->payload_ctx = NULL;
        conn_refuse(conn, status, "%s", reason[0] ? reason : kvp_status_string(status));
        return;
    }
    conn->payload = buf;
}

/*
 * Take up to @p want bytes for the current phase into @p dst: from what
 * was read ahead into conn->in first; else a large want is read from the
 * socket straight into @p dst, a small one by filling conn->in (so that
 * one recv brings a header, its message, and often the frames after it).
 * @p may_recv 0: only what was read ahead (epoll, level-triggered, says
 * when the socket has more).
 * @return bytes taken (> 0), 0 when there is nothing now, -1 once the
 *         connection is closed.
 */
static ssize_t conn_take(conn_t *conn, uint8_t *dst, size_t want, int *may_recv)
{
    ssize_t n;

    if (conn->in_start == conn->in_end) {
        if (!*may_recv) {
            return 0;
        }
        if (want >= IN_BUF) {
            n = recv(conn->fd, dst, want, 0);
        } else {
            conn->in_start = conn->in_end = 0;
            n = recv(conn->fd, conn->in, IN_BUF, 0);
        }
        if (n == 0) {
            if (conn->phase != READ_HEADER || conn->got != 0) {
                kv_log_info("%s: closed in the middle of a frame", conn->peer);
            }
            conn_close(conn);
            return -1;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return 0;
            }
            kv_log_info("%s: recv: %m", conn->peer);
            conn_close(conn);
            return -1;
        }
        if (want >= IN_BUF) {
            return n;
        }
        conn->in_end = (size_t)n;
        if ((size_t)n < IN_BUF) {
            *may_recv = 0; /* the socket is drained: no recv only to hear EAGAIN */
        }
    }
    n = (ssize_t)KV_MIN(want, conn->in_end - conn->in_start);
    memcpy(dst, conn->in + conn->in_start, (size_t)n);
    conn->in_start += (size_t)n;
    return n;
}

/*
 * Read what the socket has, a phase at a time, and run the frames that
 * are complete.  Every frame already read ahead is run (epoll would not
 * say they are there); the socket is read again only until it is drained
 * (a read shorter than asked) or FRAMES_PER_WAKEUP frames ran, so one busy
 * client cannot starve the others.  Returns 0 once closed.
 */
static int conn_read_frames(conn_t *conn)
{
    static uint8_t sink[65536]; /* dropped payload bytes land here */
    int            frames = 0, may_recv = 1;

    if (conn->in == NULL) {
        conn->in = kv_malloc(IN_BUF, "read-ahead buffer");
    }
    while (conn_may_read(conn)) {
        uint8_t *dst;
        size_t   want;

        switch (conn->phase) {
        case READ_HEADER:
            dst  = conn->hdr_buf + conn->got;
            want = KV_FRAME_HEADER_LEN - conn->got;
            break;
        case READ_MESSAGE:
            dst  = conn->msg + conn->got;
            want = conn->hdr.msg_len - conn->got;
            break;
        default:
            want = conn->hdr.payload_len - conn->got;
            if (conn->payload) {
                dst = conn->payload + conn->got;
            } else {
                dst  = sink;
                want = KV_MIN(want, sizeof(sink));
            }
            break;
        }
        if (want > 0) {
            ssize_t n;

            if (frames >= FRAMES_PER_WAKEUP) {
                may_recv = 0;
            }
            n = conn_take(conn, dst, want, &may_recv);

            if (n <= 0) {
                return n == 0;
            }
            conn->got += (size_t)n;
            if ((size_t)n < want) {
                continue;
            }
        }
        /* the phase is complete */
        if (conn->phase == READ_HEADER) {
            if (!conn_header_done(conn)) {
                return 1;
            }
        } else if (conn->phase == READ_MESSAGE && conn->hdr.payload_len > 0) {
            conn_message_done(conn);
            conn->phase = READ_PAYLOAD;
            conn->got   = 0;
        } else if (conn->phase == READ_PAYLOAD && conn->got < conn->hdr.payload_len) {
            continue; /* dropping in sink-sized pieces */
        } else {
            if (conn->phase == READ_MESSAGE) {
                conn_message_done(conn);
            }
            conn_dispatch(conn);
            conn_reset_frame(conn);
            frames++;
        }
    }
    return 1;
}

/*
 * Run what can be read, then send the replies together.  Frames read
 * ahead stop being run while too much is queued; if the send then drained
 * the queue at once, no event would come for them: run them now.
 * Returns 0 once closed.
 */
static int conn_read(conn_t *conn)
{
    do {
        if (!conn_read_frames(conn) || !conn_flush(conn)) {
            return 0;
        }
    } while (conn->reading && conn->in_start < conn->in_end);
    return 1;
}

/* Write as much of the queue as the socket takes.  Returns 0 once closed. */
static int conn_flush(conn_t *conn)
{
    while (conn->out_head != NULL) {
        struct iovec iov[16];
        int          iovcnt = 0;
        out_frame_t *frame;

        for (frame = conn->out_head; frame && iovcnt < 15; frame = frame->next) {
            uint64_t off = frame->sent;
            if (off < frame->head_len) {
                iov[iovcnt].iov_base = frame->head + off;
                iov[iovcnt].iov_len  = frame->head_len - off;
                iovcnt++;
                off = frame->head_len;
            }
            if (frame->payload_len > 0) {
                iov[iovcnt].iov_base = (void *)(frame->payload + (off - frame->head_len));
                iov[iovcnt].iov_len  = frame->payload_len - (off - frame->head_len);
                iovcnt++;
            }
        }
        ssize_t n = writev(conn->fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                break;
            }
            kv_log_info("%s: send: %m", conn->peer);
            conn_close(conn);
            return 0;
        }
        while (n > 0) {
            frame = conn->out_head;
            uint64_t left = frame->head_len + frame->payload_len - frame->sent;
            if ((uint64_t)n < left) {
                frame->sent += (uint64_t)n;
                break;
            }
            n -= (ssize_t)left;
            conn->out_head = frame->next;
            if (conn->out_head == NULL) {
                conn->out_tail = NULL;
            }
            frame_release(conn, frame);
        }
    }
    if (conn->out_head == NULL && conn->closing) {
        conn_close(conn);
        return 0;
    }
    conn_update_events(conn);
    return 1;
}

static void conn_close(conn_t *conn)
{
    kv_rpc_server_t *server = conn->server;

    if (conn->fd < 0) {
        return;
    }
    kv_evloop_remove(server->loop, conn->fd);
    close(conn->fd);
    conn->fd = -1;
    while (conn->out_head) {
        out_frame_t *frame = conn->out_head;
        conn->out_head     = frame->next;
        frame_release(conn, frame);
    }
    conn_reset_frame(conn);
    kv_free(conn->arena_first);
    kv_free(conn->msg);
    kv_free(conn->in);
    if (conn->data != NULL && server->params.conn_closed != NULL) {
        server->params.conn_closed(conn->data, server->params.arg);
    }
    if (conn->prev) {
        conn->prev->next = conn->next;
    } else {
        server->conns = conn->next;
    }
    if (conn->next) {
        conn->next->prev = conn->prev;
    }
    server->stats.connections--;
    kv_log_debug("%s: connection closed", conn->peer);
    kv_free(conn);
}

static void conn_event(int fd, uint32_t events, void *arg)
{
    conn_t *conn = arg;

    if ((events & EPOLLOUT) && !conn_flush(conn)) {
        return;
    }
    /* frames read ahead while reading was paused are not in the socket */
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
        (conn->reading && conn->in_start < conn->in_end)) {
        conn_read(conn);
    }
}

static void format_peer(const struct sockaddr_storage *addr, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int  port                   = 0;

    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, len, "%s:%d", host, port);
}

static void listen_event(int fd, uint32_t events, void *arg)
{
    kv_rpc_server_t        *server = arg;
    struct sockaddr_storage addr;
    socklen_t               len = sizeof(addr);
    int                     one = 1;

    for (;;) {
        int cfd = accept4(fd, (struct sockaddr *)&addr, &len,
                          SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                kv_log_warn("accept: %m");
            }
            return;
        }
        if (server->stats.connections >= MAX_CONNECTIONS) {
            kv_log_warn("refusing a connection: %d already open", MAX_CONNECTIONS);
            close(cfd);
            continue;
        }
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *conn      = kv_calloc(1, sizeof(*conn), "connection");
        conn->server      = server;
        conn->fd          = cfd;
        conn->arena_first = kv_malloc(ARENA_CHUNK, "request arena");
        kv_pb_arena_init(&conn->arena, conn->arena_first, ARENA_CHUNK);
        conn->accepted_ns = kv_time_ns();
        format_peer(&addr, conn->peer, sizeof(conn->peer));
        if (kv_evloop_add(server->loop, cfd, EPOLLIN, conn_event, conn) != KVP_OK) {
            close(cfd);
            kv_free(conn->arena_first);
            kv_free(conn);
            continue;
        }
        conn->reading = 1;
        conn->events  = EPOLLIN;
        conn->next    = server->conns;
        if (server->conns) {
            server->conns->prev = conn;
        }
        server->conns = conn;
        server->stats.connections++;
        server->stats.accepted++;
        kv_log_debug("%s: connection accepted", conn->peer);
    }
}

kvp_status_t kv_rpc_server_create(kv_evloop_t *loop,
                                  const kv_rpc_server_params_t *params,
                                  kv_rpc_server_t **server_p)
{
    struct sockaddr_storage addr;
    socklen_t               addr_len;
    char                    text[300];
    kv_rpc_server_t        *server;
    kvp_status_t            status;
    int                     one = 1;

    snprintf(text, sizeof(text), strchr(params->listen, ':') ? "[%s]:%u" : "%s:%u",
             params->listen, params->port);
    status = kv_addr_parse(text, &addr, &addr_len);
    if (status != KVP_OK) {
        kv_log_error("cannot parse listen address '%s'", params->listen);
        return KVP_ERR_CONFIG;
    }
    if (!kv_addr_is_loopback((struct sockaddr *)&addr) &&
        (params->token == NULL || params->token[0] == '\0')) {
        kv_log_error("listening on %s needs an auth token: without one only "
                     "loopback addresses are allowed", params->listen);
        return KVP_ERR_CONFIG;
    }

    server            = kv_calloc(1, sizeof(*server), "rpc server");
    server->loop      = loop;
    server->params    = *params;
    server->token     = kv_strdup(params->token ? params->token : "", "token");
    server->name      = kv_strdup(params->name ? params->name : "kvpool", "name");
    server->listen_fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (server->listen_fd < 0) {
        kv_log_error("socket: %m");
        status = KVP_ERR_IO;
        goto err_free;
    }
    setsockopt(server->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(server->listen_fd, (struct sockaddr *)&addr, addr_len) != 0) {
        kv_log_error("bind %s: %m", text);
        status = KVP_ERR_IO;
        goto err_close;
    }
    if (listen(server->listen_fd, 512) != 0) {
        kv_log_error("listen %s: %m", text);
        status = KVP_ERR_IO;
        goto err_close;
    }
    addr_len = sizeof(addr);
    getsockname(server->listen_fd, (struct sockaddr *)&addr, &addr_len);
    server->port = ntohs(addr.ss_family == AF_INET
                             ? ((struct sockaddr_in *)&addr)->sin_port
                             : ((struct sockaddr_in6 *)&addr)->sin6_port);
    status = kv_evloop_add(loop, server->listen_fd, EPOLLIN, listen_event, server);
    if (status != KVP_OK) {
        goto err_close;
    }
    *server_p = server;
    return KVP_OK;

err_close:
    close(server->listen_fd);
err_free:
    kv_free(server->token);
    kv_free(server->name);
    kv_free(server);
    return status;
}

void kv_rpc_server_destroy(kv_rpc_server_t *server)
{
    if (server == NULL) {
        return;
    }
    while (server->conns) {
        conn_close(server->conns);
    }
    kv_evloop_remove(server->loop, server->listen_fd);
    close(server->listen_fd);
    kv_free(server->token);
    kv_free(server->name);
    kv_free(server);
}

uint16_t kv_rpc_server_port(const kv_rpc_server_t *server)
{
    return server->port;
}

void kv_rpc_server_stats(const kv_rpc_server_t *server,
                         kv_rpc_server_stats_t *stats_p)
{
    *stats_p = server->stats;
}

void kv_rpc_server_expire(kv_rpc_server_t *server)
{
    uint64_t now = kv_time_ns();
    conn_t  *conn, *next;

    for (conn = server->conns; conn != NULL; conn = next) {
        next = conn->next;
        if (!conn->authed && now - conn->accepted_ns > HANDSHAKE_TIMEOUT_NS) {
            kv_log_info("%s: no handshake within %llu s; closing", conn->peer,
                        HANDSHAKE_TIMEOUT_NS / 1000000000ull);
            conn_close(conn);
        } else if (conn->phase != READ_HEADER &&
                   now - conn->frame_start_ns > FRAME_TIMEOUT_NS) {
            /* a half-sent frame must not hold its payload memory forever */
            kv_log_info("%s: frame not completed within %llu s; closing",
                        conn->peer, FRAME_TIMEOUT_NS / 1000000000ull);
            conn_close(conn);
        }
    }
}
