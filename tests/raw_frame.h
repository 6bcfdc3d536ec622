/**
 * @file raw_frame.h
 * @brief Frames crafted by hand on raw TCP sockets, for the bad-input tests
 * of the node and of the coordinator: connect, send headers, messages and
 * payloads, read replies and check their error status and ErrorReply.
 * Include it after "test.h" and "test_util.h".
 *
 * Everything is static (inline), for test executables of one file each.
 */
#ifndef KV_TEST_RAW_FRAME_H
#define KV_TEST_RAW_FRAME_H

#include <kvproto/frame.h>

#include "kvpool.pb-c.h"

#include <node_proc.h>
#include <test.h>
#include <test_util.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/** How long a raw socket waits for a reply before the test fails. */
#define RECV_TIMEOUT_S 20

/** Request ids of raw frames: one sequence per test process. */
static uint64_t next_id = 1000;

static inline int raw_connect(const kv_test_node_t *node)
{
    struct sockaddr_in addr = {0};
    struct timeval     tv   = {RECV_TIMEOUT_S, 0};
    int                one  = 1;
    int                fd   = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ASSERT(fd >= 0);
    addr.sin_family      = AF_INET;
    addr.sin_port        = htons((uint16_t)node->port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Close with a RST instead of a FIN. */
static inline void close_rst(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* @return 0, or -1 if the peer went away (EPIPE, ECONNRESET). */
static inline int send_try(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            ASSERT(errno == EPIPE || errno == ECONNRESET);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static inline void send_all(int fd, const void *buf, size_t len)
{
    ASSERT_EQ(send_try(fd, buf, len), 0);
}

/* Send @p len bytes of zeros. */
static inline void send_zeros(int fd, uint64_t len)
{
    static uint8_t zeros[1 << 20];

    while (len > 0) {
        size_t n = (size_t)(len < sizeof(zeros) ? len : sizeof(zeros));
        send_all(fd, zeros, n);
        len -= n;
    }
}

static inline void header(uint8_t out[KV_FRAME_HEADER_LEN], uint8_t kind, uint16_t method,
                   uint64_t id, uint32_t msg_len, uint64_t payload_len)
{
    kv_frame_header_t hdr = {0};

    hdr.kind        = kind;
    hdr.method      = method;
    hdr.id          = id;
    hdr.msg_len     = msg_len;
    hdr.payload_len = payload_len;
    kv_frame_header_pack(&hdr, out);
}

static inline uint8_t *pack(const ProtobufCMessage *msg, size_t *len_p)
{
    size_t   len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);

    ASSERT(buf != NULL);
    ASSERT_EQ(protobuf_c_message_pack(msg, buf), len);
    *len_p = len;
    return buf;
}

/* Send a request frame: header, message bytes, payload. */
static inline void send_frame_bytes(int fd, uint16_t method, uint64_t id, const void *msg,
                             size_t msg_len, const void *payload, uint64_t payload_len)
{
    uint8_t hdr[KV_FRAME_HEADER_LEN];

    header(hdr, KV_FRAME_REQUEST, method, id, (uint32_t)msg_len, payload_len);
    send_all(fd, hdr, sizeof(hdr));
    if (msg_len > 0) {
        send_all(fd, msg, msg_len);
    }
    if (payload_len > 0) {
        send_all(fd, payload, (size_t)payload_len);
    }
}

static inline void send_frame(int fd, uint16_t method, uint64_t id, const ProtobufCMessage *msg,
                       const void *payload, uint64_t payload_len)
{
    size_t   len;
    uint8_t *bytes = pack(msg, &len);

    send_frame_bytes(fd, method, id, bytes, len, payload, payload_len);
    free(bytes);
}

typedef struct {
    kv_frame_header_t hdr;
    uint8_t          *msg;
    uint8_t          *payload;
} reply_t;

static inline void reply_free(reply_t *r)
{
    free(r->msg);
    free(r->payload);
    memset(r, 0, sizeof(*r));
}

/* Read one reply frame; @return 0, or -1 if none came. */
static inline int read_reply(int fd, reply_t *r)
{
    uint8_t raw[KV_FRAME_HEADER_LEN];

    memset(r, 0, sizeof(*r));
    if (recv_full(fd, raw, sizeof(raw)) != 0) {
        return -1;
    }
    ASSERT_OK(kv_frame_header_unpack(raw, &r->hdr)); /* the node's frames are sane */
    ASSERT_EQ(r->hdr.kind, KV_FRAME_RESPONSE);
    r->msg = malloc(r->hdr.msg_len + 1);
    ASSERT(r->msg != NULL);
    ASSERT_EQ(recv_full(fd, r->msg, r->hdr.msg_len), 0);
    if (r->hdr.payload_len > 0) {
        ASSERT_LE(r->hdr.payload_len, 64 * MiB);
        r->payload = malloc(r->hdr.payload_len);
        ASSERT(r->payload != NULL);
        ASSERT_EQ(recv_full(fd, r->payload, r->hdr.payload_len), 0);
    }
    return 0;
}

/* The reply is an error with @p want and a readable ErrorReply. */
static inline void expect_error(const reply_t *r, kvp_status_t want)
{
    Kvpool__ErrorReply *err;

    if (r->hdr.status != want) {
        fprintf(stderr, "reply status %d (%s), want %d (%s)\n", r->hdr.status,
                kvp_status_string(r->hdr.status), want, kvp_status_string(want));
    }
    ASSERT_EQ(r->hdr.status, want);
    ASSERT_EQ(r->hdr.payload_len, 0);
    err = kvpool__error_reply__unpack(NULL, r->hdr.msg_len, r->msg);
    ASSERT(err != NULL);
    ASSERT(err->message != NULL && err->message[0] != '\0');
    kvpool__error_reply__free_unpacked(err, NULL);
}

/* The node has closed the connection (after any reply we already read). */
static inline void expect_closed(int fd)
{
    uint8_t byte;
    ssize_t n;

    do {
        n = recv(fd, &byte, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n != 0 && !(n < 0 && errno == ECONNRESET)) {
        fprintf(stderr, "recv after the error reply: %zd (%s)\n", n,
                n < 0 ? strerror(errno) : "data");
    }
    ASSERT(n == 0 || (n < 0 && errno == ECONNRESET));
}

/* A framing error: one error reply with @p want, then the close (id 0, or
 * also @p id unless @p strict_id).  Closes @p fd. */
static inline void expect_frame_error(int fd, kvp_status_t want, uint64_t id, int strict_id)
{
    reply_t r;

    ASSERT_EQ(read_reply(fd, &r), 0);
    expect_error(&r, want);
    if (strict_id) {
        ASSERT_EQ(r.hdr.id, 0);
    } else {
        ASSERT(r.hdr.id == 0 || r.hdr.id == id);
    }
    reply_free(&r);
    expect_closed(fd);
    close(fd);
}

/* Send just the header @p hdr; it is refused as expect_frame_error() says. */
static inline void expect_header_refused(int fd, const uint8_t hdr[KV_FRAME_HEADER_LEN],
                                  kvp_status_t want, uint64_t id, int strict_id)
{
    send_all(fd, hdr, KV_FRAME_HEADER_LEN);
    expect_frame_error(fd, want, id, strict_id);
}

/* The next reply answers request @p id with the error @p want. */
static inline void expect_error_reply(int fd, uint64_t id, kvp_status_t want)
{
    reply_t r;

    ASSERT_EQ(read_reply(fd, &r), 0);
    ASSERT_EQ(r.hdr.id, id);
    expect_error(&r, want);
    reply_free(&r);
}

/* Send a request and read its reply (same id); returns the status. */
static inline kvp_status_t call(int fd, uint16_t method, const ProtobufCMessage *msg,
                         const void *payload, uint64_t payload_len, reply_t *r)
{
    uint64_t id = next_id++;

    send_frame(fd, method, id, msg, payload, payload_len);
    ASSERT_EQ(read_reply(fd, r), 0);
    ASSERT_EQ(r->hdr.id, id);
    ASSERT_EQ(r->hdr.method, method);
    return (kvp_status_t)r->hdr.status;
}

/* call() that expects an error reply with @p want; the connection stays. */
static inline void call_expect(int fd, uint16_t method, const ProtobufCMessage *msg,
                        const void *payload, uint64_t payload_len, kvp_status_t want)
{
    reply_t r;

    call(fd, method, msg, payload, payload_len, &r);
    if (want == KVP_OK) {
        ASSERT_OK(r.hdr.status);
    } else {
        expect_error(&r, want);
    }
    reply_free(&r);
}

#endif
