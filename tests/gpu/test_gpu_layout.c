/*
 * The contiguous block layout of gpu.h, on the CPU (runs everywhere):
 * walking a block in its documented order (layer, K then V, token, head,
 * dim) must meet every element at kv_gpu_block_offset(), one after the
 * other, and end at kv_gpu_block_bytes(); bad layouts are refused.
 */
#include <kvgpu/gpu.h>
#include <test.h>

static void walk(const kv_gpu_layout_t *l)
{
    uint64_t at = 0;

    ASSERT(kv_gpu_layout_valid(l));
    for (uint32_t layer = 0; layer < l->layers; layer++) {
        for (uint32_t v = 0; v < 2; v++) {
            ASSERT_EQ(kv_gpu_block_offset(l, layer, v, 0, 0, 0),
                      (2 * (uint64_t)layer + v) * kv_gpu_page_bytes(l));
            for (uint32_t t = 0; t < l->block_tokens; t++) {
                for (uint32_t h = 0; h < l->kv_heads; h++) {
                    for (uint32_t d = 0; d < l->head_dim; d++) {
                        ASSERT_EQ(kv_gpu_block_offset(l, layer, v, t, h, d), at);
                        at += l->elem_size;
                    }
                }
            }
        }
    }
    ASSERT_EQ(at, kv_gpu_block_bytes(l));
    ASSERT_EQ(kv_gpu_block_bytes(l), 2ull * l->layers * l->block_tokens * l->kv_heads *
                                         l->head_dim * l->elem_size);
}

static void test_layouts(void)
{
    kv_gpu_layout_t small = {3, 4, 2, 8, 2};
    kv_gpu_layout_t wide  = {2, 16, 8, 128, 4};
    kv_gpu_layout_t odd   = {5, 3, 3, 7, 2};
    /* LLaMA-2-70B with 16-token pages: 80 layers, 8 KV heads of 128, fp16 */
    kv_gpu_layout_t llama = {80, 16, 8, 128, 2};

    walk(&small);
    walk(&wide);
    walk(&odd);
    ASSERT(kv_gpu_layout_valid(&llama));
    ASSERT_EQ(kv_gpu_block_bytes(&llama), 16ull * 327680);
}

static void test_bad_layouts(void)
{
    kv_gpu_layout_t l = {2, 16, 8, 128, 2};

    ASSERT(!kv_gpu_layout_valid(NULL));
    l.elem_size = 3;
    ASSERT(!kv_gpu_layout_valid(&l));
    l.elem_size = 2;
    l.layers    = 0;
    ASSERT(!kv_gpu_layout_valid(&l));
    l.layers       = 1024;
    l.block_tokens = 65536; /* 1024 x 2 x 65536 x 8 x 128 x 2: far over 4 GiB */
    ASSERT(!kv_gpu_layout_valid(&l));
}

KV_TEST_MAIN(KV_TEST(test_layouts), KV_TEST(test_bad_layouts))
