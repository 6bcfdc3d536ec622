/**
 * @file gpu.h
 * @brief The GPU tier's building blocks (library kvgpu, built when CMake
 * finds a CUDA compiler): finding a device, an arena of device memory cut
 * into block slots, copies between host and device, kernels that gather
 * an engine's paged KV cache into contiguous blocks and scatter them back,
 * and block transfer between two GPUs with NCCL.
 *
 * The paged layout is vLLM's: for each layer, K and V are two device
 * arrays of shape [num_blocks, block_tokens, kv_heads, head_dim] of
 * elem_size-byte elements.  A contiguous block holds, layer after layer,
 * that layer's K page then its V page (kv_gpu_block_offset()), so one
 * block moves as one transfer instead of 2 x layers (MemServe's
 * aggregation).
 *
 * Errors of the CUDA runtime and NCCL are turned into kvp_status_t here:
 * no device, or a driver older than the runtime, is KVP_ERR_UNSUPPORTED.
 * The library links the CUDA runtime only, never libcuda, so programs
 * using it start on machines without a driver.
 *
 * Streams are passed as void * (a cudaStream_t; NULL: the default stream),
 * so this header needs no CUDA header.
 *
 * Threading: the calls are as thread-safe as the CUDA runtime; an arena's
 * slot table is not (one thread, or the caller's lock).
 */
#ifndef KVGPU_GPU_H
#define KVGPU_GPU_H

#include <kvpool/status.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief How many CUDA devices this process can use.
 * @param [out] count_p set on KVP_OK.
 * @param [out] why     on failure, the reason (may be NULL).
 * @return KVP_OK (at least one device); KVP_ERR_UNSUPPORTED (none, or no
 *         usable driver).
 */
kvp_status_t kv_gpu_probe(int *count_p, char *why, size_t why_len);

/** An engine's paged KV layout. */
typedef struct kv_gpu_layout {
    uint32_t layers;
    uint32_t block_tokens; /**< tokens per page (block) */
    uint32_t kv_heads;
    uint32_t head_dim;
    uint32_t elem_size;    /**< bytes per element: 2 (fp16/bf16) or 4 */
} kv_gpu_layout_t;

/** @return non-zero if every field is usable (each >= 1, elem_size 2 or 4,
 *          a block under 4 GiB). */
int kv_gpu_layout_valid(const kv_gpu_layout_t *layout);

/** @return bytes of one page of K (or V) of one layer. */
uint64_t kv_gpu_page_bytes(const kv_gpu_layout_t *layout);

/** @return bytes of one contiguous block: 2 x layers pages. */
uint64_t kv_gpu_block_bytes(const kv_gpu_layout_t *layout);

/**
 * @return the byte offset, in a contiguous block, of the element (@p layer,
 *         @p v: 0 for K and 1 for V, @p token, @p head, @p dim).
 */
uint64_t kv_gpu_block_offset(const kv_gpu_layout_t *layout, uint32_t layer, uint32_t v,
                             uint32_t token, uint32_t head, uint32_t dim);

/**
 * @brief Gather pages @p page_ids[0..n) of every layer into @p n
 * contiguous blocks at @p dst (n x kv_gpu_block_bytes()), one kernel
 * launch, asynchronous on @p stream.
 * @param [in] k_layers, v_layers device arrays of layers pointers (device
 *                     memory holding the per-layer K and V base addresses).
 * @param [in] page_ids device array of @p n page indices.
 * @return KVP_OK (launched); KVP_ERR_INVALID_PARAM; KVP_ERR_UNSUPPORTED
 *         (no device); KVP_ERR_INTERNAL (a launch error, logged).
 */
kvp_status_t kv_gpu_gather(const kv_gpu_layout_t *layout, void *const *k_layers,
                           void *const *v_layers, const uint32_t *page_ids, uint32_t n,
                           void *dst, void *stream);

