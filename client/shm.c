/*
 * The same-host path: when the node runs on this host, the client maps the
 * node's arena (a memfd handed over an abstract Unix socket, see
 * pool/node_shm.c) and moves block bytes with memcpy, under the two-phase
 * RPCs of twophase.c; each copy computes its checksum as it goes.  The RPC connection
 * stays the liveness signal: a dead node fails the RPCs, and copying from
 * the mapping never blocks.  A block whose bytes do not match its checksum
 * (torn by an expired lease, or damaged) is a miss, never data.
 */
#include "client_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/util.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static int same_host(const ProtobufCBinaryData *host_id)
{
    char mine[64];

    kv_host_id(mine, sizeof(mine));
    return mine[0] != '\0' && host_id->len == strlen(mine) &&
           memcmp(host_id->data, mine, host_id->len) == 0;
}

/* Ask the node's socket for the arena's memfd.  Returns the fd or -1. */
static int receive_arena_fd(const char *name, const char *token, uint32_t timeout_ms,
                            uint64_t *size_p)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval     tv   = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    size_t             name_len = strlen(name), token_len = token ? strlen(token) : 0;
    uint8_t            hello[1 + KVP_TOKEN_MAX], wire[8];
    struct iovec       iov = {wire, sizeof(wire)};
    union {
        struct cmsghdr hdr;
        char           buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr   msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                           .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cm;
    uint64_t        size = 0;
    int             sock, fd = -1;

    if (name_len + 1 >= sizeof(addr.sun_path) || token_len > KVP_TOKEN_MAX) {
        return -1;
    }
    memcpy(addr.sun_path + 1, name, name_len);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        return -1;
    }
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    hello[0] = (uint8_t)token_len;
    if (token_len > 0) {
        memcpy(hello + 1, token, token_len);
    }
    if (connect(sock, (struct sockaddr *)&addr,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name_len)) != 0 ||
        send(sock, hello, 1 + token_len, MSG_NOSIGNAL) != (ssize_t)(1 + token_len) ||
        recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL) != sizeof(wire)) {
        kv_log_info("shared memory: cannot reach @%s: %s", name, strerror(errno));
        close(sock);
        return -1;
    }
    close(sock);
    for (int i = 0; i < 8; i++) {
        size |= (uint64_t)wire[i] << (8 * i);
    }
    cm = CMSG_FIRSTHDR(&msg);
    if (cm != NULL && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    }
    if (fd >= 0 && size == 0) {
        close(fd);
        fd = -1;
    }
    *size_p = size;
    return fd;
}

kvp_status_t kvp__shm_attach(kvp_client_h client, const char *token)
{
    const Kvpool__HelloReply *hello = kv_rpc_client_hello(client->rpc);
    uint64_t                  size  = 0;
    void                     *base;
    int                       fd;

    if (hello->shm_socket == NULL || hello->shm_socket[0] == '\0' ||
        !same_host(&hello->host_id)) {
        return KVP_ERR_UNSUPPORTED;
    }
    fd = receive_arena_fd(hello->shm_socket, token, client->timeout_ms, &size);
    if (fd < 0) {
        return size == 0 ? KVP_ERR_AUTH : KVP_ERR_IO;
    }
    if (size != hello->arena_size) {
        close(fd);
        return KVP_ERR_PROTOCOL;
    }
    /* map every page now: faulting them in on the put path costs more than the copy */
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        kv_log_warn("shared memory: cannot map %llu bytes: %s",
                    (unsigned long long)size, strerror(errno));
        return KVP_ERR_IO;
    }
    client->shm_base = base;
    client->shm_size = size;
    return KVP_OK;
}

void kvp__shm_detach(kvp_client_h client)
{
    if (client->shm_base != NULL) {
        munmap(client->shm_base, client->shm_size);
        client->shm_base = NULL;
    }
}

kvp_status_t kvp__shm_move(kvp_client_h client, int is_put, void *const *locals,
                           const uint64_t *offsets, const uint64_t *lens, size_t n,
                           uint64_t *sums)
{
    for (size_t j = 0; j < n; j++) {
        uint8_t *arena = client->shm_base + offsets[j];
        sums[j] = is_put ? kv_copy_checksum(arena, locals[j], lens[j])
                         : kv_copy_checksum(locals[j], arena, lens[j]);
    }
    return KVP_OK;
}
