/*
 * Client side of the RPC channel.
 *
 * Calls from any thread share one socket.  A caller registers a pending
 * entry under the request id, sends its frame under send_lock, then waits
 * for the reply with that id.  One thread at a time reads the socket: the
 * *reader*.  A caller of kv_rpc_call() that finds no reader becomes it: it
 * reads frames, handing each to its pending entry (and waking that entry's
 * caller), until its own reply comes, so a call alone on its connection
 * costs one send and one blocking recv, with no thread handoff.  It then
 * passes the role on if replies are still awaited: to a caller waiting in
 * kv_rpc_call_finish(), else to the connection's receiver thread, which
 * reads while replies are awaited and nobody else does (calls started with
 * kv_rpc_call_start() wake it, so their replies are read while the caller
 * sends more).  Reads go through a read-ahead buffer that belongs to the
 * reader, so one recv usually brings a whole reply, or several; a large
 * payload is read straight into the caller's buffer.
 *
 * A pending entry moves WAITING -> RECEIVING -> DONE; a caller whose
 * deadline passes leaves only while WAITING, because in RECEIVING the
 * reader is writing into its buffer.  A reader blocked in recv() wakes
 * every READ_TICK_MS (SO_RCVTIMEO) to look at its deadline.  A late reply
 * for a call that gave up finds no entry and is read and dropped.  Any
 * stream error marks the connection broken and wakes all.
 */
#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvproto/frame.h>
#include <kvproto/rpc_client.h>

#include "kvpool.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define IN_BUF       (16u << 10) /* read-ahead */
#define READ_TICK_MS 20u         /* a blocked reader looks at its deadline */
#define READ_TICK    KVP_INPROGRESS /* read_bytes(): nothing came in a tick */
#define SMALL_FRAME  (8u << 10)  /* a request frame up to this is packed on the stack */

typedef enum { PENDING_WAITING, PENDING_RECEIVING, PENDING_DONE } pending_state_t;

typedef struct kv_rpc_pending {
    struct kv_rpc_pending *next;
    uint64_t         id;
    unsigned         method;
    uint32_t         timeout_ms;
    struct timespec  deadline;
    kvp_status_t     send_status;
    pending_state_t  state;
    kvp_status_t     status;
    uint8_t         *msg;
    uint32_t         msg_len;
    kv_rpc_recv_t   *recv;
    int              in_finish; /* its caller sleeps in kv_rpc_call_finish() */
    pthread_cond_t   cond;
} pending_t;

typedef enum { READER_NONE, READER_THREAD, READER_CALLER } reader_t;

struct kv_rpc_client {
    int              fd;
    pthread_t        receiver;
    pthread_mutex_t  lock;      /* all below but send_lock's and the reader's */
    pthread_mutex_t  send_lock; /* one frame on the wire at a time */
    pending_t       *pending;
    size_t           undone;    /* pending entries not DONE */
    uint64_t         next_id;
    kvp_status_t     broken;
    reader_t         reader;    /* who reads the socket now */
    int              stopping;  /* kv_rpc_client_destroy() */
    pthread_cond_t   reader_cond; /* the receiver thread waits here */
    uint64_t         max_payload;
    const ProtobufCServiceDescriptor *service;
    Kvpool__HelloReply *hello;  /* the peer's answer to our Hello */
    int              callers;   /* calls inside kv_rpc_call() */
    pthread_cond_t   idle;      /* signalled when callers drops to 0 */
    /* the reader's, while it is the reader */
    uint8_t         *in;        /* IN_BUF bytes read ahead... */
    size_t           in_start, in_end; /* ...of which these are not taken */
};

/*
 * Read @p len bytes into @p buf: what was read ahead first, then the
 * socket (a large read straight into @p buf, a small one through the
 * read-ahead).  At the start of a frame (@p frame_start), a tick with
 * nothing read returns READ_TICK; within a frame, reading goes on.
 */
