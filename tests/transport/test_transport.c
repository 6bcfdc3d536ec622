/*
 * Tests of the transport layer over its default backend, UCX, on loopback
 * (UCX_NET_DEVICES=lo: with peer-failure handling UCX uses TCP here).
 * Each test forks its server processes first (transport_helpers.h), then
 * creates its own client context.
 */
#include "base.h" /* transport/ private: the stub backend of test_unsupported */
#include "transport_helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static const kvt_params_t *params_timeout(kvt_params_t *p, uint32_t timeout_ms)
{
    memset(p, 0, sizeof(*p));
    p->field_mask = KVT_PARAM_FIELD_TIMEOUT_MS;
    p->timeout_ms = timeout_ms;
    return p;
}

/*
 * Random batches of mixed sizes, put, flush, checked remotely, got back,
 * with the RMA mode @p rma; @p expect is how the endpoint must say it works.
 */
static void roundtrip_test(kvt_ucx_rma_t rma, const char *expect)
{
    server_t     server;
    client_t     client;
    kvt_params_t params = {.field_mask = KVT_PARAM_FIELD_UCX_RMA, .ucx_rma = rma};
    kvt_ep_h     ep;
    char         info[4096];

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, &params);
    ASSERT(strcmp(kvt_context_backend(client.ctx), "ucx") == 0);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    ASSERT_OK(kvt_ep_status(ep));
    ASSERT_OK(kvt_ucx_ep_info(ep, info, sizeof(info)));
    fprintf(stderr, "ucx endpoint to %s:\n%s\n", server.addr, info);
    ASSERT(strstr(info, "tcp") != NULL); /* PEER error mode: no shared memory */
    ASSERT_(strstr(info, expect) != NULL, "expected '%s' RMA", expect);

    roundtrip(&client, &server, ep, 4);

    /* Bytes the client never wrote still hold the server's pattern. */
    {
        kvt_iov_t     iov = {.local     = client.dst,
                             .local_mem = client.dst_mem,
                             .remote    = server.base + REGION_SIZE - 8 * KiB,
                             .rkey      = server.rkey,
                             .rkey_len  = server.rkey_len,
                             .len       = 8 * KiB};
        kvt_request_h req;
        kvp_status_t  status = kvt_ep_get(ep, &iov, 1, &req);
        /* request_test until done: the non-blocking path */
        while (status == KVP_INPROGRESS) {
            status = kvt_request_test(req);
            if (status != KVP_INPROGRESS) {
                kvt_request_free(req);
            }
        }
        ASSERT_OK(status);
        uint64_t sum = kv_checksum(client.dst, 8 * KiB);
        ASSERT_EQ(server_checksum(&server, REGION_SIZE - 8 * KiB, 8 * KiB), sum);
    }

    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
}

/* The default: over TCP the layer emulates RMA with active messages. */
static void test_roundtrip(void)
{
    roundtrip_test(KVT_UCX_RMA_AUTO, "kvt RMA: emulated");
    leak_check();
}

/* UCX's own ucp_put_nbx / ucp_get_nbx (its software RMA over TCP here). */
static void test_roundtrip_native(void)
{
    roundtrip_test(KVT_UCX_RMA_NATIVE, "kvt RMA: native");
    leak_check();
}

/* Flush: remote completion of every put issued before it. */
static void flush_test(kvt_ucx_rma_t rma)
{
    server_t      server;
    client_t      client;
    kvt_params_t  params = {.field_mask = KVT_PARAM_FIELD_UCX_RMA, .ucx_rma = rma};
    kvt_ep_h      ep;
    kvt_iov_t     iov[BATCH];
    kvt_request_h req[4];
    int           nreq = 0;

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, &params);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    ASSERT_OK(kvt_ep_flush(ep)); /* nothing in flight */

    /* Several batches in flight at once, none waited for: flush alone must
     * make all of them visible at the server. */
    for (int b = 0; b < 4; b++) {
        for (int i = 0; i < BATCH; i++) {
            size_t off = ((size_t)b * BATCH + (size_t)i) * 512 * KiB;
            iov[i]     = (kvt_iov_t){.local     = client.src + off,
                                     .local_mem = client.src_mem,
                                     .remote    = server.base + off,
                                     .rkey      = server.rkey,
                                     .rkey_len  = server.rkey_len,
                                     .len       = 512 * KiB};
            fill_random(iov[i].local, iov[i].len);
        }
        kvp_status_t status = kvt_ep_put(ep, iov, BATCH, &req[nreq]);
        if (status == KVP_INPROGRESS) {
            nreq++;
        } else {
            ASSERT_OK(status);
        }
    }
    ASSERT_OK(kvt_ep_flush(ep));
    for (int i = 0; i < nreq; i++) {
        /* local completion follows from remote completion */
        ASSERT_OK(kvt_request_test(req[i]));
        kvt_request_free(req[i]);
    }
    ASSERT_EQ(server_checksum(&server, 0, 4 * BATCH * 512 * KiB),
              kv_checksum(client.src, 4 * BATCH * 512 * KiB));

    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
}

