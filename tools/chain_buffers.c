/*
 * chain_buffers.c - a worker's buffers for loading and checking chains
 * (the demo's and the live replay's).
 */
#include "workload.h"

#include <kv/alloc.h>

void kv_chain_buffers_init(kv_chain_buffers_t *b, uint64_t block_size)
{
    b->block_size = block_size;
    b->want       = kv_malloc(block_size, "expected block");
}

void kv_chain_buffers_reserve(kv_chain_buffers_t *b, size_t n)
{
    if (n <= b->cap) {
        return;
    }
    b->bufs     = kv_realloc(b->bufs, n * sizeof(*b->bufs), "block buffers");
    b->caps     = kv_realloc(b->caps, n * sizeof(*b->caps), "capacities");
    b->sizes    = kv_realloc(b->sizes, n * sizeof(*b->sizes), "sizes");
    b->statuses = kv_realloc(b->statuses, n * sizeof(*b->statuses), "statuses");
    for (size_t i = b->cap; i < n; i++) {
        b->bufs[i] = kv_malloc(b->block_size, "block buffer");
        b->caps[i] = b->block_size;
    }
    b->cap = n;
}

void kv_chain_buffers_cleanup(kv_chain_buffers_t *b)
{
    for (size_t i = 0; i < b->cap; i++) {
        kv_free(b->bufs[i]);
    }
    kv_free(b->bufs);
    kv_free(b->caps);
    kv_free(b->sizes);
    kv_free(b->statuses);
    kv_free(b->want);
}
