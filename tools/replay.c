/*
 * kvpool replay: how much of a trace's prompts a cache would hold.
 *
 *   kvpool replay TRACE --offline --capacity-blocks N|unlimited
 *                 [--policy NAME] [--requests N] [--json] [--progress]
 *   kvpool replay TRACE --coord HOST:PORT [--block-size SIZE] [--requests N]
 *                 [--time-scale X] [--threads N] [--json] [--progress]
 *   kvpool replay --list-policies
 *
 * Both modes read the trace (a Mooncake-format JSONL file, workload.h) one
 * request at a time, ask how long a prefix of its block chain is cached,
 * count it, and then store the whole chain, as an engine saves the blocks
 * it computed.  Hit ratio = blocks in the cached prefix / blocks requested;
 * token hit ratio = tokens in the cached prefix (min(matched * 512,
 * input_length)) / input tokens.
 *
 * Offline, one process drives the real code with no network: the prefix
 * index (<kvcoord/prefix_index.h>, one pool node, host tier) answers the
 * longest cached prefix and records every stored and evicted block, and
 * an eviction policy (<kvstore/evict.h>) picks the victims whenever more
 * than --capacity-blocks blocks are stored.  Each request's blocks are
 * used in chain order: the cached ones are touched, the others inserted
 * (a block's parent is the block before it), each insertion evicting as
 * needed.  The policy's clock is the trace's timestamp (ms), and a
 * request's last block is flagged partial (KV_EVICT_PARTIAL) when the
 * prompt does not fill it (input_length < blocks * 512), as a node would
 * see from its size.  This file also holds what both modes share: the options, the
 * counting and the summary; the live mode is kv_cli_replay_live().
 */
#include "cache_model.h"
#include "cli.h"
#include "workload.h"

#include <kv/util.h>
#include <kvcoord/prefix_index.h>
#include <kvstore/evict.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/** Largest --capacity-blocks and --requests accepted. */
#define REPLAY_COUNT_MAX 1000000000000ull

/** Requests between two progress lines. */
#define REPLAY_PROGRESS_EVERY 1000

/** Where the offline replay stores blocks: node 1, tier host (kvpool.Tier 0). */
#define REPLAY_LOC KV_LOC(1, 0)

/* ---- shared by both modes ----------------------------------------------- */

static void replay_usage(FILE *out)
{
    fprintf(out,
            "usage: kvpool replay TRACE --offline --capacity-blocks N|unlimited\n"
            "                     [--policy NAME] [--requests N] [--json] [--progress]\n"
            "       kvpool replay TRACE --coord HOST:PORT [--block-size SIZE]\n"
            "                     [--requests N] [--time-scale X] [--threads N]\n"
            "                     [--ns NAMESPACE] [--token TOKEN] [--json] [--progress]\n"
            "       kvpool replay --list-policies\n"
            "--capacity-blocks 0 or unlimited: no limit.  Policies: kvpool replay\n"
            "--list-policies (default %s).\n",
            KV_EVICT_DEFAULT_POLICY);
}

static void print_policy_names(FILE *out, const char *sep)
{
    const char *const *names = kv_evict_policy_names();

    for (size_t i = 0; names[i] != NULL; i++) {
        fprintf(out, "%s%s", i > 0 ? sep : "", names[i]);
    }
}

void kv_cli_replay_count(kv_cli_replay_result_t *result, uint64_t input_tokens,
                         uint64_t blocks, uint64_t matched)
{
    result->requests++;
    result->blocks += blocks;
    result->hit_blocks += matched;
    result->input_tokens += input_tokens;
    result->hit_tokens += KV_MIN(matched * KV_CLI_REPLAY_BLOCK_TOKENS, input_tokens);
}

static double ratio(uint64_t part, uint64_t whole)
{
    return whole > 0 ? (double)part / (double)whole : 0.0;
}

static double gbps(uint64_t bytes, double seconds)
{
    return seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0;
}

