/*
 * kvpool replay, live mode: replay a Mooncake-format trace against a
 * running pool (its coordinator, or a single node) through libkvpool.
 * tools/replay.c parses the options, counts and prints the summary.
 *
 * For each record, in trace order (spread over --threads workers, and
 * optionally paced: record r starts (ts_r - ts_0) / time_scale ms after
 * the first), a worker
 *   1. loads the longest cached prefix of the record's chain
 *      (kvp_get_chain) and compares every loaded block with the synthetic
 *      bytes derived from its key (kv_workload_block_bytes): a wrong byte
 *      counts as an error;
 *   2. unless every block was loaded, saves the chain (kvp_put_chain: the
 *      cached blocks are skipped, the others carry their synthetic
 *      bytes), as an engine does after the prefill.
 * The matched blocks of a record are the ones it loaded.  GB/s = block
 * bytes asked (loaded or saved) / wall time.  Latencies are per request:
 * the get_chain call, and the put_chain call of those that saved blocks.
 */
#include "cli.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const kv_cli_replay_opts_t *opts;
    kvp_client_h                client;
    kv_workload_t              *trace;
    uint64_t                    start_ns;
    pthread_mutex_t             lock; /* the trace and everything below */
    int                         done;
    int                         trace_failed;
    uint64_t                    taken; /* records handed to workers */
    uint64_t                    first_ts_ms;
    kv_cli_replay_result_t      result; /* requests finished */
    kv_cli_replay_live_result_t live;
    uint64_t                   *get_us; /* one per finished request */
    uint64_t                   *put_us; /* one per request that saved blocks */
    size_t                      puts;
    size_t                      lat_cap;
    int                         shown; /* errors printed */
    uint64_t                    end_ns;
} live_t;

/* One record, copied out of the trace. */
typedef struct {
    uint64_t   ts_ms;
    uint32_t   input_tokens;
    size_t     n;
    kvp_key_t *keys;
    size_t     cap;
} record_t;

