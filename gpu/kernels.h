/*
 * The kernels' launcher (kernels.cu), called by gpu.c.  Private to gpu/.
 * page_bytes must be a multiple of 4 (gpu.c checks).  Returns the
 * cudaError_t of the launch.
 */
#ifndef KV_GPU_KERNELS_H
#define KV_GPU_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int kv_gpu__launch_move(void *const *k_layers, void *const *v_layers,
                        const uint32_t *page_ids, uint32_t n, uint32_t layers,
                        uint64_t page_bytes, void *blocks, int to_block, void *stream);

#ifdef __cplusplus
}
#endif

#endif
