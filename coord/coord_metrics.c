/*
 * coord_metrics.c - the coordinator's HTTP endpoint: /metrics (Prometheus
 * text), /health, /dashboard (the page) and /api/dashboard (its JSON,
 * coord_dashboard.c), and the counters only the endpoint reads.
 *
 * Everything runs on the coordinator's loop thread: Match and Schedule
 * count here, the tick takes the dashboard's history samples, and the
 * handlers read the same state.
 */
#include "coord_int.h"

#include <kv/alloc.h>
#include <kv/http.h>
#include <kv/log.h>
#include <kv/util.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The page, embedded at build time from coord/dashboard.html. */
extern const unsigned char kv_coord_dashboard_html[];
extern const size_t        kv_coord_dashboard_html_len;


/* Schedule's prefix lengths, in blocks. */
static const double block_bounds[] = {0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};

/* The counters of namespace @p ns_id (named @p ns the first time). */
static kv_coord_ns_stats_t *ns_stats(kv_coord_view_t *view, uint32_t ns_id,
                                     const ProtobufCBinaryData *ns)
{
    kv_coord_ns_stats_t *s;

    if (view->ns == NULL) {
        view->ns = kv_calloc(KV_INDEX_MAX_NAMESPACES, sizeof(*view->ns), "ns stats");
    }
    s = &view->ns[ns_id];
    if (s->name[0] == '\0') {
        size_t len = KV_MIN(ns->len, (size_t)KV_COORD_NS_LABEL_MAX);
        memcpy(s->name, ns->data, len);
        s->name[len] = '\0';
    }
    return s;
}

/* Count a chain whose first @p matched blocks are cached among the top prefixes. */
static void top_count(kv_coord_view_t *view, uint32_t ns_id, const kvp_key_t *keys,
                      size_t matched)
{
    kv_coord_top_t *top = NULL, *least = NULL;

    if (matched == 0) {
        return;
    }
    /* space-saving: a new prefix takes the least counted slot's place */
    for (size_t i = 0; i < view->n_top; i++) {
        kv_coord_top_t *t = &view->top[i];
        if (t->ns_id == ns_id && memcmp(&t->key, &keys[0], sizeof(t->key)) == 0) {
            top = t;
            break;
        }
        if (least == NULL || t->matches < least->matches) {
            least = t;
        }
    }
    if (top == NULL) {
        top = view->n_top < KV_COORD_TOP_MAX ? &view->top[view->n_top++] : least;
        *top = (kv_coord_top_t){.ns_id          = ns_id,
                                .key            = keys[0],
                                .matches        = top == least ? least->matches : 0,
                                .matched_blocks = 0,
                                .longest        = 0};
    }
    top->matches++;
    top->matched_blocks += matched;
    top->longest = KV_MAX(top->longest, (uint64_t)matched);
}

void kv_coord_view_match(kv_coord_t *coord, uint32_t ns_id, const ProtobufCBinaryData *ns,
                         const kvp_key_t *keys, size_t n_keys, size_t matched)
{
    kv_coord_ns_stats_t *s;

    if (ns_id >= KV_INDEX_MAX_NAMESPACES) {
        return;
    }
    s = ns_stats(&coord->view, ns_id, ns);
    s->lookups++;
    s->requested_blocks += n_keys;
    s->matched_blocks += matched;
    top_count(&coord->view, ns_id, keys, matched);
}

void kv_coord_view_schedule(kv_coord_t *coord, const kv_sched_plan_t *plan,
                            const kv_sched_request_t *req, uint32_t ns_id,
                            const ProtobufCBinaryData *ns)
{
    kv_coord_instance_t *prefill = &coord->instances[plan->prefill];
    uint64_t block_tokens = kv_sched_cost(coord->sched)->block_tokens;

    coord->view.scheduled_blocks += req->count;
    coord->view.scheduled_cached += plan->cached;
    if (ns_id < KV_INDEX_MAX_NAMESPACES) {
        ns_stats(&coord->view, ns_id, ns); /* names the prefix's namespace */
        top_count(&coord->view, ns_id, req->keys, plan->cached);
    }

    prefill->prefills++;
    prefill->prompt_blocks += req->count;
    prefill->loaded_blocks += plan->load;
    prefill->prompt_tokens += req->prompt_tokens;
    prefill->loaded_tokens += KV_MIN((uint64_t)plan->load * block_tokens, req->prompt_tokens);
    coord->instances[plan->decode].decodes++;
    kv_histogram_observe(&coord->view.cached_blocks, plan->cached);
    kv_histogram_observe(&coord->view.loaded_blocks, plan->load);
    kv_histogram_observe(&coord->view.ttft_s, plan->ttft_s);
}