static kvp_status_t read_bytes(kv_rpc_client_t *client, void *buf, size_t len,
                               int frame_start)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n;

        if (client->in_start < client->in_end) {
            size_t take = KV_MIN(len, client->in_end - client->in_start);

            memcpy(p, client->in + client->in_start, take);
            client->in_start += take;
            p += take;
            len -= take;
            frame_start = 0; /* bytes of the frame are taken: it must be read whole */
            continue;
        }
        if (len >= IN_BUF) {
            n = recv(client->fd, p, len, 0);
        } else {
            n = recv(client->fd, client->in, IN_BUF, 0);
            if (n > 0) {
                client->in_start = 0;
                client->in_end   = (size_t)n;
                frame_start      = 0;
                continue;
            }
        }
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            frame_start = 0;
        } else if (n == 0) {
            return KVP_ERR_CONNECTION_LOST;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (frame_start) {
                return READ_TICK;
            }
        } else if (errno != EINTR) {
            return KVP_ERR_CONNECTION_LOST;
        }
    }
    return KVP_OK;
}

/* Read and drop @p len bytes (through the read-ahead buffer). */
static kvp_status_t read_drop(kv_rpc_client_t *client, uint64_t len)
{
    while (len > 0) {
        ssize_t n;

        if (client->in_start < client->in_end) {
            size_t take = (size_t)KV_MIN(len, client->in_end - client->in_start);

            client->in_start += take;
            len -= take;
            continue;
        }
        n = recv(client->fd, client->in, IN_BUF, 0);
        if (n > 0) {
            client->in_start = 0;
            client->in_end   = (size_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            return KVP_ERR_CONNECTION_LOST;
        }
    }
    return KVP_OK;
}

static pending_t *pending_find(kv_rpc_client_t *client, uint64_t id)
{
    for (pending_t *p = client->pending; p != NULL; p = p->next) {
        if (p->id == id) {
            return p;
        }
    }
    return NULL;
}

static void pending_unlink(kv_rpc_client_t *client, pending_t *target)
{
    for (pending_t **pp = &client->pending; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            return;
        }
    }
}

/* With the lock held: mark the connection broken and wake every waiter. */
static void client_break_locked(kv_rpc_client_t *client, kvp_status_t status)
{
    if (client->broken == KVP_OK) {
        client->broken = status;
    }
    for (pending_t *p = client->pending; p != NULL; p = p->next) {
        pthread_cond_signal(&p->cond);
    }
}

static void client_break(kv_rpc_client_t *client, kvp_status_t status)
{
    pthread_mutex_lock(&client->lock);
    client_break_locked(client, status);
    pthread_mutex_unlock(&client->lock);
}

/* With the lock held: a caller waiting in kv_rpc_call_finish(), or NULL. */
static pending_t *finish_waiter_locked(kv_rpc_client_t *client)
{
    for (pending_t *p = client->pending; p != NULL; p = p->next) {
        if (p->in_finish && p->state == PENDING_WAITING) {
            return p;
        }
    }
    return NULL;
}

/*
 * With the lock held and no reader: if replies are awaited, wake someone
 * to read them, a caller waiting in kv_rpc_call_finish() (it reads for
 * itself) before the receiver thread.
 */
static void reader_handoff_locked(kv_rpc_client_t *client)
{
    pending_t *waiter;

    if (client->undone == 0 || client->broken != KVP_OK || client->stopping) {
        return;
    }
    waiter = finish_waiter_locked(client);
    pthread_cond_signal(waiter != NULL ? &waiter->cond : &client->reader_cond);
}

/*
 * As the reader: read one reply frame and hand it to its caller (@p self's
 * is kept for the caller, who is awake: *mine_p is set).  READ_TICK when
 * no frame began within a tick; an error breaks the stream.
 */
