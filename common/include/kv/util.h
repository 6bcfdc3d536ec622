/**
 * @file util.h
 * @brief Small helpers: clocks, sizes, addresses.
 */
#ifndef KV_UTIL_H
#define KV_UTIL_H

#include <kvpool/status.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define kv_container_of(_ptr, _type, _member) \
    ((_type *)((char *)(_ptr) - __builtin_offsetof(_type, _member)))

#define KV_MIN(_a, _b) ((_a) < (_b) ? (_a) : (_b))
#define KV_MAX(_a, _b) ((_a) > (_b) ? (_a) : (_b))

/** Monotonic clock in nanoseconds. */
uint64_t kv_time_ns(void);

/**
 * Parse a size such as "4096", "64KiB", "256MiB", "2GiB", "1G" (binary
 * units; "KB"/"MB"/"GB" are taken as binary too).
 * @return KVP_OK and *size_p; KVP_ERR_INVALID_PARAM on junk or overflow.
 */
kvp_status_t kv_size_parse(const char *text, uint64_t *size_p);

/** Format @p bytes as "1.5 GiB" into @p out. */
void kv_size_format(uint64_t bytes, char *out, size_t len);

/**
 * Resolve "HOST:PORT" or "[V6]:PORT" into a socket address.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM for a malformed string or an
 *         unknown host.
 */
kvp_status_t kv_addr_parse(const char *text, struct sockaddr_storage *addr_p,
                           socklen_t *len_p);

/** @return non-zero if @p addr is a loopback address (127/8 or ::1). */
int kv_addr_is_loopback(const struct sockaddr *addr);

/**
 * This host's boot id (32 hex digits and dashes, from the kernel), which
 * tells whether two processes run on one host.  Writes "" if unknown.
 */
void kv_host_id(char *out, size_t len);

/** The name of tier @p tier (kvpool.Tier: 0 host, 1 ssd, 2 gpu), "unknown" else. */
const char *kv_tier_name(int tier);

/** Convert errno to a status (ECONNREFUSED -> CONNECTION_REFUSED, ...). */
kvp_status_t kv_status_from_errno(int err);

#endif
