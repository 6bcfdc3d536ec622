/*
 * kvpool demo --disaggregated: prefill and decode on separate engines,
 * the KV handed over through the pool, every byte checked.
 *
 *   kvpool demo --disaggregated [--trace FILE] [--requests N]
 *               [--block-size SIZE] [--memory SIZE] [--seed N] [--json]
 *
 * It starts a coordinator, two pool nodes and two synthetic engines
 * (`kvpool engine`, engine.h): a prefill engine co-located with node 1 and
 * a decode engine co-located with node 2.  For each request it asks the
 * coordinator to Schedule it (kvp_schedule), sends the prompt and the plan
 * to the prefill engine the plan names (it loads the planned prefix,
 * computes the rest and saves it where the plan says: into the decode
 * side's node, with index insert), then, with the handover plan
 * (kvp_plan_handover: where the whole chain now is), to the decode engine
 * (it loads the whole chain and checks every byte).  One request at a time, so the plans
 * see every earlier request's blocks.
 */
#include "cli.h"
#include "engine.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* An engine child: its pipes and its instance id. */
typedef struct engine_proc {
    pid_t    pid;
    int      to, from; /* its stdin, its stdout */
    uint32_t id;
} engine_proc_t;

typedef struct disagg_counts {
    uint64_t requests, blocks, loaded, computed, decoded, mismatches, missing, errors;
    double   est_ttft; /* sum of the plans' estimates */
} disagg_counts_t;

static void engine_stop(engine_proc_t *e)
{
    if (e->pid <= 0) {
        return;
    }
    close(e->to); /* the engine ends when its stdin closes */
    close(e->from);
    waitpid(e->pid, NULL, 0);
    e->pid = 0;
}

/* Start `kvpool engine` (this program) and read its instance id. */
static int engine_start(engine_proc_t *e, const char *coord, const char *role,
                        const char *name, const char *node, const char *block_size)
{
    const char *argv[] = {"kvpool",       "engine",   "--coord", coord,    "--role",
                          role,           "--name",   name,      "--node", node,
                          "--block-size", block_size, NULL};
    char        line[256], want[128];
    size_t      len = 0;
    int         in[2], out[2];

    /* close-on-exec: the other engine must not hold this one's stdin open */
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        fprintf(stderr, "kvpool demo: pipe: %s\n", strerror(errno));
        return -1;
    }
    e->pid = fork();
    if (e->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    e->to   = in[1];
    e->from = out[0];
    if (e->pid < 0) {
        return -1;
    }
    /* one line, read byte by byte: binary results follow it */
    while (len + 1 < sizeof(line) && read(e->from, &line[len], 1) == 1 &&
           line[len] != '\n') {
        len++;
    }
    line[len] = '\0';
    snprintf(want, sizeof(want), "kvpool engine %s instance %%u", name);
    if (sscanf(line, want, &e->id) != 1) {
        fprintf(stderr, "kvpool demo: the %s engine did not start\n", role);
        engine_stop(e);
        return -1;
    }
    return 0;
}

/* Send one job and its plan; read the result. */
static int engine_job(const engine_proc_t *e, const kv_engine_job_t *job,
                      const kvp_key_t *keys, const kvp_plan_t *plan,
                      kv_engine_result_t *res)
{
    if (kv_engine_write(e->to, job, sizeof(*job)) != 0 ||
        kv_engine_write(e->to, keys, job->n_keys * sizeof(*keys)) != 0 ||
        kv_engine_write(e->to, plan, sizeof(*plan)) != 0 ||
        kv_engine_read(e->from, res, sizeof(*res)) != 1 || res->id != job->id) {
        fprintf(stderr, "kvpool demo: lost an engine\n");
        return -1;
    }
    return 0;
}

