/*
 * The contiguous block layout (gpu.h): layer after layer, that layer's K
 * page then its V page, each page [block_tokens][kv_heads][head_dim] as in
 * the engine's paged cache.  Pure arithmetic: the kernels and the tests
 * both follow it.
 */
#include <kvgpu/gpu.h>

int kv_gpu_layout_valid(const kv_gpu_layout_t *l)
{
    return l != NULL && l->layers >= 1 && l->layers <= 1024 && l->block_tokens >= 1 &&
           l->block_tokens <= 65536 && l->kv_heads >= 1 && l->kv_heads <= 1024 &&
           l->head_dim >= 1 && l->head_dim <= 4096 &&
           (l->elem_size == 2 || l->elem_size == 4) &&
           kv_gpu_block_bytes(l) < ((uint64_t)4 << 30);
}

uint64_t kv_gpu_page_bytes(const kv_gpu_layout_t *l)
{
    return (uint64_t)l->block_tokens * l->kv_heads * l->head_dim * l->elem_size;
}

uint64_t kv_gpu_block_bytes(const kv_gpu_layout_t *l)
{
    return 2 * (uint64_t)l->layers * kv_gpu_page_bytes(l);
}

uint64_t kv_gpu_block_offset(const kv_gpu_layout_t *l, uint32_t layer, uint32_t v,
                             uint32_t token, uint32_t head, uint32_t dim)
{
    uint64_t in_page = (((uint64_t)token * l->kv_heads + head) * l->head_dim + dim) *
                       l->elem_size;

    return (2 * (uint64_t)layer + v) * kv_gpu_page_bytes(l) + in_page;
}
