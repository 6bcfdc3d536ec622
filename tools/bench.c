/*
 * kvpool bench: put and get throughput and per-block latency against one
 * node, for one block size and batch size, through the transport the
 * client picks (or --transport).
 *
 *   kvpool bench [--node HOST:PORT] --block-size SIZE --blocks N
 *                [--batch B] [--op put|get] [--transport auto|shm|ucx|frame]
 *                [--json]
 *   kvpool bench --tier ssd [--node HOST:PORT | --ssd-dir DIR [--ssd-size SIZE]
 *                [--memory SIZE]] [--block-size SIZE] [--blocks N] [--batch B]
 *                [--json]
 *
 * Without --node it starts a node big enough for the blocks.  Without --op
 * it runs put, then get of the blocks it put; --op get stores the blocks
 * first without reporting that.  Each call moves B blocks;
 * per-block latency is a call's time divided by B, and p50/p99 are taken
 * over calls.  GB/s is block bytes / wall time of all calls.  Every get is
 * checked against its checksum by the library; the bench also compares the
 * bytes of each block with what it put.
 *
 * --tier ssd measures the SSD tier of a node (started with --ssd-dir DIR,
 * --ssd-size and --memory, default 1GiB, when no --node is given): the
 * blocks (default 2 MiB x 2048) are put through a host tier too small for
 * them, so the node demotes as they arrive ("demote": SSD bytes written
 * per second of the put phase); then the blocks still in host memory are
 * deleted and the oldest are got back, as many as fit in 85 % of the host
 * tier, each staged from SSD and checked ("stage": SSD bytes read per
 * second of the get phase).  The SSD figures come from the node's per-tier
 * counters.
 */
#include "cli.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    kvp_client_h client;
    const char  *ns;
    uint64_t     block_size;
    size_t       blocks, batch;
    int          json;
    uint64_t     memory;  /* --tier ssd: the node's host tier */
    uint8_t    **bufs;    /* batch buffers */
    uint8_t     *pattern; /* bytes of block i: pattern rotated by i */
} bench_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static kvp_key_t bench_key(size_t i)
{
    char name[64];
    int  len = snprintf(name, sizeof(name), "bench-block-%zu", i);
    return kvp_key_from_bytes(name, (size_t)len);
}

/* Block i's bytes: the random pattern, starting at offset i. */
static void bench_fill(const bench_t *b, size_t i, uint8_t *out)
{
    uint64_t shift = (i * 4099) % b->block_size;
    memcpy(out, b->pattern + shift, b->block_size - shift);
    memcpy(out + b->block_size - shift, b->pattern, shift);
}

static int bench_check(const bench_t *b, size_t i, const uint8_t *got)
{
    uint64_t shift = (i * 4099) % b->block_size;
    return memcmp(got, b->pattern + shift, b->block_size - shift) == 0 &&
           memcmp(got + b->block_size - shift, b->pattern, shift) == 0;
}

