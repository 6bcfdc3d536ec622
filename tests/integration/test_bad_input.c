/*
 * Integration tests of a real kvpool-node against bad input: frames crafted
 * by hand on raw TCP sockets (bad headers, bad messages, bad fields, random
 * bytes, abrupt closes, a client that never reads).
 *
 * Every test follows the same pattern:
 *  1. start a node (--token s3cret, 32 MiB arena) and a well-behaved
 *     libkvpool client that stores blocks;
 *  2. attack; the offender must get a clear status: the reply frame's status
 *     (with a decodable ErrorReply), and for framing errors a closed
 *     connection after that reply;
 *  3. the node process is alive, the good client gets every block back
 *     with identical bytes, can put new ones, and a new client can connect;
 *  4. SIGTERM: the node exits with status 0 (under the sanitizers, that is
 *     also its leak check).
 */
#include <kv/hash.h>
#include <kvpool/kvpool.h>
#include <kvproto/frame.h>
#include <kvproto/pool_service.h>

#include "kvpool.pb-c.h"

#include <node_proc.h>
#include <raw_frame.h>
#include <test.h>
#include <test_util.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define TOKEN "s3cret"
#define ARENA (32 * MiB)
#define GOOD_NS "good"


/* ---------------------------------------------------------------------- */
/* The fixture: a node and a well-behaved client with stored blocks        */
/* ---------------------------------------------------------------------- */

enum { GOOD_BLOCKS = 8, MAX_LATER = 64 };

typedef struct {
    kv_test_node_t node;
    kvp_client_h   good;
    kvp_key_t      keys[GOOD_BLOCKS + MAX_LATER];
    uint64_t       sizes[GOOD_BLOCKS + MAX_LATER];
    uint64_t       seeds[GOOD_BLOCKS + MAX_LATER];
    int            count;
} fixture_t;

static kvp_client_h good_connect(const kv_test_node_t *node)
{
    kvp_client_params_t params = {0};
    kvp_client_h        client = NULL;

    params.field_mask = KVP_CLIENT_PARAM_TOKEN | KVP_CLIENT_PARAM_NAME;
    params.token      = TOKEN;
    params.name       = "well-behaved";
    ASSERT_OK(kvp_client_connect(node->address, &params, &client));
    return client;
}

static void fixture_put(fixture_t *f, uint64_t size)
{
    int      i = f->count++;
    uint8_t *data;

    ASSERT(i < GOOD_BLOCKS + MAX_LATER);
    f->keys[i]  = key_of("good-%d", i);
    f->sizes[i] = size;
    f->seeds[i] = 4242 + (uint64_t)i;
    data        = make_block(size, f->seeds[i]);
    ASSERT_OK(kvp_put(f->good, GOOD_NS, &f->keys[i], data, size));
    free(data);
}

static void fixture_up(fixture_t *f)
{
    static const char *const extra[] = {"--token", TOKEN, "--log-level", "warn", NULL};
    rng_t                    rng;

    signal(SIGPIPE, SIG_IGN);
    memset(f, 0, sizeof(*f));
    node_up(&f->node, "32MiB", extra);
    f->good = good_connect(&f->node);

    /* block 0 is exactly 1 MiB (tests read it); the others random sizes */
    rng_seed(&rng, 99);
    fixture_put(f, MiB);
    for (int i = 1; i < GOOD_BLOCKS; i++) {
        fixture_put(f, rng_range(&rng, 1, 600 * KiB));
    }
}

/* Good block @p i reads back through @p client, byte for byte, into @p buf
 * of @p cap bytes. */
static void fixture_expect_block(fixture_t *f, kvp_client_h client, int i, uint8_t *buf,
                                 uint64_t cap)
{
    uint8_t *want = make_block(f->sizes[i], f->seeds[i]);
    uint64_t got  = 0;

    ASSERT_OK(kvp_get(client, GOOD_NS, &f->keys[i], buf, cap, &got));
    ASSERT_EQ(got, f->sizes[i]);
    ASSERT(memcmp(buf, want, got) == 0);
    free(want);
}

/* The good client gets KVP_ERR_NOT_FOUND for @p key. */
static void fixture_expect_missing(fixture_t *f, const kvp_key_t *key)
{
    uint8_t buf[16];

    ASSERT_STATUS(kvp_get(f->good, GOOD_NS, key, buf, sizeof(buf), NULL),
                  KVP_ERR_NOT_FOUND);
}

/* Everything the good client stored is intact; it can still put. */
static void fixture_check(fixture_t *f)
{
    uint8_t     *buf = malloc(MiB + 1);
    kvp_client_h fresh;
    kvp_stats_t  st;

    ASSERT(buf != NULL);
    ASSERT(kv_test_node_alive(&f->node));
    for (int i = 0; i < f->count; i++) {
        fixture_expect_block(f, f->good, i, buf, MiB + 1);
    }
    ASSERT_OK(kvp_stats(f->good, &st));
    ASSERT_EQ(st.evictions, 0);

    /* a new block, through the old connection and through a new one */
    fixture_put(f, 64 * KiB + (uint64_t)f->count);
    fresh = good_connect(&f->node);
    fixture_expect_block(f, fresh, f->count - 1, buf, MiB + 1);
    kvp_client_disconnect(fresh);
    free(buf);
}

/* Wait until the node counts @p want open connections. */
static void wait_connections(fixture_t *f, uint64_t want)
{
    kvp_stats_t st;

    for (uint64_t deadline = now_ms() + 10000;;) {
        ASSERT_OK(kvp_stats(f->good, &st));
        if (st.connections == want) {
            return;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "node has %" PRIu64 " connections, want %" PRIu64 "\n",
                    st.connections, want);
            ASSERT(!"connections did not drain");
        }
        sleep_ms(5);
    }
}

static void fixture_down(fixture_t *f)
{
    fixture_check(f);
    kvp_client_disconnect(f->good);
    node_down(&f->node);
}

/* ---------------------------------------------------------------------- */
/* The node's handshake                                                    */
/* ---------------------------------------------------------------------- */

static kvp_status_t send_hello(int fd, uint32_t version, const char *token)
{
    Kvpool__Hello hello = KVPOOL__HELLO__INIT;
    reply_t       r;
    kvp_status_t  status;

    hello.version     = version;
    hello.token.data  = (uint8_t *)token;
    hello.token.len   = token ? strlen(token) : 0;
    hello.client_name = "raw-test";
    status            = call(fd, KV_POOL_HELLO, &hello.base, NULL, 0, &r);
    if (status == KVP_OK) {
        Kvpool__HelloReply *reply =
            kvpool__hello_reply__unpack(NULL, r.hdr.msg_len, r.msg);
        ASSERT(reply != NULL);
        ASSERT_EQ(reply->version, KVP_PROTOCOL_VERSION);
        ASSERT_EQ(reply->max_payload, ARENA);
        kvpool__hello_reply__free_unpacked(reply, NULL);
    } else {
        expect_error(&r, status);
    }
    reply_free(&r);
    return status;
}

/* A raw connection past the handshake. */
static int raw_authed(const kv_test_node_t *node)
{
    int fd = raw_connect(node);

    ASSERT_OK(send_hello(fd, KVP_PROTOCOL_VERSION, TOKEN));
    return fd;
}

/* A Stats call on the raw connection works: it is still in sync. */
static void expect_stats_ok(int fd, kvp_stats_t *st)
{
    Kvpool__StatsRequest req = KVPOOL__STATS_REQUEST__INIT;
    Kvpool__StatsReply  *reply;
    reply_t              r;

    ASSERT_OK(call(fd, KV_POOL_STATS, &req.base, NULL, 0, &r));
    reply = kvpool__stats_reply__unpack(NULL, r.hdr.msg_len, r.msg);
    ASSERT(reply != NULL);
    ASSERT_EQ(reply->capacity_bytes, ARENA);
    if (st != NULL) {
        memset(st, 0, sizeof(*st));
        st->blocks      = reply->blocks;
        st->puts        = reply->puts;
        st->gets        = reply->gets;
        st->used_bytes  = reply->used_bytes;
        st->connections = reply->connections;
        st->rpc_errors  = reply->rpc_errors;
    }
    kvpool__stats_reply__free_unpacked(reply, NULL);
    reply_free(&r);
}