static kvp_status_t receive_one(kv_rpc_client_t *client, pending_t *self, int *mine_p)
{
    uint8_t           raw[KV_FRAME_HEADER_LEN];
    kv_frame_header_t hdr;
    pending_t        *p;
    uint8_t          *msg;
    kvp_status_t      status;
    kvp_status_t      call_status;

    status = read_bytes(client, raw, sizeof(raw), 1);
    if (status != KVP_OK) {
        return status;
    }
    if (kv_frame_header_unpack(raw, &hdr) != KVP_OK || hdr.kind != KV_FRAME_RESPONSE) {
        kv_log_warn("malformed reply frame from the node");
        return KVP_ERR_PROTOCOL;
    }
    if (hdr.id == 0 && hdr.status < 0) {
        /* the peer rejected our stream itself and is closing */
        kv_log_warn("the node closed the connection: %s",
                    kvp_status_string((kvp_status_t)hdr.status));
        return (kvp_status_t)hdr.status;
    }

    pthread_mutex_lock(&client->lock);
    p = pending_find(client, hdr.id);
    if (p != NULL) {
        p->state = PENDING_RECEIVING;
    }
    pthread_mutex_unlock(&client->lock);

    msg    = kv_malloc(hdr.msg_len, "reply message");
    status = read_bytes(client, msg, hdr.msg_len, 0);
    call_status = (kvp_status_t)hdr.status;
    if (status == KVP_OK && hdr.payload_len > 0) {
        if (p != NULL && p->recv != NULL && p->recv->buf != NULL &&
            hdr.payload_len <= p->recv->capacity) {
            status = read_bytes(client, p->recv->buf, hdr.payload_len, 0);
            if (status == KVP_OK) {
                p->recv->len = hdr.payload_len;
            }
        } else {
            status = read_drop(client, hdr.payload_len);
            if (p != NULL) {
                kv_log_warn("reply payload of %llu bytes does not fit the caller",
                            (unsigned long long)hdr.payload_len);
                call_status = KVP_ERR_PROTOCOL;
            }
        }
    }

    pthread_mutex_lock(&client->lock);
    if (p != NULL) {
        /* a reply cut short is a lost connection, never a damaged block */
        p->status  = status != KVP_OK ? KVP_ERR_CONNECTION_LOST : call_status;
        p->msg     = msg;
        p->msg_len = hdr.msg_len;
        p->state   = PENDING_DONE;
        client->undone--;
        if (p == self) {
            *mine_p = 1;
        } else {
            pthread_cond_signal(&p->cond);
        }
        msg = NULL;
    }
    pthread_mutex_unlock(&client->lock);
    kv_free(msg);
    return status;
}

/*
 * The receiver thread: the reader while replies are awaited and no caller
 * reads or waits to (see above).  It sleeps on reader_cond otherwise.
 */
static void *receiver_main(void *arg)
{
    kv_rpc_client_t *client = arg;
    pending_t       *waiter;
    kvp_status_t     status;
    int              mine;

    pthread_mutex_lock(&client->lock);
    while (!client->stopping) {
        if (client->broken != KVP_OK || client->reader != READER_NONE ||
            client->undone == 0) {
            pthread_cond_wait(&client->reader_cond, &client->lock);
            continue;
        }
        waiter = finish_waiter_locked(client);
        if (waiter != NULL) {
            /* a caller waits for its reply: it reads, for itself and all */
            pthread_cond_signal(&waiter->cond);
            pthread_cond_wait(&client->reader_cond, &client->lock);
            continue;
        }
        client->reader = READER_THREAD;
        pthread_mutex_unlock(&client->lock);
        status = receive_one(client, NULL, &mine);
        pthread_mutex_lock(&client->lock);
        client->reader = READER_NONE;
        if (status != KVP_OK && status != READ_TICK) {
            client_break_locked(client, status);
        }
    }
    pthread_mutex_unlock(&client->lock);
    return NULL;
}

