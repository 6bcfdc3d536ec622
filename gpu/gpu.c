/*
 * The CUDA runtime and NCCL behind gpu.h: probing, the arena, copies, the
 * kernels' checks, and NCCL.  Every cudaError_t and ncclResult_t becomes a
 * kvp_status_t here, logged once.
 */
#include "kernels.h"

#include <kvgpu/gpu.h>

#include <kv/alloc.h>
#include <kv/log.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <stdio.h>
#include <string.h>

static kvp_status_t cuda_status(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) {
        return KVP_OK;
    }
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) {
        return KVP_ERR_UNSUPPORTED;
    }
    kv_log_error("%s: %s", what, cudaGetErrorString(e));
    return e == cudaErrorMemoryAllocation ? KVP_ERR_NO_MEMORY : KVP_ERR_INTERNAL;
}

static kvp_status_t nccl_status(ncclResult_t r, const char *what)
{
    if (r == ncclSuccess) {
        return KVP_OK;
    }
    kv_log_error("%s: %s", what, ncclGetErrorString(r));
    return r == ncclInvalidArgument || r == ncclInvalidUsage ? KVP_ERR_INVALID_PARAM
                                                             : KVP_ERR_INTERNAL;
}

kvp_status_t kv_gpu_probe(int *count_p, char *why, size_t why_len)
{
    int         n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);

    if (e != cudaSuccess || n == 0) {
        if (why != NULL) {
            snprintf(why, why_len, "no usable CUDA device: %s",
                     e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        }
        return KVP_ERR_UNSUPPORTED;
    }
    *count_p = n;
    return KVP_OK;
}

static kvp_status_t move(const kv_gpu_layout_t *layout, void *const *k_layers,
                         void *const *v_layers, const uint32_t *page_ids, uint32_t n,
                         void *blocks, int to_block, void *stream)
{
    if (!kv_gpu_layout_valid(layout) || kv_gpu_page_bytes(layout) % 4 != 0 ||
        k_layers == NULL || v_layers == NULL || page_ids == NULL || blocks == NULL ||
        n == 0 || n > 65535) {
        return KVP_ERR_INVALID_PARAM;
    }
    return cuda_status((cudaError_t)kv_gpu__launch_move(k_layers, v_layers, page_ids, n,
                                                         layout->layers,
                                                         kv_gpu_page_bytes(layout), blocks,
                                                         to_block, stream),
                       to_block ? "gather kernel" : "scatter kernel");
}

kvp_status_t kv_gpu_gather(const kv_gpu_layout_t *layout, void *const *k_layers,
                           void *const *v_layers, const uint32_t *page_ids, uint32_t n,
                           void *dst, void *stream)
{
    return move(layout, k_layers, v_layers, page_ids, n, dst, 1, stream);
}

kvp_status_t kv_gpu_scatter(const kv_gpu_layout_t *layout, void *const *k_layers,
                            void *const *v_layers, const uint32_t *page_ids, uint32_t n,
                            const void *src, void *stream)
{
    return move(layout, k_layers, v_layers, page_ids, n, (void *)src, 0, stream);
}

struct kv_gpu_arena {
    uint8_t  *base;       /* device memory */
    uint64_t  slots, slot_bytes;
    uint64_t *free_list;  /* a stack of free slots */
    uint64_t  n_free;
    uint8_t  *used;
};

kvp_status_t kv_gpu_arena_create(uint64_t slots, uint64_t slot_bytes,
                                 kv_gpu_arena_t **arena_p)
{
    kv_gpu_arena_t *a;
    kvp_status_t    status;

    if (arena_p == NULL || slots == 0 || slot_bytes == 0 || slots > (1ull << 32) ||
        slot_bytes > (UINT64_MAX / slots)) {
        return KVP_ERR_INVALID_PARAM;
    }
    a      = kv_calloc(1, sizeof(*a), "gpu arena");
    status = cuda_status(cudaMalloc((void **)&a->base, slots * slot_bytes), "cudaMalloc");
    if (status != KVP_OK) {
        kv_free(a);
        return status;
    }
    a->slots      = slots;
    a->slot_bytes = slot_bytes;
    a->free_list  = kv_malloc(slots * sizeof(*a->free_list), "gpu arena slots");
    a->used       = kv_calloc(slots, 1, "gpu arena use");
    for (uint64_t i = 0; i < slots; i++) {
        a->free_list[i] = slots - 1 - i; /* slot 0 on top */
    }
    a->n_free = slots;
    *arena_p  = a;
    return KVP_OK;
}

void kv_gpu_arena_destroy(kv_gpu_arena_t *a)
{
    if (a == NULL) {
        return;
    }
    cuda_status(cudaFree(a->base), "cudaFree");
    kv_free(a->free_list);
    kv_free(a->used);
    kv_free(a);
}

