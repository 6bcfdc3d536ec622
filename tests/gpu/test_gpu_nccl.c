/*
 * A block from one GPU to another with NCCL (label gpu): two ranks, one
 * thread and one device each; rank 0 sends 4 MiB, rank 1 receives and
 * checks them.  Skipped with the reason without two devices.
 */
#include <kvgpu/gpu.h>
#include <test.h>
#include <test_util.h>

#include <cuda_runtime_api.h>
#include <pthread.h>

#define BYTES (4u << 20)

typedef struct {
    uint8_t      id[KV_GPU_NCCL_ID_BYTES];
    int          rank;
    kvp_status_t status;
    int          same; /* rank 1: the bytes arrived intact */
} rank_t;

static void *rank_main(void *arg)
{
    rank_t        *r   = arg;
    uint8_t       *src = make_block(BYTES, 5), *got = malloc(BYTES);
    kv_gpu_nccl_t *comm;
    void          *buf;

    r->status = kv_gpu_nccl_init(r->id, 2, r->rank, r->rank, &comm);
    if (r->status != KVP_OK) {
        return NULL;
    }
    cudaMalloc(&buf, BYTES);
    if (r->rank == 0) {
        cudaMemcpy(buf, src, BYTES, cudaMemcpyHostToDevice);
        r->status = kv_gpu_nccl_sendrecv(comm, buf, BYTES, 1, NULL, 0, 0, NULL);
    } else {
        r->status = kv_gpu_nccl_sendrecv(comm, NULL, 0, 0, buf, BYTES, 0, NULL);
    }
    if (r->status == KVP_OK) {
        r->status = kv_gpu_sync(NULL);
    }
    if (r->rank == 1) {
        cudaMemcpy(got, buf, BYTES, cudaMemcpyDeviceToHost);
        r->same = memcmp(got, src, BYTES) == 0;
    }
    cudaFree(buf);
    kv_gpu_nccl_destroy(comm);
    free(src);
    free(got);
    return NULL;
}

static void test_nccl_two_ranks(void)
{
    rank_t    ranks[2] = {{.rank = 0}, {.rank = 1}};
    pthread_t tids[2];
    char      why[256];
    int       n = 0;

    if (kv_gpu_probe(&n, why, sizeof(why)) != KVP_OK) {
        KV_SKIP(why);
    }
    if (n < 2) {
        snprintf(why, sizeof(why), "NCCL's two-rank test needs two CUDA devices; "
                 "this machine has %d", n);
        KV_SKIP(why);
    }
    ASSERT_OK(kv_gpu_nccl_id(ranks[0].id));
    memcpy(ranks[1].id, ranks[0].id, KV_GPU_NCCL_ID_BYTES);
    for (int i = 0; i < 2; i++) {
        pthread_create(&tids[i], NULL, rank_main, &ranks[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(tids[i], NULL);
        ASSERT_OK(ranks[i].status);
    }
    ASSERT(ranks[1].same);
}

KV_TEST_MAIN(KV_TEST(test_nccl_two_ranks))
