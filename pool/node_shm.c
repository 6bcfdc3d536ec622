/*
 * Sharing the arena with clients on the same host.
 *
 * The arena is a memfd.  The node listens on an abstract Unix socket (no
 * file to clean up; reachable only inside the node's network namespace)
 * whose name it announces in HelloReply together with its host's boot id.
 * A client on the same host connects, sends its token:
 *
 *     client -> node:  [1 byte n][n bytes token]
 *     node -> client:  [8 bytes arena size, little-endian] + SCM_RIGHTS memfd
 *                      or [8 zero bytes] and no descriptor if refused
 *
 * and maps the arena.  Blocks then move by memcpy under the leases of the
 * two-phase RPCs (node_twophase.c); the RPC connection stays the liveness
 * signal, so a dead node is still detected.  Without a token the node only
 * hands the arena to processes of its own user (SO_PEERCRED).
 */
#include "node_int.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SHM_HANDSHAKE_TIMEOUT_NS (5ull * 1000000000ull)

typedef struct shm_peer {
    struct shm_peer *next;
    kv_node_t       *node;
    int              fd;
    uint8_t          buf[1 + KVP_TOKEN_MAX];
    size_t           got;
    uint64_t         accepted_ns;
} shm_peer_t;

struct kv_node_shm {
    int         listen_fd;
    shm_peer_t *peers;
};

static void peer_close(kv_node_shm_t *shm, shm_peer_t *peer)
{
    for (shm_peer_t **pp = &shm->peers; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == peer) {
            *pp = peer->next;
            break;
        }
    }
    kv_evloop_remove(peer->node->loop, peer->fd);
    close(peer->fd);
    kv_free(peer);
}

static int peer_allowed(shm_peer_t *peer)
{
    const char   *token = peer->node->config.token;
    struct ucred  cred;
    socklen_t     len = sizeof(cred);

    if (peer->buf[0] > KVP_TOKEN_MAX) {
        return 0;
    }
    if (token[0] != '\0') {
        return peer->buf[0] == strlen(token) &&
               memcmp(peer->buf + 1, token, peer->buf[0]) == 0;
    }
    return getsockopt(peer->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
           (cred.uid == geteuid() || cred.uid == 0);
}

static void peer_answer(shm_peer_t *peer)
{
    uint64_t        size = 0;
    uint8_t         wire[8];
    struct iovec    iov = {wire, sizeof(wire)};
    union {
        struct cmsghdr hdr;
        char           buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr   msg = {.msg_iov = &iov, .msg_iovlen = 1};
    int             allowed = peer_allowed(peer);

    if (allowed) {
        int fd = kv_arena_fd(peer->node->arena);
        size   = kv_arena_capacity(peer->node->arena);
        memset(&control, 0, sizeof(control));
        msg.msg_control    = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level     = SOL_SOCKET;
        cm->cmsg_type      = SCM_RIGHTS;
        cm->cmsg_len       = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    } else {
        kv_log_warn("shared memory: refused a local client (token or user)");
    }
    for (int i = 0; i < 8; i++) {
        wire[i] = (uint8_t)(size >> (8 * i));
    }
    if (sendmsg(peer->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != sizeof(wire)) {
        kv_log_info("shared memory: cannot answer a local client: %m");
    }
}

static void peer_event(int fd, uint32_t events, void *arg)
{
    shm_peer_t    *peer = arg;
    kv_node_shm_t *shm  = peer->node->shm;
    ssize_t        n    = recv(fd, peer->buf + peer->got, sizeof(peer->buf) - peer->got, 0);

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        peer_close(shm, peer);
        return;
    }
    peer->got += (size_t)n;
    /* a token over the limit is refused as soon as its length is known */
    if (peer->buf[0] > KVP_TOKEN_MAX || peer->got >= 1u + peer->buf[0]) {
        peer_answer(peer);
        peer_close(shm, peer);
    }
}

static void listen_event(int fd, uint32_t events, void *arg)
{
    kv_node_t *node = arg;

    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            return;
        }
        shm_peer_t *peer  = kv_calloc(1, sizeof(*peer), "shm peer");
        peer->node        = node;
        peer->fd          = cfd;
        peer->accepted_ns = kv_time_ns();
        if (kv_evloop_add(node->loop, cfd, EPOLLIN, peer_event, peer) != KVP_OK) {
            close(cfd);
            kv_free(peer);
            continue;
        }
        peer->next       = node->shm->peers;
        node->shm->peers = peer;
    }
}

kvp_status_t kv_node_shm_create(kv_node_t *node, char *name, size_t name_len)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    kv_node_shm_t     *shm;
    uint32_t           nonce = 0;
    socklen_t          addr_len;

    if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce)) {
        nonce = (uint32_t)kv_time_ns();
    }
    snprintf(name, name_len, "kvpool-node-%d-%08x", (int)getpid(), nonce);
    memcpy(addr.sun_path + 1, name, strlen(name));
    addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));

    shm            = kv_calloc(1, sizeof(*shm), "shm");
    shm->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (shm->listen_fd < 0 ||
        bind(shm->listen_fd, (struct sockaddr *)&addr, addr_len) != 0 ||
        listen(shm->listen_fd, 64) != 0) {
        kv_log_error("shared memory: cannot listen on @%s: %m", name);
        goto err;
    }
    if (kv_evloop_add(node->loop, shm->listen_fd, EPOLLIN, listen_event, node) !=
        KVP_OK) {
        goto err;
    }
    node->shm = shm;
    kv_log_info("sharing the arena with local clients on @%s", name);
    return KVP_OK;

err:
    if (shm->listen_fd >= 0) {
        close(shm->listen_fd);
    }
    kv_free(shm);
    return KVP_ERR_IO;
}

void kv_node_shm_expire(kv_node_t *node)
{
    uint64_t    now = kv_time_ns();
    shm_peer_t *peer, *next;

    if (node->shm == NULL) {
        return;
    }
    for (peer = node->shm->peers; peer != NULL; peer = next) {
        next = peer->next;
        if (now - peer->accepted_ns > SHM_HANDSHAKE_TIMEOUT_NS) {
            peer_close(node->shm, peer);
        }
    }
}

void kv_node_shm_destroy(kv_node_t *node)
{
    kv_node_shm_t *shm = node->shm;

    if (shm == NULL) {
        return;
    }
    while (shm->peers != NULL) {
        peer_close(shm, shm->peers);
    }
    kv_evloop_remove(node->loop, shm->listen_fd);
    close(shm->listen_fd);
    kv_free(shm);
    node->shm = NULL;
}
