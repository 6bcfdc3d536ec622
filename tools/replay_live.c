/*
 * kvpool replay, live mode: replay a Mooncake-format trace against a
 * running pool (its coordinator, or a single node) through libkvpool.
 *
 * For each record, in trace order (spread over --threads workers, and
 * optionally paced: record r starts (ts_r - ts_0) / time_scale ms after
 * the first), a worker
 *   1. loads the longest cached prefix of the record's chain
 *      (kvp_get_chain) and compares every loaded block with the synthetic
 *      bytes derived from its key (kv_workload_block_bytes): a wrong byte
 *      counts as an error;
 *   2. saves the chain (kvp_put_chain: the cached blocks are skipped, the
 *      others carry their synthetic bytes), as an engine does after the
 *      prefill.
 * Block-level hit ratio = blocks loaded / blocks asked; token-level =
 * sum of min(loaded * 512, input_length) / sum of input_length.  GB/s =
 * block bytes asked (loaded or put) / wall time.  Latencies are per
 * request: the get_chain call, and the put_chain call.
 */
#include "cli.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LIVE_THREADS_MAX 64

typedef struct {
    const kv_cli_replay_opts_t *opts;
    kvp_client_h                client;
    kv_workload_t              *trace;
    uint64_t                    start_ns;
    pthread_mutex_t             lock; /* the trace and everything below */
    int                         done;
    int                         trace_failed;
    uint64_t                    first_ts_ms;
    uint64_t  requests, blocks, hit_blocks, input_tokens, hit_tokens, bytes, errors;
    size_t    finished;        /* requests replayed */
    int       shown;           /* errors printed */
    uint64_t *get_us, *put_us; /* one per finished request */
    size_t    lat_cap;
    uint64_t  end_ns;
} live_t;

/* One record, copied out of the trace. */
typedef struct {
    uint64_t   ts_ms;
    uint32_t   input_tokens;
    size_t     n;
    kvp_key_t *keys;
    size_t     cap;
} record_t;

/* A worker's buffers: one block each for the longest chain seen so far. */
typedef struct {
    size_t        cap;
    uint8_t     **bufs;
    uint64_t     *caps, *sizes;
    kvp_status_t *statuses;
    uint8_t      *want;
} live_buffers_t;

static void buffers_reserve(live_buffers_t *b, size_t n, uint64_t block_size)
{
    if (n <= b->cap) {
        return;
    }
    b->bufs     = kv_realloc(b->bufs, n * sizeof(*b->bufs), "block buffers");
    b->caps     = kv_realloc(b->caps, n * sizeof(*b->caps), "capacities");
    b->sizes    = kv_realloc(b->sizes, n * sizeof(*b->sizes), "sizes");
    b->statuses = kv_realloc(b->statuses, n * sizeof(*b->statuses), "statuses");
    for (size_t i = b->cap; i < n; i++) {
        b->bufs[i] = kv_malloc(block_size, "block buffer");
        b->caps[i] = block_size;
    }
    b->cap = n;
}

static void buffers_cleanup(live_buffers_t *b)
{
    for (size_t i = 0; i < b->cap; i++) {
        kv_free(b->bufs[i]);
    }
    kv_free(b->bufs);
    kv_free(b->caps);
    kv_free(b->sizes);
    kv_free(b->statuses);
    kv_free(b->want);
}

/* Take the next record (0 when there is none left). */
static int next_record(live_t *live, record_t *rec)
{
    kv_request_t req;
    kvp_status_t status;
    int          ok = 0;

    pthread_mutex_lock(&live->lock);
    if (!live->done &&
        (live->opts->requests == 0 || live->requests < live->opts->requests)) {
        status = kv_workload_next(live->trace, &req);
        if (status == KVP_OK) {
            if (live->requests == 0) {
                live->first_ts_ms = req.timestamp_ms;
            }
            rec->n = KV_MIN(req.num_keys, KVP_BATCH_MAX);
            if (rec->n > rec->cap) {
                rec->cap  = rec->n;
                rec->keys = kv_realloc(rec->keys, rec->cap * sizeof(kvp_key_t), "keys");
            }
            memcpy(rec->keys, req.keys, rec->n * sizeof(kvp_key_t));
            rec->ts_ms = req.timestamp_ms - KV_MIN(req.timestamp_ms, live->first_ts_ms);
            rec->input_tokens = req.input_tokens;
            live->requests++;
            ok = 1;
        } else {
            if (status != KVP_ERR_NOT_FOUND) {
                fprintf(stderr, "kvpool replay: %s\n", kv_workload_error(live->trace));
                live->trace_failed = 1;
            }
            live->done = 1;
        }
    }
    pthread_mutex_unlock(&live->lock);
    return ok;
}

