/*
 * kvpool: the command line.
 *
 *   kvpool put    --node HOST:PORT --key NAME FILE
 *   kvpool get    --node HOST:PORT --key NAME OUT
 *   kvpool exists --node HOST:PORT --key NAME [--key NAME...]
 *   kvpool delete --node HOST:PORT --key NAME [--key NAME...]
 *   kvpool stat   --node HOST:PORT
 *   kvpool stat   --coord HOST:PORT [--json]   (the coordinator's counters)
 *   kvpool demo   [--trace FILE] [--requests N] [--json] ...
 *   kvpool bench  [--node HOST:PORT] --block-size SIZE --blocks N ...
 *   kvpool bench-index [--blocks N] [--json]
 *   kvpool bench-index --rpc [--coord HOST:PORT] [--threads N] [--seconds S] ...
 *   kvpool replay TRACE --offline --capacity-blocks N [--policy NAME] [--json]
 *   kvpool replay TRACE --coord HOST:PORT [--block-size SIZE] [--json] ...
 *   kvpool bench-sched [--blocks N] [--instances N] [--seconds S] [--policy NAME]
 *   kvpool simulate TRACE [--prefill N] [--decode M] [--policy NAME|all] ...
 *   kvpool gen-trace [--requests N] [--seed S] ... > TRACE
 *   kvpool engine --coord HOST:PORT --role prefill|decode --name NAME ...
 *
 * NAME is any string; its XXH3-128 is the block key.  Exit status 0 on
 * success, 1 with a one-line reason on stderr otherwise, 2 for bad usage.
 */
#include "cli.h"

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_KEYS 1024

/* `kvpool stat --coord ...` (stat_coord.c); returns the exit status. */
int kv_cli_stat_coord(int argc, char **argv);

typedef struct {
    kv_cli_conn_t conn;
    kvp_key_t     keys[MAX_KEYS];
    const char   *names[MAX_KEYS];
    size_t        num_keys;
    int           json;
} cli_args_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvpool put    --node HOST:PORT --key NAME FILE\n"
            "       kvpool get    --node HOST:PORT --key NAME OUT\n"
            "       kvpool exists --node HOST:PORT --key NAME [--key NAME...]\n"
            "       kvpool delete --node HOST:PORT --key NAME [--key NAME...]\n"
            "       kvpool stat   --node HOST:PORT [--json]\n"
            "       kvpool stat   --coord HOST:PORT [--json]\n"
            "       kvpool demo   [--trace FILE] [--requests N] [--json]\n"
            "                     [--block-size SIZE] [--memory SIZE] [--threads N]\n"
            "                     [--seed N] [--nodes N] [--node HOST:PORT] [--serve]\n"
            "       kvpool bench  [--node HOST:PORT] [--block-size SIZE] [--blocks N]\n"
            "                     [--batch B] [--op put|get] [--transport T] [--json]\n"
            "       kvpool bench-index [--blocks N] [--json]\n"
            "       kvpool bench-index --rpc [--coord HOST:PORT] [--threads N]\n"
            "                     [--seconds S] [--chain-len L] [--chains C]\n"
            "                     [--handles thread|shared] [--full-hit] [--json]\n"
            "       kvpool replay TRACE --offline --capacity-blocks N|unlimited\n"
            "                     [--policy NAME] [--requests N] [--json] [--progress]\n"
            "       kvpool replay TRACE --coord HOST:PORT [--block-size SIZE]\n"
            "                     [--requests N] [--time-scale X] [--threads N] [--json]\n"
            "       kvpool replay --list-policies\n"
            "       kvpool bench-sched [--blocks N] [--instances N] [--seconds S]\n"
            "                     [--policy NAME] [--json]\n"
            "       kvpool simulate TRACE [--prefill N] [--decode M] [--policy NAME|all]\n"
            "                       [--capacity-blocks C] [--seed S] [--json] ...\n"
            "       kvpool engine --coord HOST:PORT --role prefill|decode --name NAME\n"
            "                     [--node HOST:PORT] (the disaggregated demo's engine)\n"
            "       kvpool gen-trace [--requests N] [--seed S] [--conversations C]\n"
            "                        [--system-prompts P] > TRACE\n"
            "common options: --ns NAMESPACE (default \"default\"), --token TOKEN\n"
            "(or $KVPOOL_TOKEN)\n");
}

kvp_status_t kv_cli_connect(const kv_cli_conn_t *conn, kvp_client_h *client_p)
{
    kvp_client_params_t params = {0};
    kvp_status_t        status;

    if (conn->token != NULL) {
        params.field_mask |= KVP_CLIENT_PARAM_TOKEN;
        params.token = conn->token;
    }
    params.field_mask |= KVP_CLIENT_PARAM_NAME;
    params.name = "kvpool-cli";
    status      = kvp_client_connect(conn->node, &params, client_p);
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool: cannot connect to %s: %s\n", conn->node,
                kvp_status_string(status));
    }
    return status;
}

