/*
 * kvpool demo: start a small pool (a coordinator and --nodes pool nodes,
 * child processes on loopback), or use the one at --node, replay a
 * workload through libkvpool, and check every byte.
 *
 * For each request the demo loads the longest cached prefix of its key
 * chain (kvp_get_chain: the coordinator's Match, then the blocks from the
 * nodes holding them), compares those blocks with the bytes derived from
 * their keys, then, when a block was missing, saves the chain
 * (kvp_put_chain: the coordinator's PlanPut skips the cached blocks and
 * places the new ones), as an engine would after computing the missing
 * blocks.  Hit ratio = blocks loaded / blocks asked; the coordinator's own
 * counters give the hit ratio its index saw.  Worker threads share one
 * client, so the calls are multiplexed.  Against a single node (--node with a node's address) the
 * same calls run on that node.
 */
#include "cli.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    kvp_client_h    client;
    const char     *ns;
    uint64_t        block_size;
    uint64_t        max_requests;
    kv_workload_t  *workload;
    pthread_mutex_t lock;           /* workload and counters */
    int             done;
    kvp_status_t    error;
    /* counters */
    uint64_t        requests, blocks, hit_blocks, put_blocks, mismatches, bytes;
    uint64_t        end_ns;         /* when the last worker finished */
} demo_t;

/* Take the next request; copies its keys. Returns 0 when there is none. */
static int next_request(demo_t *demo, kvp_key_t **keys_p, size_t *num_p,
                        size_t *cap_p)
{
    kv_request_t req;
    kvp_status_t status;
    int          ok = 0;

    pthread_mutex_lock(&demo->lock);
    if (!demo->done && demo->requests < demo->max_requests) {
        status = kv_workload_next(demo->workload, &req);
        if (status == KVP_OK) {
            if (req.num_keys > *cap_p) {
                *cap_p  = req.num_keys;
                *keys_p = kv_realloc(*keys_p, *cap_p * sizeof(kvp_key_t), "keys");
            }
            memcpy(*keys_p, req.keys, req.num_keys * sizeof(kvp_key_t));
            *num_p = req.num_keys;
            demo->requests++;
            ok = 1;
        } else {
            if (status != KVP_ERR_NOT_FOUND) {
                fprintf(stderr, "kvpool demo: %s\n", kv_workload_error(demo->workload));
                demo->error = status;
            }
            demo->done = 1;
        }
    }
    pthread_mutex_unlock(&demo->lock);
    return ok;
}

/*
 * One request: load the cached prefix of keys[0..num), check its bytes,
 * save the whole chain (the cached blocks are skipped, the others carry
 * the bytes derived from their keys).
 */
static kvp_status_t demo_request(demo_t *demo, kv_chain_buffers_t *b, const kvp_key_t *keys,
                                 size_t num, size_t *loaded_p, size_t *mismatches_p)
{
    size_t       loaded = 0;
    kvp_status_t status;

    kv_chain_buffers_reserve(b, num);
    status = kvp_get_chain(demo->client, demo->ns, keys, (void *const *)b->bufs, b->caps,
                           num, b->sizes, &loaded);
    if (status != KVP_OK) {
        return status;
    }
    for (size_t i = 0; i < loaded; i++) {
        kv_workload_block_bytes(&keys[i], b->want, demo->block_size);
        if (b->sizes[i] != demo->block_size ||
            memcmp(b->want, b->bufs[i], demo->block_size) != 0) {
            (*mismatches_p)++;
        }
    }
    for (size_t i = 0; i < num; i++) {
        if (i >= loaded) {
            kv_workload_block_bytes(&keys[i], b->bufs[i], demo->block_size);
        }
        b->sizes[i] = demo->block_size;
    }
    *loaded_p = loaded;
    if (loaded == num) {
        return KVP_OK; /* every block was cached: nothing to save */
    }
    status = kvp_put_chain(demo->client, demo->ns, keys, (const void *const *)b->bufs,
                           b->sizes, num, b->statuses);
    for (size_t i = 0; status == KVP_OK && i < num; i++) {
        status = b->statuses[i];
    }
    return status;
}

