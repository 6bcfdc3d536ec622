/*
 * kvpool-node: the pool node daemon.
 *
 *   kvpool-node [--config FILE] [--port P] [--memory SIZE] [--listen ADDR]
 *               [--token T] [--name N] [--log-level L]
 *               [--shared-memory on|off] [--lease-ms MS] [--data-plane ucx|off]
 *               [--eviction-policy NAME] [--coord HOST:PORT]
 *               [--ssd-dir DIR --ssd-size SIZE] [--http-port P|off]
 *               [--advertise HOST:PORT]
 *
 * Flags override the config file.  Once it serves, the node prints
 * "kvpool-node listening on ADDR:PORT" on stdout (tests and the demo read
 * the port from it when started with --port 0).  SIGTERM or SIGINT stops it
 * cleanly: connections are closed and the arena is released.
 */
#include "node.h"

#include <kv/log.h>
#include <kv/service.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvpool-node [--config FILE] [--port P] [--memory SIZE]\n"
            "                   [--listen ADDR] [--token TOKEN] [--name NAME]\n"
            "                   [--log-level error|warn|info|debug]\n"
            "                   [--shared-memory on|off] [--lease-ms MS]\n"
            "                   [--data-plane ucx|off] [--eviction-policy NAME]\n"
            "                   [--coord HOST:PORT] [--advertise HOST:PORT]\n"
            "                   [--ssd-dir DIR --ssd-size SIZE] [--http-port P|off]\n"
            "Defaults: port %d, memory 256MiB, listen 127.0.0.1, no token\n"
            "(without a token only loopback addresses may be used), eviction\n"
            "policy %s (kvpool replay --list-policies lists them), no coordinator,\n"
            "no SSD tier (with one, blocks are demoted to DIR instead of dropped).\n",
            KV_NODE_DEFAULT_PORT, KV_EVICT_DEFAULT_POLICY);
}

static void on_tick(void *arg)
{
    kv_node_tick(arg);
    kv_service_watchdog();
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"memory", required_argument, NULL, 'm'},
        {"listen", required_argument, NULL, 'l'},
        {"token", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'L'},
        {"shared-memory", required_argument, NULL, 'S'},
        {"lease-ms", required_argument, NULL, 'E'},
        {"data-plane", required_argument, NULL, 'D'},
        {"eviction-policy", required_argument, NULL, 'P'},
        {"coord", required_argument, NULL, 'C'},
        {"advertise", required_argument, NULL, 'A'},
        {"ssd-dir", required_argument, NULL, 's'},
        {"ssd-size", required_argument, NULL, 'z'},
        {"http-port", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *keys[128] = {
        ['p'] = "port", ['m'] = "memory", ['l'] = "listen",
        ['t'] = "token", ['n'] = "name", ['L'] = "log_level",
        ['S'] = "shared_memory", ['E'] = "lease_ms", ['D'] = "data_plane",
        ['P'] = "eviction_policy",
        ['C'] = "coordinator", ['A'] = "advertise",
        ['s'] = "ssd_dir", ['z'] = "ssd_size", ['H'] = "http_port",
    };
    kv_node_config_t config;
    const char      *config_path = NULL;
    const char      *flag_values[128] = {0};
    char             err[512];
    kv_evloop_t     *loop;
    kv_node_t       *node;
    int              opt, rc = 1;

    kv_node_config_defaults(&config);
    while ((opt = getopt_long(argc, argv, "c:p:m:l:t:n:L:S:E:D:P:C:A:s:z:H:h", options,
                              NULL)) != -1) {
        if (opt == 'c') {
            config_path = optarg;
        } else if (opt == 'h') {
            usage(stdout);
            return 0;
        } else if (opt > 0 && opt < 128 && keys[opt] != NULL) {
            flag_values[opt] = optarg;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvpool-node: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (config_path != NULL &&
        kv_node_config_load(&config, config_path, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool-node: %s\n", err);
        return 2;
    }
    for (int i = 0; i < 128; i++) {
        if (flag_values[i] != NULL &&
            kv_node_config_set(&config, keys[i], flag_values[i], err, sizeof(err)) !=
                KVP_OK) {
            fprintf(stderr, "kvpool-node: --%s: %s\n", keys[i], err);
            return 2;
        }
    }
    kv_log_to_stderr(config.log_level, "kvpool-node");

    if (kv_evloop_create(&loop) != KVP_OK) {
        fprintf(stderr, "kvpool-node: cannot set up the event loop\n");
        return 1;
    }
    if (kv_evloop_stop_on_signals(loop) != KVP_OK) {
        fprintf(stderr, "kvpool-node: cannot watch for signals\n");
        goto out_loop;
    }
    if (kv_node_create(loop, &config, &node) != KVP_OK) {
        fprintf(stderr, "kvpool-node: cannot start (see the log above)\n");
        goto out_loop;
    }
    kv_evloop_set_tick(loop, 1000, on_tick, node);
    kv_log_info("serving %s:%u with %llu bytes of host memory", config.listen,
                kv_node_port(node), (unsigned long long)config.memory);
    kv_service_announce("kvpool-node", config.listen, kv_node_port(node),
                        kv_node_http_port(node));
    rc = kv_evloop_run(loop) == KVP_OK ? 0 : 1;
    kv_service_stopping();
    kv_node_destroy(node);
    kv_log_info("stopped");
out_loop:
    kv_evloop_destroy(loop);
    return rc;
}