/** @brief The reverse of kv_gpu_gather(): blocks at @p src into the pages. */
kvp_status_t kv_gpu_scatter(const kv_gpu_layout_t *layout, void *const *k_layers,
                            void *const *v_layers, const uint32_t *page_ids, uint32_t n,
                            const void *src, void *stream);

/** Device memory cut into equal slots, one block each. */
typedef struct kv_gpu_arena kv_gpu_arena_t;

/**
 * @brief cudaMalloc @p slots x @p slot_bytes on the current device.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM; KVP_ERR_UNSUPPORTED (no device);
 *         KVP_ERR_NO_MEMORY (device memory).
 */
kvp_status_t kv_gpu_arena_create(uint64_t slots, uint64_t slot_bytes,
                                 kv_gpu_arena_t **arena_p);

/** @brief Free the device memory and the arena.  NULL is accepted. */
void kv_gpu_arena_destroy(kv_gpu_arena_t *arena);

/** @brief Take a free slot. @return KVP_OK; KVP_ERR_NO_SPACE (all taken). */
kvp_status_t kv_gpu_arena_alloc(kv_gpu_arena_t *arena, uint64_t *slot_p);

/** @brief Give slot @p slot back (an unknown or free slot is ignored). */
void kv_gpu_arena_free(kv_gpu_arena_t *arena, uint64_t slot);

/** @return the device address of slot @p slot. */
void *kv_gpu_arena_slot(const kv_gpu_arena_t *arena, uint64_t slot);

/**
 * @brief Pinned (page-locked) host memory for staging copies
 * (cudaHostAlloc); free with kv_gpu_host_free().
 * @return KVP_OK; KVP_ERR_UNSUPPORTED; KVP_ERR_NO_MEMORY.
 */
kvp_status_t kv_gpu_host_alloc(uint64_t bytes, void **ptr_p);

/** @brief Free what kv_gpu_host_alloc() gave.  NULL is accepted. */
void kv_gpu_host_free(void *ptr);

/**
 * @brief Copy @p bytes asynchronously on @p stream (cudaMemcpyAsync;
 * @p to_device: host -> device, else device -> host).  With pinned host
 * memory the copy overlaps the caller's work.
 */
kvp_status_t kv_gpu_copy(void *dst, const void *src, uint64_t bytes, int to_device,
                         void *stream);

/** @brief Wait until everything queued on @p stream is done. */
kvp_status_t kv_gpu_sync(void *stream);

/** Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES). */
#define KV_GPU_NCCL_ID_BYTES 128

/** A two-or-more-rank NCCL communicator for block transfer. */
typedef struct kv_gpu_nccl kv_gpu_nccl_t;

/** @brief A new unique id, made by one rank and sent to the others by the caller. */
kvp_status_t kv_gpu_nccl_id(uint8_t id[KV_GPU_NCCL_ID_BYTES]);

/**
 * @brief Join the communicator of @p nranks ranks named by @p id as rank
 * @p rank, on device @p device (blocks until every rank joined).
 */
kvp_status_t kv_gpu_nccl_init(const uint8_t id[KV_GPU_NCCL_ID_BYTES], int nranks, int rank,
                              int device, kv_gpu_nccl_t **comm_p);

/** @brief Leave and free the communicator.  NULL is accepted. */
void kv_gpu_nccl_destroy(kv_gpu_nccl_t *comm);

/**
 * @brief Send @p bytes of device memory to rank @p peer, and receive
 * @p recv_bytes from @p recv_peer into @p recv_buf, grouped (either may be
 * 0 bytes), asynchronously on @p stream.
 */
kvp_status_t kv_gpu_nccl_sendrecv(kv_gpu_nccl_t *comm, const void *send_buf,
                                  uint64_t bytes, int peer, void *recv_buf,
                                  uint64_t recv_bytes, int recv_peer, void *stream);

#ifdef __cplusplus
}
#endif

#endif
