/*
 * Integration tests of the network data path: block bytes moved one-sided
 * through the transport layer (kvt "ucx", TCP on lo here: ctest sets
 * UCX_NET_DEVICES=lo) between libkvpool's caller buffers and the node's
 * registered arena (pool/node_ucx.c, client/ucx.c), under the two-phase
 * RPCs.  The client asks for transport "ucx" explicitly: on one host "auto"
 * picks the shared arena.
 *
 * Nodes are started with test_util.h's node_up (reaped if a test dies) and
 * stopped with SIGTERM, checking a clean exit.
 */
#include <kvpool/kvpool.h>
#include <kvproto/rpc_client.h>

#include "kvpool.pb-c.h"

#include <node_proc.h>
#include <test.h>
#include <test_util.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>

static const char *const quiet[] = {"--log-level", "warn", NULL};

static kvp_client_h connect_with(const kv_test_node_t *node, const char *transport)
{
    kvp_client_params_t params = {0};
    kvp_client_h        client = NULL;

    params.field_mask = KVP_CLIENT_PARAM_TRANSPORT | KVP_CLIENT_PARAM_TIMEOUT_MS;
    params.transport  = transport;
    params.timeout_ms = 4000;
    ASSERT_OK(kvp_client_connect(node->address, &params, &client));
    ASSERT(client != NULL);
    return client;
}

static kvp_client_h connect_ucx(const kv_test_node_t *node)
{
    kvp_client_h client = connect_with(node, "ucx");

    ASSERT(strcmp(kvp_client_transport(client), "ucx") == 0);
    return client;
}

static void check_bytes(const void *got, const void *want, uint64_t size)
{
    ASSERT(memcmp(got, want, size) == 0);
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
    check_bytes(buf, want, size);
    free(buf);
    free(want);
}

/* ---------------------------------------------------------------------- */
/* Batched round trip of mixed sizes                                       */
/* ---------------------------------------------------------------------- */

#define RT_BLOCKS 24

