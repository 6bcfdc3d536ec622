/**
 * @file log.h
 * @brief Level-gated logging.
 *
 * Nothing is printed unless a sink is installed: daemons and tools call
 * kv_log_to_stderr(); the client library forwards to the caller's handler
 * (kvp_set_log_handler) and is silent by default.  Lines written to stderr
 * carry a syslog-style "<N>" level prefix, which journald turns into the
 * entry's priority, then "component: message", one event per line.
 */
#ifndef KV_LOG_H
#define KV_LOG_H

#include <kvpool/kvpool.h>

/** Install a sink for lines at or above @p level (NULL: discard). */
void kv_log_set_handler(kvp_log_level_t level, kvp_log_func_t func, void *arg);
/** Send lines at or above @p level to stderr, prefixed with @p component. */
void kv_log_to_stderr(kvp_log_level_t level, const char *component);
/** Parse "error|warn|info|debug"; returns -1 for anything else. */
int kv_log_level_parse(const char *name);
/** @return non-zero if a line at @p level would go anywhere. */
int kv_log_enabled(kvp_log_level_t level);
/** Format and emit one line (use the macros below). */
void kv_log_emit(kvp_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define kv_log_(_level, ...) \
    do { \
        if (kv_log_enabled(_level)) { \
            kv_log_emit(_level, __VA_ARGS__); \
        } \
    } while (0)
#define kv_log_error(...) kv_log_(KVP_LOG_ERROR, __VA_ARGS__)
#define kv_log_warn(...)  kv_log_(KVP_LOG_WARN, __VA_ARGS__)
#define kv_log_info(...)  kv_log_(KVP_LOG_INFO, __VA_ARGS__)
#define kv_log_debug(...) kv_log_(KVP_LOG_DEBUG, __VA_ARGS__)

#endif