/* Wait until the record is due (with --time-scale). */
static void pace(const live_t *live, const record_t *rec)
{
    uint64_t due, now;

    if (live->opts->time_scale <= 0) {
        return;
    }
    due = live->start_ns + (uint64_t)((double)rec->ts_ms * 1e6 / live->opts->time_scale);
    now = kv_time_ns();
    if (due > now) {
        struct timespec ts = {(time_t)((due - now) / 1000000000u),
                              (long)((due - now) % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

/* Errors printed in full; later ones are only counted. */
#define ERRORS_SHOWN 5

/* Report an error of the replay (the first ERRORS_SHOWN of them). */
static void live_error(live_t *live, const char *what, const char *why)
{
    pthread_mutex_lock(&live->lock);
    if (live->shown < ERRORS_SHOWN) {
        fprintf(stderr, "kvpool replay: %s: %s%s\n", what, why,
                ++live->shown == ERRORS_SHOWN ? " (further errors are only counted)"
                                              : "");
    }
    pthread_mutex_unlock(&live->lock);
}

/* One record: load the cached prefix, check it, save the chain. */
static void replay_record(live_t *live, live_buffers_t *b, const record_t *rec)
{
    uint64_t     bs     = live->opts->block_size, t0, t1, t2;
    size_t       loaded = 0;
    uint64_t     errors = 0;
    kvp_status_t status;

    buffers_reserve(b, rec->n, bs);
    t0     = kv_time_ns();
    status = kvp_get_chain(live->client, live->opts->ns, rec->keys,
                           (void *const *)b->bufs, b->caps, rec->n, b->sizes, &loaded);
    t1     = kv_time_ns();
    if (status != KVP_OK) {
        live_error(live, "get_chain", kvp_status_string(status));
        errors++;
        loaded = 0;
    }
    for (size_t i = 0; i < loaded; i++) {
        kv_workload_block_bytes(&rec->keys[i], b->want, bs);
        if (b->sizes[i] != bs || memcmp(b->want, b->bufs[i], bs) != 0) {
            live_error(live, "get_chain", "a loaded block has wrong bytes");
            errors++;
        }
    }
    for (size_t i = 0; i < rec->n; i++) {
        if (i >= loaded) {
            kv_workload_block_bytes(&rec->keys[i], b->bufs[i], bs);
        }
        b->sizes[i] = bs;
    }
    status = kvp_put_chain(live->client, live->opts->ns, rec->keys,
                           (const void *const *)b->bufs, b->sizes, rec->n, b->statuses);
    t2     = kv_time_ns();
    for (size_t i = 0; status == KVP_OK && i < rec->n; i++) {
        status = b->statuses[i];
    }
    if (status != KVP_OK) {
        live_error(live, "put_chain", kvp_status_string(status));
        errors++;
    }

    pthread_mutex_lock(&live->lock);
    if (live->finished == live->lat_cap) {
        live->lat_cap = KV_MAX(2 * live->lat_cap, 1024);
        live->get_us =
            kv_realloc(live->get_us, live->lat_cap * sizeof(uint64_t), "latencies");
        live->put_us =
            kv_realloc(live->put_us, live->lat_cap * sizeof(uint64_t), "latencies");
    }
    live->get_us[live->finished] = (t1 - t0) / 1000;
    live->put_us[live->finished] = (t2 - t1) / 1000;
    live->finished++;
    live->blocks += rec->n;
    live->hit_blocks += loaded;
    live->input_tokens += rec->input_tokens;
    live->hit_tokens += KV_MIN((uint64_t)loaded * KV_WORKLOAD_TRACE_BLOCK_TOKENS,
                               (uint64_t)rec->input_tokens);
    live->bytes += rec->n * bs;
    live->errors += errors;
    live->end_ns = KV_MAX(live->end_ns, t2);
    pthread_mutex_unlock(&live->lock);
}

static void *worker_main(void *arg)
{
    live_t        *live = arg;
    live_buffers_t b    = {0};
    record_t       rec  = {0};

    b.want = kv_malloc(live->opts->block_size, "expected block");
    while (next_record(live, &rec)) {
        pace(live, &rec);
        replay_record(live, &b, &rec);
    }
    kv_free(rec.keys);
    buffers_cleanup(&b);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The @p q quantile (0..1) of @p v (sorted here), nearest rank. */
static uint64_t quantile(uint64_t *v, size_t n, double q)
{
    size_t rank;

    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof(*v), cmp_u64);
    rank = (size_t)(q * (double)n + 0.999999);
    return v[KV_MIN(KV_MAX(rank, 1), n) - 1];
}

static double ratio(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

static void print_progress(live_t *live)
{
    double seconds = (double)(kv_time_ns() - live->start_ns) / 1e9;

    pthread_mutex_lock(&live->lock);
    fprintf(stderr,
            "  %8llu requests  %9llu blocks  hit %5.1f%%  %7.3f GB/s  %llu errors\n",
            (unsigned long long)live->finished, (unsigned long long)live->blocks,
            100.0 * ratio(live->hit_blocks, live->blocks),
            seconds > 0 ? (double)live->bytes / seconds / 1e9 : 0.0,
            (unsigned long long)live->errors);
    pthread_mutex_unlock(&live->lock);
}

int kv_cli_replay_live(const kv_cli_replay_opts_t *opts)
{
    kv_cli_conn_t conn = {opts->coord, opts->ns, opts->token};
    live_t        live = {.opts = opts};
    kvp_stats_t   stats;
    pthread_t     tids[LIVE_THREADS_MAX];
    uint64_t      capacity_blocks = 0, get_p50, get_p99, put_p50, put_p99;
    char          err[512];
    double        seconds;
    int           threads = opts->threads, rc = 1;

    if (threads < 1 || threads > LIVE_THREADS_MAX || opts->block_size == 0 ||
        opts->block_size > KVP_BLOCK_MAX) {
        fprintf(stderr,
                "kvpool replay: --threads must be 1..%d and --block-size "
                "1..256MiB\n",
                LIVE_THREADS_MAX);
        return 2;
    }
    if (kv_workload_trace_open(opts->trace, &live.trace, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool replay: %s\n", err);
        return 1;
    }
    if (kv_cli_connect(&conn, &live.client) != KVP_OK) {
        goto out_trace;
    }
    if (kvp_stats(live.client, &stats) == KVP_OK) {
        capacity_blocks = stats.capacity_bytes / opts->block_size;
    }
    fprintf(stderr, "kvpool replay: %s against %s, %d threads, %llu-byte blocks%s\n",
            opts->trace, opts->coord, threads, (unsigned long long)opts->block_size,
            opts->time_scale > 0 ? ", paced" : "");

    pthread_mutex_init(&live.lock, NULL);
    live.start_ns = kv_time_ns();
    live.end_ns   = live.start_ns;
    for (int i = 0; i < threads; i++) {
        pthread_create(&tids[i], NULL, worker_main, &live);
    }
    for (int ticks = 1;; ticks++) { /* progress once a second until done */
        int finished;
        usleep(100000);
        pthread_mutex_lock(&live.lock);
        finished = live.done || (opts->requests != 0 && live.requests >= opts->requests);
        pthread_mutex_unlock(&live.lock);
        if (finished) {
            break;
        }
        if (ticks % 10 == 0) {
            print_progress(&live);
        }
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
    }
    pthread_mutex_destroy(&live.lock);
    seconds = (double)(live.end_ns - live.start_ns) / 1e9;
    get_p50 = quantile(live.get_us, live.finished, 0.50);
    get_p99 = quantile(live.get_us, live.finished, 0.99);
    put_p50 = quantile(live.put_us, live.finished, 0.50);
    put_p99 = quantile(live.put_us, live.finished, 0.99);

    printf("requests         %llu\n", (unsigned long long)live.finished);
    printf("blocks           %llu asked, %llu hit\n", (unsigned long long)live.blocks,
           (unsigned long long)live.hit_blocks);
    printf("hit ratio        %.4f (blocks), %.4f (tokens)\n",
           ratio(live.hit_blocks, live.blocks),
           ratio(live.hit_tokens, live.input_tokens));
    printf("moved            %.3f GB in %.2f s: %.3f GB/s\n", (double)live.bytes / 1e9,
           seconds, seconds > 0 ? (double)live.bytes / seconds / 1e9 : 0.0);
    printf("latency (us)     get p50 %llu p99 %llu, put p50 %llu p99 %llu\n",
           (unsigned long long)get_p50, (unsigned long long)get_p99,
           (unsigned long long)put_p50, (unsigned long long)put_p99);
    printf("errors           %llu\n", (unsigned long long)live.errors);
    if (opts->json) {
        printf("{\"mode\":\"live\",\"requests\":%llu,\"blocks\":%llu,\"hit_blocks\":%llu,"
               "\"hit_ratio\":%.6f,\"token_hit_ratio\":%.6f,\"policy\":\"node\","
               "\"capacity_blocks\":%llu,\"block_size\":%llu,\"bytes\":%llu,"
               "\"seconds\":%.3f,\"gbps\":%.4f,\"get_p50_us\":%llu,\"get_p99_us\":%llu,"
               "\"put_p50_us\":%llu,\"put_p99_us\":%llu,\"errors\":%llu}\n",
               (unsigned long long)live.finished, (unsigned long long)live.blocks,
               (unsigned long long)live.hit_blocks, ratio(live.hit_blocks, live.blocks),
               ratio(live.hit_tokens, live.input_tokens),
               (unsigned long long)capacity_blocks, (unsigned long long)opts->block_size,
               (unsigned long long)live.bytes, seconds,
               seconds > 0 ? (double)live.bytes / seconds / 1e9 : 0.0,
               (unsigned long long)get_p50, (unsigned long long)get_p99,
               (unsigned long long)put_p50, (unsigned long long)put_p99,
               (unsigned long long)live.errors);
    }
    rc = live.errors == 0 && !live.trace_failed ? 0 : 1;
    kv_free(live.get_us);
    kv_free(live.put_us);
    kvp_client_disconnect(live.client);
out_trace:
    kv_workload_destroy(live.trace);
    return rc;
}

/*
 * `kvpool replay TRACE --coord HOST:PORT ...` until the shared parser of
 * tools/replay.c (branch evict) arrives; it replaces this function.
 */
int kv_cli_replay(int argc, char **argv)
{
    static const struct option options[] = {
        {"coord", required_argument, NULL, 'c'},
        {"block-size", required_argument, NULL, 'b'},
        {"requests", required_argument, NULL, 'r'},
        {"time-scale", required_argument, NULL, 'x'},
        {"threads", required_argument, NULL, 'w'},
        {"ns", required_argument, NULL, 's'},
        {"token", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    kv_cli_replay_opts_t opts = {.ns         = "replay",
                                 .token      = getenv("KVPOOL_TOKEN"),
                                 .block_size = 64 << 10,
                                 .threads    = 4};
    int                  opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            opts.coord = optarg;
            break;
        case 'r':
            opts.requests = strtoull(optarg, NULL, 10);
            break;
        case 'x':
            opts.time_scale = strtod(optarg, NULL);
            break;
        case 'w':
            opts.threads = atoi(optarg);
            break;
        case 's':
            opts.ns = optarg;
            break;
        case 't':
            opts.token = optarg;
            break;
        case 'j':
            opts.json = 1;
            break;
        case 'b':
            if (kv_size_parse(optarg, &opts.block_size) != KVP_OK) {
                fprintf(stderr, "kvpool replay: bad --block-size '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            return 2;
        }
    }
    if (optind + 1 != argc || opts.coord == NULL) {
        fprintf(stderr,
                "usage: kvpool replay TRACE --coord HOST:PORT [--block-size SIZE]\n"
                "       [--requests N] [--time-scale X] [--threads N] [--json]\n");
        return 2;
    }
    opts.trace = argv[optind];
    return kv_cli_replay_live(&opts);
}