/* A namespace as the wire carries it (bytes); @p len -1 means strlen. */
static ProtobufCBinaryData ns_bin_len(const char *ns, ssize_t len)
{
    ProtobufCBinaryData bin = {len < 0 ? strlen(ns) : (size_t)len, (uint8_t *)ns};
    return bin;
}

static ProtobufCBinaryData ns_bin(const char *ns)
{
    return ns_bin_len(ns, -1);
}

static void put_request(Kvpool__PutRequest *req, const char *ns, const void *key,
                        size_t key_len, const void *payload, uint64_t len)
{
    Kvpool__PutRequest init = KVPOOL__PUT_REQUEST__INIT;

    *req          = init;
    req->ns       = ns_bin(ns);
    req->key.data = (uint8_t *)key;
    req->key.len  = key_len;
    req->checksum = payload ? kv_checksum(payload, len) : 0;
}

static void get_request(Kvpool__GetRequest *req, const char *ns, const void *key,
                        size_t key_len, uint64_t max_size)
{
    Kvpool__GetRequest init = KVPOOL__GET_REQUEST__INIT;

    *req          = init;
    req->ns       = ns_bin(ns);
    req->key.data = (uint8_t *)key;
    req->key.len  = key_len;
    req->max_size = max_size;
}

/* ---------------------------------------------------------------------- */
/* Framing errors                                                          */
/* ---------------------------------------------------------------------- */

static void test_bad_magic(void)
{
    fixture_t f;
    uint8_t   hdr[KV_FRAME_HEADER_LEN];
    int       fd;

    fixture_up(&f);

    /* before the handshake */
    fd = raw_connect(&f.node);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_HELLO, 5, 0, 0);
    memcpy(hdr, "XVP1", 4);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 5, 1);

    /* after it, on a request that would otherwise be fine */
    fd = raw_authed(&f.node);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_STATS, 6, 0, 0);
    hdr[3] = 0x32; /* "KVP2" */
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 6, 1);

    /* an all-zero header */
    fd = raw_authed(&f.node);
    memset(hdr, 0, sizeof(hdr));
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 0, 1);

    fixture_down(&f);
}

static void test_truncated_frames(void)
{
    fixture_t          f;
    uint8_t            hdr[KV_FRAME_HEADER_LEN];
    uint8_t           *payload = make_block(MiB, 1);
    Kvpool__PutRequest put;
    kvp_key_t          key = key_of("truncated");
    uint8_t           *msg;
    size_t             msg_len;
    int                fd;

    fixture_up(&f);
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, payload, MiB);
    msg = pack(&put.base, &msg_len);

    for (int rst = 0; rst < 2; rst++) {
        /* half a header, before the handshake */
        fd = raw_connect(&f.node);
        header(hdr, KV_FRAME_REQUEST, KV_POOL_HELLO, 1, 10, 0);
        send_all(fd, hdr, 20);
        rst ? close_rst(fd) : close(fd);

        /* a whole header whose message never comes */
        fd = raw_authed(&f.node);
        header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 2, (uint32_t)msg_len, MiB);
        send_all(fd, hdr, sizeof(hdr));
        rst ? close_rst(fd) : close(fd);

        /* half the message */
        fd = raw_authed(&f.node);
        send_all(fd, hdr, sizeof(hdr));
        send_all(fd, msg, msg_len / 2);
        rst ? close_rst(fd) : close(fd);

        /* the message and 300 KiB of the 1 MiB payload */
        fd = raw_authed(&f.node);
        send_all(fd, hdr, sizeof(hdr));
        send_all(fd, msg, msg_len);
        send_all(fd, payload, 300 * KiB);
        rst ? close_rst(fd) : close(fd);

        /* all but the last byte of the payload */
        fd = raw_authed(&f.node);
        send_all(fd, hdr, sizeof(hdr));
        send_all(fd, msg, msg_len);
        send_all(fd, payload, MiB - 1);
        rst ? close_rst(fd) : close(fd);
    }

    wait_connections(&f, 1);
    fixture_expect_missing(&f, &key); /* none of the cut puts was stored */
    free(msg);
    free(payload);
    fixture_down(&f);
}

static void test_msg_len_over_limit(void)
{
    fixture_t f;
    uint8_t   hdr[KV_FRAME_HEADER_LEN];
    int       fd;

    fixture_up(&f);

    fd = raw_authed(&f.node);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_GET, 11, KV_FRAME_MSG_MAX + 1, 0);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 11, 1);

    fd = raw_connect(&f.node); /* before the handshake, the largest value */
    header(hdr, KV_FRAME_REQUEST, KV_POOL_HELLO, 12, UINT32_MAX, 0);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 12, 1);

    /* exactly 1 MiB is allowed: a Stats request padded with an unknown
     * field (number 15, length-delimited) decodes and is answered */
    fd = raw_authed(&f.node);
    {
        uint8_t *msg = calloc(1, KV_FRAME_MSG_MAX);
        uint32_t len = KV_FRAME_MSG_MAX - 4; /* tag + 3-byte varint + len */
        reply_t  r;

        ASSERT(msg != NULL);
        msg[0] = 0x7a;
        msg[1] = (uint8_t)(0x80 | (len & 0x7f));
        msg[2] = (uint8_t)(0x80 | ((len >> 7) & 0x7f));
        msg[3] = (uint8_t)(len >> 14);
        send_frame_bytes(fd, KV_POOL_STATS, 13, msg, KV_FRAME_MSG_MAX, NULL, 0);
        ASSERT_EQ(read_reply(fd, &r), 0);
        ASSERT_EQ(r.hdr.id, 13);
        ASSERT_OK(r.hdr.status);
        reply_free(&r);
        free(msg);
    }
    expect_stats_ok(fd, NULL);
    close(fd);

    fixture_down(&f);
}

static void test_payload_len_over_limit(void)
{
    fixture_t f;
    uint8_t   hdr[KV_FRAME_HEADER_LEN];
    int       fd;

    fixture_up(&f);

    fd = raw_authed(&f.node);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 21, 0, KV_FRAME_PAYLOAD_MAX + 1);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 21, 1);

    fd = raw_authed(&f.node);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 22, 0, UINT64_MAX);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 22, 1);

    fixture_down(&f);
}

static void test_reply_kind_frame(void)
{
    fixture_t f;
    uint8_t   hdr[KV_FRAME_HEADER_LEN];
    int       fd;

    fixture_up(&f);

    /* a well-formed reply frame, sent by a client */
    fd = raw_authed(&f.node);
    header(hdr, KV_FRAME_RESPONSE, KV_POOL_STATS, 31, 0, 0);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 31, 0);

    /* a reply frame instead of the Hello */
    fd = raw_connect(&f.node);
    header(hdr, KV_FRAME_RESPONSE, KV_POOL_HELLO, 32, 0, 0);
    expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 32, 0);

    /* kinds that are neither, non-zero flags, non-zero reserved bytes */
    for (int variant = 0; variant < 4; variant++) {
        fd = raw_authed(&f.node);
        header(hdr, KV_FRAME_REQUEST, KV_POOL_STATS, 33, 0, 0);
        switch (variant) {
        case 0:
            hdr[4] = 0;
            break;
        case 1:
            hdr[4] = 3;
            break;
        case 2:
            hdr[5] = 1;
            break;
        default:
            hdr[29] = 1;
            break;
        }
        expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, 33, 1);
    }

    fixture_down(&f);
}