static void *worker_main(void *arg)
{
    demo_t        *demo = arg;
    kv_chain_buffers_t b    = {0};
    kvp_key_t     *keys = NULL;
    size_t         cap  = 0, num;
    kvp_status_t   status;

    kv_chain_buffers_init(&b, demo->block_size);
    while (next_request(demo, &keys, &num, &cap)) {
        size_t loaded = 0, mismatches = 0;

        num    = KV_MIN(num, KVP_BATCH_MAX);
        status = demo_request(demo, &b, keys, num, &loaded, &mismatches);
        pthread_mutex_lock(&demo->lock);
        demo->blocks += num;
        demo->hit_blocks += loaded;
        demo->put_blocks += num - loaded;
        demo->mismatches += mismatches;
        demo->bytes += num * demo->block_size;
        if (status != KVP_OK && demo->error == KVP_OK) {
            fprintf(stderr, "kvpool demo: %s\n", kvp_status_string(status));
            demo->error = status;
            demo->done  = 1;
        }
        pthread_mutex_unlock(&demo->lock);
    }
    pthread_mutex_lock(&demo->lock);
    demo->end_ns = KV_MAX(demo->end_ns, kv_time_ns());
    pthread_mutex_unlock(&demo->lock);
    kv_free(keys);
    kv_chain_buffers_cleanup(&b);
    return NULL;
}

static void print_progress(demo_t *demo, double seconds, FILE *out)
{
    pthread_mutex_lock(&demo->lock);
    fprintf(out, "  %8llu requests  %9llu blocks  hit %5.1f%%  %7.2f GB/s  %llu mismatches\n",
            (unsigned long long)demo->requests, (unsigned long long)demo->blocks,
            demo->blocks ? 100.0 * (double)demo->hit_blocks / (double)demo->blocks : 0.0,
            seconds > 0 ? (double)demo->bytes / seconds / 1e9 : 0.0,
            (unsigned long long)demo->mismatches);
    pthread_mutex_unlock(&demo->lock);
}

