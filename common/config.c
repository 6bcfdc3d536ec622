#include <kv/config.h>

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    kv_config_func_t func;
    void            *arg;
    kvp_status_t     status;
    char            *err;
    size_t           err_len;
} config_ctx_t;

static int config_entry(void *user, const char *section, const char *key,
                        const char *value)
{
    config_ctx_t *ctx = user;

    if (strlen(value) > KV_CONFIG_VALUE_MAX) {
        snprintf(ctx->err, ctx->err_len, "value of '%s' is longer than %d bytes",
                 key, KV_CONFIG_VALUE_MAX);
        ctx->status = KVP_ERR_CONFIG;
        return 0;
    }
    ctx->status = ctx->func(section, key, value, ctx->arg, ctx->err, ctx->err_len);
    return ctx->status == KVP_OK;
}

kvp_status_t kv_config_load(const char *path, kv_config_func_t func, void *arg,
                            char *err, size_t err_len)
{
    config_ctx_t ctx = {func, arg, KVP_OK, err, err_len};
    char         reason[512];
    FILE        *file;
    int          line;

    err[0] = '\0';
    file   = fopen(path, "r");
    if (file == NULL) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return KVP_ERR_IO;
    }
    line = ini_parse_file(file, config_entry, &ctx);
    fclose(file);
    if (line == 0) {
        return KVP_OK;
    }
    if (ctx.status != KVP_OK) {
        snprintf(reason, sizeof(reason), "%s", err);
    } else {
        snprintf(reason, sizeof(reason), "syntax error");
    }
    snprintf(err, err_len, "%s:%d: %s", path, line, reason);
    return KVP_ERR_CONFIG;
}
