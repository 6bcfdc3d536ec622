/*
 * coord_dashboard.c - GET /api/dashboard: the JSON the dashboard page
 * polls (its schema is in docs/METRICS.md), built with jansson.
 *
 * "cluster" and "nodes" hold counters since start (a node's as its last
 * heartbeat reported them); "history" holds what the totals grew by in
 * each second, oldest first.
 */
#include "coord_int.h"

#include <kv/util.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>


/* {"host": v[0], "ssd": v[1], "gpu": v[2]} */
static json_t *by_tier(const uint64_t v[KV_COORD_TIER_COUNT])
{
    json_t *o = json_object();

    for (int t = 0; t < KV_COORD_TIER_COUNT; t++) {
        json_object_set_new(o, kv_tier_name(t), json_integer((json_int_t)v[t]));
    }
    return o;
}

static json_t *totals_json(const kv_coord_totals_t *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I}",
                     "requested_blocks", (json_int_t)s->requested_blocks, "matched_blocks",
                     (json_int_t)s->matched_blocks, "scheduled_blocks",
                     (json_int_t)s->scheduled_blocks, "scheduled_cached",
                     (json_int_t)s->scheduled_cached, "hit", by_tier(s->hit), "miss",
                     (json_int_t)s->miss, "bytes_in", (json_int_t)s->bytes_in, "bytes_out",
                     (json_int_t)s->bytes_out, "evictions", (json_int_t)s->evictions,
                     "demotions", (json_int_t)s->demotions, "promotions",
                     (json_int_t)s->promotions);
}

static json_t *cluster_json(const kv_coord_t *coord)
{
    kv_coord_totals_t totals;
    kv_index_stats_t  index;
    uint64_t          capacity[KV_COORD_TIER_COUNT] = {0}, used[KV_COORD_TIER_COUNT] = {0};
    json_t           *o;

    kv_coord_view_totals(coord, &totals);
    kv_index_stats(coord->index, &index);
    for (size_t i = 0; i < kv_coord_members_count(coord->members); i++) {
        const kv_coord_node_stats_t *s = &kv_coord_members_at(coord->members, i)->stats;
        for (int t = 0; t < KV_COORD_TIER_COUNT; t++) {
            capacity[t] += s->tier[t].capacity_bytes;
            used[t] += s->tier[t].used_bytes;
        }
    }
    o = totals_json(&totals);
    json_object_set_new(o, "nodes", json_integer((json_int_t)kv_coord_members_count(
                                        coord->members)));
    json_object_set_new(o, "instances", json_integer((json_int_t)kv_sched_count(
                                            coord->sched, KV_SCHED_BOTH)));
    json_object_set_new(o, "index_blocks", json_integer((json_int_t)index.cached));
    json_object_set_new(o, "lookups", json_integer((json_int_t)coord->matches));
    /* the page's names: hit_blocks / miss_blocks */
    json_object_set(o, "hit_blocks", json_object_get(o, "hit"));
    json_object_set(o, "miss_blocks", json_object_get(o, "miss"));
    json_object_set_new(o, "capacity_bytes", by_tier(capacity));
    json_object_set_new(o, "used_bytes", by_tier(used));
    return o;
}

static json_t *history_json(const kv_coord_view_t *view)
{
    json_t *a = json_array();

    for (size_t i = 0; i < view->history_len; i++) {
        const kv_coord_sample_t *s = &view->history[(view->history_head + i) %
                                                    KV_COORD_HISTORY];
        json_t                  *o = totals_json(&s->delta);
        json_object_set_new(o, "t", json_real(s->t));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *nodes_json(const kv_coord_t *coord)
{
    json_t *a = json_array();

    for (size_t i = 0; i < kv_coord_members_count(coord->members); i++) {
        const kv_coord_member_t     *m     = kv_coord_members_at(coord->members, i);
        const kv_coord_node_stats_t *s     = &m->stats;
        json_t                      *tiers = json_array();
        uint64_t                     evictions = 0;

        for (int t = 0; t < KV_COORD_TIER_COUNT; t++) {
            if (!(s->tiers & (1u << t))) {
                continue;
            }
            evictions += s->tier[t].evictions;
            json_array_append_new(
                tiers, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "tier", kv_tier_name(t),
                                 "capacity_bytes", (json_int_t)s->tier[t].capacity_bytes,
                                 "used_bytes", (json_int_t)s->tier[t].used_bytes, "blocks",
                                 (json_int_t)s->tier[t].blocks, "hits",
                                 (json_int_t)s->tier[t].hits, "misses",
                                 (json_int_t)s->tier[t].misses));
        }
        json_array_append_new(
            a, json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "id",
                         (json_int_t)m->id, "name", m->name, "address", m->address, "load",
                         (json_int_t)m->load, "hits", (json_int_t)s->hits, "misses",
                         (json_int_t)s->misses, "bytes_in", (json_int_t)s->bytes_in,
                         "bytes_out", (json_int_t)s->bytes_out, "evictions",
                         (json_int_t)evictions, "tiers", tiers));
    }
    return a;
}

