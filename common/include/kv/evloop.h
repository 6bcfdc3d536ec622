/**
 * @file evloop.h
 * @brief A small single-threaded epoll event loop.
 *
 * Why our own loop and not libuv: the node's only event sources are a
 * listening socket, its connections, a signalfd and one periodic tick; the
 * RPC layer does its own buffering and framing (block payloads go out with
 * writev straight from the arena).  A 150-line epoll wrapper gives exactly
 * that, with no second buffering layer and no extra dependency.
 */
#ifndef KV_EVLOOP_H
#define KV_EVLOOP_H

#include <kvpool/status.h>

#include <stdint.h>

typedef struct kv_evloop kv_evloop_t;

/** Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLERR...) of @p fd. */
typedef void (*kv_evloop_func_t)(int fd, uint32_t events, void *arg);

/** Create a loop. @return KVP_OK or KVP_ERR_IO. */
kvp_status_t kv_evloop_create(kv_evloop_t **loop_p);
/** Destroy the loop; registered fds are not closed.  NULL is accepted. */
void kv_evloop_destroy(kv_evloop_t *loop);
/** Watch @p fd for @p events; @p func runs in kv_evloop_run(). */
kvp_status_t kv_evloop_add(kv_evloop_t *loop, int fd, uint32_t events,
                           kv_evloop_func_t func, void *arg);
/** Change the events watched on @p fd. */
kvp_status_t kv_evloop_modify(kv_evloop_t *loop, int fd, uint32_t events);
/** Stop watching @p fd (before closing it). */
void kv_evloop_remove(kv_evloop_t *loop, int fd);
/**
 * Call @p func(arg) every @p period_ms milliseconds from kv_evloop_run()
 * (one tick per loop; 0 disables).
 */
void kv_evloop_set_tick(kv_evloop_t *loop, uint32_t period_ms,
                        void (*func)(void *arg), void *arg);
/** Run until kv_evloop_stop(). @return KVP_OK, or KVP_ERR_IO if epoll fails. */
kvp_status_t kv_evloop_run(kv_evloop_t *loop);
/** Make kv_evloop_run() return after the current iteration. */
void kv_evloop_stop(kv_evloop_t *loop);
/**
 * A daemon's signals: ignore SIGPIPE, block SIGTERM and SIGINT in the
 * calling thread (and so in the threads it starts later: call this before
 * starting any), and stop @p loop when one arrives, read through a
 * signalfd the loop watches and kv_evloop_destroy() closes.
 * @return KVP_OK; KVP_ERR_IO if the signalfd cannot be made.
 */
kvp_status_t kv_evloop_stop_on_signals(kv_evloop_t *loop);

#endif