/* Parse the options shared by put/get/exists/delete/stat. */
static int parse_args(int argc, char **argv, cli_args_t *args)
{
    static const struct option options[] = {
        {"node", required_argument, NULL, 'n'},
        {"key", required_argument, NULL, 'k'},
        {"ns", required_argument, NULL, 's'},
        {"token", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    args->conn.ns    = "default";
    args->conn.token = getenv("KVPOOL_TOKEN");
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'n':
            args->conn.node = optarg;
            break;
        case 'k':
            if (args->num_keys == MAX_KEYS) {
                fprintf(stderr, "kvpool: at most %d keys\n", MAX_KEYS);
                return 0;
            }
            args->names[args->num_keys] = optarg;
            args->keys[args->num_keys++] = kvp_key_from_bytes(optarg, strlen(optarg));
            break;
        case 's':
            args->conn.ns = optarg;
            break;
        case 't':
            args->conn.token = optarg;
            break;
        case 'j':
            args->json = 1;
            break;
        default:
            return 0;
        }
    }
    if (args->conn.node == NULL) {
        fprintf(stderr, "kvpool: --node HOST:PORT is required\n");
        return 0;
    }
    return 1;
}

static int fail(const char *what, kvp_status_t status)
{
    fprintf(stderr, "kvpool: %s: %s\n", what, kvp_status_string(status));
    return 1;
}