static json_t *instances_json(const kv_coord_t *coord)
{
    static const char *const roles[4] = {"none", "prefill", "decode", "both"};
    json_t                  *a        = json_array();

    for (uint32_t id = 1; id <= coord->config.max_instances; id++) {
        const kv_coord_instance_t *in = &coord->instances[id];
        kv_sched_instance_t        si;
        kv_sched_load_t            load;

        if (in->id == 0 || kv_sched_get(coord->sched, id, &si, &load) != KVP_OK) {
            continue;
        }
        json_array_append_new(
            a, json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "id",
                         (json_int_t)id, "name", in->name, "roles", roles[si.roles & 3],
                         "running", (json_int_t)load.running, "queued_tokens",
                         (json_int_t)load.queued_tokens, "requests",
                         (json_int_t)(in->prefills + in->decodes), "prefills",
                         (json_int_t)in->prefills, "prompt_blocks",
                         (json_int_t)in->prompt_blocks, "cached_blocks",
                         (json_int_t)in->loaded_blocks));
    }
    return a;
}

static int top_cmp(const void *a, const void *b)
{
    const kv_coord_top_t *x = a, *y = b;

    return x->matches < y->matches ? 1 : x->matches > y->matches ? -1 : 0;
}

static json_t *top_json(const kv_coord_t *coord)
{
    const kv_coord_view_t *view = &coord->view;
    kv_coord_top_t         top[KV_COORD_TOP_MAX];
    json_t                *a = json_array();
    char                   hex[17];

    memcpy(top, view->top, view->n_top * sizeof(top[0]));
    qsort(top, view->n_top, sizeof(top[0]), top_cmp);
    for (size_t i = 0; i < view->n_top && i < 20; i++) {
        const char *ns = view->ns != NULL && top[i].ns_id < KV_INDEX_MAX_NAMESPACES
                             ? view->ns[top[i].ns_id].name
                             : "";
        for (int b = 0; b < 8; b++) {
            snprintf(hex + 2 * b, 3, "%02x", top[i].key.bytes[b]);
        }
        json_array_append_new(
            a, json_pack("{s:s, s:s, s:I, s:I, s:I}", "namespace", ns, "key", hex,
                         "matches", (json_int_t)top[i].matches, "matched_blocks",
                         (json_int_t)top[i].matched_blocks, "longest",
                         (json_int_t)top[i].longest));
    }
    return a;
}

void kv_coord_dashboard_json(kv_coord_t *coord, kv_text_t *text)
{
    struct timespec wall;
    json_t         *root;
    char           *dump;

    clock_gettime(CLOCK_REALTIME, &wall);
    root = json_pack("{s:f, s:i, s:o, s:o, s:o, s:o, s:o}", "time",
                     (double)wall.tv_sec + (double)wall.tv_nsec / 1e9, "interval_s", 1,
                     "cluster", cluster_json(coord), "history", history_json(&coord->view),
                     "nodes", nodes_json(coord), "instances", instances_json(coord),
                     "top_prefixes", top_json(coord));
    dump = root != NULL ? json_dumps(root, JSON_COMPACT) : NULL;
    if (dump == NULL) {
        kv_text_printf(text, "{}");
    } else {
        kv_text_printf(text, "%s", dump);
        free(dump);
    }
    json_decref(root);
}