static void test_request_before_hello(void)
{
    Kvpool__StatsRequest stats = KVPOOL__STATS_REQUEST__INIT;
    Kvpool__GetRequest   get;
    fixture_t            f;
    uint8_t              hdr[KV_FRAME_HEADER_LEN];
    int                  fd;

    fixture_up(&f);

    fd = raw_connect(&f.node);
    send_frame(fd, KV_POOL_STATS, 41, &stats.base, NULL, 0);
    expect_frame_error(fd, KVP_ERR_AUTH, 41, 0);

    fd = raw_connect(&f.node);
    get_request(&get, GOOD_NS, f.keys[0].bytes, KVP_KEY_LEN, MiB);
    send_frame(fd, KV_POOL_GET, 42, &get.base, NULL, 0);
    expect_frame_error(fd, KVP_ERR_AUTH, 42, 0);

    /* a Put before the Hello: refused on its header, the payload unread */
    fd = raw_connect(&f.node);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 43, 0, 4096);
    expect_header_refused(fd, hdr, KVP_ERR_AUTH, 43, 0);

    /* an unknown method before the Hello */
    fd = raw_connect(&f.node);
    send_frame_bytes(fd, 77, 44, NULL, 0, NULL, 0);
    expect_frame_error(fd, KVP_ERR_AUTH, 44, 0);

    fixture_down(&f);
}

static void test_hello_wrong_version(void)
{
    fixture_t f;
    int       fd;

    fixture_up(&f);
    for (uint32_t version = 0; version < 4; version++) {
        if (version == KVP_PROTOCOL_VERSION) {
            continue;
        }
        fd = raw_connect(&f.node);
        ASSERT_STATUS(send_hello(fd, version, TOKEN), KVP_ERR_VERSION);
        expect_closed(fd);
        close(fd);
    }
    fd = raw_connect(&f.node);
    ASSERT_STATUS(send_hello(fd, UINT32_MAX, TOKEN), KVP_ERR_VERSION);
    expect_closed(fd);
    close(fd);

    /* the right version still works */
    fd = raw_connect(&f.node);
    ASSERT_OK(send_hello(fd, KVP_PROTOCOL_VERSION, TOKEN));
    expect_stats_ok(fd, NULL);
    close(fd);
    fixture_down(&f);
}

static void test_hello_wrong_token(void)
{
    static const char *const wrong[] = {"",         "s3creT",  "s3cre",
                                        "s3cret\n", "s3cret2", "x"};
    fixture_t                f;
    char                     long_token[1001];
    int                      fd;

    fixture_up(&f);
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        fd = raw_connect(&f.node);
        ASSERT_STATUS(send_hello(fd, KVP_PROTOCOL_VERSION, wrong[i]), KVP_ERR_AUTH);
        expect_closed(fd);
        close(fd);
    }
    memset(long_token, 's', sizeof(long_token) - 1);
    long_token[sizeof(long_token) - 1] = '\0';
    fd                                 = raw_connect(&f.node);
    ASSERT_STATUS(send_hello(fd, KVP_PROTOCOL_VERSION, long_token), KVP_ERR_AUTH);
    expect_closed(fd);
    close(fd);

    /* a token with a NUL inside: its bytes are compared, not a C string */
    fd = raw_connect(&f.node);
    {
        Kvpool__Hello hello = KVPOOL__HELLO__INIT;
        reply_t       r;
        hello.version    = KVP_PROTOCOL_VERSION;
        hello.token.data = (uint8_t *)"s3cret\0extra";
        hello.token.len  = 12;
        call(fd, KV_POOL_HELLO, &hello.base, NULL, 0, &r);
        expect_error(&r, KVP_ERR_AUTH);
        reply_free(&r);
    }
    expect_closed(fd);
    close(fd);

    /* after a refused handshake, the right one works on a new connection */
    fd = raw_authed(&f.node);
    expect_stats_ok(fd, NULL);
    close(fd);
    fixture_down(&f);
}

/* ---------------------------------------------------------------------- */
/* Request errors: the connection stays usable                             */
/* ---------------------------------------------------------------------- */

static void test_unknown_method(void)
{
    static const uint16_t methods[] = {KV_POOL_METHOD_COUNT, KV_POOL_METHOD_COUNT + 1, 1000, UINT16_MAX};
    fixture_t             f;
    kvp_stats_t           st;
    int                   fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        uint64_t id = next_id++;

        send_frame_bytes(fd, methods[i], id, "\x08\x01", 2, NULL, 0);
        expect_error_reply(fd, id, KVP_ERR_UNKNOWN_METHOD);
        expect_stats_ok(fd, &st); /* still usable */
    }
    ASSERT_EQ(st.connections, 2);
    close(fd);
    fixture_down(&f);
}

static void test_undecodable_message(void)
{
    /* field 1, length-delimited, 127 bytes announced, none there */
    static const uint8_t truncated[] = {0x0a, 0x7f};
    /* an 11-byte varint: longer than any varint may be */
    static const uint8_t bad_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    /* field 2 of GetRequest (bytes) sent as a varint: wrong wire type */
    static const uint8_t wrong_type[] = {0x10, 0x05};
    fixture_t            f;
    uint8_t             *payload = make_block(8192, 3);
    int                  fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    for (uint16_t method = KV_POOL_PUT; method <= KV_POOL_DELETE; method++) {
        const void *msgs[] = {truncated, bad_varint};
        size_t      lens[] = {sizeof(truncated), sizeof(bad_varint)};
        for (int m = 0; m < 2; m++) {
            uint64_t id   = next_id++;
            uint64_t plen = method == KV_POOL_PUT ? 8192 : 0;

            send_frame_bytes(fd, method, id, msgs[m], lens[m], plen ? payload : NULL,
                             plen);
            expect_error_reply(fd, id, KVP_ERR_PROTOCOL);
            expect_stats_ok(fd, NULL); /* in sync, payload and all */
        }
    }
    {
        reply_t  r;
        uint64_t id = next_id++;
        send_frame_bytes(fd, KV_POOL_GET, id, wrong_type, sizeof(wrong_type), NULL, 0);
        ASSERT_EQ(read_reply(fd, &r), 0);
        ASSERT(r.hdr.status == KVP_ERR_PROTOCOL || r.hdr.status == KVP_ERR_INVALID_PARAM);
        expect_error(&r, (kvp_status_t)r.hdr.status);
        reply_free(&r);
        expect_stats_ok(fd, NULL);
    }
    close(fd);

    /* an undecodable Hello: refused, and a good Hello may follow */
    fd = raw_connect(&f.node);
    send_frame_bytes(fd, KV_POOL_HELLO, 51, truncated, sizeof(truncated), NULL, 0);
    expect_error_reply(fd, 51, KVP_ERR_PROTOCOL);
    ASSERT_OK(send_hello(fd, KVP_PROTOCOL_VERSION, TOKEN));
    expect_stats_ok(fd, NULL);
    close(fd);

    free(payload);
    fixture_down(&f);
}

static void test_payload_on_method_without_payload(void)
{
    static const uint16_t methods[] = {KV_POOL_HELLO, KV_POOL_GET,   KV_POOL_EXISTS, KV_POOL_DELETE,
                                       KV_POOL_STATS, KV_POOL_METHOD_COUNT, 999};
    fixture_t             f;
    uint8_t               hdr[KV_FRAME_HEADER_LEN];
    int                   fd;

    fixture_up(&f);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        uint64_t id = next_id++;

        fd = raw_authed(&f.node);
        /* only the header: it is refused before any payload is read */
        header(hdr, KV_FRAME_REQUEST, methods[i], id, 0, 16);
        expect_header_refused(fd, hdr, KVP_ERR_PROTOCOL, id, 0);
    }
    fixture_down(&f);
}

