#include <kv/alloc.h>
#include <kv/evloop.h>
#include <kv/log.h>
#include <kv/util.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

/*
 * Watches are kept in an array indexed by fd, so a callback may remove any
 * fd (even one whose event is still pending in this batch): the dispatcher
 * looks the watch up again by fd and skips it if it has gone.
 */
typedef struct {
    kv_evloop_func_t func;
    void            *arg;
} watch_t;

struct kv_evloop {
    int      epfd;
    int      sigfd;   /* kv_evloop_stop_on_signals(), or -1 */
    int      stop;
    watch_t *watches;
    int      num_watches;
    uint32_t tick_ms;
    uint64_t next_tick_ns;
    void   (*tick_func)(void *arg);
    void    *tick_arg;
};

kvp_status_t kv_evloop_create(kv_evloop_t **loop_p)
{
    kv_evloop_t *loop = kv_calloc(1, sizeof(*loop), "event loop");

    loop->sigfd = -1;
    loop->epfd  = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        kv_log_error("epoll_create1: %m");
        kv_free(loop);
        return KVP_ERR_IO;
    }
    *loop_p = loop;
    return KVP_OK;
}

void kv_evloop_destroy(kv_evloop_t *loop)
{
    if (loop == NULL) {
        return;
    }
    if (loop->sigfd >= 0) {
        close(loop->sigfd);
    }
    close(loop->epfd);
    kv_free(loop->watches);
    kv_free(loop);
}

kvp_status_t kv_evloop_add(kv_evloop_t *loop, int fd, uint32_t events,
                           kv_evloop_func_t func, void *arg)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};

    if (fd >= loop->num_watches) {
        int num = KV_MAX(fd + 1, 2 * loop->num_watches);
        loop->watches = kv_realloc(loop->watches, num * sizeof(watch_t), "watches");
        memset(loop->watches + loop->num_watches, 0,
               (num - loop->num_watches) * sizeof(watch_t));
        loop->num_watches = num;
    }
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        kv_log_error("epoll_ctl(add %d): %m", fd);
        return KVP_ERR_IO;
    }
    loop->watches[fd].func = func;
    loop->watches[fd].arg  = arg;
    return KVP_OK;
}

kvp_status_t kv_evloop_modify(kv_evloop_t *loop, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};

    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        kv_log_error("epoll_ctl(mod %d): %m", fd);
        return KVP_ERR_IO;
    }
    return KVP_OK;
}

void kv_evloop_remove(kv_evloop_t *loop, int fd)
{
    if (fd >= 0 && fd < loop->num_watches && loop->watches[fd].func != NULL) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
        loop->watches[fd].func = NULL;
    }
}

void kv_evloop_set_tick(kv_evloop_t *loop, uint32_t period_ms,
                        void (*func)(void *arg), void *arg)
{
    loop->tick_ms      = period_ms;
    loop->tick_func    = func;
    loop->tick_arg     = arg;
    loop->next_tick_ns = kv_time_ns() + (uint64_t)period_ms * 1000000;
}

kvp_status_t kv_evloop_run(kv_evloop_t *loop)
{
    struct epoll_event events[64];

    loop->stop = 0;
    while (!loop->stop) {
        int timeout = -1;
        if (loop->tick_ms) {
            uint64_t now = kv_time_ns();
            if (now >= loop->next_tick_ns) {
                loop->next_tick_ns = now + (uint64_t)loop->tick_ms * 1000000;
                loop->tick_func(loop->tick_arg);
                continue;
            }
            timeout = (int)((loop->next_tick_ns - now) / 1000000) + 1;
        }
        int n = epoll_wait(loop->epfd, events, 64, timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            kv_log_error("epoll_wait: %m");
            return KVP_ERR_IO;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd < loop->num_watches && loop->watches[fd].func != NULL) {
                loop->watches[fd].func(fd, events[i].events, loop->watches[fd].arg);
            }
        }
    }
    return KVP_OK;
}

void kv_evloop_stop(kv_evloop_t *loop)
{
    loop->stop = 1;
}

static void on_signal(int fd, uint32_t events, void *arg)
{
    struct signalfd_siginfo info;

    if (read(fd, &info, sizeof(info)) == sizeof(info)) {
        kv_log_info("signal %u: shutting down", info.ssi_signo);
        kv_evloop_stop(arg);
    }
}

kvp_status_t kv_evloop_stop_on_signals(kv_evloop_t *loop)
{
    sigset_t mask;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    loop->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (loop->sigfd < 0) {
        kv_log_error("signalfd: %m");
        return KVP_ERR_IO;
    }
    return kv_evloop_add(loop, loop->sigfd, EPOLLIN, on_signal, loop);
}