static int cmd_put(kvp_client_h client, cli_args_t *args, const char *path)
{
    struct stat  st;
    FILE        *file;
    void        *data;
    kvp_status_t status;

    file = fopen(path, "rb");
    if (file == NULL || fstat(fileno(file), &st) != 0) {
        fprintf(stderr, "kvpool: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if ((uint64_t)st.st_size > KVP_BLOCK_MAX || st.st_size == 0) {
        fprintf(stderr, "kvpool: %s: a block must be 1..%llu bytes\n", path,
                (unsigned long long)KVP_BLOCK_MAX);
        fclose(file);
        return 1;
    }
    data = kv_malloc((size_t)st.st_size, "file");
    if (fread(data, 1, (size_t)st.st_size, file) != (size_t)st.st_size) {
        fprintf(stderr, "kvpool: %s: short read\n", path);
        fclose(file);
        kv_free(data);
        return 1;
    }
    fclose(file);
    status = kvp_put(client, args->conn.ns, &args->keys[0], data, (uint64_t)st.st_size);
    kv_free(data);
    return status == KVP_OK ? 0 : fail("put", status);
}

static int cmd_get(kvp_client_h client, cli_args_t *args, const char *path)
{
    uint64_t     capacity = 4u << 20, size = 0;
    void        *buf      = kv_malloc(capacity, "block");
    kvp_status_t status;
    FILE        *file;

    status = kvp_get(client, args->conn.ns, &args->keys[0], buf, capacity, &size);
    if (status == KVP_ERR_BUFFER_TOO_SMALL) {
        capacity = size;
        buf      = kv_realloc(buf, capacity, "block");
        status   = kvp_get(client, args->conn.ns, &args->keys[0], buf, capacity, &size);
    }
    if (status != KVP_OK) {
        kv_free(buf);
        return fail("get", status);
    }
    file = fopen(path, "wb");
    if (file == NULL || fwrite(buf, 1, size, file) != size || fclose(file) != 0) {
        fprintf(stderr, "kvpool: %s: %s\n", path, strerror(errno));
        kv_free(buf);
        return 1;
    }
    kv_free(buf);
    return 0;
}


static void stat_json(const kvp_stats_t *st)
{
    printf("{\"puts\":%llu,\"gets\":%llu,\"hits\":%llu,\"misses\":%llu,"
           "\"bytes_in\":%llu,\"bytes_out\":%llu,\"connections\":%llu,"
           "\"rpc_errors\":%llu,\"tiers\":{",
           (unsigned long long)st->puts, (unsigned long long)st->gets,
           (unsigned long long)st->hits, (unsigned long long)st->misses,
           (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out,
           (unsigned long long)st->connections, (unsigned long long)st->rpc_errors);
    for (int t = 0, first = 1; t < KVP_TIERS; t++) {
        const kvp_tier_stats_t *s = &st->tiers[t];
        if (s->capacity_bytes == 0) {
            continue;
        }
        printf("%s\"%s\":{\"capacity_bytes\":%llu,\"used_bytes\":%llu,\"blocks\":%llu,"
               "\"hits\":%llu,\"misses\":%llu,\"evictions\":%llu,\"demotions\":%llu,"
               "\"promotions\":%llu,\"bytes_written\":%llu,\"bytes_read\":%llu}",
               first ? "" : ",", kv_tier_name(t), (unsigned long long)s->capacity_bytes,
               (unsigned long long)s->used_bytes, (unsigned long long)s->blocks,
               (unsigned long long)s->hits, (unsigned long long)s->misses,
               (unsigned long long)s->evictions, (unsigned long long)s->demotions,
               (unsigned long long)s->promotions, (unsigned long long)s->bytes_written,
               (unsigned long long)s->bytes_read);
        first = 0;
    }
    printf("}}\n");
}

static int cmd_stat(kvp_client_h client, int json)
{
    kvp_stats_t  st;
    kvp_status_t status = kvp_stats(client, &st);
    char         cap[32], used[32], in[32], out[32];

    if (status != KVP_OK) {
        return fail("stat", status);
    }
    if (json) {
        stat_json(&st);
        return 0;
    }
    for (int t = 0; t < KVP_TIERS; t++) {
        const kvp_tier_stats_t *s = &st.tiers[t];
        if (s->capacity_bytes == 0) {
            continue;
        }
        kv_size_format(s->capacity_bytes, cap, sizeof(cap));
        kv_size_format(s->used_bytes, used, sizeof(used));
        printf("%-4s tier   %s used of %s, %llu blocks; %llu hits, %llu misses, "
               "%llu evictions\n", kv_tier_name(t), used, cap, (unsigned long long)s->blocks,
               (unsigned long long)s->hits, (unsigned long long)s->misses,
               (unsigned long long)s->evictions);
    }
    if (st.tiers[KVP_TIER_SSD].capacity_bytes != 0) {
        kv_size_format(st.tiers[KVP_TIER_SSD].bytes_written, in, sizeof(in));
        kv_size_format(st.tiers[KVP_TIER_SSD].bytes_read, out, sizeof(out));
        printf("demotions   %llu, promotions %llu (SSD: %s written, %s read)\n",
               (unsigned long long)st.tiers[KVP_TIER_SSD].demotions,
               (unsigned long long)st.tiers[KVP_TIER_SSD].promotions, in, out);
    }
    kv_size_format(st.bytes_in, in, sizeof(in));
    kv_size_format(st.bytes_out, out, sizeof(out));
    printf("puts        %llu (%s in)\n", (unsigned long long)st.puts, in);
    printf("gets        %llu: %llu hits, %llu misses (%s out)\n",
           (unsigned long long)st.gets, (unsigned long long)st.hits,
           (unsigned long long)st.misses, out);
    printf("connections %llu open, %llu rpc errors\n",
           (unsigned long long)st.connections, (unsigned long long)st.rpc_errors);
    return 0;
}

int main(int argc, char **argv)
{
    cli_args_t   args = {0};
    kvp_client_h client;
    const char  *cmd;
    int          rc, want_file, want_keys;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cmd = argv[1];
    if (strcmp(cmd, "demo") == 0) {
        return kv_cli_demo(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "bench") == 0) {
        return kv_cli_bench(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "bench-index") == 0) {
        return kv_cli_bench_index(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "bench-sched") == 0) {
        return kv_cli_bench_sched(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "engine") == 0) {
        return kv_cli_engine(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "gen-trace") == 0) {
        return kv_cli_gen_trace(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "simulate") == 0) {
        return kv_cli_simulate(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "replay") == 0) {
        return kv_cli_replay(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "stat") == 0) {
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--coord") == 0 || strncmp(argv[i], "--coord=", 8) == 0) {
                return kv_cli_stat_coord(argc - 1, argv + 1);
            }
        }
    }
    want_file = strcmp(cmd, "put") == 0 || strcmp(cmd, "get") == 0;
    want_keys = want_file || strcmp(cmd, "exists") == 0 || strcmp(cmd, "delete") == 0;
    if (!want_keys && strcmp(cmd, "stat") != 0) {
        fprintf(stderr, "kvpool: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (!parse_args(argc - 1, argv + 1, &args)) {
        usage(stderr);
        return 2;
    }
    if (want_keys && args.num_keys == 0) {
        fprintf(stderr, "kvpool: %s needs --key NAME\n", cmd);
        return 2;
    }
    if (want_file && (args.num_keys != 1 || optind + 1 != argc - 1)) {
        fprintf(stderr, "kvpool: %s needs one --key and one file\n", cmd);
        return 2;
    }
    if (kv_cli_connect(&args.conn, &client) != KVP_OK) {
        return 1;
    }
    if (strcmp(cmd, "put") == 0) {
        rc = cmd_put(client, &args, argv[optind + 1]);
    } else if (strcmp(cmd, "get") == 0) {
        rc = cmd_get(client, &args, argv[optind + 1]);
    } else if (strcmp(cmd, "exists") == 0) {
        size_t       present;
        kvp_status_t status = kvp_exists(client, args.conn.ns, args.keys,
                                         args.num_keys, &present);
        rc = status == KVP_OK ? (printf("%zu of %zu present\n", present, args.num_keys), 0)
                              : fail("exists", status);
    } else if (strcmp(cmd, "delete") == 0) {
        size_t       deleted;
        kvp_status_t status = kvp_delete(client, args.conn.ns, args.keys,
                                         args.num_keys, &deleted);
        rc = status == KVP_OK ? (printf("%zu deleted\n", deleted), 0)
                              : fail("delete", status);
    } else {
        rc = cmd_stat(client, args.json);
    }
    kvp_client_disconnect(client);
    return rc;
}