kvp_status_t kv_gpu_arena_alloc(kv_gpu_arena_t *a, uint64_t *slot_p)
{
    uint64_t slot;

    if (a->n_free == 0) {
        return KVP_ERR_NO_SPACE;
    }
    slot          = a->free_list[--a->n_free];
    a->used[slot] = 1;
    *slot_p       = slot;
    return KVP_OK;
}

void kv_gpu_arena_free(kv_gpu_arena_t *a, uint64_t slot)
{
    if (slot < a->slots && a->used[slot]) {
        a->used[slot]             = 0;
        a->free_list[a->n_free++] = slot;
    }
}

void *kv_gpu_arena_slot(const kv_gpu_arena_t *a, uint64_t slot)
{
    return slot < a->slots ? a->base + slot * a->slot_bytes : NULL;
}

kvp_status_t kv_gpu_host_alloc(uint64_t bytes, void **ptr_p)
{
    if (ptr_p == NULL || bytes == 0) {
        return KVP_ERR_INVALID_PARAM;
    }
    return cuda_status(cudaHostAlloc(ptr_p, bytes, cudaHostAllocDefault), "cudaHostAlloc");
}

void kv_gpu_host_free(void *ptr)
{
    if (ptr != NULL) {
        cuda_status(cudaFreeHost(ptr), "cudaFreeHost");
    }
}

kvp_status_t kv_gpu_copy(void *dst, const void *src, uint64_t bytes, int to_device,
                         void *stream)
{
    if (dst == NULL || src == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    return cuda_status(cudaMemcpyAsync(dst, src, bytes,
                                       to_device ? cudaMemcpyHostToDevice
                                                 : cudaMemcpyDeviceToHost,
                                       (cudaStream_t)stream),
                       "cudaMemcpyAsync");
}

kvp_status_t kv_gpu_sync(void *stream)
{
    return cuda_status(cudaStreamSynchronize((cudaStream_t)stream), "cudaStreamSynchronize");
}

struct kv_gpu_nccl {
    ncclComm_t comm;
};

kvp_status_t kv_gpu_nccl_id(uint8_t id[KV_GPU_NCCL_ID_BYTES])
{
    ncclUniqueId u;
    kvp_status_t status = nccl_status(ncclGetUniqueId(&u), "ncclGetUniqueId");

    _Static_assert(sizeof(u) == KV_GPU_NCCL_ID_BYTES, "NCCL's unique id size");
    if (status == KVP_OK) {
        memcpy(id, &u, sizeof(u));
    }
    return status;
}

kvp_status_t kv_gpu_nccl_init(const uint8_t id[KV_GPU_NCCL_ID_BYTES], int nranks, int rank,
                              int device, kv_gpu_nccl_t **comm_p)
{
    ncclUniqueId   u;
    kv_gpu_nccl_t *c;
    kvp_status_t   status;

    if (id == NULL || comm_p == NULL || nranks < 2 || rank < 0 || rank >= nranks) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = cuda_status(cudaSetDevice(device), "cudaSetDevice");
    if (status != KVP_OK) {
        return status;
    }
    memcpy(&u, id, sizeof(u));
    c      = kv_calloc(1, sizeof(*c), "nccl communicator");
    status = nccl_status(ncclCommInitRank(&c->comm, nranks, u, rank), "ncclCommInitRank");
    if (status != KVP_OK) {
        kv_free(c);
        return status;
    }
    *comm_p = c;
    return KVP_OK;
}

void kv_gpu_nccl_destroy(kv_gpu_nccl_t *c)
{
    if (c != NULL) {
        nccl_status(ncclCommDestroy(c->comm), "ncclCommDestroy");
        kv_free(c);
    }
}

kvp_status_t kv_gpu_nccl_sendrecv(kv_gpu_nccl_t *c, const void *send_buf, uint64_t bytes,
                                  int peer, void *recv_buf, uint64_t recv_bytes,
                                  int recv_peer, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    kvp_status_t status;

    if (c == NULL || (bytes > 0 && send_buf == NULL) || (recv_bytes > 0 && recv_buf == NULL)) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = nccl_status(ncclGroupStart(), "ncclGroupStart");
    if (status == KVP_OK && bytes > 0) {
        status = nccl_status(ncclSend(send_buf, bytes, ncclUint8, peer, c->comm, s), "ncclSend");
    }
    if (status == KVP_OK && recv_bytes > 0) {
        status = nccl_status(ncclRecv(recv_buf, recv_bytes, ncclUint8, recv_peer, c->comm, s),
                             "ncclRecv");
    }
    {
        kvp_status_t end = nccl_status(ncclGroupEnd(), "ncclGroupEnd");
        status           = status != KVP_OK ? status : end;
    }
    return status;
}
