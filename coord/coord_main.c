/*
 * kvpool-coord: the coordinator daemon.
 *
 *   kvpool-coord [--config FILE] [--port P] [--listen ADDR] [--token T]
 *                [--lease-ms MS] [--log-level L] [--max-nodes N] [--http-port P]
 *
 * Flags override the config file.  Once it serves, the coordinator prints
 * "kvpool-coord listening on ADDR:PORT" on stdout (tests read the port
 * from it when started with --port 0).  SIGTERM or SIGINT stops it
 * cleanly.
 */
#include "coord.h"

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
            "usage: kvpool-coord [--config FILE] [--port P] [--listen ADDR]\n"
            "                    [--token TOKEN] [--lease-ms MS] [--max-nodes N]\n"
            "                    [--max-instances N] [--scheduler-policy NAME]\n"
            "                    [--http-port P|off] [--log-level error|warn|info|debug]\n"
            "Defaults: port %d, listen 127.0.0.1, no token, lease %d ms,\n"
            "%d nodes, %d instances, policy %s (without a token only loopback\n"
            "addresses may be used).  The cost model's keys are set in the file.\n",
            KV_COORD_DEFAULT_PORT, KV_COORD_DEFAULT_LEASE_MS,
            KV_COORD_DEFAULT_MAX_NODES, KV_COORD_DEFAULT_MAX_INSTANCES,
            kv_sched_policy_name(KV_SCHED_DEFAULT_POLICY));
}

static void on_tick(void *arg)
{
    kv_coord_tick(arg);
    kv_service_watchdog();
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"listen", required_argument, NULL, 'l'},
        {"token", required_argument, NULL, 't'},
        {"lease-ms", required_argument, NULL, 'E'},
        {"log-level", required_argument, NULL, 'L'},
        {"max-nodes", required_argument, NULL, 'N'},
        {"max-instances", required_argument, NULL, 'I'},
        {"scheduler-policy", required_argument, NULL, 'S'},
        {"http-port", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *keys[128] = {
        ['p'] = "port",     ['l'] = "listen",    ['t'] = "token",
        ['E'] = "lease_ms", ['L'] = "log_level", ['N'] = "max_nodes",
        ['I'] = "max_instances", ['S'] = "scheduler_policy", ['H'] = "http_port",
    };
    kv_coord_config_t config;
    const char       *config_path = NULL;
    const char       *flag_values[128] = {0};
    char              err[512];
    kv_evloop_t      *loop;
    kv_coord_t       *coord;
    int               opt, rc = 1;

    kv_coord_config_defaults(&config);
    while ((opt = getopt_long(argc, argv, "c:p:l:t:E:L:N:I:S:H:h", options, NULL)) != -1) {
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
        fprintf(stderr, "kvpool-coord: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (config_path != NULL &&
        kv_coord_config_load(&config, config_path, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool-coord: %s\n", err);
        return 2;
    }
    for (int i = 0; i < 128; i++) {
        if (flag_values[i] != NULL &&
            kv_coord_config_set(&config, keys[i], flag_values[i], err, sizeof(err)) !=
                KVP_OK) {
            fprintf(stderr, "kvpool-coord: --%s: %s\n", keys[i], err);
            return 2;
        }
    }
    kv_log_to_stderr(config.log_level, "kvpool-coord");

    if (kv_evloop_create(&loop) != KVP_OK) {
        fprintf(stderr, "kvpool-coord: cannot set up the event loop\n");
        return 1;
    }
    if (kv_evloop_stop_on_signals(loop) != KVP_OK) {
        fprintf(stderr, "kvpool-coord: cannot watch for signals\n");
        goto out_loop;
    }
    if (kv_coord_create(loop, &config, &coord) != KVP_OK) {
        fprintf(stderr, "kvpool-coord: cannot start (see the log above)\n");
        goto out_loop;
    }
    kv_evloop_set_tick(loop, kv_coord_tick_ms(coord), on_tick, coord);
    kv_log_info("serving %s:%u, node lease %u ms", config.listen, kv_coord_port(coord),
                config.lease_ms);
    if (kv_coord_http_port(coord) != 0) {
        kv_log_info("dashboard: http://%s:%u/dashboard", config.listen,
                    kv_coord_http_port(coord));
    }
    kv_service_announce("kvpool-coord", config.listen, kv_coord_port(coord),
                        kv_coord_http_port(coord));
    rc = kv_evloop_run(loop) == KVP_OK ? 0 : 1;
    kv_service_stopping();
    kv_coord_destroy(coord);
    kv_log_info("stopped");
out_loop:
    kv_evloop_destroy(loop);
    return rc;
}
