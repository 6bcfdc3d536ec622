/*
 * Integration tests of the same-host data path: the node's arena (a memfd
 * handed over an abstract Unix socket, pool/node_shm.c) mapped into the
 * client, and the two-phase RPCs that move block bytes through it
 * (PutStart/PutCommit, GetStart/GetEnd, pool/node_twophase.c).
 *
 * The tests drive libkvpool with transport "shm" (set explicitly: ctest
 * sets KVPOOL_TRANSPORT=frame), and make raw typed RPCs with kvproto's
 * kv_rpc_client to reach what libkvpool never does on purpose: leases held
 * open, reservations never committed, wrong checksums, limits.  The corrupted
 * block test maps the arena itself through the node's socket.
 *
 * Every test starts its own nodes and stops them with SIGTERM, checking
 * that they exit with status 0 (under the sanitizers also their leak
 * check); a node killed on purpose must have died of that SIGKILL.  If a
 * test dies (assertion, alarm, or a sanitizer report), the nodes it started
 * are killed (see the reaper below), so that none keeps ctest waiting.
 */
#include <kv/hash.h>
#include <kvpool/kvpool.h>
#include <kvproto/pool_service.h>
#include <kvproto/rpc_client.h>

#include "kvpool.pb-c.h"

#include <node_proc.h>
#include <test.h>
#include <test_util.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>

/* The node sweeps expired leases and puts on a 1 s tick (node_main.c), so
 * an operation of lease_ms is gone by lease_ms + 1 s; the margin absorbs
 * scheduling (and the sanitizers). */
#define TICK_MS 1000
#define LEASE_MS 500
#define EXPIRED_MS (LEASE_MS + TICK_MS + 300)

#define RPC_TIMEOUT_MS 10000

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */
/* ---------------------------------------------------------------------- */

/* Sleep until @p ms milliseconds have passed since @p since (now_ms()). */
static void sleep_until(uint64_t since, unsigned ms)
{
    uint64_t now = now_ms();

    if (now < since + ms) {
        sleep_ms((unsigned)(since + ms - now));
    }
}

/* Start a node with --log-level warn and @p extra (NULL-terminated).  It
 * dies with this process, however that ends (node_proc.h). */
static void shm_node_up(kv_test_node_t *node, const char *memory,
                        const char *const *extra)
{
    const char *argv[24];
    int         argc = 0;

    argv[argc++] = "--log-level";
    argv[argc++] = "warn";
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 23; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;
    node_up(node, memory, argv);
}

static kvp_client_h connect_with(const kv_test_node_t *node, const char *transport,
                                 const char *token)
{
    kvp_client_params_t params = {0};
    kvp_client_h        client = NULL;

    params.field_mask = KVP_CLIENT_PARAM_TRANSPORT;
    params.transport  = transport;
    if (token != NULL) {
        params.field_mask |= KVP_CLIENT_PARAM_TOKEN;
        params.token = token;
    }
    ASSERT_OK(kvp_client_connect(node->address, &params, &client));
    ASSERT(client != NULL);
    return client;
}

/* A libkvpool client that moves bytes through the shared arena. */
static kvp_client_h connect_shm(const kv_test_node_t *node)
{
    kvp_client_h client = connect_with(node, "shm", NULL);

    ASSERT(strcmp(kvp_client_transport(client), "shm") == 0);
    return client;
}

static kvp_client_h connect_frame(const kv_test_node_t *node)
{
    kvp_client_h client = connect_with(node, "frame", NULL);

    ASSERT(strcmp(kvp_client_transport(client), "frame") == 0);
    return client;
}

static void check_bytes(const void *got, const void *want, uint64_t size,
                        const char *what)
{
    if (memcmp(got, want, size) != 0) {
        for (uint64_t i = 0; i < size; i++) {
            if (((const uint8_t *)got)[i] != ((const uint8_t *)want)[i]) {
                fprintf(stderr, "%s: differs at byte %" PRIu64 " of %" PRIu64 "\n", what,
                        i, size);
                break;
            }
        }
        ASSERT(!"block bytes differ");
    }
}

/* Put one block of (size, seed) through @p client; it must succeed. */
static void put_ok(kvp_client_h client, const char *ns, const kvp_key_t *key,
                   uint64_t size, uint64_t seed)
{
    uint8_t *data = make_block(size, seed);

    ASSERT_OK(kvp_put(client, ns, key, data, size));
    free(data);
}

/* The block must be stored with the bytes of (size, seed). */
static void expect_block(kvp_client_h client, const char *ns, const kvp_key_t *key,
                         uint64_t size, uint64_t seed)
{
    uint8_t *want = make_block(size, seed);
    uint8_t *buf  = malloc(size);
    uint64_t got  = 0;

    ASSERT(buf != NULL);
    ASSERT_OK(kvp_get(client, ns, key, buf, size, &got));
    ASSERT_EQ(got, size);
    check_bytes(buf, want, size, "expect_block");
    free(buf);
    free(want);
}

static void expect_missing(kvp_client_h client, const char *ns, const kvp_key_t *key)
{
    uint8_t buf[16];
    size_t  present = 99;

    ASSERT_STATUS(kvp_get(client, ns, key, buf, sizeof(buf), NULL), KVP_ERR_NOT_FOUND);
    ASSERT_OK(kvp_exists(client, ns, key, 1, &present));
    ASSERT_EQ(present, 0);
}

static int key_stored(kvp_client_h client, const char *ns, const kvp_key_t *key)
{
    size_t present = 99;

    ASSERT_OK(kvp_exists(client, ns, key, 1, &present));
    return present == 1;
}

/* ---------------------------------------------------------------------- */
/* Raw typed RPCs (kvproto)                                                */
/* ---------------------------------------------------------------------- */

static kv_rpc_client_t *raw_connect(const kv_test_node_t *node, const char *token)
{
    kv_rpc_client_params_t params = {0};
    kv_rpc_client_t       *rpc    = NULL;

    params.address    = node->address;
    params.token      = token;
    params.name       = "test_shm-raw";
    params.timeout_ms = RPC_TIMEOUT_MS;
    params.service    = &kvpool__pool_node__descriptor;
    ASSERT_OK(kv_rpc_client_create(&params, &rpc));
    ASSERT(rpc != NULL);
    return rpc;
}

static ProtobufCBinaryData bin(const void *data, size_t len)
{
    ProtobufCBinaryData b = {len, (uint8_t *)data};
    return b;
}

static ProtobufCBinaryData ns_bin(const char *ns)
{
    return bin(ns, strlen(ns));
}

/* Borrow @p n keys as wire bytes (free the array). */
static ProtobufCBinaryData *keys_bin(const kvp_key_t *keys, size_t n)
{
    ProtobufCBinaryData *b = calloc(n ? n : 1, sizeof(*b));

    ASSERT(b != NULL);
    for (size_t i = 0; i < n; i++) {
        b[i] = bin(keys[i].bytes, KVP_KEY_LEN);
    }
    return b;
}

/* PutStart of (keys, sizes); returns the status, *reply_p on KVP_OK. */
static kvp_status_t raw_put_start_n(kv_rpc_client_t *rpc, ProtobufCBinaryData ns,
                                    ProtobufCBinaryData *keys, size_t n_keys,
                                    uint64_t *sizes, size_t n_sizes,
                                    Kvpool__PutStartReply **reply_p)
{
    Kvpool__PutStartRequest req = KVPOOL__PUT_START_REQUEST__INIT;

    req.ns      = ns;
    req.n_keys  = n_keys;
    req.keys    = keys;
    req.n_sizes = n_sizes;
    req.sizes   = sizes;
    return kv_rpc_call(rpc, KV_POOL_PUT_START, &req.base, NULL, 0, RPC_TIMEOUT_MS,
                       (ProtobufCMessage **)reply_p, NULL);
}

static kvp_status_t raw_put_start(kv_rpc_client_t *rpc, const char *ns,
                                  const kvp_key_t *keys, const uint64_t *sizes, size_t n,
                                  Kvpool__PutStartReply **reply_p)
{
    ProtobufCBinaryData *kb = keys_bin(keys, n);
    kvp_status_t         st =
        raw_put_start_n(rpc, ns_bin(ns), kb, n, (uint64_t *)sizes, n, reply_p);

    free(kb);
    return st;
}

