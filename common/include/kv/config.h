/**
 * @file config.h
 * @brief INI configuration files (libinih), read once at start-up.
 */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <kvpool/status.h>

#include <stddef.h>

/**
 * Longest line of a config file, newline excluded.  libinih reads lines
 * into a fixed buffer (200 bytes in Debian's build); a longer line is
 * refused with its number rather than split.
 */
#define KV_CONFIG_LINE_MAX 198

/**
 * Called for each "key = value" line.  Return KVP_OK to go on, or an error
 * (after writing a reason into @p err, @p err_len bytes) to stop.
 */
typedef kvp_status_t (*kv_config_func_t)(const char *section, const char *key,
                                         const char *value, void *arg,
                                         char *err, size_t err_len);

/**
 * Parse the INI file at @p path, calling @p func for every entry.
 * @return KVP_OK; KVP_ERR_IO if it cannot be opened; KVP_ERR_CONFIG for a
 *         syntax error, a line over KV_CONFIG_LINE_MAX, or an entry
 *         @p func rejected.  On error @p err says which line and why.
 */
kvp_status_t kv_config_load(const char *path, kv_config_func_t func, void *arg,
                            char *err, size_t err_len);

/**
 * Parse the value of an http_port key: "off" (-1: no HTTP endpoint) or a
 * port 0..65535 (0: any free one) into @p port_p.
 * @return KVP_OK, or KVP_ERR_CONFIG with a reason in @p err.
 */
kvp_status_t kv_config_http_port(const char *value, int *port_p, char *err,
                                 size_t err_len);

#endif
