/*
 * The daemons' side of systemd's notification protocol (common/service.c),
 * as a Type=notify unit sees it: each daemon is started with NOTIFY_SOCKET
 * naming a datagram socket of the test's (and WATCHDOG_USEC), and the test
 * checks what arrives there:
 *
 *   READY=1 (with STATUS=serving HOST:PORT) once the port accepts
 *   connections, WATCHDOG=1 from the tick, rate-limited to a quarter of
 *   the interval however fast the tick, STOPPING=1 on SIGTERM and exit 0;
 *   and nothing at all without WATCHDOG_USEC (no watchdog) or NOTIFY_SOCKET.
 */
#include <node_proc.h>
#include <test.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

/* Watchdog interval given to the daemons: pings every 0.5 s at most. */
#define WATCHDOG_USEC "2000000"

typedef struct {
    char dir[128];
    char path[160];
    int  fd;
} notify_sock_t;

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A datagram socket in a fresh directory, named by NOTIFY_SOCKET for the
 * processes started after this (and WATCHDOG_USEC when @p watchdog). */
static void notify_open(notify_sock_t *ns, int watchdog)
{
    const char        *tmp  = getenv("TMPDIR");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};

    snprintf(ns->dir, sizeof(ns->dir), "%s/kvpool-notify-XXXXXX", tmp ? tmp : "/tmp");
    ASSERT(mkdtemp(ns->dir) != NULL);
    snprintf(ns->path, sizeof(ns->path), "%s/notify", ns->dir);
    ASSERT(strlen(ns->path) < sizeof(addr.sun_path));
    memcpy(addr.sun_path, ns->path, strlen(ns->path) + 1);
    ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT(ns->fd >= 0);
    ASSERT(bind(ns->fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    ASSERT(setenv("NOTIFY_SOCKET", ns->path, 1) == 0);
    if (watchdog) {
        ASSERT(setenv("WATCHDOG_USEC", WATCHDOG_USEC, 1) == 0);
    } else {
        unsetenv("WATCHDOG_USEC");
    }
}

static void notify_close(notify_sock_t *ns)
{
    close(ns->fd);
    unlink(ns->path);
    rmdir(ns->dir);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
}

/* Does datagram @p msg hold the line @p line? */
static int has_line(const char *msg, const char *line)
{
    size_t len = strlen(line);

    for (const char *p = msg; p != NULL; p = strchr(p, '\n')) {
        p += *p == '\n';
        if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0')) {
            return 1;
        }
    }
    return 0;
}

/* The next datagram within @p timeout_ms into @p buf: 1, or 0 on timeout. */
static int notify_recv(notify_sock_t *ns, char *buf, size_t len, int timeout_ms)
{
    struct pollfd pfd = {.fd = ns->fd, .events = POLLIN};
    ssize_t       n;

    if (poll(&pfd, 1, timeout_ms) <= 0) {
        return 0;
    }
    n = recv(ns->fd, buf, len - 1, 0);
    ASSERT(n >= 0);
    buf[n] = '\0';
    return 1;
}

/* Wait up to @p timeout_ms for a datagram with the line @p want (others
 * are skipped and counted in *@p others_p if not NULL); the datagram is
 * left in @p buf.  Fails the test on timeout. */
static void notify_expect(notify_sock_t *ns, const char *who, const char *want,
                          int timeout_ms, char *buf, size_t len, int *others_p)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    while (now_ms() < deadline) {
        if (!notify_recv(ns, buf, len, (int)(deadline - now_ms()))) {
            break;
        }
        if (has_line(buf, want)) {
            return;
        }
        if (others_p != NULL) {
            (*others_p)++;
        }
    }
    fprintf(stderr, "%s: no %s within %d ms\n", who, want, timeout_ms);
    ASSERT(0);
}