static void ucx_round_trip_batched(void)
{
    kv_test_node_t node;
    kvp_client_h   ucx, frame;
    kvp_key_t      keys[RT_BLOCKS];
    uint8_t       *data[RT_BLOCKS], *bufs[RT_BLOCKS];
    uint64_t       sizes[RT_BLOCKS], caps[RT_BLOCKS], got[RT_BLOCKS];
    kvp_status_t   st[RT_BLOCKS];
    rng_t          rng;

    node_up(&node, "128MiB", quiet);
    ucx   = connect_ucx(&node);
    frame = connect_with(&node, "frame");
    rng_seed(&rng, 42);
    for (int i = 0; i < RT_BLOCKS; i++) {
        /* 1 byte .. 3 MiB, odd sizes included */
        sizes[i] = i == 0 ? 1 : i == 1 ? 3 * MiB + 7 : rng_range(&rng, 1, 512 * KiB);
        keys[i]  = key_of("rt-%d", i);
        data[i]  = make_block(sizes[i], 100 + (uint64_t)i);
        bufs[i]  = malloc(sizes[i] + 64);
        caps[i]  = sizes[i] + 64;
        ASSERT(bufs[i] != NULL);
    }
    ASSERT_OK(kvp_put_batch(ucx, "rt", keys, (const void *const *)data, sizes, RT_BLOCKS,
                            st));
    for (int i = 0; i < RT_BLOCKS; i++) {
        ASSERT_STATUS(st[i], KVP_OK);
    }
    /* over ucx, and the same bytes over frames (what landed in the arena) */
    for (int pass = 0; pass < 2; pass++) {
        kvp_client_h c = pass == 0 ? ucx : frame;
        for (int i = 0; i < RT_BLOCKS; i++) {
            memset(bufs[i], 0xee, caps[i]);
            st[i] = KVP_ERR_INTERNAL;
        }
        ASSERT_OK(kvp_get_batch(c, "rt", keys, (void *const *)bufs, caps, RT_BLOCKS, got,
                                st));
        for (int i = 0; i < RT_BLOCKS; i++) {
            ASSERT_STATUS(st[i], KVP_OK);
            ASSERT_EQ(got[i], sizes[i]);
            check_bytes(bufs[i], data[i], sizes[i]);
        }
    }
    /* frames in, ucx out; a miss and a too-small buffer in one batch */
    {
        kvp_key_t k3[3] = {key_of("rt-frame"), key_of("rt-missing"), keys[1]};
        uint8_t  *d     = make_block(200 * KiB + 3, 9);
        uint64_t  c3[3] = {200 * KiB + 3, 100, 100}, g3[3];
        void     *b3[3] = {bufs[1], bufs[0], bufs[2]};
        ASSERT_OK(kvp_put(frame, "rt", &k3[0], d, 200 * KiB + 3));
        ASSERT_OK(kvp_get_batch(ucx, "rt", k3, b3, c3, 3, g3, st));
        ASSERT_STATUS(st[0], KVP_OK);
        check_bytes(bufs[1], d, 200 * KiB + 3);
        ASSERT_STATUS(st[1], KVP_ERR_NOT_FOUND);
        ASSERT_STATUS(st[2], KVP_ERR_BUFFER_TOO_SMALL);
        ASSERT_EQ(g3[2], sizes[1]);
        free(d);
    }
    ASSERT(strcmp(kvp_client_transport(ucx), "ucx") == 0); /* still */
    for (int i = 0; i < RT_BLOCKS; i++) {
        free(data[i]);
        free(bufs[i]);
    }
    kvp_client_disconnect(ucx);
    kvp_client_disconnect(frame);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* A damaged block is a miss over ucx                                      */
/* ---------------------------------------------------------------------- */

/* Map the node's arena through its shm socket (see test_shm.c). */
static uint8_t *arena_map(const kv_test_node_t *node, uint64_t *size_p)
{
    kv_rpc_client_params_t    params = {0};
    kv_rpc_client_t          *rpc    = NULL;
    const Kvpool__HelloReply *hello;
    struct sockaddr_un        addr = {.sun_family = AF_UNIX};
    uint8_t                   wire[8], token_len = 0;
    struct iovec              iov = {wire, sizeof(wire)};
    union {
        struct cmsghdr hdr;
        char           buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr   msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                           .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cm;
    size_t          name_len;
    int             sock, fd = -1;
    void           *base;

    params.address    = node->address;
    params.name       = "test_ucx-raw";
    params.timeout_ms = 10000;
    params.service    = &kvpool__pool_node__descriptor;
    ASSERT_OK(kv_rpc_client_create(&params, &rpc));
    hello = kv_rpc_client_hello(rpc);
    ASSERT(hello->shm_socket != NULL && hello->shm_socket[0] != '\0');
    ASSERT(hello->ucx_address != NULL && hello->ucx_address[0] != '\0');
    ASSERT(hello->ucx_rkey.len > 0 && hello->arena_base != 0);
    name_len = strlen(hello->shm_socket);
    ASSERT(name_len + 1 < sizeof(addr.sun_path));
    memcpy(addr.sun_path + 1, hello->shm_socket, name_len);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(sock >= 0);
    ASSERT_EQ(connect(sock, (struct sockaddr *)&addr,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name_len)),
              0);
    ASSERT_EQ(send(sock, &token_len, 1, MSG_NOSIGNAL), 1);
    ASSERT_EQ(recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL), 8);
    cm = CMSG_FIRSTHDR(&msg);
    ASSERT(cm != NULL && cm->cmsg_type == SCM_RIGHTS);
    memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    close(sock);
    *size_p = hello->arena_size;
    base    = mmap(NULL, *size_p, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT(base != MAP_FAILED);
    close(fd);
    kv_rpc_client_destroy(rpc);
    return base;
}

static void ucx_corrupted_block_is_a_miss(void)
{
    const uint64_t size = 256 * KiB;
    kv_test_node_t node;
    kvp_client_h   ucx;
    kvp_key_t      k[3] = {key_of("c0"), key_of("c1"), key_of("c2")};
    uint8_t       *data[3], *bufs[3], *base, *hit;
    uint64_t       caps[3] = {size, size, size}, sz[3], arena_size, flip;
    kvp_status_t   s[3];

    node_up(&node, "64MiB", quiet);
    ucx = connect_ucx(&node);
    for (int i = 0; i < 3; i++) {
        data[i] = make_block(size, 7000 + (uint64_t)i);
        bufs[i] = malloc(size);
        ASSERT(bufs[i] != NULL);
        ASSERT_OK(kvp_put(ucx, "cor", &k[i], data[i], size));
    }
    base = arena_map(&node, &arena_size);
    hit  = memmem(base, arena_size, data[1], size);
    ASSERT(hit != NULL);
    flip = (uint64_t)(hit - base) + size / 2 + 13;
    base[flip] ^= 0x40;

    ASSERT_STATUS(kvp_get(ucx, "cor", &k[1], bufs[1], size, NULL), KVP_ERR_CHECKSUM);
    for (int i = 0; i < 3; i++) {
        s[i] = KVP_ERR_INTERNAL;
    }
    ASSERT_OK(kvp_get_batch(ucx, "cor", k, (void *const *)bufs, caps, 3, sz, s));
    ASSERT_STATUS(s[0], KVP_OK);
    ASSERT_STATUS(s[1], KVP_ERR_CHECKSUM);
    ASSERT_STATUS(s[2], KVP_OK);
    check_bytes(bufs[0], data[0], size);
    check_bytes(bufs[2], data[2], size);
    /* restored, it reads again: the flipped byte alone was the cause */
    base[flip] ^= 0x40;
    expect_block(ucx, "cor", &k[1], size, 7001);
    ASSERT(strcmp(kvp_client_transport(ucx), "ucx") == 0);

    munmap(base, arena_size);
    for (int i = 0; i < 3; i++) {
        free(data[i]);
        free(bufs[i]);
    }
    kvp_client_disconnect(ucx);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* kill -9 of the node during a batch of ucx gets                          */
/* ---------------------------------------------------------------------- */

#define KILL_BLOCKS 32
#define KILL_SIZE (2 * MiB)

typedef struct {
    kvp_client_h client;
    kvp_key_t    keys[KILL_BLOCKS];
    uint8_t     *bufs[KILL_BLOCKS];
    atomic_int   ok_calls, stop, in_call;
    kvp_status_t fail_status;
    uint64_t     fail_end;  /* now_ms() when the first failed call returned */
    int          bad_bytes; /* an OK block with wrong bytes */
} loader_t;

static void *loader_main(void *arg)
{
    loader_t    *ld = arg;
    uint64_t     caps[KILL_BLOCKS], got[KILL_BLOCKS];
    kvp_status_t st[KILL_BLOCKS];

    for (int i = 0; i < KILL_BLOCKS; i++) {
        caps[i] = KILL_SIZE;
    }
    while (!atomic_load(&ld->stop)) {
        kvp_status_t s;
        atomic_store(&ld->in_call, 1);
        s = kvp_get_batch(ld->client, "kill", ld->keys, (void *const *)ld->bufs, caps,
                          KILL_BLOCKS, got, st);
        atomic_store(&ld->in_call, 0);
        for (int i = 0; i < KILL_BLOCKS; i++) {
            if (st[i] == KVP_OK && (got[i] != KILL_SIZE || ld->bufs[i][0] != (uint8_t)i ||
                                    ld->bufs[i][KILL_SIZE - 1] != (uint8_t)i)) {
                ld->bad_bytes++;
            }
        }
        if (s != KVP_OK) {
            ld->fail_status = s;
            ld->fail_end    = now_ms();
            break;
        }
        atomic_fetch_add(&ld->ok_calls, 1);
    }
    return NULL;
}

/*
 * Store the loader's blocks through @p client, start loading them in a
 * loop, and return once a few loads went through and one is in flight:
 * the moment to hurt the node.
 */
static void loader_start(loader_t *ld, kvp_client_h client, pthread_t *t)
{
    uint8_t *block = malloc(KILL_SIZE);
    uint64_t t0;

    ASSERT(block != NULL);
    for (int i = 0; i < KILL_BLOCKS; i++) {
        ld->keys[i] = key_of("kill-%d", i);
        ld->bufs[i] = malloc(KILL_SIZE);
        ASSERT(ld->bufs[i] != NULL);
        memset(block, i, KILL_SIZE);
        ASSERT_OK(kvp_put(client, "kill", &ld->keys[i], block, KILL_SIZE));
    }
    free(block);
    ld->client = client;
    ASSERT_EQ(pthread_create(t, NULL, loader_main, ld), 0);
    t0 = now_ms();
    while (atomic_load(&ld->ok_calls) < 3) {
        ASSERT_LE(now_ms() - t0, 20000);
        sleep_ms(2);
    }
    while (!atomic_load(&ld->in_call)) {
        ASSERT_LE(now_ms() - t0, 20000);
    }
}

static void ucx_node_killed_during_gets(void)
{
    kv_test_node_t node_a, node_b;
    kvp_client_h   ca, cb;
    loader_t      *ld = calloc(1, sizeof(*ld));
    pthread_t      t;
    uint64_t       t0, t_kill;
    int            wstatus = 0;

    ASSERT(ld != NULL);
    node_up(&node_a, "96MiB", quiet);
    node_up(&node_b, "32MiB", quiet);
    ca = connect_ucx(&node_a);
    cb = connect_ucx(&node_b);
    loader_start(ld, ca, &t);
    sleep_ms(1);
    t_kill = now_ms();
    ASSERT_EQ(kill(node_a.pid, SIGKILL), 0);
    reap_del(node_a.pid);
    ASSERT_EQ(waitpid(node_a.pid, &wstatus, 0), node_a.pid);
    ASSERT(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT(ld->fail_end >= t_kill);
    fprintf(stderr, "node killed: the batch of gets failed %" PRIu64 " ms later with %s\n",
            ld->fail_end - t_kill, kvp_status_string(ld->fail_status));
    ASSERT_LE(ld->fail_end - t_kill, 5000);
    ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(ld->fail_status) ||
           ld->fail_status == KVP_ERR_TIMED_OUT);
    ASSERT_EQ(ld->bad_bytes, 0);
    /* later calls fail too, quickly, and the client closes cleanly */
    {
        uint8_t      buf[64];
        kvp_status_t s;
        t0 = now_ms();
        s  = kvp_get(ca, "kill", &ld->keys[0], buf, sizeof(buf), NULL);
        ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(s) || s == KVP_ERR_TIMED_OUT);
        s = kvp_put(ca, "kill", &ld->keys[0], buf, sizeof(buf));
        ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(s) || s == KVP_ERR_TIMED_OUT);
        ASSERT_LE(now_ms() - t0, 5000);
    }
    kvp_client_disconnect(ca);

    /* the second node keeps working over ucx */
    {
        kvp_key_t key = key_of("after-the-kill");
        uint8_t  *d   = make_block(3 * MiB + 5, 77);
        ASSERT_OK(kvp_put(cb, "living", &key, d, 3 * MiB + 5));
        expect_block(cb, "living", &key, 3 * MiB + 5, 77);
        ASSERT(strcmp(kvp_client_transport(cb), "ucx") == 0);
        free(d);
    }
    kvp_client_disconnect(cb);
    for (int i = 0; i < KILL_BLOCKS; i++) {
        free(ld->bufs[i]);
    }
    free(ld);
    node_down(&node_b);
}