void kv_coord_view_totals(const kv_coord_t *coord, kv_coord_totals_t *totals)
{
    memset(totals, 0, sizeof(*totals));
    totals->requested_blocks = coord->requested_blocks;
    totals->matched_blocks   = coord->matched_blocks;
    totals->scheduled_blocks = coord->view.scheduled_blocks;
    totals->scheduled_cached = coord->view.scheduled_cached;
    for (size_t i = 0; i < kv_coord_members_count(coord->members); i++) {
        const kv_coord_node_stats_t *s =
            &kv_coord_members_at(coord->members, i)->stats;
        totals->bytes_in += s->bytes_in;
        totals->bytes_out += s->bytes_out;
        totals->miss += s->misses;
        for (int t = 0; t < KV_COORD_TIER_COUNT; t++) {
            totals->hit[t] += s->tier[t].hits;
            totals->evictions += s->tier[t].evictions;
            totals->demotions += s->tier[t].demotions * (t == 0);
            totals->promotions += s->tier[t].promotions * (t == 0);
        }
    }
}

/* now - before, or 0 where a counter went down (a node left or restarted). */
static uint64_t grew(uint64_t now, uint64_t before)
{
    return now > before ? now - before : 0;
}

void kv_coord_view_tick(kv_coord_t *coord)
{
    kv_coord_view_t   *view = &coord->view;
    uint64_t           now  = kv_time_ns();
    kv_coord_totals_t  totals;
    kv_coord_sample_t *sample;
    struct timespec    wall;

    kv_http_tick(view->http);
    if (now < view->next_sample_ns) {
        return;
    }
    view->next_sample_ns = now + 1000000000ull;
    kv_coord_view_totals(coord, &totals);
    clock_gettime(CLOCK_REALTIME, &wall);
    sample = &view->history[(view->history_head + view->history_len) % KV_COORD_HISTORY];
    if (view->history_len == KV_COORD_HISTORY) {
        view->history_head = (view->history_head + 1) % KV_COORD_HISTORY;
    } else {
        view->history_len++;
    }
    sample->t = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    sample->delta.requested_blocks =
        grew(totals.requested_blocks, view->last.requested_blocks);
    sample->delta.matched_blocks = grew(totals.matched_blocks, view->last.matched_blocks);
    sample->delta.scheduled_blocks =
        grew(totals.scheduled_blocks, view->last.scheduled_blocks);
    sample->delta.scheduled_cached =
        grew(totals.scheduled_cached, view->last.scheduled_cached);
    for (int t = 0; t < KV_COORD_TIER_COUNT; t++) {
        sample->delta.hit[t] = grew(totals.hit[t], view->last.hit[t]);
    }
    sample->delta.miss       = grew(totals.miss, view->last.miss);
    sample->delta.bytes_in   = grew(totals.bytes_in, view->last.bytes_in);
    sample->delta.bytes_out  = grew(totals.bytes_out, view->last.bytes_out);
    sample->delta.evictions  = grew(totals.evictions, view->last.evictions);
    sample->delta.demotions  = grew(totals.demotions, view->last.demotions);
    sample->delta.promotions = grew(totals.promotions, view->last.promotions);
    view->last               = totals;
}

/* ---- /metrics ---------------------------------------------------------- */

static void family(kv_text_t *t, const char *name, const char *type, const char *help,
                   double value)
{
    kv_prom_family(t, name, type, help);
    kv_prom_sample(t, name, NULL, value);
}