static kvp_status_t raw_put_commit(kv_rpc_client_t *rpc, uint64_t put_id,
                                   const uint64_t *checksums, size_t n,
                                   Kvpool__PutCommitReply **reply_p)
{
    Kvpool__PutCommitRequest req = KVPOOL__PUT_COMMIT_REQUEST__INIT;

    req.put_id      = put_id;
    req.n_checksums = n;
    req.checksums   = (uint64_t *)checksums;
    return kv_rpc_call(rpc, KV_POOL_PUT_COMMIT, &req.base, NULL, 0, RPC_TIMEOUT_MS,
                       (ProtobufCMessage **)reply_p, NULL);
}

static kvp_status_t raw_get_start_n(kv_rpc_client_t *rpc, ProtobufCBinaryData ns,
                                    ProtobufCBinaryData *keys, size_t n,
                                    Kvpool__GetStartReply **reply_p)
{
    Kvpool__GetStartRequest req = KVPOOL__GET_START_REQUEST__INIT;

    req.ns     = ns;
    req.n_keys = n;
    req.keys   = keys;
    return kv_rpc_call(rpc, KV_POOL_GET_START, &req.base, NULL, 0, RPC_TIMEOUT_MS,
                       (ProtobufCMessage **)reply_p, NULL);
}

static kvp_status_t raw_get_start(kv_rpc_client_t *rpc, const char *ns,
                                  const kvp_key_t *keys, size_t n,
                                  Kvpool__GetStartReply **reply_p)
{
    ProtobufCBinaryData *kb = keys_bin(keys, n);
    kvp_status_t         st = raw_get_start_n(rpc, ns_bin(ns), kb, n, reply_p);

    free(kb);
    return st;
}

static kvp_status_t raw_get_end(kv_rpc_client_t *rpc, uint64_t lease_id)
{
    Kvpool__GetEndRequest req = KVPOOL__GET_END_REQUEST__INIT;

    req.lease_id = lease_id;
    return kv_rpc_call(rpc, KV_POOL_GET_END, &req.base, NULL, 0, RPC_TIMEOUT_MS, NULL, NULL);
}

static kvp_status_t raw_stats(kv_rpc_client_t *rpc, Kvpool__StatsReply **reply_p)
{
    Kvpool__StatsRequest req = KVPOOL__STATS_REQUEST__INIT;

    return kv_rpc_call(rpc, KV_POOL_STATS, &req.base, NULL, 0, RPC_TIMEOUT_MS,
                       (ProtobufCMessage **)reply_p, NULL);
}

/* Lease one key; it must be found.  Returns the lease id. */
static uint64_t lease_one(kv_rpc_client_t *rpc, const char *ns, const kvp_key_t *key,
                          const void *want, uint64_t size)
{
    Kvpool__GetStartReply *reply = NULL;
    uint64_t               id;

    ASSERT_OK(raw_get_start(rpc, ns, key, 1, &reply));
    ASSERT_EQ(reply->n_blocks, 1);
    ASSERT_STATUS(reply->blocks[0]->status, KVP_OK);
    ASSERT_EQ(reply->blocks[0]->size, size);
    ASSERT_EQ(reply->blocks[0]->offset % 4096, 0);
    if (want != NULL) {
        ASSERT(reply->blocks[0]->checksum == kv_checksum(want, size));
    }
    id = reply->lease_id;
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    return id;
}

/* ---------------------------------------------------------------------- */
/* The arena, mapped by the test itself through the node's shm socket      */
/* ---------------------------------------------------------------------- */

typedef struct {
    uint8_t  wire[8];
    ssize_t  got;  /* bytes received (8 on an answer; 0 on close) */
    int      fd;   /* the descriptor passed, or -1 */
    uint64_t size; /* the 8 bytes, little-endian */
} shm_answer_t;

/*
 * Connect to the abstract socket @p name and send @p hello_len bytes of
 * @p hello (normally [n][n bytes of token]); read the answer.
 */
static void shm_handshake_raw(const char *name, const void *hello, size_t hello_len,
                              shm_answer_t *ans)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval     tv   = {5, 0};
    struct iovec       iov  = {ans->wire, sizeof(ans->wire)};
    union {
        struct cmsghdr hdr;
        char           buf[CMSG_SPACE(sizeof(int)) * 2];
    } control;
    struct msghdr   msg = {.msg_iov        = &iov,
                           .msg_iovlen     = 1,
                           .msg_control    = control.buf,
                           .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cm;
    size_t          name_len = strlen(name);
    int             sock;

    memset(ans, 0, sizeof(*ans));
    memset(&control, 0, sizeof(control));
    ans->fd = -1;
    ASSERT(name_len > 0 && name_len + 1 < sizeof(addr.sun_path));
    memcpy(addr.sun_path + 1, name, name_len);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(sock >= 0);
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ASSERT_EQ(connect(sock, (struct sockaddr *)&addr,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name_len)),
              0);
    ASSERT_EQ(send(sock, hello, hello_len, MSG_NOSIGNAL), (ssize_t)hello_len);
    ans->got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    /* an answer, a close or a reset, not a timeout */
    ASSERT_(ans->got >= 0 || errno == ECONNRESET, "shm handshake: %s", strerror(errno));
    for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            ASSERT(ans->fd < 0);
            memcpy(&ans->fd, CMSG_DATA(cm), sizeof(int));
        }
    }
    for (int i = 0; i < 8; i++) {
        ans->size |= (uint64_t)ans->wire[i] << (8 * i);
    }
    close(sock);
}

static void shm_handshake(const char *name, const char *token, shm_answer_t *ans)
{
    uint8_t hello[1 + 255];
    size_t  len = token ? strlen(token) : 0;

    ASSERT(len <= 255);
    hello[0] = (uint8_t)len;
    memcpy(hello + 1, token ? token : "", len);
    shm_handshake_raw(name, hello, 1 + len, ans);
}

typedef struct {
    uint8_t *base;
    uint64_t size;
} arena_map_t;

/* Map the node's arena as a local client would (its shm socket from the
 * HelloReply of a raw connection). */
static void arena_map(const kv_test_node_t *node, const char *token, arena_map_t *map)
{
    kv_rpc_client_t          *rpc   = raw_connect(node, token);
    const Kvpool__HelloReply *hello = kv_rpc_client_hello(rpc);
    shm_answer_t              ans;

    ASSERT(hello != NULL);
    ASSERT(hello->shm_socket != NULL && hello->shm_socket[0] != '\0');
    ASSERT(hello->arena_size > 0);
    shm_handshake(hello->shm_socket, token, &ans);
    ASSERT_EQ(ans.got, 8);
    ASSERT(ans.fd >= 0);
    ASSERT_EQ(ans.size, hello->arena_size);
    map->size = ans.size;
    map->base = mmap(NULL, map->size, PROT_READ | PROT_WRITE, MAP_SHARED, ans.fd, 0);
    ASSERT(map->base != MAP_FAILED);
    close(ans.fd);
    kv_rpc_client_destroy(rpc);
}

static void arena_unmap(arena_map_t *map)
{
    munmap(map->base, map->size);
    map->base = NULL;
}

/* ---------------------------------------------------------------------- */
/* 1. Batched round trip through the shared arena                          */
/* ---------------------------------------------------------------------- */

#define RT_BLOCKS 32