static void test_bad_namespace_and_key(void)
{
    char        ns_129[130], ns_128[129];
    uint8_t     key17[17], *payload = make_block(4096, 6);
    fixture_t   f;
    kvp_stats_t before, after;
    int         fd;

    memset(ns_129, 'n', 129);
    ns_129[129] = '\0';
    memset(ns_128, 'm', 128);
    ns_128[128] = '\0';
    fill_random(key17, sizeof(key17), 17);

    fixture_up(&f);
    fd = raw_authed(&f.node);
    expect_stats_ok(fd, &before);

    struct {
        const char *ns;
        ssize_t     ns_len; /* -1: strlen */
        size_t      key_len;
    } bad[] = {{"", -1, 16},     {ns_129, -1, 16}, {"go\0od", 5, 16},
               {GOOD_NS, -1, 15}, {GOOD_NS, -1, 17}, {GOOD_NS, -1, 0}};

    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        Kvpool__PutRequest  put;
        Kvpool__GetRequest  get;
        Kvpool__KeysRequest keys = KVPOOL__KEYS_REQUEST__INIT;
        ProtobufCBinaryData list[2];

        put_request(&put, bad[b].ns, key17, bad[b].key_len, payload, 4096);
        put.ns = ns_bin_len(bad[b].ns, bad[b].ns_len);
        call_expect(fd, KV_POOL_PUT, &put.base, payload, 4096, KVP_ERR_INVALID_PARAM);
        get_request(&get, bad[b].ns, key17, bad[b].key_len, MiB);
        get.ns = ns_bin_len(bad[b].ns, bad[b].ns_len);
        call_expect(fd, KV_POOL_GET, &get.base, NULL, 0, KVP_ERR_INVALID_PARAM);

        /* a batch with one good key first and the bad one second */
        list[0].data = f.keys[0].bytes;
        list[0].len  = KVP_KEY_LEN;
        list[1].data = key17;
        list[1].len  = bad[b].key_len;
        keys.ns      = ns_bin_len(bad[b].ns, bad[b].ns_len);
        keys.keys    = list;
        /* a bad namespace with the good key; or the good key, then a bad one */
        keys.n_keys = bad[b].key_len == KVP_KEY_LEN ? 1 : 2;
        call_expect(fd, KV_POOL_EXISTS, &keys.base, NULL, 0, KVP_ERR_INVALID_PARAM);
        call_expect(fd, KV_POOL_DELETE, &keys.base, NULL, 0, KVP_ERR_INVALID_PARAM);
    }

    /* nothing was stored, nothing deleted (f.keys[0] was in every batch) */
    expect_stats_ok(fd, &after);
    ASSERT_EQ(after.blocks, before.blocks);
    ASSERT_EQ(after.puts, before.puts);
    ASSERT_EQ(after.used_bytes, before.used_bytes);
    ASSERT_EQ(after.rpc_errors, before.rpc_errors + 4 * sizeof(bad) / sizeof(bad[0]));

    /* the limits themselves are fine: a 128-byte namespace, a 16-byte key */
    {
        Kvpool__PutRequest put;
        Kvpool__GetRequest get;
        reply_t            r;

        put_request(&put, ns_128, key17, KVP_KEY_LEN, payload, 4096);
        call_expect(fd, KV_POOL_PUT, &put.base, payload, 4096, KVP_OK);
        get_request(&get, ns_128, key17, KVP_KEY_LEN, 4096);
        ASSERT_OK(call(fd, KV_POOL_GET, &get.base, NULL, 0, &r));
        ASSERT_EQ(r.hdr.payload_len, 4096);
        ASSERT(memcmp(r.payload, payload, 4096) == 0);
        reply_free(&r);
    }
    close(fd);
    free(payload);
    fixture_down(&f);
}

static void test_exists_too_many_keys(void)
{
    fixture_t            f;
    ProtobufCBinaryData *list = calloc(KVP_BATCH_MAX + 1, sizeof(*list));
    kvp_key_t           *keys = calloc(KVP_BATCH_MAX + 1, sizeof(*keys));
    Kvpool__KeysRequest  req  = KVPOOL__KEYS_REQUEST__INIT;
    kvp_stats_t          before, after;
    reply_t              r;
    int                  fd;

    ASSERT(list != NULL && keys != NULL);
    fixture_up(&f);
    /* the good client's blocks first, then keys that are not stored */
    for (size_t i = 0; i <= KVP_BATCH_MAX; i++) {
        keys[i]      = i < GOOD_BLOCKS ? f.keys[i] : key_of("absent-%zu", i);
        list[i].data = keys[i].bytes;
        list[i].len  = KVP_KEY_LEN;
    }
    req.ns   = ns_bin(GOOD_NS);
    req.keys = list;

    fd = raw_authed(&f.node);
    expect_stats_ok(fd, &before);
    req.n_keys = KVP_BATCH_MAX + 1;
    call_expect(fd, KV_POOL_EXISTS, &req.base, NULL, 0, KVP_ERR_INVALID_PARAM);
    call_expect(fd, KV_POOL_DELETE, &req.base, NULL, 0, KVP_ERR_INVALID_PARAM);
    expect_stats_ok(fd, &after);
    ASSERT_EQ(after.blocks, before.blocks); /* the refused delete did nothing */

    /* the limit itself works */
    req.n_keys = KVP_BATCH_MAX;
    ASSERT_OK(call(fd, KV_POOL_EXISTS, &req.base, NULL, 0, &r));
    {
        Kvpool__ExistsReply *reply =
            kvpool__exists_reply__unpack(NULL, r.hdr.msg_len, r.msg);
        ASSERT(reply != NULL);
        ASSERT_EQ(reply->present, GOOD_BLOCKS);
        kvpool__exists_reply__free_unpacked(reply, NULL);
    }
    reply_free(&r);
    close(fd);

    free(list);
    free(keys);
    fixture_down(&f);
}

static void test_put_bad_checksum(void)
{
    fixture_t          f;
    Kvpool__PutRequest put;
    Kvpool__GetRequest get;
    kvp_key_t          key     = key_of("bad-checksum");
    uint8_t           *payload = make_block(100000, 8);
    kvp_stats_t        before, after;
    int                fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    expect_stats_ok(fd, &before);

    /* a new key */
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, payload, 100000);
    put.checksum ^= 1;
    call_expect(fd, KV_POOL_PUT, &put.base, payload, 100000, KVP_ERR_CHECKSUM);
    /* the right checksum over other bytes (a bit flipped in transit) */
    put.checksum ^= 1;
    payload[50000] ^= 0x10;
    call_expect(fd, KV_POOL_PUT, &put.base, payload, 100000, KVP_ERR_CHECKSUM);
    payload[50000] ^= 0x10;
    /* no checksum at all */
    put.checksum = 0;
    call_expect(fd, KV_POOL_PUT, &put.base, payload, 100000, KVP_ERR_CHECKSUM);
    get_request(&get, GOOD_NS, key.bytes, KVP_KEY_LEN, MiB);
    call_expect(fd, KV_POOL_GET, &get.base, NULL, 0, KVP_ERR_NOT_FOUND);

    /* over a stored key: the stored block stays as it was */
    put_request(&put, GOOD_NS, f.keys[1].bytes, KVP_KEY_LEN, payload, 100000);
    put.checksum ^= 0x8000000000000000ull;
    call_expect(fd, KV_POOL_PUT, &put.base, payload, 100000, KVP_ERR_CHECKSUM);

    /* in a namespace that does not exist yet */
    put_request(&put, "fresh-ns", key.bytes, KVP_KEY_LEN, payload, 100000);
    put.checksum ^= 2;
    call_expect(fd, KV_POOL_PUT, &put.base, payload, 100000, KVP_ERR_CHECKSUM);

    /* an empty put: no payload at all */
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, NULL, 0);
    call_expect(fd, KV_POOL_PUT, &put.base, NULL, 0, KVP_ERR_INVALID_PARAM);

    expect_stats_ok(fd, &after);
    ASSERT_EQ(after.puts, before.puts);
    ASSERT_EQ(after.blocks, before.blocks);
    ASSERT_EQ(after.used_bytes, before.used_bytes);

    /* and the right checksum is accepted on the same connection */
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, payload, 100000);
    call_expect(fd, KV_POOL_PUT, &put.base, payload, 100000, KVP_OK);
    {
        reply_t r;
        ASSERT_OK(call(fd, KV_POOL_GET, &get.base, NULL, 0, &r));
        ASSERT_EQ(r.hdr.payload_len, 100000);
        ASSERT(memcmp(r.payload, payload, 100000) == 0);
        reply_free(&r);
    }
    close(fd);
    free(payload);
    fixture_down(&f);
}