static kvp_status_t send_frame(kv_rpc_client_t *client, const uint8_t *head,
                               size_t head_len, const void *payload,
                               uint64_t payload_len)
{
    struct iovec  iov[2] = {{(void *)head, head_len}, {(void *)payload, payload_len}};
    struct msghdr mh     = {.msg_iov = iov, .msg_iovlen = payload_len ? 2 : 1};
    kvp_status_t  status = KVP_OK;

    pthread_mutex_lock(&client->send_lock);
    while (mh.msg_iovlen > 0) {
        ssize_t n = sendmsg(client->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* a frame cut in the middle leaves the stream unusable */
            status = errno == EAGAIN ? KVP_ERR_TIMED_OUT : kv_status_from_errno(errno);
            client_break(client, KVP_ERR_CONNECTION_LOST);
            break;
        }
        while (n > 0 && mh.msg_iovlen > 0) {
            if ((size_t)n >= mh.msg_iov->iov_len) {
                n -= (ssize_t)mh.msg_iov->iov_len;
                mh.msg_iov++;
                mh.msg_iovlen--;
            } else {
                mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
                mh.msg_iov->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    pthread_mutex_unlock(&client->send_lock);
    return status;
}

static void deadline_after(struct timespec *ts, uint32_t timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Decode a finished call's message into the caller's result. */
static kvp_status_t finish_call(const ProtobufCMethodDescriptor *method,
                                pending_t *p, ProtobufCMessage **reply_p)
{
    ProtobufCAllocator *allocator = p->recv != NULL ? p->recv->allocator : NULL;
    ProtobufCMessage   *reply;
    Kvpool__ErrorReply *err;

    if (p->status < 0) {
        err = kvpool__error_reply__unpack(NULL, p->msg_len, p->msg);
        if (err != NULL) {
            kv_log_debug("%s failed: %s: %s", method->name,
                         kvp_status_string(p->status), err->message);
            if (p->recv != NULL) {
                p->recv->error_size = err->size;
            }
            kvpool__error_reply__free_unpacked(err, NULL);
        }
        return p->status;
    }
    reply = protobuf_c_message_unpack(method->output, allocator, p->msg_len, p->msg);
    if (reply == NULL) {
        kv_log_warn("cannot decode the reply of %s", method->name);
        return KVP_ERR_PROTOCOL;
    }
    if (reply_p != NULL) {
        *reply_p = reply;
    } else {
        protobuf_c_message_free_unpacked(reply, allocator);
    }
    return KVP_OK;
}

/* Send a call; @p wake_reader: its replies must be read without its caller. */
static kvp_status_t call_start(kv_rpc_client_t *client, unsigned method_index,
                               const ProtobufCMessage *request, const void *payload,
                               uint64_t payload_len, uint32_t timeout_ms,
                               kv_rpc_recv_t *recv, int wake_reader,
                               kv_rpc_pending_t **pending_p)
{
    pthread_condattr_t attr;
    kv_frame_header_t  hdr = {0};
    pending_t         *p;
    uint8_t           *head, small[SMALL_FRAME];
    size_t             msg_len;
    kvp_status_t       status;

    if (method_index >= client->service->n_methods) {
        return KVP_ERR_INVALID_PARAM;
    }
    msg_len = protobuf_c_message_get_packed_size(request);
    if (msg_len > KV_FRAME_MSG_MAX || payload_len > KV_FRAME_PAYLOAD_MAX ||
        payload_len > client->max_payload) {
        return KVP_ERR_TOO_LARGE;
    }

    p = kv_calloc(1, sizeof(*p), "pending call");
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &attr);
    pthread_condattr_destroy(&attr);
    p->recv       = recv;
    p->state      = PENDING_WAITING;
    p->method     = method_index;
    p->timeout_ms = timeout_ms;

    pthread_mutex_lock(&client->lock);
    if (client->broken != KVP_OK) {
        status = client->broken;
        pthread_mutex_unlock(&client->lock);
        pthread_cond_destroy(&p->cond);
        kv_free(p);
        return status;
    }
    client->callers++;
    client->undone++;
    p->id           = ++client->next_id;
    p->next         = client->pending;
    client->pending = p;
    if (wake_reader && client->reader == READER_NONE) {
        pthread_cond_signal(&client->reader_cond);
    }
    pthread_mutex_unlock(&client->lock);

    hdr.kind        = KV_FRAME_REQUEST;
    hdr.method      = (uint16_t)method_index;
    hdr.id          = p->id;
    hdr.timeout_ms  = timeout_ms;
    hdr.msg_len     = (uint32_t)msg_len;
    hdr.payload_len = payload ? payload_len : 0;
    head            = KV_FRAME_HEADER_LEN + msg_len <= sizeof(small)
                          ? small
                          : kv_malloc(KV_FRAME_HEADER_LEN + msg_len, "request frame");
    kv_frame_header_pack(&hdr, head);
    protobuf_c_message_pack(request, head + KV_FRAME_HEADER_LEN);
    /* the deadline runs from the send, so calls started together share it */
    deadline_after(&p->deadline, timeout_ms);
    p->send_status = send_frame(client, head, KV_FRAME_HEADER_LEN + msg_len, payload,
                                hdr.payload_len);
    if (head != small) {
        kv_free(head);
    }
    *pending_p = p;
    return KVP_OK;
}

kvp_status_t kv_rpc_call_start(kv_rpc_client_t *client, unsigned method_index,
                               const ProtobufCMessage *request, const void *payload,
                               uint64_t payload_len, uint32_t timeout_ms,
                               kv_rpc_recv_t *recv, kv_rpc_pending_t **pending_p)
{
    return call_start(client, method_index, request, payload, payload_len, timeout_ms,
                      recv, 1, pending_p);
}

static int deadline_passed(const struct timespec *deadline)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

kvp_status_t kv_rpc_call_finish(kv_rpc_client_t *client, kv_rpc_pending_t *p,
                                ProtobufCMessage **reply_p)
{
    kvp_status_t status = p->send_status;
    kvp_status_t read_status;
    int          mine;

    pthread_mutex_lock(&client->lock);
    while (status == KVP_OK && p->state != PENDING_DONE) {
        /* while RECEIVING the reader writes into our buffer: wait for it */
        if (client->broken != KVP_OK && p->state == PENDING_WAITING) {
            status = client->broken; /* CONNECTION_LOST, PROTOCOL, AUTH... */
            break;
        }
        if (p->timeout_ms != 0 && p->state == PENDING_WAITING &&
            deadline_passed(&p->deadline)) {
            status = KVP_ERR_TIMED_OUT;
            break;
        }
        if (client->reader == READER_NONE) {
            /* nobody reads: read for ourselves (and for whoever else waits) */
            client->reader = READER_CALLER;
            pthread_mutex_unlock(&client->lock);
            mine = 0;
            do {
                read_status = receive_one(client, p, &mine);
            } while (read_status == KVP_OK && !mine);
            pthread_mutex_lock(&client->lock);
            client->reader = READER_NONE;
            if (read_status != KVP_OK && read_status != READ_TICK) {
                client_break_locked(client, read_status);
            }
            continue;
        }
        p->in_finish = 1;
        if (p->timeout_ms == 0 || p->state == PENDING_RECEIVING) {
            pthread_cond_wait(&p->cond, &client->lock);
        } else {
            pthread_cond_timedwait(&p->cond, &client->lock, &p->deadline);
        }
        p->in_finish = 0;
    }
    pending_unlink(client, p);
    if (p->state != PENDING_DONE) {
        client->undone--;
    }
    if (client->reader == READER_NONE) {
        reader_handoff_locked(client);
    }
    pthread_mutex_unlock(&client->lock);
    if (status == KVP_OK) {
        status = finish_call(&client->service->methods[p->method], p, reply_p);
    }
    kv_free(p->msg);
    pthread_cond_destroy(&p->cond);
    kv_free(p);
    pthread_mutex_lock(&client->lock);
    /* the last call out lets kv_rpc_client_destroy() free the client */
    if (--client->callers == 0) {
        pthread_cond_broadcast(&client->idle);
    }
    pthread_mutex_unlock(&client->lock);
    return status;
}

kvp_status_t kv_rpc_call(kv_rpc_client_t *client, unsigned method_index,
                         const ProtobufCMessage *request, const void *payload,
                         uint64_t payload_len, uint32_t timeout_ms,
                         ProtobufCMessage **reply_p, kv_rpc_recv_t *recv)
{
    kv_rpc_pending_t *pending;
    kvp_status_t      status;

    /* its caller waits at once and reads if nobody does: no wake-up needed */
    status = call_start(client, method_index, request, payload, payload_len,
                        timeout_ms, recv, 0, &pending);
    if (status != KVP_OK) {
        return status;
    }
    return kv_rpc_call_finish(client, pending, reply_p);
}

/* Wake every reader and waiter with the connection lost; end the thread. */
static void receiver_stop(kv_rpc_client_t *client)
{
    shutdown(client->fd, SHUT_RDWR); /* a reader in recv() gets 0 */
    pthread_mutex_lock(&client->lock);
    client->stopping = 1;
    client_break_locked(client, KVP_ERR_CONNECTION_LOST);
    pthread_cond_broadcast(&client->reader_cond);
    pthread_mutex_unlock(&client->lock);
    pthread_join(client->receiver, NULL);
}

static void client_free(kv_rpc_client_t *client)
{
    if (client->hello != NULL) {
        kvpool__hello_reply__free_unpacked(client->hello, NULL);
    }
    pthread_mutex_destroy(&client->lock);
    pthread_mutex_destroy(&client->send_lock);
    pthread_cond_destroy(&client->idle);
    pthread_cond_destroy(&client->reader_cond);
    kv_free(client->in);
    kv_free(client);
}

static kvp_status_t connect_with_timeout(const char *address, uint32_t timeout_ms,
                                         int *fd_p)
{
    struct sockaddr_storage addr;
    socklen_t               addr_len;
    struct pollfd           pfd;
    int                     fd, err = 0, one = 1;
    socklen_t               err_len = sizeof(err);
    kvp_status_t            status;

    status = kv_addr_parse(address, &addr, &addr_len);
    if (status != KVP_OK) {
        return status;
    }
    fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return KVP_ERR_IO;
    }
    if (connect(fd, (struct sockaddr *)&addr, addr_len) != 0) {
        if (errno != EINPROGRESS) {
            status = kv_status_from_errno(errno);
            goto err_close;
        }
        pfd.fd     = fd;
        pfd.events = POLLOUT;
        if (poll(&pfd, 1, timeout_ms ? (int)timeout_ms : -1) != 1) {
            status = KVP_ERR_TIMED_OUT;
            goto err_close;
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
        if (err != 0) {
            status = kv_status_from_errno(err);
            goto err_close;
        }
    }
    /* back to blocking: the reader sleeps in recv(), a tick at a time */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *fd_p = fd;
    return KVP_OK;

err_close:
    close(fd);
    return status;
}

kvp_status_t kv_rpc_client_create(const kv_rpc_client_params_t *params,
                                  kv_rpc_client_t **client_p)
{
    Kvpool__Hello       hello = KVPOOL__HELLO__INIT;
    Kvpool__HelloReply *reply = NULL;
    kv_rpc_client_t    *client;
    struct timeval      send_timeout, tick = {0, READ_TICK_MS * 1000};
    size_t              token_len = params->token ? strlen(params->token) : 0;
    kvp_status_t        status;

    if (token_len > KVP_TOKEN_MAX || params->service == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    client              = kv_calloc(1, sizeof(*client), "rpc client");
    client->service     = params->service;
    client->max_payload = KV_FRAME_PAYLOAD_MAX;
    pthread_mutex_init(&client->lock, NULL);
    pthread_mutex_init(&client->send_lock, NULL);
    pthread_cond_init(&client->idle, NULL);
    pthread_cond_init(&client->reader_cond, NULL);
    client->in = kv_malloc(IN_BUF, "read-ahead buffer");
    status = connect_with_timeout(params->address, params->timeout_ms, &client->fd);
    if (status != KVP_OK) {
        goto err_free;
    }
    /* a peer that stops reading must not block a sender forever */
    send_timeout.tv_sec  = params->timeout_ms / 1000;
    send_timeout.tv_usec = (params->timeout_ms % 1000) * 1000;
    setsockopt(client->fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    setsockopt(client->fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
    if (pthread_create(&client->receiver, NULL, receiver_main, client) != 0) {
        status = KVP_ERR_NO_MEMORY;
        goto err_close;
    }

    hello.version     = KVP_PROTOCOL_VERSION;
    hello.token.data  = (uint8_t *)params->token;
    hello.token.len   = token_len;
    hello.client_name = (char *)(params->name ? params->name : "libkvpool");
    status = kv_rpc_call(client, 0, &hello.base, NULL, 0, params->timeout_ms,
                         (ProtobufCMessage **)&reply, NULL);
    if (status != KVP_OK) {
        goto err_stop;
    }
    if (reply->version != KVP_PROTOCOL_VERSION) {
        kvpool__hello_reply__free_unpacked(reply, NULL);
        status = KVP_ERR_VERSION;
        goto err_stop;
    }
    client->max_payload = KV_MIN(reply->max_payload, KV_FRAME_PAYLOAD_MAX);
    client->hello       = reply;
    *client_p = client;
    return KVP_OK;

err_stop:
    receiver_stop(client);
err_close:
    close(client->fd);
err_free:
    client_free(client);
    return status;
}

void kv_rpc_client_set_service(kv_rpc_client_t *client,
                               const ProtobufCServiceDescriptor *service)
{
    client->service = service;
}

void kv_rpc_client_destroy(kv_rpc_client_t *client)
{
    if (client == NULL) {
        return;
    }
    receiver_stop(client); /* calls in flight fail: the client is broken */
    pthread_mutex_lock(&client->lock);
    while (client->callers > 0) {
        pthread_cond_wait(&client->idle, &client->lock);
    }
    pthread_mutex_unlock(&client->lock);
    close(client->fd);
    client_free(client);
}

const Kvpool__HelloReply *kv_rpc_client_hello(const kv_rpc_client_t *client)
{
    return client->hello;
}

uint64_t kv_rpc_client_max_payload(const kv_rpc_client_t *client)
{
    return client->max_payload;
}