int kv_cli_demo(int argc, char **argv)
{
    static const struct option options[] = {
        {"trace", required_argument, NULL, 'T'},
        {"requests", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"block-size", required_argument, NULL, 'b'},
        {"memory", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 'w'},
        {"seed", required_argument, NULL, 's'},
        {"node", required_argument, NULL, 'n'},
        {"nodes", required_argument, NULL, 'N'},
        {"token", required_argument, NULL, 't'},
        {"serve", no_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    demo_t               demo    = {0};
    kv_cli_pool_t          pool    = {0};
    kv_workload_params_t wparams = {0};
    kv_cli_conn_t        conn    = {NULL, "demo", getenv("KVPOOL_TOKEN")};
    kvp_index_stats_t    index0 = {0}, index1 = {0};
    const char          *trace = NULL, *memory = "1GiB";
    char                 err[512], bytes_text[32], index_text[32] = "null";
    int                  json = 0, threads = 4, num_nodes = 2, opt, rc = 1, cluster;
    int                  serve = 0;
    pthread_t            tids[64];
    uint64_t             start;
    double               seconds;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--disaggregated") == 0) {
            return kv_cli_demo_disagg(argc, argv);
        }
    }
    demo.block_size   = 64 << 10;
    demo.max_requests = UINT64_MAX;
    wparams.seed      = 1;
    optind            = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'T': trace = optarg; break;
        case 'r': demo.max_requests = strtoull(optarg, NULL, 10); break;
        case 'j': json = 1; break;
        case 'm': memory = optarg; break;
        case 'w': threads = atoi(optarg); break;
        case 's': wparams.seed = strtoull(optarg, NULL, 10); break;
        case 'n': conn.node = optarg; break;
        case 'N': num_nodes = atoi(optarg); break;
        case 't': conn.token = optarg; break;
        case 'S': serve = 1; break;
        case 'b':
            if (kv_size_parse(optarg, &demo.block_size) != KVP_OK ||
                demo.block_size == 0 || demo.block_size > KVP_BLOCK_MAX) {
                fprintf(stderr, "kvpool demo: bad --block-size '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || demo.max_requests == 0 || num_nodes < 1 ||
        num_nodes > KV_CLI_POOL_NODES_MAX) {
        fprintf(stderr, "kvpool demo: --threads must be 1..64, --nodes 1..%d, "
                        "--requests > 0\n", KV_CLI_POOL_NODES_MAX);
        return 2;
    }
    if (trace == NULL && demo.max_requests == UINT64_MAX) {
        demo.max_requests = 5000; /* the generator never ends by itself */
    }

    if (trace != NULL) {
        if (kv_workload_trace_open(trace, &demo.workload, err, sizeof(err)) != KVP_OK) {
            fprintf(stderr, "kvpool demo: %s\n", err);
            return 1;
        }
    } else if (kv_workload_generator_create(&wparams, &demo.workload) != KVP_OK) {
        fprintf(stderr, "kvpool demo: cannot create the workload generator\n");
        return 1;
    }
    if (conn.node == NULL) {
        if (kv_cli_pool_start(&pool, num_nodes, memory) != 0) {
            goto out_workload;
        }
        conn.node = pool.address;
    }
    demo.ns = conn.ns;
    if (kv_cli_connect(&conn, &demo.client) != KVP_OK) {
        goto out_pool;
    }
    /* connected to a coordinator, its counters say what its index saw */
    cluster = kvp_index_stats(demo.client, &index0) == KVP_OK;
    if (cluster && pool.coord > 0 &&
        (kv_cli_pool_wait_joined(demo.client, num_nodes) != KVP_OK ||
         kvp_index_stats(demo.client, &index0) != KVP_OK)) {
        goto out_client;
    }
    if (pool.coord > 0) {
        printf("kvpool demo: coordinator %s and %d nodes of %s (started for the demo)",
               conn.node, num_nodes, memory);
    } else {
        printf("kvpool demo: %s %s", cluster ? "coordinator" : "node", conn.node);
    }
    printf(", workload %s, %d threads, %llu-byte blocks\n",
           trace ? trace : "built-in conversations", threads,
           (unsigned long long)demo.block_size);
    if (pool.coord > 0) {
        printf("kvpool demo: dashboard http://%s/dashboard (live while the demo runs; "
               "--serve keeps it up after)\n",
               pool.http);
    }
    fflush(stdout);

    pthread_mutex_init(&demo.lock, NULL);
    start = kv_time_ns();
    for (int i = 0; i < threads; i++) {
        pthread_create(&tids[i], NULL, worker_main, &demo);
    }
    for (int ticks = 1;; ticks++) { /* progress once a second until done */
        int finished;
        usleep(200000);
        pthread_mutex_lock(&demo.lock);
        finished = demo.done || demo.requests >= demo.max_requests;
        pthread_mutex_unlock(&demo.lock);
        if (finished) {
            break;
        }
        if (ticks % 5 == 0) {
            print_progress(&demo, (double)(kv_time_ns() - start) / 1e9, stderr);
        }
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
    }
    seconds = (double)(demo.end_ns - start) / 1e9;
    if (cluster && kvp_index_stats(demo.client, &index1) == KVP_OK &&
        index1.requested_blocks > index0.requested_blocks) {
        snprintf(index_text, sizeof(index_text), "%.6f",
                 (double)(index1.matched_blocks - index0.matched_blocks) /
                     (double)(index1.requested_blocks - index0.requested_blocks));
    }

    kv_size_format(demo.bytes, bytes_text, sizeof(bytes_text));
    printf("requests    %llu\n", (unsigned long long)demo.requests);
    printf("blocks      %llu asked, %llu hit, %llu put\n",
           (unsigned long long)demo.blocks, (unsigned long long)demo.hit_blocks,
           (unsigned long long)demo.put_blocks);
    printf("hit ratio   %.4f (loaded by the client)\n",
           demo.blocks ? (double)demo.hit_blocks / (double)demo.blocks : 0.0);
    if (cluster) {
        printf("index hit   %s (matched / requested blocks, the coordinator's counters)\n",
               index_text);
    }
    printf("transport   %s\n", kvp_client_transport(demo.client));
    printf("moved       %s in %.2f s: %.3f GB/s\n", bytes_text, seconds,
           (double)demo.bytes / seconds / 1e9);
    printf("mismatches  %llu\n", (unsigned long long)demo.mismatches);
    if (json) {
        printf("{\"requests\":%llu,\"blocks\":%llu,\"hit_blocks\":%llu,"
               "\"hit_ratio\":%.6f,\"index_hit_ratio\":%s,\"nodes\":%llu,"
               "\"bytes\":%llu,\"seconds\":%.3f,\"gbps\":%.4f,"
               "\"mismatches\":%llu,\"errors\":%d}\n",
               (unsigned long long)demo.requests, (unsigned long long)demo.blocks,
               (unsigned long long)demo.hit_blocks,
               demo.blocks ? (double)demo.hit_blocks / (double)demo.blocks : 0.0,
               index_text, (unsigned long long)(cluster ? index1.nodes : 1),
               (unsigned long long)demo.bytes, seconds,
               (double)demo.bytes / seconds / 1e9,
               (unsigned long long)demo.mismatches, demo.error != KVP_OK);
    }
    rc = (demo.error == KVP_OK && demo.mismatches == 0) ? 0 : 1;
    pthread_mutex_destroy(&demo.lock);
    if (serve && pool.coord > 0) {
        kv_cli_pool_serve(&pool);
    }
out_client:
    kvp_client_disconnect(demo.client);
out_pool:
    kv_cli_pool_stop(&pool);
out_workload:
    kv_workload_destroy(demo.workload);
    return rc;
}