static void test_put_larger_than_arena(void)
{
    static const uint64_t sizes[] = {ARENA + 1, ARENA + 4096, KV_FRAME_PAYLOAD_MAX};
    fixture_t             f;
    Kvpool__PutRequest    put;
    Kvpool__GetRequest    get;
    kvp_key_t             key = key_of("too-large");
    kvp_stats_t           before, after;
    uint8_t               hdr[KV_FRAME_HEADER_LEN], *msg;
    size_t                msg_len;
    int                   fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    expect_stats_ok(fd, &before);
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, NULL, 0);
    put.checksum = 12345;
    msg          = pack(&put.base, &msg_len);

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t id = next_id++;

        header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, id, (uint32_t)msg_len, sizes[i]);
        send_all(fd, hdr, sizeof(hdr));
        send_all(fd, msg, msg_len);
        send_zeros(fd, sizes[i]); /* read and dropped by the node */
        expect_error_reply(fd, id, KVP_ERR_TOO_LARGE);
        expect_stats_ok(fd, NULL); /* the stream is in sync */
    }
    get_request(&get, GOOD_NS, key.bytes, KVP_KEY_LEN, MiB);
    call_expect(fd, KV_POOL_GET, &get.base, NULL, 0, KVP_ERR_NOT_FOUND);
    expect_stats_ok(fd, &after);
    ASSERT_EQ(after.puts, before.puts);
    ASSERT_EQ(after.blocks, before.blocks);

    /* cut in the middle of a dropped payload */
    {
        int cut = raw_authed(&f.node);
        header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, next_id++, (uint32_t)msg_len, ARENA * 2);
        send_all(cut, hdr, sizeof(hdr));
        send_all(cut, msg, msg_len);
        send_zeros(cut, ARENA / 2);
        close_rst(cut);
    }
    expect_stats_ok(fd, NULL);
    close(fd);
    free(msg);
    fixture_down(&f);
}

static void test_get_missing(void)
{
    fixture_t          f;
    Kvpool__GetRequest get;
    kvp_key_t          key = key_of("missing");
    kvp_stats_t        before, after;
    int                fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    expect_stats_ok(fd, &before);
    get_request(&get, GOOD_NS, key.bytes, KVP_KEY_LEN, MiB);
    call_expect(fd, KV_POOL_GET, &get.base, NULL, 0, KVP_ERR_NOT_FOUND);
    get_request(&get, "no-such-ns", f.keys[0].bytes, KVP_KEY_LEN, MiB);
    call_expect(fd, KV_POOL_GET, &get.base, NULL, 0, KVP_ERR_NOT_FOUND);
    /* too small a buffer: the size comes back in the ErrorReply */
    get_request(&get, GOOD_NS, f.keys[0].bytes, KVP_KEY_LEN, MiB - 1);
    {
        reply_t             r;
        Kvpool__ErrorReply *err;
        ASSERT_STATUS(call(fd, KV_POOL_GET, &get.base, NULL, 0, &r), KVP_ERR_BUFFER_TOO_SMALL);
        ASSERT_EQ(r.hdr.payload_len, 0);
        err = kvpool__error_reply__unpack(NULL, r.hdr.msg_len, r.msg);
        ASSERT(err != NULL);
        ASSERT_EQ(err->size, MiB);
        kvpool__error_reply__free_unpacked(err, NULL);
        reply_free(&r);
    }
    expect_stats_ok(fd, &after);
    ASSERT_EQ(after.gets, before.gets + 3);
    ASSERT_EQ(after.rpc_errors, before.rpc_errors + 3);

    fixture_expect_missing(&f, &key); /* the same through the library */
    close(fd);
    fixture_down(&f);
}

/* ---------------------------------------------------------------------- */
/* Garbage, abrupt closes, a client that never reads                       */
/* ---------------------------------------------------------------------- */

/* Send @p len random bytes; stop quietly when the node hangs up. */
static void send_garbage(int fd, uint64_t len, uint64_t seed)
{
    uint8_t *junk = make_block(len, seed);

    (void)send_try(fd, junk, (size_t)len);
    free(junk);
}

/* After garbage: at most one error reply (id 0), then the close. */
static void expect_garbage_refused(int fd)
{
    reply_t r;

    if (read_reply(fd, &r) == 0) {
        ASSERT(r.hdr.status < 0);
        ASSERT_EQ(r.hdr.id, 0);
        reply_free(&r);
        expect_closed(fd);
    } /* else: reset before the reply could be read, also a refusal */
}

static void test_random_bytes(void)
{
    fixture_t f;
    int       fd;

    fixture_up(&f);
    for (int round = 0; round < 3; round++) {
        fd = round == 0 ? raw_connect(&f.node) : raw_authed(&f.node);
        send_garbage(fd, MiB, 100 + (uint64_t)round);
        expect_garbage_refused(fd);
        close(fd);
        ASSERT(kv_test_node_alive(&f.node));
    }
    /* garbage that starts with the magic: the rest of the header is junk */
    fd = raw_authed(&f.node);
    {
        uint8_t *junk = make_block(MiB, 7);
        memcpy(junk, "KVP1", 4);
        (void)send_try(fd, junk, MiB);
        free(junk);
    }
    expect_garbage_refused(fd);
    close(fd);

    wait_connections(&f, 1);
    fixture_down(&f);
}

/* Frames with a valid header and random messages, methods and sizes. */
static void test_random_frames(void)
{
    fixture_t f;
    rng_t     rng;
    uint8_t   msg[600], *payload = make_block(64 * KiB, 5);
    int       fd, answered = 0, reconnects = 0;

    fixture_up(&f);
    rng_seed(&rng, 2024);
    fd = raw_authed(&f.node);
    for (int i = 0; i < 400; i++) {
        uint16_t method  = (uint16_t)rng_range(&rng, 0, KV_POOL_METHOD_COUNT + 1);
        size_t   msg_len = (size_t)rng_range(&rng, 0, sizeof(msg));
        uint64_t plen    = method == KV_POOL_PUT ? rng_range(&rng, 0, 64 * KiB) : 0;
        uint64_t id      = next_id++;
        reply_t  r;

        fill_random(msg, msg_len, rng_next(&rng));
        send_frame_bytes(fd, method, id, msg, msg_len, payload, plen);
        ASSERT_EQ(read_reply(fd, &r), 0);
        if (r.hdr.status < 0) {
            Kvpool__ErrorReply *err =
                kvpool__error_reply__unpack(NULL, r.hdr.msg_len, r.msg);
            ASSERT(err != NULL);
            kvpool__error_reply__free_unpacked(err, NULL);
        }
        ASSERT(r.hdr.id == id);
        answered++;
        if (method == KV_POOL_HELLO && r.hdr.status < 0 &&
            (r.hdr.status == KVP_ERR_VERSION || r.hdr.status == KVP_ERR_AUTH)) {
            /* a random Hello may carry a wrong version or token: closed */
            reply_free(&r);
            expect_closed(fd);
            close(fd);
            fd = raw_authed(&f.node);
            reconnects++;
            continue;
        }
        reply_free(&r);
    }
    expect_stats_ok(fd, NULL);
    close(fd);
    fprintf(stderr, "random frames: %d answered, %d reconnects\n", answered, reconnects);
    free(payload);
    wait_connections(&f, 1);
    fixture_down(&f);
}

