/*
 * kvpool demo: start a pool node as a child process on loopback (or use
 * --node), replay a workload through libkvpool, and check every byte.
 *
 * For each request the demo asks how long a prefix of its key chain is
 * cached (Exists), gets those blocks and compares them with the bytes
 * derived from their keys, then puts the blocks that were missing, as an
 * engine would after computing them.  Hit ratio = blocks found / blocks
 * asked.  Worker threads share one connection, so the calls are multiplexed.
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
    uint64_t        requests, blocks, hit_blocks, put_blocks, mismatches,
                    lost, bytes;
    uint64_t        end_ns;         /* when the last worker finished */
} demo_t;

/* The bytes of a block are a function of its key: splitmix64 seeded by it. */
static void fill_block(const kvp_key_t *key, uint8_t *buf, uint64_t size)
{
    uint64_t state;

    memcpy(&state, key->bytes, sizeof(state));
    for (uint64_t off = 0; off < size; off += 8) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        memcpy(buf + off, &z, KV_MIN(8, size - off));
    }
}

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

/* Blocks per batched call: bounds the demo's buffers per thread. */
#define DEMO_BATCH 32

typedef struct {
    uint8_t     *bufs[DEMO_BATCH];
    uint64_t     caps[DEMO_BATCH], sizes[DEMO_BATCH];
    kvp_status_t statuses[DEMO_BATCH];
    uint8_t     *want;
} demo_buffers_t;

/* Get keys[0..present) in batches and check their bytes; returns how many
 * leading blocks were really there (a block evicted since Exists, or
 * damaged, ends the prefix: the engine recomputes from there). */
static kvp_status_t demo_load(demo_t *demo, demo_buffers_t *b, const kvp_key_t *keys,
                              size_t present, size_t *loaded_p, size_t *mismatches_p)
{
    for (size_t base = 0; base < present; base += DEMO_BATCH) {
        size_t       n      = KV_MIN(present - base, DEMO_BATCH);
        kvp_status_t status = kvp_get_batch(demo->client, demo->ns, keys + base,
                                            (void *const *)b->bufs, b->caps, n,
                                            b->sizes, b->statuses);
        if (status != KVP_OK) {
            return status;
        }
        for (size_t i = 0; i < n; i++) {
            if (b->statuses[i] == KVP_ERR_NOT_FOUND || b->statuses[i] == KVP_ERR_CHECKSUM) {
                *loaded_p = base + i;
                return KVP_OK;
            }
            if (b->statuses[i] != KVP_OK) {
                return b->statuses[i];
            }
            fill_block(&keys[base + i], b->want, demo->block_size);
            if (b->sizes[i] != demo->block_size ||
                memcmp(b->want, b->bufs[i], demo->block_size) != 0) {
                (*mismatches_p)++;
            }
        }
    }
    *loaded_p = present;
    return KVP_OK;
}

/* Put keys[0..count) in batches, with bytes derived from each key. */
static kvp_status_t demo_save(demo_t *demo, demo_buffers_t *b, const kvp_key_t *keys,
                              size_t count)
{
    for (size_t base = 0; base < count; base += DEMO_BATCH) {
        size_t       n = KV_MIN(count - base, DEMO_BATCH);
        kvp_status_t status;

        for (size_t i = 0; i < n; i++) {
            fill_block(&keys[base + i], b->bufs[i], demo->block_size);
            b->sizes[i] = demo->block_size;
        }
        status = kvp_put_batch(demo->client, demo->ns, keys + base,
                               (const void *const *)b->bufs, b->sizes, n, b->statuses);
        for (size_t i = 0; status == KVP_OK && i < n; i++) {
            status = b->statuses[i];
        }
        if (status != KVP_OK) {
            return status;
        }
    }
    return KVP_OK;
}

