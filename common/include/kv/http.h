/**
 * @file http.h
 * @brief The daemons' HTTP endpoint (/metrics, /health, the dashboard):
 * libmicrohttpd driven by the caller's event loop, so handlers run on the
 * loop's thread and may read its state without locks.
 *
 * Only GET and HEAD are answered (405 otherwise), from the request's
 * headers: a body is never read.  Handlers build the whole reply in a
 * kv_text_t.
 */
#ifndef KV_HTTP_H
#define KV_HTTP_H

#include <kv/evloop.h>
#include <kv/text.h>
#include <kvpool/status.h>

#include <stdint.h>

typedef struct kv_http kv_http_t;

/** What a handler answers with. */
typedef struct kv_http_reply {
    unsigned    status;       /**< HTTP status, 200 unless the handler sets it */
    const char *content_type; /**< static string; "text/plain" unless set */
    kv_text_t   body;         /**< the reply's bytes (the server frees them) */
} kv_http_reply_t;

/**
 * Answer GET @p path (without the query string) into @p reply.
 * @return 0 if the path is known; non-zero: 404.
 */
typedef int (*kv_http_handler_t)(void *arg, const char *path, kv_http_reply_t *reply);

/**
 * @brief Listen on @p listen : @p port (0: a free port, see kv_http_port())
 * and serve through @p loop.
 * @param [out] http_p set on success; free with kv_http_stop().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (a bad address); KVP_ERR_IO (the
 *         port is taken, or libmicrohttpd failed: logged).
 */
kvp_status_t kv_http_start(kv_evloop_t *loop, const char *listen, uint16_t port,
                           kv_http_handler_t handler, void *arg, kv_http_t **http_p);

/** @brief The TCP port the endpoint listens on. */
uint16_t kv_http_port(const kv_http_t *http);

/** @brief Expire idle connections; call from the loop's periodic tick. */
void kv_http_tick(kv_http_t *http);

/** @brief Close every connection and the listening socket.  NULL is accepted. */
void kv_http_stop(kv_http_t *http);

#endif