static void test_abrupt_connections(void)
{
    enum { N = 50 };
    fixture_t f;
    int       fds[N];
    uint8_t   hdr[KV_FRAME_HEADER_LEN], *msg, *payload = make_block(256 * KiB, 4);
    Kvpool__PutRequest put;
    Kvpool__GetRequest get;
    kvp_key_t          key = key_of("abrupt");
    size_t             msg_len;

    fixture_up(&f);
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, payload, 256 * KiB);
    msg = pack(&put.base, &msg_len);
    get_request(&get, GOOD_NS, f.keys[0].bytes, KVP_KEY_LEN, MiB);

    /* all open at once, each stopped somewhere in a frame */
    for (int i = 0; i < N; i++) {
        switch (i % 6) {
        case 0: /* part of the Hello's header */
            fds[i] = raw_connect(&f.node);
            header(hdr, KV_FRAME_REQUEST, KV_POOL_HELLO, 1, 8, 0);
            send_all(fds[i], hdr, 1 + (size_t)i % 39);
            break;
        case 1: /* a Put's header */
            fds[i] = raw_authed(&f.node);
            header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 2, (uint32_t)msg_len, 256 * KiB);
            send_all(fds[i], hdr, sizeof(hdr));
            break;
        case 2: /* into the Put's message */
            fds[i] = raw_authed(&f.node);
            header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 3, (uint32_t)msg_len, 256 * KiB);
            send_all(fds[i], hdr, sizeof(hdr));
            send_all(fds[i], msg, 1 + (size_t)i % (msg_len - 1));
            break;
        case 3: /* into the Put's payload */
            fds[i] = raw_authed(&f.node);
            header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, 4, (uint32_t)msg_len, 256 * KiB);
            send_all(fds[i], hdr, sizeof(hdr));
            send_all(fds[i], msg, msg_len);
            send_all(fds[i], payload, 1000 * (size_t)i);
            break;
        case 4: /* a whole Get of a 1 MiB block, whose reply is never read */
            fds[i] = raw_authed(&f.node);
            send_frame(fds[i], KV_POOL_GET, 5, &get.base, NULL, 0);
            break;
        default: /* a Get cut after its header */
            fds[i] = raw_authed(&f.node);
            send_frame(fds[i], KV_POOL_GET, 6, &get.base, NULL, 0);
            header(hdr, KV_FRAME_REQUEST, KV_POOL_GET, 7, 30, 0);
            send_all(fds[i], hdr, sizeof(hdr));
            break;
        }
    }
    ASSERT(kv_test_node_alive(&f.node));
    for (int i = 0; i < N; i++) {
        if (i % 2) {
            close_rst(fds[i]);
        } else {
            close(fds[i]);
        }
    }

    wait_connections(&f, 1);
    fixture_expect_missing(&f, &key);
    /* block 0 was pinned by Gets whose replies died: it can be replaced */
    {
        uint8_t *data = make_block(MiB, f.seeds[0] + 1);
        ASSERT_OK(kvp_put(f.good, GOOD_NS, &f.keys[0], data, MiB));
        f.seeds[0]++;
        free(data);
    }
    free(msg);
    free(payload);
    fixture_down(&f);
}

/*
 * Send the Get @p get over and over, in batches of @p batch frames with ids
 * from @p first_id, never reading a reply, until @p max Gets went out or
 * the node took nothing for 300 ms.  The socket is left non-blocking.
 * @return the number of Gets sent (whole batches).
 */
