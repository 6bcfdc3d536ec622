/*
 * kvpool-coord's settings: one setter for the INI file and the flags, so
 * both accept the same keys and check the same limits.
 */
#include "coord_int.h"

#include <kv/config.h>
#include <kv/log.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEASE_MS_MIN 100u
#define LEASE_MS_MAX 600000u

void kv_coord_config_defaults(kv_coord_config_t *config)
{
    memset(config, 0, sizeof(*config));
    snprintf(config->listen, sizeof(config->listen), "127.0.0.1");
    config->port      = KV_COORD_DEFAULT_PORT;
    config->lease_ms  = KV_COORD_DEFAULT_LEASE_MS;
    config->log_level = KVP_LOG_INFO;
    config->max_nodes = KV_COORD_DEFAULT_MAX_NODES;
    config->max_instances = KV_COORD_DEFAULT_MAX_INSTANCES;
    config->policy        = KV_SCHED_DEFAULT_POLICY;
    config->seed          = 1;
    config->http_port     = -1;
    kv_sched_cost_defaults(&config->cost);
}

static kvp_status_t copy_string(char *dst, size_t dst_len, const char *key,
                                const char *value, char *err, size_t err_len)
{
    size_t len = strlen(value);

    if (len >= dst_len) {
        snprintf(err, err_len, "%s is longer than %zu bytes", key, dst_len - 1);
        return KVP_ERR_CONFIG;
    }
    memcpy(dst, value, len + 1);
    return KVP_OK;
}

/* A decimal number in [min, max]. */
static kvp_status_t parse_uint(const char *key, const char *value, unsigned long min,
                               unsigned long max, unsigned long *out, char *err,
                               size_t err_len)
{
    char         *end;
    unsigned long v;

    errno = 0;
    v     = strtoul(value, &end, 10);
    if (*value == '\0' || *value == '-' || *end != '\0' || errno != 0 || v < min ||
        v > max) {
        snprintf(err, err_len, "%s must be %lu..%lu, not '%s'", key, min, max, value);
        return KVP_ERR_CONFIG;
    }
    *out = v;
    return KVP_OK;
}

kvp_status_t kv_coord_config_set(kv_coord_config_t *config, const char *key,
                                 const char *value, char *err, size_t err_len)
{
    unsigned long v;
    kvp_status_t  status;

    if (strcmp(key, "listen") == 0) {
        return copy_string(config->listen, sizeof(config->listen), key, value, err,
                           err_len);
    }
    if (strcmp(key, "token") == 0) {
        return copy_string(config->token, sizeof(config->token), key, value, err,
                           err_len);
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
    if (strcmp(key, "port") == 0) {
        status = parse_uint(key, value, 0, 65535, &v, err, err_len);
        if (status == KVP_OK) {
            config->port = (uint16_t)v;
        }
        return status;
    }
    if (strcmp(key, "http_port") == 0) {
        return kv_config_http_port(value, &config->http_port, err, err_len);
    }
    if (strcmp(key, "lease_ms") == 0) {
        status = parse_uint(key, value, LEASE_MS_MIN, LEASE_MS_MAX, &v, err, err_len);
        if (status == KVP_OK) {
            config->lease_ms = (uint32_t)v;
        }
        return status;
    }
    if (strcmp(key, "max_nodes") == 0) {
        status = parse_uint(key, value, 1, KV_COORD_NODE_MAX, &v, err, err_len);
        if (status == KVP_OK) {
            config->max_nodes = (uint32_t)v;
        }
        return status;
    }
    if (strcmp(key, "max_instances") == 0) {
        status = parse_uint(key, value, 1, KV_SCHED_INSTANCE_MAX, &v, err, err_len);
        if (status == KVP_OK) {
            config->max_instances = (uint32_t)v;
        }
        return status;
    }
    if (strcmp(key, "scheduler_policy") == 0) {
        if (kv_sched_policy_parse(value, &config->policy) != KVP_OK) {
            const char *const *names = kv_sched_policy_names();
            size_t             len   = (size_t)snprintf(err, err_len,
                                                        "scheduler_policy '%s' is not one of",
                                                        value);

            for (size_t i = 0; names[i] != NULL && len < err_len; i++) {
                len += (size_t)snprintf(err + len, err_len - len, " %s", names[i]);
            }
            return KVP_ERR_CONFIG;
        }
        return KVP_OK;
    }
    if (strcmp(key, "scheduler_seed") == 0) {
        status = parse_uint(key, value, 0, ULONG_MAX, &v, err, err_len);
        if (status == KVP_OK) {
            config->seed = v;
        }
        return status;
    }
    status = kv_sched_cost_set(&config->cost, key, value, err, err_len);
    if (status != KVP_ERR_NOT_FOUND) {
        return status == KVP_OK ? KVP_OK : KVP_ERR_CONFIG;
    }
    snprintf(err, err_len, "unknown setting '%s'", key);
    return KVP_ERR_CONFIG;
}

static kvp_status_t config_entry(const char *section, const char *key,
                                 const char *value, void *arg, char *err,
                                 size_t err_len)
{
    if (strcmp(section, "coord") != 0) {
        snprintf(err, err_len, "unknown section [%s]", section);
        return KVP_ERR_CONFIG;
    }
    return kv_coord_config_set(arg, key, value, err, err_len);
}

kvp_status_t kv_coord_config_load(kv_coord_config_t *config, const char *path,
                                  char *err, size_t err_len)
{
    return kv_config_load(path, config_entry, config, err, err_len);
}