/* ---------------------------------------------------------------------- */
/* A stalled node: the ucx deadline fails the call, later calls use frames */
/* ---------------------------------------------------------------------- */

static void ucx_stalled_node_falls_back_to_frames(void)
{
    kv_test_node_t      node;
    kvp_client_h        c = NULL;
    kvp_client_params_t params = {0};
    loader_t           *ld     = calloc(1, sizeof(*ld));
    uint8_t            *block  = malloc(KILL_SIZE);
    pthread_t           t;
    uint64_t            t_stop;
    kvp_status_t        s;

    ASSERT(ld != NULL && block != NULL);
    node_up(&node, "96MiB", quiet);
    params.field_mask = KVP_CLIENT_PARAM_TRANSPORT | KVP_CLIENT_PARAM_TIMEOUT_MS;
    params.transport  = "ucx";
    params.timeout_ms = 1500;
    ASSERT_OK(kvp_client_connect(node.address, &params, &c));
    ASSERT(strcmp(kvp_client_transport(c), "ucx") == 0);
    loader_start(ld, c, &t);
    sleep_ms(3); /* most of a 64 MiB batch is the transfer, not its RPCs */
    t_stop = now_ms();
    ASSERT_EQ(kill(node.pid, SIGSTOP), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(kill(node.pid, SIGCONT), 0);
    fprintf(stderr, "node stopped: the batch of gets failed %" PRIu64 " ms later with %s;"
                    " transport now %s\n",
            ld->fail_end - t_stop, kvp_status_string(ld->fail_status),
            kvp_client_transport(c));
    /* the RPC deadline and the transfer's, one after the other at most */
    ASSERT_LE(ld->fail_end - t_stop, 2 * 1500 + 1000);
    ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(ld->fail_status) ||
           ld->fail_status == KVP_ERR_TIMED_OUT);
    ASSERT_EQ(ld->bad_bytes, 0);
    /* the node runs again: the client works (over frames if ucx failed) or
     * fails cleanly if its RPC connection went down too; never wrong bytes */
    s = kvp_get(c, "kill", &ld->keys[5], ld->bufs[5], KILL_SIZE, NULL);
    if (s == KVP_OK) {
        ASSERT(ld->bufs[5][0] == 5 && ld->bufs[5][KILL_SIZE - 1] == 5);
        memset(block, 0x3c, KILL_SIZE);
        ASSERT_OK(kvp_put(c, "kill", &ld->keys[6], block, KILL_SIZE));
        ASSERT_OK(kvp_get(c, "kill", &ld->keys[6], ld->bufs[6], KILL_SIZE, NULL));
        ASSERT(memcmp(ld->bufs[6], block, KILL_SIZE) == 0);
    } else {
        ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(s) || s == KVP_ERR_TIMED_OUT);
    }
    fprintf(stderr, "after SIGCONT: %s over %s\n", kvp_status_string(s),
            kvp_client_transport(c));
    kvp_client_disconnect(c);
    /* a new client gets ucx again */
    c = connect_ucx(&node);
    ASSERT_OK(kvp_get(c, "kill", &ld->keys[7], ld->bufs[7], KILL_SIZE, NULL));
    ASSERT(ld->bufs[7][0] == 7);
    kvp_client_disconnect(c);
    for (int i = 0; i < KILL_BLOCKS; i++) {
        free(ld->bufs[i]);
    }
    free(ld);
    free(block);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* A client killed with ucx puts and gets in flight does not hurt the node */