static void test_flush(void)
{
    flush_test(KVT_UCX_RMA_AUTO);
    leak_check();
}

static void test_flush_native(void)
{
    flush_test(KVT_UCX_RMA_NATIVE);
    leak_check();
}

/*
 * The target checks ranges itself (emulated RMA): a client whose rkey
 * envelope claims a larger region gets its piece refused, and the
 * connection survives.
 */
static void test_target_checks(void)
{
    server_t  server;
    client_t  client;
    kvt_ep_h  ep;
    kvt_iov_t iov;
    uint8_t   rkey[KVT_RKEY_MAX];

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, NULL);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    memcpy(rkey, server.rkey, server.rkey_len);
    rkey[16 + 3] ^= 0x10; /* region length += 256 MiB: a lie */
    iov = (kvt_iov_t){.local     = client.src,
                      .local_mem = client.src_mem,
                      .remote    = server.base + REGION_SIZE,
                      .rkey      = rkey,
                      .rkey_len  = server.rkey_len,
                      .len       = 4 * KiB};
    ASSERT_STATUS(xfer_wait(ep, &iov, 1, 0), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(xfer_wait(ep, &iov, 1, 1), KVP_ERR_INVALID_PARAM);
    ASSERT_OK(kvt_ep_status(ep));
    roundtrip(&client, &server, ep, 1);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
    leak_check();
}

/* Requests freed before they complete (orphans) are freed by the layer. */
static void test_orphans(void)
{
    server_t      server;
    client_t      client;
    kvt_ep_h      ep;
    kvt_iov_t     iov[BATCH];
    kvt_request_h req;

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, NULL);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    batch_make(&client, &server, iov, 0);
    if (kvt_ep_put(ep, iov, BATCH, &req) == KVP_INPROGRESS) {
        kvt_request_free(req);
    }
    batch_make(&client, &server, iov, 1);
    if (kvt_ep_get(ep, iov, BATCH, &req) == KVP_INPROGRESS) {
        kvt_request_free(req);
    }
    ASSERT_OK(kvt_ep_flush(ep));
    /* and some still in flight when the endpoint goes */
    if (kvt_ep_get(ep, iov, BATCH, &req) == KVP_INPROGRESS) {
        kvt_request_free(req);
    }
    kvt_ep_destroy(ep);
    client_cleanup(&client); /* ASan's leak check: nothing left behind */
    server_stop(&server);
    leak_check();
}

/* Unknown backends, and a backend that provides nothing: every operation
 * answers KVP_ERR_UNSUPPORTED, none crashes on a missing function. */
static kvp_status_t stub_init(kvt_context_h ctx, const kvt_params_t *params)
{
    return KVP_OK;
}

static const kvt_backend_t stub_backend = {
    .name          = "stub",
    .id            = 99,
    .context_size  = sizeof(struct kvt_context),
    .mem_size      = sizeof(struct kvt_mem),
    .listener_size = sizeof(struct kvt_listener),
    .ep_size       = sizeof(struct kvt_ep),
    .request_size  = sizeof(struct kvt_request),
    .ops           = {.context_init = stub_init},
};