static void index_metrics(kv_text_t *t, const kv_coord_t *coord)
{
    kv_index_stats_t index;
    char             l[512];

    kv_index_stats(coord->index, &index);
    family(t, "kvpool_coord_nodes", "gauge", "Pool nodes joined now.",
           (double)kv_coord_members_count(coord->members));
    family(t, "kvpool_coord_instances", "gauge", "Inference instances registered now.",
           (double)kv_sched_count(coord->sched, KV_SCHED_BOTH));
    family(t, "kvpool_coord_index_blocks", "gauge", "Cached blocks in the prefix index.",
           (double)index.cached);
    family(t, "kvpool_coord_index_entries", "gauge",
           "Keys the prefix index holds, cached or not.", (double)index.entries);
    family(t, "kvpool_coord_index_bytes", "gauge", "Memory the prefix index holds.",
           (double)index.bytes);
    family(t, "kvpool_coord_publish_events_total", "counter",
           "Inventory events the nodes published.", (double)coord->events);
    kv_prom_family(t, "kvpool_coord_lease_expiries_total", "counter",
                   "Nodes and instances dropped because their lease ran out.");
    l[0] = '\0';
    kv_prom_label(l, sizeof(l), "kind", "node");
    kv_prom_sample(t, "kvpool_coord_lease_expiries_total", l,
                   (double)coord->view.node_expiries);
    l[0] = '\0';
    kv_prom_label(l, sizeof(l), "kind", "instance");
    kv_prom_sample(t, "kvpool_coord_lease_expiries_total", l,
                   (double)coord->view.instance_expiries);
}

static void lookup_metrics(kv_text_t *t, const kv_coord_t *coord)
{
    const kv_coord_ns_stats_t *ns = coord->view.ns;
    char                       l[512];

    kv_prom_family(t, "kvpool_lookups_total", "counter", "Match calls, by namespace.");
    for (size_t i = 0; ns != NULL && i < KV_INDEX_MAX_NAMESPACES; i++) {
        if (ns[i].lookups > 0) {
            l[0] = '\0';
            kv_prom_label(l, sizeof(l), "namespace", ns[i].name);
            kv_prom_sample(t, "kvpool_lookups_total", l, (double)ns[i].lookups);
        }
    }
    kv_prom_family(t, "kvpool_lookup_blocks_total", "counter",
                   "Blocks Match was asked for, by namespace: found cached in the "
                   "index (hit) or not (miss).");
    for (size_t i = 0; ns != NULL && i < KV_INDEX_MAX_NAMESPACES; i++) {
        if (ns[i].lookups == 0) {
            continue;
        }
        l[0] = '\0';
        kv_prom_label(l, sizeof(l), "namespace", ns[i].name);
        kv_prom_label(l, sizeof(l), "result", "hit");
        kv_prom_sample(t, "kvpool_lookup_blocks_total", l, (double)ns[i].matched_blocks);
        l[0] = '\0';
        kv_prom_label(l, sizeof(l), "namespace", ns[i].name);
        kv_prom_label(l, sizeof(l), "result", "miss");
        kv_prom_sample(t, "kvpool_lookup_blocks_total", l,
                       (double)(ns[i].requested_blocks - ns[i].matched_blocks));
    }
}

