/*
 * service.c - the daemons' side of systemd's notification protocol.
 *
 * sd_notify() opens a datagram socket, sends and closes it each time, so
 * the watchdog pings are rate-limited here: the coordinator ticks every
 * tenth of its lease (10 ms with a 100 ms lease), and a ping every quarter
 * of WatchdogSec= is what systemd's documentation recommends (at least
 * every half).  The watchdog interval is read from the environment once.
 */
#include <kv/log.h>
#include <kv/service.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

static struct {
    int      checked;       /* the environment has been read */
    int      notify;        /* $NOTIFY_SOCKET is set */
    int      warned;        /* a failed send has been logged */
    uint64_t watchdog_usec; /* $WATCHDOG_USEC for this process, 0: none */
    uint64_t last_ping_usec;
} service;

static void service_check(void)
{
    const char *socket_path = getenv("NOTIFY_SOCKET");
    uint64_t    usec        = 0;

    if (service.checked) {
        return;
    }
    service.checked = 1;
    service.notify  = socket_path != NULL && socket_path[0] != '\0';
    if (service.notify && sd_watchdog_enabled(0, &usec) > 0) {
        service.watchdog_usec = usec;
    }
}

static uint64_t now_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void service_send(const char *msg)
{
    int ret = sd_notify(0, msg);

    if (ret < 0 && !service.warned) {
        service.warned = 1;
        kv_log_warn("cannot notify the service manager (%.*s): %s",
                    (int)strcspn(msg, "\n"), msg, strerror(-ret));
    }
}

void kv_service_ready(const char *status)
{
    char msg[300];

    service_check();
    if (!service.notify) {
        return;
    }
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%.255s", status != NULL ? status : "");
    service_send(msg);
    if (service.watchdog_usec != 0) {
        kv_log_info("service manager: ready, watchdog every %llu ms",
                    (unsigned long long)(service.watchdog_usec / 1000));
        service_send("WATCHDOG=1");
        service.last_ping_usec = now_usec();
    } else {
        kv_log_info("service manager: ready");
    }
}

void kv_service_announce(const char *program, const char *listen, unsigned port,
                         unsigned http_port)
{
    char status[300];
    int  len;

    printf("%s listening on %s:%u\n", program, listen, port);
    len = snprintf(status, sizeof(status), "serving %.255s:%u", listen, port);
    if (http_port != 0) {
        printf("%s http on %s:%u\n", program, listen, http_port);
        snprintf(status + len, sizeof(status) - (size_t)len, ", http on port %u", http_port);
    }
    fflush(stdout);
    kv_service_ready(status);
}

void kv_service_watchdog(void)
{
    uint64_t now;

    service_check();
    if (service.watchdog_usec == 0) {
        return;
    }
    now = now_usec();
    if (service.last_ping_usec != 0 &&
        now - service.last_ping_usec < service.watchdog_usec / 4) {
        return;
    }
    service.last_ping_usec = now;
    service_send("WATCHDOG=1");
}

void kv_service_stopping(void)
{
    service_check();
    if (service.notify) {
        service_send("STOPPING=1\nSTATUS=stopping");
    }
}