static void *worker_main(void *arg)
{
    demo_t        *demo = arg;
    demo_buffers_t b;
    kvp_key_t     *keys = NULL;
    size_t         cap  = 0, num;
    kvp_status_t   status;

    b.want = kv_malloc(demo->block_size, "expected block");
    for (int i = 0; i < DEMO_BATCH; i++) {
        b.bufs[i] = kv_malloc(demo->block_size, "block buffer");
        b.caps[i] = demo->block_size;
    }
    while (next_request(demo, &keys, &num, &cap)) {
        size_t present = 0, loaded = 0, mismatches = 0;

        num    = KV_MIN(num, KVP_BATCH_MAX);
        status = kvp_exists(demo->client, demo->ns, keys, num, &present);
        if (status == KVP_OK) {
            status = demo_load(demo, &b, keys, present, &loaded, &mismatches);
        }
        if (status == KVP_OK) {
            status = demo_save(demo, &b, keys + loaded, num - loaded);
        }
        pthread_mutex_lock(&demo->lock);
        demo->blocks += num;
        demo->hit_blocks += loaded;
        demo->put_blocks += num - loaded;
        demo->mismatches += mismatches;
        demo->lost += present - loaded;
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
    kv_free(b.want);
    for (int i = 0; i < DEMO_BATCH; i++) {
        kv_free(b.bufs[i]);
    }
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
        {"token", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    demo_t               demo    = {0};
    kv_workload_params_t wparams = {0};
    kv_cli_conn_t        conn    = {NULL, "demo", getenv("KVPOOL_TOKEN")};
    const char          *trace = NULL, *memory = "1GiB";
    char                 address[256], err[512], bytes_text[32];
    int                  json = 0, threads = 4, opt, rc = 1;
    pid_t                node_pid = 0;
    pthread_t            tids[64];
    uint64_t             start;
    double               seconds;

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
        case 't': conn.token = optarg; break;
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
    if (threads < 1 || threads > 64 || demo.max_requests == 0) {
        fprintf(stderr, "kvpool demo: --threads must be 1..64, --requests > 0\n");
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
        node_pid = kv_cli_node_start(memory, address, sizeof(address));
        if (node_pid < 0) {
            goto out_workload;
        }
        conn.node = address;
    }
    demo.ns = conn.ns;
    if (kv_cli_connect(&conn, &demo.client) != KVP_OK) {
        goto out_node;
    }
    printf("kvpool demo: node %s%s, workload %s, %d threads, %llu-byte blocks, "
           "transport %s\n",
           conn.node, node_pid ? " (started for the demo)" : "",
           trace ? trace : "built-in conversations", threads,
           (unsigned long long)demo.block_size, kvp_client_transport(demo.client));
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

    kv_size_format(demo.bytes, bytes_text, sizeof(bytes_text));
    printf("requests    %llu\n", (unsigned long long)demo.requests);
    printf("blocks      %llu asked, %llu hit, %llu put, %llu lost after lookup\n",
           (unsigned long long)demo.blocks, (unsigned long long)demo.hit_blocks,
           (unsigned long long)demo.put_blocks, (unsigned long long)demo.lost);
    printf("hit ratio   %.4f\n",
           demo.blocks ? (double)demo.hit_blocks / (double)demo.blocks : 0.0);
    printf("moved       %s in %.2f s: %.3f GB/s\n", bytes_text, seconds,
           (double)demo.bytes / seconds / 1e9);
    printf("mismatches  %llu\n", (unsigned long long)demo.mismatches);
    if (json) {
        printf("{\"requests\":%llu,\"blocks\":%llu,\"hit_blocks\":%llu,"
               "\"hit_ratio\":%.6f,\"bytes\":%llu,\"seconds\":%.3f,\"gbps\":%.4f,"
               "\"mismatches\":%llu,\"errors\":%d}\n",
               (unsigned long long)demo.requests, (unsigned long long)demo.blocks,
               (unsigned long long)demo.hit_blocks,
               demo.blocks ? (double)demo.hit_blocks / (double)demo.blocks : 0.0,
               (unsigned long long)demo.bytes, seconds,
               (double)demo.bytes / seconds / 1e9,
               (unsigned long long)demo.mismatches, demo.error != KVP_OK);
    }
    rc = (demo.error == KVP_OK && demo.mismatches == 0) ? 0 : 1;
    pthread_mutex_destroy(&demo.lock);
    kvp_client_disconnect(demo.client);
out_node:
    kv_cli_node_stop(node_pid);
out_workload:
    kv_workload_destroy(demo.workload);
    return rc;
}