static void test_unsupported(void)
{
    kvt_params_t   params = {.field_mask = KVT_PARAM_FIELD_BACKEND};
    kvt_context_h  ctx;
    kvt_mem_h      mem;
    kvt_listener_h l;
    kvt_ep_h       ep;
    char           buf[64];
    int            fd;

    params.backend = "nosuch";
    ASSERT_STATUS(kvt_context_create(&params, &ctx), KVP_ERR_UNSUPPORTED);
    ASSERT_STATUS(kvt_context_create(params_timeout(&params, 0), &ctx),
                  KVP_ERR_INVALID_PARAM);

    ASSERT_OK(kvt__backend_register(&stub_backend));
    params.field_mask = KVT_PARAM_FIELD_BACKEND;
    params.backend    = "stub";
    ASSERT_OK(kvt_context_create(&params, &ctx));
    ASSERT(strcmp(kvt_context_backend(ctx), "stub") == 0);
    ASSERT_STATUS(kvt_mem_reg(ctx, buf, sizeof(buf), &mem), KVP_ERR_UNSUPPORTED);
    ASSERT_STATUS(kvt_listener_create(ctx, "127.0.0.1:0", &l), KVP_ERR_UNSUPPORTED);
    ASSERT_STATUS(kvt_ep_connect(ctx, "127.0.0.1:1", &ep), KVP_ERR_UNSUPPORTED);
    ASSERT_STATUS(kvt_context_event_fd(ctx, &fd), KVP_ERR_UNSUPPORTED);
    ASSERT_STATUS(kvt_context_arm(ctx), KVP_ERR_UNSUPPORTED);
    ASSERT_STATUS(kvt_verbs_device_name(ctx, buf, sizeof(buf)), KVP_ERR_UNSUPPORTED);
    kvt_progress(ctx);
    kvt_context_destroy(ctx);

    /* a backend-only call on the other backend */
    ASSERT_OK(kvt_context_create(NULL, &ctx));
    ASSERT_STATUS(kvt_verbs_device_name(ctx, buf, sizeof(buf)), KVP_ERR_UNSUPPORTED);
    kvt_context_destroy(ctx);
    leak_check();
}