static void shm_round_trip_batched(void)
{
    kv_test_node_t node;
    kvp_client_h   client;
    kvp_key_t      keys[RT_BLOCKS];
    uint8_t       *datas[RT_BLOCKS], *bufs[RT_BLOCKS];
    uint64_t       sizes[RT_BLOCKS], caps[RT_BLOCKS], got[RT_BLOCKS];
    kvp_status_t   st[RT_BLOCKS];
    kvp_stats_t    stats;
    rng_t          rng;
    uint64_t       total = 0;

    shm_node_up(&node, "192MiB", NULL);
    client = connect_shm(&node);

    rng_seed(&rng, 1);
    for (int i = 0; i < RT_BLOCKS; i++) {
        /* the extremes, odd sizes, and random sizes spread over 4 KiB..4 MiB */
        sizes[i] = i == 0   ? 4 * KiB
                   : i == 1 ? 4 * MiB
                   : i == 2 ? 4 * KiB + 1
                   : i == 3 ? 4 * MiB - 1
                   : i % 2  ? rng_range(&rng, 4 * KiB, 64 * KiB)
                            : rng_range(&rng, 4 * KiB, 4 * MiB);
        keys[i]  = key_of("rt-%d", i);
        datas[i] = make_block(sizes[i], 100 + (uint64_t)i);
        bufs[i]  = malloc(sizes[i]);
        ASSERT(bufs[i] != NULL);
        caps[i] = sizes[i];
        total += sizes[i];
    }
    for (int i = 0; i < RT_BLOCKS; i++) {
        st[i] = KVP_ERR_INTERNAL;
    }
    ASSERT_OK(kvp_put_batch(client, "rt", keys, (const void *const *)datas, sizes,
                            RT_BLOCKS, st));
    for (int i = 0; i < RT_BLOCKS; i++) {
        ASSERT_STATUS(st[i], KVP_OK);
    }
    ASSERT_OK(kvp_stats(client, &stats));
    ASSERT_EQ(stats.blocks, RT_BLOCKS);
    ASSERT_EQ(stats.puts, RT_BLOCKS);
    ASSERT_EQ(stats.bytes_in, total);
    ASSERT_EQ(stats.evictions, 0);

    /* read back into separate buffers */
    for (int i = 0; i < RT_BLOCKS; i++) {
        memset(bufs[i], 0, sizes[i]);
        got[i] = 0;
        st[i]  = KVP_ERR_INTERNAL;
    }
    ASSERT_OK(
        kvp_get_batch(client, "rt", keys, (void *const *)bufs, caps, RT_BLOCKS, got, st));
    for (int i = 0; i < RT_BLOCKS; i++) {
        ASSERT_STATUS(st[i], KVP_OK);
        ASSERT_EQ(got[i], sizes[i]);
        check_bytes(bufs[i], datas[i], sizes[i], "batched get");
    }
    /* and one by one, through the frame path too: the same bytes */
    {
        kvp_client_h frame = connect_frame(&node);
        for (int i = 0; i < RT_BLOCKS; i += 7) {
            uint64_t n = 0;
            memset(bufs[i], 0, sizes[i]);
            ASSERT_OK(kvp_get(frame, "rt", &keys[i], bufs[i], sizes[i], &n));
            ASSERT_EQ(n, sizes[i]);
            check_bytes(bufs[i], datas[i], sizes[i], "frame get");
        }
        kvp_client_disconnect(frame);
    }

    /* missing keys are per-block misses; a short buffer is per-block too */
    {
        kvp_key_t    k[5]  = {keys[0], key_of("rt-missing-1"), keys[1],
                              key_of("rt-missing-2"), keys[2]};
        uint8_t     *small = malloc(4 * MiB);
        uint8_t      miss_a[64], miss_b[64];
        void        *b[5]   = {bufs[0], miss_a, small, miss_b, bufs[2]};
        uint64_t     cap[5] = {sizes[0], sizeof(miss_a), sizes[1] - 1, sizeof(miss_b),
                               sizes[2]};
        uint64_t     sz[5];
        kvp_status_t s[5];

        ASSERT(small != NULL);
        memset(small, 0xa5, 4 * MiB);
        memset(bufs[0], 0, sizes[0]);
        memset(bufs[2], 0, sizes[2]);
        for (int i = 0; i < 5; i++) {
            s[i]  = KVP_ERR_INTERNAL;
            sz[i] = 0;
        }
        ASSERT_OK(kvp_get_batch(client, "rt", k, b, cap, 5, sz, s));
        ASSERT_STATUS(s[0], KVP_OK);
        ASSERT_EQ(sz[0], sizes[0]);
        check_bytes(bufs[0], datas[0], sizes[0], "mixed batch block 0");
        ASSERT_STATUS(s[1], KVP_ERR_NOT_FOUND);
        ASSERT_STATUS(s[2], KVP_ERR_BUFFER_TOO_SMALL);
        ASSERT_EQ(sz[2], sizes[1]); /* the size is reported */
        for (uint64_t i = 0; i < 4 * MiB; i += 4093) {
            ASSERT_EQ(small[i], 0xa5); /* nothing written into the short buffer */
        }
        ASSERT_STATUS(s[3], KVP_ERR_NOT_FOUND);
        ASSERT_STATUS(s[4], KVP_OK);
        ASSERT_EQ(sz[4], sizes[2]);
        check_bytes(bufs[2], datas[2], sizes[2], "mixed batch block 4");

        /* the same through kvp_get */
        uint64_t one = 0;
        ASSERT_STATUS(kvp_get(client, "rt", &keys[1], small, sizes[1] - 1, &one),
                      KVP_ERR_BUFFER_TOO_SMALL);
        ASSERT_EQ(one, sizes[1]);
        ASSERT_STATUS(kvp_get(client, "rt", &k[1], small, 4 * MiB, NULL),
                      KVP_ERR_NOT_FOUND);
        /* an unknown namespace: misses, not an error of the call */
        for (int i = 0; i < 5; i++) {
            s[i] = KVP_ERR_INTERNAL;
        }
        ASSERT_OK(kvp_get_batch(client, "rt-never-used", k, b, cap, 5, sz, s));
        for (int i = 0; i < 5; i++) {
            ASSERT_STATUS(s[i], KVP_ERR_NOT_FOUND);
        }
        free(small);
    }

    /* a block larger than the arena: TOO_LARGE for it alone */
    {
        const uint64_t big_size = 192 * MiB + 4 * KiB;
        uint8_t       *big      = malloc(big_size); /* never read: not touched */
        kvp_key_t k[4] = {key_of("rt-new-0"), key_of("rt-too-large"), key_of("rt-new-1"),
                          key_of("rt-new-2")};
        uint8_t  *d[4];
        uint64_t  sz[4] = {8 * KiB, big_size, 1 * MiB + 3, 4 * KiB};
        kvp_status_t s[4];

        ASSERT(big != NULL);
        d[0] = make_block(sz[0], 900);
        d[1] = big;
        d[2] = make_block(sz[2], 902);
        d[3] = make_block(sz[3], 903);
        for (int i = 0; i < 4; i++) {
            s[i] = KVP_ERR_INTERNAL;
        }
        ASSERT_OK(kvp_put_batch(client, "rt", k, (const void *const *)d, sz, 4, s));
        ASSERT_STATUS(s[0], KVP_OK);
        ASSERT_STATUS(s[1], KVP_ERR_TOO_LARGE);
        ASSERT_STATUS(s[2], KVP_OK);
        ASSERT_STATUS(s[3], KVP_OK);
        expect_block(client, "rt", &k[0], sz[0], 900);
        expect_missing(client, "rt", &k[1]);
        expect_block(client, "rt", &k[2], sz[2], 902);
        expect_block(client, "rt", &k[3], sz[3], 903);
        free(big);
        free(d[0]);
        free(d[2]);
        free(d[3]);
    }

    /* nothing of the first batch was lost on the way */
    ASSERT_OK(kvp_stats(client, &stats));
    ASSERT_EQ(stats.blocks, RT_BLOCKS + 3);
    ASSERT_EQ(stats.evictions, 0);
    for (int i = 0; i < RT_BLOCKS; i++) {
        memset(bufs[i], 0, sizes[i]);
        st[i] = KVP_ERR_INTERNAL;
    }
    ASSERT_OK(
        kvp_get_batch(client, "rt", keys, (void *const *)bufs, caps, RT_BLOCKS, got, st));
    for (int i = 0; i < RT_BLOCKS; i++) {
        ASSERT_STATUS(st[i], KVP_OK);
        check_bytes(bufs[i], datas[i], sizes[i], "batched get again");
    }

    for (int i = 0; i < RT_BLOCKS; i++) {
        free(datas[i]);
        free(bufs[i]);
    }
    kvp_client_disconnect(client);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* 2. A block damaged in the arena is a miss, never data                   */
/* ---------------------------------------------------------------------- */

/* The block must be stored with exactly the bytes of @p want. */
static void expect_data(kvp_client_h client, const char *ns, const kvp_key_t *key,
                        const uint8_t *want, uint64_t size)
{
    uint8_t *buf = malloc(size);
    uint64_t got = 0;

    ASSERT(buf != NULL);
    ASSERT_OK(kvp_get(client, ns, key, buf, size, &got));
    ASSERT_EQ(got, size);
    check_bytes(buf, want, size, "expect_data");
    free(buf);
}

static void corrupted_block_is_a_miss(void)
{
    const uint64_t size = 256 * KiB;
    kv_test_node_t node;
    kvp_client_h   shm, frame;
    arena_map_t    map;
    kvp_key_t    k[3] = {key_of("cor-before"), key_of("cor-victim"), key_of("cor-after")};
    uint8_t     *data[3], *bufs[3], *hit;
    uint64_t     caps[3] = {size, size, size}, sz[3], off, flip;
    kvp_status_t s[3];

    shm_node_up(&node, "64MiB", NULL);
    shm   = connect_shm(&node);
    frame = connect_frame(&node);

    for (int i = 0; i < 3; i++) {
        data[i] = make_block(size, 7000 + (uint64_t)i);
        bufs[i] = malloc(size);
        ASSERT(bufs[i] != NULL);
    }
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(kvp_put(shm, "cor", &k[i], data[i], size));
    }
    for (int i = 0; i < 3; i++) {
        expect_data(shm, "cor", &k[i], data[i], size);
        expect_data(frame, "cor", &k[i], data[i], size);
    }

    /* find the victim's bytes in the arena and flip one */
    arena_map(&node, NULL, &map);
    hit = memmem(map.base, map.size, data[1], size);
    ASSERT(hit != NULL);
    off = (uint64_t)(hit - map.base);
    ASSERT_EQ(off % 4096, 0);
    ASSERT(memmem(hit + 1, map.size - off - 1, data[1], size) == NULL); /* one copy */
    flip = off + size / 2 + 13;
    map.base[flip] ^= 0x40;

    /* shared arena, one block */
    ASSERT_STATUS(kvp_get(shm, "cor", &k[1], bufs[1], size, NULL), KVP_ERR_CHECKSUM);
    /* shared arena, batched: the damaged block alone is a miss */
    for (int i = 0; i < 3; i++) {
        memset(bufs[i], 0, size);
        s[i] = KVP_ERR_INTERNAL;
    }
    ASSERT_OK(kvp_get_batch(shm, "cor", k, (void *const *)bufs, caps, 3, sz, s));
    ASSERT_STATUS(s[0], KVP_OK);
    ASSERT_STATUS(s[1], KVP_ERR_CHECKSUM);
    ASSERT_STATUS(s[2], KVP_OK);
    check_bytes(bufs[0], data[0], size, "block before the damaged one");
    check_bytes(bufs[2], data[2], size, "block after the damaged one");
    /* frames: the node sends the stored checksum, the client checks it */
    ASSERT_STATUS(kvp_get(frame, "cor", &k[1], bufs[1], size, NULL), KVP_ERR_CHECKSUM);
    for (int i = 0; i < 3; i++) {
        s[i] = KVP_ERR_INTERNAL;
    }
    ASSERT_OK(kvp_get_batch(frame, "cor", k, (void *const *)bufs, caps, 3, sz, s));
    ASSERT_STATUS(s[0], KVP_OK);
    ASSERT_STATUS(s[1], KVP_ERR_CHECKSUM);
    ASSERT_STATUS(s[2], KVP_OK);
    check_bytes(bufs[0], data[0], size, "frame: block before the damaged one");
    check_bytes(bufs[2], data[2], size, "frame: block after the damaged one");
    expect_data(shm, "cor", &k[0], data[0], size);
    expect_data(frame, "cor", &k[2], data[2], size);

    /* the flipped byte alone was the cause: restored, the block reads again */
    map.base[flip] ^= 0x40;
    expect_data(shm, "cor", &k[1], data[1], size);
    expect_data(frame, "cor", &k[1], data[1], size);

    /* a block written afterwards (the damage is not sticky) */
    map.base[flip] ^= 0x01;
    ASSERT_STATUS(kvp_get(shm, "cor", &k[1], bufs[1], size, NULL), KVP_ERR_CHECKSUM);
    ASSERT_OK(kvp_put(shm, "cor", &k[1], data[1], size)); /* a new copy replaces it */
    expect_data(shm, "cor", &k[1], data[1], size);
    expect_data(frame, "cor", &k[1], data[1], size);

    arena_unmap(&map);
    for (int i = 0; i < 3; i++) {
        free(data[i]);
        free(bufs[i]);
    }
    kvp_client_disconnect(shm);
    kvp_client_disconnect(frame);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* 3. A lease pins its blocks until GetEnd or its expiry                   */
/* ---------------------------------------------------------------------- */

static const char *const lease_flags[] = {"--lease-ms", "500", NULL};

/* Put @p count blocks of @p size under new keys "<tag>-i" (same bytes). */
static void fill(kvp_client_h client, const char *ns, const char *tag, int count,
                 const uint8_t *data, uint64_t size)
{
    for (int i = 0; i < count; i++) {
        kvp_key_t key = key_of("%s-%d", tag, i);
        ASSERT_OK(kvp_put(client, ns, &key, data, size));
    }
}

static void lease_pins_until_end_or_expiry(void)
{
    const uint64_t         size = 1 * MiB;
    kv_test_node_t         node;
    kvp_client_h           client, other;
    kv_rpc_client_t       *rpc, *rpc2;
    Kvpool__GetStartReply *reply  = NULL;
    kvp_key_t              pinned = key_of("pinned"), second = key_of("second");
    uint8_t               *pdata  = make_block(size, 31);
    uint8_t               *filler = make_block(size, 32);
    kvp_stats_t            st;
    uint64_t               lease, t0, evictions;

    shm_node_up(&node, "16MiB", lease_flags);
    client = connect_shm(&node);
    rpc    = raw_connect(&node, NULL);
    ASSERT_OK(kvp_put(client, "lease", &pinned, pdata, size));

    /* take the lease (the node's clock starts before ours) */
    t0 = now_ms();
    ASSERT_OK(raw_get_start(rpc, "lease", &pinned, 1, &reply));
    ASSERT_EQ(reply->lease_ms, LEASE_MS);
    ASSERT_EQ(reply->n_blocks, 1);
    ASSERT_STATUS(reply->blocks[0]->status, KVP_OK);
    ASSERT_EQ(reply->blocks[0]->size, size);
    ASSERT(reply->blocks[0]->checksum == kv_checksum(pdata, size));
    lease = reply->lease_id;
    protobuf_c_message_free_unpacked(&reply->base, NULL);

    /* 24 MiB of other puts through a 16 MiB arena: it is never evicted */
    for (int i = 0; i < 24; i++) {
        kvp_key_t key = key_of("fill-%d", i);
        ASSERT_OK(kvp_put(client, "lease", &key, filler, size));
        ASSERT(key_stored(client, "lease", &pinned));
    }
    ASSERT_OK(kvp_stats(client, &st));
    ASSERT(st.evictions >= 9);
    evictions = st.evictions;
    expect_data(client, "lease", &pinned, pdata, size);
    /* the point of the test is what happened while the lease was open */
    ASSERT_LE(now_ms() - t0, LEASE_MS);

    /* expired: the node has dropped the lease */
    sleep_until(t0, EXPIRED_MS);
    ASSERT_STATUS(raw_get_end(rpc, lease), KVP_ERR_NOT_FOUND);
    /* still stored (nothing pushed it out yet), but evictable again */
    ASSERT(key_stored(client, "lease", &pinned));
    fill(client, "lease", "refill", 24, filler, size);
    expect_missing(client, "lease", &pinned);
    ASSERT_OK(kvp_stats(client, &st));
    ASSERT(st.evictions > evictions);

    /* GetEnd: of a live lease OK once, then NOT_FOUND; leases are per
     * connection: another connection cannot end it */
    ASSERT_OK(kvp_put(client, "lease", &second, pdata, size));
    lease = lease_one(rpc, "lease", &second, pdata, size);
    rpc2  = raw_connect(&node, NULL);
    ASSERT_STATUS(raw_get_end(rpc2, lease), KVP_ERR_NOT_FOUND);
    ASSERT_OK(raw_get_end(rpc, lease));
    ASSERT_STATUS(raw_get_end(rpc, lease), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(raw_get_end(rpc, 0xdeadbeefull), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(raw_get_end(rpc, 0), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(raw_get_end(rpc2, UINT64_MAX), KVP_ERR_NOT_FOUND);
    /* ended, the block is evictable at once */
    fill(client, "lease", "refill2", 24, filler, size);
    expect_missing(client, "lease", &second);

    /* a lease ends with its connection too */
    ASSERT_OK(kvp_put(client, "lease", &second, pdata, size));
    (void)lease_one(rpc2, "lease", &second, pdata, size);
    t0 = now_ms();
    kv_rpc_client_destroy(rpc2);
    other = connect_shm(&node);
    for (;;) {
        /* once the node has seen the close, the block goes with the next fill */
        fill(other, "lease", "refill3", 20, filler, size);
        if (!key_stored(other, "lease", &second)) {
            break;
        }
        ASSERT_LE(now_ms() - t0, LEASE_MS / 2); /* not by expiry */
        sleep_ms(10);
    }
    kvp_client_disconnect(other);

    kv_rpc_client_destroy(rpc);
    kvp_client_disconnect(client);
    free(pdata);
    free(filler);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* 4. Uncommitted puts are reclaimed; PutCommit checks                     */
/* ---------------------------------------------------------------------- */

static void uncommitted_put_reclaimed(void)
{
    const uint64_t          reserve = 12 * MiB, want = 8 * MiB;
    kv_test_node_t          node;
    kvp_client_h            client, frame;
    kv_rpc_client_t        *rpc;
    Kvpool__PutStartReply  *started = NULL;
    Kvpool__PutCommitReply *done    = NULL;
    arena_map_t             map;
    kvp_key_t               held = key_of("held"), big = key_of("big");
    uint8_t                *data = make_block(want, 41);
    uint64_t                put_id, t0, sums[3];
    size_t                  deleted = 0;

    shm_node_up(&node, "16MiB", lease_flags);
    client = connect_shm(&node);
    frame  = connect_frame(&node);

    /* an open reservation holds its space: no room for 8 MiB */
    rpc = raw_connect(&node, NULL);
    t0  = now_ms();
    ASSERT_OK(raw_put_start(rpc, "up", &held, &reserve, 1, &started));
    ASSERT_EQ(started->n_blocks, 1);
    ASSERT_STATUS(started->blocks[0]->status, KVP_OK);
    ASSERT_EQ(started->blocks[0]->size, reserve);
    put_id = started->put_id;
    protobuf_c_message_free_unpacked(&started->base, NULL);
    ASSERT_STATUS(kvp_put(client, "up", &big, data, want), KVP_ERR_NO_SPACE);
    ASSERT_STATUS(kvp_put(frame, "up", &big, data, want), KVP_ERR_NO_SPACE);
    ASSERT_LE(now_ms() - t0, LEASE_MS);
    expect_missing(client, "up", &held); /* pending: invisible */

    /* after the put timeout it is reclaimed; a late commit finds nothing */
    sleep_until(t0, EXPIRED_MS);
    ASSERT_OK(kvp_put(client, "up", &big, data, want));
    sums[0] = 0;
    ASSERT_STATUS(raw_put_commit(rpc, put_id, sums, 1, &done), KVP_ERR_NOT_FOUND);
    expect_missing(client, "up", &held);
    expect_data(frame, "up", &big, data, want);
    ASSERT_OK(kvp_delete(client, "up", &big, 1, &deleted));
    ASSERT_EQ(deleted, 1);
    kv_rpc_client_destroy(rpc);

    /* closing the connection that holds a reservation frees it at once */
    rpc = raw_connect(&node, NULL);
    t0  = now_ms();
    ASSERT_OK(raw_put_start(rpc, "up", &held, &reserve, 1, &started));
    ASSERT_STATUS(started->blocks[0]->status, KVP_OK);
    protobuf_c_message_free_unpacked(&started->base, NULL);
    ASSERT_STATUS(kvp_put(client, "up", &big, data, want), KVP_ERR_NO_SPACE);
    kv_rpc_client_destroy(rpc);
    for (;;) {
        kvp_status_t s = kvp_put(client, "up", &big, data, want);
        if (s == KVP_OK) {
            break;
        }
        ASSERT_STATUS(s, KVP_ERR_NO_SPACE);
        ASSERT_LE(now_ms() - t0, LEASE_MS / 2); /* not by expiry */
        sleep_ms(5);
    }
    expect_data(client, "up", &big, data, want);
    ASSERT_OK(kvp_delete(client, "up", &big, 1, &deleted));

    /* PutCommit checks */
    rpc = raw_connect(&node, NULL);
    ASSERT_STATUS(raw_put_commit(rpc, 987654321, sums, 1, &done), KVP_ERR_NOT_FOUND);
    {
        kvp_key_t k[2]  = {key_of("two-0"), key_of("two-1")};
        uint64_t  sz[2] = {64 * KiB, 64 * KiB};

        /* too few, too many, none: each on its own put (the node drops a
         * put whose commit it refuses) */
        for (size_t n_sums = 0; n_sums <= 3; n_sums += n_sums == 0 ? 1 : 2) {
            ASSERT_OK(raw_put_start(rpc, "up", k, sz, 2, &started));
            put_id = started->put_id;
            protobuf_c_message_free_unpacked(&started->base, NULL);
            sums[0] = sums[1] = sums[2] = 0;
            ASSERT_STATUS(
                raw_put_commit(rpc, put_id, n_sums ? sums : NULL, n_sums, &done),
                KVP_ERR_INVALID_PARAM);
            expect_missing(client, "up", &k[0]);
            expect_missing(client, "up", &k[1]);
        }
    }
    {
        /* a put id is not a lease id, nor the reverse */
        kvp_key_t k  = key_of("kinds");
        uint64_t  sz = 4 * KiB, lease;

        ASSERT_OK(raw_put_start(rpc, "up", &k, &sz, 1, &started));
        put_id = started->put_id;
        protobuf_c_message_free_unpacked(&started->base, NULL);
        ASSERT_STATUS(raw_get_end(rpc, put_id), KVP_ERR_NOT_FOUND);
        ASSERT_OK(kvp_put(client, "up", &k, data, sz));
        lease = lease_one(rpc, "up", &k, data, sz);
        ASSERT_STATUS(raw_put_commit(rpc, lease, sums, 1, &done), KVP_ERR_NOT_FOUND);
        ASSERT_OK(raw_get_end(rpc, lease));
    }
    {
        /* one block's checksum is wrong: that block alone is dropped */
        kvp_key_t k[3]  = {key_of("sum-0"), key_of("sum-1"), key_of("sum-2")};
        uint64_t  sz[3] = {64 * KiB, 100000, 4 * KiB};
        uint8_t  *d[3];

        arena_map(&node, NULL, &map);
        ASSERT_OK(raw_put_start(rpc, "up", k, sz, 3, &started));
        ASSERT_EQ(started->n_blocks, 3);
        for (int i = 0; i < 3; i++) {
            const Kvpool__BlockSpan *span = started->blocks[i];
            d[i]                          = make_block(sz[i], 500 + (uint64_t)i);
            ASSERT_STATUS(span->status, KVP_OK);
            ASSERT_EQ(span->size, sz[i]);
            ASSERT(span->offset <= map.size && sz[i] <= map.size - span->offset);
            memcpy(map.base + span->offset, d[i], sz[i]);
            sums[i] = kv_checksum(d[i], sz[i]);
        }
        put_id = started->put_id;
        protobuf_c_message_free_unpacked(&started->base, NULL);
        sums[1] ^= 1;
        ASSERT_OK(raw_put_commit(rpc, put_id, sums, 3, &done));
        ASSERT_EQ(done->n_statuses, 3);
        ASSERT_STATUS(done->statuses[0], KVP_OK);
        ASSERT_STATUS(done->statuses[1], KVP_ERR_CHECKSUM);
        ASSERT_STATUS(done->statuses[2], KVP_OK);
        protobuf_c_message_free_unpacked(&done->base, NULL);
        /* committed: a second commit finds nothing */
        ASSERT_STATUS(raw_put_commit(rpc, put_id, sums, 3, &done), KVP_ERR_NOT_FOUND);
        expect_data(client, "up", &k[0], d[0], sz[0]);
        expect_missing(client, "up", &k[1]);
        expect_data(frame, "up", &k[2], d[2], sz[2]);
        expect_missing(frame, "up", &k[1]);
        for (int i = 0; i < 3; i++) {
            free(d[i]);
        }
        arena_unmap(&map);
    }
    kv_rpc_client_destroy(rpc);

    free(data);
    kvp_client_disconnect(client);
    kvp_client_disconnect(frame);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* 5. Limits of the two-phase RPCs                                         */
/* ---------------------------------------------------------------------- */

#define OPS_MAX 1024

/* Reserve the whole arena: works only if nothing holds any of it. */
static void expect_arena_free(kv_rpc_client_t *rpc, uint64_t arena_size)
{
    Kvpool__PutStartReply  *started = NULL;
    kvp_key_t               key     = key_of("whole-arena");
    Kvpool__PutCommitReply *done    = NULL;
    uint64_t                sum     = 0;

    ASSERT_OK(raw_put_start(rpc, "limits", &key, &arena_size, 1, &started));
    ASSERT_STATUS(started->blocks[0]->status, KVP_OK);
    /* drop it: a wrong checksum aborts the reservation */
    ASSERT_OK(raw_put_commit(rpc, started->put_id, &sum, 1, &done));
    ASSERT_STATUS(done->statuses[0], KVP_ERR_CHECKSUM);
    protobuf_c_message_free_unpacked(&done->base, NULL);
    protobuf_c_message_free_unpacked(&started->base, NULL);
}

static void limits(void)
{
    const uint64_t         arena = 64 * MiB;
    kv_test_node_t         node;
    kvp_client_h           client;
    kv_rpc_client_t       *rpc, *rpc2;
    Kvpool__PutStartReply *started = NULL;
    Kvpool__GetStartReply *leased  = NULL;
    Kvpool__StatsReply    *stats   = NULL;
    const size_t           nmax    = KVP_BATCH_MAX + 1;
    kvp_key_t             *keys    = calloc(nmax, sizeof(*keys));
    uint64_t              *sizes   = calloc(nmax, sizeof(*sizes));
    ProtobufCBinaryData   *kb;
    uint8_t                key_bytes[KVP_KEY_LEN + 1] = {0};
    char                   ns_long[KVP_NAMESPACE_MAX + 2];
    uint64_t               leases[OPS_MAX], extra[10];
    kvp_key_t              l     = key_of("leased");
    uint8_t               *ldata = make_block(64 * KiB, 61);

    ASSERT(keys != NULL && sizes != NULL);
    for (size_t i = 0; i < nmax; i++) {
        keys[i]  = key_of("limit-%zu", i);
        sizes[i] = 4 * KiB;
    }
    shm_node_up(&node, "64MiB", NULL);
    client = connect_shm(&node);
    rpc    = raw_connect(&node, NULL);
    kb     = keys_bin(keys, nmax);

    /* PutStart: n_sizes != n_keys, 0 keys, 4097 keys */
    ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), kb, 2, sizes, 1, &started),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), kb, 1, sizes, 2, &started),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), kb, 0, sizes, 0, &started),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), kb, nmax, sizes, nmax, &started),
                  KVP_ERR_INVALID_PARAM);
    /* bad key lengths */
    {
        ProtobufCBinaryData bad[3] = {kb[0], bin(key_bytes, KVP_KEY_LEN - 1), kb[2]};
        ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), bad, 3, sizes, 3, &started),
                      KVP_ERR_INVALID_PARAM);
        bad[1] = bin(key_bytes, KVP_KEY_LEN + 1);
        ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), bad, 3, sizes, 3, &started),
                      KVP_ERR_INVALID_PARAM);
        bad[1] = bin(key_bytes, 0);
        ASSERT_STATUS(raw_put_start_n(rpc, ns_bin("limits"), bad, 3, sizes, 3, &started),
                      KVP_ERR_INVALID_PARAM);
        ASSERT_STATUS(raw_get_start_n(rpc, ns_bin("limits"), bad, 3, &leased),
                      KVP_ERR_INVALID_PARAM);
    }
    /* chained PutStart: a parent must be KVP_KEY_LEN bytes, and needs chain */
    {
        Kvpool__PutStartRequest req = KVPOOL__PUT_START_REQUEST__INIT;

        req.ns      = ns_bin("limits");
        req.n_keys  = req.n_sizes = 1;
        req.keys    = kb;
        req.sizes   = sizes;
        req.chain   = 1;
        req.parent  = bin(key_bytes, KVP_KEY_LEN - 1);
        ASSERT_STATUS(kv_rpc_call(rpc, KV_POOL_PUT_START, &req.base, NULL, 0,
                                  RPC_TIMEOUT_MS, (ProtobufCMessage **)&started, NULL),
                      KVP_ERR_INVALID_PARAM);
        req.chain  = 0;
        req.parent = bin(key_bytes, KVP_KEY_LEN);
        ASSERT_STATUS(kv_rpc_call(rpc, KV_POOL_PUT_START, &req.base, NULL, 0,
                                  RPC_TIMEOUT_MS, (ProtobufCMessage **)&started, NULL),
                      KVP_ERR_INVALID_PARAM);
    }
    /* bad namespaces: empty, too long, with a NUL */
    memset(ns_long, 'n', sizeof(ns_long));
    ASSERT_STATUS(raw_put_start_n(rpc, bin("", 0), kb, 1, sizes, 1, &started),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_put_start_n(rpc, bin(ns_long, KVP_NAMESPACE_MAX + 1), kb, 1, sizes,
                                  1, &started),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_put_start_n(rpc, bin("li\0mits", 7), kb, 1, sizes, 1, &started),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_get_start_n(rpc, bin("", 0), kb, 1, &leased),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(
        raw_get_start_n(rpc, bin(ns_long, KVP_NAMESPACE_MAX + 1), kb, 1, &leased),
        KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_get_start_n(rpc, bin("li\0mits", 7), kb, 1, &leased),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(raw_get_start_n(rpc, ns_bin("limits"), kb, nmax, &leased),
                  KVP_ERR_INVALID_PARAM);
    /* none of that left anything open: the arena is whole */
    expect_arena_free(rpc, arena);

    /* the boundaries themselves are accepted */
    ASSERT_OK(raw_put_start_n(rpc, bin(ns_long, KVP_NAMESPACE_MAX), kb, KVP_BATCH_MAX,
                              sizes, KVP_BATCH_MAX, &started));
    ASSERT_EQ(started->n_blocks, KVP_BATCH_MAX);
    for (size_t i = 0; i < KVP_BATCH_MAX; i++) {
        ASSERT_STATUS(started->blocks[i]->status, KVP_OK);
    }
    protobuf_c_message_free_unpacked(&started->base, NULL);
    ASSERT_OK(raw_get_start_n(rpc, ns_bin("limits"), kb, KVP_BATCH_MAX, &leased));
    ASSERT_EQ(leased->n_blocks, KVP_BATCH_MAX);
    ASSERT_STATUS(leased->blocks[0]->status, KVP_ERR_NOT_FOUND);
    ASSERT_OK(raw_get_end(rpc, leased->lease_id));
    protobuf_c_message_free_unpacked(&leased->base, NULL);
    /* per-block refusals: size 0, larger than the arena */
    {
        uint64_t sz[3] = {4 * KiB, 0, arena + 4 * KiB};
        ASSERT_OK(raw_put_start_n(rpc, ns_bin("limits"), kb, 3, sz, 3, &started));
        ASSERT_STATUS(started->blocks[0]->status, KVP_OK);
        ASSERT_STATUS(started->blocks[1]->status, KVP_ERR_INVALID_PARAM);
        ASSERT_STATUS(started->blocks[2]->status, KVP_ERR_TOO_LARGE);
        protobuf_c_message_free_unpacked(&started->base, NULL);
    }
    ASSERT_OK(raw_stats(rpc, &stats)); /* the connection is in sync */
    protobuf_c_message_free_unpacked(&stats->base, NULL);
    kv_rpc_client_destroy(rpc); /* drops its open reservations */

    /* at most 1024 open operations per connection */
    ASSERT_OK(kvp_put(client, "limits", &l, ldata, 64 * KiB));
    rpc  = raw_connect(&node, NULL);
    rpc2 = raw_connect(&node, NULL);
    for (int i = 0; i < OPS_MAX; i++) {
        leases[i] = lease_one(rpc, "limits", &l, ldata, 64 * KiB);
    }
    ASSERT_STATUS(raw_get_start(rpc, "limits", &l, 1, &leased), KVP_ERR_NO_SPACE);
    ASSERT_STATUS(raw_put_start(rpc, "limits", &keys[0], sizes, 1, &started),
                  KVP_ERR_NO_SPACE);
    /* the limit is per connection */
    extra[0] = lease_one(rpc2, "limits", &l, ldata, 64 * KiB);
    ASSERT_OK(raw_get_end(rpc2, extra[0]));
    /* ending some makes room again, and the connection keeps working */
    for (int i = 0; i < 10; i++) {
        ASSERT_OK(raw_get_end(rpc, leases[i * 100]));
    }
    ASSERT_OK(raw_stats(rpc, &stats));
    protobuf_c_message_free_unpacked(&stats->base, NULL);
    for (int i = 0; i < 10; i++) {
        extra[i] = lease_one(rpc, "limits", &l, ldata, 64 * KiB);
    }
    ASSERT_STATUS(raw_get_start(rpc, "limits", &l, 1, &leased), KVP_ERR_NO_SPACE);
    for (int i = 0; i < 10; i++) {
        ASSERT_STATUS(raw_get_end(rpc, leases[i * 100]), KVP_ERR_NOT_FOUND);
        ASSERT_OK(raw_get_end(rpc, extra[i]));
    }
    ASSERT_OK(raw_get_end(rpc, leases[1]));
    ASSERT_OK(raw_put_start(rpc, "limits", &keys[0], sizes, 1, &started));
    protobuf_c_message_free_unpacked(&started->base, NULL);
    expect_data(client, "limits", &l, ldata, 64 * KiB);

    /* delete the leased block: it stays until the connection closes; then
     * every pin is gone and the whole arena is free */
    ASSERT_OK(kvp_delete(client, "limits", &l, 1, NULL));
    expect_missing(client, "limits", &l);
    kv_rpc_client_destroy(rpc);
    for (uint64_t t0 = now_ms();;) {
        Kvpool__PutStartReply *s   = NULL;
        kvp_key_t              key = key_of("whole-arena");
        uint64_t               sz  = arena;
        ASSERT_OK(raw_put_start(rpc2, "limits", &key, &sz, 1, &s));
        int ok = s->blocks[0]->status == KVP_OK;
        protobuf_c_message_free_unpacked(&s->base, NULL);
        if (ok) {
            break;
        }
        ASSERT_LE(now_ms() - t0, 2000);
        sleep_ms(5);
    }
    kv_rpc_client_destroy(rpc2);

    free(kb);
    free(keys);
    free(sizes);
    free(ldata);
    kvp_client_disconnect(client);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* 6. The node is killed while a thread loads through the shared arena     */
/* ---------------------------------------------------------------------- */

#define KILL_BLOCKS 32
#define KILL_SIZE (2 * MiB)
#define KILL_CALLS 4096
#define FAILS_WANTED 4
#define CALL_LIMIT_MS 5000

typedef struct {
    uint64_t     start, end;
    kvp_status_t status;
} call_rec_t;

typedef struct {
    kvp_client_h          client;
    const char           *ns;
    kvp_key_t            *keys;
    uint8_t             **want;
    uint8_t             **bufs;
    uint64_t             *caps;
    size_t                n;
    atomic_int            ok_calls;
    atomic_int            in_call; /* 1 while inside kvp_get_batch() */
    atomic_int            stop;
    atomic_uint_least64_t killed_at; /* 0 until the node is killed */
    call_rec_t            recs[KILL_CALLS];
    int                   num_recs;
    int                   fails;
} loader_t;

static void loader_verify(loader_t *ld, const kvp_status_t *st, const uint64_t *sz)
{
    for (size_t i = 0; i < ld->n; i++) {
        ASSERT_STATUS(st[i], KVP_OK);
        ASSERT_EQ(sz[i], ld->caps[i]);
        check_bytes(ld->bufs[i], ld->want[i], ld->caps[i], "loaded block");
    }
}

/* Loads until stopped, or until FAILS_WANTED calls failed after the kill. */
static void *loader_main(void *arg)
{
    loader_t    *ld = arg;
    kvp_status_t st[KILL_BLOCKS];
    uint64_t     sz[KILL_BLOCKS];

    while (!atomic_load(&ld->stop) && ld->num_recs < KILL_CALLS) {
        call_rec_t *rec = &ld->recs[ld->num_recs++];
        uint64_t    killed;

        for (size_t i = 0; i < ld->n; i++) {
            memset(ld->bufs[i], 0, 64); /* stale bytes must not pass */
            st[i] = KVP_ERR_INTERNAL;
            sz[i] = 0;
        }
        rec->start = now_ms();
        atomic_store(&ld->in_call, 1);
        rec->status = kvp_get_batch(ld->client, ld->ns, ld->keys, (void *const *)ld->bufs,
                                    ld->caps, ld->n, sz, st);
        atomic_store(&ld->in_call, 0);
        rec->end = now_ms();
        if (rec->status == KVP_OK) {
            loader_verify(ld, st, sz); /* never OK with bad data */
            atomic_fetch_add(&ld->ok_calls, 1);
        } else {
            ASSERT_((KVP_STATUS_IS_CONNECTION_ERROR(rec->status) ||
                     rec->status == KVP_ERR_TIMED_OUT),
                    "a failed load is a connection error or a timeout, got %d (%s)",
                    (int)rec->status, kvp_status_string(rec->status));
            if (++ld->fails >= FAILS_WANTED) {
                break;
            }
        }
        killed = atomic_load(&ld->killed_at);
        if (killed != 0 && now_ms() - killed > 20000) {
            break; /* the main thread reports it */
        }
    }
    return NULL;
}

static void loader_init(loader_t *ld, kvp_client_h client, const char *ns, size_t n,
                        uint64_t size, uint64_t seed)
{
    uint64_t    *sizes = calloc(n, sizeof(*sizes));
    kvp_status_t st[KILL_BLOCKS];

    ASSERT(n <= KILL_BLOCKS && sizes != NULL);
    memset(ld, 0, sizeof(*ld));
    ld->client = client;
    ld->ns     = ns;
    ld->n      = n;
    ld->keys   = calloc(n, sizeof(*ld->keys));
    ld->want   = calloc(n, sizeof(*ld->want));
    ld->bufs   = calloc(n, sizeof(*ld->bufs));
    ld->caps   = calloc(n, sizeof(*ld->caps));
    ASSERT(ld->keys && ld->want && ld->bufs && ld->caps);
    for (size_t i = 0; i < n; i++) {
        ld->keys[i] = key_of("%s-%zu", ns, i);
        ld->want[i] = make_block(size, seed + i);
        ld->bufs[i] = malloc(size);
        ASSERT(ld->bufs[i] != NULL);
        ld->caps[i] = size;
        sizes[i]    = size;
    }
    ASSERT_OK(
        kvp_put_batch(client, ns, ld->keys, (const void *const *)ld->want, sizes, n, st));
    for (size_t i = 0; i < n; i++) {
        ASSERT_STATUS(st[i], KVP_OK);
    }
    free(sizes);
}

static void loader_free(loader_t *ld)
{
    for (size_t i = 0; i < ld->n; i++) {
        free(ld->want[i]);
        free(ld->bufs[i]);
    }
    free(ld->keys);
    free(ld->want);
    free(ld->bufs);
    free(ld->caps);
}

static void node_killed_during_gets(void)
{
    kv_test_node_t node_a, node_b;
    kvp_client_h   ca, cb;
    loader_t      *la = calloc(1, sizeof(*la)), *lb = calloc(1, sizeof(*lb));
    pthread_t      ta, tb;
    uint64_t       t0, t_kill, t_dead, first_fail_end = 0;
    int            wstatus = 0, ok_b_before, fails_after = 0;

    ASSERT(la != NULL && lb != NULL);
    shm_node_up(&node_a, "96MiB", NULL);
    shm_node_up(&node_b, "32MiB", NULL);
    ca = connect_shm(&node_a);
    cb = connect_shm(&node_b);
    loader_init(la, ca, "dying", KILL_BLOCKS, KILL_SIZE, 1000);
    loader_init(lb, cb, "living", 8, 256 * KiB, 2000);
    ASSERT_EQ(pthread_create(&ta, NULL, loader_main, la), 0);
    ASSERT_EQ(pthread_create(&tb, NULL, loader_main, lb), 0);

    /* both load fine, then node A dies mid-load */
    t0 = now_ms();
    while (atomic_load(&la->ok_calls) < 3 || atomic_load(&lb->ok_calls) < 3) {
        ASSERT_LE(now_ms() - t0, 30000);
        sleep_ms(5);
    }
    /* kill it a moment into a load (2 MiB x 32 take longer than that) */
    while (!atomic_load(&la->in_call)) {
        ASSERT_LE(now_ms() - t0, 30000);
    }
    sleep_ms(1);
    t_kill = now_ms();
    atomic_store(&la->killed_at, t_kill);
    ASSERT_EQ(kill(node_a.pid, SIGKILL), 0);
    reap_del(node_a.pid); /* it is gone: the reaper must not kill a reused pid */
    ASSERT_EQ(waitpid(node_a.pid, &wstatus, 0), node_a.pid);
    t_dead = now_ms();
    ASSERT(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
    ok_b_before = atomic_load(&lb->ok_calls);

    ASSERT_EQ(pthread_join(ta, NULL), 0);
    ASSERT_EQ(la->fails, FAILS_WANTED);
    for (int i = 0; i < la->num_recs; i++) {
        const call_rec_t *r = &la->recs[i];
        if (r->end < t_kill) {
            ASSERT_OK(r->status); /* before the kill every load worked */
            continue;
        }
        ASSERT_LE(r->end - r->start, CALL_LIMIT_MS);
        if (r->start >= t_dead) {
            ASSERT_NE(r->status, KVP_OK); /* the node is gone */
        }
        if (r->status != KVP_OK) {
            fails_after++;
            if (first_fail_end == 0) {
                first_fail_end = r->end;
            }
        } else {
            ASSERT_EQ(fails_after, 0); /* no OK after a failure */
        }
    }
    ASSERT_EQ(fails_after, FAILS_WANTED);
    ASSERT_LE(first_fail_end - t_kill, CALL_LIMIT_MS);
    for (int i = 0; i < la->num_recs; i++) {
        const call_rec_t *r = &la->recs[i];
        if (r->start <= t_kill && r->end >= t_kill) {
            fprintf(stderr,
                    "node killed %" PRIu64 " ms into a load of %" PRIu64
                    " ms, which returned %s\n",
                    t_kill - r->start, r->end - r->start, kvp_status_string(r->status));
        }
    }
    fprintf(stderr, "node killed: first failed load %" PRIu64 " ms after the kill\n",
            first_fail_end - t_kill);

    /* the other client, on the other node, went on meanwhile and still does */
    t0 = now_ms();
    while (atomic_load(&lb->ok_calls) < ok_b_before + 3) {
        ASSERT_LE(now_ms() - t0, 10000);
        sleep_ms(5);
    }
    atomic_store(&lb->stop, 1);
    ASSERT_EQ(pthread_join(tb, NULL), 0);
    ASSERT_EQ(lb->fails, 0);
    {
        kvp_key_t key = key_of("after-the-kill");
        put_ok(cb, "living", &key, 3 * MiB + 5, 77);
        expect_block(cb, "living", &key, 3 * MiB + 5, 77);
    }
    /* the dead connection still answers, with errors, and closes cleanly */
    {
        uint8_t      buf[64];
        kvp_status_t s = kvp_get(ca, "dying", &la->keys[0], buf, sizeof(buf), NULL);
        ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(s) || s == KVP_ERR_TIMED_OUT);
        s = kvp_put(ca, "dying", &la->keys[0], buf, sizeof(buf));
        ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(s) || s == KVP_ERR_TIMED_OUT);
    }
    kvp_client_disconnect(ca);
    kvp_client_disconnect(cb);
    loader_free(la);
    loader_free(lb);
    free(la);
    free(lb);
    node_down(&node_b);
}

/* ---------------------------------------------------------------------- */
/* 7. Who may map the arena                                                */
/* ---------------------------------------------------------------------- */

static void shm_auth(void)
{
    static const char *const  token_flags[] = {"--token", "s3cret", NULL};
    static const char *const  off_flags[]   = {"--shared-memory", "off", NULL};
    static const char *const  wrong[]       = {"wrong",   "",       "s3cre",
                                               "s3cretX", "S3CRET", "s3cret\n"};
    kv_test_node_t            node;
    kvp_client_h              client = NULL, c2;
    kv_rpc_client_t          *rpc;
    const Kvpool__HelloReply *hello;
    kvp_client_params_t       params = {0};
    kvp_key_t                 key    = key_of("auth");
    shm_answer_t              ans;
    char                      name[108];
    uint64_t                  arena_size;

    /* a node with a token */
    shm_node_up(&node, "32MiB", token_flags);
    client = connect_with(&node, "shm", "s3cret");
    ASSERT(strcmp(kvp_client_transport(client), "shm") == 0);
    put_ok(client, "auth", &key, 300 * KiB, 5);
    expect_block(client, "auth", &key, 300 * KiB, 5);
    c2 = connect_with(&node, "auto", "s3cret");
    ASSERT(strcmp(kvp_client_transport(c2), "shm") == 0);
    expect_block(c2, "auth", &key, 300 * KiB, 5);
    kvp_client_disconnect(c2);
    /* without the token not even the RPC connection */
    c2                = NULL;
    params.field_mask = KVP_CLIENT_PARAM_TRANSPORT;
    params.transport  = "shm";
    ASSERT_STATUS(kvp_client_connect(node.address, &params, &c2), KVP_ERR_AUTH);
    ASSERT(c2 == NULL);

    rpc   = raw_connect(&node, "s3cret");
    hello = kv_rpc_client_hello(rpc);
    ASSERT(hello->shm_socket != NULL && hello->shm_socket[0] != '\0');
    ASSERT(strlen(hello->shm_socket) < sizeof(name));
    snprintf(name, sizeof(name), "%s", hello->shm_socket);
    arena_size = hello->arena_size;
    ASSERT_EQ(arena_size, 32 * MiB);
    kv_rpc_client_destroy(rpc);

    /* raw handshakes: a wrong token gets 8 zero bytes and no descriptor */
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        shm_handshake(name, wrong[i], &ans);
        ASSERT_(ans.got == 8 && ans.size == 0 && ans.fd < 0,
                "token '%s': got %zd bytes, size %" PRIu64 ", fd %d", wrong[i], ans.got,
                ans.size, ans.fd);
    }
    /* the right one gets the arena */
    shm_handshake(name, "s3cret", &ans);
    ASSERT_EQ(ans.got, 8);
    ASSERT_EQ(ans.size, arena_size);
    ASSERT(ans.fd >= 0);
    {
        uint8_t *base = mmap(NULL, arena_size, PROT_READ, MAP_SHARED, ans.fd, 0);
        uint8_t *want = make_block(300 * KiB, 5);
        ASSERT(base != MAP_FAILED);
        ASSERT(memmem(base, arena_size, want, 300 * KiB) != NULL); /* the same memory */
        munmap(base, arena_size);
        free(want);
    }
    close(ans.fd);
    kvp_client_disconnect(client);
    node_down(&node);

    /* a node that does not share its arena */
    shm_node_up(&node, "32MiB", off_flags);
    rpc   = raw_connect(&node, NULL);
    hello = kv_rpc_client_hello(rpc);
    ASSERT(hello->shm_socket == NULL || hello->shm_socket[0] == '\0');
    kv_rpc_client_destroy(rpc);
    client = connect_with(&node, "auto", NULL);
    /* "auto" then takes the network path: ucx where the node has it, else frames */
    ASSERT(strcmp(kvp_client_transport(client), "shm") != 0);
    put_ok(client, "auth", &key, 300 * KiB, 6);
    expect_block(client, "auth", &key, 300 * KiB, 6);
    c2 = NULL;
    ASSERT_NE(kvp_client_connect(node.address, &params, &c2), KVP_OK);
    ASSERT(c2 == NULL);
    params.transport = "bogus";
    ASSERT_STATUS(kvp_client_connect(node.address, &params, &c2), KVP_ERR_INVALID_PARAM);
    ASSERT(c2 == NULL);
    kvp_client_disconnect(client);
    node_down(&node);
}

