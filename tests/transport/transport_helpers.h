/**
 * @file transport_helpers.h
 * @brief Shared by test_transport.c and test_verbs.c: a "server" helper
 * process that registers a region and serves one-sided operations on it,
 * and a client side that moves random batches and checks the bytes.
 *
 * The server is forked before the test creates any transport context of
 * its own (UCX does not survive fork).  It talks to the test over a
 * socketpair: first it sends its listener address, the region's base
 * address and packed rkey; then it answers commands (checksum a range,
 * quit).  It dies with its parent (PR_SET_PDEATHSIG) and when the
 * socketpair closes, so a failed test leaves no process behind.
 */
#ifndef KV_TEST_TRANSPORT_HELPERS_H
#define KV_TEST_TRANSPORT_HELPERS_H

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvt/transport.h>
#include <test.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define REGION_SIZE (64 * MiB)
#define BATCH 32

/* ---------------------------------------------------------------------- */
/* Socketpair messages                                                     */
/* ---------------------------------------------------------------------- */

typedef struct {
    char     addr[KVT_ADDR_STRLEN];
    uint64_t base;
    uint32_t rkey_len;
} hello_t;

typedef struct {
    uint8_t  op; /* 'C' checksum, 'Q' quit */
    uint64_t off;
    uint64_t len;
} cmd_t;

static inline int io_full(int fd, void *buf, size_t len, int writing)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Logging                                                                 */
/* ---------------------------------------------------------------------- */

/* The last error line the library logged (for skip reasons). */
static char last_error[1024];

static inline void test_log(kvp_log_level_t level, const char *message, void *arg)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    int                verbose = *(int *)arg;

    if (level == KVP_LOG_ERROR) {
        snprintf(last_error, sizeof(last_error), "%s", message);
    }
    if (verbose || level <= KVP_LOG_WARN) {
        fprintf(stderr, "[%d %s] %s\n", (int)getpid(), names[level], message);
    }
}

static inline void test_log_init(void)
{
    static int verbose;
    verbose = getenv("KVP_TRACE") != NULL;
    kv_log_set_handler(verbose ? KVP_LOG_DEBUG : KVP_LOG_INFO, test_log, &verbose);
}

/*
 * The test harness ends forked tests with _exit(), which skips LSan's
 * check at exit: run it here, at the end of each test and of each server.
 */
#if defined(__SANITIZE_ADDRESS__)
#define KVT_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVT_TEST_LSAN 1
#endif
#endif
#ifdef KVT_TEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif

static inline void leak_check(void)
{
#ifdef KVT_TEST_LSAN
    if (__lsan_do_recoverable_leak_check() != 0) {
        fprintf(stderr, "leaks found (see above)\n");
        abort();
    }
#endif
}

static inline double now_s(void)
{
    return (double)kv_time_ns() / 1e9;
}

/* ---------------------------------------------------------------------- */
/* The server process                                                      */
/* ---------------------------------------------------------------------- */

typedef struct {
    pid_t    pid;
    int      fd;
    char     addr[KVT_ADDR_STRLEN];
    uint64_t base;
    uint8_t  rkey[KVT_RKEY_MAX];
    size_t   rkey_len;
} server_t;

/* verbs: the local RDMA interface's address, for every context made here */
static const char *helper_device_addr;

static inline uint8_t pattern_byte(uint64_t off)
{
    return (uint8_t)((off * 2654435761u) >> 13);
}

/*
 * Server body (in the child).  sleepy: wait on the event fd between bursts
 * of progress instead of spinning.
 */