/* The nodes' own counters as their heartbeats reported them, by node. */
static void node_metrics(kv_text_t *t, const kv_coord_t *coord)
{
    static const struct {
        const char *name, *type, *help;
        size_t      offset;
    } per_tier[] = {
        {"kvpool_cluster_capacity_bytes", "gauge", "Bytes each node's tier can hold.",
         offsetof(kv_coord_tier_stats_t, capacity_bytes)},
        {"kvpool_cluster_used_bytes", "gauge", "Bytes of blocks in each node's tier.",
         offsetof(kv_coord_tier_stats_t, used_bytes)},
        {"kvpool_cluster_blocks", "gauge", "Blocks in each node's tier.",
         offsetof(kv_coord_tier_stats_t, blocks)},
        {"kvpool_cluster_hit_blocks_total", "counter",
         "Blocks each node's gets found in the tier.",
         offsetof(kv_coord_tier_stats_t, hits)},
    };
    size_t n = kv_coord_members_count(coord->members);
    char   l[512];

    for (size_t f = 0; f < sizeof(per_tier) / sizeof(per_tier[0]); f++) {
        kv_prom_family(t, per_tier[f].name, per_tier[f].type, per_tier[f].help);
        for (size_t i = 0; i < n; i++) {
            const kv_coord_member_t *m = kv_coord_members_at(coord->members, i);
            for (int k = 0; k < KV_COORD_TIER_COUNT; k++) {
                const uint64_t *v;
                if (!(m->stats.tiers & (1u << k))) {
                    continue;
                }
                v    = (const uint64_t *)((const char *)&m->stats.tier[k] +
                                       per_tier[f].offset);
                l[0] = '\0';
                kv_prom_label(l, sizeof(l), "node", m->address);
                kv_prom_label(l, sizeof(l), "tier", kv_tier_name(k));
                kv_prom_sample(t, per_tier[f].name, l, (double)*v);
            }
        }
    }
    kv_prom_family(t, "kvpool_cluster_miss_blocks_total", "counter",
                   "Blocks each node's gets did not find in any tier.");
    for (size_t i = 0; i < n; i++) {
        const kv_coord_member_t *m = kv_coord_members_at(coord->members, i);
        l[0]                       = '\0';
        kv_prom_label(l, sizeof(l), "node", m->address);
        kv_prom_sample(t, "kvpool_cluster_miss_blocks_total", l, (double)m->stats.misses);
    }
}

static void sched_metrics(kv_text_t *t, const kv_coord_t *coord)
{
    const char *policy = kv_sched_policy_name(kv_sched_policy(coord->sched));
    char        l[512];

    kv_prom_family(t, "kvpool_sched_decisions_total", "counter",
                   "Schedule decisions, by policy, chosen instance and role.");
    for (uint32_t id = 1; id <= coord->config.max_instances; id++) {
        const kv_coord_instance_t *in = &coord->instances[id];
        for (int role = 0; in->id != 0 && role < 2; role++) {
            l[0] = '\0';
            kv_prom_label(l, sizeof(l), "policy", policy);
            kv_prom_label(l, sizeof(l), "instance", in->name);
            kv_prom_label(l, sizeof(l), "role", role == 0 ? "prefill" : "decode");
            kv_prom_sample(t, "kvpool_sched_decisions_total", l,
                           (double)(role == 0 ? in->prefills : in->decodes));
        }
    }
    kv_prom_family(t, "kvpool_sched_prompt_blocks_total", "counter",
                   "Prompt blocks of the requests each prefill instance was given, and "
                   "of those the cached ones it loads (loaded).");
    for (uint32_t id = 1; id <= coord->config.max_instances; id++) {
        const kv_coord_instance_t *in = &coord->instances[id];
        if (in->id == 0) {
            continue;
        }
        l[0] = '\0';
        kv_prom_label(l, sizeof(l), "instance", in->name);
        kv_prom_label(l, sizeof(l), "kind", "prompt");
        kv_prom_sample(t, "kvpool_sched_prompt_blocks_total", l, (double)in->prompt_blocks);
        l[0] = '\0';
        kv_prom_label(l, sizeof(l), "instance", in->name);
        kv_prom_label(l, sizeof(l), "kind", "loaded");
        kv_prom_sample(t, "kvpool_sched_prompt_blocks_total", l, (double)in->loaded_blocks);
    }
    kv_prom_family(t, "kvpool_sched_prompt_tokens_total", "counter",
                   "Prompt tokens of the requests each prefill instance was given, and of "
                   "those the ones whose KV cache it loads rather than computes (loaded).");
    for (uint32_t id = 1; id <= coord->config.max_instances; id++) {
        const kv_coord_instance_t *in = &coord->instances[id];
        for (int loaded = 0; in->id != 0 && loaded < 2; loaded++) {
            l[0] = '\0';
            kv_prom_label(l, sizeof(l), "instance", in->name);
            kv_prom_label(l, sizeof(l), "kind", loaded ? "loaded" : "prompt");
            kv_prom_sample(t, "kvpool_sched_prompt_tokens_total", l,
                           (double)(loaded ? in->loaded_tokens : in->prompt_tokens));
        }
    }
    l[0] = '\0';
    kv_prom_label(l, sizeof(l), "policy", policy);
    kv_prom_family(t, "kvpool_sched_cached_prefix_blocks", "histogram",
                   "The longest cached prefix the index estimated for each request.");
    kv_prom_histogram(t, "kvpool_sched_cached_prefix_blocks", l, &coord->view.cached_blocks);
    kv_prom_family(t, "kvpool_sched_loaded_prefix_blocks", "histogram",
                   "The cached prefix the chosen prefill instance loads (the rest it "
                   "computes).");
    kv_prom_histogram(t, "kvpool_sched_loaded_prefix_blocks", l, &coord->view.loaded_blocks);
    kv_prom_family(t, "kvpool_sched_estimated_ttft_seconds", "histogram",
                   "Time to first token the cost model estimated for each decision.");
    kv_prom_histogram(t, "kvpool_sched_estimated_ttft_seconds", l, &coord->view.ttft_s);
}