/* Does 127.0.0.1:@p port accept a TCP connection? */
static int port_accepts(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int                fd  = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int                ok;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* READY=1 with the right STATUS, the port accepting, then WATCHDOG=1. */
static void check_ready(notify_sock_t *ns, const kv_test_node_t *proc, const char *who)
{
    char msg[512], status[96];

    notify_expect(ns, who, "READY=1", 10000, msg, sizeof(msg), NULL);
    snprintf(status, sizeof(status), "STATUS=serving 127.0.0.1:%d", proc->port);
    ASSERT_(strstr(msg, status) != NULL, "%s: '%s' in '%s'", who, status, msg);
    ASSERT_(port_accepts(proc->port), "%s: port %d accepts when READY=1 arrives", who,
            proc->port);
    notify_expect(ns, who, "WATCHDOG=1", 3000, msg, sizeof(msg), NULL);
}

/* SIGTERM: STOPPING=1, then exit status 0. */
static void check_stop(notify_sock_t *ns, kv_test_node_t *proc, const char *who)
{
    char msg[512];
    int  status = -2;

    ASSERT(kill(proc->pid, SIGTERM) == 0);
    notify_expect(ns, who, "STOPPING=1", 10000, msg, sizeof(msg), NULL);
    for (int i = 0; i < 1000 && waitpid(proc->pid, &status, WNOHANG) != proc->pid; i++) {
        usleep(10000);
    }
    ASSERT_(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s exits 0 on SIGTERM (%d)",
            who, status);
}

/* A coordinator and a node joined to it, each with its own socket. */
static void test_notify_coord_and_node(void)
{
    notify_sock_t  coord_ns, node_ns;
    kv_test_node_t coord, node;
    char           coord_flag[80];

    notify_open(&coord_ns, 1);
    ASSERT(kv_test_coord_start(&coord, 0, NULL) == 0);
    check_ready(&coord_ns, &coord, "kvpool-coord");

    notify_open(&node_ns, 1);
    snprintf(coord_flag, sizeof(coord_flag), "%s", coord.address);
    ASSERT(kv_test_node_start(&node, "16MiB",
                              (const char *const[]){"--coord", coord_flag, "--data-plane",
                                                    "off", NULL}) == 0);
    check_ready(&node_ns, &node, "kvpool-node");

    check_stop(&node_ns, &node, "kvpool-node");
    check_stop(&coord_ns, &coord, "kvpool-coord");
    notify_close(&node_ns);
    notify_close(&coord_ns);
}

/* The coordinator ticks every tenth of its lease (10 ms with 100 ms): the
 * pings stay at one per quarter interval, not one per tick. */
static void test_notify_watchdog_rate(void)
{
    notify_sock_t  ns;
    kv_test_node_t coord;
    char           msg[512];
    int            pings = 0;
    uint64_t       end;

    notify_open(&ns, 1);
    ASSERT(kv_test_coord_start(&coord, 0,
                               (const char *const[]){"--lease-ms", "100", NULL}) == 0);
    notify_expect(&ns, "kvpool-coord", "READY=1", 10000, msg, sizeof(msg), NULL);
    end = now_ms() + 2000;
    while (now_ms() < end) {
        if (notify_recv(&ns, msg, sizeof(msg), (int)(end - now_ms())) &&
            has_line(msg, "WATCHDOG=1")) {
            pings++;
        }
    }
    /* 2 s at one ping per 0.5 s: about 4 (the tick runs 200 times) */
    ASSERT_(pings >= 2 && pings <= 8, "2..8 watchdog pings in 2 s (got %d)", pings);
    check_stop(&ns, &coord, "kvpool-coord");
    notify_close(&ns);
}

/* Without WATCHDOG_USEC (no WatchdogSec=) there are no pings; READY=1 and
 * STOPPING=1 still come. */
static void test_notify_no_watchdog(void)
{
    notify_sock_t  ns;
    kv_test_node_t node;
    char           msg[512];
    int            others = 0;

    notify_open(&ns, 0);
    ASSERT(kv_test_node_start(&node, "16MiB",
                              (const char *const[]){"--data-plane", "off", NULL}) == 0);
    notify_expect(&ns, "kvpool-node", "READY=1", 10000, msg, sizeof(msg), NULL);
    while (notify_recv(&ns, msg, sizeof(msg), 2500)) {
        ASSERT_(!has_line(msg, "WATCHDOG=1"), "no WATCHDOG=1 without WATCHDOG_USEC: '%s'",
                msg);
    }
    ASSERT(kill(node.pid, SIGTERM) == 0);
    notify_expect(&ns, "kvpool-node", "STOPPING=1", 10000, msg, sizeof(msg), &others);
    ASSERT_EQ(others, 0);
    ASSERT(waitpid(node.pid, NULL, 0) == node.pid);
    notify_close(&ns);
}

/* Without NOTIFY_SOCKET the daemons run as before (the other tests start
 * them so too); here: a node with WATCHDOG_USEC but no socket serves and
 * stops cleanly. */
static void test_notify_unset(void)
{
    kv_test_node_t node;

    unsetenv("NOTIFY_SOCKET");
    ASSERT(setenv("WATCHDOG_USEC", WATCHDOG_USEC, 1) == 0);
    ASSERT(kv_test_node_start(&node, "16MiB",
                              (const char *const[]){"--data-plane", "off", NULL}) == 0);
    ASSERT(port_accepts(node.port));
    usleep(1500 * 1000); /* a tick or two */
    ASSERT(kv_test_node_alive(&node));
    ASSERT_EQ(kv_test_node_stop(&node), 0);
    unsetenv("WATCHDOG_USEC");
}

KV_TEST_MAIN(KV_TEST(test_notify_coord_and_node), KV_TEST(test_notify_watchdog_rate),
             KV_TEST(test_notify_no_watchdog), KV_TEST(test_notify_unset))
