/*
 * kvpool engine: a synthetic inference engine for `kvpool demo
 * --disaggregated` (engine.h says what it does with a job).
 *
 *   kvpool engine --coord HOST:PORT --role prefill|decode --name NAME
 *                 [--node HOST:PORT] [--capacity-blocks N]
 *                 [--block-size SIZE] [--ns NS] [--token TOKEN]
 *
 * It reports its load to the coordinator after every job and whenever
 * stdin has been quiet for REPORT_MS, so its lease holds while it waits.
 * It ends when stdin closes.
 */
#include "cli.h"
#include "engine.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Load reports at least this often (well inside the default 3 s lease). */
#define REPORT_MS 500

typedef struct engine {
    kvp_client_h       client;
    const char        *ns;
    int                prefill; /* the role: prefill, else decode */
    kvp_instance_h     inst;
    uint64_t           block_size;
    uint64_t           capacity_blocks;
    kv_chain_buffers_t bufs;
} engine_t;

int kv_engine_read(int fd, void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return done == 0 && n == 0 ? 0 : -1;
        }
        done += (size_t)n;
    }
    return 1;
}

int kv_engine_write(int fd, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

static void report(engine_t *e, uint64_t queued_tokens, uint32_t running)
{
    kvp_instance_load_t load = {0};

    load.queued_prefill_tokens = queued_tokens;
    load.running_decode        = running;
    load.free_blocks           = e->capacity_blocks;
    kvp_instance_report(e->inst, &load);
}

/* Compare blocks [0, n) with the bytes their keys give; count the wrong ones. */
static uint32_t check_blocks(engine_t *e, const kvp_key_t *keys, size_t n)
{
    uint32_t wrong = 0;

    for (size_t i = 0; i < n; i++) {
        kv_workload_block_bytes(&keys[i], e->bufs.want, e->block_size);
        wrong += e->bufs.sizes[i] != e->block_size ||
                 memcmp(e->bufs.want, e->bufs.bufs[i], e->block_size) != 0;
    }
    return wrong;
}

static void prefill(engine_t *e, const kvp_key_t *keys, size_t n, const kvp_plan_t *plan,
                    kv_engine_result_t *res)
{
    size_t loaded = 0;

    res->status = kvp_plan_load(e->client, plan, e->ns, keys, (void *const *)e->bufs.bufs,
                                e->bufs.caps, n, e->bufs.sizes, &loaded);
    if (res->status != KVP_OK) {
        return;
    }
    res->loaded     = (uint32_t)loaded;
    res->mismatches = check_blocks(e, keys, loaded);
    for (size_t i = loaded; i < n; i++) {
        kv_workload_block_bytes(&keys[i], e->bufs.bufs[i], e->block_size);
        e->bufs.sizes[i] = e->block_size;
    }
    res->computed = (uint32_t)(n - loaded);
    res->status =
        kvp_plan_save(e->client, plan, e->ns, keys, (const void *const *)e->bufs.bufs,
                      e->bufs.sizes, loaded, n);
}

/* Load the chain where the handover plan says, the rest by the index. */
static void decode(engine_t *e, const kvp_key_t *keys, size_t n, const kvp_plan_t *plan,
                   kv_engine_result_t *res)
{
    size_t loaded = 0, found = 0;

    res->status = kvp_plan_load(e->client, plan, e->ns, keys, (void *const *)e->bufs.bufs,
                                e->bufs.caps, n, e->bufs.sizes, &loaded);
    if (res->status == KVP_OK && loaded < n) {
        res->status = kvp_get_chain(e->client, e->ns, keys, (void *const *)e->bufs.bufs,
                                    e->bufs.caps, n, e->bufs.sizes, &found);
        loaded      = KV_MAX(loaded, found);
    }
    if (res->status != KVP_OK) {
        return;
    }
    res->loaded     = (uint32_t)loaded;
    res->missing    = (uint32_t)(n - loaded);
    res->mismatches = check_blocks(e, keys, loaded);
}

/* Serve jobs until stdin closes; 0 on a clean end. */
static int serve(engine_t *e)
{
    kvp_key_t *keys = kv_malloc(KVP_BATCH_MAX * sizeof(*keys), "engine keys");
    int        rc   = 1;

    for (;;) {
        struct pollfd      pfd = {STDIN_FILENO, POLLIN, 0};
        kv_engine_job_t    job;
        kv_engine_result_t res = {0};
        kvp_plan_t         plan;
        int                got;

        if (poll(&pfd, 1, REPORT_MS) == 0) {
            report(e, 0, 0); /* idle: keep the lease */
            continue;
        }
        got = kv_engine_read(STDIN_FILENO, &job, sizeof(job));
        if (got == 0) {
            rc = 0;
            break;
        }
        if (got < 0 || job.magic != KV_ENGINE_JOB_MAGIC || job.n_keys == 0 ||
            job.n_keys > KVP_BATCH_MAX ||
            kv_engine_read(STDIN_FILENO, keys, job.n_keys * sizeof(*keys)) != 1 ||
            kv_engine_read(STDIN_FILENO, &plan, sizeof(plan)) != 1) {
            fprintf(stderr, "kvpool engine: a bad or cut job on stdin\n");
            break;
        }
        report(e, e->prefill ? job.prompt_tokens : 0, e->prefill ? 0 : 1);
        kv_chain_buffers_reserve(&e->bufs, job.n_keys);
        res.id = job.id;
        if (e->prefill) {
            prefill(e, keys, job.n_keys, &plan, &res);
        } else {
            decode(e, keys, job.n_keys, &plan, &res);
        }
        report(e, 0, 0);
        if (kv_engine_write(STDOUT_FILENO, &res, sizeof(res)) != 0) {
            break;
        }
    }
    kv_free(keys);
    return rc;
}

int kv_cli_engine(int argc, char **argv)
{
    static const struct option options[] = {
        {"coord", required_argument, NULL, 'c'},
        {"role", required_argument, NULL, 'r'},
        {"name", required_argument, NULL, 'n'},
        {"node", required_argument, NULL, 'N'},
        {"capacity-blocks", required_argument, NULL, 'C'},
        {"block-size", required_argument, NULL, 'b'},
        {"ns", required_argument, NULL, 's'},
        {"token", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    kvp_instance_params_t params = {0};
    kv_cli_conn_t         conn   = {NULL, "demo", getenv("KVPOOL_TOKEN")};
    engine_t              e      = {0};
    const char           *role   = NULL;
    char                 *end;
    int                   opt, rc = 1;
    kvp_status_t          status;

    e.block_size      = 64 << 10;
    e.capacity_blocks = 4096;
    optind            = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            conn.node = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'n':
            params.name = optarg;
            break;
        case 'N':
            params.node = optarg;
            break;
        case 's':
            conn.ns = optarg;
            break;
        case 't':
            conn.token = optarg;
            break;
        case 'C':
            e.capacity_blocks = strtoull(optarg, &end, 10);
            if (*end != '\0' || e.capacity_blocks == 0) {
                fprintf(stderr, "kvpool engine: --capacity-blocks must be >= 1\n");
                return 2;
            }
            break;
        case 'b':
            if (kv_size_parse(optarg, &e.block_size) != KVP_OK || e.block_size == 0 ||
                e.block_size > KVP_BLOCK_MAX) {
                fprintf(stderr, "kvpool engine: bad --block-size '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            return 2;
        }
    }
    if (conn.node == NULL || params.name == NULL || role == NULL ||
        (strcmp(role, "prefill") != 0 && strcmp(role, "decode") != 0)) {
        fprintf(stderr, "usage: kvpool engine --coord HOST:PORT --role prefill|decode "
                        "--name NAME [--node HOST:PORT] [--capacity-blocks N] "
                        "[--block-size SIZE]\n");
        return 2;
    }
    e.prefill              = strcmp(role, "prefill") == 0;
    e.ns                   = conn.ns;
    params.roles           = e.prefill ? KVP_ROLE_PREFILL : KVP_ROLE_DECODE;
    params.capacity_blocks = e.capacity_blocks;
    if (kv_cli_connect(&conn, &e.client) != KVP_OK) {
        return 1;
    }
    status = kvp_instance_join(e.client, &params, &e.inst);
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool engine: joining %s: %s\n", conn.node,
                kvp_status_string(status));
        goto out;
    }
    printf("kvpool engine %s instance %u\n", params.name, kvp_instance_id(e.inst));
    fflush(stdout);
    kv_chain_buffers_init(&e.bufs, e.block_size);
    rc = serve(&e);
    kv_chain_buffers_cleanup(&e.bufs);
    kvp_instance_leave(e.inst);
out:
    kvp_client_disconnect(e.client);
    return rc;
}
