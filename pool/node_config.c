#include "node.h"

#include <kv/config.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvstore/evict.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kv_node_config_defaults(kv_node_config_t *config)
{
    memset(config, 0, sizeof(*config));
    snprintf(config->listen, sizeof(config->listen), "127.0.0.1");
    snprintf(config->name, sizeof(config->name), "kvpool-node");
    config->port      = KV_NODE_DEFAULT_PORT;
    config->memory    = KV_NODE_DEFAULT_MEMORY;
    config->log_level     = KVP_LOG_INFO;
    config->shared_memory = 1;
    config->lease_ms      = 10000;
    config->data_plane_ucx = 1;
    snprintf(config->eviction_policy, sizeof(config->eviction_policy), "%s",
             KV_EVICT_DEFAULT_POLICY);
    config->ssd_queue_depth = 16;
    config->ssd_sync        = 1;
    config->ssd_readahead   = 4;
    config->high_watermark  = 95;
    config->low_watermark   = 90;
    config->http_port       = -1;
}

static kvp_status_t copy_string(char *dst, size_t dst_len, const char *key,
                                const char *value, char *err, size_t err_len)
{
    if (strlen(value) >= dst_len) {
        snprintf(err, err_len, "%s is longer than %zu bytes", key, dst_len - 1);
        return KVP_ERR_CONFIG;
    }
    memcpy(dst, value, strlen(value) + 1);
    return KVP_OK;
}

/* An unsigned number in [min, max] for @p key. */
static kvp_status_t parse_uint(const char *key, const char *value, unsigned long min,
                               unsigned long max, uint32_t *out, char *err, size_t err_len)
{
    char         *end;
    unsigned long v = strtoul(value, &end, 10);

    if (*value == '\0' || *value == '-' || *end != '\0' || v < min || v > max) {
        snprintf(err, err_len, "%s must be %lu..%lu, not '%s'", key, min, max, value);
        return KVP_ERR_CONFIG;
    }
    *out = (uint32_t)v;
    return KVP_OK;
}

/* The SSD tier's keys; KVP_ERR_NOT_FOUND for another key. */
static kvp_status_t ssd_set(kv_node_config_t *config, const char *key, const char *value,
                            char *err, size_t err_len)
{
    uint64_t size;

    if (strcmp(key, "ssd_dir") == 0) {
        return copy_string(config->ssd_dir, sizeof(config->ssd_dir), key, value, err,
                           err_len);
    }
    if (strcmp(key, "ssd_size") == 0 || strcmp(key, "ssd_segment_size") == 0) {
        int seg = strcmp(key, "ssd_segment_size") == 0;
        if (kv_size_parse(value, &size) != KVP_OK ||
            (seg ? size > KV_SSD_SEGMENT_MAX : size < 4 * KV_SSD_SEGMENT_MIN)) {
            snprintf(err, err_len, seg ? "%s must be a size up to 1GiB, not '%s'"
                                       : "%s must be a size of at least 4MiB, not '%s'",
                     key, value);
            return KVP_ERR_CONFIG;
        }
        *(seg ? &config->ssd_segment_size : &config->ssd_size) = size;
        return KVP_OK;
    }
    if (strcmp(key, "ssd_sync") == 0) {
        if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
            snprintf(err, err_len, "ssd_sync must be on or off, not '%s'", value);
            return KVP_ERR_CONFIG;
        }
        config->ssd_sync = strcmp(value, "on") == 0;
        return KVP_OK;
    }
    if (strcmp(key, "ssd_queue_depth") == 0) {
        return parse_uint(key, value, 1, KV_SSD_QUEUE_MAX, &config->ssd_queue_depth, err,
                          err_len);
    }
    if (strcmp(key, "ssd_readahead") == 0) {
        return parse_uint(key, value, 0, 64, &config->ssd_readahead, err, err_len);
    }
    if (strcmp(key, "high_watermark") == 0) {
        return parse_uint(key, value, 1, 100, &config->high_watermark, err, err_len);
    }
    if (strcmp(key, "low_watermark") == 0) {
        return parse_uint(key, value, 0, 100, &config->low_watermark, err, err_len);
    }
    return KVP_ERR_NOT_FOUND;
}


/* "HOST:PORT" or "[V6]:PORT" with a non-empty HOST and a port 1..65535;
 * the host is resolved only when used. */
static int host_port_ok(const char *value)
{
    const char *colon = strrchr(value, ':');
    char       *end;
    long        port;

    if (colon == NULL || colon == value || colon[1] < '0' || colon[1] > '9') {
        return 0;
    }
    port = strtol(colon + 1, &end, 10);
    return *end == '\0' && port >= 1 && port <= 65535;
}

