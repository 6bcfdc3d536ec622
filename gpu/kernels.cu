/*
 * Gather and scatter between an engine's paged KV cache and contiguous
 * blocks (gpu.h).  One launch moves n blocks: grid.y is the block, grid.x
 * and the threads stride over its 2 x layers pages in 16-byte words (a
 * page is a whole number of them when its byte size is a multiple of 16,
 * else 4-byte words), so a block copy is coalesced on both sides.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

template <typename W>
__global__ void move_pages(void *const *k_layers, void *const *v_layers,
                           const uint32_t *page_ids, uint32_t layers, uint64_t page_words,
                           W *blocks, int to_block)
{
    uint64_t block_words = 2 * (uint64_t)layers * page_words;
    W       *blk         = blocks + (uint64_t)blockIdx.y * block_words;
    uint64_t page        = page_ids[blockIdx.y];

    for (uint64_t w = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; w < block_words;
         w += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t half  = w / page_words; /* 2 x layer + (0: K, 1: V) */
        uint64_t in    = w % page_words;
        W       *cache = (W *)((half & 1) ? v_layers[half / 2] : k_layers[half / 2]);
        W       *at    = cache + page * page_words + in;

        if (to_block) {
            blk[w] = *at;
        } else {
            *at = blk[w];
        }
    }
}

extern "C" int kv_gpu__launch_move(void *const *k_layers, void *const *v_layers,
                                   const uint32_t *page_ids, uint32_t n, uint32_t layers,
                                   uint64_t page_bytes, void *blocks, int to_block,
                                   void *stream)
{
    dim3         grid(32, n);
    cudaStream_t s = (cudaStream_t)stream;

    if (page_bytes % 16 == 0) {
        move_pages<uint4><<<grid, 256, 0, s>>>(k_layers, v_layers, page_ids, layers,
                                               page_bytes / 16, (uint4 *)blocks, to_block);
    } else {
        move_pages<uint32_t><<<grid, 256, 0, s>>>(k_layers, v_layers, page_ids, layers,
                                                  page_bytes / 4, (uint32_t *)blocks,
                                                  to_block);
    }
    return (int)cudaGetLastError();
}