/* One request through Schedule, prefill and decode. */
static int run_request(kvp_client_h client, const char *ns, const kv_request_t *req,
                       uint64_t id, const engine_proc_t *pre, const engine_proc_t *dec,
                       disagg_counts_t *c)
{
    kv_engine_job_t    job = {KV_ENGINE_JOB_MAGIC, 0, id, req->input_tokens,
                              req->output_tokens};
    kv_engine_result_t res;
    kvp_plan_t         plan, handover;
    kvp_status_t       status;

    job.n_keys = (uint32_t)KV_MIN(req->num_keys, (size_t)KVP_BATCH_MAX);
    if (job.n_keys == 0) {
        return 0;
    }
    status = kvp_schedule(client, ns, req->keys, job.n_keys, req->input_tokens,
                          req->output_tokens, &plan);
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool demo: Schedule: %s\n", kvp_status_string(status));
        return -1;
    }
    if (plan.prefill_id != pre->id || plan.decode_id != dec->id) {
        fprintf(stderr,
                "kvpool demo: Schedule chose instances %u and %u, not the "
                "engines %u and %u\n",
                plan.prefill_id, plan.decode_id, pre->id, dec->id);
        return -1;
    }
    c->requests++;
    c->blocks += job.n_keys;
    c->est_ttft += plan.ttft_s;
    if (engine_job(pre, &job, req->keys, &plan, &res) != 0) {
        return -1;
    }
    c->loaded += res.loaded;
    c->computed += res.computed;
    c->mismatches += res.mismatches;
    c->errors += res.status != KVP_OK;
    if (kvp_plan_handover(&plan, res.loaded, job.n_keys, &handover) != KVP_OK ||
        engine_job(dec, &job, req->keys, &handover, &res) != 0) {
        return -1;
    }
    c->decoded += res.loaded;
    c->missing += res.missing;
    c->mismatches += res.mismatches;
    c->errors += res.status != KVP_OK;
    return 0;
}

static void report(const disagg_counts_t *c, double seconds, int json)
{
    double hit = c->blocks ? (double)c->loaded / (double)c->blocks : 0;

    printf("requests    %llu\n", (unsigned long long)c->requests);
    printf("prefill     %llu blocks: %llu loaded as the plans said, %llu computed "
           "(hit ratio %.4f)\n",
           (unsigned long long)c->blocks, (unsigned long long)c->loaded,
           (unsigned long long)c->computed, hit);
    printf("decode      %llu blocks loaded and checked, %llu missing\n",
           (unsigned long long)c->decoded, (unsigned long long)c->missing);
    printf("plans       estimated TTFT %.3f s on average (the cost model's)\n",
           c->requests ? c->est_ttft / (double)c->requests : 0);
    printf("mismatches  %llu\nerrors      %llu\nseconds     %.2f\n",
           (unsigned long long)c->mismatches, (unsigned long long)c->errors, seconds);
    if (json) {
        printf("{\"mode\":\"disaggregated\",\"requests\":%llu,\"blocks\":%llu,"
               "\"loaded_blocks\":%llu,\"computed_blocks\":%llu,\"hit_ratio\":%.6f,"
               "\"decoded_blocks\":%llu,\"missing\":%llu,\"mismatches\":%llu,"
               "\"errors\":%llu,\"est_ttft_mean_s\":%.6f,\"seconds\":%.3f}\n",
               (unsigned long long)c->requests, (unsigned long long)c->blocks,
               (unsigned long long)c->loaded, (unsigned long long)c->computed, hit,
               (unsigned long long)c->decoded, (unsigned long long)c->missing,
               (unsigned long long)c->mismatches, (unsigned long long)c->errors,
               c->requests ? c->est_ttft / (double)c->requests : 0, seconds);
    }
    fflush(stdout);
}