void kv_cli_replay_progress(const kv_cli_replay_result_t *result, double seconds)
{
    fprintf(stderr, "  %9llu requests  %10llu blocks  hit %.4f  token hit %.4f  %.0f req/s\n",
            (unsigned long long)result->requests, (unsigned long long)result->blocks,
            ratio(result->hit_blocks, result->blocks),
            ratio(result->hit_tokens, result->input_tokens),
            seconds > 0 ? (double)result->requests / seconds : 0.0);
}

void kv_cli_replay_report(const kv_cli_replay_opts_t *opts,
                          const kv_cli_replay_result_t *r)
{
    char capacity[32];

    if (r->capacity_blocks == 0) {
        snprintf(capacity, sizeof(capacity), "unlimited");
    } else {
        snprintf(capacity, sizeof(capacity), "%llu",
                 (unsigned long long)r->capacity_blocks);
    }
    printf("requests         %llu\n", (unsigned long long)r->requests);
    printf("blocks           %llu\n", (unsigned long long)r->blocks);
    printf("hits             %llu\n", (unsigned long long)r->hit_blocks);
    printf("hit_ratio        %.4f\n", ratio(r->hit_blocks, r->blocks));
    printf("token_hit_ratio  %.4f\n", ratio(r->hit_tokens, r->input_tokens));
    printf("policy           %s\n", r->policy);
    printf("capacity_blocks  %s\n", capacity);
    printf("evictions        %llu\n", (unsigned long long)r->evictions);
    printf("seconds          %.3f\n", r->seconds);
    if (r->live != NULL) {
        const kv_cli_replay_live_result_t *l = r->live;
        printf("moved            %.3f GB: %.3f GB/s\n", (double)l->bytes / 1e9,
               gbps(l->bytes, r->seconds));
        printf("get_us           p50 %llu p99 %llu\n", (unsigned long long)l->get_p50_us,
               (unsigned long long)l->get_p99_us);
        printf("put_us           p50 %llu p99 %llu\n", (unsigned long long)l->put_p50_us,
               (unsigned long long)l->put_p99_us);
        printf("errors           %llu\n", (unsigned long long)l->errors);
    }
    if (opts->json) {
        printf("{\"mode\":\"%s\",\"requests\":%llu,\"blocks\":%llu,\"hit_blocks\":%llu,"
               "\"hit_ratio\":%.6f,\"input_tokens\":%llu,\"hit_tokens\":%llu,"
               "\"token_hit_ratio\":%.6f,\"policy\":\"%s\",\"capacity_blocks\":%llu,"
               "\"evictions\":%llu,\"seconds\":%.3f",
               r->live != NULL ? "live" : "offline",
               (unsigned long long)r->requests, (unsigned long long)r->blocks,
               (unsigned long long)r->hit_blocks, ratio(r->hit_blocks, r->blocks),
               (unsigned long long)r->input_tokens, (unsigned long long)r->hit_tokens,
               ratio(r->hit_tokens, r->input_tokens), r->policy,
               (unsigned long long)r->capacity_blocks,
               (unsigned long long)r->evictions, r->seconds);
        if (r->live != NULL) {
            const kv_cli_replay_live_result_t *l = r->live;
            printf(",\"block_size\":%llu,\"bytes\":%llu,\"gbps\":%.4f,"
                   "\"get_p50_us\":%llu,\"get_p99_us\":%llu,\"put_p50_us\":%llu,"
                   "\"put_p99_us\":%llu,\"errors\":%llu",
                   (unsigned long long)l->block_size, (unsigned long long)l->bytes,
                   gbps(l->bytes, r->seconds), (unsigned long long)l->get_p50_us,
                   (unsigned long long)l->get_p99_us, (unsigned long long)l->put_p50_us,
                   (unsigned long long)l->put_p99_us, (unsigned long long)l->errors);
        }
        printf("}\n");
    }
    fflush(stdout);
}

/* ---- the offline mode ---------------------------------------------------- */

