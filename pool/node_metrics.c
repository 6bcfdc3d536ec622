/*
 * node_metrics.c - the node's HTTP endpoint: /metrics in the Prometheus
 * text format and /health.
 *
 * Every family carries a `node` label, the address clients dial (as the
 * coordinator's per-node metrics do), so that a dashboard can tell nodes
 * apart and join the two without relabelling; kvpool_node_info maps it to
 * the node's name.  Counters are the node's own since it started;
 * Prometheus computes the rates.
 */
#include "block_table.h"
#include "node_int.h"

#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <string.h>

static const char *const transport_names[KV_NODE_TRANSPORTS] = {"unknown", "frame",
                                                                  "shm", "ucx"};

/* The labels of one sample: node, then @p key = @p value (if key). */
static const char *labels(const kv_node_t *node, char *buf, size_t len, const char *key,
                          const char *value)
{
    char address[300];

    kv_node_advertised_address(node, address, sizeof(address));
    buf[0] = '\0';
    kv_prom_label(buf, len, "node", address);
    if (key != NULL) {
        kv_prom_label(buf, len, key, value);
    }
    return buf;
}

static void counter(kv_text_t *t, const kv_node_t *node, const char *name,
                    const char *help, double value)
{
    char l[512];

    kv_prom_family(t, name, "counter", help);
    kv_prom_sample(t, name, labels(node, l, sizeof(l), NULL, NULL), value);
}

static void gauge(kv_text_t *t, const kv_node_t *node, const char *name,
                  const char *help, double value)
{
    char l[512];

    kv_prom_family(t, name, "gauge", help);
    kv_prom_sample(t, name, labels(node, l, sizeof(l), NULL, NULL), value);
}

/* One family with a sample per tier the node has. */
static void per_tier(kv_text_t *t, const kv_node_t *node, int tiers, const char *name,
                     const char *type, const char *help, const uint64_t values[2])
{
    char l[512];

    kv_prom_family(t, name, type, help);
    for (int i = 0; i < tiers; i++) {
        kv_prom_sample(t, name, labels(node, l, sizeof(l), "tier", kv_tier_name(i)),
                       (double)values[i]);
    }
}

static void tier_metrics(kv_text_t *t, const kv_node_t *node)
{
    kv_block_table_stats_t st;
    kv_ssd_stats_t         ssd;
    int                    tiers = node->config.ssd_dir[0] != '\0' ? 2 : 1;
    char                   l[512];

    kv_block_table_stats(node->table, &st);
    kv_block_table_ssd_stats(node->table, &ssd);
    per_tier(t, node, tiers, "kvpool_node_capacity_bytes", "gauge",
             "Bytes the tier can hold.",
             (uint64_t[2]){kv_arena_capacity(node->arena), ssd.capacity_bytes});
    per_tier(t, node, tiers, "kvpool_node_used_bytes", "gauge",
             "Bytes of committed blocks in the tier.",
             (uint64_t[2]){st.used_bytes, st.ssd_used_bytes});
    per_tier(t, node, tiers, "kvpool_node_blocks", "gauge", "Committed blocks in the tier.",
             (uint64_t[2]){st.blocks, st.ssd_blocks});
    per_tier(t, node, tiers, "kvpool_node_evictions_total", "counter",
             "Blocks dropped from the tier for room (host: only without an SSD tier "
             "or when a demotion fails).",
             (uint64_t[2]){st.evictions, st.ssd_evictions});
    per_tier(t, node, tiers, "kvpool_node_tier_bytes_written_total", "counter",
             "Bytes written into the tier (host: puts; ssd: demotions and compaction).",
             (uint64_t[2]){node->bytes_in, ssd.bytes_written});
    per_tier(t, node, tiers, "kvpool_node_tier_bytes_read_total", "counter",
             "Bytes read out of the tier (host: gets; ssd: staging and compaction).",
             (uint64_t[2]){node->bytes_out, ssd.bytes_read});
    kv_prom_family(t, "kvpool_node_get_blocks_total", "counter",
                   "Blocks asked for by gets, by the tier that held them (hit) or "
                   "did not (miss: not in this tier nor a faster one).");
    for (int i = 0; i < tiers; i++) {
        labels(node, l, sizeof(l), "tier", kv_tier_name(i));
        kv_prom_label(l, sizeof(l), "result", "hit");
        kv_prom_sample(t, "kvpool_node_get_blocks_total", l, (double)node->tier_hits[i]);
        labels(node, l, sizeof(l), "tier", kv_tier_name(i));
        kv_prom_label(l, sizeof(l), "result", "miss");
        kv_prom_sample(t, "kvpool_node_get_blocks_total", l,
                       (double)node->tier_misses[i]);
    }
    counter(t, node, "kvpool_node_demotions_total", "Blocks moved from host memory to SSD.",
            (double)st.demotions);
    counter(t, node, "kvpool_node_promotions_total", "Blocks moved from SSD to host memory.",
            (double)st.promotions);
    kv_prom_family(t, "kvpool_node_checksum_failures_total", "counter",
                   "Blocks refused or dropped because their bytes did not match their "
                   "checksum: puts, and SSD records read back.");
    kv_prom_sample(t, "kvpool_node_checksum_failures_total",
                   labels(node, l, sizeof(l), "source", "put"),
                   (double)node->put_checksum_failures);
    kv_prom_sample(t, "kvpool_node_checksum_failures_total",
                   labels(node, l, sizeof(l), "source", "ssd"), (double)st.ssd_failures);
}