/* Put or get every block; print the figures if @p report. */
static int bench_run(bench_t *b, int is_put, int report)
{
    size_t        calls = (b->blocks + b->batch - 1) / b->batch, c = 0;
    double       *lat   = kv_malloc(calls * sizeof(double), "latencies");
    kvp_key_t    *keys  = kv_malloc(b->batch * sizeof(kvp_key_t), "keys");
    uint64_t     *caps  = kv_malloc(b->batch * sizeof(uint64_t), "sizes");
    uint64_t     *sizes = kv_malloc(b->batch * sizeof(uint64_t), "sizes");
    kvp_status_t *st    = kv_malloc(b->batch * sizeof(kvp_status_t), "statuses");
    uint64_t      total = 0, bad = 0, t0, elapsed = 0;
    kvp_status_t  status = KVP_OK;

    for (size_t base = 0; base < b->blocks && status == KVP_OK; base += b->batch, c++) {
        size_t n = KV_MIN(b->batch, b->blocks - base);
        for (size_t i = 0; i < n; i++) {
            keys[i] = bench_key(base + i);
            caps[i] = sizes[i] = b->block_size;
            if (is_put) {
                bench_fill(b, base + i, b->bufs[i]);
            }
        }
        t0 = kv_time_ns();
        if (is_put) {
            status = kvp_put_batch(b->client, b->ns, keys, (const void *const *)b->bufs,
                                   sizes, n, st);
        } else {
            status = kvp_get_batch(b->client, b->ns, keys, (void *const *)b->bufs, caps,
                                   n, sizes, st);
        }
        uint64_t dt = kv_time_ns() - t0;
        elapsed += dt;
        lat[c] = (double)dt / 1e3 / (double)n;
        for (size_t i = 0; status == KVP_OK && i < n; i++) {
            if (st[i] != KVP_OK) {
                fprintf(stderr, "kvpool bench: block %zu: %s\n", base + i,
                        kvp_status_string(st[i]));
                status = st[i];
            } else if (!is_put && !bench_check(b, base + i, b->bufs[i])) {
                bad++;
            }
        }
        total += n * b->block_size;
    }
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool bench: %s failed: %s\n", is_put ? "put" : "get",
                kvp_status_string(status));
    } else if (report) {
        double gbps = (double)total / ((double)elapsed / 1e9) / 1e9;
        qsort(lat, c, sizeof(double), cmp_double);
        double p50 = lat[c / 2], p99 = lat[KV_MIN(c - 1, (size_t)((double)c * 0.99))];
        printf("%-4s %8llu-byte blocks x %zu, batch %zu, %s: %.3f GB/s, "
               "per block p50 %.1f us, p99 %.1f us%s\n",
               is_put ? "put" : "get", (unsigned long long)b->block_size, b->blocks,
               b->batch, kvp_client_transport(b->client), gbps, p50, p99,
               bad ? ", BYTES DIFFER" : "");
        if (b->json) {
            printf("{\"op\":\"%s\",\"block_size\":%llu,\"blocks\":%zu,\"batch\":%zu,"
                   "\"gbps\":%.4f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"transport\":\"%s\","
                   "\"mismatches\":%llu}\n",
                   is_put ? "put" : "get", (unsigned long long)b->block_size, b->blocks,
                   b->batch, gbps, p50, p99, kvp_client_transport(b->client),
                   (unsigned long long)bad);
        }
    }
    kv_free(lat);
    kv_free(keys);
    kv_free(caps);
    kv_free(sizes);
    kv_free(st);
    return status == KVP_OK && bad == 0 ? 0 : 1;
}

static int ssd_stats(const bench_t *b, kvp_tier_stats_t *host, kvp_tier_stats_t *ssd)
{
    kvp_stats_t  st;
    kvp_status_t status = kvp_stats(b->client, &st);

    if (status != KVP_OK) {
        fprintf(stderr, "kvpool bench: stats: %s\n", kvp_status_string(status));
        return 0;
    }
    *host = st.tiers[KVP_TIER_HOST];
    *ssd  = st.tiers[KVP_TIER_SSD];
    return 1;
}

static void ssd_report(const bench_t *b, const char *op, size_t blocks, double seconds,
                       uint64_t ssd_bytes, uint64_t moved, double client_gbps)
{
    double gbps = (double)ssd_bytes / seconds / 1e9;

    printf(
        "%-6s %llu-byte blocks x %zu, batch %zu: SSD %.3f GB/s (%.2f s, %llu blocks %s),"
        " client %.3f GB/s\n",
        op, (unsigned long long)b->block_size, blocks, b->batch, gbps, seconds,
        (unsigned long long)moved, strcmp(op, "demote") == 0 ? "demoted" : "staged",
        client_gbps);
    if (b->json) {
        printf("{\"op\":\"%s\",\"tier\":\"ssd\",\"block_size\":%llu,\"blocks\":%zu,"
               "\"batch\":%zu,\"seconds\":%.4f,\"gbps\":%.4f,\"ssd_bytes\":%llu,"
               "\"moved\":%llu,\"client_gbps\":%.4f}\n",
               op, (unsigned long long)b->block_size, blocks, b->batch, seconds, gbps,
               (unsigned long long)ssd_bytes, (unsigned long long)moved, client_gbps);
    }
}

