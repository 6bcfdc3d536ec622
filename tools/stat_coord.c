/*
 * kvpool stat --coord HOST:PORT [--json]: the coordinator's own counters
 * (kvp_index_stats): the nodes registered now, the index's blocks, entries
 * and memory, the Match calls and their hit ratio, the events applied and
 * the leases that ran out.  (`kvpool stat --node COORD` sums the nodes'
 * counters instead.)
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int kv_cli_stat_coord(int argc, char **argv);

static void stat_coord_usage(void)
{
    fprintf(stderr, "usage: kvpool stat --coord HOST:PORT [--json] [--token TOKEN]\n");
}

int kv_cli_stat_coord(int argc, char **argv)
{
    static const struct option options[] = {
        {"coord", required_argument, NULL, 'c'},
        {"ns", required_argument, NULL, 's'},
        {"token", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    kv_cli_conn_t     conn = {.ns = "default", .token = getenv("KVPOOL_TOKEN")};
    kvp_index_stats_t st;
    kvp_client_h      client;
    kvp_status_t      status;
    double            ratio;
    int               opt, json = 0;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            conn.node = optarg;
            break;
        case 's':
            conn.ns = optarg;
            break;
        case 't':
            conn.token = optarg;
            break;
        case 'j':
            json = 1;
            break;
        default:
            stat_coord_usage();
            return 2;
        }
    }
    if (conn.node == NULL || optind != argc) {
        stat_coord_usage();
        return 2;
    }
    if (kv_cli_connect(&conn, &client) != KVP_OK) {
        return 1;
    }
    status = kvp_index_stats(client, &st);
    kvp_client_disconnect(client);
    if (status != KVP_OK) {
        fprintf(stderr, "kvpool: stat: %s%s\n", kvp_status_string(status),
                status == KVP_ERR_UNSUPPORTED ? " (not a coordinator?)" : "");
        return 1;
    }
    ratio = st.requested_blocks != 0 ? (double)st.matched_blocks / (double)st.requested_blocks
                                     : 0.0;
    if (json) {
        printf("{\"nodes\":%llu,\"blocks\":%llu,\"entries\":%llu,\"index_bytes\":%llu,"
               "\"matches\":%llu,\"matched_blocks\":%llu,\"requested_blocks\":%llu,"
               "\"hit_ratio\":%.6f,\"events\":%llu,\"lease_expiries\":%llu}\n",
               (unsigned long long)st.nodes, (unsigned long long)st.blocks,
               (unsigned long long)st.entries, (unsigned long long)st.index_bytes,
               (unsigned long long)st.matches, (unsigned long long)st.matched_blocks,
               (unsigned long long)st.requested_blocks, ratio,
               (unsigned long long)st.events, (unsigned long long)st.lease_expiries);
        return 0;
    }
    printf("nodes          %llu\n", (unsigned long long)st.nodes);
    printf("blocks         %llu (%llu entries, %llu bytes of index)\n",
           (unsigned long long)st.blocks, (unsigned long long)st.entries,
           (unsigned long long)st.index_bytes);
    printf("matches        %llu: %llu of %llu blocks matched (hit ratio %.4f)\n",
           (unsigned long long)st.matches, (unsigned long long)st.matched_blocks,
           (unsigned long long)st.requested_blocks, ratio);
    printf("events         %llu\n", (unsigned long long)st.events);
    printf("lease expiries %llu\n", (unsigned long long)st.lease_expiries);
    return 0;
}