/*
 * A token longer than KVP_TOKEN_MAX is a wrong token like any other: the
 * node must refuse it with the documented answer (8 zero bytes, no
 * descriptor), and at once.
 */
static void shm_auth_overlong_token(void)
{
    static const char *const token_flags[] = {"--token", "s3cret", NULL};
    kv_test_node_t           node;
    kv_rpc_client_t         *rpc;
    shm_answer_t             ans;
    char                     name[108];
    uint8_t                  hello[1 + 200];
    uint64_t                 t0;

    shm_node_up(&node, "32MiB", token_flags);
    rpc = raw_connect(&node, "s3cret");
    snprintf(name, sizeof(name), "%s", kv_rpc_client_hello(rpc)->shm_socket);
    kv_rpc_client_destroy(rpc);

    hello[0] = 200;
    memset(hello + 1, 'x', 200);
    t0 = now_ms();
    shm_handshake_raw(name, hello, sizeof(hello), &ans);
    ASSERT(ans.fd < 0);
    ASSERT_LE(now_ms() - t0, 1000);
    ASSERT_(ans.got == 8 && ans.size == 0,
            "a %d-byte token: got %zd bytes of answer (want 8 zero bytes)", 200, ans.got);
    node_down(&node);
}

KV_TEST_MAIN(KV_TEST(shm_round_trip_batched), KV_TEST(corrupted_block_is_a_miss),
             KV_TEST(lease_pins_until_end_or_expiry), KV_TEST(uncommitted_put_reclaimed),
             KV_TEST(limits), KV_TEST(node_killed_during_gets), KV_TEST(shm_auth),
             KV_TEST(shm_auth_overlong_token))