/* --tier ssd: demotion while putting, then staging while getting. */
static int bench_ssd(bench_t *b)
{
    kvp_tier_stats_t h0, s0, h1, s1;
    size_t           total = b->blocks, keep, n_read;
    uint64_t         t0;
    double           seconds;
    int              rc;

    if (!ssd_stats(b, &h0, &s0)) {
        return 1;
    }
    if (s0.capacity_bytes == 0) {
        fprintf(stderr,
                "kvpool bench: the node has no SSD tier (kvpool-node --ssd-dir)\n");
        return 1;
    }
    t0      = kv_time_ns();
    rc      = bench_run(b, 1, 0);
    seconds = (double)(kv_time_ns() - t0) / 1e9;
    if (rc != 0 || !ssd_stats(b, &h1, &s1)) {
        return 1;
    }
    ssd_report(b, "demote", total, seconds, s1.bytes_written - s0.bytes_written,
               s1.demotions - s0.demotions,
               (double)total * (double)b->block_size / seconds / 1e9);

    /* free the host tier (its blocks are the newest), then read the oldest */
    keep = total > h1.blocks + b->batch ? total - h1.blocks - b->batch : 0;
    for (size_t i = keep; i < total; i++) {
        kvp_key_t key = bench_key(i);
        kvp_delete(b->client, b->ns, &key, 1, NULL);
    }
    n_read =
        KV_MIN(keep, (size_t)(h1.capacity_bytes / 100 * 85 / (b->block_size + 4096)));
    if (n_read == 0 || !ssd_stats(b, &h0, &s0)) {
        fprintf(stderr, "kvpool bench: no block left on SSD to read back\n");
        return 1;
    }
    b->blocks = n_read;
    t0        = kv_time_ns();
    rc        = bench_run(b, 0, 0);
    seconds   = (double)(kv_time_ns() - t0) / 1e9;
    b->blocks = total;
    if (rc != 0 || !ssd_stats(b, &h1, &s1)) {
        return 1;
    }
    ssd_report(b, "stage", n_read, seconds, s1.bytes_read - s0.bytes_read,
               s1.promotions - s0.promotions,
               (double)n_read * (double)b->block_size / seconds / 1e9);
    if (s1.promotions - s0.promotions < n_read) {
        fprintf(stderr, "kvpool bench: only %llu of %zu blocks came from SSD\n",
                (unsigned long long)(s1.promotions - s0.promotions), n_read);
        return 1;
    }
    return 0;
}

/* A node for --tier ssd in @p dir, with @p memory of host tier. */
static pid_t bench_ssd_node(const char *dir, const char *ssd_size, uint64_t memory,
                            char *address, size_t len)
{
    char mem[32];

    if (dir == NULL) {
        fprintf(stderr, "kvpool bench: --tier ssd needs --node or --ssd-dir DIR\n");
        return -1;
    }
    snprintf(mem, sizeof(mem), "%lluMiB", (unsigned long long)(memory >> 20));
    return kv_cli_node_start_ssd(mem, dir, ssd_size, address, len);
}

