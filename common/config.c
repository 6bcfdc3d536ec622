#include <kv/config.h>

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    kv_config_func_t func;
    void            *arg;
    kvp_status_t     status;
    char            *err;
    size_t           err_len;
    FILE            *file;
    int              line;
    int              too_long; /* line number of an over-long line */
} config_ctx_t;

static int config_entry(void *user, const char *section, const char *key,
                        const char *value)
{
    config_ctx_t *ctx = user;

    ctx->status = ctx->func(section, key, value, ctx->arg, ctx->err, ctx->err_len);
    return ctx->status == KVP_OK;
}

/* fgets for libinih that stops at a line too long for its buffer. */
static char *config_read_line(char *buf, int size, void *user)
{
    config_ctx_t *ctx = user;
    size_t        len;

    if (fgets(buf, size, ctx->file) == NULL) {
        return NULL;
    }
    ctx->line++;
    len = strlen(buf);
    if ((len > 0 && buf[len - 1] != '\n' && !feof(ctx->file)) ||
        len > KV_CONFIG_LINE_MAX + 1) {
        ctx->too_long = ctx->line;
        return NULL;
    }
    return buf;
}

kvp_status_t kv_config_load(const char *path, kv_config_func_t func, void *arg,
                            char *err, size_t err_len)
{
    config_ctx_t ctx = {func, arg, KVP_OK, err, err_len, NULL, 0, 0};
    char         reason[512];
    int          line;

    err[0]   = '\0';
    ctx.file = fopen(path, "r");
    if (ctx.file == NULL) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return KVP_ERR_IO;
    }
    line = ini_parse_stream(config_read_line, &ctx, config_entry, &ctx);
    fclose(ctx.file);
    if (ctx.too_long) {
        snprintf(err, err_len, "%s:%d: line longer than %d bytes", path,
                 ctx.too_long, KV_CONFIG_LINE_MAX);
        return KVP_ERR_CONFIG;
    }
    if (line == 0) {
        return KVP_OK;
    }
    snprintf(reason, sizeof(reason), "%s", ctx.status != KVP_OK ? err : "syntax error");
    snprintf(err, err_len, "%s:%d: %s", path, line, reason);
    return KVP_ERR_CONFIG;
}

kvp_status_t kv_config_http_port(const char *value, int *port_p, char *err,
                                 size_t err_len)
{
    char *end;
    long  port;

    if (strcmp(value, "off") == 0) {
        *port_p = -1;
        return KVP_OK;
    }
    port = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || port < 0 || port > 65535) {
        snprintf(err, err_len, "http_port must be off or 0..65535, not '%s'", value);
        return KVP_ERR_CONFIG;
    }
    *port_p = (int)port;
    return KVP_OK;
}