static void transport_metrics(kv_text_t *t, const kv_node_t *node)
{
    static const struct {
        const char *name, *help;
        int         put;
    } bytes[2] = {
        {"kvpool_node_put_bytes_total", "Bytes of committed puts, by transport.", 1},
        {"kvpool_node_get_bytes_total", "Bytes of blocks served to gets, by transport.", 0},
    };
    static const struct {
        const char *name, *help;
        int         put;
    } hist[2] = {
        {"kvpool_node_put_duration_seconds",
         "Put latency: frames, from the request to the reply; two-phase (shm, ucx), "
         "from PutStart to PutCommit, the client's copy included.",
         1},
        {"kvpool_node_get_duration_seconds",
         "Get latency: frames, from the request to the reply (staging included); "
         "two-phase, from GetStart to GetEnd.",
         0},
    };
    char l[512];

    for (int f = 0; f < 2; f++) {
        kv_prom_family(t, bytes[f].name, "counter", bytes[f].help);
        for (unsigned i = 0; i < KV_NODE_TRANSPORTS; i++) {
            kv_prom_sample(t, bytes[f].name,
                           labels(node, l, sizeof(l), "transport", transport_names[i]),
                           (double)(bytes[f].put ? node->bytes_put[i] : node->bytes_got[i]));
        }
    }
    for (int f = 0; f < 2; f++) {
        kv_prom_family(t, hist[f].name, "histogram", hist[f].help);
        for (unsigned i = 1; i < KV_NODE_TRANSPORTS; i++) {
            kv_prom_histogram(t, hist[f].name,
                              labels(node, l, sizeof(l), "transport", transport_names[i]),
                              hist[f].put ? &node->put_seconds[i] : &node->get_seconds[i]);
        }
    }
}

static void rpc_metrics(kv_text_t *t, const kv_node_t *node)
{
    kv_rpc_server_stats_t rpc;
    char                  l[512];

    kv_rpc_server_stats(node->server, &rpc);
    gauge(t, node, "kvpool_node_connections", "Client connections open now.",
          (double)rpc.connections);
    kv_prom_family(t, "kvpool_node_rpc_errors_total", "counter",
                   "Replies with an error status, by status.");
    kv_prom_by_status(t, "kvpool_node_rpc_errors_total", labels(node, l, sizeof(l), NULL, NULL),
                      rpc.errors, KV_RPC_ERROR_SLOTS);
    counter(t, node, "kvpool_node_lease_expiries_total",
            "Get leases and put reservations that expired before their end.",
            (double)node->lease_expiries);
    gauge(t, node, "kvpool_node_coordinator_id",
          "The id the coordinator gave this node (0: not joined).",
          (double)kv_node_coord_id((kv_node_t *)node));
}

static int on_http(void *arg, const char *path, kv_http_reply_t *reply)
{
    kv_node_t *node = arg;
    char       l[512];

    if (strcmp(path, "/health") == 0) {
        kv_text_printf(&reply->body, "ok\n");
        return 0;
    }
    if (strcmp(path, "/metrics") != 0) {
        return -1;
    }
    reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
    kv_prom_family(&reply->body, "kvpool_node_info", "gauge",
                   "Always 1: the node's name (config key name) by its address.");
    kv_prom_sample(&reply->body, "kvpool_node_info",
                   labels(node, l, sizeof(l), "name", node->config.name), 1);
    tier_metrics(&reply->body, node);
    transport_metrics(&reply->body, node);
    rpc_metrics(&reply->body, node);
    counter(&reply->body, node, "kvpool_node_puts_total", "Blocks committed by puts.",
            (double)node->puts);
    counter(&reply->body, node, "kvpool_node_gets_total", "Blocks asked for by gets.",
            (double)node->gets);
    return 0;
}

kvp_status_t kv_node_http_start(kv_node_t *node)
{
    kvp_status_t status;

    for (unsigned i = 0; i < KV_NODE_TRANSPORTS; i++) {
        kv_histogram_init(&node->put_seconds[i], kv_hist_seconds, kv_hist_seconds_count);
        kv_histogram_init(&node->get_seconds[i], kv_hist_seconds, kv_hist_seconds_count);
    }
    if (node->config.http_port < 0) {
        return KVP_OK;
    }
    status = kv_http_start(node->loop, node->config.listen, (uint16_t)node->config.http_port,
                           on_http, node, &node->http);
    if (status != KVP_OK) {
        kv_log_error("cannot serve /metrics on %s port %d", node->config.listen,
                     node->config.http_port);
    }
    return status;
}

uint16_t kv_node_http_port(const kv_node_t *node)
{
    return node->http != NULL ? kv_http_port(node->http) : 0;
}