static inline void server_run(int fd, const char *backend, const char *listen_addr,
                              int sleepy)
{
    kvt_params_t   params = {.field_mask  = KVT_PARAM_FIELD_BACKEND,
                             .backend     = backend,
                             .device_addr = helper_device_addr};
    kvt_context_h  ctx;
    kvt_listener_h l;
    kvt_mem_h      mem;
    hello_t        hello;
    uint8_t       *region;
    void          *rkey;
    size_t         rkey_len;
    int            efd = -1;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (helper_device_addr != NULL) {
        params.field_mask |= KVT_PARAM_FIELD_DEVICE_ADDR;
    }
    region = kv_malloc(REGION_SIZE, "test region");
    for (size_t i = 0; i < REGION_SIZE; i++) {
        region[i] = pattern_byte(i);
    }
    ASSERT_OK(kvt_context_create(&params, &ctx));
    ASSERT_OK(kvt_mem_reg(ctx, region, REGION_SIZE, &mem));
    ASSERT_OK(kvt_mem_pack_rkey(mem, &rkey, &rkey_len));
    ASSERT_OK(kvt_listener_create(ctx, listen_addr, &l));
    memset(&hello, 0, sizeof(hello));
    ASSERT_OK(kvt_listener_address(l, hello.addr, sizeof(hello.addr)));
    hello.base     = (uint64_t)(uintptr_t)region;
    hello.rkey_len = (uint32_t)rkey_len;
    ASSERT(io_full(fd, &hello, sizeof(hello), 1) == 0);
    ASSERT(io_full(fd, rkey, rkey_len, 1) == 0);
    kv_free(rkey);
    if (sleepy) {
        ASSERT_OK(kvt_context_event_fd(ctx, &efd));
    }

    for (;;) {
        struct pollfd pfd[2]  = {{.fd = fd, .events = POLLIN},
                                 {.fd = efd, .events = POLLIN}};
        int           timeout = 0;

        for (int i = 0; i < 64; i++) {
            kvt_progress(ctx);
        }
        if (sleepy && kvt_context_arm(ctx) == KVP_OK) {
            timeout = 1000; /* nothing pending: sleep until an event */
        }
        if (poll(pfd, sleepy ? 2 : 1, timeout) <= 0 || !(pfd[0].revents)) {
            continue;
        }
        cmd_t cmd;
        if (io_full(fd, &cmd, sizeof(cmd), 0) != 0) {
            _exit(3); /* the test went away */
        }
        if (cmd.op == 'Q') {
            break;
        }
        if (cmd.op == 'C') {
            uint64_t sum = cmd.off + cmd.len <= REGION_SIZE
                               ? kv_checksum(region + cmd.off, cmd.len)
                               : 0;
            ASSERT(io_full(fd, &sum, sizeof(sum), 1) == 0);
        }
    }
    kvt_listener_destroy(l);
    kvt_mem_dereg(mem);
    kvt_context_destroy(ctx);
    kv_free(region);
    close(fd);
    leak_check();
    _exit(0);
}

static inline void server_start(server_t *s, const char *backend, const char *listen_addr,
                                int sleepy)
{
    int     sv[2];
    hello_t hello;

    ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    fflush(NULL);
    s->pid = fork();
    ASSERT(s->pid >= 0);
    if (s->pid == 0) {
        close(sv[0]);
        server_run(sv[1], backend, listen_addr, sleepy);
    }
    close(sv[1]);
    s->fd = sv[0];
    ASSERT(io_full(s->fd, &hello, sizeof(hello), 0) == 0);
    ASSERT(hello.rkey_len > 0 && hello.rkey_len <= KVT_RKEY_MAX);
    ASSERT(io_full(s->fd, s->rkey, hello.rkey_len, 0) == 0);
    memcpy(s->addr, hello.addr, sizeof(s->addr));
    s->addr[sizeof(s->addr) - 1] = '\0';
    s->base                      = hello.base;
    s->rkey_len                  = hello.rkey_len;
}

/* XXH3-64 of the server's bytes [off, off + len). */
static inline uint64_t server_checksum(server_t *s, uint64_t off, uint64_t len)
{
    cmd_t    cmd = {.op = 'C', .off = off, .len = len};
    uint64_t sum;

    ASSERT(io_full(s->fd, &cmd, sizeof(cmd), 1) == 0);
    ASSERT(io_full(s->fd, &sum, sizeof(sum), 0) == 0);
    return sum;
}

/* Ask the server to clean up and exit; it must exit 0. */
static inline void server_stop(server_t *s)
{
    cmd_t cmd = {.op = 'Q'};
    int   wstatus;

    ASSERT(io_full(s->fd, &cmd, sizeof(cmd), 1) == 0);
    ASSERT_EQ(waitpid(s->pid, &wstatus, 0), s->pid);
    close(s->fd);
    ASSERT_(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0,
            "server exited with status 0x%x", wstatus);
}

static inline void server_kill(server_t *s)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    close(s->fd);
}

/* ---------------------------------------------------------------------- */
/* The client side                                                         */
/* ---------------------------------------------------------------------- */