int kv_cli_demo_disagg(int argc, char **argv)
{
    static const struct option options[] = {
        {"disaggregated", no_argument, NULL, 'D'},
        {"trace", required_argument, NULL, 'T'},
        {"requests", required_argument, NULL, 'r'},
        {"block-size", required_argument, NULL, 'b'},
        {"memory", required_argument, NULL, 'm'},
        {"seed", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"serve", no_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    kv_workload_params_t wparams = {0};
    kv_cli_pool_t        pool    = {0};
    engine_proc_t        pre = {0}, dec = {0};
    disagg_counts_t      c      = {0};
    kv_cli_conn_t        conn   = {NULL, "demo", getenv("KVPOOL_TOKEN")};
    kvp_client_h         client = NULL;
    kv_workload_t       *workload;
    kv_request_t         req;
    const char          *trace = NULL, *memory = "1GiB", *block_size = "64KiB";
    uint64_t             max_requests = 0, size, start;
    char                 err[512];
    int                  json = 0, serve = 0, opt, rc = 1;
    kvp_status_t         status;

    wparams.seed         = 1;
    wparams.block_tokens = 512; /* the coordinator's default block_tokens */
    optind               = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'D':
            break;
        case 'T':
            trace = optarg;
            break;
        case 'm':
            memory = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'S':
            serve = 1;
            break;
        case 's':
            wparams.seed = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            max_requests = strtoull(optarg, NULL, 10);
            if (max_requests == 0) {
                fprintf(stderr, "kvpool demo: --requests must be at least 1\n");
                return 2;
            }
            break;
        case 'b':
            if (kv_size_parse(optarg, &size) != KVP_OK || size == 0 ||
                size > KVP_BLOCK_MAX) {
                fprintf(stderr, "kvpool demo: bad --block-size '%s'\n", optarg);
                return 2;
            }
            block_size = optarg;
            break;
        default:
            return 2;
        }
    }
    if (max_requests == 0) {
        max_requests = trace ? UINT64_MAX : 500;
    }
    if (trace != NULL
            ? kv_workload_trace_open(trace, &workload, err, sizeof(err)) != KVP_OK
            : kv_workload_generator_create(&wparams, &workload) != KVP_OK) {
        fprintf(stderr, "kvpool demo: %s\n", trace ? err : "cannot start the generator");
        return 1;
    }
    if (kv_cli_pool_start(&pool, 2, memory) != 0) {
        goto out_workload;
    }
    conn.node = pool.address;
    if (kv_cli_connect(&conn, &client) != KVP_OK ||
        kv_cli_pool_wait_joined(client, 2) != KVP_OK ||
        engine_start(&pre, pool.address, "prefill", "prefill-1", pool.node_addresses[0],
                     block_size) != 0 ||
        engine_start(&dec, pool.address, "decode", "decode-1", pool.node_addresses[1],
                     block_size) != 0) {
        goto out;
    }
    printf(
        "kvpool demo: coordinator %s, nodes %s and %s, prefill engine (instance %u) "
        "beside the first, decode engine (instance %u) beside the second, workload %s\n",
        pool.address, pool.node_addresses[0], pool.node_addresses[1], pre.id, dec.id,
        trace ? trace : "built-in conversations");
    printf("kvpool demo: dashboard http://%s/dashboard (live while the demo runs; "
           "--serve keeps it up after)\n",
           pool.http);
    fflush(stdout);
    start = kv_time_ns();
    while (c.requests < max_requests) {
        status = kv_workload_next(workload, &req);
        if (status == KVP_ERR_NOT_FOUND) {
            break;
        }
        if (status != KVP_OK) {
            fprintf(stderr, "kvpool demo: %s\n", kv_workload_error(workload));
            goto out;
        }
        if (run_request(client, conn.ns, &req, c.requests + 1, &pre, &dec, &c) != 0) {
            goto out;
        }
    }
    report(&c, (double)(kv_time_ns() - start) / 1e9, json);
    rc = c.mismatches == 0 && c.missing == 0 && c.errors == 0 ? 0 : 1;
    if (serve) {
        kv_cli_pool_serve(&pool);
    }
out:
    engine_stop(&pre);
    engine_stop(&dec);
    kvp_client_disconnect(client);
    kv_cli_pool_stop(&pool);
out_workload:
    kv_workload_destroy(workload);
    return rc;
}