static void rpc_metrics(kv_text_t *t, const kv_coord_t *coord)
{
    kv_rpc_server_stats_t rpc;

    kv_rpc_server_stats(coord->server, &rpc);
    family(t, "kvpool_coord_connections", "gauge", "RPC connections open now.",
           (double)rpc.connections);
    kv_prom_family(t, "kvpool_coord_rpc_errors_total", "counter",
                   "Replies with an error status, by status.");
    kv_prom_by_status(t, "kvpool_coord_rpc_errors_total", NULL, rpc.errors,
                      KV_RPC_ERROR_SLOTS);
}

static int on_http(void *arg, const char *path, kv_http_reply_t *reply)
{
    kv_coord_t *coord = arg;

    if (strcmp(path, "/health") == 0) {
        kv_text_printf(&reply->body, "ok\n");
    } else if (strcmp(path, "/metrics") == 0) {
        reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
        index_metrics(&reply->body, coord);
        lookup_metrics(&reply->body, coord);
        node_metrics(&reply->body, coord);
        sched_metrics(&reply->body, coord);
        rpc_metrics(&reply->body, coord);
    } else if (strcmp(path, "/dashboard") == 0 || strcmp(path, "/") == 0) {
        reply->content_type = "text/html; charset=utf-8";
        kv_text_printf(&reply->body, "%.*s", (int)kv_coord_dashboard_html_len,
                       (const char *)kv_coord_dashboard_html);
    } else if (strcmp(path, "/api/dashboard") == 0) {
        reply->content_type = "application/json";
        kv_coord_dashboard_json(coord, &reply->body);
    } else {
        return -1;
    }
    return 0;
}

kvp_status_t kv_coord_view_start(kv_coord_t *coord)
{
    kv_coord_view_t *view = &coord->view;
    size_t           nb   = sizeof(block_bounds) / sizeof(block_bounds[0]);
    kvp_status_t     status;

    kv_histogram_init(&view->cached_blocks, block_bounds, nb);
    kv_histogram_init(&view->loaded_blocks, block_bounds, nb);
    kv_histogram_init(&view->ttft_s, kv_hist_seconds, kv_hist_seconds_count);
    if (coord->config.http_port < 0) {
        return KVP_OK;
    }
    status = kv_http_start(coord->loop, coord->config.listen,
                           (uint16_t)coord->config.http_port, on_http, coord, &view->http);
    if (status != KVP_OK) {
        kv_log_error("cannot serve /metrics on %s port %d", coord->config.listen,
                     coord->config.http_port);
    }
    return status;
}

void kv_coord_view_stop(kv_coord_t *coord)
{
    kv_http_stop(coord->view.http);
    kv_free(coord->view.ns);
    coord->view.http = NULL;
    coord->view.ns   = NULL;
}

uint16_t kv_coord_http_port(const kv_coord_t *coord)
{
    return coord->view.http != NULL ? kv_http_port(coord->view.http) : 0;
}
