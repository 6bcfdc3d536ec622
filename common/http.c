/*
 * http.c - libmicrohttpd on the caller's epoll loop.
 *
 * The daemon runs without threads of its own (MHD_USE_EPOLL, no internal
 * polling thread): its epoll descriptor sits in the caller's loop, which
 * calls MHD_run() when it is readable and from the tick, so every handler
 * runs on the loop's thread.
 */
#include <kv/alloc.h>
#include <kv/http.h>
#include <kv/log.h>
#include <kv/util.h>

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

struct kv_http {
    struct MHD_Daemon *daemon;
    kv_evloop_t       *loop;
    int                epoll_fd;
    uint16_t           port;
    kv_http_handler_t  handler;
    void              *arg;
};

static enum MHD_Result queue_text(struct MHD_Connection *conn, unsigned status,
                                  const char *content_type, kv_text_t *body)
{
    struct MHD_Response *response;
    enum MHD_Result      ret;

    response = MHD_create_response_from_buffer(body->len, body->buf != NULL ? body->buf : "",
                                               body->buf != NULL ? MHD_RESPMEM_MUST_FREE
                                                                 : MHD_RESPMEM_PERSISTENT);
    if (response == NULL) {
        kv_text_free(body);
        return MHD_NO;
    }
    body->buf = NULL; /* the response owns it now */
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(conn, status, response);
    MHD_destroy_response(response);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    kv_http_t      *http  = cls;
    kv_http_reply_t reply = {.status = MHD_HTTP_OK, .content_type = "text/plain"};

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    /* answered from the first call, on the headers: a body is never read */
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        kv_text_printf(&reply.body, "only GET and HEAD\n");
        return queue_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", &reply.body);
    }
    if (http->handler(http->arg, url, &reply) != 0) {
        kv_text_free(&reply.body);
        kv_text_printf(&reply.body, "no such page: %s\n", url);
        return queue_text(conn, MHD_HTTP_NOT_FOUND, "text/plain", &reply.body);
    }
    return queue_text(conn, reply.status, reply.content_type, &reply.body);
}

static void http_run(kv_http_t *http)
{
    if (MHD_run(http->daemon) != MHD_YES) {
        kv_log_debug("http: MHD_run reported an error");
    }
}

static void on_event(int fd, uint32_t events, void *arg)
{
    (void)fd;
    (void)events;
    http_run(arg);
}

static void on_mhd_error(void *arg, const char *fmt, va_list ap)
{
    char line[256];

    (void)arg;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    kv_log_warn("http: %s", line);
}

kvp_status_t kv_http_start(kv_evloop_t *loop, const char *listen, uint16_t port,
                           kv_http_handler_t handler, void *arg, kv_http_t **http_p)
{
    struct sockaddr_storage addr;
    socklen_t               addr_len;
    const union MHD_DaemonInfo *info;
    kv_http_t              *http;
    kvp_status_t            status;
    char                    where[300];

    snprintf(where, sizeof(where), strchr(listen, ':') != NULL ? "[%s]:%u" : "%s:%u",
             listen, port);
    status = kv_addr_parse(where, &addr, &addr_len);
    if (status != KVP_OK) {
        kv_log_error("http: bad listen address '%s'", listen);
        return KVP_ERR_INVALID_PARAM;
    }
    http          = kv_calloc(1, sizeof(*http), "http");
    http->loop    = loop;
    http->handler = handler;
    http->arg     = arg;
    http->daemon  = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        port, NULL, NULL, on_request, http, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256, MHD_OPTION_END);
    if (http->daemon == NULL) {
        kv_log_error("http: cannot serve on %s port %u", listen, port);
        kv_free(http);
        return KVP_ERR_IO;
    }
    info           = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    http->epoll_fd = info != NULL ? info->epoll_fd : -1;
    info           = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port     = info != NULL ? info->port : port;
    if (http->epoll_fd < 0 ||
        kv_evloop_add(loop, http->epoll_fd, EPOLLIN, on_event, http) != KVP_OK) {
        kv_log_error("http: cannot watch libmicrohttpd's descriptor");
        MHD_stop_daemon(http->daemon);
        kv_free(http);
        return KVP_ERR_IO;
    }
    *http_p = http;
    return KVP_OK;
}

uint16_t kv_http_port(const kv_http_t *http)
{
    return http->port;
}

void kv_http_tick(kv_http_t *http)
{
    if (http != NULL) {
        http_run(http);
    }
}

void kv_http_stop(kv_http_t *http)
{
    if (http == NULL) {
        return;
    }
    kv_evloop_remove(http->loop, http->epoll_fd);
    MHD_stop_daemon(http->daemon);
    kv_free(http);
}