/* Bad pieces fail alone, locally, and leave the endpoint usable. */
static void test_bad_args(void)
{
    server_t      server;
    client_t      client;
    kvt_ep_h      ep;
    kvt_iov_t     good, bad;
    kvt_request_h req = NULL;
    uint8_t       rkey[KVT_RKEY_MAX];

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, NULL);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    good = (kvt_iov_t){.local     = client.src,
                       .local_mem = client.src_mem,
                       .remote    = server.base,
                       .rkey      = server.rkey,
                       .rkey_len  = server.rkey_len,
                       .len       = 64 * KiB};

    ASSERT_OK(kvt_ep_put(ep, &good, 0, &req)); /* empty batch */
    ASSERT_STATUS(kvt_ep_put(ep, NULL, 1, &req), KVP_ERR_INVALID_PARAM);

    bad       = good; /* local range runs past its registration */
    bad.local = client.src + REGION_SIZE - 4 * KiB;
    ASSERT_STATUS(kvt_ep_put(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    bad           = good; /* local memory from the wrong registration */
    bad.local_mem = client.dst_mem;
    ASSERT_STATUS(kvt_ep_put(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    bad        = good; /* remote range runs past the region */
    bad.remote = server.base + REGION_SIZE - 4 * KiB;
    ASSERT_STATUS(kvt_ep_get(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    bad        = good;
    bad.remote = server.base - 4 * KiB;
    ASSERT_STATUS(kvt_ep_get(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    bad          = good; /* truncated rkey */
    bad.rkey_len = server.rkey_len - 1;
    ASSERT_STATUS(kvt_ep_get(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    bad          = good; /* oversized rkey */
    bad.rkey_len = KVT_RKEY_MAX + 1;
    ASSERT_STATUS(kvt_ep_get(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    memcpy(rkey, server.rkey, server.rkey_len);
    rkey[5]  = 2; /* another backend's rkey */
    bad      = good;
    bad.rkey = rkey;
    ASSERT_STATUS(kvt_ep_get(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);
    memcpy(rkey, "garbage!", 8);
    ASSERT_STATUS(kvt_ep_get(ep, &bad, 1, &req), KVP_ERR_INVALID_PARAM);

    /* the endpoint is fine: a good batch with a bad piece last fails
     * before anything is issued, then the good one alone works */
    kvt_iov_t two[2] = {good, good};
    two[1].remote    = server.base + REGION_SIZE - 32 * KiB;
    ASSERT_STATUS(kvt_ep_put(ep, two, 2, &req), KVP_ERR_INVALID_PARAM);
    ASSERT_OK(kvt_ep_status(ep));
    fill_random(client.src, 64 * KiB);
    ASSERT_OK(xfer_wait(ep, &good, 1, 0));
    ASSERT_OK(kvt_ep_flush(ep));
    ASSERT_EQ(server_checksum(&server, 0, 64 * KiB), kv_checksum(client.src, 64 * KiB));

    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
    leak_check();
}

static void test_listener_address(void)
{
    kvt_context_h  ctx;
    kvt_listener_h l, l2;
    char           addr[KVT_ADDR_STRLEN], small[8];
    unsigned       port = 0;

    ASSERT_OK(kvt_context_create(NULL, &ctx));
    ASSERT_STATUS(kvt_listener_create(ctx, "no-port", &l), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kvt_listener_create(ctx, "127.0.0.1:99999", &l), KVP_ERR_INVALID_PARAM);
    ASSERT_OK(kvt_listener_create(ctx, "127.0.0.1:0", &l));
    ASSERT_OK(kvt_listener_address(l, addr, sizeof(addr)));
    ASSERT(sscanf(addr, "127.0.0.1:%u", &port) == 1);
    ASSERT(port > 0 && port < 65536);
    ASSERT_STATUS(kvt_listener_address(l, small, sizeof(small)),
                  KVP_ERR_BUFFER_TOO_SMALL);
    /* the same port again: bind fails cleanly */
    kvp_status_t status = kvt_listener_create(ctx, addr, &l2);
    ASSERT(status != KVP_OK);
    fprintf(stderr, "second listener on %s: %s\n", addr, kvp_status_string(status));
    kvt_listener_destroy(l);
    kvt_context_destroy(ctx);
    leak_check();
}

/* Nobody listens: the connect fails within the deadline. */
static void test_connect_refused(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sin);
    kvt_params_t       params;
    kvt_context_h      ctx;
    kvt_ep_h           ep;
    char               addr[64];
    int                fd;

    /* a port that is bound but not listening cannot be taken meanwhile */
    fd                  = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    ASSERT(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sin.sin_port));

    ASSERT_OK(kvt_context_create(params_timeout(&params, 2000), &ctx));
    ASSERT_STATUS(kvt_ep_connect(ctx, "127.0.0.1", &ep), KVP_ERR_INVALID_PARAM);
    for (int i = 0; i < 2; i++) {
        double       t0     = now_s();
        kvp_status_t status = kvt_ep_connect(ctx, addr, &ep);
        double       dt     = now_s() - t0;
        fprintf(stderr, "connect to %s: %s after %.3f s\n", addr,
                kvp_status_string(status), dt);
        ASSERT(status == KVP_ERR_CONNECTION_REFUSED || status == KVP_ERR_TIMED_OUT);
        ASSERT(dt < 3.0);
    }
    kvt_context_destroy(ctx);
    close(fd);
    leak_check();
}

/*
 * kill -9 of the server during a batch of gets: the wait ends with a
 * connection error (or the deadline) within 10 s, and the context still
 * connects to a second server.
 */
static void peer_killed(int get)
{
    server_t      victim, other;
    client_t      client;
    kvt_params_t  params;
    kvt_ep_h      ep;
    kvt_iov_t     iov[BATCH];
    kvt_request_h req;
    kvp_status_t  status = KVP_OK;
    double        t0, dt;

    server_start(&victim, "ucx", "127.0.0.1:0", 0);
    server_start(&other, "ucx", "127.0.0.1:0", 0);
    client_init(&client, params_timeout(&params, 3000));
    ASSERT_OK(kvt_ep_connect(client.ctx, victim.addr, &ep));
    roundtrip(&client, &victim, ep, 1);

    for (int i = 0; i < BATCH; i++) {
        iov[i] =
            (kvt_iov_t){.local = (get ? client.dst : client.src) + (size_t)i * 2 * MiB,
                        .local_mem = get ? client.dst_mem : client.src_mem,
                        .remote    = victim.base + (size_t)i * 2 * MiB,
                        .rkey      = victim.rkey,
                        .rkey_len  = victim.rkey_len,
                        .len       = 2 * MiB};
    }
    status = get ? kvt_ep_get(ep, iov, BATCH, &req) : kvt_ep_put(ep, iov, BATCH, &req);
    ASSERT_STATUS(status, KVP_INPROGRESS);
    t0 = now_s();
    kill(victim.pid, SIGKILL);
    status = kvt_request_wait(req);
    kvt_request_free(req);
    /* if that batch beat the kill, the next ones cannot */
    for (int tries = 0; status == KVP_OK && tries < 100; tries++) {
        status = xfer_wait(ep, iov, BATCH, get);
    }
    dt = now_s() - t0;
    fprintf(stderr, "%s a killed server: %s after %.3f s\n",
            get ? "gets from" : "puts to", kvp_status_string(status), dt);
    ASSERT(status == KVP_ERR_CONNECTION_LOST || status == KVP_ERR_TIMED_OUT);
    ASSERT(dt < 10.0);
    ASSERT(kvt_ep_status(ep) != KVP_OK);
    /* every later call fails at once */
    t0 = now_s();
    ASSERT_STATUS(kvt_ep_put(ep, iov, 1, &req), kvt_ep_status(ep));
    ASSERT_STATUS(kvt_ep_flush(ep), kvt_ep_status(ep));
    kvt_ep_destroy(ep);
    ASSERT(now_s() - t0 < 1.0);
    server_kill(&victim);

    /* the context is fine: a new connection to a live server works */
    ASSERT_OK(kvt_ep_connect(client.ctx, other.addr, &ep));
    roundtrip(&client, &other, ep, 1);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&other);
}

static void test_peer_killed(void)
{
    peer_killed(1);
    leak_check();
}

static void test_peer_killed_puts(void)
{
    peer_killed(0);
    leak_check();
}

/*
 * A client killed during batches of puts and gets must not take the server
 * down: the server keeps serving a new client and exits cleanly.
 */
static void test_client_killed(void)
{
    server_t server;
    client_t client;
    kvt_ep_h ep;
    pid_t    pid;
    int      wstatus;

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    for (int round = 0; round < 4; round++) {
        fflush(NULL);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            kvt_iov_t     iov[BATCH];
            kvt_request_h req;

            client_init(&client, NULL);
            ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
            for (;;) { /* keep batches in flight until killed */
                batch_make(&client, &server, iov, round & 1);
                kvp_status_t status = round & 1 ? kvt_ep_get(ep, iov, BATCH, &req)
                                                : kvt_ep_put(ep, iov, BATCH, &req);
                if (status == KVP_INPROGRESS) {
                    kvt_request_free(req);
                }
                for (int i = 0; i < 16; i++) {
                    kvt_progress(client.ctx);
                }
            }
        }
        usleep(150 * 1000 + (useconds_t)round * 50 * 1000);
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
        ASSERT(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
        ASSERT_EQ(waitpid(server.pid, &wstatus, WNOHANG), 0); /* still alive */
    }
    usleep(100 * 1000);
    client_init(&client, NULL);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    roundtrip(&client, &server, ep, 1);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
    leak_check();
}

/*
 * A peer that is alive but stops serving (SIGSTOP): the wait returns
 * KVP_ERR_TIMED_OUT at the deadline, the endpoint is failed, and the
 * server, once resumed, serves a new connection.
 */
static void test_deadline(void)
{
    server_t      server;
    client_t      client;
    kvt_params_t  params;
    kvt_ep_h      ep;
    kvt_iov_t     iov[BATCH];
    kvt_request_h req;
    kvp_status_t  status;
    double        t0, dt;

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, params_timeout(&params, 1000));
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    roundtrip(&client, &server, ep, 1);

    kill(server.pid, SIGSTOP);
    batch_make(&client, &server, iov, 1);
    for (int i = 0; i < BATCH; i++) {
        memset(iov[i].local, 0xee, iov[i].len);
    }
    t0     = now_s();
    status = kvt_ep_get(ep, iov, BATCH, &req);
    ASSERT_STATUS(status, KVP_INPROGRESS);
    status = kvt_request_wait(req);
    dt     = now_s() - t0;
    fprintf(stderr, "gets from a stopped server: %s after %.3f s\n",
            kvp_status_string(status), dt);
    ASSERT_STATUS(status, KVP_ERR_TIMED_OUT);
    ASSERT(dt >= 0.9 && dt < 3.0);
    ASSERT_STATUS(kvt_request_test(req), KVP_ERR_TIMED_OUT); /* final */
    kvt_request_free(req);
    ASSERT_STATUS(kvt_ep_status(ep), KVP_ERR_TIMED_OUT);
    ASSERT_STATUS(kvt_ep_get(ep, iov, BATCH, &req), KVP_ERR_TIMED_OUT);

    /* The server wakes up and answers the abandoned gets: nothing may land
     * in the buffers the caller took back, and the server must survive
     * answering a connection that is gone. */
    kill(server.pid, SIGCONT);
    for (t0 = now_s(); now_s() - t0 < 0.3;) {
        kvt_progress(client.ctx);
    }
    for (int i = 0; i < BATCH; i++) {
        for (size_t j = 0; j < iov[i].len; j++) {
            ASSERT_(((uint8_t *)iov[i].local)[j] == 0xee, "late byte in piece %d at %zu",
                    i, j);
        }
    }
    kvt_ep_destroy(ep);

    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    roundtrip(&client, &server, ep, 1);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
    leak_check();
}

/* A server that sleeps on the event fd between bursts still serves. */
static void test_event_fd(void)
{
    server_t server;
    client_t client;
    kvt_ep_h ep;
    int      fd = -1;

    server_start(&server, "ucx", "127.0.0.1:0", 1);
    client_init(&client, NULL);
    ASSERT_OK(kvt_context_event_fd(client.ctx, &fd));
    ASSERT(fd >= 0);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    roundtrip(&client, &server, ep, 2);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
    leak_check();
}

/* 2 MiB blocks, 32 per batch, one batch in flight: put and get rates. */
static void throughput(kvt_ucx_rma_t rma, const char *name)
{
    const int    batches = 16;
    server_t     server;
    client_t     client;
    kvt_params_t params = {.field_mask = KVT_PARAM_FIELD_UCX_RMA, .ucx_rma = rma};
    kvt_ep_h     ep;
    kvt_iov_t    put[BATCH], get[BATCH];
    double       t0, put_s, get_s, mib;

    server_start(&server, "ucx", "127.0.0.1:0", 0);
    client_init(&client, &params);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    for (int i = 0; i < BATCH; i++) {
        put[i]           = (kvt_iov_t){.local     = client.src + (size_t)i * 2 * MiB,
                                       .local_mem = client.src_mem,
                                       .remote    = server.base + (size_t)i * 2 * MiB,
                                       .rkey      = server.rkey,
                                       .rkey_len  = server.rkey_len,
                                       .len       = 2 * MiB};
        get[i]           = put[i];
        get[i].local     = client.dst + (size_t)i * 2 * MiB;
        get[i].local_mem = client.dst_mem;
    }
    fill_random(client.src, BATCH * 2 * MiB);
    ASSERT_OK(xfer_wait(ep, put, BATCH, 0)); /* warm up */
    ASSERT_OK(xfer_wait(ep, get, BATCH, 1));

    t0 = now_s();
    for (int b = 0; b < batches; b++) {
        ASSERT_OK(xfer_wait(ep, put, BATCH, 0));
    }
    ASSERT_OK(kvt_ep_flush(ep));
    put_s = now_s() - t0;
    t0    = now_s();
    for (int b = 0; b < batches; b++) {
        ASSERT_OK(xfer_wait(ep, get, BATCH, 1));
    }
    get_s = now_s() - t0;
    ASSERT(memcmp(client.src, client.dst, BATCH * 2 * MiB) == 0);

    mib = (double)batches * BATCH * 2;
    printf("throughput (ucx %s RMA, UCX_NET_DEVICES=%s, 2 MiB x %d per batch, %d "
           "batches): put %.0f MiB/s, get %.0f MiB/s\n",
           name, getenv("UCX_NET_DEVICES") ? getenv("UCX_NET_DEVICES") : "?", BATCH,
           batches, mib / put_s, mib / get_s);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
}

static void test_throughput(void)
{
    throughput(KVT_UCX_RMA_AUTO, "emulated");
    throughput(KVT_UCX_RMA_NATIVE, "native");
    leak_check();
}

int main(int argc, char **argv)
{
    static const kv_test_t tests[] = {
        KV_TEST(test_roundtrip),
        KV_TEST(test_roundtrip_native),
        KV_TEST(test_flush),
        KV_TEST(test_flush_native),
        KV_TEST(test_target_checks),
        KV_TEST(test_orphans),
        KV_TEST(test_unsupported),
        KV_TEST(test_bad_args),
        KV_TEST(test_listener_address),
        KV_TEST(test_connect_refused),
        KV_TEST(test_peer_killed),
        KV_TEST(test_peer_killed_puts),
        KV_TEST(test_client_killed),
        KV_TEST(test_deadline),
        KV_TEST(test_event_fd),
        KV_TEST(test_throughput),
    };

    /* ctest sets it too; a manual run gets the same loopback-only setup */
    setenv("UCX_NET_DEVICES", "lo", 0);
    test_log_init();
    return kv_test_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