typedef struct {
    kvt_context_h ctx;
    uint8_t      *src, *dst;
    kvt_mem_h     src_mem, dst_mem;
} client_t;

static inline void client_init(client_t *c, const kvt_params_t *params)
{
    ASSERT_OK(kvt_context_create(params, &c->ctx));
    c->src = kv_malloc(REGION_SIZE, "test src");
    c->dst = kv_malloc(REGION_SIZE, "test dst");
    ASSERT_OK(kvt_mem_reg(c->ctx, c->src, REGION_SIZE, &c->src_mem));
    ASSERT_OK(kvt_mem_reg(c->ctx, c->dst, REGION_SIZE, &c->dst_mem));
}

static inline void client_cleanup(client_t *c)
{
    kvt_mem_dereg(c->src_mem);
    kvt_mem_dereg(c->dst_mem);
    kvt_context_destroy(c->ctx);
    kv_free(c->src);
    kv_free(c->dst);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static inline void fill_random(uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = rng();
        memcpy(p + i, &v, 8);
    }
    for (; i < len; i++) {
        p[i] = (uint8_t)rng();
    }
}

/*
 * A batch of BATCH blocks of 4 KiB .. 4 MiB (log-uniform sizes), at
 * non-overlapping random offsets of the region, the same offset locally
 * (src for puts, dst for gets) and remotely.
 */
static inline void batch_make(const client_t *c, const server_t *s, kvt_iov_t *iov,
                              int get)
{
    size_t off = 0;

    for (int i = 0; i < BATCH; i++) {
        size_t len = (4 * KiB) << (rng() % 11);
        size_t gap = (rng() % 64) * 4 * KiB;

        if (off + gap + len > REGION_SIZE) {
            gap = 0;
            len = KV_MIN(len, REGION_SIZE - off);
        }
        off += gap;
        iov[i] = (kvt_iov_t){
            .local     = (get ? c->dst : c->src) + off,
            .local_mem = get ? c->dst_mem : c->src_mem,
            .remote    = s->base + off,
            .rkey      = s->rkey,
            .rkey_len  = s->rkey_len,
            .len       = len,
        };
        off += len;
    }
}

/* Issue and finish one batched operation; returns its status. */
static inline kvp_status_t xfer_wait(kvt_ep_h ep, const kvt_iov_t *iov, size_t n, int get)
{
    kvt_request_h req = NULL;
    kvp_status_t  status;

    status = get ? kvt_ep_get(ep, iov, n, &req) : kvt_ep_put(ep, iov, n, &req);
    if (status == KVP_INPROGRESS) {
        ASSERT(req != NULL);
        status = kvt_request_wait(req);
        kvt_request_free(req);
    }
    return status;
}

/*
 * @p rounds times: put a random batch, flush, check the server's bytes,
 * get it back into dst and compare.  Returns the bytes moved each way.
 */
static inline size_t roundtrip(client_t *c, server_t *s, kvt_ep_h ep, int rounds)
{
    kvt_iov_t put[BATCH], get[BATCH];
    size_t    bytes = 0;

    for (int r = 0; r < rounds; r++) {
        batch_make(c, s, put, 0);
        for (int i = 0; i < BATCH; i++) {
            fill_random(put[i].local, put[i].len);
            get[i]           = put[i];
            get[i].local     = c->dst + ((uint8_t *)put[i].local - c->src);
            get[i].local_mem = c->dst_mem;
            memset(get[i].local, 0xee, get[i].len);
            bytes += put[i].len;
        }
        ASSERT_OK(xfer_wait(ep, put, BATCH, 0));
        ASSERT_OK(kvt_ep_flush(ep));
        /* remote completion: the server's memory holds the bytes now */
        for (int i = 0; i < BATCH; i += 7) {
            ASSERT_EQ(server_checksum(s, put[i].remote - s->base, put[i].len),
                      kv_checksum(put[i].local, put[i].len));
        }
        ASSERT_OK(xfer_wait(ep, get, BATCH, 1));
        for (int i = 0; i < BATCH; i++) {
            ASSERT_(memcmp(get[i].local, put[i].local, put[i].len) == 0,
                    "round %d block %d (%zu bytes at +%zu) differs", r, i, put[i].len,
                    (size_t)(put[i].remote - s->base));
        }
    }
    return bytes;
}

#endif