/* Take the next record (0 when there is none left). */
static int next_record(live_t *live, record_t *rec)
{
    kv_request_t req;
    kvp_status_t status;
    int          ok = 0;

    pthread_mutex_lock(&live->lock);
    if (!live->done &&
        (live->opts->max_requests == 0 || live->taken < live->opts->max_requests)) {
        status = kv_workload_next(live->trace, &req);
        if (status == KVP_OK && req.num_keys > KVP_BATCH_MAX) {
            fprintf(stderr,
                    "kvpool replay: %s: request %llu has %zu blocks; the pool matches "
                    "chains of at most %d\n",
                    live->opts->trace, (unsigned long long)live->taken + 1, req.num_keys,
                    KVP_BATCH_MAX);
            live->trace_failed = 1;
            live->done         = 1;
        } else if (status == KVP_OK) {
            if (live->taken == 0) {
                live->first_ts_ms = req.timestamp_ms;
            }
            rec->n = req.num_keys;
            if (rec->n > rec->cap) {
                rec->cap  = rec->n;
                rec->keys = kv_realloc(rec->keys, rec->cap * sizeof(kvp_key_t), "keys");
            }
            memcpy(rec->keys, req.keys, rec->n * sizeof(kvp_key_t));
            rec->ts_ms = req.timestamp_ms - KV_MIN(req.timestamp_ms, live->first_ts_ms);
            rec->input_tokens = req.input_tokens;
            live->taken++;
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
static void replay_record(live_t *live, kv_chain_buffers_t *b, const record_t *rec)
{
    uint64_t     bs     = live->opts->block_size, t0, t1, t2;
    size_t       loaded = 0;
    uint64_t     errors = 0;
    kvp_status_t status;

    kv_chain_buffers_reserve(b, rec->n);
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
    if (loaded < rec->n) { /* a request whose blocks were all loaded saves nothing */
        for (size_t i = 0; i < rec->n; i++) {
            if (i >= loaded) {
                kv_workload_block_bytes(&rec->keys[i], b->bufs[i], bs);
            }
            b->sizes[i] = bs;
        }
        status =
            kvp_put_chain(live->client, live->opts->ns, rec->keys,
                          (const void *const *)b->bufs, b->sizes, rec->n, b->statuses);
        for (size_t i = 0; status == KVP_OK && i < rec->n; i++) {
            status = b->statuses[i];
        }
        if (status != KVP_OK) {
            live_error(live, "put_chain", kvp_status_string(status));
            errors++;
        }
    }
    t2 = kv_time_ns();

    pthread_mutex_lock(&live->lock);
    if (live->result.requests == live->lat_cap) {
        live->lat_cap = KV_MAX(2 * live->lat_cap, 1024);
        live->get_us =
            kv_realloc(live->get_us, live->lat_cap * sizeof(uint64_t), "latencies");
        live->put_us =
            kv_realloc(live->put_us, live->lat_cap * sizeof(uint64_t), "latencies");
    }
    live->get_us[live->result.requests] = (t1 - t0) / 1000;
    if (loaded < rec->n) {
        live->put_us[live->puts++] = (t2 - t1) / 1000;
    }
    kv_cli_replay_count(&live->result, rec->input_tokens, rec->n, loaded);
    live->live.bytes += rec->n * bs;
    live->live.errors += errors;
    live->end_ns = KV_MAX(live->end_ns, t2);
    pthread_mutex_unlock(&live->lock);
}

static void *worker_main(void *arg)
{
    live_t        *live = arg;
    kv_chain_buffers_t b    = {0};
    record_t       rec  = {0};

    kv_chain_buffers_init(&b, live->opts->block_size);
    while (next_record(live, &rec)) {
        pace(live, &rec);
        replay_record(live, &b, &rec);
    }
    kv_free(rec.keys);
    kv_chain_buffers_cleanup(&b);
    return NULL;
}

#define JOIN_WAIT_S 10

/*
 * A pool to replay against: a single node, or a coordinator with at least
 * one node joined (waiting up to JOIN_WAIT_S for the first, as nodes
 * started just before need a moment).
 */
static int pool_has_nodes(kvp_client_h client)
{
    kvp_index_stats_t st;

    for (int i = 0; i < JOIN_WAIT_S * 10; i++) {
        kvp_status_t status = kvp_index_stats(client, &st);

        if (status == KVP_ERR_UNSUPPORTED || (status == KVP_OK && st.nodes > 0)) {
            return 1;
        }
        usleep(100000);
    }
    return 0;
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

int kv_cli_replay_live(const kv_cli_replay_opts_t *opts)
{
    kv_cli_conn_t conn = {opts->coord, opts->ns, opts->token};
    live_t        live = {.opts = opts};
    kvp_stats_t   stats;
    pthread_t     tids[KV_CLI_REPLAY_THREADS_MAX];
    uint64_t      evictions = 0;
    char          err[512];
    int           threads = opts->threads, rc = 1;

    if (opts->coord == NULL) {
        fprintf(stderr, "kvpool replay: name the pool with --coord HOST:PORT, or use "
                        "--offline\n");
        return 2;
    }
    if (threads < 1 || threads > KV_CLI_REPLAY_THREADS_MAX) {
        fprintf(stderr, "kvpool replay: --threads must be 1..%d\n",
                KV_CLI_REPLAY_THREADS_MAX);
        return 2;
    }
    if (kv_workload_trace_open(opts->trace, &live.trace, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool replay: %s\n", err);
        return 1;
    }
    if (kv_cli_connect(&conn, &live.client) != KVP_OK) {
        goto out_trace;
    }
    if (!pool_has_nodes(live.client)) {
        fprintf(stderr, "kvpool replay: no pool node has joined %s within %d s\n",
                opts->coord, JOIN_WAIT_S);
        goto out_client;
    }
    /* the nodes evict with their own policy, in their own memory */
    live.result.policy = "node";
    if (kvp_stats(live.client, &stats) == KVP_OK) {
        live.result.capacity_blocks = stats.capacity_bytes / opts->block_size;
        evictions                   = stats.evictions;
    }
    live.live.block_size = opts->block_size;
    if (opts->progress) {
        fprintf(stderr, "kvpool replay: %s against %s, %d threads, %llu-byte blocks%s\n",
                opts->trace, opts->coord, threads, (unsigned long long)opts->block_size,
                opts->time_scale > 0 ? ", paced" : "");
    }

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
        finished =
            live.done || (opts->max_requests != 0 && live.taken >= opts->max_requests);
        if (!finished && opts->progress && ticks % 10 == 0) {
            kv_cli_replay_progress(&live.result,
                                   (double)(kv_time_ns() - live.start_ns) / 1e9);
        }
        pthread_mutex_unlock(&live.lock);
        if (finished) {
            break;
        }
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
    }
    pthread_mutex_destroy(&live.lock);
    live.result.seconds = (double)(live.end_ns - live.start_ns) / 1e9;
    if (kvp_stats(live.client, &stats) == KVP_OK && stats.evictions >= evictions) {
        live.result.evictions = stats.evictions - evictions; /* the nodes' own */
    }
    live.live.get_p50_us = quantile(live.get_us, live.result.requests, 0.50);
    live.live.get_p99_us = quantile(live.get_us, live.result.requests, 0.99);
    live.live.put_p50_us = quantile(live.put_us, live.puts, 0.50);
    live.live.put_p99_us = quantile(live.put_us, live.puts, 0.99);
    live.result.live     = &live.live;
    kv_cli_replay_report(opts, &live.result);
    rc = live.live.errors == 0 && !live.trace_failed ? 0 : 1;
    kv_free(live.get_us);
    kv_free(live.put_us);
out_client:
    kvp_client_disconnect(live.client);
out_trace:
    kv_workload_destroy(live.trace);
    return rc;
}
