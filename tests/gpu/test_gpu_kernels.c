/*
 * The GPU tier on a device (label gpu; skipped with the reason when
 * kv_gpu_probe() finds none): gather and scatter against a CPU reference
 * on random paged caches, for 2- and 4-byte elements, and an arena slot
 * round trip through pinned staging memory.
 */
#include <kvgpu/gpu.h>
#include <test.h>
#include <test_util.h>

#include <cuda_runtime_api.h>

static void need_device(void)
{
    char why[256];
    int  n;

    if (kv_gpu_probe(&n, why, sizeof(why)) != KVP_OK) {
        KV_SKIP(why);
    }
}

/* One layout: random pages, gather some, compare; scatter back into a
   zeroed cache, compare the pages. */
static void gather_scatter(const kv_gpu_layout_t *l, uint32_t pages, uint32_t n, uint64_t seed)
{
    uint64_t  page = kv_gpu_page_bytes(l), block = kv_gpu_block_bytes(l);
    uint8_t **host_k = calloc(l->layers, sizeof(*host_k));
    uint8_t **host_v = calloc(l->layers, sizeof(*host_v));
    void    **dev_k  = calloc(l->layers, sizeof(*dev_k));
    void    **dev_v  = calloc(l->layers, sizeof(*dev_v));
    void    **dk, **dv;
    uint32_t *ids = malloc(n * sizeof(*ids)), *dids;
    uint8_t  *got = malloc(n * block), *want = malloc(n * block);
    void     *dblocks;
    rng_t     rng;

    rng_seed(&rng, seed);
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = (uint32_t)rng_range(&rng, 0, pages - 1);
    }
    for (uint32_t layer = 0; layer < l->layers; layer++) {
        host_k[layer] = make_block(pages * page, seed + 2 * layer);
        host_v[layer] = make_block(pages * page, seed + 2 * layer + 1);
        ASSERT_EQ(cudaMalloc(&dev_k[layer], pages * page), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&dev_v[layer], pages * page), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dev_k[layer], host_k[layer], pages * page, cudaMemcpyHostToDevice),
                  cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dev_v[layer], host_v[layer], pages * page, cudaMemcpyHostToDevice),
                  cudaSuccess);
        /* the reference: each page where kv_gpu_block_offset() puts it */
        for (uint32_t i = 0; i < n; i++) {
            memcpy(want + i * block + kv_gpu_block_offset(l, layer, 0, 0, 0, 0),
                   host_k[layer] + ids[i] * page, page);
            memcpy(want + i * block + kv_gpu_block_offset(l, layer, 1, 0, 0, 0),
                   host_v[layer] + ids[i] * page, page);
        }
    }
    ASSERT_EQ(cudaMalloc((void **)&dk, l->layers * sizeof(void *)), cudaSuccess);
    ASSERT_EQ(cudaMalloc((void **)&dv, l->layers * sizeof(void *)), cudaSuccess);
    ASSERT_EQ(cudaMalloc((void **)&dids, n * sizeof(*dids)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dblocks, n * block), cudaSuccess);
    cudaMemcpy(dk, dev_k, l->layers * sizeof(void *), cudaMemcpyHostToDevice);
    cudaMemcpy(dv, dev_v, l->layers * sizeof(void *), cudaMemcpyHostToDevice);
    cudaMemcpy(dids, ids, n * sizeof(*dids), cudaMemcpyHostToDevice);

    ASSERT_OK(kv_gpu_gather(l, dk, dv, dids, n, dblocks, NULL));
    ASSERT_OK(kv_gpu_sync(NULL));
    ASSERT_EQ(cudaMemcpy(got, dblocks, n * block, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT(memcmp(got, want, n * block) == 0);

    /* scatter into zeroed caches: the gathered pages come back */
    for (uint32_t layer = 0; layer < l->layers; layer++) {
        cudaMemset(dev_k[layer], 0, pages * page);
        cudaMemset(dev_v[layer], 0, pages * page);
    }
    ASSERT_OK(kv_gpu_scatter(l, dk, dv, dids, n, dblocks, NULL));
    ASSERT_OK(kv_gpu_sync(NULL));
    for (uint32_t layer = 0; layer < l->layers; layer++) {
        uint8_t *back = malloc(pages * page);
        cudaMemcpy(back, dev_k[layer], pages * page, cudaMemcpyDeviceToHost);
        for (uint32_t i = 0; i < n; i++) {
            ASSERT(memcmp(back + ids[i] * page, host_k[layer] + ids[i] * page, page) == 0);
        }
        cudaMemcpy(back, dev_v[layer], pages * page, cudaMemcpyDeviceToHost);
        for (uint32_t i = 0; i < n; i++) {
            ASSERT(memcmp(back + ids[i] * page, host_v[layer] + ids[i] * page, page) == 0);
        }
        free(back);
        cudaFree(dev_k[layer]);
        cudaFree(dev_v[layer]);
        free(host_k[layer]);
        free(host_v[layer]);
    }
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dids);
    cudaFree(dblocks);
    free(host_k);
    free(host_v);
    free(dev_k);
    free(dev_v);
    free(ids);
    free(got);
    free(want);
}

static void test_gather_scatter(void)
{
    kv_gpu_layout_t fp16 = {4, 16, 8, 128, 2};
    kv_gpu_layout_t fp32 = {3, 8, 2, 64, 4};
    kv_gpu_layout_t odd  = {2, 3, 2, 6, 2}; /* 72-byte pages: 4-byte words */

    need_device();
    gather_scatter(&fp16, 64, 16, 1);
    gather_scatter(&fp32, 32, 7, 2);
    gather_scatter(&odd, 10, 10, 3);
}

static void test_arena_round_trip(void)
{
    kv_gpu_arena_t *arena;
    uint64_t        slots[4], extra;
    uint8_t        *staging, *src = make_block(1 << 20, 9);

    need_device();
    ASSERT_OK(kv_gpu_arena_create(4, 1 << 20, &arena));
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(kv_gpu_arena_alloc(arena, &slots[i]));
    }
    ASSERT_STATUS(kv_gpu_arena_alloc(arena, &extra), KVP_ERR_NO_SPACE);
    ASSERT_OK(kv_gpu_host_alloc(1 << 20, (void **)&staging));
    memcpy(staging, src, 1 << 20);
    ASSERT_OK(kv_gpu_copy(kv_gpu_arena_slot(arena, slots[2]), staging, 1 << 20, 1, NULL));
    memset(staging, 0, 1 << 20);
    ASSERT_OK(kv_gpu_copy(staging, kv_gpu_arena_slot(arena, slots[2]), 1 << 20, 0, NULL));
    ASSERT_OK(kv_gpu_sync(NULL));
    ASSERT(memcmp(staging, src, 1 << 20) == 0);
    kv_gpu_arena_free(arena, slots[1]);
    ASSERT_OK(kv_gpu_arena_alloc(arena, &extra));
    ASSERT_EQ(extra, slots[1]);
    kv_gpu_host_free(staging);
    kv_gpu_arena_destroy(arena);
    free(src);
}

KV_TEST_MAIN(KV_TEST(test_gather_scatter), KV_TEST(test_arena_round_trip))