int kv_cli_bench(int argc, char **argv)
{
    static const struct option options[] = {
        {"node", required_argument, NULL, 'n'},
        {"block-size", required_argument, NULL, 'b'},
        {"blocks", required_argument, NULL, 'N'},
        {"batch", required_argument, NULL, 'B'},
        {"op", required_argument, NULL, 'o'},
        {"transport", required_argument, NULL, 'T'},
        {"token", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"tier", required_argument, NULL, 'R'},
        {"ssd-dir", required_argument, NULL, 'D'},
        {"ssd-size", required_argument, NULL, 'S'},
        {"memory", required_argument, NULL, 'M'},
        {NULL, 0, NULL, 0},
    };
    bench_t             b       = {0};
    const char         *ssd_dir = NULL, *ssd_size = "8GiB";
    int                 ssd = 0, sized = 0;
    kvp_client_params_t params = {0};
    const char         *node = NULL, *op = NULL;
    char                address[256], memory[32];
    pid_t               node_pid = 0;
    int                 opt, rc = 1;

    b.block_size      = 2u << 20;
    b.blocks          = 256;
    b.batch           = 1;
    b.ns              = "bench";
    params.field_mask = KVP_CLIENT_PARAM_NAME;
    params.name       = "kvpool-bench";
    if (getenv("KVPOOL_TOKEN") != NULL) {
        params.field_mask |= KVP_CLIENT_PARAM_TOKEN;
        params.token = getenv("KVPOOL_TOKEN");
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'n':
            node = optarg;
            break;
        case 'N':
            b.blocks = strtoull(optarg, NULL, 10);
            sized    = 1;
            break;
        case 'D':
            ssd_dir = optarg;
            break;
        case 'S':
            ssd_size = optarg;
            break;
        case 'R':
            if (strcmp(optarg, "ssd") != 0 && strcmp(optarg, "host") != 0) {
                fprintf(stderr, "kvpool bench: --tier host|ssd, not '%s'\n", optarg);
                return 2;
            }
            ssd = strcmp(optarg, "ssd") == 0;
            break;
        case 'M':
            if (kv_size_parse(optarg, &b.memory) != KVP_OK || b.memory < (4u << 20)) {
                fprintf(stderr, "kvpool bench: bad --memory '%s'\n", optarg);
                return 2;
            }
            break;
        case 'B':
            b.batch = strtoull(optarg, NULL, 10);
            break;
        case 'o':
            op = optarg;
            break;
        case 'j':
            b.json = 1;
            break;
        case 'T':
            params.field_mask |= KVP_CLIENT_PARAM_TRANSPORT;
            params.transport = optarg;
            break;
        case 't':
            params.field_mask |= KVP_CLIENT_PARAM_TOKEN;
            params.token = optarg;
            break;
        case 'b':
            if (kv_size_parse(optarg, &b.block_size) != KVP_OK || b.block_size == 0 ||
                b.block_size > KVP_BLOCK_MAX) {
                fprintf(stderr, "kvpool bench: bad --block-size '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            return 2;
        }
    }
    if (b.blocks == 0 || b.batch == 0 || b.batch > KVP_BATCH_MAX ||
        (op != NULL && strcmp(op, "put") != 0 && strcmp(op, "get") != 0)) {
        fprintf(stderr, "kvpool bench: --blocks > 0, --batch 1..%d, --op put|get\n",
                KVP_BATCH_MAX);
        return 2;
    }
    if (ssd) {
        b.memory = b.memory ? b.memory : (uint64_t)1 << 30;
        b.blocks = sized ? b.blocks : 2048;
        b.batch  = b.batch == 1 ? 8 : b.batch;
    }
    if (ssd && node == NULL) {
        node_pid = bench_ssd_node(ssd_dir, ssd_size, b.memory, address, sizeof(address));
        if (node_pid < 0) {
            return 1;
        }
        node = address;
    } else if (node == NULL) {
        /* room for every block, plus slack for the allocator's rounding */
        snprintf(memory, sizeof(memory), "%lluMiB",
                 (unsigned long long)((b.blocks * (b.block_size + 4096)) >> 20) + 64);
        node_pid = kv_cli_node_start(memory, NULL, address, sizeof(address));
        if (node_pid < 0) {
            return 1;
        }
        node = address;
    }
    if (kvp_client_connect(node, &params, &b.client) != KVP_OK) {
        fprintf(stderr, "kvpool bench: cannot connect to %s\n", node);
        goto out_node;
    }
    b.pattern = kv_malloc(b.block_size, "pattern");
    for (uint64_t i = 0; i < b.block_size; i++) {
        b.pattern[i] = (uint8_t)((i * 2654435761u) >> 13);
    }
    b.bufs = kv_calloc(b.batch, sizeof(uint8_t *), "buffers");
    for (size_t i = 0; i < b.batch; i++) {
        b.bufs[i] = kv_malloc(b.block_size, "block buffer");
        memset(b.bufs[i], 0, b.block_size); /* fault the pages in before timing */
    }
    rc = 0;
    if (ssd) {
        rc = bench_ssd(&b);
    } else if (op == NULL || strcmp(op, "put") == 0) {
        rc |= bench_run(&b, 1, 1);
    } else {
        rc |= bench_run(&b, 1, 0); /* --op get: store the blocks first, unreported */
    }
    if (!ssd && rc == 0 && (op == NULL || strcmp(op, "get") == 0)) {
        rc |= bench_run(&b, 0, 1);
    }
    for (size_t i = 0; i < b.batch; i++) {
        kv_free(b.bufs[i]);
    }
    kv_free(b.bufs);
    kv_free(b.pattern);
    kvp_client_disconnect(b.client);
out_node:
    kv_cli_daemon_stop(node_pid);
    return rc;
}
