/*
 * service.c - sd_notify(3) readiness, watchdog and shutdown messages.
 */
#include <kv/log.h>
#include <kv/service.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

void kv_service_ready(const char *status)
{
    char     msg[300];
    uint64_t usec = 0;
    int      ret;

    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
    ret = sd_notify(0, msg);
    if (ret < 0) {
        kv_log_warn("cannot tell the service manager we are ready: %s", strerror(-ret));
    } else if (ret > 0 && sd_watchdog_enabled(0, &usec) > 0) {
        kv_log_info("service manager: ready, watchdog every %llu ms",
                    (unsigned long long)(usec / 1000));
    }
}

void kv_service_watchdog(void)
{
    uint64_t usec;

    /* sd_watchdog_enabled() reads the environment: cheap enough per tick */
    if (sd_watchdog_enabled(0, &usec) > 0) {
        sd_notify(0, "WATCHDOG=1");
    }
}

void kv_service_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}