/* ---------------------------------------------------------------------- */

static void ucx_client_killed_mid_transfer(void)
{
    kv_test_node_t node;
    kvp_client_h   c;
    pid_t          child;
    int            fds[2], wstatus = 0;
    char           ready;

    node_up(&node, "96MiB", quiet);
    ASSERT_EQ(pipe(fds), 0);
    child = fork();
    ASSERT(child >= 0);
    if (child == 0) {
        /* put and get 16 x 2 MiB batches until killed */
        kvp_client_h cc;
        kvp_key_t    keys[16];
        uint8_t     *bufs[16];
        uint64_t     sizes[16], got[16];
        kvp_status_t st[16];

        reap_forget_all();
        close(fds[0]);
        cc = connect_ucx(&node);
        for (int i = 0; i < 16; i++) {
            keys[i]  = key_of("victim-%d", i);
            bufs[i]  = make_block(2 * MiB, (uint64_t)i);
            sizes[i] = 2 * MiB;
        }
        for (int round = 0;; round++) {
            kvp_put_batch(cc, "victim", keys, (const void *const *)bufs, sizes, 16, st);
            kvp_get_batch(cc, "victim", keys, (void *const *)bufs, sizes, 16, got, st);
            if (round == 2) {
                ASSERT_EQ(write(fds[1], "r", 1), 1);
            }
        }
    }
    close(fds[1]);
    ASSERT_EQ(read(fds[0], &ready, 1), 1);
    close(fds[0]);
    for (int i = 0; i < 5; i++) {
        sleep_ms(7);
        if (i == 4) {
            ASSERT_EQ(kill(child, SIGKILL), 0);
        }
    }
    ASSERT_EQ(waitpid(child, &wstatus, 0), child);
    ASSERT(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
    /* the node still serves, over ucx too, and stops cleanly (node_down) */
    sleep_ms(50);
    ASSERT(kv_test_node_alive(&node));
    c = connect_ucx(&node);
    {
        kvp_key_t key = key_of("survivor");
        uint8_t  *d   = make_block(2 * MiB + 1, 3);
        ASSERT_OK(kvp_put(c, "live", &key, d, 2 * MiB + 1));
        expect_block(c, "live", &key, 2 * MiB + 1, 3);
        free(d);
    }
    kvp_client_disconnect(c);
    node_down(&node);
}

/* ---------------------------------------------------------------------- */
/* --data-plane off, and what "auto" picks                                 */
/* ---------------------------------------------------------------------- */

static void ucx_data_plane_off_and_auto(void)
{
    static const char *const no_shm[] = {"--log-level", "warn", "--shared-memory", "off",
                                         NULL};
    static const char *const nothing[] = {"--log-level",   "warn", "--shared-memory",
                                          "off",           "--data-plane", "off", NULL};
    kv_test_node_t      node;
    kvp_client_h        c = NULL;
    kvp_client_params_t params = {0};
    kvp_key_t           key    = key_of("auto");
    uint8_t            *d      = make_block(1 * MiB + 1, 5);

    /* a node that does not share its arena: "auto" takes ucx */
    node_up(&node, "32MiB", no_shm);
    c = connect_with(&node, "auto");
    ASSERT(strcmp(kvp_client_transport(c), "ucx") == 0);
    ASSERT_OK(kvp_put(c, "auto", &key, d, 1 * MiB + 1));
    expect_block(c, "auto", &key, 1 * MiB + 1, 5);
    kvp_client_disconnect(c);
    node_down(&node);

    /* a node without the data plane: "ucx" is refused, "auto" takes frames */
    node_up(&node, "32MiB", nothing);
    params.field_mask = KVP_CLIENT_PARAM_TRANSPORT;
    params.transport  = "ucx";
    c                 = NULL;
    ASSERT_STATUS(kvp_client_connect(node.address, &params, &c), KVP_ERR_UNSUPPORTED);
    ASSERT(c == NULL);
    c = connect_with(&node, "auto");
    ASSERT(strcmp(kvp_client_transport(c), "frame") == 0);
    ASSERT_OK(kvp_put(c, "auto", &key, d, 1 * MiB + 1));
    expect_block(c, "auto", &key, 1 * MiB + 1, 5);
    kvp_client_disconnect(c);
    node_down(&node);

    /* a node on every interface announces 0.0.0.0:P: the client reaches it
     * at the host it used for the RPCs */
    {
        static const char *const any[] = {"--log-level", "warn", "--listen", "0.0.0.0",
                                          "--token",     "sesame", "--shared-memory",
                                          "off",         NULL};
        kv_test_node_t anynode;
        node_up(&anynode, "32MiB", any);
        params.field_mask = KVP_CLIENT_PARAM_TRANSPORT | KVP_CLIENT_PARAM_TOKEN;
        params.transport  = "ucx";
        params.token      = "sesame";
        c                 = NULL;
        ASSERT_OK(kvp_client_connect(anynode.address, &params, &c));
        ASSERT(strcmp(kvp_client_transport(c), "ucx") == 0);
        ASSERT_OK(kvp_put(c, "auto", &key, d, 1 * MiB + 1));
        expect_block(c, "auto", &key, 1 * MiB + 1, 5);
        kvp_client_disconnect(c);
        node_down(&anynode);
    }

    /* a node with the data plane off but sharing: shm still works */
    {
        static const char *const off[] = {"--log-level", "warn", "--data-plane", "off",
                                          NULL};
        node_up(&node, "32MiB", off);
        c = connect_with(&node, "auto");
        ASSERT(strcmp(kvp_client_transport(c), "shm") == 0);
        kvp_client_disconnect(c);
        node_down(&node);
    }
    free(d);
}

/*
 * Registered memory: blocks put from and got into slices of one region the
 * engine registered once; the bytes match, for every transport (the
 * registration only records the region without the network path).
 */
static void ucx_registered_memory(void)
{
    enum { N = 16 };
    static const char *const transports[] = {"ucx", "shm", "frame"};
    const uint64_t size = 256 * KiB;
    kv_test_node_t node;

    node_up(&node, "64MiB", quiet);
    for (size_t t = 0; t < 3; t++) {
        kvp_client_h client = connect_with(&node, transports[t]);
        uint8_t     *region = malloc(2 * N * size);
        void        *src[N], *dst[N];
        uint64_t     sizes[N], caps[N], got[N];
        kvp_key_t    keys[N];
        kvp_status_t st[N];
        kvp_mem_h    mem;

        ASSERT(strcmp(kvp_client_transport(client), transports[t]) == 0);
        ASSERT_STATUS(kvp_mem_reg(client, region, 0, &mem), KVP_ERR_INVALID_PARAM);
        ASSERT_OK(kvp_mem_reg(client, region, 2 * N * size, &mem));
        for (int i = 0; i < N; i++) {
            src[i]   = region + (uint64_t)i * size;
            dst[i]   = region + (uint64_t)(N + i) * size;
            sizes[i] = caps[i] = size;
            keys[i]  = key_of("registered-%zu-%d", t, i);
            fill_random(src[i], size, (uint64_t)(t * 100 + i));
        }
        ASSERT_OK(kvp_put_batch(client, "ns", keys, (const void *const *)src, sizes, N, st));
        for (int i = 0; i < N; i++) {
            ASSERT_OK(st[i]);
        }
        memset(dst[0], 0, N * size);
        ASSERT_OK(kvp_get_batch(client, "ns", keys, (void *const *)dst, caps, N, got, st));
        for (int i = 0; i < N; i++) {
            ASSERT_OK(st[i]);
            ASSERT_EQ(got[i], size);
            check_bytes(dst[i], src[i], size);
        }
        ASSERT(strcmp(kvp_client_transport(client), transports[t]) == 0);
        kvp_mem_dereg(mem);
        kvp_mem_dereg(NULL);
        kvp_client_disconnect(client);
        free(region);
    }
    node_down(&node);
}

KV_TEST_MAIN(KV_TEST(ucx_round_trip_batched), KV_TEST(ucx_corrupted_block_is_a_miss),
             KV_TEST(ucx_node_killed_during_gets),
             KV_TEST(ucx_stalled_node_falls_back_to_frames),
             KV_TEST(ucx_client_killed_mid_transfer),
             KV_TEST(ucx_data_plane_off_and_auto), KV_TEST(ucx_registered_memory))
