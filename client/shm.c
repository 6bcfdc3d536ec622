/*
 * The same-host path: when the node runs on this host, the client maps the
 * node's arena (a memfd handed over an abstract Unix socket, see
 * pool/node_shm.c) and moves block bytes with memcpy, under the two-phase
 * RPCs: PutStart -> copy in -> PutCommit (the node checks the checksums),
 * GetStart -> copy out -> verify checksums -> GetEnd.  The RPC connection
 * stays the liveness signal: a dead node fails the RPCs, and copying from
 * the mapping never blocks.  A block whose bytes do not match its checksum
 * (torn by an expired lease, or damaged) is a miss, never data.
 */
#include "client_int.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>

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
    char  mine[64] = "";
    FILE *f        = fopen("/proc/sys/kernel/random/boot_id", "r");

    if (f != NULL) {
        if (fgets(mine, sizeof(mine), f) == NULL) {
            mine[0] = '\0';
        }
        mine[strcspn(mine, "\n")] = '\0';
        fclose(f);
    }
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

/* A span from the node must lie inside the mapping before we touch it. */
static int span_valid(kvp_client_h client, const Kvpool__BlockSpan *span)
{
    return span->offset <= client->shm_size &&
           span->size <= client->shm_size - span->offset;
}

static ProtobufCBinaryData *keys_borrow(const kvp_key_t *keys, size_t count)
{
    ProtobufCBinaryData *bin = kv_malloc(count * sizeof(*bin) + 1, "key list");

    for (size_t i = 0; i < count; i++) {
        bin[i].data = (uint8_t *)keys[i].bytes;
        bin[i].len  = KVP_KEY_LEN;
    }
    return bin;
}

kvp_status_t kvp__shm_put(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                          const void *const *datas, const uint64_t *sizes,
                          size_t count, kvp_status_t *statuses)
{
    Kvpool__PutStartRequest  start    = KVPOOL__PUT_START_REQUEST__INIT;
    Kvpool__PutCommitRequest commit   = KVPOOL__PUT_COMMIT_REQUEST__INIT;
    Kvpool__PutStartReply   *started  = NULL;
    Kvpool__PutCommitReply  *done     = NULL;
    uint64_t                *checksums;
    kvp_status_t             status;

    start.ns      = kvp__ns_bytes(ns);
    start.n_keys  = count;
    start.keys    = keys_borrow(keys, count);
    start.n_sizes = count;
    start.sizes   = (uint64_t *)sizes;
    status = kv_rpc_call(client->rpc, KVP__PUT_START, &start.base, NULL, 0,
                         client->timeout_ms, (ProtobufCMessage **)&started, NULL);
    kv_free(start.keys);
    if (status != KVP_OK) {
        return status;
    }
    if (started->n_blocks != count) {
        status = KVP_ERR_PROTOCOL;
        goto out_started;
    }
    checksums = kv_calloc(count, sizeof(*checksums), "checksums");
    for (size_t i = 0; i < count; i++) {
        const Kvpool__BlockSpan *span = started->blocks[i];
        if (span->status != KVP_OK) {
            continue;
        }
        if (!span_valid(client, span) || span->size != sizes[i]) {
            status = KVP_ERR_PROTOCOL;
            break;
        }
        checksums[i] = kv_copy_checksum(client->shm_base + span->offset, datas[i],
                                        sizes[i]);
    }
    if (status == KVP_OK) {
        commit.put_id      = started->put_id;
        commit.n_checksums = count;
        commit.checksums   = checksums;
        status = kv_rpc_call(client->rpc, KVP__PUT_COMMIT, &commit.base, NULL, 0,
                             client->timeout_ms, (ProtobufCMessage **)&done, NULL);
    }
    if (status == KVP_OK && done->n_statuses != count) {
        status = KVP_ERR_PROTOCOL;
    }
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        statuses[i] = started->blocks[i]->status != KVP_OK
                          ? (kvp_status_t)started->blocks[i]->status
                          : (kvp_status_t)done->statuses[i];
    }
    if (done != NULL) {
        kvpool__put_commit_reply__free_unpacked(done, NULL);
    }
    kv_free(checksums);
out_started:
    kvpool__put_start_reply__free_unpacked(started, NULL);
    return status;
}

kvp_status_t kvp__shm_get(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                          void *const *bufs, const uint64_t *capacities,
                          size_t count, uint64_t *sizes, kvp_status_t *statuses)
{
    Kvpool__GetStartRequest start   = KVPOOL__GET_START_REQUEST__INIT;
    Kvpool__GetEndRequest   end     = KVPOOL__GET_END_REQUEST__INIT;
    Kvpool__GetStartReply  *started = NULL;
    kvp_status_t            status;

    start.ns     = kvp__ns_bytes(ns);
    start.n_keys = count;
    start.keys   = keys_borrow(keys, count);
    status = kv_rpc_call(client->rpc, KVP__GET_START, &start.base, NULL, 0,
                         client->timeout_ms, (ProtobufCMessage **)&started, NULL);
    kv_free(start.keys);
    if (status != KVP_OK) {
        return status;
    }
    if (started->n_blocks != count) {
        status = KVP_ERR_PROTOCOL;
    }
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        const Kvpool__BlockSpan *span = started->blocks[i];
        statuses[i] = (kvp_status_t)span->status;
        if (span->status != KVP_OK) {
            continue;
        }
        if (!span_valid(client, span)) {
            status = KVP_ERR_PROTOCOL;
            break;
        }
        sizes[i] = span->size;
        if (span->size > capacities[i]) {
            statuses[i] = KVP_ERR_BUFFER_TOO_SMALL;
            continue;
        }
        if (kv_copy_checksum(bufs[i], client->shm_base + span->offset, span->size) !=
            span->checksum) {
            kv_log_warn("get: block failed its checksum; treating it as a miss");
            statuses[i] = KVP_ERR_CHECKSUM;
        }
    }
    /* end the lease even if the node gave nonsense: it pins blocks */
    end.lease_id = started->lease_id;
    kvp_status_t end_status = kv_rpc_call(client->rpc, KVP__GET_END, &end.base, NULL,
                                          0, client->timeout_ms, NULL, NULL);
    if (status == KVP_OK && end_status != KVP_OK && end_status != KVP_ERR_NOT_FOUND) {
        status = end_status;
    }
    kvpool__get_start_reply__free_unpacked(started, NULL);
    return status;
}