kvp_status_t kv_node_config_set(kv_node_config_t *config, const char *key,
                                const char *value, char *err, size_t err_len)
{
    kvp_status_t status;

    if (strcmp(key, "listen") == 0) {
        return copy_string(config->listen, sizeof(config->listen), key, value,
                           err, err_len);
    }
    if (strcmp(key, "token") == 0) {
        return copy_string(config->token, sizeof(config->token), key, value, err,
                           err_len);
    }
    if (strcmp(key, "name") == 0) {
        return copy_string(config->name, sizeof(config->name), key, value, err,
                           err_len);
    }
    if (strcmp(key, "coordinator") == 0 || strcmp(key, "advertise") == 0) {
        char *dst = key[0] == 'c' ? config->coordinator : config->advertise;
        if (!host_port_ok(value)) {
            snprintf(err, err_len, "%s must be HOST:PORT (port 1..65535), not '%s'",
                     key, value);
            return KVP_ERR_CONFIG;
        }
        return copy_string(dst, sizeof(config->coordinator), key, value, err, err_len);
    }
    if (strcmp(key, "port") == 0) {
        char *end;
        long  port = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || port < 0 || port > 65535) {
            snprintf(err, err_len, "port must be 0..65535, not '%s'", value);
            return KVP_ERR_CONFIG;
        }
        config->port = (uint16_t)port;
        return KVP_OK;
    }
    if (strcmp(key, "memory") == 0) {
        uint64_t size;
        if (kv_size_parse(value, &size) != KVP_OK || size < (1u << 20)) {
            snprintf(err, err_len,
                     "memory must be a size of at least 1MiB (e.g. 256MiB), not '%s'",
                     value);
            return KVP_ERR_CONFIG;
        }
        config->memory = size;
        return KVP_OK;
    }
    if (strcmp(key, "log_level") == 0) {
        int level = kv_log_level_parse(value);
        if (level < 0) {
            snprintf(err, err_len, "log_level must be error|warn|info|debug");
            return KVP_ERR_CONFIG;
        }
        config->log_level = level;
        return KVP_OK;
    }
    if (strcmp(key, "shared_memory") == 0) {
        if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
            snprintf(err, err_len, "shared_memory must be on or off");
            return KVP_ERR_CONFIG;
        }
        config->shared_memory = strcmp(value, "on") == 0;
        return KVP_OK;
    }
    if (strcmp(key, "data_plane") == 0) {
        if (strcmp(value, "ucx") != 0 && strcmp(value, "off") != 0) {
            snprintf(err, err_len, "data_plane must be ucx or off");
            return KVP_ERR_CONFIG;
        }
        config->data_plane_ucx = strcmp(value, "ucx") == 0;
        return KVP_OK;
    }
    if (strcmp(key, "eviction_policy") == 0) {
        if (!kv_evict_policy_known(value)) {
            const char *const *names = kv_evict_policy_names();
            size_t              used;

            used = (size_t)snprintf(err, err_len,
                                    "eviction_policy '%s' is unknown; the policies are",
                                    value);
            for (size_t i = 0; names[i] != NULL && used < err_len; i++) {
                used += (size_t)snprintf(err + used, err_len - used, "%s %s",
                                         i > 0 ? "," : "", names[i]);
            }
            return KVP_ERR_CONFIG;
        }
        return copy_string(config->eviction_policy, sizeof(config->eviction_policy),
                           key, value, err, err_len);
    }
    if (strcmp(key, "lease_ms") == 0) {
        return parse_uint(key, value, 100, 600000, &config->lease_ms, err, err_len);
    }
    if (strcmp(key, "http_port") == 0) {
        return kv_config_http_port(value, &config->http_port, err, err_len);
    }
    status = ssd_set(config, key, value, err, err_len);
    if (status != KVP_ERR_NOT_FOUND) {
        return status;
    }
    snprintf(err, err_len, "unknown setting '%s'", key);
    return KVP_ERR_CONFIG;
}

static kvp_status_t config_entry(const char *section, const char *key,
                                 const char *value, void *arg, char *err,
                                 size_t err_len)
{
    if (strcmp(section, "node") != 0) {
        snprintf(err, err_len, "unknown section [%s]", section);
        return KVP_ERR_CONFIG;
    }
    return kv_node_config_set(arg, key, value, err, err_len);
}

kvp_status_t kv_node_config_load(kv_node_config_t *config, const char *path,
                                 char *err, size_t err_len)
{
    return kv_config_load(path, config_entry, config, err, err_len);
}
