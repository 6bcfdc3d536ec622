/*
 * The network data path of the node: the whole arena registered with the
 * transport layer (kvt, backend "ucx"), its packed rkey, its base address
 * and a kvt listener announced in every HelloReply.  Clients elsewhere then
 * move block bytes one-sided (kvt_ep_put / kvt_ep_get into
 * arena_base + span.offset) under the same two-phase RPCs as the same-host
 * path (node_twophase.c): the node checks the checksums at PutCommit and
 * the client verifies them after a get, so bytes that arrive late, torn or
 * not at all are a failed put or a miss, never data.
 *
 * Over TCP UCX (and kvt's own emulation) serves one-sided operations with
 * messages that need the target's progress: the context's event fd sits in
 * the node's event loop, and every wakeup progresses the context until it
 * can be armed again.  Nothing here is required: if any step fails the node
 * logs it and serves without the data plane (clients then use frames).
 */
#include "node_int.h"

#include <kv/alloc.h>
#include <kv/log.h>

#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

/* Progress until the context has nothing left, then arm its event fd. */
static void ucx_drain(kv_node_t *node)
{
    kvp_status_t status;

    do {
        kvt_progress(node->kvt);
        status = kvt_context_arm(node->kvt);
    } while (status == KVP_INPROGRESS);
}

static void on_ucx_event(int fd, uint32_t events, void *arg)
{
    (void)fd;
    (void)events;
    ucx_drain(arg);
}

kvp_status_t kv_node_ucx_create(kv_node_t *node)
{
    kvt_params_t params = {.field_mask = KVT_PARAM_FIELD_BACKEND, .backend = "ucx"};
    char         addr[300];
    kvp_status_t status;

    node->kvt_fd = -1;
    status = kvt_context_create(&params, &node->kvt);
    if (status != KVP_OK) {
        kv_log_warn("data plane: no ucx context: %s", kvp_status_string(status));
        return status;
    }
    status = kvt_mem_reg(node->kvt, kv_arena_base(node->arena),
                         kv_arena_capacity(node->arena), &node->kvt_mem);
    if (status != KVP_OK) {
        kv_log_warn("data plane: cannot register the arena: %s",
                    kvp_status_string(status));
        goto err;
    }
    status = kvt_mem_pack_rkey(node->kvt_mem, &node->kvt_rkey, &node->kvt_rkey_len);
    if (status != KVP_OK) {
        kv_log_warn("data plane: cannot pack the arena's rkey: %s",
                    kvp_status_string(status));
        goto err;
    }
    if (strchr(node->config.listen, ':') != NULL) {
        snprintf(addr, sizeof(addr), "[%s]:0", node->config.listen);
    } else {
        snprintf(addr, sizeof(addr), "%s:0", node->config.listen);
    }
    status = kvt_listener_create(node->kvt, addr, &node->kvt_listener);
    if (status == KVP_OK) {
        status = kvt_listener_address(node->kvt_listener, node->ucx_address,
                                      sizeof(node->ucx_address));
    }
    if (status != KVP_OK) {
        kv_log_warn("data plane: cannot listen on %s: %s", addr,
                    kvp_status_string(status));
        goto err;
    }
    status = kvt_context_event_fd(node->kvt, &node->kvt_fd);
    if (status == KVP_OK) {
        status = kv_evloop_add(node->loop, node->kvt_fd, EPOLLIN, on_ucx_event, node);
    }
    if (status != KVP_OK) {
        kv_log_warn("data plane: cannot wait on the ucx context: %s",
                    kvp_status_string(status));
        node->kvt_fd = -1;
        goto err;
    }
    ucx_drain(node);
    kv_log_info("data plane: ucx on %s (%llu bytes of arena, rkey %zu bytes)",
                node->ucx_address, (unsigned long long)kv_arena_capacity(node->arena),
                node->kvt_rkey_len);
    return KVP_OK;

err:
    kv_node_ucx_destroy(node);
    return status;
}

void kv_node_ucx_progress(kv_node_t *node)
{
    if (node->kvt != NULL && node->kvt_fd >= 0) {
        ucx_drain(node);
    }
}

void kv_node_ucx_destroy(kv_node_t *node)
{
    if (node->kvt_fd >= 0) {
        kv_evloop_remove(node->loop, node->kvt_fd);
        node->kvt_fd = -1;
    }
    /* stop accepting, then close accepted connections with the context,
     * then drop the registration (no peer can reach it any more) */
    kvt_listener_destroy(node->kvt_listener);
    node->kvt_listener = NULL;
    kvt_mem_dereg(node->kvt_mem);
    node->kvt_mem = NULL;
    kvt_context_destroy(node->kvt);
    node->kvt = NULL;
    kv_free(node->kvt_rkey);
    node->kvt_rkey       = NULL;
    node->kvt_rkey_len   = 0;
    node->ucx_address[0] = '\0';
}