static uint64_t send_gets_unread(int fd, const Kvpool__GetRequest *get, uint64_t first_id,
                                 size_t batch, uint64_t max)
{
    size_t   msg_len, frame_len;
    uint8_t *msg = pack(&get->base, &msg_len), *frames;
    uint64_t sent = 0;
    int      flags;

    frame_len = KV_FRAME_HEADER_LEN + msg_len;
    frames    = malloc(frame_len * batch);
    ASSERT(frames != NULL);
    for (size_t i = 0; i < batch; i++) {
        header(frames + i * frame_len, KV_FRAME_REQUEST, KV_POOL_GET, first_id + i,
               (uint32_t)msg_len, 0);
        memcpy(frames + i * frame_len + KV_FRAME_HEADER_LEN, msg, msg_len);
    }
    flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    for (size_t off = 0; sent < max;) {
        ssize_t n = send(fd, frames + off, frame_len * batch - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            if (off == frame_len * batch) {
                sent += batch;
                off = 0;
            }
            continue;
        }
        ASSERT(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
        struct pollfd pfd = {fd, POLLOUT, 0};
        if (poll(&pfd, 1, 300) == 0) {
            break; /* stuck for 300 ms: the node no longer reads us */
        }
    }
    free(frames);
    free(msg);
    return sent;
}

static void test_unread_replies(void)
{
    fixture_t          f;
    Kvpool__GetRequest get;
    uint64_t           sent, t0;
    kvp_stats_t        st;
    int                fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    get_request(&get, GOOD_NS, f.keys[0].bytes, KVP_KEY_LEN, MiB); /* 1 MiB */

    /* send Gets, never reading, until the node stops taking them */
    sent = send_gets_unread(fd, &get, 100, 256, 200000);
    fprintf(stderr,
            "unread replies: %" PRIu64 " Gets of 1 MiB sent before the "
            "node stopped reading\n",
            sent);
    ASSERT(sent < 200000); /* the node pushed back */
    ASSERT(kv_test_node_alive(&f.node));

    /* the node keeps serving others, promptly */
    t0 = now_ms();
    fixture_check(&f);
    ASSERT_OK(kvp_stats(f.good, &st));
    ASSERT_EQ(st.connections, 2);
    ASSERT_LE(now_ms() - t0, 5000);

    /* the block the stuck replies pin can be deleted meanwhile */
    {
        size_t deleted = 0;
        ASSERT_OK(kvp_delete(f.good, GOOD_NS, &f.keys[0], 1, &deleted));
        ASSERT_EQ(deleted, 1);
        fixture_expect_missing(&f, &f.keys[0]);
    }

    /* the reader goes away: its connection and its pins are released */
    close_rst(fd);
    wait_connections(&f, 1);

    /* the whole arena is usable again: a block of its full size fits only
     * if the deleted, once-pinned block was freed */
    {
        uint8_t  *big = make_block(ARENA, 77), *back = malloc(ARENA);
        kvp_key_t key = key_of("whole-arena");
        uint64_t  got = 0;
        ASSERT(back != NULL);
        ASSERT_OK(kvp_put(f.good, GOOD_NS, &key, big, ARENA));
        ASSERT_OK(kvp_get(f.good, GOOD_NS, &key, back, ARENA, &got));
        ASSERT_EQ(got, ARENA);
        ASSERT(memcmp(big, back, ARENA) == 0);
        free(big);
        free(back);
        kvp_client_disconnect(f.good);
        node_down(&f.node);
    }
}

/*
 * Blocks pinned by replies that a client does not read must be neither
 * evicted nor overwritten while other clients replace them and fill the
 * arena: when the reader finally reads, every byte is right.  A put that could only fit
 * by evicting pinned blocks gets KVP_ERR_NO_SPACE and evicts nothing.
 */
static void test_pinned_blocks_under_pressure(void)
{
    enum { PINNED = 24, ROUNDS = 3, REPLACED = 4 };
    fixture_t          f;
    kvp_key_t          keys[PINNED];
    uint8_t           *blocks[PINNED], *replaced[REPLACED];
    Kvpool__GetRequest get;
    kvp_stats_t        st0, st;
    int                fd;

    fixture_up(&f);
    for (int i = 0; i < PINNED; i++) {
        keys[i]   = key_of("pin-%d", i);
        blocks[i] = make_block(MiB, 7000 + (uint64_t)i);
        ASSERT_OK(kvp_put(f.good, GOOD_NS, &keys[i], blocks[i], MiB));
    }
    ASSERT_OK(kvp_stats(f.good, &st0));
    ASSERT_EQ(st0.evictions, 0);

    /* a reader asks for every pinned block three times, and does not read */
    fd = raw_authed(&f.node);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PINNED; i++) {
            get_request(&get, GOOD_NS, keys[i].bytes, KVP_KEY_LEN, MiB);
            send_frame(fd, KV_POOL_GET, (uint64_t)(r * PINNED + i + 1), &get.base, NULL, 0);
        }
    }
    for (uint64_t deadline = now_ms() + 10000;;) {
        ASSERT_OK(kvp_stats(f.good, &st));
        if (st.gets >= st0.gets + 2 * PINNED) {
            break; /* rounds 1 and 2 are queued: every block has a pin */
        }
        ASSERT(now_ms() < deadline);
        sleep_ms(2);
    }

    /* a block that fits only by evicting pinned ones: refused, and the
     * unpinned blocks are not evicted for nothing */
    {
        uint8_t  *big = make_block(16 * MiB, 1);
        kvp_key_t key = key_of("too-big-while-pinned");
        ASSERT_STATUS(kvp_put(f.good, GOOD_NS, &key, big, 16 * MiB), KVP_ERR_NO_SPACE);
        free(big);
        ASSERT_OK(kvp_stats(f.good, &st));
        ASSERT_EQ(st.evictions, 0);
        for (int i = 0; i < GOOD_BLOCKS; i++) {
            uint8_t *buf = malloc(MiB);
            ASSERT(buf != NULL);
            fixture_expect_block(&f, f.good, i, buf, MiB);
            free(buf);
        }
    }

    /* replace four pinned blocks: readers of the old ones keep the old
     * bytes, new readers get the new ones */
    for (int i = 0; i < REPLACED; i++) {
        replaced[i] = make_block(MiB, 8000 + (uint64_t)i);
        ASSERT_OK(kvp_put(f.good, GOOD_NS, &keys[i], replaced[i], MiB));
    }

    /* churn the unpinned room: evictions and reuse around the pins */
    for (int i = 0; i < 12; i++) {
        uint8_t *data = make_block(2 * MiB - 4096 * (uint64_t)(i % 3), 500 + (uint64_t)i);
        kvp_key_t key = key_of("churn-%d", i);
        ASSERT_OK(
            kvp_put(f.good, GOOD_NS, &key, data, 2 * MiB - 4096 * (uint64_t)(i % 3)));
        free(data);
    }
    ASSERT_OK(kvp_stats(f.good, &st));
    ASSERT(st.evictions > 0);

    /* the reader reads now: every reply carries its block's exact bytes */
    for (int n = 0; n < ROUNDS * PINNED; n++) {
        reply_t r;
        int     i;
        ASSERT_EQ(read_reply(fd, &r), 0);
        ASSERT_OK(r.hdr.status);
        ASSERT(r.hdr.id >= 1 && r.hdr.id <= ROUNDS * PINNED);
        i = (int)((r.hdr.id - 1) % PINNED);
        ASSERT_EQ(r.hdr.payload_len, MiB);
        if (i < REPLACED && r.hdr.id > 2 * PINNED &&
            memcmp(r.payload, replaced[i], MiB) == 0) {
            reply_free(&r); /* round 3 may have been read after the replace */
            continue;
        }
        if (memcmp(r.payload, blocks[i], MiB) != 0) {
            fprintf(stderr, "reply %" PRIu64 " (block pin-%d) has wrong bytes\n",
                    r.hdr.id, i);
            ASSERT(!"a pinned block changed under its reader");
        }
        reply_free(&r);
    }
    close(fd);

    /* the pinned blocks were never evicted */
    {
        size_t   present = 0;
        uint8_t *buf     = malloc(MiB);
        ASSERT(buf != NULL);
        /* (the replacements were not pinned: the churn may evict them) */
        ASSERT_OK(
            kvp_exists(f.good, GOOD_NS, keys + REPLACED, PINNED - REPLACED, &present));
        ASSERT_EQ(present, PINNED - REPLACED);
        for (int i = 0; i < PINNED; i++) {
            uint64_t     got    = 0;
            kvp_status_t status = kvp_get(f.good, GOOD_NS, &keys[i], buf, MiB, &got);
            if (i < REPLACED && status == KVP_ERR_NOT_FOUND) {
                continue;
            }
            ASSERT_OK(status);
            ASSERT_EQ(got, MiB);
            ASSERT(memcmp(buf, i < REPLACED ? replaced[i] : blocks[i], MiB) == 0);
        }
        free(buf);
    }
    wait_connections(&f, 1);

    /* with the pins gone, the large block fits */
    {
        uint8_t  *big = make_block(16 * MiB, 1);
        kvp_key_t key = key_of("too-big-while-pinned");
        ASSERT_OK(kvp_put(f.good, GOOD_NS, &key, big, 16 * MiB));
        free(big);
    }
    for (int i = 0; i < PINNED; i++) {
        free(blocks[i]);
    }
    for (int i = 0; i < REPLACED; i++) {
        free(replaced[i]);
    }
    kvp_client_disconnect(f.good);
    node_down(&f.node);
}

/* A request that arrives after its own deadline is refused, not run. */
static void test_expired_deadline(void)
{
    fixture_t          f;
    Kvpool__PutRequest put;
    kvp_key_t          key     = key_of("late-put");
    uint8_t           *payload = make_block(64 * KiB, 12), *msg;
    uint8_t            hdr[KV_FRAME_HEADER_LEN];
    size_t             msg_len;
    uint64_t           id = next_id++;
    int                fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, payload, 64 * KiB);
    msg = pack(&put.base, &msg_len);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, id, (uint32_t)msg_len, 64 * KiB);
    hdr[20] = 20; /* timeout_ms = 20 */
    send_all(fd, hdr, sizeof(hdr));
    send_all(fd, msg, msg_len);
    sleep_ms(150); /* the rest of the frame comes late on purpose */
    send_all(fd, payload, 64 * KiB);
    expect_error_reply(fd, id, KVP_ERR_TIMED_OUT);
    fixture_expect_missing(&f, &key);
    expect_stats_ok(fd, NULL);
    close(fd);
    free(msg);
    free(payload);
    fixture_down(&f);
}

/* A connection that never completes its handshake is closed (~5 s). */
static void test_silent_connection_closed(void)
{
    fixture_t f;
    uint64_t  t0;
    int       fd, half;
    uint8_t   hdr[KV_FRAME_HEADER_LEN];

    fixture_up(&f);
    t0   = now_ms();
    fd   = raw_connect(&f.node); /* says nothing */
    half = raw_connect(&f.node); /* half a Hello header */
    header(hdr, KV_FRAME_REQUEST, KV_POOL_HELLO, 1, 10, 0);
    send_all(half, hdr, 20);
    wait_connections(&f, 3);
    expect_closed(fd);
    expect_closed(half);
    fprintf(stderr, "silent connections closed after %" PRIu64 " ms\n", now_ms() - t0);
    ASSERT(now_ms() - t0 >= 4000);
    ASSERT_LE(now_ms() - t0, RECV_TIMEOUT_S * 1000 - 1000);
    close(fd);
    close(half);
    wait_connections(&f, 1);
    fixture_down(&f);
}