typedef struct offline {
    kv_prefix_index_t *index;
    uint32_t           ns;
    kv_cache_model_t  *store;
} offline_t;

/* One request: count its cached prefix, then use every block of it. */
static kvp_status_t offline_request(offline_t *off, const kv_request_t *req,
                                    kv_cli_replay_result_t *result)
{
    size_t matched = kv_index_match(off->index, off->ns, req->keys, req->num_keys);
    int    partial = (uint64_t)req->input_tokens <
                     (uint64_t)req->num_keys * KV_CLI_REPLAY_BLOCK_TOKENS;

    kv_cli_replay_count(result, req->input_tokens, req->num_keys, matched);
    kv_cache_model_set_time(off->store, req->timestamp_ms);
    return kv_cache_model_use(off->store, req->keys, req->num_keys, partial);
}

static void offline_cleanup(offline_t *off)
{
    kv_cache_model_destroy(off->store);
    kv_index_destroy(off->index);
}

static int replay_offline(const kv_cli_replay_opts_t *opts)
{
    kv_cli_replay_result_t result = {0};
    offline_t              off    = {0};
    kv_workload_t         *workload;
    kv_request_t           req;
    kvp_status_t           status;
    char                   err[512];
    uint64_t               start;
    int                    rc = 1;

    if (kv_workload_trace_open(opts->trace, &workload, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool replay: %s\n", err);
        return 1;
    }
    if (kv_index_create(0, &off.index) != KVP_OK ||
        kv_index_ns_id(off.index, "replay", 6, 1, &off.ns) != KVP_OK ||
        kv_cache_model_create(off.index, off.ns, REPLAY_LOC, opts->policy,
                              opts->capacity_blocks, &off.store) != KVP_OK) {
        fprintf(stderr, "kvpool replay: cannot set up the index and the policy\n");
        goto out;
    }
    result.policy          = kv_cache_model_policy(off.store);
    result.capacity_blocks = opts->capacity_blocks;

    start = kv_time_ns();
    while (opts->max_requests == 0 || result.requests < opts->max_requests) {
        status = kv_workload_next(workload, &req);
        if (status == KVP_ERR_NOT_FOUND) {
            break;
        }
        if (status != KVP_OK) {
            fprintf(stderr, "kvpool replay: %s\n", kv_workload_error(workload));
            goto out;
        }
        if (req.num_keys > KV_INDEX_MAX_CHAIN) {
            fprintf(stderr,
                    "kvpool replay: %s: request %llu has %zu blocks; the index "
                    "matches chains of at most %d\n",
                    opts->trace, (unsigned long long)result.requests + 1,
                    req.num_keys, KV_INDEX_MAX_CHAIN);
            goto out;
        }
        status = offline_request(&off, &req, &result);
        if (status != KVP_OK) {
            fprintf(stderr, "kvpool replay: the index refused a block: %s\n",
                    kvp_status_string(status));
            goto out;
        }
        if (opts->progress && result.requests % REPLAY_PROGRESS_EVERY == 0) {
            kv_cli_replay_progress(&result, (double)(kv_time_ns() - start) / 1e9);
        }
    }
    result.evictions = kv_cache_model_evictions(off.store);
    result.seconds   = (double)(kv_time_ns() - start) / 1e9;
    kv_cli_replay_report(opts, &result);
    rc = 0;
out:
    offline_cleanup(&off);
    kv_workload_destroy(workload);
    return rc;
}

/* ---- the command --------------------------------------------------------- */

int kv_cli_replay(int argc, char **argv)
{
    static const struct option options[] = {
        {"offline", no_argument, NULL, 'o'},
        {"capacity-blocks", required_argument, NULL, 'c'},
        {"policy", required_argument, NULL, 'p'},
        {"requests", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"progress", no_argument, NULL, 'P'},
        {"coord", required_argument, NULL, 'C'},
        {"block-size", required_argument, NULL, 'b'},
        {"time-scale", required_argument, NULL, 'x'},
        {"threads", required_argument, NULL, 'w'},
        {"ns", required_argument, NULL, 's'},
        {"token", required_argument, NULL, 't'},
        {"list-policies", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kv_cli_replay_opts_t opts = {0};
    int                  opt, list = 0, have_capacity = 0;
    char                *end;

    opts.progress   = isatty(STDERR_FILENO);
    opts.block_size = 64 << 10;
    opts.threads    = 4;
    opts.ns         = "replay";
    opts.token      = getenv("KVPOOL_TOKEN");
    optind          = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'o': opts.offline = 1; break;
        case 'j': opts.json = 1; break;
        case 'P': opts.progress = 1; break;
        case 'l': list = 1; break;
        case 'C': opts.coord = optarg; break;
        case 's': opts.ns = optarg; break;
        case 't': opts.token = optarg; break;
        case 'x':
            opts.time_scale = strtod(optarg, &end);
            if (*end != '\0' || !(opts.time_scale > 0 && opts.time_scale < 1e9)) {
                fprintf(stderr, "kvpool replay: --time-scale must be a number > 0, "
                        "not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'w':
            opts.threads = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opts.threads < 1 || opts.threads > KV_CLI_REPLAY_THREADS_MAX) {
                fprintf(stderr, "kvpool replay: --threads must be 1..%d, not '%s'\n",
                        KV_CLI_REPLAY_THREADS_MAX, optarg);
                return 2;
            }
            break;
        case 'h': replay_usage(stdout); return 0;
        case 'c':
            have_capacity = 1;
            if (strcmp(optarg, "unlimited") == 0) {
                opts.capacity_blocks = 0;
            } else if (!kv_cli_parse_u64("replay", "--capacity-blocks", optarg,
                                         0, REPLAY_COUNT_MAX, &opts.capacity_blocks)) {
                return 2;
            }
            break;
        case 'r':
            if (!kv_cli_parse_u64("replay", "--requests", optarg,
                                  0, REPLAY_COUNT_MAX, &opts.max_requests)) {
                return 2;
            }
            if (opts.max_requests == 0) {
                fprintf(stderr, "kvpool replay: --requests must be at least 1\n");
                return 2;
            }
            break;
        case 'p':
            if (!kv_evict_policy_known(optarg)) {
                fprintf(stderr, "kvpool replay: unknown policy '%s'; the policies are ",
                        optarg);
                print_policy_names(stderr, ", ");
                fprintf(stderr, "\n");
                return 2;
            }
            opts.policy = optarg;
            break;
        case 'b':
            if (kv_size_parse(optarg, &opts.block_size) != KVP_OK ||
                opts.block_size == 0 || opts.block_size > KVP_BLOCK_MAX) {
                fprintf(stderr, "kvpool replay: --block-size must be 1..%llu bytes, "
                        "not '%s'\n", (unsigned long long)KVP_BLOCK_MAX, optarg);
                return 2;
            }
            break;
        default:
            replay_usage(stderr);
            return 2;
        }
    }
    if (list) {
        print_policy_names(stdout, "\n");
        printf("\n");
        return 0;
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "kvpool replay: %s\n",
                optind == argc ? "name a trace file" : "one trace file only");
        replay_usage(stderr);
        return 2;
    }
    opts.trace = argv[optind];
    if (opts.offline && opts.coord != NULL) {
        fprintf(stderr, "kvpool replay: --offline and --coord exclude each other\n");
        return 2;
    }
    if (!opts.offline && (have_capacity || opts.policy != NULL)) {
        fprintf(stderr, "kvpool replay: --capacity-blocks and --policy are for "
                        "--offline (the nodes' own policy and memory rule live)\n");
        return 2;
    }
    if (opts.offline && !have_capacity) {
        fprintf(stderr, "kvpool replay: --offline needs --capacity-blocks N "
                        "(0 or unlimited: no limit)\n");
        return 2;
    }
    return opts.offline ? replay_offline(&opts) : kv_cli_replay_live(&opts);
}
