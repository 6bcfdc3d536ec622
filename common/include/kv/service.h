/**
 * @file service.h
 * @brief What a daemon tells its service manager (systemd's sd_notify
 * protocol, through libsystemd): readiness, watchdog pings, shutdown.
 *
 * Every call is a no-op, and cheap, when the daemon was not started by a
 * service manager that asked for notifications ($NOTIFY_SOCKET unset).
 */
#ifndef KV_SERVICE_H
#define KV_SERVICE_H

/**
 * @brief Tell the manager the daemon serves now (READY=1), with a one-line
 * @p status it shows in `systemctl status`.  Call once the listening
 * sockets accept connections.
 */
void kv_service_ready(const char *status);

/**
 * @brief Ping the watchdog (WATCHDOG=1) if the unit has one (WatchdogSec=);
 * call from the daemon's periodic tick, which runs on the event loop, so
 * a stuck loop stops the pings and the manager restarts the daemon.
 */
void kv_service_watchdog(void);

/** @brief Tell the manager the daemon is shutting down (STOPPING=1). */
void kv_service_stopping(void);

#endif
