/**
 * @file service.h
 * @brief What a daemon tells its service manager: systemd's notification
 * protocol (sd_notify(3), through libsystemd) for readiness, watchdog
 * pings and shutdown.
 *
 * The manager passes $NOTIFY_SOCKET (Type=notify units) and, with
 * WatchdogSec=, $WATCHDOG_USEC.  Without them every call is a no-op that
 * costs a branch: kvpool-node and kvpool-coord started by hand, by a test
 * or by `kvpool demo` behave exactly as before.  The calls are meant for
 * the daemon's main thread (the one that runs its event loop); they keep a
 * little state and are not thread-safe.  They never fail: a message the
 * manager cannot be sent is logged once as a warning and otherwise
 * ignored.
 */
#ifndef KV_SERVICE_H
#define KV_SERVICE_H

/**
 * @brief Tell the manager that the daemon serves (READY=1).
 *
 * Call once, after the listening sockets accept connections (after the
 * daemon printed its "listening on" line): with Type=notify, units ordered
 * after this one start only then, and `systemctl start` returns then.
 *
 * @param [in] status One line shown by `systemctl status` (STATUS=), e.g.
 *                    "serving 127.0.0.1:7070"; copied, may be NULL.  Longer
 *                    than 255 bytes it is cut.
 */
void kv_service_ready(const char *status);

/**
 * @brief Announce that the daemon serves: "PROGRAM listening on LISTEN:PORT"
 * and, when @p http_port is not 0, "PROGRAM http on LISTEN:HTTP_PORT" on
 * stdout, flushed (tests and `kvpool demo` read the ports there), then
 * kv_service_ready() with "serving LISTEN:PORT[, http on port HTTP_PORT]".
 */
void kv_service_announce(const char *program, const char *listen, unsigned port,
                         unsigned http_port);

/**
 * @brief Ping the manager's watchdog (WATCHDOG=1) if the unit has one.
 *
 * Call from the daemon's periodic tick, which runs on its event loop, so
 * that a loop stuck for longer than WatchdogSec= stops the pings and the
 * manager kills and (Restart=on-failure) restarts the daemon.  Pings are
 * sent at most every quarter of the watchdog interval however often this
 * is called, so a fast tick costs nothing more.
 */
void kv_service_watchdog(void);

/**
 * @brief Tell the manager that the daemon is shutting down (STOPPING=1).
 *
 * Call when the event loop has stopped (SIGTERM, SIGINT), before the
 * teardown, which may take a while (closing connections, flushing the SSD
 * tier): `systemctl status` then shows "deactivating" rather than a daemon
 * that looks hung.
 */
void kv_service_stopping(void);

#endif