/*
 * A refused Put must not cost the cache anything (node_service.c: "a
 * refused request changes nothing that is stored"): not the new block, and
 * not the blocks that would have been evicted to make room for it.  These
 * Puts announce a block as large as the whole arena, so making room for
 * them means evicting everything the good client stored.
 */
static void send_arena_sized_put(int fd, uint64_t id, uint64_t checksum,
                                 uint64_t send_bytes)
{
    Kvpool__PutRequest put;
    kvp_key_t          key = key_of("arena-sized");
    uint8_t            hdr[KV_FRAME_HEADER_LEN], *msg;
    size_t             msg_len;

    put_request(&put, GOOD_NS, key.bytes, KVP_KEY_LEN, NULL, 0);
    put.checksum = checksum;
    msg          = pack(&put.base, &msg_len);
    header(hdr, KV_FRAME_REQUEST, KV_POOL_PUT, id, (uint32_t)msg_len, ARENA);
    send_all(fd, hdr, sizeof(hdr));
    send_all(fd, msg, msg_len);
    send_zeros(fd, send_bytes);
    free(msg);
}

/* After @p what (a refused Put, named for the log): no eviction, and all
 * the good client's blocks are still there. */
static void expect_nothing_evicted(fixture_t *f, const char *what)
{
    kvp_stats_t st;

    ASSERT_OK(kvp_stats(f->good, &st));
    fprintf(stderr, "after %s: %" PRIu64 " evictions, %" PRIu64 " of %d blocks left\n",
            what, st.evictions, st.blocks, f->count);
    ASSERT_EQ(st.evictions, 0);
    ASSERT_EQ(st.blocks, f->count);
}

static void test_bad_checksum_put_evicts_nothing(void)
{
    fixture_t f;
    uint64_t  id = next_id++;
    int       fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    send_arena_sized_put(fd, id, 0x5eed, ARENA); /* zeros: wrong checksum */
    expect_error_reply(fd, id, KVP_ERR_CHECKSUM);
    expect_nothing_evicted(&f, "a refused arena-sized put");
    close(fd);
    fixture_down(&f);
}

static void test_cut_put_evicts_nothing(void)
{
    fixture_t f;
    int       fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    send_arena_sized_put(fd, next_id++, 0x5eed, MiB); /* 1 MiB of 32, then gone */
    close(fd);
    wait_connections(&f, 1);
    expect_nothing_evicted(&f, "an abandoned arena-sized put");
    fixture_down(&f);
}

/* A Put whose payload is still coming must not lock others out of the
 * arena (nor evict their blocks) meanwhile: the node allows a frame 60 s. */
static void test_slow_put_blocks_nobody(void)
{
    fixture_t   f;
    kvp_stats_t st;
    int         fd;

    fixture_up(&f);
    fd = raw_authed(&f.node);
    send_arena_sized_put(fd, next_id++, 0x5eed, MiB); /* and the rest later */
    /* let the node take the frame's start: this node then evicts, which
     * shows; a node that evicts nothing shows nothing, so give it 1 s */
    for (uint64_t deadline = now_ms() + 1000; now_ms() < deadline;) {
        ASSERT_OK(kvp_stats(f.good, &st));
        if (st.evictions > 0) {
            break;
        }
        sleep_ms(2);
    }
    {
        uint8_t     *data   = make_block(MiB, 31337);
        kvp_key_t    key    = key_of("while-a-slow-put");
        kvp_status_t status = kvp_put(f.good, GOOD_NS, &key, data, MiB);
        fprintf(stderr, "put during a slow arena-sized put: %s (%" PRIu64 " evictions)\n",
                kvp_status_string(status), st.evictions);
        free(data);
        ASSERT_OK(status);
    }
    fixture_check(&f); /* includes: nothing was evicted */
    close(fd);
    wait_connections(&f, 1);
    fixture_down(&f);
}

/* The node's resident memory in KiB (VmRSS), or 0 if unreadable. */
static uint64_t node_rss_kib(pid_t pid)
{
    char     path[64], line[256];
    uint64_t kib = 0;
    FILE    *file;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    file = fopen(path, "r");
    if (file == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), file) != NULL) {
        if (sscanf(line, "VmRSS: %" SCNu64, &kib) == 1) {
            break;
        }
    }
    fclose(file);
    return kib;
}

/* @return non-zero if the node runs with AddressSanitizer (its RSS is then
 * dominated by shadow memory and quarantine, and means nothing here). */
static int node_sanitized(pid_t pid)
{
    char  path[64], line[512];
    int   found = 0;
    FILE *file;

    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    file = fopen(path, "r");
    if (file == NULL) {
        return 1;
    }
    while (!found && fgets(line, sizeof(line), file) != NULL) {
        found =
            strstr(line, "libasan") != NULL || strstr(line, "libclang_rt.asan") != NULL;
    }
    fclose(file);
    return found;
}

/*
 * A client that sends Gets for a missing key and never reads the (small)
 * error replies.  The node must keep serving others, and, as rpc_server.c
 * promises ("a client that does not read its replies cannot grow the
 * node's memory"), its memory must stay within about the 64 MiB per
 * connection it allows to queue: here, at most twice that.
 */
static void test_unread_error_replies_memory(void)
{
    fixture_t          f;
    Kvpool__GetRequest get;
    kvp_key_t          key = key_of("never-there");
    uint64_t           sent, rss0, rss1;
    int                fd;

    fixture_up(&f);
    fd   = raw_authed(&f.node);
    rss0 = node_rss_kib(f.node.pid);
    get_request(&get, GOOD_NS, key.bytes, KVP_KEY_LEN, 16);
    sent = send_gets_unread(fd, &get, 1, 1024, 4000000);
    ASSERT(sent < 4000000); /* it did push back at some point */

    /* others are still served */
    fixture_check(&f);

    rss1 = node_rss_kib(f.node.pid);
    fprintf(stderr,
            "unread error replies: %" PRIu64 " Gets sent; node RSS %" PRIu64
            " -> %" PRIu64 " MiB\n",
            sent, rss0 >> 10, rss1 >> 10);
    if (!node_sanitized(f.node.pid) && rss0 > 0 && rss1 > 0) {
        ASSERT_LE(rss1 - rss0, 2 * 64 * 1024); /* KiB: twice the 64 MiB high water */
    }

    close_rst(fd);
    wait_connections(&f, 1);
    fixture_down(&f);
}

KV_TEST_MAIN(KV_TEST(test_bad_magic), KV_TEST(test_truncated_frames),
             KV_TEST(test_msg_len_over_limit), KV_TEST(test_payload_len_over_limit),
             KV_TEST(test_reply_kind_frame), KV_TEST(test_request_before_hello),
             KV_TEST(test_hello_wrong_version), KV_TEST(test_hello_wrong_token),
             KV_TEST(test_unknown_method), KV_TEST(test_undecodable_message),
             KV_TEST(test_payload_on_method_without_payload),
             KV_TEST(test_bad_namespace_and_key), KV_TEST(test_exists_too_many_keys),
             KV_TEST(test_put_bad_checksum), KV_TEST(test_put_larger_than_arena),
             KV_TEST(test_get_missing), KV_TEST(test_random_bytes),
             KV_TEST(test_random_frames), KV_TEST(test_abrupt_connections),
             KV_TEST(test_unread_replies), KV_TEST(test_pinned_blocks_under_pressure),
             KV_TEST(test_expired_deadline), KV_TEST(test_silent_connection_closed),
             KV_TEST(test_unread_error_replies_memory),
             KV_TEST(test_bad_checksum_put_evicts_nothing),
             KV_TEST(test_cut_put_evicts_nothing), KV_TEST(test_slow_put_blocks_nobody))
